"""Ingest: find Sentinel-2 scenes in the inputs a job names, and decide the target grid.

Each input kind has one reader module exposing ``discover(spec, ingest) -> list[Scene]``; they are plugged in
through :data:`READERS`. Everything after discovery works on :class:`~suelo.ingest.scene.Scene` only.

A reader that searches rather than lists (a STAC API) also needs the job's area, period and tiles: it declares a
keyword parameter ``context`` (``discover(spec, ingest, *, context: SearchContext)``) and
:func:`discover_scenes` passes a :class:`~suelo.ingest.scene.SearchContext` to it, and only to it, so readers
with the two-argument interface need no change.

Confinement: a reader that declares a keyword parameter ``access`` gets the job's
:class:`~suelo.ingest.confine.InputAccess` (allowed folders and remote hosts, from the job file's folder, the
inputs' paths and the job's ``access`` section); every built-in reader does, so each href and each file found in a
folder is checked at discovery, which ``suelo validate`` runs too.

Tiles: every reader sets ``Scene.extra["tile"]`` to the scene's MGRS tile (``31UFS``) or None when it cannot
know it. ``job.tiles`` keeps only the scenes of those tiles, and without an AOI the grid covers all of them.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from suelo.errors import ConfigError, InputError
from suelo.grid import Bounds, Grid, as_crs, crs_units, geometry_bounds, union_bounds, utm_crs_for
from suelo.ingest.aoi import load_aoi
from suelo.ingest.confine import FormatNotAllowed, InputAccess, open_raster
from suelo.ingest.scene import BandRef, Radiometry, Scene, SearchContext, gdal_env, read_scene
from suelo.settings import AUXILIARY_KINDS, IngestSpec, JobSpec, PeriodSpec

Reader = Callable[[Any, IngestSpec], list[Scene]]

#: input kind (the ``kind`` of an input in the job spec) -> module whose ``discover`` reads it
READERS: dict[str, str] = {
    "safe": "suelo.ingest.safe",
    "stac": "suelo.ingest.stac",
    "geotiff": "suelo.ingest.geotiff",
    "stac_api": "suelo.ingest.stac_api",
}


def reader(kind: str) -> Reader:
    """The ``discover`` function for an input kind (imported on first use: a job pays only for its formats)."""
    discover: Reader = importlib.import_module(READERS[kind]).discover
    return discover


__all__ = [
    "READERS",
    "BandRef",
    "InputAccess",
    "Radiometry",
    "Scene",
    "SearchContext",
    "check_band_headers",
    "check_plausible",
    "check_remote_access",
    "default_crs",
    "discover_scenes",
    "job_grid",
    "read_scene",
    "reader",
    "scenes_in_period",
    "scenes_on_grid",
    "search_context",
]


def _takes(discover: Callable[..., Any], keyword: str) -> bool:
    return keyword in inspect.signature(discover).parameters


def search_context(job: JobSpec) -> SearchContext:
    """The job's search area (the AOI, else the union of its tiles; in WGS 84 degrees), period and tiles."""
    wgs84 = CRS.from_epsg(4326)
    bbox: Bounds | None = None
    if job.aoi is not None:
        geometry, geometry_crs = load_aoi(job.aoi)
        bbox = transform_bounds(geometry_crs, wgs84, *geometry_bounds(geometry), densify_pts=21)
    elif job.tiles:
        from suelo.ingest.mgrs import tile_bounds_wgs84

        bbox = union_bounds([tile_bounds_wgs84(tile) for tile in job.tiles])
    return SearchContext(bbox_wgs84=bbox, start=job.period.start, end=job.period.end, tiles=job.tiles)


def discover_scenes(job: JobSpec) -> list[Scene]:
    """All scenes of all inputs (of ``job.tiles`` if given), sorted by acquisition time. L1C is refused unless allowed.

    A tile of ``job.tiles`` without any scene is an error naming it: a region silently missing a tile would look
    finished.
    """
    scenes: list[Scene] = []
    context: SearchContext | None = None
    access = InputAccess.of_job(job)
    for spec in job.inputs:
        if spec.kind in AUXILIARY_KINDS:  # radar, terrain and weather add cube variables (suelo.ingest.auxiliary)
            continue
        discover = reader(spec.kind)
        keywords: dict[str, Any] = {}
        if _takes(discover, "context"):
            context = context or search_context(job)
            keywords["context"] = context
        if _takes(discover, "access"):
            keywords["access"] = access
        scenes.extend(discover(spec, job.ingest, **keywords))
    if job.tiles:
        scenes = _of_tiles(scenes, job.tiles)
    for scene in scenes:
        if scene.level != "L2A" and not job.ingest.allow_l1c:
            raise InputError(
                scene.source,
                f"is a Level-{scene.level[1:]} product; suelo needs Level-2A (surface reflectance with SCL). "
                "Set ingest.allow_l1c: true to process top-of-atmosphere data anyway",
            )
    return sorted(scenes, key=lambda s: (s.acquired, s.scene_id))


