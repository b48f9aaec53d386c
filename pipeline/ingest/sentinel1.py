"""Sentinel-1 backscatter reader: analysis-ready VV/VH backscatter from STAC items or GeoTIFF/COG files, composited
into monthly means on the job grid.

What is read
    Terrain-corrected (RTC gamma0) or calibrated, geocoded (sigma0) backscatter only. Raw products are refused with
    one error saying how to get analysis-ready data: a GRD/SLC ``.SAFE`` folder or zip, the measurement TIFFs inside
    one, Planetary Computer's ``sentinel-1-grd`` collection (and any item whose ``sar:product_type`` is GRD without a
    sign of calibration), SLC, RAW and OCN items. Planetary Computer's ``sentinel-1-rtc`` items also say
    ``sar:product_type: GRD`` (the product they were derived from), so an item counts as calibrated when its
    collection or id says RTC, its product type is RTC/CARD-BS/NRB, an asset's roles say gamma0/sigma0/backscatter,
    or an asset states a backscatter unit.

    - STAC Items / ItemCollections (JSON files, or folders of them; hrefs resolved and confined exactly like the
      Sentinel-2 STAC reader, whose helpers are reused): assets keyed ``vv`` / ``vh`` (Planetary Computer, Earth
      Search; any case). An item with only one of them is accepted when ``sar:polarizations`` says it is single-pol.
    - GeoTIFF/COG files (or folders of ``*.tif``/``*.tiff``): one file per acquisition whose band descriptions name
      VV and VH (``VV``, ``Gamma0_VV``, ``Sigma0_VH_db``: a VV/VH token, any case), or whose bands the spec's
      ``bands`` names; or one single-band file per polarization with a ``VV``/``VH`` token in the name
      (``S1A_20210612_VV.tif`` + ``S1A_20210612_VH.tif``), paired by the rest of the name. A folder holding
      ``*.json`` files is a STAC folder (its TIFFs are the items' assets, not acquisitions of their own).

Acquisition date
    STAC: ``datetime`` (else ``start_datetime``). GeoTIFF: the first valid ``YYYYMMDD`` / ``YYYY-MM-DD`` date (with
    ``THHMMSS`` when present) in the file name, else an acquisition tag (``ACQUISITION_DATE``, ``SENSING_TIME``,
    ... and ``ACQUISITION_START_TIME``, ``FIRST_LINE_TIME``); not ``TIFFTAG_DATETIME``, which is when the file was
    written: an export made in another month would silently move the acquisition.

Orbit direction
    STAC: ``sat:orbit_state`` (the sat extension; Planetary Computer, Earth Search, Copernicus Data Space) or
    ``s1:orbit_direction``. GeoTIFF: tags ``ORBIT_DIRECTION``, ``ORBIT_STATE``, ``SAT:ORBIT_STATE``,
    ``FLIGHT_DIRECTION``, ``PASS`` / ``PASS_DIRECTION``, else an ``ASC``/``DESC``(``ENDING``) token in the name.
    Statements that disagree are an error. With ``orbit:`` set, an acquisition whose direction is unknown is an
    error naming it (it cannot be kept or dropped honestly), and an input left with no acquisition is one too.

Unit (linear power or dB) - resolution order, never guessed from the values
    1. What the metadata states. STAC: each polarization asset's ``raster:bands[].unit`` (the raster extension),
       an asset or item ``unit``/``units`` field, and the collection ``sentinel-1-rtc`` (Planetary Computer
       documents it as gamma0 "calibrated intensity", i.e. linear power; its ``raster:bands`` carry no unit).
       ``s1:processing_level`` is not a unit statement (Planetary Computer writes ``"1"``, the product level).
       GeoTIFF: dataset or band tags ``UNIT``/``UNITS``/``BACKSCATTER_UNIT``, GDAL's band unit type
       (``src.units``), and a ``db`` token in a band description (SNAP names dB bands ``Sigma0_VV_db``).
       ``dB``/``decibel`` read as dB; ``linear``, ``power``, ``intensity``, ``1`` (dimensionless), ``m2/m2`` as
       linear power; ``amplitude``/``DN`` are refused (not power), anything else is an error naming it.
    2. Else the spec's ``unit:``.
    3. Else one error naming the file and saying to set ``unit:``.
    Statements that disagree (metadata with metadata, or with the spec) are an error listing them.

    A declared unit is then checked against the values (checking, not guessing): linear power below -1 in more than
    1 % of the pixels is dB read as linear; a median above 1 (0 dB) in linear, or above 0 dB in dB, is brighter than
    any land surface on median (DN, amplitude, or linear read as dB). Either is one error naming the file.

Compositing (:func:`composite_sentinel1`)
    Each acquisition's band is read around the grid, its nodata (``raster:bands`` nodata, else the file's own, and
    any internal mask) and non-finite values masked, converted to linear power (``10 ** (dB / 10)``) *before* any
    resampling, and masked below the noise floor: values <= 0 and below 1e-4 (-40 dB). Sentinel-1 IW's noise
    equivalent sigma0 is about -22 to -26 dB and calm water rarely goes below about -30 dB, so anything 10 dB and more
    under that is not signal but zero-filled GRD border noise, thermal-noise-removal residue or RTC shadow fill;
    averaged in, it would darken edges by many dB. The masked linear power is then warped onto the grid: bilinear
    when the grid is about as fine as the data or finer, averaging when it is at least 2x coarser (multi-looking;
    bilinear would alias speckle), both with no-data pixels left out. Per month and polarization a pixel is the
    mean in linear power of its valid observations (a mean of dB would be a geometric mean, biased low by speckle),
    converted to dB as ``10 * log10(mean)``; NaN where the month has none. VV and VH are masked independently.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from suelo.errors import InputError, agreed
from suelo.grid import Bounds, Grid, union_bounds
from suelo.ingest.confine import UNCONFINED, FormatNotAllowed, InputAccess, open_raster
from suelo.ingest.geotiff_files import find_files
from suelo.ingest.geotiff_meta import ACQUISITION_TAGS, tag_time
from suelo.ingest.scene import BandRef, gdal_env
from suelo.ingest.stac import (
    document_items,
    documents,
    gdal_path,
    item_acquired,
    item_footprint,
    load_json,
    raster_band,
)
from suelo.settings import Sentinel1Input

__all__ = [
    "NOISE_FLOOR",
    "POLARIZATIONS",
    "RadarScene",
    "composite_sentinel1",
    "discover_sentinel1",
]

#: The polarizations composited, in the order of the output's second axis.
POLARIZATIONS = ("VV", "VH")
#: Linear power below this (-40 dB) is noise or fill, not backscatter (module docstring).
NOISE_FLOOR = 1e-4
#: Unit check thresholds (module docstring): share of linear values below -1; medians in linear power.
NEGATIVE_SHARE = 0.01
MEDIAN_LIMIT_LINEAR = 1.0
#: Fewer valid pixels than this say too little about a file's unit to check it.
MIN_CHECKED_PIXELS = 10
#: How much coarser (per axis) the grid must be than the data to average instead of interpolating.
AVERAGE_FACTOR = 2.0

HOW_TO_GET_ARD = (
    "suelo needs analysis-ready backscatter: calibrate it to gamma0 (or sigma0) and terrain-correct it, e.g. with "
    "SNAP (Apply-Orbit-File, Thermal Noise Removal, Border Noise Removal, Calibration to beta0, Terrain-Flattening, "
    "Range-Doppler Terrain Correction, written as GeoTIFF) or use an RTC product (Planetary Computer's "
    "sentinel-1-rtc collection, ASF HyP3 / OPERA RTC-S1)"
)


@dataclass(frozen=True)
class RadarScene:
    """One Sentinel-1 acquisition, as the readers describe it (picklable: plain values, a CRS and BandRefs)."""

    source: str  # what error messages name: the file, or "<json> item <id>"
    scene_id: str
    acquired: dt.datetime
    orbit: str | None  # "ascending" | "descending" | None (unknown)
    unit: str  # "linear" | "db", from the metadata or the spec (never from the values)
    bands: Mapping[str, BandRef]  # "VV", "VH" (at least one)
    crs: Any
    bounds: tuple[float, float, float, float]  # of the data, in ``crs``
    nodata: float | None  # None: each file's own nodata
    unit_source: str = ""  # where ``unit`` came from, for provenance and messages


# -- discovery ---------------------------------------------------------------------------------------------------


def discover_sentinel1(spec: Sentinel1Input, access: InputAccess | None = None) -> list[RadarScene]:
    """Every acquisition in ``spec.paths`` (of ``spec.orbit`` if set), sorted by time; see the module docstring."""
    access = access or UNCONFINED
    json_paths: list[Path] = []
    tif_paths: list[Path] = []
    for path in spec.paths:
        _refuse_raw(path)
        if path.is_dir():
            children = sorted(path.iterdir())
            for child in children:
                _refuse_raw(child)
            if any(c.suffix.lower() == ".json" and c.is_file() for c in children):
                json_paths.append(path)
            else:
                tif_paths.append(path)
        elif path.suffix.lower() == ".json":
            json_paths.append(path)
        elif path.suffix.lower() == ".zip":
            raise InputError(path, "is a zip archive; give STAC JSON or GeoTIFF/COG files (or folders of them)")
        else:
            tif_paths.append(path)

    scenes: list[RadarScene] = []
    if json_paths:
        for document in documents(tuple(json_paths), access):
            rules = access.with_roots([document.absolute().parent])
            for item in document_items(document, load_json(document)):
                scenes.append(_item_scene(item, document, rules, spec))
    if tif_paths:
        found = find_files(tuple(tif_paths), access)
        scenes.extend(_tif_scenes([f.path for f in found], spec))
    _check_duplicates(scenes)
    return _of_orbit(sorted(scenes, key=lambda s: (s.acquired, s.scene_id)), spec)


_RAW_PRODUCT = re.compile(r"^S1[A-D]_(?:IW|EW|WV|SM|S[1-6])_(GRD[FHM]|SLC_|RAW_|OCN_)_", re.IGNORECASE)
_RAW_MEASUREMENT = re.compile(r"^s1[a-d]-(?:iw\d?|ew\d?|wv\d?|s[1-6])-(grd|slc)-(?:vv|vh|hh|hv)-", re.IGNORECASE)
_RAW_KINDS = {"GRD": "GRD (Ground Range Detected)", "SLC": "SLC (Single Look Complex)", "RAW": "Level-0 RAW"}


def _refuse_raw(path: Path) -> None:
    """Refuse a raw Sentinel-1 SAFE product (folder or zip) or a measurement TIFF of one."""
    name = path.name
    measurement = _RAW_MEASUREMENT.match(name)
    if measurement is not None:
        raise InputError(
            path,
            f"is a measurement file of a raw Sentinel-1 {_RAW_KINDS[measurement.group(1).upper()]} SAFE product: "
            f"digital numbers in radar geometry, not calibrated nor terrain-corrected; {HOW_TO_GET_ARD}",
        )
    match = _RAW_PRODUCT.match(name)
    kind: str | None = None
    if match and (name.upper().endswith((".SAFE", ".ZIP")) or path.is_dir()):
        kind = match.group(1)[:3].upper()
    elif path.is_dir() and (name.upper().endswith(".SAFE") or (path / "manifest.safe").is_file()):
        kind = "SAFE"
    if kind is None:
        return
    if kind == "OCN":
        raise InputError(
            path, f"is a Sentinel-1 Level-2 OCN (ocean wind/wave) product, not backscatter; {HOW_TO_GET_ARD}"
        )
    what = f"raw Sentinel-1 {_RAW_KINDS[kind]} product" if kind in _RAW_KINDS else "SAFE product"
    raise InputError(path, f"is a {what}: not radiometrically calibrated nor terrain-corrected; {HOW_TO_GET_ARD}")


def _check_duplicates(scenes: Sequence[RadarScene]) -> None:
    """Refuse a band file read by two scenes (a file named and also in a named folder, an item in two documents):
    its observations would count twice in the monthly means."""
    seen: dict[tuple[str, int], RadarScene] = {}
    for scene in scenes:
        for ref in scene.bands.values():
            path = ref.path if ref.path.startswith("/vsi") else os.path.realpath(ref.path)
            other = seen.setdefault((path, ref.index), scene)
            if other is not scene:
                raise InputError(
                    scene.source, f"reads {ref.name_for_errors}, which {other.source} reads too: it would count twice"
                )


def _of_orbit(scenes: list[RadarScene], spec: Sentinel1Input) -> list[RadarScene]:
    if spec.orbit is None:
        return scenes
    for scene in scenes:
        if scene.orbit is None:
            raise InputError(
                scene.source,
                f"orbit direction unknown (no sat:orbit_state, s1:orbit_direction or ORBIT_DIRECTION tag), so "
                f"orbit: {spec.orbit} can neither keep nor drop it; add the direction to its metadata or leave "
                "orbit: out",
            )
    kept = [s for s in scenes if s.orbit == spec.orbit]
    if scenes and not kept:
        raise InputError(
            spec.paths[0], f"none of its {len(scenes)} acquisition(s) is {spec.orbit} (orbit: {spec.orbit})"
        )
    return kept


# -- shared metadata ------------------------------------------------------------------------------------------------

_DB_WORDS = ("db", "decibel", "decibels")
_LINEAR_WORDS = ("linear", "power", "linear power", "intensity", "1", "m2/m2", "m^2/m^2", "m2 m-2", "m2.m-2")
_REFUSED_WORDS = ("amplitude", "linear amplitude", "dn", "digital number", "digital numbers")


def parse_unit(text: str, where: str | Path, what: str) -> str | None:
    """``"db"`` / ``"linear"`` for a unit statement; None for an empty one; an error for amplitude or the unknown."""
    word = " ".join(text.strip().lower().split())
    if not word:
        return None
    if word in _DB_WORDS or re.fullmatch(r"db\s*\(?[a-z0-9 ]*\)?", word):  # "dB", "dB(gamma0)"
        return "db"
    if word in _LINEAR_WORDS:
        return "linear"
    if word in _REFUSED_WORDS:
        raise InputError(
            where,
            f"{what} says {text!r}: suelo needs backscatter power (linear) or dB, not amplitude or digital numbers "
            "(square calibrated amplitude to get power)",
        )
    raise InputError(where, f"{what} {text!r} is not a backscatter unit suelo knows (linear power, or dB)")


def resolve_unit(where: str | Path, stated: Mapping[str, str], declared: str | None) -> tuple[str, str]:
    """The unit and where it came from: the metadata's statements, else the spec; they must agree."""
    said = dict(stated)
    if declared is not None:
        said["job spec unit"] = declared
    unit = agreed(where, said, "backscatter units disagree ({views})")
    if unit is None:
        raise InputError(
            where,
            "backscatter unit unknown (linear power or dB?): the metadata does not state it; set unit: linear or "
            "unit: db on this sentinel1 input",
        )
    return unit, ", ".join(said)


