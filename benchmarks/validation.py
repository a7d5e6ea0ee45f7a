"""Validation: the default neural solve beside the Nystrom reference on published equations.

For every equation of ``benchmarks/validation_set.py`` (and, with ``--catalog``, the catalog),
one solve with the defaults, then the checks of :mod:`daskie.assess`: MSE on the interior
Sobol test points and on boundary points, the reference's MSE, the neural-vs-reference
discrepancy, what stopped training and the warnings raised. Prints a table and writes one
JSON record per equation (``--out``) with the keys of ``daskie solve --json``.

    python benchmarks/validation.py --out validation.json            # the validation set
    python benchmarks/validation.py --catalog --out catalog.json     # the catalog too
    python benchmarks/validation.py --problems v-green v-riccati     # a few

``--engine core`` (default) runs the numerical core in this process, step by step as
``daskie.solve`` does (reference, floor and refinement, warm start, training with
convergence-based stopping and restarts, assessment); ``--engine solve`` calls
``daskie.solve`` itself (``--client sync`` or an embedded 2-worker cluster).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validation_set  # noqa: E402

#: Wall-time budget of one solve (issue 15: each within 2 min); training gets what the
#: reference, the floor and the warm start leave, minus a margin for the assessment.
SOLVE_BUDGET_S = 120.0


def machine() -> dict:
    """Load, threads, cores, date and version: the conditions a record was measured under."""
    import daskie

    return {"loadavg": list(os.getloadavg()), "torch_threads": torch.get_num_threads(),
            "host_cores": os.cpu_count(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "daskie_version": daskie.__version__}


def core_solve(problem, *, seed: int = 0, init: str = "auto", restarts: int = 1,
               target_loss: float = 1e-14, formulation=None, optimizer=None,
               budget_s: float = SOLVE_BUDGET_S) -> dict:
    """The default solve in the numerical core, in the order ``daskie.solve`` runs its steps.

    Returns the summary keys of ``daskie solve --json`` (and a few more).
    """
    from daskie import assess
    from daskie.formulations import QuadratureCollocation
    from daskie.train import LevenbergMarquardt, Objective
    from daskie.train.restarts import train_restarts, with_floor, with_time

    t0 = time.perf_counter()
    formulation = QuadratureCollocation() if formulation is None else formulation
    optimizer = LevenbergMarquardt(steps="auto") if optimizer is None else optimizer
    # 1. the reference, where it fits
    t_ref = time.perf_counter()
    reference = assess.reference_solution(problem) if assess.reference_fits(problem) else None
    ref_wall = time.perf_counter() - t_ref
    # 2. the discretization floor of the reference (refining the rule while it is high)
    floor, note = None, ""
    if reference is not None:
        formulation, disc, floor, note = assess.refine_for_floor(
            formulation, problem, reference, target_loss=target_loss, seed=seed)
    else:
        disc = formulation.discretize(problem, seed=seed)
    objective = Objective(disc)
    # 3. training: warm start, convergence-based stopping, restarts, within the budget
    # the warm start (at most 15 s) and the assessment come out of the same budget
    left = budget_s - (time.perf_counter() - t0) - 30.0
    opt = with_time(with_floor(optimizer, floor), left)
    best, runs = train_restarts(objective, opt, restarts=restarts, seed=seed, init=init,
                                reference=reference, floor=floor, target_loss=target_loss,
                                max_wall_s=left)
    theta = best.state.theta
    # 4. the checks beside the answer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks = assess.assess(problem, lambda x: objective.solution(theta, x), disc.test_points,
                               reference=reference)
    wall = time.perf_counter() - t0
    return {"total_s": wall, "problem": problem.name, "formulation": formulation.label, "strategy": "monolithic",
            "optimizer": opt.label, **checks, "warning_classes": sorted({type(w.message).__name__ for w in caught}),
            "loss": float(best.state.loss), "floor": floor, "epochs": int(best.state.epoch),
            "stopped_by": best.state.done or "budget", "init": best.init.get("init"),
            "init_reason": best.init.get("init_reason"), "seed": int(best.seed),
            "restarts": len(runs), "run_losses": [float(r.state.loss) for r in runs],
            "wall_s": wall, "reference_wall_s": ref_wall, "n_params": int(objective.layout.total),
            "points": int(disc.info.get("points", 0)), "refinement": note,
            "rule": {k: disc.info.get(k) for k in ("nodes", "graded", "row_scaled")},
            "local_nodes": getattr(formulation, "local_nodes", None)}


def api_solve(problem, client, **kw) -> dict:
    """``daskie.solve`` with its defaults; the summary from ``ds.attrs``."""
    import daskie

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = daskie.solve(problem, client=client, **kw)
    out = dict(ds.attrs)  # wall_s: training; total_s: the whole call (reference, checks)
    out["total_s"] = time.perf_counter() - t0
    out["warning_classes"] = sorted({type(w.message).__name__ for w in caught})
    return out


def problems(args):
    from daskie.problems import catalog

    chosen = []
    names = args.problems or (validation_set.names() + (catalog.names() if args.catalog else []))
    for name in names:
        if name in validation_set.ENTRIES:
            entry = validation_set.ENTRIES[name]
            chosen.append((entry.build(), entry.citation, list(entry.tags), True))
        else:
            chosen.append((catalog.get(name), "daskie catalog (seed 000 sec. 5 and small cases)",
                           ["catalog"], False))
    return chosen


def _fmt(v, spec=".1e"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="JSON file for the records")
    ap.add_argument("--problems", nargs="*", help="validation-set or catalog names (default: the set)")
    ap.add_argument("--catalog", action="store_true", help="also every catalog problem")
    ap.add_argument("--engine", choices=("core", "solve"), default="core")
    ap.add_argument("--client", choices=("sync", "cluster"), default="sync",
                    help="--engine solve: in-process graph or an embedded 2-worker LocalCluster")
    ap.add_argument("--init", default="auto")
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    records = []
    header = (f"{'problem':22s} {'mse':>8s} {'mse_bd':>8s} {'ref_mse':>8s} {'discr':>8s} {'loss':>8s} "
              f"{'floor':>8s} {'epochs':>6s} {'stop':>8s} {'init':>9s} {'wall':>6s}  warnings")
    print(header)
    import contextlib

    with contextlib.ExitStack() as stack:
        client = "sync"
        if args.engine == "solve" and args.client == "cluster":
            from daskie.cluster import local_cluster

            client = stack.enter_context(local_cluster(workers=2))
        for problem, citation, tags, verify in problems(args):
            info = validation_set.verify(problem) if verify and problem.exact is not None else {}
            before = machine()
            if args.engine == "core":
                rec = core_solve(problem, init=args.init, restarts=args.restarts)
            else:
                rec = api_solve(problem, client, init=args.init, restarts=args.restarts)
            rec.update({"citation": citation, "tags": tags, "exact_residual": info.get("residual"),
                        **machine(), "loadavg_before": before["loadavg"]})
            records.append(rec)
            print(f"{rec['problem']:22s} {_fmt(rec.get('mse'))} {_fmt(rec.get('mse_boundary'))} "
                  f"{_fmt(rec.get('reference_mse'))} {_fmt(rec.get('discrepancy'))} {_fmt(rec.get('loss'))} "
                  f"{_fmt(rec.get('floor'))} {rec.get('epochs', 0):6d} {str(rec.get('stopped_by')):>8s} "
                  f"{str(rec.get('init')):>9s} {rec.get('wall_s', 0):6.1f}  "
                  f"{','.join(rec.get('warning_classes', [])) or '-'}", flush=True)
            if args.out:  # written after every equation: a long run keeps what it measured
                Path(args.out).write_text(json.dumps(records, indent=1, default=_json_default))
    ok = [r for r in records if (r.get("mse") or math.inf) <= 1e-10]
    silent = [r for r in records if (r.get("discrepancy") or 0) > 1e-6 and not r.get("warnings")]
    print(f"\nMSE <= 1e-10: {len(ok)}/{len(records)}; over 2 min: "
          f"{sum(r.get('total_s', 0) > 120 for r in records)}; silent failures: {len(silent)}; "
          f"load {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}, "
          f"cores {os.cpu_count()}")
    return records


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


if __name__ == "__main__":
    main()
