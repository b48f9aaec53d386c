"""STAC outputs: Items of map sets and the run's Collection against the official schemas (offline, tests/data), their
raster/file/projection fields, relative links, and loading them with odc-stac and stackstac."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from jsonschema import Draft7Validator
from rasterio.crs import CRS
from referencing import Registry
from shapely.geometry import box

from suelo.atomic import file_sha256
from suelo.grid import Grid
from suelo.ingest.scene import SourceLink
from suelo.legend import load_legend
from suelo.stac_out import (
    CLASSIFICATION_SCHEMA,
    FILE_SCHEMA,
    PROJECTION_SCHEMA,
    RASTER_SCHEMA,
    derived_from_link,
    media_type_for,
    write_stac_collection,
)
from suelo.write import URBAN_ATLAS_REASONS, MapSet, write_map_set
from tests.fixtures import LEGENDS
from tests.fixtures.stac import schema_errors, stac_registry

H, W = 40, 50
GRID = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5600000), H, W)
PERIOD = ("2021-01-01", "2021-12-31")


@pytest.fixture(scope="module")
def registry() -> Registry[Any]:
    return stac_registry()


# the outputs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    folder: Path
    landcover: MapSet
    urban_atlas: MapSet
    collection: Path
    codes: dict[str, np.ndarray]
    inputs: dict[str, Path]


def _landcover_codes() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    codes = np.where((yy + xx) % 2 == 0, 10, 40).astype(np.uint8)
    codes[:4] = 0  # nodata
    codes[4:8] = 254  # low confidence
    return codes


def _urban_atlas_codes() -> np.ndarray:
    codes = np.full((H, W), 11100, np.uint16)
    codes[:, 25:] = 50000
    codes[:5] = URBAN_ATLAS_REASONS.low_confidence
    return codes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A run folder: a uint8 land-cover map with confidence and counts, a uint16 urban-atlas map with a GeoPackage
    (in another CRS than the grid), and the run's Collection."""
    folder = tmp_path_factory.mktemp("run")
    inputs_dir = folder.parent / f"{folder.name}_inputs"
    (inputs_dir / "S2A_MSIL2A_20210601.SAFE").mkdir(parents=True)
    (inputs_dir / "items.json").write_text("{}")
    inputs = {"stac": inputs_dir / "items.json", "safe": inputs_dir / "S2A_MSIL2A_20210601.SAFE"}
    sources = [
        # Scene.link() of a STAC Item of a local document
        SourceLink(str(inputs["stac"]), "STAC Item S2A_31UFS_20210601_0_L2A", "application/geo+json"),
        "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/S2B_31UFS_20210611_0_L2A",
        str(inputs["safe"]),  # Scene.source of a SAFE product
    ]
    confidence = np.full((H, W), 80, np.uint8)
    confidence[:4] = 255
    n_clear = np.full((H, W), 7.0)
    n_clear[:4] = np.nan
    landcover = write_map_set(
        folder / "landcover",
        "lc",
        _landcover_codes(),
        GRID,
        load_legend(LEGENDS / "esa_worldcover.yaml"),
        PERIOD,
        confidence=confidence,
        n_clear=n_clear,
        tags={"model": "lc.pt", "thresholds": {"top1": 0.7}},
        inputs=sources,
    )
    vectors = folder / "urban_atlas" / "ua.gpkg"
    vectors.parent.mkdir()
    left, bottom, right, top = GRID.bounds
    polygons = gpd.GeoDataFrame({"code": [11100]}, geometry=[box(left, bottom, right, top)], crs=GRID.crs)
    polygons.to_crs("EPSG:3035").to_file(vectors, driver="GPKG")
    urban_atlas = write_map_set(
        folder / "urban_atlas",
        "ua",
        _urban_atlas_codes(),
        GRID,
        load_legend(LEGENDS / "urban_atlas_2018.yaml"),
        (dt.date(2021, 1, 1), dt.date(2021, 12, 31)),
        confidence=np.full((H, W), 60, np.uint8),
        inputs=sources[:1],
        description="urban atlas class",
        extra_assets={"vectors": vectors},
    )
    collection = write_stac_collection(
        folder / "collection.json", [landcover.item, urban_atlas.item], "Run demo", "suelo maps of the demo run"
    )
    return Run(
        folder, landcover, urban_atlas, collection, {"lc": _landcover_codes(), "ua": _urban_atlas_codes()}, inputs
    )


def _item(map_set: MapSet) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(map_set.item.read_text())
    return data


def _hrefs(document: dict[str, Any]) -> Iterator[str]:
    yield from (link["href"] for link in document.get("links", []))
    yield from (asset["href"] for asset in document.get("assets", {}).values())


