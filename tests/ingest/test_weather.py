"""Weather reader: ERA5 / AgERA5 NetCDF and monthly GeoTIFFs, units, calendars, missing months, 0..360 longitudes."""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cftime
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from suelo.errors import InputError
from suelo.grid import Grid
from suelo.ingest.weather import WeatherSource, discover_weather, geotiff_date, weather_on_grid
from suelo.settings import WeatherInput
from tests.fixtures import write_raster

# 5 km x 5 km of 100 m pixels at about 4.4°E 51.4°N (UTM 31N)
GRID = Grid(CRS.from_epsg(32631), Affine(100.0, 0.0, 600000.0, 0.0, -100.0, 5700000.0), 50, 50)
MONTHS = [dt.date(2021, 1, 1), dt.date(2021, 2, 1), dt.date(2021, 3, 1)]
Field = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (lat, lon, time index) -> values


def grid_lonlat(grid: Grid = GRID) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.meshgrid(grid.x_coords(), grid.y_coords())
    lon, lat = pyproj.Transformer.from_crs(grid.crs.to_wkt(), "EPSG:4326", always_xy=True).transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def temperature_field(lat: np.ndarray, lon: np.ndarray, i: int) -> np.ndarray:
    """Linear in latitude and longitude (bilinear resampling reproduces it exactly), one degree warmer a month."""
    return 280.0 + 2.0 * (lat - 51.0) + (lon - 4.0) + i


def netcdf(
    path: Path,
    times: list[dt.datetime],
    variables: dict[str, tuple[Field, str | None]],
    *,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
    calendar: str = "proleptic_gregorian",
    time_name: str = "valid_time",
    time_units: str = "seconds since 1970-01-01",
    coords: bool = True,
) -> Path:
    """An ERA5-like file: ``variables`` name -> (field, units attribute or None) on 0.25° lat/lon cells."""
    lat = np.arange(53.0, 48.99, -0.25) if lat is None else lat
    lon = np.arange(2.0, 7.01, 0.25) if lon is None else lon
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    data = {}
    for name, (field, units) in variables.items():
        values = np.stack([field(la, lo, i) for i in range(len(times))]).astype(np.float32)
        data[name] = (
            (time_name, "latitude", "longitude"),
            values,
            {"units": units, "long_name": name} if units else {"long_name": name},
        )
    stamps = [cftime.datetime(t.year, t.month, t.day, t.hour, calendar=calendar) for t in times]
    coordinates = {
        time_name: (time_name, cftime.date2num(stamps, time_units, calendar), {"units": time_units,
                                                                               "calendar": calendar}),
    }  # fmt: skip
    if coords:
        coordinates["latitude"] = ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude"})
        coordinates["longitude"] = ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude"})
    xr.Dataset(data, coords=coordinates).to_netcdf(path, engine="netcdf4")
    return path


def monthly(n: int = 3) -> list[dt.datetime]:
    return [dt.datetime(2021, 1 + i, 1) for i in range(n)]


def constant(value: float) -> Field:
    return lambda lat, lon, i: np.full(lat.shape, value)


def spec(*paths: Path, **options: Any) -> WeatherInput:
    return WeatherInput(paths=paths, **options)


def test_era5_monthly_means(tmp_path: Path) -> None:
    path = netcdf(tmp_path / "era5.nc", monthly(), {"t2m": (temperature_field, "K"), "tp": (constant(0.003), "m")})
    source = discover_weather(spec(path, precipitation_unit="m/day"))
    assert (source.temperature, source.precipitation) == ("t2m", "tp")
    assert (source.temperature_unit, source.precipitation_unit) == ("K", "m/day")
    assert source.months == tuple(MONTHS)
    out = weather_on_grid(source, GRID, MONTHS)
    assert out.shape == (3, 2, 50, 50) and out.dtype == np.float32
    lon, lat = grid_lonlat()
    for i in range(3):
        np.testing.assert_allclose(out[i, 0], temperature_field(lat, lon, i), atol=1e-4)
        np.testing.assert_allclose(out[i, 1], 0.003, rtol=1e-6)


