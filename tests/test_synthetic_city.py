"""The SYNTHETIC city generator: composite cube format, determinism, label/cube/polygon consistency, and a tiny
segmenter training run that learns on it."""

from __future__ import annotations

import numpy as np
import pytest

from suelo.composite import cube_grid
from suelo.models.segmenter import segmenter_features
from suelo.synthetic_city import BANDS, CLASSES, make_synthetic_city
from suelo.train_segmenter import (
    IGNORE_INDEX,
    SegmenterTrainConfig,
    chip_origins,
    codes_to_indices,
    rasterize_labels,
    spatial_split,
    train_segmenter,
    warp_label_raster,
)


def test_cube_format() -> None:
    city = make_synthetic_city(seed=1, shape=(48, 40))
    cube = city.cube
    assert cube["reflectance"].dims == ("time", "band", "y", "x")
    assert cube["reflectance"].dtype == np.float32 and cube["valid"].dtype == bool
    assert cube["clear_count"].dtype == np.uint8 and cube["n_clear"].dtype == np.uint16
    assert list(cube["band"].values) == list(BANDS) and cube.sizes["time"] == 12
    assert cube_grid(cube) == city.grid and city.grid.crs.to_epsg() == 32631
    assert np.allclose(cube["y"].values, city.grid.y_coords()) and np.allclose(cube["x"].values, city.grid.x_coords())
    refl, valid = cube["reflectance"].values, cube["valid"].values
    assert np.isnan(refl[:, 0][~valid]).all() and np.isfinite(refl.transpose(1, 0, 2, 3)[:, valid]).all()
    assert np.array_equal(cube["n_clear"].values, cube["clear_count"].values.sum(axis=0))
    assert 0 < valid.mean() < 1
    assert "SYNTHETIC" in cube.attrs["title"]


def test_deterministic() -> None:
    a, b = make_synthetic_city(seed=7, shape=(40, 40)), make_synthetic_city(seed=7, shape=(40, 40))
    assert np.array_equal(a.labels, b.labels)
    assert a.cube.identical(b.cube)
    c = make_synthetic_city(seed=8, shape=(40, 40))
    assert not np.array_equal(a.labels, c.labels)


def test_labels_polygons_and_spectra_consistent() -> None:
    city = make_synthetic_city(seed=2, shape=(96, 96))
    assert set(np.unique(city.labels)) <= set(CLASSES)
    assert np.array_equal(rasterize_labels(city.polygons, city.grid), city.labels)
    # polygons reprojected elsewhere and back still rasterize to (almost) the same labels
    there = rasterize_labels(city.polygons.to_crs("EPSG:3035"), city.grid)
    assert (there == city.labels).mean() > 0.97
    # spectra follow the classes: water dark in NIR, vegetation bright in NIR and with a summer NDVI peak
    refl = city.cube["reflectance"]
    nir = refl.sel(band="B08").median("time").values
    if (city.labels == 50000).any():
        assert np.nanmean(nir[city.labels == 50000]) < 0.05
    for code in (23000, 31000):
        if (city.labels == code).any():
            assert np.nanmean(nir[city.labels == code]) > 0.2


def test_label_raster_warp_and_indices() -> None:
    city = make_synthetic_city(seed=2, shape=(32, 32))
    same = warp_label_raster(city.labels, city.grid.transform, city.grid.crs, city.grid)
    assert np.array_equal(same, city.labels)
    idx = codes_to_indices(np.array([[11100, 99999], [0, 50000]]), [11100, 50000])
    assert idx.tolist() == [[0, IGNORE_INDEX], [IGNORE_INDEX, 1]]


def test_split_separates_train_and_validation() -> None:
    train, val = spatial_split((128, 128), 32, 0.25, 4, seed=0)
    assert not (train & val).any() and val.sum() == 4 * 32 * 32
    chip = 24
    for r, c in chip_origins(train, chip):
        assert train[r : r + chip, c : c + chip].all()  # a training chip never overlaps validation


@pytest.mark.slow
def test_tiny_training_learns() -> None:
    city = make_synthetic_city(seed=0, shape=(96, 96))
    feats = segmenter_features(city.cube)
    cfg = SegmenterTrainConfig(chip=32, batch_size=8, steps=120, eval_every=40, base_width=8, depth=2, block=32,
                               lr=5e-3)  # fmt: skip
    _, metrics = train_segmenter(feats, city.labels, CLASSES, config=cfg, seed=0)
    present = len(set(np.unique(city.labels).tolist()))
    assert metrics["overall_accuracy"] > 2.0 / present  # chance is about 1 / classes
    assert "iou" in next(iter(metrics["per_class"].values()))
    _, metrics2 = train_segmenter(feats, city.labels, CLASSES, config=cfg, seed=0)
    assert metrics2["overall_accuracy"] == metrics["overall_accuracy"]  # deterministic for a seed
