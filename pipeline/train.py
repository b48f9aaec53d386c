"""Train a land-cover model on labelled samples: Presto embeddings + an MLP head, written as one artifact.

Two modes:

- frozen (default): embeddings are computed once with the pretrained encoder, then only the head is trained,
- ``finetune``: the frozen-mode head is the starting point, then encoder and head are trained end to end with a
  much smaller learning rate for the encoder (large steps would wash out what pretraining learned).

Both use AdamW and class-weighted cross-entropy (by default weights ~ 1/sqrt(class frequency): rare classes count
without the head giving up the common ones) for a fixed number of epochs. The spatially separated validation split
is never used to choose the epoch (``patience`` > 0 enables early stopping on it, making its metrics optimistic).
Everything is seeded.

Splits are spatial (whole blocks on one side): train / calibration / test (``test_fraction`` > 0; the shipped
model uses no test split and takes its accuracy figures from the seed-averaged procedure of
``pipeline.model_card``). Training fits only on the train split. On the calibration split ("validation" in the
metrics): the novelty gate's threshold (``pipeline.novelty``, its Gaussians fitted on the train embeddings), the
temperature, and the confidence threshold certified for ``target_accuracy`` (pipeline.threshold) on the points the
gate lets through, as a share of all of them. A target the calibration data cannot certify is lowered to the
highest one it does certify. The calibration scores are stored in the artifact so a job can ask for another target
at run time without retraining. With a test split, everything is then scored once on it (``metrics["test"]``).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax

from models.artifact import ModelArtifact, input_contract
from models.heads import HeadConfig, MLPHead
from pipeline import __version__
from pipeline.atomic import file_sha256
from pipeline.errors import ConfigError
from pipeline.evaluate import classification_metrics, rf_baseline
from pipeline.legend import Legend
from pipeline.novelty import DEFAULT_REJECTION_RATE, NoveltyGate, fit_gate
from pipeline.samples import DEFAULT_BLOCK_M, WORLDCEREAL_BANDS, Samples, three_way_split


@dataclass(frozen=True)
class TrainConfig:
    bands: tuple[str, ...] = WORLDCEREAL_BANDS
    hidden: int = 64
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 0  # 0: no early stopping (the validation split stays independent of training choices)
    class_weighting: str = "sqrt"  # none | sqrt | balanced
    calibration: str = "temperature"  # none | temperature | vector
    target_accuracy: float = 0.95
    delta: float = 0.05
    threshold_score: str = "top1"  # top1 | margin
    finetune: bool = False
    encoder_lr: float = 1e-5
    finetune_head_lr: float = 1e-4
    finetune_epochs: int = 20
    finetune_patience: int = 5
    seed: int = 0
    block_m: float = DEFAULT_BLOCK_M
    val_fraction: float = 0.2  # the calibration split
    test_fraction: float = 0.0  # > 0: a third, untouched split scored once at the end (metrics["test"])
    min_class_samples: int = 5  # classes with fewer training samples are left out of the model
    rf_baseline: bool = True
    novelty_rejection_rate: float = DEFAULT_REJECTION_RATE  # share of in-distribution points the gate may reject
    honest_target: bool = True  # lower an uncertifiable target_accuracy to the highest certifiable one
    card_targets: tuple[float, ...] = (0.80, 0.85, 0.90, 0.95)  # targets scored on the test split

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"] = list(self.bands)
        d["card_targets"] = list(self.card_targets)
        return d


@dataclass
class TrainResult:
    artifact: ModelArtifact
    train: Samples
    val: Samples
    history: list[dict[str, float]] = field(default_factory=list)
    val_logits: np.ndarray | None = None  # (n_val, n_classes), for the calibration and risk-coverage figures
    val_targets: np.ndarray | None = None  # class index of each validation sample
    test: Samples | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # "train" / "val" / "test" embeddings
    head: MLPHead | None = None


def ids_digest(ids: Sequence[str]) -> str:
    """Order-independent fingerprint of a set of sample ids (to check a later evaluation uses the same split)."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()


