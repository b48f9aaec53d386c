"""Open-set benchmark (benchmarks/open_set.py): its core functions on the real WorldCereal samples (one
leave-one-region-out fold, one seed), its helpers, and the hand-labelled Belgium evaluation set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import open_set as bench
from suelo.samples import Samples
from tests.fixtures import REPO_ROOT

GEOJSON = REPO_ROOT / "data" / "sample" / "belgium_village.geojson"
# The Belgium sample's grid (data/sample/README.md): EPSG:32631, 100 x 100 px of 10 m, left 664000, top 5612120.
LEFT, TOP, SIZE = 664000.0, 5612120.0, 100


@pytest.fixture(scope="module")
def worldcereal() -> bench.BenchData:
    return bench.load_data(external=False, log=lambda _m: None)


def test_data_holds_the_three_regions_and_the_five_classes(worldcereal: bench.BenchData) -> None:
    assert set(worldcereal.regions) == set(bench.REGIONS)
    assert set(np.unique(worldcereal.samples.labels)) == set(bench.IN_LEGEND)
    assert worldcereal.embeddings.shape == (len(worldcereal.samples), 128)
    assert np.isfinite(worldcereal.embeddings).all()
    assert worldcereal.loco_classes() == list(bench.IN_LEGEND)  # every class has >= 15 samples


def test_held_out_region_is_recognised_as_novel(worldcereal: bench.BenchData) -> None:
    """One LORO fold, one seed: the South Sudan / Uganda samples against a model trained on the two French regions."""
    held = worldcereal.regions == "SSD-UGA-2017"
    op = bench.fit(worldcereal.without(~held), seed=0)
    out = bench.fold(op, worldcereal.embeddings[held])
    assert out["n"] == int(held.sum()) > 400
    assert out["auroc"] > 0.9
    shares = ("mapped_before", "mapped_after", "rejected_by_gate", "test_coverage_before", "test_coverage_after")
    for key in shares:
        assert 0.0 <= out[key] <= 1.0, key
    assert out["mapped_after"] + out["rejected_by_gate"] <= 1.0 + 1e-9  # mapped points are inside the gate
    assert out["rejected_by_gate"] > 0.9  # the gate rejects (nearly) the whole unseen region
    assert out["mapped_after"] < 0.1
    assert 0.0 < out["test_rejected_by_gate"] < 0.3  # calibrated for 5% on the calibration split
    assert math.isclose(out["coverage_cost_pts"], 100 * (out["test_coverage_before"] - out["test_coverage_after"]))
    assert 0.5 <= out["target_after"] <= bench.TARGET_ACCURACY
    assert out["n_test"] > 50 and out["n_calibration"] > 50


def test_auroc_and_summaries() -> None:
    rng = np.random.default_rng(0)
    known = rng.normal(0, 1, 500)
    assert bench.auroc(known[:100] + 100, known) == 1.0
    assert abs(bench.auroc(rng.normal(0, 1, 500), known) - 0.5) < 0.1
    assert math.isnan(bench.auroc(known[: bench.MIN_AUROC_POINTS - 1] + 100, known))  # too few to say
    assert bench.auroc(np.r_[np.full(30, np.nan)], known) == 1.0  # non-finite = outside the gate = most novel
    s = bench.summarize([0.2, 0.4, float("nan"), None])  # type: ignore[list-item]
    assert s["n_seeds"] == 2 and math.isclose(s["mean"], 0.3) and math.isclose(s["sd"], np.std([0.2, 0.4], ddof=1))
    agg = bench.aggregate([{"loro": {"a": {"auroc": 0.9}}}, {"loro": {"a": {"auroc": 1.0}}}], "loro")
    assert math.isclose(agg["a"]["auroc"]["mean"], 0.95)


def test_pad_months_places_a_short_series_at_its_calendar_months() -> None:
    refl = np.arange(2 * 3 * 9, dtype=np.float32).reshape(2, 3, 9)
    s = Samples(refl, bench.WORLDCEREAL_BANDS, [6, 6], [[46.0, 14.5]] * 2, [1, 8], ["a", "b"])
    padded = bench.pad_months(s, 3)
    assert padded.reflectance.shape == (2, 12, 9)
    assert (padded.start_month == 3).all()  # July (6) three months later: the window starts in April
    np.testing.assert_array_equal(padded.reflectance[:, 3:6], refl)
    assert np.isnan(padded.reflectance[:, :3]).all() and np.isnan(padded.reflectance[:, 6:]).all()


def test_belgium_village_labels_are_built_up_on_the_sample_grid() -> None:
    import geopandas as gpd
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    data = json.loads(GEOJSON.read_text(encoding="utf-8"))
    assert data["crs"]["properties"]["name"].endswith("32631")
    polygons = gpd.read_file(GEOJSON)
    assert polygons.crs.to_epsg() == 32631
    assert set(polygons["class"]) == {"built_up"}
    assert set(polygons["what"]) == {"road", "houses", "farmyard"}
    assert polygons.geometry.is_valid.all()
    minx, miny, maxx, maxy = polygons.total_bounds
    assert minx >= LEFT and maxx <= LEFT + 10 * SIZE and miny >= TOP - 10 * SIZE and maxy <= TOP
    transform = Affine(10.0, 0.0, LEFT, 0.0, -10.0, TOP)
    counts = [rasterize([(g, 1)], out_shape=(SIZE, SIZE), transform=transform) for g in polygons.geometry]
    union = rasterize(((g, 1) for g in polygons.geometry), out_shape=(SIZE, SIZE), transform=transform)
    assert sum(int(c.sum()) for c in counts) == int(union.sum()) > 250  # no pixel in two features
    from suelo.legend import load_legend

    assert load_legend().code_for("built_up") == bench.BUILT_UP  # the class column matches the legend


@pytest.mark.slow
def test_one_seed_end_to_end(tmp_path: Path) -> None:
    """Every experiment and external set with one seed (about a minute on 2 cores), and the reports."""
    results = bench.run(seeds=1, log=lambda _m: None)
    assert set(results["loco"]) == {str(c) for c in bench.IN_LEGEND}
    assert set(results["loro"]) == set(bench.REGIONS)
    assert results["loro"]["SSD-UGA-2017"]["auroc"]["mean"] > 0.9
    assert results["external"]["Belgium village built-up"]["n"]["mean"] > 250
    assert results["external"]["Slovenia artificial surface (L1C, 3 months)"]["n"]["mean"] == 198
    assert results["throughput"]["gate_px_per_s"] > results["throughput"]["encoder_px_per_s"]
    text, markdown = bench.report_text(results), bench.report_markdown(results)
    assert "Leave-one-region-out" in text and "| held out |" in markdown
    json.dumps(bench._clean(results), default=bench._json_default, allow_nan=False)
