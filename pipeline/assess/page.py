"""Renderers of an accuracy and area assessment: the estimates as a CSV table, the error matrix as CSV, a static page.

Everything here reads the assessment dict that ``suelo assess analyze`` also writes as ``assessment.json``
(stratified estimators of Olofsson et al. 2014 and Stehman 2014): the map and the sample, the strata, the overall
figures, the per-class accuracies and areas with their standard errors and 95% confidence intervals, and the error
matrix of estimated area proportions with its sample counts. Nothing is recomputed but sums and ratios for display.

The page is a single static HTML file (no scripts, no external assets, all text escaped) so it opens from a file
share or an archive; its chart of mapped against estimated area is inline SVG. :func:`assessment_section_html` gives
the same content as one ``<section>`` for the run report page, whose style block should include
:data:`ASSESSMENT_CSS`.
"""

from __future__ import annotations

import csv
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from suelo.assess.estimate import Z95
from suelo.atomic import atomic_output, write_text_atomic

#: Columns of :func:`estimates_table`, in order (the header of :func:`write_table_csv`).
TABLE_COLUMNS = ("quantity", "code", "name", "estimate", "se", "ci95_low", "ci95_high", "mapped")

#: The overall quantities (one row each, no class) and the per-class ones (one row per class), in table order.
OVERALL_QUANTITIES = ("overall_accuracy", "mapped_share", "correct_share")
CLASS_QUANTITIES = ("users_accuracy", "producers_accuracy", "area_proportion", "area_ha")

_LABELS = {
    "overall_accuracy": "Overall accuracy (mapped pixels)",
    "mapped_share": "Share of the area given a class",
    "correct_share": "Share of the area given the right class",
    "users_accuracy": "User's accuracy",
    "producers_accuracy": "Producer's accuracy",
    "area_proportion": "Area proportion",
    "area_ha": "Area (ha)",
}

#: Styles of the assessment section, scoped to it: the standalone page's style block, and for the run report's.
ASSESSMENT_CSS = """\
.assessment table { border-collapse: collapse; margin: 0.5em 0; }
.assessment td, .assessment th { border: 1px solid #ccc; padding: 2px 6px; font-size: 90%; vertical-align: top; }
.assessment th { background: #f4f4f4; text-align: left; }
.assessment td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.assessment table.matrix td { text-align: right; font-variant-numeric: tabular-nums; }
.assessment table.matrix td.diag { background: #d9f0d3; font-weight: bold; }
.assessment table.matrix td.total { background: #f4f4f4; }
.assessment table.matrix small { display: block; color: #666; font-weight: normal; font-size: 80%; }
.assessment .warning { background: #fde0e0; border: 2px solid #c00; padding: 0.6em 1em; margin: 0.5em 0;
  font-size: 110%; }
.assessment .note { color: #555; font-size: 90%; max-width: 720px; }
.assessment svg { display: block; margin: 0.5em 0; font-family: sans-serif; }
"""

_PAGE_CSS = "body { font-family: sans-serif; margin: 2em; }\n" + ASSESSMENT_CSS

_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_NO_COLOR = "#888888"  # classes without a colour (and the legend's neutral swatches)
_MISSING = "n/a"


# -- the estimates table -----------------------------------------------------------------------------------------------


def _float(value: Any) -> float | None:
    """A plain Python float (numpy scalars would reach the CSV as ``np.float64(...)``), or None."""
    return None if value is None else float(value)


def _estimate_cells(estimate: Mapping[str, Any] | None) -> dict[str, float | None]:
    """The estimate, se, ci95_low and ci95_high cells of one ``E`` (all None for a quantity that is None)."""
    if estimate is None:
        return {"estimate": None, "se": None, "ci95_low": None, "ci95_high": None}
    ci = estimate.get("ci95")
    low, high = (ci[0], ci[1]) if ci is not None else (None, None)
    return {
        "estimate": _float(estimate.get("estimate")),
        "se": _float(estimate.get("se")),
        "ci95_low": _float(low),
        "ci95_high": _float(high),
    }


