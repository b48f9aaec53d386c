"""Training benchmark: `suelo train` on polygons before and after training scaled (caps, early stopping, blocks).

    python -m benchmarks.train                      # both cases; tables on stdout
    python -m benchmarks.train --json benchmarks/train_results.json --markdown benchmarks/TRAIN.md

Two polygon label sets, each trained twice through ``suelo.samples.load_samples`` and
``suelo.train.train_model``:

- ``slovenia``: eo-learn's 1 km patch (``data/slovenia``, real Sentinel-2 L1C): the cube of
  ``workflows/slovenia.yaml`` and the polygons ``LULC.gpkg`` (class column ``LULC_ID``, legend
  ``data/legends/eolearn_lulc.yaml``), about 10,000 labelled pixels;
- ``synthetic``: about 100,000 labelled pixels of rectangular fields over a generated 15 km x 15 km cube (20 m
  pixels, 12 months, six classes with their own spectra and seasons, two of them close, per-field and per-pixel
  variation, 10 % cloudy months, 5 % of the training fields labelled with a wrong class), the extent where 10 km
  blocks put a user's calibration split far from 20 %. A tenth of the fields, with their true class, are held out
  of training and score both runs' models on the same pixels ("held-out fields"); the calibration figures of the
  two runs are on different calibration splits (different blocks) and carry the label noise.

"before" is the old behaviour, reproduced with options (``TrainConfig.legacy``): every pixel, a fixed 200 epochs,
no early stopping, 10 km blocks. On the synthetic set it is stopped by a time budget (``--before-budget``) and the
200 epochs are extrapolated from its measured time per epoch (said in the table). On the Slovenia patch 10 km
blocks cannot split at all (one block), so "before" is run with the 250 m blocks its tests use. "after" is the
defaults (50 pixels per polygon, 20,000 per class, early stopping on a stopping split, patience 10, auto blocks).

Reported: labelled pixels, training samples fitted, epochs and why training stopped, embedding and epoch seconds,
wall time, training throughput (labelled pixels per second of wall time, and sample-epochs per second of the
epochs), peak RSS of the process during the run (``benchmarks.ingest.PeakRss``), the block size and the
calibration fraction achieved (asked: 20 %), and the head's overall accuracy and macro-F1 on the calibration split
(the RandomForest baseline is left out of both runs: its cost is its own). Times move with the machine's load.
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

PROJECT = Path(__file__).resolve().parents[1]
SLOVENIA = PROJECT / "data" / "slovenia"
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
# six classes: reflectance per band (B02..B12) at the season's peak, and how strongly each follows the season;
# crops and temporary grasses differ only a little (in brightness and season), so the head has something to learn
SIGNATURES = {
    1: ([0.05, 0.08, 0.07, 0.12, 0.22, 0.26, 0.30, 0.24, 0.14], 0.8),  # temporary crops: a strong season
    2: ([0.05, 0.08, 0.07, 0.12, 0.23, 0.27, 0.31, 0.24, 0.14], 0.65),  # temporary grasses: a weaker one
    5: ([0.03, 0.05, 0.03, 0.08, 0.22, 0.27, 0.30, 0.15, 0.07], 0.2),  # trees
    4: ([0.04, 0.07, 0.05, 0.10, 0.24, 0.29, 0.32, 0.20, 0.10], 0.5),  # grassland
    8: ([0.07, 0.06, 0.04, 0.03, 0.02, 0.02, 0.02, 0.01, 0.01], 0.05),  # water
    7: ([0.10, 0.11, 0.12, 0.14, 0.16, 0.17, 0.18, 0.22, 0.20], 0.05),  # built-up
}


def generate_fields(
    folder: Path, pixels: int, extent_km: float = 15.0, resolution: float = 20.0, seed: int = 0
) -> tuple[Path, Path, Path]:
    """A cube over ``extent_km`` x ``extent_km`` and non-overlapping rectangular fields holding about ``pixels``
    pixel centres: 90 % of the fields (5 % of them with a wrong class) for training, the other 10 % with their
    true class for scoring every model on the same fields; returns (cube.nc, fields.gpkg, evaluation.gpkg)."""
    import geopandas as gpd
    import xarray as xr
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from shapely.geometry import box

    from suelo.composite import write_cube
    from suelo.grid import Grid, attach_grid

    rng = np.random.default_rng(seed)
    side = round(extent_km * 1000 / resolution)
    origin = (600_000.0, 5_000_000.0)
    grid = Grid(CRS.from_epsg(32631), Affine(resolution, 0, origin[0], 0, -resolution, origin[1]), side, side)
    codes = np.array(sorted(SIGNATURES))
    occupied = np.zeros((side, side), dtype=bool)
    fields, classes, covered = [], [], 0
    for _ in range(pixels * 10):  # rejection sampling; ends long before this bound
        if covered >= pixels:
            break
        area = float(np.clip(rng.lognormal(np.log(150), 0.9), 12, 5000))  # pixels: 0.5 ha to 200 ha
        aspect = rng.uniform(0.4, 2.5)
        h = max(3, round(float(np.sqrt(area / aspect))))
        w = max(3, round(area / h))
        r, c = int(rng.integers(0, side - h)), int(rng.integers(0, side - w))
        if occupied[max(r - 1, 0) : r + h + 1, max(c - 1, 0) : c + w + 1].any():
            continue
        occupied[r : r + h, c : c + w] = True
        fields.append((r, c, h, w))
        classes.append(int(rng.choice(codes)))
        covered += h * w
    truth = list(classes)
    for k in np.flatnonzero(rng.random(len(classes)) < 0.05):  # 5 % of fields labelled wrongly, as real sets are
        classes[k] = int(rng.choice(codes[codes != classes[k]]))
    # every pixel gets a class (fields their own, the rest at random) so the cube has data everywhere
    class_map = rng.choice(codes, size=(side, side))
    for (r, c, h, w), k in zip(fields, truth, strict=True):
        class_map[r : r + h, c : c + w] = k
    months = np.arange(12)
    season = 0.5 + 0.5 * np.sin(2 * np.pi * (months - 3) / 12)  # peak in summer
    reflectance = np.empty((12, len(BANDS), side, side), dtype=np.float32)
    field_gain = np.ones((side, side), dtype=np.float32)
    for r, c, h, w in fields:  # one field is drier, denser or later than another of its class
        field_gain[r : r + h, c : c + w] = rng.uniform(0.7, 1.3)
    for k in codes:
        peak, amplitude = SIGNATURES[int(k)]
        curve = (1 - amplitude) + amplitude * season  # (12,)
        where = class_map == k
        for b in range(len(BANDS)):
            reflectance[:, b][:, where] = (peak[b] * curve)[:, None] * field_gain[where][None]
    reflectance *= rng.normal(1.0, 0.15, reflectance.shape).astype(np.float32)
    valid = rng.random((12, side, side)) >= 0.1  # 10 % cloudy months
    reflectance[np.broadcast_to(~valid[:, None], reflectance.shape)] = np.nan
    times = np.arange(np.datetime64("2021-01", "M"), np.datetime64("2022-01", "M")).astype("datetime64[ns]")
    cube = xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), reflectance),
            "valid": (("time", "y", "x"), valid),
            "clear_count": (("time", "y", "x"), valid.astype(np.uint16)),
            "n_clear": (("y", "x"), valid.sum(axis=0).astype(np.uint16)),
        },
        coords={"time": times, "band": list(BANDS)},
        attrs={"crs": grid.crs.to_string(), "scenes": "[]"},
    )
    cube = attach_grid(cube, grid)
    cube_path, fields_path, evaluation_path = folder / "cube.nc", folder / "fields.gpkg", folder / "evaluation.gpkg"
    write_cube(cube, cube_path)
    # polygons 1 m inside their pixels' outer edges: exactly the h x w pixel centres fall inside
    geometries = [
        box(origin[0] + c * resolution + 1, origin[1] - (r + h) * resolution + 1,
            origin[0] + (c + w) * resolution - 1, origin[1] - r * resolution - 1)
        for r, c, h, w in fields
    ]  # fmt: skip
    held_out = rng.random(len(fields)) < 0.1
    table = gpd.GeoDataFrame({"code": classes, "truth": truth, "geometry": geometries}, crs="EPSG:32631")
    table[~held_out].drop(columns="truth").to_file(fields_path)
    table[held_out].drop(columns="code").to_file(evaluation_path)
    return cube_path, fields_path, evaluation_path


def slovenia_inputs(folder: Path) -> tuple[Path, Path]:
    """The Slovenia patch's cube (ingested as tests/system/test_slovenia.py does) and its polygons."""
    from suelo.jobs import ingest
    from suelo.settings import load_job

    job = load_job(PROJECT / "workflows" / "slovenia.yaml")
    job = job.model_copy(update={"output": job.output.model_copy(update={"dir": folder})})
    return ingest(job).cube_path, SLOVENIA / "LULC.gpkg"


