"""Atomic outputs: a final path holds either nothing, the previous complete file, or the new complete file.

"Complete" is checked, not assumed: GDAL does not always raise when a write fails (on a full disk libtiff prints
``_tiffSeekProc: No space left on device`` and the dataset closes without an error, leaving an empty or truncated
file), so every output is fsynced, checked to be non-empty and, where its writer gives a verification hook, read
back, all before it is renamed into place. A file that does not verify is removed and the write raises
:class:`WriteVerificationError` (or ``ENOSPC`` when the disk is full), so nothing partial is ever published.
"""

from __future__ import annotations

import errno
import functools
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Verify every output before it is published. Only the stage benchmark (benchmarks/pipeline.py) turns this off, to
#: measure what the verification costs; nothing else should.
VERIFY_WRITES = True


class DamagedOutputError(OSError):
    """A file suelo wrote is not what it should be (empty, truncated, unreadable, other values)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(errno.EIO, problem, str(path))
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.filename}: {self.problem}"

    def __reduce__(self) -> tuple[Any, ...]:  # a block's error travels from a Dask worker to the driver pickled
        return (type(self), (self.filename, self.problem))


class WriteVerificationError(DamagedOutputError):
    """A freshly written temporary file failed verification; it was removed, nothing was published."""


@contextmanager
def atomic_output(
    final: Path, verify: Callable[[Path], None] | None = None, allow_empty: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only if the block succeeds and it verifies.

    The temporary file lives in the same folder so the rename never crosses file systems (``os.replace`` is atomic
    on POSIX). After the block it is fsynced, must not be empty (unless ``allow_empty``), and ``verify(tmp)``, when
    given, must return without raising (it should reopen and read the file back); only then is it renamed. On any
    error, including KeyboardInterrupt, the temporary file and its writers' side files are removed.
    """
    final = Path(final)
    tmp = temporary_beside(final)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        if VERIFY_WRITES:
            _verify(tmp, final, verify, allow_empty)
        # mkstemp creates 0600 files; publish with the permissions a plain open() would have given
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, final)
    except BaseException as exc:
        full = isinstance(exc, Exception) and _disk_full(final.parent)
        tmp.unlink(missing_ok=True)
        for stray in final.parent.glob(f"{glob.escape(tmp.name)}*"):  # writers' own side files (GDAL's .aux.xml)
            stray.unlink(missing_ok=True)
        if full and not (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
            # GDAL reports a full disk as some later read/write error, or not at all (then the file does not
            # verify); say what really happened
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final)) from exc
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) and not exc.filename:
            raise OSError(exc.errno, exc.strerror, str(final)) from exc  # a plain write() does not say which file
        raise


def _verify(tmp: Path, final: Path, verify: Callable[[Path], None] | None, allow_empty: bool) -> None:
    if not allow_empty and tmp.stat().st_size == 0:
        raise WriteVerificationError(final, "the written file is empty")
    if verify is None:
        return
    try:
        # reading back a damaged file makes GDAL and rasterio warn (no georeferencing, bad directory...): the
        # verdict is what counts, the warnings would only be noise around its one-line message
        with warnings.catch_warnings(), _gdal_quiet():
            warnings.simplefilter("ignore")
            verify(tmp)
    except WriteVerificationError as exc:
        raise WriteVerificationError(final, exc.problem) from exc  # named by its final path, not the temporary
    except Exception as exc:  # a reader's own error (rasterio, netCDF4, json) on what was just written
        problem = f"the written file does not read back ({type(exc).__name__}: {' '.join(str(exc).split())})"
        raise WriteVerificationError(final, problem) from exc


# -- temporary names -------------------------------------------------------------------------------------------------

#: Every temporary name suelo creates: ``.<final name>.[<role>.][<run token>-]<8 mkstemp chars>.tmp``
#: (temporary_beside), the staging GeoTIFFs of earlier versions (``<that>.stage.tif``) and GDAL's side files of either.
_TEMPORARY_NAME = re.compile(
    r"^\..+\.(?:(?P<token>[0-9a-f]{8})-)?[A-Za-z0-9_]{8}\.tmp(?:\.stage\.tif)?(?:\.aux\.xml|\.ovr|\.msk)?$"
)
_run_token: str | None = None  # the token of the run this process works for (suelo.outdir records it)


