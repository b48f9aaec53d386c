"""Batched Presto inference: pixels -> embeddings, and a whole cube -> an (y, x, feature) embedding raster."""

from __future__ import annotations

import contextlib
import ctypes
import platform
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import torch
import xarray as xr

from suelo.models import cpu_kernels
from suelo.models.cpu_engine import CpuEngine
from suelo.models.presto import Encoder
from suelo.models.presto_inputs import cube_auxiliary, cube_to_pixels, presto_inputs

# A 12-month pixel carries ~125 KB of fp32 activations at the MLP. On CPU, each thread encodes batches of 64
# pixels in fp32 (8 MB: they stay in L3) and 128 in bf16 (half the activation bytes per pixel), the best of
# benchmarks/encoder.py's sweeps that does not cost memory: fp32 at 128 was no faster and held 40 MB more per
# thread. A GPU needs large batches to fill it.
CPU_BATCH = 64
CPU_BATCH_BF16 = 128
GPU_BATCH = 65536
CUBE_READ_PIXELS = 16384  # cubes are read about this many pixels at a time: ~35 MB of inputs, every thread busy

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_allocator_tuned = False


def tune_cpu_allocator() -> None:
    """Keep freed activation buffers inside the process (glibc only; once per process).

    glibc serves each allocation over its mmap threshold with fresh pages from the kernel and unmaps it on free,
    so every MB-sized activation of every batch page-faulted again: 160,000 faults per 1,024 pixels, 40% of the
    encoder's time in our measurements. Raising the thresholds to 32/64 MB (a 64-pixel batch's largest buffer is
    8 MB) lets the heap reuse them; resident memory grows by at most the trim threshold.
    """
    global _allocator_tuned
    if _allocator_tuned or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
    except (OSError, AttributeError):
        return
    _allocator_tuned = True


def fast_for_precision(precision: str) -> bool | None:
    """A job's ``compute.precision`` (auto, fp32, bf16) as ``encode_pixels``'s ``fast``: None lets the device decide."""
    return {"auto": None, "fp32": False, "bf16": True}[precision]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cube_read_pixels(device: str | torch.device | None = None, batch_size: int | None = None) -> int:
    """Pixels to read from a cube at a time: ``CUBE_READ_PIXELS`` on CPU; on CUDA at least one full batch, so the
    GPU never gets the small batches a CPU-sized read would cut."""
    if torch.device(device or default_device()).type != "cuda":
        return CUBE_READ_PIXELS
    return max(CUBE_READ_PIXELS, batch_size or GPU_BATCH)


_engines: weakref.WeakKeyDictionary[Encoder, dict[torch.dtype, CpuEngine]] = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()


def cpu_engine(encoder: Encoder, dtype: torch.dtype = torch.float32) -> CpuEngine:
    """The ``CpuEngine`` of ``encoder`` in ``dtype``: the last one built for it, while the encoder's weights still
    equal its snapshot (compared by value, ~0.5 ms a call) and the process's kernels are the same; else a new one
    (~4 ms). Held weakly: an encoder that is dropped takes its engines with it."""
    with _engines_lock:
        engines = _engines.setdefault(encoder, {})
        engine = engines.get(dtype)
        if engine is None or engine.kernels is not cpu_kernels.library() or not engine.is_snapshot_of(encoder):
            engine = engines[dtype] = CpuEngine(encoder, dtype)
        return engine


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def encode_pixels(
    encoder: Encoder,
    x: np.ndarray,
    mask: np.ndarray,
    dw: np.ndarray,
    latlons: np.ndarray,
    month: int | np.ndarray,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    fast: bool | None = None,
) -> np.ndarray:
    """Embeddings ``(N, D)`` float32 of ``N`` pixels (inputs as returned by ``presto_inputs``).

    The encoder is moved to ``device`` (default: CUDA if available). ``fast`` picks bf16 (True) or fp32 (False);
    None means bf16 on CUDA and fp32 on CPU. On CUDA bf16 is autocast over the plain modules. On CPU a
    ``CpuEngine`` of the encoder's current weights (``cpu_engine``) runs on every usable torch thread (one batch per
    thread), bf16 making its matmuls bf16 (about 2e-2 error on the embeddings instead of 3e-6).
    """
    device = torch.device(device or default_device())
    cuda = device.type == "cuda"
    bf16 = cuda if fast is None else fast
    batch_size = batch_size or (GPU_BATCH if cuda else CPU_BATCH_BF16 if bf16 else CPU_BATCH)
    n = len(x)
    month_arr = np.array(np.broadcast_to(np.asarray(month, dtype=np.int64), (n,)))
    encoder = encoder.to(device).eval()
    out = np.empty((n, encoder.config.embedding_size), dtype=np.float32)
    autocast = cuda and bf16
    # A GPU runs the model's plain modules; a CPU the engine, a snapshot of the encoder's weights as they are now.
    model = encoder if cuda else cpu_engine(encoder, torch.bfloat16 if bf16 else torch.float32)

    def move(a: np.ndarray, dtype: npt.DTypeLike) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))
        # from pinned host memory the copy is one DMA that does not block the host thread
        return t.pin_memory().to(device, non_blocking=True) if cuda else t

    def encode(sl: slice) -> None:
        # inference mode and autocast are per thread: each batch sets its own
        context = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with torch.inference_mode(), context:
            emb = model(
                move(x[sl], np.float32),
                move(mask[sl], np.bool_),
                move(dw[sl], np.int64),
                move(latlons[sl], np.float32),
                move(month_arr[sl], np.int64),
            )
            out[sl] = emb.float().cpu().numpy()

    if cuda:
        for sl in _batches(n, batch_size):
            encode(sl)
    else:
        tune_cpu_allocator()
        _each_on_own_core(encode, list(_batches(n, batch_size)))
    return out


