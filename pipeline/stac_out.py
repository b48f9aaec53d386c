"""STAC outputs: one Item per map set (the class map, its companions, styles and any other output as assets) and one
Collection per run.

Every href is relative (assets and ``derived_from`` links to local inputs, relative to the Item's folder; the
Collection's ``item`` links and the Items' ``collection``/``parent``/``root`` links back), so an output folder can
be moved or served as it is. Remote inputs keep their URLs.

What an Item declares, and why:

- **projection v1.2.0**: ``proj:code`` and ``proj:epsg`` of the grid in the Item properties (filterable, and
  inherited by every asset), ``proj:shape``, ``proj:transform`` and ``proj:bbox`` on each raster asset (the grid
  describes the rasters, not the GeoPackage or the styles; a vector asset in another CRS gets its own
  ``proj:code``). v1.2.0 is the version that has both fields: ``proj:code`` for current readers (GDAL 3.10+,
  odc-stac, pystac) and the deprecated ``proj:epsg``, the only field stackstac (0.5.x) picks a CRS from.
  v2.0.0 removed ``proj:epsg`` (its schema rejects it). pystac reads v1.2.0 and migrates it to v2.0.0.
- **raster v1.1.0** on every raster asset: ``raster:bands`` with ``data_type``, ``nodata``, ``sampling``,
  ``spatial_resolution`` (metres, projected grids only) and, for the confidence, ``unit`` ``percent`` with
  ``scale`` 1 and ``offset`` 0 (the values are the percent itself). odc-stac takes its dtype and nodata from here.
- **file v2.1.0** on every asset: ``file:size`` and ``file:checksum`` (a multihash: ``1220`` = SHA2-256, 32 bytes,
  then the hex digest) of the file as written.
- **classification v2.0.0** on the class map: one class object per legend and reason code (value, name, title,
  color hint, pixel count; the nodata code flagged ``nodata``).

The period is ``start_datetime`` (00:00:00Z of its first day) to ``end_datetime`` (23:59:59.999999Z of its last
day: STAC's end is inclusive). The Items do not declare the projection extension's current version because of
stackstac; :data:`PROJECTION_SCHEMA` is the one line to change once stackstac reads ``proj:code``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pystac
from pystac.extensions.classification import Classification
from pystac.utils import datetime_to_str, str_to_datetime
from rasterio.crs import CRS
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds

from suelo.atomic import file_sha256, write_text_atomic
from suelo.ingest.scene import STAC_ITEM_MEDIA_TYPE, SourceLink
from suelo.legend import normalize_class_name

PROJECTION_SCHEMA = "https://stac-extensions.github.io/projection/v1.2.0/schema.json"
RASTER_SCHEMA = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"

COG_MEDIA_TYPE = str(pystac.MediaType.COG)
GEOTIFF_MEDIA_TYPE = str(pystac.MediaType.GEOTIFF)
GEOPACKAGE_MEDIA_TYPE = "application/geopackage+sqlite3"  # registered with IANA by the OGC
XML_MEDIA_TYPE = "application/xml"  # QGIS styles (.qml) and GDAL PAM files (.aux.xml): XML, no type of their own
QML_MEDIA_TYPE = XML_MEDIA_TYPE
PAM_MEDIA_TYPE = XML_MEDIA_TYPE
STAC_COLLECTION_MEDIA_TYPE = "application/json"

#: Media types by file name ending (the longest matching ending wins: ``.aux.xml`` before ``.xml``).
MEDIA_TYPES: dict[str, str] = {
    ".tif": GEOTIFF_MEDIA_TYPE,
    ".tiff": GEOTIFF_MEDIA_TYPE,
    ".gpkg": GEOPACKAGE_MEDIA_TYPE,
    ".qml": QML_MEDIA_TYPE,
    ".aux.xml": PAM_MEDIA_TYPE,
    ".xml": XML_MEDIA_TYPE,
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".fgb": "application/vnd.flatgeobuf",
    ".parquet": "application/vnd.apache.parquet",
    ".nc": "application/netcdf",
    ".csv": "text/csv",
    ".html": "text/html",
    ".png": "image/png",
    ".zip": "application/zip",
}
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".fgb", ".shp", ".parquet")

#: ``1220``: the multihash prefix of SHA2-256 (function code 0x12, digest length 0x20 bytes).
SHA256_MULTIHASH_PREFIX = "1220"


def media_type_for(path: str | Path) -> str | None:
    """The media type of a file from its name (``None`` when unknown: the asset then has no ``type``)."""
    name = Path(path).name.lower()
    endings = sorted((e for e in MEDIA_TYPES if name.endswith(e)), key=len, reverse=True)
    return MEDIA_TYPES[endings[0]] if endings else None


@dataclass(frozen=True)
class RasterBand:
    """What ``raster:bands`` says of a single-band raster asset (raster extension v1.1.0)."""

    data_type: str
    nodata: int | float | None = None
    unit: str | None = None
    scale: float | None = None
    offset: float | None = None

    def to_dict(self, spatial_resolution: float | None) -> dict[str, Any]:
        band: dict[str, Any] = {"data_type": self.data_type}
        if self.nodata is not None:
            band["nodata"] = self.nodata
        band["sampling"] = "area"  # pixel values are areas, GDAL's and the COGs' PixelIsArea
        if spatial_resolution is not None:
            band["spatial_resolution"] = spatial_resolution
        for key in ("unit", "scale", "offset"):
            value = getattr(self, key)
            if value is not None:
                band[key] = value
        return band


@dataclass(frozen=True)
class StacAsset:
    """One file of an Item. ``band``: a raster on the Item's grid (raster and projection fields); ``classes``:
    the class map's (code, name, color) entries, ``counts`` its pixels per code (classification extension);
    ``crs``: the CRS of a vector file when it is not the grid's."""

    path: Path
    title: str
    roles: tuple[str, ...] = ("data",)
    media_type: str | None = None  # None: from the file name (media_type_for)
    description: str | None = None
    band: RasterBand | None = None
    classes: Sequence[tuple[int, str, str | None]] = ()
    counts: Mapping[int, int] | None = None
    crs: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _day_start(value: dt.date | dt.datetime | str) -> dt.datetime:
    when = _as_datetime(value)
    return when if isinstance(when, dt.datetime) else dt.datetime.combine(when, dt.time.min, dt.timezone.utc)


