"""The published worked examples, reproduced through the CLI to the papers' rounding.

Each test builds a suelo class map whose pixel counts are the paper's mapped areas (30 m cells in an equal-area
CRS, 0.09 ha each, as the papers' Landsat maps) and a sample whose points fall in the paper's error-matrix cells,
then runs ``suelo assess analyze`` and compares assessment.json with the numbers printed in the papers:

- Olofsson et al. 2014, Remote Sens. Environ. 148:42-57, section 5 (Table 8 and the estimates on p. 54), and its
  sample size example (n = 641 for a standard error of 0.01 of overall accuracy), through ``assess design``;
- Olofsson et al. 2013, Remote Sens. Environ. 129:122-131, example 1 (eqs. 9-16, Table 4) and example 2 (Table 6);
- Stehman 2014, Int. J. Remote Sens. 35:4923-4939, the numerical example of strata that are not the map classes
  (section 4, Table 2), with the strata as a raster (--strata) and as the sample's own design columns.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner

from suelo.assess.estimate import Z95
from suelo.cli import main
from tests.fixtures.assessment import (
    analyze,
    by_name,
    class_map,
    labelled_sample,
    legend_of,
    pixels_of,
    write_codes,
    write_sample,
)


def half_width(e: dict) -> float:
    """The papers' "+-": 1.96 standard errors (the ci95 bounds are clipped to what the quantity can take)."""
    return Z95 * e["se"]


# Olofsson et al. 2014 -------------------------------------------------------------------------------------------

OLOFSSON_2014_CLASSES = ("Deforestation", "Forest gain", "Stable forest", "Stable non-forest")
OLOFSSON_2014_PIXELS = {1: 200_000, 2: 150_000, 3: 3_200_000, 4: 6_450_000}
# Table 8: sample counts, rows = map class, columns = reference class
OLOFSSON_2014_MATRIX = ((66, 0, 5, 4), (0, 55, 8, 12), (1, 0, 153, 11), (2, 1, 9, 313))


