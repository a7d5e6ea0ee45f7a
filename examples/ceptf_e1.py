"""Solve E1 with CEPTF: order reduction into mu, F1, F2, planned (Algorithm 1) onto two workers,
trained jointly (exact joint gradient, each worker evaluating its own networks), stored in zarr.

    python examples/ceptf_e1.py
"""

import xarray as xr

import daskie
from daskie import CEPTF, MLP, LevenbergMarquardt, OrderReduction

if __name__ == "__main__":
    formulation = OrderReduction(net=MLP(hidden=(16, 16, 16)), points=512, aux_points=1024)
    disc = formulation.discretize(daskie.catalog.get("E1"))
    print(daskie.make_plan(disc, workers=2).describe())
    ds = daskie.solve("E1", formulation=formulation, strategy=CEPTF(window=10),
                      optimizer=LevenbergMarquardt(steps=80, scaling="levenberg"), store="e1-ceptf.zarr", overwrite=True)
    print(f"MSE {ds.attrs['mse']:.2e} after {ds.attrs['epochs']} epochs, {ds.attrs['wall_s']:.0f} s")
    print(xr.open_zarr("e1-ceptf.zarr"))
