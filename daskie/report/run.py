"""The report of one run, drawn from its stored dataset alone (no cluster)."""

from __future__ import annotations

import html

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import BasicTicker, ColorBar, ColumnDataSource, Div, LinearColorMapper
from bokeh.palettes import RdBu11, Viridis256, interp_palette
from bokeh.plotting import figure

from daskie.report import figures

__all__ = ["history_records", "run_layout"]

_TRANSPARENT = (0, 0, 0, 0)  # cells outside a masked domain (NaN) show the page through


def history_records(ds) -> list[dict]:
    """The ``history_*`` variables of a run dataset as records (the store's own reading)."""
    from daskie.store import records_from_dataset

    return records_from_dataset(ds)


def metrics_table(attrs: dict, records: list[dict]) -> Div:
    """The run's figures: accuracy, epochs, time, speed-up figures when present, window costs.

    For a run without a result (interrupted or failed), the figures of its last completed
    window stand in for the final ones.
    """
    if "mse" not in attrs:
        last = next((r for r in reversed(records) if r.get("kind") == "window"), {})
        attrs = {**attrs, "mse": last.get("mse"), "rel_l2": last.get("rel_l2"),
                 "loss": last.get("loss"), "epochs": last.get("epoch"),
                 "wall_s": last.get("elapsed_s")}
    rows = [("MSE (test points)", attrs.get("mse")), ("relative L2", attrs.get("rel_l2")),
            ("error estimate (relative L2)", attrs.get("error_estimate")),
            ("tolerance", attrs.get("tol")), ("within tolerance", attrs.get("converged")),
            ("max abs error", attrs.get("max_abs_error")), ("final loss", attrs.get("loss")),
            ("epochs", attrs.get("epochs")), ("wall time (s)", attrs.get("wall_s")),
            ("stopped by", attrs.get("done")), ("parameters", attrs.get("n_params"))]
    lower = {str(k).lower(): k for k in attrs}
    for name, text in (("sr", "SR (speed-up)"), ("se", "SE (scaling efficiency)"),
                       ("ce", "CE (cost efficiency)"), ("artp", "ARTP")):
        if name in lower:
            rows.append((text, attrs[lower[name]]))
    windows = [r for r in records if isinstance(r.get("window_s"), (int, float))]
    if windows:
        rows += [("windows profiled", len(windows)),
                 ("sum of window times T_k (s)", float(sum(r["window_s"] for r in windows))),
                 ("sum of sync times (s)", float(sum(r.get("sync_s", 0.0) for r in windows))),
                 ("peak RSS of a worker (MB)", float(max(r.get("peak_rss_mb", 0.0) for r in windows)))]
    body = "".join(f"<tr><th style='text-align:left;padding:2px 12px;font-weight:normal'>"
                   f"{html.escape(k)}</th>"
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


def _color_range(values, diverging):
    """Colour limits that show the structure, and a note of what was clipped.

    A signed error is drawn on a symmetric range of the 99th percentile of ``|values|``: a
    linear range to the maximum puts nearly the whole map in one pale band when the error
    peaks in a corner (as it does at the boundary of many problems). The maximum is stated.
    """
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (-1.0, 1.0, "") if diverging else (0.0, 1.0, "")
    if diverging:
        peak = float(np.max(np.abs(finite)))
        top = float(np.percentile(np.abs(finite), 99)) or peak or 1.0
        note = (f"colours saturate at \u00b1{top:.2e} (99th percentile); max |value| {peak:.2e}"
                if peak > top * (1 + 1e-9) else f"max |value| {peak:.2e}")
        return -top, top, note
    low, high = float(finite.min()), float(finite.max())
    return low, (high if high > low else low + 1.0), f"range {low:.3g} .. {high:.3g}"


def _image(values, xs, ys, title, diverging, label, log=False):
    """One 2-D map with a labelled colorbar; ``log``: log10 of the values (magnitudes)."""
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)
    low, high, note = _color_range(values, diverging)
    # Blue for negative, red for positive, white at zero; smooth, not 11 bands.
    palette = interp_palette(RdBu11, 255) if diverging else Viridis256
    mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color=_TRANSPARENT)
    dx = (xs[-1] - xs[0]) / max(1, len(xs) - 1)
    dy = (ys[-1] - ys[0]) / max(1, len(ys) - 1)
    p = figure(title=title, width=420, height=380, match_aspect=True,
               x_range=(xs[0] - dx / 2, xs[-1] + dx / 2), y_range=(ys[0] - dy / 2, ys[-1] + dy / 2),
               x_axis_label="x0", y_axis_label="x1", tools="pan,wheel_zoom,box_zoom,reset,hover,save",
               tooltips=[("x0", "$x"), ("x1", "$y"), (label, "@image")])
    # values[i, j] is at (xs[i], ys[j]); an image's rows run along y, hence the transpose.
    p.image(image=[np.ascontiguousarray(values.T)], x=xs[0] - dx / 2, y=ys[0] - dy / 2,
            dw=xs[-1] - xs[0] + dx, dh=ys[-1] - ys[0] + dy, color_mapper=mapper)
    p.add_layout(ColorBar(color_mapper=mapper, width=12, title=label, title_standoff=6,
                          ticker=BasicTicker(desired_num_ticks=6)), "right")
    if note:
        p.add_layout(_caption(note), "below")
    return p


