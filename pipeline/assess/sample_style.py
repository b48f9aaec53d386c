"""QGIS style for the assessment sample: points coloured by stratum, a form made for labelling them.

``suelo assess design`` writes the sample as a GeoPackage layer; an interpreter opens it in QGIS and fills the
``reference`` column point by point. The style written here makes that safe and quick: points are drawn in their
stratum's colour and labelled with their ``point_id``, the attribute form offers the reference classes in a drop-down
(a Value Map, so only valid codes can be entered), and every design column (stratum, weights, inclusion
probabilities...) is read-only, so the estimator's inputs cannot be changed by a stray keystroke.

The style is stored in the GeoPackage itself (table ``layer_styles``, QGIS' own schema, marked as the default), so
QGIS applies it whenever the layer is opened, even after the file is copied or mailed; :func:`write_qml_beside`
also writes it as a ``.qml`` file for users who want to load or edit it by hand.

The storage (:func:`write_layer_style`) and the categorized renderer are not the sample's alone: the urban-atlas
polygons (suelo.urban_atlas) are stored with a style of :func:`categorized_fill_qml` the same way.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from suelo.atomic import atomic_output
from suelo.errors import InputError

#: The value QGIS stores in a Value Map for "NULL" (it cannot store a null in the map itself).
VALUE_MAP_NULL = "{2839923C-8B7D-419E-B84B-CA2FE9B80EC7}"
NOT_LABELLED = "(not labelled)"
#: Colour of a stratum without one (light grey).
DEFAULT_COLOR = "#cccccc"
NOTES_COLUMN = "interpreter_notes"
#: Columns the sampling design fixes; the form shows them read-only (``fid`` is the GeoPackage's own key).
DESIGN_COLUMNS: tuple[str, ...] = (
    "fid",
    "point_id",
    "stratum",
    "stratum_name",
    "map_value",
    "map_name",
    "row",
    "col",
    "x",
    "y",
    "lon",
    "lat",
    "stratum_pixels",
    "stratum_area_ha",
    "stratum_sample_size",
    "inclusion_probability",
    "weight_ha",
    "design_grid",
)
ALIASES: dict[str, str] = {
    "point_id": "Point id",
    "stratum": "Stratum (code)",
    "stratum_name": "Stratum",
    "map_value": "Map class (code)",
    "map_name": "Map class",
    "row": "Pixel row",
    "col": "Pixel column",
    "x": "X (map CRS)",
    "y": "Y (map CRS)",
    "lon": "Longitude",
    "lat": "Latitude",
    "stratum_pixels": "Stratum size (pixels)",
    "stratum_area_ha": "Stratum area (ha)",
    "stratum_sample_size": "Stratum sample size",
    "inclusion_probability": "Inclusion probability",
    "weight_ha": "Weight (ha per point)",
    "design_grid": "Design grid",
    NOTES_COLUMN: "Interpreter notes",
}
REFERENCE_ALIAS = "Reference class (interpreter)"
MARKER_SIZE_MM = 3.0
LAYER_STYLES = "layer_styles"
_PREVIEW = '"point_id"'  # what QGIS names a feature by (identify results, form title)

# QGIS' schema for layer_styles in a GeoPackage (what QgsOgrProvider creates), update_time in the GeoPackage's
# ISO 8601 form (YYYY-MM-DDTHH:MM:SS.SSSZ) as the GeoPackage spec asks of DATETIME columns.
_GPKG_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
_CREATE_LAYER_STYLES = f"""CREATE TABLE IF NOT EXISTS "{LAYER_STYLES}" (
  "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  "f_table_catalog" TEXT(256),
  "f_table_schema" TEXT(256),
  "f_table_name" TEXT(256),
  "f_geometry_column" TEXT(256),
  "styleName" TEXT(30),
  "styleQML" TEXT,
  "styleSLD" TEXT,
  "useAsDefault" BOOLEAN,
  "description" TEXT,
  "owner" TEXT(30),
  "ui" TEXT(30),
  "update_time" DATETIME DEFAULT ({_GPKG_NOW})
)"""
_GPKG_APPLICATION_IDS = (0x47504B47, 0x47503130)  # "GPKG" (1.2 and later), "GP10" (1.0)
_GPKG_TABLES = frozenset({"gpkg_contents", "gpkg_geometry_columns", "gpkg_spatial_ref_sys"})


# --- QML -----------------------------------------------------------------------------------------------------------


def qgis_color(color: str | None) -> str:
    """``#rrggbb`` (or ``#rrggbbaa``, ``#rgb``) as QGIS writes colours in a style: ``"r,g,b,a"``; None is grey."""
    text = (DEFAULT_COLOR if color is None else color).strip()
    digits = text[1:] if text.startswith("#") else ""
    if len(digits) == 3:
        digits = "".join(2 * d for d in digits)
    if len(digits) == 6:
        digits += "ff"
    try:
        if len(digits) != 8:
            raise ValueError
        rgba = [int(digits[i : i + 2], 16) for i in range(0, 8, 2)]
    except ValueError:
        raise ValueError(f"not a colour: {color!r} (expected #rrggbb)") from None
    return ",".join(str(v) for v in rgba)


