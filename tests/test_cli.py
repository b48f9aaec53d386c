"""End-to-end: the ``suelo`` command on the shipped real sample (the same job ``make demo`` runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from suelo.cli import main
from suelo.composite import cube_grid, open_cube
from tests.fixtures import DEMO_JOB, REPO_ROOT, SAMPLE, demo_spec


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(main, ["ingest", str(DEMO_JOB), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "Mpx/s" in result.output
    return out


def test_demo_cube_matches_the_sample_files(demo_run: Path) -> None:
    cube = open_cube(demo_run / "cube" / "cube.nc").compute()
    assert cube.reflectance.shape == (12, 9, 100, 100)
    months = [str(t)[:7] for t in cube.time.values]
    assert months[0] == "2020-11" and months[-1] == "2021-10"
    valid_months = cube.valid.any(dim=("y", "x")).values
    assert not valid_months[1] and not valid_months[2]  # 2020-12 and 2021-01 have no imagery in the sample
    assert valid_months[[0, *range(3, 12)]].all()
    with rasterio.open(SAMPLE / "2021-06" / "B04.tif") as src:
        dn = src.read(1)
        assert cube_grid(cube).transform == src.transform and cube_grid(cube).crs == src.crs
    expected = np.where(dn == 65535, np.nan, dn / 10000.0)
    june = cube.reflectance.sel(band="B04").values[months.index("2021-06")]
    np.testing.assert_allclose(june, expected, atol=0.5e-4, equal_nan=True)
    np.testing.assert_array_equal(cube.n_clear.values, cube.valid.values.sum(axis=0))


def test_run_json_records_config_versions_and_radiometry(demo_run: Path) -> None:
    run = json.loads((demo_run / "run.json").read_text())
    assert run["job"]["ingest"]["bands"][0] == "B02"
    assert run["versions"]["suelo"] and run["versions"]["gdal"]
    assert len(run["inputs"]) == 10
    radiometry = run["inputs"][0]["radiometry"]
    assert radiometry["quantification"] == 10000 and radiometry["offsets"]["B04"] == 0
    assert run["grid"]["crs"] == "EPSG:32631"


def test_rerun_is_skipped_and_a_different_job_needs_overwrite(demo_run: Path, tmp_path: Path) -> None:
    before = (demo_run / "cube" / "cube.nc").stat().st_mtime_ns
    again = CliRunner().invoke(main, ["ingest", str(DEMO_JOB), "-o", str(demo_run)])
    assert again.exit_code == 0 and "up to date" in again.output
    assert (demo_run / "cube" / "cube.nc").stat().st_mtime_ns == before

    other = tmp_path / "other.yaml"
    other.write_text(DEMO_JOB.read_text().replace("B11, B12]", "B11]").replace("../data", str(REPO_ROOT / "data")))
    refused = CliRunner().invoke(main, ["ingest", str(other), "-o", str(demo_run)])
    assert refused.exit_code == 2
    assert "--overwrite" in refused.output


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    items = tmp_path / "items.json"
    items.write_text('{"type": "FeatureCollection", "features": [')
    job = tmp_path / "job.yaml"
    job.write_text(f"inputs: [{{kind: stac, paths: [{items}]}}]\nperiod: {{start: 2021-01-01, end: 2021-02-01}}\n")
    result = CliRunner().invoke(main, ["ingest", str(job)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(items) in lines[0]
    assert not (tmp_path / "out").exists()


def test_aoi_outside_the_data_is_a_clear_error(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        DEMO_JOB.read_text().replace("../data", str(REPO_ROOT / "data"))
        + "aoi: {bbox: [-58.5, -34.7, -58.4, -34.6]}\n"  # Buenos Aires, far from Belgium
    )
    result = CliRunner().invoke(main, ["ingest", str(job), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "does not intersect" in result.output
    assert not (tmp_path / "out").exists()


def test_validate_reports_grid_and_scenes() -> None:
    result = CliRunner().invoke(main, ["validate", str(DEMO_JOB)])
    assert result.exit_code == 0, result.output
    assert "scenes on the grid in the period: 10" in result.output and "100 x 100 px" in result.output
    assert "landcover: landcover_radar.pt, certified accuracy 0.8 at " in result.output  # it has S1 and a DEM
    assert "novelty gate rejects 5% of data like its training data" in result.output


def test_validate_refuses_an_uncertifiable_target(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(_demo_job(tmp_path, target_accuracy=0.995))])
    assert result.exit_code == 2 and "is not certifiable on its" in result.output


@pytest.fixture(scope="module")
def demo_maps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_run")
    result = CliRunner().invoke(main, ["run", str(DEMO_JOB), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_a_masked_land_cover_map_set(demo_maps: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    folder = demo_maps / "landcover"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        f"demo-belgium{suffix}"
        for suffix in (".tif", ".tif.aux.xml", ".qml", ".json", "_confidence.tif", "_confidence.qml",
                       "_nclear.tif", "_nclear.qml")
    )  # fmt: skip
    for tif in folder.glob("*.tif"):
        assert cog_validate(str(tif), quiet=True)[0], tif
    run = json.loads((demo_maps / "run.json").read_text())
    threshold = run["products"]["landcover"]["thresholds"]["policy"]["threshold"]
    assert run["products"]["landcover"]["thresholds"]["global"]["target_accuracy"] == 0.80
    with rasterio.open(folder / "demo-belgium.tif") as src:
        codes = src.read(1)
        assert src.nodata == 0 and src.colormap(1)[254][:3] == (0x7B, 0x6F, 0x8D)
        assert src.colormap(1)[252][:3] == (
            0xC7,
            0x15,
            0x85,
        )  # outside the training data: deep magenta, no class colour
    with rasterio.open(folder / "demo-belgium_confidence.tif") as src:
        confidence = src.read(1).astype(int)
    assert set(np.unique(codes)) <= {1, 2, 3, 4, 5, 252, 254}
    mapped, low, outside = codes < 252, codes == 254, codes == 252
    assert mapped.any() and low.any() and outside.any()
    # confidence is the rounded calibrated top-1 posterior in percent: mapped pixels sit at or above the threshold
    assert confidence[mapped].min() >= np.floor(threshold * 100)
    assert confidence[low].max() <= np.ceil(threshold * 100)
    masking = run["products"]["landcover"]["masking"]
    assert masking["low_confidence_pct"] == pytest.approx(100 * low.mean(), abs=1e-3)
    assert masking["outside_training_pct"] == pytest.approx(100 * outside.mean(), abs=1e-3)
    assert masking["outside_training_pct_by_block"] == {"r000000_c000000": masking["outside_training_pct_of_imaged"]}
    # the shipped model never saw Belgium: the gate rejects most of it, and the run says its accuracy does not hold
    assert masking["outside_training_pct_of_imaged"] > 20
    assert any(w.startswith("landcover: the model's novelty gate found") for w in run["warnings"])
    html = (demo_maps / "report" / "report.html").read_text()
    assert 'class="warning"' in html and "does not transfer here" in html
    # the report's model accuracy leads with the seed-averaged model card, not one split
    card = json.loads((demo_maps / "report" / "report.json").read_text())["model_metrics"]["landcover"]["model"]
    assert card["model_card"]["seeds"] == "10 spatial splits, scored on their test points"
    assert " ± " in card["model_card"]["macro_f1"] and " ± " in card["model_card"]["random_forest_macro_f1"]
    # the village, its road and the farmyard (hand-labelled built-up land) get no class, least of all a crop
    import geopandas as gpd
    from rasterio import features

    village = gpd.read_file(REPO_ROOT / "data" / "sample" / "belgium_village.geojson")
    with rasterio.open(folder / "demo-belgium.tif") as src:
        inside = features.rasterize(((g, 1) for g in village.geometry), out_shape=codes.shape, transform=src.transform)
    assert inside.sum() > 250 and set(np.unique(codes[inside == 1])) <= {252, 254}
    assert (demo_maps / "report" / "report.html").exists()
    item = json.loads((folder / "demo-belgium.json").read_text())
    assert item["properties"]["proj:code"] == "EPSG:32631" or item["properties"].get("proj:epsg") == 32631


def test_the_demo_report_holds_its_accuracy_and_area_assessment(demo_maps: Path) -> None:
    """The demo's labelled sample (data/sample/belgium_assessment.gpkg: drawn on this map, labelled from the
    shipped village polygons and photo-interpretation) is analysed in the run: every stratum, every point."""
    report = json.loads((demo_maps / "report" / "report.json").read_text())
    assessment = report["assessments"]["landcover"]
    assert assessment["sample"]["points"] == assessment["sample"]["used"] == 100
    assert [(s["code"], s["n"]) for s in assessment["strata"]] == [(1, 12), (2, 4), (4, 12), (252, 58), (254, 14)]
    assert assessment["total_area_ha"] == pytest.approx(100.0)
    assert "Olofsson" in assessment["estimator"] and assessment["certified_accuracy"] == 0.8
    classes = {c["name"]: c for c in assessment["classes"]}
    assert sum(c["area_ha"]["estimate"] for c in classes.values()) == pytest.approx(100.0)
    # built-up land is no class of the model: found by the interpreters, never mapped
    built = classes["Built-up"]
    assert built["mapped_pixels"] == 0 and built["area_ha"]["estimate"] > 0 and built["users_accuracy"] is None
    assert built["producers_accuracy"]["estimate"] == 0.0
    # the map maps 17 % of the area: most of each class's true area is in the unmapped strata
    assert assessment["mapped_share"]["estimate"] == pytest.approx(0.1739)
    crops = classes["Temporary crops"]
    assert crops["area_ha"]["ci95"][0] > crops["mapped_area_ha"]
    oa = assessment["overall_accuracy"]
    assert oa["ci95"][0] <= oa["estimate"] <= oa["ci95"][1]
    html = (demo_maps / "report" / "report.html").read_text()
    assert html.index("<h2>Accuracy</h2>") < html.index('class="assessment"') < html.index("<h2>Outputs</h2>")
    assert (demo_maps / "report" / "assessment_landcover" / "assessment.html").exists()


def test_the_demo_report_draws_the_models_attribution(demo_maps: Path) -> None:
    """The report's attribution heatmaps are the model card's (suelo explain on the model's calibration split)."""
    from suelo.models.artifact import load_artifact

    run = json.loads((demo_maps / "run.json").read_text())
    stored = load_artifact(Path(run["products"]["landcover"]["model"])).meta["model_card"]["attribution"]
    report = json.loads((demo_maps / "report" / "report.json").read_text())
    landcover = report["attribution"]["landcover"]
    assert landcover["heatmaps"] == "attribution/landcover.svg" and landcover["completeness"] == stored["completeness"]
    assert landcover["samples"]["split"] == "calibration" and landcover["samples"]["n"] == 276
    assert [c["n"] for c in landcover["classes"]] == [c["n"] for c in stored["classes"]]
    assert "segmenter" in report["attribution"]["urban_atlas"]["missing"]
    svg = demo_maps / "report" / "attribution" / "landcover.svg"
    assert svg.read_text().startswith("<?xml") and "<svg" in svg.read_text()
    final = json.loads((demo_maps / "final.json").read_text())
    assert "report/attribution/landcover.svg" in final["checksums"]  # a verified output like the report itself
    html = (demo_maps / "report" / "report.html").read_text()
    assert html.index('class="assessment"') < html.index("Why each class: attribution") < html.index("<h2>Cost</h2>")
    assert 'src="attribution/landcover.svg"' in html and "No attribution: suelo explain attributes" in html


def test_run_again_does_nothing(demo_maps: Path) -> None:
    before = (demo_maps / "landcover" / "demo-belgium.tif").stat().st_mtime_ns
    again = CliRunner().invoke(main, ["run", str(DEMO_JOB), "-o", str(demo_maps)])
    assert again.exit_code == 0 and "up to date" in again.output
    assert (demo_maps / "landcover" / "demo-belgium.tif").stat().st_mtime_ns == before


def test_run_writes_the_urban_atlas_map_and_polygons(demo_maps: Path) -> None:
    import geopandas as gpd

    folder = demo_maps / "urban_atlas"
    with rasterio.open(folder / "demo-belgium.tif") as src:
        codes = src.read(1)
        assert src.dtypes[0] == "uint16" and src.nodata == 0
    legend_codes = set(range(11100, 50001))
    reasons = {65533, 65534, 65535}
    values = set(np.unique(codes).tolist())
    assert values and all(v in legend_codes or v in reasons for v in values)
    # the shipped segmenter learnt a synthetic city: its gate finds real Belgium unlike it, so nothing is mapped
    assert values == {65533}
    layer = gpd.read_file(folder / "demo-belgium.gpkg", layer="urban_atlas")
    assert layer.crs.to_epsg() == 3035
    assert set(layer.columns) >= {"code", "class_name", "area_ha", "confidence", "patch_id", "geometry"}
    assert set(layer["code"]) == values - reasons
    assert (demo_maps / "report" / "quicklooks" / "urban_atlas_demo-belgium.png").exists()


def _demo_job(tmp_path: Path, **landcover: object) -> Path:
    """The demo job with absolute inputs, land cover only, and ``landcover`` settings changed."""
    import yaml

    spec = demo_spec()
    spec["output"]["dir"] = str(tmp_path / "out")
    spec["products"]["urban_atlas"]["enabled"] = False
    spec["products"]["landcover"].update(landcover)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_an_uncertifiable_target_stops_before_any_work(tmp_path: Path) -> None:
    from suelo.models.artifact import load_artifact

    n = load_artifact(REPO_ROOT / "models" / "landcover_radar.pt").meta["novelty"]["n_calibration"]
    result = CliRunner().invoke(main, ["run", str(_demo_job(tmp_path, target_accuracy=0.995))])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "landcover_radar.pt" in lines[0] and f"on its {n} calibration points" in lines[0]
    assert "the highest certifiable is 0." in lines[0] and "coverage" in lines[0] and "accept_empty_map" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.nc"))  # no cube, no block


def test_an_empty_map_is_made_only_when_the_job_accepts_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(_demo_job(tmp_path, target_accuracy=0.995, accept_empty_map=True))])
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "out" / "landcover" / "demo-belgium.tif") as src:
        assert set(np.unique(src.read(1))) <= {0, 252, 253, 254}
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert any(w.startswith("landcover: the target cannot be certified") for w in report["warnings"])


