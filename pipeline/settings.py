"""Typed, frozen, validated settings, loaded from one YAML job spec whose keys mirror these classes.

Every field has the default the code uses, so ``JobSpec.model_validate({...})`` with a partial mapping gives the
same run as the YAML file. Relative paths in a job file are resolved against the file's own folder.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import stat
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from suelo.band_names import canonical_band
from suelo.errors import ConfigError, file_kind

#: Sentinel-2 spectral bands by their canonical names, with native resolution in metres.
S2_BAND_RESOLUTION: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20,
}  # fmt: skip
#: The ten bands the Presto encoder takes (B01, B09, B10 are atmospheric bands it never uses).
DEFAULT_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: SCL classes masked by default: no data, saturated/defective, cloud shadow, cloud medium/high probability, cirrus.
DEFAULT_SCL_MASK: tuple[int, ...] = (0, 1, 3, 8, 9, 10)
SCL_SNOW = 11


class Settings(BaseModel):
    """Base of all settings: immutable, unknown keys are errors (a typo must not silently become a default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # A NUL byte cannot be in a path or name; left in, it surfaces later as a ValueError from os calls.
        if isinstance(data, dict):
            for key, value in data.items():
                values = value if isinstance(value, (list, tuple)) else [value]
                if any(isinstance(v, (str, os.PathLike)) and "\0" in str(v) for v in values):
                    raise ValueError(f"{key}: contains a NUL character")
        return data


#: The ``product_level`` of STAC inputs (files and APIs read items alike).
ItemLevel = Annotated[
    Literal["L2A", "L1C"] | None,
    Field(
        description="processing level of the items when their metadata does not say it (processing:level, "
        "s2:product_type, collection or product name); checked against what it does say",
    ),
]


class SafeInput(Settings):
    """SAFE products: ``.SAFE`` folders or the ``.zip`` files Copernicus serves, or folders holding them."""

    kind: Literal["safe"] = Field("safe", description="selects this input kind")
    paths: tuple[Path, ...] = Field(min_length=1, description="SAFE folders/zips, or folders searched for them")


class StacInput(Settings):
    """STAC Items or ItemCollections (JSON files) whose assets are COGs; hrefs may be local paths or URLs."""

    kind: Literal["stac"] = Field("stac", description="selects this input kind")
    paths: tuple[Path, ...] = Field(min_length=1, description="Item or ItemCollection JSON files")
    product_level: ItemLevel = None


#: Default ``file_pattern`` of the ``band_files`` layout: the scene (everything before the band, holding the first
#: date), the band and an optional ``_10m`` before the suffix. It reads BigEarthNet
#: (``S2A_MSIL2A_20170613T101031_0_45_B02.tif``), SAFE IMG_DATA (``T31UFS_20210612T104619_B02_10m.jp2``,
#: ``..._SCL_20m.jp2``) and Earth Engine per-band exports (``20210612T104619_20210612T104837_T31UFS_B2.tif``).
DEFAULT_FILE_PATTERN = (
    r"^(?P<scene>.*?(?P<year>(?:19|20)\d{2})-?(?P<month>[01]\d)-?(?P<day>[0-3]\d).*?)"
    r"[_.-](?P<band>(?i:B\d{1,2}A?|SCL))(?:_\d{2}m)?\.(?i:tiff?|jp2)$"
)


class GeoTiffInput(Settings):
    """GeoTIFF / JPEG 2000 files without Sentinel-2 metadata, in one of three layouts (README: GeoTIFF layouts).

    ``file_per_date``: one multi-band file per acquisition; ``band_files``: one file per band, grouped into
    acquisitions by ``file_pattern``; ``stack``: one file holding several dates x bands. What the files do not say
    themselves (band names, date, processing level, radiometry) comes from here; nothing is guessed from pixels.
    """

    kind: Literal["geotiff"] = Field("geotiff", description="selects this input kind")
    paths: tuple[Path, ...] = Field(
        min_length=1,
        description="files, or folders of *.tif / *.tiff / *.jp2 (band_files: their subfolders too, 5 levels deep)",
    )
    layout: Literal["file_per_date", "band_files", "stack"] = Field(
        "file_per_date",
        description="file_per_date: one multi-band file per date; band_files: one file per band, grouped by "
        "file_pattern; stack: one file of dates x bands",
    )
    bands: tuple[str | None, ...] | None = Field(
        None,
        description="file_per_date: the band of each file band, null to ignore one (default: the band "
        "descriptions); stack with band_order: the bands of one date in file order; band_files: take only these "
        "(and SCL). Names like B2, b02, B8A, SCL",
    )
    date_pattern: str = Field(
        r"(?P<year>\d{4})-?(?P<month>\d{2})-?(?P<day>\d{2})",
        description="regex with year/month/day groups applied to the file name to find the acquisition date",
    )
    date: dt.date | None = Field(
        None, description="acquisition date of files whose name and metadata hold none (not for stack)"
    )
    file_pattern: str = Field(
        DEFAULT_FILE_PATTERN,
        description="band_files: regex on the file name with group band, optionally scene and year/month/day "
        "(else the date comes as for any file); the default reads BigEarthNet, SAFE IMG_DATA and GEE names",
    )
    description_pattern: str | None = Field(
        None,
        description="stack: regex on each band description with group band and year/month/day or step; default:"
        " B2_3, 0_B2, B2_20210115 and 20210115..._B2",
    )
    dates: tuple[dt.date, ...] | None = Field(
        None, description="stack: the date of each time step (steps in numeric order, or file order)"
    )
    band_order: Literal["date_major", "band_major"] | None = Field(
        None,
        description="stack without band descriptions: date_major = all bands of the first date, then the next "
        "(GEE toBands); band_major = all dates of the first band, then the next; needs bands and dates",
    )
    product_level: Literal["L2A", "L1C"] | None = Field(
        None,
        description="processing level when neither the file names nor their metadata say it (else it must agree); "
        "L1C needs ingest.allow_l1c",
    )
    processing_baseline: str | None = Field(
        None, description="e.g. '04.00'; decides the offset (-1000 from 04.00 on) unless add_offset is given"
    )
    add_offset: float | None = Field(None, description="DN offset added before dividing by the quantification")
    quantification: float = Field(10000.0, gt=0, description="reflectance = (DN + offset) / quantification")
    nodata: float | None = Field(0, description="DN meaning 'no data'")

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, bands: tuple[str | None, ...] | None) -> tuple[str | None, ...] | None:
        if bands is None:
            return None
        named = [b for b in bands if b is not None]
        if not named:
            raise ValueError("bands names no band (null entries only ignore file bands)")
        unknown = [b for b in named if canonical_band(b) is None]
        if unknown:
            raise ValueError(f"unknown band names {unknown}; use {sorted(S2_BAND_RESOLUTION)} (or B2, B8A) or SCL")
        canonical = tuple(None if b is None else canonical_band(b) for b in bands)
        if len(set(named)) != len(named) or len({b for b in canonical if b}) != len(named):
            raise ValueError(f"duplicate band names in {list(bands)}")
        return canonical

    @model_validator(mode="after")
    def _layout_fields(self) -> GeoTiffInput:
        # A field the chosen layout does not read must not be silently ignored: the user meant something by it.
        given = self.model_fields_set
        only = {"file_pattern": "band_files", "description_pattern": "stack", "dates": "stack", "band_order": "stack"}
        for name, layout in only.items():
            if name in given and getattr(self, name) is not None and self.layout != layout:
                raise ValueError(f"{name} is for layout: {layout} (this input is layout: {self.layout})")
        if self.layout == "stack" and self.date is not None:
            raise ValueError("a stack holds several dates: give dates (one per time step), not date")
        if self.layout == "band_files" and self.bands is not None and None in self.bands:
            raise ValueError("band_files: bands lists the bands to take; null entries mean nothing there")
        spec_mapping = (self.bands, self.band_order)
        if self.layout == "stack" and spec_mapping != (None, None) and (None in spec_mapping or not self.dates):
            raise ValueError("a stack without band descriptions needs bands, dates and band_order together")
        return self

    @model_validator(mode="after")
    def _radiometry_known(self) -> GeoTiffInput:
        # Only checked here when the level is stated; a level found in the files is checked at discovery.
        if self.product_level == "L2A" and self.processing_baseline is None and self.add_offset is None:
            raise ValueError(
                "give processing_baseline (e.g. '04.00') or add_offset (e.g. -1000 or 0): "
                "the L2A radiometric offset cannot be guessed"
            )
        return self


