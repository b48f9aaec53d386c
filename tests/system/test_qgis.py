"""The outputs in real QGIS: styles load from the .qml beside each raster and a render shows the legend colors.

PyQGIS lives in the system python3 (python3-qgis), not in the virtualenv, so tests/system/qgis_check.py runs there in a
subprocess and prints JSON. Skipped where ``/usr/bin/python3 -c "import qgis.core"`` fails.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from suelo.grid import Grid
from suelo.legend import load_legend
from suelo.write import hex_to_rgba, write_map_set
from tests.fixtures import DEMO_JOB, LEGENDS
from tests.fixtures.runs import SYSTEM_PYTHON, qgis_available

HELPER = Path(__file__).resolve().parent / "qgis_check.py"
BAND = 24  # columns per value: one vertical stripe per map value
ROWS = 600  # > 512, so the rasters have overviews too


pytestmark = [
    pytest.mark.qgis,
    pytest.mark.skipif(not qgis_available(), reason="PyQGIS not importable by /usr/bin/python3"),
]


def run_qgis(specs: list[dict], tmp_path: Path) -> dict:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(specs))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("PYTHONPATH", None)  # the venv's packages must not shadow the system ones
    done = subprocess.run(
        [SYSTEM_PYTHON, str(HELPER), str(spec_file)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def stripes(codes: list[int], dtype: str) -> np.ndarray:
    """One vertical stripe of BAND columns per code."""
    return np.repeat(np.asarray(codes, dtype=dtype), BAND)[None, :].repeat(ROWS, axis=0)


@pytest.mark.parametrize("legend_file", ["worldcereal_landcover10.yaml", "urban_atlas_2018.yaml", "dynamic_world.yaml"])
def test_class_maps_in_qgis(legend_file: str, tmp_path: Path) -> None:
    legend = load_legend(LEGENDS / legend_file)
    out = tmp_path / "maps"
    # Write with the map writer first to learn the entries (classes + reason codes, nodata last).
    width = (len(legend) + 4) * BAND  # classes, 3 reason codes and nodata
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5600000), ROWS, width)
    from suelo.write import map_dtype, map_legend, reasons_for

    reasons = reasons_for(legend)
    entries = map_legend(legend, reasons)
    codes = stripes([e.code for e in entries], map_dtype(legend, reasons))
    conf = np.tile(np.linspace(0, 100, width).round().astype(np.uint8), (ROWS, 1))
    conf[:, -BAND:] = 255  # no confidence where the map is nodata
    n_clear = np.full((ROWS, width), 10)
    n_clear[:, :BAND] = 0
    m = write_map_set(out, "map", codes, grid, legend, ("2021-01-01", "2021-12-31"), confidence=conf, n_clear=n_clear)
    samples = [[ROWS // 2, i * BAND + BAND // 2] for i in range(len(entries))]
    report = run_qgis(
        [
            {"path": str(m.classes.path), "samples": samples},
            {"path": str(m.confidence.path), "samples": [[10, 0], [10, width - BAND - 1], [10, width - 1]]},
            {"path": str(m.count.path), "samples": [[10, 0], [10, width - 1]]},
        ],
        tmp_path,
    )
    classes, confidence, count = report["layers"]

    # Style loaded by QGIS itself from map.qml (its default style): paletted, every entry but nodata.
    assert classes["valid"] and classes["renderer"] == "paletted"
    assert [(int(v), c, label) for v, c, label in classes["classes"]] == [
        (e.code, e.color, e.name) for e in entries if e.color is not None
    ]
    # The render shows each legend color at its stripe, and nothing at nodata.
    for (row, col, rgba), entry in zip(classes["samples"], entries, strict=True):
        assert tuple(rgba) == hex_to_rgba(entry.color), (row, col, entry)
    assert classes["samples"][-1][2][3] == 0  # nodata transparent

    # What GDAL (QGIS' GDAL, not rasterio's) reads from the COG and its PAM side file.
    g = classes["gdal"]
    assert g["layout"] == "COG" and g["overviews"] == 1 and g["nodata"] == reasons.nodata
    assert g["dtype"] == ("Byte" if m.classes.dtype == "uint8" else "UInt16")
    for e in entries:
        if e.color is not None:
            assert tuple(g["color_table"][str(e.code)][:3]) == hex_to_rgba(e.color)[:3]
    rat = {int(r["Value"]): r for r in g["rat"]}
    assert {code: r["Class_Name"] for code, r in rat.items()} == {e.code: e.name for e in entries}
    assert int(rat[entries[0].code]["Count"]) == ROWS * BAND
    if m.classes.dtype == "uint8":
        assert g["category_names"][entries[0].code] == entries[0].name
        assert g["category_names"][reasons.low_confidence] == "Unclassified (low confidence)"
        assert g["category_names"][reasons.outside_training] == "Not mapped (outside the model's training data)"
    assert json.loads(g["metadata"]["LEGEND"])[0]["name"] == entries[0].name

    # Confidence and count: pseudocolor ramps from their own .qml, nodata transparent.
    assert confidence["renderer"] == "singlebandpseudocolor" and confidence["min_max"] == [0.0, 100.0]
    ramp = confidence["ramp"]
    assert tuple(confidence["samples"][0][2]) == hex_to_rgba(ramp[0][1])  # confidence 0 -> first ramp color
    assert confidence["samples"][1][2][3] == 255 and confidence["samples"][2][2][3] == 0
    assert count["renderer"] == "singlebandpseudocolor" and count["min_max"] == [0.0, 10.0]
    assert tuple(count["samples"][0][2]) == hex_to_rgba(count["ramp"][0][1])
    assert tuple(count["samples"][1][2]) == hex_to_rgba(count["ramp"][-1][1])


def test_demo_land_cover_map_in_qgis(tmp_path: Path) -> None:
    """The map `make demo` writes: QGIS styles it from its .qml and renders every sampled pixel in its legend color."""
    import rasterio
    from click.testing import CliRunner

    from suelo.cli import main

    demo = DEMO_JOB
    result = CliRunner().invoke(main, ["run", str(demo), "-o", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    path = tmp_path / "demo" / "landcover" / "demo-belgium.tif"
    with rasterio.open(path) as src:
        codes = src.read(1)
    rng = np.random.default_rng(0)
    samples = [[int(r), int(c)] for r, c in zip(rng.integers(0, 100, 40), rng.integers(0, 100, 40), strict=True)]
    report = run_qgis([{"path": str(path), "samples": samples}], tmp_path)
    layer = report["layers"][0]
    assert layer["valid"] and layer["renderer"] == "paletted" and layer["render_size"] == [100, 100]
    colors = {int(value): color for value, color, _label in layer["classes"]}
    labels = {int(value): label for value, _color, label in layer["classes"]}
    assert labels[254] == "Unclassified (low confidence)" and labels[1] == "Temporary crops"
    for row, col, rgba in layer["samples"]:
        assert tuple(rgba) == hex_to_rgba(colors[int(codes[row, col])]), (row, col, codes[row, col])


def qgis_version(report: dict[str, Any]) -> tuple[int, int]:
    major, minor = str(report["qgis"]).split("-")[0].split(".")[:2]
    return int(major), int(minor)


@pytest.mark.parametrize("legend_file", ["worldcereal_landcover10.yaml", "urban_atlas_2018.yaml"])
def test_class_maps_without_their_qml_in_qgis(legend_file: str, tmp_path: Path) -> None:
    """The .qml deleted: what QGIS builds by itself from the COG and its .tif.aux.xml (the PAM side file).

    QGIS 3.22's default paletted style has one class per colour-table entry (256 for uint8, 65,536 for uint16),
    named from the PAM's category names, so every legend class and reason shows its name. QGIS 3.30 and later build
    it from the RAT: only the legend's classes, by name. Pinned here so a change in either is seen.
    """
    legend = load_legend(LEGENDS / legend_file)
    from suelo.write import map_dtype, map_legend, reasons_for

    reasons = reasons_for(legend)
    entries = map_legend(legend, reasons)
    dtype = map_dtype(legend, reasons)
    width = len(entries) * BAND
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5600000), ROWS, width)
    codes = stripes([e.code for e in entries], dtype)
    m = write_map_set(tmp_path / "maps", "map", codes, grid, legend, ("2021-01-01", "2021-12-31"))
    m.classes.path.with_suffix(".qml").unlink()
    styled = [e for e in entries if e.color is not None]
    report = run_qgis([{"path": str(m.classes.path), "classes_at": [e.code for e in entries]}], tmp_path)
    layer = report["layers"][0]
    assert layer["valid"] and layer["renderer"] == "paletted"
    classes = {int(value): (color, label) for value, color, label in layer["classes"]}
    rat = {int(row["Value"]): row for row in layer["gdal"]["rat"]}
    # GDAL (QGIS' own) reads the RAT: every legend class and reason by name and colour, for both dtypes
    assert {code: row["Class_Name"] for code, row in rat.items()} == {e.code: e.name for e in entries}
    for e in styled:
        row = rat[e.code]
        assert (int(row["Red"]), int(row["Green"]), int(row["Blue"])) == hex_to_rgba(e.color)[:3]
        assert classes[e.code][0] == e.color  # the palette: the legend's colours either way
    names = {e.code: e.name for e in entries}
    assert {code: layer["gdal"]["category_names"][code] for code in names} == names
    if qgis_version(report) < (3, 30):
        assert layer["class_count"] == layer["legend_count"] == (256 if dtype == "uint8" else 65536)
    else:  # the RAT is QGIS' first choice: only the legend's classes
        assert layer["class_count"] == len(rat)
    assert {code: classes[code][1] for code in classes} == names


def test_urban_atlas_geopackage_in_qgis(tmp_path: Path) -> None:
    """The polygons open styled from the style stored in the GeoPackage: by code, in the legend's colours and names."""
    import geopandas as gpd

    from suelo.urban_atlas import UA_ALIASES, UA_FIELDS, UA_LOW_CONFIDENCE, urban_atlas_legend, urban_atlas_vector

    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5650000), 60, 60)
    codes = np.full(grid.shape, 21000, dtype=np.uint16)
    codes[:, 30:] = 11100
    codes[10:25, 5:20] = 31000  # a forest island: a hole in the arable patch
    codes[40:, 0:10] = 31000  # a second forest patch
    codes[45:, 40:] = UA_LOW_CONFIDENCE  # not a class: no polygon
    confidence = np.where(codes == 11100, 0.9, 0.6)
    class_codes = [11100, 12210, 21000, 31000]  # 12210 (roads) has no patch: still in the style's legend
    path = tmp_path / "ua.gpkg"
    layer = urban_atlas_vector(codes, confidence, grid, class_codes, path=path, crs="EPSG:3035")
    back = gpd.read_file(path, layer="urban_atlas")
    inside = [back.geometry.iloc[i].representative_point() for i in range(len(back))]
    points = [[p.x, p.y] for p in inside]
    report = run_qgis([{"vector": str(path), "layer": "urban_atlas", "points": points}], tmp_path)
    found = report["layers"][0]
    assert found["valid"] and found["geometry"] == "Polygon" and found["crs"] == "EPSG:3035"
    assert found["features"] == len(layer) == 4  # one feature per patch: arable, urban, two forests
    assert found["fields"] == ["fid", *UA_FIELDS]
    assert {f: found["aliases"][f] for f in UA_FIELDS} == UA_ALIASES
    assert found["styles"] == ["suelo urban atlas"]
    # the stored style was applied by QGIS itself, as the layer's default
    assert found["renderer"] == "categorizedSymbol" and found["attribute"] == "code"
    legend = urban_atlas_legend()
    expected = [[str(code), "#ff" + legend.by_code(code).color[1:], legend.by_code(code).name] for code in class_codes]
    assert found["categories"] == expected
    for (_x, _y, rgba), code in zip(found["samples"], back["code"], strict=True):
        assert tuple(rgba) == hex_to_rgba(legend.by_code(int(code)).color), code
