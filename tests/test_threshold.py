from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from suelo.threshold import (
    LANDCOVER_REASONS,
    ThresholdPolicy,
    choose_policy,
    choose_threshold,
    classify,
    classify_block,
    confidence_score,
    masking_report,
    policy_for_model,
    write_risk_coverage,
)


def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform on [0.3, 1]; a sample is correct with probability equal to its score (calibrated model)."""
    scores = rng.uniform(0.3, 1.0, n)
    return scores, rng.random(n) < scores


def test_chosen_threshold_meets_its_target_on_fresh_samples() -> None:
    rng = np.random.default_rng(7)
    scores, correct = draw(8000, rng)
    choice = choose_threshold(scores, correct, target_accuracy=0.95, delta=0.05)
    assert choice.feasible and 0 < choice.coverage < 0.3
    fresh_scores, fresh_correct = draw(400_000, rng)
    kept = fresh_scores >= choice.threshold
    assert fresh_correct[kept].mean() >= 0.95
    assert choice.accuracy_lower_bound >= 0.95
    assert choice.all_accuracy == pytest.approx(correct.mean())


def test_guarantee_holds_across_validation_draws() -> None:
    """Over many validation draws, the target is missed in at most about delta of them."""
    rng = np.random.default_rng(11)
    misses = 0
    for _ in range(40):
        scores, correct = draw(1500, rng)
        choice = choose_threshold(scores, correct, target_accuracy=0.9, delta=0.1)
        # true retained accuracy of threshold t for uniform scores on [0.3, 1]: mean of U(t, 1) = (1 + t) / 2
        misses += (1 + choice.threshold) / 2 < 0.9
    assert misses <= 8  # expectation <= 4; the bound is conservative


def test_infeasible_target_retains_nothing() -> None:
    scores = np.linspace(0.5, 1.0, 50)
    correct = np.arange(50) % 2 == 0  # 50% accurate everywhere
    choice = choose_threshold(scores, correct, target_accuracy=0.99)
    assert not choice.feasible and choice.threshold == float("inf") and choice.coverage == 0


def test_margin_and_per_class_policies() -> None:
    posteriors = np.array([[0.6, 0.3, 0.1], [0.4, 0.35, 0.25]])
    np.testing.assert_allclose(confidence_score(posteriors, "margin"), [0.3, 0.05])
    rng = np.random.default_rng(3)
    n = 4000
    labels = rng.integers(0, 3, n)
    confident = rng.random(n) < 0.7
    posteriors = np.full((n, 3), 0.05)
    posteriors[np.arange(n), labels] = np.where(confident, 0.9, 0.4)
    wrong = (~confident) & (rng.random(n) < 0.5)
    posteriors[wrong, (labels[wrong] + 1) % 3] = 0.55
    posteriors /= posteriors.sum(axis=1, keepdims=True)
    policy, report = choose_policy(posteriors, labels, target_accuracy=0.95, per_class=True)
    assert len(policy.per_class) == 3 and set(report["per_class"]) == {"0", "1", "2"}
    assert all(0.5 < t <= 0.9 for t in policy.per_class)
    assert ThresholdPolicy.from_dict(policy.to_dict()) == policy


def test_masking_codes_are_exact() -> None:
    # 2 classes with legend codes 10 and 20, a 2 x 3 block
    posteriors = np.array(
        [
            [[0.9, 0.6, np.nan], [0.2, 0.5, 0.97]],
            [[0.1, 0.4, np.nan], [0.8, 0.5, 0.03]],
        ],
        dtype=np.float32,
    )
    n_clear = np.array([[5, 5, 0], [5, 5, 1]])
    policy = ThresholdPolicy(threshold=0.7, min_clear_observations=2)
    codes, confidence, predicted = classify_block(posteriors, np.array([10, 20]), policy, n_clear)
    np.testing.assert_array_equal(codes, [[10, 254, 0], [20, 254, 253]])
    np.testing.assert_array_equal(confidence, [[90, 60, 255], [80, 50, 97]])
    np.testing.assert_array_equal(predicted, [[10, 10, 0], [20, 10, 10]])
    report = masking_report(codes, predicted, np.array([10, 20]), ["crop", "tree"], LANDCOVER_REASONS)
    assert report["nodata_pct"] == pytest.approx(100 / 6, abs=1e-3)
    assert report["low_confidence_pct"] == pytest.approx(200 / 6, abs=1e-3)
    assert report["classes"][0] == {
        "code": 10, "name": "crop", "predicted_pixels": 4, "retained_pixels": 1, "masked_pct": 75.0,
    }  # fmt: skip


def test_blockwise_classification_equals_whole_array() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 37, 53))
    posteriors = np.exp(logits) / np.exp(logits).sum(axis=0)
    posteriors[:, 3:5, 10:20] = np.nan
    n_clear = rng.integers(0, 6, (37, 53))
    codes = np.array([1, 2, 3, 4])
    policy = ThresholdPolicy(threshold=0.45, min_clear_observations=2)
    whole = classify_block(posteriors, codes, policy, n_clear)
    import dask.array as da

    lazy = xr.DataArray(da.from_array(posteriors, chunks=(2, 16, 16)), dims=("class", "y", "x"))
    result = classify(policy=policy, posteriors=lazy, class_codes=codes, n_clear=xr.DataArray(n_clear, dims=("y", "x")))
    assert result.code.data.chunks == ((16, 16, 5), (16, 16, 16, 5))
    np.testing.assert_array_equal(result.code.values, whole[0])
    np.testing.assert_array_equal(result.confidence.values, whole[1])


def test_risk_coverage_outputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    scores, correct = draw(2000, rng)
    choice = choose_threshold(scores, correct, 0.9)
    write_risk_coverage(scores, correct, choice, tmp_path / "rc.json", tmp_path / "rc.png")
    data = json.loads((tmp_path / "rc.json").read_text())
    assert data["curve"]["coverage"][-1] == 1.0
    assert data["curve"]["risk"][-1] == pytest.approx(1 - correct.mean(), abs=1e-4)
    assert data["choice"]["threshold"] == choice.threshold
    assert (tmp_path / "rc.png").stat().st_size > 1000


def test_policy_for_model_fixed_stored_and_new_target() -> None:
    rng = np.random.default_rng(2)
    scores, correct = draw(3000, rng)
    stored = ThresholdPolicy("top1", 0.97, (), 1)
    meta = {
        "legend": [{"code": 1}, {"code": 2}],
        "thresholds": {"policy": stored.to_dict(), "report": {"global": {"target_accuracy": 0.95}}},
        "validation_scores": {
            "top1": scores.tolist(), "margin": scores.tolist(), "correct": correct.astype(int).tolist(),
            "predicted": (np.arange(3000) % 2).tolist(),
        },
    }  # fmt: skip
    policy, report = policy_for_model(meta, min_clear_observations=3)
    assert policy == ThresholdPolicy("top1", 0.97, (), 3) and report["source"].startswith("the model")
    policy, report = policy_for_model(meta, threshold=0.5)
    assert policy.threshold == 0.5 and report["source"].startswith("fixed")
    policy, report = policy_for_model(meta, target_accuracy=0.9)
    # chosen among the stored scores (6 decimals): the smallest score that rounds to the chosen one
    assert policy.threshold == choose_threshold(scores, correct, 0.9).threshold - 5e-7
    assert report["global"]["coverage"] > 0
    policy, report = policy_for_model(meta, target_accuracy=0.9, per_class=True)
    assert len(policy.per_class) == 2 and set(report["per_class"]) == {"0", "1"}


def test_empty_validation_is_infeasible_not_an_error() -> None:
    choice = choose_threshold(np.array([]), np.array([], dtype=bool))
    assert not choice.feasible and choice.n_validation == 0


def test_one_error_among_the_most_confident_does_not_end_the_search() -> None:
    """The grid search certifies a large coverage even when the single most confident sample is wrong."""
    rng = np.random.default_rng(4)
    scores = np.sort(rng.uniform(0.5, 1.0, 2000))[::-1]
    correct = rng.random(2000) < 0.995  # 99.5% accurate everywhere ...
    correct[0] = False  # ... but the top sample is an error
    choice = choose_threshold(scores, correct, target_accuracy=0.95)
    assert choice.feasible and choice.coverage >= 0.9


def test_a_target_certified_at_run_time_keeps_scores_that_round_to_its_threshold() -> None:
    """Stored calibration scores are rounded to 6 decimals: a near-certain point stored as 1.0 must not lose its
    pixel twin scoring 0.9999996 (it used to: 0 % coverage on easy data)."""
    from suelo.threshold import classify_block

    scores = [1.0] * 200 + [0.6] * 50
    correct = [1] * 200 + [0] * 50
    stored = {"policy": {"score": "top1", "threshold": 0.99}, "report": {"global": {"target_accuracy": 0.9}}}
    meta = {"thresholds": stored,
            "validation_scores": {"top1": scores, "margin": scores, "correct": correct, "predicted": [0] * 250},
            "legend": [{"code": 1}, {"code": 2}]}  # fmt: skip
    policy, _ = policy_for_model(meta, target_accuracy=0.95)
    posteriors = np.array([0.9999996, 0.0000004], dtype=np.float64).reshape(2, 1, 1)
    codes = classify_block(posteriors, np.array([1, 2]), policy)
    assert codes[0, 0, 0] == 1
