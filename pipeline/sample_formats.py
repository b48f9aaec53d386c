"""What a training-sample file is, and what it needs, before any loader reads it.

``suelo train`` takes WorldCereal extractions, labelled points and polygons, and label rasters. A file that is
none of these, or one given without what it needs (a vector file without ``--cube``, a plain table without
``--class-column``), used to end with "give --cube" whatever the problem was. :func:`check_sample_file` looks at
the file's first bytes (not only its name), says what it is, what was expected and what is missing, and returns
which loader reads it.
"""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path

from suelo.errors import InputError, file_kind

SUPPORTED = (
    "expected a WorldCereal point extraction (.parquet/.geoparquet with an ewoc_code column), labelled points or "
    "polygons with a class column (GeoPackage, GeoJSON, Shapefile, FlatGeobuf, GeoParquet, or a CSV/parquet table "
    "with lon and lat columns) or a label raster (GeoTIFF)"
)
RASTER_SUFFIXES = (".tif", ".tiff")
PARQUET_SUFFIXES = (".parquet", ".geoparquet")
TEXT_TABLE_SUFFIXES = (".csv", ".txt")  # suelo.samples.read_label_vector reads both as CSV
SPREADSHEET_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")
# column names read_label_vector accepts for the point position of a plain table (WGS84 degrees)
LON_NAMES = ("lon", "longitude", "x")
LAT_NAMES = ("lat", "latitude", "y")
_HEAD_BYTES = 4096
_DRIVER_NAMES = {"GPKG": "GeoPackage", "ESRI Shapefile": "Shapefile"}


