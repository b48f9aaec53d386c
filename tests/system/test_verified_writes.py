"""Verified writes (issue 15, findings 1 and 8): nothing empty, truncated or unreadable is ever published, recorded
in the manifest or trusted by a resume, and a killed COG write leaves nothing a resume does not remove.

On a full disk GDAL (libtiff) prints ``_tiffSeekProc: No space left on device`` and closes the dataset without an
error, leaving an empty file. The tests below make that happen for real (a 1 MiB tmpfs, where root and ``mount``
are available) and everywhere by a writer that silently loses what GDAL wrote once a simulated disk is full.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import click
import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from rasterio.crs import CRS

from suelo import atomic
from suelo import write as write_mod
from suelo.atomic import (
    WriteVerificationError,
    atomic_output,
    gdal_errors_raised,
    is_suelo_temporary,
    temporary_beside,
)
from suelo.atomic import (
    file_sha256 as sha256,
)
from suelo.grid import Grid
from suelo.legend import load_legend
from suelo.orchestrate import MANIFEST
from suelo.orchestrate.block import write_block_raster
from suelo.write import write_class_map
from tests.fixtures import (
    SAMPLE_ITEMS,
    SCENE_GRID,
    SCENE_INGEST,
    assert_nothing_partial,
    constant,
    make_scene,
    map_checksums,
    suelo,
    vegetation,
)

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
BLOCKS = 16  # the 100 x 100 px demo sample in blocks of 32 px


# -- temporary names (finding 8) -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "temporary"),
    [
        (".demo.tif.k2x9a0qe.tmp", True),  # atomic_output
        (".demo.tif.stage.k2x9a0qe.tmp", True),  # a COG's staging GeoTIFF
        (".demo.tif.k2x9a0qe.tmp.stage.tif", True),  # the staging GeoTIFF of earlier versions (finding 8)
        (".demo.tif.k2x9a0qe.tmp.stage.tif.aux.xml", True),  # GDAL's side file of it
        (".demo.tif.k2x9a0qe.tmp.aux.xml", True),
        (".manifest.jsonl.ab_3cd9z.tmp", True),
        ("demo.tif", False),
        ("demo.tif.aux.xml", False),
        (".suelo.lock", False),
        (".suelo-output.json", False),
        ("manifest.jsonl", False),
        ("r000000_c000032.tif", False),
        ("notes.tmp", False),
        (".demo.tif.short.tmp", False),
    ],
)
def test_is_suelo_temporary(name: str, temporary: bool) -> None:
    assert is_suelo_temporary(name) is temporary


def test_every_temporary_suelo_creates_is_recognised(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "demo.tif"
    names = [temporary_beside(final).name, temporary_beside(final, "stage").name]
    with atomic_output(final) as tmp:
        names.append(tmp.name)
        tmp.write_text("x")
    assert all(is_suelo_temporary(n) for n in names), names
    assert not is_suelo_temporary(final.name)


# -- atomic_output verifies before it publishes ----------------------------------------------------------------------


def test_an_empty_write_is_never_published(tmp_path: Path) -> None:
    final = tmp_path / "map.json"
    final.write_text("previous")
    with pytest.raises(WriteVerificationError, match="empty"), atomic_output(final):
        pass  # a writer that "succeeded" without writing anything, as GDAL does on a full disk
    assert final.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.json"]


def test_a_file_that_does_not_read_back_is_never_published(tmp_path: Path) -> None:
    final = tmp_path / "map.json"
    final.write_text("previous")

    def unreadable(tmp: Path) -> None:
        json.loads(tmp.read_text())

    with pytest.raises(WriteVerificationError) as caught, atomic_output(final, verify=unreadable) as tmp:
        tmp.write_text('{"torn":')
    assert caught.value.filename == str(final) and "does not read back" in str(caught.value)
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)  # as a Dask worker reports it
    assert final.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.json"]


def test_a_failed_verification_on_a_full_disk_is_reported_as_one(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(atomic, "_disk_full", lambda folder: True)
    with pytest.raises(OSError) as caught, atomic_output(tmp_path / "b.tif"):
        pass
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "b.tif")
    assert isinstance(caught.value.__cause__, WriteVerificationError)
    assert list(tmp_path.iterdir()) == []


def test_a_plain_write_error_on_a_full_disk_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(OSError) as caught, atomic_output(tmp_path / "run.json"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what f.write() raises: no file name
    assert caught.value.filename == str(tmp_path / "run.json")


def test_gdal_io_errors_are_raised_and_harmless_ones_are_not(tmp_path: Path) -> None:
    gdal = logging.getLogger("rasterio._env")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    logging.getLogger("rasterio").addHandler(handler)
    try:
        with pytest.raises(WriteVerificationError, match="Write error at scanline 0"), gdal_errors_raised("x.tif"):
            gdal.info("GDAL signalled an error: err_no=1, msg='TIFFAppendToStrip:Write error at scanline 0'")
        with gdal_errors_raised("x.tif"):  # what GDAL signals when a palette is set: no failure
            gdal.info("GDAL signalled an error: err_no=1, msg='TIFFSetField: Cannot modify tag while writing'")
        gdal.info("GDAL signalled an error: err_no=1, msg='Write error'")  # outside a write: nothing to raise
    finally:
        logging.getLogger("rasterio").removeHandler(handler)
    wanted = logging.getLogger("rasterio").getEffectiveLevel()
    assert all(r.levelno >= wanted for r in seen)  # opening the logger to INFO shows nothing new to its handlers


def test_a_damaged_block_raster_found_at_assembly_is_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from suelo.cli import reports_errors
    from suelo.orchestrate.block import read_block_raster

    empty = tmp_path / "r000000_c000000.tif"
    empty.write_bytes(b"")

    @click.command()
    @reports_errors
    def assemble() -> None:
        read_block_raster(empty, 1)

    @click.command()
    @reports_errors
    def publish() -> None:
        with atomic_output(tmp_path / "map.tif"):
            pass

    published = "nothing partial was published, re-run to resume"
    for command, tail in ((assemble, "re-run to redo it"), (publish, published)):
        done = CliRunner().invoke(command, [])
        assert done.exit_code == 1, done.output
        assert len(done.output.splitlines()) == 1 and done.output.rstrip().endswith(tail), done.output
        assert done.output.startswith("suelo: error: ") and str(tmp_path) in done.output


# -- GDAL writers that silently lose data ----------------------------------------------------------------------------

GRID = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5600000), 40, 48)


class LosingWriter:
    """A rasterio dataset in write mode whose file loses its data when closed, as on a full disk."""

    def __init__(self, dataset: object, path: Path, keep: float) -> None:
        self._dataset, self._path, self._keep = dataset, Path(path), keep

    def __getattr__(self, name: str) -> object:
        return getattr(self._dataset, name)

    def __enter__(self) -> LosingWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._dataset.close()  # type: ignore[attr-defined]
        with open(self._path, "r+b") as handle:
            handle.truncate(int(self._path.stat().st_size * self._keep))


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.9])
def test_a_block_raster_gdal_truncated_is_not_published(tmp_path: Path, monkeypatch, keep: float) -> None:  # type: ignore[no-untyped-def]
    planes = np.random.default_rng(0).integers(0, 200, (3, GRID.height, GRID.width)).astype(np.uint8)
    path = tmp_path / "blocks" / "landcover" / "r000000_c000000.tif"
    write_block_raster(path, planes, GRID)
    before = path.read_bytes()
    real_open = rasterio.open

    def losing_open(fp: Path, mode: str = "r", **kwargs: object) -> object:
        dataset = real_open(fp, mode, **kwargs)
        return LosingWriter(dataset, fp, keep) if mode == "w" else dataset

    monkeypatch.setattr(rasterio, "open", losing_open)
    with pytest.raises(WriteVerificationError, match=r"r000000_c000000\.tif"):
        write_block_raster(path, planes[::-1].copy(), GRID)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["r000000_c000000.tif"]


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.98])
def test_a_cog_gdal_truncated_is_not_published(tmp_path: Path, monkeypatch, keep: float) -> None:  # type: ignore[no-untyped-def]
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5600000), 1100, 1300)  # 2 overview levels
    codes = np.where(np.add.outer(np.arange(1100), np.arange(1300)) % 7 == 0, 1, 5).astype(np.uint8)
    real_copy = write_mod.rasterio.shutil.copy

    def losing_copy(src: object, dst: str | Path, *args: object, **kwargs: object) -> None:
        real_copy(src, dst, *args, **kwargs)
        with open(dst, "r+b") as handle:
            handle.truncate(int(Path(dst).stat().st_size * keep))

    monkeypatch.setattr(write_mod.rasterio.shutil, "copy", losing_copy)
    with pytest.raises(WriteVerificationError, match=r"lc\.tif"):
        write_class_map(tmp_path / "lc.tif", codes, grid, load_legend())
    assert list(tmp_path.iterdir()) == []  # no map, no staging file, no temporary


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.95])
def test_a_cog_from_a_truncated_staging_file_is_not_published(tmp_path: Path, monkeypatch, keep: float) -> None:  # type: ignore[no-untyped-def]
    """The staging GeoTIFF lies on the same disk: truncated, it loses its metadata first, then its directories."""
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5600000), 1100, 1300)
    codes = np.where(np.add.outer(np.arange(1100), np.arange(1300)) % 7 == 0, 1, 5).astype(np.uint8)
    real_open = rasterio.open

    def losing_open(fp: Path, mode: str = "r", **kwargs: object) -> object:
        dataset = real_open(fp, mode, **kwargs)
        return LosingWriter(dataset, fp, keep) if mode == "w" else dataset

    monkeypatch.setattr(rasterio, "open", losing_open)
    with pytest.raises(Exception, match=r"stage|lc\.tif"):  # GDAL's own error, or the verification's
        write_class_map(tmp_path / "lc.tif", codes, grid, load_legend())
    assert list(tmp_path.iterdir()) == []


def test_a_cube_that_does_not_reopen_is_not_published(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import xarray as xr

    from suelo.composite import build_cube, open_cube, write_cube
    from suelo.settings import PeriodSpec

    scenes = [make_scene(tmp_path, "a", dt.date(2021, 1, 15), constant(1234), vegetation())]
    cube = build_cube(scenes, SCENE_GRID, PeriodSpec(start=dt.date(2021, 1, 1), end=dt.date(2021, 2, 28)), SCENE_INGEST)
    cube = cube.compute()
    write_cube(cube, tmp_path / "good" / "cube.nc")  # verified: reopens, n_clear equal
    assert open_cube(tmp_path / "good" / "cube.nc").n_clear.values.tolist() == cube.n_clear.values.tolist()
    real = xr.Dataset.to_netcdf

    def truncated(self: xr.Dataset, path: Path, *args: object, **kwargs: object) -> None:
        real(self, path, *args, **kwargs)
        with open(path, "r+b") as handle:
            handle.truncate(Path(path).stat().st_size // 2)

    monkeypatch.setattr(xr.Dataset, "to_netcdf", truncated)
    with pytest.raises(WriteVerificationError, match=r"cube\.nc"):
        write_cube(cube, tmp_path / "bad" / "cube.nc")
    assert list((tmp_path / "bad").iterdir()) == []


# -- whole runs ------------------------------------------------------------------------------------------------------


def demo_job(folder: Path, out: Path | None = None, cube: bool = False) -> Path:
    """The demo sample (16 blocks of 32 px), land cover only, in this process, no retries."""
    spec = {
        "name": "demo",
        "inputs": [{"kind": "stac", "paths": [str(SAMPLE_ITEMS)]}],
        "period": {"start": "2020-11-01", "end": "2021-10-31"},
        "ingest": {"bands": BANDS, "masking": {"require_scl": False}},
        "products": {"landcover": {"target_accuracy": 0.80}},
        "compute": {"block_size": 32, "scheduler": "synchronous", "retries": 0},
        "output": {"dir": str(out or folder / "out"), "cube": cube},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def suelo_lines(stderr: str) -> list[str]:
    """stderr without libtiff's own lines (``_tiffSeekProc: No space left on device.``: printed by the C library
    straight to the terminal, bypassing GDAL's error handler and Python)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("_tiff")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The maps of an undisturbed run."""
    folder = tmp_path_factory.mktemp("reference")
    done = suelo("run", str(demo_job(folder)))
    assert done.returncode == 0, done.stderr
    return map_checksums(folder / "out")


