"""``daskie.solve``: problem -> formulation -> strategy spec -> plan -> runtime -> store -> Dataset.

``solve`` is a short sequence of named steps (see ``docs/architecture.md``): resolve the
arguments (:func:`_resolve`), prepare the run -- discretize once, plan, the run's token and
context (:func:`_prepare`) --, open the store and find the resume point (:func:`_open`),
execute the strategy on the executor (:func:`_execute`), and summarize (:func:`_summarize`).
The public ``client`` argument becomes an executor here and nowhere else.
"""

from __future__ import annotations

import logging
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
    """Levenberg-Marquardt until converged (``steps="auto"``: the target, the discretization
    floor, a stall, 80 s or 2000 steps; issue 15: with a fixed 300 steps the loss was still
    falling by orders of magnitude at the end). Marquardt's scaling (damping by diag J^T J)
    for one network; plain Levenberg damping for order reduction, whose sub-models have very
    different scales (measured on E2: MSE 1.9e-8 after 80 steps against 9e-3)."""
    from daskie.formulations import OrderReduction
    from daskie.train.optimizers import LevenbergMarquardt

    scaling = "levenberg" if isinstance(formulation, OrderReduction) else "marquardt"
    return LevenbergMarquardt(steps="auto", scaling=scaling)


def _grid_points(domain, n=None):
    d = domain.dim
    n = n or {1: 201, 2: 65, 3: 17}.get(d, 5)
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
             "seed", "target_loss", "groups")


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


def _resolve(problem, formulation, strategy, optimizer, client, seed, target_loss, resume,
             overwrite, store, workers, gpus, init=None, restarts=1, check=None) -> _Run:
    """Validate the arguments (named errors, before anything starts) and fill the defaults
    (``init`` and ``check`` from the settings ``daskie.init``, ``daskie.check``)."""
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
    optimizer = default_optimizer(formulation) if optimizer is None else optimizer
    if not isinstance(strategy, Strategy):
        raise SpecError(f"strategy must be a daskie Strategy (Monolithic(), CEPTF(...)), got {strategy!r}")
    if not isinstance(optimizer, Optimizer):
        raise SpecError(f"optimizer must be a daskie Optimizer, got {optimizer!r}")
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
    return _Run(problem, formulation, strategy, optimizer, int(seed), float(target_loss),
                init=init, restarts=int(restarts), check=check)


def _prepare(run: _Run, workers, gpus, threads, eval_every) -> _Run:
    """Discretize once, plan, and make the run's token, context and objective."""
    from daskie.runtime.context import RunContext
    from daskie.runtime.context import run_token
    from daskie.train.objective import Objective

    _reference_and_floor(run)  # may refine the formulation and tell the optimizer the floor
    problem, formulation, strategy, optimizer = run.problem, run.formulation, run.strategy, run.optimizer
    run.plan = strategy.plan(run.disc, workers, gpus)
    run.groups = strategy.groups(run.disc, run.plan)
    token = run_token(problem.describe(), _data_fingerprint(problem, run.disc), formulation,
                      optimizer, strategy, run.seed, run.target_loss,
                      run.plan.to_json() if run.plan else None, threads, eval_every)
    run.ctx = RunContext(problem, formulation, optimizer, run.seed, run.target_loss, threads, token,
                         eval_every)
    run.objective = Objective(run.disc)  # the client's copy: the summary, the in-process tasks
    run.meta = {"problem_spec": problem.describe(), "formulation": formulation.label,
                "formulation_options": repr(formulation), "optimizer": optimizer.label,
                "optimizer_options": repr(optimizer), "strategy": strategy.label,
                "strategy_options": repr(strategy), "seed": run.seed,
                "target_loss": run.target_loss,
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
        run.formulation, run.problem, run.reference, target_loss=run.target_loss, seed=run.seed)
    run.optimizer = with_floor(run.optimizer, run.floor)
    run.checks.update({"floor": run.floor, "refinement": note})


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


