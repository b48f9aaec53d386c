"""Make the shipped default land-cover model, ``models/landcover_default.pt``, and its model card.

Exactly how it was made::

    .venv/bin/python models/train_default.py        # reads data/worldcereal/*parquet

i.e. the three ESA WorldCereal point extractions (real Sentinel-2 L2A, MIT; copies of
``../shared/data/worldcereal_extractions/point_timeseries``) loaded with ``suelo.samples.load_worldcereal``
(12 months around each label's valid_time, dekads -> monthly median), ewoc_code -> LANDCOVER10, bands B02 B03 B04
B05 B06 B07 B08 B11 B12 (the data have no B8A), the pretrained Presto encoder frozen, an MLP head trained with
``TrainConfig.legacy()`` (the defaults of when it was made: every sample, a fixed 200 epochs without early
stopping, 10 km blocks; the later defaults would make another model). Classes with fewer than 5 training samples
are left out.

1. The model card (``suelo.model_card``): the whole procedure over 10 spatial split seeds, each a three-way
   split (train 60 % / calibration 20 % / test 20 %, 10 km blocks), scored on the test points, with the
   RandomForest baseline on the same inputs.
2. The shipped model: the same procedure once (seed 0) on train 80 % / calibration 20 %, no test split, i.e. on
   all the data; the calibration split fits the temperature, the novelty gate's threshold and the certified
   confidence threshold (default target: the highest certifiable at or below 0.95). The seed-averaged card is
   stored in its ``meta["model_card"]`` and written to ``models/landcover_default_report/MODEL_CARD.md``.
3. The open-set evaluation: the summary of ``benchmarks/open_set_results.json`` (``python -m benchmarks.open_set
   --json benchmarks/open_set_results.json``, the same procedure as this model on the same data) goes into the
   card too (``meta["model_card"]["open_set"]`` and a section of MODEL_CARD.md).
4. Fewer months: the summary of ``benchmarks/fewer_months_results.json`` (``python -m benchmarks.fewer_months --json
   benchmarks/fewer_months_results.json``: this procedure over 10 seeds, test points cut to 1-12 months) goes into
   ``meta["model_card"]["fewer_months"]`` and MODEL_CARD.md; a job run with ``allow_fewer_months`` quotes it.
5. Other inputs: the summary of ``benchmarks/inputs_results.json`` (``python -m benchmarks.inputs --json
   benchmarks/inputs_results.json --markdown benchmarks/INPUTS.md``: this procedure over 10 seeds once per set of
   Presto inputs, Sentinel-1, terrain and weather beside Sentinel-2, with the RandomForest on the same inputs, and
   what masking Sentinel-1 costs a model trained with all) goes into ``meta["model_card"]["inputs"]`` and MODEL_CARD.md.
   The shipped model itself is trained on Sentinel-2 only (``TrainConfig.legacy()``: ``inputs=("s2",)``).
6. Attribution (``suelo.explain``, issue 22): integrated gradients of each calibration sample's reference-class
   logit by month x band group, terrain and lat/lon (``explain_samples(model, samples, "stored")``: the samples
   whose ids the model stores for its calibration split, which the head was not fitted on), averaged per class:
   ``meta["model_card"]["attribution"]`` (the run report draws its heatmaps from it), the files of ``suelo explain``
   in ``<model>_report/attribution/`` and a section of MODEL_CARD.md.
   ``python models/train_default.py --card-sections-only`` adds sections 3 to 6 to the shipped model and its card
   without retraining (the weights, gate and thresholds stay bit for bit); ``-o models/landcover_radar.pt`` does it
   for the radar model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from suelo.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from suelo.legend import load_legend  # noqa: E402
from suelo.model_card import DEFAULT_SEEDS, card_markdown, seed_averaged_card  # noqa: E402
from suelo.models.artifact import ModelArtifact, save_artifact  # noqa: E402
from suelo.samples import Samples, load_worldcereal  # noqa: E402
from suelo.train import TrainConfig, train_model, write_training_figures  # noqa: E402

EXTRACTIONS = sorted((ROOT / "data" / "worldcereal").glob("*parquet"))
OPEN_SET = ROOT / "benchmarks" / "open_set_results.json"
FEWER_MONTHS = ROOT / "benchmarks" / "fewer_months_results.json"
INPUTS = ROOT / "benchmarks" / "inputs_results.json"
ATTRIBUTION_FOLDER = "attribution"  # in the model's report folder: suelo explain's files for its calibration split


def open_set_section(path: Path = OPEN_SET) -> tuple[dict, str]:
    """The open-set benchmark's aggregates (no per-seed rows) and its tables as Markdown; empty when not run."""
    if not path.exists():
        return {}, ""
    from benchmarks.open_set import EXTERNAL_HEADER, FOLD_HEADER, external_rows, fold_rows, markdown_table

    results = json.loads(path.read_text(encoding="utf-8"))
    keep = ("operating_point", "seeds", "loco", "loro", "external", "in_distribution", "goals", "throughput")
    summary = {k: results[k] for k in keep if k in results}
    text = "\n".join([
        "## Open-set evaluation (`benchmarks/OPEN_SET.md`)",
        "",
        f"{results['seeds']} spatial split seeds, target 0.80 (delta 0.05), gate rejection rate 5 %. Mapped = gets a "
        "class in a map; before = confidence threshold only, after = novelty gate + confidence threshold.",
        "",
        "### Leave one class out", "", markdown_table(FOLD_HEADER, fold_rows(results, "loco")), "",
        "### Leave one region out", "", markdown_table(FOLD_HEADER, fold_rows(results, "loro")), "",
        "### Water, built-up and other land (model trained on all regions)", "",
        markdown_table(EXTERNAL_HEADER, external_rows(results)), "",
    ])  # fmt: skip
    return summary, text


