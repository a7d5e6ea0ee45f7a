"""Where work runs: an executor, resolved once at the entry points.

The front doors' session (:mod:`daskie.session`) turns the public ``client`` argument into an
executor with :func:`as_executor` (``parareal`` and ``run_group`` call it for theirs); everything
below sees only an :class:`Executor`:

* :class:`InProcess` -- tasks run in this process when they are submitted (eagerly, in
  submission order), with an in-process :class:`~daskie.runtime.state.WorkerState`;
* :class:`DaskExecutor` -- tasks run on a Dask cluster's workers; it registers
  :class:`~daskie.runtime.state.DaskiePlugin` (the workers' state) once per client, knows
  the workers and their resources, and bounds every wait: a gather whose data went with a
  dead worker raises :class:`LostResult` instead of waiting for a task that cannot rerun,
  and a client whose scheduler went away raises :class:`SchedulerLost` naming its address.
"""

from __future__ import annotations

import abc
import contextlib
import time

from daskie.errors import DaskieError, PlanError, SpecError
from daskie.runtime.state import DaskiePlugin, PLUGIN_NAME, WorkerState

__all__ = ["Executor", "InProcess", "DaskExecutor", "as_executor", "LostResult", "SchedulerLost",
           "Done"]


class LostResult(DaskieError):
    """A task finished but its result is gone (its worker died before it was fetched)."""


class SchedulerLost(DaskieError):
    """The client lost its connection to the scheduler; nothing on the cluster can go on."""


class Done:
    """The result of a task an :class:`InProcess` executor ran at submission (a finished
    future)."""

    status = "finished"

    def __init__(self, key, value):
        self.key = key
        self.value = value

    def result(self, timeout=None):
        """The task's value."""
        return self.value

    def cancel(self):
        """Nothing to cancel: the task has run."""


def _resolve(arg):
    return arg.value if isinstance(arg, Done) else arg


