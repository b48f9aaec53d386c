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

Vector. Patches are polygonized (``rasterio.features.shapes``), then dissolved by class: one (multi)polygon per
class with ``code``, ``class_name``, ``area_ha`` (pixel count x pixel area, exact in the grid's CRS whatever the
output CRS) and ``mean_confidence`` (mean over the class's pixels, 0-100). Reason-code pixels are omitted by
default; ``include_reasons`` adds them as rows with their reason code and name (e.g. "unclassified (low
confidence)"), never as a class.
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
from suelo.reasons import URBAN_ATLAS_REASONS

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


def patch_polygons(
    codes: np.ndarray,
    confidence: np.ndarray,
    grid: Grid,
    class_codes: Sequence[int] | np.ndarray,
    include_reasons: bool = False,
) -> gpd.GeoDataFrame:
    """One polygon per 4-connected patch (grid CRS) with code, class_name, area_ha, mean_confidence, pixels."""
    from rasterio.features import shapes
    from shapely.geometry import shape

    keep = list(class_codes)
    if include_reasons:
        keep += [int(c) for c in np.unique(codes) if int(c) in UA_REASON_NAMES and int(c) not in keep]
    ids, comp_code, sizes = _components(codes, keep)
    conf = np.asarray(confidence, dtype=np.float64)
    conf_sum = np.bincount(ids.ravel(), weights=np.where(np.isfinite(conf), conf, 0).ravel(), minlength=len(sizes))
    pixel_ha = abs(grid.transform.a * grid.transform.e) / 10_000
    rows = []
    for geom, value in shapes(ids.astype(np.int32), mask=ids > 0, transform=grid.transform, connectivity=4):
        i = int(value)
        rows.append((int(comp_code[i]), shape(geom), int(sizes[i]), float(conf_sum[i])))
    return gpd.GeoDataFrame(
        {
            "code": np.asarray([r[0] for r in rows], dtype=np.int64),
            "class_name": [ua_class_name(r[0]) for r in rows],
            "pixels": np.asarray([r[2] for r in rows], dtype=np.int64),
            "area_ha": np.asarray([r[2] * pixel_ha for r in rows], dtype=np.float64),
            "mean_confidence": np.asarray([r[3] / max(r[2], 1) for r in rows], dtype=np.float64),
        },
        geometry=[r[1] for r in rows],
        crs=grid.crs,
    )


def dissolve_by_class(patches: gpd.GeoDataFrame, crs: Any = None) -> gpd.GeoDataFrame:
    """One (multi)polygon per code: area summed, confidence pixel-weighted; reprojected to ``crs`` if given."""
    if patches.empty:
        out = gpd.GeoDataFrame(
            {"code": [], "class_name": [], "area_ha": [], "mean_confidence": []}, geometry=[], crs=patches.crs
        )
    else:
        p = patches.assign(conf_sum=patches["mean_confidence"] * patches["pixels"])
        out = p.dissolve(
            by="code", aggfunc={"class_name": "first", "pixels": "sum", "area_ha": "sum", "conf_sum": "sum"}
        )
        out = out.reset_index()
        out["mean_confidence"] = out["conf_sum"] / out["pixels"].clip(lower=1)
        out = out[["code", "class_name", "area_ha", "mean_confidence", "geometry"]]
    if crs is not None:
        out = out.to_crs(as_crs(crs))
    return out


def write_geopackage(layer: gpd.GeoDataFrame, path: Path, layer_name: str = "urban_atlas") -> None:
    """Write ``layer`` to a GeoPackage atomically (temp file beside it, then rename)."""
    with atomic_output(Path(path)) as tmp:
        tmp.unlink()  # the GPKG driver creates its own file; an existing empty one is not a GeoPackage
        with warnings.catch_warnings():
            # GDAL warns that a GeoPackage should end in .gpkg; only the temporary name does not
            warnings.simplefilter("ignore", RuntimeWarning)
            layer.to_file(tmp, driver="GPKG", layer=layer_name)


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
    """Sieve (optional), polygonize, dissolve by class and reproject; written to ``path`` if given."""
    if sieve_first:
        codes = sieve(codes, confidence, class_codes, grid.resolution, posteriors)
    layer = dissolve_by_class(patch_polygons(codes, confidence, grid, class_codes, include_reasons), crs)
    if path is not None:
        write_geopackage(layer, Path(path))
    return layer
