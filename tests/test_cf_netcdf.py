"""CF-1.8 NetCDF: the cube (`suelo ingest` / `suelo run`) and `suelo predict`'s output carry ``Conventions``, the CF
grid mapping of pyproj, CF x/y/time coordinates and units, and open georeferenced in GDAL (and rioxarray, and a CF
checker, where installed); files written before still open."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine
from click.testing import CliRunner
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from suelo.cli import main
from suelo.composite import build_cube, cube_grid, open_cube, write_cube
from suelo.grid import CF_CONVENTIONS, SPATIAL_REF, Grid
from suelo.settings import PeriodSpec
from tests.fixtures import GRID, REPO_ROOT, SCENE_GRID, SCENE_INGEST, constant, make_scene, tiny_cube, vegetation

# a UTM grid whose origin is not a round number, a Europe-wide LAEA grid (its EPSG axis order is northing first)
# and a geographic one, besides the tiny cubes' UTM grid
ODD_UTM = Grid(CRS.from_epsg(32631), Affine(10.0, 0.0, 600003.7, 0.0, -10.0, 5700021.3), 7, 9)
LAEA = Grid(CRS.from_epsg(3035), Affine(20.0, 0.0, 3950000.0, 0.0, -20.0, 3100000.0), 6, 8)
DEGREES = Grid(CRS.from_epsg(4326), Affine(0.0001, 0.0, 5.3, 0.0, -0.0001, 50.64), 5, 6)
GRIDS = {"utm": GRID, "odd-utm": ODD_UTM, "laea": LAEA, "degrees": DEGREES}
CUBE_VARIABLES = ("reflectance", "valid", "clear_count", "n_clear")
PREDICTION_VARIABLES = ("posterior", "class_code", "novelty_score", "outside_training", "class_map", "confidence")
MODEL = REPO_ROOT / "models" / "landcover_default.pt"
# GDAL before 3.11 computes a NetCDF's transform from its CF x/y values, not from the GeoTransform it writes:
# exact for metre grids on round pixel sizes, last-bit float noise in degrees (GDAL 3.11 prefers the GeoTransform)
GDAL_PREFERS_GEOTRANSFORM = tuple(int(p) for p in rasterio.__gdal_version__.split(".")[:2]) >= (3, 11)


def cube_of(grid: Grid) -> xr.Dataset:
    """A tiny monthly cube on ``grid`` with the variables ``write_cube`` writes (its grid in the JSON attribute)."""
    cube = tiny_cube(grid=grid)
    cube["clear_count"] = cube["valid"].astype(np.uint8)
    cube["n_clear"] = cube["valid"].sum("time").astype(np.uint16)
    return cube


def written_cube(tmp_path: Path, grid: Grid) -> Path:
    path = tmp_path / "cube" / "cube.nc"
    write_cube(cube_of(grid), path)
    return path


@pytest.fixture(scope="module")
def prediction(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`suelo predict` (with --apply-masking, so every variable it can write) of a tiny cube file on GRID."""
    folder = tmp_path_factory.mktemp("predict")
    cube = written_cube(folder, GRID)
    output = folder / "prediction.nc"
    args = ["predict", str(MODEL), str(cube), "-o", str(output), "--device", "cpu", "--apply-masking"]
    done = CliRunner().invoke(main, [*args, "--threshold", "0.5"])
    assert done.exit_code == 0, done.output
    return output


def attributes(variable: Any) -> dict[str, Any]:
    return {name: variable.getncattr(name) for name in variable.ncattrs()}


def same_value(read: Any, expected: Any) -> bool:
    if isinstance(expected, str):
        return bool(read == expected)
    return bool(np.array_equal(np.asarray(read, dtype=np.float64), np.asarray(expected, dtype=np.float64)))


