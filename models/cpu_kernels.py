"""Fused C kernels for CPU inference (``cpu_kernels.c``), compiled on first use into one library for every CPU.

The encoder works without them: every kernel here has a PyTorch equivalent in ``suelo.models.cpu_engine`` that runs
when the library is unavailable (no C compiler, ``SUELO_CPU_KERNELS=0``, a head size other than 16, a CPU where
they do not pay): each function here returns None then.

One build serves a mixed cluster. The source is compiled once per instruction-set level (``X86_VARIANTS``: AVX-512
with and without BF16, the architecture's baseline) and the passes are linked into one library whose kernels carry
the level in their names; at load time each process asks the library (``suelo_cpu_supports``) which levels its CPU
runs and binds the widest. The build depends on the source, the compiler, its flags and the architecture, never on
the host's CPU, so one cache on a shared file system serves every node. It replaced a ``-march=native`` build keyed
by the host's CPU flags, which every CPU model of a cluster compiled for itself. Function multi-versioning
(``target_clones``) was the other candidate; it would lose the hand-written AVX-512 paths, which the preprocessor
picks per pass, and it needs ifunc support from the C library.

Where the CPU has no AVX-512, the kernels do not run by default: their 16-float vectors are wider than AVX2's, GCC
splits them through memory, and on such a CPU the PyTorch forms measured faster (942 px/s against 826 for the
baseline pass and 644 for an AVX2 pass, PyTorch limited to AVX2 on an AVX-512 machine). The baseline pass is still
built: the CPU question lives in it, other architectures run it, and the tests run it everywhere.

The build is cached, keyed by what it depends on, under ``$SUELO_KERNEL_CACHE`` (default ``$XDG_CACHE_HOME/suelo``
or ``~/.cache/suelo``); it is linked to a temporary file and renamed, so processes that build at once never load a
half-written library. ``python -m suelo.models.cpu_kernels`` builds it ahead of time (an image build, a cluster's
shared cache) and prints what this CPU runs.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_kernels.c")
HEAD_DIM = 16  # the only head size the kernels serve (Presto: 128 / 8)


@dataclass(frozen=True)
class Variant:
    """One compiler pass over the source: the suffix of its kernels' names and its instruction-set flags."""

    name: str
    flags: tuple[str, ...]
    by_default: bool  # run where it is the widest the CPU supports; False where the PyTorch forms are faster


_AVX512 = ("-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma")  # x86-64-v4's AVX-512 set
#: Widest first. The flags must stay the features ``suelo_cpu_supports`` in cpu_kernels.c asks the CPU for.
X86_VARIANTS: tuple[Variant, ...] = (
    # AVX512-BF16 adds one instruction, the rounding to bf16: 15% off the bf16 LayerNorm, ~4% off bf16 encoding
    Variant("avx512bf16", (*_AVX512, "-mavx512bf16"), by_default=True),
    Variant("avx512", _AVX512, by_default=True),
    # not run by default here, so -O2: it compiles in 0.9 s instead of the 5.3 s -O3 takes over the split vectors
    Variant("baseline", ("-O2",), by_default=False),
)
#: Other architectures (arm64, ...): the compiler's default target for it.
PORTABLE: tuple[Variant, ...] = (Variant("baseline", (), by_default=True),)
OPTIMIZE = ("-O3",)
# -Wno-psabi: the 64-byte vector ABI notes concern static helpers only; the exported kernels take pointers
COMMON_FLAGS = ("-std=gnu11", "-fPIC", "-fno-math-errno", "-Wno-psabi")

log = logging.getLogger(__name__)


class KernelBuildError(RuntimeError):
    """The compiler was found but no build of the kernels could be made or loaded; the message says why."""


