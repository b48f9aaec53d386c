"""Fused C kernels for CPU inference (``cpu_kernels.c``), compiled on first use for this machine's CPU.

The encoder works without them: every kernel here has a PyTorch equivalent in ``suelo.models.presto`` that runs when
the library is unavailable (no C compiler, ``SUELO_CPU_KERNELS=0``, a head size other than 16): each function
here returns None then. The build is cached, keyed by the source, compiler, flags and CPU, under
``$SUELO_KERNEL_CACHE`` (default ``$XDG_CACHE_HOME/suelo`` or ``~/.cache/suelo``); it is written to a temporary
file and renamed, so processes that build at once never load a half-written library.
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
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_kernels.c")
HEAD_DIM = 16  # the only head size the kernels serve (Presto: 128 / 8)
# -march=native: the vector code is generic C (GCC/Clang vector extensions) that lowers to the widest vectors
# this CPU has; without it (another compiler, another architecture) the baseline ISA is used.
FLAG_SETS = (["-O3", "-march=native"], ["-O3"])
COMMON_FLAGS = ["-std=gnu11", "-shared", "-fPIC", "-fno-math-errno"]

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    if "SUELO_KERNEL_CACHE" in os.environ:
        return Path(os.environ["SUELO_KERNEL_CACHE"])
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except (KeyError, RuntimeError):  # no HOME and no passwd entry (some containers): a per-user temp folder
        base = Path(tempfile.gettempdir()) / f"cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    return Path(base) / "suelo"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_identity() -> str:
    """What -march=native depends on: a cache shared by several machines must not hand one's build to another."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line for line in info if line.startswith(("flags", "Features"))), platform.processor())
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _build(compiler: str, flags: list[str]) -> Path:
    """The compiled library for these flags, from the cache or built now (raises if the compiler fails)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    parts = [SOURCE.read_text(), compiler, version, _cpu_identity(), *flags, *COMMON_FLAGS]
    key = hashlib.sha256("\0".join(parts).encode())
    target = cache_dir() / f"cpu_kernels-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".cpu_kernels-", suffix=".so")
    os.close(fd)
    try:
        subprocess.run(
            [compiler, *flags, *COMMON_FLAGS, "-o", partial, str(SOURCE)], capture_output=True, text=True, check=True
        )
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def describe() -> str:
    """What this process's encoder runs on CPU, for run records: the build's flags, or why the PyTorch forms run."""
    lib = library()
    if lib is None:
        return "unavailable (PyTorch forms)"
    return f"{Path(lib._name).name} ({lib.build_command})"


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (logged once) where they cannot be built or are switched off."""
    if os.environ.get("SUELO_CPU_KERNELS", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        log.info("no C compiler found: the encoder runs its PyTorch forms on CPU")
        return None
    errors = []
    for flags in FLAG_SETS:
        try:
            lib = ctypes.CDLL(str(_build(compiler, flags)))
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = exc.stderr.strip().splitlines()[-1:] if isinstance(exc, subprocess.CalledProcessError) else exc
            errors.append(f"{' '.join(flags)}: {detail}")
            continue
        pointer, size, flag = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.suelo_attention.argtypes = [pointer] * 3 + [size] * 3 + [flag] * 2
        lib.suelo_attention.restype = ctypes.c_int
        lib.suelo_add_layer_norm.argtypes = [pointer, pointer, flag, pointer, pointer, ctypes.c_float, pointer, flag]
        lib.suelo_add_layer_norm.argtypes += [size, size]
        lib.suelo_add_layer_norm.restype = None
        lib.suelo_weighted_sum.argtypes = [pointer, flag, pointer, pointer, size, size, size]
        lib.suelo_weighted_sum.restype = None
        lib.build_command = " ".join([compiler, *flags])
        return lib
    log.warning("CPU kernels could not be built (%s): the encoder runs its PyTorch forms", "; ".join(errors))
    return None


_DTYPES = (torch.float32, torch.bfloat16)


def _serves(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype in _DTYPES for t in tensors)


def attention(qkv: torch.Tensor, keep: torch.Tensor, heads: int, out_dtype: torch.dtype) -> torch.Tensor | None:
    """Softmax attention of a fused ``qkv (B, N, 3D)`` with log2-scaled queries, as ``(B, N, D)`` ``out_dtype``.

    Keys where ``keep (B, N)`` is False get no weight. Each row is shifted by its max before exp2 (float32
    throughout), so no score range is assumed. None when the kernel cannot serve these tensors; the caller then
    runs the PyTorch form.
    """
    b, n, three_d = qkv.shape
    if three_d != 3 * heads * HEAD_DIM or not _serves(qkv) or out_dtype not in _DTYPES or (lib := library()) is None:
        return None
    qkv = qkv.contiguous()
    keep = keep.to(torch.bool).contiguous()  # a bool tensor's bytes are 0/1, the uint8 the kernel reads
    out = torch.empty((b, n, heads * HEAD_DIM), dtype=out_dtype)
    status = lib.suelo_attention(
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
        or (lib := library()) is None
    ):
        return None
    if delta is not None:
        delta = delta.contiguous()
    weight, bias = weight.float().contiguous(), bias.float().contiguous()
    out = torch.empty(x.shape, dtype=out_dtype)
    lib.suelo_add_layer_norm(
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


def weighted_sum(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor | None:
    """``(B, D)`` float32 ``sum_n weights[b, n] * values[b, n]`` of ``values (B, N, D)``; zero weights skip the token.

    None when the kernel cannot serve these tensors.
    """
    b, n, width = values.shape
    if width % HEAD_DIM or weights.shape != (b, n) or not _serves(values) or (lib := library()) is None:
        return None
    values = values.contiguous()
    weights = weights.float().contiguous()
    out = torch.empty((b, width), dtype=torch.float32)
    lib.suelo_weighted_sum(
        values.data_ptr(), int(values.dtype == torch.bfloat16), weights.data_ptr(), out.data_ptr(), b, n, width
    )
    return out
