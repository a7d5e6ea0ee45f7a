"""Issue 29: daskie's DeepONet beside neuraloperator's FNO on the same instances.

    python benchmarks/operator_rivals.py [--families fredholm-1d-width volterra-1d-decay
                                          fredholm-2d-fine] [--n N] [--test 200]
                                         [--steps STEPS] [--fno-epochs 300]
                                         [--fno-epochs-2d 40] [--fno-hidden-2d 32]
                                         [--no-fno] [--no-deeponet] [--threads 1]
                                         [--dir /tmp/daskie-rivals] [--out operator_rivals.json]
                                         [--accuracy operator_accuracy.json]

Per family: its default number of instances (``training.n`` of the family,
:class:`daskie.problems.parametric.OperatorDefaults`; ``--n`` replaces it) generated as tasks
on daskie's embedded cluster (2 workers x 1 thread) into a zarr data set; the last ``--test``
held out.

* **DeepONet** (``model: "deeponet"``): exactly what ``learn_operator(family)`` trains when
  told nothing else -- :func:`daskie.operator.default_net` and
  :func:`daskie.operator.default_optimizer` of the family (its ``training``: a two-layer
  tanh branch reading f at the sensors and the kernel parameter, Adam on the hidden layers
  with the branch's output layer solved by least squares before every step) learning the
  integral term (``OperatorLoss(skip=True)``), full batch in this process (one rank);
  ``--steps`` replaces the family's number of steps.
* **FNO** (``model: "fno"``; neuraloperator, ``pip install neuraloperator``): on the same
  training and held-out instances, its input on the query grid -- f there (from the
  instance's parameters: the same function the sensors sample) and the kernel parameter as a
  constant channel -- and its output mu on the query grid; Adam (lr 1e-3, cosine decay),
  batches of 32, the mean relative L2 loss, in this process on torch's threads.

Both on ``--threads`` torch threads (default 1). Both: the relative L2 error of mu on the
held-out instances (median, 95th percentile), ``train_s`` (wall seconds of the training),
``predict_s`` (one forward pass per instance, over the held-out instances in one call),
``n_params``, and the same two times in CPU seconds of this process (``train_cpu_s``,
``predict_cpu_s``: what a shared, overloaded host does not distort). Every record carries
the load average at its start (other agents share the 2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def deeponet(fam, path, n, n_test, steps=None):
    from daskie.operator import (OperatorDataParallel, OperatorLoss, default_net,
                                 default_optimizer, fit_operator)
    from daskie.operator.evaluation import evaluate
    from daskie.store.dataset import OperatorDataset

    store = OperatorDataset.open(path)
    net = default_net(fam, len(store.sensors))
    optimizer = default_optimizer(net, steps, family=fam)
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    op, hist = fit_operator(fam, path, loss=OperatorLoss(net, skip=True), client="sync",
                            optimizer=optimizer,
                            strategy=OperatorDataParallel(shards=1, window=None),
                            train=(0, n - n_test), test=(n - n_test, n))
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    ev = evaluate(op, store, (n - n_test, n), (0, n - n_test))
    rows = store.read(n - n_test, n)
    inputs = op.inputs(rows["params"])
    skip = fam.skip_values(rows["params"], store.query)
    op(inputs[:4], skip_at_x=skip[:4])
    t0, c0 = time.perf_counter(), time.process_time()
    op(inputs, skip_at_x=skip)
    predict_s = (time.perf_counter() - t0) / n_test
    predict_cpu_s = (time.process_time() - c0) / n_test
    err = ev.rel_l2.values
    return {"family": fam.name, "dim": fam.dim, "model": "deeponet",
            "rel_l2_median": float(np.median(err)), "rel_l2_p95": float(np.quantile(err, 0.95)),
            "baseline_rel_l2_median": float(np.median(ev.baseline_rel_l2.values)),
            "train_s": train_s, "predict_s": predict_s, "n_params": int(op.theta.numel()),
            "train_cpu_s": train_cpu_s, "predict_cpu_s": predict_cpu_s,
            "n_train": n - n_test, "n_test": n_test, "net": repr(net),
            "optimizer": f"{optimizer!r}, full batch", "defaults": steps is None,
            "final_loss": hist[-1]["loss"], "load_at_start": load}


def _fno_inputs(fam, params, query, shape):
    """FNO's input: f on the query grid and each scalar input (kernel parameter) as a
    constant channel, ``(n, channels, *shape)``."""
    f = fam.f_values(params, query).reshape((len(params), *shape))
    chans = [f]
    for item in getattr(fam, "inputs", ("f",)):
        if item not in ("f", "alpha"):
            v = params[:, fam.params.index(item)]
            chans.append(np.broadcast_to(v.reshape((-1,) + (1,) * len(shape)), f.shape))
    return np.stack(chans, axis=1)


def fno(fam, path, n, n_test, epochs, modes, hidden, seed=0):
    import torch
    from neuralop.models import FNO

    from daskie.store.dataset import OperatorDataset

    torch.manual_seed(seed)
    store = OperatorDataset.open(path)
    q = store.query
    per_axis = round(len(q) ** (1 / fam.dim))
    shape = (per_axis,) * fam.dim
    data = store.read(0, n)
    x = torch.as_tensor(_fno_inputs(fam, data["params"], q, shape), dtype=torch.float32)
    y = torch.as_tensor(data["mu"].reshape((n, 1, *shape)), dtype=torch.float32)
    xt, yt, xv, yv = x[:n - n_test], y[:n - n_test], x[n - n_test:], y[n - n_test:]
    model = FNO(n_modes=(modes,) * fam.dim, hidden_channels=hidden, in_channels=x.shape[1],
                out_channels=1)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)

    def rel(a, b):
        return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)

    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for k in range(0, len(xt), 32):
            idx = order[k:k + 32]
            opt.zero_grad()
            loss = rel(model(xt[idx]), yt[idx]).mean()
            loss.backward()
            opt.step()
        sched.step()
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    with torch.no_grad():
        model(xv[:4])
        t0, c0 = time.perf_counter(), time.process_time()
        pred = model(xv)
        predict_s = (time.perf_counter() - t0) / n_test
        predict_cpu_s = (time.process_time() - c0) / n_test
        err = rel(pred.double(), yv.double()).numpy()
    return {"family": fam.name, "dim": fam.dim, "model": "fno",
            "rel_l2_median": float(np.median(err)), "rel_l2_p95": float(np.quantile(err, 0.95)),
            "train_s": train_s, "predict_s": predict_s, "n_params": int(n_params),
            "train_cpu_s": train_cpu_s, "predict_cpu_s": predict_cpu_s,
            "n_train": n - n_test, "n_test": n_test,
            "net": f"neuralop FNO(n_modes={(modes,) * fam.dim}, hidden_channels={hidden}, "
                   f"in_channels={x.shape[1]}), float32",
            "optimizer": f"Adam(lr=1e-3, cosine, {epochs} epochs, batch 32), mean rel L2",
            "final_loss": float(loss.detach()), "load_at_start": load}


def _data(fam, path, n):
    """The family's data set of ``n`` instances at ``path``: generated as tasks on the embedded
    cluster (2 x 1 thread), or the complete one already there with the same family, seed 0 and
    ``n`` (another chunking of ``mu`` along the points reads the same numbers); ``data_s``
    None then."""
    from daskie.operator import generate_dataset
    from daskie.store.dataset import OperatorDataset

    if os.path.exists(path):
        old = OperatorDataset.open(path)
        if old.complete and old.n == n and old.spec.get("seed") == 0 \
                and old.spec.get("family") == fam.describe():
            return None
    from harness import embedded_cluster

    t0 = time.perf_counter()
    with embedded_cluster(2, 1) as client:
        generate_dataset(fam, path, n, seed=0, client=client)
    return time.perf_counter() - t0


def _kept(path, families, no_deeponet, no_fno):
    """The rows of ``path`` this run does not replace."""
    import json

    if not os.path.exists(path):
        return []
    models = [m for m, off in (("deeponet", no_deeponet), ("fno", no_fno)) if not off]
    with open(path) as fh:
        rows = json.load(fh)
    return [r for r in rows if not (r.get("family") in families and r.get("model") in models)]


def main(argv=None) -> int:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from harness import write_records

    from daskie.problems.families import family

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", nargs="+",
                    default=["fredholm-1d-width", "volterra-1d-decay", "fredholm-2d-fine"])
    ap.add_argument("--n", type=int, help="instances (default: the family's training.n)")
    ap.add_argument("--test", type=int,
                    help="held-out instances (default: learn_operator's, min(200, n / 5))")
    ap.add_argument("--steps", type=int,
                    help="DeepONet's optimizer steps (default: the family's training.steps)")
    ap.add_argument("--fno-epochs", type=int, default=300)
    ap.add_argument("--fno-epochs-2d", type=int, default=40)
    ap.add_argument("--fno-hidden-2d", type=int, default=32)
    ap.add_argument("--fno-modes-2d", type=int, default=12)
    ap.add_argument("--no-fno", action="store_true")
    ap.add_argument("--no-deeponet", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both models")
    ap.add_argument("--dir", default="/tmp/daskie-rivals")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "operator_rivals.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows already in --out of (family, model) pairs this run "
                         "does not measure")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)  # both models on the same threads
    os.makedirs(args.dir, exist_ok=True)
    command = "benchmarks/operator_rivals.py " + " ".join(argv if argv is not None
                                                          else sys.argv[1:])
    records = []
    kept = _kept(args.out, args.families, args.no_deeponet, args.no_fno) if args.merge else []
    for name in args.families:
        fam = family(name)
        two = fam.dim >= 2
        n = args.n or fam.training.n
        n_test = args.test or min(200, n // 5)
        path = os.path.join(args.dir, f"{name}-{n}.zarr")
        data_s = _data(fam, path, n)
        if not args.no_deeponet:
            rec = deeponet(fam, path, n, n_test, args.steps)
            records.append({**rec, "data_s": data_s, "command": command})
            print(rec, flush=True)
            write_records(args.out, kept + records)
        if not args.no_fno:
            rec = fno(fam, path, n, n_test, args.fno_epochs_2d if two else args.fno_epochs,
                      modes=args.fno_modes_2d if two else 16,
                      hidden=args.fno_hidden_2d if two else 32)
            records.append({**rec, "command": command})
            print(rec, flush=True)
            write_records(args.out, kept + records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
