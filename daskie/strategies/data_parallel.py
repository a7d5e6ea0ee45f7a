"""``DataParallel``: collocation rows sharded over workers, sums by all-reduce."""

from __future__ import annotations

from dataclasses import dataclass, field

from daskie.errors import check_int
from daskie.strategies.base import Comm, Strategy, check_comm

__all__ = ["DataParallel"]


@dataclass(frozen=True)
class DataParallel(Strategy):
    """Data-parallel training: collocation rows sharded over workers, sums by all-reduce.

    Each rank discretizes data shard k of n of every residual block
    (``formulation.discretize(problem, shard=(k, n))``); every step the ranks all-reduce
    the loss and gradient (first-order optimizers) or the Gauss-Newton normal equations
    ``J_k^T J_k``, ``J_k^T r_k`` (Levenberg-Marquardt) and take the same step. Memory per
    worker falls with the number of shards (each holds ``N / n`` Jacobian rows).

    Runner: the SPMD group runner (:mod:`daskie.runtime.spmd`).

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
    window: int | None = 50
    comm: Comm = field(default_factory=Comm)


    def __post_init__(self):
        owner = type(self).__name__
        check_int(f"{owner}.shards", self.shards, allow_none=True)
        check_int(f"{owner}.window", self.window, allow_none=True)
        check_comm(owner, self.comm)

    @property
    def label(self) -> str:
        """``"data-parallel"``."""
        return "data-parallel"

    def groups(self, disc, plan):
        """Every sub-model in one group: each rank holds the whole model."""
        return (tuple(disc.submodels),)

    def ranks(self, executor) -> int:
        """Number of shards on ``executor`` (:meth:`~daskie.runtime.executor.Executor.default_ranks`:
        its workers, or 2 in process)."""
        if self.shards is not None:
            return self.shards
        return executor.default_ranks()

    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        """Train on the SPMD runner, each rank on its shard of the rows; losses, gradients
        and normal equations summed by all-reduce."""
        from daskie.runtime.spmd import DataShards, run_spmd_windows

        return run_spmd_windows(executor, ctx, DataShards(), self.ranks(executor), self.comm,
                                window=self.window, resume=resume, on_window=on_window,
                                start=start)
