"""Data-parallel Levenberg-Marquardt on Dask against one process (issue: second-order training).

    python benchmarks/lm_scaling.py [--points 16384] [--hidden 52 52] [--iters 4] [--out lm.json]

E1 with quadrature collocation, a tanh MLP of about 3000 parameters, N collocation points
(16384 by default: J is N x P float64, ~390 MB). Each configuration runs in a fresh process
(or a fresh LocalCluster), takes ``--iters`` LM iterations from the same start, and reports:

* ``one-2t``  — one process, 2 torch threads (what a user would otherwise run);
* ``one-1t``  — one process, 1 thread;
* ``dp-2x1``  — ``DataParallel(shards=2)`` on LocalCluster(2 workers x 1 thread): each worker
  forms ``J_k^T J_k`` and ``J_k^T r_k`` on half the rows; one all-reduce sums them;
* ``one-budget`` / ``dp-budget`` — the same with ``LevenbergMarquardt(memory_budget=B)``, B
  chosen between the sharded and the one-process need: one process must fall back to the
  matrix-free CG solve, the sharded run keeps the direct solve.

Time per iteration is the median of the optimizer's step times (``step_s``: Jacobian, normal
equations, all-reduce, damping loop), so process start and discretization are not counted.
Memory is the kernel's peak resident set (``ru_maxrss``) of each process, and its increase
over the resident set after imports (the training's own memory). All iterates agree between
configurations (same seed, same steps): the table shows the final loss as a check.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

import psutil


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _setup(args):
    from daskie import LevenbergMarquardt, QuadratureCollocation
    from daskie.nn import MLP

    formulation = QuadratureCollocation(net=MLP(hidden=tuple(args.hidden)), points=args.points)
    budget = args.budget if args.config.endswith("budget") else None
    optimizer = LevenbergMarquardt(steps=args.iters, memory_budget=budget, cg_iters=args.cg_iters)
    return formulation, optimizer


def run_one(args) -> dict:
    """One process: train in this process with ``args.threads`` torch threads."""
    import torch

    torch.set_num_threads(args.threads)
    import daskie  # noqa: F401
    from daskie.problems import catalog
    from daskie.train import Objective, TrainState, advance

    base = _rss_mb()
    formulation, optimizer = _setup(args)
    obj = Objective(formulation.discretize(catalog.get("E1"), seed=0))
    state, records = advance(obj, optimizer, TrainState(theta=obj.init_params(0)), args.iters,
                             final_mse=True)
    return {"step_s": [r["step_s"] for r in records], "loss": state.loss, "mse": records[-1]["mse"],
            "cg": optimizer.uses_cg(obj), "n_params": obj.layout.total,
            "jacobian_mb": obj.jacobian_bytes() / 2**20,
            "peak_mb": _maxrss_mb(), "base_mb": base}


def _worker_memory(dask_worker=None):
    return {"base_mb": _rss_mb(), "peak_mb": _maxrss_mb()}


def _warm(dask_worker=None):
    import torch  # noqa: F401

    import daskie.runtime.window_graph  # noqa: F401
    import daskie.train.collective  # noqa: F401

    return _rss_mb()


def run_dp(args) -> dict:
    """DataParallel on a fresh LocalCluster(2 x 1 thread)."""
    from daskie import DataParallel, solve
    from daskie.cluster import local_cluster
    from daskie.problems import catalog

    formulation, optimizer = _setup(args)
    with local_cluster(2, 1) as client:
        base = client.run(_warm)
        ds = solve(catalog.get("E1"), formulation, DataParallel(shards=2, window=None), optimizer,
                   client=client, threads=1)
        mem = client.run(_worker_memory)
    steps = ds["history_step_s"].values
    opt = ds["history_optimizer"].values
    step_s = [float(s) for s, o in zip(steps, opt) if o == optimizer.label]
    from daskie.train import Objective

    shard = Objective(formulation.discretize(catalog.get("E1"), seed=0, shard=(0, 2)))
    return {"step_s": step_s, "loss": float(ds.attrs["loss"]), "mse": float(ds.attrs["mse"]),
            "cg": optimizer.uses_cg(shard), "n_params": int(ds.attrs["n_params"]),
            "jacobian_mb": shard.jacobian_bytes() / 2**20,
            "peak_mb": max(m["peak_mb"] for m in mem.values()),
            "base_mb": max(base.values()),
            "sync_s": float(sum(v for v in ds["history_sync_s"].values if v == v))}


CONFIGS = {"one-2t": ("one", 2), "one-1t": ("one", 1), "dp-2x1": ("dp", 1),
           "one-budget": ("one", 2), "dp-budget": ("dp", 1)}


def child(args) -> None:
    kind, threads = CONFIGS[args.config]
    args.threads = threads
    out = run_one(args) if kind == "one" else run_dp(args)
    print("RESULT " + json.dumps(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=16384)
    ap.add_argument("--hidden", type=int, nargs="+", default=[52, 52])
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each configuration (the step-time median is over all steps)")
    ap.add_argument("--cg-iters", type=int, default=50)
    ap.add_argument("--budget", default=None,
                    help="memory budget for the *-budget rows (default: between the two needs)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.config:
        if args.budget is not None and args.budget.isdigit():
            args.budget = int(args.budget)
        child(args)
        return 0
    from daskie.nn import MLP

    P = MLP(hidden=tuple(args.hidden)).n_params(2)
    j_mb = 8 * args.points * P / 2**20
    a_mb = 8 * P * P / 2**20
    budget = args.budget or f"{int(j_mb / 2 + a_mb + (j_mb / 2) / 2)}MB"
    print(f"E1, quadrature, P = {P}, N = {args.points}: J {j_mb:.0f} MB, J^T J {a_mb:.0f} MB; "
          f"budget rows use memory_budget={budget}", flush=True)
    results = {}
    for name in args.configs:
        runs = []
        for _ in range(args.repeats):
            cmd = [sys.executable, __file__, "--config", name, "--points", str(args.points),
                   "--iters", str(args.iters), "--cg-iters", str(args.cg_iters),
                   "--budget", str(budget), "--hidden", *map(str, args.hidden)]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"configuration {name} failed")
            runs.append(json.loads(line[7:]))
        steps = [s for r in runs for s in r["step_s"]]
        rec = {**runs[-1], "config": name, "step_s": steps, "median_step_s": statistics.median(steps),
               "peak_mb": statistics.median(r["peak_mb"] for r in runs),
               "base_mb": statistics.median(r["base_mb"] for r in runs), "budget": budget,
               "points": args.points, "iters": args.iters, "repeats": args.repeats}
        rec["train_mb"] = rec["peak_mb"] - rec["base_mb"]
        results[name] = rec
        print(f"  {name:<11} median {rec['median_step_s']:.2f} s/iter  peak {rec['peak_mb']:.0f} MB "
              f"(+{rec['train_mb']:.0f})  loss {rec['loss']:.3e}  cg {rec['cg']}", flush=True)

    print("\n| config | s / iteration (median) | peak RSS MB | training MB | solve | loss |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['median_step_s']:.2f} | {r['peak_mb']:.0f} | {r['train_mb']:.0f} | "
              f"{'CG' if r['cg'] else 'direct'} | {r['loss']:.3e} |")
    ratios = {}
    if {"one-2t", "dp-2x1"} <= results.keys():
        ratios["time_one2t_over_dp"] = results["one-2t"]["median_step_s"] / results["dp-2x1"]["median_step_s"]
        ratios["memory_dp_over_one"] = results["dp-2x1"]["peak_mb"] / results["one-2t"]["peak_mb"]
        ratios["train_memory_dp_over_one"] = results["dp-2x1"]["train_mb"] / results["one-2t"]["train_mb"]
    if {"one-1t", "dp-2x1"} <= results.keys():
        ratios["time_one1t_over_dp"] = results["one-1t"]["median_step_s"] / results["dp-2x1"]["median_step_s"]
    print("\nratios (targets: one-2t/dp >= 0.9, one-1t/dp >= 1.7, memory dp/one <= 0.6):")
    for k, v in ratios.items():
        print(f"  {k} = {v:.2f}")
    if args.out:
        from harness import write_records

        write_records(args.out, [{"kind": "run", **r} for r in results.values()]
                      + [{"kind": "ratio", "ratio": k, "value": v} for k, v in ratios.items()])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
