"""Minimum mapping units (sieve) and the dissolved GeoPackage layer of the urban atlas."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine

from suelo.grid import Grid, as_crs
from suelo.urban_atlas import (
    UA_LOW_CONFIDENCE,
    mmu_pixels,
    patch_polygons,
    sieve,
    urban_atlas_legend,
    urban_atlas_vector,
)

GRID = Grid(as_crs("EPSG:32631"), Affine(10, 0, 600000, 0, -10, 5650000), 40, 40)


def test_mmu_in_pixels() -> None:
    assert mmu_pixels(11100, 10) == 25  # 0.25 ha at 10 m
    assert mmu_pixels(14100, 10) == 25
    assert mmu_pixels(21000, 10) == 100  # 1 ha
    assert mmu_pixels(50000, (20, 20)) == 25


@pytest.mark.parametrize(("left_conf", "right_conf", "expected"), [(0.9, 0.6, 21000), (0.5, 0.8, 31000)])
def test_two_pixel_patch_merges_into_more_confident_neighbour(
    left_conf: float, right_conf: float, expected: int
) -> None:
    codes = np.full((20, 20), 21000, dtype=np.uint16)
    codes[:, 10:] = 31000
    conf = np.where(codes == 21000, left_conf, right_conf)
    codes[5, 9:11] = 11100  # 2 px on the border between the two classes
    conf[5, 9:11] = 0.95
    out = sieve(codes, conf, [11100, 21000, 31000], 10)
    assert (out[5, 9:11] == expected).all()
    rest = np.ones_like(out, dtype=bool)
    rest[5, 9:11] = False
    assert np.array_equal(out[rest], codes[rest])


def test_posterior_scores_choose_target() -> None:
    codes = np.full((20, 20), 21000, dtype=np.uint16)
    codes[:, 10:] = 31000
    codes[5, 9:11] = 11100
    conf = np.where(codes == 21000, 0.9, 0.6)  # confidence would pick 21000 ...
    post = np.zeros((3, 20, 20), np.float32)
    post[2, 5, 9:11] = 0.4  # ... but the model's second choice on the patch is 31000
    post[1, 5, 9:11] = 0.1
    out = sieve(codes, conf, [11100, 21000, 31000], 10, posteriors=post)
    assert (out[5, 9:11] == 31000).all()


def test_urban_and_other_mmu_thresholds() -> None:
    codes = np.full((40, 40), 23000, dtype=np.uint16)
    codes[2:7, 2:7] = 11100  # 25 px urban: kept
    codes[2:6, 10:16] = 11210  # 24 px urban: merged
    big = np.full((40, 40), 11100, dtype=np.uint16)
    big[20:30, 2:12] = 31000  # 100 px forest: kept
    big[20:29, 20:31] = 31000  # 99 px forest: merged
    codes[20:, :] = big[20:, :]
    conf = np.full(codes.shape, 0.7)
    out = sieve(codes, conf, [11100, 11210, 23000, 31000], 10)
    assert (out[2:7, 2:7] == 11100).all()
    assert (out[2:6, 10:16] == 23000).all()
    assert (out[20:30, 2:12] == 31000).all()
    assert (out[20:29, 20:31] != 31000).all()


def test_reason_codes_are_not_classes() -> None:
    codes = np.full((12, 12), UA_LOW_CONFIDENCE, dtype=np.uint16)
    codes[5:7, 5:7] = 11100  # small patch surrounded by reason codes only: nowhere to go, kept
    codes[0, 0] = 21000
    out = sieve(codes, np.full(codes.shape, 0.5), [11100, 21000], 10)
    assert np.array_equal(out, codes)


def test_iterates_until_stable() -> None:
    # a chain: 1 px of A inside a 3 px B patch inside a large C: both end up C
    codes = np.full((20, 20), 23000, dtype=np.uint16)
    codes[8, 8:11] = 31000
    codes[8, 9] = 11100
    out = sieve(codes, np.full(codes.shape, 0.5), [11100, 23000, 31000], 10)
    assert (out == 23000).all()


def _two_class_scene() -> tuple[np.ndarray, np.ndarray]:
    codes = np.full(GRID.shape, 21000, dtype=np.uint16)
    codes[:, 25:] = 11100
    codes[30:, 25:] = UA_LOW_CONFIDENCE
    codes[5:15, 5:15] = 31000  # 100 px forest island
    codes[30:35, 0:5] = 31000  # a second, separate 25 px forest patch (kept: sieve not applied)
    conf = np.where(codes == 11100, 80.0, 60.0)
    return codes, conf


def test_polygons_dissolved_by_class_with_areas(tmp_path) -> None:
    codes, conf = _two_class_scene()
    patches = patch_polygons(codes, conf, GRID, [11100, 21000, 31000])
    assert len(patches[patches.code == 31000]) == 2
    layer = urban_atlas_vector(codes, conf, GRID, [11100, 21000, 31000], sieve_first=False, crs=None)
    assert sorted(layer["code"]) == [11100, 21000, 31000]
    assert UA_LOW_CONFIDENCE not in set(layer["code"])  # reason codes are not polygons of a class
    for code in (11100, 21000, 31000):
        row = layer[layer.code == code].iloc[0]
        pixels = int((codes == code).sum())
        assert row["area_ha"] == pytest.approx(pixels * 0.01)
        assert row.geometry.area / 10_000 == pytest.approx(pixels * 0.01)
        assert row["mean_confidence"] == pytest.approx(conf[codes == code].mean())
    assert layer[layer.code == 31000].iloc[0].geometry.geom_type == "MultiPolygon"
    assert layer[layer.code == 11100].iloc[0]["class_name"].startswith("Continuous urban fabric")


def test_geopackage_in_epsg3035(tmp_path) -> None:
    codes, conf = _two_class_scene()
    path = tmp_path / "ua.gpkg"
    layer = urban_atlas_vector(codes, conf, GRID, [11100, 21000, 31000], path=path, crs="EPSG:3035")
    assert layer.crs.to_epsg() == 3035
    back = gpd.read_file(path, layer="urban_atlas")
    assert back.crs.to_epsg() == 3035
    assert list(back.columns) == ["code", "class_name", "area_ha", "mean_confidence", "geometry"]
    # the 25 px forest patch is below 1 ha: sieved away; areas still sum to the classified pixels
    assert 31000 in set(back["code"])
    assert back["area_ha"].sum() == pytest.approx((codes != UA_LOW_CONFIDENCE).sum() * 0.01)
    # LAEA is equal-area: geometry areas agree with the pixel areas to UTM scale distortion (< 0.1 %)
    assert np.allclose(back.geometry.area / 10_000, back["area_ha"], rtol=2e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["ua.gpkg"]  # no temporary file left behind


def test_include_reasons() -> None:
    codes, conf = _two_class_scene()
    layer = urban_atlas_vector(codes, conf, GRID, [11100, 21000, 31000], sieve_first=False, include_reasons=True,
                               crs=None)  # fmt: skip
    row = layer[layer.code == UA_LOW_CONFIDENCE].iloc[0]
    assert row["class_name"] == "Unclassified (low confidence)"  # the same name as in the map legend (suelo.reasons)


def test_legend_has_all_codes() -> None:
    legend = urban_atlas_legend()
    for code in (11100, 12210, 14100, 21000, 31000, 50000):
        assert code in legend.codes


def test_islands_below_the_mmu_become_unresolved() -> None:
    from suelo.urban_atlas import UA_LOW_CONFIDENCE, sieve

    codes = np.full((20, 20), UA_LOW_CONFIDENCE, dtype=np.uint16)
    codes[2:4, 2:4] = 11100  # 4 px urban island among unclassified pixels: below 25 px, nothing to merge into
    codes[10:20, 10:20] = 21000  # 100 px arable: exactly the 1 ha MMU, kept
    confidence = np.full(codes.shape, 50.0)
    kept = sieve(codes, confidence, [11100, 21000], 10.0)
    assert (kept[2:4, 2:4] == 11100).all()  # without `unresolved` the island stays
    cleaned = sieve(codes, confidence, [11100, 21000], 10.0, unresolved=UA_LOW_CONFIDENCE)
    assert (cleaned[2:4, 2:4] == UA_LOW_CONFIDENCE).all() and (cleaned[10:20, 10:20] == 21000).all()
