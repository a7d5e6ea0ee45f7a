"""CEPTF speed-up: wall time to a target MSE, monolithic in one process against joint CEPTF
on 2 workers x 1 thread, same machine, same run (seed 000 Eq 4.1 metrics).

    python benchmarks/speedup.py [--problems E1 E2 E3 E4] [--optimizer adam|lm]
                                 [--network loopback|emulated|both] [--rate 1gbit]
                                 [--target 1e-5] [--repeats 3] [--out speedup.json]

For each problem (order reduction: mu and the F_{i,m} sub-models) and each configuration:

* ``mono-all`` — ``Monolithic`` in this process with torch's default threads (all cores):
  the honest rival, what a user would otherwise run;
* ``mono-1t``  — the same on one thread;
* ``ceptf``    — ``CEPTF()`` (joint, ``balance=True``): the evaluation rows dealt to the two
  workers by estimated work, the Plan's groups kept together and the sub-model at the
  boundary split; values all-gathered and gradients all-reduced every step;
* ``ceptf-whole`` — ``CEPTF(balance=False)``: each worker evaluates whole sub-models (the
  Plan's groups), the paper's placement;
* ``dp``       — ``DataParallel(shards=2)``: every worker all sub-models on half the rows.

With ``--optimizer lm``: ``ceptf`` (row-split normal equations), ``ceptf-cols`` (column
split, whole sub-models) and ``dp``.

The parallel configurations run on ``LocalCluster(2 workers x 1 thread)`` over loopback and,
with ``--network emulated`` (root, Linux namespaces; ``benchmarks/netns.py``), on two
"hosts" joined by links of ``--rate``. Before any timing the workers (and this process, for
the one-process runs) import and warm up with a short solve. All configurations take the
same steps (joint CEPTF is monolithic training split over workers), so they reach the
target at the same step; the wall time to it is read from the client's clock at the end of
each window (``elapsed_s``: it includes Dask scheduling, the exchange and the
discretization inside the tasks). When no configuration reaches ``--target`` within the
steps, the loosest MSE every configuration reached is used instead and named in the table.
Medians of ``--repeats`` runs; SR = T(mono-all) / T(par), SR(1t) = T(mono-1t) / T(par),
SE = SR / N_sub, CE = SR exp(-log(N_sub) / C_eff) with C_eff the planner's IE complexity.
``ms/step`` is the median over windows after the first of window time / window steps (the
steady state, without start-up).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time



def _records(ds):
    keep = ds["history_kind"].values == "window"
    return [{"elapsed_s": float(t), "mse": float(m), "epoch": int(e)}
            for t, m, e in zip(ds["history_elapsed_s"].values[keep], ds["history_mse"].values[keep],
                               ds["history_epoch"].values[keep])]


def configs(optimizer_name):
    from daskie import CEPTF, DataParallel, Monolithic, Whole

    def mono(window, threads):
        return Monolithic(window=window), "sync", threads

    out = {"mono-all": lambda w: mono(w, None), "mono-1t": lambda w: mono(w, 1),
           "ceptf": lambda w: (CEPTF(window=w), "cluster", 1)}
    if optimizer_name == "lm":
        out["ceptf-cols"] = lambda w: (CEPTF(window=w, placement=Whole(lm_split="columns")),
                                       "cluster", 1)
    else:
        out["ceptf-whole"] = lambda w: (CEPTF(window=w, placement=Whole()), "cluster", 1)
    out["dp"] = lambda w: (DataParallel(shards=2, window=w), "cluster", 1)
    return out


def _ms_per_step(records):
    """Median over windows after the first of (window wall time / window steps), ms."""
    ends = [(r["elapsed_s"], r["epoch"]) for r in records]
    rates = [1000 * (t1 - t0) / (e1 - e0) for (t0, e0), (t1, e1) in zip(ends[:-1], ends[1:])
             if e1 > e0]
    return statistics.median(rates) if rates else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", nargs="+", default=["E1", "E2", "E3", "E4"])
    ap.add_argument("--optimizer", choices=["adam", "lm"], default="adam")
    ap.add_argument("--steps", type=int, default=None, help="default: adam 300, lm 30")
    ap.add_argument("--window", type=int, default=None, help="default: adam 50, lm 5")
    ap.add_argument("--target", type=float, default=1e-5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[40, 40, 40])
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--aux-points", type=int, default=1024)
    ap.add_argument("--network", choices=("loopback", "emulated", "both"), default="loopback")
    ap.add_argument("--rate", default="1gbit", help="link rate of the emulated network")
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    import torch

    from daskie import Adam, LevenbergMarquardt, OrderReduction, solve
    from daskie.cluster import local_cluster
    from daskie.metrics import time_to_target
    from daskie.nn import MLP
    from daskie.plan import make_plan
    from daskie.problems import catalog

    steps = args.steps or (600 if args.optimizer == "adam" else 30)
    window = args.window or (50 if args.optimizer == "adam" else 5)
    optimizer = Adam(lr=1e-3, steps=steps) if args.optimizer == "adam" else \
        LevenbergMarquardt(steps=steps, scaling="levenberg")
    formulation = OrderReduction(net=MLP(hidden=tuple(args.hidden)), points=args.points,
                                 aux_points=args.aux_points)
    print(f"order reduction, nets {args.hidden}, points {args.points}/{args.aux_points}, "
          f"{optimizer!r}, window {window}, torch default threads {torch.get_num_threads()}",
          flush=True)
    default_threads = torch.get_num_threads()
    made = {label: make(window) for label, make in configs(args.optimizer).items()}
    pars = [c for c, (_, where, _) in made.items() if where != "sync"]
    networks = ["loopback", "emulated"] if args.network == "both" else [args.network]
    problems = {name: catalog.get(name) for name in args.problems}
    runs: dict = {}  # (network, problem, config) -> list of runs

    def run(network, name, label, strategy, client, threads, steps_=None, keep=True):
        # solve(threads=1) sets this process's torch threads; "all cores" restores them
        torch.set_num_threads(default_threads if threads is None else threads)
        opt = optimizer if steps_ is None else dataclasses.replace(optimizer, steps=steps_)
        t0 = time.perf_counter()
        ds = solve(problems[name], formulation, strategy, opt, client=client, threads=threads,
                   target_loss=0.0, workers=2)
        wall = time.perf_counter() - t0
        if keep:
            recs = _records(ds)
            out = runs.setdefault((network, name, label), [])
            out.append({"records": recs, "wall_s": wall, "mse": float(ds.attrs["mse"]),
                        "epochs": int(ds.attrs["epochs"]), "ms_per_step": _ms_per_step(recs)})
            print(f"  {network:<8} {name} {label:<11} run {len(out) - 1}: {wall:6.1f} s, "
                  f"{out[-1]['ms_per_step']:5.1f} ms/step, MSE {ds.attrs['mse']:.2e}", flush=True)

    def warm_up(network, client, where):
        for label, (strategy, w, threads) in made.items():
            if w == where:
                run(network, args.problems[0], label, strategy, client, threads,
                    steps_=2 * window, keep=False)

    # The one-process runs go first, with no cluster in this process: a LocalCluster's
    # scheduler thread here preempts torch's OpenMP threads and slowed 2-thread training
    # down by up to 50x in trials (a spinning OpenMP barrier waits for a descheduled thread).
    warm_up("local", "sync", "sync")
    for name in args.problems:
        for label, (strategy, where, threads) in made.items():
            if where == "sync":
                for _ in range(args.repeats):
                    run("local", name, label, strategy, "sync", threads)
    for network in networks:
        if network == "loopback":
            ctx = local_cluster(2, 1)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from netns import emulated_cluster

            ctx = emulated_cluster(2, rate=args.rate, threads=1)
        with ctx as client:
            warm_up(network, client, "cluster")
            for name in args.problems:
                for label in pars:
                    strategy, _, threads = made[label]
                    for _ in range(args.repeats):
                        run(network, name, label, strategy, client, threads)

    table, records = [], []
    for network in networks:
        for name in args.problems:
            plan = make_plan(formulation.discretize(problems[name]), workers=2)
            mine = {c: runs[("local", name, c)] for c in made if made[c][1] == "sync"}
            mine.update({c: runs[(network, name, c)] for c in pars})
            reached = [min(r["mse"] for rec in rs for r in rec["records"]) for rs in mine.values()]
            target = args.target if max(reached) <= args.target else max(reached)
            times = {c: statistics.median(time_to_target(rec["records"], target) for rec in rs)
                     for c, rs in mine.items()}
            steady = {c: statistics.median(rec["ms_per_step"] for rec in rs)
                      for c, rs in mine.items()}
            n_sub, c_eff = len(plan.groups), plan.c_eff
            row = {"network": network if network == "loopback" else f"emulated {args.rate}",
                   "problem": name, "target": target, "target_asked": args.target,
                   "optimizer": args.optimizer, "n_sub": n_sub, "c_eff": c_eff,
                   **{f"t_{c}": t for c, t in times.items()},
                   **{f"ms_{c}": v for c, v in steady.items()}}
            for par in pars:
                sr = times["mono-all"] / times[par]
                row[f"SR_{par}"] = sr
                row[f"SR1t_{par}"] = times["mono-1t"] / times[par]
                row[f"SE_{par}"] = sr / n_sub
                row[f"CE_{par}"] = sr * math.exp(-math.log(n_sub) / c_eff)
                row[f"SRstep_{par}"] = steady["mono-all"] / steady[par]
                row[f"SRstep1t_{par}"] = steady["mono-1t"] / steady[par]
            table.append(row)
            for c, rs in mine.items():
                for i, r in enumerate(rs):
                    records.append({"network": row["network"], "problem": name, "config": c,
                                    "repeat": i, "wall_s": r["wall_s"], "mse": r["mse"],
                                    "epochs": r["epochs"], "ms_per_step": r["ms_per_step"],
                                    "time_to_target": time_to_target(r["records"], target),
                                    "target": target})
    for network in networks:
        rows = [r for r in table if r["network"].split()[0] == network]
        print(f"\n{rows[0]['network']}: time to the target MSE (median of {args.repeats}); "
              "SR against mono-all, SR(1t) against mono-1t; ms/step steady state")
        print("| problem | target MSE | mono-all s (ms/step) | mono-1t s (ms/step) | "
              + " | ".join(f"{p} s (ms/step) | SR | SR(1t) | SE | CE" for p in pars) + " |")
        print("|---" * (4 + 5 * len(pars)) + "|")
        for row in rows:
            cells = [row["problem"], f"{row['target']:.1e}",
                     f"{row['t_mono-all']:.1f} ({row['ms_mono-all']:.1f})",
                     f"{row['t_mono-1t']:.1f} ({row['ms_mono-1t']:.1f})"]
            for p in pars:
                cells += [f"{row[f't_{p}']:.1f} ({row[f'ms_{p}']:.1f})", f"{row[f'SR_{p}']:.2f}",
                          f"{row[f'SR1t_{p}']:.2f}", f"{row[f'SE_{p}']:.2f}",
                          f"{row[f'CE_{p}']:.2f}"]
            print("| " + " | ".join(cells) + " |")
    print("\ntargets: SR >= 1.3 against mono-all and >= 1.8 against mono-1t on every equation")
    if args.out:
        from harness import write_records

        # one list: the table's rows (kind "summary") and every run (kind "run")
        write_records(args.out, [{"kind": "summary", **row} for row in table]
                      + [{"kind": "run", **r} for r in records],
                      settings={k: v for k, v in vars(args).items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
