"""
Three strategies, one problem
=============================

The same order-reduction discretization of E1 (``mu`` and the chain networks ``F0.1``,
``F0.2``) trained three ways: in one task (``Monolithic``), as the planner's groups trained
jointly (``CEPTF``), and with the collocation points in two shards (``DataParallel``).
``client="sync"`` runs every task in this process; on a cluster the same tasks run on the
workers and give the same numbers for the same seed (the tests check that).

The three loss curves lie on top of each other: the strategies change where the work runs,
not the mathematics. CEPTF's joint gradient is the monolithic gradient, assembled from the
groups' slices by one all-reduce, and DataParallel's normal equations are the sums of the
shards'.
"""

import matplotlib.pyplot as plt

import daskie
from daskie import CEPTF, MLP, DataParallel, LevenbergMarquardt, Monolithic, OrderReduction

formulation = OrderReduction(net=MLP(hidden=(8, 8)), points=64, aux_points=64)
print(daskie.make_plan(formulation.discretize(daskie.catalog.get("E1")), workers=2).describe())

fig, ax = plt.subplots(figsize=(7, 4))
for strategy in (Monolithic(window=5), CEPTF(window=5), DataParallel(shards=2, window=5)):
    ds = daskie.solve("E1", formulation=formulation, strategy=strategy,
                      optimizer=LevenbergMarquardt(steps=15, scaling="levenberg"),
                      client="sync", check=False)
    steps = ds.history_kind.values == "step"
    print(f"{strategy.label:14s} MSE {ds.attrs['mse']:.2e}  epochs {ds.attrs['epochs']}")
    ax.semilogy(ds.history_epoch.values[steps], ds.history_loss.values[steps], ".-",
                label=strategy.label, alpha=0.7)
ax.set_xlabel("Levenberg-Marquardt step")
ax.set_ylabel("training loss")
ax.set_title("E1, order reduction: loss by strategy")
ax.legend()
fig.tight_layout()
