"""``OperatorDataParallel``: seed 001's data-parallel operator learning."""

from __future__ import annotations

from dataclasses import dataclass, field

from daskie.errors import check_int
from daskie.strategies.base import Comm, Strategy, check_comm

__all__ = ["OperatorDataParallel"]


@dataclass(frozen=True)
class OperatorDataParallel(Strategy):
    """Data-parallel operator learning (seed 001): the instances sharded over the workers.

    Every rank holds the whole network (branch and trunk, replicated) and reads its own
    contiguous range of training instances from the data set; each step it computes the
    local loss and gradient, the ranks all-reduce the sum of the losses and of the gradients
    (the loss is the mean over all rows, so the summed gradient is the mean gradient of
    seed 001's recipe) -- or, for Levenberg-Marquardt, the normal equations -- and every rank
    takes the same local update. The numbers are those of one process on all instances
    (full batch), up to the order of the sums.

    Runner: the SPMD group runner (:mod:`daskie.runtime.spmd`, rank work ``"data"``): window
    checkpoints, windows submitted ahead, and a window run again from its input on the
    workers alive when a worker is lost.

    Parameters
    ----------
    shards : int or None
        Ranks (one per worker). None: every worker of the cluster (2 in process).
    window : int or None
        Optimizer steps per window (a checkpoint, and the unit run again after a failure);
        None: the whole training is one window.
    comm : Comm
        Collective options (method, compression, timeout, retries).
    """

    shards: int | None = None
    window: int | None = 100
    comm: Comm = field(default_factory=Comm)

    runner = "spmd"

    def __post_init__(self):
        check_int("OperatorDataParallel.shards", self.shards, allow_none=True)
        check_int("OperatorDataParallel.window", self.window, allow_none=True)
        check_comm("OperatorDataParallel", self.comm)

    @property
    def label(self) -> str:
        return "operator-data-parallel"

    def groups(self, disc, plan):
        return (tuple(disc.submodels),)

    def ranks(self, executor) -> int:
        """Number of shards on ``executor`` (its workers, or 2 in process)."""
        if self.shards is not None:
            return self.shards
        return 2 if executor.eager else len(executor.workers())

    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        from daskie.runtime.spmd import RankWork, run_spmd_windows

        # each rank's objective is data shard (r, n) of the run's formulation: for an
        # OperatorLoss, a contiguous range of instances read from the data set
        return run_spmd_windows(executor, ctx, RankWork("data"), self.ranks(executor), self.comm,
                                window=self.window, resume=resume, on_window=on_window,
                                start=start)
