"""Build ``belgium_assessment.gpkg`` (+ .csv, .qml): the demo's labelled accuracy-assessment sample.

1. ``suelo assess design`` on the demo's land-cover map (``out/demo/landcover/demo-belgium.tif``, so run
   ``make demo`` first): 100 points, at least 12 per stratum, proportional allocation, seed 2021.
2. Each point is labelled from the reference data shipped here, where it falls on them:
   - ``belgium_village.geojson`` (hand-digitised built-up land): a point whose pixel centre lies in one of its
     polygons is Built-up (LANDCOVER10 code 7);
   - ``belgium_interpretation.csv`` (photo-interpretation of the demo cube at pixel centres, see README.md here):
     a point on one of its pixels gets its label, with the interpreter's confidence and evidence as notes.
   A point that falls on neither stays unlabelled (``suelo assess analyze`` counts and lists it).

    .venv/bin/python data/sample/make_assessment_sample.py [MAP]

The labelled layer replaces the drawn one with the same design metadata (the QGIS style stored in the GeoPackage
stays), and the CSV beside it is rewritten from it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from suelo.assess.design import design_sample, write_sample_csv
from suelo.assess.maps import read_class_map

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SAMPLE = HERE / "belgium_assessment.gpkg"
VILLAGE = HERE / "belgium_village.geojson"
INTERPRETATION = HERE / "belgium_interpretation.csv"
BUILT_UP = 7


def main(map_path: Path) -> None:
    os.chdir(REPO)  # the design records the map's path: relative to the repository, as the demo job names it
    values = read_class_map(Path(os.path.relpath(map_path.resolve(), REPO)))
    design = design_sample(values, SAMPLE, n=100, min_per_stratum=12, allocation="proportional", seed=2021)
    points = gpd.read_file(SAMPLE, layer="sample")
    village = gpd.read_file(VILLAGE).to_crs(points.crs)
    interpreted = pd.read_csv(INTERPRETATION)
    by_pixel = {
        (round(x, 3), round(y, 3)): row
        for x, y, row in zip(interpreted.x, interpreted.y, interpreted.itertuples(), strict=True)
    }
    labels: list[tuple[int | None, str, int]] = []
    for point in points.itertuples():
        inside = village[village.contains(point.geometry)]
        if len(inside):
            labels.append((BUILT_UP, f"belgium_village.geojson: {inside.iloc[0]['what']}", int(point.point_id)))
            continue
        found = by_pixel.get((round(point.x, 3), round(point.y, 3)))
        if found is None:
            labels.append((None, "", int(point.point_id)))
            continue
        labels.append((int(found.label), f"interpreted ({found.confidence}): {found.evidence}", int(point.point_id)))
    by_id = {point_id: (label, notes) for label, notes, point_id in labels}
    points["reference"] = pd.array([by_id[i][0] for i in points["point_id"]], dtype="Int32")
    points["interpreter_notes"] = [by_id[i][1] for i in points["point_id"]]
    # the layer is rewritten with its design metadata; the QGIS style stored beside it in the file stays
    metadata = pyogrio.read_info(SAMPLE, layer="sample")["layer_metadata"]
    points.to_file(SAMPLE, layer="sample", driver="GPKG", engine="pyogrio", metadata=metadata)
    write_sample_csv(SAMPLE.with_suffix(".csv"), points)
    done = sum(label is not None for label, _notes, _id in labels)
    print(f"{design.n} points drawn ({dict(zip(design.strata, design.sample_sizes, strict=True))}); {done} labelled")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "out" / "demo" / "landcover" / "demo-belgium.tif")
