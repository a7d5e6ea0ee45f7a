"""The integral-equation specification (docs/architecture.md: the problem form).

    alpha(X) mu(X) = f(X) + sum_i lam_i * Int_{a_i}^{b_i(X)} K_i(X, T) M_i(mu(T)) dT,  X in Omega

Data callables (``f``, ``alpha``, ``exact`` and the kernels) take numpy arrays whose last axis
is the coordinate axis and broadcast over the leading axes; they are evaluated at fixed points
(collocation points, quadrature nodes), never differentiated, so plain numpy code is enough.
The nonlinearities ``M_i`` act on the network's output and are evaluated on torch tensors.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from daskie.errors import SpecError
from daskie.problems.domain import Domain
from daskie.problems.validate import _number, check_values, evaluate, probe_nonlinearity

__all__ = ["Nonlinearity", "IntegralTerm", "Noise", "Problem", "VOLTERRA"]

#: Marker for a Volterra upper limit: ``upper=("x", 1.0)`` integrates t_1 up to x_1.
VOLTERRA = "x"

Limit = Union[float, str]

# Points at which a problem's data are checked at construction (16 until issue 16 found an f
# that was NaN on a small part of the domain pass).
_CHECK_POINTS = 512


def _check_points(domain, n: int, seed: int) -> np.ndarray:
    """``domain.sample(n, seed)``, once per domain (read-only): a family's thousands of
    instance problems share their domain, and sampling was half of building one (issue 29:
    7.7 s of a 17 s operator fit with 8192 instances, in ``skip_values``)."""
    try:
        hash(domain)
    except TypeError:  # a domain that cannot be a key is sampled every time
        return domain.sample(n, seed=seed)
    return _cached_sample(domain, n, seed)


@functools.lru_cache(maxsize=32)
def _cached_sample(domain, n: int, seed: int) -> np.ndarray:
    x = domain.sample(n, seed=seed)
    x.setflags(write=False)
    return x


def _torch():
    import torch

    return torch


@dataclass(frozen=True, eq=False)
class Nonlinearity:
    """The map ``M`` applied to ``mu`` under an integral, with its derivative.

    Parameters
    ----------
    fn : callable
        Elementwise map written with torch operations (``lambda u: u**2``,
        ``torch.sin``); numpy input is converted for you.
    derivative : callable, optional
        ``M'``; by default obtained from ``fn`` by automatic differentiation.
    name : str
        Short label used in plans, stores and reports.
    linear : bool
        True only for the identity; linear terms let the reference solver skip Newton.
    """

    fn: Callable
    derivative: Callable | None = None
    name: str = "M"
    linear: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"Nonlinearity.name must be a non-empty str, got {self.name!r}")
        where = f"Nonlinearity {self.name!r}"
        if not callable(self.fn):
            raise SpecError(f"{where}: fn must be callable (a map of torch tensors), "
                            f"got {self.fn!r}")
        if self.derivative is not None and not callable(self.derivative):
            raise SpecError(f"{where}: derivative must be callable or None, "
                            f"got {self.derivative!r}")
        if not isinstance(self.linear, bool):
            raise SpecError(f"{where}: linear must be True or False, got {self.linear!r}")
        # Probed now, so that a numpy-written, raising or scalar M fails here and not on a
        # worker in the middle of training.
        probe_nonlinearity(self.fn, self.derivative, where)

    def __call__(self, u):
        torch = _torch()
        if isinstance(u, torch.Tensor):
            return self.fn(u)
        return self.fn(torch.as_tensor(np.asarray(u, dtype=float))).numpy()

    def grad(self, u):
        """``M'(u)`` elementwise, for torch tensors or numpy arrays."""
        torch = _torch()
        is_np = not isinstance(u, torch.Tensor)
        t = torch.as_tensor(np.asarray(u, dtype=float)) if is_np else u
        if self.derivative is not None:
            out = self.derivative(t)
        else:
            with torch.enable_grad():
                v = t.detach().requires_grad_(True)
                (out,) = torch.autograd.grad(self.fn(v).sum(), v)
        return out.detach().numpy() if is_np else out

    @classmethod
    def identity(cls) -> "Nonlinearity":
        """``M(u) = u``."""
        return cls(lambda u: u, lambda u: u * 0 + 1, name="identity", linear=True)

    @classmethod
    def power(cls, p: int) -> "Nonlinearity":
        """``M(u) = u**p``."""
        if p == 1:
            return cls.identity()
        return cls(lambda u: u**p, lambda u: p * u ** (p - 1), name=f"u^{p}")

    @classmethod
    def sin(cls) -> "Nonlinearity":
        """``M(u) = sin(u)``."""
        torch = _torch()
        return cls(torch.sin, torch.cos, name="sin")

    @classmethod
    def exp(cls) -> "Nonlinearity":
        """``M(u) = exp(u)``."""
        torch = _torch()
        return cls(torch.exp, torch.exp, name="exp")