def estimates_table(assessment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (quantity, class), with the columns of :data:`TABLE_COLUMNS`.

    First the overall quantities (``code`` and ``name`` None), then each per-class quantity for every class in the
    order of ``assessment["classes"]``. ``mapped`` is the class's mapped area for ``area_ha``, its share of the total
    area for ``area_proportion`` (None when the total is 0) and None otherwise. A quantity that is None (the user's
    accuracy of a class never mapped) still has its row, with None values.
    """
    rows: list[dict[str, Any]] = []
    for quantity in OVERALL_QUANTITIES:
        rows.append(
            {
                "quantity": quantity,
                "code": None,
                "name": None,
                **_estimate_cells(assessment.get(quantity)),
                "mapped": None,
            }
        )
    total = _float(assessment.get("total_area_ha"))
    classes: Sequence[Mapping[str, Any]] = assessment.get("classes", [])
    for quantity in CLASS_QUANTITIES:
        for cls in classes:
            mapped_ha = _float(cls.get("mapped_area_ha"))
            mapped: float | None = None
            if quantity == "area_ha":
                mapped = mapped_ha
            elif quantity == "area_proportion" and mapped_ha is not None and total:
                mapped = mapped_ha / total
            rows.append(
                {
                    "quantity": quantity,
                    "code": int(cls["code"]),
                    "name": str(cls["name"]),
                    **_estimate_cells(cls.get(quantity)),
                    "mapped": mapped,
                }
            )
    return rows


def write_table_csv(path: Path, assessment: Mapping[str, Any]) -> Path:
    """Write :func:`estimates_table` to ``path`` as CSV (header row; numbers unrounded, None as an empty cell)."""
    path = Path(path)
    rows = estimates_table(assessment)
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(TABLE_COLUMNS)
        for row in rows:
            writer.writerow([row[column] for column in TABLE_COLUMNS])
    return path


# -- the error matrix ----------------------------------------------------------------------------------------------


def _label(entry: Mapping[str, Any]) -> str:
    return f"{int(entry['code'])} {entry['name']}"


_Matrix = tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[list[float]], list[list[int]] | None]


def _matrix(assessment: Mapping[str, Any]) -> _Matrix:
    """Rows, columns, proportions (plain floats) and counts (plain ints, None when the dict has none)."""
    matrix: Mapping[str, Any] = assessment["error_matrix"]
    rows: list[Mapping[str, Any]] = list(matrix["rows"])
    columns: list[Mapping[str, Any]] = list(matrix["columns"])
    proportions = [[float(value) for value in row] for row in matrix["proportions"]]
    raw_counts = matrix.get("counts")
    counts = None if raw_counts is None else [[int(value) for value in row] for row in raw_counts]
    for name, block in (("proportions", proportions), ("counts", counts)):
        if block is not None and (len(block) != len(rows) or any(len(row) != len(columns) for row in block)):
            raise ValueError(f"the error matrix's {name} are not {len(rows)} rows x {len(columns)} columns")
    return rows, columns, proportions, counts


def _with_totals(values: Sequence[Sequence[float]], labels: Sequence[str]) -> list[list[Any]]:
    """``values`` with each row's sum appended and a last ``total`` row of the column sums (and the grand total)."""
    width = len(values[0]) if values else 0
    block: list[list[Any]] = [[label, *row, sum(row)] for label, row in zip(labels, values, strict=True)]
    column_sums = [sum(row[j] for row in values) for j in range(width)]
    block.append(["total", *column_sums, sum(column_sums)])
    return block


def error_matrix_csv(path: Path, assessment: Mapping[str, Any]) -> Path:
    """Write the error matrix to ``path`` as CSV: the estimated proportions of area, then the sample counts.

    Each block has a header row (``map \\ reference (...)``, one column ``"<code> <name>"`` per reference class,
    ``total``), one row per map value (``"<code> <name>"``, its cells, the row sum) and a last ``total`` row of the
    column sums and the grand total. The counts block follows after an empty line, in the same layout (it is left
    out when the assessment has no counts).
    """
    path = Path(path)
    rows, columns, proportions, counts = _matrix(assessment)
    row_labels = [_label(r) for r in rows]
    column_labels = [_label(c) for c in columns]
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["map \\ reference (proportion of area)", *column_labels, "total"])
        writer.writerows(_with_totals(proportions, row_labels))
        if counts is not None:
            writer.writerow([])
            writer.writerow(["map \\ reference (sample points)", *column_labels, "total"])
            writer.writerows(_with_totals(counts, row_labels))
    return path