def run_training(
    samples: Any, legend: Any, config: Any, extrapolate_to: int | None = None, evaluation: Any = None
) -> dict[str, Any]:
    """Train once; the figures of the run (and, when it was stopped by its time budget, the projection to
    ``extrapolate_to`` epochs at its measured time per epoch; with ``evaluation`` samples, the model's overall
    accuracy and macro-F1 on them, outside the timed run)."""
    from suelo.train import train_model

    lines: list[str] = []
    started = time.perf_counter()
    with PeakRss() as memory:
        try:
            result = train_model(samples, legend, config, log=lines.append)
        except Exception as exc:  # a configuration the old behaviour cannot split: reported, not raised
            return {"labelled_pixels": len(samples), "error": " ".join(str(exc).split())}
    wall = time.perf_counter() - started
    meta = result.artifact.meta
    training, split = meta["training"], meta["split"]
    head = training["stopping"]["head"]
    epoch_seconds = head["seconds"]
    embed_seconds = max(wall - epoch_seconds, 0.0)  # embedding, calibration and scoring around the epochs
    row: dict[str, Any] = {
        "labelled_pixels": len(samples),
        "samples_fitted": split["n_fit"],
        "stopping_samples": split["n_stopping"],
        "epochs": training["epochs"],
        "stopping_reason": training["stopping_reason"],
        "epoch_seconds": round(epoch_seconds, 2),
        "other_seconds": round(embed_seconds, 2),
        "wall_seconds": round(wall, 2),
        "labelled_px_per_s": round(len(samples) / wall, 1),
        "sample_epochs_per_s": round(split["n_fit"] * training["epochs"] / max(epoch_seconds, 1e-9), 1),
        "peak_rss_mb": round(memory.peak_mb, 0),
        "block_m": split["block_m"],
        "calibration_fraction": split["achieved"]["calibration"],
        "overall_accuracy": round(meta["metrics"]["validation"]["overall_accuracy"], 4),
        "macro_f1": round(meta["metrics"]["validation"]["macro_f1"], 4),
        "log": lines,
    }
    if evaluation is not None:
        from suelo.evaluate import classification_metrics, predict_samples

        _probs, predicted, _outside = predict_samples(result.artifact, evaluation, "cpu")
        scored = classification_metrics(evaluation.labels, predicted, result.artifact.legend)
        row["evaluation_overall_accuracy"] = round(scored["overall_accuracy"], 4)
        row["evaluation_macro_f1"] = round(scored["macro_f1"], 4)
    if extrapolate_to and training["stopping_reason"] == "time_budget":
        per_epoch = epoch_seconds / training["epochs"]
        row["projected_epochs"] = extrapolate_to
        row["projected_wall_seconds"] = round(embed_seconds + per_epoch * extrapolate_to, 1)
        row["projected_labelled_px_per_s"] = round(len(samples) / row["projected_wall_seconds"], 1)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=("slovenia", "synthetic"), default=["slovenia", "synthetic"])
    parser.add_argument("--synthetic-pixels", type=int, default=100_000)
    parser.add_argument("--extent-km", type=float, default=15.0)
    parser.add_argument("--before-budget", type=float, default=150.0,
                        help="seconds for the synthetic 'before' run; 200 epochs are extrapolated from it")  # fmt: skip
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--evaluation-pixels", type=int, default=5000, help="held-out field pixels scored")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)

    from suelo.legend import load_legend
    from suelo.samples import load_samples
    from suelo.settings import DEFAULT_BANDS
    from suelo.train import TrainConfig

    results: dict[str, Any] = {"cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        from suelo.composite import open_cube

        if "slovenia" in args.cases:
            cube_path, labels = slovenia_inputs(Path(tmp) / "slovenia")
            legend = load_legend(PROJECT / "data" / "legends" / "eolearn_lulc.yaml")
            samples = load_samples([labels], legend, open_cube(cube_path), "LULC_ID", DEFAULT_BANDS)
            common = {"bands": DEFAULT_BANDS, "rf_baseline": False, "max_epochs": args.max_epochs}
            results["cases"]["slovenia"] = {
                "what": "eo-learn Slovenia patch, 1 km, real L1C, LULC.gpkg polygons",
                "before_10km": run_training(samples, legend, TrainConfig.legacy(**common)),
                "before": run_training(samples, legend, TrainConfig.legacy(**common, block_m=250.0)),
                "after": run_training(samples, legend, TrainConfig(**common)),
            }
        if "synthetic" in args.cases:
            started = time.perf_counter()
            cube_path, labels, held_out = generate_fields(Path(tmp), args.synthetic_pixels, args.extent_km)
            legend = load_legend()
            samples = load_samples([labels], legend, open_cube(cube_path), "code", BANDS)
            evaluation = load_samples([held_out], legend, open_cube(cube_path), "truth", BANDS)
            pick = np.random.default_rng(0).permutation(len(evaluation))[: args.evaluation_pixels]
            evaluation = evaluation.subset(np.sort(pick))
            generated = round(time.perf_counter() - started, 1)
            common = {"rf_baseline": False, "max_epochs": args.max_epochs}
            before = TrainConfig.legacy(**common, time_budget_s=args.before_budget)
            results["cases"]["synthetic"] = {
                "what": f"{len(samples)} labelled px of generated fields over {args.extent_km:g} km, 20 m pixels",
                "generation_seconds": generated,
                "evaluation_pixels": len(evaluation),
                "before": run_training(samples, legend, before, args.max_epochs, evaluation),
                "after": run_training(samples, legend, TrainConfig(**common), evaluation=evaluation),
            }
    results["head_step_ms"] = head_step_ms()
    results["machine"] = _machine()
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(document(results) + "\n")
    return results


def head_step_ms(steps: int = 300, batch: int = 64) -> dict[str, float]:
    """Median milliseconds of one AdamW step of the default head (128 -> 64 -> 5, batch 64) with torch's default
    threads and with one thread, as train_model now trains the head: the cost of threads waiting on each other
    at every tiny op, which the old training paid (and the "before" runs here no longer do)."""
    import torch
    import torch.nn.functional as F

    from suelo.models.heads import HeadConfig, MLPHead

    default = torch.get_num_threads()
    out = {}
    for label, threads in ((f"{default}_threads", default), ("1_thread", 1)):
        torch.set_num_threads(threads)
        try:
            torch.manual_seed(0)
            head = MLPHead(HeadConfig(128, 64, 0.2, 5))
            opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
            x, y = torch.randn(batch, 128), torch.randint(0, 5, (batch,))
            times = []
            for _ in range(steps):
                started = time.perf_counter()
                loss = F.cross_entropy(head(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - started)
            out[label] = round(1000 * float(np.median(times)), 3)
        finally:
            torch.set_num_threads(default)
    return out


def _machine() -> dict[str, Any]:
    import os

    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def document(results: dict[str, Any]) -> str:
    """benchmarks/TRAIN.md: what was run, the table, and how to read it."""
    machine = results["machine"]
    synthetic = results["cases"].get("synthetic", {})
    budget = synthetic.get("before", {}).get("projected_epochs", 200)
    return "\n".join([
        "# Training benchmark (`python -m benchmarks.train`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine['cpus']} CPU cores (torch {machine['torch']}, "
        f"{machine['torch_threads']} threads), no GPU, while other work shared the machine: times move with its "
        "load, the ratios between runs of one case less so.",
        "",
        "- before: the old behaviour, reproduced with `TrainConfig.legacy()`: every labelled pixel, a fixed 200 "
        "epochs, no early stopping, 10 km blocks. The synthetic before run is stopped by a time budget and its "
        f"{budget} epochs are extrapolated from its measured seconds per epoch. On the Slovenia patch 10 km "
        "blocks cannot split the samples at all (one block), so it is also run with 250 m blocks, as its tests do.",
        "- after: the defaults: at most 50 pixels per polygon and 20,000 per class in the train split, early "
        "stopping (patience 10) on a stopping split of whole blocks (15 % of the train split), blocks sized from "
        "the samples' extent (`block_m=\"auto\"`).",
        "- The head is trained on one thread in both (it now always is): the last line gives one training step's "
        "cost with torch's default threads and with one in this run. On a quiet machine they are the same; while "
        "other work shared the 2 cores, the same step took 12-69 ms with 2 threads against 1.1 ms with one "
        "(measured while developing, not in this run), a cost the old code paid on top of the before figures.",
        "- labelled px/s: labelled pixels per second of the whole `train_model` call (embedding, epochs, "
        "calibration; the RandomForest baseline is off in both runs). sample-epochs/s: fitted samples x epochs "
        "per second of the epochs. other s: everything but the epochs, mostly the embedding (before embeds every "
        "pixel, after only the thinned train split and the calibration split). Peak RSS: the whole process.",
        "- calibration OA / macro-F1: on each run's own calibration split (the same split for both Slovenia runs "
        "with 250 m blocks; different splits for the synthetic runs, with 5 % wrong labels). held-out fields: the "
        "same 10 % of the synthetic fields, true labels, never trained on, scored by both runs' models.",
        "",
        markdown(results),
        "",
    ])  # fmt: skip


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table, one row per case and run."""
    header = (
        "| case | run | labelled px | fitted samples | epochs (why stopped) | block, calibration share (asked 20 %) | "
        "epochs s | other s | wall s | labelled px/s | sample-epochs/s | peak RSS MB | calibration OA / macro-F1 | "
        "held-out fields OA / macro-F1 |"
    )
    columns = header.count("|") - 1
    lines = [header, "|" + "---|" * columns]
    labels = {"before_10km": "before, 10 km blocks", "before": "before", "after": "after (defaults)"}
    for case, runs in results["cases"].items():
        for run in ("before_10km", "before", "after"):
            row = runs.get(run)
            if row is None:
                continue
            label = "before, 250 m blocks" if case == "slovenia" and run == "before" else labels[run]
            if "error" in row:
                lines.append(
                    f"| {case} | {label} | {row['labelled_pixels']:,} | | fails: {row['error']} |"
                    + " |" * (columns - 5)
                )
                continue
            wall = f"{row['wall_seconds']:,.0f}"
            rate = f"{row['labelled_px_per_s']:,.0f}"
            epochs = f"{row['epochs']} ({row['stopping_reason'].replace('_', ' ')})"
            if "projected_wall_seconds" in row:
                wall += f" ({row['projected_epochs']} epochs: {row['projected_wall_seconds']:,.0f})"
                rate += f" ({row['projected_epochs']} epochs: {row['projected_labelled_px_per_s']:,.0f})"
                epochs += f", extrapolated to {row['projected_epochs']}"
            held_out = (
                f"{row['evaluation_overall_accuracy']:.3f} / {row['evaluation_macro_f1']:.3f}"
                if "evaluation_overall_accuracy" in row
                else "-"
            )
            lines.append(
                f"| {case} | {label} | {row['labelled_pixels']:,} | {row['samples_fitted']:,} | {epochs} | "
                f"{row['block_m']:g} m, {row['calibration_fraction']:.1%} | {row['epoch_seconds']:,.1f} | "
                f"{row['other_seconds']:,.1f} | {wall} | {rate} | {row['sample_epochs_per_s']:,.0f} | "
                f"{row['peak_rss_mb']:,.0f} | {row['overall_accuracy']:.3f} / {row['macro_f1']:.3f} | {held_out} |"
            )
    steps = results.get("head_step_ms")
    if steps:
        shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in steps.items())
        lines += ["", f"Head training step (batch 64, median ms): {shown}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
