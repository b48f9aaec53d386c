"""The products a job can make, behind one interface: land cover (pixel head) and urban atlas (segmenter).

A :class:`Product` knows everything that differs between maps, so the orchestration never compares product names:

- **plan** (driver, once, before any block): load and check its model against the job, resolve legend, reason
  codes, dtype, the certified-confidence policy, metrics, novelty gate and caveats into a :class:`ProductPlan`;
- **posteriors** (worker, per block): calibrated class posteriors of the block's pixels and where the model's
  novelty gate rejects them;
- **finish** (driver, once all blocks are done): the final class and confidence planes, the masking report and any
  extra outputs (the urban atlas sieves across block borders and writes polygons).

The data flow of one pixel is the same for every product; only these hooks differ. Products are listed in
:data:`PRODUCTS` in the order their maps are made and reported.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import suelo.models
from suelo.atomic import file_sha256
from suelo.errors import ConfigError, InputError
from suelo.grid import Grid
from suelo.ingest.scene import Scene
from suelo.legend import Legend
from suelo.reasons import ReasonCodes
from suelo.settings import ConfidenceSpec, JobSpec, LandcoverSpec, UrbanAtlasSpec
from suelo.threshold import ThresholdPolicy

MODELS = Path(suelo.models.__file__).resolve().parent  # the shipped models, in a checkout and a wheel alike


@dataclass(frozen=True)
class ProductPlan:
    """One product of a run, resolved by the driver before any block runs (picklable: it travels to workers)."""

    product: Product
    model_path: Path
    model_sha256: str
    legend: Legend
    reasons: ReasonCodes
    dtype: str
    policy: ThresholdPolicy
    policy_report: dict[str, Any]
    metrics: dict[str, Any]
    novelty: dict[str, Any] = field(default_factory=dict)  # the model's novelty gate (suelo.novelty meta)
    caveats: tuple[str, ...] = ()  # what the report must say first about this product (e.g. fewer months)
    encoder_inputs: tuple[str, ...] = ("s2",)  # the Presto inputs its model reads from the cube (its contract)
    # the model card's attribution summary (suelo.explain on its calibration split) for the run report's heatmaps,
    # or {"missing": why there is none}
    attribution: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.product.name

    def model(self) -> Any:
        """The product's model, loaded once per process (the checksum makes a changed file a new entry)."""
        return _cached_model(self.product, str(self.model_path), self.model_sha256)


@dataclass(frozen=True)
class FinishedProduct:
    """What a product hands the map writer once every block is done."""

    codes: Any  # (y, x) class and reason codes: numpy or a lazy dask mosaic
    confidence: Any  # (y, x) uint8 confidence percent, 255 where none
    report: dict[str, Any]  # the masking report (suelo.threshold)
    extra_files: tuple[Path, ...] = ()
    tags: dict[str, Any] = field(default_factory=dict)  # added to the map's provenance tags


Mosaic = Callable[[int], Any]  # band number (1 class codes, 2 confidence, 3 predicted class) -> lazy (y, x) mosaic


