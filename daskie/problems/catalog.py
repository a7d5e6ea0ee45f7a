"""Named problems with exact solutions: the CEPTF paper's benchmarks (seed 000, section 5)
and small 1-D and 3-D cases.

``get(name)`` builds a :class:`~daskie.problems.spec.Problem`; ``names()`` lists them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from daskie.errors import SpecError
from daskie.problems.domain import Domain
from daskie.problems.spec import VOLTERRA, IntegralTerm, Noise, Nonlinearity, Problem

__all__ = ["get", "names", "register"]

_REGISTRY: dict[str, tuple[Callable[[], Problem], str]] = {}


def register(name: str, summary: str):
    """Decorator adding a problem builder to the catalog under ``name``."""

    def deco(fn):
        _REGISTRY[name] = (fn, summary)
        return fn

    return deco


#: The high-dimensional families (issue 18), kept apart from :func:`names`: code that walks
#: the catalog with tensor rules (n^d nodes) would not finish on them at d = 8.
_HIGHDIM: dict[str, tuple[Callable[[], Problem], str]] = {}


def names(highdim: bool = False) -> list[str]:
    """Names of the catalog problems, in catalog order; with ``highdim=True`` also the
    ``hd-*`` families of :mod:`daskie.problems.highdim` (d = 2, 3, 4, 6, 8)."""
    return list(_REGISTRY) + (list(_HIGHDIM) if highdim else [])


def summaries(highdim: bool = False) -> dict[str, str]:
    """One-line summary of each catalog problem (``highdim``: as in :func:`names`)."""
    both = {**_REGISTRY, **_HIGHDIM} if highdim else _REGISTRY
    return {k: v[1] for k, v in both.items()}


def get(name: str) -> Problem:
    """Build the catalog problem ``name`` (case-insensitive), ``hd-*`` families included."""
    both = {**_REGISTRY, **_HIGHDIM}
    lookup = {k.lower(): k for k in both}
    key = lookup.get(str(name).lower())
    if key is None:
        raise SpecError(f"unknown problem {name!r}; the catalog has: {', '.join(_REGISTRY)}, "
                        f"and hd-fredholm, hd-volterra, hd-mixed, hd-sharp as -d2 -d3 -d4 -d6 -d8, "
                        f"hd-bumps-fredholm, -volterra, -mixed as -d2 ... -d12")
    return both[key][0]()


def _x(p):
    return p[..., 0]


def _y(p):
    return p[..., 1]


UNIT2 = Domain((0.0, 0.0), (1.0, 1.0))


@register("E1", "linear Fredholm on [0,1]^2, exact e^(-x-y) - xy/2")
def e1() -> Problem:
    return Problem(
        domain=UNIT2,
        f=lambda p: np.exp(-_x(p) - _y(p)),
        terms=(IntegralTerm(lambda p, t: _x(p) * _y(p) * np.exp(_x(t) + _y(t)), lam=-1.0),),
        exact=lambda p: np.exp(-_x(p) - _y(p)) - 0.5 * _x(p) * _y(p),
        name="E1",
        description="mu = f - Int_0^1 Int_0^1 x y e^(s+t) mu ds dt (seed 000 Eq 5.1)",
    )


@register("E2", "linear Volterra on [0,1]^2, exact e^(x+y)")
def e2() -> Problem:
    return Problem(
        domain=UNIT2,
        f=lambda p: -np.exp(_x(p) + _y(p)) * (_x(p) * _y(p) - 1.0),
        terms=(IntegralTerm(lambda p, t: np.exp(_x(p) + _y(p) - _x(t) - _y(t)),
                            upper=(VOLTERRA, VOLTERRA)),),
        exact=lambda p: np.exp(_x(p) + _y(p)),
        name="E2",
        description="mu = f + Int_0^x Int_0^y e^(x+y-s-t) mu dt ds (seed 000 Eq 5.3)",
    )


@register("E3", "nonlinear Fredholm on [0,1]^2, exact 1/(1+x+y)^2")
def e3() -> Problem:
    exact = lambda p: 1.0 / (1.0 + _x(p) + _y(p)) ** 2  # noqa: E731
    return Problem(
        domain=UNIT2,
        f=lambda p: exact(p) - _x(p) / (6.0 * (1.0 + _y(p))),
        terms=(IntegralTerm(lambda p, t: _x(p) / (1.0 + _y(p)) * (1.0 + _x(t) + _y(t)),
                            nonlinearity=Nonlinearity.power(2)),),
        exact=exact,
        name="E3",
        description="mu = f + Int Int x/(1+y) (1+s+t) mu^2 ds dt (seed 000 Eq 5.5)",
    )


def _e4(noise: Noise | None, name: str) -> Problem:
    exact = lambda p: _x(p) ** 2 + _y(p) ** 2  # noqa: E731

    def f(p):
        x, y = _x(p), _y(p)
        return exact(p) - x * y * (9 * x**4 + 10 * x**2 * y**2 + 9 * y**4) / 45.0

    return Problem(
        domain=UNIT2,
        f=f,
        terms=(IntegralTerm(lambda p, t: np.ones(np.broadcast_shapes(p.shape, t.shape)[:-1]),
                            upper=(VOLTERRA, VOLTERRA), nonlinearity=Nonlinearity.power(2)),),
        exact=exact,
        noise=noise,
        name=name,
        description="mu = f + Int_0^y Int_0^x mu^2 ds dt (seed 000 Eq 5.7)",
    )


@register("E4", "nonlinear Volterra on [0,1]^2, exact x^2 + y^2")
def e4() -> Problem:
    return _e4(None, "E4")


@register("E4-noisy", "E4 with f + N(0, 0.05 max|f|) and lambda * U(0.9, 1.1), seeded")
def e4_noisy() -> Problem:
    return _e4(Noise(f_sigma=0.05, lam_spread=0.1, seed=0), "E4-noisy")


@register("abel", "weakly singular Volterra (Abel) on [0,1], exact sqrt(x)")
def abel() -> Problem:
    return Problem(
        domain=Domain((0.0,), (1.0,)),
        f=lambda p: np.sqrt(_x(p)) - 0.5 * np.pi * _x(p),
        terms=(IntegralTerm(lambda p, t: np.ones(np.broadcast_shapes(p.shape, t.shape)[:-1]),
                            upper=(VOLTERRA,), singularity=0.5),),
        exact=lambda p: np.sqrt(_x(p)),
        name="abel",
        description="mu = f + Int_0^x (x-t)^(-1/2) mu dt (seed 000 Eq 5.9)",
    )


def _lshape_kernel(p, t):
    r2 = np.sum((p - t) ** 2, axis=-1)
    return np.cos(np.pi * np.sqrt(r2)) / (1.0 + r2)


def _lshape_exact(p):
    return np.exp(-(_x(p) ** 2 + _y(p) ** 2)) + _x(p) * _y(p)


LSHAPE = Domain((0.0, 0.0), (1.0, 1.0), holes=[((0.5, 0.5), (1.0, 1.0))])
#: Gauss points per coordinate and cell used to manufacture the L-shape's f.
LSHAPE_F_NODES = 28


def _lshape_f(p):
    """f = mu - Int_Omega K mu, with the integral by a 28 x 28 Gauss rule on each of the
    three unit-half cells of the L. The kernel cos(pi r)/(1 + r^2) is analytic in r^2 and
    mu is entire, so the rule converges spectrally: 20 and 28 nodes agree to 1e-15
    (``tests/test_problems.py`` checks 1e-13)."""
    from daskie.quadrature import domain_rule

    nodes, weights = domain_rule(LSHAPE, LSHAPE_F_NODES)
    wm = weights * _lshape_exact(nodes)
    p = np.asarray(p, dtype=float)
    flat = p.reshape(-1, 2)
    out = np.empty(len(flat))
    for s in range(0, len(flat), 512):
        chunk = flat[s:s + 512]
        out[s:s + 512] = _lshape_kernel(chunk[:, None, :], nodes[None, :, :]) @ wm
    return (_lshape_exact(flat) - out).reshape(p.shape[:-1])


@register("lshape", "Fredholm on the L-shaped domain [0,1]^2 minus [0.5,1]^2 (seed 000 Eq 5.10)")
def lshape() -> Problem:
    return Problem(
        domain=LSHAPE,
        f=_lshape_f,
        terms=(IntegralTerm(_lshape_kernel),),
        exact=_lshape_exact,
        name="lshape",
        description="mu = f + Int_Omega cos(pi|X-T|)/(1+|X-T|^2) mu dT, "
                    "exact e^(-x^2-y^2) + xy (manufactured)",
    )


# --- small cases: fast to solve, used by tests and examples ----------------------------
UNIT1 = Domain((0.0,), (1.0,))


@register("fredholm1d", "linear Fredholm on [0,1], exact e^x")
def fredholm1d() -> Problem:
    return Problem(
        domain=UNIT1,
        f=lambda p: np.exp(_x(p)) - _x(p),
        terms=(IntegralTerm(lambda p, t: _x(p) * _x(t)),),
        exact=lambda p: np.exp(_x(p)),
        name="fredholm1d",
        description="mu = e^x - x + Int_0^1 x t mu dt",
    )


@register("volterra1d", "linear Volterra on [0,1], exact cos x")
def volterra1d() -> Problem:
    return Problem(
        domain=UNIT1,
        f=lambda p: 2.0 * np.cos(_x(p)) - 1.0,
        terms=(IntegralTerm(lambda p, t: _x(p) - _x(t), upper=(VOLTERRA,)),),
        exact=lambda p: np.cos(_x(p)),
        name="volterra1d",
        description="mu = 2 cos x - 1 + Int_0^x (x - t) mu dt",
    )


@register("nfredholm1d", "nonlinear Fredholm on [0,1], exact e^x")
def nfredholm1d() -> Problem:
    c = (np.e**2 + 1.0) / 8.0
    return Problem(
        domain=UNIT1,
        f=lambda p: np.exp(_x(p)) - c * _x(p),
        terms=(IntegralTerm(lambda p, t: _x(p) * _x(t), lam=0.5,
                            nonlinearity=Nonlinearity.power(2)),),
        exact=lambda p: np.exp(_x(p)),
        name="nfredholm1d",
        description="mu = e^x - x (e^2+1)/8 + 0.5 Int_0^1 x t mu^2 dt",
    )


@register("nvolterra1d", "nonlinear Volterra on [0,1], exact e^(-x)")
def nvolterra1d() -> Problem:
    return Problem(
        domain=UNIT1,
        f=lambda p: np.exp(-_x(p)) - 0.5 * (1.0 - np.exp(-2.0 * _x(p))),
        terms=(IntegralTerm(lambda p, t: np.ones(np.broadcast_shapes(p.shape, t.shape)[:-1]),
                            upper=(VOLTERRA,), nonlinearity=Nonlinearity.power(2)),),
        exact=lambda p: np.exp(-_x(p)),
        name="nvolterra1d",
        description="mu = e^(-x) - (1 - e^(-2x))/2 + Int_0^x mu^2 dt",
    )


@register("fredholm3d", "linear Fredholm on [0,1]^3, exact e^(-x-y-z) - xyz/2")
def fredholm3d() -> Problem:
    return Problem(
        domain=Domain((0.0,) * 3, (1.0,) * 3),
        f=lambda p: np.exp(-np.sum(p, axis=-1)),
        terms=(IntegralTerm(lambda p, t: np.prod(p, axis=-1) * np.exp(np.sum(t, axis=-1)),
                            lam=-1.0),),
        exact=lambda p: np.exp(-np.sum(p, axis=-1)) - 0.5 * np.prod(p, axis=-1),
        name="fredholm3d",
        description="mu = f - Int_[0,1]^3 x y z e^(s+t+u) mu (3-D analogue of E1)",
    )


# --- high-dimensional families (issue 18; derivations in daskie/problems/highdim.py) --------
def _register_highdim():
    from daskie.problems import highdim

    summaries_ = {"hd-fredholm": "linear Fredholm, kernel exp(-|X-T|^2/d)",
                  "hd-volterra": "nonlinear (mu^2) Volterra over [0, X]",
                  "hd-mixed": "nonlinear (mu^2), half Volterra, half Fredholm",
                  "hd-sharp": "linear Fredholm, narrow Gaussian kernel (width 0.1)"}
    for family, text in summaries_.items():
        for d in (2, 3, 4, 6, 8):
            _HIGHDIM[f"{family}-d{d}"] = (lambda family=family, d=d: highdim.build(family, d),
                                          f"{text} on [0,1]^{d}, exact exp(sum x/{d})")
    from daskie.problems import nonseparable  # issue 30: solutions that are not products

    summaries_ = {"hd-bumps-fredholm": "linear Fredholm, kernel exp(-4|X-T|^2/d)",
                  "hd-bumps-volterra": "nonlinear (mu^2) Volterra over [0, X]",
                  "hd-bumps-mixed": "nonlinear (mu^2), half Volterra, half Fredholm"}
    for family, text in summaries_.items():
        for d in (2, 3, 4, 6, 8, 10, 12):
            _HIGHDIM[f"{family}-d{d}"] = (lambda family=family, d=d: nonseparable.build(family, d),
                                          f"{text} on [0,1]^{d}, exact: three Gaussian bumps")


_register_highdim()