def assert_cf(path: Path, grid: Grid, variables: tuple[str, ...]) -> None:
    """Conventions, the grid mapping (pyproj's CF export plus GDAL's WKT and GeoTransform), every y/x variable naming
    it, and the CF x/y coordinates of ``grid``'s CRS."""
    with netCDF4.Dataset(path) as ds:
        assert ds.getncattr("Conventions") == CF_CONVENTIONS == "CF-1.8"
        mapping = attributes(ds.variables[SPATIAL_REF])
        assert ds.variables[SPATIAL_REF].ndim == 0
        expected = pyproj.CRS.from_wkt(grid.crs.to_wkt()).to_cf()
        assert "grid_mapping_name" in expected
        for key, value in expected.items():  # crs_wkt included: CF's WKT 2
            assert same_value(mapping[key], value), (key, mapping[key], value)
        # the parameters are the EPSG definition's (only its datum's name says "ensemble" in PROJ's database)
        authority = pyproj.CRS.from_epsg(grid.crs.to_epsg()).to_cf()
        for key in set(authority) - {"crs_wkt", "horizontal_datum_name"}:
            assert same_value(mapping[key], authority[key]), key
        assert pyproj.CRS.from_cf(mapping).equals(pyproj.CRS.from_epsg(grid.crs.to_epsg()))
        assert mapping["spatial_ref"] == grid.crs.to_wkt()
        assert mapping["GeoTransform"] == " ".join(str(v) for v in grid.transform.to_gdal())
        on_grid = [name for name, var in ds.variables.items() if {"y", "x"} <= set(var.dimensions)]
        assert set(variables) <= set(on_grid)
        for name in on_grid:
            assert ds.variables[name].getncattr("grid_mapping") == SPATIAL_REF, name
        geographic = grid.crs.is_geographic
        for axis, names in (("x", ("longitude", "degrees_east")), ("y", ("latitude", "degrees_north"))):
            coordinate = attributes(ds.variables[axis])
            standard_name, units = names if geographic else (f"projection_{axis}_coordinate", "m")
            assert coordinate["standard_name"] == standard_name and coordinate["units"] == units
            assert coordinate["axis"] == axis.upper() and coordinate["long_name"]
            assert "_FillValue" not in coordinate  # CF: coordinates have no missing values
        np.testing.assert_array_equal(ds.variables["x"][:], grid.x_coords())
        np.testing.assert_array_equal(ds.variables["y"][:], grid.y_coords())


def assert_cf_cube(path: Path, grid: Grid) -> None:
    assert_cf(path, grid, CUBE_VARIABLES)
    with netCDF4.Dataset(path) as ds:
        time = attributes(ds.variables["time"])
        assert time["standard_name"] == "time" and time["axis"] == "T"
        assert re.fullmatch(r"days since 1970-01-01( 00:00:00)?", time["units"]) and time["calendar"]
        variables = {name: attributes(ds.variables[name]) for name in CUBE_VARIABLES}
        assert variables["reflectance"]["units"] == "1"
        assert variables["clear_count"]["units"] == variables["n_clear"]["units"] == "1"
        assert all(attrs["long_name"] for attrs in variables.values())
        valid = ds.variables["valid"]
        assert valid.dtype == np.uint8 and "units" not in variables["valid"]
        flags = variables["valid"]["flag_values"]
        assert np.asarray(flags).dtype == np.uint8 and list(np.asarray(flags)) == [0, 1]  # of the variable's type
        assert len(variables["valid"]["flag_meanings"].split()) == 2


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
def test_the_cube_file_is_cf_1_8(tmp_path: Path, grid: Grid) -> None:
    path = written_cube(tmp_path, grid)
    assert_cf_cube(path, grid)
    back = open_cube(path)  # and it reads back as before: its grid exactly, also for a slice
    assert cube_grid(back) == grid and cube_grid(back.isel(y=slice(1, 3), x=slice(2, 4))) == grid.window(1, 3, 2, 4)
    assert back["valid"].dtype == bool


def test_an_ingested_cube_is_cf_1_8(tmp_path: Path) -> None:
    # build_cube's own cube of real GeoTIFF scenes, as `suelo ingest` writes it
    scenes = [make_scene(tmp_path, "a", dt.date(2021, 1, 15), constant(1234), vegetation())]
    cube = build_cube(scenes, SCENE_GRID, PeriodSpec(start=dt.date(2021, 1, 1), end=dt.date(2021, 2, 28)), SCENE_INGEST)
    path = tmp_path / "cube.nc"
    write_cube(cube, path)
    assert_cf_cube(path, SCENE_GRID)
    with netCDF4.Dataset(path) as ds:
        assert ds.variables["reflectance"].long_name == "surface reflectance (BOA)"
    written_slice = tmp_path / "slice.nc"  # a slice of a cube is georeferenced where it is
    write_cube(open_cube(path).isel(y=slice(1, 3), x=slice(2, 5)), written_slice)
    assert_cf_cube(written_slice, SCENE_GRID.window(1, 3, 2, 5))


