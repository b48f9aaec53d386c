"""`suelo evaluate` and `suelo predict --apply-masking`: every dropped sample counted by reason, the model's stored
split selected by id, coverage and accuracy at the model's threshold, and predict's map equal to the run's."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from click.testing import CliRunner
from shapely.geometry import Point, box

from suelo.cli import main
from suelo.errors import InputError
from suelo.evaluate import dropped_counts, evaluate_model, predict_samples, recover_split_ids, write_report
from suelo.legend import load_legend
from suelo.models.artifact import PACK_IDS_ABOVE, load_artifact, save_artifact
from suelo.predict import apply_masking, predict_cube
from suelo.samples import (
    DROPPED_COLUMNS,
    Samples,
    drop_rows,
    ids_digest,
    load_class_mapping,
    load_worldcereal,
    sample_vector,
)
from suelo.threshold import ThresholdPolicy, choose_threshold
from suelo.train import TrainConfig, TrainResult, train_model
from tests.fixtures import BANDS, GRID, REPO_ROOT, demo_spec, tiny_cube

PROJECT = REPO_ROOT
MONTH_FILE = PROJECT / "data" / "worldcereal" / "month_2022_FRA_LPIS_POLY_110.geoparquet"
VEG = np.array([0.03, 0.06, 0.04, 0.10, 0.25, 0.30, 0.35, 0.20, 0.10], np.float32)
WATER = np.array([0.06, 0.05, 0.03, 0.02, 0.015, 0.01, 0.01, 0.005, 0.003], np.float32)
# ewoc_codes of WorldCereal's LANDCOVER10 mapping: trees (5), water (8), built-up (7), "ignore", and none at all
EWOC_TREES, EWOC_WATER, EWOC_BUILT_UP, EWOC_IGNORE, EWOC_UNMAPPED = (
    4000000000, 7000000000, 1500000000, 1000000000, 1234567890,
)  # fmt: skip


def synthetic(n: int, seed: int = 0, prefix: str = "s") -> Samples:
    """Trees vs water over ~1 degree near Liege (many 20 km blocks for the spatial split), some cloudy months."""
    rng = np.random.default_rng(seed)
    labels = np.where(np.arange(n) % 2 == 0, 5, 8)
    base = np.where((labels == 5)[:, None], VEG, WATER)
    refl = base[:, None, :] * rng.uniform(0.9, 1.1, (n, 12, 9)).astype(np.float32)
    refl[rng.random((n, 12)) < 0.2] = np.nan
    latlons = np.stack([rng.uniform(50, 51, n), rng.uniform(5, 6, n)], axis=-1)
    return Samples(refl, BANDS, np.zeros(n), latlons, labels, np.array([f"{prefix}{i}" for i in range(n)]))


def wide_parquet(path: Path, samples: Samples, ewoc: list[int]) -> Path:
    """``samples`` as a WorldCereal wide extraction (OPTICAL-Bxx-tsN columns, DN, 65535 = no data)."""
    data: dict[str, object] = {
        "sample_id": list(samples.sample_ids),
        "ewoc_code": ewoc,
        "lat": samples.latlons[:, 0],
        "lon": samples.latlons[:, 1],
        "start_date": ["2021-01-01"] * len(samples),
    }
    dn = np.where(np.isfinite(samples.reflectance), np.rint(samples.reflectance * 10000), 65535).astype(np.int64)
    for b, band in enumerate(BANDS):
        for t in range(samples.n_months):
            data[f"OPTICAL-{band}-ts{t}-10m"] = dn[:, t, b]
    pd.DataFrame(data).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Samples, TrainResult]:
    samples = synthetic(240)
    # a fifth of the labels swapped: the model is unsure of some samples, so its threshold maps only part of them
    swap = np.random.default_rng(1).random(len(samples)) < 0.2
    samples.labels[swap] = np.where(samples.labels[swap] == 5, 8, 5)
    result = train_model(samples, load_legend(), TrainConfig(max_epochs=30, block_m=20_000))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_artifact(result.artifact, path)
    return path, samples, result


# -- every dropped sample, by reason --------------------------------------------------------------------------


def test_worldcereal_drops_are_counted_and_listed_by_reason(tmp_path: Path) -> None:
    df = pd.read_parquet(MONTH_FILE)
    bands = [c for c in df.columns if c.startswith("S2-L2A-") and c != "S2-L2A-B8A"]
    # 30 real samples whose every step is valid, so the only sample without a valid month is the one made below
    complete = df.groupby("sample_id")[bands].agg(lambda v: bool((v != 65535).all())).all(axis=1)
    ids = sorted(complete[complete].index)[:30]
    part = df[df["sample_id"].isin(ids)].copy()
    part.loc[part["sample_id"] == ids[0], "ewoc_code"] = EWOC_UNMAPPED
    part.loc[part["sample_id"] == ids[1], "ewoc_code"] = EWOC_IGNORE
    part.loc[part["sample_id"] == ids[2], "ewoc_code"] = EWOC_TREES
    part.loc[part["sample_id"] == ids[2], bands] = 65535  # no valid month at all
    path = tmp_path / "subset.geoparquet"
    part.to_parquet(path)
    # the legend lacks permanent crops: those samples are "not in the legend", not silently lost
    legend = load_legend()
    legend = legend.subset([c for c in legend.codes if c != 3])
    mapping = load_class_mapping()
    first = part.drop_duplicates("sample_id").set_index("sample_id")["ewoc_code"]
    classes = first.map(lambda v: mapping.get(str(int(v))))
    expected = {
        "ignored_class": int((classes == "ignore").sum()),
        "unmapped_code": 1,
        "not_in_legend": int((classes == "permanent_crops").sum()),
        "no_valid_month": 1,
    }
    assert expected["ignored_class"] >= 1 and expected["not_in_legend"] >= 1
    samples = load_worldcereal(path, legend)
    assert dropped_counts(samples.dropped) == expected
    assert len(samples) + len(samples.dropped) == 30
    assert set(samples.dropped["sample_id"]).isdisjoint(samples.sample_ids)
    table = samples.dropped.set_index("sample_id")
    assert list(samples.dropped.columns) == list(DROPPED_COLUMNS)
    assert table.loc[ids[0], "reason"] == "unmapped_code" and table.loc[ids[0], "label"] == str(EWOC_UNMAPPED)
    assert table.loc[ids[2], "reason"] == "no_valid_month" and (table["source"] == str(path)).all()
    assert set(table.loc[table["reason"] == "not_in_legend", "detail"]) == {"permanent_crops"}
    # the record survives subset, select_bands and concat
    kept = samples.subset([0, 1]).select_bands(BANDS[:3])
    assert kept.dropped.equals(samples.dropped)
    both = Samples.concat([samples, samples.subset([0])])
    assert dropped_counts(both.dropped) == {k: 2 * v for k, v in expected.items()}


def test_vector_labels_off_the_cube_or_without_pixel_are_listed(tmp_path: Path) -> None:
    values = tiny_cube().reflectance.values.copy()
    values[:, :, 1, 1] = np.nan  # no valid month at pixel (1, 1)
    cube = tiny_cube(values)
    left, top = GRID.transform.c, GRID.transform.f

    def centre(row: int, col: int) -> Point:
        return Point(left + 10 * col + 5, top - 10 * row - 5)

    features = gpd.GeoDataFrame(
        {"name": ["in", "empty", "far", "tiny", "none"], "cls": ["Trees", "Trees", "Water", "Water", "Trees"]},
        geometry=[
            centre(0, 0),
            centre(1, 1),
            Point(left - 5000, top + 5000),  # 5 km off the cube
            box(left + 11, top - 19, left + 14, top - 16),  # between pixel centres
            None,
        ],
        crs=GRID.crs,
    )
    path = tmp_path / "labels.geojson"
    features.to_file(path)
    samples = sample_vector(cube, path, "cls", id_column="name")
    assert list(samples.sample_ids) == ["in@0,0"]
    assert dropped_counts(samples.dropped) == {"no_valid_month": 1, "outside_cube": 1, "no_pixel": 1, "no_geometry": 1}
    reasons = dict(zip(samples.dropped["sample_id"], samples.dropped["reason"], strict=True))
    assert reasons == {"empty@1,1": "no_valid_month", "far": "outside_cube", "tiny": "no_pixel", "none": "no_geometry"}


# -- the stored split ------------------------------------------------------------------------------------------


def test_training_stores_its_split_ids_and_they_survive_compression(trained: tuple, tmp_path: Path) -> None:
    path, _samples, result = trained
    split = load_artifact(path).meta["split"]
    assert split["train_ids"] == sorted(result.train.sample_ids) and split["test_ids"] == []
    assert split["calibration_ids"] == sorted(result.val.sample_ids)
    assert ids_digest(split["calibration_ids"]) == split["val_ids_sha256"]
    assert ids_digest(split["train_ids"]) == split["train_ids_sha256"]
    # a huge id list is stored compressed and read back as the same list
    art = load_artifact(path)
    many = [f"polygon_{i // 50}@{i % 50},{i}" for i in range(PACK_IDS_ABOVE + 1)]
    art.meta["split"]["train_ids"] = many
    save_artifact(art, tmp_path / "big.pt")
    stored = json.loads(torch.load(tmp_path / "big.pt", weights_only=True)["meta"])["split"]["train_ids"]
    assert set(stored) == {"zlib_base64", "count"} and len(stored["zlib_base64"]) < len(json.dumps(many)) / 3
    assert load_artifact(tmp_path / "big.pt").meta["split"]["train_ids"] == many


def test_evaluate_scores_exactly_the_stored_ids(trained: tuple) -> None:
    path, samples, result = trained
    art = load_artifact(path)
    # the same samples in another order, plus new ones the model never saw: selected by id, not re-split
    order = np.random.default_rng(5).permutation(len(samples))
    given = Samples.concat([samples.subset(order), synthetic(40, seed=9, prefix="new")])
    report = evaluate_model(art, given, "cpu")
    assert report["split_source"] == "the sample ids stored in the model" and report["split_mode"] == "stored"
    assert report["scored_split"] == "calibration" and report["split_matches_training"]
    assert report["n_val"] == len(result.val) and report["n_train"] == len(result.train)
    stored = report["stored_ids"]
    assert stored["found"] == stored["stored"] == len(result.val) and stored["complete"]
    assert stored["train"]["found"] == len(result.train) and stored["not_in_stored_split"] == 40
    assert report["dropped"] == {"not_in_model_split": 40} and report["warnings"] == []
    assert {r["sample_id"] for r in report["dropped_samples"]} == {f"new{i}" for i in range(40)}
    assert "calibration_ids" not in report["split"] and report["split"]["val_ids_sha256"]


def test_missing_stored_ids_are_flagged_and_none_found_is_refused(trained: tuple) -> None:
    path, samples, result = trained
    art = load_artifact(path)
    cal = sorted(result.val.sample_ids)
    gone = set(cal[:5])
    given = samples.subset([i for i, s in enumerate(samples.sample_ids) if s not in gone])
    # two of the missing ones were read but left out by a loader: counted as such, not as missing
    given.dropped = drop_rows(cal[:2], "f.parquet", "no_valid_month", [5, 5])
    report = evaluate_model(art, given, "cpu")
    stored = report["stored_ids"]
    assert (stored["found"], stored["dropped_while_loading"], stored["missing"]) == (len(cal) - 5, 2, 3)
    assert not stored["complete"] and report["n_val"] == len(cal) - 5 and not report["split_matches_training"]
    assert any(
        w.startswith(f"only {len(cal) - 5} of the model's {len(cal)} stored calibration") for w in report["warnings"]
    )
    assert report["dropped"] == {"no_valid_month": 2}
    only_training = samples.subset([i for i, s in enumerate(samples.sample_ids) if s not in set(cal)])
    with pytest.raises(InputError, match=f"none of the {len(cal)} calibration sample ids stored in the model"):
        evaluate_model(art, only_training, "cpu")


def test_models_without_stored_ids_are_re_split_and_flagged(trained: tuple) -> None:
    path, samples, result = trained
    art = load_artifact(path)
    for key in ("train_ids", "calibration_ids", "test_ids"):
        art.meta["split"].pop(key)
    report = evaluate_model(art, samples, "cpu")
    assert report["split_source"].endswith("(the model stores no split ids)") and report["stored_ids"] is None
    assert report["split_matches_training"] and report["n_val"] == len(result.val)
    assert any("stores no split ids" in w for w in report["warnings"])
    # the ids can be recovered from the same samples, checked against the stored digests, and only then
    recovered = recover_split_ids(art, samples)
    assert recovered == {"train": sorted(result.train.sample_ids), "calibration": sorted(result.val.sample_ids),
                         "test": []}  # fmt: skip
    assert recover_split_ids(art, samples.subset(np.arange(1, len(samples)))) is None


def test_split_all_scores_every_sample_and_counts_training_ones(trained: tuple) -> None:
    path, samples, result = trained
    report = evaluate_model(load_artifact(path), samples, "cpu", split="all")
    assert report["scored_split"] == "all" and report["n_val"] == len(samples)
    assert report["n_scored_training_samples"] == len(result.train) and report["split_matches_training"] is None


# -- coverage and accuracy at the model's threshold ------------------------------------------------------------


def test_coverage_and_accuracy_at_threshold_match_a_hand_computation(trained: tuple) -> None:
    path, samples, result = trained
    art = load_artifact(path)
    report = evaluate_model(art, samples, "cpu", target_accuracy=0.7)
    val = samples.subset([i for i, s in enumerate(samples.sample_ids) if s in set(result.val.sample_ids)])
    probs, pred, outside = predict_samples(art, val, "cpu")
    stored = art.meta["validation_scores"]
    delta = art.meta["thresholds"]["report"]["global"]["delta"]
    target_threshold = choose_threshold(stored["top1"], np.asarray(stored["correct"], bool), 0.7, delta).threshold
    target_threshold -= 5e-7  # chosen among the stored 6-decimal scores: the smallest score rounding to it
    for key, threshold in (
        ("mapped", art.meta["thresholds"]["policy"]["threshold"]),
        ("mapped_at_target", target_threshold),
    ):
        figures = report[key]
        mapped = ~outside & (probs.max(axis=1) >= threshold)
        assert figures["policy"]["threshold"] == threshold and figures["n"] == len(val)
        assert figures["n_mapped"] == mapped.sum() and figures["coverage"] == pytest.approx(mapped.mean())
        assert 0 < mapped.sum() < len(val)  # the threshold keeps some samples and not others
        assert figures["accuracy_of_mapped"] == pytest.approx((pred == val.labels)[mapped].mean())
        assert figures["outside_training_share"] == pytest.approx(outside.mean())
        assert figures["low_confidence_share"] == pytest.approx((~outside & ~mapped).mean())
        for name, code in (("Trees", 5), ("Water", 8)):
            cell = figures["per_class"][name]
            assert cell["mapped"] == (mapped & (pred == code)).sum() and cell["predicted"] == (pred == code).sum()
            assert cell["mapped_correct"] == (mapped & (pred == code) & (val.labels == code)).sum()
        assert figures["threshold_fitted_on_these_samples"]
    assert (
        report["mapped"]["certified"]["target_accuracy"]
        == art.meta["thresholds"]["report"]["global"]["target_accuracy"]
    )
    assert report["mapped_at_target"]["certified"]["target_accuracy"] == 0.7
    assert report["random_forest"]["n"] == len(val)  # the baseline stays beside the model


def test_cli_evaluate_prints_and_writes_every_drop(trained: tuple, tmp_path: Path) -> None:
    path, samples, _result = trained
    extras = synthetic(4, seed=3, prefix="extra")
    extras.reflectance[3] = np.nan  # no valid month
    given = Samples.concat([samples, extras])
    ewoc = [EWOC_TREES if c == 5 else EWOC_WATER for c in samples.labels]
    parquet = wide_parquet(tmp_path / "points.parquet", given, [*ewoc, EWOC_IGNORE, EWOC_UNMAPPED, EWOC_BUILT_UP,
                                                                EWOC_TREES])  # fmt: skip
    out = tmp_path / "report"
    done = CliRunner().invoke(main, ["evaluate", str(path), str(parquet), "-o", str(out), "--target-accuracy", "0.7"])
    assert done.exit_code == 0, done.output
    assert "dropped 4 samples: ignored_class 1, unmapped_code 1, not_in_model_legend 1, no_valid_month 1" in done.output
    assert "at the model's threshold (top1 >= " in done.output and "at target 0.7 (" in done.output
    assert "coverage " in done.output and "RandomForest: OA" in done.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dropped"] == {"ignored_class": 1, "unmapped_code": 1, "not_in_model_legend": 1, "no_valid_month": 1}
    assert "dropped_samples" not in metrics and "dropped_unknown_class" not in metrics
    table = pd.read_csv(out / "dropped_samples.csv", dtype=str).fillna("")
    assert dict(zip(table["sample_id"], table["reason"], strict=True)) == {
        "extra0": "ignored_class", "extra1": "unmapped_code", "extra2": "not_in_model_legend",
        "extra3": "no_valid_month",
    }  # fmt: skip
    assert table.set_index("sample_id").loc["extra2", "detail"] == "Built-up"
    # none of the stored held-out ids among the samples: one line, exit 2
    strangers = wide_parquet(tmp_path / "new.parquet", synthetic(20, seed=4, prefix="n"), [EWOC_TREES] * 20)
    refused = CliRunner().invoke(main, ["evaluate", str(path), str(strangers), "-o", str(tmp_path / "r2")])
    assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1
    assert "none of the" in refused.output and "--split all" in refused.output
    files = write_report(evaluate_model(load_artifact(path), samples, "cpu"), tmp_path / "again")
    assert [f.name for f in files][-1] == "dropped_samples.csv"


def test_the_shipped_model_scores_its_stored_calibration_split() -> None:
    art = load_artifact(PROJECT / "models" / "landcover_default.pt")
    split = art.meta["split"]
    assert len(split["calibration_ids"]) == split["n_val"] == 276 and len(split["train_ids"]) == split["n_train"]
    assert ids_digest(split["calibration_ids"]) == split["val_ids_sha256"]
    assert ids_digest(split["train_ids"]) == split["train_ids_sha256"]


# -- predict --apply-masking -----------------------------------------------------------------------------------


def test_apply_masking_gives_every_reason_code(trained: tuple) -> None:
    path, _samples, _result = trained
    art = load_artifact(path)
    values = np.empty((12, 9, 4, 5), np.float32)
    values[:, :, :, :3] = VEG[None, :, None, None]
    values[:, :, :, 3:] = WATER[None, :, None, None]
    values[:, :, 3, :] = 0.6  # unlike anything the model saw
    values[:, :, 0, 0] = np.nan  # no valid month
    prediction = predict_cube(art, tiny_cube(values), device="cpu")
    n_clear = np.full((4, 5), 12)
    n_clear[0, 0], n_clear[1, 1] = 0, 1
    policy = ThresholdPolicy("top1", 0.0, (), min_clear_observations=2)
    codes = apply_masking(prediction, art.legend, policy, n_clear)["class_map"].values
    assert codes[0, 0] == 0 and codes[1, 1] == 253 and (codes[3] == 252).all()
    rest = np.ones((4, 5), bool)
    rest[0, 0] = rest[1, 1] = False
    rest[3] = False
    assert (codes[rest] == np.where(np.arange(5) < 3, 5, 8)[None].repeat(4, 0)[rest]).all()
    strict = apply_masking(prediction, art.legend, ThresholdPolicy("top1", 1.01), n_clear)["class_map"].values
    assert set(np.unique(strict[rest])) == {254} and strict[1, 1] == 254  # one observation is enough by default
    with pytest.raises(ValueError, match="clear-observation counts"):
        apply_masking(prediction, art.legend, policy, None)


def test_predict_apply_masking_equals_the_run_map(tmp_path: Path) -> None:
    import yaml

    spec = demo_spec()
    spec["output"]["dir"] = str(tmp_path / "out")
    spec["products"]["urban_atlas"]["enabled"] = False
    spec["compute"] = {"scheduler": "synchronous"}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(spec))
    threads = torch.get_num_threads()
    try:
        run = CliRunner().invoke(main, ["run", str(job)])
    finally:  # an in-process synchronous run pins torch to the job's threads per worker; the next tests need theirs
        torch.set_num_threads(threads)
    assert run.exit_code == 0, run.output
    target = str(spec["products"]["landcover"]["target_accuracy"])
    output = tmp_path / "prediction.nc"
    cube = tmp_path / "out" / "cube" / "cube.nc"
    # the demo job has Sentinel-1 and a DEM: its map is the radar model's, and predict reads them from the cube
    model = PROJECT / "models" / "landcover_radar.pt"
    args = ["predict", str(model), str(cube), "-o", str(output), "--apply-masking", "--target-accuracy", target]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    with rasterio.open(tmp_path / "out" / "landcover" / "demo-belgium.tif") as src:
        expected, palette = src.read(1), src.colormap(1)
    with rasterio.open(tmp_path / "prediction_classes.tif") as src:
        assert src.colormap(1) == palette
        np.testing.assert_array_equal(src.read(1), expected)
    import xarray as xr

    with xr.open_dataset(output) as ds:
        np.testing.assert_array_equal(ds["class_map"].values, expected)
    assert set(np.unique(expected)) >= {252, 254} and np.isin(expected, load_artifact(model).legend.codes).any()
    assert (tmp_path / "prediction_classes.qml").exists() and (tmp_path / "prediction_classes.tif.aux.xml").exists()
    assert "Not mapped (outside the model's training data)" in (tmp_path / "prediction_classes.qml").read_text()
    bare = CliRunner().invoke(
        main, ["predict", str(model), str(cube), "-o", str(tmp_path / "p.nc"), "--threshold", "0.5"]
    )
    assert bare.exit_code == 2 and "only apply with --apply-masking" in bare.output
