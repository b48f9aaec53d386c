"""Accuracy of a land-cover model on held-out samples, always side by side with a RandomForest baseline.

The baseline sees the same raw monthly band values the encoder sees (``T x B`` features per sample) and is
trained on exactly the training samples and scored on exactly the validation samples of the model's split, so
the comparison says what the encoder adds over a classic per-pixel classifier.

The held-out samples are those whose ids the model stores (``meta["split"]``), picked by id from whatever is
given; the model is scored as a map uses it (coverage and accuracy at its certified threshold), and every sample
left out on the way is counted and listed with its reason (``suelo.samples.DROP_REASONS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from suelo.legend import Legend
from suelo.samples import DROP_REASONS, DROPPED_COLUMNS, INPUT_FIELDS, Samples, drop_rows, dropped_table

# A missing month enters the RandomForest as this value: no real reflectance is negative below -0.1 (the baseline
# 04.00 offset gives at most -0.1), so trees can split "missing" off cleanly without imputing.
RF_MISSING_VALUE = -1.0
RF_TREES = 300

if TYPE_CHECKING:  # heavy imports (torch, dask) only for the type checker; the functions import them late
    from suelo.models.artifact import ModelArtifact
    from suelo.threshold import ThresholdPolicy


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


def rf_features(
    samples: Samples, bands: list[str] | tuple[str, ...] | None = None, inputs: Sequence[str] = ("s2",)
) -> np.ndarray:
    """The RandomForest's features: the monthly reflectance of ``bands`` flattened, then for each optional input
    in ``inputs`` its monthly values flattened (S1 dB, temperature K and precipitation m/day) or its static ones
    (elevation m, slope degrees), in physical units (trees need no normalization). Missing values (and an input the
    samples do not carry) are RF_MISSING_VALUE, as for the reflectance: outside the range of every value but the
    dB ones, and a tree splits it off either way."""
    s = samples if bands is None else samples.select_bands(list(bands))
    parts = [s.reflectance.reshape(len(s), -1)]
    shapes = {"s1": (s.n_months, 2), "weather": (s.n_months, 2), "terrain": (2,)}
    for name in inputs:
        if name in INPUT_FIELDS:
            value = getattr(s, INPUT_FIELDS[name])
            parts.append((np.full((len(s), *shapes[name]), np.nan) if value is None else value).reshape(len(s), -1))
    x = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return np.where(np.isfinite(x), x, RF_MISSING_VALUE).astype(np.float32)


def rf_baseline(
    train: Samples,
    val: Samples,
    legend: Legend,
    seed: int = 0,
    bands: list[str] | tuple[str, ...] | None = None,
    inputs: Sequence[str] = ("s2",),
) -> dict[str, Any]:
    """RandomForest (balanced class weights, seeded) on raw monthly values of ``bands`` and the optional
    ``inputs`` (:func:`rf_features`): trained on ``train``, scored on ``val``."""
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(
        n_estimators=RF_TREES, class_weight="balanced", random_state=seed, n_jobs=-1, min_samples_leaf=1
    )
    rf.fit(rf_features(train, bands, inputs), train.labels)
    pred = rf.predict(rf_features(val, bands, inputs))
    out = classification_metrics(val.labels, pred, legend)
    extra = [i for i in inputs if i != "s2"]
    out["model"] = (
        f"sklearn RandomForestClassifier(n_estimators={RF_TREES}, class_weight='balanced', random_state={seed}) "
        f"on {train.n_months} months x bands raw reflectance{' + ' + ', '.join(extra) if extra else ''}, missing = "
        f"{RF_MISSING_VALUE}"
    )
    return out


def predict_samples(
    artifact: Any, samples: Samples, device: str | None = None, inputs: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated posteriors ``(N, classes)``, predicted codes ``(N,)`` and the novelty gate's verdict ``(N,)``
    (True = outside the training data) of a model artifact on samples: what a map would get. The encoder gets the
    inputs the model was trained with (its contract's; ``inputs`` to feed fewer, as a cube lacking one would with
    ``mask_missing_inputs``); one the samples do not carry is masked."""
    import torch

    from suelo.calibrate import Calibration
    from suelo.models.artifact import contract_inputs
    from suelo.models.inference import encode_pixels
    from suelo.models.presto_inputs import presto_inputs

    bands = artifact.contract["bands"]
    fed = contract_inputs(artifact.contract) if inputs is None else tuple(inputs)
    s = samples.select_bands(bands)
    x, mask, dw = presto_inputs(s.reflectance, bands, latlons=s.latlons, **s.presto_kwargs(fed))
    emb = encode_pixels(artifact.build_encoder(), x, mask, dw, s.latlons, s.start_month, device=device or "cpu")
    head = artifact.build_head()
    with torch.inference_mode():
        logits = head(torch.from_numpy(emb)).double().numpy()
    probs = Calibration.from_dict(artifact.meta.get("calibration", {})).apply(logits)
    codes = np.asarray(artifact.legend.codes)[probs.argmax(axis=1)]
    return probs, codes, artifact.gate.outside(emb)


