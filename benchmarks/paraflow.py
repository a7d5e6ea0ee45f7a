"""ParaFlowS vs (stochastic) gradient descent at equal gradient budget (seed 002 Tables 1-3),
and ParaFlow on a LocalCluster vs ParaFlowS and GD in one process (wall time to GD's loss).

    python benchmarks/paraflow.py [--quick | --full] [--out results.json]

Prints a table of R = L_ParaFlowS / L_GD next to the paper's values and writes a JSON list
of flat records with ``--out``. The default run takes ~10 minutes on 2 shared cores;
``--quick`` ~4 minutes; ``--full`` adds the 1e6-budget and minibatch rows (an hour). Set-ups (seed 002 section 4):

* ``classification``: Higham & Higham's 10 points, [2, 3, 3, 2] sigmoid (output too),
  loss sum_i 1/2 |y_i - a_i|^2, N(0, 0.5) initial weights and biases as in their paper;
* ``approximation``: e^-x sin x on 30 equispaced points of [0, 10], [1, 16, 16, 1] sigmoid
  hidden layers, linear output, same loss, torch's default initialisation;
* ``poisson``: PINN for -Lap u = 1 on the L-shaped domain [-1, 1]^2 minus [0, 1]^2 (DeepXDE's
  example), u = 0 on the boundary, [2, 50, 50, 50, 50, 1] tanh, 120 boundary + 1320 interior
  random points, loss mean(r_interior^2) + mean(u_boundary^2) (DeepXDE's form);
* ``E1``: daskie's E1 integral equation with quadrature collocation (small network).

ParaFlowS uses N_G = 10 corrections at most (the paper does not state its N_G; the early
break makes a larger N_G cost nothing when it is not used). All runs are float64, one torch
thread, seed 0.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from daskie.errors import TrainingDiverged
from daskie.fit import fit
from daskie.strategies import GradientDescent, ParaFlow, ParaFlowS
from daskie.train.module import ModelLoss

N_COARSE = 10


# --- set-ups -----------------------------------------------------------------------------
def half_squares(pred, target):
    return 0.5 * ((pred - target) ** 2).sum()


def classification():
    x1 = [0.1, 0.3, 0.1, 0.6, 0.4, 0.6, 0.5, 0.9, 0.4, 0.7]
    x2 = [0.1, 0.4, 0.5, 0.9, 0.2, 0.3, 0.6, 0.2, 0.4, 0.6]
    x = torch.tensor([x1, x2], dtype=torch.float64).T
    y = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5, dtype=torch.float64)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 3),
                              torch.nn.Sigmoid(), torch.nn.Linear(3, 2), torch.nn.Sigmoid()).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return net, half_squares, (x, y)


def approximation():
    x = torch.linspace(0, 10, 30, dtype=torch.float64)[:, None]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Sigmoid(), torch.nn.Linear(16, 16),
                              torch.nn.Sigmoid(), torch.nn.Linear(16, 1)).double()
    return net, half_squares, (x, torch.exp(-x) * torch.sin(x))


def lshape_points(n_interior=1320, n_boundary=120, seed=0):
    """Uniform random points in [-1, 1]^2 minus (0, 1]^2 and on its boundary (by arclength)."""
    g = torch.Generator().manual_seed(seed)
    inside = torch.empty(0, 2, dtype=torch.float64)
    while len(inside) < n_interior:
        p = torch.rand(2 * n_interior, 2, generator=g, dtype=torch.float64) * 2 - 1
        inside = torch.cat([inside, p[~((p[:, 0] > 0) & (p[:, 1] > 0))]])
    verts = torch.tensor([[0, 0], [1, 0], [1, -1], [-1, -1], [-1, 1], [0, 1], [0, 0]],
                         dtype=torch.float64)
    lengths = (verts[1:] - verts[:-1]).norm(dim=1)
    start = torch.cat([torch.zeros(1, dtype=torch.float64), lengths.cumsum(0)])
    s = torch.rand(n_boundary, generator=g, dtype=torch.float64) * float(start[-1])
    seg = (torch.searchsorted(start[1:], s, right=True)).clamp(max=len(lengths) - 1)
    t = (s - start[seg]) / lengths[seg]
    boundary = verts[seg] + t[:, None] * (verts[seg + 1] - verts[seg])
    x = torch.cat([boundary, inside[:n_interior]])
    is_boundary = torch.cat([torch.ones(n_boundary), torch.zeros(n_interior)]).double()
    return x, is_boundary


def poisson_loss(model, x, is_boundary):
    """DeepXDE's PINN loss on the rows at hand: mean (Lap u + 1)^2 inside + mean u^2 on the boundary."""
    xx = x.detach().requires_grad_(True)
    u = model(xx)[:, 0]
    du = torch.autograd.grad(u.sum(), xx, create_graph=True)[0]
    lap = sum(torch.autograd.grad(du[:, j].sum(), xx, create_graph=True)[0][:, j] for j in range(2))
    inner = 1.0 - is_boundary
    return (((lap + 1.0) ** 2 * inner).sum() / inner.sum().clamp(min=1.0)
            + (u**2 * is_boundary).sum() / is_boundary.sum().clamp(min=1.0))