# schemas ----------------------------------------------------------------------------------------------------------


def test_items_and_collection_validate_against_the_official_schemas(run: Run, registry: Registry[Any]) -> None:
    for map_set in (run.landcover, run.urban_atlas):
        item = _item(map_set)
        assert set(item["stac_extensions"]) == {PROJECTION_SCHEMA, RASTER_SCHEMA, FILE_SCHEMA, CLASSIFICATION_SCHEMA}
        assert schema_errors(item, registry) == []
    collection = json.loads(run.collection.read_text())
    assert collection["stac_version"] == pystac.get_stac_version() == "1.1.0"
    assert schema_errors(collection, registry) == []


def test_the_schemas_catch_what_the_issue_reported(run: Run, registry: Registry[Any]) -> None:
    """The validation is not vacuous: undeclared extension fields, a wrong checksum and a bad data type fail."""
    item = _item(run.landcover)
    undeclared = {**item, "stac_extensions": [PROJECTION_SCHEMA, CLASSIFICATION_SCHEMA]}
    assert schema_errors(undeclared, registry) == []  # an undeclared extension is not checked by its schema ...
    raster = registry.contents(RASTER_SCHEMA)
    assert list(Draft7Validator(raster, registry=registry).iter_errors(undeclared))  # ... its own schema says so
    broken = json.loads(json.dumps(item))
    broken["assets"]["data"]["file:checksum"] = "1220XYZ"
    broken["assets"]["data"]["raster:bands"][0]["data_type"] = "byte"
    broken["properties"]["proj:epsg"] = "32631"
    problems = "\n".join(schema_errors(broken, registry))
    assert "file:checksum" in problems and "'byte'" in problems and "'32631'" in problems


# fields -----------------------------------------------------------------------------------------------------------


def test_raster_fields_on_every_raster_asset(run: Run) -> None:
    lc, ua = _item(run.landcover), _item(run.urban_atlas)
    bands = {key: a["raster:bands"] for key, a in lc["assets"].items() if "raster:bands" in a}
    assert set(bands) == {"data", "confidence", "nclear"}
    assert bands["data"] == [{"data_type": "uint8", "nodata": 0, "sampling": "area", "spatial_resolution": 10.0}]
    assert bands["confidence"][0] == {
        "data_type": "uint8",
        "nodata": 255,
        "sampling": "area",
        "spatial_resolution": 10.0,
        "unit": "percent",
        "scale": 1.0,
        "offset": 0.0,
    }
    assert bands["nclear"][0]["data_type"] == "uint16" and bands["nclear"][0]["nodata"] == 65535
    assert ua["assets"]["data"]["raster:bands"][0]["data_type"] == "uint16"
    assert ua["assets"]["data"]["raster:bands"][0]["nodata"] == URBAN_ATLAS_REASONS.nodata
    for key, asset in lc["assets"].items():
        path = run.landcover.item.parent / asset["href"]
        if "raster:bands" not in asset:
            assert asset["type"] == "application/xml" and "proj:shape" not in asset
            continue
        with rasterio.open(path) as src:  # what the Item says is what the file holds
            assert (src.dtypes[0], src.nodata) == (
                asset["raster:bands"][0]["data_type"],
                asset["raster:bands"][0]["nodata"],
            )
            assert asset["proj:shape"] == [src.height, src.width] and asset["proj:bbox"] == list(src.bounds)
            assert asset["proj:transform"] == list(src.transform)[:6], key
    assert lc["properties"]["proj:code"] == "EPSG:32631" and lc["properties"]["proj:epsg"] == 32631


def test_file_fields_on_every_asset(run: Run) -> None:
    for map_set in (run.landcover, run.urban_atlas):
        for key, asset in _item(map_set)["assets"].items():
            path = map_set.item.parent / asset["href"]
            assert asset["file:size"] == path.stat().st_size, key
            assert asset["file:checksum"] == "1220" + file_sha256(path), key  # multihash: sha2-256, 32 bytes


def test_every_output_is_an_asset(run: Run) -> None:
    for map_set in (run.landcover, run.urban_atlas):
        hrefs = {(map_set.item.parent / a["href"]).resolve() for a in _item(map_set)["assets"].values()}
        assert hrefs == {p.resolve() for p in map_set.files if p != map_set.item}
    vectors = _item(run.urban_atlas)["assets"]["vectors"]
    assert vectors["href"] == "./ua.gpkg" and vectors["type"] == "application/geopackage+sqlite3"
    assert vectors["roles"] == ["data"] and vectors["title"] == "Vectors (gpkg)"
    assert vectors["proj:code"] == "EPSG:3035" and vectors["proj:epsg"] == 3035  # not the grid's CRS: says its own
    assert "proj:shape" not in vectors and "raster:bands" not in vectors
    assert run.folder / "urban_atlas" / "ua.gpkg" in run.urban_atlas.files
    assert run.urban_atlas.extra_assets == {"vectors": run.folder / "urban_atlas" / "ua.gpkg"}