def _option(name: str, value: str, kind: str = "QString") -> str:
    return f"<Option name={quoteattr(name)} type={quoteattr(kind)} value={quoteattr(value)}/>"


def _empty_properties(tag: str, indent: str) -> list[str]:
    """The empty data-defined property collection QGIS writes under every symbol, symbol layer and label."""
    return [
        f"{indent}<{tag}>",
        f'{indent}  <Option type="Map">',
        f"{indent}    {_option('name', '')}",
        f'{indent}    <Option name="properties"/>',
        f"{indent}    {_option('type', 'collection')}",
        f"{indent}  </Option>",
        f"{indent}</{tag}>",
    ]


def _marker_symbol(name: str, color: str, indent: str) -> list[str]:
    """A circle of ``color`` with a thin black outline, in both forms QGIS 3.22 writes (``<Option>`` and ``<prop>``;
    older QGIS versions read only the latter)."""
    props = {
        "angle": "0",
        "color": color,
        "horizontal_anchor_point": "1",
        "joinstyle": "bevel",
        "name": "circle",
        "offset": "0,0",
        "offset_map_unit_scale": "3x:0,0,0,0,0,0",
        "offset_unit": "MM",
        "outline_color": "0,0,0,255",
        "outline_style": "solid",
        "outline_width": "0.3",
        "outline_width_map_unit_scale": "3x:0,0,0,0,0,0",
        "outline_width_unit": "MM",
        "scale_method": "diameter",
        "size": f"{MARKER_SIZE_MM:g}",
        "size_map_unit_scale": "3x:0,0,0,0,0,0",
        "size_unit": "MM",
        "vertical_anchor_point": "1",
    }
    lines = [
        f'{indent}<symbol type="marker" name={quoteattr(name)} alpha="1" clip_to_extent="1" force_rhr="0">',
        *_empty_properties("data_defined_properties", indent + "  "),
        f'{indent}  <layer class="SimpleMarker" enabled="1" locked="0" pass="0">',
        f'{indent}    <Option type="Map">',
        *(f"{indent}      {_option(k, v)}" for k, v in props.items()),
        f"{indent}    </Option>",
        *(f"{indent}    <prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items()),
        *_empty_properties("data_defined_properties", indent + "    "),
        f"{indent}  </layer>",
        f"{indent}</symbol>",
    ]
    return lines


def _fill_symbol(name: str, color: str, indent: str) -> list[str]:
    """A solid fill of ``color`` outlined in the same colour, one pixel wide (a hairline): neighbouring polygons
    meet without the light seams anti-aliasing leaves between unoutlined fills, and a small polygon is drawn no
    more than a pixel larger. Both forms QGIS 3.22 writes, as for the markers."""
    props = {
        "border_width_map_unit_scale": "3x:0,0,0,0,0,0",
        "color": color,
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_map_unit_scale": "3x:0,0,0,0,0,0",
        "offset_unit": "MM",
        "outline_color": color,
        "outline_style": "solid",
        "outline_width": "0",
        "outline_width_unit": "MM",
        "style": "solid",
    }
    return [
        f'{indent}<symbol type="fill" name={quoteattr(name)} alpha="1" clip_to_extent="1" force_rhr="0">',
        *_empty_properties("data_defined_properties", indent + "  "),
        f'{indent}  <layer class="SimpleFill" enabled="1" locked="0" pass="0">',
        f'{indent}    <Option type="Map">',
        *(f"{indent}      {_option(k, v)}" for k, v in props.items()),
        f"{indent}    </Option>",
        *(f"{indent}    <prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items()),
        *_empty_properties("data_defined_properties", indent + "    "),
        f"{indent}  </layer>",
        f"{indent}</symbol>",
    ]


def _renderer(
    categories: Sequence[tuple[int, str, str]],
    attribute: str,
    symbol: Callable[[str, str, str], list[str]] = _marker_symbol,
) -> list[str]:
    """A categorized renderer on the integer field ``attribute``: per ``(value, label, QGIS colour)`` one category
    and one ``symbol(name, colour, indent)``."""
    lines = [
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(attribute)} forceraster="0" symbollevels="0" '
        'enableorderby="0" referencescale="-1">',
        "    <categories>",
    ]
    for i, (value, label, _color) in enumerate(categories):
        lines.append(
            f"      <category value={quoteattr(str(int(value)))} symbol={quoteattr(str(i))} "
            f'label={quoteattr(label)} render="true"/>'
        )
    lines += ["    </categories>", "    <symbols>"]
    for i, (_value, _label, color) in enumerate(categories):
        lines += symbol(str(i), color, "      ")
    lines += ["    </symbols>", "    <rotation/>", "    <sizescale/>", "  </renderer-v2>"]
    return lines


def _qgis_header(labels: bool) -> list[str]:
    """The ``<qgis>`` element's opening and the layer flags, as QGIS 3.22 writes them."""
    return [
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>",
        f'<qgis version="3.22.0" styleCategories="AllStyleCategories" labelsEnabled="{int(labels)}" readOnly="0" '
        'hasScaleBasedVisibilityFlag="0" minScale="100000000" maxScale="0">',
        "  <flags>",
        "    <Identifiable>1</Identifiable>",
        "    <Removable>1</Removable>",
        "    <Searchable>1</Searchable>",
        "    <Private>0</Private>",
        "  </flags>",
    ]


def _labeling(field: str) -> list[str]:
    """``field`` beside each point (cartographic placement, 1 mm away), black on a white halo; all labels drawn."""
    return [
        '  <labeling type="simple">',
        '    <settings calloutType="simple">',
        f'      <text-style fieldName={quoteattr(field)} isExpression="0" fontSize="8" fontSizeUnit="Point" '
        'fontSizeMapUnitScale="3x:0,0,0,0,0,0" fontWeight="50" fontItalic="0" fontUnderline="0" '
        'fontStrikeout="0" fontKerning="1" textColor="0,0,0,255" textOpacity="1" capitalization="0" '
        'blendMode="0" multilineHeight="1" allowHtml="0" textOrientation="horizontal" '
        'previewBkgrdColor="255,255,255,255">',
        '        <text-buffer bufferDraw="1" bufferSize="0.7" bufferSizeUnits="MM" '
        'bufferSizeMapUnitScale="3x:0,0,0,0,0,0" bufferColor="255,255,255,255" bufferOpacity="1" bufferNoFill="1" '
        'bufferJoinStyle="128" bufferBlendMode="0"/>',
        '        <background shapeDraw="0"/>',
        '        <shadow shadowDraw="0"/>',
        *_empty_properties("dd_properties", "        "),
        "        <substitutions/>",
        "      </text-style>",
        '      <text-format wrapChar="" autoWrapLength="0" multilineAlign="3" formatNumbers="0" decimals="3" '
        'plussign="0" addDirectionSymbol="0"/>',
        '      <placement placement="6" layerType="PointGeometry" dist="1" distUnits="MM" '
        'distMapUnitScale="3x:0,0,0,0,0,0" predefinedPositionOrder="TR,TL,BR,BL,R,L,TSR,BSR" quadOffset="4" '
        'offsetType="0" xOffset="0" yOffset="0" offsetUnits="MM" rotationAngle="0" priority="5"/>',
        '      <rendering drawLabels="1" displayAll="1" obstacle="1" obstacleFactor="1" obstacleType="1" '
        'scaleVisibility="0" scaleMin="0" scaleMax="0" fontLimitPixelSize="0" fontMinPixelSize="0" '
        'fontMaxPixelSize="10000" limitNumLabels="0" maxNumLabels="2000" upsidedownLabels="0" zIndex="0" '
        'minFeatureSize="0" labelPerPart="0" mergeLines="0"/>',
        *_empty_properties("dd_properties", "      "),
        "    </settings>",
        "  </labeling>",
    ]


def _edit_widget(field: str, kind: str, config: list[str]) -> list[str]:
    return [
        f'    <field name={quoteattr(field)} configurationFlags="None">',
        f"      <editWidget type={quoteattr(kind)}>",
        "        <config>",
        *(f"          {line}" for line in config),
        "        </config>",
        "      </editWidget>",
        "    </field>",
    ]


def _value_map(reference_classes: Sequence[tuple[int, str]]) -> list[str]:
    """Value Map config: a list of one-entry maps ``{description: stored value}``, NULL first (a fresh point)."""
    entries = [(NOT_LABELLED, VALUE_MAP_NULL)] + [(f"{int(c)} {name}", str(int(c))) for c, name in reference_classes]
    lines = ['<Option type="Map">', '  <Option name="map" type="List">']
    for description, value in entries:
        lines += ['    <Option type="Map">', f"      {_option(description, value)}", "    </Option>"]
    lines += ["  </Option>", "</Option>"]
    return lines


def _text_edit() -> list[str]:
    return [
        '<Option type="Map">',
        f"  {_option('IsMultiline', 'true', 'bool')}",
        f"  {_option('UseHtml', 'false', 'bool')}",
        "</Option>",
    ]


def _unique(codes: Iterable[int], what: str) -> None:
    seen: set[int] = set()
    for code in codes:
        if int(code) in seen:
            raise ValueError(f"{what} code {int(code)} is listed twice")
        seen.add(int(code))


#: What QGIS writes between a vector layer's renderer/labelling and its fields: no custom properties, normal
#: blending, opaque, the default legend.
_LAYER_DRAWING = (
    "  <customproperties>",
    "    <Option/>",
    "  </customproperties>",
    "  <blendMode>0</blendMode>",
    "  <featureBlendMode>0</featureBlendMode>",
    "  <layerOpacity>1</layerOpacity>",
    '  <legend type="default-vector" showLabelLegend="0"/>',
)


def sample_qml(
    strata: Sequence[tuple[int, str, str | None]],
    reference_classes: Sequence[tuple[int, str]],
    reference_column: str = "reference",
) -> str:
    """QGIS 3 style (``.qml`` text) for the sample layer.

    ``strata``: ``(code, name, colour)`` per stratum; the points are categorized by ``stratum``, one circle of the
    stratum's colour (``#rrggbb``; None: light grey) per category, labelled ``"code name"``. ``reference_classes``:
    ``(code, name)`` the interpreter may choose from; ``reference_column`` gets a Value Map of them (plus
    "(not labelled)" for NULL), ``interpreter_notes`` a multi-line text box, and every design column is read-only.
    """
    _unique((code for code, _name, _color in strata), "stratum")
    _unique((code for code, _name in reference_classes), "reference class")
    read_only = [c for c in DESIGN_COLUMNS if c not in (reference_column, NOTES_COLUMN)]
    aliases = {**{c: a for c, a in ALIASES.items() if c != reference_column}, reference_column: REFERENCE_ALIAS}
    categories = [(code, f"{int(code)} {name}", qgis_color(color)) for code, name, color in strata]
    lines = [
        *_qgis_header(labels=True),
        *_renderer(categories, "stratum"),
        *_labeling("point_id"),
        *_LAYER_DRAWING,
        "  <fieldConfiguration>",
        *_edit_widget(reference_column, "ValueMap", _value_map(reference_classes)),
        *_edit_widget(NOTES_COLUMN, "TextEdit", _text_edit()),
        "  </fieldConfiguration>",
        "  <aliases>",
        *(f"    <alias field={quoteattr(c)} name={quoteattr(a)}/>" for c, a in aliases.items()),
        "  </aliases>",
        '  <editform tolerant="1"></editform>',
        "  <editforminit/>",
        "  <editforminitcodesource>0</editforminitcodesource>",
        "  <featformsuppress>0</featformsuppress>",
        "  <editorlayout>generatedlayout</editorlayout>",
        "  <editable>",
        *(f'    <field name={quoteattr(c)} editable="0"/>' for c in read_only),
        f'    <field name={quoteattr(reference_column)} editable="1"/>',
        f'    <field name={quoteattr(NOTES_COLUMN)} editable="1"/>',
        "  </editable>",
        "  <labelOnTop/>",
        "  <reuseLastValue/>",
        f"  <previewExpression>{escape(_PREVIEW)}</previewExpression>",
        "  <mapTip></mapTip>",
        "  <layerGeometryType>0</layerGeometryType>",
        "</qgis>",
    ]
    return "\n".join(lines) + "\n"


def categorized_fill_qml(
    categories: Sequence[tuple[int, str, str | None]],
    attribute: str,
    aliases: Mapping[str, str] | None = None,
    preview: str | None = None,
) -> str:
    """QGIS 3 style (``.qml`` text) for a polygon layer categorized by the integer field ``attribute``.

    ``categories``: ``(value, label, colour)``, one solid fill each in the legend's order, in ``colour``
    (``#rrggbb``; None: transparent, as nodata is in the maps); features of other values are not drawn.
    ``aliases``: field -> the name QGIS shows in the attribute table and forms; ``preview``: the expression QGIS
    names a feature by (identify results), e.g. ``'"class_name"'``.
    """
    _unique((value for value, _label, _color in categories), "category")
    styled = [(value, label, qgis_color("#00000000" if color is None else color)) for value, label, color in categories]
    lines = [
        *_qgis_header(labels=False),
        *_renderer(styled, attribute, _fill_symbol),
        *_LAYER_DRAWING,
        "  <aliases>",
        *(f"    <alias field={quoteattr(c)} name={quoteattr(a)}/>" for c, a in (aliases or {}).items()),
        "  </aliases>",
        f"  <previewExpression>{escape(preview or '')}</previewExpression>",
        "  <mapTip></mapTip>",
        "  <layerGeometryType>2</layerGeometryType>",
        "</qgis>",
    ]
    return "\n".join(lines) + "\n"


# --- storage -------------------------------------------------------------------------------------------------------


def _geometry_column(db: sqlite3.Connection, gpkg: Path, layer: str) -> tuple[str, str]:
    """The layer's table name as the GeoPackage spells it and its geometry column (``gpkg_geometry_columns``)."""
    (app_id,) = db.execute("PRAGMA application_id").fetchone()
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if app_id not in _GPKG_APPLICATION_IDS or not tables >= _GPKG_TABLES:
        raise InputError(gpkg, "not a GeoPackage (no GeoPackage application id or metadata tables)")
    row = db.execute(
        "SELECT table_name, column_name FROM gpkg_geometry_columns WHERE lower(table_name) = lower(?)", (layer,)
    ).fetchone()
    if row is None:
        raise InputError(gpkg, f"no layer with geometry named {layer!r}")
    return str(row[0]), str(row[1])


def _register_layer_styles(db: sqlite3.Connection) -> None:
    """List ``layer_styles`` in ``gpkg_contents`` as an attributes table (as GDAL does), unless it already is."""
    if db.execute("SELECT 1 FROM gpkg_contents WHERE lower(table_name) = ?", (LAYER_STYLES,)).fetchone():
        return
    # GDAL records attribute tables with srs_id 0 (its "undefined geographic" system), when that row exists
    has_srs0 = db.execute("SELECT 1 FROM gpkg_spatial_ref_sys WHERE srs_id = 0").fetchone() is not None
    taken = db.execute("SELECT 1 FROM gpkg_contents WHERE identifier = ?", (LAYER_STYLES,)).fetchone()
    db.execute(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change, srs_id) "
        f"VALUES (?, 'attributes', ?, '', {_GPKG_NOW}, ?)",
        (LAYER_STYLES, None if taken else LAYER_STYLES, 0 if has_srs0 else None),
    )


