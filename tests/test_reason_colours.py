"""Reason colours stand apart: CIE76 colour differences to every class colour of every shipped legend.

A masked pixel drawn in almost the colour of a class (Urban Atlas' roads and the old reason greys were 3.7 and 8.1
apart) reads as that class. The conversion is written out here (sRGB, D65, to CIELAB) so that the bound does not
depend on any colour library's conventions.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from suelo.legend import load_legend
from suelo.reasons import REASON_STYLE
from tests.fixtures import LEGENDS

#: What tests/test_reason_colours.py promises (suelo.reasons states the achieved minimum, 21.4).
MIN_DELTA_E = 20.0

# D65 reference white (CIE 1931 2 degree observer), XYZ with Y = 1
_WHITE = (0.95047, 1.0, 1.08883)
# linear sRGB -> XYZ (IEC 61966-2-1, D65)
_SRGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_EPSILON = (6 / 29) ** 3


def _linear(channel: int) -> float:
    """An 8-bit sRGB channel without its transfer curve (0..1)."""
    value = channel / 255
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def _f(t: float) -> float:
    return t ** (1 / 3) if t > _EPSILON else t / (3 * (6 / 29) ** 2) + 4 / 29


def srgb_to_lab(color: str) -> tuple[float, float, float]:
    """``#rrggbb`` -> CIELAB (L*, a*, b*) under D65."""
    rgb = [_linear(int(color[i : i + 2], 16)) for i in (1, 3, 5)]
    x, y, z = (sum(m * c for m, c in zip(row, rgb, strict=True)) for row in _SRGB_TO_XYZ)
    fx, fy, fz = (_f(v / w) for v, w in zip((x, y, z), _WHITE, strict=True))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def delta_e(first: str, second: str) -> float:
    """CIE76 colour difference: the Euclidean distance in CIELAB."""
    return math.dist(srgb_to_lab(first), srgb_to_lab(second))


def shipped_legends() -> list[Path]:
    return sorted(LEGENDS.glob("*.yaml"))


def reason_colours() -> dict[str, str]:
    return {reason: colour for reason, (_name, colour) in REASON_STYLE.items() if colour is not None}


@pytest.mark.parametrize(
    ("color", "lab"),
    [
        ("#ffffff", (100.0, 0.0, 0.0)),
        ("#000000", (0.0, 0.0, 0.0)),
        ("#808080", (53.585, 0.0, 0.0)),
        ("#ff0000", (53.241, 80.092, 67.203)),
        ("#00ff00", (87.735, -86.183, 83.179)),
        ("#0000ff", (32.297, 79.188, -107.86)),
    ],
)
def test_srgb_to_lab_reference_values(color: str, lab: tuple[float, float, float]) -> None:
    assert srgb_to_lab(color) == pytest.approx(lab, abs=0.01)


def test_delta_e_of_the_old_greys_against_the_urban_atlas_roads() -> None:
    """The figures of the issue: the old reason greys against Urban Atlas' other roads and fast transit roads."""
    assert delta_e("#bdbdbd", "#b3b3b3") == pytest.approx(3.7, abs=0.05)
    assert delta_e("#808080", "#959595") == pytest.approx(8.1, abs=0.05)


def test_every_shipped_legend_is_checked() -> None:
    names = {path.name for path in shipped_legends()}
    assert {"urban_atlas_2018.yaml", "corine_land_cover.yaml", "worldcereal_landcover10.yaml"} <= names
    assert len(names) >= 6


@pytest.mark.parametrize("legend_path", shipped_legends(), ids=lambda path: path.stem)
def test_reason_colours_stand_apart_from_every_class(legend_path: Path) -> None:
    legend = load_legend(legend_path)
    close = [
        (reason, colour, entry.name, entry.color, round(delta_e(colour, entry.color), 1))
        for reason, colour in reason_colours().items()
        for entry in legend
        if delta_e(colour, entry.color) < MIN_DELTA_E
    ]
    assert close == []


def test_reason_colours_stand_apart_from_each_other() -> None:
    colours = reason_colours()
    assert set(colours) == {"outside_training", "too_few_observations", "low_confidence"}
    for (a, first), (b, second) in itertools.combinations(colours.items(), 2):
        assert delta_e(first, second) >= MIN_DELTA_E, (a, b)


def test_the_achieved_minimum() -> None:
    """The smallest difference over all legends and between the reasons, as suelo.reasons states it."""
    colours = list(reason_colours().values())
    classes = {entry.color for path in shipped_legends() for entry in load_legend(path)}
    pairs = [(c, k) for c in colours for k in classes] + list(itertools.combinations(colours, 2))
    smallest = min(delta_e(a, b) for a, b in pairs)
    assert smallest == pytest.approx(21.4, abs=0.05)
    assert min(pairs, key=lambda pair: delta_e(*pair)) == (REASON_STYLE["low_confidence"][1], "#595959")
