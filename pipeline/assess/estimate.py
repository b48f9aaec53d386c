"""Stratified estimators of accuracy and area, and the sample size and allocation of a stratified design.

A map's pixel counts are biased by its errors; a probability sample of reference points gives unbiased estimates
of the map's accuracy and of each class's true area, with their uncertainty. The estimators are those of
Stehman (2014, Int. J. Remote Sens. 35:4923-4939): every quantity is a ratio of two population totals,

    R = Y / X,  Y = sum_h N_h * mean_h(y),  X = sum_h N_h * mean_h(x),
    V(R) = 1/X^2 * sum_h N_h^2 * (1 - f_h) * (s2_yh + R^2 s2_xh - 2 R s_xyh) / n_h,

with y and x indicator variables of each sample point (a proportion of area has x = 1). ``N_h`` is the area of
stratum h, ``n_h`` its sample size, ``f_h = n_h / (pixels of h)`` the finite population correction (off by
default, see :data:`DEFAULT_FPC`). When the strata are the map values these are exactly the estimators of
Olofsson et al. (2013, Remote Sens. Environ. 129:122-131; 2014, Remote Sens. Environ. 148:42-57): the
variance of user's accuracy reduces to U(1 - U)/(n_h - 1), that of a class's area proportion to
sum_h W_h^2 p(1 - p)/(n_h - 1), and the producer's accuracy variance equals their eq. 7 (the tests reproduce
both papers' worked examples). When the strata are something else (last year's map, regions, an older model's
map), the same formulas hold with y and x read from each point's map value and reference label (Stehman 2014).

Quantities (map value m, reference label r of a point; "mapped" = m is a legend class, not a reason code):

- overall accuracy of the mapped area: y = [m = r], x = [mapped] (the usual overall accuracy when every pixel is
  mapped; with reason strata, the accuracy of what the map does say, which is what its certificate promises);
- share of the area correctly mapped: y = [m = r], x = 1; share mapped: y = [mapped], x = 1;
- user's accuracy of class k: y = [m = k and r = k], x = [m = k]; producer's: the same y, x = [r = k] (so a class
  pixel left unmapped, with a reason code, is an omission);
- area proportion of class k: y = [r = k], x = 1; an error-matrix cell (i, j): y = [m = i and r = j], x = 1.

Intervals are Wald intervals, estimate +- 1.96 SE, as in the papers; bounds are clipped to what the quantity can
take ([0, 1] for proportions, [0, total area] for areas), which leaves their coverage unchanged.

Sample size (Olofsson et al. 2014, eq. 13, after Cochran 1977): for a target standard error S(O) of overall
accuracy, ``n = (sum_h W_h S_h)^2 / (S(O)^2 + sum_h W_h S_h^2 / N)``, with ``S_h = sqrt(U_h (1 - U_h))`` from
anticipated user's accuracies U_h. Allocation: proportional (n_h ~ W_h), equal, or optimal (Neyman,
n_h ~ W_h S_h), then at least ``min_per_stratum`` points per stratum (never more than its pixels), the rest
shared out again, rounded by largest remainder so the total is kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

#: The two-sided 95 % normal quantile as the papers (and most published assessments) round it: 1.96, not
#: 1.95996, so intervals match theirs to the last printed digit (16,282 ha, not 16,281, in Olofsson et al. 2014).
Z95 = 1.96
#: Olofsson et al. (2013, 2014) leave out the finite population correction: with pixel populations it is
#: negligible, and leaving it out errs on the side of wider intervals. ``fpc=True`` applies Stehman's (1 - n_h/N_h).
DEFAULT_FPC = False
#: Anticipated user's accuracy of a reason stratum (low confidence, outside the training data, too few
#: observations) for the sample size: its composition is unknown, and 0.5 is the largest variance a proportion has.
UNKNOWN_STRATUM_ACCURACY = 0.5

Allocation = Literal["proportional", "equal", "optimal"]
ALLOCATIONS: tuple[str, ...] = ("proportional", "equal", "optimal")


@dataclass(frozen=True)
class Estimate:
    """A point estimate, its standard error and 95 % confidence interval (None where it is not defined)."""

    estimate: float | None
    se: float | None
    ci95: tuple[float, float] | None

    @classmethod
    def of(cls, value: float, se: float, low: float = 0.0, high: float = 1.0, scale: float = 1.0) -> Estimate:
        """``value`` and ``se`` times ``scale``, the interval clipped to [low, high] * scale; NaN -> undefined."""
        if not math.isfinite(value):
            return cls(None, None, None)
        value, se = value * scale, se * scale
        bounds = (max(low * scale, value - Z95 * se), min(high * scale, value + Z95 * se))
        return cls(value, se, bounds)

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "se": self.se, "ci95": None if self.ci95 is None else list(self.ci95)}


def ratio_estimates(
    strata: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    sizes: np.ndarray,
    pixels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ratio estimates R = Y/X of every column of ``y`` over the same column of ``x``, and their SEs.

    ``strata`` (n,) holds each point's stratum index 0..H-1; ``y``, ``x`` are (n, q) values per point; ``sizes``
    (H,) the strata's areas (any unit: only their ratios matter); ``pixels`` (H,) their pixel counts, for the
    finite population correction (None: no correction). A column whose X estimate is 0 gives NaN. Every
    stratum with area needs at least 2 points (the variance of a stratum of 1 is undefined).
    """
    strata = np.asarray(strata, dtype=np.intp)
    y = np.asarray(y, dtype=np.float64).reshape(len(strata), -1)
    x = np.asarray(x, dtype=np.float64).reshape(len(strata), -1)
    sizes = np.asarray(sizes, dtype=np.float64)
    count = np.bincount(strata, minlength=len(sizes)).astype(np.float64)
    short = np.flatnonzero((sizes > 0) & (count < 2))
    if short.size:
        raise ValueError(f"strata {short.tolist()} have fewer than 2 points; the variance needs at least 2")
    one_hot = np.zeros((len(sizes), len(strata)))
    one_hot[strata, np.arange(len(strata))] = 1.0
    n_h = np.maximum(count, 1.0)[:, None]
    y_mean, x_mean = one_hot @ y / n_h, one_hot @ x / n_h
    dy, dx = y - y_mean[strata], x - x_mean[strata]
    dof = np.maximum(count - 1.0, 1.0)[:, None]
    s_yy, s_xx, s_xy = one_hot @ (dy * dy) / dof, one_hot @ (dx * dx) / dof, one_hot @ (dy * dx) / dof
    y_total, x_total = sizes @ y_mean, sizes @ x_mean
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(x_total > 0, y_total / x_total, np.nan)
        keep = np.ones(len(sizes)) if pixels is None else 1.0 - count / np.asarray(pixels, dtype=np.float64)
        r = np.nan_to_num(ratio)
        per_stratum = (sizes**2 * keep)[:, None] * (s_yy + r**2 * s_xx - 2.0 * r * s_xy) / n_h
        variance = np.where(x_total > 0, per_stratum.sum(axis=0) / x_total**2, np.nan)
    return ratio, np.sqrt(np.maximum(variance, 0.0))


