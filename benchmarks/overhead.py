"""Dask overhead per CEPTF window: scheduling, serialisation and store writes against the
window's own compute, at the default window size.

    python benchmarks/overhead.py --out overhead.json                 # ~2 min on 2 cores
    python benchmarks/overhead.py --orders joint --steps 100

``daskie.solve("E1", strategy=CEPTF(order=...), ...)`` runs on a LocalCluster (2 workers x 1
thread, 127.0.0.1) with a zarr store, with order reduction (3 sub-models in 2 groups, one
per worker) and Levenberg-Marquardt. For every window ``k`` after the first:

* ``wall_s``: the wall time between windows as the client sees it, the difference of the
  ``elapsed_s`` of consecutive joint records (``kind == "window"``);
* ``task_s``: the window's compute, its longest task's own time (the profiler's
  ``window_s``: from the start of the task to the end of its last step; the groups run in
  parallel, so the longest one is the critical path); ``steps_s``: that task's summed
  ``step_s``, the optimizer steps alone; ``sync_s``: the part of them spent in the
  collectives that exchange values and gradients between the groups every step
  (``order="joint"``; the gloo all-gathers are part of the training step, not Dask overhead);
* ``overhead_s = wall_s - task_s``: everything Dask and the client add: launching the window
  (scheduling, for ``order="joint"`` also forming the collective group), moving inputs and
  outputs (serialisation), gathering, the client's summary of the window and the store write
  (``store_s``, timed around ``RunStore.write_checkpoint``); ``overhead_pct`` is its share of
  ``task_s``. ``launch_s`` (previous window handled by the client -> first task starts) and
  ``return_s`` (last task ends -> window handled by the client) split it, from the
  profiler's ``t_start``/``t_end`` and the time of ``on_window``.

The first window also pays for starting the workers' objectives (discretization, torch
warm-up) and is reported apart; the figure of merit is the median over the others (target
<= 5 %). With ``order="joint"`` windows run one after another, so window 1's wall time also
holds the client's one-time work after window 0 (its first evaluation of the joint loss
builds the objective's constants, about 1.5 s here).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time


@contextlib.contextmanager
def timed_store_writes(log: list):
    """Append the seconds of every ``RunStore.write_checkpoint`` call (client side) to ``log``."""
    from daskie.store import RunStore

    original = RunStore.write_checkpoint

    def write_checkpoint(self, checkpoint, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(self, checkpoint, *args, **kwargs)
        finally:
            log.append((checkpoint.window, time.perf_counter() - t0))

    RunStore.write_checkpoint = write_checkpoint
    try:
        yield log
    finally:
        RunStore.write_checkpoint = original


def window_rows(records, done_at: dict, store: dict) -> list[dict]:
    """One row per window from a run's history (see the module docstring)."""
    joint = {int(r["window"]): r for r in records if r.get("kind") == "window"}
    rows = []
    for k in sorted(joint):
        tasks = [r for r in records if r.get("window") == k and r.get("group", -1) >= 0]
        profiled = [r for r in tasks if "window_s" in r]
        if not profiled:
            continue
        longest = max(profiled, key=lambda r: r["window_s"])
        steps = sum(r["step_s"] for r in tasks if "step_s" in r
                    and r.get("group") == longest.get("group") and r.get("rank") == longest.get("rank"))
        row = {"window": k, "tasks": len(profiled), "task_s": float(longest["window_s"]),
               "steps_s": float(steps), "sync_s": float(longest.get("sync_s", 0.0)),
               "store_s": store.get(k, float("nan")), "elapsed_s": float(joint[k]["elapsed_s"])}
        if k - 1 in joint:
            row["wall_s"] = row["elapsed_s"] - float(joint[k - 1]["elapsed_s"])
            row["overhead_s"] = row["wall_s"] - row["task_s"]
            row["overhead_pct"] = 100.0 * row["overhead_s"] / row["task_s"]
            if k - 1 in done_at and k in done_at:
                row["launch_s"] = min(r["t_start"] for r in profiled) - done_at[k - 1]
                row["return_s"] = done_at[k] - max(r["t_end"] for r in profiled)
        rows.append(row)
    return rows


