"""STAC reader: Items / ItemCollections (JSON files) whose assets are single-band COGs, local or remote.

The JSON is parsed with :mod:`json` rather than pystac so that every malformed document becomes an
:class:`InputError` naming the file and item, instead of a library traceback half-way through a job.

Hrefs are confined (:mod:`suelo.ingest.confine`): local ones must resolve into the job's allowed folders (the
STAC file's own folder among them) and be GeoTIFF/JPEG 2000 files, remote ones http(s)/s3 URLs on allowed hosts;
``/vsi...`` paths are refused.

Radiometry is decided from metadata only, never from the acquisition date: one date can hold products of
different processing baselines (reprocessing campaigns), and providers differ in whether they already applied
the baseline 04.00 offset.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError

from suelo.errors import InputError, agreed
from suelo.grid import Bounds
from suelo.ingest.confine import UNCONFINED, InputAccess, href_scheme, open_raster, read_limited
from suelo.ingest.scene import (
    MGRS_TILE,
    STAC_ITEM_MEDIA_TYPE,
    BandRef,
    Radiometry,
    Scene,
    SourceLink,
    baseline_at_least,
    gdal_env,
    tile_in_name,
)
from suelo.settings import S2_BAND_RESOLUTION, IngestSpec, StacInput

#: Earth Search (element84) asset keys; Planetary Computer already uses the canonical names.
EARTH_SEARCH_ASSETS: dict[str, str] = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05", "rededge2": "B06",
    "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09", "cirrus": "B10", "swir16": "B11",
    "swir22": "B12", "scl": "SCL",
}  # fmt: skip
CANONICAL_ASSETS: dict[str, str] = {name: name for name in (*S2_BAND_RESOLUTION, "SCL")}

NO_RADIOMETRY = (
    "cannot determine the radiometric offset: no raster:bands scale/offset and no "
    "s2:processing_baseline/processing:version"
)
#: An ItemCollection of a few thousand items is tens of MB; anything far larger is not read into memory.
MAX_DOCUMENT_BYTES = 256 * 1024**2


def discover(spec: StacInput, ingest: IngestSpec, *, access: InputAccess | None = None) -> list[Scene]:
    """One :class:`Scene` per STAC Item found in ``spec.paths`` (files, or folders of ``*.json``).

    ``access``: the job's input rules (:func:`suelo.ingest.discover_scenes` passes them); each document's own
    folder is added to its allowed folders, so relative hrefs next to it always work.
    """
    access = access or UNCONFINED
    scenes: list[Scene] = []
    for document in documents(spec.paths, access):
        rules = access.with_roots([document.absolute().parent])
        for item in document_items(document, load_json(document)):
            scenes.append(item_scene(item, document, rules, spec.product_level))
    return scenes


# documents and items ----------
def documents(paths: tuple[Path, ...], access: InputAccess) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file())
            if not found:
                raise InputError(path, "folder holds no STAC *.json files")
            for document in found:
                access.confine(document, document)  # a symlink in the folder may point anywhere
            yield from found
        else:
            yield path


def load_json(path: Path) -> Any:
    """The parsed JSON of a STAC file: a regular file (not a FIFO or /dev/zero behind a symlink) of bounded size."""
    data = read_limited(path, MAX_DOCUMENT_BYTES, "STAC document")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(path, f"cannot read STAC document (not UTF-8: {exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc})") from exc
    except RecursionError:
        raise InputError(path, "not valid JSON (nested too deeply)") from None


def collection_features(where: str | Path, collection: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """The items of a FeatureCollection (a file or an API page), each checked to be a STAC Item object."""
    features = collection.get("features")
    if not isinstance(features, list):
        raise InputError(where, f"{what} has no 'features' list")
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise InputError(where, f"features[{i}] is not a STAC Item (a JSON object with type 'Feature')")
    return features


def document_items(path: Path, document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        raise InputError(path, f"a STAC document is a JSON object, got {type(document).__name__}")
    kind = document.get("type")
    if kind == "Feature":
        return [document]
    if kind == "FeatureCollection":
        return collection_features(path, document, "ItemCollection")
    if kind in ("Collection", "Catalog"):
        raise InputError(path, f"is a STAC {kind}; give Item or ItemCollection JSON files (e.g. a search result)")
    raise InputError(path, f"not a STAC Item or ItemCollection (type is {kind!r})")


def item_scene(
    item: dict[str, Any], base: Path | str, access: InputAccess | None = None, level: str | None = None
) -> Scene:
    """A :class:`Scene` from one parsed STAC Item.

    ``base`` is where the item came from: the JSON file (relative hrefs are relative to it) or, for STAC API
    results, the URL of the item or of the search page (relative hrefs are joined to it). It also names the item
    in error messages. ``access``: the rules its hrefs must follow (default: local paths unconfined). ``level``:
    the processing level the job spec declares for the input (checked against the Item's own statements).
    """
    access = access or UNCONFINED
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise InputError(base, "STAC Item without a string 'id'")
    where = f"{base} item {item_id}"
    properties = json_object(item.get("properties"), where, "properties")
    assets = json_object(item.get("assets"), where, "assets")

    bands: dict[str, BandRef] = {}
    band_assets: dict[str, dict[str, Any]] = {}
    for key, asset in assets.items():
        name = CANONICAL_ASSETS.get(key) or EARTH_SEARCH_ASSETS.get(key)
        if name is None:
            continue  # thumbnails, metadata, -jp2 duplicates, ...
        asset = json_object(asset, where, f"asset {key}")
        href = asset.get("href")
        if not isinstance(href, str) or not href:
            raise InputError(where, f"asset {key}: 'href' must be a non-empty string, got {href!r}")
        if name in bands:
            raise InputError(where, f"assets {band_assets[name]['_key']} and {key} are both band {name}")
        label = f"{where} asset {key} ({href})"
        bands[name] = BandRef(gdal_path(href, base, label, access), 1, label)
        band_assets[name] = {**asset, "_key": key}

    scl = bands.pop("SCL", None)
    scl_asset = band_assets.pop("SCL", None)
    if not bands:
        raise InputError(where, f"no Sentinel-2 band assets (has {', '.join(sorted(assets)) or 'none'})")

    crs, bounds = item_footprint(where, properties, [*band_assets.values(), *([scl_asset] if scl_asset else [])], bands)
    return Scene(
        scene_id=item_id,
        acquired=item_acquired(where, properties),
        level=item_level(where, item, properties, level),
        source=where,
        origin=SourceLink(str(base), f"STAC Item {item_id}", STAC_ITEM_MEDIA_TYPE),
        bands=bands,
        radiometry=_radiometry(where, properties, band_assets),
        crs=crs,
        bounds=bounds,
        scl=scl,
        nodata_values=(_nodata(where, band_assets),),
        extra={
            **{
                k: properties[k]
                for k in ("platform", "eo:cloud_cover", "s2:mgrs_tile", "mgrs:utm_zone", "s2:product_uri")
                if k in properties
            },
            "tile": item_tile(item_id, properties),
        },
    )


def item_tile(item_id: str, properties: dict[str, Any]) -> str | None:
    """The MGRS tile (e.g. ``31UFS``) of an item: ``s2:mgrs_tile``, the ``mgrs:`` triple, else the id; or None.

    Providers disagree on where they put it (Planetary Computer: ``s2:mgrs_tile``; Earth Search v1: the ``mgrs``
    extension), and both spell it in the id, so the id is the last resort before giving up.
    """
    tile = properties.get("s2:mgrs_tile")
    if isinstance(tile, str) and MGRS_TILE.fullmatch(tile.upper().removeprefix("T")):
        return tile.upper().removeprefix("T")
    zone, band, square = (properties.get(f"mgrs:{k}") for k in ("utm_zone", "latitude_band", "grid_square"))
    if isinstance(zone, int) and not isinstance(zone, bool) and isinstance(band, str) and isinstance(square, str):
        tile = f"{zone:02d}{band}{square}".upper()
        if MGRS_TILE.fullmatch(tile):
            return tile
    return tile_in_name(item_id)


def json_object(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(where, f"'{what}' must be a JSON object, got {type(value).__name__}")
    return value


def gdal_path(href: str, document: Path | str, label: str, access: InputAccess) -> str:
    """A path GDAL can open: relative hrefs are relative to the JSON file or URL (STAC rule), URLs use /vsi*/.

    Every href is checked against ``access`` here, at discovery, so ``suelo validate`` refuses what a run would:
    /vsi paths, schemes other than http(s), s3 and file, hosts off the allow-list, local files outside the allowed
    folders, non-regular files, and files that are not GeoTIFF/JPEG 2000.
    """
    if href.lstrip().lower().startswith("/vsi"):
        raise InputError(
            label, "GDAL virtual file paths (/vsi...) are not accepted as hrefs; give a path or an http(s)/s3 URL"
        )
    if isinstance(document, str) and href_scheme(href) is None:
        # An API result: a relative href is relative to the URL the item came from, never to this machine.
        try:
            href = urljoin(document, href)
        except ValueError as exc:
            raise InputError(label, f"malformed URL ({exc})") from exc
    scheme = href_scheme(href)
    if scheme is None:
        local = Path(href)
    elif scheme == "file":
        local = _file_uri_path(href, label)
    else:
        return access.remote_raster(href, label)  # refuses every scheme but http(s) and s3
    if not local.is_absolute():
        if isinstance(document, str):
            raise InputError(label, "a STAC API answer cannot name a relative local file")
        local = Path(document).absolute().parent / local
    # Checked now so a typo fails at discovery, not after hours of reading other scenes.
    return access.local_raster(local, label)


def _file_uri_path(href: str, label: str) -> Path:
    """The local path of a ``file:///abs/path`` URI (percent-decoded); a host other than localhost is refused."""
    try:
        parts = urlsplit(href)
    except ValueError as exc:
        raise InputError(label, f"malformed file:// URI ({exc})") from exc
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise InputError(label, "a file:// URI must be file:///absolute/path (no host, query or fragment)")
    return Path(unquote(parts.path))


# metadata ----------
def item_acquired(where: str, properties: dict[str, Any]) -> dt.datetime:
    key = "datetime"
    value = properties.get(key)
    if value is None:  # STAC allows a null datetime for ranges; a composite/period is dated by its start
        key = "start_datetime"
        value = properties.get(key)
    if value is None:
        raise InputError(where, "no 'datetime' (nor 'start_datetime') property")
    if not isinstance(value, str):
        raise InputError(where, f"'{key}' must be an RFC 3339 string, got {value!r}")
    parsed = parse_datetime(value)
    if parsed is None:
        raise InputError(where, f"'{key}' is not an RFC 3339 date-time: {value!r}")
    return parsed


def parse_datetime(text: str) -> dt.datetime | None:
    """RFC 3339 (as STAC writes it) to an aware UTC datetime; ``None`` if unparsable.

    Done by hand because Python 3.10's ``fromisoformat`` rejects ``Z`` and fractional seconds that are not 3
    or 6 digits, both common in STAC.
    """
    match = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?)?\s*([Zz]|[+-]\d{2}:?\d{2})?",
        text.strip(),
    )
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    normalised = f"{day}T{clock or '00:00:00'}"
    if fraction:
        normalised += "." + fraction[:6].ljust(6, "0")
    if zone and zone not in ("Z", "z"):
        normalised += zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
    try:
        parsed = dt.datetime.fromisoformat(normalised)
        return parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else parsed.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        return None


