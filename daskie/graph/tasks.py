"""The functions that run inside Dask tasks. Each is a pure function of its arguments."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace

import torch

from daskie.profiler import WindowProfiler
from daskie.train.loop import TrainState, advance
from daskie.train.objective import Objective

__all__ = ["RunContext", "WindowOutput", "init_task", "window_task", "polish_task"]


@dataclass(frozen=True, eq=False)
class RunContext:
    """Everything a task needs besides its inputs; shipped to each worker once.

    Attributes
    ----------
    problem, formulation, optimizer : the run's objects
    seed : int
    target_loss : float
    threads : int or None
        torch threads inside tasks (None: leave torch's default).
    token : str
        Deterministic identity of the run (graph keys and the per-process cache use it).
    """

    problem: object
    formulation: object
    optimizer: object
    seed: int
    target_loss: float
    threads: int | None
    token: str
    eval_every: int = 0


@dataclass
class WindowOutput:
    """What a window task returns: the group's state, its parameters and its records."""

    group: int
    state: TrainState
    params: dict
    records: list = field(default_factory=list)
    joint_loss: float = float("nan")


_CACHE: "OrderedDict[str, Objective]" = OrderedDict()


def objective_for(ctx: RunContext, shard=None) -> Objective:
    """The objective of ``ctx`` (of data shard ``shard=(k, n)`` when given), built once per
    process (discretizing is not free)."""
    key = (ctx.token, None if shard is None else tuple(shard))
    obj = _CACHE.get(key)
    if obj is None:
        # user formulations may not know shards: ask for one only when sharding
        extra = {} if shard is None else {"shard": shard}
        disc = ctx.formulation.discretize(ctx.problem, seed=ctx.seed, **extra)
        obj = Objective(disc)
        _CACHE[key] = obj
        while len(_CACHE) > 8:
            _CACHE.popitem(last=False)
    return obj


def _setup(ctx):
    if ctx.threads is not None and torch.get_num_threads() != ctx.threads:
        torch.set_num_threads(ctx.threads)


def _where() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def init_task(ctx: RunContext, group: int, names: tuple[str, ...]) -> WindowOutput:
    """Initial parameters of one group (the same numbers whatever the grouping)."""
    full = objective_for(ctx)
    params = full.layout.split(full.init_params(ctx.seed))
    mine = {n: params[n].clone() for n in names}
    theta = torch.cat([mine[n] for n in names])
    return WindowOutput(group, TrainState(theta=theta), mine)


def merge_params(outputs) -> dict:
    """The parameters of every sub-model, from the outputs of the groups of one window."""
    params = {}
    for out in outputs:
        params.update(out.params)
    return params


def window_task(ctx: RunContext, window: int, group: int, names: tuple[str, ...], steps: int,
                own: WindowOutput, *others: WindowOutput) -> WindowOutput:
    """Advance group ``group`` by ``steps`` optimizer steps with the other groups frozen.

    ``own`` is this group's previous output, ``others`` the latest outputs of the groups it
    reads. When the joint loss of those inputs is already below the target the window
    passes its input through unchanged.
    """
    profiler = WindowProfiler(ctx.token, window, group, "+".join(names))
    _setup(ctx)
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
    extra = {"window": window, "group": group, "submodels": "+".join(names), "worker": _where()}
    state, records = advance(obj, ctx.optimizer, state, steps, target_loss=ctx.target_loss,
                             eval_every=ctx.eval_every if "mu" in names else 0,
                             record_extra=extra, final_mse="mu" in obj.layout.names or "mu" in frozen,
                             callback=profiler.step)
    profiler.finish(records, obj, state.theta)
    params = {n: v.clone() for n, v in obj.layout.split(state.theta).items()}
    return WindowOutput(group, state, params, records, joint)


def polish_task(ctx: RunContext, steps: int, *outputs: WindowOutput) -> WindowOutput:
    """Joint training of all sub-models, started from the windows' final parameters."""
    _setup(ctx)
    full = objective_for(ctx)
    profiler = WindowProfiler(ctx.token, -1, -1, "+".join(full.layout.names))
    params = merge_params(outputs)
    epoch = max(o.state.epoch for o in outputs)
    state = TrainState(theta=full.layout.join(params), epoch=epoch,
                       wall_s=max(o.state.wall_s for o in outputs))
    extra = {"window": -1, "group": -1, "submodels": "+".join(full.layout.names), "worker": _where()}
    last = replace(ctx.optimizer.stages()[-1], steps=steps)
    state, records = advance(full, last, state, steps, target_loss=ctx.target_loss,
                             record_extra=extra, callback=profiler.step)
    profiler.finish(records, full, state.theta)
    return WindowOutput(-1, state, {n: v.clone() for n, v in full.layout.split(state.theta).items()},
                        records)
