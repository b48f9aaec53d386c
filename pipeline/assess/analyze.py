"""``suelo assess analyze``: accuracy and class areas of a map, with their uncertainty, from a labelled sample.

Reads the map, the sample (the GeoPackage or CSV that ``suelo assess design`` wrote, or any point file with a
reference column) and, optionally, a strata raster; checks them; and writes ``assessment.json``, the estimates
as ``assessment.csv``, the error matrix as ``error_matrix.csv``, ``assessment.html`` and, when points were left
out, ``dropped_points.csv``.

Where the strata come from, in this order:

1. ``--strata STRATA.tif``: each point's stratum is the raster's value there and the strata's areas are the
   raster's (a sample drawn on last year's map, or on regions); it must be on the map's grid;
2. the sample's own design columns (``stratum``, ``stratum_area_ha``, ``stratum_pixels``, written by ``assess
   design``): the sample carries its design, so it stays valid when the map it is used on is not the one it was
   drawn on (a newer model's map of the same grid: Stehman 2014);
3. otherwise the map's values at the points, with the map's areas (a sample drawn on this map, Olofsson et al.).

Refused with one line naming the file (exit 2), never dropped silently: points outside the map, a sample drawn
on another grid, reference labels the legend lacks, strata with fewer than 2 labelled points. Left out and
counted (in assessment.json and dropped_points.csv, listed one per line): points with no reference label yet,
and points on the map's no-data pixels when the strata are the map's values.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from pyproj import Transformer

from suelo.assess.design import LAYER, REFERENCE_COLUMN
from suelo.assess.estimate import DEFAULT_FPC, Estimates, StratifiedSample, estimate
from suelo.assess.maps import ClassMap, Entry, RasterValues, describe_grid, grid_digest, read_values
from suelo.assess.page import error_matrix_csv, write_assessment_page, write_table_csv
from suelo.atomic import atomic_output, file_sha256, write_json_atomic
from suelo.errors import InputError
from suelo.grid import Grid
from suelo.legend import Legend, LegendClass, load_legend
from suelo.reasons import ReasonCodes
from suelo.write import map_legend

#: How many offending point ids a message lists before "... and N more".
LISTED = 10
ASSESSMENT_FILES = ("assessment.json", "assessment.csv", "error_matrix.csv", "assessment.html")


@dataclass(frozen=True)
class Points:
    """The sample's points on the map's grid: ids, pixels, the columns read, and where they came from."""

    ids: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    frame: pd.DataFrame


def _listed(ids: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in ids[:LISTED])
    return shown + (f" and {len(ids) - LISTED} more" if len(ids) > LISTED else "")


def read_points(path: str | Path, values: ClassMap, reference_column: str) -> Points:
    """The sample's points as pixels of ``values``' grid; InputError for what cannot be assessed."""
    path = Path(path)
    frame, xs, ys = _read_table(path, values)
    if reference_column not in frame.columns:
        shown = ", ".join(str(c) for c in frame.columns if c != "geometry")
        raise InputError(path, f"no reference column {reference_column!r} (columns: {shown})")
    ids = frame["point_id"].to_numpy() if "point_id" in frame.columns else np.arange(1, len(frame) + 1)
    if len(frame) == 0:
        raise InputError(path, "the sample has no points")
    t = values.grid.transform  # north-up (suelo.grid.Grid): no rotation terms
    cols_f, rows_f = (xs - t.c) / t.a, (ys - t.f) / t.e
    rows, cols = np.floor(rows_f).astype(np.int64), np.floor(cols_f).astype(np.int64)
    outside = (rows < 0) | (rows >= values.grid.height) | (cols < 0) | (cols >= values.grid.width)
    outside |= ~np.isfinite(rows_f) | ~np.isfinite(cols_f)
    if outside.any():
        raise InputError(
            path,
            f"{int(outside.sum())} of {len(frame)} points lie outside {values.path.name} "
            f"({describe_grid(values.grid)}): points {_listed(ids[outside].tolist())}",
        )
    drawn_grid = _design_grid(frame)
    if drawn_grid is not None and drawn_grid != values.grid_id:
        raise InputError(
            path,
            f"the sample was drawn on another grid (design_grid {drawn_grid}) than {values.path.name} "
            f"({describe_grid(values.grid)}, grid {values.grid_id}): draw a sample on this map with "
            "suelo assess design",
        )
    if {"row", "col"} <= set(frame.columns):
        stated_rows = pd.to_numeric(frame["row"], errors="coerce").to_numpy()
        stated_cols = pd.to_numeric(frame["col"], errors="coerce").to_numpy()
        moved = (stated_rows != rows) | (stated_cols != cols)
        if moved.any():
            raise InputError(
                path,
                f"{int(moved.sum())} points are not at the row/col they were drawn at on this map's grid "
                f"({describe_grid(values.grid)}): the sample was drawn on another grid, or points were moved "
                f"(points {_listed(ids[moved].tolist())})",
            )
    return Points(ids, rows, cols, frame)


def _design_grid(frame: pd.DataFrame) -> str | None:
    if "design_grid" not in frame.columns:
        return None
    grids = sorted({str(g) for g in frame["design_grid"].dropna() if str(g).strip()})
    if len(grids) > 1:
        return "/".join(grids)  # points from several designs: no single grid
    return grids[0] if grids else None


def _read_table(path: Path, values: ClassMap) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The sample's attribute table and its points' coordinates in the map's CRS."""
    if not path.is_file():
        raise InputError(path, "the sample file does not exist" if not path.exists() else "not a regular file")
    if path.suffix.lower() in (".csv", ".txt"):
        try:
            frame = pd.read_csv(path, dtype={REFERENCE_COLUMN: "string", "interpreter_notes": "string"})
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise InputError(path, f"not a readable CSV table ({exc})") from exc
        lower = {str(c).lower(): c for c in frame.columns}
        same_grid = "x" in lower and "y" in lower and _design_grid(frame) == values.grid_id
        if same_grid:  # the design's own map coordinates: exact pixel centres, no round trip through degrees
            return frame, frame[lower["x"]].to_numpy(float), frame[lower["y"]].to_numpy(float)
        for lon_name, lat_name in (("lon", "lat"), ("longitude", "latitude")):
            if lon_name in lower and lat_name in lower:
                lon = pd.to_numeric(frame[lower[lon_name]], errors="coerce").to_numpy(float)
                lat = pd.to_numeric(frame[lower[lat_name]], errors="coerce").to_numpy(float)
                to_map = Transformer.from_crs("EPSG:4326", values.grid.crs.to_wkt(), always_xy=True)
                xs, ys = to_map.transform(lon, lat)
                return frame, np.asarray(xs, float), np.asarray(ys, float)
        raise InputError(path, "a CSV sample needs lon/lat columns in WGS84 degrees (or the design's x, y)")
    try:
        layers = [str(name) for name, _kind in pyogrio.list_layers(path)]
        layer = LAYER if LAYER in layers else layers[0]
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:  # pyogrio raises its own DataSourceError and friends for anything unreadable
        raise InputError(path, f"not a readable vector file ({exc})") from exc
    if frame.crs is None:
        raise InputError(path, "the sample's points have no CRS")
    if not frame.geometry.geom_type.isin(["Point"]).all():
        raise InputError(path, "the sample must be points (one per sample pixel)")
    points = frame.geometry.to_crs(values.grid.crs.to_wkt())
    return pd.DataFrame(frame.drop(columns="geometry")), points.x.to_numpy(), points.y.to_numpy()