def _of_tiles(scenes: list[Scene], tiles: Sequence[str]) -> list[Scene]:
    kept = [s for s in scenes if s.extra.get("tile") in tiles]
    missing = [t for t in tiles if not any(s.extra.get("tile") == t for s in kept)]
    if missing:
        unknown = sum(1 for s in scenes if s.extra.get("tile") is None)
        found = sorted({str(s.extra["tile"]) for s in scenes if s.extra.get("tile")})
        detail = f"the inputs hold {len(scenes)} scene(s) of tiles {', '.join(found) or 'none'}"
        if unknown:
            detail += f" and {unknown} whose tile is unknown (a GeoTIFF name without T31UFS-style tile id)"
        raise InputError("tiles", f"no scene of tile {', '.join(missing)} in the inputs; {detail}")
    return kept


def job_grid(job: JobSpec, scenes: Sequence[Scene]) -> Grid:
    """The job's target grid: from the AOI if given; else all ``job.tiles``; else the first scene's footprint.

    Its CRS is ``grid.crs`` when given, else the UTM zone of the data (:func:`default_crs`), whatever CRS the
    inputs are in. With tiles, the grid is the union of their scenes' footprints, so a region across two UTM
    zones is one grid (the other zone's scenes are warped onto it). A grid that cannot be meant (fewer than
    :data:`MIN_GRID_PIXELS` pixels, metre-sized numbers as degrees) is an error (:func:`check_plausible`).
    """
    if job.aoi is not None:
        geometry, geometry_crs = load_aoi(job.aoi)
        grid = Grid.from_geometry(geometry, geometry_crs, job.grid.crs, job.grid.resolution)
        return check_plausible(grid, "the AOI")
    if not scenes:
        raise InputError("inputs", "no scenes found, and no AOI to define the grid")
    first = scenes[0]
    if job.tiles:
        by_tile = {t: [s for s in scenes if s.extra.get("tile") == t] for t in job.tiles}
        missing = [t for t, found in by_tile.items() if not found]
        if missing:
            raise InputError("tiles", f"no scene of tile {', '.join(missing)} in the inputs")
        first = by_tile[job.tiles[0]][0]
        crs = as_crs(job.grid.crs) if job.grid.crs else default_crs(first.crs, first.bounds)
        # Densified so the union holds every footprint even where the other zone's edges curve in this CRS.
        footprints = [transform_bounds(s.crs, crs, *s.bounds, densify_pts=21) for t in job.tiles for s in by_tile[t]]
        grid = Grid.from_geometry(_box(union_bounds(footprints)), crs, crs, job.grid.resolution)
        return check_plausible(grid, f"the scenes of tiles {', '.join(job.tiles)}")
    crs = as_crs(job.grid.crs) if job.grid.crs else default_crs(first.crs, first.bounds)
    grid = Grid.from_geometry(_box(first.bounds), first.crs, crs, job.grid.resolution)
    return check_plausible(grid, f"the footprint of {first.source}")


