"""Orchestration of one job: discover -> grid -> composite -> write, with resume and provenance.

Every run records in ``<out>/run.json`` the fully resolved job spec, the software versions, the input scenes and
the radiometric offsets applied to each, so an output can always be traced back to what produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask

from suelo.atomic import write_json_atomic
from suelo.composite import build_cube, month_starts, write_cube
from suelo.errors import ConfigError
from suelo.grid import Grid
from suelo.ingest import check_remote_access, discover_scenes, job_grid, scenes_in_period, scenes_on_grid
from suelo.ingest.auxiliary import Auxiliary
from suelo.ingest.scene import Scene
from suelo.orchestrate.assemble import CUBE_FILE, cube_is_current
from suelo.provenance import peak_rss_mb, software_versions
from suelo.settings import JobSpec

if TYPE_CHECKING:
    from suelo.cost import CostMeter
    from suelo.orchestrate.plan import RunPlan


@dataclass(frozen=True)
class IngestResult:
    cube_path: Path
    grid: Grid
    n_scenes: int
    n_months: int
    seconds: float
    skipped: bool
    peak_rss_mb: float

    @property
    def megapixels_per_second(self) -> float:
        """Grid pixels x months composited per second (Mpx/s of output cube, all bands together)."""
        if self.seconds <= 0:
            return float("nan")
        return self.grid.height * self.grid.width * self.n_months / self.seconds / 1e6


def job_digest(job: JobSpec, scene_ids: list[str]) -> str:
    """Fingerprint of what determines the cube: inputs, AOI, grid, period, ingest settings and the scenes found."""
    spec = job.model_dump(mode="json", include={"inputs", "aoi", "grid", "period", "ingest"})
    payload = json.dumps({"spec": spec, "scenes": scene_ids}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def ingest(job: JobSpec, overwrite: bool = False, force: bool = False) -> IngestResult:
    """Build and write the monthly cube of ``job`` and its run.json; skip when an identical cube already exists.

    The output folder is claimed and locked first (``suelo.outdir``), before anything is read or written."""
    from suelo.outdir import claimed_output

    started = time.perf_counter()
    with claimed_output(Path(job.output.dir), force):
        scenes, grid = discover(job)
        auxiliary = discover_auxiliary(job, grid)
        result = write_job_cube(job, scenes, grid, overwrite, started, auxiliary)
        if not result.skipped or not (Path(job.output.dir) / "run.json").exists():
            write_json_atomic(Path(job.output.dir) / "run.json", run_record(job, scenes, grid, result, auxiliary))
    return result


def discover(job: JobSpec) -> tuple[list[Scene], Grid]:
    """The job's scenes that overlap its grid, and the grid."""
    scenes = discover_scenes(job)
    grid = job_grid(job, scenes)
    scenes = scenes_on_grid(scenes, grid, origin=str(job.aoi.file) if job.aoi and job.aoi.file else "AOI")
    scenes = scenes_in_period(scenes, job.period)  # the others would be read for nothing, and checked against models
    check_remote_access(scenes)
    return scenes, grid


def discover_auxiliary(job: JobSpec, grid: Grid) -> Auxiliary:
    """The job's Sentinel-1 acquisitions in the period, DEM and weather files (none for a Sentinel-2-only job),
    the DEM and weather tried on the job grid (one error naming the file if they do not cover it)."""
    from suelo.ingest.auxiliary import check_auxiliary
    from suelo.ingest.auxiliary import discover_auxiliary as discover_inputs
    from suelo.ingest.confine import InputAccess

    months = month_starts(job.period)
    auxiliary = discover_inputs(job, months, InputAccess.of_job(job))
    check_auxiliary(auxiliary, grid, months)
    return auxiliary


def input_ids(scenes: list[Scene], auxiliary: Auxiliary) -> list[str]:
    """What the cube is made from, for its digest: the scenes, and the other inputs' files when there are any (a
    Sentinel-2-only job keeps the digest of earlier versions)."""
    ids = [s.scene_id for s in scenes]
    if auxiliary.present:
        ids.append(json.dumps(auxiliary.provenance(), sort_keys=True))
    return ids