def _restarts(run: _Run, executor, session, final):
    """``restarts=K``: K seeds as independent tasks, the best kept; and for the default
    convergence-stopped optimizer, more seeds when the best stalled far above the
    discretization floor, within its time budget. Returns the final outputs."""
    from daskie.runtime.context import WindowOutput
    from daskie.runtime.seeds import train_seeds
    from daskie.train.restarts import SeedResult, best_of, needs_restart, with_time

    if not run.strategy.seeds_as_tasks:
        return final
    results = []
    if run.restarts > 1:
        results = train_seeds(executor, run.ctx, list(range(run.seed, run.seed + run.restarts)),
                              init=run.init, reference=run.reference)
    elif final is not None:
        results = [SeedResult(run.seed, final[0].state, [], dict(run.checks), session.elapsed())]
    stop = run.optimizer.stages()[-1].stop
    budget = None if stop is None else stop.max_wall_s
    spent, extra = sum(r.wall_s for r in results), 0
    while results and stop is not None and extra < 3 and needs_restart(best_of(results), run.floor) \
            and (budget is None or spent < 0.9 * budget):
        extra += 1
        opt = run.optimizer if budget is None else with_time(run.optimizer, budget - spent)
        results += train_seeds(executor, run.ctx, [run.seed + run.restarts + extra - 1],
                               init=run.init, reference=run.reference, optimizer=opt)
        spent = sum(r.wall_s for r in results)
    if len(results) <= 1 and run.restarts <= 1:
        return final
    best = best_of(results)
    run.checks.update({"restarts": len(results), "run_losses": [float(r.state.loss) for r in results],
                       "best_seed": best.seed, **{k: v for k, v in best.init.items() if k.startswith("init")}})
    if final is not None and best.seed == run.seed and run.restarts <= 1:
        return final
    session.history.extend(best.records)
    params = run.objective.layout.split(best.state.theta)
    return [WindowOutput(0, best.state, {n: v.clone() for n, v in params.items()}, best.records)]


def _assess(run: _Run, theta) -> dict:
    """The summary's checks (:func:`daskie.assess.assess`): interior and boundary MSE, the
    reference's MSE, the discrepancy (with :class:`~daskie.errors.DiscrepancyWarning` above
    its tolerance) and, for nonlinear equations, which solution was found."""
    from daskie import assess

    objective = run.objective
    out = assess.assess(run.problem, lambda x: objective.solution(theta, x), run.disc.test_points,
                        reference=run.reference if run.check else None)
    keep = ("floor", "refinement", "init", "init_reason", "restarts", "run_losses", "best_seed",
            "reference_wall_s")
    out.update({k: run.checks[k] for k in keep if k in run.checks})
    out["init"] = run.checks.get("init", "random")
    return out


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
    summary.update(_assess(run, theta))
    if run.plan is not None:  # seed 000's per-run figures (SR needs a baseline: metrics.compare)
        from daskie.metrics import metric_attrs, plan_metrics

        summary.update(metric_attrs(plan_metrics(history, run.plan)))
    ds = solution_dataset(objective, theta, problem, grid)
    ds.attrs.update({k: (v if v is not None else "") for k, v in summary.items()})
    session.write_result(ds, summary, {n: v.detach().numpy() for n, v in params.items()})
    return ds.merge(history_to_dataset(history)) if history else ds


def solve(problem, formulation=None, strategy=None, optimizer=None, *, client=None, store=None,
          seed: int = 0, target_loss: float = 1e-14, resume: bool = False, overwrite: bool = False,
          workers: int = 2, gpus: int = 0, threads: int | None = 1, eval_every: int = 0,
          progress=None, on_window=None, grid: int | None = None, init: str | None = None,
          restarts: int = 1, check: bool | None = None):
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
        Training stops when the loss falls below this.
    resume : bool
        Continue the run in ``store`` from its last checkpoint (a finished run is returned
        as stored, without starting a cluster).
    overwrite : bool
        Replace an existing store (otherwise an existing store is an error).
    workers, gpus : int
        Cluster size for the plan (and for the embedded cluster).
    threads : int or None
        torch threads inside each task (None: torch's default, all cores).
    eval_every : int
        Record the test MSE every this many steps.
    progress : callable, optional
        ``progress(record)`` for every training record as windows complete.
    on_window : callable, optional
        ``on_window(k, summary)`` after each window (after its checkpoint is written).
    grid : int, optional
        Points per coordinate of the returned solution grid.
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
        Compute the Nystrom reference where it fits (d <= 3), refine the rule while its
        discretization floor is high, and add ``mse_boundary``, ``reference_mse``,
        ``discrepancy`` and ``warnings`` to the summary, raising
        :class:`~daskie.errors.DiscrepancyWarning` when the answer differs from the
        reference by more than 1e-6 (relative RMS).
        Default: the setting ``daskie.check`` (true).

    Returns
    -------
    xarray.Dataset
        ``mu``, ``exact`` and ``error`` on a grid; ``attrs`` hold the summary
        (problem, formulation, strategy, mse, rel_l2, epochs, wall_s, store, ...).
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
    from daskie.session import open_session

    run = _resolve(problem, formulation, strategy, optimizer, client, seed, target_loss, resume,
                   overwrite, store, workers, gpus, init, restarts, check)
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
