"""Orchestrate a whole job as independent blocks, resumably, in this process or on Dask.

The output grid is cut into blocks of ``compute.block_size`` pixels. Each block is one task, start to finish:

    scenes -> composite -> Presto embeddings -> land-cover head | U-Net segmenter -> calibrated posteriors
           -> certified confidence mask -> block rasters (written atomically) -> manifest line

Tasks run in this process (``compute.scheduler: synchronous``, or when only one block is left), on a local Dask
cluster (the default: ``LocalCluster`` of ``compute.workers`` processes) or on an existing scheduler (its address).
A worker loads each model once and keeps it for all its blocks. Memory per worker depends on the block size and the
scenes of one month, never on the region size.

``<out>/manifest.jsonl`` gets one line per finished block with the checksums of its files, appended and fsynced by
the driver only. A re-run (after a crash, ``kill -9`` or a failed block) skips every block whose line and files
check out, and redoes the rest; final maps are assembled from the block rasters only once every block is done, so
they are identical however often the run was interrupted. A block that still fails after ``compute.retries``
retries is reported and the run exits non-zero, never silently dropped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import re
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import suelo.models
from suelo.atomic import atomic_output, file_sha256, write_json_atomic
from suelo.errors import ConfigError, InputError, SueloError
from suelo.grid import Grid, Tile, carry_grid
from suelo.ingest.scene import Scene
from suelo.legend import Legend
from suelo.reasons import ReasonCodes
from suelo.settings import JobSpec
from suelo.threshold import ThresholdPolicy

# Above this share of the imaged pixels rejected by a model's novelty gate (4x the 5% the gate rejects of data like
# the training data), the run report and run.json warn that the model's certified accuracy does not transfer here.
NOVELTY_WARNING_PCT = 20.0

MANIFEST = "manifest.jsonl"
BLOCKS = "blocks"
CACHE = "cache"
MANIFEST_VERSION = 1
MODELS = Path(suelo.models.__file__).resolve().parent  # the shipped models, in a checkout and a wheel alike
DEFAULT_MODELS = {
    "landcover": MODELS / "landcover_default.pt",
    "urban_atlas": MODELS / "segmenter_default.pt",
}


# -- the plan: everything a worker needs, decided once by the driver ----------------------------------------------


@dataclass(frozen=True)
class Block:
    """Rows ``[row, row + height)`` and columns ``[col, col + width)`` of the job grid."""

    row: int
    col: int
    height: int
    width: int

    @property
    def block_id(self) -> str:
        return f"r{self.row:06d}_c{self.col:06d}"

    def tile(self, grid: Grid, halo: int = 0) -> Tile:
        """The block on the job grid, with ``halo`` pixels of context around it (clipped to the grid)."""
        return grid.tile(self.row, self.row + self.height, self.col, self.col + self.width, halo)


@dataclass(frozen=True)
class ProductPlan:
    name: str  # "landcover" | "urban_atlas"
    model_path: Path
    model_sha256: str
    legend: Legend
    reasons: ReasonCodes
    dtype: str
    policy: ThresholdPolicy
    policy_report: dict[str, Any]
    metrics: dict[str, Any]
    novelty: dict[str, Any] = field(default_factory=dict)  # the model's novelty gate (suelo.novelty meta)
    caveats: tuple[str, ...] = ()  # what the report must say first about this product (e.g. fewer months)


@dataclass(frozen=True)
class RunPlan:
    job: JobSpec
    grid: Grid
    scenes: tuple[Scene, ...]
    products: tuple[ProductPlan, ...]
    halo: int  # extra pixels around a block for the segmenter's spatial context
    digest: str
    cube_digest: str = ""  # what the composites depend on (inputs, grid, period, ingest): keys the composite cache
    run_token: str | None = None  # names this run's temporaries in every worker (suelo.outdir); not in the digest

    def blocks(self) -> list[Block]:
        """The job grid's tiles of ``compute.block_size`` pixels, row by row (their order numbers the manifest)."""
        return [Block(t.row, t.col, t.height, t.width) for t in self.grid.tiles(self.job.compute.block_size)]

    def product(self, name: str) -> ProductPlan | None:
        return next((p for p in self.products if p.name == name), None)


