"""SAFE reader: metadata, radiometry by baseline, SCL masking, resampling, zips and broken inputs.

Every product here is a real-format SAFE (real JP2 files, ESA metadata structure) built by
``tests.fixtures.build_safe``.
"""

from __future__ import annotations

import datetime as dt
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from suelo.errors import InputError
from suelo.grid import Grid
from suelo.ingest import safe
from suelo.ingest.scene import Scene, read_scene
from suelo.settings import DEFAULT_SCL_MASK, IngestSpec, MaskingSpec, SafeInput, validate_job
from tests.fixtures import DEFAULT_BANDS, build_safe, default_band, write_jp2, zip_safe

#: The builder's default tile: 20 x 20 pixels of 10 m from (600000, 5700000), i.e. 10 x 10 pixels at 20 m.
GRID = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5700000), 20, 20)


def discover(*paths: Path) -> list[Scene]:
    return safe.discover(SafeInput(paths=paths), IngestSpec())


def only_scene(*paths: Path) -> Scene:
    scenes = discover(*paths)
    assert len(scenes) == 1
    return scenes[0]


def reflectance(dn: np.ndarray, offset: float) -> np.ndarray:
    """What read_scene must compute, in the same float32 arithmetic."""
    return (dn.astype(np.float32) + np.float32(offset)) / np.float32(10000)


def band_file(safe_dir: Path, band: str) -> Path:
    (path,) = safe_dir.glob(f"GRANULE/*/IMG_DATA/**/*_{band}_*.jp2")
    return path


# -- metadata and radiometry ---------------------------------------------------------------------------------


def test_metadata_parsed(tmp_path: Path) -> None:
    scene = only_scene(build_safe(tmp_path))
    assert scene.scene_id == "S2B_MSIL2A_20210601T104021_N0400_R051_T31UFS_20210601T134104"
    assert scene.acquired == dt.datetime(2021, 6, 1, 10, 40, 21, 24000, tzinfo=dt.timezone.utc)
    assert scene.level == "L2A"
    assert scene.crs == CRS.from_epsg(32631)
    assert scene.bounds == (600000.0, 5699800.0, 600200.0, 5700000.0)
    assert sorted(scene.bands) == sorted(DEFAULT_BANDS)
    assert scene.scl is not None and scene.scl.path.endswith("_SCL_20m.jp2")
    assert scene.bands["B02"].path.endswith("R10m/T31UFS_20210601T104021_B02_10m.jp2")
    assert scene.bands["B05"].path.endswith("R20m/T31UFS_20210601T104021_B05_20m.jp2")
    assert scene.nodata_values == (0.0,)
    assert scene.extra["saturated_value"] == 65535.0


@pytest.mark.parametrize(("baseline", "offset"), [("03.01", 0.0), ("04.00", -1000.0)])
def test_radiometry_by_baseline(tmp_path: Path, baseline: str, offset: float) -> None:
    dn10 = (1500 + np.arange(400).reshape(20, 20)).astype(np.uint16)
    dn20 = (2500 + np.arange(100).reshape(10, 10)).astype(np.uint16)
    scene = only_scene(build_safe(tmp_path, baseline=baseline, bands={"B02": dn10, "B05": dn20}))

    assert scene.radiometry.quantification == 10000.0
    assert scene.radiometry.processing_baseline == baseline
    assert scene.radiometry.offsets["B02"] == offset and scene.radiometry.offsets["B05"] == offset
    assert scene.radiometry.source == f"MTD_MSIL2A.xml (baseline {baseline})"

    out = read_scene(scene, GRID, ("B02", "B05"), DEFAULT_SCL_MASK, resampling="nearest")
    np.testing.assert_array_equal(out[0], reflectance(dn10, offset))
    np.testing.assert_array_equal(out[1], reflectance(np.kron(dn20, np.ones((2, 2), np.uint16)), offset))
    # DN 1500 at the top-left pixel: 0.15 before baseline 04.00, 0.05 from it on.
    assert out[0, 0, 0] == pytest.approx(0.15 if offset == 0 else 0.05, abs=1e-7)


