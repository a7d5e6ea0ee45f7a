"""Worker-side state of daskie's tasks, kept by one worker plugin.

Tasks rebuild expensive things once per worker process and reuse them across windows:
the discretized objective of a run (discretizing is not free), its data shards, and the
collective groups kept open between SPMD windows. All of it lives in one
:class:`WorkerState`, owned

* on a Dask worker by :class:`DaskiePlugin` (a ``distributed.WorkerPlugin`` the
  :class:`~daskie.runtime.executor.DaskExecutor` registers: ``setup`` creates the state,
  ``teardown`` closes its groups -- the way distributed's shuffle extension keeps its runs);
* in this process by the :class:`~daskie.runtime.executor.InProcess` executor, which makes its
  state current (a context variable) while it runs tasks.

:func:`worker_state` is how task code finds it. Nothing here is a module-level cache.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import OrderedDict

__all__ = ["WorkerState", "DaskiePlugin", "worker_state", "where", "PLUGIN_NAME"]

#: Name under which the plugin is registered on the workers.
PLUGIN_NAME = "daskie"

#: The state of the innermost active in-process executor (None outside one).
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("daskie_worker_state", default=None)


class WorkerState:
    """What one worker process keeps between daskie's tasks.

    Parameters
    ----------
    keep : int
        Entries kept per cache (objectives, shards, groups); the least recently used is
        dropped beyond it (a worker serves a few runs at a time, not hundreds).
    """

    def __init__(self, keep: int = 8):
        self.keep = int(keep)
        self.objectives: OrderedDict = OrderedDict()
        self.shards: OrderedDict = OrderedDict()
        self.groups: dict = {}

    def cached(self, table: OrderedDict, key, make):
        """``table[key]``, made by ``make()`` on a miss; the oldest entries beyond ``keep``
        are dropped."""
        value = table.get(key)
        if value is None:
            value = make()
            table[key] = value
            while len(table) > self.keep:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return value

    def take_group(self, key):
        """Remove and return the open group kept under ``key`` (None if there is none): a
        group in use is out of the table, so one that failed is never handed out again."""
        return self.groups.pop(key, None)

    def keep_group(self, key, group) -> None:
        """Keep ``group`` open under ``key`` for the next window; close the oldest beyond
        ``keep``."""
        self.groups[key] = group
        while len(self.groups) > self.keep:
            self.groups.pop(next(iter(self.groups))).close()

    def close_groups(self, prefix: str = "") -> int:
        """Close the kept groups whose key starts with ``prefix``; returns how many."""
        keys = [k for k in self.groups if str(k[0]).startswith(prefix)]
        for k in keys:
            self.groups.pop(k).close()
        return len(keys)

    def close(self) -> None:
        """Close everything (the worker is going away)."""
        self.close_groups()
        self.objectives.clear()
        self.shards.clear()

    @contextlib.contextmanager
    def current(self):
        """Make this the state :func:`worker_state` returns in this context (in-process runs;
        copied into the rank threads of an in-process group)."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)


def _plugin_base():
    from distributed import WorkerPlugin

    return WorkerPlugin


class DaskiePlugin(_plugin_base()):
    """The worker plugin that owns a :class:`WorkerState` on every Dask worker."""

    name = PLUGIN_NAME

    def __init__(self, keep: int = 8):
        self.keep = keep
        self.state = None

    def setup(self, worker):
        """Give the worker its empty :class:`WorkerState` (distributed calls this)."""
        self.state = WorkerState(self.keep)

    def teardown(self, worker):
        """Close what the state holds (open collective groups) when the worker closes."""
        if self.state is not None:
            self.state.close()
            self.state = None


def _dask_worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def worker_state(worker=None) -> WorkerState:
    """The state of the worker (or in-process executor) running the current task.

    ``worker`` is the Dask worker when the caller has it (functions run by ``client.run``
    get it as ``dask_worker``: they run outside a task, where ``get_worker`` finds none).
    On a Dask worker that lacks the plugin (a worker started before it was registered and
    never told), the plugin is installed on the spot. Outside any executor a fresh state is
    returned (nothing is kept).
    """
    state = _CURRENT.get() if worker is None else None
    if state is not None:
        return state
    worker = worker if worker is not None else _dask_worker()
    if worker is None:
        return WorkerState()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if plugin is None or getattr(plugin, "state", None) is None:
        plugin = DaskiePlugin()
        plugin.setup(worker)
        worker.plugins[PLUGIN_NAME] = plugin
    return plugin.state


def where() -> str:
    """Address of the Dask worker running the current task, or ``"local"``."""
    worker = _dask_worker()
    return worker.address if worker is not None else "local"
