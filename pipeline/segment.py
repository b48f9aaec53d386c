"""Segment: a fully convolutional model over an arbitrarily large area, in overlapping windows, without seams.

How a prediction is assembled:

- Windows of ``window`` pixels step by ``stride = window - overlap``; window origins are multiples of ``stride``
  from the area's origin and ``stride`` is a multiple of the model's ``2 ** depth``, so every window sees the same
  pooling phase as an untiled run. The last window of a row/column is cut at the area's edge rather than shifted
  back (a shifted window would pool with another phase); the model pads it to ``2 ** depth`` exactly as an untiled
  run pads the area.
- Each window's logits are weighted by a separable window: on a side shared with a neighbouring window the weight
  is 0 for the first ``overlap // 3`` pixels (where the window's own zero padding corrupts the output), then rises
  as a raised cosine to 1 at ``overlap - overlap // 3``; on a side at the area's edge it is 1. Weighted logits and
  weights are summed and divided. Wherever two windows overlap at least one has full weight, so the sum is never 0.
  With a receptive-field radius of at most ``overlap // 3`` the result equals the untiled prediction (up to float
  rounding); with a larger one the blend hides the (small) differences.
- Logits, not probabilities, are blended, so the result can be calibrated exactly like an untiled prediction
  (``suelo.calibrate.Calibration.apply``). The default calibration ("none") is a plain softmax.
- Memory: the area is processed in output blocks of ``block`` pixels; each block runs the windows that touch it
  (including the parts of those windows outside the block) and keeps only its own pixels, so memory is bounded by
  the block and one batch of windows, never by the area. Windows straddling two blocks are run twice; the result
  is identical because every window is a pure function of its position.
- "Outside the training data" (:func:`segment_outside_training`) is per pixel: the segmenter's novelty gate scores
  each pixel's input vector (the features ``segment_cube`` feeds the network), tile by tile, with no blending.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import xarray as xr

from suelo.calibrate import Calibration
from suelo.grid import carry_grid, tile_slices
from suelo.novelty import NoveltyGate

ReadWindow = Callable[[slice, slice], np.ndarray]  # (rows, cols) -> (C, rows, cols) float32

CPU_WINDOW_BATCH = 1  # a 256 px window of ~170 channels is 45 MB of input alone; batching adds no speed on CPU
GPU_WINDOW_BATCH = 32


def axis_weight(length: int, overlap: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1-D blending weight of a window side: 0 over the discarded margin, raised-cosine ramp, then 1."""
    w = np.ones(length, dtype=np.float64)
    if overlap <= 0:
        return w
    margin = overlap // 3
    ramp_len = max(1, overlap - 2 * margin)
    i = np.arange(length, dtype=np.float64)
    ramp = np.clip((i - margin + 0.5) / ramp_len, 0.0, 1.0)
    ramp = np.sin(ramp * math.pi / 2) ** 2
    if taper_start:
        w = np.minimum(w, ramp)
    if taper_end:
        w = np.minimum(w, ramp[::-1])
    return w


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Origins (multiples of ``stride``) of the windows covering ``[0, size)``."""
    if size <= window:
        return [0]
    return list(range(0, size - window + stride, stride))


def _aligned_stride(window: int, overlap: int, multiple: int) -> int:
    stride = (window - overlap) // multiple * multiple
    if stride <= 0:
        raise ValueError(f"window {window} with overlap {overlap} leaves no stride (multiple of {multiple})")
    return stride


def _model_multiple(model: torch.nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "multiple", 1))


def predict_blocks(
    model: torch.nn.Module,
    read: ReadWindow,
    shape: tuple[int, int],
    window: int = 256,
    overlap: int = 64,
    block: int = 1024,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    calibration: Calibration | None = None,
    output: str = "posteriors",
) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """Yield ``((row, col), values)`` per output block: ``(class, h, w)`` float32 blended posteriors (or logits
    with ``output="logits"``), for an area of ``shape`` whose input windows come from ``read(rows, cols)``."""
    if output not in ("posteriors", "logits"):
        raise ValueError(f"output must be 'posteriors' or 'logits', got {output!r}")
    height, width = shape
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    batch_size = batch_size or (GPU_WINDOW_BATCH if cuda else CPU_WINDOW_BATCH)
    overlap = min(overlap, window // 2)
    stride = _aligned_stride(window, overlap, _model_multiple(model))
    block = max(block // stride, 1) * stride  # block edges on window origins: fewer windows straddle two blocks
    model = model.to(device).eval()
    calibration = calibration or Calibration()
    rows_all, cols_all = window_starts(height, window, stride), window_starts(width, window, stride)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def run(batch: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
        x = np.stack([read(slice(r0, r1), slice(c0, c1)) for r0, r1, c0, c1 in batch]).astype(np.float32)
        t = torch.from_numpy(x)
        t = t.pin_memory().to(device, non_blocking=True) if cuda else t
        with torch.inference_mode(), autocast:
            logits = model(t)
        return list(logits.float().cpu().numpy())

    for block_rows, block_cols in tile_slices(shape, block):
        b_row, b_r1, b_col, b_c1 = block_rows.start, block_rows.stop, block_cols.start, block_cols.stop
        wins = [
            (r, min(r + window, height), c, min(c + window, width))
            for r in rows_all
            if r < b_r1 and min(r + window, height) > b_row
            for c in cols_all
            if c < b_c1 and min(c + window, width) > b_col
        ]
        top, left = min(w[0] for w in wins), min(w[2] for w in wins)
        bottom, right = max(w[1] for w in wins), max(w[3] for w in wins)
        acc: np.ndarray | None = None
        weight = np.zeros((bottom - top, right - left), dtype=np.float64)
        # windows of equal shape batch together; the cut windows at the area's edges form their own groups
        by_shape: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
        for w in wins:
            by_shape.setdefault((w[1] - w[0], w[3] - w[2]), []).append(w)
        for group in by_shape.values():
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                for (r0, r1, c0, c1), logits in zip(batch, run(batch), strict=True):
                    if acc is None:
                        acc = np.zeros((logits.shape[0], bottom - top, right - left), dtype=np.float64)
                    wy = axis_weight(r1 - r0, overlap, r0 > 0, r1 < height)
                    wx = axis_weight(c1 - c0, overlap, c0 > 0, c1 < width)
                    w2 = wy[:, None] * wx[None, :]
                    acc[:, r0 - top : r1 - top, c0 - left : c1 - left] += logits * w2
                    weight[r0 - top : r1 - top, c0 - left : c1 - left] += w2
        assert acc is not None
        rows_sl, cols_sl = slice(b_row - top, b_r1 - top), slice(b_col - left, b_c1 - left)
        logits_block = acc[:, rows_sl, cols_sl] / weight[rows_sl, cols_sl]
        if output == "logits":
            yield (b_row, b_col), logits_block.astype(np.float32)
        else:
            yield (b_row, b_col), calibration.apply(logits_block, axis=0)


def predict_array(
    model: torch.nn.Module,
    inputs: Any,
    window: int = 256,
    overlap: int = 64,
    block: int = 1024,
    out: np.ndarray | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Blended posteriors ``(class, y, x)`` of an input array-like ``(C, y, x)`` (numpy, memmap, dask, xarray).

    ``out`` may be a preallocated (e.g. memory-mapped) array, so neither input nor output need fit in memory.
    """

    def read(rows: slice, cols: slice) -> np.ndarray:
        return np.asarray(inputs[:, rows, cols], dtype=np.float32)

    shape = tuple(inputs.shape[1:])
    for (r, c), values in predict_blocks(model, read, shape, window, overlap, block, **kwargs):
        if out is None:
            out = np.empty((values.shape[0], *shape), dtype=np.float32)
        out[:, r : r + values.shape[1], c : c + values.shape[2]] = values
    assert out is not None
    return out


