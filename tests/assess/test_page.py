"""The renderers of an assessment (suelo.assess.page): estimates table, CSVs, static page and its SVG chart."""

from __future__ import annotations

import copy
import csv
import html
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from suelo.assess.page import (
    assessment_html,
    assessment_section_html,
    error_matrix_csv,
    estimates_table,
    write_assessment_page,
    write_table_csv,
)

SVG = "{http://www.w3.org/2000/svg}"
WATER = "Water <&> wetlands"
WARNING = 'Class 3 "Bare rock" was never mapped: its user\'s accuracy cannot be estimated.'


def estimate(value: float, se: float) -> dict[str, Any]:
    return {"estimate": value, "se": se, "ci95": [value - 1.96 * se, value + 1.96 * se]}


def make_assessment() -> dict[str, Any]:
    """3 classes (class 3 never mapped: no user's accuracy) and a reason row, 254; 100,000 ha in all."""
    return {
        "title": "Accuracy and area of demo-belgium.tif",
        "map": {
            "path": "out/demo-belgium.tif",
            "sha256": "ab" * 32,
            "grid": {
                "crs": "EPSG:32631",
                "transform": [10.0, 0.0, 500000.0, 0.0, -10.0, 5600000.0],
                "height": 4000,
                "width": 2500,
            },
            "pixel_area_m2": 100.0,
            "area_basis": "pixel count x pixel area (projected CRS)",
        },
        "sample": {
            "path": "samples/reference.gpkg",
            "reference_column": "lc_ref",
            "points": 160,
            "used": 155,
            "dropped": {"outside the map": 3, "no reference class": 2},
            "dropped_file": "dropped_points.csv",
        },
        "estimator": "stratified (Olofsson et al. 2014): the strata are the map values",
        "fpc": False,
        "confidence_level": 0.95,
        "total_area_ha": 100000.0,
        "strata": [
            {"code": 1, "name": "Built-up", "map_pixels": 7700000, "map_area_ha": 77000.0, "weight": 0.77, "n": 100},
            {"code": 2, "name": WATER, "map_pixels": 1900000, "map_area_ha": 19000.0, "weight": 0.19, "n": 50},
            {
                "code": 254,
                "name": "Unclassified (low confidence)",
                "map_pixels": 400000,
                "map_area_ha": 4000.0,
                "weight": 0.04,
                "n": 5,
            },
        ],
        "overall_accuracy": estimate(0.88, 0.015),
        "mapped_share": estimate(0.96, 0.0),
        "correct_share": estimate(0.841583, 0.02),
        "classes": [
            {
                "code": 1,
                "name": "Built-up",
                "color": "#e31a1c",
                "mapped_pixels": 7700000,
                "mapped_area_ha": 77000.0,
                "users_accuracy": estimate(0.909, 0.03),
                "producers_accuracy": estimate(0.946, 0.025),
                "area_proportion": estimate(0.74, 0.02),
                "area_ha": estimate(74000.0, 2000.0),
            },
            {
                "code": 2,
                "name": WATER,
                "color": "#1f78b4",
                "mapped_pixels": 1900000,
                "mapped_area_ha": 19000.0,
                "users_accuracy": estimate(0.745, 0.06),
                "producers_accuracy": estimate(0.669, 0.07),
                "area_proportion": estimate(0.211583, 0.015),
                "area_ha": estimate(21158.3, 1500.0),
            },
            {
                "code": 3,
                "name": "Bare rock",
                "color": None,
                "mapped_pixels": 0,
                "mapped_area_ha": 0.0,
                "users_accuracy": None,
                "producers_accuracy": {"estimate": 0.0, "se": None, "ci95": None},
                "area_proportion": estimate(0.048417, 0.01),
                "area_ha": estimate(4841.7, 1000.0),
            },
        ],
        "error_matrix": {
            "rows": [
                {"code": 1, "name": "Built-up"},
                {"code": 2, "name": WATER},
                {"code": 254, "name": "Unclassified (low confidence)"},
            ],
            "columns": [{"code": 1, "name": "Built-up"}, {"code": 2, "name": WATER}, {"code": 3, "name": "Bare rock"}],
            "proportions": [[0.70, 0.06, 0.01], [0.02, 0.141583, 0.028417], [0.02, 0.01, 0.01]],
            "counts": [[90, 8, 2], [3, 40, 7], [2, 2, 1]],
        },
        "warnings": [WARNING],
    }


