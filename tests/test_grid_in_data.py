"""The grid travels inside the data: the CF ``spatial_ref`` coordinate, slices with their own grid, cubes of earlier
versions, one tiling (tiles, halo, crop) and GDAL settings scoped to suelo's own reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.env import get_gdal_config

from suelo.composite import cube_grid, open_cube, write_cube
from suelo.errors import InputError
from suelo.grid import (
    LEGACY_GRID_ATTR,
    SPATIAL_REF,
    Grid,
    Tile,
    attach_grid,
    carry_grid,
    crs_of,
    has_grid,
    tile_slices,
)
from suelo.ingest.scene import GDAL_HTTP_OPTIONS, BandRef, gdal_env, read_on_grid

UTM = CRS.from_epsg(32631)
# an origin and a pixel size that are not round numbers, so exactness is not an accident of integers
GRID = Grid(UTM, Affine(10.0, 0.0, 600003.7, 0.0, -10.0, 5700021.3), 7, 9)
DEGREES = Grid(CRS.from_epsg(4326), Affine(0.0001, 0.0, 5.3, 0.0, -0.0001, 50.64), 5, 6)


def cube_on(grid: Grid, months: int = 2) -> xr.Dataset:
    """A small cube like build_cube's, with the variables write_cube needs."""
    rng = np.random.default_rng(0)
    shape = (months, grid.height, grid.width)
    valid = rng.random(shape) > 0.3
    cube = xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), rng.random((months, 2, *grid.shape), dtype=np.float32)),
            "valid": (("time", "y", "x"), valid),
            "clear_count": (("time", "y", "x"), valid.astype(np.uint8)),
            "n_clear": (("y", "x"), valid.sum(axis=0).astype(np.uint16)),
        },
        coords={
            "time": np.array([np.datetime64(f"2021-{m + 1:02d}-01", "ns") for m in range(months)]),
            "band": ["B04", "B08"],
        },
        attrs={"crs": grid.crs.to_string(), "scenes": "[]"},
    )
    return attach_grid(cube, grid)


def legacy_cube(grid: Grid) -> xr.Dataset:
    """A cube as suelo made them before the spatial_ref coordinate: the grid only in a JSON attribute."""
    cube = cube_on(grid).drop_vars(SPATIAL_REF)
    cube.attrs[LEGACY_GRID_ATTR] = json.dumps(grid.to_dict())
    for name in cube.data_vars:
        cube[name].attrs.pop("grid_mapping", None)
    return cube


def exact(grid: Grid) -> tuple[object, ...]:
    """Everything a grid is, compared bit for bit (Affine's == is exact too; this says so in the assertion)."""
    return (grid.crs.to_wkt(), tuple(grid.transform), grid.height, grid.width)


# -- the CF grid mapping ----------------------------------------------------------------------------------------------


def test_spatial_ref_holds_the_cf_grid_mapping_and_gdal_geotransform() -> None:
    cube = cube_on(GRID)
    mapping = cube[SPATIAL_REF].attrs
    assert cube[SPATIAL_REF].ndim == 0 and SPATIAL_REF in cube.coords
    assert mapping["spatial_ref"] == UTM.to_wkt()  # GDAL's WKT, what GDAL and suelo read
    assert mapping["GeoTransform"] == "600003.7 10.0 0.0 5700021.3 0.0 -10.0"  # GDAL order, as rioxarray writes
    cf = pyproj.CRS.from_wkt(UTM.to_wkt()).to_cf()
    assert {k: mapping[k] for k in cf} == cf  # crs_wkt included: CF's WKT 2
    assert mapping["grid_mapping_name"] == "transverse_mercator" and mapping["longitude_of_central_meridian"] == 3.0
    for name in ("reflectance", "valid", "clear_count", "n_clear"):
        assert cube[name].attrs["grid_mapping"] == SPATIAL_REF
    np.testing.assert_array_equal(cube["x"].values, 600003.7 + 10.0 * (np.arange(9) + 0.5))  # pixel centres
    np.testing.assert_array_equal(cube["y"].values, 5700021.3 - 10.0 * (np.arange(7) + 0.5))
    assert LEGACY_GRID_ATTR not in cube.attrs
    geographic = attach_grid(xr.DataArray(np.zeros(DEGREES.shape), dims=("y", "x")), DEGREES)
    assert geographic[SPATIAL_REF].attrs["grid_mapping_name"] == "latitude_longitude"
    assert geographic.attrs["grid_mapping"] == SPATIAL_REF