class Executor(abc.ABC):
    """What the runners need of the place where work runs.

    What differs between running in this process and on a cluster is decided here, by the
    executor's methods (:meth:`in_flight`, :meth:`stream`, :meth:`groups`), never by the
    runners.
    """

    @abc.abstractmethod
    def workers(self) -> dict:
        """``{address: info}`` of the workers (info holds ``resources``)."""

    @abc.abstractmethod
    def submit(self, fn, *args, key: str, workers=None, allow_other_workers: bool = False):
        """Run ``fn(*args)`` as a task (args may be earlier tasks' futures); its future."""

    @abc.abstractmethod
    def gather(self, futures, timeout: float | None = None) -> list:
        """The results of ``futures``, waiting at most ``timeout`` seconds for their data."""

    @abc.abstractmethod
    def cancel(self, futures) -> None:
        """Cancel tasks that are no longer needed."""

    def scatter(self, obj):
        """``obj`` as a future on every worker (or ``obj`` itself in process)."""
        return obj

    def resources(self) -> set[str]:
        """Resource names some worker declares (``>= 1`` of it)."""
        names = set()
        for info in self.workers().values():
            names |= {k for k, v in (info.get("resources") or {}).items() if v >= 1}
        return names

    def fit_plan(self, plan):
        """The Plan for the resources this cluster really has.

        A Plan with GPU groups on a cluster where no worker declares ``GPU`` is placed on
        CPU workers, with a :class:`~daskie.errors.PlanWarning` (a task asking for a
        resource no worker has would wait forever). Any other resource no worker declares
        is a :class:`PlanError`. In process, this process is the one worker (with a GPU when
        torch sees CUDA).
        """
        if plan is None:
            return plan
        available = self.resources()
        missing = {p.resource for p in plan.groups if p.resource != "CPU"} - available
        if missing == {"GPU"}:
            import warnings

            from daskie.errors import PlanWarning

            gpu = [p for p in plan.groups if p.resource == "GPU"]
            warnings.warn(PlanWarning(
                f"the plan places {len(gpu)} group(s) ({', '.join('+'.join(p.submodels) for p in gpu)}) "
                f"on GPU workers, but no worker of {self.address} declares a GPU resource; they "
                f"run on CPU workers (start GPU workers with --resources GPU=1 to use them)"),
                stacklevel=3)
            return plan.on_cpu()
        for p in plan.groups:
            if p.resource in missing:
                raise PlanError(
                    f"the plan places group {p.index} ({'+'.join(p.submodels)}) on a "
                    f"{p.resource} worker, but no worker declares that resource (workers "
                    f"have: {sorted(available) or 'no resources'}); start workers with "
                    f"--resources {p.resource}=1")
        return plan

    def check_alive(self) -> None:
        """Raise :class:`SchedulerLost` when the cluster is gone (nothing to do in process)."""

    def in_flight(self, wanted: int) -> int:
        """How many of a chain's tasks a runner may have submitted at once when it would like
        ``wanted``: all of them on a cluster (the workers go on while the client checks a
        result); one in process, where a task runs at submission."""
        return max(1, int(wanted))

    @abc.abstractmethod
    def stream(self, batches):
        """Compute ``batches`` (a list of lists of ``dask.delayed`` objects, later batches
        reading earlier ones) and yield each batch's results, in order, as soon as it is
        done. Closing the generator early cancels what is left."""

    @abc.abstractmethod
    def groups(self, prefix: str | None = None):
        """The :class:`~daskie.runtime.groups.Groups` that run rank groups here (rank threads
        of this process, or one task per rank on the workers)."""

    def default_ranks(self) -> int:
        """Ranks a group runs with when its spec does not say: one per worker."""
        return len(self.workers())

    def live_page(self, token: str, info: dict):
        """Announce run ``token`` on the live dashboard page; the handle that gets its window
        results (:class:`~daskie.dashboard.plugin.LiveRun`), or None where there is no page
        (in process)."""
        return None

    @contextlib.contextmanager
    def hosting(self, token: str, objective=None):
        """Serve ``objective`` (this process's copy of run ``token``'s objective) to the tasks
        and client-side reads that run in this process, for the ``with`` block."""
        state = self.state() or WorkerState()
        if objective is not None:
            state.objectives[(token, None)] = objective
        with state.current():
            yield state

    def wait_for_workers(self, n: int, timeout: float) -> None:
        """Wait until ``n`` workers are there (at most ``timeout`` s)."""

    def run_on(self, address: str, fn, *args):
        """``fn(*args)`` run now on worker ``address`` (outside the task graph)."""
        return fn(*args)

    def run_everywhere(self, fn, *args) -> None:
        """``fn(*args)`` run now on every worker; workers that are gone are skipped."""
        fn(*args)

    def state(self) -> WorkerState | None:
        """The in-process worker state (None on a cluster: each worker has its own)."""
        return None


    address = "this process"


