"""Encoder benchmark: the reference-style encoder reproduces parity, agrees with ours, and the benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import encoder as bench
from benchmarks.reference_presto import ReferenceEncoder, load_reference_encoder
from suelo.models.presto import CHANNELS, load_presto_encoder
from tests.fixtures import TEST_DATA

PARITY = TEST_DATA / "presto_parity.npz"
TOL = 1e-4


@pytest.fixture(scope="module")
def reference() -> ReferenceEncoder:
    return load_reference_encoder()


@pytest.mark.parametrize("which", ["", "_full"])
def test_reference_reproduces_parity(reference: ReferenceEncoder, which: str) -> None:
    with np.load(PARITY) as data:
        p = {k: torch.from_numpy(data[k]) for k in data.files}
    x, mask, expected = p[f"x{which}"], p[f"mask{which}"], p[f"embeddings{which}"]
    n = len(x)
    with torch.inference_mode():
        out = reference(x, p["dynamic_world"][:n], p["latlons"][:n], mask, int(p["start_month"]))
    assert float((out - expected).abs().max()) < TOL


def test_ours_matches_reference_with_every_source_present(reference: ReferenceEncoder) -> None:
    # S1, ERA5, SRTM and Dynamic World present (parity only has S2): the token-skipping paths must not change
    # anything. Equal mask counts per sample, as the reference needs: B8A absent, B2 missing in one month.
    rng = np.random.default_rng(3)
    n, t = 24, 7
    x = torch.from_numpy(rng.normal(size=(n, t, len(CHANNELS))).astype(np.float32))
    mask = torch.zeros(n, t, len(CHANNELS), dtype=torch.bool)
    mask[:, :, CHANNELS.index("B8A")] = True
    mask[:, 2, CHANNELS.index("B2")] = True
    dw = torch.from_numpy(np.tile(rng.integers(0, 9, (1, t)), (n, 1)))
    dw[:, 4] = 9  # one month without Dynamic World
    latlons = torch.from_numpy(np.stack([rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)], -1).astype(np.float32))
    ours = load_presto_encoder()
    with torch.inference_mode():
        a = ours(x, mask, dw, latlons, 5)
        b = reference(x, dw, latlons, mask, 5)
    assert float((a - b).abs().max()) < 1e-5


def test_reference_rejects_unequal_masks(reference: ReferenceEncoder) -> None:
    inputs = bench.make_inputs(2, torch.device("cpu"))
    inputs["mask"][0, 3, CHANNELS.index("B2")] = True
    with pytest.raises(ValueError, match="same number of masked tokens"):
        bench.run_reference(reference, inputs, slice(0, 2))


def test_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "encoder.json"
    args = ["--pixels", "256", "--repeats", "1", "--batch", "32", "--ref-batch", "128", "--json", str(out)]
    results = bench.main(args)
    assert json.loads(out.read_text()) == results
    assert set(results["rows"]) == {"reference fp32", "ours fp32", "ours bf16"}
    assert set(results["px_per_s_by_batch"]) == {"reference fp32 @ 128", "ours fp32 @ 32", "ours bf16 @ 32"}
    # ours executes fewer multiply-adds than the model has (the pooled last fc2); the reference all of them
    ours, ref = results["rows"]["ours fp32"], results["rows"]["reference fp32"]
    assert ours["executed_mflop_per_pixel"] < results["model_mflop_per_pixel"] == ref["executed_mflop_per_pixel"]
    assert max(results["parity_max_abs_error"].values()) < TOL
    assert results["ours_vs_reference_max_abs_error"] < TOL
    for row in results["rows"].values():
        assert row["px_per_s"] > 0 and row["gflops"] > 0 and row["of_matmul_peak"] > 0
    assert results["rows"]["reference fp32"]["vs_reference_fp32"] == 1.0


def test_pipeline_stage_benchmark_runs_end_to_end() -> None:
    from benchmarks.pipeline import main

    result = main(["--size", "64", "--encode-pixels", "256"])
    assert set(result["stages"]) == {"ingest", "encode", "classify", "threshold", "write"}
    assert all(stage["px_per_s"] > 0 for stage in result["stages"].values())
    assert abs(sum(stage["share_of_time"] for stage in result["stages"].values()) - 1) < 1e-3
    assert result["projected_tile_hours"] > 0


def test_region_benchmark_counts_every_process_of_the_run() -> None:
    """The whole-run peak adds the children's memory to the command's: a child holding 300 MB must show."""
    import subprocess
    import sys

    from benchmarks.region import TreeMemory

    holder = (  # every byte written, so every page is resident
        "import sys, time; block = b'1' * (300 * 2**20); sys.stdout.write('x'); sys.stdout.flush(); time.sleep(3)"
    )
    parent = "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]])"
    process = subprocess.Popen([sys.executable, "-c", parent, holder], stdout=subprocess.PIPE)
    tree = TreeMemory(process.pid)
    tree.start()
    assert process.stdout.read(1) == b"x"  # the child holds its block now
    process.wait()
    tree.stop()
    assert tree.peak_total_mb >= 300
    assert 0 < tree.peak_root_mb < 150  # the parent itself holds no block


def test_training_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    """benchmarks/train.py on a small generated field set: both runs, the before run stopped by its budget and
    extrapolated, the after run with caps and auto blocks (no timing is asserted)."""
    from benchmarks.train import main

    out, table = tmp_path / "train.json", tmp_path / "TRAIN.md"
    args = ["--cases", "synthetic", "--synthetic-pixels", "3000", "--extent-km", "3", "--before-budget", "0.001",
            "--max-epochs", "5", "--json", str(out), "--markdown", str(table)]  # fmt: skip
    results = main(args)
    assert json.loads(out.read_text()) == results and "| synthetic | after (defaults) |" in table.read_text()
    before, after = results["cases"]["synthetic"]["before"], results["cases"]["synthetic"]["after"]
    assert before["stopping_reason"] == "time_budget" and before["epochs"] == 1 and before["projected_epochs"] == 5
    assert before["samples_fitted"] > after["samples_fitted"] and before["block_m"] == 10_000
    assert after["block_m"] < 10_000 and abs(after["calibration_fraction"] - 0.2) < 0.05
    for row in (before, after):
        assert row["labelled_pixels"] > 2000 and row["wall_seconds"] > 0 and row["peak_rss_mb"] > 0
    assert set(results["head_step_ms"]) == {f"{results['machine']['torch_threads']}_threads", "1_thread"}
    assert 0 <= before["evaluation_overall_accuracy"] <= 1 and results["cases"]["synthetic"]["evaluation_pixels"] > 0
