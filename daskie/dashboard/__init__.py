"""Watching a run while it trains: a page on the Dask dashboard and a terminal progress bar.

* :class:`~daskie.dashboard.plugin.DashboardPlugin`: a scheduler plugin that serves ``/daskie``
  next to ``/status`` on the scheduler's own dashboard, fed by the events the window tasks
  publish (:mod:`daskie.runtime.profiler`). :func:`~daskie.dashboard.plugin.attach` installs it on a
  client's scheduler and returns the page's address; ``daskie.solve`` does that itself.
* :class:`~daskie.dashboard.progress.ProgressBar`: epochs, loss and ETA on one terminal line.

The submodules import bokeh and distributed only when used.
"""

from importlib import import_module

_LAZY = {"DashboardPlugin": "daskie.dashboard.plugin", "attach": "daskie.dashboard.plugin",
         "page_url": "daskie.dashboard.plugin", "LiveRun": "daskie.dashboard.plugin",
         "RunFeed": "daskie.dashboard.feed", "ProgressBar": "daskie.dashboard.progress"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'daskie.dashboard' has no attribute {name!r}")