def make_plan(
    job: JobSpec, grid: Grid, scenes: Sequence[Scene], cube_digest: str, run_token: str | None = None
) -> RunPlan:
    """Resolve models, legends, reason codes and confidence policies once, before any block runs."""
    from suelo.reasons import reasons_for
    from suelo.threshold import certification_problem, policy_for_model
    from suelo.write import map_dtype, map_legend

    check_device(job)

    def certifiable(path: Path, meta: dict[str, Any], report: dict[str, Any], spec: Any, key: str) -> None:
        """Stop before any work when the target cannot be certified, unless the job accepts an empty map."""
        problem = certification_problem(meta, report, spec.delta)
        if problem and not spec.accept_empty_map:
            raise ConfigError(
                f"{path}: {problem}; set products.{key}.target_accuracy to a certifiable value, or "
                f"products.{key}.accept_empty_map: true to map nothing"
            )

    products = []
    halo = 0
    landcover = job.products.landcover
    if landcover.enabled:
        from suelo.composite import month_starts
        from suelo.models.artifact import check_artifact_for_job, load_artifact

        path = Path(landcover.model or DEFAULT_MODELS["landcover"])
        artifact = load_artifact(path)
        # everything a block would find out about the model, found here, once, naming the model file
        check_artifact_for_job(
            artifact, job.ingest.bands, len(month_starts(job.period)), [s.level for s in scenes], path,
            landcover.allow_fewer_months,
        )  # fmt: skip
        legend = artifact.legend
        reasons = reasons_for(legend)
        try:
            map_legend(legend, reasons)
        except ValueError as exc:
            raise InputError(path, f"model legend: {exc}") from exc
        policy, report = policy_for_model(
            artifact.meta, landcover.target_accuracy, landcover.delta, landcover.threshold, landcover.score,
            landcover.per_class, landcover.min_clear_observations,
        )  # fmt: skip
        certifiable(path, artifact.meta, report, landcover, "landcover")
        metrics: dict[str, Any] = {}
        if artifact.meta.get("model_card"):
            from suelo.model_card import card_summary

            # the seed-averaged figures first: the single calibration split below says little on its own
            metrics["model_card"] = card_summary(artifact.meta["model_card"])
        metrics |= dict(artifact.meta.get("metrics", {}))
        caveats = fewer_months_caveats(
            "landcover", int(artifact.contract["months"]), job, artifact.meta.get("model_card")
        )
        products.append(
            ProductPlan(
                "landcover",
                path,
                file_sha256(path),
                legend,
                reasons,
                map_dtype(legend, reasons),
                policy,
                report,
                metrics,
                artifact.meta["novelty"],
                caveats,
            )
        )
    urban = job.products.urban_atlas
    if urban.enabled:
        from suelo.models.segmenter import DEFAULT_BANDS as SEGMENTER_BANDS
        from suelo.models.segmenter import load_segmenter
        from suelo.urban_atlas import UA_REASONS, urban_atlas_legend

        path = Path(urban.model or DEFAULT_MODELS["urban_atlas"])
        _model, meta = load_segmenter(path)
        if not isinstance(meta.get("legend_codes"), list) or not meta["legend_codes"]:
            raise InputError(path, "segmenter file has no legend_codes")
        bands = meta.get("bands", list(SEGMENTER_BANDS))
        missing = sorted(set(bands) - set(job.ingest.bands))
        if missing:
            raise ConfigError(
                f"{path}: the segmenter needs bands {missing} that ingest.bands lacks; add them or use a segmenter "
                "trained without them"
            )
        check_segmenter_for_job(meta, job, [s.level for s in scenes], path)
        full = urban_atlas_legend()
        try:
            legend = Legend(tuple(full.by_code(int(c)) for c in meta["legend_codes"]))
        except (KeyError, TypeError, ValueError) as exc:
            codes = meta["legend_codes"]
            raise InputError(path, f"segmenter legend_codes {codes!r} are not Urban Atlas codes") from exc
        meta.setdefault("legend", [{"code": int(c)} for c in meta["legend_codes"]])
        policy, report = policy_for_model(
            meta, urban.target_accuracy, urban.delta, urban.threshold, None, False, urban.min_clear_observations
        )
        certifiable(path, meta, report, urban, "urban_atlas")
        metrics = dict(meta.get("metrics", {}).get("summary", {}))
        metrics["calibration"] = meta.get("metrics", {}).get("calibration")
        novelty = meta.get("novelty", {})
        caveats = fewer_months_caveats("urban_atlas", int(meta.get("months") or 0), job, meta.get("model_card"))
        ua_plan = ProductPlan(
            "urban_atlas", path, file_sha256(path), legend, UA_REASONS, "uint16", policy, report, metrics, novelty,
            caveats,
        )  # fmt: skip
        products.append(ua_plan)
        halo = urban.overlap
    if not products:
        raise ConfigError("no product is enabled (products.landcover / products.urban_atlas)")
    digest = _digest(
        MANIFEST_VERSION, cube_digest, job.name, job.compute.block_size,
        job.products.model_dump(mode="json"), [(p.name, p.model_sha256) for p in products],
    )  # fmt: skip
    return RunPlan(job, grid, tuple(scenes), tuple(products), halo, digest, cube_digest, run_token)


