"""Map writers: class maps, confidence and clear-observation counts as Cloud Optimized GeoTIFFs.

Every raster goes the same way, so a region of any size never needs one whole array in memory:

1. stream the values (numpy, xarray or dask; dask chunks are computed and written one at a time) into a tiled
   staging GeoTIFF beside the output, checking every value on the way (a class map may hold only legend and
   reason codes);
2. build internal overviews in the staging file: ``mode`` for class maps (an overview pixel is always one of the
   codes below it, never an average of codes), ``average`` for confidence and counts (continuous values: a
   zoomed-out view should show the local mean; GDAL's average skips nodata);
3. copy to the final temp file with GDAL's COG driver (tiles 512, DEFLATE + horizontal predictor, the staging
   overviews reused as they are), and once it is closed and fsynced verify it (rio-cogeo's validation, size,
   georeferencing, overviews, and tiles and the smallest overview read back and compared with the staging file;
   GDAL errors that rasterio only logs are raised), then rename it into place (suelo.atomic).

DEFLATE rather than ZSTD: equally compact on class maps and readable by every GDAL build users have (QGIS LTR
packages, ArcGIS, older rasterio wheels).

Class names: GeoTIFF cannot hold a raster attribute table or category names, and rasterio has no API for them,
so GDAL's own side file, ``<name>.tif.aux.xml`` (PAM), is written next to the COG with a thematic RAT (value,
pixel count, name, RGBA) and the category names. GDAL (hence QGIS, gdalinfo, ArcGIS) reads it
automatically. The legend is also embedded in the COG's metadata (tag ``LEGEND``, JSON) so a COG that travels
alone still carries its class names.

Without the ``.qml`` QGIS builds its style from these, and how far that goes depends on its version (see
:func:`pam_xml`): QGIS 3.30 and later build the legend from the RAT, one entry per class; QGIS 3.22 reads only the
colour table and the category names, which are indexed by pixel value, so it lists every value up to the highest,
the classes and reasons by name (256 entries for uint8 maps; 65,536 for uint16 maps, whose reason codes are
65533-65535). The ``.qml`` is what gives every QGIS a legend of only the classes.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from rasterio.enums import Resampling
from rasterio.windows import Window

from suelo.atomic import WriteVerificationError, atomic_output, gdal_errors_raised, temporary_beside
from suelo.legend import Legend
from suelo.reasons import (  # noqa: F401  (reason codes are re-exported: the map writer is where users look)
    LANDCOVER_REASONS,
    REASON_STYLE,
    UINT16_REASONS,
    URBAN_ATLAS_REASONS,
    ZERO_CLASS_REASONS,
    ReasonCodes,
    reasons_for,
)
from suelo.threshold import CONFIDENCE_NODATA

BLOCK = 512
COUNT_NODATA = 65535


COG_OPTIONS = {
    "BLOCKSIZE": BLOCK,
    "COMPRESS": "DEFLATE",
    "PREDICTOR": "YES",
    "LEVEL": 9,
    "BIGTIFF": "IF_SAFER",
    "OVERVIEWS": "FORCE_USE_EXISTING",
    "NUM_THREADS": "ALL_CPUS",
}


class MapEntry(NamedTuple):
    """One value of a map as styled: a legend class or a reason code (color None = transparent, i.e. nodata)."""

    code: int
    name: str
    color: str | None


@dataclass(frozen=True)
class WrittenRaster:
    """What a writer produced: the COG, its sidecars and what the styles and the report need to know."""

    path: Path
    kind: str  # "classes" | "confidence" | "count"
    dtype: str
    nodata: int
    entries: tuple[MapEntry, ...] = ()
    counts: dict[int, int] = field(default_factory=dict)  # pixels per value (class maps only)
    max_value: int = 0
    sidecars: tuple[Path, ...] = ()


# legend + reasons ---------------------------------------------------------------------------------------------


def map_legend(legend: Legend, reasons: ReasonCodes) -> list[MapEntry]:
    """The legend's classes followed by the reason classes; nodata has no color (drawn transparent)."""
    collide = set(legend.codes) & set(reasons.as_tuple())
    if collide:
        raise ValueError(f"reason codes {sorted(collide)} collide with legend classes; choose other reason codes")
    if len(set(reasons.as_tuple())) != len(reasons.as_tuple()):
        raise ValueError(f"reason codes must differ from each other, got {reasons}")
    entries = [MapEntry(c.code, c.name, c.color) for c in legend]
    codes = reasons.to_dict()
    entries += [MapEntry(codes[reason], name, colour) for reason, (name, colour) in REASON_STYLE.items()]
    return entries


