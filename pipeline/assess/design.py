"""``suelo assess design``: a stratified random sample of pixels from a suelo map, ready to label.

The strata are the map's values: each class and each reason code (low confidence, outside the training data, too
few observations), so the area the map leaves unmapped is assessed too; pixels without data are no stratum. The
sample size comes from ``n`` or from a target standard error of overall accuracy
(:func:`suelo.assess.estimate.sample_size`), allocated by :func:`suelo.assess.estimate.allocate`.

Points are drawn without replacement, uniformly within each stratum, reproducibly for a seed and a map: the
points' ranks within their stratum (in row-major pixel order) are drawn first, then the map is read once, window
by window, to find the pixels of those ranks, so no map is ever held whole in memory.

Written: ``SAMPLE.gpkg`` (layer ``sample``: pixel-centre points in the map's CRS, lon/lat columns, the stratum,
the map value, the inclusion probability and weight, an empty ``reference`` column, and the style that makes
QGIS show the strata in the map's colours and offer the legend's classes in the ``reference`` field), the same
style as ``SAMPLE.qml`` beside it, and ``SAMPLE.csv`` with the same columns for spreadsheets and Collect
Earth-style tools (which ``suelo assess analyze`` reads back as well as the GeoPackage).
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import Transformer

from suelo.assess.estimate import (
    Allocation,
    allocate,
    expected_accuracies,
    sample_size,
)
from suelo.assess.maps import ClassMap, describe_grid
from suelo.assess.sample_style import sample_qml, write_sample_style
from suelo.atomic import atomic_output, file_sha256
from suelo.errors import ConfigError
from suelo.style import write_qml_beside

LAYER = "sample"
REFERENCE_COLUMN = "reference"
#: Anticipated user's accuracy of a map class when none is given: the accuracy the shipped models certify by
#: default is 0.8 or more, and Olofsson et al. (2014) suggest conjectures of this order for stable classes.
DEFAULT_EXPECTED_ACCURACY = 0.8
DEFAULT_TARGET_SE = 0.01
#: Olofsson et al. (2014) recommend 50 to 100 points in each stratum, so rare classes' user's accuracy and the
#: unmapped strata are estimated with some precision too.
DEFAULT_MIN_PER_STRATUM = 50

#: Columns of the sample, in order (geometry last in the GeoPackage; x and y are the map CRS's coordinates).
COLUMNS = (
    "point_id", "stratum", "stratum_name", "map_value", "map_name", "row", "col", "x", "y", "lon", "lat",
    "stratum_pixels", "stratum_area_ha", "stratum_sample_size", "inclusion_probability", "weight_ha",
    "design_grid", REFERENCE_COLUMN, "interpreter_notes",
)  # fmt: skip


@dataclass(frozen=True)
class Design:
    """What was drawn: the strata, their sizes and sample sizes, and the files written."""

    strata: tuple[int, ...]
    pixels: tuple[int, ...]
    sample_sizes: tuple[int, ...]
    n: int
    how: str
    files: tuple[Path, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "strata": [
                {"stratum": s, "pixels": p, "n": k}
                for s, p, k in zip(self.strata, self.pixels, self.sample_sizes, strict=True)
            ],
            "n": self.n,
            "sample_size": self.how,
            "files": [str(f) for f in self.files],
        }


def draw_pixels(values: ClassMap, strata: list[int], counts: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Flat pixel indices (row * width + col, ascending) of ``counts[i]`` pixels drawn at random from each stratum."""
    rng = np.random.default_rng(seed)
    wanted = {
        code: np.sort(rng.choice(values.pixels[code], size=int(k), replace=False))
        for code, k in zip(strata, counts.tolist(), strict=True)
    }
    seen = dict.fromkeys(strata, 0)
    found: dict[int, list[np.ndarray]] = {code: [] for code in strata}
    width = values.grid.width
    for start, block in values.blocks():
        flat = block.ravel()
        for code in strata:
            where = np.flatnonzero(flat == code)
            ranks = wanted[code]
            lo, hi = np.searchsorted(ranks, [seen[code], seen[code] + len(where)])
            if hi > lo:
                found[code].append(start * width + where[ranks[lo:hi] - seen[code]])
            seen[code] += len(where)
    return {code: np.concatenate(parts) if parts else np.zeros(0, np.int64) for code, parts in found.items()}


def parse_expected(text: str | None) -> dict[int, float] | float | None:
    """``0.85`` (every class) or ``1=0.7,2=0.6,254=0.5`` (per map value) -> anticipated user's accuracies."""
    if text is None or not text.strip():
        return None
    try:
        if "=" not in text:
            value = float(text)
            if not 0 <= value <= 1:
                raise ValueError
            return value
        out: dict[int, float] = {}
        for part in text.split(","):
            code, _, accuracy = part.partition("=")
            out[int(code)] = float(accuracy)
            if not 0 <= out[int(code)] <= 1:
                raise ValueError
        return out
    except ValueError:
        raise ConfigError(
            f"--expected-accuracy {text!r}: give one accuracy (0.85) or CODE=ACCURACY pairs (1=0.7,2=0.6)"
        ) from None


