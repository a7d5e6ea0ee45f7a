"""The ``daskie`` command: ``list``, ``plan NAME``, ``solve NAME``, ``operator FAMILY``,
``report PATH``, ``metrics``.

Bad input prints one line (``daskie: error: ...``) and exits with status 2, no traceback:
options are checked by argparse (types and ranges), paths before anything starts (a store
under a file, in ``/proc``, without write permission; a report's output directory), the rest
by daskie's own named errors. Ctrl-C prints one line and exits with 130 (a second Ctrl-C
during the shutdown ends the process at once); a closed pipe (``daskie list --json | head``)
ends it quietly with 141, as other Unix tools do. Defaults come from dask's configuration
(:mod:`daskie.config`), so ``DASK_DASKIE__WORKERS=4 daskie solve E1`` uses four workers.
``solve`` reports progress on stderr: a progress bar (epochs, loss, test MSE, ETA) when stderr
is a terminal, one line per window otherwise (logs, pipes), nothing under ``--json`` or
``--quiet``; the address of the run's live page on the Dask dashboard comes first.
``operator`` learns a family's solution operator (data set as tasks, data-parallel DeepONet
training) and reports one line per data block batch and per window on stderr the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"daskie: error: {message}\n")


class _Help(argparse.HelpFormatter):
    """Shows every option's default as ``(default: ...)``, unless its help says it already.

    Flags (``store_true``) show nothing: their default is always off.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: {action.default})"


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None
        if value < low:
            kind = "a positive int" if low == 1 else f"an int >= {low}"
            raise argparse.ArgumentTypeError(f"must be {kind}, got {value}")
        return value
    parse.__name__ = "int"
    return parse


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be a number > 0, got 0")
    return value


def _tolerance(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be a relative error in (0, 1), such as 1e-6, "
                                         f"got {text}")
    return value


def _cluster(text: str) -> str:
    from daskie.cluster import KINDS, is_address

    if text in KINDS or is_address(text):
        return text
    raise argparse.ArgumentTypeError(f"must be {', '.join(KINDS)} or a scheduler address "
                                     f"such as tcp://host:8786, got {text!r}")


def _formulation(name: str, args):
    from daskie.formulations import OrderReduction, QuadratureCollocation
    from daskie.nn import MLP

    net = MLP(hidden=tuple(args.hidden)) if args.hidden else MLP()
    # --points 0 is refused by argparse; None means the formulation's default.
    if name == "quadrature":
        return QuadratureCollocation(net=net, **({"points": args.points} if args.points else {}))
    if name == "order-reduction":
        return OrderReduction(net=net, **({"points": args.points} if args.points else {}))
    raise ValueError(name)