@dataclass(frozen=True)
class Product(ABC):
    """What a product is: its name (the ``products.<name>`` key, output folder and manifest name) and its hooks.

    Frozen dataclasses without fields: two copies compare and hash equal, so a worker's model cache keeps one model
    however many pickled plans reach it."""

    name: ClassVar[str]
    band_description: ClassVar[str]  # the class map's band description
    default_model: ClassVar[Path]
    # whether a block computes a raster of Presto embeddings for this product (shared by all products of the block);
    # without it a product encodes a few rows at a time itself
    needs_embeddings: ClassVar[bool] = False

    def settings(self, job: JobSpec) -> LandcoverSpec | UrbanAtlasSpec:
        spec: LandcoverSpec | UrbanAtlasSpec = getattr(job.products, self.name)
        return spec

    def halo(self, job: JobSpec) -> int:
        """Pixels of context around a block this product needs."""
        return 0

    def model_path(self, job: JobSpec, inputs: Sequence[str] = ("s2",)) -> Path:
        """The job's model file, else the shipped one for the Presto ``inputs`` the job's cube will hold."""
        return Path(self.settings(job).model or self.shipped_model(inputs))

    def shipped_model(self, inputs: Sequence[str]) -> Path:
        return self.default_model

    @abstractmethod
    def plan(self, job: JobSpec, scenes: Sequence[Scene], inputs: Sequence[str] = ("s2",)) -> ProductPlan:
        """Load and check the model against the job (its bands, months, levels and the Presto ``inputs`` its cube
        will hold: ``s2`` and any of ``s1``, ``terrain``, ``weather``), naming the model file in every error."""

    @abstractmethod
    def load_model(self, path: Path) -> Any:
        """The model file, loaded (the result is cached per process by :meth:`ProductPlan.model`)."""

    @abstractmethod
    def posteriors(
        self, plan: ProductPlan, job: JobSpec, cube: Any, embeddings: Any, crop: tuple[slice, slice]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated posteriors (class, y, x) of the block's inner pixels (``crop`` of ``cube``, which carries the
        halo), and where the model's novelty gate rejects them (y, x): outside the model's training data."""

    def finish(
        self, plan: ProductPlan, job: JobSpec, grid: Grid, mosaic: Mosaic, block_counts: Sequence[dict[str, Any]],
        folder: Path,
    ) -> FinishedProduct:  # fmt: skip
        """The final planes from the block rasters: as the blocks made them, the report from their counts."""
        from suelo.threshold import merge_counts, report_from_counts

        report = report_from_counts(merge_counts(block_counts), np.asarray(plan.legend.codes), list(plan.legend.names))
        return FinishedProduct(mosaic(1), mosaic(2).astype("uint8"), report)


@functools.lru_cache(maxsize=8)
def _cached_model(product: Product, path: str, sha256: str) -> Any:
    del sha256
    return product.load_model(Path(path))


def certifiable(
    path: Path, meta: dict[str, Any], report: dict[str, Any], spec: ConfidenceSpec, key: str
) -> tuple[str, ...]:
    """Stop before any work when the target cannot be certified, unless the job accepts an empty map: then the
    report's caveat that says why the map is all 'unclassified'."""
    from suelo.threshold import certification_problem

    problem = certification_problem(meta, report, spec.delta)
    if problem and not spec.accept_empty_map:
        raise ConfigError(
            f"{path}: {problem}; set products.{key}.target_accuracy to a certifiable value, or "
            f"products.{key}.accept_empty_map: true to map nothing"
        )
    if problem:
        return (f"{key}: the target cannot be certified ({problem}); the job accepts an empty map, so every imaged "
                "pixel is 'unclassified (low confidence)'",)  # fmt: skip
    return ()


def fewer_months_caveats(name: str, trained: int, job: JobSpec, card: dict[str, Any] | None) -> tuple[str, ...]:
    """The report's caveat when a job runs a model on fewer months than it was trained on (allowed by the job)."""
    from suelo.composite import month_starts
    from suelo.model_card import fewer_months_statement

    n_months = len(month_starts(job.period))
    if not trained or n_months >= trained:
        return ()
    return (
        f"{name}: the job has {n_months} months and the model was trained on {trained} (allow_fewer_months): its "
        f"calibration and certified accuracy were fitted on {trained}-month series and do not hold on {n_months}. "
        + fewer_months_statement(card, trained, n_months),
    )


def synthetic_training_caveats(name: str, path: Path, meta: dict[str, Any]) -> tuple[str, ...]:
    """What the report says first when a model learnt from synthetic data (its provenance says so): its map shows
    the product's format, masking and units on real imagery, not a validated map of the area."""
    data = str((meta.get("provenance") or {}).get("data", ""))
    if "synthetic" not in data.lower():
        return ()
    return (
        f"{name}: the model {path.name} was trained on synthetic data ({data}); its map shows the product's format, "
        "masking and minimum mapping units on this imagery, not a validated map of the area, and its accuracy "
        "figures are those of a synthetic held-out scene",
    )