def map_dtype(legend: Legend, reasons: ReasonCodes) -> str:
    """``uint8`` when every class and reason code fits in a byte, else ``uint16``."""
    top = max(max(legend.codes), *reasons.as_tuple())
    if min(min(legend.codes), *reasons.as_tuple()) < 0 or top > 65535:
        raise ValueError("map codes must lie in 0..65535")
    return "uint8" if top <= 255 else "uint16"


def hex_to_rgba(color: str | None) -> tuple[int, int, int, int]:
    if color is None:
        return (0, 0, 0, 0)
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16), 255)


# writers ------------------------------------------------------------------------------------------------------


def write_class_map(
    path: str | Path,
    codes: Any,
    grid: Any,
    legend: Legend,
    reasons: ReasonCodes | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str = "land cover class",
) -> WrittenRaster:
    """Class codes (y, x) -> paletted COG + ``.aux.xml`` RAT, both written atomically.

    ``codes`` may be numpy, an xarray DataArray or a dask array; any value that is neither a legend code nor a
    reason code is an error (and nothing is left at ``path``).
    """
    path = Path(path)
    reasons = reasons or reasons_for(legend)
    entries = map_legend(legend, reasons)
    dtype = map_dtype(legend, reasons)
    allowed = np.zeros(65536, dtype=bool)
    allowed[[e.code for e in entries]] = True
    counts = np.zeros(65536, dtype=np.int64)

    def check(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        if block.size and (block.min() < 0 or block.max() > 65535):
            raise ValueError(f"{path.name}: class codes outside 0..65535 ({block.min()}..{block.max()})")
        block = block.astype(np.uint16 if dtype == "uint16" else np.uint8) if block.size else block
        hist = np.bincount(block.ravel(), minlength=65536)
        bad = np.flatnonzero(hist.astype(bool) & ~allowed)
        if bad.size:
            raise ValueError(f"{path.name}: values {bad[:10].tolist()} are neither legend nor reason codes")
        counts[:] += hist
        return block.astype(dtype)

    colormap = {e.code: hex_to_rgba(e.color) for e in entries}
    all_tags = {
        **_provenance_tags(tags),
        "LEGEND": [{"code": e.code, "name": e.name, "color": e.color} for e in entries],
        "REASON_CODES": reasons.to_dict(),
    }
    _write_cog(path, codes, grid, dtype, reasons.nodata, check, Resampling.mode, all_tags, description, colormap)
    hist = {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    aux = path.with_name(path.name + ".aux.xml")
    with atomic_output(aux) as tmp:
        tmp.write_text(pam_xml(entries, hist), encoding="utf-8")
    return WrittenRaster(path, "classes", dtype, reasons.nodata, tuple(entries), hist, max(hist, default=0), (aux,))


def write_confidence(
    path: str | Path,
    confidence: Any,
    grid: Any,
    tags: Mapping[str, Any] | None = None,
    description: str = "confidence (calibrated posterior, percent)",
) -> WrittenRaster:
    """Confidence 0..100 (uint8, 255 = none) -> COG; other values are an error."""
    path = Path(path)

    def check(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        bad = (block != CONFIDENCE_NODATA) & ((block < 0) | (block > 100))
        if bad.any():
            raise ValueError(f"{path.name}: confidence must be 0..100 or {CONFIDENCE_NODATA}, got {block[bad][:5]}")
        return block.astype(np.uint8)

    all_tags = {**_provenance_tags(tags), "UNITS": "percent", "VALID_RANGE": "0 100"}
    _write_cog(path, confidence, grid, "uint8", CONFIDENCE_NODATA, check, Resampling.average, all_tags, description)
    return WrittenRaster(path, "confidence", "uint8", CONFIDENCE_NODATA, max_value=100)


def write_count(
    path: str | Path,
    n_clear: Any,
    grid: Any,
    tags: Mapping[str, Any] | None = None,
    description: str = "clear observations over the period",
) -> WrittenRaster:
    """Clear-observation counts (>= 0; NaN = no data) -> uint16 COG, nodata 65535."""
    path = Path(path)
    top = [0]

    def check(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        missing = np.isnan(block) if block.dtype.kind == "f" else np.zeros(block.shape, bool)
        values = np.where(missing, 0, block)
        if (values < 0).any() or (values >= COUNT_NODATA).any():
            raise ValueError(f"{path.name}: counts must lie in 0..{COUNT_NODATA - 1}")
        if values.size:
            top[0] = max(top[0], int(values.max()))
        return np.where(missing, COUNT_NODATA, values).astype(np.uint16)

    all_tags = {**_provenance_tags(tags), "UNITS": "count"}
    _write_cog(path, n_clear, grid, "uint16", COUNT_NODATA, check, Resampling.average, all_tags, description)
    return WrittenRaster(path, "count", "uint16", COUNT_NODATA, max_value=top[0])


# internals ----------------------------------------------------------------------------------------------------


def _provenance_tags(tags: Mapping[str, Any] | None) -> dict[str, Any]:
    from suelo.provenance import software_versions

    versions = software_versions()
    return {"SOFTWARE": f"suelo {versions['suelo']}", "SOFTWARE_VERSIONS": versions, **dict(tags or {})}


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def overview_factors(height: int, width: int, block: int = BLOCK) -> list[int]:
    """Factors 2, 4, ... until the smallest overview fits in one tile (what GDAL's COG driver would pick)."""
    factors, factor = [], 2
    while max(height, width) / (factor // 2) > block:
        factors.append(factor)
        factor *= 2
    return factors


def _blocks(values: Any, height: int, width: int) -> Iterator[tuple[Window, np.ndarray]]:
    """(window, numpy block) over an in-memory array, one strip of BLOCK rows at a time."""
    for row in range(0, height, BLOCK):
        rows = min(BLOCK, height - row)
        yield Window(0, row, width, rows), np.asarray(values[row : row + rows, :])


class _WindowWriter:
    """``dask.array.store`` target: each computed chunk is checked and written to its window, under a lock
    because a rasterio dataset is not thread-safe."""

    def __init__(self, dst: Any, check: Any) -> None:
        self.dst, self.check, self.lock = dst, check, threading.Lock()
        self.shape = (dst.height, dst.width)
        self.ndim = 2
        self.dtype = np.dtype(dst.dtypes[0])

    def __setitem__(self, key: tuple[slice, slice], value: np.ndarray) -> None:
        rows, cols = key
        with self.lock:
            self.dst.write(self.check(value), 1, window=Window.from_slices(rows, cols, self.shape[0], self.shape[1]))


def _write_cog(
    path: Path,
    values: Any,
    grid: Any,
    dtype: str,
    nodata: int,
    check: Any,
    resampling: Resampling,
    tags: Mapping[str, Any],
    description: str,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> None:
    data = values.data if isinstance(values, xr.DataArray) else values  # keeps dask lazy
    if tuple(data.shape) != (grid.height, grid.width):
        raise ValueError(f"{path.name}: array shape {tuple(data.shape)} differs from the grid {grid.shape}")
    profile = {
        "driver": "GTiff",
        "dtype": dtype,
        "count": 1,
        "height": grid.height,
        "width": grid.width,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "DEFLATE",
        "zlevel": 1,  # staging only: fast; the COG copy compresses hard
        "bigtiff": "IF_SAFER",
    }
    # the staging GeoTIFF is a suelo temporary of its own (suelo.atomic names it, so a resume after a kill
    # removes it); it stays until the COG made from it has been checked against it
    stage = temporary_beside(path, "stage")
    written_tags = {k: _tag_value(v) for k, v in tags.items()}
    verify = functools.partial(
        _verify_cog, name=path.name, profile=profile, stage=stage, tags=written_tags, colormap=bool(colormap)
    )
    try:
        with atomic_output(path, verify=verify) as tmp:
            with gdal_errors_raised(path):
                with rasterio.Env(GDAL_TIFF_OVR_BLOCKSIZE=BLOCK), rasterio.open(stage, "w", **profile) as dst:
                    if _is_dask(data):
                        import dask.array as da

                        # dask types store()'s targets as array-likes; it needs only __setitem__ (its docs say so)
                        da.store(data, _WindowWriter(dst, check), lock=False, compute=True)  # type: ignore[arg-type]
                    else:
                        for window, block in _blocks(data, grid.height, grid.width):
                            dst.write(check(block), 1, window=window)
                    if colormap:
                        dst.write_colormap(1, colormap)
                    dst.set_band_description(1, description)
                    dst.update_tags(**written_tags)
                    factors = overview_factors(grid.height, grid.width)
                    if factors:
                        dst.build_overviews(factors, resampling)
                    dst.update_tags(ns="rio_overview", resampling=resampling.name)
                    dst.update_tags(OVERVIEW_RESAMPLING=resampling.name.upper())
                rasterio.shutil.copy(stage, tmp, driver="COG", RESAMPLING=resampling.name.upper(), **COG_OPTIONS)
            tmp.with_name(tmp.name + ".aux.xml").unlink(missing_ok=True)
    finally:
        for leftover in (stage, stage.with_name(stage.name + ".aux.xml")):
            leftover.unlink(missing_ok=True)


def _is_dask(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "dask"


def _validate_cog(tmp: Path, name: str) -> None:
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _warnings = cog_validate(str(tmp), quiet=True)
    if not valid:
        raise RuntimeError(f"{name}: GDAL wrote an invalid COG: {errors}")


def _verify_cog(
    tmp: Path, name: str, profile: Mapping[str, Any], stage: Path, tags: Mapping[str, str], colormap: bool
) -> None:
    """The COG at ``tmp`` (closed and fsynced) is what the staging file holds, before it is published.

    A valid COG layout (rio-cogeo), the size, dtype, georeferencing and overviews of ``profile``, the tags (legend,
    provenance) and palette written (a staging file truncated by a full disk loses its metadata first), the same
    values as the staging file in the first and the last full-resolution tile (the last one is the end of the file
    in a COG: a truncated write loses it first) and in the smallest overview; not every tile, so that verifying
    stays cheap next to writing (benchmarks/pipeline.py measures it). Block rasters, which are small, are read back
    in full and compared with what was written (suelo.orchestrate).
    """
    _validate_cog(tmp, name)
    height, width = profile["height"], profile["width"]
    factors = overview_factors(height, width)
    with rasterio.open(tmp) as cog, rasterio.open(stage) as ref:
        found = (cog.driver, cog.count, cog.dtypes[0], cog.height, cog.width, cog.nodata)
        wanted = ("GTiff", 1, profile["dtype"], height, width, profile["nodata"])
        if found != wanted:
            raise WriteVerificationError(tmp, f"driver, bands, dtype, size and nodata {found} instead of {wanted}")
        if cog.crs != profile["crs"] or not cog.transform.almost_equals(profile["transform"]):
            raise WriteVerificationError(tmp, "the georeferencing differs from the grid")
        if cog.overviews(1) != factors:
            raise WriteVerificationError(tmp, f"overviews {cog.overviews(1)} instead of {factors}")
        found_tags = cog.tags()
        lost = sorted(k for k, v in tags.items() if found_tags.get(k) != v)
        if lost:
            raise WriteVerificationError(tmp, f"tags {lost[:5]} were not written")
        if colormap:
            try:
                cog.colormap(1)
            except ValueError as exc:
                raise WriteVerificationError(tmp, "the palette was not written") from exc
        last_row, last_col = (height - 1) // BLOCK * BLOCK, (width - 1) // BLOCK * BLOCK
        for row, col in {(0, 0), (last_row, last_col)}:
            window = Window(col, row, min(BLOCK, width - col), min(BLOCK, height - row))
            if not np.array_equal(cog.read(1, window=window), ref.read(1, window=window)):
                raise WriteVerificationError(tmp, f"tile at row {row}, column {col} differs from what was written")
    if factors:
        level = len(factors) - 1
        with rasterio.open(tmp, overview_level=level) as cog, rasterio.open(stage, overview_level=level) as ref:
            if not np.array_equal(cog.read(1), ref.read(1)):
                raise WriteVerificationError(tmp, "the smallest overview differs from what was written")


def pam_xml(entries: Sequence[MapEntry], counts: Mapping[int, int]) -> str:
    """GDAL PAM side file with a thematic raster attribute table and the category names.

    The RAT (one row per legend and reason code: Value with usage MinMax, pixel Count, Class_Name, Red, Green, Blue,
    Alpha) is what GDAL, gdalinfo, ArcGIS and QGIS 3.30+ show as the map's classes.

    Category names are GDAL's older, index-based form: entry ``i`` names pixel value ``i``. QGIS 3.22 labels its
    default paletted style (one class per colour-table entry, the RAT unread) with them, so both dtypes carry them:
    a uint16 map's list runs to its highest reason code, 65535. No PAM content makes QGIS 3.22 list only the classes
    (its colour table is index-based as well, and a GeoTIFF palette has 2**bits entries), so that takes the ``.qml``.
    Runs of unnamed values are written as empty ``<Category/>`` elements on one line each: about 0.7 MB for uint16
    (GDAL reads it in milliseconds), not 65,536 indented lines.
    """
    ordered = sorted(entries, key=lambda e: e.code)
    # GDALRATFieldType: 0 integer, 2 string; GDALRATFieldUsage: 1 PixelCount, 2 Name, 5 MinMax, 6-9 RGBA.
    fields = [("Value", 0, 5), ("Count", 0, 1), ("Class_Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7)]
    fields += [("Blue", 0, 8), ("Alpha", 0, 9)]
    lines = ["<PAMDataset>", '  <PAMRasterBand band="1">', "    <CategoryNames>"]
    previous = -1
    for e in ordered:
        if e.code - previous > 1:
            lines.append("      " + "<Category/>" * (e.code - previous - 1))
        lines.append(f"      <Category>{escape(e.name)}</Category>")
        previous = e.code
    lines.append("    </CategoryNames>")
    lines.append('    <GDALRasterAttributeTable tableType="thematic">')
    for i, (name, ftype, usage) in enumerate(fields):
        lines.append(
            f'      <FieldDefn index="{i}"><Name>{name}</Name><Type>{ftype}</Type><Usage>{usage}</Usage></FieldDefn>'
        )
    for i, e in enumerate(ordered):
        r, g, b, a = hex_to_rgba(e.color)
        cells = [e.code, counts.get(e.code, 0), escape(e.name), r, g, b, a]
        lines.append(f'      <Row index="{i}">' + "".join(f"<F>{c}</F>" for c in cells) + "</Row>")
    lines += ["    </GDALRasterAttributeTable>", "  </PAMRasterBand>", "</PAMDataset>", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class MapSet:
    """One map and its companions as written: what the run report and the manifest need."""

    name: str
    classes: WrittenRaster
    confidence: WrittenRaster | None
    count: WrittenRaster | None
    item: Path
    legend: Legend
    reasons: ReasonCodes
    extra_assets: Mapping[str, Path] = field(default_factory=dict)  # other outputs the Item lists (GeoPackage, ...)

    @property
    def files(self) -> list[Path]:
        paths = [self.classes.path, *self.classes.sidecars, self.classes.path.with_suffix(".qml"), self.item]
        for extra in (self.confidence, self.count):
            if extra is not None:
                paths += [extra.path, extra.path.with_suffix(".qml")]
        return paths + [p for p in self.extra_assets.values() if p not in paths]


def write_map_set(
    folder: str | Path,
    name: str,
    codes: Any,
    grid: Any,
    legend: Legend,
    datetime_range: tuple[Any, Any],
    reasons: ReasonCodes | None = None,
    confidence: Any = None,
    n_clear: Any = None,
    tags: Mapping[str, Any] | None = None,
    inputs: Sequence[Any] = (),
    description: str = "land cover class",
    extra_assets: Mapping[str, str | Path] | None = None,
) -> MapSet:
    """``<name>.tif`` + ``.tif.aux.xml`` + ``.qml`` + ``.json`` and, when given, ``<name>_confidence.tif`` and
    ``<name>_nclear.tif`` with their styles: the output layout of DESIGN.md for one map.

    ``datetime_range``: the period's first and last day. ``inputs``: the sources the map was made from (each
    scene's ``Scene.link()``, a ``{"href", "title"}`` mapping or a plain path or URL), the Item's ``derived_from``
    links. ``extra_assets``:
    other files of this map already written (key -> path, e.g. ``{"vectors": <name>.gpkg}``), listed in the Item as
    ``data`` assets and in :attr:`MapSet.files`.
    """
    from suelo.stac_out import COG_MEDIA_TYPE, VECTOR_SUFFIXES, RasterBand, StacAsset, vector_crs, write_stac_item
    from suelo.style import write_qml

    folder = Path(folder)
    extras = {key: Path(path) for key, path in (extra_assets or {}).items()}
    missing = [f"{key}: {path}" for key, path in extras.items() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"extra assets of map {name} do not exist ({'; '.join(missing)})")
    reserved = {"data", "style", "attribute_table", "confidence", "confidence_style", "nclear", "nclear_style"}
    if reserved & set(extras):
        raise ValueError(f"extra asset keys {sorted(reserved & set(extras))} are the map set's own")
    reasons = reasons or reasons_for(legend)
    tags = dict(tags or {})
    classes = write_class_map(folder / f"{name}.tif", codes, grid, legend, reasons, tags, description)
    write_qml(classes.path.with_suffix(".qml"), classes.entries, "paletted")
    assets: dict[str, StacAsset] = {
        "data": StacAsset(
            classes.path,
            "Class map",
            ("data",),
            COG_MEDIA_TYPE,
            description=description,
            band=RasterBand(classes.dtype, classes.nodata),
            classes=classes.entries,
            counts=classes.counts,
        ),
        "style": StacAsset(
            classes.path.with_suffix(".qml"), "QGIS style (loaded automatically by QGIS)", ("metadata",)
        ),
        "attribute_table": StacAsset(
            classes.sidecars[0], "GDAL raster attribute table and category names (PAM)", ("metadata",)
        ),
    }
    conf = count = None
    if confidence is not None:
        conf = write_confidence(folder / f"{name}_confidence.tif", confidence, grid, tags)
        write_qml(conf.path.with_suffix(".qml"), kind="singlebandpseudocolor", minimum=0, maximum=100, label="%")
        band = RasterBand(conf.dtype, conf.nodata, unit="percent", scale=1.0, offset=0.0)
        assets["confidence"] = StacAsset(
            conf.path, "Confidence", ("data", "quality"), COG_MEDIA_TYPE, "calibrated posterior, percent", band
        )
        assets["confidence_style"] = StacAsset(
            conf.path.with_suffix(".qml"), "QGIS style of the confidence", ("metadata",)
        )
    if n_clear is not None:
        count = write_count(folder / f"{name}_nclear.tif", n_clear, grid, tags)
        write_qml(count.path.with_suffix(".qml"), kind="singlebandpseudocolor", minimum=0, maximum=count.max_value)
        band = RasterBand(count.dtype, count.nodata)
        assets["nclear"] = StacAsset(
            count.path, "Clear observations", ("data", "quality"), COG_MEDIA_TYPE, "over the period", band
        )
        assets["nclear_style"] = StacAsset(
            count.path.with_suffix(".qml"), "QGIS style of the clear observations", ("metadata",)
        )
    for key, path in extras.items():
        crs = vector_crs(path) if path.suffix.lower() in VECTOR_SUFFIXES else None  # when not the grid's, said
        title = f"{key.replace('_', ' ').capitalize()} ({path.suffix.lstrip('.') or 'file'})"
        assets[key] = StacAsset(path, title, ("data",), crs=crs)
    properties = {f"suelo:{k.lower()}": v for k, v in tags.items()}
    item = write_stac_item(classes.path.with_suffix(".json"), grid, datetime_range, assets, inputs, properties)
    return MapSet(name, classes, conf, count, item, legend, reasons, extras)
