"""The plan: everything a worker needs, decided once by the driver before any block runs.

The job grid is cut into blocks of ``compute.block_size`` pixels; each enabled product resolves its model, legend,
reason codes and confidence policy (:mod:`suelo.products`). The plan's digest names the manifest it owns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suelo.errors import ConfigError
from suelo.grid import Grid, Tile
from suelo.ingest.auxiliary import Auxiliary
from suelo.ingest.scene import Scene
from suelo.products import PRODUCTS, ProductPlan, enabled_products
from suelo.settings import JobSpec

MANIFEST = "manifest.jsonl"
BLOCKS = "blocks"  # <out>/blocks/<product | nclear | cube>/<block id>.<tif | nc>
CACHE = "cache"
CUBE_BLOCKS = "cube"  # the blocks' monthly composites, when the job writes the whole cube (output.cube)
MANIFEST_VERSION = 1
DEFAULT_MODELS = {product.name: product.default_model for product in PRODUCTS}


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
class RunPlan:
    job: JobSpec
    grid: Grid
    scenes: tuple[Scene, ...]
    products: tuple[ProductPlan, ...]
    halo: int  # extra pixels around a block for the products' spatial context (the segmenter's)
    digest: str
    cube_digest: str = ""  # what the composites depend on (inputs, grid, period, ingest): keys the composite cache
    run_token: str | None = None  # names this run's temporaries in every worker (suelo.outdir); not in the digest
    auxiliary: Auxiliary = field(default_factory=Auxiliary)  # radar, terrain, weather (digested in cube_digest)
    # what the finished outputs depend on beyond the blocks: the digest and the assessment samples (their settings
    # and file checksums), so a newly labelled sample reassembles the report without redoing any block
    final_digest: str = ""

    def blocks(self) -> list[Block]:
        """The job grid's tiles of ``compute.block_size`` pixels, row by row (their order numbers the manifest)."""
        return [Block(t.row, t.col, t.height, t.width) for t in self.grid.tiles(self.job.compute.block_size)]

    @property
    def writes_cube(self) -> bool:
        """Blocks keep their composites for the whole-region cube (``output.cube``)."""
        return self.job.output.cube

    def block_paths(self, block: Block) -> dict[str, Path]:
        """The files of one block, by role: each product's raster, the clear-observation count, the composite."""
        folder = Path(self.job.output.dir) / BLOCKS
        paths = {p.name: folder / p.name / f"{block.block_id}.tif" for p in self.products}
        paths["nclear"] = folder / "nclear" / f"{block.block_id}.tif"
        if self.writes_cube:
            paths[CUBE_BLOCKS] = folder / CUBE_BLOCKS / f"{block.block_id}.nc"
        return paths


def make_plan(
    job: JobSpec,
    grid: Grid,
    scenes: Sequence[Scene],
    cube_digest: str,
    run_token: str | None = None,
    auxiliary: Auxiliary | None = None,
) -> RunPlan:
    """Resolve models, legends, reason codes and confidence policies once, before any block runs."""
    check_device(job)
    chosen = enabled_products(job)
    if not chosen:
        raise ConfigError("no product is enabled (products.landcover / products.urban_atlas)")
    auxiliary = auxiliary or Auxiliary()
    products = tuple(product.plan(job, scenes, auxiliary.inputs) for product in chosen)
    halo = max(product.halo(job) for product in chosen)
    not_in_blocks = {p.name: {"assessment"} for p in chosen}  # the blocks do not depend on the assessment
    digest = _digest(
        MANIFEST_VERSION, cube_digest, job.name, job.compute.block_size,
        job.products.model_dump(mode="json", exclude=not_in_blocks), [(p.name, p.model_sha256) for p in products],
    )  # fmt: skip
    final_digest = _digest(digest, check_assessments(job, grid, products))
    return RunPlan(job, grid, tuple(scenes), products, halo, digest, cube_digest, run_token, auxiliary, final_digest)


def check_assessments(job: JobSpec, grid: Grid, products: Sequence[ProductPlan]) -> list[Any]:
    """Check each product's assessment sample against the grid and legend its map will have, before any block
    runs (a sample drawn on another grid, points outside it, labels the legend lacks: one line, exit 2); return
    what the final outputs depend on (each sample's settings and checksum)."""
    from suelo.assess.analyze import check_sample
    from suelo.atomic import file_sha256

    depends: list[Any] = []
    for plan in products:
        spec = plan.product.settings(job).assessment
        if spec is None:
            continue
        map_path = Path(job.output.dir) / plan.name / f"{job.name}.tif"
        check_sample(spec, map_path, grid, plan.legend, plan.reasons)
        depends.append((plan.name, spec.model_dump(mode="json"), file_sha256(spec.sample)))
    return depends


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
