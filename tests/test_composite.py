from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from suelo.composite import build_cube, composite_block, cube_grid, month_starts, open_cube, write_cube
from suelo.settings import IngestSpec, MaskingSpec, PeriodSpec
from tests.fixtures import SCENE_BANDS, SCENE_GRID, SCENE_INGEST, constant, make_scene, vegetation

GRID, BANDS, INGEST = SCENE_GRID, SCENE_BANDS, SCENE_INGEST  # the scenes of tests.fixtures.make_scene
CRS_UTM, TRANSFORM = GRID.crs, GRID.transform


def test_median_of_clear_observations_with_exact_counts(tmp_path: Path) -> None:
    scl_cloudy = vegetation()
    scl_cloudy[0, 0] = 9  # high-probability cloud
    scl_cloudy[1, 2] = 3  # cloud shadow
    scenes = [
        make_scene(tmp_path, "a", dt.date(2021, 6, 1), constant(1000), vegetation()),
        make_scene(tmp_path, "b", dt.date(2021, 6, 11), constant(3000), scl_cloudy),
        make_scene(tmp_path, "c", dt.date(2021, 6, 21), constant(2000), vegetation()),
    ]
    planes = composite_block(scenes, GRID, INGEST)
    reflectance, count = planes[:2], planes[2]
    assert reflectance[0, 3, 3] == pytest.approx(0.2)  # median of 0.1, 0.3, 0.2
    assert reflectance[1, 0, 0] == pytest.approx(0.15)  # cloud dropped: mean of the two middle of 0.1, 0.2
    assert reflectance[0, 1, 2] == pytest.approx(0.15)
    expected_count = np.full((4, 6), 3)
    expected_count[0, 0] = expected_count[1, 2] = 2
    np.testing.assert_array_equal(count, expected_count)


def test_offset_is_applied_per_scene(tmp_path: Path) -> None:
    scenes = [make_scene(tmp_path, "new", dt.date(2022, 3, 5), constant(2500), vegetation(), offset=-1000)]
    planes = composite_block(scenes, GRID, INGEST)
    np.testing.assert_allclose(planes[:2], 0.15, rtol=0, atol=1e-7)


def test_nodata_pixel_in_one_band_clears_the_whole_observation(tmp_path: Path) -> None:
    dn = constant(1500)
    dn[1, 2, 4] = 0  # B08 missing at (2, 4)
    scenes = [
        make_scene(tmp_path, "a", dt.date(2021, 6, 1), dn, vegetation()),
        make_scene(tmp_path, "b", dt.date(2021, 6, 2), constant(500), vegetation()),
    ]
    planes = composite_block(scenes, GRID, INGEST)
    assert planes[2, 2, 4] == 1
    assert planes[0, 2, 4] == pytest.approx(0.05)  # only scene b; B04 of scene a not mixed in
    assert planes[0, 0, 0] == pytest.approx(0.1)


def test_cube_months_validity_and_blocking(tmp_path: Path) -> None:
    all_cloud = np.full((4, 6), 8, dtype=np.uint8)
    all_cloud[3, 5] = 4
    scenes = [
        make_scene(tmp_path, "jan", dt.date(2021, 1, 15), constant(1000), vegetation()),
        make_scene(tmp_path, "mar1", dt.date(2021, 3, 2), constant(2000), all_cloud),
        make_scene(tmp_path, "mar2", dt.date(2021, 3, 20), constant(4000), vegetation()),
        make_scene(tmp_path, "late", dt.date(2021, 5, 1), constant(4000), vegetation()),  # outside the period
    ]
    period = PeriodSpec(start=dt.date(2021, 1, 1), end=dt.date(2021, 3, 31))
    cube = build_cube(scenes, GRID, period, INGEST, block_size=512)
    assert [str(t)[:10] for t in cube.time.values] == ["2021-01-01", "2021-02-01", "2021-03-01"]
    assert cube.reflectance.dims == ("time", "band", "y", "x")
    assert list(cube.band.values) == list(BANDS)
    assert cube_grid(cube) == GRID
    np.testing.assert_array_equal(cube.x.values, GRID.x_coords())
    computed = cube.compute()
    assert computed.valid.values[0].all() and not computed.valid.values[1].any() and computed.valid.values[2].all()
    assert np.isnan(computed.reflectance.values[1]).all()
    assert computed.reflectance.values[2, 0, 3, 5] == pytest.approx(0.3)  # both March scenes clear there
    assert computed.reflectance.values[2, 0, 0, 0] == pytest.approx(0.4)
    assert computed.clear_count.values[2, 3, 5] == 2
    assert computed.n_clear.values[3, 5] == 3 and computed.n_clear.values[0, 0] == 2
    blocked = build_cube(scenes, GRID, period, INGEST, block_size=16).compute()
    tiny_blocks = build_cube(scenes, GRID, period, INGEST, block_size=3)
    assert tiny_blocks.reflectance.data.numblocks[2:] == (2, 2)
    np.testing.assert_array_equal(tiny_blocks.reflectance.values, blocked.reflectance.values)
    np.testing.assert_array_equal(tiny_blocks.n_clear.values, blocked.n_clear.values)


