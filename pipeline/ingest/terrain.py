"""DEM reader: elevation and slope on the job grid, from GeoTIFF/COG tiles or STAC Items with a DEM asset.

What was chosen, and why:

- Inputs: GeoTIFF/COG tiles in any one CRS (projected, or geographic such as Copernicus DEM GLO-30 in EPSG:4326),
  folders of ``*.tif``/``*.tiff`` (a folder without any holds STAC ``*.json``), and STAC Item / ItemCollection JSON
  whose DEM asset is ``data`` (Planetary Computer ``cop-dem-glo-30``), ``elevation`` or ``dem``, else the first
  asset with role ``data`` and an ``image/tiff`` type. Hrefs are resolved and confined exactly as for Sentinel-2
  STAC items (:mod:`suelo.ingest.stac`): relative to the JSON, local files inside the job's allowed folders, remote
  ones http(s)/s3 on allowed hosts, GeoTIFF/JPEG 2000 only. Tiles in different CRSs are refused (one
  :class:`InputError` naming the odd tile): mosaicking them would resample one set before the slope is computed.
- Elevation units: metres. A band stating feet (``ft``, ``foot``, ``US survey foot``) is converted to metres
  (:attr:`DemSource.z_scale`); any other stated unit is refused; no stated unit is read as metres (Copernicus DEM,
  SRTM and most COGs state none). Tiles stating different units are refused.
- Mosaic: :func:`rasterio.merge.merge` of the tiles that touch the grid, over the grid's footprint (transformed into
  the DEM's CRS) plus a margin of :data:`MARGIN` DEM pixels, on the DEM's own lattice (the first tile's origin, the
  finest tile resolution). Tiles on that lattice are copied exactly; a tile on another lattice (Copernicus DEM tiles
  across a latitude zone change their longitude spacing) is resampled bilinearly so no stair-steps enter the slope.
  Where tiles overlap the first one wins. Each tile's own nodata is masked.
- Slope: Horn's 3x3 method (as ``gdaldem slope``), computed there, on the DEM lattice, before any resampling, with
  each pixel's spacing in metres on the ground:

  - geographic DEM: ellipsoid-aware, exact per row. ``dx = dlon * N(lat) * cos(lat)`` and ``dy = dlat * M(lat)``
    (angles in radians), with ``N`` the prime-vertical and ``M`` the meridional radius of curvature of the CRS's
    ellipsoid. (The spherical ``R * cos(lat)`` rule is off by up to about 0.6 %.)
  - projected DEM: map spacing times the CRS's linear unit (feet-based CRSs included), divided by the projection's
    scale there: the geodesic distance (pyproj, on the CRS's ellipsoid) between the centres of neighbouring pixels,
    computed on a lattice of at most :data:`SPACING_SAMPLES` points per axis and interpolated linearly (the scale
    varies smoothly). So UTM is right to its 0.04 % (a 45 degree ramp in UTM map metres reads ``atan(k)``, 44.99
    degrees at the central meridian) and Web Mercator is right at all (``gdaldem`` would need ``-s``).
    The two axes are treated as perpendicular on the ground, which non-conformal projections (Albers, LAEA) bend
    slightly away from their centre.

  A neighbour with no data is replaced by linear extrapolation through the centre pixel from the opposite neighbour
  (see :func:`horn_slope` for when both are missing), so slope exists wherever elevation does, at the DEM's edges
  and corners too, and a plane keeps its exact slope there (``gdaldem -compute_edges`` uses the centre value, which
  halves it). Slope is NaN where elevation is.
- Onto the grid: elevation and slope bilinearly (:func:`rasterio.warp.reproject`; NaN stays NaN). A DEM much
  finer than the grid is sampled, not averaged.
- Coverage: the grid must lie inside the tiles' footprints. More than :data:`MAX_MISSING` (1 %) of the grid's
  pixel centres outside every tile is an :class:`InputError` naming the files and the share missing; below that the
  uncovered pixels are NaN, like nodata inside a tile (voids, sea in some DEMs), which is never an error.
- Not handled: grids crossing the antimeridian of a geographic DEM.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.merge import merge
from rasterio.warp import reproject, transform_bounds

from suelo.errors import InputError
from suelo.grid import Bounds, Grid
from suelo.ingest.confine import UNCONFINED, InputAccess, open_raster
from suelo.ingest.scene import gdal_env
from suelo.ingest.stac import document_items, gdal_path, json_object, load_json
from suelo.settings import DemInput

#: DEM pixels read around the grid's footprint: one for Horn's kernel, one for bilinear resampling, one spare.
MARGIN = 3
#: Largest share of grid pixels that may lie outside the DEM (they become NaN); more is an error.
MAX_MISSING = 0.01
#: Asset keys of a DEM in a STAC Item, in order of preference.
DEM_ASSET_KEYS = ("data", "elevation", "dem")
#: Points per axis at which a projected DEM's ground spacing is computed (interpolated in between).
SPACING_SAMPLES = 33
EXACT_SPACING_PIXELS = 4_000_000  # up to this window size, the distances of every pixel (~1 s), not interpolated
#: Metres per unit of the elevation units a DEM may state (lower case); an empty unit means metres.
ELEVATION_UNITS: dict[str, float] = {
    "": 1.0, "m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0,
    "ft": 0.3048, "foot": 0.3048, "feet": 0.3048, "international foot": 0.3048,
    "us survey foot": 1200 / 3937, "us-ft": 1200 / 3937, "ftus": 1200 / 3937, "us_survey_foot": 1200 / 3937,
}  # fmt: skip
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class DemTile:
    """What one tile's header says (kept so that reading does not open every tile's header again)."""

    path: str
    crs: CRS
    bounds: Bounds
    transform: Affine
    nodata: float | None
    z_scale: float


@dataclass(frozen=True)
class DemSource:
    """The DEM tiles of one input: GDAL paths (local real paths, ``/vsicurl/`` for remote STAC hrefs), their one
    CRS, the union of their bounds in it, their nodata value (None: none declared), metres per elevation unit and
    each tile's header (empty: read again when needed)."""

    files: tuple[str, ...]
    crs: Any
    bounds: tuple[float, float, float, float]
    nodata: float | None
    z_scale: float = 1.0
    tiles: tuple[DemTile, ...] = ()


