"""Faults: killed workers, killed runs, a full disk, a corrupt input found half-way; numerical hygiene.

What must hold after any of them: no partial file at a final path, a manifest whose every block line points at
files with those checksums, and a re-run that completes with the same maps as an undisturbed run.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
import yaml
from affine import Affine

from suelo.orchestrate import MANIFEST
from tests.fixtures import SUELO, assert_nothing_partial, generate_region, map_checksums, suelo

SIZE = 64  # 4 blocks of 32 px, 12 months (as in test_orchestrate)
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_region(tmp_path_factory.mktemp("faults") / "scenes", SIZE, months=12, scenes_per_month=1, seed=3)


def job_file(folder: Path, items: Path, out: Path | None = None, **compute: object) -> Path:
    spec = {
        "name": "region",
        "inputs": [{"kind": "stac", "paths": [str(items)]}],
        "period": {"start": "2021-01-01", "end": "2021-12-31"},
        "ingest": {"bands": BANDS},
        "products": {"landcover": {"target_accuracy": 0.85}},
        "compute": {"block_size": 32, **compute},
        "output": {"dir": str(out or folder / "out"), "cube": False},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def reference(region: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """An undisturbed single-process run, and how long it took."""
    folder = tmp_path_factory.mktemp("reference")
    started = time.monotonic()
    done = suelo("run", str(job_file(folder, region, scheduler="synchronous")))
    assert done.returncode == 0, done.stderr
    return folder / "out", time.monotonic() - started


def wait_for_blocks(process: subprocess.Popen, manifest: Path, blocks: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 1 + blocks:
            return
        time.sleep(0.02)


# -- a worker process dies mid-run ----------------------------------------------------------------------------------


def dask_workers(pid: int) -> list[psutil.Process]:
    workers = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if ("spawn_main" in cmdline or "forkserver" in cmdline) and "resource_tracker" not in cmdline:
            workers.append(child)
    return workers


def test_worker_killed_mid_run(region: Path, reference: tuple[Path, float], tmp_path: Path) -> None:
    job = job_file(tmp_path, region, workers=2, scheduler="local", retries=2)
    manifest = tmp_path / "out" / MANIFEST
    log = open(tmp_path / "stderr.log", "w")  # noqa: SIM115
    process = subprocess.Popen([*SUELO, "run", str(job), "--log-format", "json"],
                               stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    wait_for_blocks(process, manifest, 1)
    assert process.poll() is None, "the run ended before a worker could be killed"
    victims = dask_workers(process.pid)
    assert len(victims) >= 2, [v.cmdline() for v in victims]
    victims[-1].send_signal(signal.SIGKILL)
    code = process.wait(timeout=600)
    log.close()
    assert code in (0, 1), (tmp_path / "stderr.log").read_text()[-3000:]
    assert_nothing_partial(tmp_path / "out", temporaries=True)
    if code == 1:  # the block the worker held was reported failed: a re-run finishes it
        assert "block_failed" in (tmp_path / "stderr.log").read_text()
        again = suelo("run", str(job))
        assert again.returncode == 0, again.stderr
    assert map_checksums(tmp_path / "out") == map_checksums(reference[0])
    assert_nothing_partial(tmp_path / "out")


# -- the whole run killed at random points --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_run_killed_at_random_points(region: Path, reference: tuple[Path, float], tmp_path: Path, seed: int) -> None:
    out, seconds = reference
    job = job_file(tmp_path, region, scheduler="synchronous")
    rng = random.Random(seed)
    for _ in range(2):  # two kills in a row, then a run to completion
        process = subprocess.Popen([*SUELO, "run", str(job)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            process.wait(timeout=rng.uniform(0.5, seconds * 1.1))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert_nothing_partial(tmp_path / "out", temporaries=True)
    done = suelo("run", str(job))
    assert done.returncode == 0, done.stderr
    assert_nothing_partial(tmp_path / "out")  # a resumed run also removes what killed runs left behind
    assert map_checksums(tmp_path / "out") == map_checksums(out)


# -- the disk fills up ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 4 MiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_a_run(region: Path, reference: tuple[Path, float], tmp_path: Path, small_disk: Path) -> None:
    out = small_disk / "out"
    job = job_file(tmp_path, region, out=out, scheduler="synchronous", retries=0)
    needed = sum(p.stat().st_size for p in reference[0].rglob("*") if p.is_file())
    free = psutil.disk_usage(str(small_disk)).free
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(free - needed // 2, 0))  # room for about half of the outputs
    done = suelo("run", str(job))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "No space left" in done.stderr, done.stderr
    assert_nothing_partial(out, temporaries=True)
    assert not (out / "final.json").exists()
    filler.unlink()
    again = suelo("run", str(job))
    assert again.returncode == 0, again.stderr
    assert_nothing_partial(out)
    assert map_checksums(out) == map_checksums(reference[0])


# -- a corrupt input found half-way ---------------------------------------------------------------------------------


def add_south_east_scene(scenes: Path, *, truncate_red: bool) -> None:
    """A September scene covering only the south-east block of the region, appended to the ItemCollection.

    Its values are those of the region's September scene there, with a clear SCL. Only the south-east block reads
    it, so a damaged band is found half-way through a run: after the three other blocks have finished.
    """
    import numpy as np
    from affine import Affine

    folder = scenes / "scene_se"
    folder.mkdir()
    source = scenes / "scene_08_0"
    assets = {}
    for band in [*BANDS, "SCL"]:
        with rasterio.open(source / f"{band}.tif") as src:
            res = src.transform.a
            half = round(SIZE * 10 / res / 2)
            values = src.read(1, window=((half, 2 * half), (half, 2 * half)))
            if band == "SCL":
                values = np.full_like(values, 4)  # vegetation: every pixel clear, so every band is read
            transform = Affine(res, 0, 600000 + SIZE * 5, 0, -res, 5700000 - SIZE * 5)
            profile = {"driver": "GTiff", "width": half, "height": half, "count": 1, "dtype": src.dtypes[0],
                       "crs": src.crs, "transform": transform, "nodata": 0}  # fmt: skip
        path = folder / f"{band}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(values, 1)
        assets[band] = {"href": f"scene_se/{band}.tif"}
    if truncate_red:
        red = folder / "B04.tif"
        red.write_bytes(red.read_bytes()[: red.stat().st_size // 2])
    collection = json.loads((scenes / "items.json").read_text())
    left, top = 600000 + SIZE * 5, 5700000 - SIZE * 5
    collection["features"].append({
        "type": "Feature", "stac_version": "1.0.0", "id": "S2B_MSIL2A_20210920T103000_N0510_R051_T31UFS_se",
        "geometry": None, "links": [], "assets": assets,
        "properties": {"datetime": "2021-09-20T10:30:00Z", "s2:processing_baseline": "05.10",
                       "s2:product_type": "S2MSI2A", "proj:epsg": 32631,
                       "proj:bbox": [left, 5700000 - SIZE * 10, 600000 + SIZE * 10, top]},
    })  # fmt: skip
    (scenes / "items.json").write_text(json.dumps(collection))


def test_corrupt_input_found_half_way(region: Path, tmp_path: Path) -> None:
    # the undisturbed reference: the same region with the south-east scene intact
    intact = tmp_path / "intact"
    shutil.copytree(region.parent, intact)
    add_south_east_scene(intact, truncate_red=False)
    reference = suelo("run", str(job_file(tmp_path / "ref", intact / "items.json", scheduler="synchronous")))
    assert reference.returncode == 0, reference.stderr

    scenes = tmp_path / "scenes"
    shutil.copytree(region.parent, scenes)
    add_south_east_scene(scenes, truncate_red=True)
    job = job_file(tmp_path, scenes / "items.json", scheduler="synchronous", retries=1)
    done = suelo("run", str(job))
    assert done.returncode == 1, done.stderr
    assert "1 block(s) failed" in done.stderr and "scene_se/B04.tif" in done.stderr
    assert "r000032_c000032" in done.stderr
    assert_nothing_partial(tmp_path / "out", temporaries=True)
    kept = len((tmp_path / "out" / MANIFEST).read_text().splitlines()) - 1
    assert kept == 3 and not (tmp_path / "out" / "landcover").exists()

    shutil.copy(intact / "scene_se" / "B04.tif", scenes / "scene_se" / "B04.tif")  # the input is fixed
    resumed = suelo("run", str(job), "--log-format", "json")
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stderr.splitlines() if line.startswith("{")]
    assert next(e for e in events if e["event"] == "start")["already_done"] == 3
    assert [e["block"] for e in events if e["event"] == "block_done"] == ["r000032_c000032"]  # only the failed one
    assert map_checksums(tmp_path / "out") == map_checksums(tmp_path / "ref" / "out")


# -- numerical hygiene ----------------------------------------------------------------------------------------------


def test_nan_inf_and_all_cloudy_pixels_are_nodata(tmp_path: Path) -> None:
    size = 32
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    folder = tmp_path / "tifs"
    folder.mkdir()
    nan_px, inf_px, cloudy_px, partial_px = (3, 4), (10, 20), (25, 7), (16, 16)
    for month in range(1, 13):
        data = np.stack(
            [1000 + 2000 * (0.5 + 0.5 * np.sin(5 * xx + i + month / 3) * np.cos(4 * yy - i)) for i in range(len(BANDS))]
            + [np.full((size, size), 4.0)]
        ).astype(np.float32) + rng.normal(0, 20, (len(BANDS) + 1, size, size)).astype(np.float32)
        data[-1] = 4  # SCL: vegetation
        data[:, nan_px[0], nan_px[1]] = np.nan
        data[2, inf_px[0], inf_px[1]] = np.inf if month % 2 else -np.inf
        data[-1, cloudy_px[0], cloudy_px[1]] = 9  # cloud every month
        if month == 6:
            data[0, partial_px[0], partial_px[1]] = np.nan  # one bad month only: still classified from the others
        with rasterio.open(folder / f"T31UFS_2021{month:02d}15.tif", "w", driver="GTiff", width=size, height=size,
                           count=len(data), dtype="float32", crs="EPSG:32631",
                           transform=Affine(10, 0, 600000, 0, -10, 5700000)) as dst:  # fmt: skip
            dst.write(data)
    spec = {
        "name": "hygiene",
        "inputs": [{"kind": "geotiff", "paths": [str(folder)], "bands": [*BANDS, "SCL"], "add_offset": 0,
                    "nodata": None, "product_level": "L2A"}],
        "period": {"start": "2021-01-01", "end": "2021-12-31"},
        "ingest": {"bands": BANDS},
        "products": {"landcover": {"threshold": 0.0}},  # map every pixel that has a posterior
        "compute": {"block_size": 32, "scheduler": "synchronous"},
        "output": {"cube": False},
    }  # fmt: skip
    outputs = []
    for run in ("a", "b"):  # twice, into two folders: deterministic
        spec["output"]["dir"] = str(tmp_path / run)
        job = tmp_path / f"{run}.yaml"
        job.write_text(yaml.safe_dump(spec))
        done = suelo("run", str(job))
        assert done.returncode == 0, done.stderr
        outputs.append(tmp_path / run)
    assert map_checksums(outputs[0]) == map_checksums(outputs[1])
    with rasterio.open(outputs[0] / "landcover" / "hygiene.tif") as src:
        codes = src.read(1)
    with rasterio.open(outputs[0] / "landcover" / "hygiene_confidence.tif") as src:
        confidence = src.read(1)
    with rasterio.open(outputs[0] / "landcover" / "hygiene_nclear.tif") as src:
        nclear = src.read(1)
    for px in (nan_px, inf_px, cloudy_px):  # no clear observation at all: nodata (0), no confidence (255)
        assert nclear[px] == 0 and codes[px] == 0 and confidence[px] == 255, px
    assert nclear[partial_px] == 11 and codes[partial_px] not in (0, 253, 254)
    others = np.ones(codes.shape, bool)
    for px in (nan_px, inf_px, cloudy_px):
        others[px] = False
    assert (codes[others] != 0).all() and (confidence[others] <= 100).all()
