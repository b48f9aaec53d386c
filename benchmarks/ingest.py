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
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
import rasterio

from suelo.settings import S2_BAND_RESOLUTION, validate_job
from tests.fixtures.rasters import REGION_BANDS, generate_region  # the generated region: shared with the tests

PROJECT = Path(__file__).resolve().parents[1]
BANDS = REGION_BANDS


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