def reference_legend(values: ClassMap, extra: Legend | None) -> Legend:
    """The classes a reference label may name: the map's classes, then those of ``extra`` it lacks."""
    classes = [LegendClass(e.code, e.name, e.color or "#cccccc") for e in values.classes]
    taken = {c.code for c in classes}
    reasons = set(values.reasons.as_tuple())
    for c in extra or ():
        if c.code in reasons:
            raise InputError(values.path, f"legend class {c.code} ({c.name}) collides with the map's reason codes")
        if c.code not in taken:
            classes.append(c)
            taken.add(c.code)
    return Legend(tuple(classes))


def parse_reference(
    path: Path, labels: pd.Series, legend: Legend, ids: np.ndarray, column: str
) -> tuple[np.ndarray, np.ndarray]:
    """(codes, labelled mask) of the reference column; InputError listing labels the legend lacks."""
    codes = np.full(len(labels), -1, dtype=np.int64)
    labelled = np.zeros(len(labels), dtype=bool)
    unknown: dict[str, list[Any]] = {}
    for i, value in enumerate(labels.tolist()):
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            continue
        text = str(value).strip()
        if not text:
            continue
        if isinstance(value, float) and value.is_integer():
            text = str(int(value))
        elif text.endswith(".0") and text[:-2].isdigit():
            text = text[:-2]
        code = legend.code_for(text)
        if code is None:
            unknown.setdefault(text, []).append(ids[i])
            continue
        codes[i], labelled[i] = code, True
    if unknown:
        shown = "; ".join(f"{label!r} (points {_listed(points)})" for label, points in list(unknown.items())[:LISTED])
        known = ", ".join(f"{c.code} {c.name}" for c in legend)
        raise InputError(path, f"reference labels not in the legend in column {column!r}: {shown}; the legend: {known}")
    return codes, labelled