@dataclass(frozen=True)
class StratifiedSample:
    """The labelled points of a stratified sample, as the estimators need them.

    ``strata`` are indices into ``stratum_codes``; ``map_values`` and ``reference`` are codes (map values may be
    reason codes; reference values are legend classes). ``stratum_areas`` are in hectares, ``stratum_pixels``
    the pixels of each stratum (for the finite population correction).
    """

    strata: np.ndarray
    map_values: np.ndarray
    reference: np.ndarray
    stratum_codes: tuple[int, ...]
    stratum_areas: np.ndarray
    stratum_pixels: np.ndarray


@dataclass(frozen=True)
class Estimates:
    """Every estimate of one assessment: overall figures, per class, and the error matrix."""

    overall_accuracy: Estimate
    mapped_share: Estimate
    correct_share: Estimate
    users_accuracy: dict[int, Estimate]
    producers_accuracy: dict[int, Estimate]
    area_proportion: dict[int, Estimate]
    area_ha: dict[int, Estimate]
    matrix_rows: tuple[int, ...]
    matrix_columns: tuple[int, ...]
    matrix: np.ndarray  # (rows, columns) estimated proportion of the total area
    matrix_se: np.ndarray
    counts: np.ndarray  # (rows, columns) sample points
    total_area_ha: float


