"""Composite: scenes on the grid -> a cloud-masked monthly cube.

The cube is an :class:`xarray.Dataset` on the job's :class:`~suelo.grid.Grid`, which it carries as its x/y pixel-centre
coordinates and a CF ``spatial_ref`` coordinate (:func:`suelo.grid.attach_grid`; :func:`cube_grid` reads it back,
for a slice of the cube too):

- ``reflectance`` ``(time, band, y, x)`` float32: per calendar month, the per-band median of the clear
  observations (physical reflectance, offset and quantification applied); NaN where the month has none,
- ``valid`` ``(time, y, x)`` bool: the month has at least one clear observation,
- ``clear_count`` ``(time, y, x)`` uint8: clear observations per month,
- ``n_clear`` ``(y, x)`` uint16: clear observations over the whole period.

Arrays are dask-backed, one task per (month, block), so memory is bounded by the block size and the number of
scenes in one month, never by the region.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from rasterio.warp import transform_bounds

from suelo import __version__
from suelo.grid import LEGACY_GRID_ATTR, SPATIAL_REF, Grid, attach_grid, cf_netcdf, has_grid
from suelo.ingest.auxiliary import CUBE_VARIABLES, OPTICAL, Auxiliary, auxiliary_planes
from suelo.ingest.scene import Scene, read_scene
from suelo.locks import netcdf_lock
from suelo.settings import IngestSpec, PeriodSpec

COMPOSITING_METHOD = (
    "per-band median of clear observations per calendar month (mean of the two middle values for even counts)"
)
#: CF ``long_name`` and ``units`` of the cube's variables (:func:`write_cube` adds those a cube lacks).
CUBE_ATTRS: dict[str, dict[str, str]] = {
    "reflectance": {"units": "1", "long_name": "surface reflectance (BOA)"},
    "valid": {"long_name": "month has at least one clear observation"},
    "clear_count": {"units": "1", "long_name": "clear observations in the month"},
    "n_clear": {"units": "1", "long_name": "clear observations over the period"},
}


def month_starts(period: PeriodSpec) -> list[dt.date]:
    """First day of every calendar month from ``period.start`` to ``period.end`` inclusive."""
    months = []
    year, month = period.start.year, period.start.month
    while (year, month) <= (period.end.year, period.end.month):
        months.append(dt.date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def scenes_by_month(scenes: Sequence[Scene], months: Sequence[dt.date]) -> list[list[Scene]]:
    """Scenes grouped by the month of their acquisition (UTC); scenes outside the period are dropped."""
    index = {(m.year, m.month): i for i, m in enumerate(months)}
    groups: list[list[Scene]] = [[] for _ in months]
    for scene in scenes:
        acquired = scene.acquired.astimezone(dt.timezone.utc) if scene.acquired.tzinfo else scene.acquired
        slot = index.get((acquired.year, acquired.month))
        if slot is not None:
            groups[slot].append(scene)
    return groups


def composite_block(scenes: Sequence[Scene], grid: Grid, ingest: IngestSpec) -> np.ndarray:
    """Median reflectance and clear count of ``scenes`` on ``grid``: shape ``(band + 1, y, x)`` float32.

    The last plane is the number of clear observations; it travels in the same array so that one task produces
    both and the scenes are read once.
    """
    n_bands = len(ingest.bands)
    out = np.full((n_bands + 1, grid.height, grid.width), np.nan, dtype=np.float32)
    out[n_bands] = 0
    if not scenes:
        return out
    stack = np.stack(
        [
            read_scene(
                scene,
                grid,
                ingest.bands,
                ingest.masking.masked_classes,
                resampling=ingest.resampling,
                require_scl=ingest.masking.require_scl,
            )
            for scene in scenes
        ]
    )  # (scene, band, y, x)
    clear = np.isfinite(stack[:, 0])
    count = clear.sum(axis=0)
    out[:n_bands] = median_of_clear(stack, count)
    out[n_bands] = count
    return out


def median_of_clear(stack: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per-pixel median over scenes (axis 0) of a ``(scene, band, y, x)`` stack whose unclear values are NaN.

    Same values as ``np.nanmedian`` (the mean of the two middle values for even counts) but several times faster:
    NaN sorts last, and a pixel is clear in all bands or none, so the middle positions follow from ``count``.
    """
    ordered = np.sort(stack, axis=0)
    low = np.maximum(count - 1, 0) // 2
    high = count // 2
    low_values = np.take_along_axis(ordered, np.broadcast_to(low, ordered.shape[1:])[None], axis=0)[0]
    high_values = np.take_along_axis(ordered, np.broadcast_to(high, ordered.shape[1:])[None], axis=0)[0]
    median = np.where(low == high, low_values, (low_values + high_values) / np.float32(2))
    out: np.ndarray = np.where(count > 0, median, np.float32(np.nan)).astype(np.float32, copy=False)
    return out


