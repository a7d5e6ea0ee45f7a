"""Learn the solution operator of a family of integral equations once, then answer new ones.

    python examples/operator_family.py

The family (``daskie.family("volterra-1d-sin")``): nonlinear Volterra equations

    mu(x) = f(x) + lam * Int_0^x exp(-(x - t)) sin(mu(t)) dt,   x in [0, 1]

with f drawn from a Gaussian random field and lam ~ U(0.5, 1.5). 1200 instances are solved by
the Nystrom reference as tasks on an embedded cluster of two workers and streamed into a zarr
data set (run the script twice: the second run finds the data set complete and solves
nothing); a DeepONet is trained on 1000 of them, data-parallel over the two workers, by Adam
on its hidden layers with the branch's output layer solved by least squares before every
step (``LeastSquaresHead``); the other 200 are held out. The operator is then asked for 1000
new instances at once. ``benchmarks/operator.py`` trains the same on 3000 instances for
20000 steps to a median relative L2 below 1e-3.
"""

import os
import tempfile
import time

import numpy as np
import xarray as xr

import daskie
from daskie import MLP, Adam, DeepONet, LeastSquaresHead, OperatorDataParallel
from daskie.cluster import local_cluster
from daskie.operator import fit_operator, generate_dataset


def main():
    family = daskie.family("volterra-1d-sin")
    path = os.path.join(tempfile.gettempdir(), "daskie-volterra-1d-sin-1200.zarr")
    with local_cluster(workers=2) as client:
        made = generate_dataset(family, path, 1200, seed=0, client=client)
        print(f"data set {path}: {made['solved']} blocks solved now, {made['skipped']} found "
              f"on disk ({made['wall_s']:.1f} s)")
        # the branch reads f at 32 sensors and lambda (this family varies it)
        net = DeepONet(sensors=33, dim=1, branch=MLP(hidden=(64, 64)), trunk=MLP(hidden=(20, 20)),
                       width=20)
        optimizer = LeastSquaresHead(Adam(lr=3e-3, decay=5e-4, steps=3000), ridge=1e-9)
        op, history = fit_operator(family, path, net, client=client, optimizer=optimizer,
                                   strategy=OperatorDataParallel(shards=2, window=500),
                                   train=(0, 1000), test=(1000, 1200))
    print(f"trained: loss {history[-1]['loss']:.2e} after {history[-1]['epoch']} steps")
    ds = xr.open_zarr(path)
    err = op.relative_errors(op.predict(ds.params.values[1000:]), ds.mu.values[1000:])
    print(f"held-out relative L2: median {np.median(err):.2e}, 95th percentile "
          f"{np.quantile(err, 0.95):.2e}")
    new = family.sample(1000, seed=123)
    t0 = time.perf_counter()
    mu = op.predict(new)
    t_op = time.perf_counter() - t0
    print(f"1000 new instances: {t_op * 1e3:.1f} ms by the operator ({mu.shape}), about "
          f"{1000 * float(ds.solve_s.mean()):.1f} s by 1000 Nystrom solves")


if __name__ == "__main__":
    main()