def estimate(
    sample: StratifiedSample,
    classes: Sequence[int],
    map_rows: Sequence[int],
    fpc: bool = DEFAULT_FPC,
) -> Estimates:
    """All estimates from ``sample``: ``classes`` are the legend's class codes (the reference labels and the
    mapped values that count as a class), ``map_rows`` the map values of the error matrix's rows (classes first,
    then reason codes); points whose map value is not in ``classes`` are unmapped."""
    m, r = np.asarray(sample.map_values), np.asarray(sample.reference)
    class_list = [int(c) for c in classes]
    rows = [int(c) for c in map_rows]
    mapped = np.isin(m, class_list)
    correct = (m == r) & mapped
    ones = np.ones(len(m))
    columns_y: list[np.ndarray] = [correct, correct, mapped]
    columns_x: list[np.ndarray] = [mapped, ones, ones]
    for k in class_list:
        hit = (m == k) & (r == k)
        columns_y += [hit, hit, r == k]
        columns_x += [m == k, r == k, ones]
    for i in rows:
        for j in class_list:
            columns_y.append((m == i) & (r == j))
            columns_x.append(ones)
    ratio, se = ratio_estimates(
        sample.strata,
        np.stack(columns_y, axis=1),
        np.stack(columns_x, axis=1),
        sample.stratum_areas,
        sample.stratum_pixels if fpc else None,
    )
    total = float(np.sum(sample.stratum_areas))
    users, producers, proportions, areas = {}, {}, {}, {}
    for index, k in enumerate(class_list):
        at = 3 + 3 * index
        users[k] = Estimate.of(float(ratio[at]), float(se[at]))
        producers[k] = Estimate.of(float(ratio[at + 1]), float(se[at + 1]))
        proportions[k] = Estimate.of(float(ratio[at + 2]), float(se[at + 2]))
        areas[k] = Estimate.of(float(ratio[at + 2]), float(se[at + 2]), scale=total)
    start = 3 + 3 * len(class_list)
    shape = (len(rows), len(class_list))
    counts = np.zeros(shape, dtype=np.int64)
    row_of = {code: i for i, code in enumerate(rows)}
    col_of = {code: j for j, code in enumerate(class_list)}
    for value, label in zip(m.tolist(), r.tolist(), strict=True):
        if value in row_of and label in col_of:
            counts[row_of[value], col_of[label]] += 1
    return Estimates(
        overall_accuracy=Estimate.of(float(ratio[0]), float(se[0])),
        correct_share=Estimate.of(float(ratio[1]), float(se[1])),
        mapped_share=Estimate.of(float(ratio[2]), float(se[2])),
        users_accuracy=users,
        producers_accuracy=producers,
        area_proportion=proportions,
        area_ha=areas,
        matrix_rows=tuple(rows),
        matrix_columns=tuple(class_list),
        matrix=ratio[start:].reshape(shape),
        matrix_se=se[start:].reshape(shape),
        counts=counts,
        total_area_ha=total,
    )


# design ---------------------------------------------------------------------------------------------------------