def _overlapping(scenes: Sequence[Scene], grid: Grid) -> list[Scene]:
    """Scenes whose footprint overlaps ``grid``: a block reads only the tiles that cover it."""
    left, bottom, right, top = grid.bounds
    kept = []
    for scene in scenes:
        s_left, s_bottom, s_right, s_top = transform_bounds(scene.crs, grid.crs, *scene.bounds, densify_pts=21)
        if s_left < right and s_right > left and s_bottom < top and s_top > bottom:
            kept.append(scene)
    return kept


def build_cube(
    scenes: Sequence[Scene],
    grid: Grid,
    period: PeriodSpec,
    ingest: IngestSpec,
    block_size: int = 512,
    auxiliary: Auxiliary | None = None,
) -> xr.Dataset:
    """The lazy monthly cube of ``scenes`` on ``grid`` (nothing is read until it is computed or written), with the
    ``auxiliary`` inputs' variables (Sentinel-1, terrain, weather: :mod:`suelo.ingest.auxiliary`) when given."""
    months = month_starts(period)
    groups = scenes_by_month(scenes, months)
    n_planes = len(ingest.bands) + 1

    def chunk(block: Grid) -> da.Array:
        """The (time, band + 1, y, x) planes of one block: one task per month."""
        per_month = [
            da.from_delayed(
                dask.delayed(composite_block, pure=True)(_overlapping(group, block), block, ingest),
                shape=(n_planes, block.height, block.width),
                dtype=np.float32,
            )[None]
            for group in groups
        ]
        stacked: da.Array = da.concatenate(per_month, axis=0)  # dask.array's functions are unannotated
        return stacked

    tile_rows = itertools.groupby(grid.tiles(block_size), key=lambda tile: tile.row)
    planes = da.block([[chunk(tile.grid) for tile in row] for _, row in tile_rows])  # (time, band + 1, y, x)
    reflectance = planes[:, :-1]
    count = planes[:, -1]
    clear_count = da.minimum(count, 255).astype(np.uint8)
    coords = {
        "time": np.array([np.datetime64(m, "ns") for m in months]),
        "band": list(ingest.bands),
        "y": grid.y_coords(),
        "x": grid.x_coords(),
    }
    used = sorted({s.scene_id: s for group in groups for s in group}.values(), key=lambda s: s.acquired)
    ds = xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), reflectance),
            "valid": (("time", "y", "x"), count > 0),
            "clear_count": (("time", "y", "x"), clear_count),
            "n_clear": (("y", "x"), count.sum(axis=0).astype(np.uint16)),
        },
        coords=coords,
        attrs={
            "title": "suelo monthly Sentinel-2 L2A composite cube",
            "crs": grid.crs.to_string(),
            "compositing": COMPOSITING_METHOD,
            "reflectance_formula": "(DN + offset[band]) / quantification, per scene from its own metadata",
            "scl_masked_classes": json.dumps(list(ingest.masking.masked_classes)),
            "resampling": ingest.resampling,
            "scenes": json.dumps([s.provenance() for s in used]),
            "software": f"suelo {__version__}",
        },
    )
    if auxiliary is not None and auxiliary.present:
        _add_auxiliary(ds, auxiliary, grid, months, block_size)
    for name, attrs in CUBE_ATTRS.items():
        ds[name].attrs.update(attrs)
    return attach_grid(ds, grid)


