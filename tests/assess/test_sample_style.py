"""The sample's QGIS style: a well-formed QML, stored in the GeoPackage as the layer's default, and read by QGIS."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import textwrap
import xml.etree.ElementTree as ET
from contextlib import closing
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest

from suelo.assess.sample_style import DESIGN_COLUMNS, REFERENCE_ALIAS, VALUE_MAP_NULL, sample_qml, write_sample_style
from suelo.errors import InputError
from suelo.style import qgis_color, write_qml_beside
from tests.fixtures.runs import SYSTEM_PYTHON, qgis_available

STRATA: list[tuple[int, str, str | None]] = [
    (1, "Tree cover", "#006400"),
    (2, "Built-up & <roads>", "#FA0000"),
    (3, "Water", None),
]
CLASSES: list[tuple[int, str]] = [(10, "Tree cover"), (50, 'Built-up "urban"'), (80, "Water"), (90, "Other & mixed")]


def make_sample(path: Path) -> gpd.GeoDataFrame:
    """A 3-point sample with every column `suelo assess design` writes (reference still empty)."""
    x = [600005.0, 600015.0, 600025.0]
    y = [5599995.0, 5599985.0, 5599975.0]
    gdf = gpd.GeoDataFrame(
        {
            "point_id": [1, 2, 3],
            "stratum": [1, 2, 3],
            "stratum_name": ["Tree cover", "Built-up & <roads>", "Water"],
            "map_value": [10, 50, 80],
            "map_name": ["Tree cover", "Built-up", "Water"],
            "row": [0, 1, 2],
            "col": [0, 1, 2],
            "x": x,
            "y": y,
            "lon": [4.40, 4.41, 4.42],
            "lat": [50.50, 50.51, 50.52],
            "stratum_pixels": [100, 50, 25],
            "stratum_area_ha": [1.0, 0.5, 0.25],
            "stratum_sample_size": [1, 1, 1],
            "inclusion_probability": [0.01, 0.02, 0.04],
            "weight_ha": [1.0, 0.5, 0.25],
            "design_grid": ["EPSG:32631 10 m"] * 3,
            "reference": pd.array([None, None, None], dtype="Int64"),
            "interpreter_notes": ["", "", ""],
        },
        geometry=gpd.points_from_xy(x, y),
        crs="EPSG:32631",
    )
    gdf.to_file(path, driver="GPKG", layer="sample")
    return gdf


def style_rows(path: Path) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM layer_styles ORDER BY id"))


def geometry_column(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        (name,) = db.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = 'sample'").fetchone()
    return str(name)


# --- QML -----------------------------------------------------------------------------------------------------------


def option_value(element: ET.Element, name: str) -> str | None:
    """Value of the ``<Option name=...>`` directly under ``element``'s first ``<Option type="Map">``."""
    for option in element.iterfind("Option/Option"):
        if option.get("name") == name:
            return option.get("value")
    return None


def test_qml_parses_and_categorizes_by_stratum() -> None:
    root = ET.fromstring(sample_qml(STRATA, CLASSES))
    assert root.tag == "qgis" and root.get("version") == "3.22.0"
    assert root.get("styleCategories") == "AllStyleCategories"
    renderer = root.find("renderer-v2")
    assert renderer is not None
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "stratum"
    categories = renderer.findall("categories/category")
    assert [(c.get("value"), c.get("label")) for c in categories] == [
        ("1", "1 Tree cover"),
        ("2", "2 Built-up & <roads>"),
        ("3", "3 Water"),
    ]
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    colours = []
    for category in categories:
        symbol = symbols[category.get("symbol")]
        assert symbol.get("type") == "marker"
        layer = symbol.find("layer")
        assert layer is not None and layer.get("class") == "SimpleMarker"
        assert option_value(layer, "name") == "circle"
        assert option_value(layer, "outline_color") == "0,0,0,255"
        assert float(option_value(layer, "size") or 0) == pytest.approx(3)
        colours.append(option_value(layer, "color"))
    assert colours == ["0,100,0,255", "250,0,0,255", "204,204,204,255"]


def test_qml_labels_point_ids() -> None:
    root = ET.fromstring(sample_qml(STRATA, CLASSES))
    assert root.get("labelsEnabled") == "1"
    labeling = root.find("labeling")
    assert labeling is not None and labeling.get("type") == "simple"
    text_style = labeling.find("settings/text-style")
    assert text_style is not None and text_style.get("fieldName") == "point_id"
    assert text_style.get("isExpression") == "0"


