"""The report page of a learned operator: training curves, the error over held-out instances,
and a few instances drawn against their references.

Drawn from an operator's run store alone (``daskie operator ... --store``, or
``fit_operator(..., store=...)``) or from an :class:`~daskie.operator.Operator` returned by
:func:`~daskie.operator.learn_operator` (its ``history`` and ``evaluation``); no cluster.
"""

from __future__ import annotations

import html
import os

import numpy as np
from bokeh.layouts import column, gridplot
from bokeh.models import ColorBar, ColumnDataSource, Div, LinearColorMapper, Span
from bokeh.palettes import Category10_10, RdBu11, Viridis256
from bokeh.plotting import figure

from daskie.errors import SpecError
from daskie.report import figures

__all__ = ["operator_report", "operator_layout"]


def _from_store(path):
    from daskie.store import RunStore, records_from_dataset

    if not RunStore.exists(path):
        raise SpecError(f"{path!r} is not a daskie run store; give the --store of an operator run")
    runs = RunStore(path, mode="a")
    try:
        meta = runs.read_meta()
        if "operator" not in meta:
            raise SpecError(f"{path!r} holds no operator run (no 'operator' metadata)")
        if "finished_utc" not in meta:
            raise SpecError(f"the operator run in {path!r} has no result yet (interrupted?): "
                            "resume it to the end first")
        with runs.read() as ds:
            ds = ds.load()
    finally:
        runs.close()
    records = records_from_dataset(ds)
    return ds, records, dict(ds.attrs)


def operator_report(source, out) -> str:
    """Write the report page of ``source`` to the HTML file ``out``; return its path.

    Parameters
    ----------
    source : str, path-like or Operator
        An operator run store, or an operator with ``history`` and ``evaluation`` (from
        :func:`~daskie.operator.learn_operator`).
    out : str or path-like
        The HTML file (replaced if it exists).
    """
    from daskie.report.html import check_output, write_page

    check_output(out)
    if isinstance(source, (str, os.PathLike)):
        ds, records, attrs = _from_store(os.fspath(source))
    else:
        if getattr(source, "evaluation", None) is None:
            raise SpecError("this operator has no evaluation (learn_operator sets it): give "
                            "its run store instead")
        ds, records = source.evaluation, list(source.history or [])
        attrs = {**ds.attrs, "family": getattr(source.family, "name", None),
                 "n_params": int(source.theta.numel())}
    title = f"daskie operator: {attrs.get('family') or 'operator'}"
    return write_page(operator_layout(ds, records, attrs, title), out, title)


def _summary(attrs, records) -> Div:
    last = records[-1] if records else {}
    rows = [("held-out instances", attrs.get("n_test")),
            ("relative L2, median", attrs.get("rel_l2_median")),
            ("relative L2, 95th percentile", attrs.get("rel_l2_p95")),
            ("relative L2, max", attrs.get("rel_l2_max")),
            ("mean-solution baseline, median", attrs.get("baseline_rel_l2_median")),
            ("epochs", attrs.get("epochs", last.get("epoch"))),
            ("final loss", attrs.get("loss", last.get("loss"))),
            ("training wall time (s)", attrs.get("wall_s", last.get("wall_s"))),
            ("parameters", attrs.get("n_params")), ("optimizer", last.get("optimizer"))]
    body = "".join(f"<tr><th style='text-align:left;padding:2px 12px;font-weight:normal'>"
                   f"{html.escape(k)}</th><td style='padding:2px 12px'>"
                   f"{html.escape(figures.format_value(v))}</td></tr>"
                   for k, v in rows if v is not None)
    return Div(text="<h3>Operator</h3><table>" + body + "</table><p>Relative L2 error "
                    "|prediction - reference| / |reference| of each held-out instance (never "
                    "trained on) at the query points; the reference is the family's Nystrom "
                    "solve.</p>", sizing_mode="stretch_width")