def test_attach_grid_leaves_its_input_alone_and_checks_the_coordinates() -> None:
    bare = xr.Dataset({"n": (("y", "x"), np.zeros(GRID.shape)), "t": (("time",), [1, 2])})
    attached = attach_grid(bare, GRID)
    assert SPATIAL_REF not in bare.coords and "grid_mapping" not in bare["n"].attrs
    assert "grid_mapping" not in attached["t"].attrs  # no y/x: not on the grid
    with pytest.raises(ValueError, match="shape"):
        attach_grid(bare.isel(y=slice(1, None)), GRID)
    shifted = attached.assign_coords(x=attached["x"].values + 3.0)
    with pytest.raises(ValueError, match="x coordinates are not the pixel centres"):
        attach_grid(shifted, GRID)


# -- slices have their own grid ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [GRID, DEGREES], ids=["utm", "degrees"])
def test_every_slice_is_exactly_the_window(grid: Grid) -> None:
    cube = cube_on(grid)
    assert exact(cube_grid(cube)) == exact(grid)
    for a in range(grid.height):
        for b in range(a + 1, grid.height + 1):
            for c, d in ((0, grid.width), (1, 2), (grid.width - 1, grid.width), (2, grid.width - 1)):
                sliced = cube.isel(y=slice(a, b), x=slice(c, d))
                assert exact(cube_grid(sliced)) == exact(grid.window(a, b, c, d)), (a, b, c, d)


def test_one_row_one_column_and_one_pixel_slices() -> None:
    cube = cube_on(GRID)
    row = cube_grid(cube.isel(y=slice(3, 4)))
    assert row.shape == (1, 9) and row.transform == Affine(10.0, 0.0, 600003.7, 0.0, -10.0, 5700021.3 - 30.0)
    assert row == GRID.window(3, 4, 0, 9)
    column = cube_grid(cube["n_clear"].isel(x=slice(8, 9)))  # a DataArray carries the coordinate too
    assert column == GRID.window(0, 7, 8, 9) and column.resolution == (10.0, 10.0)
    pixel = cube_grid(cube.isel(y=slice(6, 7), x=slice(0, 1)))
    assert exact(pixel) == exact(GRID.window(6, 7, 0, 1))
    assert cube_grid(cube.isel(y=slice(2, 6)).isel(y=slice(1, 2))) == GRID.window(3, 4, 0, 9)  # a slice's slice


def test_a_one_pixel_axis_needs_the_geotransform() -> None:
    cube = cube_on(GRID).isel(y=slice(0, 1))
    cube[SPATIAL_REF].attrs.pop("GeoTransform")
    with pytest.raises(ValueError, match="one y pixel and no GeoTransform"):
        cube_grid(cube)
    assert cube_grid(cube_on(GRID).isel(y=slice(0, 2))) == GRID.window(0, 2, 0, 9)  # two rows: their spacing


def test_coordinates_win_over_a_stale_geotransform() -> None:
    cube = cube_on(GRID)
    every_other = cube_grid(cube.isel(x=slice(1, None, 2)))  # 20 m columns: off the GeoTransform's lattice
    assert every_other.transform == Affine(20.0, 0.0, 600003.7 + 15.0 - 10.0, 0.0, -10.0, 5700021.3)
    assert every_other.shape == (7, 4)
    moved = cube.assign_coords(x=cube["x"].values + 3.0)  # shifted by a fraction of a pixel
    assert cube_grid(moved).transform.c == pytest.approx(600006.7, abs=1e-9)
    irregular = cube.assign_coords(x=cube["x"].values + np.r_[0.0, 0.0, 4.0, np.zeros(6)])
    with pytest.raises(ValueError, match="not evenly spaced"):
        cube_grid(irregular)


def test_no_grid_at_all_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no grid"):
        cube_grid(xr.Dataset({"n": (("y", "x"), np.zeros((2, 2)))}))
    assert not has_grid(xr.Dataset()) and has_grid(cube_on(GRID)) and has_grid(legacy_cube(GRID))


# -- cubes of earlier versions -----------------------------------------------------------------------------------------


