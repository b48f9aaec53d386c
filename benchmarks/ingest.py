"""Ingest benchmark: Mpx/s and peak memory of scenes -> monthly cube, on the sample and a generated region.

    python -m benchmarks.ingest                  # sample + generated 2048 x 2048 x 12 months
    python -m benchmarks.ingest --size 1024      # smaller generated region

The generated region mimics real Sentinel-2 L2A products: per-band tiled, DEFLATE-compressed GeoTIFFs at native
resolution (10 m and 20 m), an SCL layer with clouds, two acquisitions per month, served through a STAC
ItemCollection (processing baseline 05.10, so the -1000 offset is applied). The baseline figure is the plain
decode rate of the same files (rasterio, whole-band reads, one thread) measured in the same process, so the ratio
says how much warping, masking and compositing cost on top of reading.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
from affine import Affine

from suelo.settings import S2_BAND_RESOLUTION, validate_job

PROJECT = Path(__file__).resolve().parents[1]
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
ORIGIN = (600000.0, 5700000.0)


class PeakRss:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the maximum seen while running."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._process = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def generate_region(folder: Path, size: int, months: int, scenes_per_month: int, seed: int = 0) -> Path:
    """Write a synthetic multi-scene region as per-band GeoTIFFs plus a STAC ItemCollection; return its path."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    fields = {  # smooth spatial patterns per band so the files compress like real scenes
        band: 800 + 2500 * (0.5 + 0.5 * np.sin(6 * xx + i) * np.cos(5 * yy - i)) for i, band in enumerate(BANDS)
    }
    items = []
    for month in range(months):
        for k in range(scenes_per_month):
            day = dt.datetime(2021, month + 1, 3 + 12 * k, 10, 30, tzinfo=dt.timezone.utc)
            scene_dir = folder / f"scene_{month:02d}_{k}"
            scene_dir.mkdir(parents=True, exist_ok=True)
            season = 1 + 0.3 * np.sin(2 * np.pi * month / 12)
            assets = {}
            for band in BANDS:
                res = S2_BAND_RESOLUTION[band]
                step = res // 10
                values = fields[band][::step, ::step] * season + rng.normal(0, 30, (size // step, size // step))
                path = scene_dir / f"{band}.tif"
                _write(path, np.clip(values + 1000, 1, 65534).astype(np.uint16), res)
                assets[band] = {
                    "href": str(path.relative_to(folder)),
                    "type": "image/tiff; application=geotiff",
                }
            # clouds in cells of 16 x 16 SCL pixels (320 m), covering the whole 20 m grid of size // 2 pixels
            cells = -(-(size // 2) // 16)
            cloud = rng.random((cells, cells)) < 0.25
            scl = np.where(np.kron(cloud, np.ones((16, 16), bool))[: size // 2, : size // 2], 9, 4).astype(np.uint8)
            _write(scene_dir / "SCL.tif", scl, 20)
            assets["SCL"] = {"href": str((scene_dir / "SCL.tif").relative_to(folder))}
            items.append(
                {
                    "type": "Feature",
                    "stac_version": "1.0.0",
                    "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"],
                    "id": f"S2B_MSIL2A_{day:%Y%m%dT%H%M%S}_N0510_R051_T31UFS_{k}",
                    "geometry": None,
                    "properties": {
                        "datetime": day.isoformat().replace("+00:00", "Z"),
                        "s2:processing_baseline": "05.10",
                        "s2:product_type": "S2MSI2A",
                        "proj:epsg": 32631,
                        "proj:bbox": [ORIGIN[0], ORIGIN[1] - 10 * size, ORIGIN[0] + 10 * size, ORIGIN[1]],
                    },
                    "assets": assets,
                    "links": [],
                }
            )
    path = folder / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def _write(path: Path, values: np.ndarray, res: int) -> None:
    profile = {
        "driver": "GTiff", "height": values.shape[0], "width": values.shape[1], "count": 1,
        "dtype": values.dtype.name, "crs": "EPSG:32631", "transform": Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1]),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "predictor": 2, "nodata": 0,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)


def decode_rate(items_path: Path) -> float:
    """Baseline: Mpx/s of plain whole-band decoding of every band file (10 m equivalent pixels), one thread."""
    started, pixels = time.perf_counter(), 0
    for path in sorted(items_path.parent.glob("scene_*/*.tif")):
        with rasterio.open(path) as src:
            src.read(1)
            pixels += src.width * src.height * (S2_BAND_RESOLUTION.get(path.stem, 20) // 10) ** 2
    seconds = time.perf_counter() - started
    return pixels / seconds / 1e6


def run_ingest(items_path: Path, out: Path, period: tuple[str, str], bands: tuple[str, ...], require_scl: bool) -> dict:
    from suelo.jobs import ingest

    job = validate_job(
        {
            "inputs": [{"kind": "stac", "paths": [str(items_path)]}],
            "period": {"start": period[0], "end": period[1]},
            "ingest": {"bands": list(bands), "masking": {"require_scl": require_scl}},
            "output": {"dir": str(out)},
        }
    )
    with PeakRss() as memory:
        result = ingest(job, overwrite=True)
    input_pixels = result.grid.height * result.grid.width * result.n_scenes * len(bands)
    return {
        "grid": f"{result.grid.width} x {result.grid.height}",
        "months": result.n_months,
        "scenes": result.n_scenes,
        "seconds": round(result.seconds, 2),
        "cube_mpx_per_s": round(result.megapixels_per_second, 3),
        "input_band_mpx_per_s": round(input_pixels / result.seconds / 1e6, 2),
        "peak_rss_mb": round(memory.peak_mb, 0),
        "workers": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="generated region side in 10 m pixels")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--scenes-per-month", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, dict] = {}
    sample = PROJECT / "data" / "sample" / "belgium" / "items.json"
    with tempfile.TemporaryDirectory() as tmp:
        sample_bands = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
        results["sample"] = run_ingest(
            sample, Path(tmp) / "sample", ("2020-11-01", "2021-10-31"), sample_bands, require_scl=False
        )
        results["sample"]["decode_baseline_mpx_per_s"] = None
        region = Path(tmp) / "region"
        started = time.perf_counter()
        items = generate_region(region, args.size, args.months, args.scenes_per_month)
        generated_in = time.perf_counter() - started
        baseline = decode_rate(items)
        period = ("2021-01-01", f"2021-{args.months:02d}-28")
        run = run_ingest(items, Path(tmp) / "out", period, BANDS, require_scl=True)
        run["decode_baseline_mpx_per_s"] = round(baseline, 2)
        run["ingest_vs_single_thread_decode"] = round(run["input_band_mpx_per_s"] / baseline, 2)
        run["generation_seconds"] = round(generated_in, 1)
        results[f"generated_{args.size}"] = run

    print(f"{'input':<16}{'grid':>12}{'months':>8}{'scenes':>8}{'s':>8}{'cube Mpx/s':>12}"
          f"{'band Mpx/s':>12}{'decode Mpx/s':>14}{'ratio':>7}{'peak MB':>9}")  # fmt: skip
    for name, r in results.items():
        print(
            f"{name:<16}{r['grid']:>12}{r['months']:>8}{r['scenes']:>8}{r['seconds']:>8}{r['cube_mpx_per_s']:>12}"
            f"{r['input_band_mpx_per_s']:>12}{r['decode_baseline_mpx_per_s'] or '-':>14}"
            f"{r.get('ingest_vs_single_thread_decode', '-'):>7}{r['peak_rss_mb']:>9}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