@dataclass(frozen=True)
class Strata:
    """Each point's stratum and every stratum's size, with where they came from."""

    of_points: np.ndarray
    codes: tuple[int, ...]
    areas_ha: np.ndarray
    pixels: np.ndarray
    names: tuple[str, ...]
    source: str


def strata_on_grid(path: Path, grid: Grid, whose: str) -> RasterValues:
    """The strata raster at ``path``, which must be on ``grid`` (``whose``: the map's name, or "the job's")."""
    raster = read_values(path, "strata raster")
    if raster.grid_id != grid_digest(grid):
        raise InputError(
            path,
            f"the strata raster is on another grid ({describe_grid(raster.grid)}) than {whose} "
            f"({describe_grid(grid)}); resample it onto that grid",
        )
    return raster


def strata_from(
    sample_path: Path, points: Points, values: ClassMap, map_values: np.ndarray, strata_raster: Path | None
) -> Strata:
    frame = points.frame
    if strata_raster is not None:
        raster = strata_on_grid(strata_raster, values.grid, values.path.name)
        of_points = raster.values_at(points.rows, points.cols)
        missing = np.array([v == raster.nodata or v not in raster.pixels for v in of_points.tolist()])
        if missing.any():
            raise InputError(
                strata_raster, f"{int(missing.sum())} points fall on its no-data: points {_listed(points.ids[missing])}"
            )
        if "stratum" in frame.columns:
            stated = pd.to_numeric(frame["stratum"], errors="coerce").to_numpy()
            differ = stated != of_points
            if differ.any():
                raise InputError(
                    sample_path,
                    f"the sample's stratum column differs from {strata_raster.name} at {int(differ.sum())} points "
                    f"(points {_listed(points.ids[differ].tolist())}): it was not drawn on that raster",
                )
        codes = tuple(sorted(raster.pixels))
        return Strata(
            of_points, codes, np.array([raster.areas_ha[c] for c in codes]),
            np.array([raster.pixels[c] for c in codes]),
            tuple(f"stratum {c}" for c in codes), f"strata raster {strata_raster}",
        )  # fmt: skip
    if {"stratum", "stratum_area_ha"} <= set(frame.columns):
        return _strata_from_design(sample_path, points, values)
    codes = tuple(sorted(values.pixels))
    return Strata(
        map_values, codes, np.array([values.areas_ha[c] for c in codes]), np.array([values.pixels[c] for c in codes]),
        tuple(values.entry(c).name for c in codes), f"the map's values ({values.path.name})",
    )  # fmt: skip