#: suelo's CLI with GDAL writes that silently lose what they wrote once a simulated disk is full: the dataset (or the
#: COG copy) finishes without an error and the file is empty (FAULTY_KEEP=0) or truncated, as libtiff leaves it.
FAULTY_DISK = r"""
import os, sys
import rasterio, rasterio.shutil
import suelo.atomic

budget = int(os.environ["FAULTY_WRITES"])  # GDAL outputs (block rasters, COGs) that fit before the disk is full
keep = float(os.environ.get("FAULTY_KEEP", "0"))
state = {"written": 0, "full": False}
real_open, real_copy = rasterio.open, rasterio.shutil.copy


def lose(path):
    if ".stage." in os.path.basename(str(path)):  # read back by the COG copy: damage what would be published
        return
    state["written"] += 1
    if state["written"] > budget:
        state["full"] = True
        with open(path, "r+b") as handle:
            handle.truncate(int(os.path.getsize(path) * keep))


class Losing:
    def __init__(self, dataset, path):
        self._dataset, self._path = dataset, path

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._dataset.close()
        lose(self._path)


def open_(fp, mode="r", *args, **kwargs):
    dataset = real_open(fp, mode, *args, **kwargs)
    return Losing(dataset, fp) if mode == "w" else dataset


def copy(src, dst, *args, **kwargs):
    if os.environ.get("FAULTY_KILL_IN_COPY"):
        os.kill(os.getpid(), 9)  # killed while writing a COG: the staging file and the temporary are left
    real_copy(src, dst, *args, **kwargs)
    lose(dst)


rasterio.open, rasterio.shutil.copy = open_, copy
suelo.atomic._disk_full = lambda folder: state["full"]
from suelo.cli import main

main(sys.argv[1:], prog_name="suelo")
"""


