"""Issue 29: one DeepONet training on a family's data set, its held-out error as it goes.

    python benchmarks/operator_train.py FAMILY DATA.zarr [--ntrain 3000] [--ntest 200]
        [--branch 64 64] [--trunk 20 20] [--width 20] [--steps 5000] [--lr 3e-3]
        [--decay 5e-4] [--ridge 1e-9] [--opt lshead|adam|lm] [--window 1000]

Trains on instances ``[0, ntrain)`` of the data set and measures on its last ``ntest``, in
this process (one rank, one torch thread, ``OperatorDataParallel(shards=1, window=...)``),
the integral term only (``OperatorLoss(skip=True)``), seed 0. With the family's defaults
(``--branch/--trunk/--width/--steps/--lr/--decay/--ridge`` as its ``training``) it is the same
run as ``benchmarks/operator_rivals.py``'s DeepONet (windows only checkpoint: the numbers do
not depend on them). Every window prints the loss and ``~rel`` (the root of the records' test
MSE over at most 64 held-out instances, divided by the RMS of their mu: an estimate of the
relative L2 error); the last line, ``RESULT {...}``, is the held-out evaluation
(:func:`daskie.operator.evaluation.evaluate`): median, p95 and max relative L2, train wall and
CPU seconds, one prediction's wall seconds (the held-out instances in one call), parameters,
the load average.
"""
import argparse, json, os, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
from daskie.nn import MLP, DeepONet
from daskie.operator import OperatorDataParallel, OperatorLoss, fit_operator
from daskie.operator.evaluation import evaluate
from daskie.operator.formulation import n_branch_inputs
from daskie.problems.families import family
from daskie.store.dataset import OperatorDataset
from daskie.train import Adam, LeastSquaresHead, LevenbergMarquardt

ap = argparse.ArgumentParser()
ap.add_argument("name"); ap.add_argument("path")
ap.add_argument("--ntrain", type=int, default=3000); ap.add_argument("--ntest", type=int, default=200)
ap.add_argument("--branch", type=int, nargs="*", default=[64, 64])
ap.add_argument("--trunk", type=int, nargs="+", default=[20, 20])
ap.add_argument("--width", type=int, default=20)
ap.add_argument("--steps", type=int, default=5000); ap.add_argument("--lr", type=float, default=3e-3)
ap.add_argument("--decay", type=float, default=5e-4); ap.add_argument("--ridge", type=float, default=1e-9)
ap.add_argument("--opt", default="lshead"); ap.add_argument("--window", type=int, default=1000)
ap.add_argument("--act", default="tanh")
a = ap.parse_args()
fam = family(a.name)
store = OperatorDataset.open(a.path)
n = store.n
m = n_branch_inputs(fam, len(store.sensors))
branch = None if a.branch == [0] else MLP(hidden=tuple(a.branch), activation=a.act)
net = DeepONet(m, fam.dim, branch=branch, trunk=MLP(hidden=tuple(a.trunk), activation=a.act), width=a.width)
if a.opt == "lshead":
    opt = LeastSquaresHead(Adam(lr=a.lr, decay=a.decay, steps=a.steps), ridge=a.ridge)
elif a.opt == "adam":
    opt = Adam(lr=a.lr, decay=a.decay, steps=a.steps)
else:
    opt = LevenbergMarquardt(steps=a.steps)
train, test = (0, a.ntrain), (n - a.ntest, n)
mu = store.read(*test, names=("mu",))["mu"]
rms = float(np.sqrt((mu ** 2).mean()))
t0 = time.perf_counter(); c0 = time.process_time()
def on_window(k, outputs):
    r = outputs[0].records[-1]
    mse = r.get("mse")
    print(f"win {k} epoch {r['epoch']} loss {r['loss']:.3e} ~rel {np.sqrt(mse)/rms if mse else float('nan'):.3e} t {time.perf_counter()-t0:.0f}s", flush=True)
op, hist = fit_operator(fam, a.path, loss=OperatorLoss(net, skip=True), client="sync", optimizer=opt,
                        strategy=OperatorDataParallel(shards=1, window=a.window), train=train, test=test,
                        on_window=on_window)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
ev = evaluate(op, store, test, train)
rows = store.read(*test)
inputs, skip = op.inputs(rows["params"]), fam.skip_values(rows["params"], store.query)
op(inputs[:4], skip_at_x=skip[:4])
t0 = time.perf_counter()
op(inputs, skip_at_x=skip)
predict_s = (time.perf_counter() - t0) / len(inputs)
out = {"family": a.name, **ev.attrs, "train_s": wall, "train_cpu_s": cpu, "predict_s": predict_s,
       "n_params": int(op.theta.numel()), "steps": a.steps,
       "net": repr(net), "opt": repr(opt), "ntrain": a.ntrain, "load": os.getloadavg()[0]}
print("RESULT", json.dumps(out), flush=True)
