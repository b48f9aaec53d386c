"""SYNTHETIC urban scenes for tests, demos and sanity-check training. Nothing here is real imagery.

A generated scene is a plausible small city on a 10 m grid, with a monthly Sentinel-2 L2A cube in exactly the
format of ``suelo.composite.build_cube`` and its reference labels (raster and polygons) in Urban Atlas 2018
codes. It exists so that the segmenter, the tiler, the sieve and the vector writer can be tested end to end with a
known truth; numbers measured on it say the code works, not how well a model does on real cities.

How a scene is made (all random choices from one ``numpy`` generator seeded by ``seed``):

- Layout: a few major roads (3 px wide, "fast transit roads" 12210) and a denser grid of minor roads (1-2 px,
  "other roads" 12220) cut the area into blocks; one railway line (12230) and one meandering river (50000) cross
  it. Blocks are assigned classes by distance from a city centre: continuous and discontinuous urban fabric,
  industrial/commercial, construction sites, green urban areas and sports fields in town; arable fields,
  pastures and forest outside, rural blocks split into parcels.
- Spectra: every pixel is a mixture of endmembers (vegetation, forest canopy, bare soil, bright roofs, concrete,
  asphalt, water) with typical L2A reflectance for B02..B12. Built-up fractions vary per pixel (houses vs gardens
  as a smoothed random field); vegetation fractions follow class-specific seasonal cycles (winter cereals peak in
  May and are harvested in July, maize peaks in August, deciduous forest leafs out in spring, pastures stay green).
  Per-pixel noise and a per-month brightness jitter are added.
- Observations: each month has smooth random cloud fields (masked, NaN) covering a random share of the scene, and
  occasionally a whole month is missing; ``clear_count`` is 1-4 observations where clear.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import xarray as xr
from affine import Affine
from rasterio.features import shapes
from scipy.ndimage import gaussian_filter
from shapely.geometry import shape

from suelo import __version__
from suelo.grid import Grid, as_crs, attach_grid
from suelo.urban_atlas import ua_class_name

BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")

# Typical L2A surface reflectance per endmember for BANDS (from common spectral libraries, rounded).
ENDMEMBERS: dict[str, np.ndarray] = {
    k: np.asarray(v, dtype=np.float32)
    for k, v in {
        "vegetation": [0.030, 0.065, 0.035, 0.100, 0.260, 0.330, 0.370, 0.390, 0.210, 0.110],
        "canopy": [0.020, 0.040, 0.022, 0.065, 0.190, 0.250, 0.290, 0.305, 0.140, 0.065],
        "soil": [0.075, 0.105, 0.145, 0.175, 0.205, 0.225, 0.245, 0.265, 0.330, 0.280],
        "roof": [0.110, 0.130, 0.160, 0.175, 0.190, 0.200, 0.215, 0.225, 0.260, 0.230],
        "bright_roof": [0.200, 0.220, 0.240, 0.250, 0.260, 0.265, 0.275, 0.280, 0.300, 0.270],
        "asphalt": [0.060, 0.070, 0.078, 0.085, 0.095, 0.100, 0.108, 0.112, 0.130, 0.120],
        "water": [0.055, 0.050, 0.032, 0.022, 0.015, 0.012, 0.010, 0.009, 0.005, 0.003],
    }.items()
}

URBAN_CLASSES = (11100, 11210, 11220, 11230, 12100, 13300, 14100, 14200)
CLASSES: tuple[int, ...] = (
    11100, 11210, 11220, 11230, 12100, 12210, 12220, 12230, 13300, 14100, 14200, 21000, 23000, 31000, 50000,
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticCity:
    """A SYNTHETIC scene: cube (composite format), label raster (Urban Atlas codes, uint16) and label polygons."""

    cube: xr.Dataset
    labels: np.ndarray
    polygons: gpd.GeoDataFrame
    grid: Grid


def _season(month: np.ndarray, peak: float, width: float) -> np.ndarray:
    """A smooth bump in [0, 1] peaking at month index ``peak`` (0 = January), cyclic over the year."""
    d = np.abs(((month - peak) + 6) % 12 - 6)
    return np.exp(-0.5 * (d / width) ** 2)


def _layout(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """The label raster: roads, blocks by distance from the centre, rural parcels, railway and river."""
    labels = np.zeros((height, width), dtype=np.uint16)
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    radius = rng.uniform(0.38, 0.5) * min(height, width)

    def cuts(size: int, lo: int, hi: int) -> list[int]:
        out, pos = [], int(rng.integers(lo // 2, hi))
        while pos < size:
            out.append(pos)
            pos += int(rng.integers(lo, hi))
        return out

    minor_rows, minor_cols = cuts(height, 14, 30), cuts(width, 14, 30)
    major_rows = [r for r in minor_rows if rng.random() < 0.3]
    major_cols = [c for c in minor_cols if rng.random() < 0.3]
    row_edges = [0, *minor_rows, height]
    col_edges = [0, *minor_cols, width]
    yy, xx = np.mgrid[0:height, 0:width]
    for r0, r1 in itertools.pairwise(row_edges):
        for c0, c1 in itertools.pairwise(col_edges):
            d = np.hypot((r0 + r1) / 2 - cy, (c0 + c1) / 2 - cx) / radius
            choices: tuple[int, ...]
            p: tuple[float, ...]
            if d < 0.35:
                choices, p = (11100, 11210, 12100, 14100), (0.55, 0.2, 0.1, 0.15)
            elif d < 0.7:
                choices, p = (11210, 11220, 12100, 14100, 14200, 13300), (0.3, 0.25, 0.15, 0.1, 0.12, 0.08)
            elif d < 1.0:
                choices, p = (11220, 11230, 12100, 14200, 21000, 23000), (0.3, 0.2, 0.15, 0.05, 0.15, 0.15)
            else:
                choices, p = (21000, 23000, 31000), (0.45, 0.3, 0.25)
            code = int(rng.choice(choices, p=p))
            labels[r0:r1, c0:c1] = code
            if code in (21000, 23000) and r1 - r0 > 8 and rng.random() < 0.6:
                # rural blocks hold several parcels with different crops/uses
                split = int(rng.integers(r0 + 4, r1 - 3))
                labels[split:r1, c0:c1] = int(rng.choice((21000, 23000, 31000), p=(0.5, 0.3, 0.2)))
    in_town = np.hypot(yy - cy, xx - cx) < radius * 1.05
    for r in minor_rows:
        w = 2 if rng.random() < 0.4 else 1
        labels[r : r + w][in_town[r : r + w]] = 12220
    for c in minor_cols:
        w = 2 if rng.random() < 0.4 else 1
        labels[:, c : c + w][in_town[:, c : c + w]] = 12220
    # railway: a straight, slightly slanted line across the scene
    r_start, slope = rng.uniform(0.2, 0.8) * height, rng.uniform(-0.25, 0.25)
    rail = np.abs(yy - (r_start + slope * xx)) < 1.0
    labels[rail] = 12230
    # river: a meandering band, wider than the roads
    y0, amp, period, phase = rng.uniform(0.2, 0.8) * height, rng.uniform(5, 20), rng.uniform(80, 200), rng.uniform(0, 6)
    half = rng.uniform(2.5, 5.0)
    labels[np.abs(yy - (y0 + amp * np.sin(2 * np.pi * xx / period + phase))) < half] = 50000
    for r in major_rows:
        labels[r : r + 3] = 12210  # major roads cross everything (bridges over the river and railway)
    for c in major_cols:
        labels[:, c : c + 3] = 12210
    return labels


def _fractions(
    rng: np.random.Generator, labels: np.ndarray, months: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Static endmember fractions (y, x) and seasonal vegetation fractions (t, y, x) per endmember name."""
    h, w = labels.shape
    texture = gaussian_filter(rng.standard_normal((h, w)), 0.8)
    texture /= texture.std() + 1e-9
    static = {k: np.zeros((h, w), dtype=np.float32) for k in ENDMEMBERS}
    seasonal = {k: np.zeros((len(months), h, w), dtype=np.float32) for k in ("vegetation", "canopy")}
    green_cycle = _season(months, 6.0, 2.5)  # urban and semi-natural vegetation: summer peak
    leaf_cycle = 0.35 + 0.65 * _season(months, 6.5, 2.2)  # deciduous canopy: leafless in winter

    def set_mix(mask: np.ndarray, built: np.ndarray, built_kind: str, veg_kind: str, cycle: np.ndarray) -> None:
        built = np.clip(built, 0, 1)
        static[built_kind][mask] += built
        seasonal[veg_kind][:, mask] += (1 - built)[None] * cycle[:, None]
        seasonal_soil[:, mask] += (1 - built)[None] * (1 - cycle[:, None])

    seasonal_soil = np.zeros((len(months), h, w), dtype=np.float32)
    green = 0.55 + 0.4 * green_cycle
    for code, base, kind in (
        (11100, 0.88, "roof"),
        (11210, 0.65, "roof"),
        (11220, 0.45, "roof"),
        (11230, 0.22, "roof"),
        (12100, 0.9, "bright_roof"),
        (12210, 0.95, "asphalt"),
        (12220, 0.8, "asphalt"),
        (14100, 0.05, "asphalt"),
        (14200, 0.1, "asphalt"),
    ):
        mask = labels == code
        if not mask.any():
            continue
        spread = 0.05 if code in (12100, 12210, 12220) else 0.15
        turf = np.full_like(green, 0.9)  # sports turf is watered: green all year
        set_mix(mask, base + spread * texture[mask], kind, "vegetation", turf if code == 14200 else green)
    mask = labels == 14100  # parks: trees among lawns
    seasonal["canopy"][:, mask] += 0.3 * leaf_cycle[:, None]
    seasonal["vegetation"][:, mask] *= 0.7
    mask = labels == 12230  # railway: ballast (soil-like) and steel/asphalt-like sleepers, weeds in summer
    static["soil"][mask] += 0.5
    static["asphalt"][mask] += 0.35
    seasonal["vegetation"][:, mask] += 0.15 * green_cycle[:, None]
    mask = labels == 13300  # construction: bare soil and concrete
    static["soil"][mask] += np.clip(0.6 + 0.2 * texture[mask], 0, 1)
    static["roof"][mask] += np.clip(0.4 - 0.2 * texture[mask], 0, 1)
    mask = labels == 50000
    static["water"][mask] += 1.0
    mask = labels == 23000  # pasture: green all year, a bit more in summer
    cover = 0.7 + 0.25 * green_cycle
    seasonal["vegetation"][:, mask] += cover[:, None]
    seasonal_soil[:, mask] += (1 - cover)[:, None]
    mask = labels == 31000
    seasonal["canopy"][:, mask] += leaf_cycle[:, None] * 0.9
    seasonal_soil[:, mask] += (1 - leaf_cycle[:, None] * 0.9) * 0.6
    seasonal["vegetation"][:, mask] += (1 - leaf_cycle[:, None] * 0.9) * 0.4
    # arable: each connected parcel gets a crop calendar (winter cereal, maize, or spring crop)
    from scipy.ndimage import label as cc_label

    parcels, n = cc_label(labels == 21000)
    calendars = [(4.5, 1.3), (7.5, 1.2), (5.5, 1.0)]
    choice = rng.integers(0, len(calendars), size=n + 1)
    for i, (peak, width) in enumerate(calendars):
        mask = np.isin(parcels, np.flatnonzero(choice == i)) & (parcels > 0)
        cover = 0.05 + 0.9 * _season(months, peak, width)
        seasonal["vegetation"][:, mask] += cover[:, None]
        seasonal_soil[:, mask] += (1 - cover)[:, None]
    seasonal["soil"] = seasonal_soil
    return static, seasonal


