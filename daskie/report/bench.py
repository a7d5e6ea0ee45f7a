"""The report of a benchmark run: its JSON records (``benchmarks/*.py --out``) as charts."""

from __future__ import annotations

import html
import math

from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div, FactorRange, HoverTool, Legend
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


def _by_problem_figure(recs, key, title, label, extra=()):
    """Log-scale dots per (problem, configuration), with reference markers from ``extra``."""
    configs = sorted({_config(r) for r in recs})
    factors = sorted({(str(r.get("problem", "?")), _config(r)) for r in recs})
    p = figure(title=title, x_range=FactorRange(*factors), y_axis_type="log", height=340,
               sizing_mode="stretch_width", y_axis_label=label)
    p.xaxis.major_label_orientation = 0.9
    p.add_layout(Legend(), "right")  # the labelled glyphs below join it, outside the dots
    for i, cfg in enumerate(configs):
        rows = [r for r in recs if _config(r) == cfg and math.isfinite(_num(r, key))]
        if rows:
            p.scatter([(str(r.get("problem", "?")), cfg) for r in rows], [_num(r, key) for r in rows],
                      size=11, color=Category10_10[i % 10], legend_label=cfg)
    for key2, text, marker, color in extra:
        rows = [r for r in recs if math.isfinite(_num(r, key2))]
        if rows:
            p.scatter([(str(r.get("problem", "?")), _config(r)) for r in rows],
                      [_num(r, key2) for r in rows], size=16, marker=marker, color=color,
                      line_width=2, legend_label=text)
    p.add_tools(HoverTool(tooltips=[("run", "@x"), ("value", "@y{0.00e}")]))
    p.legend.click_policy = "hide"
    return p


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
    """All records as an HTML table (the benchmark's printed table)."""
    keys: dict[str, None] = {}
    for r in recs:
        keys.update(dict.fromkeys(r))
    head = "".join(f"<th style='padding:2px 8px;white-space:nowrap'>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px'>{format_value(r[k]) if k in r else ''}</td>"
                                    for k in keys) + "</tr>" for r in recs)
    return Div(text=f"<h3>Records</h3><div style='overflow-x:auto'><table style='font-size:12px'>"
                    f"<tr>{head}</tr>{body}</table></div>", sizing_mode="stretch_width")


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
