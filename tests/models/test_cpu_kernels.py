"""The fused C kernels of models/cpu_kernels.c against float64 references, their build, cache and dispatch, and the
fallback. Without a C compiler the kernel tests skip; with one, a build that fails fails them."""

from __future__ import annotations

import builtins
import logging
import math
import os
import platform
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suelo.models import cpu_kernels
from suelo.models.cpu_engine import CpuEngine
from suelo.models.presto import load_presto_encoder
from suelo.models.presto_inputs import presto_inputs


@pytest.fixture(scope="module")
def built() -> cpu_kernels.Kernels:
    """The library, bound to the widest variant this CPU runs; a compiler that cannot build it fails the test."""
    cc = cpu_kernels.compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc, clang or $CC) to build the kernels with")
    return cpu_kernels.build(cc)  # raises KernelBuildError with the compiler's message


def variant_names() -> list[str]:
    return [v.name for v in cpu_kernels.variants_for_this_architecture()]


@pytest.fixture(params=variant_names())
def kernels(request: pytest.FixtureRequest, built: cpu_kernels.Kernels) -> cpu_kernels.Kernels:
    """Each variant of the one library that this CPU can run (one it cannot, such as AVX-512 elsewhere, skips)."""
    if not built.supports(request.param):
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    return built.use(request.param)