_ORBITS = {"ascending": "ascending", "asc": "ascending", "descending": "descending", "desc": "descending"}


def _orbit(where: str | Path, stated: Mapping[str, Any]) -> str | None:
    said: dict[str, str] = {}
    for key, value in stated.items():
        if value is None:
            continue
        orbit = _ORBITS.get(str(value).strip().lower()) if isinstance(value, str) else None
        if orbit is None:
            raise InputError(where, f"{key} {value!r} is not an orbit direction (ascending or descending)")
        said[key] = orbit
    return agreed(where, said, "orbit directions disagree ({views})")


# -- STAC items ------------------------------------------------------------------------------------------------------

_CALIBRATED_TYPES = ("RTC", "CARD-BS", "CARD_BS", "NRB", "GTC", "SIGMA0", "GAMMA0")
_CALIBRATED_ROLES = {"gamma0", "sigma0", "backscatter"}


def _item_scene(item: dict[str, Any], document: Path, access: InputAccess, spec: Sentinel1Input) -> RadarScene:
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        raise InputError(document, "STAC Item without a string 'id'")
    where = f"{document} item {item_id}"
    properties = item.get("properties")
    assets = item.get("assets")
    if not isinstance(properties, dict) or not isinstance(assets, dict):
        raise InputError(where, "'properties' and 'assets' must be JSON objects")
    collection = item.get("collection")
    collection = collection.lower() if isinstance(collection, str) else ""

    band_assets: dict[str, dict[str, Any]] = {}
    for key, asset in assets.items():
        name = str(key).upper()
        if name not in ("VV", "VH", "HH", "HV"):
            continue  # thumbnails, metadata, incidence angles, masks
        if not isinstance(asset, dict):
            raise InputError(where, f"asset {key} must be a JSON object")
        if name in band_assets:
            raise InputError(where, f"assets {band_assets[name]['_key']} and {key} are both polarization {name}")
        band_assets[name] = {**asset, "_key": key}

    unit_stated = _item_units(where, properties, band_assets, collection)
    _refuse_uncalibrated(where, item_id, collection, properties, band_assets, bool(unit_stated))
    polarizations = properties.get("sar:polarizations")
    declared_pols = {str(p).upper() for p in polarizations} if isinstance(polarizations, list) else set()
    bands: dict[str, BandRef] = {}
    for name in POLARIZATIONS:
        asset = band_assets.get(name)
        if asset is None:
            if name in declared_pols:
                raise InputError(where, f"sar:polarizations lists {name} but the item has no {name.lower()} asset")
            continue
        href = asset.get("href")
        if not isinstance(href, str) or not href:
            raise InputError(where, f"asset {asset['_key']}: 'href' must be a non-empty string, got {href!r}")
        label = f"{where} asset {asset['_key']} ({href})"
        bands[name] = BandRef(gdal_path(href, document, label, access), 1, label)
    if not bands:
        other = sorted(set(band_assets) - set(POLARIZATIONS))
        problem = f"only {'/'.join(other)} polarizations" if other else "no vv/vh assets"
        raise InputError(
            where, f"{problem} (assets: {', '.join(sorted(assets)) or 'none'}); suelo composites VV and VH"
        )
    if len(bands) == 1 and not declared_pols:
        missing = next(p for p in POLARIZATIONS if p not in bands)
        raise InputError(
            where,
            f"has no {missing.lower()} asset and no sar:polarizations saying it is single-polarization",
        )

    unit, unit_source = resolve_unit(where, unit_stated, spec.unit)
    used = [band_assets[name] for name in bands]
    crs, bounds = item_footprint(where, properties, used, bands)
    orbit = _orbit(where, {k: properties.get(k) for k in ("sat:orbit_state", "s1:orbit_direction")})
    return RadarScene(
        source=where,
        scene_id=item_id,
        acquired=item_acquired(where, properties),
        orbit=orbit,
        unit=unit,
        bands=bands,
        crs=crs,
        bounds=bounds,
        nodata=_item_nodata(where, used),
        unit_source=unit_source,
    )


