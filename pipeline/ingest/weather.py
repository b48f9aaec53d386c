"""Weather reader: monthly 2 m temperature (K) and total precipitation (m of water per day) on the job grid.

Presto was pre-trained on ERA5 monthly means: temperature in K, precipitation in m per day (the monthly mean of
daily totals). Everything read is converted to those units.

What was chosen, and why:

- Files: NetCDF (ERA5, AgERA5 and alike, read with xarray/netCDF4, never through GDAL) and GeoTIFF (one file per
  month or day, the date in its tags ``DATE``/``TIME``/``DATETIME``/``START_DATETIME``/``system:time_start`` or else
  in its name: ``2021-03``, ``202103``, ``2021_03_15``, ``20210315``; ``TIFFTAG_DATETIME`` is ignored, it is most
  often the file's creation time). Folders are searched for ``*.nc``/``*.nc4``/``*.netcdf``/``*.tif``/``*.tiff``.
  A file may hold one quantity only (AgERA5 ships one variable per file); each quantity must be in some file.
- Names: the spec's ``temperature``/``precipitation`` (a NetCDF variable, or a GeoTIFF band description), else the
  first of :data:`TEMPERATURE_NAMES` / :data:`PRECIPITATION_NAMES` present (exact, then case-insensitive), else a
  NetCDF variable whose CF ``standard_name`` says it. GeoTIFF bands described ``temperature``/``precipitation``
  (or with those words in their description) are found too. All files must use one name per quantity.
- Units: the files' ``units`` attributes (CF / UDUNITS spellings: ``K``, ``degC``, ``m``, ``mm``, ``mm d-1``,
  ``kg m-2 s-1``, ...), else the spec's ``temperature_unit``/``precipitation_unit``, else one :class:`InputError`
  saying which unit to declare. A declared unit the file contradicts is an error. An amount without a period
  (``m``, ``mm``: ERA5's ``tp``) needs the period: the spec's unit (``m/day`` for ERA5 monthly means of daily
  totals, ``m/month`` for monthly sums), or per day for daily data; else an error asking for it. Conversions:
  degC + 273.15; mm = m / 1000; per month / days of that month; ``kg m-2 s-1`` (= mm/s) x 86400 / 1000.
- Time: the time coordinate (``time``, ``valid_time``, ``t`` or ``axis: T``) in the standard, gregorian or
  proleptic_gregorian calendar; any other (``noleap``, ``360_day``, ... of climate model output) is refused,
  naming the file and calendar, since a 360-day "month" is not the month of a Sentinel-2 composite. Monthly data:
  one value per month. Daily data (a month with several distinct days, or ``time_bnds`` one day long): a month's
  value is the mean over its days of temperature and of daily precipitation (so: mean daily total, m/day), only when
  every day of the month is there; a month with missing days counts as missing. Sub-daily data are refused
  (aggregate them first), a time step given twice is an error naming both files.
- Missing months: a month of the job that the files do not hold (fully) is NaN in :func:`weather_on_grid`; the
  caller decides what to do with it (:attr:`WeatherSource.months` lists those the files hold).
- Space: NetCDF on 1-D latitude/longitude coordinates (WGS 84 lon/lat), or on 1-D x/y with a CF ``grid_mapping``
  carrying ``crs_wkt``/``spatial_ref``; GeoTIFFs with a CRS and a north-up transform. Coordinates must be evenly
  spaced. Longitudes 0..360 are wrapped to -180..180, latitudes read in either order. Only the part of the file
  around the grid (2 cells of margin) is read; it is resampled bilinearly onto the grid
  (:func:`rasterio.warp.reproject`; weather is coarse, ~0.1-0.25 degrees). A file without georeferencing is refused,
  and so is one that misses more than :data:`suelo.ingest.terrain.MAX_MISSING` (1 %) of the grid's pixels.
  Not handled: grids crossing the antimeridian.
- Packing (``scale_factor``/``add_offset``) and ``_FillValue`` are applied (xarray's CF decoding; GDAL's
  scale/offset and nodata for GeoTIFF). An ERA5 ``expver`` dimension (final ERA5 and preliminary ERA5T in one file)
  is merged, first valid value first; other extra dimensions must have length 1.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import reproject, transform_bounds

from suelo.errors import InputError
from suelo.grid import Grid
from suelo.ingest.confine import UNCONFINED, InputAccess, open_raster, regular_file
from suelo.ingest.scene import gdal_env
from suelo.ingest.stac import parse_datetime
from suelo.ingest.terrain import MAX_MISSING, points_in
from suelo.locks import netcdf_lock
from suelo.settings import WeatherInput

if TYPE_CHECKING:
    import xarray as xr

Quantity = Literal["temperature", "precipitation"]
QUANTITIES: tuple[Quantity, Quantity] = ("temperature", "precipitation")
TEMPERATURE_NAMES = ("t2m", "2m_temperature", "Temperature_Air_2m_Mean_24h", "TMEAN", "tas", "tmean", "T2M",
                     "temperature", "air_temperature", "2t")  # fmt: skip
PRECIPITATION_NAMES = ("tp", "total_precipitation", "Precipitation_Flux", "PRECIP", "pr", "precip", "prcp",
                       "precipitation", "tot_prec")  # fmt: skip
KNOWN_NAMES: dict[Quantity, tuple[str, ...]] = {"temperature": TEMPERATURE_NAMES, "precipitation": PRECIPITATION_NAMES}
STANDARD_NAMES: dict[Quantity, tuple[str, ...]] = {
    "temperature": ("air_temperature",),
    "precipitation": ("precipitation_amount", "precipitation_flux", "lwe_thickness_of_precipitation_amount",
                      "lwe_precipitation_rate", "thickness_of_rainfall_amount"),
}  # fmt: skip
CALENDARS = ("standard", "gregorian", "proleptic_gregorian")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
TIFF_SUFFIXES = (".tif", ".tiff")
NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Weather files open at once while reading.
OPEN_FILES = 16
#: Source cells read beyond the grid's footprint on each side (bilinear needs one).
MARGIN_CELLS = 2
#: ``units`` spellings (normalised by :func:`_normalise_unit`) -> K / degC.
TEMPERATURE_UNITS = {
    **dict.fromkeys(("k", "kelvin", "kelvins", "degk", "deg_k", "degrees_k", "degree_k", "degree_kelvin"), "K"),
    **dict.fromkeys(("degc", "deg_c", "°c", "c", "celsius", "degree_c", "degrees_c", "degree_celsius",
                     "degrees_celsius", "deg c", "degree c", "degrees c", "oc"), "degC"),
}  # fmt: skip
#: ``units`` spellings -> the spec's precipitation units; ``m``/``mm`` are amounts whose period is not stated.
PRECIPITATION_UNITS = {
    "m": "m", "metre": "m", "meter": "m", "metres": "m", "meters": "m", "m of water equivalent": "m",
    "mm": "mm", "millimetre": "mm", "millimeter": "mm", "millimetres": "mm", "millimeters": "mm",
    **dict.fromkeys(("m d-1", "m day-1", "m/day", "m/d", "m per day", "m/24h", "m 24h-1"), "m/day"),
    **dict.fromkeys(("mm d-1", "mm day-1", "mm/day", "mm/d", "mm per day", "mm/24h", "mm 24h-1"), "mm/day"),
    **dict.fromkeys(("m month-1", "m mon-1", "m/month", "m/mon", "m per month"), "m/month"),
    **dict.fromkeys(("mm month-1", "mm mon-1", "mm/month", "mm/mon", "mm per month"), "mm/month"),
    **dict.fromkeys(("kg m-2 s-1", "kg/m2/s", "kg m-2/s", "kg/(m2 s)", "kg/m2 s", "mm s-1", "mm/s"), "kg m-2 s-1"),
}  # fmt: skip
PRECIPITATION_CHOICES = "m/day, mm/day, m/month, mm/month or kg m-2 s-1"


@dataclass(frozen=True)
class Step:
    """One time step of one quantity: its file, the NetCDF time index (0-based) or GeoTIFF band (1-based), and its
    date (``day`` 0: a GeoTIFF dated by month only)."""

    quantity: Quantity
    file: str
    index: int
    year: int
    month: int
    day: int


@dataclass(frozen=True)
class WeatherSource:
    """The weather files of one input, their resolved variable names and units, and every time step in them.

    ``temperature_unit`` is K or degC, ``precipitation_unit`` one of ``m/day``, ``mm/day``, ``m/month``,
    ``mm/month``, ``kg m-2 s-1``: the units in the files (stated or declared), converted on reading.
    """

    files: tuple[str, ...]
    temperature: str
    precipitation: str
    temperature_unit: str
    precipitation_unit: str
    steps: tuple[Step, ...] = ()
    #: per quantity: whether its steps are daily (aggregated to months on reading) rather than monthly
    daily: tuple[bool, bool] = (False, False)
    #: path -> "netcdf" / "geotiff", as pairs (hashable, picklable)
    formats: tuple[tuple[str, str], ...] = field(default=())

    @property
    def months(self) -> tuple[dt.date, ...]:
        """The months (first days) for which the files hold both quantities completely."""
        complete = [set(_complete_months(self, q)) for q in QUANTITIES]
        return tuple(dt.date(y, m, 1) for y, m in sorted(complete[0] & complete[1]))


# -- discovery -----------------------------------------------------------------------------------------------------


@dataclass
class _Found:
    """What discovery learned about one quantity so far."""

    name: str | None = None
    name_file: str = ""
    stated: list[tuple[str, str | None, str]] = field(default_factory=list)  # (file, units attribute, name)
    steps: list[tuple[Step, tuple[int, ...], str]] = field(default_factory=list)  # step, full stamp, file
    bounds_days: list[float] = field(default_factory=list)


def discover_weather(spec: WeatherInput, access: InputAccess | None = None) -> WeatherSource:
    """The weather files ``spec.paths`` name (files or folders), with names, units and time steps resolved.

    Raises :class:`InputError` (naming the file) for unreadable files, missing variables or georeferencing, units
    that are unknown, unstated and undeclared, or contradict the spec, calendars other than the standard one,
    sub-daily or duplicated time steps.
    """
    access = access or UNCONFINED
    files = list(dict.fromkeys(_weather_files(spec.paths, access)))
    found: dict[Quantity, _Found] = {q: _Found() for q in QUANTITIES}
    formats: list[tuple[str, str]] = []
    for path in files:
        kind = _format(path)
        formats.append((path, kind))
        if kind == "netcdf":
            with netcdf_lock(xarray=True):
                _scan_netcdf(path, spec, found)
        else:
            _scan_geotiff(path, spec, found)
    first = files[0]
    for quantity in QUANTITIES:
        if found[quantity].name is None:
            asked = getattr(spec, quantity)
            looked = f"'{asked}'" if asked else "any of " + ", ".join(KNOWN_NAMES[quantity])
            raise InputError(
                first if len(files) == 1 else f"{first} (and {len(files) - 1} more weather files)",
                f"no {_label(quantity)} in the weather files (looked for {looked}); name it with "
                f"{quantity}: <variable or band description> on this input",
            )
    daily = tuple(_classify(found[q], q) for q in QUANTITIES)
    units = [_resolve_units(q, found[q], getattr(spec, f"{q}_unit"), daily[i]) for i, q in enumerate(QUANTITIES)]
    steps = tuple(step for q in QUANTITIES for step, _, _ in found[q].steps)
    return WeatherSource(
        files=tuple(files),
        temperature=str(found["temperature"].name),
        precipitation=str(found["precipitation"].name),
        temperature_unit=units[0],
        precipitation_unit=units[1],
        steps=steps,
        daily=(daily[0], daily[1]),
        formats=tuple(formats),
    )


def _label(quantity: Quantity) -> str:
    return "2 m temperature" if quantity == "temperature" else "total precipitation"


def _weather_files(paths: Sequence[Path], access: InputAccess) -> Iterator[str]:
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in (*NETCDF_SUFFIXES, *TIFF_SUFFIXES))
            found = [p for p in found if p.is_file()]
            if not found:
                raise InputError(path, "folder holds no weather files (*.nc, *.nc4, *.tif, *.tiff)")
            for file in found:
                real = access.confine(file, file)
                regular_file(real, file, "weather file")
                yield real
        elif not path.exists():
            raise InputError(path, "weather file or folder does not exist")
        else:
            real = access.confine(path, path)
            regular_file(real, path, "weather file")
            yield real


def _format(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise InputError(path, f"cannot read weather file ({exc.strerror or exc})") from exc
    if head.startswith(NETCDF_MAGIC):
        return "netcdf"
    if head.startswith(TIFF_MAGIC):
        return "geotiff"
    raise InputError(path, "is neither a NetCDF nor a GeoTIFF file")


def _match_name(candidates: Sequence[str], asked: str | None, quantity: Quantity) -> str | None:
    """The variable / band name among ``candidates`` for ``quantity``: the asked one, else a known one."""
    if asked is not None:
        if asked in candidates:
            return asked
        lowered = {c.lower(): c for c in candidates}
        return lowered.get(asked.lower())
    for name in KNOWN_NAMES[quantity]:
        if name in candidates:
            return name
    lowered = {c.lower(): c for c in candidates}
    for name in KNOWN_NAMES[quantity]:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _record_name(found: _Found, name: str, path: str, quantity: Quantity) -> None:
    if found.name is None:
        found.name, found.name_file = name, path
    elif found.name != name:
        raise InputError(
            path,
            f"{_label(quantity)} is '{name}' here but '{found.name}' in {found.name_file}; give files that use one "
            f"name, or name it with {quantity}: on this input",
        )


def _open_netcdf(path: str) -> xr.Dataset:
    """Open ``path`` without xarray's lock: the caller holds ``netcdf_lock(xarray=True)`` while it opens, uses and
    closes the dataset (suelo.locks: netCDF-C is not thread-safe, and the blocks of a cube read weather at once)."""
    import xarray as xr

    try:
        return xr.open_dataset(path, engine="netcdf4", decode_times=False, decode_timedelta=False, lock=False)
    except (OSError, ValueError, RuntimeError, KeyError, IndexError) as exc:
        raise InputError(path, f"cannot read NetCDF: corrupt, truncated or unreadable ({exc})") from exc


def _scan_netcdf(path: str, spec: WeatherInput, found: dict[Quantity, _Found]) -> None:
    with _open_netcdf(path) as ds:
        names = [str(n) for n in ds.data_vars]
        any_found = False
        for quantity in QUANTITIES:
            name = _match_name(names, getattr(spec, quantity), quantity)
            if name is None and getattr(spec, quantity) is None:
                name = next((n for n in names if ds[n].attrs.get("standard_name") in STANDARD_NAMES[quantity]), None)
            if name is None:
                continue
            any_found = True
            variable = ds[name]
            _record_name(found[quantity], name, path, quantity)
            _lattice_of_netcdf(ds, variable, path)  # refuse a file without georeferencing now, not after hours
            time_name = _time_dim(ds, variable, path)
            units = variable.attrs.get("units")
            found[quantity].stated.append((path, str(units) if units is not None else None, name))
            stamps, bounds_days = _netcdf_times(ds, time_name, path)
            found[quantity].bounds_days.extend(bounds_days)
            for index, stamp in enumerate(stamps):
                step = Step(quantity, path, index, stamp[0], stamp[1], stamp[2])
                found[quantity].steps.append((step, stamp, path))
        if not any_found:
            raise InputError(
                path,
                f"holds neither 2 m temperature nor total precipitation (variables: {', '.join(names) or 'none'}); "
                "name them with temperature: / precipitation: on this input",
            )


def _time_dim(ds: xr.Dataset, variable: xr.DataArray, path: str) -> str:
    for dim in variable.dims:
        name = str(dim)
        attrs = ds[name].attrs if name in ds.variables else {}
        if name in ("time", "valid_time", "t") or attrs.get("axis") == "T" or attrs.get("standard_name") == "time":
            return name
    raise InputError(
        path, f"variable '{variable.name}' has no time dimension (dims: {', '.join(map(str, variable.dims))})"
    )


def _netcdf_times(ds: xr.Dataset, time_name: str, path: str) -> tuple[list[tuple[int, ...]], list[float]]:
    """(year, month, day, hour, minute, second) of every time step, and the lengths in days of its time bounds."""
    import cftime  # type: ignore[import-untyped]  # netCDF4's own dependency; ships no type information

    if time_name not in ds.variables:
        raise InputError(path, f"time dimension '{time_name}' has no coordinate variable")
    coordinate = ds[time_name]
    units = coordinate.attrs.get("units")
    calendar_name = str(coordinate.attrs.get("calendar", "standard")).strip().lower()
    if calendar_name not in CALENDARS:
        raise InputError(
            path,
            f"time coordinate '{time_name}' uses the '{calendar_name}' calendar; suelo reads only the standard "
            "(gregorian) calendar, in which months are calendar months: convert the file first",
        )
    if not isinstance(units, str) or " since " not in units:
        raise InputError(path, f"time coordinate '{time_name}' has no CF units ('<unit> since <date>'): {units!r}")
    try:
        dates = cftime.num2date(np.atleast_1d(coordinate.values), units, calendar_name)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(path, f"cannot decode time coordinate '{time_name}' ({exc})") from exc
    stamps: list[tuple[int, ...]] = [
        (int(d.year), int(d.month), int(d.day), int(d.hour), int(d.minute), int(d.second)) for d in np.atleast_1d(dates)
    ]
    bounds_days: list[float] = []
    bounds_name = coordinate.attrs.get("bounds")
    if isinstance(bounds_name, str) and bounds_name in ds.variables:
        values = np.asarray(ds[bounds_name].values, dtype=np.float64)
        if values.ndim == 2 and values.shape[1] == 2:
            per_day = _unit_days(units)
            if per_day is not None:
                bounds_days = [float(v) for v in (values[:, 1] - values[:, 0]) * per_day]
    return stamps, bounds_days


def _unit_days(units: str) -> float | None:
    unit = units.split(" since ")[0].strip().lower()
    for names, days in ((("day", "days", "d"), 1.0), (("hour", "hours", "h", "hr", "hrs"), 1 / 24),
                        (("minute", "minutes", "min", "mins"), 1 / 1440),
                        (("second", "seconds", "s", "sec", "secs"), 1 / 86400)):  # fmt: skip
        if unit in names:
            return days
    return None


_DATE_IN_NAME = re.compile(r"(?<!\d)((?:19|20|21)\d{2})[-_.]?(0[1-9]|1[0-2])(?:[-_.]?(0[1-9]|[12]\d|3[01]))?(?!\d)")
_DATE_TAGS = ("DATE", "TIME", "DATETIME", "START_DATETIME", "ACQUISITION_DATE", "SYSTEM:TIME_START")


def geotiff_date(path: str, tags: dict[str, str]) -> tuple[int, int, int] | None:
    """(year, month, day) of a weather GeoTIFF from its tags, else its name; ``day`` 0 when only the month is given."""
    for key in _DATE_TAGS:
        text = tags.get(key)
        if text is None:
            continue
        if key == "SYSTEM:TIME_START" and text.strip().lstrip("-").isdigit():  # Earth Engine: ms since 1970
            moment = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(text.strip()))
            return moment.year, moment.month, moment.day
        match = re.fullmatch(r"\s*(\d{4})-(\d{2})\s*", text)
        if match:
            return int(match.group(1)), int(match.group(2)), 0
        parsed = parse_datetime(text)
        if parsed is not None:
            return parsed.year, parsed.month, parsed.day
    matches = _DATE_IN_NAME.findall(Path(path).name)
    if len(matches) == 1:
        year, month, day = matches[0]
        return int(year), int(month), int(day) if day else 0
    return None


def _scan_geotiff(path: str, spec: WeatherInput, found: dict[Quantity, _Found]) -> None:
    try:
        with gdal_env(), open_raster(path) as src:
            descriptions = [(d or "").strip() for d in src.descriptions]
            units = [(u or "").strip() for u in src.units]
            band_tags = [{str(k).lower(): str(v) for k, v in src.tags(i).items()} for i in range(1, src.count + 1)]
            tags = {str(k).upper(): str(v) for k, v in src.tags().items()}
            crs, transform = src.crs, src.transform
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"cannot read GeoTIFF: corrupt, truncated or unreadable ({exc})") from exc
    if crs is None:
        raise InputError(path, "weather GeoTIFF has no coordinate reference system (no georeferencing)")
    if transform.b != 0 or transform.d != 0 or transform.e >= 0 or transform.is_identity:
        raise InputError(path, "weather GeoTIFF has no north-up georeferencing (transform)")
    date = geotiff_date(path, tags)
    if date is None:
        raise InputError(
            path, "cannot tell the month of this weather GeoTIFF: put it in the name (2021-03) or a DATE tag"
        )
    if date[2] and date[2] > calendar.monthrange(date[0], date[1])[1]:
        raise InputError(path, f"date {date[0]}-{date[1]:02d}-{date[2]:02d} does not exist")
    any_found = False
    for quantity in QUANTITIES:
        asked = getattr(spec, quantity)
        band = None
        name = _match_name(descriptions, asked, quantity)
        if name is None and asked is None:
            word = "temperature" if quantity == "temperature" else "precip"
            name = next((d for d in descriptions if word in d.lower()), None)
        if name is not None:
            band = descriptions.index(name) + 1
        if band is None or name is None:
            continue
        any_found = True
        _record_name(found[quantity], name, path, quantity)
        stated = units[band - 1] or band_tags[band - 1].get("units") or band_tags[band - 1].get("unit")
        found[quantity].stated.append((path, stated or None, name))
        step = Step(quantity, path, band, date[0], date[1], date[2])
        found[quantity].steps.append((step, (date[0], date[1], date[2], 0, 0, 0), path))
    if not any_found:
        shown = ", ".join(repr(d) for d in descriptions)
        raise InputError(
            path,
            f"no band is described as temperature or precipitation (band descriptions: {shown}); describe the "
            "bands, or name them with temperature: / precipitation: on this input",
        )


def _classify(found: _Found, quantity: Quantity) -> bool:
    """Whether a quantity's steps are daily (True) or monthly (False); refuses duplicates and sub-daily steps."""
    seen: dict[tuple[int, ...], str] = {}
    for _, stamp, path in found.steps:
        if stamp in seen:
            raise InputError(path, f"{_label(quantity)} of {_stamp_text(stamp)} is given twice (also in {seen[stamp]})")
        seen[stamp] = path
    days: dict[tuple[int, int, int], str] = {}
    per_month: dict[tuple[int, int], set[int]] = {}
    for _, stamp, path in found.steps:
        day = (stamp[0], stamp[1], stamp[2])
        if day in days and stamp[2]:
            raise InputError(
                path,
                f"{_label(quantity)} has several time steps on {_stamp_text(stamp)[:10]} (sub-daily data, also in "
                f"{days[day]}); aggregate to daily or monthly values first",
            )
        days[day] = path
        per_month.setdefault((stamp[0], stamp[1]), set()).add(stamp[2])
    if found.bounds_days:
        lengths = np.asarray(found.bounds_days)
        if np.all(np.abs(lengths - 1) < 0.01):
            return True
        if np.all((lengths > 27.5) & (lengths < 31.5)):
            return False
    daily = any(len(d) > 1 for d in per_month.values())
    if daily and any(0 in d for d in per_month.values()):
        path = next(p for _, stamp, p in found.steps if stamp[2] == 0)
        raise InputError(path, f"{_label(quantity)}: monthly files (dated by month) mixed with daily files")
    return daily


