"""Inputs are confined (issue 15, findings 2, 5, 7 and 9): a hostile-href corpus, non-regular files, malformed
URLs and documents, corrupt SAFE bands. Every case goes through ``suelo validate`` and must be refused with one
line (checked exactly) and exit status 2; legitimate inputs (the demo, SAFE and GeoTIFF fixtures, declared roots)
must still be accepted. Files are real formats built in ``tmp_path`` (GeoTIFFs, JPEG 2000 SAFEs, GDAL VRTs).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from click.testing import CliRunner

from suelo.cli import main
from suelo.errors import InputError
from suelo.grid import Grid
from suelo.ingest import discover_scenes
from suelo.ingest.confine import NOT_ALLOWED_FORMAT, InputAccess, open_raster
from suelo.ingest.scene import BandRef, read_on_grid
from suelo.settings import load_job
from tests.fixtures import DEMO_JOB, build_safe, generate_region, one_line_error, suelo

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
FIRST_ITEM = "S2B_MSIL2A_20210103T103000_N0510_R051_T31UFS_0"
OUTSIDE = "is outside the folders this job may read (the job file's folder, the STAC file's folder, the inputs' paths "
OUTSIDE_TAIL = "and access.input_roots); add its folder to access.input_roots to allow it"
VSI = "GDAL virtual file paths (/vsi...) are not accepted as hrefs; give a path or an http(s)/s3 URL"
SECRET = "root:x:0:0:root:/root:/bin/bash\n"


def vrt_over(source: Path | str) -> str:
    """A GDAL VRT whose one band is the raw bytes of ``source`` (the disclosure the issue found)."""
    return f"""<VRTDataset rasterXSize="8" rasterYSize="1">
  <SRS>EPSG:32631</SRS>
  <GeoTransform>600000,10,0,5700000,0,-10</GeoTransform>
  <VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">
    <SourceFilename relativetoVRT="0">{source}</SourceFilename>
    <ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>8</LineOffset>
  </VRTRasterBand>
</VRTDataset>
"""


def in_subprocess(*args: object) -> str:
    """Run ``suelo`` in a real process with a timeout (for FIFOs: a regression would block, not fail)."""
    done = suelo(*args, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def valid(*args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert ": valid" in result.output
    return result.output


def job_spec(folder: Path, inputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "name": "confined",
        "inputs": inputs,
        "period": {"start": "2021-01-01", "end": "2021-12-31"},  # the 12 months the shipped model takes
        "ingest": {"bands": BANDS},
        "compute": {"block_size": 32, "scheduler": "synchronous"},
        "output": {"dir": str(folder / "out"), "cube": False},
        **extra,
    }


def write_job(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def case(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/job/ holds job.yaml and stac/items.json (a generated region); tmp_path/secret/passwd is outside."""
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "passwd").write_text(SECRET)
    generate_region(tmp_path / "job" / "stac", 32, months=2, scenes_per_month=1, seed=3)
    yield tmp_path / "job"


def set_href(job_dir: Path, href: str, band: str = "B04") -> Path:
    """Point ``band`` of the first item at ``href``; return the items file."""
    items = job_dir / "stac" / "items.json"
    document = json.loads(items.read_text())
    document["features"][0]["assets"][band]["href"] = href
    items.write_text(json.dumps(document))
    return items


def stac_job(job_dir: Path, **extra: Any) -> Path:
    return write_job(job_dir, job_spec(job_dir, [{"kind": "stac", "paths": ["stac/items.json"]}], **extra))


def label(job_dir: Path, href: str, band: str = "B04") -> str:
    return f"suelo: error: {job_dir / 'stac' / 'items.json'} item {FIRST_ITEM} asset {band} ({href})"


# -- the hostile-href corpus (finding 2) ------------------------------------------------------------------------


def test_the_legitimate_region_is_accepted(case: Path) -> None:
    valid("validate", stac_job(case))


