"""Issue 29: branch-, trunk- and branch x trunk-parallel operator training, measured and modelled.

    python benchmarks/operator_split.py [--repeats 3] [--steps N] [--data-n 256]
                                        [--cases branch trunk branch-trunk] [--no-data]
                                        [--dir /tmp/daskie-split] [--out operator_split.json]

Three cases, each on a family where its split is the natural one (the planner,
:func:`daskie.plan.operator_split.choose_split`, picks it for the case's shape; its reason
is in the record):

* ``branch``: ``fredholm-1d-width``, 8192 training instances x 33 query points (many
  instances, few points): ``OperatorDataParallel(shards=N)``;
* ``trunk``: ``fredholm-2d-fine``, 256 instances x 4096 (64 x 64) query points (few
  instances, a fine grid): ``OperatorTrunkParallel(points=N)``;
* ``branch-trunk``: ``fredholm-2d-fine`` on a 24 x 24 query grid (``mu`` in chunks of 144
  points), 704 instances (where the branch on the instances and the trunk on the points cost
  about the same):
  ``OperatorBranchTrunkParallel(2, 2)`` on 4 workers (a grid needs 4 ranks; one rank per
  worker). This host has 2 cores: 4 single-thread workers share them, so S <= 2 and
  S / 4 <= 0.5 by construction here.

Training: Adam (full-batch steps, ``window=None``; per case :data:`STEPS`, enough for the
one-worker run to take 15-30 s, so that starting the ranks is not what is
timed; the sizes are the seed's order (10^3-10^4 instances, 10^3-10^4 points per instance):
at 1024 x 33 rows a step took 4.7 ms on one rank, and two ranks' all-reduce and dispatch
(1.3 ms of measured sync per step, with the jitter of two busy cores) left S = 1.03; ``--steps`` sets every case's), data loss with the skip connection,
``learn_operator``'s default net (the family's own, :func:`daskie.operator.default_net`); the
data sets of ``fredholm-2d-fine`` have ``mu`` in chunks of 512 query points (the family's
``point_chunk``): each trunk-parallel rank reads only its own chunks; T_1 on LocalCluster(1 x 1 thread) with the
same strategy on 1 rank, T_N on LocalCluster(N x 1 thread), both clusters started before
and each repeat running T_1 and T_N back to back (paired); S = median of the paired
T_1 / T_N, S / N. Data (``phase: "data"``): generating ``--data-n`` fine-grid instances
(8 blocks, each task writing its zarr block) on 1 against 2 workers.

Then the model (``kind: "predicted"``) for 2-64 workers: T_N = T_1 x m(I, P) / m(1, 1) + the
gloo all-reduce of the parameters (:func:`daskie.plan.scaling.allreduce_time`, 2 ranks on
this host's loopback, 4 and more one per host on the emulated gigabit network), with
m(I, P) the planner's multiply-adds of one rank's step on an I x P grid.

Every record carries the load average at its start: other agents share the 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

CASES = {
    "branch": dict(family="fredholm-1d-width", n_train=8192, query=None, grid=lambda n: (n, 1)),
    "trunk": dict(family="fredholm-2d-fine", n_train=256, query=None, grid=lambda n: (1, n)),
    "branch-trunk": dict(family="fredholm-2d-fine", n_train=704, query=24, point_chunk=144,
                         grid=lambda n: (2, n // 2)),
}
WORKERS = {"branch": 2, "trunk": 2, "branch-trunk": 4}
#: Adam steps per timed run of each case (15-30 s on one worker of this host, idle).
STEPS = {"branch": 500, "trunk": 400, "branch-trunk": 500}
N_TEST = 8


def _strategy(split, i, p):
    from daskie.operator import (OperatorBranchTrunkParallel, OperatorDataParallel,
                                 OperatorTrunkParallel)

    if split == "branch":
        return OperatorDataParallel(shards=i, window=None)
    if split == "trunk":
        return OperatorTrunkParallel(points=p, window=None)
    if i * p == 1:
        return OperatorDataParallel(shards=1, window=None)
    return OperatorBranchTrunkParallel(instances=i, points=p, window=None)


def _plan(fam, net, n_train, q, ranks, memory):
    from daskie.plan.operator_split import choose_split

    b, t = net._sizes()
    return choose_split(n_train, q, ranks, memory, branch_layers=b, trunk_layers=t,
                        n_params=net.n_params())


def case(split, directory, steps, repeats, clusters):
    from daskie.operator import OperatorLoss, default_net, fit_operator, generate_dataset
    from daskie.problems.families import family
    from daskie.store.dataset import OperatorDataset
    from daskie.train import Adam

    spec = CASES[split]
    fam = family(spec["family"])
    n = spec["n_train"] + N_TEST
    path = os.path.join(directory, f"{split}-{fam.name}-{n}.zarr")
    generate_dataset(fam, path, n, seed=0, query=spec["query"], client=clusters[2],
                     block=32, point_chunk=spec.get("point_chunk"))
    store = OperatorDataset.open(path)
    net = default_net(fam, len(store.sensors))
    q = len(store.query)
    N = WORKERS[split]
    i, p = spec["grid"](N)
    plan = _plan(fam, net, spec["n_train"], q, N, 2e9)
    kwargs = dict(loss=OperatorLoss(net, skip=True), optimizer=Adam(lr=3e-3, steps=steps),
                  train=(0, spec["n_train"]), test=(spec["n_train"], n))
    fit_operator(fam, path, client=clusters[1], strategy=_strategy(split, 1, 1),
                 **{**kwargs, "optimizer": Adam(lr=3e-3, steps=2)})  # warm both clusters
    fit_operator(fam, path, client=clusters[N], strategy=_strategy(split, i, p),
                 **{**kwargs, "optimizer": Adam(lr=3e-3, steps=2)})
    t1, tn, loads = [], [], []
    for _ in range(repeats):
        loads.append(os.getloadavg()[0])
        t0 = time.perf_counter()
        one, _ = fit_operator(fam, path, client=clusters[1], strategy=_strategy(split, 1, 1),
                              **kwargs)
        t1.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        many, _ = fit_operator(fam, path, client=clusters[N], strategy=_strategy(split, i, p),
                               **kwargs)
        tn.append(time.perf_counter() - t0)
    diff = float((one.theta - many.theta).abs().max())
    ratios = [a / b for a, b in zip(t1, tn)]
    s = float(np.median(ratios))
    return {"phase": "train", "kind": "measured", "split": split, "family": fam.name,
            "workers": N, "grid": [i, p], "n_train": spec["n_train"], "points": q,
            "rows": spec["n_train"] * q, "steps": steps, "n_params": net.n_params(),
            "t1_s": t1, "tn_s": tn, "paired_speedups": ratios, "speedup": s,
            "efficiency": s / N, "efficiency_per_core": s / min(N, os.cpu_count() or N),
            "max_param_diff_1_vs_n": diff, "load_at_start": loads,
            "planner_split": plan.split, "planner_grid": [plan.instances, plan.points],
            "planner_reason": plan.reason, "net": repr(net)}, plan, net


def data_scaling(directory, repeats, clusters, n=256):
    from daskie.operator import generate_dataset
    from daskie.problems.families import family

    fam = family("fredholm-2d-fine")
    t1, t2, loads = [], [], []
    for r in range(repeats):
        loads.append(os.getloadavg()[0])
        times = []
        for w in (1, 2):
            path = os.path.join(directory, f"data-{w}-{r}.zarr")
            shutil.rmtree(path, ignore_errors=True)
            t0 = time.perf_counter()
            generate_dataset(fam, path, n, seed=r, client=clusters[w], block=n // 8)
            times.append(time.perf_counter() - t0)
            shutil.rmtree(path, ignore_errors=True)
        t1.append(times[0])
        t2.append(times[1])
    ratios = [a / b for a, b in zip(t1, t2)]
    s = float(np.median(ratios))
    return {"phase": "data", "kind": "measured", "split": "branch", "family": fam.name,
            "workers": 2, "instances": n, "block": n // 8, "t1_s": t1, "tn_s": t2,
            "paired_speedups": ratios, "speedup": s, "efficiency": s / 2,
            "load_at_start": loads}


def _grid_plan(spec, rec, net, ranks):
    """The case's own split at ``ranks`` ranks with the planner's figures for that grid."""
    from daskie.plan.operator_split import choose_split

    b, t = net._sizes()
    i, p = (1, 1) if ranks == 1 else spec["grid"](ranks)
    out = choose_split(rec["n_train"], rec["points"], ranks, 1e12, branch_layers=b,
                       trunk_layers=t, n_params=net.n_params())
    pick = next(c for c in out.candidates if (c["instances"], c["points"]) == (i, p))
    return type(out)(rec["split"], i, p, pick["rank_bytes"], pick["rank_madds"], out.reason)


def predicted(record, plan_of, net):
    """The model's rows for 2-64 workers from the case's measured one-worker time."""
    from daskie.plan.scaling import EMULATED_GIGABIT, LOOPBACK, allreduce_time

    t1 = float(np.median(record["t1_s"])) / record["steps"]
    one = plan_of(1).rank_madds
    rows = []
    for ranks in (2, 4, 8, 16, 32, 64):
        plan = plan_of(ranks)
        network = LOOPBACK if ranks == 2 else EMULATED_GIGABIT
        reduce_s = allreduce_time("gloo", ranks, 8.0 * (net.n_params() + 1), network)
        step = t1 * plan.rank_madds / one + reduce_s
        rows.append({"phase": "train", "kind": "predicted", "split": record["split"],
                     "family": record["family"], "workers": ranks,
                     "grid": [plan.instances, plan.points], "planner_split": plan.split,
                     "network": network.name, "step_s": step, "reduce_s": reduce_s,
                     "speedup": t1 / step, "efficiency": t1 / step / ranks,
                     "what": "T_1 x m(I,P)/m(1,1) + gloo all-reduce (daskie.plan.scaling)"})
    return rows


def model_only(split, directory, steps):
    """The model's rows from one rank's CPU seconds per step in this process (``client=
    "sync"``, one rank): a step's CPU time does not depend on the host's load, its wall time
    does (used where the cluster timings are swamped by other work)."""
    from daskie.operator import OperatorLoss, default_net, fit_operator, generate_dataset
    from daskie.problems.families import family
    from daskie.store.dataset import OperatorDataset
    from daskie.train import Adam

    spec = CASES[split]
    fam = family(spec["family"])
    n = spec["n_train"] + N_TEST
    path = os.path.join(directory, f"{split}-{fam.name}-{n}.zarr")
    generate_dataset(fam, path, n, seed=0, query=spec["query"], client="sync", block=32,
                     point_chunk=spec.get("point_chunk"))
    store = OperatorDataset.open(path)
    net = default_net(fam, len(store.sensors))
    kwargs = dict(loss=OperatorLoss(net, skip=True), train=(0, spec["n_train"]),
                  test=(spec["n_train"], n), client="sync",
                  strategy=_strategy(split, 1, 1))
    fit_operator(fam, path, optimizer=Adam(lr=3e-3, steps=1), **kwargs)  # data read, cached
    c0 = time.process_time()
    fit_operator(fam, path, optimizer=Adam(lr=3e-3, steps=steps), **kwargs)
    per_step = (time.process_time() - c0) / steps
    rec = {"split": split, "family": fam.name, "n_train": spec["n_train"],
           "points": len(store.query), "steps": 1, "t1_s": [per_step]}
    return rec, net


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from harness import embedded_cluster, write_records

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, help="Adam steps of every case (default: STEPS)")
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--no-data", action="store_true")
    ap.add_argument("--model-only", action="store_true",
                    help="only the model's rows, from one rank's CPU seconds per step")
    ap.add_argument("--data-n", type=int, default=256, help="instances of the data phase")
    ap.add_argument("--dir", default="/tmp/daskie-split")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "operator_split.json"))
    args = ap.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    records = []
    if args.model_only:
        for split in args.cases:
            rec, net = model_only(split, args.dir, args.steps or 20)
            spec = CASES[split]

            def plan_of(ranks, spec=spec, rec=rec, net=net):
                return _grid_plan(spec, rec, net, ranks)

            rows = predicted(rec, plan_of, net)
            for r in rows:
                r["t1_cpu_step_s"] = rec["t1_s"][0]
                r["what"] += "; T_1 = one rank's CPU seconds per step in process"
            records.extend(rows)
            print(rows, flush=True)
            write_records(args.out, records)
        return 0
    with embedded_cluster(1, 1) as c1, embedded_cluster(2, 1) as c2:
        clusters = {1: c1, 2: c2}
        if not args.no_data:
            records.append(data_scaling(args.dir, args.repeats, clusters, args.data_n))
            print(records[-1], flush=True)
            write_records(args.out, records)
        for split in args.cases:
            if WORKERS[split] == 4:
                with embedded_cluster(4, 1) as c4:
                    rec, plan, net = case(split, args.dir, args.steps or STEPS[split],
                                          args.repeats, {**clusters, 4: c4})
            else:
                rec, plan, net = case(split, args.dir, args.steps or STEPS[split],
                                      args.repeats, clusters)
            spec = CASES[split]
            records.append(rec)
            print({k: v for k, v in rec.items() if k != "net"}, flush=True)

            def plan_of(ranks, spec=spec, rec=rec, net=net):
                return _grid_plan(spec, rec, net, ranks)

            records.extend(predicted(rec, plan_of, net))
            write_records(args.out, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
