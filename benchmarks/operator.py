"""Operator learning (seed 001): accuracy, prediction against the reference, and scaling.

    python benchmarks/operator.py [--families fredholm-1d volterra-1d-sin fredholm-2d]
                                  [--n 500] [--test 200] [--steps 100] [--steps-2d 25]
                                  [--n-nonlinear 3200] [--adam-steps 20000] [--ridge 1e-9]
                                  [--adam-lr 3e-3] [--adam-decay 5e-4] [--branch 64,64]
                                  [--scaling-n 3000] [--scaling-steps 600]
                                  [--scaling-lm-steps 8] [--scaling-train 1024]
                                  [--scaling-adam-train 1024 8192 32768]
                                  [--dir /tmp/daskie-operator]
                                  [--out operator.json]

Per family (phase ``accuracy``): ``--n`` instances generated as tasks on daskie's embedded
cluster (2 workers x 1 thread) into a zarr data set; ``learn_operator``'s default DeepONet
(:func:`daskie.operator.default_net`: a linear branch for the linear families) trained with
Levenberg-Marquardt on the first ``n - test`` to the integral term ``mu - f / alpha``
(``OperatorLoss(skip=True)``; data loss, one rank; ``--steps`` steps in 1-D, ``--steps-2d``
in 2-D, where the rows and so ``J^T J`` cost several times more). A nonlinear family
(``volterra-1d-sin``) has ``--n-nonlinear`` instances instead and a branch of hidden widths
``--branch``, trained full batch by Adam on the hidden layers with the branch's output layer
solved by least squares before every step (``LeastSquaresHead``, ``--adam-steps`` steps,
``lr_k = lr / (1 + decay k)``, ``--ridge``): its solution operator is a nonlinear map of f
and lambda, which 300 instances do not pin down, and a Levenberg-Marquardt step over the
rows of thousands of instances costs tens of seconds here.
Its record also carries ``reference_rel_l2_vs_ode`` (the Nystrom references against the
family's equivalent ODE ``I' = -I + lam sin(f + I)`` solved by Runge-Kutta), and every record
``trunk_projection_floor_median`` (the error left by projecting the held-out integral terms
on the leading ``width`` POD modes of the training ones: the trunk's best case). Then, on
the ``--test`` held-out instances, the relative L2 error of mu against the reference (median, 95th
percentile), the time of one operator forward pass per instance (``predict_s``: 1000 new
instances in one call from their sensor values, divided by 1000) and of one reference
solve (``reference_s``: the mean Nystrom wall time recorded in the data set, assembly
included, building the daskie Problem not).

Scaling (phases ``data`` and ``train``), in the same run: data generation of
``--scaling-n`` instances of the 2-D family on LocalCluster(1 x 1 thread) and
LocalCluster(2 x 1 thread), each task writing its block into the store; data-parallel
training (``OperatorDataParallel``) of a DeepONet on 1-D Fredholm sets, Adam on
``--scaling-adam-train`` instances (several sizes: the step's compute against its
all-reduce) and Levenberg-Marquardt on ``--scaling-train``, with 1 rank on 1 worker against
2 ranks on 2 workers, and Adam on the largest set in this process on all cores
(``workers = 0``: ``client="sync"``, one rank, torch's threads). S = T_1 / T_N and S / N
against one thread per worker (the machine has 2 cores: two threads of one process are not
two workers' worth, see docs/architecture.md); data generation in tasks of
``SCALING_BLOCK`` instances. Then
the scaling model's prediction of the same training runs and of bigger ones (records with
``kind: "predicted"``, from the measured one-worker step). Times are wall seconds on the
client's clock around each call, clusters already started (both at once: each repeat runs
1 worker and 2 workers back to back, so that a drifting load on a shared host hits both
alike); every record has the load average at its start, its repeats and the median of the
paired ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from dataclasses import replace

import numpy as np


def _net(family, sensors):
    """The scaling runs' DeepONet (as in the first round, so that rounds compare)."""
    from daskie.nn import MLP, DeepONet
    from daskie.operator.formulation import n_branch_inputs

    return DeepONet(n_branch_inputs(family, sensors), family.dim, branch=MLP(hidden=(16,)),
                    trunk=MLP(hidden=(16, 16)), width=12)


