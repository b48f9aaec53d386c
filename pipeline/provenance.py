"""What software made an output: one home for the versions every run record, map tag and model file carries.

Low in the stack (it imports no stage), so writers, reports and jobs can all record provenance without importing
each other.
"""

from __future__ import annotations

import platform

from suelo import __version__


def software_versions() -> dict[str, str]:
    """Versions of suelo, Python and the libraries that decide the numbers (and how the CPU kernels were built)."""
    import dask
    import numpy
    import rasterio
    import torch
    import xarray

    from suelo.models import cpu_kernels

    return {
        "suelo": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "xarray": xarray.__version__,
        "dask": dask.__version__,
        "cpu_kernels": cpu_kernels.describe(),
    }


def version_lines() -> list[str]:
    """``suelo --version``: suelo and what decides its results and speed, one line each (the run records'
    :func:`software_versions`, plus the GPU build of torch and the PROJ that transforms coordinates)."""
    import pyproj

    versions = software_versions()
    return [
        f"suelo {versions['suelo']}",
        f"Python {versions['python']}",
        f"torch {versions['torch']} ({torch_accelerator()})",
        f"GDAL {versions['gdal']}",
        f"PROJ {pyproj.proj_version_str}",
        f"rasterio {versions['rasterio']}",
        f"numpy {versions['numpy']}",
        f"CPU kernels: {versions['cpu_kernels']}",
    ]


def torch_accelerator() -> str:
    """What torch was built for and sees: ``CUDA 12.4, 1 GPU (NVIDIA H200)``, ``CUDA 12.4, no GPU`` or ``CPU only``."""
    import torch

    cuda = torch.version.cuda
    hip = getattr(torch.version, "hip", None)
    if cuda is None and hip is None:
        return "CPU only"
    build = f"CUDA {cuda}" if cuda is not None else f"ROCm {hip}"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return f"{build}, no GPU"
    return f"{build}, {count} GPU{'s' if count > 1 else ''} ({torch.cuda.get_device_name(0)})"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes, macOS bytes): the cost a run records."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
