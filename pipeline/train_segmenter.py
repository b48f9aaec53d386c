"""Train the U-Net segmenter on a feature raster and a label raster (from polygons or a label map).

- Labels: Urban Atlas-style polygons (a ``code_2018``-like column) are reprojected to the cube's grid and
  rasterized (pixel centres; later polygons win); or a label raster is reprojected with nearest neighbour. Codes
  outside the model's classes become the ignore index, so unknown classes neither train nor score.
- Split: the grid is cut into square blocks of ``block`` pixels; a seeded ``val_fraction`` of the blocks is
  validation. A ``guard`` band around validation blocks belongs to neither side, so training chips never touch
  validation pixels; training chips are drawn only where the whole chip is training area.
- Training: random chips with flips and 90-degree rotations (land cover has no "up"), class-weighted
  cross-entropy with the ignore index, AdamW with a cosine schedule; the state with the lowest validation loss is
  kept. Validation predicts the whole area with the tiler of ``pipeline.segment`` and scores validation pixels
  only, once each.
- Metrics as for the land-cover model (OA, macro F1, kappa, per-class precision/recall/F1, confusion matrix, via
  ``pipeline.evaluate.classification_metrics``) plus per-class and mean IoU.
- Deterministic for a seed on CPU (seeded numpy and torch generators, single-process data).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import torch
import torch.nn.functional as F
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject
from scipy import ndimage

from models.segmenter import SegmenterConfig, UNetSegmenter
from pipeline.grid import Grid
from pipeline.legend import Legend, LegendClass

IGNORE_INDEX = 255


@dataclass(frozen=True)
class SegmenterTrainConfig:
    chip: int = 64
    batch_size: int = 8
    steps: int = 300
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.25
    block: int = 64  # split block size in pixels (validation blocks are whole blocks)
    guard: int = 8  # pixels around validation left out of training
    eval_every: int = 50
    depth: int = 3
    base_width: int = 24
    dropout: float = 0.1
    convs_per_block: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- labels -------------------------------------------------------------------------------------------------------


def rasterize_labels(polygons: gpd.GeoDataFrame, grid: Grid, column: str = "code_2018") -> np.ndarray:
    """Polygons' integer ``column`` burnt onto ``grid`` (pixel centres), 0 where no polygon: (y, x) int32."""
    gdf = polygons.to_crs(grid.crs) if polygons.crs is not None else polygons
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    values = gdf[column].astype("int64").to_numpy()
    if not len(gdf):
        return np.zeros(grid.shape, dtype=np.int32)
    return rasterize(
        zip(gdf.geometry, values, strict=True), out_shape=grid.shape, transform=grid.transform, fill=0, dtype="int32"
    )


def warp_label_raster(labels: np.ndarray, transform: Any, crs: Any, grid: Grid, nodata: int = 0) -> np.ndarray:
    """A label raster reprojected onto ``grid`` with nearest neighbour (categories must not be blended)."""
    out = np.full(grid.shape, nodata, dtype=np.int32)
    reproject(
        np.asarray(labels, dtype=np.int32),
        out,
        src_transform=transform,
        src_crs=crs,
        src_nodata=nodata,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=nodata,
        resampling=Resampling.nearest,
    )
    return out


def codes_to_indices(codes: np.ndarray, class_codes: Sequence[int]) -> np.ndarray:
    """Class index per pixel; codes not in ``class_codes`` -> IGNORE_INDEX. (y, x) int64."""
    out = np.full(codes.shape, IGNORE_INDEX, dtype=np.int64)
    for i, code in enumerate(class_codes):
        out[codes == code] = i
    return out


# -- split --------------------------------------------------------------------------------------------------------


