"""ParaFlow and ParaFlowS (seed 002): Parareal over the gradient flow of training.

The gradient flow ``dW/dt = -grad L(W)`` is split into windows; each window runs *one*
Parareal iteration with

* the fine propagator F: ``n_fine`` (stochastic) gradient steps of length ``eta``;
* the coarse propagator G: one full-batch gradient step of length ``n_fine * eta``;

and the next window starts from the iterate of least loss. :class:`ParaFlow` (Algorithm 1)
runs the ``n_coarse`` fine propagations of a window as parallel Dask futures through
:func:`daskie.parallel_in_time.parareal_futures`; :class:`ParaFlowS` (Algorithm 2) is the
sequential form (one F, at most ``n_coarse`` actions of G, stop as soon as the loss stops
decreasing). :class:`GradientDescent` is the (stochastic) gradient-descent baseline.

Budget (the paper's unit): calls of the (partial) gradient, a full-batch gradient costing N
(rows of the data set / residual rows) and a minibatch gradient the batch size. Every
strategy here stops before a window that would overrun ``budget``; records carry the work
(``grad_calls``) and, for ParaFlow, the critical path (``grad_calls_path``: what one worker
of N_G spends). Loss evaluations (forward passes) are not counted, as in the paper.

Strategies train any objective with ``layout``, ``init_params(seed)`` and ``loss(theta)``
(plus ``n_data`` and ``batch_loss(theta, index)`` for minibatches):
:class:`~daskie.train.objective.Objective` through :func:`daskie.solve` (``execute``), and
:class:`~daskie.train.module.ModuleObjective` through :func:`daskie.fit` (``train``).
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import torch

from daskie.errors import SpecError, TrainingDiverged, check_int
from daskie.parallel_in_time.parareal import parareal, parareal_futures
from daskie.strategies.base import ObjectiveStrategy
from daskie.train.objective import loss_and_grad

__all__ = ["ParaFlow", "ParaFlowS", "GradientDescent"]


# --- validation ---------------------------------------------------------------------------
def _int(owner, name, value, low, allow_none=False):
    check_int(f"{owner}.{name}", value, low, allow_none=allow_none)


def _positive(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise SpecError(f"{owner}.{name} must be a positive finite number, got {value!r}")


# --- the numerics (pure; no Dask) ---------------------------------------------------------
def _generator(seed: int, *stream: int) -> torch.Generator:
    """A torch generator for one minibatch stream, independent of where it runs."""
    state = np.random.SeedSequence([int(seed), *[int(s) for s in stream]]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _value_and_grad(obj, theta, index=None):
    loss, g = loss_and_grad(obj.loss if index is None else lambda th: obj.batch_loss(th, index),
                            theta)
    return float(loss), g


def _loss(obj, theta) -> float:
    # not under no_grad: physics-informed losses differentiate the model in its inputs
    value = float(obj.loss(theta.detach()).detach())
    return value if math.isfinite(value) else math.inf


def gradient_steps(obj, theta, eta: float, steps: int, batch: int | None, generator):
    """``steps`` (stochastic) gradient steps ``W <- W - eta * grad L_I(W)``.

    ``batch=None`` (or >= the data size) takes full-batch steps; otherwise each step draws
    ``batch`` distinct rows from ``generator``.
    """
    n = _n_data(obj)
    full = batch is None or batch >= n
    theta = theta.detach()
    for _ in range(int(steps)):
        index = None if full else torch.randperm(n, generator=generator)[:batch]
        _, g = _value_and_grad(obj, theta, index)
        theta = theta - eta * g
    return theta


def _n_data(obj) -> int:
    n = getattr(obj, "n_data", None)
    if n is None:  # an integral-equation Objective: one row per residual
        with torch.no_grad():
            n = int(obj.residuals(obj.init_params(0)).numel())
        obj.n_data = n
    return int(n)


@dataclass
class Carry:
    """What passes from one iteration to the next (small: parameters and counters)."""

    theta: torch.Tensor
    loss: float
    iteration: int = 0
    grad_calls: int = 0
    grad_calls_path: int = 0
    done: str | None = None
    last: dict | None = None  # the last iteration's record fields
    wall_s: float = 0.0


# --- where the objective comes from inside a task -------------------------------------------
def _objective(source):
    from daskie.graph.tasks import RunContext, objective_for

    return objective_for(source) if isinstance(source, RunContext) else source


@contextlib.contextmanager
def _threads(n):
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None and n != before:
            torch.set_num_threads(before)


def _where() -> str:
    from daskie.graph.tasks import _where as where

    return where()


# --- task functions (module level so they pickle) -----------------------------------------
def _coarse_prop(theta, n, source, strategy, seed, k, threads):
    with _threads(threads):
        _, g = _value_and_grad(_objective(source), theta)
    return theta.detach() - strategy.eta * strategy.n_fine * g


def _fine_prop(theta, n, source, strategy, seed, k, threads):
    with _threads(threads):
        return gradient_steps(_objective(source), theta, strategy.eta, strategy.n_fine,
                              strategy.batch, _generator(seed, 0, k, n))


def _loss_task(theta, source, threads):
    with _threads(threads):
        return _loss(_objective(source), theta)


def _carry_theta(carry):
    return carry.theta


def _select(strategy, carry, n_data, target_loss, *thetas_losses):
    """Algorithm 1 line 12: the next window starts from the iterate of least loss."""
    if carry.done is not None:
        return carry
    m = len(thetas_losses) // 2
    thetas = [carry.theta, *thetas_losses[:m]]
    losses = [carry.loss, *thetas_losses[m:]]
    best = int(np.argmin(losses))
    work, path = strategy.window_cost(n_data)
    out = Carry(thetas[best].detach().clone(), losses[best], carry.iteration + 1,
                carry.grad_calls + work, carry.grad_calls_path + path)
    out.last = {"slice": best, "coarse_actions": strategy.coarse_actions(), "worker": _where()}
    _finish(out, carry, strategy, target_loss)
    return out


def _finish(out, carry, strategy, target_loss):
    if out.loss < target_loss:
        out.done = "target"
    elif out.last["slice"] == 0 and (strategy.batch is None) and strategy.deterministic_repeat():
        out.done = "stalled"  # full batch: the next window would repeat this one exactly
    if strategy.windows is not None and out.iteration >= strategy.windows and out.done is None:
        out.done = "windows"


# --- the strategies -----------------------------------------------------------------------
class _GradientFlowStrategy(ObjectiveStrategy):
    """Shared driver: iterations, budget, records, checkpoint windows, serial or on a client."""

    def _validate(self):
        owner = type(self).__name__
        _positive(owner, "eta", self.eta)
        _int(owner, "batch", self.batch, 1, allow_none=True)
        _int(owner, "budget", self.budget, 1)
        _int(owner, "windows", self.windows, 1, allow_none=True)
        _int(owner, "checkpoint_every", self.checkpoint_every, 1)

    # Strategy's graph hooks (solve reads groups; the rest of the window graph is unused).
    window = None

    def groups(self, disc, plan):
        return (tuple(disc.submodels),)

    def deterministic_repeat(self) -> bool:
        """True when a window that made no progress would repeat exactly (full batch)."""
        return True

    def max_iterations(self, n_data, used):
        """Iterations the budget still allows when that is known in advance (else None)."""
        return None

    # --- entry points ----------------------------------------------------------------------
    def train(self, objective, client=None, *, seed: int = 0, target_loss: float = 0.0,
              threads: int | None = 1, resume=None, on_window=None, source=None, theta0=None):
        """Train ``objective`` from ``theta0`` (default ``objective.init_params(seed)``).

        Parameters
        ----------
        objective : Objective or ModuleObjective
            The flat-parameter objective (this process's copy).
        client : distributed.Client, "sync" or None
            Where the iterations run; ``"sync"``/``None``: in this process.
        seed : int
            Seed of the initial parameters and of the minibatch streams.
        target_loss : float
            Stop once the loss falls below it.
        threads : int or None
            torch threads inside the computation (serial runs restore the caller's).
        resume : (int, list of WindowOutput), optional
            The last completed checkpoint window to continue from.
        on_window : callable, optional
            ``on_window(w, outputs)`` every ``checkpoint_every`` iterations and at the end.
        source : object, optional
            What tasks rebuild the objective from (a RunContext); default ``objective``.
        theta0 : tensor, optional
            Start parameters.

        Returns
        -------
        list of WindowOutput
            One output with all sub-models' parameters, the final state and the last
            window's records.
        """
        from daskie.graph.tasks import WindowOutput
        from daskie.train.loop import TrainState

        n_data = _n_data(objective)
        if self.batch is not None and self.batch < n_data and not hasattr(objective, "batch_loss"):
            raise SpecError(f"{type(self).__name__}.batch={self.batch}: this objective has no "
                            "minibatch loss (integral-equation residuals are coupled through "
                            "the quadrature); use batch=None")
        source = objective if source is None else source
        if resume is not None:
            w0, outs = resume
            st = outs[0].state
            carry = Carry(st.theta, st.loss, st.epoch, st.meta.get("grad_calls", 0),
                          st.meta.get("grad_calls_path", 0), st.done)
            w0, prior_wall = w0 + 1, st.wall_s
        else:
            theta = objective.init_params(seed) if theta0 is None else theta0.detach().clone()
            with _threads(threads):
                carry = Carry(theta, _loss(objective, theta))
            w0, prior_wall = 0, 0.0
        names = "+".join(objective.layout.names)
        label = type(self).__name__

        def output(c, records):
            state = TrainState(theta=c.theta, epoch=c.iteration, loss=c.loss, wall_s=c.wall_s,
                               done=c.done, meta={"grad_calls": c.grad_calls,
                                                  "grad_calls_path": c.grad_calls_path})
            params = {n: v.clone() for n, v in objective.layout.split(c.theta).items()}
            return [WindowOutput(0, state, params, records, c.loss)]

        t0 = time.perf_counter()
        carry.wall_s = prior_wall

        def record(c, previous, window):
            if c.last is None or c.iteration <= previous.iteration:
                c.wall_s = previous.wall_s
                return None
            c.wall_s = prior_wall + time.perf_counter() - t0
            return {"iteration": c.iteration, "epoch": c.iteration, "loss": c.loss,
                    "grad_calls": c.grad_calls, "grad_calls_path": c.grad_calls_path,
                    "wall_s": c.wall_s, **c.last, "window": window, "group": 0,
                    "submodels": names, "optimizer": label}

        iterations = self._iterations(objective, source, client, carry, seed, target_loss,
                                      threads, n_data)
        return self.checkpoint_windows(iterations, carry, record, output, window=w0,
                                       on_window=on_window, resume=resume)

    def _iterations(self, objective, source, client, carry, seed, target_loss, threads, n_data):
        """Yield the carry after each iteration until done."""
        if carry.done is not None:
            return
        if carry.loss < target_loss:
            carry.done = "target"
            yield carry
            return
        limit = self.max_iterations(n_data, carry.grad_calls)
        if client is None or client == "sync":
            with _threads(threads):
                while carry.done is None:
                    if limit is not None and limit <= 0:
                        yield replace(carry, done="budget", last=None)
                        return
                    carry = self.run_iteration(objective, source, seed, carry, n_data, target_loss)
                    _check_finite(carry)
                    limit = None if limit is None else limit - 1
                    yield carry
            return
        yield from self._distributed(client, source, carry, seed, target_loss, threads, n_data,
                                     limit)

    def _distributed(self, client, source, carry, seed, target_loss, threads, n_data, limit,
                     lookahead=2):
        from daskie.collectives.spmd import cluster_workers

        workers = sorted(cluster_workers(client))
        token = uuid.uuid4().hex
        [src] = client.scatter([source], broadcast=True, hash=False)
        carry_f = client.scatter(carry, hash=False)
        pending = deque()
        k = carry.iteration
        submitted = 0
        try:
            while True:
                while len(pending) < lookahead and (limit is None or submitted < limit):
                    carry_f = self.submit_iteration(client, src, seed, carry_f, k, n_data,
                                                    target_loss, threads, token, workers)
                    pending.append(carry_f)
                    k += 1
                    submitted += 1
                if not pending:
                    yield replace(carry, done=carry.done or "budget", last=None)
                    return
                carry = pending.popleft().result()
                _check_finite(carry)
                yield carry
                if carry.done is not None:
                    return
        finally:
            for f in pending:
                f.cancel()

    # --- one iteration, serial or as tasks (subclasses) ------------------------------------
    def run_iteration(self, objective, source, seed, carry, n_data, target_loss):  # pragma: no cover
        raise NotImplementedError

    def submit_iteration(self, client, src, seed, carry_f, k, n_data, target_loss, threads,
                         token, workers):
        """Default: the whole iteration is one task (the sequential strategies)."""
        return client.submit(_iteration_task, self, src, seed, carry_f, n_data, target_loss,
                             threads, key=f"{self.label}-{token}-{k}", pure=False)


def _check_finite(carry):
    if not bool(torch.isfinite(carry.theta).all()):
        raise TrainingDiverged(f"parameters became non-finite at iteration {carry.iteration}")


def _iteration_task(strategy, source, seed, carry, n_data, target_loss, threads):
    if carry.done is not None:
        return carry
    with _threads(threads):
        return strategy.run_iteration(_objective(source), source, seed, carry, n_data, target_loss)


@dataclass(frozen=True)
class ParaFlow(_GradientFlowStrategy):
    """ParaFlow (seed 002 Algorithm 1): one Parareal iteration per gradient-flow window.

    The ``n_coarse`` fine propagations of a window are Dask futures started from the coarse
    predictions and run on the workers round-robin; the coarse correction is a chain of
    tasks; the iterate of least loss starts the next window. Without a client the same
    functions run in this process (same numbers).

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
        return max(0, (self.budget - used) // self.window_cost(n_data)[0])

    def _parareal_args(self, y0):
        return None if self.init == "coarse" else [y0] * (self.n_coarse + 1)

    def run_iteration(self, objective, source, seed, carry, n_data, target_loss):
        k = carry.iteration
        hist = parareal(_coarse_prop, _fine_prop, carry.theta, self.n_coarse, 1,
                        initial=self._parareal_args(carry.theta),
                        args=(source, self, seed, k, None))
        w1 = hist[1][1:]
        losses = [_loss_task(w, source, None) for w in w1]
        return _select(self, carry, n_data, target_loss, *w1, *losses)

    def submit_iteration(self, client, src, seed, carry_f, k, n_data, target_loss, threads,
                         token, workers):
        y0 = client.submit(_carry_theta, carry_f, key=f"paraflow-{token}-{k}-start", pure=False)
        hist = parareal_futures(client, _coarse_prop, _fine_prop, y0, self.n_coarse, 1,
                                initial=self._parareal_args(y0),
                                args=(src, self, seed, k, threads),
                                token=f"{token}-{k}", workers=workers)
        w1 = hist[1][1:]
        losses = [client.submit(_loss_task, w, src, threads, key=f"paraflow-{token}-{k}-loss-{n}",
                                pure=False, workers=[workers[n % len(workers)]])
                  for n, w in enumerate(w1)]
        return client.submit(_select, self, carry_f, n_data, target_loss, *w1, *losses,
                             key=f"paraflow-{token}-{k}-select", pure=False)


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

    def __post_init__(self):
        self._validate()
        _int("ParaFlowS", "n_fine", self.n_fine, 1)
        _int("ParaFlowS", "n_coarse", self.n_coarse, 1)

    def run_iteration(self, objective, source, seed, carry, n_data, target_loss):
        obj = objective
        k = carry.iteration
        fine_cost = min(self.batch or n_data, n_data) * self.n_fine
        left = self.budget - carry.grad_calls
        if fine_cost + n_data > left:
            return replace(carry, done="budget", last=None)
        eta_g = self.eta * self.n_fine
        f0 = gradient_steps(obj, carry.theta, self.eta, self.n_fine, self.batch,
                            _generator(seed, 0, k, 0))
        loss0, g = _value_and_grad(obj, carry.theta)
        g0 = carry.theta.detach() - eta_g * g
        calls, actions, stop = fine_cost + n_data, 1, "none"
        accepted, losses = [carry.theta.detach()], [carry.loss]
        for n in range(self.n_coarse):
            if n == 0:
                nxt = f0  # f_0 + G(W_0) - g_0 with G(W_0) = g_0
            else:
                if calls + n_data > left:
                    stop = "budget"
                    break
                _, g = _value_and_grad(obj, accepted[n])
                calls, actions = calls + n_data, actions + 1
                nxt = f0 + (accepted[n] - eta_g * g) - g0
            value = _loss(obj, nxt)
            if not value < losses[n]:  # Algorithm 2 line 8 (NaN counts as no decrease)
                stop = "increase"
                break
            accepted.append(nxt)
            losses.append(value)
        out = Carry(accepted[-1], losses[-1], carry.iteration + 1, carry.grad_calls + calls,
                    carry.grad_calls_path + calls)
        out.last = {"slice": len(accepted) - 1, "coarse_actions": actions, "break": stop,
                    "worker": _where()}
        _finish(out, carry, self, target_loss)
        return out


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

    def __post_init__(self):
        self._validate()
        _int("GradientDescent", "steps_per_record", self.steps_per_record, 1)

    def deterministic_repeat(self) -> bool:
        return False

    def max_iterations(self, n_data, used):
        steps = max(0, self.budget - used) // min(self.batch or n_data, n_data)
        return math.ceil(steps / self.steps_per_record)

    def run_iteration(self, objective, source, seed, carry, n_data, target_loss):
        per = min(self.batch or n_data, n_data)
        steps = min(self.steps_per_record, (self.budget - carry.grad_calls) // per)
        if steps <= 0:
            return replace(carry, done="budget", last=None)
        theta = gradient_steps(objective, carry.theta, self.eta, steps, self.batch,
                               _generator(seed, 1, carry.iteration))
        out = Carry(theta, _loss(objective, theta), carry.iteration + 1,
                    carry.grad_calls + steps * per, carry.grad_calls_path + steps * per)
        out.last = {"slice": -1, "coarse_actions": 0, "worker": _where()}
        _finish(out, carry, self, target_loss)
        return out
