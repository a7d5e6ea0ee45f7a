"""APTS and SAPTS (seed 004 Algorithm 1): data-parallel additively preconditioned trust region.

One APTS iteration k from ``theta^k`` with global loss f, gradient ``g`` and radius Delta:

1. *Local solves, in parallel* (one Dask task per subdomain i = 1..N): on data shard D_i, the
   local loss ``f_i(w) = f(w; D_i) + (g - grad f(theta^k; D_i)) . (w - theta^k)`` (Eq 3-4: its
   gradient at ``theta^k`` is the global one) is decreased by at most ``local_steps``
   trust-region iterations starting at radius ``Delta / N`` (bounds ``min_radius / N``,
   ``max_radius / N``), stopping early when the local step ``s_i`` reaches the local boundary
   ``||s_i|| = Delta / N``; so ``||sum_i s_i|| <= Delta`` (Eq 5).
2. *Global acceptance*: ``rho = (f(theta) - f(theta + sum s_i)) / sum_i (f_i(theta) -
   f_i(theta + s_i))`` (Eq 6); the summed step is taken when ``rho >= eta_1`` and the radius
   updated by Eq 7 (:class:`~daskie.train.trust_region.RadiusRule`).
3. *One global trust-region iteration* from there (Algorithm 1 line 9).

:class:`APTS` uses the whole data set as D (the shards are its subdomains); :class:`SAPTS`
draws a minibatch D per iteration (a seeded permutation per epoch, consecutive minibatches
sharing ``overlap`` of their rows) and splits it into microbatches that all share the same
``overlap`` block, as the paper's experiments do (5 %).

Shards. For :func:`daskie.fit` (a :class:`~daskie.train.module.ModuleObjective`) shard i of N
holds rows ``i, i + N, ...`` and ``f(w; D_i)`` is the module's loss on those rows (the paper's
mean over D_i for mean-reduced losses; N times the shard's sum of squares for
:class:`~daskie.train.module.Residuals`). For :func:`daskie.solve` shard i is
``Objective(formulation.discretize(problem, seed=seed, shard=(i, N)))``; those losses sum to
the full loss, so ``f(w; D_i)`` is N times the shard's loss (an estimate of the full loss, as
the mean over a shard is). Objectives may also provide ``shard(k, n)`` (same convention as
discretize). The global loss and the global step always use the full objective (D).

Models: Gauss-Newton for least-squares objectives (integral equations), L-SR1 otherwise
(``model=``); the global L-SR1 pairs seed every local model, and the local solves add their own.

The numerics are in :mod:`daskie.train.apts`; the runner is :mod:`daskie.runtime.iterations`
(in process, the same task functions run in the same order: the same numbers as on a
cluster for the same seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from daskie.errors import SpecError, check_int
from daskie.strategies.paraflow import IterationStrategy
from daskie.train.apts import Rows
from daskie.train.gradient_flow import generator
from daskie.train.protocols import MiniBatchObjective, ObjectiveSource, Shardable
from daskie.train.trust_region import LossFunction, TrustRegionOptions, resolve_model

__all__ = ["APTS", "SAPTS"]


@dataclass(frozen=True)
class APTS(TrustRegionOptions, IterationStrategy):
    """APTS (seed 004 Algorithm 1): local trust-region solves on N data shards as parallel
    Dask tasks, global acceptance by rho, then one global trust-region step.

    Parameters
    ----------
    subdomains : int
        N, the data shards (one local solve, one task, each per iteration).
    local_steps : int
        nu, the most local trust-region iterations per subdomain and iteration.
    epochs : int
        Iterations (each uses the whole data set once as D).
    checkpoint_every : int
        Iterations per checkpoint (``on_window`` call / store record).
    radius, min_radius, max_radius, alpha, beta, eta_1, eta_2, model, memory
        Trust-region options (keyword-only), see
        :class:`~daskie.train.trust_region.TrustRegionOptions`.

    Notes
    -----
    Records (one per iteration): ``loss`` (full data), ``rho`` and ``accepted`` (the summed
    local steps, Eq 6-7), ``rho_global`` and ``accepted_global`` (line 9), ``radius``
    (Delta^{k+1}), ``local_steps`` (mean local iterations taken), ``grad_calls`` and
    ``loss_calls`` (cumulative evaluations of a gradient -- or a Jacobian for Gauss-Newton --
    and of a loss alone, summed over all tasks, each on its own rows), ``wall_s`` and
    ``step_s`` (wall time per iteration).
    """

    subdomains: int = 2
    local_steps: int = 5
    epochs: int = 100
    checkpoint_every: int = 10

    #: True when each iteration has its own data D (SAPTS's minibatches).
    fresh_data = False

    def iteration_scheme(self):
        """The iteration runner's scheme (:mod:`daskie.runtime.iterations`) that trains this
        spec."""
        from daskie.runtime.iterations import TrustRegionIterations

        return TrustRegionIterations

    def __post_init__(self):
        self._validate_trust_region()
        owner = type(self).__name__
        check_int(f"{owner}.subdomains", self.subdomains)
        check_int(f"{owner}.local_steps", self.local_steps)
        check_int(f"{owner}.epochs", self.epochs)
        check_int(f"{owner}.checkpoint_every", self.checkpoint_every)

    # --- data of an iteration (SAPTS overrides) ------------------------------------------------
    def iterations(self, n_data: int) -> int:
        """Iterations in all."""
        return self.epochs

    def data_epoch(self, iteration: int, n_data: int) -> float:
        """Passes over the data after ``iteration`` iterations."""
        return float(iteration)

    def global_function(self, objective, source, iteration, seed) -> LossFunction:
        """f(.; D) of iteration ``iteration``: the full objective."""
        return LossFunction(objective)

    def local_function(self, objective, source, i, iteration, seed) -> LossFunction:
        """f(.; D_i) of subdomain i (without the consistency term)."""
        from daskie.runtime.iterations import shard_of

        shard, scale = shard_of(source, objective, i, self.subdomains, _run_of(source))
        return LossFunction(shard, scale)

    def check(self, objective, source):
        """Refuse objectives this strategy cannot split (raised before any work)."""
        n = self.subdomains
        if n == 1 or isinstance(source, ObjectiveSource) or isinstance(objective, Shardable):
            return
        if not isinstance(objective, MiniBatchObjective):
            raise SpecError(f"{type(self).__name__}.subdomains={n}: this objective cannot be split "
                            "into data shards (no batch_loss or shard(k, n)); train it through "
                            "daskie.solve, whose formulation discretizes the shards")
        if n > int(objective.n_data):
            raise SpecError(f"{type(self).__name__}.subdomains={n} exceeds the {int(objective.n_data)} "
                            "rows of the data")

    def resolve_model(self, objective) -> str:
        """The trust-region model used (``"auto"``: Gauss-Newton for least squares)."""
        return resolve_model(self.model, objective, type(self).__name__)


@dataclass(frozen=True)
class SAPTS(APTS):
    """SAPTS (seed 004): APTS on a minibatch per iteration, split into microbatches.

    Each epoch draws a seeded permutation of the rows (the same wherever it runs) and cuts it
    into minibatches of about ``minibatch`` rows; minibatch b also holds the last
    ``overlap`` share of minibatch b - 1's rows. Its microbatches (the subdomains) each hold
    the minibatch's first ``overlap`` share (common to all of them) and one of ``subdomains``
    equal parts of the rest. D in Algorithm 1 is the minibatch: rho, the global step and the
    L-SR1 pairs use it; the records' ``loss`` is the full-data loss (one more forward pass).

    Parameters
    ----------
    subdomains : int
        Microbatches per minibatch (one local solve, one task, each).
    minibatch : int
        Rows per minibatch (before the overlap).
    microbatch : int or None
        Rows of each microbatch's own part (None: the minibatch split evenly); at most
        ``minibatch // subdomains``.
    overlap : float
        Share of rows shared by consecutive minibatches and by all microbatches of one
        minibatch, in ``[0, 1)`` (seed 004: 0.05).
    epochs : int
        Passes over the data (``ceil(rows / minibatch)`` iterations each).
    local_steps, checkpoint_every, and the trust-region options
        As :class:`APTS`.
    """

    minibatch: int = 256
    microbatch: int | None = None
    overlap: float = 0.05
    epochs: int = 10

    fresh_data = True

    def __post_init__(self):
        super().__post_init__()
        check_int("SAPTS.minibatch", self.minibatch)
        check_int("SAPTS.microbatch", self.microbatch, allow_none=True)
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float)) \
                or not 0 <= self.overlap < 1:
            raise SpecError(f"SAPTS.overlap must be a number in [0, 1), got {self.overlap!r}")
        if self.microbatch is not None and self.microbatch * self.subdomains > self.minibatch:
            raise SpecError(f"SAPTS.microbatch={self.microbatch} times subdomains="
                            f"{self.subdomains} exceeds minibatch={self.minibatch}")
        if self.subdomains > self.minibatch:
            raise SpecError(f"SAPTS.subdomains={self.subdomains} exceeds minibatch={self.minibatch}")

    def check(self, objective, source):
        """Refuse, by name, objectives without mini-batches and the Gauss-Newton model."""
        if not isinstance(objective, MiniBatchObjective):
            raise SpecError("SAPTS needs minibatches: this objective has no batch_loss "
                            "(integral-equation residuals are coupled through the quadrature); "
                            "use APTS")
        if self.model == "gauss-newton":
            raise SpecError("SAPTS.model='gauss-newton' is not available on minibatches; use "
                            "'sr1' or 'first-order'")

    def resolve_model(self, objective):
        """The trust-region model: ``"sr1"`` for ``"auto"`` (no Gauss-Newton on mini-batches)."""
        return "sr1" if self.model == "auto" else self.model

    def batches(self, n_data: int) -> int:
        """Minibatches per epoch."""
        return max(1, math.ceil(n_data / self.minibatch))

    def iterations(self, n_data):
        """``epochs`` passes of mini-batches."""
        return self.epochs * self.batches(n_data)

    def data_epoch(self, iteration, n_data):
        """Passes over the data after ``iteration`` iterations."""
        return iteration / self.batches(n_data)

    def minibatch_rows(self, n_data: int, iteration: int, seed: int):
        """Rows of iteration ``iteration``'s minibatch (seeded; independent of where it runs)."""
        epoch, b = divmod(iteration, self.batches(n_data))
        perm = torch.randperm(n_data, generator=generator(seed, 4, epoch))
        parts = torch.tensor_split(perm, self.batches(n_data))
        own, prev = parts[b], parts[b - 1]
        shared = round(self.overlap * len(own))
        return torch.cat([prev[len(prev) - shared:], own]) if shared and len(parts) > 1 else own

    def microbatch_rows(self, rows, i: int):
        """Rows of microbatch i of a minibatch: the shared block and its own part."""
        shared = round(self.overlap * len(rows))
        part = torch.tensor_split(rows[shared:], self.subdomains)[i]
        if self.microbatch is not None:
            part = part[:self.microbatch]
        if len(part) == 0:
            raise SpecError(f"SAPTS.subdomains={self.subdomains}: a minibatch of {len(rows)} rows "
                            "leaves some microbatch empty")
        return torch.cat([rows[:shared], part])

    def global_function(self, objective, source, iteration, seed):
        """The loss on this iteration's mini-batch (the global trust-region step)."""
        return LossFunction(Rows(objective, self.minibatch_rows(int(objective.n_data), iteration,
                                                                 seed)))

    def local_function(self, objective, source, i, iteration, seed):
        """Subdomain ``i``'s loss: its micro-batch of this iteration's mini-batch."""
        rows = self.minibatch_rows(int(objective.n_data), iteration, seed)
        return LossFunction(Rows(objective, self.microbatch_rows(rows, i)))


def _run_of(source) -> str:
    """A name of the run for the workers' shard cache: the run's token, or the source's
    identity for a plain objective (scattered once per run; the cache holds the source, so
    its identity is not reused while the entry lives)."""
    return getattr(source, "token", None) or f"object-{id(source):x}"
