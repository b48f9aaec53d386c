"""Sentinel-1 reader: discovery (STAC items, GeoTIFF layouts, raw-product refusal, units, orbits) and the monthly
linear-power composite, on tiny real GeoTIFFs and STAC JSON written in tmp_path."""

from __future__ import annotations

import datetime as dt
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

from suelo.errors import InputError
from suelo.grid import Grid
from suelo.ingest.sentinel1 import NOISE_FLOOR, RadarScene, composite_sentinel1, discover_sentinel1
from suelo.settings import Sentinel1Input
from tests.fixtures import UTM31_10M, write_raster

UTM31 = CRS.from_epsg(32631)
SHAPE = (8, 8)
GRID = Grid(UTM31, UTM31_10M, *SHAPE)
JUNE = [dt.date(2021, 6, 1)]
VV, VH = 0, 1


def db(linear: float) -> float:
    return 10.0 * math.log10(linear)


def s1(*paths: Path, **options: Any) -> Sentinel1Input:
    return Sentinel1Input(paths=paths, **options)


def radar_tif(
    path: Path,
    vv: float | np.ndarray,
    vh: float | np.ndarray,
    *,
    descriptions: list[str | None] | None = None,
    tags: dict[str, str] | None = None,
    nodata: float | None = None,
    crs: CRS | str = UTM31,
    transform: Affine = UTM31_10M,
    shape: tuple[int, int] = SHAPE,
) -> Path:
    """A two-band float32 GeoTIFF (VV, VH described unless told otherwise) on the test grid."""
    values = np.stack([np.broadcast_to(np.asarray(v, dtype=np.float32), shape) for v in (vv, vh)])
    return write_raster(
        path,
        values,
        crs=crs,
        transform=transform,
        nodata=nodata,
        descriptions=["VV", "VH"] if descriptions is None else descriptions,
        tags=tags,
    )


def one_band(path: Path, value: float | np.ndarray, tags: dict[str, str] | None = None) -> Path:
    return write_raster(
        path, np.broadcast_to(np.asarray(value, dtype=np.float32), SHAPE).copy(), nodata=None, tags=tags
    )