def design_sample(
    values: ClassMap,
    output: Path,
    n: int | None = None,
    target_se: float | None = None,
    min_per_stratum: int = DEFAULT_MIN_PER_STRATUM,
    allocation: Allocation = "proportional",
    seed: int = 0,
    expected: Mapping[int, float] | float | None = None,
) -> Design:
    """Draw the sample on ``values`` and write ``output`` (.gpkg), its .qml and .csv. ``n`` or ``target_se``."""
    if n is not None and target_se is not None:
        raise ConfigError("give either --n or --target-se, not both")
    strata = sorted(code for code, count in values.pixels.items() if count > 0)
    if not strata:
        raise ConfigError(f"{values.path}: the map has no pixel with data; there is nothing to sample")
    class_codes = [e.code for e in values.classes]
    pixels = np.array([values.pixels[c] for c in strata], dtype=np.int64)
    areas = np.array([values.areas_ha[c] for c in strata])
    anticipated = expected_accuracies(strata, class_codes, expected, DEFAULT_EXPECTED_ACCURACY)
    if n is None:
        target = DEFAULT_TARGET_SE if target_se is None else target_se
        n = sample_size(areas / areas.sum(), anticipated, target, float(pixels.sum()))
        how = f"for a standard error of {target:g} of overall accuracy (Olofsson et al. 2014, eq. 13): {n} points"
    else:
        how = f"{n} points as asked"
    counts = allocate(n, pixels.tolist(), allocation, min_per_stratum, anticipated)
    drawn = draw_pixels(values, strata, counts, seed)
    frame = _sample_frame(values, strata, pixels, areas, counts, drawn)
    design = {
        "map": str(values.path), "map_sha256": file_sha256(values.path), "grid": values.grid.to_dict(),
        "grid_id": values.grid_id, "grid_text": describe_grid(values.grid), "seed": seed, "allocation": allocation,
        "min_per_stratum": min_per_stratum, "sample_size": how,
        "expected_accuracy": dict(zip(strata, anticipated, strict=True)),
        "strata": {str(c): {"pixels": int(p), "area_ha": float(a), "n": int(k)}
                   for c, p, a, k in zip(strata, pixels, areas, counts, strict=True)},
    }  # fmt: skip
    qml = sample_qml(
        [(e.code, e.name, e.color) for e in (values.entry(c) for c in strata)],
        [(e.code, e.name) for e in values.classes],
        REFERENCE_COLUMN,
    )
    output = Path(output)
    with atomic_output(output) as tmp:
        tmp.unlink()  # the GPKG driver creates its own file; an existing empty one is not a GeoPackage
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # GDAL: a GeoPackage should end in .gpkg (the temp)
            frame.to_file(
                tmp, driver="GPKG", layer=LAYER, engine="pyogrio", metadata={"SUELO_DESIGN": json.dumps(design)}
            )
        write_sample_style(tmp, LAYER, qml)
    files = (output, write_qml_beside(output, qml), write_sample_csv(output.with_suffix(".csv"), frame))
    return Design(tuple(strata), tuple(pixels.tolist()), tuple(counts.tolist()), int(counts.sum()), how, files)


def _sample_frame(
    values: ClassMap,
    strata: list[int],
    pixels: np.ndarray,
    areas: np.ndarray,
    counts: np.ndarray,
    drawn: dict[int, np.ndarray],
) -> gpd.GeoDataFrame:
    width, t = values.grid.width, values.grid.transform
    records = []
    for code, n_pixels, area, k in zip(strata, pixels.tolist(), areas.tolist(), counts.tolist(), strict=True):
        for flat in drawn[code].tolist():
            row, col = divmod(int(flat), width)
            records.append((code, row, col, n_pixels, area, k))
    frame = pd.DataFrame(records, columns=["stratum", "row", "col", "stratum_pixels", "stratum_area_ha", "n"])
    # a random order, so an interpreter going down the list does not see the strata one after another
    order = np.random.default_rng(len(frame)).permutation(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    frame.insert(0, "point_id", np.arange(1, len(frame) + 1))
    frame["x"] = t.c + t.a * (frame["col"] + 0.5)
    frame["y"] = t.f + t.e * (frame["row"] + 0.5)
    to_lonlat = Transformer.from_crs(values.grid.crs.to_wkt(), "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(frame["x"].to_numpy(), frame["y"].to_numpy())
    frame["lon"], frame["lat"] = np.round(lon, 8), np.round(lat, 8)
    frame["stratum_name"] = [values.entry(c).name for c in frame["stratum"]]
    frame["map_value"] = frame["stratum"]
    frame["map_name"] = frame["stratum_name"]
    frame["stratum_sample_size"] = frame["n"]
    frame["inclusion_probability"] = frame["n"] / frame["stratum_pixels"]
    frame["weight_ha"] = frame["stratum_area_ha"] / frame["n"]
    frame["design_grid"] = values.grid_id
    frame[REFERENCE_COLUMN] = pd.array([pd.NA] * len(frame), dtype="Int32")
    frame["interpreter_notes"] = ""
    frame = frame[list(COLUMNS)]
    geometry = gpd.points_from_xy(frame["x"], frame["y"], crs=values.grid.crs.to_wkt())
    return gpd.GeoDataFrame(frame, geometry=geometry)


def write_sample_csv(path: Path, frame: pd.DataFrame) -> Path:
    """The sample's :data:`COLUMNS` as CSV (empty cells for missing values), atomically."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in frame[list(COLUMNS)].itertuples(index=False):
            writer.writerow(["" if pd.isna(v) else v for v in row])
    return path
