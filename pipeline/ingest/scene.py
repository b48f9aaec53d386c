"""The one interface every reader produces: a :class:`Scene`, and reading a scene onto a :class:`Grid`.

Readers (SAFE, STAC, GeoTIFF) only discover scenes and their metadata. Pixels are read here, the same way for all
of them, so nothing downstream knows which reader a scene came from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT

from pipeline.errors import InputError
from pipeline.grid import Bounds, Grid


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


RESAMPLING = {
    "nearest": Resampling.nearest,
    "bilinear": Resampling.bilinear,
    "cubic": Resampling.cubic,
    "average": Resampling.average,
}


def read_on_grid(ref: BandRef, grid: Grid, resampling: str, nodata: float | None, what: str = "band") -> np.ndarray:
    """Read one band warped onto ``grid`` as float32, with NaN where the source has no data or no coverage."""
    try:
        with rasterio.open(ref.path) as src:
            if ref.index > src.count:
                raise InputError(ref.name_for_errors, f"{what} index {ref.index} but the file has {src.count} bands")
            if src.crs is None:
                raise InputError(ref.name_for_errors, f"{what} has no coordinate reference system")
            src_nodata = nodata if nodata is not None else src.nodata
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
    return values.filled(np.nan).astype(np.float32, copy=False)


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
