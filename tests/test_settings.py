from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import DEFAULT_BANDS, load_job, validate_job

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
            "inputs: [{kind: geotiff, paths: [a.tif], bands: [B02]}]\nperiod: {start: 2021-01-01, end: 2021-01-31}\n",
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
