"""Re-run the attack of issue 15 and print its table: what was tried, and what survived.

    .venv/bin/python tests/system/attack.py [--kills 19] [--worker-kills 4] [--fuzz 2200] \
        [--only kills,disk,hostile,fuzz]

Not part of the test run (a script, not ``test_*.py``): it takes minutes and needs root for the tmpfs cases. Each
part is the attack as the issue describes it, on the demo sample:

- **kills**: a 16-block job (``compute.block_size: 32``, land cover and urban atlas) SIGKILLed at random moments,
  the main process (synchronous scheduler) and a Dask worker (local cluster); survived = the resumed run ends with
  maps byte-identical to an undisturbed run's and no temporary left behind;
- **disk**: the output folder on a tmpfs of 1, 1.5 and 2 MiB; survived = the run fails with one line and no
  traceback, nothing empty or unreadable is at a final path or in the manifest, and after the tmpfs is enlarged the
  resume (and a run with ``--overwrite``) ends with the undisturbed maps;
- **hostile**: hrefs and files that try to read what the run was not given; survived = ``validate`` refuses each
  with exit 2 and one line;
- **fuzz**: random job specs (the property-based generator of ``tests/system/test_fuzz.py``, half of them with the real
  demo inputs so they reach the planning stage) through ``suelo validate``; survived = exit 0 or a one-line error,
  never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests.fixtures when run as a script
from tests.fixtures import DEMO_JOB as DEMO
from tests.fixtures import SAMPLE_ITEMS as ITEMS
from tests.fixtures import SUELO, assert_nothing_partial, demo_spec, map_checksums, suelo


def job(folder: Path, out: Path, **compute: object) -> Path:
    """The demo job, 16 blocks of 32 px, both products."""
    spec = demo_spec()
    spec["output"] = {"dir": str(out), "cube": True}
    spec["compute"] = {"block_size": 32, **compute}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def nothing_partial(out: Path, *, temporaries: bool = False) -> bool:
    """Whether :func:`tests.fixtures.assert_nothing_partial` holds (a line torn by a full disk is ignored on resume)."""
    try:
        assert_nothing_partial(out, temporaries=temporaries, torn_lines=True)
    except AssertionError:
        return False
    return True


def reference(root: Path) -> tuple[dict[str, str], float]:
    started = time.monotonic()
    done = suelo("run", str(job(root / "reference", root / "reference" / "out", scheduler="synchronous")))
    assert done.returncode == 0, done.stderr
    return map_checksums(root / "reference" / "out", count=None), time.monotonic() - started


def kills(root: Path, n_main: int, n_worker: int, seed: int = 0) -> list[tuple[str, int, int]]:
    expected, seconds = reference(root)
    rng = random.Random(seed)
    rows = []
    for label, count, compute in (
        ("SIGKILL of the main process (synchronous)", n_main, {"scheduler": "synchronous"}),
        ("SIGKILL of a Dask worker (local cluster, 2 workers)", n_worker, {"workers": 2}),
    ):
        survived = 0
        for i in range(count):
            folder = root / f"kill-{label[:20].replace(' ', '_')}-{i}"
            path = job(folder, folder / "out", **compute)
            process = subprocess.Popen([*SUELO, "run", str(path)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(rng.uniform(1.0, seconds * (1.0 if "main" in label else 3.0)))
            if "main" in label:
                process.send_signal(signal.SIGKILL)
            else:
                import psutil

                workers = [c for c in psutil.Process(process.pid).children(recursive=True) if "python" in c.name()]
                if workers:
                    workers[-1].send_signal(signal.SIGKILL)
            process.wait()
            done = suelo("run", str(path))
            ok = done.returncode == 0 and map_checksums(folder / "out", count=None) == expected
            ok = ok and nothing_partial(folder / "out")
            survived += ok
            shutil.rmtree(folder, ignore_errors=True)
        rows.append((label, count, survived))
    return rows


def disk_full(root: Path, sizes_mib: tuple[float, ...] = (1, 1.5, 2)) -> list[tuple[str, int, int]]:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return [("output folder on a small tmpfs (needs root and mount): skipped", 0, 0)]
    expected, _ = reference(root)
    rows = []
    for size in sizes_mib:
        mount = root / f"disk-{size}"
        mount.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size * 1024)}k", "tmpfs", str(mount)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            rows.append((f"{size} MiB tmpfs: cannot mount ({done.stderr.strip()})", 0, 0))
            continue
        try:
            path = job(root / f"disk-job-{size}", mount / "out", scheduler="synchronous", retries=0)
            first = suelo("run", str(path))
            lines = first.stderr.strip().splitlines()
            failed_cleanly = first.returncode != 0 and "Traceback" not in first.stderr and len(lines) >= 1
            sound = nothing_partial(mount / "out", temporaries=True)
            subprocess.run(["mount", "-o", "remount,size=256m", str(mount)], check=True)
            resumed = suelo("run", str(path))
            ok_resume = resumed.returncode == 0 and map_checksums(mount / "out", count=None) == expected
            overwrite = suelo("run", str(path), "--overwrite")
            ok_overwrite = overwrite.returncode == 0 and map_checksums(mount / "out", count=None) == expected
            ok = failed_cleanly and sound and ok_resume and ok_overwrite and nothing_partial(mount / "out")
            message = lines[-1][:100] if lines else ""
            rows.append((f"{size} MiB tmpfs (first run: exit {first.returncode}, {message!r})", 1, int(ok)))
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
    return rows


def hostile(root: Path) -> list[tuple[str, int, int]]:
    """Hrefs and files that reach for what the run was not given; each must be refused by validate."""
    secret = root / "secret.txt"
    secret.write_text("the run was not given this\n" * 100)
    items = json.loads(ITEMS.read_text())
    sample = ITEMS.parent
    cases: dict[str, object] = {}
    vrt = root / "hostile" / "band.vrt"
    vrt.parent.mkdir(parents=True, exist_ok=True)
    vrt.write_text(
        f'<VRTDataset rasterXSize="100" rasterYSize="100"><VRTRasterBand dataType="Byte" band="1" '
        f'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="0">{secret}</SourceFilename>'
        "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>100</LineOffset>"
        "</VRTRasterBand></VRTDataset>"
    )
    for name, href in (
        ("VRT over a local file", str(vrt)),
        ("file:// URL", f"file://{secret}"),
        ("../ traversal", "../../../../../../../../etc/passwd"),
        ("/vsistdin/", "/vsistdin/"),
        ("/vsicurl/ of a file:// URL", f"/vsicurl/file://{secret}"),
        ("ftp:// href", "ftp://127.0.0.1/b04.tif"),
        ("remote VRT", "http://127.0.0.1:9/band.vrt"),
    ):
        changed = json.loads(json.dumps(items))
        for feature in changed["features"]:
            for asset in feature["assets"].values():
                if asset["href"].endswith("B04.tif"):
                    asset["href"] = href
        cases[name] = changed
    results = []
    for name, document in cases.items():
        folder = root / "hostile" / name.replace("/", "_").replace(" ", "_")
        shutil.copytree(sample, folder, dirs_exist_ok=True)
        (folder / "items.json").write_text(json.dumps(document))
        spec = yaml.safe_load(DEMO.read_text())
        spec["inputs"][0]["paths"] = [str(folder / "items.json")]
        spec["output"]["dir"] = str(folder / "out")
        (folder / "job.yaml").write_text(yaml.safe_dump(spec))
        results.append((name, folder / "job.yaml"))
    # a symlink inside the sample folder that points outside it
    link_folder = root / "hostile" / "symlink"
    shutil.copytree(sample, link_folder, dirs_exist_ok=True)
    (link_folder / "2021-06" / "B04.tif").unlink()
    (link_folder / "2021-06" / "B04.tif").symlink_to(secret)
    spec = yaml.safe_load(DEMO.read_text())
    spec["inputs"][0]["paths"] = [str(link_folder / "items.json")]
    spec["output"]["dir"] = str(link_folder / "out")
    (link_folder / "job.yaml").write_text(yaml.safe_dump(spec))
    results.append(("symlink to a file outside the inputs", link_folder / "job.yaml"))
    # non-regular files where a job or STAC file is expected
    (root / "hostile" / "zero-items").mkdir(parents=True, exist_ok=True)
    zero_items = root / "hostile" / "zero-items" / "items.json"
    if not zero_items.exists():
        zero_items.symlink_to("/dev/zero")
    spec = yaml.safe_load(DEMO.read_text())
    spec["inputs"][0]["paths"] = [str(zero_items)]
    (root / "hostile" / "zero-items" / "job.yaml").write_text(yaml.safe_dump(spec))
    results.append(("items.json symlinked to /dev/zero", root / "hostile" / "zero-items" / "job.yaml"))
    results.append(("/dev/zero as the job file", Path("/dev/zero")))
    fifo = root / "hostile" / "job.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    results.append(("a FIFO as the job file", fifo))
    deep = root / "hostile" / "deep"
    deep.mkdir(parents=True, exist_ok=True)
    (deep / "items.json").write_text("[" * 200_000 + "]" * 200_000)
    spec = yaml.safe_load(DEMO.read_text())
    spec["inputs"][0]["paths"] = [str(deep / "items.json")]
    (deep / "job.yaml").write_text(yaml.safe_dump(spec))
    results.append(("STAC file nested 200,000 levels deep", deep / "job.yaml"))
    api = root / "hostile" / "api"
    api.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load(DEMO.read_text())
    spec["inputs"] = [{"kind": "stac_api", "url": "http://127.0.0.1[:9/v1", "collections": ["sentinel-2-l2a"]}]
    spec["aoi"] = {"bbox": [5.33, 50.63, 5.34, 50.64]}
    (api / "job.yaml").write_text(yaml.safe_dump(spec))
    results.append(("malformed STAC API URL", api / "job.yaml"))
    rows = []
    for name, path in results:
        try:
            done = suelo("validate", path, timeout=60)
            lines = (done.stdout + done.stderr).strip().splitlines()
            ok = done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr
            note = lines[-1][:110] if lines else ""
        except subprocess.TimeoutExpired:
            ok, note = False, "hung for 60 s"
        rows.append((f"{name}: {note}", 1, int(ok)))
    return rows


def fuzz(n: int, seed: int = 0) -> list[tuple[str, int, int]]:
    from click.testing import CliRunner
    from hypothesis import HealthCheck, given, settings

    from suelo.cli import main
    from tests.system.test_fuzz import job_like

    survived = tried = 0
    failures: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="suelo-fuzz-"))
    rng = random.Random(seed)

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(job_like)
    def one(spec: dict) -> None:
        nonlocal survived, tried
        tried += 1
        if rng.random() < 0.5:  # the real inputs, so the spec reaches grid, scenes and plan
            spec = {**spec, "inputs": [{"kind": "stac", "paths": [str(ITEMS)]}],
                    "period": {"start": "2020-11-01", "end": "2021-10-31"}}  # fmt: skip
        path = folder / "job.yaml"
        try:
            path.write_text(yaml.safe_dump(spec, allow_unicode=True))
        except Exception:  # not even YAML-representable: nothing to try
            survived += 1
            return
        result = CliRunner().invoke(main, ["validate", str(path)])
        if result.exception is None or isinstance(result.exception, SystemExit):
            survived += 1
        else:
            failures.append(f"{type(result.exception).__name__}: {str(result.exception)[:120]}")

    one()
    shutil.rmtree(folder, ignore_errors=True)
    for failure in sorted(set(failures))[:10]:
        print("  traceback:", failure)
    return [(f"fuzzed job specs through suelo validate ({len(set(failures))} distinct tracebacks)", tried, survived)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=19)
    parser.add_argument("--worker-kills", type=int, default=4)
    parser.add_argument("--fuzz", type=int, default=2200)
    parser.add_argument("--only", default="kills,disk,hostile,fuzz")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    root = Path(tempfile.mkdtemp(prefix="suelo-attack-"))
    rows: list[tuple[str, int, int]] = []
    started = time.monotonic()
    try:
        if "hostile" in parts:
            rows += hostile(root)
        if "fuzz" in parts:
            rows += fuzz(args.fuzz)
        if "disk" in parts:
            rows += disk_full(root)
        if "kills" in parts:
            rows += kills(root, args.kills, args.worker_kills)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"| attack | tried | survived |  ({time.monotonic() - started:.0f} s)")
    print("|---|---|---|")
    for name, tried, survived in rows:
        print(f"| {name} | {tried} | {survived} |")
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:12]
    print(f"(table digest {digest})")


if __name__ == "__main__":
    main()