def _optimizer(name: str, steps: int | None, formulation):
    from daskie.api import default_optimizer
    from daskie.train import LBFGS, Adam

    if name == "lm":
        lm = default_optimizer(formulation)
        # an explicit count is obeyed: no convergence-based stopping cuts it short
        return lm if steps is None else type(lm)(**{**vars(lm), "steps": steps, "stop": None})
    if name == "adam":
        return Adam(steps=2000 if steps is None else steps)
    if name == "adam+lbfgs":
        n = 2500 if steps is None else steps
        return Adam(steps=4 * n // 5) >> LBFGS(steps=n - 4 * n // 5)
    raise ValueError(name)


def _strategy(name: str, window: int | None):
    from daskie.strategies import CEPTF, DataParallel, Monolithic

    if name == "monolithic":
        # Windows of 25 steps: a progress line and a checkpoint each (about 6 ms of Dask
        # overhead per window); --window 0 runs the whole training as one task.
        return Monolithic(window=25 if window is None else (window or None))
    if name == "data-parallel":
        return DataParallel(**({"window": window or None} if window is not None else {}))
    if name in ("model-parallel", "pipeline", "hybrid"):  # layer stages (Adam or L-BFGS)
        from daskie.strategies import Hybrid, ModelParallel, Pipeline

        kind = {"model-parallel": ModelParallel, "pipeline": Pipeline, "hybrid": Hybrid}[name]
        return kind(**({"window": window or None} if window is not None else {}))
    return CEPTF(**({"window": window} if window is not None else {}))


def _cmd_list(args) -> int:
    from daskie.problems import catalog

    rows = catalog.summaries()
    if args.json:
        print(json.dumps(rows), flush=True)
        return 0
    width = max(map(len, rows))
    for name, text in rows.items():
        print(f"{name:<{width}}  {text}")
    return 0


def _cmd_plan(args) -> int:
    from daskie.errors import check_int
    from daskie.plan import make_plan
    from daskie.problems import catalog

    problem = catalog.get(args.name)
    check_int("--points", args.points, allow_none=True)
    disc = _formulation(args.formulation, args).discretize(problem, seed=args.seed)
    plan = make_plan(disc, workers=args.workers, gpus=args.gpus)
    if not args.predict:
        print(plan.to_json() if args.json else plan.describe())
        return 0
    predictions = _predictions(plan, args.gpu_speed)
    if args.json:
        print(json.dumps({"plan": plan.to_dict(), "predictions": predictions}, indent=2))
        return 0
    print(plan.describe())
    for p in predictions:
        print(p["text"])
    return 0


def _predictions(plan, gpu_speed: float) -> list:
    """The scaling model's CEPTF steps for ``plan`` on seed 000's network (1 GbE, 0.3 ms):
    one rank per group, and, when the plan has more workers, every worker a rank
    (``CEPTF(shards=workers // N_sub)``). Step costs from the plan's flops at this host's
    measured rate; the GPU speed is the user's assumption (``--gpu-speed``)."""
    from daskie.plan import scaling

    costs = scaling.StepCosts.from_plan(plan, scaling.REPLICATED_FRACTION)
    shards = max(1, plan.workers // plan.n_sub)
    out = []
    for ranks in sorted({plan.n_sub, plan.n_sub * shards}):
        p = scaling.predict(plan, costs, scaling.GIGABIT, ranks=ranks, gpus=min(plan.gpus, ranks),
                            gpu_speed=gpu_speed, balance="speed")
        out.append({"ranks": p.ranks, "gpus": p.gpus, "step_s": p.step_s,
                    "compute_s": p.compute_s, "gather_s": p.gather_s, "reduce_s": p.reduce_s,
                    "seq_step_s": p.seq_step_s, "sr": p.sr, "assumptions": p.assumptions,
                    "text": p.describe()})
    return out


def _progress_printer(stream):
    def show(rec):
        if rec.get("kind") == "window":  # one line per completed window (daskie.records)
            stream.write(f"window {rec['window']:>4}  epoch {rec['epoch']:>5}  loss {rec['loss']:.3e}  "
                         f"mse {rec['mse']:.3e}\n")
            stream.flush()
    return show


class _Header:
    """The ``daskie: solving ...`` line, printed once the run has started (its first log
    line or progress record), so that an error found before that is the only line shown.

    ``on_show`` is called at that moment too (also when ``quiet`` prints nothing)."""

    def __init__(self, text: str, stream, quiet: bool = False):
        self.text, self.stream, self.shown, self.quiet = text, stream, False, quiet
        self.on_show = None

    def show(self):
        if not self.shown:
            self.shown = True
            if not self.quiet:
                self.stream.write(self.text + "\n")
                self.stream.flush()
            if self.on_show is not None:
                self.on_show()


class _HeaderFirst(logging.StreamHandler):
    def __init__(self, stream, header):
        super().__init__(stream)
        self.header = header

    def emit(self, record):
        self.header.show()
        if not self.header.quiet:
            super().emit(record)


def _show_dashboard_link(stream, header=None):
    """Print the live page's address, which ``solve`` logs on ``daskie.dashboard``."""
    handler = _HeaderFirst(stream, header) if header is not None else logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("daskie: %(message)s"))
    handler.daskie_cli = True
    log = logging.getLogger("daskie.dashboard")
    for old in [h for h in log.handlers if getattr(h, "daskie_cli", False)]:
        log.removeHandler(old)  # main() called again in one process: one line, current stream
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _cmd_report(args) -> int:
    from daskie.report import write_report

    if _is_operator_store(args.source):
        from daskie.report.operator import operator_report

        out = args.output or os.path.splitext(os.fspath(args.source).rstrip("/"))[0] + ".html"
        out = operator_report(args.source, out)
    else:
        out = write_report(args.source, args.output)
    if not args.quiet:
        print(f"daskie: wrote {out}", file=sys.stderr)
    return 0


def _is_operator_store(path) -> bool:
    """Whether ``path`` is the run store of an operator (``operator --store``)."""
    from daskie.store import RunStore

    if not os.path.isdir(path) or not RunStore.exists(path):
        return False
    with RunStore(path, mode="a") as runs:
        return "operator" in runs.read_meta()


def _cmd_metrics(args) -> int:
    from daskie.errors import SpecError
    from daskie.metrics import compare
    from daskie.store import RunStore

    for option, path in (("RUN", args.run), ("--baseline", args.baseline)):
        if not RunStore.exists(path):
            there = "nothing is there" if not os.path.lexists(path) else "it is not a run store"
            raise SpecError(f"{option} {path!r}: no daskie run store at that path ({there})")

    m = compare(args.baseline, args.run, args.target, write=not args.no_write)
    print(f"target {args.key or 'mse'} {m['target']:.3e}: T_seq {m['t_seq']:.2f} s, "
          f"T_par {m['t_par']:.2f} s, N_sub {m['n_sub']}, C_eff {m['c_ie']:.2f}")
    print(f"SR {m['sr']:.3f}  SE {m['se']:.3f}  CE {m['ce']:.3f}  ARTP {m['artp']:.3f}")
    if not args.no_write:
        print(f"daskie: wrote metrics_* into {args.run}", file=sys.stderr)
    return 0


def _cmd_solve(args) -> int:
    from daskie.api import solve

    from daskie.errors import SpecError
    from daskie.problems import catalog

    catalog.get(args.name)  # fail on bad input before any output
    if args.resume and args.overwrite:
        raise SpecError("--resume and --overwrite exclude each other")
    if args.resume and not args.store:
        raise SpecError("--resume needs the --store of the run to continue")
    if args.store:
        from daskie.store import RunStore

        mode = "a" if args.resume else ("w" if args.overwrite else "w-")
        RunStore.check(args.store, mode, probe=True)
        if args.resume and RunStore(args.store, mode="a").has_result:
            # Nothing to train: say so from the store, without starting a cluster.
            stored = RunStore(args.store, mode="a").read_meta()
            if stored.get("problem", args.name) != args.name:
                raise SpecError(f"--store {args.store!r} holds a run of {stored['problem']}, "
                                f"not {args.name}")
            return _print_summary(stored, args, note="already complete; nothing to resume")
    quiet = args.json or args.quiet
    formulation = _formulation(args.formulation, args)
    strategy = _strategy(args.strategy, args.window)
    optimizer = _optimizer(args.optimizer, args.steps, formulation)
    bar, shown = None, None
    header = _Header(f"daskie: solving {args.name} ({args.formulation}, {args.strategy}, "
                     f"{args.optimizer}) on {args.workers} worker(s)", sys.stderr, quiet=quiet)
    _show_dashboard_link(sys.stderr, header)
    if not quiet:
        if sys.stderr.isatty():
            from daskie.dashboard.progress import ProgressBar

            shown = bar = ProgressBar(optimizer.steps + strategy.polish_steps(), sys.stderr)
        else:
            shown = _progress_printer(sys.stderr)

    def progress(rec):
        header.show()
        if shown is not None:
            shown(rec)

    # The embedded cluster's worker processes inherit an ignored SIGINT, so that a Ctrl-C in
    # the terminal (sent to the whole process group) reaches only this process, which shuts
    # the cluster down; without it every worker prints its own KeyboardInterrupt traceback.
    # This process takes Ctrl-C again as soon as the run has started (header.show()). Only
    # while an embedded cluster spawns its workers: the workers of SLURM, PBS or an address
    # are not this terminal's processes, and Ctrl-C must end a wait for a queue at once.
    ignoring = (_spawns_workers(args.cluster) and threading_main()
                and signal.getsignal(signal.SIGINT) is _on_sigint)
    if ignoring:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        header.on_show = lambda: signal.signal(signal.SIGINT, _on_sigint)
    try:
        with contextlib.ExitStack() as stack:
            client = None
            if args.cluster:  # local, slurm, pbs or an address: daskie.cluster.make_cluster
                from daskie.cluster import make_cluster

                client = stack.enter_context(make_cluster(args.cluster, workers=args.workers))
            # the default optimizer as solve's own (a restart may vary it), an explicit one as given
            chosen = optimizer if args.optimizer != "lm" or args.steps is not None else None
            ds = solve(args.name, formulation=formulation, strategy=strategy,
                       optimizer=chosen, store=args.store, seed=args.seed, resume=args.resume,
                       overwrite=args.overwrite, workers=args.workers,
                       target_loss=args.target_loss, tol=args.tol, max_time=args.max_time,
                       device=args.device, dtype=args.dtype, progress=progress, client=client)
    finally:
        if ignoring and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, _on_sigint)
        if bar is not None:
            bar.close()
    return _print_summary(ds.attrs, args)


