"""What running the shipped land-cover procedure on fewer months than it was trained on costs, on real points.

    python -m benchmarks.fewer_months                        # 10 seeds; tables on stdout
    python -m benchmarks.fewer_months --json benchmarks/fewer_months_results.json --markdown benchmarks/FEWER_MONTHS.md

A job may give a 12-month model fewer months (``products.landcover.allow_fewer_months: true``): Presto takes any
number of monthly tokens and the encoder simply sees fewer, so the model runs, but its calibration and its certified
threshold were fitted on 12-month series and no longer certify anything. This measures by how much it falls short.

For each of ``--seeds`` spatial split seeds, the model is trained exactly as the shipped one (its stored
``TrainConfig``) with a 20 % spatial test split (``test_fraction=0.2``), on the 12-month WorldCereal series. Its
*test* points (used for nothing else) are then cut to ``k`` consecutive months and fed as a ``k``-month series, as a
``k``-month cube would feed them: the months centred on the label's valid month (the growing season around the
label, the best case for a short job). For each ``k``: overall accuracy and macro F1 of the head's argmax; coverage
(share of points that would get a class: inside the novelty gate and calibrated confidence >= the stored threshold)
and the accuracy of those points, to compare with the certified target; the share the gate rejects. Beside every
accuracy figure, a RandomForest trained on the same ``k`` months of the training points (the same inputs).
Mean +- sd over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.open_set import summarize
from suelo.evaluate import classification_metrics, rf_baseline
from suelo.legend import load_legend
from suelo.models.artifact import load_artifact
from suelo.samples import VALID_POSITION, Samples, load_worldcereal
from suelo.train import TrainConfig, train_model

ROOT = Path(__file__).resolve().parent.parent
EXTRACTIONS = sorted((ROOT / "data" / "worldcereal").glob("*parquet"))
SHIPPED = ROOT / "models" / "landcover_default.pt"
MONTHS = (12, 9, 6, 4, 3, 2, 1)


def window(samples: Samples, months: int, total: int = 12) -> Samples:
    """The ``months`` consecutive months of each series centred on the label's valid month, as a shorter series
    (its start month moved with it), i.e. what a ``months``-long cube over that season gives the encoder."""
    first = min(max(VALID_POSITION - months // 2, 0), total - months)
    return Samples(
        np.ascontiguousarray(samples.reflectance[:, first : first + months]), samples.band_names,
        (samples.start_month + first) % 12, samples.latlons, samples.labels, samples.sample_ids, samples.groups,
        samples.anchors, samples.product_level,
    )  # fmt: skip


def shipped_config(seed: int) -> TrainConfig:
    """The shipped model's stored training configuration with a 20 % test split and this seed."""
    stored = dict(load_artifact(SHIPPED).meta["training"]["config"])
    fields = set(TrainConfig.__dataclass_fields__)
    kept = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in fields}
    # legacy(): fields the stored config predates (caps, early stopping) take the values it was trained with
    return TrainConfig.legacy(**(kept | {"seed": seed, "test_fraction": 0.2, "rf_baseline": False}))


