"""QGIS style for the assessment sample: points coloured by stratum, a form made for labelling them.

``suelo assess design`` writes the sample as a GeoPackage layer; an interpreter opens it in QGIS and fills the
``reference`` column point by point. The style written here makes that safe and quick: points are drawn in their
stratum's colour and labelled with their ``point_id``, the attribute form offers the reference classes in a drop-down
(a Value Map, so only valid codes can be entered), and every design column (stratum, weights, inclusion
probabilities...) is read-only, so the estimator's inputs cannot be changed by a stray keystroke.

The style is stored in the GeoPackage itself (suelo.style.write_layer_style: QGIS' ``layer_styles`` table, marked as
the default), so QGIS applies it whenever the layer is opened, even after the file is copied or mailed;
suelo.style.write_qml_beside also writes it as a ``.qml`` file for users who want to load or edit it by hand. The
renderer and symbol pieces are suelo.style's, shared with the urban-atlas polygons.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from suelo.style import (
    LAYER_DRAWING,
    categorized_renderer,
    check_unique,
    empty_properties,
    qgis_color,
    qml_option,
    vector_qml_header,
    write_layer_style,
)

#: The value QGIS stores in a Value Map for "NULL" (it cannot store a null in the map itself).
VALUE_MAP_NULL = "{2839923C-8B7D-419E-B84B-CA2FE9B80EC7}"
NOT_LABELLED = "(not labelled)"
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
_PREVIEW = '"point_id"'  # what QGIS names a feature by (identify results, form title)


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
        *empty_properties("dd_properties", "        "),
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
        *empty_properties("dd_properties", "      "),
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
        lines += ['    <Option type="Map">', f"      {qml_option(description, value)}", "    </Option>"]
    lines += ["  </Option>", "</Option>"]
    return lines


def _text_edit() -> list[str]:
    return [
        '<Option type="Map">',
        f"  {qml_option('IsMultiline', 'true', 'bool')}",
        f"  {qml_option('UseHtml', 'false', 'bool')}",
        "</Option>",
    ]


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
    check_unique((code for code, _name, _color in strata), "stratum")
    check_unique((code for code, _name in reference_classes), "reference class")
    read_only = [c for c in DESIGN_COLUMNS if c not in (reference_column, NOTES_COLUMN)]
    aliases = {**{c: a for c, a in ALIASES.items() if c != reference_column}, reference_column: REFERENCE_ALIAS}
    categories = [(code, f"{int(code)} {name}", qgis_color(color)) for code, name, color in strata]
    lines = [
        *vector_qml_header(labels=True),
        *categorized_renderer(categories, "stratum"),
        *_labeling("point_id"),
        *LAYER_DRAWING,
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


def write_sample_style(gpkg: Path, layer: str, qml: str, style_name: str = "suelo sample") -> None:
    """Store the sample's ``qml`` as the default style of ``layer`` in ``gpkg`` (:func:`write_layer_style`)."""
    write_layer_style(gpkg, layer, qml, style_name, "Sample styled by suelo: strata, labelling form")