def _strata_from_design(sample_path: Path, points: Points, values: ClassMap) -> Strata:
    frame = points.frame
    of_points = pd.to_numeric(frame["stratum"], errors="coerce").to_numpy()
    if np.isnan(of_points.astype(float)).any():
        raise InputError(sample_path, "the sample's stratum column has empty values")
    of_points = of_points.astype(np.int64)
    codes, areas, pixels, names = [], [], [], []
    for code in sorted(set(of_points.tolist())):
        rows = frame[of_points == code]
        area = pd.to_numeric(rows["stratum_area_ha"], errors="coerce").dropna().unique()
        count = pd.to_numeric(rows.get("stratum_pixels", pd.Series(dtype=float)), errors="coerce").dropna().unique()
        if len(area) != 1 or len(count) > 1:
            raise InputError(sample_path, f"stratum {code}: its points disagree on the stratum's area or pixels")
        name = rows["stratum_name"].iloc[0] if "stratum_name" in rows.columns else values.entry(code).name
        codes.append(code)
        areas.append(float(area[0]))
        pixels.append(float(count[0]) if len(count) else math.inf)
        names.append(str(name))
    return Strata(
        of_points,
        tuple(codes),
        np.array(areas),
        np.array(pixels),
        tuple(names),
        f"the sample's design ({sample_path.name})",
    )


def check_sample(spec: Any, map_path: Path, grid: Grid, legend: Legend, reasons: ReasonCodes) -> None:
    """What can be checked of a job's assessment sample before its map exists (``spec``: the job's
    :class:`suelo.settings.AssessmentSpec`): readable, its points on ``grid`` and drawn on it, its labels in the
    legend. InputError/ConfigError naming the file otherwise."""
    entries = tuple(Entry(e.code, e.name, e.color) for e in map_legend(legend, reasons))
    future = ClassMap(map_path, grid, reasons.nodata, {}, {}, None, "", entries, reasons)
    points = read_points(Path(spec.sample), future, spec.reference_column)
    extra = load_legend(spec.legend) if spec.legend is not None else None
    parse_reference(
        Path(spec.sample), points.frame[spec.reference_column], reference_legend(future, extra), points.ids,
        spec.reference_column,
    )  # fmt: skip
    if spec.strata is not None:
        strata_on_grid(Path(spec.strata), grid, "the job's")


