"""Urban atlas product: minimum mapping units (sieve) and the vector layer (GeoPackage).

Sieve. Urban Atlas 2018 maps urban classes (codes 1xxxx) down to 0.25 ha and all others down to 1 ha. Connected
patches (4-connectivity, the same as the polygons) of one class smaller than their class's MMU are merged into a
neighbouring class, repeatedly until nothing changes:

- The target is the adjacent class with the highest score. With posteriors given, the score of class ``k`` is
  the mean posterior of ``k`` over the patch (what the model thought the patch would be if not its own class);
  without them, it is the mean confidence of the neighbour's pixels along the patch's outer border (the
  neighbour the model is surest about). Ties go to the longer shared border, then to the lower code.
- Patches are processed smallest first. A patch touching a pixel changed earlier in the same pass waits for the
  next pass (its neighbourhood is stale); each pass merges at least the smallest mergeable patch, so it stops.
- Reason-code pixels (nodata, too few observations, low confidence) are not a class: they are never merged, never
  a merge target, and their pixels do not count towards a patch. A small patch surrounded only by reason codes
  (or the area's edge) has nowhere to go and is kept.

Vector. One feature per patch, as Urban Atlas delivers it: every 4-connected region of one class (after the sieve)
is polygonized (``rasterio.features.shapes``) into one polygon, holes included, with ``patch_id`` (1, 2, ...
in class order, then in raster order), ``code``, ``class_name``, ``area_ha`` (pixel count x pixel area, exact in
the grid's CRS whatever the output CRS) and ``confidence`` (mean calibrated confidence over the patch's pixels,
percent, 0-100). Reason-code pixels are omitted by default; ``include_reasons`` adds their patches with their
reason code and name (e.g. "unclassified (low confidence)"), never as a class.

Style. The GeoPackage carries its QGIS style as the layer's default (table ``layer_styles``, written by
suelo.assess.sample_style): categorized by ``code``, each class filled in the legend's colour and named as in the
legend, so the layer opens looking like the map.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import geopandas as gpd
import numpy as np
from scipy import ndimage

from suelo.atomic import atomic_output
from suelo.data import LEGENDS
from suelo.grid import Grid, as_crs
from suelo.legend import Legend, load_legend
from suelo.reasons import REASON_STYLE, URBAN_ATLAS_REASONS
from suelo.style import categorized_fill_qml, write_layer_style

URBAN_ATLAS_LEGEND = LEGENDS / "urban_atlas_2018.yaml"

# Reason codes of the uint16 urban-atlas map: the map writer's (0 nodata, 65534 too few clear observations, i.e.
# Urban Atlas' "clouds, shadows", 65535 unclassified (low confidence), 65533 outside the segmenter's training
# data); UA's own 91000/92000 do not fit uint16.
UA_REASONS = URBAN_ATLAS_REASONS
UA_NODATA = UA_REASONS.nodata
UA_TOO_FEW_OBSERVATIONS = UA_REASONS.too_few_observations
UA_LOW_CONFIDENCE = UA_REASONS.low_confidence
UA_OUTSIDE_TRAINING = UA_REASONS.outside_training
UA_REASON_NAMES: dict[int, str] = UA_REASONS.names()  # the same names as the map's legend and style

MMU_URBAN_HA = 0.25
MMU_OTHER_HA = 1.0

#: The GeoPackage layer: its name, its fields in order (besides the geometry) and what QGIS calls them.
UA_LAYER = "urban_atlas"
UA_FIELDS: tuple[str, ...] = ("patch_id", "code", "class_name", "area_ha", "confidence")
UA_ALIASES: dict[str, str] = {
    "patch_id": "Patch id",
    "code": "Class (code)",
    "class_name": "Class",
    "area_ha": "Area (ha)",
    "confidence": "Mean confidence (%)",
}
UA_STYLE_NAME = "suelo urban atlas"


def ua_class_name(code: int) -> str:
    for entry in urban_atlas_legend():
        if entry.code == int(code):
            return entry.name
    return UA_REASON_NAMES.get(int(code), str(code))


@functools.cache
def urban_atlas_legend(path: str | Path = URBAN_ATLAS_LEGEND) -> Legend:
    """The Urban Atlas 2018 nomenclature with the EEA colours (data/legends/urban_atlas_2018.yaml)."""
    return load_legend(path)


def is_urban(code: int) -> bool:
    return 10000 <= int(code) < 20000


def mmu_pixels(code: int, resolution: float | tuple[float, float]) -> int:
    """Minimum mapping unit of ``code`` in pixels of ``resolution`` metres (0.25 ha urban, 1 ha otherwise)."""
    # np.isscalar also takes numpy scalars, but is no type guard: the pair is spelled out for mypy
    rx, ry = cast("tuple[float, float]", (resolution, resolution) if np.isscalar(resolution) else resolution)
    hectares = MMU_URBAN_HA if is_urban(code) else MMU_OTHER_HA
    return int(np.ceil(hectares * 10_000 / (float(rx) * float(ry)) - 1e-9))


_FOUR = ndimage.generate_binary_structure(2, 1)


def _components(codes: np.ndarray, class_codes: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Component id per pixel (0 = not a class), and per component id its code and size."""
    ids = np.zeros(codes.shape, dtype=np.int64)
    comp_codes = [0]
    next_id = 1
    for code in class_codes:
        lab, n = ndimage.label(codes == code, structure=_FOUR)
        if n:
            ids[lab > 0] = lab[lab > 0] + (next_id - 1)
            comp_codes += [int(code)] * n
            next_id += n
    sizes = np.bincount(ids.ravel(), minlength=next_id)
    return ids, np.asarray(comp_codes, dtype=np.int64), sizes


