"""The ``suelo`` command: thin click commands over the pipeline modules.

Errors a user can fix (bad input, bad spec) print one line naming the file and the problem and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from suelo.errors import SueloError

if TYPE_CHECKING:
    from suelo.settings import JobSpec

F = TypeVar("F", bound=Callable[..., Any])


#: Environment failures a user can act on (free space, fix permissions) and then re-run to resume: exit 1.
_RESOURCE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def one_line(message: object) -> str:
    """``message`` on one line: embedded newlines (YAML, XML, GDAL messages carry them) become spaces."""
    return " ".join(str(message).split())


def _out_of_space(exc: BaseException) -> str | None:
    """A one-line description if ``exc`` (or what caused it) is a full disk/quota or read-only file system.

    Python raises OSError with an errno; GDAL (through rasterio) raises its own errors with the C library's text.
    """
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRORS:
            return f"{exc.strerror or exc}" + (f" writing {exc.filename}" if exc.filename else "")
        text = one_line(exc)
        if any(os.strerror(code) in text for code in _RESOURCE_ERRORS):
            return text
        exc, seen = exc.__cause__ or exc.__context__, seen + 1  # type: ignore[assignment]
    return None


def report_error(message: str, exit_code: int, json_log: bool, **fields: Any) -> None:
    """An error as the CLI reports it on stderr: ``suelo: error: MESSAGE`` or, with ``--log-format json``, one JSON
    line ``{"event": "error", "message": ..., "exit_code": ...}`` (with ``fields``, e.g. the failed blocks)."""
    if json_log:
        from suelo.orchestrate.progress import json_line

        click.echo(json_line("error", message=message, exit_code=exit_code, **fields), err=True)
    else:
        click.echo(f"suelo: error: {message}", err=True)


def reports_errors(command: F) -> F:
    """Turn :class:`SueloError` into a one-line message and exit status 2.

    A full disk (or quota, or read-only file system) is no user error but needs no traceback either: one line and
    exit status 1, like a failed block; outputs are atomic and verified before they are published (a write that
    does not read back is removed, suelo.atomic), so re-running after freeing space resumes. So is an output
    that failed that verification for another reason, or a block raster found damaged: one line, exit status 1.

    A command with ``--log-format json`` gets each of these as one JSON line (:func:`report_error`); a bug keeps
    its traceback, after a JSON line saying so.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        json_log = kwargs.get("log_format") == "json"
        try:
            return command(*args, **kwargs)
        except SueloError as exc:
            report_error(one_line(exc), 2, json_log)
            sys.exit(2)
        except Exception as exc:
            from suelo.atomic import DamagedOutputError, WriteVerificationError

            problem = _out_of_space(exc)
            if problem is not None:
                report_error(f"{problem}; nothing partial was published, free space and re-run to resume", 1, json_log)
                sys.exit(1)
            damaged: BaseException | None = exc
            for _ in range(10):  # a written file that did not verify, or a block raster found damaged, maybe wrapped
                if damaged is None or isinstance(damaged, DamagedOutputError):
                    break
                damaged = damaged.__cause__ or damaged.__context__
            if not isinstance(damaged, DamagedOutputError):
                if json_log:  # a bug: its traceback follows, for the report
                    report_error(f"internal error: {type(exc).__name__}: {one_line(exc)}", 1, json_log)
                raise
            verified = isinstance(damaged, WriteVerificationError)
            tail = "nothing partial was published, re-run to resume" if verified else "re-run to redo it"
            report_error(f"{one_line(damaged)}; {tail}", 1, json_log)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


job_argument = click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace outputs made from a different job.")
force_option = click.option(
    "--force", is_flag=True, help="Write into an output folder that holds files suelo did not write."
)
output_option = click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Override output.dir of the job; {period} in it becomes the period's months (2024-01_2024-12), {start} "
    "and {end} its dates, so each scheduled period gets its own folder.",
)
period_option = click.option(
    "--period",
    metavar="PERIOD",
    help="Override the job's period: START:END (2024-01-01:2024-12-31), last-N-months (the N complete months "
    "before today) or previous-year; today is $SUELO_TODAY (YYYY-MM-DD) if set.",
)
log_format_option = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="json: one JSON object per event and per error on stderr, for schedulers.",
)  # fmt: skip

#: ``{name}`` in ``--output``: the period of the run (``PeriodSpec.label``) and its first and last day.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]*)\}")


def load_job_with(job_file: Path, period: str | None) -> JobSpec:
    """The job spec of ``job_file``, its period replaced by a ``--period`` value (checked first: a bad value is
    one error naming the option)."""
    from suelo.settings import PeriodSpec, load_job

    overrides = None if period is None else {"period": PeriodSpec.from_option(period)}
    return load_job(job_file, overrides)


