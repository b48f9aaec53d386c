"""Run report: ``report.json`` + ``report.html`` + one PNG quicklook per map, in ``<out>/report/``.

The HTML is a single static page (no scripts, no external assets) so it opens from a file share or an archive:
quicklook and legend of each map, the masked-area table of each map, the accuracy figures of the model that
made them and the run configuration.
"""

from __future__ import annotations

import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from suelo.atomic import atomic_output, write_text_atomic
from suelo.write import MapSet, hex_to_rgba

QUICKLOOK_MAX = 512
QUICKLOOK_MIN = 300


def quicklook_rgba(map_path: str | Path, entries: Sequence[tuple[int, str, str | None]]) -> np.ndarray:
    """The class map at 300-512 px a side, colored with its legend (nodata and unknown codes transparent).

    Read through the COG's overviews with nearest resampling (the overviews were built with ``mode``), so no
    color that is not a class color can appear.
    """
    with rasterio.open(map_path) as src:
        scale = max(src.height, src.width) / QUICKLOOK_MAX
        shape = (max(1, round(src.height / max(scale, 1))), max(1, round(src.width / max(scale, 1))))
        codes = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    lut = np.zeros((65536, 4), dtype=np.uint8)
    for code, _name, color in entries:
        lut[int(code)] = hex_to_rgba(color)
    # small maps are blown up by whole pixels (still no new colors) so a 100 px map is readable in the report
    zoom = max(1, QUICKLOOK_MIN // max(codes.shape))
    return lut[np.repeat(np.repeat(codes, zoom, axis=0), zoom, axis=1)]


def write_png(path: Path, rgba: np.ndarray) -> Path:
    from PIL import Image  # a matplotlib dependency, hence always installed with suelo

    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", optimize=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _legend_html(entries: Sequence[tuple[int, str, str | None]]) -> str:
    rows = []
    for code, name, color in entries:
        swatch = (
            f'<span class="sw" style="background:{html.escape(color)}"></span>'
            if color
            else '<span class="sw nodata"></span>'
        )
        rows.append(f"<tr><td>{swatch}</td><td>{code}</td><td>{html.escape(name)}</td></tr>")
    return "<table class='legend'><tr><th></th><th>code</th><th>class</th></tr>" + "".join(rows) + "</table>"


def _scalars(metrics: Mapping[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """Flatten nested metrics into (name, value) rows; lists are shown as JSON."""
    rows: list[dict[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _scalars(value, f"{name}.")
        else:
            shown = round(value, 4) if isinstance(value, float) else value
            rows.append({"metric": name, "value": shown if not isinstance(value, list) else json.dumps(value)})
    return rows


def write_run_report(
    folder: str | Path,
    maps: Sequence[MapSet],
    masking: Mapping[str, Mapping[str, Any]] | None = None,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    assessments: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write the report for ``maps``; ``masking`` maps ``"<product folder>/<map name>"`` (or just the map name) to
    its :func:`threshold.masking_report`. ``warnings`` are shown first, prominently (and in report.json).
    ``assessments`` (product -> the ``assessment.json`` of ``suelo assess analyze``) add the stratified accuracy and
    area estimates from a labelled sample, under the model's own accuracy figures."""
    from suelo.assess.page import ASSESSMENT_CSS, assessment_section_html
    from suelo.provenance import software_versions

    folder = Path(folder)
    masking, metrics, config = dict(masking or {}), dict(metrics or {}), dict(config or {})
    summary: dict[str, Any] = {
        "maps": [], "model_metrics": metrics, "config": config, "versions": software_versions(),
        "warnings": list(warnings), "assessments": dict(assessments or {}),
    }  # fmt: skip
    sections = []
    for m in maps:
        # maps of different products share the job's name: the product folder tells them apart
        label = f"{m.classes.path.parent.name}/{m.name}"
        png = write_png(
            folder / "quicklooks" / f"{m.classes.path.parent.name}_{m.name}.png",
            quicklook_rgba(m.classes.path, m.classes.entries),
        )
        record: dict[str, Any] = {
            "name": label,
            "dtype": m.classes.dtype,
            "nodata": m.classes.nodata,
            "files": [Path(os.path.relpath(p, folder)).as_posix() for p in m.files],
            "quicklook": png.relative_to(folder).as_posix(),
            "legend": [{"code": e.code, "name": e.name, "color": e.color} for e in m.classes.entries],
            "pixels_per_code": {str(k): v for k, v in sorted(m.classes.counts.items())},
            "masking": masking.get(label, masking.get(m.name)),
        }
        summary["maps"].append(record)
        mask = masking.get(label, masking.get(m.name))
        mask_html = "<p>No masking report.</p>"
        if mask:
            overall = [{k: v for k, v in mask.items() if k not in ("classes", "outside_training_pct_by_block")}]
            mask_html = _table(overall, list(overall[0])) + _table(
                mask.get("classes", []), ["code", "name", "predicted_pixels", "retained_pixels", "masked_pct"]
            )
        sections.append(
            f"<section><h2>{html.escape(label)}</h2>"
            f'<div class="row"><img src="{html.escape(record["quicklook"])}" alt="quicklook of {html.escape(label)}">'
            f"{_legend_html(m.classes.entries)}</div>"
            f"<h3>Masked area</h3>{mask_html}"
            f"<h3>Files</h3><ul>{''.join(f'<li>{html.escape(f)}</li>' for f in record['files'])}</ul></section>"
        )
    metrics_html = _table(_scalars(metrics), ["metric", "value"]) if metrics else "<p>No model metrics given.</p>"
    assessment_html = "".join(assessment_section_html(a) for a in (assessments or {}).values())
    warnings_html = "".join(
        '<div class="warning" role="alert"><strong>Warning:</strong> ' + html.escape(w) + "</div>" for w in warnings
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>suelo run report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; font-size: 90%; }} .row {{ display: flex; gap: 2em; }}
.sw {{ display: inline-block; width: 1.2em; height: 1.2em; border: 1px solid #444; }}
.nodata {{ background: repeating-linear-gradient(45deg, #fff, #fff 3px, #ccc 3px, #ccc 6px); }}
.warning {{ background: #fde0e0; border: 2px solid #c00; padding: 0.6em 1em; margin: 0.5em 0; font-size: 110%; }}
img {{ image-rendering: pixelated; border: 1px solid #ccc; max-width: 512px; }}
{ASSESSMENT_CSS if assessments else ""}
</style></head><body>
<h1>suelo run report</h1>
{warnings_html}
{assessment_html}
<h2>Model accuracy</h2>{metrics_html}
{"".join(sections)}
<h2>Configuration</h2><pre>{html.escape(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre>
</body></html>
"""
    out = {
        "json": write_text_atomic(folder / "report.json", json.dumps(summary, indent=2, sort_keys=True, default=str)),
        "html": write_text_atomic(folder / "report.html", page),
    }
    return out
