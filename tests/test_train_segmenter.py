"""``suelo train --model segmenter``: a tiny U-Net from polygons and from a label raster on a small synthetic city
cube (NetCDF), calibrated and certified on its validation blocks, with a report beside the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from suelo.cli import main
from suelo.composite import write_cube
from suelo.models.artifact import load_segmenter
from suelo.novelty import NoveltyGate
from suelo.synthetic_city import make_synthetic_city

# tiny and quick: 40 x 40 px, 16 px chips and blocks, a 2-level U-Net 4 channels wide, a few steps
TINY = ["--steps", "4", "--chip", "16", "--depth", "2", "--base-width", "4", "--guard", "2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("city")
    city = make_synthetic_city(seed=5, shape=(40, 40))
    write_cube(city.cube, folder / "cube.nc")
    city.polygons.to_file(folder / "labels.gpkg")
    labels = city.labels.astype(np.uint16)
    labels[:3, :3] = 777  # a code no legend has: ignored with a warning
    labels[-2:] = 0  # nodata
    profile = dict(driver="GTiff", height=40, width=40, count=1, dtype="uint16", nodata=0)
    with rasterio.open(folder / "labels.tif", "w", crs=city.grid.crs, transform=city.grid.transform, **profile) as dst:
        dst.write(labels, 1)
    unknown = city.polygons.assign(code_2018=99999)
    unknown.to_file(folder / "unknown.gpkg")
    return {"cube": folder / "cube.nc", "polygons": folder / "labels.gpkg", "raster": folder / "labels.tif",
            "unknown": folder / "unknown.gpkg", "codes": set(np.unique(city.labels).tolist()) - {0}}  # fmt: skip


def _train(labels: Path, cube: Path, model: Path, *extra: str) -> object:
    args = ["train", "--model", "segmenter", str(labels), "--cube", str(cube), "-o", str(model), *TINY, *extra]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("source", ["polygons", "raster"])
def test_train_segmenter_cli(city: dict, source: str, tmp_path: Path) -> None:
    model_path = tmp_path / f"seg_{source}.pt"
    result = _train(city[source], city["cube"], model_path)
    assert result.exit_code == 0, result.output
    model, extras = load_segmenter(model_path)
    assert set(extras["legend_codes"]) <= city["codes"] and len(extras["legend_codes"]) >= 2
    assert extras["legend_names"][0] and len(extras["legend_names"]) == len(extras["legend_codes"])
    assert extras["bands"] == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    assert len(extras["feature_names"]) == model.config.in_channels and extras["feature_names"][-1] == "presto_127"
    assert model.config.n_classes == len(extras["legend_codes"]) and model.config.depth == 2
    validation = extras["metrics"]["validation"]
    for key in ("overall_accuracy", "macro_f1", "kappa", "mean_iou", "confusion_matrix"):
        assert key in validation
    for values in validation["per_class"].values():
        assert {"precision", "recall", "f1", "iou", "support"} <= set(values) and 0 <= values["iou"] <= 1
    assert extras["calibration"]["method"] == "temperature" and extras["metrics"]["calibration"]["n"] > 0
    assert {"policy", "report"} <= set(extras["thresholds"])
    assert len(extras["validation_scores"]["top1"]) == extras["metrics"]["calibration"]["n"]
    assert extras["provenance"]["labels_kind"] == source and extras["provenance"]["train_config"]["steps"] == 4
    # the novelty gate: fitted on the labelled training pixels, calibrated on the same lattice as the confidence
    gate, novelty = extras["gate"], extras["novelty"]
    assert isinstance(gate, NoveltyGate) and model.novelty_gate is gate
    assert gate.whiten.shape == (model.config.in_channels, model.config.in_channels)
    assert novelty["features"] == "segmenter inputs: cube summaries + Presto embedding"
    assert novelty["rejection_rate"] == 0.05 and novelty == validation["novelty"]
    assert novelty["n_fit"] == validation["split"]["train_pixels"]  # fewer than GATE_MAX_PIXELS: all of them
    assert novelty["n_calibration"] == extras["metrics"]["calibration"]["n"]
    assert extras["metrics"]["summary"]["validation_outside_training"] == novelty["calibration_rejected"]
    assert f"{novelty['calibration_rejected']:.1%} of {novelty['n_calibration']} validation px outside" in result.output
    report = tmp_path / f"seg_{source}_report"
    for name in ("metrics.json", "confusion.png", "reliability.png", "risk_coverage.png"):
        assert (report / name).is_file()
    assert "mean_iou" in json.loads((report / "metrics.json").read_text())["validation"]
    if source == "raster":
        assert "9 pixels with codes not in urban_atlas_2018.yaml ignored: {777: 9}" in result.output
        assert extras["provenance"]["unknown_codes_ignored"] == {"777": 9}


def test_no_known_code_is_a_one_line_error(city: dict, tmp_path: Path) -> None:
    result = _train(city["unknown"], city["cube"], tmp_path / "seg.pt")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("suelo: error:")]
    assert len(lines) == 1 and "unknown.gpkg" in lines[0] and "no labelled pixel" in lines[0], result.output
    assert not (tmp_path / "seg.pt").exists()


def test_segmenter_needs_one_label_file_and_a_cube(city: dict, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--model", "segmenter", str(city["raster"]), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--cube" in result.output
