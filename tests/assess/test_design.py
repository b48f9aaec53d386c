"""``suelo assess design``: strata, sizes, the draw, and the files an interpreter labels."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from pyproj import Transformer

from suelo.assess.design import draw_pixels
from suelo.assess.estimate import allocate, sample_size
from suelo.assess.maps import read_class_map
from suelo.cli import main
from tests.fixtures.assessment import analyze, legend_of, write_codes
from tests.fixtures.runs import one_line_error

LEGEND = legend_of(("Crops", "Grass", "Trees"))


@pytest.fixture
def small_map(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """60 x 50 px at 10 m: crops left, grass right, a block of trees, and low-confidence and outside-training
    pixels (reason codes 254 and 252), a no-data strip at the top."""
    codes = np.full((60, 50), 1, dtype=np.uint8)
    codes[:, 25:] = 2
    codes[40:50, 10:20] = 3
    codes[10:20, 30:45] = 254
    codes[50:, 40:] = 252
    codes[:2, :] = 0
    return write_codes(tmp_path / "map.tif", codes, LEGEND, resolution=10.0, crs="EPSG:32631"), codes


def design(*args: object) -> str:
    result = CliRunner().invoke(main, ["assess", "design", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_strata_are_classes_and_reasons_and_points_sit_on_them(
    small_map: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, codes = small_map
    out = tmp_path / "sample.gpkg"
    printed = design(path, "-o", out, "--n", 60, "--min-per-stratum", 8, "--seed", 4)
    sample = gpd.read_file(out, layer="sample")
    assert "60 points" in printed
    assert sample.crs.to_epsg() == 32631
    # one stratum per class and per reason code present; nodata is no stratum
    assert sorted(sample["stratum"].unique()) == [1, 2, 3, 252, 254]
    sizes = sample.groupby("stratum").size().to_dict()
    assert all(n >= 8 for n in sizes.values()) and sum(sizes.values()) == 60
    # every point is the centre of a pixel of its stratum, and row/col/x/y/lon/lat agree
    assert (codes[sample["row"], sample["col"]] == sample["stratum"]).all()
    assert (sample["stratum"] == sample["map_value"]).all()
    assert np.allclose(sample.geometry.x, 4_000_000 + 10 * (sample["col"] + 0.5))
    assert np.allclose(sample.geometry.y, 3_000_000 - 10 * (sample["row"] + 0.5))
    lon, lat = Transformer.from_crs(32631, 4326, always_xy=True).transform(sample["x"], sample["y"])
    assert np.allclose(sample["lon"], lon, atol=1e-7) and np.allclose(sample["lat"], lat, atol=1e-7)
    # the design travels with each point: N_h, n_h, inclusion probability and weight
    pixels = {code: int((codes == code).sum()) for code in sizes}
    for code, rows in sample.groupby("stratum"):
        assert (rows["stratum_pixels"] == pixels[code]).all()
        assert (rows["stratum_sample_size"] == len(rows)).all()
        assert np.allclose(rows["inclusion_probability"], len(rows) / pixels[code])
        assert rows["weight_ha"].sum() == pytest.approx(pixels[code] * 0.01)
    assert sorted(sample["point_id"]) == list(range(1, 61))
    assert sample["reference"].isna().all()
    assert sample["stratum_name"][sample["stratum"] == 254].iloc[0] == "Unclassified (low confidence)"


def test_files_beside_the_sample(small_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = small_map
    out = tmp_path / "sample.gpkg"
    design(path, "-o", out, "--n", 40, "--min-per-stratum", 5)
    gpkg = gpd.read_file(out, layer="sample")
    table = pd.read_csv(tmp_path / "sample.csv")
    assert len(table) == len(gpkg) == 40
    assert table["point_id"].tolist() == gpkg["point_id"].tolist()
    assert table["reference"].isna().all()
    assert (tmp_path / "sample.qml").read_text().count("<category ") == 5
    with sqlite3.connect(out) as db:  # the style inside the GeoPackage, QGIS's default for the layer
        (count,) = db.execute(
            "SELECT count(*) FROM layer_styles WHERE f_table_name='sample' AND useAsDefault"
        ).fetchone()
    assert count == 1


def test_same_seed_same_sample_other_seed_other_sample(small_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = small_map
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        design(path, "-o", tmp_path / f"{name}.gpkg", "--n", 30, "--seed", seed, "--min-per-stratum", 3)
    a, b, c = (pd.read_csv(tmp_path / f"{n}.csv") for n in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert not a[["row", "col"]].equals(c[["row", "col"]])


def test_the_draw_is_uniform_within_each_stratum(small_map: tuple[Path, np.ndarray]) -> None:
    """Over 400 draws of 10 pixels from each stratum every pixel is drawn about 400 x 10 / N_h times, wherever it
    lies (the ranks are drawn, then found window by window: no pixel order may favour any)."""
    path, codes = small_map
    values = read_class_map(path)
    strata = [1, 3]
    hits = np.zeros(codes.size)
    for seed in range(400):
        drawn = draw_pixels(values, strata, np.array([10, 10]), seed)
        for s in strata:
            assert len(np.unique(drawn[s])) == 10
            assert (codes.ravel()[drawn[s]] == s).all()
            hits[drawn[s]] += 1
    for s in strata:
        where = codes.ravel() == s
        expected = 400 * 10 / where.sum()
        # top half against bottom half of the stratum, in pixel order: equal shares within 10 %
        order = hits[where]
        half = len(order) // 2
        assert order[:half].mean() == pytest.approx(expected, rel=0.1)
        assert order[half:].mean() == pytest.approx(expected, rel=0.1)


def test_sample_size_and_allocation_rules() -> None:
    # Olofsson et al. 2014 section 5.1: 641 points
    assert sample_size([0.02, 0.015, 0.32, 0.645], [0.7, 0.6, 0.9, 0.95], 0.01) == 641
    # proportional with a floor, never more than a stratum's pixels, total kept
    assert allocate(100, [4, 543, 1192, 6693, 1568], "proportional", 12).tolist() == [4, 12, 12, 58, 14]
    assert allocate(100, [4, 543, 1192, 6693, 1568], "equal", 0).tolist() == [4, 24, 24, 24, 24]
    # Neyman: n_h ~ N_h S_h; a perfectly mapped stratum gets only the floor
    assert allocate(90, [1000, 1000, 1000], "optimal", 5, [1.0, 0.5, 0.9]).tolist() == [5, 53, 32]
    # asking for fewer points than the floors needs: the floors win; more than the map has: all of it
    assert allocate(10, [100, 100, 100], "proportional", 5).tolist() == [5, 5, 5]
    assert allocate(1000, [3, 4], "proportional", 0).tolist() == [3, 4]


def test_target_se_default_accuracies(small_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """Without --n: Cochran for SE 0.01 with U = 0.8 for classes and 0.5 for reason strata, capped by the map."""
    path, _codes = small_map
    printed = design(path, "-o", tmp_path / "s.gpkg", "--target-se", "0.05", "--min-per-stratum", 0)
    values = read_class_map(path)
    weights = np.array([values.areas_ha[c] for c in sorted(values.pixels)])
    accuracies = [0.8 if c < 252 else 0.5 for c in sorted(values.pixels)]
    n = sample_size(weights / weights.sum(), accuracies, 0.05, float(sum(values.pixels.values())))
    assert f"{n} points" in printed
    assert len(gpd.read_file(tmp_path / "s.gpkg", layer="sample")) == n


def test_labelled_by_a_perfect_interpreter_the_map_is_exact(small_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """Design -> label every point with the truth -> analyze: a map that is right everywhere it maps has overall
    accuracy 1 with SE 0, and the low-confidence and outside-training strata's truth is counted into the areas."""
    path, codes = small_map
    out = tmp_path / "s.gpkg"
    design(path, "-o", out, "--n", 60, "--min-per-stratum", 8)
    sample = gpd.read_file(out, layer="sample")
    truth = codes.astype(int)
    truth[truth == 254] = 3  # the unmapped pixels are in truth trees
    truth[truth == 252] = 2  # and grass
    sample["reference"] = truth[sample["row"], sample["col"]]
    sample.to_file(out, layer="sample", driver="GPKG")
    assessment, _ = analyze(path, out, "-o", tmp_path / "a")
    assert assessment["overall_accuracy"] == {"estimate": 1.0, "se": 0.0, "ci95": [1.0, 1.0]}
    areas = {c["name"]: c["area_ha"]["estimate"] for c in assessment["classes"]}
    mapped = {code: (codes == code).sum() * 0.01 for code in (1, 2, 3, 252, 254)}
    assert areas["Crops"] == pytest.approx(mapped[1])
    assert areas["Grass"] == pytest.approx(mapped[2] + mapped[252])
    assert areas["Trees"] == pytest.approx(mapped[3] + mapped[254])
    producers = {c["name"]: c["producers_accuracy"]["estimate"] for c in assessment["classes"]}
    assert producers["Trees"] == pytest.approx(mapped[3] / (mapped[3] + mapped[254]))
    assert assessment["mapped_share"]["estimate"] == pytest.approx(1 - (mapped[252] + mapped[254]) / 29.0)
    assert assessment["total_area_ha"] == pytest.approx(29.0)  # 60 x 50 px less the 2 no-data rows, 0.01 ha each


