"""Regression tests of issue 15's findings 3-6 and 9: what a job gets wrong is found before any work, in one line.

Each case runs the real command line on the real demo job (land cover only), changed in one way.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from suelo.cli import main
from tests.fixtures import REPO_ROOT, demo_job, one_line_error

SHIPPED = REPO_ROOT / "models" / "landcover_default.pt"


def nothing_written(tmp_path: Path) -> bool:
    out = tmp_path / "out"
    return not out.exists() or not any(p.suffix in (".nc", ".tif") for p in out.rglob("*"))


# -- finding 5 and 9: CRSs and resolutions that cannot work are named by their key ----------------------------------


@pytest.mark.parametrize(
    ("crs", "expected"),
    [
        ("IAU_2015:30100", "no transformation from WGS 84"),  # the Moon
        ("+proj=longlat +a=1 +b=1", "no transformation from WGS 84"),  # a unit sphere
        ("EPSG:999999", "not a CRS PROJ knows"),
    ],
)
@pytest.mark.parametrize("key", ["grid", "aoi"])
def test_crs_that_is_not_of_the_earth_is_one_line(tmp_path: Path, crs: str, expected: str, key: str) -> None:
    section = {"grid": {"crs": crs}} if key == "grid" else {"aoi": {"bbox": [5.33, 50.63, 5.335, 50.635], "crs": crs}}
    line = one_line_error("validate", str(demo_job(tmp_path, **section)))
    assert f"{key}.crs" in line and expected in line and "ERROR 1" not in line


def test_a_crs_that_cannot_see_the_area_is_one_line(tmp_path: Path) -> None:
    line = one_line_error("validate", str(demo_job(tmp_path, grid={"crs": "+proj=ortho +lat_0=-90 +lon_0=0"})))
    assert "grid.crs +proj=ortho" in line and "cannot project the area" in line


def test_a_tiny_resolution_names_its_key(tmp_path: Path) -> None:
    line = one_line_error("validate", str(demo_job(tmp_path, grid={"resolution": 1e-9})))
    assert "grid.resolution 1e-09" in line and "pixels per side" in line


# -- finding 3 and 5: the output folder ----------------------------------------------------------------------------


def test_a_folder_with_foreign_files_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    (out / "blocks").mkdir()
    (out / "blocks" / "mine.txt").write_text("also mine")
    (out / ".notes.abcdefgh.tmp").write_text("looks like a suelo temporary, is not")
    line = one_line_error("run", str(demo_job(tmp_path)))
    assert "holds files suelo did not write (.notes.abcdefgh.tmp, blocks, thesis.docx)" in line and "--force" in line
    assert sorted(p.name for p in out.rglob("*")) == [".notes.abcdefgh.tmp", "blocks", "mine.txt", "thesis.docx"]


def test_force_writes_into_such_a_folder_and_deletes_nothing_of_the_users(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.docx").write_text("years of work")
    (out / ".notes.abcdefgh.tmp").write_text("not ours")
    result = CliRunner().invoke(main, ["ingest", str(demo_job(tmp_path)), "--force"])
    assert result.exit_code == 0, result.output
    assert (out / "thesis.docx").read_text() == "years of work" and (out / ".notes.abcdefgh.tmp").exists()
    marker = json.loads((out / ".suelo-output.json").read_text())
    assert marker["format"] == "suelo-output" and len(marker["run_tokens"]) == 1
    # once suelo has written there, the folder is its own: no --force needed again
    again = CliRunner().invoke(main, ["ingest", str(demo_job(tmp_path))])
    assert again.exit_code == 0 and "up to date" in again.output


def test_output_dir_naming_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    line = one_line_error("run", str(demo_job(tmp_path)))
    assert "output.dir" in line and "is not a folder" in line


# -- finding 6: the lock is the first thing a run or an ingest takes -----------------------------------------------


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_a_second_run_is_refused_before_it_writes_anything(tmp_path: Path, command: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".suelo.lock", "a+") as handle:  # another run holds the folder
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = one_line_error(command, str(demo_job(tmp_path)))
    assert "another suelo run is writing to this folder" in line
    assert nothing_written(tmp_path) and not (out / "run.json").exists()


# -- finding 4: the model, its legend and its contract, at plan time -------------------------------------------------


def broken_model(tmp_path: Path, change: str) -> Path:
    payload = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    meta = json.loads(payload["meta"])
    if change == "months":
        meta["input_contract"]["months"] = 6
    elif change == "bands":
        meta["input_contract"]["bands"] = [*meta["input_contract"]["bands"], "B8A"]
    elif change == "level":
        meta["input_contract"]["product_level"] = "L1C"
    elif change == "no contract":
        del meta["input_contract"]
    elif change == "legend":
        meta["legend"] = meta["legend"][:3]
    elif change == "head shape":
        payload["head.net.4.weight"] = torch.zeros(7, 3)
    elif change == "reason code":
        meta["legend"][0]["code"] = 65535  # uint16 maps use 65535 for "low confidence"
    payload["meta"] = json.dumps(meta)
    path = tmp_path / f"model-{change.replace(' ', '-')}.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("months", "has 12 months, the model needs 6"),
        ("bands", "lacks bands ['B8A']"),
        ("level", "trained on L1C"),
        ("no contract", "no complete input contract"),
        ("legend", "model legend has 3 classes, its head 5 outputs"),
        ("head shape", "model head does not build"),
        ("reason code", "collide with legend classes"),
    ],
)
def test_a_model_that_cannot_serve_the_job_is_one_line_naming_it(tmp_path: Path, change: str, expected: str) -> None:
    model = broken_model(tmp_path, change)
    job = demo_job(tmp_path, landcover={"model": str(model)})
    line = one_line_error("run", str(job))
    assert str(model) in line and expected in line and "block" not in line
    assert nothing_written(tmp_path)


def test_a_legend_colliding_with_reason_codes_is_refused_on_load(tmp_path: Path) -> None:
    from suelo.errors import ConfigError
    from suelo.legend import load_legend

    for codes, reserved in (([0, 1, 65535], "65535"), ([0, 1, 255], "0")):
        path = tmp_path / "legend.yaml"
        path.write_text(yaml.safe_dump([{"code": c, "name": f"class {c}", "color": "#123456"} for c in codes]))
        with pytest.raises(ConfigError, match=rf"{path}: class codes \[.*{reserved}.*\] are reserved"):
            load_legend(path)


def test_cuda_without_a_gpu_is_a_plan_time_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    line = one_line_error("run", str(demo_job(tmp_path, compute={"device": "cuda"})))
    assert "compute.device asks for CUDA but no CUDA GPU is usable here" in line
    assert nothing_written(tmp_path)


def test_an_unreachable_scheduler_is_one_line_at_once(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on: bind, note it, close
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = one_line_error("run", str(demo_job(tmp_path, compute={"scheduler": f"tcp://127.0.0.1:{port}"})))
    assert f"compute.scheduler tcp://127.0.0.1:{port}: cannot connect" in line
    assert nothing_written(tmp_path)


def test_a_legend_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    import os

    from suelo.errors import ConfigError
    from suelo.legend import load_legend

    fifo = tmp_path / "legend.yaml"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), fifo):
        with pytest.raises(ConfigError, match="not a regular file"):
            load_legend(path)


def test_a_run_deletes_only_the_temporaries_of_runs_recorded_in_its_folder(tmp_path: Path) -> None:
    from suelo.atomic import temporary_token
    from suelo.outdir import claimed_output

    out = tmp_path / "out"
    with claimed_output(out) as first:
        pass
    ours = out / "landcover" / f".demo-belgium.tif.{first}-k2x9a0qe.tmp"
    foreign = out / "landcover" / ".demo-belgium.tif.0badc0de-k2x9a0qe.tmp"  # a token no run here recorded
    untokened = out / "landcover" / ".notes.abcdefgh.tmp"
    ours.parent.mkdir(parents=True)
    for path in (ours, foreign, untokened):
        path.write_text("x")
    assert temporary_token(ours.name) == first
    (out / "blocks" / "landcover").mkdir(parents=True)
    (out / "blocks" / "landcover" / "r000000_c000000.tif").write_bytes(b"old block")
    (out / "blocks" / "landcover" / "my-own.tif").write_bytes(b"the user's")
    result = CliRunner().invoke(main, ["run", str(demo_job(tmp_path))])
    assert result.exit_code == 0, result.output
    assert not ours.exists() and foreign.exists() and untokened.exists()
    # the first run's manifest reset removed the stale block suelo names, never the user's file beside it
    assert (out / "blocks" / "landcover" / "my-own.tif").read_bytes() == b"the user's"
    marker = json.loads((out / ".suelo-output.json").read_text())
    assert marker["run_tokens"][0] == first and len(marker["run_tokens"]) == 2
