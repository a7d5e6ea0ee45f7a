"""The figures a run is watched and reported with, shared by the HTML report and the live page.

Both draw from training records (the dicts of :mod:`daskie.train.loop`, with the window
fields of :mod:`daskie.runtime.profiler`): the report reads them from a run's store, the live page
receives them as events while the run trains. The ``*_columns`` functions turn records into
the columns of a ``ColumnDataSource``; the ``*_figure`` functions draw those sources.
"""

from __future__ import annotations

import html
import math
import re

from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Legend, LegendItem
from bokeh.palettes import Category10_10, Dark2_8
from bokeh.plotting import figure

from daskie import records as kinds

__all__ = ["format_value", "legend_above", "group_label", "group_color", "submodel_names",
           "loss_columns", "losses_are_joint", "curve_style", "mse_columns", "window_columns",
           "empty_window_columns", "loss_figure", "timeline_height", "timeline_figure",
           "window_cost_figure"]

# Group numbers of the first record schema (before records had a kind); still read.
JOINT = -2  # the client's per-window record of the joint loss and test MSE
POLISH = -1
JOINT_KEY = "joint"  # the curve of the joint loss, when every group reports the same one

WINDOW_KEYS = ("worker", "left", "right", "window", "group", "label", "color", "window_s",
               "sync_s", "peak_rss_mb", "loss", "epoch")


def submodel_names(submodels) -> str:
    """The sub-model names in a task's ``submodels`` text, without row slices.

    ``"F0.2<[1457:2048]+mu@x[0:512]+F0.2"`` (a balanced CEPTF group: rows of its sub-models)
    gives ``"F0.2, mu"``.
    """
    names: list[str] = []
    for token in str(submodels or "").split("+"):
        name = re.split(r"[<@\[]", token, maxsplit=1)[0].strip()
        if name and name not in names:
            names.append(name)
    return ", ".join(names)


def group_label(group: int, submodels: str) -> str:
    """Legend label of a sub-model group: its index and its sub-models' names."""
    if group == POLISH:
        return "polish (all)"
    names = submodel_names(submodels)
    return f"group {group}: {names}" if names else f"group {group}"


def _is_summary(rec) -> bool:
    return kinds.kind_of(rec) == kinds.WINDOW or rec.get("group") == JOINT


def _is_polish(rec) -> bool:
    return kinds.kind_of(rec) == kinds.POLISH or rec.get("group") == POLISH


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


def losses_are_joint(records) -> bool | None:
    """Whether every group reports the same (joint) loss at the same step.

    True for joint CEPTF and data-parallel runs, where each task computes the loss of the
    whole equation: their curves would lie on top of each other, so one is drawn. False for
    block-coordinate windows (each group its own loss); None while no two groups have
    reported the same step yet (a live run just starting).
    """
    first: dict = {}
    shared = differ = False
    for rec in records:
        if _is_summary(rec) or _is_polish(rec) or not _finite(rec.get("loss")) \
                or "epoch" not in rec:
            continue
        key = (rec.get("window"), int(rec["epoch"]), str(rec.get("optimizer", "")))
        group = int(rec.get("group", 0))
        seen = first.setdefault(key, (group, float(rec["loss"])))
        if seen[0] != group:
            if math.isclose(seen[1], float(rec["loss"]), rel_tol=1e-9, abs_tol=1e-300):
                shared = True
            else:
                differ = True
    if differ:
        return False
    return True if shared else None


def loss_columns(records, joint: bool | None = None) -> dict[str, dict]:
    """The loss curves of training records: ``{key: {"epoch": [...], "loss": [...]}}``.

    Keys (see :func:`curve_style` for their labels and colours): ``"joint"`` — the joint
    loss, once, when the groups share it (``joint``; by default :func:`losses_are_joint`);
    ``"group:<g>:<submodels>"`` — one per group otherwise; ``"polish"``; and
    ``"block:<name>"`` — the loss of each residual block (the ``loss_<name>`` fields of a
    window's last step), once per step.
    """
    records = list(records)
    if joint is None:
        joint = bool(losses_are_joint(records))
    out: dict[str, dict] = {}
    taken: set = set()

    def add(key, epoch, value):
        cols = out.setdefault(key, {"epoch": [], "loss": []})
        cols["epoch"].append(int(epoch))
        cols["loss"].append(float(value))

    for rec in records:
        if _is_summary(rec) or "epoch" not in rec:
            continue
        epoch = int(rec["epoch"])
        if _finite(rec.get("loss")) and rec["loss"] > 0:
            if _is_polish(rec):
                add("polish", epoch, rec["loss"])
            elif joint:
                mark = ("joint", rec.get("window"), epoch, str(rec.get("optimizer", "")))
                if mark not in taken:
                    taken.add(mark)
                    add(JOINT_KEY, epoch, rec["loss"])
            else:
                add(f"group:{int(rec.get('group', 0))}:{rec.get('submodels', '')}", epoch,
                    rec["loss"])
        for field, value in rec.items():
            if field.startswith("loss_") and _finite(value) and value > 0:
                mark = (field, rec.get("window"), epoch)
                if mark not in taken:  # every group of a joint run reports every block
                    taken.add(mark)
                    add(f"block:{field[5:]}", epoch, value)
    return out