def _stamp_text(stamp: tuple[int, ...]) -> str:
    text = f"{stamp[0]:04d}-{stamp[1]:02d}"
    if stamp[2]:
        text += f"-{stamp[2]:02d}"
    if any(stamp[3:]):
        text += f"T{stamp[3]:02d}:{stamp[4]:02d}:{stamp[5]:02d}"
    return text


def _normalise_unit(text: str) -> str:
    unit = text.strip().lower().replace("**", "").replace("^", "")
    unit = re.sub(r"[·*]", " ", unit)
    unit = re.sub(r"(?<=[a-z0-9])\.(?=[a-z])", " ", unit)  # UDUNITS "mm.d-1"
    return " ".join(unit.split())


def _resolve_units(quantity: Quantity, found: _Found, declared: str | None, daily: bool) -> str:
    """The one unit of a quantity in all its files (stated, else declared), checked against the declaration."""
    resolved: str | None = None
    resolved_in = ""
    for path, stated, name in found.stated:
        unit = _unit_of(quantity, path, name, stated, declared, daily)
        if resolved is not None and unit != resolved:
            raise InputError(path, f"{_label(quantity)} '{name}' is in {unit} here but {resolved} in {resolved_in}")
        resolved, resolved_in = unit, path
    assert resolved is not None  # every quantity has at least one file
    return resolved