def output_dir(output: Path, job: JobSpec) -> Path:
    """``--output`` with its placeholders filled from the job's resolved period: ``{period}`` (``2024-01_2024-12``),
    ``{start}`` and ``{end}`` (ISO dates). Any other ``{name}`` is an error rather than a folder of that name."""
    from suelo.errors import ConfigError

    period = job.period
    values = {"period": period.label, "start": period.start.isoformat(), "end": period.end.isoformat()}

    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise ConfigError(f"--output {output}: unknown {match.group(0)}; use {{period}}, {{start}} or {{end}}")
        return values[match.group(1)]

    return Path(_PLACEHOLDER.sub(fill, str(output)))


def _print_versions(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from suelo.provenance import version_lines

    for line in version_lines():
        click.echo(line)
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_versions,
    help="Show the versions of suelo, Python, torch (and CUDA), GDAL, PROJ, rasterio, numpy and the CPU kernels.",
)
def main() -> None:
    """suelo: Sentinel-2 L2A -> monthly cube -> land-cover and urban-atlas maps."""


@main.command()
@job_argument
@period_option
@log_format_option
@reports_errors
def validate(job_file: Path, period: str | None, log_format: str) -> None:
    """Check a job spec and its inputs without processing anything."""
    from suelo.ingest import (
        check_band_headers,
        check_remote_access,
        discover_scenes,
        job_grid,
        scenes_in_period,
        scenes_on_grid,
    )

    job = load_job_with(job_file, period)
    scenes = discover_scenes(job)  # also checks every href and input path against the job's access rules
    grid = job_grid(job, scenes)
    scenes = scenes_in_period(scenes_on_grid(scenes, grid), job.period)
    check_band_headers(scenes, job.ingest.bands)  # every local band file opens (a corrupt JP2 is found now)
    check_remote_access(scenes)
    # the models, their certificates and novelty gates are checked as a run would, before any work; a job that
    # makes no map (`suelo ingest` only, e.g. to train a model on its cube) has none to check
    from suelo.jobs import discover_auxiliary
    from suelo.orchestrate import make_plan
    from suelo.products import enabled_products

    auxiliary = discover_auxiliary(job, grid)  # radar, DEM and weather files are read and checked now too
    plan = make_plan(job, grid, scenes, "", auxiliary=auxiliary) if enabled_products(job) else None
    click.echo(f"{job_file}: valid")
    click.echo(
        f"  scenes on the grid in the period: {len(scenes)} "
        f"({scenes[0].acquired:%Y-%m-%d} .. {scenes[-1].acquired:%Y-%m-%d})"
    )
    from suelo.grid import crs_units

    units = crs_units(grid.crs)
    left, bottom, right, top = grid.bounds
    click.echo(
        f"  grid: {grid.crs.to_string()} {grid.width} x {grid.height} px at {grid.resolution[0]:g} {units}, "
        f"bounds {left:.10g} {bottom:.10g} {right:.10g} {top:.10g}"
    )
    levels = sorted({s.level for s in scenes})
    click.echo(f"  period: {job.period.describe()}; scene levels: {', '.join(levels)}")
    if auxiliary.present:
        sources = auxiliary.provenance()
        click.echo(
            f"  other inputs: {', '.join(auxiliary.inputs[1:])} (Sentinel-1 acquisitions in the period: "
            f"{len(sources['s1'])}; DEM files: {len(sources['terrain'])}; weather files: {len(sources['weather'])})"
        )
    if plan is None:
        click.echo("  products: none enabled (a cube only: suelo ingest; suelo run needs a product)")
        return
    for product in plan.products:
        choice = product.policy_report.get("global")
        rule = (
            f"certified accuracy {choice['target_accuracy']:g} at {choice['coverage']:.1%} of its "
            f"{choice['n_validation']} calibration points"
            if choice
            else f"fixed threshold {product.policy.threshold:g}"
        )
        gate = product.novelty
        click.echo(
            f"  {product.name}: {product.model_path.name}, {rule}; novelty gate rejects "
            f"{gate.get('rejection_rate', float('nan')):.0%} of data like its training data"
        )
        for caveat in product.caveats:
            click.echo(f"  warning: {caveat}")