def test_celsius_and_kelvin_give_the_same_kelvin(tmp_path: Path) -> None:
    kelvin = netcdf(tmp_path / "k.nc", monthly(), {"t2m": (temperature_field, "K"), "tp": (constant(1.0), "mm d-1")})
    celsius = netcdf(
        tmp_path / "c.nc",
        monthly(),
        {"t2m": (lambda la, lo, i: temperature_field(la, lo, i) - 273.15, "degC"), "tp": (constant(1.0), "mm/day")},
    )
    a = weather_on_grid(discover_weather(spec(kelvin)), GRID, MONTHS)
    b = weather_on_grid(discover_weather(spec(celsius)), GRID, MONTHS)
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a[:, 1], 0.001, rtol=1e-6)
    # undeclared units are taken from the spec; a declared unit the file contradicts is refused
    bare = netcdf(tmp_path / "bare.nc", monthly(), {"t2m": (temperature_field, None), "tp": (constant(1.0), None)})
    with pytest.raises(InputError, match="no units attribute; declare temperature_unit: K or degC") as info:
        discover_weather(spec(bare))
    assert info.value.path == str(bare.resolve())
    declared = discover_weather(spec(bare, temperature_unit="K", precipitation_unit="mm/day"))
    np.testing.assert_allclose(weather_on_grid(declared, GRID, MONTHS), a, atol=1e-4)
    with pytest.raises(InputError, match="states units 'K' but the job declares temperature_unit: degC"):
        discover_weather(spec(kelvin, temperature_unit="degC"))


def test_monthly_sums_in_mm_are_divided_by_the_days_of_the_month(tmp_path: Path) -> None:
    # January: 31 mm in 31 days, February 2021: 28 mm in 28 days, March: 62 mm in 31 days
    sums = {0: 31.0, 1: 28.0, 2: 62.0}
    path = netcdf(tmp_path / "sums.nc", monthly(), {"TMEAN": (constant(10.0), "degC"),
                                                     "PRECIP": (lambda la, lo, i: np.full(la.shape, sums[i]),
                                                                "mm month-1")})  # fmt: skip
    source = discover_weather(spec(path))
    assert source.precipitation_unit == "mm/month"
    out = weather_on_grid(source, GRID, MONTHS)
    assert (out[:2, 1] == np.float32(0.001)).all() and (out[2, 1] == np.float32(0.002)).all()
    assert (out[:, 0] == np.float32(283.15)).all()
    # a bare amount ("m", ERA5's tp) says no period: monthly data need it declared
    era5 = netcdf(tmp_path / "tp.nc", monthly(), {"t2m": (constant(280.0), "K"), "tp": (constant(0.1), "m")})
    with pytest.raises(InputError, match=r"do not say per day or per month; declare precipitation_unit: m/day"):
        discover_weather(spec(era5))
    as_sums = weather_on_grid(discover_weather(spec(era5, precipitation_unit="m/month")), GRID, MONTHS)
    np.testing.assert_allclose(as_sums[1, 1], 0.1 / 28, rtol=1e-6)
    with pytest.raises(InputError, match="states units 'm' but the job declares precipitation_unit: mm/day"):
        discover_weather(spec(era5, precipitation_unit="mm/day"))


def test_flux_in_kg_per_m2_per_s(tmp_path: Path) -> None:
    path = netcdf(tmp_path / "flux.nc", monthly(1), {"tas": (constant(280.0), "K"),
                                                     "pr": (constant(1 / 86400), "kg m**-2 s**-1")})  # fmt: skip
    source = discover_weather(spec(path))
    assert source.precipitation_unit == "kg m-2 s-1"
    out = weather_on_grid(source, GRID, MONTHS[:1])
    np.testing.assert_allclose(out[0, 1], 0.001, rtol=1e-6)  # 1 kg m-2 (1 mm) a day


