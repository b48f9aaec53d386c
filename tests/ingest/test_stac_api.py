"""STAC API reader against a local http.server: request bodies, paging (POST merge and GET), limits, errors."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from suelo.errors import ConfigError, InputError
from suelo.grid import Grid
from suelo.ingest import READERS, discover_scenes, reader
from suelo.ingest.scene import SearchContext, read_scene
from suelo.ingest.stac_api import discover
from suelo.settings import IngestSpec, StacApiInput, validate_job
from tests.fixtures import write_raster

CRS_UTM31 = CRS.from_epsg(32631)
TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5700000.0)
SHAPE = (8, 8)
CONTEXT = SearchContext(bbox_wgs84=(4.4, 50.4, 6.0, 51.4), start=dt.date(2023, 6, 1), end=dt.date(2023, 6, 30))

Route = Callable[[str, str, dict[str, Any] | None], tuple[int, bytes]]


class Api:
    """A STAC API on 127.0.0.1 whose answers come from ``route``; it records every request it gets."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                api.requests.append((method, self.path, body))
                status, payload = api.route(method, self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/geo+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Api:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy configured on the machine would otherwise receive the requests meant for 127.0.0.1.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


def write_tif(path: Path, seed: int, dtype: str = "uint16") -> Path:
    values = np.random.default_rng(seed).integers(1001, 9000, SHAPE).astype(dtype)
    return write_raster(path, values, crs=CRS_UTM31, transform=TRANSFORM)


@pytest.fixture
def hrefs(tmp_path: Path) -> dict[str, str]:
    """file:// hrefs of tiny GeoTIFFs, under Earth Search asset names (the reader must map them)."""
    files = {"blue": write_tif(tmp_path / "B02.tif", 1), "red": write_tif(tmp_path / "B04.tif", 2)}
    scl = np.full(SHAPE, 4, dtype=np.uint8)
    files["scl"] = write_raster(tmp_path / "SCL.tif", scl, crs=CRS_UTM31, transform=TRANSFORM, nodata=None)
    return {key: path.as_uri() for key, path in files.items()}


def item(item_id: str, day: int, hrefs: dict[str, str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "properties": {
            "datetime": f"2023-06-{day:02d}T10:46:29Z",
            "s2:processing_baseline": "05.09",
            "s2:product_type": "S2MSI2A",
            "proj:epsg": 32631,
            "proj:bbox": [600000.0, 5699920.0, 600080.0, 5700000.0],
            **properties,
        },
        "assets": {key: {"href": href} for key, href in hrefs.items()},
        "links": [],
    }


def page(features: list[dict[str, Any]], next_link: dict[str, Any] | None = None) -> tuple[int, bytes]:
    links = [{"rel": "next", **next_link}] if next_link else []
    return 200, json.dumps({"type": "FeatureCollection", "features": features, "links": links}).encode()


def spec(url: str, **fields: Any) -> StacApiInput:
    return StacApiInput(url=url, collections=("sentinel-2-l2a",), **fields)


def three_pages(hrefs: dict[str, str]) -> Iterator[Any]:
    """Page 1 -> POST next with a merged token -> page 2 -> GET next -> page 3 (which repeats an item)."""
    items = [item(f"S2B_31UFS_202306{d:02d}_0_L2A", d, hrefs) for d in (2, 5, 12, 15, 22)]

    def route(method: str, path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
        base = api.url
        if method == "POST" and path == "/v1/search" and body and "token" not in body:
            return page(items[:2], {"href": f"{base}/search", "method": "POST", "body": {"token": "p2"}, "merge": True})
        if method == "POST" and path == "/v1/search" and body and body.get("token") == "p2":
            return page(items[2:4], {"href": f"{base}/search?token=p3", "type": "application/geo+json"})
        if method == "GET" and path == "/v1/search?token=p3":
            return page([items[3], items[4]])
        return 404, b'{"code": "NotFound", "description": "no such page"}'

    api = Api(route)
    return api


def test_search_pages_bodies_and_scenes(hrefs: dict[str, str]) -> None:
    with three_pages(hrefs) as api:
        scenes = discover(spec(api.url, max_cloud_cover=30), IngestSpec(), context=CONTEXT)
    assert [s.scene_id for s in scenes] == [f"S2B_31UFS_202306{d:02d}_0_L2A" for d in (2, 5, 12, 15, 22)]
    (m1, p1, b1), (m2, p2, b2), (m3, p3, b3) = api.requests
    assert (m1, p1) == ("POST", "/v1/search")
    assert b1 == {
        "collections": ["sentinel-2-l2a"],
        "bbox": [4.4, 50.4, 6.0, 51.4],
        "datetime": "2023-06-01T00:00:00Z/2023-06-30T23:59:59Z",
        "limit": 100,
        "query": {"eo:cloud_cover": {"lte": 30}},
    }
    assert (m2, p2, b2) == ("POST", "/v1/search", {**b1, "token": "p2"})  # merge: true keeps the search
    assert (m3, p3, b3) == ("GET", "/v1/search?token=p3", None)

    first = scenes[0]
    assert sorted(first.bands) == ["B02", "B04"] and first.scl is not None
    assert first.radiometry.offset("B02") == -1000.0  # same rules as Item files: baseline 05.09
    assert first.extra["tile"] == "31UFS"
    grid = Grid(CRS_UTM31, TRANSFORM, *SHAPE)
    reflectance = read_scene(first, grid, ("B02", "B04"), (0, 1, 3, 8, 9, 10))
    assert reflectance.shape == (2, *SHAPE) and bool(np.isfinite(reflectance).all())
    with rasterio.open(hrefs["blue"].removeprefix("file://")) as src:  # (DN - 1000) / 10000
        np.testing.assert_allclose(reflectance[0], (src.read(1) - 1000.0) / 10000.0, rtol=1e-6)


def test_max_items_stops_paging(hrefs: dict[str, str]) -> None:
    with three_pages(hrefs) as api:
        scenes = discover(spec(api.url, max_items=3), IngestSpec(), context=CONTEXT)
    assert len(scenes) == 3
    assert len(api.requests) == 2  # the third page was never asked for
    assert api.requests[0][2]["limit"] == 3 and "query" not in api.requests[0][2]


def test_cloudy_items_dropped_when_server_ignores_query(hrefs: dict[str, str]) -> None:
    cloudy, clear = (
        item("a_T31UFS", 2, hrefs, **{"eo:cloud_cover": 80.0}),
        item("b_T31UFS", 3, hrefs, **{"eo:cloud_cover": 5}),
    )
    items = [cloudy, clear]
    with Api(lambda m, p, b: page(items)) as api:
        scenes = discover(spec(api.url, max_cloud_cover=20), IngestSpec(), context=CONTEXT)
    assert [s.scene_id for s in scenes] == ["b_T31UFS"]


def test_remote_and_relative_hrefs(hrefs: dict[str, str]) -> None:
    remote = item("c", 2, {"blue": "https://data.example.org/B02.tif", "red": "B04.tif"})
    remote["links"] = [{"rel": "self", "href": "https://stac.example.org/collections/s2/items/c"}]
    with Api(lambda m, p, b: page([remote])) as api:
        (scene,) = discover(spec(api.url), IngestSpec(), context=CONTEXT)
    assert scene.bands["B02"].path == "/vsicurl/https://data.example.org/B02.tif"
    assert scene.bands["B04"].path == "/vsicurl/https://stac.example.org/collections/s2/items/B04.tif"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((500, b'{"code": "ServerError", "description": "database down"}'), "HTTP 500 .*database down"),
        ((200, b"<html>maintenance</html>"), "not JSON"),
        ((200, b'{"type": "Collection", "id": "x"}'), "not a GeoJSON FeatureCollection"),
        ((200, b'{"type": "FeatureCollection", "features": [1]}'), r"features\[0\] is not a STAC Item"),
    ],
)
def test_bad_answers_name_the_url(answer: tuple[int, bytes], message: str) -> None:
    with Api(lambda m, p, b: answer) as api, pytest.raises(InputError, match=message) as caught:
        discover(spec(api.url), IngestSpec(), context=CONTEXT)
    assert caught.value.path == f"{api.url}/search"
    assert "\n" not in str(caught.value)


def test_unreachable_api_is_one_line() -> None:
    with Api(lambda m, p, b: page([])) as api:
        url = api.url  # the port is closed once the server is gone
    with pytest.raises(InputError, match="cannot reach the STAC API") as caught:
        discover(spec(url), IngestSpec(), context=CONTEXT)
    assert caught.value.path == f"{url}/search" and "\n" not in str(caught.value)


def test_timeout() -> None:
    def slow(method: str, path: str, body: Any) -> tuple[int, bytes]:
        time.sleep(1.0)
        return page([])

    with Api(slow) as api, pytest.raises(InputError, match=r"did not answer within 0.2 s"):
        discover(spec(api.url, timeout_s=0.2), IngestSpec(), context=CONTEXT)


def test_needs_an_area() -> None:
    with pytest.raises(ConfigError, match="give the job an aoi or tiles"):
        discover(spec("http://127.0.0.1:9/v1"), IngestSpec(), context=None)


def test_registry_and_job_context(hrefs: dict[str, str]) -> None:
    """discover_scenes gives the tiles' bbox and the period to the API reader, and only to it."""
    assert READERS["stac_api"] == "suelo.ingest.stac_api" and reader("stac_api") is discover
    items = [item("S2B_31UFS_20230602_0_L2A", 2, hrefs), item("S2B_31UGS_20230602_0_L2A", 2, hrefs)]
    with Api(lambda m, p, b: page(items)) as api:
        job = validate_job(
            {
                "inputs": [{"kind": "stac_api", "url": api.url, "collections": ["sentinel-2-l2a"]}],
                "tiles": ["31UFS"],
                "period": {"start": "2023-06-01", "end": "2023-06-30"},
            }
        )
        scenes = discover_scenes(job)
    assert [s.extra["tile"] for s in scenes] == ["31UFS"]  # the other tile's item is not the job's
    west, south, east, north = api.requests[0][2]["bbox"]
    assert 4.40 < west < 4.42 and 50.42 < south < 50.43 and 6.01 < east < 6.02 and 51.44 < north < 51.45