# -- SCL masking ---------------------------------------------------------------------------------------------

#: (row, col) of a 20 m SCL pixel -> class
SCL_CLASSES = {(0, 0): 0, (0, 1): 1, (1, 2): 3, (2, 3): 8, (3, 4): 9, (4, 5): 10,
               (5, 6): 5, (6, 7): 6, (7, 8): 7, (8, 9): 11, (9, 0): 2}  # fmt: skip


@pytest.mark.parametrize("mask_snow", [False, True])
def test_scl_masking(tmp_path: Path, mask_snow: bool) -> None:
    scl = np.full((10, 10), 4, dtype=np.uint8)
    for (row, col), cls in SCL_CLASSES.items():
        scl[row, col] = cls
    scene = only_scene(build_safe(tmp_path, scl=scl))
    masked = MaskingSpec(mask_snow=mask_snow).masked_classes

    out = read_scene(scene, GRID, ("B02", "B05"), masked, resampling="nearest")

    masked_20m = np.isin(scl, (0, 1, 3, 8, 9, 10, 11) if mask_snow else (0, 1, 3, 8, 9, 10))
    expected_nan = np.kron(masked_20m, np.ones((2, 2), dtype=bool))
    assert np.isnan(out[0]).sum() == 4 * (7 if mask_snow else 6)
    for band in out:
        np.testing.assert_array_equal(np.isnan(band), expected_nan)
    # Snow at 20 m pixel (8, 9) is 10 m rows 16-17, cols 18-19: kept unless masked.
    assert np.isnan(out[0, 16:18, 18:20]).all() == mask_snow
    # Vegetation (4), bare soil (5), water (6), unclassified (7), dark area (2) are kept with their values.
    np.testing.assert_array_equal(out[0, 0:2, 4:6], reflectance(default_band("B02")[0:2, 4:6], -1000))
    assert np.isfinite(out[:, 10:12, 12:14]).all() and np.isfinite(out[:, 18:20, 0:2]).all()


# -- resampling 20 m -> 10 m ---------------------------------------------------------------------------------


def test_20m_nearest_gives_2x2_blocks(tmp_path: Path) -> None:
    dn20 = (3000 + 7 * np.arange(100).reshape(10, 10)).astype(np.uint16)
    scene = only_scene(build_safe(tmp_path, bands={"B02": default_band("B02"), "B11": dn20}))
    out = read_scene(scene, GRID, ("B11",), DEFAULT_SCL_MASK, resampling="nearest")
    np.testing.assert_array_equal(out[0], reflectance(np.kron(dn20, np.ones((2, 2), np.uint16)), -1000))


def test_20m_bilinear_interpolates_linearly(tmp_path: Path) -> None:
    # DN = 2000 + 100 * col at 20 m pixel centres x = 20 col + 10. A 10 m pixel centre x = 10 j + 5 sits at
    # 20 m column (10 j + 5 - 10) / 20 = j / 2 - 1/4, i.e. at 1/4 or 3/4 between two 20 m centres, so linear
    # interpolation gives DN = 2000 + 100 (j / 2 - 1/4) = 1975 + 50 j. The outermost columns need a neighbour
    # outside the tile, so only the interior is checked.
    dn20 = np.tile(2000 + 100 * np.arange(10), (10, 1)).astype(np.uint16)
    scene = only_scene(build_safe(tmp_path, bands={"B02": default_band("B02"), "B05": dn20}))
    out = read_scene(scene, GRID, ("B05",), DEFAULT_SCL_MASK, resampling="bilinear")
    expected_dn = np.tile(1975 + 50 * np.arange(20), (20, 1))
    np.testing.assert_array_equal(out[0][:, 1:19], reflectance(expected_dn, -1000)[:, 1:19])
    assert out[0, 7, 1] == pytest.approx((2025 - 1000) / 10000, abs=1e-7)  # 3/4 of 2000 + 1/4 of 2100


# -- band selection ------------------------------------------------------------------------------------------


