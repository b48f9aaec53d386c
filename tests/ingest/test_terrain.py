"""DEM reader: a planar ramp in UTM, the same terrain as geographic and Web Mercator DEMs, mosaics, STAC, errors."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine

from suelo.errors import InputError
from suelo.grid import Grid
from suelo.ingest.terrain import DemSource, discover_dem, horn_slope, terrain_on_grid
from suelo.settings import DemInput
from tests.fixtures import write_raster

UTM31 = "EPSG:32631"
X0, Y0 = 600000.0, 5700000.0  # top-left of the UTM DEM: about 4.4°E 51.4°N, 100 km east of zone 31's meridian
DEM_T = Affine(30.0, 0.0, X0, 0.0, -30.0, Y0)  # 100 x 100 pixels of 30 m
# 2 km x 2 km of 10 m pixels well inside the DEM
GRID = Grid(rasterio.crs.CRS.from_user_input(UTM31), Affine(10.0, 0.0, X0 + 450, 0.0, -10.0, Y0 - 450), 200, 200)


def ramp(x: np.ndarray) -> np.ndarray:
    """The terrain: rises 1 m per UTM map metre eastward (a 45 degree ramp in map units)."""
    return x - X0


def expected_slope() -> float:
    """A ramp of 1 m per UTM map metre rises 1 m per 1/k ground metres: atan(k), k the point scale factor there."""
    lon, lat = pyproj.Transformer.from_crs(UTM31, "EPSG:4326", always_xy=True).transform(X0 + 1450, Y0 - 1450)
    k = pyproj.Proj(UTM31).get_factors(lon, lat).parallel_scale
    return math.degrees(math.atan(k))


def grid_x() -> np.ndarray:
    return np.broadcast_to(GRID.transform.c + (np.arange(GRID.width) + 0.5) * 10.0, GRID.shape)


def utm_dem(path: Path, cols: slice = slice(0, 100), **options: object) -> Path:
    x = X0 + (np.arange(100)[cols] + 0.5) * 30.0
    values = np.broadcast_to(ramp(x), (100, len(x))).astype(np.float32)
    transform = DEM_T * Affine.translation(cols.start, 0)
    return write_raster(path, values, crs=UTM31, transform=transform, nodata=-9999.0, **options)  # type: ignore[arg-type]


def warped_dem(path: Path, crs: str, transform: Affine, shape: tuple[int, int]) -> Path:
    """The same terrain (UTM easting - X0) sampled on another CRS's lattice."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    x, y = transform.c + cols * transform.a, transform.f + rows * transform.e
    easting, _ = pyproj.Transformer.from_crs(crs, UTM31, always_xy=True).transform(x, y)
    return write_raster(path, ramp(np.asarray(easting)).astype(np.float64), crs=crs, transform=transform, nodata=None)


def test_utm_ramp_elevation_exact_and_slope_45(tmp_path: Path) -> None:
    dem = discover_dem(DemInput(paths=(utm_dem(tmp_path / "dem.tif"),)))
    assert dem.files == (str((tmp_path / "dem.tif").resolve()),)
    assert dem.bounds == (X0, Y0 - 3000, X0 + 3000, Y0) and dem.nodata == -9999.0
    out = terrain_on_grid(dem, GRID)
    assert out.shape == (2, 200, 200) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], ramp(grid_x()), atol=1e-3)  # bilinear of a plane is the plane
    assert abs(out[1] - 45).max() < 0.02  # UTM's scale factor is at most 1.0004 here
    np.testing.assert_allclose(out[1], expected_slope(), atol=1e-3)


def test_geographic_dem_gives_the_same_slope(tmp_path: Path) -> None:
    """Copernicus-DEM style: EPSG:4326 at 1 arc second. Degrees taken for metres would read ~90 degrees."""
    step = 1 / 3600
    transform = Affine(step, 0.0, 4.40, 0.0, -step, 51.45)
    path = warped_dem(tmp_path / "cop.tif", "EPSG:4326", transform, (400, 300))
    dem = discover_dem(DemInput(paths=(path,)))
    out = terrain_on_grid(dem, GRID)
    np.testing.assert_allclose(out[0], ramp(grid_x()), atol=0.01)
    np.testing.assert_allclose(out[1], expected_slope(), atol=0.01)


