"""Reason codes: the map values of pixels that carry no class, and what they are called and shown as.

The one home of the codes, their names and their colours: the threshold stage writes them, the map writer styles
them, the urban-atlas vectors and the reports name them, all from here. Low in the stack (it imports nothing of
suelo), so every stage can use it.

Every map pixel is a class code or exactly one reason: no data (no valid observation, transparent), too few
clear observations, outside the model's training data (the novelty gate), unclassified (low confidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Name and colour of each reason, as legends, QGIS styles, attribute tables and reports show it (colour None =
#: transparent). The colours are chosen to be told apart from every class colour of every shipped legend
#: (data/legends/*.yaml) and from each other: the smallest CIE76 colour difference (CIELAB, D65) to any class colour
#: and between the reasons is 21.4 (low confidence against Urban Atlas' railways #595959); tests/test_reason_colours.py
#: fails below 20. Pure greys cannot get there: the legends hold greys from #595959 to #f0f0f0 (Urban Atlas' roads
#: and railways, CORINE's rocks and beaches, WorldCover's bare land and snow) and black (CORINE's burnt areas).
#:
#: - outside the training data: a deep magenta (CSS MediumVioletRed), 41.5 from any class. It reads as "flagged",
#:   not as a surface; brighter magentas (#ff00ff) sit 15.5 from CORINE's construction sites (#ff4dff).
#: - low confidence: a mid lavender grey, L* 49 with a little violet (chroma 18). The commonest reason (most of an
#:   urban-atlas map can be masked), so a quiet mid tone that still is no road grey: 21.4 from the railways, 22.3
#:   from the fast transit roads (#959595), where #808080 was 8.1.
#: - too few clear observations: a dark slate blue-grey, L* 19 (the legends leave the dark end nearly free), 25.8
#:   from the railways, 32.1 from the lavender grey, where #bdbdbd was 3.7 from Urban Atlas' other roads (#b3b3b3).
REASON_STYLE: dict[str, tuple[str, str | None]] = {
    "outside_training": ("Not mapped (outside the model's training data)", "#c71585"),
    "too_few_observations": ("Not classified (too few clear observations)", "#183048"),
    "low_confidence": ("Unclassified (low confidence)", "#7b6f8d"),
    "nodata": ("No data", None),
}


@dataclass(frozen=True)
class ReasonCodes:
    """Map codes for pixels that carry no class; they must not collide with any legend code."""

    nodata: int = 0
    too_few_observations: int = 253
    low_confidence: int = 254
    outside_training: int = 252

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.nodata, self.too_few_observations, self.outside_training, self.low_confidence)

    def to_dict(self) -> dict[str, int]:
        return {
            "nodata": self.nodata,
            "too_few_observations": self.too_few_observations,
            "outside_training": self.outside_training,
            "low_confidence": self.low_confidence,
        }

    def name_of(self, code: int) -> str | None:
        """The reason's name for ``code``, or None when ``code`` is not one of these reasons."""
        for reason, value in self.to_dict().items():
            if value == int(code):
                return REASON_STYLE[reason][0]
        return None

    def names(self) -> dict[int, str]:
        """Code -> name of every reason, in :data:`REASON_STYLE` order."""
        codes = self.to_dict()
        return {codes[reason]: name for reason, (name, _colour) in REASON_STYLE.items()}


LANDCOVER_REASONS = ReasonCodes(0, 253, 254, 252)
# Urban Atlas (and any legend with codes above 255) maps are uint16. Urban Atlas' own no-data codes (91000
# clouds/shadows, 92000 missing imagery) do not fit in uint16, so the top two uint16 values mark the reasons and
# 0 (not an Urban Atlas code) is nodata; 65533 marks pixels outside the model's training data.
UINT16_REASONS = ReasonCodes(nodata=0, too_few_observations=65534, low_confidence=65535, outside_training=65533)
URBAN_ATLAS_REASONS = UINT16_REASONS
# For uint8 legends that use 0 as a class (Dynamic World: 0 = water), nodata moves to 255.
ZERO_CLASS_REASONS = ReasonCodes(nodata=255, too_few_observations=253, low_confidence=254, outside_training=252)


def reasons_for(legend: Any) -> ReasonCodes:
    """Default reason codes for a legend: 0/252/253/254 for uint8 legends, 255 as nodata when 0 is a class, and
    :data:`UINT16_REASONS` when a code exceeds 251 (CORINE, Urban Atlas)."""
    codes = set(legend.codes)
    if max(codes) <= 251:
        return ZERO_CLASS_REASONS if 0 in codes else LANDCOVER_REASONS
    return UINT16_REASONS