def test_other_calendars_are_refused(tmp_path: Path) -> None:
    path = netcdf(tmp_path / "cmip.nc", monthly(), {"tas": (constant(280.0), "K"), "pr": (constant(0.0), "mm/day")},
                  calendar="noleap", time_name="time", time_units="days since 1850-01-01")  # fmt: skip
    with pytest.raises(InputError, match="'noleap' calendar") as info:
        discover_weather(spec(path))
    assert info.value.path == str(path.resolve())
    gregorian = netcdf(tmp_path / "greg.nc", monthly(), {"tas": (constant(280.0), "K"), "pr": (constant(0.0), "m/day")},
                       calendar="gregorian", time_name="time", time_units="days since 1850-01-01")  # fmt: skip
    assert discover_weather(spec(gregorian)).months == tuple(MONTHS)


def test_a_missing_month_is_nan(tmp_path: Path) -> None:
    path = netcdf(tmp_path / "era5.nc", monthly(2), {"t2m": (constant(280.0), "K"), "tp": (constant(0.002), "m d-1")})
    source = discover_weather(spec(path))
    out = weather_on_grid(source, GRID, [*MONTHS, dt.date(2020, 12, 1)])
    assert np.isfinite(out[:2]).all() and np.isnan(out[2:]).all()


def test_longitudes_0_to_360_and_latitudes_south_to_north(tmp_path: Path) -> None:
    """A global 1° file in ERA5's 0..360 longitudes and ascending latitudes, over a grid across Greenwich."""
    grid = Grid(CRS.from_epsg(32631), Affine(200.0, 0.0, 285000.0, 0.0, -200.0, 5710000.0), 50, 60)
    lon, lat = grid_lonlat(grid)
    assert lon.min() < 0 < lon.max()

    def wrapped(la: np.ndarray, lo: np.ndarray, i: int) -> np.ndarray:
        return temperature_field(la, ((lo + 180) % 360) - 180, i)

    east = netcdf(tmp_path / "east.nc", monthly(1), {"t2m": (wrapped, "K"), "tp": (constant(0.001), "m/day")},
                  lat=np.arange(-90.0, 90.1, 1.0), lon=np.arange(0.0, 360.0, 1.0))  # fmt: skip
    out = weather_on_grid(discover_weather(spec(east)), grid, MONTHS[:1])
    np.testing.assert_allclose(out[0, 0], temperature_field(lat, lon, 0), atol=1e-4)
    centred = netcdf(tmp_path / "centred.nc", monthly(1), {"t2m": (wrapped, "K"), "tp": (constant(0.001), "m/day")},
                     lat=np.arange(90.0, -90.1, -1.0), lon=np.arange(-180.0, 180.0, 1.0))  # fmt: skip
    np.testing.assert_allclose(weather_on_grid(discover_weather(spec(centred)), grid, MONTHS[:1]), out, atol=1e-5)


def test_agera5_daily_files_are_aggregated_to_months(tmp_path: Path) -> None:
    """One variable per file, daily: January complete (its mean), February only 10 days (missing: NaN)."""
    days = [dt.datetime(2021, 1, 1) + dt.timedelta(days=d) for d in range(41)]

    def by_day(base: float) -> Field:
        return lambda la, lo, i: np.full(la.shape, base + days[i].day)

    folder = tmp_path / "agera5"
    folder.mkdir()
    netcdf(folder / "temperature.nc", days, {"Temperature_Air_2m_Mean_24h": (by_day(270.0), "K")}, time_name="time",
           time_units="days since 1900-01-01")  # fmt: skip
    for i, day in enumerate(days):  # precipitation as AgERA5 ships it: one file per day (more than are kept open)
        netcdf(folder / f"Precipitation-Flux_C3S-glob-agric_AgERA5_{day:%Y%m%d}_final-v1.0.nc", [day],
               {"Precipitation_Flux": (lambda la, lo, _, i=i: by_day(0.0)(la, lo, i), "mm d-1")}, time_name="time",
               time_units="days since 1900-01-01")  # fmt: skip
    source = discover_weather(spec(folder))
    assert source.daily == (True, True) and source.months == (dt.date(2021, 1, 1),)
    out = weather_on_grid(source, GRID, MONTHS[:2])
    np.testing.assert_allclose(out[0, 0], 270 + 16, rtol=1e-7)  # mean of days 1..31
    np.testing.assert_allclose(out[0, 1], 0.016, rtol=1e-6)  # mean daily total, mm -> m
    assert np.isnan(out[1]).all()


