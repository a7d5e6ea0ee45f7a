"""
Your own equation: mixed Fredholm-Volterra, nonlinear
=====================================================

A 2-D equation that is Volterra in ``x`` and Fredholm in ``y``, with ``M(mu) = mu^2``::

   mu(x, y) = f(x, y) + 0.5 Int_0^x Int_0^1 mu(s, t)^2 dt ds,   (x, y) in [0, 1]^2

With ``mu = x + y`` the integral is ``x^3/3 + x^2/2 + x/3``, which gives ``f`` in closed
form. ``upper=(VOLTERRA, 1.0)`` says which limit moves with ``x``.
"""

import matplotlib.pyplot as plt
import numpy as np

import daskie
from daskie import (MLP, VOLTERRA, Domain, IntegralTerm, LevenbergMarquardt, Nonlinearity,
                    Problem, QuadratureCollocation)


def exact(p):
    return p[..., 0] + p[..., 1]


def f(p):
    x = p[..., 0]
    return exact(p) - 0.5 * (x**3 / 3 + x**2 / 2 + x / 3)


def one(p, t):
    return np.ones(np.broadcast_shapes(p.shape, t.shape)[:-1])


problem = Problem(
    domain=Domain((0.0, 0.0), (1.0, 1.0)),
    f=f,
    terms=[IntegralTerm(kernel=one, lam=0.5, upper=(VOLTERRA, 1.0),
                        nonlinearity=Nonlinearity.power(2))],
    exact=exact,
    name="mixed-square",
)
print(problem.terms[0].describe())

# %%
# The reference first
# -------------------
# The Nystrom solver (Newton's method for ``mu^2``) takes milliseconds here.
ref = daskie.Nystrom(n=10).solve(problem)
pts = problem.domain.sample(1000, seed=1)
print(f"Nystrom: max error {np.max(np.abs(ref(pts) - exact(pts))):.1e} "
      f"in {ref.wall_s * 1e3:.1f} ms")

# %%
# The neural solve
# ----------------
# By default ``solve`` computes that reference itself, starts from the network fitted to it
# and reports how far the neural answer is from it (``discrepancy``), at the price of its
# checks (tens of seconds here). ``check=False`` skips them and starts from random
# parameters, which is what this example does to stay short, with a 2 x 12 network on 256
# collocation points.
formulation = QuadratureCollocation(net=MLP(hidden=(12, 12)), points=256)
ds = daskie.solve(problem, formulation=formulation, optimizer=LevenbergMarquardt(steps=25),
                  client="sync", check=False)
print(f"MSE {ds.attrs['mse']:.2e}, relative L2 {ds.attrs['rel_l2']:.2e}, "
      f"stopped by {ds.attrs['stopped_by']}")

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
ds.mu.T.plot(ax=axes[0], cmap="viridis")
axes[0].set_title("mu")
ds.error.T.plot(ax=axes[1], cmap="RdBu_r", center=0)
axes[1].set_title("mu - exact")
fig.tight_layout()
