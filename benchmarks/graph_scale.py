"""Graph scale: the CEPTF window graph of a simulated 64-group plan, built and accepted by a
real Dask scheduler, without training.

    python benchmarks/graph_scale.py --out graph_scale.json          # 64 groups x 1000 windows
    python benchmarks/graph_scale.py --groups 16 --windows 100 --repeats 1

The plan comes from the real planner (``make_plan(disc, workers=64, gpus=8)``) applied to a
synthetic discretization of 64 sub-models whose problem has 63 Fredholm terms (C_eff = 63, so
N_sub = 64); the 8 heaviest groups are tagged GPU. The "ceptf" graph is the one
``daskie.runtime.window_graph.build`` makes for ``BlockCoordinate(window=1, order="jacobi")`` (keys
``window-<k:05d>-g<g>-<token>``; window k of group g reads its own and every other group's
window k-1 output; the Plan's resource tag on every window task), started from a resume
point so that nothing can run: no training. ``build`` is linear in the number of tasks (one
HighLevelGraph layer per group). ``--builder-windows`` also times shorter chains.

The graph goes to a LocalCluster(2 workers x 1 thread, 127.0.0.1) whose workers declare no
resources, so the scheduler accepts every task and none runs (they wait for a GPU/CPU
worker); the run measures the time from ``client.compute`` until the scheduler holds every
window task, checks the tags there, and cancels. A second, "barrier" variant lets each window
read one gather task of the previous window instead of all 64 outputs (2 G edges per window
instead of G^2) to show what the edges cost. Timings are medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def _trivial(*args):
    """Stands in for a training window (never runs here: no worker has the resources)."""
    return None


def simulated_plan(groups: int, gpus: int):
    """The real planner on a synthetic discretization with ``groups`` sub-models and
    ``C_eff = groups - 1`` (so ``N_sub = groups``); returns ``(plan, seconds)``."""
    from daskie.formulations import Discretization, Evaluation, SubModel
    from daskie.nn.mlp import MLP
    from daskie.plan import make_plan
    from daskie.problems import Domain, IntegralTerm, Problem

    def kernel(x, t):
        return np.ones(np.broadcast_shapes(x.shape, t.shape)[:-1])

    problem = Problem(domain=Domain((0.0,), (1.0,)), f=lambda x: x[..., 0],
                      terms=tuple(IntegralTerm(kernel, lam=0.01) for _ in range(groups - 1)),
                      name=f"simulated-{groups}")
    net = MLP(hidden=(20, 20, 20))
    rng = np.random.default_rng(0)
    sizes = rng.integers(256, 4096, size=groups)  # unequal sub-models: the GPUs get the big ones
    names = [f"s{k:03d}" for k in range(groups)]
    submodels = {n: SubModel(n, 1, net) for n in names}
    evaluations = {f"{n}@": Evaluation(n, np.zeros((int(p), 1))) for n, p in zip(names, sizes)}
    blocks = {f"own{n}": (f"{n}@",) for n in names}
    blocks.update({f"{a}~{b}": (f"{a}@", f"{b}@") for a, b in zip(names[:-1], names[1:])})
    disc = Discretization(problem=problem, submodels=submodels, evaluations=evaluations,
                          residual_fn=lambda values: {}, solution=names[0],
                          test_points=np.zeros((1, 1)), test_exact=None,
                          block_evaluations=blocks, info={"formulation": "synthetic"})
    t0 = time.perf_counter()
    plan = make_plan(disc, workers=groups, gpus=gpus)
    return plan, time.perf_counter() - t0


def build_window_graph(plan, windows: int, token: str, barrier: bool = False):
    """The CEPTF (Jacobi) window graph of ``plan``: one HighLevelGraph layer per group, built
    under that group's resource annotation. Returns the final window's Delayed objects."""
    import dask
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    G = len(plan.groups)
    ctx = f"context-{token}"
    layers = {"context": MaterializedLayer({ctx: token}),
              "init": MaterializedLayer({f"init-g{g}-{token}": (_trivial, ctx, g) for g in range(G)})}
    deps = {"context": set(), "init": {"context"}}
    per_group = [{} for _ in range(G)]
    gathers = {}
    prev = [f"init-g{g}-{token}" for g in range(G)]
    for k in range(windows):
        cur = [f"window-{k:05d}-g{g}-{token}" for g in range(G)]
        if barrier:
            gather = f"gather-{k:05d}-{token}"
            gathers[gather] = (_trivial, *prev)
            for g in range(G):
                per_group[g][cur[g]] = (_trivial, ctx, k, g, prev[g], gather)
        else:
            for g in range(G):
                per_group[g][cur[g]] = (_trivial, ctx, k, g, prev[g],
                                        *[prev[h] for h in range(G) if h != g])
        prev = cur
    names = [f"windows-g{g}-{token}" for g in range(G)]
    for g, placement in enumerate(plan.groups):
        with dask.annotate(resources={placement.resource: 1}):
            layers[names[g]] = MaterializedLayer(per_group[g])
        deps[names[g]] = {"context", "init"} | set(names) - {names[g]}
    if barrier:
        layers["gather"] = MaterializedLayer(gathers)
        deps["gather"] = set(deps) - {"gather"}
        for g in range(G):
            deps[names[g]].add("gather")
    hlg = HighLevelGraph(layers, {k: set(v) for k, v in deps.items()})
    return [Delayed(key, hlg, layer=names[g]) for g, key in enumerate(prev)]


def _window_tasks(token):
    def count(dask_scheduler):
        return sum(1 for k in dask_scheduler.tasks if isinstance(k, str) and k.startswith("window-")
                   and k.endswith(token))
    return count


def submit_and_cancel(client, collection, expected: int, token: str):
    """Submit, wait until the scheduler holds ``expected`` window tasks, look at them, cancel.

    Returns ``(submit_s, accept_s, info)``: ``client.compute`` returning, the scheduler holding
    every window task, and what the scheduler says about them.
    """
    count = _window_tasks(token)
    t0 = time.perf_counter()
    futures = client.compute(collection, optimize_graph=False)  # the graph is minimal already
    submit = time.perf_counter() - t0
    while client.run_on_scheduler(count) < expected:
        time.sleep(0.02)
    accept = time.perf_counter() - t0

    def inspect(dask_scheduler):
        states, tags = {}, {}
        for k, ts in dask_scheduler.tasks.items():
            if isinstance(k, str) and k.startswith("window-") and k.endswith(token):
                states[ts.state] = states.get(ts.state, 0) + 1
                tag = ",".join(sorted(ts.resource_restrictions or {})) or "none"
                tags[tag] = tags.get(tag, 0) + 1
        return {"states": states, "resource_tags": tags, "scheduler_tasks": len(dask_scheduler.tasks)}

    info = client.run_on_scheduler(inspect)
    client.cancel(futures)
    del futures
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
        time.sleep(0.05)
    return submit, accept, info


def builder_graph(plan, windows: int, token: str = "builder-scale"):
    """``daskie.runtime.window_graph.build`` for ``windows`` CEPTF (Jacobi) windows of ``plan``:
    ``(final window's Delayed objects, seconds)``."""
    import torch

    from daskie.runtime import window_graph as builder
    from daskie.runtime.context import RunContext, WindowOutput
    from daskie.strategies import BlockCoordinate
    from daskie.train.loop import TrainState

    ctx = RunContext(problem=None, formulation=None, optimizer=None, seed=0, target_loss=0.0,
                     threads=1, token=token)
    groups = tuple(g.submodels for g in plan.groups)
    start = [WindowOutput(g, TrainState(theta=torch.zeros(1)), {}) for g in range(len(groups))]
    t0 = time.perf_counter()
    graph = builder.build(BlockCoordinate(window=1, order="jacobi"), ctx, groups, plan, total_steps=windows,
                          available={"CPU", "GPU"}, resume=(-1, start))
    return graph.windows[-1], time.perf_counter() - t0


def time_builder(plan, windows: int) -> float:
    """Seconds ``daskie.runtime.window_graph.build`` takes for ``windows`` CEPTF (Jacobi) windows."""
    return builder_graph(plan, windows)[1]


def main(argv=None) -> int:
    """Run the benchmark; print a table; write JSON records with ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=64)
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--windows", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--builder-windows", type=int, nargs="*", default=[10, 100],
                   help="chain lengths at which to time daskie.runtime.window_graph.build")
    p.add_argument("--out", help="JSON file for the records")
    args = p.parse_args(argv)

    from distributed import Client, LocalCluster

    from daskie.runtime.context import run_token

    plan, plan_s = simulated_plan(args.groups, args.gpus)
    token = run_token("graph-scale", plan.to_json(), args.windows)
    G, W = len(plan.groups), args.windows
    gpu_groups = [g.index for g in plan.groups if g.resource == "GPU"]
    print(f"plan: {G} groups ({len(gpu_groups)} GPU) in {plan_s:.3f} s; "
          f"graph: {W} windows = {G * W} window tasks")

    records = []
    builder_s = {w: time_builder(plan, w) for w in args.builder_windows}
    for w, s in builder_s.items():
        print(f"daskie.runtime.window_graph.build, {G} groups x {w} windows: {s:.2f} s")
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        for variant in ("ceptf", "barrier"):
            builds, submits, accepts, info = [], [], [], None
            for _ in range(args.repeats):
                if variant == "ceptf":
                    collection, seconds = builder_graph(plan, W, token)
                else:
                    t0 = time.perf_counter()
                    collection = build_window_graph(plan, W, token, barrier=True)
                    seconds = time.perf_counter() - t0
                builds.append(seconds)
                submit, accept, info = submit_and_cancel(client, collection, G * W, token)
                submits.append(submit)
                accepts.append(accept)
                del collection
            # task -> input edges: each window reads the context and its inputs; each init
            # task the context; each gather task the G outputs of its window
            edges = W * G * (1 + G) if variant == "ceptf" else G + W * G * 3 + W * G
            rec = {"benchmark": "graph_scale", "variant": variant, "groups": G,
                   "gpu_groups": len(gpu_groups), "windows": W, "window_tasks": G * W,
                   "edges": edges, "plan_s": plan_s,
                   "build_s": statistics.median(builds), "build_s_all": builds,
                   "build_target_s": 5.0, "submit_s": statistics.median(submits),
                   "accept_s": statistics.median(accepts), "accept_s_all": accepts,
                   "accepted": info["resource_tags"].get("GPU", 0) + info["resource_tags"].get("CPU", 0)
                   == G * W,
                   "scheduler_states": info["states"], "resource_tags": info["resource_tags"],
                   "repeats": args.repeats,
                   "builder_build_s": {str(w): s for w, s in builder_s.items()},
                   "workers": 2, "python": sys.version.split()[0]}
            records.append(rec)

    head = f"{'variant':<8} {'tasks':>7} {'edges':>9} {'build s':>8} {'submit s':>9} {'accept s':>9}  tags"
    print(head)
    for r in records:
        print(f"{r['variant']:<8} {r['window_tasks']:>7} {r['edges']:>9} {r['build_s']:>8.3f} "
              f"{r['submit_s']:>9.2f} {r['accept_s']:>9.2f}  {r['resource_tags']}")
    if args.out:
        from harness import write_records

        write_records(args.out, records)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
