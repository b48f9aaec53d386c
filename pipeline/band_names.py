"""Sentinel-2 band names as users and tools write them, and the one spelling suelo uses.

ESA names bands ``B02`` and ``B8A``; Google Earth Engine and many exports write ``B2``, ``b8a`` or ``b02``. Job
specs, file names and band descriptions may use any of these; everything after ingest sees the canonical name
only, so a GEE export and a SAFE product give the same cube bands.

This module imports nothing from the pipeline: the settings validate band names with it.
"""

from __future__ import annotations

import re

#: The scene classification layer (cloud/shadow mask) of Level-2A products.
SCL = "SCL"
#: Canonical Sentinel-2 spectral band names, in wavelength order.
SPECTRAL_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip

# "B" then the number with or without its leading zero, then "A" for the narrow NIR band: B2, B02, B8A, B08A.
_BAND = re.compile(r"B0?(\d{1,2})(A?)")


def canonical_band(name: str) -> str | None:
    """``B02`` for ``B2``/``b02``/``B02``, ``B8A`` for ``b8a``/``B08A``, ``SCL`` for ``scl``; None for anything that
    is not a Sentinel-2 band or SCL (``QA60``, ``MSK_CLDPRB``, ``B13``), which callers ignore or refuse."""
    text = name.strip().upper()
    if text == SCL:
        return SCL
    match = _BAND.fullmatch(text)
    if match is None:
        return None
    number, narrow = int(match.group(1)), match.group(2)
    if narrow:
        return "B8A" if number == 8 else None
    return f"B{number:02d}" if 1 <= number <= 12 else None