def _spawns_workers(cluster) -> bool:
    """Whether ``--cluster`` starts worker processes of this process (an embedded
    LocalCluster: none given, or ``local``), which must not see the terminal's Ctrl-C."""
    return cluster in (None, "local")


def _cmd_operator(args) -> int:
    from daskie.errors import SpecError
    from daskie.operator import learn_operator

    fam = _operator_family(args.family)  # a bad name or module fails before any output
    if args.n is None:  # the family's own default (OperatorDefaults.n), else 500
        args.n = getattr(getattr(fam, "training", None), "n", 500)
    if args.resume and not args.store:
        raise SpecError("--resume needs the --store of the run to continue")
    if args.test is not None and args.test >= args.n:
        raise SpecError(f"--test {args.test} leaves none of the --n {args.n} instances to train on")
    if args.store:
        from daskie.store import RunStore

        from daskie.errors import StoreExistsError

        try:
            RunStore.check(args.store, "a" if args.resume else "w-", probe=True)
        except StoreExistsError:
            raise StoreExistsError(f"--store {args.store!r} exists: give a new path, or "
                                   "--resume to continue the run in it") from None
    if args.report:
        from daskie.report.html import check_output

        check_output(args.report)
    net = _operator_net(fam, args)
    if args.optimizer == "lm":
        from daskie.train import LevenbergMarquardt

        optimizer = LevenbergMarquardt(steps=100 if args.steps is None else args.steps)
    elif args.optimizer in ("adam", "lshead"):
        from daskie.train import Adam, LeastSquaresHead

        optimizer = Adam(lr=args.lr, decay=args.decay,
                         steps=2000 if args.steps is None else args.steps)
        if args.optimizer == "lshead":
            if args.physics > 0:
                raise SpecError("--optimizer lshead solves the output layer of the data loss: "
                                "it needs --physics 0")
            optimizer = LeastSquaresHead(optimizer)
    else:
        from daskie.operator import default_optimizer

        optimizer = default_optimizer(net, args.steps, family=fam)
    strategy = _operator_strategy(args)
    from daskie.operator import OperatorLoss

    loss = OperatorLoss(net, data=1.0, physics=args.physics, skip=not args.no_skip)
    net = None
    quiet = args.json or args.quiet
    err = sys.stderr

    def on_block(k, written, total):
        if not quiet and (written == total or written % max(1, total // 10) == 0):
            err.write(f"data   {written:>5}/{total} blocks solved\n")
            err.flush()

    def on_window(k, outputs):
        if quiet:
            return
        last = outputs[0].records[-1] if outputs and outputs[0].records else None
        if last is not None:
            mse = last.get("mse")
            err.write(f"window {k:>4}  epoch {last['epoch']:>5}  loss {last['loss']:.3e}"
                      + (f"  test mse {mse:.3e}" if mse is not None else "") + "\n")
            err.flush()

    if not quiet:
        err.write(f"daskie: learning the operator of {fam.name} ({args.n} instances, "
                  f"{args.workers} worker(s))\n")
        err.flush()
    with contextlib.ExitStack() as stack:
        client = "sync" if args.workers == 0 else None
        if args.workers > 0:
            from daskie.cluster import make_cluster

            client = stack.enter_context(make_cluster(args.cluster or "local",
                                                      workers=args.workers))
        op = learn_operator(fam, args.n, data=args.data, test=args.test, net=net, loss=loss,
                            optimizer=optimizer, strategy=strategy, client=client,
                            seed=args.seed, data_seed=args.data_seed, sensors=args.sensors,
                            query=args.query, store=args.store, resume=args.resume,
                            on_block=on_block, on_window=on_window)
    ev = op.evaluation.attrs
    last = op.history[-1] if op.history else {}
    summary = {"family": fam.name, "n": args.n, "n_test": ev.get("n_test"),
               "rel_l2_median": ev.get("rel_l2_median"), "rel_l2_p95": ev.get("rel_l2_p95"),
               "rel_l2_max": ev.get("rel_l2_max"),
               "baseline_rel_l2_median": ev.get("baseline_rel_l2_median"),
               "epochs": last.get("epoch"), "loss": last.get("loss"),
               "wall_s": last.get("wall_s"), "n_params": int(op.theta.numel()),
               "optimizer": last.get("optimizer"),
               "split": op.split.split if op.split is not None else strategy.split,
               "split_reason": None if op.split is None else op.split.reason,
               "store": args.store and
               os.path.abspath(args.store), "report": None}
    if args.report:
        from daskie.report.operator import operator_report

        summary["report"] = operator_report(op, args.report)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{fam.name}: relative L2 median {summary['rel_l2_median']:.3e}  "
              f"p95 {summary['rel_l2_p95']:.3e} on {summary['n_test']} held-out instances "
              f"(mean-solution baseline {summary['baseline_rel_l2_median']:.3f})  "
              f"epochs {summary['epochs']}  params {summary['n_params']}"
              + (f"  store {summary['store']}" if summary["store"] else "")
              + (f"  report {summary['report']}" if summary["report"] else ""))
    return 0


def _operator_net(fam, args):
    """The DeepONet of ``daskie operator``: learn_operator's default, changed by the options."""
    from daskie.nn import MLP, DeepONet
    from daskie.operator import default_net
    from daskie.operator.data import sensor_points
    from daskie.operator.formulation import n_branch_inputs

    m = len(sensor_points(fam, args.sensors or getattr(fam, "sensors", None)
                          or (32 if fam.dim == 1 else 8)))
    base = default_net(fam, m)
    branch = base.branch
    if args.branch is not None:
        branch = None if args.branch == [0] else MLP(hidden=tuple(args.branch))
    trunk = base.trunk if args.hidden is None else MLP(hidden=tuple(args.hidden))
    return DeepONet(n_branch_inputs(fam, m), fam.dim, branch=branch, trunk=trunk,
                    width=base.width if args.width is None else args.width)


def _operator_family(spec: str):
    """The family ``daskie operator`` names: a built-in one, or ``module:attr`` /
    ``path/to/file.py:attr`` -- a Family or ParametricFamily, or a function of no arguments
    returning one."""
    from daskie.errors import SpecError
    from daskie.problems.families import FAMILIES, family
    from daskie.problems.parametric import check_family

    if ":" not in spec:
        return family(spec)
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise SpecError(f"a user family is MODULE:NAME or FILE.py:NAME, got {spec!r}")
    import importlib
    import importlib.util

    try:
        if where.endswith(".py"):
            if not os.path.isfile(where):
                raise SpecError(f"no file {where!r} (from family {spec!r})")
            mod_spec = importlib.util.spec_from_file_location(
                os.path.splitext(os.path.basename(where))[0], where)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module  # its functions pickle by reference
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ImportError as exc:
        raise SpecError(f"cannot import the module of family {spec!r}: {exc}; built-in "
                        f"families: {sorted(FAMILIES)}") from exc
    if not hasattr(module, attr):
        raise SpecError(f"{where} has no {attr!r} (family {spec!r})")
    fam = getattr(module, attr)
    if callable(fam) and not hasattr(fam, "sample"):
        fam = fam()
    check_family(fam, f"{spec}")
    return fam


def _operator_strategy(args):
    from daskie.errors import SpecError
    from daskie.operator import (OperatorBranchTrunkParallel, OperatorDataParallel,
                                 OperatorTrunkParallel)

    options = {}
    if args.window is not None:
        options["window"] = args.window or None
    split = getattr(args, "split", "branch")
    if split == "auto":
        if args.shards is not None or args.points is not None or args.batch is not None:
            raise SpecError("--split auto lets the planner choose the ranks: drop --shards, "
                            "--points and --batch, or name the split")
        return None
    if split != "branch" and getattr(args, "batch", None) is not None:
        raise SpecError(f"--batch trains mini-batches of instances: --split branch, not {split}")
    if split == "trunk":
        if args.shards is not None:
            raise SpecError("--split trunk shards the query points: give --points, not --shards")
        return OperatorTrunkParallel(points=args.points, **options)
    if split == "branch-trunk":
        return OperatorBranchTrunkParallel(instances=args.shards or 2, points=args.points or 2,
                                           **options)
    if args.points is not None:
        raise SpecError("--points shards the query points: add --split trunk or branch-trunk")
    if args.shards is not None:
        options["shards"] = args.shards
    if getattr(args, "batch", None) is not None:
        options["batch"] = args.batch
    return OperatorDataParallel(**options)


def _print_summary(attrs, args, note: str = "") -> int:
    keys = ("problem", "formulation", "strategy", "optimizer", "mse", "rel_l2", "max_abs_error",
            "tol", "error_estimate", "max_error_estimate", "converged", "stopped_by",
            "time_limited", "mse_boundary", "reference_mse", "discrepancy", "warnings", "init",
            "loss", "epochs", "wall_s", "n_params", "done", "store", "seed", "workers")
    summary = {k: attrs.get(k) for k in keys}
    summary["store"] = summary["store"] or None
    summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
    if args.json:
        print(json.dumps(summary))
    else:
        def fmt(value, spec):
            return "n/a" if value is None else format(value, spec)

        estimate = (f"  error estimate {fmt(summary['error_estimate'], '.1e')} (tol "
                    f"{fmt(summary['tol'], '.0e')})" if summary.get("tol") is not None else "")
        print(f"{summary['problem']}: MSE {fmt(summary['mse'], '.3e')}  "
              f"relative L2 {fmt(summary['rel_l2'], '.3e')}{estimate}  epochs {summary['epochs']}  "
              f"wall {fmt(summary['wall_s'], '.1f')} s  ({summary['done']})"
              + ("  (time-limited: the answer depends on the machine's speed)"
                 if summary.get("time_limited") else "")
              + (f"  store {summary['store']}" if summary["store"] else "")
              + (f"  ({note})" if note else ""))

    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``daskie`` command (defaults from :mod:`daskie.config`)."""
    from daskie import config

    p = _Parser(prog="daskie", formatter_class=_Help,
                description="Neural-network solvers for integral equations on Dask. Defaults "
                            "come from dask's configuration (daskie.* settings, e.g. "
                            "DASK_DASKIE__WORKERS=4).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser,
                           metavar="{list,plan,solve,operator,report,metrics}")

    ls = sub.add_parser("list", help="list the catalog problems", formatter_class=_Help,
                        description="List the catalog problems.")
    ls.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ls.set_defaults(func=_cmd_list)

    def common(sp, formulation_default, formulation_help):
        sp.add_argument("name", help="catalog problem (see `daskie list`)")
        sp.add_argument("--formulation", choices=["quadrature", "order-reduction"],
                        default=formulation_default, help=formulation_help)
        sp.add_argument("--workers", type=_int_at_least(1), default=config.get("workers"),
                        help="worker processes (setting daskie.workers)")
        sp.add_argument("--seed", type=_int_at_least(0), default=config.get("seed"),
                        help="seed of the networks' initialisation and the points")
        sp.add_argument("--hidden", type=_int_at_least(1), nargs="+", metavar="WIDTH",
                        help="hidden layer widths of each network (default: 20 20 20)")
        sp.add_argument("--points", type=_int_at_least(1),
                        help="collocation points (default: the formulation's own)")
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    pl = sub.add_parser("plan", help="print the CEPTF plan (Algorithm 1) of a problem",
                        formatter_class=_Help,
                        description="Print the CEPTF plan (seed 000, Algorithm 1) of a problem; "
                                    "no cluster is needed. The default formulation here is "
                                    "order reduction, whose sub-models the plan spreads "
                                    "(solve's default is quadrature collocation).")
    common(pl, "order-reduction", "formulation to plan (order reduction: the sub-models mu and "
                                  "F_{i,m} that CEPTF spreads over workers)")
    pl.add_argument("--gpus", type=_int_at_least(0), default=0,
                    help="GPUs in the cluster: the heaviest sub-models are tagged GPU")
    pl.add_argument("--predict", action="store_true",
                    help="also print the scaling model's CEPTF step time and SR for this "
                         "cluster (daskie.plan.scaling; 1 GbE, 0.3 ms latency)")
    pl.add_argument("--gpu-speed", type=_positive_float, default=5.0,
                    help="assumed speed of one GPU relative to one CPU core, for --predict")
    pl.set_defaults(func=_cmd_plan)

    so = sub.add_parser("solve", help="train a neural solver on an embedded LocalCluster",
                        formatter_class=_Help,
                        description="Train a neural solver on an embedded LocalCluster. The "
                                    "default formulation is quadrature collocation (daskie."
                                    "formulation); plan's default is order reduction.")
    common(so, config.get("formulation"), "formulation (setting daskie.formulation)")
    so.add_argument("--strategy", choices=["monolithic", "ceptf", "data-parallel",
                                           "model-parallel", "pipeline", "hybrid"],
                    default=config.get("strategy"),
                    help="how training is split over the workers (setting daskie.strategy)")
    so.add_argument("--optimizer", choices=["lm", "adam", "adam+lbfgs"],
                    default=config.get("optimizer"),
                    help="lm: Levenberg-Marquardt; adam+lbfgs: Adam then L-BFGS "
                         "(setting daskie.optimizer)")
    so.add_argument("--steps", type=_int_at_least(1),
                    help="optimizer steps, obeyed exactly (default: lm until the tolerance is "
                         "met or training stalls, within the formulation's step budget; 2000 "
                         "for adam, 2500 for adam+lbfgs)")
    so.add_argument("--window", type=_int_at_least(0),
                    help="steps per window, one checkpoint each (default: monolithic 25, "
                         "0 = one task; ceptf and data-parallel 50)")
    so.add_argument("--tol", type=_tolerance, default=config.get("tol"),
                    help="relative L2 error of mu to reach: training stops when the error "
                         "estimate is within it, and a warning says when it is not (setting "
                         "daskie.tol)")
    so.add_argument("--max-time", type=_positive_float, default=config.get("max-time"),
                    help="seconds of training at most (default: no time limit; a "
                         "time-limited answer depends on the machine's load)")
    so.add_argument("--device", default=None, metavar="cpu|cuda|cuda:N",
                    help="where the training computes (default: the Plan's GPU tags decide)")
    so.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                    help="precision of the training's objectives (float32: first-order "
                         "optimizers only)")
    so.add_argument("--target-loss", type=_nonnegative_float, default=config.get("target-loss"),
                    help="expert option: also stop once the loss is below this (setting "
                         "daskie.target-loss)")
    so.add_argument("--store", help="zarr store directory for this run (default: none)")
    so.add_argument("--resume", action="store_true",
                    help="continue the run in --store from its newest complete checkpoint")
    so.add_argument("--overwrite", action="store_true",
                    default=config.get("store.overwrite"),
                    help="replace an existing --store once this run finishes (until then the old "
                         "run stays and this one waits, resumable, beside it) (setting "
                         "daskie.store.overwrite)")
    so.add_argument("--quiet", action="store_true", help="no progress output")
    so.add_argument("--cluster", type=_cluster, metavar="local|slurm|pbs|ADDRESS",
                    help="where to run: daskie's embedded cluster (default), a SLURM or PBS "
                         "queue through dask-jobqueue (job settings from the jobqueue.* "
                         "config), or a running scheduler's address")
    so.set_defaults(func=_cmd_solve)

    op = sub.add_parser("operator", formatter_class=_Help,
                        help="learn a family's solution operator (DeepONet, data-parallel)",
                        description="Learn the solution operator of a family of integral "
                                    "equations once (seed 001): N instances solved by the "
                                    "reference as tasks into a zarr data set, a DeepONet "
                                    "trained data-parallel on all but the held-out ones, and "
                                    "its relative L2 error on those.")
    op.add_argument("family", help="a built-in family (fredholm-1d, volterra-1d-sin, "
                                   "fredholm-2d, fredholm-1d-width, volterra-1d-decay, "
                                   "fredholm-2d-fine) or a user's, MODULE:NAME or FILE.py:NAME "
                                   "(a Family or ParametricFamily, or a function returning one)")
    op.add_argument("--n", type=_int_at_least(2),
                    help="instances in the data set (default: the family's own, else 500)")
    op.add_argument("--test", type=_int_at_least(1),
                    help="held-out instances (default: min(200, n / 5))")
    op.add_argument("--data", help="the data set's zarr directory, continued if it exists "
                                   "(default: one named after its settings in the temp dir)")
    op.add_argument("--store", help="run store: checkpoints, the trained operator and its "
                                    "evaluation (reload with daskie.operator.Operator.load)")
    op.add_argument("--resume", action="store_true",
                    help="continue the training in --store from its newest checkpoint")
    op.add_argument("--workers", type=_int_at_least(0), default=config.get("workers"),
                    help="worker processes (0: everything in this process; setting "
                         "daskie.workers)")
    op.add_argument("--cluster", type=_cluster, metavar="local|slurm|pbs|ADDRESS",
                    help="where to run (default: daskie's embedded cluster)")
    op.add_argument("--split", choices=["branch", "trunk", "branch-trunk", "auto"],
                    default="branch",
                    help="what the ranks share: branch: the instances, trunk: the query "
                         "points, branch-trunk: both (a --shards x --points grid), auto: the "
                         "planner's choice from the data set's shape and the workers' memory")
    op.add_argument("--shards", type=_int_at_least(1),
                    help="instance shards (branch: ranks, default one per worker; "
                         "branch-trunk: default 2)")
    op.add_argument("--points", type=_int_at_least(1),
                    help="query-point shards (trunk: ranks, default one per worker; "
                         "branch-trunk: default 2)")
    op.add_argument("--window", type=_int_at_least(0),
                    help="steps per window, one checkpoint each (0: one window; default 100)")
    op.add_argument("--batch", type=_int_at_least(1),
                    help="instances per step over all ranks, each rank drawing its share in "
                         "its own seeded order (default: the full batch)")
    op.add_argument("--optimizer", choices=["lm", "adam", "lshead"],
                    help="lm: Levenberg-Marquardt (default up to 4000 parameters), adam, "
                         "lshead: Adam on the hidden layers with the branch's output layer "
                         "solved by least squares before every step (data loss only; for "
                         "nonlinear families)")
    op.add_argument("--steps", type=_int_at_least(1),
                    help="optimizer steps (default: 100 for lm, 2000 for adam and lshead)")
    op.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam's learning rate")
    op.add_argument("--decay", type=_nonnegative_float, default=1e-3,
                    help="Adam's decay: lr_k = lr / (1 + decay k)")
    op.add_argument("--physics", type=_nonnegative_float, default=0.0,
                    help="weight of the physics-informed residual loss (0: data loss only)")
    op.add_argument("--no-skip", action="store_true",
                    help="the network learns mu itself (default: the integral term mu - "
                         "f / alpha, with f / alpha added back)")
    op.add_argument("--width", type=_int_at_least(1),
                    help="DeepONet features per output (default: the family's own training "
                         "defaults where it has them, else 24 for linear 1-D families, 16 in "
                         "2-D, 20 for nonlinear families)")
    op.add_argument("--hidden", type=_int_at_least(1), nargs="+", metavar="WIDTH",
                    help="trunk hidden layer widths (default: the family's own, else 16 16; "
                         "20 20 for nonlinear families)")
    op.add_argument("--branch", type=_int_at_least(0), nargs="+", metavar="WIDTH",
                    help="branch hidden layer widths; 0: a linear branch (default: the "
                         "family's own, else linear for linear families, 32 otherwise)")
    op.add_argument("--sensors", type=_int_at_least(2),
                    help="sensors per coordinate (default: the family's, else 32 in 1-D, 8 "
                         "in 2-D)")
    op.add_argument("--query", type=_int_at_least(2),
                    help="query points per coordinate (default: the family's, 64 for "
                         "fredholm-2d-fine, else 33 in 1-D, 12 in 2-D)")
    op.add_argument("--seed", type=_int_at_least(0), default=config.get("seed"),
                    help="seed of the network's initialisation")
    op.add_argument("--data-seed", type=_int_at_least(0), default=0,
                    help="seed of the instances")
    op.add_argument("--report", metavar="HTML", help="also write the operator's report page")
    op.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    op.add_argument("--quiet", action="store_true", help="no progress output")
    op.set_defaults(func=_cmd_operator)

    rp = sub.add_parser("report", formatter_class=_Help,
                        help="write a self-contained HTML report of a run store or a "
                             "benchmark's JSON records",
                        description="Write a self-contained HTML report of a run store or a "
                                    "benchmark's JSON records; no cluster is needed.")
    rp.add_argument("source", help="a run's zarr store (solve --store, operator --store) or a "
                                   "benchmark JSON file")
    rp.add_argument("-o", "--output", help="HTML file to write (default: SOURCE with .html)")
    rp.add_argument("--quiet", action="store_true", help="do not print the path written")
    rp.set_defaults(func=_cmd_report)

    me = sub.add_parser("metrics", formatter_class=_Help,
                        help="SR, SE, CE and ARTP (seed 000 Eq 4.1, 4.3) of a parallel run's "
                             "store against a sequential one's",
                        description="SR, SE, CE and ARTP (seed 000 Eq 4.1, 4.3) of a parallel "
                                    "run's store against a sequential one's.")
    me.add_argument("run", help="store of the parallel run (solve --strategy ceptf --store)")
    me.add_argument("--baseline", required=True, help="store of the sequential run")
    me.add_argument("--target", type=_nonnegative_float,
                    help="MSE both times are measured to (default: the loosest both reached)")
    me.add_argument("--key", default=None, help=argparse.SUPPRESS)
    me.add_argument("--no-write", action="store_true", help="print only; leave the store as is")
    me.set_defaults(func=_cmd_metrics)
    return p


_QUIET_LOGGERS = ("distributed", "asyncio", "tornado", "bokeh")


def _quiet_shutdown():
    """Silence what a cluster torn down by Ctrl-C would print: distributed's and asyncio's
    log records about tasks cut short ("Task exception was never retrieved") and warnings."""
    import warnings

    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    warnings.simplefilter("ignore")


def _on_sigint(signum, frame):
    _quiet_shutdown()
    # A second Ctrl-C while the cluster shuts down ends the process at once: no atexit
    # handlers, so no tracebacks from them either.
    signal.signal(signal.SIGINT, _second_sigint)
    raise KeyboardInterrupt


def _second_sigint(signum, frame):
    try:
        sys.stderr.write("daskie: interrupted again; stopped without cleaning up\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning on the command line: one line on stderr, naming its kind (a result the
    solver doubts says so; no source line or stack)."""
    print(f"daskie: {category.__name__}: {message}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    """Entry point of the ``daskie`` console script."""
    import warnings

    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return _main(argv)
    finally:
        warnings.showwarning = previous


def _main(argv=None) -> int:
    from daskie.errors import DaskieError, TrainingDiverged

    try:
        args = build_parser().parse_args(argv)
    except DaskieError as exc:  # a bad value in dask's config (e.g. DASK_DASKIE__WORKERS=0)
        print(f"daskie: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    previous = None
    if threading_main():
        previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
        return status
    except TrainingDiverged as exc:
        print(f"daskie: training diverged: {_one_line(exc)}", file=sys.stderr)
        return 1
    except DaskieError as exc:
        print(f"daskie: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, and keep Python's final flush
        # of stdout from raising again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:  # files and directories the user named
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"daskie: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _quiet_shutdown()
        print(f"daskie: interrupted{_kept(args)}", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def threading_main() -> bool:
    """Whether this is the main thread (only it may install signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()


def _one_line(exc) -> str:
    return " ".join(str(exc).split())


def _kept(args) -> str:
    """What an interrupted solve left in its store, in words."""
    store = getattr(args, "store", None)
    if not store:
        return ""
    from daskie.store import RunStore

    path, pending = os.path.abspath(store), RunStore.pending_of(store)
    if RunStore.exists(pending):
        before = (f"the previous run at {path} is unchanged" if RunStore.exists(path)
                  else f"nothing is at {path}")
        return f"; {before}; this run is kept beside it in {pending} (--resume continues it)"
    if RunStore.exists(store):
        return f"; a resumable store is kept at {path} (--resume continues it)"
    return f"; nothing was written at {path}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
