"""Labelled samples for training and evaluation: per-sample monthly Sentinel-2 series plus a legend code.

Every loader returns the same :class:`Samples`: physical reflectance ``(N, T, B)`` float32 (DN / 10000, NaN where
a month has no valid value), the start month of each series and a location, so the encoder sees training samples
exactly as it sees cube pixels (``suelo.models.presto_inputs.cube_to_pixels``).

Sources:

- WorldCereal point extractions (``load_worldcereal``), in the three layouts WorldCereal publishes: long monthly,
  long dekadal (aggregated to the monthly median of valid dekads, the same statistic the cube compositor uses)
  and wide (``OPTICAL-Bxx-tsN-*`` columns). ``ewoc_code`` is mapped to LANDCOVER10 with
  ``data/legends/worldcereal_class_mappings.json``; ``ignore`` and unmapped codes are dropped.
- Points or polygons with a class column (``sample_vector``) and label rasters (``sample_raster``), read from a
  cube on its own grid.

Samples with no valid month at all are dropped: the encoder would see only their location.

Besides Sentinel-2, samples may carry the other inputs Presto was pre-trained on (``suelo.models.presto_inputs``),
in the physical units it takes: ``s1`` ``(N, T, 2)`` VV, VH backscatter in dB; ``era5`` ``(N, T, 2)`` 2 m
temperature in K and total precipitation in m of water per day; ``srtm`` ``(N, 2)`` elevation in m and slope in
degrees. NaN where a value is missing; None where the source has none at all. The WorldCereal extractions carry all
three (decoded from WorldCereal's uint16 encodings below); points and polygons on a cube carry none yet.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from suelo.data import LEGENDS
from suelo.errors import InputError
from suelo.legend import Legend, load_legend

if TYPE_CHECKING:
    import geopandas as gpd

MAPPING_FILE = LEGENDS / "worldcereal_class_mappings.json"
WORLDCEREAL_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
NODATA_DN = 65535
DN_SCALE = 10000.0
DEFAULT_MONTHS = 12
# Where the label's valid_time sits in the 12-month window of long-format extractions: month 6 (0-based), i.e. the
# window runs from six months before the valid month to five months after. This is WorldCereal's own convention
# (their wide extractions have valid_position = 6) and keeps the growing season around the label in the window.
VALID_POSITION = 6
DEFAULT_BLOCK_M = 10_000.0
_M_PER_DEG = 111_320.0
#: The Samples attribute holding each optional encoder input (names as in TrainConfig.inputs and the model's input
#: contract, suelo.models.artifact.INPUTS; "s2" is the reflectance itself).
INPUT_FIELDS: dict[str, str] = {"s1": "s1", "terrain": "srtm", "weather": "era5"}

# WorldCereal's uint16 encodings of the non-optical inputs (verified against its source, worldcereal-classification
# at 6c574425857177d9476bcf0876895e368ce445bb, the snapshot data/worldcereal was copied from, and openeo-gfmap):
# - S1-SIGMA0-VV/VH, SAR-VV/VH-tsN-20m: openeo_gfmap/preprocessing/sar.py compress_backscatter_uint16 (lines 30-37)
#   stores DN = 10 ** ((10 * log10(sigma0 power) + 83) / 20), clipped to 1..65534; WorldCereal decodes it as
#   dB = 20 * log10(DN) - 83 for DN > 0 (src/worldcereal/train/datasets.py line 1379,
#   notebooks/notebook_utils/extractions.py line 303).
# - AGERA5-TMEAN, METEO-temperature_mean-tsN-100m: mean 2 m temperature in K x 100 (datasets.py line 1387, "remove
#   scaling" / 100; extractions.py line 306). 0 K is not a temperature: these files write 0 where AgERA5 has no value
#   (the Corsica file's last month: TMEAN 0 beside PRECIP 65535), so 0 is read as missing.
# - AGERA5-PRECIP, METEO-precipitation_flux-tsN-100m: the precipitation SUM over the time step (month or dekad) in
#   mm x 100 (datasets.py line 1383: / (100 * 1000) "AgERA5 is in mm, prometheo convention expects m";
#   notebooks/notebook_utils/extractions_app.py line 1279 "precipitation sum derived from AgERA5"). WorldCereal feeds
#   it as m per step; Presto was pre-trained on ERA5-Land monthly means, m of water per day (its band is
#   "total_precipitation" of ECMWF/ERA5_LAND/MONTHLY, nasaharvest/presto presto/dataops/pipelines/s1_s2_era5_srtm.py,
#   the collection of cropharvest's eo/era5.py, not the later MONTHLY_AGGR "total_precipitation_sum"), so the sum
#   is divided by the days of the step it covers: a month's days, a dekad's (10, 10, rest of the month).
# - elevation / DEM-alt-20m in m and slope / DEM-slo-20m in degrees, unscaled ("No scaling for DEM bands",
#   extractions.py line 294; datasets.py lines 982-983 map them to Presto's elevation and slope).
# - 65535 = no data in every column (patch_to_point_worldcereal.py line 537: fillna(65535).astype("uint16")).
S1_DB_OFFSET = 83.0
METEO_SCALE = 100.0
MM_PER_M = 1000.0

# Why a loader (or `suelo evaluate`) left a sample out; the keys of every drop count.
DROP_REASONS: dict[str, str] = {
    "ignored_class": "the WorldCereal ewoc_code maps to 'ignore' in the LANDCOVER10 class mapping",
    "unmapped_code": "the WorldCereal ewoc_code is not in the LANDCOVER10 class mapping",
    "not_in_legend": "the label's class is not in the legend the samples were loaded with",
    "not_in_model_legend": "the class is not one of the model's (not in its legend, or too rare in training)",
    "no_valid_month": "no valid reflectance in any month (the encoder would see only the location)",
    "outside_cube": "the point or polygon lies outside the cube",
    "no_pixel": "the polygon overlaps the cube but holds no pixel centre (too small, or covered by later polygons)",
    "no_geometry": "the feature has no (or an empty) geometry",
    "not_in_model_split": "the model's stored split holds no such sample id (neither training nor held out)",
    "duplicate_id": "an earlier sample has the same id (selecting by id, only the first one is used)",
}
# sample_id and source file; label as the file gives it where known (ewoc_code, class value), else the legend code
DROPPED_COLUMNS = ("sample_id", "source", "reason", "label", "detail")


def drop_rows(
    sample_ids: Sequence[object] | np.ndarray,
    source: str,
    reason: str,
    labels: Sequence[object] | np.ndarray,
    detail: str = "",
) -> pd.DataFrame:
    """One ``dropped`` row per sample id, all for the same ``source`` and ``reason``."""
    if reason not in DROP_REASONS:
        raise ValueError(f"unknown drop reason {reason!r}")
    n = len(sample_ids)
    return pd.DataFrame(
        {
            "sample_id": [str(s) for s in sample_ids],
            "source": [str(source)] * n,
            "reason": [reason] * n,
            "label": [str(v) for v in labels],
            "detail": [str(detail)] * n,
        },
        columns=list(DROPPED_COLUMNS),
    )


def dropped_table(*parts: pd.DataFrame) -> pd.DataFrame:
    """The ``dropped`` rows of ``parts`` in order (an empty table of :data:`DROPPED_COLUMNS` when none)."""
    # empty frames are skipped: pandas warns about (and may change) the dtypes they contribute to a concat
    rows = [p for p in parts if p is not None and len(p)]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DROPPED_COLUMNS})
    return pd.concat(rows, ignore_index=True)[list(DROPPED_COLUMNS)]


@dataclass
class Samples:
    reflectance: np.ndarray  # (N, T, B) float32, physical reflectance, NaN = missing
    band_names: tuple[str, ...]
    start_month: np.ndarray  # (N,) int64, 0 = January
    latlons: np.ndarray  # (N, 2) float64 (lat, lon) degrees
    labels: np.ndarray  # (N,) int64 legend codes
    sample_ids: np.ndarray  # (N,) str
    # None until __post_init__ fills it (as for anchors, dropped and features below): typed as after construction
    groups: np.ndarray = field(default=None)  # type: ignore[arg-type]  # (N,) str spatial block id
    # Location used to assign blocks: the polygon's centroid for polygon pixels, so a polygon never straddles the
    # train/validation split; the sample's own location otherwise.
    anchors: np.ndarray = field(default=None)  # type: ignore[arg-type]
    # Processing level of the reflectance: "L2A" (surface) or "L1C" (top of atmosphere); a model records it.
    product_level: str = "L2A"
    # What the loaders left out, one row per sample (DROPPED_COLUMNS, reasons in DROP_REASONS), carried through
    # subset, select_bands and concat so training and evaluation can say what they did not use and why.
    dropped: pd.DataFrame = field(default=None)  # type: ignore[assignment]
    # The labelled feature each sample comes from: the pixels of one polygon share it, so training can cap pixels
    # per polygon (suelo.sampling); by default every sample is its own feature (points, rasters, WorldCereal).
    features: np.ndarray = field(default=None)  # type: ignore[arg-type]
    # The optional encoder inputs (see the module): None = the source has none, NaN = missing value.
    s1: np.ndarray | None = None  # (N, T, 2) VV, VH backscatter in dB
    era5: np.ndarray | None = None  # (N, T, 2) 2 m temperature in K, total precipitation in m/day
    srtm: np.ndarray | None = None  # (N, 2) elevation in m, slope in degrees

    def __post_init__(self) -> None:
        self.dropped = dropped_table() if self.dropped is None else self.dropped
        self.reflectance = np.asarray(self.reflectance, dtype=np.float32)
        self.band_names = tuple(str(b) for b in self.band_names)
        n = len(self.reflectance)
        if self.reflectance.ndim != 3 or self.reflectance.shape[2] != len(self.band_names):
            raise ValueError(f"reflectance must be (N, T, {len(self.band_names)}), got {self.reflectance.shape}")
        self.start_month = np.asarray(self.start_month, dtype=np.int64).reshape(-1)
        self.latlons = np.asarray(self.latlons, dtype=np.float64).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.sample_ids = np.asarray(self.sample_ids, dtype=object).reshape(-1)
        self.anchors = self.latlons.copy() if self.anchors is None else np.asarray(self.anchors, np.float64)
        if self.groups is None:
            self.groups = spatial_blocks(self.anchors, DEFAULT_BLOCK_M)
        self.groups = np.asarray(self.groups, dtype=object).reshape(-1)
        self.features = self.sample_ids.copy() if self.features is None else np.asarray(self.features, dtype=object)
        for name in ("start_month", "latlons", "labels", "sample_ids", "groups", "anchors", "features"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} samples")
        if n and ((self.start_month < 0) | (self.start_month > 11)).any():
            raise ValueError("start_month must be in 0..11")
        t = self.reflectance.shape[1]
        for name, shape in (("s1", (n, t, 2)), ("era5", (n, t, 2)), ("srtm", (n, 2))):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float32)
                if value.shape != shape:
                    raise ValueError(f"{name} must be {shape}, got {value.shape}")
                setattr(self, name, value)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The encoder inputs these samples carry (``"s2"`` always; the others where the source has them)."""
        return ("s2", *(name for name, attr in INPUT_FIELDS.items() if getattr(self, attr) is not None))

    def input_coverage(self) -> dict[str, float]:
        """Share of finite values of each optional input the samples carry (0 for one they do not)."""
        out = {}
        for name, attr in INPUT_FIELDS.items():
            value = getattr(self, attr)
            out[name] = float(np.isfinite(value).mean()) if value is not None and value.size else 0.0
        return out

    def presto_kwargs(self, inputs: Sequence[str]) -> dict[str, np.ndarray | None]:
        """``s1`` / ``era5`` / ``srtm`` keyword arguments of ``suelo.models.presto_inputs.presto_inputs`` for the
        chosen ``inputs``: an input not chosen (or not carried) is None, so the encoder sees it masked."""
        return {attr: getattr(self, attr) if name in inputs else None for name, attr in INPUT_FIELDS.items()}

    def _aux(self, attr: str, index: np.ndarray) -> np.ndarray | None:
        value: np.ndarray | None = getattr(self, attr)
        return None if value is None else value[index]

    def __len__(self) -> int:
        return len(self.reflectance)

    @property
    def n_months(self) -> int:
        return self.reflectance.shape[1]

    def subset(self, index: np.ndarray | Sequence[int]) -> Samples:
        index = np.asarray(index)
        return Samples(
            self.reflectance[index],
            self.band_names,
            self.start_month[index],
            self.latlons[index],
            self.labels[index],
            self.sample_ids[index],
            self.groups[index],
            self.anchors[index],
            self.product_level,
            dropped=self.dropped,
            features=self.features[index],
            s1=self._aux("s1", index),
            era5=self._aux("era5", index),
            srtm=self._aux("srtm", index),
        )

    def select_bands(self, bands: Sequence[str]) -> Samples:
        missing = [b for b in bands if b not in self.band_names]
        if missing:
            raise ValueError(f"samples lack bands {missing} (have {list(self.band_names)})")
        idx = [self.band_names.index(b) for b in bands]
        return replace(self, reflectance=self.reflectance[:, :, idx], band_names=tuple(bands))

    def class_counts(self) -> dict[int, int]:
        codes, counts = np.unique(self.labels, return_counts=True)
        return {int(c): int(k) for c, k in zip(codes, counts, strict=False)}

    @staticmethod
    def concat(parts: Sequence[Samples]) -> Samples:
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if p.band_names != first.band_names or p.n_months != first.n_months:
                raise ValueError(
                    f"cannot combine samples of bands {list(p.band_names)} x {p.n_months} months with "
                    f"{list(first.band_names)} x {first.n_months} months"
                )
            if p.product_level != first.product_level:
                raise ValueError(
                    f"cannot combine {p.product_level} samples with {first.product_level} samples (TOA and surface "
                    "reflectance differ; a model is trained on one level)"
                )
        return Samples(
            np.concatenate([p.reflectance for p in parts]),
            first.band_names,
            np.concatenate([p.start_month for p in parts]),
            np.concatenate([p.latlons for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.sample_ids for p in parts]),
            np.concatenate([p.groups for p in parts]),
            np.concatenate([p.anchors for p in parts]),
            first.product_level,
            dropped=dropped_table(*(p.dropped for p in parts)),
            features=np.concatenate([p.features for p in parts]),
            s1=_concat_aux(parts, "s1"),
            era5=_concat_aux(parts, "era5"),
            srtm=_concat_aux(parts, "srtm"),
        )

    def drop_empty(self, source: str = "") -> Samples:
        """Without samples that have no valid value at all (recorded in ``dropped`` as ``no_valid_month``)."""
        keep = np.isfinite(self.reflectance).any(axis=(1, 2))
        if keep.all():
            return self
        empty = np.flatnonzero(~keep)
        kept = self.subset(np.flatnonzero(keep))
        kept.dropped = dropped_table(
            self.dropped, drop_rows(self.sample_ids[empty], source, "no_valid_month", self.labels[empty])
        )
        return kept


