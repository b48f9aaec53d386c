"""GeoTIFF reader: GeoTIFF / JPEG 2000 files without Sentinel-2 metadata, in three layouts.

A GeoTIFF carries no SAFE or STAC metadata, so what those would say comes from the file names, the files' own band
descriptions and GDAL metadata tags, or the job spec; nothing is guessed from the pixels, and what cannot be known
(the processing level, the L2A offset, a date) is an error naming the file and how to state it.

Layers, each importing only the ones below it:

- :mod:`suelo.ingest.geotiff_layouts`: ``file_per_date`` (one multi-band file per acquisition, the default),
  ``band_files`` (one file per band) and ``stack`` (one file of dates x bands) turn files into scenes;
- :mod:`suelo.ingest.geotiff_meta`: date, processing level and radiometry of a file, and their precedence;
- :mod:`suelo.ingest.geotiff_files`: finding the files (confined like every input) and reading their headers.
"""

from __future__ import annotations

from suelo.ingest.confine import UNCONFINED, InputAccess
from suelo.ingest.geotiff_files import SUFFIXES, find_files
from suelo.ingest.geotiff_layouts import band_files, file_per_date, stack
from suelo.ingest.geotiff_meta import compile_pattern
from suelo.ingest.scene import Scene
from suelo.settings import GeoTiffInput, IngestSpec

__all__ = ["SUFFIXES", "discover"]


def discover(spec: GeoTiffInput, ingest: IngestSpec, *, access: InputAccess | None = None) -> list[Scene]:
    """The scenes of the files in ``spec.paths`` (files, or folders of ``*.tif`` / ``*.tiff`` / ``*.jp2``).

    ``access``: the job's input rules; a file found in a folder must resolve into an allowed folder (a symlink in
    it may point anywhere), the files and folders named in ``spec.paths`` are allowed by being named. Folders are
    searched with their subfolders for ``band_files`` only: a SAFE IMG_DATA keeps its bands in R10m/R20m/R60m and
    BigEarthNet one folder per patch, while a folder of per-date files or stacks is flat.

    ``ingest`` is not needed: scenes list every band their files hold, and ``read_scene`` reads only the bands the
    job asks for (and SCL).
    """
    access = access or UNCONFINED
    date_pattern = compile_pattern(spec.date_pattern, "date_pattern")  # a bad pattern is refused before any file
    found = find_files(spec.paths, access, recursive=spec.layout == "band_files")
    if spec.layout == "band_files":
        return band_files(found, spec, date_pattern)
    if spec.layout == "stack":
        return stack(found, spec)
    return file_per_date(found, spec, date_pattern)
