"""GeoTIFF layouts as users have their data: per-band files (BigEarthNet, SAFE IMG_DATA JP2, Earth Engine),
multi-date stacks, dates and processing levels from names, metadata or the spec, and the README's examples.

Every fixture is a real GeoTIFF or JPEG 2000 file written by rasterio in tmp_path, a few pixels large.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from affine import Affine
from rasterio.crs import CRS

from suelo.band_names import canonical_band
from suelo.errors import ConfigError, InputError
from suelo.grid import Grid
from suelo.ingest.confine import InputAccess
from suelo.ingest.geotiff import discover
from suelo.ingest.scene import Scene, SourceLink, read_scene
from suelo.settings import GeoTiffInput, IngestSpec, validate_job
from tests.fixtures import REPO_ROOT, write_raster

UTM31 = CRS.from_epsg(32631)
WGS84 = CRS.from_epsg(4326)
LEFT, TOP = 600000.0, 5700000.0
# 12 x 12 px at 10 m: 6 x 6 px at 20 m, 2 x 2 px at 60 m
GRID = Grid(UTM31, Affine(10.0, 0.0, LEFT, 0.0, -10.0, TOP), 12, 12)
INGEST = IngestSpec()
UTC = dt.timezone.utc
README = REPO_ROOT / "README.md"


def write(
    path: Path,
    values: np.ndarray,
    pixel: float = 10.0,
    *,
    crs: CRS = UTM31,
    origin: tuple[float, float] = (LEFT, TOP),
    descriptions: list[str | None] | None = None,
    tags: dict[str, str] | None = None,
) -> Path:
    """A GeoTIFF (or, by its suffix, a lossless JPEG 2000) of ``values`` (band, y, x) at ``pixel`` size."""
    transform = Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1])
    return write_raster(path, values, crs=crs, transform=transform, descriptions=descriptions, tags=tags)


def geotiff(*paths: Path, **fields: Any) -> GeoTiffInput:
    return GeoTiffInput(paths=paths, **fields)


def ramp(width: int, height: int, start: int = 1000, step: int = 100) -> np.ndarray:
    """DN rising by ``step`` per column: bilinear resampling of it onto an aligned finer grid is exactly known."""
    return np.tile(start + step * np.arange(width, dtype=np.uint16), (height, 1)).astype(np.uint16)


def bilinear_ramp(width: int, factor: int, start: int = 1000, step: int = 100) -> np.ndarray:
    """What read_on_grid's bilinear gives for :func:`ramp` onto a grid ``factor`` times finer: the ramp at the grid
    pixel centres, held at the edge pixels' values beyond the outermost source centres."""
    centres = (np.arange(width * factor) + 0.5) / factor - 0.5
    return (start + step * np.clip(centres, 0, width - 1)).astype(np.float32)


def reflectance(dn: np.ndarray | float, offset: float = -1000.0) -> np.ndarray:
    return (np.float32(dn) + np.float32(offset)) / np.float32(10000)


def by_id(scenes: list[Scene]) -> dict[str, Scene]:
    return {s.scene_id: s for s in scenes}


# -- per-band files ------------------------------------------------------------------------------------------------


