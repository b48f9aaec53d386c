"""Train the U-Net segmenter on a feature raster and a label raster (from polygons or a label map).

- Labels: Urban Atlas-style polygons (a ``code_2018``-like column) are reprojected to the cube's grid and
  rasterized (pixel centres; later polygons win); or a label raster is reprojected with nearest neighbour. Codes
  outside the model's classes become the ignore index, so unknown classes neither train nor score.
- Split: the grid is cut into square blocks of ``block`` pixels; a seeded ``val_fraction`` of the blocks is
  validation. A ``guard`` band around validation blocks belongs to neither side, so training chips never touch
  validation pixels; training chips are drawn only where the whole chip is training area.
- Training (``suelo.trainer.fit``, the loop the land-cover head shares): random chips with flips and 90-degree
  rotations (land cover has no "up"), class-weighted cross-entropy with the ignore index, AdamW with a one-cycle
  schedule; the state with the lowest validation loss is kept (early stopping and a time budget when asked).
  Validation predicts the whole area with the tiler of ``suelo.segment`` and scores validation pixels only, once
  each.
- Metrics as for the land-cover model (OA, macro F1, kappa, per-class precision/recall/F1, confusion matrix, via
  ``suelo.evaluate.classification_metrics``) plus per-class and mean IoU.
- Novelty gate (``suelo.novelty``): class-conditional Gaussians fitted on the per-pixel input vectors of (at
  most ``GATE_MAX_PIXELS``) labelled training pixels, its threshold calibrated on the validation pixels' lattice
  for a 5 % rejection rate; it travels with the model (``model.novelty_gate``) and its scalars are in the metrics.
- Deterministic for a seed on CPU (seeded numpy and torch generators, single-process data).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import torch
import torch.nn.functional as F
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject
from scipy import ndimage

from suelo.atomic import file_sha256
from suelo.grid import Grid
from suelo.legend import Legend, LegendClass
from suelo.models.segmenter import SegmenterConfig, UNetSegmenter
from suelo.novelty import DEFAULT_REJECTION_RATE, NoveltyGate, fit_gate
from suelo.train_progress import StderrProgress, TrainProgress
from suelo.trainer import Schedule, TrainTask, class_weights, fit, seeded, write_training_report

IGNORE_INDEX = 255
# training pixels the gate's Gaussians are fitted on: ~165 dimensions need a few thousand, neighbours add little
GATE_MAX_PIXELS = 20_000


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
    eval_every: int = 50  # steps between validations: a round of suelo.trainer.fit
    patience: int = 0  # stop after this many validations without a lower loss; 0: all the steps
    time_budget_s: float | None = None  # stop the steps when the next round would end past this many seconds
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
    from suelo.evaluate import classification_metrics

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


# -- novelty gate -------------------------------------------------------------------------------------------------


def gate_features_name(feature_names: Sequence[str], channels: int) -> str:
    """What the segmenter's gate scores, for its meta (the land-cover gate scores the embedding alone)."""
    if any(name.startswith("presto_") for name in feature_names):
        return "segmenter inputs: cube summaries + Presto embedding"
    return f"segmenter inputs ({channels} channels per pixel)"


def fit_input_gate(
    model: UNetSegmenter,
    features: np.ndarray,
    train_labels: np.ndarray,
    val_pixels: np.ndarray,
    seed: int,
    features_name: str,
    rejection_rate: float = DEFAULT_REJECTION_RATE,
    max_pixels: int = GATE_MAX_PIXELS,
) -> NoveltyGate:
    """The novelty gate of a trained segmenter: Gaussians on the inputs ``features`` (C, y, x) of the labelled
    training pixels (class indices in ``train_labels``, IGNORE_INDEX elsewhere; a seeded sample of at most
    ``max_pixels``), threshold calibrated on the ``val_pixels`` lattice (:func:`_calibration_pixels`).

    The Gaussians are fitted on the inputs as the network normalizes them (its ``input_mean``/``input_std``):
    Ledoit-Wolf shrinks towards a multiple of the identity, which on raw inputs (reflectances ~0.01 apart,
    embeddings ~1) would drown the reflectance channels. The normalization is then folded into the gate's
    matrices, so the gate scores raw inputs, and the threshold is calibrated on raw inputs as it will be applied.
    """
    channels = features.shape[0]
    flat = features.reshape(channels, -1)
    labelled = np.flatnonzero(train_labels.reshape(-1) != IGNORE_INDEX)
    if len(labelled) > max_pixels:
        labelled = np.sort(np.random.default_rng(seed).choice(labelled, size=max_pixels, replace=False))
    calibration, _ = _calibration_pixels(val_pixels)
    mean = model.input_mean.detach().cpu().numpy().astype(np.float64)
    std = model.input_std.detach().cpu().numpy().astype(np.float64)
    x_fit = flat[:, labelled].T
    x_cal = features[:, calibration].T
    standardized = fit_gate(
        (x_fit - mean) / std, train_labels.reshape(-1)[labelled], (x_cal - mean) / std, rejection_rate, features_name
    )
    # score(z) = ||((z - mean) / std) W - M|| = ||z (W / std[:, None]) - (M + (mean / std) W)||
    whiten = standardized.whiten.astype(np.float64)
    folded = NoveltyGate(
        (whiten / std[:, None]).astype(np.float32),
        (standardized.means + (mean / std) @ whiten).astype(np.float32),
        standardized.threshold, rejection_rate, standardized.n_fit, 0, float("nan"), standardized.shrinkage,
        features_name,
    )  # fmt: skip
    return folded.with_threshold(folded.score(x_cal), rejection_rate)