@main.command()
@job_argument
@output_option
@overwrite_option
@force_option
@click.option("--device", help="torch device (default: cuda if available, else cpu).")
@click.option("--workers", type=click.IntRange(1, 1024), help="Local Dask worker processes.")
@click.option("--scheduler", help="'local' (default), 'synchronous' (this process) or a Dask scheduler address.")
@period_option
@log_format_option
@reports_errors
def run(
    job_file: Path,
    output: Path | None,
    overwrite: bool,
    force: bool,
    device: str | None,
    workers: int | None,
    scheduler: str | None,
    period: str | None,
    log_format: str,
) -> None:
    """Run a whole job: monthly cube, maps with confidence masking, styles, STAC items and report.

    Exit status: 0 when every block and product is done, 1 when a block failed after its retries (the others are
    kept: re-run to resume), 2 on a user error.
    """
    from suelo.jobs import run as run_job

    job = load_job_with(job_file, period)
    compute = {k: v for k, v in {"device": device, "workers": workers, "scheduler": scheduler}.items() if v}
    updates: dict[str, Any] = {}
    if output is not None:
        updates["output"] = job.output.model_copy(update={"dir": output_dir(output, job)})
    if compute:
        updates["compute"] = job.compute.model_validate(job.compute.model_dump() | compute)
    if updates:
        job = job.model_copy(update=updates)
    result = run_job(job, overwrite=overwrite, log_format=log_format, force=force)
    if result.failures:
        failed = f"{len(result.failures)} block(s) failed; finished blocks are kept, re-run to resume"
        if log_format == "json":
            report_error(failed, 1, True, failed=[
                {"block": f.block, "error": one_line(f.error), "attempts": f.attempts} for f in result.failures
            ])  # fmt: skip
            sys.exit(1)
        click.echo(f"suelo: {failed}:", err=True)
        for failure in result.failures:
            click.echo(f"  {failure.block}: {one_line(failure.error)} (after {failure.attempts} attempts)", err=True)
        sys.exit(1)
    if result.skipped:
        click.echo(f"{job.output.dir}: up to date (same job, inputs and models), nothing to do")
        return
    for product, files in result.products.items():
        click.echo(f"{product}: {len(files)} files in {files[0].parent}")
        for path in files:
            click.echo(f"  {path.name} ({path.stat().st_size / 1024:.0f} KiB)")
    if result.report is not None:
        click.echo(f"report: {result.report}")
    blocks = result.stats
    click.echo(
        f"done in {result.seconds:.1f} s ({blocks.get('blocks_run', 0)} of {blocks.get('blocks', 0)} blocks run)"
    )


@main.command()
@job_argument
@output_option
@overwrite_option
@force_option
@click.option("--workers", type=click.IntRange(1, 1024), help="Threads for reading and compositing.")
@period_option
@log_format_option
@reports_errors
def ingest(
    job_file: Path,
    output: Path | None,
    overwrite: bool,
    force: bool,
    workers: int | None,
    period: str | None,
    log_format: str,
) -> None:
    """Ingest the job's Sentinel-2 inputs into a cloud-masked monthly cube (NetCDF)."""
    from suelo.jobs import ingest as run_ingest

    job = load_job_with(job_file, period)
    updates: dict[str, Any] = {}
    if output is not None:
        updates["output"] = job.output.model_copy(update={"dir": output_dir(output, job)})
    if workers is not None:
        updates["compute"] = job.compute.model_copy(update={"workers": workers})
    if updates:
        job = job.model_copy(update=updates)
    result = run_ingest(job, overwrite=overwrite, force=force)
    grid = result.grid
    if log_format == "json":
        from suelo.orchestrate.progress import json_line

        fields = {"cube": str(result.cube_path), "period": {"start": job.period.start.isoformat(),
                  "end": job.period.end.isoformat(), "months": job.period.months}}  # fmt: skip
        if result.skipped:
            event = json_line("up_to_date", **fields, message="up to date (same job and inputs), nothing to do")
        else:
            event = json_line("ingest_done", **fields, scenes=result.n_scenes, seconds=round(result.seconds, 2))
        click.echo(event, err=True)
    if result.skipped:
        click.echo(f"{result.cube_path}: up to date (same job and inputs), nothing to do")
        return
    click.echo(f"wrote {result.cube_path}")
    click.echo(
        f"  {result.n_scenes} scenes -> {result.n_months} months on {grid.crs.to_string()} "
        f"{grid.width} x {grid.height} px; {result.seconds:.1f} s, "
        f"{result.megapixels_per_second:.2f} Mpx/s, peak RSS {result.peak_rss_mb:.0f} MB"
    )


# land-cover model -------------------------------------------------------------------------------------------------