def assess(
    map_path: str | Path,
    sample_path: str | Path,
    reference_column: str = REFERENCE_COLUMN,
    strata_raster: str | Path | None = None,
    legend: Legend | None = None,
    fpc: bool = DEFAULT_FPC,
    values: ClassMap | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The assessment (the ``assessment.json`` dict) and the points left out (id, reason, label)."""
    from suelo.assess.maps import read_class_map

    sample_path = Path(sample_path)
    values = values or read_class_map(map_path)
    points = read_points(sample_path, values, reference_column)
    map_values = values.values_at(points.rows, points.cols)
    strata = strata_from(
        sample_path, points, values, map_values, None if strata_raster is None else Path(strata_raster)
    )
    ref_legend = reference_legend(values, legend)
    reference, labelled = parse_reference(
        sample_path, points.frame[reference_column], ref_legend, points.ids, reference_column
    )
    dropped: list[dict[str, Any]] = []
    keep = labelled.copy()
    for i in np.flatnonzero(~labelled):
        dropped.append({"point_id": points.ids[i], "reason": "no reference label", "reference": ""})
    in_strata = np.isin(strata.of_points, strata.codes)
    for i in np.flatnonzero(labelled & ~in_strata):
        keep[i] = False
        dropped.append({"point_id": points.ids[i], "reason": "on the map's no-data (no stratum)", "reference": ""})
    index_of = {code: i for i, code in enumerate(strata.codes)}
    stratum_index = np.array([index_of.get(int(c), -1) for c in strata.of_points], dtype=np.int64)
    n_per = np.bincount(stratum_index[keep], minlength=len(strata.codes))
    short = [
        (code, name, int(n))
        for code, name, n, area in zip(
            strata.codes, strata.names, n_per.tolist(), strata.areas_ha.tolist(), strict=True
        )
        if area > 0 and n < 2
    ]
    if short:
        listed = "; ".join(f"stratum {c} ({name}): {n}" for c, name, n in short[:LISTED])
        raise InputError(
            sample_path,
            f"strata with fewer than 2 labelled points (the variance needs at least 2): {listed}; label more points "
            "there or draw a new sample",
        )
    # the map's classes, and the other legend classes the interpreters found (a class nobody found is no column:
    # its estimate would be 0 with SE 0, which says nothing the sample can support)
    mapped_classes = {e.code for e in values.classes}
    found = set(reference[keep].tolist())
    ref_legend = ref_legend.subset(c for c in ref_legend.codes if c in mapped_classes or c in found)
    class_codes = list(ref_legend.codes)
    reason_codes = [c for c in values.reasons.as_tuple() if c != values.reasons.nodata]
    present = set(values.pixels) | set(map_values[keep].tolist())
    rows = [c for c in class_codes if c in mapped_classes]
    rows += [c for c in reason_codes if c in present]
    rows += sorted(c for c in present if c not in rows)  # e.g. the map's no-data inside another stratum
    sample = StratifiedSample(
        stratum_index[keep], map_values[keep], reference[keep], strata.codes, strata.areas_ha, strata.pixels
    )
    result = estimate(sample, class_codes, rows, fpc=fpc)
    same_as_map = bool(np.all(strata.of_points[keep] == map_values[keep])) and set(strata.codes) <= set(values.pixels)
    assessment = _assessment_dict(
        values, sample_path, reference_column, points, keep, dropped, strata, result, ref_legend, same_as_map, fpc
    )
    if same_as_map:
        _exact_users_intervals(assessment, map_values[keep], reference[keep])
    return assessment, dropped


def _exact_users_intervals(assessment: dict[str, Any], map_values: np.ndarray, reference: np.ndarray) -> None:
    """With the map's values as strata a class's user's accuracy is a binomial proportion of its stratum's points:
    add its exact (Clopper-Pearson) 95 % interval beside the papers' Wald one, and warn where the Wald interval
    collapses to a point (every point right, or none: 12 of 12 right is 1.000 +- 0, exactly 0.735-1.000)."""
    from scipy.stats import beta

    pixels = {s["code"]: s["map_pixels"] for s in assessment["strata"]}
    for c in assessment["classes"]:
        in_stratum = map_values == c["code"]
        n, k = int(in_stratum.sum()), int((in_stratum & (reference == c["code"])).sum())
        if n == 0 or c["users_accuracy"] is None:
            continue
        if pixels.get(c["code"]) == n:  # every pixel of the stratum labelled: its accuracy is known, not estimated
            c["users_accuracy_exact_ci95"] = [k / n, k / n]
            continue
        low = float(beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0
        high = float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
        c["users_accuracy_exact_ci95"] = [low, high]
        if k in (0, n):
            assessment["warnings"].append(
                f"user's accuracy of {c['name']}: {k} of {n} points right, so its standard error is 0 and the "
                f"interval {k / n:.3f} +- 0 understates the uncertainty; the exact (Clopper-Pearson) 95% interval "
                f"is {low:.3f}-{high:.3f}"
            )


def _assessment_dict(
    values: ClassMap,
    sample_path: Path,
    reference_column: str,
    points: Points,
    keep: np.ndarray,
    dropped: list[dict[str, Any]],
    strata: Strata,
    result: Estimates,
    ref_legend: Legend,
    same_as_map: bool,
    fpc: bool,
) -> dict[str, Any]:
    reasons_dropped: dict[str, int] = {}
    for d in dropped:
        reasons_dropped[d["reason"]] = reasons_dropped.get(d["reason"], 0) + 1
    estimator = (
        "stratified estimation, strata = the map's values (Olofsson et al. 2013, 2014)"
        if same_as_map
        else "stratified estimation, strata other than the map's values (Stehman 2014)"
    )
    warnings: list[str] = []
    if dropped:
        warnings.append(
            f"{len(dropped)} of {len(points.ids)} points were left out ("
            + ", ".join(f"{n} {why}" for why, n in reasons_dropped.items())
            + "): the estimates assume the labelled points of each stratum are a random subset of its points"
        )
    if values.pixel_area_m2 is not None and "mercator" in values.area_basis and "transverse" not in values.area_basis:
        warnings.append(
            f"areas are cell areas of {values.grid.crs.to_string()}, a Mercator projection whose scale error grows "
            "with latitude: reproject the map to an equal-area CRS before assessing areas"
        )
    n_per = np.bincount(np.searchsorted(strata.codes, strata.of_points[keep]), minlength=len(strata.codes))
    total = float(strata.areas_ha.sum())
    classes = []
    for c in ref_legend:
        mapped_pixels = int(values.pixels.get(c.code, 0))
        classes.append(
            {
                "code": c.code, "name": c.name, "color": c.color, "mapped_pixels": mapped_pixels,
                "mapped_area_ha": float(values.areas_ha.get(c.code, 0.0)),
                "users_accuracy": _or_none(result.users_accuracy[c.code]),
                "producers_accuracy": _or_none(result.producers_accuracy[c.code]),
                "area_proportion": result.area_proportion[c.code].to_dict(),
                "area_ha": result.area_ha[c.code].to_dict(),
            }
        )  # fmt: skip
    return {
        "title": f"Accuracy and area of {values.path.name}",
        "map": {
            "path": str(values.path), "sha256": file_sha256(values.path), "grid": values.grid.to_dict(),
            "grid_id": values.grid_id, "pixel_area_m2": values.pixel_area_m2, "area_basis": values.area_basis,
            "mapped_pixels": {str(k): v for k, v in sorted(values.pixels.items())},
        },
        "sample": {
            "path": str(sample_path), "sha256": file_sha256(sample_path), "reference_column": reference_column,
            "points": len(points.ids), "used": int(keep.sum()), "dropped": reasons_dropped,
            "dropped_file": "dropped_points.csv" if dropped else None,
        },
        "strata_source": strata.source,
        "estimator": estimator,
        "fpc": fpc,
        "confidence_level": 0.95,
        "total_area_ha": total,
        "strata": [
            {"code": c, "name": name, "map_pixels": int(p) if math.isfinite(p) else None, "map_area_ha": float(a),
             "weight": float(a) / total if total else 0.0, "n": int(n)}
            for c, name, p, a, n in zip(
                strata.codes, strata.names, strata.pixels.tolist(), strata.areas_ha, n_per, strict=True
            )
        ],
        "overall_accuracy": result.overall_accuracy.to_dict(),
        "mapped_share": result.mapped_share.to_dict(),
        "correct_share": result.correct_share.to_dict(),
        "classes": classes,
        "error_matrix": {
            "rows": [{"code": c, "name": values.entry(c).name if c not in ref_legend.codes
                      else ref_legend.by_code(c).name} for c in result.matrix_rows],
            "columns": [{"code": c, "name": ref_legend.by_code(c).name} for c in result.matrix_columns],
            "proportions": np.nan_to_num(result.matrix).tolist(),
            "se": np.nan_to_num(result.matrix_se).tolist(),
            "counts": result.counts.tolist(),
        },
        "warnings": warnings,
    }  # fmt: skip


def _or_none(value: Any) -> dict[str, Any] | None:
    return None if value.estimate is None else dict(value.to_dict())


def write_assessment(folder: str | Path, assessment: dict[str, Any], dropped: Sequence[dict[str, Any]]) -> list[Path]:
    """``assessment.json``, ``assessment.csv``, ``error_matrix.csv``, ``assessment.html`` (+ dropped_points.csv)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "assessment.json", assessment)
    files = [
        folder / "assessment.json",
        write_table_csv(folder / "assessment.csv", assessment),
        error_matrix_csv(folder / "error_matrix.csv", assessment),
        write_assessment_page(folder / "assessment.html", assessment),
    ]
    if dropped:
        path = folder / "dropped_points.csv"
        with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["point_id", "reason", "reference"])
            writer.writeheader()
            for row in dropped:
                writer.writerow({k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
        files.append(path)
    return files


def summary_lines(assessment: dict[str, Any]) -> list[str]:
    """A few lines for the terminal: overall accuracy and each class's estimated area."""
    oa = assessment["overall_accuracy"]
    lines = []
    if oa["estimate"] is not None:
        low, high = oa["ci95"]
        lines.append(f"overall accuracy of the mapped area {oa['estimate']:.3f} (95% CI {low:.3f}-{high:.3f})")
    for c in assessment["classes"]:
        area = c["area_ha"]
        if area["estimate"]:
            lines.append(
                f"  {c['code']} {c['name']}: {area['estimate']:,.1f} ha (95% CI {area['ci95'][0]:,.1f}-"
                f"{area['ci95'][1]:,.1f}); mapped {c['mapped_area_ha']:,.1f} ha"
            )
    return lines