@dataclass(frozen=True)
class Kernels:
    """The loaded library and the entry points of one of its variants."""

    path: Path
    variant: Variant
    variants: tuple[Variant, ...]  # all that the library holds, widest first
    build_command: str
    library: ctypes.CDLL
    attention: Callable[..., int]  # ctypes functions with their argtypes set
    add_layer_norm: Callable[..., None]
    weighted_sum: Callable[..., None]

    def supports(self, name: str) -> bool:
        """Whether the library holds the variant ``name`` and this host's CPU can run it."""
        held = any(v.name == name for v in self.variants)
        return held and bool(self.library.suelo_cpu_supports(name.encode()))

    def use(self, name: str) -> Kernels:
        """These kernels with another variant's entry points (tests run every level the host can)."""
        if not self.supports(name):
            held = [v.name for v in self.variants]
            raise ValueError(f"this CPU cannot run the {name!r} kernels (the library holds {held})")
        variant = next(v for v in self.variants if v.name == name)
        return _bind(self.library, self.path, variant, self.variants, self.build_command)


def cache_dir() -> Path:
    if "SUELO_KERNEL_CACHE" in os.environ:
        return Path(os.environ["SUELO_KERNEL_CACHE"])
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except (KeyError, RuntimeError):  # no HOME and no passwd entry (some containers): a per-user temp folder
        base = Path(tempfile.gettempdir()) / f"cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    return Path(base) / "suelo"


def compiler() -> str | None:
    """The C compiler the kernels are built with: ``$CC``, else the first of cc, gcc, clang on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def variants_for_this_architecture() -> tuple[Variant, ...]:
    """The passes built here: ``X86_VARIANTS`` on x86, ``PORTABLE`` elsewhere."""
    return X86_VARIANTS if platform.machine().lower() in {"x86_64", "amd64", "i386", "i686"} else PORTABLE


def build_key(cc: str, version: str, variants: tuple[Variant, ...]) -> str:
    """What the library depends on, hashed: source, compiler, flags, architecture. Nothing about the host's CPU."""
    passes = [f"{v.name}: {' '.join(v.flags)}" for v in variants]
    parts = [SOURCE.read_text(), cc, version, platform.machine(), *passes, *OPTIMIZE, *COMMON_FLAGS]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _build(cc: str, variants: tuple[Variant, ...]) -> Path:
    """The library of these variants, from the cache or built now.

    A pass the compiler rejects (an older compiler without the AVX-512 BF16 flag) is left out of the library and
    logged; the library is then cached as it is, since the same compiler fails the same way every time. Raises if
    the baseline pass fails, a compiler is killed (not a verdict on the flags), or linking fails.
    """
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    target = cache_dir() / f"cpu_kernels-{build_key(cc, version, variants)}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".cpu_kernels-"))
    try:
        objects = [str(scratch / f"{v.name}.o") for v in variants]
        commands = [
            # the baseline pass also carries the CPU question: code any CPU of the architecture can run
            [cc, *OPTIMIZE, *v.flags, *COMMON_FLAGS, f"-DSUELO_VARIANT={v.name}"]
            + (["-DSUELO_DISPATCH"] if v.name == "baseline" else [])
            + ["-c", "-o", obj, str(SOURCE)]
            for v, obj in zip(variants, objects, strict=True)
        ]
        # the passes at once, a compiler process each: the first use waits for the slowest, not for their sum
        running = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
        messages = [process.communicate()[1] for process in running]  # waits for every pass before any raise
        linked = []
        for variant, obj, command, process, stderr in zip(variants, objects, commands, running, messages, strict=True):
            if process.returncode == 0:
                linked.append(obj)
            elif variant.name == "baseline" or process.returncode < 0:
                raise subprocess.CalledProcessError(process.returncode, command, stderr=stderr)
            else:
                last = " ".join(stderr.strip().splitlines()[-1:])
                log.warning("the %s pass of the CPU kernels did not compile, left out: %s", variant.name, last)
        partial = scratch / "cpu_kernels.so"
        subprocess.run([cc, "-shared", "-o", str(partial), *linked], capture_output=True, text=True, check=True)
        os.replace(partial, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _bind(lib: ctypes.CDLL, path: Path, variant: Variant, variants: tuple[Variant, ...], command: str) -> Kernels:
    pointer, size, flag = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    attention = getattr(lib, f"suelo_attention_{variant.name}")
    attention.argtypes = [pointer] * 3 + [size] * 3 + [flag] * 2
    attention.restype = ctypes.c_int
    add_layer_norm = getattr(lib, f"suelo_add_layer_norm_{variant.name}")
    add_layer_norm.argtypes = [pointer, pointer, flag, pointer, pointer, ctypes.c_float, pointer, flag, size, size]
    add_layer_norm.restype = None
    weighted_sum = getattr(lib, f"suelo_weighted_sum_{variant.name}")
    weighted_sum.argtypes = [pointer, flag, pointer, pointer, size, size, size]
    weighted_sum.restype = None
    return Kernels(path, variant, variants, command, lib, attention, add_layer_norm, weighted_sum)


def build(cc: str | None = None) -> Kernels:
    """Build (or take from the cache) and load the kernels, bound to the widest variant this CPU runs.

    Every pass of this architecture goes into one library; a pass the compiler rejects is left out of it. Raises
    ``KernelBuildError`` with the compiler's message when no library can be built or loaded, and
    ``FileNotFoundError`` when there is no compiler.
    """
    cc = cc or compiler()
    if cc is None:
        raise FileNotFoundError("no C compiler found (CC, cc, gcc, clang)")
    wanted = variants_for_this_architecture()
    try:
        path = _build(cc, wanted)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.CalledProcessError) as exc:
        # the last line of the compiler's message says what failed
        detail = exc.stderr.strip().splitlines()[-1:] if isinstance(exc, subprocess.CalledProcessError) else [exc]
        raise KernelBuildError(" ".join(map(str, detail))) from exc
    lib.suelo_cpu_supports.argtypes = [ctypes.c_char_p]
    lib.suelo_cpu_supports.restype = ctypes.c_int
    variants = tuple(v for v in wanted if hasattr(lib, f"suelo_attention_{v.name}"))  # what compiled
    widest = next(v for v in variants if lib.suelo_cpu_supports(v.name.encode()))  # baseline always runs
    command = f"{cc} {' '.join(OPTIMIZE)}, a pass each for " + ", ".join(
        f"{v.name} [{' '.join(v.flags) or 'default target'}]" for v in variants
    )
    return _bind(lib, path, widest, variants, command)


