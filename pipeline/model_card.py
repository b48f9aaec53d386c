"""The model card's figures: the whole training procedure repeated over spatial split seeds, scored on test points.

One split says little with a few hundred spatially clustered points (the shipped model's card has the head between
-3.6 and +16.0 macro-F1 points from RandomForest depending on the seed), so every headline figure is a mean +- standard
deviation over ``seeds`` three-way spatial splits (suelo.samples.three_way_split): the head and the novelty
gate's Gaussians are fitted on train, temperature, gate threshold and confidence thresholds on calibration, and
everything is scored once on test, which no fit saw. The RandomForest baseline gets the same train split and the
same inputs (raw monthly reflectance). The shipped model is then trained on all the data (train + calibration, no
test split) and carries these seed-averaged figures, never one split's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from suelo.legend import Legend
from suelo.samples import Samples
from suelo.train import TrainConfig, train_model

DEFAULT_SEEDS = tuple(range(10))


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, standard deviation (ddof=1), min, max and count of the finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": len(v),
    }


def seed_averaged_card(
    samples: Samples,
    legend: Legend,
    config: TrainConfig | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    test_fraction: float = 0.2,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Train with ``config`` once per seed on a three-way spatial split and aggregate the test-split figures."""
    config = config or TrainConfig()
    rows = []
    block_sizes = set()  # "auto" resolves from the samples alone, so every seed uses the same size
    for seed in seeds:
        result = train_model(samples, legend, replace(config, seed=seed, test_fraction=test_fraction))
        block_sizes.add(result.artifact.meta["split"]["block_m"])
        test = result.artifact.meta["metrics"]["test"]
        row = {
            "seed": seed,
            "n_train": len(result.train),
            "n_calibration": len(result.val),
            "n_test": test["n"],
            "macro_f1": test["model"]["macro_f1"],
            "overall_accuracy": test["model"]["overall_accuracy"],
            "rf_macro_f1": test["random_forest"]["macro_f1"] if "random_forest" in test else None,
            "rf_overall_accuracy": test["random_forest"]["overall_accuracy"] if "random_forest" in test else None,
            "ece_before": test["ece_before"],
            "ece_after": test["ece_after"],
            "novelty_rejected": test["novelty_rejected"],
            "certified": test["certified"],
        }
        rows.append(row)
        log(
            f"seed {seed}: macro-F1 {row['macro_f1']:.3f} (RandomForest {row['rf_macro_f1']:.3f}), ECE "
            f"{row['ece_before']:.3f} -> {row['ece_after']:.3f}, gate rejects {row['novelty_rejected']:.1%} of test"
        )
    diffs = [r["macro_f1"] - r["rf_macro_f1"] for r in rows if r["rf_macro_f1"] is not None]
    targets = list(rows[0]["certified"]) if rows else []
    certified = {}
    for t in targets:
        cells = [r["certified"][t] for r in rows]
        certified[t] = {
            "feasible_seeds": sum(bool(c["feasible"]) for c in cells),
            "calibration_coverage": _spread([c["calibration_coverage"] for c in cells]),
            "test_coverage": _spread([c["test_coverage"] for c in cells]),
            "test_accuracy_of_mapped": _spread([c["test_accuracy_of_mapped"] for c in cells]),
            "seeds_meeting_target_on_test": sum(
                c["test_accuracy_of_mapped"] is not None and c["test_accuracy_of_mapped"] >= float(t) for c in cells
            ),
        }
    return {
        "procedure": __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        "seeds": list(seeds),
        "test_fraction": test_fraction,
        "calibration_fraction": config.val_fraction,
        "block_m": block_sizes.pop() if len(block_sizes) == 1 else config.block_m,
        "delta": config.delta,
        "novelty_rejection_rate": config.novelty_rejection_rate,
        "macro_f1": _spread([r["macro_f1"] for r in rows]),
        "rf_macro_f1": _spread([r["rf_macro_f1"] for r in rows]),
        "macro_f1_minus_rf": _spread(diffs) | {"seeds_at_least_5_points": sum(d >= 0.05 for d in diffs)},
        "overall_accuracy": _spread([r["overall_accuracy"] for r in rows]),
        "rf_overall_accuracy": _spread([r["rf_overall_accuracy"] for r in rows]),
        "ece_before": _spread([r["ece_before"] for r in rows]),
        "ece_after": _spread([r["ece_after"] for r in rows]),
        "novelty_rejected_test": _spread([r["novelty_rejected"] for r in rows]),
        "certified": certified,
        "per_seed": rows,
    }


