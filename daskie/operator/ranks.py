"""The rank work of operator training on the SPMD runner: mini-batches, and the grid of
branch x trunk shards.

:class:`BatchedRankWork` is the runner's data-shard rank work with one change: each rank's
objective is a :class:`~daskie.operator.batches.BatchedObjective` over its data shard (kept
in the worker's state between windows, like every objective), behind the same
all-reducing :class:`~daskie.train.collective.ShardedObjective`. :class:`GridShards` shards
the rows (instance, point) over a grid of ranks: instances, query points or both.
"""

from __future__ import annotations

from dataclasses import dataclass

from daskie.runtime.spmd import RankWork
from daskie.runtime.state import worker_state

__all__ = ["BatchedRankWork", "GridShards"]


@dataclass(frozen=True)
class BatchedRankWork(RankWork):
    """Data-parallel ranks, each on its own seeded sequence of mini-batches.

    Attributes
    ----------
    batch : int
        Instances per step over all ranks.
    """

    batch: int = 1

    def objective(self, ctx, group):
        """This rank's mini-batch objective (all-reduced over the ranks) and its label."""
        from daskie.operator.batches import BatchedObjective
        from daskie.train.collective import ShardedObjective

        from daskie.runtime.devices import resolve_device

        r, n = group.rank, group.size
        state = worker_state()
        device = resolve_device(ctx.device)  # the run's, or this rank's resource tag's

        def make():
            rows = ctx.formulation.shard_rows(ctx.problem, shard=(r, n), device=device)
            return BatchedObjective(rows, self.batch, r, n, ctx.seed)

        key = (ctx.token, (r, n), "batch", self.batch) + (() if device == "cpu" else (device,))
        local = state.cached(state.objectives, key, make)
        return ShardedObjective(local, group), f"shard{r}/{n} batch{local.share}"


@dataclass(frozen=True)
class GridShards(RankWork):
    """Branch x trunk-parallel ranks: a grid of ``instances`` x ``points`` ranks, rank ``r``
    holding instance shard ``r // points`` of ``instances`` and query-point shard
    ``r % points`` of ``points`` (seed 001's branch-parallel ``points=1``, trunk-parallel
    ``instances=1``, branch- and trunk-parallel both > 1). Each rank reads only its slice of
    the data set (its instances' rows, its points' columns of ``mu``); its loss is its rows'
    share of the mean over every row, and the ranks all-reduce losses, gradients or normal
    equations as data-parallel ranks do (:class:`~daskie.train.collective.ShardedObjective`).

    Attributes
    ----------
    instances, points : int
        The grid's shape (``instances * points`` ranks).
    """

    instances: int = 1
    points: int = 1

    def objective(self, ctx, group):
        """This rank's objective over its (instances, points) block and its label."""
        from daskie.runtime.devices import resolve_device
        from daskie.train.collective import ShardedObjective
        from daskie.train.objective import Objective

        if group.size != self.instances * self.points:
            raise ValueError(f"a {self.instances} x {self.points} grid needs "
                             f"{self.instances * self.points} ranks, the group has {group.size}")
        i, j = divmod(group.rank, self.points)
        state = worker_state()
        device = resolve_device(ctx.device)

        def make():
            rows = ctx.formulation.shard_rows(ctx.problem, shard=(i, self.instances),
                                              points=(j, self.points), device=device)
            return Objective(rows.discretization(None, rows.share))

        key = (ctx.token, "grid", (i, self.instances), (j, self.points)) + \
            (() if device == "cpu" else (device,))
        local = state.cached(state.objectives, key, make)
        return ShardedObjective(local, group), \
            f"instances{i}/{self.instances} points{j}/{self.points}"
