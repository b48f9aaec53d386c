"""Open rasters in real QGIS (run by the system python3 that has PyQGIS) and print what QGIS sees as JSON.

Usage: QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/system/qgis_check.py SPEC.json
SPEC: [{"path": ".../map.tif", "samples": [[row, col], ...]}, ...]. For each raster: the renderer QGIS built
from the ``.qml`` it loaded by itself (its default style), the palette or ramp, the colors of a 1:1 render at
the sampled pixels, and what GDAL (the osgeo bindings QGIS uses) reads: nodata, color table, category names,
raster attribute table, overviews, metadata. With ``"classes_at": [value, ...]`` only the palette classes of
those values are listed (a uint16 palette QGIS builds from the colour table has 65,536), with their count and
the number of legend entries QGIS shows.

A spec with ``"vector": ".../layer.gpkg"`` (and ``"layer"``, ``"points": [[x, y], ...]`` in the layer's CRS)
opens a vector layer instead: its default style (QGIS applies the one stored in the GeoPackage by itself), the
categorized renderer's field and categories, fields and aliases, the feature count, and the colors of a render
at the points.
"""

import json
import sys
from typing import Any

from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsMapLayer,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsPointXY,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage


def gdal_facts(path):
    ds = gdal.Open(path)
    band = ds.GetRasterBand(1)
    table = band.GetColorTable()
    rat = band.GetDefaultRAT()
    rows = []
    if rat is not None:
        cols = [rat.GetNameOfCol(i) for i in range(rat.GetColumnCount())]
        for r in range(rat.GetRowCount()):
            rows.append({c: rat.GetValueAsString(r, i) for i, c in enumerate(cols)})
    return {
        "nodata": band.GetNoDataValue(),
        "dtype": gdal.GetDataTypeName(band.DataType),
        "color_table_size": table.GetCount() if table else 0,
        "color_table": {str(i): list(table.GetColorEntry(i)) for i in range(table.GetCount())} if table else {},
        "category_names": band.GetCategoryNames(),
        "rat": rows,
        "overviews": band.GetOverviewCount(),
        "description": band.GetDescription(),
        "layout": ds.GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE"),
        "metadata": ds.GetMetadata(),
    }


def check(spec):
    layer = QgsRasterLayer(spec["path"], "layer", "gdal")
    out = {"path": spec["path"], "valid": layer.isValid()}
    if not layer.isValid():
        return out
    renderer = layer.renderer()
    out["renderer"] = renderer.type()
    if renderer.type() == "paletted":
        classes = renderer.classes()
        wanted = spec.get("classes_at")
        if wanted is not None:
            keep = {float(v) for v in wanted}
            classes = [c for c in classes if c.value in keep]
            out["class_count"] = len(renderer.classes())
            out["legend_count"] = len(renderer.legendSymbologyItems())
        out["classes"] = [[c.value, c.color.name(), c.label] for c in classes]
    elif renderer.type() == "singlebandpseudocolor":
        shader = renderer.shader().rasterShaderFunction()
        out["ramp"] = [[i.value, i.color.name(), i.label] for i in shader.colorRampItemList()]
        out["min_max"] = [renderer.classificationMin(), renderer.classificationMax()]
    # 1:1 render of the whole layer: output pixel (row, col) is raster pixel (row, col).
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(layer.width(), layer.height()))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    out["render_size"] = [image.height(), image.width()]
    out["samples"] = []
    for row, col in spec.get("samples", []):
        c = image.pixelColor(col, row)
        out["samples"].append([row, col, [c.red(), c.green(), c.blue(), c.alpha()]])
    out["gdal"] = gdal_facts(spec["path"])
    return out


def render(layer: QgsMapLayer, settings: QgsMapSettings, size: QSize) -> QImage:
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setOutputSize(size)
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def check_vector(spec: dict[str, Any]) -> dict[str, Any]:
    layer = QgsVectorLayer(f"{spec['vector']}|layername={spec['layer']}", "layer", "ogr")
    out: dict[str, Any] = {"path": spec["vector"], "valid": layer.isValid()}
    if not layer.isValid():
        return out
    renderer = layer.renderer()
    out["renderer"] = renderer.type()
    out["geometry"] = QgsWkbTypes.geometryDisplayString(layer.geometryType())
    out["features"] = layer.featureCount()
    out["crs"] = layer.crs().authid()
    out["fields"] = [f.name() for f in layer.fields()]
    out["aliases"] = {f.name(): layer.attributeAlias(i) for i, f in enumerate(layer.fields())}
    _count, _ids, names, _descriptions, _error = layer.listStylesInDatabase()
    out["styles"] = list(names)  # the styles stored with the layer (its GeoPackage's layer_styles)
    if renderer.type() == "categorizedSymbol":
        out["attribute"] = renderer.classAttribute()
        out["categories"] = [
            [c.value(), c.symbol().color().name(QColor.HexArgb), c.label()] for c in renderer.categories()
        ]
    settings = QgsMapSettings()
    settings.setExtent(layer.extent())
    image = render(layer, settings, QSize(400, 400))
    to_pixel = settings.mapToPixel()
    out["samples"] = []
    for x, y in spec.get("points", []):
        pixel = to_pixel.transform(QgsPointXY(x, y))
        c = image.pixelColor(int(pixel.x()), int(pixel.y()))
        out["samples"].append([x, y, [c.red(), c.green(), c.blue(), c.alpha()]])
    return out


def main():
    with open(sys.argv[1]) as handle:
        specs = json.load(handle)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        print(
            json.dumps(
                {
                    "qgis": __import__("qgis.core").core.Qgis.QGIS_VERSION,
                    "layers": [check_vector(s) if "vector" in s else check(s) for s in specs],
                }
            )
        )
    finally:
        app.exitQgis()


if __name__ == "__main__":
    main()