def _day_end(value: dt.date | dt.datetime | str) -> dt.datetime:
    """A date (or ``YYYY-MM-DD``) is the period's last day: its end, 23:59:59.999999 UTC. A datetime is kept."""
    when = _as_datetime(value)
    return when if isinstance(when, dt.datetime) else dt.datetime.combine(when, dt.time.max, dt.timezone.utc)


def _as_datetime(value: dt.date | dt.datetime | str) -> dt.date | dt.datetime:
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return dt.date.fromisoformat(text)
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return value


def footprint(grid: Any, densify: int = 8) -> tuple[dict[str, Any], list[float]]:
    """WGS 84 polygon (edges densified, so a UTM footprint stays accurate) and bbox of the grid."""
    left, bottom, right, top = grid.bounds
    xs: list[float] = []
    ys: list[float] = []
    corners = [(left, top), (right, top), (right, bottom), (left, bottom)]
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
        for i in range(densify):
            xs.append(x0 + (x1 - x0) * i / densify)
            ys.append(y0 + (y1 - y0) * i / densify)
    lon, lat = transform_points(grid.crs, "EPSG:4326", xs, ys)
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    bbox = list(transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21))
    return {"type": "Polygon", "coordinates": [ring]}, [round(v, 7) for v in bbox]


def classification_classes(
    entries: Sequence[tuple[int, str, str | None]], counts: Mapping[int, int] | None = None
) -> list[Classification]:
    """classification:classes for map entries; the nodata entry is flagged ``nodata`` and has no color hint."""
    classes = []
    for code, name, color in entries:
        classes.append(
            Classification.create(
                value=int(code),
                name=normalize_class_name(name) or f"class_{code}",
                title=name,
                description=name,
                color_hint=color[1:].upper() if color else None,
                nodata=True if color is None else None,
                count=int(counts[code]) if counts and code in counts else None,
            )
        )
    return classes


def projection_fields(crs: Any) -> dict[str, Any]:
    """``proj:code`` and ``proj:epsg`` of a CRS with an EPSG code, else ``proj:wkt2`` (projection v1.2.0)."""
    crs = CRS.from_user_input(crs)
    epsg = crs.to_epsg()
    if epsg:
        return {"proj:code": f"EPSG:{epsg}", "proj:epsg": int(epsg)}
    return {"proj:code": None, "proj:epsg": None, "proj:wkt2": crs.to_wkt()}


def grid_fields(grid: Any) -> dict[str, Any]:
    """``proj:shape``, ``proj:transform`` and ``proj:bbox`` (in the grid's CRS) of a raster on ``grid``."""
    return {
        "proj:shape": [int(grid.height), int(grid.width)],
        "proj:transform": [float(v) for v in list(grid.transform)[:6]],
        "proj:bbox": [float(v) for v in grid.bounds],
    }


