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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes, macOS bytes): the cost a run records."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
