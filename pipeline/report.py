"""Run report: ``report.json`` + ``report.html`` + one PNG quicklook per map, in ``<out>/report/``.

The HTML is a single static page (no scripts, no external assets) so it opens from a file share or an archive,
read top-down: what was mapped, where, when and with which models; the caveats; each map at its true aspect
with its area per class and reason code; the accuracy figures (model cards with their spreads over spatial seeds,
the run's certificate, and the stratified assessment of a labelled sample when the job has one); links to every
output; the raw metrics and configuration in an appendix.
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
from suelo.cost import NOT_MEASURED, energy_measured
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


def _ha(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


def _link(href: str, text: str | None = None) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text or href)}</a>'


def _header_html(header: Mapping[str, Any], versions: Mapping[str, Any]) -> str:
    """The page's first table: what, where, when, with which models and how much of it is mapped."""
    rows: list[tuple[str, str]] = []
    period = header.get("period") or {}
    rows.append(("Job", html.escape(str(header.get("job", "")))))
    if header.get("where"):
        rows.append(("Where", html.escape(str(header["where"]))))
    if period:
        rows.append(("Period", html.escape(f"{period.get('start')} to {period.get('end')}")))
    if header.get("run_at"):
        rows.append(("Run", html.escape(str(header["run_at"]))))
    if header.get("inputs"):
        rows.append(("Inputs", html.escape(str(header["inputs"]))))
    if header.get("cost"):
        rows.append(("Cost", html.escape(str(header["cost"]))))
    for name, product in (header.get("products") or {}).items():
        parts = [f"model {product.get('model')} (sha256 {str(product.get('model_sha256', ''))[:12]})"]
        if product.get("target_accuracy") is not None:
            parts.append(f"target accuracy {product['target_accuracy']:.2f}")
        if product.get("certified_lower_bound") is not None:
            parts.append(
                f"certified {product['certified_lower_bound']:.3f} (95% lower bound on its calibration points, "
                f"{100 * float(product.get('calibration_coverage') or 0):.0f}% of them mapped)"
            )
        if product.get("mapped_pct") is not None:
            parts.append(f"{product['mapped_pct']:.1f}% of the imaged area mapped")
        rows.append((f"{name}", html.escape("; ".join(parts))))
    shown = ", ".join(f"{k} {versions[k]}" for k in ("suelo", "torch", "gdal", "rasterio", "numpy") if k in versions)
    rows.append(("Software", html.escape(shown)))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="header">{body}</table>'


def _areas_html(m: MapSet, pixel_area_m2: float | None) -> str:
    """Pixels, hectares and share of the map of every class and reason code the map holds."""
    total = sum(m.classes.counts.values()) or 1
    rows = []
    for entry in m.classes.entries:
        pixels = int(m.classes.counts.get(entry.code, 0))
        if not pixels and entry.color is None:
            continue
        swatch = (
            f'<span class="sw" style="background:{html.escape(entry.color)}"></span>'
            if entry.color
            else '<span class="sw nodata"></span>'
        )
        area = _ha(pixels * pixel_area_m2 / 1e4) if pixel_area_m2 else "n/a"
        rows.append(
            f"<tr><td>{swatch}</td><td>{entry.code}</td><td>{html.escape(entry.name)}</td>"
            f'<td class="num">{pixels:,}</td><td class="num">{area}</td>'
            f'<td class="num">{100 * pixels / total:.1f}%</td></tr>'
        )
    head = "<tr><th></th><th>code</th><th>class or reason</th><th>pixels</th><th>area (ha)</th><th>share</th></tr>"
    return f'<table class="areas">{head}{"".join(rows)}</table>'


