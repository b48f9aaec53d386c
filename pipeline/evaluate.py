"""Accuracy of a land-cover model on held-out samples, always side by side with a RandomForest baseline.

The baseline sees the same raw monthly band values the encoder sees (``T x B`` features per sample) and is
trained on exactly the training samples and scored on exactly the validation samples of the model's split, so
the comparison says what the encoder adds over a classic per-pixel classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.legend import Legend
from pipeline.samples import Samples

# A missing month enters the RandomForest as this value: no real reflectance is negative below -0.1 (the baseline
# 04.00 offset gives at most -0.1), so trees can split "missing" off cleanly without imputing.
RF_MISSING_VALUE = -1.0
RF_TREES = 300


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, legend: Legend) -> dict[str, Any]:
    """OA, macro F1 (over the classes present in ``y_true`` or ``y_pred``), Cohen's kappa, per-class P/R/F1 and
    the confusion matrix (rows = reference, columns = predicted, in legend order)."""
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    codes = list(legend.codes)
    present = sorted(set(np.unique(y_true).tolist()) | set(np.unique(y_pred).tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=codes, zero_division=0)
    per_class = {
        c.name: {
            "code": c.code,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(legend.classes)
    }
    return {
        "n": len(y_true),
        "overall_accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "kappa": float(cohen_kappa_score(y_true, y_pred)) if len(set(y_true) | set(y_pred)) > 1 else 1.0,
        "per_class": per_class,
        "confusion_matrix": {
            "labels": codes,
            "names": list(legend.names),
            "matrix": confusion_matrix(y_true, y_pred, labels=codes).tolist(),
        },
    }


def rf_features(samples: Samples, bands: list[str] | tuple[str, ...] | None = None) -> np.ndarray:
    s = samples if bands is None else samples.select_bands(list(bands))
    x = s.reflectance.reshape(len(s), -1)
    return np.where(np.isfinite(x), x, RF_MISSING_VALUE).astype(np.float32)


def rf_baseline(
    train: Samples, val: Samples, legend: Legend, seed: int = 0, bands: list[str] | tuple[str, ...] | None = None
) -> dict[str, Any]:
    """RandomForest (balanced class weights, seeded) on raw monthly values: trained on ``train``, scored on
    ``val``."""
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(
        n_estimators=RF_TREES, class_weight="balanced", random_state=seed, n_jobs=-1, min_samples_leaf=1
    )
    rf.fit(rf_features(train, bands), train.labels)
    pred = rf.predict(rf_features(val, bands))
    out = classification_metrics(val.labels, pred, legend)
    out["model"] = (
        f"sklearn RandomForestClassifier(n_estimators={RF_TREES}, class_weight='balanced', random_state={seed}) "
        f"on {train.n_months} months x bands raw reflectance, missing = {RF_MISSING_VALUE}"
    )
    return out


def predict_samples(
    artifact: Any, samples: Samples, device: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated posteriors ``(N, classes)``, predicted codes ``(N,)`` and the novelty gate's verdict ``(N,)``
    (True = outside the training data) of a model artifact on samples: what a map would get."""
    import torch

    from models.inference import encode_pixels
    from models.presto_inputs import presto_inputs
    from pipeline.calibrate import Calibration

    bands = artifact.contract["bands"]
    s = samples.select_bands(bands)
    x, mask, dw = presto_inputs(s.reflectance, bands, latlons=s.latlons)
    emb = encode_pixels(artifact.build_encoder(), x, mask, dw, s.latlons, s.start_month, device=device or "cpu")
    head = artifact.build_head()
    with torch.inference_mode():
        logits = head(torch.from_numpy(emb)).double().numpy()
    probs = Calibration.from_dict(artifact.meta.get("calibration", {})).apply(logits)
    codes = np.asarray(artifact.legend.codes)[probs.argmax(axis=1)]
    return probs, codes, artifact.gate.outside(emb)


def evaluate_model(artifact: Any, samples: Samples, device: str | None = None) -> dict[str, Any]:
    """Score a model artifact on its held-out split of ``samples`` (redone with the artifact's recorded split
    settings: the test split when the model has one, else the calibration split), with the calibrated posteriors,
    the novelty gate and the model's certified policy applied as a map would, next to the RandomForest baseline
    trained on the training part."""
    from pipeline.samples import three_way_split
    from pipeline.threshold import ThresholdPolicy, confidence_score

    split = artifact.meta["split"]
    legend = artifact.legend
    bands = artifact.contract["bands"]
    # classes the model does not know cannot be scored fairly; they are left out of both sides and counted
    # (split first, as training does, so the same samples land on the same side)
    train_idx, cal_idx, test_idx = three_way_split(
        samples, split["block_m"], split["val_fraction"], split.get("test_fraction", 0.0), split["seed"]
    )
    scored_split = "test" if len(test_idx) else "calibration"
    held_idx = test_idx if len(test_idx) else cal_idx
    known = np.isin(samples.labels, legend.codes)
    dropped = int((~known).sum())
    train = samples.subset(train_idx[known[train_idx]])
    val = samples.subset(held_idx[known[held_idx]])
    probs, pred, outside = predict_samples(artifact, val, device)
    from pipeline.train import ids_digest

    policy = ThresholdPolicy.from_dict(artifact.meta.get("thresholds", {}).get("policy", {}))
    winner = probs.argmax(axis=1)
    mapped = ~outside & (confidence_score(probs, policy.score) >= policy.thresholds_for(len(legend))[winner])
    correct = pred == val.labels
    digest_key = "test_ids_sha256" if scored_split == "test" else "val_ids_sha256"
    return {
        "model": classification_metrics(val.labels, pred, legend),
        "random_forest": rf_baseline(train, val, legend, split["seed"], bands),
        "scored_split": scored_split,
        "mapped": {
            "policy": policy.to_dict(),
            "outside_training_share": float(outside.mean()) if len(val) else None,
            "coverage": float(mapped.mean()) if len(val) else None,
            "accuracy_of_mapped": float(correct[mapped].mean()) if mapped.any() else None,
            "n_mapped": int(mapped.sum()),
        },
        "n_train": len(train),
        "n_val": len(val),
        "dropped_unknown_class": dropped,
        "split": split,
        "split_matches_training": ids_digest(train.sample_ids) == split.get("train_ids_sha256")
        and ids_digest(val.sample_ids) == split.get(digest_key),
    }


def plot_confusion(metrics: dict[str, Any], path: Path, title: str) -> None:
    """Row-normalized confusion matrix as a PNG (counts annotated), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.atomic import atomic_output

    cm = np.asarray(metrics["confusion_matrix"]["matrix"], dtype=float)
    names = metrics["confusion_matrix"]["names"]
    keep = (cm.sum(0) + cm.sum(1)) > 0  # classes absent from both sides only add empty rows
    cm, names = cm[keep][:, keep], [n for n, k in zip(names, keep, strict=False) if k]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"{title}\nOA {metrics['overall_accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``metrics.json`` plus one confusion-matrix PNG per model in ``out_dir``."""
    from pipeline.atomic import write_json_atomic

    out_dir = Path(out_dir)
    written = [out_dir / "metrics.json"]
    write_json_atomic(written[0], report)
    for key, title in (("model", "Presto + head"), ("random_forest", "RandomForest baseline")):
        path = out_dir / f"confusion_{key}.png"
        plot_confusion(report[key], path, title)
        written.append(path)
    return written
