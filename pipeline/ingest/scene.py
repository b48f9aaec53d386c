"""The one interface every reader produces: a :class:`Scene`, and reading a scene onto a :class:`Grid`.

Readers (SAFE, STAC, GeoTIFF) only discover scenes and their metadata. Pixels are read here, the same way for all
of them, so nothing downstream knows which reader a scene came from.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import rasterio
import rasterio.env
import rasterio.io
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from suelo.errors import InputError
from suelo.grid import Bounds, Grid
from suelo.ingest.confine import open_raster

#: Remote hrefs (/vsicurl/, /vsis3/, ...) must fail, not hang, when the network is down or slow: GDAL's defaults
#: wait on libcurl's (minutes-long) connect timeout. Applied by :func:`gdal_env` around suelo's own reads only.
#: (Not GDAL_DISABLE_READDIR_ON_OPEN: it would also hide local side files such as a map's .aux.xml class names.)
GDAL_HTTP_OPTIONS = {
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "1",
}


def gdal_env() -> rasterio.Env:
    """The GDAL settings of suelo's input reads (:data:`GDAL_HTTP_OPTIONS`), scoped to a ``with`` block: the
    process environment is left as it is, so other GDAL users in the process (and its children) see their own.

    An option the user set wins: one in ``os.environ`` (a GDAL config option would override the environment
    variable) or in an enclosing ``rasterio.Env``. Each Dask worker sets them around its own reads.
    """
    active = rasterio.env.getenv() if rasterio.env.hasenv() else {}
    unset = {k: v for k, v in GDAL_HTTP_OPTIONS.items() if k not in os.environ and k not in active}
    return rasterio.Env(**unset)


@dataclass(frozen=True)
class BandRef:
    """Where one band's pixels are: a GDAL-readable path (local, ``/vsizip/``, ``/vsicurl/``) and a 1-based index.

    ``label`` is what error messages show the user (e.g. the zip file and member rather than a ``/vsizip/`` path).
    """

    path: str
    index: int = 1
    label: str = ""

    @property
    def name_for_errors(self) -> str:
        return self.label or self.path


@dataclass(frozen=True)
class Radiometry:
    """How digital numbers become reflectance: ``(DN + offset[band]) / quantification``.

    ``source`` says where the numbers came from (product metadata, STAC properties, the job spec), so the cube
    records not only what was applied but why.
    """

    quantification: float
    offsets: Mapping[str, float]
    processing_baseline: str | None
    source: str

    def offset(self, band: str) -> float:
        return float(self.offsets.get(band, 0.0))

    def to_dict(self) -> dict[str, object]:
        return {
            "quantification": self.quantification,
            "offsets": dict(self.offsets),
            "processing_baseline": self.processing_baseline,
            "source": self.source,
        }


def baseline_at_least(baseline: str | None, minimum: str) -> bool:
    """Compare processing baselines such as ``'04.00'`` or ``'5.11'`` numerically."""
    if baseline is None:
        return False

    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in text.strip().lstrip("N").split("."))

    return parts(baseline) >= parts(minimum)


#: An MGRS tile id as Sentinel-2 names its tiles: UTM zone, latitude band, 100 km square (e.g. ``31UFS``).
MGRS_TILE = re.compile(r"(0[1-9]|[1-5][0-9]|60)[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V]")
# In product, granule and file names the tile follows a "T" between separators: S2A_MSIL2A_..._T31UFS_2021....
_TILE_IN_NAME = re.compile(r"(?:^|[^A-Za-z0-9])T(" + MGRS_TILE.pattern + r")(?=$|[^A-Za-z0-9])")


def tile_in_name(name: str) -> str | None:
    """The MGRS tile written as ``T31UFS`` in a product/granule/file name, or None (e.g. ``31UFS`` in an id)."""
    match = _TILE_IN_NAME.search(name.upper())
    if match:
        return match.group(1)
    # STAC ids such as S2B_31UFS_20230612_0_L2A (Earth Search) spell the tile without the "T".
    bare = re.search(r"(?:^|_)(" + MGRS_TILE.pattern + r")(?=_|$)", name.upper())
    return bare.group(1) if bare else None


#: Media type of a STAC Item (GeoJSON), for links to Items a scene was read from.
STAC_ITEM_MEDIA_TYPE = "application/geo+json"


@dataclass(frozen=True)
class SourceLink:
    """Where a scene was read from, as a provenance link (STAC ``derived_from``) needs it.

    ``href``: the file, folder, document or URL; ``title``: what in it, when that is not the whole of it (the Item
    id of a STAC document or search, the file pattern of a GeoTIFF folder); ``media_type``: the href's, when known.
    The readers fill it in, so the writers never parse :attr:`Scene.source`, a text for people.
    """

    href: str
    title: str | None = None
    media_type: str | None = None


@dataclass(frozen=True)
class Scene:
    """One acquisition of one tile, as any reader describes it."""

    scene_id: str
    acquired: dt.datetime
    level: str  # "L2A" or "L1C"
    source: str  # the file/folder/item the user gave, for messages and provenance
    bands: Mapping[str, BandRef]
    radiometry: Radiometry
    crs: CRS
    bounds: Bounds  # footprint in ``crs``
    scl: BandRef | None = None
    nodata_values: tuple[float, ...] = (0.0,)
    extra: Mapping[str, object] = field(default_factory=dict)
    origin: SourceLink | None = None  # None: ``source`` is itself the path or URL

    def link(self) -> SourceLink:
        """Where this scene was read from, for provenance links."""
        return self.origin or SourceLink(self.source)

    def band(self, name: str) -> BandRef:
        try:
            return self.bands[name]
        except KeyError:
            raise InputError(
                self.source, f"missing band {name} (has {', '.join(sorted(self.bands)) or 'none'})"
            ) from None

    def provenance(self) -> dict[str, object]:
        return {
            "scene_id": self.scene_id,
            "acquired": self.acquired.isoformat(),
            "level": self.level,
            "source": self.source,
            "radiometry": self.radiometry.to_dict(),
        }


@dataclass(frozen=True)
class SearchContext:
    """What a searching reader (a STAC API) needs to know about the job: where, when and which tiles.

    File readers list what they are given and ignore it; it is passed only to readers whose ``discover`` takes a
    ``context`` keyword, so ``discover(spec, ingest)`` readers keep working unchanged.
    """

    bbox_wgs84: Bounds | None  # west, south, east, north (degrees); None: the job has neither AOI nor tiles
    start: dt.date
    end: dt.date  # inclusive, like PeriodSpec.end
    tiles: tuple[str, ...] = ()

    def datetime_interval(self) -> str:
        """The RFC 3339 interval STAC API ``datetime`` takes, covering whole days from start to end."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59Z"


