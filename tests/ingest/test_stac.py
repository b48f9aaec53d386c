"""STAC reader: asset names, href resolution, radiometry precedence, errors, the shipped Belgian sample."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from suelo.errors import InputError
from suelo.grid import Grid
from suelo.ingest.scene import SourceLink, read_scene
from suelo.ingest.stac import discover, parse_datetime
from suelo.settings import IngestSpec, StacInput
from tests.fixtures import REPO_ROOT, SAMPLE_ITEMS, write_raster

CRS_UTM31 = CRS.from_epsg(32631)
TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5700000.0)
SHAPE = (8, 8)
GRID = Grid(CRS_UTM31, TRANSFORM, *SHAPE)
INGEST = IngestSpec()
SHARED = REPO_ROOT.parent / "shared"  # the read-only data folder beside the project
SHARED_NC = SHARED / "data/worldcereal_extractions/raster_cube/worldcereal_preprocessed_inputs.nc"

EARTH_SEARCH = {"B02": "blue", "B04": "red", "B08": "nir", "SCL": "scl"}


def write_tif(path: Path, values: np.ndarray, nodata: float | None = 0) -> Path:
    """A tiny single-band GeoTIFF on the test grid (COG layout is irrelevant to the reader)."""
    return write_raster(path, values, crs=CRS_UTM31, transform=TRANSFORM, nodata=nodata)


def dn(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1001, 9000, SHAPE, dtype=np.uint16)


def item(
    item_id: str = "S2B_31UFS_20230612_0_L2A",
    assets: dict[str, Any] | None = None,
    **properties: Any,
) -> dict[str, Any]:
    props = {"datetime": "2023-06-12T10:46:29.024000Z", **properties}
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "properties": props,
        "assets": assets or {},
    }


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def stac(path: Path) -> StacInput:
    return StacInput(paths=(path,))


@pytest.fixture
def bands(tmp_path: Path) -> dict[str, np.ndarray]:
    """B02, B04, B08 DNs and an SCL layer written under tmp_path/tiles/."""
    values = {"B02": dn(1), "B04": dn(2), "B08": dn(3)}
    scl = np.full(SHAPE, 4, dtype=np.uint8)
    scl[0, :3] = 9  # cloud high probability
    scl[5, 5] = 3  # cloud shadow
    scl[7, 7] = 0  # no data
    values["SCL"] = scl
    for name, array in values.items():
        write_tif(tmp_path / "tiles" / f"{name}.tif", array, nodata=None if name == "SCL" else 0)
    return values


# naming, hrefs, footprint ----------
def test_earth_search_names_relative_hrefs_and_baseline_offset(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    assets = {es: {"href": f"tiles/{name}.tif"} for name, es in EARTH_SEARCH.items()}
    assets["thumbnail"] = {"href": "https://example.com/thumb.jpg"}  # unknown assets are ignored
    doc = write_json(tmp_path / "item.json", item(assets=assets, **{"s2:processing_baseline": "04.00"}))

    [scene] = discover(stac(doc), INGEST)

    assert set(scene.bands) == {"B02", "B04", "B08"}
    assert scene.bands["B04"].path == str(tmp_path / "tiles" / "B04.tif")
    assert scene.bands["B04"].label == f"{doc} item S2B_31UFS_20230612_0_L2A asset red (tiles/B04.tif)"
    assert scene.link() == SourceLink(str(doc), "STAC Item S2B_31UFS_20230612_0_L2A", "application/geo+json")
    assert scene.scl is not None and scene.scl.path.endswith("SCL.tif")
    assert scene.level == "L2A"
    assert scene.acquired == dt.datetime(2023, 6, 12, 10, 46, 29, 24000, tzinfo=dt.timezone.utc)
    assert scene.radiometry.quantification == 10000
    assert scene.radiometry.offset("B04") == -1000
    assert scene.radiometry.source == "STAC s2:processing_baseline 04.00"
    assert scene.nodata_values == (0.0,)
    # no proj:* metadata: the footprint comes from a band header
    assert scene.crs == CRS_UTM31
    assert scene.bounds == pytest.approx(GRID.bounds)

    out = read_scene(scene, GRID, ("B02", "B04", "B08"), (0, 1, 3, 8, 9, 10), resampling="nearest")
    clear = ~np.isin(bands["SCL"], (0, 1, 3, 8, 9, 10))
    for i, name in enumerate(("B02", "B04", "B08")):
        expected = (bands[name].astype(np.float32) - np.float32(1000)) / np.float32(10000)
        np.testing.assert_array_equal(out[i][clear], expected[clear])
    # the SCL masks exactly the cloud, shadow and no-data pixels, in every band
    assert np.array_equal(np.isnan(out).all(axis=0), ~clear)
    assert np.array_equal(np.isnan(out).any(axis=0), ~clear)
    assert (~clear).sum() == 5


def test_planetary_computer_names_absolute_hrefs_and_proj_footprint(
    tmp_path: Path, bands: dict[str, np.ndarray]
) -> None:
    assets = {name: {"href": str(tmp_path / "tiles" / f"{name}.tif")} for name in ("B02", "B04", "SCL")}
    assets["B08"] = {"href": str(tmp_path / "tiles" / "B08.tif"), "proj:bbox": [1, 2, 3, 4]}
    props = {
        "s2:processing_baseline": "03.01",
        "proj:epsg": 32631,
        "proj:bbox": [600000, 5690000, 610000, 5700000],
    }
    other = tmp_path / "elsewhere"
    other.mkdir()
    doc = write_json(other / "pc.json", {"type": "FeatureCollection", "features": [item(assets=assets, **props)]})

    [scene] = discover(stac(doc), INGEST)

    assert scene.bands["B08"].path == str(tmp_path / "tiles" / "B08.tif")
    assert scene.radiometry.offset("B08") == 0.0
    assert scene.radiometry.processing_baseline == "03.01"
    assert scene.crs == CRS_UTM31
    assert scene.bounds == (600000.0, 5690000.0, 610000.0, 5700000.0)  # item-level proj wins over assets
    out = read_scene(scene, GRID, ("B08",), (), resampling="nearest")
    np.testing.assert_array_equal(out[0], bands["B08"].astype(np.float32) / np.float32(10000))


def test_asset_level_projection_with_proj_code(tmp_path: Path) -> None:
    assets = {"B04": {"href": "https://example.com/B04.tif", "proj:code": "EPSG:32632", "proj:bbox": [0, 1, 2, 3]}}
    doc = write_json(tmp_path / "i.json", item(assets=assets, **{"processing:version": "05.10"}))
    [scene] = discover(stac(doc), INGEST)
    assert scene.crs == CRS.from_epsg(32632)
    assert scene.bounds == (0.0, 1.0, 2.0, 3.0)
    assert scene.radiometry.offset("B04") == -1000
    assert scene.radiometry.source == "STAC processing:version 05.10"


def test_remote_hrefs_become_gdal_virtual_paths(tmp_path: Path) -> None:
    url = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/31/U/FS/B04.tif"
    assets = {
        "red": {"href": url},
        "blue": {"href": "s3://sentinel-cogs/31/U/FS/B02.tif"},
        "nir": {"href": "http://example.com/B08.tif?sig=abc"},
    }
    props = {"earthsearch:boa_offset_applied": True, "proj:epsg": 32631, "proj:bbox": [0, 0, 10, 10]}
    doc = write_json(tmp_path / "remote.json", item(assets=assets, **props))
    [scene] = discover(stac(doc), INGEST)
    assert scene.bands["B04"].path == f"/vsicurl/{url}"
    assert scene.bands["B02"].path == "/vsis3/sentinel-cogs/31/U/FS/B02.tif"
    assert scene.bands["B08"].path == "/vsicurl/http://example.com/B08.tif?sig=abc"
    assert url in scene.bands["B04"].label


def test_folder_of_items_and_start_datetime(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    folder = tmp_path / "items"
    folder.mkdir()
    assets = {"B04": {"href": "../tiles/B04.tif"}}
    ranged = item(
        "range", assets=assets, **{"s2:processing_baseline": "04.00", "start_datetime": "2023-07-01",
                                   "processing:level": "L2A"}
    )  # fmt: skip
    ranged["properties"]["datetime"] = None
    level = {"s2:processing_baseline": "04.00", "processing:level": "L2A"}
    write_json(folder / "a.json", item("a", assets=assets, **level))
    write_json(folder / "b.json", ranged)
    (folder / "notes.txt").write_text("not json")
    scenes = discover(stac(folder), INGEST)
    assert [s.scene_id for s in scenes] == ["a", "range"]
    assert scenes[1].acquired == dt.datetime(2023, 7, 1, tzinfo=dt.timezone.utc)


def test_level_detection(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    assets = {"B04": {"href": "tiles/B04.tif"}}
    base = {"s2:processing_baseline": "04.00"}
    cases = [
        item("x1", assets, **base, **{"s2:product_type": "S2MSI1C"}),
        item("x2", assets, **base, **{"processing:level": "L1C"}),
        item("S2A_MSIL1C_20230612T104629_N0509_R051_T31UFS", assets, **base),
        item("x4", assets, **base, **{"s2:product_type": "S2MSI2A"}),
    ]
    doc = write_json(tmp_path / "levels.json", {"type": "FeatureCollection", "features": cases})
    assert [s.level for s in discover(stac(doc), INGEST)] == ["L1C", "L1C", "L1C", "L2A"]


def test_level_from_collection_product_uri_and_spec(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    assets = {"B04": {"href": "tiles/B04.tif"}}
    base = {"s2:processing_baseline": "04.00"}
    cases = [
        item("c1", assets, **base) | {"collection": "sentinel-2-c1-l2a"},
        item("c2", assets, **base) | {"collection": "sentinel-2-l1c"},
        item("c3", assets, **base, **{"s2:product_uri": "S2B_MSIL1C_20230612T104629_N0509_R051_T31UFS.SAFE"}),
        item("c4", assets, **base, **{"processing:level": "L2"}),
    ]
    doc = write_json(tmp_path / "levels.json", {"type": "FeatureCollection", "features": cases})
    assert [s.level for s in discover(stac(doc), INGEST)] == ["L2A", "L1C", "L1C", "L2A"]
    # an item that states nothing takes the level the job spec declares for the input
    silent = write_json(tmp_path / "silent.json", item("silent", assets, **base))
    declared = StacInput(paths=(silent,), product_level="L1C")
    assert [s.level for s in discover(declared, INGEST)] == ["L1C"]


def test_unknown_level_is_an_error_saying_how_to_declare_it(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    assets = {"B04": {"href": "tiles/B04.tif"}}
    doc = write_json(tmp_path / "silent.json", item("silent", assets, **{"s2:processing_baseline": "04.00"}))
    with pytest.raises(InputError, match=r"silent.json item silent: processing level unknown.*product_level: L2A"):
        discover(stac(doc), INGEST)


@pytest.mark.parametrize(
    ("fields", "declared", "said"),
    [
        ({"s2:product_type": "S2MSI1C", "processing:level": "L2A"}, None, "s2:product_type says L1C"),
        ({"s2:product_type": "S2MSI2A"}, "L1C", "product_level (job spec) says L1C"),
    ],
)
def test_contradictory_levels_name_every_statement(
    tmp_path: Path, bands: dict[str, np.ndarray], fields: dict[str, str], declared: str | None, said: str
) -> None:
    assets = {"B04": {"href": "tiles/B04.tif"}}
    doc = write_json(tmp_path / "both.json", item("both", assets, **{"s2:processing_baseline": "04.00"}, **fields))
    with pytest.raises(InputError, match="processing level is contradictory") as info:
        discover(StacInput(paths=(doc,), product_level=declared), INGEST)
    assert said in str(info.value)


# radiometry precedence ----------
def test_raster_bands_scale_offset_wins_over_baseline(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    raster = [{"scale": 0.0001, "offset": -0.1, "nodata": 0}]
    assets = {"B04": {"href": "tiles/B04.tif", "raster:bands": raster}}
    # baseline 03.00 alone would mean offset 0; the asset's own scale/offset must take precedence
    props = {"s2:processing_baseline": "03.00", "earthsearch:boa_offset_applied": True}
    doc = write_json(tmp_path / "i.json", item(assets=assets, **props))
    [scene] = discover(stac(doc), INGEST)
    assert scene.radiometry.quantification == 10000.0
    assert scene.radiometry.offset("B04") == -1000.0
    assert scene.radiometry.source == "STAC raster:bands scale 0.0001 offset -0.1"
    out = read_scene(scene, GRID, ("B04",), (), resampling="nearest", require_scl=False)
    expected = (bands["B04"].astype(np.float32) - np.float32(1000)) / np.float32(10000)
    np.testing.assert_array_equal(out[0], expected)


def test_boa_offset_applied_wins_over_baseline(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    assets = {"B04": {"href": "tiles/B04.tif", "raster:bands": [{"nodata": 0}]}}
    props = {"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True}
    [scene] = discover(stac(write_json(tmp_path / "i.json", item(assets=assets, **props))), INGEST)
    assert scene.radiometry.offset("B04") == 0.0
    assert scene.radiometry.quantification == 10000.0
    assert "boa_offset_applied" in scene.radiometry.source


def test_raster_nodata_is_used(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    assets = {"B04": {"href": "tiles/B04.tif", "raster:bands": [{"nodata": 65535, "scale": 0.0001}]}}
    [scene] = discover(stac(write_json(tmp_path / "i.json", item(assets=assets))), INGEST)
    assert scene.nodata_values == (65535.0,)
    assert scene.radiometry.offset("B04") == 0.0


def test_missing_radiometry_is_an_error_naming_the_item(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    doc = write_json(tmp_path / "bare.json", item("S2B_bare_L2A", assets={"B04": {"href": "tiles/B04.tif"}}))
    with pytest.raises(InputError, match="cannot determine the radiometric offset") as info:
        discover(stac(doc), INGEST)
    assert "bare.json item S2B_bare" in str(info.value)


def test_item_without_scl_requires_opt_out(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    assets = {"B04": {"href": "tiles/B04.tif"}}
    doc = write_json(tmp_path / "noscl.json", item("noscl_L2A", assets=assets, **{"s2:processing_baseline": "04.00"}))
    [scene] = discover(stac(doc), INGEST)
    assert scene.scl is None
    with pytest.raises(InputError, match="no SCL") as info:
        read_scene(scene, GRID, ("B04",), (9,), require_scl=True)
    assert "noscl.json item noscl" in str(info.value)
    assert np.isfinite(read_scene(scene, GRID, ("B04",), (9,), require_scl=False)).all()


# malformed documents ----------
def bad_documents(tmp_path: Path) -> list[tuple[Path, str]]:
    def doc(name: str, content: Any) -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        return path

    base = {"s2:processing_baseline": "04.00"}
    good = {"B04": {"href": "tiles/B04.tif"}}
    no_datetime = item(assets=good, **base)
    del no_datetime["properties"]["datetime"]
    return [
        (tmp_path / "missing.json", "cannot read"),
        (doc("broken.json", '{"type": "Feature", "id": '), "not valid JSON"),
        (doc("list.json", [1, 2]), "JSON object"),
        (doc("collection.json", {"type": "Collection", "id": "c"}), "STAC Collection"),
        (doc("other.json", {"type": "Polygon"}), "not a STAC Item"),
        (doc("features.json", {"type": "FeatureCollection", "features": {"a": 1}}), "features"),
        (
            doc("assets.json", item(assets=None, **base) | {"assets": ["B04"]}),
            "'assets' must be a JSON object",
        ),
        (doc("href.json", item(assets={"B04": {"href": 42}}, **base)), "'href' must be a non-empty string"),
        (doc("nodate.json", no_datetime), "no 'datetime'"),
        (
            doc("baddate.json", item(assets=good, **base) | {"properties": {"datetime": "June 12th"}}),
            "RFC 3339",
        ),
        (doc("noid.json", {"type": "Feature", "properties": {}, "assets": {}}), "'id'"),
        (
            doc("nobands.json", item(assets={"thumbnail": {"href": "t.png"}}, **base)),
            "no Sentinel-2 band assets",
        ),
        (doc("absent.json", item(assets={"B04": {"href": "tiles/nope.tif"}}, **base)), "does not exist"),
        (doc("scale.json", item(assets={"B04": good["B04"] | {"raster:bands": [{"scale": "x"}]}})), "finite"),
        (
            doc("scheme.json", item(assets={"B04": {"href": "ftp://host/B04.tif"}}, **base)),
            "unsupported href",
        ),
        (doc("baseline.json", item(assets=good, **{"s2:processing_baseline": "new"})), "processing baseline"),
        (doc("epsg.json", item(assets=good, **base, **{"proj:epsg": "32631"})), "proj:epsg"),
    ]


def test_malformed_documents_name_the_file(tmp_path: Path, bands: dict[str, np.ndarray]) -> None:
    for path, problem in bad_documents(tmp_path):
        with pytest.raises(InputError) as info:
            discover(stac(path), INGEST)
        assert path.name in str(info.value), path.name
        assert problem in str(info.value), (path.name, str(info.value))


def test_unreadable_band_header_names_the_href(tmp_path: Path) -> None:
    (tmp_path / "B04.tif").write_bytes(b"II*\x00garbage")
    doc = write_json(tmp_path / "i.json", item(assets={"B04": {"href": "B04.tif"}}, **{"processing:version": "4.0"}))
    with pytest.raises(InputError, match=r"asset B04 \(B04.tif\).*footprint"):
        discover(stac(doc), INGEST)


def test_parse_datetime_variants() -> None:
    utc = dt.timezone.utc
    assert parse_datetime("2023-06-12T10:46:29Z") == dt.datetime(2023, 6, 12, 10, 46, 29, tzinfo=utc)
    assert parse_datetime("2023-06-12T10:46:29.123456789Z") == dt.datetime(2023, 6, 12, 10, 46, 29, 123456, utc)
    assert parse_datetime("2023-06-12T12:46:29+02:00") == dt.datetime(2023, 6, 12, 10, 46, 29, tzinfo=utc)
    assert parse_datetime("2023-06-12") == dt.datetime(2023, 6, 12, tzinfo=utc)
    assert parse_datetime("2023-13-12") is None
    assert parse_datetime("yesterday") is None


# the shipped sample ----------
SAMPLE_BANDS = {"B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"}


def test_shipped_sample_items() -> None:
    scenes = discover(stac(SAMPLE_ITEMS), INGEST)
    assert len(scenes) == 10
    months = [s.acquired.strftime("%Y-%m") for s in scenes]
    assert months == ["2020-11", *(f"2021-{m:02d}" for m in range(2, 11))]
    for scene in scenes:
        assert set(scene.bands) == SAMPLE_BANDS
        assert scene.scl is None and scene.level == "L2A"
        assert scene.radiometry.quantification == 10000.0
        assert all(scene.radiometry.offset(b) == 0.0 for b in SAMPLE_BANDS)
        assert scene.radiometry.source.startswith("STAC raster:bands")  # rule (1), not a baseline default
        assert scene.nodata_values == (65535.0,)
        assert scene.crs == CRS_UTM31
        assert scene.bounds == (664000.0, 5611120.0, 665000.0, 5612120.0)
        for ref in scene.bands.values():
            assert Path(ref.path).is_file()
    with rasterio.open(scenes[0].bands["B04"].path) as src:
        assert src.dtypes[0] == "uint16" and src.nodata == 65535 and src.compression.name == "deflate"


def test_shipped_sample_matches_the_netcdf() -> None:
    if not SHARED.exists():
        pytest.skip("shared/ data folder not present")
    netCDF4 = pytest.importorskip("netCDF4")
    scenes = {s.acquired.strftime("%Y-%m"): s for s in discover(stac(SAMPLE_ITEMS), INGEST)}
    scene = scenes["2021-05"]
    grid = Grid(CRS_UTM31, Affine(10.0, 0.0, 664000.0, 0.0, -10.0, 5612120.0), 100, 100)
    out = read_scene(scene, grid, ("B04",), (), resampling="nearest", require_scl=False)[0]

    with netCDF4.Dataset(SHARED_NC) as ds:
        ds.set_auto_maskandscale(False)
        times = list(np.asarray(ds.variables["t"][:]))
        index = times.index((dt.date(2021, 5, 1) - dt.date(1990, 1, 1)).days)
        raw = np.asarray(ds.variables["S2-L2A-B04"][index]).view(np.uint16)
    valid = raw != 65535
    expected = raw.astype(np.float32) / np.float32(10000)
    np.testing.assert_array_equal(out[valid], expected[valid])
    assert np.isnan(out[~valid]).all()


def test_file_uris_are_decoded_and_other_schemes_refused(tmp_path: Path) -> None:
    tif = write_tif(tmp_path / "with space" / "B04.tif", dn(4))
    base = {"s2:processing_baseline": "04.00", "proj:epsg": 32631, "proj:bbox": [600000, 5699920, 600080, 5700000]}
    doc = write_json(tmp_path / "uri.json", item(assets={"B04": {"href": tif.as_uri()}}, **base))
    [scene] = discover(stac(doc), INGEST)
    assert scene.bands["B04"].path == str(tif)
    for href, problem in [
        ("gs://bucket/B04.tif", "unsupported href scheme gs://"),
        ("/vsigs/bucket/B04.tif", "GDAL virtual file paths (/vsi...) are not accepted"),
        ("file://host/B04.tif", "a file:// URI must be file:///absolute/path"),
    ]:
        write_json(doc, item(assets={"B04": {"href": href}}, **base))
        with pytest.raises(InputError, match=re.escape(problem)):
            discover(stac(doc), INGEST)


def test_huge_or_deep_documents_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from suelo.ingest import stac as stac_module

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InputError, match=r"not valid JSON \(nested too deeply\)"):
        discover(stac(deep), INGEST)
    monkeypatch.setattr(stac_module, "MAX_DOCUMENT_BYTES", 1000)
    with pytest.raises(InputError, match="larger than the 1000-byte limit"):
        discover(stac(deep), INGEST)
