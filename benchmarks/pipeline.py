"""End-to-end stage benchmark: px/s of ingest, encode, classify, threshold and write, and a full-tile projection.

    python -m benchmarks.pipeline                 # generated 2048 x 2048 x 12 months, CPU
    python -m benchmarks.pipeline --device cuda   # encoder and head on the GPU (bf16 autocast)
    python -m benchmarks.pipeline --precision bf16   # the CPU encoder in bf16 (compute.precision: bf16)

Each stage runs on the same generated region (``tests.fixtures.generate_region``) in this process:

- ingest: scenes -> monthly cube for the whole region (the block-wise compositing a run does, in memory),
- encode: Presto embeddings of ``--encode-pixels`` pixels drawn from the cube (the full region would take hours on
  a CPU; px/s is flat in the number of pixels once batches are full),
- classify: the shipped land-cover head + calibration on embeddings of every pixel (the sampled ones tiled),
- threshold: certified confidence mask with reason codes (suelo.threshold.classify_block),
- write: the COG map set (class map, confidence, clear counts, styles, STAC item).

Then the cost of verifying every write before it is published (suelo.atomic): the write stage and the block
rasters of the same region, each with verification off and on in the same run, as px/s and a time ratio.

The table gives px/s per stage (grid pixels, all months), the share of the time each stage would take on the whole
region, the peak RSS of the process, and the projected time for one Sentinel-2 tile (10980 x 10980 px, 12 months)
at the measured rates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ingest import PeakRss
from tests.fixtures import generate_region

TILE_PIXELS = 10980 * 10980
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--encode-pixels", type=int, default=32768)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto", help="encoder precision, as compute.precision"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--repeats", type=int, default=2, help="write-verification cost: timings with verification off/on, best kept"
    )
    args = parser.parse_args(argv)

    import dask

    from suelo.calibrate import Calibration
    from suelo.composite import build_cube
    from suelo.ingest import discover_scenes, job_grid
    from suelo.models.artifact import load_artifact
    from suelo.models.inference import encode_pixels, fast_for_precision
    from suelo.models.presto import load_presto_encoder
    from suelo.models.presto_inputs import cube_to_pixels, presto_inputs
    from suelo.orchestrate import DEFAULT_MODELS
    from suelo.settings import validate_job
    from suelo.threshold import classify_block, policy_for_model
    from suelo.write import reasons_for, write_map_set

    stages: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, PeakRss() as memory:
        items = generate_region(Path(tmp) / "scenes", args.size, months=12, scenes_per_month=1, seed=0)
        job = validate_job(
            {
                "inputs": [{"kind": "stac", "paths": [str(items)]}],
                "period": {"start": "2021-01-01", "end": "2021-12-31"},
                "ingest": {"bands": BANDS},
                "output": {"dir": str(Path(tmp) / "out")},
            }
        )
        pixels = args.size * args.size

        started = time.perf_counter()
        scenes = discover_scenes(job)
        grid = job_grid(job, scenes)
        with dask.config.set(scheduler="threads"):
            cube = build_cube(scenes, grid, job.period, job.ingest, 512).compute()
        stages["ingest"] = _rate(pixels, time.perf_counter() - started)

        reflectance, latlons, start_month = cube_to_pixels(cube)
        rng = np.random.default_rng(0)
        sample = rng.choice(pixels, size=min(args.encode_pixels, pixels), replace=False)
        x, mask, dw = presto_inputs(reflectance[sample], BANDS, latlons=latlons[sample])
        encoder = load_presto_encoder()
        fast = fast_for_precision(args.precision)
        ll = latlons[sample]
        encode_pixels(encoder, x[:512], mask[:512], dw[:512], ll[:512], start_month, None, args.device, fast)
        started = time.perf_counter()
        embeddings = encode_pixels(encoder, x, mask, dw, ll, start_month, None, args.device, fast)
        stages["encode"] = _rate(len(sample), time.perf_counter() - started)

        import torch

        artifact = load_artifact(DEFAULT_MODELS["landcover"])
        head = artifact.build_head()
        calibration = Calibration.from_dict(artifact.meta.get("calibration", {}))
        tiled = np.resize(embeddings, (pixels, embeddings.shape[1]))  # every pixel gets a (sampled) embedding
        started = time.perf_counter()
        with torch.inference_mode():
            logits = np.concatenate(
                [head(torch.from_numpy(tiled[i : i + 65536])).numpy() for i in range(0, pixels, 65536)]
            )
        posteriors = calibration.apply(logits).T.reshape(-1, args.size, args.size)
        stages["classify"] = _rate(pixels, time.perf_counter() - started)

        legend = artifact.legend
        reasons = reasons_for(legend)
        policy, _report = policy_for_model(artifact.meta, 0.8)
        n_clear = cube["n_clear"].values
        started = time.perf_counter()
        planes = classify_block(posteriors, np.asarray(legend.codes), policy, n_clear, reasons)
        stages["threshold"] = _rate(pixels, time.perf_counter() - started)

        def write(folder: Path) -> None:
            write_map_set(
                folder, "bench", planes[0], grid, legend, ("2021-01-01", "2021-12-31"),
                reasons=reasons, confidence=planes[1], n_clear=n_clear,
            )  # fmt: skip

        started = time.perf_counter()
        write(Path(tmp) / "out" / "landcover")
        stages["write"] = _rate(pixels, time.perf_counter() - started)
        verification = _verification_cost(Path(tmp) / "verify", write, planes, n_clear, grid, args.repeats)

    seconds_per_px = {name: 1 / s["px_per_s"] for name, s in stages.items()}
    total = sum(seconds_per_px.values())
    for name, stage in stages.items():
        stage["share_of_time"] = round(seconds_per_px[name] / total, 4)
    result = {
        "region": f"{args.size} x {args.size} x 12 months",
        "device": args.device or "auto",
        "stages": stages,
        "end_to_end_px_per_s": round(1 / total, 1),
        "peak_rss_mb": round(memory.peak_mb, 0),
        "projected_tile_hours": round(TILE_PIXELS * total / 3600, 2),
        "write_verification": verification,
    }
    print(f"{'stage':<10}{'px/s':>14}{'share':>8}")
    for name, stage in stages.items():
        print(f"{name:<10}{stage['px_per_s']:>14,.0f}{stage['share_of_time']:>8.1%}")
    print(f"end to end {result['end_to_end_px_per_s']:,.0f} px/s; peak RSS {result['peak_rss_mb']:.0f} MB; "
          f"one 10980 x 10980 tile: {result['projected_tile_hours']} h")  # fmt: skip
    for name, row in verification.items():
        print(f"write verification, {name}: {row['off_px_per_s']:,.0f} px/s unverified, {row['on_px_per_s']:,.0f} px/s "
              f"verified: {row['cost_ratio']:.3f}x the time")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


def _verification_cost(
    folder: Path, write_maps: Any, planes: np.ndarray, n_clear: np.ndarray, grid: Any, repeats: int
) -> dict[str, dict[str, float]]:
    """What verifying every write before it is published costs (suelo.atomic.VERIFY_WRITES on vs off).

    Two writes: the COG map set of the write stage (COGs read back in part, styles, STAC item), and the block
    rasters a run writes for the same region (512 px blocks, each read back in full and compared). Each is timed
    with verification off and on, alternating, ``repeats`` times; the best of each is kept. ``cost_ratio`` is
    verified time / unverified time.
    """
    from suelo import atomic
    from suelo.orchestrate.block import write_block_raster

    height, width = n_clear.shape
    pixels = height * width
    counts = np.minimum(n_clear, 65534).astype(np.uint16)[None]

    def write_blocks(out: Path) -> None:
        for tile in grid.tiles(512):
            rows, cols, name = tile.rows, tile.cols, f"r{tile.row}_c{tile.col}.tif"
            write_block_raster(out / "landcover" / name, np.ascontiguousarray(planes[:, rows, cols]), tile.grid)
            write_block_raster(out / "nclear" / name, np.ascontiguousarray(counts[:, rows, cols]), tile.grid)

    result = {}
    for name, writer in (("map set (COGs)", write_maps), ("block rasters", write_blocks)):
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for attempt in range(max(repeats, 1)):
            for verify in (False, True):
                atomic.VERIFY_WRITES = verify
                try:
                    started = time.perf_counter()
                    writer(folder / f"{name.split()[0]}_{attempt}_{verify}")
                    seconds[verify].append(time.perf_counter() - started)
                finally:
                    atomic.VERIFY_WRITES = True
        on, off = min(seconds[True]), min(seconds[False])
        result[name] = {
            "on_px_per_s": round(pixels / on, 1),
            "off_px_per_s": round(pixels / off, 1),
            "cost_ratio": round(on / off, 3),
        }
    return result


def _rate(pixels: int, seconds: float) -> dict[str, float]:
    return {"pixels": pixels, "seconds": round(seconds, 3), "px_per_s": round(pixels / max(seconds, 1e-9), 1)}


if __name__ == "__main__":
    main()
