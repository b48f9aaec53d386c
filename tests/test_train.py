"""Model artifact, training, evaluation and prediction, end to end on small data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from suelo.errors import InputError
from suelo.evaluate import evaluate_model, write_report
from suelo.legend import load_legend
from suelo.models.artifact import check_contract, load_artifact, save_artifact
from suelo.predict import predict_cube
from suelo.samples import Samples
from suelo.train import TrainConfig, train_model
from tests.fixtures import BANDS, REPO_ROOT, tiny_cube

PROJECT = REPO_ROOT
VEG = np.array([0.03, 0.06, 0.04, 0.10, 0.25, 0.30, 0.35, 0.20, 0.10], np.float32)
WATER = np.array([0.06, 0.05, 0.03, 0.02, 0.015, 0.01, 0.01, 0.005, 0.003], np.float32)


def synthetic(n: int = 160, seed: int = 0) -> Samples:
    """Trees (vegetation spectrum) vs water, spread over ~1 degree so the spatial split has many blocks."""
    rng = np.random.default_rng(seed)
    labels = np.where(np.arange(n) % 2 == 0, 5, 8)
    base = np.where((labels == 5)[:, None], VEG, WATER)
    refl = base[:, None, :] * rng.uniform(0.9, 1.1, (n, 12, 9)).astype(np.float32)
    refl[rng.random((n, 12)) < 0.2] = np.nan  # cloudy months
    latlons = np.stack([rng.uniform(50, 51, n), rng.uniform(5, 6, n)], axis=-1)
    return Samples(refl, BANDS, np.full(n, 0), latlons, labels, np.array([f"s{i}" for i in range(n)]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = train_model(synthetic(), load_legend(), TrainConfig(max_epochs=60, patience=10, block_m=20_000))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_artifact(result.artifact, path)
    return path


def test_training_learns_and_reports_the_rf_baseline(trained: Path) -> None:
    art = load_artifact(trained)
    assert art.legend.codes == (5, 8)
    assert art.contract["bands"] == BANDS and art.contract["months"] == 12 and art.contract["product_level"] == "L2A"
    assert art.contract["normalization"] == "presto-l2a-v1"
    metrics = art.meta["metrics"]
    assert metrics["validation"]["overall_accuracy"] >= 0.95
    assert metrics["random_forest_validation"]["overall_accuracy"] >= 0.95
    assert art.encoder_state is None and trained.stat().st_size < 2_000_000


def test_evaluate_reproduces_the_split_and_writes_report(trained: Path, tmp_path: Path) -> None:
    report = evaluate_model(load_artifact(trained), synthetic(), device="cpu")
    assert report["split_matches_training"]
    assert report["model"]["overall_accuracy"] >= 0.95 and "overall_accuracy" in report["random_forest"]
    cm = np.array(report["model"]["confusion_matrix"]["matrix"])
    assert cm.sum() == report["n_val"]
    files = write_report(report, tmp_path / "report")
    assert [f.name for f in files] == [
        "metrics.json", "confusion_model.png", "confusion_random_forest.png", "dropped_samples.csv"
    ]  # fmt: skip
    assert files[1].read_bytes()[:4] == b"\x89PNG"


def test_predict_tiny_cube(trained: Path) -> None:
    values = np.empty((12, 9, 4, 5), np.float32)
    values[:, :, :, :3] = VEG[None, :, None, None]
    values[:, :, :, 3:] = WATER[None, :, None, None]
    values[:, :, 0, 0] = np.nan  # no valid month
    pred = predict_cube(load_artifact(trained), tiny_cube(values), device="cpu")
    post = pred["posterior"].values
    assert post.shape == (2, 4, 5) and np.isnan(post[:, 0, 0]).all() and pred["class_code"].values[0, 0] == 0
    np.testing.assert_allclose(np.nansum(post, axis=0)[np.isfinite(post[0])], 1, atol=1e-5)
    codes = pred["class_code"].values
    assert (codes[:, 3:] == 8).all() and (codes[1:, :3] == 5).all() and (codes[0, 1:3] == 5).all()


def test_artifact_is_weights_only_and_refuses_others(trained: Path, tmp_path: Path) -> None:
    payload = torch.load(trained, weights_only=True)
    assert (payload["format"], payload["format_version"], payload["kind"]) == ("suelo-model", 3, "pixel_head")
    bad = tmp_path / "pickle.pt"
    bad.write_bytes(pickle.dumps(Samples))  # a class reference: refused by weights_only
    with pytest.raises(InputError, match="not a suelo model artifact"):
        load_artifact(bad)
    sd = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, sd)
    with pytest.raises(InputError, match="no format"):
        load_artifact(sd)


def test_contract_mismatches(trained: Path) -> None:
    art = load_artifact(trained)
    cube = tiny_cube()
    check_contract(art, cube)
    with pytest.raises(InputError, match=r"lacks bands \['B11', 'B12'\]"):
        check_contract(art, cube.sel(band=BANDS[:7]), "c.nc")
    with pytest.raises(InputError, match="has 6 months, the model needs 12"):
        check_contract(art, cube.isel(time=slice(0, 6)))
    with pytest.raises(InputError, match="not consecutive"):
        check_contract(art, cube.assign_coords(time=np.roll(cube.time.values, 1)))
    l1c = cube.assign_attrs(scenes='[{"level": "L1C"}]')
    with pytest.raises(InputError, match="L1C"):
        check_contract(art, l1c)


def test_default_model_on_demo_cube(tmp_path: Path) -> None:
    """The shipped model on a corner of the shipped demo cube: posteriors sum to 1 where there is data."""
    from suelo.jobs import ingest
    from suelo.settings import load_job

    job = load_job(PROJECT / "workflows" / "demo.yaml")
    job = job.model_copy(update={"output": job.output.model_copy(update={"dir": tmp_path})})
    from suelo.composite import open_cube

    cube = open_cube(ingest(job).cube_path).isel(y=slice(0, 8), x=slice(0, 10))
    art = load_artifact(PROJECT / "models" / "landcover_default.pt")
    pred = predict_cube(art, cube, device="cpu")
    post = pred["posterior"].values
    valid = np.isfinite(post).all(axis=0)
    assert valid.any()
    np.testing.assert_allclose(post.sum(axis=0)[valid], 1, atol=1e-5)
    assert set(np.unique(pred["class_code"].values[valid])) <= {*art.legend.codes, 252}


def test_every_model_has_a_calibrated_novelty_gate(trained: Path, tmp_path: Path) -> None:
    art = load_artifact(trained)
    gate = art.gate
    assert gate is not None and gate.whiten.shape == (128, 128) and gate.means.shape == (2, 128)
    meta = art.meta["novelty"]
    assert meta["method"] == "class-gaussian-mahalanobis" and meta["rejection_rate"] == 0.05
    assert meta["n_calibration"] == art.meta["split"]["n_val"] and meta["n_fit"] == art.meta["split"]["n_train"]
    assert 0 <= meta["calibration_rejected"] <= 0.05
    # stored scores: gate-rejected calibration points can never be retained
    stored = art.meta["validation_scores"]
    assert all(s == -1.0 for s, inside in zip(stored["top1"], stored["inside_gate"], strict=True) if not inside)
    payload = torch.load(trained, weights_only=True)
    old = {k: v for k, v in payload.items() if not k.startswith("novelty.")}
    torch.save(old, tmp_path / "no_gate.pt")
    with pytest.raises(InputError, match="no usable novelty gate"):
        load_artifact(tmp_path / "no_gate.pt")
    torch.save(old | {"format": "suelo-landcover-model", "format_version": 1}, tmp_path / "v1.pt")
    with pytest.raises(InputError, match=r"made before novelty gates.*retrain"):
        load_artifact(tmp_path / "v1.pt")


def test_stored_default_target_is_certifiable(trained: Path) -> None:
    report = load_artifact(trained).meta["thresholds"]["report"]
    assert report["global"]["feasible"] and report["global"]["target_accuracy"] <= report["requested_target"]


def test_predict_rejects_what_the_model_never_saw(trained: Path) -> None:
    values = np.empty((12, 9, 4, 5), np.float32)
    values[:, :, :, :3] = VEG[None, :, None, None]
    values[:, :, :, 3:] = WATER[None, :, None, None]
    values[:, :, 3, :] = 0.6  # bright and flat in every band and month: neither trees nor water
    pred = predict_cube(load_artifact(trained), tiny_cube(values), device="cpu")
    outside = pred["outside_training"].values
    assert outside[3].all() and not outside[:3].any()
    assert (pred["class_code"].values[3] == 252).all()
    assert (pred["novelty_score"].values[3] > load_artifact(trained).gate.threshold).all()
    assert np.isfinite(pred["posterior"].values[:, 3]).all()  # the posteriors stay (they are data), the code says why


def test_evaluate_scores_calibrated_posteriors_as_mapped(trained: Path) -> None:
    art = load_artifact(trained)
    report = evaluate_model(art, synthetic(), device="cpu")
    assert report["scored_split"] == "calibration" and report["split_matches_training"]
    mapped = report["mapped"]
    assert 0 < mapped["coverage"] <= 1 and mapped["accuracy_of_mapped"] >= 0.95
    assert mapped["policy"] == art.meta["thresholds"]["policy"]


def test_three_way_split_scores_an_untouched_test_split() -> None:
    result = train_model(
        synthetic(240), load_legend(), TrainConfig(max_epochs=30, block_m=20_000, test_fraction=0.2, seed=1)
    )
    split = result.artifact.meta["split"]
    ids = [set(s.sample_ids) for s in (result.train, result.val, result.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert split["n_test"] == len(ids[2]) > 0
    test = result.artifact.meta["metrics"]["test"]
    assert test["n"] == split["n_test"] and "random_forest" in test
    assert set(test["certified"]) == {"0.80", "0.85", "0.90", "0.95"}
    for cell in test["certified"].values():
        assert 0 <= cell["test_coverage"] <= 1
    report = evaluate_model(result.artifact, synthetic(240), device="cpu")
    assert report["scored_split"] == "test" and report["n_val"] == split["n_test"]


def test_model_card_averages_the_whole_procedure_over_split_seeds() -> None:
    from suelo.model_card import card_markdown, card_summary, seed_averaged_card

    config = TrainConfig(max_epochs=20, block_m=20_000)
    card = seed_averaged_card(synthetic(240), load_legend(), config, seeds=(0, 1, 2), test_fraction=0.2)
    rows = card["per_seed"]
    assert [r["seed"] for r in rows] == [0, 1, 2] and card["macro_f1"]["n"] == 3
    f1 = [r["macro_f1"] for r in rows]
    assert card["macro_f1"]["mean"] == pytest.approx(np.mean(f1))
    assert card["macro_f1"]["sd"] == pytest.approx(np.std(f1, ddof=1))
    diffs = [r["macro_f1"] - r["rf_macro_f1"] for r in rows]
    assert card["macro_f1_minus_rf"]["mean"] == pytest.approx(np.mean(diffs))
    for r in rows:  # every seed is a different three-way split, scored on its own test points
        assert r["n_train"] + r["n_calibration"] + r["n_test"] == 240 and r["n_test"] > 0
    assert len({(r["n_train"], r["n_test"]) for r in rows} | {(rows[0]["macro_f1"],)}) > 1
    assert set(card["certified"]) == {"0.80", "0.85", "0.90", "0.95"}
    text = card_markdown(card)
    assert "| macro-F1 | " in text and "of 3 |" in text
    summary = card_summary(card)
    assert summary["seeds"].startswith("3 spatial splits") and " ± " in summary["macro_f1"]