def _unit_of(quantity: Quantity, path: str, name: str, stated: str | None, declared: str | None, daily: bool) -> str:
    key = f"{quantity}_unit"
    what = f"{_label(quantity)} '{name}'"
    if quantity == "temperature":
        if stated is None:
            if declared is None:
                raise InputError(path, f"{what} has no units attribute; declare {key}: K or degC on this input")
            return declared
        unit = TEMPERATURE_UNITS.get(_normalise_unit(stated))
        if unit is None:
            raise InputError(path, f"{what} states units {stated!r}; suelo converts K and degC only")
        if declared is not None and declared != unit:
            raise InputError(path, f"{what} states units {stated!r} but the job declares {key}: {declared}")
        return unit
    if stated is None:
        if declared is None:
            raise InputError(
                path, f"{what} has no units attribute; declare {key}: ({PRECIPITATION_CHOICES}) on this input"
            )
        return declared
    unit = PRECIPITATION_UNITS.get(_normalise_unit(stated))
    if unit is None:
        raise InputError(path, f"{what} states units {stated!r}; suelo converts {PRECIPITATION_CHOICES} only")
    if unit in ("m", "mm"):  # an amount: the period is not stated
        if declared is None:
            if daily:
                return f"{unit}/day"
            raise InputError(
                path,
                f"{what} states units {stated!r}, which do not say per day or per month; declare {key}: {unit}/day "
                f"(ERA5 monthly means of daily totals) or {key}: {unit}/month (monthly sums) on this input",
            )
        if declared.split("/")[0] != unit:
            raise InputError(path, f"{what} states units {stated!r} but the job declares {key}: {declared}")
        return declared
    if declared is not None and declared != unit:
        raise InputError(path, f"{what} states units {stated!r} but the job declares {key}: {declared}")
    return unit