def _caption(text):
    from bokeh.models import Title

    return Title(text=text, text_font_size="11px", text_font_style="italic", align="left")


def solution_figures(ds):
    """Solution, exact solution and error: line plots in 1-D, images in 2-D (NaN outside a
    masked domain stays transparent), and the middle slice of higher dimensions."""
    names = [n for n in ("mu", "exact", "error") if n in ds]
    if "mu" not in ds:
        return [Div(text="<p>No solution grid in this store: the run has written no result "
                         "(the history of its completed windows is below).</p>"
                    if "finished_utc" not in ds.attrs and "mse" not in ds.attrs else
                    "<p>This store holds no solution grid.</p>")]
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
    labels = {"mu": "mu", "exact": "exact", "error": "mu - exact"}
    images = [_image(np.asarray(cut[n].values, dtype=float), xs, ys, titles[n] + note, n == "error",
                     labels[n]) for n in names]
    if "error" in names:  # orders of magnitude: where the error lives, beyond its peak
        images.append(_image(np.abs(np.asarray(cut["error"].values, dtype=float)), xs, ys,
                             "log10 |mu - exact|" + note, False, "log10 |error|", log=True))
    return [row(*images[:2]), row(*images[2:])] if len(images) > 3 else [row(*images)]


def run_title(attrs: dict) -> str:
    """``daskie run: NAME``, the problem's name from the summary or from the metadata (a run
    without a result has only the metadata)."""
    spec = attrs.get("problem_spec")
    name = attrs.get("problem") or (spec.get("name") if isinstance(spec, dict) else None)
    return f"daskie run: {name or '(problem not recorded)'}"


def run_status(attrs: dict, windows: list[int] | None) -> str:
    """One sentence on the state of the run: finished (and why), or interrupted."""
    if "finished_utc" in attrs or "mse" in attrs:
        done = attrs.get("done")
        return f"Finished{f' ({done})' if done else ''}."
    if windows:
        return (f"Interrupted or failed: no result yet; {len(windows)} complete checkpoint"
                f"{'s' if len(windows) != 1 else ''} (last window {windows[-1]}), whose history "
                f"is shown. `daskie solve ... --resume` continues it.")
    return "No result and no complete checkpoint in this store."


def run_layout(ds, title: str | None = None, records: list[dict] | None = None,
               windows: list[int] | None = None):
    """The whole report of a run dataset (as :meth:`daskie.RunStore.read` gives it).

    Parameters
    ----------
    ds : xarray.Dataset
        The store's root dataset.
    title : str, optional
        Default :func:`run_title`.
    records : list of dict, optional
        The training history; default the dataset's ``history_*`` (a run without a result
        has none there: pass the checkpoints' history, :meth:`RunStore.history`).
    windows : list of int, optional
        The complete checkpoints (:meth:`RunStore.windows`), for the status line.
    """
    attrs = dict(ds.attrs)
    if records is None:
        records = history_records(ds)
    title = title or run_title(attrs)
    status = run_status(attrs, windows)
    parts = [Div(text=f"<h1>{html.escape(title)}</h1><p>{html.escape(status)}</p>",
                 sizing_mode="stretch_width"),
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
    elif records:
        parts.append(Div(text="<p>No window profile in this store's records (no window "
                              "reported its times).</p>"))
    return column(*parts, sizing_mode="stretch_width")
