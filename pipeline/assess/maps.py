"""The map (or strata raster) an assessment is about: its grid, values, legend, pixel counts and areas.

A suelo class map carries its legend and reason codes in its metadata (tags ``LEGEND`` and ``REASON_CODES``,
written by :func:`suelo.write.write_class_map`), so an assessment needs nothing but the COG. A strata raster
(``--strata``: last year's map, regions, another product) may be any single-band integer GeoTIFF on the map's
grid; its nodata pixels are outside every stratum.

Areas: in a projected CRS a pixel's area is its cell size in the CRS's units (metres, or feet converted), as
map producers report it; the assessment says whether the CRS is equal-area (UTM's scale error is under 0.1 %
within a zone). In a geographic CRS (degrees) the cell's true area shrinks with latitude, so the area of each
row's cells is computed on the ellipsoid (pyproj's geodesic polygon area) and pixel counts become areas row by row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from pyproj import CRS as ProjCRS
from pyproj import Geod
from rasterio.windows import Window

from suelo.errors import InputError
from suelo.grid import Grid
from suelo.reasons import ReasonCodes

#: Rows read at a time when counting or locating pixels: bounded memory for any map width.
ROWS_PER_READ = 512
_EQUAL_AREA_METHODS = ("equal area", "albers", "mollweide", "sinusoidal", "eckert iv", "eckert vi", "equal earth")


@dataclass(frozen=True)
class Entry:
    """One value of a map: a legend class or a reason code, with its name and colour (None: transparent)."""

    code: int
    name: str
    color: str | None


@dataclass(frozen=True)
class RasterValues:
    """A single-band integer raster: grid, nodata, and the pixels and hectares of each value (nodata excluded)."""

    path: Path
    grid: Grid
    nodata: int | None
    pixels: dict[int, int]
    areas_ha: dict[int, float]
    pixel_area_m2: float | None  # None in a geographic CRS (the area varies by row)
    area_basis: str

    @property
    def grid_id(self) -> str:
        return grid_digest(self.grid)

    def values_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The raster's values at pixel (row, col) pairs, read window by window (points inside the grid)."""
        out = np.zeros(len(rows), dtype=np.int64)
        with rasterio.open(self.path) as src:
            for start, stop in _row_ranges(self.grid.height):
                inside = (rows >= start) & (rows < stop)
                if inside.any():
                    block = src.read(1, window=Window(0, start, self.grid.width, stop - start))
                    out[inside] = block[rows[inside] - start, cols[inside]]
        return out

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, values) of consecutive row windows, top to bottom."""
        with rasterio.open(self.path) as src:
            for start, stop in _row_ranges(self.grid.height):
                yield start, src.read(1, window=Window(0, start, self.grid.width, stop - start))


@dataclass(frozen=True)
class ClassMap(RasterValues):
    """A suelo class map: its values plus the legend classes and reason codes of its metadata."""

    entries: tuple[Entry, ...] = ()
    reasons: ReasonCodes = field(default_factory=ReasonCodes)
    thresholds: dict[str, Any] | None = None

    @property
    def classes(self) -> tuple[Entry, ...]:
        reasons = set(self.reasons.as_tuple())
        return tuple(e for e in self.entries if e.code not in reasons)

    def entry(self, code: int) -> Entry:
        for e in self.entries:
            if e.code == code:
                return e
        return Entry(int(code), f"value {int(code)}", None)


def grid_digest(grid: Grid) -> str:
    """A short fingerprint of a grid (CRS, transform, shape): the sample's points record the grid they were
    drawn on, so a sample drawn on another grid is recognised whatever else changed."""
    text = json.dumps(
        {
            "crs": grid.crs.to_wkt(),
            "transform": [round(v, 9) for v in list(grid.transform)[:6]],
            "shape": [grid.height, grid.width],
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_grid(grid: Grid) -> str:
    """The grid in words, for messages: 'EPSG:32631, 10 m, 100 x 100 px from (664000, 5612120)'."""
    size = grid.transform.a
    return (
        f"{grid.crs.to_string()}, {size:g} {'deg' if grid.crs.is_geographic else 'm'}, "
        f"{grid.width} x {grid.height} px from ({grid.transform.c:.12g}, {grid.transform.f:.12g})"
    )


def _row_ranges(height: int) -> Iterator[tuple[int, int]]:
    for start in range(0, height, ROWS_PER_READ):
        yield start, min(height, start + ROWS_PER_READ)


def _row_areas_m2(grid: Grid) -> np.ndarray:
    """Area (m^2) of one cell of each row of a geographic grid, on the CRS's ellipsoid."""
    crs = ProjCRS.from_wkt(grid.crs.to_wkt())
    ellipsoid = crs.ellipsoid
    geod = Geod(a=ellipsoid.semi_major_metre, rf=ellipsoid.inverse_flattening) if ellipsoid else Geod(ellps="WGS84")
    t = grid.transform
    areas = np.empty(grid.height)
    for row in range(grid.height):
        top, bottom = t.f + t.e * row, t.f + t.e * (row + 1)
        area, _perimeter = geod.polygon_area_perimeter([t.c, t.c + t.a, t.c + t.a, t.c], [top, top, bottom, bottom])
        areas[row] = abs(area)
    return areas