def fewer_months_caveats(name: str, trained: int, job: JobSpec, card: dict[str, Any] | None) -> tuple[str, ...]:
    """The report's caveat when a job runs a model on fewer months than it was trained on (allowed by the job)."""
    from suelo.composite import month_starts
    from suelo.model_card import fewer_months_statement

    n_months = len(month_starts(job.period))
    if not trained or n_months >= trained:
        return ()
    return (
        f"{name}: the job has {n_months} months and the model was trained on {trained} (allow_fewer_months): its "
        f"calibration and certified accuracy were fitted on {trained}-month series and do not hold on {n_months}. "
        + fewer_months_statement(card, trained, n_months),
    )


def check_segmenter_for_job(meta: dict[str, Any], job: JobSpec, levels: Sequence[str], path: Path) -> None:
    """The segmenter's months and product level against the job's, as the land-cover model's contract is checked
    (segmenter files record ``months`` and ``product_level``; one without them is checked on its bands only)."""
    from suelo.composite import month_starts
    from suelo.models.artifact import NORMALIZATION, contract_problems

    months, level = meta.get("months"), meta.get("product_level")
    if months is None or level is None:
        return
    n_months = len(month_starts(job.period))
    allow = job.products.urban_atlas.allow_fewer_months
    contract = {"bands": [], "months": int(months), "normalization": NORMALIZATION, "product_level": level}
    problems = contract_problems(contract, job.ingest.bands, n_months, True, levels, allow, "products.urban_atlas")
    if problems:
        raise InputError(path, "segmenter does not fit this job (" + "; ".join(problems) + ")")


def check_device(job: JobSpec) -> None:
    """``compute.device: cuda`` (or ``compute.gpus``) on a machine without a usable CUDA GPU is a plan-time error,
    not a failure of every block. Not checked for a remote scheduler, whose workers may have GPUs this driver lacks."""
    compute = job.compute
    check_scheduler(compute.scheduler)
    wants_cuda = (compute.device or "").startswith("cuda") or compute.gpus > 0
    if not wants_cuda or (compute.scheduler or "").startswith("tcp://"):
        return
    import torch

    if not torch.cuda.is_available():
        key = "compute.device" if (compute.device or "").startswith("cuda") else "compute.gpus"
        raise ConfigError(f"{key} asks for CUDA but no CUDA GPU is usable here (torch {torch.__version__})")
    if compute.device and ":" in compute.device:
        index = int(compute.device.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise ConfigError(f"compute.device {compute.device}: only {torch.cuda.device_count()} CUDA device(s)")


def check_scheduler(address: str | None, timeout: float = 10.0) -> None:
    """A ``tcp://host:port`` scheduler must accept a connection now (one line, exit 2, before any work) rather than
    after a 60 s client time-out mid-run."""
    if not address or not address.startswith("tcp://"):
        return
    import socket
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port or 8786
    except ValueError as exc:
        raise ConfigError(f"compute.scheduler {address!r}: not a tcp://host:port address ({exc})") from None
    if not host:
        raise ConfigError(f"compute.scheduler {address!r}: no host")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"compute.scheduler {address}: cannot connect ({exc.strerror or exc})") from None


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# -- one block, in a worker ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _cached_model(kind: str, path: str, sha256: str) -> Any:
    """Models are loaded once per worker process (the sha256 makes a changed file a new entry)."""
    del sha256
    if kind == "encoder":
        from suelo.models.presto import DEFAULT_WEIGHTS, load_presto_encoder

        return load_presto_encoder(path or DEFAULT_WEIGHTS)
    if kind == "landcover":
        from suelo.models.artifact import load_artifact

        return load_artifact(path)
    from suelo.models.segmenter import load_segmenter

    return load_segmenter(path)


def block_paths(out_dir: Path, block: Block, plan: RunPlan) -> dict[str, Path]:
    paths = {p.name: out_dir / BLOCKS / p.name / f"{block.block_id}.tif" for p in plan.products}
    paths["nclear"] = out_dir / BLOCKS / "nclear" / f"{block.block_id}.tif"
    return paths