def test_prefers_native_resolution_else_finest(tmp_path: Path) -> None:
    safe_dir = build_safe(tmp_path)
    img = band_file(safe_dir, "B02").parent.parent
    transform = {res: Affine(res, 0, 600000, 0, -res, 5700000) for res in (10, 20, 60)}
    stem = band_file(safe_dir, "B02").name.split("_B02_")[0]
    # Like a real L2A: every band also resampled to coarser folders, and B05 here also at 10 m.
    write_jp2(img / "R20m" / f"{stem}_B02_20m.jp2", default_band("B05"), "EPSG:32631", transform[20])
    write_jp2(img / "R10m" / f"{stem}_B05_10m.jp2", default_band("B02"), "EPSG:32631", transform[10])
    # B01 is native 60 m but only exists at 20 m here, as well as at a coarser 120 m: the finest wins.
    write_jp2(img / "R20m" / f"{stem}_B01_20m.jp2", default_band("B05"), "EPSG:32631", transform[20])
    write_jp2(
        img / "R120m" / f"{stem}_B01_120m.jp2",
        np.ones((2, 2), np.uint16),
        "EPSG:32631",
        Affine(120, 0, 600000, 0, -120, 5700000),
    )
    scene = only_scene(safe_dir)
    assert scene.bands["B02"].path.endswith("_B02_10m.jp2")
    assert scene.bands["B05"].path.endswith("_B05_20m.jp2")
    assert scene.bands["B01"].path.endswith("_B01_20m.jp2")


def test_missing_band_named_at_read(tmp_path: Path) -> None:
    bands = {b: default_band(b) for b in DEFAULT_BANDS if b != "B11"}
    safe_dir = build_safe(tmp_path, bands=bands)
    scene = only_scene(safe_dir)  # discovery does not need every band
    with pytest.raises(InputError, match="missing band B11") as info:
        read_scene(scene, GRID, ("B02", "B11"), DEFAULT_SCL_MASK)
    assert safe_dir.name in str(info.value)


def test_no_image_files(tmp_path: Path) -> None:
    safe_dir = build_safe(tmp_path)
    for jp2 in safe_dir.rglob("*.jp2"):
        jp2.unlink()
    with pytest.raises(InputError, match="no band image files") as info:
        discover(safe_dir)
    assert safe_dir.name in str(info.value)


# -- broken metadata -----------------------------------------------------------------------------------------


def test_missing_offsets_from_baseline_04_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"MTD_MSIL2A\.xml: processing baseline 04\.00 requires BOA_ADD_OFFSET_VALUES_LIST, "
        r"missing from MTD_MSIL2A\.xml",
    ):
        discover(build_safe(tmp_path, omit_offsets=True))


def test_missing_offsets_before_baseline_04_means_zero(tmp_path: Path) -> None:
    scene = only_scene(build_safe(tmp_path, baseline="02.09"))
    assert scene.radiometry.offset("B04") == 0.0
    assert scene.radiometry.processing_baseline == "02.09"


def test_missing_start_time(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"MTD_MSIL2A\.xml: missing PRODUCT_START_TIME"):
        discover(build_safe(tmp_path, omit_fields=("PRODUCT_START_TIME",)))


