"""Minimum mapping units (sieve) and the urban atlas GeoPackage: one feature per patch, styled by class."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from contextlib import closing
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from suelo.grid import Grid, as_crs
from suelo.reasons import REASON_STYLE
from suelo.urban_atlas import (
    UA_FIELDS,
    UA_LOW_CONFIDENCE,
    UA_NODATA,
    UA_STYLE_NAME,
    mmu_pixels,
    patch_polygons,
    percent_confidence,
    sieve,
    urban_atlas_legend,
    urban_atlas_qml,
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


def test_one_feature_per_patch_with_areas_and_confidence() -> None:
    codes, conf = _two_class_scene()
    patches = patch_polygons(codes, conf, GRID, [11100, 21000, 31000])
    assert len(patches[patches.code == 31000]) == 2
    layer = urban_atlas_vector(codes, conf, GRID, [11100, 21000, 31000], sieve_first=False, crs=None)
    assert list(layer.columns) == [*UA_FIELDS, "geometry"]
    # 21000 (one patch with two forest holes), 11100, and the two forest patches; no reason-code polygons
    assert sorted(layer["code"]) == [11100, 21000, 31000, 31000]
    assert UA_LOW_CONFIDENCE not in set(layer["code"])
    assert list(layer["patch_id"]) == [1, 2, 3, 4]  # class order (as given), then raster order
    assert list(layer["code"]) == [11100, 21000, 31000, 31000]
    assert set(layer.geom_type) == {"Polygon"}
    forest = layer[layer.code == 31000]
    assert sorted(forest["area_ha"]) == pytest.approx([0.25, 1.0])  # the 25 px and the 100 px patch
    arable = layer[layer.code == 21000].iloc[0]
    assert len(arable.geometry.interiors) == 1  # the forest island is a hole; the edge patch only notches it
    rows, cols = np.indices(codes.shape)
    xs, ys = GRID.transform.c + (cols + 0.5) * GRID.transform.a, GRID.transform.f + (rows + 0.5) * GRID.transform.e
    for row in layer.itertuples():
        mask = shapely.contains_xy(row.geometry, xs, ys)  # the pixels whose centres the polygon holds
        assert set(np.unique(codes[mask])) == {row.code}
        assert row.area_ha == pytest.approx(mask.sum() * 0.01)
        assert row.geometry.area / 10_000 == pytest.approx(row.area_ha)
        assert row.confidence == pytest.approx(conf[mask].mean())
    assert layer[layer.code == 11100].iloc[0]["class_name"].startswith("Continuous urban fabric")
    assert layer[layer.code == 11100].iloc[0]["confidence"] == pytest.approx(80.0)


def test_confidence_is_percent_from_fractions_or_percent() -> None:
    codes, conf = _two_class_scene()
    as_percent = urban_atlas_vector(codes, conf, GRID, [11100, 21000, 31000], sieve_first=False, crs=None)
    as_fraction = urban_atlas_vector(codes, conf / 100.0, GRID, [11100, 21000, 31000], sieve_first=False, crs=None)
    as_band = urban_atlas_vector(codes, conf.astype(np.uint8), GRID, [11100, 21000, 31000], sieve_first=False, crs=None)
    for layer in (as_fraction, as_band):
        np.testing.assert_allclose(layer["confidence"], as_percent["confidence"])
    assert as_percent["confidence"].between(0, 100).all() and as_percent["confidence"].max() == pytest.approx(80)
    band = np.array([[0, 50, 100, 255]], dtype=np.uint8)  # the confidence band: 255 = none
    np.testing.assert_array_equal(percent_confidence(band), [[0.0, 50.0, 100.0, np.nan]])
    np.testing.assert_array_equal(percent_confidence(np.array([0.0, 0.5, np.nan])), [0.0, 50.0, np.nan])
    np.testing.assert_array_equal(percent_confidence(np.array([0.5, 80.0])), [0.5, 80.0])  # percent already


def test_patch_without_confidence_has_none() -> None:
    codes = np.full((10, 10), 21000, dtype=np.uint16)
    conf = np.full(codes.shape, 255, dtype=np.uint8)  # no confidence anywhere
    conf[0, :5] = 40
    layer = urban_atlas_vector(codes, conf, GRID, [21000], sieve_first=False, crs=None)
    assert layer.iloc[0]["confidence"] == pytest.approx(40.0)  # the mean over the pixels that have one
    layer = urban_atlas_vector(codes, np.full(codes.shape, 255, np.uint8), GRID, [21000], sieve_first=False, crs=None)
    assert np.isnan(layer.iloc[0]["confidence"])


def _styles(path: Path) -> list[tuple[str, str, str, int]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT f_table_name, styleName, styleQML, useAsDefault FROM layer_styles").fetchall()


def test_geopackage_in_epsg3035(tmp_path: Path) -> None:
    codes, conf = _two_class_scene()
    path = tmp_path / "ua.gpkg"
    layer = urban_atlas_vector(codes, conf / 100.0, GRID, [11100, 21000, 31000], path=path, crs="EPSG:3035")
    assert layer.crs.to_epsg() == 3035
    back = gpd.read_file(path, layer="urban_atlas")
    assert back.crs.to_epsg() == 3035
    assert list(back.columns) == ["patch_id", "code", "class_name", "area_ha", "confidence", "geometry"]
    assert set(back.geom_type) == {"Polygon"}
    # the 25 px forest patch is below 1 ha: sieved away; areas still sum to the classified pixels
    assert 31000 in set(back["code"]) and len(back[back.code == 31000]) == 1
    assert back["area_ha"].sum() == pytest.approx((codes != UA_LOW_CONFIDENCE).sum() * 0.01)
    assert back["confidence"].between(50, 100).all()  # percent, though the confidence came as fractions
    # LAEA is equal-area: geometry areas agree with the pixel areas to UTM scale distortion (< 0.1 %)
    assert np.allclose(back.geometry.area / 10_000, back["area_ha"], rtol=2e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["ua.gpkg"]  # no temporary file left behind
    ((table, name, qml, default),) = _styles(path)
    assert (table, name, default) == ("urban_atlas", UA_STYLE_NAME, 1)
    assert qml == urban_atlas_qml([11100, 21000, 31000])


def test_style_is_categorized_by_code_with_the_legend() -> None:
    legend = urban_atlas_legend()
    codes = [11100, 12210, 31000]
    root = ET.fromstring(urban_atlas_qml(codes))
    renderer = root.find("renderer-v2")
    assert renderer is not None and (renderer.get("type"), renderer.get("attr")) == ("categorizedSymbol", "code")
    categories = [(c.get("value"), c.get("symbol"), c.get("label")) for c in renderer.iter("category")]
    assert categories == [(str(code), str(i), legend.by_code(code).name) for i, code in enumerate(codes)]
    for i, code in enumerate(codes):
        symbol = renderer.find(f"./symbols/symbol[@name='{i}']")
        assert symbol is not None and symbol.get("type") == "fill"
        props = {p.get("k"): p.get("v") for p in symbol.iter("prop")}
        colour = legend.by_code(code).color
        rgb = ",".join(str(int(colour[j : j + 2], 16)) for j in (1, 3, 5))
        assert props["color"] == f"{rgb},255" and props["style"] == "solid"
    assert root.findtext("layerGeometryType") == "2"
    assert {a.get("field") for a in root.iter("alias")} == set(UA_FIELDS)


def test_style_with_reasons() -> None:
    root = ET.fromstring(urban_atlas_qml([11100], include_reasons=True))
    labels = {c.get("value"): c.get("label") for c in root.iter("category")}
    assert labels[str(UA_LOW_CONFIDENCE)] == REASON_STYLE["low_confidence"][0]
    nodata = [c.get("symbol") for c in root.iter("category") if c.get("value") == str(UA_NODATA)]
    symbol = root.find(f"./renderer-v2/symbols/symbol[@name='{nodata[0]}']")
    assert symbol is not None
    assert {p.get("k"): p.get("v") for p in symbol.iter("prop")}["color"] == "0,0,0,0"  # nodata: transparent


def test_empty_layer_is_a_styled_polygon_layer(tmp_path: Path) -> None:
    """Nothing mapped (every pixel a reason code, as the demo's segmenter gives): an empty layer, still styled."""
    import pyogrio

    codes = np.full((10, 10), 65533, dtype=np.uint16)
    path = tmp_path / "empty.gpkg"
    layer = urban_atlas_vector(codes, np.zeros(codes.shape), GRID, [11100, 21000], path=path)
    assert layer.empty and list(layer.columns) == [*UA_FIELDS, "geometry"]
    info = pyogrio.read_info(path, layer="urban_atlas")
    assert info["features"] == 0 and info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == list(UA_FIELDS)
    assert len(_styles(path)) == 1


def test_include_reasons() -> None:
    codes, conf = _two_class_scene()
    layer = urban_atlas_vector(codes, conf, GRID, [11100, 21000, 31000], sieve_first=False, include_reasons=True,
                               crs=None)  # fmt: skip
    row = layer[layer.code == UA_LOW_CONFIDENCE].iloc[0]
    assert row["class_name"] == "Unclassified (low confidence)"  # the same name as in the map legend (suelo.reasons)
    assert row["area_ha"] == pytest.approx((codes == UA_LOW_CONFIDENCE).sum() * 0.01)
    assert list(layer["patch_id"]) == list(range(1, len(layer) + 1))


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
