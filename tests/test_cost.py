"""A run's cost (suelo.cost): the arithmetic exactly, the meter on real work, the job spec's cost section."""

from __future__ import annotations

import time

import pytest
from affine import Affine
from pyproj import Geod
from rasterio.crs import CRS

from suelo.cost import CostMeter, RunCost, grid_area_km2
from suelo.grid import Grid
from suelo.settings import CostSpec


def test_per_km2_and_per_million_pixels() -> None:
    cost = RunCost(10.0, 20.0, 0.0, 100.0, 2.0, "estimated: test", True, 0.5, 250.0, "job spec")
    out = cost.to_dict(area_km2=4.0, pixels=2_000_000)
    assert out["per_km2"] == {"energy_kwh": 0.5, "co2e_kg": 0.125, "wall_s": 2.5, "cpu_s": 5.0}
    assert out["per_million_pixels"] == {"energy_kwh": 1.0, "co2e_kg": 0.25, "wall_s": 5.0, "cpu_s": 10.0}
    assert "per_km2" not in cost.to_dict()


def test_grid_area() -> None:
    utm = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5600000), 300, 200)
    assert grid_area_km2(utm) == pytest.approx(6.0)
    degrees = Grid(CRS.from_epsg(4326), Affine(0.01, 0, 4.0, 0, -0.01, 51.0), 100, 100)
    expected, _ = Geod(ellps="WGS84").polygon_area_perimeter([4, 5, 5, 4], [50, 50, 51, 51])
    assert grid_area_km2(degrees) == pytest.approx(abs(expected) / 1e6)


def test_meter_on_real_work() -> None:
    meter = CostMeter(carbon_intensity_g_per_kwh=300.0, measure_power_secs=1).start()
    started = time.perf_counter()
    while time.perf_counter() - started < 1.5:
        sum(range(10_000))
    early = meter.snapshot()
    final = meter.stop()
    assert final is meter.stop()  # idempotent
    assert 0 < early.wall_s <= final.wall_s and 0 < early.cpu_s <= final.cpu_s
    assert final.energy_kwh > 0 and final.co2e_kg == pytest.approx(final.energy_kwh * 0.3)
    assert final.intensity_source == "job spec" and final.gpu_s == 0.0
    # what was measured and what was modelled is named; a model is marked as an estimate
    assert final.energy_method.startswith(("estimated: codecarbon", "measured: codecarbon"))
    assert final.energy_estimated == final.energy_method.startswith("estimated")


def test_cost_spec() -> None:
    assert CostSpec().carbon_intensity_g_per_kwh is None
    assert CostSpec(carbon_intensity_g_per_kwh=120, country_iso_code="BEL").country_iso_code == "BEL"
    for bad in ({"carbon_intensity_g_per_kwh": 0}, {"country_iso_code": "be"}):
        with pytest.raises(ValueError):
            CostSpec(**bad)