# -- discovery -----------------------------------------------------------------------------------------------------


def discover_dem(spec: DemInput, access: InputAccess | None = None) -> DemSource:
    """The DEM tiles ``spec.paths`` name (files, folders, STAC JSON), checked: one band, one CRS, metres or feet."""
    access = access or UNCONFINED
    files = list(dict.fromkeys(_dem_files(spec.paths, access)))
    if not files:
        raise InputError(spec.paths[0], "names no DEM tiles")
    tiles = [_header(path) for path in files]
    first = tiles[0]
    for tile in tiles[1:]:
        if tile.crs != first.crs:
            raise InputError(
                tile.path,
                f"DEM tile is in {_crs_name(tile.crs)}, the other tiles (e.g. {first.path}) in {_crs_name(first.crs)}; "
                "give tiles in one CRS",
            )
        if not _same_nodata(tile.nodata, first.nodata):
            raise InputError(tile.path, f"DEM tile nodata is {tile.nodata}, {first.path} has {first.nodata}")
        if tile.z_scale != first.z_scale:
            raise InputError(tile.path, f"DEM tile states other elevation units than {first.path}")
    left, bottom, right, top = zip(*(t.bounds for t in tiles), strict=True)
    return DemSource(
        files=tuple(files),
        crs=first.crs,
        bounds=(min(left), min(bottom), max(right), max(top)),
        nodata=first.nodata,
        z_scale=first.z_scale,
        tiles=tuple(tiles),
    )