SPLIT_MODES = ("stored", "resplit", "all")
DROPPED_CSV = "dropped_samples.csv"


def dropped_counts(dropped: pd.DataFrame) -> dict[str, int]:
    """Samples left out per reason, in the order of ``suelo.samples.DROP_REASONS`` (reasons that occur only)."""
    if dropped is None or not len(dropped):
        return {}
    counts = dropped["reason"].value_counts()
    ordered = [r for r in DROP_REASONS if r in counts.index] + sorted(set(counts.index) - set(DROP_REASONS))
    return {str(r): int(counts[r]) for r in ordered}


def dropped_line(dropped: pd.DataFrame) -> str:
    """One line for a log: how many samples were left out, per reason."""
    counts = dropped_counts(dropped)
    if not counts:
        return "dropped samples: none"
    return f"dropped {sum(counts.values())} samples: " + ", ".join(f"{k} {v}" for k, v in counts.items())


def stored_split_ids(split: dict[str, Any]) -> dict[str, list[str]] | None:
    """The ``train`` / ``calibration`` / ``test`` sample ids a model stores, or None for models made before the
    ids were stored (they have only digests)."""
    if not isinstance(split.get("calibration_ids"), list):
        return None
    return {k: [str(i) for i in split.get(f"{k}_ids") or []] for k in ("train", "calibration", "test")}


def recover_split_ids(artifact: ModelArtifact, samples: Samples) -> dict[str, list[str]] | None:
    """The split ids of a model that stores only their digests, redone from ``samples`` with the recorded split
    settings as training did (split on all samples, then keep the model's classes); None unless every digest
    matches exactly, i.e. unless ``samples`` are exactly the samples the model was trained on."""
    from suelo.samples import ids_digest, three_way_split

    split = artifact.meta["split"]
    parts = three_way_split(
        samples, split["block_m"], split["val_fraction"], split.get("test_fraction", 0.0), split["seed"]
    )
    known = np.isin(samples.labels, artifact.legend.codes)
    ids = {
        name: sorted(map(str, samples.sample_ids[idx[known[idx]]]))
        for name, idx in zip(("train", "calibration", "test"), parts, strict=True)
    }
    digests = {"train": "train_ids_sha256", "calibration": "val_ids_sha256", "test": "test_ids_sha256"}
    for name, key in digests.items():
        expected = split.get(key)
        if name == "test" and expected is None and not ids["test"]:
            continue  # no test split, none redone
        if expected is None or ids_digest(ids[name]) != expected:
            return None
    return ids


def _unknown_class_rows(
    samples: Samples, unknown: np.ndarray, artifact: ModelArtifact, legend: Legend | None
) -> pd.DataFrame:
    """``dropped`` rows of the given samples whose class the model does not have, naming the class when
    ``legend`` (the one the samples were loaded with) knows it, and whether training found it too rare."""
    rare = set(artifact.meta.get("training", {}).get("classes_dropped_too_rare", {}))
    rows = []
    for code in np.unique(samples.labels[unknown]):
        which = np.flatnonzero(unknown & (samples.labels == code))
        known = legend is not None and int(code) in legend.codes
        name = legend.by_code(int(code)).name if legend is not None and known else ""
        detail = f"{name} (too rare in training)" if name in rare else name
        rows.append(drop_rows(samples.sample_ids[which], "", "not_in_model_legend", samples.labels[which], detail))
    return dropped_table(*rows)