def edit_mtd(safe_dir: Path, old: str, new: str) -> None:
    mtd = safe_dir / "MTD_MSIL2A.xml"
    text = mtd.read_text(encoding="utf-8")
    assert old in text
    mtd.write_text(text.replace(old, new), encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "<PRODUCT_START_TIME>2021-06-01T10:40:21.024Z<",
            "<PRODUCT_START_TIME>June 1st<",
            "PRODUCT_START_TIME",
        ),
        (
            "<PRODUCT_START_TIME>2021-06-01T10:40:21.024Z<",
            "<PRODUCT_START_TIME>2021-13-01T10:40:21Z<",
            "ISO 8601",
        ),
        ('unit="none">10000<', 'unit="none">0<', "BOA_QUANTIFICATION_VALUE '0' is not a positive number"),
        ('unit="none">10000<', 'unit="none">ten<', "BOA_QUANTIFICATION_VALUE 'ten'"),
        ('<BOA_ADD_OFFSET band_id="3">-1000<', '<BOA_ADD_OFFSET band_id="3">minus<', "band_id=3 'minus'"),
        ('<BOA_ADD_OFFSET band_id="3">-1000</BOA_ADD_OFFSET>', "", "no BOA_ADD_OFFSET for B04"),
        ("<PROCESSING_BASELINE>04.00<", "<PROCESSING_BASELINE>four<", "PROCESSING_BASELINE 'four'"),
        ("</n1:Level-2A_User_Product>", "</n1:Level-2A_User_Produ", "malformed XML"),
        ("<Product_Info>", "<Product_Info>", "malformed XML"),  # truncated below
    ],
)
def test_bad_metadata(tmp_path: Path, old: str, new: str, message: str) -> None:
    safe_dir = build_safe(tmp_path)
    edit_mtd(safe_dir, old, new)
    if old == new:
        mtd = safe_dir / "MTD_MSIL2A.xml"
        mtd.write_bytes(mtd.read_bytes()[:500])
    with pytest.raises(InputError, match=r"MTD_MSIL2A\.xml: ") as info:
        discover(safe_dir)
    assert message in str(info.value)


def test_entity_declarations_refused(tmp_path: Path) -> None:
    safe_dir = build_safe(tmp_path)
    edit_mtd(safe_dir, "<n1:Level-2A_User_Product", '<!DOCTYPE x [<!ENTITY a "aaaa">]>\n<n1:Level-2A_User_Product')
    with pytest.raises(InputError, match="entities"):
        discover(safe_dir)


# -- inputs: folders, zips -----------------------------------------------------------------------------------


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as info:
        discover(tmp_path / "nope.SAFE")
    assert "nope.SAFE" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Sentinel-2 SAFE product"):
        discover(tmp_path / "empty")


def test_folder_of_products(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = build_safe(tmp_path / "a")
    (tmp_path / "in").mkdir()
    zip_safe(build_safe(tmp_path / "b", acquired="2021-06-11T10:40:21.024Z"), tmp_path / "in" / "second.zip")
    first.rename(tmp_path / "in" / first.name)
    (tmp_path / "in" / "notes.txt").write_text("not a product")
    scenes = discover(tmp_path / "in")
    assert sorted(s.acquired.day for s in scenes) == [1, 11]


def test_same_product_twice_counted_once(tmp_path: Path) -> None:
    safe_dir = build_safe(tmp_path)
    zip_path = zip_safe(safe_dir)
    assert len(discover(safe_dir, zip_path, tmp_path)) == 1


def test_zip_reads_like_folder(tmp_path: Path) -> None:
    safe_dir = build_safe(
        tmp_path / "dir", scl=np.kron(np.array([[4, 9], [8, 5]], np.uint8), np.ones((5, 5), np.uint8))
    )
    zip_path = zip_safe(safe_dir, tmp_path / "product.zip")
    from_dir, from_zip = only_scene(safe_dir), only_scene(zip_path)
    assert from_zip.source == str(zip_path)
    assert from_zip.bands["B02"].label.startswith(f"{zip_path}!{safe_dir.name}/GRANULE/")
    assert from_zip.bands["B02"].path.startswith("/vsizip/")
    assert (from_zip.scene_id, from_zip.acquired, from_zip.bounds) == (
        from_dir.scene_id,
        from_dir.acquired,
        from_dir.bounds,
    )
    assert from_zip.radiometry == from_dir.radiometry
    a = read_scene(from_dir, GRID, DEFAULT_BANDS, DEFAULT_SCL_MASK)
    b = read_scene(from_zip, GRID, DEFAULT_BANDS, DEFAULT_SCL_MASK)
    np.testing.assert_array_equal(a, b)
    assert np.isnan(a[:, :10, 10:]).all() and np.isnan(a[:, 10:, :10]).all() and np.isfinite(a[:, :10, :10]).all()


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "X.SAFE/../../evil.txt", "C:/evil.txt"])
def test_zip_path_traversal_refused(tmp_path: Path, member: str) -> None:
    zip_path = zip_safe(build_safe(tmp_path))
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr(zipfile.ZipInfo(member), "gotcha")
    with pytest.raises(InputError, match="path traversal") as info:
        discover(zip_path)
    assert member in str(info.value) and str(zip_path) in str(info.value)