# -- number formats ------------------------------------------------------------------------------------------------


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _pct(value: float | None) -> str:
    return f"{100 * value:.1f}%" if value is not None and _finite(value) else _MISSING


def _area_decimals(reference: float | None) -> int:
    """0 decimals above 100 ha, else 2."""
    return 0 if reference is not None and _finite(reference) and abs(reference) > 100 else 2


def _ha(value: float | None, decimals: int | None = None) -> str:
    if value is None or not _finite(value):
        return _MISSING
    places = _area_decimals(value) if decimals is None else decimals
    return f"{value:,.{places}f}"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _confidence_level(assessment: Mapping[str, Any]) -> float:
    return float(assessment.get("confidence_level") or 0.95)


# -- the page ------------------------------------------------------------------------------------------------------


def _warnings_html(assessment: Mapping[str, Any]) -> str:
    return "".join(
        f'<div class="warning" role="alert"><strong>Warning:</strong> {_e(w)}</div>'
        for w in assessment.get("warnings", [])
    )


def _summary_html(assessment: Mapping[str, Any]) -> str:
    the_map: Mapping[str, Any] = assessment.get("map", {})
    sample: Mapping[str, Any] = assessment.get("sample", {})
    grid: Mapping[str, Any] = the_map.get("grid", {})
    items: list[tuple[str, str]] = []
    items.append(
        ("Map", f"<code>{_e(the_map.get('path', ''))}</code><br><small>sha256 {_e(the_map.get('sha256', ''))}</small>")
    )
    if grid:
        items.append(("Grid", f"{_e(grid.get('width'))} × {_e(grid.get('height'))} pixels, {_e(grid.get('crs', ''))}"))
    pixel_area = the_map.get("pixel_area_m2")
    basis = the_map.get("area_basis")
    area_text = f"{float(pixel_area):,g} m² per pixel" if pixel_area is not None else "pixel area not known"
    items.append(("Pixel area", _e(area_text) + (f" ({_e(basis)})" if basis else "")))
    items.append(
        ("Sample", f"<code>{_e(sample.get('path', ''))}</code>, reference column "
                   f"<code>{_e(sample.get('reference_column', ''))}</code>")
    )  # fmt: skip
    dropped: Mapping[str, Any] = sample.get("dropped") or {}
    n_dropped = sum(int(v) for v in dropped.values())
    points = f"{int(sample.get('points', 0)):,} points, {int(sample.get('used', 0)):,} used, {n_dropped:,} dropped"
    if dropped:
        points += " (" + ", ".join(f"{reason}: {int(n):,}" for reason, n in dropped.items()) + ")"
    points_html = _e(points)
    if sample.get("dropped_file"):
        points_html += f"; the dropped points are listed in <code>{_e(sample['dropped_file'])}</code>"
    items.append(("Sample points", points_html))
    level = _confidence_level(assessment)
    items.append(("Estimator", _e(assessment.get("estimator", ""))))
    fpc = "with" if assessment.get("fpc") else "without"
    items.append(("Intervals", _e(f"{100 * level:g}% confidence, {fpc} finite population correction")))
    total = _float(assessment.get("total_area_ha"))
    items.append(("Total area", _e(f"{_ha(total)} ha")))
    if assessment.get("strata_source"):
        items.append(("Strata", _e(str(assessment["strata_source"]))))
    certified = assessment.get("certified_accuracy")
    oa = assessment.get("overall_accuracy") or {}
    if certified is not None and oa.get("ci95"):
        low, high = oa["ci95"]
        items.append((
            "Certificate",
            _e(f"the model certifies {100 * float(certified):.0f}% accuracy of the mapped pixels; this sample "
               f"estimates {100 * float(oa['estimate']):.1f}% (95% interval {100 * low:.1f}-{100 * high:.1f}%)"),
        ))  # fmt: skip
    body = "".join(f"<tr><th>{_e(name)}</th><td>{value}</td></tr>" for name, value in items)
    return f'<table class="summary">{body}</table>'