def test_media_types() -> None:
    assert media_type_for("m.gpkg") == "application/geopackage+sqlite3"
    assert media_type_for("m.qml") == media_type_for("m.tif.aux.xml") == "application/xml"
    assert media_type_for("m.tif") == "image/tiff; application=geotiff"
    assert media_type_for("m.unknown") is None


def test_period_is_inclusive(run: Run) -> None:
    for map_set in (run.landcover, run.urban_atlas):  # strings and dates alike
        properties = _item(map_set)["properties"]
        assert properties["start_datetime"] == "2021-01-01T00:00:00Z"
        assert properties["end_datetime"] == "2021-12-31T23:59:59.999999Z"  # the end of the period's last day
        assert properties["datetime"] is None
    interval = json.loads(run.collection.read_text())["extent"]["temporal"]["interval"]
    assert interval == [["2021-01-01T00:00:00Z", "2021-12-31T23:59:59.999999Z"]]


# links ------------------------------------------------------------------------------------------------------------


def test_links_are_relative(run: Run) -> None:
    item = _item(run.landcover)
    for href in [*_hrefs(item), *_hrefs(json.loads(run.collection.read_text()))]:
        assert href.startswith(("./", "../", "https://")), href
    derived = [link for link in item["links"] if link["rel"] == "derived_from"]
    folder = run.landcover.item.parent
    assert (folder / derived[0]["href"]).resolve() == run.inputs["stac"].resolve()
    assert derived[0]["title"] == "STAC Item S2A_31UFS_20210601_0_L2A" and " item " not in derived[0]["href"]
    assert derived[0]["type"] == "application/geo+json"
    assert derived[1] == {
        "rel": "derived_from",
        "href": "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/S2B_31UFS_20210611_0_L2A",
    }
    assert (folder / derived[2]["href"]).resolve() == run.inputs["safe"].resolve()
    assert derived[2]["title"] == "S2A_MSIL2A_20210601.SAFE"


