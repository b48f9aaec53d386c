"""What a job will cost before it runs (``suelo estimate``): its size, and its time and energy predicted from a short
timed run of a few of its own blocks on this machine.

The calibration is real work on real data, never a table of nominal speeds: the job's inputs are discovered and its
models planned exactly as ``suelo run`` does (that time is measured as the run's set-up), then ``k`` adjacent blocks
from the middle of the grid (full-size ones where the grid has them) run start to finish, each timed, in this
process with the job's ``threads_per_worker``, into a temporary folder that is deleted afterwards. The final
products are assembled twice from those block rasters, once for the first block alone and once for all ``k``, so
the assembly's cost splits into a fixed part (report, figures, STAC) and a part per pixel (mosaics, COGs, vectors).
The energy of the calibration is measured by suelo.cost (codecarbon), as a run's is.

The prediction (documented in :func:`predict`):

- each block takes ``rate x its pixels``, ``rate`` the calibration's seconds per pixel over its blocks after the
  first; the first block's extra time (model loading, first-touch of the inputs) is the warm-up every worker pays
  once;
- on ``N`` workers the blocks are scheduled longest first onto the least loaded worker (the makespan of that
  greedy schedule); on one machine (``scheduler: local``) a worker is slowed by ``N x threads_per_worker / cores``
  when that exceeds 1, while the workers of a cluster (a Dask scheduler address, the Slurm example) are taken to
  have their own cores;
- time = set-up + makespan + assembly (fixed + per pixel x pixels, plus the cube when the job writes one);
- energy = the calibration's mean power x the work (set-up + the sum of all block times + assembly): the work, not
  the wall time, so the same on any number of workers; the idle power of extra machines is not counted.

A job for a Dask cluster (``compute.scheduler`` an address, as ``workflows/slurm_cluster.yaml``) is estimated
without its cluster: the calibration runs here, so its blocks are timed on this machine's cores, and the
prediction takes the cluster's workers to be as fast.

Not modelled: Dask cluster start-up (seconds), reading inputs over a network slower than the calibration blocks',
blocks outside the inputs' footprint (they run faster: the prediction is then high). ``estimate.json`` is written
in the job's output folder so that the run's report can show the prediction beside what the run measured.
"""

from __future__ import annotations

import dataclasses
import datetime
import heapq
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from suelo.cost import CostMeter, grid_area_km2, prediction_compute
from suelo.orchestrate.plan import Block, RunPlan
from suelo.settings import JobSpec

DEFAULT_CALIBRATION_BLOCKS = 3
#: Worker counts shown for a job on a cluster (a scheduler address), beside the job's own.
CLUSTER_WORKERS = (1, 4, 16, 64)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What the timed blocks measured."""

    blocks: tuple[str, ...]
    block_pixels: tuple[int, ...]
    block_seconds: tuple[float, ...]
    setup_s: float  # discovery and planning, as a run does them
    assemble_first_s: float  # final products of the first block alone
    assemble_all_s: float  # final products of all calibration blocks
    cube_s: float  # the whole-region cube from the blocks' composites (0 when the job writes none)
    wall_s: float  # the calibration from its first block to its last assembly
    energy_kwh: float
    energy_method: str
    energy_estimated: bool
    carbon_intensity_g_per_kwh: float

    @property
    def rate_s_per_pixel(self) -> float:
        """Seconds per pixel of a warm block: the blocks after the first (all of them when there is only one)."""
        pixels, seconds = self.block_pixels[1:] or self.block_pixels, self.block_seconds[1:] or self.block_seconds
        return sum(seconds) / max(sum(pixels), 1)

    @property
    def warmup_s(self) -> float:
        """The first block's time beyond a warm block's: what each worker pays once."""
        if len(self.block_seconds) < 2:
            return 0.0
        return max(0.0, self.block_seconds[0] - self.rate_s_per_pixel * self.block_pixels[0])

    @property
    def assemble_per_pixel_s(self) -> float:
        """The assembly's seconds per grid pixel, from the difference of its two sizes (0 with one block)."""
        extra = sum(self.block_pixels) - self.block_pixels[0]
        if extra <= 0:
            return 0.0
        return max(0.0, (self.assemble_all_s - self.assemble_first_s) / extra)

    @property
    def assemble_fixed_s(self) -> float:
        return max(0.0, self.assemble_first_s - self.assemble_per_pixel_s * self.block_pixels[0])

    @property
    def power_w(self) -> float:
        """Mean power during the calibration (the energy meter's scope: the machine)."""
        return self.energy_kwh * 3.6e6 / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(
            rate_s_per_megapixel=round(self.rate_s_per_pixel * 1e6, 3), warmup_s=round(self.warmup_s, 3),
            assemble_fixed_s=round(self.assemble_fixed_s, 3),
            assemble_s_per_megapixel=round(self.assemble_per_pixel_s * 1e6, 3), power_w=round(self.power_w, 2),
        )  # fmt: skip
        return out