class StacApiInput(Settings):
    """A STAC API (``/search``): items of ``collections`` intersecting the AOI/tiles within the period."""

    kind: Literal["stac_api"] = Field("stac_api", description="selects this input kind")
    url: str = Field(pattern=r"^https?://", description="API root, e.g. https://example.org/v1 (POST {url}/search)")
    collections: tuple[str, ...] = Field(min_length=1, description="e.g. [sentinel-2-l2a]")
    max_items: int = Field(10000, ge=1, le=1_000_000, description="stop after this many items (a safety limit)")
    max_cloud_cover: float | None = Field(None, ge=0, le=100, description="filter on eo:cloud_cover (%)")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="seconds to wait for each API answer")
    product_level: ItemLevel = None


class Sentinel1Input(Settings):
    """Analysis-ready Sentinel-1 backscatter (VV, VH): terrain-corrected gamma0 (RTC) or sigma0, from STAC Items /
    ItemCollections (e.g. ``sentinel-1-rtc`` / ``sentinel-1-grd`` collections with ``vv``/``vh`` assets) or
    GeoTIFF/COG files. Raw GRD SAFE products (not calibrated, not terrain-corrected) are refused with a message.

    The unit (linear power or dB) is read from the metadata; ``unit`` declares it where the metadata is silent and
    is checked against what it says. Months are composited as the mean in linear power, then converted to dB."""

    kind: Literal["sentinel1"] = Field("sentinel1", description="selects this input kind")
    paths: tuple[Path, ...] = Field(
        min_length=1, description="STAC Item/ItemCollection JSON files, GeoTIFF/COG files, or folders of them"
    )
    unit: Literal["linear", "db"] | None = Field(
        None, description="backscatter unit when the metadata does not say it (linear power or dB)"
    )
    orbit: Literal["ascending", "descending"] | None = Field(
        None, description="only acquisitions of this orbit direction (default: both)"
    )
    bands: tuple[str, ...] | None = Field(
        None, description="GeoTIFF files without band descriptions: the polarization of each band, e.g. [VV, VH]"
    )