@pytest.fixture
def library_reset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh ``library()`` for the test, whatever SUELO_CPU_KERNELS the suite was started with."""
    monkeypatch.delenv("SUELO_CPU_KERNELS", raising=False)
    cpu_kernels.library.cache_clear()
    yield
    cpu_kernels.library.cache_clear()


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


# the kernels, each variant this CPU runs ------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [1, 5, 16, 17, 61, 64, 65, 130])  # 1-4 blocks in registers, more in memory
def test_attention_equals_softmax_attention(kernels: cpu_kernels.Kernels, tokens: int) -> None:
    qkv, keep = random_qkv(3, tokens, 2, 1.0, seed=tokens)
    out = cpu_kernels.attention(qkv, keep, 2, torch.float32, kernels)
    assert out is not None and out.shape == (3, tokens, 32) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), softmax_attention(qkv, keep, 2).numpy(), rtol=0, atol=2e-6)


def test_attention_at_extreme_scores_stays_exact(kernels: cpu_kernels.Kernels) -> None:
    """Scores of +-10^4 in log2 units: the row max shift keeps 2^x in range; the winner takes all."""
    qkv, keep = random_qkv(2, 61, 2, 40.0, seed=1)
    out = cpu_kernels.attention(qkv, keep, 2, torch.float32, kernels)
    assert torch.isfinite(out).all()
    expected = softmax_attention(qkv, keep, 2)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6, atol=1e-4)


def test_attention_bf16_inputs_and_outputs(kernels: cpu_kernels.Kernels) -> None:
    qkv, keep = random_qkv(4, 61, 8, 0.5, seed=2)
    rounded = qkv.bfloat16()
    expected = softmax_attention(rounded.float(), keep, 8)
    from_bf16 = cpu_kernels.attention(rounded, keep, 8, torch.float32, kernels)
    np.testing.assert_allclose(from_bf16.numpy(), expected.numpy(), rtol=0, atol=2e-6)  # float32 inside
    to_bf16 = cpu_kernels.attention(rounded, keep, 8, torch.bfloat16, kernels)
    assert to_bf16.dtype == torch.bfloat16
    # round to nearest: within half a bf16 step (2^-8 relative) of the float32 result
    np.testing.assert_allclose(to_bf16.float().numpy(), from_bf16.numpy(), rtol=2**-8, atol=1e-30)


def test_attention_declines_what_it_cannot_serve(built: cpu_kernels.Kernels) -> None:
    qkv, keep = random_qkv(1, 4, 2, 1.0, seed=3)
    assert cpu_kernels.attention(qkv[..., :-3], keep, 2, torch.float32, built) is None  # heads of 15.5 floats
    assert cpu_kernels.attention(qkv.double(), keep, 2, torch.float32, built) is None
    assert cpu_kernels.attention(qkv, keep, 2, torch.float16, built) is None


@pytest.mark.parametrize(("delta_dtype", "out_dtype"), [(None, torch.float32), (torch.float32, torch.float32),
                                                        (torch.bfloat16, torch.bfloat16)])  # fmt: skip
def test_add_layer_norm(kernels: cpu_kernels.Kernels, delta_dtype: torch.dtype | None, out_dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(7, 9, 128, generator=generator) * 3 + 1
    delta = None if delta_dtype is None else torch.randn(7, 9, 128, generator=generator).to(delta_dtype)
    weight, bias = torch.randn(128, generator=generator), torch.randn(128, generator=generator)
    expected_x = x.double() + (0 if delta is None else delta.double())
    expected = F.layer_norm(expected_x, (128,), weight.double(), bias.double(), 1e-5)
    stream = x.clone()
    out = cpu_kernels.add_layer_norm(stream, delta, weight, bias, 1e-5, out_dtype, kernels)
    assert out.dtype == out_dtype
    np.testing.assert_allclose(stream.numpy(), expected_x.numpy(), rtol=0, atol=1e-5)  # the residual, in place
    if out_dtype == torch.float32:
        np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=0, atol=1e-5)
    else:
        np.testing.assert_allclose(out.float().numpy(), expected.numpy(), rtol=2**-8, atol=1e-6)


def test_layer_norm_rounds_bf16_to_nearest(kernels: cpu_kernels.Kernels) -> None:
    """AVX-512's rounding instruction and the narrower passes' integer rounding both round to nearest."""
    x = torch.randn(50, 128, generator=torch.Generator().manual_seed(9)) * 2
    ones, zeros = torch.ones(128), torch.zeros(128)
    as_bf16 = cpu_kernels.add_layer_norm(x.clone(), None, ones, zeros, 1e-5, torch.bfloat16, kernels)
    exact = F.layer_norm(x.double(), (128,), eps=1e-5)
    # within half a bf16 step (truncation would be off by up to a whole one)
    np.testing.assert_allclose(as_bf16.float().numpy(), exact.numpy(), rtol=2**-8, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weighted_sum_skips_zero_weights(kernels: cpu_kernels.Kernels, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(5)
    values = torch.randn(3, 10, 64, generator=generator).to(dtype)
    weights = torch.rand(3, 10, generator=generator)
    weights[:, 7:] = 0
    values[:, 8] = math.nan  # a padded token behind a zero weight contributes nothing, not NaN
    expected = (weights[..., None].double() * torch.nan_to_num(values.double())).sum(1)
    out = cpu_kernels.weighted_sum(values, weights, kernels)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=0, atol=1e-5)


def test_engine_with_and_without_the_kernels(kernels: cpu_kernels.Kernels) -> None:
    encoder = load_presto_encoder()
    generator = torch.Generator().manual_seed(6)
    x = torch.rand(24, 12, 9, generator=generator) * 0.4
    latlons = np.tile(np.array([[50.5, 4.5]], dtype=np.float32), (24, 1))
    s2 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
    inputs, mask, dw = presto_inputs(x.numpy(), s2, latlons=latlons)
    mask[::3, 4:] = True  # some pixels lose months: padding and masked keys
    args = [torch.from_numpy(a) for a in (inputs, mask, dw, latlons)]
    dtypes = (torch.float32, torch.bfloat16)
    fused = {dtype: CpuEngine(encoder, dtype, kernels)(*args, 6) for dtype in dtypes}
    plain = {dtype: CpuEngine(encoder, dtype, kernels=False)(*args, 6) for dtype in dtypes}
    with torch.inference_mode():
        reference = encoder(*args, 6)
    assert CpuEngine(encoder, kernels=kernels).describe().startswith(f"C kernels ({kernels.variant.name})")
    np.testing.assert_allclose(fused[torch.float32].numpy(), reference.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(plain[torch.float32].numpy(), reference.numpy(), rtol=0, atol=1e-5)
    assert np.abs(fused[torch.bfloat16].numpy() - plain[torch.bfloat16].numpy()).max() < 0.1


# one build for every CPU: dispatch and cache ------------------------------------------------------------------


def test_one_library_holds_every_variant(built: cpu_kernels.Kernels) -> None:
    """A mixed cluster shares one build: every variant's kernels are in it, whatever CPU built it."""
    assert [v.name for v in built.variants] == variant_names()
    for variant in built.variants:
        for kernel in ("suelo_attention", "suelo_add_layer_norm", "suelo_weighted_sum"):
            assert hasattr(built.library, f"{kernel}_{variant.name}")
    assert built.supports("baseline") and not built.supports("no-such-variant")
    with pytest.raises(ValueError, match="cannot run"):
        built.use("no-such-variant")


def test_this_process_runs_the_widest_variant_that_pays(built: cpu_kernels.Kernels, library_reset: None) -> None:
    """On an AVX-512 CPU the encoder runs the AVX-512 kernels; on other x86 CPUs its (there faster) PyTorch forms."""
    widest = next(v for v in built.variants if built.supports(v.name))
    assert built.variant == widest
    running = cpu_kernels.library()
    assert (running is not None) == widest.by_default
    if running is not None:
        assert running.variant == widest and CpuEngine(load_presto_encoder()).kernels == running
        assert f"this CPU runs {widest.name}" in cpu_kernels.describe()
    else:
        assert "holds no variant that beats them" in cpu_kernels.describe()
    if built.supports("avx512"):  # what this machine's encoder must run: AVX-512 kernels, with BF16 where it has it
        expected = "avx512bf16" if built.supports("avx512bf16") else "avx512"
        assert running is not None and running.variant.name == expected


