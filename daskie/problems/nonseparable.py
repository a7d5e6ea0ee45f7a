"""High-dimensional equations whose solutions a tensor grid cannot fake (issue 30).

The issue-18 families (:mod:`daskie.problems.highdim`) all have the rank-one, nearly
polynomial solution ``exp(sum x_i / d)``, which a tensor Nystrom with 3-5 nodes per axis
resolves to 1e-9 .. 1e-15. The families here have as solution a sum of three off-centre
Gaussian bumps,

    mu(X) = sum_j a_j exp(-|X - c_j|^2 / s^2),    s^2 = d / 8,   a = (1, 0.8, 0.6),

with centres ``c_j`` that differ along every coordinate (:func:`centres`): not a product,
and curved along every axis (with ``s^2 = d / 8`` the exponent's range over the cube stays
O(1) as d grows: about 0 to 4). Kernels are :class:`~daskie.problems.highdim.ProductKernel`
objects of unit and Gaussian factors, and ``M(mu) = mu`` or ``mu^2``. Both ``mu`` and
``mu^2 = sum_jk a_j a_k exp(-|X - c_j|^2/s^2 - |X - c_k|^2/s^2)`` are sums of products of
1-D Gaussians in ``t_i``, and a Gaussian kernel factor multiplies each by one more, so every
integral is a sum of products of 1-D integrals of the form

    Int_a^b exp(-A t^2 + B t + C) dt
        = e^(C + B^2 / 4A) (sqrt(pi / A) / 2) [erf(sqrt(A)(b - m)) - erf(sqrt(A)(a - m))],

``m = B / 2A`` (completing the square): ``f = mu - lam Int K M(mu)`` is closed-form to
rounding. The exponent ``-A t^2 + B t + C`` is a sum of terms ``-(t - .)^2 / .`` <= 0, so
``C + B^2 / 4A <= 0`` and nothing overflows; where both erf arguments have the same sign the
difference is taken of erfc values (no cancellation).

Families (``hd-bumps-<kind>-d{d}``):

* ``hd-bumps-fredholm``: linear Fredholm, kernel ``exp(-4 |X - T|^2 / d)``, lam = 0.5
  (``0 < K <= 1`` on a box of volume 1: ``||lam K|| <= 0.5``, unique solution).
* ``hd-bumps-volterra``: nonlinear ``mu^2`` over ``[0, x_1] x ... x [0, x_d]``, lam = 0.5
  (a Volterra equation with locally Lipschitz ``M`` has at most one continuous solution).
* ``hd-bumps-mixed``: nonlinear ``mu^2``, the first ``d // 2`` coordinates Volterra (unit
  factors), the others Fredholm with the factor ``exp(-4 (x_i - t_i)^2 / d)``, lam = 0.5.
"""

from __future__ import annotations

import math

import numpy as np

from daskie.errors import SpecError
from daskie.problems.domain import Domain
from daskie.problems.highdim import GaussFactor, ProductKernel, UnitFactor, build_from
from daskie.problems.spec import VOLTERRA, IntegralTerm, Nonlinearity, Problem

__all__ = ["AMPLITUDES", "FAMILIES", "build", "centres", "width2", "bumps", "gauss_integral"]

#: Heights of the three bumps.
AMPLITUDES = (1.0, 0.8, 0.6)


