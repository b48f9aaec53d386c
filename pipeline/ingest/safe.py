"""Reader for Sentinel-2 SAFE products: ``.SAFE`` folders and the ``.zip`` archives Copernicus serves.

Only metadata is read here (``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` and one band header for the footprint);
pixels are read later by :func:`suelo.ingest.scene.read_scene` through GDAL paths (local or ``/vsizip/``),
so a zip is never extracted to disk.

Band files are opened with the GeoTIFF/JPEG 2000 drivers only (:func:`suelo.ingest.confine.open_raster`); the
SENTINEL2 driver is not needed (the metadata is parsed here). A product found in a folder, and every file of a
.SAFE folder that is read, must resolve into the job's allowed folders (:class:`~suelo.ingest.confine.InputAccess`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import stat
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rasterio.crs import CRS
from rasterio.errors import RasterioError

from suelo.errors import InputError
from suelo.grid import Bounds
from suelo.ingest.confine import UNCONFINED, InputAccess, open_raster, regular_file
from suelo.ingest.scene import BandRef, Radiometry, Scene, baseline_at_least, tile_in_name
from suelo.settings import S2_BAND_RESOLUTION, IngestSpec, SafeInput

#: Product metadata file at the SAFE root, by product level.
MTD_FILES: dict[str, str] = {"MTD_MSIL2A.xml": "L2A", "MTD_MSIL1C.xml": "L1C"}
#: ``band_id`` order of the offset lists in the product metadata (ESA's spectral band index).
BAND_ID_ORDER: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
#: Native resolution (metres) of every layer this reader picks up; the SCL is produced at 20 m.
NATIVE_RESOLUTION: dict[str, int] = {**S2_BAND_RESOLUTION, "SCL": 20}
#: Bands whose header gives the footprint, best first (any band works; a 10 m one is exact to the pixel).
FOOTPRINT_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")
#: Zip-bomb guards. A real L2A zip is about 1.2 GB uncompressed; JP2 data barely compresses, so a member
#: with a high ratio is either XML (small) or hostile.
ZIP_MAX_TOTAL_BYTES = 16 * 1024**3
ZIP_MAX_RATIO = 200
ZIP_RATIO_MIN_BYTES = 100 * 1024**2
#: Metadata files are ~100 kB; anything far larger is not a product metadata file and is not read into memory.
MTD_MAX_BYTES = 64 * 1024**2
#: Plausible radiometry (ESA uses 10000 and -1000): beyond these the metadata is corrupt, and float32 reflectance
#: computed from it would overflow or lose all precision.
QUANTIFICATION_RANGE = (1.0, 1e6)
MAX_ABS_OFFSET = 65535
#: Baseline from which L2A/L1C digital numbers carry a -1000 offset that the metadata must state.
OFFSET_BASELINE = "04.00"

# e.g. T31UFS_20210601T104619_B02_10m.jp2 (L2A), T31UFS_20210601T104619_B02.jp2 (L1C),
# S2A_OPER_MSI_L1C_TL_..._B8A.jp2 (pre-2016 L1C). TCI/AOT/WVP are not reflectance and are skipped.
_BAND_FILE = re.compile(r"_(B0[1-9]|B1[0-2]|B8A|SCL)(?:_(\d+)m)?\.jp2$", re.IGNORECASE)
_RES_FOLDER = re.compile(r"^R(\d+)m$", re.IGNORECASE)
_ISO_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE
)


def discover(spec: SafeInput, ingest: IngestSpec, *, access: InputAccess | None = None) -> list[Scene]:
    """One :class:`Scene` per granule of every SAFE product named by ``spec`` (directly or in a folder).

    ``access``: the job's input rules (the paths of ``spec`` are allowed by being named; what is found in them must
    resolve into an allowed folder).
    """
    del ingest  # level filtering (allow_l1c) is decided by discover_scenes, for all readers alike
    access = access or UNCONFINED
    scenes: list[Scene] = []
    seen_products: set[Path] = set()
    seen_ids: set[str] = set()
    for product_path in _product_paths(spec.paths, access):
        resolved = product_path.resolve()
        if resolved in seen_products:
            continue
        seen_products.add(resolved)
        for scene in _read_product(product_path, access):
            # The same product given twice (e.g. as folder and as zip) would count one acquisition twice in
            # every composite; its name identifies it, since ESA never reuses a product name.
            if scene.scene_id not in seen_ids:
                seen_ids.add(scene.scene_id)
                scenes.append(scene)
    return scenes


# -- finding products ----------------------------------------------------------------------------------------


def _is_safe_folder(path: Path) -> bool:
    return path.is_dir() and (path.suffix.upper() == ".SAFE" or any((path / name).is_file() for name in MTD_FILES))


def _is_zip_name(path: Path) -> bool:
    return path.suffix.lower() == ".zip"


def _product_paths(paths: Iterable[Path], access: InputAccess) -> list[Path]:
    products: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise InputError(path, "does not exist")
        if _is_safe_folder(path) or (path.is_file() and _is_zip_name(path)):
            products.append(path)
        elif path.is_dir():
            found = sorted(
                child for child in path.iterdir() if _is_safe_folder(child) or (child.is_file() and _is_zip_name(child))
            )
            if not found:
                raise InputError(path, "holds no Sentinel-2 SAFE product (no *.SAFE folder or *.zip file)")
            for child in found:
                access.confine(child, child)  # a symlinked product may point anywhere
            products.extend(found)
        else:
            raise InputError(path, "is not a .SAFE folder, a .zip of one, or a folder holding them")
    return products


# -- product access: one interface over folders and zips -----------------------------------------------------


@dataclass(frozen=True)
class _Product:
    """One SAFE product: its files as POSIX paths relative to the SAFE root, whether on disk or in a zip."""

    source: Path  # what the user has: the .SAFE folder or the .zip file
    root: str  # SAFE root: a folder path, or the member prefix inside the zip ("" or "NAME.SAFE/")
    files: tuple[str, ...]  # relative to root
    zip_path: Path | None = None

    def gdal_path(self, rel: str) -> str:
        if self.zip_path is None:
            return str(Path(self.root) / rel)
        # Braces keep GDAL from guessing where the archive name ends (folders named *.zip, odd characters).
        return f"/vsizip/{{{self.zip_path.resolve()}}}/{self.root}{rel}"

    def label(self, rel: str) -> str:
        if self.zip_path is None:
            return str(Path(self.root) / rel)
        return f"{self.zip_path}!{self.root}{rel}"

    def read_bytes(self, rel: str) -> bytes:
        try:
            if self.zip_path is None:
                path = Path(self.root) / rel
                # regular_file first: a FIFO would block, /dev/zero (size 0) would never end
                if regular_file(path, self.label(rel), "metadata file").st_size > MTD_MAX_BYTES:
                    raise InputError(self.label(rel), f"is larger than {MTD_MAX_BYTES} bytes; not a metadata file")
                return path.read_bytes()
            with zipfile.ZipFile(self.zip_path) as archive:
                info = archive.getinfo(self.root + rel)
                if info.file_size > MTD_MAX_BYTES:
                    raise InputError(self.label(rel), f"is larger than {MTD_MAX_BYTES} bytes; not a metadata file")
                return archive.read(info)
        except InputError:
            raise
        except (OSError, zipfile.BadZipFile, KeyError, NotImplementedError, RuntimeError, EOFError) as exc:
            raise InputError(self.label(rel), f"cannot read ({exc})") from exc


def _open_products(path: Path) -> list[_Product]:
    if path.is_dir():
        root = path
        files = tuple(
            sorted(p.relative_to(root).as_posix() for p in root.glob("GRANULE/*/IMG_DATA/**/*") if p.is_file())
        )
        mtd = [name for name in MTD_FILES if (root / name).is_file()]
        return [_Product(path, str(root), tuple(mtd) + files)]
    return _open_zip(path)


def _open_zip(path: Path) -> list[_Product]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InputError(path, f"unreadable zip archive ({exc})") from exc
    _check_zip_members(path, infos)
    names = [info.filename for info in infos if not info.is_dir()]
    # A Copernicus zip holds NAME.SAFE/MTD_...xml; some repackaged zips put the SAFE content at the top.
    roots = sorted(
        name[: -len(PurePosixPath(name).name)]
        for name in names
        if PurePosixPath(name).name in MTD_FILES and name.count("/") <= 1
    )
    roots = list(dict.fromkeys(roots))  # one root even when it holds both an L2A and an L1C metadata file
    if not roots:
        raise InputError(path, f"zip archive holds no SAFE product (no {' or '.join(MTD_FILES)} at its top)")
    return [
        _Product(path, root, tuple(sorted(name[len(root) :] for name in names if name.startswith(root))), path)
        for root in roots
    ]


def _check_zip_members(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse archives that could escape their folder or exhaust memory/disk, before GDAL touches them."""
    total = 0
    for info in infos:
        name = info.filename
        parts = re.split(r"[/\\]", name)
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise InputError(path, f"zip member path outside the archive: {name} (path traversal)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InputError(path, f"zip member is a symlink: {name} (path traversal)")
        if info.flag_bits & 0x1:
            raise InputError(path, f"zip member is encrypted: {name}")
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > ZIP_RATIO_MIN_BYTES and ratio > ZIP_MAX_RATIO:
            raise InputError(
                path,
                f"zip member {name} expands {ratio:.0f}-fold to "
                f"{info.file_size} bytes (suspected zip bomb; limit {ZIP_MAX_RATIO}-fold)",
            )
    if total > ZIP_MAX_TOTAL_BYTES:
        raise InputError(
            path,
            f"zip archive expands to {total} bytes, above the {ZIP_MAX_TOTAL_BYTES}-byte limit (suspected zip bomb)",
        )


# -- one product -> scenes -----------------------------------------------------------------------------------


def _read_product(path: Path, access: InputAccess = UNCONFINED) -> list[Scene]:
    scenes: list[Scene] = []
    for product in _open_products(path):
        scenes.extend(_product_scenes(product, access))
    return scenes


def _product_scenes(product: _Product, access: InputAccess = UNCONFINED) -> list[Scene]:
    mtd_names = [name for name in MTD_FILES if name in product.files]
    if not mtd_names:
        raise InputError(product.source, f"no {' or '.join(MTD_FILES)} at the root of the SAFE product")
    mtd_name = mtd_names[0]  # L2A first: it is what the pipeline wants if a product somehow had both
    if product.zip_path is None:
        access.confine(product.gdal_path(mtd_name), product.label(mtd_name))
    metadata = _parse_metadata(product, mtd_name)

    granules = _granule_bands(product)
    if not granules:
        raise InputError(product.source, "no band image files (GRANULE/*/IMG_DATA/**/*.jp2) in the SAFE product")
    if product.zip_path is None:  # members of a zip cannot be symlinks (refused by _check_zip_members)
        for bands in granules.values():
            for ref in bands.values():
                access.confine(ref.path, ref.name_for_errors)
    scenes = []
    for granule, bands in sorted(granules.items()):
        scl = bands.pop("SCL", None)
        crs, bounds = _footprint(bands, scl)
        scene_id = metadata.product_id if len(granules) == 1 else f"{metadata.product_id}/{granule}"
        scenes.append(
            Scene(
                scene_id=scene_id,
                acquired=metadata.acquired,
                level=metadata.level,
                source=str(product.source),
                bands=bands,
                radiometry=metadata.radiometry,
                crs=crs,
                bounds=bounds,
                scl=scl,
                nodata_values=(metadata.nodata,),
                extra={
                    # The granule name is the authority (a multi-granule product has one tile per granule).
                    "tile": tile_in_name(granule) or tile_in_name(metadata.product_id),
                    "product": metadata.product_id,
                    "granule": granule,
                    "product_type": metadata.product_type,
                    "metadata_file": product.label(mtd_name),
                    **({"saturated_value": metadata.saturated} if metadata.saturated is not None else {}),
                },
            )
        )
    return scenes


def _granule_bands(product: _Product) -> dict[str, dict[str, BandRef]]:
    """Per granule folder, the best file of each band: native resolution if present, else the finest."""
    candidates: dict[str, dict[str, list[tuple[int, int, str]]]] = {}
    for rel in product.files:
        parts = PurePosixPath(rel).parts
        if len(parts) < 4 or parts[0] != "GRANULE" or parts[2] != "IMG_DATA":
            continue
        match = _BAND_FILE.search(parts[-1])
        if match is None:
            continue
        band = match.group(1).upper()
        folder = _RES_FOLDER.match(parts[-2]) if len(parts) == 5 else None
        if len(parts) > 5 or (len(parts) == 5 and folder is None):
            continue  # not the SAFE layout (e.g. a QI or preview copy); don't guess
        # L1C files carry no resolution: each band exists once, at its native resolution.
        resolution = int(match.group(2) or (folder.group(1) if folder else NATIVE_RESOLUTION[band]))
        rank = 0 if resolution == NATIVE_RESOLUTION[band] else 1
        candidates.setdefault(parts[1], {}).setdefault(band, []).append((rank, resolution, rel))
    return {
        granule: {
            band: BandRef(product.gdal_path(rel), 1, product.label(rel))
            for band, options in bands.items()
            for _, _, rel in [min(options)]
        }
        for granule, bands in candidates.items()
    }


def _footprint(bands: dict[str, BandRef], scl: BandRef | None) -> tuple[CRS, Bounds]:
    ref = next((bands[b] for b in FOOTPRINT_BANDS if b in bands), None) or next(iter(bands.values()), None) or scl
    assert ref is not None  # a granule is only listed when it has at least one band file
    try:
        with open_raster(ref.path) as src:  # JPEG 2000/GeoTIFF drivers only: a VRT named .jp2 is never parsed
            crs, bounds = src.crs, tuple(src.bounds)
    except (RasterioError, OSError, ValueError) as exc:
        raise InputError(ref.name_for_errors, f"cannot open JP2 header: corrupt or truncated ({exc})") from exc
    if crs is None:
        raise InputError(ref.name_for_errors, "JP2 has no coordinate reference system (corrupt or not georeferenced)")
    return crs, (bounds[0], bounds[1], bounds[2], bounds[3])


# -- metadata ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Metadata:
    product_id: str
    product_type: str | None
    level: str
    acquired: dt.datetime
    radiometry: Radiometry
    nodata: float
    saturated: float | None


def _parse_metadata(product: _Product, mtd_name: str) -> _Metadata:
    where = product.label(mtd_name)
    data = product.read_bytes(mtd_name)
    if b"<!ENTITY" in data:
        # ESA metadata declares no entities; refusing them rules out entity-expansion attacks outright.
        raise InputError(where, "XML declares entities, which Sentinel-2 metadata never does; refusing to parse")
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, LookupError, ValueError) as exc:  # LookupError: <?xml encoding="bogus"?>
        raise InputError(where, f"malformed XML ({exc})") from exc

    level = MTD_FILES[mtd_name]
    root_name = _local(root.tag)
    if not root_name.endswith("_User_Product"):
        raise InputError(where, f"root element is {root_name}, not a Sentinel-2 Level-*_User_Product")
    declared = _text(root, "PROCESSING_LEVEL")
    if declared is not None and not declared.upper().startswith(f"LEVEL-{level[1:]}"):
        raise InputError(where, f"PROCESSING_LEVEL is {declared!r} but the file is {mtd_name} (Level-{level[1:]})")

    start = _text(root, "PRODUCT_START_TIME")
    if start is None:
        raise InputError(where, "missing PRODUCT_START_TIME (acquisition time)")
    acquired = _parse_time(start)
    if acquired is None:
        raise InputError(where, f"PRODUCT_START_TIME {start!r} is not an ISO 8601 date-time")

    product_id = _text(root, "PRODUCT_URI") or _text(root, "PRODUCT_NAME") or _safe_name(product)
    product_id = re.sub(r"\.SAFE$", "", product_id, flags=re.IGNORECASE)

    baseline = _text(root, "PROCESSING_BASELINE")
    if baseline is not None:
        try:
            baseline_at_least(baseline, OFFSET_BASELINE)
        except ValueError:
            raise InputError(where, f"PROCESSING_BASELINE {baseline!r} is not a baseline like '04.00'") from None

    nodata, saturated = _special_values(root, where)
    return _Metadata(
        product_id=product_id,
        product_type=_text(root, "PRODUCT_TYPE"),
        level=level,
        acquired=acquired,
        radiometry=_radiometry(root, level, baseline, mtd_name, where),
        nodata=nodata,
        saturated=saturated,
    )