# -- training -----------------------------------------------------------------------------------------------------


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = int(torch.randint(0, 4, (1,), generator=gen))
    if k:
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    if int(torch.randint(0, 2, (1,), generator=gen)):
        x, y = torch.flip(x, (-1,)), torch.flip(y, (-1,))
    return x, y


@dataclass
class _SegmenterTask(TrainTask):
    """The segmenter's hooks for :func:`suelo.trainer.fit`: a round is ``eval_every`` steps (the last may be
    shorter) of ``batch_size`` random augmented chips from the training area, under a one-cycle learning rate;
    the watched loss is the weighted loss of the validation pixels, the whole area predicted with the tiler."""

    model: UNetSegmenter
    features: np.ndarray  # (C, y, x)
    target: np.ndarray  # class index per pixel (IGNORE_INDEX: unlabelled)
    train_labels: np.ndarray  # the target in the training area, IGNORE_INDEX elsewhere
    origins: np.ndarray  # chip corners wholly in the training area
    val_pixels: np.ndarray
    weights: torch.Tensor
    cfg: SegmenterTrainConfig
    rng: np.random.Generator  # picks the chips
    gen: torch.Generator  # augments them
    unit = "steps"

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    @property
    def rounds(self) -> int:
        return -(-self.cfg.steps // self.cfg.eval_every)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": self.model.parameters(), "lr": self.cfg.lr}]

    def scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.cfg.lr, total_steps=self.cfg.steps,
                                                   pct_start=0.1)  # fmt: skip

    def position(self, round_: int) -> int:
        return min((round_ + 1) * self.cfg.eval_every, self.cfg.steps)

    def batches(self, round_: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        chip = self.cfg.chip
        for _step in range(round_ * self.cfg.eval_every, self.position(round_)):
            picks = self.origins[self.rng.integers(0, len(self.origins), size=self.cfg.batch_size)]
            xs, ys = [], []
            x_all, y_all = torch.from_numpy(self.features), torch.from_numpy(self.train_labels)
            for r, c in picks:
                xb, yb = _augment(x_all[:, r : r + chip, c : c + chip], y_all[r : r + chip, c : c + chip], self.gen)
                xs.append(xb)
                ys.append(yb)
            yield torch.stack(xs), torch.stack(ys)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
        x, y = batch
        return F.cross_entropy(self.model(x), y, weight=self.weights, ignore_index=IGNORE_INDEX), len(x)

    def predict(self) -> np.ndarray:
        """Logits ``(n_classes, y, x)`` of the whole area (eval mode)."""
        from suelo.segment import predict_array

        self.model.eval()
        return predict_array(self.model, self.features, window=256, overlap=64, output="logits", device="cpu")

    def validate(self) -> dict[str, float]:
        selected = torch.from_numpy(self.predict()[:, self.val_pixels].T.copy())
        target = torch.from_numpy(self.target[self.val_pixels])
        return {"val_loss": float(F.cross_entropy(selected, target, weight=self.weights))}

    def record(self, round_: int, losses: list[tuple[float, int]], scores: dict[str, float]) -> dict[str, float]:
        # the loss of the round's last step, as the segmenter has always reported it
        return {"step": self.position(round_), "train_loss": losses[-1][0], **scores}


def train_segmenter(
    features: np.ndarray,
    labels: np.ndarray,
    class_codes: Sequence[int],
    class_names: Sequence[str] | None = None,
    config: SegmenterTrainConfig | None = None,
    feature_names: Sequence[str] = (),
    seed: int = 0,
    verbose: bool = False,
    progress: TrainProgress | None = None,
) -> tuple[UNetSegmenter, dict[str, Any]]:
    """Train on ``features`` ``(C, y, x)`` and a label raster of class *codes* ``(y, x)`` (codes not in
    ``class_codes``, e.g. 0, are ignored). Returns the model (eval mode, best validation loss, ``novelty_gate``
    fitted by :func:`fit_input_gate`) and metrics (the gate's scalars under ``novelty``). ``verbose`` prints a
    line per evaluation (``progress`` reports them otherwise)."""
    cfg = config or SegmenterTrainConfig()
    class_codes = [int(c) for c in class_codes]
    names = list(class_names or [str(c) for c in class_codes])
    rng, gen = seeded(seed)
    features = np.ascontiguousarray(features, dtype=np.float32)
    target = codes_to_indices(np.asarray(labels), class_codes)
    train_mask, val_mask = spatial_split(target.shape, cfg.block, cfg.val_fraction, cfg.guard, seed)
    origins = chip_origins(train_mask, cfg.chip)
    if not len(origins):
        raise ValueError("no training chip fits outside the validation blocks; use smaller chips or blocks")
    train_labels = np.where(train_mask, target, IGNORE_INDEX)
    val_pixels = val_mask & (target != IGNORE_INDEX)
    weights = class_weights(train_labels[train_labels != IGNORE_INDEX], len(class_codes), "sqrt_present")

    model_cfg = SegmenterConfig(
        in_channels=features.shape[0],
        n_classes=len(class_codes),
        depth=cfg.depth,
        base_width=cfg.base_width,
        dropout=cfg.dropout,
        convs_per_block=cfg.convs_per_block,
        feature_names=tuple(feature_names),
    )
    model = UNetSegmenter(model_cfg)
    flat = features[:, train_mask]
    model.set_normalization(flat.mean(axis=1), flat.std(axis=1))
    started = time.perf_counter()
    task = _SegmenterTask(model, features, target, train_labels, origins, val_pixels, weights, cfg, rng, gen)
    if verbose:
        progress = StderrProgress(sys.stdout, every=1, terminal=False)
    deadline = None if cfg.time_budget_s is None else started + cfg.time_budget_s
    # the lowest validation loss is kept; early stopping only when asked (patience > 0)
    schedule = Schedule(task.rounds, cfg.weight_decay, cfg.patience, True, 0.0, deadline)
    done = fit(task, schedule, "segmenter", "validation", progress)
    assert done.best_round is not None and done.best_loss is not None
    predicted = task.predict().argmax(axis=0)
    metrics = segmentation_metrics(target[val_pixels], predicted[val_pixels], class_codes, names)
    gate_name = gate_features_name(feature_names, features.shape[0])
    model.novelty_gate = fit_input_gate(model, features, train_labels, val_pixels, seed, gate_name)
    metrics.update(
        novelty=model.novelty_gate.meta(),
        split={
            "method": f"random {cfg.block}px blocks as validation ({cfg.val_fraction:.0%}), {cfg.guard}px guard",
            "train_pixels": int((train_labels != IGNORE_INDEX).sum()),
            "val_pixels": int(val_pixels.sum()),
            "train_chip_origins": len(origins),
        },
        best_step=task.position(done.best_round),
        best_val_loss=done.best_loss,
        history=done.history,
        stopping={"reason": done.reason, "evaluations": done.rounds, "seconds": done.seconds},
        train_seconds=round(time.perf_counter() - started, 1),
        seed=seed,
        config=cfg.to_dict(),
        class_weights=weights.tolist(),
    )
    return model, metrics


# -- from files (``suelo train --model segmenter``) ---------------------------------------------------------------

DEFAULT_SEGMENTER_LEGEND = "urban_atlas_2018.yaml"  # in data/legends
CALIBRATION_STRIDE = 4  # validation pixels on a 4-px lattice, as models/train_default_segmenter.py
MIN_CALIBRATION_PIXELS = 100  # below this the lattice is made denser (recorded in the calibration metrics)
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
_NO_LABEL = -1  # label rasters' nodata on the cube grid (0 may be a legend code)


@dataclass
class SegmenterLabels:
    """Label codes on the cube grid (``_NO_LABEL`` where unlabelled) and what was dropped reading them."""

    codes: np.ndarray
    kind: str  # "polygons" or "raster"
    unknown_codes: dict[int | str, int]  # code -> polygons (vector) or pixels (raster) not in the legend


def read_segmenter_labels(path: Any, grid: Grid, legend: Legend, class_column: str = "code_2018") -> SegmenterLabels:
    """Polygons (any OGR vector, class codes or names in ``class_column``) or a label raster (nodata skipped),
    on ``grid``; codes the legend lacks are dropped and counted, not an error."""
    from suelo.errors import InputError

    path = Path(path)
    if path.suffix.lower() in RASTER_SUFFIXES:
        import rasterio

        try:
            with rasterio.open(path) as src:
                data, nodata, transform, crs = src.read(1), src.nodata, src.transform, src.crs
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(path, f"cannot read label raster: {exc}") from exc
        if crs is None:
            raise InputError(path, "the label raster has no CRS")
        data = data.astype(np.float64)
        missing = ~np.isfinite(data) if nodata is None else (~np.isfinite(data) | (data == nodata))
        data = np.where(missing, _NO_LABEL, data)
        if (data != np.round(data)).any():
            raise InputError(path, "a label raster must hold integer class codes")
        codes = warp_label_raster(data.astype(np.int32), transform, crs, grid, nodata=_NO_LABEL)
        present, counts = np.unique(codes[codes != _NO_LABEL], return_counts=True)
        unknown: dict[int | str, int] = {
            int(c): int(n) for c, n in zip(present, counts, strict=True) if int(c) not in legend.codes
        }
        codes[np.isin(codes, list(unknown))] = _NO_LABEL
        return SegmenterLabels(codes, "raster", unknown)

    from suelo.samples import read_label_vector

    gdf = read_label_vector(path)
    if class_column not in gdf.columns:
        raise InputError(path, f"no class column {class_column!r} (columns: {[str(c) for c in gdf.columns][:20]})")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]

    def code_of(value: Any) -> int | None:
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        return legend.code_for(int(value) if isinstance(value, (int, np.integer)) else str(value))

    mapped = [code_of(v) for v in gdf[class_column].to_numpy()]
    known = np.array([m is not None for m in mapped], dtype=bool)
    unknown = {}
    for value in gdf[class_column].to_numpy()[~known]:
        key = int(value) if isinstance(value, (int, np.integer)) else str(value)
        unknown[key] = unknown.get(key, 0) + 1
    kept = gdf[known].copy()
    kept["_suelo_code"] = np.array([m for m in mapped if m is not None], dtype=np.int64)
    # rasterize_labels fills with 0; a legend with a class 0 needs another fill, so shift codes by one
    kept["_suelo_code"] += 1
    codes = rasterize_labels(kept, grid, "_suelo_code").astype(np.int32) - 1
    return SegmenterLabels(codes, "polygons", unknown)


