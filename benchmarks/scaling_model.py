"""The scaling model (daskie.plan.scaling) against what this machine measured, then its
predictions for the CEPTF paper's set-ups (seed 000 Sec. 5) and for 64 workers with 8 GPUs.

    python benchmarks/scaling_model.py --out scaling.json
    python benchmarks/scaling_model.py --measure --out scaling.json   # + a fresh 2-rank E1 run

Measured inputs (no new runs unless ``--measure``):

* ``benchmarks/results/collectives.json``: all-reduce of 1/10/100 MB among 2 and 4 ranks
  (ring, parameter server, tree, gloo; fp32) on loopback and on the emulated 1 Gbit/s network
  of ``benchmarks/netns.py``. **Calibration**: per algorithm, ``round_s`` and ``copy_Bps``
  from the loopback 2-rank 1 MB and 100 MB points (records ``"calibration": true``); the
  link rate is the independent ``netns.py --check`` figure (114.3 MB/s). Every other point
  (10 MB, 4 ranks, the emulated network) is a prediction.
* ``benchmarks/results/speedup_adam.json``: steady ms/step of the joint CEPTF (balanced, 2
  workers x 1 thread) and of one process on one thread (E1-E4, order reduction, nets
  40x40x40, 1024 + 1024 points, Adam), loopback and emulated. **Calibration**: the
  replicated fraction of a step from loopback E1 (one number); the other 7 are predictions.
* ``--measure``: a fresh 2-worker CEPTF run of E1 on this machine (and a one-thread run),
  whose profiler records (``window_s``, ``sync_s`` per rank) give the replicated fraction the
  way :meth:`StepCosts.from_history` reads run histories; reported beside the stored one.

Each JSON record carries ``config``, ``measured_s``, ``predicted_s``, ``rel_error`` (or, for
a prediction, ``predicted_s`` and ``predicted_sr``), and the machine's load, cores, date and
daskie version when the model was evaluated (the stored measurements' own conditions are in
their files' ``meta``/``settings``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent))

# seed 000 Sec. 5.6.3 (SR, %) and Sec. 5.2 (N_sub and devices per experiment)
PAPER = {
    "E1": {"n_sub": 4, "gpus": 3, "sr_range": (318.6, 369.6), "sr_final": None},
    "E2": {"n_sub": 3, "gpus": 0, "sr_range": (359.4, 632.9), "sr_final": 585.2},
    "E3": {"n_sub": 4, "gpus": 2, "sr_range": (332.5, 355.5), "sr_final": None},
    "E4": {"n_sub": 3, "gpus": 1, "sr_range": (352.8, 383.2), "sr_final": 360.7},
}
# seed 000 Table 5: synchronisation delay (ms), ring-reduce and parameter server
PAPER_SYNC = {(2, "E1"): (8.3, 10.7), (2, "E4"): (9.1, 12.3), (4, "E1"): (12.3, 16.1),
              (4, "E4"): (14.2, 24.1), (6, "E1"): (15.7, 22.4), (6, "E4"): (18.9, 32.1)}


def machine() -> dict:
    import daskie

    return {"load_1m": round(os.getloadavg()[0], 2), "cores": os.cpu_count(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "daskie": getattr(daskie, "__version__", "0.1.0")}


def fit_algorithms(records):
    """(round_s, copy_Bps) per method from the loopback 2-rank 1 MB and 100 MB points."""
    from daskie.plan import scaling

    out = {}
    for method in ("ring", "ps", "tree", "gloo"):
        pts = {r["mb"]: r["median_s"] for r in records
               if r["network"] == "loopback" and r["workers"] == 2 and r["method"] == method
               and r["compress"] == "none"}
        rounds, _, b1, _ = scaling.collective_bytes(method, 2, 1 * scaling.MB)
        _, _, b100, _ = scaling.collective_bytes(method, 2, 100 * scaling.MB)
        copy = (b100 - b1) / (pts[100] - pts[1])
        out[method] = ((pts[1] - b1 / copy) / rounds, copy)
    return out


def collective_records(meta):
    from daskie.plan import scaling

    data = json.loads((RESULTS / "collectives.json").read_text())
    fitted = fit_algorithms(data["records"])
    algos = scaling.with_algorithms(fitted)
    nets = {"loopback": scaling.LOOPBACK, "emulated-1gbit": scaling.EMULATED_GIGABIT}
    out = []
    for r in data["records"]:
        if r["compress"] != "none":
            continue  # the model has no fp16 encode/decode cost
        n, method = r["workers"], r["method"]
        pred = scaling.allreduce_time(method, n, r["mb"] * scaling.MB, nets[r["network"]],
                                      algorithm=algos[method], ranks_per_host=n,
                                      cores_per_host=meta["cores_measured"])
        calib = r["network"] == "loopback" and n == 2 and r["mb"] in (1, 100)
        out.append({"kind": "allreduce", "config": f"allreduce {method} n={n} {r['mb']} MB "
                                                   f"{r['network']}",
                    "measured_s": r["median_s"], "predicted_s": pred,
                    "rel_error": pred / r["median_s"] - 1, "calibration": calib,
                    "oversubscribed": r.get("oversubscribed", False)})
    return out, fitted


def speedup_plan(problem_name, workers=2, gpus=0, paper=False):
    from daskie import MLP, OrderReduction
    from daskie.plan import make_plan
    from daskie.problems import catalog

    if paper:
        formulation = OrderReduction(net=MLP.paper())
    else:
        formulation = OrderReduction(net=MLP(hidden=(40, 40, 40)), points=1024, aux_points=1024)
    disc = formulation.discretize(catalog.get(problem_name), seed=0)
    return make_plan(disc, workers=workers, gpus=gpus)


def step_records(meta, fitted, measured_fraction=None):
    from daskie.plan import scaling

    data = json.loads((RESULTS / "speedup_adam.json").read_text())
    algos = scaling.with_algorithms(fitted)
    nets = {"loopback": scaling.LOOPBACK, "emulated 1gbit": scaling.EMULATED_GIGABIT}
    plans = {}
    kw = dict(ranks=2, gpus=0, method="gloo", ranks_per_host=2,
              cores_per_host=meta["cores_measured"], algorithms=algos)

    def pred(row, fraction):
        plan = plans.setdefault(row["problem"], speedup_plan(row["problem"]))
        costs = scaling.StepCosts.from_fraction(row["ms_mono-1t"] / 1e3, fraction)
        return plan, scaling.predict(plan, costs, nets[row["network"]], **kw)

    # calibration: the replicated fraction f that makes loopback E1's prediction exact
    # (the prediction is linear in f: step = t1 (f + (1 - f) / 2) + comm)
    e1 = next(r for r in data["table"] if r["network"] == "loopback" and r["problem"] == "E1")
    _, p0 = pred(e1, 0.0)
    comm = p0.gather_s + p0.reduce_s
    t1 = e1["ms_mono-1t"] / 1e3
    fraction = 2 * (e1["ms_ceptf"] / 1e3 - comm) / t1 - 1
    out = []
    for row in data["table"]:
        for label, f in (("stored E1", fraction),) + (
                (("fresh history", measured_fraction),) if measured_fraction is not None else ()):
            _, p = pred(row, f)
            measured = row["ms_ceptf"] / 1e3
            out.append({"kind": "step", "config": f"CEPTF step {row['problem']} 2 ranks "
                                                  f"{row['network']} (f from {label})",
                        "measured_s": measured, "predicted_s": p.step_s,
                        "rel_error": p.step_s / measured - 1,
                        "calibration": row["network"] == "loopback" and row["problem"] == "E1"
                        and label == "stored E1",
                        "replicated_fraction": f, "compute_s": p.compute_s,
                        "sync_s": p.gather_s + p.reduce_s,
                        "measured_sr_1t": row["ms_mono-1t"] / row["ms_ceptf"],
                        "predicted_sr_1t": p.sr})
    e1_plan = plans["E1"]
    s_per_flop = t1 / sum(g.flops_per_step for g in e1_plan.groups)
    return out, fraction, s_per_flop


def measure_history():
    """A fresh 2-worker CEPTF run of E1 (and one thread in process): the replicated
    fraction from the profiler's records, as StepCosts.from_history reads them."""
    import time

    import torch

    from daskie import CEPTF, MLP, Adam, Monolithic, OrderReduction, solve
    from daskie.cluster import local_cluster
    from daskie.plan import scaling

    form = OrderReduction(net=MLP(hidden=(40, 40, 40)), points=1024, aux_points=1024)
    opt = Adam(lr=1e-3, steps=300)
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    mono = solve("E1", form, Monolithic(window=50), opt, client="sync", threads=1,
                 target_loss=0.0)
    with local_cluster(2) as client:
        par = solve("E1", form, CEPTF(window=50), opt, client=client, threads=1,
                    target_loss=0.0, workers=2)

    def per_step(ds):
        keep = ds["history_kind"].values == "window"
        t = ds["history_elapsed_s"].values[keep]
        e = ds["history_epoch"].values[keep]
        rates = [(t1 - t0_) / (e1 - e0) for t0_, t1, e0, e1 in zip(t[:-1], t[1:], e[:-1], e[1:])
                 if e1 > e0]
        return statistics.median(rates)

    h = {k[len("history_"):]: par[k].values for k in par.data_vars if k.startswith("history_")}
    recs = [{"rank": h["rank"][i], "window": h["window"][i], "window_s": h["window_s"][i],
             "sync_s": h["sync_s"][i]} for i in range(len(h["rank"]))
            if not math.isnan(float(h["window_s"][i]))]
    one = per_step(mono)
    costs = scaling.StepCosts.from_history(recs, one, steps=50)
    return {"one_thread_s": one, "ceptf_step_s": per_step(par),
            "rank_compute_s": scaling.rank_compute_s(recs, 50),
            "replicated_fraction": costs.replicated_s / costs.total_s,
            "wall_s": time.perf_counter() - t0}