# -- reading -------------------------------------------------------------------------------------------------------


def to_kelvin(values: np.ndarray, unit: str) -> np.ndarray:
    """Temperature in ``unit`` (K or degC) to K."""
    out: np.ndarray = values + 273.15 if unit == "degC" else values
    return out


def metres_per_day_factor(unit: str, year: int, month: int) -> float:
    """What a precipitation value in ``unit`` is multiplied by to give m of water per day, in that month."""
    days = calendar.monthrange(year, month)[1]
    factors = {"m/day": 1.0, "mm/day": 1e-3, "m/month": 1.0 / days, "mm/month": 1e-3 / days,
               "kg m-2 s-1": 86400 / 1000}  # fmt: skip
    return factors[unit]


def _complete_months(source: WeatherSource, quantity: Quantity) -> dict[tuple[int, int], list[Step]]:
    """The months of a quantity the files hold completely (monthly: the one step; daily: every day) -> steps."""
    daily = source.daily[QUANTITIES.index(quantity)]
    months: dict[tuple[int, int], list[Step]] = {}
    for step in source.steps:
        if step.quantity == quantity:
            months.setdefault((step.year, step.month), []).append(step)
    if not daily:
        return months
    return {
        key: steps
        for key, steps in months.items()
        if len({s.day for s in steps}) == calendar.monthrange(key[0], key[1])[1]
    }