def fewer_months_section(path: Path = FEWER_MONTHS) -> tuple[dict, str]:
    """The fewer-months benchmark's aggregates (no per-seed rows) and its table as Markdown; empty when not run."""
    if not path.exists():
        return {}, ""
    from benchmarks.fewer_months import markdown

    results = json.loads(path.read_text(encoding="utf-8"))
    summary = {k: results[k] for k in ("seeds", "months_trained", "window", "by_months")}
    text = "\n".join([
        "## Fewer months than trained on (`benchmarks/FEWER_MONTHS.md`)", "",
        "A job may run this 12-month model on a shorter period (`allow_fewer_months: true`); its calibration and "
        "certificate were fitted on 12 months. Test points cut to k months (centred on the label's month), with the "
        "12-month threshold:", "", markdown(results), "",
    ])  # fmt: skip
    return summary, text


def inputs_section(path: Path = INPUTS) -> tuple[dict, str]:
    """The other-inputs benchmark's aggregates (no per-seed rows) and its tables as Markdown; empty when not run."""
    if not path.exists():
        return {}, ""
    from benchmarks.inputs import gain_table, masking_table

    results = json.loads(path.read_text(encoding="utf-8"))
    summary = {k: results[k] for k in ("seeds", "samples", "input_coverage", "sets", "masking") if k in results}
    lines = [
        "## Presto's other inputs: Sentinel-1, terrain, weather (`benchmarks/INPUTS.md`)", "",
        "This model is trained on Sentinel-2 only; a model may be trained with the other inputs Presto was "
        "pre-trained on (`suelo train --inputs s2,s1,terrain,weather`, from WorldCereal extractions). The same "
        f"procedure over {results['seeds']} spatial split seeds, once per input set, on the test points (mean ± sd; "
        "Δ = paired change against Sentinel-2 alone), the RandomForest on the same inputs beside it:", "",
        gain_table(results), "",
    ]  # fmt: skip
    masking = results.get("masking", {}).get("all, s1 masked")
    if masking:
        lines += [
            "Masking costs: a model trained with all inputs, run on a cube without radar "
            "(`products.landcover.mask_missing_inputs: true`), scores macro F1 "
            f"{masking['macro_f1']['mean']:.3f} ± {masking['macro_f1']['sd']:.3f} "
            f"({masking['macro_f1_vs_all']['mean']:+.3f} against all inputs"
            + (
                f", {masking['macro_f1_vs_dedicated']['mean']:+.3f} against a model trained without Sentinel-1"
                if "macro_f1_vs_dedicated" in masking
                else ""
            )
            + f"); its novelty gate rejects {masking['outside_training']['mean']:.0%} of the test points.",
            "",
            masking_table(results),
            "",
        ]
    return summary, "\n".join(lines)


def card_sections_only(model: Path, extractions: list[Path]) -> None:
    """Refresh the benchmark and attribution sections of the shipped model's card (open set, fewer months, other
    inputs, attribution) in its meta and its MODEL_CARD.md, leaving weights, gate and thresholds as they are."""
    from suelo.models.artifact import contract_inputs, load_artifact

    artifact = load_artifact(model)
    card = artifact.meta["model_card"]
    sections = add_benchmark_sections(card, contract_inputs(artifact.contract))
    folder = model.with_name(f"{model.stem}_report")
    sections += "\n" + add_attribution_section(card, artifact, worldcereal_samples(extractions), folder)
    save_artifact(artifact, model)
    write_card(card, sections, folder, model.name)
    print(f"updated the card sections of {model}")