def check_sample_file(path: str | Path, have_cube: bool, class_column: str | None) -> str:
    """Which loader reads ``path``: ``"worldcereal"``, ``"raster"`` or ``"vector"`` (points/polygons, also plain
    tables with lon/lat); an :class:`InputError` naming what the file is and what it lacks when it cannot be used
    with what was given (``have_cube``: a cube to sample labels from; ``class_column``: the labels' class column)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        raise InputError(path, f"is {file_kind(mode)}, not a sample file; {SUPPORTED}")
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    suffix = path.suffix.lower()
    kind = _sniff(head, suffix)

    if kind == "tiff":
        if suffix not in RASTER_SUFFIXES:
            raise InputError(path, "is a TIFF: name a label raster .tif or .tiff")
        if not have_cube:
            raise InputError(
                path, "is a label raster (GeoTIFF): its labels are read at a cube's pixels, so it needs --cube "
                "(the monthly cube they lie on)",
            )  # fmt: skip
        return "raster"
    if suffix in RASTER_SUFFIXES:
        raise InputError(path, f"is named {suffix} but is not a TIFF (it is {_describe(kind)}); {SUPPORTED}")
    if kind == "parquet":
        if suffix not in PARQUET_SUFFIXES:
            raise InputError(path, "is a parquet file: name it .parquet or .geoparquet")
        return _check_parquet(path, have_cube, class_column)
    if suffix in PARQUET_SUFFIXES:
        raise InputError(path, f"is named {suffix} but is not a parquet file (it is {_describe(kind)}); {SUPPORTED}")
    if kind in ("excel", "spreadsheet") or suffix in SPREADSHEET_SUFFIXES:
        raise InputError(
            path, f"is {_describe(kind if kind in ('excel', 'spreadsheet') else 'excel')}, which suelo does not "
            "read: save the sheet as CSV with lon and lat columns (WGS84 degrees) and a class column, then give "
            "the CSV with --cube and --class-column",
        )  # fmt: skip
    if kind == "netcdf":
        raise InputError(
            path, "is a NetCDF/HDF5 file, not labelled samples; if it is the monthly cube, give it as --cube"
        )
    if kind == "text" and suffix in TEXT_TABLE_SUFFIXES:
        return _check_text_table(path, head, have_cube, class_column)
    if kind in ("sqlite", "json", "shapefile", "flatgeobuf", "zip") or kind == "text":
        return _check_vector(path, kind, have_cube, class_column)
    raise InputError(path, f"is {_describe(kind)}, not a sample file suelo can read; {SUPPORTED}")


def _sniff(head: bytes, suffix: str) -> str:
    """The file's format from its first bytes."""
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"PAR1":
        return "parquet"
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    if head[:4] == b"\x00\x00\x27\x0a":
        return "shapefile"
    if head[:3] == b"fgb":
        return "flatgeobuf"
    if head[:4] == b"\x89HDF" or head[:3] == b"CDF":
        return "netcdf"
    if head[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":  # OLE2: Excel 97-2003
        return "excel"
    if head[:4] == b"PK\x03\x04":
        if b"xl/" in head or suffix in (".xlsx", ".xlsm"):
            return "excel"
        if b"opendocument.spreadsheet" in head or suffix == ".ods":
            return "spreadsheet"
        return "zip"
    if not head:
        return "empty"
    if b"\x00" in head:
        return "binary"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith(("{", "[")):
        return "json"
    return "text"


def _describe(kind: str) -> str:
    return {
        "tiff": "a TIFF",
        "parquet": "a parquet file",
        "sqlite": "an SQLite database",
        "shapefile": "a Shapefile",
        "flatgeobuf": "a FlatGeobuf file",
        "netcdf": "a NetCDF/HDF5 file",
        "excel": "an Excel workbook",
        "spreadsheet": "an OpenDocument spreadsheet",
        "zip": "a zip archive",
        "empty": "an empty file",
        "binary": "a binary file of unknown format",
        "json": "a JSON file",
        "text": "a text file",
    }.get(kind, "a file of unknown format")


def _needs(have_cube: bool, class_column: str | None, columns: list[str]) -> str:
    """' give --cube ... and --class-column ...' for what is missing, '' when nothing is."""
    missing = []
    if not have_cube:
        missing.append("--cube (the monthly cube whose pixels the labels are read at)")
    if class_column is None:
        shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
        missing.append(f"--class-column naming its class column (one of: {shown})" if columns else "--class-column")
    return " and ".join(missing)


def _check_parquet(path: Path, have_cube: bool, class_column: str | None) -> str:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise InputError(path, f"is a parquet file that cannot be read: {exc}") from exc
    names = [str(n) for n in schema.names]
    if "ewoc_code" in names:
        return "worldcereal"
    geo = b"geo" in (schema.metadata or {})
    lower = {n.lower() for n in names}
    has_lonlat = any(k in lower for k in LON_NAMES) and any(k in lower for k in LAT_NAMES)
    what = "a GeoParquet table" if geo else "a parquet table"
    if not geo and not has_lonlat:
        raise InputError(
            path, f"is {what} with neither an ewoc_code column (a WorldCereal extraction) nor lon and lat columns "
            f"or a GeoParquet geometry (labelled points); its columns: {', '.join(names[:20])}",
        )  # fmt: skip
    return _labelled_features(path, f"{what} without ewoc_code (so not a WorldCereal extraction)", names,
                              have_cube, class_column)  # fmt: skip


def _check_text_table(path: Path, head: bytes, have_cube: bool, class_column: str | None) -> str:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = text.splitlines()[0] if text.splitlines() else ""
    header = next(csv.reader(io.StringIO(first)), [])  # as pandas reads it: names are not stripped
    lower = {c.strip().lower() for c in header}
    if not (any(k in lower for k in LON_NAMES) and any(k in lower for k in LAT_NAMES)):
        shown = first[:80] + ("..." if len(first) > 80 else "")
        raise InputError(
            path, f"is a text file whose first line ({shown!r}) is not a CSV header with lon and lat columns; a "
            "table of labelled points needs a header naming lon, lat (WGS84 degrees) and a class column",
        )  # fmt: skip
    return _labelled_features(path, "a CSV table of labelled points", header, have_cube, class_column)


def _check_vector(path: Path, kind: str, have_cube: bool, class_column: str | None) -> str:
    import pyogrio

    try:
        info = pyogrio.read_info(path)
    except Exception as exc:  # GDAL's errors for files it cannot open as vector data
        problem = " ".join(str(exc).split())[:200]
        raise InputError(
            path, f"is {_describe(kind)} that GDAL cannot open as points or polygons ({problem}); {SUPPORTED}"
        ) from exc
    fields = [str(f) for f in info.get("fields", [])]
    geometry = info.get("geometry_type") or "no"
    count = info.get("features")
    driver = _DRIVER_NAMES.get(str(info.get("driver")), str(info.get("driver") or "vector"))
    what = f"a {driver} file of {'' if count is None or count < 0 else f'{count} '}"
    return _labelled_features(path, f"{what}{geometry} features", fields, have_cube, class_column)


def _labelled_features(path: Path, what: str, columns: list[str], have_cube: bool, class_column: str | None) -> str:
    """Points/polygons need a cube and a class column that exists."""
    if class_column is not None and class_column not in columns:
        shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
        raise InputError(path, f"is {what} with no class column {class_column!r} (its columns: {shown})")
    missing = _needs(have_cube, class_column, columns)
    if missing:
        raise InputError(path, f"is {what}; as labelled points or polygons it needs {missing}")
    return "vector"