def weather_on_grid(source: WeatherSource, grid: Grid, months: Sequence[dt.date]) -> np.ndarray:
    """2 m temperature (K) and total precipitation (m of water per day) per month on ``grid``.

    Returns float32 ``(len(months), 2, grid.height, grid.width)``; channel 0 temperature, 1 precipitation. A month
    the files do not hold (daily data: not every day of it) is NaN, for that quantity: the caller decides. Each
    month is the monthly value, or for daily data the mean of the daily values (temperature) and of the daily totals
    (precipitation, so still m/day). Raises :class:`InputError` naming the file when a file needed misses more than
    1 % of the grid.
    """
    out = np.full((len(months), 2, grid.height, grid.width), np.nan, dtype=np.float32)
    readers = _Readers(dict(source.formats), grid)
    try:
        for q_index, quantity in enumerate(QUANTITIES):
            available = _complete_months(source, quantity)
            name = source.temperature if quantity == "temperature" else source.precipitation
            unit = source.temperature_unit if quantity == "temperature" else source.precipitation_unit
            for m_index, month in enumerate(months):
                steps = available.get((month.year, month.month))
                if steps:
                    out[m_index, q_index] = _month(readers, steps, name, unit, quantity, grid)
    finally:
        readers.close()
    return out


def _month(
    readers: _Readers, steps: Sequence[Step], name: str, unit: str, quantity: Quantity, grid: Grid
) -> np.ndarray:
    """One month of one quantity on the grid: the mean of its steps (one when monthly), in K or m/day."""
    groups: dict[tuple[Any, ...], list[np.ndarray]] = {}
    lattices: dict[tuple[Any, ...], _Lattice] = {}
    for step in steps:
        lattice, values = readers.read(step.file, name, step.index)
        if quantity == "temperature":
            values = to_kelvin(values, unit)
        else:
            values = values * metres_per_day_factor(unit, step.year, step.month)
        groups.setdefault(lattice.key, []).append(values)
        lattices[lattice.key] = lattice
    total = np.zeros(grid.shape, dtype=np.float64)
    count = 0
    for key, fields in groups.items():  # daily fields on one lattice are averaged there, then resampled once
        total += len(fields) * lattices[key].onto(np.mean(np.stack(fields), axis=0), grid)
        count += len(fields)
    month: np.ndarray = total / count
    return month


