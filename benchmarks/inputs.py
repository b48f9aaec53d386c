"""What each of Presto's other pre-training inputs (Sentinel-1, terrain, weather) adds to the shipped land-cover
procedure on real points, and what masking one at run time costs.

    python -m benchmarks.inputs                              # 10 seeds; tables on stdout
    python -m benchmarks.inputs --json benchmarks/inputs_results.json --markdown benchmarks/INPUTS.md

Presto was pre-trained on Sentinel-1, Sentinel-2, ERA5 and SRTM together; a model may be trained with any of them
besides Sentinel-2 (``TrainConfig.inputs``), read from the WorldCereal extractions (``suelo.samples``: S1 VV/VH in
dB, 2 m temperature in K and precipitation in m of water per day, elevation in m and slope in degrees), normalized
with Presto's own constants (``suelo.models.presto_inputs``); the inputs not chosen are masked.

For each of ``--seeds`` spatial split seeds, the model is trained exactly as the shipped one
(``models/train_default.py``: ``TrainConfig.legacy()``, frozen encoder, MLP head, 10 km blocks) on the three
WorldCereal extractions with a three-way spatial split (train 60 % / calibration 20 % / test 20 %, the model card's
split), once per input set, and scored on the test points: macro F1 and overall accuracy of the head's argmax. The
split depends only on the seed, so every input set of a seed sees the same train and test points and the change
against Sentinel-2 alone is paired ("seeds better": of the seeds, those where the set's macro F1 is higher). Beside
each, a RandomForest trained on the same train points with the same raw inputs (``suelo.evaluate.rf_baseline``:
monthly values flattened, static ones once, missing = -1).

Two sets feed precipitation in the unit the WorldCereal files give once their scaling is removed, m per month (the
sum over the month), instead of Presto's m per day: a deliberately wrong unit, to show what the unit of one input
does (the encoder reads it 28-31 times too large), alone beside Sentinel-2 and with all the other inputs.

Masking: the model trained with all inputs is scored on its test points with Sentinel-1 masked (a cube without
radar, ``products.landcover.mask_missing_inputs: true``) and with only Sentinel-2 given, beside the model trained
for exactly the inputs that are left.

The encoder is frozen, so each input set's embeddings do not depend on the seed: they are computed once and given to
``train_model`` (``embeddings=``), which then trains bit for bit as if it had encoded them itself.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.open_set import markdown_table, summarize
from suelo.evaluate import classification_metrics, rf_baseline
from suelo.legend import load_legend
from suelo.samples import Samples, load_worldcereal
from suelo.train import TrainConfig, TrainResult, presto_arrays, train_model

ROOT = Path(__file__).resolve().parent.parent
EXTRACTIONS = sorted((ROOT / "data" / "worldcereal").glob("*parquet"))
#: Days of each calendar month (January first). The extractions' 12-month windows hold no leap February
#: (Sep 2021-Jan 2023, Sep 2022-Jan 2024, Dec 2016-Nov 2017), so this turns m/day back into the files' m/month.
MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.float64)


@dataclass(frozen=True)
class InputSet:
    name: str
    inputs: tuple[str, ...]
    precipitation: str = "m/day"  # "m/month": the deliberately wrong unit
    note: str = ""


SETS: tuple[InputSet, ...] = (
    InputSet("s2", ("s2",)),
    InputSet("s2+s1", ("s2", "s1")),
    InputSet("s2+terrain", ("s2", "terrain")),
    InputSet("s2+weather (m/month: WRONG unit)", ("s2", "weather"), "m/month",
             "precipitation as the files give it (m per month), not Presto's m per day"),
    InputSet("s2+weather", ("s2", "weather")),
    InputSet("s2+s1+terrain", ("s2", "s1", "terrain")),
    InputSet("s2+terrain+weather", ("s2", "terrain", "weather"), note="what is left without radar"),
    InputSet("all", ("s2", "s1", "terrain", "weather")),
    InputSet("all (m/month: WRONG unit)", ("s2", "s1", "terrain", "weather"), "m/month",
             "precipitation as the files give it (m per month), not Presto's m per day"),
)  # fmt: skip
BASE, ALL, NO_RADAR = "s2", "all", "s2+terrain+weather"
FINDINGS = "## Findings"
RUN_LINE = (
    "Written by `python -m benchmarks.inputs --json benchmarks/inputs_results.json --markdown benchmarks/INPUTS.md` "
    "(per-seed numbers in `inputs_results.json`); the model card of `models/landcover_default.pt` quotes these "
    "tables (`models/train_default.py --card-sections-only`)."
)


def with_precipitation_per_month(samples: Samples) -> Samples:
    """``samples`` with precipitation in m per month (x the days of each calendar month), as the files give it."""
    assert samples.era5 is not None
    months = (samples.start_month[:, None] + np.arange(samples.n_months)[None, :]) % 12
    era5 = samples.era5.astype(np.float64).copy()
    era5[..., 1] *= MONTH_DAYS[months]
    return replace(samples, era5=era5.astype(np.float32))


def samples_for(samples: Samples, spec: InputSet) -> Samples:
    return with_precipitation_per_month(samples) if spec.precipitation == "m/month" else samples


def embed(samples: Samples, inputs: Sequence[str], bands: Sequence[str]) -> np.ndarray:
    """The frozen pretrained encoder's embeddings of every sample with ``inputs`` (the others masked), fp32 on the
    CPU: what ``train_model`` computes itself."""
    from suelo.models.inference import encode_pixels
    from suelo.models.presto import load_presto_encoder

    a = presto_arrays(samples, bands, inputs)
    return encode_pixels(load_presto_encoder(), a["x"], a["mask"], a["dw"], a["latlons"], a["month"], device="cpu")


def config_for(spec: InputSet, seed: int, max_epochs: int | None = None) -> TrainConfig:
    """The shipped model's procedure (TrainConfig.legacy, as models/train_default.py) with the model card's test
    split; the RandomForest is run here, on the test split only."""
    changes: dict[str, Any] = {"seed": seed, "test_fraction": 0.2, "rf_baseline": False, "inputs": spec.inputs}
    if max_epochs is not None:
        changes["max_epochs"] = max_epochs
    return TrainConfig.legacy(**changes)


def masked_scores(result: TrainResult, rows: np.ndarray, embeddings: np.ndarray) -> dict[str, float]:
    """A trained model on its test points encoded with fewer inputs (``embeddings`` of all samples, ``rows`` the
    test points'): macro F1, overall accuracy, the share the novelty gate rejects and the share that would be
    mapped (inside the gate and calibrated confidence >= the stored threshold), as a map would use it."""
    from suelo.calibrate import Calibration
    from suelo.threshold import ThresholdPolicy, confidence_score

    meta = result.artifact.meta
    legend = result.artifact.legend
    assert result.head is not None and result.test is not None and result.artifact.gate is not None
    emb = np.ascontiguousarray(embeddings[rows], dtype=np.float32)
    with torch.no_grad():
        logits = result.head(torch.from_numpy(emb)).double().numpy()
    probs = Calibration.from_dict(meta["calibration"]).apply(logits)
    pred = np.asarray(legend.codes)[probs.argmax(1)]
    policy = ThresholdPolicy.from_dict(meta["thresholds"]["policy"])
    outside = result.artifact.gate.outside(emb)
    mapped = ~outside & (confidence_score(probs, policy.score) >= policy.thresholds_for(len(legend))[probs.argmax(1)])
    model = classification_metrics(result.test.labels, pred, legend)
    return {"macro_f1": model["macro_f1"], "overall_accuracy": model["overall_accuracy"],
            "outside_training": float(outside.mean()), "coverage": float(mapped.mean())}  # fmt: skip


def run(
    seeds: int = 10,
    sets: Sequence[InputSet] = SETS,
    extractions: Sequence[Path] = EXTRACTIONS,
    max_epochs: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    started = time.perf_counter()
    legend = load_legend()
    samples = Samples.concat([load_worldcereal(p, legend) for p in extractions])
    bands = list(TrainConfig().bands)
    names = [s.name for s in sets]
    embeddings = {s.name: embed(samples_for(samples, s), s.inputs, bands) for s in sets}
    if ALL in names:  # the all-input model fed fewer inputs: Sentinel-1 masked, and only Sentinel-2
        embeddings["all, s1 masked"] = embed(samples, ("s2", "terrain", "weather"), bands)
        embeddings["all, only s2"] = embeddings[BASE] if BASE in names else embed(samples, ("s2",), bands)
    row_of = {sid: i for i, sid in enumerate(samples.sample_ids)}
    log(f"{len(samples)} samples; embeddings of {len(embeddings)} input sets in {time.perf_counter() - started:.0f} s")

    per_seed: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the head is tiny: more threads only synchronise
    try:
        for seed in range(seeds):
            row: dict[str, Any] = {"seed": seed, "sets": {}}
            for spec in sets:
                given = samples_for(samples, spec)
                result = train_model(
                    given, legend, config_for(spec, seed, max_epochs), embeddings=embeddings[spec.name]
                )
                assert result.test is not None
                test = result.artifact.meta["metrics"]["test"]["model"]
                forest = rf_baseline(result.train, result.test, result.artifact.legend, seed, bands, spec.inputs)
                row["sets"][spec.name] = {
                    "macro_f1": test["macro_f1"], "overall_accuracy": test["overall_accuracy"],
                    "rf_macro_f1": forest["macro_f1"], "rf_overall_accuracy": forest["overall_accuracy"],
                    "n_train": len(result.train), "n_test": len(result.test),
                }  # fmt: skip
                if spec.name == ALL:
                    rows = np.array([row_of[s] for s in result.test.sample_ids])
                    row["masking"] = {
                        k: masked_scores(result, rows, embeddings[k]) for k in ("all, s1 masked", "all, only s2")
                    } | {"all, nothing masked": masked_scores(result, rows, embeddings[ALL])}
            per_seed.append(row)
            cells = row["sets"]
            log(f"seed {seed}: " + ", ".join(f"{k} {v['macro_f1']:.3f}" for k, v in cells.items())
                + f" ({time.perf_counter() - started:.0f} s)")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return aggregate(per_seed, sets, samples, time.perf_counter() - started)


def aggregate(per_seed: list[dict[str, Any]], sets: Sequence[InputSet], samples: Samples, seconds: float) -> dict:
    """Mean +- sd over seeds of every figure; the paired change against Sentinel-2 alone with the seeds better."""
    out_sets: dict[str, Any] = {}
    names = [s.name for s in sets]
    for spec in sets:
        cells = [r["sets"][spec.name] for r in per_seed]
        entry: dict[str, Any] = {
            "inputs": list(spec.inputs),
            "precipitation_unit": spec.precipitation if "weather" in spec.inputs else None,
            "note": spec.note,
        }
        for key in ("macro_f1", "overall_accuracy", "rf_macro_f1", "rf_overall_accuracy"):
            entry[key] = summarize(c[key] for c in cells)
        if BASE in names and spec.name != BASE:
            for key, base_key in (("macro_f1", "macro_f1"), ("rf_macro_f1", "rf_macro_f1")):
                diffs = [r["sets"][spec.name][key] - r["sets"][BASE][base_key] for r in per_seed]
                entry[f"{key}_vs_s2"] = summarize(diffs) | {"seeds_better": sum(d > 0 for d in diffs)}
        entry["n_test"] = summarize(c["n_test"] for c in cells)
        out_sets[spec.name] = entry
    results: dict[str, Any] = {
        "procedure": (__doc__ or "").split("\n\n")[3].replace("\n", " "),
        "seeds": len(per_seed),
        "samples": len(samples),
        "input_coverage": {k: round(v, 4) for k, v in samples.input_coverage().items()},
        "sets": out_sets,
        "per_seed": per_seed,
        "seconds": round(seconds, 1),
    }
    if all("masking" in r for r in per_seed) and per_seed:
        masking: dict[str, Any] = {}
        for key in per_seed[0]["masking"]:
            cells = [r["masking"][key] for r in per_seed]
            masking[key] = {k: summarize(c[k] for c in cells) for k in cells[0]}
        full = [r["masking"]["all, nothing masked"]["macro_f1"] for r in per_seed]
        for key, dedicated in (("all, s1 masked", NO_RADAR), ("all, only s2", BASE)):
            got = [r["masking"][key]["macro_f1"] for r in per_seed]
            masking[key]["macro_f1_vs_all"] = summarize(g - f for g, f in zip(got, full, strict=True))
            if dedicated in names:
                own = [r["sets"][dedicated]["macro_f1"] for r in per_seed]
                masking[key]["dedicated_model"] = dedicated
                masking[key]["macro_f1_vs_dedicated"] = summarize(g - o for g, o in zip(got, own, strict=True))
        results["masking"] = masking
    return results


def _pm(cell: dict[str, float], scale: float = 1.0, digits: int = 3, sign: bool = False) -> str:
    if not math.isfinite(cell["mean"]):
        return "n/a"
    return f"{cell['mean'] * scale:{'+' if sign else ''}.{digits}f} ± {cell['sd'] * scale:.{digits}f}"


def gain_table(results: dict[str, Any]) -> str:
    """The per-input gain table (mean ± sd over seeds) as Markdown."""
    header = ["inputs", "macro F1", "Δ vs s2 (seeds better)", "OA", "RF macro F1", "RF Δ vs s2 (seeds better)",
              "RF OA"]  # fmt: skip
    rows = []
    seeds = results["seeds"]
    for name, cell in results["sets"].items():
        delta = cell.get("macro_f1_vs_s2")
        rf_delta = cell.get("rf_macro_f1_vs_s2")
        rows.append([
            name, _pm(cell["macro_f1"]),
            f"{_pm(delta, sign=True)} ({delta['seeds_better']}/{seeds})" if delta else "",
            _pm(cell["overall_accuracy"]), _pm(cell["rf_macro_f1"]),
            f"{_pm(rf_delta, sign=True)} ({rf_delta['seeds_better']}/{seeds})" if rf_delta else "",
            _pm(cell["rf_overall_accuracy"]),
        ])  # fmt: skip
    return markdown_table(header, rows)


def masking_table(results: dict[str, Any]) -> str:
    """What the all-input model gives with fewer inputs, beside the model trained for exactly those."""
    masking = results.get("masking")
    if not masking:
        return ""
    header = ["all-input model fed", "macro F1", "Δ vs all inputs", "Δ vs a model trained without them", "OA",
              "outside training %", "mapped %"]  # fmt: skip
    rows = []
    for key, cell in masking.items():
        rows.append([
            key.removeprefix("all, "), _pm(cell["macro_f1"]),
            _pm(cell["macro_f1_vs_all"], sign=True) if "macro_f1_vs_all" in cell else "",
            f"{_pm(cell['macro_f1_vs_dedicated'], sign=True)} ({cell['dedicated_model']})"
            if "macro_f1_vs_dedicated" in cell else "",
            _pm(cell["overall_accuracy"]), _pm(cell["outside_training"], 100, 1), _pm(cell["coverage"], 100, 1),
        ])  # fmt: skip
    return markdown_table(header, rows)


def markdown(results: dict[str, Any]) -> str:
    cov = results["input_coverage"]
    lines = [
        gain_table(results),
        "",
        f"{results['seeds']} spatial split seeds (10 km blocks, train 60 % / calibration 20 % / test 20 %), test "
        f"points only (n ≈ {results['sets'][next(iter(results['sets']))]['n_test']['mean']:.0f}), "
        f"{results['samples']} samples; values present: S1 {cov['s1']:.1%}, terrain {cov['terrain']:.1%}, weather "
        f"{cov['weather']:.1%}. Δ = paired difference in macro F1 to Sentinel-2 alone on the same split; seeds better "
        "= seeds where it is > 0.",
    ]
    table = masking_table(results)
    if table:
        lines += ["", "### Masking an input the model was trained with", "", table]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--sets", nargs="+", choices=[s.name for s in SETS], help="input sets (default: all)")
    parser.add_argument("--max-epochs", type=int, help="override the procedure's 200 epochs (smoke tests only)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    sets = [s for s in SETS if args.sets is None or s.name in args.sets]
    results = run(args.seeds, sets, max_epochs=args.max_epochs)
    table = markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.markdown:
        header = "# Presto's other inputs: Sentinel-1, terrain, weather\n\n" + (__doc__ or "").split("\n\n", 2)[2]
        # the findings are written by hand from the numbers: a rerun keeps them (and they may need updating)
        old = args.markdown.read_text(encoding="utf-8") if args.markdown.exists() else ""
        findings = old[old.index(FINDINGS) :] if FINDINGS in old else ""
        text = f"{header.rstrip()}\n\n{RUN_LINE}\n\n{table}\n" + (f"\n{findings}" if findings else "")
        args.markdown.write_text(text, encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
