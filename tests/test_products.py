"""The products behind one interface (suelo.products): what each resolves for a job, and that nothing above them
tells products apart by name."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from suelo.ingest import discover_scenes, job_grid
from suelo.products import PRODUCTS, LandCover, Product, UrbanAtlas, enabled_products
from suelo.settings import ProductsSpec, load_job
from tests.fixtures.paths import DEMO_JOB, REPO_ROOT


def test_every_product_of_the_job_spec_has_one_product_and_no_more() -> None:
    assert [p.name for p in PRODUCTS] == list(ProductsSpec.model_fields)  # the order maps are made and reported
    assert all(isinstance(p, Product) for p in PRODUCTS)


def test_copies_of_a_product_are_one_key_for_the_worker_model_cache() -> None:
    """Dask pickles the plan for every block: the copies must hit one cached model, not load one each."""
    copy = pickle.loads(pickle.dumps(UrbanAtlas()))
    assert copy == UrbanAtlas() and hash(copy) == hash(UrbanAtlas())
    assert LandCover() != UrbanAtlas()


def test_the_demo_products_resolve_their_models_legends_and_context() -> None:
    job = load_job(DEMO_JOB)
    scenes = discover_scenes(job)
    assert job_grid(job, scenes).height > 0
    chosen = enabled_products(job)
    assert [p.name for p in chosen] == ["landcover", "urban_atlas"]
    landcover, urban = (product.plan(job, scenes) for product in chosen)
    assert landcover.dtype == "uint8" and urban.dtype == "uint16"
    assert landcover.model_path == LandCover.default_model and urban.model_path == UrbanAtlas.default_model
    assert landcover.reasons.outside_training == 252 and urban.reasons.outside_training == 65533
    assert landcover.legend.codes and all(code // 10000 in (1, 2, 3, 4, 5) for code in urban.legend.codes)
    assert LandCover().halo(job) == 0 and UrbanAtlas().halo(job) == job.products.urban_atlas.overlap == 64
    assert not LandCover.needs_embeddings and UrbanAtlas.needs_embeddings
    assert pickle.loads(pickle.dumps(urban)).model_sha256 == urban.model_sha256


def test_a_product_switched_off_is_not_planned() -> None:
    job = load_job(DEMO_JOB)
    products = job.products.model_copy(
        update={"urban_atlas": job.products.urban_atlas.model_copy(update={"enabled": False})}
    )
    assert [p.name for p in enabled_products(job.model_copy(update={"products": products}))] == ["landcover"]


@pytest.mark.parametrize("module", sorted((REPO_ROOT / "pipeline" / "orchestrate").glob("*.py")), ids=lambda p: p.name)
def test_orchestration_never_compares_product_names(module: Path) -> None:
    """What differs between products lives in suelo.products; the orchestration only calls its hooks."""
    source = module.read_text(encoding="utf-8")
    assert not re.search(r"[\"'](landcover|urban_atlas)[\"']", source), module.name


def test_a_job_with_radar_and_a_dem_gets_the_model_trained_with_them() -> None:
    from suelo.models.artifact import contract_inputs, load_artifact

    landcover = LandCover()
    job = load_job(DEMO_JOB)
    radar = landcover.model_path(job, ("s2", "s1", "terrain", "weather"))
    assert radar.name == "landcover_radar.pt"
    assert contract_inputs(load_artifact(radar).contract) == ("s2", "s1", "terrain")
    assert landcover.model_path(job, ("s2", "s1")).name == "landcover_default.pt"  # no DEM: never masked
    assert landcover.model_path(job, ("s2",)) == LandCover.default_model
    chosen = job.model_copy(update={"products": job.products.model_copy(update={
        "landcover": job.products.landcover.model_copy(update={"model": LandCover.default_model})})})  # fmt: skip
    assert landcover.model_path(chosen, ("s2", "s1", "terrain")) == LandCover.default_model  # the job's choice