def _accuracy_net(family, sensors, branch=None):
    """The accuracy runs' DeepONet: learn_operator's default (daskie.operator.default_net),
    or for a nonlinear family a branch of hidden widths ``branch`` (its trunk and width as
    the default's)."""
    from daskie.nn import MLP
    from daskie.operator import default_net

    net = default_net(family, sensors)
    if branch is None:
        return net
    return replace(net, branch=MLP(hidden=tuple(branch)))


def _reference_accuracy(fam, query, k=5):
    """Relative L2 difference at the query points between the family's Nystrom reference and
    one with twice its points per coordinate, max over ``k`` instances: how accurate the
    references the operator is measured against are."""
    from daskie.reference import Nystrom

    worst = 0.0
    for p in fam.sample(k, seed=123):
        problem = fam.problem(p)
        a = fam.reference().solve(problem)(query)
        b = Nystrom(2 * fam.reference_n).solve(problem)(query)
        worst = max(worst, float(np.linalg.norm(a - b) / np.linalg.norm(b)))
    return worst


def _rk4(rhs, ts, per_unit=4000):
    """``y' = rhs(t, y)``, ``y(0) = 0``, by classical Runge-Kutta with steps of at most
    ``1 / per_unit``, sampled at the ascending times ``ts`` (error ~ h^4: 1e-14 here)."""
    t, y, out = 0.0, 0.0, []
    for target in ts:
        n = max(1, int(np.ceil((target - t) * per_unit)))
        h = (target - t) / n
        for _ in range(n):
            k1 = rhs(t, y)
            k2 = rhs(t + h / 2, y + h / 2 * k1)
            k3 = rhs(t + h / 2, y + h / 2 * k2)
            k4 = rhs(t + h, y + h * k3)
            y, t = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), t + h
        t = target
        out.append(y)
    return np.array(out)


def _volterra_ode_check(fam, query, k=8):
    """For ``volterra-1d-sin`` (kernel ``exp(-(x - t))``): ``I = mu - f`` solves the ODE
    ``I' = -I + lam sin(f + I)``, ``I(0) = 0``; the relative L2 difference at the query
    points between the Nystrom reference and that ODE solved by Runge-Kutta (:func:`_rk4`),
    max over ``k`` instances: the data checked by an independent method."""
    x = np.asarray(query, dtype=float)[:, 0]
    order = np.argsort(x)
    worst = 0.0
    for p in fam.sample(k, seed=123):
        lam = float(p[-1])

        def rhs(t, i, p=p, lam=lam):
            return -i + lam * np.sin(fam.f_values(p[None], np.array([[t]]))[0, 0] + i)

        ode = np.empty_like(x)
        ode[order] = _rk4(rhs, x[order])
        ode += fam.f_values(p[None], x[:, None])[0]
        ref = fam.reference().solve(fam.problem(p))(x[:, None])
        worst = max(worst, float(np.linalg.norm(ref - ode) / np.linalg.norm(ode)))
    return worst


def _projection_floor(fam, ds, n_train, width):
    """Median relative L2 error of mu on the held-out instances when their integral term
    ``mu - f / alpha`` is replaced by its projection on the leading ``width`` POD modes of
    the training instances': what a trunk of ``width`` features could reach at best, had
    the branch the exact coefficients."""
    x = ds.query_x.values
    mu, params = ds.mu.values, ds.params.values
    skip = mu - fam.f_values(params, x) / fam.alpha
    _, _, vt = np.linalg.svd(skip[:n_train], full_matrices=False)
    v = vt[:width]
    test = skip[n_train:]
    rest = test - (test @ v.T) @ v
    return float(np.median(np.linalg.norm(rest, axis=1) / np.linalg.norm(mu[n_train:], axis=1)))


def _nonlinear_optimizer(adam):
    """The accuracy runs' training of a nonlinear family: full-batch Adam on the hidden
    layers with the branch's output layer solved by least squares before every step
    (:class:`~daskie.train.LeastSquaresHead`; ``adam``: steps, lr, decay, ridge). Plain Adam
    plateaued at 1.5e-2 (mini-batch, 24000 steps on 2000 instances, the last round) and a
    Levenberg-Marquardt step over the rows of thousands of instances costs tens of seconds."""
    from daskie.operator import OperatorDataParallel
    from daskie.train import Adam, LeastSquaresHead

    opt = LeastSquaresHead(Adam(lr=adam["lr"], decay=adam["decay"], steps=adam["steps"]),
                           ridge=adam["ridge"])
    return (opt, OperatorDataParallel(shards=1, window=1000),
            f"LSHead(Adam({adam['steps']}, lr={adam['lr']:g}, decay={adam['decay']:g}), "
            f"ridge={adam['ridge']:g}), full batch")