def write_job_cube(
    job: JobSpec,
    scenes: list[Scene],
    grid: Grid,
    overwrite: bool,
    started: float | None = None,
    auxiliary: Auxiliary | None = None,
) -> IngestResult:
    """The whole-region cube as NetCDF (dask, block by block), unless an identical one is already there."""
    started = time.perf_counter() if started is None else started
    out_dir = Path(job.output.dir)
    cube_path = out_dir / CUBE_FILE
    auxiliary = auxiliary or Auxiliary()
    digest = job_digest(job, input_ids(scenes, auxiliary))
    cube = build_cube(scenes, grid, job.period, job.ingest, job.compute.block_size, auxiliary)
    cube.attrs["job_digest"] = digest
    n_months = cube.sizes["time"]
    if not check_cube_replaceable(cube_path, digest, overwrite):
        return IngestResult(cube_path, grid, len(scenes), n_months, 0.0, True, peak_rss_mb())
    workers = job.compute.workers or os.cpu_count() or 1
    with dask.config.set(scheduler="threads", num_workers=workers):
        write_cube(cube, cube_path)
    seconds = time.perf_counter() - started
    return IngestResult(cube_path, grid, len(scenes), n_months, seconds, False, peak_rss_mb())


def run_record(
    job: JobSpec, scenes: list[Scene], grid: Grid, cube: IngestResult | None, auxiliary: Auxiliary | None = None
) -> dict[str, Any]:
    """run.json: the resolved spec, versions, grid, inputs with their radiometry (and the radar, terrain and weather
    files when the job has them), outputs and statistics."""
    out_dir = Path(job.output.dir)
    auxiliary = auxiliary or Auxiliary()
    record: dict[str, Any] = {
        "digest": job_digest(job, input_ids(scenes, auxiliary)),
        "job": job.model_dump(mode="json"),
        "versions": software_versions(),
        "grid": grid.to_dict(),
        "inputs": [s.provenance() for s in scenes],
        "outputs": {},
        "stats": {},
    }
    if auxiliary.present:
        record["auxiliary_inputs"] = auxiliary.provenance()
    if cube is not None:
        record["outputs"]["cube"] = str(cube.cube_path.relative_to(out_dir))
        record["stats"]["ingest"] = {
            "seconds": round(cube.seconds, 3),
            "megapixels_per_second": round(cube.megapixels_per_second, 3),
            "peak_rss_mb": round(cube.peak_rss_mb, 1),
            "skipped": cube.skipped,
        }
    return record


def check_cube_replaceable(path: Path, digest: str, overwrite: bool) -> bool:
    """Whether the cube at ``path`` is to be (re)written: not when it is current (made from these inputs); an
    existing cube of another job is replaced only with ``overwrite``, else one error before any work."""
    if cube_is_current(path, digest):
        return False
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{path} exists and was made from a different job spec or inputs; "
            "use --overwrite to replace it or choose another output.dir"
        )
    return True


@dataclass(frozen=True)
class RunResult:
    cube: IngestResult | None
    products: dict[str, list[Path]]
    report: Path | None
    seconds: float
    skipped: bool
    failures: list[Any] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def run(job: JobSpec, overwrite: bool = False, log_format: str = "text", force: bool = False) -> RunResult:
    """The whole job: the cube (if ``output.cube``), every block of every enabled product, the final maps and report.

    Blocks run on Dask (suelo.orchestrate); a finished job re-run does nothing, an interrupted one resumes. The
    output folder is claimed and locked before anything else (``suelo.outdir``).
    """
    from suelo.outdir import claimed_output

    with claimed_output(Path(job.output.dir), force) as token:
        return _run(job, overwrite, log_format, token)


