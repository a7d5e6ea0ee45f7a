"""The report of a benchmark run: its JSON records (``benchmarks/*.py --out``) as charts."""

from __future__ import annotations

import html
import math

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div, FactorRange, Legend, Range1d
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from daskie.errors import SpecError
from daskie.report.figures import format_value

__all__ = ["bench_records", "bench_layout"]

_SPEEDUP = ("sr", "se", "ce")


def bench_records(data) -> list[dict]:
    """Flat records from a benchmark's JSON: a list of records, or a dict of such lists."""
    if isinstance(data, dict):
        data = [{"table": str(name), **rec} for name, recs in data.items() if isinstance(recs, list)
                for rec in recs]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise SpecError("a benchmark JSON must hold a list of records (objects), or an object "
                        "of such lists, as benchmarks/*.py --out writes")
    if not data:
        raise SpecError("the benchmark JSON holds no records")
    return data


def _config(rec) -> str:
    return "/".join(str(rec[k]) for k in ("formulation", "strategy") if rec.get(k)) or "run"


def _num(rec, key):
    value = rec.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0 else math.nan


# Reference and marker rows more than this factor beyond the neural rows' range are drawn
# at the axis edge (their value in the hover), so that the neural rows stay readable: a
# reference at 1e-33 against neural MSEs near 1e-9 would otherwise squeeze them into a sliver.
_CLIP_DECADES = 2.0


def _by_problem_figure(recs, key, title, label, extra=()):
    """Log-scale dots per (problem, configuration), with reference markers from ``extra``.

    The axis spans the neural rows (``key``) with some margin; a marker far outside that range
    is drawn at the edge with an arrow-like marker, and its hover gives the true value.
    """
    configs = sorted({_config(r) for r in recs})
    factors = sorted({(str(r.get("problem", "?")), _config(r)) for r in recs})
    main = [_num(r, key) for r in recs if math.isfinite(_num(r, key))]
    lo, hi = (min(main), max(main)) if main else (1e-16, 1.0)
    lo, hi = lo / 10 ** 0.5, hi * 10 ** 0.5
    edge_lo, edge_hi = lo / 10 ** _CLIP_DECADES, hi * 10 ** _CLIP_DECADES
    p = figure(title=title, x_range=FactorRange(*factors), y_axis_type="log", height=360,
               sizing_mode="stretch_width", y_axis_label=label,
               tooltips=[("run", "@x"), ("value", "@value{0.00e}"), ("", "@note")])
    p.xaxis.major_label_orientation = 0.9
    p.add_layout(Legend(), "right")  # the labelled glyphs below join it, outside the dots
    clipped = False
    for i, cfg in enumerate(configs):
        rows = [r for r in recs if _config(r) == cfg and math.isfinite(_num(r, key))]
        if rows:
            values = [_num(r, key) for r in rows]
            src = ColumnDataSource({"x": [(str(r.get("problem", "?")), cfg) for r in rows],
                                    "y": values, "value": values, "note": [""] * len(rows)})
            p.scatter("x", "y", source=src, size=11, color=Category10_10[i % 10], legend_label=cfg)
    for key2, text, marker, color in extra:
        rows = [r for r in recs if math.isfinite(_num(r, key2))]
        if not rows:
            continue
        values = [_num(r, key2) for r in rows]
        shown = [min(max(v, edge_lo), edge_hi) for v in values]
        notes = ["beyond the axis: drawn at its edge" if s != v else "" for s, v in zip(shown, values)]
        clipped = clipped or any(notes)
        src = ColumnDataSource({"x": [(str(r.get("problem", "?")), _config(r)) for r in rows],
                                "y": shown, "value": values, "note": notes})
        p.scatter("x", "y", source=src, size=16, marker=marker, color=color, line_width=2,
                  legend_label=text)
    span_lo = min([lo] + [edge_lo] * clipped) if clipped else lo
    span_hi = max([hi] + [edge_hi] * clipped) if clipped else hi
    if not clipped:  # markers inside the clip range widen the axis to show them
        for key2, *_ in extra:
            for r in recs:
                v = _num(r, key2)
                if math.isfinite(v):
                    span_lo, span_hi = min(span_lo, v / 2), max(span_hi, v * 2)
    p.y_range = Range1d(span_lo, span_hi)
    if clipped:
        p.add_layout(_note(f"markers more than {_CLIP_DECADES:g} decades beyond the neural rows "
                           f"are drawn at the axis edge; hover for their values"), "below")
    p.legend.click_policy = "hide"
    return p