def test_sub_daily_and_duplicated_steps_are_refused(tmp_path: Path) -> None:
    hours = [dt.datetime(2021, 1, 1, h) for h in range(3)]
    hourly = netcdf(tmp_path / "hourly.nc", hours, {"t2m": (constant(280.0), "K"), "tp": (constant(0.0), "m")})
    with pytest.raises(InputError, match="sub-daily"):
        discover_weather(spec(hourly))
    a = netcdf(tmp_path / "a.nc", monthly(), {"t2m": (constant(280.0), "K"), "tp": (constant(0.0), "m/day")})
    b = netcdf(tmp_path / "b.nc", monthly(1), {"t2m": (constant(280.0), "K"), "tp": (constant(0.0), "m/day")})
    with pytest.raises(InputError, match="2021-01-01 is given twice") as info:
        discover_weather(spec(a, b))
    assert "a.nc" in info.value.problem and info.value.path == str(b.resolve())


def test_monthly_geotiffs(tmp_path: Path) -> None:
    transform = Affine(0.1, 0.0, 3.0, 0.0, -0.1, 53.0)  # 0.1° cells, 3..6°E, 50..53°N
    for month, kelvin in ((1, 275.0), (2, 277.0)):
        values = np.stack([np.full((30, 30), kelvin), np.full((30, 30), 2.0 * month)]).astype(np.float32)
        name = tmp_path / "tif" / f"era5_2021-{month:02d}.tif"
        path = write_raster(name, values, crs="EPSG:4326", transform=transform, nodata=None,
                            descriptions=["temperature", "precipitation"])  # fmt: skip
        with rasterio.open(path, "r+") as dst:
            dst.units = ("K", "mm/day")
    source = discover_weather(spec(tmp_path / "tif"))
    assert (source.temperature, source.precipitation) == ("temperature", "precipitation")
    out = weather_on_grid(source, GRID, MONTHS)
    assert (out[0, 0] == 275).all() and (out[1, 0] == 277).all() and np.isnan(out[2]).all()
    np.testing.assert_allclose(out[0, 1], 0.002, rtol=1e-6)
    np.testing.assert_allclose(out[1, 1], 0.004, rtol=1e-6)

    bare = write_raster(tmp_path / "bare_2021-01.tif", np.zeros((1, 5, 5), np.float32), crs=None, nodata=None,
                        transform=Affine(1.0, 0.0, 0.0, 0.0, -1.0, 5.0), descriptions=["temperature"])  # fmt: skip
    with pytest.raises(InputError, match="no coordinate reference system") as info:
        discover_weather(spec(bare))
    assert info.value.path == str(bare.resolve())


def test_geotiff_dates() -> None:
    assert geotiff_date("x/era5_2021-03.tif", {}) == (2021, 3, 0)
    assert geotiff_date("agera5_20210315_final.tif", {}) == (2021, 3, 15)
    assert geotiff_date("t2m_202112.tif", {}) == (2021, 12, 0)
    assert geotiff_date("weather.tif", {"DATE": "2020-07"}) == (2020, 7, 0)
    assert geotiff_date("weather.tif", {"DATE": "2020-07-04T00:00:00Z"}) == (2020, 7, 4)
    assert geotiff_date("weather.tif", {"SYSTEM:TIME_START": "1612137600000"}) == (2021, 2, 1)
    assert geotiff_date("weather_v2.tif", {}) is None