def ci(value: float, se: float) -> tuple[float, float]:
    return value - 1.96 * se, value + 1.96 * se


def test_estimates_table_rows() -> None:
    rows = estimates_table(make_assessment())
    expected = [
        ("overall_accuracy", None, None, 0.88, 0.015, *ci(0.88, 0.015), None),
        ("mapped_share", None, None, 0.96, 0.0, 0.96, 0.96, None),
        ("correct_share", None, None, 0.841583, 0.02, *ci(0.841583, 0.02), None),
        ("users_accuracy", 1, "Built-up", 0.909, 0.03, *ci(0.909, 0.03), None),
        ("users_accuracy", 2, WATER, 0.745, 0.06, *ci(0.745, 0.06), None),
        ("users_accuracy", 3, "Bare rock", None, None, None, None, None),
        ("producers_accuracy", 1, "Built-up", 0.946, 0.025, *ci(0.946, 0.025), None),
        ("producers_accuracy", 2, WATER, 0.669, 0.07, *ci(0.669, 0.07), None),
        ("producers_accuracy", 3, "Bare rock", 0.0, None, None, None, None),
        ("area_proportion", 1, "Built-up", 0.74, 0.02, *ci(0.74, 0.02), 77000.0 / 100000.0),
        ("area_proportion", 2, WATER, 0.211583, 0.015, *ci(0.211583, 0.015), 19000.0 / 100000.0),
        ("area_proportion", 3, "Bare rock", 0.048417, 0.01, *ci(0.048417, 0.01), 0.0),
        ("area_ha", 1, "Built-up", 74000.0, 2000.0, *ci(74000.0, 2000.0), 77000.0),
        ("area_ha", 2, WATER, 21158.3, 1500.0, *ci(21158.3, 1500.0), 19000.0),
        ("area_ha", 3, "Bare rock", 4841.7, 1000.0, *ci(4841.7, 1000.0), 0.0),
    ]
    columns = ["quantity", "code", "name", "estimate", "se", "ci95_low", "ci95_high", "mapped"]
    assert [list(row) for row in rows] == [columns] * len(expected)
    assert [tuple(row.values()) for row in rows] == expected


def test_estimates_table_plain_python_numbers() -> None:
    np = pytest.importorskip("numpy")
    assessment = make_assessment()
    assessment["overall_accuracy"] = {"estimate": np.float64(0.5), "se": np.float32(0.25), "ci95": None}
    row = estimates_table(assessment)[0]
    assert [type(row[k]) for k in ("estimate", "se")] == [float, float]
    assert (row["ci95_low"], row["ci95_high"]) == (None, None)


