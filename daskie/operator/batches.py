"""Mini-batches of instances with a seeded order per rank (seed 001's data-parallel recipe).

With ``OperatorDataParallel(batch=B)`` every step trains on ``B`` instances: rank ``r`` of
``R`` takes its share ``b_r`` (``B`` split as evenly as the ranks allow) from its own data
shard, in its own order -- pass ``e`` over the shard is the permutation drawn from
``numpy.random.default_rng([seed, r, e])``, cut into ``n_r // b_r`` consecutive batches (the
rest of a pass is dropped, as a ``drop_last`` data loader does). The batch of a step depends
only on ``(seed, rank, ranks, step)``: never on where the rank runs, on windows, on retries
after a lost worker or on a resume, so a run with mini-batches gives the same numbers in one
process and on a cluster. The step's loss is the mean over the ``B`` instances' rows: each
rank's blocks weigh ``b_r / B``.

:class:`BatchedObjective` is a rank's objective: :meth:`~BatchedObjective.select` picks the
batch of a step, and the loss, gradient and normal equations are those of that batch;
:class:`OnBatches` wraps the run's optimizer so that every step selects its batch first.
Nothing here knows Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daskie.errors import SpecError
from daskie.train.optimizers import Optimizer, Wrapper

__all__ = ["rank_share", "batch_of", "BatchedObjective", "OnBatches"]


def rank_share(batch: int, rank: int, ranks: int) -> int:
    """Instances of a ``batch``-instance step that rank ``rank`` of ``ranks`` trains on."""
    return (rank + 1) * batch // ranks - rank * batch // ranks


def batch_of(seed: int, rank: int, n_local: int, share: int, step: int) -> np.ndarray:
    """Local positions (into the rank's shard of ``n_local`` instances) of step ``step``'s
    batch of ``share`` instances."""
    per_pass = n_local // share
    epoch, k = divmod(int(step), per_pass)
    order = np.random.default_rng([int(seed), int(rank), int(epoch)]).permutation(n_local)
    return order[k * share:(k + 1) * share]


class BatchedObjective:
    """A rank's objective over one mini-batch of its shard at a time.

    Parameters
    ----------
    rows : ShardRows
        The rank's shard in memory (:meth:`OperatorLoss.shard_rows`).
    batch : int
        Instances per step over all ranks.
    rank, ranks : int
    seed : int
        Seed of the order (the run's seed).

    Attributes the optimizers and the loop read (``layout``, ``init_params``, ``mse``, ...)
    are those of the whole shard's objective; ``loss``, ``value_and_grad``,
    ``normal_equations``, ``residuals`` and ``jacobian`` are the selected batch's.
    """

    def __init__(self, rows, batch: int, rank: int, ranks: int, seed: int):
        from daskie.train.objective import Objective

        self.rows, self.batch, self.rank, self.ranks = rows, int(batch), int(rank), int(ranks)
        self.seed = int(seed)
        self.share = rank_share(self.batch, self.rank, self.ranks)
        if self.share < 1:
            raise SpecError(f"OperatorDataParallel.batch={batch} gives rank {rank} of {ranks} no "
                            "instance: use a batch of at least one instance per rank")
        if self.share > rows.n:
            raise SpecError(f"OperatorDataParallel.batch={batch}: rank {rank} needs {self.share} "
                            f"instances per step and holds {rows.n}; use a smaller batch or "
                            "fewer ranks")
        self.full = Objective(rows.discretization(None, rows.n / rows.n_total))
        self.step, self.current = None, None

    def __getattr__(self, name):
        return getattr(self.__dict__["full"], name)

    def select(self, step: int) -> np.ndarray:
        """Make step ``step``'s batch the current one; returns its local positions."""
        from daskie.train.objective import Objective

        index = batch_of(self.seed, self.rank, self.rows.n, self.share, step)
        if self.step != step:
            self.step = step
            self.current = Objective(self.rows.discretization(index, self.share / self.batch))
        return index

    def _batch(self):
        if self.current is None:
            raise RuntimeError("BatchedObjective: no batch selected (select(step) first)")
        return self.current

    def loss(self, theta):
        """Loss of the current batch."""
        return self._batch().loss(theta)

    def value_and_grad(self, theta):
        """``(loss, gradient)`` of the current batch."""
        return self._batch().value_and_grad(theta)

    def normal_equations(self, theta):
        """``(loss, J^T J, J^T r)`` of the current batch."""
        return self._batch().normal_equations(theta)

    def residuals(self, theta):
        """Scaled residuals of the current batch."""
        return self._batch().residuals(theta)

    def jacobian(self, theta, values=None):
        """``(r, J)`` of the current batch."""
        return self._batch().jacobian(theta, values)

    def gauss_newton_product(self, theta, v):
        """``J^T J v`` of the current batch."""
        return self._batch().gauss_newton_product(theta, v)

    def jacobian_bytes(self) -> int:
        """Bytes of one batch's Jacobian."""
        rows = self.share * len(self.rows.x) * (2 if self.rows.terms is not None else 1)
        return 8 * rows * self.full.layout.total


@dataclass(frozen=True)
class OnBatches(Wrapper):
    """``inner``, with every step taken on the batch of that step: before each step it calls
    ``objective.select(epoch)`` (a :class:`BatchedObjective`, directly or behind a
    data-parallel objective that delegates to it)."""

    inner: Optimizer

    def stages(self):
        """The inner optimizer's stages, each on mini-batches."""
        parts = self.inner.stages()
        return (self,) if parts == (self.inner,) else tuple(OnBatches(p) for p in parts)

    def init_state(self, objective, theta):
        """The inner optimizer's initial state."""
        return self.inner.init_state(objective, theta)

    def step(self, objective, theta, state, epoch):
        """Select step ``epoch``'s batch, then take the inner optimizer's step on it."""
        objective.select(epoch)
        return self.inner.step(objective, theta, state, epoch)