def _stored_selection(
    samples: Samples, known: np.ndarray, stored: dict[str, list[str]]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]], np.ndarray, np.ndarray]:
    """Indices of the given samples (of the model's classes) with the stored ids, per split, in the order given;
    per split how many stored ids were found, dropped while loading, or missing; the indices of duplicate ids and
    of samples the stored split does not hold."""
    ids = samples.sample_ids.astype(str)
    first: dict[str, int] = {}
    for i in np.flatnonzero(known):
        first.setdefault(ids[i], int(i))
    candidates = np.flatnonzero(known)
    duplicates = np.array([i for i in candidates if first[ids[i]] != i], dtype=np.int64)
    # a stored id that is among the given files but was left out (by a loader, or as a class the model lacks)
    left_out = set(samples.dropped["sample_id"].astype(str)) | set(ids[~known])
    picked, counts = {}, {}
    for name, wanted in stored.items():
        found = sorted(first[w] for w in wanted if w in first)
        dropped = sum(1 for w in wanted if w not in first and w in left_out)
        picked[name] = np.asarray(found, dtype=np.int64)
        counts[name] = {
            "stored": len(wanted),
            "found": len(found),
            "dropped_while_loading": dropped,
            "missing": len(wanted) - len(found) - dropped,
        }
    in_split = set().union(*stored.values())
    unheld = np.array([i for i in candidates if first[ids[i]] == i and ids[i] not in in_split], dtype=np.int64)
    return picked, counts, duplicates, unheld


def at_threshold(
    probs: np.ndarray,
    outside: np.ndarray,
    labels: np.ndarray,
    legend: Legend,
    policy: ThresholdPolicy,
    policy_report: dict[str, Any],
    fitted_here: bool,
) -> dict[str, Any]:
    """What a map would make of the samples under ``policy``: :func:`suelo.threshold.classify_block` on the
    calibrated posteriors with the novelty gate's verdict (the very function a run applies). Coverage is the share
    of all samples mapped; the rest is outside the training data or below the confidence threshold."""
    from suelo.reasons import reasons_for
    from suelo.threshold import classify_block

    reasons = reasons_for(legend)
    class_codes = np.asarray(legend.codes)
    dtype = np.uint8 if max(int(class_codes.max()), *reasons.as_tuple()) <= 255 else np.uint16
    # the samples as a one-pixel-wide image: (class, N, 1)
    planes = classify_block(probs.T[:, :, None], class_codes, policy, None, reasons, dtype, outside[:, None])
    code, predicted = planes[0, :, 0].astype(np.int64), planes[2, :, 0].astype(np.int64)
    mapped = np.isin(code, class_codes)
    correct = mapped & (code == labels)
    n = len(labels)
    choice = policy_report.get("global")
    certified = None
    if choice:
        certified = {
            "target_accuracy": choice.get("target_accuracy"),
            "delta": choice.get("delta"),
            "feasible": choice.get("feasible"),
            "accuracy_lower_bound": choice.get("accuracy_lower_bound"),
            "calibration_coverage": choice.get("coverage"),
            "n_calibration": choice.get("n_validation"),
        }
    per_class = {
        c.name: {
            "code": c.code,
            "reference": int((labels == c.code).sum()),
            "predicted": int((predicted == c.code).sum()),
            "mapped": int((code == c.code).sum()),
            "mapped_correct": int((correct & (code == c.code)).sum()),
            "reference_mapped": int((mapped & (labels == c.code)).sum()),
        }
        for c in legend.classes
    }
    return {
        "source": policy_report.get("source"),
        "policy": policy.to_dict(),
        "certified": certified,
        "n": n,
        "n_mapped": int(mapped.sum()),
        "coverage": float(mapped.mean()) if n else None,
        "accuracy_of_mapped": float(correct.sum() / mapped.sum()) if mapped.any() else None,
        "outside_training_share": float((code == reasons.outside_training).mean()) if n else None,
        "low_confidence_share": float((code == reasons.low_confidence).mean()) if n else None,
        "per_class": per_class,
        # scored on the very points the threshold was certified on: an in-sample figure, not a fresh test
        "threshold_fitted_on_these_samples": fitted_here,
    }


