"""STAC Items for the maps: one Item per map with the class map, its companions and styles as assets.

Hrefs are relative to the Item (it sits beside the map as ``<name>.json``), so an output folder can be moved or
served as is. The class map asset carries the classification extension (value, name, title, color hint, pixel
count); the Item carries the projection extension of the grid, shared by every raster asset.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_bounds

from suelo.atomic import write_text_atomic
from suelo.legend import normalize_class_name

QML_MEDIA_TYPE = "application/xml"  # no registered media type for QGIS styles; QML is XML
PAM_MEDIA_TYPE = "application/xml"


def _when(value: dt.date | dt.datetime | str) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


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


def classification_classes(entries: Sequence[tuple[int, str, str | None]], counts: Mapping[int, int] | None = None):
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


def write_stac_item(
    map_path: str | Path,
    grid: Any,
    entries: Sequence[tuple[int, str, str | None]],
    datetime_range: tuple[Any, Any],
    inputs: Sequence[str | Mapping[str, str]] = (),
    properties: Mapping[str, Any] | None = None,
    companions: Mapping[str, str | Path] | None = None,
    counts: Mapping[int, int] | None = None,
    item_path: str | Path | None = None,
) -> Path:
    """Write ``<map>.json``: an Item for the class map at ``map_path`` and its sidecars, atomically.

    ``inputs`` become ``derived_from`` links (hrefs, or ``{"href", "title"}``); ``companions`` maps asset keys
    (``confidence``, ``nclear``, ...) to files in the same folder; ``properties`` (model, thresholds, ...) are
    added to the Item's properties.
    """
    map_path = Path(map_path)
    item_path = Path(item_path) if item_path else map_path.with_suffix(".json")
    geometry, bbox = footprint(grid)
    start, end = (_when(v) for v in datetime_range)
    item = pystac.Item(
        id=map_path.stem,
        geometry=geometry,
        bbox=bbox,
        datetime=None,
        start_datetime=start,
        end_datetime=end,
        properties=dict(properties or {}),
    )

    def rel(path: str | Path) -> str:
        return "./" + Path(path).relative_to(item_path.parent).as_posix()

    data = pystac.Asset(rel(map_path), title="Class map", media_type=pystac.MediaType.COG, roles=["data"])
    item.add_asset("data", data)
    ClassificationExtension.ext(data, add_if_missing=True).classes = classification_classes(entries, counts)
    sidecars = {
        "style": (map_path.with_suffix(".qml"), "QGIS style (loaded automatically by QGIS)", QML_MEDIA_TYPE),
        "attribute_table": (
            map_path.with_name(map_path.name + ".aux.xml"),
            "GDAL raster attribute table and category names (PAM)",
            PAM_MEDIA_TYPE,
        ),
    }
    for key, (path, title, media) in sidecars.items():
        if path.exists():
            item.add_asset(key, pystac.Asset(rel(path), title=title, media_type=media, roles=["metadata"]))
    for key, companion in (companions or {}).items():
        path = Path(companion)
        media = pystac.MediaType.COG if path.suffix == ".tif" else QML_MEDIA_TYPE
        roles = ["data", "quality"] if path.suffix == ".tif" else ["metadata"]
        item.add_asset(key, pystac.Asset(rel(path), title=key.replace("_", " "), media_type=media, roles=roles))

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = grid.crs.to_epsg()
    proj.apply(
        code=f"EPSG:{epsg}" if epsg else None,
        wkt2=None if epsg else grid.crs.to_wkt(),
        shape=[grid.height, grid.width],
        transform=[float(v) for v in list(grid.transform)[:6]],
        bbox=[float(v) for v in grid.bounds],
    )
    for source in inputs:
        href, link_title = (source["href"], source.get("title")) if isinstance(source, Mapping) else (str(source), None)
        item.add_link(pystac.Link(rel="derived_from", target=href, title=link_title))
    payload = item.to_dict(include_self_link=False, transform_hrefs=False)
    write_text_atomic(item_path, json.dumps(payload, indent=2) + "\n")
    return item_path
