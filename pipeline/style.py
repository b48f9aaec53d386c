"""QGIS 3 layer styles (``.qml``) for the map rasters.

QGIS loads ``<name>.qml`` beside ``<name>.tif`` as the layer's default style, so writing the style next to the
COG is all a user needs. Class maps get a paletted renderer with the legend's colors and names (reason classes
included, in the colours of suelo.reasons, chosen apart from every legend's); nodata is left out of the palette and
the band's nodata value is kept, so it is transparent either way. Confidence and counts get a continuous color ramp.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import quoteattr

from suelo.atomic import atomic_output

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