def masked_inputs_caveats(
    name: str, contract: dict[str, Any], inputs: Sequence[str], card: dict[str, Any] | None
) -> tuple[str, ...]:
    """The report's caveat when a model runs with inputs it was trained with masked (``mask_missing_inputs``), with
    what the model card measured masking Sentinel-1 to cost."""
    from suelo.models.artifact import INPUT_NAMES, contract_inputs

    missing = [i for i in contract_inputs(contract) if i not in inputs]
    if not missing:
        return ()
    measured = ""
    masking = ((card or {}).get("inputs") or {}).get("masking") or {}
    s1 = masking.get("all, s1 masked")  # benchmarks/inputs.py: the all-input procedure, Sentinel-1 masked
    if "s1" in missing and isinstance(s1, dict) and "macro_f1" in s1:
        f1, change = s1["macro_f1"], s1.get("macro_f1_vs_all", {})
        measured = (
            f" Its model card measured this procedure at macro F1 {f1['mean']:.3f} +- {f1['sd']:.3f} with "
            f"Sentinel-1 masked ({change.get('mean', float('nan')):+.3f} against all inputs, over "
            f"{f1.get('n_seeds', '?')} spatial seeds; benchmarks/INPUTS.md)."
        )
    names = ", ".join(INPUT_NAMES[i] for i in missing)
    return (
        f"{name}: the model was trained with {names}, which this job lacks (mask_missing_inputs): the encoder sees "
        f"them masked, and the model's calibration and certified accuracy, fitted with them, do not hold.{measured}",
    )


# -- land cover: Presto embeddings -> pixel head ----------------------------------------------------------------------


@dataclass(frozen=True)
class LandCover(Product):
    name: ClassVar[str] = "landcover"
    band_description: ClassVar[str] = "land cover class"
    default_model: ClassVar[Path] = MODELS / "landcover_default.pt"
    # The shipped models by the inputs they need, the most informed first: with Sentinel-1 and a DEM a job gets the
    # model trained with them (benchmarks/INPUTS.md: +0.056 macro F1 over Sentinel-2 alone, better in 10 of 10
    # spatial seeds; weather did not help and is left out), else the Sentinel-2 one: never a model that would have to
    # run with inputs masked.
    shipped: ClassVar[tuple[tuple[tuple[str, ...], Path], ...]] = (
        (("s2", "s1", "terrain"), MODELS / "landcover_radar.pt"),
        (("s2",), MODELS / "landcover_default.pt"),
    )

    def shipped_model(self, inputs: Sequence[str]) -> Path:
        return next(path for needs, path in self.shipped if set(needs) <= set(inputs))

    def plan(self, job: JobSpec, scenes: Sequence[Scene], inputs: Sequence[str] = ("s2",)) -> ProductPlan:
        from suelo.composite import month_starts
        from suelo.models.artifact import check_artifact_for_job, contract_inputs, load_artifact
        from suelo.reasons import reasons_for
        from suelo.threshold import policy_for_model
        from suelo.write import map_dtype, map_legend

        spec = job.products.landcover
        path = self.model_path(job, inputs)
        artifact = load_artifact(path)
        # everything a block would find out about the model, found here, once, naming the model file
        check_artifact_for_job(
            artifact, job.ingest.bands, len(month_starts(job.period)), [s.level for s in scenes], path,
            spec.allow_fewer_months, inputs=inputs, mask_missing_inputs=spec.mask_missing_inputs,
        )  # fmt: skip
        legend = artifact.legend
        reasons = reasons_for(legend)
        try:
            map_legend(legend, reasons)
        except ValueError as exc:
            raise InputError(path, f"model legend: {exc}") from exc
        policy, report = policy_for_model(
            artifact.meta, spec.target_accuracy, spec.delta, spec.threshold, spec.score, spec.per_class,
            spec.min_clear_observations,
        )  # fmt: skip
        uncertified = certifiable(path, artifact.meta, report, spec, self.name)
        metrics: dict[str, Any] = {}
        if artifact.meta.get("model_card"):
            from suelo.model_card import card_summary

            # the seed-averaged figures first: the single calibration split below says little on its own
            metrics["model_card"] = card_summary(artifact.meta["model_card"])
        metrics |= dict(artifact.meta.get("metrics", {}))
        caveats = fewer_months_caveats(
            self.name, int(artifact.contract["months"]), job, artifact.meta.get("model_card")
        ) + masked_inputs_caveats(self.name, artifact.contract, inputs, artifact.meta.get("model_card"))
        caveats += uncertified
        return ProductPlan(
            self, path, file_sha256(path), legend, reasons, map_dtype(legend, reasons), policy, report, metrics,
            artifact.meta["novelty"], caveats, contract_inputs(artifact.contract),
            attribution=dict((artifact.meta.get("model_card") or {}).get("attribution") or {
                "missing": "its model card was made before suelo explain (models/train_default.py "
                "--card-sections-only adds it; suelo explain MODEL SAMPLES gives the same figures)"
            }),
        )  # fmt: skip

    def load_model(self, path: Path) -> Any:
        from suelo.models.artifact import load_artifact

        return load_artifact(path)

    def posteriors(
        self, plan: ProductPlan, job: JobSpec, cube: Any, embeddings: Any, crop: tuple[slice, slice]
    ) -> tuple[np.ndarray, np.ndarray]:
        from suelo.models.inference import fast_for_precision
        from suelo.predict import predict_cube

        inner_cube = cube.isel(y=crop[0], x=crop[1])
        prediction = predict_cube(
            plan.model(), inner_cube, job.compute.batch_size, job.compute.device, "block cube",
            None if embeddings is None else embeddings.isel(y=crop[0], x=crop[1]),
            fast_for_precision(job.compute.precision), allow_fewer_months=job.products.landcover.allow_fewer_months,
            mask_missing_inputs=job.products.landcover.mask_missing_inputs,
        )  # fmt: skip
        return prediction["posterior"].values, prediction["outside_training"].values