def test_bigearthnet_band_files_10_20_60_m(tmp_path: Path) -> None:
    archive = tmp_path / "BigEarthNet"
    patches = {"S2A_MSIL2A_20170613T101031_0_45": 0, "S2B_MSIL2A_20170818T101019_0_45": 500}
    for patch, extra in patches.items():
        write(archive / patch / f"{patch}_B02.tif", np.full((12, 12), 2000 + extra, np.uint16))
        write(archive / patch / f"{patch}_B05.tif", ramp(6, 6, 1000 + extra), 20.0)
        # 3 x 3 px at 60 m reach 60 m beyond the 10 m band: the scene's footprint is the union
        write(archive / patch / f"{patch}_B01.tif", np.arange(1001, 1010, dtype=np.uint16).reshape(3, 3), 60.0)
    (archive / "S2A_MSIL2A_20170613T101031_0_45" / "S2A_MSIL2A_20170613T101031_0_45_labels_metadata.json").write_text(
        "{}"
    )
    scenes = discover(geotiff(archive, layout="band_files", processing_baseline="02.05"), INGEST)
    assert [s.scene_id for s in scenes] == list(patches)
    june, august = scenes
    assert june.acquired == dt.datetime(2017, 6, 13, tzinfo=UTC) and august.acquired.month == 8
    assert june.level == "L2A" and june.extra["level_source"] == "file name"
    assert set(june.bands) == {"B01", "B02", "B05"} and june.scl is None
    assert june.bands["B05"].path.endswith("S2A_MSIL2A_20170613T101031_0_45_B05.tif")
    assert june.crs == UTM31 and june.bounds == (LEFT, TOP - 180, LEFT + 180, TOP)
    assert june.radiometry.offset("B05") == 0.0  # baseline 02.05: no offset
    folder = str(archive / "S2A_MSIL2A_20170613T101031_0_45")
    assert june.link() == SourceLink(folder, "files S2A_MSIL2A_20170613T101031_0_45*")

    near = read_scene(june, GRID, ("B02", "B05", "B01"), (), resampling="nearest", require_scl=False)
    np.testing.assert_array_equal(near[0], np.full((12, 12), reflectance(2000, 0)))
    np.testing.assert_array_equal(near[1], reflectance(np.repeat(np.repeat(ramp(6, 6), 2, 0), 2, 1), 0))
    b01 = np.arange(1001, 1010).reshape(3, 3)[:2, :2]  # the grid covers the top-left 2 x 2 of the 60 m pixels
    np.testing.assert_array_equal(near[2], reflectance(np.repeat(np.repeat(b01, 6, 0), 6, 1), 0))
    smooth = read_scene(august, GRID, ("B05",), (), resampling="bilinear", require_scl=False)
    expected = np.tile(bilinear_ramp(6, 2, 1500), (12, 1))
    np.testing.assert_array_equal(smooth[0], reflectance(expected, 0))


def img_data(granule: Path, stamp: str = "T31UFS_20210612T104619") -> Path:
    """A SAFE granule's IMG_DATA without any SAFE metadata: Level-2A bands in R10m/R20m/R60m, SCL at 20 m."""
    folder = granule / "IMG_DATA"
    write(folder / "R10m" / f"{stamp}_B02_10m.jp2", np.full((12, 12), 1500, np.uint16))
    write(folder / "R10m" / f"{stamp}_B04_10m.jp2", (np.arange(144, dtype=np.uint16) + 1100).reshape(12, 12))
    write(folder / "R10m" / f"{stamp}_TCI_10m.jp2", np.full((3, 12, 12), 7, np.uint8))  # no band: not taken
    write(folder / "R20m" / f"{stamp}_B02_20m.jp2", np.full((6, 6), 9999, np.uint16), 20.0)  # coarser: not taken
    write(folder / "R20m" / f"{stamp}_B8A_20m.jp2", ramp(6, 6), 20.0)
    scl = np.full((6, 6), 4, np.uint8)
    scl[1, 2] = 9  # cloud (high probability): masks grid rows 2-3, columns 4-5
    write(folder / "R20m" / f"{stamp}_SCL_20m.jp2", scl, 20.0)
    write(folder / "R60m" / f"{stamp}_SCL_60m.jp2", np.full((2, 2), 8, np.uint8), 60.0)  # coarser: not taken
    return folder


