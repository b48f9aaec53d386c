"""A straightforward, upstream-style Presto encoder: the baseline ``benchmarks.encoder`` measures ours against.

Written in the style of the reference implementation (github.com/nasaharvest/presto, MIT): a Python loop over the
band groups with one linear layer each, embeddings repeated to the token grid, masked tokens dropped by boolean
indexing (so every sample of a batch must have the same number of masked tokens), attention as
``softmax(q k^T / sqrt(d)) v`` on the full score matrix, pre-norm blocks with a GELU MLP, mean pool then LayerNorm.
It loads the same ``encoder.*`` tensors as ``suelo.models.presto`` and must reproduce the parity embeddings itself.
Nothing here is tuned: it is the yardstick, not production code.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from suelo.models.presto import CHANNELS, DEFAULT_WEIGHTS, PrestoConfig, month_table, sinusoid_table


class RefAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RefAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = RefMlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def repeat_rows(t: torch.Tensor, b: int) -> torch.Tensor:
    """einops ``repeat(t, "1 ... -> b ...")`` with torch ops."""
    return t.repeat(b, *([1] * (t.ndim - 1)))


class ReferenceEncoder(nn.Module):
    """``forward(x, dynamic_world, latlons, mask, month)``: same inputs as ``suelo.models.presto.Encoder``."""

    def __init__(self, config: PrestoConfig | None = None) -> None:
        super().__init__()
        cfg = config or PrestoConfig()
        self.config = cfg
        d = cfg.embedding_size
        self.band_groups = {name: [CHANNELS.index(b) for b in bands] for name, bands in cfg.band_groups}
        self.band_group_to_idx = {name: i for i, name in enumerate(self.band_groups)}
        self.band_group_to_idx["dynamic_world"] = len(self.band_groups)
        self.eo_patch_embed = nn.ModuleDict({name: nn.Linear(len(idx), d) for name, idx in self.band_groups.items()})
        self.dw_embed = nn.Embedding(cfg.dw_classes + 1, d)
        self.latlon_embed = nn.Linear(3, d)
        self.blocks = nn.ModuleList([RefBlock(d, cfg.num_heads, cfg.mlp_hidden) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d)
        pos = sinusoid_table(cfg.max_sequence_length, cfg.position_embed_size, cfg.position_base)
        self.register_buffer("pos_embed", pos[None])
        self.month_embed = nn.Embedding.from_pretrained(month_table(cfg.month_embed_size))
        self.channel_embed = nn.Embedding(len(self.band_group_to_idx), cfg.channel_embed_size)

    @staticmethod
    def cartesian(latlons: torch.Tensor) -> torch.Tensor:
        rad = latlons * math.pi / 180
        lat, lon = rad[:, 0], rad[:, 1]
        return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon), torch.sin(lat)], -1)

    @staticmethod
    def mask_tokens(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Drop masked tokens by boolean indexing; needs the same number of masked tokens in every sample."""
        summed = mask.sum(dim=(1, 2))
        if summed.max() != summed.min():
            raise ValueError("the reference needs the same number of masked tokens in every sample of a batch")
        b, n, d = x.shape
        kept = n - int(summed.max()) // d
        return x[~mask.bool()].view(b, kept, d)

    def forward(
        self,
        x: torch.Tensor,
        dynamic_world: torch.Tensor,
        latlons: torch.Tensor,
        mask: torch.Tensor,
        month: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        device = x.device
        mask = mask.float()
        if isinstance(month, int):
            month = torch.full((b,), month, device=device)
        months = (month.long()[:, None] + torch.arange(t, device=device)) % 12
        month_embedding = self.month_embed(months)
        positional_embedding = repeat_rows(self.pos_embed[:, :t, :], b)

        all_tokens, all_masks = [], []
        for group, idx in self.band_groups.items():
            tokens = self.eo_patch_embed[group](x[:, :, idx])
            channel = self.channel_embed(torch.tensor(self.band_group_to_idx[group], device=device))
            channel = channel[None, None].expand(b, t, -1)
            if group == self.config.static_group:  # one token, from the first month, with no month or position
                code = torch.cat(
                    [
                        torch.zeros_like(month_embedding[:, 0:1]),
                        channel[:, 0:1],
                        torch.zeros_like(positional_embedding[:, 0:1]),
                    ],
                    dim=-1,
                )
                steps = slice(0, 1)
            else:
                code = torch.cat([month_embedding, channel, positional_embedding], dim=-1)
                steps = slice(None)
            tokens = tokens[:, steps] + code
            all_tokens.append(tokens)
            group_mask = torch.max(mask[:, steps][:, :, idx], dim=-1)[0]
            all_masks.append(group_mask[..., None].repeat(1, 1, tokens.shape[-1]))

        tokens = self.dw_embed(dynamic_world)
        channel = self.channel_embed(torch.tensor(self.band_group_to_idx["dynamic_world"], device=device))
        channel = channel[None, None].expand(b, t, -1)
        tokens = tokens + torch.cat([month_embedding, channel, positional_embedding], dim=-1)
        all_tokens.append(tokens)
        dw_mask = (dynamic_world == self.config.dw_classes).float()
        all_masks.append(dw_mask[..., None].repeat(1, 1, tokens.shape[-1]))

        x = self.mask_tokens(torch.cat(all_tokens, dim=1), torch.cat(all_masks, dim=1))
        latlon_tokens = self.latlon_embed(self.cartesian(latlons)).unsqueeze(1)
        x = torch.cat([latlon_tokens, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x.mean(dim=1))


def load_reference_encoder(path: str | Path = DEFAULT_WEIGHTS) -> ReferenceEncoder:
    state = torch.load(path, map_location="cpu", weights_only=True)
    encoder = ReferenceEncoder()
    encoder.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    return encoder.eval()