class DemInput(Settings):
    """A digital elevation model (metres above the geoid or ellipsoid): GeoTIFF/COG tiles (e.g. Copernicus DEM
    GLO-30), folders of them, or STAC Items with a DEM asset. Mosaicked, put on the job grid; slope is computed in
    the DEM's own CRS (geographic DEMs included) before resampling."""

    kind: Literal["dem"] = Field("dem", description="selects this input kind")
    paths: tuple[Path, ...] = Field(min_length=1, description="DEM GeoTIFF/COG files, folders of them, or STAC JSON")


class WeatherInput(Settings):
    """Monthly 2 m temperature and total precipitation (ERA5, AgERA5) from NetCDF or GeoTIFF files, converted to the
    units Presto was pre-trained on (K; m of water per day). The source units come from the files' ``units``
    attributes, or from here where the files do not say; a declared unit is checked against a stated one."""

    kind: Literal["weather"] = Field("weather", description="selects this input kind")
    paths: tuple[Path, ...] = Field(min_length=1, description="NetCDF or GeoTIFF files, or folders of them")
    temperature: str | None = Field(None, description="variable (NetCDF) or band description of 2 m temperature")
    precipitation: str | None = Field(None, description="variable or band description of total precipitation")
    temperature_unit: Literal["K", "degC"] | None = Field(None, description="when the file does not say")
    precipitation_unit: Literal["m/day", "mm/day", "m/month", "mm/month", "kg m-2 s-1"] | None = Field(
        None, description="when the file does not say: per day (ERA5 monthly means), per month (AgERA5 sums), ..."
    )


#: Inputs that are not Sentinel-2 scenes: they add variables to the cube (suelo.ingest.auxiliary).
AUXILIARY_KINDS = ("sentinel1", "dem", "weather")

InputSpec = Annotated[
    SafeInput | StacInput | GeoTiffInput | StacApiInput | Sentinel1Input | DemInput | WeatherInput,
    Field(discriminator="kind"),
]


def earth_crs(value: str | None) -> str | None:
    """Refuse a CRS that PROJ cannot parse or that is not of the Earth (a Mars CRS, a unit sphere): the data could
    never be projected onto it. Checked with pyproj, which raises instead of printing PROJ's errors."""
    if value is None:
        return value
    import pyproj

    try:
        crs = pyproj.CRS.from_user_input(value)
        pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    except pyproj.exceptions.CRSError:
        raise ValueError(f"{value!r}: not a CRS PROJ knows") from None
    except pyproj.exceptions.ProjError:
        raise ValueError(f"{value!r}: no transformation from WGS 84 (not an Earth CRS?)") from None
    semi_major = crs.ellipsoid.semi_major_metre if crs.ellipsoid is not None else float("nan")
    if not 6.3e6 < semi_major < 6.4e6:
        raise ValueError(f"{value!r}: not an Earth CRS (ellipsoid semi-major axis {semi_major:g} m)")
    return value


class AoiSpec(Settings):
    """Area of interest: a vector file (GeoJSON, GeoPackage, ...) or a bbox in any CRS."""

    file: Path | None = Field(None, description="vector file (GeoJSON, GeoPackage, ...); all its features")
    bbox: tuple[float, float, float, float] | None = Field(None, description="left, bottom, right, top")
    crs: str = Field("EPSG:4326", description="CRS of bbox (a file carries its own)")

    _earth = field_validator("crs")(classmethod(lambda cls, v: earth_crs(v)))

    @model_validator(mode="after")
    def _one_of(self) -> AoiSpec:
        if (self.file is None) == (self.bbox is None):
            raise ValueError("give exactly one of aoi.file or aoi.bbox")
        if self.bbox is not None and not all(math.isfinite(v) for v in self.bbox):
            raise ValueError(f"aoi.bbox must be finite numbers: {self.bbox}")
        if self.bbox is not None and not (self.bbox[2] > self.bbox[0] and self.bbox[3] > self.bbox[1]):
            raise ValueError(
                f"aoi.bbox must be left, bottom, right, top with right > left and top > bottom: {self.bbox}"
            )
        return self