def segment_cube(
    model: torch.nn.Module,
    cube: xr.Dataset,
    embeddings: xr.DataArray | np.ndarray | None,
    class_codes: Any,
    bands: Any = None,
    window: int = 256,
    overlap: int = 64,
    block: int = 1024,
    **kwargs: Any,
) -> xr.DataArray:
    """Posteriors ``(class, y, x)`` of a cube (+ its Presto embeddings ``(y, x, D)``), ready for
    ``suelo.threshold.classify``. Pixels without any clear observation get NaN posteriors (-> nodata).

    Features are computed per window from the cube (they are per-pixel, so this is exact); a lazy cube is read
    window by window.
    """
    from suelo.models.segmenter import DEFAULT_BANDS, segmenter_features, segmenter_inputs

    bands = tuple(bands or DEFAULT_BANDS)

    def read(rows: slice, cols: slice) -> np.ndarray:
        feats = segmenter_features(cube.isel(y=rows, x=cols), bands)
        emb = None if embeddings is None else np.asarray(getattr(embeddings, "values", embeddings)[rows, cols])
        return segmenter_inputs(feats, emb)

    shape = (cube.sizes["y"], cube.sizes["x"])
    post = np.empty((len(class_codes), *shape), dtype=np.float32)
    for (r, c), values in predict_blocks(model, read, shape, window, overlap, block, **kwargs):
        post[:, r : r + values.shape[1], c : c + values.shape[2]] = values
    if "n_clear" in cube:
        post[:, np.asarray(cube["n_clear"].values) == 0] = np.nan
    posterior = xr.DataArray(
        post,
        dims=("class", "y", "x"),
        coords={"class": np.asarray(class_codes), "y": cube["y"].values, "x": cube["x"].values},
        name="posterior",
        attrs={k: cube.attrs[k] for k in ("crs",) if k in cube.attrs},
    )
    return carry_grid(posterior, cube)


