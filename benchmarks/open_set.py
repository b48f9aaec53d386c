"""Open-set benchmark of the novelty gate (``suelo.novelty``) on real data: does it keep land the model never saw
from getting a confident class, and what does it cost on land the model knows?

    python -m benchmarks.open_set                                   # 10 seeds, tables on stdout
    python -m benchmarks.open_set --seeds 3 --json out.json --markdown OPEN_SET.md

Operating point (the demo's): calibrated top-1 confidence threshold certified for a retained accuracy of 0.80 with
delta 0.05 on the calibration split, novelty gate calibrated for a 5% rejection rate on the same split. Every model
is ``suelo.train.train_model`` with ``TrainConfig.legacy(test_fraction=0.2, seed=s)``: a spatial three-way split
(10 km blocks) into train / calibration / test, so the in-distribution points scored here (the *test* split) were
used for nothing.

"Confidently mapped" (a share of a set's points) means the pixel would get a class in a map:

- before (no gate): calibrated top-1 >= the threshold certified on *all* calibration points (re-certified without
  the gate, so the comparison is fair: with the gate's rejections counted, the stored threshold differs),
- after (gate + threshold): inside the gate and calibrated top-1 >= the model's stored threshold (certified with the
  gate's rejected calibration points counted as not mapped).

Experiments (each repeated over ``--seeds`` split seeds; tables give mean +- sd over seeds):

- leave-one-class-out (LOCO): for each in-legend class with at least ``MIN_CLASS_SAMPLES`` samples, a model trained
  without it; novel set = every sample of that class (all regions),
- leave-one-region-out (LORO): the three WorldCereal extractions are the three regions; novel set = every in-legend
  sample of the held-out region,
- external sets, against the model trained on all three regions: WorldCereal built-up and wetland points, WorldCereal
  samples whose code LANDCOVER10 ignores, Slovenia (L1C, 3 months) artificial surface and other classes, the
  hand-labelled Belgium village (``data/sample/belgium_village.geojson``) and the whole Belgium demo cube.

Numbers per novel set: AUROC of the gate's score (novel points positive, in-distribution test points negative:
the probability that a random novel point scores higher than a random test point; 0.5 = no separation, 1 =
perfect), the shares confidently mapped before -> after, and on the in-distribution test split the coverage (share
mapped) before -> after, the cost in percentage points and the accuracy of the mapped test points.

The encoder is frozen (``TrainConfig.finetune`` is False), so the embeddings of the novel and external sets do not
depend on the seed and are computed once; ``train_model`` computes the train/calibration/test ones itself.
Training runs single-threaded (the head is tiny: more threads only synchronise; on 2 cores it was 5x faster).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suelo.legend import Legend, load_legend
from suelo.novelty import NoveltyGate
from suelo.samples import WORLDCEREAL_BANDS, Samples, load_class_mapping, load_worldcereal
from suelo.train import TrainConfig, TrainResult, train_model

PROJECT = Path(__file__).resolve().parent.parent
#: The three WorldCereal point extractions shipped in data/worldcereal: one region each.
REGIONS: dict[str, str] = {
    "FRA-SW-2023": "data/worldcereal/dekad_2023_FRA_LPIS_POLY_110.geoparquet",
    "FRA-Corsica-2022": "data/worldcereal/month_2022_FRA_LPIS_POLY_110.geoparquet",
    "SSD-UGA-2017": "data/worldcereal/test_public_extractions_2017_SSD_UGA.parquet",
}
IN_LEGEND: tuple[int, ...] = (1, 2, 3, 4, 5)  # Temporary crops, Temporary grasses, Permanent crops, Grasslands, Trees
BUILT_UP, WETLANDS = 7, 9
UNLABELLED = 99  # LANDCOVER10 "ignore" (mixed / unspecified crop codes), loaded under an extended legend
BELGIUM_CUBE = PROJECT / "out" / "demo" / "cube" / "cube.nc"
BELGIUM_JOB = PROJECT / "workflows" / "demo.yaml"
BELGIUM_LABELS = PROJECT / "data" / "sample" / "belgium_village.geojson"
SLOVENIA_CUBE = PROJECT / "out" / "slovenia" / "cube" / "cube.nc"  # the job's own output; ingested when absent
SLOVENIA_JOB = PROJECT / "workflows" / "slovenia.yaml"
SLOVENIA_LABELS = PROJECT / "data" / "slovenia" / "LULC.tif"
SLOVENIA_LEGEND = PROJECT / "data" / "legends" / "eolearn_lulc.yaml"
SLOVENIA_ARTIFICIAL = 8
#: Where Slovenia's 3 months (Jul, Aug, Sep) go in the 12-month series the model reads (the window starts 3 months
#: earlier, in April; the other 9 months are missing).
SLOVENIA_OFFSET = 3

TARGET_ACCURACY = 0.80
DELTA = 0.05
REJECTION_RATE = 0.05
TEST_FRACTION = 0.2
MIN_CLASS_SAMPLES = 15  # LOCO holds out only classes with at least this many samples
MIN_AUROC_POINTS = 20  # no AUROC for a smaller novel set
GOAL_MAPPED = 0.05  # at most 5% of held-out points confidently mapped (after the gate)
GOAL_COST_PTS = 5.0  # at most 5 percentage points of in-distribution test coverage lost to the gate
GATE_VECTORS = 1_000_000
ENCODER_PIXELS = 4096
ENCODER_THREADS = 2

#: How each evaluation set was labelled (printed in the Markdown report).
LABELLING: dict[str, str] = {
    "WorldCereal (LOCO, LORO, test split)": (
        "WorldCereal reference points as extracted by WorldCereal (LPIS parcels for the two French sets, the public "
        "2017 South Sudan / Uganda test extraction); ewoc codes mapped to LANDCOVER10 with the shipped "
        "data/legends/worldcereal_class_mappings.json."
    ),
    "WorldCereal built-up + wetlands": (
        "The same extractions: the 2 points whose ewoc code maps to Built-up (Corsica 1, SSD-UGA 1) and the 2 "
        "Wetlands points (Corsica); too few for an AUROC."
    ),
    "WorldCereal LANDCOVER10 ignore": (
        "The samples whose ewoc code LANDCOVER10 maps to 'ignore' (mixed / unspecified crop codes 1103..., 1109..., "
        "1115...): mostly cropland the legend does not name, so *not* necessarily novel."
    ),
    "Slovenia": (
        "eo-learn's Slovenia patch, label raster data/slovenia/LULC.tif (Slovenian RABA land-use polygons mapped to "
        "eo-learn's LULC classes, dated 2017-2018 while the imagery is 2015). Sentinel-2 L1C (top of atmosphere, no "
        "atmospheric correction) and only 3 cloud-free months (Jul-Sep 2015), placed at months 3..5 of a 12-month "
        "window starting in April, the other 9 months missing: trivially unlike the L2A 12-month training data."
    ),
    "Belgium village": (
        "Hand-labelled by eye by the suelo developers on true-colour (and, as a check, NIR false-colour) composites "
        "of the Belgium demo cube (April, July, September 2021) at 5x-14x zoom: the road as a 10 m wide centreline "
        "corridor, roofs/yards only where the pixel was never green Apr-Sep (max monthly NDVI < 0.4; < 0.35 for the "
        "farmyard), gardens excluded. Pixels whose centre falls inside a polygon. Evaluation only."
    ),
    "Belgium whole cube": (
        "All 10,000 pixels of the Belgium demo cube (12 months Nov 2020 - Oct 2021, Dec and Jan empty): mostly "
        "fields, grassland and trees in a region the model never saw, plus the village."
    ),
}


# -- data ----------------------------------------------------------------------------------------------------------


def extended_legend() -> Legend:
    """The LANDCOVER10 legend plus ``UNLABELLED`` (99) for the codes LANDCOVER10 maps to "ignore"."""
    legend = load_legend()
    return Legend.from_list([*legend.to_list(), {"code": UNLABELLED, "name": "Unlabelled", "color": "#000000"}])


def load_worldcereal_regions() -> tuple[Samples, np.ndarray]:
    """Every WorldCereal sample of the three regions (in-legend classes, built-up 7, wetlands 9 and "ignore" as
    ``UNLABELLED``), with the region name of each sample."""
    mapping = {k: ("unlabelled" if v == "ignore" else v) for k, v in load_class_mapping().items()}
    legend = extended_legend()
    parts, names = [], []
    for name, path in REGIONS.items():
        part = load_worldcereal(PROJECT / path, legend, mapping=mapping)
        parts.append(part)
        names += [name] * len(part)
    return Samples.concat(parts), np.array(names, dtype=object)


def pad_months(samples: Samples, offset: int, months: int = 12) -> Samples:
    """``samples`` with their series placed at months ``offset..`` of a ``months``-long series (NaN elsewhere) and
    the start month moved ``offset`` months earlier, so a 12-month model reads the months at their calendar place."""
    refl = np.full((len(samples), months, len(samples.band_names)), np.nan, dtype=np.float32)
    refl[:, offset : offset + samples.n_months] = samples.reflectance
    start = (samples.start_month - offset) % 12
    return Samples(
        refl, samples.band_names, start, samples.latlons, samples.labels, samples.sample_ids, samples.groups,
        samples.anchors, samples.product_level,
    )  # fmt: skip


def ensure_cube(path: Path, job_file: Path) -> Path:
    """``path`` if it exists, else the cube of ``job_file`` ingested into a temporary folder."""
    if path.exists():
        return path
    from suelo.jobs import ingest
    from suelo.settings import load_job

    job = load_job(job_file)
    out = Path(tempfile.mkdtemp(prefix=f"open-set-{job_file.stem}-"))
    job = job.model_copy(update={"output": job.output.model_copy(update={"dir": out})})
    return Path(ingest(job).cube_path)


def load_slovenia(cube_path: Path) -> Samples:
    """Slovenia label-raster pixels (L1C, 3 months) with the model's bands, padded to 12 months."""
    from suelo.composite import open_cube
    from suelo.samples import sample_raster

    samples = sample_raster(open_cube(cube_path), SLOVENIA_LABELS, load_legend(SLOVENIA_LEGEND))
    return pad_months(samples.select_bands(WORLDCEREAL_BANDS), SLOVENIA_OFFSET)


