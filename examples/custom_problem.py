"""Write your own integral equation and solve it on a Dask cluster you start yourself.

    python examples/custom_problem.py

The equation (a mixed Fredholm-Volterra problem on [0,1]^2, nonlinear):

    mu(x, y) = f(x, y) + 0.5 * Int_0^x Int_0^1 x t2 sin(mu(t1, t2)) dt2 dt1

with f manufactured so that mu = cos(x) + y is the exact solution.
"""

import numpy as np
from distributed import Client, LocalCluster

import daskie
from daskie import VOLTERRA, Domain, IntegralTerm, Nonlinearity, Problem


def exact(p):
    return np.cos(p[..., 0]) + p[..., 1]


def integral(p):
    # Int_0^x Int_0^1 x t2 sin(cos t1 + t2) dt2 dt1, by a fine Gauss rule (for the manufactured f)
    from daskie.quadrature import tensor_rule

    out = np.empty(len(p))
    for i, (x, y) in enumerate(p):
        nodes, w = tensor_rule(24, (0.0, 0.0), (x, 1.0))
        out[i] = x * np.sum(w * nodes[:, 1] * np.sin(exact(nodes)))
    return out


def f(p):
    p = np.asarray(p, dtype=float)
    flat = p.reshape(-1, 2)
    return (exact(flat) - 0.5 * integral(flat)).reshape(p.shape[:-1])


problem = Problem(
    domain=Domain((0.0, 0.0), (1.0, 1.0)),
    f=f,
    terms=[IntegralTerm(kernel=lambda p, t: p[..., 0] * t[..., 1], lam=0.5,
                        upper=(VOLTERRA, 1.0), nonlinearity=Nonlinearity.sin())],
    exact=exact,
    name="mixed-sin",
)

if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0",
                      resources={"CPU": 1}) as cluster, Client(cluster) as client:
        print("dashboard:", client.dashboard_link)
        ds = daskie.solve(problem, optimizer=daskie.LevenbergMarquardt(steps=100), client=client)
    print(f"MSE on held-back points: {ds.attrs['mse']:.2e}, relative L2 {ds.attrs['rel_l2']:.2e}")
    ref = daskie.Nystrom(n=16).solve(problem)
    pts = problem.domain.sample(500, seed=1)
    print(f"Nystrom reference: max error {np.max(np.abs(ref(pts) - exact(pts))):.1e} in {ref.wall_s:.2f} s")
