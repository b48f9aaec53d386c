"""The fused C kernels of models/cpu_kernels.c against float64 references, their build cache and the fallback."""

from __future__ import annotations

import logging
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suelo.models import cpu_kernels
from suelo.models.presto import load_presto_encoder

needs_kernels = pytest.mark.skipif(cpu_kernels.library() is None, reason="the C kernels cannot be built here")


def softmax_attention(qkv: torch.Tensor, keep: torch.Tensor, heads: int) -> torch.Tensor:
    """float64 multi-head attention of a qkv whose queries are scaled to log2 units, as the kernel takes them."""
    b, n, three_d = qkv.shape
    q, k, v = qkv.double().view(b, n, 3, heads, three_d // 3 // heads).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) * math.log(2)
    scores = scores.masked_fill(~keep[:, None, None, :], -math.inf)
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, three_d // 3)


def random_qkv(b: int, n: int, heads: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(b, n, 3 * heads * 16, generator=generator) * scale
    keep = torch.rand(b, n, generator=generator) > 0.3
    keep[:, n // 2] = True  # every row keeps a key, not always the first
    return qkv, keep


@needs_kernels
@pytest.mark.parametrize("tokens", [1, 5, 16, 17, 61, 64, 65, 130])  # 1-4 blocks in registers, more in memory
def test_attention_equals_softmax_attention(tokens: int) -> None:
    qkv, keep = random_qkv(3, tokens, 2, 1.0, seed=tokens)
    out = cpu_kernels.attention(qkv, keep, 2, torch.float32)
    assert out is not None and out.shape == (3, tokens, 32) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), softmax_attention(qkv, keep, 2).numpy(), rtol=0, atol=2e-6)


@needs_kernels
def test_attention_at_extreme_scores_stays_exact() -> None:
    """Scores of +-10^4 in log2 units: the row max shift keeps 2^x in range; the winner takes all."""
    qkv, keep = random_qkv(2, 61, 2, 40.0, seed=1)
    out = cpu_kernels.attention(qkv, keep, 2, torch.float32)
    assert torch.isfinite(out).all()
    expected = softmax_attention(qkv, keep, 2)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6, atol=1e-4)


@needs_kernels
def test_attention_bf16_inputs_and_outputs() -> None:
    qkv, keep = random_qkv(4, 61, 8, 0.5, seed=2)
    rounded = qkv.bfloat16()
    expected = softmax_attention(rounded.float(), keep, 8)
    from_bf16 = cpu_kernels.attention(rounded, keep, 8, torch.float32)
    np.testing.assert_allclose(from_bf16.numpy(), expected.numpy(), rtol=0, atol=2e-6)  # float32 inside
    to_bf16 = cpu_kernels.attention(rounded, keep, 8, torch.bfloat16)
    assert to_bf16.dtype == torch.bfloat16
    # round to nearest: within half a bf16 step (2^-8 relative) of the float32 result
    np.testing.assert_allclose(to_bf16.float().numpy(), from_bf16.numpy(), rtol=2**-8, atol=1e-30)


def test_attention_declines_what_it_cannot_serve() -> None:
    qkv, keep = random_qkv(1, 4, 2, 1.0, seed=3)
    assert cpu_kernels.attention(qkv[..., :-3], keep, 2, torch.float32) is None  # heads of 15.5 floats
    assert cpu_kernels.attention(qkv.double(), keep, 2, torch.float32) is None
    assert cpu_kernels.attention(qkv, keep, 2, torch.float16) is None


@needs_kernels
@pytest.mark.parametrize(("delta_dtype", "out_dtype"), [(None, torch.float32), (torch.float32, torch.float32),
                                                        (torch.bfloat16, torch.bfloat16)])  # fmt: skip
