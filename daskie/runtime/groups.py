"""Collective groups bootstrapped through an executor: one task per rank, at the same time.

:class:`Groups` is the client side of one run's groups: it picks one worker per rank (one
rank per worker slot: a rank that waits for a busy slot would make its peers time out), asks
rank 0's worker for a free port at run time, and submits one task per rank pinned to its
worker. Each task joins a :class:`~daskie.collectives.group.Group` (or takes the one its
worker kept open under the same reuse key, in the worker's
:class:`~daskie.runtime.state.WorkerState`), runs ``fn(group, *args)`` and returns its
result. The ports of kept groups are the run's own state (no module globals);
:meth:`Groups.release` closes the kept groups on every worker when the run ends.

Nothing waits forever: a rank that fails (its worker died, a peer timed out) fails the call
with :class:`~daskie.collectives.group.GroupError` within the group's ``timeout``; a worker that
leaves is noticed within a second; the results are fetched with a deadline (a result lost
with its worker is a :class:`~daskie.runtime.executor.LostResult`, not a wait for a pinned task
that can never rerun). Callers run the window again from its input.

In process, :class:`ThreadGroups` runs the ranks as threads of this process (the same
numbers, no cluster). An executor hands out the kind that runs on it
(:meth:`~daskie.runtime.executor.Executor.groups`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from daskie.collectives.group import Group, GroupError, free_port, local_groups, run_threads
from daskie.errors import DaskieError, PlanError
from daskie.runtime.executor import Done, LostResult, as_executor
from daskie.runtime.state import worker_state

__all__ = ["Groups", "ThreadGroups", "GroupCall", "run_group", "group_workers", "pick_workers"]

#: Seconds to wait for the results of ranks that have all finished (they are small: a
#: state and its records); past it the results count as lost with their worker.
RESULT_TIMEOUT = 60.0


def _host(address: str) -> str:
    """``tcp://10.0.0.5:4321`` -> ``10.0.0.5``."""
    hostport = address.split("://", 1)[-1]
    return hostport.rsplit(":", 1)[0].strip("[]")


def _free_port_here(dask_worker=None) -> int:
    return free_port(_host(dask_worker.address) if dask_worker is not None else "127.0.0.1")


def _rank_main(fn, rank, size, host, port, timeout, options, args, reuse=None):
    from distributed import get_worker

    state = worker_state()
    me = _host(get_worker().address)
    # a group is taken out of the state while in use: one that failed is never reused
    group = state.take_group((reuse, rank)) if reuse is not None else None
    if group is None:
        group = Group(rank, size, host, port, timeout=timeout, local_host=me, **options)
    else:
        group.reset()
    kept = False
    try:
        out = fn(group, *args)
        if reuse is not None:
            state.keep_group((reuse, rank), group)
            kept = True
        return out
    finally:
        if not kept:
            group.close()


def _close_groups(prefix: str, dask_worker=None) -> int:
    # ``client.run`` functions run outside a task: the worker comes as an argument
    return worker_state(dask_worker).close_groups(prefix)


@dataclass
class GroupCall:
    """A submitted group (:meth:`Groups.submit`): one future per rank, in rank order."""

    futures: list
    addrs: list
    name: str
    cache_key: tuple | None = None


def group_workers(executor, size: int, workers=None) -> list[str]:
    """Addresses of ``size`` workers, one per rank.

    Raises :class:`~daskie.errors.PlanError` when the cluster has fewer workers than ranks.
    """
    info = executor.workers()
    if workers is not None:
        missing = [w for w in workers if w not in info]
        if missing:
            raise PlanError(f"workers {missing} are not in the cluster")
        pool = list(workers)
    else:
        # idle workers first: after a failure a cancelled rank may still hold its worker's
        # thread until its collective times out, and a rank placed behind it would make its
        # peers time out in turn (the numbers do not depend on the placement)
        pool = sorted(info, key=lambda a: (_executing(info[a]), str(info[a].get("name", a)), a))
    if len(pool) < size:
        raise PlanError(f"a group of {size} ranks needs {size} workers (one rank per worker), "
                        f"the cluster has {len(pool)}")
    return pool[:size]


def _executing(info) -> int:
    return int(((info.get("metrics") or {}).get("task_counts") or {}).get("executing", 0))


def pick_workers(executor, n_ranks: int, resources=None) -> list[str]:
    """One worker per rank; ranks tagged with a resource go to workers that declare it."""
    if not resources or all(r in (None, "CPU") for r in resources):
        return group_workers(executor, n_ranks)
    info = executor.workers()
    free = sorted(info, key=lambda a: (_executing(info[a]), a))
    chosen: list = [None] * n_ranks
    for r, tag in enumerate(resources):  # tagged ranks first: they have fewer candidates
        if tag not in (None, "CPU"):
            pick = next((w for w in free if info[w].get("resources", {}).get(tag, 0) >= 1), None)
            if pick is None:
                raise PlanError(f"rank {r} needs a worker with resource {tag!r}; none is free")
            chosen[r] = pick
            free.remove(pick)
    for r in range(n_ranks):
        if chosen[r] is None:
            if not free:
                raise PlanError(f"a group of {n_ranks} ranks needs {n_ranks} workers")
            chosen[r] = free.pop(0)
    return chosen


