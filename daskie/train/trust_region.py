"""The trust-region core (seed 004 section 2.1): models, subproblem solvers, the acceptance
ratio and the radius update, and a single-process :class:`TrustRegion` optimizer.

One iteration at the point ``theta`` with loss ``f``, gradient ``g`` and radius ``Delta``:

1. a quadratic model ``m(s) = g.s + s.B s / 2`` and its minimiser ``s`` with
   ``||s|| <= Delta`` (:func:`model_step`);
2. the ratio of actual to predicted reduction
   ``rho = (f(theta) - f(theta + s)) / (-m(s))`` (:func:`reduction_ratio`);
3. seed 004 Eq 7 (:meth:`RadiusRule.update`): the step is taken when ``rho >= eta_1``; the radius
   becomes ``min(beta Delta, max_radius)`` when ``rho > eta_2``, ``max(alpha Delta, min_radius)``
   when ``rho < eta_1`` and stays otherwise.

Three models ``B``:

* ``"gauss-newton"`` -- least-squares losses ``f = ||r||^2`` (daskie's
  :class:`~daskie.train.objective.Objective`): ``B = 2 J^T J``, ``g = 2 J^T r``; the subproblem
  is solved to high accuracy by a Moré-Sorensen search on the multiplier with damped Cholesky
  factorisations (:func:`solve_dense`), eigen-decomposition for the hard case;
* ``"sr1"`` -- any loss: a limited-memory SR1 matrix (:class:`SR1Memory`, indefinite where the
  secant pairs say so) and Steihaug's truncated conjugate gradients (:func:`steihaug_cg`);
* ``"first-order"`` -- ``B = 0``: the step ``-Delta g / ||g||`` (the paper's first-order model).

Nothing here imports Dask: :mod:`daskie.strategies.apts` runs these functions inside tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import torch

from daskie.errors import SpecError, check_int
from daskie.train.optimizers import Optimizer

__all__ = ["MODELS", "RadiusRule", "TrustRegionOptions", "TrustRegion", "LossFunction", "Point",
           "SR1Memory", "solve_dense", "steihaug_cg", "model_step", "reduction_ratio",
           "trust_region_iteration", "resolve_model", "is_least_squares"]

#: The quadratic models of the trust-region subproblem.
MODELS = ("gauss-newton", "sr1", "first-order")


# --- the radius rule (seed 004 Eq 7) ----------------------------------------------------------
@dataclass(frozen=True)
class RadiusRule:
    """Acceptance and radius update of seed 004 Eq 7 (validated by its owner's options)."""

    alpha: float = 0.5
    beta: float = 2.0
    eta_1: float = 0.1
    eta_2: float = 0.75
    min_radius: float = 1e-10
    max_radius: float = 10.0

    def update(self, rho: float, radius: float) -> tuple[bool, float]:
        """``(accepted, new radius)`` for the ratio ``rho`` at radius ``radius``."""
        accepted = rho >= self.eta_1
        if rho > self.eta_2:
            radius = min(self.beta * radius, self.max_radius)
        elif rho < self.eta_1:
            radius = max(self.alpha * radius, self.min_radius)
        return accepted, radius

    def scaled(self, factor: float) -> "RadiusRule":
        """The same rule with radius bounds multiplied by ``factor`` (APTS's local ``1/N``)."""
        return RadiusRule(self.alpha, self.beta, self.eta_1, self.eta_2,
                          self.min_radius * factor, self.max_radius * factor)


def _finite_number(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{owner}.{name} must be a finite number, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class TrustRegionOptions:
    """Trust-region options shared by :class:`TrustRegion`, APTS and SAPTS (keyword-only).

    Parameters
    ----------
    radius : float
        Initial radius Delta^0 (Euclidean norm in parameter space).
    min_radius, max_radius : float
        Radius bounds (seed 004's underline-Delta and overline-Delta).
    alpha : float
        Shrink factor, ``0 < alpha < 1``.
    beta : float
        Growth factor, ``beta > 1``.
    eta_1, eta_2 : float
        Acceptance and growth thresholds, ``0 <= eta_1 < eta_2 < 1``.
    model : str
        ``"auto"`` (Gauss-Newton for least-squares objectives with a Jacobian, SR1 otherwise),
        ``"gauss-newton"``, ``"sr1"`` or ``"first-order"``.
    memory : int
        Secant pairs kept by the L-SR1 model.
    """

    radius: float = 0.1
    min_radius: float = 1e-10
    max_radius: float = 10.0
    alpha: float = 0.5
    beta: float = 2.0
    eta_1: float = 0.1
    eta_2: float = 0.75
    model: str = "auto"
    memory: int = 5

    def _validate_trust_region(self):
        owner = type(self).__name__
        for name in ("radius", "min_radius", "max_radius", "alpha", "beta", "eta_1", "eta_2"):
            _finite_number(owner, name, getattr(self, name))
        if not self.min_radius >= 0:
            raise SpecError(f"{owner}.min_radius must be >= 0, got {self.min_radius}")
        if not self.max_radius > self.min_radius:
            raise SpecError(f"{owner}.max_radius must exceed min_radius ({self.min_radius}), "
                            f"got {self.max_radius}")
        if not (self.radius > 0 and self.min_radius <= self.radius <= self.max_radius):
            raise SpecError(f"{owner}.radius must be positive and lie in [min_radius, max_radius] "
                            f"= [{self.min_radius}, {self.max_radius}], got {self.radius}")
        if not 0 < self.alpha < 1:
            raise SpecError(f"{owner}.alpha (shrink factor) must lie in (0, 1), got {self.alpha}")
        if not self.beta > 1:
            raise SpecError(f"{owner}.beta (growth factor) must exceed 1, got {self.beta}")
        if not 0 <= self.eta_1 < 1:
            raise SpecError(f"{owner}.eta_1 must lie in [0, 1), got {self.eta_1}")
        if not self.eta_1 < self.eta_2 < 1:
            raise SpecError(f"{owner}.eta_2 must lie in (eta_1, 1) = ({self.eta_1}, 1), "
                            f"got {self.eta_2}")
        if self.model not in ("auto", *MODELS):
            raise SpecError(f"{owner}.model must be 'auto' or one of {MODELS}, got {self.model!r}")
        check_int(f"{owner}.memory", self.memory)

    @property
    def rule(self) -> RadiusRule:
        """The radius rule of these options."""
        return RadiusRule(self.alpha, self.beta, self.eta_1, self.eta_2, self.min_radius,
                          self.max_radius)


def is_least_squares(objective) -> bool:
    """True when ``objective.loss = r @ r`` with ``jacobian(theta) -> (r, J)`` available
    (integral-equation objectives; torch modules trained on :class:`~daskie.train.module.Residuals`)."""
    from daskie.train.module import ModuleObjective, Residuals
    from daskie.train.protocols import LeastSquaresObjective

    if not isinstance(objective, LeastSquaresObjective):
        return False
    return not isinstance(objective, ModuleObjective) or isinstance(objective.loss_fn, Residuals)


def resolve_model(model: str, objective, owner: str = "TrustRegion") -> str:
    """The model for ``objective``: ``"auto"`` picks Gauss-Newton for least-squares objectives
    (:func:`is_least_squares`), SR1 otherwise."""
    least_squares = is_least_squares(objective)
    if model == "auto":
        return "gauss-newton" if least_squares else "sr1"
    if model == "gauss-newton" and not least_squares:
        raise SpecError(f"{owner}.model='gauss-newton' needs a least-squares objective with "
                        f"jacobian(theta) -> (r, J); {type(objective).__name__} has none "
                        "(use 'sr1' or 'first-order')")
    return model


# --- the function being minimised ---------------------------------------------------------
class LossFunction:
    """``scale * objective.loss(theta) + shift . (theta - center)`` with evaluation counters.

    The linear term is APTS's first-order consistency correction (seed 004 Eq 3); without it
    this is just the objective. Values are computed with autograd enabled (physics-informed
    losses differentiate the model in its inputs) and returned detached.

    Parameters
    ----------
    objective : object
        Has ``loss(theta)``; ``jacobian(theta) -> (r, J)`` with ``loss = r @ r`` for the
        Gauss-Newton model.
    scale : float
        Factor of the objective's loss.
    shift, center : tensor, optional
        The linear correction ``shift . (theta - center)``.
    """

    def __init__(self, objective, scale: float = 1.0, shift=None, center=None):
        self.objective = objective
        self.scale = float(scale)
        self.shift = None if shift is None else shift.detach()
        self.center = None if center is None else center.detach()
        self.grad_calls = 0
        self.loss_calls = 0

    def shifted(self, shift, center) -> "LossFunction":
        """The same function plus ``shift . (theta - center)`` (fresh counters)."""
        return LossFunction(self.objective, self.scale, shift, center)

    def _linear(self, theta):
        if self.shift is None:
            return 0.0
        return self.shift @ (theta - self.center)

    def value(self, theta) -> float:
        """The loss at ``theta`` (inf when not finite)."""
        self.loss_calls += 1
        value = float((self.scale * self.objective.loss(theta.detach()) + self._linear(theta)).detach())
        return value if math.isfinite(value) else math.inf

    def value_and_grad(self, theta):
        """``(loss, gradient)`` at ``theta``."""
        self.grad_calls += 1
        th = theta.detach().requires_grad_(True)
        loss = self.scale * self.objective.loss(th)
        (g,) = torch.autograd.grad(loss, th)
        if self.shift is not None:
            loss, g = loss + self._linear(theta.detach()), g + self.shift
        return float(loss.detach()), g.detach()

    def gauss_newton(self, theta):
        """``(loss, B, g)``: loss, Gauss-Newton matrix ``2 s J^T J`` and gradient."""
        self.grad_calls += 1
        r, J = self.objective.jacobian(theta.detach())
        s = self.scale
        loss, g, B = s * float(r @ r), 2.0 * s * (J.T @ r), 2.0 * s * (J.T @ J)
        if self.shift is not None:
            loss, g = loss + float(self._linear(theta.detach())), g + self.shift
        return loss, B.detach(), g.detach()


@dataclass
class Point:
    """An iterate and what is known there (``grad``/``hessian`` filled on demand)."""

    theta: torch.Tensor
    loss: float
    grad: torch.Tensor | None = None
    hessian: torch.Tensor | None = None


def evaluate(fn: LossFunction, theta, model: str) -> Point:
    """Everything ``model`` needs at ``theta``."""
    theta = theta.detach()
    if model == "gauss-newton":
        loss, B, g = fn.gauss_newton(theta)
        return Point(theta, loss, g, B)
    loss, g = fn.value_and_grad(theta)
    return Point(theta, loss, g)


def complete(fn: LossFunction, point: Point, model: str) -> Point:
    """``point`` with the model's derivatives filled in (re-evaluated where missing)."""
    if point.grad is None or (model == "gauss-newton" and point.hessian is None):
        return evaluate(fn, point.theta, model)
    return point


# --- L-SR1 ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SR1Memory:
    """Limited-memory SR1 approximation ``B = gamma I + sum_i u_i u_i^T / d_i``.

    Built from the kept secant pairs ``(s_i, y_i)`` (oldest first) by the SR1 recursion
    ``u_i = y_i - B_{i-1} s_i``, ``d_i = u_i . s_i``; a pair whose denominator fails
    ``|d_i| >= skip * ||s_i|| ||u_i||`` is skipped (the standard safeguard), so ``B`` is
    always defined. ``gamma`` is the curvature ``s.y / s.s`` of the newest pair with
    ``s.y > 0`` (0 with none: then ``B`` holds only the pairs' curvature, and an empty memory
    is the first-order model).

    Parameters
    ----------
    S, Y : tensor or None
        Secant pairs as rows (``(k, n)``), oldest first; None when empty.
    size : int
        Pairs kept at most (the oldest are dropped first).
    skip : float
        Denominator test constant.
    """

    S: torch.Tensor | None = None
    Y: torch.Tensor | None = None
    size: int = 5
    skip: float = 1e-8

    @property
    def pairs(self) -> int:
        """Number of stored pairs."""
        return 0 if self.S is None else int(self.S.shape[0])

    @cached_property
    def _terms(self):
        if self.S is None:
            return 0.0, [], []
        gamma = 0.0
        for s, y in zip(self.S.flip(0), self.Y.flip(0)):
            sy = float(s @ y)
            if sy > 0:
                gamma = sy / float(s @ s)
                break
        us, ds = [], []
        for s, y in zip(self.S, self.Y):
            u = y - _apply(gamma, us, ds, s)
            d = float(u @ s)
            if abs(d) >= self.skip * float(s.norm()) * float(u.norm()) and d != 0.0:
                us.append(u)
                ds.append(d)
        return gamma, us, ds

    @property
    def gamma(self) -> float:
        """The multiple of the identity in ``B``."""
        return self._terms[0]

    def matvec(self, v):
        """``B v``."""
        gamma, us, ds = self._terms
        return _apply(gamma, us, ds, v)

    def add(self, s, y) -> "SR1Memory":
        """The memory with the pair ``(s, y)`` appended, unless it fails the SR1 test now."""
        s, y = s.detach(), y.detach()
        u = y - self.matvec(s)
        d = float(u @ s)
        if not (math.isfinite(d) and bool(torch.isfinite(y).all())) or d == 0.0 \
                or abs(d) < self.skip * float(s.norm()) * float(u.norm()):
            return self
        S = s[None] if self.S is None else torch.cat([self.S, s[None]])[-self.size:]
        Y = y[None] if self.Y is None else torch.cat([self.Y, y[None]])[-self.size:]
        return SR1Memory(S, Y, self.size, self.skip)


def _apply(gamma, us, ds, v):
    out = gamma * v
    for u, d in zip(us, ds):
        out = out + (u @ v) / d * u
    return out


# --- subproblem solvers ---------------------------------------------------------------------
def _boundary(z, d, radius):
    """The tau >= 0 with ``||z + tau d|| = radius`` (z inside the ball)."""
    a, b, c = float(d @ d), 2.0 * float(z @ d), float(z @ z) - radius * radius
    return (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)


def steihaug_cg(matvec, g, radius: float, *, rtol: float | None = None, max_iter: int | None = None):
    """Steihaug's truncated CG for ``min g.s + s.B s / 2`` with ``||s|| <= radius``.

    Stops at the boundary on negative curvature or when an iterate leaves the ball, and
    inside once the residual is below ``rtol * ||g||`` (default ``min(0.5, sqrt(||g||))``).

    Returns
    -------
    tensor
        The step ``s``.
    """
    gn = float(g.norm())
    z = torch.zeros_like(g)
    if gn == 0.0:
        return z
    tol = (min(0.5, math.sqrt(gn)) if rtol is None else rtol) * gn
    r, d = g.clone(), -g
    rr = float(r @ r)
    for _ in range(g.numel() if max_iter is None else max_iter):
        Bd = matvec(d)
        dBd = float(d @ Bd)
        if dBd <= 0.0:
            return z + _boundary(z, d, radius) * d
        a = rr / dBd
        z_next = z + a * d
        if float(z_next.norm()) >= radius:
            return z + _boundary(z, d, radius) * d
        z = z_next
        r = r + a * Bd
        rr_next = float(r @ r)
        if math.sqrt(rr_next) < tol:
            return z
        d = -r + (rr_next / rr) * d
        rr = rr_next
    return z


def solve_dense(B, g, radius: float, *, rtol: float = 1e-2, max_iter: int = 100):
    """The trust-region subproblem ``min g.s + s.B s / 2``, ``||s|| <= radius``, for a dense
    symmetric ``B``, by Moré and Sorensen's safeguarded Newton search on the multiplier
    ``lambda`` of ``(B + lambda I) s = -g`` (one Cholesky factorisation per trial).

    The hard case (``g`` orthogonal to the eigenvectors of the smallest eigenvalue), and any
    search that does not converge, is finished on the eigen-decomposition of ``B``.

    Returns
    -------
    tensor
        The step ``s``: the Newton step when it lies inside; else a step with
        ``(1 - rtol) radius <= ||s|| <= radius`` (Moré and Sorensen stop within ``rtol``;
        a step just outside is scaled back onto the boundary).
    """
    n = g.numel()
    eye = torch.eye(n, dtype=B.dtype, device=B.device)
    gn = float(g.norm())
    bnorm = float(B.abs().sum(dim=0).max())
    L, info = torch.linalg.cholesky_ex(B)
    lam = 0.0
    if int(info) != 0 and gn > 0.0:
        # Singular positive semi-definite B (Gauss-Newton with fewer rows than parameters):
        # a damping at rounding level gives the interior step without the eigen-decomposition.
        lam = 1e-13 * bnorm
        L, info = torch.linalg.cholesky_ex(B + lam * eye)
    if gn == 0.0:
        return torch.zeros_like(g) if int(info) == 0 else _solve_eigen(B, g, radius)
    lam_lo = max(0.0, -float(torch.diagonal(B).min()), gn / radius - bnorm)
    lam_hi = gn / radius + bnorm
    if int(info) == 0:
        s = -torch.cholesky_solve(g[:, None], L)[:, 0]
        if float(s.norm()) <= radius:
            return s
        lam_lo = max(lam_lo, lam)
    else:
        lam = max(lam_lo, math.sqrt(max(lam_lo, 0.0) * lam_hi), 1e-3 * lam_hi)
    for _ in range(max_iter):
        L, info = torch.linalg.cholesky_ex(B + lam * eye)
        if int(info) != 0:  # B + lam I indefinite: lam is below -lambda_min
            lam_lo = max(lam_lo, lam)
            lam = max(math.sqrt(lam_lo * lam_hi), lam_lo + 0.01 * (lam_hi - lam_lo))
        else:
            s = -torch.cholesky_solve(g[:, None], L)[:, 0]
            ns = float(s.norm())
            if abs(ns - radius) <= rtol * radius:
                return s * min(1.0, radius / ns)
            if ns < radius:
                lam_hi = min(lam_hi, lam)
            else:
                lam_lo = max(lam_lo, lam)
            w = torch.linalg.solve_triangular(L, s[:, None], upper=False)[:, 0]
            lam_next = lam + (ns / float(w.norm())) ** 2 * (ns - radius) / radius
            if not lam_lo < lam_next < lam_hi:
                lam_next = max(math.sqrt(lam_lo * lam_hi), lam_lo + 0.01 * (lam_hi - lam_lo))
            lam = lam_next
        if lam_hi - lam_lo <= 1e-15 * max(lam_hi, 1.0):
            break
    return _solve_eigen(B, g, radius)


def _solve_eigen(B, g, radius: float):
    """Exact subproblem solution on ``B = V diag(w) V^T`` (hard case included)."""
    w, V = torch.linalg.eigh(B)
    a = V.T @ g
    lo = max(0.0, -float(w[0]))
    scale = max(float(w.abs().max()), 1.0)
    tiny = 1e-12 * scale

    def step(lam):
        den = w + lam
        keep = den > tiny
        coef = torch.zeros_like(a)
        coef[keep] = -a[keep] / den[keep]
        return V @ coef

    # the limit lambda -> lo from above: components with w + lo ~ 0 carry a ~ 0 (hard case)
    near = (w + lo).abs() <= tiny
    if not bool((a[near].abs() > 1e-12 * max(float(a.abs().max()), 1e-300)).any()):
        s = step(lo)
        ns = float(s.norm())
        if ns <= radius:
            if lo == 0.0:
                return s
            return s + math.sqrt(radius * radius - ns * ns) * V[:, 0]
    lam_lo, lam_hi = lo, lo + float(g.norm()) / radius + scale
    for _ in range(200):  # ||s(lambda)|| decreases in lambda: bisection
        mid = 0.5 * (lam_lo + lam_hi)
        if float(step(mid).norm()) > radius:
            lam_lo = mid
        else:
            lam_hi = mid
        if lam_hi - lam_lo <= 1e-15 * max(lam_hi, 1.0):
            break
    return step(lam_hi)


def model_step(point: Point, radius: float, model: str, memory: SR1Memory | None = None):
    """Minimiser ``s`` of the model at ``point`` within ``radius`` and its predicted reduction
    ``-m(s)``."""
    g = point.grad
    if model == "first-order":
        gn = float(g.norm())
        if gn == 0.0:
            return torch.zeros_like(g), 0.0
        return -(radius / gn) * g, radius * gn
    if model == "gauss-newton":
        B = point.hessian
        s = solve_dense(B, g, radius)
        Bs = B @ s
    else:
        memory = SR1Memory() if memory is None else memory
        s = steihaug_cg(memory.matvec, g, radius)
        Bs = memory.matvec(s)
    return s, -(float(g @ s) + 0.5 * float(s @ Bs))


def evaluate_trial(fn, trial, model: str):
    """``(loss, gradient)`` at a trial point; the Gauss-Newton model needs no gradient there
    (``None``: the next iteration forms its own), the others take it for their updates."""
    if model == "gauss-newton":
        return fn.value(trial), None
    return fn.value_and_grad(trial)


def reduction_ratio(loss: float, trial_loss: float, predicted: float) -> float:
    """``rho = (loss - trial_loss) / predicted``; ``-inf`` for a non-finite trial loss and 0
    when the model predicts no reduction (a step that cannot be trusted)."""
    if not math.isfinite(trial_loss):
        return -math.inf
    if not predicted > 0.0:
        return 0.0
    return (loss - trial_loss) / predicted


@dataclass
class Trial:
    """What one trust-region iteration did (for records)."""

    rho: float
    accepted: bool
    step_norm: float
    predicted: float
    boundary: bool = False
    extra: dict = field(default_factory=dict)


def trust_region_iteration(fn: LossFunction, point: Point, radius: float, rule: RadiusRule,
                           model: str, memory: SR1Memory | None = None,
                           step_bound: float | None = None):
    """One trust-region iteration from ``point`` (which ``complete`` has filled).

    Parameters
    ----------
    fn : LossFunction
    point : Point
        The iterate with its gradient (and Gauss-Newton matrix for that model).
    radius : float
        The current radius.
    rule : RadiusRule
    model : str
        One of :data:`MODELS`.
    memory : SR1Memory, optional
        The L-SR1 pairs (model ``"sr1"``); the iteration's pair is added to it.
    step_bound : float, optional
        A further bound on this step's length (APTS's local steps stay inside Delta/N).

    Returns
    -------
    (Point, float, SR1Memory or None, Trial)
        The next iterate (``point`` itself when rejected), the new radius, the memory and the
        trial's record.
    """
    bound = radius if step_bound is None else min(radius, step_bound)
    s, predicted = model_step(point, bound, model, memory)
    trial = point.theta + s
    trial_loss, trial_grad = evaluate_trial(fn, trial, model)
    rho = reduction_ratio(point.loss, trial_loss, predicted)
    accepted, new_radius = rule.update(rho, radius)
    if model == "sr1" and trial_grad is not None and float(s.norm()) > 0:
        memory = (memory or SR1Memory()).add(s, trial_grad - point.grad)
    step_norm = float(s.norm())
    info = Trial(rho, accepted, step_norm, predicted, step_norm >= bound * (1 - 1e-9))
    nxt = Point(trial, trial_loss, trial_grad) if accepted else point
    return nxt, new_radius, memory, info


# --- the single-process optimizer -------------------------------------------------------------
@dataclass(frozen=True)
class TrustRegion(TrustRegionOptions, Optimizer):
    """A trust-region method as a daskie optimizer (one iteration per step).

    Each step builds the model at the current parameters, solves the subproblem, and accepts
    or rejects the trial by ``rho`` with seed 004's radius update (see the module docstring).
    ``info`` carries ``loss``, ``radius``, ``rho`` and ``accepted``; a rejected step at the
    smallest radius (or a zero gradient) reports ``stalled``, which ends the stage.

    Parameters
    ----------
    steps : int
        Iterations of this stage.
    radius, min_radius, max_radius, alpha, beta, eta_1, eta_2, model, memory
        See :class:`TrustRegionOptions` (keyword-only).

    Examples
    --------
    >>> daskie.solve("E1", optimizer=TrustRegion(steps=100))  # doctest: +SKIP
    """

    steps: int = 300

    def __post_init__(self):
        self._validate_trust_region()
        check_int("TrustRegion.steps", self.steps, 0)

    def init_state(self, objective, theta):
        """Initial radius and an empty L-SR1 memory."""
        return {"radius": float(self.radius), "S": None, "Y": None}

    def step(self, objective, theta, state, epoch):
        """One trust-region iteration."""
        model = resolve_model(self.model, objective)
        fn = LossFunction(objective)
        memory = SR1Memory(state["S"], state["Y"], self.memory) if model == "sr1" else None
        point = evaluate(fn, theta, model)
        radius = state["radius"]
        nxt, new_radius, memory, trial = trust_region_iteration(fn, point, radius, self.rule,
                                                                model, memory)
        stalled = (not trial.accepted and radius <= self.min_radius) or trial.step_norm == 0.0
        state = {"radius": new_radius, "S": memory.S if memory else None,
                 "Y": memory.Y if memory else None}
        info = {"loss": nxt.loss, "radius": new_radius, "rho": trial.rho,
                "accepted": trial.accepted, "grad_calls": fn.grad_calls,
                "loss_calls": fn.loss_calls}
        if stalled:
            info["stalled"] = True
        return nxt.theta, state, info
