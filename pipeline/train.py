"""Train a land-cover model on labelled samples: Presto embeddings + an MLP head, written as one artifact.

Two modes:

- frozen (default): embeddings are computed once with the pretrained encoder, then only the head is trained,
- ``finetune``: the frozen-mode head is the starting point, then encoder and head are trained end to end with a
  much smaller learning rate for the encoder (large steps would wash out what pretraining learned).

Both use the training loop of ``suelo.trainer`` (shared with the segmenter): AdamW and class-weighted
cross-entropy (by default weights ~ 1/sqrt(class frequency): rare classes count without the head giving up the
common ones), for at most ``max_epochs`` epochs and at most ``time_budget_s`` seconds. Everything is seeded; the
artifact records why training stopped ("early_stopping", "max_epochs" or "time_budget") and after how many epochs.

Splits are spatial (whole blocks on one side): train / calibration / test (``test_fraction`` > 0; the shipped
model uses no test split and takes its accuracy figures from the seed-averaged procedure of
``suelo.model_card``). The block size is chosen from the samples' extent unless given (``block_m="auto"``,
suelo.sampling.auto_block_m), so the calibration and test fractions come out as asked. Training fits only on
the train split. On the calibration split ("validation" in the metrics): the novelty gate's threshold
(``suelo.novelty``, its Gaussians fitted on the train embeddings), the temperature, and the confidence threshold
certified for ``target_accuracy`` (suelo.threshold) on the points the gate lets through, as a share of all of
them. A target the calibration data cannot certify is lowered to the highest one it does certify. The calibration
scores are stored in the artifact so a job can ask for another target at run time without retraining. With a test
split, everything is then scored once on it (``metrics["test"]``).

Which epoch to keep is chosen on none of these: early stopping (on by default) watches an inner "stopping" split
of whole blocks carved from the train split (``stop_fraction`` of it) and restores the head of the epoch with the
lowest loss there. Stopping on the calibration split would let it choose the model it then certifies, making the
certificate optimistic; the calibration split is the same samples with early stopping on or off.

The train split may be thinned before any of this (suelo.sampling.cap_samples): at most ``max_per_polygon``
pixels of each polygon and ``max_per_class`` samples of each class, seeded. The calibration and test splits are
never thinned: the certificate is computed on every pixel of the held-out blocks, as the map will see them, and
``suelo evaluate`` finds the same split again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax

from suelo import __version__
from suelo.atomic import file_sha256
from suelo.errors import ConfigError
from suelo.evaluate import classification_metrics, rf_baseline
from suelo.legend import Legend
from suelo.models.artifact import ModelArtifact, input_contract, normalize_inputs
from suelo.models.heads import HeadConfig, MLPHead
from suelo.novelty import DEFAULT_REJECTION_RATE, NoveltyGate, fit_gate
from suelo.samples import DEFAULT_BLOCK_M, WORLDCEREAL_BANDS, Samples, ids_digest, spatial_split, three_way_split
from suelo.sampling import DEFAULT_MAX_PER_CLASS, DEFAULT_MAX_PER_POLYGON, auto_block_m, cap_samples
from suelo.train_progress import TrainProgress
from suelo.trainer import STOP_REASONS as STOP_REASONS  # re-exported: it was defined here
from suelo.trainer import Schedule, TrainTask, class_weights, fit, write_training_report

if TYPE_CHECKING:  # suelo.threshold (dask, xarray) is imported where it is used, not when this module loads
    from suelo.threshold import Score

# Pixels per embedding call: progress is reported between calls. A multiple of the encoder's CPU batch sizes
# (64 fp32, 128 bf16), so every batch holds the same pixels as in one call and the embeddings are bit-identical.
EMBED_CHUNK = 16_384


@dataclass(frozen=True)
class TrainConfig:
    bands: tuple[str, ...] = WORLDCEREAL_BANDS
    # The encoder inputs fed to Presto besides the bands (suelo.models.artifact.INPUTS): "s2" always, and any of
    # "s1" (VV/VH dB), "terrain" (elevation, slope), "weather" (temperature, precipitation m/day) from the samples;
    # the others are masked as Presto was pre-trained to take. Recorded in the model's input contract, which a cube
    # or job then has to meet (or set mask_missing_inputs). What each one gains: benchmarks/INPUTS.md.
    inputs: tuple[str, ...] = ("s2",)
    hidden: int = 64
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 64
    max_epochs: int = 200  # the upper limit; early stopping usually ends sooner
    # Early stopping on the stopping split (whole blocks of the train split): after `patience` epochs without a
    # lower loss there, the best epoch's head is restored. Off when False or when patience is 0 (how models made
    # before it existed read: their stored config has patience 0).
    early_stopping: bool = True
    patience: int = 10
    stop_fraction: float = 0.15  # share of the (thinned) train split held out as the stopping split
    time_budget_s: float | None = None  # stop the epochs when the next would end past this many seconds
    class_weighting: str = "sqrt"  # none | sqrt | balanced
    calibration: str = "temperature"  # none | temperature | vector
    target_accuracy: float = 0.95
    delta: float = 0.05
    threshold_score: Score = "top1"  # top1 | margin
    finetune: bool = False
    encoder_lr: float = 1e-5
    finetune_head_lr: float = 1e-4
    finetune_epochs: int = 20
    finetune_patience: int = 5
    seed: int = 0
    block_m: float | str = "auto"  # spatial block size in m, or "auto" (from the samples' extent, at most 10 km)
    val_fraction: float = 0.2  # the calibration split
    test_fraction: float = 0.0  # > 0: a third, untouched split scored once at the end (metrics["test"])
    max_per_polygon: int | None = DEFAULT_MAX_PER_POLYGON  # training pixels kept per polygon (None: all)
    max_per_class: int | None = DEFAULT_MAX_PER_CLASS  # training samples kept per class (None: all)
    min_class_samples: int = 5  # classes with fewer training samples are left out of the model
    rf_baseline: bool = True
    novelty_rejection_rate: float = DEFAULT_REJECTION_RATE  # share of in-distribution points the gate may reject
    honest_target: bool = True  # lower an uncertifiable target_accuracy to the highest certifiable one
    card_targets: tuple[float, ...] = (0.80, 0.85, 0.90, 0.95)  # targets scored on the test split

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"] = list(self.bands)
        d["inputs"] = list(self.inputs)
        d["card_targets"] = list(self.card_targets)
        return d

    @classmethod
    def legacy(cls, **changes: Any) -> TrainConfig:
        """How models were trained before training scaled (and the shipped model, models/train_default.py, is):
        every training sample, a fixed ``max_epochs`` with no early stopping, 10 km blocks."""
        fixed: dict[str, Any] = {
            "early_stopping": False, "max_per_polygon": None, "max_per_class": None, "block_m": DEFAULT_BLOCK_M,
        }  # fmt: skip
        return cls(**(fixed | changes))

    @property
    def stops_early(self) -> bool:
        return self.early_stopping and self.patience > 0

    def check(self) -> None:
        """A :class:`ConfigError` for values training cannot use."""
        if isinstance(self.block_m, str):
            if self.block_m != "auto":
                raise ConfigError(f"block_m must be a size in metres or 'auto', got {self.block_m!r}")
        elif not (math.isfinite(self.block_m) and self.block_m > 0):
            raise ConfigError(f"block_m must be positive, got {self.block_m}")
        if self.max_epochs < 1:
            raise ConfigError(f"max_epochs must be at least 1, got {self.max_epochs}")
        if self.patience < 0:
            raise ConfigError(f"patience must be 0 (no early stopping) or more, got {self.patience}")
        if not 0 < self.stop_fraction < 1:
            raise ConfigError(f"stop_fraction must be in (0, 1), got {self.stop_fraction}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"time_budget_s must be positive (or None: no limit), got {self.time_budget_s}")
        for name in ("max_per_polygon", "max_per_class"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be 0 or None (no cap) or positive, got {value}")
        try:
            normalize_inputs(self.inputs)
        except ValueError as exc:
            raise ConfigError(f"inputs: {exc}") from None


@dataclass
class TrainResult:
    artifact: ModelArtifact
    train: Samples  # the training samples the model was made from: fit + stopping split, after the caps
    val: Samples
    history: list[dict[str, float]] = field(default_factory=list)
    val_logits: np.ndarray | None = None  # (n_val, n_classes), for the calibration and risk-coverage figures
    val_targets: np.ndarray | None = None  # class index of each validation sample
    test: Samples | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # "train" / "val" / "test" embeddings
    head: MLPHead | None = None
    stopping: Samples | None = None  # the stopping split (None without early stopping)


def presto_arrays(samples: Samples, bands: Sequence[str], inputs: Sequence[str] = ("s2",)) -> dict[str, np.ndarray]:
    """The encoder's arrays of ``samples``: ``bands`` and the optional ``inputs`` the samples carry (the others
    masked), normalized as Presto was pre-trained (suelo.models.presto_inputs)."""
    from suelo.models.presto_inputs import presto_inputs

    x, mask, dw = presto_inputs(samples.reflectance, bands, latlons=samples.latlons, **samples.presto_kwargs(inputs))
    return {"x": x, "mask": mask, "dw": dw, "latlons": samples.latlons.astype(np.float32), "month": samples.start_month}


_presto_arrays = presto_arrays  # the name it had


def _take(arrays: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in arrays.items()}


def resolve_block_m(block_m: float | str, samples: Samples) -> tuple[float, dict[str, Any]]:
    """The block size the split uses: ``block_m`` itself, or for ``"auto"`` the one chosen from the samples'
    anchors (suelo.sampling.auto_block_m); with what was chosen and why."""
    from suelo.sampling import effective_blocks, extent_km

    if block_m == "auto":
        size, info = auto_block_m(samples.anchors)
        return size, {"requested": "auto", **info}
    size = float(block_m)
    count, effective = effective_blocks(samples.anchors, size)
    return size, {"requested": size, "block_m": size, "blocks": count, "effective_blocks": round(effective, 1),
                  "extent_km": extent_km(samples.anchors)}  # fmt: skip


class _HeadTask(TrainTask):
    """The land-cover head's hooks for :func:`suelo.trainer.fit`: epochs of shuffled mini-batches of samples
    (``forward(idx, True)``), the weighted loss and the accuracy on the watched split (``forward(idx, False)``)."""

    def __init__(
        self,
        forward: Callable[[np.ndarray, bool], torch.Tensor],
        params: list[dict[str, Any]],
        modules: list[torch.nn.Module],
        y_train: np.ndarray,
        y_watch: np.ndarray,
        weights: torch.Tensor,
        config: TrainConfig,
    ) -> None:
        self.forward, self.params, self._modules, self.weights = forward, params, modules, weights
        self.y_train, self.y_watch = torch.from_numpy(y_train), torch.from_numpy(y_watch)
        self.batch_size = config.batch_size
        self.order = torch.Generator().manual_seed(config.seed)  # each stage shuffles as if it were the first

    @property
    def modules(self) -> list[torch.nn.Module]:
        return self._modules

    def param_groups(self) -> list[dict[str, Any]]:
        return self.params

    def batches(self, round_: int) -> Iterator[np.ndarray]:
        order = torch.randperm(len(self.y_train), generator=self.order).numpy()
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def loss(self, batch: np.ndarray) -> tuple[torch.Tensor, int]:
        return F.cross_entropy(self.forward(batch, True), self.y_train[batch], weight=self.weights), len(batch)

    def validate(self) -> dict[str, float]:
        logits = self.forward(np.arange(len(self.y_watch)), False)
        return {
            "val_loss": float(F.cross_entropy(logits, self.y_watch, weight=self.weights)),
            "val_acc": float((logits.argmax(1) == self.y_watch).float().mean()),
        }


def _fit(
    task: _HeadTask,
    config: TrainConfig,
    max_epochs: int,
    patience: int,
    deadline: float | None,
    log: Callable[[str], None],
    tag: str,
    watched: str,
    progress: TrainProgress,
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """At most ``max_epochs`` epochs of ``task``; with ``patience`` > 0 it stops after that many epochs without a
    watched loss lower by 1e-4 and restores the best head (without, the last epoch's stays). The stopping record
    stored in the model: reason, epochs, best epoch (1-based) and its loss, seconds."""
    schedule = Schedule(max_epochs, config.weight_decay, patience, patience > 0, 1e-4, deadline)
    done = fit(task, schedule, tag, watched, progress, log)
    best = None if done.best_round is None else done.best_round + 1
    record = {"reason": done.reason, "epochs": done.rounds, "best_epoch": best, "best_loss": done.best_loss,
              "seconds": done.seconds}  # fmt: skip
    return done.history, record


def _stopping_split(
    samples: Samples, side: np.ndarray, block_m: float, config: TrainConfig, log: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(fit, stopping)`` indices into ``samples``: whole blocks of the train split ``side`` held out to watch
    for early stopping, ``stop_fraction`` of its samples; no stopping split (and so no early stopping) without
    early stopping or when the train split is a single block."""
    empty = np.zeros(0, dtype=np.int64)
    if not config.stops_early:
        return side, empty, {"enabled": False}
    try:
        fit, stop = spatial_split(samples.subset(side), block_m, config.stop_fraction, config.seed)
    except ValueError:
        log("early stopping off: the train split is one spatial block, there is none to hold out")
        return side, empty, {"enabled": False, "why": "the train split is one spatial block"}
    return side[fit], side[stop], {"enabled": True}


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def train_model(
    samples: Samples,
    legend: Legend,
    config: TrainConfig | None = None,
    encoder_path: str | Path | None = None,
    sources: Sequence[str] = (),
    log: Callable[[str], None] = lambda _msg: None,
    progress: TrainProgress | None = None,
    embeddings: np.ndarray | None = None,
) -> TrainResult:
    """Split ``samples`` spatially, train, score the model and the RandomForest baseline, build the artifact.

    ``embeddings``: the frozen pretrained encoder's embeddings ``(N, 128)`` of every one of ``samples``, in their
    order, made with ``config.bands`` and ``config.inputs`` (:func:`presto_arrays`, fp32 on the CPU as here), to be
    used instead of encoding again: the encoder is frozen, so a benchmark repeating training over split seeds
    encodes once. Not with ``finetune``."""
    from suelo.models.inference import encode_pixels
    from suelo.models.presto import DEFAULT_WEIGHTS, load_presto_encoder

    config = config or TrainConfig()
    config.check()
    inputs = normalize_inputs(config.inputs)
    if embeddings is not None:
        if config.finetune:
            raise ConfigError("precomputed embeddings are the frozen encoder's: they cannot be used to fine-tune")
        if len(embeddings) != len(samples):
            raise ConfigError(f"{len(embeddings)} precomputed embeddings for {len(samples)} samples")
    lacking = [i for i in inputs if i not in samples.inputs]
    if lacking:
        raise ConfigError(
            f"inputs {lacking} were asked for but the samples carry none (WorldCereal extractions carry s1, terrain "
            f"and weather; the samples have {list(samples.inputs)})"
        )
    progress = progress or TrainProgress()
    started = time.perf_counter()
    deadline = None if config.time_budget_s is None else started + config.time_budget_s
    torch.manual_seed(config.seed)
    bands = list(config.bands)
    samples = samples.select_bands(bands)
    unknown = sorted(set(samples.labels.tolist()) - set(legend.codes))
    if unknown:
        raise ConfigError(f"sample labels {unknown[:10]} are not in the legend {list(legend.codes)}")
    # the split is made on all samples, before rare classes are dropped and before the train split is thinned,
    # so `suelo evaluate` can redo it exactly from the stored (resolved) block size
    block_m, blocks = resolve_block_m(config.block_m, samples)
    train_idx, val_idx, test_idx = three_way_split(
        samples, block_m, config.val_fraction, config.test_fraction, config.seed
    )
    n_all = len(samples)
    log(
        f"split: {block_m:g} m blocks ({'auto, ' if config.block_m == 'auto' else ''}{blocks['blocks']} blocks, "
        f"{blocks['effective_blocks']:g} effective, over {blocks['extent_km'][0]:g} x {blocks['extent_km'][1]:g} km):"
        f" calibration {len(val_idx) / n_all:.1%} of the samples (asked {config.val_fraction:.0%}), test "
        f"{len(test_idx) / n_all:.1%} (asked {config.test_fraction:.0%})"
    )
    # thin the train split (at most max_per_polygon pixels per polygon, max_per_class per class), then carve the
    # stopping split from what is left, so it holds stop_fraction of the samples training really uses
    keep, sampling = cap_samples(samples.subset(train_idx), config.max_per_polygon, config.max_per_class, config.seed)
    side = train_idx[keep]
    fit_idx, stop_idx, stopping = _stopping_split(samples, side, block_m, config, log)
    counts = np.bincount(np.searchsorted(legend.codes, samples.labels[fit_idx]), minlength=len(legend))
    kept_codes = [c for c, n in zip(legend.codes, counts, strict=False) if n >= config.min_class_samples]
    dropped = {
        legend.by_code(c).name: int(n)
        for c, n in zip(legend.codes, counts, strict=False)
        if 0 < n < config.min_class_samples
    }
    if len(kept_codes) < 2:
        raise ConfigError(
            f"need at least two classes with >= {config.min_class_samples} training samples, got {counts}"
        )
    model_legend = legend.subset(kept_codes)

    def of_model(index: np.ndarray) -> np.ndarray:
        return index[np.isin(samples.labels[index], kept_codes)]

    used_idx = np.sort(np.concatenate([fit_idx, stop_idx]))  # the train split's order
    train = samples.subset(of_model(used_idx))
    fit_mask = np.isin(of_model(used_idx), fit_idx)  # which of `train` the head is fitted on (all but stopping)
    val = samples.subset(of_model(val_idx))
    test = samples.subset(of_model(test_idx)) if len(test_idx) else None
    if len(val) == 0:
        raise ConfigError("the validation split holds no sample of the model's classes; change seed or block size")
    code_index = {c: i for i, c in enumerate(kept_codes)}
    y_used = np.array([code_index[c] for c in train.labels], dtype=np.int64)
    y_train, y_stop = y_used[fit_mask], y_used[~fit_mask]
    y_val = np.array([code_index[c] for c in val.labels], dtype=np.int64)
    names = {c: legend.by_code(c).name for c in legend.codes}
    capped = sampling["available"] != sampling["kept"]
    log(
        f"{len(y_train)} train{f' + {len(y_stop)} stopping' if len(y_stop) else ''} / {len(val)} validation "
        f"{samples.product_level} samples, {len(kept_codes)} classes; dropped (too rare): {dropped}"
        + (
            f"; train split thinned from {sum(sampling['available'].values())} to {sum(sampling['kept'].values())} "
            f"samples (at most {config.max_per_polygon} per polygon, {config.max_per_class} per class)"
            if capped
            else ""
        )
    )

    coverage = samples.input_coverage()
    if len(inputs) > 1:
        log("inputs: " + ", ".join(f"{i} ({coverage[i]:.0%} of values present)" if i != "s2" else i for i in inputs))
    encoder_weights = Path(encoder_path or DEFAULT_WEIGHTS)
    encoder = load_presto_encoder(encoder_weights)
    used_arrays, va = presto_arrays(train, bands, inputs), presto_arrays(val, bands, inputs)
    n_embed = len(train) + len(val)
    progress.start("embedding", n_embed, "px")
    embedded = 0

    def embed(a: dict[str, np.ndarray], report: bool = True, rows: np.ndarray | None = None) -> torch.Tensor:
        """Embeddings of the arrays ``a``; with precomputed ``embeddings``, those of ``rows`` (the rows of
        ``samples`` ``a`` was made from) instead."""
        nonlocal embedded
        if embeddings is not None:
            assert rows is not None
            if report:
                embedded += len(rows)
                progress.update("embedding", embedded)
            return torch.from_numpy(np.ascontiguousarray(embeddings[rows], dtype=np.float32))
        parts = []
        for s in range(0, len(a["x"]), EMBED_CHUNK):
            sl = slice(s, s + EMBED_CHUNK)
            parts.append(
                encode_pixels(
                    encoder, a["x"][sl], a["mask"][sl], a["dw"][sl], a["latlons"][sl], a["month"][sl], device="cpu"
                )
            )
            if report:
                embedded += len(parts[-1])
                progress.update("embedding", embedded)
        if not parts:
            return torch.zeros((0, encoder.config.embedding_size), dtype=torch.float32)
        return torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts))

    emb_used, emb_val = embed(used_arrays, rows=of_model(used_idx)), embed(va, rows=of_model(val_idx))
    progress.finish("embedding")
    emb_train, emb_stop = emb_used[torch.from_numpy(fit_mask)], emb_used[torch.from_numpy(~fit_mask)]
    if fit_mask.all():  # no stopping split: the very same tensor as before it existed
        emb_train = emb_used
    log(f"embeddings: {time.perf_counter() - started:.1f} s ({n_embed} px)")
    weights = class_weights(y_train, len(kept_codes), config.class_weighting)
    head_config = HeadConfig(emb_train.shape[1], config.hidden, config.dropout, len(kept_codes))
    head = MLPHead(head_config)
    # the epoch is chosen on the stopping split; without one the calibration loss is only shown, never used
    stops = len(y_stop) > 0
    emb_watch, y_watch = (emb_stop, y_stop) if stops else (emb_val, y_val)
    watched = "stopping" if stops else "calibration"

    def frozen_forward(idx: np.ndarray, training: bool) -> torch.Tensor:
        return head((emb_train if training else emb_watch)[torch.from_numpy(idx)])

    # One thread for the head: a 64-sample step of a 128-64-n MLP is far too small to split, and two threads
    # waiting on each other at every tiny op took 10-60 ms a step instead of 1 ms on a busy 2-core machine
    # (measured; the 98 s an epoch a user saw for 365,000 pixels is ~20 ms a step). Bit-identical results.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        task = _HeadTask(
            frozen_forward, [{"params": head.parameters(), "lr": config.lr}], [head], y_train, y_watch, weights, config
        )
        history, stop_record = _fit(
            task,
            config,
            config.max_epochs,
            config.patience if stops else 0,
            deadline,
            log,
            "head",
            watched,
            progress,
        )
    finally:
        torch.set_num_threads(threads)
    stop_records = {"head": stop_record}
    encoder_state = None
    if config.finetune:
        fit_arrays = _take(used_arrays, np.flatnonzero(fit_mask))
        watch_arrays = _take(used_arrays, np.flatnonzero(~fit_mask)) if stops else va

        def tensors(a: dict[str, np.ndarray], idx: np.ndarray) -> list[torch.Tensor]:
            return [
                torch.from_numpy(a["x"][idx]),
                torch.from_numpy(a["mask"][idx]),
                torch.from_numpy(a["dw"][idx]),
                torch.from_numpy(a["latlons"][idx]),
                torch.from_numpy(np.asarray(a["month"][idx], dtype=np.int64)),
            ]

        def tuned_forward(idx: np.ndarray, training: bool) -> torch.Tensor:
            if training:
                return head(encoder(*tensors(fit_arrays, idx)))
            return torch.cat(
                [head(encoder(*tensors(watch_arrays, idx[s : s + 1024]))) for s in range(0, len(idx), 1024)]
            )

        groups = [
            {"params": encoder.parameters(), "lr": config.encoder_lr},
            {"params": head.parameters(), "lr": config.finetune_head_lr},
        ]
        tuned, stop_records["fine-tune"] = _fit(
            _HeadTask(tuned_forward, groups, [encoder, head], y_train, y_watch, weights, config),
            config,
            config.finetune_epochs,
            config.finetune_patience if stops else 0,
            deadline,
            log,
            "fine-tune",
            watched,
            progress,
        )
        history += tuned
        # the encoder's fixed tables are buffers rebuilt on load; store every state entry anyway for exactness
        encoder_state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        encoder.eval()
        emb_used, emb_val = embed(used_arrays, False), embed(va, False)
    final_stop = stop_records["fine-tune" if config.finetune else "head"]

    head.eval()
    with torch.no_grad():
        val_logits = head(emb_val).double().numpy()
    pred = np.asarray(kept_codes)[val_logits.argmax(1)]
    metrics: dict[str, Any] = {"validation": classification_metrics(val.labels, pred, model_legend)}
    # the gate's Gaussians describe all the training data the model was made from, the stopping split included
    gate = fit_gate(
        emb_used.numpy(), y_used, emb_val.numpy(), config.novelty_rejection_rate,
        "Presto embedding (128, mean-pooled tokens after the final LayerNorm)",
    )  # fmt: skip
    inside_val = ~gate.outside(emb_val.numpy())
    log(
        f"novelty gate: {gate.meta()['method']}, threshold {gate.threshold:.3f} for {config.novelty_rejection_rate:.0%}"
        f" rejection; rejects {1 - inside_val.mean():.1%} of the calibration points"
    )
    confidence = calibrate_and_threshold(val_logits, y_val, config, inside_val)
    metrics["calibration"] = confidence["metrics"]
    log(
        f"calibration ({config.calibration}): ECE {confidence['metrics']['ece_before']:.3f} -> "
        f"{confidence['metrics']['ece_after']:.3f}; threshold for "
        f"{confidence['thresholds']['report']['global']['target_accuracy']:.0%} retained accuracy: "
        f"{confidence['thresholds']['report']['global']['threshold']:.3f} "
        f"(coverage {confidence['thresholds']['report']['global']['coverage']:.1%})"
    )
    if config.rf_baseline:
        metrics["random_forest_validation"] = rf_baseline(train, val, model_legend, config.seed, inputs=inputs)
    log(
        f"validation OA {metrics['validation']['overall_accuracy']:.3f} "
        f"macro F1 {metrics['validation']['macro_f1']:.3f}"
        + (
            f"; RandomForest OA {metrics['random_forest_validation']['overall_accuracy']:.3f} "
            f"macro F1 {metrics['random_forest_validation']['macro_f1']:.3f}"
            if config.rf_baseline
            else ""
        )
    )
    test_emb = None
    if test is not None and len(test):
        test_emb = embed(presto_arrays(test, bands, inputs), False, of_model(test_idx)).numpy()
        metrics["test"] = score_test_split(
            head, gate, confidence, test, test_emb, kept_codes, model_legend, config, train
        )
    split_train = samples.subset(of_model(train_idx))  # the train split as `suelo evaluate` redoes it
    stopping_samples = train.subset(np.flatnonzero(~fit_mask)) if stops else None
    meta = {
        "legend": model_legend.to_list(),
        "input_contract": input_contract(
            bands,
            train.n_months,
            None if config.finetune else file_sha256(encoder_weights),
            samples.product_level,
            inputs=inputs,
        ),
        "head": head_config.to_dict(),
        "finetuned_encoder": config.finetune,
        "training": {
            "config": config.to_dict(),
            "sources": [str(s) for s in sources],
            "inputs": list(inputs),
            "input_coverage": {i: round(coverage[i], 4) for i in inputs if i != "s2"},
            "class_counts_train": {model_legend.by_code(c).name: n for c, n in train.class_counts().items()},
            "class_counts_val": {model_legend.by_code(c).name: n for c, n in val.class_counts().items()},
            "classes_dropped_too_rare": dropped,
            "sampling": sampling
            | {
                "available": {names[c]: n for c, n in sampling["available"].items()},
                "kept": {names[c]: n for c, n in sampling["kept"].items()},
                "applies_to": "the train split (fit + stopping); calibration and test keep every sample",
            },
            "epochs": len(history),
            "stopping_reason": final_stop["reason"],
            "stopping": {
                "early_stopping": stops,
                "watched": "stopping split" if stops else "calibration split (shown only, never used to choose)",
                "patience": config.patience if stops else 0,
                "max_epochs": config.max_epochs,
                "time_budget_s": config.time_budget_s,
                **stop_records,
            }
            | ({"why_off": stopping["why"]} if "why" in stopping else {}),
            "seconds": round(time.perf_counter() - started, 1),
        },
        "split": {
            "method": "spatial blocks (suelo.samples.spatial_split)",
            "block_m": block_m,
            "block_m_requested": blocks["requested"],
            "blocks": {k: v for k, v in blocks.items() if k not in ("requested", "block_m")},
            "val_fraction": config.val_fraction,
            "test_fraction": config.test_fraction,
            "achieved": {
                "train": _share(len(train_idx), n_all),
                "calibration": _share(len(val_idx), n_all),
                "test": _share(len(test_idx), n_all),
            },
            "seed": config.seed,
            "n_train": len(split_train),
            "n_val": len(val),
            "n_test": 0 if test is None else len(test),
            "train_ids_sha256": ids_digest(split_train.sample_ids),
            "val_ids_sha256": ids_digest(val.sample_ids),
            "test_ids_sha256": ids_digest(test.sample_ids) if test is not None else None,
            # the ids themselves, so `suelo evaluate` scores exactly these samples (long lists are stored
            # compressed, suelo.models.artifact.pack_split_ids)
            "train_ids": sorted(map(str, split_train.sample_ids)),
            "calibration_ids": sorted(map(str, val.sample_ids)),
            "test_ids": sorted(map(str, test.sample_ids)) if test is not None else [],
            "n_fit": len(y_train),
            "n_stopping": len(y_stop),
            "stopping": {
                "stop_fraction": config.stop_fraction,
                "achieved": _share(len(y_stop), len(train)),
                "ids_sha256": ids_digest(stopping_samples.sample_ids) if stopping_samples is not None else None,
            }
            if stops
            else None,
        },
        "novelty": gate.meta(),
        "metrics": metrics,
        "calibration": confidence["calibration"],
        "thresholds": confidence["thresholds"],
        "validation_scores": confidence["validation_scores"],
        "software": {"suelo": __version__, "torch": torch.__version__},
    }
    head_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    artifact = ModelArtifact(meta, head_state, encoder_state, gate=gate)
    split_embeddings = {"train": emb_used.numpy(), "val": emb_val.numpy()}
    if test_emb is not None:
        split_embeddings["test"] = test_emb
    return TrainResult(artifact, train, val, history, val_logits, y_val, test, split_embeddings, head, stopping_samples)