@dataclass(frozen=True, eq=False)
class IntegralTerm:
    """One term ``lam * Int_{lower}^{upper(X)} K(X, T) M(mu(T)) dT``.

    Parameters
    ----------
    kernel : callable
        ``K(x, t)`` on numpy arrays ``x``, ``t`` of shape ``(..., d)`` (broadcasting),
        returning shape ``(...)``. With ``singularity=a > 0`` this is the smooth factor
        ``g`` of ``K(x, t) = g(x, t) |x - t|^(-a)``.
    lam : float
        The coefficient lambda.
    lower : sequence of float, optional
        Lower limits per coordinate (default: the domain's lower corner).
    upper : sequence of float or ``"x"``, optional
        Upper limits per coordinate: a number (Fredholm direction) or ``"x"`` for the
        matching coordinate of X (Volterra direction). Default: the domain's upper corner.
    nonlinearity : Nonlinearity
        ``M``; the identity by default.
    singularity : float
        Exponent ``a`` in [0, 1) of a weak singularity ``|x - t|^(-a)`` (1-D terms).
    kink : sequence of int or bool
        Coordinates ``k`` along which the kernel's derivative jumps at ``t_k = x_k``
        (Green's functions, ``|x - t|``, ``min(x, t)``); ``True`` means every coordinate.
        Quadrature rules and the reference split the integration interval there, which
        restores their convergence order.
    """

    kernel: Callable
    lam: float = 1.0
    lower: tuple[float, ...] | None = None
    upper: tuple[Limit, ...] | None = None
    nonlinearity: Nonlinearity = field(default_factory=Nonlinearity.identity)
    singularity: float = 0.0
    kink: tuple[int, ...] | bool = ()

    @property
    def volterra_axes(self) -> tuple[int, ...]:
        """Coordinates whose upper limit is the matching coordinate of X."""
        return tuple(j for j, u in enumerate(self.upper) if u == VOLTERRA)

    @property
    def is_fredholm(self) -> bool:
        """True when every upper limit is a constant."""
        return not self.volterra_axes

    def upper_limits(self, x: np.ndarray) -> np.ndarray:
        """Upper limits b(X) at points ``x`` of shape ``(n, d)``; returns ``(n, d)``."""
        b = np.empty_like(x, dtype=float)
        for j, u in enumerate(self.upper):
            b[:, j] = x[:, j] if u == VOLTERRA else float(u)
        return b

    def describe(self) -> dict:
        """Plain-data summary for plans, stores and reports."""
        out = {"lam": self.lam, "lower": list(self.lower), "upper": list(self.upper),
               "nonlinearity": self.nonlinearity.name, "singularity": self.singularity,
               "kind": "fredholm" if self.is_fredholm else
               ("volterra" if len(self.volterra_axes) == len(self.upper) else "mixed")}
        if self.kink:  # only when set: stored runs without kinks keep their description
            out["kink"] = list(self.kink) if isinstance(self.kink, tuple) else self.kink
        return out