def _concat_aux(parts: Sequence[Samples], attr: str) -> np.ndarray | None:
    """The optional input ``attr`` of ``parts`` concatenated: NaN for the parts without it when another part has it
    (the encoder sees it masked there), None when no part has it."""
    values: list[np.ndarray | None] = [getattr(p, attr) for p in parts]
    shapes = [v.shape[1:] for v in values if v is not None]
    if not shapes:
        return None
    return np.concatenate(
        [
            np.full((len(p), *shapes[0]), np.nan, np.float32) if v is None else v
            for p, v in zip(parts, values, strict=True)
        ]
    )


# spatial blocks and splitting -----------------------------------------------------------------------------------


def ids_digest(ids: Iterable[object]) -> str:
    """Order-independent fingerprint of a set of sample ids (to check a later evaluation uses the same split)."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()


def spatial_blocks(latlons: np.ndarray, block_m: float = DEFAULT_BLOCK_M) -> np.ndarray:
    """Id of the ~``block_m`` x ``block_m`` block holding each (lat, lon).

    Rows of blocks are ``block_m`` of latitude; within a row, blocks are ``block_m`` wide at the row's centre
    latitude, so blocks stay roughly square from the equator to high latitudes (unlike fixed-degree cells).
    """
    latlons = np.asarray(latlons, dtype=np.float64).reshape(-1, 2)
    if block_m <= 0:
        raise ValueError(f"block_m must be positive, got {block_m}")
    lat_step = block_m / _M_PER_DEG
    row = np.floor(latlons[:, 0] / lat_step).astype(np.int64)
    centre = (row + 0.5) * lat_step
    lon_step = block_m / (_M_PER_DEG * np.maximum(np.cos(np.radians(centre)), 1e-6))
    col = np.floor((latlons[:, 1] + 180.0) / lon_step).astype(np.int64)
    return np.array([f"{block_m:g}m/{r}/{c}" for r, c in zip(row, col, strict=False)], dtype=object)


def spatial_split(
    samples: Samples, block_m: float | None = DEFAULT_BLOCK_M, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` such that no spatial block has samples on both sides.

    Whole blocks, in a seeded random order, go to validation while they fit in ``val_fraction`` of the samples.
    ``block_m=None`` uses ``samples.groups`` as they are.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    groups = samples.groups if block_m is None else spatial_blocks(samples.anchors, block_m)
    names, inverse, sizes = np.unique(groups.astype(str), return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise ValueError(f"all {len(samples)} samples are in one spatial block; use smaller blocks")
    order = np.random.default_rng(seed).permutation(len(names))
    target = val_fraction * len(samples)
    in_val = np.zeros(len(names), dtype=bool)
    taken = 0
    for b in order:
        if taken + sizes[b] <= target or taken == 0:
            in_val[b] = True
            taken += sizes[b]
        if taken >= target:
            break
    if in_val.all():  # a single huge first block: give one back to training
        in_val[order[-1]] = False
    val_mask = in_val[inverse]
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def three_way_split(
    samples: Samples,
    block_m: float | None = DEFAULT_BLOCK_M,
    cal_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(train, calibration, test)``, no spatial block on two sides: the test blocks are drawn first
    (``test_fraction`` of the samples; none when 0), then calibration blocks from the rest. With
    ``test_fraction=0`` this is exactly :func:`spatial_split` (so models made before the test split existed
    keep their split)."""
    if test_fraction <= 0:
        train, cal = spatial_split(samples, block_m, cal_fraction, seed)
        return train, cal, np.zeros(0, dtype=np.int64)
    if cal_fraction + test_fraction >= 1:
        raise ValueError(f"cal_fraction + test_fraction must be below 1, got {cal_fraction} + {test_fraction}")
    rest, test = spatial_split(samples, block_m, test_fraction, seed)
    inner_train, inner_cal = spatial_split(samples.subset(rest), block_m, cal_fraction / (1 - test_fraction), seed)
    return rest[inner_train], rest[inner_cal], test


