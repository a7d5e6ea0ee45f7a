"""The bokeh document of the live page ``/daskie``: loss curves per sub-model group, the
timeline of windows per worker and the window and sync times of the run being trained."""

from __future__ import annotations

import html

# Bokeh imports pandas lazily when a source streams. On a LocalCluster the scheduler shares its
# process with the client, and a first import of pandas in two threads at once fails ("partially
# initialized module"); importing it here, while the plugin is being installed, avoids that.
import pandas  # noqa: F401
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div

from daskie.report import figures

__all__ = ["LivePage", "live_doc"]

#: Milliseconds between two updates of an open page.
UPDATE_MS = 500


class LivePage:
    """One browser session's view of a :class:`~daskie.dashboard.feed.RunFeed`.

    The figures' sources receive the feed's new records at every :meth:`update` (streamed, not
    resent); a new run (or a thinned feed) rebuilds them from the start.
    """

    def __init__(self, feed):
        self.feed = feed
        self.header = Div(sizing_mode="stretch_width")
        self.losses: dict = {}
        self.mse = ColumnDataSource(figures.mse_columns([]))
        self.windows = ColumnDataSource(figures.empty_window_columns())
        self.loss_plot = figures.loss_figure({}, self.mse)
        self.timeline = figures.timeline_figure(self.windows)
        self.costs = figures.window_cost_figure(self.windows)
        self.root = column(self.header, self.loss_plot, self.timeline, self.costs,
                           sizing_mode="stretch_width")
        self.generation, self.cursor = None, 0
        self.update()

    def _reset(self):
        # Curves of another run or of another grouping (per group -> joint) go: their lines
        # and legend entries are removed, not only emptied.
        if self.losses:
            old = {id(src) for src in self.losses.values()}

            def stale(renderer):
                return id(getattr(renderer, "data_source", None)) in old

            self.loss_plot.renderers = [r for r in self.loss_plot.renderers if not stale(r)]
            if self.loss_plot.legend:
                legend = self.loss_plot.legend[0]
                legend.items = [item for item in legend.items
                                if not any(stale(r) for r in item.renderers)]
            self.losses = {}
        self.mse.data = figures.mse_columns([])
        self.windows.data = figures.empty_window_columns()
        self.timeline.y_range.factors = []
        self.generation, self.cursor = self.feed.generation, 0

    def _loss_source(self, key: str) -> ColumnDataSource:
        """The source of the curve ``key`` (:func:`daskie.report.figures.loss_columns`),
        drawn in the report's style the first time it appears."""
        src = self.losses.get(key)
        if src is None:
            src = self.losses[key] = ColumnDataSource({"epoch": [], "loss": []})
            self.loss_plot.line("epoch", "loss", source=src, **figures.curve_style(key))
        return src

    def update(self):
        """Stream the records that arrived since the last update."""
        feed = self.feed
        if feed.generation != self.generation:
            self._reset()
        info = feed.info
        what = ", ".join(f"{k} {html.escape(str(info[k]))}" for k in
                         ("problem", "formulation", "strategy", "optimizer", "epochs") if k in info)
        self.header.text = (f"<h2>daskie: {what or 'waiting for a run'}</h2>"
                            f"<p>{len(feed.records)} records from the window tasks</p>")
        if self.cursor >= len(feed.records):
            return
        cols = feed.columns(self.cursor)
        self.cursor = len(feed.records)
        for key, data in cols["loss"].items():
            self._loss_source(key).stream(data)
        if cols["mse"]["epoch"]:
            self.mse.stream(cols["mse"])
        if cols["windows"]["worker"]:
            known = list(self.timeline.y_range.factors)
            new = sorted(set(cols["windows"]["worker"]) - set(known))
            if new:
                self.timeline.y_range.factors = known + new
                self.timeline.height = figures.timeline_height(len(known + new))
            self.windows.stream(cols["windows"])


def live_doc(feed, scheduler, extra, doc):
    """Bokeh application function of ``/daskie`` (``distributed.dashboard.core`` calls it with
    the scheduler and the dashboard's template variables)."""
    page = LivePage(feed)
    doc.title = "Dask: daskie"
    doc.add_root(page.root)
    doc.add_periodic_callback(page.update, UPDATE_MS)
    try:  # the Dask dashboard's frame (navigation bar) around the page
        from distributed.dashboard.components.scheduler import BOKEH_THEME, env

        doc.template = env.get_template("simple.html")
        doc.template_variables.update(extra)
        doc.theme = BOKEH_THEME
    except ImportError:  # pragma: no cover - a distributed without them: a plain page
        pass