def test_zip_symlink_refused(tmp_path: Path) -> None:
    safe_dir = build_safe(tmp_path)
    zip_path = zip_safe(safe_dir)
    link = zipfile.ZipInfo(f"{safe_dir.name}/GRANULE/link.jp2")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(InputError, match=r"symlink: .*link\.jp2 \(path traversal\)"):
        discover(zip_path)


def test_garbage_zip(tmp_path: Path) -> None:
    bad = tmp_path / "S2B_MSIL2A_x.zip"
    bad.write_bytes(b"this is not a zip archive" * 40)
    with pytest.raises(InputError, match="unreadable zip archive") as info:
        discover(bad)
    assert str(bad) in str(info.value)


def test_zip_without_product(tmp_path: Path) -> None:
    zip_path = tmp_path / "other.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(InputError, match="holds no SAFE product"):
        discover(zip_path)


def test_zip_bomb_guards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zip_path = zip_safe(build_safe(tmp_path))
    monkeypatch.setattr(safe, "ZIP_MAX_TOTAL_BYTES", 1000)
    with pytest.raises(InputError, match="zip bomb"):
        discover(zip_path)
    monkeypatch.undo()
    with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", bytes(1_000_000))  # compresses about 1000-fold
    monkeypatch.setattr(safe, "ZIP_RATIO_MIN_BYTES", 100_000)
    with pytest.raises(InputError, match=r"zeros\.bin expands \d+-fold"):
        discover(zip_path)


# -- broken images -------------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_footprint_band_fails_at_discovery(tmp_path: Path) -> None:
    safe_dir = build_safe(tmp_path)
    jp2 = band_file(safe_dir, "B02")  # the band whose header gives the footprint
    truncate(jp2)
    with pytest.raises(InputError, match="corrupt or truncated") as info:
        discover(safe_dir)
    assert str(info.value).startswith(str(jp2))


def test_truncated_band_fails_at_read(tmp_path: Path) -> None:
    safe_dir = build_safe(tmp_path)
    jp2 = band_file(safe_dir, "B05")
    truncate(jp2)
    scene = only_scene(safe_dir)  # only one header is opened at discovery
    with pytest.raises(InputError, match="corrupt, truncated") as info:
        read_scene(scene, GRID, ("B02", "B05"), DEFAULT_SCL_MASK)
    assert str(info.value).startswith(str(jp2))


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_jp2_cut_inside_codestream_fails_at_read(tmp_path: Path, keep: float) -> None:
    # Cut inside the codestream box (jp2c), after the header boxes: the file opens (size, CRS, transform all
    # intact) and fails only when the pixels are decoded. (Cut within the codestream's own main header, the
    # first few dozen bytes of jp2c, it already fails to open: "opj_read_header() failed".)
    safe_dir = build_safe(tmp_path)
    jp2 = band_file(safe_dir, "B02")
    data = jp2.read_bytes()
    codestream = data.index(b"jp2c") + 4
    jp2.write_bytes(data[: codestream + int((len(data) - codestream) * keep)])
    scene = only_scene(safe_dir)
    with pytest.raises(InputError, match="corrupt, truncated") as info:
        read_scene(scene, GRID, ("B02",), DEFAULT_SCL_MASK)
    assert str(info.value).startswith(str(jp2))


def test_garbage_jp2(tmp_path: Path) -> None:
    safe_dir = build_safe(tmp_path)
    jp2 = band_file(safe_dir, "B02")
    jp2.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InputError, match="corrupt or truncated") as info:
        discover(safe_dir)
    assert str(info.value).startswith(str(jp2))


