"""Optimizers over one flat parameter vector, with plain, checkpointable state.

Every optimizer is a frozen dataclass with validated options and two methods:
``init_state(objective, theta)`` and ``step(objective, theta, state, epoch) ->
(theta, state, info)``; ``info["loss"]`` is the loss the step reports. State holds only
tensors and numbers (L-BFGS: torch's own state dict), so a run can stop and resume exactly.

* :class:`Adam` — seed 000's schedule ``lr / (1 + decay * epoch)``;
* :class:`LBFGS` — torch's L-BFGS with strong-Wolfe line search;
* :class:`LevenbergMarquardt` — Gauss-Newton with damping from the gain ratio (DESIGN.md
  section 6: reaches MSE 1e-9 where first-order methods stall near 1e-6);
* :class:`Chain` — stages run one after another (e.g. Adam then L-BFGS).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from daskie.errors import SpecError, check_int

__all__ = ["Optimizer", "Adam", "LBFGS", "LevenbergMarquardt", "Chain"]


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


class Optimizer:
    """Base class of daskie's optimizers (see the module docstring for the protocol)."""

    steps: int

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
        th = theta.detach().requires_grad_(True)
        loss = objective.loss(th)
        (g,) = torch.autograd.grad(loss, th)
        loss = loss.detach()
        b1, b2 = self.betas
        t = state["t"] + 1
        m = b1 * state["m"] + (1 - b1) * g
        v = b2 * state["v"] + (1 - b2) * g * g
        lr = self.lr / (1.0 + self.decay * state["t"])
        step = lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + self.eps)
        return (theta.detach() - step), {"m": m, "v": v, "t": t}, {"loss": float(loss), "lr": lr}


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


@dataclass(frozen=True)
class LevenbergMarquardt(Optimizer):
    """Gauss-Newton with Levenberg-Marquardt damping, updated from the gain ratio.

    Each step forms ``J^T J`` and ``J^T r`` from the exact Jacobian (per-point parameter
    gradients), solves ``(J^T J + mu D) delta = -J^T r`` and accepts the step when the actual
    loss reduction is positive, updating ``mu`` by Nielsen's rule.

    Parameters
    ----------
    damping : float
        Initial damping ``mu``.
    scaling : str
        ``"levenberg"`` (``D = I``) or ``"marquardt"`` (``D = diag(J^T J)``).
    max_damping : float
        Stop (converged or stuck) when ``mu`` exceeds this: the step-size floor.
    max_tries : int
        Rejected trial steps allowed within one step before giving up on it.
    steps : int
        Iterations of this stage.
    """

    damping: float = 1e-3
    scaling: str = "marquardt"
    max_damping: float = 1e10
    max_tries: int = 12
    steps: int = 300

    def __post_init__(self):
        _numbers("LevenbergMarquardt", self, "damping", "max_damping")
        _check(self.damping > 0, f"LevenbergMarquardt.damping must be positive, got {self.damping}")
        _check(self.scaling in ("levenberg", "marquardt"),
               f"LevenbergMarquardt.scaling must be 'levenberg' or 'marquardt', got {self.scaling!r}")
        _check(self.max_damping > self.damping,
               f"LevenbergMarquardt.max_damping must exceed damping, got {self.max_damping}")
        check_int("LevenbergMarquardt.max_tries", self.max_tries)
        check_int("LevenbergMarquardt.steps", self.steps, 0)

    def init_state(self, objective, theta):
        """Initial damping."""
        return {"damping": float(self.damping), "nu": 2.0}

    def normal_equations(self, objective, theta):
        """``(loss, J^T J, J^T r)`` at ``theta`` (data-parallel strategies sum these over shards)."""
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

    def step(self, objective, theta, state, epoch):
        """One accepted LM step (or the last rejected try when none is accepted)."""
        loss, A, g = self.normal_equations(objective, theta)
        return self.step_from_normal_equations(objective.loss, theta, state, loss, A, g)

    def step_from_normal_equations(self, loss_fn, theta, state, loss, A, g):
        """Damping loop given the normal equations; ``loss_fn(theta)`` evaluates trial points."""
        mu, nu = state["damping"], state["nu"]
        theta = theta.detach()
        tries = 0
        while True:
            tries += 1
            delta = self.solve_step(A, g, mu)
            pred = -(2.0 * (delta @ g) + delta @ (A @ delta))
            with torch.no_grad():
                new_loss = float(loss_fn(theta + delta))
            rho = (loss - new_loss) / float(pred) if float(pred) > 0 else -1.0
            if math.isfinite(new_loss) and rho > 0:
                mu = mu * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                info = {"loss": new_loss, "damping": mu, "gain_ratio": rho, "tries": tries}
                return theta + delta, {"damping": max(mu, 1e-15), "nu": 2.0}, info
            mu, nu = mu * nu, nu * 2.0
            if tries >= self.max_tries or mu > self.max_damping:
                info = {"loss": loss, "damping": mu, "gain_ratio": rho, "tries": tries,
                        "stalled": mu > self.max_damping}
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