def test_img_data_jp2_folder_with_scl(tmp_path: Path) -> None:
    granule = tmp_path / "L2A_T31UFS_A031234_20210612T105137"
    img_data(granule)
    [scene] = discover(geotiff(granule, layout="band_files", processing_baseline="04.00"), INGEST)
    assert scene.scene_id == "T31UFS_20210612T104619" and scene.extra["tile"] == "31UFS"
    assert scene.level == "L2A" and "L2A_T31UFS" in str(scene.extra["level_source"])  # the granule folder's name
    assert set(scene.bands) == {"B02", "B04", "B8A"}
    assert scene.bands["B02"].path.endswith("R10m/T31UFS_20210612T104619_B02_10m.jp2")  # the finest of 10/20 m
    assert scene.scl is not None and scene.scl.path.endswith("_SCL_20m.jp2")
    out = read_scene(scene, GRID, ("B02", "B04", "B8A"), (3, 8, 9, 10), resampling="nearest")
    cloud = np.zeros((12, 12), bool)
    cloud[2:4, 4:6] = True
    assert np.isnan(out[:, cloud]).all() and np.isfinite(out[:, ~cloud]).all()
    np.testing.assert_array_equal(out[0, ~cloud], reflectance(1500))
    b04 = (np.arange(144) + 1100).reshape(12, 12)
    np.testing.assert_array_equal(out[1, ~cloud], reflectance(b04)[~cloud])
    np.testing.assert_array_equal(out[2, ~cloud], reflectance(np.repeat(np.repeat(ramp(6, 6), 2, 0), 2, 1))[~cloud])

    # The IMG_DATA folder alone names no level: it must be stated.
    with pytest.raises(InputError, match="processing level unknown"):
        discover(geotiff(granule / "IMG_DATA", layout="band_files", processing_baseline="04.00"), INGEST)
    [stated] = discover(
        geotiff(granule / "IMG_DATA", layout="band_files", product_level="L2A", processing_baseline="04.00"), INGEST
    )
    assert stated.extra["level_source"] == "job spec product_level" and stated.bands == scene.bands


def test_gee_per_band_names(tmp_path: Path) -> None:
    folder = tmp_path / "gee"
    image = "20210612T104619_20210612T104837_T31UFS"
    write(folder / f"{image}_B2.tif", np.full((12, 12), 1200, np.uint16))
    write(folder / f"{image}_B8A.tif", np.full((6, 6), 3400, np.uint16), 20.0)
    write(folder / f"{image}_QA60.tif", np.zeros((12, 12), np.uint16))  # not a band file: the pattern skips it
    [scene] = discover(geotiff(folder, layout="band_files", product_level="L2A", add_offset=0), INGEST)
    assert scene.scene_id == image and set(scene.bands) == {"B02", "B8A"}
    assert scene.acquired == dt.datetime(2021, 6, 12, tzinfo=UTC) and scene.extra["tile"] == "31UFS"
    out = read_scene(scene, GRID, ("B02", "B8A"), (), resampling="bilinear", require_scl=False)
    np.testing.assert_array_equal(out[0], np.full((12, 12), np.float32(1200) / np.float32(10000)))
    np.testing.assert_array_equal(out[1], np.full((12, 12), np.float32(3400) / np.float32(10000)))

    # bands: takes only those; a user pattern whose band group also catches QA60 records it as ignored
    pattern = r"^(?P<scene>.+_T\d\d[A-Z]{3})_(?P<band>[A-Z0-9]+)\.tif$"
    [only] = discover(
        geotiff(folder, layout="band_files", file_pattern=pattern, bands=["b2"], product_level="L2A", add_offset=0),
        INGEST,
    )
    assert set(only.bands) == {"B02"} and only.acquired.day == 12  # date by date_pattern on the name
    assert set(only.extra["ignored_bands"]) == {f"{image}_B8A.tif", f"{image}_QA60.tif"}


def test_band_files_in_epsg4326_onto_a_utm_grid(tmp_path: Path) -> None:
    folder = tmp_path / "wgs84"
    # a 0.04 degree square (about 2.8 x 4.4 km) around the grid, which lies at 4.439-4.441 E, 51.441-51.442 N
    west, north = 4.42, 51.46
    write(folder / "S2_20210612_B2.tif", np.full((40, 40), 2200, np.uint16), 0.001, crs=WGS84, origin=(west, north))
    write(folder / "S2_20210612_B11.tif", np.full((20, 20), 3300, np.uint16), 0.002, crs=WGS84, origin=(west, north))
    [scene] = discover(geotiff(folder, layout="band_files", product_level="L2A", add_offset=-1000), INGEST)
    assert scene.crs == WGS84
    np.testing.assert_allclose(scene.bounds, (west, north - 0.04, west + 0.04, north))
    assert GRID.intersects(scene.bounds, scene.crs)
    out = read_scene(scene, GRID, ("B02", "B11"), (), resampling="bilinear", require_scl=False)
    np.testing.assert_array_equal(out[0], np.full((12, 12), reflectance(2200)))
    np.testing.assert_array_equal(out[1], np.full((12, 12), reflectance(3300)))

    # the same as one multi-band file per date
    both = np.stack([np.full((40, 40), 2200, np.uint16), np.full((40, 40), 3300, np.uint16)])
    multi = write(
        tmp_path / "S2_20210612.tif", both, 0.001, crs=WGS84, origin=(west, north), descriptions=["B2", "B11"]
    )
    [one] = discover(geotiff(multi, product_level="L2A", add_offset=-1000), INGEST)
    assert one.crs == WGS84 and set(one.bands) == {"B02", "B11"}
    out = read_scene(one, GRID, ("B11",), (), resampling="nearest", require_scl=False)
    np.testing.assert_array_equal(out[0], np.full((12, 12), reflectance(3300)))

    # One file of the acquisition in another CRS: refused, naming it.
    write(folder / "S2_20210612_B04.tif", np.full((12, 12), 1000, np.uint16))
    with pytest.raises(InputError, match="CRS EPSG:32631 differs from EPSG:4326") as info:
        discover(geotiff(folder, layout="band_files", product_level="L2A", add_offset=0), INGEST)
    assert str(folder / "S2_20210612_B04.tif") in str(info.value)


