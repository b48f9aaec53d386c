"""Hostile and malformed inputs through the command line: one line naming the problem, exit status 2, no traceback.

Every case goes through ``suelo validate`` / ``suelo run`` (click's runner, in this process, so limits can be
monkeypatched); a few go through a real subprocess to prove nothing executes when a hostile file is parsed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from affine import Affine

from suelo.ingest import safe
from tests.fixtures import build_safe, generate_region, suelo, zip_safe
from tests.fixtures import one_line_error as shared_one_line_error

# "billion laughs": nine lines whose aliases expand to 10**9 values
ALIAS_BOMB = b"a: &a [x,x,x,x,x,x,x,x,x,x]\n" + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 10)}]\n".encode() for i in range(8)
)
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_region(tmp_path_factory.mktemp("hostile") / "scenes", 32, months=2, scenes_per_month=1, seed=5)


def spec(folder: Path, inputs: list[dict], **extra: object) -> dict:
    return {
        "name": "hostile",
        "inputs": inputs,
        "period": {"start": "2021-01-01", "end": "2021-02-28"},
        "ingest": {"bands": BANDS},
        "compute": {"block_size": 32, "scheduler": "synchronous"},
        "output": {"dir": str(folder / "out"), "cube": False},
        **extra,
    }


def write_job(folder: Path, content: dict | str | bytes, name: str = "job.yaml") -> Path:
    path = folder / name
    if isinstance(content, dict):
        content = yaml.safe_dump(content)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# the shared check, with other output lines (progress, warnings) allowed beside the one error line
one_line_error = functools.partial(shared_one_line_error, other_lines=True)


def stac_job(tmp_path: Path, region: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    document = json.loads(region.read_text())
    items = region.parent / f"{tmp_path.name}.json"
    items.write_text(json.dumps(mutate(document)))
    return write_job(tmp_path, spec(tmp_path, [{"kind": "stac", "paths": [str(items)]}]))


def set_property(key: str, value: object):  # type: ignore[no-untyped-def]
    def mutate(document: dict) -> dict:
        document["features"][0]["properties"][key] = value
        return document

    return mutate


# -- job specs ----------------------------------------------------------------------------------------------------


def test_yaml_tags_never_execute(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    job = write_job(tmp_path, f"!!python/object/apply:os.system ['touch {marker}']\n")
    done = suelo("validate", job)
    assert done.returncode == 2 and "not valid YAML" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    nested = write_job(tmp_path, f"name: x\ninputs: !!python/object/apply:os.system ['touch {marker}']\n", "n.yaml")
    assert "not valid YAML" in one_line_error("validate", nested)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"compute": {"block_size": 10**30}}, "compute.block_size"),
        ({"compute": {"block_size": "big"}}, "compute.block_size"),
        ({"compute": {"workers": 1e308}}, "compute.workers"),
        ({"grid": {"resolution": 1e308}}, "grid.resolution"),
        ({"grid": {"resolution": float("nan")}}, "grid.resolution"),
        ({"aoi": {"bbox": [float("-inf"), 0, float("inf"), 1]}}, "must be finite"),
        ({"period": {"start": "99999-01-01", "end": "2021-01-01"}}, "period.start"),
        ({"products": {"landcover": {"target_accuracy": 1e308}}}, "target_accuracy"),
        ({"name": "../../etc/passwd"}, "name"),
        ({"inputs": [{"kind": "stac", "paths": ["a\0b.json"]}]}, "NUL"),
    ],
)
def test_bad_job_specs(tmp_path: Path, region: Path, change: dict, message: str) -> None:
    job = write_job(tmp_path, spec(tmp_path, [{"kind": "stac", "paths": [str(region)]}]) | change)
    line = one_line_error("validate", job)
    assert str(job) in line and message in line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: \xff\xfe\n", "not UTF-8"),
        (b"a: " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested too deeply"),
        (ALIAS_BOMB, "alias bomb"),
        (b"- a list\n", "YAML mapping"),
        (b"{unclosed: [\n", "not valid YAML"),
    ],
)
def test_malformed_yaml(tmp_path: Path, content: bytes, message: str) -> None:
    line = one_line_error("validate", write_job(tmp_path, content))
    assert message in line


# -- images -------------------------------------------------------------------------------------------------------


def test_truncated_and_garbage_geotiff(tmp_path: Path) -> None:
    good = tmp_path / "tifs" / "T31UFS_20210105.tif"
    good.parent.mkdir()
    with rasterio.open(good, "w", driver="GTiff", width=16, height=16, count=2, dtype="uint16", crs="EPSG:32631",
                       transform=Affine(10, 0, 600000, 0, -10, 5700000)) as dst:  # fmt: skip
        dst.write(np.full((2, 16, 16), 1500, np.uint16))
    inputs = [{"kind": "geotiff", "paths": [str(good.parent)], "bands": ["B04", "SCL"], "processing_baseline": "04.00"}]
    job = write_job(tmp_path, spec(tmp_path, inputs, ingest={"bands": ["B04"]}))
    good.write_bytes(good.read_bytes()[:100])  # truncated inside the header
    line = one_line_error("validate", job)
    assert str(good) in line and "corrupt, truncated or unreadable" in line
    good.write_bytes(os.urandom(4096))
    assert str(good) in one_line_error("validate", job)


def test_truncated_and_garbage_jp2(tmp_path: Path) -> None:
    product = build_safe(tmp_path / "safe")
    job = write_job(tmp_path, spec(tmp_path, [{"kind": "safe", "paths": [str(product)]}], ingest={"bands": BANDS}))
    (b02,) = product.glob("GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2")
    b02.write_bytes(b02.read_bytes()[:60])
    line = one_line_error("validate", job)
    assert b02.name in line and "corrupt or truncated" in line
    b02.write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + os.urandom(2000))  # a JP2 signature, then garbage
    assert b02.name in one_line_error("validate", job)


# -- SAFE metadata ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('unit="none">10000<', 'unit="none">-10000<', "is not a positive number"),
        ('unit="none">10000<', 'unit="none">1e-300<', "is not a positive number"),
        ("<PRODUCT_START_TIME>2021-06-01T10:40:21.024Z<", "<PRODUCT_START_TIME>99999-06-01T10:40:21Z<", "ISO 8601"),
        ("<PRODUCT_START_TIME>2021-06-01T10:40:21.024Z<", "<PRODUCT_START_TIME>0001-01-01T00:00:00+01:00<", "ISO"),
        ("<PRODUCT_START_TIME>2021-06-01T10:40:21.024Z<", "<PRODUCT_START_TIME>2021-06-01T10:40:21+99:00<", "ISO"),
        ('<BOA_ADD_OFFSET band_id="3">-1000<', '<BOA_ADD_OFFSET band_id="3">minus one thousand<', "band_id=3"),
        ('<BOA_ADD_OFFSET band_id="3">-1000<', '<BOA_ADD_OFFSET band_id="3">-1e300<', "band_id=3"),
        ('<BOA_ADD_OFFSET band_id="3">-1000<', '<BOA_ADD_OFFSET band_id="²">-1000<', "band_id '²'"),
        ("<PROCESSING_BASELINE>04.00<", "<PROCESSING_BASELINE>99999999999999999999.x<", "PROCESSING_BASELINE"),
        ("<n1:General_Info>", '<!DOCTYPE x [<!ENTITY a "aaaa">]><n1:General_Info>', "entities"),
    ],
)
def test_absurd_safe_metadata(tmp_path: Path, old: str, new: str, message: str) -> None:
    product = build_safe(tmp_path / "safe")
    mtd = product / "MTD_MSIL2A.xml"
    text = mtd.read_text(encoding="utf-8")
    assert old in text
    mtd.write_text(text.replace(old, new, 1), encoding="utf-8")
    job = write_job(tmp_path, spec(tmp_path, [{"kind": "safe", "paths": [str(product)]}]))
    line = one_line_error("validate", job)
    assert "MTD_MSIL2A.xml" in line and message in line


# -- zip archives -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("member", ["../evil.txt", "X.SAFE/../../evil.txt", "/etc/evil", "C:/evil", "a\\..\\..\\b"])
def test_zip_path_traversal(tmp_path: Path, member: str) -> None:
    archive = tmp_path / "S2B_MSIL2A_evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("X.SAFE/MTD_MSIL2A.xml", "<x/>")
        z.writestr(member, "owned")
    job = write_job(tmp_path, spec(tmp_path, [{"kind": "safe", "paths": [str(archive)]}]))
    assert "path traversal" in one_line_error("validate", job)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_zip_symlink(tmp_path: Path) -> None:
    archive = zip_safe(build_safe(tmp_path / "safe"), tmp_path / "S2B_MSIL2A_link.zip")
    with zipfile.ZipFile(archive, "a") as z:
        link = zipfile.ZipInfo("X.SAFE/GRANULE/link.jp2")
        link.external_attr = 0o120777 << 16
        z.writestr(link, "/etc/passwd")
    job = write_job(tmp_path, spec(tmp_path, [{"kind": "safe", "paths": [str(archive)]}]))
    assert "symlink" in one_line_error("validate", job)


def test_zip_bombs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    product = build_safe(tmp_path / "safe")
    archive = zip_safe(product, tmp_path / "S2B_MSIL2A_bomb.zip")
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{product.name}/GRANULE/zeros.bin", b"\0" * 2_000_000)  # ~500x compression
    job = write_job(tmp_path, spec(tmp_path, [{"kind": "safe", "paths": [str(archive)]}]))
    monkeypatch.setattr(safe, "ZIP_RATIO_MIN_BYTES", 1_000_000)
    line = one_line_error("validate", job)
    assert "zeros.bin" in line and "zip bomb" in line
    monkeypatch.setattr(safe, "ZIP_RATIO_MIN_BYTES", 10**12)
    monkeypatch.setattr(safe, "ZIP_MAX_TOTAL_BYTES", 1_000_000)
    assert "above the 1000000-byte limit" in one_line_error("validate", job)


def test_garbage_zip(tmp_path: Path) -> None:
    archive = tmp_path / "S2B_MSIL2A_garbage.zip"
    archive.write_bytes(b"PK\x03\x04" + os.urandom(3000))
    job = write_job(tmp_path, spec(tmp_path, [{"kind": "safe", "paths": [str(archive)]}]))
    assert str(archive) in one_line_error("validate", job)


# -- STAC ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: [d], "JSON object"),
        (lambda d: {**d, "features": "nope"}, "features"),
        (set_property("datetime", 20210101), "RFC 3339"),
        (set_property("datetime", "9999-12-31T23:59:59-23:00"), "RFC 3339"),
        (set_property("proj:epsg", "32631"), "proj:epsg"),
        (set_property("proj:epsg", 10**30), "unknown projection"),
        (set_property("proj:bbox", [0, 0, 1e308, 1e308]), "pixels per side"),
        (set_property("proj:bbox", ["a", "b", "c", "d"]), "proj:bbox"),
        (set_property("s2:processing_baseline", {"x": 1}), "s2:processing_baseline"),
        (set_property("s2:processing_baseline", "later"), "processing baseline"),
    ],
)
def test_stac_wrong_types(tmp_path: Path, region: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    line = one_line_error("validate", stac_job(tmp_path, region, mutate))
    assert message in line


def test_remote_hrefs_offline_fail_fast_naming_the_href(tmp_path: Path, region: Path) -> None:
    host = "suelo-offline.invalid"  # .invalid never resolves (RFC 2606)

    def remote(document: dict) -> dict:
        for item in document["features"]:
            for asset in item["assets"].values():
                asset["href"] = f"https://{host}/{asset['href']}"
        return document

    job = stac_job(tmp_path, region, remote)
    for command in ("validate", "run"):
        line = one_line_error(command, job)
        assert f"https://{host}/" in line and "cannot open remote asset" in line
    assert not (tmp_path / "out" / "blocks").exists()


# -- models -------------------------------------------------------------------------------------------------------


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("product", ["landcover", "urban_atlas"])
def test_model_files_that_are_not_ours(tmp_path: Path, region: Path, product: str) -> None:
    marker = tmp_path / "PWNED"
    models = {
        "pickle.pt": lambda p: torch.save({"format": "suelo-landcover-model", "x": Exploit(marker)}, p),
        "garbage.pt": lambda p: p.write_bytes(os.urandom(1000)),
        "empty.pt": lambda p: p.write_bytes(b""),
        "other.pt": lambda p: torch.save({"weight": torch.zeros(3)}, p),
        "missing.pt": lambda p: None,
    }
    for name, make in models.items():
        path = tmp_path / name
        make(path)
        products = {"landcover": {"enabled": product == "landcover", "model": str(path)}}
        if product == "urban_atlas":
            products["urban_atlas"] = {"enabled": True, "model": str(path)}
        job = write_job(tmp_path, spec(tmp_path, [{"kind": "stac", "paths": [str(region)]}], products=products))
        line = one_line_error("run", job)
        assert str(path) in line, line
    assert not marker.exists()


def test_pickle_model_does_not_execute_in_a_real_process(tmp_path: Path, region: Path) -> None:
    marker = tmp_path / "PWNED"
    model = tmp_path / "evil.pt"
    torch.save(Exploit(marker), model)
    products = {"landcover": {"model": str(model)}}
    job = write_job(tmp_path, spec(tmp_path, [{"kind": "stac", "paths": [str(region)]}], products=products))
    done = suelo("run", job)
    assert done.returncode == 2 and "not a suelo model artifact" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()


# -- legends ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("legend", "message"),
    [
        ([{"code": 1, "name": "a", "color": "#000000"}, {"code": 1, "name": "b", "color": "#ffffff"}], "duplicate"),
        ([{"code": 1, "name": "a", "color": "red"}], "color"),
        ([{"code": 1, "name": "a", "color": "#12345g"}], "color"),
        ([{"code": 70000, "name": "a", "color": "#000000"}], "code"),
        ([{"code": True, "name": "a", "color": "#000000"}], "code"),
        ({"classes": "nope"}, "non-empty list"),
        ("!!python/object/apply:os.system ['echo hi']", "not valid YAML"),
    ],
)
def test_bad_legends(tmp_path: Path, legend: object, message: str) -> None:
    path = tmp_path / "legend.yaml"
    path.write_text(legend if isinstance(legend, str) else yaml.safe_dump(legend))
    samples = tmp_path / "samples.csv"
    samples.write_text("x,y,class\n")
    line = one_line_error("train", samples, "-o", tmp_path / "m.pt", "--legend", path)
    assert str(path) in line and message in line


def test_non_utf8_legend(tmp_path: Path) -> None:
    path = tmp_path / "legend.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    samples = tmp_path / "samples.csv"
    samples.write_text("x,y,class\n")
    assert "cannot read legend" in one_line_error("train", samples, "-o", tmp_path / "m.pt", "--legend", path)


def test_output_folder_in_use_by_another_run(tmp_path: Path, region: Path) -> None:
    import fcntl

    job = write_job(tmp_path, spec(tmp_path, [{"kind": "stac", "paths": [str(region)]}]))
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".suelo.lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert "another suelo run" in one_line_error("run", job)
    shutil.rmtree(tmp_path / "out")
