"""A Presto encoder run fast on a CPU for inference: ``Encoder.forward``'s function in fewer passes over memory.

``CpuEngine(encoder, dtype)`` takes a snapshot of the encoder and is then called like it. The model
(``suelo.models.presto``) stays plain modules for reading, training and GPUs; this file holds what pays on a CPU:

- linear layers through oneDNN with the bias (and in float32 the exact GELU) fused into the matmul;
- attention, each residual add with the LayerNorm after it, and the masked mean by the fused C kernels of
  ``suelo.models.cpu_kernels`` (16-float heads keep eager PyTorch busy moving memory, not computing); where those
  cannot be built, ``attention_torch`` and plain torch ops compute the same;
- the last block's fc2 once on the pooled hidden state instead of on every token: fc2 is linear, so
  mean(fc2(h)) = fc2(mean(h)). That is a sixth of the model's multiply-adds (``executed_flops_per_pixel``).

Same function: within 1e-5 of the plain modules in float32. ``dtype=torch.bfloat16`` runs the matmuls in bf16 on a
float32 residual stream (norms and softmax stay float32), about 2e-2 from float32 on the embeddings.

The weights are prepared once, when the engine is built (matmul weights cast to ``dtype``, the attention scale
folded into the query rows), from a private copy of the encoder: the engine is a snapshot, keyed on nothing, so
changing the encoder afterwards (``load_state_dict``, an optimizer step) does not reach it. A new engine runs new
weights; building one takes ~4 ms, so ``suelo.models.inference.cpu_engine`` reuses an encoder's last engine while
``is_snapshot_of`` finds the encoder's weights equal to the snapshot's (~0.5 ms).
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

from suelo.models import cpu_kernels
from suelo.models.presto import Block, Encoder, PrestoConfig, flops_per_pixel

Norm = tuple[torch.Tensor, torch.Tensor, float]  # LayerNorm weight, bias, eps


@dataclass(frozen=True)
class BlockWeights:
    """One transformer block as the engine runs it: matmul weights in the engine's dtype, norms in float32."""

    norm1: Norm
    qkv_weight: torch.Tensor  # its query rows scaled by 1 / sqrt(head_dim) / ln(2): scores come out in log2 units
    qkv_bias: torch.Tensor
    proj_weight: torch.Tensor
    proj_bias: torch.Tensor
    norm2: Norm
    fc1_weight: torch.Tensor
    fc1_bias: torch.Tensor
    fc2_weight: torch.Tensor
    fc2_bias: torch.Tensor


