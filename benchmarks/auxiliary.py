"""Ingest benchmark of the Sentinel-1 and DEM readers: px/s onto the job grid, against plain decoding.

    python -m benchmarks.auxiliary                 # 1024 x 1024 px 10 m grid, 12 months x 3 acquisitions
    python -m benchmarks.auxiliary --size 2048

Generated inputs in the formats users have: Sentinel-1 RTC backscatter as one float32 GeoTIFF per acquisition (VV,
VH; linear power; 10 m UTM, DEFLATE, tiled, a 200 m shifted lattice so every read is a true resampling) and a
Copernicus-DEM-like geographic DEM (EPSG:4326, 1 arc-second, float32). The baseline is the plain decode rate of the
same files (rasterio, whole-band reads, one thread) in the same process: the ratio says what reprojection, linear
averaging / slope cost on top of reading. Prints grid px/s (output pixels x months for radar, x 1 for terrain).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from suelo.grid import Grid
from suelo.ingest.sentinel1 import composite_sentinel1, discover_sentinel1
from suelo.ingest.terrain import discover_dem, terrain_on_grid
from suelo.settings import DemInput, Sentinel1Input

UTM = CRS.from_epsg(32631)
ORIGIN = (600000.0, 5700000.0)


def write_radar(folder: Path, size: int, months: int, per_month: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    transform = Affine(10, 0, ORIGIN[0] - 200, 0, -10, ORIGIN[1] + 200)  # a shifted lattice: a real resampling
    profile = {"driver": "GTiff", "dtype": "float32", "count": 2, "height": size + 40, "width": size + 40,
               "crs": UTM, "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "deflate", "nodata": 0.0}  # fmt: skip
    paths = []
    for month in range(months):
        for k in range(per_month):
            day = dt.date(2021, month + 1, 1 + 9 * k)
            path = folder / f"S1A_IW_RTC_{day:%Y%m%d}_ASC.tif"
            # gamma-distributed speckle around -8 dB (VV) / -15 dB (VH), as in linear power
            vv = rng.gamma(4.0, 10 ** (-0.8) / 4, (size + 40, size + 40)).astype(np.float32)
            vh = rng.gamma(4.0, 10 ** (-1.5) / 4, (size + 40, size + 40)).astype(np.float32)
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(np.stack([vv, vh]))
                dst.descriptions = ("VV", "VH")
                dst.update_tags(UNIT="linear")
            paths.append(path)
    return paths


def write_dem(folder: Path, grid: Grid) -> Path:
    from rasterio.warp import transform_bounds

    folder.mkdir(parents=True)
    left, bottom, right, top = transform_bounds(UTM, "EPSG:4326", *grid.bounds, densify_pts=21)
    step = 1 / 3600
    width, height = int((right - left) / step) + 8, int((top - bottom) / step) + 8
    transform = Affine(step, 0, left - 4 * step, 0, -step, top + 4 * step)
    yy, xx = np.mgrid[0:height, 0:width]
    elevation = (300 + 80 * np.sin(xx / 40) * np.cos(yy / 55)).astype(np.float32)
    path = folder / "Copernicus_DSM_COG_10_synthetic_DEM.tif"
    profile = {"driver": "GTiff", "dtype": "float32", "count": 1, "height": height, "width": width,
               "crs": "EPSG:4326", "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "deflate", "nodata": -32767.0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(elevation, 1)
    return path


def decode_rate(paths: list[Path]) -> float:
    """Baseline: Mpx/s of plain whole-file decoding (every band), one thread."""
    started, pixels = time.perf_counter(), 0
    for path in paths:
        with rasterio.open(path) as src:
            src.read()
            pixels += src.width * src.height * src.count
    return pixels / (time.perf_counter() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="grid side in 10 m pixels")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--per-month", type=int, default=3, help="radar acquisitions per month")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    grid = Grid(UTM, Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), args.size, args.size)
    months = [dt.date(2021, m + 1, 1) for m in range(args.months)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        radar_files = write_radar(Path(tmp) / "s1", args.size, args.months, args.per_month)
        dem_file = write_dem(Path(tmp) / "dem", grid)

        scenes = discover_sentinel1(Sentinel1Input(paths=(Path(tmp) / "s1",)))
        baseline = decode_rate(radar_files)
        started = time.perf_counter()
        planes = composite_sentinel1(scenes, grid, months)
        seconds = time.perf_counter() - started
        input_mpx = sum(2 * (args.size + 40) ** 2 for _ in radar_files) / 1e6
        results["sentinel1"] = {
            "grid": f"{args.size} x {args.size}", "acquisitions": len(scenes), "seconds": round(seconds, 2),
            "grid_mpx_per_s": round(args.size**2 * args.months / seconds / 1e6, 3),
            "input_band_mpx_per_s": round(input_mpx / seconds, 2),
            "decode_baseline_mpx_per_s": round(baseline, 2), "ratio": round(input_mpx / seconds / baseline, 3),
            "finite_share": round(float(np.isfinite(planes).mean()), 4),
        }  # fmt: skip

        dem = discover_dem(DemInput(paths=(dem_file,)))
        baseline = decode_rate([dem_file])
        started = time.perf_counter()
        terrain = terrain_on_grid(dem, grid)
        seconds = time.perf_counter() - started
        with rasterio.open(dem_file) as src:
            input_mpx = src.width * src.height / 1e6
        results["dem"] = {
            "grid": f"{args.size} x {args.size}", "dem_pixels": f"{src.width} x {src.height}",
            "seconds": round(seconds, 2), "grid_mpx_per_s": round(args.size**2 / seconds / 1e6, 3),
            "input_band_mpx_per_s": round(input_mpx / seconds, 2),
            "decode_baseline_mpx_per_s": round(baseline, 2), "ratio": round(input_mpx / seconds / baseline, 3),
            "median_slope_deg": round(float(np.nanmedian(terrain[1])), 2),
        }  # fmt: skip

    print(f"{'input':<11}{'grid':>12}{'s':>8}{'grid Mpx/s':>12}{'input Mpx/s':>13}{'decode Mpx/s':>14}{'ratio':>8}")
    for name, r in results.items():
        print(f"{name:<11}{r['grid']:>12}{r['seconds']:>8}{r['grid_mpx_per_s']:>12}{r['input_band_mpx_per_s']:>13}"
              f"{r['decode_baseline_mpx_per_s']:>14}{r['ratio']:>8}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