# -- urban atlas: cube summaries + embeddings -> U-Net segmenter ------------------------------------------------------


@dataclass(frozen=True)
class UrbanAtlas(Product):
    name: ClassVar[str] = "urban_atlas"
    band_description: ClassVar[str] = "Urban Atlas 2018 class"
    default_model: ClassVar[Path] = MODELS / "segmenter_default.pt"
    needs_embeddings: ClassVar[bool] = True

    def halo(self, job: JobSpec) -> int:
        return job.products.urban_atlas.overlap  # the segmenter's spatial context across block borders

    def plan(self, job: JobSpec, scenes: Sequence[Scene], inputs: Sequence[str] = ("s2",)) -> ProductPlan:
        from suelo.models.artifact import load_segmenter
        from suelo.models.segmenter import DEFAULT_BANDS as SEGMENTER_BANDS
        from suelo.threshold import policy_for_model
        from suelo.urban_atlas import UA_REASONS, urban_atlas_legend

        spec = job.products.urban_atlas
        path = self.model_path(job)
        _model, meta = load_segmenter(path)
        if not isinstance(meta.get("legend_codes"), list) or not meta["legend_codes"]:
            raise InputError(path, "segmenter file has no legend_codes")
        bands = meta.get("bands", list(SEGMENTER_BANDS))
        missing = sorted(set(bands) - set(job.ingest.bands))
        if missing:
            raise ConfigError(
                f"{path}: the segmenter needs bands {missing} that ingest.bands lacks; add them or use a segmenter "
                "trained without them"
            )
        check_segmenter_for_job(meta, job, [s.level for s in scenes], path)
        full = urban_atlas_legend()
        try:
            legend = Legend(tuple(full.by_code(int(c)) for c in meta["legend_codes"]))
        except (KeyError, TypeError, ValueError) as exc:
            codes = meta["legend_codes"]
            raise InputError(path, f"segmenter legend_codes {codes!r} are not Urban Atlas codes") from exc
        meta.setdefault("legend", [{"code": int(c)} for c in meta["legend_codes"]])
        policy, report = policy_for_model(
            meta, spec.target_accuracy, spec.delta, spec.threshold, None, False, spec.min_clear_observations
        )
        uncertified = certifiable(path, meta, report, spec, self.name)
        metrics = dict(meta.get("metrics", {}).get("summary", {}))
        metrics["calibration"] = meta.get("metrics", {}).get("calibration")
        caveats = fewer_months_caveats(self.name, int(meta.get("months") or 0), job, meta.get("model_card"))
        caveats += synthetic_training_caveats(self.name, path, meta) + uncertified
        return ProductPlan(
            self, path, file_sha256(path), legend, UA_REASONS, "uint16", policy, report, metrics,
            meta.get("novelty", {}), caveats,
            attribution={"missing": "suelo explain attributes the logits of a Presto pixel head; this segmenter (a "
                         "CNN over embeddings and band summaries of a neighbourhood) is not explained yet"},
        )  # fmt: skip

    def load_model(self, path: Path) -> Any:
        from suelo.models.artifact import load_segmenter

        return load_segmenter(path)

    def posteriors(
        self, plan: ProductPlan, job: JobSpec, cube: Any, embeddings: Any, crop: tuple[slice, slice]
    ) -> tuple[np.ndarray, np.ndarray]:
        from suelo.calibrate import Calibration
        from suelo.models.segmenter import DEFAULT_BANDS as SEGMENTER_BANDS
        from suelo.segment import segment_cube, segment_outside_training

        model, meta = plan.model()
        spec = job.products.urban_atlas
        bands = meta.get("bands", list(SEGMENTER_BANDS))
        posteriors = segment_cube(
            model, cube, embeddings, np.asarray(plan.legend.codes), bands, window=spec.window, overlap=spec.overlap,
            calibration=Calibration.from_dict(meta.get("calibration", {})), device=job.compute.device,
        )  # fmt: skip
        values = posteriors.values if hasattr(posteriors, "values") else np.asarray(posteriors)
        # the gate scores each pixel's own input vector (no spatial context), so the inner pixels suffice
        inner = cube.isel(y=crop[0], x=crop[1])
        inner_embeddings = None if embeddings is None else embeddings.isel(y=crop[0], x=crop[1])
        outside = segment_outside_training(meta["gate"], inner, inner_embeddings, bands)
        return values[:, crop[0], crop[1]], outside

    def finish(
        self, plan: ProductPlan, job: JobSpec, grid: Grid, mosaic: Mosaic, block_counts: Sequence[dict[str, Any]],
        folder: Path,
    ) -> FinishedProduct:  # fmt: skip
        """The minimum mapping unit sieve and the polygons, over the whole mosaic: patches cross block borders."""
        from suelo.threshold import masking_report
        from suelo.urban_atlas import sieve, urban_atlas_vector

        spec = job.products.urban_atlas
        class_codes = np.asarray(plan.legend.codes)
        # uint16 + uint8 per pixel in memory: a full Sentinel-2 tile is about 360 MB
        codes = mosaic(1).compute()
        confidence = mosaic(2).astype("uint8").compute()
        predicted = mosaic(3).compute()
        clean_confidence = np.where(confidence == 255, 0, confidence)
        if spec.minimum_mapping_unit:
            # patches that stay below the MMU (islands among unclassified pixels) are not mapped either
            codes = sieve(codes, clean_confidence, class_codes, grid.resolution, unresolved=plan.reasons.low_confidence)
        report = masking_report(codes, predicted, class_codes, list(plan.legend.names), plan.reasons)
        vectors = folder / f"{job.name}.gpkg"
        urban_atlas_vector(
            codes, clean_confidence / 100.0, grid, class_codes, path=vectors, crs=spec.vector_crs, sieve_first=False
        )
        return FinishedProduct(codes, confidence, report, (vectors,), {"MMU": spec.minimum_mapping_unit})


def check_segmenter_for_job(meta: dict[str, Any], job: JobSpec, levels: Sequence[str], path: Path) -> None:
    """The segmenter's months and product level against the job's, as the land-cover model's contract is checked
    (segmenter files record ``months`` and ``product_level``; one without them is checked on its bands only)."""
    from suelo.composite import month_starts
    from suelo.models.artifact import NORMALIZATION, contract_problems

    months, level = meta.get("months"), meta.get("product_level")
    if months is None or level is None:
        return
    n_months = len(month_starts(job.period))
    allow = job.products.urban_atlas.allow_fewer_months
    contract = {"bands": [], "months": int(months), "normalization": NORMALIZATION, "product_level": level}
    problems = contract_problems(contract, job.ingest.bands, n_months, True, levels, allow, "products.urban_atlas")
    if problems:
        raise InputError(path, "segmenter does not fit this job (" + "; ".join(problems) + ")")


PRODUCTS: tuple[Product, ...] = (LandCover(), UrbanAtlas())  # in the order maps are made and reported


def enabled_products(job: JobSpec) -> list[Product]:
    return [product for product in PRODUCTS if product.settings(job).enabled]
