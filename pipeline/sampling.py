"""Which labelled samples training uses, and how large its spatial validation blocks are.

Polygons and label rasters give every pixel inside them as a sample: 365,000 pixels from one scene's polygons
took a user 31 minutes for 19 of 200 epochs. Pixels of one polygon are nearly copies of each other (one field,
one crop, one date of ploughing), so past a few dozen they add little but time, and they let a few large polygons
outweigh many small ones in the loss. :func:`cap_samples` keeps at most ``max_per_polygon`` pixels of each polygon
and ``max_per_class`` samples of each class, chosen at random but reproducibly (a seeded hash of each sample id,
so the choice does not depend on file order or on which other files were loaded).

Spatial blocks (:func:`suelo.samples.spatial_split`) must be small next to the samples' extent, or the greedy
filling of whole blocks cannot come near the requested fraction: 10 km blocks over a 15 km scene are four blocks,
and a user got 54 % of the samples in validation instead of 20 %. :func:`auto_block_m` picks the largest block of
a fixed ladder (10 km down to 250 m) at which the samples fill enough blocks.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from suelo.samples import _M_PER_DEG, Samples, spatial_blocks

# 50 pixels of one polygon (0.5 ha at 10 m) keep the spread inside a field (edges, wetter and drier parts) while
# giving a small parcel and a 30 ha forest nearly the same weight; 1,000 polygons still give 50,000 samples.
DEFAULT_MAX_PER_POLYGON = 50
# 20,000 samples of one class are far more than a 64-unit head needs (the shipped model learns from a few hundred
# points per class) and bound an epoch to about 20,000 x classes samples whatever the label source.
DEFAULT_MAX_PER_CLASS = 20_000
# The block ladder: 1-2-5 steps read well in a log line and in the model's metadata ("2 km blocks").
AUTO_BLOCK_SIZES_M: tuple[float, ...] = (10_000.0, 5_000.0, 2_000.0, 1_000.0, 500.0, 250.0)
# With at least 50 equally filled blocks each holds 2 % of the samples, so filling 20 % with whole blocks lands
# within about one block (2 points) of it, and the test and stopping splits carved next still have blocks to use.
MIN_EFFECTIVE_BLOCKS = 50.0


def sample_keys(sample_ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per sample id: the order in which :func:`cap_samples` keeps samples.

    A hash of the id, not a random draw by position, so the same sample gets the same key whatever else is loaded
    and in whichever order (a subset keeps its members' keys)."""
    prefix = f"{int(seed)}\x00".encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + str(s).encode(), digest_size=8).digest(), "little")
            for s in sample_ids
        ),
        dtype=np.uint64,
        count=len(sample_ids),
    )


def cap_samples(
    samples: Samples, max_per_polygon: int | None, max_per_class: int | None, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Indices (ascending) of the samples to keep, and what was available and kept per class.

    First at most ``max_per_polygon`` samples of each feature (``samples.features``: a polygon's pixels share
    one; a point, a WorldCereal sample and a label-raster pixel are their own feature, so they are never reduced
    by this cap). Then at most ``max_per_class`` samples of each class, stratified over its features: every
    feature's first-ranked sample before any feature's second, so a class capped from 300 polygons keeps samples
    of all 300, not of the few largest. ``None`` (or 0) means no cap. Deterministic for a given ``seed``.
    """
    n = len(samples)
    labels = samples.labels
    available = {int(c): int(k) for c, k in zip(*np.unique(labels, return_counts=True), strict=True)}
    keep = np.ones(n, dtype=bool)
    capped_features = 0
    if n and (max_per_polygon or max_per_class):
        keys = sample_keys(samples.sample_ids, seed)
        _, feature = np.unique(samples.features.astype(str), return_inverse=True)
        # rank of each sample inside its feature, in key order
        order = np.lexsort((keys, feature))
        sorted_feature = feature[order]
        starts = np.flatnonzero(np.r_[True, sorted_feature[1:] != sorted_feature[:-1]])
        first = np.repeat(starts, np.diff(np.r_[starts, n]))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - first
        if max_per_polygon:
            keep &= rank < max_per_polygon
            capped_features = int(np.unique(feature[rank >= max_per_polygon]).size)
        if max_per_class:
            for code in np.unique(labels):
                members = np.flatnonzero(keep & (labels == code))
                if len(members) > max_per_class:
                    # round robin over the class's features: by rank first, then by key
                    chosen = members[np.lexsort((keys[members], rank[members]))[:max_per_class]]
                    keep[members] = False
                    keep[chosen] = True
    index = np.flatnonzero(keep)
    kept_labels = labels[index]
    report = {
        "max_per_polygon": max_per_polygon or None,
        "max_per_class": max_per_class or None,
        "seed": int(seed),
        "available": available,
        "kept": {c: int((kept_labels == c).sum()) for c in available},
        "features": int(np.unique(samples.features.astype(str)).size) if n else 0,
        "features_capped": capped_features,
    }
    return index, report


def effective_blocks(anchors: np.ndarray, block_m: float) -> tuple[int, float]:
    """Number of occupied ``block_m`` blocks and their effective number ``(sum n)^2 / sum n^2`` (n = samples per
    block): equal blocks count fully, a block holding most of the samples counts as about one."""
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if not len(anchors):
        return 0, 0.0
    # polygon pixels share their polygon's anchor: compute block ids once per distinct anchor
    unique, weight = np.unique(anchors, axis=0, return_counts=True)
    _, block = np.unique(spatial_blocks(unique, block_m).astype(str), return_inverse=True)
    sizes = np.bincount(block, weights=weight)
    return len(sizes), float(sizes.sum() ** 2 / (sizes**2).sum())


def auto_block_m(
    anchors: np.ndarray,
    min_blocks: float = MIN_EFFECTIVE_BLOCKS,
    sizes: tuple[float, ...] = AUTO_BLOCK_SIZES_M,
) -> tuple[float, dict[str, Any]]:
    """The largest block size of ``sizes`` at which the samples fill at least ``min_blocks`` effective blocks
    (:func:`effective_blocks`); the smallest size when none does. Never larger than 10 km, the block size the
    shipped model was made with, and never below 250 m (25 px): smaller blocks would put neighbouring pixels of
    one field on both sides of the split, and cannot help where one polygon holds most of the samples anyway."""
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    tried = []
    chosen = sizes[-1]
    for size in sizes:
        count, effective = effective_blocks(anchors, size)
        tried.append({"block_m": size, "blocks": count, "effective_blocks": round(effective, 1)})
        if effective >= min_blocks:
            chosen = size
            break
    info = next(t for t in tried if t["block_m"] == chosen) | {
        "min_effective_blocks": min_blocks,
        "extent_km": extent_km(anchors),
    }
    return chosen, info


def extent_km(latlons: np.ndarray) -> list[float]:
    """North-south and east-west extent of the points in km (east-west at their mean latitude)."""
    latlons = np.asarray(latlons, dtype=np.float64).reshape(-1, 2)
    if not len(latlons):
        return [0.0, 0.0]
    lat = latlons[:, 0]
    ns = (lat.max() - lat.min()) * _M_PER_DEG / 1000
    ew = (latlons[:, 1].max() - latlons[:, 1].min()) * _M_PER_DEG * np.cos(np.radians(lat.mean())) / 1000
    return [round(float(ns), 2), round(float(ew), 2)]
