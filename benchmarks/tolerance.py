"""Does ``solve(tol=...)`` deliver what it says? One row per equation and tolerance.

For every equation (the catalog, the validation set of ``benchmarks/validation_set.py`` and
the ``hd-*`` families at d = 4, 6, 8) the default ``daskie.solve`` runs at the default tol and
at a tighter one, and each row compares what the solve *said* (``error_estimate``, warned or
not, ``stopped_by``) with the truth: the relative L2 error against the exact solution on a
regular grid that includes the ends and faces (201 points in 1-D, 65^2 in 2-D, 17^3 in 3-D,
5^d beyond: the grid ``solve`` returns).

Targets (issue 26): zero silent misses (true error > tol and no warning); false alarms (a
warning on an answer within tol) on at most 1 row in 20; the estimate within a factor 10 of the
true error on at least 90 % of rows and never below it by more than that; the median wall at
the default tol under 20 s for d <= 3.

Run::

    python benchmarks/tolerance.py --out benchmarks/results/tolerance.json
    python benchmarks/tolerance.py --set catalog --tighter 10 --out F    # a part of it

Records (a list of dicts): ``problem``, ``dim``, ``tol``, ``rel_l2`` (true), ``error_estimate``,
``warned``, ``converged``, ``stopped_by``, ``steps``, ``wall_s``, with ``set``, ``ratio``
(estimate / true), ``silent_miss``, ``false_alarm``, ``load`` (the 1-minute load average at
the start and end of the row) beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time
import warnings

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

HD = [f"{family}-d{d}" for d in (4, 6, 8) for family in ("hd-fredholm", "hd-volterra", "hd-mixed")]


def problems(which: str):
    """``[(set name, problem name, builder)]`` of the chosen set(s)."""
    from daskie.problems import catalog

    out = []
    if which in ("all", "catalog"):
        out += [("catalog", n, lambda n=n: catalog.get(n)) for n in catalog.names()]
    if which in ("all", "validation"):
        import validation_set

        out += [("validation", n, lambda n=n: validation_set.get(n)) for n in validation_set.names()]
    if which in ("all", "highdim"):
        out += [("highdim", n, lambda n=n: catalog.get(n)) for n in HD]
    return out


def run_row(set_name, name, build, tol, threads="auto") -> dict:
    import daskie

    problem = build()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = daskie.solve(problem, client="sync", tol=tol, threads=threads)
    wall = time.perf_counter() - t0
    warned = any(issubclass(w.category, daskie.ToleranceWarning) for w in caught)
    a = ds.attrs
    # the true error over the whole domain: the summary's rel_l2_domain (a rule graded to
    # every face in d <= 3, 2^14 Sobol points of its own beyond); the trapezoidal rule on the
    # returned grid beside it
    rel = float(a["rel_l2_domain"])
    est = float(a["error_estimate"])
    rec = {"set": set_name, "problem": name, "dim": problem.dim, "tol": tol, "rel_l2": rel,
           "rel_l2_grid": _true_error(ds), "rel_l2_test_points": float(a["rel_l2"]),
           "error_estimate": est, "warned": warned, "converged": bool(a["converged"]),
           "stopped_by": a["stopped_by"], "steps": int(a["epochs"]), "wall_s": wall,
           "ratio": est / rel if rel > 0 else math.inf,
           "silent_miss": bool(rel > tol and not warned),
           "false_alarm": bool(warned and rel <= tol),
           "load": [load0, os.getloadavg()[0]], "threads": threads}
    return rec


def _true_error(ds) -> float:
    """The true relative L2 error of the answer in ``ds``: the trapezoidal rule on its regular
    grid, ends and faces included (201 points in 1-D, 65^2, 17^3, 5^d beyond; the points of a
    masked domain's hole, NaN, left out). A plain RMS over the grid would weigh the faces
    twice as much as the L2 norm does."""
    err, ex = ds["error"].values, ds["exact"].values
    w = np.ones(err.shape)
    for axis, name in enumerate(ds["error"].dims):
        x = ds[name].values
        wx = np.gradient(x) if len(x) > 2 else np.full(len(x), (x[-1] - x[0]) / 2)
        wx[0], wx[-1] = (x[1] - x[0]) / 2, (x[-1] - x[-2]) / 2
        shape = [1] * err.ndim
        shape[axis] = len(x)
        w = w * wx.reshape(shape)
    inside = np.isfinite(err) & np.isfinite(ex)
    return float(np.sqrt(np.sum(w[inside] * err[inside] ** 2) / np.sum(w[inside] * ex[inside] ** 2)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=["all", "catalog", "validation", "highdim"], default="all")
    ap.add_argument("--problems", nargs="+", help="only these problem names")
    ap.add_argument("--tighter", type=float, default=10.0,
                    help="the second row of each equation runs at tol / this (0: none)")
    ap.add_argument("--tol", type=float, default=None, help="default tol (setting daskie.tol)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of each solve (default: solve's own, every core)")
    ap.add_argument("--out", help="write the records as JSON here")
    args = ap.parse_args(argv)
    from daskie import config

    tol = args.tol or config.get("tol")
    tols = [tol] + ([tol / args.tighter] if args.tighter else [])
    rows = [r for r in problems(args.set) if not args.problems or r[1] in args.problems]
    head = (f"{'problem':<22} {'d':>2} {'tol':>7} {'true':>9} {'estimate':>9} {'ratio':>6} "
            f"{'warned':>6} {'stopped_by':>10} {'steps':>5} {'wall s':>7}  verdict")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    print(head, flush=True)
    records = []
    for set_name, name, build in rows:
        for t in tols:
            try:
                rec = run_row(set_name, name, build, t, args.threads or "auto")
            except Exception as exc:  # a row that fails is a row, not the end of the table
                rec = {"set": set_name, "problem": name, "tol": t, "error": f"{type(exc).__name__}: {exc}"}
                print(f"{name:<22} failed: {rec['error'][:120]}", flush=True)
                records.append(rec)
                continue
            verdict = ("SILENT MISS" if rec["silent_miss"] else "false alarm" if rec["false_alarm"]
                       else "ok")
            print(f"{name:<22} {rec['dim']:>2} {t:>7.0e} {rec['rel_l2']:>9.2e} "
                  f"{rec['error_estimate']:>9.2e} {rec['ratio']:>6.2f} {str(rec['warned']):>6} "
                  f"{rec['stopped_by']:>10} {rec['steps']:>5} {rec['wall_s']:>7.1f}  {verdict}",
                  flush=True)
            records.append(rec)
            if args.out:
                pathlib.Path(args.out).write_text(json.dumps(records, indent=1))
    done = [r for r in records if "error" not in r]
    if done:
        within = [r for r in done if 0.1 <= r["ratio"] <= 10]
        low = [r for r in done if r["ratio"] < 0.1]
        walls = [r["wall_s"] for r in done if r["dim"] <= 3 and r["tol"] == tols[0]]
        print(f"\nrows {len(done)}  silent misses {sum(r['silent_miss'] for r in done)}  "
              f"false alarms {sum(r['false_alarm'] for r in done)}  estimate within 10x "
              f"{len(within)}/{len(done)}  below by > 10x {len(low)}  median wall (d <= 3, "
              f"default tol) {np.median(walls) if walls else float('nan'):.1f} s  "
              f"load at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
