"""Map writers: COG layout, palette, overviews, tags, atomicity, QML, STAC, run report and shipped legends."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import dask.array as da
import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from suelo import write as write_mod
from suelo.grid import Grid
from suelo.legend import Legend, load_legend
from suelo.report import write_run_report
from suelo.threshold import LANDCOVER_REASONS, ReasonCodes, masking_report
from suelo.write import (
    URBAN_ATLAS_REASONS,
    ZERO_CLASS_REASONS,
    map_dtype,
    map_legend,
    reasons_for,
    write_class_map,
    write_confidence,
    write_count,
    write_map_set,
)
from tests.fixtures import LEGENDS

H, W = 1100, 1300  # > one 512 tile, so the COG has two overview levels


def grid(height: int = H, width: int = W) -> Grid:
    return Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5600000), height, width)


def checkerboard(a: int, b: int, dtype: str = "uint8") -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.where((yy + xx) % 2 == 0, a, b).astype(dtype)


@pytest.mark.parametrize(
    ("name", "n_classes", "dtype"),
    [
        ("worldcereal_landcover10.yaml", 10, "uint8"),
        ("esa_worldcover.yaml", 11, "uint8"),
        ("dynamic_world.yaml", 9, "uint8"),
        ("corine_land_cover.yaml", 44, "uint16"),
        ("urban_atlas_2018.yaml", 27, "uint16"),
    ],
)
def test_shipped_legends_load(name: str, n_classes: int, dtype: str) -> None:
    legend = load_legend(LEGENDS / name)
    assert len(legend) == n_classes
    reasons = reasons_for(legend)
    entries = map_legend(legend, reasons)  # raises on a collision
    assert len({e.code for e in entries}) == n_classes + 4  # 3 reason codes and nodata
    assert map_dtype(legend, reasons) == dtype


def test_official_codes() -> None:
    assert load_legend(LEGENDS / "esa_worldcover.yaml").codes == (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
    assert load_legend(LEGENDS / "dynamic_world.yaml").codes == tuple(range(9))
    clc = load_legend(LEGENDS / "corine_land_cover.yaml").codes
    assert (clc[0], clc[-1]) == (111, 523)
    ua = load_legend(LEGENDS / "urban_atlas_2018.yaml")
    assert (ua.codes[0], ua.codes[-1]) == (11100, 50000)
    assert ua.by_code(11100).color == "#800000" and ua.by_code(50000).color == "#80f2e6"


def test_reason_codes_per_legend() -> None:
    assert reasons_for(load_legend()) == LANDCOVER_REASONS
    assert reasons_for(load_legend(LEGENDS / "dynamic_world.yaml")) == ZERO_CLASS_REASONS  # 0 is water
    assert reasons_for(load_legend(LEGENDS / "urban_atlas_2018.yaml")) == URBAN_ATLAS_REASONS
    with pytest.raises(ValueError, match="collide"):
        map_legend(load_legend(LEGENDS / "dynamic_world.yaml"), LANDCOVER_REASONS)
    entries = map_legend(load_legend(), LANDCOVER_REASONS)
    assert entries[-4:] == [
        (252, "Not mapped (outside the model's training data)", "#c71585"),
        (253, "Not classified (too few clear observations)", "#183048"),
        (254, "Unclassified (low confidence)", "#7b6f8d"),
        (0, "No data", None),
    ]


def test_class_map_cog(tmp_path: Path) -> None:
    legend = load_legend()
    codes = checkerboard(1, 5)
    codes[:40] = 0
    codes[40:80] = 254
    out = write_class_map(tmp_path / "lc.tif", codes, grid(), legend, tags={"model": "m1", "thresholds": {"top1": 0.7}})
    assert out.dtype == "uint8" and out.counts[0] == 40 * W
    valid, errors, _ = cog_validate(str(out.path), quiet=True)
    assert valid, errors
    with rasterio.open(out.path) as src:
        assert src.dtypes[0] == "uint8" and src.nodata == 0
        assert src.block_shapes[0] == (512, 512)
        assert src.compression.name.lower() == "deflate"
        assert src.overviews(1) == [2, 4]
        cmap = src.colormap(1)
        for c in legend:
            assert cmap[c.code][:3] == tuple(int(c.color[i : i + 2], 16) for i in (1, 3, 5))
        assert cmap[253][:3] == (0x18, 0x30, 0x48) and cmap[254][:3] == (0x7B, 0x6F, 0x8D)
        assert src.descriptions == ("land cover class",)
        tags = src.tags()
        assert tags["model"] == "m1" and json.loads(tags["thresholds"]) == {"top1": 0.7}
        assert "suelo" in json.loads(tags["SOFTWARE_VERSIONS"])
        assert json.loads(tags["REASON_CODES"])["low_confidence"] == 254
        assert tags["OVERVIEW_RESAMPLING"] == "MODE"
        # Every overview pixel is a code: a checkerboard of 1 and 5 would average to 3 (a different class).
        for factor in (2, 4):
            ov = src.read(1, out_shape=(H // factor, W // factor))
            assert set(np.unique(ov)) <= {0, 1, 5, 254}
    assert (tmp_path / "lc.tif.aux.xml").exists()
    pam = ET.parse(tmp_path / "lc.tif.aux.xml").getroot()
    names = [c.text or "" for c in pam.iter("Category")]
    assert names[1] == "Temporary crops" and names[254] == "Unclassified (low confidence)"
    rows = [[f.text for f in row] for row in pam.iter("Row")]
    assert ["5", str(int((codes == 5).sum())), "Trees", "27", "120", "55", "255"] in rows


def test_urban_atlas_uint16(tmp_path: Path) -> None:
    legend = load_legend(LEGENDS / "urban_atlas_2018.yaml")
    codes = checkerboard(11100, 50000, "uint16")
    codes[:30] = URBAN_ATLAS_REASONS.low_confidence
    out = write_class_map(tmp_path / "ua.tif", da.from_array(codes, chunks=(300, 400)), grid(), legend)
    assert cog_validate(str(out.path), quiet=True)[0]
    with rasterio.open(out.path) as src:
        assert src.dtypes[0] == "uint16" and src.nodata == 0
        assert src.colormap(1)[11100][:3] == (128, 0, 0)
        assert src.colormap(1)[65535][:3] == (0x7B, 0x6F, 0x8D)  # low confidence: lavender grey
        np.testing.assert_array_equal(src.read(1), codes)
        assert set(np.unique(src.read(1, out_shape=(H // 4, W // 4)))) <= {11100, 50000, 65535}
    pam_path = tmp_path / "ua.tif.aux.xml"
    assert "<F>Water</F>" in pam_path.read_text()
    assert pam_path.stat().st_size < 800_000  # runs of unnamed values on one line each
    names = [c.text or "" for c in ET.parse(pam_path).getroot().iter("Category")]
    assert len(names) == 65536 and names[50000] == "Water" and names[11100] == legend.by_code(11100).name
    assert names[65535] == "Unclassified (low confidence)" and names[11101] == ""


def test_dask_and_xarray_inputs_match_numpy(tmp_path: Path) -> None:
    codes = checkerboard(2, 7)
    lazy = xr.DataArray(da.from_array(codes, chunks=(256, 700)), dims=("y", "x"))
    a = write_class_map(tmp_path / "a.tif", codes, grid(), load_legend())
    b = write_class_map(tmp_path / "b.tif", lazy, grid(), load_legend())
    with rasterio.open(a.path) as sa, rasterio.open(b.path) as sb:
        np.testing.assert_array_equal(sa.read(1), sb.read(1))
    assert a.counts == b.counts


def test_invalid_codes_leave_nothing(tmp_path: Path) -> None:
    codes = checkerboard(1, 5)
    codes[500, 500] = 42  # neither class nor reason
    with pytest.raises(ValueError, match="neither legend nor reason"):
        write_class_map(tmp_path / "lc.tif", codes, grid(), load_legend())
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "lc.tif"
    write_class_map(target, checkerboard(1, 5), grid(), load_legend())
    before = target.read_bytes()

    def broken_copy(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(write_mod.rasterio.shutil, "copy", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        write_class_map(target, checkerboard(2, 3), grid(), load_legend())
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lc.tif", "lc.tif.aux.xml"]


def test_confidence_and_count(tmp_path: Path) -> None:
    conf = np.full((H, W), 80, np.uint8)
    conf[:10] = 255
    n = np.full((H, W), 12.0)
    n[:10] = np.nan
    c = write_confidence(tmp_path / "c.tif", conf, grid(), tags={"model": "m1"})
    k = write_count(tmp_path / "n.tif", n, grid())
    for path, dtype, nodata in ((c.path, "uint8", 255), (k.path, "uint16", 65535)):
        assert cog_validate(str(path), quiet=True)[0]
        with rasterio.open(path) as src:
            assert src.dtypes[0] == dtype and src.nodata == nodata and src.overviews(1) == [2, 4]
            assert src.read(1)[0, 0] == nodata and src.read(1)[20, 0] in (80, 12)
    assert k.max_value == 12
    with pytest.raises(ValueError, match="confidence"):
        write_confidence(tmp_path / "bad.tif", np.full((H, W), 101, np.uint8), grid())


def test_qml_content(tmp_path: Path) -> None:
    legend = load_legend()
    m = write_map_set(
        tmp_path,
        "lc",
        checkerboard(1, 5),
        grid(),
        legend,
        ("2021-01-01", "2021-12-31"),
        confidence=np.full((H, W), 50, np.uint8),
        n_clear=np.full((H, W), 9),
    )
    root = ET.parse(tmp_path / "lc.qml").getroot()
    renderer = root.find("./pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted"
    entries = [(int(e.get("value")), e.get("color"), e.get("label"), e.get("alpha")) for e in root.iter("paletteEntry")]
    expected = [(c.code, c.color, c.name, "255") for c in legend]
    expected += [(252, "#c71585", "Not mapped (outside the model's training data)", "255")]
    expected += [(253, "#183048", "Not classified (too few clear observations)", "255")]
    expected += [(254, "#7b6f8d", "Unclassified (low confidence)", "255")]
    assert entries == expected  # nodata (0) deliberately absent: transparent
    for qml, top in ((tmp_path / "lc_confidence.qml", "100"), (tmp_path / "lc_nclear.qml", "9")):
        r = ET.parse(qml).getroot().find("./pipe/rasterrenderer")
        assert r.get("type") == "singlebandpseudocolor" and r.get("classificationMax") == top
    assert {p.name for p in m.files} == {
        "lc.tif",
        "lc.tif.aux.xml",
        "lc.qml",
        "lc.json",
        "lc_confidence.tif",
        "lc_confidence.qml",
        "lc_nclear.tif",
        "lc_nclear.qml",
    }


def test_stac_item_round_trip(tmp_path: Path) -> None:
    legend = load_legend(LEGENDS / "esa_worldcover.yaml")
    m = write_map_set(
        tmp_path,
        "wc",
        checkerboard(10, 40),
        grid(),
        legend,
        ("2021-01-01", "2021-12-31"),
        confidence=np.full((H, W), 50, np.uint8),
        n_clear=np.full((H, W), 9),
        tags={"model": "m1"},
        inputs=["https://example.com/S2A_31UFS_20210601.json"],
    )
    item = pystac.Item.from_file(str(m.item))  # pystac migrates projection v1.2.0 (proj:epsg) to v2.0.0
    d = item.to_dict()
    assert d["properties"]["proj:code"] == "EPSG:32631"
    assert d["assets"]["data"]["proj:shape"] == [H, W]
    assert d["assets"]["data"]["proj:transform"] == [10.0, 0.0, 600000.0, 0.0, -10.0, 5600000.0]
    assert d["properties"]["start_datetime"] == "2021-01-01T00:00:00Z" and d["properties"]["suelo:model"] == "m1"
    assert d["properties"]["end_datetime"] == "2021-12-31T23:59:59.999999Z"
    assert d["assets"]["data"]["raster:bands"][0]["data_type"] == "uint8"
    classes = {c["value"]: c for c in d["assets"]["data"]["classification:classes"]}
    assert classes[10]["color_hint"] == "006400" and classes[10]["title"] == "Tree cover"
    assert classes[10]["name"] == "tree_cover" and classes[0]["nodata"] is True
    assert classes[254]["color_hint"] == "7B6F8D"
    assert classes[10]["count"] == (checkerboard(10, 40) == 10).sum()
    assert {"data", "style", "attribute_table", "confidence", "nclear"} <= set(item.assets)
    for asset in item.assets.values():
        assert Path(asset.get_absolute_href()).exists()
    assert [link.href for link in item.links if link.rel == "derived_from"] == [
        "https://example.com/S2A_31UFS_20210601.json"
    ]
    lon, lat = np.array(d["geometry"]["coordinates"][0]).T
    assert 4 < lon.min() < lon.max() < 5 and 50 < lat.min() < lat.max() < 51


def test_run_report(tmp_path: Path) -> None:
    legend = load_legend()
    codes = checkerboard(1, 5)
    codes[:100] = 254
    m = write_map_set(tmp_path / "landcover", "lc", codes, grid(), legend, ("2021-01-01", "2021-12-31"))
    predicted = checkerboard(1, 5)
    mask = masking_report(codes, predicted, np.array(legend.codes), list(legend.names), LANDCOVER_REASONS)
    files = write_run_report(
        tmp_path / "report", [m], {"lc": mask}, {"overall_accuracy": 0.91, "per_class": {"trees": 0.95}}, {"a": 1}
    )
    png = tmp_path / "report" / "quicklooks" / "landcover_lc.png"  # product folder + map name: maps share names
    assert files["html"].exists() and files["json"].exists() and png.exists()
    from PIL import Image

    with Image.open(png) as img:
        assert max(img.size) <= 512
        colors = {c for _, c in img.convert("RGBA").getcolors(maxcolors=1 << 16)}
    assert colors <= {(0xE6, 0xC6, 0x19, 255), (0x1B, 0x78, 0x37, 255), (0x7B, 0x6F, 0x8D, 255)}
    html = files["html"].read_text()
    assert (
        "overall_accuracy" in html and "Unclassified (low confidence)" in html and "quicklooks/landcover_lc.png" in html
    )
    report = json.loads(files["json"].read_text())
    assert report["maps"][0]["masking"]["low_confidence_pct"] > 0
    assert report["model_metrics"]["overall_accuracy"] == 0.91


def test_user_legend(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "classes:\n  - {code: 3, name: Forest, color: '#00aa00'}\n  - {code: 7, name: Other, color: '#aaaaaa'}\n"
    )
    legend = load_legend(path)
    out = write_class_map(tmp_path / "m.tif", np.full((20, 30), 7, np.uint8), grid(20, 30), legend)
    assert cog_validate(str(out.path), quiet=True)[0]
    custom = ReasonCodes(0, 200, 201)
    out = write_class_map(tmp_path / "n.tif", np.full((20, 30), 201, np.uint8), grid(20, 30), legend, custom)
    with rasterio.open(out.path) as src:
        assert src.colormap(1)[201][:3] == (0x7B, 0x6F, 0x8D)
    assert isinstance(legend, Legend)
