"""The same call gives the same numbers at any machine load (issue 26).

Solves one equation twice with the default settings -- once as the machine is, once with CPU-
bound processes competing for every core -- and checks that the answers are bitwise equal
(``np.array_equal`` on mu) and stopped at the same step for the same reason. With the old
wall-clock budget (``Stopping(max_wall_s=80)``) the busy run stopped earlier.

Run::

    python benchmarks/load_independence.py --problem E1 --out benchmarks/results/load_independence.json

Records: ``problem``, ``load`` ("as is" | "busy"), ``load_avg``, ``epochs``, ``stopped_by``,
``error_estimate``, ``wall_s``, and on the busy row ``identical`` (bitwise equal mu).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np


def _burn(stop_at: float) -> None:
    while time.time() < stop_at:
        sum(i * i for i in range(10_000))


def _solve(problem: str):
    import daskie

    t0 = time.perf_counter()
    ds = daskie.solve(problem, client="sync")
    return ds, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="E1")
    ap.add_argument("--burners", type=int, default=os.cpu_count() or 2,
                    help="CPU-bound processes during the busy run (default: one per core)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    records = []
    quiet, wall = _solve(args.problem)
    records.append({"problem": args.problem, "load": "as is", "load_avg": os.getloadavg()[0],
                    "epochs": int(quiet.attrs["epochs"]), "stopped_by": quiet.attrs["stopped_by"],
                    "error_estimate": float(quiet.attrs["error_estimate"]), "wall_s": wall})
    ctx = mp.get_context("spawn")
    burners = [ctx.Process(target=_burn, args=(time.time() + 3600,), daemon=True)
               for _ in range(args.burners)]
    for p in burners:
        p.start()
    try:
        busy, wall = _solve(args.problem)
        load = os.getloadavg()[0]
    finally:
        for p in burners:
            p.terminate()
    same = bool(np.array_equal(quiet.mu.values, busy.mu.values, equal_nan=True))
    records.append({"problem": args.problem, "load": "busy", "load_avg": load,
                    "epochs": int(busy.attrs["epochs"]), "stopped_by": busy.attrs["stopped_by"],
                    "error_estimate": float(busy.attrs["error_estimate"]), "wall_s": wall,
                    "identical": same})
    print(f"{'load':<6} {'load avg':>8} {'epochs':>6} {'stopped_by':>10} {'estimate':>9} {'wall s':>7}")
    for r in records:
        print(f"{r['load']:<6} {r['load_avg']:>8.2f} {r['epochs']:>6} {r['stopped_by']:>10} "
              f"{r['error_estimate']:>9.2e} {r['wall_s']:>7.1f}")
    print(f"mu bitwise identical: {same}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(records, fh, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
