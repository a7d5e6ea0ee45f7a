"""The scheduler plugin that serves the live page, and how a client installs it.

The plugin keeps a :class:`~daskie.dashboard.feed.RunFeed` on the scheduler, fills it from
the ``"daskie"`` events (its ``log_event`` hook receives what the window tasks publish with
``get_worker().log_event``), and adds to the scheduler's HTTP server, next to ``/status``:

* ``/daskie``: the bokeh page (:mod:`daskie.dashboard.page`);
* ``/daskie/data.json``: the same plot data as JSON (for scripts and tests).

A remote scheduler must be able to import daskie (install it there, or start the scheduler
with ``dask scheduler --preload daskie.dashboard.plugin``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time

from distributed.diagnostics.plugin import SchedulerPlugin

from daskie.dashboard.feed import RunFeed
from daskie.records import TOPIC

__all__ = ["DashboardPlugin", "LiveRun", "attach", "page_url", "PAGE"]

logger = logging.getLogger("daskie.dashboard")

#: Path of the page on the scheduler's dashboard.
PAGE = "daskie"


class DashboardPlugin(SchedulerPlugin):
    """Serve ``/daskie`` on the scheduler's dashboard, fed by the ``"daskie"`` events.

    Installing it again on the same scheduler does nothing (``idempotent``): the page and its
    feed stay, and the next run's ``"run"`` event starts the feed over.
    """

    name = "daskie-dashboard"
    idempotent = True

    def __init__(self):
        self.feed = RunFeed()
        self.served = False

    async def start(self, scheduler) -> None:
        """Serve ``/daskie`` on the scheduler's bokeh dashboard (where it has one)."""
        app = getattr(scheduler, "http_application", None)
        if app is None or not any(hasattr(a, "initialize") for a in getattr(app, "applications", ())):
            logger.info("the scheduler has no bokeh dashboard; the daskie page is not served")
            return
        from distributed.dashboard.core import BokehApplication
        from tornado.ioloop import IOLoop

        from daskie.dashboard.page import live_doc

        prefix, extra = _dashboard_frame(scheduler)
        bokeh_app = BokehApplication({f"/{PAGE}": functools.partial(live_doc, self.feed)}, scheduler,
                                     prefix=prefix, template_variables=extra)
        app.add_application(bokeh_app)
        bokeh_app.initialize(IOLoop.current())
        app.add_handlers(r".*", [(f"{prefix.rstrip('/')}/{PAGE}/data.json", _DataHandler,
                                  {"feed": self.feed})])
        self.served = True

    def log_event(self, topic, msg) -> None:
        """Feed the page with the window tasks' events on daskie's topic."""
        if topic == TOPIC:
            self.feed.add(msg)


def _dashboard_frame(scheduler):
    """The dashboard's URL prefix and its template variables, with ``daskie`` in its
    navigation bar (the dashboard shares one memoized list of pages between its pages)."""
    prefix, extra = "/", {}
    for a in scheduler.http_application.applications:
        if hasattr(a, "initialize") and getattr(a, "prefix", None):
            prefix = a.prefix
            break
    try:
        from distributed.dashboard.scheduler import template_variables

        extra = template_variables(scheduler)
        if PAGE not in extra.get("pages", []):
            extra["pages"].append(PAGE)
    except (ImportError, AttributeError, KeyError):  # pragma: no cover - other distributed layouts
        pass
    return prefix, extra


def _data_handler():
    from tornado import web

    class DataHandler(web.RequestHandler):
        def initialize(self, feed):
            self.feed = feed

        def get(self):
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps(_plain(self.feed.to_json()), allow_nan=False, default=str))

    return DataHandler


_DataHandler = _data_handler()


def _plain(value):
    """``value`` with NaN and infinities as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def page_url(client) -> str | None:
    """Address of the live page on ``client``'s scheduler dashboard (None without one)."""
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError):
        return None
    if not link:
        return None
    base = link[: -len("/status")] if link.endswith("/status") else link.rstrip("/")
    return f"{base}/{PAGE}"


class LiveRun:
    """The client's side of one run on the live page: announce it, then send window results.

    Parameters
    ----------
    client : distributed.Client
    run : str
        The run's token (the tasks' events carry it).
    info : dict
        What the page's header shows (problem, formulation, strategy, optimizer, epochs).
    """

    def __init__(self, client, run: str, info: dict):
        self.client, self.run = client, run
        self.url = attach(client)
        client.log_event(TOPIC, {"kind": "run", "run": run, "t": time.time(), **info})
        if self.url:
            logger.info("live dashboard at %s", self.url)

    def window_done(self, record: dict) -> None:
        """Send the client's per-window joint record (epoch, loss, test MSE)."""
        keys = ("window", "epoch", "loss", "mse")
        self.client.log_event(TOPIC, {"kind": "joint", "run": self.run,
                                      **{k: record[k] for k in keys if k in record}})


def attach(client) -> str | None:
    """Install :class:`DashboardPlugin` on ``client``'s scheduler; return the page's address.

    Returns None, and logs a warning, when the plugin cannot be installed (a remote
    scheduler without daskie); None also when the scheduler serves no dashboard.
    """
    try:
        client.register_plugin(DashboardPlugin())
    except Exception as exc:  # the page is optional: training goes on without it
        logger.warning("daskie's live page is not available on this scheduler (%s: %s); install "
                       "daskie where the scheduler runs to get it", type(exc).__name__, exc)
        return None
    return page_url(client)