AUXILIARY_ATTRS = {
    "s1": {"units": "dB", "long_name": "Sentinel-1 backscatter, 10 log10 of the monthly mean in linear power"},
    # one unit per band: not a CF `units` (which holds one for the whole variable)
    "terrain": {"band_units": "m, degree", "long_name": "elevation (m) and slope (degrees) from the DEM"},
    "weather": {
        "band_units": "K, m day-1",
        "long_name": "2 m air temperature (K) and total precipitation (m per day)",
    },
}


def _add_auxiliary(ds: xr.Dataset, aux: Auxiliary, grid: Grid, months: Sequence[dt.date], block_size: int) -> None:
    """The auxiliary variables, block by block like the reflectance: one task per block reads all of them."""
    present = [name for name in aux.inputs if name != OPTICAL]
    tiles = list(grid.tiles(block_size))
    planes = {(t.row, t.col): dask.delayed(auxiliary_planes, pure=True)(aux, t.grid, months) for t in tiles}
    for name in present:
        variable, dim, bands, timed = CUBE_VARIABLES[name]
        leading = (len(months), len(bands)) if timed else (len(bands),)
        rows = itertools.groupby(tiles, key=lambda tile: tile.row)
        array = da.block([
            [da.from_delayed(planes[(t.row, t.col)][name], shape=(*leading, t.height, t.width), dtype=np.float32)
             for t in row]
            for _, row in rows
        ])  # fmt: skip
        ds.coords[dim] = list(bands)
        ds[variable] = (("time", dim, "y", "x") if timed else (dim, "y", "x"), array)
        ds[variable].attrs.update(AUXILIARY_ATTRS[name])
    ds.attrs["inputs"] = json.dumps(list(aux.inputs))
    ds.attrs["auxiliary_sources"] = json.dumps(aux.provenance())


def cube_grid(cube: xr.Dataset | xr.DataArray) -> Grid:
    """The grid of a cube or of a slice of it: the CRS from its ``spatial_ref`` coordinate, the transform from its
    x/y coordinates (:meth:`suelo.grid.Grid.from_xarray`, which also reads cubes of earlier versions)."""
    return Grid.from_xarray(cube)


def cube_scenes(cube: xr.Dataset) -> list[dict[str, Any]]:
    """Provenance of the scenes that went into a cube, including the radiometry applied to each."""
    scenes: list[dict[str, Any]] = json.loads(cube.attrs.get("scenes", "[]"))
    return scenes


