"""Compressed and quantized networks on E1-E4 (order reduction), seed 003.

Every network trains the same order-reduction discretization (same points, same seed) with
the same optimizer and the same number of steps as its dense full-precision baseline
(``--optimizer lm``: Levenberg-Marquardt, Levenberg damping; ``--optimizer adam``: Adam at
``--lr`` with seed 000's decay, PINN-style first-order training), in one process and one
torch thread:

* ``dense`` -- :class:`daskie.nn.MLP`, float64 (the baseline; one per width);
* ``tt`` -- :class:`daskie.nn.TTMLP`: the hidden-to-hidden layers as tensor-train cores;
* ``int8`` / ``mx`` -- the dense network with weights and hidden activations quantized in the
  forward pass (:class:`~daskie.nn.Int8`, :class:`~daskie.nn.MX`), float64 master weights,
  straight-through gradients; ``int8row`` (record ``network`` ``int8``, ``quant``
  ``int8-row``) with one weight scale per output row instead of one per tensor;
* ``stein`` -- the dense network with the chain derivatives dF_{i,m}/dt_m estimated by a
  seeded Stein estimator (:class:`daskie.formulations.stein.Stein`) instead of autodiff;
  the record adds the estimator's standard error and its gap to the autodiff derivative at
  the trained parameters.

One record per problem x network: ``problem``, ``network``, ``hidden``, ``optimizer``
(``lm``, ``adam``), ``lr`` (Adam), ``baseline`` (the dense record it is compared with),
``n_params``, ``bytes`` (parameters as the forward pass reads them), ``mse`` (1000
held-back Sobol points), ``loss``, ``steps``, ``wall_s``,
``step_s``, ``jacobian_s`` and ``loss_grad_s`` (medians of 5 at the trained parameters: what an
LM step builds before its solve, and what an Adam step costs), ``mse_ratio`` (against its
baseline), ``param_ratio`` (baseline / this) and the cost ratios.

The representation floor of the quantized formats: every dense record carries ``ptq_mse``
and ``ptq_loss``, the MSE and the training loss of its trained float64 parameters read
through each format after training (post-training quantization, no retraining: ``int8``,
``int8-row``, the weights-only ``int8-wonly`` / ``int8-row-wonly``, ``int12``, ``int16``,
``mx``); a quantized record carries ``ptq_floor`` and ``ptq_floor_loss``, those figures for
its own format. Quantization-aware training may land
somewhat below it (it adapts the weights to the grid), but where the dense run goes far
below the floor of a format, that format is not expected to follow it within 10x.

    python benchmarks/compression.py --out benchmarks/results/compression/compression.json

The default (E1-E4, widths 16 for int8/mx/stein, TT of width 32 against a dense width 16)
takes a few minutes; ``--tt-dense`` adds the dense width-32 baseline the TT network
factorises (about 10-20 s per LM step at 6.8k parameters on one thread).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import write_records  # noqa: E402


def ptq_formats(args):
    """``{label: quantizer}`` of the post-training-quantization floor (``ptq_mse``)."""
    from daskie.nn import MX, Int8

    return {"int8": Int8(), "int8-row": Int8(weight_scale="row"),
            "int8-wonly": Int8(activations=False),
            "int8-row-wonly": Int8(weight_scale="row", activations=False),
            "int12": Int8(bits=12), "int16": Int8(bits=16), "mx": MX(block=args.mx_block)}


def networks(args):
    """``{name: (net, derivative, baseline)}`` of the run."""
    from daskie.formulations.stein import Stein
    from daskie.nn import MLP, MX, TTMLP, Int8

    small, wide = tuple(args.width for _ in range(3)), tuple(args.tt_width for _ in range(3))
    out = {"dense": (MLP(hidden=small), "autodiff", None)}
    if args.tt_dense:
        out["dense-wide"] = (MLP(hidden=wide), "autodiff", None)
    out["tt"] = (TTMLP(hidden=wide, ranks=args.tt_rank, cores=args.tt_cores), "autodiff",
                 "dense-wide" if args.tt_dense else "dense")
    out["int8"] = (MLP(hidden=small, quant=Int8()), "autodiff", "dense")
    out["int8row"] = (MLP(hidden=small, quant=Int8(weight_scale="row")), "autodiff", "dense")
    out["mx"] = (MLP(hidden=small, quant=MX(block=args.mx_block)), "autodiff", "dense")
    out["stein"] = (MLP(hidden=small), Stein(samples=args.stein_samples, width=args.stein_width,
                                             seed=0), "dense")
    return out


def _median_time(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[repeats // 2]


def _loss_grad(obj, theta):
    from daskie.train.objective import loss_and_grad

    return loss_and_grad(obj.loss, theta)


def optimizer(args):
    """The optimizer of every run: ``(short name, optimizer)``."""
    from daskie import Adam, LevenbergMarquardt

    if args.optimizer == "adam":
        return "adam", Adam(lr=args.lr, decay=args.decay, steps=args.steps)
    return "lm", LevenbergMarquardt(steps=args.steps, scaling="levenberg")


def ptq(form, problem, theta, seed, formats):
    """``(mse, loss)``: dicts of the MSE and the training loss of the trained full-precision
    ``theta`` read through each quantization format (post-training quantization: the same
    parameters, the network's ``quant`` replaced)."""
    from dataclasses import replace

    import torch

    from daskie.train import Objective

    mse, loss = {}, {}
    for label, quant in formats.items():
        qform = replace(form, net=replace(form.net, quant=quant))
        qobj = Objective(qform.discretize(problem, seed=seed))
        mse[label] = float(qobj.mse(theta))
        with torch.no_grad():
            loss[label] = float(qobj.loss(theta))
    return mse, loss


def run_one(problem_name, name, net, derivative, args):
    """Train one network; its record."""
    import torch

    from daskie import OrderReduction, catalog
    from daskie.formulations.stein import Stein, stein_derivative
    from daskie.train import Objective

    problem = catalog.get(problem_name)
    form = OrderReduction(net=net, points=args.points, aux_points=args.aux_points, derivative=derivative)
    disc = form.discretize(problem, seed=args.seed)
    obj = Objective(disc)
    theta = obj.init_params(args.seed)
    opt_name, opt = optimizer(args)
    state = opt.init_state(obj, theta)
    loss, steps = float("nan"), 0
    t0 = time.perf_counter()
    for k in range(args.steps):
        theta, state, info = opt.step(obj, theta, state, k)
        loss, steps = float(info["loss"]), k + 1
    wall = time.perf_counter() - t0
    # The pieces a step is made of, back to back (medians of 5): the residuals and their
    # Jacobian (what an LM step builds before its P x P solve) and loss + gradient (an Adam step)
    jac_s = _median_time(lambda: obj.jacobian(theta))
    grad_s = _median_time(lambda: _loss_grad(obj, theta))
    in_dims = {s.name: s.in_dim for s in disc.submodels.values()}
    rec = {"problem": problem_name, "network": name.replace("-wide", "").replace("int8row", "int8"),
           "hidden": list(net.hidden), "optimizer": opt_name, "lr": args.lr if opt_name == "adam" else None,
           "n_params": obj.layout.total,
           "bytes": sum(disc.submodels[n].net.nbytes(in_dims[n]) for n in disc.submodels),
           "mse": float(obj.mse(theta)), "loss": loss, "steps": steps, "wall_s": wall,
           "step_s": wall / max(steps, 1), "jacobian_s": jac_s, "loss_grad_s": grad_s,
           "derivative": disc.info.get("derivative"),
           "quant": None if net.quant is None else net.quant.label}
    if net.quant is None and derivative == "autodiff" and not hasattr(net, "dense_params"):
        rec["ptq_mse"], rec["ptq_loss"] = ptq(form, problem, theta, args.seed, ptq_formats(args))
    if hasattr(net, "dense_params"):
        rec.update(tt_ranks=list(net.ranks), tt_cores=net.cores,
                   dense_params=sum(net.dense_params(d) for d in in_dims.values()))
    if isinstance(derivative, Stein):
        # The estimator at the trained parameters: its standard error (a second, independent
        # draw stream) and its gap to the autodiff derivative, on each chain's points.
        params = obj.layout.split(theta)
        se, gap, scale = [], [], []
        for key, ev in disc.evaluations.items():
            sub = disc.submodels[ev.submodel]
            if not key.startswith("dF"):
                continue
            centres = ev.points.view(-1, 2 * derivative.samples, ev.points.shape[1]).mean(dim=1)
            axis = problem.dim  # t_m, the first coordinate after X
            with torch.no_grad():
                est, err = stein_derivative(lambda z, s=sub, p=params[ev.submodel]: s.apply(p, z),
                                            centres, axis, derivative, stream=999)
                exact = sub.apply_derivative(params[ev.submodel], centres, axis)
            se.append(err)
            gap.append((est - exact).abs())
            scale.append(exact.abs())
        se, gap, scale = torch.cat(se), torch.cat(gap), torch.cat(scale)
        rec.update(stein_samples=derivative.samples, stein_width=derivative.width,
                   stein_se_median=float(se.median()), stein_se_max=float(se.max()),
                   stein_gap_median=float(gap.median()), stein_gap_max=float(gap.max()),
                   derivative_abs_median=float(scale.median()))
    return rec


def main(argv=None):
    """Run the benchmark and write the records."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON file of records")
    p.add_argument("--problems", default="E1,E2,E3,E4")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps of every run")
    p.add_argument("--optimizer", choices=("lm", "adam"), default="lm",
                   help="Levenberg-Marquardt (Levenberg damping) or Adam, for every network")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's initial learning rate")
    p.add_argument("--decay", type=float, default=1e-3, help="Adam's schedule lr / (1 + decay k)")
    p.add_argument("--points", type=int, default=256)
    p.add_argument("--aux-points", type=int, default=512)
    p.add_argument("--width", type=int, default=16, help="hidden width (3 layers) of dense/int8/mx/stein")
    p.add_argument("--tt-width", type=int, default=32, help="hidden width (3 layers) of the TT network")
    p.add_argument("--tt-rank", type=int, default=2)
    p.add_argument("--tt-cores", type=int, default=3)
    p.add_argument("--tt-dense", action="store_true",
                   help="also train the dense network of the TT widths (the TT's own baseline; slow)")
    p.add_argument("--mx-block", type=int, default=8)
    p.add_argument("--stein-samples", type=int, default=4)
    p.add_argument("--stein-width", type=float, default=0.02)
    p.add_argument("--only", default=None, help="comma-separated network names to run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    nets = networks(args)
    if args.only:
        keep = set(args.only.split(","))
        nets = {k: v for k, v in nets.items() if k in keep}
    records = []
    for prob in [s for s in args.problems.split(",") if s]:
        done = {}
        for name, (net, derivative, baseline) in nets.items():
            rec = run_one(prob, name, net, derivative, args)
            base = done.get(baseline)
            if net.quant is not None and base is not None and "ptq_mse" in base:
                rec["ptq_floor"] = base["ptq_mse"].get(net.quant.label)
                rec["ptq_floor_loss"] = base["ptq_loss"].get(net.quant.label)
            rec["baseline"] = None if baseline is None else f"dense{list(nets[baseline][0].hidden)}"
            if base is not None:
                rec["mse_ratio"] = rec["mse"] / base["mse"]
                rec["param_ratio"] = base["n_params"] / rec["n_params"]
                rec["bytes_ratio"] = base["bytes"] / rec["bytes"]
                rec["step_cost_ratio"] = rec["step_s"] / base["step_s"]
                rec["jacobian_cost_ratio"] = rec["jacobian_s"] / base["jacobian_s"]
                rec["loss_grad_cost_ratio"] = rec["loss_grad_s"] / base["loss_grad_s"]
            done[name] = rec
            records.append(rec)
            print(f"{prob:3s} {name:10s} P={rec['n_params']:5d} bytes={rec['bytes']:6d} "
                  f"mse={rec['mse']:.2e} loss={rec['loss']:.2e} {rec['step_s']:.2f} s/step"
                  + (f"  mse x{rec['mse_ratio']:.2f} params /{rec['param_ratio']:.1f}" if base else ""),
                  flush=True)
    write_records(args.out, records, benchmark="compression", optimizer_spec=repr(optimizer(args)[1]),
                  formulation=f"OrderReduction(points={args.points}, aux_points={args.aux_points})",
                  test_set="1000 held-back scrambled-Sobol points")


if __name__ == "__main__":
    main()