class _Readers:
    """The files :func:`weather_on_grid` reads: at most :data:`OPEN_FILES` open at once (a year of AgERA5 is 730
    files), their lattices for the grid kept after they are closed."""

    def __init__(self, formats: dict[str, str], grid: Grid) -> None:
        self.formats = formats
        self.grid = grid
        self.open: dict[str, _Reader] = {}
        self.lattices: dict[tuple[str, str], _Lattice] = {}

    def read(self, path: str, name: str, index: int) -> tuple[_Lattice, np.ndarray]:
        with netcdf_lock(xarray=True):  # opening, reading and closing NetCDF alike (GeoTIFFs too: as small)
            return self._read(path, name, index)

    def _read(self, path: str, name: str, index: int) -> tuple[_Lattice, np.ndarray]:
        reader = self.open.pop(path, None)
        if reader is None:
            if len(self.open) >= OPEN_FILES:
                oldest = next(iter(self.open))
                self.open.pop(oldest).close()
            reader = _Reader(path, self.formats.get(path, "netcdf"))
        self.open[path] = reader  # most recently used last
        lattice = self.lattices.get((path, name))
        if lattice is None:
            lattice = self.lattices[(path, name)] = reader.lattice(name, self.grid)
        return lattice, reader.read(name, index, lattice)

    def close(self) -> None:
        with netcdf_lock(xarray=True):
            while self.open:
                self.open.popitem()[1].close()