def _note(text):
    from bokeh.models import Title

    return Title(text=text, text_font_size="11px", text_font_style="italic", align="left")


def _speedup_figure(recs):
    keys = {k.lower(): k for r in recs for k in r}
    labels = [" ".join(str(r[k]) for k in ("problem", "strategy", "workers", "n_sub") if k in r) or str(i)
              for i, r in enumerate(recs)]
    p = figure(title="Speed-up SR, scaling efficiency SE, cost efficiency CE",
               x_range=FactorRange(*labels), height=320, sizing_mode="stretch_width")
    p.xaxis.major_label_orientation = 0.9
    p.add_layout(Legend(), "right")
    for i, name in enumerate(_SPEEDUP):
        if name in keys:
            values = [_num(r, keys[name]) for r in recs]
            src = ColumnDataSource({"x": labels, "y": values})
            p.scatter("x", "y", source=src, size=11, color=Category10_10[i], legend_label=name.upper())
    return p


def records_table(recs) -> Div:
    """All records as an HTML table (the benchmark's printed table) that fits the page.

    Fields with one value in every record are stated once above the table instead of filling
    a column; headers wrap at underscores; long texts are cut (the whole text in the cell's
    tooltip).
    """
    keys: dict[str, None] = {}
    for r in recs:
        keys.update(dict.fromkeys(r))
    same = {k: recs[0][k] for k in keys
            if len(recs) > 1 and all(k in r and r[k] == recs[0][k] for r in recs)}
    varying = [k for k in keys if k not in same]
    common = "; ".join(f"{html.escape(k)} = {format_value(v)}" for k, v in same.items())
    head = "".join(f"<th style='padding:2px 4px;vertical-align:bottom;text-align:left'>"
                   f"{html.escape(k).replace('_', '_<wbr>')}</th>" for k in varying)

    def cell(r, k):
        text = format_value(r[k]) if k in r else ""
        return (f"<td style='padding:1px 3px;white-space:nowrap;max-width:7em;overflow:hidden;"
                f"text-overflow:ellipsis' title='{text}'>{text}</td>")

    body = "".join("<tr>" + "".join(cell(r, k) for k in varying) + "</tr>" for r in recs)
    return Div(text="<h3>Records</h3>"
                    + (f"<p style='font-size:12px'>In every record: {common}</p>" if common else "")
                    + "<div style='overflow-x:auto;max-width:100%'>"
                      "<table style='font-size:10.5px;border-collapse:collapse'>"
                      f"<tr>{head}</tr>{body}</table></div>", sizing_mode="stretch_width",
               styles={"max-width": "100%", "overflow-x": "auto"})


def bench_layout(records, title: str = "daskie benchmark"):
    """Charts of a benchmark's records: accuracy (MSE, relative L2 and time per problem and
    configuration, beside the reference solver and the targets) and speed-up when present."""
    recs = bench_records(records)
    parts = [Div(text=f"<h1>{html.escape(title)}</h1><p>{len(recs)} records</p>")]
    accuracy = [r for r in recs if "mse" in r]
    if accuracy:
        parts.append(_by_problem_figure(
            accuracy, "mse", "Test MSE per problem and configuration", "MSE",
            extra=(("ref_mse", "Nystrom reference", "x", "gray"),
                   ("target_mse", "target", "dash", "red"),
                   ("paper_mse", "paper", "triangle", "purple"))))
        if any(math.isfinite(_num(r, "rel_l2")) for r in accuracy):
            parts.append(_by_problem_figure(accuracy, "rel_l2", "Relative L2 error", "relative L2"))
        parts.append(_by_problem_figure(accuracy, "wall_s", "Wall time", "seconds",
                                        extra=(("ref_wall_s", "Nystrom reference", "x", "gray"),)))
    speedup = [r for r in recs if any(k.lower() in _SPEEDUP for k in r)]
    if speedup:
        parts.append(_speedup_figure(speedup))
    parts.append(records_table(recs))
    return column(*parts, sizing_mode="stretch_width")
