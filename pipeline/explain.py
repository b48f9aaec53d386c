"""Attributions of a land-cover model's class logits to Presto's input tokens (``suelo explain``, issue 22).

What is explained: the raw logit of a class (the head's output, before calibration: the calibrated posterior is a
monotone per-class rescaling of it, and the logit is the quantity that attributions add up to). The attributed
inputs are the encoder's own (``x (N, T, 17)`` normalized channels and ``latlons (N, 2)`` degrees); the mask, the
Dynamic World classes (always missing in this project) and the start month are held fixed, so a token that is
masked in a sample stays out of the model along the whole path and gets exactly zero attribution.

Method: integrated gradients (Sundararajan et al. 2017) by captum (``IntegratedGradients``, Gauss-Legendre
quadrature). It satisfies completeness: the attributions of one logit sum to ``logit(x) - logit(baseline)`` up to
the quadrature error, which is measured and reported on every run. benchmarks/EXPLAIN.md compares it with SHAP's
gradient explainer (expected gradients: completeness only in expectation over its random path points and
background samples) and SHAP's deep explainer, and gives the numbers behind the step count.

Baseline (:data:`DEFAULT_BASELINE`): the mean of the explained set per (month, channel) over the values that are
present, lat/lon at the set's centroid on the sphere. An attribution then answers "what in this sample's series
moves the class logit away from the average sample's", which is what a map user asks (which month makes a field a
field), and the baseline lies inside the data the model saw. The alternative, zeros in Presto's normalized space
(black reflectance in every band and month, at 0 N 0 E), is far outside the data: its logit is extreme and every
month of every band differs from it, so the mass spreads over all months even when the model reads one
(benchmarks/EXPLAIN.md measures both). The price of the mean baseline is that attributions are relative to the
explained set: the same pixel explained within another region gets other numbers; the JSON records the baseline.

Tokens: per sample a (months x band groups) array, each cell the sum of the attributions of the group's channels
at that month, for the eight per-month groups of Presto (:data:`GROUPS`: S1 ... S2_SWIR, ERA5, NDVI); plus the
static terrain token (SRTM elevation and slope, read from month 0 only: the SRTM channels of later months are no
input of the model, and their attribution is exactly zero, which :func:`token_attributions` checks) and the lat/lon
token. NDVI is a channel of its own to the encoder, so it moves along the path like any other (it is not recomputed
from B4 and B8): its attribution is the NDVI token's. The tokens' sum is the sum of all channel attributions, so
completeness carries over to the tokens exactly.

Outputs (:func:`write_explanation`): ``attribution.json`` (the numbers: :func:`summary` layout), one heatmap PNG per
class (``heatmap_<class>.png``), all classes in ``heatmaps.png`` and ``heatmaps.svg``; for a cube also
``most_influential_month.tif`` (uint8 COG, 1..T = the month of the series with the largest absolute attribution of
the pixel's predicted class logit, 0 = no data) with its ``.tif.aux.xml`` (month names) and ``.qml`` (paletted, each
value named by its month, YYYY-MM). :func:`heatmap_svg` and :func:`heatmaps_svg` give the heatmaps as SVG text for
the model card and the run report to embed.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from suelo.errors import ConfigError, InputError
from suelo.models.presto import BAND_GROUPS, CHANNELS, PrestoConfig

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

    from suelo.grid import Grid
    from suelo.legend import Legend
    from suelo.models.artifact import ModelArtifact
    from suelo.models.heads import MLPHead
    from suelo.models.presto import Encoder
    from suelo.samples import Samples

#: captum's quadrature; benchmarks/EXPLAIN.md: at 32 steps its completeness error is orders of magnitude below
#: Riemann's at the same cost.
INTEGRATION = "gausslegendre"
#: Path steps (forward + backward passes per explained logit); benchmarks/EXPLAIN.md gives the error per count.
DEFAULT_STEPS = 32
BASELINES = ("mean", "zeros")
DEFAULT_BASELINE = "mean"
#: Samples per captum call (each becomes ``steps`` rows of the path; internal batches bound the memory).
DEFAULT_BATCH = 64
#: Path rows per forward/backward pass, by device type. On a CPU small passes are faster: at 256 rows (about 120 MB
#: of activations for 12 months) the whole demo cube took 7 min 09 s and 1.4 GB, at 2048 rows (~1 GB) 12 min 05 s
#: and 3.3 GB, 40 % of it in the kernel paging fresh allocations in and out (2 cores; 64-128 rows were as fast as
#: 256 on a 256-pixel sample). On a GPU larger passes fill the device; 4096 is a guess, not measured (no GPU here).
PATH_ROWS = {"cpu": 256, "cuda": 4096}
#: The completeness check: |sum of attributions - (logit - baseline logit)| <= ATOL + RTOL * |logit - baseline
#: logit|, in logits (float32 model; benchmarks/EXPLAIN.md measured the errors this bounds with a wide margin).
COMPLETENESS_ATOL = 1e-3
COMPLETENESS_RTOL = 1e-2
#: Relative errors are reported only where the explained gap is at least this (logit): below it the ratio says
#: nothing, and the absolute error (reported for every logit) is what matters.
RELATIVE_FLOOR = 1e-2
SPLITS = ("stored", "all")
UNITS = "logit"
JSON_NAME = "attribution.json"
MONTH_RASTER = "most_influential_month.tif"
MONTH_NODATA = 0
CUBE_SEED = 0

_CONFIG = PrestoConfig()
STATIC_GROUP = _CONFIG.static_group
#: The per-month band groups of the heatmaps, in Presto's order (the static SRTM group is the terrain token).
GROUPS: tuple[str, ...] = tuple(name for name, _bands in BAND_GROUPS if name != STATIC_GROUP)
_GROUP_CHANNELS = {name: [CHANNELS.index(b) for b in bands] for name, bands in BAND_GROUPS}
STATIC_CHANNELS: tuple[int, ...] = tuple(_GROUP_CHANNELS[STATIC_GROUP])
_MEMBERSHIP = np.zeros((len(CHANNELS), len(GROUPS)), dtype=np.float64)
for _g, _name in enumerate(GROUPS):
    _MEMBERSHIP[_GROUP_CHANNELS[_name], _g] = 1.0
_CALENDAR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class LogitsOfInputs(nn.Module):
    """``forward(x, latlons, mask, dynamic_world, month) -> logits (B, classes)``: the encoder and the head as one
    function of the two attributed inputs first (captum attributes the leading arguments and passes the rest as
    ``additional_forward_args``, repeated along the path, so the mask stays each sample's own)."""

    def __init__(self, encoder: Encoder, head: MLPHead) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        self.head = head.eval()

    def forward(
        self,
        x: torch.Tensor,
        latlons: torch.Tensor,
        mask: torch.Tensor,
        dynamic_world: torch.Tensor,
        month: torch.Tensor,
    ) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.encoder(x, mask, dynamic_world, latlons, month))
        return logits