def predictions(meta, fraction, s_per_flop, fitted, gpu_speeds=(1.0, 5.0, 20.0)):
    from daskie.plan import scaling

    algos = scaling.with_algorithms(fitted)
    out = []
    for name, paper in PAPER.items():
        plan = speedup_plan(name, workers=paper["n_sub"], gpus=paper["gpus"], paper=True)
        costs = scaling.StepCosts.from_plan(plan, fraction, s_per_flop)
        for speed in gpu_speeds:
            for balance in ("equal", "speed"):
                if paper["gpus"] == 0 and (speed != gpu_speeds[0] or balance != "equal"):
                    continue
                p = scaling.predict(plan, costs, scaling.GIGABIT, ranks=paper["n_sub"],
                                    gpus=paper["gpus"], gpu_speed=speed, method="gloo",
                                    balance=balance, algorithms=algos)
                out.append({"kind": "paper", "config": f"{name} paper set-up: {paper['n_sub']} "
                                                       f"ranks, {paper['gpus']} GPU, gpu_speed "
                                                       f"{speed:g}, balance {balance}, 1 GbE 0.3 ms",
                            "predicted_s": p.step_s, "predicted_sr": p.sr,
                            "paper_sr_pct": paper["sr_range"], "paper_sr_final_pct": paper["sr_final"],
                            "n_sub_plan": plan.n_sub, "assumptions": p.assumptions})
    for (n, name), (ring_ms, ps_ms) in PAPER_SYNC.items():
        plan = speedup_plan(name, workers=n, paper=True)
        grad = 8.0 * sum(c.n_params for c in plan.costs)
        for method, paper_ms in (("ring", ring_ms), ("ps", ps_ms)):
            t = scaling.allreduce_time(method, n, grad, scaling.GIGABIT, algorithm=algos[method])
            out.append({"kind": "paper-sync", "config": f"daskie {method} all-reduce, {n} nodes, "
                                                        f"{name} gradient {grad / 1e3:.0f} kB, 1 GbE",
                        "predicted_s": t, "predicted_sr": None, "paper_s": paper_ms / 1e3})
    plan = speedup_plan("E1", workers=64, gpus=8, paper=True)
    costs = scaling.StepCosts.from_plan(plan, fraction, s_per_flop)
    for ranks in (plan.n_sub, 64):
        for speed in gpu_speeds:
            p = scaling.predict(plan, costs, scaling.GIGABIT, ranks=ranks, gpus=8,
                                gpu_speed=speed, method="gloo", balance="speed", algorithms=algos)
            out.append({"kind": "big", "config": f"E1 64 workers 8 GPUs: {ranks} ranks, "
                                                 f"gpu_speed {speed:g}, balance speed, 1 GbE",
                        "predicted_s": p.step_s, "predicted_sr": p.sr,
                        "assumptions": p.assumptions})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="JSON file of records")
    ap.add_argument("--measure", action="store_true",
                    help="also run a fresh 2-worker CEPTF E1 and read its profiler records")
    args = ap.parse_args(argv)

    meta = {"cores_measured": json.loads((RESULTS / "collectives.json").read_text())
            ["meta"]["cores"]}
    coll, fitted = collective_records(meta)
    fresh = measure_history() if args.measure else None
    steps, fraction, s_per_flop = step_records(
        meta, fitted, None if fresh is None else fresh["replicated_fraction"])
    preds = predictions(meta, fraction, s_per_flop, fitted)
    stamp = machine()
    records = [{**r, **stamp} for r in coll + steps + preds]
    if fresh is not None:
        records.append({"kind": "fresh-measurement", "config": "E1 CEPTF 2 ranks, this run",
                        **{k: v for k, v in fresh.items() if k != "rank_compute_s"},
                        "rank_compute_s": {str(k): v for k, v in fresh["rank_compute_s"].items()},
                        **stamp})

    print("fitted collective costs (loopback, 2 ranks, 1 and 100 MB):")
    for m, (a, c) in fitted.items():
        print(f"  {m:<5} round {a * 1e3:.3f} ms  copy {c / 1e9:.3f} GB/s")
    print(f"replicated fraction of a step (from loopback E1): {fraction:.3f}; "
          f"seconds per planner flop {s_per_flop:.3e}")
    if fresh is not None:
        print(f"fresh E1 run: one thread {fresh['one_thread_s'] * 1e3:.1f} ms/step, CEPTF "
              f"{fresh['ceptf_step_s'] * 1e3:.1f} ms/step, replicated fraction "
              f"{fresh['replicated_fraction']:.3f} (load {stamp['load_1m']})")
    print(f"\n{'configuration':<66} {'measured':>10} {'predicted':>10} {'error':>7}")
    for r in coll + steps:
        flag = " (calibration)" if r["calibration"] else ""
        print(f"{r['config']:<66} {r['measured_s'] * 1e3:>8.2f}ms {r['predicted_s'] * 1e3:>8.2f}ms "
              f"{100 * r['rel_error']:>+6.1f}%{flag}")
    valid = [abs(r["rel_error"]) for r in coll + steps if not r["calibration"]]
    within = sum(v <= 0.2 for v in valid)
    print(f"\nvalidation (calibration points excluded): {within}/{len(valid)} within 20 %, "
          f"median |error| {100 * statistics.median(valid):.1f} %, max {100 * max(valid):.1f} %")
    print(f"\n{'prediction':<82} {'step/time':>10} {'SR':>6}  paper")
    for r in preds:
        sr = "" if r["predicted_sr"] is None else f"{r['predicted_sr']:.2f}"
        paper = ""
        if r["kind"] == "paper":
            lo, hi = r["paper_sr_pct"]
            paper = f"SR {lo / 100:.2f}-{hi / 100:.2f}"
        elif r["kind"] == "paper-sync":
            paper = f"{r['paper_s'] * 1e3:.1f} ms"
        print(f"{r['config']:<82} {r['predicted_s'] * 1e3:>8.2f}ms {sr:>6}  {paper}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(records, indent=1, default=float) + "\n")
        print(f"\nwrote {len(records)} records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