def _item_units(
    where: str, properties: Mapping[str, Any], band_assets: Mapping[str, dict[str, Any]], collection: str
) -> dict[str, str]:
    stated: dict[str, str] = {}
    for name in POLARIZATIONS:
        asset = band_assets.get(name)
        if asset is None:
            continue
        holders = [(f"asset {asset['_key']} raster:bands unit", raster_band(where, asset).get("unit"))]
        holders += [(f"asset {asset['_key']} {k}", asset.get(k)) for k in ("unit", "units")]
        for what, value in holders:
            if value is None:
                continue
            if not isinstance(value, str):
                raise InputError(where, f"{what} must be a string, got {value!r}")
            unit = parse_unit(value, where, what)
            if unit is not None:
                stated[f"{what} {value!r}"] = unit
    for key in ("unit", "units"):
        value = properties.get(key)
        unit = parse_unit(value, where, f"property {key}") if isinstance(value, str) else None
        if unit is not None:
            stated[f"property {key} {value!r}"] = unit
    if collection == "sentinel-1-rtc":
        stated["collection sentinel-1-rtc (Planetary Computer gamma0 RTC, linear power)"] = "linear"
    return stated


def _refuse_uncalibrated(
    where: str,
    item_id: str,
    collection: str,
    properties: Mapping[str, Any],
    band_assets: Mapping[str, dict[str, Any]],
    unit_stated: bool,
) -> None:
    product = str(properties.get("sar:product_type", "")).strip().upper()
    if "SLC" in product or "RAW" in product:
        kind = "SLC (Single Look Complex)" if "SLC" in product else "Level-0 RAW"
        raise InputError(where, f"is a Sentinel-1 {kind} product (sar:product_type {product}); {HOW_TO_GET_ARD}")
    if "OCN" in product:
        raise InputError(where, f"is a Sentinel-1 OCN (ocean wind/wave) product, not backscatter; {HOW_TO_GET_ARD}")
    if re.search(r"(?:^|[^a-z])grd(?:$|[^a-z])", collection) and "rtc" not in collection:
        raise InputError(
            where,
            f"is from the {collection} collection: Level-1 GRD digital numbers, not calibrated to gamma0 nor "
            f"terrain-corrected; {HOW_TO_GET_ARD}",
        )
    roles = {
        str(role).lower() for asset in band_assets.values() for role in (asset.get("roles") or []) if role is not None
    }
    calibrated = (
        "rtc" in collection
        or bool(re.search(r"(?:^|_)rtc(?:$|_)", item_id.lower()))
        or any(t in product for t in _CALIBRATED_TYPES)
        or bool(roles & _CALIBRATED_ROLES)
        or unit_stated
    )
    grd = "GRD" in product or bool(re.search(r"_GRD[FHM]_", item_id.upper()))
    if grd and not calibrated:
        said = f"sar:product_type {product}" if product else f"its id {item_id}"
        raise InputError(
            where,
            f"is a Level-1 GRD product ({said}) with no sign of calibration or terrain correction (no RTC "
            f"collection or id, no gamma0/sigma0 asset role, no stated unit); {HOW_TO_GET_ARD}",
        )