class GridSpec(Settings):
    """Output grid. Without an AOI the grid is the extent of the first input scene (a tile)."""

    crs: str | None = Field(None, description="e.g. EPSG:32631; default: UTM zone of the AOI centroid")
    resolution: float = Field(10.0, gt=0, le=10000)

    _earth = field_validator("crs")(classmethod(lambda cls, v: earth_crs(v)))


#: The environment variable that sets "today" for relative periods (``period.last_months``, ``previous_year``):
#: an ISO date, e.g. ``SUELO_TODAY=2026-12-01``, to redo a scheduled run of another day or to test one. Read only by
#: :func:`period_today`.
TODAY_VARIABLE = "SUELO_TODAY"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PERIOD_FORMS = "give the period as start and end dates, last_months: N or previous_year: true (exactly one of them)"


def period_today() -> dt.date:
    """The day relative periods are resolved against: ``$SUELO_TODAY`` (YYYY-MM-DD) if set, else the local date."""
    text = os.environ.get(TODAY_VARIABLE, "").strip()
    if not text:
        return dt.date.today()
    try:
        if not _ISO_DATE.fullmatch(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{TODAY_VARIABLE}={text!r}: not a date YYYY-MM-DD") from None


def _month_offset(year: int, month: int, offset: int) -> tuple[int, int]:
    """The calendar month ``offset`` months after (before, when negative) ``year``-``month``."""
    index = year * 12 + (month - 1) + offset
    return index // 12, index % 12 + 1


class PeriodSpec(Settings):
    """Months to composite: whole months from ``start`` to ``end``, or relative to today (scheduled runs).

    Either fixed dates (``start``, ``end``) or a period relative to today, for scheduled runs: ``last_months: N``
    (the N complete calendar months before today's month) or ``previous_year: true`` (the previous calendar year).
    A relative period is resolved when the spec is validated, against :func:`period_today` (``$SUELO_TODAY`` or the
    local date) or a ``today`` date in the validation context (``PeriodSpec.model_validate(data, context={"today":
    day})``); from then on ``start`` and ``end`` are concrete dates like fixed ones. The relative fields are not
    serialized: run.json, the digests and every dump record the resolved dates, so a relative spec and the fixed
    spec it resolved to are the same job.
    """

    start: dt.date = Field(
        description="first day; its whole calendar month is composited",
        json_schema_extra={"reference_default": "**required** unless last_months or previous_year"},
    )
    end: dt.date = Field(
        description="last day; its whole calendar month is composited",
        json_schema_extra={"reference_default": "**required** unless last_months or previous_year"},
    )
    step: Literal["month"] = Field("month", description="compositing period; calendar months (Presto's time step)")
    last_months: int | None = Field(
        None,
        ge=1,
        le=120,
        exclude=True,
        description="instead of start/end: the last N complete calendar months before today (SUELO_TODAY=YYYY-MM-DD"
        " sets today), e.g. 12 on 2024-03-05 is 2023-03-01 .. 2024-02-29",
    )
    previous_year: bool = Field(
        False,
        exclude=True,
        description="instead of start/end: the calendar year before today's (SUELO_TODAY=YYYY-MM-DD sets today)",
    )

    @model_validator(mode="before")
    @classmethod
    def _resolve_relative(cls, data: Any, info: ValidationInfo) -> Any:
        """Exactly one form; a relative one becomes concrete ``start``/``end`` dates against today."""
        if not isinstance(data, dict):
            return data
        months, previous = data.get("last_months"), data.get("previous_year", False)
        if months is not None and (isinstance(months, bool) or not isinstance(months, int)):
            raise ValueError(f"period.last_months must be a whole number of months (1 to 120), got {months!r}")
        if not isinstance(previous, bool):
            raise ValueError(f"period.previous_year must be true or false, got {previous!r}")
        forms = [
            name
            for name, given in (
                ("start/end", "start" in data or "end" in data),
                ("last_months", months is not None),
                ("previous_year", previous),
            )
            if given
        ]
        if len(forms) != 1:
            unknown = sorted(str(key) for key in data if key not in cls.model_fields)
            typo = f" (unknown keys: {', '.join(unknown)})" if unknown else ""
            raise ValueError(f"{_PERIOD_FORMS}; got {' and '.join(forms) if forms else 'none'}{typo}")
        if forms == ["start/end"]:
            return data
        if months is not None and not 1 <= months <= 120:
            raise ValueError(f"period.last_months must be 1 to 120, got {months}")
        context = info.context if isinstance(info.context, dict) else {}
        today = context.get("today") or period_today()
        if months is not None:
            last = _month_offset(today.year, today.month, -1)
            first = _month_offset(*last, -(months - 1))
        else:
            first, last = (today.year - 1, 1), (today.year - 1, 12)
        after_last = _month_offset(*last, 1)
        end = dt.date(after_last[0], after_last[1], 1) - dt.timedelta(days=1)
        return {**data, "start": dt.date(first[0], first[1], 1), "end": end}

    @model_validator(mode="after")
    def _ordered(self) -> PeriodSpec:
        if self.end < self.start:
            raise ValueError(f"period.end {self.end} is before period.start {self.start}")
        if self.months > 120:
            raise ValueError(f"period spans {self.months} months; at most 120 are supported")
        return self

    @property
    def months(self) -> int:
        """How many calendar months the period holds."""
        return (self.end.year - self.start.year) * 12 + self.end.month - self.start.month + 1

    @property
    def label(self) -> str:
        """The period's months as a file-name part, ``YYYY-MM_YYYY-MM`` (first and last month)."""
        return f"{self.start:%Y-%m}_{self.end:%Y-%m}"

    def describe(self) -> str:
        """``start .. end``, with the relative rule it was resolved from, if any."""
        if self.last_months is not None:
            return f"{self.start} .. {self.end} (last_months: {self.last_months})"
        if self.previous_year:
            return f"{self.start} .. {self.end} (previous_year)"
        return f"{self.start} .. {self.end}"

    @classmethod
    def from_option(cls, text: str) -> dict[str, Any]:
        """The period mapping of a ``--period`` value, checked: ``START:END`` (ISO dates, e.g.
        ``2024-01-01:2024-12-31``), ``last-N-months`` or ``previous-year``. A bad value is one ConfigError."""
        data: dict[str, Any]
        dates = re.fullmatch(r"(\d{4}-\d{2}-\d{2}):(\d{4}-\d{2}-\d{2})", text)
        relative = re.fullmatch(r"last-([1-9][0-9]*)-months", text)
        if dates:
            data = {"start": dates.group(1), "end": dates.group(2)}
        elif relative:
            data = {"last_months": int(relative.group(1))}
        elif text == "previous-year":
            data = {"previous_year": True}
        else:
            raise ConfigError(
                f"--period {text!r}: expected START:END (e.g. 2024-01-01:2024-12-31), last-N-months (e.g. "
                "last-3-months) or previous-year"
            )
        try:
            cls.model_validate(data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                message = str(err["msg"]).removeprefix("Value error, ")
                problems.append(f"period.{where}: {message}" if where else message)
            raise ConfigError(f"--period {text!r}: {'; '.join(problems)}") from None
        return data


class MaskingSpec(Settings):
    """Cloud/shadow masking from the Sentinel-2 scene classification layer (SCL)."""

    scl_classes: tuple[int, ...] = Field(DEFAULT_SCL_MASK, description="SCL classes treated as not clear")
    mask_snow: bool = Field(False, description="also mask SCL class 11 (snow/ice)")
    require_scl: bool = Field(
        True,
        description="a scene without SCL is an error; set false only for inputs that are already cloud-masked",
    )

    @field_validator("scl_classes")
    @classmethod
    def _scl_range(cls, classes: tuple[int, ...]) -> tuple[int, ...]:
        bad = [c for c in classes if not 0 <= c <= 11]
        if bad:
            raise ValueError(f"SCL classes are 0..11, got {bad}")
        return classes

    @property
    def masked_classes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.scl_classes) | ({SCL_SNOW} if self.mask_snow else set())))