@pytest.fixture(scope="module")
def olofsson_2014_map(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("olofsson2014")
    return class_map(folder / "change.tif", OLOFSSON_2014_PIXELS, legend_of(OLOFSSON_2014_CLASSES), width=4000)


def test_olofsson_2014_accuracy_and_area(olofsson_2014_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, codes = olofsson_2014_map
    cells = {(i + 1, j + 1): n for i, row in enumerate(OLOFSSON_2014_MATRIX) for j, n in enumerate(row) if n}
    sample = write_sample(tmp_path / "sample.gpkg", labelled_sample(codes, cells))
    assessment, output = analyze(path, sample, "-o", tmp_path / "out")

    assert [s["n"] for s in assessment["strata"]] == [75, 75, 165, 325]
    assert [round(s["weight"], 3) for s in assessment["strata"]] == [0.02, 0.015, 0.32, 0.645]
    assert "Olofsson" in assessment["estimator"]
    # p. 54: "overall accuracy 0.95 +- 0.02"
    oa = assessment["overall_accuracy"]
    assert (round(oa["estimate"], 2), round(half_width(oa), 2)) == (0.95, 0.02)
    users, producers = by_name(assessment, "users_accuracy"), by_name(assessment, "producers_accuracy")
    published_users = {"Deforestation": (0.88, 0.07), "Forest gain": (0.73, 0.10), "Stable forest": (0.93, 0.04),
                       "Stable non-forest": (0.96, 0.02)}  # fmt: skip
    published_producers = {"Deforestation": (0.75, 0.21), "Forest gain": (0.85, 0.25), "Stable forest": (0.93, 0.03),
                           "Stable non-forest": (0.96, 0.02)}  # fmt: skip
    for name in OLOFSSON_2014_CLASSES:
        assert (round(users[name]["estimate"], 2), round(half_width(users[name]), 2)) == published_users[name]
        assert (round(producers[name]["estimate"], 2), round(half_width(producers[name]), 2)) == published_producers[
            name
        ]
    # p. 54: areas in ha with their 95 % confidence interval
    areas = by_name(assessment, "area_ha")
    published_areas = {"Deforestation": (21_158, 6_158), "Forest gain": (11_686, 3_756),
                       "Stable forest": (285_770, 15_510), "Stable non-forest": (581_386, 16_282)}  # fmt: skip
    for name, (area, interval) in published_areas.items():
        assert round(areas[name]["estimate"]) == area
        assert round(half_width(areas[name])) == interval
    # Forest gain's producer's accuracy, 0.85 +- 0.25, would reach 1.10: its interval is clipped at 1
    assert producers["Forest gain"]["ci95"][1] == 1.0
    # the mapped areas (pixel counts) the paper starts from: 18,000 ha of deforestation mapped
    mapped = {c["name"]: c["mapped_area_ha"] for c in assessment["classes"]}
    assert mapped["Deforestation"] == pytest.approx(18_000)
    assert assessment["total_area_ha"] == pytest.approx(900_000)
    # proportions of area in the error matrix (Table 9's first row: 0.0176, 0, 0.0013, 0.0011)
    first_row = assessment["error_matrix"]["proportions"][0]
    assert [round(p, 4) for p in first_row] == [0.0176, 0.0, 0.0013, 0.0011]
    assert "Deforestation: 21,157.8 ha" in output


def test_olofsson_2014_sample_size(olofsson_2014_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """Section 5.1: anticipated user's accuracies 0.7, 0.6, 0.9, 0.95 and a target SE of 0.01 give n = 641."""
    path, _codes = olofsson_2014_map
    out = tmp_path / "design.gpkg"
    result = CliRunner().invoke(
        main,
        ["assess", "design", str(path), "-o", str(out), "--target-se", "0.01",
         "--expected-accuracy", "1=0.7,2=0.6,3=0.9,4=0.95", "--min-per-stratum", "75", "--seed", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "641 points" in result.output
    sample = gpd.read_file(out, layer="sample")
    assert len(sample) == 641
    # at least 75 per stratum (the paper's choice for the change classes), the rest proportional to area
    counts = sample.groupby("stratum").size().to_dict()
    assert counts == {1: 75, 2: 75, 3: 163, 4: 328}  # 491 x 0.32 / 0.965 = 162.8, 491 x 0.645 / 0.965 = 328.2
    assert (sample["stratum"] == sample["map_value"]).all()


# Olofsson et al. 2013 -------------------------------------------------------------------------------------------


def test_olofsson_2013_example_1(tmp_path: Path) -> None:
    pixels = {1: 22_353, 2: 1_122_543, 3: 610_228}
    path, codes = class_map(tmp_path / "map.tif", pixels, legend_of(("1", "2", "3")), width=1325)
    matrix = ((97, 0, 3), (3, 279, 18), (2, 1, 97))  # Table 3
    cells = {(i + 1, j + 1): n for i, row in enumerate(matrix) for j, n in enumerate(row) if n}
    sample = write_sample(tmp_path / "sample.gpkg", labelled_sample(codes, cells))
    assessment, _ = analyze(path, sample, "-o", tmp_path / "out")
    area = by_name(assessment, "area_ha")["1"]
    proportion = by_name(assessment, "area_proportion")["1"]
    # eq. 9: 0.0257; eq. 10: 45,112 pixels; eq. 12: SE 10,751.88 pixels; eq. 13: 45,112 +- 21,072 pixels
    assert round(proportion["estimate"], 4) == 0.0257
    assert round(area["estimate"] / 0.09) == 45_112
    # the paper works with rounded intermediate proportions: its SE is 10,751.88 pixels and its interval
    # +- 21,072 pixels, where the unrounded SE is 10,751.40 and 1.96 x that is 21,072.75
    assert area["se"] / 0.09 == pytest.approx(10_751.88, abs=1)
    assert half_width(area) / 0.09 == pytest.approx(21_072, abs=1)
    assert area["ci95"] == pytest.approx([area["estimate"] - half_width(area), area["estimate"] + half_width(area)])
    # eqs. 14-16 and Table 4: user's 0.97 +- 0.03, 0.93 +- 0.03, 0.97 +- 0.03; producer's 0.48 +- 0.22,
    # 0.99 +- 0.01, 0.90 +- 0.04; overall 0.94
    users, producers = by_name(assessment, "users_accuracy"), by_name(assessment, "producers_accuracy")
    assert [(round(users[k]["estimate"], 2), round(half_width(users[k]), 2)) for k in "123"] == [
        (0.97, 0.03), (0.93, 0.03), (0.97, 0.03),
    ]  # fmt: skip
    assert [(round(producers[k]["estimate"], 2), round(half_width(producers[k]), 2)) for k in "123"] == [
        (0.48, 0.22), (0.99, 0.01), (0.90, 0.04),
    ]  # fmt: skip
    assert round(assessment["overall_accuracy"]["estimate"], 3) == 0.944
    # 0.97 + 0.034 exceeds 1: the interval is clipped to what an accuracy can be
    assert users["1"]["ci95"][1] == 1.0


def test_olofsson_2013_example_2_from_a_csv_sample(tmp_path: Path) -> None:
    """Table 6 (strata of 0.7 %, 29.5 % and 69.8 % of the map), with the sample given as a CSV of lon/lat."""
    pixels = {1: 7_000, 2: 295_000, 3: 698_000}
    path, codes = class_map(tmp_path / "map.tif", pixels, legend_of(("1", "2", "3")), width=1000)
    matrix = ((127, 66, 54), (2, 322, 17), (0, 15, 540))
    cells = {(i + 1, j + 1): n for i, row in enumerate(matrix) for j, n in enumerate(row) if n}
    sample = write_sample(tmp_path / "sample.csv", labelled_sample(codes, cells))
    assessment, _ = analyze(path, sample, "-o", tmp_path / "out")
    oa = assessment["overall_accuracy"]
    assert (round(oa["estimate"], 2), round(half_width(oa), 2)) == (0.96, 0.01)
    users, producers = by_name(assessment, "users_accuracy"), by_name(assessment, "producers_accuracy")
    assert [(round(users[k]["estimate"], 2), round(half_width(users[k]), 2)) for k in "123"] == [
        (0.51, 0.06), (0.94, 0.02), (0.97, 0.01),
    ]  # fmt: skip
    assert [(round(producers[k]["estimate"], 2), round(half_width(producers[k]), 2)) for k in "123"] == [
        (0.68, 0.30), (0.93, 0.03), (0.98, 0.01),
    ]  # fmt: skip


# Stehman 2014 ---------------------------------------------------------------------------------------------------

# Table 2: 10 points in each of 4 strata (40,000, 30,000, 20,000 and 10,000 pixels); (map class, reference class)
STEHMAN_POINTS = {
    1: "AA AA AA AA AA AC AB BA BB BC",
    2: "AA BB BB BB BB BB BA BA BB BB",
    3: "BC BC CC CC CC CD CD CB BB BA",
    4: "DD DD DD DD DD DD DD DC DC DB",
}


def stehman_inputs(folder: Path) -> tuple[Path, Path, list[tuple[int, int, int]], list[int]]:
    """Strata raster, a map that agrees with it except at the sample points, the points and their strata."""
    letters = {"A": 1, "B": 2, "C": 3, "D": 4}
    legend = legend_of(("A", "B", "C", "D"))
    strata_path, strata = class_map(folder / "strata.tif", {1: 40_000, 2: 30_000, 3: 20_000, 4: 10_000}, legend, 500)
    rng = np.random.default_rng(7)
    codes = strata.copy()
    points, of_points = [], []
    for stratum, pairs in STEHMAN_POINTS.items():
        for (row, col), pair in zip(pixels_of(strata, stratum, 10, rng), pairs.split(), strict=True):
            codes[row, col] = letters[pair[0]]
            points.append((row, col, letters[pair[1]]))
            of_points.append(stratum)
    map_path = write_codes(folder / "map.tif", codes, legend)
    return map_path, strata_path, points, of_points


def check_stehman(assessment: dict) -> None:
    # Stehman 2014, section 4: p_A = 0.35 (SE 0.082), p_C = 0.20 (SE 0.064), overall accuracy 0.63 (SE 0.085),
    # user's accuracy of B 0.574 (SE 0.125), producer's accuracy of B 0.794 (SE 0.117), p_BC = 0.08
    proportion = by_name(assessment, "area_proportion")
    assert (round(proportion["A"]["estimate"], 3), round(proportion["A"]["se"], 3)) == (0.35, 0.082)
    assert (round(proportion["C"]["estimate"], 3), round(proportion["C"]["se"], 3)) == (0.2, 0.064)
    oa = assessment["overall_accuracy"]
    assert (round(oa["estimate"], 3), round(oa["se"], 3)) == (0.63, 0.085)
    users, producers = by_name(assessment, "users_accuracy"), by_name(assessment, "producers_accuracy")
    assert (round(users["B"]["estimate"], 3), round(users["B"]["se"], 3)) == (0.574, 0.125)
    assert (round(producers["B"]["estimate"], 3), round(producers["B"]["se"], 3)) == (0.794, 0.117)
    matrix = assessment["error_matrix"]
    rows = [r["name"] for r in matrix["rows"]]
    columns = [c["name"] for c in matrix["columns"]]
    assert round(matrix["proportions"][rows.index("B")][columns.index("C")], 3) == 0.08
    assert "Stehman" in assessment["estimator"]


def test_stehman_2014_strata_raster(tmp_path: Path) -> None:
    map_path, strata_path, points, _ = stehman_inputs(tmp_path)
    sample = write_sample(tmp_path / "sample.gpkg", points)
    assessment, _ = analyze(map_path, sample, "--strata", strata_path, "-o", tmp_path / "out")
    check_stehman(assessment)
    assert [s["n"] for s in assessment["strata"]] == [10, 10, 10, 10]
    assert "strata raster" in assessment["strata_source"]


def test_stehman_2014_strata_in_the_sample(tmp_path: Path) -> None:
    """A sample that carries its design (stratum and stratum area per point, as assess design writes them) needs
    no strata raster: it stays valid on a map other than the one it was drawn on."""
    map_path, _strata_path, points, of_points = stehman_inputs(tmp_path)
    area = {1: 40_000 * 0.09, 2: 30_000 * 0.09, 3: 20_000 * 0.09, 4: 10_000 * 0.09}
    extra = {"stratum": of_points, "stratum_area_ha": [area[s] for s in of_points]}
    sample = write_sample(tmp_path / "sample.gpkg", points, extra=extra)
    assessment, _ = analyze(map_path, sample, "-o", tmp_path / "out")
    check_stehman(assessment)
    assert "design" in assessment["strata_source"]