def _curves(records):
    rank0 = [r for r in records if r.get("rank", 0) == 0 and "loss" in r]
    p = figure(title="training loss (all ranks' sum) and test MSE", height=300,
               sizing_mode="stretch_width", y_axis_type="log", x_axis_label="epoch")
    if not rank0:
        return p
    ep = np.array([r["epoch"] for r in rank0], dtype=float)
    loss = np.array([r["loss"] for r in rank0], dtype=float)
    p.line(ep, loss, line_width=2, color=Category10_10[0], legend_label="loss")
    with_mse = [(r["epoch"], r["mse"]) for r in rank0
                if isinstance(r.get("mse"), (int, float)) and np.isfinite(r["mse"])]
    if with_mse:
        e, m = np.array(with_mse).T
        p.line(e, m, line_width=2, color=Category10_10[1], legend_label="test MSE")
        p.scatter(e, m, size=6, color=Category10_10[1])
    p.legend.location = "top_right"
    return p


def _histogram(ds):
    rel = np.asarray(ds["rel_l2"].values, dtype=float)
    lo, hi = np.log10(max(rel.min(), 1e-16)), np.log10(max(rel.max(), 1e-16))
    edges = np.logspace(lo - 0.05, hi + 0.05, 31)
    counts, edges = np.histogram(rel, bins=edges)
    p = figure(title=f"relative L2 error over {rel.size} held-out instances", height=300,
               sizing_mode="stretch_width", x_axis_type="log", x_axis_label="relative L2 error",
               y_axis_label="instances")
    p.quad(left=edges[:-1], right=edges[1:], bottom=0, top=counts, fill_color=Category10_10[0],
           line_color="white", legend_label="operator")
    for value, color, label in ((np.median(rel), "black", "median"),
                                (np.quantile(rel, 0.95), Category10_10[3], "95th percentile")):
        p.add_layout(Span(location=float(value), dimension="height", line_color=color,
                          line_dash="dashed", line_width=2))
        p.line([value, value], [0, 0], color=color, line_dash="dashed", legend_label=label)
    if "baseline_rel_l2" in ds:
        b = float(np.median(ds["baseline_rel_l2"].values))
        p.add_layout(Span(location=b, dimension="height", line_color="gray", line_width=2))
        p.line([b, b], [0, 0], color="gray", legend_label="mean-solution baseline (median)")
    p.legend.location = "top_right"
    p.legend.background_fill_alpha = 0.7
    return p


