"""U-Net segmenter for the urban atlas: monthly-cube features + Presto embeddings -> per-pixel class logits.

Presto sees one pixel's time series and nothing around it; urban classes (continuous vs discontinuous fabric, roads,
sports fields) are defined by spatial arrangement. The segmenter therefore takes, per pixel, temporal summaries of
the cube (:func:`segmenter_features`) concatenated with the 128 Presto embedding channels, and adds spatial context
with a small fully convolutional U-Net.

Design choices that matter downstream:

- BatchNorm, not GroupNorm/LayerNorm over space: in eval mode BatchNorm is a per-pixel affine map, so the network is
  translation-equivariant (up to pooling phase) and a tiled prediction equals the untiled one away from window edges
  (see ``suelo.segment``). A norm over the spatial extent would make every pixel depend on the whole window.
- The input normalization (per-channel mean/std of the training pixels) lives in the model as buffers, so a saved
  state dict is self-contained.
- Any tile size works: the input is zero-padded at the bottom/right to a multiple of ``2 ** depth`` and the output
  cropped back. Zero is also what a fully missing pixel looks like (all features 0, validity 0).
- Every saved segmenter carries a novelty gate (``suelo.novelty``) fitted on its per-pixel input vectors, so a
  job can say "outside the training data" instead of a confident wrong class (``suelo.segment``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from suelo.novelty import NoveltyGate

PRESTO_EMBEDDING_CHANNELS = 128
DEFAULT_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
QUANTILES: tuple[tuple[str, float], ...] = (("p10", 0.1), ("median", 0.5), ("p90", 0.9))


@dataclass(frozen=True)
class SegmenterConfig:
    in_channels: int
    n_classes: int
    depth: int = 3  # number of 2x poolings; tiles are padded to a multiple of 2 ** depth
    base_width: int = 24  # channels of the first level, doubled at each level
    dropout: float = 0.1  # Dropout2d at the bottleneck only: where the wide, context-heavy features are
    convs_per_block: int = 2
    feature_names: tuple[str, ...] = field(default_factory=tuple)  # documents the input contract; may be empty

    def __post_init__(self) -> None:
        if self.in_channels <= 0 or self.n_classes <= 1 or self.depth < 0 or self.base_width <= 0:
            raise ValueError(f"invalid segmenter config {self}")
        if self.feature_names and len(self.feature_names) != self.in_channels:
            raise ValueError(f"{len(self.feature_names)} feature names for {self.in_channels} input channels")

    @property
    def multiple(self) -> int:
        return 2**self.depth

    @property
    def receptive_radius(self) -> int:
        """Pixels on each side of a pixel that can influence its output (theoretical receptive field radius).

        Each 3x3 conv at scale ``s`` adds ``s``, each 2x2 pool at scale ``s`` adds ``s`` (pooling phase aside), the
        2x2/stride-2 transposed convolutions add nothing. Tiling needs an overlap margin above this to be exact.
        """
        radius = 0
        for level in range(self.depth):
            radius += self.convs_per_block * 2**level + 2**level  # encoder convs, then the pool
        radius += self.convs_per_block * 2**self.depth  # bottleneck
        radius += sum(self.convs_per_block * 2**level for level in range(self.depth))  # decoder convs
        return radius

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["feature_names"] = list(self.feature_names)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmenterConfig:
        keys = ("in_channels", "n_classes", "depth", "base_width", "dropout", "convs_per_block")
        return cls(**{k: data[k] for k in keys if k in data}, feature_names=tuple(data.get("feature_names", ())))


def _conv_block(c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNetSegmenter(nn.Module):
    """``(N, in_channels, H, W)`` raw features -> ``(N, n_classes, H, W)`` logits, for any ``H, W``.

    ``novelty_gate`` is where the training pixels lie in the input space (set by training and by
    :func:`load_segmenter`); it is no part of the state dict, and :func:`save_segmenter` refuses a model without it.
    """

    input_mean: torch.Tensor  # registered buffers (``register_buffer`` below), typed for the checker
    input_std: torch.Tensor

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        self.novelty_gate: NoveltyGate | None = None
        c = config.base_width
        widths = [c * 2**level for level in range(config.depth + 1)]
        self.register_buffer("input_mean", torch.zeros(config.in_channels))
        self.register_buffer("input_std", torch.ones(config.in_channels))
        self.encoders = nn.ModuleList()
        c_in = config.in_channels
        for level in range(config.depth):
            self.encoders.append(_conv_block(c_in, widths[level], config.convs_per_block))
            c_in = widths[level]
        self.bottleneck = _conv_block(c_in, widths[config.depth], config.convs_per_block)
        self.dropout = nn.Dropout2d(config.dropout)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(config.depth)):
            self.ups.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.decoders.append(_conv_block(2 * widths[level], widths[level], config.convs_per_block))
        self.head = nn.Conv2d(widths[0], config.n_classes, 1)

    def set_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        # a constant channel (e.g. validity 1 everywhere in training) must not blow up on new data
        self.input_std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.config.multiple
        x = (x - self.input_mean[:, None, None]) / self.input_std[:, None, None]
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.dropout(self.bottleneck(x))
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)[..., :h, :w]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_pixel(config: SegmenterConfig) -> int:
    """Analytic FLOPs (2 x multiply-adds) per output pixel of convolutions and transposed convolutions.

    A layer at scale ``s`` (after ``log2 s`` poolings) runs on ``1 / s**2`` of the pixels. Norms, activations,
    pooling and the input normalization are left out (they are a few FLOPs per element).
    """
    k = 9
    widths = [config.base_width * 2**level for level in range(config.depth + 1)]
    macs = 0.0
    c_in = config.in_channels
    for level in range(config.depth + 1):
        c_out = widths[level]
        per_pixel = c_in * c_out * k + (config.convs_per_block - 1) * c_out * c_out * k
        macs += per_pixel / 4**level
        c_in = c_out
    for level in range(config.depth):
        up = widths[level + 1] * widths[level] * 4 / 4  # 2x2 kernel, one input pixel per 4 output pixels
        dec = 2 * widths[level] * widths[level] * k + (config.convs_per_block - 1) * widths[level] ** 2 * k
        macs += (up + dec) / 4**level
    macs += widths[0] * config.n_classes
    return int(2 * macs)


# -- input features -----------------------------------------------------------------------------------------------


def feature_names(
    bands: Sequence[str] = DEFAULT_BANDS, embedding_channels: int = PRESTO_EMBEDDING_CHANNELS
) -> list[str]:
    """Names of the segmenter input channels, in order: cube summaries, then the Presto embedding."""
    names = [f"{band}_{q}" for band in bands for q, _ in QUANTILES]
    names += [f"NDVI_{q}" for q, _ in QUANTILES] + ["NDVI_amplitude", "NDBI_median", "MNDWI_median"]
    names += ["valid_fraction"]
    names += [f"presto_{i}" for i in range(embedding_channels)]
    return names


def _nan_quantiles(values: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Quantiles over axis 0 ignoring NaN, linear interpolation as numpy's default; NaN where all are NaN.

    Sorting once (NaN sort last) and indexing by the per-pixel valid count is several times faster than
    ``np.nanpercentile``, which loops over pixels with missing months.
    """
    ordered = np.sort(values, axis=0)
    n = np.isfinite(values).sum(axis=0)
    out = np.full((len(quantiles), *values.shape[1:]), np.nan, dtype=np.float32)
    has = n > 0
    last = np.maximum(n - 1, 0)
    for i, q in enumerate(quantiles):
        pos = q * last
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        frac = (pos - lo).astype(np.float32)
        a = np.take_along_axis(ordered, lo[None], axis=0)[0]
        b = np.take_along_axis(ordered, hi[None], axis=0)[0]
        out[i] = np.where(has, a + (b - a) * frac, np.nan)
    return out