def poisson():
    torch.manual_seed(0)
    widths = [2, 50, 50, 50, 50, 1]
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1]).double()
    return net, ModelLoss(poisson_loss), lshape_points()


SETUPS = {"classification": classification, "approximation": approximation, "poisson": poisson}

# (set-up, batch, eta_F, budget, N_F values, level) and the paper's (GD loss, {N_F: R}).
# level: 0 quick, 1 default, 2 --full. batch None = full batch.
ROWS = [
    ("classification", None, 0.01, 10**5, (10, 50, 100), 0, (2.5, {10: 0.0011, 50: 0.0008, 100: 0.0088})),
    ("classification", None, 0.1, 10**5, (10, 50, 100), 1, (2.4e-3, {10: 0.0746, 50: 0.0235, 100: 0.0273})),
    ("classification", None, 0.001, 10**6, (10, 50, 100), 2, (2.5, {10: 0.0010, 50: 0.0004, 100: 0.0004})),
    ("classification", 1, 0.01, 10**5, (10, 50, 100), 2, (2.6, {10: 0.9464, 50: 1.0019, 100: 0.9791})),
    ("approximation", None, 0.01, 10**5, (10, 50, 100), 0, (0.23, {10: 0.467, 50: 0.034, 100: 0.113})),
    ("approximation", None, 0.1, 10**5, (10, 50, 100), 1, (9.1e-2, {10: 0.059, 50: 0.137, 100: 0.281})),
    ("approximation", None, 0.001, 10**6, (10, 50, 100), 2, (0.23, {10: 0.428, 50: 0.014, 100: 0.012})),
    ("approximation", 1, 0.01, 10**5, (10, 50, 100), 2, (0.22, {10: 1.059, 50: 0.700, 100: 0.594})),
    ("poisson", None, 0.001, 10**5, (10,), 0, (0.91, {10: 0.241})),
    ("poisson", None, 0.001, 10**6, (10, 50), 1, (0.19, {10: 0.075, 50: 0.204})),
    ("poisson", None, 0.0001, 10**6, (50, 100), 2, (0.91, {50: 0.043, 100: 0.025})),
    ("poisson", 724, 0.001, 10**6, (10,), 2, (9.9e-2, {10: 0.111})),
]


def final_loss(history):
    return history[-1]["loss"] if history else math.nan


def fit_or_inf(*args, **kwargs):
    """``fit``'s history, or one record of infinite loss when the step length diverges."""
    try:
        return fit(*args, client="sync", **kwargs)[1]
    except TrainingDiverged:
        return [{"loss": math.inf, "slice": -1, "wall_s": math.nan}]