def _picks(rel) -> list[tuple[int, str]]:
    """Instances to draw: the best, the median, the 95th percentile and the worst."""
    order = np.argsort(rel)
    n = len(order)
    picks = [(order[0], "best"), (order[n // 2], "median"),
             (order[min(n - 1, int(0.95 * n))], "95th percentile"), (order[-1], "worst")]
    out, seen = [], set()
    for i, what in picks:
        if int(i) not in seen:
            seen.add(int(i))
            out.append((int(i), what))
    return out


def _instances_1d(ds):
    x = np.asarray(ds["x"].values)[:, 0]
    order = np.argsort(x)
    rel = np.asarray(ds["rel_l2"].values)
    plots = []
    for i, what in _picks(rel):
        p = figure(title=f"instance {int(ds.instance.values[i])} ({what}): rel L2 {rel[i]:.2e}",
                   height=260, sizing_mode="stretch_width", x_axis_label="x")
        ref = np.asarray(ds["reference"].values[i])[order]
        pred = np.asarray(ds["prediction"].values[i])[order]
        lines = p.line(x[order], ref, color="black", line_width=2)
        dots = p.scatter(x[order], pred, color=Category10_10[3], size=6)
        figures.legend_above(p, [("reference", [lines]), ("operator", [dots])])
        plots.append(p)
    # the differences, invisible at the scale of mu itself
    err = figure(title="operator - reference of these instances", height=260,
                 sizing_mode="stretch_width", x_axis_label="x")
    items = []
    for k, (i, what) in enumerate(_picks(rel)):
        diff = (np.asarray(ds["prediction"].values[i]) - np.asarray(ds["reference"].values[i]))
        items.append((f"{int(ds.instance.values[i])} ({what})",
                      [err.line(x[order], diff[order], color=Category10_10[k], line_width=2)]))
    figures.legend_above(err, items)
    plots.append(err)
    return gridplot(plots, ncols=2, sizing_mode="stretch_width")


def _instances_2d(ds):
    x = np.asarray(ds["x"].values)
    xs, ys = np.unique(x[:, 0]), np.unique(x[:, 1])
    rel = np.asarray(ds["rel_l2"].values)
    if len(xs) * len(ys) != len(x):
        return Div(text="<p>(query points are not a grid: instances not drawn)</p>")
    ix, iy = np.searchsorted(xs, x[:, 0]), np.searchsorted(ys, x[:, 1])
    plots = []
    for i, what in _picks(rel)[1::2] or _picks(rel):  # median and worst
        ref = np.full((len(ys), len(xs)), np.nan)
        err = np.full_like(ref, np.nan)
        ref[iy, ix] = ds["reference"].values[i]
        err[iy, ix] = ds["prediction"].values[i] - ds["reference"].values[i]
        label = f"{what} instance {int(ds.instance.values[i])}"
        for values, name, palette in ((ref, "reference", Viridis256),
                                      (err, f"error (rel L2 {rel[i]:.1e})", _diverging())):
            bound = float(np.nanmax(np.abs(values))) or 1.0
            low = -bound if palette is not Viridis256 else float(np.nanmin(values))
            high = bound if palette is not Viridis256 else float(np.nanmax(values))
            mapper = LinearColorMapper(palette=palette, low=low, high=high)
            p = figure(title=f"{label}: {name}", height=300, width=340,
                       x_range=(float(xs[0]), float(xs[-1])), y_range=(float(ys[0]), float(ys[-1])))
            p.image(image=[values], x=float(xs[0]), y=float(ys[0]), dw=float(xs[-1] - xs[0]),
                    dh=float(ys[-1] - ys[0]), color_mapper=mapper)
            p.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
            plots.append(p)
    note = Div(text="<p>Left: the reference mu on the query grid; right: operator - reference "
                    "(blue below, red above the reference).</p>")
    return column(note, gridplot(plots, ncols=2))


def _diverging():
    """A diverging palette for signed errors: negative blue, zero white, positive red."""
    return RdBu11  # bokeh orders it from dark blue to dark red


def _parity(ds):
    ref = np.asarray(ds["reference"].values).reshape(-1)
    pred = np.asarray(ds["prediction"].values).reshape(-1)
    step = max(1, ref.size // 5000)
    p = figure(title="operator against reference, every held-out point", height=300,
               sizing_mode="stretch_width", x_axis_label="reference mu",
               y_axis_label="operator mu")
    a, b = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    p.line([a, b], [a, b], color="black", line_dash="dashed", legend_label="prediction = reference")
    src = ColumnDataSource({"r": ref[::step], "p": pred[::step]})
    p.scatter("r", "p", source=src, size=5, alpha=0.6, color=Category10_10[3],
              legend_label="held-out points")
    p.legend.location = "top_left"
    return p


def operator_layout(ds, records, attrs, title="daskie operator"):
    """The bokeh layout of an operator's report (see :func:`operator_report`)."""
    if "rel_l2" not in ds:
        raise SpecError("this operator run has no held-out evaluation (it was trained without "
                        "test instances): nothing to report")
    dim = int(np.asarray(ds["x"].values).shape[1])
    parts = [Div(text=f"<h2>{html.escape(title)}</h2>", sizing_mode="stretch_width"),
             _summary(attrs, records), _curves(records), _histogram(ds), _parity(ds),
             Div(text="<h3>Instances against their references</h3>", sizing_mode="stretch_width"),
             _instances_1d(ds) if dim == 1 else _instances_2d(ds)]
    return column(*parts, sizing_mode="stretch_width")