def _accuracy_html(metrics: Mapping[str, Any]) -> str:
    """Each model's accuracy as its card states it (means and spreads over spatial seeds) and its certificate."""
    parts = []
    for name, product in metrics.items():
        if not isinstance(product, Mapping):  # not a product's metrics: shown in the appendix only
            continue
        model = product.get("model") or {}
        card = model.get("model_card") or {}
        rows = [(k.replace("_", " "), str(v)) for k, v in card.items()]
        certified = (product.get("thresholds") or {}).get("global") or {}
        if certified:
            rows.append(
                (
                    "certificate of this run",
                    f"target {certified.get('target_accuracy')}, 95% lower bound "
                    f"{float(certified.get('accuracy_lower_bound', float('nan'))):.3f} on "
                    f"{certified.get('n_validation')} calibration points, "
                    f"{100 * float(certified.get('coverage', 0)):.1f}% of them mapped",
                )
            )
        if not card:
            summary = {k: v for k, v in model.items() if not isinstance(v, Mapping)}
            rows += [(k.replace("_", " "), str(round(v, 4) if isinstance(v, float) else v)) for k, v in summary.items()]
        body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        parts.append(f"<h3>{html.escape(name)}</h3><table class='accuracy'>{body}</table>")
    return "".join(parts) or "<p>No model metrics given.</p>"


def _attribution_html(
    folder: Path, attributions: Mapping[str, Mapping[str, Any]]
) -> tuple[str, dict[str, Any], list[Path]]:
    """Per product, its model card's attribution (suelo.explain on the model's calibration split): the heatmaps as
    ``attribution/<product>.svg`` beside the page, the sentence on method, baseline and completeness, a table of each
    class's most influential months and strongest token. Returns the HTML, the report.json entries and the files."""
    from suelo.explain import HIGHLIGHT_COLUMNS, attribution_intro, class_highlights, heatmaps_svg, location_note

    parts: list[str] = []
    records: dict[str, Any] = {}
    files: list[Path] = []
    for name, summary in attributions.items():
        if "classes" not in summary:
            why = str(summary.get("missing") or "its model gives none")
            parts.append(f"<h3>{html.escape(name)}</h3><p>No attribution: {html.escape(why)}.</p>")
            records[name] = {"missing": why}
            continue
        svg = write_text_atomic(folder / "attribution" / f"{name}.svg", heatmaps_svg(summary))
        files.append(svg)
        href = svg.relative_to(folder).as_posix()
        rows = class_highlights(summary)
        table = _table([{title: row[key] for key, title in HIGHLIGHT_COLUMNS} for row in rows],
                       [title for _key, title in HIGHLIGHT_COLUMNS])  # fmt: skip
        note = location_note(summary)
        parts.append(
            f"<h3>{html.escape(name)}</h3><p>{html.escape(attribution_intro(summary))}</p>"
            f'<img class="figure" src="{html.escape(href)}" alt="mean attribution of each class\'s logit by month '
            f'and band group, {html.escape(name)}">{table}' + (f"<p>{html.escape(note)}</p>" if note else "")
        )
        records[name] = {
            "heatmaps": href,
            "samples": summary.get("samples"),
            "method": summary.get("method"),
            "completeness": summary.get("completeness"),
            "classes": [{k: v for k, v in row.items() if k != "top_month_index"} for row in rows],
        }
    if not parts:
        return "", records, files
    return (
        '<section class="attribution"><h2>Why each class: attribution by month and band</h2>'
        "<p>From each model's card: what in a pixel's monthly series raises or lowers the class the model gives it, "
        "averaged over the model's calibration samples (not this run's pixels: <code>suelo explain MODEL cube.nc"
        "</code> explains a region and maps its most influential month).</p>" + "".join(parts) + "</section>",
        records,
        files,
    )


def _number_row(name: str, cells: Sequence[str]) -> str:
    """A table row: ``name`` as its header, then ``cells`` right-aligned (figures already formatted)."""
    return f"<tr><th>{html.escape(name)}</th>" + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>"


def _figure(value: Any) -> str:
    """A cost figure: 3 significant digits (energies are 1e-6 kWh on a small run, km2 figures smaller still)."""
    return "n/a" if not isinstance(value, (int, float)) else f"{value:.3g}"


