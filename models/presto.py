"""Presto pixel-timeseries encoder, weight-compatible with the official pretrained weights.

Re-implemented from the paper and the published weights (Tseng et al. 2023, "Lightweight, Pre-trained
Transformers for Remote Sensing Timeseries", github.com/nasaharvest/presto, MIT; see models/README.md).

A pixel's series ``x (T, 17)`` becomes tokens: one per (month, band group) for eight groups, one per month for
Dynamic World, one for SRTM (static, read from month 0) and one for the pixel's lat/lon. Each token is its group's
linear projection plus a fixed code ``[month (32) | learned channel (32) | sinusoidal position (64)]``. Tokens
whose inputs are missing take no part: they are blocked as attention keys and left out of the mean pool, which is
exactly what the reference's drop-then-attend does, but lets every sample in a batch have its own mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_WEIGHTS = Path(__file__).with_name("presto_default.pt")

CHANNELS: tuple[str, ...] = (
    "VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12",
    "temperature", "precipitation", "elevation", "slope", "NDVI",
)  # fmt: skip

# Order matters twice: it is the channel-embedding index, and the groups tile CHANNELS contiguously in this order.
BAND_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("S1", ("VV", "VH")),
    ("S2_RGB", ("B2", "B3", "B4")),
    ("S2_Red_Edge", ("B5", "B6", "B7")),
    ("S2_NIR_10m", ("B8",)),
    ("S2_NIR_20m", ("B8A",)),
    ("S2_SWIR", ("B11", "B12")),
    ("ERA5", ("temperature", "precipitation")),
    ("SRTM", ("elevation", "slope")),
    ("NDVI", ("NDVI",)),
)


@dataclass(frozen=True)
class PrestoConfig:
    """The encoder's shape; the defaults are the published weights'."""

    embedding_size: int = 128
    depth: int = 2
    num_heads: int = 8
    mlp_ratio: int = 4  # the published weights use 4 (the upstream Encoder class defaults to 2)
    max_sequence_length: int = 24
    channel_embed_ratio: float = 0.25
    month_embed_ratio: float = 0.25
    position_base: float = 1000.0  # not the usual 10000
    channels: tuple[str, ...] = CHANNELS
    band_groups: tuple[tuple[str, tuple[str, ...]], ...] = BAND_GROUPS
    static_group: str = "SRTM"  # one token, read from the first month
    dw_classes: int = 9  # Dynamic World classes; index dw_classes means "missing"

    @property
    def channel_embed_size(self) -> int:
        return int(self.embedding_size * self.channel_embed_ratio)

    @property
    def month_embed_size(self) -> int:
        return int(self.embedding_size * self.month_embed_ratio)

    @property
    def position_embed_size(self) -> int:
        return int(self.embedding_size * (1 - (self.channel_embed_ratio + self.month_embed_ratio)))

    @property
    def mlp_hidden(self) -> int:
        return int(self.embedding_size * self.mlp_ratio)

    def tokens_per_pixel(self, n_months: int) -> int:
        """All tokens before masking: (groups - static + Dynamic World) per month, the static one, lat/lon."""
        per_month = len(self.band_groups) - 1 + 1  # all groups but the static one, plus Dynamic World
        return per_month * n_months + 2


# fixed tables ---------------------------------------------------------------------------------------------------


def sinusoid_table(n_positions: int, size: int, base: float) -> torch.Tensor:
    """Transformer position code: even dims sin(p / base^(2i/size)), odd dims the cos of the same angle."""
    pair = torch.arange(size, dtype=torch.float64) // 2
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] / base ** (2 * pair / size)
    table = torch.where(torch.arange(size) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.float()


def month_table(size: int) -> torch.Tensor:
    """(12, size): sin of the month's angle on the first half, cos on the second; January = 0."""
    angles = torch.arange(12, dtype=torch.float64)[:, None] * (2 * math.pi / 12)
    half = angles.expand(12, size // 2)
    return torch.cat([torch.sin(half), torch.cos(half)], dim=-1).float()


class FixedTable(nn.Module):
    """A frozen lookup table stored as ``<name>.weight``, the key the published state dict uses."""

    weight: torch.Tensor  # a buffer (register_buffer): annotated, as nn.Module's __getattr__ types it Tensor | Module

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", table)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.weight[index]


# transformer ----------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, config: PrestoConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.embedding_size, 3 * config.embedding_size, bias=True)
        self.proj = nn.Linear(config.embedding_size, config.embedding_size)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out: torch.Tensor = self.proj(y.transpose(1, 2).reshape(b, n, d))  # nn.Module.__call__ is typed Any
        return out


class Mlp(nn.Module):
    def __init__(self, config: PrestoConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.embedding_size, config.mlp_hidden)
        self.fc2 = nn.Linear(config.mlp_hidden, config.embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(F.gelu(self.fc1(x)))
        return out


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: PrestoConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embedding_size)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.embedding_size)
        self.mlp = Mlp(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask)
        out: torch.Tensor = x + self.mlp(self.norm2(x))
        return out


