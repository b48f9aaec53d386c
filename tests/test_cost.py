"""A run's cost (suelo.cost): the per-km2 / per-Mpx arithmetic and the grid area exactly, the meter on a real busy
loop, the ``cost:`` job spec section (in no digest), and run.json / the run report of a real run."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from affine import Affine
from rasterio.crs import CRS

from suelo.cost import (
    WORLD,
    CostMeter,
    RunCost,
    codecarbon_countries,
    grid_area_km2,
    predicted_vs_actual,
    read_prediction,
)
from suelo.errors import ConfigError
from suelo.grid import Grid
from suelo.jobs import job_digest
from suelo.settings import validate_job
from tests.fixtures import generate_region, region_job, suelo

FIELDS = {f.name for f in dataclasses.fields(RunCost)}
BASE = {"inputs": [{"kind": "stac", "paths": ["x.json"]}], "period": {"start": "2021-01-01", "end": "2021-12-31"}}


def run_cost(**changes: Any) -> RunCost:
    values: dict[str, Any] = {
        "wall_s": 10.0, "cpu_s": 16.0, "gpu_s": 0.0, "peak_rss_mb": 512.0, "peak_gpu_mb": None,
        "energy_kwh": 0.002, "cpu_kwh": 0.0015, "gpu_kwh": 0.0, "ram_kwh": 0.0005, "energy_method": "estimated: test",
        "energy_estimated": True, "co2e_kg": 0.0005, "carbon_intensity_g_per_kwh": 250.0,
        "intensity_source": "job spec",
    }  # fmt: skip
    values.update(changes)
    return RunCost(**values)


def busy(seconds: float) -> int:
    """Keep one core busy for ``seconds`` (a real CPU load for the meter)."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


# --- RunCost and the grid area ------------------------------------------------------------------------------------
def test_to_dict_per_km2_and_per_million_pixels_exactly() -> None:
    cost = run_cost()
    out = cost.to_dict(area_km2=4.0, pixels=2_000_000)
    assert set(out) >= FIELDS and out["energy_method"] == "estimated: test" and out["peak_gpu_mb"] is None
    assert (out["area_km2"], out["pixels"]) == (4.0, 2_000_000)
    assert out["per_km2"] == {"energy_kwh": 0.0005, "co2e_kg": 0.000125, "wall_s": 2.5, "cpu_s": 4.0}
    assert out["per_million_pixels"] == {"energy_kwh": 0.001, "co2e_kg": 0.00025, "wall_s": 5.0, "cpu_s": 8.0}
    bare = cost.to_dict()
    assert set(bare) == FIELDS and "per_km2" not in bare and "per_million_pixels" not in bare
    assert "per_km2" not in cost.to_dict(area_km2=None, pixels=100) and "per_million_pixels" not in cost.to_dict(4.0, 0)
    assert json.loads(json.dumps(out)) == out  # JSON numbers, nothing else


def test_grid_area_on_a_utm_grid_is_pixels_times_pixel_area() -> None:
    grid = Grid(CRS.from_epsg(32631), Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5600000.0), 300, 200)
    assert grid_area_km2(grid) == 6.0  # 300 x 200 px of 100 m2
    feet = Grid(CRS.from_epsg(2263), Affine(100.0, 0.0, 980000.0, 0.0, -100.0, 200000.0), 10, 10)  # US survey ft
    assert grid_area_km2(feet) == pytest.approx(100 * (100 * 1200 / 3937) ** 2 / 1e6, rel=1e-12)


def test_grid_area_on_a_geographic_grid_is_the_ellipsoidal_area() -> None:
    grid = Grid(CRS.from_epsg(4326), Affine(0.01, 0.0, 5.0, 0.0, -0.01, 51.0), 100, 200)  # 2 x 1 degrees
    # the area of a lon/lat quadrangle on the WGS 84 ellipsoid, in closed form (authalic latitude)
    a, f = 6378137.0, 1 / 298.257223563
    e = math.sqrt(f * (2 - f))
    b = a * (1 - f)

    def q(lat: float) -> float:
        s = math.sin(math.radians(lat))
        return s / (1 - e**2 * s**2) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)

    exact = b**2 * math.radians(2.0) / 2 * (q(51.0) - q(50.0)) / 1e6
    assert grid_area_km2(grid) == pytest.approx(exact, rel=1e-6)
    import pyproj

    corners = pyproj.Geod(ellps="WGS84").polygon_area_perimeter([5, 7, 7, 5], [50, 50, 51, 51])[0] / 1e6
    assert abs(corners) == pytest.approx(exact, rel=1e-3)  # the corners alone: geodesic edges, not parallels


