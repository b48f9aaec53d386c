"""Threshold: keep only pixels whose calibrated posterior is reliable; mark the rest, never guess.

Every map pixel ends up as exactly one of: a class code, or a reason code that is never a class:

- ``nodata``: no imagery (no clear observation at all, or no posterior),
- ``too_few_observations``: fewer clear observations than ``min_clear_observations``,
- ``outside_training``: the novelty gate (``suelo.novelty``) found the pixel unlike the model's training data;
  decided before, and whatever, the confidence (out-of-distribution inputs often get *high* posteriors),
- ``low_confidence``: the model's calibrated confidence is below the threshold.

Thresholds are given directly or chosen for a target accuracy of the retained pixels with a finite-sample
guarantee: candidate thresholds are tested with exact Clopper-Pearson bounds on the retained error rate, by fixed-
sequence testing and over a grid of score quantiles with a union bound, each search spending half of ``delta``.
With probability at least ``1 - delta`` over the validation draw, the chosen threshold's retained accuracy on new
data from the same distribution reaches the target.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
from scipy.special import softmax
from scipy.stats import beta

from suelo.atomic import atomic_output, write_json_atomic
from suelo.reasons import (  # noqa: F401  (the threshold stage writes these codes)
    LANDCOVER_REASONS,
    UINT16_REASONS,
    URBAN_ATLAS_REASONS,
    ZERO_CLASS_REASONS,
    ReasonCodes,
    reasons_for,
)

Score = Literal["top1", "margin"]
CONFIDENCE_NODATA = 255
# The stored score of calibration points the novelty gate rejected: never a threshold, never retained, but still
# counted in the coverage (they are not mapped).
REJECTED_SCORE = -1.0


@dataclass(frozen=True)
class ThresholdPolicy:
    """Which confidence score is thresholded and at what value (per class overrides the global value)."""

    score: Score = "top1"
    threshold: float = 0.0
    per_class: tuple[float, ...] = field(default_factory=tuple)
    min_clear_observations: int = 1

    def thresholds_for(self, n_classes: int) -> np.ndarray:
        if self.per_class:
            if len(self.per_class) != n_classes:
                raise ValueError(f"{len(self.per_class)} per-class thresholds for {n_classes} classes")
            return np.asarray(self.per_class, dtype=np.float64)
        return np.full(n_classes, self.threshold, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "threshold": self.threshold,
            "per_class": list(self.per_class),
            "min_clear_observations": self.min_clear_observations,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThresholdPolicy:
        return cls(
            score=data.get("score", "top1"),
            threshold=float(data.get("threshold", 0.0)),
            per_class=tuple(float(v) for v in data.get("per_class", ())),
            min_clear_observations=int(data.get("min_clear_observations", 1)),
        )


def confidence_score(posteriors: np.ndarray, score: Score = "top1", axis: int = -1) -> np.ndarray:
    """Top-1 posterior, or the margin between the top two posteriors, along the class ``axis``."""
    if score == "top1":
        top1: np.ndarray = np.max(posteriors, axis=axis)
        return top1
    top_two = -np.partition(-posteriors, 1, axis=axis)
    first = np.take(top_two, 0, axis=axis)
    second = np.take(top_two, 1, axis=axis)
    margin: np.ndarray = first - second
    return margin


def error_upper_bound(errors: np.ndarray, retained: np.ndarray, delta: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound (confidence 1 - delta) on the error rate given errors / retained."""
    errors = np.asarray(errors, dtype=np.float64)
    retained = np.asarray(retained, dtype=np.float64)
    bound = np.ones_like(errors)
    ok = (errors < retained) & (retained > 0)
    bound[ok] = beta.ppf(1 - delta, errors[ok] + 1, retained[ok] - errors[ok])
    return bound


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold chosen for a target, with what it costs (coverage) and what it guarantees."""

    threshold: float
    target_accuracy: float
    delta: float
    n_validation: int
    n_retained: int
    retained_accuracy: float
    accuracy_lower_bound: float
    all_accuracy: float

    @property
    def coverage(self) -> float:
        return self.n_retained / self.n_validation if self.n_validation else 0.0

    @property
    def feasible(self) -> bool:
        return self.n_retained > 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThresholdChoice:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "target_accuracy": self.target_accuracy,
            "delta": self.delta,
            "n_validation": self.n_validation,
            "n_retained": self.n_retained,
            "coverage": self.coverage,
            "retained_accuracy": self.retained_accuracy,
            "accuracy_lower_bound": self.accuracy_lower_bound,
            "all_accuracy": self.all_accuracy,
            "feasible": self.feasible,
        }


#: Candidate thresholds of the grid search: the score quantiles at coverages 1/K, 2/K, ..., 1.
CANDIDATES = 20


def choose_threshold(
    scores: np.ndarray,
    correct: np.ndarray,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    candidates: int = CANDIDATES,
) -> ThresholdChoice:
    """The lowest threshold (largest coverage) whose retained accuracy is certified at ``target_accuracy``.

    Two searches, each spending ``delta / 2`` (so by the union bound the guarantee holds for whichever wins):

    - fixed sequence: every distinct score from the highest down, each tested with an exact Clopper-Pearson bound
      at level ``delta / 2``, stopping at the first failure (no multiplicity correction needed; strong when the
      most confident samples are all right, but one early error ends it);
    - grid: the score quantiles at coverages ``1/K, ..., 1``, each tested at ``delta / (2K)`` (a union bound, as in
      selective classification with guaranteed risk, Geifman & El-Yaniv 2017); robust to an early error.

    Candidates depend on the scores only, never the labels. The larger certified coverage is kept. If nothing
    passes, the threshold is above every score (retain nothing): the caller must report that as infeasible rather
    than map anything unreliable.
    """
    if not 0 < target_accuracy < 1 or not 0 < delta < 1:
        raise ValueError("target_accuracy and delta must be in (0, 1)")
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    n = len(scores)
    if n == 0:
        return ThresholdChoice(float("inf"), target_accuracy, delta, 0, 0, *(float("nan"),) * 3)
    all_accuracy = float(correct.mean())
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    errors_cum = np.cumsum(~correct[order])
    risk = 1 - target_accuracy
    half = delta / 2

    def ends_of_ties(positions: np.ndarray) -> np.ndarray:
        """A threshold keeps every sample scoring >= it, so a candidate position extends over its ties."""
        return np.unique(np.searchsorted(-sorted_scores, -sorted_scores[positions], side="right") - 1)

    best: tuple[int, float] | None = None  # (last retained position, error bound)
    # fixed sequence over the distinct scores, skipping candidates too small to ever pass (a score-only rule)
    sequence = ends_of_ties(np.arange(n))
    min_retained = int(np.ceil(np.log(half) / np.log1p(-risk)))
    sequence = sequence[sequence + 1 >= min_retained]
    eligible = sorted_scores > REJECTED_SCORE  # a gate-rejected point is never retained, whatever the threshold
    sequence = sequence[eligible[sequence]]
    bounds = error_upper_bound(errors_cum[sequence], sequence + 1, half)
    failed = np.flatnonzero(bounds > risk)
    passed = sequence[: failed[0]] if failed.size else sequence
    if passed.size:
        best = (int(passed[-1]), float(bounds[len(passed) - 1]))
    # grid of quantile candidates with a union bound
    grid = ends_of_ties(np.ceil(np.arange(1, candidates + 1) * n / candidates).astype(int) - 1)
    grid = grid[eligible[grid]]
    grid_bounds = error_upper_bound(errors_cum[grid], grid + 1, half / candidates)
    ok = np.flatnonzero(grid_bounds <= risk)
    if ok.size and (best is None or grid[ok[-1]] > best[0]):
        best = (int(grid[ok[-1]]), float(grid_bounds[ok[-1]]))
    if best is None:
        return ThresholdChoice(float("inf"), target_accuracy, delta, n, 0, float("nan"), float("nan"), all_accuracy)
    last, bound = best
    kept, wrong = last + 1, int(errors_cum[last])
    return ThresholdChoice(
        threshold=float(sorted_scores[last]),
        target_accuracy=target_accuracy,
        delta=delta,
        n_validation=n,
        n_retained=kept,
        retained_accuracy=(kept - wrong) / kept,
        accuracy_lower_bound=1 - bound,
        all_accuracy=all_accuracy,
    )


def choose_policy(
    posteriors: np.ndarray,
    labels: np.ndarray,
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    score: Score = "top1",
    per_class: bool = False,
    min_clear_observations: int = 1,
    scores: np.ndarray | None = None,
) -> tuple[ThresholdPolicy, dict[str, Any]]:
    """A policy meeting ``target_accuracy`` on validation ``posteriors`` (N, C) with labels as class indices.

    Per class, the guarantee is on the precision of each predicted class, with ``delta`` split over the classes
    (Bonferroni) so all of them hold together. ``scores`` overrides the confidence score of each point (the
    novelty gate's rejected points score :data:`REJECTED_SCORE`).
    """
    scores = confidence_score(posteriors, score) if scores is None else np.asarray(scores, dtype=np.float64)
    predicted = posteriors.argmax(axis=1)
    correct = predicted == labels
    overall = choose_threshold(scores, correct, target_accuracy, delta)
    report: dict[str, Any] = {"score": score, "global": overall.to_dict()}
    if not per_class:
        return ThresholdPolicy(score, overall.threshold, (), min_clear_observations), report
    n_classes = posteriors.shape[1]
    thresholds, per_class_report = [], {}
    for c in range(n_classes):
        chosen = predicted == c
        choice = choose_threshold(scores[chosen], correct[chosen], target_accuracy, delta / n_classes)
        thresholds.append(choice.threshold)
        per_class_report[str(c)] = choice.to_dict()
    report["per_class"] = per_class_report
    return ThresholdPolicy(score, overall.threshold, tuple(thresholds), min_clear_observations), report


def policy_for_model(
    meta: dict[str, Any],
    target_accuracy: float | None = None,
    delta: float = 0.05,
    threshold: float | None = None,
    score: Score | None = None,
    per_class: bool = False,
    min_clear_observations: int = 1,
) -> tuple[ThresholdPolicy, dict[str, Any]]:
    """The policy a run applies with a model: a fixed threshold, a new target certified on the validation scores
    stored in the model, or the model's own certified policy. The report says which, and what it costs."""
    stored = ThresholdPolicy.from_dict(meta.get("thresholds", {}).get("policy", {}))
    score = score or stored.score
    if threshold is not None:
        policy = ThresholdPolicy(score, threshold, (), min_clear_observations)
        return policy, {"source": "fixed threshold from the job", "policy": policy.to_dict()}
    if target_accuracy is None and score == stored.score and not per_class:
        policy = ThresholdPolicy(stored.score, stored.threshold, stored.per_class, min_clear_observations)
        report: dict[str, Any] = dict(meta.get("thresholds", {}).get("report", {}))
        return policy, {"source": "the model's certified policy", "policy": policy.to_dict(), **report}
    validation = meta.get("validation_scores")
    if not validation:
        raise ValueError("the model stores no validation scores; give a fixed threshold instead of a target")
    target = (
        target_accuracy if target_accuracy is not None else meta["thresholds"]["report"]["global"]["target_accuracy"]
    )
    scores = np.asarray(validation[score], dtype=np.float64)
    correct = np.asarray(validation["correct"], dtype=bool)
    choice = choose_threshold(scores, correct, target, delta)
    report = {"source": f"certified at run time for target {target}", "global": choice.to_dict()}
    per_class_thresholds: tuple[float, ...] = ()
    if per_class:
        predicted = np.asarray(validation["predicted"])
        n_classes = len(meta["legend"])
        choices = []
        for c in range(n_classes):
            chosen = predicted == c
            choices.append(choose_threshold(scores[chosen], correct[chosen], target, delta / n_classes))
        per_class_thresholds = tuple(ch.threshold for ch in choices)
        report["per_class"] = {str(c): ch.to_dict() for c, ch in enumerate(choices)}
    policy = ThresholdPolicy(
        score, _as_stored(choice.threshold), tuple(_as_stored(t) for t in per_class_thresholds), min_clear_observations
    )
    report["policy"] = policy.to_dict()
    return policy, report


#: Decimals of the calibration scores stored in a model (``validation_scores``).
STORED_SCORE_DECIMALS = 6


def _as_stored(threshold: float) -> float:
    """A threshold chosen among stored (rounded) scores, as the smallest unrounded score that rounds to it: a pixel
    scoring 0.9999996 is the calibration point stored as 1.0, and must be kept when 1.0 is the threshold."""
    if not math.isfinite(threshold):
        return threshold
    return threshold - 0.5 * 10.0**-STORED_SCORE_DECIMALS


def certification_problem(meta: dict[str, Any], report: dict[str, Any], delta: float = 0.05) -> str | None:
    """Why a policy from :func:`policy_for_model` maps nothing, or None when it certifies its target.

    The message names the number of calibration points and the highest target they certify, with its coverage,
    so the user can choose a target that works.
    """
    choice = report.get("global")
    if not choice or choice.get("feasible", True):
        return None
    validation = meta.get("validation_scores") or {}
    score = report.get("policy", {}).get("score", "top1")
    n = len(validation.get(score, []))
    target = choice.get("target_accuracy")
    best = None
    if n:
        scores = np.asarray(validation[score], dtype=np.float64)
        best = highest_certifiable(scores, np.asarray(validation["correct"], dtype=bool), choice.get("delta", delta))
    if best is None:
        return f"target accuracy {target} is not certifiable on its {n} calibration points, nor is any target"
    return (
        f"target accuracy {target} is not certifiable on its {n} calibration points; the highest certifiable is "
        f"{best.target_accuracy:g} (coverage {best.coverage:.1%})"
    )


#: Targets a model may store as its default, highest first: training keeps the highest one its calibration data
#: certifies (at or below the one asked for), so a run that does not set a target never maps nothing by surprise.
TARGET_LADDER: tuple[float, ...] = (0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.90, 0.89, 0.88, 0.87, 0.86,
                                    0.85, 0.84, 0.83, 0.82, 0.81, 0.80, 0.78, 0.76, 0.74, 0.72, 0.70, 0.65, 0.60,
                                    0.55, 0.50)  # fmt: skip


def reason_code_collisions(legend: Any) -> list[int]:
    """Legend codes that are also one of the reason codes its maps would use (empty when none)."""
    return sorted(set(legend.codes) & set(reasons_for(legend).as_tuple()))


def highest_certifiable(
    scores: np.ndarray, correct: np.ndarray, delta: float = 0.05, at_most: float = 1.0
) -> ThresholdChoice | None:
    """The choice for the highest :data:`TARGET_LADDER` target (at most ``at_most``) that ``scores``/``correct``
    certify, or None when not even the lowest one is certifiable."""
    for target in TARGET_LADDER:
        if target > at_most + 1e-12:
            continue
        choice = choose_threshold(scores, correct, target, delta)
        if choice.feasible:
            return choice
    return None


def calibrate_and_certify(
    logits: np.ndarray,
    targets: np.ndarray,
    method: str = "temperature",
    target_accuracy: float = 0.95,
    delta: float = 0.05,
    score: Score = "top1",
    inside: np.ndarray | None = None,
    honest_target: bool = False,
) -> dict[str, Any]:
    """Everything a model stores about its confidence, from held-out logits (N, C) and target class indices.

    Calibration fitted on the held-out logits, its ECE and NLL before and after, the policy certified for
    ``target_accuracy``, and the held-out scores (calibrated top-1 and margin, correctness, prediction) that let
    :func:`policy_for_model` certify any other target at run time without the data.

    ``inside`` (N,) bool marks the held-out points the novelty gate lets through; the others get the score
    :data:`REJECTED_SCORE`, so they are never retained and the certified coverage is a share of *all* held-out
    points (what a map gets), not only of those inside the gate. With ``honest_target`` a target the data cannot
    certify is lowered to the highest certifiable one on :data:`TARGET_LADDER` (the report says so).
    """
    from suelo.calibrate import expected_calibration_error, fit_calibration, negative_log_likelihood

    logits = np.asarray(logits, dtype=np.float64)
    uncalibrated = softmax(logits, axis=1)
    calibration = fit_calibration(logits, targets, method)  # type: ignore[arg-type]
    calibrated = calibration.apply(logits)
    inside = np.ones(len(targets), dtype=bool) if inside is None else np.asarray(inside, dtype=bool)

    def gated_score(kind: Score) -> np.ndarray:
        return np.where(inside, confidence_score(calibrated, kind), REJECTED_SCORE)

    correct = calibrated.argmax(1) == targets
    requested = target_accuracy
    note = "as asked"
    if honest_target:
        best = highest_certifiable(gated_score(score), correct, delta, at_most=target_accuracy)
        if best is None:
            note = f"nothing down to {TARGET_LADDER[-1]} is certifiable: the model maps nothing at its default"
        elif best.target_accuracy < target_accuracy:
            target_accuracy = best.target_accuracy
            note = f"{requested} is not certifiable on {len(targets)} held-out points; lowered to {target_accuracy}"
    policy, report = choose_policy(calibrated, targets, target_accuracy, delta, score, scores=gated_score(score))
    report["requested_target"] = requested
    report["target_note"] = note
    return {
        "calibration": calibration.to_dict(),
        "metrics": {
            "method": calibration.method,
            "temperature": calibration.temperature,
            "ece_before": expected_calibration_error(uncalibrated, targets),
            "ece_after": expected_calibration_error(calibrated, targets),
            "nll_before": negative_log_likelihood(np.log(np.clip(uncalibrated, 1e-12, 1)), targets),
            "nll_after": negative_log_likelihood(np.log(np.clip(calibrated, 1e-12, 1)), targets),
            "n": len(targets),
            "n_inside_gate": int(inside.sum()),
        },
        "thresholds": {"policy": policy.to_dict(), "report": report},
        "validation_scores": {
            "top1": np.round(gated_score("top1"), STORED_SCORE_DECIMALS).tolist(),
            "margin": np.round(gated_score("margin"), STORED_SCORE_DECIMALS).tolist(),
            "correct": correct.astype(int).tolist(),
            "predicted": calibrated.argmax(1).astype(int).tolist(),
            "inside_gate": inside.astype(int).tolist(),
        },
    }


# -- applying a policy to posteriors ----------------------------------------------------------------------


def classify_block(
    posteriors: np.ndarray,
    class_codes: np.ndarray,
    policy: ThresholdPolicy,
    n_clear: np.ndarray | None = None,
    reasons: ReasonCodes = LANDCOVER_REASONS,
    dtype: np.dtype | type = np.uint8,
    outside: np.ndarray | None = None,
) -> np.ndarray:
    """Map codes, confidence and unmasked prediction for one block of calibrated ``posteriors`` (class, y, x).

    ``outside`` (y, x) bool marks the pixels the novelty gate rejected. Returns ``(3, y, x)`` of ``dtype``: final
    code (class or reason), confidence 0-100 (255 = none) and the argmax class code before masking
    (``reasons.nodata`` where there is no posterior), which the area statistics need. Precedence: nodata, then too
    few observations, then outside the training data, then low confidence.
    """
    class_codes = np.asarray(class_codes)
    no_posterior = ~np.isfinite(posteriors).all(axis=0)
    safe = np.where(no_posterior[None], 0.0, posteriors)
    winner = safe.argmax(axis=0)
    score = confidence_score(safe, policy.score, axis=0)
    confidence = np.where(no_posterior, CONFIDENCE_NODATA, np.rint(np.clip(safe.max(axis=0), 0, 1) * 100))
    predicted = np.where(no_posterior, reasons.nodata, class_codes[winner])
    codes = predicted.copy()
    codes[score < policy.thresholds_for(len(class_codes))[winner]] = reasons.low_confidence
    if outside is not None:
        codes[np.asarray(outside, dtype=bool)] = reasons.outside_training
    if n_clear is not None:
        codes[n_clear < policy.min_clear_observations] = reasons.too_few_observations
        no_posterior |= n_clear == 0
    codes[no_posterior] = reasons.nodata
    predicted = np.where(no_posterior, reasons.nodata, predicted)
    confidence = np.where(no_posterior, CONFIDENCE_NODATA, confidence)
    return np.stack([codes, confidence, predicted]).astype(dtype)


def classify(
    posteriors: xr.DataArray,
    class_codes: np.ndarray,
    policy: ThresholdPolicy,
    n_clear: xr.DataArray | None = None,
    reasons: ReasonCodes = LANDCOVER_REASONS,
    dtype: np.dtype | type = np.uint8,
) -> xr.Dataset:
    """Apply :func:`classify_block` lazily, block by block, to a (class, y, x) DataArray (dask or numpy)."""
    data = posteriors.data
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=(-1, 512, 512))
    data = data.rechunk({0: -1})
    args: list[Any] = [data]
    if n_clear is not None:
        clear = n_clear.data if isinstance(n_clear.data, da.Array) else da.from_array(n_clear.data)
        args.append(clear.rechunk(data.chunks[1:])[None])

    def block(post: np.ndarray, clear: np.ndarray | None = None) -> np.ndarray:
        return classify_block(post, class_codes, policy, None if clear is None else clear[0], reasons, dtype)

    planes = da.map_blocks(block, *args, dtype=dtype, chunks=((3,), *data.chunks[1:]))
    coords = {k: v for k, v in posteriors.coords.items() if "class" not in v.dims}
    return xr.Dataset(
        {
            "code": (("y", "x"), planes[0]),
            "confidence": (("y", "x"), planes[1].astype(np.uint8)),
            "predicted": (("y", "x"), planes[2]),
        },
        coords=coords,
        attrs={"policy": str(policy.to_dict()), "reason_codes": str(reasons.as_tuple())},
    )


