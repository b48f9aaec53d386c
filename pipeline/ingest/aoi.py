"""Areas of interest: a vector file (GeoJSON, GeoPackage, Shapefile, ...) or a bbox, in any CRS."""

from __future__ import annotations

import os
import stat
from typing import Any

from rasterio.crs import CRS
from shapely.geometry import box, mapping

from suelo.errors import InputError, file_kind
from suelo.grid import as_crs
from suelo.settings import AoiSpec


def load_aoi(spec: AoiSpec) -> tuple[dict[str, Any], CRS]:
    """The AOI as one GeoJSON-like geometry (union of all features) and its CRS."""
    if spec.bbox is not None:
        return mapping(box(*spec.bbox)), as_crs(spec.crs)
    assert spec.file is not None
    _check_file(str(spec.file))
    import geopandas as gpd

    try:
        frame = gpd.read_file(spec.file)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(spec.file, f"cannot read AOI vector file ({exc})") from exc
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if frame.empty:
        raise InputError(spec.file, "AOI file has no geometries")
    if frame.crs is None:
        raise InputError(spec.file, "AOI file has no CRS")
    union = frame.geometry.union_all()
    return mapping(union), as_crs(frame.crs.to_wkt())


def _check_file(path: str) -> None:
    """Refuse what GDAL would block on or read forever (a FIFO, /dev/zero behind a symlink) before opening it.

    A folder is allowed (a folder of shapefiles is a vector dataset); GDAL virtual paths are not (give the file).
    """
    if path.lower().startswith("/vsi"):
        raise InputError(path, "GDAL virtual file paths (/vsi...) are not accepted; give the file (a .zip works)")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(path, "cannot read AOI vector file (does not exist)") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read AOI vector file ({exc})") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(path, f"cannot read AOI vector file: it is {file_kind(mode)}, not a regular file")
