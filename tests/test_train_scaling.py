"""Training that scales: pixels capped per polygon and class, block size from the samples' extent, early stopping
on an inner stopping split, a time budget, the stopping reason in the model, progress, and sample-file errors."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from rasterio.transform import Affine
from shapely.geometry import Point, box

from suelo.errors import ConfigError, InputError
from suelo.grid import Grid
from suelo.legend import load_legend
from suelo.models.artifact import load_artifact
from suelo.samples import Samples, load_samples, sample_vector, three_way_split
from suelo.sampling import auto_block_m, cap_samples, effective_blocks
from suelo.train import STOP_REASONS, TrainConfig, class_weights, train_model
from suelo.train_progress import StderrProgress
from tests.fixtures import BANDS, GRID, tiny_cube

VEG = np.array([0.03, 0.06, 0.04, 0.10, 0.25, 0.30, 0.35, 0.20, 0.10], np.float32)
WATER = np.array([0.06, 0.05, 0.03, 0.02, 0.015, 0.01, 0.01, 0.005, 0.003], np.float32)
TREES, WATER_CODE, CROPS = 5, 8, 1  # LANDCOVER10 codes


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def polygons(sizes: list[int], labels: list[int], anchors: np.ndarray, seed: int = 0) -> Samples:
    """Polygon pixels: polygon k has sizes[k] pixels of class labels[k], all anchored at anchors[k] (its
    centroid, as sample_vector does); trees and water spectra with noise, so a head can learn them."""
    rng = np.random.default_rng(seed)
    feat = np.repeat(np.arange(len(sizes)), sizes)
    lab = np.asarray(labels)[feat]
    n = len(feat)
    base = np.where((lab == WATER_CODE)[:, None], WATER, VEG)
    refl = base[:, None, :] * rng.uniform(0.85, 1.15, (n, 12, 9)).astype(np.float32)
    ids = np.array([f"p{f}@{i}" for i, f in enumerate(feat)], dtype=object)
    where = np.asarray(anchors)[feat]
    return Samples(refl, BANDS, np.zeros(n), where, lab, ids, anchors=where, features=np.array([f"f{f}" for f in feat]))


def scene_anchors(n: int, km: float, seed: int) -> np.ndarray:
    """``n`` (lat, lon) uniformly over a km x km square at 45 N."""
    rng = np.random.default_rng(seed)
    dlat = km * 1000 / 111_320
    dlon = dlat / np.cos(np.radians(45.0))
    return np.stack([45.0 + rng.uniform(0, dlat, n), 10.0 + rng.uniform(0, dlon, n)], axis=-1)


# caps -------------------------------------------------------------------------------------------------------------


def _mixed() -> Samples:
    """Class 5: polygons of 200, 30 and 80 pixels; class 8: a 500-pixel polygon and 40 points."""
    poly = polygons([200, 30, 80, 500], [TREES, TREES, TREES, WATER_CODE], scene_anchors(4, 5, 0))
    rng = np.random.default_rng(1)
    points = Samples(
        np.tile(WATER, (40, 12, 1)), BANDS, np.zeros(40), scene_anchors(40, 5, 2), np.full(40, WATER_CODE),
        np.array([f"pt{i}" for i in range(40)], dtype=object),
    )  # fmt: skip
    both = Samples.concat([poly, points])
    return both.subset(rng.permutation(len(both)))


def _kept_per_feature(samples: Samples, index: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(samples.features[index].astype(str), return_counts=True)
    return dict(zip(names.tolist(), counts.tolist(), strict=True))


def test_polygon_cap_keeps_at_most_n_per_polygon_and_every_point() -> None:
    s = _mixed()
    index, report = cap_samples(s, max_per_polygon=50, max_per_class=None, seed=0)
    kept = _kept_per_feature(s, index)
    assert {k: v for k, v in kept.items() if k.startswith("f")} == {"f0": 50, "f1": 30, "f2": 50, "f3": 50}
    assert sum(v for k, v in kept.items() if k.startswith("pt")) == 40  # points are never thinned by this cap
    assert report["available"] == {TREES: 310, WATER_CODE: 540} and report["kept"] == {TREES: 130, WATER_CODE: 90}
    assert report["features"] == 44 and report["features_capped"] == 3
    assert (np.diff(index) > 0).all()  # the samples keep their order


def test_class_cap_is_stratified_over_polygons() -> None:
    s = _mixed()
    index, report = cap_samples(s, max_per_polygon=50, max_per_class=60, seed=0)
    kept = _kept_per_feature(s, index)
    # 60 of class 5 from its three polygons: round robin, 20 each (every polygon has at least 20 after the cap)
    assert (kept["f0"], kept["f1"], kept["f2"]) == (20, 20, 20)
    # class 8: 50 polygon pixels + 40 points = 90 > 60: 40 rounds of one each (the polygon and all 40 points),
    # then the polygon's next 20
    assert kept["f3"] == 20 and sum(v for k, v in kept.items() if k.startswith("pt")) == 40
    assert report["kept"] == {TREES: 60, WATER_CODE: 60}


def test_caps_are_seeded_and_independent_of_sample_order() -> None:
    s = _mixed()
    a, _ = cap_samples(s, 50, 60, seed=0)
    again, _ = cap_samples(s, 50, 60, seed=0)
    assert np.array_equal(a, again)
    order = np.random.default_rng(7).permutation(len(s))
    shuffled = s.subset(order)
    b, _ = cap_samples(shuffled, 50, 60, seed=0)
    assert set(shuffled.sample_ids[b]) == set(s.sample_ids[a])
    other, _ = cap_samples(s, 50, 60, seed=1)
    assert set(s.sample_ids[other]) != set(s.sample_ids[a]) and len(other) == len(a)
    none, report = cap_samples(s, None, None)
    assert np.array_equal(none, np.arange(len(s))) and report["kept"] == report["available"]


def test_vector_polygon_pixels_share_a_feature_and_points_do_not(tmp_path: Path) -> None:
    # one polygon covering the centres of 4 pixels, two points in two other pixels (tiny cube in EPSG:32631)
    poly = box(664001, 5611979, 664019, 5611999)
    gdf = gpd.GeoDataFrame(
        {"cls": [4, 5, 5], "geometry": [poly, Point(664035, 5611995), Point(664045, 5611975)]}, crs="EPSG:32631"
    )
    path = tmp_path / "labels.gpkg"
    gdf.to_file(path)
    s = sample_vector(tiny_cube(), path, "cls")
    assert len(s) == 6 and len(set(s.features[s.labels == 4])) == 1 and len(set(s.features[s.labels == 5])) == 2
    index, _ = cap_samples(s, max_per_polygon=1, max_per_class=None)
    assert sorted(s.labels[index].tolist()) == [4, 5, 5]
    assert len(s.subset(index).features) == 3 and len(Samples.concat([s, s]).features) == 12


# block size -------------------------------------------------------------------------------------------------------


def _polygon_scene(seed: int) -> Samples:
    """About 125,000 pixels of 600 polygons over a 15 km scene (no reflectance needed to split)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(20, 400, 600)
    anchors = np.repeat(scene_anchors(600, 15, seed), sizes, axis=0)
    n = len(anchors)
    return Samples(np.zeros((n, 1, 9), np.float32), BANDS, np.zeros(n), anchors, np.ones(n),
                   np.arange(n).astype(str), anchors=anchors)  # fmt: skip


