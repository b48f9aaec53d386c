from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from suelo.errors import ConfigError
from suelo.settings import DEFAULT_BANDS, load_job, validate_job

MINIMAL = """
inputs:
  - kind: stac
    paths: [items/items.json]
period: {start: 2021-01-01, end: 2021-12-31}
"""


def test_minimal_job_takes_code_defaults_and_resolves_paths(tmp_path: Path) -> None:
    spec = tmp_path / "jobs" / "job.yaml"
    spec.parent.mkdir()
    spec.write_text(MINIMAL)
    job = load_job(spec)
    assert job.inputs[0].paths == (tmp_path / "jobs" / "items" / "items.json",)
    assert job.ingest.bands == DEFAULT_BANDS
    assert job.ingest.masking.masked_classes == (0, 1, 3, 8, 9, 10)
    assert job.output.dir == tmp_path / "jobs" / "out"
    assert job.compute.block_size == 512


def test_snow_masking_is_opt_in() -> None:
    job = validate_job(
        {"inputs": [{"kind": "stac", "paths": ["x.json"]}], "period": {"start": "2021-01-01", "end": "2021-02-01"},
         "ingest": {"masking": {"mask_snow": True}}}
    )  # fmt: skip
    assert job.ingest.masking.masked_classes == (0, 1, 3, 8, 9, 10, 11)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "unknown_key: 1\n", "unknown_key"),
        (MINIMAL + "compute: {block_size: many}\n", "compute.block_size"),
        (MINIMAL + "compute: {block_size: 100000000}\n", "compute.block_size"),
        (MINIMAL.replace("2021-12-31", "2020-12-31"), "before period.start"),
        (MINIMAL + "ingest: {bands: [B02, B99]}\n", "ingest.bands"),
        ("!!python/object/apply:os.system ['echo hacked']\n", "not valid YAML"),
        ("- just\n- a list\n", "YAML mapping"),
        (MINIMAL + "aoi: {bbox: [5, 50, 4, 51]}\n", "aoi"),
        (
            "inputs: [{kind: geotiff, paths: [a.tif], bands: [B02], product_level: L2A}]\n"
            "period: {start: 2021-01-01, end: 2021-01-31}\n",
            "processing_baseline",
        ),
    ],
)
def test_bad_specs_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_job(spec)
    assert str(spec) in str(caught.value)
    assert message in str(caught.value)


def test_settings_are_frozen() -> None:
    job = validate_job({"inputs": [{"kind": "stac", "paths": ["x.json"]}],
                        "period": {"start": "2021-01-01", "end": "2021-01-31"}})  # fmt: skip
    with pytest.raises(Exception, match="frozen"):
        job.name = "other"  # type: ignore[misc]


def test_access_section_resolves_roots_and_records_the_job_folder(tmp_path: Path) -> None:
    spec = tmp_path / "jobs" / "job.yaml"
    spec.parent.mkdir()
    access = "access: {input_roots: [../shared, /data/s2], remote_hosts: [Data.Example.org, .example.net]}\n"
    spec.write_text(MINIMAL + access)
    job = load_job(spec)
    assert job.access.input_roots == (tmp_path / "shared", Path("/data/s2"))
    assert job.access.remote_hosts == ("data.example.org", ".example.net")
    assert job.folder == tmp_path / "jobs"
    assert job.model_copy(update={"name": "other"}).folder == tmp_path / "jobs"  # kept by CLI overrides
    defaults = validate_job({"inputs": [{"kind": "stac", "paths": ["x.json"]}],
                             "period": {"start": "2021-01-01", "end": "2021-01-31"}})  # fmt: skip
    assert defaults.folder is None and defaults.access.input_roots == () and defaults.access.allow_any_remote_host


@pytest.mark.parametrize(
    ("access", "message"),
    [
        ("{remote_hosts: ['https://example.org']}", "access.remote_hosts: Value error, host names only"),
        ("{remote_hosts: ['example.org:443']}", "access.remote_hosts: Value error, host names only"),
        ("{remote_hosts: [example.org], allow_any_remote_host: true}", "give remote_hosts or allow_any_remote_host"),
        ("{roots: [x]}", "access.roots: Extra inputs are not permitted"),
    ],
)
def test_bad_access_sections(tmp_path: Path, access: str, message: str) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(MINIMAL + f"access: {access}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_job(spec)


def test_job_file_must_be_a_regular_file(tmp_path: Path) -> None:
    link = tmp_path / "job.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(ConfigError) as caught:
        load_job(link)
    assert str(caught.value) == f"{link}: cannot read job spec: a character device, not a regular file"
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="a FIFO"):
        load_job(fifo)  # refused before opening: opening a FIFO would block