samples_argument = click.argument(
    "samples", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
cube_option = click.option(
    "--cube", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Cube to sample labels from."
)
class_column_option = click.option("--class-column", help="Class column of point/polygon labels.")
legend_option = click.option(
    "--legend", "legend_path", type=click.Path(dir_okay=False, path_type=Path), help="Legend YAML/JSON."
)


def _load_training_samples(
    samples: tuple[Path, ...], legend_path: Path | None, cube: Path | None, class_column: str | None
) -> Any:
    from suelo.legend import load_legend
    from suelo.samples import load_samples

    legend = load_legend(legend_path) if legend_path else load_legend()
    cube_ds = None
    if cube is not None:
        from suelo.composite import open_cube

        cube_ds = open_cube(cube)
    return legend, load_samples(samples, legend, cube=cube_ds, class_column=class_column)


@main.command()
@samples_argument
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Model file.")
@legend_option
@cube_option
@class_column_option
@click.option("--finetune", is_flag=True, help="Train encoder and head end to end (slower).")
@click.option("--inputs", "inputs_text", default="s2", show_default=True,
              help="Encoder inputs, comma-separated: s2 and any of s1 (Sentinel-1 VV/VH), terrain (elevation, slope), "
              "weather (temperature, precipitation), read from the samples (WorldCereal extractions carry them); "
              "a job then needs them too (or products.landcover.mask_missing_inputs).")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--block-m", default="auto", show_default=True, type=str,
              help="Spatial block size of the splits in m, or auto: from the samples' extent (at most 10 km) so the "
              "calibration and test fractions come out as asked.")  # fmt: skip
@click.option("--max-per-polygon", default=50, show_default=True, type=click.IntRange(0),
              help="Training pixels kept per polygon (seeded random choice; 0: all); points are never thinned.",
              )  # fmt: skip
@click.option("--max-per-class", default=20_000, show_default=True, type=click.IntRange(0),
              help="Training samples kept per class, spread over its polygons (0: all).")  # fmt: skip
@click.option("--max-epochs", default=200, show_default=True, type=click.IntRange(1), help="Upper limit of epochs.")
@click.option("--patience", default=10, show_default=True, type=click.IntRange(0),
              help="Early stopping: epochs without a better loss on the stopping split (whole blocks of the train "
              "split) before the best epoch is restored; 0: a fixed --max-epochs.")  # fmt: skip
@click.option("--time-budget", "time_budget", type=click.FloatRange(0, min_open=True),
              help="Seconds for training (embedding included): epochs stop when the next would end later.")  # fmt: skip
@click.option(
    "--val-fraction",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Calibration split: temperature, novelty-gate and confidence thresholds are fitted on it.",
)
@click.option(
    "--test-fraction",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Also hold out this share of the samples (whole spatial blocks) as an untouched test split.",
)
@click.option(
    "--model",
    "model_kind",
    type=click.Choice(["landcover", "segmenter"]),
    default="landcover",
    show_default=True,
    help="segmenter: the urban-atlas U-Net from ONE polygon file or label raster.",
)
@click.option("--steps", default=300, show_default=True, type=click.IntRange(1), help="Segmenter: training steps.")
@click.option("--chip", default=64, show_default=True, type=click.IntRange(4), help="Segmenter: chip size (px).")
@click.option("--depth", default=3, show_default=True, type=click.IntRange(0, 6), help="Segmenter: U-Net levels.")
@click.option("--base-width", default=16, show_default=True, type=click.IntRange(1), help="Segmenter: channels.")
@click.option(
    "--block",
    "block_px",
    type=click.IntRange(1),
    help="Segmenter: validation block size in px (default: the chip size).",
)
@click.option("--guard", default=8, show_default=True, type=click.IntRange(0),
              help="Segmenter: px around validation blocks left out of training.")  # fmt: skip