def load_belgium(cube_path: Path, labels: Path = BELGIUM_LABELS) -> tuple[Samples, dict[str, np.ndarray]]:
    """All pixels of the Belgium cube (row-major) and, per ``what`` of the hand-labelled polygons, the mask of the
    pixels whose centre falls inside one (plus ``"all"``, their union)."""
    import geopandas as gpd
    from rasterio.features import rasterize

    from suelo.composite import cube_grid, open_cube
    from suelo.models.presto_inputs import cube_to_pixels

    cube = open_cube(cube_path)
    refl, latlons, start = cube_to_pixels(cube.sel(band=list(WORLDCEREAL_BANDS)))
    n = len(refl)
    ids = np.array([f"belgium@{i // cube.sizes['x']},{i % cube.sizes['x']}" for i in range(n)], dtype=object)
    pixels = Samples(refl, WORLDCEREAL_BANDS, np.full(n, start), latlons, np.zeros(n), ids)
    grid = cube_grid(cube)
    polygons = gpd.read_file(labels).to_crs(grid.crs.to_wkt())
    masks: dict[str, np.ndarray] = {}
    for what in sorted(set(polygons["what"])):
        shapes = ((g, 1) for g in polygons.geometry[polygons["what"] == what])
        masks[what] = rasterize(shapes, out_shape=grid.shape, transform=grid.transform, all_touched=False).ravel() > 0
    masks["all"] = np.any(list(masks.values()), axis=0)
    return pixels, masks


