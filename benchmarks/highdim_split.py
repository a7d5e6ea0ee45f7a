"""The split of one daskie solve at d = 10 over 2 workers against 1 worker (issue 30): paired
runs, medians of the pairs.

    python benchmarks/highdim_split.py --problem hd-bumps-mixed-d10 --steps 8 --pairs 3 \\
        --out benchmarks/results/highdim_nonsep/split_d10.json

Each pair is ``benchmarks/highdim.py --methods daskie --workers 1`` then ``--workers 2`` (the
same solve as ``DataParallel(shards=W)`` on a LocalCluster of W one-thread workers, a fixed
number of LM steps, the cluster started before the clock), run back to back so that both see
the same load; the order alternates from pair to pair. Per pair ``S_i = T1_i / T2_i``; the
record holds every run, the median of the S_i, ``S / N`` (N = 2) and the load before and after
each run. T is the wall of ``daskie.solve`` (the client's discretization, the workers' shard
discretizations, the LM steps and the summary), so serial parts count against S.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def one(problem, workers, args, tmp):
    family, d = problem.rsplit("-d", 1)
    out = os.path.join(tmp, f"w{workers}_{time.time_ns()}.json")
    cmd = [sys.executable, os.path.join(HERE, "highdim.py"), "--dims", d, "--families", family,
           "--methods", "daskie", "--steps", str(args.steps), "--workers", str(workers),
           "--skip-speedup", "--out", out]
    if args.local_level is not None:
        cmd += ["--local-level", str(args.local_level)]
    if args.level is not None:
        cmd += ["--level", str(args.level)]
    load0 = os.getloadavg()[0]
    subprocess.run(cmd, check=True)
    rec = next(r for r in json.load(open(out)) if r.get("formulation") == "quadrature")
    rec["load_before"], rec["load_after"] = load0, os.getloadavg()[0]
    print(f"  workers={workers}: {rec['wall_s']:.1f} s, rel L2 {rec['rel_l2']:.2e}, "
          f"load {load0:.1f} -> {rec['load_after']:.1f}", flush=True)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="hd-bumps-mixed-d10")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--level", type=int, default=None)
    ap.add_argument("--local-level", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    runs, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            order = (1, 2) if i % 2 == 0 else (2, 1)
            pair = {w: one(args.problem, w, args, tmp) for w in order}
            ratios.append(pair[1]["wall_s"] / pair[2]["wall_s"])
            runs.extend(pair.values())
            print(f"pair {i}: S = {ratios[-1]:.2f}", flush=True)
            with open(args.out, "w") as fh:  # kept after every pair
                s = statistics.median(ratios)
                json.dump({"problem": args.problem, "steps": args.steps, "pairs": len(ratios),
                           "S_pairs": ratios, "S": s, "S_over_N": s / 2,
                           "T1_median_s": statistics.median(r["wall_s"] for r in runs
                                                            if r["workers"] == 1),
                           "T2_median_s": statistics.median(r["wall_s"] for r in runs
                                                            if r["workers"] == 2),
                           "runs": runs}, fh, indent=1)
                fh.write("\n")
    print(f"S = {statistics.median(ratios):.2f}, S/N = {statistics.median(ratios) / 2:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