def accuracy(name, n, n_test, steps, directory, client, skip=True, report=None, adam=None):
    """One accuracy record of family ``name``: ``n`` instances (the last ``n_test`` held
    out), trained with LM(``steps``) full batch, or when ``adam`` (a dict of steps, lr, decay,
    ridge, branch) is given with :func:`_nonlinear_optimizer` (the nonlinear family's
    configuration)."""
    import xarray as xr

    from daskie.operator import OperatorLoss, fit_operator, generate_dataset
    from daskie.operator.evaluation import evaluate
    from daskie.problems.families import family
    from daskie.store.dataset import OperatorDataset
    from daskie.operator import OperatorDataParallel
    from daskie.train import LevenbergMarquardt

    fam = family(name)
    query = 8 if fam.dim == 2 else 33
    path = os.path.join(directory, f"{name}-{n}.zarr")
    t0 = time.perf_counter()
    gen = generate_dataset(fam, path, n, seed=0, query=query, client=client)
    data_s = time.perf_counter() - t0
    ds = xr.open_zarr(path)
    sensors = ds.sizes["sensor"]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    net = _accuracy_net(fam, sensors, None if adam is None else adam["branch"])
    if adam is None:
        optimizer, strategy = LevenbergMarquardt(steps=steps), \
            OperatorDataParallel(shards=1, window=None)
        label = f"LM({steps})"
    else:
        optimizer, strategy, label = _nonlinear_optimizer(adam)
    op, hist = fit_operator(fam, path, loss=OperatorLoss(net, skip=skip), client="sync",
                            optimizer=optimizer, strategy=strategy,
                            train=(0, n - n_test), test=(n - n_test, n))
    train_s = time.perf_counter() - t0
    op.history = hist
    op.evaluation = ev = evaluate(op, OperatorDataset.open(path), (n - n_test, n), (0, n - n_test))
    err, baseline = ev.rel_l2.values, ev.baseline_rel_l2.values
    if report:
        from daskie.report import operator_report

        operator_report(op, report)
    new = fam.sample(1000, seed=99)
    f_new = op.inputs(new)
    op(f_new[:10])  # warm up
    t0 = time.perf_counter()
    op(f_new)  # from the sensor values alone (with skip: f at the query points fitted too)
    predict_s = (time.perf_counter() - t0) / 1000
    reference_s = float(ds.solve_s.values.mean())
    return {"phase": "accuracy", "family": name, "dim": fam.dim, "n_train": n - n_test,
            "n_test": n_test, "rel_l2_median": float(np.median(err)),
            "rel_l2_p95": float(np.quantile(err, 0.95)), "rel_l2_max": float(err.max()),
            "baseline_rel_l2_median": float(np.median(baseline)),
            "predict_s": predict_s, "reference_s": reference_s,
            "predict_1000_s": 1000 * predict_s, "reference_1000_s": 1000 * reference_s,
            "predict_speedup": reference_s / predict_s,
            "reference_n": fam.reference_n,
            "reference_rel_l2_vs_2n": _reference_accuracy(fam, ds.query_x.values),
            "reference_residual_max": float(ds.residual.values.max()),
            "reference_rel_l2_vs_ode": _volterra_ode_check(fam, ds.query_x.values)
            if name == "volterra-1d-sin" else None,
            "trunk_projection_floor_median": _projection_floor(fam, ds, n - n_test, net.width),
            "data_s": data_s, "data_blocks_solved": gen["solved"], "train_s": train_s,
            "optimizer": label, "n_params": int(op.theta.numel()),
            "net": repr(net), "skip": skip, "load_at_start": load,
            "sensors": int(sensors), "query": int(ds.sizes["query"]),
            "final_loss": hist[-1]["loss"]}