def _dem_files(paths: Sequence[Path], access: InputAccess) -> Iterator[str]:
    for path in paths:
        if path.is_dir():
            tiffs = sorted(p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file())
            documents = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file())
            if not tiffs and not documents:
                raise InputError(path, "folder holds no DEM GeoTIFF (*.tif, *.tiff) or STAC (*.json) files")
            for tiff in tiffs:
                yield access.local_raster(tiff, str(tiff))
            for document in documents if not tiffs else ():
                access.confine(document, document)
                yield from _stac_files(document, access)
        elif path.suffix.lower() == ".json":
            yield from _stac_files(path, access)
        elif not path.exists():
            raise InputError(path, "DEM file or folder does not exist")
        else:
            yield access.local_raster(path, str(path))


def _stac_files(document: Path, access: InputAccess) -> Iterator[str]:
    rules = access.with_roots([document.absolute().parent])
    for item in document_items(document, load_json(document)):
        item_id = item.get("id")
        where = f"{document} item {item_id}"
        assets = json_object(item.get("assets"), where, "assets")
        key = dem_asset_key(assets)
        if key is None:
            raise InputError(
                where,
                f"no DEM asset (keys {', '.join(DEM_ASSET_KEYS)}, or role 'data' with an image/tiff type); "
                f"has {', '.join(sorted(assets)) or 'none'}",
            )
        asset = json_object(assets[key], where, f"asset {key}")
        href = asset.get("href")
        if not isinstance(href, str) or not href:
            raise InputError(where, f"asset {key}: 'href' must be a non-empty string, got {href!r}")
        yield gdal_path(href, document, f"{where} asset {key} ({href})", rules)


def dem_asset_key(assets: dict[str, Any]) -> str | None:
    """The key of an Item's DEM asset: ``data``, ``elevation``, ``dem``, else the first asset with role ``data``
    and an ``image/tiff`` media type (COGs: ``image/tiff; application=geotiff; profile=cloud-optimized``)."""
    for key in DEM_ASSET_KEYS:
        if isinstance(assets.get(key), dict):
            return key
    for key, asset in assets.items():
        if not isinstance(asset, dict):
            continue
        roles, media = asset.get("roles"), asset.get("type")
        if isinstance(roles, list) and "data" in roles and isinstance(media, str) and "image/tiff" in media:
            return key
    return None


def _header(path: str) -> DemTile:
    try:
        with gdal_env(), open_raster(path) as src:
            count, crs, bounds, transform, nodata = src.count, src.crs, src.bounds, src.transform, src.nodata
            stated = (src.units[0] or "") if src.units else ""
            tags = {str(k).lower(): str(v) for k, v in src.tags(1).items()} if count else {}
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"cannot read DEM: corrupt, truncated or unreadable ({exc})") from exc
    if count != 1:
        raise InputError(path, f"DEM has {count} bands; a DEM has one (elevation)")
    if crs is None:
        raise InputError(path, "DEM has no coordinate reference system")
    if transform.b != 0 or transform.d != 0 or transform.e >= 0:
        raise InputError(path, f"DEM is not north-up (transform {tuple(transform)[:6]})")
    unit = (stated or tags.get("units", "") or tags.get("unit", "")).strip()
    if unit.lower() not in ELEVATION_UNITS:
        raise InputError(path, f"DEM states elevation units {unit!r}; suelo reads metres (or feet, converted)")
    return DemTile(
        path=path,
        crs=crs,
        bounds=(bounds.left, bounds.bottom, bounds.right, bounds.top),
        transform=transform,
        nodata=None if nodata is None else float(nodata),
        z_scale=ELEVATION_UNITS[unit.lower()],
    )


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def _crs_name(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())[:60]


def _files_label(files: Sequence[str]) -> str:
    return files[0] if len(files) == 1 else f"{files[0]} (and {len(files) - 1} more DEM tiles)"


# -- coverage (shared with the weather reader) -----------------------------------------------------------------------