def test_table_csv_round_trip(tmp_path: Path) -> None:
    assessment = make_assessment()
    path = write_table_csv(tmp_path / "estimates.csv", assessment)
    assert path == tmp_path / "estimates.csv"
    assert [p.name for p in tmp_path.iterdir()] == ["estimates.csv"]  # no temporary left behind
    with open(path, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["quantity", "code", "name", "estimate", "se", "ci95_low", "ci95_high", "mapped"]
    assert len(lines) == 1 + 3 + 4 * 3
    assert lines[1] == ["overall_accuracy", "", "", "0.88", "0.015", repr(0.88 - 1.96 * 0.015), repr(0.88 + 0.0294), ""]
    assert lines[6] == ["users_accuracy", "3", "Bare rock", "", "", "", "", ""]
    assert lines[5] == [
        "users_accuracy",
        "2",
        WATER,
        "0.745",
        "0.06",
        repr(0.745 - 1.96 * 0.06),
        repr(0.745 + 1.96 * 0.06),
        "",
    ]
    assert lines[-2][0:4] == ["area_ha", "2", WATER, "21158.3"] and lines[-2][-1] == "19000.0"
    for line, row in zip(lines[1:], estimates_table(assessment), strict=True):
        numbers = [float(v) if v else None for v in line[3:]]
        assert numbers == [row[k] for k in ("estimate", "se", "ci95_low", "ci95_high", "mapped")]  # unrounded


def test_error_matrix_csv(tmp_path: Path) -> None:
    path = error_matrix_csv(tmp_path / "error_matrix.csv", make_assessment())
    with open(path, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    header = ["map \\ reference (proportion of area)", "1 Built-up", f"2 {WATER}", "3 Bare rock", "total"]
    assert lines[0] == header
    assert [line[0] for line in lines[1:5]] == [
        "1 Built-up",
        f"2 {WATER}",
        "254 Unclassified (low confidence)",
        "total",
    ]
    assert lines[5] == []  # the empty line between the blocks
    assert lines[6] == ["map \\ reference (sample points)", *header[1:]]
    assert len(lines) == 11
    proportions = [[float(v) for v in line[1:]] for line in lines[1:5]]
    for row in proportions[:3]:
        assert math.isclose(row[-1], sum(row[:-1]), abs_tol=1e-12)
    assert proportions[0][-1] == pytest.approx(0.77, abs=1e-12)
    totals = proportions[3]
    assert totals[:3] == pytest.approx([0.74, 0.211583, 0.048417], abs=1e-12)
    assert abs(sum(totals[:3]) - 1.0) < 1e-12 and abs(totals[3] - 1.0) < 1e-12
    assert lines[7] == ["1 Built-up", "90", "8", "2", "100"]
    assert lines[9] == ["254 Unclassified (low confidence)", "2", "2", "1", "5"]
    assert lines[10] == ["total", "95", "50", "10", "155"]


def test_error_matrix_csv_rejects_a_wrong_shape(tmp_path: Path) -> None:
    assessment = make_assessment()
    assessment["error_matrix"]["counts"] = [[1, 2], [3, 4], [5, 6]]
    with pytest.raises(ValueError, match="counts"):
        error_matrix_csv(tmp_path / "error_matrix.csv", assessment)
    assert not list(tmp_path.iterdir())


def test_page_content_and_escaping(tmp_path: Path) -> None:
    assessment = make_assessment()
    page = assessment_html(assessment)
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<title>Accuracy and area of demo-belgium.tif</title>" in page
    assert html.escape(WATER) in page and WATER not in page  # "Water &lt;&amp;&gt; wetlands"
    assert "Water &lt;&amp;&gt; wetlands" in page
    assert f'<div class="warning" role="alert"><strong>Warning:</strong> {html.escape(WARNING)}</div>' in page
    assert page.index('role="alert"') < page.index("<h3>Summary</h3>")
    # summary: points used and dropped, the reasons and the dropped file, estimator, total area
    assert "160 points, 155 used, 5 dropped (outside the map: 3, no reference class: 2)" in page
    assert "dropped_points.csv" in page and "stratified (Olofsson et al. 2014)" in page
    assert "100,000 ha" in page
    # accuracies in percent with 1 decimal, ± 1.96·SE; areas in ha with thousands separators
    assert "88.0% ± 2.9%" in page
    assert "21,158 ± 2,940 ha" in page
    assert "18,218 ha" in page and "24,098 ha" in page  # the CI bounds of the water area
    assert '<td>User&#x27;s accuracy</td><td>3</td><td>Bare rock</td><td class="num">n/a</td>' in page
    # the error matrix: 3 decimals, counts in small, diagonal highlighted, totals
    assert '<td class="diag">0.700<small>n = 90</small></td>' in page
    assert '<td class="diag">0.142<small>n = 40</small></td>' in page
    assert '<td class="total">1.000<small>n = 155</small></td>' in page
    assert page.count('class="diag"') == 2  # 254 and class 3 have no diagonal cell
    # the strata
    assert '<td>254</td><td>Unclassified (low confidence)</td><td class="num">400,000</td>' in page
    path = write_assessment_page(tmp_path / "assessment.html", assessment)
    assert path.read_text(encoding="utf-8") == page


def test_small_areas_have_two_decimals() -> None:
    assessment = make_assessment()
    assessment["classes"][2]["area_ha"] = estimate(42.5, 10.0)
    page = assessment_html(assessment)
    assert "42.50 ± 19.60 ha" in page and "22.90 ha" in page and "62.10 ha" in page


def test_section_is_embeddable() -> None:
    assessment = make_assessment()
    section = assessment_section_html(assessment)
    assert section.startswith('<section class="assessment"><h2>Accuracy and area of demo-belgium.tif</h2>')
    assert section.endswith("</section>")
    assert not re.search(r"<(html|head|body)\b", section)
    assert section in assessment_html(assessment)


def svg_of(page: str) -> ET.Element:
    match = re.search(r"<svg\b.*?</svg>", page, re.DOTALL)
    assert match is not None
    return ET.fromstring(match.group(0))  # well-formed XML or this raises


def test_svg_chart() -> None:
    svg = svg_of(assessment_html(make_assessment()))
    assert svg.tag == f"{SVG}svg" and svg.get("width") == "720"
    bars = [(r.get("data-class"), r.get("data-kind")) for r in svg.iter(f"{SVG}rect") if r.get("data-kind")]
    assert sorted(bars) == sorted((str(c), kind) for c in (1, 2, 3) for kind in ("mapped", "estimated"))
    error_bars = [g for g in svg.iter(f"{SVG}g") if g.get("data-kind") == "ci"]
    assert sorted(g.get("data-class", "") for g in error_bars) == ["1", "2", "3"]
    for g in error_bars:
        assert len(g.findall(f"{SVG}line")) == 3  # the interval and its two end ticks
    labels = "".join("".join(t.itertext()) for t in svg.iter(f"{SVG}text"))
    assert WATER in labels and "Built-up" in labels and "area (ha)" in labels
    assert "mapped area" in labels and "estimated area" in labels  # the legend
    # the class colour on both bars, lighter on the mapped one; no colour: grey
    colours = {(r.get("data-class"), r.get("data-kind")): r for r in svg.iter(f"{SVG}rect") if r.get("data-kind")}
    assert colours[("1", "estimated")].get("fill") == "#e31a1c"
    assert colours[("1", "mapped")].get("fill") == "#e31a1c" and colours[("1", "mapped")].get("fill-opacity")
    assert colours[("3", "estimated")].get("fill") == "#888888"
    assert float(colours[("3", "mapped")].get("width", "nan")) == 0.0  # never mapped
    widths = {key: float(rect.get("width", "nan")) for key, rect in colours.items()}
    assert widths[("1", "mapped")] > widths[("1", "estimated")] > widths[("2", "estimated")] > widths[("2", "mapped")]


def test_svg_leaves_out_classes_without_area() -> None:
    assessment = make_assessment()
    assessment["classes"][2]["area_ha"] = {"estimate": 0.0, "se": 0.0, "ci95": [0.0, 0.0]}
    svg = svg_of(assessment_html(assessment))
    kinds = [r.get("data-class", "") for r in svg.iter(f"{SVG}rect") if r.get("data-kind")]
    assert sorted(kinds) == ["1", "1", "2", "2"]
    assert "Bare rock" not in "".join("".join(t.itertext()) for t in svg.iter(f"{SVG}text"))
    none_left = copy.deepcopy(assessment)
    for cls in none_left["classes"]:
        cls["mapped_area_ha"], cls["area_ha"] = 0.0, None
    assert not [r for r in svg_of(assessment_html(none_left)).iter(f"{SVG}rect") if r.get("data-kind")]