class IngestSpec(Settings):
    """How scenes become the monthly cube: bands, resampling, levels accepted, masking."""

    bands: tuple[str, ...] = Field(
        DEFAULT_BANDS, description="spectral bands of the cube (the encoder masks absent ones)"
    )
    resampling: Literal["bilinear", "nearest", "cubic", "average"] = Field(
        "bilinear", description="resampling of reflectance onto the grid (SCL always uses nearest)"
    )
    allow_l1c: bool = Field(False, description="accept Level-1C input (top-of-atmosphere; no SCL)")
    masking: MaskingSpec = Field(MaskingSpec(), description="cloud/shadow masking from the SCL layer")

    @field_validator("bands")
    @classmethod
    def _spectral(cls, bands: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [b for b in bands if b not in S2_BAND_RESOLUTION]
        if unknown or not bands or len(set(bands)) != len(bands):
            raise ValueError(f"bands must be distinct names from {sorted(S2_BAND_RESOLUTION)}, got {list(bands)}")
        return bands


class ComputeSpec(Settings):
    """Where and how blocks run: in this process, on a local Dask cluster, or on an existing Dask scheduler."""

    block_size: int = Field(512, ge=16, le=8192, description="pixels per block side")
    workers: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="local worker processes; default: cores, at most 4 (3 with the urban-atlas product), which keeps"
        " a run under 4 GB with 512 px blocks",
    )
    threads_per_worker: int = Field(1, ge=1, le=256, description="threads per worker (reading and torch)")
    scheduler: str | None = Field(
        None,
        pattern=r"^(local|synchronous|(tcp|tls|ucx|inproc)://.+)$",
        description="local (LocalCluster, the default), synchronous (this process), or a Dask scheduler address",
    )
    gpus: int = Field(0, ge=0, le=64, description="local GPU workers, one GPU each (needs device cuda)")
    retries: int = Field(2, ge=0, le=100, description="retries of a failed block before it is reported as failed")
    device: str | None = Field(
        None, pattern=r"^(cpu|cuda(:\d+)?|mps)$", description="torch device; default: cuda if present"
    )
    batch_size: int | None = Field(None, ge=1, le=1_048_576, description="pixels per encoder batch; default by device")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="encoder precision: auto is bf16 autocast on GPU and fp32 on CPU; bf16 on a CPU with AVX512-bf16"
        " ran 1.6-1.9x fp32 and kept 99.7% of the sample's classes (thresholds were certified in fp32)",
    )