def default_crs(crs: CRS, bounds: Bounds) -> CRS:
    """The grid CRS when the job names none: the data's own CRS if it is a WGS 84 / UTM zone (a Sentinel-2 tile's
    own lattice: read without resampling), else the UTM zone of the footprint's centre (inputs in EPSG:4326, a
    national grid, Web Mercator): pixel sizes are then metres, as ``grid.resolution`` is."""
    epsg = crs.to_epsg()
    if epsg is not None and (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        return crs
    return utm_crs_for(_box(bounds), crs)


#: A grid of fewer pixels is a mistake (a footprint in degrees read as metres), not a map.
MIN_GRID_PIXELS = 4


def check_plausible(grid: Grid, origin: str) -> Grid:
    """Refuse grids no one means: pixels as large as the area (``grid.resolution`` 10 in a CRS in degrees is
    10-degree pixels) or fewer than :data:`MIN_GRID_PIXELS` pixels. Returns the grid unchanged."""
    size = grid.resolution[0]  # the job's grid.resolution: grids are built with square pixels of that size
    label = grid.crs.to_string()
    if grid.crs.is_geographic and size > 0.5:
        raise ConfigError(
            f"grid.resolution {size:g} is in degrees in grid.crs {label}: pixels of {size:g} degrees "
            f"(about {size * 111:,.0f} km); give a projected grid.crs (in metres) or leave it out for the data's "
            "UTM zone, or give a resolution in degrees (e.g. 0.0001)"
        )
    if grid.width * grid.height < MIN_GRID_PIXELS:
        raise ConfigError(
            f"grid of {grid.width} x {grid.height} px at {size:g} {crs_units(grid.crs)} in {label} from {origin}: "
            f"fewer than {MIN_GRID_PIXELS} pixels (is grid.resolution in the units of grid.crs?)"
        )
    return grid


def _box(bounds: Bounds) -> dict[str, Any]:
    left, bottom, right, top = bounds
    return {
        "type": "Polygon",
        "coordinates": [[(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]],
    }


#: Prefixes of GDAL's network file systems (the STAC readers turn http(s):// and s3:// hrefs into the first two).
REMOTE_PREFIXES = ("/vsicurl/", "/vsis3/", "/vsigs/", "/vsiaz/", "/vsiadls/", "/vsioss/", "/vsiswift/")


def check_remote_access(scenes: Sequence[Scene]) -> None:
    """Open one remote band per host before any block runs, so an offline machine or a wrong URL is one clear
    error (naming the href) at the start instead of every block failing after its retries.

    Only the header is read (one HTTP range request); GDAL's HTTP timeouts and retries are bounded
    (:func:`suelo.ingest.scene.gdal_env`), so this never hangs.
    """
    from rasterio.errors import RasterioError

    probed: set[tuple[str, str]] = set()
    for scene in scenes:
        for ref in (*scene.bands.values(), *([scene.scl] if scene.scl else [])):
            prefix = next((p for p in REMOTE_PREFIXES if ref.path.startswith(p)), None)
            if prefix is None:
                continue
            host = ref.path[len(prefix) :].split("://", 1)[-1].split("/", 1)[0]
            if (prefix, host) in probed:
                continue
            probed.add((prefix, host))
            try:
                with gdal_env(), open_raster(ref.path):  # GeoTIFF/JPEG 2000 drivers only, as when read
                    pass
            except FormatNotAllowed as exc:  # it answered, with something else than a GeoTIFF/JPEG 2000 (a VRT?)
                raise InputError(ref.name_for_errors, str(exc)) from exc
            except (RasterioError, OSError) as exc:
                problem = " ".join(str(exc).split())
                raise InputError(
                    ref.name_for_errors, f"cannot open remote asset (offline or wrong URL?): {problem}"
                ) from exc


def check_band_headers(scenes: Sequence[Scene], bands: Sequence[str]) -> int:
    """Open every local file of ``bands`` (and the SCL) of ``scenes`` and decode one pixel of its coarsest level,
    so a corrupt or truncated band (e.g. a SAFE's B04 JP2; discovery opens one band per granule) is one error at
    ``suelo validate`` time instead of failed blocks. Remote bands are left to :func:`check_remote_access`.

    Cheap: headers and one pixel of a reduced-resolution level (JPEG 2000) or one block (GeoTIFF), no full decode.
    Returns the number of files checked.
    """
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    checked: set[str] = set()
    for scene in scenes:
        refs = [scene.bands[b] for b in bands if b in scene.bands] + ([scene.scl] if scene.scl else [])
        for ref in refs:
            if ref.path in checked or ref.path.startswith(REMOTE_PREFIXES):
                continue
            checked.add(ref.path)
            try:
                with gdal_env(), open_raster(ref.path) as src:
                    if ref.index > src.count:
                        raise InputError(ref.name_for_errors, f"band index {ref.index} but the file has {src.count}")
                    factor = max([1, *src.overviews(ref.index)])
                    size = max(1, min(factor, src.width, src.height))
                    src.read(ref.index, window=Window(0, 0, size, size), out_shape=(1, 1))
            except FormatNotAllowed as exc:
                raise InputError(ref.name_for_errors, str(exc)) from exc
            except (RasterioError, OSError, ValueError) as exc:
                detail = str(exc.__cause__ or exc)  # rasterio says "Read failed"; its cause says what failed
                raise InputError(
                    ref.name_for_errors, f"cannot read band: corrupt, truncated or unreadable ({detail})"
                ) from exc
    return len(checked)


def scenes_in_period(scenes: Sequence[Scene], period: PeriodSpec) -> list[Scene]:
    """The scenes acquired (UTC) in one of the period's calendar months; none at all is an error saying what
    the inputs do hold, instead of a cube with no observation."""
    first = (period.start.year, period.start.month)
    last = (period.end.year, period.end.month)
    kept = [s for s in scenes if first <= (s.acquired.year, s.acquired.month) <= last]
    if not kept and scenes:
        held = f"{min(s.acquired for s in scenes):%Y-%m-%d} .. {max(s.acquired for s in scenes):%Y-%m-%d}"
        raise InputError(
            "period",
            f"no input scene was acquired in {period.start:%Y-%m} .. {period.end:%Y-%m} "
            f"(the {len(scenes)} scene(s) on the grid span {held})",
        )
    return kept


def scenes_on_grid(scenes: Sequence[Scene], grid: Grid, origin: str = "AOI") -> list[Scene]:
    """The scenes whose footprint overlaps ``grid``; none at all is an error naming the inputs."""
    kept = [s for s in scenes if grid.intersects(s.bounds, s.crs)]
    if not kept:
        sources = ", ".join(sorted({s.source for s in scenes})[:5]) or "(no scenes)"
        raise InputError(origin, f"does not intersect any input scene (checked {len(scenes)}: {sources})")
    return kept
