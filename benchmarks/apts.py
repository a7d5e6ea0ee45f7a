"""APTS and SAPTS (seed 004) against tuned Adam on a classification set, and APTS on E1.

    nice python benchmarks/apts.py [--quick] [--skip-cluster] [--out results.json]

Prints two tables and writes a JSON list of flat records (with accuracy / MSE curves) with
``--out``. The default run takes ~6 minutes on 2 shared cores (``--quick``: one seed, ~3).
Needs scikit-learn for the data (``pip install -e ".[bench]"``).

Classification (seed 004 section 3, smaller): scikit-learn's ``digits`` (1797 8x8 images,
shipped inside the package: no download), a seeded 80/20 train/validation split, inputs / 16,
a [64, 32, 10] tanh MLP, cross entropy, float64, one torch thread; every method runs from the
same initialisations (seeds 0, 1, 2) for 100 epochs:

* Adam: minibatches of 64 rows, learning rates 1e-4 ... 1e-1 (7 of them); the rate with the
  best mean final validation accuracy is "tuned Adam" (the paper: best of 13 rates, 10 trials);
* APTS with 1, 2 and 4 subdomains, its default options (untuned): one iteration per epoch
  (D is the whole training set);
* SAPTS with 1, 2 and 4 microbatches, minibatches of 256 rows, 5 % overlap (the paper's).

The target: APTS with 2 subdomains within 2 accuracy points of tuned Adam (final validation
accuracy, mean over the seeds).

Integral equation E1: ``QuadratureCollocation(MLP((16, 16, 16)), points=1024)`` through
``daskie.solve``: APTS with 1, 2 and 4 subdomains (30 iterations, data shards from the
formulation) against the plain trust-region method and Levenberg-Marquardt (60 steps each, in
one task), MSE on the held-back points after every iteration, serial (``client="sync"``).
Unless ``--skip-cluster``, APTS with 2 subdomains also runs on a LocalCluster of 2 workers
(same numbers, wall time with the task overheads).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

import daskie
from daskie import MLP, QuadratureCollocation
from daskie.strategies import APTS, SAPTS
from daskie.train.module import ModuleObjective
from daskie.train.optimizers import LevenbergMarquardt
from daskie.train.trust_region import TrustRegion

EPOCHS = 100
ADAM_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
ADAM_BATCH = 64


# --- classification ---------------------------------------------------------------------------
def digits():
    """Train and validation tensors of scikit-learn's digits (a seeded 80/20 split)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float64)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_train = int(0.8 * len(x))
    tr, va = perm[:n_train], perm[n_train:]
    return (x[tr], y[tr]), (x[va], y[va])


def mlp(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 10)).double()


def accuracy(model, data):
    with torch.no_grad():
        return float((model(data[0]).argmax(1) == data[1]).double().mean())


def adam_run(lr, seed, train, val):
    net = mlp(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1000 + seed)
    n = len(train[0])
    curve, t0 = [], time.perf_counter()
    for epoch in range(1, EPOCHS + 1):
        for idx in torch.randperm(n, generator=g).split(ADAM_BATCH):
            opt.zero_grad()
            loss = loss_fn(net(train[0][idx]), train[1][idx])
            loss.backward()
            opt.step()
        with torch.no_grad():
            full = float(loss_fn(net(train[0]), train[1]))
        curve.append([epoch, time.perf_counter() - t0, accuracy(net, val), full])
    return {"curve": curve, "grad_calls": EPOCHS * math.ceil(n / ADAM_BATCH)}