def _cost_summary(cost: Mapping[str, Any]) -> str:
    """The header's one line: time, energy (estimated or measured) and CO2e."""
    parts = [f"{_figure(cost.get('wall_s'))} s wall, {_figure(cost.get('cpu_s'))} CPU s"]
    if not energy_measured(str(cost.get("energy_method", ""))):
        parts.append("energy not measured")
    else:
        kind = "estimated" if cost.get("energy_estimated", True) else "measured"
        parts.append(f"{_figure(cost.get('energy_kwh'))} kWh ({kind}), {_figure(cost.get('co2e_kg'))} kg CO2e")
    predicted = cost.get("predicted") or {}
    if predicted.get("compared") and predicted.get("time_ratio") is not None:
        parts.append(f"suelo estimate predicted {_figure(predicted.get('seconds'))} s (measured / predicted "
                     f"{predicted['time_ratio']:.2f})")  # fmt: skip
    return ", ".join(parts) + " (until this report; run.json has the final figures)"


def _prediction_html(predicted: Mapping[str, Any] | None) -> str:
    """Predicted against measured: what ``suelo estimate`` said before the run beside what the run measured, or why
    there is no comparison."""
    if not predicted:
        return (
            "<p>No prediction to compare: <code>suelo estimate JOB</code> before the run writes one "
            "(<code>estimate.json</code> in the output folder) and this section then sets it beside the measured.</p>"
        )
    if not predicted.get("compared"):
        return f"<p>No prediction compared: {html.escape(str(predicted.get('why', '')))}.</p>"

    def ratio(value: Any) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    kind = "estimated" if predicted.get("energy_estimated", True) else "measured"
    rows = [
        ("wall time (s)", _figure(predicted.get("seconds")), _figure(predicted.get("measured_seconds")),
         ratio(predicted.get("time_ratio"))),
        (f"energy (kWh, {kind})", _figure(predicted.get("energy_kwh")),
         _figure(predicted.get("measured_energy_kwh")) if predicted.get("measured_energy_kwh") is not None
         else "not measured", ratio(predicted.get("energy_ratio"))),
    ]  # fmt: skip
    body = "".join(_number_row(name, cells) for name, *cells in rows)
    notes = [str(predicted[k]) for k in ("caveat", "resumed") if predicted.get(k)]
    when = f" on {html.escape(str(predicted['estimated_at']))}" if predicted.get("estimated_at") else ""
    return (
        f"<h3>Predicted against measured</h3><p><code>suelo estimate</code>{when} predicted this run for "
        f"{html.escape(str(predicted.get('workers')))} worker(s) from a timed calibration on a few of its blocks "
        "(<code>estimate.json</code>); measured until this report.</p>"
        '<table class="cost"><tr><th></th><th>predicted</th><th>measured</th><th>measured / predicted</th></tr>'
        f"{body}</table>" + "".join(f"<p>Caveat: {html.escape(n)}.</p>" for n in notes)
    )


