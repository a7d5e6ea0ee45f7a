"""The SPMD group runner: training windows whose ranks run at the same time and talk.

A window is one call of a :class:`~daskie.runtime.groups.Groups`: one task per rank, pinned
to its own worker, the ranks exchanging data every step through a
:class:`~daskie.collectives.Group`. Every rank runs the same optimizer on an objective that
presents the whole problem (:mod:`daskie.train.collective`), so the result is the
one-process training up to rounding. The kinds of rank work are types of :class:`RankWork`:

* :class:`DataShards` -- collocation rows sharded over the ranks (sums by all-reduce;
  :class:`~daskie.strategies.DataParallel`);
* :class:`ModelPieces` -- sub-models (or row pieces of them) placed on the ranks by the Plan
  (values by all-gather, the exact joint gradient; :class:`~daskie.strategies.CEPTF`);
* :class:`LayerStages` -- layer ranges of every network on the ranks, activations and their gradients
  sent from stage to stage, GPipe micro-batches, data-parallel replicas of the pipeline
  (:mod:`daskie.runtime.stages`; :class:`~daskie.strategies.ModelParallel`,
  :class:`~daskie.strategies.Pipeline`, :class:`~daskie.strategies.Hybrid`).

One group serves every window of a run until a failure (no rendezvous per window), and on a
cluster each window is submitted before the previous one ends, on its futures. Windows are
pure functions of their input state: when a rank fails -- its worker died, a peer timed out,
or the results went with a dead worker -- the window runs again from the same input on a
fresh group of the workers alive then, up to ``comm.retries`` times; a run that lost a worker
ends with the numbers of an undisturbed one. A lost scheduler ends the run at once with
:class:`~daskie.runtime.executor.SchedulerLost`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from daskie import records as kinds
from daskie.collectives.group import GroupError
from daskie.errors import DaskieError, PlanError
from daskie.runtime.context import WindowOutput, objective_for, torch_threads
from daskie.runtime.devices import require_device
from daskie.runtime.executor import LostResult, SchedulerLost
from daskie.runtime.profiler import WindowProfiler
from daskie.runtime.state import where
from daskie.train.loop import TrainState, advance
from daskie.train.protocols import HasWindowStats

__all__ = ["RankWork", "DataShards", "ModelPieces", "LayerStages", "run_spmd_windows"]

log = logging.getLogger("daskie.runtime")


@dataclass(frozen=True)
class RankWork:
    """What every rank of a window does (the same object for all ranks; each picks its
    share). A type per kind of work: :class:`DataShards`, :class:`ModelPieces`,
    :class:`LayerStages` (and operator learning's
    :class:`~daskie.operator.ranks.BatchedRankWork`)."""

    def objective(self, ctx, group):
        """This rank's objective and a label of what it evaluates."""
        raise NotImplementedError

    def group_of(self, rank: int) -> int:
        """The Plan group rank ``rank`` serves (0 unless the work is split by groups)."""
        return 0

    def joined(self, states, layout):
        """The ranks' end-of-window states as the window's (every rank holds the whole state;
        ``layout()`` gives the parameters' layout where states must be assembled)."""
        return states


@dataclass(frozen=True)
class DataShards(RankWork):
    """Data parallelism: rank r of n evaluates row shard ``(r, n)`` of every residual; the
    gradients (or LM's normal equations) are all-reduced."""

    def objective(self, ctx, group):
        from daskie.train.collective import ShardedObjective

        r, n = group.rank, group.size
        return ShardedObjective(objective_for(ctx, shard=(r, n)), group), f"shard{r}/{n}"