def _item_nodata(where: str, assets: Sequence[dict[str, Any]]) -> float | None:
    values: dict[str, float] = {}
    for asset in assets:
        raw = raster_band(where, asset).get("nodata")
        if raw is None:
            continue
        if isinstance(raw, str) and raw.lower() in ("nan", "inf", "-inf"):
            values[asset["_key"]] = float(raw)
        elif isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise InputError(where, f"asset {asset['_key']}: raster:bands nodata must be a number, got {raw!r}")
        else:
            values[asset["_key"]] = float(raw)
    if len({str(v) for v in values.values()}) > 1:  # str(): NaN equals NaN
        detail = ", ".join(f"{key} {value:g}" for key, value in sorted(values.items()))
        raise InputError(where, f"vv and vh assets have different raster:bands nodata ({detail})")
    return next(iter(values.values()), None)


# -- GeoTIFF files ---------------------------------------------------------------------------------------------------

UNIT_TAGS = ("UNIT", "UNITS", "BACKSCATTER_UNIT")
ORBIT_TAGS = ("ORBIT_DIRECTION", "ORBIT_STATE", "SAT:ORBIT_STATE", "FLIGHT_DIRECTION", "PASS", "PASS_DIRECTION")
S1_TIME_TAGS = (*ACQUISITION_TAGS, "ACQUISITION_START_TIME", "FIRST_LINE_TIME")
_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4})(-?)(\d{2})\2(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)", re.IGNORECASE)
_TOKENS = re.compile(r"[_\-.\s]+")


