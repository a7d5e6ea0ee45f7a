"""Strategies whose windows are groups of tasks running at the same time (SPMD).

A window is one :func:`daskie.collectives.run_group` call: one task per rank, pinned to its
own worker, the ranks exchanging data every step through a :class:`~daskie.collectives.Group`.
Every rank runs the same optimizer on an objective that presents the whole problem
(:mod:`daskie.train.collective`), so the result is the one-process training up to rounding:

* :class:`DataParallel` — collocation rows sharded over the ranks (sums by all-reduce);
* ``CEPTF(order="joint")`` — sub-models placed on the ranks by the Plan (values exchanged
  by all-gather, exact joint gradient); see :class:`~daskie.strategies.base.CEPTF`.

Windows are pure functions of their input state: when a rank fails (its worker died, a peer
timed out) the window is run again, with a fresh group on the workers alive then, from the
same input, up to ``retries`` times — so a run that lost a worker ends with the numbers of an
undisturbed one.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass

import torch

from daskie.errors import DaskieError, PlanError, SpecError, check_int
from daskie.graph.tasks import WindowOutput, _setup, _where, objective_for
from daskie.profiler import WindowProfiler
from daskie.strategies.base import Strategy
from daskie.train.loop import TrainState, advance

__all__ = ["DataParallel", "run_spmd_windows"]

log = logging.getLogger("daskie.runtime")


def _check_spmd_options(owner, timeout, retries, method, compress):
    from daskie.collectives import METHODS

    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise SpecError(f"{owner}.timeout must be a positive number of seconds, got {timeout!r}")
    check_int(f"{owner}.retries", retries, 0)
    if method not in METHODS:
        raise SpecError(f"{owner}.method must be one of {METHODS}, got {method!r}")
    if compress not in (None, "fp16"):
        raise SpecError(f"{owner}.compress must be None or 'fp16', got {compress!r}")


def _rank_window(group, ctx, kind, owners, state, steps, window, shards=1, lm_split="rows",
                 balance=False):
    """One rank's part of one window (runs inside the rank's task). ``state`` is the
    window's input state, or this rank's output ``(state, records)`` of the previous window
    (windows submitted ahead)."""
    from daskie.train.collective import PartitionedObjective, ShardedObjective, balanced_pieces

    if isinstance(state, tuple):
        state = state[0]

    _setup(ctx)
    if kind == "data":
        obj = ShardedObjective(objective_for(ctx, shard=(group.rank, group.size)), group)
        label = f"shard{group.rank}/{group.size}"
    else:
        rows = None
        if lm_split == "rows":
            rows = ShardedObjective(objective_for(ctx, shard=(group.rank, group.size)), group)
        local = objective_for(ctx)
        if balance:
            pieces = balanced_pieces(local.disc, owners, group.size)
            obj = PartitionedObjective(local, group, owners, shards, rows=rows, pieces=pieces)
            label = "+".join(f"{k}[{lo}:{hi}]" for k, lo, hi in pieces[group.rank]) or "-"
        else:
            obj = PartitionedObjective(local, group, owners, shards, rows=rows)
            label = "+".join(owners[group.rank // shards]) or "-"
            if shards > 1:
                label += f" shard{group.rank % shards}/{shards}"
    profiler = WindowProfiler(ctx.token, window, group.rank, label)
    extra = {"window": window, "group": 0, "rank": group.rank, "submodels": label,
             "worker": _where()}
    state, records = advance(obj, ctx.optimizer, state, steps, target_loss=ctx.target_loss,
                             eval_every=ctx.eval_every, record_extra=extra,
                             callback=profiler.step)
    profiler.add_sync(group.sync_s)
    profiler.finish(records)
    if records:
        records[-1]["sync_ops"] = len(group.log)
    return state, records


def run_spmd_windows(strategy, ctx, client, kind, n_ranks, *, owners=None, resume=None,
                     on_window=None, resources=None, shards=1, replan=None):
    """Run a training as a chain of SPMD windows; returns the final outputs (one item).

    Parameters
    ----------
    strategy : Strategy
        Supplies ``window``, ``timeout``, ``retries``, ``method`` and ``compress``.
    ctx : RunContext
    client : distributed.Client or "sync"
    kind : str
        ``"data"`` (row shards) or ``"model"`` (sub-models per rank, ``owners``).
    n_ranks : int
        Ranks of each window's group.
    resume : (k, outputs), optional
        The last completed window to continue from.
    on_window : callable, optional
        ``on_window(k, outputs)`` after each window.
    resources : list of str, optional
        Resource tag per rank (``"GPU"`` ranks go to GPU-tagged workers).
    replan : callable, optional
        ``replan(per_rank_records) -> (owners, resources)`` after each window: the next
        window's placement (the numbers do not depend on it).
    """
    from daskie.collectives import release_groups

    # One group serves every window until a failure (then a fresh one): no rendezvous per
    # window. Closed on the workers when the run ends, however it ends.
    base = f"daskie-{ctx.token[:12]}-{uuid.uuid4().hex[:8]}"
    try:
        return _windows(strategy, ctx, client, kind, n_ranks, owners, resume, on_window,
                        resources, shards, replan, base)
    finally:
        release_groups(client, base)


def _windows(strategy, ctx, client, kind, n_ranks, owners, resume, on_window, resources, shards,
             replan, base):
    from daskie.collectives import GroupError, cancel_group, gather_group, run_group, submit_group

    full = objective_for(ctx)
    balance = getattr(strategy, "balance", False) and kind == "model" and \
        len({r or "CPU" for r in (resources or [None])}) == 1
    if getattr(strategy, "balance", False) and kind == "model" and not balance:
        log.info("%s: ranks with different resources keep whole sub-models (no balance)",
                 strategy.label)
    if resume is not None:
        k, outs = resume
        state, k = outs[0].state, k + 1
    else:
        state, k = TrainState(theta=full.init_params(ctx.seed)), 0
    total = ctx.optimizer.steps
    final = None if resume is None else resume[1]
    options = {"method": strategy.method, "compress": strategy.compress}
    generation = 0
    lm_split = getattr(strategy, "lm_split", "rows")
    # On a cluster the next window is submitted before this one ends, its ranks taking
    # this window's rank outputs (futures) as input: the workers go on at once while the
    # client checks and stores this window. Not with replan (it needs this window's times).
    lookahead = client not in (None, "sync") and replan is None
    ahead = None  # (k, call) of a window submitted on the previous window's futures

    def window_steps(epoch):
        return min(strategy.window or total, total - epoch)

    def rank_args(k_, inputs, steps_):
        return [(ctx, kind, owners, inputs[r], steps_, k_, shards, lm_split, balance)
                for r in range(n_ranks)]

    def submit(k_, inputs, steps_, workers_):
        return submit_group(client, _rank_window, rank_args(k_, inputs, steps_), workers=workers_,
                            timeout=strategy.timeout, name=f"{strategy.label}-w{k_:05d}",
                            options=options, reuse=f"{base}-g{generation}")

    try:
        while state.done is None and state.epoch < total:
            steps = window_steps(state.epoch)
            for attempt in range(strategy.retries + 1):
                try:
                    if client in (None, "sync"):
                        results = run_group(client, _rank_window,
                                            rank_args(k, [state] * n_ranks, steps),
                                            timeout=strategy.timeout, options=options)
                        break
                    if ahead is not None and ahead[0] == k and attempt == 0:
                        call = ahead[1]
                    else:
                        client.wait_for_workers(n_ranks, timeout=max(60.0, strategy.timeout))
                        call = submit(k, [state] * n_ranks, steps,
                                      _pick_workers(client, n_ranks, resources))
                    ahead = None
                    nxt = state.epoch + steps
                    if lookahead and nxt < total:
                        try:
                            ahead = (k + 1, submit(k + 1, call.futures, window_steps(nxt),
                                                   call.addrs))
                        except (PlanError, OSError) as exc:  # a worker left: no look-ahead
                            log.info("window %d not submitted ahead: %s", k + 1, exc)
                    results = gather_group(client, call)
                    break
                except (GroupError, TimeoutError, OSError) as exc:
                    if ahead is not None:
                        cancel_group(client, ahead[1])
                        ahead = None
                    generation += 1
                    if attempt == strategy.retries:
                        raise GroupError(f"window {k} failed {attempt + 1} times; the last "
                                         f"completed window is {k - 1}: {exc}") from exc
                    log.warning("window %d: %s; running it again from its input (attempt %d "
                                "of %d)", k, exc, attempt + 2, strategy.retries + 1)
            states = [s for s, _ in results]
            for r, s in enumerate(states[1:], 1):
                if not torch.equal(s.theta, states[0].theta):
                    raise DaskieError(f"window {k}: rank {r} ended with other parameters than "
                                      "rank 0 (the ranks must take identical steps)")
            state, records = states[0], results[0][1]
            if records:
                records[-1]["attempts"] = attempt + 1
                records[-1]["sync_s_max"] = max(rec[-1].get("sync_s", 0.0)
                                                for _, rec in results if rec)
            if replan is not None:
                owners, resources = replan([rec for _, rec in results])
                if records:
                    records[-1]["placement"] = " | ".join("+".join(o) for o in owners)
            params = {n: v.clone() for n, v in full.layout.split(state.theta).items()}
            final = [WindowOutput(0, state, params, records)]
            if on_window is not None:
                on_window(k, final)
            k += 1
    finally:
        if ahead is not None:  # the run ended (target, error) with a window still ahead
            cancel_group(client, ahead[1])
    return final


def _pick_workers(client, n_ranks, resources):
    """One worker per rank; ranks tagged with a resource go to workers that declare it."""
    from daskie.collectives import cluster_workers, group_workers

    if not resources or all(r in (None, "CPU") for r in resources):
        return group_workers(client, n_ranks)
    info = cluster_workers(client)
    free = sorted(info)
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


@dataclass(frozen=True)
class DataParallel(Strategy):
    """Data-parallel training: collocation rows sharded over workers, sums by all-reduce.

    Each rank discretizes data shard k of n of every residual block
    (``formulation.discretize(problem, shard=(k, n))``); every step the ranks all-reduce
    the loss and gradient (first-order optimizers) or the Gauss-Newton normal equations
    ``J_k^T J_k``, ``J_k^T r_k`` (Levenberg-Marquardt) and take the same step. Memory per
    worker falls with the number of shards (each holds ``N / n`` Jacobian rows).

    Parameters
    ----------
    shards : int or None
        Ranks (one per worker). None: every worker of the cluster (2 in-process).
    window : int or None
        Optimizer steps per window (a checkpoint, and the unit re-run after a failure);
        None: the whole training is one window.
    method : str
        All-reduce method (:data:`daskie.collectives.METHODS`).
    compress : str or None
        ``"fp16"``: half-precision all-reduce payloads with error feedback.
    timeout : float
        Seconds a collective may wait for a peer before the window fails.
    retries : int
        Times a failed window is run again (fresh group, same input) before giving up.
    """

    shards: int | None = None
    window: int | None = 50
    method: str = "gloo"
    compress: str | None = None
    timeout: float = 120.0
    retries: int = 2

    def __post_init__(self):
        check_int("DataParallel.shards", self.shards, allow_none=True)
        check_int("DataParallel.window", self.window, allow_none=True)
        _check_spmd_options("DataParallel", self.timeout, self.retries, self.method, self.compress)

    @property
    def label(self) -> str:
        return "data-parallel"

    def groups(self, disc, plan):
        return (tuple(disc.submodels),)

    def ranks(self, client) -> int:
        """Number of shards on ``client``."""
        if self.shards is not None:
            return self.shards
        if client in (None, "sync"):
            return 2
        from daskie.collectives import cluster_workers

        return len(cluster_workers(client))

    def execute(self, ctx, groups, plan, client, *, available=frozenset(), resume=None,
                on_window=None):
        """Run the windows (see :func:`run_spmd_windows`)."""
        return run_spmd_windows(self, ctx, client, "data", self.ranks(client), resume=resume,
                                on_window=on_window)


def joint_ceptf(strategy, ctx, groups, plan, client, *, resume=None, on_window=None):
    """``CEPTF(order="joint")``: the Plan's groups (each over ``strategy.shards`` workers) as
    the ranks of one SPMD group per window."""
    from daskie.train.optimizers import LevenbergMarquardt

    shards = strategy.shards
    if shards > 1 and strategy.lm_split == "columns" and \
            any(isinstance(s, LevenbergMarquardt) for s in ctx.optimizer.stages()):
        raise SpecError("CEPTF.shards > 1 with Levenberg-Marquardt needs lm_split='rows' (the "
                        "column split gathers whole Jacobian columns per group)")
    def tags(p):
        return None if p is None else [g.resource for g in p.groups for _ in range(shards)]

    current = {"plan": plan}

    def replan(per_rank):
        """Re-pack the groups by each rank's measured compute time per step."""
        from daskie.plan.planner import rebalance

        times = {}
        for r, recs in enumerate(per_rank):
            if recs and "window_s" in recs[-1]:
                compute = recs[-1]["window_s"] - recs[-1].get("sync_s", 0.0)
                g = r // shards
                times[g] = times.get(g, 0.0) + max(compute, 1e-9) / len(recs) / shards
        if len(times) == len(current["plan"].groups):
            current["plan"] = rebalance(current["plan"], times)
        p = current["plan"]
        return tuple(g.submodels for g in p.groups), tags(p)

    use_replan = getattr(strategy, "rebalance", False) and plan is not None
    return run_spmd_windows(strategy, ctx, client, "model", len(groups) * shards, owners=groups,
                            resume=resume, on_window=on_window, resources=tags(plan),
                            shards=shards, replan=replan if use_replan else None)
