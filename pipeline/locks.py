"""A process-wide lock around suelo's use of the netCDF C library.

netCDF-C and the HDF5 it is built on (the netCDF4 wheels are not built thread-safe) crash the whole process, with a
segmentation fault and no Python error, when two threads call into them at once. suelo has threads that do: the
dask threads of one cube's blocks read the same weather files (:mod:`suelo.ingest.weather`; it crashed a test run),
and a worker with ``threads_per_worker`` above 1 runs several blocks at once, one writing its share of the cube or
reading its composite cache while another reads weather.

xarray has a lock of its own for the netCDF C library, which it takes around the data reads and writes of its
files, but not around opening, closing or creating variables, and it takes it without re-entrancy: code that held
it and then called xarray would wait for itself. Hence two levels:

- :func:`netcdf_lock` ``(xarray=False)``: suelo's re-entrant lock, around suelo's own netCDF work through xarray
  on data in memory (writing a computed cube, loading a cache entry): xarray takes its lock inside as it needs;
- :func:`netcdf_lock` ``(xarray=True)``: suelo's lock and then xarray's, around code that opens its files with
  ``lock=False`` (the weather reader), so that xarray's lazy reads and dask-stored writes in other threads wait for
  it too.

suelo's lock is always taken first, so the two never wait for each other in a cycle. Never hold it around a
computation whose dask threads read weather (writing a lazy cube): they would wait for the thread that waits for
them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SUELO = threading.RLock()
_held = threading.local()  # per thread: how deep it holds xarray's lock (which is not re-entrant)


@contextmanager
def netcdf_lock(xarray: bool = False) -> Iterator[None]:
    """Hold suelo's netCDF lock (re-entrant) and, with ``xarray``, xarray's lock for the netCDF C library too."""
    with _SUELO:
        if not xarray:
            yield
            return
        from xarray.backends.locks import NETCDFC_LOCK

        depth = getattr(_held, "depth", 0)
        if depth == 0:
            NETCDFC_LOCK.acquire()  # type: ignore[no-untyped-call]  # xarray leaves its locks unannotated
        _held.depth = depth + 1
        try:
            yield
        finally:
            _held.depth = depth
            if depth == 0:
                NETCDFC_LOCK.release()  # type: ignore[no-untyped-call]