class ConfidenceSpec(Settings):
    """Which pixels a product maps: those whose calibrated confidence reaches a certified accuracy (or a threshold)."""

    target_accuracy: float | None = Field(
        None, gt=0, lt=1, description="certify this accuracy of the mapped pixels; default: the model's own target"
    )
    delta: float = Field(0.05, gt=0, lt=1, description="risk that the certified accuracy does not hold")
    threshold: float | None = Field(None, ge=0, le=1, description="a fixed confidence threshold instead of a target")
    min_clear_observations: int = Field(
        1, ge=0, le=10000, description="fewer clear observations: the 'too few observations' reason code"
    )
    accept_empty_map: bool = Field(
        False,
        description="run even when the target cannot be certified (the map is then all 'unclassified'); "
        "otherwise such a run stops before any work",
    )
    allow_fewer_months: bool = Field(
        False,
        description="run the model on a period shorter than the season it was trained on (Presto's encoder takes "
        "the months there are); its calibration and certificate were fitted on the full season and do not hold, "
        "which the run report says, with what the model card measured (benchmarks/FEWER_MONTHS.md)",
    )

    mask_missing_inputs: bool = Field(
        False,
        description="run a model trained with Sentinel-1, terrain or weather on a job without them: the encoder "
        "sees them masked; its calibration and certificate were fitted with them and do not hold, which the run "
        "report says, with what the model card measured masking to cost",
    )

    @model_validator(mode="after")
    def _one_rule(self) -> ConfidenceSpec:
        if self.threshold is not None and self.target_accuracy is not None:
            raise ValueError("give target_accuracy or threshold, not both")
        return self


class AssessmentSpec(Settings):
    """A labelled probability sample of the map (``suelo assess design``, then labelled): the run adds the
    stratified accuracy and area estimates (``suelo assess analyze``) to its report."""

    sample: Path = Field(description="GeoPackage or CSV of the labelled sample (as suelo assess design writes it)")
    reference_column: str = Field("reference", min_length=1, description="column of the reference labels")
    legend: Path | None = Field(
        None, description="legend whose classes reference labels may also name (classes the model does not map)"
    )
    strata: Path | None = Field(None, description="raster of the strata the sample was drawn from, on the map's grid")
    fpc: bool = Field(False, description="apply the finite population correction (Olofsson et al. leave it out)")


class ProductSpec(ConfidenceSpec):
    """What every product's settings have besides the confidence rule: an optional accuracy assessment."""

    assessment: AssessmentSpec | None = Field(
        None, description="a labelled reference sample of this product's map, assessed in the run report"
    )


class LandcoverSpec(ProductSpec):
    """The land-cover map: model, and which pixels are confident enough to be mapped."""

    enabled: bool = Field(True, description="make the land-cover map")
    model: Path | None = Field(None, description="model artifact; default: the shipped models/landcover_default.pt")
    score: Literal["top1", "margin"] | None = Field(None, description="confidence score; default: the model's")
    per_class: bool = Field(False, description="certify each class's precision (needs target_accuracy)")

    @model_validator(mode="after")
    def _per_class_needs_target(self) -> LandcoverSpec:
        if self.per_class and self.target_accuracy is None:
            raise ValueError("per_class thresholds are chosen for a target_accuracy; give one")
        return self


class UrbanAtlasSpec(ProductSpec):
    """The urban-atlas map: CNN segmenter on cube summaries + Presto embeddings, MMU sieve, vector polygons."""

    enabled: bool = Field(False, description="make the urban-atlas map (raster and polygons)")
    model: Path | None = Field(None, description="segmenter file; default: the shipped models/segmenter_default.pt")
    minimum_mapping_unit: bool = Field(True, description="sieve patches below 0.25 ha (urban) / 1 ha (other)")
    vector_crs: str = Field("EPSG:3035", description="CRS of the GeoPackage polygons (Urban Atlas uses EPSG:3035)")
    window: int = Field(256, ge=32, le=4096, description="segmenter window in pixels")
    overlap: int = Field(64, ge=0, le=1024, description="overlap of neighbouring windows, blended")

    @model_validator(mode="after")
    def _window(self) -> UrbanAtlasSpec:
        if self.overlap >= self.window:
            raise ValueError("overlap must be smaller than window")
        return self


