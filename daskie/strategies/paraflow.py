"""ParaFlow, ParaFlowS and GradientDescent (seed 002): Parareal over the gradient flow.

The gradient flow ``dW/dt = -grad L(W)`` is split into windows; each window runs *one*
Parareal iteration with the fine propagator F (``n_fine`` (stochastic) gradient steps of
length ``eta``) and the coarse propagator G (one full-batch gradient step of length
``n_fine * eta``), and the next window starts from the iterate of least loss. :class:`ParaFlow`
(Algorithm 1) runs the ``n_coarse`` fine propagations of a window as parallel tasks;
:class:`ParaFlowS` (Algorithm 2) is the sequential form; :class:`GradientDescent` is the
(stochastic) gradient-descent baseline. The numerics are in :mod:`daskie.train.gradient_flow`;
the runner is :mod:`daskie.runtime.iterations`.

Budget (the paper's unit): calls of the (partial) gradient, a full-batch gradient costing N
(rows of the data set / residual rows) and a minibatch gradient the batch size. Every
strategy here stops before a window that would overrun ``budget``; records carry the work
(``grad_calls``) and, for ParaFlow, the critical path (``grad_calls_path``: what one worker
of N_G spends). Loss evaluations (forward passes) are not counted, as in the paper.

They train any objective with ``layout``, ``init_params(seed)`` and ``loss(theta)`` (plus
``n_data`` and ``batch_loss(theta, index)`` for minibatches): the integral equation's
through :func:`daskie.solve`, a torch module's through :func:`daskie.fit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daskie.errors import SpecError, check_int
from daskie.strategies.base import Strategy

__all__ = ["ParaFlow", "ParaFlowS", "GradientDescent", "IterationStrategy"]


def _int(owner, name, value, low, allow_none=False):
    check_int(f"{owner}.{name}", value, low, allow_none=allow_none)


def _positive(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise SpecError(f"{owner}.{name} must be a positive finite number, got {value!r}")


class IterationStrategy(Strategy):
    """A strategy whose unit is an outer iteration over a whole flat-parameter objective
    (runner: :mod:`daskie.runtime.iterations`); usable by :func:`daskie.solve` and
    :func:`daskie.fit`."""

    window = None

    def groups(self, disc, plan):
        """Every sub-model in one group: the iterations train the whole objective."""
        return (tuple(disc.submodels),)

    def progress_total(self, optimizer) -> int:
        """The optimizer's step budget."""
        return optimizer.steps

    def iteration_scheme(self):
        """The iteration runner's scheme (:mod:`daskie.runtime.iterations`) that trains this
        spec: each iteration strategy says which."""
        raise NotImplementedError

    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        """Train on the iteration runner (:func:`daskie.runtime.iterations.train`)."""
        from daskie.runtime.context import objective_for
        from daskie.runtime.iterations import train

        return train(self, objective_for(ctx), executor, seed=ctx.seed,
                     target_loss=ctx.target_loss, threads=ctx.threads, resume=resume,
                     on_window=on_window, source=ctx, theta0=start)


class _GradientFlowStrategy(IterationStrategy):
    """Options shared by the gradient-flow strategies."""

    def iteration_scheme(self):
        """The iteration runner's scheme (:mod:`daskie.runtime.iterations`) that trains this
        spec."""
        from daskie.runtime.iterations import GradientFlowIterations

        return GradientFlowIterations

    def iteration_step(self):
        """The numerical core's function of one whole iteration in one task
        (:mod:`daskie.train.gradient_flow`), or None where an iteration is a round of
        parallel tasks (ParaFlow's Parareal round)."""
        return None

    def _validate(self):
        owner = type(self).__name__
        _positive(owner, "eta", self.eta)
        _int(owner, "batch", self.batch, 1, allow_none=True)
        _int(owner, "budget", self.budget, 1)
        _int(owner, "windows", self.windows, 1, allow_none=True)
        _int(owner, "checkpoint_every", self.checkpoint_every, 1)

    def deterministic_repeat(self) -> bool:
        """True when a window that made no progress would repeat exactly (full batch)."""
        return True

    def max_iterations(self, n_data, used):
        """Iterations the budget still allows when that is known in advance (else None)."""
        return None