RESAMPLING = {
    "nearest": Resampling.nearest,
    "bilinear": Resampling.bilinear,
    "cubic": Resampling.cubic,
    "average": Resampling.average,
}


def read_on_grid(ref: BandRef, grid: Grid, resampling: str, nodata: float | None, what: str = "band") -> np.ndarray:
    """Read one band onto ``grid`` as float32, with NaN where the source has no data or no coverage.

    Sources already on the grid's lattice (same CRS, pixel size an integer multiple of the grid's, edges aligned:
    every Sentinel-2 band read onto a 10 m grid in its own UTM zone) take a direct path that reads only the needed
    window and resamples in numpy; everything else goes through GDAL's warper. Both give the same values (a test
    compares them), the direct path several times faster.
    """
    try:
        # GeoTIFF or JPEG 2000 drivers only: a VRT href is never parsed; bounded HTTP waits for the open and the reads
        with gdal_env(), open_raster(ref.path) as src:
            if ref.index > src.count:
                raise InputError(ref.name_for_errors, f"{what} index {ref.index} but the file has {src.count} bands")
            if src.crs is None:
                raise InputError(ref.name_for_errors, f"{what} has no coordinate reference system")
            src_nodata = nodata if nodata is not None else src.nodata
            factor = aligned_factor(src.crs, src.transform, grid)
            if factor is not None and resampling in ("nearest", "bilinear"):
                return _read_aligned(src, ref.index, grid, factor, resampling, src_nodata)
            with WarpedVRT(
                src,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=RESAMPLING[resampling],
                src_nodata=src_nodata,
                nodata=src_nodata,
                dtype="float32",
            ) as vrt:
                values = vrt.read(ref.index, masked=True)
    except InputError:
        raise
    except (RasterioError, OSError, ValueError) as exc:
        raise InputError(ref.name_for_errors, f"cannot read {what}: corrupt, truncated or unreadable ({exc})") from exc
    band: np.ndarray = values.filled(np.nan).astype(np.float32, copy=False)  # rasterio's read() is untyped
    return band


def aligned_factor(crs: CRS, transform: Affine, grid: Grid) -> int | None:
    """How many grid pixels fit in one source pixel per axis, if the source lattice nests exactly in the grid's."""
    if crs != grid.crs or transform.b != 0 or transform.d != 0 or transform.e >= 0:
        return None
    grid_x, grid_y = grid.resolution
    ratio_x, ratio_y = transform.a / grid_x, -transform.e / grid_y
    factor = round(ratio_x)
    if factor < 1 or abs(ratio_x - factor) > 1e-9 or abs(ratio_y - factor) > 1e-9:
        return None
    offset_x = (grid.transform.c - transform.c) / grid_x
    offset_y = (transform.f - grid.transform.f) / grid_y
    if abs(offset_x - round(offset_x)) > 1e-6 or abs(offset_y - round(offset_y)) > 1e-6:
        return None
    return factor