# WorldCereal extractions ----------------------------------------------------------------------------------------


def load_class_mapping(path: str | Path = MAPPING_FILE) -> dict[str, str]:
    """ewoc_code (string) -> LANDCOVER10 key, from the shipped copy of WorldCereal's class_mappings.json."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data.get("LANDCOVER10", data)


def map_ewoc_codes(
    ewoc: Sequence[object] | np.ndarray, legend: Legend, mapping: dict[str, str] | None = None
) -> np.ndarray:
    """Legend codes of WorldCereal ``ewoc_code`` values; -1 where the code maps to ``ignore`` or to nothing."""
    mapping = load_class_mapping() if mapping is None else mapping
    out = np.full(len(ewoc), -1, dtype=np.int64)
    cache: dict[str, int] = {}
    for i, value in enumerate(ewoc):
        key = str(int(value)) if isinstance(value, (int, np.integer, float, np.floating)) else str(value)
        if key not in cache:
            lc = mapping.get(key)
            code = legend.code_for(lc) if lc and lc != "ignore" else None
            cache[key] = -1 if code is None else code
        out[i] = cache[key]
    return out


def ewoc_drops(
    path: Path,
    sample_ids: np.ndarray,
    ewoc: Sequence[object] | np.ndarray,
    labels: np.ndarray,
    mapping: dict[str, str] | None,
) -> pd.DataFrame:
    """``dropped`` rows of the samples :func:`map_ewoc_codes` gave -1: which of ``ignore``, no mapping, or a
    LANDCOVER10 class the legend lacks (named in ``detail``)."""
    mapping = load_class_mapping() if mapping is None else mapping
    rows: dict[tuple[str, str], tuple[list[object], list[str]]] = {}  # (reason, class) -> (ids, ewoc codes)
    for i in np.flatnonzero(np.asarray(labels) < 0):
        value = ewoc[int(i)]
        key = str(int(value)) if isinstance(value, (int, np.integer, float, np.floating)) else str(value)
        lc = mapping.get(key)
        reason = "unmapped_code" if not lc else "ignored_class" if lc == "ignore" else "not_in_legend"
        ids, codes = rows.setdefault((reason, (lc or "") if reason == "not_in_legend" else ""), ([], []))
        ids.append(sample_ids[i])
        codes.append(key)
    parts = [drop_rows(ids, str(path), reason, codes, lc) for (reason, lc), (ids, codes) in rows.items()]
    return dropped_table(*parts)


def _dn_to_reflectance(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.where((values == NODATA_DN) | ~np.isfinite(values), np.nan, values / DN_SCALE).astype(np.float32)


def _valid_dn(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as float64 and where they hold data (finite, not the 65535 no-data value)."""
    values = np.asarray(values, dtype=np.float64)
    return values, np.isfinite(values) & (values != NODATA_DN)