def _cost_html(cost: Mapping[str, Any]) -> str:
    """The Cost section: what the run cost until the report was written, per run, per km2 and per million pixels,
    the energy marked as measured or estimated with codecarbon's method, and the carbon intensity it was priced at."""
    method = str(cost.get("energy_method", ""))
    measured = energy_measured(method)
    per_km2, per_mpx = cost.get("per_km2") or {}, cost.get("per_million_pixels") or {}
    rows = []
    for key, name in (("wall_s", "wall time (s)"), ("cpu_s", "CPU time (s)"), ("energy_kwh", "energy (kWh)"),
                      ("co2e_kg", "emissions (kg CO2e)")):  # fmt: skip
        if key in ("energy_kwh", "co2e_kg") and not measured:
            cells = ["not measured"] * 3
        else:
            cells = [_figure(cost.get(key)), _figure(per_km2.get(key)), _figure(per_mpx.get(key))]
        rows.append(_number_row(name, cells))
    head = "<tr><th></th><th>run</th><th>per km2</th><th>per million pixels</th></tr>"
    if not measured:
        energy = f"<strong>not measured</strong>: {html.escape(method.removeprefix(NOT_MEASURED + ': '))}"
    else:
        kind = "<strong>estimated</strong>" if cost.get("energy_estimated", True) else "measured"
        energy = (
            f"{kind}, CPU {_figure(cost.get('cpu_kwh'))} + GPU {_figure(cost.get('gpu_kwh'))} + RAM "
            f"{_figure(cost.get('ram_kwh'))} kWh; {html.escape(method)}"
        )
    gpu_mb = cost.get("peak_gpu_mb")
    details = [
        ("energy", energy),
        ("carbon intensity", f"{_figure(cost.get('carbon_intensity_g_per_kwh'))} g CO2e/kWh "
         f"({html.escape(str(cost.get('intensity_source', '')))})"),
        ("GPU time (s busy)", _figure(cost.get("gpu_s"))),
        ("peak memory", f"{_figure(cost.get('peak_rss_mb'))} MiB (largest process)"
         + (f"; GPU {_figure(gpu_mb)} MiB" if gpu_mb is not None else "")),
        ("grid", f"{_figure(cost.get('area_km2'))} km2, {cost.get('pixels', 'n/a')} pixels"),
    ]  # fmt: skip
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in details)
    return (
        '<section class="cost"><h2>Cost</h2>'
        "<p>Measured from the start of the run until this report was written (the machine's energy, by codecarbon); "
        "<code>run.json</code> (<code>cost</code>) has the final figures of the whole run.</p>"
        f'<table class="cost">{head}{"".join(rows)}</table><table class="cost">{body}</table>'
        f"{_prediction_html(cost.get('predicted'))}</section>"
    )