def test_a_legacy_cube_is_read_from_its_json_but_a_slice_of_it_is_refused() -> None:
    cube = legacy_cube(GRID)
    assert cube_grid(cube) == GRID
    for sliced in (cube.isel(y=slice(2, 3)), cube.isel(x=slice(0, 4)), cube.isel(y=slice(1, 5), x=slice(1, 2))):
        with pytest.raises(ValueError, match=r"earlier suelo versions.*a slice of it"):
            cube_grid(sliced)
        assert crs_of(sliced) == UTM  # the CRS holds for any slice (what Presto's lat/lon need)
    upgraded = attach_grid(cube, cube_grid(cube))  # what the error message tells users to do before slicing
    assert LEGACY_GRID_ATTR not in upgraded.attrs
    assert cube_grid(upgraded.isel(y=slice(2, 3))) == GRID.window(2, 3, 0, 9)
    shifted = cube.assign_coords(x=cube["x"].values + 10.0)  # same shape, other place: not the JSON's grid either
    with pytest.raises(ValueError, match="earlier suelo versions"):
        cube_grid(shifted)


def test_legacy_cube_files_open_with_the_coordinate(tmp_path: Path) -> None:
    # what write_cube wrote before: spatial_ref a data variable (crs_wkt, spatial_ref, GeoTransform), JSON grid attr
    old = legacy_cube(GRID)
    old["spatial_ref"] = xr.DataArray(
        0,
        attrs={
            "crs_wkt": UTM.to_wkt(),
            "spatial_ref": UTM.to_wkt(),
            "GeoTransform": " ".join(str(v) for v in GRID.transform.to_gdal()),
        },
    )
    old["valid"] = old["valid"].astype(np.uint8)
    old.to_netcdf(tmp_path / "old.nc", engine="netcdf4")
    opened = open_cube(tmp_path / "old.nc")
    assert SPATIAL_REF in opened.coords and LEGACY_GRID_ATTR not in opened.attrs and opened["valid"].dtype == bool
    assert cube_grid(opened) == GRID and cube_grid(opened.isel(y=slice(4, 5), x=slice(2, 7))) == GRID.window(4, 5, 2, 7)
    # only the JSON attribute (a cube written by other means): checked against its coordinates, then upgraded
    json_only = legacy_cube(GRID)
    json_only["valid"] = json_only["valid"].astype(np.uint8)
    json_only.to_netcdf(tmp_path / "json_only.nc", engine="netcdf4")
    opened = open_cube(tmp_path / "json_only.nc")
    assert cube_grid(opened.isel(y=slice(6, 7))) == GRID.window(6, 7, 0, 9)


def test_a_written_slice_has_its_own_georeferencing_on_disk(tmp_path: Path) -> None:
    sliced = cube_on(GRID).isel(y=slice(2, 5), x=slice(3, 8))
    path = tmp_path / "slice.nc"
    write_cube(sliced, path)
    window = GRID.window(2, 5, 3, 8)
    with rasterio.open(f"NETCDF:{path}:n_clear") as src:  # GDAL / QGIS read it where it is
        assert src.crs == UTM and src.transform.almost_equals(window.transform) and src.shape == (3, 5)
    with netCDF4.Dataset(path) as ds:
        assert ds.variables["n_clear"].grid_mapping == SPATIAL_REF
        assert ds.variables[SPATIAL_REF].GeoTransform == " ".join(str(v) for v in window.transform.to_gdal())
        assert Grid.from_dict(json.loads(ds.getncattr(LEGACY_GRID_ATTR))) == window  # for older suelo versions
    back = open_cube(path)
    assert exact(cube_grid(back)) == exact(window)
    assert exact(cube_grid(back.isel(y=slice(0, 1)))) == exact(GRID.window(2, 3, 3, 8))


def test_arrays_made_on_a_cube_carry_its_grid() -> None:
    cube = cube_on(GRID).isel(y=slice(1, 4))
    posterior = xr.DataArray(np.zeros((2, 3, 9)), dims=("class", "y", "x"), coords={"y": cube["y"], "x": cube["x"]})
    carried = carry_grid(posterior, cube)
    assert cube_grid(carried) == GRID.window(1, 4, 0, 9) and carried.attrs["grid_mapping"] == SPATIAL_REF
    # the slice gets a GeoTransform of its own, not the parent's
    assert carried[SPATIAL_REF].attrs["GeoTransform"] == " ".join(
        str(v) for v in GRID.window(1, 4, 0, 9).transform.to_gdal()
    )
    assert carry_grid(posterior, xr.Dataset()) is posterior  # nothing to carry


# -- one tiling --------------------------------------------------------------------------------------------------------


