"""The default grid: the UTM zone of the data whatever the inputs' CRS, and no absurd grids."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from rasterio.crs import CRS

from suelo.errors import ConfigError
from suelo.ingest import default_crs, job_grid
from suelo.ingest.scene import BandRef, Radiometry, Scene
from suelo.settings import JobSpec, validate_job

WGS84 = CRS.from_epsg(4326)
RADIOMETRY = Radiometry(10000.0, {}, None, "test")


def scene(crs: CRS, bounds: tuple[float, float, float, float]) -> Scene:
    return Scene(
        scene_id="s", acquired=dt.datetime(2021, 6, 1, tzinfo=dt.timezone.utc), level="L2A", source="s.tif",
        bands={"B04": BandRef("s.tif")}, radiometry=RADIOMETRY, crs=crs, bounds=bounds,
    )  # fmt: skip


def job(**fields: Any) -> JobSpec:
    return validate_job(
        {"inputs": [{"kind": "stac", "paths": ["items.json"]}], "period": {"start": "2021-01-01", "end": "2021-12-31"}}
        | fields
    )


def test_geographic_input_gets_the_utm_zone_of_the_data() -> None:
    # 0.01 x 0.01 degrees at 50.63 N, 5.32 E (Belgium, UTM 31N): about 708 m x 1113 m
    grid = job_grid(job(), [scene(WGS84, (5.32, 50.63, 5.33, 50.64))])
    assert grid.crs == CRS.from_epsg(32631)
    assert grid.resolution == (10.0, 10.0)
    assert 73 <= grid.width <= 76 and 112 <= grid.height <= 116  # the box, turned a little in UTM


def test_southern_hemisphere_and_utm_inputs() -> None:
    assert default_crs(WGS84, (-72.0, -45.1, -71.9, -45.0)) == CRS.from_epsg(32719)  # southern Chile
    utm32 = CRS.from_epsg(32632)
    assert default_crs(utm32, (300000.0, 5000000.0, 310000.0, 5010000.0)) == utm32  # a tile keeps its lattice
    laea = CRS.from_epsg(3035)  # a national grid in metres becomes the UTM zone of the data too
    assert default_crs(laea, (3900000.0, 3100000.0, 3910000.0, 3110000.0)).to_epsg() in range(32601, 32661)


def test_degrees_as_metres_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"grid.resolution 10 is in degrees in grid.crs EPSG:4326"):
        job_grid(job(grid={"crs": "EPSG:4326"}), [scene(WGS84, (5.32, 50.63, 5.33, 50.64))])
    # a resolution in degrees is fine
    grid = job_grid(job(grid={"crs": "EPSG:4326", "resolution": 0.001}), [scene(WGS84, (5.32, 50.63, 5.33, 50.64))])
    assert (grid.width, grid.height) == (10, 10)


def test_grid_of_fewer_than_four_pixels_is_refused() -> None:
    tiny = scene(CRS.from_epsg(32631), (600000.0, 5600000.0, 600015.0, 5600010.0))  # 2 x 1 px at 10 m
    with pytest.raises(ConfigError, match=r"grid of 2 x 1 px at 10 m in EPSG:32631 from the footprint of s.tif"):
        job_grid(job(), [tiny])
    with pytest.raises(ConfigError, match="fewer than 4 pixels"):
        job_grid(job(aoi={"bbox": [5.32, 50.63, 5.32001, 50.63001]}), [])


def test_an_epsg4326_geotiff_job_without_grid_crs_maps_in_utm(tmp_path: Path) -> None:
    """The user's case: GeoTIFFs in EPSG:4326, no grid.crs, no AOI. It used to be a 1 x 1 grid of 10-degree pixels
    with an all-NaN cube; now it is the data's UTM zone at 10 m and the pixels are read."""
    import numpy as np
    import rasterio
    from affine import Affine

    from suelo.ingest import discover_scenes, read_scene

    path = tmp_path / "S2_20210612.tif"
    values = np.stack([np.full((20, 20), 2200, np.uint16), np.full((20, 20), 3300, np.uint16)])
    with rasterio.open(
        path, "w", driver="GTiff", width=20, height=20, count=2, dtype="uint16", crs="EPSG:4326", nodata=0,
        transform=Affine(0.0005, 0.0, 5.32, 0.0, -0.0005, 50.64),
    ) as dst:  # fmt: skip
        dst.write(values)
        dst.set_band_description(1, "B4")
        dst.set_band_description(2, "B8")
    spec = job(inputs=[{"kind": "geotiff", "paths": [str(path)], "product_level": "L2A", "add_offset": -1000}],
               ingest={"bands": ["B04", "B08"], "masking": {"require_scl": False}})  # fmt: skip
    scenes = discover_scenes(spec)
    grid = job_grid(spec, scenes)
    assert grid.crs == CRS.from_epsg(32631) and grid.resolution == (10.0, 10.0)
    assert 70 <= grid.width <= 76 and 110 <= grid.height <= 116  # 0.01 degrees at 50.6 N
    out = read_scene(scenes[0], grid, ("B04", "B08"), (), require_scl=False)
    inside = np.isfinite(out[0])
    assert inside.mean() > 0.9  # the corners of the turned box lie outside the file
    np.testing.assert_allclose(out[0][inside], 0.12, rtol=1e-6)
    np.testing.assert_allclose(out[1][inside], 0.23, rtol=1e-6)