def test_local_vrt_over_a_secret_file_is_refused(case: Path) -> None:
    secret = case.parent / "secret" / "passwd"
    for name in ("evil.vrt", "B04_disguised.tif"):  # by its content, not its name
        (case / "stac" / name).write_text(vrt_over(secret))
        set_href(case, name)
        line = one_line_error("validate", stac_job(case))
        assert line == f"{label(case, name)}: {NOT_ALLOWED_FORMAT}"
    # a plain GDAL open would have read the secret: the corpus file really is the attack
    with rasterio.open(case / "stac" / "evil.vrt") as src:
        assert bytes(src.read(1)[0]) == SECRET.encode()[:8]


def test_vrt_is_never_parsed_when_pixels_are_read(case: Path) -> None:
    """The driver allow-list holds at read time too (a scene built by other code, or the file swapped later)."""
    evil = case / "stac" / "scene_00_0" / "B04.tif"
    evil.write_text(vrt_over(case.parent / "secret" / "passwd"))
    grid = Grid(rasterio.crs.CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5700000), 8, 1)
    with pytest.raises(InputError) as caught:
        read_on_grid(BandRef(str(evil), 1, "B04 href"), grid, "nearest", None)
    assert str(caught.value) == f"B04 href: cannot read band: corrupt, truncated or unreadable ({NOT_ALLOWED_FORMAT})"
    with pytest.raises(rasterio.errors.RasterioIOError, match="is not a GeoTIFF/COG or JPEG 2000 file"):
        open_raster(str(evil))


def test_side_files_are_ignored(tmp_path: Path) -> None:
    """A ``.ovr`` beside a good GeoTIFF is opened by GDAL with any driver: a VRT there leaks into downsampled reads."""
    secret = tmp_path / "passwd"
    secret.write_text(SECRET)
    tif = tmp_path / "B04.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=16, height=2, count=1, dtype="uint8", crs="EPSG:32631",
                       transform=Affine(10, 0, 600000, 0, -10, 5700000)) as dst:  # fmt: skip
        dst.write(np.ones((1, 2, 16), np.uint8))
    Path(f"{tif}.ovr").write_text(vrt_over(secret))
    with rasterio.open(tif) as src:  # what GDAL does by default
        assert bytes(src.read(1, out_shape=(1, 8))[0]) == SECRET.encode()[:8]
    with open_raster(str(tif)) as src:
        assert src.overviews(1) == [] and src.read(1, out_shape=(1, 8)).tolist() == [[1] * 8]


@pytest.mark.parametrize(
    ("href", "problem"),
    [
        ("http://127.0.0.1:1/x.vrt", "names a VRT (.vrt) file; suelo reads only GeoTIFF/COG or JPEG 2000 rasters"),
        (
            "https://example.org/a/x.VRT?sig=1",
            "names a VRT (.vrt) file; suelo reads only GeoTIFF/COG or JPEG 2000 rasters",
        ),
        ("file:///etc/passwd", f"{OUTSIDE}{OUTSIDE_TAIL}"),
        ("/etc/passwd", f"{OUTSIDE}{OUTSIDE_TAIL}"),
        ("../" * 40 + "etc/passwd", f"resolves to /etc/passwd, which {OUTSIDE}{OUTSIDE_TAIL}"),
        ("/vsistdin/", VSI),
        ("/vsicurl/file:///etc/passwd", VSI),
        ("/vsizip/{/tmp/x.zip}/B04.tif", VSI),
        ("ftp://example.org/B04.tif", "unsupported href scheme ftp:// (use a local path, http(s):// or s3://)"),
        ("gopher://127.0.0.1:70/_x", "unsupported href scheme gopher:// (use a local path, http(s):// or s3://)"),
        ("file://otherhost/etc/passwd", "a file:// URI must be file:///absolute/path (no host, query or fragment)"),
        (
            "https://data.example.org\\@127.0.0.1/B04.tif",
            "malformed URL (no host, or spaces, backslashes or control characters)",
        ),
        ("https://[::1/B04.tif", "malformed URL (Invalid IPv6 URL)"),
    ],
)
def test_hostile_hrefs_are_refused_at_validate(case: Path, href: str, problem: str) -> None:
    set_href(case, href)
    assert one_line_error("validate", stac_job(case)) == f"{label(case, href)}: {problem}"