def set_run_token(token: str | None) -> None:
    """Name this process's temporaries after the run ``token`` (8 hex digits), or after none (``None``).

    A run records its token in the output folder before it writes anything, and deletes leftover temporaries only
    when they carry a token recorded there: a file that merely looks like a temporary is never touched."""
    global _run_token
    if token is not None and not re.fullmatch(r"[0-9a-f]{8}", token):
        raise ValueError(f"a run token is 8 hex digits, got {token!r}")
    _run_token = token


def temporary_token(name: str) -> str | None:
    """The run token in a temporary's file name, or None (no token, or not a suelo temporary)."""
    match = _TEMPORARY_NAME.match(name)
    return match.group("token") if match else None


def temporary_beside(final: Path, role: str = "") -> Path:
    """Create an empty temporary file beside ``final``, named ``.<final name>.[<role>.][<token>-]<random>.tmp``.

    The one place temporary names are made: the temporary of :func:`atomic_output` and writers' own side
    temporaries (``role="stage"``: the staging GeoTIFF of a COG) alike, so :func:`is_suelo_temporary` knows them all.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}." + (f"{role}." if role else "") + (f"{_run_token}-" if _run_token else "")
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(name)


def is_suelo_temporary(name: str) -> bool:
    """Whether a file name (no folder) is one of suelo's temporaries: what a killed run may leave behind.

    True for the temporaries of :func:`atomic_output` (``.demo.tif.k2x9a0qe.tmp``), writers' side temporaries
    (``.demo.tif.stage.k2x9a0qe.tmp``), the staging files of earlier versions (``.demo.tif.k2x9a0qe.tmp.stage.tif``)
    and GDAL's side files of any of them (``....tmp.aux.xml``, ``.ovr``, ``.msk``); False for every output name.
    """
    return bool(_TEMPORARY_NAME.match(name))


# -- GDAL errors -----------------------------------------------------------------------------------------------------

_GDAL_LOGGER = "rasterio._env"
#: What marks an error or warning GDAL signals as an I/O failure (TIFFAppendToStrip: Write error / Seek error, VSI
#: write and flush failures, "IO error during reading of ..." or "TIFFReadEncodedTile() failed" when a staging file
#: read back is truncated, a full disk or quota). GDAL also signals harmless CE_Failures while writing (libtiff's
#: "Cannot modify tag ... while writing" when a palette is set), which must not fail a write.
_IO_FAILURE = re.compile(
    r"(write|seek|read|flush|i/?o) (error|failed)|failed to (write|flush|seek|read)|\w*read\w*\(\) failed"
    r"|iread\w* failed|short (write|read)|no space left|quota",
    re.IGNORECASE,
)


class _GdalErrorFilter(logging.Filter):
    """Collects the I/O errors GDAL signals (rasterio logs a CE_Failure that no call returned at INFO and goes on)
    for the threads inside :func:`gdal_errors_raised`, and lets only what the logger's level would have let through
    reach the handlers."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger
        self.own_level = logger.level  # what the logger had before it was opened to INFO
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.local, "quiet", False):
            return False
        collected = getattr(self.local, "collected", None)
        if collected is not None:
            message = record.getMessage()
            if record.levelno >= logging.INFO and _IO_FAILURE.search(message):
                collected.append(" ".join(message.split()))
        threshold = self.own_level or (self.logger.parent or logging.getLogger()).getEffectiveLevel()
        return record.levelno >= threshold


_filter_lock = threading.Lock()
_filter: _GdalErrorFilter | None = None


def _gdal_filter() -> _GdalErrorFilter:
    global _filter
    with _filter_lock:
        if _filter is None:
            logger = logging.getLogger(_GDAL_LOGGER)
            _filter = _GdalErrorFilter(logger)
            logger.addFilter(_filter)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)  # the filter keeps these records from handlers that did not ask
        return _filter


@contextmanager
def _gdal_quiet() -> Iterator[None]:
    """Nothing rasterio logs for GDAL in this thread reaches a handler inside the block."""
    collector = _gdal_filter()
    before = getattr(collector.local, "quiet", False)
    collector.local.quiet = True
    try:
        yield
    finally:
        collector.local.quiet = before