def _no_clear_observation(cube: xr.Dataset) -> np.ndarray | None:
    """(y, x) True where a pixel has no clear observation (nodata in every product), None if the cube cannot say."""
    if "n_clear" in cube:
        return np.asarray(cube["n_clear"].values) == 0
    if "valid" in cube:
        return np.asarray(~np.asarray(cube["valid"].transpose("time", "y", "x").values).any(axis=0))
    return None


def segment_outside_training(
    gate: NoveltyGate,
    cube: xr.Dataset,
    embeddings: xr.DataArray | np.ndarray | None,
    bands: Any = None,
    block: int = 256,
) -> np.ndarray:
    """``(y, x)`` bool: True where a pixel's segmenter input vector lies outside the segmenter's training data
    (``gate.outside``; the gate from ``load_segmenter``). Pixels without a clear observation are False (they are
    nodata, not "outside").

    The inputs are those :func:`segment_cube` computes (``segmenter_features`` of ``bands`` + ``embeddings``
    ``(y, x, D)``), here in ``block`` x ``block`` tiles: they are per pixel, so tiling is exact, and memory is
    bounded by a tile (about 3 KB per pixel for 12 months of 10 bands and 165 inputs: ~180 MB at 256 px).
    """
    from suelo.models.segmenter import DEFAULT_BANDS, segmenter_features, segmenter_inputs

    if block <= 0:
        raise ValueError(f"block must be positive, got {block}")
    bands = tuple(bands or DEFAULT_BANDS)
    height, width = cube.sizes["y"], cube.sizes["x"]
    emb = None if embeddings is None else getattr(embeddings, "values", embeddings)
    outside = np.zeros((height, width), dtype=bool)
    for rows, cols in tile_slices((height, width), block):
        feats = segmenter_features(cube.isel(y=rows, x=cols), bands)
        x = segmenter_inputs(feats, None if emb is None else np.asarray(emb[rows, cols]))
        outside[rows, cols] = gate.outside(x.reshape(x.shape[0], -1).T).reshape(x.shape[1:])
    no_clear = _no_clear_observation(cube)
    if no_clear is not None:
        outside[no_clear] = False
    return outside
