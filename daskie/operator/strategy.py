"""``OperatorDataParallel``: seed 001's data-parallel operator learning."""

from __future__ import annotations

from dataclasses import dataclass, replace

from daskie.errors import check_int
from daskie.strategies.data_parallel import DataParallel

__all__ = ["OperatorDataParallel"]


@dataclass(frozen=True)
class OperatorDataParallel(DataParallel):
    """Data-parallel operator learning (seed 001): the instances sharded over the workers.

    Every rank holds the whole network (branch and trunk, replicated) and reads its own
    contiguous range of training instances from the data set; each step it computes the
    local loss and gradient, the ranks all-reduce the sum of the losses and of the gradients
    (the loss is the mean over all rows, so the summed gradient is the mean gradient of
    seed 001's recipe) -- or, for Levenberg-Marquardt, the normal equations -- and every rank
    takes the same local update. The numbers are those of one process on all instances
    (full batch), up to the order of the sums.

    It is :class:`~daskie.strategies.DataParallel` over the instances of an operator data
    set: each rank's objective is data shard (r, n) of the run's formulation, for an
    ``OperatorLoss`` a contiguous range of instances read from the data set. Runner: the
    SPMD group runner (:mod:`daskie.runtime.spmd`, rank work ``"data"``): window checkpoints,
    windows submitted ahead, and a window run again from its input on the workers alive
    when a worker is lost.

    With ``batch`` each step trains on ``batch`` instances, each rank taking its share from
    its own shard in its own seeded order (:mod:`daskie.operator.batches`); the numbers
    depend on the seed and the number of ranks, not on where the ranks run.

    Parameters
    ----------
    shards, window, comm
        As :class:`~daskie.strategies.DataParallel` (``window`` defaults to 100 steps).
    batch : int or None
        Instances per step over all ranks (None: every training instance, full batch).
    """

    window: int | None = 100
    batch: int | None = None

    def __post_init__(self):
        super().__post_init__()
        check_int("OperatorDataParallel.batch", self.batch, allow_none=True)

    @property
    def label(self) -> str:
        """``"operator-data-parallel"``, with ``-batch<B>`` for mini-batches."""
        return "operator-data-parallel" + ("" if self.batch is None else f"-batch{self.batch}")

    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        """Train on the SPMD runner: full batches as :class:`DataParallel` does, or each rank
        on mini-batches drawn from its shard (``batch``)."""
        if self.batch is None:
            return super().execute(executor, ctx, groups, plan, resume=resume,
                                   on_window=on_window, start=start)
        from daskie.operator.batches import OnBatches
        from daskie.operator.ranks import BatchedRankWork
        from daskie.runtime.spmd import run_spmd_windows

        ctx = replace(ctx, optimizer=OnBatches(ctx.optimizer))
        return run_spmd_windows(executor, ctx, BatchedRankWork(batch=self.batch),
                                self.ranks(executor), self.comm, window=self.window,
                                resume=resume, on_window=on_window, start=start)