def spatial_resolution(grid: Any) -> float | None:
    """The grid's mean pixel size in metres, or None for a grid whose CRS units are not linear (degrees)."""
    crs = CRS.from_user_input(grid.crs)
    if not crs.is_projected:
        return None
    _unit, factor = crs.linear_units_factor
    size = (abs(grid.transform.a) + abs(grid.transform.e)) / 2 * factor
    return round(float(size), 6)


def file_fields(path: Path) -> dict[str, Any]:
    """``file:size`` and ``file:checksum`` (SHA2-256 multihash) of the file as it is now."""
    return {"file:size": path.stat().st_size, "file:checksum": SHA256_MULTIHASH_PREFIX + file_sha256(path)}


def vector_crs(path: Path) -> Any:
    """The CRS of a vector file (pyogrio, the driver geopandas writes with), or None when it cannot say."""
    try:
        import pyogrio

        crs = pyogrio.read_info(str(path)).get("crs")
    except Exception:  # not a vector file pyogrio reads: the asset just has no CRS of its own
        return None
    return CRS.from_user_input(crs) if crs else None


def relative_href(target: str | Path, folder: Path) -> str:
    """``target`` relative to ``folder`` (POSIX separators; ``./`` before a name in the folder itself)."""
    rel = Path(os.path.relpath(os.path.abspath(target), os.path.abspath(folder))).as_posix()
    return rel if rel.startswith("../") or rel == ".." else f"./{rel}"


def is_remote(href: str) -> bool:
    """A URL (``https://``, ``s3://``, ...), not a local path; a Windows drive letter is not a scheme."""
    scheme = urlsplit(href).scheme
    return len(scheme) > 1 and href[len(scheme) :].startswith("://")