def _error_matrix_html(assessment: Mapping[str, Any]) -> str:
    rows, columns, proportions, counts = _matrix(assessment)
    head = "".join(f"<th>{_e(_label(c))}</th>" for c in columns)
    lines = [f"<tr><th>map \\ reference</th>{head}<th>total</th></tr>"]
    p_block = _with_totals(proportions, [_label(r) for r in rows])
    n_block = _with_totals(counts, [_label(r) for r in rows]) if counts is not None else None
    codes = [int(r["code"]) for r in rows]
    column_codes = [int(c["code"]) for c in columns]
    for i, p_row in enumerate(p_block):
        cells = []
        for j, value in enumerate(p_row[1:]):
            is_total = i == len(rows) or j == len(columns)
            classes = "total" if is_total else ("diag" if codes[i] == column_codes[j] else "")
            attribute = f' class="{classes}"' if classes else ""
            n = f"<small>n = {n_block[i][j + 1]:,}</small>" if n_block is not None else ""
            cells.append(f"<td{attribute}>{value:.3f}{n}</td>")
        lines.append(f"<tr><th>{_e(p_row[0])}</th>{''.join(cells)}</tr>")
    note = (
        '<p class="note">Estimated proportion of the total area in each cell: rows are the map values, columns the '
        "reference classes; the diagonal (highlighted) is the area mapped correctly. In small: the sample points in "
        "the cell.</p>"
    )
    return f'<table class="matrix">{"".join(lines)}</table>{note}'


def _estimates_html(assessment: Mapping[str, Any]) -> str:
    level = _confidence_level(assessment)
    z = Z95  # the estimator's own (the papers' 1.96): the "+-" shown is the half-width of its interval
    ci = f"{100 * level:g}% CI"
    head = (
        f"<tr><th>quantity</th><th>code</th><th>class</th><th>estimate ± {z:.2f}·SE</th>"
        f"<th>{ci} low</th><th>{ci} high</th><th>mapped</th></tr>"
    )
    lines = [head]
    for row in estimates_table(assessment):
        estimate, se = row["estimate"], row["se"]
        if row["quantity"] == "area_ha":
            places = _area_decimals(estimate)
            shown = _ha(estimate, places)
            if estimate is not None and se is not None and _finite(se):
                shown += f" ± {_ha(z * se, places)}"
            mapped = _ha(row["mapped"]) if row["mapped"] is not None else ""
            cells = [shown, _ha(row["ci95_low"], places), _ha(row["ci95_high"], places), mapped]
            cells = [f"{c} ha" if c not in ("", _MISSING) else c for c in cells]
        else:
            shown = _pct(estimate)
            if estimate is not None and se is not None and _finite(se):
                shown += f" ± {_pct(z * se)}"
            mapped = _pct(row["mapped"]) if row["mapped"] is not None else ""
            cells = [shown, _pct(row["ci95_low"]), _pct(row["ci95_high"]), mapped]
        code = "" if row["code"] is None else str(row["code"])
        name = "all classes" if row["name"] is None else row["name"]
        tds = "".join(f'<td class="num">{_e(c)}</td>' for c in cells)
        lines.append(f"<tr><td>{_e(_LABELS[row['quantity']])}</td><td>{_e(code)}</td><td>{_e(name)}</td>{tds}</tr>")
    note = (
        '<p class="note">Accuracies and proportions in percent. The overall accuracy is that of the pixels given a '
        "class; the shares are of the whole assessed area. n/a: not estimable (a class never mapped has no user's "
        "accuracy).</p>"
    )
    return f'<table class="estimates">{"".join(lines)}</table>{note}'