# What a reader sees: the report rendered by a real headless browser (skipped where none is installed) -------------

PROBE = """
<script>
addEventListener("load", () => {
const facts = {viewport: [innerWidth, innerHeight], aboveFold: [], images: [], appendixHidden: null};
for (const el of document.querySelectorAll("h1, table.header, section.map img, .warning")) {
  const box = el.getBoundingClientRect();
  if (box.top < innerHeight && box.height > 0) facts.aboveFold.push(el.tagName + "." + (el.className || ""));
}
for (const img of document.querySelectorAll("img")) {
  const box = img.getBoundingClientRect();
  facts.images.push({src: img.getAttribute("src"), natural: [img.naturalWidth, img.naturalHeight],
                     shown: [box.width, box.height]});
}
const raw = [...document.querySelectorAll("details")].map(d => d.querySelector("table, pre"));
facts.appendixHidden = raw.every(el => el === null || !el.checkVisibility());
facts.text = document.body.innerText;
document.body.setAttribute("data-probe", JSON.stringify(facts));
});
</script>
"""


def _browser() -> str | None:
    import shutil

    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed")
def test_the_report_reads_top_down_in_a_browser(demo_maps: Path) -> None:
    """Rendered at 1280 x 900: the header and the first map are above the fold, every quicklook keeps its aspect,
    the raw metrics are folded away, and the visible text says what, where, when and how accurate."""
    import html as html_module
    import re
    import subprocess

    report = demo_maps / "report" / "report.html"
    probe = report.with_name("probe.html")  # beside it, so the quicklooks' relative links resolve
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    probe.unlink()
    found = re.search(r'data-probe="([^"]*)"', done.stdout)
    assert found, done.stderr[-2000:]
    facts = json.loads(html_module.unescape(found.group(1)))
    assert "H1." in facts["aboveFold"] and "TABLE.header" in facts["aboveFold"]
    assert "IMG." in facts["aboveFold"]  # the first map, not a list of metrics
    # the two quicklooks and the land-cover model's attribution heatmaps
    assert [image["src"] for image in facts["images"]][2:] == ["attribution/landcover.svg"]
    assert len(facts["images"]) == 3
    for image in facts["images"]:
        (nw, nh), (sw, sh) = image["natural"], image["shown"]
        assert nw > 0 and sw > 0 and abs(sw / sh - nw / nh) < 0.01, image  # loaded, at its true aspect
    assert facts["appendixHidden"]
    text = facts["text"]
    for visible in ("demo-belgium", "2020-11-01 to 2021-10-31", "landcover_radar.pt", "certified 0.80",
                    "trained on synthetic data", "Area by class and reason", "Temporary crops",
                    "Accuracy and area of demo-belgium.tif", "Why each class: attribution by month and band",
                    "Outputs"):  # fmt: skip
        assert visible in text, visible
    # every link on the page points at a file that exists
    hrefs = re.findall(r'href="([^"]+)"', report.read_text())
    assert hrefs and all((report.parent / html_module.unescape(h)).exists() for h in hrefs)