def process_block(plan: RunPlan, block: Block) -> dict[str, Any]:
    """Everything for one block, written to its block rasters; returns the block's manifest entry."""
    import torch

    from suelo.atomic import set_run_token
    from suelo.threshold import classify_block, masking_counts

    started = time.perf_counter()
    job = plan.job
    set_run_token(plan.run_token)  # a Dask worker's temporaries carry the run's token too
    # the same thread count in every mode: float reductions, hence outputs, must not depend on where a block ran
    torch.set_num_threads(job.compute.threads_per_worker)
    tile = block.tile(plan.grid, plan.halo)
    inner, crop = tile.grid, tile.crop
    cube = _block_cube(plan, tile.outer, tile.outer_row, tile.outer_col)
    n_clear_outer = cube["n_clear"].values
    n_clear = n_clear_outer[crop]
    out_dir = Path(job.output.dir)
    paths = block_paths(out_dir, block, plan)
    planes: dict[str, np.ndarray] = {}
    if n_clear_outer.any():
        # a raster of the block's embeddings (~130 MB at 512 px) only when the segmenter needs them; land cover
        # alone encodes a few rows at a time inside predict_cube
        shared = any(product.name == "urban_atlas" for product in plan.products)
        embeddings = _embeddings(cube, job) if shared else None
        for product in plan.products:
            posteriors, outside = _posteriors(product, plan, cube, embeddings, crop)
            planes[product.name] = classify_block(
                posteriors, np.asarray(product.legend.codes), product.policy, n_clear, product.reasons,
                np.dtype(product.dtype), outside,
            )  # fmt: skip
    counts = {}
    for product in plan.products:
        if product.name not in planes:  # no imagery at all in the block: nodata, no confidence
            empty = np.zeros((3, block.height, block.width), dtype=product.dtype)
            empty[0] = empty[2] = product.reasons.nodata
            empty[1] = 255
            planes[product.name] = empty
        code, _confidence, predicted = planes[product.name]
        counts[product.name] = masking_counts(code, predicted, np.asarray(product.legend.codes), product.reasons)
    for product in plan.products:
        _write_block(paths[product.name], planes[product.name], inner)
    _write_block(paths["nclear"], np.minimum(n_clear, 65534).astype(np.uint16)[None], inner)
    return {
        "type": "block",
        "block": block.block_id,
        "files": {str(p.relative_to(out_dir)): file_sha256(p) for p in paths.values()},
        "counts": counts,
        "seconds": round(time.perf_counter() - started, 3),
        "pixels": block.height * block.width,
        "worker": f"{os.uname().nodename}:{os.getpid()}",
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def _block_cube(plan: RunPlan, outer: Grid, top: int, left: int) -> Any:
    """The monthly composite of a block (with its halo), from the composite cache when allowed and present."""
    from suelo.composite import build_cube, open_cube, write_cube

    job = plan.job
    cache = None
    if job.output.cache_composites:
        name = f"r{top:06d}_c{left:06d}_{outer.height}x{outer.width}.nc"
        cache = Path(job.output.dir) / CACHE / plan.cube_digest[:16] / name
        if cache.exists():
            try:
                return open_cube(cache).load()
            except (OSError, ValueError):
                pass  # an unreadable cache entry (e.g. a disk that filled up earlier) is simply rebuilt
    cube = build_cube(plan.scenes, outer, job.period, job.ingest, block_size=max(outer.height, outer.width))
    cube = cube.compute(scheduler="synchronous")
    if cache is not None:
        write_cube(cube, cache, packed=False)
    return cube


def _embeddings(cube: Any, job: JobSpec) -> Any:
    from suelo.models.inference import encode_cube

    encoder = _cached_model("encoder", "", "")
    embeddings = encode_cube(encoder, cube, job.compute.batch_size, job.compute.device, _fast(job))
    return carry_grid(embeddings, cube)  # on the block's grid like every other array a block makes


def _fast(job: JobSpec) -> bool | None:
    from suelo.models.inference import fast_for_precision

    return fast_for_precision(job.compute.precision)


def _posteriors(
    product: ProductPlan, plan: RunPlan, cube: Any, embeddings: Any, crop: tuple[slice, slice]
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated posteriors (class, y, x) of the block's inner pixels, and where the model's novelty gate rejects
    them (y, x): outside the model's training data."""
    job = plan.job
    if product.name == "landcover":
        from suelo.predict import predict_cube

        artifact = _cached_model("landcover", str(product.model_path), product.model_sha256)
        inner_cube = cube.isel(y=crop[0], x=crop[1])
        prediction = predict_cube(
            artifact, inner_cube, job.compute.batch_size, job.compute.device, "block cube",
            None if embeddings is None else embeddings.isel(y=crop[0], x=crop[1]), _fast(job),
            allow_fewer_months=job.products.landcover.allow_fewer_months,
        )  # fmt: skip
        return prediction["posterior"].values, prediction["outside_training"].values
    from suelo.calibrate import Calibration
    from suelo.models.segmenter import DEFAULT_BANDS as SEGMENTER_BANDS
    from suelo.segment import segment_cube, segment_outside_training

    model, meta = _cached_model("urban_atlas", str(product.model_path), product.model_sha256)
    spec = job.products.urban_atlas
    posteriors = segment_cube(
        model, cube, embeddings, np.asarray(product.legend.codes), meta.get("bands", list(SEGMENTER_BANDS)),
        window=spec.window, overlap=spec.overlap, calibration=Calibration.from_dict(meta.get("calibration", {})),
        device=job.compute.device,
    )  # fmt: skip
    values = posteriors.values if hasattr(posteriors, "values") else np.asarray(posteriors)
    # the gate scores each pixel's own input vector (no spatial context), so the inner pixels suffice
    inner = cube.isel(y=crop[0], x=crop[1])
    inner_embeddings = None if embeddings is None else embeddings.isel(y=crop[0], x=crop[1])
    outside = segment_outside_training(meta["gate"], inner, inner_embeddings, meta.get("bands", list(SEGMENTER_BANDS)))
    return values[:, crop[0], crop[1]], outside


def _write_block(path: Path, planes: np.ndarray, grid: Grid) -> None:
    import rasterio

    from suelo.atomic import check_raster, gdal_errors_raised

    profile = {
        "driver": "GTiff", "height": grid.height, "width": grid.width, "count": planes.shape[0],
        "dtype": planes.dtype.name, "crs": grid.crs, "transform": grid.transform, "compress": "deflate",
        "tiled": grid.width >= 256 and grid.height >= 256, "predictor": 2,
    }  # fmt: skip

    def read_back(tmp: Path) -> None:  # a block raster is small: all of it, value by value
        check_raster(tmp, expected=planes, crs=grid.crs, transform=grid.transform)

    with (
        atomic_output(path, verify=read_back) as tmp,
        gdal_errors_raised(path),
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        dst.write(planes)


def _read_block(path: Path, band: int) -> np.ndarray:
    import rasterio

    from suelo.atomic import DamagedOutputError

    try:
        with rasterio.open(path) as src:
            return src.read(band)
    except (OSError, rasterio.errors.RasterioError) as exc:
        # verified when written and re-checked when the run started: damaged since; a re-run redoes that block
        raise DamagedOutputError(path, f"block raster unreadable ({' '.join(str(exc).split())})") from exc


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# -- the manifest ----------------------------------------------------------------------------------------------------


_BLOCK_NAME = re.compile(r"^r\d{6}_c\d{6}\.tif$")  # Block.block_id + ".tif"


class Manifest:
    """``manifest.jsonl``: a header with the plan digest, then one line per finished block (driver-only writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def finished(self, plan: RunPlan, overwrite: bool) -> dict[str, dict[str, Any]]:
        """Entries of blocks already done under this plan whose files still check out; starts a new manifest if none."""
        out_dir = self.path.parent
        lines = self._lines()
        if lines and lines[0].get("digest") != plan.digest:
            if not overwrite:
                raise ConfigError(
                    f"{self.path} belongs to a different job (spec, inputs or models changed); "
                    "use --overwrite to start over or choose another output.dir"
                )
            self._reset(plan)
            return {}
        if not lines:
            self._reset(plan)
            return {}
        # what a line claims is checked, not trusted: each file must have its checksum and read back as the block
        # raster it should be (an earlier version could record an empty file a full disk left); blocks that do not
        # check out are redone
        expected = _block_expectations(plan)
        done = {}
        for entry in lines[1:]:
            files = entry.get("files")
            if entry.get("type") != "block" or not isinstance(files, dict) or not isinstance(entry.get("block"), str):
                continue
            if files and all(
                isinstance(sha, str) and _file_matches(out_dir / name, sha, expected.get(name))
                for name, sha in files.items()
            ):
                done[entry["block"]] = entry
        return done

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with open(self.path, "ab+") as handle:
            # a line torn by a full disk must not swallow this one: start on a fresh line
            if handle.seek(0, os.SEEK_END) > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    def _reset(self, plan: RunPlan) -> None:
        # only the block rasters suelo names (blocks/<product>/rNNNNNN_cNNNNNN.tif), never the folder wholesale
        blocks = self.path.parent / BLOCKS
        for path in sorted(blocks.glob("*/*.tif")) if blocks.is_dir() else []:
            if _BLOCK_NAME.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink()
        for folder in sorted(blocks.glob("*")) if blocks.is_dir() else []:
            with contextlib.suppress(OSError):  # not empty: it holds something suelo did not write
                folder.rmdir()
        with contextlib.suppress(OSError):
            blocks.rmdir()
        header = {"type": "plan", "digest": plan.digest, "version": MANIFEST_VERSION, "blocks": len(plan.blocks())}
        with atomic_output(self.path) as tmp:
            tmp.write_text(json.dumps(header, sort_keys=True) + "\n", encoding="utf-8")

    def _lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        # errors="replace": whatever a full disk or a kill left in a torn line, the other lines still count
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill mid-write: that block is simply redone
            if isinstance(entry, dict):
                entries.append(entry)
        return entries


def _block_expectations(plan: RunPlan) -> dict[str, dict[str, Any]]:
    """What each block raster of ``plan`` must be, by its path in the manifest: bands, dtype and shape."""
    expected = {}
    for block in plan.blocks():
        shape = (block.height, block.width)
        for product in plan.products:
            expected[f"{BLOCKS}/{product.name}/{block.block_id}.tif"] = dict(count=3, dtype=product.dtype, shape=shape)
        expected[f"{BLOCKS}/nclear/{block.block_id}.tif"] = dict(count=1, dtype="uint16", shape=shape)
    return expected


def _file_matches(path: Path, sha256: str, expect: dict[str, Any] | None = None) -> bool:
    """``path`` has checksum ``sha256`` and, a raster, opens and reads in full (with ``expect``'s bands, dtype and
    shape when given)."""
    from suelo.atomic import raster_readable

    try:
        if not path.is_file() or path.stat().st_size == 0 or file_sha256(path) != sha256:
            return False
    except OSError:
        return False
    return path.suffix != ".tif" or raster_readable(path, **(expect or {}))


# -- execution backends ----------------------------------------------------------------------------------------------


@dataclass
class BlockFailure:
    block: str
    error: str
    attempts: int


def default_workers(job: JobSpec) -> int:
    """Local workers when the job does not say: one per core, at most 4, or 3 with the urban-atlas product.

    Measured with the default 512 px blocks (benchmarks/RESULTS.md): a worker peaks at about 0.85 GB for land
    cover and 1.1 GB while the segmenter runs, the run's own process at 0.45 GB; so a whole run stays under 4 GB.
    """
    cap = 3 if job.products.urban_atlas.enabled else 4
    return max(1, min(os.cpu_count() or 1, cap))


def execute(
    plan: RunPlan,
    blocks: Sequence[Block],
    on_done: Callable[[dict[str, Any]], None],
    on_failed: Callable[[BlockFailure], None],
) -> str:
    """Run ``blocks``; report each through the callbacks as it finishes. Returns the backend used."""
    compute = plan.job.compute
    if not blocks:
        return "none"
    if compute.scheduler == "synchronous" or (compute.scheduler in (None, "local") and len(blocks) == 1):
        for block in blocks:
            _run_here(plan, block, compute.retries, on_done, on_failed)
        return "synchronous"
    from distributed import Client, LocalCluster, as_completed

    if compute.scheduler in (None, "local"):
        if compute.gpus:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError as exc:
                raise ConfigError("compute.gpus needs the dask-cuda package (pip install dask-cuda)") from exc
            cluster: Any = LocalCUDACluster(n_workers=compute.gpus, threads_per_worker=compute.threads_per_worker)
        else:
            workers = compute.workers or default_workers(plan.job)
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                silence_logs=40,
            )  # fmt: skip
        client = Client(cluster)
        backend = f"dask LocalCluster ({len(cluster.workers)} workers)"
    else:
        cluster = None
        try:
            client = Client(compute.scheduler, timeout="60s")
        except (OSError, TimeoutError) as exc:  # the probe at plan time passed, but the scheduler went away
            raise ConfigError(f"compute.scheduler {compute.scheduler}: cannot connect ({exc})") from exc
        backend = f"dask scheduler {compute.scheduler}"
    try:
        futures = {
            client.submit(
                process_block,
                plan,
                block,
                key=f"suelo-{plan.digest[:12]}-{block.block_id}",
                retries=compute.retries,
                pure=False,
            ): block
            for block in blocks
        }
        for future in as_completed(futures):
            block = futures[future]
            if future.status == "finished":
                on_done(future.result())
            else:
                error = future.exception()
                on_failed(BlockFailure(block.block_id, f"{type(error).__name__}: {error}", compute.retries + 1))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return backend


def _run_here(
    plan: RunPlan,
    block: Block,
    retries: int,
    on_done: Callable[[dict[str, Any]], None],
    on_failed: Callable[[BlockFailure], None],
) -> None:
    last = ""
    for attempt in range(1, retries + 2):
        try:
            on_done(process_block(plan, block))
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except SueloError as exc:  # bad input: retrying cannot help
            on_failed(BlockFailure(block.block_id, str(exc), attempt))
            return
        except Exception as exc:  # anything else may be transient (I/O, memory): retry
            last = f"{type(exc).__name__}: {exc}"
            if os.environ.get("SUELO_DEBUG"):
                traceback.print_exc()
    on_failed(BlockFailure(block.block_id, last, retries + 1))


# -- progress --------------------------------------------------------------------------------------------------------


class Progress:
    """A progress bar on a terminal (blocks, px/s, ETA) or JSON lines for schedulers (``log_format='json'``)."""

    def __init__(self, total: int, already: int, log_format: str) -> None:
        self.total, self.done, self.started = total, already, time.perf_counter()
        self.pixels = 0
        self.json = log_format == "json"
        self._bar: Any = None
        if not self.json and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("blocks"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(), transient=True,
            )  # fmt: skip
            self._task = self._bar.add_task("blocks", total=total, completed=already, rate="")
            self._bar.start()
        self.event("start", blocks=total, already_done=already)

    def event(self, name: str, **fields: Any) -> None:
        if self.json:
            record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": name, **fields}
            print(json.dumps(record, default=str), file=sys.stderr, flush=True)

    def block_done(self, entry: dict[str, Any]) -> None:
        self.done += 1
        self.pixels += entry["pixels"]
        rate = self.pixels / max(time.perf_counter() - self.started, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=f"{rate / 1e3:.1f} kpx/s")
        self.event("block_done", block=entry["block"], seconds=entry["seconds"], done=self.done, total=self.total,
                   px_per_s=round(rate, 1), worker=entry.get("worker"))  # fmt: skip

    def block_failed(self, failure: BlockFailure) -> None:
        self.event("block_failed", block=failure.block, error=failure.error, attempts=failure.attempts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- the driver ------------------------------------------------------------------------------------------------------


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


def run_region(plan: RunPlan, overwrite: bool = False, log_format: str = "text") -> RegionResult:
    """Run every unfinished block of ``plan``, then (all done) assemble and write the final products."""
    from suelo.outdir import claimed_output, remove_stale_temporaries

    out_dir = Path(plan.job.output.dir)
    with claimed_output(out_dir):  # re-entrant: `suelo run` claimed the folder before anything else
        remove_stale_temporaries(out_dir)
        return _run_region(plan, overwrite, log_format)


def _run_region(plan: RunPlan, overwrite: bool, log_format: str) -> RegionResult:
    started = time.perf_counter()
    out_dir = Path(plan.job.output.dir)
    manifest = Manifest(out_dir / MANIFEST)
    done = manifest.finished(plan, overwrite)
    blocks = plan.blocks()
    todo = [b for b in blocks if b.block_id not in done]
    final = _final_record(out_dir)
    if not todo and final.get("digest") == plan.digest and all((out_dir / f).exists() for f in final.get("files", [])):
        return RegionResult(
            {k: [out_dir / f for f in v] for k, v in final.get("products", {}).items()}, None,
            time.perf_counter() - started, len(blocks), 0, len(blocks), up_to_date=True,
        )  # fmt: skip
    progress = Progress(len(blocks), len(done), log_format)
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
        backend = execute(plan, todo, finished, failed)
    finally:
        progress.close()
    result = RegionResult({}, None, 0.0, len(blocks), len(todo), len(done), failures, backend)
    run_seconds = time.perf_counter() - started
    result.stats = _block_stats(entries, blocks, run_seconds, len(todo))
    if failures:
        progress.event("run_failed", failed=[f.block for f in failures])
        result.seconds = time.perf_counter() - started
        return result
    products, report, files = assemble(plan, [entries[b.block_id] for b in blocks])
    write_json_atomic(
        out_dir / "final.json",
        {"digest": plan.digest, "products": {k: [str(p.relative_to(out_dir)) for p in v] for k, v in products.items()},
         "files": [str(p.relative_to(out_dir)) for p in files],
         "checksums": {str(p.relative_to(out_dir)): file_sha256(p) for p in files}},
    )  # fmt: skip
    result.products, result.report = products, report
    result.seconds = time.perf_counter() - started
    progress.event("run_done", seconds=round(result.seconds, 2), blocks=len(blocks), ran=len(todo))
    return result


def _final_record(out_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((out_dir / "final.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


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


# -- assembling the final products -----------------------------------------------------------------------------------


def _mosaic(plan: RunPlan, folder: str, band: int, dtype: str) -> Any:
    """A lazy (dask) mosaic of one band of the block rasters, chunked by block."""
    import dask
    import dask.array as da

    out_dir = Path(plan.job.output.dir)

    def read(block: Block) -> Any:
        path = out_dir / BLOCKS / folder / f"{block.block_id}.tif"
        return da.from_delayed(dask.delayed(_read_block)(path, band), (block.height, block.width), dtype)

    rows = itertools.groupby(plan.blocks(), key=lambda block: block.row)
    return da.block([[read(block) for block in row] for _, row in rows])


def assemble(plan: RunPlan, entries: Sequence[dict[str, Any]]) -> tuple[dict[str, list[Path]], Path | None, list[Path]]:
    """Final map sets (COG + styles + STAC) from the block rasters, urban-atlas sieve and polygons, run report."""
    import dask

    from suelo.report import write_run_report
    from suelo.threshold import masking_report, merge_counts, outside_training_pct, report_from_counts
    from suelo.write import write_map_set

    job = plan.job
    out_dir = Path(job.output.dir)
    n_clear = _mosaic(plan, "nclear", 1, "uint16")
    scenes = plan.scenes
    inputs = [s.source for s in scenes]
    products: dict[str, list[Path]] = {}
    map_sets, masking, metrics = [], {}, {}
    warnings: list[str] = []
    with dask.config.set(scheduler="synchronous"):
        for product in plan.products:
            warnings.extend(product.caveats)
            codes = _mosaic(plan, product.name, 1, product.dtype)
            confidence = _mosaic(plan, product.name, 2, product.dtype).astype("uint8")
            class_codes = np.asarray(product.legend.codes)
            names = list(product.legend.names)
            extra: list[Path] = []
            tags = {
                "MODEL": product.model_path.name,
                "MODEL_SHA256": product.model_sha256,
                "THRESHOLDS": product.policy.to_dict(),
                "INPUT_PRODUCTS": [s.scene_id for s in scenes],
                "RADIOMETRY": sorted({json.dumps(s.radiometry.to_dict(), sort_keys=True) for s in scenes}),
                "REASON_CODES": product.reasons.to_dict(),
                "NOVELTY_GATE": product.novelty,
            }  # fmt: skip
            folder = out_dir / product.name
            if product.name == "urban_atlas":
                from suelo.urban_atlas import sieve, urban_atlas_vector

                spec = job.products.urban_atlas
                # the sieve merges patches across block borders, so it runs on the whole mosaic (uint16 + uint8
                # per pixel: a full Sentinel-2 tile is about 360 MB)
                codes_np = codes.compute()
                conf_np = confidence.compute()
                predicted = _mosaic(plan, product.name, 3, product.dtype).compute()
                clean_conf = np.where(conf_np == 255, 0, conf_np)
                if spec.minimum_mapping_unit:
                    # patches that stay below the MMU (islands among unclassified pixels) are not mapped either
                    codes_np = sieve(
                        codes_np, clean_conf, class_codes, plan.grid.resolution,
                        unresolved=product.reasons.low_confidence,
                    )  # fmt: skip
                report = masking_report(codes_np, predicted, class_codes, names, product.reasons)
                vectors = folder / f"{job.name}.gpkg"
                urban_atlas_vector(codes_np, clean_conf / 100.0, plan.grid, class_codes, path=vectors,
                                   crs=spec.vector_crs, sieve_first=False)  # fmt: skip
                extra.append(vectors)
                codes, confidence = codes_np, conf_np
                tags["MMU"] = spec.minimum_mapping_unit
            else:
                counts = merge_counts([e["counts"][product.name] for e in entries])
                report = report_from_counts(counts, class_codes, names)
            report["outside_training_pct_by_block"] = {
                e["block"]: outside_training_pct(e["counts"][product.name]) for e in entries
            }
            report["outside_training_warning_pct"] = NOVELTY_WARNING_PCT
            if report["outside_training_pct_of_imaged"] > NOVELTY_WARNING_PCT:
                over = sum(v > NOVELTY_WARNING_PCT for v in report["outside_training_pct_by_block"].values())
                warnings.append(
                    f"{product.name}: the model's novelty gate found {report['outside_training_pct_of_imaged']:.1f}% "
                    f"of the imaged pixels unlike its training data (in {over} of {len(entries)} blocks more than "
                    f"{NOVELTY_WARNING_PCT:g}%; {product.novelty.get('rejection_rate', 0.05):.0%} is expected on data "
                    "like the training data): this region is unlike the data the model was trained and certified on, "
                    "so its certified accuracy does not transfer here. Those pixels are mapped as 'outside the "
                    "training data'; the mapped ones are the ones that resemble the training data."
                )
            map_set = write_map_set(
                folder, job.name, codes, plan.grid, product.legend, (job.period.start, job.period.end),
                reasons=product.reasons, confidence=confidence, n_clear=n_clear, tags=tags, inputs=inputs,
                description="Urban Atlas 2018 class" if product.name == "urban_atlas" else "land cover class",
            )  # fmt: skip
            map_sets.append(map_set)
            masking[f"{product.name}/{map_set.name}"] = report
            metrics[product.name] = {"model": product.metrics, "thresholds": product.policy_report}
            products[product.name] = [*map_set.files, *extra]
    written = write_run_report(
        out_dir / "report", map_sets, masking, metrics, job.model_dump(mode="json"), warnings=warnings
    )
    report = written.get("html") or next(iter(written.values()), None)
    files = [f for paths in products.values() for f in paths] + [Path(p) for p in written.values()]
    for product in plan.products:
        products[product.name].sort()
    return products, report, files


def iter_block_files(out_dir: Path) -> Iterator[Path]:
    yield from sorted((out_dir / BLOCKS).rglob("*.tif"))