def write_layer_style(gpkg: Path, layer: str, qml: str, style_name: str, description: str = "") -> None:
    """Store ``qml`` in ``gpkg`` as the default style of ``layer``, so QGIS applies it whenever the layer is opened.

    Uses QGIS' ``layer_styles`` table (created if missing and listed in ``gpkg_contents``, so the file stays a valid
    GeoPackage); a row already there for the same layer and style name is replaced, and the layer's other styles
    stop being its default. One SQLite transaction: the file has the old styles or the new one, never half.
    """
    gpkg = Path(gpkg)
    if not gpkg.is_file():  # sqlite3 would quietly create an empty database
        raise InputError(gpkg, "no such GeoPackage")
    ET.fromstring(qml.encode("utf-8"))  # a style QGIS cannot parse would be dropped silently; fail here instead
    with closing(sqlite3.connect(gpkg, timeout=30)) as db, db:  # `with db`: commit, or roll back on error
        table, geometry_column = _geometry_column(db, gpkg, layer)
        db.execute(_CREATE_LAYER_STYLES)
        _register_layer_styles(db)
        db.execute(
            f'DELETE FROM "{LAYER_STYLES}" WHERE lower(f_table_name) = lower(?) AND styleName = ?',
            (table, style_name),
        )
        db.execute(f'UPDATE "{LAYER_STYLES}" SET useAsDefault = 0 WHERE lower(f_table_name) = lower(?)', (table,))
        db.execute(
            f'INSERT INTO "{LAYER_STYLES}" (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, '
            "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
            f"VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', '', {_GPKG_NOW})",
            (table, geometry_column, style_name, qml, description),
        )


def write_sample_style(gpkg: Path, layer: str, qml: str, style_name: str = "suelo sample") -> None:
    """Store the sample's ``qml`` as the default style of ``layer`` in ``gpkg`` (:func:`write_layer_style`)."""
    write_layer_style(gpkg, layer, qml, style_name, "Sample styled by suelo: strata, labelling form")


def _verify_qml(path: Path) -> None:
    ET.parse(path)


def write_qml_beside(path: Path, qml: str) -> Path:
    """Write ``qml`` to ``path`` with the suffix ``.qml`` (atomically, checked to parse) and return that path."""
    final = Path(path).with_suffix(".qml")
    with atomic_output(final, verify=_verify_qml) as tmp:
        tmp.write_text(qml, encoding="utf-8")
    return final
