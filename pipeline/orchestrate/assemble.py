"""The final products, once every block is done: mosaics of the block rasters -> each product's finish (the urban
atlas sieves across block borders) -> map sets (COG + styles + STAC) -> run report; and the whole-region cube from
the blocks' composites (the inputs were decoded once, by the blocks)."""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suelo.orchestrate.block import read_block_raster
from suelo.orchestrate.plan import BLOCKS, CUBE_BLOCKS, Block, RunPlan
from suelo.products import ProductPlan

if TYPE_CHECKING:
    from suelo.cost import CostMeter

# Above this share of the imaged pixels rejected by a model's novelty gate (4x the 5% the gate rejects of data like
# the training data), the run report and run.json warn that the model's certified accuracy does not transfer here.
NOVELTY_WARNING_PCT = 20.0
CUBE_FILE = Path("cube") / "cube.nc"


def _rows(plan: RunPlan) -> list[list[Block]]:
    return [list(row) for _, row in itertools.groupby(plan.blocks(), key=lambda block: block.row)]


def mosaic(plan: RunPlan, folder: str, band: int, dtype: str) -> Any:
    """A lazy (dask) mosaic of one band of the block rasters, chunked by block."""
    import dask
    import dask.array as da

    out_dir = Path(plan.job.output.dir)

    def read(block: Block) -> Any:
        path = out_dir / BLOCKS / folder / f"{block.block_id}.tif"
        return da.from_delayed(dask.delayed(read_block_raster)(path, band), (block.height, block.width), dtype)

    return da.block([[read(block) for block in row] for row in _rows(plan)])


def _product_band(plan: RunPlan, name: str, dtype: str, band: int) -> Any:
    return mosaic(plan, name, band, dtype)