def run(order: str, steps: int, window: int | None, points: int, hidden, client, workers: int):
    """One solve; returns its summary record and per-window rows."""
    import daskie
    from daskie import CEPTF, MLP, BlockCoordinate, LevenbergMarquardt, OrderReduction
    from daskie.store import records_from_dataset

    formulation = OrderReduction(net=MLP(hidden=tuple(hidden)), points=points, aux_points=2 * points)
    if order == "joint":
        strategy = CEPTF() if window is None else CEPTF(window=window)
    else:
        strategy = BlockCoordinate(order=order) if window is None else \
            BlockCoordinate(window=window, order=order)
    optimizer = LevenbergMarquardt(steps=steps, scaling="levenberg")
    done_at, store_log = {}, []
    with tempfile.TemporaryDirectory() as tmp, timed_store_writes(store_log):
        t0 = time.perf_counter()
        ds = daskie.solve("E1", formulation=formulation, strategy=strategy, optimizer=optimizer,
                          client=client, workers=workers, store=os.path.join(tmp, "run.zarr"),
                          on_window=lambda k, summary: done_at.__setitem__(k, time.time()))
        total = time.perf_counter() - t0
    rows = window_rows(records_from_dataset(ds), done_at, dict(store_log))
    later = [r for r in rows if "overhead_pct" in r]
    med = (lambda key: statistics.median(r[key] for r in later)) if later else (lambda key: float("nan"))
    rec = {"benchmark": "overhead", "problem": "E1", "formulation": "order_reduction",
           "strategy": f"ceptf-{order}", "optimizer": "lm", "window": strategy.window,
           "steps": steps, "points": points, "hidden": list(hidden), "workers": workers,
           "windows": len(rows), "mse": float(ds.attrs["mse"]), "wall_s": float(ds.attrs["wall_s"]),
           "solve_s": total,
           "overhead_pct_median": med("overhead_pct"), "overhead_s_median": med("overhead_s"),
           "task_s_median": med("task_s"), "wall_s_median": med("wall_s"),
           "store_s_median": med("store_s"), "sync_s_median": med("sync_s"), "launch_s_median": med("launch_s") if all(
               "launch_s" in r for r in later) else float("nan"),
           "return_s_median": med("return_s") if all("return_s" in r for r in later) else float("nan"),
           "overhead_target_pct": 5.0,
           "first_window": rows[0] if rows else None, "per_window": rows}
    return rec


def _plain(value):
    """JSON-safe copy: NaN (a figure that could not be measured) becomes null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def main(argv=None) -> int:
    """Run the benchmark; print a table; write JSON records with ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", nargs="+", default=["joint", "jacobi"],
                   choices=["joint", "jacobi", "gauss-seidel"])
    p.add_argument("--steps", type=int, default=250, help="LM steps (window: CEPTF's default)")
    p.add_argument("--window", type=int, help="steps per window (default: CEPTF's default)")
    p.add_argument("--points", type=int, default=256, help="collocation points (aux: twice)")
    p.add_argument("--hidden", type=int, nargs="+", default=[16, 16])
    p.add_argument("--out", help="JSON file for the records")
    args = p.parse_args(argv)

    from daskie.cluster import local_cluster  # keeps torch at in-process speed on its workers

    records = []
    with local_cluster(2) as client:
        for order in args.orders:
            rec = run(order, args.steps, args.window, args.points, args.hidden, client, 2)
            records.append(rec)
            print(f"\nCEPTF(order={order!r}, window={rec['window']}): {rec['windows']} windows, "
                  f"MSE {rec['mse']:.2e}, wall {rec['wall_s']:.1f} s")
            print(f"{'window':>6} {'wall s':>8} {'task s':>8} {'steps s':>8} {'sync s':>8} "
                  f"{'overhead s':>10} {'%':>6} {'launch s':>8} {'return s':>8} {'store s':>8}")
            for r in rec["per_window"]:
                print(f"{r['window']:>6} {r.get('wall_s', float('nan')):>8.3f} {r['task_s']:>8.3f} "
                      f"{r['steps_s']:>8.3f} {r['sync_s']:>8.3f} "
                      f"{r.get('overhead_s', float('nan')):>10.3f} "
                      f"{r.get('overhead_pct', float('nan')):>6.2f} "
                      f"{r.get('launch_s', float('nan')):>8.3f} {r.get('return_s', float('nan')):>8.3f} "
                      f"{r['store_s']:>8.3f}")
            print(f"median overhead (windows 1..): {rec['overhead_pct_median']:.2f} % "
                  f"({rec['overhead_s_median']:.3f} s of {rec['task_s_median']:.3f} s compute; "
                  f"target <= 5 %)")
    if args.out:
        from harness import write_records

        write_records(args.out, _plain(records))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