def makespan(seconds: Sequence[float], workers: int, warmup_s: float = 0.0) -> float:
    """Wall time of ``seconds`` (one per block) on ``workers``: longest first, each onto the least loaded worker
    (the greedy schedule, within 4/3 of the best one); every worker that gets a block pays ``warmup_s`` once."""
    if not seconds:
        return 0.0
    used = min(workers, len(seconds))
    loads = [warmup_s] * used
    heapq.heapify(loads)
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(loads, loads[0] + s)
    return max(loads)


def predict(
    calibration: Calibration,
    block_pixels: Sequence[int],
    grid_pixels: int,
    workers: int,
    carbon_intensity_g_per_kwh: float,
    slowdown: float = 1.0,
) -> dict[str, Any]:
    """Predicted wall time and energy of the whole job on ``workers`` (see the module docstring for the model)."""
    block_seconds = [calibration.rate_s_per_pixel * p * slowdown for p in block_pixels]
    assembly = calibration.assemble_fixed_s + calibration.assemble_per_pixel_s * grid_pixels
    cube = calibration.cube_s * grid_pixels / max(sum(calibration.block_pixels), 1)
    wall = calibration.setup_s + makespan(block_seconds, workers, calibration.warmup_s) + assembly + cube
    work = calibration.setup_s + sum(block_seconds) / slowdown + calibration.warmup_s * min(workers, len(block_pixels))
    energy = calibration.power_w * (work + assembly + cube) / 3.6e6
    return {
        "workers": workers, "seconds": round(wall, 2), "energy_kwh": energy,
        "co2e_kg": energy * carbon_intensity_g_per_kwh / 1000, "blocks_s": round(sum(block_seconds), 2),
        "assembly_s": round(assembly + cube, 2), "slowdown": round(slowdown, 3),
    }  # fmt: skip