def test_derived_from_sources(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "landcover"
    layout = SourceLink(str(tmp_path / "in"), "files T31UFS_20210601*")  # a GeoTIFF layout's scene
    assert derived_from_link(layout, folder) == {
        "rel": "derived_from",
        "href": "../../in",
        "title": "files T31UFS_20210601*",
    }
    search = "https://earth-search.aws.element84.com/v1/search"
    api = derived_from_link(SourceLink(search, "STAC Item S2B_31UFS_1", "application/geo+json"), folder)
    assert api == {
        "rel": "derived_from",
        "href": search,
        "type": "application/geo+json",
        "title": "STAC Item S2B_31UFS_1",
    }
    # a plain string is a path or URL as it is: never parsed (a file may be named "x item y")
    odd = derived_from_link(str(tmp_path / "in" / "x item y.tif"), folder)
    assert odd == {"rel": "derived_from", "href": "../../in/x item y.tif", "title": "x item y.tif"}
    mapping = derived_from_link({"href": str(tmp_path / "out" / "x.json"), "title": "X"}, folder)
    assert mapping == {"rel": "derived_from", "href": "../x.json", "title": "X"}


def test_collection_links_both_ways(run: Run) -> None:
    collection = json.loads(run.collection.read_text())
    assert collection["id"] == run.folder.name and collection["license"] == "other"
    items = [link for link in collection["links"] if link["rel"] == "item"]
    assert [(run.folder / link["href"]).resolve() for link in items] == [
        run.landcover.item.resolve(),
        run.urban_atlas.item.resolve(),
    ]
    assert [link["href"] for link in collection["links"] if link["rel"] == "root"] == ["./collection.json"]
    for map_set in (run.landcover, run.urban_atlas):
        item = _item(map_set)
        assert item["collection"] == collection["id"]
        for rel in ("collection", "parent", "root"):
            (link,) = [link for link in item["links"] if link["rel"] == rel]
            assert link["href"] == "../collection.json" and link["type"] == "application/json"
    bbox = collection["extent"]["spatial"]["bbox"][0]
    for map_set in (run.landcover, run.urban_atlas):
        ib = _item(map_set)["bbox"]
        assert bbox[0] <= ib[0] and bbox[1] <= ib[1] and ib[2] <= bbox[2] and ib[3] <= bbox[3]
    assert collection["summaries"] == {"proj:code": ["EPSG:32631"]}
    # pystac reads the catalog both ways
    read = pystac.Collection.from_file(str(run.collection))
    assert sorted(i.id for i in read.get_items()) == ["lc", "ua"]
    assert pystac.Item.from_file(str(run.landcover.item)).get_collection() is not None


def test_collection_is_rewritten_not_duplicated(run: Run) -> None:
    again = write_stac_collection(
        run.collection, [run.landcover.item, run.urban_atlas.item], "Run demo", "suelo maps of the demo run"
    )
    item = _item(run.landcover)
    assert sum(link["rel"] == "root" for link in item["links"]) == 1
    assert sum(link["rel"] == "item" for link in json.loads(again.read_text())["links"]) == 2


# loading ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("which", "dtype"), [("landcover", "uint8"), ("urban_atlas", "uint16")])
def test_odc_stac_loads_dtype_nodata_crs_and_shape(run: Run, which: str, dtype: str) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    map_set: MapSet = getattr(run, which)
    item = pystac.Item.from_file(str(map_set.item))
    loaded = odc_stac.load([item], bands=["data", "confidence"], chunks=None)  # no dtype, nodata, crs or grid given
    data = loaded["data"]
    assert str(data.dtype) == dtype and data.attrs["nodata"] == map_set.classes.nodata
    assert loaded.odc.geobox.crs.epsg == 32631 and data.shape == (1, H, W)
    assert loaded.odc.geobox.affine == GRID.transform
    np.testing.assert_array_equal(data.values[0], run.codes[map_set.name])
    assert str(loaded["confidence"].dtype) == "uint8" and loaded["confidence"].attrs["nodata"] == 255


def test_stackstac_loads_crs_and_shape(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """stackstac (0.5) picks the CRS from ``proj:epsg`` (projection v1.2.0) and the grid from the raster assets
    without arguments. It reads no dtype or nodata from the Item: the default is float64 with nodata as NaN. An
    integer dtype needs three arguments: ``dtype``, ``fill_value`` as a numpy scalar of that dtype (stackstac
    checks ``np.can_cast(type(fill_value), dtype)``, and a Python int is int64) and ``rescale=False`` (its check of
    the default scale 1, a Python int, fails the same way)."""
    stackstac = pytest.importorskip("stackstac")
    lc = run.landcover
    monkeypatch.chdir(lc.item.parent)  # the Item's hrefs are relative to its folder; stackstac opens them as given
    item = json.loads(lc.item.read_text())
    default = stackstac.stack([item])
    assert default.attrs["crs"] == "epsg:32631" and default.shape == (1, 3, H, W)
    assert list(default.band.values) == ["data", "confidence", "nclear"]
    assert default.attrs["transform"] == GRID.transform
    values = default.sel(band="data").values[0]
    codes = run.codes["lc"]
    assert np.isnan(values[codes == 0]).all()  # nodata
    np.testing.assert_array_equal(values[codes != 0], codes[codes != 0])
    exact = stackstac.stack([item], assets=["data"], dtype="uint8", fill_value=np.uint8(0), rescale=False)
    assert exact.dtype == np.uint8 and exact.shape == (1, 1, H, W)
    np.testing.assert_array_equal(exact.values[0, 0], codes)
    assert exact.coords["raster:bands"].item()["nodata"] == 0


def test_stackstac_with_pystac_items_needs_the_grid(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """pystac migrates projection v1.2.0 to v2.0.0 when it reads an Item (``proj:epsg`` becomes ``proj:code``), and
    stackstac 0.5 reads only ``proj:epsg``: Items read with pystac need ``epsg=``, and since stackstac then takes the
    assets' footprint from the Item's WGS 84 bbox, ``resolution=`` and ``bounds=`` for the exact grid. (Once this
    no longer raises, stackstac reads ``proj:code``: suelo.stac_out.PROJECTION_SCHEMA can then become v2.0.0.)"""
    stackstac = pytest.importorskip("stackstac")
    monkeypatch.chdir(run.landcover.item.parent)
    item = pystac.Item.from_file(os.fspath(run.landcover.item))
    assert "proj:epsg" not in item.properties and item.properties["proj:code"] == "EPSG:32631"
    with pytest.raises(ValueError, match="Cannot pick a common CRS"):
        stackstac.stack([item])
    stacked = stackstac.stack([item], epsg=32631, resolution=10, bounds=list(GRID.bounds))
    assert stacked.shape == (1, 3, H, W) and stacked.attrs["transform"] == GRID.transform
