"""Run one function as a group of tasks that talk to each other (SPMD) on a Dask cluster.

:func:`run_group` is how daskie bootstraps a :class:`~daskie.collectives.group.Group`
through Dask: it picks one worker per rank (one rank per worker slot: a rank that waits for
a busy slot would make its peers time out), asks rank 0's worker for a free port at run
time, and submits one task per rank, pinned to its worker (``workers=[addr]``,
``allow_other_workers=False``, ``pure=False``). Each task joins the group, runs
``fn(group, *args)`` and returns its result.

Nothing hangs: when any rank fails (its worker died, a peer timed out) the other tasks are
cancelled and :class:`~daskie.collectives.group.GroupError` is raised within the group's
``timeout``; callers restart from their last checkpoint (the SPMD strategies retry the
window with a fresh group on the workers alive then).

With ``client="sync"`` (or None) the ranks run as threads of this process: the same
numbers, no cluster.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from daskie.collectives.group import Group, GroupError, free_port, local_groups, run_threads
from daskie.errors import DaskieError, PlanError

__all__ = ["run_group", "submit_group", "gather_group", "cancel_group", "GroupCall",
           "group_workers", "cluster_workers", "release_groups"]


def _host(address: str) -> str:
    """``tcp://10.0.0.5:4321`` -> ``10.0.0.5``."""
    hostport = address.split("://", 1)[-1]
    return hostport.rsplit(":", 1)[0].strip("[]")


def _free_port_here(dask_worker=None) -> int:
    return free_port(_host(dask_worker.address) if dask_worker is not None else "127.0.0.1")


#: Groups kept open between calls of :func:`run_group` with the same ``reuse`` key, in each
#: worker process: ``(reuse key, rank) -> Group`` (oldest dropped beyond ``_KEEP``).
_GROUPS: dict = {}
_KEEP = 8


def _rank_main(fn, rank, size, host, port, timeout, options, args, reuse=None):
    from distributed import get_worker

    me = _host(get_worker().address)
    # a group is taken out of the cache while in use: one that failed is never reused
    group = _GROUPS.pop((reuse, rank), None) if reuse is not None else None
    if group is None:
        group = Group(rank, size, host, port, timeout=timeout, local_host=me, **options)
    else:
        group.reset()
    kept = False
    try:
        out = fn(group, *args)
        if reuse is not None:
            _GROUPS[(reuse, rank)] = group
            kept = True
            while len(_GROUPS) > _KEEP:
                _GROUPS.pop(next(iter(_GROUPS))).close()
        return out
    finally:
        if not kept:
            group.close()


def _close_groups(prefix: str) -> int:
    """Close and drop this worker's cached groups whose reuse key starts with ``prefix``."""
    keys = [k for k in _GROUPS if str(k[0]).startswith(prefix)]
    for k in keys:
        _GROUPS.pop(k).close()
    return len(keys)


def release_groups(client, prefix: str) -> None:
    """Close the groups that :func:`run_group` kept open under reuse keys starting with
    ``prefix`` on every worker of ``client`` (call it when a run ends)."""
    if client is None or client == "sync":
        return
    for key in [k for k in _PORTS if str(k[0]).startswith(prefix)]:
        _PORTS.pop(key)
    try:
        client.run(_close_groups, prefix)
    except (OSError, TimeoutError):  # a worker that is gone has nothing left open
        pass


#: Client side: ``(reuse key, workers) -> port`` of the groups kept open.
_PORTS: dict = {}


def cluster_workers(client) -> dict:
    """``{address: info}`` of every worker of ``client``'s cluster, fetched from the scheduler.

    Not ``client.scheduler_info()["workers"]``: the client's periodic refresh replaces that
    cached dict with one that has no workers, and a read racing it found none (seen once in
    about a hundred windows).
    """
    return dict(client.sync(client.scheduler.identity, n_workers=-1)["workers"])


def group_workers(client, size: int, workers=None) -> list[str]:
    """Addresses of ``size`` workers, one per rank, each with a free thread.

    Raises :class:`~daskie.errors.PlanError` when the cluster has fewer workers than ranks.
    """
    info = cluster_workers(client)
    if workers is not None:
        missing = [w for w in workers if w not in info]
        if missing:
            raise PlanError(f"workers {missing} are not in the cluster")
        pool = list(workers)
    else:
        pool = sorted(info, key=lambda a: (info[a].get("name", a).__str__(), a))
    if len(pool) < size:
        raise PlanError(f"a group of {size} ranks needs {size} workers (one rank per worker), "
                        f"the cluster has {len(pool)}")
    return pool[:size]