def evaluate_model(
    artifact: ModelArtifact,
    samples: Samples,
    device: str | None = None,
    split: str = "stored",
    target_accuracy: float | None = None,
    sample_legend: Legend | None = None,
) -> dict[str, Any]:
    """Score a model artifact on held-out ``samples`` as a map would use it (calibrated posteriors, novelty gate,
    certified threshold), next to the RandomForest baseline trained on the model's training samples.

    ``split``: ``stored`` (default) scores exactly the samples whose ids the model stores for its test split (or,
    without one, its calibration split), found by id among ``samples``; a model from before the ids were stored
    is re-split (flagged in ``split_source``). None found is an error; some missing is scored and flagged in
    ``warnings`` and ``stored_ids``. ``resplit`` redoes the split with the recorded settings (the same samples
    only if exactly the same samples are given). ``all`` scores every given sample of the model's classes (and
    counts those the model trained on). ``sample_legend`` (the legend ``samples`` were loaded with) names the
    classes the model does not have in the drop list. The report's ``dropped`` counts every left-out sample per
    reason; ``dropped_samples`` lists them (``write_report`` puts them in a CSV, not the JSON).
    """
    from suelo.errors import ConfigError, InputError
    from suelo.models.artifact import SPLIT_ID_KEYS
    from suelo.samples import ids_digest, three_way_split
    from suelo.threshold import certification_problem, policy_for_model

    if split not in SPLIT_MODES:
        raise ConfigError(f"split must be one of {list(SPLIT_MODES)}, got {split!r}")
    meta_split = artifact.meta["split"]
    legend = artifact.legend
    bands = artifact.contract["bands"]
    model_name = str(artifact.path or "model")
    known = np.isin(samples.labels, legend.codes)
    # classes the model does not know cannot be scored fairly; they are left out of both sides and listed
    added = [_unknown_class_rows(samples, ~known, artifact, sample_legend)]
    warnings: list[str] = []
    stored = stored_split_ids(meta_split)
    stored_report: dict[str, Any] | None = None
    if stored is not None and split != "resplit":
        picked, counts, duplicates, unheld = _stored_selection(samples, known, stored)
        held_kind = "test" if stored["test"] else "calibration"
        train_idx, held_idx = picked["train"], picked[held_kind]
        held = counts[held_kind]
        stored_report = {
            "split": held_kind,
            **held,
            "complete": held["found"] == held["stored"],
            "train": counts["train"],
            "duplicate_ids": len(duplicates),
            "not_in_stored_split": len(unheld),
        }
        source = "the sample ids stored in the model"
        if split == "stored":
            if held["found"] == 0:
                raise InputError(
                    model_name,
                    f"none of the {held['stored']} {held_kind} sample ids stored in the model are among the given "
                    f"samples ({held['dropped_while_loading']} of them were dropped while loading): give the sample "
                    "files it was trained on, or use --split resplit or --split all",
                )
            if held["found"] < held["stored"]:
                warnings.append(
                    f"only {held['found']} of the model's {held['stored']} stored {held_kind} samples were given "
                    f"({held['dropped_while_loading']} dropped while loading, {held['missing']} missing): the "
                    f"figures are for that subset, not for the model's whole {held_kind} split"
                )
            ids = samples.sample_ids
            added.append(drop_rows(ids[duplicates], "", "duplicate_id", samples.labels[duplicates]))
            added.append(drop_rows(ids[unheld], "", "not_in_model_split", samples.labels[unheld]))
        if counts["train"]["found"] < counts["train"]["stored"]:
            warnings.append(
                f"the RandomForest baseline is trained on {counts['train']['found']} of the model's "
                f"{counts['train']['stored']} training samples (the others were not given)"
            )
    else:
        train_idx, cal_idx, test_idx = three_way_split(
            samples, meta_split["block_m"], meta_split["val_fraction"], meta_split.get("test_fraction", 0.0),
            meta_split["seed"],
        )  # fmt: skip
        held_kind = "test" if len(test_idx) else "calibration"
        held_idx = test_idx if len(test_idx) else cal_idx
        # split first, as training does, then keep the model's classes: the same samples land on the same side
        train_idx, held_idx = train_idx[known[train_idx]], held_idx[known[held_idx]]
        source = "re-split with the model's recorded split settings"
        if split == "stored":
            source += " (the model stores no split ids)"
            warnings.append(
                "the model stores no split ids: its split was redone from the given samples, which gives the "
                "training split only if exactly the training samples are given (see split_matches_training)"
            )
    n_training_scored = None
    if split == "all":
        held_kind, held_idx = "all", np.flatnonzero(known)
        source = f"every given sample; the model's training samples found by {source}"
        n_training_scored = int(np.isin(held_idx, train_idx).sum())
        if n_training_scored:
            warnings.append(
                f"{n_training_scored} of the {len(held_idx)} scored samples are the model's own training samples: "
                "its figures are optimistic"
            )
    if not len(held_idx):
        raise ConfigError(f"{model_name}: no given sample of the model's classes is left to score")
    train, val = samples.subset(train_idx), samples.subset(held_idx)
    probs, pred, outside = predict_samples(artifact, val, device)

    stored_choice = artifact.meta.get("thresholds", {}).get("report", {}).get("global", {})
    delta = float(stored_choice.get("delta", 0.05))
    fitted_here = held_kind == "calibration"
    policy, policy_report = policy_for_model(artifact.meta, delta=delta)
    mapped = at_threshold(probs, outside, val.labels, legend, policy, policy_report, fitted_here)
    mapped_at_target = None
    if target_accuracy is not None:
        try:
            policy, policy_report = policy_for_model(artifact.meta, target_accuracy, delta)
        except ValueError as exc:
            raise ConfigError(f"{model_name}: {exc}") from exc
        mapped_at_target = at_threshold(probs, outside, val.labels, legend, policy, policy_report, fitted_here)
        mapped_at_target["certification_problem"] = certification_problem(artifact.meta, policy_report, delta)
    random_forest = None
    if len(train):
        from suelo.models.artifact import contract_inputs

        random_forest = rf_baseline(train, val, legend, meta_split["seed"], bands, contract_inputs(artifact.contract))
    else:
        warnings.append("no training sample of the model was given: no RandomForest baseline")
    matches = None
    if held_kind != "all":
        digest_key = "test_ids_sha256" if held_kind == "test" else "val_ids_sha256"
        matches = ids_digest(train.sample_ids) == meta_split.get("train_ids_sha256") and ids_digest(
            val.sample_ids
        ) == meta_split.get(digest_key)
    dropped = dropped_table(samples.dropped, *added)
    n_loader_dropped = len(samples.dropped)
    return {
        "model": classification_metrics(val.labels, pred, legend),
        "random_forest": random_forest,
        "scored_split": held_kind,
        "split_mode": split,
        "split_source": source,
        "stored_ids": stored_report,
        "split_matches_training": matches,
        "mapped": mapped,
        "mapped_at_target": mapped_at_target,
        "n_read": len(samples) + n_loader_dropped,
        "n_loaded": len(samples),
        "n_train": len(train),
        "n_val": len(val),
        "n_scored_training_samples": n_training_scored,
        "dropped": dropped_counts(dropped),
        "dropped_total": len(dropped),
        "warnings": warnings,
        "split": {k: v for k, v in meta_split.items() if k not in SPLIT_ID_KEYS},
        # the full list, one record per sample: write_report puts it in dropped_samples.csv, not in the JSON
        "dropped_samples": dropped.to_dict("records"),
    }


