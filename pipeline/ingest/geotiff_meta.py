"""What GeoTIFF inputs say about themselves: acquisition date, processing level, radiometry.

Each comes from the file name, from the file's GDAL metadata or from the job spec, with fixed precedence:

- Date: the file name (``date_pattern``; ``file_pattern`` for band files), then acquisition tags
  (:data:`ACQUISITION_TAGS`), then the spec's ``date``, then ``TIFFTAG_DATETIME``. That last tag is, by the TIFF
  specification, when the file was made, which for an export is its processing time, so a date the user states wins
  over it; a name or an acquisition tag is about the file itself and wins over a date stated for the whole input.
- Level: the file name (or a folder between the input path and it, e.g. a granule ``L2A_T31UFS_...``), the tags
  (:data:`LEVEL_TAGS`) and the spec's ``product_level`` must agree wherever they say something, and at least one
  must: a Level-1C file read as Level-2A would give wrong reflectance without any error.
- Radiometry: the spec only (``add_offset``, else ``processing_baseline``); a Level-2A file without either is an
  error, as the offset cannot be guessed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from suelo.band_names import SCL
from suelo.errors import ConfigError, InputError, agreed
from suelo.ingest.geotiff_files import RasterInfo
from suelo.ingest.scene import Radiometry, baseline_at_least, tile_in_name
from suelo.settings import GeoTiffInput

DATE_GROUPS = ("year", "month", "day")
#: Metadata tags that hold the acquisition (sensing) time, in the order they are looked at; keys upper-cased.
#: system:time_start (Earth Engine) is in milliseconds since 1970; the others are ISO-like text.
ACQUISITION_TAGS = (
    "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME", "SENSING_DATE", "SYSTEM:TIME_START",
    "DATATAKE_1_DATATAKE_SENSING_START", "PRODUCT_START_TIME",
)  # fmt: skip
FILE_TIME_TAG = "TIFFTAG_DATETIME"
LEVEL_TAGS = ("PROCESSING_LEVEL", "PRODUCT_TYPE", "PRODUCT_LEVEL")

# MSIL2A / S2L1C / _L2A_ / L2A_T31UFS (a granule folder): "L" and the level after MSI, S2 or a separator.
_LEVEL_IN_NAME = re.compile(r"(?:MSI|S2|^|[^A-Z0-9])L(1C|2A)(?=$|[^A-Z0-9])")
# Level-2A, L2A, S2MSI2A, S2MSI1C, 2A
_LEVEL_IN_TAG = re.compile(r"(?:^|LEVEL[-_ ]?|L|MSI)(1C|2A)(?![0-9])")
_TIME_TEXT = re.compile(r"(\d{4})[-:]?(\d{2})[-:]?(\d{2})(?:[T ](\d{2}):?(\d{2}):?(\d{2}))?")


def compile_pattern(text: str, field: str, required: Collection[str] = DATE_GROUPS) -> re.Pattern[str]:
    """``text`` compiled, with every group of ``required`` named in it; else a ConfigError naming ``field``."""
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ConfigError(f"geotiff {field} {text!r} is not a valid regular expression ({exc})") from exc
    missing = set(required) - set(pattern.groupindex)
    if missing:
        raise ConfigError(f"geotiff {field} {text!r} lacks the named groups {sorted(missing)}")
    date_groups = set(DATE_GROUPS) & set(pattern.groupindex)
    if date_groups and date_groups != set(DATE_GROUPS):
        raise ConfigError(f"geotiff {field} {text!r} names only {sorted(date_groups)} of year, month and day")
    return pattern


def match_date(match: re.Match[str], path: Path | str, what: str) -> dt.datetime | None:
    """The date of a match's year/month/day groups (UTC midnight: only the day is known), None if it has none."""
    if "year" not in match.re.groupindex or match.group("year") is None:
        return None
    try:
        return dt.datetime(
            int(match.group("year")), int(match.group("month")), int(match.group("day")), tzinfo=dt.timezone.utc
        )
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"{what} date {match.group(0)!r} is not a valid date ({exc})") from exc


def acquired(
    info: RasterInfo, spec: GeoTiffInput, date_pattern: re.Pattern[str], named: dt.datetime | None = None
) -> tuple[dt.datetime, str]:
    """The acquisition time of one file and where it came from (module docstring: the precedence).

    ``named``: a date the caller already found in the name (``file_pattern`` of band files).
    """
    if named is not None:
        return named, "file name"
    match = date_pattern.search(info.path.name)
    if match is not None:
        found = match_date(match, info.path, "file name")
        if found is not None:
            return found, "file name"
    for tag in ACQUISITION_TAGS:
        if tag in info.tags:
            return _tag_time(info, tag), f"metadata {tag}"
    if spec.date is not None:
        return dt.datetime(spec.date.year, spec.date.month, spec.date.day, tzinfo=dt.timezone.utc), "job spec date"
    if FILE_TIME_TAG in info.tags:
        return _tag_time(info, FILE_TIME_TAG), f"metadata {FILE_TIME_TAG}"
    raise InputError(
        info.path,
        f"no acquisition date: none in the file name (date_pattern {date_pattern.pattern!r}) nor in its metadata "
        f"({', '.join(ACQUISITION_TAGS)}, {FILE_TIME_TAG}); put the date in the file name, write it into a metadata "
        "tag such as ACQUISITION_DATE, or state it with date: YYYY-MM-DD on this input",
    )


