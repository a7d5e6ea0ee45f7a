"""The window-graph runner: a strategy and a Plan become a Dask graph of training windows.

Every task is one training window of one group of sub-models (:func:`window_task`), a pure
function of its inputs: windows are checkpoints, resume points and the unit Dask recomputes
after a fault. Keys are deterministic
(``window-<k>-g<g>-<token>``, the token from ``dask.base.tokenize`` of the run's
description), resource tags come only from the Plan (applied with ``dask.annotate``), and
the same graph runs on a distributed ``Client`` or in-process with the synchronous
scheduler (an :class:`~daskie.runtime.executor.InProcess` executor) -- which is how the
tests check that both give the same numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import dask
import torch
from dask import delayed

from daskie import records as kinds
from daskie.runtime.context import RunContext, WindowOutput, merge_params, objective_for, torch_threads
from daskie.runtime.devices import require_device
from daskie.runtime.profiler import WindowProfiler
from daskie.runtime.state import where
from daskie.train.loop import TrainState, advance
from daskie.train.objective import Objective

__all__ = ["WindowGraph", "build", "run", "execute", "init_task", "window_task",
           "polish_task"]


@dataclass
class WindowGraph:
    """Delayed window tasks, window by window, and the optional polish task.

    ``windows`` is the whole chain (per window, per group: a Delayed) from window ``start``
    on; ``first`` the outputs it starts from (the initial tasks, or a resumed window's).
    """

    windows: list
    polish: object | None
    groups: tuple
    start: int
    first: list


def _tag(plan, g) -> str:
    return plan.groups[g].resource if plan is not None else "CPU"


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


def build(strategy, ctx: RunContext, groups, plan, *, total_steps: int, available=frozenset(),
          resume=None, workers=None) -> WindowGraph:
    """Delayed graph of all windows (from ``resume``'s window on) and the polish task."""
    step = strategy.window or (total_steps + 1)
    n_windows = max(1, math.ceil(total_steps / step))
    ctx_d = delayed(ctx, name=f"context-{ctx.token}")

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
    return WindowGraph(windows, make_polish(prev), tuple(groups), start, first)


def _chain(strategy, ctx, groups, plan, available, step, total_steps, start, n_windows, resume,
           workers=None):
    """All windows as one HighLevelGraph (one layer per group, carrying the group's resource
    annotation), in time linear in the number of tasks: chaining ``delayed`` calls instead
    merges every input's whole graph at each call (quadratic in the number of windows).
    Returns, per window, the Delayed of each group."""
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
            per_group[g][cur[g]] = (window_task, ctx_key, k, g, list(names), _tag(plan, g), steps,
                                    prev[g], *reads)
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


def run(graph: WindowGraph, executor, *, on_window=None):
    """Execute ``graph`` window by window on ``executor``.

    ``on_window(k, outputs)`` is called after each window completes (checkpoints, progress);
    it runs on the client, in window order, and not for the windows after the training
    ended (they hand their input on unchanged). Returns the final outputs (one per group, or the
    polish output) and the wall time. The executor computes the windows
    (:meth:`~daskie.runtime.executor.Executor.stream`): in process, one after another with the
    synchronous scheduler; on a cluster, all submitted at once and gathered in order.
    """
    t0 = time.perf_counter()
    final = None
    batches = list(graph.windows) + ([[graph.polish]] if graph.polish is not None else [])
    results = executor.stream(batches)
    try:
        for i, outs in enumerate(results):
            if i < len(graph.windows) and on_window is not None and not _passed_through(outs):
                on_window(graph.start + i, outs)
            final = outs
    finally:
        results.close()  # an error in on_window: nothing left running
    if final is None:  # nothing left to train (resumed after the last window)
        final = list(graph.first)
    return final, time.perf_counter() - t0


def _passed_through(outputs) -> bool:
    """True for a window after the training ended (every group done, no step taken): it
    hands its input on unchanged, so there is nothing to report or checkpoint."""
    return all(o.state.done is not None and not o.records for o in outputs)


def init_task(ctx: RunContext, group: int, names: tuple[str, ...]) -> WindowOutput:
    """Initial parameters of one group (the same numbers whatever the grouping)."""
    full = objective_for(ctx)
    params = full.layout.split(full.init_params(ctx.seed))
    mine = {n: params[n].clone() for n in names}
    theta = torch.cat([mine[n] for n in names])
    return WindowOutput(group, TrainState(theta=theta), mine)


def window_task(ctx: RunContext, window: int, group: int, names: tuple[str, ...], resource: str,
                steps: int, own: WindowOutput, *others: WindowOutput) -> WindowOutput:
    """Advance group ``group`` by ``steps`` optimizer steps with the other groups frozen.

    ``own`` is this group's previous output, ``others`` the latest outputs of the groups it
    reads. When the joint loss of those inputs is already below the target the window
    passes its input through unchanged. ``resource`` is the group's tag in the Plan: a
    ``GPU`` window on a worker without CUDA fails at once (:func:`require_device`).
    """
    require_device(resource, f"window {window} of group {group} ({'+'.join(names)})")
    with torch_threads(ctx.threads):
        return _window(ctx, window, group, names, steps, own, others)


def _window(ctx, window, group, names, steps, own, others):
    profiler = WindowProfiler(ctx.token, window, group, "+".join(names))
    full = objective_for(ctx)
    frozen = merge_params(others)
    state = own.state
    if len(names) == len(full.layout.names):
        obj = full
    else:
        obj = Objective(full.disc, trainable=names, frozen={**frozen, **own.params})
    joint = float("nan")
    if len(names) < len(full.layout.names) and len(frozen) + len(own.params) == len(full.layout.names):
        with torch.no_grad():
            joint = float(full.loss(full.layout.join({**frozen, **own.params})))
        if joint < ctx.target_loss and state.done is None:
            state = TrainState(**{**vars(state), "done": "target"})
    if state.done is not None:
        return WindowOutput(group, state, own.params, [], joint)
    extra = {"kind": kinds.STEP, "window": window, "group": group, "submodels": "+".join(names),
             "worker": where()}
    state, records = advance(obj, ctx.optimizer, state, steps, target_loss=ctx.target_loss,
                             eval_every=ctx.eval_every if "mu" in names else 0,
                             record_extra=extra, final_mse="mu" in obj.layout.names or "mu" in frozen,
                             callback=profiler.step)
    profiler.finish(records, obj, state.theta)
    params = {n: v.clone() for n, v in obj.layout.split(state.theta).items()}
    return WindowOutput(group, state, params, records, joint)


def polish_task(ctx: RunContext, steps: int, *outputs: WindowOutput) -> WindowOutput:
    """Joint training of all sub-models, started from the windows' final parameters."""
    with torch_threads(ctx.threads):
        return _polish(ctx, steps, outputs)


def _polish(ctx, steps, outputs):
    full = objective_for(ctx)
    profiler = WindowProfiler(ctx.token, -1, -1, "+".join(full.layout.names))
    params = merge_params(outputs)
    epoch = max(o.state.epoch for o in outputs)
    state = TrainState(theta=full.layout.join(params), epoch=epoch,
                       wall_s=max(o.state.wall_s for o in outputs))
    extra = {"kind": kinds.POLISH, "window": -1, "submodels": "+".join(full.layout.names),
             "worker": where()}
    last = replace(ctx.optimizer.stages()[-1], steps=steps)
    state, records = advance(full, last, state, steps, target_loss=ctx.target_loss,
                             record_extra=extra, callback=profiler.step)
    profiler.finish(records, full, state.theta)
    return WindowOutput(-1, state, {n: v.clone() for n, v in full.layout.split(state.theta).items()},
                        records)


def execute(strategy, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
    """Build the window graph of ``strategy`` and run it on ``executor``; the final outputs.

    ``start`` (flat initial parameters) becomes the outputs of a "window -1" that the first
    window reads instead of the seeded ``init_task``s."""
    if start is not None and resume is None:
        params = objective_for(ctx).layout.split(start.detach())
        resume = (-1, [WindowOutput(g, TrainState(theta=torch.cat([params[n] for n in names])),
                                    {n: params[n].clone() for n in names})
                       for g, names in enumerate(groups)])
    available = executor.resources()
    workers = sorted(executor.workers())
    graph = build(strategy, ctx, groups, plan, total_steps=ctx.optimizer.steps,
                  available=available, resume=resume, workers=workers)
    final, _ = run(graph, executor, on_window=on_window)
    return final
