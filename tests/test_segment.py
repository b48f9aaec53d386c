"""Tiled inference: blended windows equal the untiled prediction, with no seams at window borders; the novelty gate
flags pixels unlike the training pixels, tile by tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from suelo.models.segmenter import SegmenterConfig, UNetSegmenter, feature_names, segmenter_features, segmenter_inputs
from suelo.novelty import fit_gate
from suelo.segment import axis_weight, predict_array, segment_cube, segment_outside_training, window_starts
from suelo.synthetic_city import CLASSES, make_synthetic_city
from suelo.threshold import ThresholdPolicy, classify
from suelo.train_segmenter import IGNORE_INDEX, _calibration_pixels, codes_to_indices, fit_input_gate


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


def _gated_city() -> tuple:
    """A synthetic city, its embeddings, and a gate fitted (as training does) on its left half, calibrated on
    its right half."""
    city = make_synthetic_city(seed=5, shape=(40, 36))
    emb = xr.DataArray(
        np.random.default_rng(0).normal(0, 0.5, size=(40, 36, 128)).astype(np.float32), dims=("y", "x", "feature")
    )
    x = segmenter_inputs(segmenter_features(city.cube), emb)
    model = UNetSegmenter(SegmenterConfig(x.shape[0], len(CLASSES), depth=1, base_width=4))
    left = np.zeros((40, 36), dtype=bool)
    left[:, :18] = True
    model.set_normalization(x[:, left].mean(axis=1), x[:, left].std(axis=1))
    target = codes_to_indices(city.labels, CLASSES)
    train_labels = np.where(left, target, IGNORE_INDEX)
    val_pixels = ~left & (target != IGNORE_INDEX)
    gate = fit_input_gate(model, x, train_labels, val_pixels, seed=0, features_name="test")
    return city, emb, x, model, train_labels, val_pixels, gate


def test_input_gate_scores_raw_inputs_as_fitted_on_normalized_ones() -> None:
    _, _, x, model, train_labels, val_pixels, gate = _gated_city()
    calibration, _ = _calibration_pixels(val_pixels)
    assert gate.n_fit == int((train_labels != IGNORE_INDEX).sum()) and gate.n_calibration == int(calibration.sum())
    assert gate.features == "test" and gate.rejection_rate == 0.05
    # the threshold is the conformal quantile of the raw calibration inputs' scores, as the gate is applied
    x_cal = x[:, calibration].T
    assert gate.calibration_rejected == np.mean(gate.outside(x_cal))
    assert 0 < gate.calibration_rejected <= 0.1
    # folding the network's input normalization into the matrices keeps the distances of the normalized fit
    mean, std = model.input_mean.numpy().astype(np.float64), model.input_std.numpy().astype(np.float64)
    labelled = train_labels != IGNORE_INDEX
    normalized = fit_gate((x[:, labelled].T - mean) / std, train_labels[labelled], (x_cal - mean) / std)
    assert np.allclose(gate.score(x_cal), normalized.score(((x_cal - mean) / std).astype(np.float32)), rtol=1e-3)


def test_segment_outside_training_flags_unlike_pixels() -> None:
    city, emb, x, _, train_labels, _, gate = _gated_city()
    cube = city.cube.copy(deep=True)
    # a region of wildly different reflectance (bright and flat across bands: nothing in the city looks like it)
    cube["reflectance"][:, :, 4:12, 20:30] = 0.9
    cube["valid"][:, 4:12, 20:30] = True
    cube["n_clear"][4:12, 20:30] = 12
    cube["n_clear"][4:6, 20:22] = 0  # ... part of it without any clear observation: nodata, not "outside"
    cube["n_clear"][30:32, 0:2] = 0
    outside = segment_outside_training(gate, cube, emb, block=16)  # tiles 16/16/8 x 16/16/4: partial ones too
    assert outside.shape == (40, 36) and outside.dtype == bool
    changed = np.zeros((40, 36), dtype=bool)
    changed[4:12, 20:30] = True
    no_clear = cube["n_clear"].values == 0
    assert outside[changed & ~no_clear].all()
    assert not outside[no_clear].any()
    # elsewhere the flags are the gate's own on the unchanged inputs (tiling is exact), few on training pixels
    same = ~changed & ~no_clear
    assert np.array_equal(outside[same], gate.outside(x[:, same].T))
    training = same & (train_labels != IGNORE_INDEX)
    assert outside[training].mean() <= 0.05
    assert np.array_equal(segment_outside_training(gate, cube, emb), outside)  # one tile: the same


def test_segment_outside_training_checks_the_input_contract() -> None:
    city, _, _, _, _, _, gate = _gated_city()
    with pytest.raises(ValueError, match="features must be"):
        segment_outside_training(gate, city.cube, None)  # the gate was fitted with the embeddings
