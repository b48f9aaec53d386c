"""MGRS tiles: every reader sets Scene.extra["tile"]; job.tiles selects scenes and, without an AOI, the grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from suelo.errors import ConfigError, InputError
from suelo.ingest import discover_scenes, job_grid, search_context
from suelo.ingest.geotiff import discover as discover_geotiff
from suelo.ingest.mgrs import tile_bounds, tile_bounds_wgs84, tile_crs
from suelo.ingest.safe import discover as discover_safe
from suelo.ingest.scene import tile_in_name
from suelo.ingest.stac import item_tile
from suelo.settings import GeoTiffInput, IngestSpec, SafeInput, validate_job
from tests.fixtures import build_safe, write_raster

#: Two tiles either side of the 31/32 UTM zone boundary (6 degrees east), and a third one west of them.
FOOTPRINTS = {
    "31UGS": (32631, (700000.0, 5590200.0, 809800.0, 5700000.0)),
    "32ULB": (32632, (300000.0, 5590200.0, 409800.0, 5700000.0)),
    "31UFS": (32631, (600000.0, 5590200.0, 709800.0, 5700000.0)),
}


def tiny_tif(path: Path) -> Path:
    return write_raster(path, np.full((4, 4), 2000, dtype=np.uint16), transform=Affine(10, 0, 700000, 0, -10, 5700000))


def stac_item(tile: str, day: int, href: str, style: str = "s2") -> dict[str, Any]:
    """A tiny STAC item of ``tile`` whose footprint (proj:bbox) is the whole tile; ``style`` says where the tile is."""
    epsg, bbox = FOOTPRINTS[tile]
    properties: dict[str, Any] = {
        "datetime": f"2023-06-{day:02d}T10:30:00Z",
        "s2:processing_baseline": "05.09",
        "processing:level": "L2A",
        "proj:epsg": epsg,
        "proj:bbox": list(bbox),
    }
    item_id = f"item-{tile.lower()}-{day}"  # a lowercase id carries no tile: only the properties say it
    if style == "s2":
        properties["s2:mgrs_tile"] = tile
    elif style == "mgrs":
        properties.update({"mgrs:utm_zone": int(tile[:2]), "mgrs:latitude_band": tile[2], "mgrs:grid_square": tile[3:]})
    else:
        item_id = f"S2A_{tile}_202306{day:02d}_0_L2A"
    return {"type": "Feature", "id": item_id, "properties": properties, "assets": {"B04": {"href": href}}}


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    href = str(tiny_tif(tmp_path / "b04.tif"))
    items = [
        stac_item("31UGS", 3, href, "s2"),
        stac_item("32ULB", 4, href, "mgrs"),
        stac_item("31UFS", 5, href, "id"),
        stac_item("32ULB", 14, href, "s2"),
    ]
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}), encoding="utf-8")
    return path


def job(items_file: Path, **fields: Any) -> Any:
    return validate_job(
        {
            "inputs": [{"kind": "stac", "paths": [str(items_file)]}],
            "period": {"start": "2023-06-01", "end": "2023-06-30"},
        }
        | fields
    )


def test_stac_items_carry_their_tile(items_file: Path) -> None:
    scenes = discover_scenes(job(items_file))
    assert [s.extra["tile"] for s in scenes] == ["31UGS", "32ULB", "31UFS", "32ULB"]
    assert item_tile("whatever", {"s2:mgrs_tile": "T31UFS"}) == "31UFS"
    assert item_tile("whatever", {}) is None


def test_tiles_select_scenes_and_grid_covers_both_zones(items_file: Path) -> None:
    spec = job(items_file, tiles=["31UGS", "T32ULB"])
    scenes = discover_scenes(spec)
    assert sorted({s.extra["tile"] for s in scenes}) == ["31UGS", "32ULB"] and len(scenes) == 3

    grid = job_grid(spec, scenes)
    assert grid.crs == CRS.from_epsg(32631)  # the first tile listed decides the CRS
    left, bottom, right, top = grid.bounds
    east = transform_bounds(CRS.from_epsg(32632), grid.crs, *FOOTPRINTS["32ULB"][1], densify_pts=21)
    assert left <= 700000 and top >= 5700000 and right >= east[2] and bottom <= min(5590200, east[1])
    # Both tiles, not only the first scene's (they overlap by ~80 km: 31UGS reaches past 6 degrees east).
    assert right - left > 130_000

    swapped = job(items_file, tiles=["32ULB", "31UGS"])
    assert job_grid(swapped, discover_scenes(swapped)).crs == CRS.from_epsg(32632)
    laea = job(items_file, tiles=["31UGS", "32ULB"], grid={"crs": "EPSG:3035", "resolution": 20})
    grid_3035 = job_grid(laea, discover_scenes(laea))
    assert grid_3035.crs == CRS.from_epsg(3035) and grid_3035.resolution == (20.0, 20.0)


def test_without_tiles_the_grid_is_still_the_first_scene(items_file: Path) -> None:
    spec = job(items_file)
    grid = job_grid(spec, discover_scenes(spec))
    assert grid.crs == CRS.from_epsg(32631) and grid.bounds == FOOTPRINTS["31UGS"][1]


def test_tile_without_scene_is_named(items_file: Path) -> None:
    with pytest.raises(InputError, match=r"tiles: no scene of tile 33UUP in the inputs; .*31UFS, 31UGS, 32ULB"):
        discover_scenes(job(items_file, tiles=["31UGS", "33UUP"]))


def test_aoi_wins_over_tiles_for_the_grid(items_file: Path) -> None:
    spec = job(items_file, tiles=["31UGS"], aoi={"bbox": [6.2, 51.0, 6.3, 51.1]})
    scenes = discover_scenes(spec)
    assert {s.extra["tile"] for s in scenes} == {"31UGS"}
    assert job_grid(spec, scenes).crs == CRS.from_epsg(32632)  # UTM zone of the AOI, as without tiles


def test_search_context_is_the_tiles_union(items_file: Path) -> None:
    context = search_context(job(items_file, tiles=["31UGS", "32ULB"]))
    west, south, east, north = context.bbox_wgs84
    assert west == pytest.approx(tile_bounds_wgs84("31UGS")[0]) and east == pytest.approx(tile_bounds_wgs84("32ULB")[2])
    assert south < 50.45 and north > 51.4 and context.tiles == ("31UGS", "32ULB")
    assert search_context(job(items_file)).bbox_wgs84 is None


@pytest.mark.parametrize(("tile", "epsg", "upper_left"), [
    ("31UFS", 32631, (600000, 5700000)),  # ESA tiling grid (S2A_OPER_GIP_TILPAR) upper-left corners
    ("32ULB", 32632, (300000, 5700000)),
    ("33UUP", 32633, (300000, 5400000)),
    ("18TWL", 32618, (500000, 4600000)),
    ("55HBU", 32755, (200000, 5900000)),
])  # fmt: skip
def test_mgrs_tile_footprints(tile: str, epsg: int, upper_left: tuple[int, int]) -> None:
    left, bottom, right, top = tile_bounds(tile)
    assert tile_crs(tile) == CRS.from_epsg(epsg)
    assert (left, top) == upper_left and right - left == top - bottom == 109800


def test_mgrs_rejects_impossible_squares() -> None:
    with pytest.raises(ConfigError, match="column letter A does not occur in UTM zone 32"):
        tile_bounds("32UAB")


def test_safe_and_geotiff_tiles(tmp_path: Path) -> None:
    safe = build_safe(tmp_path / "safe", tile="T32ULB", crs="EPSG:32632", origin=(300000, 5700000))
    (scene,) = discover_safe(SafeInput(paths=(safe,)), IngestSpec())
    assert scene.extra["tile"] == "32ULB"

    tifs = tmp_path / "tifs"
    tifs.mkdir()
    tiny_tif(tifs / "S2_T31UGS_2023-06-03.tif")
    tiny_tif(tifs / "mosaic_2023-06-04.tif")
    spec = GeoTiffInput(paths=(tifs,), bands=("B04",), product_level="L2A", add_offset=0)
    assert [s.extra["tile"] for s in discover_geotiff(spec, IngestSpec())] == ["31UGS", None]

    assert tile_in_name("S2B_MSIL2A_20230612T104629_N0509_R051_T31UFS_20230612T140315.SAFE") == "31UFS"
    assert tile_in_name("LC08_L2SP_198024_20230612") is None
