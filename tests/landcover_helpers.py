"""Tiny cubes for the land-cover tests."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr
from rasterio.transform import Affine

from suelo.grid import Grid

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
# a 10 m grid in UTM 31N near Liege (50.63 N, 5.33 E)
GRID = Grid(crs=__import__("rasterio.crs", fromlist=["CRS"]).CRS.from_epsg(32631),
            transform=Affine(10.0, 0.0, 664000.0, 0.0, -10.0, 5612000.0), height=4, width=5)  # fmt: skip


def tiny_cube(values: np.ndarray | None = None, grid: Grid = GRID, start: str = "2021-01") -> xr.Dataset:
    """Cube whose reflectance at (t, b, y, x) is ``(10 * y + x) / 100 + b / 1000`` unless ``values`` is given."""
    t = 12
    if values is None:
        y, x = np.mgrid[: grid.height, : grid.width]
        values = np.broadcast_to(
            ((10 * y + x) / 100)[None, None] + (np.arange(len(BANDS)) / 1000)[None, :, None, None],
            (t, len(BANDS), grid.height, grid.width),
        ).astype(np.float32)
    valid = np.isfinite(values[:, 0])
    times = np.arange(np.datetime64(start, "M"), np.datetime64(start, "M") + t).astype("datetime64[ns]")
    return xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), np.asarray(values, dtype=np.float32)),
            "valid": (("time", "y", "x"), valid),
        },
        coords={"time": times, "band": BANDS, "y": grid.y_coords(), "x": grid.x_coords()},
        attrs={"grid": json.dumps(grid.to_dict()), "crs": grid.crs.to_string(), "scenes": "[]"},
    )
