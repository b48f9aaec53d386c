"""Orchestration of one job: discover -> grid -> composite -> write, with resume and provenance.

Every run records in ``<out>/run.json`` the fully resolved job spec, the software versions, the input scenes and
the radiometric offsets applied to each, so an output can always be traced back to what produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np

from pipeline import __version__
from pipeline.atomic import write_json_atomic
from pipeline.composite import build_cube, write_cube
from pipeline.errors import ConfigError
from pipeline.grid import Grid
from pipeline.ingest import discover_scenes, job_grid, scenes_on_grid
from pipeline.settings import JobSpec

CUBE_NAME = "cube.nc"
DEFAULT_LANDCOVER_MODEL = Path(__file__).resolve().parent.parent / "models" / "landcover_default.pt"


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


def software_versions() -> dict[str, str]:
    import numpy
    import rasterio
    import xarray

    return {
        "suelo": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "xarray": xarray.__version__,
        "dask": dask.__version__,
    }


def job_digest(job: JobSpec, scene_ids: list[str]) -> str:
    """Fingerprint of what determines the cube: inputs, AOI, grid, period, ingest settings and the scenes found."""
    spec = job.model_dump(mode="json", include={"inputs", "aoi", "grid", "period", "ingest"})
    payload = json.dumps({"spec": spec, "scenes": scene_ids}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def ingest(job: JobSpec, overwrite: bool = False) -> IngestResult:
    """Build and write the monthly cube of ``job``; skip when an identical finished cube already exists."""
    started = time.perf_counter()
    scenes = discover_scenes(job)
    grid = job_grid(job, scenes)
    scenes = scenes_on_grid(scenes, grid, origin=str(job.aoi.file) if job.aoi and job.aoi.file else "AOI")
    out_dir = Path(job.output.dir)
    cube_path = out_dir / "cube" / CUBE_NAME
    run_path = out_dir / "run.json"
    digest = job_digest(job, [s.scene_id for s in scenes])

    cube = build_cube(scenes, grid, job.period, job.ingest, job.compute.block_size)
    cube.attrs["job_digest"] = digest
    n_months = cube.sizes["time"]
    if cube_path.exists() and _cube_digest(cube_path) == digest and run_path.exists():
        return IngestResult(cube_path, grid, len(scenes), n_months, 0.0, True, peak_rss_mb())
    if cube_path.exists() and not overwrite:
        raise ConfigError(
            f"{cube_path} exists and was made from a different job spec or inputs; "
            "use --overwrite to replace it or choose another output.dir"
        )
    workers = job.compute.workers or os.cpu_count() or 1
    with dask.config.set(scheduler="threads", num_workers=workers):
        write_cube(cube, cube_path)
    seconds = time.perf_counter() - started
    result = IngestResult(cube_path, grid, len(scenes), n_months, seconds, False, peak_rss_mb())
    write_json_atomic(
        run_path,
        {
            "digest": digest,
            "job": job.model_dump(mode="json"),
            "versions": software_versions(),
            "grid": grid.to_dict(),
            "inputs": [s.provenance() for s in scenes],
            "outputs": {"cube": str(cube_path.relative_to(out_dir))},
            "stats": {
                "seconds": round(seconds, 3),
                "megapixels_per_second": round(result.megapixels_per_second, 3),
                "peak_rss_mb": round(result.peak_rss_mb, 1),
                "workers": workers,
            },
        },
    )
    return result


def _cube_digest(path: Path) -> str | None:
    """The job digest stored in a finished cube (None when unreadable: then it is rebuilt)."""
    import xarray as xr

    try:
        with xr.open_dataset(path, engine="netcdf4") as existing:
            return existing.attrs.get("job_digest")
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunResult:
    ingest: IngestResult
    products: dict[str, list[Path]]
    report: Path | None
    seconds: float
    skipped: bool


def run(job: JobSpec, overwrite: bool = False) -> RunResult:
    """The whole job: cube, then each enabled product (map set + masking statistics), then the run report.

    Products are remade only when something that determines them changed (spec, inputs, model): a re-run of a
    finished job does nothing, and a run killed half-way redoes only what is missing.
    """
    from pipeline.atomic import write_json_atomic as write_json

    started = time.perf_counter()
    cube_result = ingest(job, overwrite=overwrite)
    out_dir = Path(job.output.dir)
    run_path = out_dir / "run.json"
    record = json.loads(run_path.read_text(encoding="utf-8"))
    products: dict[str, list[Path]] = {}
    maps, masking, metrics = [], {}, {}
    landcover = job.products.landcover
    product_digest = None
    if landcover.enabled:
        model_path = Path(landcover.model or DEFAULT_LANDCOVER_MODEL)
        product_digest = _digest(record["digest"], landcover.model_dump(mode="json"), _file_digest(model_path))
        previous = record.get("products", {}).get("landcover", {})
        files = [out_dir / f for f in previous.get("files", [])]
        if previous.get("digest") == product_digest and files and all(f.exists() for f in files):
            products["landcover"] = files
        else:
            map_set, mask_report, model_metrics, policy_report = _landcover(job, cube_result, model_path)
            products["landcover"] = map_set.files
            maps.append(map_set)
            masking[map_set.name] = mask_report
            metrics = {"landcover_model": model_metrics, "thresholds": policy_report}
            record.setdefault("products", {})["landcover"] = {
                "digest": product_digest,
                "files": [str(f.relative_to(out_dir)) for f in map_set.files],
                "model": str(model_path),
                "thresholds": policy_report,
                "masking": mask_report,
            }
    report = None
    skipped = not maps and cube_result.skipped
    if maps:
        from pipeline.report import write_run_report

        written = write_run_report(out_dir / "report", maps, masking, metrics, record.get("job", {}))
        report = written.get("html") or next(iter(written.values()))
        record["report"] = {k: str(Path(v).relative_to(out_dir)) for k, v in written.items()}
        record["stats"]["run_seconds"] = round(time.perf_counter() - started, 3)
        record["stats"]["peak_rss_mb"] = round(peak_rss_mb(), 1)
        write_json(run_path, record)
    return RunResult(cube_result, products, report, time.perf_counter() - started, skipped)


def _landcover(job: JobSpec, cube_result: IngestResult, model_path: Path) -> tuple[Any, dict, dict, dict]:
    """Posteriors -> certified confidence mask -> map set, for the land-cover product."""
    from models.artifact import load_artifact
    from pipeline.composite import cube_scenes, open_cube
    from pipeline.predict import predict_cube
    from pipeline.threshold import classify, masking_report, policy_for_model
    from pipeline.write import reasons_for, write_map_set

    spec = job.products.landcover
    artifact = load_artifact(model_path)
    cube = open_cube(cube_result.cube_path)
    prediction = predict_cube(
        artifact, cube, batch_size=job.compute.batch_size, device=job.compute.device, cube_name=cube_result.cube_path
    )
    policy, policy_report = policy_for_model(
        artifact.meta, spec.target_accuracy, spec.delta, spec.threshold, spec.score, spec.per_class,
        spec.min_clear_observations,
    )  # fmt: skip
    legend = artifact.legend
    reasons = reasons_for(legend)
    codes = np.asarray(legend.codes)
    classified = classify(prediction["posterior"], codes, policy, cube["n_clear"], reasons).compute()
    mask_report = masking_report(
        classified["code"].values, classified["predicted"].values, codes, list(legend.names), reasons
    )
    scenes = cube_scenes(cube)
    map_set = write_map_set(
        Path(job.output.dir) / "landcover",
        job.name,
        classified["code"].values,
        cube_result.grid,
        legend,
        (job.period.start, job.period.end),
        reasons=reasons,
        confidence=classified["confidence"].values,
        n_clear=cube["n_clear"].values,
        tags={
            "MODEL": model_path.name,
            "MODEL_SHA256": _file_digest(model_path),
            "THRESHOLDS": policy.to_dict(),
            "INPUT_PRODUCTS": [s["scene_id"] for s in scenes],
            "RADIOMETRY": sorted({json.dumps(s["radiometry"], sort_keys=True) for s in scenes}),
            "REASON_CODES": {
                "nodata": reasons.nodata,
                "too_few_observations": reasons.too_few_observations,
                "low_confidence": reasons.low_confidence,
            },
        },
        inputs=[s["source"] for s in scenes],
    )
    model_metrics = {k: v for k, v in artifact.meta.get("metrics", {}).items()}
    model_metrics["pixels_per_second"] = prediction.attrs.get("pixels_per_second")
    return map_set, mask_report, model_metrics, policy_report


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    from models.artifact import file_sha256

    return file_sha256(path)