def curve_style(key: str) -> dict:
    """Legend label, colour and dash of the curve ``key`` of :func:`loss_columns` (the same
    in the report and on the live page)."""
    if key == JOINT_KEY:
        return {"legend_label": "joint loss (every group)", "color": "#1f1f1f",
                "line_dash": "solid", "line_width": 2.5}
    if key == "polish":
        return {"legend_label": "polish (all)", "color": group_color(POLISH),
                "line_dash": "dotdash", "line_width": 2}
    if key.startswith("block:"):
        name = key[6:]
        return {"legend_label": f"block {name}", "line_dash": "dashed", "line_width": 1.5,
                "color": Dark2_8[sum(map(ord, name)) % 8]}
    _, group, submodels = key.split(":", 2)
    return {"legend_label": group_label(int(group), submodels), "color": group_color(int(group)),
            "line_dash": "solid", "line_width": 2}


def mse_columns(records) -> dict:
    """Columns ``epoch``, ``mse`` of the per-window joint records (test MSE after each window)."""
    cols = {"epoch": [], "mse": []}
    for rec in records:
        if _is_summary(rec) and _finite(rec.get("mse")) and rec["mse"] > 0:
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
        group = POLISH if _is_polish(rec) else int(rec.get("group", 0))
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
    """Loss curves against epochs (log scale) and, when given, the test MSE after each window.

    ``sources`` maps the keys of :func:`loss_columns` to sources with columns ``epoch``,
    ``loss``: the joint loss once (or one curve per group when each has its own loss), and the
    loss of each residual block, dashed.
    """
    p = figure(title="Training loss: joint, per group or block, and test MSE", y_axis_type="log",
               x_axis_label="epoch (optimizer steps)", y_axis_label="loss / test MSE",
               height=kw.pop("height", 340), sizing_mode="stretch_width", **kw)
    for key, src in sorted(sources.items(), key=lambda kv: _curve_order(kv[0])):
        p.line("epoch", "loss", source=src, **curve_style(key))
    if mse_source is not None:
        p.scatter("epoch", "mse", source=mse_source, color="black", size=6, marker="diamond",
                  legend_label="test MSE (after each window)")
    if p.legend:
        p.legend.location = "top_right"
        p.legend.click_policy = "hide"
        p.legend.background_fill_alpha = 0.7
    return p


def _curve_order(key: str):
    return ({JOINT_KEY: 0, "polish": 2}.get(key, 1 if key.startswith("group:") else 3), key)


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
    legend_above(p, [LegendItem(label={"field": "label"}, renderers=[bars])])
    return p


def legend_above(p, items):
    """A one-row legend of ``items`` (``LegendItem`` or ``(label, [renderers])``) between
    the title and the frame, off the data (bars and curves fill the whole frame)."""
    p.add_layout(Legend(items=items, orientation="horizontal", location="top_left"), "above")


def window_cost_figure(source: ColumnDataSource, **kw):
    """Per window: its time ``T_k`` (dots) and its synchronisation time (crosses), coloured
    by group; the legend names the groups in their colours."""
    p = figure(title="Window time T_k (dots) and sync time (crosses), coloured by group",
               x_axis_label="window", y_axis_label="seconds", height=kw.pop("height", 280),
               sizing_mode="stretch_width", **kw)
    t_k = p.scatter("window", "window_s", source=source, color="color", size=7)
    p.scatter("window", "sync_s", source=source, color="color", size=9, marker="x")
    p.add_tools(_window_hover())
    # One entry per group (bokeh groups the rows by the label field), in the group's colour.
    legend_above(p, [LegendItem(label={"field": "label"}, renderers=[t_k])])
    return p
