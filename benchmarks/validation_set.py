"""A validation set of integral equations with closed-form solutions, none tuned on.

Each entry is a builder of a :class:`daskie.Problem` with its exact solution, a citation and
the stress it puts on a solver (``tags``). Where a source gives the equation itself, the entry
reproduces it; where it gives a family (a kernel, a kind of equation), ``f`` was
manufactured from the chosen exact solution in closed form, and the citation says
"after". :func:`verify` checks every entry numerically before it is used: the residual of
the exact solution in a fine Nystrom rule (kinks split, singular ends graded) must be at
rounding level, and the Nystrom solution must match the exact one.

Run ``python benchmarks/validation_set.py`` to print the verification table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from daskie.problems import VOLTERRA, Domain, IntegralTerm, Nonlinearity, Problem

__all__ = ["Entry", "ENTRIES", "names", "get", "verify"]

E = math.e
PI = math.pi


def _x(p):
    return p[..., 0]


def _y(p):
    return p[..., 1]


def _z(p):
    return p[..., 2]


def _ones(p, t):
    return np.ones(np.broadcast_shapes(p.shape, t.shape)[:-1])


@dataclass(frozen=True)
class Entry:
    """One validation equation: its builder, where it comes from, what it stresses."""

    name: str
    build: Callable[[], Problem]
    citation: str
    tags: tuple[str, ...]


ENTRIES: dict[str, Entry] = {}


def _entry(name, citation, tags):
    def deco(fn):
        def build():
            return fn(name)

        ENTRIES[name] = Entry(name, build, citation, tuple(tags))
        return fn

    return deco


U1 = Domain((0.0,), (1.0,))
U2 = Domain((0.0, 0.0), (1.0, 1.0))


@_entry("v-expkernel", "after Atkinson, The Numerical Solution of Integral Equations of the "
        "Second Kind (CUP 1997), sec. 4.1 (Nystrom method; smooth kernel e^(xt))",
        ["fredholm", "linear", "1d"])
def _v_expkernel(name):
    lam = 0.5
    return Problem(domain=U1, name=name,
                   f=lambda p: np.exp(_x(p)) - lam * (np.exp(_x(p) + 1.0) - 1.0) / (_x(p) + 1.0),
                   terms=(IntegralTerm(lambda p, t: np.exp(_x(p) * _x(t)), lam=lam),),
                   exact=lambda p: np.exp(_x(p)),
                   description="u = f + 1/2 Int_0^1 e^(xt) u dt, u = e^x")


@_entry("v-volterra-fredholm", "Wazwaz, Linear and Nonlinear Integral Equations (Springer 2011), "
        "ch. 6 (Volterra-Fredholm integral equations; mixed separable + Volterra kernel)",
        ["fredholm", "volterra", "sum-of-terms", "linear", "1d"])
def _v_vf(name):
    return Problem(domain=U1, name=name, f=lambda p: 1.0 - _x(p),
                   terms=(IntegralTerm(lambda p, t: _x(p) * _x(t)),
                          IntegralTerm(_ones, upper=(VOLTERRA,))),
                   exact=lambda p: np.exp(_x(p)),
                   description="u = 1 - x + Int_0^1 x t u dt + Int_0^x u dt, u = e^x")


@_entry("v-volterra-cos", "Wazwaz 2011, ch. 3 (Volterra equations of the second kind; "
        "difference kernel x - t, solved by the Laplace transform)",
        ["volterra", "linear", "1d"])
def _v_cos(name):
    return Problem(domain=U1, name=name, f=lambda p: np.ones_like(_x(p)),
                   terms=(IntegralTerm(lambda p, t: _x(p) - _x(t), lam=-1.0, upper=(VOLTERRA,)),),
                   exact=lambda p: np.cos(_x(p)),
                   description="u = 1 - Int_0^x (x - t) u dt, u = cos x")


@_entry("v-riccati", "Wazwaz 2011, ch. 9 (nonlinear Volterra equations; u = 1 + Int_0^x u^2, "
        "the integral form of the Riccati equation u' = u^2, u(0) = 1)",
        ["volterra", "nonlinear", "1d", "non-unit-domain", "amplification"])
def _v_riccati(name):
    return Problem(domain=Domain((0.0,), (0.8,)), name=name, f=lambda p: np.ones_like(_x(p)),
                   terms=(IntegralTerm(_ones, upper=(VOLTERRA,), nonlinearity=Nonlinearity.power(2)),),
                   exact=lambda p: 1.0 / (1.0 - _x(p)),
                   description="u = 1 + Int_0^x u^2 dt on [0, 0.8], u = 1/(1 - x)")


@_entry("v-bifurcation", "after Wazwaz 2011, ch. 4 (nonlinear Fredholm equations: bifurcation "
        "points and several solutions, u = f + lam Int x t u^2)",
        ["fredholm", "nonlinear", "1d", "several-solutions"])
def _v_bifurcation(name):
    # u = a x with a = 1 + a^2 / 8: a = 4 - 2 sqrt 2 (the branch f / alpha leads to) or
    # a = 4 + 2 sqrt 2 (a second genuine solution).
    a = 4.0 - 2.0 * math.sqrt(2.0)
    return Problem(domain=U1, name=name, f=lambda p: _x(p),
                   terms=(IntegralTerm(lambda p, t: _x(p) * _x(t), lam=0.5,
                                       nonlinearity=Nonlinearity.power(2)),),
                   exact=lambda p: a * _x(p),
                   description="u = x + 1/2 Int_0^1 x t u^2 dt: u = (4 -+ 2 sqrt 2) x")


@_entry("v-near-fold", "after Wazwaz 2011, ch. 4 (bifurcation of u = f + lam Int x t u^2): "
        "lam = 0.96, just below the fold at lam = 1, where the two branches are close",
        ["fredholm", "nonlinear", "1d", "several-solutions"])
def _v_near_fold(name):
    # u = a x with a = 1 + 0.24 a^2: a = 5/3 (f / alpha's branch) or a = 5/2
    return Problem(domain=U1, name=name, f=lambda p: _x(p),
                   terms=(IntegralTerm(lambda p, t: _x(p) * _x(t), lam=0.96,
                                       nonlinearity=Nonlinearity.power(2)),),
                   exact=lambda p: 5.0 / 3.0 * _x(p),
                   description="u = x + 0.96 Int_0^1 x t u^2 dt: u = 5x/3 or 5x/2")


@_entry("v-green", "after Kress, Linear Integral Equations (Springer, 3rd ed. 2014), sec. 1 "
        "(Green's function min(x,t)(1 - max(x,t)) of -u'' with Dirichlet ends); "
        "Atkinson 1997 sec. 4.2 (Nystrom for kernels with a derivative jump)",
        ["fredholm", "linear", "1d", "kink"])
def _v_green(name):
    lam = 1.0
    return Problem(domain=U1, name=name,
                   f=lambda p: np.exp(_x(p)) - lam * (1.0 - np.exp(_x(p)) + (E - 1.0) * _x(p)),
                   terms=(IntegralTerm(lambda p, t: np.minimum(_x(p), _x(t)) * (1.0 - np.maximum(_x(p), _x(t))),
                                       lam=lam, kink=True),),
                   exact=lambda p: np.exp(_x(p)),
                   description="u = f + Int_0^1 G(x,t) u dt, G = min(x,t)(1 - max(x,t)), u = e^x")


@_entry("v-abs-kernel", "after Polyanin & Manzhirov, Handbook of Integral Equations (CRC, 2nd "
        "ed. 2008), sec. 4.1 (Fredholm equations of the second kind with kernels |x - t|)",
        ["fredholm", "linear", "1d", "kink", "non-unit-domain"])
def _v_abs(name):
    lam = 0.5
    return Problem(domain=Domain((-1.0,), (1.0,)), name=name,
                   f=lambda p: _x(p) ** 2 - lam * (_x(p) ** 4 / 6.0 + 0.5),
                   terms=(IntegralTerm(lambda p, t: np.abs(_x(p) - _x(t)), lam=lam, kink=True),),
                   exact=lambda p: _x(p) ** 2,
                   description="u = f + 1/2 Int_-1^1 |x - t| u dt on [-1, 1], u = x^2")


@_entry("v-abel-sqrt", "after Brunner, Collocation Methods for Volterra Integral and Related "
        "Functional Equations (CUP 2004), ch. 6 (weakly singular Volterra equations of the "
        "second kind: solutions with (x - a)^(1/2) terms; graded meshes)",
        ["volterra", "singular", "linear", "1d", "endpoint"])
def _v_abel(name):
    lam = -0.5
    return Problem(domain=U1, name=name,
                   f=lambda p: np.sqrt(_x(p)) + _x(p)
                   - lam * (0.5 * PI * _x(p) + 4.0 / 3.0 * _x(p) ** 1.5),
                   terms=(IntegralTerm(_ones, lam=lam, upper=(VOLTERRA,), singularity=0.5),),
                   exact=lambda p: np.sqrt(_x(p)) + _x(p),
                   description="u = f - 1/2 Int_0^x (x - t)^(-1/2) u dt, u = sqrt(x) + x")


@_entry("v-singular-fredholm", "after Atkinson 1997, sec. 4.5 (product integration for "
        "Fredholm kernels |x - t|^(-a))",
        ["fredholm", "singular", "linear", "1d"])
def _v_singfred(name):
    lam = 0.2

    def integral(x):
        return 4.0 / 3.0 * x**1.5 + 2.0 / 3.0 * (1.0 - x) ** 1.5 + 2.0 * x * np.sqrt(1.0 - x)

    return Problem(domain=U1, name=name, f=lambda p: _x(p) - lam * integral(_x(p)),
                   terms=(IntegralTerm(_ones, lam=lam, singularity=0.5),),
                   exact=lambda p: _x(p),
                   description="u = f + 0.2 Int_0^1 |x - t|^(-1/2) u dt, u = x")


@_entry("v-boundary-layer", "Kauthen, A survey of singularly perturbed Volterra equations, "
        "Appl. Numer. Math. 24 (1997) 95-114 (eps u + Int_0^x u = eps: u = e^(-x/eps))",
        ["volterra", "linear", "1d", "stiff", "alpha"])
def _v_layer(name):
    eps = 0.05
    return Problem(domain=U1, name=name, alpha=eps, f=lambda p: np.full(_x(p).shape, eps),
                   terms=(IntegralTerm(_ones, lam=-1.0, upper=(VOLTERRA,)),),
                   exact=lambda p: np.exp(-_x(p) / eps),
                   description="0.05 u = 0.05 - Int_0^x u dt, u = e^(-20 x)")


@_entry("v-cancellation", "after Wazwaz 2011, ch. 4 (degenerate kernel e^(x+t)); lam = -100 "
        "so that f ~ 100 u is nearly cancelled by the integral term",
        ["fredholm", "linear", "1d", "cancellation"])
def _v_cancel(name):
    lam = -100.0
    return Problem(domain=U1, name=name,
                   f=lambda p: _x(p) ** 2 - lam * np.exp(_x(p)) * (E - 2.0),
                   terms=(IntegralTerm(lambda p, t: np.exp(_x(p) + _x(t)), lam=lam),),
                   exact=lambda p: _x(p) ** 2,
                   description="u = f - 100 Int_0^1 e^(x+t) u dt, u = x^2, f ~ 70-200")


@_entry("v-alpha-x", "after Delves & Mohamed, Computational Methods for Integral Equations "
        "(CUP 1985), ch. 4 (second-kind equations a(x) u = f + Int K u with variable a)",
        ["fredholm", "linear", "1d", "alpha"])
def _v_alpha(name):
    return Problem(domain=U1, name=name, alpha=lambda p: 1.0 + _x(p),
                   f=lambda p: (1.0 + _x(p)) * np.cos(PI * _x(p)) + 2.0 / PI**2,
                   terms=(IntegralTerm(lambda p, t: _x(p) + _x(t)),),
                   exact=lambda p: np.cos(PI * _x(p)),
                   description="(1 + x) u = f + Int_0^1 (x + t) u dt, u = cos(pi x)")


@_entry("v-sin", "after Wazwaz 2011, ch. 4 (nonlinear Fredholm equations with sin u)",
        ["fredholm", "nonlinear", "1d"])
def _v_sin(name):
    c = math.sin(1.0) - math.cos(1.0)
    return Problem(domain=U1, name=name, f=lambda p: _x(p) - c * _x(p),
                   terms=(IntegralTerm(lambda p, t: _x(p) * _x(t), nonlinearity=Nonlinearity.sin()),),
                   exact=lambda p: _x(p),
                   description="u = x (1 - sin 1 + cos 1) + Int_0^1 x t sin(u) dt, u = x")


@_entry("v-volterra-exp", "after Wazwaz 2011, ch. 9 (nonlinear Volterra equations with e^u)",
        ["volterra", "nonlinear", "1d"])
def _v_vexp(name):
    return Problem(domain=U1, name=name,
                   f=lambda p: np.log1p(_x(p)) + 0.5 * (_x(p) + 0.5 * _x(p) ** 2),
                   terms=(IntegralTerm(_ones, lam=-0.5, upper=(VOLTERRA,), nonlinearity=Nonlinearity.exp()),),
                   exact=lambda p: np.log1p(_x(p)),
                   description="u = f - 1/2 Int_0^x e^u dt, u = ln(1 + x)")


@_entry("v-2d-rectangle", "after Wazwaz 2011, ch. 4 (separable kernels), in two dimensions on "
        "the rectangle [0,2] x [0,1] (cf. seed 000 Eq 5.1)",
        ["fredholm", "linear", "2d", "non-square"])
def _v_rect(name):
    lam = 0.25
    c = math.sin(2.0) - 2.0 * math.cos(2.0)
    return Problem(domain=Domain((0.0, 0.0), (2.0, 1.0)), name=name,
                   f=lambda p: np.sin(_x(p)) * np.exp(_y(p)) - lam * (_x(p) + _y(p)) * c,
                   terms=(IntegralTerm(lambda p, t: (_x(p) + _y(p)) * _x(t) * _y(t), lam=lam),),
                   exact=lambda p: np.sin(_x(p)) * np.exp(_y(p)),
                   description="u = f + 1/4 Int_[0,2]x[0,1] (x + y) s t u, u = sin(x) e^y")


@_entry("v-2d-mixed", "after Wazwaz 2011, ch. 6 (mixed Volterra-Fredholm equations), "
        "two-dimensional form u(x,y) = f + Int_0^1 Int_0^y K u dt ds",
        ["fredholm", "volterra", "mixed", "linear", "2d"])
def _v_mixed(name):
    return Problem(domain=U2, name=name,
                   f=lambda p: _x(p) * np.exp(_y(p)) - _x(p) * (np.exp(_y(p)) - 1.0) / 3.0,
                   terms=(IntegralTerm(lambda p, t: _x(p) * _x(t), upper=(1.0, VOLTERRA)),),
                   exact=lambda p: _x(p) * np.exp(_y(p)),
                   description="u = f + Int_0^1 Int_0^y x s u dt ds, u = x e^y")


@_entry("v-2d-cubic", "after seed 000 Eq 5.5 (nonlinear 2-D Fredholm) with M(u) = u^3",
        ["fredholm", "nonlinear", "2d"])
def _v_cubic(name):
    return Problem(domain=U2, name=name,
                   f=lambda p: _x(p) * _y(p) - (_x(p) + _y(p)) / 16.0,
                   terms=(IntegralTerm(lambda p, t: (_x(p) + _y(p)) * _ones(p, t),
                                       nonlinearity=Nonlinearity.power(3)),),
                   exact=lambda p: _x(p) * _y(p),
                   description="u = f + Int Int (x + y) u^3, u = x y")


@_entry("v-3d-sine", "after Polyanin & Manzhirov 2008, sec. 11 (degenerate kernels), "
        "in three dimensions with an oscillating solution",
        ["fredholm", "linear", "3d"])
def _v_3d(name):
    c = 12.0 / PI**3
    return Problem(domain=Domain((0.0,) * 3, (1.0,) * 3), name=name,
                   f=lambda p: np.prod(np.sin(PI * p), axis=-1) - c * np.sum(p, axis=-1),
                   terms=(IntegralTerm(lambda p, t: np.sum(p, axis=-1) * np.sum(t, axis=-1)),),
                   exact=lambda p: np.prod(np.sin(PI * p), axis=-1),
                   description="u = f + Int_[0,1]^3 (x+y+z)(s+t+r) u, u = sin(pi x) sin(pi y) sin(pi z)")


@_entry("v-3d-box", "after seed 000 Eq 5.5 in three dimensions, on the box [0,1]^2 x [0,2]",
        ["fredholm", "nonlinear", "3d", "non-square"])
def _v_3dbox(name):
    c = ((1.0 - math.exp(-2.0)) / 2.0) ** 2 * (1.0 - math.exp(-4.0)) / 2.0
    lam = 0.5
    return Problem(domain=Domain((0.0,) * 3, (1.0, 1.0, 2.0)), name=name,
                   f=lambda p: np.exp(-np.sum(p, axis=-1)) - lam * c * np.prod(p, axis=-1),
                   terms=(IntegralTerm(lambda p, t: np.prod(p, axis=-1) * _ones(p, t), lam=lam,
                                       nonlinearity=Nonlinearity.power(2)),),
                   exact=lambda p: np.exp(-np.sum(p, axis=-1)),
                   description="u = f + 1/2 Int x y z u^2 on [0,1]^2 x [0,2], u = e^(-x-y-z)")


def names() -> list[str]:
    """Names of the validation equations."""
    return list(ENTRIES)


def get(name: str) -> Problem:
    """Build the validation problem ``name``."""
    return ENTRIES[name].build()


def verify(problem: Problem, n: int | None = None) -> dict:
    """Check that ``problem.f`` is consistent with ``problem.exact``.

    Returns the max residual of the exact solution in a fine Nystrom rule, relative to
    ``max |f| + max |u|``, and the max error of the Nystrom solution.
    """
    from daskie.reference import Nystrom

    n = n or {1: 48, 2: 24, 3: 12}[problem.dim]
    ref = Nystrom(n=n)
    scale = 1.0
    res = ref.residual(problem, problem.exact)
    x = ref.solve(problem)
    nodes = x.nodes
    scale = float(np.max(np.abs(problem.f(nodes))) + np.max(np.abs(problem.exact(nodes))))
    return {"residual": float(np.max(np.abs(res))) / scale,
            "reference_max_error": float(np.max(np.abs(x.values - problem.exact(nodes)))), "n": n}


if __name__ == "__main__":
    for name, entry in ENTRIES.items():
        v = verify(entry.build())
        print(f"{name:22s} residual {v['residual']:.1e}  Nystrom max error {v['reference_max_error']:.1e}"
              f"  (n = {v['n']})")
