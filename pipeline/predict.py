"""Apply a land-cover model to a monthly cube: posteriors (class, y, x), the novelty gate and the class codes (y, x).

The cube is read in row blocks of about one encoder batch, so memory stays bounded by the block, not the cube.
Every pixel's embedding is scored by the model's novelty gate (``suelo.novelty``) before any class is given:
``outside_training`` marks the pixels unlike the training data, and ``class_code`` carries the model's
"outside the training data" reason code there instead of a class. Pixels with no valid month get NaN posteriors
and code 0 (the nodata reason code of the legend contract).

``apply_masking`` adds the map ``suelo run`` would make (``class_map``: the certified confidence threshold and the
too-few-observations rule too, by the run's own ``suelo.threshold.classify_block``), and
``write_class_map_cog`` writes it as the run's styled COG (``suelo.write``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from suelo.calibrate import Calibration
from suelo.errors import InputError
from suelo.grid import Grid, carry_grid, cf_netcdf, has_grid
from suelo.legend import Legend
from suelo.models.artifact import ModelArtifact, check_contract, contract_inputs
from suelo.reasons import reasons_for
from suelo.threshold import CONFIDENCE_NODATA, ThresholdPolicy, classify_block

NODATA_CODE = 0


def predict_cube(
    artifact: ModelArtifact,
    cube: xr.Dataset,
    batch_size: int | None = None,
    device: str | None = None,
    cube_name: str | Path = "cube",
    embeddings: np.ndarray | xr.DataArray | None = None,
    fast: bool | None = None,
    allow_fewer_months: bool = False,
    mask_missing_inputs: bool = False,
) -> xr.Dataset:
    """``posterior`` (class, y, x) float32 and ``class_code`` (y, x) of every pixel of ``cube``.

    ``embeddings`` (y, x, feature) from the pretrained encoder may be passed when another product already computed
    them; they are used only if this model kept the pretrained encoder (a fine-tuned one encodes afresh).
    ``fast`` is the encoder precision of ``suelo.models.inference.encode_pixels`` (None: bf16 on CUDA, fp32 on CPU).
    """
    from suelo.models.inference import cube_read_pixels, default_device, encode_pixels
    from suelo.models.presto_inputs import cube_auxiliary, cube_to_pixels, presto_inputs

    check_contract(artifact, cube, cube_name, allow_fewer_months, mask_missing_inputs=mask_missing_inputs)
    device = device or default_device()
    bands = artifact.contract["bands"]
    # the Presto inputs the model was trained with (Sentinel-2 only for models from before radar, terrain, weather)
    model_inputs = contract_inputs(artifact.contract)
    # shared embeddings were encoded from this cube's bands and Sentinel-2 alone (suelo.models.inference.encode_cube)
    same_inputs = [str(b) for b in cube["band"].values] == list(bands) and model_inputs == ("s2",)
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
    # full-width strips of `rows` rows, not 2-D tiles (suelo.grid.tile_slices): a strip is one batch of pixels
    # whatever the cube's width, and `r` also indexes the shared embeddings
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
            extra = {k: v[has_data] for k, v in cube_auxiliary(part, model_inputs).items()}
            x, mask, dw = presto_inputs(reflectance[has_data], bands, latlons=latlons[has_data], **extra)
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
        attrs={k: cube.attrs[k] for k in ("crs",) if k in cube.attrs}
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
        units="1",
        threshold=gate.threshold,
    )
    out["outside_training"].attrs.update(long_name="the novelty gate rejected the pixel (outside the training data)")
    return carry_grid(out, cube)  # the cube's grid, also for a slice of a cube: GDAL reads the NetCDF georeferenced


def write_prediction(prediction: xr.Dataset, path: Path) -> None:
    """NetCDF, written atomically (temp file beside ``path``, then rename). With the grid :func:`predict_cube`
    gives it (the cube's), CF-1.8 and georeferenced as the cube is (:func:`suelo.grid.cf_netcdf`): GDAL and QGIS
    open its variables where they are."""
    from suelo.atomic import atomic_output

    coordinate_encoding: dict[str, dict[str, Any]] = {}
    if has_grid(prediction):
        prediction, coordinate_encoding = cf_netcdf(prediction, Grid.from_xarray(prediction))
    encoding: dict[str, dict[str, Any]] = {
        "posterior": {"zlib": True, "complevel": 4},
        "class_code": {"zlib": True},
        "novelty_score": {"zlib": True},
        "outside_training": {"zlib": True, "dtype": "uint8"},
    }
    for name in ("class_map", "confidence"):  # only with --apply-masking (apply_masking)
        if name in prediction:
            encoding[name] = {"zlib": True}
    encoding.update(coordinate_encoding)
    with atomic_output(Path(path)) as tmp:
        prediction.to_netcdf(tmp, engine="netcdf4", encoding=encoding)


def cube_clear_observations(cube: xr.Dataset) -> np.ndarray | None:
    """Clear observations per pixel over the period (y, x): the cube's ``n_clear``, else the sum of its monthly
    ``clear_count``; None when it records neither (a cube not made by ``suelo ingest``)."""
    if "n_clear" in cube:
        return np.asarray(cube["n_clear"].values)
    if "clear_count" in cube:
        return np.asarray(cube["clear_count"].sum("time").values)
    return None


def apply_masking(
    prediction: xr.Dataset,
    legend: Legend,
    policy: ThresholdPolicy,
    n_clear: np.ndarray | None = None,
    rows: int = 512,
) -> xr.Dataset:
    """``prediction`` (of :func:`predict_cube`) with the map ``suelo run`` makes of it: ``class_map`` (y, x), a class
    code or a reason code (nodata, too few clear observations, outside the training data, low confidence; in
    that precedence), and ``confidence`` (calibrated top-1 in percent, 255 = none).

    Both come from :func:`suelo.threshold.classify_block`, the function a run applies to each block, on the
    same calibrated posteriors and novelty-gate verdict, so the codes are the run's. It works on strips of
    ``rows`` rows (it is per pixel) to bound its temporaries. Without ``n_clear`` a pixel without posteriors is
    still nodata, but the too-few-observations rule cannot be applied: a ``policy`` asking for more than one clear
    observation is then an error.
    """
    from suelo.write import map_dtype

    reasons = reasons_for(legend)
    dtype = np.dtype(map_dtype(legend, reasons))
    if n_clear is None and policy.min_clear_observations > 1:
        raise ValueError("the cube records no clear-observation counts: the too-few-observations rule needs them")
    posterior = prediction["posterior"].values
    outside = prediction["outside_training"].values.astype(bool)
    codes = np.asarray(legend.codes)
    ny, nx = outside.shape
    class_map = np.full((ny, nx), reasons.nodata, dtype=dtype)
    confidence = np.full((ny, nx), CONFIDENCE_NODATA, dtype=np.uint8)
    for r in range(0, ny, rows):
        part = slice(r, min(r + rows, ny))
        clear = None if n_clear is None else n_clear[part]
        planes = classify_block(posterior[:, part], codes, policy, clear, reasons, dtype, outside[part])
        class_map[part], confidence[part] = planes[0], planes[1].astype(np.uint8)
    masked = carry_grid(  # the new variables name the prediction's grid mapping too
        prediction.assign(class_map=(("y", "x"), class_map), confidence=(("y", "x"), confidence)), prediction
    )
    masked["class_map"].attrs.update(
        long_name="land-cover map as `suelo run` makes it: class code, or a reason code (see reason_codes)",
        reason_codes=json.dumps(reasons.to_dict()),
        policy=json.dumps(policy.to_dict()),
        legend=json.dumps(legend.to_list()),
    )
    masked["confidence"].attrs.update(
        long_name=f"calibrated top-1 posterior in percent ({CONFIDENCE_NODATA} = none)", units="percent"
    )
    return masked


def write_class_map_cog(
    prediction: xr.Dataset,
    cube: xr.Dataset,
    artifact: ModelArtifact,
    path: Path,
    policy_report: dict[str, Any] | None = None,
) -> list[Path]:
    """The ``class_map`` of :func:`apply_masking` as the run writes its land-cover map: a paletted COG with its
    ``.tif.aux.xml`` (class names, attribute table) and ``.qml`` style, by the writers of ``suelo.write``."""
    from suelo.atomic import file_sha256
    from suelo.composite import cube_grid
    from suelo.style import write_qml
    from suelo.write import write_class_map

    legend = artifact.legend
    reasons = reasons_for(legend)
    tags = {
        "MODEL": artifact.path.name if artifact.path else "",
        "MODEL_SHA256": file_sha256(artifact.path) if artifact.path else "",
        "THRESHOLDS": json.loads(prediction["class_map"].attrs["policy"]),
        "REASON_CODES": reasons.to_dict(),
        "NOVELTY_GATE": artifact.meta.get("novelty", {}),
    }
    if policy_report is not None:
        tags["THRESHOLD_SOURCE"] = str(policy_report.get("source", ""))
    written = write_class_map(path, prediction["class_map"].values, cube_grid(cube), legend, reasons, tags)
    style = write_qml(path.with_suffix(".qml"), written.entries, "paletted")
    return [written.path, *written.sidecars, style]