def write_run_report(
    folder: str | Path,
    maps: Sequence[MapSet],
    masking: Mapping[str, Mapping[str, Any]] | None = None,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
    assessments: Mapping[str, Mapping[str, Any]] | None = None,
    header: Mapping[str, Any] | None = None,
    outputs: Sequence[Path] = (),
    cost: Mapping[str, Any] | None = None,
    attributions: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write the report for ``maps``, read top-down: ``header`` (job, where, period, run time, inputs, each
    product's model, target and certified accuracy and mapped share), the caveats (``warnings``), each map at its
    true aspect with its legend and its area per class and reason code, the accuracy (the models' cards, the run's
    certificates and, from ``assessments``, the stratified estimates of a labelled sample), links to every output
    (``maps`` and ``outputs``), and the raw metrics and configuration in an appendix. ``masking`` maps
    ``"<product folder>/<map name>"`` (or the map name) to its :func:`threshold.masking_report`. ``cost``: the
    run's cost so far (:meth:`suelo.cost.RunCost.to_dict`), a header line and a Cost section before the outputs.
    ``attributions``: per product its model card's attribution summary (:class:`suelo.products.ProductPlan`), drawn
    as heatmaps after the accuracy, or ``{"missing": why}``, said instead."""
    from suelo.assess.page import ASSESSMENT_CSS, assessment_section_html
    from suelo.provenance import software_versions

    folder = Path(folder)
    masking, metrics, config = dict(masking or {}), dict(metrics or {}), dict(config or {})
    header = dict(header or {})
    if cost is not None:
        header.setdefault("cost", _cost_summary(cost))
    versions = software_versions()
    summary: dict[str, Any] = {
        "header": header, "maps": [], "model_metrics": metrics, "config": config, "versions": versions,
        "warnings": list(warnings), "assessments": dict(assessments or {}),
        "cost": dict(cost) if cost is not None else None,
    }  # fmt: skip
    sections = []
    links: list[str] = []
    for m in maps:
        # maps of different products share the job's name: the product folder tells them apart
        label = f"{m.classes.path.parent.name}/{m.name}"
        rgba = quicklook_rgba(m.classes.path, m.classes.entries)
        png = write_png(folder / "quicklooks" / f"{m.classes.path.parent.name}_{m.name}.png", rgba)
        files = [Path(os.path.relpath(p, folder)).as_posix() for p in m.files]
        record: dict[str, Any] = {
            "name": label,
            "dtype": m.classes.dtype,
            "nodata": m.classes.nodata,
            "files": files,
            "quicklook": png.relative_to(folder).as_posix(),
            "legend": [{"code": e.code, "name": e.name, "color": e.color} for e in m.classes.entries],
            "pixels_per_code": {str(k): v for k, v in sorted(m.classes.counts.items())},
            "masking": masking.get(label, masking.get(m.name)),
        }
        summary["maps"].append(record)
        links += files
        height, width = rgba.shape[:2]
        sections.append(
            f'<section class="map"><h2>{html.escape(label)}</h2>'
            f'<div class="row"><img src="{html.escape(record["quicklook"])}" width="{width}" height="{height}" '
            f'alt="quicklook of {html.escape(label)}">'
            f"<div><h3>Area by class and reason</h3>{_areas_html(m, header.get('pixel_area_m2'))}</div></div>"
            f"<p>Files: {', '.join(_link(f, Path(f).name) for f in files)}</p></section>"
        )
    attribution_html, summary["attribution"], attribution_files = _attribution_html(folder, attributions or {})
    links += [Path(os.path.relpath(p, folder)).as_posix() for p in [*outputs, *attribution_files]]
    warnings_html = "".join(
        '<div class="warning" role="alert"><strong>Caveat:</strong> ' + html.escape(w) + "</div>" for w in warnings
    )
    assessment_html = "".join(assessment_section_html(a) for a in (assessments or {}).values())
    masking_html = "".join(
        f"<h3>{html.escape(label)}</h3>"
        + _table([{k: v for k, v in mask.items() if k not in ("classes", "outside_training_pct_by_block")}],
                 [k for k in mask if k not in ("classes", "outside_training_pct_by_block")])
        + _table(mask.get("classes", []), ["code", "name", "predicted_pixels", "retained_pixels", "masked_pct"])
        for label, mask in masking.items()
    )  # fmt: skip
    raw = _table(_scalars(metrics), ["metric", "value"]) if metrics else "<p>No model metrics given.</p>"
    title = f"suelo run report: {header.get('job') or config.get('name') or ''}".rstrip(": ")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; font-size: 90%; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.row {{ display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; }}
.sw {{ display: inline-block; width: 1.2em; height: 1.2em; border: 1px solid #444; }}
.nodata {{ background: repeating-linear-gradient(45deg, #fff, #fff 3px, #ccc 3px, #ccc 6px); }}
.warning {{ background: #fde0e0; border: 2px solid #c00; padding: 0.6em 1em; margin: 0.5em 0; }}
img {{ image-rendering: pixelated; border: 1px solid #ccc; max-width: 512px; height: auto; flex: none; }}
img.figure {{ image-rendering: auto; max-width: 100%; border: none; }}
table.header th {{ background: #f4f4f4; white-space: nowrap; }}
{ASSESSMENT_CSS if assessments else ""}
</style></head><body>
<h1>{html.escape(title)}</h1>
{_header_html(header, versions)}
{warnings_html}
{"".join(sections)}
<h2>Accuracy</h2>
{_accuracy_html(metrics)}
{assessment_html}
{attribution_html}
{_cost_html(cost) if cost is not None else ""}
<h2>Outputs</h2><ul class="outputs">{"".join(f"<li>{_link(f)}</li>" for f in links)}</ul>
<h2>Appendix</h2>
<details><summary>Masking per map</summary>{masking_html or "<p>No masking report.</p>"}</details>
<details><summary>Raw model metrics</summary>{raw}</details>
<details><summary>Configuration and software versions</summary>
<pre>{html.escape(json.dumps({"config": config, "versions": versions}, indent=2, sort_keys=True, default=str))}</pre>
</details>
</body></html>
"""
    out = {
        "json": write_text_atomic(folder / "report.json", json.dumps(summary, indent=2, sort_keys=True, default=str)),
        "html": write_text_atomic(folder / "report.html", page),
    }
    out |= {f"attribution_{path.stem}": path for path in attribution_files}
    return out
