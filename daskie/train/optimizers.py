"""Optimizers over one flat parameter vector, with plain, checkpointable state.

Every optimizer is a frozen dataclass with validated options and two methods:
``init_state(objective, theta)`` and ``step(objective, theta, state, epoch) ->
(theta, state, info)``; ``info["loss"]`` is the loss the step reports. State holds only
tensors and numbers (L-BFGS: torch's own state dict), so a run can stop and resume exactly.

* :class:`Adam` — seed 000's schedule ``lr / (1 + decay * epoch)``;
* :class:`LBFGS` — torch's L-BFGS with strong-Wolfe line search;
* :class:`LevenbergMarquardt` — Gauss-Newton with damping from the gain ratio
  (``docs/architecture.md``, measured facts: reaches MSE 1e-9 where first-order methods
  stall near 1e-6);
* :class:`Chain` — stages run one after another (e.g. Adam then L-BFGS).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from daskie.errors import SpecError, check_int
from daskie.train.objective import loss_and_grad
from daskie.train.protocols import HasGradient, HasNormalEquations, placement

__all__ = ["Optimizer", "Wrapper", "Adam", "LBFGS", "LevenbergMarquardt", "Chain", "Stopping"]


def _check(cond: bool, msg: str):
    if not cond:
        raise SpecError(msg)


def _numbers(owner: str, obj, *names):
    """Reject non-numeric options up front, naming them (comparisons would raise TypeError)."""
    for name in names:
        value = getattr(obj, name)
        values = value if isinstance(value, tuple) else (value,)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for v in values):
            raise SpecError(f"{owner}.{name} must be a finite number, got {value!r}")


def value_and_grad(objective, theta):
    """``(loss, gradient)`` at ``theta``: the objective's own method when it has one (a
    data-parallel objective sums over its shards there), else autograd through ``loss``."""
    if isinstance(objective, HasGradient):
        return objective.value_and_grad(theta)
    loss, g = loss_and_grad(objective.loss, theta)
    return float(loss), g


@dataclass(frozen=True)
class Stopping:
    """Convergence-based stopping of one optimizer stage (``steps="auto"``).

    Training ends at the first of: the error estimate within the tolerance (``"tol"``: within
    :meth:`goal`, ``margin * tol``), or
    no longer following the loss (``"ridge"``, :meth:`on_ridge`); the
    loss below the run's target (``"target"``); the loss at the discretization floor
    (``"floor"``: below ``floor``, or stalled within ``floor_band`` times it); a stall
    (``"stalled"``: the loss fell by less than the fraction ``min_decrease`` over the last
    ``window`` steps); ``max_wall_s`` seconds of training (``"time"``, only when set);
    ``max_steps`` steps (``"budget"``). Without ``max_wall_s`` every rule is a function of the
    losses and the parameters alone: the same call gives the same numbers at any machine load.

    Parameters
    ----------
    max_steps : int
        Step budget of the stage.
    max_wall_s : float or None
        Training time budget in seconds (None, the default: none; a result then never
        depends on how fast the machine was).
    window : int
        Steps over which a stall is judged.
    min_decrease : float
        Relative loss decrease over ``window`` below which training has stalled. Measured on
        the validation set: LM's loss falls by 2x or more per 50 steps while it is still
        converging (class 3 of issue 15: 1.5e-12 -> 7.9e-13 in the last 50 of 300 steps),
        and by under 1 % once it sits at a floor or a bad minimum.
    floor : float or None
        Loss of the reference (or exact) solution in the discretization; set by ``solve``
        from :func:`daskie.assess.discretization_floor`.
    floor_band : float
        A stall within this factor of ``floor`` counts as reaching the floor.
    tol : float or None
        Relative L2 error of the solution the run asks for; with an ``estimator``, training
        stops as soon as the estimate is within it. Set by ``solve(tol=...)``.
    margin : float or None
        Training stops when the estimate is within ``margin * tol``, so that an estimate
        that is low by up to ``1 / margin`` still leaves the true error within ``tol``.
        None (the default): the estimator's own ``margin`` (the lowest estimate / true
        error ratio measured for its kind: 0.75 for the refined reference, 0.3 for the
        residual estimate; see :mod:`daskie.estimate`), 0.5 for an estimator without one.
    estimator : callable, optional
        ``estimator(mu) -> {"error_estimate": ...}`` for a numpy callable ``mu`` (an
        :func:`daskie.estimate.error_estimator`); not part of the option's identity.
    estimate_factor : float
        The estimate is computed whenever the loss has fallen by this factor since it was
        last computed (4: the error by about 2), and before a stop for any other reason: a
        dozen or two estimates per run, at steps that depend on the losses only.
    ridge_factor : float
        Stop with ``"ridge"`` when the loss fell by this factor since an earlier estimate
        while the estimate fell by less than half (:meth:`on_ridge`). Measured on E3 from the
        reference's warm start: the relative error sat at 4.4e-4 for 400 LM steps while the
        loss kept falling; from a random start it reaches 1e-5 in 95 steps.
    """

    max_steps: int = 2000
    max_wall_s: float | None = None
    window: int = 50
    min_decrease: float = 0.1
    floor: float | None = None
    floor_band: float = 10.0
    tol: float | None = None
    estimator: object = field(default=None, repr=False, compare=False)
    margin: float | None = None
    estimate_factor: float = 4.0
    ridge_factor: float = 1e3

    def __post_init__(self):
        check_int("Stopping.max_steps", self.max_steps)
        check_int("Stopping.window", self.window)
        _numbers("Stopping", self, "min_decrease", "floor_band", "estimate_factor", "ridge_factor")
        _check(0 < self.min_decrease < 1, f"Stopping.min_decrease must lie in (0, 1), got {self.min_decrease}")
        _check(self.floor_band >= 1, f"Stopping.floor_band must be >= 1, got {self.floor_band}")
        _check(self.estimate_factor > 1,
               f"Stopping.estimate_factor must be > 1, got {self.estimate_factor}")
        _check(self.ridge_factor > 1, f"Stopping.ridge_factor must be > 1, got {self.ridge_factor}")
        _check(self.margin is None or (isinstance(self.margin, (int, float))
                                       and not isinstance(self.margin, bool)
                                       and 0 < self.margin <= 1),
               f"Stopping.margin must lie in (0, 1] or be None, got {self.margin!r}")
        for name in ("max_wall_s", "floor"):
            v = getattr(self, name)
            _check(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                 and math.isfinite(v) and v >= 0),
                   f"Stopping.{name} must be a number >= 0 or None, got {v!r}")
        _check(self.tol is None or (isinstance(self.tol, (int, float)) and not isinstance(self.tol, bool)
                                    and math.isfinite(self.tol) and self.tol > 0),
               f"Stopping.tol must be a positive number or None, got {self.tol!r}")
        _check(self.estimator is None or callable(self.estimator),
               f"Stopping.estimator must be callable or None, got {self.estimator!r}")

    def check(self, losses, wall_s: float) -> str | None:
        """Why to stop after the losses ``losses`` (oldest first, the last one current) and
        ``wall_s`` seconds of training, or None (the loss- and time-based rules; the
        estimate is :meth:`estimate_due` and the loop's)."""
        loss = losses[-1]
        if self.floor is not None and loss <= self.floor:
            return "floor"
        if len(losses) > self.window and loss > (1.0 - self.min_decrease) * losses[-1 - self.window]:
            if self.floor is not None and loss <= self.floor_band * self.floor:
                return "floor"
            return "stalled"
        if self.max_wall_s is not None and wall_s >= self.max_wall_s:
            return "time"
        return None

    def on_ridge(self, seen, loss: float, estimate: float) -> bool:
        """Whether the loss has stopped telling about the error: it fell by ``ridge_factor``
        or more since an earlier estimate (``seen``: ``(loss, estimate)`` pairs) while the
        estimate fell by less than half. The loss then improves only at the collocation
        points (a unit steep between them, or an overfit of too few points), and more steps
        of this run will not meet the tolerance: ``solve`` restarts from another start."""
        return any(old_loss >= self.ridge_factor * loss and estimate > 0.5 * old_estimate
                   for old_loss, old_estimate in seen)

    def goal(self) -> float:
        """The estimate at which training stops: ``margin * tol`` (the estimator's margin
        when ``margin`` is None)."""
        margin = self.margin
        if margin is None:
            margin = getattr(self.estimator, "margin", 0.5)
        return margin * self.tol

    def estimate_due(self, loss: float, last: tuple | None, stopping: bool) -> bool:
        """Whether to compute the error estimate now: there is a tolerance and an estimator,
        and training is about to stop for another reason, or the loss has fallen far enough
        since the last estimate ``last`` (a ``(loss, estimate)`` pair; None: none yet).

        Far enough is ``estimate_factor`` (4: the error by about 2), or sooner: to the loss
        at which the estimate is predicted to reach 0.8 times :meth:`goal` (the error
        falling as the square root of the loss, as for the least-squares residual of a
        well-posed equation; aiming a fifth below the goal, so that a prediction a little
        optimistic does not cost a second estimate), but by at least
        ``sqrt(estimate_factor)``, so that a run hovering just above the goal does not pay
        for an estimate at every step. A function of the losses only: the same run checks
        at the same steps on any machine.
        """
        if self.tol is None or self.estimator is None:
            return False
        if stopping or last is None:
            return True
        last_loss, last_estimate = last
        goal = self.goal()
        fall = self.estimate_factor
        if last_estimate > goal:
            wanted = (last_estimate / (0.8 * goal)) ** 2
            fall = min(fall, max(wanted, math.sqrt(self.estimate_factor)))
        return loss * fall <= last_loss


class Optimizer:
    """Base class of daskie's optimizers (see the module docstring for the protocol)."""

    steps: int
    #: Convergence-based stopping (None: run the fixed ``steps``).
    stop = None
    #: True when each parameter's update reads only its own gradient entries (Adam): data
    #: split by sub-model needs no gradient exchange per step.
    elementwise = False

    @property
    def label(self) -> str:
        """Short name for records."""
        return type(self).__name__

    def stages(self) -> tuple["Optimizer", ...]:
        """The optimizers run in turn (just ``self`` unless a :class:`Chain`)."""
        return (self,)

    def __rshift__(self, other: "Optimizer") -> "Chain":
        return Chain((*self.stages(), *other.stages()))


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam with seed 000's decay ``lr_k = lr / (1 + decay * k)``.

    Parameters
    ----------
    lr : float
        Initial learning rate. The default 1e-3 trains faster on daskie's float64 problems;
        seed 000 uses 1e-4 (``Adam(lr=1e-4)``), with the same decay.
    decay : float
        Schedule constant (seed 000: 1e-3).
    betas, eps : Adam's constants.
    steps : int
        Number of steps of this stage.
    """

    lr: float = 1e-3
    decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    steps: int = 2000

    #: Each parameter's update reads only its own gradient entry (no norms, no dot products):
    #: ranks owning disjoint parameters can update them without exchanging gradients.
    elementwise = True

    def __post_init__(self):
        _numbers("Adam", self, "lr", "decay", "betas", "eps")
        _check(self.lr > 0, f"Adam.lr must be positive, got {self.lr}")
        _check(self.decay >= 0, f"Adam.decay must be >= 0, got {self.decay}")
        _check(all(0 <= b < 1 for b in self.betas), f"Adam.betas must lie in [0, 1), got {self.betas}")
        _check(self.eps > 0, f"Adam.eps must be positive, got {self.eps}")
        check_int("Adam.steps", self.steps, 0)

    def init_state(self, objective, theta):
        """Zero moments."""
        return {"m": torch.zeros_like(theta), "v": torch.zeros_like(theta), "t": 0}

    def step(self, objective, theta, state, epoch):
        """One Adam step at the scheduled learning rate."""
        loss, g = value_and_grad(objective, theta)
        b1, b2 = self.betas
        t = state["t"] + 1
        m = b1 * state["m"] + (1 - b1) * g
        v = b2 * state["v"] + (1 - b2) * g * g
        lr = self.lr / (1.0 + self.decay * state["t"])
        step = lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + self.eps)
        return (theta.detach() - step), {"m": m, "v": v, "t": t}, {"loss": loss, "lr": lr}


class Wrapper(Optimizer):
    """Base of an optimizer that takes the steps of its ``inner`` one with something done
    around each: the budget, the stopping rule and the label are the inner optimizer's."""

    @property
    def steps(self) -> int:
        return self.inner.steps

    @property
    def stop(self):
        return self.inner.stop

    @property
    def label(self) -> str:
        return self.inner.label


@dataclass(frozen=True)
class LBFGS(Optimizer):
    """torch's L-BFGS (one iteration per step, strong-Wolfe line search by default).

    Parameters
    ----------
    lr : float
        Initial step length.
    history : int
        Number of correction pairs kept.
    line_search : str or None
        ``"strong_wolfe"`` or ``None``.
    max_eval : int
        Loss evaluations allowed to one iteration's line search.
    steps : int
        Iterations of this stage.
    """

    lr: float = 1.0
    history: int = 50
    line_search: str | None = "strong_wolfe"
    max_eval: int = 25
    steps: int = 500

    def __post_init__(self):
        _numbers("LBFGS", self, "lr")
        check_int("LBFGS.max_eval", self.max_eval)
        _check(self.lr > 0, f"LBFGS.lr must be positive, got {self.lr}")
        check_int("LBFGS.history", self.history)
        _check(self.line_search in ("strong_wolfe", None),
               f"LBFGS.line_search must be 'strong_wolfe' or None, got {self.line_search!r}")
        check_int("LBFGS.steps", self.steps, 0)

    def _make(self, param):
        return torch.optim.LBFGS([param], lr=self.lr, max_iter=1, max_eval=self.max_eval,
                                 history_size=self.history,
                                 line_search_fn=self.line_search, tolerance_grad=0.0,
                                 tolerance_change=0.0)

    def init_state(self, objective, theta):
        """Empty L-BFGS memory."""
        return {"torch": None}

    def step(self, objective, theta, state, epoch):
        """One L-BFGS iteration (with its line search)."""
        param = theta.detach().clone().requires_grad_(True)
        opt = self._make(param)
        if state["torch"] is not None:
            # torch updates its state tensors in place: work on a copy, so the input state
            # stays valid (windows must be pure functions of their inputs).
            opt.load_state_dict(copy.deepcopy(state["torch"]))

        def closure():
            opt.zero_grad()
            loss = objective.loss(param)
            loss.backward()
            return loss

        first = opt.step(closure)
        with torch.no_grad():
            loss = float(objective.loss(param))
        return param.detach(), {"torch": copy.deepcopy(opt.state_dict())}, \
            {"loss": loss, "loss_before": float(first.detach())}


_UNITS = {"": 1, "b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40}


def parse_bytes(value, name: str = "memory_budget") -> int | None:
    """``None``, a number of bytes, or a string such as ``"512MB"``/``"2 GB"`` -> bytes."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "").removesuffix("ib")
        num = text.rstrip("kmgtb")
        unit = text[len(num):]
        unit = unit if unit.endswith("b") or unit == "" else unit + "b"
        try:
            if unit in _UNITS and float(num) > 0:
                return int(float(num) * _UNITS[unit])
        except ValueError:
            pass
    raise SpecError(f"{name} must be a positive number of bytes or a string like '2GB', got {value!r}")


@dataclass(frozen=True)
class LevenbergMarquardt(Optimizer):
    """Gauss-Newton with Levenberg-Marquardt damping, updated from the gain ratio.

    Each step solves ``(J^T J + mu D) delta = -J^T r`` with the exact Jacobian (per-point
    parameter gradients, never ``jacrev`` over the batched residual) and accepts the step
    when the actual loss reduction is positive; ``mu`` follows Nielsen's rule from the gain
    ratio ``rho = actual / predicted reduction`` (a trust region in damping form). The
    direct solve (Cholesky of the P x P system) is used while the Jacobian and the system fit
    ``memory_budget``; beyond it, a matrix-free conjugate-gradient solve on
    ``J^T J v`` (one jvp and one vjp per product) with Levenberg damping.

    Parameters
    ----------
    damping : float
        Initial damping ``mu``.
    scaling : str
        ``"levenberg"`` (``D = I``) or ``"marquardt"`` (``D = diag(J^T J)``; direct solve only).
    max_damping : float
        Stop (converged or stuck) when ``mu`` exceeds this: the step-size floor.
    max_tries : int
        Rejected trial steps allowed within one step before giving up on it.
    steps : int or "auto"
        Iterations of this stage; ``"auto"``: until converged (see ``stop``), within
        ``stop.max_steps``.
    solver : str
        ``"auto"`` (direct within the budget, else CG), ``"direct"`` or ``"cg"``.
    memory_budget : int, str or None
        Bytes one process may spend on ``J`` plus ``J^T J`` (``"2GB"``); None: no limit.
    cg_iters : int
        Conjugate-gradient iterations per trial step at most.
    cg_tol : float
        Relative residual at which CG stops.
    stop : Stopping, optional
        Convergence-based stopping; ``steps="auto"`` sets ``Stopping()`` and its budget.
        With an int ``steps`` and no ``stop``, exactly ``steps`` iterations run (unless the
        target is met or the damping hits ``max_damping``), as before.
    """

    damping: float = 1e-3
    scaling: str = "marquardt"
    max_damping: float = 1e10
    max_tries: int = 12
    steps: int | str = 300
    solver: str = "auto"
    memory_budget: int | str | None = None
    cg_iters: int = 200
    cg_tol: float = 1e-10
    stop: Stopping | None = None

    def __post_init__(self):
        if self.stop is not None and not isinstance(self.stop, Stopping):
            raise SpecError(f"LevenbergMarquardt.stop must be a Stopping or None, got {self.stop!r}")
        if isinstance(self.steps, str) and self.steps == "auto":
            stop = self.stop if self.stop is not None else Stopping()
            object.__setattr__(self, "stop", stop)
            object.__setattr__(self, "steps", stop.max_steps)
        _numbers("LevenbergMarquardt", self, "damping", "max_damping", "cg_tol")
        _check(self.damping > 0, f"LevenbergMarquardt.damping must be positive, got {self.damping}")
        _check(self.scaling in ("levenberg", "marquardt"),
               f"LevenbergMarquardt.scaling must be 'levenberg' or 'marquardt', got {self.scaling!r}")
        _check(self.max_damping > self.damping,
               f"LevenbergMarquardt.max_damping must exceed damping, got {self.max_damping}")
        check_int("LevenbergMarquardt.max_tries", self.max_tries)
        check_int("LevenbergMarquardt.steps", self.steps, 0, alternative='"auto"')
        _check(self.solver in ("auto", "direct", "cg"),
               f"LevenbergMarquardt.solver must be 'auto', 'direct' or 'cg', got {self.solver!r}")
        parse_bytes(self.memory_budget, "LevenbergMarquardt.memory_budget")
        check_int("LevenbergMarquardt.cg_iters", self.cg_iters)
        _check(0 < self.cg_tol < 1, f"LevenbergMarquardt.cg_tol must lie in (0, 1), got {self.cg_tol}")

    def init_state(self, objective, theta):
        """Initial damping."""
        return {"damping": float(self.damping), "nu": 2.0}

    def uses_cg(self, objective) -> bool:
        """Whether steps on ``objective`` take the matrix-free CG solve."""
        if self.solver != "auto":
            return self.solver == "cg"
        budget = parse_bytes(self.memory_budget)
        if budget is None:
            return False
        p = objective.layout.total
        itemsize = placement(objective)[1].itemsize
        return objective.jacobian_bytes() + itemsize * p * p > budget  # J and J^T J

    def normal_equations(self, objective, theta):
        """``(loss, J^T J, J^T r)`` at ``theta`` (data-parallel objectives sum these over shards)."""
        if isinstance(objective, HasNormalEquations):
            return objective.normal_equations(theta)
        r, J = objective.jacobian(theta)
        return float(r @ r), J.T @ J, J.T @ r

    def solve_step(self, A, g, damping):
        """The damped Gauss-Newton step ``-(A + mu D)^-1 g``."""
        D = torch.diagonal(A).clamp_min(1e-12) if self.scaling == "marquardt" else torch.ones_like(g)
        M = A + damping * torch.diag(D)
        L, info = torch.linalg.cholesky_ex(M)
        if int(info) == 0:
            return -torch.cholesky_solve(g[:, None], L)[:, 0]
        return -torch.linalg.lstsq(M, g[:, None]).solution[:, 0]

    def cg_step(self, product, g, damping):
        """``-(A + mu I)^-1 g`` by conjugate gradients with ``product(v) = A v``;
        returns ``(delta, A delta, iterations)``."""
        x = torch.zeros_like(g)
        r = -g.clone()
        p = r.clone()
        rr = r @ r
        stop = (self.cg_tol ** 2) * rr
        k = 0
        for k in range(1, self.cg_iters + 1):
            Ap = product(p) + damping * p
            alpha = rr / (p @ Ap)
            x = x + alpha * p
            r = r - alpha * Ap
            rr_new = r @ r
            if rr_new <= stop:
                break
            p = r + (rr_new / rr) * p
            rr = rr_new
        # r = -g - (A + mu I) x, so A x = -g - r - mu x, at no extra product.
        return x, -g - r - damping * x, k

    def step(self, objective, theta, state, epoch):
        """One accepted LM step (or the last rejected try when none is accepted)."""
        if self.uses_cg(objective):
            loss, grad = value_and_grad(objective, theta)
            g = 0.5 * grad  # loss = r.r, so its gradient is 2 J^T r

            def solve(mu):
                delta, a_delta, iters = self.cg_step(
                    lambda v: objective.gauss_newton_product(theta, v), g, mu)
                return delta, a_delta, {"cg_iters": iters}

            return self._damping_loop(objective.loss, theta, state, loss, g, solve)
        loss, A, g = self.normal_equations(objective, theta)
        return self.step_from_normal_equations(objective.loss, theta, state, loss, A, g)

    def step_from_normal_equations(self, loss_fn, theta, state, loss, A, g):
        """Damping loop given the normal equations; ``loss_fn(theta)`` evaluates trial points."""
        def solve(mu):
            delta = self.solve_step(A, g, mu)
            return delta, A @ delta, {}

        return self._damping_loop(loss_fn, theta, state, loss, g, solve)

    def _damping_loop(self, loss_fn, theta, state, loss, g, solve):
        mu, nu = state["damping"], state["nu"]
        theta = theta.detach()
        tries = 0
        while True:
            tries += 1
            delta, a_delta, extra = solve(mu)
            pred = -(2.0 * (delta @ g) + delta @ a_delta)
            with torch.no_grad():
                new_loss = float(loss_fn(theta + delta))
            rho = (loss - new_loss) / float(pred) if float(pred) > 0 else -1.0
            if math.isfinite(new_loss) and rho > 0:
                mu = mu * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                info = {"loss": new_loss, "damping": mu, "gain_ratio": rho, "tries": tries, **extra}
                return theta + delta, {"damping": max(mu, 1e-15), "nu": 2.0}, info
            mu, nu = mu * nu, nu * 2.0
            if tries >= self.max_tries or mu > self.max_damping:
                info = {"loss": loss, "damping": mu, "gain_ratio": rho, "tries": tries,
                        "stalled": mu > self.max_damping, **extra}
                return theta, {"damping": min(mu, self.max_damping), "nu": nu}, info


@dataclass(frozen=True)
class Chain(Optimizer):
    """Optimizers run one after another, e.g. ``Adam(steps=2000) >> LBFGS(steps=500)``."""

    parts: tuple[Optimizer, ...] = ()

    def __post_init__(self):
        _check(len(self.parts) > 0, "Chain needs at least one optimizer")
        for k, p in enumerate(self.parts):
            _check(isinstance(p, Optimizer) and not isinstance(p, Chain),
                   f"Chain.parts[{k}] must be a single daskie optimizer, got {p!r}")

    @property
    def steps(self) -> int:
        """Total steps of all stages."""
        return sum(p.steps for p in self.parts)

    @property
    def label(self) -> str:
        return "+".join(p.label for p in self.parts)

    def stages(self):
        return tuple(self.parts)
