"""High-dimensional integral equations on [0, 1]^d with exact, closed-form right-hand sides.

Four families (issue 18), each for any d >= 2 (the catalog registers d = 2, 3, 4, 6, 8), all
with the product-form exact solution

    mu(X) = exp(sum_i x_i / d) = prod_i e^(x_i / d),

and kernels that are products of one-dimensional factors, ``K(X, T) = prod_i k_i(x_i, t_i)``.
With ``M(mu) = mu^p`` (p = 1 or 2) the integrand ``K(X, T) mu(T)^p = prod_i k_i(x_i, t_i)
e^(p t_i / d)`` factors too, so every integral is a product of 1-D integrals

    I_i(x_i) = Int_{a_i}^{b_i(x_i)} k_i(x_i, t) e^(beta t) dt,    beta = p / d,

and ``f(X) = mu(X) - lam prod_i I_i(x_i)`` is exact to rounding. Two 1-D factors occur:

* the unit factor ``k = 1``: ``I = (e^(beta b) - e^(beta a)) / beta``;
* the Gaussian factor ``k = c exp(-(x - t)^2 / s)``: completing the square,
  ``-(t - x)^2 / s + beta t = -(t - m)^2 / s + beta x + beta^2 s / 4`` with
  ``m = x + beta s / 2``, so
  ``I = c e^(beta x + beta^2 s / 4) (sqrt(pi s) / 2) [erf((b - m)/sqrt s) - erf((a - m)/sqrt s)]``.

The families:

* ``hd-fredholm-d{d}``: linear Fredholm, ``k_i = exp(-(x_i - t_i)^2 / d)`` (the kernel
  ``exp(-|X - T|^2 / d)``, not low rank), lam = 0.5. Since ``0 < K <= 1`` on a box of volume 1,
  ``||lam K|| <= 0.5 < 1`` and the equation has a unique solution (Neumann series).
* ``hd-volterra-d{d}``: nonlinear Volterra, ``mu^2`` over ``[0, x_1] x ... x [0, x_d]``,
  ``k_i = 1``, lam = 1: ``I_i = (d / 2)(e^(2 x_i / d) - 1)``. A Volterra equation with a
  locally Lipschitz ``M`` has at most one continuous solution.
* ``hd-mixed-d{d}``: nonlinear ``mu^2``; coordinates ``0 .. d/2 - 1`` Volterra (unit factors),
  the others Fredholm with ``k_i = exp(-(x_i - t_i)^2 / d)``; lam = 0.5.
* ``hd-sharp-d{d}``: linear Fredholm with the narrow normalised Gaussian
  ``k_i = exp(-(x_i - t_i)^2 / (2 w^2)) / (w sqrt(2 pi))``, w = 0.1 (ten times narrower than
  the box): ``Int_0^1 k_i dt <= 1``, so ``||lam K|| <= lam = 0.5`` and the solution is unique.
  The kernel peaks at ``(w sqrt(2 pi))^(-d)`` (~4e3 at d = 6): equal-weight node sets need
  many nodes per peak width, which is where quadrature-based solvers pay.

The kernels are :class:`ProductKernel` objects: callables like any daskie kernel, which also
expose their factors (mass and quantile of each 1-D factor), so a formulation can map its
per-point rules onto each factor's distribution (``QuadratureCollocation(separable=...)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from daskie.errors import SpecError
from daskie.problems.domain import Domain
from daskie.problems.spec import VOLTERRA, IntegralTerm, Nonlinearity, Problem

__all__ = ["UnitFactor", "GaussFactor", "ProductKernel", "FAMILIES", "build", "build_from",
           "exact_solution"]

#: Width of the sharp family's Gaussian factor.
SHARP_WIDTH = 0.1


def _erf(x):
    import torch  # numpy has no erf; torch's is float64-accurate

    return torch.special.erf(torch.as_tensor(np.asarray(x, dtype=float))).numpy()


def _erfinv(x):
    import torch

    return torch.special.erfinv(torch.as_tensor(np.asarray(x, dtype=float))).numpy()


@dataclass(frozen=True)
class UnitFactor:
    """The 1-D kernel factor ``k(x, t) = 1``."""

    def __call__(self, x, t):
        return np.ones(np.broadcast_shapes(np.shape(x), np.shape(t)))

    def mass(self, x, a, b):
        """``Int_a^b k(x, t) dt``."""
        return np.broadcast_to(b - a, np.broadcast_shapes(np.shape(x), np.shape(a), np.shape(b)))

    def quantile(self, x, a, b, u):
        """``t`` with ``Int_a^t k / Int_a^b k = u`` (the factor's inverse distribution)."""
        return a + (b - a) * u

    def moment(self, x, a, b, beta: float):
        """``Int_a^b k(x, t) e^(beta t) dt`` in closed form."""
        if beta == 0:
            return self.mass(x, a, b)
        return (np.exp(beta * b) - np.exp(beta * a)) / beta + 0 * x


@dataclass(frozen=True)
class GaussFactor:
    """The 1-D kernel factor ``k(x, t) = scale * exp(-(x - t)^2 / s)`` (``s`` = ``spread``)."""

    spread: float
    scale: float = 1.0

    def __call__(self, x, t):
        return self.scale * np.exp(-((x - t) ** 2) / self.spread)

    def mass(self, x, a, b):
        """``Int_a^b k(x, t) dt``."""
        return self.moment(x, a, b, 0.0)

    def quantile(self, x, a, b, u):
        """``t`` with ``Int_a^t k / Int_a^b k = u``: the truncated Gaussian's inverse CDF."""
        r = math.sqrt(self.spread)
        ea, eb = _erf((a - x) / r), _erf((b - x) / r)
        return np.clip(x + r * _erfinv(ea + u * (eb - ea)), a, b)

    def moment(self, x, a, b, beta: float):
        """``Int_a^b k(x, t) e^(beta t) dt`` in closed form (completing the square)."""
        s = self.spread
        m = x + beta * s / 2.0
        r = math.sqrt(s)
        return (self.scale * np.exp(beta * x + beta**2 * s / 4.0) * 0.5 * math.sqrt(math.pi * s)
                * (_erf((b - m) / r) - _erf((a - m) / r)))


@dataclass(frozen=True, eq=False)
class ProductKernel:
    """``K(X, T) = prod_i factors[i](x_i, t_i)``: a daskie kernel that exposes its factors.

    Parameters
    ----------
    factors : tuple
        One 1-D factor per coordinate (:class:`UnitFactor`, :class:`GaussFactor`): each has
        ``mass(x, a, b)`` and ``quantile(x, a, b, u)``, which formulations use to map a rule
        onto the kernel's mass, and ``moment(x, a, b, beta)`` for the closed-form f.
    """

    factors: tuple

    def __call__(self, x, t):
        x = np.asarray(x, dtype=float)
        t = np.asarray(t, dtype=float)
        out = np.ones(np.broadcast_shapes(x.shape, t.shape)[:-1])
        for i, k in enumerate(self.factors):
            out = out * k(x[..., i], t[..., i])
        return out

    def moment(self, x, lower, upper, beta: float):
        """``Int_{lower}^{upper(X)} K(X, T) e^(beta sum t_i) dT`` at points ``x`` ``(n, d)``,
        ``upper`` of shape ``(n, d)``: the product of the factors' 1-D moments."""
        out = np.ones(len(x))
        for i, k in enumerate(self.factors):
            out = out * k.moment(x[:, i], lower[i], upper[:, i], beta)
        return out


def exact_solution(p):
    """``mu(X) = exp(sum_i x_i / d)``."""
    p = np.asarray(p, dtype=float)
    return np.exp(np.sum(p, axis=-1) / p.shape[-1])


def _problem(name, d, factors, upper, lam, power, description):
    kernel = ProductKernel(tuple(factors))
    lower = (0.0,) * d
    term = IntegralTerm(kernel, lam=lam, lower=lower, upper=tuple(upper),
                        nonlinearity=Nonlinearity.power(power))
    probe = IntegralTerm(kernel, lower=lower, upper=tuple(upper))  # for upper_limits only
    beta = power / d

    def f(p):
        p = np.asarray(p, dtype=float)
        flat = p.reshape(-1, d)
        b = probe.upper_limits(flat) if any(u == VOLTERRA for u in upper) \
            else np.broadcast_to(np.asarray(upper, dtype=float), flat.shape)
        val = exact_solution(flat) - lam * kernel.moment(flat, lower, b, beta)
        return val.reshape(p.shape[:-1])

    return Problem(domain=Domain((0.0,) * d, (1.0,) * d), f=f, terms=(term,),
                   exact=exact_solution, name=name, description=description)


def fredholm(d: int) -> Problem:
    """``hd-fredholm-d{d}``: ``mu = f + 0.5 Int_[0,1]^d exp(-|X - T|^2 / d) mu dT``."""
    return _problem(f"hd-fredholm-d{d}", d, [GaussFactor(float(d))] * d, [1.0] * d, 0.5, 1,
                    f"mu = f + 0.5 Int_[0,1]^{d} exp(-|X-T|^2/{d}) mu dT, exact exp(sum x/{d})")


def volterra(d: int) -> Problem:
    """``hd-volterra-d{d}``: ``mu = f + Int_[0,X] mu^2 dT``."""
    return _problem(f"hd-volterra-d{d}", d, [UnitFactor()] * d, [VOLTERRA] * d, 1.0, 2,
                    f"mu = f + Int_[0,X] mu^2 dT on [0,1]^{d}, exact exp(sum x/{d})")


def mixed(d: int) -> Problem:
    """``hd-mixed-d{d}``: Volterra in the first ``d // 2`` coordinates, Fredholm with the
    factor ``exp(-(x_i - t_i)^2 / d)`` in the others; ``mu^2``, lam = 0.5."""
    h = d // 2
    factors = [UnitFactor()] * h + [GaussFactor(float(d))] * (d - h)
    return _problem(f"hd-mixed-d{d}", d, factors, [VOLTERRA] * h + [1.0] * (d - h), 0.5, 2,
                    f"mu = f + 0.5 Int_[0,x_1..x_{h}] x [0,1]^{d - h} prod_(i>{h}) "
                    f"exp(-(x_i-t_i)^2/{d}) mu^2 dT, exact exp(sum x/{d})")


def sharp(d: int) -> Problem:
    """``hd-sharp-d{d}``: ``mu = f + 0.5 Int_[0,1]^d prod_i N(x_i - t_i; w) mu dT`` with the
    normalised Gaussian of width w = 0.1."""
    w = SHARP_WIDTH
    factor = GaussFactor(2.0 * w * w, 1.0 / (w * math.sqrt(2.0 * math.pi)))
    return _problem(f"hd-sharp-d{d}", d, [factor] * d, [1.0] * d, 0.5, 1,
                    f"mu = f + 0.5 Int_[0,1]^{d} prod N(x_i-t_i; {w}) mu dT, exact exp(sum x/{d})")


#: Family name -> builder taking d.
FAMILIES = {"hd-fredholm": fredholm, "hd-volterra": volterra, "hd-mixed": mixed,
            "hd-sharp": sharp}


def build(family: str, d: int) -> Problem:
    """The problem of ``family`` (a key of :data:`FAMILIES`) in dimension ``d >= 2``."""
    return build_from(FAMILIES, "high-dimensional", family, d)


def build_from(families: dict, kind: str, family: str, d: int) -> Problem:
    """``families[family](d)``, with a named error for an unknown family (of ``kind``) or a
    ``d`` that is not an integer >= 2."""
    if family not in families:
        raise SpecError(f"unknown {kind} family {family!r}; use one of {sorted(families)}")
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2:
        raise SpecError(f"d must be an integer >= 2, got {d!r}")
    return families[family](int(d))