def test_no_georeferencing_and_no_coverage(tmp_path: Path) -> None:
    bare = netcdf(tmp_path / "bare.nc", monthly(), {"t2m": (constant(280.0), "K"), "tp": (constant(0.0), "m/day")},
                  coords=False)  # fmt: skip
    with pytest.raises(InputError, match="no georeferencing") as info:
        discover_weather(spec(bare))
    assert info.value.path == str(bare.resolve())
    spain = netcdf(tmp_path / "spain.nc", monthly(), {"t2m": (constant(280.0), "K"), "tp": (constant(0.0), "m/day")},
                   lat=np.arange(43.0, 36.0, -0.25), lon=np.arange(-9.0, 3.0, 0.25))  # fmt: skip
    with pytest.raises(InputError, match=r"do not cover the grid: 100\.0 %") as info:
        weather_on_grid(discover_weather(spec(spain)), GRID, MONTHS)
    assert info.value.path == str(spain.resolve())


def test_names_from_the_spec_and_missing_variables(tmp_path: Path) -> None:
    path = netcdf(tmp_path / "odd.nc", monthly(1), {"air": (constant(280.0), "K"), "rain": (constant(1.0), "mm/day")})
    with pytest.raises(InputError, match="no 2 m temperature in the weather files"):
        discover_weather(spec(path, precipitation="rain"))
    with pytest.raises(InputError, match="holds neither"):
        discover_weather(spec(path))
    source = discover_weather(spec(path, temperature="air", precipitation="rain"))
    out = weather_on_grid(source, GRID, MONTHS[:1])
    assert (out[0, 0] == 280).all()


def test_source_pickles(tmp_path: Path) -> None:
    path = netcdf(tmp_path / "era5.nc", monthly(), {"t2m": (constant(280.0), "K"), "tp": (constant(0.0), "m/day")})
    source = discover_weather(spec(path))
    again = pickle.loads(pickle.dumps(source))
    assert isinstance(again, WeatherSource) and again == source
    np.testing.assert_array_equal(weather_on_grid(again, GRID, MONTHS), weather_on_grid(source, GRID, MONTHS))


def test_threads_read_the_same_files_at_once(tmp_path: Path) -> None:
    """The blocks of one cube read the weather on dask threads, and daily files (AgERA5) mean many opens. netCDF-C
    and HDF5 are not thread-safe: without suelo.locks.netcdf_lock this crashed the test process (segmentation
    fault). Eight threads on 31 daily files each, while the main thread writes computed cubes (suelo.composite,
    under the same lock), get what one thread gets."""
    from concurrent.futures import ThreadPoolExecutor

    from suelo.composite import build_cube, write_cube
    from suelo.locks import netcdf_lock
    from suelo.settings import IngestSpec, PeriodSpec

    days = [dt.datetime(2021, 1, 1) + dt.timedelta(days=d) for d in range(31)]
    paths = [
        netcdf(tmp_path / f"day_{i:02d}.nc", [day], {"t2m": (temperature_field, "K"), "tp": (constant(0.002), "m")})
        for i, day in enumerate(days)
    ]
    source = discover_weather(spec(*paths, precipitation_unit="m/day"))
    alone = weather_on_grid(source, GRID, MONTHS[:1])
    with ThreadPoolExecutor(8) as pool:
        runs = [pool.submit(weather_on_grid, source, GRID, MONTHS[:1]) for _ in range(8)]
        period = PeriodSpec.model_validate({"start": "2021-01-01", "end": "2021-03-31"})
        empty = build_cube((), GRID, period, IngestSpec(), block_size=64).compute(scheduler="synchronous")
        for i in range(10):  # cubes written meanwhile on this thread
            write_cube(empty, tmp_path / f"cube_{i}.nc")
        results = [run.result() for run in runs]
    for result in results:
        np.testing.assert_array_equal(result, alone)
    with netcdf_lock(xarray=True), netcdf_lock(), netcdf_lock(xarray=True):  # re-entrant within a thread
        pass
    assert np.isfinite(alone).all()
