"""Where inputs may come from and which raster formats are opened: the rules that keep a job's inputs confined.

A STAC document is often written by someone else, and its hrefs are followed blindly by GDAL; without rules an
href can name any file on the machine (``../../../../etc/passwd``, ``file:///etc/passwd``, ``/vsistdin/``) or a
GDAL VRT whose "raster" is the bytes of such a file. So:

- Raster formats: only what Sentinel-2 products use, GeoTIFF/COG and JPEG 2000 (:data:`ALLOWED_DRIVERS`), every
  user-supplied raster is opened through :func:`open_raster`, which lets only those GDAL drivers look at the file:
  a VRT (or any other format that points GDAL at other files) is never parsed, whatever its name; side files
  (``.ovr``, ``.msk``, ``.aux.xml``, which GDAL would open with any driver) are ignored.
- Local paths (STAC hrefs, files found in input folders) must resolve (symlinks followed) into an allowed folder:
  the job file's folder, the folder of the STAC file that names them, the inputs' own ``paths`` and
  ``access.input_roots``. They must be regular files (no FIFO, device or ``/dev/zero`` behind a symlink).
- Hrefs never use GDAL virtual file systems (``/vsi...``) themselves: suelo builds those (``/vsizip/`` over a zip
  the job names, ``/vsicurl/`` for http(s), ``/vsis3/`` for s3).
- Remote hrefs: http(s) and s3 only; with ``access.remote_hosts`` only those hosts (s3: buckets), and no file
  extension of a format outside the allow-list (``x.vrt`` is refused before any request).

:class:`InputAccess` carries the rules of one job; readers called without one (library use, a spec built in code
without a job file or ``input_roots``) do not confine local paths, but every other rule above still holds.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import rasterio
from rasterio.errors import RasterioIOError

from suelo.errors import InputError, file_kind

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

    from suelo.settings import JobSpec

#: GDAL drivers allowed to open user-supplied rasters: GeoTIFF (COGs are GeoTIFFs) and JPEG 2000 (SAFE bands).
ALLOWED_DRIVERS: tuple[str, ...] = ("GTiff", "JP2OpenJPEG")
#: Remote href schemes and the GDAL virtual file system suelo reads them through.
REMOTE_SCHEMES: dict[str, str] = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/"}
#: First bytes of the allowed formats: classic and Big TIFF (both byte orders), JP2 signature box, J2K codestream.
MAGIC: tuple[bytes, ...] = (
    b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51",
)  # fmt: skip
FORMATS = "GeoTIFF/COG or JPEG 2000"
NOT_ALLOWED_FORMAT = (
    f"is not a {FORMATS} file; suelo opens no other raster format (no VRT or other formats that point at other files)"
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_NOT_RECOGNIZED = re.compile(r"not recognized as (being in )?a supported file format")


class FormatNotAllowed(RasterioIOError):  # type: ignore[misc]  # rasterio is untyped: its classes are Any
    """A raster none of :data:`ALLOWED_DRIVERS` recognises (callers wrap it like any other unreadable file)."""


# -- raster formats ------------------------------------------------------------------------------------------------


def open_raster(path: str) -> DatasetReader:
    """Open a user-supplied raster with GeoTIFF or JPEG 2000 drivers only (the one its name suggests first).

    Raises :class:`FormatNotAllowed` when neither driver recognises the file, and GDAL's own error when the
    recognising driver fails (a truncated or corrupt file): a VRT named ``B04.tif`` is never parsed as a VRT.

    Side files are ignored (``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` for this open): GDAL would otherwise open a
    ``B04.tif.ovr`` or ``.msk`` beside the file with any driver (a VRT ``.ovr`` puts another file's bytes into every
    downsampled read) and apply a ``.aux.xml``. Sentinel-2 COGs and JP2s carry their overviews inside; remote
    reads also save the HEAD requests for side files.
    """
    suffix = PurePosixPath(path.split("?", 1)[0]).suffix.lower()
    drivers = ALLOWED_DRIVERS if suffix not in (".jp2", ".j2k", ".jpx") else tuple(reversed(ALLOWED_DRIVERS))
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        for driver in drivers:
            try:
                return rasterio.open(path, driver=driver)
            except RasterioIOError as exc:
                if not _NOT_RECOGNIZED.search(str(exc)):
                    raise
    raise FormatNotAllowed(NOT_ALLOWED_FORMAT)


@functools.lru_cache(maxsize=1)
def _extension_drivers() -> dict[str, str]:
    from rasterio.drivers import raster_driver_extensions

    return {ext.lower(): driver for ext, driver in raster_driver_extensions().items()}


def _refused_extension(path: str) -> str | None:
    """The GDAL driver that a file name's extension belongs to, when it is not an allowed one (``.vrt``: VRT)."""
    name = PurePosixPath(path).name.lower()
    for ext, driver in _extension_drivers().items():
        if name.endswith("." + ext) and driver not in ALLOWED_DRIVERS:
            return f"{driver} (.{ext})"
    return None


def check_magic(path: str, label: str) -> None:
    """Refuse a local file whose first bytes are not a TIFF or JPEG 2000 signature (read without blocking)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(label, f"cannot open ({exc.strerror or exc})") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO/device since it was checked
            raise InputError(label, "is not a regular file")
        head = os.read(fd, 16)
    finally:
        os.close(fd)
    if not head.startswith(MAGIC):
        raise InputError(label, NOT_ALLOWED_FORMAT)


# -- file kinds ----------------------------------------------------------------------------------------------------


def regular_file(path: str | Path, label: str | Path | None = None, what: str = "file") -> os.stat_result:
    """``os.stat`` of ``path`` (symlinks followed), refusing what is missing or not a regular file, before any open.

    A size guard on ``st_size`` means nothing for ``/dev/zero`` (size 0, endless) or a FIFO (blocks forever).
    """
    label = path if label is None else label
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(label, f"cannot read {what} (does not exist)") from None
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(label, f"cannot read {what} ({problem})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise InputError(label, f"cannot read {what}: it is {file_kind(info.st_mode)}, not a regular file")
    return info


def read_limited(path: str | Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (checked before opening, and again while reading)."""
    info = regular_file(path, path, what)
    if info.st_size > limit:
        raise InputError(path, f"{what} is {info.st_size} bytes, larger than the {limit}-byte limit")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(path, f"cannot read {what} ({exc.strerror or exc})") from exc
    if len(data) > limit:
        raise InputError(path, f"{what} is larger than the {limit}-byte limit")
    return data


# -- the rules of one job ------------------------------------------------------------------------------------------


def _is_under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class InputAccess:
    """Where one job's inputs may be read from.

    ``roots``: real paths (symlinks resolved) of the allowed folders and files; None means local paths are not
    confined (a spec built in code with neither a job file nor ``access.input_roots``).
    ``hosts``: allowed remote hosts (exact, or ``.example.org`` for its subdomains; s3: bucket names);
    ``any_host``: whether any http(s)/s3 host is allowed (only when ``hosts`` is empty).
    """

    roots: tuple[str, ...] | None = None
    hosts: tuple[str, ...] = ()
    any_host: bool = True

    @classmethod
    def of_job(cls, job: JobSpec) -> InputAccess:
        folder = job.folder
        spec = job.access
        roots: tuple[str, ...] | None = None
        if folder is not None or spec.input_roots:
            declared: list[Path] = [*([folder] if folder is not None else []), *spec.input_roots]
            for item in job.inputs:
                declared.extend(getattr(item, "paths", ()))  # what the job names is allowed by naming it
            roots = tuple(dict.fromkeys(os.path.realpath(p) for p in declared))
        return cls(roots, tuple(spec.remote_hosts), spec.allow_any_remote_host and not spec.remote_hosts)

    def with_roots(self, folders: Iterable[str | Path]) -> InputAccess:
        """These rules with more allowed folders (e.g. the folder of the STAC file being read)."""
        if self.roots is None:
            return self
        return replace(self, roots=tuple(dict.fromkeys((*self.roots, *(os.path.realpath(f) for f in folders)))))

    # local ---------
    def confine(self, path: str | Path, label: str | Path) -> str:
        """The real path of ``path``; refused when it lies outside every allowed folder."""
        try:
            real = os.path.realpath(path)
        except (OSError, ValueError) as exc:
            raise InputError(label, f"cannot resolve the path ({exc})") from exc
        if self.roots is not None and not any(_is_under(real, root) for root in self.roots):
            where = f"resolves to {real}, which is" if real != str(path) else "is"
            raise InputError(
                label,
                f"{where} outside the folders this job may read (the job file's folder, the STAC file's folder, "
                "the inputs' paths and access.input_roots); add its folder to access.input_roots to allow it",
            )
        return real

    def local_raster(self, path: str | Path, label: str) -> str:
        """A confined, existing, regular local file in an allowed raster format; returns its real path."""
        real = self.confine(path, label)
        regular_file(real, label, f"asset file {path}")
        check_magic(real, label)
        return real

    # remote ---------
    def host_allowed(self, host: str) -> bool:
        if not self.hosts:
            return self.any_host
        return any(host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in self.hosts)

    def check_url(self, url: str, label: str, *, raster: bool = True) -> tuple[str, str]:
        """(scheme, host) of an http(s)/s3 URL after the scheme, host and (for rasters) format rules; else refused."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        except ValueError as exc:
            raise InputError(label, f"malformed URL ({exc})") from exc
        scheme = parts.scheme.lower()
        if scheme not in REMOTE_SCHEMES:
            raise InputError(label, f"unsupported href scheme {scheme}:// (use a local path, http(s):// or s3://)")
        host = (parts.netloc if scheme == "s3" else parts.hostname or "").lower()
        if not host or re.search(r"[\s\\\x00-\x1f\x7f]", url):
            raise InputError(label, "malformed URL (no host, or spaces, backslashes or control characters)")
        if scheme == "s3" and ".." in unquote(parts.path).split("/"):
            raise InputError(label, "malformed URL ('..' in an s3 key)")
        if not self.host_allowed(host):
            if self.hosts:
                problem = f"host {host} is not in access.remote_hosts ({', '.join(self.hosts)})"
            else:
                problem = f"host {host}: remote inputs are off (access.allow_any_remote_host is false)"
            raise InputError(label, problem)
        if raster:
            driver = _refused_extension(unquote(parts.path))
            if driver is not None:
                raise InputError(label, f"names a {driver} file; suelo reads only {FORMATS} rasters")
        return scheme, host

    def remote_raster(self, url: str, label: str) -> str:
        """The GDAL path of an allowed remote raster href (``/vsicurl/https://...``, ``/vsis3/bucket/key``)."""
        scheme, _ = self.check_url(url, label)
        if REMOTE_SCHEMES[scheme] == "/vsicurl/":
            return "/vsicurl/" + url
        return "/vsis3/" + url[len(scheme) + 3 :]


#: The rules of a reader called without a job: local paths unconfined, any http(s)/s3 host.
UNCONFINED = InputAccess()


def href_scheme(href: str) -> str | None:
    """The lower-case URL scheme of an href (``https``), or None for a path (``C:`` is not a scheme here)."""
    match = _SCHEME.match(href)
    if match is None or not href[match.end() :].startswith("//"):
        return None
    return match.group(1).lower()
