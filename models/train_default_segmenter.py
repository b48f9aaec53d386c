"""Make ``models/segmenter_default.pt``: a small U-Net segmenter trained on a SYNTHETIC city.

How it was made (re-run ``.venv/bin/python models/train_default_segmenter.py`` to reproduce, CPU, a few minutes;
``--calibrate-only`` redoes only the calibration step on an existing file):

- training scene: ``suelo.synthetic_city.make_synthetic_city(seed=TRAIN_SEED, shape=TRAIN_SHAPE)``;
  held-out scene for the reported metrics: another city, ``seed=TEST_SEED`` (different layout, spectra noise and
  clouds); both are SYNTHETIC, so the numbers show that the pipeline works, not real-world accuracy;
- inputs: ``suelo.models.segmenter.segmenter_features`` (37 cube summaries) + 128 Presto embeddings
  (``suelo.models.inference.encode_cube`` with the shipped ``presto_default.pt``, bf16 ``fast`` mode on CPU);
- training: ``suelo.train_segmenter.train_segmenter`` with ``CONFIG`` and ``seed=TRAIN_SEED``; it also fits the
  novelty gate (``suelo.novelty``) on the training pixels' input vectors and calibrates its threshold on the
  validation blocks for a 5 % rejection rate (the held-out city's rejected share is reported too);
- calibration and confidence threshold: :func:`calibrate` on the held-out city (temperature scaling, threshold
  certified for 95 % accuracy of mapped pixels), stored like the land-cover model's so a job treats both alike.

The file is a model artifact of kind "segmenter" (``suelo.models.artifact``, format 3, the land-cover model's
format): ``unet.*`` and ``novelty.*`` tensors and one JSON meta (legend, input contract, network config, novelty
gate, calibration and thresholds, training and held-out metrics, inference speed, provenance). Load with
``suelo.models.artifact.load_segmenter``. It is a demo/test artifact: train on real Urban Atlas labels for real maps.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from suelo.atomic import file_sha256
from suelo.models.artifact import load_segmenter, save_segmenter
from suelo.models.inference import encode_cube
from suelo.models.presto import Encoder, load_presto_encoder
from suelo.models.segmenter import (
    SegmenterConfig,
    UNetSegmenter,
    count_parameters,
    feature_names,
    flops_per_pixel,
    segmenter_features,
    segmenter_inputs,
)
from suelo.segment import predict_array
from suelo.synthetic_city import CLASSES, make_synthetic_city
from suelo.train_segmenter import (
    SegmenterTrainConfig,
    codes_to_indices,
    segmentation_metrics,
    train_segmenter,
)
from suelo.urban_atlas import ua_class_name

TRAIN_SEED, TEST_SEED = 1, 2
TRAIN_SHAPE, TEST_SHAPE = (160, 160), (128, 128)
CONFIG = SegmenterTrainConfig(
    chip=64, batch_size=8, steps=400, lr=3e-3, block=40, guard=6, val_fraction=0.2, eval_every=100,
    depth=3, base_width=16, dropout=0.1,
)  # fmt: skip
OUT = Path(__file__).with_name("segmenter_default.pt")
# The bands the embedded real sample has (no B8A): the shipped segmenter must run on the demo cube.
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
CALIBRATION_STRIDE = 4  # held-out pixels on a 4-px lattice: neighbouring pixels are far from independent
TARGET_ACCURACY = 0.95


def inputs_of(seed: int, shape: tuple[int, int], encoder: Encoder) -> tuple[np.ndarray, np.ndarray, float]:
    city = make_synthetic_city(seed=seed, shape=shape)
    cube = city.cube.sel(band=list(BANDS))
    started = time.perf_counter()
    emb = encode_cube(encoder, cube, device="cpu", fast=True)
    seconds = time.perf_counter() - started
    return segmenter_inputs(segmenter_features(cube, BANDS), emb), city.labels, seconds


def inference_speed(in_channels: int, n_classes: int, size: int = 512) -> dict[str, float]:
    """CPU px/s of tiled inference on a size x size area with all input channels (embeddings included)."""
    model = UNetSegmenter(SegmenterConfig(in_channels, n_classes, depth=CONFIG.depth, base_width=CONFIG.base_width))
    x = np.random.default_rng(0).normal(size=(in_channels, size, size)).astype(np.float32)
    predict_array(model, x[:, :64, :64], window=256, overlap=64, device="cpu")  # warm-up
    started = time.perf_counter()
    predict_array(model, x, window=256, overlap=64, device="cpu")
    seconds = time.perf_counter() - started
    return {"area_px": size * size, "seconds": round(seconds, 2), "px_per_s": round(size * size / seconds),
            "window": 256, "overlap": 64, "threads": torch.get_num_threads()}  # fmt: skip


def calibrate(path: Path = OUT) -> dict:
    """Fit the calibration and certify the confidence threshold on the held-out city, and store them in the file.

    Uses a lattice of held-out pixels (every CALIBRATION_STRIDE-th row and column): Clopper-Pearson assumes
    independent samples, and adjacent pixels are strongly correlated, so the lattice keeps the guarantee from being
    as optimistic as on all pixels (it remains approximate for spatially correlated errors).
    """
    from suelo.threshold import calibrate_and_certify

    model, extras = load_segmenter(path)
    encoder = load_presto_encoder()
    x_test, y_test, _ = inputs_of(TEST_SEED, TEST_SHAPE, encoder)
    post = predict_array(model, x_test, window=256, overlap=64, device="cpu")
    target = codes_to_indices(y_test, extras["legend_codes"])
    lattice = np.zeros(target.shape, dtype=bool)
    lattice[::CALIBRATION_STRIDE, ::CALIBRATION_STRIDE] = True
    keep = lattice & (target != 255)
    logits = np.log(np.clip(post[:, keep].T, 1e-12, 1.0))
    if model.novelty_gate is None:  # load_segmenter sets it: None here is a bug
        raise RuntimeError(f"{path}: the loaded segmenter has no novelty gate")
    inside = ~model.novelty_gate.outside(x_test[:, keep].T)  # gate-rejected pixels are never mapped
    confidence = calibrate_and_certify(
        logits, target[keep], "temperature", TARGET_ACCURACY, inside=inside, honest_target=True
    )
    extras.update({key: value for key, value in confidence.items() if key != "metrics"})
    extras["metrics"]["calibration"] = confidence["metrics"]
    save_segmenter(model, path, **extras)
    return confidence["metrics"] | {"threshold": confidence["thresholds"]["report"]["global"]}


def main() -> None:
    if "--calibrate-only" in sys.argv:
        print(json.dumps(calibrate(), indent=1))
        return
    torch.manual_seed(TRAIN_SEED)
    encoder = load_presto_encoder()
    names = feature_names(BANDS)
    x_train, y_train, enc_s = inputs_of(TRAIN_SEED, TRAIN_SHAPE, encoder)
    print(f"train city encoded in {enc_s:.0f}s ({x_train.shape[1] * x_train.shape[2] / enc_s:.0f} px/s)", flush=True)
    x_test, y_test, _ = inputs_of(TEST_SEED, TEST_SHAPE, encoder)
    class_names = [ua_class_name(c) for c in CLASSES]
    model, metrics = train_segmenter(x_train, y_train, CLASSES, class_names, CONFIG, names, seed=TRAIN_SEED,
                                     verbose=True)  # fmt: skip
    post = predict_array(model, x_test, window=256, overlap=64, device="cpu")
    target = codes_to_indices(y_test, CLASSES)
    ok = target != 255
    held_out = segmentation_metrics(target[ok], post.argmax(axis=0)[ok], CLASSES, class_names)
    # the other city is drawn from the same generator: the gate should reject about its calibrated 5 % of it
    observed = x_test[names.index("valid_fraction")] > 0  # pixels with no clear month are nodata, not novel
    if model.novelty_gate is None:  # train_segmenter fits it: None here is a bug
        raise RuntimeError("train_segmenter returned a model without its novelty gate")
    outside = model.novelty_gate.outside(x_test[:, observed].T)
    speed = inference_speed(x_train.shape[0], len(CLASSES))
    summary = {
        "validation_same_city": {k: metrics[k] for k in ("overall_accuracy", "macro_f1", "kappa", "mean_iou")},
        "held_out_city": {k: held_out[k] for k in ("overall_accuracy", "macro_f1", "kappa", "mean_iou")},
        "held_out_per_class": {
            n: {k: round(v[k], 3) for k in ("precision", "recall", "f1", "iou", "support")}
            for n, v in held_out["per_class"].items()
            if v["support"]
        },
        "outside_training": {
            "validation_same_city": metrics["novelty"]["calibration_rejected"],
            "held_out_city": round(float(outside.mean()), 4),
            "rejection_rate": metrics["novelty"]["rejection_rate"],
        },
        "inference_cpu": speed,
        "parameters": count_parameters(model),
        "flops_per_pixel": flops_per_pixel(model.config),
        "train_seconds": metrics["train_seconds"],
    }
    print(json.dumps(summary, indent=1))
    save_segmenter(
        model,
        OUT,
        feature_names=names,
        bands=list(BANDS),
        legend_codes=list(CLASSES),
        legend_names=class_names,
        months=12,  # suelo.synthetic_city makes 12-month cubes of L2A-like surface reflectance
        product_level="L2A",
        encoder_weights_sha256=file_sha256(Path(__file__).with_name("presto_default.pt")),
        metrics={"validation_same_city": metrics, "held_out_city": held_out, "summary": summary},
        provenance={
            "data": "SYNTHETIC (suelo.synthetic_city), not real imagery",
            "train": f"make_synthetic_city(seed={TRAIN_SEED}, shape={TRAIN_SHAPE})",
            "held_out": f"make_synthetic_city(seed={TEST_SEED}, shape={TEST_SHAPE})",
            "train_config": CONFIG.to_dict(),
            "embeddings": "models/presto_default.pt via suelo.models.inference.encode_cube(fast=True)",
            "script": "models/train_default_segmenter.py",
        },
    )
    print(json.dumps(calibrate(OUT), indent=1))
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
