"""
Kinked and weakly singular kernels
==================================

Two 1-D equations whose kernels defeat a plain Gauss rule:

* ``|x - t|`` (its derivative jumps at ``t = x``): ``kink=True`` splits every integral there;
* ``(x - t)^(-1/2)`` (the catalog's Abel equation): ``singularity=0.5`` uses product
  Gauss-Jacobi rules and grades the collocation points toward ``x = 0``, where
  ``mu = sqrt(x)`` has an infinite derivative.
"""

import matplotlib.pyplot as plt
import numpy as np

import daskie
from daskie import MLP, Domain, IntegralTerm, LevenbergMarquardt, Problem, QuadratureCollocation


def x0(p):
    return p[..., 0]


kinked = Problem(
    domain=Domain((-1.0,), (1.0,)),
    f=lambda p: x0(p) ** 2 - 0.5 * (x0(p) ** 4 / 6 + 0.5),
    terms=[IntegralTerm(kernel=lambda p, t: np.abs(x0(p) - x0(t)), lam=0.5, kink=True)],
    exact=lambda p: x0(p) ** 2,
    name="abs-kernel",
)
abel = daskie.catalog.get("abel")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for ax, problem in zip(axes, (kinked, abel)):
    ds = daskie.solve(problem, formulation=QuadratureCollocation(net=MLP(hidden=(12, 12))),
                      optimizer=LevenbergMarquardt(steps=25), client="sync", check=False)
    ref = daskie.Nystrom(n=16).solve(problem)
    x = ds.x0.values[:, None]
    print(f"{problem.name:10s} neural MSE {ds.attrs['mse']:.1e}   Nystrom max error "
          f"{np.max(np.abs(ref(x) - problem.exact(x))):.1e}")
    ax.plot(ds.x0, ds.exact, "k-", lw=3, alpha=0.3, label="exact")
    ax.plot(ds.x0, ds.mu, "C0--", label="neural")
    ax2 = ax.twinx()
    ax2.semilogy(ds.x0, np.abs(ds.error), "C3", lw=0.8)
    ax2.set_ylabel("|mu - exact|", color="C3")
    ax.set_title(problem.name)
    ax.set_xlabel("x")
    ax.legend(loc="upper center")
fig.tight_layout()