def class_weights(labels: np.ndarray, n_classes: int, mode: str = "balanced") -> torch.Tensor:
    """Loss weight per class: ``balanced`` ~ 1/frequency, ``sqrt`` ~ 1/sqrt(frequency), ``none`` all ones."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    balanced = len(labels) / (n_classes * np.maximum(counts, 1))
    weights = {"balanced": balanced, "sqrt": np.sqrt(balanced), "none": np.ones(n_classes)}
    if mode not in weights:
        raise ConfigError(f"class_weighting must be one of {sorted(weights)}, got {mode!r}")
    return torch.tensor(weights[mode], dtype=torch.float32)


def _presto_arrays(samples: Samples, bands: Sequence[str]) -> dict[str, np.ndarray]:
    from models.presto_inputs import presto_inputs

    x, mask, dw = presto_inputs(samples.reflectance, bands, latlons=samples.latlons)
    return {"x": x, "mask": mask, "dw": dw, "latlons": samples.latlons.astype(np.float32), "month": samples.start_month}


def _fit(
    forward: Callable[[np.ndarray, bool], torch.Tensor],
    params: list[dict[str, Any]],
    modules: list[torch.nn.Module],
    y_train: np.ndarray,
    y_val: np.ndarray,
    weights: torch.Tensor,
    config: TrainConfig,
    max_epochs: int,
    patience: int,
    log: Callable[[str], None],
    tag: str,
) -> list[dict[str, float]]:
    """AdamW mini-batch training with early stopping on the weighted validation loss; restores the best state."""
    opt = torch.optim.AdamW(params, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    yt, yv = torch.from_numpy(y_train), torch.from_numpy(y_val)
    best, best_state, bad, history = float("inf"), None, 0, []
    for epoch in range(max_epochs):
        for m in modules:
            m.train()
        order = torch.randperm(len(y_train), generator=gen).numpy()
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            loss = F.cross_entropy(forward(idx, True), yt[idx], weight=weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        for m in modules:
            m.eval()
        with torch.no_grad():
            logits = forward(np.arange(len(y_val)), False)
            val_loss = float(F.cross_entropy(logits, yv, weight=weights))
            val_acc = float((logits.argmax(1) == yv).float().mean())
        history.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss, "val_acc": val_acc})
        if patience <= 0:
            continue
        if val_loss < best - 1e-4:
            best, bad = val_loss, 0
            best_state = [copy.deepcopy(m.state_dict()) for m in modules]
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        for m, state in zip(modules, best_state, strict=False):
            m.load_state_dict(state)
    h = history[-1]
    log(f"{tag}: {len(history)} epochs, val loss {h['val_loss']:.4f}, train loss {h['train_loss']:.4f}")
    return history


def train_model(
    samples: Samples,
    legend: Legend,
    config: TrainConfig | None = None,
    encoder_path: str | Path | None = None,
    sources: Sequence[str] = (),
    log: Callable[[str], None] = lambda _msg: None,
) -> TrainResult:
    """Split ``samples`` spatially, train, score the model and the RandomForest baseline, build the artifact."""
    from models.inference import encode_pixels
    from models.presto import DEFAULT_WEIGHTS, load_presto_encoder

    config = config or TrainConfig()
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    bands = list(config.bands)
    samples = samples.select_bands(bands)
    unknown = sorted(set(samples.labels.tolist()) - set(legend.codes))
    if unknown:
        raise ConfigError(f"sample labels {unknown[:10]} are not in the legend {list(legend.codes)}")
    # the split is made on all samples, before rare classes are dropped, so `suelo evaluate` can redo it exactly
    train_idx, val_idx, test_idx = three_way_split(
        samples, config.block_m, config.val_fraction, config.test_fraction, config.seed
    )
    counts = np.bincount(np.searchsorted(legend.codes, samples.labels[train_idx]), minlength=len(legend))
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
    train = samples.subset(train_idx[np.isin(samples.labels[train_idx], kept_codes)])
    val = samples.subset(val_idx[np.isin(samples.labels[val_idx], kept_codes)])
    test = samples.subset(test_idx[np.isin(samples.labels[test_idx], kept_codes)]) if len(test_idx) else None
    if len(val) == 0:
        raise ConfigError("the validation split holds no sample of the model's classes; change seed or block size")
    code_index = {c: i for i, c in enumerate(kept_codes)}
    y_train = np.array([code_index[c] for c in train.labels], dtype=np.int64)
    y_val = np.array([code_index[c] for c in val.labels], dtype=np.int64)
    log(
        f"{len(train)} train / {len(val)} validation {samples.product_level} samples, {len(kept_codes)} classes; "
        f"dropped (too rare): {dropped}"
    )

    encoder_weights = Path(encoder_path or DEFAULT_WEIGHTS)
    encoder = load_presto_encoder(encoder_weights)
    tr, va = _presto_arrays(train, bands), _presto_arrays(val, bands)

    def embed(a: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(
            encode_pixels(encoder, a["x"], a["mask"], a["dw"], a["latlons"], a["month"], device="cpu")
        )

    emb_train, emb_val = embed(tr), embed(va)
    log(f"embeddings: {time.perf_counter() - started:.1f} s")
    weights = class_weights(y_train, len(kept_codes), config.class_weighting)
    head_config = HeadConfig(emb_train.shape[1], config.hidden, config.dropout, len(kept_codes))
    head = MLPHead(head_config)

    def frozen_forward(idx: np.ndarray, training: bool) -> torch.Tensor:
        return head((emb_train if training else emb_val)[torch.from_numpy(idx)])

    history = _fit(
        frozen_forward,
        [{"params": head.parameters(), "lr": config.lr}],
        [head],
        y_train,
        y_val,
        weights,
        config,
        config.max_epochs,
        config.patience,
        log,
        "head",
    )
    encoder_state = None
    if config.finetune:

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
                return head(encoder(*tensors(tr, idx)))
            return torch.cat([head(encoder(*tensors(va, idx[s : s + 1024]))) for s in range(0, len(idx), 1024)])

        history += _fit(
            tuned_forward,
            [
                {"params": encoder.parameters(), "lr": config.encoder_lr},
                {"params": head.parameters(), "lr": config.finetune_head_lr},
            ],
            [encoder, head],
            y_train,
            y_val,
            weights,
            config,
            config.finetune_epochs,
            config.finetune_patience,
            log,
            "fine-tune",
        )
        # the encoder's fixed tables are buffers rebuilt on load; store every state entry anyway for exactness
        encoder_state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
        encoder.eval()
        emb_val = embed(va)

    head.eval()
    with torch.no_grad():
        val_logits = head(emb_val).double().numpy()
    pred = np.asarray(kept_codes)[val_logits.argmax(1)]
    metrics: dict[str, Any] = {"validation": classification_metrics(val.labels, pred, model_legend)}
    gate = fit_gate(
        emb_train.numpy(), y_train, emb_val.numpy(), config.novelty_rejection_rate,
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
        metrics["random_forest_validation"] = rf_baseline(train, val, model_legend, config.seed)
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
        test_emb = embed(_presto_arrays(test, bands)).numpy()
        metrics["test"] = score_test_split(
            head, gate, confidence, test, test_emb, kept_codes, model_legend, config, train
        )
    meta = {
        "legend": model_legend.to_list(),
        "input_contract": input_contract(
            bands, train.n_months, None if config.finetune else file_sha256(encoder_weights), samples.product_level
        ),
        "head": head_config.to_dict(),
        "finetuned_encoder": config.finetune,
        "training": {
            "config": config.to_dict(),
            "sources": [str(s) for s in sources],
            "class_counts_train": {model_legend.by_code(c).name: n for c, n in train.class_counts().items()},
            "class_counts_val": {model_legend.by_code(c).name: n for c, n in val.class_counts().items()},
            "classes_dropped_too_rare": dropped,
            "epochs": len(history),
            "seconds": round(time.perf_counter() - started, 1),
        },
        "split": {
            "method": "spatial blocks (pipeline.samples.spatial_split)",
            "block_m": config.block_m,
            "val_fraction": config.val_fraction,
            "test_fraction": config.test_fraction,
            "seed": config.seed,
            "n_train": len(train),
            "n_val": len(val),
            "n_test": 0 if test is None else len(test),
            "train_ids_sha256": ids_digest(train.sample_ids),
            "val_ids_sha256": ids_digest(val.sample_ids),
            "test_ids_sha256": ids_digest(test.sample_ids) if test is not None else None,
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
    embeddings = {"train": emb_train.numpy(), "val": emb_val.numpy()}
    if test_emb is not None:
        embeddings["test"] = test_emb
    return TrainResult(artifact, train, val, history, val_logits, y_val, test, embeddings, head)


def calibrate_and_threshold(
    logits: np.ndarray, targets: np.ndarray, config: TrainConfig, inside: np.ndarray | None = None
) -> dict[str, Any]:
    """Calibration, ECE/NLL and the certified threshold of the validation logits (pipeline.threshold); ``inside``
    marks the points the novelty gate lets through."""
    from pipeline.threshold import calibrate_and_certify

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
    from pipeline.calibrate import Calibration, expected_calibration_error
    from pipeline.threshold import choose_threshold, confidence_score

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
        out["random_forest"] = rf_baseline(train, test, legend, config.seed)
    return out


def write_training_figures(result: TrainResult, folder: Path) -> list[Path]:
    """Reliability diagram and risk-coverage curve (PNG + JSON) of the validation split, beside the model."""
    from pipeline.calibrate import Calibration, plot_reliability, reliability
    from pipeline.threshold import ThresholdChoice, confidence_score, write_risk_coverage

    assert result.val_logits is not None and result.val_targets is not None
    meta = result.artifact.meta
    calibration = Calibration.from_dict(meta["calibration"])
    calibrated = calibration.apply(result.val_logits)
    folder.mkdir(parents=True, exist_ok=True)
    reliability_png = folder / "reliability.png"
    plot_reliability(
        reliability(softmax(result.val_logits, axis=1), result.val_targets),
        reliability(calibrated, result.val_targets),
        reliability_png,
        title=f"Validation reliability ({calibration.method} scaling)",
    )
    policy = meta["thresholds"]["policy"]
    choice = ThresholdChoice.from_dict(meta["thresholds"]["report"]["global"])
    scores = confidence_score(calibrated, policy["score"])
    correct = calibrated.argmax(1) == result.val_targets
    write_risk_coverage(scores, correct, choice, folder / "risk_coverage.json", folder / "risk_coverage.png")
    return [reliability_png, folder / "risk_coverage.json", folder / "risk_coverage.png"]