def test_geographic_maps_get_ellipsoidal_areas(tmp_path: Path) -> None:
    """A degree cell at 60 deg N has cos 60 = half the area of one at the equator on a sphere; on the WGS84
    ellipsoid 1 / (1 - e^2 sin^2 60)^2 = 1.0101 times that."""
    codes = np.ones((1, 10), dtype=np.uint8)
    from affine import Affine
    from rasterio.crs import CRS

    from suelo.grid import Grid
    from suelo.write import write_class_map

    areas = []
    for top in (0.005, 60.005):
        grid = Grid(CRS.from_epsg(4326), Affine(0.01, 0, 10, 0, -0.01, top), 1, 10)
        path = tmp_path / f"lat{int(top)}.tif"
        write_class_map(path, codes, grid, LEGEND)
        values = read_class_map(path)
        areas.append(values.areas_ha[1])
        assert values.pixel_area_m2 is None and "geodesic" in values.area_basis
    # 0.01 deg x 0.01 deg at the equator: 1,113.2 m x 1,105.7 m = 123.1 ha; ten of them
    assert areas[0] == pytest.approx(1231, rel=2e-3)
    assert areas[1] / areas[0] == pytest.approx(0.5 * 1.0101, rel=2e-4)


def test_design_refusals(small_map: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, _ = small_map
    line = one_line_error("assess", "design", path, "-o", tmp_path / "s.gpkg", "--n", 10, "--target-se", 0.02)
    assert "either --n or --target-se" in line
    line = one_line_error("assess", "design", path, "-o", tmp_path / "s.shp", "--n", 10)
    assert "GeoPackage" in line and "s.shp" in line
    line = one_line_error("assess", "design", path, "-o", tmp_path / "s.gpkg", "--expected-accuracy", "1=high")
    assert "--expected-accuracy" in line
    plain = tmp_path / "plain.tif"
    import rasterio

    with rasterio.open(plain, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8", crs="EPSG:32631",
                       transform=(10, 0, 0, 0, -10, 40)) as dst:  # fmt: skip
        dst.write(np.ones((1, 4, 4), dtype=np.uint8))
    line = one_line_error("assess", "design", plain, "-o", tmp_path / "s.gpkg")
    assert "plain.tif" in line and "not a suelo class map" in line
    assert not (tmp_path / "s.gpkg").exists()
