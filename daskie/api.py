"""``daskie.solve``: problem -> formulation -> strategy spec -> plan -> runtime -> store -> Dataset.

``solve`` is a short sequence of named steps (see ``docs/architecture.md``): resolve the
arguments (:func:`_resolve`), prepare the run -- discretize once, plan, the run's token and
context (:func:`_prepare`) --, open the store and find the resume point (:func:`_open`),
execute the strategy on the executor (:func:`_execute`), and summarize (:func:`_summarize`).
The public ``client`` argument becomes an executor here and nowhere else.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from daskie.errors import SpecError, TrainingDiverged, check_int

__all__ = ["solve", "default_formulation", "default_optimizer", "solution_dataset"]

log = logging.getLogger("daskie")


def default_formulation():
    """Quadrature collocation with a 3 x 20 tanh network (the most accurate per second on
    the 2-D catalog; ``docs/architecture.md``, measured facts)."""
    from daskie.formulations.quadrature import QuadratureCollocation

    return QuadratureCollocation()


def default_optimizer(formulation=None):
    """The optimizer ``solve`` uses for ``formulation`` when none is given:
    Levenberg-Marquardt stopped by convergence, with the formulation's
    :meth:`~daskie.formulations.Formulation.solver_defaults` (damping scaling, step budget;
    None: the default formulation's)."""
    from daskie.train.optimizers import LevenbergMarquardt, Stopping

    options = (formulation if formulation is not None else default_formulation()).solver_defaults()
    return LevenbergMarquardt(steps="auto", scaling=options["scaling"],
                              stop=Stopping(max_steps=int(options["max_steps"])))


#: Points of the returned solution grid at most (beyond d = 3): 5 per coordinate up to d = 8
#: (390625 points); 5^12 points at d = 12 took 21 GB and ended a run after its training.
GRID_POINTS = 400_000


def _grid_points(domain, n=None):
    d = domain.dim
    if not n:
        n = {1: 201, 2: 65, 3: 17}.get(d, 5)
        while n > 2 and n**d > GRID_POINTS:
            n -= 1
    axes = [np.linspace(lo, hi, n) for lo, hi in zip(domain.lower, domain.upper)]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return axes, mesh


def solution_dataset(objective, theta, problem, grid: int | None = None):
    """The solution on a regular grid (NaN outside a masked domain), with the exact solution
    and the error where known, as an ``xarray.Dataset``."""
    import xarray as xr

    axes, mesh = _grid_points(problem.domain, grid)
    flat = mesh.reshape(-1, problem.dim)
    inside = problem.domain.contains(flat)
    mu = np.full(len(flat), np.nan)
    mu[inside] = objective.solution(theta, flat[inside])
    dims = tuple(f"x{j}" for j in range(problem.dim))
    shape = mesh.shape[:-1]
    data = {"mu": (dims, mu.reshape(shape), {"long_name": "neural solution"})}
    if problem.exact is not None:
        ex = np.full(len(flat), np.nan)
        ex[inside] = problem.exact(flat[inside])
        data["exact"] = (dims, ex.reshape(shape), {"long_name": "exact solution"})
        data["error"] = (dims, (mu - ex).reshape(shape), {"long_name": "mu - exact"})
    return xr.Dataset(data, coords={d: a for d, a in zip(dims, axes)})


def _data_fingerprint(problem, disc) -> str:
    """A token of the problem's data functions (f, alpha, exact, kernels) evaluated at the
    held-back points: two problems that differ only in their callables get different run
    tokens, graph keys and cached objectives."""
    import dask

    x = disc.test_points
    t = x[::-1]
    values = [np.asarray(problem.f(x)), problem.alpha_at(x)]
    values += [np.asarray(term.kernel(x, t)) for term in problem.terms]
    if problem.exact is not None:
        values.append(np.asarray(problem.exact(x)))
    return dask.base.tokenize(*values)


#: What must not change between a run and its resumption (the run's identity).
_IDENTITY = ("problem_spec", "formulation_options", "optimizer_options", "strategy_options",
             "seed", "target_loss", "tol", "max_time", "dtype", "groups")


@dataclass
class _Run:
    """What the steps of one ``solve`` pass on: the resolved arguments and the prepared run."""

    problem: object
    formulation: object
    strategy: object
    optimizer: object
    seed: int
    target_loss: float
    disc: object = None
    plan: object = None
    groups: tuple = ()
    ctx: object = None
    objective: object = None
    meta: dict = field(default_factory=dict)
    resume_point: tuple | None = None
    start: object = None  # initial parameters of a new run (a warm start), or None
    init: str = "auto"
    restarts: int = 1
    check: bool = True
    reference: object = None  # the Nystrom reference (daskie.assess), where it fits
    floor: float | None = None  # the reference's loss in the discretization
    checks: dict = field(default_factory=dict)  # what the checks found and did
    tol: float = 1e-5  # the relative L2 error asked for
    device: str | None = None  # where objectives compute (None: each task's resource tag)
    dtype: str = "float64"  # the precision objectives compute in
    max_time: float | None = None  # seconds of training at most (None: no time limit)
    estimator: object = None  # daskie.estimate's error estimator (None: no estimate)
    default_optimizer: bool = False  # the optimizer is daskie's default (restarts may vary it)


def _cores() -> int:
    """This machine's cores available to this process (the threads of a task that has the
    machine to itself: an explicit count, the same in process and on a worker, whose
    environment sets OMP_NUM_THREADS=1)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _accuracy_and_place(optimizer, tol, max_time, device, dtype):
    """``tol``, ``max_time`` and ``device`` checked (defaults from the settings ``daskie.tol``
    and ``daskie.max-time``), and ``dtype`` against the optimizer."""
    from daskie import config

    tol = config.get("tol") if tol is None else tol
    if not (_number(tol) and 0 < tol < 1):
        raise SpecError(f"tol must be a relative L2 error in (0, 1), such as 1e-6, got {tol!r}")
    max_time = config.get("max-time") if max_time is None else max_time
    if max_time is not None and not (_number(max_time) and max_time > 0):
        raise SpecError(f"max_time must be a positive number of seconds or None, got {max_time!r}")
    if device is not None:
        from daskie.runtime.devices import check_device

        device = check_device(device, "device", meta=False)
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SpecError(f"device={device!r}, but this process's torch sees no CUDA device "
                            f"(torch {torch.__version__}: a CPU build?); install the CUDA build "
                            f"of torch, or leave device=None")
    if dtype not in ("float64", "float32"):
        raise SpecError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if dtype == "float32":
        from daskie.train.optimizers import LevenbergMarquardt

        if any(isinstance(s, LevenbergMarquardt) for s in optimizer.stages()):
            raise SpecError("dtype='float32' is for first-order optimizers (Adam, LBFGS) and "
                            "operator training: Levenberg-Marquardt's normal equations need "
                            "float64 to reach its accuracy; use dtype='float64' or another optimizer")
    return tol, max_time, device


def _resolve(problem, formulation, strategy, optimizer, client, seed, target_loss, resume,
             overwrite, store, workers, gpus, init=None, restarts=1, check=None, tol=None,
             max_time=None, device=None, dtype="float64") -> _Run:
    """Validate the arguments (named errors, before anything starts) and fill the defaults
    (``init``, ``check``, ``tol`` and ``max_time`` from the settings ``daskie.init``,
    ``daskie.check``, ``daskie.tol``, ``daskie.max-time``)."""
    from daskie import config
    from daskie.train.warm_start import INITS
    from daskie.formulations.base import Formulation
    from daskie.problems import Problem, catalog
    from daskie.session import check_client
    from daskie.strategies import Monolithic, Strategy
    from daskie.train.optimizers import Optimizer

    if isinstance(problem, str):
        problem = catalog.get(problem)
    if not isinstance(problem, Problem):
        raise SpecError(f"problem must be a Problem or a catalog name, got {type(problem).__name__}")
    formulation = default_formulation() if formulation is None else formulation
    if not isinstance(formulation, Formulation):
        raise SpecError(f"formulation must be a daskie Formulation (QuadratureCollocation(), "
                        f"OrderReduction()), got {formulation!r}")
    strategy = Monolithic() if strategy is None else strategy
    chosen = optimizer is None  # daskie's choice: a restart may vary it
    optimizer = default_optimizer(formulation) if optimizer is None else optimizer
    if not isinstance(strategy, Strategy):
        raise SpecError(f"strategy must be a daskie Strategy (Monolithic(), CEPTF(...)), got {strategy!r}")
    if not isinstance(optimizer, Optimizer):
        raise SpecError(f"optimizer must be a daskie Optimizer, got {optimizer!r}")
    strategy.check_optimizer(optimizer)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"seed must be an int, got {seed!r}")
    if isinstance(target_loss, bool) or not (isinstance(target_loss, (int, float)) and target_loss >= 0):
        raise SpecError(f"target_loss must be a number >= 0, got {target_loss!r}")
    if resume and overwrite:
        raise SpecError("resume and overwrite exclude each other")
    if resume and store is None:
        raise SpecError("resume=True needs the store= of the run to continue")
    check_int("workers", workers)
    check_int("gpus", gpus, 0)
    check_client(client)
    init = config.get("init") if init is None else init
    check = config.get("check") if check is None else check
    if init not in INITS:
        raise SpecError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
    if not isinstance(check, bool):
        raise SpecError(f"check must be True or False, got {check!r}")
    check_int("restarts", restarts)
    if restarts > 1 and not strategy.seeds_as_tasks:
        raise SpecError(f"restarts={restarts} trains seeds as independent tasks: it needs a "
                        f"strategy whose training is one task (Monolithic), not {strategy.label}")
    tol, max_time, device = _accuracy_and_place(optimizer, tol, max_time, device, dtype)
    return _Run(problem, formulation, strategy, optimizer, int(seed), float(target_loss),
                init=init, restarts=int(restarts), check=check, tol=tol, max_time=max_time,
                device=device, dtype=dtype, default_optimizer=chosen)


def _prepare(run: _Run, workers, gpus, threads, eval_every) -> _Run:
    """Discretize once, plan, and make the run's token, context and objective."""
    from daskie.runtime.context import RunContext
    from daskie.runtime.context import run_token
    from daskie.train.objective import Objective

    _reference_and_floor(run)  # may refine the formulation and tell the optimizer the floor
    _tolerance(run)  # the error estimator, and the optimizer told the tolerance (and time)
    problem, formulation, strategy, optimizer = run.problem, run.formulation, run.strategy, run.optimizer
    run.plan = strategy.plan(run.disc, workers, gpus)
    run.groups = strategy.groups(run.disc, run.plan)
    token = run_token(problem.describe(), _data_fingerprint(problem, run.disc), formulation,
                      optimizer, strategy, run.seed, run.target_loss,
                      run.plan.to_json() if run.plan else None, threads, eval_every, run.dtype)
    run.ctx = RunContext(problem, formulation, optimizer, run.seed, run.target_loss, threads, token,
                         eval_every, device=run.device, dtype=run.dtype)
    run.objective = Objective(run.disc)  # the client's copy: the summary, the in-process tasks
    run.meta = {"problem_spec": problem.describe(), "formulation": formulation.label,
                "formulation_options": repr(formulation), "optimizer": optimizer.label,
                "optimizer_options": repr(optimizer), "strategy": strategy.label,
                "strategy_options": repr(strategy), "seed": run.seed,
                "target_loss": run.target_loss, "tol": run.tol, "max_time": run.max_time,
                "dtype": run.dtype,
                "plan": run.plan.to_dict() if run.plan else None,
                "groups": [list(g) for g in run.groups], "discretization": run.disc.info}
    return run


def _reference_and_floor(run: _Run):
    """The reference where it fits (:mod:`daskie.assess`), the discretization floor of the
    formulation (rules refined while it is high) and an optimizer that knows the floor; the
    discretization in ``run.disc``. Without ``check`` only the discretization."""
    from daskie import assess
    from daskie.train.restarts import with_floor

    if run.check and assess.reference_fits(run.problem):
        t0 = time.perf_counter()
        run.reference = assess.reference_solution(run.problem)
        run.checks["reference_wall_s"] = time.perf_counter() - t0
    if run.reference is None:
        run.disc = run.formulation.discretize(run.problem, seed=run.seed)
        return
    run.formulation, run.disc, run.floor, note = assess.refine_for_floor(
        run.formulation, run.problem, run.reference, target_loss=max(run.target_loss, 1e-14),
        seed=run.seed)  # rules refined while the floor is above 1e-16, as before tol existed
    run.optimizer = with_floor(run.optimizer, run.floor)
    run.checks.update({"floor": run.floor, "refinement": note})


def _tolerance(run: _Run):
    """The run's error estimator (:func:`daskie.estimate.error_estimator`: the refined
    reference where it fits, the residual estimate otherwise), built once, and an optimizer
    whose convergence-based stages stop when the estimate is within ``tol`` -- and, only when
    the user set ``max_time``, after that many seconds of training."""
    from daskie.estimate import ReferenceEstimator, error_estimator
    from daskie.train.restarts import with_time, with_tolerance

    if run.check:
        t0 = time.perf_counter()
        try:
            run.estimator = error_estimator(run.problem, reference=run.reference, seed=run.seed)
        except SpecError as exc:  # e.g. a nonlinear reference whose Newton fails
            run.checks["estimate_note"] = f"no error estimate: {exc}"
        run.checks["estimator_setup_s"] = time.perf_counter() - t0
    if run.estimator is not None:
        # the residual estimate (d >= 4) costs seconds a call (3.7 s at d = 6, 5 s at d = 8,
        # against 0.02 s for the reference's in 2-D): estimated at every 100x of the loss
        cheap = isinstance(run.estimator, ReferenceEstimator)
        run.optimizer = with_tolerance(run.optimizer, run.tol, run.estimator,
                                       None if cheap else 100.0)
    if run.max_time is not None:
        run.optimizer = with_time(run.optimizer, run.max_time)


def _initial(run: _Run):
    """Start from the warm start of :func:`daskie.train.warm_start.initial_params` (the
    reference's branch; issue 15, class 1), unless resuming from a checkpoint or training
    several seeds (each seed task warms up by itself)."""
    from daskie.train.warm_start import initial_params

    if run.resume_point is not None or run.restarts > 1:
        return
    theta, info = initial_params(run.objective, run.init, seed=run.seed, reference=run.reference)
    run.checks.update(info)
    if info["init"] != "random":  # random: the runtime's own seeded start, the same numbers
        run.start = theta  # every runner takes it (Strategy.execute(start=))


def _restart(result, run: _Run) -> bool:
    """Whether another seed may do better than ``result``: it stalled far above the
    discretization floor, or it stalled (or reached the floor) with its error estimate above
    the tolerance (a bad minimum or a ridge between the collocation points that the loss
    cannot see). A function of the result alone: the same run restarts the same way anywhere."""
    from daskie.train.restarts import needs_restart

    if needs_restart(result, run.floor):
        return True
    return run.estimator is not None and result.state.done in ("stalled", "floor", "ridge")


def _restarts(run: _Run, executor, session, final):
    """``restarts=K``: K seeds as independent tasks, the best kept; and for a
    convergence-stopped optimizer, up to three more seeds while the best one stalled without
    meeting the tolerance (:func:`_restart`; within ``max_time`` where one is set), from a
    random start (on E3 the reference's warm start leads into a ridge: relative error 4.4e-4
    after 400 steps, a random one reaches 1e-5) and, with daskie's default optimizer, every
    other one with Levenberg-Marquardt's other damping scaling
    (:func:`~daskie.train.restarts.other_scaling`). The loop is
    :func:`~daskie.train.restarts.train_restarts`, the seeds tasks of the runtime
    (:func:`~daskie.runtime.seeds.train_seeds`). Returns the final outputs."""
    from daskie.runtime.context import WindowOutput
    from daskie.runtime.seeds import train_seeds
    from daskie.train.restarts import SeedResult, other_scaling, train_restarts

    if not run.strategy.seeds_as_tasks:
        return final
    first = None
    if run.restarts <= 1:
        if final is None:
            return final
        first = [SeedResult(run.seed, final[0].state, [], dict(run.checks), session.elapsed())]
    stop = run.optimizer.stages()[-1].stop

    def runner(seeds, optimizer, init):
        return train_seeds(executor, run.ctx, seeds, init=init, reference=run.reference,
                           optimizer=optimizer)

    def vary(optimizer, i):
        return other_scaling(optimizer) if run.default_optimizer and i % 2 == 1 else optimizer

    best, results = train_restarts(
        run.objective, run.optimizer, restarts=run.restarts, seed=run.seed, init=run.init,
        reference=run.reference, auto=stop is not None, max_auto=3,
        max_wall_s=None if stop is None else stop.max_wall_s,  # only where the user set max_time
        runner=runner, first=first, restart=lambda best: _restart(best, run),
        restart_init="random", vary=vary)
    if len(results) <= 1 and run.restarts <= 1:
        return final
    run.checks.update({"restarts": len(results), "run_losses": [float(r.state.loss) for r in results],
                       "best_seed": best.seed, **{k: v for k, v in best.init.items() if k.startswith("init")}})
    if final is not None and best.seed == run.seed and run.restarts <= 1:
        return final
    session.history.extend(best.records)
    params = run.objective.layout.split(best.state.theta)
    return [WindowOutput(0, best.state, {n: v.clone() for n, v in params.items()}, best.records)]


def _assess(run: _Run, theta, stopped_by: str) -> dict:
    """The summary's checks: the error estimate against the tolerance (one
    :class:`~daskie.errors.ToleranceWarning` exactly when it is missed, or when no estimate
    could be made), and the diagnostics of :func:`daskie.assess.assess` (interior and boundary
    MSE, the reference's MSE and discrepancy; for a nonlinear answer off the reference, which
    solution it lies on), which never warn by themselves."""
    import warnings

    from daskie import assess
    from daskie.errors import ToleranceWarning

    objective = run.objective

    def mu(x):
        return objective.solution(theta, x)

    out = assess.assess(run.problem, mu, run.disc.test_points,
                        reference=run.reference if run.check else None, tolerance=run.tol,
                        warn=False)
    keep = ("floor", "refinement", "init", "init_reason", "restarts", "run_losses", "best_seed",
            "reference_wall_s", "estimator_setup_s")
    out.update({k: run.checks[k] for k in keep if k in run.checks})
    out["init"] = run.checks.get("init", "random")
    nan = float("nan")
    out["rel_l2_domain"] = _rel_l2_domain(run.problem, mu)
    out.update(tol=run.tol, error_estimate=nan, max_error_estimate=nan, estimate_resolution=nan,
               estimate_method="", converged=False, time_limited=run.max_time is not None)
    if run.estimator is not None:
        est = run.estimator(mu)
        out.update(error_estimate=est["error_estimate"],
                   max_error_estimate=est["max_error_estimate"],
                   estimate_resolution=est["resolution"], estimate_method=est["method"],
                   estimate_s=est["seconds"], converged=bool(est["error_estimate"] <= run.tol))
    if not run.check:
        out["warnings"] = []
        return out
    if out["converged"]:
        out["warnings"] = []
        return out
    if run.estimator is None:
        msg = (f"{run.problem.name}: {run.checks.get('estimate_note', 'no error estimate')}; "
               f"the answer is not checked against tol {run.tol:.0e}")
    else:
        msg = (f"{run.problem.name}: error estimate {out['error_estimate']:.1e} > tol "
               f"{run.tol:.0e} (relative L2; training stopped by {stopped_by}); "
               f"{_what_to_try(stopped_by, out)}")
    out["warnings"] = [msg]
    warnings.warn(msg, ToleranceWarning, stacklevel=3)
    return out


def _rel_l2_domain(problem, mu) -> float:
    """The true relative L2 error over the whole domain where the exact solution is known
    (NaN otherwise). In d <= 3 a composite Gauss rule graded towards every face
    (:func:`daskie.estimate.graded_rule`), so that an error hiding at an end -- sqrt-type
    behaviour that interior test points never see -- counts as much as the L2 norm says;
    beyond, 2^14 scrambled-Sobol points of their own (seed 20261207, not the test points)."""
    if problem.exact is None:
        return float("nan")
    if problem.dim <= 3:
        from daskie.estimate import graded_rule

        x, w = graded_rule(problem.domain)
    else:
        import torch

        lo, hi = np.asarray(problem.domain.lower), np.asarray(problem.domain.upper)
        u = torch.quasirandom.SobolEngine(problem.dim, scramble=True, seed=20261207).draw(2**14)
        x, w = lo + (hi - lo) * u.double().numpy(), np.ones(2**14)
    inside = problem.domain.contains(x)
    x, w = x[inside], w[inside]
    ex = np.asarray(problem.exact(x), dtype=float)
    err = np.asarray(mu(x), dtype=float) - ex
    return float(np.sqrt((w @ err**2) / (w @ ex**2)))


def _what_to_try(stopped_by: str, out: dict) -> str:
    """One hint for an answer that missed its tolerance, from what stopped it."""
    if out.get("solution") == "other":
        return ("the network found another solution of the equation: start from the reference "
                "(init='reference')")
    if out.get("estimate_resolution", 0) > 0.5 * out["tol"]:
        return ("the estimate cannot resolve this tolerance (resolution "
                f"{out['estimate_resolution']:.1e}): ask for a looser tol")
    return {"budget": "try more optimizer steps (LevenbergMarquardt(steps=...))",
            "time": "try a larger max_time, or none",
            "target": "try a smaller target_loss",
            "ridge": ("the loss no longer follows the error: try more collocation points "
                      "(QuadratureCollocation(points=...)) or restarts=4"),
            }.get(stopped_by, "try restarts=4, a larger network (MLP(hidden=...)) or finer "
                              "rules (QuadratureCollocation(nodes=..., local_nodes=...))")


def _window_summary(run: _Run):
    """The summary of a window that the session records: the joint loss and test errors."""
    from daskie.runtime.context import merge_params

    objective = run.objective

    def summarize(k, outputs):
        theta = objective.layout.join(merge_params(outputs))
        return {"loss": float(objective.loss(theta).detach()), **objective.accuracy(theta)}

    return summarize


def _summarize(run: _Run, final, wall, n_workers, session, grid):
    """The solution on a grid with the run's summary in its attributes; the result stored."""
    from daskie.runtime.context import merge_params
    from daskie.store import history_to_dataset

    objective, history, problem = run.objective, session.history, run.problem
    params = merge_params(final)
    theta = objective.layout.join(params)
    summary = {
        "problem": problem.name, "formulation": run.formulation.label,
        "strategy": run.strategy.label, "optimizer": run.optimizer.label,
        **objective.accuracy(theta), "loss": float(objective.loss(theta).detach()),
        "epochs": int(max(o.state.epoch for o in final)),
        "wall_s": float(wall), "n_params": int(objective.layout.total),
        "done": next((o.state.done for o in final if o.state.done), "budget"),
        "store": None if session.store is None else str(session.store.path),
        "seed": run.seed, "workers": n_workers,
    }
    summary["stopped_by"] = summary["done"]
    summary.update(_assess(run, theta, summary["stopped_by"]))
    if run.plan is not None:  # seed 000's per-run figures (SR needs a baseline: metrics.compare)
        from daskie.metrics import metric_attrs, plan_metrics

        summary.update(metric_attrs(plan_metrics(history, run.plan)))
    ds = solution_dataset(objective, theta, problem, grid)
    ds.attrs.update({k: (v if v is not None else "") for k, v in summary.items()})
    session.write_result(ds, summary, {n: v.detach().numpy() for n, v in params.items()})
    return ds.merge(history_to_dataset(history)) if history else ds


def solve(problem, formulation=None, strategy=None, optimizer=None, *, client=None, store=None,
          seed: int = 0, target_loss: float = 0.0, resume: bool = False, overwrite: bool = False,
          workers: int = 2, gpus: int = 0, threads: int | None | str = "auto",
          eval_every: int = 0,
          progress=None, on_window=None, grid: int | None = None, init: str | None = None,
          restarts: int = 1, check: bool | None = None, tol: float | None = None,
          max_time: float | None = None, device: str | None = None, dtype: str = "float64"):
    """Solve an integral equation with a neural network, training as a Dask graph.

    Parameters
    ----------
    problem : Problem or str
        A :class:`~daskie.problems.Problem` or a catalog name (``daskie.problems.catalog.names()``).
    formulation : Formulation, optional
        Default :func:`default_formulation` (quadrature collocation).
    strategy : Strategy, optional
        :class:`~daskie.strategies.Monolithic` (default), :class:`~daskie.strategies.CEPTF`,
        or any other daskie strategy spec (``BlockCoordinate``, ``DataParallel``,
        ``ParaFlow``, ``ParaFlowS``, ``GradientDescent``, ``APTS``, ``SAPTS``).
    optimizer : Optimizer, optional
        Default :func:`default_optimizer` (Levenberg-Marquardt).
    client : distributed.Client or "sync", optional
        Where the training runs. ``None`` starts an embedded ``LocalCluster`` of ``workers``
        single-threaded workers on 127.0.0.1 for the duration of the call; ``"sync"`` runs
        the same tasks in this process.
    store : str or path, optional
        Directory of the run's zarr store (checkpoints per window, history, solution).
        Transactional: a new run replaces an existing one only once it has a complete
        checkpoint (:mod:`daskie.store`).
    seed : int
        Seed of the collocation points and the initial parameters.
    target_loss : float
        Expert option: training also stops when the loss falls below this (default 0: the
        tolerance decides).
    resume : bool
        Continue the run in ``store`` from its last checkpoint (a finished run is returned
        as stored, without starting a cluster).
    overwrite : bool
        Replace an existing store (otherwise an existing store is an error).
    workers, gpus : int
        Cluster size for the plan (and for the embedded cluster).
    threads : int, None or "auto"
        torch threads inside each task (None: torch's default). ``"auto"`` (default): this
        machine's cores for a :class:`~daskie.strategies.Monolithic` run of one seed,
        whose one task at a time has the machine to itself (E1: 12.3 s of training against
        19.4 s on one thread of this 2-core machine, the same steps), one thread per task for
        every strategy that runs tasks side by side. The thread count is fixed by the machine,
        never by its load.
    eval_every : int
        Record the test MSE every this many steps.
    progress : callable, optional
        ``progress(record)`` for every training record as windows complete.
    on_window : callable, optional
        ``on_window(k, summary)`` after each window (after its checkpoint is written).
    grid : int, optional
        Points per coordinate of the returned solution grid (default: 201, 65 and 17 in
        1-3 dimensions, then 5 while the grid stays within ``GRID_POINTS`` (400000) points,
        fewer beyond: 3 per coordinate at d = 10, 2 at d = 12).
    init : {"auto", "reference", "f", "random"}
        Initial parameters (:func:`daskie.train.warm_start.initial_params`): the network
        fitted to the reference first (the default where the reference fits), to ``f / alpha``,
        or the seeded random start; the summary's ``init`` says which. Default: the setting
        ``daskie.init`` (``"auto"``).
    restarts : int
        Seeds trained as independent tasks (Monolithic strategy), the best by loss kept; the
        default optimizer also restarts by itself when the loss stalls far above the
        discretization floor.
    check : bool
        Estimate the error of the answer (:func:`daskie.estimate.error_estimator`: against a
        refined Nystrom reference where it fits, d <= 3; from the residual of the continuous
        equation and the linearized operator otherwise), stop training when the estimate is
        within ``tol``, and raise one :class:`~daskie.errors.ToleranceWarning` when the final
        estimate is not (or no estimate could be made). Also computes the reference where it
        fits, refines the rules while their discretization floor is high, and adds the
        diagnostics ``mse_boundary``, ``reference_mse`` and ``discrepancy`` to the summary.
        Default: the setting ``daskie.check`` (true).
    tol : float
        The relative L2 error of ``mu`` over the domain that the solve asks for. Default: the
        setting ``daskie.tol``, 1e-5, chosen by measurement: on E1 (||mu|| ~ 0.37) it is
        MSE ~ 1e-11, inside the accuracy class of daskie's solves (29 of the 32 validation
        equations at MSE <= 1e-10 before there was a tolerance), and Levenberg-Marquardt
        reaches it on E1 in 149 steps (the main job, 17-18 s with its cluster on 2 cores),
        against 899 steps (76 s) for 1e-6; over the catalog and the validation set the
        default solve meets 1e-5 in a median 12-16 s on 2 cores (29 of 32 equations; the
        other three say they missed: benchmarks/results/tolerance_*.json). A tighter tol costs
        more steps; below what the network and the rules can represent it is reported
        missed. Only optimizers stopped by convergence (``steps="auto"``, the default) stop at
        the tolerance; an explicit step count is obeyed.
    max_time : float, optional
        Seconds of training at most (default: the setting ``daskie.max-time``, none). Without
        it the result never depends on the machine's speed or load: the same call with the
        same seed gives the same numbers; with it the summary says ``time_limited``.
    device : str, optional
        Where the objectives compute: None (default) lets each task's resource tag decide
        (GPU-tagged groups on CUDA, the rest on the CPU); ``"cuda"`` or ``"cuda:N"`` puts every
        objective there (a one-GPU workstation: ``client="sync"``, or an embedded cluster
        with ``gpus=workers``, since CPU workers see no GPU); ``"cpu"``.
    dtype : {"float64", "float32"}
        The precision the objectives compute in (float64 by default: Levenberg-Marquardt to
        1e-12 needs it, and refuses float32). float32 serves first-order optimizers on GPUs:
        on E1-E4 with Adam it matched float64 to 5-6 significant digits
        (``benchmarks/results/gpu_precision.json``). Parameters and results stay float64.

    Returns
    -------
    xarray.Dataset
        ``mu``, ``exact`` and ``error`` on a grid; ``attrs`` hold the summary
        (problem, formulation, strategy, mse, rel_l2, ``rel_l2_domain`` (the true relative L2
        over the whole domain, ends and faces included, where the exact solution is known),
        epochs, wall_s, store, ``tol``,
        ``error_estimate`` and ``max_error_estimate`` (relative L2 and relative max),
        ``converged`` (the estimate within tol), ``stopped_by`` (``tol``, ``ridge``,
        ``floor``, ``stalled``, ``budget``, ``target`` or, with ``max_time``, ``time``), ...).
        MSE and relative L2 are measured on held-back Sobol test points. The ``history_*``
        variables hold the training records (:mod:`daskie.records`: every record has a
        ``kind``); the last step record of each window and group also holds the window's
        profile (:mod:`daskie.runtime.profiler`: ``window_s``, ``sync_s``, ``peak_rss_mb``,
        ``t_start``, ``t_end``, ``loss_<block>``).

    Notes
    -----
    On a distributed client, ``solve`` installs :class:`daskie.dashboard.DashboardPlugin` on
    the scheduler: the page ``/daskie`` next to ``/status`` on the Dask dashboard shows the
    run while it trains. Its address is logged at INFO level on the ``daskie.dashboard``
    logger when the run starts (``logging.basicConfig(level="INFO")`` prints it).
    """
    from daskie.session import check_callback, open_session

    check_callback("progress", progress)
    check_callback("on_window", on_window)
    run = _resolve(problem, formulation, strategy, optimizer, client, seed, target_loss, resume,
                   overwrite, store, workers, gpus, init, restarts, check, tol, max_time, device,
                   dtype)
    if threads == "auto":
        from daskie.strategies import Monolithic

        threads = _cores() if isinstance(run.strategy, Monolithic) and run.restarts == 1 else 1
    else:
        check_int("threads", threads, allow_none=True, alternative='"auto"')
    run = _prepare(run, workers, gpus, threads, eval_every)
    user_window = None if on_window is None else (lambda k, outputs, summary: on_window(k, summary))
    with open_session(store, resume=resume, overwrite=overwrite, meta=run.meta,
                      identity={k: run.meta[k] for k in _IDENTITY},
                      summarize=_window_summary(run), on_window=user_window,
                      progress=progress) as session:
        run.resume_point = session.resume_point
        _initial(run)  # inside: a failed warm start must not leave a staged store behind
        if session.finished:  # resuming a finished run: nothing to start
            log.info("the run in %s is finished; returning it as stored", session.store.path)
            return session.store.read()
        with session.connect(client, workers=workers, gpus=gpus) as executor:
            run.plan = executor.fit_plan(run.plan)
            session.start_live_page(run.ctx.token, {
                "problem": run.problem.name, "formulation": run.formulation.label,
                "strategy": run.strategy.label, "optimizer": run.optimizer.label,
                "epochs": run.strategy.progress_total(run.optimizer)})
            try:
                final = None
                if run.restarts <= 1:
                    final = session.execute(run.strategy, run.ctx, run.groups, run.plan,
                                            objective=run.objective, start=run.start)
                final = _restarts(run, executor, session, final)
            except TrainingDiverged as exc:
                if session.store is not None:
                    session.close(failed=True)
                    raise TrainingDiverged(f"{exc}; training stopped: {session.store.message}") from exc
                raise
            wall = session.elapsed()
            n_workers = len(executor.workers())
        if final is None:  # resumed a run whose windows had all completed
            final = session.resume_point[1]
        return _summarize(run, final, wall, n_workers, session, grid)