_why_not = "not loaded yet"  # why library() gave None, for describe()


@functools.lru_cache(maxsize=1)
def library() -> Kernels | None:
    """The kernels this process runs, or None (logged once) where they cannot be built, are switched off, or the
    widest variant this CPU supports does not run by default (no AVX-512: the PyTorch forms are faster)."""
    global _why_not
    if os.environ.get("SUELO_CPU_KERNELS", "1") == "0":
        _why_not = "switched off (SUELO_CPU_KERNELS=0)"
        return None
    try:
        kernels = build()
    except FileNotFoundError:
        _why_not = "no C compiler"
        log.info("no C compiler found: the encoder runs its PyTorch forms on CPU")
        return None
    except KernelBuildError as exc:
        _why_not = "the build failed"
        log.warning("CPU kernels could not be built (%s): the encoder runs its PyTorch forms", exc)
        return None
    if not kernels.variant.by_default:
        _why_not = f"{kernels.path.name} holds no variant that beats them on this CPU"
        log.info("this CPU has no AVX-512: the encoder runs its PyTorch forms, faster here than the C kernels")
        return None
    return kernels


def describe() -> str:
    """What this process's encoder runs on CPU, for run records: the build and its variant, or why PyTorch runs."""
    kernels = library()
    if kernels is None:
        return f"unavailable (PyTorch forms): {_why_not}"
    return f"{kernels.path.name} ({kernels.build_command}; this CPU runs {kernels.variant.name})"


_DTYPES = (torch.float32, torch.bfloat16)