def embed(samples: Samples, encoder: Any = None) -> np.ndarray:
    """Presto embeddings (N, 128) of ``samples`` (the model's bands), fp32 on the CPU, as ``train_model`` makes them."""
    from suelo.models.inference import encode_pixels
    from suelo.models.presto import load_presto_encoder
    from suelo.models.presto_inputs import presto_inputs

    encoder = encoder if encoder is not None else load_presto_encoder()
    s = samples.select_bands(WORLDCEREAL_BANDS)
    x, mask, dw = presto_inputs(s.reflectance, s.band_names, latlons=s.latlons)
    return encode_pixels(encoder, x, mask, dw, s.latlons.astype(np.float32), s.start_month, device="cpu", fast=False)


# -- one model at the operating point -----------------------------------------------------------------------------


def training_config(seed: int) -> TrainConfig:
    """The benchmark's model: the shipped model's procedure (``TrainConfig.legacy``: every sample, 200 epochs, 10 km
    blocks), a 20% spatial test split, the demo's operating point, no RF baseline."""
    return TrainConfig.legacy(
        target_accuracy=TARGET_ACCURACY, delta=DELTA, novelty_rejection_rate=REJECTION_RATE,
        test_fraction=TEST_FRACTION, seed=seed, rf_baseline=False,
    )  # fmt: skip


