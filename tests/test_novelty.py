"""The novelty gate: exact scores and thresholds, storage, and its place before the confidence threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from suelo.novelty import METHOD, NoveltyGate, conformal_threshold, fit_gate
from suelo.threshold import LANDCOVER_REASONS, ThresholdPolicy, classify_block


def _two_clusters(seed: int = 0, n: int = 200, d: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n, d)), rng.normal(6, 1, (n, d))])
    return x.astype(np.float32), np.repeat([0, 1], n)


def test_conformal_threshold_is_the_exact_order_statistic() -> None:
    scores = np.arange(1, 20, dtype=float)  # 19 scores: ceil(20 * 0.95) = 19 -> the largest
    assert conformal_threshold(scores, 0.05) == 19.0
    assert conformal_threshold(np.arange(1, 101, dtype=float), 0.05) == 96.0  # ceil(101 * 0.95) = 96
    # too few points to reject at that rate: reject nothing rather than pretend
    assert conformal_threshold(np.arange(1, 11, dtype=float), 0.05) == math.inf
    with pytest.raises(ValueError):
        conformal_threshold(scores, 0.0)


def test_score_is_the_smallest_mahalanobis_distance() -> None:
    x, y = _two_clusters()
    gate = fit_gate(x, y, x[::7], 0.05)
    means = np.stack([x[y == c].mean(0) for c in (0, 1)]).astype(np.float64)
    precision = gate.whiten.astype(np.float64) @ gate.whiten.T.astype(np.float64)
    probe = np.array([[0, 0, 0, 0], [6, 6, 6, 6], [3, 3, 3, 3], [30, -30, 0, 0]], dtype=np.float32)
    expected = [min(np.sqrt((p - m) @ precision @ (p - m)) for m in means) for p in probe.astype(np.float64)]
    np.testing.assert_allclose(gate.score(probe), expected, rtol=1e-4)
    # the shared covariance is the within-class one (about the identity), not the total one
    np.testing.assert_allclose(np.linalg.inv(precision), np.eye(4), atol=0.25)
    assert gate.outside(probe).tolist() == [False, False, True, True]


def test_threshold_rejects_the_stated_share_of_fresh_in_distribution_points() -> None:
    x, y = _two_clusters(seed=1, n=2000)
    cal, _ = _two_clusters(seed=2, n=500)
    fresh, _ = _two_clusters(seed=3, n=5000)
    gate = fit_gate(x, y, cal, 0.05)
    assert gate.n_calibration == 1000 and gate.n_fit == 4000
    assert gate.calibration_rejected <= 0.05
    assert 0.03 < gate.outside(fresh).mean() < 0.07
    far = np.full((10, 4), 40.0, dtype=np.float32)
    assert gate.outside(far).all()
    assert gate.outside(np.full((1, 4), np.nan, dtype=np.float32)).all()  # a NaN embedding is never "inside"


def test_gate_round_trips_and_refuses_broken_parts() -> None:
    x, y = _two_clusters()
    gate = fit_gate(x, y, x[::3], 0.1, "test features")
    again = NoveltyGate.from_parts(gate.meta(), gate.arrays())
    assert again.meta() == gate.meta() and again.meta()["method"] == METHOD
    np.testing.assert_array_equal(again.score(x), gate.score(x))
    with pytest.raises(ValueError, match="method"):
        NoveltyGate.from_parts({"method": "knn"}, gate.arrays())
    with pytest.raises(ValueError, match="incomplete"):
        NoveltyGate.from_parts(gate.meta(), {"whiten": gate.whiten})
    with pytest.raises(ValueError, match="shapes"):
        NoveltyGate.from_parts(gate.meta(), {"whiten": gate.whiten, "means": gate.means[:, :2]})
    with pytest.raises(ValueError, match="features must be"):
        gate.score(x[:, :3])


def test_outside_training_comes_after_too_few_observations_and_before_low_confidence() -> None:
    # 1 x 5 pixels, 2 classes: confident, confident, unconfident, confident (1 obs), no posterior
    post = np.array([[[0.99, 0.99, 0.55, 0.99, np.nan]], [[0.01, 0.01, 0.45, 0.01, np.nan]]], dtype=np.float32)
    n_clear = np.array([[5, 5, 5, 1, 0]])
    outside = np.array([[False, True, True, True, True]])
    policy = ThresholdPolicy("top1", 0.9, (), min_clear_observations=2)
    codes, confidence, predicted = classify_block(post, np.array([1, 2]), policy, n_clear, outside=outside)
    r = LANDCOVER_REASONS
    assert codes.tolist() == [[1, r.outside_training, r.outside_training, r.too_few_observations, r.nodata]]
    assert predicted.tolist() == [[1, 1, 1, 1, 0]]  # the area statistics still see what the model said
    assert confidence.tolist() == [[99, 99, 55, 99, 255]]
    assert r.outside_training == 252 and len(set(r.as_tuple())) == 4