def test_tile_slices_are_the_row_major_loop_every_tiling_used() -> None:
    for shape in ((5, 7), (1, 1), (6, 6), (513, 1030)):
        for size in (1, 3, 6, 512):
            expected = [
                (slice(r, min(r + size, shape[0])), slice(c, min(c + size, shape[1])))
                for r in range(0, shape[0], size)
                for c in range(0, shape[1], size)
            ]
            assert list(tile_slices(shape, size)) == expected
    assert list(tile_slices((5, 7), (2, 7))) == [(slice(0, 2), slice(0, 7)), (slice(2, 4), slice(0, 7)),
                                                 (slice(4, 5), slice(0, 7))]  # fmt: skip
    with pytest.raises(ValueError, match="positive"):
        list(tile_slices((5, 7), 0))


def test_tiles_with_a_halo_at_the_corners_edges_and_inside() -> None:
    grid = Grid(UTM, Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 2000.0), 7, 8)
    tiles = list(grid.tiles(3, halo=2))
    assert [(t.row, t.col, t.height, t.width) for t in tiles] == [
        (0, 0, 3, 3), (0, 3, 3, 3), (0, 6, 3, 2),
        (3, 0, 3, 3), (3, 3, 3, 3), (3, 6, 3, 2),
        (6, 0, 1, 3), (6, 3, 1, 3), (6, 6, 1, 2),
    ]  # fmt: skip
    top_left, inside, bottom_right = tiles[0], tiles[4], tiles[8]
    assert (top_left.outer_row, top_left.outer_col, top_left.outer.shape) == (0, 0, (5, 5))
    assert top_left.crop == (slice(0, 3), slice(0, 3))  # no halo above or left of the grid
    assert (inside.outer_row, inside.outer_col, inside.outer.shape) == (1, 1, (6, 7))  # 3 + 2 + 1 rows: the edge
    assert inside.crop == (slice(2, 5), slice(2, 5))
    assert (bottom_right.outer_row, bottom_right.outer_col, bottom_right.outer.shape) == (4, 4, (3, 4))
    assert bottom_right.crop == (slice(2, 3), slice(2, 4))
    assert inside.grid.transform == Affine(10.0, 0.0, 1030.0, 0.0, -10.0, 1970.0)
    assert inside.outer.transform == Affine(10.0, 0.0, 1010.0, 0.0, -10.0, 1990.0)
    values = np.arange(grid.height * grid.width).reshape(grid.shape)
    covered = np.zeros(grid.shape, dtype=int)
    for tile in tiles:
        covered[tile.rows, tile.cols] += 1
        on_outer = values[tile.outer_rows, tile.outer_cols]
        np.testing.assert_array_equal(on_outer[tile.crop], values[tile.rows, tile.cols])
        assert tile.grid == grid.window(tile.row, tile.row + tile.height, tile.col, tile.col + tile.width)
        assert tile.grid.slices_in(tile.outer) == tile.crop and tile.outer.slices_in(grid) == (
            tile.outer_rows,
            tile.outer_cols,
        )
    assert (covered == 1).all()
    whole = grid.tile(2, 4, 2, 4, halo=100)  # a halo larger than the grid: clipped to it
    assert whole.outer == grid and whole.crop == (slice(2, 4), slice(2, 4))
    assert isinstance(whole, Tile) and grid.tile(2, 4, 2, 4).outer == whole.grid  # no halo
    with pytest.raises(ValueError, match="halo"):
        grid.tile(0, 1, 0, 1, halo=-1)
    assert [(pos, g) for pos, g in grid.blocks(3)] == [((t.row, t.col), t.grid) for t in grid.tiles(3)]


def test_expand_and_offsets() -> None:
    grown = GRID.expand(2)
    assert grown.shape == (11, 13) and grown.transform == GRID.transform @ Affine.translation(-2, -2)
    assert grown.window(2, 9, 2, 11) == GRID and GRID.expand(0) == GRID
    assert GRID.expand(-1) == GRID.window(1, 6, 1, 8)
    assert GRID.slices_in(grown) == (slice(2, 9), slice(2, 11))
    assert GRID.offset_in(GRID.window(3, 4, 5, 6)) == (-3, -5)  # offsets may be negative, slices may not
    with pytest.raises(ValueError, match="not inside"):
        grown.slices_in(GRID)
    half_pixel = Grid(UTM, GRID.transform @ Affine.translation(0.5, 0), 2, 2)
    with pytest.raises(ValueError, match="fraction of a pixel"):
        half_pixel.offset_in(GRID)
    with pytest.raises(ValueError, match="lattice"):
        Grid(UTM, Affine(20.0, 0.0, 600003.7, 0.0, -20.0, 5700021.3), 2, 2).offset_in(GRID)


