"""The rank work of mini-batch operator training on the SPMD runner.

:class:`BatchedRankWork` is the runner's data-shard rank work with one change: each rank's
objective is a :class:`~daskie.operator.batches.BatchedObjective` over its data shard (kept
in the worker's state between windows, like every objective), behind the same
all-reducing :class:`~daskie.train.collective.ShardedObjective`.
"""

from __future__ import annotations

from dataclasses import dataclass

from daskie.runtime.spmd import RankWork
from daskie.runtime.state import worker_state

__all__ = ["BatchedRankWork"]


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