def test_auto_block_size_gives_the_asked_fractions_where_10_km_blocks_fail() -> None:
    """Tolerance: within 0.01 of the asked fraction (each of ~55 effective blocks holds ~2 % of the samples)."""
    worst_10km = 0.0
    for seed in range(3):
        s = _polygon_scene(seed)
        block, info = auto_block_m(s.anchors)
        assert block == 2000 and info["effective_blocks"] >= 50 and info["extent_km"][0] == pytest.approx(15, abs=0.2)
        for test_fraction in (0.0, 0.2):
            _train, cal, test = three_way_split(s, block, 0.2, test_fraction, seed)
            assert abs(len(cal) / len(s) - 0.2) <= 0.01
            assert abs(len(test) / len(s) - test_fraction) <= 0.01
            _train, cal, test = three_way_split(s, 10_000, 0.2, test_fraction, seed)
            worst_10km = max(worst_10km, abs(len(cal) / len(s) - 0.2), abs(len(test) / len(s) - test_fraction))
    assert worst_10km > 0.1  # four to nine 10 km blocks over 15 km: a fraction can be missed by 12 points


def test_auto_block_size_limits() -> None:
    continent = scene_anchors(3000, 1000, 0)  # points over 1000 km: the largest block, 10 km
    assert auto_block_m(continent)[0] == 10_000
    patch = scene_anchors(3000, 1, 0)  # a 1 km patch reaches 50 blocks at no size: the smallest, 250 m
    block, info = auto_block_m(patch)
    assert block == 250 and info["effective_blocks"] < 50
    count, effective = effective_blocks(np.repeat(continent[:1], 10, axis=0), 1000)
    assert (count, effective) == (1, 1.0)


