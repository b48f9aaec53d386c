"""``suelo validate`` checks the whole job against the models it will run: months, bands, level (issue 17).

A job the model cannot serve is one line naming the model file and what does not match, exit 2, before any work.
Fewer months than the model was trained on run only when the job says so, and the report then says what the
model card measured for that many months.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from suelo.cli import main
from suelo.model_card import fewer_months_statement
from tests.fixtures import REPO_ROOT, SAMPLE, SAMPLE_ITEMS, demo_job, one_line_error

SHORT = {"start": "2021-04-01", "end": "2021-06-30"}  # 3 of the sample's months


def test_fewer_months_is_refused_naming_the_model_and_the_opt_in(tmp_path: Path) -> None:
    line = one_line_error("validate", str(demo_job(tmp_path, period=SHORT)))
    assert "landcover_default.pt: does not fit this job (has 3 months, the model needs 12" in line
    assert "products.landcover.allow_fewer_months: true" in line


def test_the_segmenter_is_checked_for_months_too(tmp_path: Path) -> None:
    job = demo_job(tmp_path, period=SHORT, landcover={"allow_fewer_months": True})
    spec = yaml.safe_load(job.read_text())
    spec["products"]["urban_atlas"]["enabled"] = True
    job.write_text(yaml.safe_dump(spec))
    line = one_line_error("validate", str(job))
    assert "segmenter_default.pt: segmenter does not fit this job (has 3 months, the model needs 12" in line
    assert "products.urban_atlas.allow_fewer_months: true" in line


def test_more_months_than_the_model_is_refused_even_when_fewer_are_allowed(tmp_path: Path) -> None:
    job = demo_job(
        tmp_path, period={"start": "2020-11-01", "end": "2021-11-30"}, landcover={"allow_fewer_months": True}
    )
    line = one_line_error("validate", str(job))
    assert "has 13 months, the model needs 12" in line


def test_validate_prints_the_grid_and_the_fewer_months_caveat(tmp_path: Path) -> None:
    job = demo_job(tmp_path, period=SHORT, landcover={"allow_fewer_months": True})
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 0, result.output
    assert "grid: EPSG:32631 100 x 100 px at 10 m, bounds 664000 5611120 665000 5612120" in result.output
    assert "scene levels: L2A" in result.output
    assert "warning: landcover: the job has 3 months and the model was trained on 12" in result.output
    assert "The model card measured, on test points cut to 3 months (10 spatial split seeds)" in result.output


def test_a_short_run_says_what_the_model_card_says(tmp_path: Path) -> None:
    job = demo_job(tmp_path, period=SHORT, landcover={"allow_fewer_months": True})
    result = CliRunner().invoke(main, ["run", str(job), "--scheduler", "synchronous"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    caveat = next(w for w in report["warnings"] if "allow_fewer_months" in w)
    assert "do not hold on 3" in caveat and "macro F1" in caveat
    assert caveat in (tmp_path / "out" / "report" / "report.html").read_text().replace("&#x27;", "'")


def test_fewer_months_statement_takes_the_nearest_shorter_measurement() -> None:
    cell = {key: {"mean": 0.5, "sd": 0.1, "n_seeds": 10} for key in
            ("macro_f1", "rf_macro_f1", "coverage", "accuracy_of_mapped", "outside_training")}  # fmt: skip
    card = {"fewer_months": {"seeds": 10, "by_months": {"12": cell, "3": cell}}}
    assert "cut to 3 months" in fewer_months_statement(card, 12, 5)
    assert fewer_months_statement(card, 12, 2) == "The model card has no measurement for fewer months."
    assert fewer_months_statement(None, 12, 3) == "The model card has no measurement for fewer months."


@pytest.mark.parametrize("level", ["L1C"])
def test_a_level_the_model_was_not_trained_on_is_one_line(tmp_path: Path, level: str) -> None:
    items = json.loads((SAMPLE_ITEMS).read_text())
    for feature in items["features"]:
        feature["properties"]["processing:level"] = level
        feature["id"] = feature["id"].replace("l2a", "x")
        for asset in feature["assets"].values():
            asset["href"] = str((SAMPLE / asset["href"]).resolve())
    path = tmp_path / "items.json"
    path.write_text(json.dumps(items))
    job = demo_job(tmp_path, ingest={"bands": ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"],
                                     "allow_l1c": True, "masking": {"require_scl": False}})  # fmt: skip
    spec = yaml.safe_load(job.read_text())
    spec["inputs"][0]["paths"] = [str(path)]
    spec["access"] = {"input_roots": [str(REPO_ROOT / "data" / "sample")]}
    job.write_text(yaml.safe_dump(spec))
    line = one_line_error("validate", str(job))
    assert "landcover_default.pt: does not fit this job" in line and "trained on L2A" in line


def test_a_period_without_any_scene_is_one_line(tmp_path: Path) -> None:
    job = demo_job(tmp_path, period={"start": "2023-01-01", "end": "2023-12-31"})
    line = one_line_error("validate", str(job))
    assert "period: no input scene was acquired in 2023-01 .. 2023-12" in line
    assert "the 10 scene(s) on the grid span 2020-11-01 .. 2021-10-01" in line


@pytest.mark.parametrize("name", ["demo.yaml", "slovenia.yaml"])
def test_the_shipped_local_jobs_validate_on_the_command_line(name: str) -> None:
    result = CliRunner().invoke(main, ["validate", str(REPO_ROOT / "workflows" / name)])
    assert result.exit_code == 0, result.output
    assert "grid: EPSG:326" in result.output
    if name == "slovenia.yaml":  # an ingest-only job: no model to check
        assert "scene levels: L1C" in result.output and "products: none enabled" in result.output
