"""Calibrate: make posteriors mean what they say (a 0.9 is right nine times in ten).

Temperature scaling (one scalar for all classes) and vector scaling (a scale and a bias per class) are fitted on
held-out logits by minimising the negative log-likelihood. Temperature scaling never changes which class wins;
vector scaling can, so temperature scaling is the default. Expected calibration error (ECE) and a reliability diagram
measure the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, softmax

from suelo.atomic import atomic_output

CalibrationMethod = Literal["none", "temperature", "vector"]


@dataclass(frozen=True)
class Calibration:
    """Maps logits to calibrated posteriors: ``softmax(logits * scale + bias)`` (temperature: scale = 1 / T)."""

    method: CalibrationMethod = "none"
    temperature: float = 1.0
    class_scale: tuple[float, ...] = field(default_factory=tuple)
    class_bias: tuple[float, ...] = field(default_factory=tuple)

    def apply(self, logits: np.ndarray, axis: int = -1) -> np.ndarray:
        """Calibrated posteriors from logits (classes along ``axis``), float32."""
        z = np.asarray(logits, dtype=np.float64)
        if self.method == "vector":
            shape = [1] * z.ndim
            shape[axis] = -1
            z = z * np.asarray(self.class_scale).reshape(shape) + np.asarray(self.class_bias).reshape(shape)
        else:
            z = z / self.temperature
        return softmax(z, axis=axis).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "temperature": self.temperature,
            "class_scale": list(self.class_scale),
            "class_bias": list(self.class_bias),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            method=data.get("method", "none"),
            temperature=float(data.get("temperature", 1.0)),
            class_scale=tuple(float(v) for v in data.get("class_scale", ())),
            class_bias=tuple(float(v) for v in data.get("class_bias", ())),
        )


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(-log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> Calibration:
    """Temperature minimising the NLL of ``softmax(logits / T)`` on held-out data (searched in log space)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits / np.exp(log_t), labels),
        bounds=(np.log(0.02), np.log(50.0)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return Calibration(method="temperature", temperature=float(np.exp(result.x)))


def fit_vector_scaling(logits: np.ndarray, labels: np.ndarray, l2: float = 1e-3) -> Calibration:
    """Per-class scale and bias minimising the NLL (lightly regularised towards identity for rare classes)."""
    logits = np.asarray(logits, dtype=np.float64)
    n_classes = logits.shape[1]
    start = fit_temperature(logits, labels)
    x0 = np.concatenate([np.full(n_classes, 1.0 / start.temperature), np.zeros(n_classes)])
    onehot = np.eye(n_classes)[labels]

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        scale, bias = params[:n_classes], params[n_classes:]
        z = logits * scale + bias
        log_p = log_softmax(z, axis=1)
        loss = -(log_p * onehot).sum(axis=1).mean()
        residual = (np.exp(log_p) - onehot) / len(labels)
        grad = np.concatenate([(residual * logits).sum(axis=0), residual.sum(axis=0)])
        loss += l2 * (((scale - x0[:n_classes]) ** 2).sum() + (bias**2).sum())
        grad += 2 * l2 * np.concatenate([scale - x0[:n_classes], bias])
        return float(loss), grad

    result = minimize(objective, x0, jac=True, method="L-BFGS-B")
    return Calibration(
        method="vector",
        temperature=start.temperature,
        class_scale=tuple(float(v) for v in result.x[:n_classes]),
        class_bias=tuple(float(v) for v in result.x[n_classes:]),
    )


def fit_calibration(logits: np.ndarray, labels: np.ndarray, method: CalibrationMethod = "temperature") -> Calibration:
    if method == "none":
        return Calibration()
    if method == "temperature":
        return fit_temperature(logits, labels)
    return fit_vector_scaling(logits, labels)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per confidence bin: mean confidence, accuracy and count (equal-width bins on the top-1 probability)."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean |accuracy - confidence| over bins."""
        filled = self.count > 0
        if not filled.any():
            return float("nan")
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((gaps * self.count[filled]).sum() / self.count.sum())


def reliability(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct.astype(float), minlength=n_bins) / count
    return ReliabilityBins(edges, mean_conf, accuracy, count)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    return reliability(probabilities, labels, n_bins).ece


def plot_reliability(before: ReliabilityBins, after: ReliabilityBins, path: Path, title: str = "") -> None:
    """Reliability diagram (accuracy vs confidence per bin) before and after calibration, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], color="#888888", linestyle="--", linewidth=1, label="perfect calibration")
    for bins, label, color in ((before, "uncalibrated", "#d95f02"), (after, "calibrated", "#1b9e77")):
        filled = bins.count > 0
        ax.plot(
            bins.confidence[filled], bins.accuracy[filled], marker="o", color=color,
            label=f"{label} (ECE {bins.ece:.3f})",
        )  # fmt: skip
    ax.set_xlabel("confidence (top-1 posterior)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title or "Reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
