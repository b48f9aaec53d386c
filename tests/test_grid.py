from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from suelo.errors import ConfigError
from suelo.grid import Grid, as_crs, utm_crs_for


def test_from_bounds_snaps_outward_to_pixel_multiples() -> None:
    grid = Grid.from_bounds((600003.0, 5699985.0, 600041.0, 5700012.0), "EPSG:32631", 10)
    assert grid.transform == Affine(10, 0, 600000, 0, -10, 5700020)
    assert grid.shape == (4, 5)  # y 5699980..5700020, x 600000..600050
    assert grid.bounds == (600000, 5699980, 600050, 5700020)


def test_pixel_centres_and_window() -> None:
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 1000, 0, -10, 2000), 4, 3)
    np.testing.assert_array_equal(grid.x_coords(), [1005, 1015, 1025])
    np.testing.assert_array_equal(grid.y_coords(), [1995, 1985, 1975, 1965])
    sub = grid.window(1, 3, 2, 3)
    assert sub.shape == (2, 1)
    assert sub.transform == Affine(10, 0, 1020, 0, -10, 1990)
    with pytest.raises(ValueError):
        grid.window(0, 5, 0, 1)


def test_blocks_cover_the_grid_exactly_once() -> None:
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 0, 0, -10, 0), 5, 7)
    covered = np.zeros(grid.shape, dtype=int)
    for (row, col), block in grid.blocks(3):
        covered[row : row + block.height, col : col + block.width] += 1
        assert block.transform == grid.transform @ Affine.translation(col, row)
    assert (covered == 1).all()


def test_from_geometry_picks_utm_zone_of_centroid() -> None:
    square = {
        "type": "Polygon",
        "coordinates": [[(5.3, 50.6), (5.34, 50.6), (5.34, 50.64), (5.3, 50.64), (5.3, 50.6)]],
    }
    grid = Grid.from_geometry(square, "EPSG:4326", None, 10)
    assert grid.crs == CRS.from_epsg(32631)
    assert utm_crs_for(square, CRS.from_epsg(4326)) == CRS.from_epsg(32631)
    south = {"type": "Point", "coordinates": (-58.4, -34.6)}  # Buenos Aires: zone 21 south
    assert utm_crs_for(south, CRS.from_epsg(4326)) == CRS.from_epsg(32721)
    assert grid.intersects((5.31, 50.61, 5.32, 50.62), "EPSG:4326")
    assert not grid.intersects((7.0, 50.61, 7.1, 50.62), "EPSG:4326")


def test_round_trip_and_validation() -> None:
    grid = Grid.from_bounds((0, 0, 100, 50), 32632, 10)
    assert Grid.from_dict(grid.to_dict()) == grid
    with pytest.raises(ConfigError):
        Grid(CRS.from_epsg(32631), Affine(10, 0, 0, 0, 10, 0), 2, 2)  # south-up
    with pytest.raises(ConfigError):
        as_crs("not a crs")