# encoder --------------------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    pos_embed: torch.Tensor  # buffers (register_buffer in __init__), typed for mypy like FixedTable.weight
    membership: torch.Tensor

    """``forward(x, mask, dynamic_world, latlons, month) -> (B, embedding_size)`` pooled, layer-normed embedding."""

    def __init__(self, config: PrestoConfig | None = None) -> None:
        super().__init__()
        config = config or PrestoConfig()
        self.config = config
        d = config.embedding_size
        groups = dict(config.band_groups)
        self.group_names = list(groups)
        self.static_index = self.group_names.index(config.static_group)
        self.eo_patch_embed = nn.ModuleDict({name: nn.Linear(len(bands), d) for name, bands in groups.items()})
        self.dw_embed = nn.Embedding(config.dw_classes + 1, d)
        self.latlon_embed = nn.Linear(3, d)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(d)
        pos = sinusoid_table(config.max_sequence_length, config.position_embed_size, config.position_base)
        self.register_buffer("pos_embed", pos[None])
        self.month_embed = FixedTable(month_table(config.month_embed_size))
        self.channel_embed = nn.Embedding(len(groups) + 1, config.channel_embed_size)  # + Dynamic World

        # Each group's channels as a slice of x, so all group projections run as one matmul (see _group_tokens).
        self.group_slices: list[tuple[int, int]] = []
        for bands in groups.values():
            start = config.channels.index(bands[0])
            if config.channels[start : start + len(bands)] != bands:
                raise ValueError(f"band group {bands} is not contiguous in the channel order {config.channels}")
            self.group_slices.append((start, start + len(bands)))
        membership = torch.zeros(len(config.channels), len(groups))
        for g, (start, stop) in enumerate(self.group_slices):
            membership[start:stop, g] = 1
        self.register_buffer("membership", membership, persistent=False)

    # inputs -----------------------------------------------------------------------------------------------------
    def _month_index(self, month: torch.Tensor | int, batch: int, n_months: int, device: torch.device) -> torch.Tensor:
        start = torch.as_tensor(month, dtype=torch.long, device=device).reshape(-1)
        if start.numel() == 1:
            start = start.expand(batch)
        if start.shape != (batch,):
            raise ValueError(f"month must be an int or shape ({batch},), got {tuple(start.shape)}")
        if bool(((start < 0) | (start > 11)).any()):
            raise ValueError("start month must be in 0..11 (0 = January)")
        return (start[:, None] + torch.arange(n_months, device=device)) % 12

    def _group_tokens(self, x: torch.Tensor, groups: list[int]) -> torch.Tensor:
        """(B, T, C) -> (B, T, len(groups), D): the linear layers of the listed groups applied at once.

        Their weights are zero-padded to all C channels and stacked, so one (C -> G*D) matmul replaces G small
        ones; the zeros cost ~17x the useful multiply-adds of this layer, still well under 1% of the model.
        """
        c, d = len(self.config.channels), self.config.embedding_size
        weights: list[torch.Tensor] = []
        biases: list[torch.Tensor] = []
        for g in groups:
            layer, (start, stop) = cast(nn.Linear, self.eo_patch_embed[self.group_names[g]]), self.group_slices[g]
            weights.append(F.pad(layer.weight, (start, c - stop)))
            biases.append(layer.bias)
        y = F.linear(x, torch.cat(weights), torch.cat(biases))
        grouped: torch.Tensor = y.unflatten(-1, (len(groups), d))  # Tensor.unflatten is unannotated in torch
        return grouped

    @staticmethod
    def cartesian(latlons: torch.Tensor) -> torch.Tensor:
        """Degrees -> unit vector on the sphere, so that longitude wraps continuously."""
        lat, lon = torch.deg2rad(latlons[:, 0]), torch.deg2rad(latlons[:, 1])
        return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], -1)

    # forward ----------------------------------------------------------------------------------------------------
    def embed(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        dynamic_world: torch.Tensor | None = None,
        latlons: torch.Tensor | None = None,
        month: torch.Tensor | int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer's input: tokens ``(B, N, D)`` and ``keep (B, N)``, which of them exist.

        Each sample's kept tokens come first (see ``_compact``); the rest are padding that ``keep`` blocks.
        """
        cfg = self.config
        if x.ndim != 3 or x.shape[-1] != len(cfg.channels):
            raise ValueError(f"x must be (batch, months, {len(cfg.channels)}), got {tuple(x.shape)}")
        b, t, _ = x.shape
        if not 1 <= t <= cfg.max_sequence_length:
            raise ValueError(f"Presto takes 1..{cfg.max_sequence_length} months, got {t}")
        device = x.device
        x = x.float()
        missing = torch.zeros(x.shape, dtype=torch.bool, device=device) if mask is None else mask.bool()
        # A NaN poisons attention even behind a mask (0 * NaN = NaN inside the projections): zero it, mask it.
        nan = torch.isnan(x)
        x = torch.where(nan, 0.0, x)
        missing = missing | nan
        if dynamic_world is None:
            dynamic_world = torch.full((b, t), cfg.dw_classes, dtype=torch.long, device=device)
        if latlons is None:
            raise ValueError("latlons (batch, 2) in degrees are required")

        # Which tokens exist: a group is missing if any of its bands is, Dynamic World where its class is "missing";
        # the static group gives one token (month 0) and no per-month ones.
        s, dm = self.static_index, cfg.month_embed_size
        group_missing = (missing.float() @ self.membership) > 0  # (B, T, G)
        static_missing = group_missing[:, 0, s].clone()
        group_missing[:, :, s] = True
        dw_missing = dynamic_world == cfg.dw_classes

        # Tokens are built only for the groups present somewhere in the batch (S2-only input: 5 of the 10 slots per
        # month), as a (B, T, groups, D) grid: one matmul, then the code [month | channel | position] added.
        present = (~group_missing.flatten(0, 1)).any(0).tolist()
        groups = [g for g in range(len(self.group_names)) if present[g]]
        parts, slot_missing = [], []
        if groups:
            parts.append(self._group_tokens(x, groups))
            slot_missing.append(group_missing[:, :, groups])
        with_dw = not bool(dw_missing.all())
        if with_dw:
            parts.append(self.dw_embed(dynamic_world)[:, :, None])
            slot_missing.append(dw_missing[:, :, None])
        slots = groups + [len(self.group_names)] * with_dw  # rows of channel_embed; the last is Dynamic World
        channels = self.channel_embed.weight
        keep = [torch.ones(b, 1, dtype=torch.bool, device=device)]  # lat/lon is never masked
        tokens = [self.latlon_embed(self.cartesian(latlons.float()))[:, None]]
        if not bool(static_missing.all()):
            static_code = torch.cat([channels.new_zeros(dm), channels[s], channels.new_zeros(cfg.position_embed_size)])
            tokens.append(self._group_tokens(x[:, :1], [s]).flatten(1, 2) + static_code)  # no month or position
            keep.append(~static_missing[:, None])
        if slots:
            grid = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
            months = self.month_embed(self._month_index(month, b, t, device))  # (B, T, Dm): varies per sample
            code = torch.cat(
                [channels[slots].expand(t, -1, -1), self.pos_embed[0, :t, None].expand(-1, len(slots), -1)], -1
            )  # (T, slots, D - Dm): the same for every sample
            grid[..., :dm] += months[:, :, None]
            grid[..., dm:] += code
            tokens.append(grid.flatten(1, 2))
            missing_slots = torch.cat(slot_missing, dim=2) if len(slot_missing) > 1 else slot_missing[0]
            keep.append(~missing_slots.flatten(1, 2))
        return self._compact(torch.cat(tokens, dim=1), torch.cat(keep, dim=1))  # (B, N, D), (B, N)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        dynamic_world: torch.Tensor | None = None,
        latlons: torch.Tensor | None = None,
        month: torch.Tensor | int = 0,
    ) -> torch.Tensor:
        """Pooled embeddings ``(B, D)``: the blocks, the masked mean over kept tokens, the final norm.

        Plain modules, so autograd and GPU autocast work. ``suelo.models.cpu_engine.CpuEngine`` computes the same
        function faster on a CPU for inference (what ``suelo.models.inference`` runs there).
        """
        tokens, keep = self.embed(x, mask, dynamic_world, latlons, month)
        full = bool(keep.all())  # no padding left: plain attention, plain mean
        attn_mask = None if full else keep[:, None, None, :]  # blocks masked keys for every head and query
        for block in self.blocks:
            tokens = block(tokens, attn_mask)
        if full:
            pooled = tokens.mean(1)
        else:
            weight = keep.to(tokens.dtype)[..., None]
            pooled = (tokens * weight).sum(1) / weight.sum(1)
        embeddings: torch.Tensor = self.norm(pooled)
        return embeddings

    @staticmethod
    def _compact(tokens: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move each sample's kept tokens to the front and cut the batch to its longest kept sequence.

        Pure speed: the static group's per-month slots and groups absent from the whole batch (S1, ERA5, Dynamic
        World for S2-only input) would otherwise be ~40% of the tokens. Masked tokens left in the shorter rows stay
        blocked by ``keep``, so the result is the same.
        """
        n_keep = int(keep.sum(1).max())
        if n_keep == keep.shape[1]:
            return tokens, keep
        order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)[:, :n_keep]
        tokens = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1]))
        return tokens, keep.gather(1, order)


