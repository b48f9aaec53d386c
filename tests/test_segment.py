"""Tiled inference: blended windows equal the untiled prediction, with no seams at window borders."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from models.segmenter import SegmenterConfig, UNetSegmenter, feature_names
from pipeline.segment import axis_weight, predict_array, segment_cube, window_starts
from pipeline.synthetic_city import make_synthetic_city
from pipeline.threshold import ThresholdPolicy, classify


def _small_rf_model(in_channels: int, n_classes: int = 5) -> UNetSegmenter:
    # receptive radius 5 <= overlap // 3 for overlap 16: tiling must be exact
    torch.manual_seed(0)
    model = UNetSegmenter(SegmenterConfig(in_channels, n_classes, depth=1, base_width=8, convs_per_block=1))
    # non-trivial BatchNorm statistics, as after training
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_axis_weight_covers_overlaps() -> None:
    w = axis_weight(48, 16, True, True)
    assert w[:5].max() == 0 and w[-5:].max() == 0 and w[16:32].min() == 1
    assert axis_weight(48, 16, False, False).min() == 1
    assert window_starts(96, 48, 32) == [0, 32, 64]
    assert window_starts(30, 48, 32) == [0]


def test_tiled_equals_untiled() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 96, 96)).astype(np.float32)
    model = _small_rf_model(6)
    assert model.config.receptive_radius <= 16 // 3
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(x)[None]), 1)[0].numpy()
    tiled = predict_array(model, x, window=48, overlap=16, block=1024, device="cpu", batch_size=3)
    assert tiled.shape == whole.shape and tiled.dtype == np.float32
    diff = np.abs(tiled - whole)
    assert diff.max() < 1e-4
    # explicitly at the window borders (windows start at 0, 32, 64 and end at 48, 80)
    for edge in (31, 32, 47, 48, 63, 64, 79, 80):
        assert diff[:, edge].max() < 1e-4 and diff[:, :, edge].max() < 1e-4
    assert np.allclose(tiled.sum(axis=0), 1, atol=1e-5)


def test_tiled_blocks_and_odd_sizes_equal_untiled() -> None:
    # output blocks smaller than the area and an area that is not a multiple of the stride or of 2 ** depth
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 101, 77)).astype(np.float32)
    model = _small_rf_model(4, 3)
    with torch.no_grad():
        whole = model(torch.from_numpy(x)[None])[0].numpy()
    tiled = predict_array(model, x, window=48, overlap=16, block=64, device="cpu", output="logits")
    assert np.abs(tiled - whole).max() < 1e-4


def test_default_model_has_no_seams() -> None:
    # a deep model's receptive field exceeds the overlap: not exact, but blending keeps differences small
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 96, 96)).astype(np.float32)
    torch.manual_seed(0)
    model = UNetSegmenter(SegmenterConfig(4, 3, depth=3, base_width=4)).eval()
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(x)[None]), 1)[0].numpy()
    tiled = predict_array(model, x, window=64, overlap=32, device="cpu")
    assert np.abs(tiled - whole).mean() < 0.02


def test_segment_cube_feeds_threshold() -> None:
    city = make_synthetic_city(seed=5, shape=(40, 36))
    emb = xr.DataArray(np.zeros((40, 36, 128), np.float32), dims=("y", "x", "feature"))
    n_in = len(feature_names())
    model = _small_rf_model(n_in, 3)
    post = segment_cube(model, city.cube, emb, [11100, 21000, 50000], window=32, overlap=16)
    assert post.dims == ("class", "y", "x") and post.shape == (3, 40, 36)
    assert post.dtype == np.float32
    nodata = city.cube["n_clear"].values == 0
    assert np.isnan(post.values[:, nodata]).all()
    assert np.allclose(post.values[:, ~nodata].sum(axis=0), 1, atol=1e-5)
    mapped = classify(post, np.array([11100, 21000, 50000]), ThresholdPolicy(), city.cube["n_clear"], dtype=np.uint16)
    codes = mapped["code"].values
    assert set(np.unique(codes)) <= {0, 11100, 21000, 50000, 253, 254}