# -- GDAL settings, scoped ---------------------------------------------------------------------------------------------


def test_importing_suelo_sets_no_gdal_environment_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GDAL_HTTP")}
    code = (
        "import os, suelo.ingest, suelo.ingest.scene; print(sorted(k for k in os.environ if k.startswith('GDAL_HTTP')))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_gdal_env_is_scoped_and_the_users_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in GDAL_HTTP_OPTIONS:
        monkeypatch.delenv(option, raising=False)
    before = dict(os.environ)
    assert get_gdal_config("GDAL_HTTP_TIMEOUT") is None
    with gdal_env():
        # rasterio gives numbers back as numbers
        assert {k: str(get_gdal_config(k)) for k in GDAL_HTTP_OPTIONS} == GDAL_HTTP_OPTIONS
        assert dict(os.environ) == before  # nothing leaks into the process environment (or its children)
    assert get_gdal_config("GDAL_HTTP_TIMEOUT") is None and dict(os.environ) == before
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "7")  # the user's environment wins over suelo's default
    with gdal_env():
        assert get_gdal_config("GDAL_HTTP_TIMEOUT") == 7 and get_gdal_config("GDAL_HTTP_MAX_RETRY") == 2
    with rasterio.Env(GDAL_HTTP_CONNECTTIMEOUT="3"), gdal_env():  # and so does the user's own rasterio.Env
        assert get_gdal_config("GDAL_HTTP_CONNECTTIMEOUT") == 3 and get_gdal_config("GDAL_HTTP_TIMEOUT") == 7


def test_band_reads_run_inside_the_gdal_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GDAL_HTTP_TIMEOUT", raising=False)
    seen: list[str] = []

    def fake_open(path: str) -> rasterio.io.DatasetReader:
        seen.append(str(get_gdal_config("GDAL_HTTP_TIMEOUT")))
        raise rasterio.errors.RasterioIOError("offline")

    monkeypatch.setattr("suelo.ingest.scene.open_raster", fake_open)
    with pytest.raises(InputError, match="offline"):
        read_on_grid(BandRef("/vsicurl/https://suelo-offline.invalid/B04.tif"), GRID, "nearest", None)
    assert seen == [GDAL_HTTP_OPTIONS["GDAL_HTTP_TIMEOUT"]]
    assert get_gdal_config("GDAL_HTTP_TIMEOUT") is None and "GDAL_HTTP_TIMEOUT" not in os.environ


def test_presto_positions_of_slices_are_the_same_for_old_and_new_cubes() -> None:
    from suelo.models.presto_inputs import cube_to_pixels

    new, old = cube_on(GRID), legacy_cube(GRID)
    _, whole, _ = cube_to_pixels(new)
    _, new_rows, _ = cube_to_pixels(new.isel(y=slice(2, 4)))
    _, old_rows, _ = cube_to_pixels(old.isel(y=slice(2, 4)))  # the CRS of an old cube's slice is still known
    np.testing.assert_array_equal(new_rows, old_rows)
    np.testing.assert_array_equal(new_rows, whole[2 * GRID.width : 4 * GRID.width])


def test_a_prediction_of_a_slice_is_georeferenced_where_the_slice_is(tmp_path: Path) -> None:
    from suelo.predict import write_prediction

    cube = cube_on(GRID).isel(y=slice(1, 6), x=slice(4, 9))
    shape = (cube.sizes["y"], cube.sizes["x"])
    prediction = carry_grid(
        xr.Dataset(
            {
                "posterior": (("class", "y", "x"), np.zeros((2, *shape), dtype=np.float32)),
                "class_code": (("y", "x"), np.ones(shape, dtype=np.uint8)),
                "novelty_score": (("y", "x"), np.zeros(shape, dtype=np.float32)),
                "outside_training": (("y", "x"), np.zeros(shape, dtype=bool)),
            },
            coords={"class": [1, 2], "y": cube["y"].values, "x": cube["x"].values},
        ),
        cube,
    )
    path = tmp_path / "prediction.nc"
    write_prediction(prediction, path)
    with rasterio.open(f"NETCDF:{path}:class_code") as src:
        assert src.crs == UTM and src.transform.almost_equals(GRID.window(1, 6, 4, 9).transform)
    with xr.open_dataset(path) as back:
        assert cube_grid(back) == GRID.window(1, 6, 4, 9)