def test_web_mercator_dem_is_corrected_for_its_scale(tmp_path: Path) -> None:
    """At 51°N a Web Mercator metre is 0.63 ground metres: slope from map units alone would read 32 degrees."""
    left, top = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(4.40, 51.45)
    transform = Affine(30.0, 0.0, math.floor(left), 0.0, -30.0, math.ceil(top))
    path = warped_dem(tmp_path / "merc.tif", "EPSG:3857", transform, (300, 400))
    out = terrain_on_grid(discover_dem(DemInput(paths=(path,))), GRID)
    np.testing.assert_allclose(out[1], expected_slope(), atol=0.01)
    np.testing.assert_allclose(out[0], ramp(grid_x()), atol=0.05)


def test_two_tiles_mosaic_without_seam(tmp_path: Path) -> None:
    west = utm_dem(tmp_path / "tiles" / "w.tif", slice(0, 50))
    utm_dem(tmp_path / "tiles" / "e.tif", slice(50, 100))
    whole = terrain_on_grid(discover_dem(DemInput(paths=(utm_dem(tmp_path / "dem.tif"),))), GRID)
    dem = discover_dem(DemInput(paths=(tmp_path / "tiles",)))
    assert len(dem.files) == 2 and dem.bounds == (X0, Y0 - 3000, X0 + 3000, Y0)
    assert discover_dem(DemInput(paths=(west,))).bounds == (X0, Y0 - 3000, X0 + 1500, Y0)
    np.testing.assert_array_equal(terrain_on_grid(dem, GRID), whole)  # the grid straddles the seam at X0 + 1500


def test_tiles_in_different_crs_are_refused(tmp_path: Path) -> None:
    a = utm_dem(tmp_path / "a.tif")
    b = write_raster(tmp_path / "b.tif", np.zeros((10, 10), np.float32), crs="EPSG:32632")
    with pytest.raises(InputError, match="EPSG:32632") as info:
        discover_dem(DemInput(paths=(a, b)))
    assert info.value.path == str(b.resolve())


def test_grid_outside_the_dem_is_an_error_naming_it(tmp_path: Path) -> None:
    dem = discover_dem(DemInput(paths=(utm_dem(tmp_path / "dem.tif"),)))
    outside = Grid(GRID.crs, Affine(10.0, 0.0, X0 + 2400, 0.0, -10.0, Y0 - 450), 200, 200)  # 1400 of 2000 m out
    with pytest.raises(InputError, match=r"does not cover the grid: 70\.0 %") as info:
        terrain_on_grid(dem, outside)
    assert "dem.tif" in str(info.value)
    # half a column of 200 out (0.5 %): allowed, NaN there
    edge = Grid(GRID.crs, Affine(10.0, 0.0, X0 + 1010, 0.0, -10.0, Y0 - 450), 200, 200)
    out = terrain_on_grid(dem, edge)
    assert np.isnan(out[:, :, -1]).all() and np.isfinite(out[:, :, :-1]).all()
    np.testing.assert_allclose(out[1, :, :-1], expected_slope(), atol=1e-3)  # the DEM's edge keeps its slope


def test_nodata_is_nan_not_an_error(tmp_path: Path) -> None:
    path = utm_dem(tmp_path / "dem.tif")
    with rasterio.open(path, "r+") as dst:
        values = dst.read(1)
        values[40, 40] = -9999.0  # the 30 m pixel centred at X0 + 1215, Y0 - 1215
        dst.write(values, 1)
    out = terrain_on_grid(discover_dem(DemInput(paths=(path,))), GRID)
    row = col = (1215 - 450) // 10  # the grid pixel centred there
    assert np.isnan(out[:, row, col]).all()
    assert np.isfinite(out[:, :50, :50]).all() and np.isfinite(out[:, 150:, 150:]).all()


