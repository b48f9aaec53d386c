"""Where blocks run: in this process (``compute.scheduler: synchronous``, or when only one block is left), on a
local Dask cluster (the default: ``LocalCluster`` of ``compute.workers`` processes, ``LocalCUDACluster`` with
``compute.gpus``) or on an existing scheduler (its ``tcp://`` address). A worker loads each model once and keeps it
for all its blocks. Memory per worker depends on the block size and the scenes of one month, never on the region."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from suelo.errors import ConfigError, SueloError
from suelo.orchestrate.block import process_block
from suelo.orchestrate.plan import Block, RunPlan
from suelo.settings import JobSpec

BlockDone = Callable[[dict[str, Any]], None]


@dataclass
class BlockFailure:
    block: str
    error: str
    attempts: int


BlockFailed = Callable[[BlockFailure], None]
#: Called before a failed block is tried again: (the failure so far, the attempt about to start).
BlockRetry = Callable[[BlockFailure, int], None]


def _no_retry_report(_failure: BlockFailure, _attempt: int) -> None:
    return None


def default_workers(job: JobSpec) -> int:
    """Local workers when the job does not say: one per core, at most 4, or 3 with a product that segments.

    Measured with the default 512 px blocks (benchmarks/RESULTS.md): a worker peaks at about 0.85 GB for land
    cover and 1.1 GB while the segmenter runs, the run's own process at 0.45 GB; so a whole run stays under 4 GB.
    """
    cap = 3 if job.products.urban_atlas.enabled else 4
    return max(1, min(os.cpu_count() or 1, cap))


def execute(
    plan: RunPlan,
    blocks: Sequence[Block],
    on_done: BlockDone,
    on_failed: BlockFailed,
    on_retry: BlockRetry = _no_retry_report,
) -> str:
    """Run ``blocks``; report each through the callbacks as it finishes, and each retry before it starts. A block
    failing on bad input (a :class:`SueloError`) is not retried; any other error is, ``compute.retries`` times.
    Returns the backend used."""
    compute = plan.job.compute
    if not blocks:
        return "none"
    if compute.scheduler == "synchronous" or (compute.scheduler in (None, "local") and len(blocks) == 1):
        for block in blocks:
            run_here(plan, block, compute.retries, on_done, on_failed, on_retry)
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
        # the driver retries, not Dask: so every retry is reported (a JSON block_retry event) and bad input,
        # which no retry can mend, fails at once

        def submit(block: Block, attempt: int) -> Any:
            key = f"suelo-{plan.digest[:12]}-{block.block_id}-{attempt}"
            return client.submit(process_block, plan, block, key=key, pure=False)

        futures = {submit(block, 1): (block, 1) for block in blocks}
        running = as_completed(list(futures))
        for future in running:
            block, attempt = futures.pop(future)
            if future.status == "finished":
                on_done(future.result())
                continue
            error = future.exception()
            failure = BlockFailure(block.block_id, _describe(error), attempt)
            if isinstance(error, SueloError) or attempt > compute.retries:
                on_failed(failure)
                continue
            on_retry(failure, attempt + 1)
            again = submit(block, attempt + 1)
            futures[again] = (block, attempt + 1)
            running.add(again)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return backend


def _describe(error: BaseException | None) -> str:
    if isinstance(error, SueloError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_here(
    plan: RunPlan,
    block: Block,
    retries: int,
    on_done: BlockDone,
    on_failed: BlockFailed,
    on_retry: BlockRetry = _no_retry_report,
) -> None:
    """One block in this process, retried on errors that may be transient (never on bad input)."""
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
            if os.environ.get("SUELO_DEBUG"):
                traceback.print_exc()
            failure = BlockFailure(block.block_id, _describe(exc), attempt)
            if attempt > retries:
                on_failed(failure)
                return
            on_retry(failure, attempt + 1)
