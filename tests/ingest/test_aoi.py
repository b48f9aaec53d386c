from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from rasterio.crs import CRS
from shapely.geometry import box

from suelo.errors import InputError
from suelo.grid import Grid
from suelo.ingest.aoi import load_aoi
from suelo.settings import AoiSpec


def test_geojson_and_geopackage_in_any_crs_give_the_same_grid(tmp_path: Path) -> None:
    lonlat = box(5.32, 50.63, 5.33, 50.635)
    geojson = tmp_path / "aoi.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": lonlat.__geo_interface__}]}))  # fmt: skip
    gpkg = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[lonlat], crs="EPSG:4326").to_crs("EPSG:3035").to_file(gpkg)

    geometry, crs = load_aoi(AoiSpec(file=geojson))
    from_geojson = Grid.from_geometry(geometry, crs, "EPSG:32631", 10)
    geometry, crs = load_aoi(AoiSpec(file=gpkg))
    assert crs == CRS.from_epsg(3035)
    from_gpkg = Grid.from_geometry(geometry, crs, "EPSG:32631", 10)
    # EPSG:3035 -> UTM of a reprojected square differs by sub-metre densification effects only
    assert abs(from_gpkg.bounds[0] - from_geojson.bounds[0]) <= 10 and abs(from_gpkg.width - from_geojson.width) <= 1
    assert from_geojson.bounds[0] % 10 == 0 and from_geojson.crs == CRS.from_epsg(32631)


def test_bbox_aoi() -> None:
    geometry, crs = load_aoi(AoiSpec(bbox=(664000, 5611120, 665000, 5612120), crs="EPSG:32631"))
    grid = Grid.from_geometry(geometry, crs, None, 10)
    assert grid.shape == (100, 100) and grid.bounds == (664000, 5611120, 665000, 5612120)


def test_unusable_aoi_files_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(InputError, match="no geometries") as caught:
        load_aoi(AoiSpec(file=empty))
    assert str(empty) in str(caught.value)
    garbage = tmp_path / "garbage.gpkg"
    garbage.write_bytes(b"not a geopackage")
    with pytest.raises(InputError, match="cannot read AOI"):
        load_aoi(AoiSpec(file=garbage))
