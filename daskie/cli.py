"""The ``daskie`` command: ``list``, ``plan NAME``, ``solve NAME``, ``report PATH``.

Bad input prints one line (``daskie: error: ...``) and exits with status 2, no traceback.
``solve`` reports progress on stderr: a progress bar (epochs, loss, test MSE, ETA) when stderr
is a terminal, one line per window otherwise (logs, pipes), nothing under ``--json`` or
``--quiet``; the address of the run's live page on the Dask dashboard comes first.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"daskie: error: {message}\n")


def _formulation(name: str, args):
    from daskie.formulations import OrderReduction, QuadratureCollocation
    from daskie.nn import MLP

    net = MLP(hidden=tuple(args.hidden)) if args.hidden else MLP()
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
        return lm if steps is None else type(lm)(**{**vars(lm), "steps": steps})
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
    return CEPTF(**({"window": window} if window is not None else {}))


def _cmd_list(args) -> int:
    from daskie.problems import catalog

    rows = catalog.summaries()
    if args.json:
        print(json.dumps(rows))
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
    check_int("--points", args.points, allow_none=True)  # 0 would fall back to the default
    disc = _formulation(args.formulation, args).discretize(problem, seed=args.seed)
    plan = make_plan(disc, workers=args.workers, gpus=args.gpus)
    print(plan.to_json() if args.json else plan.describe())
    return 0


def _progress_printer(stream):
    def show(rec):
        if rec.get("group") == -2:  # one line per completed window
            stream.write(f"window {rec['window']:>4}  epoch {rec['epoch']:>5}  loss {rec['loss']:.3e}  "
                         f"mse {rec['mse']:.3e}\n")
            stream.flush()
    return show


def _show_dashboard_link(stream):
    """Print the live page's address, which ``solve`` logs on ``daskie.dashboard``."""
    import logging

    handler = logging.StreamHandler(stream)
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

    out = write_report(args.source, args.output)
    if not args.quiet:
        print(f"daskie: wrote {out}", file=sys.stderr)
    return 0


def _cmd_metrics(args) -> int:
    from daskie.metrics import compare

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
    if args.workers < 1:
        raise SpecError(f"--workers must be a positive int, got {args.workers}")
    if args.store:
        from daskie.store import RunStore

        RunStore.check(args.store, "a" if args.resume else ("w" if args.overwrite else "w-"))
    quiet = args.json or args.quiet
    formulation = _formulation(args.formulation, args)
    strategy = _strategy(args.strategy, args.window)
    optimizer = _optimizer(args.optimizer, args.steps, formulation)
    progress, bar = None, None
    if not quiet:
        print(f"daskie: solving {args.name} ({args.formulation}, {args.strategy}, {args.optimizer}) "
              f"on {args.workers} worker(s)", file=sys.stderr, flush=True)
        _show_dashboard_link(sys.stderr)
        if sys.stderr.isatty():
            from daskie.dashboard.progress import ProgressBar

            progress = bar = ProgressBar(optimizer.steps + strategy.polish_steps(), sys.stderr)
        else:
            progress = _progress_printer(sys.stderr)
    try:
        ds = solve(args.name, formulation=formulation, strategy=strategy,
                   optimizer=optimizer, store=args.store, seed=args.seed, resume=args.resume,
                   overwrite=args.overwrite, workers=args.workers, target_loss=args.target_loss,
                   progress=progress)
    finally:
        if bar is not None:
            bar.close()
    keys = ("problem", "formulation", "strategy", "optimizer", "mse", "rel_l2", "max_abs_error",
            "loss", "epochs", "wall_s", "n_params", "done", "store", "seed", "workers")
    summary = {k: ds.attrs.get(k) for k in keys}
    summary["store"] = summary["store"] or None
    summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
    if args.json:
        print(json.dumps(summary))
    else:
        def fmt(value, spec):
            return "n/a" if value is None else format(value, spec)

        print(f"{summary['problem']}: MSE {fmt(summary['mse'], '.3e')}  "
              f"relative L2 {fmt(summary['rel_l2'], '.3e')}  epochs {summary['epochs']}  "
              f"wall {fmt(summary['wall_s'], '.1f')} s  ({summary['done']})"
              + (f"  store {summary['store']}" if summary["store"] else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``daskie`` command."""
    p = _Parser(prog="daskie", description="Neural-network solvers for integral equations on Dask.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ls = sub.add_parser("list", help="list the catalog problems")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_list)

    def common(sp):
        sp.add_argument("name", help="catalog problem (see `daskie list`)")
        sp.add_argument("--formulation", choices=["quadrature", "order-reduction"], default="quadrature")
        sp.add_argument("--workers", type=int, default=2)
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--hidden", type=int, nargs="+", help="hidden layer widths (default 20 20 20)")
        sp.add_argument("--points", type=int, help="collocation points")
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    pl = sub.add_parser("plan", help="print the CEPTF plan (Algorithm 1) of a problem")
    common(pl)
    pl.add_argument("--gpus", type=int, default=0)
    pl.set_defaults(func=_cmd_plan, formulation="order-reduction")

    so = sub.add_parser("solve", help="train a neural solver on an embedded LocalCluster")
    common(so)
    so.add_argument("--strategy", choices=["monolithic", "ceptf", "data-parallel"],
                    default="monolithic")
    so.add_argument("--optimizer", choices=["lm", "adam", "adam+lbfgs"], default="lm")
    so.add_argument("--steps", type=int, help="optimizer steps (default: 300 for lm)")
    so.add_argument("--window", type=int,
                    help="steps per window (monolithic default 25, 0 = one task; ceptf and "
                         "data-parallel 50)")
    so.add_argument("--target-loss", type=float, default=1e-14)
    so.add_argument("--store", help="zarr store directory for this run")
    so.add_argument("--resume", action="store_true", help="continue the run in --store")
    so.add_argument("--overwrite", action="store_true", help="replace an existing --store")
    so.add_argument("--quiet", action="store_true", help="no progress output")
    so.set_defaults(func=_cmd_solve)

    rp = sub.add_parser("report", help="write a self-contained HTML report of a run store or a "
                                       "benchmark's JSON records")
    rp.add_argument("source", help="a run's zarr store (solve --store) or a benchmark JSON file")
    rp.add_argument("-o", "--output", help="HTML file to write (default: SOURCE with .html)")
    rp.add_argument("--quiet", action="store_true", help="do not print the path written")
    rp.set_defaults(func=_cmd_report)

    me = sub.add_parser("metrics", help="SR, SE, CE and ARTP (seed 000 Eq 4.1, 4.3) of a "
                                        "parallel run's store against a sequential one's")
    me.add_argument("run", help="store of the parallel run (solve --strategy ceptf --store)")
    me.add_argument("--baseline", required=True, help="store of the sequential run")
    me.add_argument("--target", type=float, help="MSE both times are measured to (default: "
                                                 "the loosest both reached)")
    me.add_argument("--key", default=None, help=argparse.SUPPRESS)
    me.add_argument("--no-write", action="store_true", help="print only; leave the store as is")
    me.set_defaults(func=_cmd_metrics)
    return p


def main(argv=None) -> int:
    """Entry point of the ``daskie`` console script."""
    from daskie.errors import DaskieError, TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainingDiverged as exc:
        print(f"daskie: training diverged: {exc}", file=sys.stderr)
        return 1
    except DaskieError as exc:
        print(f"daskie: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = "; completed windows are kept in the store (--resume)" if getattr(args, "store", None) else ""
        print(f"daskie: interrupted{kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
