"""What the end-to-end fault tests compare between runs: the checksums of a finished run's final rasters."""

from __future__ import annotations

import json
from pathlib import Path


def map_checksums(out: Path) -> dict[str, str]:
    """Checksums of the final rasters (the STAC items and report also record input paths and compute settings)."""
    recorded = json.loads((out / "final.json").read_text())["checksums"]
    maps = {name: sha for name, sha in recorded.items() if name.endswith(".tif")}
    assert len(maps) == 3  # classes, confidence, clear observations
    return maps