@dataclass
class OperatingPoint:
    """A trained model with its two thresholds: certified with the gate (stored) and re-certified without it."""

    gate: NoveltyGate
    head: torch.nn.Module
    calibration: Any  # suelo.calibrate.Calibration
    score_kind: str
    target_with_gate: float  # the certified target (0.80 unless the calibration split could not certify it)
    threshold_with_gate: float
    target_without_gate: float  # the same, certified without the gate
    threshold_without_gate: float
    test_embeddings: np.ndarray
    test_correct: np.ndarray
    n_train: int
    n_calibration: int
    seconds: float

    def confidence(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated confidence score and predicted class index of each embedding."""
        from suelo.threshold import confidence_score

        with torch.no_grad():
            logits = self.head(torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))).double().numpy()
        calibrated = self.calibration.apply(logits)
        return confidence_score(calibrated, self.score_kind), calibrated.argmax(1)

    def mapped(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Masks of the points confidently mapped without the gate (before) and with it (after)."""
        score, _ = self.confidence(embeddings)
        inside = ~self.gate.outside(embeddings)
        return score >= self.threshold_without_gate, inside & (score >= self.threshold_with_gate)


def operating_point(result: TrainResult, seconds: float = float("nan")) -> OperatingPoint:
    """The operating point of a ``train_model`` result (which needs a test split).

    With the gate: the model's stored policy (``honest_target``: the highest target <= 0.80 its calibration split
    certifies with the gate's rejections counted). Without it: the same rule on the calibration scores of *all*
    calibration points (``suelo.threshold.highest_certifiable``), i.e. what the same model without a gate would
    ship; infinite threshold (nothing mapped) when no target down to 0.50 is certifiable."""
    from suelo.calibrate import Calibration
    from suelo.threshold import confidence_score, highest_certifiable

    meta = result.artifact.meta
    if result.test is None or "test" not in result.embeddings:
        raise ValueError("the model has no test split")
    assert result.head is not None and result.val_logits is not None and result.val_targets is not None
    calibration = Calibration.from_dict(meta["calibration"])
    policy = meta["thresholds"]["policy"]
    global_choice = meta["thresholds"]["report"]["global"]
    target = float(global_choice["target_accuracy"]) if global_choice["feasible"] else float("nan")
    cal = calibration.apply(result.val_logits)
    ungated = highest_certifiable(
        confidence_score(cal, policy["score"]), cal.argmax(1) == result.val_targets, DELTA, at_most=TARGET_ACCURACY
    )
    codes = [c["code"] for c in meta["legend"]]
    y_test = np.searchsorted(codes, result.test.labels)
    op = OperatingPoint(
        result.artifact.gate, result.head, calibration, policy["score"], target, float(policy["threshold"]),
        float("nan") if ungated is None else ungated.target_accuracy,
        float("inf") if ungated is None else float(ungated.threshold), result.embeddings["test"], np.zeros(0, bool),
        len(result.train), len(result.val), seconds,
    )  # fmt: skip
    op.test_correct = op.confidence(op.test_embeddings)[1] == y_test
    return op


def fit(samples: Samples, seed: int) -> OperatingPoint:
    """Train the benchmark's model on ``samples`` (single-threaded) and return its operating point."""
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_model(samples, load_legend(), training_config(seed))
    finally:
        torch.set_num_threads(threads)
    return operating_point(result, time.perf_counter() - started)


# -- scores -------------------------------------------------------------------------------------------------------


def auroc(novel_scores: np.ndarray, known_scores: np.ndarray) -> float:
    """AUROC of novelty scores, novel points positive: P(score of a random novel point > that of a known one)."""
    from sklearn.metrics import roc_auc_score

    if len(novel_scores) < MIN_AUROC_POINTS or not len(known_scores):
        return float("nan")
    y = np.r_[np.ones(len(novel_scores)), np.zeros(len(known_scores))]
    s = np.r_[novel_scores, known_scores].astype(np.float64)
    s = np.where(np.isfinite(s), s, np.finfo(np.float64).max)  # a non-finite score is outside the gate: most novel
    return float(roc_auc_score(y, s))


def in_distribution(op: OperatingPoint) -> dict[str, float]:
    """The model on its own untouched test split: coverage (share confidently mapped) and accuracy of the mapped
    points without and with the gate, the coverage cost in percentage points and the gate's rejection rate."""
    before, after = op.mapped(op.test_embeddings)

    def accuracy(mask: np.ndarray) -> float:
        return float(op.test_correct[mask].mean()) if mask.any() else float("nan")

    return {
        "n_test": len(op.test_embeddings),
        "test_coverage_before": float(before.mean()),
        "test_coverage_after": float(after.mean()),
        "coverage_cost_pts": 100 * float(before.mean() - after.mean()),
        "test_accuracy_before": accuracy(before),
        "test_accuracy_after": accuracy(after),
        "test_rejected_by_gate": float(op.gate.outside(op.test_embeddings).mean()),
        "target_before": op.target_without_gate,
        "target_after": op.target_with_gate,
        "threshold_before": op.threshold_without_gate,
        "threshold_after": op.threshold_with_gate,
        "gate_threshold": float(op.gate.threshold),
        "n_train": op.n_train,
        "n_calibration": op.n_calibration,
        "train_seconds": op.seconds,
    }


def novel_set(op: OperatingPoint, embeddings: np.ndarray, scene: np.ndarray | None = None) -> dict[str, float]:
    """A novel set against a model: its size, AUROC against the model's test split (and against ``scene``, other
    pixels of the same scene, when given) and the shares confidently mapped before and after the gate."""
    score = op.gate.score(embeddings)
    before, after = op.mapped(embeddings)
    out = {
        "n": len(embeddings),
        "auroc": auroc(score, op.gate.score(op.test_embeddings)),
        "mapped_before": float(before.mean()) if len(before) else float("nan"),
        "mapped_after": float(after.mean()) if len(after) else float("nan"),
        "rejected_by_gate": float(op.gate.outside(embeddings).mean()) if len(embeddings) else float("nan"),
    }
    if scene is not None:
        out["auroc_in_scene"] = auroc(score, op.gate.score(scene))
    return out


def fold(op: OperatingPoint, novel: np.ndarray) -> dict[str, float]:
    """One LOCO/LORO fold: the novel set's scores and the model's in-distribution test scores."""
    return {**novel_set(op, novel), **in_distribution(op)}


# -- the benchmark ------------------------------------------------------------------------------------------------


@dataclass
class BenchData:
    """Everything the experiments score: the in-legend WorldCereal samples with their regions, and the embeddings
    (seed-independent) of every novel and external set."""

    samples: Samples  # in-legend WorldCereal samples
    regions: np.ndarray  # region of each
    embeddings: np.ndarray  # of each
    external: dict[str, np.ndarray] = field(default_factory=dict)  # set name -> embeddings
    scene: dict[str, np.ndarray] = field(default_factory=dict)  # set name -> embeddings of other pixels of its scene
    notes: dict[str, str] = field(default_factory=dict)  # set name -> what it is
    belgium_pixels: Samples | None = None  # every pixel of the Belgium cube (for the throughput measurement)

    def loco_classes(self) -> list[int]:
        return [c for c in IN_LEGEND if int((self.samples.labels == c).sum()) >= MIN_CLASS_SAMPLES]

    def without(self, keep: np.ndarray) -> Samples:
        return self.samples.subset(np.flatnonzero(keep))


def load_data(
    external: bool = True,
    belgium_cube: Path = BELGIUM_CUBE,
    slovenia_cube: Path = SLOVENIA_CUBE,
    log: Callable[[str], None] = print,
) -> BenchData:
    """Load and embed the WorldCereal samples and (with ``external``) the external sets."""
    from suelo.models.presto import load_presto_encoder

    encoder = load_presto_encoder()
    everything, regions = load_worldcereal_regions()
    inside = np.isin(everything.labels, IN_LEGEND)
    emb = embed(everything, encoder)
    data = BenchData(everything.subset(np.flatnonzero(inside)), regions[inside], emb[inside])
    log(f"WorldCereal: {inside.sum()} in-legend, {(~inside).sum()} other samples; {data.samples.class_counts()}")
    if not external:
        return data
    labels = everything.labels
    sets = {
        "WorldCereal built-up + wetlands": np.isin(labels, [BUILT_UP, WETLANDS]),
        "WorldCereal LANDCOVER10 ignore": labels == UNLABELLED,
    }
    for name, mask in sets.items():
        data.external[name] = emb[mask]
        data.notes[name] = f"{int(mask.sum())} points; " + LABELLING[name]

    slovenia = load_slovenia(ensure_cube(slovenia_cube, SLOVENIA_JOB))
    slo_emb = embed(slovenia, encoder)
    artificial = slovenia.labels == SLOVENIA_ARTIFICIAL
    data.external["Slovenia artificial surface (L1C, 3 months)"] = slo_emb[artificial]
    data.scene["Slovenia artificial surface (L1C, 3 months)"] = slo_emb[~artificial]
    data.external["Slovenia other classes (L1C, 3 months)"] = slo_emb[~artificial]
    for name in ("Slovenia artificial surface (L1C, 3 months)", "Slovenia other classes (L1C, 3 months)"):
        data.notes[name] = LABELLING["Slovenia"]
    log(f"Slovenia: {len(slovenia)} labelled pixels, {artificial.sum()} artificial surface")

    pixels, masks = load_belgium(ensure_cube(belgium_cube, BELGIUM_JOB))
    be_emb = embed(pixels, encoder)
    for what in ("all", *sorted(k for k in masks if k != "all")):
        name = "Belgium village built-up" + ("" if what == "all" else f": {what}")
        data.external[name] = be_emb[masks[what]]
        data.scene[name] = be_emb[~masks["all"]]
        data.notes[name] = LABELLING["Belgium village"]
    data.external["Belgium whole cube"] = be_emb
    data.belgium_pixels = pixels
    data.notes["Belgium whole cube"] = LABELLING["Belgium whole cube"]
    log(f"Belgium: {len(pixels)} pixels, {int(masks['all'].sum())} hand-labelled built-up")
    return data


def run_seed(
    data: BenchData, seed: int, folds: bool = True, log: Callable[[str], None] = print
) -> tuple[dict[str, Any], OperatingPoint]:
    """All experiments for one split seed: the full model on the external sets, LOCO and LORO (with ``folds``).
    Returns the numbers and the full model."""
    out: dict[str, Any] = {"seed": seed}
    full = fit(data.samples, seed)
    out["in_distribution"] = in_distribution(full)
    out["external"] = {name: novel_set(full, e, data.scene.get(name)) for name, e in data.external.items()}
    log(f"seed {seed}: full model {full.seconds:.1f} s")
    if not folds:
        return out, full
    out["loco"], out["loro"] = {}, {}
    for c in data.loco_classes():
        held = data.samples.labels == c
        op = fit(data.without(~held), seed)
        out["loco"][str(c)] = fold(op, data.embeddings[held])
        log(f"seed {seed}: LOCO class {c} {op.seconds:.1f} s, AUROC {out['loco'][str(c)]['auroc']:.3f}")
    for region in REGIONS:
        held = data.regions == region
        op = fit(data.without(~held), seed)
        out["loro"][region] = fold(op, data.embeddings[held])
        log(f"seed {seed}: LORO {region} {op.seconds:.1f} s, AUROC {out['loro'][region]['auroc']:.3f}")
    return out, full


def summarize(values: Iterable[float]) -> dict[str, float]:
    """Mean, sample sd and count of the finite values (NaN where none)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": float("nan"), "sd": float("nan"), "n_seeds": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n_seeds": len(v)}


def aggregate(per_seed: Sequence[dict[str, Any]], section: str) -> dict[str, dict[str, Any]]:
    """Mean +- sd over seeds of every number of every set of ``section`` ("loco", "loro" or "external")."""
    runs = [r[section] for r in per_seed if section in r]
    names = list(dict.fromkeys(name for run in runs for name in run))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        cells = [run[name] for run in runs if name in run]
        out[name] = {key: summarize(c.get(key, float("nan")) for c in cells) for key in cells[0]}
    return out


def gate_throughput(gate: NoveltyGate, pixels: Samples, seed: int = 0) -> dict[str, float]:
    """Pixels/s of ``gate.score`` on ``GATE_VECTORS`` random 128-d vectors and of the encoder (fp32, CPU,
    ``ENCODER_THREADS`` threads) on ``ENCODER_PIXELS`` real pixels, in this process; ``gate_extra_time`` is the
    gate's run time as a share of the encoder's (per pixel)."""
    from suelo.models.presto import load_presto_encoder

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((GATE_VECTORS, gate.whiten.shape[0]), dtype=np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(ENCODER_THREADS)
    try:
        gate.score(vectors[:1000])  # warm up
        started = time.perf_counter()
        gate.score(vectors)
        gate_s = time.perf_counter() - started
        encoder = load_presto_encoder()
        chosen = pixels.subset(np.sort(rng.choice(len(pixels), min(ENCODER_PIXELS, len(pixels)), replace=False)))
        embed(chosen.subset(np.arange(64)), encoder)  # warm up
        started = time.perf_counter()
        embed(chosen, encoder)
        encoder_s = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    gate_rate, encoder_rate = GATE_VECTORS / gate_s, len(chosen) / encoder_s
    return {
        "gate_px_per_s": gate_rate,
        "encoder_px_per_s": encoder_rate,
        "gate_extra_time": encoder_rate / gate_rate,
        "gate_vectors": GATE_VECTORS,
        "encoder_pixels": len(chosen),
        "threads": ENCODER_THREADS,
        "load_average_1min": os.getloadavg()[0],
    }


def run(
    seeds: int = 10,
    fold_seeds: int | None = None,
    external: bool = True,
    throughput: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole benchmark: ``seeds`` split seeds for the external sets, ``fold_seeds`` (default: as many) of them
    for LOCO and LORO. Returns everything the tables and the JSON hold."""
    started = time.perf_counter()
    fold_seeds = seeds if fold_seeds is None else min(fold_seeds, seeds)
    data = load_data(external=external, log=log)
    load_s = time.perf_counter() - started
    per_seed, first = [], None
    for s in range(seeds):
        numbers, full = run_seed(data, s, folds=s < fold_seeds, log=log)
        per_seed.append(numbers)
        first = first or full
    results: dict[str, Any] = {
        "operating_point": {
            "target_accuracy": TARGET_ACCURACY, "delta": DELTA, "score": "top1 (calibrated)",
            "gate_rejection_rate": REJECTION_RATE, "test_fraction": TEST_FRACTION,
            "certified_on": "calibration split", "split": "spatial, 10 km blocks (suelo.samples.three_way_split)",
        },
        "seeds": seeds,
        "fold_seeds": fold_seeds,
        "loco": aggregate(per_seed, "loco"),
        "loro": aggregate(per_seed, "loro"),
        "external": aggregate(per_seed, "external"),
        "in_distribution": {
            k: summarize(r["in_distribution"][k] for r in per_seed) for k in per_seed[0]["in_distribution"]
        },
        "class_regions": {
            str(c): {r: int(((data.samples.labels == c) & (data.regions == r)).sum()) for r in REGIONS}
            for c in IN_LEGEND
        },
        "notes": {**data.notes, **{k: v for k, v in LABELLING.items() if k.startswith("WorldCereal (")}},
        "per_seed": per_seed,
    }  # fmt: skip
    results["goals"] = goals(results)
    if throughput and first is not None and data.belgium_pixels is not None:
        results["throughput"] = gate_throughput(first.gate, data.belgium_pixels)
    results["timing"] = {
        "total_seconds": time.perf_counter() - started,
        "loading_and_embedding_seconds": load_s,
        "trainings": sum(1 + len(r.get("loco", {})) + len(r.get("loro", {})) for r in per_seed),
        "mean_train_seconds": float(np.mean(
            [r["in_distribution"]["train_seconds"] for r in per_seed]
            + [c["train_seconds"] for r in per_seed for k in ("loco", "loro") for c in r.get(k, {}).values()]
        )),
        "cpu_cores": os.cpu_count(),
        "load_average_1min_at_end": os.getloadavg()[0],
    }  # fmt: skip
    return results


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """Which LOCO/LORO folds meet the goals: at most ``GOAL_MAPPED`` of the held-out points confidently mapped
    after the gate and at most ``GOAL_COST_PTS`` points of test coverage lost (on the mean over seeds)."""
    out: dict[str, Any] = {"mapped_at_most": GOAL_MAPPED, "coverage_cost_at_most_pts": GOAL_COST_PTS, "folds": {}}
    for section in ("loco", "loro"):
        for name, cell in results[section].items():
            mapped, cost = cell["mapped_after"]["mean"], cell["coverage_cost_pts"]["mean"]
            out["folds"][f"{section}:{name}"] = {
                "mapped_after": mapped, "mapped_goal_met": bool(mapped <= GOAL_MAPPED),
                "coverage_cost_pts": cost, "cost_goal_met": bool(cost <= GOAL_COST_PTS),
            }  # fmt: skip
    return out


# -- tables -------------------------------------------------------------------------------------------------------

CLASS_NAMES = {1: "Temporary crops", 2: "Temporary grasses", 3: "Permanent crops", 4: "Grasslands", 5: "Trees"}


def _pm(cell: dict[str, float], scale: float = 1.0, digits: int = 3) -> str:
    if not cell["n_seeds"]:
        return "n/a"
    return f"{cell['mean'] * scale:.{digits}f} ± {cell['sd'] * scale:.{digits}f}"


def _mean(cell: dict[str, float]) -> str:
    """Mean over seeds with 2 decimals, "-" where no seed certified any target."""
    return "-" if not cell["n_seeds"] else f"{cell['mean']:.2f}"


def _share(cell: dict[str, float]) -> str:
    return "n/a" if not cell["n_seeds"] else f"{100 * cell['mean']:.1f} ± {100 * cell['sd']:.1f}%"


def _label(section: str, name: str) -> str:
    return f"{name} {CLASS_NAMES[int(name)]}" if section == "loco" else name


def fold_rows(results: dict[str, Any], section: str) -> list[list[str]]:
    """Rows of the LOCO or LORO table."""
    rows = []
    for name, c in results[section].items():
        rows.append([
            _label(section, name), f"{c['n']['mean']:.0f}", _pm(c["auroc"]),
            f"{_share(c['mapped_before'])} -> {_share(c['mapped_after'])}",
            f"{_share(c['test_coverage_before'])} -> {_share(c['test_coverage_after'])}",
            _pm(c["coverage_cost_pts"], digits=1),
            f"{_share(c['test_accuracy_before'])} -> {_share(c['test_accuracy_after'])}",
            f"{_mean(c['target_before'])} / {_mean(c['target_after'])}",
        ])  # fmt: skip
    return rows


FOLD_HEADER = ["held out", "n", "AUROC", "held-out mapped: before -> after", "test coverage: before -> after",
               "cost (pts)", "test acc. of mapped: before -> after", "target: before / after"]  # fmt: skip
EXTERNAL_HEADER = ["set", "n", "AUROC vs WC test", "AUROC vs rest of scene", "mapped: before -> after",
                   "rejected by gate"]  # fmt: skip


def external_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the external-set table."""
    rows = []
    for name, c in results["external"].items():
        scene = _pm(c["auroc_in_scene"]) if "auroc_in_scene" in c else "-"
        rows.append([
            name, f"{c['n']['mean']:.0f}", _pm(c["auroc"]), scene,
            f"{_share(c['mapped_before'])} -> {_share(c['mapped_after'])}", _share(c["rejected_by_gate"]),
        ])  # fmt: skip
    return rows


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The operating point, the in-distribution model, the goals, timing and throughput, as text lines."""
    op, i = results["operating_point"], results["in_distribution"]
    lines = [
        f"Operating point: target accuracy {op['target_accuracy']} (delta {op['delta']}) certified on the "
        f"calibration split, gate rejection rate {op['gate_rejection_rate']}; {results['seeds']} split seeds for the "
        f"external sets, {results['fold_seeds']} for LOCO/LORO (mean ± sd over seeds).",
        f"Model on all 3 regions, its own test split (n ≈ {i['n_test']['mean']:.0f}): coverage "
        f"{_share(i['test_coverage_before'])} -> {_share(i['test_coverage_after'])} (cost "
        f"{_pm(i['coverage_cost_pts'], digits=1)} pts), accuracy of mapped {_share(i['test_accuracy_before'])} -> "
        f"{_share(i['test_accuracy_after'])}, gate rejects {_share(i['test_rejected_by_gate'])} of test; certified "
        f"target {_mean(i['target_before'])} / {_mean(i['target_after'])} (before / after).",
    ]
    g = results["goals"]
    miss_m = [k for k, v in g["folds"].items() if not v["mapped_goal_met"]]
    miss_c = [k for k, v in g["folds"].items() if not v["cost_goal_met"]]
    met_m = "met by every fold" if not miss_m else "NOT met by " + ", ".join(miss_m)
    met_c = "met by every fold" if not miss_c else "NOT met by " + ", ".join(miss_c)
    lines.append(
        f"Goals (mean over seeds): held-out mapped after the gate <= {100 * g['mapped_at_most']:.0f}%: {met_m}; "
        f"coverage cost <= {g['coverage_cost_at_most_pts']:.0f} pts: {met_c}."
    )
    if "throughput" in results:
        t = results["throughput"]
        lines.append(
            f"Throughput (this process, {t['threads']} threads, load average {t['load_average_1min']:.1f}): gate "
            f"{t['gate_px_per_s']:,.0f} px/s on {t['gate_vectors']:,} random 128-d vectors; encoder fp32 "
            f"{t['encoder_px_per_s']:,.0f} px/s on {t['encoder_pixels']} Belgium pixels; the gate adds "
            f"{100 * t['gate_extra_time']:.2f}% to the encoder's run time."
        )
    if "timing" in results:
        tm = results["timing"]
        lines.append(
            f"Runtime: {tm['total_seconds']:.0f} s in total ({tm['trainings']} trainings, "
            f"{tm['mean_train_seconds']:.1f} s each on average; loading and embedding "
            f"{tm['loading_and_embedding_seconds']:.0f} s; "
            f"{tm['cpu_cores']} cores, load average {tm['load_average_1min_at_end']:.1f} at the end)."
        )
    return lines


def findings(results: dict[str, Any]) -> list[str]:
    """What the numbers say, computed from them (so a re-run updates it)."""
    lines = []
    loco, loro, ext = results["loco"], results["loro"], results["external"]
    if loco:
        aurocs = {k: v["auroc"]["mean"] for k, v in loco.items()}
        best = max(aurocs, key=lambda k: aurocs[k])
        regions = results.get("class_regions", {})
        mix = regions.get(best, {})
        region, count = max(mix.items(), key=lambda kv: kv[1]) if mix else ("?", 0)
        share = count / max(sum(mix.values()), 1)
        of_region = count / max(sum(m.get(region, 0) for m in regions.values()), 1)
        others = [v for k, v in aurocs.items() if k != best]
        lines.append(
            f"A held-out *class* is not recognised as novel: AUROC {min(others):.2f}-{max(others):.2f} for "
            f"{', '.join(CLASS_NAMES[int(k)] for k in aurocs if k != best)}; {CLASS_NAMES[int(best)]} reaches "
            f"{aurocs[best]:.2f} because {100 * share:.0f}% of its samples are {region}, where it is "
            f"{100 * of_region:.0f}% of the samples (holding it out holds out most of that region). "
            f"{min(v['mapped_after']['mean'] for v in loco.values()):.0%}-"
            f"{max(v['mapped_after']['mean'] for v in loco.values()):.0%} of the held-out class points still get a "
            "confident class with the gate."
        )
    if loro:
        lines.append(
            f"A held-out *region* is: AUROC {min(v['auroc']['mean'] for v in loro.values()):.3f}-"
            f"{max(v['auroc']['mean'] for v in loro.values()):.3f}; at most "
            f"{max(v['mapped_after']['mean'] for v in loro.values()):.1%} of its points are confidently mapped with "
            f"the gate (up to {max(v['mapped_before']['mean'] for v in loro.values()):.0%} without)."
        )
    per_seed = [r["in_distribution"] for r in results.get("per_seed", [])]
    if per_seed:

        def below(when: str) -> int:
            return sum(r[f"test_accuracy_{when}"] < r[f"target_{when}"] for r in per_seed)

        worst = min(per_seed, key=lambda r: r["test_accuracy_after"])
        n_mapped = worst["test_coverage_after"] * worst["n_test"]
        z = (worst["target_after"] - worst["test_accuracy_after"]) / math.sqrt(
            worst["target_after"] * (1 - worst["target_after"]) / max(n_mapped, 1)
        )
        lines.append(
            f"The certified accuracy is a guarantee for data exchangeable with the calibration split: on the "
            f"spatially separate test split the mapped points of the all-region model fall below the target in "
            f"{below('after')} of {len(per_seed)} seeds with the gate, {below('before')} without; the lowest, "
            f"{worst['test_accuracy_after']:.1%} of {n_mapped:.0f} mapped points, is {z:.1f} binomial sd below "
            f"{worst['target_after']:.2f}, more than the noise of independent points: test points come in spatial "
            "blocks, which both adds noise and shifts them away from the calibration blocks."
        )
    cube = ext.get("Belgium whole cube")
    if cube:
        lines.append(
            f"The gate rejects {cube['rejected_by_gate']['mean']:.0%} of the Belgium demo cube (a region none of the "
            f"training data comes from), so {1 - cube['mapped_after']['mean']:.0%} of a demo map carries no class "
            f"(before the gate: {1 - cube['mapped_before']['mean']:.0%})."
        )
    return lines


def report_text(results: dict[str, Any]) -> str:
    parts = [
        "Leave-one-class-out (novel = every sample of the held-out class)",
        text_table(FOLD_HEADER, fold_rows(results, "loco")),
        "",
        "Leave-one-region-out (novel = every in-legend sample of the held-out region)",
        text_table(FOLD_HEADER, fold_rows(results, "loro")),
        "",
        "External sets (model trained on all 3 regions)",
        text_table(EXTERNAL_HEADER, external_rows(results)),
        "",
        *summary_lines(results),
        "",
        "Findings:",
        *("- " + line for line in findings(results)),
    ]
    return "\n".join(parts)


def report_markdown(results: dict[str, Any]) -> str:
    notes = "\n".join(f"- **{k}**: {v}" for k, v in LABELLING.items())
    return f"""# Open-set benchmark of the novelty gate

Written by `python -m benchmarks.open_set --json benchmarks/open_set_results.json --markdown benchmarks/OPEN_SET.md`
(see the module docstring for every definition); the raw per-seed numbers are in `open_set_results.json`.

- **AUROC**: of the gate's score (smallest Mahalanobis distance to a class mean), novel points against the
  in-distribution *test* split of the same model (0.5 = no separation, 1 = perfect).
- **mapped**: share of the points that get a class in a map. *Before*: calibrated top-1 >= the threshold certified on
  all calibration points, no gate. *After*: inside the gate and top-1 >= the threshold certified with the gate's
  rejections counted (the model's stored threshold).
- **test coverage / cost**: the same two rules on the model's own untouched test split; cost = before - after in
  percentage points. **test acc. of mapped**: accuracy of the mapped test points (the target is 0.80).
- **target**: the target each policy certifies (mean over seeds): 0.80, or the highest certifiable one below it
  where the calibration split cannot certify 0.80 (the model's `honest_target` rule, applied to both policies).

{chr(10).join("- " + line for line in summary_lines(results))}

## Findings

{chr(10).join("- " + line for line in findings(results))}

## Leave-one-class-out

Novel set = every sample of the held-out class (all regions); the model is trained on the other classes.

{markdown_table(FOLD_HEADER, fold_rows(results, "loco"))}

## Leave-one-region-out

Novel set = every in-legend sample of the held-out WorldCereal extraction; the model is trained on the other two.

{markdown_table(FOLD_HEADER, fold_rows(results, "loro"))}

## External sets

Against the model trained on all three regions. "AUROC vs rest of scene": against the other pixels of the same scene
(Slovenia: the other labelled classes; Belgium: the pixels outside the hand-labelled polygons), the harder and more
relevant question for a map. No AUROC for sets under {MIN_AUROC_POINTS} points.

{markdown_table(EXTERNAL_HEADER, external_rows(results))}

## How each evaluation set was labelled

{notes}

Which novelty score, and why this one: `benchmarks/NOVELTY_METHODS.md`.
"""


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _clean(o: Any) -> Any:
    """NaN and infinities as None, so the JSON is standard."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _unclean(o: Any) -> Any:
    """The inverse of :func:`_clean` (None back to NaN), for re-rendering a saved run."""
    if isinstance(o, dict):
        return {k: _unclean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_unclean(v) for v in o]
    return float("nan") if o is None else o


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="spatial split seeds (default 10)")
    parser.add_argument("--fold-seeds", type=int, default=None, help="seeds for LOCO/LORO (default: --seeds)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write a Markdown report here")
    parser.add_argument("--no-throughput", action="store_true", help="skip the gate/encoder throughput measurement")
    parser.add_argument("--from-json", type=Path, default=None, help="print/write the reports of a saved run only")
    args = parser.parse_args(argv)
    if args.from_json:
        results = _unclean(json.loads(args.from_json.read_text(encoding="utf-8")))
    else:
        results = run(
            args.seeds, args.fold_seeds, throughput=not args.no_throughput, log=lambda m: print(m, flush=True)
        )
    print()
    print(report_text(results))
    if args.json:
        args.json.write_text(json.dumps(_clean(results), indent=1, default=_json_default) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(report_markdown(results), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
