"""Seed 001's three ways to share operator training among workers.

* :class:`OperatorDataParallel` -- branch-parallel: the instances sharded;
* :class:`OperatorTrunkParallel` -- trunk-parallel: the query points sharded (every rank
  sees every instance at its slice of the output grid: a fine grid whose outputs per
  instance are many);
* :class:`OperatorBranchTrunkParallel` -- both: a grid of ranks, instances by points.

All three run on the SPMD runner (:mod:`daskie.runtime.spmd`) with the rank work of
:mod:`daskie.operator.ranks`, each rank reading only its slice of the zarr data set; the
numbers are those of one process on every row up to the order of the sums.
:func:`daskie.plan.operator_split.choose_split` picks among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from daskie.errors import SpecError, check_int
from daskie.strategies.base import Comm, Strategy, check_comm
from daskie.strategies.data_parallel import DataParallel

__all__ = ["OperatorDataParallel", "OperatorTrunkParallel", "OperatorBranchTrunkParallel",
           "OPERATOR_STRATEGIES", "check_operator_strategy"]


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

    #: Seed 001's name of the split (benchmark records' ``split``).
    split = "branch"

    def grid(self, executor) -> tuple[int, int]:
        """``(instances, points)`` shards: ``(ranks, 1)``."""
        return self.ranks(executor), 1

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


@dataclass(frozen=True)
class _Grid(Strategy):
    """Rows (instance, point) sharded over a grid of ranks (:class:`GridShards`)."""

    window: int | None = 100
    comm: Comm = field(default_factory=Comm)
    batch = None  # full batch only (each step every row of every rank)

    def __post_init__(self):
        owner = type(self).__name__
        check_int(f"{owner}.window", self.window, allow_none=True)
        check_comm(owner, self.comm)

    def groups(self, disc, plan):
        """Every sub-model in one group: each rank holds the whole network."""
        return (tuple(disc.submodels),)

    def grid(self, executor) -> tuple[int, int]:
        """``(instances, points)`` shards on ``executor``."""
        raise NotImplementedError

    def ranks(self, executor) -> int:
        """Ranks of the grid (``instances * points``)."""
        i, p = self.grid(executor)
        return i * p

    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        """Train on the SPMD runner, each rank on its block of rows."""
        from daskie.operator.ranks import GridShards
        from daskie.runtime.spmd import run_spmd_windows

        i, p = self.grid(executor)
        return run_spmd_windows(executor, ctx, GridShards(instances=i, points=p), i * p,
                                self.comm, window=self.window, resume=resume,
                                on_window=on_window, start=start)


@dataclass(frozen=True)
class OperatorTrunkParallel(_Grid):
    """Trunk-parallel operator learning (seed 001): the query points sharded over the ranks.

    Rank r of R holds every training instance at the r-th of R contiguous ranges of the
    query points (reading only those columns of ``mu`` from the data set): it evaluates the
    branch on every instance and the trunk on its points only. The ranks all-reduce losses
    and gradients (or Levenberg-Marquardt's normal equations) and take the same step; the
    numbers are those of one process up to the order of the sums. The natural split for a
    family with many outputs per instance (a fine 2-D grid) and few instances.

    Parameters
    ----------
    points : int or None
        Ranks (one per worker). None: every worker of the cluster (2 in process).
    window : int or None
        Optimizer steps per window (checkpoint; the unit run again after a lost worker).
    comm : Comm
        Collective options.
    """

    points: int | None = None
    split = "trunk"

    def __post_init__(self):
        super().__post_init__()
        check_int("OperatorTrunkParallel.points", self.points, allow_none=True)

    @property
    def label(self) -> str:
        """``"operator-trunk-parallel"``."""
        return "operator-trunk-parallel"

    def grid(self, executor) -> tuple[int, int]:
        """``(1, points)``: one instance shard, ``points`` point shards."""
        return 1, (executor.default_ranks() if self.points is None else self.points)


@dataclass(frozen=True)
class OperatorBranchTrunkParallel(_Grid):
    """Branch- and trunk-parallel operator learning (seed 001): a grid of ranks.

    Rank ``r`` of ``instances * points`` holds instance shard ``r // points`` and query-point
    shard ``r % points`` (reading only that block of ``mu``): it evaluates the branch on its
    instances and the trunk on its points. Losses and gradients are all-reduced over the
    whole grid, so the numbers are those of one process up to the order of the sums.

    Parameters
    ----------
    instances, points : int
        The grid's shape: instance shards and query-point shards.
    window : int or None
    comm : Comm
    """

    instances: int = 2
    points: int = 2
    split = "branch-trunk"

    def __post_init__(self):
        super().__post_init__()
        check_int("OperatorBranchTrunkParallel.instances", self.instances)
        check_int("OperatorBranchTrunkParallel.points", self.points)

    @property
    def label(self) -> str:
        """``"operator-branch-trunk-parallel-<I>x<P>"``."""
        return f"operator-branch-trunk-parallel-{self.instances}x{self.points}"

    def grid(self, executor) -> tuple[int, int]:
        """``(instances, points)``."""
        return self.instances, self.points


#: The operator strategies fit_operator takes.
OPERATOR_STRATEGIES = (OperatorDataParallel, OperatorTrunkParallel, OperatorBranchTrunkParallel)


def check_operator_strategy(strategy) -> None:
    """Refuse what is not one of :data:`OPERATOR_STRATEGIES`."""
    if not isinstance(strategy, OPERATOR_STRATEGIES):
        names = ", ".join(t.__name__ for t in OPERATOR_STRATEGIES)
        raise SpecError(f"strategy must be one of {names}, got {strategy!r}")