def sieve(
    codes: np.ndarray,
    confidence: np.ndarray,
    class_codes: Sequence[int] | np.ndarray,
    resolution: float | tuple[float, float],
    posteriors: np.ndarray | None = None,
    mmu: Mapping[int, int] | None = None,
    max_passes: int = 100,
    unresolved: int | None = None,
) -> np.ndarray:
    """Merge patches below the MMU into their best-scoring neighbour (module docstring); returns new codes.

    ``codes`` (y, x) holds class codes or reason codes (anything not in ``class_codes``); ``confidence`` (y, x)
    any monotone confidence (0-1 or 0-100); ``posteriors`` optional (class, y, x) in ``class_codes`` order;
    ``mmu`` overrides the per-class minimum size in pixels. A patch below its MMU with no class neighbour to merge
    into (an island among reason codes) becomes ``unresolved`` when given (e.g. the low-confidence code), so that
    every class patch of the result honours the MMU; with ``unresolved=None`` it is left as it is.
    """
    codes = np.array(codes, copy=True)
    class_codes = [int(c) for c in class_codes]
    index_of = {c: i for i, c in enumerate(class_codes)}
    limit = {c: (mmu or {}).get(c, mmu_pixels(c, resolution)) for c in class_codes}
    conf = np.asarray(confidence, dtype=np.float64)
    h, w = codes.shape
    stuck: set[tuple[int, int, int]] = set()  # (code, first pixel, size) of patches with no class neighbour
    for _ in range(max_passes):
        ids, comp_code, sizes = _components(codes, class_codes)
        small = [i for i in range(1, len(comp_code)) if sizes[i] < limit[int(comp_code[i])] and sizes[i] > 0]
        if not small:
            break
        objects = ndimage.find_objects(ids)
        small.sort(key=lambda i: (sizes[i], i))
        dirty = np.zeros(codes.shape, dtype=bool)
        merged = 0
        for i in small:
            sl = objects[i - 1]
            r0, r1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, h)
            c0, c1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, w)
            patch = ids[r0:r1, c0:c1] == i
            if dirty[r0:r1, c0:c1][ndimage.binary_dilation(patch, _FOUR)].any():
                continue
            local = codes[r0:r1, c0:c1]
            ring = ndimage.binary_dilation(patch, _FOUR) & ~patch
            neighbours = local[ring]
            candidates = sorted({int(v) for v in np.unique(neighbours) if int(v) in index_of} - {int(comp_code[i])})
            key = (int(comp_code[i]), int(np.flatnonzero(patch.ravel())[0]) + r0 * w + c0, int(sizes[i]))
            if not candidates:
                stuck.add(key)
                continue
            scores = []
            for cand in candidates:
                along = ring & (local == cand)
                if posteriors is not None:
                    score = float(posteriors[index_of[cand], r0:r1, c0:c1][patch].mean())
                else:
                    score = float(conf[r0:r1, c0:c1][along].mean())
                scores.append((score, int(along.sum()), -cand))
            best = -max(scores)[2]
            local[patch] = best
            dirty[r0:r1, c0:c1] |= patch
            merged += 1
        if merged == 0:
            break
    if unresolved is not None:
        ids, comp_code, sizes = _components(codes, class_codes)
        too_small = np.zeros(len(comp_code), dtype=bool)
        for i in range(1, len(comp_code)):
            too_small[i] = 0 < sizes[i] < limit[int(comp_code[i])]
        codes[too_small[ids]] = unresolved
    return codes