def test_band_files_are_confined_and_duplicates_refused(tmp_path: Path) -> None:
    folder = tmp_path / "bands"
    write(folder / "S2_20210612_B02.tif", np.full((12, 12), 1, np.uint16))
    outside = write(tmp_path / "elsewhere" / "S2_20210612_B03.tif", np.full((12, 12), 1, np.uint16))
    (folder / "sub").mkdir()
    (folder / "sub" / outside.name).symlink_to(outside)
    spec = geotiff(folder, layout="band_files", product_level="L2A", add_offset=0)
    with pytest.raises(InputError, match="outside the folders this job may read"):
        discover(spec, INGEST, access=InputAccess(roots=(str(folder),)))
    (folder / "sub" / outside.name).unlink()
    write(folder / "sub" / "S2_20210612_B02.tif", np.full((12, 12), 1, np.uint16))  # same band, same pixel size
    with pytest.raises(InputError, match="second B02 file of acquisition"):
        discover(spec, INGEST)
    with pytest.raises(InputError, match="no file name gives a Sentinel-2 band"):
        discover(geotiff(outside.parent, layout="band_files", file_pattern=r"(?P<band>X\d)\.tif"), INGEST)


# -- stacks --------------------------------------------------------------------------------------------------------

MONTHS = [dt.date(2021, m, 15) for m in range(1, 13)]


@pytest.mark.parametrize("style", ["B2_3", "0_B2", "B2_20210115"])
def test_twelve_date_stack_with_band_descriptions(tmp_path: Path, style: str) -> None:
    names = ["B2", "B8A", "QA60"]
    values = np.stack([np.full((4, 4), 1000 + 10 * t + b, np.uint16) for t in range(12) for b in range(3)])
    if style == "B2_3":  # steps 1..12: "B2_10" sorts before "B2_2" as text, after it as a number
        descriptions = [f"{n}_{t + 1}" for t in range(12) for n in names]
    elif style == "0_B2":  # Earth Engine toBands() of a 12-image collection
        descriptions = [f"{t}_{n}" for t in range(12) for n in names]
    else:
        descriptions = [f"{n}_{d:%Y%m%d}" for d in MONTHS for n in names]
    path = write(tmp_path / "S2_SR_monthly.tif", values, descriptions=descriptions)
    dates = None if style == "B2_20210115" else MONTHS
    scenes = discover(geotiff(path, layout="stack", dates=dates, product_level="L2A", add_offset=-1000), INGEST)
    assert [s.acquired.date() for s in scenes] == MONTHS
    assert [s.scene_id for s in scenes][:2] == ["S2_SR_monthly_20210115", "S2_SR_monthly_20210215"]
    assert scenes[0].extra["date_source"].startswith("band descriptions" if dates is None else "job spec dates")
    for t, scene in enumerate(scenes):
        assert set(scene.bands) == {"B02", "B8A"}
        assert (scene.bands["B02"].index, scene.bands["B8A"].index) == (3 * t + 1, 3 * t + 2)
        assert len(scene.extra["ignored_bands"]) == 12 and "QA60" in scene.extra["ignored_bands"][0]
    out = read_scene(scenes[10], GRID, ("B02", "B8A"), (), resampling="nearest", require_scl=False)
    np.testing.assert_array_equal(out[0, :4, :4], np.full((4, 4), reflectance(1100)))
    np.testing.assert_array_equal(out[1, :4, :4], np.full((4, 4), reflectance(1101)))
    assert np.isnan(out[:, 4:, :]).all()  # the stack covers only the top-left 4 x 4 px

    if dates is not None:
        with pytest.raises(InputError, match=r"12 time steps .* dates: lists 11"):
            discover(geotiff(path, layout="stack", dates=MONTHS[:11], product_level="L2A", add_offset=0), INGEST)


