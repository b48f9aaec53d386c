"""Apply a land-cover model to a monthly cube: posteriors (class, y, x), the novelty gate and the class codes (y, x).

The cube is read in row blocks of about one encoder batch, so memory stays bounded by the block, not the cube.
Every pixel's embedding is scored by the model's novelty gate (``pipeline.novelty``) before any class is given:
``outside_training`` marks the pixels unlike the training data, and ``class_code`` carries the model's
"outside the training data" reason code there instead of a class. Pixels with no valid month get NaN posteriors
and code 0 (the nodata reason code of the legend contract).
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
from pipeline.errors import InputError
from pipeline.threshold import reasons_for

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
    novelty = np.full((ny, nx), np.nan, dtype=np.float32)
    reasons = reasons_for(legend)
    code_dtype = np.uint8 if max(codes.max(), *reasons.as_tuple()) <= 255 else np.uint16
    class_code = np.full((ny, nx), reasons.nodata, dtype=code_dtype)
    gate = artifact.gate
    if gate is None:
        raise InputError(artifact.path or "model", "has no novelty gate")
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
        score = gate.score(np.asarray(emb, dtype=np.float32))
        block = np.full((h * nx, len(codes)), np.nan, dtype=np.float32)
        block[has_data] = probs
        posterior[:, r : r + h] = block.T.reshape(len(codes), h, nx)
        block_score = np.full(h * nx, np.nan, dtype=np.float32)
        block_score[has_data] = score
        novelty[r : r + h] = block_score.reshape(h, nx)
        block_codes = np.full(h * nx, reasons.nodata, dtype=code_dtype)
        block_codes[has_data] = np.where(score <= gate.threshold, codes[probs.argmax(axis=1)], reasons.outside_training)
        class_code[r : r + h] = block_codes.reshape(h, nx)
    seconds = time.perf_counter() - started
    out = xr.Dataset(
        {
            "posterior": (("class", "y", "x"), posterior),
            "class_code": (("y", "x"), class_code),
            "novelty_score": (("y", "x"), novelty),
            "outside_training": (("y", "x"), ~(novelty <= gate.threshold) & np.isfinite(novelty)),
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
            "nodata_code": reasons.nodata,
            "outside_training_code": reasons.outside_training,
            "novelty_gate": json.dumps(gate.meta()),
            "model": str(artifact.path or ""),
            "seconds": round(seconds, 3),
            "pixels_per_second": round(ny * nx / max(seconds, 1e-9), 1),
        },
    )
    out["posterior"].attrs.update(long_name="calibrated class posterior probability", units="1")
    out.attrs["calibration"] = json.dumps(calibration.to_dict())
    out["class_code"].attrs.update(
        long_name=f"most probable class code ({reasons.nodata} = no valid month, {reasons.outside_training} = outside "
        "the model's training data)"
    )
    out["novelty_score"].attrs.update(
        long_name="novelty score: smallest Mahalanobis distance of the embedding to a training class mean",
        threshold=gate.threshold,
    )
    out["outside_training"].attrs.update(long_name="the novelty gate rejected the pixel (outside the training data)")
    return out


def write_prediction(prediction: xr.Dataset, path: Path) -> None:
    """NetCDF, written atomically (temp file beside ``path``, then rename)."""
    from pipeline.atomic import atomic_output

    encoding = {
        "posterior": {"zlib": True, "complevel": 4},
        "class_code": {"zlib": True},
        "novelty_score": {"zlib": True},
        "outside_training": {"zlib": True, "dtype": "uint8"},
    }
    with atomic_output(Path(path)) as tmp:
        prediction.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