# early stopping, budget, reasons ----------------------------------------------------------------------------------

FAST = {"rf_baseline": False, "hidden": 16, "batch_size": 32}


def _spread_polygons(n_poly: int = 60, size: int = 8, noise_labels: float = 0.0, seed: int = 0) -> Samples:
    rng = np.random.default_rng(seed)
    labels = np.where(np.arange(n_poly) % 2 == 0, TREES, WATER_CODE)
    s = polygons([size] * n_poly, labels.tolist(), scene_anchors(n_poly, 15, seed), seed)
    if noise_labels:
        flip = rng.random(len(s)) < noise_labels
        s.labels[flip] = np.where(s.labels[flip] == TREES, WATER_CODE, TREES)
    return s


def test_early_stopping_stops_and_restores_the_best_epoch() -> None:
    # half the labels flipped at random: the head can only overfit, so the stopping loss soon rises
    samples = _spread_polygons(noise_labels=0.5)
    config = TrainConfig(max_epochs=200, patience=4, lr=3e-2, dropout=0.0, **FAST)
    result = train_model(samples, load_legend(), config)
    meta = result.artifact.meta
    record = meta["training"]["stopping"]["head"]
    losses = [h["val_loss"] for h in result.history]
    best = int(np.argmin(losses))
    assert meta["training"]["stopping_reason"] == record["reason"] == "early_stopping"
    assert len(result.history) == meta["training"]["epochs"] == best + 1 + 4 < 200
    assert record["best_epoch"] == best + 1 and record["best_loss"] == pytest.approx(losses[best])
    # the restored head scores the best epoch's loss on the stopping split
    stop = result.stopping
    assert stop is not None and len(stop) == meta["split"]["n_stopping"] > 0
    is_stop = np.isin(result.train.sample_ids, stop.sample_ids)
    codes = {c: i for i, c in enumerate(result.artifact.legend.codes)}
    y = torch.tensor([codes[c] for c in result.train.labels])
    emb = torch.from_numpy(result.embeddings["train"])
    weights = class_weights(y[~is_stop].numpy(), 2, "sqrt")
    with torch.no_grad():
        loss = float(F.cross_entropy(result.head(emb[is_stop]), y[is_stop], weight=weights))
    assert loss == pytest.approx(losses[best], abs=1e-5)
    # the stopping split is whole blocks of the train split, never calibration samples
    assert not set(stop.sample_ids) & set(result.val.sample_ids)
    assert meta["split"]["stopping"]["achieved"] == pytest.approx(0.15, abs=0.05)


def test_the_calibration_split_is_the_same_with_or_without_early_stopping() -> None:
    samples = _spread_polygons()
    on = train_model(samples, load_legend(), TrainConfig(max_epochs=5, **FAST)).artifact.meta
    off = train_model(samples, load_legend(), TrainConfig(max_epochs=5, early_stopping=False, **FAST)).artifact.meta
    for key in ("block_m", "val_ids_sha256", "train_ids_sha256", "n_val", "n_train", "achieved"):
        assert on["split"][key] == off["split"][key]
    assert on["split"]["n_stopping"] > 0 and off["split"]["n_stopping"] == 0 and off["split"]["stopping"] is None
    assert off["split"]["n_fit"] == off["split"]["n_train"] == on["split"]["n_fit"] + on["split"]["n_stopping"]
    assert off["training"]["stopping"]["watched"].startswith("calibration split (shown only")


def test_max_epochs_and_time_budget_are_recorded_as_the_reason() -> None:
    samples = _spread_polygons()
    fixed = train_model(samples, load_legend(), TrainConfig(max_epochs=3, early_stopping=False, **FAST))
    assert fixed.artifact.meta["training"]["stopping_reason"] == "max_epochs" and len(fixed.history) == 3
    # a budget already spent by the embedding: one epoch, then the next would end past it
    budget = train_model(samples, load_legend(), TrainConfig(max_epochs=200, time_budget_s=1e-3, **FAST))
    training = budget.artifact.meta["training"]
    assert training["stopping_reason"] == "time_budget" and training["epochs"] == 1
    assert training["stopping"]["time_budget_s"] == 1e-3
    assert set(STOP_REASONS) == {"early_stopping", "max_epochs", "time_budget"}