def s1_dn_to_db(values: np.ndarray) -> np.ndarray:
    """WorldCereal's uint16 Sentinel-1 backscatter (``S1-SIGMA0-*``, ``SAR-*``) in dB: ``20 log10(DN) - 83``
    (the inverse of openeo-gfmap's compress_backscatter_uint16); NaN for no data and for DN 0 (not an encoding)."""
    values, ok = _valid_dn(values)
    ok &= values > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, 20.0 * np.log10(np.where(ok, values, 1.0)) - S1_DB_OFFSET, np.nan).astype(np.float32)


def tmean_dn_to_kelvin(values: np.ndarray) -> np.ndarray:
    """WorldCereal's AgERA5 mean 2 m temperature (K x 100) in K; NaN for no data and for 0 (the files' fill)."""
    values, ok = _valid_dn(values)
    ok &= values > 0
    return np.where(ok, values / METEO_SCALE, np.nan)


def precip_dn_to_m(values: np.ndarray) -> np.ndarray:
    """WorldCereal's AgERA5 precipitation sum over a time step (mm x 100) in m over that step; NaN for no data."""
    values, ok = _valid_dn(values)
    return np.where(ok, values / (METEO_SCALE * MM_PER_M), np.nan)


def dem_dn(values: np.ndarray) -> np.ndarray:
    """WorldCereal's elevation (m) or slope (degrees), unscaled; NaN for no data."""
    values, ok = _valid_dn(values)
    return np.where(ok, values, np.nan)


def days_in_month(month_number: np.ndarray) -> np.ndarray:
    """Days of each month given as months since 1970-01 (:func:`_month_number`)."""
    first = np.asarray(month_number, dtype=np.int64).astype("datetime64[M]")
    return ((first + 1).astype("datetime64[D]") - first.astype("datetime64[D]")).astype(np.int64)


