"""Issue 15's eight failure classes, each reproduced with the old defaults on an equation of
the validation set, and what the new defaults do about it.

Old defaults: ``QuadratureCollocation(graded=1.0, row_scale="none")`` (no grading, no row
scaling), kinks not declared, ``LevenbergMarquardt(steps=300)`` from the seeded random start.
Each old answer is then put through :func:`daskie.assess.assess` to show the check that now
flags it; the new default run of the same equation is in ``validation.py``'s records.

    python benchmarks/failure_classes.py --out classes.json [--new validation.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import validation_set  # noqa: E402

#: (class, what the issue saw, equation, seed of the old run)
CLASSES = [
    (1, "another solution of a nonlinear equation", "v-near-fold", 5),
    (2, "bad local minimum, seed-dependent (3-D Fredholm)", "v-3d-sine", 0),
    (3, "out of steps: loss still falling at step 300", "v-expkernel", 0),
    (4, "stall under cancellation (f ~ 100 u)", "v-cancellation", 0),
    (5, "discretization floor: kinked kernel", "v-green", 0),
    (5, "discretization floor: stiff boundary layer", "v-boundary-layer", 0),
    (6, "endpoint singularity with grading off", "v-abel-sqrt", 0),
    (7, "hidden endpoint error (interior MSE only)", "v-abel-sqrt", 0),
    (8, "error amplification, nonlinear Volterra", "v-riccati", 0),
]


def old_run(problem, seed):
    """The old default solve in the core, with the new checks applied to its answer."""
    from daskie import assess
    from daskie.formulations import QuadratureCollocation
    from daskie.train import LevenbergMarquardt, Objective, train

    t0 = time.perf_counter()
    plain = replace(problem, terms=tuple(replace(t, kink=()) for t in problem.terms))
    obj = Objective(QuadratureCollocation(graded=1.0, row_scale="none").discretize(plain, seed=0))
    state, records = train(obj, LevenbergMarquardt(steps=300), seed=seed, target_loss=1e-14)
    wall = time.perf_counter() - t0
    ref = assess.reference_solution(problem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks = assess.assess(problem, lambda x: obj.solution(state.theta, x), obj.disc.test_points,
                               reference=ref)
    # the MSE on a uniform grid including the end points, against the interior Sobol MSE
    grid = np.linspace(problem.domain.lower[0], problem.domain.upper[0], 201)[:, None] if problem.dim == 1 else None
    grid_mse = None if grid is None else float(np.mean((obj.solution(state.theta, grid) - problem.exact(grid)) ** 2))
    losses = [r["loss"] for r in records]
    return {"loss": state.loss, "floor": assess.discretization_floor(obj, problem.exact),
            "loss_50_before_end": losses[-51] if len(losses) > 50 else None, "epochs": state.epoch,
            "done": state.done, "wall_s": wall, "grid_mse": grid_mse,
            "warned": [type(w.message).__name__ for w in caught], **checks}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--new", help="validation.py records of the new defaults, to put beside")
    ap.add_argument("--classes", nargs="*", type=int)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    new = {r["problem"]: r for r in json.loads(Path(args.new).read_text())} if args.new else {}
    out, cache = [], {}
    for k, what, name, seed in CLASSES:
        if args.classes and k not in args.classes:
            continue
        if (name, seed) not in cache:
            cache[name, seed] = old_run(validation_set.get(name), seed)
        old = cache[name, seed]
        rec = {"class": k, "what": what, "problem": name, "seed": seed, "old": old,
               "new": {key: new[name].get(key) for key in ("mse", "mse_boundary", "discrepancy", "loss", "floor",
                                                           "stopped_by", "init", "warnings", "epochs", "wall_s")}
               if name in new else None, "loadavg": list(os.getloadavg())}
        out.append(rec)
        n = rec["new"] or {}
        print(f"class {k} {name:18s} old: mse {old['mse']:.1e} mse_bd {old['mse_boundary']:.1e} "
              f"loss {old['loss']:.1e} floor {old['floor']:.1e} {old['done']} "
              f"{'WARNED' if old['warned'] else 'silent'}"
              f"{'  | new: mse %.1e mse_bd %.1e %s %s' % (n['mse'], n['mse_boundary'], n['stopped_by'], 'warned' if n['warnings'] else '-') if n else ''}",
              flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