def plot_confusion(metrics: dict[str, Any], path: Path, title: str) -> None:
    """Row-normalized confusion matrix as a PNG (counts annotated), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from suelo.atomic import atomic_output

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
    """``metrics.json`` (without the per-sample drop list), one confusion-matrix PNG per model (the RandomForest's
    only when there was one) and ``dropped_samples.csv`` (every sample left out, with its reason) in ``out_dir``."""
    from suelo.atomic import atomic_output, write_json_atomic

    out_dir = Path(out_dir)
    written = [out_dir / "metrics.json"]
    write_json_atomic(written[0], {k: v for k, v in report.items() if k != "dropped_samples"})
    for key, title in (("model", "Presto + head"), ("random_forest", "RandomForest baseline")):
        if report.get(key) is None:
            continue
        path = out_dir / f"confusion_{key}.png"
        plot_confusion(report[key], path, title)
        written.append(path)
    table = dropped_table(pd.DataFrame(report.get("dropped_samples") or [], columns=list(DROPPED_COLUMNS)))
    path = out_dir / DROPPED_CSV
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False)
    written.append(path)
    return written


def samples_legend(model_legend: Legend, path: Path | None = None) -> Legend:
    """The legend to load evaluation samples with: ``path`` when given, else the default legend when it has every
    class of the model under the same code, else the model's own. A fuller legend than the model's matters: the
    samples of classes training dropped as too rare are then loaded (so a re-split sees the samples training
    split, and the drop list names them) instead of being lost in the loader."""
    from suelo.errors import ConfigError
    from suelo.legend import load_legend

    legend = load_legend(path) if path else load_legend()
    clashes = [
        c.name for c in model_legend.classes if c.code not in legend.codes or legend.by_code(c.code).name != c.name
    ]
    if clashes and path:
        raise ConfigError(f"{path}: the model's classes {clashes} are not in this legend under the same codes")
    return model_legend if clashes else legend


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def mapped_line(title: str, mapped: dict[str, Any]) -> list[str]:
    """Two lines for a terminal: coverage and accuracy at a policy's threshold, then mapped samples per class."""
    policy, certified = mapped["policy"], mapped["certified"]
    rule = f"{policy['score']} >= {policy['threshold']:.3f}" + (" (per class)" if policy["per_class"] else "")
    if certified:
        rule += (
            f", certified accuracy {certified['target_accuracy']:g} at delta {certified['delta']:g} on "
            f"{certified['n_calibration']} calibration points"
            + ("" if certified["feasible"] else ": NOT certifiable, maps nothing")
        )
    accuracy = mapped["accuracy_of_mapped"]
    lines = [
        f"{title} ({rule}): coverage {_share(mapped['coverage'])} ({mapped['n_mapped']} of {mapped['n']}), accuracy "
        f"of the mapped {'n/a' if accuracy is None else f'{accuracy:.3f}'}; outside the training data "
        f"{_share(mapped['outside_training_share'])}, below the confidence threshold "
        f"{_share(mapped['low_confidence_share'])}"
        + ("; the threshold was certified on these same samples" if mapped["threshold_fitted_on_these_samples"] else "")
    ]
    per_class = ", ".join(f"{name} {c['mapped']}/{c['predicted']}" for name, c in mapped["per_class"].items())
    lines.append(f"  mapped / predicted per class: {per_class}")
    return lines