def stac_item(
    item_id: str,
    hrefs: dict[str, str],
    *,
    collection: str | None = "sentinel-1-rtc",
    when: str = "2021-06-12T05:43:21Z",
    band: dict[str, Any] | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """A STAC Item shaped like Planetary Computer's sentinel-1-rtc ones (``band``: the raster:bands entry)."""
    raster = {"nodata": -32768, "data_type": "float32", "spatial_resolution": 10} if band is None else band
    document: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "properties": {
            "datetime": when,
            "platform": "SENTINEL-1A",
            "sar:product_type": "GRD",
            "sar:polarizations": ["VV", "VH"],
            "s1:processing_level": "1",
            **properties,
        },
        "assets": {
            key: {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
            | ({"raster:bands": [raster]} if raster else {})
            for key, href in hrefs.items()
        },
    }
    if collection is not None:
        document["collection"] = collection
    return document


def write_json(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def single_tif_item(tmp_path: Path, vv: float, vh: float, **item_options: Any) -> Path:
    """tmp_path/items.json: one item whose vv/vh assets are single-band files next to it."""
    one_band(tmp_path / "data" / "vv.tif", vv)
    one_band(tmp_path / "data" / "vh.tif", vh)
    item = stac_item(
        "S1A_IW_GRDH_1SDV_20210612T054321_20210612T054346_038293_048501_rtc",
        {"vv": "data/vv.tif", "vh": "data/vh.tif"},
        **item_options,
    )
    return write_json(tmp_path / "items.json", item)


# -- compositing -----------------------------------------------------------------------------------------------------


def test_two_acquisitions_are_averaged_in_linear_power(tmp_path: Path) -> None:
    radar_tif(tmp_path / "S1A_20210603T054321_rtc.tif", 0.1, 0.01)
    radar_tif(tmp_path / "S1A_20210615T054321_rtc.tif", 0.3, 0.03)
    scenes = discover_sentinel1(s1(tmp_path, unit="linear"))
    assert [s.acquired for s in scenes] == [
        dt.datetime(2021, 6, 3, 5, 43, 21, tzinfo=dt.timezone.utc),
        dt.datetime(2021, 6, 15, 5, 43, 21, tzinfo=dt.timezone.utc),
    ]
    cube = composite_sentinel1(scenes, GRID, JUNE)
    assert cube.shape == (1, 2, *SHAPE) and cube.dtype == np.float32
    # the mean of 0.1 and 0.3 in power, not the mean of -10 dB and -5.23 dB (which would be -7.61 dB)
    np.testing.assert_allclose(cube[0, VV], db(0.2), rtol=1e-6)
    np.testing.assert_allclose(cube[0, VH], db(0.02), rtol=1e-6)


def test_a_db_file_gives_the_linear_file_result(tmp_path: Path) -> None:
    linear, decibel = tmp_path / "linear", tmp_path / "db"
    radar_tif(linear / "a_20210603.tif", 0.1, 0.01, tags={"UNIT": "linear"})
    radar_tif(linear / "b_20210615.tif", 0.3, 0.03, tags={"UNIT": "linear"})
    radar_tif(decibel / "a_20210603.tif", db(0.1), db(0.01), tags={"UNIT": "dB"})
    radar_tif(decibel / "b_20210615.tif", db(0.3), db(0.03), tags={"BACKSCATTER_UNIT": "decibel"})
    from_db = discover_sentinel1(s1(decibel))
    assert {s.unit for s in from_db} == {"db"}
    expected = composite_sentinel1(discover_sentinel1(s1(linear)), GRID, JUNE)
    np.testing.assert_allclose(composite_sentinel1(from_db, GRID, JUNE), expected, atol=1e-5)
    np.testing.assert_allclose(expected[0, VV], db(0.2), rtol=1e-6)


def test_a_month_without_observations_is_nan(tmp_path: Path) -> None:
    radar_tif(tmp_path / "S1A_20210612.tif", 0.1, 0.01)
    radar_tif(tmp_path / "S1A_20210820.tif", 0.2, 0.02)
    months = [dt.date(2021, 6, 1), dt.date(2021, 7, 1), dt.date(2021, 8, 1)]
    cube = composite_sentinel1(discover_sentinel1(s1(tmp_path, unit="linear")), GRID, months)
    np.testing.assert_allclose(cube[0], np.broadcast_to(np.array([db(0.1), db(0.01)])[:, None, None], (2, *SHAPE)))
    assert np.isnan(cube[1]).all()
    np.testing.assert_allclose(cube[2, VV], db(0.2), rtol=1e-6)


def test_nodata_non_finite_and_the_noise_floor_are_masked(tmp_path: Path) -> None:
    first = np.full(SHAPE, 0.1, dtype=np.float32)
    first[2, 2] = -32768  # the file's nodata
    first[2, 5] = np.nan
    first[5, 2] = 0.0  # zero-filled GRD border
    first[5, 5] = NOISE_FLOOR / 2  # below -40 dB: noise, not signal
    radar_tif(tmp_path / "S1A_20210603.tif", first, 0.01, nodata=-32768)
    radar_tif(tmp_path / "S1A_20210615.tif", 0.3, 0.03, nodata=-32768)
    cube = composite_sentinel1(discover_sentinel1(s1(tmp_path, unit="linear")), GRID, JUNE)
    expected = np.full(SHAPE, db(0.2))
    for row, col in ((2, 2), (2, 5), (5, 2), (5, 5)):
        expected[row, col] = db(0.3)  # only the second acquisition is valid there
    np.testing.assert_allclose(cube[0, VV], expected, rtol=1e-6)
    np.testing.assert_allclose(cube[0, VH], db(0.02), rtol=1e-6)  # VH is masked on its own


def test_a_pixel_with_no_valid_observation_in_the_month_is_nan(tmp_path: Path) -> None:
    values = np.full(SHAPE, 0.1, dtype=np.float32)
    values[3, 3] = -32768
    radar_tif(tmp_path / "S1A_20210603.tif", values, 0.01, nodata=-32768)
    cube = composite_sentinel1(discover_sentinel1(s1(tmp_path, unit="linear")), GRID, JUNE)
    assert np.isnan(cube[0, VV, 3, 3])
    assert np.isfinite(np.delete(cube[0, VV].ravel(), 3 * SHAPE[1] + 3)).all()


def test_a_file_in_degrees_is_warped_onto_a_utm_grid(tmp_path: Path) -> None:
    """Power varying linearly with longitude and latitude: bilinear resampling reproduces it almost exactly."""
    to_lonlat = Transformer.from_crs(UTM31, "EPSG:4326", always_xy=True)
    lon0, lat0 = to_lonlat.transform(600000.0 - 100, 5700000.0 + 100)  # north-west of the grid, with a margin
    step = 0.0001
    rows, cols = 160, 160
    transform = Affine(step, 0.0, lon0, 0.0, -step, lat0)
    lon = lon0 + step * (np.arange(cols) + 0.5)
    lat = lat0 - step * (np.arange(rows) + 0.5)

    def power(lo: np.ndarray, la: np.ndarray) -> np.ndarray:
        return 0.05 + 20.0 * (lo - lon0) + 10.0 * (lat0 - la)

    field = power(lon[None, :], lat[:, None]).astype(np.float32)
    radar_tif(tmp_path / "S1A_20210612.tif", field, field / 10, crs="EPSG:4326", transform=transform, shape=field.shape)
    grid = Grid(UTM31, Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5700000.0), 12, 12)
    cube = composite_sentinel1(discover_sentinel1(s1(tmp_path, unit="linear")), grid, JUNE)
    xs = 600000.0 + 10.0 * (np.arange(12) + 0.5)
    ys = 5700000.0 - 10.0 * (np.arange(12) + 0.5)
    lons, lats = to_lonlat.transform(*np.meshgrid(xs, ys))
    expected = power(np.asarray(lons), np.asarray(lats))
    assert 0.06 < expected.min() < expected.max() < 0.3
    np.testing.assert_allclose(cube[0, VV], 10 * np.log10(expected), atol=0.01)  # dB
    np.testing.assert_allclose(cube[0, VH], 10 * np.log10(expected / 10), atol=0.01)


def test_a_coarser_grid_averages_power(tmp_path: Path) -> None:
    """A 40 m grid over 10 m speckle-like checkerboard of 0.1/0.3: each grid pixel is the 4x4 mean, 0.2."""
    checker = np.where((np.indices((16, 16)).sum(axis=0) % 2) == 0, 0.1, 0.3).astype(np.float32)
    radar_tif(tmp_path / "S1A_20210612.tif", checker, checker / 10, shape=(16, 16))
    coarse = Grid(UTM31, Affine(40.0, 0.0, 600000.0, 0.0, -40.0, 5700000.0), 4, 4)
    cube = composite_sentinel1(discover_sentinel1(s1(tmp_path, unit="linear")), coarse, JUNE)
    np.testing.assert_allclose(cube[0, VV], db(0.2), rtol=1e-6)


def test_scenes_outside_the_months_or_the_grid_are_not_read(tmp_path: Path) -> None:
    radar_tif(tmp_path / "S1A_20210612.tif", 0.1, 0.01, transform=Affine(10.0, 0.0, 700000.0, 0.0, -10.0, 5600000.0))
    cube = composite_sentinel1(discover_sentinel1(s1(tmp_path, unit="linear")), GRID, JUNE)
    assert np.isnan(cube).all()


# -- units -----------------------------------------------------------------------------------------------------------


def test_no_unit_anywhere_is_one_error_saying_to_set_unit(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "S1A_20210612.tif", 0.1, 0.01)
    with pytest.raises(InputError, match=r"unit unknown .*set unit: linear or unit: db") as caught:
        discover_sentinel1(s1(path))
    assert caught.value.path == str(path)


def test_a_declared_unit_that_contradicts_the_metadata_is_an_error(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "S1A_20210612.tif", -10.0, -17.0, tags={"UNITS": "dB"})
    with pytest.raises(InputError, match=r"units disagree \(metadata UNITS 'dB' says db, job spec unit says linear"):
        discover_sentinel1(s1(path, unit="linear"))
    assert discover_sentinel1(s1(path, unit="db"))[0].unit == "db"


def test_unit_from_band_unit_type_and_band_description(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "S1A_20210612.tif", db(0.1), db(0.01), descriptions=["Sigma0_VV_db", "Sigma0_VH_db"])
    scene = discover_sentinel1(s1(path))[0]
    assert scene.unit == "db" and scene.bands["VV"].index == 1 and scene.bands["VH"].index == 2
    assert "Sigma0_VV_db" in scene.unit_source


def test_an_amplitude_unit_is_refused(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "S1A_20210612.tif", 0.3, 0.1, tags={"UNIT": "amplitude"})
    with pytest.raises(InputError, match="not amplitude or digital numbers"):
        discover_sentinel1(s1(path))


def test_db_values_declared_linear_look_wrong(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "S1A_20210612.tif", -10.0, -17.0)
    scenes = discover_sentinel1(s1(path, unit="linear"))  # declared, so accepted at discovery ...
    with pytest.raises(InputError, match=r"unit looks wrong: declared linear power .*below -1") as caught:
        composite_sentinel1(scenes, GRID, JUNE)  # ... and refused by the values it holds
    assert caught.value.path == str(path)


def test_digital_numbers_declared_db_look_wrong(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "S1A_20210612.tif", 312.0, 95.0, tags={"UNIT": "dB"})
    with pytest.raises(InputError, match=r"unit looks wrong: declared dB .*median is 312 dB"):
        composite_sentinel1(discover_sentinel1(s1(path)), GRID, JUNE)


def test_digital_numbers_declared_linear_look_wrong(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "S1A_20210612.tif", 312.0, 95.0)
    with pytest.raises(InputError, match=r"declared linear power .*median is 312"):
        composite_sentinel1(discover_sentinel1(s1(path, unit="linear")), GRID, JUNE)


# -- STAC ------------------------------------------------------------------------------------------------------------


def test_a_planetary_computer_rtc_item(tmp_path: Path) -> None:
    document = single_tif_item(tmp_path, 0.2, 0.02, **{"sat:orbit_state": "descending"})
    (scene,) = discover_sentinel1(s1(document))
    assert scene.unit == "linear" and "collection sentinel-1-rtc" in scene.unit_source
    assert scene.orbit == "descending"
    assert scene.nodata == -32768
    assert scene.acquired == dt.datetime(2021, 6, 12, 5, 43, 21, tzinfo=dt.timezone.utc)
    assert scene.bands["VV"].path == str((tmp_path / "data" / "vv.tif").resolve())
    assert scene.crs == UTM31 and scene.bounds == (600000.0, 5699920.0, 600080.0, 5700000.0)
    cube = composite_sentinel1([scene], GRID, JUNE)
    np.testing.assert_allclose(cube[0, VV], db(0.2), rtol=1e-6)
    np.testing.assert_allclose(cube[0, VH], db(0.02), rtol=1e-6)
    assert pickle.loads(pickle.dumps(scene)) == scene


def test_an_item_collection_and_the_unit_from_raster_bands(tmp_path: Path) -> None:
    for day in (2, 4):
        one_band(tmp_path / f"{day}_vv.tif", db(0.2))
        one_band(tmp_path / f"{day}_vh.tif", db(0.02))
    band = {"nodata": "nan", "unit": "dB"}
    items = [
        stac_item(
            f"S1A_IW_GRDH_1SDV_2021061{day}T054321_X_{orbit}",
            {"vv": f"{day}_vv.tif", "vh": f"{day}_vh.tif"},
            collection=None,
            band=band,
            when=f"2021-06-1{day}T05:43:21Z",
            **{"sat:orbit_state": orbit},
        )
        for day, orbit in ((2, "descending"), (4, "ascending"))
    ]
    document = write_json(tmp_path / "search.json", {"type": "FeatureCollection", "features": items})
    scenes = discover_sentinel1(s1(document))
    assert [(s.unit, s.orbit) for s in scenes] == [("db", "descending"), ("db", "ascending")]
    assert scenes[0].unit_source == "asset vv raster:bands unit 'dB', asset vh raster:bands unit 'dB'"
    assert math.isnan(scenes[0].nodata or 0.0)
    with pytest.raises(InputError, match=r"units disagree .*raster:bands unit 'dB' says db.*job spec unit says linear"):
        discover_sentinel1(s1(document, unit="linear"))
    # the orbit filter keeps one direction
    (kept,) = discover_sentinel1(s1(document, orbit="ascending"))
    assert kept.orbit == "ascending" and kept.scene_id.endswith("ascending")


def test_the_orbit_filter_refuses_an_acquisition_of_unknown_orbit(tmp_path: Path) -> None:
    document = single_tif_item(tmp_path, 0.2, 0.02)
    assert discover_sentinel1(s1(document))[0].orbit is None
    with pytest.raises(InputError, match=r"orbit direction unknown .*orbit: descending") as caught:
        discover_sentinel1(s1(document, orbit="descending"))
    assert caught.value.path.endswith(
        "items.json item S1A_IW_GRDH_1SDV_20210612T054321_20210612T054346_038293_048501_rtc"
    )


def test_an_orbit_filter_that_keeps_nothing_is_an_error(tmp_path: Path) -> None:
    radar_tif(tmp_path / "S1A_20210612_ASC.tif", 0.1, 0.01)
    assert discover_sentinel1(s1(tmp_path, unit="linear"))[0].orbit == "ascending"
    with pytest.raises(InputError, match="none of its 1 acquisition"):
        discover_sentinel1(s1(tmp_path, unit="linear", orbit="descending"))


def test_the_planetary_computer_grd_collection_is_refused(tmp_path: Path) -> None:
    document = single_tif_item(tmp_path, 0.2, 0.02, collection="sentinel-1-grd")
    with pytest.raises(InputError, match=r"sentinel-1-grd collection: .*not calibrated .*terrain-corrected") as caught:
        discover_sentinel1(s1(document, unit="linear"))
    assert "SNAP" in caught.value.problem and "sentinel-1-rtc" in caught.value.problem


def test_a_grd_item_without_any_sign_of_calibration_is_refused(tmp_path: Path) -> None:
    one_band(tmp_path / "vv.tif", 120.0)
    one_band(tmp_path / "vh.tif", 40.0)
    item = stac_item("S1A_IW_GRDH_1SDV_20210612T054321", {"vv": "vv.tif", "vh": "vh.tif"}, collection=None)
    document = write_json(tmp_path / "item.json", item)
    with pytest.raises(InputError, match=r"Level-1 GRD product .*no sign of calibration"):
        discover_sentinel1(s1(document, unit="linear"))


def test_an_slc_item_is_refused(tmp_path: Path) -> None:
    document = single_tif_item(tmp_path, 0.2, 0.02, collection=None, **{"sar:product_type": "SLC"})
    with pytest.raises(InputError, match="SLC"):
        discover_sentinel1(s1(document, unit="linear"))


def test_an_item_missing_a_polarization_it_lists_is_an_error(tmp_path: Path) -> None:
    one_band(tmp_path / "vv.tif", 0.2)
    document = write_json(tmp_path / "item.json", stac_item("S1A_x_rtc", {"vv": "vv.tif"}))
    with pytest.raises(InputError, match="sar:polarizations lists VH but the item has no vh asset"):
        discover_sentinel1(s1(document))
    single = stac_item("S1A_x_rtc", {"vv": "vv.tif"}, **{"sar:polarizations": ["VV"]})
    (scene,) = discover_sentinel1(s1(write_json(tmp_path / "single.json", single)))
    assert set(scene.bands) == {"VV"}
    cube = composite_sentinel1([scene], GRID, JUNE)
    assert np.isnan(cube[0, VH]).all()
    np.testing.assert_allclose(cube[0, VV], db(0.2), rtol=1e-6)


# -- raw products and GeoTIFF layouts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "S1A_IW_GRDH_1SDV_20210612T054321_20210612T054346_038293_048501_1A2B.SAFE",
        "S1B_IW_SLC__1SDV_20210612T054321_20210612T054346_027293_034501_3C4D.SAFE",
    ],
)
def test_a_raw_safe_folder_is_refused(tmp_path: Path, name: str) -> None:
    product = tmp_path / name
    (product / "measurement").mkdir(parents=True)
    (product / "manifest.safe").write_text("<xfdu/>", encoding="utf-8")
    with pytest.raises(InputError, match="not radiometrically calibrated nor terrain-corrected") as caught:
        discover_sentinel1(s1(product, unit="linear"))
    assert caught.value.path == str(product) and "SNAP" in caught.value.problem
    with pytest.raises(InputError, match="raw Sentinel-1"):  # also inside a folder given as input
        discover_sentinel1(s1(tmp_path, unit="linear"))