def test_snow_is_kept_unless_asked(tmp_path: Path) -> None:
    scenes = [make_scene(tmp_path, "snow", dt.date(2021, 2, 1), constant(6000), np.full((4, 6), 11))]
    kept = composite_block(scenes, GRID, INGEST)
    assert (kept[2] == 1).all()
    masked = composite_block(scenes, GRID, IngestSpec(bands=BANDS, masking=MaskingSpec(mask_snow=True)))
    assert (masked[2] == 0).all() and np.isnan(masked[:2]).all()


def test_write_is_atomic_and_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scenes = [make_scene(tmp_path, "a", dt.date(2021, 1, 15), constant(1234), vegetation(), offset=-1000)]
    cube = build_cube(scenes, GRID, PeriodSpec(start=dt.date(2021, 1, 1), end=dt.date(2021, 2, 28)), INGEST)
    path = tmp_path / "out" / "cube.nc"
    write_cube(cube, path)
    back = open_cube(path).compute()
    np.testing.assert_allclose(back.reflectance.values[0], 0.0234, atol=1e-6)
    assert np.isnan(back.reflectance.values[1]).all()
    assert back.valid.dtype == bool and back.valid.values[0].all() and not back.valid.values[1].any()
    assert cube_grid(back) == GRID
    with rasterio.open(f"NETCDF:{path}:n_clear") as opened:  # GDAL sees the georeferencing
        assert opened.crs == CRS_UTM and opened.transform == TRANSFORM
    assert sorted(p.name for p in path.parent.iterdir()) == ["cube.nc"]

    def explode(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("xarray.Dataset.to_netcdf", explode)
    failed = tmp_path / "failed" / "cube.nc"
    with pytest.raises(OSError, match="disk full"):
        write_cube(cube, failed)
    assert list(failed.parent.iterdir()) == []


def test_month_starts_cross_years() -> None:
    months = month_starts(PeriodSpec(start=dt.date(2020, 11, 20), end=dt.date(2021, 2, 3)))
    assert months == [dt.date(2020, 11, 1), dt.date(2020, 12, 1), dt.date(2021, 1, 1), dt.date(2021, 2, 1)]


def test_median_of_clear_equals_nanmedian() -> None:
    from suelo.composite import median_of_clear

    rng = np.random.default_rng(0)
    stack = rng.uniform(0, 1, (5, 3, 7, 9)).astype(np.float32)
    clear = rng.random((5, 7, 9)) < 0.6
    clear[:, 0, 0] = False  # a pixel without any clear observation
    stack[:, :, :, :][~np.broadcast_to(clear[:, None], stack.shape)] = np.nan
    count = clear.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        expected = np.nanmedian(stack, axis=0)
    np.testing.assert_allclose(median_of_clear(stack, count), expected, rtol=1e-6, equal_nan=True)
    assert (count == 0).any()  # some pixels have no clear observation: NaN, as nanmedian gives