def step_days(ts: pd.Series, dekadal: bool) -> np.ndarray:
    """Days covered by each time step starting at ``ts``: its month's for monthly steps; for dekads (starting on
    the 1st, 11th and 21st) 10, 10 and the rest of the month."""
    ts = pd.to_datetime(ts).reset_index(drop=True)
    month_days = days_in_month(_month_number(ts))
    if not dekadal:
        return month_days
    day = ts.dt.day.to_numpy()
    return np.where(day >= 21, month_days - 20, 10)


def _month_number(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Months since 1970-01 (so consecutive months differ by 1 across years)."""
    ts = pd.to_datetime(ts)
    return (
        (ts.year.to_numpy() - 1970) * 12 + ts.month.to_numpy() - 1
        if isinstance(ts, pd.DatetimeIndex)
        else ((ts.dt.year.to_numpy() - 1970) * 12 + ts.dt.month.to_numpy() - 1)
    )


def load_worldcereal(
    path: str | Path,
    legend: Legend | None = None,
    bands: Sequence[str] = WORLDCEREAL_BANDS,
    months: int = DEFAULT_MONTHS,
    valid_position: int = VALID_POSITION,
    mapping: dict[str, str] | None = None,
) -> Samples:
    """Samples from a WorldCereal point extraction (long monthly, long dekadal or wide parquet; auto-detected)."""
    path = Path(path)
    legend = load_legend() if legend is None else legend
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise InputError(path, f"cannot read parquet: {exc}") from exc
    for col in ("sample_id", "ewoc_code", "lat", "lon"):
        if col not in df.columns:
            raise InputError(path, f"not a WorldCereal extraction: no column {col!r}")
    if "timestamp" in df.columns:
        samples = _worldcereal_long(path, df, legend, bands, months, valid_position, mapping)
    elif any(str(c).startswith("OPTICAL-") for c in df.columns):
        samples = _worldcereal_wide(path, df, legend, bands, months, mapping)
    else:
        raise InputError(path, "neither long (timestamp column) nor wide (OPTICAL-* columns) WorldCereal format")
    return samples.drop_empty(str(path))


def _worldcereal_long(
    path: Path,
    df: pd.DataFrame,
    legend: Legend,
    bands: Sequence[str],
    months: int,
    valid_position: int,
    mapping: dict[str, str] | None,
) -> Samples:
    cols = [f"S2-L2A-{b}" for b in bands]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(path, f"missing band columns {missing}")
    refl = pd.DataFrame(_dn_to_reflectance(df[cols].to_numpy()), columns=list(bands))
    refl["sample_id"] = df["sample_id"].astype(str).to_numpy()
    refl["month"] = _month_number(df["timestamp"])
    # One row per month already for monthly files; for dekads (or several rows a month) the per-band median of the
    # valid values, the statistic the cube compositor uses. pandas' median skips NaN.
    monthly = refl.groupby(["sample_id", "month"], sort=True)[list(bands)].median()

    meta = df.drop_duplicates("sample_id").set_index(df.drop_duplicates("sample_id")["sample_id"].astype(str))
    ids = meta.index.to_numpy()
    labels = map_ewoc_codes(meta["ewoc_code"].to_numpy(), legend, mapping)
    span = refl.groupby("sample_id")["month"].agg(["min", "max"]).reindex(ids)
    if "valid_time" in meta.columns:
        valid = _month_number(pd.to_datetime(meta["valid_time"]).reset_index(drop=True))
        start = valid - valid_position
    else:
        start = span["min"].to_numpy()
    # keep the window inside the extracted period: shift it rather than pad with empty months
    start = np.minimum(np.maximum(start, span["min"].to_numpy()), span["max"].to_numpy() - (months - 1))
    start = np.maximum(start, span["min"].to_numpy())

    index = {sid: i for i, sid in enumerate(ids)}
    out = np.full((len(ids), months, len(bands)), np.nan, dtype=np.float32)
    sid = monthly.index.get_level_values(0).to_numpy()
    mon = monthly.index.get_level_values(1).to_numpy()
    row = np.array([index[s] for s in sid])
    step = mon - start[row]
    inside = (step >= 0) & (step < months)
    out[row[inside], step[inside]] = monthly.to_numpy(dtype=np.float32)[inside]
    aux = _long_aux(df, refl["sample_id"].to_numpy(), refl["month"].to_numpy(), index, start, months)

    keep = labels >= 0
    return Samples(
        out[keep],
        tuple(bands),
        (start % 12)[keep],
        meta[["lat", "lon"]].to_numpy(dtype=np.float64)[keep],
        labels[keep],
        ids[keep],
        dropped=ewoc_drops(path, ids, meta["ewoc_code"].to_numpy(), labels, mapping),
        s1=_kept(aux["s1"], keep),
        era5=_kept(aux["era5"], keep),
        srtm=_kept(aux["srtm"], keep),
    )


def _kept(values: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    return None if values is None else values[keep]


LONG_S1 = ("S1-SIGMA0-VV", "S1-SIGMA0-VH")  # Presto's order: VV, VH
LONG_METEO = ("AGERA5-TMEAN", "AGERA5-PRECIP")  # Presto's order: temperature, precipitation
LONG_DEM = ("elevation", "slope")


def _long_aux(
    df: pd.DataFrame, sample_ids: np.ndarray, month: np.ndarray, index: dict[str, int], start: np.ndarray, months: int
) -> dict[str, np.ndarray | None]:
    """``s1``, ``era5`` and ``srtm`` of a long extraction (None for a group of columns it lacks), on the same
    ``months``-long windows as the reflectance. Several rows a month (dekads) are combined as the physics asks: S1 as
    the mean in linear power (WorldCereal composites S1 as the mean, openeo preprocessing mean_compositing), the
    temperature as the day-weighted mean, precipitation as the sum over the valid steps divided by their days (m/day).
    Elevation and slope are static: the median over a sample's rows."""
    n = len(index)
    row = np.array([index[s] for s in sample_ids])
    step = month - start[row]
    inside = (step >= 0) & (step < months)
    cell = row * months + step  # one (sample, window month) per value
    out: dict[str, np.ndarray | None] = {"s1": None, "era5": None, "srtm": None}

    def monthly_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
        ok = inside & np.isfinite(values)
        total = np.bincount(cell[ok], weights=(values * weights)[ok], minlength=n * months)
        weight = np.bincount(cell[ok], weights=weights[ok], minlength=n * months)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(weight > 0, total / weight, np.nan).reshape(n, months)

    ones = np.ones(len(df))
    if all(c in df.columns for c in LONG_S1):
        layers = []
        for c in LONG_S1:
            power = 10.0 ** (s1_dn_to_db(df[c].to_numpy()).astype(np.float64) / 10.0)  # NaN stays NaN
            layers.append(10.0 * np.log10(monthly_mean(power, ones)))
        out["s1"] = np.stack(layers, axis=-1).astype(np.float32)
    if all(c in df.columns for c in LONG_METEO):
        days_of_step = step_days(
            df["timestamp"], dekadal=bool(np.isin(pd.to_datetime(df["timestamp"]).dt.day, (11, 21)).any())
        )
        days = days_of_step.astype(np.float64)
        temperature = monthly_mean(tmean_dn_to_kelvin(df[LONG_METEO[0]].to_numpy()), days)
        # sum(precip of the valid steps) / sum(their days): a day-weighted mean of each step's m/day
        precipitation = monthly_mean(precip_dn_to_m(df[LONG_METEO[1]].to_numpy()) / days, days)
        out["era5"] = np.stack([temperature, precipitation], axis=-1).astype(np.float32)
    if all(c in df.columns for c in LONG_DEM):
        static = pd.DataFrame({c: dem_dn(df[c].to_numpy()) for c in LONG_DEM})
        static["row"] = row
        srtm = static.groupby("row")[list(LONG_DEM)].median().reindex(range(n))
        out["srtm"] = srtm.to_numpy(dtype=np.float32)
    return out


def _worldcereal_wide(
    path: Path,
    df: pd.DataFrame,
    legend: Legend,
    bands: Sequence[str],
    months: int,
    mapping: dict[str, str] | None,
) -> Samples:
    by_band_step: dict[tuple[str, int], str] = {}
    for col in df.columns:
        parts = str(col).split("-")
        if len(parts) == 4 and parts[0] == "OPTICAL" and parts[2].startswith("ts"):
            by_band_step[(parts[1], int(parts[2][2:]))] = str(col)
    out = np.full((len(df), months, len(bands)), np.nan, dtype=np.float32)
    for b, band in enumerate(bands):
        if not any((band, t) in by_band_step for t in range(months)):
            raise InputError(path, f"no OPTICAL-{band}-tsN columns")
        for t in range(months):
            column = by_band_step.get((band, t))
            if column is not None:
                out[:, t, b] = _dn_to_reflectance(df[column].to_numpy())
    if "start_date" not in df.columns:
        raise InputError(path, "wide WorldCereal format needs a start_date column (the month of ts0)")
    start = _month_number(pd.to_datetime(df["start_date"]).reset_index(drop=True))
    labels = map_ewoc_codes(df["ewoc_code"].to_numpy(), legend, mapping)
    keep = labels >= 0
    ids = df["sample_id"].astype(str).to_numpy()
    aux = _wide_aux(df, start, months)
    return Samples(
        out[keep],
        tuple(bands),
        (start % 12)[keep],
        df[["lat", "lon"]].to_numpy(dtype=np.float64)[keep],
        labels[keep],
        ids[keep],
        dropped=ewoc_drops(path, ids, df["ewoc_code"].to_numpy(), labels, mapping),
        s1=_kept(aux["s1"], keep),
        era5=_kept(aux["era5"], keep),
        srtm=_kept(aux["srtm"], keep),
    )


# the wide layout's columns, as WorldCereal's own dataset reads them (src/worldcereal/train/datasets.py lines 978-983)
WIDE_S1 = ("SAR-VV-ts{}-20m", "SAR-VH-ts{}-20m")
WIDE_METEO = ("METEO-temperature_mean-ts{}-100m", "METEO-precipitation_flux-ts{}-100m")
WIDE_DEM = ("DEM-alt-20m", "DEM-slo-20m")


def _wide_aux(df: pd.DataFrame, start: np.ndarray, months: int) -> dict[str, np.ndarray | None]:
    """``s1``, ``era5`` and ``srtm`` of a wide extraction (monthly steps ``tsN`` from ``start_date``); None for a
    group of columns it lacks altogether, NaN for a step it lacks."""
    n = len(df)
    out: dict[str, np.ndarray | None] = {"s1": None, "era5": None, "srtm": None}

    def layer(template: str, decode: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        values = np.full((n, months), np.nan)
        for t in range(months):
            column = template.format(t)
            if column in df.columns:
                values[:, t] = decode(df[column].to_numpy())
        return values

    def has(template: str) -> bool:
        return any(template.format(t) in df.columns for t in range(months))

    if all(has(c) for c in WIDE_S1):
        out["s1"] = np.stack([layer(c, s1_dn_to_db) for c in WIDE_S1], axis=-1).astype(np.float32)
    if all(has(c) for c in WIDE_METEO):
        days = days_in_month(start[:, None] + np.arange(months)[None, :])  # each sample's own months
        temperature = layer(WIDE_METEO[0], tmean_dn_to_kelvin)
        precipitation = layer(WIDE_METEO[1], precip_dn_to_m) / days
        out["era5"] = np.stack([temperature, precipitation], axis=-1).astype(np.float32)
    if all(c in df.columns for c in WIDE_DEM):
        out["srtm"] = np.stack([dem_dn(df[c].to_numpy()) for c in WIDE_DEM], axis=-1).astype(np.float32)
    return out


# labels on a cube -----------------------------------------------------------------------------------------------


def samples_at_pixels(
    cube: xr.Dataset,
    rows: np.ndarray,
    cols: np.ndarray,
    labels: np.ndarray,
    sample_ids: np.ndarray,
    anchors: np.ndarray | None = None,
    source: str = "",
    features: np.ndarray | None = None,
) -> Samples:
    """Samples from the cube pixels at (rows, cols); a month that is not valid is NaN. They carry the cube's product
    level (L2A or L1C, from the scenes it was made from); pixels with no valid month are dropped as from ``source``.
    ``features``: the labelled feature of each pixel (default: each pixel its own)."""
    from pyproj import Transformer

    from suelo.composite import cube_grid
    from suelo.ingest.auxiliary import CUBE_VARIABLES
    from suelo.models.artifact import cube_product_level
    from suelo.models.presto_inputs import cube_auxiliary

    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    sel = {"y": xr.DataArray(rows, dims="sample"), "x": xr.DataArray(cols, dims="sample")}
    refl = cube["reflectance"].isel(sel).transpose("sample", "time", "band").values.astype(np.float32)
    if "valid" in cube:
        valid = cube["valid"].isel(sel).transpose("sample", "time").values.astype(bool)
        refl = np.where(valid[..., None], refl, np.float32(np.nan))
    times = cube["time"].values.astype("datetime64[M]").astype(np.int64)
    if len(times) > 1 and not (np.diff(times) == 1).all():
        raise ValueError("the cube's months are not consecutive")
    grid = cube_grid(cube)
    # affine types Affine * (x, y) for one point; it maps arrays of points alike (as here)
    xs, ys = grid.transform * (cols + 0.5, rows + 0.5)  # type: ignore[operator]
    lon, lat = Transformer.from_crs(grid.crs.to_wkt(), "EPSG:4326", always_xy=True).transform(xs, ys)
    latlons = np.stack([lat, lon], axis=-1)
    # Sentinel-1, terrain and weather where the cube holds them (suelo.ingest.auxiliary): the same pixels
    picked = cube.isel(sel)
    extra = cube_auxiliary(picked, tuple(CUBE_VARIABLES), pixel_dims=("sample",))
    return Samples(
        refl,
        tuple(str(b) for b in cube["band"].values),
        np.full(len(rows), int(times[0] % 12)),
        latlons,
        labels,
        sample_ids,
        anchors=latlons if anchors is None else anchors,
        product_level=cube_product_level(cube),
        features=features,  # type: ignore[arg-type]  # None: each pixel its own feature (Samples.__post_init__)
        **extra,  # type: ignore[arg-type]  # the optional s1 / era5 / srtm arrays (keywords of Samples)
    ).drop_empty(source)


def _labels_to_codes(path: Path, values: np.ndarray, legend: Legend) -> np.ndarray:
    codes = np.empty(len(values), dtype=np.int64)
    unknown: set[str] = set()
    for i, v in enumerate(values):
        code = legend.code_for(int(v) if isinstance(v, (np.integer, int, float, np.floating)) else str(v))
        if code is None:
            unknown.add(str(v))
            code = -1
        codes[i] = code
    if unknown:
        raise InputError(path, f"labels not in the legend: {sorted(unknown)[:10]} (legend: {list(legend.names)})")
    return codes


def read_label_vector(path: str | Path) -> gpd.GeoDataFrame:
    """GeoDataFrame of a GeoPackage/GeoJSON/Shapefile/GeoParquet, or a CSV/Parquet with lon/lat columns (WGS84)."""
    import geopandas as gpd

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            df = pd.read_csv(path)
        elif suffix in (".parquet", ".geoparquet"):
            try:
                return gpd.read_parquet(path)
            except (ValueError, KeyError):  # plain parquet without geo metadata
                df = pd.read_parquet(path)
        else:
            gdf = gpd.read_file(path)
            if gdf.crs is None:
                raise InputError(path, "the labels have no CRS")
            return gdf
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot read labels: {exc}") from exc
    lower = {str(c).lower(): c for c in df.columns}
    lon = next((lower[k] for k in ("lon", "longitude", "x") if k in lower), None)
    lat = next((lower[k] for k in ("lat", "latitude", "y") if k in lower), None)
    if lon is None or lat is None:
        raise InputError(path, "a table of labels needs lon and lat columns (WGS84 degrees)")
    return gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df[lon], df[lat]), crs="EPSG:4326")