class Groups:
    """The groups of one run on ``executor``: bootstrap, reuse, release.

    Parameters
    ----------
    executor : Executor
    prefix : str
        Prefix of the reuse keys of this run's kept groups (:meth:`release` closes them).
    """

    def __init__(self, executor, prefix: str | None = None):
        self.executor = executor
        self.prefix = prefix or f"daskie-{uuid.uuid4().hex[:12]}"
        self.ports: dict = {}  # (reuse key, workers) -> port of a kept group

    def run(self, fn, rank_args, *, workers=None, timeout: float = 60.0, name: str = "group",
            options: dict | None = None, reuse: str | None = None) -> list:
        """Run ``fn(group, *rank_args[r])`` on every rank r at the same time; results in rank
        order (see :func:`run_group`)."""
        return self.gather(self.submit(fn, rank_args, workers=workers, timeout=timeout,
                                       name=name, options=options, reuse=reuse))

    def place(self, n_ranks: int, resources=None) -> list[str]:
        """One worker per rank (:func:`pick_workers`)."""
        return pick_workers(self.executor, n_ranks, resources)

    def submit(self, fn, rank_args, *, workers=None, timeout: float = 60.0, name: str = "group",
               options: dict | None = None, reuse: str | None = None) -> GroupCall:
        """Submit the ranks without waiting; :meth:`gather` waits.

        A rank's arguments may hold futures (of an earlier call's ranks, for example): the
        rank starts when they are done, so a chain of calls with ``reuse`` runs back to back
        on the workers while the client is still busy with an earlier result.
        """
        ex = self.executor
        if reuse is not None and workers is None:
            # a kept group's ranks stay on their workers: the idle-first order of
            # group_workers can flip between two calls (a worker's "executing" count lags the
            # end of its last task), which made a reuse start a second group beside the kept one
            info = ex.workers()
            kept = [addrs for key, addrs in self.ports if key == reuse
                    and len(addrs) == len(rank_args) and all(a in info for a in addrs)]
            workers = list(kept[0]) if kept else None
        addrs = group_workers(ex, len(rank_args), workers)
        host = _host(addrs[0])
        cache_key = None if reuse is None else (reuse, tuple(addrs))
        port = self.ports.get(cache_key) if cache_key is not None else None
        if port is None:
            port = ex.run_on(addrs[0], _free_port_here)
        if cache_key is not None:
            self.ports[cache_key] = port  # the next call with this key joins the same group
        worker_key = None if reuse is None else f"{reuse}@{port}"
        tag = uuid.uuid4().hex[:8]
        size = len(rank_args)
        futures = [ex.submit(_rank_main, fn, r, size, host, port, timeout, dict(options or {}),
                             rank_args[r], worker_key, key=f"{name}-rank{r}-{tag}",
                             workers=[addrs[r]], allow_other_workers=False)
                   for r in range(size)]
        return GroupCall(futures, addrs, name, cache_key)

    def cancel(self, call: GroupCall) -> None:
        """Cancel a submitted group and forget its kept port."""
        self.executor.cancel(call.futures)
        if call.cache_key is not None:
            self.ports.pop(call.cache_key, None)

    def gather(self, call: GroupCall, result_timeout: float = RESULT_TIMEOUT) -> list:
        """Wait for a submitted group; results in rank order.

        No deadline on the training itself (a window may train for hours): every collective
        inside is bounded by the group's ``timeout``, a rank that cannot start (its worker
        died) leaves its peers failing at the rendezvous or their next collective, and a
        worker that leaves the cluster is noticed here within a second. The results of
        finished ranks are fetched within ``result_timeout``.
        """
        from distributed import wait
        from distributed.client import FuturesCancelledError

        ex = self.executor
        futures, addrs, name = call.futures, call.addrs, call.name
        try:
            pending = list(futures)
            while pending:
                try:
                    done, not_done = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done, not_done = [], pending
                except FuturesCancelledError as exc:
                    raise GroupError(f"group {name}: a rank was cancelled (its worker left the "
                                     f"cluster): {exc}") from exc
                failed = [f for f in done if f.status == "error"]
                if failed:
                    _raise_failure(futures, failed, not_done, name)
                pending = list(not_done)
                ex.check_alive()
                alive = ex.workers()
                lost = [r for r, a in enumerate(addrs) if a not in alive]
                if lost:
                    raise GroupError(f"group {name}: the workers of ranks {lost} left the cluster"
                                     + (" (their results with them)" if not pending else ""))
            # the results are small but live on the ranks' workers: fetch them in short
            # slices and look for dead workers in between, so a result lost with its worker
            # is noticed within a second or two, not at the end of result_timeout
            deadline = time.monotonic() + result_timeout
            while True:
                try:
                    return ex.gather(futures, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
                except LostResult as exc:
                    ex.check_alive()
                    alive = ex.workers()
                    lost = [r for r, a in enumerate(addrs) if a not in alive]
                    if lost:
                        raise GroupError(f"group {name}: the results of ranks {lost} went with "
                                         "their workers (they left the cluster)") from exc
                    if time.monotonic() >= deadline:
                        raise GroupError(f"group {name}: {exc}") from exc
        except BaseException:
            self.cancel(call)
            raise

    def release(self) -> None:
        """Close the groups this run kept open, on every worker (call it when the run ends,
        however it ends)."""
        self.ports.clear()
        self.executor.run_everywhere(_close_groups, self.prefix)


class ThreadGroups:
    """Rank groups as threads of this process (an :class:`~daskie.runtime.executor.InProcess`
    executor): :meth:`submit` runs the ranks at once, joined by in-process collectives, each
    thread with the executor's worker state; the same interface as :class:`Groups`.

    Parameters
    ----------
    executor : InProcess
    prefix : str, optional
        A name for the run's groups (as :class:`Groups`; nothing is kept under it in process).
    """

    def __init__(self, executor, prefix: str | None = None):
        self.executor = executor
        self.prefix = prefix or "local"

    def run(self, fn, rank_args, *, workers=None, timeout: float = 60.0, name: str = "group",
            options: dict | None = None, reuse: str | None = None) -> list:
        """Run ``fn(group, *rank_args[r])`` on every rank at once; results in rank order."""
        return self.gather(self.submit(fn, rank_args, timeout=timeout, name=name,
                                       options=options))

    def submit(self, fn, rank_args, *, workers=None, timeout: float = 60.0, name: str = "group",
               options: dict | None = None, reuse: str | None = None) -> GroupCall:
        """Run the ranks now (``workers`` and ``reuse`` have no meaning in process); the call,
        finished."""
        size = len(rank_args)
        with local_groups(size, timeout=timeout, **dict(options or {})) as groups:
            results = run_threads(groups, _with_state(self.executor.state(), fn), rank_args)
        return GroupCall([Done(f"{name}-rank{r}", v) for r, v in enumerate(results)],
                         ["local"] * size, name)

    def place(self, n_ranks: int, resources=None):
        """None: every rank runs in this process."""
        return None

    def gather(self, call: GroupCall, result_timeout: float = RESULT_TIMEOUT) -> list:
        """The results of a call (computed at submission)."""
        return self.executor.gather(call.futures)

    def cancel(self, call: GroupCall) -> None:
        """Nothing to cancel: the ranks ran at submission."""

    def release(self) -> None:
        """Nothing kept open between calls in process."""


#: Seconds to wait, after a rank failed, for its peers to fail too: the first error to
#: arrive is often a peer's "went away", the cause comes a moment later.
PEER_GRACE = 2.0


def _raise_failure(futures, failed, not_done, name):
    """Raise the failure of a group: the ranks' own errors first, their peers' echoes
    ("a peer went away", a timeout at a collective) after them."""
    from distributed import wait

    if not_done:
        try:
            more, _ = wait(list(not_done), timeout=PEER_GRACE, return_when="ALL_COMPLETED")
        except Exception:  # noqa: BLE001 (a timeout or a cancellation: report what we have)
            more = ()
        failed = [*failed, *(f for f in more if f.status == "error")]
    excs = [(futures.index(f), f.exception()) for f in failed]
    for _, exc in excs:
        if isinstance(exc, DaskieError) and not isinstance(exc, GroupError):
            raise exc  # deterministic (e.g. TrainingDiverged): a retry cannot help
    excs.sort(key=lambda re: (_echo(re[1]), re[0]))
    rank, first = excs[0]
    others = "".join(f"; rank {r}: {type(e).__name__}: {e}" for r, e in excs[1:])
    raise GroupError(f"group {name}: rank {rank} failed: {type(first).__name__}: {first}"
                     + others) from first


def _echo(exc) -> bool:
    """Whether a rank's error only echoes a peer's failure."""
    text = str(exc)
    return isinstance(exc, GroupError) and ("a peer went away" in text or "timed out" in text)


def _with_state(state, fn):
    def ranked(group, *args):
        with state.current():
            return fn(group, *args)
    return ranked


def run_group(client, fn, rank_args, *, workers=None, timeout: float = 60.0, name: str = "group",
              options: dict | None = None) -> list:
    """Run ``fn(group, *rank_args[r])`` on every rank r at the same time; results in rank order.

    Parameters
    ----------
    client : distributed.Client, "sync" or Executor
        Where the ranks run (``"sync"``: threads of this process).
    fn : callable
        Module-level function (it is pickled to the workers).
    rank_args : list of tuple
        Arguments of each rank; its length is the group size.
    workers : list of str, optional
        Worker addresses to use, one per rank (default: chosen from the cluster).
    timeout : float
        Seconds any collective may wait; the whole group is abandoned when a rank fails.
    name : str
        Prefix of the tasks' keys (shown on the dashboard).
    options : dict, optional
        Extra :class:`~daskie.collectives.Group` options (``method``, ``bucket_mb``, ...).

    Raises
    ------
    GroupError
        When a rank failed or the group did not finish; the first failure is chained.
    """
    return as_executor(client).groups().run(fn, rank_args, workers=workers, timeout=timeout,
                                            name=name, options=options)