@dataclass(frozen=True)
class Noise:
    """Perturbations of the data for robustness experiments (seed 000, section 5.5).

    Parameters
    ----------
    f_sigma : float
        Standard deviation of Gaussian noise added to ``f``, relative to ``max |f|``.
    lam_spread : float
        Each ``lam_i`` is multiplied by a draw from ``U(1 - lam_spread, 1 + lam_spread)``.
    seed : int
        Seed of the draw. The draw is fixed: one perturbed equation per seed (the
        solution is compared with the clean exact solution).
    """

    f_sigma: float = 0.05
    lam_spread: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if not (self.f_sigma >= 0 and math.isfinite(self.f_sigma)):
            raise SpecError(f"noise.f_sigma must be a finite number >= 0, got {self.f_sigma}")
        if not (0 <= self.lam_spread < 1):
            raise SpecError(f"noise.lam_spread must be in [0, 1), got {self.lam_spread}")

    def draw(self, f_values: np.ndarray, n_terms: int, rng: np.random.Generator):
        """Return ``(f + noise, lambda factors)`` for one draw."""
        scale = self.f_sigma * float(np.max(np.abs(f_values)))
        f_noisy = f_values + rng.normal(0.0, scale, size=f_values.shape)
        factors = rng.uniform(1 - self.lam_spread, 1 + self.lam_spread, size=n_terms)
        return f_noisy, factors


def _check_values(values, n: int, what: str) -> np.ndarray:
    return check_values(values, (n,), what)