def assemble(
    plan: RunPlan,
    entries: Sequence[dict[str, Any]],
    cost: CostMeter | None = None,
    prediction: dict[str, Any] | None = None,
) -> tuple[dict[str, list[Path]], Path | None, list[Path]]:
    """Final map sets (COG + styles + STAC) of every product from the block rasters, then the run report (with the
    run's cost until it is written, from ``cost``, the run's meter, beside ``prediction``: what suelo estimate
    predicted, :func:`suelo.cost.read_prediction`)."""
    import dask

    from suelo.report import write_run_report
    from suelo.threshold import outside_training_pct
    from suelo.write import write_map_set

    job = plan.job
    out_dir = Path(job.output.dir)
    n_clear = mosaic(plan, "nclear", 1, "uint16")
    scenes = plan.scenes
    inputs = [s.link() for s in scenes]
    products: dict[str, list[Path]] = {}
    map_sets, masking, metrics = [], {}, {}
    assessments: dict[str, dict[str, Any]] = {}
    warnings: list[str] = list(input_caveats(scenes))
    with dask.config.set(scheduler="synchronous"):
        for product in plan.products:
            warnings.extend(product.caveats)
            folder = out_dir / product.name
            bands = functools.partial(_product_band, plan, product.name, product.dtype)
            counts = [e["counts"][product.name] for e in entries]
            finished = product.product.finish(product, job, plan.grid, bands, counts, folder)
            tags = {
                "MODEL": product.model_path.name,
                "MODEL_SHA256": product.model_sha256,
                "THRESHOLDS": product.policy.to_dict(),
                "INPUT_PRODUCTS": [s.scene_id for s in scenes],
                "RADIOMETRY": sorted({json.dumps(s.radiometry.to_dict(), sort_keys=True) for s in scenes}),
                "REASON_CODES": product.reasons.to_dict(),
                "NOVELTY_GATE": product.novelty,
                **finished.tags,
            }  # fmt: skip
            report = finished.report
            report["outside_training_pct_by_block"] = {
                e["block"]: outside_training_pct(e["counts"][product.name]) for e in entries
            }
            report["outside_training_warning_pct"] = NOVELTY_WARNING_PCT
            if report["outside_training_pct_of_imaged"] > NOVELTY_WARNING_PCT:
                over = sum(v > NOVELTY_WARNING_PCT for v in report["outside_training_pct_by_block"].values())
                warnings.append(
                    f"{product.name}: the model's novelty gate found {report['outside_training_pct_of_imaged']:.1f}% "
                    f"of the imaged pixels unlike its training data (in {over} of {len(entries)} blocks more than "
                    f"{NOVELTY_WARNING_PCT:g}%; {product.novelty.get('rejection_rate', 0.05):.0%} is expected on data "
                    "like the training data): this region is unlike the data the model was trained and certified on, "
                    "so its certified accuracy does not transfer here. Those pixels are mapped as 'outside the "
                    "training data'; the mapped ones are the ones that resemble the training data."
                )
            map_set = write_map_set(
                folder, job.name, finished.codes, plan.grid, product.legend, (job.period.start, job.period.end),
                reasons=product.reasons, confidence=finished.confidence, n_clear=n_clear, tags=tags, inputs=inputs,
                description=product.product.band_description,
                extra_assets={("vectors" if p.suffix == ".gpkg" else p.stem): p for p in finished.extra_files},
            )  # fmt: skip
            map_sets.append(map_set)
            masking[f"{product.name}/{map_set.name}"] = report
            metrics[product.name] = {"model": product.metrics, "thresholds": product.policy_report}
            products[product.name] = list(map_set.files)  # the GeoPackage is one of its assets
            spec = product.product.settings(job).assessment
            if spec is not None:
                assessment, files_written = assess_product(map_set.classes.path, spec, out_dir / "report", product)
                assessments[product.name] = assessment
                products[product.name] += files_written
                warnings.extend(f"{product.name} assessment: {w}" for w in assessment["warnings"])
    from suelo.stac_out import write_stac_collection

    collection = write_stac_collection(
        out_dir / "collection.json", [m.item for m in map_sets], title=f"suelo run {job.name}",
        description=f"Maps of the suelo job {job.name}, {job.period.start} to {job.period.end}: "
        + ", ".join(p.name for p in plan.products),
        collection_id=job.name,
    )  # fmt: skip
    in_map_sets = {f for m in map_sets for f in m.files}
    outputs = [f for paths in products.values() for f in paths if f not in in_map_sets]
    if plan.writes_cube:
        outputs.append(out_dir / CUBE_FILE)
    outputs.append(collection)
    cost_so_far = None
    if cost is not None:
        from suelo.cost import grid_area_km2, predicted_vs_actual

        cost_so_far = cost.snapshot().to_dict(grid_area_km2(plan.grid), plan.grid.width * plan.grid.height)
        if (compared := predicted_vs_actual(prediction, cost_so_far)) is not None:
            cost_so_far["predicted"] = compared
    written = write_run_report(
        out_dir / "report", map_sets, masking, metrics, job.model_dump(mode="json"), warnings=warnings,
        assessments=assessments, header=report_header(plan, masking), outputs=outputs, cost=cost_so_far,
        attributions={p.name: p.attribution for p in plan.products},
    )  # fmt: skip
    report_path = written.get("html") or next(iter(written.values()), None)
    files = [f for paths in products.values() for f in paths] + [Path(p) for p in written.values()] + [collection]
    for product in plan.products:
        products[product.name].sort()
    return products, report_path, files


def input_caveats(scenes: Sequence[Any]) -> tuple[str, ...]:
    """What the report says first about the inputs themselves: L1C (top-of-atmosphere) scenes."""
    l1c = [s for s in scenes if s.level == "L1C"]
    if not l1c:
        return ()
    return (
        f"{len(l1c)} of {len(scenes)} inputs are L1C (top-of-atmosphere reflectance, no atmospheric correction): "
        "the maps are only as good as the models' training on L1C; surface reflectance (L2A) is the usual input",
    )


