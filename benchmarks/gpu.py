"""The prepared device check (issue 27): a few minutes on one GPU, a dry run on the CPU.

    python benchmarks/gpu.py --out benchmarks/results/gpu.json [--device cuda|cpu] [--quick]
        [--parts env,agreement,steps,operator,group,precision] [--precision-steps 2000]

Parts (one JSON list of records; every record has ``device``, ``dtype``, ``problem``,
``points``, ``optimizer``, ``step_s``, ``mse``, ``rel_diff_vs_cpu`` and a ``part``, plus the
machine's state, ``benchmarks/harness.py``):

* ``env``: what torch sees (CUDA build, devices, their names); ``--device cuda`` on a machine
  where torch sees no CUDA device stops here with exit status 2.
* ``agreement``: E1 (the default quadrature collocation) and ``hd-volterra-d6`` (a 16 x 16
  network, a per-point Smolyak rule) trained with Levenberg-Marquardt from the same start on
  the CPU and on ``--device``, in float64: ``rel_diff_vs_cpu`` is the largest relative
  difference of the parameters, of the solution on the test points and of the MSE; ``ok``
  says whether it is below 1e-10.
* ``steps``: seconds per LM step and per Adam step (the median over the steps after the
  first) on the CPU and on ``--device``, for E1 and ``hd-volterra-d6`` at 4k and 16k
  collocation points (``--quick``: 256 and 512).
* ``operator``: seconds per Adam step of operator training on 32k instances (a DeepONet
  64-64 / 64-64, width 32, 16 query points: 524k rows; the instances are random numbers of
  the data set's shapes, which the timing does not depend on), float64 and float32, CPU and
  ``--device`` (``--quick``: 1k instances).
* ``group``: with two or more GPUs, a 2-worker group (``local_cluster(2, gpus=2)``, one GPU
  per worker) all-reducing a 4M-entry float64 buffer on the GPUs (NCCL) and on the CPU
  (gloo): ``step_s`` per all-reduce, ``backend``. Skipped (and said) with fewer GPUs.
* ``precision``: float32 against float64 for the first-order optimizer (Adam, lr 1e-3) on
  E1-E4 with the default formulation (``--precision-points``: fewer points), on ``--device``:
  final loss, MSE, steps and seconds (``--precision-steps``). The CPU table in
  ``benchmarks/results/gpu_precision.json`` is ``--device cpu --parts env,precision
  --precision-steps 500 --precision-points 512 --threads 1``.

On the CPU (``--device cpu``) the device runs are CPU runs: the script runs end to end and
``rel_diff_vs_cpu`` is 0 by construction; the numbers that matter come from a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import write_records  # noqa: E402

PARTS = ("env", "agreement", "steps", "operator", "group", "precision")
TOLERANCE = 1e-10


def record(part, device, dtype, problem, points, optimizer, step_s, mse, rel_diff, **extra):
    return {"part": part, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
            "problem": problem, "points": points, "optimizer": optimizer, "step_s": step_s,
            "mse": mse, "rel_diff_vs_cpu": rel_diff, **extra}


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --- problems and formulations -----------------------------------------------------------------
def formulation(name, points=None):
    from daskie import MLP, QuadratureCollocation

    if name.startswith("hd-"):
        return QuadratureCollocation(net=MLP(hidden=(16, 16)), test_points=1000,
                                     **({"points": points} if points else {}))
    return QuadratureCollocation(**({"points": points} if points else {}))


def objective(name, device, dtype=torch.float64, points=None):
    from daskie.problems import catalog
    from daskie.train import Objective

    form = formulation(name, points)
    return Objective(form.discretize(catalog.get(name), seed=0, device=device, dtype=dtype))


def train(obj, optimizer, steps):
    from daskie.train import TrainState, advance

    state = TrainState(theta=obj.init_params(0))
    sync(obj.device)
    t0 = time.perf_counter()
    state, records = advance(obj, optimizer, state, steps, final_mse=False)
    sync(obj.device)
    return state, records, time.perf_counter() - t0


def median_step(records):
    steps = [r["step_s"] for r in records[1:]] or [r["step_s"] for r in records]
    return statistics.median(steps)


# --- parts ---------------------------------------------------------------------------------------
def part_env(device):
    info = {"cuda_available": torch.cuda.is_available(), "cuda_build": torch.version.cuda,
            "devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else []}
    print(f"torch {torch.__version__}: CUDA build {info['cuda_build']}, "
          f"available {info['cuda_available']}, devices {info['devices']} {info['names']}")
    return [record("env", device, torch.float64, None, None, None, None, None, None, **info)]


def part_agreement(device, quick):
    from daskie import LevenbergMarquardt

    out = []
    for name, points, steps in (("E1", None, 20), ("hd-volterra-d6", 256 if quick else 1024, 10)):
        runs = {}
        for where in ("cpu", device):
            obj = objective(name, where, points=points)
            state, records, wall = train(obj, LevenbergMarquardt(steps=steps), steps)
            theta = state.theta.to("cpu")
            test = obj.disc.test_points
            runs[where] = (theta, obj.solution(theta, test), obj.mse(theta), records, obj)
        th0, u0, m0, _, obj0 = runs["cpu"]
        for where in ("cpu", device) if device != "cpu" else ("cpu",):
            th, u, m, records, obj = runs[where]
            rel = max(float((th - th0).norm() / th0.norm()),
                      float(np.linalg.norm(u - u0) / np.linalg.norm(u0)),
                      abs(m - m0) / abs(m0))
            out.append(record("agreement", where, torch.float64, name,
                              int(obj.disc.info["points"]), "LevenbergMarquardt",
                              median_step(records), m, rel, steps=len(records),
                              loss=records[-1]["loss"], ok=rel <= TOLERANCE))
    return out


def part_steps(device, quick):
    from daskie import LevenbergMarquardt
    from daskie.train import Adam

    cases = [("E1", None), ("hd-volterra-d6", 256 if quick else 4096),
             ("hd-volterra-d6", 512 if quick else 16384)]
    out = []
    for name, points in cases:
        for where in dict.fromkeys(("cpu", device)):
            for opt, steps in ((LevenbergMarquardt(steps=4), 4), (Adam(steps=6), 6)):
                obj = objective(name, where, points=points)
                state, records, wall = train(obj, opt, steps)
                out.append(record("steps", where, torch.float64, name,
                                  int(obj.disc.info["points"]), opt.label, median_step(records),
                                  obj.mse(state.theta), None, steps=len(records),
                                  loss=records[-1]["loss"]))
                print(f"  {name} {points} {where} {opt.label}: {out[-1]['step_s']:.4f} s/step")
    return out


def operator_objective(instances, device, dtype):
    """The operator objective of ``instances`` random instances (module docstring)."""
    from daskie.nn import MLP, DeepONet
    from daskie.operator.formulation import OperatorLoss, ShardRows
    from daskie.problems.families import family
    from daskie.train import Objective

    fam = family("fredholm-1d")
    sensors, query = 16, 16
    net = DeepONet(sensors, 1, branch=MLP(hidden=(64, 64)), trunk=MLP(hidden=(64, 64)), width=32)
    rng = np.random.default_rng(0)
    T = lambda a: torch.as_tensor(a, device="cpu").to(device=device, dtype=dtype)  # noqa: E731
    x = np.linspace(0.0, 1.0, query)[:, None]
    rows = ShardRows(OperatorLoss(net), types.SimpleNamespace(family=fam), (0, instances),
                     instances, x, T(rng.standard_normal((instances, sensors))),
                     T(rng.standard_normal((instances, query))), None,
                     np.zeros((0, net.in_dim)), None, None)
    return Objective(rows.discretization(None, 1.0))


def part_operator(device, quick):
    from daskie.train import Adam

    n = 1024 if quick else 32768
    out = []
    for where in dict.fromkeys(("cpu", device)):
        for dtype in (torch.float64, torch.float32):
            obj = operator_objective(n, where, dtype)
            _, records, _ = train(obj, Adam(steps=5), 5)
            out.append(record("operator", where, dtype, f"operator-{n}", n * 16, "Adam",
                              median_step(records), None, None, instances=n,
                              loss=records[-1]["loss"]))
            print(f"  operator {n} instances {where} {dtype}: {out[-1]['step_s']:.4f} s/step")
    return out


def _allreduce(group, kind, n, reps):
    import time

    import torch

    buf = torch.ones(n, dtype=torch.float64, device=kind)
    group.allreduce(buf)  # the ranks agree on the backend here
    if kind == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        group.allreduce(buf)
    if kind == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps, group.backend, float(buf[0])


def part_group(device, quick):
    if torch.device(device).type != "cuda" or torch.cuda.device_count() < 2:
        print("  group: skipped (needs two GPUs: NCCL refuses two ranks on one GPU)")
        return [record("group", device, torch.float64, None, None, "allreduce", None, None, None,
                       skipped="fewer than two GPUs")]
    from daskie.cluster import local_cluster
    from daskie.runtime.groups import run_group

    n, reps = (2**16, 5) if quick else (2**22, 20)
    out = []
    with local_cluster(2, gpus=2) as client:
        for kind in ("cuda", "cpu"):
            res = run_group(client, _allreduce, [(kind, n, reps)] * 2, timeout=120)
            step, backend, _ = res[0]
            out.append(record("group", kind, torch.float64, f"allreduce-{n}", n, "allreduce", step,
                              None, None, backend=backend, ranks=2))
            print(f"  group 2 ranks {kind}: {backend} {step * 1e3:.2f} ms per all-reduce")
    return out


def part_precision(device, steps, points=None):
    from daskie.train import Adam

    out = []
    for name in ("E1", "E2", "E3", "E4"):
        for dtype in (torch.float64, torch.float32):
            obj = objective(name, device, dtype, points=points)
            state, records, wall = train(obj, Adam(steps=steps), steps)
            out.append(record("precision", device, dtype, name, int(obj.disc.info["points"]),
                              "Adam", median_step(records), obj.mse(state.theta), None,
                              steps=len(records), seconds=wall, loss=records[-1]["loss"]))
            print(f"  {name} {dtype}: loss {out[-1]['loss']:.3e} mse {out[-1]['mse']:.3e} "
                  f"{len(records)} steps {wall:.1f} s")
    return out


def table(records):
    keys = ("part", "device", "dtype", "problem", "points", "optimizer", "step_s", "mse",
            "rel_diff_vs_cpu")
    print(" ".join(f"{k:>16}" for k in keys))
    for r in records:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append(f"{v:>16.4g}" if isinstance(v, float) else f"{str(v):>16}")
        print(" ".join(cells))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true", help="small sizes: a dry run in a minute")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--precision-steps", type=int, default=None,
                    help="Adam steps of the precision part (default 2000, --quick 200)")
    ap.add_argument("--precision-points", type=int, default=None,
                    help="collocation points of the precision part (default: the formulation's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    records = part_env(device) if "env" in parts else []
    if device == "cuda" and not torch.cuda.is_available():
        write_records(args.out, records)
        print("torch sees no CUDA device: nothing more to measure (see the env record)")
        return 2
    steps = args.precision_steps or (200 if args.quick else 2000)
    runs = {"agreement": lambda: part_agreement(device, args.quick),
            "steps": lambda: part_steps(device, args.quick),
            "operator": lambda: part_operator(device, args.quick),
            "group": lambda: part_group(device, args.quick),
            "precision": lambda: part_precision(device, steps, args.precision_points)}
    for part in parts:
        if part in runs:
            print(f"{part} ...")
            records += runs[part]()
            write_records(args.out, records)  # what is measured so far survives a time-out
    table(records)
    write_records(args.out, records)
    bad = [r for r in records if r.get("ok") is False]
    if bad:
        print(f"{len(bad)} agreement record(s) above {TOLERANCE:g} relative")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
