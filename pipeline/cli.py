"""The ``suelo`` command: thin click commands over the pipeline modules.

Errors a user can fix (bad input, bad spec) print one line naming the file and the problem and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline import __version__
from pipeline.errors import SueloError

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Turn :class:`SueloError` into a one-line message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SueloError as exc:
            click.echo(f"suelo: error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


job_argument = click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace outputs made from a different job.")
output_option = click.option(
    "--output", "-o", type=click.Path(file_okay=False, path_type=Path), help="Override output.dir of the job."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="suelo")
def main() -> None:
    """suelo: Sentinel-2 L2A -> monthly cube -> land-cover and urban-atlas maps."""


@main.command()
@job_argument
@reports_errors
def validate(job_file: Path) -> None:
    """Check a job spec and its inputs without processing anything."""
    from pipeline.ingest import discover_scenes, job_grid, scenes_on_grid
    from pipeline.settings import load_job

    job = load_job(job_file)
    scenes = discover_scenes(job)
    grid = job_grid(job, scenes)
    scenes = scenes_on_grid(scenes, grid)
    click.echo(f"{job_file}: valid")
    click.echo(f"  scenes on the grid: {len(scenes)} ({scenes[0].acquired:%Y-%m-%d} .. {scenes[-1].acquired:%Y-%m-%d})")
    click.echo(f"  grid: {grid.crs.to_string()} {grid.width} x {grid.height} px at {grid.resolution[0]:g} m")


@main.command()
@job_argument
@output_option
@overwrite_option
@click.option("--workers", type=click.IntRange(1, 1024), help="Threads for reading and compositing.")
@reports_errors
def ingest(job_file: Path, output: Path | None, overwrite: bool, workers: int | None) -> None:
    """Ingest the job's Sentinel-2 inputs into a cloud-masked monthly cube (NetCDF)."""
    from pipeline.jobs import ingest as run_ingest
    from pipeline.settings import load_job

    job = load_job(job_file)
    updates: dict[str, Any] = {}
    if output is not None:
        updates["output"] = job.output.model_copy(update={"dir": output})
    if workers is not None:
        updates["compute"] = job.compute.model_copy(update={"workers": workers})
    if updates:
        job = job.model_copy(update=updates)
    result = run_ingest(job, overwrite=overwrite)
    grid = result.grid
    if result.skipped:
        click.echo(f"{result.cube_path}: up to date (same job and inputs), nothing to do")
        return
    click.echo(f"wrote {result.cube_path}")
    click.echo(
        f"  {result.n_scenes} scenes -> {result.n_months} months on {grid.crs.to_string()} "
        f"{grid.width} x {grid.height} px; {result.seconds:.1f} s, "
        f"{result.megapixels_per_second:.2f} Mpx/s, peak RSS {result.peak_rss_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
