"""The three GeoTIFF layouts: how input files become scenes (README: "GeoTIFF layouts").

- ``file_per_date``: one multi-band file per acquisition; its bands named by ``bands`` or by the band descriptions.
- ``band_files``: one file per band; ``file_pattern`` tells each file's band and acquisition. The bands of one
  acquisition may have different pixel sizes (10/20/60 m): each is its own :class:`BandRef` and ``read_on_grid``
  resamples it onto the grid. A band found at several pixel sizes (a Level-2A IMG_DATA holds B02 at 10, 20 and
  60 m) is taken at the finest, its native resolution.
- ``stack``: one file of dates x bands; each date becomes a scene whose bands point into the same file.

Band names are canonical (:func:`suelo.band_names.canonical_band`); file bands that are not a Sentinel-2 band
or SCL are left out and listed in ``Scene.extra["ignored_bands"]``. Dates, levels and radiometry follow the rules
of :mod:`suelo.ingest.geotiff_meta`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from suelo.band_names import SCL, canonical_band
from suelo.errors import ConfigError, InputError
from suelo.grid import union_bounds
from suelo.ingest.geotiff_files import Found, RasterInfo, raster_info
from suelo.ingest.geotiff_meta import acquired, compile_pattern, level, match_date, radiometry, scene_extra
from suelo.ingest.scene import BandRef, Scene, SourceLink, tile_in_name
from suelo.settings import GeoTiffInput

#: Band descriptions of stacks understood without a ``description_pattern``, tried in this order. Dates before
#: steps, so that ``20210115_B2`` is a date and not time step 20210115. Earth Engine's ``toBands()`` names bands
#: ``<image index>_<band>`` (``0_B2``, or ``20210115T104319_20210115T104321_T31UFS_B2`` for a collection).
DEFAULT_DESCRIPTION_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"^(?P<band>\w+?)_(?P<year>\d{4})-?(?P<month>\d{2})-?(?P<day>\d{2})$",  # B2_20210115, B2_2021-01-15
        r"^(?P<year>\d{4})-?(?P<month>\d{2})-?(?P<day>\d{2})\w*?_(?P<band>[A-Za-z0-9]+)$",  # 20210115..._B2
        r"^(?P<band>\w+?)_(?P<step>\d{1,4})$",  # B2_3
        r"^(?P<step>\d{1,4})_(?P<band>\w+)$",  # 0_B2
    )
)


def _scene(
    spec: GeoTiffInput,
    scene_id: str,
    when: tuple[dt.datetime, str],
    level_of: tuple[str, str],
    refs: Mapping[str, BandRef],
    infos: Sequence[RasterInfo],
    source: str,
    ignored: Sequence[str] = (),
    origin: SourceLink | None = None,
) -> Scene:
    """A scene of ``refs`` (SCL among them if present) from ``infos``, which share one CRS; bounds = their union."""
    bands = dict(refs)
    scl = bands.pop(SCL, None)
    first = infos[0]
    return Scene(
        scene_id=scene_id,
        acquired=when[0],
        level=level_of[0],
        source=source,
        origin=origin,
        bands=bands,
        radiometry=radiometry(spec, bands, level_of, first.path),
        crs=first.crs,
        bounds=union_bounds([i.bounds for i in infos]),
        scl=scl,
        nodata_values=(spec.nodata,) if spec.nodata is not None else (),
        extra=scene_extra(Path(source), date_source=when[1], level_source=level_of[1], ignored_bands=tuple(ignored)),
    )


# -- file_per_date -------------------------------------------------------------------------------------------------


def file_per_date(found: Sequence[Found], spec: GeoTiffInput, date_pattern: re.Pattern[str]) -> list[Scene]:
    """One scene per file."""
    scenes = []
    for item in found:
        info = raster_info(item.path)
        indices, ignored = _named_bands(info, spec)
        path = str(item.path)
        refs = {name: BandRef(path, i, f"{path} band {i} ({name})") for name, i in indices.items()}
        when = acquired(info, spec, date_pattern)
        scenes.append(
            _scene(spec, item.path.stem, when, level(info, spec, item.folder_names()), refs, [info], path, ignored)
        )
    return scenes


def _named_bands(info: RasterInfo, spec: GeoTiffInput) -> tuple[dict[str, int], tuple[str, ...]]:
    """Canonical name -> 1-based index of the bands to take from a multi-band file, and the bands left out."""
    path = info.path
    if spec.bands is not None:
        if info.count != len(spec.bands):
            names = ", ".join(b or "~" for b in spec.bands)
            raise InputError(path, f"has {info.count} band(s) but the spec names {len(spec.bands)}: {names}")
        ignored = tuple(f"band {i} (null in bands)" for i, b in enumerate(spec.bands, 1) if b is None)
        return {b: i for i, b in enumerate(spec.bands, 1) if b is not None}, ignored
    if not info.described:
        raise InputError(
            path,
            "has no band descriptions to name its bands; list them with bands: [B02, B03, ...] on this input "
            "(null for a band to ignore)",
        )
    taken: dict[str, int] = {}
    left_out: list[str] = []
    for i, description in enumerate(info.descriptions, 1):
        name = canonical_band(description) if description else None
        if name is None:
            left_out.append(f"band {i} ({description or 'no description'})")
        elif name in taken:
            raise InputError(path, f"bands {taken[name]} and {i} are both described as {name}")
        else:
            taken[name] = i
    if not taken:
        raise InputError(
            path,
            f"no band description names a Sentinel-2 band or SCL ({', '.join(left_out)}); "
            "list the bands with bands: on this input",
        )
    return taken, tuple(left_out)


# -- band_files ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BandFile:
    """One band file: its header, canonical band, (time, its source) and (level, its source)."""

    info: RasterInfo
    band: str
    when: tuple[dt.datetime, str]
    level_of: tuple[str, str]


def band_files(found: Sequence[Found], spec: GeoTiffInput, date_pattern: re.Pattern[str]) -> list[Scene]:
    """One scene per acquisition: the files whose names give the same ``scene`` (else tile) and date."""
    pattern = compile_pattern(spec.file_pattern, "file_pattern", required=("band",))
    wanted = None if spec.bands is None else {*spec.bands, SCL}  # SCL is the cloud mask, not a band to choose
    groups: dict[tuple[str, dt.date], list[_BandFile]] = {}
    ignored: dict[str, list[str]] = {}  # scene text -> files of other bands
    for item in found:
        match = pattern.search(item.path.name)
        if match is None:  # not a band file (TCI, AOT, a preview): not part of any scene
            continue
        text = _scene_text(match, item.path)
        band = canonical_band(match.group("band") or "")
        if band is None or (wanted is not None and band not in wanted):
            ignored.setdefault(text, []).append(item.path.name)
            continue
        info = raster_info(item.path)
        when = acquired(info, spec, date_pattern, named=match_date(match, item.path, "file name"))
        member = _BandFile(info, band, when, level(info, spec, item.folder_names()))
        groups.setdefault((text, when[0].date()), []).append(member)
    if not groups:
        examples = ", ".join(f.path.name for f in found[:3])
        raise InputError(
            spec.paths[0],
            f"no file name gives a Sentinel-2 band by file_pattern {pattern.pattern!r} (files: {examples})",
        )
    return [
        _acquisition(spec, text, day, members, ignored.get(text, ())) for (text, day), members in sorted(groups.items())
    ]


def _scene_text(match: re.Match[str], path: Path) -> str:
    """What names the acquisition of a band file: the ``scene`` group, else the tile in the name (or nothing)."""
    if "scene" in match.re.groupindex and match.group("scene"):
        return match.group("scene")
    return tile_in_name(path.name) or ""


def _acquisition(
    spec: GeoTiffInput, text: str, day: dt.date, members: list[_BandFile], ignored: Sequence[str]
) -> Scene:
    scene_id = text or day.strftime("%Y%m%d")
    # The file to name is the odd one out: compare with the CRS most of the acquisition's files have.
    crss = [m.info.crs for m in members]
    first = members[max(range(len(crss)), key=lambda i: (crss.count(crss[i]), -i))]
    for other in members:
        if other.info.crs != first.info.crs:
            raise InputError(
                other.info.path,
                f"CRS {other.info.crs} differs from {first.info.crs} of {first.info.path.name}, another band file of "
                f"acquisition {scene_id}; the band files of one acquisition must share one CRS",
            )
        if other.level_of[0] != first.level_of[0]:
            raise InputError(
                other.info.path,
                f"is {other.level_of[0]} ({other.level_of[1]}) but {first.info.path.name} of the same acquisition "
                f"is {first.level_of[0]} ({first.level_of[1]})",
            )
    chosen: dict[str, _BandFile] = {}
    for member in members:
        taken = chosen.get(member.band)
        if taken is None or member.info.pixel_size < taken.info.pixel_size:
            chosen[member.band] = member
        elif member.info.pixel_size == taken.info.pixel_size:
            raise InputError(
                member.info.path,
                f"is a second {member.band} file of acquisition {scene_id} at the same pixel size "
                f"(also {taken.info.path})",
            )
    refs = {b: BandRef(str(m.info.path), 1, f"{m.info.path} ({b})") for b, m in sorted(chosen.items())}
    infos = [m.info for m in chosen.values()]
    folder = os.path.commonpath([str(m.info.path.parent) for m in chosen.values()])
    when = min((m.when for m in chosen.values()), key=lambda w: w[0])
    source = str(Path(folder) / f"{scene_id}*")
    origin = SourceLink(folder, f"files {scene_id}*")
    return _scene(spec, scene_id, when, first.level_of, refs, infos, source, ignored, origin)


# -- stack ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """One date of a stack: its time and where that came from, what names it in labels, and canonical band ->
    1-based index in the file."""

    when: dt.datetime
    date_source: str
    name: str
    indices: dict[str, int]


def stack(found: Sequence[Found], spec: GeoTiffInput) -> list[Scene]:
    """One scene per date of each stack file."""
    if spec.description_pattern is not None:
        user = compile_pattern(spec.description_pattern, "description_pattern", required=("band",))
        if "step" not in user.groupindex and "year" not in user.groupindex:
            raise ConfigError(f"geotiff description_pattern {user.pattern!r} needs a step or year/month/day groups")
        patterns: tuple[re.Pattern[str], ...] = (user,)
    else:
        patterns = DEFAULT_DESCRIPTION_PATTERNS
    scenes = []
    for item in found:
        info = raster_info(item.path)
        level_of = level(info, spec, item.folder_names())
        if spec.band_order is not None:
            steps, ignored = _steps_from_spec(info, spec), _nulls(spec)
        else:
            steps, ignored = _steps_from_descriptions(info, spec, patterns)
        path = str(item.path)
        ids = [f"{item.path.stem}_{s.when:%Y%m%d}" for s in steps]
        for n, step in enumerate(steps):
            scene_id = ids[n] if ids.count(ids[n]) == 1 else f"{ids[n]}_{n}"  # two steps of one day: both kept
            refs = {b: BandRef(path, i, f"{path} band {i} ({b}, {step.name})") for b, i in step.indices.items()}
            when = (step.when, step.date_source)
            scenes.append(_scene(spec, scene_id, when, level_of, refs, [info], path, ignored))
    return scenes


def _nulls(spec: GeoTiffInput) -> tuple[str, ...]:
    return tuple(f"band {i} of each date (null in bands)" for i, b in enumerate(spec.bands or (), 1) if b is None)


def _steps_from_spec(info: RasterInfo, spec: GeoTiffInput) -> list[_Step]:
    bands, dates = spec.bands or (), spec.dates or ()
    if info.count != len(bands) * len(dates):
        raise InputError(
            info.path,
            f"has {info.count} bands but bands x dates is {len(bands)} x {len(dates)} = {len(bands) * len(dates)}",
        )
    steps = []
    for t, day in enumerate(dates):
        indices = {}
        for b, name in enumerate(bands):
            if name is not None:
                # date_major: the bands of date 0, then of date 1 (GEE toBands); band_major: band 0 at every date
                indices[name] = t * len(bands) + b + 1 if spec.band_order == "date_major" else b * len(dates) + t + 1
        when = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        steps.append(_Step(when, "job spec dates and band_order", f"date {day.isoformat()}", indices))
    return steps


def _steps_from_descriptions(
    info: RasterInfo, spec: GeoTiffInput, patterns: Sequence[re.Pattern[str]]
) -> tuple[list[_Step], tuple[str, ...]]:
    path = info.path
    if not info.described:
        raise InputError(
            path,
            "has no band descriptions to tell its bands and dates; give bands, dates and band_order "
            "(date_major or band_major) on this input",
        )
    by_step: dict[int, dict[str, int]] = {}  # time step number -> band -> index
    by_date: dict[tuple[dt.datetime, str], dict[str, int]] = {}  # (date, rest of the description) -> band -> index
    left_out: list[str] = []
    for i, description in enumerate(info.descriptions, 1):
        match = next((m for p in patterns if description and (m := p.search(description))), None)
        band = canonical_band(match.group("band") or "") if match else None
        if match is None or band is None or description is None:
            left_out.append(f"band {i} ({description or 'no description'})")
            continue
        step = match.group("step") if "step" in match.re.groupindex else None
        if step is not None:
            indices = by_step.setdefault(int(step), {})
        else:
            day = match_date(match, path, f"band {i} description")
            if day is None:
                left_out.append(f"band {i} ({description}: no date)")
                continue
            # Two images of one day (two tiles in a GEE collection) differ in the rest of the description.
            rest = description[: match.start("band")] + description[match.end("band") :]
            indices = by_date.setdefault((day, rest), {})
        if band in indices:
            raise InputError(path, f"bands {indices[band]} and {i} are both {band} of the same date ({description})")
        indices[band] = i
    if by_step and by_date:
        raise InputError(path, "band descriptions mix dates and time step numbers; give a description_pattern")
    if by_step:
        return _numbered_steps(path, spec, by_step), tuple(left_out)
    if not by_date:
        raise InputError(
            path, f"no band description names a Sentinel-2 band or SCL with a date or time step ({left_out[0]}, ...)"
        )
    steps = [
        _Step(day, "band descriptions", f"date {day:%Y-%m-%d}", indices)
        for (day, _), indices in sorted(by_date.items())
    ]
    if spec.dates is not None and set(spec.dates) != {s.when.date() for s in steps}:
        described = sorted({s.when.date().isoformat() for s in steps})
        raise InputError(
            path, f"band descriptions give dates {', '.join(described)}, which are not the dates: of the job spec"
        )
    return steps, tuple(left_out)


def _numbered_steps(path: Path, spec: GeoTiffInput, by_step: dict[int, dict[str, int]]) -> list[_Step]:
    """Time steps in numeric order onto the spec's ``dates`` list."""
    numbers = sorted(by_step)
    if spec.dates is None or len(spec.dates) != len(numbers):
        given = "none" if spec.dates is None else str(len(spec.dates))
        raise InputError(
            path,
            f"band descriptions number {len(numbers)} time steps ({numbers[0]}..{numbers[-1]}) but the job spec's "
            f"dates: lists {given}; list one date per step, in step order, with dates: on this input",
        )
    steps = []
    for number, day in zip(numbers, spec.dates, strict=True):
        when = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
        source = "job spec dates (time steps of the band descriptions)"
        steps.append(_Step(when, source, f"step {number}, date {day.isoformat()}", by_step[number]))
    return steps