def test_add_layer_norm(delta_dtype: torch.dtype | None, out_dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(7, 9, 128, generator=generator) * 3 + 1
    delta = None if delta_dtype is None else torch.randn(7, 9, 128, generator=generator).to(delta_dtype)
    weight, bias = torch.randn(128, generator=generator), torch.randn(128, generator=generator)
    expected_x = x.double() + (0 if delta is None else delta.double())
    expected = F.layer_norm(expected_x, (128,), weight.double(), bias.double(), 1e-5)
    stream = x.clone()
    out = cpu_kernels.add_layer_norm(stream, delta, weight, bias, 1e-5, out_dtype)
    assert out.dtype == out_dtype
    np.testing.assert_allclose(stream.numpy(), expected_x.numpy(), rtol=0, atol=1e-5)  # the residual, in place
    if out_dtype == torch.float32:
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=0, atol=1e-5)
    else:
        np.testing.assert_allclose(out.float().numpy(), expected.numpy(), rtol=2**-8, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weighted_sum_skips_zero_weights(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(5)
    values = torch.randn(3, 10, 64, generator=generator).to(dtype)
    weights = torch.rand(3, 10, generator=generator)
    weights[:, 7:] = 0
    values[:, 8] = math.nan  # a padded token behind a zero weight contributes nothing, not NaN
    expected = (weights[..., None].double() * torch.nan_to_num(values.double())).sum(1)
    out = cpu_kernels.weighted_sum(values, weights)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=0, atol=1e-5)


@pytest.fixture
def library_reset() -> Iterator[None]:
    cpu_kernels.library.cache_clear()
    yield
    cpu_kernels.library.cache_clear()


@needs_kernels
def test_encoder_with_and_without_the_kernels(monkeypatch: pytest.MonkeyPatch, library_reset: None) -> None:
    encoder = load_presto_encoder()
    generator = torch.Generator().manual_seed(6)
    x = torch.rand(24, 12, 9, generator=generator) * 0.4
    from suelo.models.presto_inputs import presto_inputs

    latlons = np.tile(np.array([[50.5, 4.5]], dtype=np.float32), (24, 1))
    s2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
    inputs, mask, dw = presto_inputs(x.numpy(), s2, latlons=latlons)
    mask[::3, 4:] = True  # some pixels lose months: padding and masked keys
    args = [torch.from_numpy(a) for a in (inputs, mask, dw, latlons)]
    with torch.inference_mode():
        fused = {dtype: encoder(*args, 6, compute_dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
        monkeypatch.setenv("SUELO_CPU_KERNELS", "0")
        cpu_kernels.library.cache_clear()
        assert cpu_kernels.library() is None
        plain = {dtype: encoder(*args, 6, compute_dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
        reference = encoder(*args, 6, kernels="torch")
    np.testing.assert_allclose(fused[torch.float32].numpy(), reference.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(plain[torch.float32].numpy(), reference.numpy(), rtol=0, atol=1e-5)
    assert np.abs(fused[torch.bfloat16].numpy() - plain[torch.bfloat16].numpy()).max() < 0.1


@needs_kernels
def test_build_is_cached_per_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, library_reset: None) -> None:
    monkeypatch.setenv("SUELO_KERNEL_CACHE", str(tmp_path))
    assert cpu_kernels.library() is not None
    built = list(tmp_path.glob("cpu_kernels-*.so"))
    assert len(built) == 1 and not list(tmp_path.glob(".cpu_kernels-*"))  # no temporary file left behind
    first_mtime = built[0].stat().st_mtime_ns
    cpu_kernels.library.cache_clear()
    assert cpu_kernels.library() is not None
    assert built[0].stat().st_mtime_ns == first_mtime  # loaded from the cache, not rebuilt
    edited = tmp_path / "src" / "cpu_kernels.c"
    edited.parent.mkdir()
    edited.write_text(cpu_kernels.SOURCE.read_text() + "\n/* edited */\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", edited)
    cpu_kernels.library.cache_clear()
    assert cpu_kernels.library() is not None
    assert len(list(tmp_path.glob("cpu_kernels-*.so"))) == 2  # another source, another build


def test_a_failing_compiler_means_the_pytorch_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, library_reset: None, caplog: pytest.LogCaptureFixture
) -> None:
    compiler = tmp_path / "broken-cc"
    compiler.write_text("#!/bin/sh\necho 'broken-cc: cannot compile' >&2\nexit 1\n")
    compiler.chmod(compiler.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setenv("SUELO_KERNEL_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="suelo.models.cpu_kernels"):
        assert cpu_kernels.library() is None
    assert "cannot compile" in caplog.text
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix == ".so"]
    qkv, keep = random_qkv(1, 4, 2, 1.0, seed=7)
    assert cpu_kernels.attention(qkv, keep, 2, torch.float32) is None
    assert os.environ["CC"] == str(compiler)


@needs_kernels
def test_portable_build_computes_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, library_reset: None) -> None:
    """Built for the baseline ISA (no -march=native): the generic 2^x and bf16 rounding instead of AVX-512's."""
    monkeypatch.setenv("SUELO_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "FLAG_SETS", (["-O2"],))
    assert cpu_kernels.library() is not None
    qkv, keep = random_qkv(3, 61, 2, 1.0, seed=8)
    out = cpu_kernels.attention(qkv, keep, 2, torch.float32)
    np.testing.assert_allclose(out.numpy(), softmax_attention(qkv, keep, 2).numpy(), rtol=0, atol=2e-6)
    masked_out = cpu_kernels.attention(qkv * 40, keep, 2, torch.float32)
    assert torch.isfinite(masked_out).all()
    x = torch.randn(50, 128, generator=torch.Generator().manual_seed(9)) * 2
    as_bf16 = cpu_kernels.add_layer_norm(x.clone(), None, torch.ones(128), torch.zeros(128), 1e-5, torch.bfloat16)
    exact = F.layer_norm(x.double(), (128,), eps=1e-5)
    # rounded to nearest: within half a bf16 step (truncation would be off by up to a whole one)
    np.testing.assert_allclose(as_bf16.float().numpy(), exact.numpy(), rtol=2**-8, atol=0)


def test_run_records_say_what_ran(monkeypatch: pytest.MonkeyPatch, library_reset: None) -> None:
    from suelo.provenance import software_versions

    if cpu_kernels.library() is not None:
        assert software_versions()["cpu_kernels"].startswith("cpu_kernels-")
        assert "-O" in cpu_kernels.describe()
    monkeypatch.setenv("SUELO_CPU_KERNELS", "0")
    cpu_kernels.library.cache_clear()
    assert software_versions()["cpu_kernels"] == "unavailable (PyTorch forms)"


@needs_kernels  # with no compiler at all there is nothing to build, hence no warning
def test_an_unwritable_cache_means_the_pytorch_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, library_reset: None, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("SUELO_KERNEL_CACHE", str(blocker / "suelo"))
    with caplog.at_level(logging.WARNING, logger="suelo.models.cpu_kernels"):
        assert cpu_kernels.library() is None  # logged, not raised: the encoder still runs
    assert "could not be built" in caplog.text


def test_cache_folder_without_a_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUELO_KERNEL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert cpu_kernels.cache_dir().parent.parent == Path(tempfile.gettempdir())
