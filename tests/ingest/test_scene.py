"""The direct read path for grid-aligned sources gives exactly what GDAL's warper gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from suelo.grid import Grid
from suelo.ingest import scene
from suelo.ingest.scene import BandRef, aligned_factor, read_on_grid
from tests.fixtures import write_raster

UTM31 = CRS.from_epsg(32631)


def write_band(path: Path, factor: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 5000, (30, 30)).astype(np.uint16)
    data[rng.random(data.shape) < 0.1] = 0  # scattered no data
    write_raster(path, data, crs=UTM31, transform=Affine(10 * factor, 0, 600000, 0, -10 * factor, 5700000))
    return data


@pytest.mark.parametrize("factor", [1, 2, 6])
@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
@pytest.mark.parametrize("offset", [(0, 0), (3, 5), (-4, -7), (-1, 170)])  # inside, odd offset, off both edges
def test_direct_path_equals_gdal_warp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factor: int, resampling: str, offset: tuple[int, int]
) -> None:
    path = tmp_path / "band.tif"
    write_band(path, factor, seed=factor)
    row, col = offset
    grid = Grid(UTM31, Affine(10, 0, 600000 + 10 * col, 0, -10, 5700000 - 10 * row), 21, 23)
    assert aligned_factor(UTM31, Affine(10 * factor, 0, 600000, 0, -10 * factor, 5700000), grid) == factor
    direct = read_on_grid(BandRef(str(path)), grid, resampling, nodata=0)
    monkeypatch.setattr(scene, "aligned_factor", lambda *args: None)
    warped = read_on_grid(BandRef(str(path)), grid, resampling, nodata=0)
    np.testing.assert_array_equal(np.isnan(direct), np.isnan(warped))
    np.testing.assert_array_equal(direct[np.isfinite(direct)], warped[np.isfinite(warped)])


def test_unaligned_or_reprojected_sources_use_the_warper() -> None:
    grid = Grid(UTM31, Affine(10, 0, 600000, 0, -10, 5700000), 4, 4)
    assert aligned_factor(UTM31, Affine(20, 0, 600005, 0, -20, 5700000), grid) is None  # half-pixel shift
    assert aligned_factor(UTM31, Affine(15, 0, 600000, 0, -15, 5700000), grid) is None  # 1.5 grid pixels
    assert aligned_factor(CRS.from_epsg(32632), Affine(20, 0, 600000, 0, -20, 5700000), grid) is None