def _strata_html(assessment: Mapping[str, Any]) -> str:
    lines = ["<tr><th>code</th><th>name</th><th>map pixels</th><th>map area (ha)</th><th>weight</th><th>n</th></tr>"]
    for s in assessment.get("strata", []):
        cells = [
            "n/a" if s.get("map_pixels") is None else f"{int(s['map_pixels']):,}",
            _ha(_float(s.get("map_area_ha"))),
            f"{float(s['weight']):.4f}",
            f"{int(s['n']):,}",
        ]
        tds = "".join(f'<td class="num">{_e(c)}</td>' for c in cells)
        lines.append(f"<tr><td>{_e(int(s['code']))}</td><td>{_e(s['name'])}</td>{tds}</tr>")
    return f'<table class="strata">{"".join(lines)}</table>'


# -- the chart -----------------------------------------------------------------------------------------------------

CHART_WIDTH = 720
_LABEL_WIDTH = 190
_RIGHT = 28
_LEGEND_HEIGHT = 34
_BAR = 11
_PAIR_GAP = 2
_GROUP_GAP = 12
_AXIS_HEIGHT = 44
_LABEL_CHARS = 30


def _color(value: Any) -> str:
    """The class colour when it is a hex colour (#rgb, #rgba, #rrggbb, #rrggbbaa), else a neutral grey."""
    return value if isinstance(value, str) and _HEX_COLOR.fullmatch(value) else _NO_COLOR