@dataclass(frozen=True, eq=False)
class Problem:
    """An integral equation ``alpha mu = f + sum_i lam_i Int K_i M_i(mu)``.

    Parameters
    ----------
    domain : Domain
        Where the equation holds (and where Fredholm directions integrate).
    f : callable
        Right-hand side on numpy arrays of shape ``(..., d)``.
    terms : sequence of IntegralTerm
        The integral terms (at least one).
    alpha : float or callable
        Coefficient of ``mu``; ``0`` gives a first-kind equation.
    exact : callable, optional
        The exact solution, for error metrics.
    noise : Noise, optional
        Data perturbations (errors are still measured against ``exact``).
    name, description : str
        Labels.
    units : dict of str to str, optional
        Units for stores and reports: ``"x"`` (every coordinate) or ``"x0"``, ``"x1"``, ...
        (one coordinate), and ``"mu"`` (the solution), e.g. ``{"x": "m", "mu": "K"}``.

    Raises
    ------
    SpecError
        At construction, with a message naming the field, for wrong shapes, non-finite
        data on the domain, limits naming coordinates that do not exist, and the like.
    """

    domain: Domain
    f: Callable
    terms: tuple[IntegralTerm, ...]
    alpha: float | Callable = 1.0
    exact: Callable | None = None
    noise: Noise | None = None
    name: str = "custom"
    description: str = ""
    units: dict | None = None

    def __post_init__(self):
        if not isinstance(self.domain, Domain):
            raise SpecError(f"domain must be a daskie Domain, got {type(self.domain).__name__}")
        for label in ("name", "description"):
            if not isinstance(getattr(self, label), str):
                raise SpecError(f"{label} must be a str, got {getattr(self, label)!r}")
        if self.units is not None:
            allowed = {"x", "mu", *(f"x{j}" for j in range(self.domain.dim))}
            if not isinstance(self.units, dict) or not all(
                    k in allowed and isinstance(v, str) for k, v in self.units.items()):
                raise SpecError(f"units must be a dict of {sorted(allowed)} to unit strings, "
                                f"got {self.units!r}")
            object.__setattr__(self, "units", dict(self.units))
        if not callable(self.f):
            raise SpecError("f must be callable: f(x) with x of shape (..., d)")
        terms = tuple(self.terms) if isinstance(self.terms, (list, tuple)) else (self.terms,)
        if not terms:
            raise SpecError("terms must hold at least one IntegralTerm")
        d = self.domain.dim
        fixed = []
        for i, term in enumerate(terms):
            fixed.append(self._check_term(i, term, d))
        object.__setattr__(self, "terms", tuple(fixed))
        if not callable(self.alpha):
            try:
                ok = math.isfinite(_number(self.alpha, "alpha"))
            except SpecError:
                ok = False
            if not ok:
                raise SpecError(f"alpha must be a finite number or a callable, got {self.alpha!r}")
        if self.exact is not None and not callable(self.exact):
            raise SpecError("exact must be callable or None")
        if self.noise is not None and not isinstance(self.noise, Noise):
            raise SpecError(f"noise must be a daskie Noise, got {type(self.noise).__name__}")
        self._check_data()

    def _check_term(self, i: int, term, d: int) -> IntegralTerm:
        where = f"terms[{i}]"
        if not isinstance(term, IntegralTerm):
            raise SpecError(f"{where} must be an IntegralTerm, got {type(term).__name__}")
        if not callable(term.kernel):
            raise SpecError(f"{where}.kernel must be callable: K(x, t)")
        try:
            lam = _number(term.lam, f"{where}.lam", finite=False)
        except SpecError as exc:
            raise SpecError(f"{where}.lam must be one number per term, got {term.lam!r}") from exc
        if not math.isfinite(lam):
            raise SpecError(f"{where}.lam must be finite, got {lam}")
        for label in ("lower", "upper"):
            limits = getattr(term, label)
            if limits is not None and not isinstance(limits, (list, tuple, np.ndarray)):
                raise SpecError(f"{where}.{label} must be a sequence with one limit per "
                                f"coordinate, got {limits!r}")
        lower = self.domain.lower if term.lower is None else tuple(term.lower)
        upper = self.domain.upper if term.upper is None else tuple(term.upper)
        if len(lower) != d:
            raise SpecError(f"{where}.lower has {len(lower)} limits but the domain has {d} coordinates")
        if len(upper) != d:
            raise SpecError(f"{where}.upper has {len(upper)} limits but the domain has {d} coordinates")
        lower = tuple(_number(a, f"{where}.lower[{j}]") for j, a in enumerate(lower))
        checked = []
        for j, (a, b) in enumerate(zip(lower, upper)):
            if isinstance(b, str):
                if b != VOLTERRA:
                    raise SpecError(
                        f"{where}.upper[{j}] = {b!r} names no coordinate: use a number or "
                        f"{VOLTERRA!r} (the matching coordinate x_{j + 1})"
                    )
                if a > self.domain.lower[j] + 1e-15:
                    raise SpecError(
                        f"{where}.lower[{j}] = {a} lies above the domain's lower bound "
                        f"{self.domain.lower[j]}: a Volterra limit x_{j + 1} would fall below it"
                    )
                checked.append(VOLTERRA)
                continue
            b = _number(b, f"{where}.upper[{j}]")
            if not b > a:
                raise SpecError(f"{where}: lower[{j}] = {a} must be below upper[{j}] = {b}")
            checked.append(b)
        for j, a in enumerate(lower):
            hi = checked[j] if checked[j] != VOLTERRA else self.domain.upper[j]
            if a < self.domain.lower[j] - 1e-12 or hi > self.domain.upper[j] + 1e-12:
                raise SpecError(
                    f"{where} integrates coordinate {j} over [{a}, {hi}], outside the domain "
                    f"[{self.domain.lower[j]}, {self.domain.upper[j]}] where mu is defined"
                )
        if VOLTERRA in checked and not self.domain.is_box:
            raise SpecError(f"{where}: Volterra limits on a domain with holes are not supported")
        if not isinstance(term.nonlinearity, Nonlinearity):
            raise SpecError(f"{where}.nonlinearity must be a Nonlinearity, got {term.nonlinearity!r}")
        a = _number(term.singularity, f"{where}.singularity")
        if not 0 <= a < 1:
            raise SpecError(f"{where}.singularity must be in [0, 1) (weak singularity), got {a}")
        if a > 0 and d != 1:
            raise SpecError(f"{where}.singularity is supported for 1-D terms only (d = {d})")
        kink = tuple(range(d)) if term.kink is True else (() if term.kink is False else term.kink)
        try:
            kink = tuple(sorted({int(k) for k in kink}))
        except (TypeError, ValueError):
            raise SpecError(f"{where}.kink must be True or a sequence of coordinates, "
                            f"got {term.kink!r}") from None
        if any(not 0 <= k < d for k in kink):
            raise SpecError(f"{where}.kink = {term.kink!r} names a coordinate outside 0..{d - 1}")
        return IntegralTerm(term.kernel, lam, lower, tuple(checked), term.nonlinearity, a, kink)

    def _check_data(self):
        # Dense enough to catch data that fail on a small part of the domain; the points a
        # discretization evaluates are checked again where they are used (check_values).
        x = _check_points(self.domain, _CHECK_POINTS, 12345)
        self.check_values(x)
        # Kernels on pairs (x, t) inside each term's integration box (Volterra: t <= x).
        u = _check_points(self.domain, _CHECK_POINTS + 1, 54321)[1:]
        lo, hi = np.asarray(self.domain.lower), np.asarray(self.domain.upper)
        u = (u - lo) / (hi - lo)
        zero_kernels = []
        for i, term in enumerate(self.terms):
            a = np.asarray(term.lower, dtype=float)
            t = a + u * (term.upper_limits(x) - a)
            if not self.kernel_at(i, x, t).any():
                zero_kernels.append(i)
        self._check_mu_is_determined(x, zero_kernels)
        # And a dense block of all pairs of a few points (shared Fredholm nodes).
        xs, ts = x[:32], u[:32]
        for i, term in enumerate(self.terms):
            if term.is_fredholm:
                a = np.asarray(term.lower, dtype=float)
                t = a + ts * (np.asarray(term.upper, dtype=float) - a)
                self.kernel_at(i, xs[:, None, :], t[None, :, :])

    def _check_mu_is_determined(self, x, zero_kernels) -> None:
        """Refuse an equation that says nothing about mu at some points: no term acts on mu
        (every ``lam`` is 0, or every kernel is 0 on the pairs checked) and ``alpha`` is 0
        there, so the equation reads ``0 = f``."""
        idle = [i for i, term in enumerate(self.terms) if term.lam == 0 or i in zero_kernels]
        if len(idle) < len(self.terms):
            return
        zero = self.alpha_at(x) == 0
        if not zero.any():
            return
        why = ("every term's lam is 0" if all(t.lam == 0 for t in self.terms) else
               "every term has lam = 0 or a kernel that is 0 on all the pairs (x, t) checked")
        where = ("alpha = 0" if not callable(self.alpha) else
                 f"alpha is 0 at {int(zero.sum())} of the {zero.size} points checked")
        there = " there" if callable(self.alpha) else ""
        raise SpecError(f"{where} and {why}: the equation reads 0 = f and does not determine "
                        f"mu{there}; give alpha != 0 (an equation of the second kind) or a term "
                        f"with lam != 0 and a non-zero kernel (first kind)")

    def check_values(self, points, nodes=None) -> None:
        """Check every data field where a discretization evaluates it.

        Parameters
        ----------
        points : array of shape (n, d)
            The points where the equation is enforced (collocation points): ``f``,
            ``alpha`` and ``exact`` are evaluated there.
        nodes : array of shape (m, d) or (n, q, d), optional
            Quadrature nodes: shared by all points (``(m, d)``, kernels evaluated on all
            ``n x m`` pairs) or per point (``(n, q, d)``). Each kernel is evaluated there.

        Raises
        ------
        SpecError
            Naming the field (``f``, ``alpha``, ``exact``, ``terms[i].kernel``): it raised,
            or returned non-numeric, complex, wrongly shaped or non-finite values.
        """
        x = np.asarray(points, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise SpecError(f"points must have shape (n, {self.dim}), got {x.shape}")
        self.f_at(x)
        self.alpha_at(x)
        if self.exact is not None:
            self.exact_at(x)
        if nodes is None:
            return
        t = np.asarray(nodes, dtype=float)
        if t.ndim == 2 and t.shape[1] == self.dim:
            xt = (x[:, None, :], t[None, :, :])
        elif t.ndim == 3 and t.shape[0] == len(x) and t.shape[2] == self.dim:
            xt = (x[:, None, :], t)
        else:
            raise SpecError(f"nodes must have shape (m, {self.dim}) or ({len(x)}, q, "
                            f"{self.dim}), got {t.shape}")
        for i in range(len(self.terms)):
            self.kernel_at(i, *xt)

    def f_at(self, x) -> np.ndarray:
        """``f`` at points ``x`` (shape ``(..., d)``), checked: float64 of shape ``(...)``.

        Raises
        ------
        SpecError
            Naming ``f``: it raised, or its values are non-numeric, complex, wrongly shaped
            or not finite (:func:`daskie.problems.validate.check_values`).
        """
        x = np.asarray(x, dtype=float)
        return evaluate(self.f, "f", x, shape=x.shape[:-1])

    def exact_at(self, x) -> np.ndarray:
        """``exact`` at points ``x`` (shape ``(..., d)``), checked like :meth:`f_at`."""
        if self.exact is None:
            raise SpecError(f"problem {self.name!r} has no exact solution")
        x = np.asarray(x, dtype=float)
        return evaluate(self.exact, "exact", x, shape=x.shape[:-1])

    def kernel_at(self, i: int, x, t) -> np.ndarray:
        """Kernel of ``terms[i]`` at ``x``, ``t`` (broadcasting ``(..., d)`` arrays), checked.

        Returns float64 of shape ``broadcast(x, t).shape[:-1]``; raises SpecError naming
        ``terms[i].kernel`` like :meth:`f_at`.
        """
        x = np.asarray(x, dtype=float)
        t = np.asarray(t, dtype=float)
        shape = np.broadcast_shapes(x.shape, t.shape)[:-1]
        return evaluate(self.terms[i].kernel, f"terms[{i}].kernel", x, t, shape=shape)

    # --- derived data -------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Number of coordinates d."""
        return self.domain.dim

    @property
    def is_linear(self) -> bool:
        """True when every term's nonlinearity is the identity."""
        return all(t.nonlinearity.linear for t in self.terms)

    def alpha_at(self, x: np.ndarray) -> np.ndarray:
        """``alpha`` at points ``x`` (shape ``(..., d)``) as a checked array of shape ``(...)``
        (see :meth:`f_at`)."""
        x = np.asarray(x, dtype=float)
        if callable(self.alpha):
            return evaluate(self.alpha, "alpha", x, shape=x.shape[:-1])
        return np.full(x.shape[:-1], float(self.alpha))

    def describe(self) -> dict:
        """Plain-data summary (JSON-serialisable) stored with every run."""
        return {"name": self.name, "description": self.description, "dim": self.dim,
                "domain": self.domain.to_dict(), "linear": self.is_linear,
                "alpha": None if callable(self.alpha) else float(self.alpha),
                "terms": [t.describe() for t in self.terms],
                "has_exact": self.exact is not None,
                "noise": None if self.noise is None else vars(self.noise),
                # only when set: stored runs without units keep their description (resume)
                **({"units": self.units} if self.units else {})}
