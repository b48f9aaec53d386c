"""QGIS 3 layer styles (``.qml``): the map rasters' beside each COG, the vector layers' stored in their GeoPackage.

QGIS loads ``<name>.qml`` beside ``<name>.tif`` as the layer's default style, so writing the style next to the
COG is all a user needs. Class maps get a paletted renderer with the legend's colors and names (reason classes
included, in the colours of suelo.reasons, chosen apart from every legend's); nodata is left out of the palette and
the band's nodata value is kept, so it is transparent either way. Confidence and counts get a continuous color ramp.

Vector layers (the urban-atlas patches, the assessment sample) get categorized renderers built from the pieces
below (:func:`categorized_fill_qml`; the sample's own style is in suelo.assess.sample_style) and are stored in the
GeoPackage itself (table ``layer_styles``, QGIS' own schema, marked as the default, :func:`write_layer_style`), so
QGIS applies the style whenever the layer is opened, even after the file is copied or mailed;
:func:`write_qml_beside` also writes it as a ``.qml`` file for users who want to load or edit it by hand.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from suelo.atomic import atomic_output
from suelo.errors import InputError

# Colorblind-safe sequential ramp (viridis, 5 stops): low confidence / few observations dark, high bright.
RAMP = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")

_HEADER = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology" hasScaleBasedVisibilityFlag="0" minScale="1e+08" maxScale="0">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour"
                  zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
"""

_FOOTER = """    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128"
                   colorizeBlue="128" colorizeStrength="100" invertColors="0"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


# Lines every raster renderer element carries (QGIS writes them; fixed values, since the styles set explicit limits).
_RENDERER_COMMON = (
    "      <rasterTransparency/>",
    "      <minMaxOrigin>",
    "        <limits>None</limits><extent>WholeRaster</extent><statAccuracy>Estimated</statAccuracy>",
    "        <cumulativeCutLower>0.02</cumulativeCutLower><cumulativeCutUpper>0.98</cumulativeCutUpper>",
    "        <stdDevFactor>2</stdDevFactor>",
    "      </minMaxOrigin>",
)


def paletted_qml(entries: Sequence[tuple[int, str, str | None]]) -> str:
    """Paletted renderer for ``(code, name, color)`` entries; entries without color (nodata) are omitted."""
    lines = [
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">',
        *_RENDERER_COMMON,
        "      <colorPalette>",
    ]
    for code, name, color in entries:
        if color is None:
            continue
        lines.append(
            f"        <paletteEntry value={quoteattr(str(int(code)))} color={quoteattr(color.lower())} "
            f"label={quoteattr(name)} alpha={quoteattr('255')}/>"
        )
    lines += ["      </colorPalette>", "    </rasterrenderer>"]
    return _HEADER + "\n".join(lines) + "\n" + _FOOTER


def pseudocolor_qml(minimum: float, maximum: float, label: str = "", ramp: Sequence[str] = RAMP) -> str:
    """Single-band pseudocolor renderer, colors interpolated from ``minimum`` to ``maximum`` (clamped)."""
    maximum = max(maximum, minimum + 1)
    steps = len(ramp) - 1
    items = []
    for i, color in enumerate(ramp):
        value = minimum + (maximum - minimum) * i / steps
        text = f"{value:g}{(' ' + label) if label else ''}"
        items.append(
            f"          <item value={quoteattr(f'{value:g}')} color={quoteattr(color)} label={quoteattr(text)} "
            'alpha="255"/>'
        )
    body = [
        f'    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" nodataColor="" '
        f'classificationMin="{minimum:g}" classificationMax="{maximum:g}">',
        *_RENDERER_COMMON,
        "      <rastershader>",
        f'        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" minimumValue="{minimum:g}" '
        f'maximumValue="{maximum:g}" clip="0" labelPrecision="0">',
        *items,
        "        </colorrampshader>",
        "      </rastershader>",
        "    </rasterrenderer>",
    ]
    return _HEADER + "\n".join(body) + "\n" + _FOOTER


def write_qml(
    path: str | Path,
    entries: Sequence[tuple[int, str, str | None]] = (),
    kind: Literal["paletted", "singlebandpseudocolor"] = "paletted",
    minimum: float = 0,
    maximum: float = 100,
    label: str = "",
) -> Path:
    """Write a QGIS style atomically; ``path`` should be the raster's path with the suffix ``.qml``."""
    path = Path(path)
    text = paletted_qml(entries) if kind == "paletted" else pseudocolor_qml(minimum, maximum, label)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# --- vector layers: QML pieces ------------------------------------------------------------------------------