def test_the_prediction_file_is_cf_1_8(prediction: Path) -> None:
    assert_cf(prediction, GRID, PREDICTION_VARIABLES)
    with netCDF4.Dataset(prediction) as ds:
        assert ds.variables["posterior"].units == ds.variables["novelty_score"].units == "1"
        assert ds.variables["confidence"].units == "percent"
        for name in PREDICTION_VARIABLES:
            assert ds.variables[name].long_name, name
    with xr.open_dataset(prediction) as back:
        assert cube_grid(back) == GRID


def gdal_messages(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name.startswith("rasterio") and r.levelno >= logging.WARNING]


def assert_gdal_reads(path: Path, variable: str, grid: Grid, caplog: pytest.LogCaptureFixture) -> None:
    """GDAL opens ``variable`` at ``grid``: its CRS (EPSG), its transform exactly, its shape, and says nothing
    about missing georeferencing; nothing at all but that a ``band`` or ``class`` dimension is neither time nor
    vertical (GDAL's note on any variable with a dimension of labels: CF has no axis for them)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with rasterio.open(f'NETCDF:"{path}":{variable}') as src:
            assert src.crs is not None and src.crs.to_epsg() == grid.crs.to_epsg()
            if GDAL_PREFERS_GEOTRANSFORM or not grid.crs.is_geographic:
                assert src.transform == grid.transform, (variable, src.transform)
            else:
                assert src.transform.almost_equals(grid.transform, precision=1e-12), (variable, src.transform)
            assert src.shape == grid.shape
    assert not [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)]
    messages = gdal_messages(caplog.records)
    georeferencing = re.compile(r"georef|geotransform|projection|grid.?mapping|spatial|crs|coordinate", re.IGNORECASE)
    assert not [m for m in messages if georeferencing.search(m)], messages
    labels = re.compile(r"dimension #\d+ \((band|class)\) is not a (Time or )?Vertical dimension")
    assert [m for m in messages if not labels.search(m)] == [], (variable, messages)


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
def test_gdal_opens_every_cube_variable_georeferenced(
    tmp_path: Path, grid: Grid, caplog: pytest.LogCaptureFixture
) -> None:
    path = written_cube(tmp_path, grid)
    for variable in CUBE_VARIABLES:
        assert_gdal_reads(path, variable, grid, caplog)


def test_gdal_opens_every_prediction_variable_georeferenced(prediction: Path, caplog: pytest.LogCaptureFixture) -> None:
    for variable in PREDICTION_VARIABLES:
        assert_gdal_reads(prediction, variable, GRID, caplog)


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
def test_rioxarray_reads_the_crs_and_transform(tmp_path: Path, grid: Grid, prediction: Path) -> None:
    pytest.importorskip("rioxarray")
    files = [(written_cube(tmp_path, grid), CUBE_VARIABLES, grid)]
    if grid == GRID:
        files.append((prediction, PREDICTION_VARIABLES, GRID))
    for path, variables, expected in files:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            for name in variables:
                array = ds[name]
                assert array.rio.crs is not None and array.rio.crs.to_epsg() == expected.crs.to_epsg(), name
                assert array.rio.transform().almost_equals(expected.transform, precision=1e-9 * expected.resolution[0])
                assert array.rio.shape == expected.shape


def cf_checker_errors(path: Path) -> list[str]:
    """The errors a CF checker (``cfchecker``, else ``compliance-checker``) finds in ``path`` against CF-1.8;
    the test is skipped when neither is installed or the checker cannot load the CF tables (offline)."""
    try:
        from cfchecker.cfchecks import CFChecker
    except ImportError:
        return compliance_checker_errors(path)
    try:
        results = CFChecker(version="1.8", silent=True).checker(str(path))
    except OSError as exc:  # the standard-name table is fetched from cfconventions.org unless configured
        pytest.skip(f"cfchecker cannot load the CF tables: {exc}")
    found = list(results["global"]["FATAL"]) + list(results["global"]["ERROR"])
    for name, categories in results["variables"].items():
        found += [f"{name}: {message}" for message in [*categories["FATAL"], *categories["ERROR"]]]
    return found


def compliance_checker_errors(path: Path) -> list[str]:
    pytest.importorskip("compliance_checker", reason="no CF checker (cfchecker, compliance-checker) installed")
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite().load_all_available_checkers()
    report = path.with_suffix(".cf.json")
    ComplianceChecker.run_checker(
        str(path), ["cf:1.8"], 0, "normal", output_filename=str(report), output_format=["json"]
    )
    results = json.loads(report.read_text())
    failed = []
    for checker in results.values():
        for check in checker.get("high_priorities", []):
            score, out_of = check["value"]
            if score < out_of:
                failed += [f"{check['name']}: {message}" for message in check.get("msgs", [])] or [check["name"]]
    return failed


# CF-1.8's checkers know netCDF-3's types only (CF-1.9 admits netCDF-4's unsigned, 64-bit and string types, which
# suelo's counts and codes, GDAL's readers and xarray's string coordinates use): those findings alone are allowed
NETCDF4_TYPES = re.compile(r"(invalid|not a valid).*(type|data.?type)|§2\.2|data types", re.IGNORECASE)


def test_a_cf_checker_finds_no_errors(tmp_path: Path, prediction: Path) -> None:
    for path in (written_cube(tmp_path, GRID), prediction):
        errors = [e for e in cf_checker_errors(path) if not NETCDF4_TYPES.search(e)]
        assert errors == [], (path.name, errors)


def test_files_written_before_cf_1_8_still_open_and_are_rewritten_cf(tmp_path: Path) -> None:
    # what write_cube wrote before: no Conventions, GDAL's WKT as crs_wkt too, bare x/y, flag_values a string
    path = written_cube(tmp_path, ODD_UTM)
    with netCDF4.Dataset(path, "a") as ds:
        ds.delncattr("Conventions")
        ds.variables[SPATIAL_REF].setncattr("crs_wkt", ODD_UTM.crs.to_wkt())
        for axis in ("x", "y"):
            for name in ("standard_name", "long_name", "units", "axis"):
                ds.variables[axis].delncattr(name)
        ds.variables["valid"].setncattr("flag_values", "0 1")
        ds.variables["valid"].delncattr("flag_meanings")
    old = open_cube(path)
    assert cube_grid(old) == ODD_UTM and cube_grid(old.isel(y=slice(6, 7))) == ODD_UTM.window(6, 7, 0, 9)
    with xr.open_dataset(path) as plain:
        assert Grid.from_xarray(plain) == ODD_UTM
    again = tmp_path / "again.nc"
    write_cube(old, again)
    assert_cf_cube(again, ODD_UTM)


QGIS_OPEN = """
import json, sys
from qgis.core import QgsApplication, QgsRasterLayer
app = QgsApplication([], False)
app.initQgis()
out = {}
for uri in sys.argv[1:]:
    layer = QgsRasterLayer(uri, "layer", "gdal")
    extent = layer.extent()
    out[uri] = {"valid": layer.isValid(), "crs": layer.crs().authid(), "size": [layer.width(), layer.height()],
                "extent": [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()]}
    del layer
print(json.dumps(out))
app.exitQgis()
"""


@pytest.mark.qgis
def test_qgis_opens_the_cube_and_the_prediction_georeferenced(tmp_path: Path, prediction: Path) -> None:
    """QGIS 3.22 (its own GDAL) opens a variable of each file with the right CRS, size and extent."""
    import os
    import subprocess

    from tests.fixtures.runs import SYSTEM_PYTHON, qgis_available

    if not qgis_available():
        pytest.skip("PyQGIS not importable by /usr/bin/python3")
    files = {f'NETCDF:"{written_cube(tmp_path, GRID)}":reflectance': GRID, f'NETCDF:"{prediction}":class_map': GRID}
    script = tmp_path / "open.py"
    script.write_text(QGIS_OPEN)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([SYSTEM_PYTHON, str(script), *files], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    for uri, grid in files.items():
        layer = seen[uri]
        assert layer["valid"] and layer["crs"] == f"EPSG:{grid.crs.to_epsg()}", layer
        assert layer["size"] == [grid.width, grid.height]
        assert layer["extent"] == pytest.approx(list(grid.bounds), abs=1e-6)