def _serves(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype in _DTYPES for t in tensors)


def attention(
    qkv: torch.Tensor, keep: torch.Tensor, heads: int, out_dtype: torch.dtype, kernels: Kernels | None = None
) -> torch.Tensor | None:
    """Softmax attention of a fused ``qkv (B, N, 3D)`` with log2-scaled queries, as ``(B, N, D)`` ``out_dtype``.

    Keys where ``keep (B, N)`` is False get no weight. Each row is shifted by its max before exp2 (float32
    throughout), so no score range is assumed. None when the kernel cannot serve these tensors; the caller then
    runs the PyTorch form. ``kernels`` defaults to this process's ``library()``.
    """
    b, n, three_d = qkv.shape
    if three_d != 3 * heads * HEAD_DIM or not _serves(qkv) or out_dtype not in _DTYPES:
        return None
    if (lib := kernels or library()) is None:
        return None
    qkv = qkv.contiguous()
    keep = keep.to(torch.bool).contiguous()  # a bool tensor's bytes are 0/1, the uint8 the kernel reads
    out = torch.empty((b, n, heads * HEAD_DIM), dtype=out_dtype)
    status = lib.attention(
        qkv.data_ptr(),
        keep.data_ptr(),
        out.data_ptr(),
        b,
        n,
        heads,
        int(qkv.dtype == torch.bfloat16),
        int(out_dtype == torch.bfloat16),
    )
    if status != 0:
        raise MemoryError("suelo_attention could not allocate its scratch buffers")
    return out


def add_layer_norm(
    x: torch.Tensor,
    delta: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    out_dtype: torch.dtype,
    kernels: Kernels | None = None,
) -> torch.Tensor | None:
    """``x += delta`` in place (float32 ``x``; no add when ``delta`` is None), then ``layer_norm(x)`` as ``out_dtype``.

    The residual add, the norm and the cast to the next matmul's dtype in one pass over memory instead of three.
    None (and ``x`` untouched) when the kernel cannot serve these tensors.
    """
    width = x.shape[-1]
    operands = [x, weight, bias] + ([delta] if delta is not None else [])
    if (
        x.dtype != torch.float32
        or not x.is_contiguous()
        or width % HEAD_DIM
        or out_dtype not in _DTYPES
        or not _serves(*operands)
        or (delta is not None and delta.shape != x.shape)
        or (lib := kernels or library()) is None
    ):
        return None
    if delta is not None:
        delta = delta.contiguous()
    weight, bias = weight.float().contiguous(), bias.float().contiguous()
    out = torch.empty(x.shape, dtype=out_dtype)
    lib.add_layer_norm(
        x.data_ptr(),
        None if delta is None else delta.data_ptr(),
        int(delta is not None and delta.dtype == torch.bfloat16),
        weight.data_ptr(),
        bias.data_ptr(),
        eps,
        out.data_ptr(),
        int(out_dtype == torch.bfloat16),
        x.numel() // width,
        width,
    )
    return out


def weighted_sum(values: torch.Tensor, weights: torch.Tensor, kernels: Kernels | None = None) -> torch.Tensor | None:
    """``(B, D)`` float32 ``sum_n weights[b, n] * values[b, n]`` of ``values (B, N, D)``; zero weights skip the token.

    None when the kernel cannot serve these tensors.
    """
    b, n, width = values.shape
    if width % HEAD_DIM or weights.shape != (b, n) or not _serves(values) or (lib := kernels or library()) is None:
        return None
    values = values.contiguous()
    weights = weights.float().contiguous()
    out = torch.empty((b, width), dtype=torch.float32)
    lib.weighted_sum(
        values.data_ptr(), int(values.dtype == torch.bfloat16), weights.data_ptr(), out.data_ptr(), b, n, width
    )
    return out


if __name__ == "__main__":  # build ahead of time into the cache
    logging.basicConfig(level=logging.INFO)
    kernels = build()
    print(kernels.path)
    print(describe())