def score_months(result: Any, months: int, seed: int) -> dict[str, float]:
    """The trained model of one seed on its test points cut to ``months`` months, with the RandomForest beside it."""
    from suelo.calibrate import Calibration
    from suelo.models.inference import encode_pixels
    from suelo.models.presto import load_presto_encoder
    from suelo.models.presto_inputs import presto_inputs
    from suelo.threshold import ThresholdPolicy, confidence_score

    meta = result.artifact.meta
    legend = result.artifact.legend
    bands = list(meta["input_contract"]["bands"])
    test = window(result.test.select_bands(bands), months)
    train = window(result.train.select_bands(bands), months)
    x, mask, dw = presto_inputs(test.reflectance, bands, latlons=test.latlons)
    emb = encode_pixels(load_presto_encoder(), x, mask, dw, test.latlons.astype(np.float32), test.start_month,
                        device="cpu", fast=False)  # fmt: skip
    with torch.no_grad():
        logits = result.head(torch.from_numpy(emb)).double().numpy()
    probs = Calibration.from_dict(meta["calibration"]).apply(logits)
    codes = np.asarray(legend.codes)
    pred = codes[probs.argmax(1)]
    policy = ThresholdPolicy.from_dict(meta["thresholds"]["policy"])
    outside = result.artifact.gate.outside(emb)
    winner = probs.argmax(1)
    mapped = ~outside & (confidence_score(probs, policy.score) >= policy.thresholds_for(len(legend))[winner])
    correct = pred == test.labels
    model = classification_metrics(test.labels, pred, legend)
    forest = rf_baseline(train, test, legend, seed, bands)
    return {
        "overall_accuracy": model["overall_accuracy"],
        "macro_f1": model["macro_f1"],
        "rf_overall_accuracy": forest["overall_accuracy"],
        "rf_macro_f1": forest["macro_f1"],
        "coverage": float(mapped.mean()),
        "accuracy_of_mapped": float(correct[mapped].mean()) if mapped.any() else float("nan"),
        "outside_training": float(outside.mean()),
        "certified_target": float(meta["thresholds"]["report"]["global"]["target_accuracy"]),
        "n_test": len(test),
    }


def run(seeds: int, months: tuple[int, ...] = MONTHS, log: Any = print) -> dict[str, Any]:
    legend = load_legend()
    samples = Samples.concat([load_worldcereal(p, legend) for p in EXTRACTIONS])
    started = time.perf_counter()
    per_seed: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the head is tiny: more threads only synchronise
    try:
        for seed in range(seeds):
            result = train_model(samples, legend, shipped_config(seed))
            row = {"seed": seed, "months": {str(k): score_months(result, k, seed) for k in months}}
            per_seed.append(row)
            twelve, short = row["months"][str(months[0])], row["months"][str(months[-1])]
            log(f"seed {seed}: macro F1 {twelve['macro_f1']:.3f} ({months[0]} months) -> {short['macro_f1']:.3f} "
                f"({months[-1]}), {time.perf_counter() - started:.0f} s")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    keys = [k for k in per_seed[0]["months"][str(months[0])] if k != "n_test"]
    by_months = {str(k): {key: summarize(r["months"][str(k)][key] for r in per_seed) for key in keys} for k in months}
    return {
        "procedure": __doc__.split("\n\n")[2].replace("\n", " ") if __doc__ else "",
        "seeds": seeds,
        "months_trained": 12,
        "window": "consecutive months centred on the label's valid month",
        "by_months": by_months,
        "per_seed": per_seed,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _pm(cell: dict[str, float], scale: float = 1.0, digits: int = 3) -> str:
    if not math.isfinite(cell["mean"]):
        return "n/a"
    return f"{cell['mean'] * scale:.{digits}f} ± {cell['sd'] * scale:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table (mean ± sd over seeds)."""
    lines = [
        "| months | macro F1 | RF macro F1 | OA | RF OA | coverage % | accuracy of mapped | outside training % |",
        "|---:|---|---|---|---|---|---|---|",
    ]
    for k, cell in results["by_months"].items():
        lines.append(
            f"| {k} | {_pm(cell['macro_f1'])} | {_pm(cell['rf_macro_f1'])} | {_pm(cell['overall_accuracy'])} | "
            f"{_pm(cell['rf_overall_accuracy'])} | {_pm(cell['coverage'], 100, 1)} | "
            f"{_pm(cell['accuracy_of_mapped'])} | {_pm(cell['outside_training'], 100, 1)} |"
        )
    target = results["by_months"][next(iter(results["by_months"]))]["certified_target"]
    lines += [
        "",
        f"{results['seeds']} spatial split seeds; test points only; certified target of the stored threshold "
        f"{_pm(target, 1, 2)} (fitted on 12 months). Windows: {results['window']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--months", type=int, nargs="+", default=list(MONTHS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    results = run(args.seeds, tuple(args.months))
    table = markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.markdown:
        header = "# Fewer months than the model was trained on\n\n" + (__doc__ or "").split("\n\n", 2)[2] + "\n"
        args.markdown.write_text(header + "\n" + table + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