def _source_positions(first_fine: int, count: int, factor: int, resampling: str) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel index and bilinear weight of the next source pixel, for ``count`` grid pixels along one axis.

    Grid pixel ``k`` (counted on the fine lattice from the source origin) has its centre at source coordinate
    ``(k + 0.5) / factor - 0.5`` in pixel-centre units; nearest takes the source pixel containing that centre.
    """
    fine = first_fine + np.arange(count)
    if resampling == "nearest":
        return np.floor_divide(fine, factor), np.zeros(count)
    centre = (fine + 0.5) / factor - 0.5
    lower = np.floor(centre)
    return lower.astype(np.int64), centre - lower


def _read_aligned(
    src: rasterio.io.DatasetReader, index: int, grid: Grid, factor: int, resampling: str, nodata: float | None
) -> np.ndarray:
    first_col = round((grid.transform.c - src.transform.c) / grid.resolution[0])
    first_row = round((src.transform.f - grid.transform.f) / grid.resolution[1])
    cols, col_weight = _source_positions(first_col, grid.width, factor, resampling)
    rows, row_weight = _source_positions(first_row, grid.height, factor, resampling)
    reach = 0 if resampling == "nearest" else 1  # bilinear also needs the next source pixel
    col_lo, col_hi = int(cols.min()), int(cols.max()) + reach + 1
    row_lo, row_hi = int(rows.min()), int(rows.max()) + reach + 1
    # read the part of that window inside the file; outside stays NaN (no coverage)
    window = np.full((row_hi - row_lo, col_hi - col_lo), np.nan, dtype=np.float64)
    r0, r1 = max(row_lo, 0), min(row_hi, src.height)
    c0, c1 = max(col_lo, 0), min(col_hi, src.width)
    if r0 < r1 and c0 < c1:
        values = src.read(index, window=Window(c0, r0, c1 - c0, r1 - r0)).astype(np.float64)
        if nodata is not None:
            values[values == nodata] = np.nan
        window[r0 - row_lo : r1 - row_lo, c0 - col_lo : c1 - col_lo] = values
    rows, cols = rows - row_lo, cols - col_lo
    if resampling == "nearest":
        nearest: np.ndarray = window[np.ix_(rows, cols)].astype(np.float32)
        return nearest
    # Bilinear over the valid neighbours only, weights renormalised; like GDAL's warper, a grid pixel whose centre
    # falls in a no-data source pixel stays no data.
    containing = window[
        np.ix_(np.floor_divide(first_row + np.arange(grid.height), factor) - row_lo,
               np.floor_divide(first_col + np.arange(grid.width), factor) - col_lo)
    ]  # fmt: skip
    total = np.zeros(grid.shape)
    weight = np.zeros(grid.shape)
    for dy, wy in ((0, 1 - row_weight), (1, row_weight)):
        for dx, wx in ((0, 1 - col_weight), (1, col_weight)):
            w = wy[:, None] * wx[None, :]
            neighbour = window[np.ix_(rows + dy, cols + dx)]
            valid = np.isfinite(neighbour) & (w > 0)
            total += np.where(valid, neighbour * w, 0.0)
            weight += np.where(valid, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where((weight > 0) & np.isfinite(containing), total / weight, np.nan)
    return out.astype(np.float32)


def read_scene(
    scene: Scene,
    grid: Grid,
    bands: tuple[str, ...],
    masked_scl_classes: tuple[int, ...],
    resampling: str = "bilinear",
    require_scl: bool = True,
) -> np.ndarray:
    """Reflectance of ``bands`` on ``grid``, shape ``(band, y, x)`` float32, NaN where not clear.

    A pixel is clear when every requested band has data there and, when the scene has an SCL layer, its class is
    not in ``masked_scl_classes``. A pixel is cleared in all bands at once so composites never mix dates.
    """
    refs = [scene.band(name) for name in bands]  # fail on a missing band before reading anything
    if scene.scl is None and require_scl and scene.level == "L2A":
        raise InputError(
            scene.source,
            "no SCL (scene classification) layer to mask clouds; "
            "set ingest.masking.require_scl: false only if the input is already cloud-masked",
        )
    out = np.empty((len(bands), grid.height, grid.width), dtype=np.float32)
    clear = np.ones(grid.shape, dtype=bool)
    if scene.scl is not None:
        scl = read_on_grid(scene.scl, grid, "nearest", nodata=None, what="SCL")
        clear &= np.isfinite(scl) & ~np.isin(scl, masked_scl_classes)
    for i, (name, ref) in enumerate(zip(bands, refs, strict=True)):
        if not clear.any():
            out[i:] = np.nan
            break
        first_nodata = scene.nodata_values[0] if scene.nodata_values else None  # () = use the file's own
        dn = read_on_grid(ref, grid, resampling, nodata=first_nodata, what=f"band {name}")
        for extra_nodata in scene.nodata_values[1:]:
            dn[dn == extra_nodata] = np.nan
        clear &= np.isfinite(dn)
        out[i] = (dn + np.float32(scene.radiometry.offset(name))) / np.float32(scene.radiometry.quantification)
    out[:, ~clear] = np.nan
    return out
