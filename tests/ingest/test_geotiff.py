"""GeoTIFF reader: two UTM zones onto one grid, dates from names, radiometry from the spec, broken files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from suelo.errors import ConfigError, InputError
from suelo.grid import Grid
from suelo.ingest.geotiff import discover
from suelo.ingest.scene import read_scene
from suelo.settings import GeoTiffInput, IngestSpec
from tests.fixtures import write_raster

UTM31, UTM32 = CRS.from_epsg(32631), CRS.from_epsg(32632)
# 60 x 40 px straddling 6°E (the zone 31/32 boundary) at about 50°N, in zone 31
GRID = Grid(UTM31, Affine(10.0, 0.0, 714800.0, 0.0, -10.0, 5540400.0), 40, 60)
INGEST = IngestSpec()


def spec(*paths: Path, **options: object) -> GeoTiffInput:
    # The test files' names do not say their level, which must then be stated (no silent L2A).
    fields: dict[str, object] = {"bands": ("B04", "B08"), "product_level": "L2A", "processing_baseline": "04.00",
                                 **options}  # fmt: skip
    return GeoTiffInput(paths=paths, **fields)


@pytest.fixture
def two_zones(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """West half of GRID as a zone-31 file on its pixels; the east half as a zone-32 file of constant DN."""
    west = np.random.default_rng(0).integers(1001, 9000, (2, 40, 30), dtype=np.uint16)
    a = write_raster(tmp_path / "S2_20230612_T31.tif", west, crs=UTM31, transform=GRID.transform)
    left, bottom, right, top = transform_bounds(UTM31, UTM32, 715100.0, 5540000.0, 715400.0, 5540400.0)
    left, top = np.floor(left / 10) * 10, np.ceil(top / 10) * 10
    width, height = int(np.ceil((right - left) / 10)), int(np.ceil((top - bottom) / 10))
    east = np.full((2, height, width), 3000, dtype=np.uint16)
    b = write_raster(
        tmp_path / "S2_2023-06-14_T32.tif", east, crs=UTM32, transform=Affine(10.0, 0.0, left, 0.0, -10.0, top)
    )
    return a, b, west


def test_two_utm_zones_onto_one_grid(two_zones: tuple[Path, Path, np.ndarray]) -> None:
    a, b, west = two_zones
    scene_a, scene_b = discover(spec(a, b), INGEST)
    assert scene_a.crs == UTM31 and scene_b.crs == UTM32
    assert scene_a.acquired == dt.datetime(2023, 6, 12, tzinfo=dt.timezone.utc)
    assert scene_b.acquired == dt.datetime(2023, 6, 14, tzinfo=dt.timezone.utc)
    assert GRID.intersects(scene_b.bounds, scene_b.crs)

    out_a = read_scene(scene_a, GRID, ("B04", "B08"), (), resampling="nearest", require_scl=False)
    out_b = read_scene(scene_b, GRID, ("B04", "B08"), (), resampling="bilinear", require_scl=False)

    # the aligned file: exact (DN - 1000) / 10000 where it covers, nothing elsewhere
    expected = (west.astype(np.float32) - np.float32(1000)) / np.float32(10000)
    np.testing.assert_array_equal(out_a[:, :, :30], expected)
    assert np.isnan(out_a[:, :, 30:]).all()
    # the reprojected file: covers the east half (its bbox encloses it) and not the far west
    assert np.isfinite(out_b[:, :, 30:]).all()
    assert np.isnan(out_b[:, :, :20]).all()
    np.testing.assert_allclose(out_b[np.isfinite(out_b)], 0.2, rtol=0, atol=1e-6)
    # together they cover the grid
    assert (np.isfinite(out_a) | np.isfinite(out_b)).all()


def test_scl_band_and_folder_input(tmp_path: Path) -> None:
    values = np.stack([
        np.full((40, 60), 2500, dtype=np.uint16),
        np.full((40, 60), 4),  # SCL vegetation
    ]).astype(np.uint16)  # fmt: skip
    values[1, 0, 0] = 9  # cloud
    folder = tmp_path / "tiffs"
    folder.mkdir()
    write_raster(folder / "tile_20220101.tiff", values, crs=UTM31, transform=GRID.transform)
    (folder / "readme.txt").write_text("ignored")
    [scene] = discover(spec(folder, bands=("B04", "SCL")), INGEST)
    assert set(scene.bands) == {"B04"}
    assert scene.scl is not None and scene.scl.index == 2
    out = read_scene(scene, GRID, ("B04",), (9,), resampling="nearest")
    assert np.isnan(out[0, 0, 0])
    assert (out[0][np.isfinite(out[0])] == np.float32(1500) / np.float32(10000)).all()
    assert np.isfinite(out).sum() == 40 * 60 - 1


def test_radiometry_from_spec(two_zones: tuple[Path, Path, np.ndarray]) -> None:
    a, _, _ = two_zones
    [new] = discover(spec(a), INGEST)
    assert new.radiometry.offset("B04") == -1000.0 and new.radiometry.quantification == 10000.0
    assert "04.00" in new.radiometry.source
    [old] = discover(spec(a, processing_baseline="03.01"), INGEST)
    assert old.radiometry.offset("B04") == 0.0
    [explicit] = discover(spec(a, processing_baseline=None, add_offset=0, quantification=1.0), INGEST)
    assert explicit.radiometry.offset("B08") == 0.0 and explicit.radiometry.quantification == 1.0
    [l1c] = discover(spec(a, processing_baseline=None, product_level="L1C", nodata=None), INGEST)
    assert l1c.level == "L1C" and l1c.nodata_values == () and l1c.radiometry.offset("B04") == 0.0
    # no nodata in the spec: the file's own nodata (0) applies
    out = read_scene(l1c, GRID, ("B04",), (), resampling="nearest")
    assert np.isfinite(out[0, :, :30]).all() and np.isnan(out[0, :, 30:]).all()


def test_date_pattern(tmp_path: Path) -> None:
    values = np.ones((2, 4, 4), dtype=np.uint16)
    path = write_raster(tmp_path / "scene_12.06.2023.tif", values, crs=UTM31, transform=GRID.transform)
    pattern = r"(?P<day>\d{2})\.(?P<month>\d{2})\.(?P<year>\d{4})"
    [scene] = discover(spec(path, date_pattern=pattern), INGEST)
    assert scene.acquired == dt.datetime(2023, 6, 12, tzinfo=dt.timezone.utc)

    undated = write_raster(tmp_path / "scene.tif", values, crs=UTM31, transform=GRID.transform)
    with pytest.raises(InputError, match="no acquisition date") as info:
        discover(spec(undated), INGEST)
    assert "scene.tif" in str(info.value)
    bad_day = write_raster(tmp_path / "scene_20231332.tif", values, crs=UTM31, transform=GRID.transform)
    with pytest.raises(InputError, match="not a valid date"):
        discover(spec(bad_day), INGEST)
    with pytest.raises(ConfigError, match="named groups"):
        discover(spec(path, date_pattern=r"(\d{8})"), INGEST)


def test_band_count_mismatch(tmp_path: Path) -> None:
    path = write_raster(
        tmp_path / "x_20230101.tif", np.ones((3, 4, 4), dtype=np.uint16), crs=UTM31, transform=GRID.transform
    )
    with pytest.raises(InputError, match="has 3 band") as info:
        discover(spec(path), INGEST)
    assert str(path) in str(info.value)


def test_truncated_tiff_names_the_file(two_zones: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    a, _, _ = two_zones
    data = a.read_bytes()
    header_only = tmp_path / "cut_20230101.tif"
    header_only.write_bytes(data[:100])
    with pytest.raises(InputError, match="corrupt, truncated") as info:
        discover(spec(header_only), INGEST)
    assert str(header_only) in str(info.value)

    # cut inside the pixel data: the header still opens, so the error comes when pixels are read
    half = tmp_path / "half_20230101.tif"
    half.write_bytes(data[: len(data) // 2])
    [scene] = discover(spec(half), INGEST)
    with pytest.raises(InputError, match="corrupt, truncated") as info:
        read_scene(scene, GRID, ("B04", "B08"), (), resampling="nearest", require_scl=False)
    assert str(half) in str(info.value)


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        discover(spec(tmp_path / "nope.tif"), INGEST)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no \*\.tif"):
        discover(spec(empty), INGEST)