#: Instances per data-generation task in the scaling rows. Each task writes its block into
#: the zarr store itself (daskie.operator.data.solve_and_write); when the client wrote every
#: block (about 20 ms of its CPU each, on the same 2 cores as the workers) S stayed near
#: 1.6-1.7. Blocks of 128 keep the per-task overheads (scheduling, opening the store) small.
SCALING_BLOCK = 128


def predicted(times, steps, lm_steps, n_params, adam_key):
    """The scaling model's rows (:func:`daskie.plan.scaling.predict_data_parallel`): from
    the measured 1-worker step of each optimizer (Adam: the run ``adam_key``), all of it
    split over the ranks (the replicated optimizer update of ``n_params`` numbers is
    microseconds), plus the calibrated gloo all-reduce; 2 ranks on this host's loopback
    (what was measured), and 4 to 64 ranks one per host on the emulated gigabit network."""
    from daskie.plan.scaling import EMULATED_GIGABIT, LOOPBACK, StepCosts, predict_data_parallel

    rows = []
    for key, optimizer, n_steps in ((adam_key, "adam", steps), ("train-lm", "lm", lm_steps)):
        costs = StepCosts(0.0, times[(key, 1)][0] / n_steps)
        for network, ranks in ((LOOPBACK, 2), (EMULATED_GIGABIT, 4), (EMULATED_GIGABIT, 16),
                               (EMULATED_GIGABIT, 64)):
            p = predict_data_parallel(costs, n_params, network, ranks=ranks, optimizer=optimizer)
            measured = times.get((key, ranks)) if network is LOOPBACK else None
            rows.append({"phase": "train", "kind": "predicted", "workers": ranks,
                         "optimizer": "Adam" if optimizer == "adam" else "LM",
                         "network": network.name, "n_params": n_params,
                         "step_s": p.step_s, "reduce_s": p.reduce_s, "speedup": p.sr,
                         "efficiency": p.sr / ranks,
                         "measured_speedup": None if measured is None
                         else times[(key, 1)][0] / measured[0],
                         "family": "fredholm-1d", "what": "scaling model (daskie.plan.scaling)"})
    return rows