@dataclass(frozen=True)
class _Header:
    path: Path
    crs: CRS
    bounds: Bounds
    descriptions: tuple[str, ...]
    tags: Mapping[str, str]  # dataset tags, keys upper-cased
    band_tags: tuple[Mapping[str, str], ...]
    units: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.descriptions)


def _header(path: Path) -> _Header:
    try:
        with gdal_env(), open_raster(str(path)) as src:
            crs, bounds = src.crs, src.bounds
            descriptions = tuple((d or "").strip() for d in src.descriptions)
            tags = {str(k).upper(): str(v) for k, v in src.tags().items()}
            band_tags = tuple({str(k).upper(): str(v) for k, v in src.tags(i).items()} for i in range(1, src.count + 1))
            units = tuple((u or "").strip() for u in src.units)
    except FormatNotAllowed as exc:
        raise InputError(path, str(exc)) from exc
    except (RasterioError, OSError) as exc:
        raise InputError(path, f"cannot read GeoTIFF: corrupt, truncated or unreadable ({exc})") from exc
    if crs is None:
        raise InputError(
            path, "GeoTIFF has no coordinate reference system (radar geometry with GCPs only? it needs geocoding)"
        )
    return _Header(
        path, crs, (bounds.left, bounds.bottom, bounds.right, bounds.top), descriptions, tags, band_tags, units
    )