def test_feet_are_converted_to_metres(tmp_path: Path) -> None:
    x = X0 + (np.arange(100) + 0.5) * 30.0
    feet = np.broadcast_to(ramp(x) / 0.3048, (100, 100)).astype(np.float32)
    path = write_raster(tmp_path / "ft.tif", feet, crs=UTM31, transform=DEM_T)
    with rasterio.open(path, "r+") as dst:
        dst.units = ("ft",)
    dem = discover_dem(DemInput(paths=(path,)))
    assert dem.z_scale == 0.3048
    out = terrain_on_grid(dem, GRID)
    np.testing.assert_allclose(out[0], ramp(grid_x()), atol=2e-3)
    np.testing.assert_allclose(out[1], expected_slope(), atol=1e-3)
    with rasterio.open(path, "r+") as dst:
        dst.units = ("cm",)
    with pytest.raises(InputError, match="units 'cm'"):
        discover_dem(DemInput(paths=(path,)))


def stac_item(item_id: str, assets: dict[str, object]) -> dict[str, object]:
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "properties": {"datetime": None},
            "geometry": None, "assets": assets}  # fmt: skip


def test_stac_items_resolve_to_their_dem_assets(tmp_path: Path) -> None:
    utm_dem(tmp_path / "cop" / "w.tif", slice(0, 50))
    utm_dem(tmp_path / "cop" / "e.tif", slice(50, 100))
    cog = "image/tiff; application=geotiff; profile=cloud-optimized"
    collection = {"type": "FeatureCollection", "features": [
        stac_item("w", {"data": {"href": "cop/w.tif", "type": cog}, "rendered_preview": {"href": "x.png"}}),
        stac_item("e", {"thumb": {"href": "x.png", "roles": ["thumbnail"], "type": "image/png"},
                        "tile": {"href": "./cop/e.tif", "roles": ["data"], "type": cog}}),
    ]}  # fmt: skip
    document = tmp_path / "items.json"
    document.write_text(json.dumps(collection))
    dem = discover_dem(DemInput(paths=(document,)))
    assert dem.files == tuple(str((tmp_path / "cop" / n).resolve()) for n in ("w.tif", "e.tif"))
    whole = terrain_on_grid(discover_dem(DemInput(paths=(utm_dem(tmp_path / "dem.tif"),))), GRID)
    np.testing.assert_array_equal(terrain_on_grid(dem, GRID), whole)

    document.write_text(json.dumps(stac_item("bare", {"thumb": {"href": "x.png", "type": "image/png"}})))
    with pytest.raises(InputError, match="no DEM asset") as info:
        discover_dem(DemInput(paths=(document,)))
    assert "items.json item bare" in str(info.value)


def test_missing_file_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        discover_dem(DemInput(paths=(tmp_path / "nope.tif",)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no DEM"):
        discover_dem(DemInput(paths=(tmp_path / "empty",)))


def test_source_pickles(tmp_path: Path) -> None:
    dem = discover_dem(DemInput(paths=(utm_dem(tmp_path / "dem.tif"),)))
    again = pickle.loads(pickle.dumps(dem))
    assert isinstance(again, DemSource) and again == dem


def test_horn_slope_of_a_plane_at_edges_and_voids() -> None:
    z = np.add.outer(np.arange(6.0) * 3, np.arange(7.0) * 4)  # dz/dy 3 per row (southward), dz/dx 4 per column
    z[2, 3] = np.nan
    slope = horn_slope(z, np.ones((1, 1)), np.ones((1, 1)))
    expected = math.degrees(math.atan(5.0))
    assert np.isnan(slope[2, 3])
    np.testing.assert_allclose(np.delete(slope.ravel(), 2 * 7 + 3), expected)
