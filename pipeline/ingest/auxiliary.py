"""The inputs besides Sentinel-2 that Presto was pre-trained on: Sentinel-1 backscatter, terrain and weather.

Each has its reader (:mod:`suelo.ingest.sentinel1`, :mod:`suelo.ingest.terrain`, :mod:`suelo.ingest.weather`);
this module is the one place the rest of the pipeline meets them: the driver discovers them once
(:func:`discover_auxiliary`), and a block asks for their planes on its grid (:func:`auxiliary_planes`), in the
units Presto's normalization expects. The cube then carries them as variables on the same grid and months
(:data:`CUBE_VARIABLES`), and the encoder reads whatever the cube has; nothing downstream knows a reader.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine

from suelo.grid import Grid
from suelo.settings import DemInput, JobSpec, Sentinel1Input, WeatherInput

if TYPE_CHECKING:
    from suelo.ingest.confine import InputAccess
    from suelo.ingest.sentinel1 import RadarScene
    from suelo.ingest.terrain import DemSource
    from suelo.ingest.weather import WeatherSource

#: Input name (a model's contract, ``suelo train --inputs``) -> the cube variable, its band dimension, band names,
#: and whether it has a time axis. Units: S1 dB (of the monthly mean in linear power), elevation m, slope degrees,
#: 2 m temperature K, precipitation m of water per day.
CUBE_VARIABLES: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "s1": ("s1", "polarization", ("VV", "VH"), True),
    "terrain": ("terrain", "terrain_band", ("elevation", "slope"), False),
    "weather": ("weather", "weather_band", ("temperature", "precipitation"), True),
}
OPTICAL = "s2"  # every cube has it


@dataclass(frozen=True)
class Auxiliary:
    """The job's non-optical inputs, discovered once by the driver (picklable: blocks get it with the plan)."""

    radar: tuple[RadarScene, ...] = ()
    terrain: DemSource | None = None
    weather: WeatherSource | None = None
    radar_declared: bool = False  # the job has a sentinel1 input (even if no acquisition falls in the period)

    @property
    def inputs(self) -> tuple[str, ...]:
        """What the cube will hold, in :data:`CUBE_VARIABLES` order, Sentinel-2 first."""
        present = {"s1": self.radar_declared, "terrain": self.terrain is not None, "weather": self.weather is not None}
        return (OPTICAL, *(name for name in CUBE_VARIABLES if present[name]))

    @property
    def present(self) -> bool:
        """Whether the job has any input besides Sentinel-2 (a Sentinel-2-only cube and record are as before)."""
        return self.inputs != (OPTICAL,)

    def provenance(self) -> dict[str, Any]:
        """What run.json records of them."""
        return {
            "s1": [{"source": s.source, "acquired": s.acquired.isoformat(), "orbit": s.orbit, "unit": s.unit}
                   for s in self.radar],
            "terrain": list(self.terrain.files) if self.terrain else [],
            "weather": list(self.weather.files) if self.weather else [],
        }  # fmt: skip


def discover_auxiliary(job: JobSpec, period_months: Sequence[dt.date], access: InputAccess | None = None) -> Auxiliary:
    """Radar acquisitions of the period, the DEM and the weather files of ``job`` (an :class:`Auxiliary` with none
    when the job has only Sentinel-2 inputs)."""
    radar: list[RadarScene] = []
    terrain = weather = None
    declared = False
    first, last = period_months[0], period_months[-1]
    for spec in job.inputs:
        if isinstance(spec, Sentinel1Input):
            from suelo.ingest.sentinel1 import discover_sentinel1

            declared = True
            radar.extend(s for s in discover_sentinel1(spec, access) if first <= _month(s.acquired) <= last)
        elif isinstance(spec, DemInput):
            from suelo.ingest.terrain import discover_dem

            terrain = discover_dem(spec, access)
        elif isinstance(spec, WeatherInput):
            from suelo.ingest.weather import discover_weather

            weather = discover_weather(spec, access)
    radar.sort(key=lambda s: (s.acquired, s.scene_id))
    return Auxiliary(tuple(radar), terrain, weather, declared)


PROBE_SIDE = 64  # pixels per side of the coarse grid on which the driver tries the DEM and weather


def check_auxiliary(aux: Auxiliary, grid: Grid, months: Sequence[dt.date]) -> None:
    """Read every radar acquisition on a window at the grid's centre, and the DEM and the weather once on a coarse
    copy of ``grid`` (at most :data:`PROBE_SIDE` pixels a side, same bounds), so that a file in a unit other than the
    one stated, or a DEM or weather file that does not cover the region or cannot be read onto it, is one error
    naming the file before any block runs (a block would only report it as a failed block)."""
    if aux.radar:
        from suelo.ingest.sentinel1 import composite_sentinel1

        # each acquisition's unit is checked against its values where it is read: here on a window of the grid's
        # own pixels at its centre, so a unit the metadata or the job states wrongly stops the run now
        size = min(PROBE_SIDE, grid.width, grid.height)
        row, col = (grid.height - size) // 2, (grid.width - size) // 2
        centre = grid.tile(row, row + size, col, col + size).grid
        for scene in aux.radar:
            if _overlaps(scene.crs, scene.bounds, centre):
                composite_sentinel1([scene], centre, [_month(scene.acquired)])
    if aux.terrain is None and aux.weather is None:
        return
    left, bottom, right, top = grid.bounds
    side = min(PROBE_SIDE, grid.width, grid.height)
    step_x, step_y = (right - left) / side, (top - bottom) / side
    # inside the grid's own bounds (a snapped grid could reach past them, and past a DEM that just covers them)
    probe = Grid(grid.crs, Affine(step_x, 0, left, 0, -step_y, top), side, side)
    if aux.terrain is not None:
        from suelo.ingest.terrain import terrain_on_grid

        terrain_on_grid(aux.terrain, probe)
    if aux.weather is not None:
        from suelo.ingest.weather import weather_on_grid

        weather_on_grid(aux.weather, probe, months)


def _month(moment: dt.datetime) -> dt.date:
    return dt.date(moment.year, moment.month, 1)


def auxiliary_planes(aux: Auxiliary, grid: Grid, months: Sequence[dt.date]) -> dict[str, np.ndarray]:
    """The cube variables of ``aux`` on ``grid``: ``s1`` (time, 2, y, x), ``terrain`` (2, y, x), ``weather``
    (time, 2, y, x), float32, NaN where there is no value."""
    planes: dict[str, np.ndarray] = {}
    if aux.radar_declared:
        from suelo.ingest.sentinel1 import composite_sentinel1

        overlapping = [s for s in aux.radar if _overlaps(s.crs, s.bounds, grid)]
        planes["s1"] = composite_sentinel1(overlapping, grid, months)
    if aux.terrain is not None:
        from suelo.ingest.terrain import terrain_on_grid

        planes["terrain"] = terrain_on_grid(aux.terrain, grid)
    if aux.weather is not None:
        from suelo.ingest.weather import weather_on_grid

        planes["weather"] = weather_on_grid(aux.weather, grid, months)
    return planes


def _overlaps(crs: Any, bounds: tuple[float, float, float, float], grid: Grid) -> bool:
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(crs, grid.crs, *bounds, densify_pts=21)
    g_left, g_bottom, g_right, g_top = grid.bounds
    return bool(left < g_right and right > g_left and bottom < g_top and top > g_bottom)