def test_a_raw_grd_zip_and_a_measurement_tiff_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "S1A_IW_GRDH_1SDV_20210612T054321_20210612T054346_038293_048501_1A2B.zip"
    archive.write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match=r"raw Sentinel-1 GRD \(Ground Range Detected\) product"):
        discover_sentinel1(s1(archive))
    measurement = one_band(tmp_path / "s1a-iw-grd-vv-20210612t054321-20210612t054346-038293-048501-001.tiff", 120.0)
    with pytest.raises(InputError, match="measurement file of a raw Sentinel-1 GRD"):
        discover_sentinel1(s1(measurement, unit="linear"))


def test_one_file_per_polarization_is_paired_by_name(tmp_path: Path) -> None:
    one_band(tmp_path / "S1A_IW_20210612T054321_DVP_RTC10_G_gpuned_FD6A_VV.tif", 0.1, tags={"UNIT": "power"})
    one_band(tmp_path / "S1A_IW_20210612T054321_DVP_RTC10_G_gpuned_FD6A_VH.tif", 0.01, tags={"UNIT": "power"})
    one_band(tmp_path / "S1A_IW_20210624T054321_DVP_RTC10_G_gpuned_AB12_VV.tif", 0.3, tags={"UNIT": "power"})
    one_band(tmp_path / "S1A_IW_20210624T054321_DVP_RTC10_G_gpuned_AB12_VH.tif", 0.03, tags={"UNIT": "power"})
    scenes = discover_sentinel1(s1(tmp_path))
    assert [s.scene_id for s in scenes] == [
        "S1A_IW_20210612T054321_DVP_RTC10_G_gpuned_FD6A",
        "S1A_IW_20210624T054321_DVP_RTC10_G_gpuned_AB12",
    ]
    assert scenes[0].bands["VH"].path.endswith("FD6A_VH.tif") and scenes[0].unit == "linear"
    cube = composite_sentinel1(scenes, GRID, JUNE)
    np.testing.assert_allclose(cube[0], np.broadcast_to(np.array([db(0.2), db(0.02)])[:, None, None], cube[0].shape))


