"""The paper's own method at its defaults: CEPTF with order reduction on E1-E4 (issue 26, item 5).

Each row runs the user's command, exactly as typed::

    daskie solve EK --strategy ceptf --formulation order-reduction --json

(no other flag: the formulation's, the strategy's and the optimizer's defaults) in a process
of its own, and compares the MSE with seed 000's Table 6 (CEPTF column). Run::

    python benchmarks/ceptf_paper.py --out benchmarks/results/ceptf_paper.json
    python benchmarks/ceptf_paper.py --problems E1 --out F   # one row; F keeps its others
    python benchmarks/ceptf_paper.py --jobs 4 --out F        # the rows side by side

Records (a list of dicts, with :func:`harness.machine`'s fields): ``problem``, ``strategy``,
``formulation``, ``mse``, ``paper_mse``, ``rel_l2``, ``error_estimate``, ``tol``, ``steps``,
``wall_s`` (the solve's own wall time, from its summary), ``command_s`` (the whole command:
interpreter, cluster start, reference and estimator setup, training), ``stopped_by``,
``warned`` (a :class:`~daskie.errors.ToleranceWarning` was raised), ``warnings``, ``meets_paper``
(``mse <= paper_mse``), ``n_params``, and ``load`` (the 1-minute load average before and after
the row: on the shared 2-core machine the wall times scale with it) and ``jobs`` (rows run side by
side with it). An existing ``--out`` file keeps its records of the problems not run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: Seed 000, Table 6 (and Table 10): CEPTF's MSE on Eqs 5.1, 5.3, 5.5 and 5.7.
PAPER = {"E1": 2.96e-9, "E2": 1.27e-7, "E3": 9.21e-9, "E4": 1.02e-8}


def command(problem: str) -> list[str]:
    """The command line of one row: the user's command with no flag beyond the choice of
    strategy and formulation (``--json`` for the summary)."""
    return ["daskie", "solve", problem, "--strategy", "ceptf", "--formulation", "order-reduction",
            "--json"]


def run_row(problem: str) -> dict:
    """Run one problem's command and return its record."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(command(problem), capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command(problem))} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-400:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    warnings = summary.get("warnings") or []
    # the summary lists the ToleranceWarning's message exactly when the solve raised it
    warned = bool(warnings) or "ToleranceWarning" in proc.stderr
    mse = summary["mse"]
    return {"problem": problem, "strategy": summary["strategy"],
            "formulation": summary["formulation"], "optimizer": summary["optimizer"],
            "mse": mse, "paper_mse": PAPER[problem], "meets_paper": bool(mse <= PAPER[problem]),
            "rel_l2": summary["rel_l2"], "error_estimate": summary["error_estimate"],
            "tol": summary["tol"], "converged": summary["converged"], "steps": summary["epochs"],
            "wall_s": summary["wall_s"], "command_s": round(elapsed, 1),
            "stopped_by": summary["stopped_by"], "warned": bool(warned), "warnings": warnings,
            "n_params": summary["n_params"], "seed": summary["seed"],
            "command": " ".join(command(problem)), "load": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def _write(path, records) -> None:
    """Write ``records`` to ``path``, keeping the records there of the problems not among them."""
    from harness import write_records

    done = {r["problem"] for r in records}
    kept = []
    if os.path.exists(path):
        with open(path) as fh:
            kept = [r for r in json.load(fh) if r.get("problem") not in done]
    write_records(path, sorted(kept + records, key=lambda r: r["problem"]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", nargs="+", default=list(PAPER), choices=list(PAPER))
    ap.add_argument("--jobs", type=int, default=1, help="rows run side by side (default 1)")
    ap.add_argument("--out", help="write the records as JSON here")
    args = ap.parse_args(argv)
    from concurrent.futures import ThreadPoolExecutor, as_completed

    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    print(f"{'problem':<8} {'MSE':>9} {'paper':>9} {'ratio':>6} {'rel L2':>9} {'estimate':>9} "
          f"{'stopped_by':>10} {'steps':>5} {'wall s':>7} {'cmd s':>7} {'load':>11} warned",
          flush=True)
    records = []
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:  # each row is its own process
        futures = {pool.submit(run_row, name): name for name in args.problems}
        for future in as_completed(futures):  # each row printed and written as it ends
            rec = {**future.result(), "jobs": args.jobs}
            records.append(rec)
            print(f"{rec['problem']:<8} {rec['mse']:>9.2e} {rec['paper_mse']:>9.2e} "
                  f"{rec['mse'] / rec['paper_mse']:>6.2f} {rec['rel_l2']:>9.2e} "
                  f"{rec['error_estimate']:>9.2e} {rec['stopped_by']:>10} {rec['steps']:>5} "
                  f"{rec['wall_s']:>7.1f} {rec['command_s']:>7.1f} "
                  f"{rec['load'][0]:>5.1f}-{rec['load'][1]:<5.1f} {rec['warned']}", flush=True)
            if args.out:
                _write(args.out, records)
    return 0 if all(r["meets_paper"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