def _radiometry(root: ET.Element, level: str, baseline: str | None, mtd_name: str, where: str) -> Radiometry:
    if level == "L2A":
        quant_tag, list_tag, offset_tag = (
            "BOA_QUANTIFICATION_VALUE",
            "BOA_ADD_OFFSET_VALUES_LIST",
            "BOA_ADD_OFFSET",
        )
    else:
        quant_tag, list_tag, offset_tag = (
            "QUANTIFICATION_VALUE",
            "Radiometric_Offset_List",
            "RADIO_ADD_OFFSET",
        )

    quant_text = _text(root, quant_tag)
    if quant_text is None:
        raise InputError(where, f"missing {quant_tag}")
    quantification = _number(quant_text)
    if quantification is None or not QUANTIFICATION_RANGE[0] <= quantification <= QUANTIFICATION_RANGE[1]:
        low, high = QUANTIFICATION_RANGE
        raise InputError(where, f"{quant_tag} {quant_text!r} is not a positive number in {low:g}..{high:g}")

    offset_list = root.find(f".//{{*}}{list_tag}")
    offsets: dict[str, float] = {}
    if offset_list is not None:
        for element in offset_list.iter():
            if _local(element.tag) != offset_tag:
                continue
            band_id, text = element.get("band_id"), (element.text or "").strip()
            known = band_id is not None and re.fullmatch(r"[0-9]{1,2}", band_id.strip()) is not None
            if band_id is None or not known or int(band_id) >= len(BAND_ID_ORDER):
                raise InputError(where, f"{offset_tag} has band_id {band_id!r}, expected 0..{len(BAND_ID_ORDER) - 1}")
            value = _number(text)
            if value is None or abs(value) > MAX_ABS_OFFSET:
                limit = MAX_ABS_OFFSET
                raise InputError(where, f"{offset_tag} band_id={band_id} {text!r} is not a number in -{limit}..{limit}")
            offsets[BAND_ID_ORDER[int(band_id)]] = value
        # A partial list would silently give the missing bands offset 0, i.e. reflectance off by 0.1.
        missing = [b for b in BAND_ID_ORDER if b not in offsets]
        if missing:
            raise InputError(where, f"{list_tag} has no {offset_tag} for {', '.join(missing)}")
    elif baseline is None:
        raise InputError(where, f"missing both PROCESSING_BASELINE and {list_tag}: the radiometric offset is unknown")
    elif baseline_at_least(baseline, OFFSET_BASELINE):
        raise InputError(
            where, f"processing baseline {baseline} requires {list_tag}, missing from {mtd_name}"
        )  # deciding by baseline, never by date: reprocessed archives carry new baselines on old dates
    else:
        offsets = dict.fromkeys(BAND_ID_ORDER, 0.0)
    source = f"{mtd_name} (baseline {baseline})" if baseline else mtd_name
    return Radiometry(quantification, offsets, baseline, source)


