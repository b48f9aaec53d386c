"""Encoder benchmark: Presto px/s of our encoder against a straightforward reference-style one, same inputs.

    python -m benchmarks.encoder                      # CPU, fp32 and bf16
    python -m benchmarks.encoder --device cuda        # GPU (bf16 autocast, large batches)
    python -m benchmarks.encoder --agreement          # also: fp32 vs bf16 land-cover classes on the demo cube

Inputs are 12-month, Sentinel-2-only pixels (the demo's nine bands, no missing month), so every pixel keeps
``5 * 12 + 1 = 61`` tokens; the reference (``benchmarks.reference_presto``) needs equal mask counts per batch, and
this gives it that. Both encoders run in this process on the same inputs, each at every batch size of a sweep,
interleaved round by round, and the best round of each counts; the headline ratio is best batch against best
batch (absolute numbers move with the machine's load). The reference runs as upstream code would: plain modules
with torch's intra-op threads. Ours runs as the pipeline does (``suelo.models.inference.encode_pixels``). The glibc
allocator tuning of ``suelo.models.inference`` is applied first, so it speeds both alike. Both must reproduce the parity
embeddings (tests/data/presto_parity.npz) within 1e-4 first, ours as it is timed (on CPU the
``suelo.models.cpu_engine.CpuEngine``, whose C kernels and their variant the header names). GFLOP/s count the
multiply-adds each implementation executes (``suelo.models.presto.flops_per_pixel``; on CPU ours skips a sixth of
them, ``cpu_engine.executed_flops_per_pixel``) against a plain 1024^3 matmul loop measured in the same run at the
same thread count; "model GFLOP/s" counts the full model's for both.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.reference_presto import ReferenceEncoder, load_reference_encoder
from suelo.models import cpu_kernels
from suelo.models.cpu_engine import CpuEngine, executed_flops_per_pixel
from suelo.models.inference import GPU_BATCH, encode_pixels, tune_cpu_allocator
from suelo.models.presto import Encoder, flops_per_pixel, load_presto_encoder
from suelo.models.presto_inputs import presto_inputs

PROJECT = Path(__file__).resolve().parents[1]
PARITY = PROJECT / "tests" / "data" / "presto_parity.npz"
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
MONTHS = 12
TOKENS = 5 * MONTHS + 1  # RGB, red edge, NIR 10 m, SWIR, NDVI per month + lat/lon (no B8A in these bands)
TOL = 1e-4


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make_inputs(n: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    reflectance = rng.uniform(0.01, 0.5, size=(n, MONTHS, len(S2_BANDS))).astype(np.float32)
    latlons = np.stack([rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)], -1).astype(np.float32)
    x, mask, dw = presto_inputs(reflectance, S2_BANDS, latlons=latlons)
    arrays = {"x": x, "mask": mask, "dw": dw, "latlons": latlons, "month": np.full(n, 10, dtype=np.int64)}
    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}


def run_ours(encoder: Encoder | CpuEngine, inputs: dict[str, torch.Tensor], sl: slice) -> torch.Tensor:
    i = inputs
    return encoder(i["x"][sl], i["mask"][sl], i["dw"][sl], i["latlons"][sl], i["month"][sl])


def run_reference(encoder: ReferenceEncoder, inputs: dict[str, torch.Tensor], sl: slice) -> torch.Tensor:
    i = inputs
    return encoder(i["x"][sl], i["dw"][sl], i["latlons"][sl], i["mask"][sl], i["month"][sl])


def check_parity(ours: Encoder | CpuEngine, reference: ReferenceEncoder, device: torch.device) -> dict[str, float]:
    """Max abs error of both encoders against the parity embeddings (fp32); raises if either is over 1e-4."""
    with np.load(PARITY) as data:
        p = {k: torch.from_numpy(data[k]).to(device) for k in data.files}
    errors = {}
    with torch.inference_mode():
        for name, mask, x, expected in (
            ("masked", p["mask"], p["x"], p["embeddings"]),
            ("full", p["mask_full"], p["x_full"], p["embeddings_full"]),
        ):
            n = len(x)
            args = (x, mask, p["dynamic_world"][:n], p["latlons"][:n], int(p["start_month"]))
            ours_out = ours(*args)
            ref_out = reference(args[0], args[2], args[3], args[1], args[4])
            errors[f"ours_{name}"] = float((ours_out - expected).abs().max())
            errors[f"reference_{name}"] = float((ref_out - expected).abs().max())
    bad = {k: v for k, v in errors.items() if not v <= TOL}
    if bad:
        raise AssertionError(f"parity error over {TOL}: {bad}")
    return errors


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 1024, seconds: float = 0.5) -> float:
    """GFLOP/s of a plain (size x size) @ (size x size) matmul loop."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        torch.matmul(a, b)
    sync(device)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10 if device.type == "cuda" else 1):
            torch.matmul(a, b)
            n += 1
        sync(device)
    return 2 * size**3 * n / (time.perf_counter() - started) / 1e9