def test_qml_form_value_map_and_read_only_design() -> None:
    root = ET.fromstring(sample_qml(STRATA, CLASSES))
    widgets = {f.get("name"): f.find("editWidget") for f in root.findall("fieldConfiguration/field")}
    reference = widgets["reference"]
    assert reference is not None and reference.get("type") == "ValueMap"
    entries = [
        (o.get("name"), o.get("value")) for o in reference.iterfind("config/Option/Option[@name='map']/Option/Option")
    ]
    assert entries == [
        ("(not labelled)", VALUE_MAP_NULL),
        ("10 Tree cover", "10"),
        ('50 Built-up "urban"', "50"),
        ("80 Water", "80"),
        ("90 Other & mixed", "90"),
    ]
    notes = widgets["interpreter_notes"]
    assert notes is not None and notes.get("type") == "TextEdit"

    editable = {f.get("name"): f.get("editable") for f in root.findall("editable/field")}
    assert {c for c, e in editable.items() if e == "0"} == set(DESIGN_COLUMNS)
    assert editable["reference"] == "1" and editable["interpreter_notes"] == "1"
    for column in ("point_id", "stratum", "stratum_area_ha", "inclusion_probability", "weight_ha", "design_grid"):
        assert editable[column] == "0", column

    aliases = {a.get("field"): a.get("name") for a in root.findall("aliases/alias")}
    assert aliases["reference"] == REFERENCE_ALIAS


def test_qml_other_reference_column() -> None:
    root = ET.fromstring(sample_qml(STRATA, CLASSES, reference_column="ref_class"))
    widgets = {f.get("name"): f.find("editWidget") for f in root.findall("fieldConfiguration/field")}
    widget = widgets["ref_class"]
    assert widget is not None and widget.get("type") == "ValueMap"
    editable = {f.get("name"): f.get("editable") for f in root.findall("editable/field")}
    assert editable["ref_class"] == "1"


def test_qml_rejects_duplicates_and_bad_colours() -> None:
    with pytest.raises(ValueError, match="stratum code 1"):
        sample_qml([(1, "a", None), (1, "b", None)], CLASSES)
    with pytest.raises(ValueError, match="reference class code 10"):
        sample_qml(STRATA, [(10, "a"), (10, "b")])
    with pytest.raises(ValueError, match="not a colour"):
        sample_qml([(1, "a", "green")], CLASSES)
    assert qgis_color("#0f0") == "0,255,0,255" and qgis_color("#11223380") == "17,34,51,128"


# --- GeoPackage ----------------------------------------------------------------------------------------------------