def spatial_split(
    shape: tuple[int, int], block: int, val_fraction: float, guard: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, val) masks: whole blocks to validation, a guard band around them to neither."""
    h, w = shape
    nby, nbx = -(-h // block), -(-w // block)
    rng = np.random.default_rng(seed)
    n_val = max(1, round(val_fraction * nby * nbx))
    chosen = rng.choice(nby * nbx, size=n_val, replace=False)
    val_blocks = np.zeros(nby * nbx, dtype=bool)
    val_blocks[chosen] = True
    val = np.kron(val_blocks.reshape(nby, nbx), np.ones((block, block), dtype=bool))[:h, :w].astype(bool)
    near = ndimage.binary_dilation(val, iterations=guard) if guard > 0 else val
    return ~near, val


def chip_origins(train: np.ndarray, chip: int) -> np.ndarray:
    """Top-left corners ``(n, 2)`` of every chip lying wholly in the training area."""
    h, w = train.shape
    if h < chip or w < chip:
        raise ValueError(f"the area {train.shape} is smaller than one chip of {chip}")
    sat = np.pad(train.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = sat[chip:, chip:] - sat[:-chip, chip:] - sat[chip:, :-chip] + sat[:-chip, :-chip]
    return np.argwhere(counts == chip * chip)


# -- metrics ------------------------------------------------------------------------------------------------------


def segmentation_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, class_codes: Sequence[int], names: Sequence[str]
) -> dict[str, Any]:
    """``classification_metrics`` of the land-cover model plus per-class IoU and mean IoU (over present classes)."""
    from pipeline.evaluate import classification_metrics

    legend = Legend(tuple(LegendClass(int(c), n, "#000000") for c, n in zip(class_codes, names, strict=True)))
    codes = np.asarray(class_codes)
    metrics = classification_metrics(codes[y_true], codes[y_pred], legend)
    cm = np.asarray(metrics["confusion_matrix"]["matrix"], dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    present = cm.sum(1) > 0
    iou = np.where(union > 0, tp / np.maximum(union, 1), 0.0)
    for i, name in enumerate(names):
        metrics["per_class"][name]["iou"] = float(iou[i])
    metrics["mean_iou"] = float(iou[present].mean()) if present.any() else 0.0
    return metrics


# -- training -----------------------------------------------------------------------------------------------------


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = int(torch.randint(0, 4, (1,), generator=gen))
    if k:
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    if int(torch.randint(0, 2, (1,), generator=gen)):
        x, y = torch.flip(x, (-1,)), torch.flip(y, (-1,))
    return x, y


def train_segmenter(
    features: np.ndarray,
    labels: np.ndarray,
    class_codes: Sequence[int],
    class_names: Sequence[str] | None = None,
    config: SegmenterTrainConfig | None = None,
    feature_names: Sequence[str] = (),
    seed: int = 0,
    verbose: bool = False,
) -> tuple[UNetSegmenter, dict[str, Any]]:
    """Train on ``features`` ``(C, y, x)`` and a label raster of class *codes* ``(y, x)`` (codes not in
    ``class_codes``, e.g. 0, are ignored). Returns the model (eval mode, best validation loss) and metrics."""
    from pipeline.segment import predict_array

    cfg = config or SegmenterTrainConfig()
    class_codes = [int(c) for c in class_codes]
    names = list(class_names or [str(c) for c in class_codes])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    features = np.ascontiguousarray(features, dtype=np.float32)
    target = codes_to_indices(np.asarray(labels), class_codes)
    train_mask, val_mask = spatial_split(target.shape, cfg.block, cfg.val_fraction, cfg.guard, seed)
    origins = chip_origins(train_mask, cfg.chip)
    if not len(origins):
        raise ValueError("no training chip fits outside the validation blocks; use smaller chips or blocks")
    train_labels = np.where(train_mask, target, IGNORE_INDEX)
    val_pixels = val_mask & (target != IGNORE_INDEX)

    n = len(class_codes)
    labelled = train_labels[train_labels != IGNORE_INDEX]
    counts = np.bincount(labelled, minlength=n).astype(np.float64)
    # inverse-sqrt frequency: rare classes matter, but a class with 20 pixels must not dominate the loss
    weights = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0.0)
    weights = torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)

    model_cfg = SegmenterConfig(
        in_channels=features.shape[0],
        n_classes=n,
        depth=cfg.depth,
        base_width=cfg.base_width,
        dropout=cfg.dropout,
        convs_per_block=cfg.convs_per_block,
        feature_names=tuple(feature_names),
    )
    model = UNetSegmenter(model_cfg)
    flat = features[:, train_mask]
    model.set_normalization(flat.mean(axis=1), flat.std(axis=1))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    x_all, y_all = torch.from_numpy(features), torch.from_numpy(train_labels)

    def validate() -> tuple[float, np.ndarray]:
        model.eval()
        logits = predict_array(model, features, window=256, overlap=64, output="logits", device="cpu")
        sel = torch.from_numpy(logits[:, val_pixels].T.copy())
        loss = float(F.cross_entropy(sel, torch.from_numpy(target[val_pixels]), weight=weights))
        return loss, logits.argmax(axis=0)

    best: tuple[float, dict[str, torch.Tensor], int] | None = None
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        model.train()
        picks = origins[rng.integers(0, len(origins), size=cfg.batch_size)]
        xs, ys = [], []
        for r, c in picks:
            xb, yb = _augment(
                x_all[:, r : r + cfg.chip, c : c + cfg.chip], y_all[r : r + cfg.chip, c : c + cfg.chip], gen
            )
            xs.append(xb)
            ys.append(yb)
        logits = model(torch.stack(xs))
        loss = F.cross_entropy(logits, torch.stack(ys), weight=weights, ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_loss, _ = validate()
            history.append({"step": step, "train_loss": float(loss.detach()), "val_loss": val_loss})
            if verbose:
                print(f"step {step}: train loss {float(loss.detach()):.3f}, val loss {val_loss:.3f}")
            if best is None or val_loss < best[0]:
                best = (val_loss, copy.deepcopy(model.state_dict()), step)
    assert best is not None
    model.load_state_dict(best[1])
    model.eval()
    _, predicted = validate()
    metrics = segmentation_metrics(target[val_pixels], predicted[val_pixels], class_codes, names)
    metrics.update(
        split={
            "method": f"random {cfg.block}px blocks as validation ({cfg.val_fraction:.0%}), {cfg.guard}px guard",
            "train_pixels": int((train_labels != IGNORE_INDEX).sum()),
            "val_pixels": int(val_pixels.sum()),
            "train_chip_origins": len(origins),
        },
        best_step=best[2],
        best_val_loss=best[0],
        history=history,
        train_seconds=round(time.perf_counter() - started, 1),
        seed=seed,
        config=cfg.to_dict(),
        class_weights=weights.tolist(),
    )
    return model, metrics