def bf16_agreement(device: torch.device) -> dict[str, float | int]:
    """Share of the demo cube's pixels whose land-cover class (shipped default model) is the same in fp32 and bf16."""
    import tempfile

    import xarray as xr

    from suelo.jobs import ingest
    from suelo.models.artifact import load_artifact
    from suelo.models.inference import encode_cube
    from suelo.settings import load_job

    artifact = load_artifact(PROJECT / "models" / "landcover_default.pt")
    encoder, head = artifact.build_encoder().to(device), artifact.build_head().to(device)
    job = load_job(PROJECT / "workflows" / "demo.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        job = job.model_copy(update={"output": job.output.model_copy(update={"dir": Path(tmp)})})
        result = ingest(job, overwrite=True)
        with xr.open_dataset(result.cube_path) as cube:
            cube = cube.load()
    classes = {}
    for name, fast in (("fp32", False), ("bf16", True)):
        emb = encode_cube(encoder, cube, device=device, fast=fast).values
        with torch.inference_mode():
            logits = head(torch.from_numpy(emb.reshape(-1, emb.shape[-1])).to(device))
        classes[name] = logits.argmax(-1).cpu().numpy()
    same = int((classes["fp32"] == classes["bf16"]).sum())
    return {"pixels": len(classes["fp32"]), "same_class": same, "agreement": same / len(classes["fp32"])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--pixels", type=int, help="pixels per timed round (default 4096 CPU, 262144 CUDA)")
    parser.add_argument("--batch", type=int, help="our batch size (default: a sweep)")
    parser.add_argument("--ref-batch", type=int, help="the reference's batch size (default: a sweep)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the best of each counts")
    parser.add_argument("--threads", type=int, default=cores(), help="torch CPU threads (default: usable cores)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 rows")
    parser.add_argument("--agreement", action="store_true", help="fp32 vs bf16 classes on the demo cube (slow)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    torch.set_num_threads(args.threads)
    n = args.pixels or (262_144 if cuda else 4096)

    ours = load_presto_encoder().to(device)
    reference = load_reference_encoder().to(device)
    if not cuda:
        tune_cpu_allocator()
    timed = ours if cuda else CpuEngine(ours)  # what encode_pixels runs on this device (fp32)
    parity = check_parity(timed, reference, device)
    inputs = make_inputs(n, device)
    host = {k: v.cpu().numpy() for k, v in inputs.items()}
    with torch.inference_mode():
        probe = slice(0, min(n, 256))
        same_inputs_error = float(
            (run_ours(timed, inputs, probe) - run_reference(reference, inputs, probe)).abs().max()
        )

    def ours_fn(batch: int, bf16: bool) -> Callable[[], None]:
        def run() -> None:
            encode_pixels(
                ours, host["x"], host["mask"], host["dw"], host["latlons"], host["month"], batch, device, bf16
            )

        return run

    def reference_fn(batch: int) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for start in range(0, n, batch):
                    run_reference(reference, inputs, slice(start, min(start + batch, n)))
            sync(device)

        return run

    ref_batches = [args.ref_batch] if args.ref_batch else ([GPU_BATCH // 4, GPU_BATCH] if cuda else [64, 128, 256, 512])
    our_batches = [args.batch] if args.batch else ([GPU_BATCH // 4, GPU_BATCH] if cuda else [32, 64, 128, 256])
    runs: dict[tuple[str, int], Callable[[], None]] = {("reference fp32", b): reference_fn(b) for b in ref_batches}
    runs |= {("ours fp32", b): ours_fn(b, False) for b in our_batches}
    if not args.no_bf16:
        runs |= {("ours bf16" if not cuda else "ours bf16 autocast", b): ours_fn(b, True) for b in our_batches}
    for run in runs.values():  # warm-up: allocator, kernels, weight caches
        run()
    best = dict.fromkeys(runs, 0.0)
    peak = {"fp32": 0.0, "bf16": 0.0}
    for _ in range(args.repeats):  # interleaved, so load changes hit every run alike
        for key, run in runs.items():
            sync(device)
            started = time.perf_counter()
            run()
            sync(device)
            best[key] = max(best[key], n / (time.perf_counter() - started))
        peak["fp32"] = max(peak["fp32"], matmul_peak(device, torch.float32))
        if not args.no_bf16:
            peak["bf16"] = max(peak["bf16"], matmul_peak(device, torch.bfloat16))

    model_flops = flops_per_pixel(MONTHS, TOKENS)
    executed = {"reference fp32": model_flops}
    for name, _ in runs:
        executed.setdefault(name, model_flops if cuda else executed_flops_per_pixel(MONTHS, TOKENS))
    rows: dict[str, dict] = {}
    for (name, batch), pps in best.items():
        if name not in rows or pps > rows[name]["px_per_s"]:
            rows[name] = {"batch": batch, "px_per_s": pps}
    ref_pps = rows["reference fp32"]["px_per_s"]
    results = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.backends.cpu.get_cpu_capability()})",
        "cpu_kernels": None if cuda else cpu_kernels.describe(),
        "threads": torch.get_num_threads(),
        "pixels": n,
        "months": MONTHS,
        "tokens_per_pixel": TOKENS,
        "model_mflop_per_pixel": round(model_flops / 1e6, 2),
        "parity_max_abs_error": parity,
        "ours_vs_reference_max_abs_error": same_inputs_error,
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peak.items() if v},
        "px_per_s_by_batch": {f"{name} @ {batch}": round(v, 1) for (name, batch), v in best.items()},
        "rows": {},
    }
    for name, row in rows.items():
        gflops = row["px_per_s"] * executed[name] / 1e9
        peak_used = peak["bf16"] if "bf16" in name else peak["fp32"]
        results["rows"][name] = {
            "batch": row["batch"],
            "px_per_s": round(row["px_per_s"], 1),
            "executed_mflop_per_pixel": round(executed[name] / 1e6, 2),
            "gflops": round(gflops, 1),
            "of_matmul_peak": round(gflops / peak_used, 3),
            "model_gflops": round(row["px_per_s"] * model_flops / 1e9, 1),
            "vs_reference_fp32": round(row["px_per_s"] / ref_pps, 2),
        }
    if args.agreement:
        results["bf16_agreement"] = bf16_agreement(device)

    print(
        f"Presto encoder, {MONTHS} months S2-only ({TOKENS} tokens/px, {model_flops / 1e6:.1f} MFLOP/px), "
        f"{results['device']}, {results['threads']} threads, {n} px, best of {args.repeats} at the best batch"
    )
    if not cuda:
        print(f"CPU kernels: {results['cpu_kernels']}")
    print(f"{'':<20}{'batch':>7}{'px/s':>10}{'GFLOP/s':>9}{'of peak':>9}{'model GFLOP/s':>15}{'x ref':>7}")
    for name, r in results["rows"].items():
        print(
            f"{name:<20}{r['batch']:>7}{r['px_per_s']:>10.0f}{r['gflops']:>9.1f}"
            f"{r['of_matmul_peak']:>9.0%}{r['model_gflops']:>15.1f}{r['vs_reference_fp32']:>7.2f}"
        )
    by_batch = ", ".join(f"{k} {v:.0f}" for k, v in results["px_per_s_by_batch"].items())
    print(f"px/s by batch: {by_batch}")
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in results["matmul_peak_gflops"].items())
    print(f"matmul 1024^3 peak GFLOP/s: {peaks} (bf16 rows are set against the bf16 peak)")
    print(
        f"parity max abs error: {max(parity.values()):.2g}; ours vs reference on these inputs: {same_inputs_error:.2g}"
    )
    if "bf16_agreement" in results:
        a = results["bf16_agreement"]
        print(f"bf16 vs fp32 land-cover class, demo cube: {a['same_class']}/{a['pixels']} = {a['agreement']:.2%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