def test_style_stored_in_geopackage(tmp_path: Path) -> None:
    path = tmp_path / "sample.gpkg"
    written = make_sample(path)
    qml = sample_qml(STRATA, CLASSES)
    write_sample_style(path, "sample", qml)

    assert "sample" in pyogrio.list_layers(path)[:, 0]
    back = gpd.read_file(path, layer="sample")
    assert len(back) == 3 and list(back["point_id"]) == list(written["point_id"])
    assert back["reference"].isna().all()
    info = pyogrio.read_info(path, layer="sample")
    assert info["features"] == 3

    rows = style_rows(path)
    assert len(rows) == 1
    row = rows[0]
    assert row["f_table_name"] == "sample" and row["f_geometry_column"] == geometry_column(path)
    assert row["useAsDefault"] == 1 and row["styleName"] == "suelo sample"
    assert row["f_table_catalog"] == "" and row["f_table_schema"] == "" and row["styleSLD"] == ""
    assert row["styleQML"] == qml and row["update_time"]
    with closing(sqlite3.connect(path)) as db:
        contents = db.execute(
            "SELECT data_type, identifier FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchall()
        (check,) = db.execute("PRAGMA integrity_check").fetchone()
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert contents == [("attributes", "layer_styles")] and check == "ok"


def test_style_replaced_not_duplicated(tmp_path: Path) -> None:
    path = tmp_path / "sample.gpkg"
    make_sample(path)
    write_sample_style(path, "sample", sample_qml(STRATA, CLASSES))
    second = sample_qml(STRATA[:2], CLASSES)
    write_sample_style(path, "sample", second)
    rows = style_rows(path)
    assert len(rows) == 1 and rows[0]["styleQML"] == second and rows[0]["useAsDefault"] == 1

    # another style name is another row, and becomes the one default
    write_sample_style(path, "sample", second, style_name="other")
    assert [(r["styleName"], r["useAsDefault"]) for r in style_rows(path)] == [("suelo sample", 0), ("other", 1)]
    assert "sample" in pyogrio.list_layers(path)[:, 0]
    assert len(gpd.read_file(path, layer="sample")) == 3


def test_style_refuses_missing_file_or_layer(tmp_path: Path) -> None:
    qml = sample_qml(STRATA, CLASSES)
    with pytest.raises(InputError, match="no such GeoPackage"):
        write_sample_style(tmp_path / "missing.gpkg", "sample", qml)
    assert not (tmp_path / "missing.gpkg").exists()
    path = tmp_path / "sample.gpkg"
    make_sample(path)
    with pytest.raises(InputError, match="no layer"):
        write_sample_style(path, "other", qml)
    not_gpkg = tmp_path / "plain.sqlite"
    with closing(sqlite3.connect(not_gpkg)) as db:
        db.execute("CREATE TABLE t (a)")
    with pytest.raises(InputError, match="not a GeoPackage"):
        write_sample_style(not_gpkg, "sample", qml)
    with pytest.raises(ET.ParseError):
        write_sample_style(path, "sample", "<qgis>")
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'layer_styles'").fetchall() == []


def test_qml_beside(tmp_path: Path) -> None:
    qml = sample_qml(STRATA, CLASSES)
    out = write_qml_beside(tmp_path / "sample.gpkg", qml)
    assert out == tmp_path / "sample.qml" and out.read_text(encoding="utf-8") == qml
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.qml"]


# --- real QGIS -----------------------------------------------------------------------------------------------------

QGIS_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from qgis.core import QgsApplication, QgsVectorLayer

    app = QgsApplication([], False)
    app.initQgis()
    layer = QgsVectorLayer(sys.argv[1] + "|layername=sample", "s", "ogr")
    message, ok = layer.loadDefaultStyle()
    renderer = layer.renderer()
    fields = layer.fields()
    form = layer.editFormConfig()
    setup = layer.editorWidgetSetup(fields.indexOf("reference"))
    labeling = layer.labeling()
    out = {
        "valid": layer.isValid(),
        "features": layer.featureCount(),
        "loaded": ok,
        "message": message,
        "renderer": renderer.type(),
        "attr": renderer.classAttribute() if renderer.type() == "categorizedSymbol" else None,
        "categories": [
            [str(c.value()), c.label(), c.symbol().color().name(), c.symbol().symbolLayer(0).strokeColor().name()]
            for c in renderer.categories()
        ] if renderer.type() == "categorizedSymbol" else [],
        "widget": setup.type(),
        "config": setup.config(),
        "notes_widget": layer.editorWidgetSetup(fields.indexOf("interpreter_notes")).type(),
        "read_only": {f.name(): form.readOnly(i) for i, f in enumerate(fields)},
        "alias": layer.attributeAlias(fields.indexOf("reference")),
        "labels": layer.labelsEnabled(),
        "label_field": labeling.settings().fieldName if labeling is not None else None,
    }
    print(json.dumps(out, default=str), flush=True)
    del renderer, labeling, layer
    app.exitQgis()
    """
)


@pytest.mark.qgis
def test_qgis_loads_style_from_geopackage(tmp_path: Path) -> None:
    if not qgis_available():
        pytest.skip("PyQGIS not importable by /usr/bin/python3")
    path = tmp_path / "sample.gpkg"
    make_sample(path)
    write_sample_style(path, "sample", sample_qml(STRATA, CLASSES))
    script = tmp_path / "check_style.py"
    script.write_text(QGIS_SCRIPT, encoding="utf-8")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("PYTHONPATH", None)  # the venv's packages must not shadow the system ones
    done = subprocess.run([SYSTEM_PYTHON, str(script), str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert out["valid"] and out["features"] == 3 and out["loaded"], out["message"]
    assert out["renderer"] == "categorizedSymbol" and out["attr"] == "stratum"
    assert out["categories"] == [
        ["1", "1 Tree cover", "#006400", "#000000"],
        ["2", "2 Built-up & <roads>", "#fa0000", "#000000"],
        ["3", "3 Water", "#cccccc", "#000000"],
    ]
    assert out["widget"] == "ValueMap"
    stored = {value: name for entry in out["config"]["map"] for name, value in entry.items()}
    assert stored == {
        VALUE_MAP_NULL: "(not labelled)",
        "10": "10 Tree cover",
        "50": '50 Built-up "urban"',
        "80": "80 Water",
        "90": "90 Other & mixed",
    }
    assert out["notes_widget"] == "TextEdit"
    read_only = out["read_only"]
    assert read_only["point_id"] and read_only["stratum"] and read_only["weight_ha"]
    assert not read_only["reference"] and not read_only["interpreter_notes"]
    assert out["alias"] == REFERENCE_ALIAS
    assert out["labels"] and out["label_field"] == "point_id"
