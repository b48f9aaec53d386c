"""The target grid: one CRS, one north-up affine transform and one (height, width) shape.

A :class:`Grid` travels with every array the pipeline produces. Rows are ``y`` and columns are ``x``; shapes are
always ``(height, width)`` and bounds always ``(left, bottom, right, top)``, as in rasterio.

In xarray the grid travels inside the data, as rioxarray and odc-geo carry it (:func:`attach_grid`): ``x``/``y``
are the pixel centres (with their CF attributes) and a scalar ``spatial_ref`` coordinate holds the CRS as a CF grid
mapping plus GDAL's ``GeoTransform``; data variables name it in their ``grid_mapping`` attribute.
:meth:`Grid.from_xarray` derives the grid from the coordinates, so a slice (``isel``) has its own grid, never its
parent's. Every NetCDF suelo writes goes through :func:`cf_netcdf`, which makes it CF-1.8.

Every tiling of a grid or array (job blocks, composite chunks, segmenter blocks, gate tiles) is
:func:`tile_slices`: row by row from the top left, the last tiles cut at the edges, so block ids and seams agree.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds, transform_geom

from suelo.errors import ConfigError

if TYPE_CHECKING:
    import xarray as xr

Bounds = tuple[float, float, float, float]
#: About 10,000 km at 10 m: larger than any real region, small enough that block lists and arrays stay sane.
MAX_GRID_SIDE = 1_048_576
#: The CF grid-mapping coordinate (rioxarray's and odc-geo's name; GDAL reads it from NetCDF).
SPATIAL_REF = "spatial_ref"
#: The ``Conventions`` of every NetCDF suelo writes (:func:`cf_netcdf`).
CF_CONVENTIONS = "CF-1.8"
#: The attribute in which suelo before the ``spatial_ref`` coordinate recorded a cube's grid, as JSON.
LEGACY_GRID_ATTR = "grid"
# How far (in pixels) coordinates may stray from a pixel lattice and still be on it: float rounding of
# ``origin + size * (index + 0.5)`` is many orders of magnitude smaller; any real shift is far larger.
LATTICE_TOLERANCE = 1e-6

XarrayT = TypeVar("XarrayT", "xr.Dataset", "xr.DataArray")


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid. ``transform`` maps (col, row) pixel corners to map coordinates."""

    crs: CRS
    transform: Affine
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ConfigError(f"grid shape must be positive, got height={self.height} width={self.width}")
        if self.height > MAX_GRID_SIDE or self.width > MAX_GRID_SIDE:
            raise ConfigError(
                f"grid of {self.width} x {self.height} pixels exceeds {MAX_GRID_SIDE} pixels per side "
                "(absurd AOI or input footprint?)"
            )
        if self.transform.b != 0 or self.transform.d != 0 or self.transform.e >= 0 or self.transform.a <= 0:
            raise ConfigError(f"grid transform must be north-up with positive pixel size, got {self.transform!r}")

    # construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_bounds(cls, bounds: Bounds, crs: CRS | str | int, resolution: float) -> Grid:
        """Smallest grid of ``resolution``-sized pixels, snapped to multiples of ``resolution``, covering ``bounds``.

        Snapping to multiples of the pixel size keeps the grid aligned with Sentinel-2 tile pixels (whose origins
        are multiples of 60 m), so no resampling shift is introduced for inputs already in the target CRS.
        """
        left, bottom, right, top = bounds
        if not all(math.isfinite(v) for v in (left, bottom, right, top, resolution)):
            raise ConfigError(f"grid bounds {bounds} and resolution {resolution} must be finite")
        if not (right > left and top > bottom):
            raise ConfigError(f"empty bounds {bounds}")
        res = float(resolution)
        if (right - left) / res > MAX_GRID_SIDE or (top - bottom) / res > MAX_GRID_SIDE:
            raise ConfigError(
                f"grid.resolution {res:g} over bounds {bounds} makes a grid above {MAX_GRID_SIDE} pixels per side "
                "(a too small resolution, or an absurd AOI or input footprint?)"
            )
        snapped_left = math.floor(left / res + 1e-9) * res
        snapped_top = math.ceil(top / res - 1e-9) * res
        width = max(1, math.ceil((right - snapped_left) / res - 1e-9))
        height = max(1, math.ceil((snapped_top - bottom) / res - 1e-9))
        return cls(as_crs(crs), Affine(res, 0.0, snapped_left, 0.0, -res, snapped_top), height, width)

    @classmethod
    def from_geometry(
        cls,
        geometry: dict[str, Any],
        geometry_crs: CRS | str | int,
        crs: CRS | str | int | None,
        resolution: float,
    ) -> Grid:
        """Grid covering a GeoJSON-like geometry; with ``crs=None`` the UTM zone of its centroid is used."""
        from rasterio._err import CPLE_BaseError

        source_crs = as_crs(geometry_crs)
        target_crs = as_crs(crs) if crs is not None else utm_crs_for(geometry, source_crs)
        epsg = target_crs.to_epsg()
        label = crs if isinstance(crs, str) else f"EPSG:{epsg}" if epsg else target_crs.to_proj4()
        try:
            projected = transform_geom(source_crs, target_crs, geometry)
            bounds = geometry_bounds(projected)
        except (CPLE_BaseError, ValueError, IndexError, TypeError) as exc:
            # e.g. an orthographic CRS seeing the other side of the Earth: "Point outside of projection domain"
            raise ConfigError(
                f"grid.crs {label}: cannot project the area onto it ({' '.join(str(exc).split())})"
            ) from exc
        if not all(math.isfinite(v) for v in bounds):
            raise ConfigError(f"grid.crs {label}: the area projects to non-finite bounds {bounds}")
        return cls.from_bounds(bounds, target_crs, resolution)

    # geometry -----------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size as (x size, y size), both positive."""
        return (self.transform.a, -self.transform.e)

    @property
    def bounds(self) -> Bounds:
        left, top = self.transform.c, self.transform.f
        return (left, top + self.transform.e * self.height, left + self.transform.a * self.width, top)

    def x_coords(self) -> np.ndarray:
        """Map x of each column's pixel centre."""
        return self.transform.c + self.transform.a * (np.arange(self.width) + 0.5)

    def y_coords(self) -> np.ndarray:
        """Map y of each row's pixel centre (decreasing: row 0 is the top)."""
        return self.transform.f + self.transform.e * (np.arange(self.height) + 0.5)

    def window(self, row_start: int, row_stop: int, col_start: int, col_stop: int) -> Grid:
        """The sub-grid of rows ``[row_start, row_stop)`` and columns ``[col_start, col_stop)``."""
        if not (0 <= row_start < row_stop <= self.height and 0 <= col_start < col_stop <= self.width):
            raise ValueError(f"window rows {row_start}:{row_stop} cols {col_start}:{col_stop} outside {self.shape}")
        return Grid(
            self.crs,
            self.transform @ Affine.translation(col_start, row_start),
            row_stop - row_start,
            col_stop - col_start,
        )

    def expand(self, pixels: int) -> Grid:
        """This grid grown by ``pixels`` on every side (shrunk for a negative number), on the same pixel lattice."""
        return Grid(
            self.crs,
            self.transform @ Affine.translation(-pixels, -pixels),
            self.height + 2 * pixels,
            self.width + 2 * pixels,
        )

    def offset_in(self, other: Grid) -> tuple[int, int]:
        """``(row, col)`` of this grid's top-left pixel in ``other``; ValueError unless both share a pixel lattice."""
        size_x, size_y = self.resolution
        other_x, other_y = other.resolution
        if abs(size_x / other_x - 1) > 1e-9 or abs(size_y / other_y - 1) > 1e-9 or self.crs != other.crs:
            raise ValueError(f"grid {self.to_dict()} is not on the pixel lattice of {other.to_dict()}")
        col = (self.transform.c - other.transform.c) / other_x
        row = (other.transform.f - self.transform.f) / other_y
        if abs(col - round(col)) > LATTICE_TOLERANCE or abs(row - round(row)) > LATTICE_TOLERANCE:
            raise ValueError(f"grid {self.to_dict()} is offset by a fraction of a pixel from {other.to_dict()}")
        return round(row), round(col)

    def slices_in(self, other: Grid) -> tuple[slice, slice]:
        """Rows and columns of ``other`` that this grid covers (``on_other[grid.slices_in(other)]`` crops an array
        on ``other`` to this grid); ValueError when it is not inside ``other`` on its pixel lattice."""
        row, col = self.offset_in(other)
        if row < 0 or col < 0 or row + self.height > other.height or col + self.width > other.width:
            raise ValueError(f"grid {self.to_dict()} is not inside {other.to_dict()}")
        return slice(row, row + self.height), slice(col, col + self.width)

    def tile(self, row_start: int, row_stop: int, col_start: int, col_stop: int, halo: int = 0) -> Tile:
        """The tile of rows ``[row_start, row_stop)`` and columns ``[col_start, col_stop)``, with ``halo`` more
        pixels on each side, clipped to this grid (a tile at the grid's edge has no halo on that side)."""
        if halo < 0:
            raise ValueError(f"halo must not be negative, got {halo}")
        inner = self.window(row_start, row_stop, col_start, col_stop)
        top, left = max(row_start - halo, 0), max(col_start - halo, 0)
        bottom, right = min(row_stop + halo, self.height), min(col_stop + halo, self.width)
        return Tile(row_start, col_start, inner, top, left, self.window(top, bottom, left, right))

    def tiles(self, size: int | tuple[int, int], halo: int = 0) -> Iterator[Tile]:
        """The tiles of at most ``size`` pixels (a side, or ``(rows, cols)``) covering the grid once, each with
        its ``halo`` (see :meth:`tile`), in the order of :func:`tile_slices`."""
        for rows, cols in tile_slices(self.shape, size):
            yield self.tile(rows.start, rows.stop, cols.start, cols.stop, halo)

    def blocks(self, block_size: int) -> Iterator[tuple[tuple[int, int], Grid]]:
        """Yield ``((row_start, col_start), sub_grid)`` tiles of at most ``block_size`` pixels a side
        (:meth:`tiles` without a halo, in the older spelling)."""
        for tile in self.tiles(block_size):
            yield (tile.row, tile.col), tile.grid

    def intersects(self, bounds: Bounds, crs: CRS | str | int) -> bool:
        """Whether ``bounds`` given in ``crs`` overlap this grid (tested in this grid's CRS)."""
        left, bottom, right, top = transform_bounds(as_crs(crs), self.crs, *bounds, densify_pts=21)
        g_left, g_bottom, g_right, g_top = self.bounds
        return bool(left < g_right and right > g_left and bottom < g_top and top > g_bottom)  # rasterio: untyped

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description, recorded in every output's metadata."""
        return {
            "crs": self.crs.to_string(),
            "transform": list(self.transform)[:6],
            "height": self.height,
            "width": self.width,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        return cls(as_crs(data["crs"]), Affine(*data["transform"]), int(data["height"]), int(data["width"]))

    # in xarray -----------------------------------------------------------------------------------------------
    def grid_mapping(self) -> dict[str, Any]:
        """Attributes of the ``spatial_ref`` coordinate: the CRS as CF grid mapping (``pyproj.CRS.to_cf()``: the
        ``grid_mapping_name``, its parameters and ``crs_wkt``, WKT 2), its GDAL WKT as ``spatial_ref`` (what GDAL
        and suelo read first) and GDAL's ``GeoTransform`` of this grid. A CRS that CF cannot describe keeps its GDAL
        WKT as ``crs_wkt`` too."""
        wkt = self.crs.to_wkt()
        geotransform = " ".join(str(v) for v in self.transform.to_gdal())
        return {"crs_wkt": wkt} | _cf_attributes(wkt) | {"spatial_ref": wkt, "GeoTransform": geotransform}

    def coordinate_attributes(self) -> dict[str, dict[str, str]]:
        """CF attributes of the ``x`` and ``y`` coordinates: ``standard_name`` (``projection_x_coordinate`` /
        ``projection_y_coordinate``, or ``longitude`` / ``latitude`` for a geographic CRS), ``long_name``,
        ``units`` (the CRS's axis units, ``m`` for metres) and ``axis``, from ``pyproj.CRS.cs_to_cf()``."""
        return _axis_attributes(self.crs.to_wkt())

    def xarray_coords(self) -> dict[str, Any]:
        """``y`` and ``x`` (pixel centres, with their CF attributes) and the scalar ``spatial_ref`` coordinate of an
        array on this grid."""
        import xarray as xr

        axes = self.coordinate_attributes()
        return {
            "y": ("y", self.y_coords(), axes["y"]),
            "x": ("x", self.x_coords(), axes["x"]),
            SPATIAL_REF: xr.DataArray(0, attrs=self.grid_mapping()),
        }

    @classmethod
    def from_xarray(cls, obj: xr.Dataset | xr.DataArray) -> Grid:
        """The grid of an xarray object, from its ``spatial_ref`` coordinate (the CRS) and its x/y coordinates
        (the transform), so a slice gets its own grid: ``Grid.from_xarray(ds.isel(y=slice(a, b), x=slice(c, d)))``
        is ``grid.window(a, b, c, d)``.

        A 1-pixel axis takes its pixel size from the ``GeoTransform``. Objects of earlier suelo versions, with only
        a JSON ``grid`` attribute, are read from it when their x/y are that grid's; a slice of one is refused
        (the attribute is the parent's grid), with a ValueError saying so.
        """
        if SPATIAL_REF in obj.coords or SPATIAL_REF in getattr(obj, "data_vars", {}):
            return _grid_from_coordinates(obj)
        if LEGACY_GRID_ATTR in obj.attrs:
            return _legacy_grid(obj)
        raise ValueError(
            f"no grid: neither a {SPATIAL_REF!r} coordinate nor a {LEGACY_GRID_ATTR!r} attribute "
            "(attach one with suelo.grid.attach_grid)"
        )


@dataclass(frozen=True)
class Tile:
    """One tile of a grid (:meth:`Grid.tile`): its own pixels and, around them, its halo clipped to the grid.

    ``grid`` is rows ``[row, row + height)`` and columns ``[col, col + width)`` of the parent grid; ``outer`` is
    the tile grown by the halo and clipped to the parent, starting at ``(outer_row, outer_col)``; ``crop`` cuts an
    array on ``outer`` down to ``grid``.
    """

    row: int
    col: int
    grid: Grid
    outer_row: int
    outer_col: int
    outer: Grid

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    def rows(self) -> slice:
        """The tile's rows in the parent grid."""
        return slice(self.row, self.row + self.height)

    @property
    def cols(self) -> slice:
        """The tile's columns in the parent grid."""
        return slice(self.col, self.col + self.width)

    @property
    def outer_rows(self) -> slice:
        """The rows of the tile with its halo in the parent grid."""
        return slice(self.outer_row, self.outer_row + self.outer.height)

    @property
    def outer_cols(self) -> slice:
        """The columns of the tile with its halo in the parent grid."""
        return slice(self.outer_col, self.outer_col + self.outer.width)

    @property
    def crop(self) -> tuple[slice, slice]:
        """``(rows, cols)`` of the tile's own pixels in an array on ``outer``."""
        top, left = self.row - self.outer_row, self.col - self.outer_col
        return slice(top, top + self.height), slice(left, left + self.width)


def tile_slices(shape: tuple[int, int], size: int | tuple[int, int]) -> Iterator[tuple[slice, slice]]:
    """``(rows, cols)`` slices of the tiles of at most ``size`` pixels (a side, or ``(rows, cols)``) covering an
    array of ``shape`` ``(height, width)`` once: row by row from the top left, the last row and column of tiles cut
    at the edges. The pipeline's one tiling (grid tiles and job blocks are made of it)."""
    height, width = shape
    tile_rows, tile_cols = (int(size[0]), int(size[1])) if isinstance(size, tuple) else (int(size), int(size))
    if tile_rows <= 0 or tile_cols <= 0:
        raise ValueError(f"tile size must be positive, got {size}")
    for row in range(0, height, tile_rows):
        for col in range(0, width, tile_cols):
            yield slice(row, min(row + tile_rows, height)), slice(col, min(col + tile_cols, width))


# -- the grid inside xarray objects ---------------------------------------------------------------------------------


def has_grid(obj: xr.Dataset | xr.DataArray) -> bool:
    """Whether ``obj`` records a grid (a ``spatial_ref`` coordinate, or the JSON attribute of earlier versions)."""
    return SPATIAL_REF in obj.coords or SPATIAL_REF in getattr(obj, "data_vars", {}) or LEGACY_GRID_ATTR in obj.attrs


def attach_grid(obj: XarrayT, grid: Grid) -> XarrayT:
    """``obj`` (y/x dimensions of ``grid``'s shape) carrying ``grid``: a fresh ``spatial_ref`` coordinate (the
    ``GeoTransform`` of this grid, not of a parent it was sliced from) named by the ``grid_mapping`` of every
    variable with y and x dimensions, and x/y pixel-centre coordinates. ``obj`` itself is not changed.

    x/y coordinates it already has are kept, not recomputed (their values are the data's), but must be ``grid``'s:
    ValueError otherwise; they get the CF attributes of ``grid``'s CRS (:meth:`Grid.coordinate_attributes`). The
    JSON ``grid`` attribute of earlier versions is dropped: it goes stale on the first slice, the coordinates never
    do.
    """
    shape = (obj.sizes.get("y"), obj.sizes.get("x"))
    if shape != grid.shape:
        raise ValueError(f"an array of (y, x) shape {shape} cannot carry a grid of shape {grid.shape}")
    coords = grid.xarray_coords()
    for name, size in (("x", grid.resolution[0]), ("y", grid.resolution[1])):
        if name in obj.coords:
            _dim, expected, attrs = coords[name]
            values = np.asarray(obj[name].values, dtype=np.float64)
            if not _on_positions(values, expected, size):
                raise ValueError(f"the {name} coordinates are not the pixel centres of grid {grid.to_dict()}")
            coords[name] = (name, obj[name].values, {**obj[name].attrs, **attrs})
    out: XarrayT = obj.assign_coords(coords)
    out.attrs = {k: v for k, v in out.attrs.items() if k != LEGACY_GRID_ATTR}
    for variable in out.data_vars.values() if hasattr(out, "data_vars") else [out]:
        if "y" in variable.dims and "x" in variable.dims:
            variable.encoding.pop("grid_mapping", None)  # xarray refuses to write it both here and in attrs
            variable.attrs["grid_mapping"] = SPATIAL_REF
    return out


def cf_netcdf(ds: xr.Dataset, grid: Grid) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """``ds`` as suelo writes it to NetCDF, and the encoding of its coordinates: CF-1.8 (global ``Conventions``),
    ``grid`` attached (:func:`attach_grid`: the ``spatial_ref`` grid mapping with this grid's own ``GeoTransform``,
    named by every variable on y/x; x/y with their CF attributes) and a CF ``time`` coordinate (xarray encodes its
    units and calendar). The encoding writes x/y without a ``_FillValue`` (CF: coordinates have no missing values);
    merge it into the ``encoding`` given to ``to_netcdf``."""
    out = attach_grid(ds, grid)
    out.attrs["Conventions"] = CF_CONVENTIONS
    if "time" in out.coords and out["time"].ndim == 1:
        out["time"].attrs.update(standard_name="time", axis="T")
    return out, {"x": {"_FillValue": None}, "y": {"_FillValue": None}}


def carry_grid(target: XarrayT, source: xr.Dataset | xr.DataArray) -> XarrayT:
    """``target`` (on the same y/x as ``source``) carrying ``source``'s grid, when ``source`` records one."""
    return attach_grid(target, Grid.from_xarray(source)) if has_grid(source) else target


def crs_of(obj: xr.Dataset | xr.DataArray) -> CRS:
    """The CRS an xarray object records (``spatial_ref``; else the attributes of earlier versions). Unlike the
    grid, a CRS holds for any slice, so it is read even from a slice of an old cube."""
    if SPATIAL_REF in obj.coords or SPATIAL_REF in getattr(obj, "data_vars", {}):
        return _crs_from_wkt(_mapping_wkt(obj[SPATIAL_REF].attrs))
    if LEGACY_GRID_ATTR in obj.attrs:
        return as_crs(json.loads(obj.attrs[LEGACY_GRID_ATTR])["crs"])
    if "crs" in obj.attrs:
        return as_crs(obj.attrs["crs"])
    raise ValueError(f"no CRS: neither a {SPATIAL_REF!r} coordinate nor a {LEGACY_GRID_ATTR!r} or 'crs' attribute")


@functools.lru_cache(maxsize=16)
def _cf_attributes_cached(wkt: str) -> tuple[tuple[str, Any], ...]:
    from pyproj import CRS as ProjCRS
    from pyproj.exceptions import CRSError

    try:
        return tuple(ProjCRS.from_wkt(wkt).to_cf().items())
    except (CRSError, KeyError, ValueError):  # a CRS CF cannot describe: the WKT alone (as rioxarray does)
        return ()


def _cf_attributes(wkt: str) -> dict[str, Any]:
    """``pyproj``'s CF grid-mapping attributes of a CRS (cached: a grid is attached to every array)."""
    return dict(_cf_attributes_cached(wkt))


@functools.lru_cache(maxsize=16)
def _axis_attributes_cached(wkt: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    from pyproj import CRS as ProjCRS
    from pyproj.exceptions import CRSError

    crs = as_crs(wkt)
    if crs.is_geographic:
        defaults = {
            "x": {"standard_name": "longitude", "long_name": "longitude coordinate", "units": "degrees_east"},
            "y": {"standard_name": "latitude", "long_name": "latitude coordinate", "units": "degrees_north"},
        }
    else:
        units = crs_units(crs)
        defaults = {
            "x": {"standard_name": "projection_x_coordinate", "long_name": "Easting", "units": units},
            "y": {"standard_name": "projection_y_coordinate", "long_name": "Northing", "units": units},
        }
    try:
        axes = {str(axis.get("axis", "")).lower(): axis for axis in ProjCRS.from_wkt(wkt).cs_to_cf()}
    except (CRSError, KeyError, ValueError, TypeError):  # a coordinate system CF cannot describe: the defaults
        axes = {}
    out = []
    for name in ("x", "y"):
        found = {k: str(v) for k, v in axes.get(name, {}).items() if k in ("standard_name", "long_name", "units")}
        attrs = defaults[name] | found
        attrs["units"] = re.sub(r"\bmetre\b", "m", attrs["units"])  # UDUNITS reads both; "m" is what GDAL writes
        attrs["axis"] = name.upper()
        out.append((name, tuple(attrs.items())))
    return tuple(out)


def _axis_attributes(wkt: str) -> dict[str, dict[str, str]]:
    """CF attributes of the x and y coordinates of a CRS (cached like :func:`_cf_attributes`)."""
    return {name: dict(attrs) for name, attrs in _axis_attributes_cached(wkt)}


@functools.lru_cache(maxsize=16)
def _crs_from_wkt(wkt: str) -> CRS:
    return as_crs(wkt)


def _mapping_wkt(attrs: dict[str, Any]) -> str:
    # GDAL's WKT first: what rasterio wrote (crs_wkt is pyproj's WKT 2 in files since CF-1.8; the same before)
    wkt = attrs.get("spatial_ref") or attrs.get("crs_wkt")
    if not wkt:
        raise ValueError(f"the {SPATIAL_REF!r} coordinate has no 'crs_wkt' or 'spatial_ref' attribute (no CRS)")
    return str(wkt)


def _on_positions(values: np.ndarray, expected: np.ndarray, size: float) -> bool:
    return values.shape == expected.shape and bool(np.all(np.abs(values - expected) <= LATTICE_TOLERANCE * size))


def _geotransform(attrs: dict[str, Any]) -> Affine | None:
    """The north-up ``GeoTransform`` of a grid mapping, or None (absent, unreadable or rotated)."""
    try:
        transform = Affine.from_gdal(*(float(v) for v in str(attrs["GeoTransform"]).split()))
    except (KeyError, TypeError, ValueError):
        return None
    north_up = transform.b == 0 and transform.d == 0 and transform.a > 0 and transform.e < 0
    return transform if north_up else None


def _axis(
    obj: xr.Dataset | xr.DataArray, name: str, origin: float | None, step: float | None
) -> tuple[float, float, int | None]:
    """``(edge, pixel size, offset)`` of axis ``name`` from its pixel-centre coordinates; ``offset`` is the
    axis's first pixel on the GeoTransform's lattice (``origin``, ``step``), None when it is not on it."""
    count = obj.sizes[name]
    if name not in obj.coords:  # no coordinate variable: the GeoTransform alone describes the axis
        if origin is None or step is None:
            raise ValueError(f"no {name} coordinates and no GeoTransform: the grid is unknown")
        return origin, step, 0
    centres = np.asarray(obj[name].values, dtype=np.float64)
    if centres.ndim != 1:
        raise ValueError(f"the {name} coordinates are not one-dimensional")
    if count >= 2:
        size = float(centres[-1] - centres[0]) / (count - 1)
        if size == 0 or not np.all(np.abs(np.diff(centres) - size) <= LATTICE_TOLERANCE * abs(size)):
            raise ValueError(f"the {name} coordinates are not evenly spaced: not a grid")
    elif step is not None:
        size = step
    else:
        raise ValueError(f"one {name} pixel and no GeoTransform: its pixel size is unknown")
    edge = float(centres[0]) - size / 2
    if origin is not None and step is not None and abs(size / step - 1) <= 1e-9:
        offset = (edge - origin) / step
        if abs(offset - round(offset)) <= LATTICE_TOLERANCE:
            return step * round(offset) + origin, step, round(offset)
    return edge, size, None


def _grid_from_coordinates(obj: xr.Dataset | xr.DataArray) -> Grid:
    if "y" not in obj.dims or "x" not in obj.dims:
        raise ValueError(f"no y and x dimensions (has {tuple(obj.dims)}): not an array on a grid")
    attrs = obj[SPATIAL_REF].attrs
    crs = _crs_from_wkt(_mapping_wkt(attrs))
    geo = _geotransform(attrs)
    left, size_x, col = _axis(obj, "x", geo.c if geo else None, geo.a if geo else None)
    top, size_y, row = _axis(obj, "y", geo.f if geo else None, geo.e if geo else None)
    if geo is not None and col is not None and row is not None:
        # on the lattice of the GeoTransform (the grid the array was made on): exactly what Grid.window computes
        transform = geo @ Affine.translation(col, row)
    else:  # coordinates moved off that lattice (e.g. resampled): they are the truth
        transform = Affine(size_x, 0.0, left, 0.0, size_y, top)
    return Grid(crs, transform, obj.sizes["y"], obj.sizes["x"])


def _legacy_grid(obj: xr.Dataset | xr.DataArray) -> Grid:
    """The JSON ``grid`` attribute of earlier versions, when ``obj``'s x/y are that grid's (not a slice of it)."""
    grid = Grid.from_dict(json.loads(obj.attrs[LEGACY_GRID_ATTR]))
    shape = (obj.sizes.get("y"), obj.sizes.get("x"))
    same = shape == grid.shape and all(
        name not in obj.coords or _on_positions(np.asarray(obj[name].values, dtype=np.float64), expected, size)
        for name, expected, size in (
            ("x", grid.x_coords(), grid.resolution[0]),
            ("y", grid.y_coords(), grid.resolution[1]),
        )
    )
    if not same:
        raise ValueError(
            f"this array records its grid only in the {LEGACY_GRID_ATTR!r} attribute of earlier suelo versions, "
            f"and its (y, x) shape {shape} or coordinates are not that grid's (a slice of it?), so its grid is "
            "unknown: attach the grid before slicing (suelo.grid.attach_grid(cube, suelo.composite.cube_grid(cube)))"
            ", or open the cube file with suelo.composite.open_cube, which does"
        )
    return grid


def as_crs(crs: CRS | str | int) -> CRS:
    """Parse any CRS spelling users write (``EPSG:32631``, ``32631``, WKT, a rasterio CRS)."""
    if isinstance(crs, CRS):
        return crs
    try:
        if isinstance(crs, int) or (isinstance(crs, str) and crs.isdigit()):
            return CRS.from_epsg(int(crs))
        return CRS.from_user_input(crs)
    except Exception as exc:
        raise ConfigError(f"not a valid CRS: {crs!r} ({exc})") from exc


def union_bounds(boxes: Sequence[Bounds]) -> Bounds:
    """The smallest bounds holding every one of ``boxes`` (all in one CRS)."""
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def crs_units(crs: CRS) -> str:
    """The unit of a CRS's coordinates as messages write it: ``degrees``, ``m``, or what PROJ calls it."""
    if crs.is_geographic:
        return "degrees"
    units = (crs.linear_units or "").lower()
    return "m" if units in ("metre", "meter", "m") else units or "units"


def geometry_bounds(geometry: dict[str, Any]) -> Bounds:
    """Bounds of a GeoJSON-like geometry (any type, nested coordinate lists)."""
    xs: list[float] = []
    ys: list[float] = []

    def visit(coords: Any) -> None:
        if isinstance(coords[0], (int, float)):
            xs.append(float(coords[0]))
            ys.append(float(coords[1]))
        else:
            for item in coords:
                visit(item)

    if geometry["type"] == "GeometryCollection":
        for part in geometry["geometries"]:
            left, bottom, right, top = geometry_bounds(part)
            xs += [left, right]
            ys += [bottom, top]
    else:
        visit(geometry["coordinates"])
    return (min(xs), min(ys), max(xs), max(ys))


def utm_crs_for(geometry: dict[str, Any], geometry_crs: CRS) -> CRS:
    """The WGS 84 / UTM zone CRS containing the centroid of the geometry's bounds."""
    from rasterio._err import CPLE_BaseError

    try:
        left, bottom, right, top = transform_bounds(geometry_crs, CRS.from_epsg(4326), *geometry_bounds(geometry))
    except CPLE_BaseError as exc:
        raise ConfigError(f"aoi.crs {geometry_crs.to_string()}: cannot find the area's UTM zone ({exc})") from exc
    lon, lat = (left + right) / 2, (bottom + top) / 2
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
