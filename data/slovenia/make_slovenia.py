"""Rebuild ``data/slovenia/`` from a local copy of eo-learn's example data (TestEOPatch + REFERENCE_SCENES.npy).

Usage::

    .venv/bin/python data/slovenia/make_slovenia.py /path/to/eolearn_testeopatch

The folder must hold ``REFERENCE_SCENES.npy`` (5, 101, 100, 13) float32 Sentinel-2 L1C TOA reflectance and
``TestEOPatch/`` (``bbox.geojson``, ``timestamps.json``, ``mask_timeless/LULC.npy``, ``vector_timeless/LULC.gpkg``).
See ``data/slovenia/README.md`` for what is written and why.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

HERE = Path(__file__).resolve().parent
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
# REFERENCE_SCENES.npy scene i is TestEOPatch timestamp REF_TIME_INDEX[i] (verified upstream: NDVI from B04/B08
# equals the patch's NDVI feature exactly)
REF_TIME_INDEX = (2, 1, 4, 3, 0)
QUANTIFICATION = 10000
NODATA = 0
LULC_NAMES = {1: "cultivated land", 2: "forest", 3: "grassland", 4: "shrubland", 8: "artificial surface"}


def _cog(
    data: np.ndarray, profile: dict, path: Path, descriptions: tuple[str, ...], tags: dict, cog: dict, scale: float
) -> None:
    """Write ``data`` (bands, rows, cols) as a validated COG at ``path`` (rio-cogeo copies descriptions, tags and
    the GDAL scale/offset of every band)."""
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(data)
            tmp.descriptions = descriptions
            tmp.update_tags(**tags)
            tmp.scales = (scale,) * len(descriptions)
            tmp.offsets = (0.0,) * len(descriptions)
        with mem.open() as src:
            cog_translate(src, str(path), cog, in_memory=True, quiet=True)
    with rasterio.open(path) as check:
        assert check.descriptions == descriptions and check.tags()["SOURCE"] == tags["SOURCE"], path
    ok, errors, _warnings = cog_validate(str(path))
    if not ok:
        raise SystemExit(f"{path}: not a valid COG: {errors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with REFERENCE_SCENES.npy and TestEOPatch/")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    args = parser.parse_args(argv)
    src, out = args.source, args.out
    patch = src / "TestEOPatch"
    out.mkdir(parents=True, exist_ok=True)

    bbox = json.loads((patch / "bbox.geojson").read_text())
    xs = [p[0] for p in bbox["coordinates"][0]]
    ys = [p[1] for p in bbox["coordinates"][0]]
    timestamps = json.loads((patch / "timestamps.json").read_text())
    scenes = np.load(src / "REFERENCE_SCENES.npy")
    lulc = np.load(patch / "mask_timeless" / "LULC.npy")[..., 0]
    n, h, w, nb = scenes.shape
    assert (n, nb) == (len(REF_TIME_INDEX), len(BANDS)) and lulc.shape == (h, w), (scenes.shape, lulc.shape)
    # the patch's own georeference (Sentinel Hub delivered 100 x 101 px over this bbox: ~9.995 x 9.997 m pixels)
    transform = from_bounds(min(xs), min(ys), max(xs), max(ys), w, h)
    base = {"driver": "GTiff", "width": w, "height": h, "crs": "EPSG:32633", "transform": transform}

    dn = np.round(scenes.astype(np.float64) * QUANTIFICATION)
    exact = bool((dn.astype(np.float32) / np.float32(QUANTIFICATION) == scenes).all())
    exact = exact and bool((dn >= 1).all() and (dn <= 65535).all())  # 0 stays free for nodata
    if exact:
        data, dtype = dn.astype(np.uint16), "uint16"
        cog = {**cog_profiles.get("deflate"), "predictor": 2, "blockxsize": 128, "blockysize": 128}
        units = f"L1C TOA reflectance x {QUANTIFICATION} (reflectance = DN / {QUANTIFICATION}), 0 = no data"
    else:
        data, dtype = scenes.astype(np.float32), "float32"
        cog = {**cog_profiles.get("deflate"), "predictor": 3, "blockxsize": 128, "blockysize": 128}
        units = "L1C TOA reflectance 0..1"
    print(f"values exact multiples of 1/{QUANTIFICATION}: {exact} -> {dtype}")

    written = []
    for i, ti in enumerate(REF_TIME_INDEX):
        date = timestamps[ti][:10]
        path = out / f"S2L1C_{date}.tif"
        profile = {**base, "count": nb, "dtype": dtype, "nodata": NODATA if exact else None}
        tags = {
            "SENSING_TIME": timestamps[ti],
            "PRODUCT_LEVEL": "L1C",
            "UNITS": units,
            "SOURCE": f"eo-learn example_data REFERENCE_SCENES.npy scene {i} (TestEOPatch timestamp {ti})",
        }
        # GDAL scale so QGIS shows reflectance; the suelo reader takes the radiometry from the job spec instead
        scale = 1 / QUANTIFICATION if exact else 1.0
        _cog(np.moveaxis(data[i], -1, 0), profile, path, BANDS, tags, cog, scale)
        written.append(path)

    label_profile = {**base, "count": 1, "dtype": "uint16", "nodata": 0}
    label_cog = {**cog_profiles.get("deflate"), "predictor": 2, "blockxsize": 128, "blockysize": 128}
    classes = ",".join(f"{k}={v}" for k, v in LULC_NAMES.items())
    path = out / "LULC.tif"
    tags = {"CLASSES": f"0=no data,{classes}", "SOURCE": "eo-learn example_data TestEOPatch mask_timeless/LULC.npy"}
    _cog(lulc[None].astype(np.uint16), label_profile, path, ("LULC_ID",), tags, label_cog, 1.0)
    written.append(path)

    import geopandas as gpd

    gdf = gpd.read_file(patch / "vector_timeless" / "LULC.gpkg")
    gdf = gdf[gdf["LULC_ID"].isin(list(LULC_NAMES))]  # drops the polygons with LULC_ID 0 (no class)
    gdf = gdf.assign(LULC_ID=gdf["LULC_ID"].astype("int32"), LULC_NAME=gdf["LULC_ID"].map(LULC_NAMES))
    path = out / "LULC.gpkg"
    path.unlink(missing_ok=True)
    gdf[["LULC_ID", "LULC_NAME", "geometry"]].reset_index(drop=True).to_file(path, layer="LULC", driver="GPKG")
    written.append(path)

    total = sum(p.stat().st_size for p in written)
    for p in written:
        print(f"  {p.name}: {p.stat().st_size / 1024:.0f} KiB")
    print(f"total {total / 1e6:.2f} MB in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