def calibration_blocks(plan: RunPlan, count: int) -> list[Block]:
    """Up to ``count`` adjacent blocks of one row in the middle of the grid, starting on a block boundary (so their
    contents are the job's own blocks), the row and columns chosen among full-size blocks where the grid has them."""
    blocks = plan.blocks()
    size = plan.job.compute.block_size
    full = [b for b in blocks if b.height == size and b.width == size] or blocks
    rows = sorted({b.row for b in full})
    row = rows[len(rows) // 2]
    in_row = sorted((b for b in full if b.row == row), key=lambda b: b.col)
    start = max(0, len(in_row) // 2 - count // 2)
    chosen = in_row[start : start + count]
    # adjacent only: a gap would make the sub-grid hold blocks that were not timed
    run = [chosen[0]]
    for block in chosen[1:]:
        if block.col != run[-1].col + run[-1].width:
            break
        run.append(block)
    return run


def _calibration_job(job: JobSpec, folder: Path) -> JobSpec:
    """The job as the calibration runs it: into ``folder``, in this process, without the assessment (its sample
    lies on the whole grid; its cost is not modelled)."""
    products = job.products
    updates: dict[str, Any] = {}
    for name in type(products).model_fields:
        product = getattr(products, name)
        if getattr(product, "assessment", None) is not None:
            updates[name] = product.model_copy(update={"assessment": None})
    return job.model_copy(
        update={
            "output": job.output.model_copy(update={"dir": folder}),
            "compute": job.compute.model_copy(update={"scheduler": "synchronous", "workers": 1}),
            "products": products.model_copy(update=updates),
        }
    )


def calibrate(job: JobSpec, count: int, log: Callable[[str], None]) -> tuple[RunPlan, Calibration]:
    """Discover and plan ``job`` as a run does (timed), then time ``count`` of its blocks and two assemblies."""
    from suelo.jobs import plan_job
    from suelo.orchestrate.assemble import assemble, assemble_cube
    from suelo.orchestrate.block import process_block

    started = time.perf_counter()
    # the calibration runs here, in this process: a cluster job is estimated without its scheduler being reachable
    local = job.model_copy(update={"compute": job.compute.model_copy(update={"scheduler": "synchronous"})})
    plan = plan_job(local if on_cluster(job) else job)
    grid = plan.grid
    setup_s = time.perf_counter() - started
    chosen = calibration_blocks(plan, count)
    first, last = chosen[0], chosen[-1]
    folder = Path(tempfile.mkdtemp(prefix="suelo-estimate-"))
    try:
        sub_job = _calibration_job(job, folder)
        window = grid.window(first.row, first.row + first.height, first.col, last.col + last.width)
        sub_plan = dataclasses.replace(plan, job=sub_job, grid=window)
        single = dataclasses.replace(sub_plan, grid=grid.window(first.row, first.row + first.height, first.col,
                                                                first.col + first.width))  # fmt: skip
        meter = CostMeter(job.cost.carbon_intensity_g_per_kwh, job.cost.country_iso_code).start()
        begun = time.perf_counter()
        entries, seconds = [], []
        for i, block in enumerate(sub_plan.blocks()):
            log(f"calibration: block {i + 1} of {len(chosen)} ({block.height} x {block.width} px)")
            tick = time.perf_counter()
            entries.append(process_block(sub_plan, block))
            seconds.append(time.perf_counter() - tick)
        log("calibration: assembling the final products (twice: one block, all)")
        tick = time.perf_counter()
        assemble(single, entries[:1])
        assemble_first = time.perf_counter() - tick
        tick = time.perf_counter()
        assemble(sub_plan, entries)
        assemble_all = time.perf_counter() - tick
        cube_s = 0.0
        if sub_plan.writes_cube:
            tick = time.perf_counter()
            assemble_cube(sub_plan, 1)
            cube_s = time.perf_counter() - tick
        wall = time.perf_counter() - begun
        cost = meter.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    calibration = Calibration(
        tuple(b.block_id for b in chosen), tuple(b.height * b.width for b in chosen), tuple(seconds), setup_s,
        assemble_first, assemble_all, cube_s, wall, cost.energy_kwh, cost.energy_method, cost.energy_estimated,
        cost.carbon_intensity_g_per_kwh,
    )  # fmt: skip
    return plan, calibration


def job_workers(job: JobSpec) -> int:
    """How many workers the job's run will have (one process for ``synchronous``; a local cluster's default is one
    worker per core)."""
    compute = job.compute
    # the local cluster's default (suelo.settings.ComputeSpec.workers): cores, at most 4
    return 1 if compute.scheduler == "synchronous" else (compute.workers or min(os.cpu_count() or 1, 4))


def on_cluster(job: JobSpec) -> bool:
    """The job runs on a Dask scheduler elsewhere (an address), whose workers have their own cores."""
    return job.compute.scheduler not in (None, "local", "synchronous")


def estimate_job(
    job: JobSpec,
    workers: Sequence[int] = (),
    count: int = DEFAULT_CALIBRATION_BLOCKS,
    log: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:
    """The job's size and its predicted time and energy on this machine and on each worker count."""
    from suelo.composite import month_starts

    plan, calibration = calibrate(job, count, log)
    blocks = plan.blocks()
    block_pixels = [b.height * b.width for b in blocks]
    pixels = plan.grid.height * plan.grid.width
    shared = not on_cluster(job)
    counts = sorted({1, job_workers(job), *workers, *(() if shared else CLUSTER_WORKERS)})
    cores = os.cpu_count() or 1
    threads = job.compute.threads_per_worker
    intensity = calibration.carbon_intensity_g_per_kwh  # the job's, else the grid mix codecarbon used
    predictions = [
        predict(calibration, block_pixels, pixels, n, intensity, max(1.0, n * threads / cores) if shared else 1.0)
        for n in counts
    ]
    own = next(p for p in predictions if p["workers"] == job_workers(job))
    return {
        "job": job.name,
        "plan_digest": plan.digest,
        "estimated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": job.compute.device or "default",
        "compute": prediction_compute(job.compute),
        "machine": {"cores": cores, "threads_per_worker": threads, "shared": shared},
        "size": {
            "blocks": len(blocks),
            "block_size": job.compute.block_size,
            "pixels": pixels,
            "area_km2": grid_area_km2(plan.grid),
            "months": len(month_starts(job.period)),
            "scenes": len(plan.scenes),
            "inputs": list(plan.auxiliary.inputs),
            "products": [p.name for p in plan.products],
        },
        "calibration": calibration.to_dict(),
        "predictions": predictions,
        "predicted": {"seconds": own["seconds"], "energy_kwh": own["energy_kwh"], "workers": own["workers"]},
        "energy_estimated": calibration.energy_estimated,
    }


def estimate_table(estimate: dict[str, Any]) -> list[str]:
    """The estimate as the lines ``suelo estimate`` prints."""
    size, cal = estimate["size"], estimate["calibration"]
    area = f"{size['area_km2']:.2f} km2" if size["area_km2"] is not None else "area n/a"
    lines = [
        f"job {estimate['job']}: {size['blocks']} blocks of {size['block_size']} px, {size['pixels']:,} pixels "
        f"({area}), {size['months']} months, {size['scenes']} scenes, inputs {', '.join(size['inputs'])}, "
        f"products {', '.join(size['products'])}",
        f"calibration: {len(cal['blocks'])} blocks in {cal['wall_s']:.1f} s; set-up {cal['setup_s']:.1f} s, "
        f"{cal['rate_s_per_megapixel']:.1f} s per Mpx, warm-up {cal['warmup_s']:.1f} s, assembly "
        f"{cal['assemble_fixed_s']:.1f} s + {cal['assemble_s_per_megapixel']:.1f} s per Mpx, "
        f"{cal['power_w']:.1f} W ({'estimated' if cal['energy_estimated'] else 'measured'}: {cal['energy_method']})",
        f"{'workers':>8} {'time':>10} {'energy kWh':>12} {'kg CO2e':>9}",
    ]
    for p in estimate["predictions"]:
        lines.append(f"{p['workers']:>8} {clock(p['seconds']):>10} {p['energy_kwh']:>12.2e} {p['co2e_kg']:>9.2e}")
    return lines


def clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
