"""The target grid: one CRS, one north-up affine transform and one (height, width) shape.

A :class:`Grid` travels with every array the pipeline produces. Rows are ``y`` and columns are ``x``; shapes are
always ``(height, width)`` and bounds always ``(left, bottom, right, top)``, as in rasterio.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds, transform_geom

from suelo.errors import ConfigError

Bounds = tuple[float, float, float, float]
#: About 10,000 km at 10 m: larger than any real region, small enough that block lists and arrays stay sane.
MAX_GRID_SIDE = 1_048_576


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

    def blocks(self, block_size: int) -> Iterator[tuple[tuple[int, int], Grid]]:
        """Yield ``((row_start, col_start), sub_grid)`` tiles of at most ``block_size`` pixels a side."""
        for row in range(0, self.height, block_size):
            for col in range(0, self.width, block_size):
                yield (
                    (row, col),
                    self.window(row, min(row + block_size, self.height), col, min(col + block_size, self.width)),
                )

    def intersects(self, bounds: Bounds, crs: CRS | str | int) -> bool:
        """Whether ``bounds`` given in ``crs`` overlap this grid (tested in this grid's CRS)."""
        left, bottom, right, top = transform_bounds(as_crs(crs), self.crs, *bounds, densify_pts=21)
        g_left, g_bottom, g_right, g_top = self.bounds
        return left < g_right and right > g_left and bottom < g_top and top > g_bottom

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
