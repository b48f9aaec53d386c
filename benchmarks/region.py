"""Regional-run benchmark: blocks/s and peak RSS per worker of ``suelo run`` on a generated region.

    python -m benchmarks.region                          # 4096 x 4096 px, 12 months, 2 local workers, 10 min budget
    python -m benchmarks.region --size 1024 --max-seconds 0   # run to completion

The region is generated like ``benchmarks.ingest`` (per-band GeoTIFFs with SCL, one STAC ItemCollection); the job
is the land-cover product with the shipped model, ``output.cube: false``, on a local Dask cluster. A full region of
4096 x 4096 px takes hours on a 2-core CPU (the Presto encoder dominates), so the run stops after ``--max-seconds``
(killed, as a crash would) and the figures come from the blocks finished by then, read from the run's own
manifest: blocks/s over the run, seconds per block, peak RSS of each worker, and the projected time of the whole
region. Because runs resume, re-running the same command continues where the previous one stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

from tests.fixtures import generate_region

WORKDIR = Path(os.environ.get("SUELO_BENCH_DIR", "/tmp/suelo-bench-region"))
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]


def job_spec(items: Path, out: Path, block_size: int, workers: int, scheduler: str) -> dict:
    return {
        "name": "bench-region",
        "inputs": [{"kind": "stac", "paths": [str(items)]}],
        "period": {"start": "2021-01-01", "end": "2021-12-31"},
        "ingest": {"bands": BANDS},
        "products": {"landcover": {"target_accuracy": 0.8}},
        "compute": {"block_size": block_size, "workers": workers, "scheduler": scheduler},
        "output": {"dir": str(out), "cube": False},
    }


class TreeMemory(threading.Thread):
    """Peak resident memory of a process and all its descendants together, sampled every half second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_total_mb = 0.0
        self.peak_root_mb = 0.0
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(0.5):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0.0
            for process in processes:
                try:
                    rss = process.memory_info().rss / 2**20
                except psutil.Error:  # exited between the listing and the reading
                    continue
                total += rss
                if process.pid == self.root.pid:
                    self.peak_root_mb = max(self.peak_root_mb, rss)
            self.peak_total_mb = max(self.peak_total_mb, total)

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scheduler", default="local")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop the run after this long (0: no limit)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    folder = WORKDIR / f"region_{args.size}"
    items = folder / "scenes" / "items.json"
    generated_in = 0.0
    if not items.exists():
        started = time.perf_counter()
        generate_region(items.parent, args.size, months=12, scenes_per_month=1, seed=0)
        generated_in = time.perf_counter() - started
    job = folder / "job.yaml"
    out = folder / "out"
    job.write_text(yaml.safe_dump(job_spec(items, out, args.block_size, args.workers, args.scheduler)))

    started = time.perf_counter()
    # a session of its own, so that the kill also takes the Dask worker processes with it
    log = folder / "run_log.jsonl"
    with open(log, "w") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "suelo.cli", "run", str(job), "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=stderr_file, start_new_session=True,
        )  # fmt: skip
        tree = TreeMemory(process.pid)
        tree.start()
        try:
            process.wait(timeout=args.max_seconds or None)
            completed = process.returncode == 0
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            completed = False
        tree.stop()
    wall = time.perf_counter() - started
    stderr = log.read_text()
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    this_run = [e for e in events if e.get("event") == "block_done"]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
    blocks = [e for e in manifest if e.get("type") == "block"]
    total = manifest[0]["blocks"]
    peaks: dict[str, float] = {}
    for entry in blocks:
        peaks[entry["worker"]] = max(peaks.get(entry["worker"], 0.0), entry["peak_rss_mb"])
    per_block = sorted(e["seconds"] for e in blocks)
    rate = len(this_run) / wall if wall > 0 else 0.0
    result = {
        "region_px": f"{args.size} x {args.size}",
        "months": 12,
        "block_size": args.block_size,
        "blocks_total": total,
        "blocks_done": len(blocks),
        "blocks_this_run": len(this_run),
        "workers": args.workers,
        "wall_seconds_this_run": round(wall, 1),
        "blocks_per_second": round(rate, 5),
        "seconds_per_block_median": per_block[len(per_block) // 2] if per_block else None,
        "px_per_second": round(rate * args.block_size**2, 1),
        "peak_rss_mb_per_worker": peaks,
        # sampled twice a second: the run's command plus every process it started, at the worst moment
        "peak_rss_mb_whole_run": round(tree.peak_total_mb),
        "peak_rss_mb_main_process": round(tree.peak_root_mb),
        # what the default for land cover (one worker per core, at most 4) would hold on 4 or more cores
        "projected_peak_mb_with_4_workers": round(tree.peak_root_mb + 4 * max(peaks.values())) if peaks else None,
        "projected_hours_for_region": round(total / rate / 3600, 2) if rate else None,
        "completed": completed,
        "generation_seconds": round(generated_in, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