def test_stack_without_descriptions_by_band_order(tmp_path: Path) -> None:
    dates = MONTHS[:3]
    # band_major: B04 at the three dates, then a band to ignore at the three dates, then B08
    values = np.stack([np.full((4, 4), 100 * (b + 1) + t, np.uint16) for b in range(3) for t in range(3)])
    path = write(tmp_path / "stack.tif", values)
    fields: dict[str, Any] = {"layout": "stack", "dates": dates, "product_level": "L1C", "add_offset": 0}
    scenes = discover(geotiff(path, bands=["B4", None, "B8"], band_order="band_major", **fields), INGEST)
    assert [s.acquired.date() for s in scenes] == dates
    assert [(s.bands["B04"].index, s.bands["B08"].index) for s in scenes] == [(1, 7), (2, 8), (3, 9)]
    out = read_scene(scenes[2], GRID, ("B04", "B08"), (), resampling="nearest", require_scl=False)
    assert out[0, 0, 0] == np.float32(102) / np.float32(10000) and out[1, 0, 0] == np.float32(302) / np.float32(10000)
    date_major = discover(geotiff(path, bands=["B04", None, "B08"], band_order="date_major", **fields), INGEST)
    assert [(s.bands["B04"].index, s.bands["B08"].index) for s in date_major] == [(1, 3), (4, 6), (7, 9)]

    with pytest.raises(InputError, match="has no band descriptions"):
        discover(geotiff(path, **fields), INGEST)
    with pytest.raises(InputError, match=r"has 9 bands but bands x dates is 2 x 3 = 6"):
        discover(geotiff(path, bands=["B04", "B08"], band_order="date_major", **fields), INGEST)


# -- dates ---------------------------------------------------------------------------------------------------------


def test_dates_from_spec_metadata_and_their_precedence(tmp_path: Path) -> None:
    values = np.full((1, 4, 4), 1500, np.uint16)
    undated = write(tmp_path / "undated" / "mosaic.tif", values)
    fields: dict[str, Any] = {"bands": ["B04"], "product_level": "L2A", "add_offset": 0}
    [stated] = discover(geotiff(undated, date=dt.date(2021, 6, 12), **fields), INGEST)
    assert stated.acquired == dt.datetime(2021, 6, 12, tzinfo=UTC) and stated.extra["date_source"] == "job spec date"

    with pytest.raises(InputError) as info:
        discover(geotiff(undated, **fields), INGEST)
    message = str(info.value)
    assert message.startswith(f"{undated}: no acquisition date")
    assert "file name" in message and "metadata tag" in message and "date: YYYY-MM-DD" in message

    tiff_time = write(tmp_path / "t" / "export.tif", values, tags={"TIFFTAG_DATETIME": "2021:07:03 10:56:21"})
    [tagged] = discover(geotiff(tiff_time, **fields), INGEST)
    assert tagged.acquired == dt.datetime(2021, 7, 3, 10, 56, 21, tzinfo=UTC)
    assert tagged.extra["date_source"] == "metadata TIFFTAG_DATETIME"
    # TIFFTAG_DATETIME is when the file was written: a date the user states wins over it
    [over] = discover(geotiff(tiff_time, date=dt.date(2021, 6, 12), **fields), INGEST)
    assert over.acquired.date() == dt.date(2021, 6, 12)

    # an acquisition tag wins over the spec's date, the file name over both
    ms = str(int(dt.datetime(2021, 8, 1, 10, 0, tzinfo=UTC).timestamp() * 1000))
    gee = write(tmp_path / "g" / "export.tif", values, tags={"system:time_start": ms})
    [from_ms] = discover(geotiff(gee, date=dt.date(2021, 6, 12), **fields), INGEST)
    assert from_ms.acquired == dt.datetime(2021, 8, 1, 10, 0, tzinfo=UTC)
    sensed = write(tmp_path / "s" / "S2_20210901.tif", values, tags={"SENSING_TIME": "2021-09-02T10:46:19.024Z"})
    [named] = discover(geotiff(sensed, **fields), INGEST)
    assert named.acquired == dt.datetime(2021, 9, 1, tzinfo=UTC) and named.extra["date_source"] == "file name"
    moved = write(tmp_path / "s2" / "scene.tif", values, tags={"ACQUISITION_DATE": "2021-09-02T10:46:19Z"})
    assert discover(geotiff(moved, **fields), INGEST)[0].acquired == dt.datetime(2021, 9, 2, 10, 46, 19, tzinfo=UTC)

    broken = write(tmp_path / "b" / "scene.tif", values, tags={"ACQUISITION_DATE": "yesterday"})
    with pytest.raises(InputError, match="metadata ACQUISITION_DATE 'yesterday' is not a date"):
        discover(geotiff(broken, **fields), INGEST)