def trust_region_run(strategy, seed, train, val, client="sync"):
    net = mlp(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    objective = ModuleObjective(net, loss_fn, train)
    curve = []

    def window(w, outputs):
        rec = outputs[0].records[-1]
        model = objective.load(outputs[0].state.theta)
        curve.append([rec["data_epoch"], rec["wall_s"], accuracy(model, val), rec["loss"]])

    _, hist = daskie.fit(net, loss_fn, train, strategy, seed=seed, on_window=window, client=client)
    return {"curve": curve, "grad_calls": hist[-1]["grad_calls"],
            "accepted": statistics.mean(r["accepted"] for r in hist),
            "accepted_global": statistics.mean(r["accepted_global"] for r in hist),
            "final_radius": hist[-1]["radius"]}


def summarise(method, runs, **extra):
    finals = [r["curve"][-1][2] for r in runs]
    return {"experiment": "digits", "method": method, **extra,
            "epochs": runs[0]["curve"][-1][0], "seeds": len(runs),
            "val_acc": statistics.mean(finals),
            "val_acc_std": statistics.pstdev(finals) if len(finals) > 1 else 0.0,
            "best_val_acc": statistics.mean(max(c[2] for c in r["curve"]) for r in runs),
            "wall_s": statistics.mean(r["curve"][-1][1] for r in runs),
            "grad_calls": runs[0]["grad_calls"],
            "train_loss": statistics.mean(r["curve"][-1][3] for r in runs),
            "curves": [r["curve"] for r in runs],
            **{k: statistics.mean(r[k] for r in runs) for k in ("accepted", "accepted_global")
               if k in runs[0]}}


def print_digits(r):
    n = r.get("subdomains", "")
    tag = f"lr {r['lr']:g}" if "lr" in r else f"N = {n}"
    print(f"{r['method']:<8}{tag:<12}{r.get('where', 'serial'):<9}{r['epochs']:>7.0f}"
          f"{100 * r['val_acc']:>10.2f} +- {100 * r['val_acc_std']:<5.2f}{100 * r['best_val_acc']:>8.2f}"
          f"{r['train_loss']:>11.2e}{r['wall_s']:>9.2f}{r['grad_calls']:>8}", flush=True)


def digits_rows(seeds, records, client):
    train, val = digits()
    print(f"digits: {len(train[0])} train / {len(val[0])} validation rows, [64, 32, 10] tanh, "
          f"{EPOCHS} epochs, seeds {list(seeds)}")
    print(f"{'method':<8}{'':<12}{'where':<9}{'epochs':>7}{'val acc % +- std':>19}{'best %':>8}"
          f"{'loss':>11}{'wall s':>9}{'grads':>8}")
    adam = []
    for lr in ADAM_RATES:
        row = summarise("Adam", [adam_run(lr, s, train, val) for s in seeds], lr=lr)
        adam.append(row)
        records.append(row)
        print_digits(row)
    tuned = max(adam, key=lambda r: r["val_acc"])
    runs = {}
    for n in (1, 2, 4):
        strategy = APTS(subdomains=n, epochs=EPOCHS, checkpoint_every=2)
        runs[n] = summarise("APTS", [trust_region_run(strategy, s, train, val) for s in seeds],
                            subdomains=n)
        records.append(runs[n])
        print_digits(runs[n])
    for n in (1, 2, 4):
        strategy = SAPTS(subdomains=n, minibatch=256, overlap=0.05, epochs=EPOCHS,
                         checkpoint_every=6)
        row = summarise("SAPTS", [trust_region_run(strategy, s, train, val) for s in seeds],
                        subdomains=n, minibatch=256, overlap=0.05)
        records.append(row)
        print_digits(row)
    if client is not None:
        for n in (2, 4):
            strategy = APTS(subdomains=n, epochs=EPOCHS, checkpoint_every=2)
            row = summarise("APTS", [trust_region_run(strategy, seeds[0], train, val, client)],
                            subdomains=n, where="cluster")
            records.append(row)
            print_digits(row)
    gap = 100 * (tuned["val_acc"] - runs[2]["val_acc"])
    met = gap <= 2.0
    records.append({"experiment": "digits-target", "tuned_adam_lr": tuned["lr"],
                    "tuned_adam_val_acc": tuned["val_acc"], "apts2_val_acc": runs[2]["val_acc"],
                    "gap_points": gap, "target_points": 2.0, "met": met})
    print(f"tuned Adam (lr {tuned['lr']:g}) {100 * tuned['val_acc']:.2f} %, APTS N = 2 (untuned) "
          f"{100 * runs[2]['val_acc']:.2f} %: gap {gap:+.2f} points, target <= 2: "
          f"{'met' if met else 'NOT met'}")


# --- integral equation E1 -----------------------------------------------------------------------
def e1_row(records, name, client="sync", **kw):
    formulation = QuadratureCollocation(net=MLP(hidden=(16, 16, 16)), points=1024)
    t0 = time.perf_counter()
    ds = daskie.solve("E1", formulation=formulation, client=client, **kw)
    wall = time.perf_counter() - t0
    if kw.get("strategy") is not None:  # one summary record (with the MSE) per iteration
        joint = ds.history_kind.values == "window"
        its, mse = ds.history_epoch.values[joint], ds.history_mse.values[joint]
        times = ds.history_elapsed_s.values[joint]
    else:
        have = ~(ds.history_mse.values != ds.history_mse.values)
        its, mse = ds.history_epoch.values[have], ds.history_mse.values[have]
        times = ds.history_wall_s.values[have]
    curve = [[int(i), float(t), float(m)] for i, t, m in zip(its, times, mse)]
    row = {"experiment": "E1", "method": name, "where": "cluster" if client != "sync" else "serial",
           "iterations": int(ds.attrs["epochs"]), "mse": float(ds.attrs["mse"]),
           "loss": float(ds.attrs["loss"]), "wall_s": wall, "curve": curve}
    if kw.get("strategy") is not None:
        sel = ds.history_optimizer.values == "APTS"
        row["accepted"] = float(ds.history_accepted.values[sel].astype(float).mean())
        row["grad_calls"] = int(ds.history_grad_calls.values[sel][-1])
    records.append(row)
    mid = next((c for c in curve if c[0] >= row["iterations"] // 2), curve[-1])
    print(f"{name:<22}{row['where']:<9}{row['iterations']:>6}{mid[2]:>12.2e}{row['mse']:>12.2e}"
          f"{row['loss']:>12.2e}{wall:>9.1f}{row.get('accepted', float('nan')):>10.2f}", flush=True)


def e1_rows(records, client):
    print("\nE1, QuadratureCollocation(MLP((16, 16, 16)), points=1024), MSE on 1000 held-back points")
    print(f"{'method':<22}{'where':<9}{'its':>6}{'MSE half':>12}{'MSE':>12}{'loss':>12}{'wall s':>9}"
          f"{'accepted':>10}")
    for n in (1, 2, 4):
        e1_row(records, f"APTS N={n}", strategy=APTS(subdomains=n, epochs=30, checkpoint_every=1))
    e1_row(records, "TrustRegion (GN)", optimizer=TrustRegion(steps=60), eval_every=1)
    e1_row(records, "LevenbergMarquardt", optimizer=LevenbergMarquardt(steps=60), eval_every=1)
    if client is not None:
        e1_row(records, "APTS N=2", client=client,
               strategy=APTS(subdomains=2, epochs=30, checkpoint_every=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed instead of three")
    ap.add_argument("--skip-cluster", action="store_true", help="skip the LocalCluster runs")
    ap.add_argument("--out", help="write the records as a JSON list to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seeds = (0,) if args.quick else (0, 1, 2)
    records = []
    t0 = time.perf_counter()
    if args.skip_cluster:
        digits_rows(seeds, records, None)
        e1_rows(records, None)
    else:
        from daskie.cluster import local_cluster

        with local_cluster(workers=2) as client:
            digits_rows(seeds, records, client)
            e1_rows(records, client)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.out:
        write_json(records, args.out)


def write_json(records, path):
    """One record per line, curve values to 5 significant digits (the file stays small)."""
    def short(v):
        if isinstance(v, float):
            return float(f"{v:.5g}")
        return [short(x) for x in v] if isinstance(v, list) else v

    lines = [json.dumps({k: short(v) if k == "curves" or k == "curve" else v for k, v in r.items()},
                        default=float) for r in records]
    with open(path, "w") as fh:
        fh.write("[\n" + ",\n".join(lines) + "\n]\n")


if __name__ == "__main__":
    main()
