"""MGRS 100 km squares as Sentinel-2 tiles: ``31UFS`` -> UTM CRS and footprint, without an MGRS library.

Only what a tile search needs: where a tile is (to search a STAC API for it before any scene is known). The
lettering is the WGS 84 ("AA") scheme Sentinel-2 uses. A Sentinel-2 tile starts at its square's north-west corner
and extends 109.8 km east and south (9.8 km of overlap with its neighbours).
"""

from __future__ import annotations

from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from suelo.errors import ConfigError
from suelo.grid import Bounds
from suelo.ingest.scene import MGRS_TILE

TILE_SIZE_M = 109_800.0
_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")  # by (zone - 1) % 3; eastings 100 km to 800 km
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"  # repeats every 2000 km of northing; even zones start at F
_BANDS = "CDEFGHJKLMNPQRSTUVWX"
# Lowest northing (m, with the southern false northing) of any 100 km row in each latitude band, as in the
# NGA tables: the row's letter gives the northing modulo 2000 km, and this picks the right 2000 km cycle.
_BAND_MIN_NORTHING = dict(zip(_BANDS, (
    1.1e6, 2.0e6, 2.8e6, 3.7e6, 4.6e6, 5.5e6, 6.4e6, 7.3e6, 8.2e6, 9.1e6,
    0.0, 0.8e6, 1.7e6, 2.6e6, 3.5e6, 4.4e6, 5.3e6, 6.2e6, 7.0e6, 7.9e6,
), strict=True))  # fmt: skip


def tile_crs(tile: str) -> CRS:
    """The WGS 84 / UTM CRS of a tile (north or south by its latitude band)."""
    zone, band = _parse(tile)[:2]
    return CRS.from_epsg((32600 if band >= "N" else 32700) + zone)


def tile_bounds(tile: str) -> Bounds:
    """The Sentinel-2 tile footprint (left, bottom, right, top) in :func:`tile_crs` metres."""
    zone, band, column, row = _parse(tile)
    easting = (_COLUMN_SETS[(zone - 1) % 3].index(column) + 1) * 100_000.0
    northing = ((_ROW_LETTERS.index(row) - (5 if zone % 2 == 0 else 0)) % 20) * 100_000.0
    while northing < _BAND_MIN_NORTHING[band]:
        northing += 2_000_000.0
    top = northing + 100_000.0  # the square's north edge; the tile hangs south and east from it
    return (easting, top - TILE_SIZE_M, easting + TILE_SIZE_M, top)


def tile_bounds_wgs84(tile: str) -> Bounds:
    """The tile footprint as west, south, east, north degrees (densified, so it contains the UTM footprint)."""
    bounds: Bounds = transform_bounds(tile_crs(tile), CRS.from_epsg(4326), *tile_bounds(tile), densify_pts=21)
    return bounds  # rasterio is untyped: its (west, south, east, north) typed here


def _parse(tile: str) -> tuple[int, str, str, str]:
    tile = tile.upper().removeprefix("T")
    if not MGRS_TILE.fullmatch(tile):
        raise ConfigError(f"not an MGRS tile id: {tile!r} (expected e.g. 31UFS)")
    zone, band, column, row = int(tile[:2]), tile[2], tile[3], tile[4]
    if column not in _COLUMN_SETS[(zone - 1) % 3]:
        raise ConfigError(f"MGRS tile {tile}: column letter {column} does not occur in UTM zone {zone}")
    return zone, band, column, row