#: Where a STAC Item states its processing level, and how each value reads (``None``: the key says nothing).
_PRODUCT_TYPES = {"S2MSI2A": "L2A", "S2MSI1C": "L1C", "S2MSI2AP": "L2A"}
_PROCESSING_LEVELS = {"L2A": "L2A", "L2": "L2A", "L1C": "L1C", "L1": "L1C"}
_LEVEL_IN_NAME = re.compile(r"(?:MSI|[^A-Z0-9]|^)(L2A|L1C)(?=[^A-Z0-9]|$)")
HOW_TO_DECLARE_LEVEL = (
    "add 'processing:level' (L2A or L1C) or 's2:product_type' to the item, or state product_level: L2A or L1C "
    "on this input in the job spec"
)


def level_evidence(item: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, str]:
    """Every statement of the processing level an Item makes: key -> ``"L2A"`` / ``"L1C"``.

    Read from ``processing:level`` (the processing extension), ``s2:product_type`` (Earth Search, Planetary
    Computer), the collection id (``sentinel-2-l2a``, ``sentinel-2-c1-l2a``, ``sentinel-2-l1c``) and the product
    name in the id or ``s2:product_uri`` (``S2B_MSIL2A_...``). Never from the pixels and never by default.
    """
    found: dict[str, str] = {}
    level = str(properties.get("processing:level", "")).strip().upper()
    if level in _PROCESSING_LEVELS:
        found["processing:level"] = _PROCESSING_LEVELS[level]
    product_type = str(properties.get("s2:product_type", "")).strip().upper()
    if product_type in _PRODUCT_TYPES:
        found["s2:product_type"] = _PRODUCT_TYPES[product_type]
    for key, value in (("collection", item.get("collection")), ("id", item.get("id")),
                       ("s2:product_uri", properties.get("s2:product_uri"))):  # fmt: skip
        if isinstance(value, str):
            match = _LEVEL_IN_NAME.search(value.upper())
            if match:
                found[key] = match.group(1)
    return found