def _special_values(root: ET.Element, where: str) -> tuple[float, float | None]:
    nodata, saturated = 0.0, None
    for element in root.iter():
        if _local(element.tag) != "Special_Values":
            continue
        kind, index = _text(element, "SPECIAL_VALUE_TEXT"), _text(element, "SPECIAL_VALUE_INDEX")
        value = _number(index) if index is not None else None
        if kind is None or value is None:
            raise InputError(where, f"Special_Values entry {kind!r} has no numeric SPECIAL_VALUE_INDEX ({index!r})")
        if kind.upper() == "NODATA":
            nodata = value
        elif kind.upper() == "SATURATED":
            saturated = value
    return nodata, saturated


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(element: ET.Element, tag: str) -> str | None:
    # Namespace-agnostic: ESA has changed the PSD namespace URI across versions; only local names are stable.
    found = element.find(f".//{{*}}{tag}")
    if found is None or found.text is None or not found.text.strip():
        return None
    return found.text.strip()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_time(text: str) -> dt.datetime | None:
    """ISO 8601 as ESA writes it (``2021-06-01T10:46:19.024Z``); naive times are UTC. Python 3.10-proof."""
    match = _ISO_TIME.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    tz = dt.timezone.utc
    try:
        if zone and zone.upper() != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            tz = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        when = dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
        return when.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):  # month 13, offset +99:00, year 1 moved before 0001-01-01 by its zone
        return None


def _safe_name(product: _Product) -> str:
    if product.zip_path is None:
        return Path(product.root).name
    return product.root.rstrip("/") or product.zip_path.stem