def percent_confidence(confidence: np.ndarray) -> np.ndarray:
    """Confidence in percent (float64, NaN where there is none).

    Integer arrays are percent already (the confidence band: 0..100, 255 none). Float arrays are percent too,
    unless every finite value lies within 0..1: then they are fractions and are scaled by 100 (a calibrated top-1
    posterior is at least 1/classes, so percent values never all lie below 1 %). Values outside 0..100 after that
    (255, negative) and non-finite ones count as no confidence.
    """
    fractions = False
    if np.asarray(confidence).dtype.kind == "f":
        top = np.nanmax(np.abs(confidence), initial=-np.inf, where=np.isfinite(confidence))
        fractions = bool(0 <= top <= 1.0)
    values = np.array(confidence, dtype=np.float64)  # a copy, changed in place below (maps are large)
    if fractions:
        values *= 100.0
    with np.errstate(invalid="ignore"):
        values[~((values >= 0) & (values <= 100))] = np.nan  # NaN and infinities fail both comparisons
    return values


def _names_and_colours(codes: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """Code -> (name, colour) for Urban Atlas classes and the uint16 reason codes (nodata: no colour)."""
    legend = {entry.code: (entry.name, entry.color) for entry in urban_atlas_legend()}
    reasons = {code: REASON_STYLE[reason] for reason, code in UA_REASONS.to_dict().items()}
    return {int(c): legend.get(int(c)) or reasons.get(int(c)) or (str(int(c)), None) for c in codes}


def patch_polygons(
    codes: np.ndarray,
    confidence: np.ndarray,
    grid: Grid,
    class_codes: Sequence[int] | np.ndarray,
    include_reasons: bool = False,
) -> gpd.GeoDataFrame:
    """One polygon per 4-connected patch (grid CRS): patch_id, code, class_name, pixels, area_ha, confidence.

    ``confidence`` (y, x) as :func:`percent_confidence` reads it; a patch's ``confidence`` is the mean over its
    pixels that have one (NaN when none has).
    """
    from rasterio.features import shapes
    from shapely.geometry import shape

    keep = [int(c) for c in class_codes]
    if include_reasons:
        keep += [int(c) for c in np.unique(codes) if int(c) in UA_REASON_NAMES and int(c) not in keep]
    ids, comp_code, sizes = _components(codes, keep)
    pct = percent_confidence(confidence)
    known = ~np.isnan(pct)
    pct[~known] = 0.0
    conf_sum = np.bincount(ids.ravel(), weights=pct.ravel(), minlength=len(sizes))
    conf_n = np.bincount(ids.ravel(), weights=known.ravel(), minlength=len(sizes))
    del pct, known
    pixel_ha = abs(grid.transform.a * grid.transform.e) / 10_000
    # a 4-connected patch is one polygon (holes included): shapes() joins pixels of one value with the same rule
    found = {
        int(value): shape(geom)
        for geom, value in shapes(ids.astype(np.int32), mask=ids > 0, transform=grid.transform, connectivity=4)
    }
    order = sorted(found)  # component ids: class order, then raster order of each class's patches
    index = np.asarray(order, dtype=np.int64)
    names = _names_and_colours(keep)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = conf_sum[index] / conf_n[index] if index.size else np.zeros(0)
    return gpd.GeoDataFrame(
        {
            "patch_id": np.arange(1, len(order) + 1, dtype=np.int64),
            "code": comp_code[index].astype(np.int64),
            "class_name": [names[int(c)][0] for c in comp_code[index]],
            "pixels": sizes[index].astype(np.int64),
            "area_ha": sizes[index].astype(np.float64) * pixel_ha,
            "confidence": np.asarray(mean, dtype=np.float64),
        },
        geometry=[found[i] for i in order],
        crs=grid.crs,
    )


def urban_atlas_qml(class_codes: Sequence[int] | np.ndarray, include_reasons: bool = False) -> str:
    """The polygons' QGIS style: categorized by ``code``, the classes in the legend's colours and names (and the
    reason codes in theirs, nodata transparent, when ``include_reasons``)."""
    codes = [int(c) for c in class_codes]
    if include_reasons:
        codes += [c for c in UA_REASON_NAMES if c not in codes]
    names = _names_and_colours(codes)
    return categorized_fill_qml(
        [(code, *names[code]) for code in codes], "code", UA_ALIASES, "\"class_name\" || ' (' || \"patch_id\" || ')'"
    )


def write_geopackage(layer: gpd.GeoDataFrame, path: Path, layer_name: str = UA_LAYER, style: str | None = None) -> None:
    """Write ``layer`` to a GeoPackage atomically (temp file beside it, then rename); ``style`` (QML), when given,
    is stored in it as the layer's default QGIS style before the file is published."""
    with atomic_output(Path(path)) as tmp:
        tmp.unlink()  # the GPKG driver creates its own file; an existing empty one is not a GeoPackage
        with warnings.catch_warnings():
            # GDAL warns that a GeoPackage should end in .gpkg; only the temporary name does not
            warnings.simplefilter("ignore", RuntimeWarning)
            # declared, so that an empty layer (nothing mapped) is still a polygon layer the style applies to
            geometry_type = "Polygon" if layer.empty or set(layer.geom_type) == {"Polygon"} else None
            layer.to_file(tmp, driver="GPKG", layer=layer_name, engine="pyogrio", geometry_type=geometry_type)
        if style is not None:
            write_layer_style(tmp, layer_name, style, UA_STYLE_NAME, "Urban atlas styled by suelo: legend colours")


def urban_atlas_vector(
    codes: np.ndarray,
    confidence: np.ndarray,
    grid: Grid,
    class_codes: Sequence[int] | np.ndarray,
    path: Path | None = None,
    crs: Any = "EPSG:3035",
    posteriors: np.ndarray | None = None,
    sieve_first: bool = True,
    include_reasons: bool = False,
) -> gpd.GeoDataFrame:
    """Sieve (optional), polygonize one feature per patch and reproject; written to ``path`` (with its style) if
    given. ``confidence`` in percent, or as fractions (:func:`percent_confidence`)."""
    if sieve_first:
        codes = sieve(codes, confidence, class_codes, grid.resolution, posteriors)
    patches = patch_polygons(codes, confidence, grid, class_codes, include_reasons)
    layer = gpd.GeoDataFrame(patches[list(UA_FIELDS)], geometry=patches.geometry, crs=patches.crs)
    if crs is not None:
        layer = layer.to_crs(as_crs(crs))
    if path is not None:
        write_geopackage(layer, Path(path), style=urban_atlas_qml(class_codes, include_reasons))
    return layer