def model_of(artifact: ModelArtifact, device: str = "cpu") -> LogitsOfInputs:
    """The artifact's encoder (fine-tuned or the pretrained Presto it was trained on) and head as one module."""
    return LogitsOfInputs(artifact.build_encoder(), artifact.build_head()).to(device).eval()


# baselines ----------------------------------------------------------------------------------------------------


def clean_inputs(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` float32 with NaN set to 0 and masked, as the encoder does inside: done before attributing, so the path
    never carries a NaN and such a value is masked (zero attribution) like any other missing one."""
    x = np.asarray(x, dtype=np.float32)
    nan = np.isnan(x)
    return np.where(nan, np.float32(0), x), np.asarray(mask, dtype=bool) | nan


@dataclass
class BaselineStats:
    """Running sums for the mean baseline: per (month, channel) the sum and count of present values, and the sum of
    the lat/lon unit vectors (their mean direction is the centroid on the sphere: longitude wraps)."""

    n_months: int
    total: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)
    sphere: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.total = np.zeros((self.n_months, len(CHANNELS)), dtype=np.float64)
        self.count = np.zeros((self.n_months, len(CHANNELS)), dtype=np.int64)
        self.sphere = np.zeros(3, dtype=np.float64)

    def add(self, x: np.ndarray, mask: np.ndarray, latlons: np.ndarray) -> None:
        x, mask = clean_inputs(x, mask)
        present = ~mask
        self.total += np.where(present, x, 0).sum(axis=0, dtype=np.float64)
        self.count += present.sum(axis=0)
        lat, lon = np.deg2rad(np.asarray(latlons, dtype=np.float64)).T
        self.sphere += np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1).sum(0)

    def mean(self) -> tuple[np.ndarray, np.ndarray]:
        """``(T, 17)`` mean of the present values (0 where a channel is never present) and the centroid (lat, lon)."""
        values = np.where(self.count > 0, self.total / np.maximum(self.count, 1), 0.0).astype(np.float32)
        x, y, z = self.sphere
        norm = float(np.sqrt(x * x + y * y + z * z))
        if norm < 1e-12:  # points spread evenly over the sphere: no centroid; the equator at 0 E is as good as any
            return values, np.zeros(2, dtype=np.float32)
        latlon = np.array([np.degrees(np.arcsin(z / norm)), np.degrees(np.arctan2(y, x))], dtype=np.float32)
        return values, latlon


def baseline_values(
    x: np.ndarray, mask: np.ndarray, latlons: np.ndarray, kind: str = DEFAULT_BASELINE
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline point of a set, before each sample's mask is applied: ``(T, 17)`` channels and ``(2,)`` lat/lon.
    ``mean``: the set's mean per (month, channel) over present values and its centroid; ``zeros``: Presto's zero."""
    if kind == "zeros":
        return np.zeros((x.shape[1], len(CHANNELS)), dtype=np.float32), np.zeros(2, dtype=np.float32)
    if kind != "mean":
        raise ConfigError(f"baseline must be one of {list(BASELINES)}, got {kind!r}")
    stats = BaselineStats(x.shape[1])
    stats.add(x, mask, latlons)
    return stats.mean()


def baseline_description(kind: str, values: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """What the JSON records of a baseline: its kind, the words for it and the point itself (lat/lon, channels)."""
    words = {
        "mean": "mean of the explained set per (month, channel) over present values; lat/lon at its centroid on the "
        "sphere; a sample's masked values are its own (zero attribution)",
        "zeros": "zeros in Presto's normalized space (reflectance 0 in every band and month) at 0 N 0 E",
        "given": "a baseline point given by the caller",
    }
    channels, latlon = values
    return {
        "kind": kind,
        "description": words.get(kind, words["given"]),
        "latlon": [round(float(v), 5) for v in latlon],
        "channels": list(CHANNELS),
        "values": np.round(channels.astype(np.float64), 6).tolist(),
    }


# attribution ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    """Integrated-gradient attributions of ``K`` logits per sample.

    ``channels (N, K, T, 17)`` and ``latlon_channels (N, K, 2)``: per input value (logit units); ``classes (N, K)``:
    the class index (in the model's legend) whose logit each row explains; ``logits`` / ``baseline_logits (N, C)``:
    every raw logit at the sample and at its baseline; ``convergence_delta (N, K)``: captum's own completeness
    residual (its forward passes), next to :attr:`error` (this module's, from the tokens).
    """

    channels: np.ndarray
    latlon_channels: np.ndarray
    classes: np.ndarray
    logits: np.ndarray
    baseline_logits: np.ndarray
    convergence_delta: np.ndarray
    steps: int
    integration: str
    baseline: dict[str, Any]
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return int(self.channels.shape[0])

    def tokens(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(N, K, T, groups)`` month x band-group tokens, ``(N, K)`` terrain and ``(N, K)`` lat/lon tokens."""
        return token_attributions(self.channels, self.latlon_channels)

    def total(self) -> np.ndarray:
        """``(N, K)`` sum of every attribution (float64)."""
        total: np.ndarray = self.channels.sum(axis=(2, 3), dtype=np.float64) + self.latlon_channels.sum(
            axis=2, dtype=np.float64
        )
        return total

    def gap(self) -> np.ndarray:
        """``(N, K)`` ``logit(x) - logit(baseline)`` of each explained logit: what completeness says the sum is."""
        rows = np.arange(self.n)[:, None]
        gap: np.ndarray = self.logits[rows, self.classes].astype(np.float64) - self.baseline_logits[rows, self.classes]
        return gap

    def error(self) -> np.ndarray:
        """``(N, K)`` completeness residual: sum of the token attributions minus the gap."""
        tokens, terrain, latlon = self.tokens()
        residual: np.ndarray = tokens.sum(axis=(2, 3)) + terrain + latlon - self.gap()
        return residual

    def completeness(self) -> dict[str, Any]:
        """The completeness error statistics every output reports."""
        return completeness_stats(self.error(), self.gap(), self.convergence_delta)

    def of_class(self, index: np.ndarray) -> Attribution:
        """The rows explaining class ``index[i]`` for sample ``i`` (``K`` becomes 1); each sample must have one."""
        index = np.asarray(index, dtype=np.int64).reshape(-1, 1)
        hit = self.classes == index
        if not hit.any(axis=1).all():
            raise ValueError("some samples have no attribution of the asked class's logit")
        k = hit.argmax(axis=1)[:, None]
        rows = np.arange(self.n)[:, None]
        return replace(
            self,
            channels=self.channels[rows, k],
            latlon_channels=self.latlon_channels[rows, k],
            classes=self.classes[rows, k],
            convergence_delta=self.convergence_delta[rows, k],
        )


def completeness_stats(error: np.ndarray, gap: np.ndarray, captum_delta: np.ndarray | None = None) -> dict[str, Any]:
    """Max and mean absolute error, max relative error (over gaps of at least :data:`RELATIVE_FLOOR`), the share
    within the stated tolerance and the tolerance itself."""
    err = np.abs(np.asarray(error, dtype=np.float64)).ravel()
    gap = np.abs(np.asarray(gap, dtype=np.float64)).ravel()
    big = gap >= RELATIVE_FLOOR
    within = err <= COMPLETENESS_ATOL + COMPLETENESS_RTOL * gap
    out: dict[str, Any] = {
        "n_logits": int(err.size),
        "max_abs_error": float(err.max()) if err.size else 0.0,
        "mean_abs_error": float(err.mean()) if err.size else 0.0,
        "max_relative_error": float((err[big] / gap[big]).max()) if big.any() else 0.0,
        "mean_abs_gap": float(gap.mean()) if gap.size else 0.0,
        "within_tolerance": float(within.mean()) if err.size else 1.0,
        "tolerance": f"|sum - (logit - baseline logit)| <= {COMPLETENESS_ATOL:g} + {COMPLETENESS_RTOL:g} x |logit - "
        f"baseline logit| (relative errors over gaps >= {RELATIVE_FLOOR:g} logit)",
        "units": UNITS,
    }
    if captum_delta is not None:
        delta = np.abs(np.asarray(captum_delta, dtype=np.float64)).ravel()
        out["captum_max_abs_delta"] = float(delta.max()) if delta.size else 0.0
    return out


def token_attributions(channels: np.ndarray, latlon_channels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel attributions ``(..., T, 17)`` and ``(..., 2)`` -> month x group tokens ``(..., T, groups)``, the
    terrain token ``(...)`` (SRTM channels at month 0) and the lat/lon token ``(...)``, float64.

    The SRTM channels of months after the first are no input of the encoder (its static token reads month 0), so
    their gradient, hence attribution, is exactly zero; a nonzero one means the encoder no longer works as this
    module assumes, and is an error rather than a number silently left out of the tokens.
    """
    channels = np.asarray(channels, dtype=np.float64)
    later = channels[..., 1:, list(STATIC_CHANNELS)]
    if later.size and np.any(later != 0):
        raise RuntimeError("SRTM channels after month 0 got attribution: the encoder's static token changed")
    tokens = channels @ _MEMBERSHIP
    terrain = channels[..., 0, list(STATIC_CHANNELS)].sum(axis=-1)
    latlon = np.asarray(latlon_channels, dtype=np.float64).sum(axis=-1)
    return tokens, terrain, latlon


def attribute(
    artifact: ModelArtifact | LogitsOfInputs,
    x: np.ndarray,
    mask: np.ndarray,
    dw: np.ndarray,
    latlons: np.ndarray,
    month: np.ndarray | int,
    target: np.ndarray | None = None,
    baseline: str | tuple[np.ndarray, np.ndarray] = DEFAULT_BASELINE,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    device: str = "cpu",
    integration: str = INTEGRATION,
) -> Attribution:
    """Integrated gradients (captum) of the raw class logits w.r.t. ``x (N, T, 17)`` and ``latlons (N, 2)``.

    ``target``: ``(N,)`` class indices, one logit per sample (K = 1); None: every class's logit (K = classes).
    ``baseline``: ``"mean"`` / ``"zeros"`` of this set (:func:`baseline_values`) or a ``((T, 17), (2,))`` point (a
    cube's, computed over all its pixels). Each sample's masked values are its own in its baseline and the mask is
    held fixed along the path, so masked inputs get exactly zero attribution. ``integration``: captum's method
    (``gausslegendre``; ``riemann_trapezoid`` etc. for the comparison in benchmarks/EXPLAIN.md).
    """
    # by name: captum ships no type information, and the class is only ever called here (its result is typed Any)
    integrated_gradients = importlib.import_module("captum.attr").IntegratedGradients

    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    model = artifact if isinstance(artifact, LogitsOfInputs) else model_of(artifact, device)
    model = model.to(device).eval()
    x, mask = clean_inputs(x, mask)
    n, t, _c = x.shape
    latlons = np.asarray(latlons, dtype=np.float32).reshape(n, 2)
    months = np.broadcast_to(np.asarray(month, dtype=np.int64), (n,)).copy()
    dw = np.asarray(dw, dtype=np.int64)
    if isinstance(baseline, str):
        kind = baseline
        point = baseline_values(x, mask, latlons, baseline)
    else:
        kind, point = "given", (np.asarray(baseline[0], np.float32), np.asarray(baseline[1], np.float32))
    if point[0].shape != (t, len(CHANNELS)) or point[1].shape != (2,):
        raise ValueError(f"baseline must be ((T, 17), (2,)) = (({t}, {len(CHANNELS)}), (2,))")
    base_x = np.where(mask, x, point[0][None]).astype(np.float32)  # a masked value is its own baseline
    base_latlon = np.broadcast_to(point[1], (n, 2)).astype(np.float32)
    n_classes = int(model.head.config.n_classes)
    classes = (
        np.broadcast_to(np.arange(n_classes), (n, n_classes)).copy()
        if target is None
        else np.asarray(target, dtype=np.int64).reshape(n, 1)
    )
    k = classes.shape[1]
    ig = integrated_gradients(model)
    channels = np.zeros((n, k, t, len(CHANNELS)), dtype=np.float32)
    latlon_channels = np.zeros((n, k, 2), dtype=np.float32)
    delta = np.zeros((n, k), dtype=np.float32)
    logits = np.zeros((n, n_classes), dtype=np.float32)
    base_logits = np.zeros((n, n_classes), dtype=np.float32)
    started = time.perf_counter()

    def tensor(values: np.ndarray, rows: slice, repeat: int = 1) -> torch.Tensor:
        part = torch.from_numpy(np.ascontiguousarray(values[rows])).to(device)
        return part.repeat_interleave(repeat, dim=0) if repeat > 1 else part

    path_rows = PATH_ROWS.get(torch.device(device).type, PATH_ROWS["cpu"])
    for start in range(0, n, max(1, batch_size)):
        rows = slice(start, min(start + max(1, batch_size), n))
        m = rows.stop - rows.start
        extra = (tensor(mask, rows), tensor(dw, rows), tensor(months, rows))
        with torch.no_grad():
            logits[rows] = model(tensor(x, rows), tensor(latlons, rows), *extra).float().cpu().numpy()
            base_logits[rows] = model(tensor(base_x, rows), tensor(base_latlon, rows), *extra).float().cpu().numpy()
        # every explained logit of the batch in one captum call: each sample repeated once per logit
        extra_k = (tensor(mask, rows, k), tensor(dw, rows, k), tensor(months, rows, k))
        inputs = (tensor(x, rows, k), tensor(latlons, rows, k))
        bases = (tensor(base_x, rows, k), tensor(base_latlon, rows, k))
        internal = max(m * k, (path_rows // (m * k)) * m * k)
        attributions, conv = ig.attribute(
            inputs, baselines=bases, target=torch.from_numpy(classes[rows].reshape(-1)).to(device),
            additional_forward_args=extra_k, n_steps=steps, method=integration, internal_batch_size=internal,
            return_convergence_delta=True,
        )  # fmt: skip
        channels[rows] = attributions[0].detach().float().cpu().numpy().reshape(m, k, t, len(CHANNELS))
        latlon_channels[rows] = attributions[1].detach().float().cpu().numpy().reshape(m, k, 2)
        delta[rows] = conv.detach().float().cpu().numpy().reshape(m, k)
    return Attribution(
        channels, latlon_channels, classes, logits, base_logits, delta, steps, integration,
        baseline_description(kind, point), time.perf_counter() - started,
    )  # fmt: skip


# summaries ------------------------------------------------------------------------------------------------------


class ClassSummaries:
    """Per-class sums of token attributions, streamed block by block (a cube's pixels need not all be in memory).

    Per class (the reference label of a sample, the predicted class of a pixel), over its samples, of that class's
    own logit: the signed mean per token, the mean share of absolute attribution per token (each sample's shares sum
    to 100 % over all its tokens, terrain and lat/lon included), and how often each month is the most influential
    (largest sum of absolute attribution over the month's groups; terrain and lat/lon are no month).
    """

    def __init__(self, n_classes: int, n_months: int) -> None:
        c, t, g = n_classes, n_months, len(GROUPS)
        self.n = np.zeros(c, dtype=np.int64)
        self.n_shared = np.zeros(c, dtype=np.int64)  # samples with any attribution (the shares' denominator)
        self.signed = np.zeros((c, t, g))
        self.signed_terrain = np.zeros(c)
        self.signed_latlon = np.zeros(c)
        self.share = np.zeros((c, t, g))
        self.share_terrain = np.zeros(c)
        self.share_latlon = np.zeros(c)
        self.top_month = np.zeros((c, t), dtype=np.int64)
        self.logit = np.zeros(c)
        self.baseline_logit = np.zeros(c)
        self.present = np.zeros(g, dtype=bool)  # groups that carry attribution anywhere
        self.terrain_present = False  # the terrain token exists (a model with the terrain input) somewhere

    def add(self, tokens: np.ndarray, terrain: np.ndarray, latlon: np.ndarray, logit: np.ndarray,
            baseline_logit: np.ndarray, class_index: np.ndarray) -> None:  # fmt: skip
        """One block: ``tokens (N, T, groups)``, ``terrain`` / ``latlon`` / ``logit`` / ``baseline_logit`` /
        ``class_index`` ``(N,)`` (the explained logit is the class's own)."""
        tokens = np.asarray(tokens, dtype=np.float64)
        absolute = np.abs(tokens)
        mass = absolute.sum(axis=(1, 2)) + np.abs(terrain) + np.abs(latlon)
        has = mass > 0
        safe = np.where(has, mass, 1.0)
        self.present |= (absolute > 0).any(axis=(0, 1))
        self.terrain_present |= bool(np.any(terrain != 0))
        best = monthly_mass(tokens).argmax(axis=1)
        for c in np.unique(class_index):
            rows = class_index == c
            shared = rows & has
            self.n[c] += int(rows.sum())
            self.n_shared[c] += int(shared.sum())
            self.signed[c] += tokens[rows].sum(axis=0)
            self.signed_terrain[c] += float(terrain[rows].sum())
            self.signed_latlon[c] += float(latlon[rows].sum())
            self.share[c] += (absolute[shared] / safe[shared, None, None]).sum(axis=0)
            self.share_terrain[c] += float((np.abs(terrain[shared]) / safe[shared]).sum())
            self.share_latlon[c] += float((np.abs(latlon[shared]) / safe[shared]).sum())
            self.top_month[c] += np.bincount(best[shared], minlength=tokens.shape[1])
            self.logit[c] += float(logit[rows].sum())
            self.baseline_logit[c] += float(baseline_logit[rows].sum())

    def classes(self, legend: Legend) -> list[dict[str, Any]]:
        """One JSON entry per legend class (a class without samples has ``n`` 0 and null numbers)."""
        out = []
        for c, cls in enumerate(legend):
            n, shared = int(self.n[c]), int(self.n_shared[c])
            entry: dict[str, Any] = {"code": cls.code, "name": cls.name, "color": cls.color, "n": n}
            if n == 0:
                entry |= {key: None for key in ("mean_attribution", "mean_terrain", "mean_latlon", "abs_share_percent",
                          "terrain_share_percent", "latlon_share_percent", "month_share_percent",
                          "most_influential_month", "mean_logit", "mean_baseline_logit")}  # fmt: skip
                out.append(entry)
                continue
            share = 100 * self.share[c] / max(shared, 1)
            entry |= {
                "mean_attribution": _rounded(self.signed[c] / n),
                "mean_terrain": _round(self.signed_terrain[c] / n),
                "mean_latlon": _round(self.signed_latlon[c] / n),
                "abs_share_percent": _rounded(share, 3),
                "terrain_share_percent": _round(100 * self.share_terrain[c] / max(shared, 1), 3),
                "latlon_share_percent": _round(100 * self.share_latlon[c] / max(shared, 1), 3),
                "month_share_percent": _rounded(share.sum(axis=1), 3),
                "most_influential_month": [int(v) for v in self.top_month[c]],
                "mean_logit": _round(self.logit[c] / n),
                "mean_baseline_logit": _round(self.baseline_logit[c] / n),
            }
            out.append(entry)
        return out


def monthly_mass(tokens: np.ndarray) -> np.ndarray:
    """``(..., T, groups)`` -> ``(..., T)``: each month's absolute attribution summed over its groups."""
    mass: np.ndarray = np.abs(np.asarray(tokens, dtype=np.float64)).sum(axis=-1)
    return mass


def _round(value: float, digits: int = 6) -> float:
    return round(float(value), digits)


def _rounded(values: np.ndarray, digits: int = 6) -> list[Any]:
    rounded: list[Any] = np.round(np.asarray(values, dtype=np.float64), digits).tolist()
    return rounded


def month_labels_of_samples(start_months: np.ndarray, n_months: int) -> list[str]:
    """Calendar month names of the series positions when every sample starts in the same month (``Dec``, ``Jan``,
    ...), else ``month 1`` ... ``month T``: samples carry a start month, not a year."""
    starts = np.unique(np.asarray(start_months, dtype=np.int64))
    if len(starts) == 1:
        return [_CALENDAR[(int(starts[0]) + i) % 12] for i in range(n_months)]
    return [f"month {i + 1}" for i in range(n_months)]


def month_labels_of_cube(cube: xr.Dataset) -> list[str]:
    """``YYYY-MM`` of each month of a cube."""
    return [str(m) for m in cube["time"].values.astype("datetime64[M]")]


def summary(
    artifact: ModelArtifact,
    summaries: ClassSummaries,
    months: Sequence[str],
    completeness: Mapping[str, Any],
    baseline: Mapping[str, Any],
    steps: int,
    explained: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON of an explanation: the method, the baseline, the tokens, the completeness error and per class the
    numbers of the heatmaps (``mean_attribution`` and ``abs_share_percent`` are months x groups, in the order of
    ``months`` and ``groups``)."""
    from importlib.metadata import version

    from suelo.atomic import file_sha256

    legend = artifact.legend
    return {
        "model": str(artifact.path or ""),
        "model_sha256": file_sha256(artifact.path) if artifact.path else None,
        "method": {
            "name": "integrated gradients",
            "library": f"captum {version('captum')} (captum.attr.IntegratedGradients)",
            "integration": INTEGRATION,
            "steps": int(steps),
            "why": "satisfies completeness up to quadrature error; benchmarks/EXPLAIN.md compares it with SHAP",
        },
        "explained": explained,
        "units": UNITS,
        "baseline": dict(baseline),
        "months": list(months),
        "groups": list(GROUPS),
        "groups_present": [g for g, here in zip(GROUPS, summaries.present, strict=True) if here],
        "terrain_present": summaries.terrain_present,
        "tokens": {
            "month_groups": "sum of the attributions of the group's channels at each month ("
            + "; ".join(f"{name}: {', '.join(bands)}" for name, bands in BAND_GROUPS if name != STATIC_GROUP)
            + ")",
            "terrain": "the static SRTM token: elevation and slope, read from month 0",
            "latlon": "the lat/lon token",
            "not_attributed": "Dynamic World (always missing in suelo), the start month and the mask: held fixed",
        },
        "completeness": dict(completeness),
        "classes": summaries.classes(legend),
        **dict(extra or {}),
    }


# samples ----------------------------------------------------------------------------------------------------------


def select_samples(artifact: ModelArtifact, samples: Samples, split: str = "stored") -> tuple[Samples, dict[str, Any]]:
    """The samples to explain and what was picked: ``stored``, the samples whose ids the model stores for its
    calibration (validation) split, found among ``samples`` as ``suelo evaluate`` finds them (the samples the head
    was not fitted on; the issue asks for the validation samples, so a model's test split, when it has one, stays
    untouched); ``all``, every sample of the model's classes. None found is an InputError naming the model."""
    from suelo.evaluate import _stored_selection, stored_split_ids

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {list(SPLITS)}, got {split!r}")
    model_name = str(artifact.path or "model")
    known = np.isin(samples.labels, artifact.legend.codes)
    if split == "all":
        index = np.flatnonzero(known)
        info: dict[str, Any] = {"split": "all", "n": len(index), "source": "every given sample of its classes"}
    else:
        stored = stored_split_ids(artifact.meta.get("split") or {})
        if stored is None:
            raise InputError(model_name, "stores no split ids (made before they were stored): use --split all")
        picked, counts, _duplicates, _unheld = _stored_selection(samples, known, stored)
        kind = "calibration"
        index = picked[kind]
        held = counts[kind]
        if not len(index):
            raise InputError(
                model_name,
                f"none of the {held['stored']} {kind} sample ids stored in the model are among the given samples "
                f"({held['dropped_while_loading']} of them were dropped while loading): give the sample files it was "
                "trained on, or use --split all",
            )
        info = {"split": kind, "n": len(index), **held, "source": "the sample ids stored in the model"}
        if held["found"] < held["stored"]:
            info["warning"] = (
                f"only {held['found']} of the model's {held['stored']} stored {kind} samples were given "
                f"({held['dropped_while_loading']} dropped while loading, {held['missing']} missing): the summary is "
                f"of that subset, not of the model's whole {kind} split"
            )
    if not len(index):
        raise InputError(model_name, "none of the given samples is of one of the model's classes")
    return samples.subset(index), info


def sample_arrays(artifact: ModelArtifact, samples: Samples) -> dict[str, np.ndarray]:
    """The encoder arrays of ``samples`` with the model's bands and inputs (suelo.train.presto_arrays)."""
    from suelo.models.artifact import contract_inputs
    from suelo.train import presto_arrays

    bands = list(artifact.contract["bands"])
    return presto_arrays(samples.select_bands(bands), bands, contract_inputs(artifact.contract))


def explain_samples(
    artifact: ModelArtifact,
    samples: Samples,
    split: str = "stored",
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH,
    device: str = "cpu",
) -> tuple[dict[str, Any], Attribution]:
    """Explain each selected sample's reference-class logit (:func:`select_samples`); the summary JSON and the
    attributions. The baseline is the selected set's mean."""
    chosen, info = select_samples(artifact, samples, split)
    arrays = sample_arrays(artifact, chosen)
    codes = list(artifact.legend.codes)
    truth = np.array([codes.index(int(v)) for v in chosen.labels], dtype=np.int64)
    result = attribute(artifact, arrays["x"], arrays["mask"], arrays["dw"], arrays["latlons"], arrays["month"],
                       target=truth, steps=steps, batch_size=batch_size, device=device)  # fmt: skip
    tokens, terrain, latlon = result.tokens()
    sums = ClassSummaries(len(codes), arrays["x"].shape[1])
    rows = np.arange(result.n)
    sums.add(tokens[:, 0], terrain[:, 0], latlon[:, 0], result.logits[rows, truth], result.baseline_logits[rows, truth],
             truth)  # fmt: skip
    months = month_labels_of_samples(chosen.start_month, arrays["x"].shape[1])
    extra = {"kind": "samples", "samples": info, "seconds": round(result.seconds, 2)}
    explained = "each sample's reference-class raw logit (before calibration), averaged over the samples of the class"
    out = summary(artifact, sums, months, result.completeness(), result.baseline, steps, explained, extra)
    return out, result


# cube -------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CubeExplanation:
    """A cube's explanation: the summary JSON, the most influential month per pixel (``(y, x)`` uint8, 1..T,
    :data:`MONTH_NODATA` where the pixel has no data; None when only a sample of the pixels was explained), the
    month labels and the cube's grid."""

    summary: dict[str, Any]
    month_index: np.ndarray | None
    months: list[str]
    grid: Grid


def explain_cube(
    artifact: ModelArtifact,
    cube: xr.Dataset,
    cube_name: str | Path = "cube",
    steps: int = DEFAULT_STEPS,
    max_pixels: int | None = None,
    seed: int = CUBE_SEED,
    batch_size: int = DEFAULT_BATCH,
    device: str = "cpu",
    rows_per_block: int = 16,
) -> CubeExplanation:
    """Explain every pixel's predicted-class logit (the class a map would give it: the calibrated posteriors'
    argmax, before the novelty gate and the confidence threshold), in row blocks as ``suelo.predict`` reads a cube.

    The baseline is the cube's own mean over all pixels with data (one cheap first pass), so it does not depend on
    which pixels are explained. ``max_pixels``: explain a seeded random sample of that many pixels with data for the
    region summary instead of all of them (integrated gradients costs ``steps`` forward and backward passes per
    pixel: about 1.2 ms per pixel and step on 2 CPU cores, benchmarks/EXPLAIN.md); the raster is then not made (a
    raster of a sample would show unexplained pixels as no data), so ``month_index`` is None. Without it every
    pixel is explained.
    """
    from suelo.calibrate import Calibration
    from suelo.composite import cube_grid
    from suelo.models.artifact import check_contract, contract_inputs
    from suelo.models.presto_inputs import cube_auxiliary, cube_to_pixels, presto_inputs

    check_contract(artifact, cube, cube_name)
    bands = list(artifact.contract["bands"])
    model_inputs = contract_inputs(artifact.contract)
    ny, nx, t = int(cube.sizes["y"]), int(cube.sizes["x"]), int(cube.sizes["time"])
    rows = max(1, rows_per_block)

    def blocks() -> Any:
        for r in range(0, ny, rows):
            part = cube.isel(y=slice(r, min(r + rows, ny))).sel(band=bands)
            reflectance, latlons, start_month = cube_to_pixels(part)
            has_data = np.isfinite(reflectance).any(axis=(1, 2))
            extra = {k: v[has_data] for k, v in cube_auxiliary(part, model_inputs).items()}
            x, mask, dw = presto_inputs(reflectance[has_data], bands, latlons=latlons[has_data], **extra)
            yield r, part.sizes["y"], has_data, x, mask, dw, latlons[has_data], start_month

    stats = BaselineStats(t)
    has_data_map = np.zeros((ny, nx), dtype=bool)
    for r, h, has_data, x, mask, _dw, latlons, _start in blocks():
        has_data_map[r : r + h] = has_data.reshape(h, nx)
        if len(x):
            stats.add(x, mask, latlons)
    n_data = int(has_data_map.sum())
    if n_data == 0:
        raise InputError(cube_name, "has no pixel with a valid month: nothing to explain")
    chosen = has_data_map.copy()
    sampled = max_pixels is not None and max_pixels < n_data
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"max_pixels must be at least 1, got {max_pixels}")
    if sampled:
        picks = np.random.default_rng(seed).choice(np.flatnonzero(has_data_map.ravel()), max_pixels, replace=False)
        chosen = np.zeros(ny * nx, dtype=bool)
        chosen[picks] = True
        chosen = chosen.reshape(ny, nx)
    point = stats.mean()
    model = model_of(artifact, device)
    calibration = Calibration.from_dict(artifact.meta.get("calibration", {}))
    legend = artifact.legend
    sums = ClassSummaries(len(legend), t)
    month_index = np.full((ny, nx), MONTH_NODATA, dtype=np.uint8)
    errors, gaps, deltas = [], [], []
    seconds = 0.0
    for r, h, has_data, x, mask, dw, latlons, start in blocks():
        # the block's data pixels that are explained, as indices into its data pixels and into the block
        in_block = np.flatnonzero(has_data)
        keep = chosen[r : r + h].ravel()[in_block]
        if not keep.any():
            continue
        x, mask, dw, latlons = x[keep], mask[keep], dw[keep], latlons[keep]
        clean_x, clean_mask = clean_inputs(x, mask)
        args = [torch.from_numpy(np.ascontiguousarray(v)).to(device) for v in (clean_x, latlons, clean_mask, dw)]
        with torch.no_grad():
            logits = model(*args, torch.full((len(x),), start, dtype=torch.long, device=device)).float().cpu().numpy()
        predicted = calibration.apply(logits).argmax(axis=1)
        result = attribute(model, x, mask, dw, latlons, start, target=predicted, baseline=point, steps=steps,
                           batch_size=batch_size, device=device)  # fmt: skip
        seconds += result.seconds
        tokens, terrain, latlon = result.tokens()
        picked = np.arange(result.n)
        sums.add(tokens[:, 0], terrain[:, 0], latlon[:, 0], result.logits[picked, predicted],
                 result.baseline_logits[picked, predicted], predicted)  # fmt: skip
        errors.append(result.error().ravel())
        gaps.append(result.gap().ravel())
        deltas.append(result.convergence_delta.ravel())
        mass = monthly_mass(tokens[:, 0])
        best = np.where(mass.sum(axis=1) > 0, mass.argmax(axis=1) + 1, MONTH_NODATA).astype(np.uint8)
        block = np.full(h * nx, MONTH_NODATA, dtype=np.uint8)
        block[in_block[keep]] = best
        month_index[r : r + h] = block.reshape(h, nx)
    months = month_labels_of_cube(cube)
    completeness = completeness_stats(np.concatenate(errors), np.concatenate(gaps), np.concatenate(deltas))
    n_explained = int(chosen.sum())
    extra = {
        "kind": "cube",
        "cube": {
            "path": str(cube_name),
            "pixels": ny * nx,
            "pixels_with_data": n_data,
            "pixels_explained": n_explained,
            "max_pixels": max_pixels,
            "seed": seed if sampled else None,
            "sampled": sampled,
            "month_raster": None if sampled else MONTH_RASTER,
        },
        "seconds": round(seconds, 2),
    }
    explained = (
        "each pixel's predicted-class raw logit (the calibrated argmax, before the novelty gate and the confidence "
        "threshold), averaged over the pixels predicted as the class"
    )
    out = summary(artifact, sums, months, completeness, baseline_description("mean", point), steps, explained, extra)
    out["baseline"]["description"] = (
        "mean of the cube's pixels with data per (month, channel) over present values; lat/lon at their centroid on "
        "the sphere; a pixel's masked values are its own (zero attribution)"
    )
    return CubeExplanation(out, None if sampled else month_index, months, cube_grid(cube))


# figures ------------------------------------------------------------------------------------------------------------


def _class_entry(summary_: Mapping[str, Any], class_name: str) -> Mapping[str, Any]:
    for entry in summary_["classes"]:
        if entry["name"] == class_name:
            found: Mapping[str, Any] = entry
            return found
    raise KeyError(f"no class {class_name!r} in the explanation (classes: {[c['name'] for c in summary_['classes']]})")


def _draw(ax: Any, figure: Figure, summary_: Mapping[str, Any], entry: Mapping[str, Any]) -> None:
    """One class's heatmap on ``ax``: months on x, the groups that carry attribution on y, signed mean attribution
    on a diverging map centred at 0 (symmetric limits: red raises the class logit, blue lowers it)."""
    groups = list(summary_["groups"])
    shown = [g for g in groups if g in set(summary_.get("groups_present") or groups)] or groups
    months = list(summary_["months"])
    ax.set_title(f"{entry['name']} (n = {entry['n']})", fontsize=10)
    if not entry["n"]:
        ax.text(0.5, 0.5, "no samples of this class", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    values = np.asarray(entry["mean_attribution"], dtype=np.float64)[:, [groups.index(g) for g in shown]].T
    limit = float(np.abs(values).max()) or 1.0
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(months)), months, rotation=90 if len(months[0]) > 3 else 0, fontsize=8)
    ax.set_yticks(range(len(shown)), shown, fontsize=8)
    terrain = f"terrain {entry['mean_terrain']:+.3f}, " if summary_.get("terrain_present", True) else ""
    ax.set_xlabel(
        f"{terrain}lat/lon {entry['mean_latlon']:+.3f} {UNITS}; mean logit {entry['mean_logit']:.2f} vs baseline "
        f"{entry['mean_baseline_logit']:.2f}",
        fontsize=7,
    )
    bar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label(f"mean attribution ({UNITS})", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def heatmap_figure(summary_: Mapping[str, Any], class_name: str) -> Figure:
    """One class's heatmap (a matplotlib Figure, not attached to pyplot: no global state, safe in threads)."""
    from matplotlib.figure import Figure

    months = len(summary_["months"])
    figure = Figure(figsize=(2.2 + 0.42 * months, 3.4), dpi=100, layout="constrained")
    _draw(figure.add_subplot(), figure, summary_, _class_entry(summary_, class_name))
    return figure


def heatmaps_figure(summary_: Mapping[str, Any]) -> Figure:
    """Every class's heatmap in one grid (two columns), each with its own colour bar (magnitudes differ by class)."""
    from matplotlib.figure import Figure

    entries = list(summary_["classes"])
    columns = 2 if len(entries) > 1 else 1
    lines = -(-len(entries) // columns)
    months = len(summary_["months"])
    figure = Figure(figsize=(columns * (2.2 + 0.42 * months), 3.2 * lines), dpi=100, layout="constrained")
    axes = figure.subplots(lines, columns, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i < len(entries):
            _draw(ax, figure, summary_, entries[i])
        else:
            ax.set_axis_off()
    figure.suptitle(f"Integrated gradients of each class's logit ({summary_['method']['steps']} steps)", fontsize=11)
    return figure


def _svg(figure: Figure) -> str:
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": "suelo-explain", "svg.fonttype": "path"}):  # the same text for the same numbers
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def heatmap_svg(summary_: Mapping[str, Any], class_name: str) -> str:
    """One class's heatmap as SVG text, for the model card and the run report to embed (``summary_``: the JSON of
    :func:`explain_samples` / :func:`explain_cube`, or ``attribution.json`` read back)."""
    return _svg(heatmap_figure(summary_, class_name))


def heatmaps_svg(summary_: Mapping[str, Any]) -> str:
    """Every class's heatmap in one SVG (the grid of ``heatmaps.svg``)."""
    return _svg(heatmaps_figure(summary_))


# model cards and run reports ----------------------------------------------------------------------------------------

#: The keys of an explanation that name the explained model file: a model card stored inside that file leaves them
#: out (writing the card changes the file, hence its checksum).
_MODEL_KEYS = ("model", "model_sha256")
#: How many months a class's line names (largest shares of absolute attribution first).
TOP_MONTHS = 3


def card_attribution(summary_: Mapping[str, Any]) -> dict[str, Any]:
    """An explanation as a model card stores it (``meta["model_card"]["attribution"]``): everything but the model
    file's name and checksum."""
    return {k: v for k, v in summary_.items() if k not in _MODEL_KEYS}


def class_highlights(summary_: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per class for the tables beside the heatmaps: its samples, the months with the largest shares of
    absolute attribution, the single strongest (month, group) token with its signed mean, the terrain and lat/lon
    shares and the mean logit against the baseline's. A class without samples gets ``n`` 0 and dashes."""
    months, groups = list(summary_["months"]), list(summary_["groups"])
    terrain = bool(summary_.get("terrain_present", True))
    rows = []
    for entry in summary_["classes"]:
        row: dict[str, Any] = {"code": entry["code"], "class": entry["name"], "n": int(entry["n"])}
        if not entry["n"]:
            rows.append(row | dict.fromkeys(("months", "strongest", "terrain_latlon", "logit"), "-"))
            continue
        by_month = np.asarray(entry["month_share_percent"], dtype=np.float64)
        top = np.argsort(-by_month, kind="stable")[:TOP_MONTHS]
        share = np.asarray(entry["abs_share_percent"], dtype=np.float64)
        month, group = np.unravel_index(int(np.argmax(share)), share.shape)
        signed = float(entry["mean_attribution"][month][group])
        row["months"] = ", ".join(f"{months[i]} {by_month[i]:.0f} %" for i in top)
        row["strongest"] = (
            f"{groups[group]} in {months[month]}: {share[month, group]:.1f} % of the mass, mean {signed:+.3f} {UNITS}"
        )
        row["terrain_latlon"] = (
            f"{entry['terrain_share_percent']:.1f} % / " if terrain else "- / "
        ) + f"{entry['latlon_share_percent']:.1f} %"
        row["logit"] = f"{entry['mean_logit']:.2f} (baseline {entry['mean_baseline_logit']:.2f})"
        row["top_month_index"] = [int(i) for i in top]
        rows.append(row)
    return rows


#: The columns of :func:`class_highlights` as the card's and the report's tables head them.
HIGHLIGHT_COLUMNS = (
    ("class", "class"),
    ("n", "samples"),
    ("months", f"most influential months (share of absolute attribution, top {TOP_MONTHS})"),
    ("strongest", "strongest token"),
    ("terrain_latlon", "terrain / lat-lon share"),
    ("logit", f"mean {UNITS}"),
)


def attribution_intro(summary_: Mapping[str, Any]) -> str:
    """The sentence before the heatmaps: what was explained, on which samples, by which method, from which
    baseline, and how well completeness held."""
    samples = summary_.get("samples") or {}
    picked = (
        f"the {samples['n']} samples of the model's {samples['split']} split (the head was not fitted on them)"
        if samples.get("split") == "calibration"
        else f"{samples.get('n', 'the')} samples"
    )
    method = summary_["method"]
    completeness = completeness_line(summary_)
    return (
        f"Integrated gradients ({method['library']}, {method['integration']}, {method['steps']} steps) of "
        f"{summary_['explained']}, on {picked}, from a baseline of {summary_['baseline']['description']}. Red "
        f"raises the class's {UNITS}, blue lowers it; each panel has its own scale. "
        f"{completeness[0].upper()}{completeness[1:]}."
    )


#: A lat/lon share of absolute attribution above this (percent, in any class) is named beside the heatmaps.
LOCATION_NOTE_PERCENT = 10.0


def location_note(summary_: Mapping[str, Any]) -> str:
    """A sentence when the lat/lon token carries much of some class's attribution (the model then reads where a
    sample is, not only what its series looks like, which says little on land far from its training regions);
    empty otherwise."""
    shares = {entry["name"]: float(entry["latlon_share_percent"]) for entry in summary_["classes"] if entry["n"]}
    if not shares or max(shares.values()) <= LOCATION_NOTE_PERCENT:
        return ""
    low, high = min(shares.values()), max(shares.values())
    most = max(shares, key=lambda name: shares[name])
    return (
        f"The lat/lon token carries {low:.0f}-{high:.0f} % of the absolute attribution (most for {most}), measured "
        "from the baseline's position, the samples' centroid, which lies between the training regions when they are "
        "far apart: the model reads where a sample is as well as what its series looks like, learnt from the few "
        "regions it was trained on, and that part of its evidence says little about land far from them, which is "
        "one reason the maps gate pixels unlike the training data."
    )


def attribution_markdown(summary_: Mapping[str, Any], image: str) -> str:
    """The model card's attribution section: the intro, the heatmaps (``image``, a path relative to the card) and
    a table of :func:`class_highlights`."""
    lines = [
        "## Which months and bands make each class (`suelo explain`)",
        "",
        attribution_intro(summary_),
        "",
        f"![Mean attribution of each class's logit by month and band group]({image})",
        "",
        "| " + " | ".join(title for _key, title in HIGHLIGHT_COLUMNS) + " |",
        "|" + "---|" * len(HIGHLIGHT_COLUMNS),
    ]
    for row in class_highlights(summary_):
        lines.append("| " + " | ".join(str(row[key]) for key, _title in HIGHLIGHT_COLUMNS) + " |")
    note = location_note(summary_)
    return "\n".join([*lines, *(["", note] if note else []), ""])


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "class"


# writing ------------------------------------------------------------------------------------------------------------


def month_colors(months: Sequence[str]) -> list[str]:
    """A colour per month of the series, on a cyclic map by calendar month (the same month of two years looks the
    same, neighbouring months alike); labels that are no ``YYYY-MM`` take their position."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["twilight_shifted"]
    out = []
    for i, label in enumerate(months):
        match = re.fullmatch(r"\d{4}-(\d{2})", label)
        calendar = int(match.group(1)) - 1 if match else i % 12
        out.append(to_hex(cmap((calendar + 0.5) / 12)))
    return out


def write_month_raster(
    path: Path, month_index: np.ndarray, grid: Grid, months: Sequence[str], tags: Mapping[str, Any] | None = None
) -> list[Path]:
    """The most influential month per pixel as a paletted uint8 COG (suelo.write's writer: verified, atomic) with
    a ``.tif.aux.xml`` naming each value by its month and a paletted ``.qml``; returns the three paths."""
    from rasterio.enums import Resampling

    from suelo.atomic import atomic_output
    from suelo.style import write_qml
    from suelo.write import MapEntry, _provenance_tags, _write_cog, hex_to_rgba, pam_xml

    n = len(months)
    if n > 254:
        raise ValueError(f"{n} months do not fit a uint8 raster")
    colors = month_colors(months)
    entries = [MapEntry(MONTH_NODATA, "no data", None)]
    entries += [MapEntry(i + 1, label, color) for i, (label, color) in enumerate(zip(months, colors, strict=True))]
    counts = np.bincount(np.asarray(month_index, dtype=np.int64).ravel(), minlength=n + 1)

    def check(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        if block.size and (block.min() < 0 or block.max() > n):
            raise ValueError(f"{path.name}: month values outside 0..{n}")
        return block.astype(np.uint8)

    all_tags = {
        **_provenance_tags(tags),
        "MONTHS": {str(i + 1): label for i, label in enumerate(months)},
        "NODATA_MEANING": "no valid month",
    }
    _write_cog(path, month_index, grid, "uint8", MONTH_NODATA, check, Resampling.mode, all_tags,
               "most influential month of the predicted class's logit (1 = first month of the series)",
               {e.code: hex_to_rgba(e.color) for e in entries})  # fmt: skip
    aux = path.with_name(path.name + ".aux.xml")
    with atomic_output(aux) as tmp:
        tmp.write_text(pam_xml(entries, {i: int(c) for i, c in enumerate(counts) if c}), encoding="utf-8")
    style = write_qml(path.with_suffix(".qml"), entries, "paletted")
    return [path, aux, style]


def write_explanation(
    summary_: Mapping[str, Any],
    folder: Path,
    month_index: np.ndarray | None = None,
    grid: Grid | None = None,
) -> list[Path]:
    """``attribution.json``, ``heatmap_<class>.png`` per class with samples, ``heatmaps.png`` and ``heatmaps.svg``
    and, with ``month_index`` and ``grid``, the most-influential-month COG and its styles; each written atomically."""
    from suelo.atomic import atomic_output, write_json_atomic, write_text_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if month_index is not None:
        if grid is None:
            raise ValueError("the month raster needs the cube's grid")
        tags = {
            "MODEL": Path(str(summary_.get("model") or "")).name,
            "MODEL_SHA256": summary_.get("model_sha256") or "",
            "METHOD": summary_["method"],
            "BASELINE": summary_["baseline"]["description"],
        }
        written += write_month_raster(folder / MONTH_RASTER, month_index, grid, summary_["months"], tags)
    path = folder / JSON_NAME
    write_json_atomic(path, json.loads(json.dumps(summary_, default=str)))
    written.append(path)
    for entry in summary_["classes"]:
        if not entry["n"]:
            continue
        path = folder / f"heatmap_{_slug(entry['name'])}.png"
        with atomic_output(path) as tmp:
            heatmap_figure(summary_, entry["name"]).savefig(tmp, format="png")
        written.append(path)
    grid_figure = heatmaps_figure(summary_)
    path = folder / "heatmaps.png"
    with atomic_output(path) as tmp:
        grid_figure.savefig(tmp, format="png")
    written.append(path)
    written.append(write_text_atomic(folder / "heatmaps.svg", _svg(grid_figure)))
    return written


def completeness_line(summary_: Mapping[str, Any]) -> str:
    """One line on the completeness error, as the CLI prints it."""
    c = summary_["completeness"]
    return (
        f"completeness: max |sum of attributions - (logit - baseline logit)| = {c['max_abs_error']:.2e} {UNITS} "
        f"(mean {c['mean_abs_error']:.1e}, max relative {c['max_relative_error']:.1e}) over {c['n_logits']} "
        f"explained logits; {c['within_tolerance']:.1%} within {COMPLETENESS_ATOL:g} + {COMPLETENESS_RTOL:g} x |gap|"
    )


def input_kind(paths: Sequence[Path]) -> Literal["cube", "samples"]:
    """``cube`` for one NetCDF holding a monthly cube's reflectance, ``samples`` for anything else (sample files as
    ``suelo evaluate`` takes them); a NetCDF that is no cube among them is an InputError."""
    netcdf = [p for p in paths if p.suffix.lower() in (".nc", ".nc4", ".netcdf")]
    if not netcdf:
        return "samples"
    if len(paths) > 1:
        raise InputError(netcdf[0], "a cube is explained on its own: give one cube, or sample files")
    import xarray as xr

    try:
        with xr.open_dataset(netcdf[0], engine="netcdf4") as ds:
            is_cube = "reflectance" in ds.data_vars and {"time", "band", "y", "x"} <= set(ds["reflectance"].dims)
    except (OSError, ValueError) as exc:
        raise InputError(netcdf[0], f"cannot be read as NetCDF: {' '.join(str(exc).split())[:200]}") from exc
    if not is_cube:
        raise InputError(netcdf[0], "is no monthly cube (needs reflectance (time, band, y, x), as suelo ingest writes)")
    return "cube"