def masking_counts(
    codes: np.ndarray, predicted: np.ndarray, class_codes: np.ndarray, reasons: ReasonCodes
) -> dict[str, Any]:
    """Pixel counts behind :func:`masking_report`; counts of blocks add up (:func:`merge_counts`)."""
    codes, predicted = np.asarray(codes).ravel(), np.asarray(predicted).ravel()
    return {
        "pixels": int(codes.size),
        "nodata": int((codes == reasons.nodata).sum()),
        "too_few_observations": int((codes == reasons.too_few_observations).sum()),
        "low_confidence": int((codes == reasons.low_confidence).sum()),
        "outside_training": int((codes == reasons.outside_training).sum()),
        "predicted": [int((predicted == c).sum()) for c in class_codes],
        "retained": [int(((predicted == c) & (codes == c)).sum()) for c in class_codes],
    }


def merge_counts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total = {key: 0 for key in ("pixels", "nodata", "too_few_observations", "low_confidence", "outside_training")}
    predicted: np.ndarray | None = None
    retained: np.ndarray | None = None
    for part in parts:
        for key in total:
            total[key] += part.get(key, 0)
        predicted = np.asarray(part["predicted"]) + (0 if predicted is None else predicted)
        retained = np.asarray(part["retained"]) + (0 if retained is None else retained)
    return {**total, "predicted": [] if predicted is None else predicted.tolist(),
            "retained": [] if retained is None else retained.tolist()}  # fmt: skip