def _tokens(text: str) -> list[str]:
    return [t.upper() for t in _TOKENS.split(text) if t]


def _pol_of(text: str, where: Path, what: str) -> str | None:
    pols = {t for t in _tokens(text) if t in ("VV", "VH", "HH", "HV")}
    if len(pols) > 1:
        raise InputError(where, f"{what} {text!r} names several polarizations ({', '.join(sorted(pols))})")
    return pols.pop() if pols else None


def _band_pols(header: _Header, spec: Sentinel1Input) -> dict[str, int]:
    """Polarization -> 1-based band index, from the band descriptions, else the spec's ``bands``."""
    found: dict[str, int] = {}
    for index, text in enumerate(header.descriptions, 1):
        pol = _pol_of(text, header.path, "band description") if text else None
        if pol is None:
            continue
        if pol in found:
            raise InputError(header.path, f"bands {found[pol]} and {index} are both described as {pol}")
        found[pol] = index
    if found:
        return found
    if spec.bands is not None:
        if len(spec.bands) != header.count:
            raise InputError(header.path, f"bands: names {len(spec.bands)} band(s) but the file has {header.count}")
        names = [b.strip().upper() for b in spec.bands]
        for pol in POLARIZATIONS:
            if names.count(pol) > 1:
                raise InputError(header.path, f"bands: names {pol} more than once")
        return {name: i for i, name in enumerate(names, 1) if name in ("VV", "VH", "HH", "HV")}
    return {}


def _file_date(header: _Header) -> dt.datetime:
    for match in _DATE_IN_NAME.finditer(header.path.name):
        year, _, month, day, hour, minute, second = match.groups()
        try:
            value = dt.datetime(
                int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                tzinfo=dt.timezone.utc,
            )  # fmt: skip
        except ValueError:
            continue  # an orbit or datatake number that only looks like a date
        if 2014 <= value.year <= 2100:  # Sentinel-1A was launched in 2014
            return value
    for tag in S1_TIME_TAGS:
        text = header.tags.get(tag, "").strip()
        if text:
            return tag_time(header.path, tag, text)
    raise InputError(
        header.path,
        "no acquisition date: none in the file name (YYYYMMDD or YYYY-MM-DD) nor in its metadata "
        f"({', '.join(S1_TIME_TAGS)}); put the date in the file name or an ACQUISITION_DATE tag",
    )


def _file_orbit(header: _Header) -> str | None:
    stated: dict[str, Any] = {f"metadata {t}": header.tags[t] for t in ORBIT_TAGS if header.tags.get(t, "").strip()}
    in_name = {_ORBITS[t.lower()] for t in _tokens(header.path.stem) if t.lower() in _ORBITS}
    if len(in_name) > 1:
        raise InputError(header.path, "file name says both ascending and descending")
    if in_name:
        stated["file name"] = in_name.pop()
    return _orbit(header.path, stated)


def _file_units(header: _Header, indexes: Sequence[int], label: str = "") -> dict[str, str]:
    """The unit statements of a file's tags, band tags, band unit types and band descriptions (``label``: a prefix
    naming the file when statements of two files are combined)."""
    stated: dict[str, str] = {}

    def add(what: str, text: str) -> None:
        unit = parse_unit(text, header.path, what)
        if unit is not None:
            stated[f"{label}{what} {text!r}"] = unit

    for tag in UNIT_TAGS:
        if tag in header.tags:
            add(f"metadata {tag}", header.tags[tag])
    for index in indexes:
        for tag in UNIT_TAGS:
            if tag in header.band_tags[index - 1]:
                add(f"band {index} metadata {tag}", header.band_tags[index - 1][tag])
        if header.units[index - 1]:
            add(f"band {index} unit type", header.units[index - 1])
        description = header.descriptions[index - 1]
        if "DB" in _tokens(description):
            stated[f"{label}band {index} description {description!r}"] = "db"
    return stated


def _tif_scenes(paths: Sequence[Path], spec: Sentinel1Input) -> Iterator[RadarScene]:
    singles: dict[str, dict[str, tuple[_Header, int]]] = {}  # pairing key -> polarization -> (header, band)
    for path in paths:
        header = _header(path)
        pols = _band_pols(header, spec)
        if header.count == 1 and not pols:
            pol = _pol_of(header.path.stem, header.path, "file name")
            pols = {pol: 1} if pol else {}
        if not pols:
            raise InputError(
                path,
                "no VV/VH band: no band description names a polarization and the file name has no _VV/_VH; set "
                "bands: (e.g. [VV, VH]) on this sentinel1 input",
            )
        usable = {p: i for p, i in pols.items() if p in POLARIZATIONS}
        if not usable:
            raise InputError(path, f"holds {'/'.join(sorted(pols))} only; suelo composites VV and VH")
        if len(usable) == 2:
            yield _file_scene(header, usable, spec)
            continue
        pol, index = next(iter(usable.items()))
        tokens = _TOKENS.split(path.stem)
        key = "_".join("{pol}" if t.upper() == pol else t for t in tokens if t)
        group = singles.setdefault(f"{path.parent}/{key}", {})
        if pol in group:
            raise InputError(path, f"{group[pol][0].path.name} is also the {pol} file of this acquisition")
        group[pol] = (header, index)
    for group in singles.values():
        yield _pair_scene(group, spec)