def test_four_levels_up_is_refused(case: Path) -> None:
    href = "../../../../etc/passwd"  # wherever that lands, it is not under the job's folders
    set_href(case, href)
    line = one_line_error("validate", stac_job(case))
    assert line.startswith(f"{label(case, href)}: resolves to ") and line.endswith(f"{OUTSIDE}{OUTSIDE_TAIL}")


def test_symlink_inside_the_job_folder_pointing_outside(case: Path) -> None:
    target = case.parent / "secret" / "B04.tif"
    (case / "stac" / "scene_00_0" / "B04.tif").rename(target)  # a real GeoTIFF, just outside
    (case / "stac" / "scene_00_0" / "B04.tif").symlink_to(target)
    line = one_line_error("validate", stac_job(case))
    assert line == f"{label(case, 'scene_00_0/B04.tif')}: resolves to {target}, which {OUTSIDE}{OUTSIDE_TAIL}"
    # declaring the folder makes it an input root
    valid("validate", stac_job(case, access={"input_roots": ["../secret"]}))


def test_fifo_href_is_refused_without_blocking(case: Path) -> None:
    fifo = case / "stac" / "B04.fifo"
    os.mkfifo(fifo)
    set_href(case, "B04.fifo")
    line = in_subprocess("validate", stac_job(case))
    assert (
        line
        == f"{label(case, 'B04.fifo')}: cannot read asset file {fifo}: it is a FIFO (named pipe), not a regular file"
    )


@pytest.mark.parametrize(
    ("access", "href", "problem"),
    [
        (
            {"remote_hosts": ["data.example.org"]},
            "https://evil.example.com/B04.tif",
            "host evil.example.com is not in access.remote_hosts (data.example.org)",
        ),
        (
            {"remote_hosts": [".example.org"]},
            "https://example.org.evil.net/B04.tif",
            "host example.org.evil.net is not in access.remote_hosts (.example.org)",
        ),
        (
            {"remote_hosts": ["sentinel-cogs"]},
            "s3://other-bucket/31/U/FS/B04.tif",
            "host other-bucket is not in access.remote_hosts (sentinel-cogs)",
        ),
        (
            {"allow_any_remote_host": False},
            "https://data.example.org/B04.tif",
            "host data.example.org: remote inputs are off (access.allow_any_remote_host is false)",
        ),
    ],
)
def test_remote_hosts_off_the_allow_list(case: Path, access: dict[str, Any], href: str, problem: str) -> None:
    set_href(case, href)
    assert one_line_error("validate", stac_job(case, access=access)) == f"{label(case, href)}: {problem}"


def test_allowed_hosts_pass_discovery(case: Path) -> None:
    set_href(case, "https://tiles.example.org/B04.tif")
    set_href(case, "s3://sentinel-cogs/31/U/FS/B02.tif", band="B02")
    job = load_job(stac_job(case, access={"remote_hosts": [".example.org", "sentinel-cogs"]}))
    first = next(s for s in discover_scenes(job) if s.scene_id == FIRST_ITEM)
    assert first.bands["B04"].path == "/vsicurl/https://tiles.example.org/B04.tif"
    assert first.bands["B02"].path == "/vsis3/sentinel-cogs/31/U/FS/B02.tif"


class _Files(BaseHTTPRequestHandler):
    """Serves the files of ``root`` with Range support, as GDAL's /vsicurl/ wants; logs each request to ``log``."""

    root: Path
    log: Path

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        with self.log.open("a") as log:
            log.write(f"{self.command} {self.path}\n")
        path = self.root / self.path.split("?")[0].lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted[6:].partition("-")
            start, end = int(first or 0), min(int(last) if last else len(data) - 1, len(data) - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])

    def log_message(self, *args: Any) -> None:
        pass