def _nice_step(span: float, target: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about ``target`` ticks over ``span``."""
    raw = span / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1.0, 2.0, 2.5, 5.0):
        if multiple * magnitude >= raw * (1 - 1e-9):
            return multiple * magnitude
    return 10.0 * magnitude


def _tick_text(value: float, step: float) -> str:
    decimals = next((d for d in range(7) if abs(round(step, d) - step) <= 1e-9 * step), 6)
    return f"{value:,.{decimals}f}"


def _num(value: float) -> str:
    return f"{value:.2f}"


def _chart_classes(assessment: Mapping[str, Any]) -> list[tuple[Mapping[str, Any], float, float | None, Any]]:
    """(class, mapped ha, estimated ha or None, ci95 or None) of the classes with a mapped or an estimated area."""
    out: list[tuple[Mapping[str, Any], float, float | None, Any]] = []
    for cls in assessment.get("classes", []):
        mapped = _float(cls.get("mapped_area_ha")) or 0.0
        area: Mapping[str, Any] | None = cls.get("area_ha")
        estimate = _float(area.get("estimate")) if area is not None else None
        if estimate is not None and not math.isfinite(estimate):
            estimate = None
        if mapped > 0 or (estimate is not None and estimate > 0):
            out.append((cls, mapped, estimate, area.get("ci95") if area is not None else None))
    return out


def area_chart_svg(assessment: Mapping[str, Any]) -> str:
    """Inline SVG: per class, a bar of the mapped area (class colour, lighter and hatched) and one of the estimated
    area (class colour) with its 95% CI as an error bar; an axis in ha and a legend. Classes with neither a mapped
    nor an estimated area are left out. Bars carry ``data-class`` (the code) and ``data-kind`` (``mapped``,
    ``estimated``); each error bar is a ``<g data-kind="ci">``."""
    entries = _chart_classes(assessment)
    plot_x0, plot_width = _LABEL_WIDTH, CHART_WIDTH - _LABEL_WIDTH - _RIGHT
    group = 2 * _BAR + _PAIR_GAP + _GROUP_GAP
    top = _LEGEND_HEIGHT + 6
    axis_y = top + max(1, len(entries)) * group
    height = axis_y + _AXIS_HEIGHT
    largest = 0.0
    for _cls, mapped, estimate, ci in entries:
        largest = max(largest, mapped, estimate or 0.0)
        if ci is not None and ci[1] is not None and math.isfinite(float(ci[1])):
            largest = max(largest, float(ci[1]))
    step = _nice_step(largest) if largest > 0 else 1.0
    axis_max = max(step, math.ceil(largest / step - 1e-9) * step)

    def x(value: float) -> float:
        return plot_x0 + plot_width * min(max(value, 0.0), axis_max) / axis_max

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{height}" '
        f'viewBox="0 0 {CHART_WIDTH} {height}" role="img" aria-label="mapped and estimated area per class (ha)" '
        'font-size="12" font-family="sans-serif">',
        '<defs><pattern id="suelo-assess-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#ffffff" stroke-width="2.5" '
        'stroke-opacity="0.9"/></pattern></defs>',
    ]
    # legend (neutral swatches: the bars take the colour of their class)
    lx, ly = plot_x0, 10
    parts.append(
        f'<g class="legend"><rect x="{lx}" y="{ly}" width="18" height="{_BAR}" fill="{_NO_COLOR}" fill-opacity="0.45" '
        f'stroke="{_NO_COLOR}"/><rect x="{lx}" y="{ly}" width="18" height="{_BAR}" fill="url(#suelo-assess-hatch)"/>'
        f'<text x="{lx + 24}" y="{ly + 10}">mapped area</text>'
        f'<rect x="{lx + 130}" y="{ly}" width="18" height="{_BAR}" fill="{_NO_COLOR}"/>'
        f'<text x="{lx + 154}" y="{ly + 10}">estimated area</text>'
        f'<line x1="{lx + 270}" y1="{ly + 5.5}" x2="{lx + 290}" y2="{ly + 5.5}" stroke="#222" stroke-width="1.5"/>'
        f'<line x1="{lx + 270}" y1="{ly + 1}" x2="{lx + 270}" y2="{ly + 10}" stroke="#222" stroke-width="1.5"/>'
        f'<line x1="{lx + 290}" y1="{ly + 1}" x2="{lx + 290}" y2="{ly + 10}" stroke="#222" stroke-width="1.5"/>'
        f'<text x="{lx + 296}" y="{ly + 10}">95% confidence interval</text></g>'
    )
    # grid lines and ticks
    ticks = []
    value = 0.0
    while value <= axis_max * (1 + 1e-9):
        ticks.append(value)
        value += step
    for tick in ticks:
        tx = _num(x(tick))
        parts.append(
            f'<line x1="{tx}" y1="{top - 4}" x2="{tx}" y2="{axis_y}" stroke="#e4e4e4"/>'
            f'<line x1="{tx}" y1="{axis_y}" x2="{tx}" y2="{axis_y + 5}" stroke="#444"/>'
            f'<text x="{tx}" y="{axis_y + 18}" text-anchor="middle">{_e(_tick_text(tick, step))}</text>'
        )
    parts.append(f'<line x1="{plot_x0}" y1="{axis_y}" x2="{plot_x0 + plot_width}" y2="{axis_y}" stroke="#444"/>')
    parts.append(f'<line x1="{plot_x0}" y1="{top - 4}" x2="{plot_x0}" y2="{axis_y}" stroke="#444"/>')
    parts.append(f'<text x="{plot_x0 + plot_width / 2:.1f}" y="{axis_y + 36}" text-anchor="middle">area (ha)</text>')
    # one pair of bars per class
    for k, (cls, mapped, estimate, ci) in enumerate(entries):
        code, name, color = int(cls["code"]), str(cls["name"]), _color(cls.get("color"))
        gy = top + k * group
        label = name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"
        parts.append(
            f'<text x="{plot_x0 - 8}" y="{gy + _BAR + _PAIR_GAP / 2 + 4:.1f}" text-anchor="end">'
            f"<title>{_e(f'{code} {name}')}</title>{_e(label)}</text>"
        )
        mapped_width = _num(x(mapped) - plot_x0)
        parts.append(
            f'<rect data-class="{code}" data-kind="mapped" x="{plot_x0}" y="{gy}" width="{mapped_width}" '
            f'height="{_BAR}" fill="{color}" fill-opacity="0.45" stroke="{color}" stroke-width="0.8">'
            f"<title>{_e(f'{name}: mapped {_ha(mapped)} ha')}</title></rect>"
            f'<rect x="{plot_x0}" y="{gy}" width="{mapped_width}" height="{_BAR}" fill="url(#suelo-assess-hatch)" '
            'pointer-events="none"/>'
        )
        ey = gy + _BAR + _PAIR_GAP
        shown = _ha(estimate) if estimate is not None else _MISSING
        ci_text = ""
        low = high = None
        if ci is not None and ci[0] is not None and ci[1] is not None:
            low, high = float(ci[0]), float(ci[1])
            if math.isfinite(low) and math.isfinite(high):
                places = _area_decimals(estimate)
                ci_text = f" (95% CI {_ha(low, places)} to {_ha(high, places)} ha)"
            else:
                low = high = None
        parts.append(
            f'<rect data-class="{code}" data-kind="estimated" x="{plot_x0}" y="{ey}" '
            f'width="{_num(x(estimate or 0.0) - plot_x0)}" height="{_BAR}" fill="{color}">'
            f"<title>{_e(f'{name}: estimated {shown} ha{ci_text}')}</title></rect>"
        )
        if estimate is not None and low is not None and high is not None:
            cy, x1, x2 = ey + _BAR / 2, _num(x(low)), _num(x(high))
            y1, y2 = _num(cy - 4), _num(cy + 4)
            parts.append(
                f'<g data-class="{code}" data-kind="ci" stroke="#222" stroke-width="1.5">'
                f'<line x1="{x1}" y1="{_num(cy)}" x2="{x2}" y2="{_num(cy)}"/>'
                f'<line x1="{x1}" y1="{y1}" x2="{x1}" y2="{y2}"/><line x1="{x2}" y1="{y1}" x2="{x2}" y2="{y2}"/></g>'
            )
    if not entries:
        parts.append(f'<text x="{plot_x0 + 8}" y="{top + 16}">no class has a mapped or an estimated area</text>')
    parts.append("</svg>")
    return "".join(parts)


def assessment_section_html(assessment: Mapping[str, Any]) -> str:
    """The assessment as one ``<section class="assessment">`` (h2 title, warnings, summary, error matrix, estimates,
    strata, area chart) for embedding in another page; style it with :data:`ASSESSMENT_CSS`."""
    return (
        f'<section class="assessment"><h2>{_e(assessment.get("title", "Accuracy and area assessment"))}</h2>'
        f"{_warnings_html(assessment)}"
        f"<h3>Summary</h3>{_summary_html(assessment)}"
        f"<h3>Error matrix (proportion of area)</h3>{_error_matrix_html(assessment)}"
        f"<h3>Accuracy and area estimates</h3>{_estimates_html(assessment)}"
        f"<h3>Strata</h3>{_strata_html(assessment)}"
        f"<h3>Mapped and estimated area</h3>{area_chart_svg(assessment)}"
        "</section>"
    )


def assessment_html(assessment: Mapping[str, Any]) -> str:
    """The standalone static page: :func:`assessment_section_html` with a small style block."""
    title = _e(assessment.get("title", "Accuracy and area assessment"))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title>\n<style>\n{_PAGE_CSS}</style></head><body>\n"
        f"{assessment_section_html(assessment)}\n</body></html>\n"
    )


def write_assessment_page(path: Path, assessment: Mapping[str, Any]) -> Path:
    """Write :func:`assessment_html` to ``path`` atomically; returns the path."""
    return write_text_atomic(path, assessment_html(assessment))