def test_training_records_the_caps_and_the_split() -> None:
    samples = polygons([120] * 40, [TREES, WATER_CODE] * 20, scene_anchors(40, 15, 3), 3)
    config = TrainConfig(max_epochs=3, max_per_polygon=10, max_per_class=150, **FAST)
    meta = train_model(samples, load_legend(), config).artifact.meta
    split = meta["split"]
    train_idx, cal_idx, _ = three_way_split(samples, split["block_m"], 0.2, 0.0, 0)
    assert split["block_m_requested"] == "auto" and split["block_m"] in (10_000, 5_000, 2_000, 1_000, 500, 250)
    assert split["achieved"]["calibration"] == pytest.approx(len(cal_idx) / len(samples), abs=1e-4)
    sampling = meta["training"]["sampling"]
    for code, name in ((TREES, "Trees"), (WATER_CODE, "Water")):
        in_train = samples.labels[train_idx] == code
        polygons_in_train = len(set(samples.features[train_idx][in_train]))
        assert sampling["available"][name] == int(in_train.sum()) == 120 * polygons_in_train
        assert sampling["kept"][name] == min(10 * polygons_in_train, 150)
    assert split["n_fit"] + split["n_stopping"] == sum(sampling["kept"].values())
    assert split["n_train"] == len(train_idx) and split["n_val"] == len(cal_idx)  # as `suelo evaluate` redoes it


def test_bad_config_values_are_refused() -> None:
    samples = _spread_polygons(n_poly=10)
    for bad in ({"block_m": "big"}, {"block_m": -5.0}, {"stop_fraction": 1.0}, {"time_budget_s": 0.0}):
        with pytest.raises(ConfigError):
            train_model(samples, load_legend(), TrainConfig(**bad))
    assert TrainConfig.legacy().block_m == 10_000 and not TrainConfig.legacy().stops_early
    assert TrainConfig(patience=0).stops_early is False  # how models made before early stopping read


# progress ---------------------------------------------------------------------------------------------------------


def test_progress_off_a_terminal_is_a_line_every_n_epochs() -> None:
    out = io.StringIO()
    progress = StderrProgress(out, every=10, terminal=False)
    progress.start("embedding", 1000, "px")
    progress.update("embedding", 1000)
    progress.finish("embedding")
    progress.start("head", 200, "epochs")
    for epoch in range(1, 26):
        progress.update("head", epoch, loss=0.5, val_loss=0.25, watched="stopping")
    progress.finish("head")
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["head: epoch 10/200", "head: epoch 20/200"]
    assert "loss 0.5000, stopping loss 0.2500" in lines[0] and "left" in lines[0]
    bar = io.StringIO()
    on_terminal = StderrProgress(bar, terminal=True)
    on_terminal.start("head", 5, "epochs")
    on_terminal.update("head", 1, loss=0.5, val_loss=0.25, watched="stopping")
    on_terminal.finish("head")  # a bar, drawn and removed without error


# sample-file errors -----------------------------------------------------------------------------------------------


def test_unsupported_sample_files_say_what_they_are_and_what_is_missing(tmp_path: Path) -> None:
    cube = tiny_cube()
    garbage = tmp_path / "notes.txt"
    garbage.write_text("asdf qwer zxcv\n1 2 3\n")
    text = r"notes.txt: is a text file whose first line \('asdf qwer zxcv'\) is not a CSV header with lon and lat"
    with pytest.raises(InputError, match=text):
        load_samples([garbage], cube=cube, class_column="cls")

    book = tmp_path / "labels.xlsx"
    with zipfile.ZipFile(book, "w") as z:
        z.writestr("xl/workbook.xml", "<workbook/>")
    excel = r"labels.xlsx: is an Excel workbook, which suelo does not read: save the sheet as CSV with lon and lat"
    with pytest.raises(InputError, match=excel):
        load_samples([book], cube=cube, class_column="cls")

    table = tmp_path / "points.parquet"
    pd.DataFrame({"lon": [5.3], "lat": [50.6], "klass": ["Trees"]}).to_parquet(table)
    no_class = (
        r"points.parquet: is a parquet table without ewoc_code \(so not a WorldCereal extraction\); as labelled "
        r"points or polygons it needs --class-column naming its class column \(one of: lon, lat, klass\)$"
    )
    with pytest.raises(InputError, match=no_class):
        load_samples([table], cube=cube)
    neither = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(neither)
    with pytest.raises(InputError, match=r"neither an ewoc_code column .* nor lon and lat columns"):
        load_samples([neither], cube=cube, class_column="a")

    vector = tmp_path / "fields.gpkg"
    gpd.GeoDataFrame({"cls": [5], "geometry": [box(5.3, 50.6, 5.31, 50.61)]}, crs="EPSG:4326").to_file(vector)
    no_cube = r"fields.gpkg: is a GeoPackage file of 1 Polygon features; as labelled points or polygons it needs --cube"
    with pytest.raises(InputError, match=no_cube):
        load_samples([vector], class_column="cls")
    with pytest.raises(InputError, match=r"no class column 'klass' \(its columns: cls\)"):
        load_samples([vector], cube=cube, class_column="klass")

    fake = tmp_path / "labels.tif"
    fake.write_text("not an image")
    not_tiff = r"labels.tif: is named .tif but is not a TIFF \(it is a text file\); expected a WorldCereal point"
    with pytest.raises(InputError, match=not_tiff):
        load_samples([fake], cube=cube)


