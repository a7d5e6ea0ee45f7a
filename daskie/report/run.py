"""The report of one run, drawn from its stored dataset alone (no cluster)."""

from __future__ import annotations

import html

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColorBar, ColumnDataSource, Div, LinearColorMapper
from bokeh.palettes import RdBu11, Viridis256
from bokeh.plotting import figure

from daskie.report import figures

__all__ = ["history_records", "run_layout"]

_TRANSPARENT = (0, 0, 0, 0)  # cells outside a masked domain (NaN) show the page through


def history_records(ds) -> list[dict]:
    """The ``history_*`` variables of a run dataset as records (the store's own reading)."""
    from daskie.store import records_from_dataset

    return records_from_dataset(ds)


def metrics_table(attrs: dict, records: list[dict]) -> Div:
    """The run's figures: accuracy, epochs, time, speed-up figures when present, window costs."""
    rows = [("MSE (test points)", attrs.get("mse")), ("relative L2", attrs.get("rel_l2")),
            ("max abs error", attrs.get("max_abs_error")), ("final loss", attrs.get("loss")),
            ("epochs", attrs.get("epochs")), ("wall time (s)", attrs.get("wall_s")),
            ("stopped by", attrs.get("done")), ("parameters", attrs.get("n_params"))]
    lower = {str(k).lower(): k for k in attrs}
    for name, text in (("sr", "SR (speed-up)"), ("se", "SE (scaling efficiency)"),
                       ("ce", "CE (cost efficiency)"), ("artp", "ARTP")):
        if name in lower:
            rows.append((text, attrs[lower[name]]))
    windows = [r for r in records if "window_s" in r]
    if windows:
        rows += [("windows profiled", len(windows)),
                 ("sum of window times T_k (s)", float(sum(r["window_s"] for r in windows))),
                 ("sum of sync times (s)", float(sum(r.get("sync_s", 0.0) for r in windows))),
                 ("peak RSS of a worker (MB)", float(max(r.get("peak_rss_mb", 0.0) for r in windows)))]
    body = "".join(f"<tr><th style='text-align:left;padding:2px 12px'>{html.escape(k)}</th>"
                   f"<td style='padding:2px 12px'>{figures.format_value(v)}</td></tr>" for k, v in rows if v is not None
                   and v != "")
    setup = ", ".join(f"{k}: {html.escape(str(attrs[k]))}" for k in
                      ("formulation", "strategy", "optimizer", "workers", "seed") if attrs.get(k) not in (None, ""))
    return Div(text=f"<h3>Metrics</h3><p>{setup}</p><table>{body}</table>"
                    "<p>MSE and relative L2 on held-back test points that training never sees.</p>",
               sizing_mode="stretch_width")


def _line(ds, names, title):
    x = ds[ds[names[0]].dims[0]].values
    p = figure(title=title, height=300, sizing_mode="stretch_width", x_axis_label=ds[names[0]].dims[0])
    styles = {"mu": dict(color="#1f77b4", line_width=2, legend_label="neural mu"),
              "exact": dict(color="black", line_dash="dashed", line_width=1.5, legend_label="exact"),
              "error": dict(color="#d62728", line_width=2, legend_label="mu - exact")}
    for name in names:
        p.line(x, ds[name].values, **styles[name])
    return p


def _image(values, xs, ys, title, diverging):
    finite = values[np.isfinite(values)]
    if diverging:
        top = float(np.max(np.abs(finite))) if finite.size else 1.0
        low, high, palette = -top or -1.0, top or 1.0, tuple(reversed(RdBu11))
    else:
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        high = high if high > low else low + 1.0
        palette = Viridis256
    mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color=_TRANSPARENT)
    dx = (xs[-1] - xs[0]) / max(1, len(xs) - 1)
    dy = (ys[-1] - ys[0]) / max(1, len(ys) - 1)
    p = figure(title=title, width=380, height=340, match_aspect=True,
               x_range=(xs[0] - dx / 2, xs[-1] + dx / 2), y_range=(ys[0] - dy / 2, ys[-1] + dy / 2),
               x_axis_label="x0", y_axis_label="x1", tools="pan,wheel_zoom,box_zoom,reset,hover,save",
               tooltips=[("x0", "$x"), ("x1", "$y"), ("value", "@image")])
    # values[i, j] is at (xs[i], ys[j]); an image's rows run along y, hence the transpose.
    p.image(image=[np.ascontiguousarray(values.T)], x=xs[0] - dx / 2, y=ys[0] - dy / 2,
            dw=xs[-1] - xs[0] + dx, dh=ys[-1] - ys[0] + dy, color_mapper=mapper)
    p.add_layout(ColorBar(color_mapper=mapper, width=10), "right")
    return p


def solution_figures(ds):
    """Solution, exact solution and error: line plots in 1-D, images in 2-D (NaN outside a
    masked domain stays transparent), and the middle slice of higher dimensions."""
    names = [n for n in ("mu", "exact", "error") if n in ds]
    if "mu" not in ds:
        return [Div(text="<p>This store holds no solution grid.</p>")]
    dims = ds["mu"].dims
    if len(dims) == 1:
        plots = [_line(ds, [n for n in names if n != "error"], "Solution")]
        if "error" in ds:
            plots.append(_line(ds, ["error"], "Error"))
        return [row(*plots, sizing_mode="stretch_width")]
    sel = {d: ds.sizes[d] // 2 for d in dims[2:]}
    note = "" if not sel else " (slice " + ", ".join(
        f"{d} = {float(ds[d].values[i]):.3g}" for d, i in sel.items()) + ")"
    cut = ds.isel(sel) if sel else ds
    xs, ys = cut[dims[0]].values, cut[dims[1]].values
    titles = {"mu": "neural solution mu", "exact": "exact solution", "error": "error mu - exact"}
    images = [_image(np.asarray(cut[n].values, dtype=float), xs, ys, titles[n] + note, n == "error")
              for n in names]
    return [row(*images)]


def run_layout(ds, title: str | None = None):
    """The whole report of a run dataset (as :meth:`daskie.RunStore.read` gives it)."""
    attrs = dict(ds.attrs)
    records = history_records(ds)
    title = title or f"daskie run: {attrs.get('problem', '?')}"
    parts = [Div(text=f"<h1>{html.escape(title)}</h1>", sizing_mode="stretch_width"),
             metrics_table(attrs, records)]
    parts += solution_figures(ds)
    losses = {k: ColumnDataSource(v) for k, v in figures.loss_columns(records).items()}
    mse = figures.mse_columns(records)
    if losses:
        parts.append(figures.loss_figure(losses, ColumnDataSource(mse) if mse["epoch"] else None))
    starts = [r["t_start"] for r in records if isinstance(r.get("t_start"), float)]
    if starts:
        cols = figures.window_columns(records, min(starts))
        workers = sorted(set(cols["worker"]))
        src = ColumnDataSource(cols)
        parts += [figures.timeline_figure(src, workers), figures.window_cost_figure(src)]
    else:
        parts.append(Div(text="<p>No window profile in this store (written before the profiler "
                              "existed).</p>"))
    return column(*parts, sizing_mode="stretch_width")