def test_the_build_does_not_depend_on_the_cpu(built: cpu_kernels.Kernels, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache key is the source, compiler, flags and architecture: nothing read from the CPU."""
    cc = cpu_kernels.compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = cpu_kernels.build_key(cc, version, built.variants)
    assert built.path.name == f"cpu_kernels-{key}.so"
    real_open = builtins.open

    def no_cpuinfo(file: object, *args: object, **kwargs: object) -> object:
        if str(file).startswith("/proc/cpuinfo"):
            raise AssertionError("the build key read the CPU's identity")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr(platform, "processor", lambda: "another CPU")
    assert cpu_kernels.build_key(cc, version, built.variants) == key


def test_build_is_cached_per_source(
    built: cpu_kernels.Kernels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUELO_KERNEL_CACHE", str(tmp_path))
    first = cpu_kernels.build().path
    assert first.parent == tmp_path and list(tmp_path.iterdir()) == [first]  # no scratch files left behind
    first_mtime = first.stat().st_mtime_ns
    assert cpu_kernels.build().path == first
    assert first.stat().st_mtime_ns == first_mtime  # loaded from the cache, not rebuilt
    edited = tmp_path / "src" / "cpu_kernels.c"
    edited.parent.mkdir()
    edited.write_text(cpu_kernels.SOURCE.read_text() + "\n/* edited */\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", edited)
    assert cpu_kernels.build().path != first
    assert len(list(tmp_path.glob("cpu_kernels-*.so"))) == 2  # another source, another build


def fake_compiler(folder: Path, script: str) -> Path:
    path = folder / "fake-cc"
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_failing_compiler_fails_the_build_and_the_encoder_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, library_reset: None, caplog: pytest.LogCaptureFixture
) -> None:
    compiler = fake_compiler(tmp_path, "#!/bin/sh\necho 'broken-cc: cannot compile' >&2\nexit 1\n")
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setenv("SUELO_KERNEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(cpu_kernels.KernelBuildError, match="cannot compile"):
        cpu_kernels.build()  # what the kernel tests get: a failure, not a skip
    with caplog.at_level(logging.WARNING, logger="suelo.models.cpu_kernels"):
        assert cpu_kernels.library() is None  # what the encoder gets: its PyTorch forms
    assert "cannot compile" in caplog.text
    assert not list((tmp_path / "cache").iterdir())  # no library, no scratch folder left
    qkv, keep = random_qkv(1, 4, 2, 1.0, seed=7)
    assert cpu_kernels.attention(qkv, keep, 2, torch.float32) is None
    assert CpuEngine(load_presto_encoder()).kernels is None
    assert os.environ["CC"] == str(compiler)


@pytest.mark.skipif(len(variant_names()) == 1, reason="only the portable pass is built on this architecture")
def test_a_compiler_without_the_avx512_flags_gives_the_baseline(
    built: cpu_kernels.Kernels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old compiler that rejects -mavx512*: a second attempt, the portable pass alone, whose kernels work."""
    cc = cpu_kernels.compiler()
    script = f'#!/bin/sh\ncase "$*" in *-mavx512*) echo "unknown flag" >&2; exit 1;; esac\nexec {cc} "$@"\n'
    monkeypatch.setenv("SUELO_KERNEL_CACHE", str(tmp_path / "cache"))
    baseline = cpu_kernels.build(str(fake_compiler(tmp_path, script)))
    assert [v.name for v in baseline.variants] == ["baseline"] and baseline.variant.name == "baseline"
    qkv, keep = random_qkv(3, 61, 2, 1.0, seed=8)
    out = cpu_kernels.attention(qkv, keep, 2, torch.float32, baseline)
    np.testing.assert_allclose(out.numpy(), softmax_attention(qkv, keep, 2).numpy(), rtol=0, atol=2e-6)


def test_run_records_say_what_ran(monkeypatch: pytest.MonkeyPatch, library_reset: None) -> None:
    from suelo.provenance import software_versions

    if cpu_kernels.library() is not None:
        assert software_versions()["cpu_kernels"].startswith("cpu_kernels-")
        assert "-O" in cpu_kernels.describe() and "this CPU runs" in cpu_kernels.describe()
    monkeypatch.setenv("SUELO_CPU_KERNELS", "0")
    cpu_kernels.library.cache_clear()
    assert software_versions()["cpu_kernels"] == "unavailable (PyTorch forms): switched off (SUELO_CPU_KERNELS=0)"


def test_an_unwritable_cache_means_the_pytorch_forms(
    built: cpu_kernels.Kernels,  # with no compiler at all there is nothing to build, hence no warning
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    library_reset: None,
    caplog: pytest.LogCaptureFixture,
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