@pytest.mark.parametrize("resume", ["run", "--overwrite"])
def test_disk_full_in_blocks_publishes_nothing_and_resumes(
    reference: dict[str, str], tmp_path: Path, resume: str
) -> None:
    job = demo_job(tmp_path)
    out = tmp_path / "out"
    full = suelo("run", str(job), code=FAULTY_DISK, env={"FAULTY_WRITES": "10"})  # 5 blocks fit, then empty files
    assert full.returncode == 1, full.stderr
    lines = suelo_lines(full.stderr)
    assert "Traceback" not in full.stderr
    assert [line for line in lines if line.startswith("suelo:")] == [
        f"suelo: {BLOCKS - 5} block(s) failed; finished blocks are kept, re-run to resume:"
    ], full.stderr
    assert all("No space left on device" in line for line in lines[1:]), full.stderr
    assert len(assert_nothing_partial(out, torn_lines=True)) == 5
    assert not (out / "final.json").exists()

    again = suelo("run", str(job), *(["--overwrite"] if resume == "--overwrite" else []))
    assert again.returncode == 0, again.stderr
    assert f"({BLOCKS - 5} of {BLOCKS} blocks run)" in again.stdout
    assert len(assert_nothing_partial(out, torn_lines=True)) == BLOCKS
    assert map_checksums(out) == reference


