"""``suelo explain``: integrated-gradient attributions of the class logits to Presto's tokens (suelo.explain).

Real data throughout: the shipped models on their stored validation samples (WorldCereal), the demo cube (a crop
of it), and a model trained by ``suelo.train`` on WorldCereal series in which two classes differ in one month only.

The completeness tolerance, for every explained logit: ``|sum of attributions - (logit - baseline logit)| <=
1e-3 + 1e-2 x |logit - baseline logit|`` (suelo.explain.COMPLETENESS_ATOL / _RTOL). Measured at the default 32
Gauss-Legendre steps on the shipped model: at most 9.7e-5 logit over the 600 logits of 120 validation samples, mean
4e-6 (benchmarks/EXPLAIN.md); the tests also hold the absolute error under 5e-4, so a quadrature that stopped
converging would show before the stated tolerance is reached.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from benchmarks.explain_methods import SIGNAL_MONTH, train_one_month_model
from suelo import explain
from suelo.cli import main
from suelo.errors import InputError
from suelo.evaluate import samples_legend
from suelo.models.artifact import ModelArtifact, contract_inputs, load_artifact
from suelo.models.presto import CHANNELS
from suelo.samples import Samples, load_samples
from tests.fixtures import REPO_ROOT, demo_job, one_line_error

SHIPPED = REPO_ROOT / "models" / "landcover_default.pt"
RADAR = REPO_ROOT / "models" / "landcover_radar.pt"  # Sentinel-2, Sentinel-1 and terrain: a real terrain token
WORLDCEREAL = sorted((REPO_ROOT / "data" / "worldcereal").glob("*.*parquet"))
MEASURED_ATOL = 5e-4


@pytest.fixture(scope="module")
def shipped() -> ModelArtifact:
    return load_artifact(SHIPPED)


@pytest.fixture(scope="module")
def real(shipped: ModelArtifact) -> Samples:
    return load_samples(WORLDCEREAL, samples_legend(shipped.legend))


def validation_arrays(artifact: ModelArtifact, real: Samples, n: int) -> dict[str, np.ndarray]:
    """The encoder arrays of ``n`` of the model's stored validation samples, every class among them if it can."""
    val, _info = explain.select_samples(artifact, real, "stored")
    by_class = [np.flatnonzero(val.labels == c)[:2] for c in artifact.legend.codes]
    picked = np.unique(np.concatenate([*by_class, np.arange(n)]))[:n]
    return explain.sample_arrays(artifact, val.subset(picked)) | {"labels": val.labels[picked]}


def test_completeness_holds_for_every_class_logit_on_real_samples(shipped: ModelArtifact, real: Samples) -> None:
    a = validation_arrays(shipped, real, 12)
    result = explain.attribute(shipped, a["x"], a["mask"], a["dw"], a["latlons"], a["month"])
    assert result.classes.shape == (12, len(shipped.legend))  # every class's logit of every sample
    error, gap = result.error(), result.gap()
    assert np.all(np.abs(error) <= explain.COMPLETENESS_ATOL + explain.COMPLETENESS_RTOL * np.abs(gap))
    assert np.abs(error).max() < MEASURED_ATOL
    assert np.abs(gap).max() > 0.5  # the baseline really differs from the samples: the check is not vacuous
    # captum's own residual (from its forward passes) says the same as the tokens' sum
    np.testing.assert_allclose(result.convergence_delta, error, atol=2e-5)
    stats = result.completeness()
    assert stats["within_tolerance"] == 1.0 and stats["n_logits"] == 12 * len(shipped.legend)
    # the baseline logits are the model's at the baseline point: a plain forward pass agrees
    np.testing.assert_allclose(result.logits, _logits(shipped, a), atol=1e-5)