def _file_scene(header: _Header, pols: Mapping[str, int], spec: Sentinel1Input) -> RadarScene:
    unit, unit_source = resolve_unit(header.path, _file_units(header, list(pols.values())), spec.unit)
    return RadarScene(
        source=str(header.path),
        scene_id=header.path.stem,
        acquired=_file_date(header),
        orbit=_file_orbit(header),
        unit=unit,
        bands={p: BandRef(str(header.path), pols[p], str(header.path)) for p in POLARIZATIONS},
        crs=header.crs,
        bounds=header.bounds,
        nodata=None,
        unit_source=unit_source,
    )


def _pair_scene(group: Mapping[str, tuple[_Header, int]], spec: Sentinel1Input) -> RadarScene:
    if len(group) < 2:
        pol, (header, _) = next(iter(group.items()))
        other = next(p for p in POLARIZATIONS if p != pol)
        raise InputError(
            header.path,
            f"holds only {pol} and no {other} file pairs with it (the same name with _{other} instead of _{pol}); "
            "give both, or one file with both bands",
        )
    (vv, vv_band), (vh, vh_band) = group["VV"], group["VH"]
    source = str(vv.path)
    dates = {h.path.name: _file_date(h) for h in (vv, vh)}
    if len(set(dates.values())) > 1:
        views = ", ".join(f"{name} {value:%Y-%m-%d %H:%M:%S}" for name, value in dates.items())
        raise InputError(source, f"the VV and VH files have different acquisition times ({views})")
    orbits = {o for o in (_file_orbit(vv), _file_orbit(vh)) if o is not None}
    if len(orbits) > 1:
        raise InputError(source, f"the VV and VH files say different orbit directions ({', '.join(sorted(orbits))})")
    stated = {
        **_file_units(vv, [vv_band], f"{vv.path.name} "),
        **_file_units(vh, [vh_band], f"{vh.path.name} "),
    }
    unit, unit_source = resolve_unit(source, stated, spec.unit)
    if vv.crs == vh.crs:
        crs, bounds = vv.crs, union_bounds([vv.bounds, vh.bounds])
    else:
        crs, bounds = vv.crs, union_bounds([vv.bounds, transform_bounds(vh.crs, vv.crs, *vh.bounds, densify_pts=21)])
    stem = _TOKENS.split(vv.path.stem)
    return RadarScene(
        source=source,
        scene_id="_".join(t for t in stem if t and t.upper() != "VV"),
        acquired=dates[vv.path.name],
        orbit=orbits.pop() if orbits else None,
        unit=unit,
        bands={
            "VV": BandRef(str(vv.path), vv_band, str(vv.path)),
            "VH": BandRef(str(vh.path), vh_band, str(vh.path)),
        },
        crs=crs,
        bounds=bounds,
        nodata=None,
        unit_source=unit_source,
    )


# -- compositing -----------------------------------------------------------------------------------------------------


def composite_sentinel1(scenes: Sequence[RadarScene], grid: Grid, months: Sequence[dt.date]) -> np.ndarray:
    """Monthly VV, VH backscatter on ``grid`` in dB: ``(len(months), 2, height, width)`` float32.

    Each value is ``10 * log10`` of the mean, in linear power, of the month's valid observations (module
    docstring: masking, resampling); NaN where the month has none. Scenes outside ``months`` or the grid are not
    read.
    """
    slots: dict[tuple[int, int], list[int]] = {}
    for i, month in enumerate(months):
        slots.setdefault((month.year, month.month), []).append(i)
    out = np.full((len(months), len(POLARIZATIONS), grid.height, grid.width), np.nan, dtype=np.float32)
    by_month: dict[tuple[int, int], list[RadarScene]] = {}
    for scene in scenes:
        key = (scene.acquired.year, scene.acquired.month)
        if key in slots and _overlaps(scene, grid):
            by_month.setdefault(key, []).append(scene)
    for key, month_scenes in by_month.items():
        total = np.zeros((len(POLARIZATIONS), *grid.shape), dtype=np.float64)
        count = np.zeros((len(POLARIZATIONS), *grid.shape), dtype=np.int32)
        for scene in month_scenes:
            for p, pol in enumerate(POLARIZATIONS):
                ref = scene.bands.get(pol)
                if ref is None:
                    continue
                linear = read_linear(ref, grid, scene.unit, scene.nodata, scene.unit_source)
                valid = np.isfinite(linear)
                total[p][valid] += linear[valid]
                count[p][valid] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_db = np.where(count > 0, 10.0 * np.log10(total / np.maximum(count, 1)), np.nan)
        for i in slots[key]:
            out[i] = mean_db.astype(np.float32)
    return out


def _overlaps(scene: RadarScene, grid: Grid) -> bool:
    try:
        return grid.intersects(scene.bounds, scene.crs)
    except (CRSError, ValueError, RasterioError) as exc:
        raise InputError(scene.source, f"cannot place its footprint on the grid ({exc})") from exc