def report_from_counts(counts: dict[str, Any], class_codes: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Share of area masked, overall and per predicted class (percent of that class's pixels)."""
    total = counts["pixels"]
    outside = counts.get("outside_training", 0)
    masked = counts["low_confidence"] + counts["too_few_observations"] + outside
    imaged = total - counts["nodata"]
    report: dict[str, Any] = {
        "pixels": total,
        "nodata_pct": _pct(counts["nodata"], total),
        "too_few_observations_pct": _pct(counts["too_few_observations"], total),
        "outside_training_pct": _pct(outside, total),
        "low_confidence_pct": _pct(counts["low_confidence"], total),
        "masked_pct_of_imaged": _pct(masked, imaged),
        # the share the novelty gate rejected among pixels it saw (imaged pixels with enough observations)
        "outside_training_pct_of_imaged": outside_training_pct(counts),
        "classes": [],
    }
    for code, name, was, kept in zip(class_codes, names, counts["predicted"], counts["retained"], strict=True):
        report["classes"].append(
            {
                "code": int(code),
                "name": name,
                "predicted_pixels": int(was),
                "retained_pixels": int(kept),
                "masked_pct": _pct(was - kept, was),
            }
        )
    return report


def masking_report(
    codes: np.ndarray, predicted: np.ndarray, class_codes: np.ndarray, names: list[str], reasons: ReasonCodes
) -> dict[str, Any]:
    """Share of area masked, overall and per predicted class (percent of that class's pixels)."""
    return report_from_counts(masking_counts(codes, predicted, class_codes, reasons), class_codes, names)


def outside_training_pct(counts: dict[str, Any]) -> float:
    """The share (percent) of the pixels the novelty gate saw (imaged, enough observations) that it rejected, from
    :func:`masking_counts` of a block or of a whole map."""
    seen = counts["pixels"] - counts["nodata"] - counts["too_few_observations"]
    return _pct(counts.get("outside_training", 0), seen)


def _pct(part: float, whole: float) -> float:
    return round(100.0 * float(part) / float(whole), 3) if whole else 0.0


# -- risk-coverage ------------------------------------------------------------------------------------------


def risk_coverage(scores: np.ndarray, correct: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """Error rate of the retained samples as a function of coverage (samples kept by decreasing score)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    wrong = ~np.asarray(correct, dtype=bool)[order]
    n = len(order)
    kept = np.arange(1, n + 1)
    risk = np.cumsum(wrong) / kept
    pick = np.unique(np.linspace(0, n - 1, min(max_points, n)).astype(int))
    return {
        "coverage": (kept[pick] / n).round(5).tolist(),
        "risk": risk[pick].round(5).tolist(),
        "threshold": np.asarray(scores)[order][pick].round(5).tolist(),
    }


def write_risk_coverage(
    scores: np.ndarray, correct: np.ndarray, choice: ThresholdChoice, json_path: Path, png_path: Path
) -> None:
    """Risk-coverage curve as JSON and PNG, with the target and the chosen operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = risk_coverage(scores, correct)
    write_json_atomic(json_path, {"curve": curve, "choice": choice.to_dict()})
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=100)
    ax.plot(curve["coverage"], curve["risk"], color="#1f78b4", label="validation risk (1 - accuracy)")
    ax.axhline(1 - choice.target_accuracy, color="#e31a1c", linestyle="--", linewidth=1, label="target risk")
    if choice.feasible:
        ax.plot([choice.coverage], [1 - choice.retained_accuracy], "o", color="#33a02c",
                label=f"chosen: coverage {choice.coverage:.1%}, threshold {choice.threshold:.3f}")  # fmt: skip
    ax.set_xlabel("coverage (share of pixels kept)")
    ax.set_ylabel("risk")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, max(curve["risk"] or [0]) * 1.05))
    ax.legend(fontsize=8)
    ax.set_title("Risk-coverage")
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