def sample_size(
    weights: Sequence[float], expected_accuracy: Sequence[float], target_se: float, population: float = math.inf
) -> int:
    """Points needed for standard error ``target_se`` of overall accuracy (Olofsson et al. 2014, eq. 13).

    ``weights`` are the strata's area shares, ``expected_accuracy`` their anticipated user's accuracies, and
    ``population`` the number of pixels (its term is negligible for any real map)."""
    if not 0 < target_se < 1:
        raise ValueError(f"the target standard error must lie between 0 and 1, got {target_se}")
    w = np.asarray(weights, dtype=np.float64)
    u = np.asarray(expected_accuracy, dtype=np.float64)
    if np.any((u < 0) | (u > 1)):
        raise ValueError("anticipated accuracies must lie in 0..1")
    s = np.sqrt(u * (1.0 - u))
    n = float(np.sum(w * s)) ** 2 / (target_se**2 + float(np.sum(w * s**2)) / population)
    return max(1, math.ceil(n - 1e-9))


def allocate(
    n: int,
    pixels: Sequence[int],
    allocation: Allocation = "proportional",
    min_per_stratum: int = 0,
    expected_accuracy: Sequence[float] | None = None,
) -> np.ndarray:
    """Points per stratum: ``n`` in all (raised to ``min_per_stratum`` times the strata, lowered to the pixels
    available), shared by ``allocation``, at least ``min_per_stratum`` per stratum and never more than its pixels.

    "optimal" is Neyman allocation for overall accuracy (n_h ~ N_h S_h, S_h from ``expected_accuracy``)."""
    size = np.asarray(pixels, dtype=np.int64)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    share: np.ndarray
    if allocation == "proportional":
        share = size.astype(np.float64)
    elif allocation == "equal":
        share = (size > 0).astype(np.float64)
    else:
        if expected_accuracy is None:
            raise ValueError("optimal allocation needs the anticipated accuracy of each stratum")
        u = np.asarray(expected_accuracy, dtype=np.float64)
        share = size.astype(np.float64) * np.sqrt(u * (1.0 - u))
        if not np.any(share > 0):  # every stratum anticipated perfect: nothing to optimise, share by area
            share = size.astype(np.float64)
    floor = np.minimum(size, min_per_stratum)
    total = int(min(max(n, int(floor.sum())), int(size.sum())))
    counts = floor.copy()
    # water-filling: strata whose share falls below their floor or above their pixels are fixed there, the rest
    # share what is left in proportion, until nothing moves
    free = np.ones(len(size), dtype=bool)
    while True:
        left = total - int(np.sum(counts[~free]))
        weight = np.where(free, share, 0.0)
        ideal = np.zeros(len(size)) if weight.sum() <= 0 or left <= 0 else left * weight / weight.sum()
        low = free & (ideal < floor)
        high = free & (ideal > size)
        if not low.any() and not high.any():
            break
        counts[low], counts[high] = floor[low], size[high]
        free &= ~(low | high)
    base = np.floor(ideal).astype(np.int64)
    counts[free] = base[free]
    remainder = total - int(counts.sum())
    order = np.argsort(-(ideal - base), kind="stable")
    for index in order:
        if remainder <= 0:
            break
        if free[index] and counts[index] < size[index]:
            counts[index] += 1
            remainder -= 1
    result: np.ndarray = counts
    return result


def expected_accuracies(
    codes: Sequence[int], classes: Sequence[int], given: Mapping[int, float] | float | None, default: float
) -> list[float]:
    """The anticipated user's accuracy of each stratum: ``given`` (one value for every class, or per code), else
    ``default`` for a class and :data:`UNKNOWN_STRATUM_ACCURACY` for a reason stratum."""
    out = []
    for code in codes:
        if isinstance(given, Mapping) and code in given:
            out.append(float(given[code]))
        elif isinstance(given, (int, float)) and code in classes:
            out.append(float(given))
        else:
            out.append(default if code in classes else UNKNOWN_STRATUM_ACCURACY)
    return out