def grid_sample_points(grid: Grid, limit: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """x, y (grid CRS) of the centres of up to ``limit`` x ``limit`` grid pixels spread evenly over the grid."""
    cols = np.unique(np.linspace(0, grid.width - 1, min(grid.width, limit)).round())
    rows = np.unique(np.linspace(0, grid.height - 1, min(grid.height, limit)).round())
    t = grid.transform
    xs, ys = np.meshgrid(t.c + (cols + 0.5) * t.a, t.f + (rows + 0.5) * t.e)
    return xs.ravel(), ys.ravel()


def points_in(grid: Grid, crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`grid_sample_points` transformed into ``crs`` (NaN where they cannot be)."""
    xs, ys = grid_sample_points(grid)
    transformer = pyproj.Transformer.from_crs(_pyproj(grid.crs), _pyproj(crs), always_xy=True)
    with np.errstate(invalid="ignore"):
        px, py = transformer.transform(xs, ys, errcheck=False)
    px, py = np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)
    bad = ~(np.isfinite(px) & np.isfinite(py))
    px[bad], py[bad] = np.nan, np.nan
    return px, py


def _pyproj(crs: Any) -> pyproj.CRS:
    return pyproj.CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)


def missing_share(grid: Grid, crs: Any, rectangles: Sequence[Bounds]) -> float:
    """Share of the grid's pixel centres (sampled) that fall outside every rectangle (bounds in ``crs``)."""
    px, py = points_in(grid, crs)
    inside = np.zeros(px.shape, dtype=bool)
    for left, bottom, right, top in rectangles:
        with np.errstate(invalid="ignore"):
            inside |= (px >= left) & (px <= right) & (py >= bottom) & (py <= top)
    return float(1.0 - inside.mean())


# -- reading -------------------------------------------------------------------------------------------------------


def terrain_on_grid(dem: DemSource, grid: Grid) -> np.ndarray:
    """Elevation (m) and slope (degrees) on ``grid``: float32 ``(2, grid.height, grid.width)``.

    NaN where the DEM has no data (nodata pixels, and the up to :data:`MAX_MISSING` of grid pixels outside it).
    Raises :class:`InputError` naming the DEM files when more of the grid lies outside the DEM tiles.
    """
    label = _files_label(dem.files)
    tiles = list(dem.tiles) if dem.tiles else [_header(path) for path in dem.files]
    share = missing_share(grid, dem.crs, [t.bounds for t in tiles])
    if share > MAX_MISSING:
        raise InputError(
            label,
            f"the DEM does not cover the grid: {100 * share:.1f} % of its pixels lie outside the DEM tiles "
            f"(DEM bounds {_fmt_bounds(dem.bounds)} in {_crs_name(dem.crs)}; at most {100 * MAX_MISSING:g} % may)",
        )
    try:
        left, bottom, right, top = transform_bounds(grid.crs, dem.crs, *grid.bounds, densify_pts=21)
    except (RasterioError, ValueError) as exc:
        raise InputError(label, f"cannot transform the grid's bounds into the DEM's CRS ({exc})") from exc
    used = [t for t in tiles if _overlaps(t.bounds, (left, bottom, right, top))]
    if not used:  # only possible when (almost) all of a tiny grid is outside, below the threshold
        return np.full((2, grid.height, grid.width), np.nan, dtype=np.float32)
    elevation, transform = _mosaic(used, (left, bottom, right, top), label)
    elevation *= dem.z_scale
    slope = horn_slope(elevation, *ground_spacing(dem.crs, transform, elevation.shape))
    out = np.empty((2, grid.height, grid.width), dtype=np.float32)
    for i, layer in enumerate((elevation, slope)):
        target = np.full(grid.shape, np.nan, dtype=np.float64)
        try:
            reproject(
                layer, target, src_transform=transform, src_crs=dem.crs, src_nodata=np.nan,
                dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=np.nan, resampling=Resampling.bilinear,
            )  # fmt: skip
        except (RasterioError, ValueError) as exc:
            raise InputError(label, f"cannot resample the DEM onto the grid ({exc})") from exc
        out[i] = target
    return out


def _overlaps(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fmt_bounds(bounds: Bounds) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in bounds) + ")"


def _mosaic(tiles: Sequence[DemTile], footprint: Bounds, label: str) -> tuple[np.ndarray, Affine]:
    """The tiles merged over ``footprint`` plus :data:`MARGIN` pixels (clipped to the tiles), on their lattice."""
    first = tiles[0].transform
    xres = min(t.transform.a for t in tiles)
    yres = min(-t.transform.e for t in tiles)
    union = (min(t.bounds[0] for t in tiles), min(t.bounds[1] for t in tiles),
             max(t.bounds[2] for t in tiles), max(t.bounds[3] for t in tiles))  # fmt: skip
    left, bottom = max(footprint[0], union[0]), max(footprint[1], union[1])
    right, top = min(footprint[2], union[2]), min(footprint[3], union[3])
    # snapped outward to the first tile's lattice, then widened by the margin
    c0 = math.floor((left - first.c) / xres + 1e-9) - MARGIN
    c1 = math.ceil((right - first.c) / xres - 1e-9) + MARGIN
    r0 = math.floor((first.f - top) / yres + 1e-9) - MARGIN
    r1 = math.ceil((first.f - bottom) / yres - 1e-9) + MARGIN
    bounds = (first.c + c0 * xres, first.f - r1 * yres, first.c + c1 * xres, first.f - r0 * yres)
    on_lattice = all(_on_lattice(t.transform, first, xres, yres) for t in tiles)
    try:
        with gdal_env(), ExitStack() as stack:
            sources = [stack.enter_context(open_raster(t.path)) for t in tiles]
            merged, transform = merge(
                sources, bounds=bounds, res=(xres, yres), nodata=np.nan, dtype="float64", indexes=[1],
                resampling=Resampling.nearest if on_lattice else Resampling.bilinear,
            )  # fmt: skip
    except (RasterioError, OSError, ValueError, MemoryError) as exc:
        raise InputError(label, f"cannot read the DEM tiles: corrupt, truncated or unreadable ({exc})") from exc
    elevation: np.ndarray = np.asarray(merged[0], dtype=np.float64)
    return elevation, transform


def _on_lattice(transform: Affine, first: Affine, xres: float, yres: float) -> bool:
    if abs(transform.a - xres) > 1e-9 * xres or abs(-transform.e - yres) > 1e-9 * yres:
        return False
    dx, dy = (transform.c - first.c) / xres, (first.f - transform.f) / yres
    return abs(dx - round(dx)) < 1e-6 and abs(dy - round(dy)) < 1e-6


def ground_spacing(crs: Any, transform: Affine, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Ground distance in metres between neighbouring pixel centres along x and along y, broadcastable to ``shape``.

    Geographic CRS: per row, from the ellipsoid's radii of curvature (exact). Projected CRS: geodesic distances
    between half-pixel offsets either side of sample points, interpolated over the array (see the module notes).
    """
    height, width = shape
    pcrs = _pyproj(crs)
    ellipsoid = pcrs.ellipsoid
    if ellipsoid is None:
        raise ValueError(f"CRS {_crs_name(crs)} has no ellipsoid")
    a = ellipsoid.semi_major_metre
    inv_f = ellipsoid.inverse_flattening
    e2 = 0.0 if not inv_f else (2 - 1 / inv_f) / inv_f
    if pcrs.is_geographic:
        per_unit = pcrs.axis_info[0].unit_conversion_factor  # radians per axis unit (degrees: pi/180)
        lat = np.radians(transform.f + (np.arange(height) + 0.5) * transform.e)
        w = 1 - e2 * np.sin(lat) ** 2
        n = a / np.sqrt(w)
        m = a * (1 - e2) / w**1.5
        dx = abs(transform.a) * per_unit * n * np.cos(lat)
        dy = abs(transform.e) * per_unit * m
        return dx[:, None], dy[:, None]
    if height * width <= EXACT_SPACING_PIXELS:
        # every pixel's own distance: a pixel's slope then does not depend on the window it was read in (a block
        # with its halo, the whole grid), so cubes are identical however the region was cut into blocks
        rows, cols = np.arange(height, dtype=float), np.arange(width, dtype=float)
    else:
        rows = np.linspace(0, height - 1, min(height, SPACING_SAMPLES))
        cols = np.linspace(0, width - 1, min(width, SPACING_SAMPLES))
    cc, rr = np.meshgrid(cols, rows)
    x = transform.c + (cc + 0.5) * transform.a
    y = transform.f + (rr + 0.5) * transform.e
    to_geographic = pyproj.Transformer.from_crs(pcrs, pcrs.geodetic_crs, always_xy=True)
    geod = pyproj.Geod(a=a, es=e2)
    half_x, half_y = transform.a / 2, transform.e / 2

    def distance(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
        lon0, lat0 = to_geographic.transform(x0, y0)
        lon1, lat1 = to_geographic.transform(x1, y1)
        _, _, dist = geod.inv(lon0, lat0, lon1, lat1)
        return np.asarray(dist, dtype=np.float64)

    dx = _interpolate(distance(x - half_x, y, x + half_x, y), rows, cols, height, width)
    dy = _interpolate(distance(x, y - half_y, x, y + half_y), rows, cols, height, width)
    return dx, dy


def _interpolate(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> np.ndarray:
    """Values on a (rows x cols) sample lattice, linearly interpolated to every pixel of ``height`` x ``width``."""
    along = np.stack([np.interp(np.arange(width), cols, line) for line in values])  # (len(rows), width)
    if len(rows) == 1:
        spread: np.ndarray = np.broadcast_to(along, (height, width)).copy()
        return spread
    position = np.interp(np.arange(height), rows, np.arange(len(rows), dtype=np.float64))
    lower = np.minimum(np.floor(position).astype(np.int64), len(rows) - 2)
    weight = (position - lower)[:, None]
    result: np.ndarray = (1 - weight) * along[lower] + weight * along[lower + 1]
    return result


def horn_slope(elevation: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Slope in degrees by Horn's 3x3 method (gdaldem's), with ground spacings ``dx``/``dy`` in metres.

    NaN where the elevation is NaN. A missing neighbour is extrapolated linearly from the opposite one through the
    centre; when both are missing, an edge neighbour takes the centre value and a corner one the plane through the
    centre and its two edge neighbours. So DEM edges, corners and void borders keep their slope (a plane's exactly).
    """
    z = np.pad(elevation, 1, constant_values=np.nan)
    height, width = elevation.shape

    def at(dr: int, dc: int) -> np.ndarray:
        return z[1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width]

    centre = elevation

    def axis(dr: int, dc: int) -> np.ndarray:
        value, opposite = at(dr, dc), at(-dr, -dc)
        fallback = np.where(np.isnan(opposite), centre, 2 * centre - opposite)
        return np.where(np.isnan(value), fallback, value)

    b, d, f, h = axis(-1, 0), axis(0, -1), axis(0, 1), axis(1, 0)
    rows = {-1: b, 1: h}
    cols = {-1: d, 1: f}

    def diagonal(dr: int, dc: int) -> np.ndarray:
        value, opposite = at(dr, dc), at(-dr, -dc)
        plane = rows[dr] + cols[dc] - centre  # the plane through the centre and its two (filled) axis neighbours
        fallback = np.where(np.isnan(opposite), plane, 2 * centre - opposite)
        return np.where(np.isnan(value), fallback, value)

    a, c, g, i = diagonal(-1, -1), diagonal(-1, 1), diagonal(1, -1), diagonal(1, 1)
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8 * dx)
    dzdy = ((g + 2 * h + i) - (a + 2 * b + c)) / (8 * dy)
    slope: np.ndarray = np.degrees(np.arctan(np.hypot(dzdx, dzdy)))
    slope[np.isnan(centre)] = np.nan  # Horn's kernel ignores the centre: a void would get its neighbours' slope
    return slope


__all__ = ["DemSource", "dem_asset_key", "discover_dem", "ground_spacing", "horn_slope", "terrain_on_grid"]
