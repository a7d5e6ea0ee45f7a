"""
A masked domain: the L-shape
============================

The catalog's ``lshape`` lives on the unit square with its upper-right quarter removed::

   mu(X) = f(X) + Int_Omega cos(pi |X - T|) / (1 + |X - T|^2) mu(T) dT

``Domain((0, 0), (1, 1), holes=[((0.5, 0.5), (1, 1))])`` cuts it into three cells, which the
quadrature integrates exactly; the stored grid is NaN in the hole.
"""

import matplotlib.pyplot as plt
import numpy as np

import daskie
from daskie import LevenbergMarquardt

problem = daskie.catalog.get("lshape")
print(problem.domain, f"volume {problem.domain.volume}")

ds = daskie.solve(problem, optimizer=LevenbergMarquardt(steps=30), client="sync",
                  check=False)
print(f"MSE {ds.attrs['mse']:.2e}  relative L2 {ds.attrs['rel_l2']:.2e}  "
      f"NaN outside the domain: {int(np.isnan(ds.mu).sum())} of {ds.mu.size} grid points")

# %%
# The error map, blank in the hole
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
ds.mu.T.plot(ax=axes[0], cmap="viridis")
axes[0].set_title("mu on the L-shape")
ds.error.T.plot(ax=axes[1], cmap="RdBu_r", center=0)
axes[1].set_title("mu - exact")
for ax in axes:
    ax.set_aspect("equal")
fig.tight_layout()