def _run(job: JobSpec, overwrite: bool, log_format: str, token: str | None = None) -> RunResult:
    from suelo.cost import CostMeter

    meter = CostMeter(job.cost.carbon_intensity_g_per_kwh, job.cost.country_iso_code).start()
    try:
        return _measured_run(job, overwrite, log_format, token, meter)
    finally:
        meter.stop()  # idempotent: the tracker's thread ends however the run ends


def plan_job(job: JobSpec, token: str | None = None) -> RunPlan:
    """The job's inputs discovered and its run planned: what ``suelo run`` and ``suelo estimate`` do first. The plan
    comes before any work, so a model that cannot serve the job (an uncertifiable target, a bad file) stops it."""
    from suelo.orchestrate import make_plan

    scenes, grid = discover(job)
    auxiliary = discover_auxiliary(job, grid)
    return make_plan(job, grid, scenes, job_digest(job, input_ids(scenes, auxiliary)), token, auxiliary)


def _measured_run(job: JobSpec, overwrite: bool, log_format: str, token: str | None, meter: CostMeter) -> RunResult:
    from suelo.cost import ESTIMATE_FILE, grid_area_km2, predicted_vs_actual, prediction_compute, read_prediction
    from suelo.orchestrate import run_region

    started = time.perf_counter()
    plan = plan_job(job, token)
    scenes, grid, auxiliary, digest = list(plan.scenes), plan.grid, plan.auxiliary, plan.cube_digest
    out_dir = Path(job.output.dir)
    if job.output.cube:
        check_cube_replaceable(out_dir / CUBE_FILE, digest, overwrite)  # another job's cube: stop before any work
    # what `suelo estimate` predicted for this plan, if it ran: the report and run.json set it beside the measured
    prediction = read_prediction(out_dir / ESTIMATE_FILE, plan.digest, prediction_compute(job.compute))
    region = run_region(plan, overwrite, log_format, cost=meter, prediction=prediction)
    cube = None
    if region.cube is not None:  # assembled from the blocks' composites: the inputs are decoded once a run
        n_months = len(month_starts(job.period))
        cube = IngestResult(
            region.cube, grid, len(scenes), n_months, region.cube_seconds, region.cube_skipped, peak_rss_mb()
        )
    skipped = region.up_to_date and (cube is None or cube.skipped) and (out_dir / "run.json").exists()
    if not skipped:
        record = run_record(job, scenes, grid, cube, auxiliary)
        record["plan_digest"] = plan.digest
        record["products"] = {
            p.name: {
                "model": str(p.model_path),
                "model_sha256": p.model_sha256,
                "thresholds": p.policy_report,
                "files": [str(f.relative_to(out_dir)) for f in region.products.get(p.name, [])],
            }
            for p in plan.products
        }
        if region.report is not None:
            record["outputs"]["report"] = str(region.report.relative_to(out_dir))
        record["stats"]["blocks"] = region.stats | {"backend": region.backend, "skipped": region.blocks_skipped}
        record["stats"]["run_seconds"] = round(time.perf_counter() - started, 3)
        record["stats"]["peak_rss_mb_driver"] = round(peak_rss_mb(), 1)
        record["failures"] = [vars(f) for f in region.failures]
        _add_masking(record, out_dir)
        record["cost"] = meter.stop().to_dict(grid_area_km2(grid), grid.width * grid.height)
        if (compared := predicted_vs_actual(region.prediction, record["cost"])) is not None:
            record["cost"]["predicted"] = compared
        write_json_atomic(out_dir / "run.json", record)
    return RunResult(
        cube, region.products, region.report, time.perf_counter() - started, skipped, region.failures, region.stats
    )


def _add_masking(record: dict[str, Any], out_dir: Path) -> None:
    """Copy each product's masking table from the run report into run.json (one place to read a run's outcome)."""
    try:
        report = json.loads((out_dir / "report" / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for entry in report.get("maps", []):
        product = entry.get("name", "").split("/")[0]
        if product in record["products"]:
            record["products"][product]["masking"] = entry.get("masking")
    record["warnings"] = report.get("warnings", [])
