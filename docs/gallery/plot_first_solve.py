"""
The first solve: E1 from the catalog
====================================

E1 is the first benchmark of the CEPTF paper, a 2-D Fredholm equation on the unit square::

   mu(x, y) = f(x, y) - Int_0^1 Int_0^1 x y e^(s+t) mu(s, t) ds dt

``daskie.solve`` discretizes it by quadrature collocation, trains a 3 x 20 tanh network with
Levenberg-Marquardt and returns an :class:`xarray.Dataset`. ``client="sync"`` runs the same
tasks in this process (no cluster), and 20 optimizer steps keep the example to seconds.
"""

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

import daskie
from daskie import LevenbergMarquardt

ds = daskie.solve("E1", optimizer=LevenbergMarquardt(steps=20), client="sync",
                  check=False)

# %%
# The summary is in ``ds.attrs``: MSE and relative L2 on 1000 held-back Sobol points that
# training never saw, the number of epochs, the wall time and what stopped the training.
print(f"MSE {ds.attrs['mse']:.2e}  relative L2 {ds.attrs['rel_l2']:.2e}  "
      f"epochs {ds.attrs['epochs']}  stopped by {ds.attrs['stopped_by']}")

# %%
# The solution, the exact solution and their difference are variables on a 65 x 65 grid;
# the training history is on the ``record`` dimension.
print(xr.Dataset({name: ds[name] for name in ("mu", "exact", "error")}))

# %%
# Solution and error map
# ----------------------
# ``error`` is ``mu - exact``; with ``check=False`` training started from seeded random
# parameters (the default too, for a linear equation like E1; a nonlinear one starts from
# the network fitted to the Nystrom reference, which picks its branch).
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
ds.mu.T.plot(ax=axes[0], cmap="viridis")
axes[0].set_title("neural solution mu")
ds.error.T.plot(ax=axes[1], cmap="RdBu_r", center=0)
axes[1].set_title(f"mu - exact (max {float(np.abs(ds.error).max()):.1e})")
fig.tight_layout()

# %%
# Loss curve
# ----------
# One record per Levenberg-Marquardt step (``history_kind == "step"``).
steps = ds.history_kind.values == "step"
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(ds.history_epoch.values[steps], ds.history_loss.values[steps], marker=".")
ax.set_xlabel("Levenberg-Marquardt step")
ax.set_ylabel("training loss")
ax.set_title("E1: loss curve")
fig.tight_layout()