def write_cube(cube: xr.Dataset, path: Path, packed: bool = True) -> None:
    """Write ``cube`` to NetCDF atomically (temp file in the same folder, then rename).

    Reflectance is packed as int16 with scale 1e-4 (one Sentinel-2 DN; negative values from the baseline 04.00
    offset stay representable), or kept float32 with ``packed=False`` (lossless: what a cache needs, so that outputs
    made from it are identical to outputs made from the inputs). The file is CF-1.8 (:func:`suelo.grid.cf_netcdf`):
    the CF grid mapping (the ``spatial_ref`` variable, with this cube's own ``GeoTransform``, also for a slice) lets
    GDAL and QGIS open the variables georeferenced.
    """
    from suelo.atomic import atomic_output

    grid = cube_grid(cube)
    out, coordinate_encoding = cf_netcdf(cube, grid)
    # also the JSON attribute, of this cube's grid: suelo versions before the spatial_ref coordinate read only it
    out.attrs[LEGACY_GRID_ATTR] = json.dumps(grid.to_dict())
    for name, attrs in CUBE_ATTRS.items():  # what a cube made by other means (or by earlier versions) lacks
        if name in out:
            out[name].attrs = attrs | out[name].attrs
    out["time"].attrs.setdefault("long_name", "first day of the composited calendar month")
    valid_attrs = out["valid"].attrs | {
        "grid_mapping": SPATIAL_REF,
        "flag_values": np.array([0, 1], dtype=np.uint8),  # CF: of the variable's type (earlier versions: "0 1")
        "flag_meanings": "no_clear_observation clear_observation",
    }
    out["valid"] = out["valid"].astype(np.uint8)
    out["valid"].attrs = valid_attrs
    chunk_y, chunk_x = min(256, grid.height), min(256, grid.width)
    reflectance_encoding: dict[str, Any] = (
        {"dtype": "int16", "scale_factor": 1e-4, "add_offset": 0.0, "_FillValue": np.int16(-32768)}
        if packed
        else {"dtype": "float32", "_FillValue": np.float32(np.nan)}
    )
    encoding = {
        "reflectance": {
            **reflectance_encoding,
            "zlib": True,
            "complevel": 4,
            "chunksizes": (1, 1, chunk_y, chunk_x),
        },
        "valid": {"zlib": True, "chunksizes": (1, chunk_y, chunk_x)},
        "clear_count": {"zlib": True, "chunksizes": (1, chunk_y, chunk_x)},
        "n_clear": {"zlib": True, "chunksizes": (chunk_y, chunk_x)},
        # radar, terrain and weather stay float32 (lossless: a dB or a precipitation in m/day has no natural DN)
        **{
            variable: {
                "dtype": "float32",
                "_FillValue": np.float32(np.nan),
                "zlib": True,
                "complevel": 4,
                "chunksizes": ((1, 1) if timed else (1,)) + (chunk_y, chunk_x),
            }
            for variable, _dim, _bands, timed in CUBE_VARIABLES.values()
            if variable in out
        },
        "time": {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int32"},
        **coordinate_encoding,
    }

    def read_back(tmp: Path) -> None:
        """The file reopens with every variable at its shape; the first and last chunk of each read (the last one
        is near the end of the file: a truncated write loses it); n_clear, when in memory, equal to what was written."""
        import netCDF4

        with netcdf_lock(xarray=True), netCDF4.Dataset(tmp) as ds:  # netCDF4 itself: no xarray call inside
            ds.set_auto_maskandscale(False)
            for name in ("reflectance", "valid", "clear_count", "n_clear"):
                var = ds.variables[name]
                if tuple(var.shape) != tuple(out[name].shape):
                    raise ValueError(f"{name} has shape {tuple(var.shape)} instead of {tuple(out[name].shape)}")
                chunks = var.chunking()
                chunks = chunks if isinstance(chunks, list) else list(var.shape)
                var[tuple(slice(0, c) for c in chunks)]
                var[tuple(slice(max(n - c, 0), n) for n, c in zip(var.shape, chunks, strict=True))]
            if out["n_clear"].chunks is None and not np.array_equal(ds.variables["n_clear"][:], out["n_clear"].values):
                raise ValueError("n_clear differs from what was written")

    # a cube in memory is written under suelo's netCDF lock (suelo.locks: another block of this worker may be
    # reading weather); a lazy one is not: its dask threads read weather under that lock while it is written
    in_memory = all(v.chunks is None for v in out.variables.values())
    with netcdf_lock() if in_memory else contextlib.nullcontext(), atomic_output(path, verify=read_back) as tmp:
        out.to_netcdf(tmp, engine="netcdf4", encoding=encoding)


def open_cube(path: Path) -> xr.Dataset:
    """Open a cube written by :func:`write_cube` lazily, with ``valid`` back as bool and its grid in its
    coordinates. Cubes of earlier versions (``spatial_ref`` a data variable, the grid also a JSON attribute) get
    the ``spatial_ref`` coordinate of today's."""
    ds = xr.open_dataset(path, engine="netcdf4", chunks={})
    ds["valid"] = ds["valid"].astype(bool)
    if SPATIAL_REF in ds.data_vars:  # not named in any `coordinates` attribute (earlier versions; other tools)
        ds = ds.set_coords(SPATIAL_REF)
    return attach_grid(ds, cube_grid(ds)) if has_grid(ds) else ds