def worldcereal_samples(extractions: list[Path]) -> Samples:
    """The WorldCereal extractions with the shipped legend, as the model was trained on them."""
    legend = load_legend()
    return Samples.concat([load_worldcereal(p, legend) for p in extractions])


def add_attribution_section(card: dict, artifact: ModelArtifact, samples: Samples, folder: Path) -> str:
    """Explain ``artifact`` on its stored calibration split (``suelo explain``'s files in ``folder/attribution``),
    put the per-class summary into ``card["attribution"]``; returns the card's Markdown section."""
    from suelo.explain import (
        attribution_markdown,
        card_attribution,
        completeness_line,
        explain_samples,
        write_explanation,
    )

    summary, _result = explain_samples(artifact, samples, "stored")
    print(f"attribution: {summary['samples']['n']} calibration samples in {summary['seconds']:.0f} s; "
          + completeness_line(summary))  # fmt: skip
    stored = card_attribution(summary)
    write_explanation(stored, folder / ATTRIBUTION_FOLDER)
    card["attribution"] = stored
    return attribution_markdown(stored, f"{ATTRIBUTION_FOLDER}/heatmaps.png")


def add_benchmark_sections(card: dict, inputs: tuple[str, ...] = ("s2",)) -> str:
    """Put the open-set, fewer-months and other-inputs benchmark summaries into ``card``; returns their
    Markdown. The open-set and fewer-months benchmarks measure the Sentinel-2-only procedure: a model of other
    ``inputs`` gets a line saying they were not measured for it, not another procedure's numbers."""
    card["inputs"], inputs_text = inputs_section()
    if tuple(inputs) != ("s2",):
        note = (
            "## Open set and fewer months\n\nNot measured for this procedure yet (inputs "
            f"{', '.join(inputs)}): `benchmarks/OPEN_SET.md` and `benchmarks/FEWER_MONTHS.md` measure the "
            "Sentinel-2-only model (`models/landcover_default.pt`).\n"
        )
        card["open_set"], card["fewer_months"] = {}, {}
        return note + "\n" + inputs_text
    card["open_set"], open_set_text = open_set_section()
    card["fewer_months"], fewer_text = fewer_months_section()
    return open_set_text + "\n" + fewer_text + "\n" + inputs_text


def write_card(card: dict, sections: str, folder: Path, model_name: str = "landcover_default.pt") -> None:
    """``model_card.json`` and ``MODEL_CARD.md`` (the seed-averaged tables, then the benchmark sections)."""
    write_json_atomic(folder / "model_card.json", card)
    write_text_atomic(
        folder / "MODEL_CARD.md", card_markdown(card, f"Model card: models/{model_name}") + "\n" + sections
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extractions", nargs="*", type=Path, default=EXTRACTIONS, help="WorldCereal extractions")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "models" / "landcover_default.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--card-seeds", type=int, default=len(DEFAULT_SEEDS), help="split seeds of the model card")
    parser.add_argument("--card-sections-only", action="store_true", help="refresh the benchmark card sections only")
    parser.add_argument(
        "--inputs", default="s2", help="Presto inputs, e.g. s2,s1,terrain (models/landcover_radar.pt; see INPUTS.md)"
    )
    args = parser.parse_args()
    inputs = tuple(i.strip() for i in args.inputs.split(",") if i.strip())
    if args.card_sections_only:
        card_sections_only(args.output, args.extractions)
        return
    legend = load_legend()
    samples = worldcereal_samples(args.extractions)
    started = time.perf_counter()
    config = TrainConfig.legacy(inputs=inputs)
    card = seed_averaged_card(samples, legend, config, seeds=range(args.card_seeds), log=print)
    print(f"model card: {args.card_seeds} seeds in {time.perf_counter() - started:.0f} s")
    sections = add_benchmark_sections(card, inputs)
    result = train_model(
        samples,
        legend,
        TrainConfig.legacy(seed=args.seed, inputs=inputs),
        sources=[p.name for p in args.extractions],
        log=print,
    )
    folder = args.output.with_name(f"{args.output.stem}_report")
    sections += "\n" + add_attribution_section(card, result.artifact, samples, folder)
    result.artifact.meta["model_card"] = card
    save_artifact(result.artifact, args.output)
    figures = write_training_figures(result, folder)
    write_card(card, sections, folder, args.output.name)
    print(card_markdown(card))
    print("shipped model thresholds:", json.dumps(result.artifact.meta["thresholds"]["report"]["global"]))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB) and {[f.name for f in figures]}")


if __name__ == "__main__":
    main()