def sample_vector(
    cube: xr.Dataset, path: str | Path, class_column: str, legend: Legend | None = None, id_column: str | None = None
) -> Samples:
    """Samples from labelled points (the pixel containing each point) and polygons (every pixel whose centre
    falls inside; where polygons overlap, the later feature wins). Labels are reprojected to the cube's CRS."""
    from rasterio.features import rasterize

    from suelo.composite import cube_grid

    path = Path(path)
    legend = load_legend() if legend is None else legend
    gdf = read_label_vector(path)
    if class_column not in gdf.columns:
        raise InputError(path, f"no class column {class_column!r} (columns: {[c for c in gdf.columns][:20]})")
    no_geometry = (gdf.geometry.isna() | gdf.geometry.is_empty).to_numpy()
    unplaced = gdf[no_geometry]
    lost = [
        drop_rows(
            unplaced[id_column].astype(str).to_numpy() if id_column else [str(i) for i in unplaced.index],
            str(path), "no_geometry", unplaced[class_column].to_numpy(),
        )
    ]  # fmt: skip
    gdf = gdf[~no_geometry]
    codes = _labels_to_codes(path, gdf[class_column].to_numpy(), legend)
    ids = gdf[id_column].astype(str).to_numpy() if id_column else np.array([str(i) for i in gdf.index], dtype=object)
    grid = cube_grid(cube)
    projected = gdf.to_crs(grid.crs.to_wkt()).geometry
    kinds = projected.geom_type.to_numpy()
    centroids = gdf.geometry.to_crs("EPSG:4326").representative_point()
    feature_anchor = np.stack([centroids.y.to_numpy(), centroids.x.to_numpy()], axis=-1)

    rows_l, cols_l, feat_l = [], [], []
    is_point = np.isin(kinds, ["Point", "MultiPoint"])
    is_poly = np.isin(kinds, ["Polygon", "MultiPolygon"])
    if (~is_point & ~is_poly).any():
        raise InputError(
            path, f"only points and polygons can label pixels, found {sorted(set(kinds[~is_point & ~is_poly]))}"
        )
    for i in np.flatnonzero(is_point):
        for pt in getattr(projected.iloc[i], "geoms", [projected.iloc[i]]):
            col, row = ~grid.transform * (pt.x, pt.y)
            r, c = math.floor(row), math.floor(col)
            if 0 <= r < grid.height and 0 <= c < grid.width:
                rows_l.append(r)
                cols_l.append(c)
                feat_l.append(i)
    poly_idx = np.flatnonzero(is_poly)
    if len(poly_idx):
        burned = rasterize(
            ((projected.iloc[i], k + 1) for k, i in enumerate(poly_idx)),
            out_shape=grid.shape,
            transform=grid.transform,
            fill=0,
            all_touched=False,  # pixel centre inside the polygon
            dtype="int32",
        )
        r, c = np.nonzero(burned)
        rows_l.extend(r.tolist())
        cols_l.extend(c.tolist())
        feat_l.extend(poly_idx[burned[r, c] - 1].tolist())
    if not rows_l:
        raise InputError(path, "no labelled pixel falls on the cube")
    rows, cols, feat = np.array(rows_l), np.array(cols_l), np.array(feat_l)
    # features that gave no pixel: off the cube altogether, or (polygons) on it but holding no pixel centre
    missed = np.setdiff1d(np.arange(len(gdf)), feat)
    if len(missed):
        from shapely.geometry import box

        on_cube = projected.iloc[missed].intersects(box(*grid.bounds)).to_numpy()
        labels = gdf[class_column].to_numpy()
        for reason, which in (("outside_cube", missed[~on_cube]), ("no_pixel", missed[on_cube])):
            lost.append(drop_rows(ids[which], str(path), reason, labels[which]))
    sample_ids = np.array([f"{ids[f]}@{r},{c}" for f, r, c in zip(feat, rows, cols, strict=False)], dtype=object)
    # the pixels of one polygon share its feature (file and row), so training can cap pixels per polygon; a point's
    # pixel is its own feature, so points are never reduced by that cap (suelo.sampling.cap_samples)
    features = np.array(
        [
            f"{path.name}#{f}" if is_poly[f] else f"{path.name}#{f}@{r},{c}"
            for f, r, c in zip(feat, rows, cols, strict=True)
        ],
        dtype=object,
    )
    samples = samples_at_pixels(
        cube, rows, cols, codes[feat], sample_ids, anchors=feature_anchor[feat], source=str(path), features=features
    )
    samples.dropped = dropped_table(*lost, samples.dropped)
    return samples


