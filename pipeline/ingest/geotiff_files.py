"""GeoTIFF input files: finding them in the paths a job names, and what their headers say.

The bottom layer of the GeoTIFF reader (:mod:`suelo.ingest.geotiff`): it knows nothing about layouts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from rasterio.crs import CRS
from rasterio.errors import RasterioError

from suelo.errors import InputError
from suelo.grid import Bounds
from suelo.ingest.confine import InputAccess, open_raster, regular_file

SUFFIXES = (".tif", ".tiff", ".jp2")
#: How deep a folder is searched when subfolders are searched: a SAFE's GRANULE/<granule>/IMG_DATA/R10m is 4
#: levels below the product, a BigEarthNet patch 1 below the archive; deeper than that is not a data layout but
#: a mistyped path (``~``), which must not be walked.
MAX_DEPTH = 5


@dataclass(frozen=True)
class Found:
    """One input file and the path of ``spec.paths`` it was found under (the file itself when it was named)."""

    path: Path
    root: Path

    def folder_names(self) -> tuple[str, ...]:
        """Names of the folders from ``root`` (included) down to the file: a granule folder ``L2A_T31UFS_...``
        says the level of the band files inside it."""
        if self.root == self.path:
            return ()
        parents = self.path.relative_to(self.root).parent.parts
        return (self.root.name, *parents)


def find_files(paths: tuple[Path, ...], access: InputAccess, *, recursive: bool = False) -> list[Found]:
    """Every input file: named files as they are, folders searched for :data:`SUFFIXES` (with ``recursive``, their
    subfolders too, symlinked folders not followed). Files found in a folder must resolve into an allowed folder;
    named files and folders are allowed by being named."""
    found: list[Found] = []
    for path in paths:
        if path.is_dir():
            files = sorted(_search(path, recursive))
            if not files:
                where = " or its subfolders" if recursive else ""
                raise InputError(path, f"folder{where} holds no *.tif / *.tiff / *.jp2 files")
            for file in files:
                access.confine(file, file)
            found.extend(Found(file, path) for file in files)
        elif path.exists():
            regular_file(path, path, _what(path))  # a FIFO or /dev/zero would block or never end
            found.append(Found(path, path))
        else:
            raise InputError(path, "GeoTIFF file or folder does not exist")
    return found


def _search(folder: Path, recursive: bool) -> Iterator[Path]:
    if not recursive:
        yield from (p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        return
    depth0 = len(folder.parts)
    for current, subfolders, names in os.walk(folder, followlinks=False):
        here = Path(current)
        if len(here.parts) - depth0 >= MAX_DEPTH:
            subfolders.clear()
        subfolders.sort()
        yield from (here / n for n in names if Path(n).suffix.lower() in SUFFIXES and (here / n).is_file())


def _what(path: Path) -> str:
    return "JPEG 2000 file" if path.suffix.lower() == ".jp2" else "GeoTIFF"


@dataclass(frozen=True)
class RasterInfo:
    """What one file's header says: band count, CRS, footprint, pixel size, band descriptions and metadata tags."""

    path: Path
    count: int
    crs: CRS
    bounds: Bounds
    pixel_size: float  # in CRS units; the finest of several files of one band is its native resolution
    descriptions: tuple[str | None, ...]
    tags: Mapping[str, str]  # GDAL metadata of the default domain, keys upper-cased (TIFFTAG_DATETIME, ...)

    @property
    def described(self) -> bool:
        return any(d for d in self.descriptions)


def raster_info(path: Path) -> RasterInfo:
    """Open ``path`` (GeoTIFF/JPEG 2000 drivers only: no VRT named .tif) and read its header."""
    try:
        with open_raster(str(path)) as src:
            count, crs, bounds, transform = src.count, src.crs, src.bounds, src.transform
            descriptions = tuple((d or "").strip() or None for d in src.descriptions)
            tags = _tag_names(src.tags())
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"cannot read {_what(path)}: corrupt, truncated or unreadable ({exc})") from exc
    if crs is None:
        raise InputError(path, f"{_what(path)} has no coordinate reference system")
    return RasterInfo(
        path=path,
        count=count,
        crs=crs,
        bounds=(bounds.left, bounds.bottom, bounds.right, bounds.top),
        pixel_size=abs(transform.a),
        descriptions=descriptions,
        tags=tags,
    )


def _tag_names(tags: Mapping[str, str]) -> dict[str, str]:
    """Metadata keys upper-cased. GDAL splits ``name=value`` items at the first ``:`` or ``=``, so an Earth Engine
    property written as ``system:time_start=1623494779024`` reads back as ``system`` = ``time_start=1623...``;
    such a pair is put back together (``SYSTEM:TIME_START``)."""
    named = {}
    for key, value in tags.items():
        name, text = str(key).upper(), str(value)
        if "=" in text and name == "SYSTEM":
            rest, text = text.split("=", 1)
            name = f"{name}:{rest.upper()}"
        named[name] = text
    return named
