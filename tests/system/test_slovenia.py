"""eo-learn's Slovenia patch (data/slovenia, real Sentinel-2 L1C): ingest, train from a label raster and from
polygons, predict, and the product-level contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from suelo.composite import cube_grid, open_cube
from suelo.errors import InputError
from suelo.legend import load_legend
from suelo.models.artifact import check_contract, load_artifact, save_artifact
from suelo.predict import predict_cube
from suelo.samples import load_samples
from suelo.settings import DEFAULT_BANDS, load_job
from suelo.train import TrainConfig, train_model
from tests.fixtures import DEMO_JOB, LEGENDS, REPO_ROOT

DATA = REPO_ROOT / "data" / "slovenia"
LEGEND = LEGENDS / "eolearn_lulc.yaml"
FILE_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
CLEAR_DATES = ("2015-07-11", "2015-08-30", "2015-09-09")
# Small and quick (the shared test machines): 20 epochs in batches of 256, a 250 m spatial split of the 1 km patch.
CONFIG = TrainConfig(bands=DEFAULT_BANDS, block_m=250, max_epochs=20, batch_size=256)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ingest(job_file: Path, out: Path) -> Path:
    from suelo.jobs import ingest

    job = load_job(job_file)
    job = job.model_copy(update={"output": job.output.model_copy(update={"dir": out})})
    return ingest(job).cube_path


@pytest.fixture(scope="module")
def cube_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ingest(REPO_ROOT / "workflows" / "slovenia.yaml", tmp_path_factory.mktemp("slovenia"))


@pytest.fixture(scope="module")
def trained(cube_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    """A model per label source, trained on the L1C cube."""
    legend, cube = load_legend(LEGEND), open_cube(cube_path)
    out = {}
    for name, labels in (("raster", DATA / "LULC.tif"), ("polygons", DATA / "LULC.gpkg")):
        samples = load_samples([labels], legend, cube=cube, class_column="LULC_ID", bands=CONFIG.bands)
        result = train_model(samples, legend, CONFIG, sources=[str(labels)])
        path = tmp_path_factory.mktemp("models") / f"{name}.pt"
        save_artifact(result.artifact, path)
        out[name] = (path, result)
    return out


def test_shipped_files() -> None:
    sizes = sum(p.stat().st_size for p in DATA.iterdir() if p.is_file())
    assert sizes < 3_000_000
    for date in ("2015-07-11", "2015-07-31", "2015-08-20", "2015-08-30", "2015-09-09"):
        with rasterio.open(DATA / f"S2L1C_{date}.tif") as src:
            assert src.descriptions == FILE_BANDS and src.dtypes[0] == "uint16" and src.nodata == 0
            assert src.crs.to_epsg() == 32633 and (src.height, src.width) == (101, 100)
    assert load_legend(LEGEND).codes == (1, 2, 3, 4, 8)


def test_ingest_l1c_cube_keeps_source_values(cube_path: Path) -> None:
    cube = open_cube(cube_path)
    grid = cube_grid(cube)
    assert [str(t)[:7] for t in cube["time"].values] == ["2015-07", "2015-08", "2015-09"]
    assert grid.crs.to_epsg() == 32633 and grid.resolution == (10.0, 10.0) and grid.shape == (102, 101)
    scenes = json.loads(cube.attrs["scenes"])
    assert [s["acquired"][:10] for s in scenes] == list(CLEAR_DATES) and {s["level"] for s in scenes} == {"L1C"}
    refl = cube["reflectance"].values
    bands = [FILE_BANDS.index(str(b)) for b in cube["band"].values]
    for t, date in enumerate(CLEAR_DATES):  # one clear scene a month: the median is the observation itself
        with rasterio.open(DATA / f"S2L1C_{date}.tif") as src:
            dn, transform = src.read(), src.transform
        for row, col in ((50, 50), (3, 97), (100, 1)):
            # nearest resampling: the source pixel holding the cube pixel's centre
            src_col, src_row = (int(np.floor(v)) for v in ~transform * (grid.transform * (col + 0.5, row + 0.5)))
            expected = dn[bands, src_row, src_col].astype(np.float32) / np.float32(10000)
            np.testing.assert_array_equal(refl[t, :, row, col].astype(np.float32), expected)
    # the source is 100 x 101 px of ~9.995 x 9.997 m: the snapped 10 m grid has one outside row and column
    assert int(cube["valid"].values[0].sum()) == 101 * 100


@pytest.mark.parametrize("name", ["raster", "polygons"])
def test_training_on_l1c(trained: dict, name: str) -> None:
    path, result = trained[name]
    art = load_artifact(path)
    assert art.contract["product_level"] == "L1C" and "top-of-atmosphere" in art.contract["reflectance"]
    assert art.contract["months"] == 3 and art.contract["bands"] == list(DEFAULT_BANDS)
    assert set(art.legend.codes) == set(result.train.class_counts()) <= {1, 2, 3, 4, 8}
    metrics = art.meta["metrics"]
    majority = max(result.val.class_counts().values()) / len(result.val)
    assert metrics["validation"]["overall_accuracy"] > majority
    assert 0 < metrics["random_forest_validation"]["overall_accuracy"] <= 1
    assert "macro_f1" in metrics["random_forest_validation"]


def test_predict_on_l1c_cube_and_level_mismatch(trained: dict, cube_path: Path, tmp_path: Path) -> None:
    art = load_artifact(trained["raster"][0])
    cube = open_cube(cube_path)
    pred = predict_cube(art, cube, device="cpu")
    valid = cube["valid"].values.any(axis=0)
    assert set(np.unique(pred["class_code"].values[valid])) <= {*art.legend.codes, 252}
    # the patch the model was trained on is mostly inside its training data (the gate rejects ~5% of such data)
    assert pred["outside_training"].values[valid].mean() < 0.2
    assert (pred["class_code"].values[~valid] == 0).all()
    np.testing.assert_allclose(pred["posterior"].values.sum(axis=0)[valid], 1, atol=1e-5)

    demo = open_cube(_ingest(DEMO_JOB, tmp_path))  # L2A
    with pytest.raises(InputError, match=r"made from L2A \(surface reflectance\) scenes but the model was trained"):
        check_contract(art, demo)
    # and the other way round: an L2A model (the shipped one) refuses the L1C cube, naming the level
    shipped = load_artifact(REPO_ROOT / "models" / "landcover_default.pt")
    with pytest.raises(InputError, match=r"made from L1C \(top-of-atmosphere reflectance\) scenes"):
        check_contract(shipped, cube)


@pytest.mark.slow
def test_cli_train_from_label_raster(cube_path: Path, tmp_path: Path) -> None:
    from suelo.cli import main

    model = tmp_path / "slovenia.pt"
    args = ["train", str(DATA / "LULC.tif"), "--cube", str(cube_path), "--legend", str(LEGEND)]
    result = CliRunner().invoke(main, [*args, "--block-m", "250", "-o", str(model)])
    assert result.exit_code == 0, result.output
    assert "validation OA" in result.output and "RandomForest OA" in result.output
    assert load_artifact(model).contract["product_level"] == "L1C"
