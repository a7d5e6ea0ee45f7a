"""
Learning a solution operator
============================

A family of 1-D Fredholm equations whose right-hand side ``f`` is drawn from a Gaussian random
field. :func:`daskie.learn_operator` solves 80 instances with the Nystrom reference (as
tasks), trains a DeepONet on 60 of them and measures it on the other 20; then the operator
answers 200 new instances in one call.
"""

import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

import daskie
from daskie import MLP, DeepONet, LevenbergMarquardt

family = daskie.family("fredholm-1d")
store = os.path.join(tempfile.mkdtemp(), "op.zarr")
op = daskie.learn_operator(
    family, n=80, test=20, client="sync", store=store,
    net=DeepONet(sensors=32, dim=1, branch=None, trunk=MLP(hidden=(12, 12)), width=8),
    optimizer=LevenbergMarquardt(steps=25))
ev = op.evaluation
print(f"held-out relative L2: median {ev.attrs['rel_l2_median']:.1e}, "
      f"95th percentile {ev.attrs['rel_l2_p95']:.1e}")

# %%
# New instances, against their Nystrom solutions
# ----------------------------------------------
params = family.sample(200, seed=7)
t0 = time.perf_counter()
mu = op.predict(params)
print(f"200 predictions in {(time.perf_counter() - t0) * 1e3:.1f} ms, shape {mu.shape}")

x = op.query[:, 0]   # the data set's query points, where the operator answers
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for i, colour in zip(range(3), ("C0", "C1", "C2")):
    ref = daskie.Nystrom(n=24).solve(family.problem(params[i]))
    axes[0].plot(x, ref(op.query), colour, lw=3, alpha=0.3)
    axes[0].plot(x, mu[i], colour + "--")
axes[0].set_title("operator (dashed) and Nystrom (thick)")
axes[0].set_xlabel("x")
references = [daskie.Nystrom(n=24).solve(family.problem(p))(op.query) for p in params[:40]]
errors = [np.linalg.norm(mu[i] - r) / np.linalg.norm(r) for i, r in enumerate(references)]
axes[1].hist(np.log10(errors), bins=12)
axes[1].set_xlabel("log10 relative L2 error")
axes[1].set_title("40 new instances")
fig.tight_layout()
