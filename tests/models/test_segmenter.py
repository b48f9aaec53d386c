"""U-Net segmenter: shapes on any tile size, features from the cube, FLOP/parameter helpers, save/load (with the
novelty gate every segmenter file carries; the artifact format itself: tests/models/test_artifact.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from suelo.errors import ModelFileError
from suelo.models.artifact import load_segmenter, save_segmenter
from suelo.models.segmenter import (
    SegmenterConfig,
    UNetSegmenter,
    count_parameters,
    feature_names,
    flops_per_pixel,
    segmenter_features,
    segmenter_inputs,
)
from suelo.novelty import NoveltyGate, fit_gate
from suelo.synthetic_city import make_synthetic_city


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
    from suelo.models.segmenter import _nan_quantiles

    rng = np.random.default_rng(0)
    v = rng.random((12, 5, 6)).astype(np.float32)
    v[rng.random(v.shape) < 0.4] = np.nan
    v[:, 0, 0] = np.nan
    got = _nan_quantiles(v, [0.1, 0.5, 0.9])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanquantile(v, [0.1, 0.5, 0.9], axis=0)
    assert np.allclose(got, want, equal_nan=True, atol=1e-6)


# what every segmenter file needs besides its weights and gate: a legend and an input contract
EXTRAS = {"legend_codes": [1, 2], "bands": ["B04", "B08"], "months": 12}


def _gated_model(in_channels: int = 3) -> UNetSegmenter:
    names = tuple("abcdefgh"[:in_channels])
    model = UNetSegmenter(SegmenterConfig(in_channels, n_classes=2, depth=2, base_width=4, feature_names=names)).eval()
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, in_channels))
    model.novelty_gate = fit_gate(train, np.arange(200) % 2, rng.normal(size=(100, in_channels)), 0.05, "test inputs")
    return model


def test_save_load_weights_only(tmp_path: Path) -> None:
    model = _gated_model()
    model.set_normalization(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 2.0]))
    save_segmenter(model, tmp_path / "m.pt", **EXTRAS)
    loaded, extras = load_segmenter(tmp_path / "m.pt")
    assert loaded.config == model.config
    assert extras["legend_codes"] == [1, 2]
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_gate_saved_and_loaded_with_the_segmenter(tmp_path: Path) -> None:
    model = _gated_model()
    gate = model.novelty_gate
    assert gate is not None
    save_segmenter(model, tmp_path / "m.pt", **EXTRAS)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["novelty.whiten"].shape == (3, 3) and payload["novelty.means"].shape == (2, 3)
    loaded, extras = load_segmenter(tmp_path / "m.pt")
    assert isinstance(extras["gate"], NoveltyGate) and loaded.novelty_gate is extras["gate"]
    assert extras["novelty"] == gate.meta() and extras["novelty"]["features"] == "test inputs"
    assert extras["gate"].threshold == gate.threshold and extras["gate"].n_calibration == 100
    assert np.array_equal(extras["gate"].whiten, gate.whiten) and np.array_equal(extras["gate"].means, gate.means)
    probe = np.random.default_rng(1).normal(size=(50, 3)) * 3
    assert np.array_equal(extras["gate"].outside(probe), gate.outside(probe))
    # what load_segmenter returned can be saved again (the gate's extras are rewritten from the model's gate)
    save_segmenter(loaded, tmp_path / "again.pt", **extras)
    _, again = load_segmenter(tmp_path / "again.pt")
    assert again["novelty"] == gate.meta() and again["legend_codes"] == [1, 2]


def test_segmenter_without_gate_is_not_saved(tmp_path: Path) -> None:
    model = UNetSegmenter(SegmenterConfig(3, 2, depth=1, base_width=4))
    with pytest.raises(ValueError, match="novelty gate"):
        save_segmenter(model, tmp_path / "m.pt", **EXTRAS)
    model.novelty_gate = _gated_model(4).novelty_gate  # a gate of another input contract
    with pytest.raises(ValueError, match="scores 4 features, the segmenter takes 3"):
        save_segmenter(model, tmp_path / "m.pt", **EXTRAS)
    assert not (tmp_path / "m.pt").exists()


def _rewrite(path: Path, drop: tuple[str, ...] = (), meta_drop: tuple[str, ...] = (), **replace: object) -> Path:
    payload = torch.load(path, weights_only=True)
    payload = {k: v for k, v in payload.items() if k not in drop} | replace
    meta = json.loads(payload["meta"])
    payload["meta"] = json.dumps({k: v for k, v in meta.items() if k not in meta_drop})
    out = path.with_name(f"edited_{path.name}")
    torch.save(payload, out)
    return out


def test_file_without_gate_is_refused(tmp_path: Path) -> None:
    # what a segmenter file written before gates held: state, config and JSON extras, no novelty entries
    model = _gated_model()
    old = tmp_path / "old.pt"
    payload: dict[str, object] = {f"state.{k}": v for k, v in model.state_dict().items()}
    payload |= {"config_json": json.dumps(model.config.to_dict()), "legend_codes_json": "[1, 2]"}
    torch.save(payload, old)
    with pytest.raises(ModelFileError) as info:
        load_segmenter(old)
    assert str(info.value) == (
        f"{old}: segmenter made before novelty gates; retrain it with suelo train --model segmenter"
    )


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ({"drop": ("novelty.means",)}, "novelty gate incomplete"),
        ({"meta_drop": ("novelty",)}, "novelty gate method None"),
        ({"novelty.whiten": torch.ones(3, 2)}, "novelty gate matrices have shapes (3, 2) and (2, 3)"),
        ({"novelty.means": torch.full((2, 3), float("nan"))}, "non-finite"),
        (
            {"novelty.whiten": torch.eye(2), "novelty.means": torch.zeros(2, 2)},
            "scores 2 features, the segmenter takes 3",
        ),
    ],
)
def test_inconsistent_gate_is_refused(tmp_path: Path, edit: dict, problem: str) -> None:
    save_segmenter(_gated_model(), tmp_path / "m.pt", **EXTRAS)
    edited = _rewrite(tmp_path / "m.pt", **edit)
    with pytest.raises(ModelFileError, match="novelty gate") as info:
        load_segmenter(edited)
    message = str(info.value)
    assert problem in message and "\n" not in message and message.startswith(f"{edited}: ")