def ratio_rows(level, records):
    for name, batch, eta, budget, n_fines, lvl, (paper_gd, paper_r) in ROWS:
        if lvl > level:
            continue
        net, loss, data = SETUPS[name]()
        n = data[0].shape[0]
        t0 = time.perf_counter()
        gd = fit_or_inf(net, loss, data, GradientDescent(eta=eta, batch=batch, budget=budget,
                                                         steps_per_record=1000))
        gd_wall = time.perf_counter() - t0
        base = {"experiment": "ratio", "setup": name, "batch": batch or n, "eta": eta,
                "budget": budget, "loss_gd": final_loss(gd), "loss_gd_paper": paper_gd,
                "wall_gd_s": gd_wall}
        for n_fine in n_fines:
            rec = {**base, "n_fine": n_fine, "n_coarse": N_COARSE, "R_paper": paper_r.get(n_fine)}
            if (batch or n) * n_fine + n > budget:
                records.append({**rec, "loss_paraflows": math.nan, "R": math.nan})
                continue
            t0 = time.perf_counter()
            pf = fit_or_inf(net, loss, data, ParaFlowS(eta=eta, n_fine=n_fine, n_coarse=N_COARSE,
                                                       batch=batch, budget=budget,
                                                       checkpoint_every=1000))
            rec.update(loss_paraflows=final_loss(pf), R=final_loss(pf) / final_loss(gd),
                       windows=len(pf), wall_paraflows_s=time.perf_counter() - t0,
                       mean_slice=statistics.fmean(r["slice"] for r in pf) if pf else math.nan)
            records.append(rec)
            print_ratio(rec)
            sys.stdout.flush()


def print_ratio(r):
    paper = "-" if r["R_paper"] is None else f"{r['R_paper']:.4f}"
    print(f"{r['setup']:<15}{r['batch']:>6}{r['eta']:>8g}{r['budget']:>9.0e}{r['n_fine']:>6}"
          f"{r['loss_gd']:>11.3e}{r['loss_gd_paper']:>10.2e}{r['loss_paraflows']:>11.3e}"
          f"{r['R']:>9.4f}{paper:>9}{r.get('mean_slice', math.nan):>7.2f}")


def e1_rows(level, records):
    import daskie
    from daskie import MLP, QuadratureCollocation

    form = QuadratureCollocation(net=MLP(hidden=(10, 10)), points=128, nodes=8, test_points=500)
    budget = 128 * (1000 if level == 0 else 4000)
    eta = 0.02
    gd = daskie.solve("E1", formulation=form, client="sync",
                      strategy=GradientDescent(eta=eta, budget=budget, steps_per_record=1000))
    for n_fine in (10, 50):
        pf = daskie.solve("E1", formulation=form, client="sync",
                          strategy=ParaFlowS(eta=eta, n_fine=n_fine, n_coarse=N_COARSE,
                                             budget=budget, checkpoint_every=1000))
        rec = {"experiment": "ratio", "setup": "E1-quadrature", "batch": 128, "eta": eta,
               "budget": budget, "n_fine": n_fine, "n_coarse": N_COARSE,
               "loss_gd": gd.attrs["loss"], "loss_gd_paper": math.nan,
               "loss_paraflows": pf.attrs["loss"], "R": pf.attrs["loss"] / gd.attrs["loss"],
               "R_paper": None, "mse_gd": gd.attrs["mse"], "mse_paraflows": pf.attrs["mse"]}
        records.append(rec)
        print_ratio(rec)


def time_to(history, target):
    for r in history:
        if r["loss"] <= target:
            return r["wall_s"]
    return math.nan


