"""Sentinel-1, terrain and weather in the cube (suelo.ingest.auxiliary): the readers' planes on every block, the
same values in the cube, and the encoder's inputs from it. On the embedded real sample (data/sample/belgium)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from suelo.composite import build_cube, month_starts
from suelo.grid import Grid
from suelo.ingest.auxiliary import Auxiliary, auxiliary_planes, discover_auxiliary
from suelo.models.artifact import cube_inputs
from suelo.models.presto import CHANNELS
from suelo.models.presto_inputs import S1_NORM, cube_auxiliary, cube_to_pixels, presto_inputs
from suelo.settings import JobSpec
from tests.fixtures import SAMPLE, SAMPLE_ITEMS

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]


def sample_job(*kinds: str) -> JobSpec:
    extra = {
        "sentinel1": {"kind": "sentinel1", "paths": [str(SAMPLE / "s1" / "items.json")]},
        "dem": {"kind": "dem", "paths": [str(SAMPLE / "dem")]},
        "weather": {"kind": "weather", "paths": [str(SAMPLE / "weather")]},
    }
    return JobSpec.model_validate({
        "inputs": [{"kind": "stac", "paths": [str(SAMPLE_ITEMS)]}, *(extra[k] for k in kinds)],
        "period": {"start": "2020-11-01", "end": "2021-10-31"},
        "ingest": {"bands": BANDS, "masking": {"require_scl": False}},
    })  # fmt: skip


@pytest.fixture(scope="module")
def auxiliary() -> Auxiliary:
    job = sample_job("sentinel1", "dem", "weather")
    return discover_auxiliary(job, month_starts(job.period))


def test_the_inputs_a_job_declares_are_the_cubes(auxiliary: Auxiliary) -> None:
    assert auxiliary.inputs == ("s2", "s1", "terrain", "weather")
    assert len(auxiliary.radar) == 12  # radar has every month, the optical sample 10 (two all-cloud months)
    job = sample_job("dem")
    assert discover_auxiliary(job, month_starts(job.period)).inputs == ("s2", "terrain")
    assert discover_auxiliary(sample_job(), month_starts(job.period)) == Auxiliary()


def test_the_cube_holds_each_blocks_planes_of_the_readers(auxiliary: Auxiliary) -> None:
    from affine import Affine
    from rasterio.crs import CRS

    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 664200, 0, -10, 5611920), 24, 30)
    job = sample_job("sentinel1", "dem", "weather")
    months = month_starts(job.period)
    cube = build_cube((), grid, job.period, job.ingest, block_size=16, auxiliary=auxiliary).compute()
    assert cube_inputs(cube) == ("s2", "s1", "terrain", "weather")
    whole = auxiliary_planes(auxiliary, grid, months)  # one read of the whole grid: blocks must agree with it
    assert np.array_equal(cube["s1"].values, whole["s1"], equal_nan=True)
    assert np.array_equal(cube["terrain"].values, whole["terrain"], equal_nan=True)
    assert np.array_equal(cube["weather"].values, whole["weather"], equal_nan=True)
    assert list(cube["polarization"].values) == ["VV", "VH"]
    assert np.isfinite(cube["s1"].values).all()  # the two all-cloud months too: radar sees through clouds
    # physical ranges of the sample: backscatter in dB, a Belgian plateau, temperatures in K, m of rain per day
    assert -25 < np.median(cube["s1"].sel(polarization="VH")) < -10 < np.median(cube["s1"].sel(polarization="VV"))
    assert 140 <= cube["terrain"].sel(terrain_band="elevation").min() <= cube["terrain"].max() <= 175
    assert 270 < cube["weather"].sel(weather_band="temperature").min() < 295
    assert 0 < cube["weather"].sel(weather_band="precipitation").max() < 0.01


def test_the_encoder_reads_the_inputs_of_the_model_from_the_cube(auxiliary: Auxiliary) -> None:
    from affine import Affine
    from rasterio.crs import CRS

    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 664200, 0, -10, 5611920), 4, 5)
    job = sample_job("sentinel1", "dem", "weather")
    cube = build_cube((), grid, job.period, job.ingest, auxiliary=auxiliary).compute()
    reflectance, _latlons, _start = cube_to_pixels(cube)
    extra = cube_auxiliary(cube, ("s2", "s1", "terrain"))
    assert set(extra) == {"s1", "srtm"}  # weather not asked for: the encoder sees it masked
    assert extra["s1"].shape == (20, 12, 2) and extra["srtm"].shape == (20, 2)
    row, col = 2, 3  # pixels in row-major (y, x) order, as cube_to_pixels
    assert np.array_equal(extra["s1"][row * 5 + col], cube["s1"].values[:, :, row, col])
    x, mask, _dw = presto_inputs(reflectance, BANDS, **extra)
    vv = CHANNELS.index("VV")
    add, divide = S1_NORM["VV"]
    assert not mask[..., vv].any()
    assert np.allclose(x[row * 5 + col, :, vv], (cube["s1"].values[:, 0, row, col] + add) / divide)
    assert mask[..., CHANNELS.index("temperature")].all()
    assert dt.date(2020, 12, 1) in month_starts(job.period)


def test_the_model_contract_reads_the_variables_the_ingest_writes() -> None:
    from suelo.ingest.auxiliary import CUBE_VARIABLES as WRITTEN
    from suelo.models.artifact import CUBE_VARIABLES as READ
    from suelo.models.artifact import INPUT_KINDS

    assert {name: (variable,) for name, (variable, *_rest) in WRITTEN.items()} == READ
    assert set(INPUT_KINDS) == set(WRITTEN)


def test_labels_on_a_cube_with_radar_make_samples_with_it(auxiliary: Auxiliary) -> None:
    """Polygon and raster labels take their samples from the cube: its radar, terrain and weather come along."""
    from affine import Affine
    from rasterio.crs import CRS

    from suelo.samples import samples_at_pixels

    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 664200, 0, -10, 5611920), 6, 6)
    job = sample_job("sentinel1", "dem", "weather")
    rows, cols = np.array([0, 2, 5]), np.array([1, 3, 4])
    from suelo.ingest import discover_scenes

    full = build_cube(discover_scenes(job), grid, job.period, job.ingest, auxiliary=auxiliary).compute()
    samples = samples_at_pixels(full, rows, cols, np.array([1, 4, 5]), np.array(["a", "b", "c"]))
    assert samples.inputs == ("s2", "s1", "terrain", "weather")
    assert np.array_equal(samples.s1[1], full["s1"].values[:, :, 2, 3])
    assert np.array_equal(samples.srtm[2], full["terrain"].values[:, 5, 4])
    assert np.array_equal(samples.era5[0], full["weather"].values[:, :, 0, 1])


@pytest.mark.parametrize("packed", [True, False])
def test_cube_files_and_composite_caches_keep_the_other_inputs_exactly(
    auxiliary: Auxiliary, tmp_path: Path, packed: bool
) -> None:
    """cube.nc (reflectance packed) and the composite cache (lossless) both keep radar, terrain and weather as
    float32, value for value."""
    from affine import Affine
    from rasterio.crs import CRS

    from suelo.composite import open_cube, write_cube

    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 664200, 0, -10, 5611920), 5, 7)
    job = sample_job("sentinel1", "dem", "weather")
    cube = build_cube((), grid, job.period, job.ingest, auxiliary=auxiliary).compute()
    write_cube(cube, tmp_path / "cube.nc", packed=packed)
    again = open_cube(tmp_path / "cube.nc").load()
    for name in ("s1", "terrain", "weather"):
        assert again[name].dtype == np.float32 and again[name].dims == cube[name].dims
        assert np.array_equal(again[name].values, cube[name].values, equal_nan=True), name
    assert cube_inputs(again) == ("s2", "s1", "terrain", "weather")
