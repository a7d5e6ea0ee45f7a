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

Without a client (or ``"sync"``) the same task functions run in this process, in the same
order: the same numbers as on a cluster for the same seed.
"""

from __future__ import annotations

import math
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass

import torch

from daskie.errors import SpecError, TrainingDiverged, check_int
from daskie.strategies.base import ObjectiveStrategy
from daskie.strategies.paraflow import _generator, _objective, _threads, _where
from daskie.train.trust_region import (LossFunction, Point, SR1Memory, TrustRegionOptions,
                                       complete, evaluate, evaluate_trial, is_least_squares,
                                       reduction_ratio, resolve_model, trust_region_iteration)

__all__ = ["APTS", "SAPTS"]


# --- data shards ------------------------------------------------------------------------------
class _Rows:
    """The rows ``index`` of an objective with ``batch_loss`` as an objective of its own."""

    def __init__(self, objective, index):
        self.objective = objective
        self.index = index

    def loss(self, theta):
        return self.objective.batch_loss(theta, self.index)


_SHARDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _shard(source, objective, k: int, n: int):
    """Data shard k of n of the objective and the factor that scales its loss to an estimate
    of the full loss. Built once per process and source."""
    if n == 1:
        return objective, 1.0
    from daskie.graph.tasks import RunContext
    from daskie.train.module import ModuleObjective

    cache = _SHARDS.setdefault(source, {})
    if (k, n) not in cache:
        if isinstance(source, RunContext):
            from daskie.train.objective import Objective

            disc = source.formulation.discretize(source.problem, seed=source.seed, shard=(k, n))
            cache[(k, n)] = Objective(disc), float(n)
        elif callable(getattr(objective, "shard", None)):
            cache[(k, n)] = objective.shard(k, n), float(n)
        else:
            rows = torch.arange(k, _n_data(objective), n)
            if isinstance(objective, ModuleObjective):  # a module of its own: Jacobians too
                part = ModuleObjective(objective.module, objective.loss_fn,
                                       tuple(t[rows] for t in objective.data))
            else:
                part = _Rows(objective, rows)
            # sums of squares add up over shards; other losses are taken as means
            cache[(k, n)] = part, float(n) if is_least_squares(objective) else 1.0
    return cache[(k, n)]


def _n_data(objective) -> int:
    return int(getattr(objective, "n_data"))


# --- what passes between iterations ---------------------------------------------------------
@dataclass
class Carry:
    """The global state between iterations (small: parameters, gradient, radius, L-SR1 pairs).

    ``loss`` and ``grad`` are the global loss and gradient at ``theta`` on the data of the
    iteration about to run; ``monitor`` is the full-data loss at ``theta`` (the records' loss).
    """

    theta: torch.Tensor
    loss: float
    grad: torch.Tensor
    radius: float
    S: torch.Tensor | None = None
    Y: torch.Tensor | None = None
    monitor: float = math.nan
    iteration: int = 0
    grad_calls: int = 0
    loss_calls: int = 0
    done: str | None = None
    last: dict | None = None
    wall_s: float = 0.0


@dataclass
class LocalStep:
    """One subdomain's result: its step, the decrease of its local loss and its costs."""

    step: torch.Tensor
    decrease: float
    iterations: int
    grad_calls: int
    loss_calls: int
    worker: str


# --- task functions (module level so they pickle) ---------------------------------------------
def _local_task(strategy, source, carry, i, seed, model, threads):
    if carry.done is not None:
        return None
    with _threads(threads):
        return strategy.local_solve(_objective(source), source, carry, i, seed, model)


def _global_task(strategy, source, carry, seed, target_loss, model, threads, *local_steps):
    if carry.done is not None:
        return carry
    with _threads(threads):
        return strategy.global_step(_objective(source), source, carry, seed, target_loss, model,
                                    local_steps)


def _check_finite(carry):
    if not bool(torch.isfinite(carry.theta).all()):
        raise TrainingDiverged(f"parameters became non-finite at iteration {carry.iteration}")


# --- the strategies -----------------------------------------------------------------------------
@dataclass(frozen=True)
class APTS(TrustRegionOptions, ObjectiveStrategy):
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

    window = None
    #: True when each iteration has its own data D (SAPTS's minibatches).
    fresh_data = False

    def __post_init__(self):
        self._validate_trust_region()
        owner = type(self).__name__
        check_int(f"{owner}.subdomains", self.subdomains)
        check_int(f"{owner}.local_steps", self.local_steps)
        check_int(f"{owner}.epochs", self.epochs)
        check_int(f"{owner}.checkpoint_every", self.checkpoint_every)

    # Strategy's graph hook (solve reads the groups; the window graph is not used).
    def groups(self, disc, plan):
        return (tuple(disc.submodels),)

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
        shard, scale = _shard(source, objective, i, self.subdomains)
        return LossFunction(shard, scale)

    def check(self, objective, source):
        """Refuse objectives this strategy cannot split (raised before any work)."""
        from daskie.graph.tasks import RunContext

        n = self.subdomains
        if n == 1 or isinstance(source, RunContext) or callable(getattr(objective, "shard", None)):
            return
        if not hasattr(objective, "batch_loss"):
            raise SpecError(f"{type(self).__name__}.subdomains={n}: this objective cannot be split "
                            "into data shards (no batch_loss or shard(k, n)); train it through "
                            "daskie.solve, whose formulation discretizes the shards")
        if n > _n_data(objective):
            raise SpecError(f"{type(self).__name__}.subdomains={n} exceeds the {_n_data(objective)} "
                            "rows of the data")

    def resolve_model(self, objective) -> str:
        """The trust-region model used (``"auto"``: Gauss-Newton for least squares)."""
        return resolve_model(self.model, objective, type(self).__name__)

    # --- the two halves of an iteration ----------------------------------------------------------
    def local_solve(self, objective, source, carry: Carry, i: int, seed: int, model: str):
        """Subdomain i's preconditioning step (Algorithm 1 lines 5-6)."""
        n = self.subdomains
        fn = self.local_function(objective, source, i, carry.iteration, seed)
        theta0 = carry.theta.detach()
        start = evaluate(fn, theta0, model)
        local = fn.shifted(carry.grad - start.grad, theta0)  # Eq 3-4
        point = Point(theta0, start.loss, carry.grad, start.hessian)
        rule = self.rule.scaled(1.0 / n)
        cap = radius = carry.radius / n
        memory = SR1Memory(carry.S, carry.Y, self.memory) if model == "sr1" else None
        taken = 0
        for _ in range(self.local_steps):
            left = cap - float((point.theta - theta0).norm())
            if left <= 1e-12 * cap:  # the local step reached the local boundary
                break
            point = complete(local, point, model)
            point, radius, memory, _ = trust_region_iteration(local, point, radius, rule, model,
                                                              memory, step_bound=left)
            taken += 1
        return LocalStep(point.theta - theta0, start.loss - point.loss, taken,
                         fn.grad_calls + local.grad_calls, fn.loss_calls + local.loss_calls,
                         _where())

    def global_step(self, objective, source, carry: Carry, seed, target_loss, model, local_steps):
        """Eq 6-7 on the summed local steps, then one global trust-region iteration."""
        k = carry.iteration
        fn = self.global_function(objective, source, k, seed)
        step = torch.zeros_like(carry.theta)
        predicted = 0.0
        for loc in local_steps:  # in subdomain order: the same sums wherever the tasks ran
            step = step + loc.step
            predicted += loc.decrease
        memory = SR1Memory(carry.S, carry.Y, self.memory) if model == "sr1" else None
        point = Point(carry.theta, carry.loss, carry.grad)
        trial = carry.theta + step
        trial_loss, trial_grad = evaluate_trial(fn, trial, model)
        rho = reduction_ratio(carry.loss, trial_loss, predicted)
        accepted, radius = self.rule.update(rho, carry.radius)
        if accepted:
            point = Point(trial, trial_loss, trial_grad)
            if memory is not None:
                memory = memory.add(step, trial_grad - carry.grad)
        point = complete(fn, point, model)
        nxt, new_radius, memory, trial_info = trust_region_iteration(fn, point, radius, self.rule,
                                                                     model, memory)
        total = self.iterations(self._rows(objective))
        extra_grads = 0
        if self.fresh_data:  # SAPTS: the next iteration's loss and gradient on its minibatch
            nfn = self.global_function(objective, source, k + 1, seed)
            loss_next, grad_next = nfn.value_and_grad(nxt.theta)
            monitor, extra_grads = self._monitor(objective, nxt.theta), nfn.grad_calls
        else:
            nxt = complete(fn, nxt, "first-order")  # Gauss-Newton trials carry no gradient
            loss_next, grad_next, monitor = nxt.loss, nxt.grad, nxt.loss
        out = Carry(nxt.theta, loss_next, grad_next, new_radius,
                    memory.S if memory else None, memory.Y if memory else None, monitor, k + 1,
                    carry.grad_calls + fn.grad_calls + extra_grads
                    + sum(s.grad_calls for s in local_steps),
                    carry.loss_calls + fn.loss_calls + sum(s.loss_calls for s in local_steps))
        out.last = {"rho": float(rho), "accepted": bool(accepted), "rho_global": float(trial_info.rho),
                    "accepted_global": bool(trial_info.accepted), "radius": float(new_radius),
                    "step_norm": float(step.norm()),
                    "local_steps": sum(s.iterations for s in local_steps) / len(local_steps),
                    "data_epoch": self.data_epoch(k + 1, self._rows(objective)),
                    "worker": _where()}
        if out.monitor < target_loss:
            out.done = "target"
        elif not accepted and not trial_info.accepted and new_radius <= self.min_radius:
            out.done = "stalled"
        elif float(grad_next.norm()) == 0.0:
            out.done = "stalled"
        elif out.iteration >= total:
            out.done = "epochs"
        return out

    def _rows(self, objective) -> int:
        n = getattr(objective, "n_data", None)
        return 0 if n is None else int(n)

    def _monitor(self, objective, theta) -> float:
        return LossFunction(objective).value(theta)

    # --- entry points ----------------------------------------------------------------------------
    def train(self, objective, client=None, *, seed: int = 0, target_loss: float = 0.0,
              threads: int | None = 1, resume=None, on_window=None, source=None, theta0=None):
        """Train ``objective`` from ``theta0`` (default ``objective.init_params(seed)``).

        Parameters
        ----------
        objective : Objective or ModuleObjective
            The flat-parameter objective (this process's copy).
        client : distributed.Client, "sync" or None
            Where the tasks run; ``"sync"``/``None``: in this process (same numbers).
        seed : int
            Seed of the initial parameters and of SAPTS's minibatches.
        target_loss : float
            Stop once the full loss falls below it.
        threads : int or None
            torch threads inside the computation (serial runs restore the caller's).
        resume : (int, list of WindowOutput), optional
            The last completed checkpoint window to continue from.
        on_window : callable, optional
            ``on_window(w, outputs)`` every ``checkpoint_every`` iterations and at the end.
        source : object, optional
            What tasks rebuild the objective and its shards from (a RunContext); default
            ``objective``.
        theta0 : tensor, optional
            Start parameters.

        Returns
        -------
        list of WindowOutput
            One output with the parameters, the final state (its ``opt_state`` holds the
            radius, gradient and L-SR1 pairs to resume from) and the last window's records.
        """
        from daskie.graph.tasks import WindowOutput
        from daskie.train.loop import TrainState

        source = objective if source is None else source
        self.check(objective, source)
        model = self.resolve_model(objective)
        if resume is not None:
            w0, outs = resume
            st = outs[0].state
            o = st.opt_state
            carry = Carry(st.theta, o["loss"], o["grad"], o["radius"], o["S"], o["Y"], st.loss,
                          st.epoch, st.meta.get("grad_calls", 0), st.meta.get("loss_calls", 0),
                          st.done)
            w0, prior_wall = w0 + 1, st.wall_s
        else:
            theta = objective.init_params(seed) if theta0 is None else theta0.detach().clone()
            with _threads(threads):
                fn = self.global_function(objective, source, 0, seed)
                loss, grad = fn.value_and_grad(theta)
                monitor = self._monitor(objective, theta) if self.fresh_data else loss
            carry = Carry(theta, loss, grad, float(self.radius), monitor=monitor,
                          grad_calls=fn.grad_calls)
            w0, prior_wall = 0, 0.0
        names = "+".join(objective.layout.names)
        label = type(self).__name__

        def output(c, records):
            state = TrainState(theta=c.theta, epoch=c.iteration, loss=c.monitor, wall_s=c.wall_s,
                               done=c.done,
                               opt_state={"loss": c.loss, "grad": c.grad, "radius": c.radius,
                                          "S": c.S, "Y": c.Y},
                               meta={"grad_calls": c.grad_calls, "loss_calls": c.loss_calls})
            params = {n: v.clone() for n, v in objective.layout.split(c.theta).items()}
            return [WindowOutput(0, state, params, records, c.monitor)]

        t0 = time.perf_counter()
        carry.wall_s = prior_wall

        def record(c, previous, window):
            c.wall_s = prior_wall + time.perf_counter() - t0
            return {"iteration": c.iteration, "epoch": c.iteration, "loss": c.monitor,
                    "grad_calls": c.grad_calls, "loss_calls": c.loss_calls,
                    "wall_s": c.wall_s, "step_s": c.wall_s - previous.wall_s, **c.last,
                    "window": window, "group": 0, "submodels": names, "optimizer": label}

        iterations = self._iterations(objective, source, client, carry, seed, target_loss,
                                      threads, model)
        return self.checkpoint_windows(iterations, carry, record, output, window=w0,
                                       on_window=on_window, resume=resume)

    def _iterations(self, objective, source, client, carry, seed, target_loss, threads, model):
        """Yield the carry after each iteration until done."""
        if carry.done is not None:
            return
        if client is None or client == "sync":
            with _threads(threads):
                while carry.done is None:
                    steps = [self.local_solve(objective, source, carry, i, seed, model)
                             for i in range(self.subdomains)]
                    carry = self.global_step(objective, source, carry, seed, target_loss, model,
                                             steps)
                    _check_finite(carry)
                    yield carry
            return
        yield from self._distributed(client, source, carry, seed, target_loss, threads, model)

    def _distributed(self, client, source, carry, seed, target_loss, threads, model, lookahead=2):
        from daskie.collectives.spmd import cluster_workers

        workers = sorted(cluster_workers(client))
        token = uuid.uuid4().hex
        [src] = client.scatter([source], broadcast=True, hash=False)
        carry_f = client.scatter(carry, hash=False)
        pending = deque()
        k = carry.iteration
        try:
            while True:
                while len(pending) < lookahead:
                    steps = [client.submit(_local_task, self, src, carry_f, i, seed, model, threads,
                                           key=f"{self.label}-{token}-{k}-local-{i}", pure=False,
                                           workers=[workers[i % len(workers)]])
                             for i in range(self.subdomains)]
                    carry_f = client.submit(_global_task, self, src, carry_f, seed, target_loss,
                                            model, threads, *steps,
                                            key=f"{self.label}-{token}-{k}-global", pure=False)
                    pending.append(carry_f)
                    k += 1
                carry = pending.popleft().result()
                _check_finite(carry)
                yield carry
                if carry.done is not None:
                    return
        finally:
            for f in pending:
                f.cancel()


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
        if not hasattr(objective, "batch_loss"):
            raise SpecError("SAPTS needs minibatches: this objective has no batch_loss "
                            "(integral-equation residuals are coupled through the quadrature); "
                            "use APTS")
        if self.model == "gauss-newton":
            raise SpecError("SAPTS.model='gauss-newton' is not available on minibatches; use "
                            "'sr1' or 'first-order'")

    def resolve_model(self, objective):
        return "sr1" if self.model == "auto" else self.model

    def batches(self, n_data: int) -> int:
        """Minibatches per epoch."""
        return max(1, math.ceil(n_data / self.minibatch))

    def iterations(self, n_data):
        return self.epochs * self.batches(n_data)

    def data_epoch(self, iteration, n_data):
        return iteration / self.batches(n_data)

    def minibatch_rows(self, n_data: int, iteration: int, seed: int):
        """Rows of iteration ``iteration``'s minibatch (seeded; independent of where it runs)."""
        epoch, b = divmod(iteration, self.batches(n_data))
        perm = torch.randperm(n_data, generator=_generator(seed, 4, epoch))
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
        return LossFunction(_Rows(objective, self.minibatch_rows(_n_data(objective), iteration,
                                                                 seed)))

    def local_function(self, objective, source, i, iteration, seed):
        rows = self.minibatch_rows(_n_data(objective), iteration, seed)
        return LossFunction(_Rows(objective, self.microbatch_rows(rows, i)))

