"""Presto's other inputs (Sentinel-1, terrain, weather): WorldCereal decoding, training with them, the contract."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from suelo.errors import ConfigError, InputError
from suelo.evaluate import rf_features
from suelo.legend import load_legend
from suelo.models.artifact import (
    check_contract,
    contract_inputs,
    contract_problems,
    cube_inputs,
    input_contract,
    job_inputs,
    load_artifact,
    save_artifact,
)
from suelo.samples import (
    Samples,
    days_in_month,
    load_worldcereal,
    precip_dn_to_m,
    s1_dn_to_db,
    step_days,
    tmean_dn_to_kelvin,
)
from suelo.train import TrainConfig, train_model
from tests.fixtures import BANDS, tiny_cube
from tests.test_train import synthetic

CROPS = 1100000000  # temporary_crops in LANDCOVER10


# -- decoding WorldCereal's uint16 encodings ------------------------------------------------------------------------


def test_s1_dn_is_20_log10_minus_83_db() -> None:
    db = s1_dn_to_db(np.array([2000, 1, 4076, 65535, 0]))
    assert db[0] == pytest.approx(20 * math.log10(2000) - 83)  # -16.979 dB
    assert db[1] == pytest.approx(-83.0)  # the encoding's floor
    assert db[2] == pytest.approx(-10.796, abs=1e-3)  # the Corsica file's median VV: a typical field
    assert np.isnan(db[3:]).all()  # 65535 = no data; 0 is not an encoding (openeo-gfmap clips to 1..65534)


def test_temperature_is_kelvin_x100_and_zero_is_missing() -> None:
    k = tmean_dn_to_kelvin(np.array([28746, 0, 65535]))
    assert k[0] == pytest.approx(287.46) and np.isnan(k[1:]).all()


def test_precipitation_sum_becomes_m_per_day_by_the_days_of_the_step() -> None:
    assert precip_dn_to_m(np.array([3100]))[0] == pytest.approx(0.031)  # 31 mm over the step
    assert list(days_in_month(np.array([(2022 - 1970) * 12 + 0, (2022 - 1970) * 12 + 1, (2024 - 1970) * 12 + 1]))) == [
        31, 28, 29,
    ]  # fmt: skip
    dekads = pd.Series(pd.to_datetime(["2022-01-01", "2022-01-11", "2022-01-21", "2022-02-21"]))
    assert list(step_days(dekads, dekadal=True)) == [10, 10, 11, 8]


def _long(timestamps: list[str], **columns: list[float]) -> pd.DataFrame:
    n = len(timestamps)
    data = {"sample_id": ["a"] * n, "timestamp": pd.to_datetime(timestamps), "ewoc_code": [CROPS] * n,
            "lat": [45.0] * n, "lon": [5.0] * n, "valid_time": ["2022-06-01"] * n}  # fmt: skip
    data |= {f"S2-L2A-{b}": [1000] * n for b in BANDS}
    return pd.DataFrame(data | columns)


def test_long_monthly_file_decodes_s1_weather_and_terrain(tmp_path: Path) -> None:
    months = [str(m.date()) for m in pd.date_range("2021-12-01", "2022-11-01", freq="MS")]
    precip = [3100.0, 2800.0] + [65535.0] * 10  # Dec 2021 and Jan 2022 (31 days each), then no data
    df = _long(
        months,
        **{"S1-SIGMA0-VV": [2000.0] * 11 + [65535.0], "S1-SIGMA0-VH": [1000.0] * 12,
           "AGERA5-TMEAN": [28746.0] * 11 + [0.0], "AGERA5-PRECIP": precip,
           "elevation": [140.0] * 12, "slope": [5.0] * 12},
    )  # fmt: skip
    path = tmp_path / "month.geoparquet"
    df.to_parquet(path)
    s = load_worldcereal(path)
    assert s.inputs == ("s2", "s1", "terrain", "weather") and s.start_month[0] == 11
    assert s.s1 is not None and s.era5 is not None and s.srtm is not None
    np.testing.assert_allclose(s.s1[0, 0], [20 * math.log10(2000) - 83, 20 * math.log10(1000) - 83], rtol=1e-6)
    assert np.isnan(s.s1[0, 11, 0]) and np.isfinite(s.s1[0, 11, 1])
    np.testing.assert_allclose(s.era5[0, :11, 0], 287.46, rtol=1e-6)
    assert np.isnan(s.era5[0, 11, 0])  # TMEAN 0 = the files' fill
    assert s.era5[0, 0, 1] == pytest.approx(0.031 / 31)  # December: 31 mm over 31 days = 1 mm/day
    assert s.era5[0, 1, 1] == pytest.approx(0.028 / 31)  # January has 31 days too
    np.testing.assert_allclose(s.srtm[0], [140.0, 5.0])


def test_february_precipitation_divides_by_28_days(tmp_path: Path) -> None:
    months = [str(m.date()) for m in pd.date_range("2021-12-01", "2022-11-01", freq="MS")]
    df = _long(months, **{"AGERA5-TMEAN": [28000.0] * 12, "AGERA5-PRECIP": [2800.0] * 12})
    path = tmp_path / "month.geoparquet"
    df.to_parquet(path)
    s = load_worldcereal(path)
    assert s.s1 is None and s.srtm is None and s.inputs == ("s2", "weather")
    assert s.era5 is not None
    assert s.era5[0, 2, 1] == pytest.approx(0.001)  # February 2022: 28 mm / 28 days
    assert s.era5[0, 0, 1] == pytest.approx(0.028 / 31)  # December: 31 days


def test_dekads_sum_precipitation_and_average_s1_in_linear_power(tmp_path: Path) -> None:
    months = pd.date_range("2021-12-01", "2022-11-01", freq="MS")
    dekads = [str((m + pd.Timedelta(days=d)).date()) for m in months for d in (0, 10, 20)]
    n = len(dekads)
    # each month: 10 mm, 10 mm and 11 mm (the third dekad of a 31-day month has 11 days); one missing dekad in Feb
    precip = [1000.0, 1000.0, 1100.0] * 12
    precip[7] = 65535.0  # 2022-02-11
    vv = [2000.0, 65535.0, 4000.0] * 12
    df = _long(dekads, **{"AGERA5-TMEAN": [28000.0] * n, "AGERA5-PRECIP": precip, "S1-SIGMA0-VV": vv,
                          "S1-SIGMA0-VH": vv})  # fmt: skip
    path = tmp_path / "dekad.geoparquet"
    df.to_parquet(path)
    s = load_worldcereal(path)
    assert s.era5 is not None and s.s1 is not None
    assert s.era5[0, 0, 1] == pytest.approx(0.031 / 31)  # December: 31 mm / 31 days
    assert s.era5[0, 2, 1] == pytest.approx((0.010 + 0.011) / (10 + 8))  # February: the two valid dekads' days
    db = [20 * math.log10(v) - 83 for v in (2000, 4000)]
    expected = 10 * math.log10(np.mean([10 ** (d / 10) for d in db]))  # mean in power, not in dB
    assert s.s1[0, 0, 0] == pytest.approx(expected, abs=1e-4)


def test_wide_file_reads_sar_meteo_and_dem_columns(tmp_path: Path) -> None:
    data: dict[str, list] = {"sample_id": ["w1"], "ewoc_code": [CROPS], "lat": [4.0], "lon": [33.0],
                             "start_date": ["2016-12-01"]}  # fmt: skip
    for band in BANDS:
        res = "10m" if band in ("B02", "B03", "B04", "B08") else "20m"
        data |= {f"OPTICAL-{band}-ts{t}-{res}": [1000] for t in range(12)}
    data |= {f"SAR-VV-ts{t}-20m": [2000] for t in range(12)} | {f"SAR-VH-ts{t}-20m": [1000] for t in range(12)}
    data |= {f"METEO-temperature_mean-ts{t}-100m": [29853] for t in range(12)}
    data |= {f"METEO-precipitation_flux-ts{t}-100m": [2800] for t in range(12)}
    data |= {"DEM-alt-20m": [1159], "DEM-slo-20m": [2]}
    path = tmp_path / "wide.parquet"
    pd.DataFrame(data).to_parquet(path)
    s = load_worldcereal(path)
    assert s.s1 is not None and s.era5 is not None and s.srtm is not None
    assert s.s1[0, 0, 0] == pytest.approx(20 * math.log10(2000) - 83)
    assert s.era5[0, 0, 0] == pytest.approx(298.53)
    assert s.era5[0, 2, 1] == pytest.approx(0.001)  # ts2 = February 2017: 28 mm / 28 days
    assert s.era5[0, 0, 1] == pytest.approx(0.028 / 31)  # ts0 = December 2016
    np.testing.assert_allclose(s.srtm[0], [1159.0, 2.0])


def test_subset_and_concat_carry_the_inputs() -> None:
    a = synthetic(4)
    b = Samples(a.reflectance, a.band_names, a.start_month, a.latlons, a.labels, np.array(["x", "y", "z", "w"]),
                s1=np.full((4, 12, 2), -10.0, np.float32))  # fmt: skip
    both = Samples.concat([a, b])
    assert both.inputs == ("s2", "s1") and both.s1 is not None
    assert np.isnan(both.s1[:4]).all() and (both.s1[4:] == -10).all()  # the part without S1: masked
    assert both.subset([5]).s1 is not None and both.subset([5]).s1.shape == (1, 12, 2)
    assert rf_features(both, inputs=("s2", "s1")).shape == (8, 12 * 9 + 12 * 2)
    assert rf_features(both).shape == (8, 12 * 9)


# -- training with them and the contract ----------------------------------------------------------------------------


def with_s1(samples: Samples) -> Samples:
    """Trees bright in radar (-8 dB), water dark (-22 dB): S1 alone separates them."""
    vv = np.where((samples.labels == 5)[:, None], -8.0, -22.0) * np.ones((1, samples.n_months))
    s1 = np.stack([vv, vv - 6], axis=-1).astype(np.float32)
    return Samples(samples.reflectance, samples.band_names, samples.start_month, samples.latlons, samples.labels,
                   samples.sample_ids, s1=s1)  # fmt: skip


@pytest.fixture(scope="module")
def s1_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = TrainConfig(max_epochs=20, patience=5, block_m=20_000, inputs=("s2", "s1"))
    result = train_model(with_s1(synthetic()), load_legend(), config)
    path = tmp_path_factory.mktemp("model") / "s1.pt"
    save_artifact(result.artifact, path)
    return path


def test_training_with_s1_records_it_in_the_contract(s1_model: Path) -> None:
    art = load_artifact(s1_model)
    assert art.contract["inputs"] == ["s2", "s1"] and contract_inputs(art.contract) == ("s2", "s1")
    assert "dB" in art.contract["input_units"]["s1"]
    assert art.meta["training"]["config"]["inputs"] == ["s2", "s1"]
    assert art.meta["training"]["input_coverage"] == {"s1": 1.0}
    assert "+ s1" in art.meta["metrics"]["random_forest_validation"]["model"]  # the RandomForest got S1 too


def test_a_cube_without_s1_is_refused_unless_masking_is_allowed(s1_model: Path) -> None:
    art = load_artifact(s1_model)
    cube = tiny_cube()
    with pytest.raises(InputError, match=r"trained with Sentinel-1 \(s1\) which this cube/job lacks; add a "
                       r"sentinel1 input or set products.landcover.mask_missing_inputs: true"):  # fmt: skip
        check_contract(art, cube)
    check_contract(art, cube, mask_missing_inputs=True)
    radar = cube.assign(s1=(("time", "y", "x"), np.zeros((12, cube.sizes["y"], cube.sizes["x"]), np.float32)))
    assert cube_inputs(radar) == ("s2", "s1")
    check_contract(art, radar)  # the cube offers S1


def test_contract_problems_takes_the_inputs_a_job_offers() -> None:
    contract = input_contract(list(BANDS), 12, None, inputs=("s2", "weather", "s1"))
    assert contract["inputs"] == ["s2", "s1", "weather"]  # canonical order
    problems = contract_problems(contract, BANDS, 12, True, ["L2A"])
    assert len(problems) == 2 and "Sentinel-1 (s1)" in problems[0] and "add a weather input" in problems[1]
    assert contract_problems(contract, BANDS, 12, True, ["L2A"], mask_missing_inputs=True) == []
    offered = job_inputs(["stac", "sentinel1", "weather"])
    assert offered == ("s2", "s1", "weather")
    assert contract_problems(contract, BANDS, 12, True, ["L2A"], inputs=offered) == []
    legacy = {k: v for k, v in contract.items() if k not in ("inputs", "input_units")}
    assert contract_inputs(legacy) == ("s2",) and contract_problems(legacy, BANDS, 12, True, ["L2A"]) == []


def test_inputs_are_checked() -> None:
    with pytest.raises(ConfigError, match="must include s2"):
        TrainConfig(inputs=("s1",)).check()
    with pytest.raises(ConfigError, match="unknown inputs"):
        TrainConfig(inputs=("s2", "radar")).check()
    with pytest.raises(ConfigError, match=r"inputs \['terrain'\] were asked for but the samples carry none"):
        train_model(synthetic(40), load_legend(), TrainConfig(max_epochs=1, inputs=("s2", "terrain")))


def test_inputs_benchmark_smoke() -> None:
    """The whole benchmark on 3 input sets, 1 seed and 2 epochs (~7 s)."""
    from benchmarks import inputs as bench

    sets = [s for s in bench.SETS if s.name in ("s2", "s2+weather (m/month: WRONG unit)", "all")]
    results = bench.run(1, sets, max_epochs=2, log=lambda _m: None)
    assert set(results["sets"]) == {s.name for s in sets}
    assert results["sets"]["all"]["macro_f1_vs_s2"]["n_seeds"] == 1
    assert set(results["masking"]) == {"all, s1 masked", "all, only s2", "all, nothing masked"}
    assert "| all |" in bench.markdown(results)


def test_cli_train_inputs_on_a_real_worldcereal_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from suelo.cli import main
    from tests.fixtures import REPO_ROOT

    corsica = REPO_ROOT / "data" / "worldcereal" / "month_2022_FRA_LPIS_POLY_110.geoparquet"
    model = tmp_path / "m.pt"
    bad = CliRunner().invoke(main, ["train", str(corsica), "-o", str(model), "--inputs", "s1,terrain"])
    assert bad.exit_code == 2 and "must include s2" in bad.output
    args = ["train", str(corsica), "-o", str(model), "--inputs", "s2, s1", "--max-epochs", "3", "--patience", "0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "inputs: s2, s1 (99% of values present)" in result.output
    assert load_artifact(model).contract["inputs"] == ["s2", "s1"]


def test_predicting_reads_the_radar_of_the_cube(s1_model: Path) -> None:
    """The cube's s1 variable (time, polarization, y, x; suelo.ingest.auxiliary) reaches the encoder: radar that
    says "trees" and radar that says "water" give other posteriors for the same optical pixels."""
    from suelo.predict import predict_cube

    art = load_artifact(s1_model)
    cube = tiny_cube()
    shape = (cube.sizes["time"], 2, cube.sizes["y"], cube.sizes["x"])

    def with_radar(vv: float) -> Any:
        planes = np.empty(shape, np.float32)
        planes[:, 0], planes[:, 1] = vv, vv - 6
        return cube.assign_coords(polarization=["VV", "VH"]).assign(s1=(("time", "polarization", "y", "x"), planes))

    bright = predict_cube(art, with_radar(-8.0), device="cpu")["posterior"].values
    dark = predict_cube(art, with_radar(-22.0), device="cpu")["posterior"].values
    masked = predict_cube(art, cube, device="cpu", mask_missing_inputs=True)["posterior"].values
    assert not np.allclose(bright, dark) and not np.allclose(bright, masked)
    assert np.array_equal(bright, predict_cube(art, with_radar(-8.0), device="cpu")["posterior"].values)