def test_a_polarization_file_without_its_partner_is_an_error(tmp_path: Path) -> None:
    path = one_band(tmp_path / "S1A_20210612_VV.tif", 0.1)
    with pytest.raises(InputError, match="holds only VV and no VH file pairs with it") as caught:
        discover_sentinel1(s1(tmp_path, unit="linear"))
    assert caught.value.path == str(path)


def test_bands_from_the_spec_when_the_file_has_no_descriptions(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "export_2021-06-12.tif", 0.01, 0.1, descriptions=[])
    with pytest.raises(InputError, match=r"no VV/VH band.*set bands:"):
        discover_sentinel1(s1(path, unit="linear"))
    (scene,) = discover_sentinel1(s1(path, unit="linear", bands=("VH", "VV")))
    assert (scene.bands["VV"].index, scene.bands["VH"].index) == (2, 1)
    assert scene.acquired == dt.datetime(2021, 6, 12, tzinfo=dt.timezone.utc)
    cube = composite_sentinel1([scene], GRID, JUNE)
    np.testing.assert_allclose(cube[0, VV], db(0.1), rtol=1e-6)
    with pytest.raises(InputError, match="bands: names 3 band"):
        discover_sentinel1(s1(path, unit="linear", bands=("VV", "VH", "angle")))


