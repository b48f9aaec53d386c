"""Bad radar, terrain and weather inputs in a whole run: one line naming the file, exit 2, nothing at a final path.

The demo job (the real Belgian sample with its Sentinel-1, DEM and AgERA5) with one of its other inputs broken."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
import yaml
from affine import Affine

from tests.fixtures import SAMPLE, demo_spec, one_line_error


def job_with(tmp_path: Path, kind: str, **entry: object) -> Path:
    """The demo job, land cover only, with the input of ``kind`` replaced by ``entry``."""
    spec = demo_spec()
    spec["inputs"] = [e if e["kind"] != kind else {"kind": kind, **entry} for e in spec["inputs"]]
    spec["output"]["dir"] = str(tmp_path / "out")
    spec["products"]["urban_atlas"]["enabled"] = False
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def nothing_written(out: Path) -> None:
    finals = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".tif", ".nc", ".gpkg", ".html")]
    assert finals == [], finals


def test_radar_declared_linear_but_in_db_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "s1"
    for month in sorted((SAMPLE / "s1").glob("20*")):
        target = folder / f"S1_sigma0_{month.name.replace('-', '')}01"
        target.mkdir(parents=True)
        for pol in ("VV", "VH"):  # GeoTIFFs without a unit tag: the spec's unit is the only statement
            with rasterio.open(month / f"{pol}.tif") as src:
                profile, values = src.profile, src.read(1)
            profile.update(driver="GTiff")
            with rasterio.open(target.parent / f"{target.name}_{pol}.tif", "w", **profile) as dst:
                dst.write(values, 1)
        target.rmdir()
    line = one_line_error("run", job_with(tmp_path, "sentinel1", paths=[str(folder)], unit="linear"))
    assert "S1_sigma0_" in line and "unit" in line, line
    nothing_written(tmp_path / "out")


def test_a_dem_that_does_not_cover_the_region_is_one_line(tmp_path: Path) -> None:
    with rasterio.open(SAMPLE / "dem" / "elevation.tif") as src:
        profile, values = src.profile, src.read(1)
    profile.update(driver="GTiff", transform=profile["transform"] * Affine.translation(60, 0))  # 600 m east
    shifted = tmp_path / "dem_east.tif"
    with rasterio.open(shifted, "w", **profile) as dst:
        dst.write(values, 1)
    line = one_line_error("run", job_with(tmp_path, "dem", paths=[str(shifted)]))
    assert "dem_east.tif" in line and "does not cover the grid" in line, line
    nothing_written(tmp_path / "out")


def test_weather_in_another_calendar_is_one_line(tmp_path: Path) -> None:
    source = SAMPLE / "weather" / "agera5_monthly.nc"
    with xr.open_dataset(source, decode_times=False) as ds:
        climate = ds.load()
    climate["time"].attrs["calendar"] = "noleap"  # climate-model output: not the real calendar
    path = tmp_path / "weather" / "climate.nc"
    path.parent.mkdir()
    climate.to_netcdf(path)
    line = one_line_error("run", job_with(tmp_path, "weather", paths=[str(path.parent)]))
    assert "climate.nc" in line and "noleap" in line, line
    nothing_written(tmp_path / "out")


def test_dem_tiles_in_two_crs_are_one_line(tmp_path: Path) -> None:
    tiles = tmp_path / "dem"
    tiles.mkdir()
    shutil.copy(SAMPLE / "dem" / "elevation.tif", tiles / "a.tif")
    with rasterio.open(tiles / "b.tif", "w", driver="GTiff", dtype="float32", count=1, width=4, height=4,
                       crs="EPSG:4326", transform=Affine(0.001, 0, 5.3, 0, -0.001, 50.64)) as dst:  # fmt: skip
        dst.write(np.full((1, 4, 4), 150, np.float32))
    line = one_line_error("run", job_with(tmp_path, "dem", paths=[str(tiles)]))
    assert "b.tif" in line or "a.tif" in line, line
    nothing_written(tmp_path / "out")
