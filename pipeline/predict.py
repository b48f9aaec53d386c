"""Apply a land-cover model to a monthly cube: posteriors (class, y, x) and the argmax class codes (y, x).

The cube is read in row blocks of about one encoder batch, so memory stays bounded by the block, not the cube.
Pixels with no valid month get NaN posteriors and code 0 (the nodata reason code of the legend contract).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from models.artifact import ModelArtifact, check_contract
from pipeline.calibrate import Calibration

NODATA_CODE = 0


def predict_cube(
    artifact: ModelArtifact,
    cube: xr.Dataset,
    batch_size: int | None = None,
    device: str | None = None,
    cube_name: str | Path = "cube",
    embeddings: np.ndarray | xr.DataArray | None = None,
    fast: bool | None = None,
) -> xr.Dataset:
    """``posterior`` (class, y, x) float32 and ``class_code`` (y, x) of every pixel of ``cube``.

    ``embeddings`` (y, x, feature) from the pretrained encoder may be passed when another product already computed
    them; they are used only if this model kept the pretrained encoder (a fine-tuned one encodes afresh).
    ``fast`` is the encoder precision of ``models.inference.encode_pixels`` (None: bf16 on CUDA, fp32 on CPU).
    """
    from models.inference import cube_read_pixels, default_device, encode_pixels
    from models.presto_inputs import cube_to_pixels, presto_inputs

    check_contract(artifact, cube, cube_name)
    device = device or default_device()
    bands = artifact.contract["bands"]
    same_inputs = [str(b) for b in cube["band"].values] == list(bands)  # else shared embeddings saw other bands
    legend = artifact.legend
    codes = np.asarray(legend.codes)
    encoder, head = artifact.build_encoder(), artifact.build_head().to(device)
    # artifacts from before calibration existed carry none: their posteriors are the plain softmax
    calibration = Calibration.from_dict(artifact.meta.get("calibration", {}))
    shared = None
    if embeddings is not None and same_inputs and not artifact.meta.get("finetuned_encoder"):
        shared = np.asarray(embeddings.values if isinstance(embeddings, xr.DataArray) else embeddings)
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    rows = max(1, cube_read_pixels(device, batch_size) // nx)
    posterior = np.full((len(codes), ny, nx), np.nan, dtype=np.float32)
    code_dtype = np.uint8 if codes.max() < 253 else np.uint16
    class_code = np.full((ny, nx), NODATA_CODE, dtype=code_dtype)
    started = time.perf_counter()
    for r in range(0, ny, rows):
        # the model's bands chunk by chunk: selecting them from the whole cube would copy it (~110 MB at 512 px)
        part = cube.isel(y=slice(r, min(r + rows, ny))).sel(band=bands)
        h = part.sizes["y"]
        reflectance, latlons, start_month = cube_to_pixels(part)
        has_data = np.isfinite(reflectance).any(axis=(1, 2))
        if not has_data.any():
            continue
        if shared is not None:
            emb = shared[r : r + h].reshape(h * nx, -1)[has_data]
        else:
            x, mask, dw = presto_inputs(reflectance[has_data], bands, latlons=latlons[has_data])
            emb = encode_pixels(encoder, x, mask, dw, latlons[has_data], start_month, batch_size, device, fast)
        with torch.inference_mode():
            logits = head(torch.from_numpy(emb).to(device)).float().cpu().numpy()
        probs = calibration.apply(logits)
        block = np.full((h * nx, len(codes)), np.nan, dtype=np.float32)
        block[has_data] = probs
        posterior[:, r : r + h] = block.T.reshape(len(codes), h, nx)
        block_codes = np.full(h * nx, NODATA_CODE, dtype=code_dtype)
        block_codes[has_data] = codes[probs.argmax(axis=1)]
        class_code[r : r + h] = block_codes.reshape(h, nx)
    seconds = time.perf_counter() - started
    out = xr.Dataset(
        {
            "posterior": (("class", "y", "x"), posterior),
            "class_code": (("y", "x"), class_code),
        },
        coords={
            "class": codes,
            "class_name": ("class", list(legend.names)),
            "y": cube["y"].values,
            "x": cube["x"].values,
        },
        attrs={k: cube.attrs[k] for k in ("grid", "crs") if k in cube.attrs}
        | {
            "title": "suelo land-cover posteriors",
            "legend": json.dumps(legend.to_list()),
            "nodata_code": NODATA_CODE,
            "model": str(artifact.path or ""),
            "seconds": round(seconds, 3),
            "pixels_per_second": round(ny * nx / max(seconds, 1e-9), 1),
        },
    )
    out["posterior"].attrs.update(long_name="calibrated class posterior probability", units="1")
    out.attrs["calibration"] = json.dumps(calibration.to_dict())
    out["class_code"].attrs.update(long_name="most probable class code (0 = no valid month)")
    return out


def write_prediction(prediction: xr.Dataset, path: Path) -> None:
    """NetCDF, written atomically (temp file beside ``path``, then rename)."""
    from pipeline.atomic import atomic_output

    encoding = {"posterior": {"zlib": True, "complevel": 4}, "class_code": {"zlib": True}}
    with atomic_output(Path(path)) as tmp:
        prediction.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
