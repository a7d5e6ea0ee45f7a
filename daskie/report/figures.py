"""The figures a run is watched and reported with, shared by the HTML report and the live page.

Both draw from training records (the dicts of :mod:`daskie.train.loop`, with the window
fields of :mod:`daskie.profiler`): the report reads them from a run's store, the live page
receives them as events while the run trains. The ``*_columns`` functions turn records into
the columns of a ``ColumnDataSource``; the ``*_figure`` functions draw those sources.
"""

from __future__ import annotations

import html
import math

from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Legend, LegendItem
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

__all__ = ["format_value", "group_label", "group_color", "loss_columns", "mse_columns", "window_columns",
           "empty_window_columns", "loss_figure", "timeline_height", "timeline_figure", "window_cost_figure"]

JOINT = -2  # the client's per-window record of the joint loss and test MSE
POLISH = -1

WINDOW_KEYS = ("worker", "left", "right", "window", "group", "label", "color", "window_s",
               "sync_s", "peak_rss_mb", "loss", "epoch")


def group_label(group: int, submodels: str) -> str:
    """Legend label of a sub-model group."""
    return "polish (all)" if group == POLISH else f"group {group}: {submodels}"


def group_color(group: int) -> str:
    """A fixed color per group, the same in every figure."""
    return "#444444" if group == POLISH else Category10_10[group % 10]


def format_value(value) -> str:
    """A number or text as a table cell (HTML-escaped)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return html.escape(str(value))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def loss_columns(records) -> dict[tuple[int, str], dict]:
    """Per group ``(group, submodels)``: columns ``epoch`` and ``loss`` of its training steps."""
    out: dict[tuple[int, str], dict] = {}
    for rec in records:
        group = rec.get("group", 0)
        if group == JOINT or not _finite(rec.get("loss")) or rec["loss"] <= 0 or "epoch" not in rec:
            continue
        cols = out.setdefault((int(group), str(rec.get("submodels", ""))), {"epoch": [], "loss": []})
        cols["epoch"].append(int(rec["epoch"]))
        cols["loss"].append(float(rec["loss"]))
    return out


def mse_columns(records) -> dict:
    """Columns ``epoch``, ``mse`` of the per-window joint records (test MSE after each window)."""
    cols = {"epoch": [], "mse": []}
    for rec in records:
        if rec.get("group") == JOINT and _finite(rec.get("mse")) and rec["mse"] > 0:
            cols["epoch"].append(int(rec["epoch"]))
            cols["mse"].append(float(rec["mse"]))
    return cols


def empty_window_columns() -> dict:
    """Columns of :func:`window_columns` with no rows."""
    return {k: [] for k in WINDOW_KEYS}


def window_columns(records, t0: float) -> dict:
    """One row per profiled window (records with ``t_start``), times relative to ``t0``."""
    cols = empty_window_columns()
    for rec in records:
        if not _finite(rec.get("t_start")) or not _finite(rec.get("t_end")):
            continue
        group = int(rec.get("group", 0))
        cols["worker"].append(str(rec.get("worker") or "local"))
        cols["left"].append(rec["t_start"] - t0)
        cols["right"].append(rec["t_end"] - t0)
        cols["window"].append(int(rec.get("window", 0)))
        cols["group"].append(group)
        cols["label"].append(group_label(group, str(rec.get("submodels", ""))))
        cols["color"].append(group_color(group))
        for key in ("window_s", "sync_s", "peak_rss_mb", "loss"):
            cols[key].append(float(rec[key]) if _finite(rec.get(key)) else math.nan)
        cols["epoch"].append(int(rec.get("epoch", 0)))
    return cols


def loss_figure(sources: dict, mse_source: ColumnDataSource | None = None, **kw):
    """Loss per group against epochs (log scale) and, when given, the joint test MSE.

    ``sources`` maps ``(group, submodels)`` to a source with columns ``epoch``, ``loss``.
    """
    p = figure(title="Training loss per sub-model group", y_axis_type="log",
               x_axis_label="epoch (optimizer steps)", y_axis_label="loss / test MSE",
               height=kw.pop("height", 320), sizing_mode="stretch_width", **kw)
    for (group, submodels), src in sorted(sources.items()):
        p.line("epoch", "loss", source=src, color=group_color(group), line_width=2,
               legend_label=group_label(group, submodels))
    if mse_source is not None:
        p.scatter("epoch", "mse", source=mse_source, color="black", size=6, marker="diamond",
                  legend_label="test MSE (after each window)")
    if p.legend:
        p.legend.location = "top_right"
        p.legend.click_policy = "hide"
    return p


def _window_hover():
    return HoverTool(tooltips=[("window", "@window"), ("group", "@label"), ("worker", "@worker"),
                               ("T_k", "@window_s{0.000} s"), ("sync", "@sync_s{0.000} s"),
                               ("peak RSS", "@peak_rss_mb{0.0} MB"), ("epoch", "@epoch"),
                               ("loss", "@loss{0.000e}")])


def timeline_height(workers: int) -> int:
    """Pixels of the timeline for ``workers`` rows (title, legend and axis included)."""
    return 150 + 40 * max(1, workers)


def timeline_figure(source: ColumnDataSource, workers=(), **kw):
    """Windows as bars on one row per worker, from start to end (seconds since the run began)."""
    p = figure(title="Windows per worker", y_range=FactorRange(factors=list(workers)),
               x_axis_label="seconds since start", height=kw.pop("height", timeline_height(len(workers))),
               sizing_mode="stretch_width", tools="xpan,xwheel_zoom,reset,save", **kw)
    bars = p.hbar(y="worker", left="left", right="right", height=0.7, color="color",
                  line_color="white", source=source)
    p.add_tools(_window_hover())
    _legend_above(p, [LegendItem(label={"field": "label"}, renderers=[bars])])
    return p


def _legend_above(p, items):
    # Outside the plot: bars and points fill the whole frame.
    p.add_layout(Legend(items=items, orientation="horizontal", location="top_left"), "above")


def window_cost_figure(source: ColumnDataSource, **kw):
    """Per window: its time ``T_k`` and its synchronisation time, by group."""
    p = figure(title="Window time T_k and sync time", x_axis_label="window",
               y_axis_label="seconds", height=kw.pop("height", 260), sizing_mode="stretch_width", **kw)
    t_k = p.scatter("window", "window_s", source=source, color="color", size=7)
    sync = p.scatter("window", "sync_s", source=source, color="color", size=9, marker="x")
    p.add_tools(_window_hover())
    _legend_above(p, [LegendItem(label="T_k (dots)", renderers=[t_k]),
                      LegendItem(label="sync (crosses)", renderers=[sync])])
    return p
