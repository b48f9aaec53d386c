"""Build the embedded Belgian sample (``data/sample/belgium/``) from the ESA WorldCereal test cube.

The source NetCDF holds real Sentinel-2 L2A monthly median composites (cloud-masked, harmonised
reflectance x 10000, 65535 = no data) on a 100 x 100 px, 10 m grid in EPSG:32631. This writes one single-band
COG per month and band plus a STAC ItemCollection describing them, so the sample exercises the pipeline's
ordinary STAC reader.

Re-runnable: the output folder is rebuilt from scratch each time.

    python data/sample/make_sample.py [path/to/worldcereal_preprocessed_inputs.nc]
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.warp import transform_geom
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
SOURCE_NAME = "worldcereal_preprocessed_inputs.nc"
DEFAULT_NC = PROJECT.parent / "shared/data/worldcereal_extractions/raster_cube" / SOURCE_NAME
OUT = HERE / "belgium"
NODATA = 65535

# name, common name, centre wavelength and FWHM in micrometres (Sentinel-2 MSI, S2A values rounded)
BANDS: dict[str, tuple[str, float, float]] = {
    "B02": ("blue", 0.49, 0.098),
    "B03": ("green", 0.56, 0.045),
    "B04": ("red", 0.665, 0.038),
    "B05": ("rededge", 0.704, 0.019),
    "B06": ("rededge", 0.74, 0.018),
    "B07": ("rededge", 0.783, 0.028),
    "B08": ("nir", 0.842, 0.145),
    "B11": ("swir16", 1.61, 0.143),
    "B12": ("swir22", 2.19, 0.242),
}
EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
]
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("netcdf", nargs="?", type=Path, default=DEFAULT_NC)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.netcdf.is_file():
        parser.error(f"{args.netcdf}: no such file")

    cube, times, crs, transform = read_cube(args.netcdf)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)

    items = []
    for t, day in enumerate(times):
        month = {band: values[t] for band, values in cube.items()}
        if all((v == NODATA).all() for v in month.values()):
            print(f"{day:%Y-%m}: all no data, skipped")
            continue
        folder = args.out / f"{day:%Y-%m}"
        folder.mkdir()
        for band, values in month.items():
            write_cog(folder / f"{band}.tif", values, crs, transform, band)
        items.append(stac_item(day, folder.name, crs, transform, values.shape))
        print(f"{day:%Y-%m}: {len(month)} bands")

    collection = {"type": "FeatureCollection", "features": items}
    (args.out / "items.json").write_text(json.dumps(collection, indent=1) + "\n", encoding="utf-8")
    write_auxiliary(args.netcdf, args.out, times, crs, transform)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(items)} items, {size / 1e6:.2f} MB in {args.out}")
    return 0


def read_cube(path: Path) -> tuple[dict[str, np.ndarray], list[dt.date], CRS, Affine]:
    """S2 bands as uint16 (t, y, x), the time steps, and the grid (derived from, and checked on, x/y)."""
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)  # raw stored integers; the unsigned reinterpretation is done here
        cube: dict[str, np.ndarray] = {}
        for band in BANDS:
            var = ds.variables[f"S2-L2A-{band}"]
            values = np.asarray(var[:])
            if str(getattr(var, "_Unsigned", "false")).lower() == "true":
                values = values.view(np.uint16)  # stored as int16 with _Unsigned (CF convention for uint16)
            cube[band] = values.astype(np.uint16, copy=False)
            if var.dimensions != ("t", "y", "x"):
                raise SystemExit(f"{path}: {var.name} has dimensions {var.dimensions}, expected (t, y, x)")
        grid_mapping = ds.variables[ds.variables["S2-L2A-B02"].grid_mapping]
        crs = CRS.from_wkt(grid_mapping.crs_wkt)
        x = np.asarray(ds.variables["x"][:], dtype=float)
        y = np.asarray(ds.variables["y"][:], dtype=float)
        t = ds.variables["t"]
        since = re.fullmatch(r"days since (\d{4})-(\d{2})-(\d{2}).*", t.units)
        if since is None:
            raise SystemExit(f"{path}: unexpected time units {t.units!r}")
        epoch = dt.date(*map(int, since.groups()))
        times = [epoch + dt.timedelta(days=int(d)) for d in np.asarray(t[:])]

    dx, dy = np.diff(x), np.diff(y)
    if not (np.allclose(dx, dx[0]) and np.allclose(dy, dy[0]) and dx[0] > 0 and dy[0] < 0):
        raise SystemExit(f"{path}: x/y coordinates are not a regular north-up grid")
    # CF coordinates are pixel centres, so the grid's outer corner is half a pixel further out.
    transform = Affine(dx[0], 0.0, x[0] - dx[0] / 2, 0.0, dy[0], y[0] - dy[0] / 2)
    return cube, times, crs, transform


def write_cog(path: Path, values: np.ndarray, crs: CRS, transform: Affine, band: str) -> None:
    height, width = values.shape
    profile = {
        "driver": "GTiff", "dtype": "uint16", "count": 1, "height": height, "width": width,
        "crs": crs, "transform": transform, "nodata": NODATA,
    }  # fmt: skip
    cog = cog_profiles.get("deflate")
    cog.update(predictor=2, zlevel=9, blockxsize=128, blockysize=128)
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(values, 1)
            dst.set_band_description(1, band)
            # Same meaning as the STAC raster:bands, for GIS users opening the file directly.
            dst.scales, dst.offsets = (0.0001,), (0.0,)
        with memory.open() as src:
            cog_translate(src, str(path), cog, quiet=True, overview_level=0, in_memory=True)
    valid, errors, _warnings = cog_validate(str(path))
    if not valid:
        raise SystemExit(f"{path}: not a valid COG: {errors}")


def stac_item(day: dt.date, folder: str, crs: CRS, transform: Affine, shape: tuple[int, int]) -> dict[str, Any]:
    height, width = shape
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * width, top + transform.e * height
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    geometry = transform_geom(crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}, precision=7)
    lons = [p[0] for p in geometry["coordinates"][0]]
    lats = [p[1] for p in geometry["coordinates"][0]]
    last = calendar.monthrange(day.year, day.month)[1]
    assets = {
        band: {
            "href": f"{folder}/{band}.tif",
            "type": COG_MEDIA_TYPE,
            "title": f"{band} ({common}) monthly median",
            "roles": ["data", "reflectance"],
            "eo:bands": [
                {
                    "name": band,
                    "common_name": common,
                    "center_wavelength": centre,
                    "full_width_half_max": fwhm,
                }
            ],
            "raster:bands": [
                {
                    "data_type": "uint16",
                    "nodata": NODATA,
                    "spatial_resolution": transform.a,
                    # Already harmonised reflectance x 1e4: the baseline 04.00 offset is applied upstream.
                    "scale": 0.0001,
                    "offset": 0,
                }
            ],
        }
        for band, (common, centre, fwhm) in BANDS.items()
    }
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": EXTENSIONS,
        "id": f"worldcereal-s2-l2a-monthly-belgium-{day:%Y-%m}",
        "geometry": geometry,
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": {
            "title": f"Sentinel-2 L2A monthly median composite {day:%Y-%m}, Belgium (ESA WorldCereal)",
            "description": (
                "Monthly median composite of cloud-masked Sentinel-2 Level-2A surface reflectance produced "
                "by the ESA WorldCereal preprocessing (openEO). Pixels masked as cloud/shadow in every "
                "acquisition of the month are no data (65535); there is no SCL layer. Values are harmonised "
                "reflectance x 10000 (offset already applied)."
            ),
            "processing:level": "L2A",  # suelo reads the level from metadata, never by default
            "datetime": f"{day:%Y-%m-%d}T00:00:00Z",
            "start_datetime": f"{day:%Y-%m-%d}T00:00:00Z",
            "end_datetime": f"{day:%Y-%m}-{last:02d}T23:59:59Z",
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "license": "MIT",
            "providers": [
                {
                    "name": "ESA WorldCereal",
                    "roles": ["producer", "processor", "licensor"],
                    "url": "https://github.com/WorldCereal/worldcereal-classification",
                },
                {
                    "name": "Copernicus / ESA (Sentinel-2)",
                    "roles": ["producer"],
                    "url": "https://sentinel.esa.int",
                },
            ],
            "worldcereal:composite": "monthly median",
            "worldcereal:cloud_masked": True,
            "worldcereal:source_file": f"tests/worldcerealtests/testresources/{SOURCE_NAME}",
            "attribution": "Contains modified Copernicus Sentinel data 2020-2021",
            "proj:epsg": crs.to_epsg(),
            "proj:bbox": [left, bottom, right, top],
            "proj:shape": [height, width],
            "proj:transform": list(transform)[:6],
        },
        "links": [
            {
                "rel": "license",
                "href": "https://github.com/WorldCereal/worldcereal-classification/blob/main/LICENSE",
                "type": "text/plain",
            }
        ],
        "assets": assets,
    }


# -- Sentinel-1, terrain and weather of the same cube (issue 19) ----------------------------------------------------
#
# WorldCereal stores them as uint16 (openEO "compressed" values; CF _Unsigned int16 here). Decodings, as the
# WorldCereal/openEO-GFMAP preprocessing encodes them (checked against their source: see suelo.sample_formats,
# which decodes the same columns of the point files):
# - S1-SIGMA0-VV/VH: sigma0 backscatter in dB = 20 * log10(DN) - 83 (DN 0 = no data);
# - elevation: metres (integers); slope: degrees (integers) - suelo computes slope from the elevation itself, so the
#   shipped slope is not used;
# - AGERA5-TMEAN: 2 m mean air temperature in K x 100; AGERA5-PRECIP: the month's precipitation sum in mm x 100.
S1_POLARIZATIONS = ("VV", "VH")
WEATHER_FILE = "agera5_monthly.nc"


def read_auxiliary(path: Path) -> dict[str, np.ndarray]:
    """The raw uint16 S1, elevation and AgERA5 variables (t, y, x) of the WorldCereal cube."""
    names = {"VV": "S1-SIGMA0-VV", "VH": "S1-SIGMA0-VH", "elevation": "elevation", "precipitation": "AGERA5-PRECIP",
             "temperature": "AGERA5-TMEAN"}  # fmt: skip
    out = {}
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        for key, name in names.items():
            var = ds.variables[name]
            values = np.asarray(var[:])
            if str(getattr(var, "_Unsigned", "false")).lower() == "true":
                values = values.view(np.uint16)
            out[key] = values.astype(np.uint16, copy=False)
    return out


def write_float_cog(
    path: Path, planes: dict[str, np.ndarray], crs: CRS, transform: Affine, tags: dict[str, str]
) -> None:
    """A float32 COG, one band per entry (its description the key), NaN = no data, ``tags`` as dataset metadata."""
    first = next(iter(planes.values()))
    profile = {
        "driver": "GTiff", "dtype": "float32", "count": len(planes), "height": first.shape[0],
        "width": first.shape[1], "crs": crs, "transform": transform, "nodata": float("nan"),
    }  # fmt: skip
    cog = cog_profiles.get("deflate")
    cog.update(predictor=3, zlevel=9, blockxsize=128, blockysize=128)
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            for i, (name, values) in enumerate(planes.items(), start=1):
                dst.write(values.astype(np.float32), i)
                dst.set_band_description(i, name)
            dst.update_tags(**tags)
        with memory.open() as src:
            cog_translate(src, str(path), cog, quiet=True, overview_level=0, in_memory=True)
    valid, errors, _warnings = cog_validate(str(path))
    if not valid:
        raise SystemExit(f"{path}: not a valid COG: {errors}")


def write_auxiliary(netcdf: Path, out: Path, times: list[dt.date], crs: CRS, transform: Affine) -> None:
    """Sentinel-1 monthly backscatter as STAC items of COGs (s1/items.json), the DEM as a COG (dem/), the AgERA5
    months as a CF NetCDF (weather/): the inputs of the ``sentinel1``, ``dem`` and ``weather`` job inputs."""
    raw = read_auxiliary(netcdf)
    s1_items = []
    for t, day in enumerate(times):
        planes = {}
        for pol in S1_POLARIZATIONS:
            dn = raw[pol][t].astype(np.float64)
            planes[pol] = np.where(dn > 0, 20 * np.log10(np.maximum(dn, 1)) - 83, np.nan)
        folder = out / "s1" / f"{day:%Y-%m}"
        folder.mkdir(parents=True)
        for pol, values in planes.items():
            write_float_cog(folder / f"{pol}.tif", {pol: values}, crs, transform, {"UNIT": "dB"})
        s1_items.append(s1_item(day, crs, transform, next(iter(planes.values())).shape))
    collection = {"type": "FeatureCollection", "features": s1_items}
    (out / "s1" / "items.json").write_text(json.dumps(collection, indent=1) + "\n", encoding="utf-8")

    (out / "dem").mkdir()
    elevation = raw["elevation"][0].astype(np.float64)  # static: every time step holds the same DEM
    write_float_cog(out / "dem" / "elevation.tif", {"elevation": elevation}, crs, transform, {"UNITS": "m"})

    import xarray as xr

    (out / "weather").mkdir()
    # AgERA5 is a 0.1 degree product: the cube holds one value per month over this 1 km patch
    temperature = np.array([raw["temperature"][t].astype(np.float64).mean() / 100 for t in range(len(times))])
    precipitation = np.array([raw["precipitation"][t].astype(np.float64).mean() / 100 for t in range(len(times))])
    lon_lat = transform_geom(crs, "EPSG:4326", {"type": "Point", "coordinates": [transform.c + 500, transform.f - 500]})
    lon, lat = lon_lat["coordinates"]
    lats, lons = np.array([lat + 0.1, lat, lat - 0.1]), np.array([lon - 0.1, lon, lon + 0.1])
    ones = np.ones((len(times), 3, 3))
    weather = xr.Dataset(
        {
            "Temperature_Air_2m_Mean_24h": (("time", "lat", "lon"), temperature[:, None, None] * ones,
                                            {"units": "K", "long_name": "2 m air temperature, monthly mean"}),
            "Precipitation_Flux": (("time", "lat", "lon"), precipitation[:, None, None] * ones,
                                   {"units": "mm month-1", "long_name": "total precipitation, monthly sum"}),
        },
        coords={"time": np.array([np.datetime64(d, "ns") for d in times]), "lat": lats, "lon": lons},
        attrs={"title": "AgERA5 monthly (ESA WorldCereal test cube, Belgium)", "Conventions": "CF-1.8",
               "source": f"tests/worldcerealtests/testresources/{SOURCE_NAME}"},
    )  # fmt: skip
    weather["lat"].attrs.update(units="degrees_north", standard_name="latitude")
    weather["lon"].attrs.update(units="degrees_east", standard_name="longitude")
    weather.to_netcdf(
        out / "weather" / WEATHER_FILE,
        encoding={"time": {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian"}},
    )
    print(f"S1: {len(s1_items)} months, DEM, weather: {len(times)} months")


def s1_item(day: dt.date, crs: CRS, transform: Affine, shape: tuple[int, int]) -> dict[str, Any]:
    item = stac_item(day, "", crs, transform, shape)
    last = calendar.monthrange(day.year, day.month)[1]
    item["id"] = f"worldcereal-s1-sigma0-monthly-belgium-{day:%Y-%m}"
    item["stac_extensions"] = [
        "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    ]
    props = item["properties"]
    for key in ("processing:level", "worldcereal:cloud_masked", "instruments"):
        props.pop(key, None)
    props.update({
        "title": f"Sentinel-1 sigma0 monthly mean {day:%Y-%m}, Belgium (ESA WorldCereal)",
        "description": "Monthly composite of terrain-corrected Sentinel-1 sigma0 backscatter (VV, VH) produced by "
                       "the ESA WorldCereal preprocessing (openEO), in dB (decoded from its uint16 encoding).",
        "constellation": "sentinel-1", "instruments": ["c-sar"], "sar:instrument_mode": "IW",
        "sar:frequency_band": "C", "sar:polarizations": list(S1_POLARIZATIONS),
        "worldcereal:composite": "monthly mean",
        "end_datetime": f"{day:%Y-%m}-{last:02d}T23:59:59Z",
        "attribution": "Contains modified Copernicus Sentinel data 2020-2021",
    })  # fmt: skip
    item["assets"] = {
        pol.lower(): {
            "href": f"{day:%Y-%m}/{pol}.tif", "type": COG_MEDIA_TYPE, "title": f"{pol} sigma0 (dB)",
            "roles": ["data", "backscatter"],
            "raster:bands": [{"data_type": "float32", "nodata": "nan", "unit": "dB",
                              "spatial_resolution": transform.a}],
        }
        for pol in S1_POLARIZATIONS
    }  # fmt: skip
    return item


if __name__ == "__main__":
    sys.exit(main())
