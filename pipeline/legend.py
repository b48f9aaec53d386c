"""Map legends: the (code, name, color) list every map, model and QGIS style shares.

A legend holds classes only. Reason codes (nodata, too few observations, low confidence) are added by the map
writer, never stored here, so a model can never predict one of them.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from suelo.data import LEGENDS
from suelo.errors import ConfigError, file_kind

DEFAULT_LEGEND = LEGENDS / "worldcereal_landcover10.yaml"
MAX_LEGEND_BYTES = 16 * 2**20  # the largest shipped legend is ~5 KB; Urban Atlas + CORINE together are far below
MAX_CODE = 65535  # the widest map dtype is uint16
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class LegendClass:
    code: int
    name: str
    color: str  # '#rrggbb'

    def key(self) -> str:
        """Snake-case form of the name (``"Temporary crops"`` -> ``temporary_crops``), for matching labels."""
        return normalize_class_name(self.name)


def normalize_class_name(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_")


@dataclass(frozen=True)
class Legend:
    classes: tuple[LegendClass, ...]

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[LegendClass]:
        return iter(self.classes)

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(c.code for c in self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def colors(self) -> tuple[str, ...]:
        return tuple(c.color for c in self.classes)

    def by_code(self, code: int) -> LegendClass:
        for c in self.classes:
            if c.code == int(code):
                return c
        raise KeyError(code)

    def code_for(self, label: str | int) -> int | None:
        """The code of a label given as a code, a name or its snake-case key; None if the legend lacks it."""
        if isinstance(label, (int,)) or (isinstance(label, str) and label.strip().isdigit()):
            code = int(label)
            return code if code in self.codes else None
        key = normalize_class_name(str(label))
        for c in self.classes:
            if c.key() == key:
                return c.code
        return None

    def subset(self, codes: Iterable[int]) -> Legend:
        """The classes with ``codes``, in legend order."""
        wanted = {int(c) for c in codes}
        return Legend(tuple(c for c in self.classes if c.code in wanted))

    def to_list(self) -> list[dict[str, Any]]:
        return [{"code": c.code, "name": c.name, "color": c.color} for c in self.classes]

    @classmethod
    def from_list(cls, items: Sequence[Any], source: str | Path = "<legend>") -> Legend:
        """Validated legend from a list of ``{code, name, color}``; problems raise ConfigError naming ``source``."""

        def fail(problem: str) -> ConfigError:
            return ConfigError(f"{source}: {problem}")

        if not isinstance(items, (list, tuple)) or not items:
            raise fail("a legend must be a non-empty list of {code, name, color}")
        classes = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"code", "name", "color"}:
                raise fail(f"entry {i} must have exactly the keys code, name, color, got {item!r}")
            code, name, color = item["code"], item["name"], item["color"]
            if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= MAX_CODE:
                raise fail(f"entry {i}: code must be an integer in 0..{MAX_CODE}, got {code!r}")
            if not isinstance(name, str) or not name.strip():
                raise fail(f"entry {i}: name must be a non-empty string, got {name!r}")
            if not isinstance(color, str) or not _COLOR.match(color):
                raise fail(f"entry {i} ({name}): color must be '#rrggbb', got {color!r}")
            classes.append(LegendClass(code, name.strip(), color.lower()))
        keys: tuple[tuple[Callable[[LegendClass], object], str], ...] = (
            (lambda c: c.code, "code"),
            (lambda c: c.key(), "name"),
        )
        for attr, what in keys:
            seen: dict[object, LegendClass] = {}
            for c in classes:
                k = attr(c)
                if k in seen:
                    raise fail(f"duplicate {what} {k!r} ({seen[k].name!r} and {c.name!r})")
                seen[k] = c
        return cls(tuple(classes))


def load_legend(path: str | Path = DEFAULT_LEGEND) -> Legend:
    """Read a legend from YAML (``.yaml``/``.yml``) or JSON: a list of ``{code, name, color}``."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read legend: {exc.strerror or exc}") from exc
    # /dev/zero or a FIFO would be read forever: only regular files of a legend's size
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: cannot read legend: {file_kind(info.st_mode)}, not a regular file")
    if info.st_size > MAX_LEGEND_BYTES:
        raise ConfigError(f"{path}: cannot read legend: {info.st_size} bytes, above the {MAX_LEGEND_BYTES}-byte limit")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read legend: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read legend: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: not valid {kind}: nested too deeply") from None
    except Exception as exc:  # PyYAML's own constructors fail with ValueError/IndexError on e.g. "!!float ;"
        raise ConfigError(f"{path}: not valid {kind}: {type(exc).__name__}: {exc}") from exc
    if isinstance(data, dict) and "classes" in data:
        data = data["classes"]
    legend = Legend.from_list(data, path)
    check_reason_codes(legend, path)
    return legend


def check_reason_codes(legend: Legend, source: str | Path) -> None:
    """A legend whose codes collide with the reason codes of its maps (no data, too few observations, outside the
    training data, low confidence) is refused when it is loaded, not after a whole run at assembly."""
    from suelo.reasons import reasons_for
    from suelo.threshold import reason_code_collisions

    collide = reason_code_collisions(legend)
    if collide:
        reserved = reasons_for(legend).to_dict()
        raise ConfigError(
            f"{source}: class codes {collide} are reserved for the maps' reason codes {reserved}; renumber them"
        )