def test_truncated_jp2_in_zip_names_zip_member(tmp_path: Path) -> None:
    safe_dir = build_safe(tmp_path / "dir")
    truncate(band_file(safe_dir, "B02"))
    zip_path = zip_safe(safe_dir, tmp_path / "product.zip")
    with pytest.raises(InputError, match="corrupt or truncated") as info:
        discover(zip_path)
    assert str(info.value).startswith(f"{zip_path}!{safe_dir.name}/GRANULE/")
    assert "_B02_10m.jp2" in str(info.value)


# -- Level-1C ------------------------------------------------------------------------------------------------


def test_l1c_discovered_as_l1c(tmp_path: Path) -> None:
    scene = only_scene(build_safe(tmp_path, level="L1C"))
    assert scene.level == "L1C"
    assert scene.scl is None
    assert scene.scene_id.startswith("S2B_MSIL1C_")
    assert scene.radiometry.quantification == 10000.0
    assert scene.radiometry.offset("B8A") == -1000.0
    assert scene.radiometry.source == "MTD_MSIL1C.xml (baseline 04.00)"
    assert scene.bands["B02"].path.endswith("IMG_DATA/T31UFS_20210601T104021_B02.jp2")


def test_l1c_refused_unless_allowed(tmp_path: Path) -> None:
    from suelo.ingest import discover_scenes  # the package needs every reader module

    safe_dir = build_safe(tmp_path, level="L1C")
    job = {
        "inputs": [{"kind": "safe", "paths": [str(safe_dir)]}],
        "period": {"start": "2021-01-01", "end": "2021-12-31"},
    }
    with pytest.raises(InputError, match=r"Level-1C.*allow_l1c"):
        discover_scenes(validate_job(job))
    scenes = discover_scenes(validate_job({**job, "ingest": {"allow_l1c": True}}))
    assert [s.level for s in scenes] == ["L1C"]


def test_builder_jp2_is_lossless(tmp_path: Path) -> None:
    dn = np.random.default_rng(0).integers(1, 65535, size=(20, 20), dtype=np.uint16)
    scl = np.arange(100, dtype=np.uint8).reshape(10, 10) % 12
    safe_dir = build_safe(tmp_path, bands={"B02": dn}, scl=scl)
    with rasterio.open(band_file(safe_dir, "B02")) as src:
        assert (src.driver, src.dtypes[0]) == ("JP2OpenJPEG", "uint16")
        np.testing.assert_array_equal(src.read(1), dn)
    with rasterio.open(band_file(safe_dir, "SCL")) as src:
        assert src.dtypes[0] == "uint8"
        np.testing.assert_array_equal(src.read(1), scl)


def test_band_headers_checked_for_validate(tmp_path: Path) -> None:
    """Discovery opens one band per granule; check_band_headers (run by ``suelo validate``) opens every one."""
    from suelo.ingest import check_band_headers

    safe_dir = build_safe(tmp_path)
    scene = only_scene(safe_dir)
    assert check_band_headers([scene], DEFAULT_BANDS) == len(DEFAULT_BANDS) + 1  # and the SCL
    jp2 = band_file(safe_dir, "B04")
    truncate(jp2)
    with pytest.raises(InputError, match="corrupt, truncated or unreadable") as info:
        check_band_headers([only_scene(safe_dir)], DEFAULT_BANDS)
    assert str(info.value).startswith(str(jp2))


def test_band_symlinked_out_of_the_product_is_refused_when_confined(tmp_path: Path) -> None:
    from suelo.ingest.confine import InputAccess

    safe_dir = build_safe(tmp_path / "in")
    jp2 = band_file(safe_dir, "B05")
    target = tmp_path / "elsewhere.jp2"
    jp2.rename(target)
    jp2.symlink_to(target)
    assert only_scene(safe_dir).bands["B05"].path == str(jp2)  # a reader called without a job: not confined
    rules = InputAccess(roots=(str(safe_dir),))
    with pytest.raises(InputError, match="outside the folders this job may read") as info:
        safe.discover(SafeInput(paths=(safe_dir,)), IngestSpec(), access=rules)
    assert str(info.value).startswith(f"{jp2}: resolves to {target}")