@dataclass(frozen=True)
class ModelPieces(RankWork):
    """CEPTF's model split: the sub-models of each Plan group on its ranks.

    Attributes
    ----------
    owners : tuple of tuple of str
        The sub-models of each Plan group (rank r serves group r // shards).
    shards : int
        Ranks per Plan group.
    lm_split : str
        Levenberg-Marquardt normal equations by ``"rows"`` or ``"columns"``.
    pieces : list, optional
        Each rank's row ranges of every evaluation (balanced placement; computed once on the
        client from the Plan, read by the ranks).
    local_grads : bool
        With whole sub-models and an element-wise optimizer (Adam): no gradient all-reduce
        per step; each rank updates its own parameters and the window's state is assembled
        from every parameter's owner (:func:`assemble`).
    """

    owners: tuple = ()
    shards: int = 1
    lm_split: str = "rows"
    pieces: list | None = None
    local_grads: bool = False

    def objective(self, ctx, group):
        from daskie.train.collective import PartitionedObjective, ShardedObjective

        r, n = group.rank, group.size
        rows = ShardedObjective(objective_for(ctx, shard=(r, n)), group) \
            if self.lm_split == "rows" else None
        local = objective_for(ctx)
        if self.pieces is not None:
            obj = PartitionedObjective(local, group, self.owners, self.shards, rows=rows,
                                       pieces=self.pieces)
            # the sub-models this rank evaluates (a boundary one in part)
            names = dict.fromkeys(local.disc.evaluations[k].submodel for k, _, _ in self.pieces[r])
            return obj, "+".join(names) or "-"
        obj = PartitionedObjective(local, group, self.owners, self.shards, rows=rows,
                                   local_grads=self.local_grads)
        label = "+".join(self.owners[r // self.shards]) or "-"
        if self.shards > 1:
            label += f" shard{r % self.shards}/{self.shards}"
        return obj, label

    def group_of(self, rank: int) -> int:
        return rank // self.shards

    def joined(self, states, layout):
        if not self.local_grads:
            return states
        return [assemble(states, self.owners, layout())] * len(states)


@dataclass(frozen=True)
class LayerStages(RankWork):
    """Model, pipeline and hybrid parallelism: layer ranges of one network per rank.

    Attributes
    ----------
    stages, replicas, micro_batches : int
        Layer stages per replica, data-parallel replicas of the pipeline (rank r is stage
        ``r % stages`` of replica ``r // stages``), GPipe micro-batches.
    """

    stages: int = 1
    replicas: int = 1
    micro_batches: int = 1

    def objective(self, ctx, group):
        from daskie.runtime.stages import StagedObjective

        d = group.rank // self.stages
        shard = (d, self.replicas) if self.replicas > 1 else None
        obj = StagedObjective(objective_for(ctx, shard=shard), group, self.stages,
                              self.replicas, self.micro_batches)
        label = f"stage{obj.stage}/{self.stages}"
        return obj, label + (f" replica{d}/{self.replicas}" if self.replicas > 1 else "")


def _rank_window(group, ctx, work: RankWork, state, steps, window, resource=None):
    """One rank's part of one window (runs inside the rank's task). ``state`` is the
    window's input state, or this rank's output ``(state, records)`` of the previous window
    (windows submitted ahead); ``resource`` the rank's tag (a ``GPU`` rank on a worker
    without CUDA fails at once)."""
    require_device(resource, f"rank {group.rank} of window {window}")
    if isinstance(state, tuple):
        state = state[0]
    with torch_threads(ctx.threads):
        obj, label = work.objective(ctx, group)
        profiler = WindowProfiler(ctx.token, window, group.rank, label)
        extra = {"kind": kinds.STEP, "window": window, "group": work.group_of(group.rank),
                 "rank": group.rank, "submodels": label, "worker": where()}
        state, records = advance(obj, ctx.optimizer, state, steps, target_loss=ctx.target_loss,
                                 eval_every=ctx.eval_every, record_extra=extra,
                                 callback=profiler.step)
        profiler.add_sync(group.sync_s)
        profiler.finish(records)
    if records:
        records[-1]["sync_ops"] = len(group.log)
        if isinstance(obj, HasWindowStats):  # layer stages: bubble, point-to-point traffic
            records[-1].update(obj.window_stats())
    return state, records


def assemble(states, owners, layout) -> TrainState:
    """One state from ranks that each updated only their own sub-models' parameters: every
    tensor the size of the parameter vector (the parameters, an element-wise optimizer's
    moments) is taken slice by slice from the slice's owner; the rest must agree."""
    from dataclasses import replace

    n = layout.total
    spans = [(r, *layout.offsets[name]) for r, own in enumerate(owners) for name in own]

    def merge(values):
        first = values[0]
        if isinstance(first, torch.Tensor) and first.shape == (n,):
            out = first.clone()
            for r, lo, hi in spans:
                out[lo:hi] = values[r][lo:hi]
            return out
        if isinstance(first, dict):
            return {key: merge([v[key] for v in values]) for key in first}
        return first

    return replace(states[0], theta=merge([s.theta for s in states]),
                   opt_state=merge([s.opt_state for s in states]) if states[0].opt_state else
                   states[0].opt_state)


def run_spmd_windows(executor, ctx, work: RankWork, n_ranks: int, comm, *, window=None,
                     resume=None, on_window=None, resources=None, replan=None, start=None):
    """Run a training as a chain of SPMD windows; returns the final outputs (one item).

    Parameters
    ----------
    executor : Executor
    ctx : RunContext
    work : RankWork
    n_ranks : int
        Ranks of each window's group.
    comm : Comm
        ``method``, ``compress``, ``timeout``, ``retries``.
    window : int or None
        Optimizer steps per window (None: the whole training is one window).
    resume : (k, outputs), optional
        The last completed window to continue from.
    on_window : callable, optional
        ``on_window(k, outputs)`` after each window; the outputs' records are every rank's.
    resources : list of str, optional
        Resource tag per rank (``"GPU"`` ranks go to GPU-tagged workers).
    replan : callable, optional
        ``replan(per_rank_records) -> (work, resources)`` after each window: the next
        window's placement (the numbers do not depend on it).
    start : tensor, optional
        Initial parameters (default: the objective's ``init_params(seed)``).
    """
    groups = executor.groups(f"daskie-{ctx.token[:12]}-{id(work):x}")
    try:
        return _Windows(executor, groups, ctx, work, n_ranks, comm, window, on_window,
                        resources, replan).run(resume, start)
    finally:
        groups.release()


class _Windows:
    """The window loop of one run (client side): retries, look-ahead, group generations."""

    def __init__(self, executor, groups, ctx, work, n_ranks, comm, window, on_window, resources,
                 replan):
        self.ex, self.groups, self.ctx, self.work = executor, groups, ctx, work
        self.n, self.comm, self.window = n_ranks, comm, window
        self.on_window, self.resources, self.replan = on_window, resources, replan
        self.total = ctx.optimizer.steps
        self.generation = 0
        self.options = {"method": comm.method, "compress": comm.compress}
        # On a cluster the next window is submitted before this one ends, its ranks taking
        # this window's rank outputs (futures) as input: the workers go on at once while
        # the client checks and stores this window. Not with replan (it needs this
        # window's times), nor where a call runs at submission (in process).
        self.lookahead = executor.in_flight(2) > 1 and replan is None

    def steps(self, epoch):
        return min(self.window or self.total, self.total - epoch)

    def args(self, k, inputs, steps):
        tags = self.resources or [None] * self.n
        return [(self.ctx, self.work, inputs[r], steps, k, tags[r]) for r in range(self.n)]

    def submit(self, k, inputs, steps, workers):
        return self.groups.submit(_rank_window, self.args(k, inputs, steps), workers=workers,
                                  timeout=self.comm.timeout, name=f"w{k:05d}-{self.ctx.token[:8]}",
                                  options=self.options,
                                  reuse=f"{self.groups.prefix}-g{self.generation}")

    def run(self, resume, start):
        full = objective_for(self.ctx)
        if resume is not None:
            k, outs = resume
            state, k, final = outs[0].state, k + 1, resume[1]
        else:
            theta = full.init_params(self.ctx.seed) if start is None else start
            state, k, final = TrainState(theta=theta), 0, None
        ahead = None  # (k, call) of a window submitted on the previous window's futures
        try:
            while state.done is None and state.epoch < self.total:
                results, attempt, ahead = self.one_window(k, state, ahead)
                state, records = self.check(k, results, attempt)
                if self.replan is not None:
                    self.work, self.resources = self.replan([rec for _, rec in results])
                    if records:
                        records[-1]["placement"] = " | ".join("+".join(o) for o in self.work.owners)
                params = {n: v.clone() for n, v in full.layout.split(state.theta).items()}
                final = [WindowOutput(0, state, params, records)]
                if self.on_window is not None:
                    self.on_window(k, final)
                k += 1
        finally:
            if ahead is not None:  # the run ended (target, error) with a window still ahead
                self.groups.cancel(ahead[1])
        return final

    def one_window(self, k, state, ahead):
        """Run window k (taking the call submitted ahead, if any); returns its per-rank
        results, the attempt that succeeded and the window submitted ahead of the next."""
        steps = self.steps(state.epoch)
        retries = self.comm.retries
        for attempt in range(retries + 1):
            try:
                if ahead is not None and ahead[0] == k and attempt == 0:
                    call = ahead[1]
                else:
                    self.ex.wait_for_workers(self.n, timeout=max(60.0, self.comm.timeout))
                    call = self.submit(k, [state] * self.n, steps,
                                       self.groups.place(self.n, self.resources))
                ahead = None
                nxt = state.epoch + steps
                if self.lookahead and nxt < self.total:
                    try:
                        ahead = (k + 1, self.submit(k + 1, call.futures, self.steps(nxt),
                                                    call.addrs))
                    except (PlanError, OSError) as exc:  # a worker left: no look-ahead
                        log.info("window %d not submitted ahead: %s", k + 1, exc)
                return self.groups.gather(call), attempt, ahead
            except SchedulerLost:
                raise
            except (GroupError, LostResult, TimeoutError, OSError) as exc:
                if ahead is not None:
                    self.groups.cancel(ahead[1])
                    ahead = None
                self.ex.check_alive()  # a lost scheduler is no reason to retry
                self.generation += 1
                what = f"{type(exc).__name__}: {exc}"
                if attempt == retries:
                    raise GroupError(f"window {k} failed {attempt + 1} times; the last completed "
                                     f"window is {k - 1}; last failure: {what}") from exc
                log.warning("window %d failed (%s); running it again from its input (attempt %d "
                            "of %d)", k, what, attempt + 2, retries + 1)
        raise AssertionError("unreachable")  # pragma: no cover

    def check(self, k, results, attempt):
        """The window's state (identical on every rank) and every rank's records."""
        states = [s for s, _ in results]
        states = self.work.joined(states, lambda: objective_for(self.ctx).layout)
        for r, s in enumerate(states[1:], 1):
            if not torch.equal(s.theta, states[0].theta):
                raise DaskieError(f"window {k}: rank {r} ended with other parameters than "
                                  "rank 0 (the ranks must take identical steps)")
        sync_max = max((rec[-1].get("sync_s", 0.0) for _, rec in results if rec), default=0.0)
        records = []
        for _, rec in results:
            if rec:
                rec[-1]["attempts"] = attempt + 1
                rec[-1]["sync_s_max"] = sync_max
            records.extend(rec)
        return states[0], records