def _each_on_own_core(fn: Callable[[slice], None], slices: list[slice]) -> None:
    """Run ``fn`` on every slice, spread over torch's intra-op threads as one single-threaded worker each.

    With 16-dim attention heads and 128-wide layers, splitting every op over threads costs more in
    synchronisation than it gains (2 threads ran 1.2-1.4x one; 2 workers 1.9-2x). A batch's result does not
    depend on the thread count, since every batch runs single-threaded either way. The process-wide intra-op
    thread count is 1 meanwhile and is restored afterwards.
    """
    workers = min(torch.get_num_threads(), len(slices))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if workers <= 1:
            for sl in slices:
                fn(sl)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="presto") as pool:
                shares = [slices[i::workers] for i in range(workers)]

                def run(share: list[slice]) -> None:
                    for sl in share:
                        fn(sl)

                list(pool.map(run, shares))  # list(): waits for all, and re-raises a worker's exception
    finally:
        torch.set_num_threads(previous)


def encode_cube(
    encoder: Encoder,
    cube: xr.Dataset,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    fast: bool | None = None,
    inputs: Sequence[str] = ("s2",),
) -> xr.DataArray:
    """Presto embeddings of every pixel of a monthly cube: ``(y, x, feature)`` float32 on the cube's grid.

    The cube is read a few rows at a time (about ``cube_read_pixels()`` pixels), so memory beyond the output stays
    bounded whatever the cube's size; a lazy (dask) cube is computed chunk by chunk. ``batch_size``, ``device`` and
    ``fast`` are ``encode_pixels``'s. ``inputs`` are the Presto inputs fed from the cube (a model's contract:
    ``s2`` and any of ``s1``, ``terrain``, ``weather`` the cube holds); the others enter masked.
    """
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    rows = max(1, cube_read_pixels(device, batch_size) // nx)
    bands = [str(b) for b in cube["band"].values]
    out = np.empty((ny, nx, encoder.config.embedding_size), dtype=np.float32)
    for r in range(0, ny, rows):
        part = cube.isel(y=slice(r, min(r + rows, ny)))
        reflectance, latlons, start_month = cube_to_pixels(part)
        x, mask, dw = presto_inputs(reflectance, bands, latlons=latlons, **cube_auxiliary(part, inputs))
        emb = encode_pixels(encoder, x, mask, dw, latlons, start_month, batch_size, device, fast)
        out[r : r + part.sizes["y"]] = emb.reshape(part.sizes["y"], nx, -1)
    return xr.DataArray(
        out,
        dims=("y", "x", "feature"),
        coords={"y": cube["y"].values, "x": cube["x"].values, "feature": np.arange(out.shape[-1])},
        name="presto_embedding",
        attrs={k: cube.attrs[k] for k in ("grid", "crs") if k in cube.attrs}
        | {"long_name": "Presto encoder embedding (Tseng et al. 2023)"},
    )