@pytest.mark.parametrize(("resume", "keep"), [("run", 0.5), ("--overwrite", 0.0)])
def test_disk_full_writing_the_maps_is_one_line_and_resumes(
    reference: dict[str, str], tmp_path: Path, resume: str, keep: float
) -> None:
    job = demo_job(tmp_path)
    out = tmp_path / "out"
    env = {"FAULTY_WRITES": str(2 * BLOCKS), "FAULTY_KEEP": str(keep)}  # every block raster fits, the first COG not
    full = suelo("run", str(job), code=FAULTY_DISK, env=env)
    assert full.returncode == 1, full.stderr
    assert full.stderr.splitlines() == [
        f"suelo: error: No space left on device writing {out / 'landcover' / 'demo.tif'}; nothing partial was "
        "published, free space and re-run to resume"
    ]
    assert len(assert_nothing_partial(out, torn_lines=True)) == BLOCKS
    assert not (out / "landcover" / "demo.tif").exists() and not (out / "final.json").exists()

    again = suelo("run", str(job), *(["--overwrite"] if resume == "--overwrite" else []))
    assert again.returncode == 0, again.stderr
    assert f"(0 of {BLOCKS} blocks run)" in again.stdout
    assert_nothing_partial(out, torn_lines=True)
    assert map_checksums(out) == reference


