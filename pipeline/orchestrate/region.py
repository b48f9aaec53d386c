"""The driver: run every unfinished block of a plan (resumably), then, all done, assemble the final products.

A re-run (after a crash, ``kill -9`` or a failed block) skips every block whose manifest line and files check out,
and redoes the rest; final maps are assembled from the block rasters only once every block is done, so they are
identical however often the run was interrupted. A block that still fails after ``compute.retries`` retries is
reported and the run exits non-zero, never silently dropped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suelo.atomic import file_sha256, read_json_object, write_json_atomic
from suelo.orchestrate.assemble import CUBE_FILE, assemble, assemble_cube, cube_is_current
from suelo.orchestrate.backends import BlockFailure, execute
from suelo.orchestrate.manifest import Manifest
from suelo.orchestrate.plan import MANIFEST, Block, RunPlan
from suelo.orchestrate.progress import Progress

if TYPE_CHECKING:
    from suelo.cost import CostMeter

FINAL = "final.json"


@dataclass
class RegionResult:
    products: dict[str, list[Path]]
    report: Path | None
    seconds: float
    blocks_total: int
    blocks_run: int
    blocks_skipped: int
    failures: list[BlockFailure] = field(default_factory=list)
    backend: str = ""
    up_to_date: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    cube: Path | None = None  # the whole-region cube, when the job writes it
    cube_seconds: float = 0.0  # assembling it from the blocks' composites
    cube_skipped: bool = False  # it was already there, made from these inputs
    # suelo estimate's prediction as the run read it (suelo.cost.read_prediction), with a caveat when it resumed
    prediction: dict[str, Any] | None = None


def run_region(
    plan: RunPlan,
    overwrite: bool = False,
    log_format: str = "text",
    cost: CostMeter | None = None,
    prediction: dict[str, Any] | None = None,
) -> RegionResult:
    """Run every unfinished block of ``plan``, then (all done) assemble and write the final products; ``cost``, the
    run's meter, is read for the report (the cost until then) and the ``run_done`` event; ``prediction``, what
    ``suelo estimate`` predicted (:func:`suelo.cost.read_prediction`), is set beside it in the report."""
    from suelo.outdir import claimed_output, remove_stale_temporaries

    out_dir = Path(plan.job.output.dir)
    with claimed_output(out_dir):  # re-entrant: `suelo run` claimed the folder before anything else
        remove_stale_temporaries(out_dir)
        try:
            return _run_region(plan, overwrite, log_format, cost, prediction)
        finally:
            # the workers are gone (the backend shut them down): what a worker killed during this run left behind
            # has no writer any more, so the run does not leave it for the next one to remove
            remove_stale_temporaries(out_dir)


def _run_region(
    plan: RunPlan,
    overwrite: bool,
    log_format: str,
    cost: CostMeter | None = None,
    prediction: dict[str, Any] | None = None,
) -> RegionResult:
    started = time.perf_counter()
    out_dir = Path(plan.job.output.dir)
    manifest = Manifest(out_dir / MANIFEST)
    done = manifest.finished(plan, overwrite)
    blocks = plan.blocks()
    todo = [b for b in blocks if b.block_id not in done]
    final = read_json_object(out_dir / FINAL)
    final_files = final.get("files", [])
    progress = Progress(len(blocks), len(done), log_format)
    progress.event("plan", **_plan_fields(plan, len(blocks), len(todo)))
    if (
        not todo
        and final.get("digest") == (plan.final_digest or plan.digest)
        and all((out_dir / f).exists() for f in final_files)
        and (not plan.writes_cube or str(CUBE_FILE) in final_files)
    ):
        progress.event("up_to_date", output=str(out_dir), message="up to date (same job, inputs and models), "
                       "nothing to do")  # fmt: skip
        return RegionResult(
            {k: [out_dir / f for f in v] for k, v in final.get("products", {}).items()}, None,
            time.perf_counter() - started, len(blocks), 0, len(blocks), up_to_date=True,
            cube=out_dir / CUBE_FILE if plan.writes_cube else None, cube_skipped=True,
        )  # fmt: skip
    progress.begin()
    entries = dict(done)
    failures: list[BlockFailure] = []

    def finished(entry: dict[str, Any]) -> None:
        manifest.append(entry)
        entries[entry["block"]] = entry
        progress.block_done(entry)

    def failed(failure: BlockFailure) -> None:
        failures.append(failure)
        progress.block_failed(failure)

    try:
        backend = execute(plan, todo, finished, failed, progress.block_retry)
    finally:
        progress.close()
    result = RegionResult({}, None, 0.0, len(blocks), len(todo), len(done), failures, backend)
    run_seconds = time.perf_counter() - started
    result.stats = _block_stats(entries, blocks, run_seconds, len(todo))
    if failures:
        progress.event("run_failed", failed=[f.block for f in failures])
        result.seconds = time.perf_counter() - started
        return result
    files: list[Path] = []
    if plan.writes_cube:
        cube_started = time.perf_counter()
        result.cube = out_dir / CUBE_FILE
        result.cube_skipped = cube_is_current(result.cube, plan.cube_digest)
        if not result.cube_skipped:
            assemble_cube(plan, plan.job.compute.workers or os.cpu_count() or 1)
        result.cube_seconds = time.perf_counter() - cube_started
        files.append(result.cube)
    if prediction and prediction.get("compared") and done:
        # the meter started with this invocation: the blocks an earlier one finished are in no measured figure
        prediction = prediction | {
            "resumed": f"{len(done)} of {len(blocks)} blocks were done by an earlier invocation: the measured "
            "figures are this invocation's, the prediction the whole run's"
        }
    result.prediction = prediction
    products, report, product_files = assemble(
        plan, [entries[b.block_id] for b in blocks], cost=cost, prediction=prediction
    )
    files = product_files + files
    write_json_atomic(
        out_dir / FINAL,
        {"digest": plan.final_digest or plan.digest,
         "products": {k: [str(p.relative_to(out_dir)) for p in v] for k, v in products.items()},
         "files": [str(p.relative_to(out_dir)) for p in files],
         "checksums": {str(p.relative_to(out_dir)): file_sha256(p) for p in files}},
    )  # fmt: skip
    result.products, result.report = products, report
    result.seconds = time.perf_counter() - started
    energy: dict[str, Any] = {}
    if cost is not None and (so_far := cost.snapshot()).measured:
        energy["energy_kwh"] = so_far.energy_kwh  # so far (measured or estimated); run.json has the final figure
    progress.event("run_done", seconds=round(result.seconds, 2), blocks=len(blocks), ran=len(todo), **energy)
    return result


def _plan_fields(plan: RunPlan, blocks: int, todo: int) -> dict[str, Any]:
    """The ``plan`` event: what the run will make, of which months, on which grid, into which folder."""
    period = plan.job.period
    return {
        "job": plan.job.name,
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat(), "months": period.months},
        "grid": {"crs": plan.grid.crs.to_string(), "width": plan.grid.width, "height": plan.grid.height},
        "products": [p.name for p in plan.products],
        "blocks": blocks,
        "to_run": todo,
        "output": str(plan.job.output.dir),
    }


def _block_stats(entries: dict[str, Any], blocks: Sequence[Block], seconds: float, ran: int) -> dict[str, Any]:
    peaks: dict[str, float] = {}
    for entry in entries.values():
        worker = entry.get("worker", "?")
        peaks[worker] = max(peaks.get(worker, 0.0), entry.get("peak_rss_mb", 0.0))
    return {
        "blocks": len(blocks),
        "blocks_run": ran,
        "seconds": round(seconds, 3),
        "blocks_per_second": round(ran / seconds, 4) if seconds > 0 else None,
        "peak_rss_mb_per_worker": peaks,
    }