# loading --------------------------------------------------------------------------------------------------------


def load_presto_encoder(path: str | Path = DEFAULT_WEIGHTS, config: PrestoConfig | None = None) -> Encoder:
    """The encoder with the ``encoder.*`` tensors of a Presto state dict (decoder tensors are ignored).

    Only weights-only files are accepted: an arbitrary pickle can run code when loaded.
    """
    from suelo.errors import ModelFileError

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError depending on the file
        problem = " ".join(str(exc).split())[:300]
        raise ModelFileError(path, f"is not a weights-only torch state dict: {type(exc).__name__}: {problem}") from exc
    if not isinstance(state, dict):
        raise ModelFileError(path, f"holds a {type(state).__name__}, expected a state dict")
    prefix = "encoder."
    encoder_state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    encoder = Encoder(config)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(encoder_state))
    unexpected = sorted(set(encoder_state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in encoder_state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise ModelFileError(
            path,
            f"does not match the Presto encoder ({encoder.config}): missing {missing}, unexpected {unexpected},"
            f" shape mismatches {mismatched}",
        )
    encoder.load_state_dict(encoder_state, strict=True)
    return encoder.eval()


# cost -----------------------------------------------------------------------------------------------------------


def flops_per_pixel(n_months: int, n_tokens: int | None = None, config: PrestoConfig | None = None) -> int:
    """Analytic FLOPs (2 x multiply-adds) of the model to encode one pixel of ``n_months``.

    ``n_tokens`` is the sequence length the transformer actually runs on; it defaults to every token, while with
    S2-only input the encoder keeps 5 per month + lat/lon (``5 * n_months + 1``). Elementwise work (norms,
    softmax, GELU, adds) is left out.
    """
    cfg = config or PrestoConfig()
    d = cfg.embedding_size
    n = cfg.tokens_per_pixel(n_months) if n_tokens is None else n_tokens
    groups = dict(cfg.band_groups)
    embed = sum(len(b) * d * (1 if g == cfg.static_group else n_months) for g, b in groups.items()) + 3 * d
    per_layer = n * (3 * d * d + d * d + 2 * d * cfg.mlp_hidden) + 2 * n * n * d  # qkv, proj, mlp; QK^T and AV
    return 2 * (embed + cfg.depth * per_layer)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