class ProductsSpec(Settings):
    """The maps to make from the cube."""

    landcover: LandcoverSpec = LandcoverSpec()
    urban_atlas: UrbanAtlasSpec = UrbanAtlasSpec()


class OutputSpec(Settings):
    """Where the outputs go."""

    dir: Path = Field(Path("out"), description="output folder (relative to the job file)")
    cube: bool = Field(True, description="also write the whole monthly cube (NetCDF); off for large regions")
    cache_composites: bool = Field(
        False,
        description="keep each block's monthly composite (lossless NetCDF under <dir>/cache/): a re-run with other "
        "models or thresholds then skips decoding and compositing the inputs",
    )


#: A remote host name or a ``.suffix`` of host names (lower case letters, digits, ``-``, ``_``, dots); s3: a bucket.
_HOST_PATTERN = re.compile(r"^\.?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


class AccessSpec(Settings):
    """Which local folders and remote hosts inputs may be read from (README: "Guarantees and limits").

    Local files (STAC hrefs, files found in input folders) must resolve, symlinks followed, under the job file's
    folder, the folder of the STAC file naming them, an input's own ``paths`` or ``input_roots``; remote hrefs
    must be http(s) or s3 URLs, on ``remote_hosts`` when that list is given.
    """

    input_roots: tuple[Path, ...] = Field(
        (), description="more folders local inputs may lie in (relative to the job file), e.g. a shared data disk"
    )
    remote_hosts: tuple[str, ...] = Field(
        (),
        description="if given, the only remote hosts (STAC API URLs and http(s) hrefs; s3 hrefs: bucket names): exact"
        " names, or '.example.org' for any host under example.org; empty: any host, unless allow_any_remote_host"
        " is false",
    )
    allow_any_remote_host: bool = Field(
        True, description="with remote_hosts empty: true accepts any http(s)/s3 host; false refuses every remote input"
    )

    @field_validator("remote_hosts")
    @classmethod
    def _host_names(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(h.strip().lower() for h in hosts)
        bad = [h for h in cleaned if not _HOST_PATTERN.match(h)]
        if bad:
            raise ValueError(f"host names only (no scheme, port or path), e.g. data.example.org or .example.org: {bad}")
        return cleaned

    @model_validator(mode="after")
    def _one_rule(self) -> AccessSpec:
        if self.remote_hosts and self.allow_any_remote_host and "allow_any_remote_host" in self.model_fields_set:
            raise ValueError("give remote_hosts or allow_any_remote_host: true, not both")
        return self


#: ``cost.country_iso_code`` of the world average: the World Bank's ISO 3166 user-assigned code for the world, which
#: codecarbon has no grid mix for and so prices at its world average (475 g CO2e/kWh, IEA).
WORLD = "WLD"


@cache
def codecarbon_countries() -> dict[str, str]:
    """ISO 3166 alpha-3 code -> country name of every country codecarbon has a grid mix for, read from its data file
    without importing codecarbon (the job spec is checked on every command; the import takes a tenth of a second).
    Empty when the file is not where codecarbon 2.8 to 3.x keep it: the spec then checks the code's form only."""
    try:
        spec = find_spec("codecarbon")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            return {}
        path = Path(locations[0]) / "data" / "private_infra" / "global_energy_mix.json"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ImportError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(code): str(entry.get("country_name", code)) for code, entry in data.items() if isinstance(entry, dict)}


class CostSpec(Settings):
    """How a run's emissions are counted (suelo.cost); the energy itself is measured, not set.

    In no digest: a run whose outputs are current is not redone because its carbon intensity changed."""

    carbon_intensity_g_per_kwh: float | None = Field(
        None, gt=0, le=2000, description="g CO2e per kWh of the electricity used; default: the country's grid mix"
    )
    country_iso_code: str = Field(
        WORLD,
        pattern=r"^[A-Za-z]{3}$",
        description="ISO 3166 alpha-3 country of the machine (e.g. BEL), for codecarbon's grid mix; WLD: its world "
        "average (475 g/kWh)",
    )

    @field_validator("country_iso_code")
    @classmethod
    def _known_country(cls, code: str) -> str:
        code = code.upper()
        known = codecarbon_countries()  # empty if codecarbon's data file cannot be read: then the form is checked
        if known and code != WORLD and code not in known:
            raise ValueError(
                f"codecarbon has no grid mix for {code!r}: give an ISO 3166 alpha-3 code such as BEL, DEU or USA, "
                f"or {WORLD} for the world average"
            )
        return code


class JobSpec(Settings):
    """One job: what to read, where, when, and where to write."""

    name: str = Field("suelo", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="names the output maps")
    inputs: tuple[InputSpec, ...] = Field(min_length=1, description="one or more inputs, any mix of kinds")
    aoi: AoiSpec | None = Field(None, description="area to map; default: the tiles, else the first scene's tile")
    tiles: tuple[str, ...] = Field(
        (), description="MGRS tiles to process, e.g. [31UFS, 31UGS]: only their scenes; the grid covers them all"
    )
    grid: GridSpec = GridSpec()
    period: PeriodSpec
    ingest: IngestSpec = IngestSpec()
    compute: ComputeSpec = ComputeSpec()
    products: ProductsSpec = ProductsSpec()
    output: OutputSpec = OutputSpec()
    access: AccessSpec = AccessSpec()
    cost: CostSpec = CostSpec()
    # The job file's folder (set by load_job): local inputs may lie under it. None for a spec built in code.
    _folder: Path | None = PrivateAttr(None)

    @property
    def folder(self) -> Path | None:
        """The folder of the job file this spec was loaded from (None when built in code)."""
        return self._folder

    @field_validator("inputs")
    @classmethod
    def _some_optical(cls, inputs: tuple[InputSpec, ...]) -> tuple[InputSpec, ...]:
        if all(spec.kind in AUXILIARY_KINDS for spec in inputs):
            raise ValueError("at least one Sentinel-2 input (safe, stac, geotiff or stac_api) is needed")
        kinds = [spec.kind for spec in inputs]
        repeated = sorted({k for k in ("dem", "weather") if kinds.count(k) > 1})
        if repeated:
            raise ValueError(f"give one input of kind {repeated[0]} (list its files in its paths)")
        return inputs

    @field_validator("tiles")
    @classmethod
    def _mgrs(cls, tiles: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(t.upper().removeprefix("T") for t in tiles)
        bad = [t for t in cleaned if not re.fullmatch(r"(0[1-9]|[1-5][0-9]|60)[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V]", t)]
        if bad:
            raise ValueError(f"not MGRS tile ids: {bad} (expected e.g. 31UFS)")
        return cleaned


def _resolve_paths(data: Any, base: Path) -> Any:
    """Make the relative paths of a job file relative to the file's folder (keys that name paths only)."""
    if isinstance(data, dict):
        resolved = {}
        for key, value in data.items():
            if key in ("paths", "input_roots") and isinstance(value, list):
                resolved[key] = [_absolute(v, base) for v in value]
            elif key in ("file", "dir", "model", "sample", "legend", "strata") and isinstance(value, str):
                resolved[key] = _absolute(value, base)
            else:
                resolved[key] = _resolve_paths(value, base)
        return resolved
    if isinstance(data, list):
        return [_resolve_paths(v, base) for v in data]
    return data


def _absolute(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or "://" in value:
        return value
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else (base / path))


#: Job specs are a few dozen values; YAML aliases can make a small file expand exponentially ("billion laughs").
MAX_SPEC_VALUES = 100_000
#: A job file is a few kB; anything far larger is not a job spec and is not read into memory.
MAX_SPEC_BYTES = 16 * 1024**2


def _check_size(data: Any, origin: str) -> None:
    """Refuse documents whose aliases expand beyond :data:`MAX_SPEC_VALUES` values (counted with early exit)."""
    count = 0
    stack = [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_SPEC_VALUES:
            raise ConfigError(f"{origin}: job spec expands to more than {MAX_SPEC_VALUES} values (YAML alias bomb?)")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def load_job(path: str | Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Parse and validate a YAML job file (safe loading: no YAML tags execute anything)."""
    path = Path(path)
    try:
        info = path.stat()  # symlinks followed; checked before opening: a FIFO blocks, /dev/zero never ends
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: cannot read job spec: {file_kind(info.st_mode)}, not a regular file")
        if info.st_size > MAX_SPEC_BYTES:
            raise ConfigError(f"{path}: {info.st_size} bytes is too large for a job spec")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read job spec ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: job spec is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    except Exception as exc:  # PyYAML's own constructors fail with ValueError/IndexError on e.g. "!!float ;"
        raise ConfigError(f"{path}: not valid YAML ({type(exc).__name__}: {exc})") from exc
    _check_size(data, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a job spec is a YAML mapping, got {type(data).__name__}")
    base = path.resolve().parent
    data = _resolve_paths(data, base)
    # the default output folder is relative to the job file too, like every other path in it
    output = data.setdefault("output", {})
    if isinstance(output, dict):
        output.setdefault("dir", str(base / OutputSpec().dir))
    for key, value in (overrides or {}).items():
        data[key] = value
    job = validate_job(data, str(path))
    job._folder = base  # local inputs may lie under the job file's folder (suelo.ingest.confine)
    return job


def validate_job(data: dict[str, Any], origin: str = "job spec") -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{origin}: invalid job spec: {problems}") from exc