def _serve(root: Path, log: Path, ready: Any) -> None:
    handler = type("Files", (_Files,), {"root": root, "log": log})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    ready.put(httpd.server_address[1])
    httpd.serve_forever()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, Path]]:
    """(URL, folder it serves, request log). In its own process: GDAL holds the GIL while it waits on some reads,
    so a server thread of this process would stall until GDAL's HTTP timeout."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    root, log = tmp_path / "www", tmp_path / "www.log"
    root.mkdir()
    log.touch()
    context = multiprocessing.get_context("fork")
    ready = context.Queue()
    process = context.Process(target=_serve, args=(root, log, ready), daemon=True)
    process.start()
    try:
        yield f"http://127.0.0.1:{ready.get(timeout=30)}", root, log
    finally:
        process.terminate()
        process.join(10)


def test_remote_vrt_refused_before_any_request(case: Path, server: tuple[str, Path, Path]) -> None:
    url, root, log = server
    (root / "x.vrt").write_text(vrt_over(case.parent / "secret" / "passwd"))
    set_href(case, f"{url}/x.vrt")
    line = one_line_error("validate", stac_job(case))
    assert (
        line
        == f"{label(case, f'{url}/x.vrt')}: names a VRT (.vrt) file; suelo reads only GeoTIFF/COG or JPEG 2000 rasters"
    )
    assert log.read_text() == ""


def test_remote_vrt_named_tif_is_never_parsed(case: Path, server: tuple[str, Path, Path]) -> None:
    url, root, log = server
    (root / "B04.tif").write_text(vrt_over(case.parent / "secret" / "passwd"))
    set_href(case, f"{url}/B04.tif")
    line = one_line_error("validate", stac_job(case))
    assert line == f"{label(case, f'{url}/B04.tif')}: {NOT_ALLOWED_FORMAT}"
    assert "GET /B04.tif" in log.read_text()  # it was fetched, and refused for what it holds
    with rasterio.open(f"/vsicurl/{url}/B04.tif") as src:  # what an unrestricted open does: the secret
        assert bytes(src.read(1)[0]) == SECRET.encode()[:8]


# -- legitimate inputs stay accepted ------------------------------------------------------------------------------


def test_demo_job_is_accepted() -> None:
    """The demo's items live in data/sample/belgium/, outside workflows/: the STAC file's folder is allowed."""
    output = valid("validate", DEMO_JOB)
    assert "scenes on the grid in the period: 10" in output


def test_safe_and_geotiff_fixtures_are_accepted(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    build_safe(job_dir / "products")
    spec = job_spec(job_dir, [{"kind": "safe", "paths": ["products"]}])
    valid("validate", write_job(job_dir, spec))

    tif = tmp_path / "elsewhere" / "T31UFS_20210105.tif"  # outside the job folder, but named by the job
    tif.parent.mkdir()
    values = np.full((len(BANDS) + 1, 16, 16), 1500, np.uint16)
    values[-1] = 4  # SCL: vegetation
    with rasterio.open(tif, "w", driver="GTiff", width=16, height=16, count=len(values), dtype="uint16",
                       crs="EPSG:32631", transform=Affine(10, 0, 600000, 0, -10, 5700000)) as dst:  # fmt: skip
        dst.write(values)
    (job_dir / "linked").symlink_to(tif.parent)  # a symlinked data folder named by the job is its own root
    for paths in ([str(tif)], ["linked"]):
        inputs = [{"kind": "geotiff", "paths": paths, "bands": [*BANDS, "SCL"], "product_level": "L2A",
                   "processing_baseline": "04.00"}]  # fmt: skip
        valid("validate", write_job(job_dir, job_spec(job_dir, inputs)))


def test_input_roots_allow_absolute_hrefs_elsewhere(case: Path) -> None:
    shared = case.parent / "shared"
    shared.mkdir()
    moved = shared / "B04.tif"
    (case / "stac" / "scene_00_0" / "B04.tif").rename(moved)
    set_href(case, str(moved))
    line = one_line_error("validate", stac_job(case))
    assert line == f"{label(case, str(moved))}: {OUTSIDE}{OUTSIDE_TAIL}"
    valid("validate", stac_job(case, access={"input_roots": ["../shared"]}))


# -- SAFE: symlinks out of the product, corrupt bands (finding 9) ------------------------------------------------


def safe_job(job_dir: Path) -> tuple[Path, Path]:
    product = build_safe(job_dir / "products")
    spec = job_spec(job_dir, [{"kind": "safe", "paths": ["products"]}])
    return write_job(job_dir, spec), product


def test_safe_band_symlinked_outside_is_refused(tmp_path: Path) -> None:
    job, product = safe_job(tmp_path / "job")
    (b04,) = product.glob("GRANULE/*/IMG_DATA/R10m/*_B04_10m.jp2")
    target = tmp_path / "B04.jp2"
    b04.rename(target)
    b04.symlink_to(target)
    assert (
        one_line_error("validate", job) == f"suelo: error: {b04}: resolves to {target}, which {OUTSIDE}{OUTSIDE_TAIL}"
    )


def test_safe_product_symlinked_outside_is_refused(tmp_path: Path) -> None:
    elsewhere = build_safe(tmp_path / "elsewhere")
    (tmp_path / "job" / "products").mkdir(parents=True)
    link = tmp_path / "job" / "products" / elsewhere.name
    link.symlink_to(elsewhere)
    spec = job_spec(tmp_path / "job", [{"kind": "safe", "paths": ["products"]}])
    line = one_line_error("validate", write_job(tmp_path / "job", spec))
    assert line == f"suelo: error: {link}: resolves to {elsewhere}, which {OUTSIDE}{OUTSIDE_TAIL}"


@pytest.mark.parametrize("corruption", ["garbage", "cut_in_codestream"])
def test_corrupt_b04_jp2_fails_validate(tmp_path: Path, corruption: str) -> None:
    job, product = safe_job(tmp_path / "job")
    (b04,) = product.glob("GRANULE/*/IMG_DATA/R10m/*_B04_10m.jp2")  # not the footprint band (B02)
    data = b04.read_bytes()
    if corruption == "garbage":
        b04.write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + os.urandom(2000))
    else:
        codestream = data.index(b"jp2c") + 4
        b04.write_bytes(data[: codestream + (len(data) - codestream) // 2])
    line = one_line_error("validate", job)
    assert line.startswith(f"suelo: error: {b04}: cannot read band: corrupt, truncated or unreadable (")


# -- non-regular files (finding 7) --------------------------------------------------------------------------------


def test_job_file_that_is_not_a_regular_file(tmp_path: Path) -> None:
    assert one_line_error("validate", "/dev/zero") == (
        "suelo: error: /dev/zero: cannot read job spec: a character device, not a regular file"
    )
    link = tmp_path / "job.yaml"
    link.symlink_to("/dev/zero")
    assert one_line_error("validate", link) == (
        f"suelo: error: {link}: cannot read job spec: a character device, not a regular file"
    )
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert in_subprocess("validate", fifo) == (
        f"suelo: error: {fifo}: cannot read job spec: a FIFO (named pipe), not a regular file"
    )


def test_stac_document_that_is_not_a_regular_file(case: Path) -> None:
    items = case / "stac" / "items.json"
    items.unlink()
    items.symlink_to("/dev/zero")
    assert one_line_error("validate", stac_job(case)) == (
        f"suelo: error: {items}: cannot read STAC document: it is a character device, not a regular file"
    )
    items.unlink()
    os.mkfifo(items)
    assert in_subprocess("validate", stac_job(case)) == (
        f"suelo: error: {items}: cannot read STAC document: it is a FIFO (named pipe), not a regular file"
    )


def test_aoi_and_geotiff_that_are_not_regular_files(case: Path) -> None:
    fifo = case / "aoi.geojson"
    os.mkfifo(fifo)
    job = stac_job(case, aoi={"file": "aoi.geojson"})
    assert in_subprocess("validate", job) == (
        f"suelo: error: {fifo}: cannot read AOI vector file: it is a FIFO (named pipe), not a regular file"
    )
    tif = case / "T31UFS_20210105.tif"
    tif.symlink_to("/dev/zero")
    inputs = [{"kind": "geotiff", "paths": [tif.name], "bands": ["B04"], "processing_baseline": "04.00"}]
    job = write_job(case, job_spec(case, inputs, ingest={"bands": ["B04"]}))
    assert one_line_error("validate", job) == (
        f"suelo: error: {tif}: cannot read GeoTIFF: it is a character device, not a regular file"
    )


def test_safe_metadata_that_is_not_a_regular_file(tmp_path: Path) -> None:
    job, product = safe_job(tmp_path / "job")
    mtd = product / "MTD_MSIL2A.xml"
    mtd.unlink()
    mtd.symlink_to("/dev/zero")
    line = one_line_error("validate", job)
    assert line == f"suelo: error: {product}: no MTD_MSIL2A.xml or MTD_MSIL1C.xml at the root of the SAFE product"


# -- tracebacks for user errors (finding 5) -----------------------------------------------------------------------


def test_malformed_stac_api_url(tmp_path: Path) -> None:
    url = "http://127.0.0.1[:9/v1"
    spec = job_spec(tmp_path, [{"kind": "stac_api", "url": url, "collections": ["sentinel-2-l2a"]}],
                    aoi={"bbox": [4.4, 50.4, 4.5, 50.5]})  # fmt: skip
    assert (
        one_line_error("validate", write_job(tmp_path, spec))
        == f"suelo: error: {url}: malformed URL (Invalid IPv6 URL)"
    )


def test_stac_api_off_the_host_list(tmp_path: Path) -> None:
    url = "https://earth-search.aws.element84.com/v1"
    spec = job_spec(tmp_path, [{"kind": "stac_api", "url": url, "collections": ["sentinel-2-l2a"]}],
                    aoi={"bbox": [4.4, 50.4, 4.5, 50.5]}, access={"remote_hosts": [".example.org"]})  # fmt: skip
    assert one_line_error("validate", write_job(tmp_path, spec)) == (
        f"suelo: error: {url}: host earth-search.aws.element84.com is not in access.remote_hosts (.example.org)"
    )


def test_stac_file_nested_200000_levels(case: Path) -> None:
    items = case / "stac" / "items.json"
    items.write_text("[" * 200_000 + "]" * 200_000)
    assert one_line_error("validate", stac_job(case)) == f"suelo: error: {items}: not valid JSON (nested too deeply)"


# -- the rules themselves -----------------------------------------------------------------------------------------


def test_input_access_rules(tmp_path: Path) -> None:
    rules = InputAccess(roots=(str(tmp_path),), hosts=("data.example.org", ".example.net"))
    assert rules.host_allowed("data.example.org") and rules.host_allowed("a.b.example.net")
    assert not rules.host_allowed("example.net") and not rules.host_allowed("xdata.example.org")
    assert rules.confine(tmp_path / "a" / ".." / "b.tif", "x") == str(tmp_path / "b.tif")
    with pytest.raises(InputError, match="outside the folders"):
        rules.confine(tmp_path / ".." / "b.tif", "x")
    assert InputAccess().confine("/etc/passwd", "x") == "/etc/passwd"  # no job: local paths are not confined
    with pytest.raises(InputError, match="unsupported href scheme gs://"):
        InputAccess().remote_raster("gs://bucket/B04.tif", "x")