class CpuEngine:
    """``engine(x, mask, dynamic_world, latlons, month) -> (B, D)`` float32, as ``Encoder.forward``, on CPU tensors.

    ``kernels``: True runs this process's C kernels where they are built and pay (``cpu_kernels.library()``),
    False the PyTorch forms, a ``cpu_kernels.Kernels`` those (tests pick an instruction-set variant so). Inference
    only: calls run under ``torch.inference_mode``. Safe to call from several threads at once.
    """

    def __init__(
        self, encoder: Encoder, dtype: torch.dtype = torch.float32, kernels: bool | cpu_kernels.Kernels = True
    ) -> None:
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        if any(t.device.type != "cpu" for t in itertools.chain(encoder.parameters(), encoder.buffers())):
            raise ValueError("CpuEngine runs an encoder on the CPU: move it there first (encoder.cpu())")
        self.dtype = dtype
        self.kernels: cpu_kernels.Kernels | None = (
            cpu_kernels.library() if kernels is True else None if kernels is False else kernels
        )
        # The token embedding runs on this copy, the blocks on weights prepared from it: one consistent snapshot.
        self.encoder = copy.deepcopy(encoder).eval().requires_grad_(False)
        self.config: PrestoConfig = self.encoder.config
        with torch.no_grad():
            # an nn.ModuleList yields plain Modules to mypy; Encoder fills it with Blocks only
            self.blocks = [self._prepare(cast(Block, block)) for block in self.encoder.blocks]
        norm = self.encoder.norm
        self.norm: Norm = (norm.weight.float(), norm.bias.float(), norm.eps)

    def _prepare(self, block: Block) -> BlockWeights:
        d, dtype = self.config.embedding_size, self.dtype
        # exp2(s * log2(e)) = exp(s): the scale 1/sqrt(head_dim) and log2(e) go into the query rows of qkv
        query_scale = torch.ones(3 * d)
        query_scale[:d] = (d // self.config.num_heads) ** -0.5 / math.log(2)
        return BlockWeights(
            norm1=(block.norm1.weight.float(), block.norm1.bias.float(), block.norm1.eps),
            qkv_weight=(block.attn.qkv.weight * query_scale[:, None]).to(dtype),
            qkv_bias=(block.attn.qkv.bias * query_scale).to(dtype),
            proj_weight=block.attn.proj.weight.to(dtype),
            proj_bias=block.attn.proj.bias.to(dtype),
            norm2=(block.norm2.weight.float(), block.norm2.bias.float(), block.norm2.eps),
            fc1_weight=block.mlp.fc1.weight.to(dtype),
            fc1_bias=block.mlp.fc1.bias.to(dtype),
            fc2_weight=block.mlp.fc2.weight.to(dtype),
            fc2_bias=block.mlp.fc2.bias.to(dtype),
        )

    def is_snapshot_of(self, encoder: Encoder) -> bool:
        """Whether ``encoder`` holds exactly the weights this engine was built from: every parameter and buffer
        compared by value, so any change to the encoder (in place or not) tells."""
        mine = [*self.encoder.parameters(), *self.encoder.buffers()]
        theirs = [*encoder.parameters(), *encoder.buffers()]
        return (
            encoder.config == self.config
            and len(mine) == len(theirs)
            and all(
                a.shape == b.shape and a.dtype == b.dtype and b.device.type == "cpu" and torch.equal(a, b)
                for a, b in zip(mine, theirs, strict=True)
            )
        )

    def describe(self) -> str:
        """What runs: the kernels' variant or the PyTorch forms, and the matmul dtype (for logs and tests)."""
        kernels = "PyTorch forms" if self.kernels is None else f"C kernels ({self.kernels.variant.name})"
        return f"{kernels}, {str(self.dtype).removeprefix('torch.')} matmuls"

    @torch.inference_mode()
    def __call__(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        dynamic_world: torch.Tensor | None = None,
        latlons: torch.Tensor | None = None,
        month: torch.Tensor | int = 0,
    ) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"CpuEngine takes CPU tensors, got {x.device}")
        tokens, keep = self.encoder.embed(x, mask, dynamic_world, latlons, month)
        return self._transformer(tokens, keep)

    def _transformer(self, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The blocks, masked mean pool and final norm of ``Encoder.forward``, in fewer passes (module docstring)."""
        heads, dtype, kernels, blocks = self.config.num_heads, self.dtype, self.kernels, self.blocks
        pool = keep.float() / keep.sum(1, keepdim=True)  # (B, N): the masked mean as weights
        x = tokens.float().contiguous()
        if x is tokens:  # the residual stream is updated in place: never the caller's tensor
            x = x.clone()
        h = add_layer_norm(x, None, blocks[0].norm1, dtype, kernels)
        for i, w in enumerate(blocks):
            qkv = linear(h, w.qkv_weight, w.qkv_bias)
            a = None if kernels is None else cpu_kernels.attention(qkv, keep, heads, dtype, kernels)
            if a is None:
                a = attention_torch(qkv, keep, heads).to(dtype)
            h = add_layer_norm(x, linear(a, w.proj_weight, w.proj_bias), w.norm2, dtype, kernels)
            h = linear(h, w.fc1_weight, w.fc1_bias, gelu=True)
            if i < len(blocks) - 1:
                h = add_layer_norm(x, linear(h, w.fc2_weight, w.fc2_bias), blocks[i + 1].norm1, dtype, kernels)
        x_mean, h_mean = weighted_sum(x, pool, kernels), weighted_sum(h, pool, kernels)
        pooled = x_mean + linear(h_mean.to(dtype), w.fc2_weight, w.fc2_bias).float()  # the last fc2, pooled
        weight, bias, eps = self.norm
        return F.layer_norm(pooled, (pooled.shape[-1],), weight, bias, eps)


def executed_flops_per_pixel(n_months: int, n_tokens: int | None = None, config: PrestoConfig | None = None) -> int:
    """``presto.flops_per_pixel`` less what the engine skips: the last block's fc2 runs once, not once per token."""
    cfg = config or PrestoConfig()
    n = cfg.tokens_per_pixel(n_months) if n_tokens is None else n_tokens
    return flops_per_pixel(n_months, n_tokens, cfg) - 2 * (n - 1) * cfg.embedding_size * cfg.mlp_hidden


# the engine's operations ----------------------------------------------------------------------------------------


@functools.cache
def onednn_linear(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused linear (a private torch op) runs ``dtype`` here.

    Probed once per dtype: a torch build may lack the op, and oneDNN has no bf16 matmul on a CPU without AVX-512
    (it raises there), where ``F.linear`` still computes the same.
    """
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        probe = torch.ones(1, 16, dtype=dtype)
        torch.ops.mkldnn._linear_pointwise(probe, torch.ones(16, 16, dtype=dtype), probe[0], "none", [], "none")
    except (AttributeError, RuntimeError):
        return False
    return True


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """``gelu?(x @ weight.T + bias)``; on x86 the matmul is one oneDNN call with the bias in its epilogue.

    The exact (erf) GELU joins the epilogue in float32 (0.4 ms less per fc1 of 64 pixels than a separate pass); in
    bf16 it stays a separate aten pass, which measured faster there.
    """
    onednn = x.device.type == "cpu" and onednn_linear(x.dtype)
    fused_gelu = onednn and gelu and x.dtype == torch.float32
    if onednn:
        y = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if fused_gelu else "none", [], "none")
    else:
        y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu and not fused_gelu else y


def add_layer_norm(
    x: torch.Tensor, delta: torch.Tensor | None, norm: Norm, dtype: torch.dtype, kernels: cpu_kernels.Kernels | None
) -> torch.Tensor:
    """``x += delta`` in place (the residual add), then ``layer_norm(x)`` in the next matmul's ``dtype``."""
    weight, bias, eps = norm
    out = None if kernels is None else cpu_kernels.add_layer_norm(x, delta, weight, bias, eps, dtype, kernels)
    if out is None:
        if delta is not None:
            x += delta
        out = F.layer_norm(x, (x.shape[-1],), weight, bias, eps).to(dtype)
    return out


def weighted_sum(values: torch.Tensor, weights: torch.Tensor, kernels: cpu_kernels.Kernels | None) -> torch.Tensor:
    """``(B, D)`` float32: each sample's tokens ``(B, N, D)`` summed with ``weights (B, N)``."""
    out = None if kernels is None else cpu_kernels.weighted_sum(values, weights, kernels)
    if out is None:
        out = torch.bmm(weights[:, None].to(values.dtype), values)[:, 0].float()
    return out


# exp2 without a shift stays exact while every score is within +-100: no overflow, and a row's top term and
# every term within 2^-24 of it are normal floats (>= 2^-126)
_UNSHIFTED_LIMIT = 100.0


def attention_torch(qkv: torch.Tensor, keep: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax attention from a fused ``qkv (B, N, 3D)`` whose query part is pre-scaled to log2 units.

    The PyTorch form of ``cpu_kernels.attention``. With 16-dim heads, attention on a CPU is bound by passes over
    the (B, H, N, N) scores, not by FLOPs, so this makes four instead of six: the score matmul, one in-place exp2,
    the normalizer, the value matmul. Softmax subtracts each row's max only to keep exp in range; here the
    Cauchy-Schwarz bound ``|q| max|k|`` proves every score is within +-100 (it is for Presto's weights on real
    pixels), and then exp2 needs no shift at all. Masked keys get zero weight. Otherwise the usual row-max form
    runs, in float32. The unshifted form's matmuls and exp2 run in ``qkv``'s dtype: bf16 scores in fast mode, the
    normalizer always summed in float32. Returns ``(B, N, D)`` float32.
    """
    b, n, three_d = qkv.shape
    d = three_d // 3
    dh = d // heads
    q, k, v = (part.contiguous() for part in qkv.view(b, n, 3, heads, dh).permute(2, 0, 3, 1, 4))  # (B, H, N, dh)
    bound = float(
        (
            torch.linalg.vector_norm(q, dim=-1, dtype=torch.float32)
            * torch.linalg.vector_norm(k, dim=-1, dtype=torch.float32).amax(-1, keepdim=True)
        ).max()
    )
    largest_value = float(v.abs().amax()) * n  # bounds the value matmul: 2^score * n * max|v| must stay finite
    if bound <= _UNSHIFTED_LIMIT and bound + math.log2(max(largest_value, 1.0)) < 126:
        weights = torch.matmul(q, k.transpose(-1, -2)).exp2_()
        if not bool(keep.all()):
            weights.masked_fill_(~keep[:, None, None, :], 0.0)
        normalizer = weights.sum(-1, keepdim=True, dtype=torch.float32)
        out = torch.matmul(weights, v).float().div_(normalizer)
        return out.transpose(1, 2).reshape(b, n, d)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2))
    scores.masked_fill_(~keep[:, None, None, :], -math.inf)
    weights = scores.sub_(scores.amax(-1, keepdim=True)).exp2_()
    out = torch.matmul(weights, v.float()).div_(weights.sum(-1, keepdim=True))
    return out.transpose(1, 2).reshape(b, n, d)