def calibrate_and_threshold(
    logits: np.ndarray, targets: np.ndarray, config: TrainConfig, inside: np.ndarray | None = None
) -> dict[str, Any]:
    """Calibration, ECE/NLL and the certified threshold of the validation logits (suelo.threshold); ``inside``
    marks the points the novelty gate lets through."""
    from suelo.threshold import calibrate_and_certify

    return calibrate_and_certify(
        logits, targets, config.calibration, config.target_accuracy, config.delta, config.threshold_score, inside,
        config.honest_target,
    )  # fmt: skip


def score_test_split(
    head: MLPHead,
    gate: NoveltyGate,
    confidence: dict[str, Any],
    test: Samples,
    test_emb: np.ndarray,
    kept_codes: Sequence[int],
    legend: Legend,
    config: TrainConfig,
    train: Samples,
) -> dict[str, Any]:
    """Everything fitted on train and calibration, scored once on the untouched test split: macro-F1 of the head
    and of the RandomForest (same train split, same inputs), ECE before/after calibration, the gate's rejection
    rate, and for each of ``config.card_targets`` the threshold certified on the calibration split with what it
    gives on test (coverage of all test points, accuracy of the mapped ones)."""
    from suelo.calibrate import Calibration, expected_calibration_error
    from suelo.threshold import choose_threshold, confidence_score

    code_index = {c: i for i, c in enumerate(kept_codes)}
    y_test = np.array([code_index[c] for c in test.labels], dtype=np.int64)
    with torch.no_grad():
        logits = head(torch.from_numpy(test_emb)).double().numpy()
    calibrated = Calibration.from_dict(confidence["calibration"]).apply(logits)
    predicted = calibrated.argmax(1)
    correct = predicted == y_test
    inside = ~gate.outside(test_emb)
    score_kind = confidence["thresholds"]["policy"]["score"]
    test_scores = confidence_score(calibrated, score_kind)
    stored = confidence["validation_scores"]
    cal_scores = np.asarray(stored[score_kind], dtype=np.float64)
    cal_correct = np.asarray(stored["correct"], dtype=bool)
    certified = {}
    for target in config.card_targets:
        choice = choose_threshold(cal_scores, cal_correct, target, config.delta)
        mapped = inside & (test_scores >= choice.threshold)
        certified[f"{target:.2f}"] = {
            "feasible": choice.feasible,
            "threshold": choice.threshold,
            "calibration_coverage": choice.coverage,
            "test_coverage": float(mapped.mean()),
            "test_accuracy_of_mapped": float(correct[mapped].mean()) if mapped.any() else None,
            "test_mapped": int(mapped.sum()),
        }
    out: dict[str, Any] = {
        "n": len(test),
        "model": classification_metrics(test.labels, np.asarray(kept_codes)[predicted], legend),
        "ece_before": expected_calibration_error(softmax(logits, axis=1), y_test),
        "ece_after": expected_calibration_error(calibrated, y_test),
        "novelty_rejected": float(1 - inside.mean()),
        "certified": certified,
    }
    if config.rf_baseline:
        out["random_forest"] = rf_baseline(train, test, legend, config.seed, inputs=config.inputs)
    return out


def write_training_figures(result: TrainResult, folder: Path) -> list[Path]:
    """The training report beside the model (suelo.trainer.write_training_report): metrics.json, the
    calibration split's confusion matrix, reliability diagram and risk-coverage curve."""
    assert result.val_logits is not None and result.val_targets is not None
    meta = result.artifact.meta
    validation = meta["metrics"]["validation"]
    title = f"Land-cover head, calibration split (macro F1 {validation['macro_f1']:.3f})"
    return write_training_report(
        folder, result.val_logits, result.val_targets, meta["calibration"], meta["thresholds"], meta["metrics"],
        (validation, title),
    )  # fmt: skip