@reports_errors
def train(
    samples: tuple[Path, ...],
    output: Path,
    legend_path: Path | None,
    cube: Path | None,
    class_column: str | None,
    finetune: bool,
    inputs_text: str,
    seed: int,
    block_m: str,
    max_per_polygon: int,
    max_per_class: int,
    max_epochs: int,
    patience: int,
    time_budget: float | None,
    val_fraction: float,
    test_fraction: float,
    model_kind: str,
    steps: int,
    chip: int,
    depth: int,
    base_width: int,
    block_px: int | None,
    guard: int,
) -> None:
    """Train a land-cover model (Presto + MLP head) on labelled samples and write the model artifact.

    With --model segmenter: train the U-Net segmenter (cube summaries + Presto embeddings) on ONE polygon file
    (--class-column, default code_2018) or label raster over --cube, calibrate it on its spatially held-out
    validation blocks and write the model and a <stem>_report/ folder (default legend: Urban Atlas 2018).
    """
    if model_kind == "segmenter":
        from suelo.errors import ConfigError
        from suelo.train_segmenter import SegmenterTrainConfig, train_segmenter_from_files

        if len(samples) != 1 or cube is None:
            raise ConfigError("--model segmenter takes one label file (polygons or a label raster) and --cube")
        segmenter_config = SegmenterTrainConfig(
            chip=chip, steps=steps, depth=depth, base_width=base_width, block=block_px or chip, guard=guard,
            val_fraction=val_fraction, eval_every=max(1, min(50, steps // 5)),
        )  # fmt: skip
        from suelo.train_progress import StderrProgress

        log = functools.partial(click.echo, err=True)
        train_segmenter_from_files(samples[0], cube, output, legend_path, class_column or "code_2018",
                                   segmenter_config, seed, log=log, progress=StderrProgress())  # fmt: skip
        return
    from suelo.errors import ConfigError
    from suelo.evaluate import dropped_line
    from suelo.models.artifact import save_artifact
    from suelo.train import TrainConfig, train_model, write_training_figures
    from suelo.train_progress import StderrProgress

    try:
        block: float | str = "auto" if block_m.strip().lower() == "auto" else float(block_m)
    except ValueError:
        raise ConfigError(f"--block-m must be a size in metres or auto, got {block_m!r}") from None
    inputs = tuple(i.strip().lower() for i in inputs_text.split(",") if i.strip())
    config = TrainConfig(
        inputs=inputs, finetune=finetune, seed=seed, block_m=block, val_fraction=val_fraction,
        test_fraction=test_fraction, max_per_polygon=max_per_polygon or None, max_per_class=max_per_class or None,
        max_epochs=max_epochs, patience=patience, early_stopping=patience > 0, time_budget_s=time_budget,
    )  # fmt: skip
    config.check()  # before the samples are read: a bad option costs no loading time
    legend, data = _load_training_samples(samples, legend_path, cube, class_column)
    click.echo(dropped_line(data.dropped))  # what the loaders left out, per reason (too-rare classes: below)
    result = train_model(
        data, legend, config, sources=[str(s) for s in samples], log=click.echo, progress=StderrProgress()
    )
    save_artifact(result.artifact, output)
    report = write_training_figures(result, output.with_name(f"{output.stem}_report"))
    click.echo(
        f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB) and its training report ({len(report)} files) in "
        f"{report[0].parent}"
    )


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@samples_argument
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@cube_option
@class_column_option
@legend_option
@click.option(
    "--split",
    "split_mode",
    type=click.Choice(["stored", "resplit", "all"]),
    default="stored",
    show_default=True,
    help="stored: the held-out sample ids stored in the model; resplit: redo the split with its recorded settings; "
    "all: every given sample.",
)
@click.option(
    "--target-accuracy",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Also give coverage and accuracy at the threshold certified for this target.",
)
@click.option("--device", help="torch device (default: cpu).")
@reports_errors
def evaluate(
    model: Path,
    samples: tuple[Path, ...],
    output: Path,
    cube: Path | None,
    class_column: str | None,
    legend_path: Path | None,
    split_mode: str,
    target_accuracy: float | None,
    device: str | None,
) -> None:
    """Score MODEL on its held-out samples among SAMPLES, as a map would use it, next to a RandomForest trained on
    the model's training samples. Writes metrics.json, confusion-matrix PNGs and dropped_samples.csv (every sample
    left out, with the reason)."""
    from suelo.evaluate import evaluate_model, report_lines, samples_legend, write_report
    from suelo.models.artifact import load_artifact
    from suelo.samples import load_samples

    artifact = load_artifact(model)
    legend = samples_legend(artifact.legend, legend_path)
    cube_ds = None
    if cube is not None:
        from suelo.composite import open_cube

        cube_ds = open_cube(cube)
    data = load_samples(samples, legend, cube=cube_ds, class_column=class_column)
    report = evaluate_model(artifact, data, device, split_mode, target_accuracy, legend)
    written = write_report(report, output)
    for line in report_lines(report):
        click.echo(line)
    for warning in report["warnings"]:
        click.echo(f"suelo: warning: {warning}", err=True)
    click.echo(f"wrote {', '.join(p.name for p in written)} in {output}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("cube", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="NetCDF file.")
@click.option("--device", help="torch device (default: cuda if available, else cpu).")
@click.option(
    "--apply-masking",
    is_flag=True,
    help="Also make the map `suelo run` makes: class_map in the NetCDF and <output stem>_classes.tif (+ .qml).",
)
@click.option(
    "--target-accuracy",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="With --apply-masking: certify this accuracy of the mapped pixels (default: the model's own target).",
)
@click.option(
    "--threshold", type=click.FloatRange(0, 1), help="With --apply-masking: a fixed confidence threshold instead."
)
@click.option(
    "--delta",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="With --apply-masking: risk that the certified accuracy does not hold (default as in a job spec).",
)
@click.option(
    "--min-clear-observations",
    type=click.IntRange(0, 10000),
    help="With --apply-masking: fewer clear observations get the too-few-observations code (default as in a job).",
)
@reports_errors
def predict(
    model: Path,
    cube: Path,
    output: Path,
    device: str | None,
    apply_masking: bool,
    target_accuracy: float | None,
    threshold: float | None,
    delta: float | None,
    min_clear_observations: int | None,
) -> None:
    """Apply MODEL to CUBE: calibrated class posteriors, the novelty gate's score and verdict, and class codes
    (the "outside the training data" code where the gate rejects a pixel) as NetCDF. With --apply-masking also the
    land-cover map exactly as `suelo run` makes it (novelty gate, certified confidence threshold, too few clear
    observations, nodata), in the NetCDF and as a styled COG beside it."""
    import numpy as np

    from suelo.composite import open_cube
    from suelo.errors import ConfigError
    from suelo.models.artifact import load_artifact
    from suelo.predict import predict_cube, write_prediction

    masking_options = {
        "--target-accuracy": target_accuracy, "--threshold": threshold, "--delta": delta,
        "--min-clear-observations": min_clear_observations,
    }  # fmt: skip
    given = [name for name, value in masking_options.items() if value is not None]
    if given and not apply_masking:
        raise ConfigError(f"{', '.join(given)} only apply with --apply-masking")
    if target_accuracy is not None and threshold is not None:
        raise ConfigError("give --target-accuracy or --threshold, not both")
    artifact = load_artifact(model)
    cube_ds = open_cube(cube)
    policy = report = None
    if apply_masking:  # the policy first: an uncertifiable target stops before any work, as in a run
        from suelo.settings import ConfidenceSpec
        from suelo.threshold import certification_problem, policy_for_model

        defaults = ConfidenceSpec()
        delta = defaults.delta if delta is None else delta
        min_clear = defaults.min_clear_observations if min_clear_observations is None else min_clear_observations
        try:
            policy, report = policy_for_model(artifact.meta, target_accuracy, delta, threshold, None, False, min_clear)
        except ValueError as exc:
            raise ConfigError(f"{model}: {exc}") from exc
        problem = certification_problem(artifact.meta, report, delta)
        if problem:
            raise ConfigError(f"{model}: {problem}; give a certifiable --target-accuracy or a --threshold")
    prediction = predict_cube(artifact, cube_ds, device=device, cube_name=cube)
    written = []
    if policy is not None:
        from suelo.predict import apply_masking as mask  # the flag has the function's name
        from suelo.predict import cube_clear_observations, write_class_map_cog

        try:
            prediction = mask(prediction, artifact.legend, policy, cube_clear_observations(cube_ds))
        except ValueError as exc:
            raise ConfigError(f"{cube}: {exc}") from exc
        written = write_class_map_cog(
            prediction, cube_ds, artifact, output.with_name(f"{output.stem}_classes.tif"), report
        )
    write_prediction(prediction, output)
    imaged = int(np.isfinite(prediction["novelty_score"].values).sum())
    outside = int(prediction["outside_training"].values.sum())
    share = f"{outside / imaged:.1%}" if imaged else "n/a"
    click.echo(
        f"wrote {output} ({prediction.attrs['pixels_per_second']:.0f} px/s); outside the model's training data: "
        f"{outside} of {imaged} imaged pixels ({share})"
    )
    if policy is not None:
        if report is None:  # policy_for_model returns both: a policy without its report is a bug
            raise RuntimeError("the masking policy came without its report")
        codes = prediction["class_map"].values
        mapped = int(np.isin(codes, artifact.legend.codes).sum())
        rule = f"{policy.score} >= {policy.threshold:.3f}, {report.get('source', '')}"
        click.echo(
            f"wrote {', '.join(p.name for p in written)}: {mapped} of {imaged} imaged pixels mapped "
            f"({mapped / imaged:.1%})"
            if imaged
            else f"wrote {', '.join(p.name for p in written)}: nothing imaged"
        )
        click.echo(f"  confidence threshold: {rule}; min clear observations {policy.min_clear_observations}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option(
    "--cube",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Samples: cube to sample point/polygon labels or a label raster from (as for suelo evaluate).",
)
@class_column_option
@legend_option
@click.option(
    "--split",
    "split_mode",
    type=click.Choice(["stored", "all"]),
    default="stored",
    show_default=True,
    help="Samples: stored: the model's calibration (validation) sample ids among them; all: every given sample.",
)
@click.option("--steps", default=32, show_default=True, type=click.IntRange(1, 1024),
              help="Integrated-gradient path steps (Gauss-Legendre; benchmarks/EXPLAIN.md).")  # fmt: skip
@click.option("--max-pixels", type=click.IntRange(1),
              help="Cube: explain a seeded random sample of this many pixels for the region summary, without the "
              "per-pixel month raster (which needs every pixel).")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int, help="Cube: seed of the --max-pixels sample.")
@click.option("--device", default="cpu", show_default=True, help="torch device.")
@reports_errors
def explain(
    model: Path,
    inputs: tuple[Path, ...],
    output: Path,
    cube: Path | None,
    class_column: str | None,
    legend_path: Path | None,
    split_mode: str,
    steps: int,
    max_pixels: int | None,
    seed: int,
    device: str,
) -> None:
    """Attribute MODEL's class logits to Presto's input tokens (month x band group, terrain, lat/lon) by integrated
    gradients. INPUTS: one monthly cube (.nc, as suelo ingest writes it): each pixel's predicted class is explained,
    with a per-pixel raster of the most influential month and a region summary per class; or sample files (as
    suelo evaluate takes them): each sample's reference class is explained, averaged per class over the model's
    validation samples among them. Writes attribution.json, per-class heatmap PNGs and heatmaps.png/.svg."""
    from suelo import explain as attribution
    from suelo.errors import ConfigError
    from suelo.models.artifact import load_artifact

    kind = attribution.input_kind(list(inputs))
    artifact = load_artifact(model)
    if kind == "cube":
        given = [name for name, value in (("--cube", cube), ("--class-column", class_column),
                 ("--legend", legend_path)) if value is not None]  # fmt: skip
        if given or split_mode != "stored":
            raise ConfigError(f"{', '.join(given) or '--split'} only apply to samples, not to a cube")
        from suelo.composite import open_cube

        explained = attribution.explain_cube(
            artifact, open_cube(inputs[0]), inputs[0], steps=steps, max_pixels=max_pixels, seed=seed, device=device
        )
        summary, month_index, grid = explained.summary, explained.month_index, explained.grid
    else:
        if max_pixels is not None:
            raise ConfigError("--max-pixels only applies to a cube")
        from suelo.evaluate import samples_legend
        from suelo.samples import load_samples

        legend = samples_legend(artifact.legend, legend_path)
        cube_ds = None
        if cube is not None:
            from suelo.composite import open_cube

            cube_ds = open_cube(cube)
        data = load_samples(inputs, legend, cube=cube_ds, class_column=class_column)
        summary, _result = attribution.explain_samples(artifact, data, split_mode, steps=steps, device=device)
        month_index, grid = None, None
        if summary["samples"].get("warning"):
            click.echo(f"suelo: warning: {summary['samples']['warning']}", err=True)
    written = attribution.write_explanation(summary, output, month_index, grid)
    for path in written:
        click.echo(f"wrote {path}")
    if kind == "cube" and month_index is None:
        click.echo(f"no most-influential-month raster: {max_pixels} sampled pixels were explained (--max-pixels)")
    click.echo(attribution.completeness_line(summary))


@main.group()
def assess() -> None:
    """Accuracy and area assessment from a probability sample: draw the sample, then analyse it once labelled."""


@assess.command("design")
@click.argument("map_file", metavar="MAP", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The sample, a GeoPackage (.gpkg); its .csv and .qml are written beside it.",
)
@click.option("--n", "n", type=click.IntRange(1), help="Points in all (default: from --target-se).")
@click.option(
    "--target-se",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Standard error of overall accuracy to aim for (default 0.01), giving the sample size.",
)
@click.option(
    "--expected-accuracy",
    "expected_text",
    help="Anticipated user's accuracy for the sample size: one value for every class (0.85) or "
    "CODE=U pairs (1=0.7,2=0.6). Default 0.8 for classes, 0.5 for reason strata.",
)
@click.option(
    "--min-per-stratum",
    default=50,
    show_default=True,
    type=click.IntRange(0),
    help="At least this many points per stratum (all its pixels when it has fewer).",
)
@click.option(
    "--allocation",
    type=click.Choice(["proportional", "equal", "optimal"]),
    default="proportional",
    show_default=True,
    help="How points are shared among strata (optimal: Neyman, for overall accuracy).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random draw.")
@reports_errors
def assess_design(
    map_file: Path,
    output: Path,
    n: int | None,
    target_se: float | None,
    expected_text: str | None,
    min_per_stratum: int,
    allocation: str,
    seed: int,
) -> None:
    """A stratified random sample of MAP's pixels: one stratum per class and per reason code, written as a
    GeoPackage (map CRS, lon/lat columns, stratum, map value, inclusion weight, an empty reference column, styled
    for labelling in QGIS) and a CSV beside it."""
    from suelo.assess.design import design_sample, parse_expected
    from suelo.assess.maps import read_class_map
    from suelo.errors import ConfigError

    if output.suffix.lower() != ".gpkg":
        raise ConfigError(f"{output}: the sample is written as a GeoPackage; name it .gpkg")
    values = read_class_map(map_file)
    design = design_sample(
        values, output, n, target_se, min_per_stratum, allocation,  # type: ignore[arg-type]
        seed, parse_expected(expected_text),
    )  # fmt: skip
    click.echo(f"{design.n} points ({design.how}); per stratum:")
    for code, pixels, k in zip(design.strata, design.pixels, design.sample_sizes, strict=True):
        click.echo(f"  {code:>5} {values.entry(code).name}: {k} of {pixels} pixels")
    click.echo("wrote " + ", ".join(str(f) for f in design.files))


@assess.command("analyze")
@click.argument("map_file", metavar="MAP", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("sample", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--reference-column", default="reference", show_default=True, help="Column of the reference labels.")
@click.option(
    "--strata",
    "strata_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Raster of the strata the sample was drawn from, on MAP's grid (Stehman 2014).",
)
@click.option(
    "--legend",
    "legend_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Legend whose classes reference labels may also name (e.g. classes the map does not have).",
)
@click.option("--fpc", is_flag=True, help="Apply the finite population correction (Olofsson et al. omit it).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder.")
@reports_errors
def assess_analyze(
    map_file: Path,
    sample: Path,
    reference_column: str,
    strata_file: Path | None,
    legend_file: Path | None,
    fpc: bool,
    output: Path,
) -> None:
    """Stratified estimates from a labelled SAMPLE of MAP: error matrix in proportions of area, overall, user's
    and producer's accuracies and class areas (ha and share), each with its standard error and 95% interval;
    assessment.json, assessment.csv, error_matrix.csv and assessment.html in the output folder."""
    from suelo.assess.analyze import assess, summary_lines, write_assessment
    from suelo.legend import load_legend

    legend = load_legend(legend_file) if legend_file is not None else None
    assessment, dropped = assess(map_file, sample, reference_column, strata_file, legend, fpc)
    files = write_assessment(output, assessment, dropped)
    for line in assessment["warnings"]:
        click.echo(f"warning: {line}", err=True)
    for line in summary_lines(assessment):
        click.echo(line)
    click.echo("wrote " + ", ".join(str(f) for f in files))


@main.command()
@job_argument
@output_option
@force_option
@click.option("--device", help="torch device the run will use (default: cuda if available, else cpu).")
@click.option(
    "--workers",
    "workers_text",
    metavar="N[,N...]",
    help="Also predict for these worker counts (the job's own and 1 are always shown).",
)
@click.option(
    "--calibration-blocks", default=3, show_default=True, type=click.IntRange(1, 64),
    help="How many of the job's blocks the timed calibration runs.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON instead of a table.")
@period_option
@reports_errors
def estimate(
    job_file: Path,
    output: Path | None,
    force: bool,
    device: str | None,
    workers_text: str | None,
    calibration_blocks: int,
    as_json: bool,
    period: str | None,
) -> None:
    """Predict what JOB_FILE's run will cost: its blocks, pixels, months and inputs, and its time and energy on this
    machine (timed on a few of its own blocks) and on N workers. Writes estimate.json in the job's output folder:
    the run's report then shows the prediction beside what the run measured."""
    import json

    from suelo.atomic import write_json_atomic
    from suelo.cost import ESTIMATE_FILE
    from suelo.errors import ConfigError
    from suelo.estimate import estimate_job, estimate_table
    from suelo.outdir import claimed_output

    job = load_job_with(job_file, period)
    updates: dict[str, Any] = {}
    if output is not None:
        updates["output"] = job.output.model_copy(update={"dir": output_dir(output, job)})
    if device:
        updates["compute"] = job.compute.model_validate(job.compute.model_dump() | {"device": device})
    if updates:
        job = job.model_copy(update=updates)
    try:
        extra = [int(n) for n in workers_text.split(",")] if workers_text else []
    except ValueError:
        raise ConfigError(f"--workers {workers_text}: give worker counts as N or N,N,...") from None
    if any(n < 1 for n in extra):
        raise ConfigError(f"--workers {workers_text}: worker counts must be at least 1")
    out_dir = Path(job.output.dir)
    with claimed_output(out_dir, force):  # the folder the run will use: refused here as the run would refuse it
        result = estimate_job(job, extra, calibration_blocks, log=lambda line: click.echo(line, err=True))
        write_json_atomic(out_dir / ESTIMATE_FILE, result)
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        for line in estimate_table(result):
            click.echo(line)
    click.echo(f"wrote {out_dir / ESTIMATE_FILE}", err=True)


if __name__ == "__main__":
    main()
