"""One block, start to finish, in a worker: composite -> embeddings -> each product's posteriors -> certified
confidence mask -> block rasters, written atomically and verified; returns the block's manifest entry."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from suelo.atomic import atomic_output, file_sha256
from suelo.grid import Grid, carry_grid
from suelo.orchestrate.plan import CACHE, CUBE_BLOCKS, Block, RunPlan
from suelo.provenance import peak_rss_mb
from suelo.settings import JobSpec


def process_block(plan: RunPlan, block: Block) -> dict[str, Any]:
    """Everything for one block, written to its block rasters; returns the block's manifest entry."""
    import torch

    from suelo.atomic import set_run_token
    from suelo.composite import write_cube
    from suelo.threshold import classify_block, masking_counts

    started = time.perf_counter()
    job = plan.job
    set_run_token(plan.run_token)  # a Dask worker's temporaries carry the run's token too
    # the same thread count in every mode: float reductions, hence outputs, must not depend on where a block ran
    torch.set_num_threads(job.compute.threads_per_worker)
    tile = block.tile(plan.grid, plan.halo)
    inner, crop = tile.grid, tile.crop
    cube = block_cube(plan, tile.outer, tile.outer_row, tile.outer_col)
    n_clear_outer = cube["n_clear"].values
    n_clear = n_clear_outer[crop]
    out_dir = Path(job.output.dir)
    paths = plan.block_paths(block)
    planes: dict[str, np.ndarray] = {}
    if n_clear_outer.any():
        # a raster of the block's embeddings (~130 MB at 512 px) only when a product needs one; land cover alone
        # encodes a few rows at a time inside predict_cube
        shared = next((p for p in plan.products if p.product.needs_embeddings), None)
        embeddings = _embeddings(cube, job, shared.encoder_inputs) if shared is not None else None
        for product in plan.products:
            posteriors, outside = product.product.posteriors(product, job, cube, embeddings, crop)
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
        write_block_raster(paths[product.name], planes[product.name], inner)
    write_block_raster(paths["nclear"], np.minimum(n_clear, 65534).astype(np.uint16)[None], inner)
    if CUBE_BLOCKS in paths:
        # the block's share of the whole-region cube, from the composite just made: inputs are decoded once a run
        write_cube(cube.isel(y=crop[0], x=crop[1]), paths[CUBE_BLOCKS])
    return {
        "type": "block",
        "block": block.block_id,
        "files": {str(p.relative_to(out_dir)): file_sha256(p) for p in paths.values()},
        "counts": counts,
        "seconds": round(time.perf_counter() - started, 3),
        "pixels": block.height * block.width,
        "worker": f"{os.uname().nodename}:{os.getpid()}",
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def block_cube(plan: RunPlan, outer: Grid, top: int, left: int) -> Any:
    """The monthly composite of a block (with its halo), from the composite cache when allowed and present."""
    from suelo.composite import build_cube, open_cube, write_cube
    from suelo.locks import netcdf_lock

    job = plan.job
    cache = None
    if job.output.cache_composites:
        name = f"r{top:06d}_c{left:06d}_{outer.height}x{outer.width}.nc"
        cache = Path(job.output.dir) / CACHE / plan.cube_digest[:16] / name
        if cache.exists():
            try:
                with netcdf_lock():  # suelo.locks: another block of this worker may be reading weather
                    return open_cube(cache).load()
            except (OSError, ValueError):
                pass  # an unreadable cache entry (e.g. a disk that filled up earlier) is simply rebuilt
    cube = build_cube(plan.scenes, outer, job.period, job.ingest, max(outer.height, outer.width), plan.auxiliary)
    cube = cube.compute(scheduler="synchronous")
    if cache is not None:
        write_cube(cube, cache, packed=False)
    return cube


@functools.lru_cache(maxsize=1)
def _encoder() -> Any:
    """Presto's encoder, loaded once per worker process."""
    from suelo.models.presto import DEFAULT_WEIGHTS, load_presto_encoder

    return load_presto_encoder(DEFAULT_WEIGHTS)


def _embeddings(cube: Any, job: JobSpec, inputs: tuple[str, ...]) -> Any:
    from suelo.models.inference import encode_cube, fast_for_precision

    fast = fast_for_precision(job.compute.precision)
    embeddings = encode_cube(_encoder(), cube, job.compute.batch_size, job.compute.device, fast, inputs)
    return carry_grid(embeddings, cube)  # on the block's grid like every other array a block makes


def write_block_raster(path: Path, planes: np.ndarray, grid: Grid) -> None:
    """A small GeoTIFF of ``planes`` (band, y, x) on ``grid``, atomically, read back value by value."""
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


def read_block_raster(path: Path, band: int) -> np.ndarray:
    import rasterio

    from suelo.atomic import DamagedOutputError

    try:
        with rasterio.open(path) as src:
            values: np.ndarray = src.read(band)
            return values
    except (OSError, rasterio.errors.RasterioError) as exc:
        # verified when written and re-checked when the run started: damaged since; a re-run redoes that block
        raise DamagedOutputError(path, f"block raster unreadable ({' '.join(str(exc).split())})") from exc