def wall_rows(level, records, repeats=3):
    """PINN Poisson: wall time to reach GD's final loss, GD / ParaFlowS in this process and
    ParaFlow (N_G = 2) on LocalCluster(2 workers x 1 thread); medians of ``repeats`` runs."""
    from daskie.cluster import local_cluster  # keeps torch at in-process speed on its workers

    net, loss, data = poisson()
    eta, n_fine = 1e-3, 10
    budget = 10**5 if level == 0 else 3 * 10**5
    times = {"gd": [], "paraflows": [], "paraflows_ng2": [], "paraflow": []}
    losses = {}
    with local_cluster(workers=2, threads_per_worker=1) as client:
        for rep in range(repeats):
            t0 = time.perf_counter()
            _, gd = fit(net, loss, data, GradientDescent(eta=eta, budget=budget, steps_per_record=10), client="sync")
            times["gd"].append(time.perf_counter() - t0)
            target = final_loss(gd)
            losses["gd"] = target
            cap = 4 * budget  # the parallel forms may need more work; they stop at GD's loss
            _, pfs = fit(net, loss, data, ParaFlowS(eta=eta, n_fine=n_fine, n_coarse=N_COARSE,
                                                    budget=cap, checkpoint_every=1), target_loss=target, client="sync")
            times["paraflows"].append(time_to(pfs, target))
            losses["paraflows_calls"] = pfs[-1]["grad_calls"]
            _, pfs2 = fit(net, loss, data, ParaFlowS(eta=eta, n_fine=n_fine, n_coarse=2, budget=cap,
                                                     checkpoint_every=1), target_loss=target, client="sync")
            times["paraflows_ng2"].append(time_to(pfs2, target))
            losses["paraflows_ng2_calls"] = pfs2[-1]["grad_calls"]
            _, pf = fit(net, loss, data, ParaFlow(eta=eta, n_fine=n_fine, n_coarse=2, budget=cap,
                                                  checkpoint_every=1),
                        client=client, target_loss=target)
            times["paraflow"].append(time_to(pf, target))
            losses["paraflow_calls"] = pf[-1]["grad_calls"]
            losses["paraflow_path"] = pf[-1]["grad_calls_path"]
    med = {k: statistics.median(v) for k, v in times.items()}
    rec = {"experiment": "wall", "setup": "poisson", "eta": eta, "n_fine": n_fine,
           "budget_gd": budget, "loss_gd": losses["gd"], "repeats": repeats,
           **{f"wall_{k}_s": v for k, v in med.items()},
           **{f"wall_{k}_runs": json.dumps(v) for k, v in times.items()},
           "speedup_paraflows_vs_gd": med["gd"] / med["paraflows"],
           "speedup_paraflow_vs_gd": med["gd"] / med["paraflow"],
           "speedup_paraflow_vs_paraflows": med["paraflows"] / med["paraflow"],
           "speedup_paraflow_vs_paraflows_ng2": med["paraflows_ng2"] / med["paraflow"],
           "grad_calls_paraflows_ng2": losses["paraflows_ng2_calls"],
           "grad_calls_gd": budget, "grad_calls_paraflows": losses["paraflows_calls"],
           "grad_calls_paraflow": losses["paraflow_calls"],
           "grad_calls_path_paraflow": losses["paraflow_path"]}
    records.append(rec)
    print(f"\nPINN Poisson, wall time to GD's final loss {losses['gd']:.4e} "
          f"(eta_F={eta}, N_F={n_fine}, GD budget {budget:.0e}; median of {repeats}):")
    print(f"  GD (1 process)                 {med['gd']:8.2f} s   {budget} gradient calls")
    print(f"  ParaFlowS N_G={N_COARSE} (1 process)   {med['paraflows']:8.2f} s   "
          f"{losses['paraflows_calls']} calls   speed-up vs GD {rec['speedup_paraflows_vs_gd']:.2f}")
    print(f"  ParaFlowS N_G=2 (1 process)    {med['paraflows_ng2']:8.2f} s   "
          f"{losses['paraflows_ng2_calls']} calls   speed-up vs GD "
          f"{med['gd'] / med['paraflows_ng2']:.2f}")
    print(f"  ParaFlow N_G=2 (2 workers)     {med['paraflow']:8.2f} s   "
          f"{losses['paraflow_calls']} calls ({losses['paraflow_path']} on the critical path)   "
          f"speed-up vs GD {rec['speedup_paraflow_vs_gd']:.2f}, vs ParaFlowS "
          f"{rec['speedup_paraflow_vs_paraflows']:.2f}, vs ParaFlowS N_G=2 "
          f"{rec['speedup_paraflow_vs_paraflows_ng2']:.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="small grid (~4 minutes)")
    group.add_argument("--full", action="store_true", help="add 1e6 budgets and minibatch rows (~1 hour)")
    ap.add_argument("--out", help="write the records as a JSON list to this file")
    ap.add_argument("--skip-wall", action="store_true", help="skip the LocalCluster wall-time runs")
    args = ap.parse_args(argv)
    level = 0 if args.quick else (2 if args.full else 1)
    torch.set_num_threads(1)
    records = []
    t0 = time.perf_counter()
    print(f"{'set-up':<15}{'batch':>6}{'eta_F':>8}{'budget':>9}{'N_F':>6}{'L_GD':>11}{'paper':>10}"
          f"{'L_PFS':>11}{'R':>9}{'R paper':>9}{'slice':>7}")
    ratio_rows(level, records)
    e1_rows(level, records)
    if not args.skip_wall:
        wall_rows(level, records)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.out:
        from harness import write_records

        write_records(args.out, records)


if __name__ == "__main__":
    main()