# -- processing level ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tags", "stated", "level"),
    [
        ("S2A_MSIL2A_20210612T104619.tif", {}, None, "L2A"),
        ("S2B_MSIL1C_20210612T104619.tif", {}, None, "L1C"),
        ("S2L1C_2015-07-11.tif", {}, None, "L1C"),
        ("S2L2A_2021-06-12.tif", {}, "L2A", "L2A"),
        ("tile_L2A_20210612.tif", {}, None, "L2A"),
        ("scene_20210612.tif", {"PROCESSING_LEVEL": "Level-1C"}, None, "L1C"),
        ("scene_20210612.tif", {"PRODUCT_TYPE": "S2MSI2A"}, "L2A", "L2A"),
        ("scene_20210612.tif", {}, "L1C", "L1C"),
    ],
)
def test_level_from_name_tags_or_spec(
    tmp_path: Path, name: str, tags: dict[str, str], stated: str | None, level: str
) -> None:
    path = write(tmp_path / name, np.full((1, 4, 4), 1500, np.uint16), tags=tags)
    [scene] = discover(geotiff(path, bands=["B04"], product_level=stated, processing_baseline="04.00"), INGEST)
    assert scene.level == level


def test_level_disagreement_and_unknown(tmp_path: Path) -> None:
    values = np.full((1, 4, 4), 1500, np.uint16)
    l1c = write(tmp_path / "S2B_MSIL1C_20210612T104619.tif", values)
    with pytest.raises(InputError) as info:
        discover(geotiff(l1c, bands=["B04"], product_level="L2A", add_offset=0), INGEST)
    assert str(info.value) == (
        f"{l1c}: processing levels disagree: file name says L1C, job spec product_level says L2A"
    )
    tagged = write(tmp_path / "x_20210612.tif", values, tags={"PRODUCT_TYPE": "S2MSI2A"})
    with pytest.raises(InputError, match="metadata PRODUCT_TYPE 'S2MSI2A' says L2A, job spec product_level says L1C"):
        discover(geotiff(tagged, bands=["B04"], product_level="L1C"), INGEST)

    plain = write(tmp_path / "y_20210612.tif", values)
    with pytest.raises(InputError) as info:
        discover(geotiff(plain, bands=["B04"], add_offset=0), INGEST)
    assert str(info.value) == (
        f"{plain}: processing level unknown (Level-2A or Level-1C?); "
        "state it with product_level: L2A or L1C on this input"
    )
    # Level-2A known only from the name: the radiometry rule applies at discovery
    l2a = write(tmp_path / "S2A_MSIL2A_20210612T104619.tif", values)
    with pytest.raises(InputError, match=r"is Level-2A \(file name\); give processing_baseline"):
        discover(geotiff(l2a, bands=["B04"]), INGEST)
    [old_l1c] = discover(geotiff(l1c, bands=["B04"]), INGEST)  # Level-1C needs no offset
    assert old_l1c.radiometry.offset("B04") == 0.0


# -- band lists ----------------------------------------------------------------------------------------------------