def item_level(where: str, item: Mapping[str, Any], properties: Mapping[str, Any], declared: str | None) -> str:
    """The Item's processing level: what its metadata states, else what the job spec declares for the input.

    Statements that disagree (metadata with metadata, or with the spec) are an error naming both; no statement at
    all is an error saying how to declare the level: Presto was pre-trained on L1C and a model's input contract
    names its level, so a silent default would feed it the wrong reflectance.
    """
    evidence = level_evidence(item, properties)
    if declared is not None:
        evidence["product_level (job spec)"] = declared
    level = agreed(where, evidence, "processing level is contradictory ({views})")
    if level is None:
        raise InputError(where, f"processing level unknown (Level-2A or Level-1C?); {HOW_TO_DECLARE_LEVEL}")
    return level


def raster_band(where: str, asset: dict[str, Any]) -> dict[str, Any]:
    bands = asset.get("raster:bands")
    if bands is None:
        return {}
    if not isinstance(bands, list) or not bands or not isinstance(bands[0], dict):
        raise InputError(where, f"asset {asset['_key']}: 'raster:bands' must be a non-empty list of objects")
    return bands[0]


def _number(where: str, asset: dict[str, Any], field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(where, f"asset {asset['_key']}: raster:bands {field} must be a finite number, got {value!r}")
    return float(value)


def _radiometry(where: str, properties: dict[str, Any], band_assets: dict[str, dict[str, Any]]) -> Radiometry:
    baseline_key = next((k for k in ("s2:processing_baseline", "processing:version") if k in properties), None)
    baseline: str | None = None
    if baseline_key is not None:
        value = properties[baseline_key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(where, f"'{baseline_key}' must be a string like '04.00', got {value!r}")
        baseline = str(value)

    # Rule 1, per band: the asset's own scale/offset is the provider's statement of what the DNs mean, so it
    # wins over any baseline arithmetic (some providers shift DNs, others only declare the offset here).
    quantifications: dict[str, float] = {}
    offsets: dict[str, float] = {}
    sources: list[str] = []
    for name, asset in sorted(band_assets.items()):
        raster = raster_band(where, asset)
        if "scale" not in raster:
            continue  # an offset without a scale is not enough to interpret DNs; fall back to item rules
        scale = _number(where, asset, "scale", raster["scale"])
        offset = _number(where, asset, "offset", raster.get("offset", 0.0))
        if scale <= 0:
            raise InputError(where, f"asset {asset['_key']}: raster:bands scale must be positive, got {scale}")
        # Rounded so 0.0001 gives exactly 10000 and -0.1 exactly -1000 despite binary floating point.
        quantifications[name] = round(1.0 / scale, 6)
        offsets[name] = round(offset / scale, 6) + 0.0  # + 0.0 turns -0.0 into 0.0
        source = f"STAC raster:bands scale {raster['scale']} offset {raster.get('offset', 0)}"
        if source not in sources:
            sources.append(source)

    missing = [name for name in band_assets if name not in quantifications]
    if missing:
        if properties.get("earthsearch:boa_offset_applied") is True:
            fallback, source = 0.0, "STAC earthsearch:boa_offset_applied true"
        elif baseline is not None:
            try:
                fallback = -1000.0 if baseline_at_least(baseline, "04.00") else 0.0
            except ValueError as exc:
                raise InputError(
                    where, f"'{baseline_key}' is not a processing baseline like '04.00': {baseline!r}"
                ) from exc
            source = f"STAC {baseline_key} {baseline}"
        else:
            raise InputError(where, NO_RADIOMETRY)
        for name in missing:
            quantifications[name] = 10000.0
            offsets[name] = fallback
        sources.append(source)

    distinct = sorted(set(quantifications.values()))
    if len(distinct) > 1:
        detail = ", ".join(f"{name} {q:g}" for name, q in sorted(quantifications.items()))
        raise InputError(where, f"band assets have different raster:bands scales ({detail}); one scale is supported")
    return Radiometry(
        quantification=distinct[0], offsets=offsets, processing_baseline=baseline, source="; ".join(sources)
    )


def _nodata(where: str, band_assets: dict[str, dict[str, Any]]) -> float:
    values: dict[str, float] = {}
    for name, asset in band_assets.items():
        raw = raster_band(where, asset).get("nodata")
        if raw is None:
            continue
        if isinstance(raw, str) and raw.lower() in ("nan", "inf", "-inf"):
            values[name] = float(raw)  # the raster extension spells non-finite nodata as strings
        elif isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise InputError(where, f"asset {asset['_key']}: raster:bands nodata must be a number, got {raw!r}")
        else:
            values[name] = float(raw)
    distinct = {str(v) for v in values.values()}  # str() so NaN equals NaN
    if len(distinct) > 1:
        detail = ", ".join(f"{name} {v:g}" for name, v in sorted(values.items()))
        raise InputError(where, f"band assets have different raster:bands nodata ({detail})")
    return next(iter(values.values())) if values else 0.0


def item_footprint(
    where: str, properties: dict[str, Any], assets: list[dict[str, Any]], bands: Mapping[str, BandRef]
) -> tuple[CRS, Bounds]:
    """Tile CRS and bounds from the projection extension if given, else from one band's header."""
    item_crs, item_bounds = _projection(where, properties, None)
    if item_crs is not None and item_bounds is not None:
        return item_crs, item_bounds
    for asset in assets:
        # An item-level proj:epsg with the extent only on the assets is common (Planetary Computer).
        crs, bounds = _projection(where, asset, item_crs)
        if crs is not None and bounds is not None:
            return crs, bounds
    ref = bands[min(bands)]
    try:
        with gdal_env(), open_raster(ref.path) as src:  # often remote: bounded HTTP waits
            crs, bounds = src.crs, src.bounds
    except (RasterioError, OSError) as exc:
        raise InputError(ref.name_for_errors, f"cannot read the band header to find the footprint ({exc})") from exc
    if crs is None:
        raise InputError(ref.name_for_errors, "band has no coordinate reference system")
    return crs, (bounds.left, bounds.bottom, bounds.right, bounds.top)


def _projection(where: str, holder: dict[str, Any], default: CRS | None) -> tuple[CRS | None, Bounds | None]:
    epsg, code = holder.get("proj:epsg"), holder.get("proj:code")
    if epsg is None and code is None:
        return default, (_extent(where, holder) if default is not None else None)
    try:
        if epsg is not None:
            if isinstance(epsg, bool) or not isinstance(epsg, int):
                raise InputError(where, f"'proj:epsg' must be an integer, got {epsg!r}")
            crs = CRS.from_epsg(epsg)
        else:
            if not isinstance(code, str):
                raise InputError(where, f"'proj:code' must be a string like 'EPSG:32631', got {code!r}")
            crs = CRS.from_user_input(code)
    except CRSError as exc:
        raise InputError(where, f"unknown projection {epsg or code!r} ({exc})") from exc
    return crs, _extent(where, holder)


def _extent(where: str, holder: dict[str, Any]) -> Bounds | None:
    bbox = holder.get("proj:bbox")
    if bbox is not None:
        if not _numbers(bbox) or len(bbox) not in (4, 6):
            raise InputError(where, f"'proj:bbox' must be 4 (or 6) numbers, got {bbox!r}")
        half = len(bbox) // 2
        left, bottom, right, top = bbox[0], bbox[1], bbox[half], bbox[half + 1]
        return (float(left), float(bottom), float(right), float(top))
    transform, shape = holder.get("proj:transform"), holder.get("proj:shape")
    if transform is not None and shape is not None:
        if not _numbers(transform) or len(transform) not in (6, 9) or not _numbers(shape) or len(shape) != 2:
            raise InputError(where, "'proj:transform' must be 6 or 9 numbers and 'proj:shape' 2 numbers")
        a, b, c, d, e, f = transform[:6]
        height, width = shape
        xs = [c, c + a * width + b * height, c + a * width, c + b * height]
        ys = [f, f + d * width + e * height, f + d * width, f + e * height]
        return (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))
    return None


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
