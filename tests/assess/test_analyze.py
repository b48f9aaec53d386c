"""``suelo assess analyze``: what it refuses (one line each, naming the file), what it leaves out (counted and
listed), and the files it writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner

from suelo.cli import main
from tests.fixtures.assessment import analyze, legend_of, write_codes
from tests.fixtures.paths import LEGENDS
from tests.fixtures.runs import one_line_error

LEGEND = legend_of(("Crops", "Grass", "Trees"))


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A 40 x 40 map of crops / grass / trees and low confidence, and a design on it labelled with the map's
    class (the low-confidence points: trees)."""
    codes = np.full((40, 40), 1, dtype=np.uint8)
    codes[:, 20:] = 2
    codes[30:, :10] = 3
    codes[:8, :8] = 254
    path = write_codes(tmp_path / "map.tif", codes, LEGEND, resolution=10.0)
    sample = tmp_path / "sample.gpkg"
    result = CliRunner().invoke(main, ["assess", "design", str(path), "-o", str(sample), "--n", "40",
                                       "--min-per-stratum", "6"])  # fmt: skip
    assert result.exit_code == 0, result.output
    points = gpd.read_file(sample, layer="sample")
    points["reference"] = np.where(points["map_value"] == 254, 3, points["map_value"])
    points.to_file(sample, layer="sample", driver="GPKG")
    return path, sample, codes


def rewrite(sample: Path, change: dict, rows: slice | list[int] | None = None) -> Path:
    points = gpd.read_file(sample, layer="sample")
    for column, value in change.items():
        if rows is None:
            points[column] = value
        else:
            points.loc[points.index[rows], column] = value
    points.to_file(sample, layer="sample", driver="GPKG")
    return sample