#: Colour of a category without one (light grey).
DEFAULT_COLOR = "#cccccc"
MARKER_SIZE_MM = 3.0
LAYER_STYLES = "layer_styles"

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


def qml_option(name: str, value: str, kind: str = "QString") -> str:
    return f"<Option name={quoteattr(name)} type={quoteattr(kind)} value={quoteattr(value)}/>"


def empty_properties(tag: str, indent: str) -> list[str]:
    """The empty data-defined property collection QGIS writes under every symbol, symbol layer and label."""
    return [
        f"{indent}<{tag}>",
        f'{indent}  <Option type="Map">',
        f"{indent}    {qml_option('name', '')}",
        f'{indent}    <Option name="properties"/>',
        f"{indent}    {qml_option('type', 'collection')}",
        f"{indent}  </Option>",
        f"{indent}</{tag}>",
    ]


def marker_symbol(name: str, color: str, indent: str) -> list[str]:
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
        *empty_properties("data_defined_properties", indent + "  "),
        f'{indent}  <layer class="SimpleMarker" enabled="1" locked="0" pass="0">',
        f'{indent}    <Option type="Map">',
        *(f"{indent}      {qml_option(k, v)}" for k, v in props.items()),
        f"{indent}    </Option>",
        *(f"{indent}    <prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items()),
        *empty_properties("data_defined_properties", indent + "    "),
        f"{indent}  </layer>",
        f"{indent}</symbol>",
    ]
    return lines


def fill_symbol(name: str, color: str, indent: str) -> list[str]:
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
        *empty_properties("data_defined_properties", indent + "  "),
        f'{indent}  <layer class="SimpleFill" enabled="1" locked="0" pass="0">',
        f'{indent}    <Option type="Map">',
        *(f"{indent}      {qml_option(k, v)}" for k, v in props.items()),
        f"{indent}    </Option>",
        *(f"{indent}    <prop k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in props.items()),
        *empty_properties("data_defined_properties", indent + "    "),
        f"{indent}  </layer>",
        f"{indent}</symbol>",
    ]


def categorized_renderer(
    categories: Sequence[tuple[int, str, str]],
    attribute: str,
    symbol: Callable[[str, str, str], list[str]] = marker_symbol,
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


def vector_qml_header(labels: bool) -> list[str]:
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


def check_unique(codes: Iterable[int], what: str) -> None:
    seen: set[int] = set()
    for code in codes:
        if int(code) in seen:
            raise ValueError(f"{what} code {int(code)} is listed twice")
        seen.add(int(code))


#: What QGIS writes between a vector layer's renderer/labelling and its fields: no custom properties, normal
#: blending, opaque, the default legend.
LAYER_DRAWING = (
    "  <customproperties>",
    "    <Option/>",
    "  </customproperties>",
    "  <blendMode>0</blendMode>",
    "  <featureBlendMode>0</featureBlendMode>",
    "  <layerOpacity>1</layerOpacity>",
    '  <legend type="default-vector" showLabelLegend="0"/>',
)


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
    check_unique((value for value, _label, _color in categories), "category")
    styled = [(value, label, qgis_color("#00000000" if color is None else color)) for value, label, color in categories]
    lines = [
        *vector_qml_header(labels=False),
        *categorized_renderer(styled, attribute, fill_symbol),
        *LAYER_DRAWING,
        "  <aliases>",
        *(f"    <alias field={quoteattr(c)} name={quoteattr(a)}/>" for c, a in (aliases or {}).items()),
        "  </aliases>",
        f"  <previewExpression>{escape(preview or '')}</previewExpression>",
        "  <mapTip></mapTip>",
        "  <layerGeometryType>2</layerGeometryType>",
        "</qgis>",
    ]
    return "\n".join(lines) + "\n"


# --- vector layers: storage -------------------------------------------------------------------------------


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


def _verify_qml(path: Path) -> None:
    ET.parse(path)


def write_qml_beside(path: Path, qml: str) -> Path:
    """Write ``qml`` to ``path`` with the suffix ``.qml`` (atomically, checked to parse) and return that path."""
    final = Path(path).with_suffix(".qml")
    with atomic_output(final, verify=_verify_qml) as tmp:
        tmp.write_text(qml, encoding="utf-8")
    return final
