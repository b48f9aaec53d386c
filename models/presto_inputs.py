"""Presto's input contract: physical values -> the normalized (x, mask, dynamic_world) the encoder was trained on.

Normalization is ``(raw + add) / divide`` per channel, with the constants Presto was pre-trained with. Inputs that
are not supplied enter as 0 with their mask set, so the encoder ignores them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from suelo.models.presto import CHANNELS, PrestoConfig

if TYPE_CHECKING:
    import xarray as xr

DW_MISSING = PrestoConfig().dw_classes

# (add, divide) for the non-S2 channels; units: S1 dB, temperature K, precipitation m, elevation m, slope degrees
S1_NORM = {"VV": (25.0, 25.0), "VH": (25.0, 25.0)}
ERA5_NORM = {"temperature": (-272.15, 35.0), "precipitation": (0.0, 0.03)}
SRTM_NORM = {"elevation": (0.0, 2000.0), "slope": (0.0, 50.0)}
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")


def presto_band_name(name: str) -> str:
    """Sentinel-2 band names as Presto spells them: ``B02`` -> ``B2``, ``B8A`` unchanged."""
    if len(name) == 3 and name[0] == "B" and name[1] == "0":
        return "B" + name[2]
    return name


def presto_inputs(
    reflectance: np.ndarray,
    band_names: Sequence[str],
    *,
    s1: np.ndarray | None = None,
    era5: np.ndarray | None = None,
    srtm: np.ndarray | None = None,
    latlons: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encoder inputs for ``N`` pixels of ``T`` months.

    ``reflectance`` ``(N, T, bands)``: Sentinel-2 L2A physical reflectance (DN / 10000 after offset), NaN where
    missing; bands Presto does not use (B01, B09, B10) are ignored and Presto bands not given are masked.
    ``s1`` ``(N, T, 2)`` VV, VH in dB; ``era5`` ``(N, T, 2)`` 2 m temperature in K and total precipitation in m;
    ``srtm`` ``(N, 2)`` elevation in m and slope in degrees. ``latlons`` ``(N, 2)`` is only checked here.

    Returns ``x`` ``(N, T, 17)`` float32 (0 where masked), ``mask`` ``(N, T, 17)`` bool (True = missing) and
    ``dynamic_world`` ``(N, T)`` int64, all "missing" (this project has no Dynamic World input).
    """
    reflectance = np.asarray(reflectance, dtype=np.float32)
    if reflectance.ndim != 3 or reflectance.shape[-1] != len(band_names):
        raise ValueError(f"reflectance must be (N, T, {len(band_names)}) for bands {list(band_names)}")
    n, t, _ = reflectance.shape
    x = np.zeros((n, t, len(CHANNELS)), dtype=np.float32)
    mask = np.ones((n, t, len(CHANNELS)), dtype=bool)

    def put(channel: str, values: np.ndarray) -> None:
        c = CHANNELS.index(channel)
        ok = np.isfinite(values)
        x[..., c] = np.where(ok, values, 0)
        mask[..., c] = ~ok

    # Presto's S2 normalization is (reflectance * 1e4 + 0) / 1e4, i.e. the reflectance itself; using it directly
    # keeps float32 values bit-identical to the reference inputs.
    given = [presto_band_name(b) for b in band_names]
    for i, band in enumerate(given):
        if band in S2_BANDS:
            put(band, reflectance[..., i])

    for values, norms, shape, what in (
        (s1, S1_NORM, (n, t, 2), "s1"),
        (era5, ERA5_NORM, (n, t, 2), "era5"),
        (srtm, SRTM_NORM, (n, 2), "srtm"),
    ):
        if values is None:
            continue
        values = np.asarray(values, dtype=np.float64)
        if values.shape != shape:
            raise ValueError(f"{what} must have shape {shape}, got {values.shape}")
        if what == "srtm":
            values = np.broadcast_to(values[:, None], (n, t, 2))  # static: the encoder reads month 0
        for k, (channel, (add, divide)) in enumerate(norms.items()):
            put(channel, ((values[..., k] + add) / divide).astype(np.float32))

    # NDVI from the normalized B8 and B4, in float32 as the reference; masked (value 0) unless both are present,
    # since an unmasked 0 would read as "bare soil".
    b8, b4 = CHANNELS.index("B8"), CHANNELS.index("B4")
    nir, red = x[..., b8], x[..., b4]
    both = ~mask[..., b8] & ~mask[..., b4]
    total = nir + red
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = np.where(total > 0, (nir - red) / total, np.float32(0))
    put("NDVI", np.where(both, ndvi, np.nan).astype(np.float32))

    if latlons is not None:
        latlons = np.asarray(latlons)
        if latlons.shape != (n, 2) or not np.isfinite(latlons).all() or (np.abs(latlons[:, 0]) > 90).any():
            raise ValueError(f"latlons must be finite (N, 2) = ({n}, 2) (lat, lon) in degrees")
    dynamic_world = np.full((n, t), DW_MISSING, dtype=np.int64)
    return x, mask, dynamic_world