def _area_basis(grid: Grid) -> tuple[float | None, str, float]:
    """(pixel area in m^2 or None, how areas are computed, metres per CRS unit)."""
    if grid.crs.is_geographic:
        return None, f"geodesic area of each row's cells on the ellipsoid ({grid.crs.to_string()})", 0.0
    crs = ProjCRS.from_wkt(grid.crs.to_wkt())
    factor = float(crs.axis_info[0].unit_conversion_factor) if crs.axis_info else 1.0
    cell = abs(grid.transform.a * grid.transform.e) * factor**2
    method = (crs.coordinate_operation.method_name if crs.coordinate_operation else "").lower()
    equal_area = any(word in method for word in _EQUAL_AREA_METHODS)
    kind = "an equal-area projection" if equal_area else "not an equal-area projection (scale error applies)"
    return cell, f"cell size of the map's CRS ({grid.crs.to_string()}, {method or 'projected'}: {kind})", factor


def read_values(path: str | Path, what: str = "raster") -> RasterValues:
    """Grid, nodata and per-value pixels and areas of a single-band integer raster; InputError if it is not one."""
    path = Path(path)
    try:
        src = rasterio.open(path)
    except (rasterio.errors.RasterioIOError, OSError) as exc:
        raise InputError(path, f"cannot read the {what} ({exc})") from exc
    with src:
        if src.count != 1 or not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise InputError(path, f"the {what} must be one band of integer codes, got {src.count} x {src.dtypes[0]}")
        if src.crs is None:
            raise InputError(path, f"the {what} has no CRS")
        try:
            grid = Grid(src.crs, src.transform, src.height, src.width)
        except Exception as exc:
            raise InputError(path, f"the {what}'s grid is not usable ({exc})") from exc
        nodata = None if src.nodata is None else int(src.nodata)
    pixel_area, basis, _factor = _area_basis(grid)
    row_areas = _row_areas_m2(grid) if pixel_area is None else None
    pixels: dict[int, int] = {}
    areas: dict[int, float] = {}
    values = RasterValues(path, grid, nodata, {}, {}, pixel_area, basis)
    for start, block in values.blocks():
        codes, counts = np.unique(block, return_counts=True)
        if row_areas is None:
            block_areas = {int(c): int(n) * float(pixel_area or 0.0) for c, n in zip(codes, counts, strict=True)}
        else:
            weights = np.repeat(row_areas[start : start + block.shape[0]], block.shape[1])
            sums = np.bincount(np.searchsorted(codes, block.ravel()), weights=weights, minlength=len(codes))
            block_areas = {int(c): float(a) for c, a in zip(codes, sums, strict=True)}
        for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
            if code == nodata:
                continue
            pixels[code] = pixels.get(code, 0) + int(count)
            areas[code] = areas.get(code, 0.0) + block_areas[code] / 1e4
    return RasterValues(path, grid, nodata, pixels, areas, pixel_area, basis)


def read_class_map(path: str | Path) -> ClassMap:
    """A suelo class map (legend and reason codes from its metadata); InputError naming the file otherwise."""
    path = Path(path)
    values = read_values(path, "map")
    with rasterio.open(path) as src:
        tags = src.tags()
    try:
        legend = json.loads(tags["LEGEND"])
        codes = json.loads(tags["REASON_CODES"])
        entries = tuple(Entry(int(e["code"]), str(e["name"]), e.get("color")) for e in legend)
        reasons = ReasonCodes(**{k: int(v) for k, v in codes.items()})
        thresholds = json.loads(tags["THRESHOLDS"]) if "THRESHOLDS" in tags else None
    except KeyError as exc:
        raise InputError(path, f"not a suelo class map: its metadata has no {exc.args[0]} tag") from None
    except (ValueError, TypeError) as exc:
        raise InputError(path, f"not a suelo class map: unreadable LEGEND/REASON_CODES metadata ({exc})") from exc
    known = {e.code for e in entries}
    unknown = sorted(set(values.pixels) - known)
    if unknown:
        raise InputError(path, f"map values {unknown[:10]} are neither legend classes nor reason codes")
    return ClassMap(
        values.path, values.grid, reasons.nodata, values.pixels, values.areas_ha, values.pixel_area_m2,
        values.area_basis, entries, reasons, thresholds,
    )  # fmt: skip