class InProcess(Executor):
    """Tasks run in this process, at submission, in order: the serial path whose numbers
    every cluster run is checked against."""

    def __init__(self):
        self._state = WorkerState()

    def default_ranks(self) -> int:
        """Two: a group in process runs its ranks as threads, two by default (what a
        two-worker cluster runs, so that both give the same numbers)."""
        return 2

    def workers(self):
        """One worker, ``"local"``, declaring ``GPU`` where torch sees CUDA."""
        import torch

        gpu = {"GPU": 1} if torch.cuda.is_available() else {}
        return {"local": {"resources": gpu, "name": "local"}}

    def state(self):
        """The :class:`~daskie.runtime.WorkerState` this process's tasks share."""
        return self._state

    def submit(self, fn, *args, key: str = "", workers=None, allow_other_workers=False):
        """Run ``fn(*args)`` now, in this process, with this executor's worker state
        current; a finished future of its result."""
        with self._state.current():
            return Done(key, fn(*[_resolve(a) for a in args]))

    def gather(self, futures, timeout=None):
        """The results of ``futures`` (all computed already)."""
        return [_resolve(f) for f in futures]

    def cancel(self, futures):
        """Nothing to cancel: in process every task ran when it was submitted."""
        pass

    def in_flight(self, wanted):
        """One: a task runs when it is submitted, so nothing can run ahead."""
        return 1

    def stream(self, batches):
        """Each batch computed in turn by Dask's synchronous scheduler, the same tasks under
        the same keys as on a cluster; results already computed are kept for the batches
        that read them (not computed again)."""
        from dask.local import get_sync
        from dask.optimization import cull

        batches = [list(b) for b in batches]
        dsk, graphs = {}, set()
        for d in (d for b in batches for d in b):
            graph = d.__dask_graph__()
            if id(graph) not in graphs:  # the windows of a chain share one graph
                graphs.add(id(graph))
                dsk.update(graph)
        with self._state.current():
            for batch in batches:
                keys = [d.key for d in batch]
                needed, _ = cull(dsk, keys)
                values = list(get_sync(needed, keys))
                dsk.update(zip(keys, values))  # later batches read the values, not the tasks
                yield values

    def groups(self, prefix=None):
        """Rank groups as threads of this process, sharing its worker state."""
        from daskie.runtime.groups import ThreadGroups

        return ThreadGroups(self, prefix)

    def __repr__(self):
        return "InProcess()"