def test_outputs(labelled: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    path, sample, _ = labelled
    assessment, output = analyze(path, sample, "-o", tmp_path / "out")
    folder = tmp_path / "out"
    assert sorted(p.name for p in folder.iterdir()) == [
        "assessment.csv", "assessment.html", "assessment.json", "error_matrix.csv",
    ]  # fmt: skip
    for key in ("overall_accuracy", "mapped_share", "correct_share"):
        assert set(assessment[key]) == {"estimate", "se", "ci95"}
    for c in assessment["classes"]:
        assert {"code", "name", "users_accuracy", "producers_accuracy", "area_proportion", "area_ha"} <= set(c)
    assert [s["code"] for s in assessment["strata"]] == [1, 2, 3, 254]
    assert all(s["n"] >= 6 and s["map_area_ha"] > 0 for s in assessment["strata"])
    assert "overall accuracy of the mapped area 1.000" in output
    html = (folder / "assessment.html").read_text()
    assert "Trees" in html and "<svg" in html
    rows = list(csv.reader((folder / "assessment.csv").open()))
    assert rows[0][:4] == ["quantity", "code", "name", "estimate"]


def test_wald_intervals_that_collapse_get_the_exact_one_beside(
    labelled: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    """Every point right gives SE 0: the Clopper-Pearson interval (0.025^(1/n) to 1) is added, with a warning."""
    path, sample, _ = labelled
    assessment, output = analyze(path, sample, "-o", tmp_path / "out")
    crops = next(c for c in assessment["classes"] if c["name"] == "Crops")
    n = next(s["n"] for s in assessment["strata"] if s["code"] == 1)
    assert crops["users_accuracy"]["se"] == 0.0
    assert crops["users_accuracy_exact_ci95"] == pytest.approx([0.025 ** (1 / n), 1.0])
    assert any(w.startswith(f"user's accuracy of Crops: {n} of {n} points right") for w in assessment["warnings"])
    assert "Clopper-Pearson" in output


def test_unlabelled_points_are_counted_listed_and_left_out(
    labelled: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    path, sample, _ = labelled
    points = gpd.read_file(sample, layer="sample")
    crops = points.index[points["stratum"] == 1][:2].tolist()
    rewrite(sample, {"reference": None}, crops)
    assessment, _ = analyze(path, sample, "-o", tmp_path / "out")
    assert assessment["sample"]["used"] == len(points) - 2
    assert assessment["sample"]["dropped"] == {"no reference label": 2}
    listed = list(csv.DictReader((tmp_path / "out" / "dropped_points.csv").open()))
    assert sorted(int(r["point_id"]) for r in listed) == sorted(points.loc[crops, "point_id"].tolist())
    assert any("2 of" in w and "left out" in w for w in assessment["warnings"])


def test_class_names_and_a_wider_legend(labelled: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    """Labels may be names (any case and punctuation) and, with --legend, classes the map does not have: a
    low-confidence point that is really water puts water in the area estimates."""
    path, sample, _ = labelled
    points = gpd.read_file(sample, layer="sample")
    points["reference"] = points["reference"].map({1: "crops", 2: "GRASS", 3: "trees "}).astype(str)
    low = points.index[points["stratum"] == 254][:3]
    points.loc[low, "reference"] = "Water"
    points.to_file(sample, layer="sample", driver="GPKG")
    line = one_line_error("assess", "analyze", path, sample, "-o", tmp_path / "no")
    assert "sample.gpkg" in line and "'Water'" in line and "not in the legend" in line
    legend = tmp_path / "legend.yaml"
    legend.write_text("classes:\n  - {code: 8, name: Water, color: '#1f78b4'}\n")
    assessment, _ = analyze(path, sample, "--legend", legend, "-o", tmp_path / "out")
    water = next(c for c in assessment["classes"] if c["name"] == "Water")
    assert water["area_ha"]["estimate"] > 0 and water["mapped_pixels"] == 0
    assert water["users_accuracy"] is None  # never mapped: no user's accuracy
    assert water["producers_accuracy"]["estimate"] == 0.0  # all of it left unmapped
    assert not (tmp_path / "no").exists()


def test_points_outside_the_map(labelled: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    path, sample, _ = labelled
    points = gpd.read_file(sample, layer="sample")
    points.loc[points.index[:3], "geometry"] = gpd.points_from_xy([3_000_000] * 3, [3_000_000] * 3)
    points.drop(columns=["row", "col", "design_grid"]).to_file(sample, layer="sample", driver="GPKG")
    line = one_line_error("assess", "analyze", path, sample, "-o", tmp_path / "out")
    ids = ", ".join(str(i) for i in points["point_id"][:3])
    assert "sample.gpkg" in line and f"3 of {len(points)} points lie outside map.tif" in line and ids in line


def test_strata_with_fewer_than_two_labelled_points(labelled: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    path, sample, _ = labelled
    points = gpd.read_file(sample, layer="sample")
    trees = points.index[points["stratum"] == 3].tolist()
    rewrite(sample, {"reference": None}, trees[1:])
    line = one_line_error("assess", "analyze", path, sample, "-o", tmp_path / "out")
    assert "sample.gpkg" in line and "fewer than 2 labelled points" in line and "stratum 3 (Trees): 1" in line


def test_a_sample_drawn_on_another_grid(labelled: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    """The same classes on a grid shifted by half a kilometre: the design's grid fingerprint tells them apart."""
    _path, sample, codes = labelled
    from affine import Affine
    from rasterio.crs import CRS

    from suelo.grid import Grid
    from suelo.write import write_class_map

    wider = np.zeros((40, 80), dtype=np.uint8)
    wider[:, :40] = codes
    other = tmp_path / "other.tif"
    write_class_map(other, wider, Grid(CRS.from_user_input("EPSG:3035"), Affine(10, 0, 4_000_000, 0, -10, 3_000_000),
                                       40, 80), LEGEND)  # fmt: skip
    line = one_line_error("assess", "analyze", other, sample, "-o", tmp_path / "out")
    assert "sample.gpkg" in line and "drawn on another grid" in line and "other.tif" in line
    # without the fingerprint column, the row/col the points were drawn at give it away on a finer grid
    finer = tmp_path / "finer.tif"
    write_class_map(finer, np.repeat(np.repeat(codes, 2, 0), 2, 1), Grid(CRS.from_user_input("EPSG:3035"),
                    Affine(5, 0, 4_000_000, 0, -5, 3_000_000), 80, 80), LEGEND)  # fmt: skip
    points = gpd.read_file(sample, layer="sample").drop(columns=["design_grid"])
    points.to_file(sample, layer="sample", driver="GPKG")
    line = one_line_error("assess", "analyze", finer, sample, "-o", tmp_path / "out")
    assert "drawn on another grid" in line and "row/col" in line


def test_a_strata_raster_on_another_grid(labelled: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    path, sample, codes = labelled
    strata = write_codes(tmp_path / "strata.tif", codes, LEGEND, resolution=20.0)
    line = one_line_error("assess", "analyze", path, sample, "--strata", strata, "-o", tmp_path / "out")
    assert "strata.tif" in line and "another grid" in line


def test_reading_the_csv_back(labelled: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    """The CSV beside the GeoPackage, labelled in a spreadsheet, gives the same assessment."""
    path, sample, _ = labelled
    points = gpd.read_file(sample, layer="sample")
    table = sample.with_suffix(".csv")
    frame = json.loads(points.drop(columns="geometry").to_json(orient="records"))
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(frame[0]))
        writer.writeheader()
        writer.writerows(frame)
    from_gpkg, _ = analyze(path, sample, "-o", tmp_path / "a")
    from_csv, _ = analyze(path, table, "-o", tmp_path / "b")
    for key in ("overall_accuracy", "classes", "error_matrix", "strata"):
        assert from_csv[key] == from_gpkg[key]


def test_the_landcover10_legend_file(labelled: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    """A legend file whose codes clash with the map's own classes keeps the map's names for its codes; of its other
    classes, those the interpreters found are estimated (a class nobody found would be 0 +- 0: left out)."""
    path, sample, _ = labelled
    points = gpd.read_file(sample, layer="sample")
    low = points.index[points["stratum"] == 254][:2]
    rewrite(sample, {"reference": 8}, list(low))
    assessment, _ = analyze(path, sample, "--legend", LEGENDS / "worldcereal_landcover10.yaml", "-o", tmp_path / "o")
    names = [c["name"] for c in assessment["classes"]]
    assert names == ["Crops", "Grass", "Trees", "Water"]
    assert [c["name"] for c in assessment["error_matrix"]["columns"]] == names
    assert [r["code"] for r in assessment["error_matrix"]["rows"]] == [1, 2, 3, 254]