def make_synthetic_city(
    seed: int = 0,
    shape: tuple[int, int] = (128, 128),
    resolution: float = 10.0,
    crs: str = "EPSG:32631",
    origin: tuple[float, float] = (594000.0, 5644000.0),  # top-left, near Brussels (so Presto lat/lons are sane)
    year: int = 2021,
    cloud_cover: float = 0.2,
    missing_month_probability: float = 0.3,
    noise: float = 0.01,
) -> SyntheticCity:
    """A SYNTHETIC city scene (see the module docstring); identical for identical arguments."""
    rng = np.random.default_rng(seed)
    height, width = shape
    grid = Grid(as_crs(crs), Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1]), height, width)
    labels = _layout(rng, height, width)
    months = np.arange(12, dtype=np.float64)
    static, seasonal = _fractions(rng, labels, months)

    refl = np.zeros((12, len(BANDS), height, width), dtype=np.float32)
    for name, spectrum in ENDMEMBERS.items():
        if name in static and static[name].any():
            refl += static[name][None, None] * spectrum[None, :, None, None]
        if name in seasonal:
            refl += seasonal[name][:, None] * spectrum[None, :, None, None]
    # per-month atmospheric/illumination jitter, then per-pixel sensor/heterogeneity noise
    refl *= rng.uniform(0.95, 1.05, size=(12, 1, 1, 1)).astype(np.float32)
    refl += rng.normal(0, noise, size=refl.shape).astype(np.float32)
    refl = np.clip(refl, 0.0, 1.0)

    valid = np.ones((12, height, width), dtype=bool)
    for t in range(12):
        if rng.random() < missing_month_probability / 3:
            valid[t] = False
            continue
        field = gaussian_filter(rng.standard_normal((height, width)), 6.0)
        share = float(np.clip(rng.beta(1.2, 1.2 / max(cloud_cover, 1e-3) - 1.2), 0, 0.9))
        if share > 0.01:
            valid[t] &= field < np.quantile(field, share)
    clear_count = np.where(valid, rng.integers(1, 5, size=valid.shape), 0).astype(np.uint8)
    refl = np.where(valid[:, None], refl, np.float32(np.nan)).astype(np.float32)

    cube = xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), refl),
            "valid": (("time", "y", "x"), valid),
            "clear_count": (("time", "y", "x"), clear_count),
            "n_clear": (("y", "x"), clear_count.sum(axis=0).astype(np.uint16)),
        },
        coords={
            "time": np.array([np.datetime64(dt.date(year, m, 1), "ns") for m in range(1, 13)]),
            "band": list(BANDS),
            "y": grid.y_coords(),
            "x": grid.x_coords(),
        },
        attrs={
            "title": "SYNTHETIC suelo monthly Sentinel-2 L2A-like cube (generated, not real imagery)",
            "crs": grid.crs.to_string(),
            "compositing": "synthetic: generated monthly values (suelo.synthetic_city), no compositing",
            "reflectance_formula": "synthetic endmember mixtures, physical reflectance",
            "scl_masked_classes": json.dumps([]),
            "resampling": "none",
            "scenes": json.dumps([]),
            "software": f"suelo {__version__}",
            "synthetic": f"suelo.synthetic_city.make_synthetic_city(seed={seed}, shape={tuple(shape)})",
        },
    )
    cube["reflectance"].attrs.update(units="1", long_name="surface reflectance (BOA), SYNTHETIC")
    cube["valid"].attrs.update(long_name="month has at least one clear observation")
    cube["clear_count"].attrs.update(long_name="clear observations in the month")
    cube["n_clear"].attrs.update(long_name="clear observations over the period")
    return SyntheticCity(attach_grid(cube, grid), labels, label_polygons(labels, grid), grid)


def label_polygons(labels: np.ndarray, grid: Grid) -> gpd.GeoDataFrame:
    """One polygon per 4-connected patch of a label raster, with its Urban Atlas ``code_2018`` and name."""
    rows = [
        (int(value), ua_class_name(int(value)), shape(geom))
        for geom, value in shapes(labels.astype(np.int32), mask=labels > 0, transform=grid.transform)
    ]
    return gpd.GeoDataFrame(
        {"code_2018": [r[0] for r in rows], "class_2018": [r[1] for r in rows]},
        geometry=[r[2] for r in rows],
        crs=grid.crs,
    )