class DaskExecutor(Executor):
    """Tasks on the workers of a ``distributed.Client``.

    Parameters
    ----------
    client : distributed.Client
    """

    def __init__(self, client):
        self.client = client
        self.address = getattr(client.scheduler, "address", None) or "?"
        self._register_plugin()

    def __repr__(self):
        return f"DaskExecutor({self.address})"

    def _register_plugin(self):
        # Registering replaces a plugin of the same name (its teardown closes the groups of
        # a run in flight on the same client), so register only where it is missing.
        def has_plugin(dask_worker):
            return PLUGIN_NAME in dask_worker.plugins

        try:
            present = self.client.run(has_plugin)
        except (OSError, TimeoutError) as exc:
            raise SchedulerLost(f"lost the scheduler at {self.address}: {exc}") from exc
        if not present or not all(present.values()):
            self.client.register_plugin(DaskiePlugin(), name=PLUGIN_NAME)

    def live_page(self, token, info):
        """The run's :class:`~daskie.dashboard.plugin.LiveRun` on the scheduler's page."""
        from daskie.dashboard.plugin import LiveRun

        return LiveRun(self.client, token, info)

    def check_alive(self):
        """Raise :class:`SchedulerLost`, naming its address, when the scheduler is gone."""
        if self.client.status not in ("running", "connecting"):
            raise SchedulerLost(f"lost the scheduler at {self.address} (client {self.client.status}); "
                                "the run cannot go on: restart the cluster and resume from the store")

    def workers(self):
        """Fetched from the scheduler: the client's cached ``scheduler_info()`` loses its
        workers to a periodic refresh, and a read racing it found none (once in about a
        hundred windows)."""
        try:
            return dict(self.client.sync(self.client.scheduler.identity, n_workers=-1)["workers"])
        except (OSError, TimeoutError) as exc:
            self.check_alive()
            raise SchedulerLost(f"lost the scheduler at {self.address}: {exc}") from exc

    def submit(self, fn, *args, key: str, workers=None, allow_other_workers=False):
        """Submit ``fn(*args)`` under the deterministic ``key`` (impure: it always runs),
        pinned to ``workers`` unless ``allow_other_workers``; its future."""
        return self.client.submit(fn, *args, key=key, pure=False, workers=workers,
                                  allow_other_workers=allow_other_workers if workers else False)

    def gather(self, futures, timeout=None):
        """Results of finished (or soon finished) futures, bounded by ``timeout``.

        ``Client.gather`` waits for data without limit; a future whose worker died after it
        finished is recomputed only when the task may run elsewhere -- a task pinned to the
        dead worker never is. So each result is fetched with a deadline, and a future that
        is lost (or still not there at the deadline) raises :class:`LostResult`.
        """
        futures = list(futures)
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for f in futures:
            left = None if deadline is None else max(0.1, deadline - time.monotonic())
            try:
                out.append(f.result(timeout=left))
            except TimeoutError as exc:
                self.check_alive()
                raise LostResult(f"the result of task {f.key} did not arrive within {timeout:.0f} s "
                                 f"(status {f.status}: its worker probably died after it "
                                 "finished)") from exc
            except OSError as exc:
                self.check_alive()
                raise LostResult(f"the result of task {f.key} could not be fetched: {exc}") from exc
        return out

    def stream(self, batches):
        """Every batch submitted at once (the workers go from one to the next without waiting
        for the client); each batch's results gathered in order with :meth:`gather`'s bounded
        waits. A batch is released once the next one is done (no later task reads it); a
        failure or an early exit cancels everything still on the cluster."""
        batches = [list(b) for b in batches]
        futures = self.client.compute([d for b in batches for d in b], optimize_graph=False)
        it = iter(futures)
        per_batch = [[next(it) for _ in b] for b in batches]
        del futures, it
        try:
            for i, fs in enumerate(per_batch):
                yield self.gather(fs)
                if i >= 1:
                    per_batch[i - 1] = []
        finally:
            self.cancel([f for fs in per_batch for f in fs])

    def groups(self, prefix=None):
        """Rank groups as one task per rank on the workers, joined over TCP."""
        from daskie.runtime.groups import Groups

        return Groups(self, prefix)

    def cancel(self, futures):
        """Cancel ``futures`` on the scheduler (nothing to do once the scheduler is gone)."""
        futures = [f for f in futures if f is not None]
        if futures and self.client.status == "running":
            try:
                self.client.cancel(futures, force=True)
            except (OSError, TimeoutError):  # the scheduler is gone: nothing runs any more
                pass

    def scatter(self, obj):
        """``obj`` broadcast to every worker; its future."""
        [fut] = self.client.scatter([obj], broadcast=True, hash=False)
        return fut

    def wait_for_workers(self, n, timeout):
        """Wait until ``n`` workers are there; after ``timeout`` seconds a
        :class:`~daskie.errors.PlanError` says how many came."""
        try:
            self.client.wait_for_workers(n, timeout=timeout)
        except TimeoutError as exc:
            self.check_alive()
            have = len(self.workers())
            raise PlanError(f"the cluster at {self.address} has {have} workers and none more came "
                            f"within {timeout:.0f} s; {n} are needed") from exc

    def run_on(self, address, fn, *args):
        """``fn(*args)`` run now on worker ``address`` (outside the task graph); its result."""
        return self.client.run(fn, *args, workers=[address])[address]

    def run_everywhere(self, fn, *args):
        """``fn(*args)`` run now on every worker; workers that are gone are skipped."""
        try:
            self.client.run(fn, *args, on_error="ignore")
        except (OSError, TimeoutError):  # a worker (or the scheduler) gone has nothing open
            pass


def as_executor(client) -> Executor:
    """The executor of a ``client`` argument: ``"sync"`` -> :class:`InProcess`, a
    ``distributed.Client`` -> :class:`DaskExecutor`, an executor -> itself. ``None`` ("start
    daskie's embedded LocalCluster") is resolved by the front doors' session
    (:meth:`daskie.session.Session.connect`) before this is called, and refused here."""
    if isinstance(client, Executor):
        return client
    if client is None:
        raise SpecError("client=None starts an embedded LocalCluster only at the front doors "
                        "(solve, fit, learn_operator, ...); pass 'sync' (this process) or a "
                        "distributed.Client")
    if isinstance(client, str) and client == "sync":
        return InProcess()
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover
        Client = ()
    if isinstance(client, Client):
        return DaskExecutor(client)
    raise SpecError(f"client must be None, 'sync' or a distributed.Client, got {client!r}")
