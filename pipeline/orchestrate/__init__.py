"""Orchestrate a whole job as independent blocks, resumably, in this process or on Dask.

The output grid is cut into blocks of ``compute.block_size`` pixels. Each block is one task, start to finish:

    scenes -> composite -> Presto embeddings -> each product's model -> calibrated posteriors
           -> certified confidence mask -> block rasters (written atomically) -> manifest line

In data-flow order, one module each:

- :mod:`~suelo.orchestrate.plan`: the blocks and each product's resolved model, decided once by the driver;
- :mod:`~suelo.orchestrate.block`: one block in a worker;
- :mod:`~suelo.orchestrate.manifest`: which blocks are done, checked, not trusted;
- :mod:`~suelo.orchestrate.backends`: this process, a local Dask cluster or a scheduler;
- :mod:`~suelo.orchestrate.progress`: a bar or JSON lines;
- :mod:`~suelo.orchestrate.assemble`: final maps, report and the whole-region cube from the blocks;
- :mod:`~suelo.orchestrate.region`: the driver that runs them in turn.

What differs between products (land cover, urban atlas) is behind :class:`suelo.products.Product`.
"""

from suelo.orchestrate.backends import BlockFailure, default_workers, execute
from suelo.orchestrate.plan import BLOCKS, DEFAULT_MODELS, MANIFEST, Block, RunPlan, make_plan
from suelo.orchestrate.region import RegionResult, run_region

__all__ = [
    "BLOCKS",
    "DEFAULT_MODELS",
    "MANIFEST",
    "Block",
    "BlockFailure",
    "RegionResult",
    "RunPlan",
    "default_workers",
    "execute",
    "make_plan",
    "run_region",
]
