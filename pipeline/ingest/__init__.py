"""Ingest: find Sentinel-2 scenes in the inputs a job names, and decide the target grid.

Each input kind has one reader module exposing ``discover(spec, ingest) -> list[Scene]``; they are plugged in
through :data:`READERS`. Everything after discovery works on :class:`~pipeline.ingest.scene.Scene` only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.errors import InputError
from pipeline.grid import Grid, as_crs
from pipeline.ingest.aoi import load_aoi
from pipeline.ingest.scene import BandRef, Radiometry, Scene, read_scene
from pipeline.settings import IngestSpec, JobSpec

Reader = Callable[[Any, IngestSpec], list[Scene]]

#: input kind (the ``kind`` of an input in the job spec) -> module whose ``discover`` reads it
READERS: dict[str, str] = {
    "safe": "pipeline.ingest.safe",
    "stac": "pipeline.ingest.stac",
    "geotiff": "pipeline.ingest.geotiff",
}


def reader(kind: str) -> Reader:
    """The ``discover`` function for an input kind (imported on first use: a job pays only for its formats)."""
    return importlib.import_module(READERS[kind]).discover


__all__ = [
    "READERS",
    "BandRef",
    "Radiometry",
    "Scene",
    "discover_scenes",
    "job_grid",
    "read_scene",
    "reader",
    "scenes_on_grid",
]


def discover_scenes(job: JobSpec) -> list[Scene]:
    """All scenes of all inputs, sorted by acquisition time. L1C scenes are refused unless allowed."""
    scenes: list[Scene] = []
    for spec in job.inputs:
        scenes.extend(reader(spec.kind)(spec, job.ingest))
    for scene in scenes:
        if scene.level != "L2A" and not job.ingest.allow_l1c:
            raise InputError(
                scene.source,
                f"is a Level-{scene.level[1:]} product; suelo needs Level-2A (surface reflectance with SCL). "
                "Set ingest.allow_l1c: true to process top-of-atmosphere data anyway",
            )
    return sorted(scenes, key=lambda s: (s.acquired, s.scene_id))


def job_grid(job: JobSpec, scenes: Sequence[Scene]) -> Grid:
    """The job's target grid: from the AOI if given, else the footprint of the first scene (its tile)."""
    if job.aoi is not None:
        geometry, geometry_crs = load_aoi(job.aoi)
        return Grid.from_geometry(geometry, geometry_crs, job.grid.crs, job.grid.resolution)
    if not scenes:
        raise InputError("inputs", "no scenes found, and no AOI to define the grid")
    first = scenes[0]
    crs = as_crs(job.grid.crs) if job.grid.crs else first.crs
    geometry = {
        "type": "Polygon",
        "coordinates": [[
            (first.bounds[0], first.bounds[1]), (first.bounds[2], first.bounds[1]),
            (first.bounds[2], first.bounds[3]), (first.bounds[0], first.bounds[3]),
            (first.bounds[0], first.bounds[1]),
        ]],
    }  # fmt: skip
    return Grid.from_geometry(geometry, first.crs, crs, job.grid.resolution)


def scenes_on_grid(scenes: Sequence[Scene], grid: Grid, origin: str = "AOI") -> list[Scene]:
    """The scenes whose footprint overlaps ``grid``; none at all is an error naming the inputs."""
    kept = [s for s in scenes if grid.intersects(s.bounds, s.crs)]
    if not kept:
        sources = ", ".join(sorted({s.source for s in scenes})[:5]) or "(no scenes)"
        raise InputError(origin, f"does not intersect any input scene (checked {len(scenes)}: {sources})")
    return kept
