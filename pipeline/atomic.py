"""Atomic outputs: a final path holds either nothing, the previous complete file, or the new complete file."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only if the block succeeds.

    The temporary file lives in the same folder so the rename never crosses file systems (``os.replace`` is atomic
    on POSIX). On any error, including KeyboardInterrupt, the temporary file is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; publish with the permissions a plain open() would have given
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, final)
    except BaseException as exc:
        full = isinstance(exc, Exception) and _disk_full(final.parent)
        tmp.unlink(missing_ok=True)
        for stray in final.parent.glob(f"{glob.escape(tmp.name)}*"):  # writers' own side files (GDAL's .stage.tif)
            stray.unlink(missing_ok=True)
        if full and not (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
            # GDAL reports a full disk as some later read/write error; say what really happened
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final)) from exc
        raise


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
    """SHA-256 of a file's bytes, read in 1 MiB chunks (model files and block rasters alike)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(final: Path, payload: Any) -> None:
    with atomic_output(final) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