def report_lines(report: dict[str, Any]) -> list[str]:
    """What ``suelo evaluate`` prints: drops, the scored split, both models' metrics, the figures at threshold."""
    lines = []
    counts = report["dropped"]
    lines.append(
        f"dropped {report['dropped_total']} samples: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        if counts
        else "dropped samples: none"
    )
    stored = report["stored_ids"]
    found = ""
    if stored is not None and report["split_mode"] != "all":
        found = f", {stored['found']} of {stored['stored']} stored {stored['split']} ids found"
    match = {True: "", False: "; NOT the same samples as in training", None: ""}[report["split_matches_training"]]
    what = (
        f"all {report['n_val']} given samples of the model's classes"
        if report["scored_split"] == "all"
        else f"{report['n_val']} {report['scored_split']} samples"
    )
    lines.append(
        f"scored {what} ({report['split_source']}{found}{match}); "
        f"RandomForest trained on {report['n_train']} of the model's training samples"
    )
    for key, title in (("model", "Presto + head"), ("random_forest", "RandomForest")):
        m = report[key]
        if m is None:
            lines.append(f"{title:>14}: not trained (no training sample given)")
            continue
        lines.append(
            f"{title:>14}: OA {m['overall_accuracy']:.3f}  macro F1 {m['macro_f1']:.3f}  kappa {m['kappa']:.3f}"
        )
    lines += mapped_line("at the model's threshold", report["mapped"])
    target = report.get("mapped_at_target")
    if target is not None:
        lines += mapped_line(f"at target {target['certified']['target_accuracy']:g}", target)
        if target.get("certification_problem"):
            lines.append(f"  {target['certification_problem']}")
    return lines
