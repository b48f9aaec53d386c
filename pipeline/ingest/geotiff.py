"""GeoTIFF reader: plain multi-band GeoTIFFs, one acquisition per file; band order and radiometry from spec.

A GeoTIFF carries no Sentinel-2 metadata, so everything a SAFE or STAC item would say (band names, date,
processing baseline, nodata) comes from the job spec; nothing is guessed from the pixels.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

from rasterio.errors import RasterioError

from pipeline.errors import ConfigError, InputError
from pipeline.ingest.confine import UNCONFINED, InputAccess, open_raster, regular_file
from pipeline.ingest.scene import BandRef, Radiometry, Scene, baseline_at_least, tile_in_name
from pipeline.settings import GeoTiffInput, IngestSpec

SUFFIXES = (".tif", ".tiff")


def discover(spec: GeoTiffInput, ingest: IngestSpec, *, access: InputAccess | None = None) -> list[Scene]:
    """One :class:`Scene` per GeoTIFF in ``spec.paths`` (files, or folders of ``*.tif`` / ``*.tiff``).

    ``access``: the job's input rules; a file found in a folder must resolve into an allowed folder (a symlink in
    it may point anywhere), the files and folders named in ``spec.paths`` are allowed by being named.
    """
    access = access or UNCONFINED
    pattern = _date_pattern(spec.date_pattern)
    radiometry = _radiometry(spec)
    return [_scene(path, spec, pattern, radiometry) for path in _files(spec.paths, access)]


def _files(paths: tuple[Path, ...], access: InputAccess) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
            if not found:
                raise InputError(path, "folder holds no *.tif / *.tiff files")
            for file in found:
                access.confine(file, file)
            yield from found
        elif path.exists():
            regular_file(path, path, "GeoTIFF")  # a FIFO or /dev/zero would block or never end
            yield path
        else:
            raise InputError(path, "GeoTIFF file or folder does not exist")


def _date_pattern(text: str) -> re.Pattern[str]:
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ConfigError(f"geotiff date_pattern {text!r} is not a valid regular expression ({exc})") from exc
    missing = {"year", "month", "day"} - set(pattern.groupindex)
    if missing:
        raise ConfigError(f"geotiff date_pattern {text!r} lacks the named groups {sorted(missing)}")
    return pattern


def _radiometry(spec: GeoTiffInput) -> Radiometry:
    if spec.add_offset is not None:
        offset, source = spec.add_offset, f"job spec add_offset {spec.add_offset:g}"
    else:
        try:
            newer = baseline_at_least(spec.processing_baseline, "04.00")
        except ValueError as exc:
            raise ConfigError(f"geotiff processing_baseline {spec.processing_baseline!r} is not like '04.00'") from exc
        offset = -1000.0 if newer else 0.0
        # L1C without a baseline is allowed by the settings; it then has no offset, which the source records.
        source = f"job spec processing_baseline {spec.processing_baseline}"
    spectral = [b for b in spec.bands if b != "SCL"]
    return Radiometry(
        quantification=spec.quantification,
        offsets={b: float(offset) for b in spectral},
        processing_baseline=spec.processing_baseline,
        source=source,
    )


def _scene(path: Path, spec: GeoTiffInput, pattern: re.Pattern[str], radiometry: Radiometry) -> Scene:
    try:
        with open_raster(str(path)) as src:  # GeoTIFF/JPEG 2000 drivers only: no VRT named .tif
            count, crs, bounds = src.count, src.crs, src.bounds
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"cannot read GeoTIFF: corrupt, truncated or unreadable ({exc})") from exc
    if count != len(spec.bands):
        raise InputError(path, f"has {count} band(s) but the spec names {len(spec.bands)}: {', '.join(spec.bands)}")
    if crs is None:
        raise InputError(path, "GeoTIFF has no coordinate reference system")

    refs = {name: BandRef(str(path), i + 1, f"{path} band {i + 1} ({name})") for i, name in enumerate(spec.bands)}
    scl = refs.pop("SCL", None)
    return Scene(
        scene_id=path.stem,
        acquired=_acquired(path, pattern),
        level=spec.product_level,
        source=str(path),
        bands=refs,
        radiometry=radiometry,
        crs=crs,
        bounds=(bounds.left, bounds.bottom, bounds.right, bounds.top),
        scl=scl,
        nodata_values=(spec.nodata,) if spec.nodata is not None else (),
        extra={"tile": tile_in_name(path.name)},  # a plain GeoTIFF knows its tile only if its name says it
    )


def _acquired(path: Path, pattern: re.Pattern[str]) -> dt.datetime:
    match = pattern.search(path.name)
    if match is None:
        raise InputError(path, f"no acquisition date in the file name (date_pattern {pattern.pattern!r})")
    try:
        # Only the day is known; UTC midnight keeps it comparable with the (UTC) times of other readers.
        return dt.datetime(
            int(match.group("year")),
            int(match.group("month")),
            int(match.group("day")),
            tzinfo=dt.timezone.utc,
        )
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"file name date {match.group(0)!r} is not a valid date ({exc})") from exc