@contextmanager
def gdal_errors_raised(path: str | Path) -> Iterator[None]:
    """Raise :class:`WriteVerificationError` for ``path`` if GDAL signalled an error inside the block.

    rasterio raises GDAL errors only when a GDAL call returns failure; a failed strip or tile write inside a
    dataset that then closes normally is merely logged. Libtiff's own I/O messages bypass GDAL altogether (they go
    straight to stderr), which is why outputs are also read back (:func:`atomic_output`'s ``verify``).
    """
    if not VERIFY_WRITES:
        yield
        return
    errors: list[str] = []
    collector = _gdal_filter()
    outer = getattr(collector.local, "collected", None)
    collector.local.collected = errors
    try:
        yield
    finally:
        collector.local.collected = outer
        if outer is not None:
            outer.extend(errors)
    if errors:
        detail = errors[0].removeprefix("GDAL signalled an error: ")
        raise WriteVerificationError(path, f"GDAL signalled an I/O error while writing ({detail})")


# -- reading back ----------------------------------------------------------------------------------------------------


def check_raster(
    path: str | Path,
    *,
    expected: Any = None,
    count: int | None = None,
    dtype: str | None = None,
    shape: tuple[int, int] | None = None,
    crs: Any = None,
    transform: Any = None,
) -> None:
    """Open ``path`` with rasterio and read every band in full; raise ValueError when it differs from what is given.

    ``expected`` (bands, y, x) is compared value by value and implies count, dtype and shape. For small rasters
    (block rasters); a COG is checked by its writer (suelo.write) without reading all of it.
    """
    import numpy as np
    import rasterio

    if expected is not None:
        expected = np.asarray(expected)
        count, dtype, shape = expected.shape[0], expected.dtype.name, expected.shape[1:]
    with rasterio.open(path) as src:
        found = (src.count, src.dtypes[0], (src.height, src.width))
        wanted = (count or src.count, dtype or src.dtypes[0], tuple(shape) if shape else (src.height, src.width))
        if found != wanted:
            raise ValueError(f"bands, dtype and shape {found} instead of {wanted}")
        if crs is not None and src.crs != crs:
            raise ValueError(f"CRS {src.crs} instead of {crs}")
        if transform is not None and not src.transform.almost_equals(transform):
            raise ValueError(f"transform {tuple(src.transform)[:6]} instead of {tuple(transform)[:6]}")
        values = src.read()
    if expected is not None and not np.array_equal(values, expected):
        raise ValueError(f"{int((values != expected).sum())} values differ from what was written")


def raster_readable(path: str | Path, **expect: Any) -> bool:
    """:func:`check_raster` as a yes/no (a resume re-checking what the manifest claims)."""
    try:
        check_raster(path, **expect)
    except Exception:  # any reader error means: not a usable raster, redo it
        return False
    return True


#: A failed write with less free space than this beside it is reported as a full disk.
DISK_FULL_BYTES = 1024**2


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < DISK_FULL_BYTES
    except OSError:
        return False


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (model files and block rasters alike).

    Remembered per file version in this process: a run hashes each final map for its product record, its STAC
    ``file:checksum`` and ``final.json``, and a region's COGs are hundreds of MB. A version is the file's device,
    inode, size and modification and change times (nanoseconds): a rewrite through :func:`atomic_output` is a new
    inode, and an in-place write moves both times, so a changed file is never answered from memory.
    """
    info = os.stat(path)
    version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    return _sha256_of_version(os.path.realpath(path), version)


@functools.lru_cache(maxsize=4096)
def _sha256_of_version(path: str, version: tuple[int, ...]) -> str:
    del version  # the cache key only
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object suelo wrote at ``path`` (a marker, final.json), or {} when it is missing, unreadable or
    not an object: what the callers then treat as "not there"."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_atomic(final: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"

    def same_text(tmp: Path) -> None:
        if tmp.read_text(encoding="utf-8") != text:
            raise WriteVerificationError(final, "the written JSON differs from what was written")

    with atomic_output(final, verify=same_text) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: the one way every text output (QML, HTML, JSON, STAC) is
    written, so none is ever seen half-written."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
