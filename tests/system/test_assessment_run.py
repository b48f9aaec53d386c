"""A job that names a labelled sample: ``suelo run`` adds the stratified assessment to the run report, checks the
sample before any block runs, and reassembles (never recomputes) when only the sample changes."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from suelo.cli import main
from tests.fixtures import demo_job
from tests.fixtures.runs import one_line_error


def run(job: Path) -> str:
    result = CliRunner().invoke(main, ["run", str(job)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The demo job run once, and a sample drawn on its land-cover map, labelled: the map's class where it maps,
    trees where it does not (labels for the plumbing, not an interpretation)."""
    folder = tmp_path_factory.mktemp("assessment_run")
    job = demo_job(folder)
    assert "1 of 1 blocks run" in run(job)
    map_path = folder / "out" / "landcover" / "demo-belgium.tif"
    sample = folder / "sample.gpkg"
    design = CliRunner().invoke(main, ["assess", "design", str(map_path), "-o", str(sample), "--n", "40",
                                       "--min-per-stratum", "5", "--seed", "9"])  # fmt: skip
    assert design.exit_code == 0, design.output
    points = gpd.read_file(sample, layer="sample")
    points["reference"] = np.where(points["map_value"] < 252, points["map_value"], 5)
    points.to_file(sample, layer="sample", driver="GPKG")
    return folder, job, sample


def with_assessment(job: Path, sample: Path, **extra: object) -> Path:
    spec = yaml.safe_load(job.read_text())
    spec["products"]["landcover"]["assessment"] = {"sample": str(sample), **extra}
    job.write_text(yaml.safe_dump(spec))
    return job


def test_the_report_gets_the_assessment_without_redoing_blocks(first_run: tuple[Path, Path, Path]) -> None:
    folder, job, sample = first_run
    out = folder / "out"
    printed = run(with_assessment(job, sample))
    assert "0 of 1 blocks run" in printed
    report = json.loads((out / "report" / "report.json").read_text())
    assessment = report["assessments"]["landcover"]
    assert assessment["sample"]["used"] == 40
    assert assessment["overall_accuracy"]["estimate"] == 1.0  # labelled with the map's own classes
    assert assessment["certified_accuracy"] == 0.8
    trees = next(c for c in assessment["classes"] if c["name"] == "Trees")
    assert trees["area_ha"]["estimate"] > trees["mapped_area_ha"]  # the unmapped strata hold trees
    folder_files = sorted(p.name for p in (out / "report" / "assessment_landcover").iterdir())
    assert folder_files == ["assessment.csv", "assessment.html", "assessment.json", "error_matrix.csv"]
    html = (out / "report" / "report.html").read_text()
    assert 'class="assessment"' in html and "Accuracy and area of demo-belgium.tif" in html
    final = json.loads((out / "final.json").read_text())
    assert "report/assessment_landcover/assessment.json" in final["files"]
    # done: nothing to do; a relabelled sample: the report again, still no block
    assert "up to date" in run(job)
    points = gpd.read_file(sample, layer="sample")
    points.loc[points.index[:3], "reference"] = 4
    points.to_file(sample, layer="sample", driver="GPKG")
    printed = run(job)
    assert "0 of 1 blocks run" in printed
    again = json.loads((out / "report" / "assessment_landcover" / "assessment.json").read_text())
    assert again["overall_accuracy"]["estimate"] < 1.0


def test_a_bad_sample_stops_before_any_work(first_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, job, sample = first_run
    bad = tmp_path / "bad.gpkg"
    points = gpd.read_file(sample, layer="sample")
    points.loc[points.index[0], "reference"] = 99
    points.to_file(bad, layer="sample", driver="GPKG")
    spec = yaml.safe_load(job.read_text())
    spec["output"]["dir"] = str(tmp_path / "out")
    spec["products"]["landcover"]["assessment"] = {"sample": str(bad)}
    other = tmp_path / "job.yaml"
    other.write_text(yaml.safe_dump(spec))
    line = one_line_error("validate", other)
    assert "bad.gpkg" in line and "'99'" in line and "not in the legend" in line
    line = one_line_error("run", other)
    assert "bad.gpkg" in line
    assert not (tmp_path / "out" / "blocks").exists()
    spec["products"]["landcover"]["assessment"] = {"sample": str(tmp_path / "missing.gpkg")}
    other.write_text(yaml.safe_dump(spec))
    line = one_line_error("validate", other)
    assert "missing.gpkg" in line and "does not exist" in line
