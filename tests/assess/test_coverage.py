"""Do the 95 % intervals cover the truth 95 % of the time? Repeated samples from a synthetic map with known truth.

The map (120,000 pixels) has three classes and an "unclassified (low confidence)" stratum; every pixel has a true
class, so the true overall accuracy of the mapped area, each class's user's and producer's accuracy and true area
are known exactly. 1,000 stratified samples are drawn with the design's own sampler and allocation (400 points,
at least 50 per stratum) and analysed with the estimators; each interval either covers its true value or not.

With 1,000 repetitions an observed coverage lies within +-1.4 % of the true one (two binomial standard errors)
95 % of the time. The intervals are the papers' Wald intervals, estimate +- 1.96 SE, which run below 95 % for
proportions near 0 or 1 because the binomial is discrete (Brown, Cai and DasGupta 2001): the user's accuracy of a
class that is 90 % right, from 188 points, is covered 93.2 % of the time (exact binomial sum). So each quantity
must lie in [0.90, 0.975] and their mean in [0.935, 0.96]. The same holds when the strata are not the map's values
(last year's map, 15 % of it different: Stehman 2014).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from suelo.assess.design import draw_pixels
from suelo.assess.estimate import StratifiedSample, allocate, estimate
from suelo.assess.maps import read_class_map
from suelo.legend import Legend
from tests.fixtures.assessment import legend_of, write_codes

REPETITIONS = 1000
CLASSES = (1, 2, 3)
LOW_CONFIDENCE = 254


def synthetic(seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """(map, truth): a 300 x 400 map of classes 1-3 (50 %, 30 %, 12 %) and 8 % low confidence, and a true class
    per pixel: the map's with 90 % / 80 % / 65 % chance, otherwise another class; the unmapped pixels' truth is
    40 % / 35 % / 25 %."""
    rng = np.random.default_rng(seed)
    shape = (300, 400)
    codes = rng.choice([1, 2, 3, LOW_CONFIDENCE], size=shape, p=[0.5, 0.3, 0.12, 0.08]).astype(np.uint8)
    truth = codes.astype(np.int64).copy()
    for k, right in zip(CLASSES, (0.9, 0.8, 0.65), strict=True):
        at = codes == k
        others = [c for c in CLASSES if c != k]
        wrong = at & (rng.random(shape) > right)
        truth[wrong] = rng.choice(others, size=int(wrong.sum()))
    unmapped = codes == LOW_CONFIDENCE
    truth[unmapped] = rng.choice(CLASSES, size=int(unmapped.sum()), p=[0.4, 0.35, 0.25])
    return codes, truth


def true_values(codes: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    mapped = np.isin(codes, CLASSES)
    values = {"overall_accuracy": float(np.mean(codes[mapped] == truth[mapped]))}
    for k in CLASSES:
        values[f"users_{k}"] = float(np.mean(truth[codes == k] == k))
        values[f"producers_{k}"] = float(np.mean(codes[truth == k] == k))
        values[f"area_{k}"] = float(np.mean(truth == k))
    return values


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, Path]:
    codes, truth = synthetic()
    legend: Legend = legend_of(("one", "two", "three"))
    path = write_codes(tmp_path_factory.mktemp("coverage") / "map.tif", codes, legend, resolution=10.0)
    return codes, truth, path


@pytest.mark.parametrize("strata_kind", ["map values", "last year's map"])
def test_intervals_cover_the_truth(population: tuple[np.ndarray, np.ndarray, Path], strata_kind: str) -> None:
    codes, truth, path = population
    values = read_class_map(path)
    strata_layer = codes
    if strata_kind != "map values":  # last year's map: the same but 15 % of the pixels relabelled at random
        rng = np.random.default_rng(5)
        strata_layer = codes.copy()
        changed = rng.random(codes.shape) < 0.15
        strata_layer[changed] = rng.choice([1, 2, 3, LOW_CONFIDENCE], size=int(changed.sum()))
        strata_path = write_codes(path.with_name("strata.tif"), strata_layer, legend_of(("one", "two", "three")), 10.0)
        values = read_class_map(strata_path)  # the sampler draws on the strata raster
    strata = sorted(values.pixels)
    pixels = np.array([values.pixels[s] for s in strata])
    counts = allocate(400, pixels.tolist(), "proportional", 50)
    truth_flat, codes_flat = truth.ravel(), codes.ravel()
    expected = true_values(codes, truth)
    covered = {name: 0 for name in expected}
    for repetition in range(REPETITIONS):
        drawn = draw_pixels(values, strata, counts, seed=repetition)
        flat = np.concatenate([drawn[s] for s in strata])
        stratum_index = np.concatenate([np.full(len(drawn[s]), i) for i, s in enumerate(strata)])
        sample = StratifiedSample(
            stratum_index, codes_flat[flat], truth_flat[flat], tuple(strata), pixels * 0.01, pixels
        )
        result = estimate(sample, CLASSES, [*CLASSES, LOW_CONFIDENCE])
        found = {"overall_accuracy": result.overall_accuracy}
        for k in CLASSES:
            found[f"users_{k}"] = result.users_accuracy[k]
            found[f"producers_{k}"] = result.producers_accuracy[k]
            found[f"area_{k}"] = result.area_proportion[k]
        for name, e in found.items():
            assert e.ci95 is not None
            covered[name] += e.ci95[0] <= expected[name] <= e.ci95[1]
    coverage = {name: hits / REPETITIONS for name, hits in covered.items()}
    print(strata_kind, {k: round(v, 3) for k, v in coverage.items()})  # the numbers the closing note quotes
    assert all(0.90 <= c <= 0.975 for c in coverage.values()), coverage
    assert 0.935 <= float(np.mean(list(coverage.values()))) <= 0.96, coverage