def test_null_bands_and_descriptions_with_other_bands(tmp_path: Path) -> None:
    values = np.stack([np.full((12, 12), v, np.uint16) for v in (1200, 7, 1400, 4, 55)])
    values[3, 0, 0] = 9  # SCL cloud
    path = write(tmp_path / "S2A_MSIL2A_20210612.tif", values, descriptions=["B2", "QA60", "b8a", "SCL", "MSK_CLDPRB"])
    [listed] = discover(geotiff(path, bands=["B02", None, "B04", "SCL", None], add_offset=0), INGEST)
    assert {n: r.index for n, r in listed.bands.items()} == {"B02": 1, "B04": 3} and listed.scl.index == 4
    assert listed.extra["ignored_bands"] == ("band 2 (null in bands)", "band 5 (null in bands)")
    out = read_scene(listed, GRID, ("B04",), (9,), resampling="nearest")
    assert np.isnan(out[0, 0, 0]) and out[0, 0, 1] == np.float32(1400) / np.float32(10000)

    [described] = discover(geotiff(path, add_offset=0), INGEST)
    assert {n: r.index for n, r in described.bands.items()} == {"B02": 1, "B8A": 3} and described.scl.index == 4
    assert described.extra["ignored_bands"] == ("band 2 (QA60)", "band 5 (MSK_CLDPRB)")
    with pytest.raises(InputError, match="has 5 band"):
        discover(geotiff(path, bands=["B02", "B03"], add_offset=0), INGEST)

    twice = write(tmp_path / "S2A_MSIL2A_20210613.tif", values[:2], descriptions=["B02", "b2"])
    with pytest.raises(InputError, match="bands 1 and 2 are both described as B02"):
        discover(geotiff(twice, add_offset=0), INGEST)
    bare = write(tmp_path / "S2A_MSIL2A_20210614.tif", values[:2])
    with pytest.raises(InputError, match="has no band descriptions to name its bands"):
        discover(geotiff(bare, add_offset=0), INGEST)


def test_band_names_and_layout_fields() -> None:
    assert [canonical_band(n) for n in ("B2", "b02", "B8A", "b08a", "B8", "scl", "B12", "B13", "QA60")] == [
        "B02", "B02", "B8A", "B8A", "B08", "SCL", "B12", None, None,
    ]  # fmt: skip
    assert GeoTiffInput(paths=["a.tif"], bands=["B2", None, "b8a"], add_offset=0).bands == ("B02", None, "B8A")
    assert GeoTiffInput(paths=["a.tif"], add_offset=0).product_level is None  # no silent L2A
    bad: list[tuple[dict[str, Any], str]] = [
        ({"bands": ["B2", "B02"]}, "duplicate band names"),
        ({"bands": ["B99"]}, "unknown band names"),
        ({"bands": [None]}, "names no band"),
        ({"file_pattern": "(?P<band>B02)"}, "file_pattern is for layout: band_files"),
        ({"layout": "stack", "date": "2021-06-12"}, "not date"),
        ({"layout": "stack", "bands": ["B02"], "dates": ["2021-06-12"]}, "bands, dates and band_order"),
        ({"dates": ["2021-06-12"]}, "dates is for layout: stack"),
        ({"layout": "band_files", "bands": ["B02", None]}, "null entries"),
        ({"product_level": "L2A"}, "processing_baseline"),
    ]
    for fields, message in bad:
        with pytest.raises(ConfigError, match=message):
            validate_job({"inputs": [{"kind": "geotiff", "paths": ["a.tif"], **fields}],
                          "period": {"start": "2021-01-01", "end": "2021-12-31"}})  # fmt: skip


# -- the README's examples -----------------------------------------------------------------------------------------


def readme_layout_examples() -> list[str]:
    """The ```yaml blocks of README.md's "### GeoTIFF layouts" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### GeoTIFF layouts", 1)[1]
    section = re.split(r"^#{2,3} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    return re.findall(r"^```yaml\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


def test_readme_layout_examples_validate() -> None:
    examples = readme_layout_examples()
    layouts = []
    for block in examples:
        job = validate_job(yaml.safe_load(block), "README GeoTIFF layouts example")
        layouts.extend(i.layout for i in job.inputs if i.kind == "geotiff")
    assert {"file_per_date", "band_files", "stack"} <= set(layouts) and len(examples) >= 4