# --- the meter --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def metered() -> tuple[RunCost, RunCost, RunCost, CostMeter]:
    meter = CostMeter(carbon_intensity_g_per_kwh=300.0, measure_power_secs=1.0).start()
    busy(1.5)
    first = meter.snapshot()
    busy(1.0)
    final = meter.stop()
    return first, final, meter.stop(), meter


def test_meter_measures_a_busy_loop(metered: tuple[RunCost, RunCost, RunCost, CostMeter]) -> None:
    first, final, _again, _meter = metered
    for cost in (first, final):
        assert cost.wall_s > 0 and cost.cpu_s > 0 and cost.energy_kwh > 0 and cost.peak_rss_mb > 0
        assert cost.energy_kwh == pytest.approx(cost.cpu_kwh + cost.gpu_kwh + cost.ram_kwh, rel=1e-9)
        assert cost.gpu_s >= 0 and cost.intensity_source == "job spec"
        assert cost.co2e_kg == cost.energy_kwh * 300.0 / 1000  # the job's intensity, exactly
    assert final.cpu_s >= 2.0  # 2.5 s of a busy loop (and codecarbon's start)
    # RAM is always codecarbon's model, so the energy is an estimate on every machine (the method says which parts)
    assert final.energy_estimated and "codecarbon RAM model" in final.energy_method
    if not Path("/sys/class/powercap/intel-rapl").exists():  # no RAPL counters: the CPU is the model too
        assert final.energy_method.startswith("estimated: codecarbon cpu_load model (TDP ")
        assert "measured" not in final.energy_method


def test_meter_snapshot_then_stop_is_monotone_and_stop_is_idempotent(
    metered: tuple[RunCost, RunCost, RunCost, CostMeter],
) -> None:
    first, final, again, meter = metered
    for field in ("wall_s", "cpu_s", "energy_kwh", "cpu_kwh", "ram_kwh", "co2e_kg", "peak_rss_mb"):
        assert getattr(final, field) >= getattr(first, field), field
    assert final.wall_s - first.wall_s >= 1.0
    assert again is final and meter.snapshot() is final


def test_meter_with_the_country_grid_mix() -> None:
    with CostMeter(country_iso_code="BEL", measure_power_secs=1.0) as meter:
        busy(0.3)
        cost = meter.snapshot()
    assert cost.intensity_source == "codecarbon Belgium (BEL) grid mix"
    assert 10 < cost.carbon_intensity_g_per_kwh < 1000
    assert cost.co2e_kg == pytest.approx(cost.energy_kwh * cost.carbon_intensity_g_per_kwh / 1000, rel=1e-9)
    world = CostMeter(country_iso_code=WORLD).start().stop()
    assert world.intensity_source == "codecarbon world average"
    assert world.carbon_intensity_g_per_kwh == pytest.approx(475.0)  # codecarbon's world average (IEA)


def test_a_meter_that_cannot_measure_keeps_the_run_going(caplog: pytest.LogCaptureFixture) -> None:
    def refused() -> None:  # what codecarbon raises is its own; any exception must do
        raise OSError("no access")

    meter = CostMeter(country_iso_code=WORLD)
    meter._start_tracker = refused  # type: ignore[method-assign]
    meter.start()
    busy(0.1)
    cost = meter.stop()
    assert cost.energy_method == "not measured: codecarbon did not start (OSError: no access)"
    assert (cost.energy_kwh, cost.co2e_kg, cost.energy_estimated) == (0.0, 0.0, True) and cost.wall_s > 0
    assert not cost.measured and cost.cpu_s > 0
    warnings = [r for r in caplog.records if r.name == "suelo.cost"]
    assert len(warnings) == 1 and "not measured" in warnings[0].getMessage()
    assert CostMeter().stop().energy_method == "not measured: the meter was not started"


