"""Turn a strategy and a Plan into a Dask graph of training windows, and run it.

Every task is one training window of one group of sub-models. Keys are deterministic
(``window-<k>-g<g>-<token>``, the token from ``dask.base.tokenize`` of the run's
description), resource tags come only from the Plan (applied with ``dask.annotate``), and
the same graph runs on a distributed ``Client`` or in-process with the synchronous
scheduler — which is how the tests check that both give the same numbers.
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass

import dask
from dask import delayed

from daskie.errors import PlanError
from daskie.graph.tasks import RunContext, init_task, polish_task, window_task

__all__ = ["WindowGraph", "build", "run", "check_resources", "run_token"]


def run_token(*parts) -> str:
    """Deterministic token of a run (same problem + plan + options + seed -> same keys)."""
    return dask.base.tokenize(*[repr(p) for p in parts])


@dataclass
class WindowGraph:
    """Delayed window tasks, window by window, and the optional polish task.

    ``make_window(k, prev)`` builds window ``k``'s tasks from the previous window's outputs
    (delayed or concrete); ``windows`` is the whole chain built from the start.
    """

    windows: list  # per window, per group: Delayed
    polish: object | None
    groups: tuple
    start: int
    first: list
    make_window: object
    make_polish: object


def _resources(plan, g, available):
    tag = plan.groups[g].resource if plan is not None else "CPU"
    if tag in available:
        return {tag: 1}
    return None


def _annotations(plan, g, available, workers):
    """Resource tag of group g (a hard restriction) and, given the cluster's workers, a
    preferred worker per group (loose: Dask may move it), so that the groups of one window
    start on different workers instead of wherever their shared inputs happen to lie."""
    out = {}
    res = _resources(plan, g, available)
    if res:
        out["resources"] = res
    if workers:
        out["workers"] = [workers[g % len(workers)]]
        out["allow_other_workers"] = True
    return out


def check_resources(plan, client) -> set[str]:
    """Resource names the cluster's workers declare; raise :class:`PlanError` when a Plan's
    tag cannot be met (such a task would otherwise stay pending forever)."""
    from daskie.collectives.spmd import cluster_workers

    workers = cluster_workers(client)
    available = set()
    for w in workers.values():
        available |= {k for k, v in (w.get("resources") or {}).items() if v >= 1}
    if plan is not None:
        for p in plan.groups:
            if p.resource != "CPU" and p.resource not in available:
                raise PlanError(
                    f"the plan places group {p.index} ({'+'.join(p.submodels)}) on a {p.resource} "
                    f"worker, but no worker declares that resource (workers have: "
                    f"{sorted(available) or 'no resources'}); plan with gpus=0 or start workers "
                    f"with --resources {p.resource}=1")
    return available


def build(strategy, ctx: RunContext, groups, plan, *, total_steps: int, available=frozenset(),
          resume=None, workers=None) -> WindowGraph:
    """Delayed graph of all windows (from ``resume``'s window on) and the polish task."""
    step = strategy.window or (total_steps + 1)
    n_windows = max(1, math.ceil(total_steps / step))
    ctx_d = delayed(ctx, name=f"context-{ctx.token}")

    def make_window(k, prev):
        steps = min(step, total_steps - k * step) if strategy.window else step
        cur = []
        for g, names in enumerate(groups):
            if strategy.sequential():
                reads = [cur[h] if h < g else prev[h] for h in strategy.inputs(g, groups, plan)]
            else:
                reads = [prev[h] for h in strategy.inputs(g, groups, plan)]
            with dask.annotate(**_annotations(plan, g, available, workers)):
                cur.append(delayed(window_task, pure=True)(
                    ctx_d, k, g, names, steps, prev[g], *reads,
                    dask_key_name=f"window-{k:05d}-g{g}-{ctx.token}"))
        return cur

    def make_polish(prev):
        if not strategy.polish_steps():
            return None
        return delayed(polish_task, pure=True)(ctx_d, strategy.polish_steps(), *prev,
                                               dask_key_name=f"polish-{ctx.token}")

    if resume is None:
        first = [delayed(init_task, pure=True)(ctx_d, g, names, dask_key_name=f"init-g{g}-{ctx.token}")
                 for g, names in enumerate(groups)]
        start = 0
    else:
        start, outputs = resume
        first = list(outputs)
        start += 1
    windows = _chain(strategy, ctx, groups, plan, available, step, total_steps, start, n_windows,
                     resume, workers)
    prev = windows[-1] if windows else first
    return WindowGraph(windows, make_polish(prev), tuple(groups), start, first, make_window,
                       make_polish)


def _chain(strategy, ctx, groups, plan, available, step, total_steps, start, n_windows, resume,
           workers=None):
    """All windows as one HighLevelGraph (one layer per group, carrying the group's resource
    annotation), in time linear in the number of tasks: chaining ``delayed`` calls instead
    merges every input's whole graph at each call (quadratic in the number of windows).
    Returns, per window, the Delayed of each group; same keys and tasks as ``make_window``."""
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    token = ctx.token
    ctx_key = f"context-{token}"
    base = {ctx_key: ctx}
    if resume is None:
        base.update({f"init-g{g}-{token}": (init_task, ctx_key, g, list(names))
                     for g, names in enumerate(groups)})
        prev = [f"init-g{g}-{token}" for g in range(len(groups))]
    else:
        base.update({f"resume-g{g}-{token}": out for g, out in enumerate(resume[1])})
        prev = [f"resume-g{g}-{token}" for g in range(len(groups))]
    per_group = [{} for _ in groups]
    keys = []
    for k in range(start, n_windows):
        steps = min(step, total_steps - k * step) if strategy.window else step
        cur = [f"window-{k:05d}-g{g}-{token}" for g in range(len(groups))]
        for g, names in enumerate(groups):
            if strategy.sequential():
                reads = [cur[h] if h < g else prev[h] for h in strategy.inputs(g, groups, plan)]
            else:
                reads = [prev[h] for h in strategy.inputs(g, groups, plan)]
            per_group[g][cur[g]] = (window_task, ctx_key, k, g, list(names), steps, prev[g], *reads)
        keys.append(cur)
        prev = cur
    layers = {f"start-{token}": MaterializedLayer(base)}
    names = [f"windows-g{g}-{token}" for g in range(len(groups))]
    deps = {f"start-{token}": set()}
    for g in range(len(groups)):
        with dask.annotate(**_annotations(plan, g, available, workers)):
            layers[names[g]] = MaterializedLayer(per_group[g])
        deps[names[g]] = {f"start-{token}", *names} - {names[g]}
    hlg = HighLevelGraph(layers, deps)
    return [[Delayed(key, hlg, layer=names[g]) for g, key in enumerate(cur)] for cur in keys]


def run(graph: WindowGraph, client, *, on_window=None):
    """Execute ``graph`` window by window; ``client`` is a distributed Client or ``"sync"``.

    ``on_window(k, outputs)`` is called after each window completes (checkpoints, progress);
    it runs on the client, in window order. Returns the final outputs (one per group, or the
    polish output) and the wall time. With ``"sync"`` each window's tasks (the same
    functions and keys) run in this process from the previous window's concrete outputs.
    """
    t0 = time.perf_counter()
    final = None
    if client == "sync":
        prev = graph.first
        if prev and hasattr(prev[0], "dask"):
            prev = list(dask.compute(*prev, scheduler="sync"))
        for i in range(len(graph.windows)):
            k = graph.start + i
            prev = list(dask.compute(*graph.make_window(k, prev), scheduler="sync"))
            if on_window is not None:
                on_window(k, prev)
            final = prev
        polish = graph.make_polish(prev)
        if polish is not None:
            final = [polish.compute(scheduler="sync")]
    else:
        keys = [d for w in graph.windows for d in w] + ([graph.polish] if graph.polish is not None else [])
        futures = client.compute(keys, optimize_graph=False)  # the graph is minimal already
        it = iter(futures)
        per_window = [[next(it) for _ in w] for w in graph.windows]
        polish_f = next(it) if graph.polish is not None else None
        del it
        try:
            for i, fs in enumerate(per_window):
                outs = client.gather(fs)
                if on_window is not None:
                    on_window(graph.start + i, outs)
                final = outs
                if i >= 1:
                    per_window[i - 1] = []  # release what no later task reads
                    futures = None
            if polish_f is not None:
                final = [polish_f.result()]
        except BaseException:
            # A failed or interrupted run must not leave its windows running on the cluster.
            client.cancel([f for fs in per_window for f in fs] + ([polish_f] if polish_f else []))
            raise
    return final, time.perf_counter() - t0


def dump_outputs(window: int, outputs) -> bytes:
    """Serialise a window's outputs (the resume point) for the store."""
    return pickle.dumps({"window": window, "outputs": outputs}, protocol=pickle.HIGHEST_PROTOCOL)


def load_outputs(blob: bytes):
    """Inverse of :func:`dump_outputs`: ``(window, outputs)``."""
    data = pickle.loads(blob)
    return data["window"], data["outputs"]