def segmenter_features(cube_block: Any, bands: Sequence[str] = DEFAULT_BANDS) -> np.ndarray:
    """Per-pixel temporal summaries of a monthly cube block: ``(C, y, x)`` float32, NaN replaced by 0.

    Per band: 10th percentile, median and 90th percentile of the valid months (robust to residual clouds, and
    p10/p90 capture the seasonal range). NDVI p10/median/p90 and amplitude (phenology: crops vs pasture vs built),
    median NDBI (built-up) and MNDWI (water), and the fraction of valid months, which also tells the network that
    a 0 elsewhere means "no data" rather than "black".
    """
    refl = cube_block["reflectance"].transpose("time", "band", "y", "x")
    available = [str(b) for b in refl["band"].values]
    missing = [b for b in bands if b not in available]
    if missing:
        raise ValueError(f"the cube lacks bands {missing} needed by the segmenter (it has {available})")
    data = refl.sel(band=list(bands)).values.astype(np.float32, copy=False)  # (t, b, y, x)
    if "valid" in cube_block:
        valid = cube_block["valid"].transpose("time", "y", "x").values.astype(bool)
        data = np.where(valid[:, None], data, np.float32(np.nan))
    t = data.shape[0]
    qs = [q for _, q in QUANTILES]
    planes = [_nan_quantiles(data[:, b], qs) for b in range(data.shape[1])]

    def band(name: str) -> np.ndarray:
        return data[:, list(bands).index(name)]

    def index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.abs(a + b) > 1e-6, (a - b) / (a + b), np.float32(0)).astype(np.float32)

    def masked(x: np.ndarray, like: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(like), x, np.float32(np.nan))

    nir, red, green, swir = band("B08"), band("B04"), band("B03"), band("B11")
    ndvi = masked(index(nir, red), nir + red)
    ndvi_q = _nan_quantiles(ndvi, qs)
    planes.append(ndvi_q)
    planes.append((ndvi_q[2] - ndvi_q[0])[None])
    planes.append(_nan_quantiles(masked(index(swir, nir), swir + nir), [0.5]))
    planes.append(_nan_quantiles(masked(index(green, swir), green + swir), [0.5]))
    planes.append((np.isfinite(data[:, 0]).sum(axis=0, dtype=np.float32) / max(t, 1))[None])
    out = np.concatenate(planes, axis=0)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


def segmenter_inputs(features: np.ndarray, embeddings: Any | None) -> np.ndarray:
    """Concatenate cube features ``(C, y, x)`` with Presto embeddings given as ``(y, x, D)`` (what
    ``suelo.models.inference.encode_cube`` returns, DataArray or array) -> ``(C + D, y, x)`` float32."""
    if embeddings is None:
        return features
    emb = np.asarray(getattr(embeddings, "values", embeddings), dtype=np.float32)
    if emb.shape[:2] != features.shape[1:]:
        raise ValueError(f"embeddings {emb.shape} do not match features {features.shape} (expected (y, x, D))")
    return np.concatenate([features, np.moveaxis(np.nan_to_num(emb), -1, 0)], axis=0)