@dataclass(frozen=True)
class _Lattice:
    """The part of a file's lattice read for a grid: which source rows/columns (in file order) and their transform,
    after longitudes were wrapped to -180..180 and rows put north to south."""

    path: str
    crs: CRS
    rows: np.ndarray
    cols: np.ndarray
    transform: Affine

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.crs.to_wkt(), tuple(self.transform)[:6], len(self.rows), len(self.cols))

    def onto(self, values: np.ndarray, grid: Grid) -> np.ndarray:
        target = np.full(grid.shape, np.nan, dtype=np.float64)
        try:
            reproject(
                np.ascontiguousarray(values, dtype=np.float64), target, src_transform=self.transform,
                src_crs=self.crs, src_nodata=np.nan, dst_transform=grid.transform, dst_crs=grid.crs,
                dst_nodata=np.nan, resampling=Resampling.bilinear,
            )  # fmt: skip
        except (RasterioError, ValueError) as exc:
            raise InputError(self.path, f"cannot resample the weather data onto the grid ({exc})") from exc
        return target


def _axis(values: np.ndarray, path: str, what: str) -> float:
    """The spacing of evenly spaced, sorted coordinate values; refused when uneven."""
    if values.size < 2:
        raise InputError(path, f"{what} has fewer than 2 values: cannot tell the cell size")
    steps = np.diff(values)
    step = float(np.median(steps))
    if step <= 0 or np.any(np.abs(steps - step) > 1e-3 * step):
        raise InputError(path, f"{what} is not evenly spaced (steps {steps.min():g} to {steps.max():g})")
    return step


def _subset(path: str, crs: CRS, x: np.ndarray, y: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray, Affine]:
    """Which columns/rows (indices in the file) of a lattice of centres ``x``/``y`` (file order) the grid needs."""
    geographic = crs.is_geographic
    wrapped = ((x + 180.0) % 360.0) - 180.0 if geographic else x.astype(np.float64)
    x_order = np.argsort(wrapped, kind="stable")
    y_order = np.argsort(-y, kind="stable")
    xs, ys = wrapped[x_order], y[y_order]
    dx = _axis(xs, path, "the x (longitude) coordinate")
    dy = _axis(-ys, path, "the y (latitude) coordinate")
    # coverage: sampled grid pixel centres within half a cell of a centre on both axes
    px, py = points_in(grid, crs)
    if geographic:
        px = ((px + 180.0) % 360.0) - 180.0
    covered = _near(xs, px, dx / 2) & _near(-ys, -py, dy / 2)
    missing = float(1.0 - covered.mean())
    if missing > MAX_MISSING:
        raise InputError(
            path,
            f"the weather data do not cover the grid: {100 * missing:.1f} % of its pixels lie outside them "
            f"(x {xs[0] - dx / 2:g} to {xs[-1] + dx / 2:g}, y {ys[-1] - dy / 2:g} to {ys[0] + dy / 2:g}; "
            f"at most {100 * MAX_MISSING:g} % may)",
        )
    try:
        left, bottom, right, top = transform_bounds(grid.crs, crs, *grid.bounds, densify_pts=21)
    except (RasterioError, ValueError) as exc:
        raise InputError(path, f"cannot transform the grid's bounds into the file's CRS ({exc})") from exc
    keep_x = (xs >= left - MARGIN_CELLS * dx) & (xs <= right + MARGIN_CELLS * dx)
    keep_y = (ys >= bottom - MARGIN_CELLS * dy) & (ys <= top + MARGIN_CELLS * dy)
    if not keep_x.any() or not keep_y.any():
        raise InputError(path, "the weather data do not cover the grid")
    cols, rows = x_order[keep_x], y_order[keep_y]
    sub_x, sub_y = xs[keep_x], ys[keep_y]
    if sub_x.size > 1:
        _axis(sub_x, path, "the x (longitude) coordinate around the grid")
    transform = Affine(dx, 0.0, float(sub_x[0]) - dx / 2, 0.0, -dy, float(sub_y[0]) + dy / 2)
    return rows, cols, transform


def _near(sorted_centres: np.ndarray, points: np.ndarray, half: float) -> np.ndarray:
    """Whether each point lies within ``half`` (+ a hair) of one of the ascending ``sorted_centres``."""
    ok = np.isfinite(points)
    where = np.clip(np.searchsorted(sorted_centres, np.where(ok, points, 0.0)), 1, len(sorted_centres) - 1)
    nearest = np.minimum(np.abs(points - sorted_centres[where - 1]), np.abs(points - sorted_centres[where]))
    with np.errstate(invalid="ignore"):
        near: np.ndarray = ok & (nearest <= half * (1 + 1e-9))
    return near