def cube_to_pixels(cube: xr.Dataset) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-pixel series of a monthly cube (see ``suelo.composite``), pixels in row-major (y, x) order.

    Returns ``reflectance`` ``(N, T, bands)`` float32 (NaN where the month is not valid), ``latlons`` ``(N, 2)``
    (lat, lon) of the pixel centres in degrees and the start month (0 = January). Works on a row/column slice of
    a cube too: positions come from the cube's own x/y coordinates, the CRS from its ``spatial_ref`` (or the
    attributes of a cube of an earlier version: a CRS holds for any slice of it).
    """
    from pyproj import Transformer

    from suelo.grid import crs_of

    times = cube["time"].values.astype("datetime64[M]")
    month_numbers = times.astype(np.int64)  # months since 1970-01
    if len(times) > 1 and not (np.diff(month_numbers) == 1).all():
        raise ValueError(f"Presto needs consecutive months; the cube has {[str(m) for m in times]}")
    start_month = int(month_numbers[0] % 12)

    refl = cube["reflectance"].transpose("y", "x", "time", "band").values.astype(np.float32, copy=False)
    if "valid" in cube:
        valid = cube["valid"].transpose("y", "x", "time").values.astype(bool)
        refl = np.where(valid[..., None], refl, np.float32(np.nan))
    ny, nx, t, nb = refl.shape
    reflectance = refl.reshape(ny * nx, t, nb)

    crs = crs_of(cube)
    xs, ys = np.meshgrid(cube["x"].values, cube["y"].values)  # (y, x) order, row-major like the reshape above
    to_wgs84 = Transformer.from_crs(crs.to_wkt(), "EPSG:4326", always_xy=True)
    lon, lat = to_wgs84.transform(xs.ravel(), ys.ravel())
    latlons = np.stack([lat, lon], axis=-1).astype(np.float32)
    return reflectance, latlons, start_month


#: The :func:`presto_inputs` keyword of each optional input (its cube variable: suelo.ingest.auxiliary).
PRESTO_KEYWORDS = {"s1": "s1", "weather": "era5", "terrain": "srtm"}


def cube_auxiliary(
    cube: xr.Dataset, inputs: Sequence[str], pixel_dims: Sequence[str] = ("y", "x")
) -> dict[str, np.ndarray]:
    """The non-optical Presto inputs among ``inputs`` (a model's contract: ``s1``, ``terrain``, ``weather``) from a
    cube's variables (:data:`suelo.ingest.auxiliary.CUBE_VARIABLES`), as :func:`presto_inputs` keywords, pixels in
    the row-major ``pixel_dims`` order of :func:`cube_to_pixels` (or one ``sample`` dimension of picked pixels). An
    input the cube does not hold is left out: the encoder then sees it masked (the caller decides whether the model
    may run so)."""
    from suelo.ingest.auxiliary import CUBE_VARIABLES

    out: dict[str, np.ndarray] = {}
    for name in inputs:
        if name not in CUBE_VARIABLES or CUBE_VARIABLES[name][0] not in cube:
            continue
        variable, dim, _bands, timed = CUBE_VARIABLES[name]
        order = (*pixel_dims, "time", dim) if timed else (*pixel_dims, dim)
        values = cube[variable].transpose(*order).values.astype(np.float32, copy=False)
        out[PRESTO_KEYWORDS[name]] = values.reshape(-1, *values.shape[len(pixel_dims) :])
    return out