def _tag_time(info: RasterInfo, tag: str) -> dt.datetime:
    return tag_time(info.path, tag, info.tags[tag])


def tag_time(path: str | Path, tag: str, text: str) -> dt.datetime:
    """The time a metadata tag of ``path`` states: Earth Engine's ``system:time_start`` (ms since 1970), else a
    date/time :func:`parse_time` reads; an unreadable value is one error naming the file and the tag."""
    text = text.strip()
    try:
        if tag == "SYSTEM:TIME_START":
            return dt.datetime.fromtimestamp(float(text) / 1000.0, tz=dt.timezone.utc)
        return parse_time(text)
    except (ValueError, OverflowError, OSError) as exc:
        raise InputError(path, f"metadata {tag} {text!r} is not a date or time ({exc})") from exc


def parse_time(text: str) -> dt.datetime:
    """An ISO 8601 date/time (``2021-06-12``, ``2021-06-12T10:46:19.024Z``), TIFF's ``2021:06:12 10:46:19`` or
    ``20210612T104619``; without a zone it is taken as UTC (Sentinel-2 times are UTC)."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        match = _TIME_TEXT.fullmatch(text)
        if match is None:
            raise ValueError("expected e.g. 2021-06-12, 2021-06-12T10:46:19Z or 2021:06:12 10:46:19") from None
        year, month, day, hour, minute, second = (int(g or 0) for g in match.groups())
        value = dt.datetime(year, month, day, hour, minute, second)
    return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def level(info: RasterInfo, spec: GeoTiffInput, folder_names: Iterable[str] = ()) -> tuple[str, str]:
    """The processing level of one file (``L2A``/``L1C``) and where it came from (module docstring)."""
    said: dict[str, str] = {}  # source -> level, for every source that says one
    for name in (info.path.name, *reversed(tuple(folder_names))):  # the file first, then the nearest folder
        levels = {f"L{m}" for m in _LEVEL_IN_NAME.findall(name.upper())}
        if len(levels) > 1:
            raise InputError(info.path, f"name {name!r} says both {' and '.join(sorted(levels))}")
        if levels:
            said["file name" if name == info.path.name else f"folder name {name!r}"] = levels.pop()
            break
    for tag in LEVEL_TAGS:
        match = _LEVEL_IN_TAG.search(info.tags.get(tag, "").strip().upper())
        if match:
            said[f"metadata {tag} {info.tags[tag]!r}"] = f"L{match.group(1)}"
    if spec.product_level is not None:
        said["job spec product_level"] = spec.product_level
    value = agreed(info.path, said, "processing levels disagree: {views}")
    if value is None:
        raise InputError(
            info.path,
            "processing level unknown (Level-2A or Level-1C?); state it with product_level: L2A or L1C on this input",
        )
    return value, next(iter(said))


def radiometry(spec: GeoTiffInput, bands: Iterable[str], level_of: tuple[str, str], path: Path) -> Radiometry:
    """How DNs of ``bands`` become reflectance, from the spec; ``level_of`` is (level, its source) of the file."""
    product_level, level_source = level_of
    if spec.add_offset is not None:
        offset, source = spec.add_offset, f"job spec add_offset {spec.add_offset:g}"
    elif spec.processing_baseline is not None:
        try:
            newer = baseline_at_least(spec.processing_baseline, "04.00")
        except ValueError as exc:
            raise ConfigError(f"geotiff processing_baseline {spec.processing_baseline!r} is not like '04.00'") from exc
        offset, source = (-1000.0 if newer else 0.0), f"job spec processing_baseline {spec.processing_baseline}"
    elif product_level == "L2A":
        raise InputError(
            path,
            f"is Level-2A ({level_source}); give processing_baseline (e.g. '04.00') or add_offset (e.g. -1000 or 0) "
            "on this input: the L2A radiometric offset cannot be guessed",
        )
    else:
        offset, source = 0.0, "no offset (Level-1C without processing_baseline in the job spec)"
    return Radiometry(
        quantification=spec.quantification,
        offsets={b: float(offset) for b in bands if b != SCL},
        processing_baseline=spec.processing_baseline,
        source=source,
    )


def scene_extra(path: Path, **records: object) -> Mapping[str, object]:
    """``Scene.extra`` of a GeoTIFF scene: the tile (only if the name says it) and where its metadata came from."""
    return {"tile": tile_in_name(path.name), **{k: v for k, v in records.items() if v not in (None, ())}}