def _lattice_of_netcdf(ds: xr.Dataset, variable: xr.DataArray, path: str) -> tuple[CRS, str, str]:
    """(CRS, y dimension, x dimension) of a NetCDF variable; refused without 1-D georeferenced coordinates."""
    dims = [str(d) for d in variable.dims]

    def attrs(name: str) -> dict[str, Any]:
        return dict(ds[name].attrs) if name in ds.variables else {}

    def is_lat(name: str) -> bool:
        a = attrs(name)
        return (
            name.lower() in ("latitude", "lat")
            or a.get("standard_name") == "latitude"
            or (str(a.get("units", "")).lower() in ("degrees_north", "degree_north", "degrees_n", "degree_n"))
        )

    def is_lon(name: str) -> bool:
        a = attrs(name)
        return (
            name.lower() in ("longitude", "lon", "long")
            or a.get("standard_name") == "longitude"
            or (str(a.get("units", "")).lower() in ("degrees_east", "degree_east", "degrees_e", "degree_e"))
        )

    lat = next((d for d in dims if is_lat(d) and d in ds.variables), None)
    lon = next((d for d in dims if is_lon(d) and d in ds.variables), None)
    if lat is not None and lon is not None:
        return CRS.from_epsg(4326), lat, lon
    y = next((d for d in dims if attrs(d).get("standard_name") == "projection_y_coordinate" or d == "y"), None)
    x = next((d for d in dims if attrs(d).get("standard_name") == "projection_x_coordinate" or d == "x"), None)
    mapping = variable.attrs.get("grid_mapping", variable.encoding.get("grid_mapping"))
    if y in ds.variables and x in ds.variables and isinstance(mapping, str) and mapping in ds.variables:
        text = ds[mapping].attrs.get("crs_wkt") or ds[mapping].attrs.get("spatial_ref")
        if isinstance(text, str):
            try:
                return CRS.from_wkt(text), str(y), str(x)
            except CRSError as exc:
                raise InputError(path, f"grid mapping '{mapping}' has an unreadable CRS ({exc})") from exc
    raise InputError(
        path,
        f"variable '{variable.name}' has no georeferencing: no 1-D latitude/longitude coordinates (or x/y with a "
        f"CF grid_mapping holding crs_wkt) among its dimensions ({', '.join(dims)})",
    )


class _Reader:
    """One open weather file for the duration of :func:`weather_on_grid` (NetCDF dataset or GeoTIFF)."""

    def __init__(self, path: str, kind: str) -> None:
        self.path = path
        self.kind = kind
        self._stack = ExitStack()
        self._ds: xr.Dataset | None = None
        self._src: Any = None
        if kind == "netcdf":
            self._ds = self._stack.enter_context(_open_netcdf(path))
        else:
            try:
                self._stack.enter_context(gdal_env())
                self._src = self._stack.enter_context(open_raster(path))
            except (RasterioError, OSError) as exc:
                self._stack.close()
                raise InputError(path, f"cannot read GeoTIFF: corrupt, truncated or unreadable ({exc})") from exc

    def close(self) -> None:
        self._stack.close()

    def lattice(self, name: str, grid: Grid) -> _Lattice:
        if self._ds is not None:
            variable = self._ds[name]
            crs, y_dim, x_dim = _lattice_of_netcdf(self._ds, variable, self.path)
            x = np.asarray(self._ds[x_dim].values, dtype=np.float64)
            y = np.asarray(self._ds[y_dim].values, dtype=np.float64)
        else:
            src = self._src
            crs, t = src.crs, src.transform
            x = t.c + (np.arange(src.width) + 0.5) * t.a
            y = t.f + (np.arange(src.height) + 0.5) * t.e
        rows, cols, transform = _subset(self.path, crs, x, y, grid)
        return _Lattice(self.path, crs, rows, cols, transform)

    def read(self, name: str, index: int, lattice: _Lattice) -> np.ndarray:
        """The values of one time step (NetCDF) / band (GeoTIFF) on ``lattice``, float64, NaN for no data."""
        try:
            if self._ds is not None:
                return self._read_netcdf(name, index, lattice)
            return self._read_geotiff(index, lattice)
        except InputError:
            raise
        except (RasterioError, OSError, ValueError, RuntimeError, IndexError, KeyError) as exc:
            raise InputError(self.path, f"cannot read '{name}': corrupt, truncated or unreadable ({exc})") from exc

    def _read_netcdf(self, name: str, index: int, lattice: _Lattice) -> np.ndarray:
        assert self._ds is not None
        variable = self._ds[name]
        _, y_dim, x_dim = _lattice_of_netcdf(self._ds, variable, self.path)
        time_dim = _time_dim(self._ds, variable, self.path)
        picked = variable.isel({time_dim: index, y_dim: lattice.rows, x_dim: lattice.cols})
        picked = picked.transpose(..., y_dim, x_dim)
        values = np.asarray(picked.values, dtype=np.float64)
        for dim in [str(d) for d in picked.dims[:-2]]:
            size = picked.sizes[dim]
            if size == 1:
                values = values[0]
            elif dim == "expver":  # ERA5 + ERA5T: each cell is in one of them, NaN in the other
                first = values[0]
                for other in values[1:]:
                    first = np.where(np.isnan(first), other, first)
                values = first
            else:
                raise InputError(self.path, f"variable '{name}' has an extra dimension '{dim}' of length {size}")
        return values

    def _read_geotiff(self, band: int, lattice: _Lattice) -> np.ndarray:
        from rasterio.windows import Window

        src = self._src
        r0, r1 = int(lattice.rows.min()), int(lattice.rows.max()) + 1
        c0, c1 = int(lattice.cols.min()), int(lattice.cols.max()) + 1
        block = src.read(band, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True)
        values = np.asarray(block.astype(np.float64).filled(np.nan))
        scale, offset = src.scales[band - 1], src.offsets[band - 1]
        if (scale, offset) != (1.0, 0.0):
            values = values * scale + offset
        picked: np.ndarray = values[np.ix_(lattice.rows - r0, lattice.cols - c0)]
        return picked


__all__ = ["Step", "WeatherSource", "discover_weather", "geotiff_date", "metres_per_day_factor", "weather_on_grid"]