def test_cli_train_refuses_a_bad_sample_file_and_a_bad_block_size(tmp_path: Path) -> None:
    from suelo.cli import main

    garbage = tmp_path / "notes.txt"
    garbage.write_text("hello\n")
    result = CliRunner().invoke(main, ["train", str(garbage), "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and "is a text file whose first line" in result.output
    assert "give --cube" not in result.output
    for bad, message in (("big", "--block-m must be a size in metres or auto, got 'big'"),
                         ("-1", "block_m must be positive, got -1.0")):  # fmt: skip
        result = CliRunner().invoke(main, ["train", str(garbage), "--block-m", bad, "-o", str(tmp_path / "m.pt")])
        assert result.exit_code == 2 and message in result.output


def test_cli_train_with_the_new_options(tmp_path: Path) -> None:
    """Polygons on a 600 m cube: every option reaches the model, the split and the caps are what was asked."""
    from suelo.cli import main
    from suelo.composite import write_cube

    size = 60
    grid = Grid(GRID.crs, Affine(10.0, 0.0, 664000.0, 0.0, -10.0, 5612000.0), size, size)
    values = np.empty((12, 9, size, size), np.float32)
    values[:, :, :, : size // 2] = VEG[None, :, None, None]
    values[:, :, :, size // 2 :] = WATER[None, :, None, None]
    values *= np.random.default_rng(0).uniform(0.9, 1.1, values.shape).astype(np.float32)
    cube = tmp_path / "cube.nc"
    data = tiny_cube(values, grid)
    data["clear_count"] = data["valid"].astype(np.uint16)  # one clear observation a month, as a real cube says
    data["n_clear"] = data["clear_count"].sum("time").astype(np.uint16)
    write_cube(data, cube)
    # 36 fields of 100 m, 2 m inside their 10 x 10 pixels: 100 pixel centres each
    fields = [box(664000 + 100 * i + 2, 5612000 - 100 * (j + 1) + 2, 664000 + 100 * (i + 1) - 2, 5612000 - 100 * j - 2)
              for i in range(6) for j in range(6)]  # fmt: skip
    cls = ["Trees" if i < 3 else "Water" for i in range(6) for _j in range(6)]
    labels = tmp_path / "fields.geojson"
    gpd.GeoDataFrame({"cls": cls, "geometry": fields}, crs="EPSG:32631").to_file(labels)
    model = tmp_path / "m.pt"
    args = ["train", str(labels), "--cube", str(cube), "--class-column", "cls", "-o", str(model), "--block-m", "100",
            "--max-per-polygon", "20", "--max-per-class", "0", "--max-epochs", "30", "--patience", "5"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "split: 100 m blocks" in result.output and "calibration" in result.output
    meta = load_artifact(model).meta
    config = meta["training"]["config"]
    assert (config["max_per_polygon"], config["max_per_class"], config["max_epochs"], config["patience"]) == (
        20, None, 30, 5,
    )  # fmt: skip
    assert config["block_m"] == 100 and meta["split"]["block_m"] == 100
    assert meta["training"]["stopping_reason"] in STOP_REASONS and meta["training"]["epochs"] <= 30
    sampling = meta["training"]["sampling"]
    for name in ("Trees", "Water"):  # 18 fields of 100 px per class; the train split's thinned to 20 per field
        assert sampling["available"][name] % 100 == 0 and sampling["kept"][name] == sampling["available"][name] // 5