def run_group(client, fn, rank_args, *, workers=None, timeout: float = 60.0, name: str = "group",
              options: dict | None = None, reuse: str | None = None):
    """Run ``fn(group, *rank_args[r])`` on every rank r at the same time; results in rank order.

    Parameters
    ----------
    client : distributed.Client, "sync" or None
        Where the ranks run (``"sync"``/None: threads of this process).
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
        Extra :class:`Group` options (``method``, ``bucket_mb``, ``chunk_mb``).
    reuse : str, optional
        Keep the group open on its workers after the call, and reuse it in the next call
        with the same key on the same workers (no new rendezvous: a bootstrap cost 15-20 ms
        here, with outliers of 0.7 s when a rank reached the store before rank 0 served
        it). Use a new key after a failure, and :func:`release_groups` at the end. The
        group's log and fp16 error feedback are reset at every call.

    Raises
    ------
    GroupError
        When a rank failed or the group did not finish; the first failure is chained.
    """
    size = len(rank_args)
    options = dict(options or {})
    if client is None or client == "sync":
        with local_groups(size, timeout=timeout, **options) as groups:
            return run_threads(groups, fn, rank_args)
    return gather_group(client, submit_group(client, fn, rank_args, workers=workers,
                                             timeout=timeout, name=name, options=options,
                                             reuse=reuse))


@dataclass
class GroupCall:
    """A submitted group (:func:`submit_group`): one future per rank, in rank order."""

    futures: list
    addrs: list
    name: str
    cache_key: tuple | None = None


def submit_group(client, fn, rank_args, *, workers=None, timeout: float = 60.0,
                 name: str = "group", options: dict | None = None,
                 reuse: str | None = None) -> GroupCall:
    """Submit the ranks of :func:`run_group` without waiting; :func:`gather_group` waits.

    A rank's arguments may hold futures (of an earlier call's ranks, for example): the rank
    starts when they are done, so a chain of calls with ``reuse`` runs back to back on the
    workers while the client is still busy with an earlier result.
    """
    addrs = group_workers(client, len(rank_args), workers)
    host = _host(addrs[0])
    cache_key = None if reuse is None else (reuse, tuple(addrs))
    port = _PORTS.get(cache_key) if cache_key is not None else None
    if port is None:
        port = client.run(_free_port_here, workers=[addrs[0]])[addrs[0]]
    if cache_key is not None:
        _PORTS[cache_key] = port  # the next call with this key joins the same group
    worker_key = None if reuse is None else f"{reuse}@{port}"
    tag = uuid.uuid4().hex[:8]
    size = len(rank_args)
    futures = [client.submit(_rank_main, fn, r, size, host, port, timeout, dict(options or {}),
                             rank_args[r], worker_key, key=f"{name}-rank{r}-{tag}",
                             workers=[addrs[r]], allow_other_workers=False, pure=False)
               for r in range(size)]
    return GroupCall(futures, addrs, name, cache_key)


def cancel_group(client, call: GroupCall) -> None:
    """Cancel a submitted group and forget its kept port."""
    client.cancel(call.futures, force=True)
    if call.cache_key is not None:
        _PORTS.pop(call.cache_key, None)


def gather_group(client, call: GroupCall) -> list:
    """Wait for a submitted group; results in rank order (see :func:`run_group`)."""
    from distributed import wait
    from distributed.client import FuturesCancelledError

    futures, addrs, name = call.futures, call.addrs, call.name
    # No deadline on the whole function (a window may train for hours): every collective
    # inside is bounded by `timeout`, a rank that cannot start (its worker died) leaves its
    # peers failing at the rendezvous or their next collective, and a worker that leaves the
    # cluster is noticed here within a second.
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
            for f in done:
                if f.status == "error":
                    exc = f.exception()
                    if isinstance(exc, DaskieError) and not isinstance(exc, GroupError):
                        raise exc  # deterministic (e.g. TrainingDiverged): a retry cannot help
                    raise GroupError(f"group {name}: rank {futures.index(f)} failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
            pending = list(not_done)
            if pending:
                alive = cluster_workers(client)
                lost = [r for r, a in enumerate(addrs) if a not in alive
                        and futures[r] in pending]
                if lost:
                    raise GroupError(f"group {name}: the workers of ranks {lost} left the cluster")
        return client.gather(futures)
    except BaseException:
        cancel_group(client, call)
        raise