def derived_from_link(source: str | SourceLink | Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """A ``derived_from`` link of an input, its href relative to ``folder`` when local, unchanged when remote.

    ``source``: a scene's :class:`~suelo.ingest.scene.SourceLink` (``Scene.link()``), a mapping of the same fields
    (``href``, ``title``, ``type``), or a plain path or URL. A local input without a title is titled by its name.
    """
    if isinstance(source, SourceLink):
        href, title, media = source.href, source.title, source.media_type
    elif isinstance(source, Mapping):
        href, title, media = str(source["href"]), source.get("title"), source.get("type")
    else:
        href, title, media = str(source).strip(), None, None
    if not is_remote(href):
        title = title or Path(href).name
        href = relative_href(Path(href), folder)
    link: dict[str, Any] = {"rel": "derived_from", "href": href}
    if media:
        link["type"] = media
    if title:
        link["title"] = str(title)
    return link


def _asset_dict(asset: StacAsset, grid: Any, folder: Path, grid_crs: CRS) -> dict[str, Any]:
    path = Path(asset.path)
    if not path.is_file():
        raise FileNotFoundError(f"STAC asset {path} does not exist")
    out: dict[str, Any] = {"href": relative_href(path, folder)}
    media = asset.media_type or media_type_for(path)
    if media:
        out["type"] = media
    out["title"] = asset.title
    if asset.description:
        out["description"] = asset.description
    out["roles"] = list(asset.roles)
    if asset.band is not None:
        out.update(grid_fields(grid))
        out["raster:bands"] = [asset.band.to_dict(spatial_resolution(grid))]
    elif asset.crs is not None and CRS.from_user_input(asset.crs) != grid_crs:
        out.update({k: v for k, v in projection_fields(asset.crs).items() if v is not None})
    if asset.classes:
        out["classification:classes"] = [c.to_dict() for c in classification_classes(asset.classes, asset.counts)]
    out.update(file_fields(path))
    out.update(asset.extra)
    return out


def write_stac_item(
    item_path: str | Path,
    grid: Any,
    datetime_range: tuple[Any, Any],
    assets: Mapping[str, StacAsset],
    inputs: Sequence[str | Mapping[str, Any]] = (),
    properties: Mapping[str, Any] | None = None,
    item_id: str | None = None,
) -> Path:
    """Write the Item at ``item_path`` (atomically) for ``assets``, files on ``grid``, over ``datetime_range``.

    ``datetime_range`` is ``(start, end)``, the period's first and last day (dates or ``YYYY-MM-DD``; datetimes are
    taken as they are): ``start_datetime`` is the start of the first day and ``end_datetime`` the end of the last.
    ``inputs`` become ``derived_from`` links (:func:`derived_from_link`); ``properties`` (model, thresholds, ...)
    are added to the Item's properties. The file fields are computed from the files as they are now, so write the
    Item after its assets. Returns ``item_path``.
    """
    item_path = Path(item_path)
    folder = item_path.parent
    geometry, bbox = footprint(grid)
    start, end = _day_start(datetime_range[0]), _day_end(datetime_range[1])
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    grid_crs = CRS.from_user_input(grid.crs)
    asset_dicts = {key: _asset_dict(asset, grid, folder, grid_crs) for key, asset in assets.items()}
    extensions = [PROJECTION_SCHEMA, FILE_SCHEMA]
    if any(a.band is not None for a in assets.values()):
        extensions.insert(1, RASTER_SCHEMA)
    if any(a.classes for a in assets.values()):
        extensions.append(CLASSIFICATION_SCHEMA)
    props: dict[str, Any] = {
        "datetime": None,
        "start_datetime": datetime_to_str(start),
        "end_datetime": datetime_to_str(end),
        **{k: v for k, v in projection_fields(grid_crs).items() if v is not None},
        **dict(properties or {}),
    }
    payload: dict[str, Any] = {
        "type": "Feature",
        "stac_version": pystac.get_stac_version(),
        "stac_extensions": extensions,
        "id": item_id or item_path.stem,
        "geometry": geometry,
        "bbox": bbox,
        "properties": props,
        "links": [derived_from_link(source, folder) for source in inputs],
        "assets": asset_dicts,
    }
    write_text_atomic(item_path, json.dumps(payload, indent=2, default=str) + "\n")
    return item_path


def write_stac_collection(
    path: str | Path,
    items: Sequence[str | Path],
    title: str,
    description: str,
    collection_id: str | None = None,
    license: str = "other",
    license_href: str | Path | None = None,
    keywords: Sequence[str] = (),
) -> Path:
    """Write a Collection at ``path`` (``collection.json`` of a run) holding ``items`` (Item files), atomically.

    The Collection links each Item (``item``, relative); each Item is rewritten (atomically) with ``collection``,
    ``parent`` and ``root`` links back to it and its ``collection`` id. The extent is the union of the Items' bboxes
    and their periods; the summaries list the Items' ``proj:code``. ``license``: an SPDX identifier or expression,
    or ``other`` (STAC 1.1 deprecates ``proprietary``); ``license_href``: the licence text (a URL or a local file,
    linked as ``license``). ``collection_id`` defaults to the name of the folder of ``path``. The Items are written
    first and the Collection last, so a Collection on disk always has its Items linked back. Returns ``path``.
    """
    path = Path(path)
    if not items:
        raise ValueError("a STAC Collection needs at least one Item")
    collection_id = collection_id or path.parent.resolve().name
    documents = [(Path(p), json.loads(Path(p).read_text(encoding="utf-8"))) for p in items]
    boxes, starts, ends, codes = [], [], [], set()
    for item_file, item in documents:
        if item.get("type") != "Feature":
            raise ValueError(f"{item_file} is not a STAC Item")
        if item.get("bbox"):
            boxes.append(item["bbox"])
        props = item["properties"]
        starts.append(str_to_datetime(props.get("start_datetime") or props["datetime"]))
        ends.append(str_to_datetime(props.get("end_datetime") or props["datetime"]))
        if props.get("proj:code"):
            codes.add(props["proj:code"])
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]

    for item_file, item in documents:
        back = relative_href(path, item_file.parent)
        links = [link for link in item.get("links", []) if link.get("rel") not in ("collection", "parent", "root")]
        for rel in ("collection", "parent", "root"):
            links.append({"rel": rel, "href": back, "type": STAC_COLLECTION_MEDIA_TYPE, "title": title})
        item["links"] = links
        item["collection"] = collection_id
        write_text_atomic(item_file, json.dumps(item, indent=2, default=str) + "\n")

    links = [{"rel": "root", "href": f"./{path.name}", "type": STAC_COLLECTION_MEDIA_TYPE, "title": title}]
    if license_href is not None:
        href = str(license_href)
        links.append({"rel": "license", "href": href if is_remote(href) else relative_href(href, path.parent)})
    for item_file, item in documents:
        links.append(
            {
                "rel": "item",
                "href": relative_href(item_file, path.parent),
                "type": STAC_ITEM_MEDIA_TYPE,
                "title": item["id"],
            }
        )
    collection: dict[str, Any] = {
        "type": "Collection",
        "stac_version": pystac.get_stac_version(),
        "stac_extensions": [PROJECTION_SCHEMA] if codes else [],
        "id": collection_id,
        "title": title,
        "description": description,
        "license": license,
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[datetime_to_str(min(starts)), datetime_to_str(max(ends))]]},
        },
        "links": links,
    }
    if keywords:
        collection["keywords"] = list(keywords)
    if codes:
        collection["summaries"] = {"proj:code": sorted(codes)}
    write_text_atomic(path, json.dumps(collection, indent=2, default=str) + "\n")
    return path