def sample_raster(cube: xr.Dataset, path: str | Path, legend: Legend | None = None) -> Samples:
    """Samples from a label raster, reprojected onto the cube grid with nearest neighbour; nodata is skipped."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    from suelo.composite import cube_grid

    path = Path(path)
    legend = load_legend() if legend is None else legend
    grid = cube_grid(cube)
    try:
        with rasterio.open(path) as src:
            data = src.read(1).astype(np.float64)
            nodata = src.nodata
            src_transform, src_crs = src.transform, src.crs
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(path, f"cannot read label raster: {exc}") from exc
    if src_crs is None:
        raise InputError(path, "the label raster has no CRS")
    if nodata is not None:
        data[data == nodata] = np.nan
    dest = np.full(grid.shape, np.nan, dtype=np.float64)
    reproject(
        data,
        dest,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=Resampling.nearest,
    )
    rows, cols = np.nonzero(np.isfinite(dest))
    if not len(rows):
        raise InputError(path, "no labelled pixel falls on the cube")
    codes = _labels_to_codes(path, dest[rows, cols].astype(np.int64), legend)
    ids = np.array([f"{path.stem}@{r},{c}" for r, c in zip(rows, cols, strict=False)], dtype=object)
    return samples_at_pixels(cube, rows, cols, codes, ids, source=str(path))


def load_samples(
    paths: Sequence[str | Path],
    legend: Legend | None = None,
    cube: xr.Dataset | None = None,
    class_column: str | None = None,
    bands: Sequence[str] = WORLDCEREAL_BANDS,
) -> Samples:
    """Samples from several files: WorldCereal parquet extractions need nothing else; vector labels need ``cube``
    and ``class_column``; label rasters (.tif) need ``cube``."""
    legend = load_legend() if legend is None else legend
    parts = []
    for p in map(Path, paths):
        from suelo.sample_formats import check_sample_file

        check_sample_file(p, cube is not None, class_column)  # names what the file is and what it lacks
        suffix = p.suffix.lower()
        if suffix in (".tif", ".tiff"):
            if cube is None:
                raise InputError(p, "a label raster is sampled from a cube: give --cube")
            parts.append(sample_raster(cube, p, legend).select_bands(bands))
            continue
        if suffix in (".parquet", ".geoparquet"):
            import pyarrow.parquet as pq

            try:
                names = set(pq.read_schema(p).names)
            except Exception as exc:
                raise InputError(p, f"cannot read parquet: {exc}") from exc
            if "ewoc_code" in names:
                parts.append(load_worldcereal(p, legend, bands))
                continue
        if cube is None or class_column is None:
            raise InputError(p, "labelled points/polygons are sampled from a cube: give --cube and --class-column")
        parts.append(sample_vector(cube, p, class_column, legend).select_bands(bands))
    return Samples.concat(parts)
