"""Open rasters in real QGIS (run by the system python3 that has PyQGIS) and print what QGIS sees as JSON.

Usage: QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/system/qgis_check.py SPEC.json
SPEC: [{"path": ".../map.tif", "samples": [[row, col], ...]}, ...]. For each raster: the renderer QGIS built
from the ``.qml`` it loaded by itself (its default style), the palette or ramp, the colors of a 1:1 render at
the sampled pixels, and what GDAL (the osgeo bindings QGIS uses) reads: nodata, color table, category names,
raster attribute table, overviews, metadata.
"""

import json
import sys

from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


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
        out["classes"] = [[c.value, c.color.name(), c.label] for c in renderer.classes()]
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


def main():
    with open(sys.argv[1]) as handle:
        specs = json.load(handle)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        print(json.dumps({"qgis": __import__("qgis.core").core.Qgis.QGIS_VERSION, "layers": [check(s) for s in specs]}))
    finally:
        app.exitQgis()


if __name__ == "__main__":
    main()