def report_header(plan: RunPlan, masking: dict[str, Any]) -> dict[str, Any]:
    """What the run report's first table says: the job, where, the period, when, the inputs, and per product its
    model, target and certified accuracy and the share of the imaged area it maps."""
    import datetime as dt

    from suelo.stac_out import footprint

    job, grid = plan.job, plan.grid
    _geometry, bbox = footprint(grid)
    size = grid.transform.a
    unit = "deg" if grid.crs.is_geographic else "m"
    levels = sorted({s.level for s in plan.scenes})
    auxiliary = [name for name in plan.auxiliary.inputs if name != "s2"]
    products: dict[str, dict[str, Any]] = {}
    for product in plan.products:
        certified = product.policy_report.get("global") or {}
        mask: dict[str, Any] = next((m for label, m in masking.items() if label.startswith(f"{product.name}/")), {})
        products[product.name] = {
            "model": product.model_path.name, "model_sha256": product.model_sha256,
            "target_accuracy": certified.get("target_accuracy"),
            "certified_lower_bound": certified.get("accuracy_lower_bound"),
            "calibration_coverage": certified.get("coverage"),
            "mapped_pct": None if "masked_pct_of_imaged" not in mask else 100.0 - mask["masked_pct_of_imaged"],
        }  # fmt: skip
    return {
        "job": job.name,
        "where": f"{grid.crs.to_string()}, {size:g} {unit} pixels, {grid.width} x {grid.height} px; lon/lat bbox "
        + ", ".join(f"{v:.4f}" for v in bbox),
        "period": {"start": str(job.period.start), "end": str(job.period.end)},
        "run_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": f"{len(plan.scenes)} Sentinel-2 products ({', '.join(levels)})"
        + (f"; with {', '.join(auxiliary)}" if auxiliary else ""),
        "pixel_area_m2": None if grid.crs.is_geographic else abs(grid.transform.a * grid.transform.e),
        "products": products,
    }


def assess_product(
    map_path: Path, spec: Any, report_dir: Path, product: ProductPlan
) -> tuple[dict[str, Any], list[Path]]:
    """The stratified accuracy and area assessment of a product's map from the job's labelled sample, written to
    ``report/assessment_<product>/``; the map's certified accuracy is set beside the estimate."""
    from suelo.assess.analyze import assess, write_assessment
    from suelo.legend import load_legend

    legend = load_legend(spec.legend) if spec.legend is not None else None
    assessment, dropped = assess(map_path, spec.sample, spec.reference_column, spec.strata, legend, spec.fpc)
    certified = (product.policy_report.get("global") or {}).get("target_accuracy")
    oa = assessment["overall_accuracy"]
    if certified is not None and oa["ci95"] is not None:
        assessment["certified_accuracy"] = certified
        if oa["ci95"][1] < certified:
            assessment["warnings"].append(
                f"the map's certified accuracy {certified:.2f} lies above the 95% interval of its estimated accuracy "
                f"({oa['ci95'][0]:.3f}-{oa['ci95'][1]:.3f}): the certificate does not hold on this map"
            )
    files = write_assessment(report_dir / f"assessment_{product.name}", assessment, dropped)
    return assessment, files


def cube_is_current(path: Path, digest: str) -> bool:
    """``path`` is a finished cube made from these inputs (the job digest it stores)."""
    import xarray as xr

    try:
        with xr.open_dataset(path, engine="netcdf4") as existing:
            return bool(existing.attrs.get("job_digest") == digest)
    except (OSError, ValueError):
        return False


def assemble_cube(plan: RunPlan, workers: int) -> Path:
    """The whole-region monthly cube (NetCDF, packed as :func:`suelo.composite.write_cube` packs it) from the
    blocks' composites, streamed chunk by chunk: the same values as a cube composited from the inputs again."""
    import dask
    import xarray as xr

    from suelo.composite import open_cube, write_cube
    from suelo.grid import SPATIAL_REF, attach_grid

    out_dir = Path(plan.job.output.dir)
    path = out_dir / CUBE_FILE
    folder = out_dir / BLOCKS / CUBE_BLOCKS
    parts = [[open_cube(folder / f"{b.block_id}.nc").drop_vars(SPATIAL_REF) for b in row] for row in _rows(plan)]
    try:
        cube = xr.combine_nested(parts, concat_dim=["y", "x"], combine_attrs="override")
        for variable in cube.variables.values():
            variable.encoding = {}  # the blocks' file encodings; write_cube sets the cube's own
        cube = attach_grid(cube, plan.grid)
        cube.attrs["job_digest"] = plan.cube_digest
        with dask.config.set(scheduler="threads", num_workers=workers):
            write_cube(cube, path)
    finally:
        for part in itertools.chain.from_iterable(parts):
            part.close()
    return path