def test_the_demo_run_is_one_stac_collection(demo_maps: Path) -> None:
    """The run's Collection and its Items validate against the official schemas (offline), every output file is an
    asset of one of them, and odc-stac loads the class maps with their dtype, nodata and CRS."""
    import odc.stac
    import pystac

    from tests.fixtures.stac import schema_errors, stac_registry

    registry = stac_registry()
    collection = pystac.Collection.from_file(str(demo_maps / "collection.json"))
    items = list(collection.get_items())
    assert len(items) == 2  # land cover and urban atlas
    documents = [json.loads((demo_maps / "collection.json").read_text())]
    documents += [json.loads(Path(i.get_self_href()).read_text()) for i in items]
    for document in documents:
        assert schema_errors(document, registry) == [], document["id"]
    assets = {Path(a.get_absolute_href()).resolve() for i in items for a in i.assets.values()}
    assert (demo_maps / "urban_atlas" / "demo-belgium.gpkg").resolve() in assets
    for item in items:
        loaded = odc.stac.load([item], bands=["data"], chunks=None)
        expected = "uint8" if "landcover" in item.get_self_href() else "uint16"
        assert loaded["data"].dtype == expected and loaded["data"].attrs["nodata"] == 0
        assert loaded.odc.crs.epsg == 32631 and loaded["data"].shape == (1, 100, 100)