def _logits(artifact: ModelArtifact, a: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    model = explain.model_of(artifact)
    x, mask = explain.clean_inputs(a["x"], a["mask"])
    with torch.no_grad():
        out = model(torch.from_numpy(x), torch.from_numpy(a["latlons"]), torch.from_numpy(mask),
                    torch.from_numpy(a["dw"]), torch.from_numpy(a["month"]))  # fmt: skip
    return np.asarray(out.numpy())


def test_masked_inputs_and_later_srtm_months_get_exactly_zero(real: Samples) -> None:
    radar = load_artifact(RADAR)
    a = validation_arrays(radar, real, 6)
    a["mask"][:, 3] = True  # a whole month missing, as a cloudy month is
    a["x"][0, 7, CHANNELS.index("B8")] = np.nan  # a NaN is masked like any missing value
    a["mask"][1, 2:5, CHANNELS.index("B11")] = True  # one band of a group: the whole group's token is missing
    result = explain.attribute(radar, a["x"], a["mask"], a["dw"], a["latlons"], a["month"], target=np.zeros(6, int))
    channels = result.channels[:, 0]
    mask = a["mask"] | np.isnan(a["x"])
    assert np.isfinite(channels).all()
    assert np.all(channels[mask] == 0)  # exactly: the masked value is its own baseline and out of the model
    assert np.all(channels[:, 3] == 0)
    assert np.all(channels[1, 2:5, CHANNELS.index("B12")] == 0)  # B11's group partner: its token is gone too
    srtm = list(explain.STATIC_CHANNELS)
    assert np.all(channels[:, 1:, srtm] == 0)  # the static token reads month 0 only
    tokens, terrain, _latlon = result.tokens()
    assert np.any(terrain != 0)  # the radar model's terrain token exists and carries attribution
    np.testing.assert_allclose(terrain[:, 0], channels[:, 0, srtm].sum(axis=1), rtol=1e-6)
    assert tokens.shape == (6, 1, 12, len(explain.GROUPS)) and "SRTM" not in explain.GROUPS
    assert np.all(tokens[:, 0, 3] == 0)
    assert result.completeness()["max_abs_error"] < MEASURED_ATOL


def test_one_month_signal_gets_most_of_the_mass(real: Samples) -> None:
    """Two classes differ only in month 6 (bare soil or green vegetation, one real series otherwise): the model
    suelo.train fits must be explained by that month, for the class-2 samples."""
    artifact, samples = train_one_month_model(real)
    assert artifact.meta["metrics"]["validation"]["overall_accuracy"] > 0.95  # it learned the signal
    a = explain.sample_arrays(artifact, samples)
    point = explain.baseline_values(a["x"], a["mask"], a["latlons"])  # the whole set's mean, both classes
    green = np.flatnonzero(samples.labels == 2)[:24]
    result = explain.attribute(artifact, a["x"][green], a["mask"][green], a["dw"][green], a["latlons"][green],
                               a["month"][green], target=np.ones(len(green), int), baseline=point)  # fmt: skip
    tokens, terrain, latlon = result.tokens()
    mass = explain.monthly_mass(tokens[:, 0])
    share = mass[:, SIGNAL_MONTH] / (mass.sum(axis=1) + np.abs(terrain[:, 0]) + np.abs(latlon[:, 0]))
    assert share.mean() > 0.5, share
    assert (mass.argmax(axis=1) == SIGNAL_MONTH).mean() >= 0.9
    assert tokens[:, 0, SIGNAL_MONTH].sum(axis=1).mean() > 0  # and it raises the green class's logit
    assert result.completeness()["max_abs_error"] < MEASURED_ATOL


def test_samples_summary_per_class(shipped: ModelArtifact, real: Samples) -> None:
    val, _info = explain.select_samples(shipped, real, "stored")
    subset = val.subset(np.concatenate([np.flatnonzero(val.labels == c)[:3] for c in shipped.legend.codes]))
    summary, _result = explain.explain_samples(shipped, subset, "all", steps=16)
    assert summary["kind"] == "samples" and summary["samples"]["n"] == len(subset)
    assert summary["months"][0] == "Dec" and len(summary["months"]) == 12  # WorldCereal series start in December
    assert summary["groups"] == list(explain.GROUPS)
    assert "S1" not in summary["groups_present"] and "S2_RGB" in summary["groups_present"]  # a Sentinel-2 model
    assert [c["name"] for c in summary["classes"]] == list(shipped.legend.names)
    for entry, code in zip(summary["classes"], shipped.legend.codes, strict=True):
        n = int((subset.labels == code).sum())
        assert entry["n"] == n
        if not n:
            continue
        shares = np.asarray(entry["abs_share_percent"])
        assert shares.shape == (12, len(explain.GROUPS))
        total = shares.sum() + entry["terrain_share_percent"] + entry["latlon_share_percent"]
        assert total == pytest.approx(100, abs=1e-2)
        assert sum(entry["most_influential_month"]) == n
        # the signed means add up to the class's mean logit gap (completeness, averaged)
        signed = np.asarray(entry["mean_attribution"]).sum() + entry["mean_terrain"] + entry["mean_latlon"]
        assert signed == pytest.approx(entry["mean_logit"] - entry["mean_baseline_logit"], abs=1e-4)
    assert summary["completeness"]["max_abs_error"] < MEASURED_ATOL
    json.dumps(summary)  # plain JSON
    svg = explain.heatmap_svg(summary, shipped.legend.names[0])
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert svg == explain.heatmap_svg(summary, shipped.legend.names[0])  # deterministic: embeddable in reports
    assert "<svg" in explain.heatmaps_svg(summary)


def tiny_summary() -> dict:
    """A hand-made explanation of 2 months x the 8 groups, two classes (one without samples), no terrain."""
    share = np.zeros((2, len(explain.GROUPS)))
    share[1, explain.GROUPS.index("S2_SWIR")] = 50.0
    share[0, explain.GROUPS.index("NDVI")] = 30.0
    signed = np.zeros_like(share)
    signed[1, explain.GROUPS.index("S2_SWIR")] = 0.75
    entry = {
        "code": 1, "name": "Crops", "color": "#ff0000", "n": 4, "mean_attribution": signed.tolist(),
        "mean_terrain": 0.0, "mean_latlon": 0.25, "abs_share_percent": share.tolist(), "terrain_share_percent": 0.0,
        "latlon_share_percent": 20.0, "month_share_percent": [30.0, 50.0], "most_influential_month": [1, 3],
        "mean_logit": 2.0, "mean_baseline_logit": 1.0,
    }  # fmt: skip
    empty = {"code": 2, "name": "Trees", "color": "#00ff00", "n": 0}
    return {
        "model": "/somewhere/model.pt", "model_sha256": "ab" * 32, "months": ["Jun", "Jul"],
        "groups": list(explain.GROUPS), "terrain_present": False, "classes": [entry, empty],
        "samples": {"split": "calibration", "n": 4}, "explained": "each sample's reference-class raw logit",
        "baseline": {"description": "the set's mean"},
        "method": {"library": "captum", "integration": "gausslegendre", "steps": 32},
        "completeness": {"max_abs_error": 1e-5, "mean_abs_error": 1e-6, "max_relative_error": 1e-5, "n_logits": 4,
                         "within_tolerance": 1.0},
    }  # fmt: skip


def test_class_highlights_and_the_card_section_exactly() -> None:
    summary = tiny_summary()
    rows = explain.class_highlights(summary)
    assert rows[0] == {
        "code": 1, "class": "Crops", "n": 4, "months": "Jul 50 %, Jun 30 %",
        "strongest": "S2_SWIR in Jul: 50.0 % of the mass, mean +0.750 logit", "terrain_latlon": "- / 20.0 %",
        "logit": "2.00 (baseline 1.00)", "top_month_index": [1, 0],
    }  # fmt: skip
    assert rows[1] == {"code": 2, "class": "Trees", "n": 0, "months": "-", "strongest": "-", "terrain_latlon": "-",
                       "logit": "-"}  # fmt: skip
    stored = explain.card_attribution(summary)
    assert "model" not in stored and "model_sha256" not in stored and stored["classes"] == summary["classes"]
    text = explain.attribution_markdown(stored, "attribution/heatmaps.png")
    assert "![Mean attribution of each class's logit by month and band group](attribution/heatmaps.png)" in text
    assert "| Crops | 4 | Jul 50 %, Jun 30 % | S2_SWIR in Jul: 50.0 % of the mass, mean +0.750 logit |" in text
    assert "on the 4 samples of the model's calibration split" in text
    assert "The lat/lon token carries 20-20 % of the absolute attribution (most for Crops)" in text
    summary["classes"][0]["latlon_share_percent"] = 10.0  # at the threshold: no sentence
    assert explain.location_note(summary) == "" and "lat/lon token carries" not in explain.attribution_markdown(
        summary, "x.png"
    )


@pytest.mark.parametrize("path", [SHIPPED, RADAR], ids=["default", "radar"])
def test_shipped_model_cards_carry_their_attribution(path: Path) -> None:
    """Each shipped land-cover model's card holds suelo explain's summary of its whole calibration split (what the
    run report draws), with its files and section beside MODEL_CARD.md."""
    artifact = load_artifact(path)
    stored = artifact.meta["model_card"]["attribution"]
    split = artifact.meta["split"]
    assert stored["samples"]["split"] == "calibration" and stored["samples"]["n"] == split["n_val"]
    assert stored["samples"]["found"] == stored["samples"]["stored"]  # the whole split, not a subset
    assert sum(c["n"] for c in stored["classes"]) == split["n_val"]
    assert stored["method"]["steps"] == explain.DEFAULT_STEPS and stored["baseline"]["kind"] == "mean"
    assert stored["completeness"]["max_abs_error"] < MEASURED_ATOL and stored["completeness"]["within_tolerance"] == 1
    assert "model_sha256" not in stored  # the card is inside the model file
    assert stored["terrain_present"] is ("terrain" in contract_inputs(artifact.contract))
    folder = path.with_name(f"{path.stem}_report")
    assert json.loads((folder / "model_card.json").read_text())["attribution"] == stored
    assert json.loads((folder / "attribution" / explain.JSON_NAME).read_text()) == stored
    assert (folder / "attribution" / "heatmaps.png").stat().st_size > 10_000
    assert explain.attribution_markdown(stored, "attribution/heatmaps.png") in (folder / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_the_card_attribution_is_what_explain_gives(shipped: ModelArtifact, real: Samples) -> None:
    """Re-explaining the shipped model's calibration split reproduces its card's numbers (about 30 s on 2 cores)."""
    summary, _result = explain.explain_samples(shipped, real, "stored")
    stored = shipped.meta["model_card"]["attribution"]
    for mine, theirs in zip(summary["classes"], stored["classes"], strict=True):
        assert mine["n"] == theirs["n"]
        np.testing.assert_allclose(mine["mean_attribution"], theirs["mean_attribution"], atol=1e-5)
        np.testing.assert_allclose(mine["abs_share_percent"], theirs["abs_share_percent"], atol=1e-2)


def test_stored_split_none_found_is_one_line(shipped: ModelArtifact, real: Samples) -> None:
    strangers = real.subset(np.arange(5))
    strangers.sample_ids = np.array([f"not-a-stored-id-{i}" for i in range(5)], dtype=object)
    with pytest.raises(InputError, match="none of the 276 calibration sample ids"):
        explain.select_samples(shipped, strangers, "stored")


@pytest.fixture(scope="module")
def demo_crop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 x 8 px crop of the demo cube (Sentinel-2 only, the shipped model's inputs); one pixel with no data."""
    from suelo.composite import open_cube, write_cube
    from suelo.jobs import ingest
    from suelo.settings import load_job

    folder = tmp_path_factory.mktemp("explain_demo")
    cube = open_cube(ingest(load_job(demo_job(folder))).cube_path).isel(y=slice(40, 46), x=slice(30, 38)).load()
    cube["valid"][:, 0, 0] = False
    cube["reflectance"][:, :, 0, 0] = np.nan
    path = folder / "crop.nc"
    write_cube(cube, path)
    return path


def test_cli_on_a_cube_writes_the_month_raster_and_summary(demo_crop: Path, tmp_path: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    out = tmp_path / "explained"
    result = CliRunner().invoke(main, ["explain", str(SHIPPED), str(demo_crop), "-o", str(out), "--steps", "16"])
    assert result.exit_code == 0, result.output
    assert re.search(r"completeness: max \|sum of attributions - \(logit - baseline logit\)\| = [0-9.e+-]+ logit",
                     result.output)  # fmt: skip
    raster = out / explain.MONTH_RASTER
    assert f"wrote {raster}" in result.output
    assert cog_validate(str(raster), quiet=True)[0]
    with rasterio.open(raster) as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 0 and src.shape == (6, 8)
        values = src.read(1)
        months = json.loads(src.tags()["MONTHS"])
    assert values[0, 0] == 0  # no data
    assert values[values > 0].size == 47 and values.max() <= 12
    assert months["1"] == "2020-11" and months["12"] == "2021-10"
    palette = ET.parse(raster.with_suffix(".qml")).getroot().findall(".//paletteEntry")
    assert [p.get("label") for p in palette] == [months[str(i)] for i in range(1, 13)]
    assert [p.get("value") for p in palette] == [str(i) for i in range(1, 13)]
    assert (out / (raster.name + ".aux.xml")).is_file()
    summary = json.loads((out / explain.JSON_NAME).read_text())
    assert summary["kind"] == "cube" and summary["cube"]["pixels_explained"] == 47
    assert summary["months"] == [months[str(i)] for i in range(1, 13)]
    assert sum(c["n"] for c in summary["classes"]) == 47
    assert summary["completeness"]["within_tolerance"] == 1.0
    assert summary["completeness"]["max_abs_error"] < MEASURED_ATOL
    for entry in summary["classes"]:
        png = out / f"heatmap_{re.sub(r'[^a-z0-9]+', '_', entry['name'].lower()).strip('_')}.png"
        assert png.is_file() == bool(entry["n"])
    assert (out / "heatmaps.png").stat().st_size > 0 and "<svg" in (out / "heatmaps.svg").read_text()
    # the raster is the summary's most influential month per pixel: the counts agree
    counts = np.bincount(values.ravel(), minlength=13)[1:]
    np.testing.assert_array_equal(counts, np.sum([c["most_influential_month"] for c in summary["classes"] if c["n"]],
                                                 axis=0))  # fmt: skip


def test_cli_max_pixels_summarises_a_sample_without_the_raster(demo_crop: Path, tmp_path: Path) -> None:
    out = tmp_path / "sampled"
    args = ["explain", str(SHIPPED), str(demo_crop), "-o", str(out), "--steps", "8", "--max-pixels", "10"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "no most-influential-month raster" in result.output
    assert not (out / explain.MONTH_RASTER).exists()
    summary = json.loads((out / explain.JSON_NAME).read_text())
    assert summary["cube"]["pixels_explained"] == 10 and summary["cube"]["sampled"] and summary["cube"]["seed"] == 0


def test_cli_on_samples_explains_the_validation_split(tmp_path: Path) -> None:
    out = tmp_path / "samples"
    result = CliRunner().invoke(main, ["explain", str(SHIPPED), *map(str, WORLDCEREAL), "-o", str(out), "--steps", "8"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / explain.JSON_NAME).read_text())
    assert summary["samples"]["split"] == "calibration" and summary["samples"]["n"] == 276
    assert sum(c["n"] for c in summary["classes"]) == 276
    assert result.output.count("wrote ") == 1 + 5 + 2  # the JSON, one heatmap per class, the grid as PNG and SVG


def test_cli_bad_inputs_get_one_line(tmp_path: Path) -> None:
    import xarray as xr

    other = tmp_path / "other.nc"
    xr.Dataset({"foo": (("y",), np.zeros(3))}).to_netcdf(other)
    line = one_line_error("explain", SHIPPED, other, "-o", tmp_path / "o")
    assert "other.nc: is no monthly cube" in line
    line = one_line_error("explain", SHIPPED, WORLDCEREAL[0], "-o", tmp_path / "o", "--max-pixels", "5")
    assert "--max-pixels only applies to a cube" in line
    line = one_line_error("explain", SHIPPED, other, WORLDCEREAL[0], "-o", tmp_path / "o")
    assert "a cube is explained on its own" in line
    assert not (tmp_path / "o").exists()