def _calibration_pixels(val_pixels: np.ndarray, stride: int = CALIBRATION_STRIDE) -> tuple[np.ndarray, int]:
    """Validation pixels on a ``stride`` lattice (denser when that leaves fewer than MIN_CALIBRATION_PIXELS)."""
    for s in range(stride, 0, -1):
        lattice = np.zeros(val_pixels.shape, dtype=bool)
        lattice[::s, ::s] = True
        keep = lattice & val_pixels
        if keep.sum() >= MIN_CALIBRATION_PIXELS or s == 1:
            return keep, s
    raise AssertionError("unreachable")


def train_segmenter_from_files(
    labels_path: Any,
    cube_path: Any,
    output: Any,
    legend_path: Any | None = None,
    class_column: str = "code_2018",
    config: SegmenterTrainConfig | None = None,
    seed: int = 0,
    target_accuracy: float = 0.95,
    device: str = "cpu",
    log: Any = print,
    progress: TrainProgress | None = None,
) -> dict[str, Any]:
    """``suelo train --model segmenter``: labels + a suelo cube -> a calibrated segmenter file and a report.

    Features are :func:`suelo.models.segmenter.segmenter_features` of the cube's Presto bands plus the Presto
    embeddings (:func:`suelo.models.inference.encode_cube`, as a job computes them); :func:`train_segmenter` trains
    with its spatial block split and fits the novelty gate; the validation pixels (on a lattice) calibrate the gate's
    threshold, fit the temperature and certify the confidence threshold (:func:`suelo.threshold.calibrate_and_certify`).
    Writes ``output`` (``save_segmenter``: a segmenter artifact, suelo.models.artifact) and ``<stem>_report/``
    (metrics.json, confusion.png, reliability.png, risk_coverage.json/png). Returns a summary.
    """
    from suelo import __version__
    from suelo.composite import cube_grid, open_cube
    from suelo.errors import ConfigError
    from suelo.legend import DEFAULT_LEGEND, load_legend
    from suelo.models.artifact import cube_product_level, save_segmenter
    from suelo.models.inference import encode_cube
    from suelo.models.presto import DEFAULT_WEIGHTS, load_presto_encoder
    from suelo.models.segmenter import DEFAULT_BANDS, feature_names, segmenter_features, segmenter_inputs
    from suelo.segment import predict_array
    from suelo.threshold import calibrate_and_certify

    labels_path, cube_path, output = Path(labels_path), Path(cube_path), Path(output)
    legend_path = Path(legend_path) if legend_path else DEFAULT_LEGEND.with_name(DEFAULT_SEGMENTER_LEGEND)
    legend = load_legend(legend_path)
    cfg = config or SegmenterTrainConfig()
    started = time.perf_counter()

    cube = open_cube(cube_path)
    grid = cube_grid(cube)
    level = cube_product_level(cube, cube_path)
    have = [str(b) for b in cube["band"].values]
    bands = [b for b in DEFAULT_BANDS if b in have]
    needed = [b for b in ("B03", "B04", "B08", "B11") if b not in bands]  # the spectral indices' bands
    if needed:
        raise ConfigError(f"{cube_path}: the segmenter needs bands {needed} (the cube has {have})")

    labels = read_segmenter_labels(labels_path, grid, legend, class_column)
    if labels.unknown_codes:
        what = "polygons" if labels.kind == "polygons" else "pixels"
        dropped = sum(labels.unknown_codes.values())
        shown = dict(list(labels.unknown_codes.items())[:10])
        log(f"warning: {dropped} {what} with codes not in {legend_path.name} ignored: {shown}")
    present = set(np.unique(labels.codes[labels.codes != _NO_LABEL]).tolist())
    if not present:
        found = f" (found only codes not in it: {list(labels.unknown_codes)[:10]})" if labels.unknown_codes else ""
        raise ConfigError(f"{labels_path}: no labelled pixel on the cube has a code of the legend {legend_path}{found}")
    classes = [c for c in legend.classes if c.code in present]
    if len(classes) < 2:
        raise ConfigError(f"{labels_path}: only class {classes[0].code} ({classes[0].name}) on the cube; need two")
    codes, names = [c.code for c in classes], [c.name for c in classes]
    log(f"labels: {int((labels.codes != _NO_LABEL).sum())} px of {len(codes)} classes on a {grid.width} x "
        f"{grid.height} px grid ({labels.kind})")  # fmt: skip

    sub = cube.sel(band=bands).load()
    t0 = time.perf_counter()
    embeddings = encode_cube(load_presto_encoder(), sub, device=device)
    log(f"Presto embeddings: {grid.width * grid.height} px x {sub.sizes['time']} months in "
        f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    x = segmenter_inputs(segmenter_features(sub, bands), embeddings)
    fnames = feature_names(bands)
    target_codes = labels.codes  # _NO_LABEL is no class code: ignored by training and scoring
    try:
        model, metrics = train_segmenter(x, target_codes, codes, names, cfg, fnames, seed=seed, progress=progress)
    except ValueError as exc:
        raise ConfigError(f"{labels_path}: {exc} (grid {grid.width} x {grid.height} px, chip {cfg.chip}, "
                          f"block {cfg.block}, guard {cfg.guard})") from exc  # fmt: skip
    log(f"trained {cfg.steps} steps in {metrics['train_seconds']} s: validation OA {metrics['overall_accuracy']:.3f}, "
        f"macro F1 {metrics['macro_f1']:.3f}, mIoU {metrics['mean_iou']:.3f}")  # fmt: skip
    gate = metrics["novelty"]
    log(f"novelty gate: {gate['n_fit']} training px, threshold {gate['threshold']:.2f} for a "
        f"{gate['rejection_rate']:.0%} rate; {gate['calibration_rejected']:.1%} of {gate['n_calibration']} "
        f"validation px outside the training data")  # fmt: skip

    # calibration and threshold on the (spatially held-out) validation pixels, on a lattice
    target = codes_to_indices(target_codes, codes)
    _, val_mask = spatial_split(target.shape, cfg.block, cfg.val_fraction, cfg.guard, seed)
    keep, stride = _calibration_pixels(val_mask & (target != IGNORE_INDEX))
    logits = predict_array(model, x, window=256, overlap=64, output="logits", device="cpu")
    # pixels the gate rejects are never mapped: the certified coverage counts them as not retained
    novelty_gate = model.novelty_gate
    if novelty_gate is None:
        raise RuntimeError("train_segmenter returned a model without its novelty gate")
    inside = ~novelty_gate.outside(x[:, keep].T)
    confidence = calibrate_and_certify(
        logits[:, keep].T, target[keep], "temperature", target_accuracy, inside=inside, honest_target=True
    )
    calibration_metrics = confidence["metrics"] | {
        "pixels": "validation blocks",
        "lattice_stride": stride,
        "target_accuracy": target_accuracy,
    }
    choice = confidence["thresholds"]["report"]["global"]
    summary = {k: metrics[k] for k in ("overall_accuracy", "macro_f1", "kappa", "mean_iou")} | {
        "per_class": {
            n: {k: round(v[k], 4) for k in ("precision", "recall", "f1", "iou", "support")}
            for n, v in metrics["per_class"].items()
        },
        "train_seconds": metrics["train_seconds"],
        # share of the validation lattice the gate calls "outside the training data" (calibrated for ~5 %)
        "validation_outside_training": gate["calibration_rejected"],
    }
    all_metrics = {"validation": metrics, "summary": summary, "calibration": calibration_metrics}
    provenance = {
        "labels": str(labels_path),
        "labels_sha256": file_sha256(labels_path),
        "labels_kind": labels.kind,
        "class_column": class_column if labels.kind == "polygons" else None,
        "unknown_codes_ignored": {str(k): v for k, v in labels.unknown_codes.items()},
        "legend": str(legend_path),
        "cube": str(cube_path),
        "cube_months": [str(t)[:7] for t in cube["time"].values],
        "product_level": level,
        "grid": grid.to_dict(),
        "train_config": cfg.to_dict(),
        "seed": seed,
        "embeddings": f"{Path(DEFAULT_WEIGHTS).name} via suelo.models.inference.encode_cube (fp32)",
        "command": "suelo train --model segmenter (suelo.train_segmenter.train_segmenter_from_files)",
        "software": {"suelo": __version__, "torch": torch.__version__},
    }
    save_segmenter(
        model,
        output,
        feature_names=fnames,
        bands=bands,
        legend_codes=codes,
        legend_names=names,
        legend=Legend(tuple(classes)).to_list(),
        product_level=level,
        months=int(cube.sizes["time"]),
        encoder_weights_sha256=file_sha256(DEFAULT_WEIGHTS),
        metrics=all_metrics,
        calibration=confidence["calibration"],
        thresholds=confidence["thresholds"],
        validation_scores=confidence["validation_scores"],
        provenance=provenance,
    )
    report_dir = write_segmenter_report(output.with_name(f"{output.stem}_report"), all_metrics, logits[:, keep].T,
                                        target[keep], confidence)  # fmt: skip
    log(f"calibration: T {calibration_metrics['temperature']:.3f}, ECE {calibration_metrics['ece_before']:.3f} -> "
        f"{calibration_metrics['ece_after']:.3f} on {calibration_metrics['n']} px (lattice {stride}); threshold for "
        f"{target_accuracy:.0%}: {choice['threshold']:.3f} (coverage {choice['coverage']:.1%}); wrote {output} and "
        f"{report_dir}")  # fmt: skip
    return {"metrics": all_metrics, "report_dir": report_dir, "seconds": round(time.perf_counter() - started, 1)}


def write_segmenter_report(
    folder: Any, metrics: dict[str, Any], logits: np.ndarray, targets: np.ndarray, confidence: dict[str, Any]
) -> Path:
    """metrics.json, the validation confusion matrix, reliability diagram and risk-coverage curve in ``folder``
    (suelo.trainer.write_training_report, as the land-cover head's)."""
    title = f"U-Net segmenter, validation blocks (mIoU {metrics['validation']['mean_iou']:.3f})"
    written = write_training_report(folder, logits, targets, confidence["calibration"], confidence["thresholds"],
                                    metrics, (metrics["validation"], title))  # fmt: skip
    return written[0].parent
