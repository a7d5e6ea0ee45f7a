"""High-dimensional integral equations (issue 18): daskie against quadrature rivals, and the
split of one d = 6 solve over a LocalCluster.

    python benchmarks/highdim.py --out benchmarks/results/highdim/highdim.json
        [--dims 4 6 8] [--families hd-fredholm hd-volterra hd-mixed hd-sharp]
        [--steps 30] [--qmc-max 4096] [--tensor-gib 1.0] [--skip-speedup]
        [--speedup-problem hd-volterra-d6] [--speedup-target 1e-7]

Accuracy part, one record per problem x method (keys ``problem``, ``dim``, ``formulation``,
``strategy``, ``mse``, ``rel_l2``, ``wall_s``, ``nodes`` / ``n_params``), every MSE on the same
10,000 held-back Sobol test points (``daskie.formulations.quadrature.test_set``, seed 0):

* ``quadrature`` (daskie): one tanh MLP, quadrature collocation with rules that do not grow
  as n^d, Levenberg-Marquardt for ``--steps`` iterations, ``client="sync"``, one thread,
  ``check=False`` (``daskie.assess`` would build a 4^6-node tensor reference at d = 6 and
  evaluate it at every per-point node: minutes). Rules per family: Fredholm, a shared Smolyak
  grid of level 4; Volterra and mixed, a per-point Smolyak grid of level 3 mapped onto each
  point's box (and onto the Gaussian factors' mass along the Fredholm coordinates); sharp,
  the per-point grid mapped onto the narrow kernel's factors (``separable="always"``).
  ``nodes`` is the node count per collocation point (per-point rules) or of the shared
  rule (``nodes_kind``).
* ``order_reduction`` (``--methods order_reduction``, not in the default list): daskie's
  R-AIM formulation, mu and F_{0,1..d}, ``--or-points`` / ``--or-aux-points``, LM with
  Levenberg damping for ``--steps`` iterations.
* ``nystrom-qmc``: :class:`daskie.reference.QMCNystrom` for N = 512, 1024, ... up to
  ``--qmc-max`` (one record per N); the ladder stops early once a solve takes more than a
  tenth of ``--qmc-cap-s`` (the next one costs ~8x).
* ``nystrom-tensor``: :class:`daskie.reference.Nystrom` at the largest n whose dense
  matrices fit ``--tensor-gib`` and whose n^d unknowns stay <= ``--tensor-max-unknowns``;
  the record says what the next n would need (where it stops fitting).

Speed-up part (``--speedup-problem``): the same daskie solve as ``Monolithic`` in this
process on one thread (``mono-1t``) and on all cores (``mono-all``), and as
``DataParallel(shards=2)`` and ``CEPTF()`` on ``LocalCluster(2 workers x 1 thread)``; time to
``--speedup-target`` MSE read from the window records (client clock), SR = T(mono) / T(par).
The one-process runs go first, with no cluster in this process (speedup.py's note: a
LocalCluster's scheduler thread here preempts torch's OpenMP threads).

The machine's load average is stored in every record (``benchmarks/harness.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TEST_POINTS = 10_000


def daskie_formulation(problem, hidden, points=None):
    """The per-family quadrature collocation (module docstring)."""
    from daskie import MLP, QuadratureCollocation

    family = problem.name.rsplit("-d", 1)[0]
    kw = {"net": MLP(hidden=tuple(hidden)), "test_points": TEST_POINTS}
    if points:
        kw["points"] = points
    if family == "hd-fredholm":
        kw.update(shared_rule="smolyak", level=4)
    elif family == "hd-sharp":
        kw.update(separable="always", local_level=3)
    return QuadratureCollocation(**kw)


def _errors(pred, exact):
    err = pred - exact
    return float(np.mean(err**2)), float(np.linalg.norm(err) / np.linalg.norm(exact))


def run_daskie(problem, args, test_x, test_exact):
    """One daskie solve; the record."""
    from daskie import LevenbergMarquardt, solve

    form = daskie_formulation(problem, args.hidden)
    disc = form.discretize(problem)
    t0 = time.perf_counter()
    ds = solve(problem, form, optimizer=LevenbergMarquardt(steps=args.steps), client="sync",
               threads=1, target_loss=0.0, check=False)
    wall = time.perf_counter() - t0
    assert np.allclose(disc.test_points, test_x)  # the same held-back points as the rivals
    n_pts = disc.info["points"]
    shared = disc.info["rules"] == ["shared"]
    nodes = disc.info["node_evaluations"] if shared else disc.info["node_evaluations"] / n_pts
    return {"problem": problem.name, "dim": problem.dim, "formulation": "quadrature",
            "strategy": "monolithic", "optimizer": f"LM {args.steps} steps",
            "mse": float(ds.attrs["mse"]), "rel_l2": float(ds.attrs["rel_l2"]),
            "loss": float(ds.attrs["loss"]), "wall_s": wall, "n_params": disc.info["n_params"],
            "points": n_pts, "rules": disc.info["rules"],
            "nodes": int(round(nodes)), "nodes_kind": "shared" if shared else "per point",
            "hidden": list(args.hidden)}


def run_order_reduction(problem, args, test_x, test_exact):
    """Order reduction (mu and one auxiliary network per integration coordinate, inputs up to
    2d), Levenberg-Marquardt with Levenberg damping; the record."""
    from daskie import MLP, LevenbergMarquardt, OrderReduction, solve

    form = OrderReduction(net=MLP(hidden=tuple(args.hidden)), points=args.or_points,
                          aux_points=args.or_aux_points, test_points=TEST_POINTS)
    disc = form.discretize(problem)
    t0 = time.perf_counter()
    ds = solve(problem, form, optimizer=LevenbergMarquardt(steps=args.steps, scaling="levenberg"),
               client="sync", threads=1, target_loss=0.0, check=False)
    wall = time.perf_counter() - t0
    assert np.allclose(disc.test_points, test_x)
    rec = {"problem": problem.name, "dim": problem.dim, "formulation": "order_reduction",
           "strategy": "monolithic", "optimizer": f"LM {args.steps} steps (levenberg)",
           "mse": float(ds.attrs["mse"]), "rel_l2": float(ds.attrs["rel_l2"]),
           "loss": float(ds.attrs["loss"]), "wall_s": wall, "n_params": disc.info["n_params"],
           "submodels": len(disc.submodels),
           "rows": int(sum(e.size for e in disc.evaluations.values())),
           "hidden": list(args.hidden)}
    print(f"  {problem.name} order reduction: MSE {rec['mse']:.2e} in {wall:.1f} s "
          f"({rec['submodels']} sub-models, {rec['n_params']} params)", flush=True)
    return rec


def run_qmc(problem, args, test_x, test_exact):
    """The QMC-Nystrom ladder; one record per N."""
    from daskie.reference import NewtonDidNotConverge, QMCNystrom

    out, n = [], 512
    while n <= args.qmc_max:
        solver = QMCNystrom(nodes=n, memory_budget=int(args.qmc_gib * 2**30))
        rec = {"problem": problem.name, "dim": problem.dim, "formulation": "nystrom-qmc",
               "strategy": "numpy", "nodes": n, "matrix_gib": solver.matrix_bytes(problem) / 2**30}
        try:
            t0 = time.perf_counter()
            sol = solver.solve(problem)
            pred = sol(test_x)
            rec["wall_s"] = time.perf_counter() - t0
            rec["solve_s"] = sol.wall_s
            rec["mse"], rec["rel_l2"] = _errors(pred, test_exact)
            rec["newton_iterations"] = sol.newton_iterations
        except NewtonDidNotConverge as exc:
            rec.update(error=str(exc), wall_s=time.perf_counter() - t0)
        out.append(rec)
        print(f"  {problem.name} nystrom-qmc N={n}: MSE {rec.get('mse', float('nan')):.2e} "
              f"in {rec['wall_s']:.1f} s", flush=True)
        if rec.get("solve_s", rec["wall_s"]) > args.qmc_cap_s / 10:
            break
        n *= 2
    return out


def run_tensor(problem, args, test_x, test_exact):
    """Tensor Nystrom at the largest n that fits; the record says where it stops fitting."""
    from daskie.reference import NewtonDidNotConverge, Nystrom

    budget = int(args.tensor_gib * 2**30)

    def fits(n):
        s = Nystrom(n=n)
        return s.matrix_bytes(problem) <= budget and s.unknowns(problem) <= args.tensor_max_unknowns

    n = 2
    while fits(n + 1):
        n += 1
    nxt = Nystrom(n=n + 1)
    rec = {"problem": problem.name, "dim": problem.dim, "formulation": "nystrom-tensor",
           "strategy": "numpy", "n_per_axis": n, "nodes": Nystrom(n=n).unknowns(problem),
           "next_n_gib": nxt.matrix_bytes(problem) / 2**30,
           "next_n_unknowns": nxt.unknowns(problem)}
    if not fits(n):
        rec["error"] = "n = 2 does not fit"
        return rec
    try:
        t0 = time.perf_counter()
        sol = Nystrom(n=n).solve(problem)
        pred = sol(test_x)
        rec["wall_s"] = time.perf_counter() - t0
        rec["solve_s"] = sol.wall_s
        rec["mse"], rec["rel_l2"] = _errors(pred, test_exact)
    except NewtonDidNotConverge as exc:
        rec.update(error=str(exc), wall_s=time.perf_counter() - t0)
    print(f"  {problem.name} nystrom-tensor n={n} ({rec['nodes']} unknowns): "
          f"MSE {rec.get('mse', float('nan')):.2e} in {rec.get('wall_s', 0):.1f} s; "
          f"n={n + 1} needs {rec['next_n_gib']:.2f} GiB", flush=True)
    return rec


def _window_records(ds):
    keep = ds["history_kind"].values == "window"
    return [{"elapsed_s": float(t), "mse": float(m), "epoch": int(e)}
            for t, m, e in zip(ds["history_elapsed_s"].values[keep], ds["history_mse"].values[keep],
                               ds["history_epoch"].values[keep])]


def run_speedup(args):
    """Monolithic (1 thread, all cores) against DataParallel and CEPTF on 2 x 1 workers."""
    import torch

    from daskie import CEPTF, DataParallel, LevenbergMarquardt, Monolithic, solve
    from daskie.cluster import local_cluster
    from daskie.metrics import time_to_target
    from daskie.problems import catalog

    problem = catalog.get(args.speedup_problem)
    form = daskie_formulation(problem, args.hidden, points=args.speedup_points)
    opt = LevenbergMarquardt(steps=args.speedup_steps)
    w = args.speedup_window
    configs = {"mono-1t": (Monolithic(window=w), "sync", 1),
               "mono-all": (Monolithic(window=w), "sync", None),
               "dp": (DataParallel(shards=2, window=w), "cluster", 1),
               "ceptf": (CEPTF(window=w), "cluster", 1)}
    default_threads = torch.get_num_threads()
    runs = {}

    def one(label, client, steps=None):
        strategy, _, threads = configs[label]
        torch.set_num_threads(default_threads if threads is None else threads)
        o = opt if steps is None else dataclasses.replace(opt, steps=steps)
        t0 = time.perf_counter()
        ds = solve(problem, form, strategy, o, client=client, threads=threads, target_loss=0.0,
                   workers=2, check=False)
        wall = time.perf_counter() - t0
        if steps is None:
            runs[label] = {"records": _window_records(ds), "wall_s": wall,
                           "mse": float(ds.attrs["mse"]), "load_1m": os.getloadavg()[0]}
            print(f"  speedup {label}: {wall:.1f} s, MSE {ds.attrs['mse']:.2e}, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)

    for label in ("mono-1t", "mono-all"):
        one(label, "sync")
    torch.set_num_threads(default_threads)
    with local_cluster(2, 1) as client:
        one("dp", client, steps=w)  # warm-up: imports and first discretization on the workers
        for label in ("dp", "ceptf"):
            one(label, client)
    reached = max(min(r["mse"] for r in rec["records"]) for rec in runs.values())
    target = args.speedup_target if reached <= args.speedup_target else reached
    times = {k: time_to_target(v["records"], target) for k, v in runs.items()}
    out = []
    for label, rec in runs.items():
        row = {"kind": "speedup", "problem": problem.name, "dim": problem.dim,
               "formulation": "quadrature", "strategy": label, "target_mse": target,
               "target_asked": args.speedup_target, "time_to_target_s": times[label],
               "wall_s": rec["wall_s"], "mse": rec["mse"], "load_at_end": rec["load_1m"],
               "n_params": form.discretize(problem).info["n_params"]}
        if label in ("dp", "ceptf"):
            row["SR_vs_1t"] = times["mono-1t"] / times[label]
            row["SR_vs_all"] = times["mono-all"] / times[label]
        out.append(row)
    print(f"\nspeed-up on {problem.name}, time to MSE {target:.1e}:")
    for row in out:
        extra = (f", SR(1t) {row['SR_vs_1t']:.2f}, SR(all) {row['SR_vs_all']:.2f}"
                 if "SR_vs_1t" in row else "")
        print(f"  {row['strategy']:<9} {row['time_to_target_s']:7.1f} s{extra}")
    return out


def run_plan(d):
    """The Plan of order reduction at dimension d (one sub-model per auxiliary network and mu)."""
    from daskie import MLP, OrderReduction
    from daskie.plan import make_plan
    from daskie.problems import catalog

    form = OrderReduction(net=MLP(hidden=(16, 16)), points=256, aux_points=128, test_points=16)
    plan = make_plan(form.discretize(catalog.get(f"hd-mixed-d{d}")), workers=2, gpus=1)
    info = plan.to_dict()
    return {"kind": "plan", "problem": f"hd-mixed-d{d}", "dim": d, "formulation": "order_reduction",
            "n_submodels": d + 1, "n_groups": len(plan.groups), "c_eff": plan.c_eff,
            "plan": info}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[4, 6, 8])
    ap.add_argument("--families", nargs="+",
                    default=["hd-fredholm", "hd-volterra", "hd-mixed", "hd-sharp"])
    ap.add_argument("--methods", nargs="+", default=["daskie", "qmc", "tensor"])
    ap.add_argument("--hidden", type=int, nargs="+", default=[16, 16, 16])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--or-points", type=int, default=512)
    ap.add_argument("--or-aux-points", type=int, default=256)
    ap.add_argument("--qmc-max", type=int, default=4096)
    ap.add_argument("--qmc-gib", type=float, default=2.0)
    ap.add_argument("--qmc-cap-s", type=float, default=300.0)
    ap.add_argument("--tensor-gib", type=float, default=1.0)
    ap.add_argument("--tensor-max-unknowns", type=int, default=4096)
    ap.add_argument("--skip-speedup", action="store_true")
    ap.add_argument("--speedup-only", action="store_true")
    ap.add_argument("--speedup-problem", default="hd-volterra-d6")
    ap.add_argument("--speedup-target", type=float, default=1e-7)
    ap.add_argument("--speedup-steps", type=int, default=20)
    ap.add_argument("--speedup-window", type=int, default=2)
    ap.add_argument("--speedup-points", type=int, default=None)
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    from daskie.formulations.quadrature import test_set
    from daskie.problems import catalog
    from harness import write_records

    records = []

    def save():
        if args.out:
            write_records(args.out, records, settings=vars(args))

    if not args.speedup_only:
        for d in args.dims:
            records.append(run_plan(d))
            for family in args.families:
                problem = catalog.get(f"{family}-d{d}")
                test_x, test_exact = test_set(problem, TEST_POINTS, 0)
                load = round(os.getloadavg()[0], 2)
                print(f"{problem.name}: load {load:.1f}", flush=True)
                start = len(records)
                if "daskie" in args.methods:
                    rec = run_daskie(problem, args, test_x, test_exact)
                    print(f"  {problem.name} daskie: MSE {rec['mse']:.2e} in {rec['wall_s']:.1f} s "
                          f"({rec['nodes']} nodes {rec['nodes_kind']}, {rec['n_params']} params)", flush=True)
                    records.append(rec)
                if "order_reduction" in args.methods:
                    records.append(run_order_reduction(problem, args, test_x, test_exact))
                if "qmc" in args.methods:
                    records.extend(run_qmc(problem, args, test_x, test_exact))
                if "tensor" in args.methods:
                    records.append(run_tensor(problem, args, test_x, test_exact))
                for rec in records[start:]:  # write_records stamps the load at the end only
                    rec["load_at_start"] = load
                save()
    if not args.skip_speedup:
        records.extend(run_speedup(args))
        save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