def read_linear(ref: BandRef, grid: Grid, unit: str, nodata: float | None, unit_source: str = "") -> np.ndarray:
    """One band on ``grid`` in linear power (float64), NaN where masked or not covered (module docstring)."""
    label = ref.name_for_errors
    try:
        with gdal_env(), open_raster(ref.path) as src:
            if ref.index > src.count:
                raise InputError(label, f"band index {ref.index} but the file has {src.count} bands")
            if src.crs is None:
                raise InputError(label, "band has no coordinate reference system")
            window = _window(src, grid)
            if window is None:
                return np.full(grid.shape, np.nan)
            masked = src.read(ref.index, window=window, masked=True)
            values = np.ma.filled(masked.astype(np.float64), np.nan)
            transform, crs = src.transform @ Affine.translation(window.col_off, window.row_off), src.crs
            src_nodata = nodata if nodata is not None else src.nodata
    except InputError:
        raise
    except FormatNotAllowed as exc:
        raise InputError(label, str(exc)) from exc
    except (RasterioError, OSError, ValueError) as exc:
        raise InputError(label, f"cannot read band: corrupt, truncated or unreadable ({exc})") from exc
    if src_nodata is not None and not math.isnan(src_nodata):
        values[values == src_nodata] = np.nan
    values[~np.isfinite(values)] = np.nan
    check_unit(values, unit, label, unit_source)
    linear = np.power(10.0, values / 10.0) if unit == "db" else values
    linear[~(linear >= NOISE_FLOOR)] = np.nan  # <= 0, the noise floor, and NaN stay NaN
    out = np.full(grid.shape, np.nan)
    coarser = _grid_pixel_ratio(crs, transform, values.shape, grid) >= AVERAGE_FACTOR
    reproject(
        linear,
        out,
        src_transform=transform,
        src_crs=crs,
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=Resampling.average if coarser else Resampling.bilinear,
    )
    result: np.ndarray = out
    return result


def _window(src: Any, grid: Grid) -> Window | None:
    """The source window around the grid (2 pixels of margin for bilinear), or None if they do not overlap."""
    try:
        left, bottom, right, top = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
    except (CRSError, ValueError, RasterioError):
        return Window(0, 0, src.width, src.height)  # the grid does not project into the file's CRS: read it all
    if not all(math.isfinite(v) for v in (left, bottom, right, top)):
        return Window(0, 0, src.width, src.height)
    approx = from_bounds(left, bottom, right, top, transform=src.transform)
    col0 = max(0, math.floor(approx.col_off) - 2)
    row0 = max(0, math.floor(approx.row_off) - 2)
    col1 = min(src.width, math.ceil(approx.col_off + approx.width) + 2)
    row1 = min(src.height, math.ceil(approx.row_off + approx.height) + 2)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _grid_pixel_ratio(crs: CRS, transform: Any, shape: tuple[int, int], grid: Grid) -> float:
    """How many source pixels one grid pixel spans per axis (the smaller axis), measured in the grid's CRS."""
    height, width = shape
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * width, top + transform.e * height
    try:
        x0, y0, x1, y1 = transform_bounds(crs, grid.crs, left, min(top, bottom), right, max(top, bottom))
    except (CRSError, ValueError, RasterioError):
        return 1.0
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or width == 0 or height == 0:
        return 1.0
    source_x, source_y = (x1 - x0) / width, (y1 - y0) / height
    if source_x <= 0 or source_y <= 0:
        return 1.0
    return float(min(grid.resolution[0] / source_x, grid.resolution[1] / source_y))


def check_unit(values: np.ndarray, unit: str, label: str, unit_source: str = "") -> None:
    """Refuse values a declared unit cannot hold (module docstring); ``values`` in that unit, NaN where masked."""
    finite = values[np.isfinite(values)]
    if finite.size < MIN_CHECKED_PIXELS:
        return
    source = f" ({unit_source})" if unit_source else ""
    median = float(np.median(finite))
    if unit == "linear":
        negative = float(np.mean(finite < -1.0))
        if negative > NEGATIVE_SHARE:
            raise InputError(
                label,
                f"unit looks wrong: declared linear power{source}, but {negative:.0%} of its values are below -1, "
                "which power cannot be (dB values?); fix the metadata or set unit: db",
            )
        if median > MEDIAN_LIMIT_LINEAR:
            raise InputError(
                label,
                f"unit looks wrong: declared linear power{source}, but its median is {median:.4g} (above 0 dB, "
                "brighter than any land surface on median: digital numbers or amplitude?); it needs calibrated "
                "backscatter",
            )
    elif median > 10.0 * math.log10(MEDIAN_LIMIT_LINEAR):
        raise InputError(
            label,
            f"unit looks wrong: declared dB{source}, but its median is {median:.4g} dB (above 0 dB, brighter than "
            "any land surface on median: linear power read as dB, or digital numbers?); fix the metadata or set "
            "unit: linear",
        )
