"""Regional runs: blocks on Dask equal the single-process result; a killed run resumes to identical outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from suelo.orchestrate import MANIFEST
from tests.fixtures import DEMO_JOB, SUELO, generate_region, region_job, suelo

SIZE = 64  # 4 blocks of 32 px, 12 months: small enough for 2 CPU cores, big enough for several blocks


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("region")
    return generate_region(folder / "scenes", SIZE, months=12, scenes_per_month=1, seed=3)


def job_file(folder: Path, items: Path, **compute: object) -> Path:
    return region_job(folder, items, compute=compute)


def checksums(out: Path) -> dict[str, str]:
    """Checksums of the final maps and their companions (the report also records the compute settings and folder)."""
    recorded = json.loads((out / "final.json").read_text())["checksums"]
    maps = {name: sha for name, sha in recorded.items() if not name.startswith("report/")}
    assert len(maps) == 9  # map, aux.xml, qml, STAC item, confidence + qml, nclear + qml; the STAC Collection
    return maps


@pytest.fixture(scope="module")
def single_process(region: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("single")
    done = suelo("run", str(job_file(folder, region, scheduler="synchronous")))
    assert done.returncode == 0, done.stderr
    # not on a terminal: plain progress lines on stdout (the first and last block at least), with the time left
    progress = [line for line in done.stdout.splitlines() if line.startswith("blocks: ")]
    assert progress[0] == "blocks: 4 to run of 4" and progress[-1].startswith("blocks: 4/4 done (100%), ")
    assert all(", eta " in line for line in progress[1:]) and progress[-1].endswith(", eta 0:00:00")
    return folder / "out"


def test_two_local_workers_equal_one_process(region: Path, single_process: Path, tmp_path: Path) -> None:
    done = suelo("run", str(job_file(tmp_path, region, workers=2, scheduler="local")), "--log-format", "json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    workers = {e["worker"] for e in events if e["event"] == "block_done"}
    assert len([e for e in events if e["event"] == "block_done"]) == 4 and len(workers) == 2
    assert [e["event"] for e in events][:2] == ["start", "plan"] and events[-1]["event"] == "run_done"
    assert events[1]["period"] == {"start": "2021-01-01", "end": "2021-12-31", "months": 12}
    assert (events[1]["blocks"], events[1]["to_run"], events[1]["products"]) == (4, 4, ["landcover"])
    assert all(e["eta_s"] >= 0 for e in events if e["event"] == "block_done")  # from the first block on
    assert checksums(tmp_path / "out") == checksums(single_process)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["stats"]["blocks"]["backend"].startswith("dask LocalCluster")
    assert len(run["stats"]["blocks"]["peak_rss_mb_per_worker"]) == 2


def test_killed_run_resumes_without_redoing_blocks(region: Path, single_process: Path, tmp_path: Path) -> None:
    job = job_file(tmp_path, region, scheduler="synchronous")
    manifest = tmp_path / "out" / MANIFEST
    process = subprocess.Popen([*SUELO, "run", str(job)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 3:  # header + 2 finished blocks
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len(manifest.read_text().splitlines()) - 1
    assert 2 <= finished_before < 4
    assert not (tmp_path / "out" / "landcover").exists()  # no final map from an unfinished run
    resumed = suelo("run", str(job), "--log-format", "json")
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stderr.splitlines() if line.startswith("{")]
    start = next(e for e in events if e["event"] == "start")
    assert start["already_done"] == finished_before
    assert len([e for e in events if e["event"] == "block_done"]) == 4 - finished_before
    assert checksums(tmp_path / "out") == checksums(single_process)
    again = suelo("run", str(job))
    assert again.returncode == 0 and "up to date" in again.stdout
    assert again.stderr == "" and "blocks: " not in again.stdout  # nothing to run: no progress lines


def test_failed_block_is_reported_and_exit_code_is_one(region: Path, tmp_path: Path) -> None:
    job = job_file(tmp_path, region, scheduler="synchronous", retries=1)
    # corrupt one scene's SCL (read first by every block): the run must report the failed blocks, not drop them
    broken = tmp_path / "scenes"
    import shutil

    shutil.copytree(region.parent, broken)
    victim = broken / "scene_05_0" / "SCL.tif"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    spec = yaml.safe_load(job.read_text())
    spec["inputs"][0]["paths"] = [str(broken / "items.json")]
    job.write_text(yaml.safe_dump(spec))
    done = suelo("run", str(job))
    assert done.returncode == 1
    assert "4 block(s) failed" in done.stderr and "SCL.tif" in done.stderr
    assert not (tmp_path / "out" / "landcover").exists()


def test_composite_cache_serves_a_rerun_without_decoding_inputs(region: Path, tmp_path: Path) -> None:
    import shutil

    scenes = tmp_path / "scenes"
    shutil.copytree(region.parent, scenes)

    def run(folder: Path, target: float, cache: bool, *options: str) -> Path:
        folder.mkdir(exist_ok=True)
        job = job_file(folder, scenes / "items.json", scheduler="synchronous")
        spec = yaml.safe_load(job.read_text())
        spec["products"]["landcover"]["target_accuracy"] = target
        spec["output"]["cache_composites"] = cache
        job.write_text(yaml.safe_dump(spec))
        done = suelo("run", str(job), *options)
        assert done.returncode == 0, done.stderr
        return folder / "out"

    reference = run(tmp_path / "reference", 0.8, cache=False)
    cached = run(tmp_path / "cached", 0.85, cache=True)
    assert len(list((cached / "cache").rglob("*.nc"))) == 4  # one composite per block
    for tif in scenes.rglob("*.tif"):  # the inputs can no longer be decoded: a re-run can only use the cache
        tif.write_bytes(tif.read_bytes()[: tif.stat().st_size // 2])
    # another threshold: a new plan (--overwrite), every block runs again, its composite from the cache
    rerun = run(tmp_path / "cached", 0.8, True, "--overwrite")
    assert checksums(rerun) == checksums(reference)  # lossless: same maps as from the inputs


def test_bf16_precision_keeps_the_classes(region: Path, single_process: Path, tmp_path: Path) -> None:
    import numpy as np
    import rasterio

    done = suelo("run", str(job_file(tmp_path, region, scheduler="synchronous", precision="bf16")))
    assert done.returncode == 0, done.stderr
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["job"]["compute"]["precision"] == "bf16"

    def read(out: Path, suffix: str = "") -> np.ndarray:
        with rasterio.open(out / "landcover" / f"region{suffix}.tif") as src:
            return src.read(1)

    fp32_classes, bf16_classes = read(single_process), read(tmp_path / "out")
    assert (fp32_classes == bf16_classes).mean() >= 0.98
    assert (read(single_process, "_confidence") != read(tmp_path / "out", "_confidence")).any()  # really bf16


@pytest.mark.parametrize(
    ("cores", "urban_atlas", "expected"), [(2, False, 2), (16, False, 4), (16, True, 3), (1, True, 1)]
)
def test_default_workers_keep_a_run_under_4_gb(
    cores: int, urban_atlas: bool, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from suelo.orchestrate import default_workers
    from suelo.settings import load_job

    job = load_job(DEMO_JOB)
    products = job.products.model_copy(
        update={"urban_atlas": job.products.urban_atlas.model_copy(update={"enabled": urban_atlas})}
    )
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert default_workers(job.model_copy(update={"products": products})) == expected


def test_the_whole_cube_comes_from_the_blocks_composites_decoding_inputs_once(
    region: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import xarray as xr

    import suelo.composite
    from suelo.jobs import ingest, run
    from suelo.settings import load_job

    decoded: list[int] = []
    real = suelo.composite.composite_block

    def counting(scenes: object, block: object, ingest_spec: object) -> object:
        decoded.append(1)
        return real(scenes, block, ingest_spec)

    monkeypatch.setattr(suelo.composite, "composite_block", counting)
    job_path = job_file(tmp_path, region, scheduler="synchronous")
    spec = yaml.safe_load(job_path.read_text())
    spec["output"]["cube"] = True
    job_path.write_text(yaml.safe_dump(spec))
    job = load_job(job_path)
    result = run(job)
    assert result.cube is not None and not result.cube.skipped
    assert len(decoded) == 4 * 12  # each block's scenes of each month, once: none a second time for the cube
    assert (tmp_path / "out" / "blocks" / "cube").is_dir()

    # the same values as the cube `suelo ingest` composites from the inputs, packed the same way
    alone = load_job(job_path).model_copy(
        update={"output": job.output.model_copy(update={"dir": tmp_path / "ingest-only"})}
    )
    ingest(alone)
    with (
        xr.open_dataset(result.cube.cube_path, mask_and_scale=False) as assembled,
        xr.open_dataset(tmp_path / "ingest-only" / "cube" / "cube.nc", mask_and_scale=False) as direct,
    ):
        assert assembled.attrs["job_digest"] == direct.attrs["job_digest"]
        for name in ("reflectance", "valid", "clear_count", "n_clear", "x", "y", "time"):
            assert assembled[name].dtype == direct[name].dtype, name
            assert np.array_equal(assembled[name].values, direct[name].values), name
        assert assembled["spatial_ref"].attrs["GeoTransform"] == direct["spatial_ref"].attrs["GeoTransform"]

    decoded.clear()
    again = run(load_job(job_path))
    assert again.skipped and decoded == []  # done: nothing decoded, the cube kept


def test_a_job_that_now_writes_the_cube_redoes_the_blocks_for_their_composites(region: Path, tmp_path: Path) -> None:
    job = job_file(tmp_path, region, scheduler="synchronous")
    assert suelo("run", str(job)).returncode == 0
    assert not (tmp_path / "out" / "cube").exists()
    spec = yaml.safe_load(job.read_text())
    spec["output"]["cube"] = True
    job.write_text(yaml.safe_dump(spec))
    done = suelo("run", str(job))
    assert done.returncode == 0, done.stderr
    assert "(4 of 4 blocks run)" in done.stdout  # the maps' plan is the same, but the blocks had no composites
    assert (tmp_path / "out" / "cube" / "cube.nc").is_file()
    assert "cube/cube.nc" in json.loads((tmp_path / "out" / "final.json").read_text())["files"]


def test_l1c_inputs_are_a_caveat_of_the_report() -> None:
    from types import SimpleNamespace

    from suelo.orchestrate.assemble import input_caveats

    assert input_caveats([SimpleNamespace(level="L2A")] * 3) == ()
    (caveat,) = input_caveats([SimpleNamespace(level="L1C"), SimpleNamespace(level="L2A")])
    assert caveat.startswith("1 of 2 inputs are L1C (top-of-atmosphere reflectance")


def test_transient_errors_are_retried_and_reported_bad_input_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """A block failing on an error that may be transient is run again, each retry reported first (the JSON
    block_retry event); one failing on bad input fails at once."""
    import io
    from types import SimpleNamespace

    from suelo.errors import InputError
    from suelo.orchestrate import backends
    from suelo.orchestrate.plan import Block
    from suelo.orchestrate.progress import Progress

    errors: list[BaseException] = [OSError("disk hiccup"), OSError("again")]

    def flaky(plan: object, block: Block) -> dict:
        if errors:
            raise errors.pop(0)
        return {"block": block.block_id, "pixels": 4}

    monkeypatch.setattr(backends, "process_block", flaky)
    log = io.StringIO()
    progress = Progress(1, 0, "json", log_stream=log)
    done, failed = [], []
    block = Block(0, 0, 2, 2)
    backends.run_here(SimpleNamespace(), block, 2, done.append, failed.append, progress.block_retry)
    assert [d["block"] for d in done] == [block.block_id] and failed == []
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    retries = [e for e in events if e["event"] == "block_retry"]
    assert [(e["attempt"], e["error"]) for e in retries] == [(2, "OSError: disk hiccup"), (3, "OSError: again")]
    # out of retries: failed after retries + 1 attempts
    errors[:] = [OSError("a"), OSError("b")]
    backends.run_here(SimpleNamespace(), block, 1, done.append, failed.append, progress.block_retry)
    assert [(f.attempts, f.error) for f in failed] == [(2, "OSError: b")]
    # bad input: no retry
    errors[:] = [InputError("scene.tif", "truncated")]
    log.truncate(0)
    backends.run_here(SimpleNamespace(), block, 3, done.append, failed.append, progress.block_retry)
    assert failed[-1].attempts == 1 and "truncated" in failed[-1].error
    assert "block_retry" not in log.getvalue()