def scaling(n, steps, directory, n_train=1024, repeats=1, lm_steps=8,
            adam_sizes=(1024, 8192, 32768)):
    """The scaling records: data generation of ``n`` 2-D instances, Adam (``steps`` steps) on
    fredholm-1d data sets of each of ``adam_sizes`` instances, Levenberg-Marquardt
    (``lm_steps``) on ``n_train``; 1 worker against 2, ``repeats`` times, then the scaling
    model's rows."""
    from daskie.cluster import local_cluster
    from daskie.operator import OperatorLoss, fit_operator, generate_dataset
    from daskie.problems.families import family
    from daskie.operator import OperatorDataParallel
    from daskie.train import Adam, LevenbergMarquardt

    records = []
    fam2 = family("fredholm-2d")
    fam1 = family("fredholm-1d")
    paths = {}
    for size in sorted({n_train, *adam_sizes}):
        paths[size] = os.path.join(directory, f"scaling-fredholm-1d-{size}.zarr")
        generate_dataset(fam1, paths[size], size, seed=1, block=256, client="sync")
    loss = OperatorLoss(_net(fam1, 32), test_instances=16)

    def fit(size, client, optimizer, strategy, **kw):
        return fit_operator(fam1, paths[size], client=client, optimizer=optimizer,
                            strategy=strategy, loss=loss, train=(0, size - 16),
                            test=(size - 16, size), **kw)

    times = {}
    # Both clusters at once, and the 1- and 2-worker runs of each repeat back to back: on a
    # host shared with other work the load drifts over minutes, and a comparison of runs
    # taken minutes apart measures the drift (seen: S = 0.70 and 2.50 for the same setup).
    with local_cluster(workers=1) as one, local_cluster(workers=2) as two:
        clients = {1: one, 2: two}
        for workers, client in clients.items():  # warm up: imports, worker state
            generate_dataset(fam2, os.path.join(directory, f"warm-{workers}.zarr"), 2 * workers,
                             block=1, client=client)
            fit(n_train, client, Adam(steps=5), OperatorDataParallel(shards=workers, window=50))
        runs = {"data": lambda w, c, r: generate_dataset(
            fam2, os.path.join(directory, f"scaling-data-{w}.zarr-{r}"), n, seed=2,
            block=SCALING_BLOCK, client=c)}
        # Adam: with the branch evaluated once per instance a step over 1008 instances is
        # about 1 ms of compute, less than the step's all-reduce; seed 001's data-parallel
        # regime is many instances per rank
        for size in adam_sizes:
            runs[f"train-{size}"] = lambda w, c, r, size=size: fit(
                size, c, Adam(lr=1e-3, steps=steps), OperatorDataParallel(shards=w, window=50))
        # Levenberg-Marquardt: each rank forms its rows' J^T J (N P^2 flops), one P x P
        # all-reduce per step
        runs["train-lm"] = lambda w, c, r: fit(n_train, c, LevenbergMarquardt(steps=lm_steps),
                                               OperatorDataParallel(shards=w, window=None))
        for w in clients:  # a data set left by an earlier run would be continued, not made
            for r in range(repeats):
                shutil.rmtree(os.path.join(directory, f"scaling-data-{w}.zarr-{r}"),
                              ignore_errors=True)
        walls = {(key, w): [] for key in runs for w in clients}
        loads = {(key, w): [] for key in runs for w in clients}
        for r in range(repeats):
            for key, run in runs.items():
                for workers, client in clients.items():
                    loads[(key, workers)].append(os.getloadavg()[0])
                    t0 = time.perf_counter()
                    run(workers, client, r)
                    walls[(key, workers)].append(time.perf_counter() - t0)
        for k, w in walls.items():
            times[k] = (float(np.median(w)), w, loads[k])
    import torch

    largest = max(adam_sizes)
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    walls, loads = [], []
    for _ in range(repeats):
        loads.append(os.getloadavg()[0])
        t0 = time.perf_counter()
        fit(largest, "sync", Adam(lr=1e-3, steps=steps),
            OperatorDataParallel(shards=1, window=50), threads=None)
        walls.append(time.perf_counter() - t0)
    all_cores = (float(np.median(walls)), walls, loads)
    torch.set_num_threads(before)

    def rows(size):
        return f"{size - 16} instances x 33 points of fredholm-1d"

    described = [("data", None, None, f"{n} instances of fredholm-2d (Nystrom n=12)")]
    described += [(f"train-{size}", "Adam", size - 16, f"Adam {steps} steps, {rows(size)}")
                  for size in adam_sizes]
    described += [("train-lm", "LM", n_train - 16, f"LM {lm_steps} steps, {rows(n_train)}")]
    for key, optimizer, n_instances, what in described:
        t1 = times[(key, 1)][0]
        for workers in (1, 2):
            wall, walls, loads = times[(key, workers)]
            s = t1 / wall
            paired = np.median(np.asarray(times[(key, 1)][1]) / np.asarray(walls))
            records.append({"phase": key.split("-")[0], "workers": workers,
                            "threads_per_worker": 1, "optimizer": optimizer,
                            "n_train": n_instances,
                            "wall_s": wall, "wall_s_repeats": walls, "load_at_start": loads,
                            "speedup": s, "efficiency": s / workers,
                            "speedup_paired_median": float(paired), "what": what,
                            "family": "fredholm-2d" if key == "data" else "fredholm-1d"})
    wall, walls, loads = all_cores
    records.append({"phase": "train", "workers": 0, "threads_per_worker": os.cpu_count(),
                    "optimizer": "Adam", "n_train": largest - 16,
                    "wall_s": wall, "wall_s_repeats": walls, "load_at_start": loads,
                    "speedup": times[(f"train-{largest}", 1)][0] / wall, "efficiency": None,
                    "family": "fredholm-1d",
                    "what": f"one process, one rank, torch on all cores (client='sync'), "
                            f"{rows(largest)}"})
    return records + predicted(times, steps, lm_steps, int(loss.net.n_params()),
                               adam_key=f"train-{largest}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="*",
                    default=["fredholm-1d", "volterra-1d-sin", "fredholm-2d"])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--steps-2d", type=int, default=25)
    ap.add_argument("--n-nonlinear", type=int, default=3200,
                    help="instances of a nonlinear family (the last --test held out)")
    ap.add_argument("--adam-steps", type=int, default=20000,
                    help="Adam steps (least-squares head) of a nonlinear family")
    ap.add_argument("--adam-lr", type=float, default=3e-3)
    ap.add_argument("--adam-decay", type=float, default=5e-4)
    ap.add_argument("--ridge", type=float, default=1e-9,
                    help="LeastSquaresHead.ridge of a nonlinear family")
    ap.add_argument("--branch", default="64,64",
                    help="hidden widths of a nonlinear family's branch")
    ap.add_argument("--scaling-n", type=int, default=3000)
    ap.add_argument("--scaling-steps", type=int, default=600)
    ap.add_argument("--scaling-lm-steps", type=int, default=8)
    ap.add_argument("--scaling-train", type=int, default=1024,
                    help="instances of the Levenberg-Marquardt scaling rows")
    ap.add_argument("--scaling-adam-train", type=int, nargs="+", default=[1024, 8192, 32768],
                    help="instances of the Adam scaling rows (one pair of rows each)")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="scaling runs per configuration "
                    "(the median is reported)")
    ap.add_argument("--dir", default="/tmp/daskie-operator")
    ap.add_argument("--out", default=None)
    ap.add_argument("--reports", default=None,
                    help="directory for each family's operator report page (HTML)")
    args = ap.parse_args(argv)
    import torch

    from daskie.cluster import local_cluster

    torch.set_num_threads(1)
    os.makedirs(args.dir, exist_ok=True)
    records = []
    with local_cluster(workers=2) if args.families else contextlib.nullcontext() as client:
        for name in args.families:
            from daskie.problems.families import family

            steps = args.steps_2d if family(name).dim >= 2 else args.steps
            report = os.path.join(args.reports, f"operator-{name}.html") if args.reports \
                else None
            nonlinear = family(name).nonlinearity.name != "identity"
            adam = dict(steps=args.adam_steps, lr=args.adam_lr, decay=args.adam_decay,
                        ridge=args.ridge, branch=[int(v) for v in args.branch.split(",")]) \
                if nonlinear else None
            rec = accuracy(name, args.n_nonlinear if nonlinear else args.n, args.test, steps,
                           args.dir, client, report=report, adam=adam)
            records.append(rec)
            print(f"{name:16s} dim {rec['dim']}  rel L2 median {rec['rel_l2_median']:.2e}  "
                  f"p95 {rec['rel_l2_p95']:.2e}  (mean-solution baseline "
                  f"{rec['baseline_rel_l2_median']:.2f})  predict {rec['predict_s'] * 1e6:.1f} us"
                  f"  reference {rec['reference_s'] * 1e3:.2f} ms  "
                  f"x{rec['reference_s'] / rec['predict_s']:.0f}  train {rec['train_s']:.0f} s",
                  flush=True)
    if not args.no_scaling:
        rows = scaling(args.scaling_n, args.scaling_steps, args.dir, args.scaling_train,
                       args.repeats, args.scaling_lm_steps, args.scaling_adam_train)
        records += rows
        print(f"\n{'phase':6s} {'workers':>7s} {'wall_s':>8s} {'S':>6s} {'S/N':>6s} "
              f"{'load':>5s}  what")
        for r in rows:
            if r.get("kind") == "predicted":
                continue
            eff = "-" if r["efficiency"] is None else f"{r['efficiency']:.2f}"
            print(f"{r['phase']:6s} {r['workers']:7d} {r['wall_s']:8.2f} {r['speedup']:6.2f} "
                  f"{eff:>6s} {max(r['load_at_start']):5.1f}  {r['what']}")
        print(f"\nscaling model{'':4s} {'ranks':>5s} {'network':>15s} {'step ms':>8s} "
              f"{'reduce ms':>9s} {'S':>6s} {'S/N':>5s} {'measured S':>10s}")
        for r in rows:
            if r.get("kind") == "predicted":
                m = "-" if r["measured_speedup"] is None else f"{r['measured_speedup']:.2f}"
                print(f"train {r['optimizer']:11s} {r['workers']:5d} {r['network']:>15s} "
                      f"{r['step_s'] * 1e3:8.2f} {r['reduce_s'] * 1e3:9.2f} {r['speedup']:6.2f} "
                      f"{r['efficiency']:5.2f} {m:>10s}")
    if args.out:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from harness import write_records

        write_records(args.out, records, benchmark="operator")
        print(f"wrote {len(records)} records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
