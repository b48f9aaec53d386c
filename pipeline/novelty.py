"""Gate: say "outside the training data" for pixels unlike anything the model was trained on, before any class.

A classifier gives every input a class, and a confident one where the input lies far from all training data (open
water, villages and roads for a model trained on fields and forests got *higher* top-1 posteriors than the real
validation points), so no confidence threshold catches them. The gate models where the training data lies in the
feature space the model sees (the encoder's embedding for land cover, the per-pixel input features for the
segmenter) and rejects what lies outside.

Model: class-conditional Gaussians with one shared covariance (Lee et al. 2018, "A simple unified framework for
detecting out-of-distribution samples"); the score of a feature vector ``z`` is the smallest Mahalanobis distance
to a class mean, ``min_c sqrt((z - mu_c)^T S^-1 (z - mu_c))``. The covariance is the Ledoit-Wolf shrinkage estimate
of the within-class residuals (scikit-learn), so 128 dimensions are stable with a few hundred samples. Chosen by
measurement on the real WorldCereal samples and the Slovenia patch (``benchmarks/novelty_methods.py``, tables in
``benchmarks/NOVELTY_METHODS.md``) against k-nearest-neighbour distances (cosine and L2, k = 1..50), one Gaussian
for all classes, per-class covariances and relative Mahalanobis: leave-one-region-out AUROC 0.995 (one Gaussian 0.996,
kNN at most 0.947; held-out regions are where certificates failed to transfer), within 0.005 of the best mean over
leave-one-class-out and leave-one-region-out (one Gaussian, which has no separate modes for well separated
classes), built-up land at 0.999, and it stores only class means and one matrix (kNN would ship the training
embeddings in every model).

Threshold: a conformal quantile of the scores of held-out in-distribution *calibration* points, the
``ceil((n + 1) (1 - rate))``-th smallest, so a fresh point from the training distribution is rejected with
probability at most ``rate`` (exchangeability; no labels are used). Rate, threshold and the rate observed on the
calibration points are stored with the model and reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

METHOD = "class-gaussian-mahalanobis"
DEFAULT_REJECTION_RATE = 0.05
# pixels scored per matrix product: (chunk, features) float32 twice, plus (chunk, classes)
_CHUNK = 65536


@dataclass(frozen=True)
class NoveltyGate:
    """Whitened class means and the whitening matrix of a fitted gate, and its calibrated threshold.

    ``whiten`` ``W`` (features, features) is the Cholesky factor of the shared precision matrix (``S^-1 = W W^T``),
    so the Mahalanobis distance to class ``c`` is the Euclidean distance between ``z W`` and ``means[c]``
    (``means`` are the class means times ``W``).
    """

    whiten: np.ndarray  # (D, D) float32
    means: np.ndarray  # (C, D) float32, whitened class means
    threshold: float  # scores above it are rejected
    rejection_rate: float  # the rate the threshold was calibrated for
    n_fit: int  # training points the Gaussians were fitted on
    n_calibration: int  # held-out points the threshold was calibrated on
    calibration_rejected: float  # share of the calibration points above the threshold
    shrinkage: float  # Ledoit-Wolf shrinkage of the covariance
    features: str = "embedding"  # what the gate scores (documentation: which vector, from where)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Novelty score (smallest Mahalanobis distance to a class mean) of ``features`` (N, D); NaN rows -> NaN."""
        z = np.asarray(features, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.whiten.shape[0]:
            raise ValueError(f"features must be (N, {self.whiten.shape[0]}), got {z.shape}")
        out = np.empty(len(z), dtype=np.float32)
        sq_means = (self.means.astype(np.float64) ** 2).sum(axis=1)
        for start in range(0, len(z), _CHUNK):
            w = z[start : start + _CHUNK] @ self.whiten
            # ||w - m||^2 = ||w||^2 - 2 w.m + ||m||^2; float64 for the sum of large terms, clipped at 0
            d2 = (w.astype(np.float64) ** 2).sum(axis=1)[:, None] - 2.0 * (w @ self.means.T) + sq_means[None]
            out[start : start + _CHUNK] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        return out

    def outside(self, features: np.ndarray) -> np.ndarray:
        """True where ``features`` lie outside the training data (score above the threshold, or not finite)."""
        score = self.score(features)
        return ~(score <= self.threshold)

    def with_threshold(self, scores: np.ndarray, rejection_rate: float) -> NoveltyGate:
        """This gate with its threshold re-calibrated on held-out in-distribution ``scores``."""
        threshold = conformal_threshold(scores, rejection_rate)
        rejected = float(np.mean(np.asarray(scores) > threshold)) if len(scores) else float("nan")
        return NoveltyGate(
            self.whiten, self.means, threshold, rejection_rate, self.n_fit, len(scores), rejected, self.shrinkage,
            self.features,
        )  # fmt: skip

    # -- storage: scalars in the model's JSON meta, the two matrices as tensors ------------------------------------

    def meta(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "score": "smallest Mahalanobis distance to a class mean (shared Ledoit-Wolf covariance)",
            "features": self.features,
            "threshold": float(self.threshold),
            "rejection_rate": float(self.rejection_rate),
            "n_fit": int(self.n_fit),
            "n_calibration": int(self.n_calibration),
            "calibration_rejected": float(self.calibration_rejected),
            "shrinkage": float(self.shrinkage),
            "dimensions": int(self.whiten.shape[0]),
            "classes": int(self.means.shape[0]),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"whiten": self.whiten, "means": self.means}

    @classmethod
    def from_parts(cls, meta: dict[str, Any], arrays: dict[str, Any], source: str = "model") -> NoveltyGate:
        """Rebuild a stored gate; a ValueError says what is missing or inconsistent."""
        if not isinstance(meta, dict) or meta.get("method") != METHOD:
            raise ValueError(f"{source}: novelty gate method {meta.get('method') if isinstance(meta, dict) else meta!r}"
                             f" is not {METHOD!r}")  # fmt: skip
        try:
            whiten = np.asarray(arrays["whiten"], dtype=np.float32)
            means = np.asarray(arrays["means"], dtype=np.float32)
            threshold = float(meta["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: novelty gate incomplete ({exc})") from exc
        d = whiten.shape[0] if whiten.ndim == 2 else -1
        if whiten.shape != (d, d) or means.ndim != 2 or means.shape[1] != d or not len(means):
            raise ValueError(f"{source}: novelty gate matrices have shapes {whiten.shape} and {means.shape}")
        if not (np.isfinite(whiten).all() and np.isfinite(means).all()) or math.isnan(threshold):
            raise ValueError(f"{source}: novelty gate holds non-finite values")
        return cls(
            whiten, means, threshold, float(meta.get("rejection_rate", float("nan"))), int(meta.get("n_fit", 0)),
            int(meta.get("n_calibration", 0)), float(meta.get("calibration_rejected", float("nan"))),
            float(meta.get("shrinkage", float("nan"))), str(meta.get("features", "embedding")),
        )  # fmt: skip


def conformal_threshold(scores: np.ndarray, rejection_rate: float) -> float:
    """The ``ceil((n + 1) (1 - rate))``-th smallest score: a fresh exchangeable score exceeds it with probability
    at most ``rate``. ``inf`` (reject nothing) when there are too few scores to reject at that rate."""
    if not 0 < rejection_rate < 1:
        raise ValueError(f"rejection_rate must be in (0, 1), got {rejection_rate}")
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    k = math.ceil((len(s) + 1) * (1 - rejection_rate))
    return float("inf") if k > len(s) or not len(s) else float(s[k - 1])


def fit_gate(
    features: np.ndarray,
    labels: np.ndarray,
    calibration: np.ndarray,
    rejection_rate: float = DEFAULT_REJECTION_RATE,
    features_name: str = "embedding",
) -> NoveltyGate:
    """Fit the Gaussians on training ``features`` (N, D) with class ``labels`` (N,), then calibrate the threshold
    on held-out in-distribution ``calibration`` features (M, D) for ``rejection_rate``."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need (N, D) features with N labels, N >= 2; got {x.shape} and {y.shape}")
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    residuals = x - means[np.searchsorted(classes, y)]
    estimate = LedoitWolf(assume_centered=True).fit(residuals)
    precision = np.linalg.inv(estimate.covariance_)
    precision = (precision + precision.T) / 2  # exact symmetry for the Cholesky factor
    whiten = np.linalg.cholesky(precision)  # precision = W W^T, so (z - m)^T P (z - m) = ||(z - m) W||^2
    gate = NoveltyGate(
        whiten.astype(np.float32), (means @ whiten).astype(np.float32), float("inf"), rejection_rate, len(x), 0,
        float("nan"), float(estimate.shrinkage_), features_name,
    )  # fmt: skip
    return gate.with_threshold(gate.score(np.asarray(calibration, dtype=np.float32)), rejection_rate)
