"""U-Net segmenter: shapes on any tile size, features from the cube, FLOP/parameter helpers, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.segmenter import (
    SegmenterConfig,
    UNetSegmenter,
    count_parameters,
    feature_names,
    flops_per_pixel,
    load_segmenter,
    save_segmenter,
    segmenter_features,
    segmenter_inputs,
)
from pipeline.synthetic_city import make_synthetic_city


@pytest.mark.parametrize(("h", "w"), [(1, 1), (17, 33), (40, 23), (64, 64)])
def test_any_tile_size(h: int, w: int) -> None:
    model = UNetSegmenter(SegmenterConfig(in_channels=5, n_classes=4, depth=3, base_width=4)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 5, h, w))
    assert out.shape == (2, 4, h, w)
    assert torch.isfinite(out).all()


def test_cost_helpers() -> None:
    cfg = SegmenterConfig(in_channels=165, n_classes=15, depth=3, base_width=24)
    model = UNetSegmenter(cfg)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    # first conv alone: 165 * 24 * 9 multiply-adds per pixel
    assert flops_per_pixel(cfg) > 2 * 165 * 24 * 9
    assert cfg.receptive_radius > 2**cfg.depth
    assert SegmenterConfig(3, 2, depth=1, convs_per_block=1).receptive_radius == 5


def test_features_and_inputs() -> None:
    city = make_synthetic_city(seed=3, shape=(24, 20))
    feats = segmenter_features(city.cube)
    names = feature_names(embedding_channels=0)
    assert feats.shape == (len(names), 24, 20)
    assert np.isfinite(feats).all()
    valid_fraction = feats[names.index("valid_fraction")]
    assert np.allclose(valid_fraction, city.cube["valid"].values.mean(axis=0))
    # NDVI median of water is negative, of forest high
    ndvi = feats[names.index("NDVI_median")]
    if (city.labels == 50000).any():
        assert ndvi[city.labels == 50000].mean() < 0
    emb = np.random.default_rng(0).normal(size=(24, 20, 128)).astype(np.float32)
    x = segmenter_inputs(feats, emb)
    assert x.shape == (len(names) + 128, 24, 20)
    assert np.array_equal(x[len(names) + 7], emb[..., 7])
    with pytest.raises(ValueError):
        segmenter_inputs(feats, emb[:10])


def test_quantiles_match_numpy() -> None:
    from models.segmenter import _nan_quantiles

    rng = np.random.default_rng(0)
    v = rng.random((12, 5, 6)).astype(np.float32)
    v[rng.random(v.shape) < 0.4] = np.nan
    v[:, 0, 0] = np.nan
    got = _nan_quantiles(v, [0.1, 0.5, 0.9])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanquantile(v, [0.1, 0.5, 0.9], axis=0)
    assert np.allclose(got, want, equal_nan=True, atol=1e-6)


def test_save_load_weights_only(tmp_path) -> None:
    cfg = SegmenterConfig(in_channels=3, n_classes=2, depth=2, base_width=4, feature_names=("a", "b", "c"))
    model = UNetSegmenter(cfg).eval()
    model.set_normalization(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 2.0]))
    save_segmenter(model, tmp_path / "m.pt", legend_codes=[1, 2])
    loaded, extras = load_segmenter(tmp_path / "m.pt")
    assert loaded.config == cfg
    assert extras["legend_codes"] == [1, 2]
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