def test_the_date_from_an_acquisition_tag_and_its_absence(tmp_path: Path) -> None:
    tagged = radar_tif(tmp_path / "a" / "backscatter.tif", 0.1, 0.01, tags={"ACQUISITION_DATE": "2021-06-12T05:43:21Z"})
    assert discover_sentinel1(s1(tagged, unit="linear"))[0].acquired == dt.datetime(
        2021, 6, 12, 5, 43, 21, tzinfo=dt.timezone.utc
    )
    undated = radar_tif(tmp_path / "b" / "backscatter.tif", 0.1, 0.01, tags={"TIFFTAG_DATETIME": "2023:01:01 00:00:00"})
    with pytest.raises(InputError, match="no acquisition date"):
        discover_sentinel1(s1(undated, unit="linear"))


def test_orbit_statements_that_disagree_are_an_error(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "S1A_20210612_DESC.tif", 0.1, 0.01, tags={"ORBIT_DIRECTION": "ASCENDING"})
    with pytest.raises(InputError, match="orbit directions disagree"):
        discover_sentinel1(s1(path, unit="linear"))


def test_the_same_file_twice_is_an_error(tmp_path: Path) -> None:
    path = radar_tif(tmp_path / "a" / "S1A_20210612.tif", 0.1, 0.01)
    with pytest.raises(InputError, match="would count twice"):
        discover_sentinel1(s1(tmp_path / "a", path, unit="linear"))
    document = single_tif_item(tmp_path / "b", 0.2, 0.02)
    copy = write_json(tmp_path / "b" / "copy.json", json.loads(document.read_text(encoding="utf-8")))
    with pytest.raises(InputError, match="would count twice"):
        discover_sentinel1(s1(document, copy))
    # the same name in two folders is two acquisitions (e.g. two tiles of one pass)
    radar_tif(tmp_path / "c" / "S1A_20210612.tif", 0.3, 0.03)
    assert len(discover_sentinel1(s1(tmp_path / "a", tmp_path / "c", unit="linear"))) == 2


def test_radar_scene_is_a_frozen_picklable_record(tmp_path: Path) -> None:
    scene = discover_sentinel1(s1(radar_tif(tmp_path / "S1A_20210612.tif", 0.1, 0.01), unit="linear"))[0]
    assert isinstance(scene, RadarScene) and pickle.loads(pickle.dumps(scene)) == scene
    with pytest.raises(AttributeError):
        scene.unit = "db"  # type: ignore[misc]
