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

import dask

from pipeline import __version__
from pipeline.atomic import write_json_atomic
from pipeline.composite import build_cube, write_cube
from pipeline.errors import ConfigError
from pipeline.grid import Grid
from pipeline.ingest import discover_scenes, job_grid, scenes_on_grid
from pipeline.settings import JobSpec

CUBE_NAME = "cube.nc"


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
    """Fingerprint of what determines the cube: the resolved spec (not compute, output, name) and the scenes."""
    spec = job.model_dump(mode="json", exclude={"compute", "output", "name"})
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