# --- the job spec --------------------------------------------------------------------------------------------------
def test_cost_section_is_parsed_and_checked() -> None:
    job = validate_job({**BASE, "cost": {"carbon_intensity_g_per_kwh": 123.5, "country_iso_code": "bel"}})
    assert (job.cost.carbon_intensity_g_per_kwh, job.cost.country_iso_code) == (123.5, "BEL")
    default = validate_job(BASE).cost
    assert (default.carbon_intensity_g_per_kwh, default.country_iso_code) == (None, WORLD)
    assert "BEL" in codecarbon_countries() and WORLD not in codecarbon_countries()


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        ({"carbon_intensity_g_per_kwh": 0}, "cost.carbon_intensity_g_per_kwh: Input should be greater than 0"),
        ({"carbon_intensity_g_per_kwh": -50}, "cost.carbon_intensity_g_per_kwh: Input should be greater than 0"),
        ({"country_iso_code": "XYZ"}, "cost.country_iso_code: Value error, codecarbon has no grid mix for 'XYZ'"),
        ({"country_iso_code": "BE"}, "cost.country_iso_code: String should match pattern"),
        ({"carbon_intensity": 100}, "cost.carbon_intensity: Extra inputs are not permitted"),
    ],
)
def test_bad_cost_settings_are_one_clear_error(cost: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_job({**BASE, "cost": cost}, "job.yaml")
    assert str(caught.value).startswith("job.yaml: invalid job spec: ") and message in str(caught.value)


def test_the_cost_section_is_in_no_digest() -> None:
    """The cube's digest here; the plan's and the final outputs' digests by a re-run with another intensity that
    stays up to date (test_another_carbon_intensity_redoes_nothing)."""
    plain = validate_job(BASE)
    priced = validate_job({**BASE, "cost": {"carbon_intensity_g_per_kwh": 42.0, "country_iso_code": "FRA"}})
    assert job_digest(plain, ["a", "b"]) == job_digest(priced, ["a", "b"])


# --- predicted against measured -----------------------------------------------------------------------------------
COMPUTE = {"device": None, "scheduler": "synchronous", "workers": None, "threads_per_worker": 1, "precision": "auto"}


def estimate_file(folder: Path, **changes: Any) -> Path:
    estimate = {
        "plan_digest": "abc", "estimated_at": "2026-12-02T10:00:00+00:00", "compute": dict(COMPUTE),
        "predicted": {"seconds": 20.0, "energy_kwh": 0.004, "workers": 1}, "energy_estimated": True,
    }  # fmt: skip
    estimate.update(changes)
    path = folder / "estimate.json"
    path.write_text(json.dumps(estimate))
    return path


def test_prediction_of_this_plan_beside_the_measured(tmp_path: Path) -> None:
    prediction = read_prediction(estimate_file(tmp_path), "abc", COMPUTE)
    assert prediction == {
        "compared": True, "file": "estimate.json", "estimated_at": "2026-12-02T10:00:00+00:00", "workers": 1,
        "seconds": 20.0, "energy_kwh": 0.004, "energy_estimated": True,
    }  # fmt: skip
    compared = predicted_vs_actual(prediction, run_cost().to_dict(1.0, 100))
    assert compared is not None
    assert compared["measured_seconds"] == 10.0 and compared["measured_energy_kwh"] == 0.002
    assert compared["time_ratio"] == 0.5 and compared["energy_ratio"] == 0.5  # measured / predicted
    unmeasured = run_cost(energy_kwh=0.0, energy_method="not measured: no tracker").to_dict(1.0, 100)
    compared = predicted_vs_actual(prediction, unmeasured)
    assert compared is not None and compared["measured_energy_kwh"] is None and compared["energy_ratio"] is None


def test_no_prediction_or_another_plans_is_said(tmp_path: Path) -> None:
    assert read_prediction(tmp_path / "estimate.json", "abc", COMPUTE) is None
    other = read_prediction(estimate_file(tmp_path), "another digest", COMPUTE)
    assert other is not None and other["compared"] is False and "another plan" in other["why"]
    assert predicted_vs_actual(other, run_cost().to_dict(1.0, 100)) == other  # nothing compared
    (tmp_path / "estimate.json").write_text("{not json")
    broken = read_prediction(tmp_path / "estimate.json", "abc", COMPUTE)
    assert broken == {"compared": False, "why": "estimate.json cannot be read (JSONDecodeError)"}


def test_a_prediction_for_other_compute_settings_carries_a_caveat(tmp_path: Path) -> None:
    path = estimate_file(tmp_path, compute=COMPUTE | {"workers": 4, "scheduler": "local"})
    prediction = read_prediction(path, "abc", COMPUTE)
    assert prediction is not None and prediction["compared"] is True
    assert prediction["caveat"] == (
        "estimated with other compute settings (scheduler 'local' then, 'synchronous' now; workers 4 then, None now)"
    )


# --- a real run ----------------------------------------------------------------------------------------------------
SIZE = 32  # one block of 32 x 32 px of 10 m: 0.1024 km2


def job_file(folder: Path, items: Path, intensity: float) -> Path:
    return region_job(
        folder, items, "cost", block_size=SIZE, compute={"scheduler": "synchronous"},
        cost={"carbon_intensity_g_per_kwh": intensity},
    )  # fmt: skip


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], str]:
    folder = tmp_path_factory.mktemp("cost_run")
    items = generate_region(folder / "scenes", SIZE, months=12, scenes_per_month=1, seed=5)
    done = suelo("run", job_file(folder, items, 250.0), "--log-format", "json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return folder, events, done.stdout + done.stderr


def test_run_json_records_the_cost(cost_run: tuple[Path, list[dict[str, Any]], str]) -> None:
    folder, _events, _output = cost_run
    run = json.loads((folder / "out" / "run.json").read_text())
    cost = run["cost"]
    assert set(cost) >= FIELDS
    grid = Grid.from_dict(run["grid"])
    assert (grid.width, grid.height) == (SIZE, SIZE)
    assert cost["area_km2"] == grid_area_km2(grid) == pytest.approx(SIZE * SIZE * 100 / 1e6, rel=1e-12)
    assert cost["pixels"] == SIZE * SIZE
    for key in ("energy_kwh", "co2e_kg", "wall_s", "cpu_s"):
        assert cost["per_km2"][key] == cost[key] / cost["area_km2"]
        assert cost["per_million_pixels"][key] == cost[key] / (SIZE * SIZE / 1e6)
    assert cost["co2e_kg"] == cost["energy_kwh"] * 250.0 / 1000 and cost["intensity_source"] == "job spec"
    assert cost["wall_s"] >= run["stats"]["run_seconds"] > 0 and cost["cpu_s"] > 0 and cost["energy_kwh"] > 0
    assert cost["energy_estimated"] is True and "codecarbon RAM model" in cost["energy_method"]
    assert cost["gpu_s"] == 0.0 or cost["gpu_s"] > 0  # a number either way (0 on a machine without a GPU)
    assert run["job"]["cost"] == {"carbon_intensity_g_per_kwh": 250.0, "country_iso_code": WORLD}


def test_report_shows_the_cost_until_it_was_written(cost_run: tuple[Path, list[dict[str, Any]], str]) -> None:
    folder, events, output = cost_run
    final = json.loads((folder / "out" / "run.json").read_text())["cost"]
    report = json.loads((folder / "out" / "report" / "report.json").read_text())
    cost = report["cost"]
    assert set(cost) >= FIELDS and cost["area_km2"] == final["area_km2"] and cost["pixels"] == SIZE * SIZE
    assert 0 < cost["wall_s"] <= final["wall_s"] and 0 < cost["energy_kwh"] <= final["energy_kwh"]
    page = (folder / "out" / "report" / "report.html").read_text()
    assert '<section class="cost"><h2>Cost</h2>' in page and "<strong>estimated</strong>" in page
    assert "run.json</code> (<code>cost</code>) has the final figures" in page and "(job spec)" in page
    assert "<th>Cost</th>" in page  # the header line
    assert "No prediction to compare: <code>suelo estimate JOB</code>" in page  # no estimate.json in the folder
    assert "predicted" not in final and report["cost"].get("predicted") is None
    done = [e for e in events if e["event"] == "run_done"]
    assert len(done) == 1 and 0 < done[0]["energy_kwh"] <= final["energy_kwh"]
    assert "codecarbon" not in output.replace("codecarbon RAM", "").replace("codecarbon cpu_load", "")


def test_another_carbon_intensity_redoes_nothing(cost_run: tuple[Path, list[dict[str, Any]], str]) -> None:
    folder, _events, _output = cost_run
    run_json = folder / "out" / "run.json"
    before = (run_json.stat().st_mtime_ns, run_json.read_bytes())
    items = folder / "scenes" / "items.json"
    assert items.exists()
    again = suelo("run", job_file(folder, items, 500.0), "--log-format", "json")
    assert again.returncode == 0, again.stderr
    events = [json.loads(line)["event"] for line in again.stderr.splitlines() if line.startswith("{")]
    assert "up_to_date" in events and "block_done" not in events
    # an up-to-date run keeps its run.json, whose cost stays the one of the run that made the outputs
    assert (run_json.stat().st_mtime_ns, run_json.read_bytes()) == before