@dataclass(frozen=True)
class ParaFlow(_GradientFlowStrategy):
    """ParaFlow (seed 002 Algorithm 1): one Parareal iteration per gradient-flow window.

    The ``n_coarse`` fine propagations of a window are Dask futures started from the coarse
    predictions and run on the workers round-robin; the coarse correction is a chain of
    tasks; the iterate of least loss starts the next window. The same
    functions run in this process without a cluster (same numbers).

    Parameters
    ----------
    eta : float
        Fine step length eta_F (the coarse step is ``n_fine * eta``).
    n_fine : int
        Gradient steps N_F of one fine propagation.
    n_coarse : int
        Slices N_G of a window (the parallel fine propagations).
    batch : int or None
        Minibatch rows of the fine steps (None: full batch); G always uses the full batch.
    budget : int
        Gradient calls (full gradient = N, minibatch gradient = batch) allowed in all.
    init : str
        Window initialisation: ``"coarse"`` (the coarse chain W_{n+1,0} = G(W_{n,0})) or
        ``"constant"`` (W_{n,0} = W_k for all n).
    windows : int or None
        At most this many windows (k_max).
    checkpoint_every : int
        Windows per checkpoint (``on_window`` call / store record).
    """

    eta: float = 1e-3
    n_fine: int = 10
    n_coarse: int = 2
    batch: int | None = None
    budget: int = 100_000
    init: str = "coarse"
    windows: int | None = None
    checkpoint_every: int = 10

    def __post_init__(self):
        self._validate()
        _int("ParaFlow", "n_fine", self.n_fine, 1)
        _int("ParaFlow", "n_coarse", self.n_coarse, 1)
        if self.init not in ("coarse", "constant"):
            raise SpecError(f"ParaFlow.init must be 'coarse' or 'constant', got {self.init!r}")

    def coarse_actions(self) -> int:
        """G evaluations of one window (the correction reuses G(W_0))."""
        return 2 * self.n_coarse - 1

    def window_cost(self, n_data: int) -> tuple[int, int]:
        """(work, critical path) of one window in gradient calls."""
        fine = min(self.batch or n_data, n_data) * self.n_fine
        init = self.n_coarse if self.init == "coarse" else 1  # constant: the n copies run in parallel
        return (self.n_coarse * fine + self.coarse_actions() * n_data,
                fine + (init + self.n_coarse - 1) * n_data)

    def max_iterations(self, n_data, used):
        """Iterations the remaining gradient budget pays for."""
        return max(0, (self.budget - used) // self.window_cost(n_data)[0])


@dataclass(frozen=True)
class ParaFlowS(_GradientFlowStrategy):
    """ParaFlowS (seed 002 Algorithm 2): the sequential form of ParaFlow.

    One fine propagation f_0 = F(W_k), g_0 = G(W_k), then W_{n+1} = f_0 + G(W_n) - g_0 for
    n = 0, 1, ... while the loss decreases (at most ``n_coarse`` actions of G in all);
    the last decreasing iterate starts the next window.

    Parameters
    ----------
    eta, n_fine, batch, budget, windows, checkpoint_every
        As :class:`ParaFlow`.
    n_coarse : int
        N_G: at most this many corrections (and G actions) per window.
    """

    eta: float = 1e-3
    n_fine: int = 10
    n_coarse: int = 10
    batch: int | None = None
    budget: int = 100_000
    windows: int | None = None
    checkpoint_every: int = 10

    def iteration_step(self):
        from daskie.train.gradient_flow import paraflows_iteration

        return paraflows_iteration

    def __post_init__(self):
        self._validate()
        _int("ParaFlowS", "n_fine", self.n_fine, 1)
        _int("ParaFlowS", "n_coarse", self.n_coarse, 1)


@dataclass(frozen=True)
class GradientDescent(_GradientFlowStrategy):
    """(Stochastic) gradient descent with a constant step: the baseline of seed 002.

    Parameters
    ----------
    eta : float
        Step length.
    batch : int or None
        Minibatch rows (None: full batch).
    budget : int
        Gradient calls allowed (``budget // batch`` steps).
    steps_per_record : int
        Gradient steps per iteration (one history record each).
    windows, checkpoint_every
        As :class:`ParaFlow` (counted in iterations of ``steps_per_record`` steps).
    """

    eta: float = 1e-3
    batch: int | None = None
    budget: int = 100_000
    steps_per_record: int = 100
    windows: int | None = None
    checkpoint_every: int = 10

    def iteration_step(self):
        from daskie.train.gradient_flow import descent_iteration

        return descent_iteration

    def __post_init__(self):
        self._validate()
        _int("GradientDescent", "steps_per_record", self.steps_per_record, 1)

    def deterministic_repeat(self) -> bool:
        """False: plain gradient descent has no parallel tasks to repeat."""
        return False

    def max_iterations(self, n_data, used):
        """Records (of ``steps_per_record`` steps) the remaining gradient budget pays for."""
        steps = max(0, self.budget - used) // min(self.batch or n_data, n_data)
        return math.ceil(steps / self.steps_per_record)