def centres(d: int) -> np.ndarray:
    """The bumps' centres ``(3, d)``: ``0.5 + 0.35 sin(2 pi ((i + 1) g + j / 3))`` with ``g``
    the golden ratio's fractional part, so every coordinate of every centre differs and lies
    in [0.15, 0.85]."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    i = np.arange(d)[None, :]
    j = np.arange(len(AMPLITUDES))[:, None]
    return 0.5 + 0.35 * np.sin(2.0 * math.pi * ((i + 1) * g + j / 3.0))


def width2(d: int) -> float:
    """``s^2 = d / 8``: the exponent ``|X - c|^2 / s^2`` ranges over about [0, 4] at every d."""
    return d / 8.0


def bumps(x) -> np.ndarray:
    """The exact solution ``sum_j a_j exp(-|X - c_j|^2 / s^2)`` at points ``x`` ``(..., d)``."""
    x = np.asarray(x, dtype=float)
    d = x.shape[-1]
    c, s2 = centres(d), width2(d)
    out = np.zeros(x.shape[:-1])
    for a, cj in zip(AMPLITUDES, c):
        out = out + a * np.exp(-np.sum((x - cj) ** 2, axis=-1) / s2)
    return out


def _erf(z):
    import torch  # numpy has no erf; torch's is float64-accurate

    return torch.special.erf(torch.as_tensor(z)).numpy()


def _erfc(z):
    import torch

    return torch.special.erfc(torch.as_tensor(z)).numpy()


def gauss_integral(A, B, C, a, b):
    """``Int_a^b exp(-A t^2 + B t + C) dt`` for ``A > 0`` (arrays broadcast), closed form."""
    A, B, C, a, b = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (A, B, C, a, b)))
    r = np.sqrt(A)
    m = B / (2.0 * A)
    lo, hi = r * (a - m), r * (b - m)
    diff = np.where(lo >= 0, _erfc(lo) - _erfc(hi),
                    np.where(hi <= 0, _erfc(-hi) - _erfc(-lo), _erf(hi) - _erf(lo)))
    return np.exp(C + B * B / (4.0 * A)) * 0.5 * np.sqrt(math.pi / A) * diff


def _components(d: int, power: int):
    """``M(mu) = sum_k coef_k prod_i exp(-A_k t_i^2 + B_ki t_i + C_ki)``: (coef, A, B, C)."""
    c, s2 = centres(d), width2(d)
    amp = np.asarray(AMPLITUDES)
    if power == 1:
        return [(amp[j], 1.0 / s2, 2.0 * c[j] / s2, -c[j] ** 2 / s2) for j in range(len(amp))]
    return [(amp[j] * amp[k], 2.0 / s2, 2.0 * (c[j] + c[k]) / s2, -(c[j] ** 2 + c[k] ** 2) / s2)
            for j in range(len(amp)) for k in range(len(amp))]


def closed_form_integral(kernel: ProductKernel, x, lower, upper, power: int) -> np.ndarray:
    """``Int_{lower}^{upper(X)} K(X, T) M(bumps(T)) dT`` at points ``x`` ``(n, d)`` (upper
    ``(n, d)``), ``M(mu) = mu^power``: a sum over the components of ``M`` of products over
    the coordinates of 1-D Gaussian integrals (module docstring)."""
    n, d = x.shape
    out = np.zeros(n)
    for coef, A, B, C in _components(d, power):
        prod = np.full(n, coef)
        for i, k in enumerate(kernel.factors):
            a_i, b_i, c_i = np.full(n, A), np.full(n, B[i]), np.full(n, C[i])
            if isinstance(k, GaussFactor):  # times scale exp(-(x - t)^2 / spread)
                a_i = a_i + 1.0 / k.spread
                b_i = b_i + 2.0 * x[:, i] / k.spread
                c_i = c_i - x[:, i] ** 2 / k.spread + math.log(k.scale)
            elif not isinstance(k, UnitFactor):
                raise SpecError(f"no closed form for the kernel factor {k!r}")
            prod = prod * gauss_integral(a_i, b_i, c_i, lower[i], upper[:, i])
        out = out + prod
    return out


def _problem(name, d, factors, upper, lam, power, description):
    kernel = ProductKernel(tuple(factors))
    lower = (0.0,) * d
    term = IntegralTerm(kernel, lam=lam, lower=lower, upper=tuple(upper),
                        nonlinearity=Nonlinearity.power(power))

    def f(p):
        p = np.asarray(p, dtype=float)
        flat = p.reshape(-1, d)
        b = term.upper_limits(flat)
        val = bumps(flat) - lam * closed_form_integral(kernel, flat, lower, b, power)
        return val.reshape(p.shape[:-1])

    return Problem(domain=Domain((0.0,) * d, (1.0,) * d), f=f, terms=(term,), exact=bumps,
                   name=name, description=description)


def fredholm(d: int) -> Problem:
    """``hd-bumps-fredholm-d{d}``: ``mu = f + 0.5 Int_[0,1]^d exp(-4|X-T|^2/d) mu dT``."""
    return _problem(f"hd-bumps-fredholm-d{d}", d, [GaussFactor(d / 4.0)] * d, [1.0] * d, 0.5, 1,
                    f"mu = f + 0.5 Int_[0,1]^{d} exp(-4|X-T|^2/{d}) mu dT, exact: three bumps")


def volterra(d: int) -> Problem:
    """``hd-bumps-volterra-d{d}``: ``mu = f + 0.5 Int_[0,X] mu^2 dT``."""
    return _problem(f"hd-bumps-volterra-d{d}", d, [UnitFactor()] * d, [VOLTERRA] * d, 0.5, 2,
                    f"mu = f + 0.5 Int_[0,X] mu^2 dT on [0,1]^{d}, exact: three bumps")


def mixed(d: int) -> Problem:
    """``hd-bumps-mixed-d{d}``: ``mu^2``, Volterra in the first ``d // 2`` coordinates,
    Fredholm with the factor ``exp(-4 (x_i - t_i)^2 / d)`` in the others; lam = 0.5."""
    h = d // 2
    factors = [UnitFactor()] * h + [GaussFactor(d / 4.0)] * (d - h)
    return _problem(f"hd-bumps-mixed-d{d}", d, factors, [VOLTERRA] * h + [1.0] * (d - h), 0.5, 2,
                    f"mu = f + 0.5 Int_[0,x_1..x_{h}] x [0,1]^{d - h} prod_(i>{h}) "
                    f"exp(-4(x_i-t_i)^2/{d}) mu^2 dT, exact: three bumps")


#: Family name -> builder taking d.
FAMILIES = {"hd-bumps-fredholm": fredholm, "hd-bumps-volterra": volterra,
            "hd-bumps-mixed": mixed}


def build(family: str, d: int) -> Problem:
    """The problem of ``family`` (a key of :data:`FAMILIES`) in dimension ``d >= 2``."""
    return build_from(FAMILIES, "non-separable", family, d)