@pytest.mark.parametrize("resume", ["run", "--overwrite"])
def test_resume_redoes_blocks_the_manifest_lists_but_that_do_not_read(
    reference: dict[str, str], tmp_path: Path, resume: str
) -> None:
    """What an earlier version left on a full disk: empty block rasters, their checksums in the manifest."""
    job = demo_job(tmp_path)
    out = tmp_path / "out"
    assert suelo("run", str(job)).returncode == 0
    manifest = out / MANIFEST
    lines = manifest.read_text().splitlines()
    damaged = {"blocks/landcover/r000096_c000064.tif": b"", "blocks/nclear/r000000_c000000.tif": None}
    for name, content in damaged.items():
        path = out / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content is None else content)
    rewritten = [lines[0]]
    for line in lines[1:]:
        entry = json.loads(line)
        for name in damaged:
            if name in entry["files"]:
                entry["files"][name] = sha256(out / name)  # the manifest "verifies" the damaged file
        rewritten.append(json.dumps(entry, sort_keys=True))
    manifest.write_text("\n".join(rewritten) + "\n")
    (out / "final.json").unlink()

    again = suelo("run", str(job), *(["--overwrite"] if resume == "--overwrite" else []))
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert f"(2 of {BLOCKS} blocks run)" in again.stdout
    assert len(assert_nothing_partial(out, torn_lines=True)) == BLOCKS
    assert map_checksums(out) == reference


def test_a_killed_cog_write_leaves_nothing_the_resume_keeps(reference: dict[str, str], tmp_path: Path) -> None:
    job = demo_job(tmp_path)
    out = tmp_path / "out"
    killed = suelo("run", str(job), code=FAULTY_DISK, env={"FAULTY_WRITES": "1000", "FAULTY_KILL_IN_COPY": "1"})
    assert killed.returncode == -9, killed.stderr
    left = sorted(p.name for p in (out / "landcover").iterdir())
    assert len(left) == 2 and all(is_suelo_temporary(n) for n in left), left  # the staging file and the temporary
    assert any(".stage." in n for n in left)

    again = suelo("run", str(job))
    assert again.returncode == 0, again.stderr
    assert not [p for p in out.rglob("*") if is_suelo_temporary(p.name)]
    assert_nothing_partial(out, torn_lines=True)
    assert map_checksums(out) == reference


# -- a real full disk ------------------------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Mounts a tmpfs of the size given (``tmpfs(size)``); skipped where that needs root or ``mount`` is missing."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tmpfs needs root and mount")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / "disk"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.parametrize(
    ("size", "fits", "resume"),
    [
        ("1m", False, "run"),
        ("1m", False, "--overwrite"),
        pytest.param("1536k", True, "run", marks=pytest.mark.slow),
        pytest.param("2m", True, "run", marks=pytest.mark.slow),
    ],
)
def test_real_disk_full(reference: dict[str, str], tmp_path: Path, tmpfs, size: str, fits: bool, resume: str) -> None:  # type: ignore[no-untyped-def]
    """The demo job with its whole-region cube (about 0.9 MB) on a small tmpfs: on 1 MiB the disk fills up while the
    blocks are written (the case of the issue); 1.5 and 2 MiB hold everything (land cover only)."""
    disk = tmpfs(size)
    out = disk / "out"
    job = demo_job(tmp_path / "job", out=out, cube=True)
    first = suelo("run", str(job))
    if fits:
        assert first.returncode == 0, first.stderr
    else:
        assert first.returncode == 1, first.stderr
        assert "Traceback" not in first.stderr
        lines = suelo_lines(first.stderr)
        assert len(lines) == 1 and lines[0].startswith("suelo: error: No space left on device"), first.stderr
        assert lines[0].endswith("nothing partial was published, free space and re-run to resume")
        assert not (out / "final.json").exists()
    blocks = assert_nothing_partial(out, torn_lines=True)
    assert len(blocks) == BLOCKS or not fits

    subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)  # space freed
    again = suelo("run", str(job), *(["--overwrite"] if resume == "--overwrite" else []))
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert len(assert_nothing_partial(out, torn_lines=True)) >= BLOCKS
    assert map_checksums(out) == reference


def test_file_sha256_remembers_a_version_never_a_changed_file(tmp_path: Path) -> None:
    """The checksum is remembered per file version, and any change is a new version: an atomic rewrite (new
    inode), an in-place rewrite of the same size, even with the modification time put back (the change time
    moves)."""
    path = tmp_path / "map.tif"
    path.write_bytes(b"a" * 1000)
    first = sha256(path)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest() and sha256(path) == first
    stat = path.stat()
    with open(path, "r+b") as handle:  # in place, same size
        handle.write(b"b")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sha256(path) == hashlib.sha256(b"b" + b"a" * 999).hexdigest()
    with atomic_output(path) as tmp:
        tmp.write_bytes(b"c" * 1000)
    assert sha256(path) == hashlib.sha256(b"c" * 1000).hexdigest()