def card_summary(card: dict[str, Any]) -> dict[str, str]:
    """The card's headline figures as short "mean ± sd" strings, for run reports (no per-seed rows)."""
    n = len(card.get("seeds", []))
    out = {
        "seeds": f"{n} spatial splits, scored on their test points",
        "macro_f1": _pm(card["macro_f1"]),
        "random_forest_macro_f1": _pm(card["rf_macro_f1"]),
        "macro_f1_minus_random_forest_points": _pm(card["macro_f1_minus_rf"], 100, 1),
        "ece_before_calibration": _pm(card["ece_before"]),
        "ece_after_calibration": _pm(card["ece_after"]),
        "novelty_gate_rejected_test_pct": _pm(card["novelty_rejected_test"], 100, 1),
    }
    for target, cell in card.get("certified", {}).items():
        out[f"certified_{target}"] = (
            f"test coverage {_pm(cell['test_coverage'], 100, 1)} %, test accuracy of mapped "
            f"{_pm(cell['test_accuracy_of_mapped'])}, target reached in {cell['seeds_meeting_target_on_test']} of {n}"
        )
    return out


def _pm(cell: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    if cell.get("mean") is None:
        return "n/a"
    return f"{cell['mean'] * scale:.{digits}f} ± {cell['sd'] * scale:.{digits}f}"


def card_markdown(card: dict[str, Any], title: str = "Model card") -> str:
    """The card's seed-averaged figures as Markdown tables."""
    n = len(card["seeds"])
    lines = [
        f"# {title}",
        "",
        card["procedure"],
        "",
        f"{n} spatial split seeds ({card['block_m'] / 1000:g} km blocks; test {card['test_fraction']:.0%}, "
        f"calibration {card['calibration_fraction']:.0%} of the samples, the rest train). Mean ± sd over the seeds, "
        "on the test points of each split.",
        "",
        "| figure | Presto + head | RandomForest (same inputs) |",
        "|---|---|---|",
        f"| macro-F1 | {_pm(card['macro_f1'])} | {_pm(card['rf_macro_f1'])} |",
        f"| overall accuracy | {_pm(card['overall_accuracy'])} | {_pm(card['rf_overall_accuracy'])} |",
        f"| macro-F1, Presto minus RandomForest | {_pm(card['macro_f1_minus_rf'], 100, 1)} points "
        f"(at least 5 points in {card['macro_f1_minus_rf']['seeds_at_least_5_points']} of {n} seeds) | |",
        f"| ECE on test, before calibration | {_pm(card['ece_before'])} | |",
        f"| ECE on test, after calibration (fitted on the calibration split) | {_pm(card['ece_after'])} | |",
        f"| novelty gate: share of test points rejected (calibrated for {card['novelty_rejection_rate']:.0%}) | "
        f"{_pm(card['novelty_rejected_test'], 100, 1)} % | |",
        "",
        f"Certified coverage: the confidence threshold certified on the calibration split (delta {card['delta']}), "
        "with the novelty gate, applied to the test points.",
        "",
        "| target | certifiable (seeds) | calibration coverage | test coverage | test accuracy of mapped points | "
        "seeds whose test accuracy reaches the target |",
        "|---|---|---|---|---|---|",
    ]
    for target, cell in card["certified"].items():
        lines.append(
            f"| {target} | {cell['feasible_seeds']} of {n} | {_pm(cell['calibration_coverage'], 100, 1)} % | "
            f"{_pm(cell['test_coverage'], 100, 1)} % | {_pm(cell['test_accuracy_of_mapped'])} | "
            f"{cell['seeds_meeting_target_on_test']} of {n} |"
        )
    lines += [
        "",
        "Test accuracy of the mapped points is averaged over the seeds where something was mapped. Where it falls "
        "short of the target, the certificate (valid for new points exchangeable with the calibration points) did "
        "not transfer to the spatially separate test blocks: new land is not exchangeable with the calibration "
        "land, which is why the novelty gate exists and why a run reports how much of its region the gate rejects.",
        "",
    ]
    return "\n".join(lines)


def fewer_months_statement(card: dict[str, Any] | None, trained: int, n_months: int) -> str:
    """What the model card measured for a series of ``n_months`` months on a model trained on ``trained``
    (``card["fewer_months"]``, from ``benchmarks/fewer_months.py``), as one sentence for run reports; the nearest
    measured length at or below ``n_months`` stands in when that length was not measured."""
    measured = (card or {}).get("fewer_months", {}).get("by_months", {})
    lengths = sorted((int(k) for k in measured if int(k) <= n_months), reverse=True)
    if not lengths:
        return "The model card has no measurement for fewer months."
    k = lengths[0]
    cell, full = measured[str(k)], measured.get(str(trained))
    seeds = (card or {})["fewer_months"].get("seeds", "?")
    accuracy = cell["accuracy_of_mapped"]
    text = (
        f"The model card measured, on test points cut to {k} months ({seeds} spatial split seeds): macro F1 "
        f"{_pm(cell['macro_f1'])} (RandomForest on the same months {_pm(cell['rf_macro_f1'])}"
        + (f"; {_pm(full['macro_f1'])} on {trained} months" if full else "")
        + f"), {_pm(cell['coverage'], 100, 1)} % mapped at the certified threshold with accuracy "
        f"{'n/a' if accuracy.get('n_seeds') == 0 else _pm(accuracy)}, {_pm(cell['outside_training'], 100, 1)} % "
        "outside the training data."
    )
    return text
