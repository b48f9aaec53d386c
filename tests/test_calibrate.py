from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from suelo.calibrate import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    negative_log_likelihood,
    plot_reliability,
    reliability,
)


def overconfident_logits(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(true logits); the model reports true logits x temperature (overconfident)."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.5, (n, 4)) + np.array([0.5, 0.0, -0.3, 0.2])
    p = softmax(true_logits, axis=1)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return true_logits * temperature, labels


@pytest.mark.parametrize("temperature", [0.5, 2.0, 3.0])
def test_temperature_scaling_recovers_the_temperature(temperature: float) -> None:
    logits, labels = overconfident_logits(20000, temperature, seed=1)
    calibration = fit_calibration(logits, labels, "temperature")
    assert calibration.temperature == pytest.approx(temperature, rel=0.05)
    before = expected_calibration_error(softmax(logits, axis=1), labels)
    after = expected_calibration_error(calibration.apply(logits), labels)
    assert after < 0.02 < before
    assert np.array_equal(calibration.apply(logits).argmax(axis=1), logits.argmax(axis=1))


def test_vector_scaling_is_at_least_as_good_as_temperature() -> None:
    logits, labels = overconfident_logits(5000, 2.5, seed=2)
    logits[:, 1] += 1.0  # a class bias that one temperature cannot remove
    temperature = fit_calibration(logits, labels, "temperature")
    vector = fit_calibration(logits, labels, "vector")
    nll_t = negative_log_likelihood(np.log(temperature.apply(logits)), labels)
    nll_v = negative_log_likelihood(np.log(vector.apply(logits)), labels)
    assert nll_v < nll_t
    assert Calibration.from_dict(vector.to_dict()) == vector


def test_calibration_applies_along_any_axis() -> None:
    logits, _ = overconfident_logits(12, 2.0, seed=3)
    calibration = Calibration(method="temperature", temperature=2.0)
    per_pixel = calibration.apply(logits.T.reshape(4, 3, 4), axis=0)
    np.testing.assert_allclose(per_pixel.reshape(4, 12).T, softmax(logits / 2.0, axis=1), rtol=1e-6)


def test_reliability_bins_and_diagram(tmp_path: Path) -> None:
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    bins = reliability(probabilities, labels, n_bins=2)
    np.testing.assert_array_equal(bins.count, [0, 4])
    # one bin: mean confidence (0.9 + 0.8 + 0.7 + 0.55) / 4, accuracy 3 / 4
    assert bins.ece == pytest.approx(abs(0.75 - 0.7375))
    plot_reliability(bins, bins, tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
