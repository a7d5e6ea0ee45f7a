"""``daskie.solve``: problem -> formulation -> plan -> Dask graph -> store -> xarray Dataset."""

from __future__ import annotations

import contextlib
import time

import numpy as np

from daskie.errors import SpecError, TrainingDiverged, check_int

__all__ = ["solve", "default_formulation", "default_optimizer", "solution_dataset", "local_cluster"]


def default_formulation():
    """Quadrature collocation with a 3 x 20 tanh network (DESIGN.md section 6: the most
    accurate per second on the 2-D catalog)."""
    from daskie.formulations.quadrature import QuadratureCollocation

    return QuadratureCollocation()


def default_optimizer(formulation=None):
    """Levenberg-Marquardt, 300 steps. Marquardt's scaling (damping by diag J^T J) for one
    network; plain Levenberg damping for order reduction, whose sub-models have very
    different scales (measured on E2: MSE 1.9e-8 after 80 steps against 9e-3)."""
    from daskie.formulations import OrderReduction
    from daskie.train.optimizers import LevenbergMarquardt

    scaling = "levenberg" if isinstance(formulation, OrderReduction) else "marquardt"
    return LevenbergMarquardt(steps=300, scaling=scaling)


@contextlib.contextmanager
def local_cluster(workers: int = 2, threads_per_worker: int = 1, gpus: int = 0, *,
                  profile: bool = False):
    """An embedded LocalCluster on 127.0.0.1 with CPU (and GPU) resource tags, and its Client.

    ``profile=False`` (default) turns off the workers' statistical profiler (the dashboard's
    Profile page): its thread takes the GIL every 10 ms to sample the training thread,
    which cost about 5 % of a CEPTF step here (E1, 2 workers: 18.5 -> 17.6 ms). On a
    cluster of your own, ``distributed.worker.profile.enabled: false`` does the same.
    """
    import dask
    from distributed import Client, LocalCluster

    resources = {"CPU": threads_per_worker}
    if gpus:
        resources["GPU"] = 1
    # The nanny sets MALLOC_TRIM_THRESHOLD_ for its workers, which makes glibc return freed
    # memory eagerly; torch's many mid-sized temporaries then run 3-4x slower on a worker
    # than in-process (measured: 10 PINN steps 1.9-2.8 s against 0.6-0.8 s). Serving those
    # from mmap-free heap memory restores in-process speed.
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
               "MALLOC_MMAP_THRESHOLD_": 64 * 2**20}
    config = {"distributed.nanny.pre-spawn-environ": environ}
    if not profile:
        config["distributed.worker.profile.enabled"] = False
    with dask.config.set(config), \
            LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                         processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                         resources=resources) as cluster, Client(cluster) as client:
        yield client


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


#: Options that must match for ``resume`` to continue a stored run.
_RESUME_KEYS = ("problem_spec", "formulation_options", "optimizer_options", "strategy_options",
                "seed", "target_loss", "groups")


def _check_same_run(stored: dict, meta: dict):
    """Refuse to resume a stored run with other settings (its checkpoints would not fit)."""
    import json

    def norm(v):
        return json.loads(json.dumps(v, default=str))

    for key in _RESUME_KEYS:
        if key in stored and norm(stored[key]) != norm(meta[key]):
            raise SpecError(f"cannot resume: the stored run's {key} differs from this call's "
                            f"({stored[key]!r} != {meta[key]!r}); resume with the same settings "
                            f"or start a new store")


def solve(problem, formulation=None, strategy=None, optimizer=None, *, client=None, store=None,
          seed: int = 0, target_loss: float = 1e-14, resume: bool = False, overwrite: bool = False,
          workers: int = 2, gpus: int = 0, threads: int | None = 1, eval_every: int = 0,
          progress=None, on_window=None, grid: int | None = None):
    """Solve an integral equation with a neural network, training as a Dask graph.

    Parameters
    ----------
    problem : Problem or str
        A :class:`~daskie.problems.Problem` or a catalog name (``daskie.problems.catalog.names()``).
    formulation : Formulation, optional
        Default :func:`default_formulation` (quadrature collocation).
    strategy : Strategy, optional
        :class:`~daskie.strategies.Monolithic` (default), :class:`~daskie.strategies.CEPTF`,
        or any other daskie strategy (``ParaFlow``, ``ParaFlowS``, ``GradientDescent``).
    optimizer : Optimizer, optional
        Default :func:`default_optimizer` (Levenberg-Marquardt).
    client : distributed.Client or "sync", optional
        Where the graph runs. ``None`` starts an embedded ``LocalCluster`` of ``workers``
        single-threaded workers on 127.0.0.1 for the duration of the call; ``"sync"`` runs
        the same graph in this process with Dask's synchronous scheduler.
    store : str or path, optional
        Directory of the run's zarr store (checkpoints per window, history, solution).
    seed : int
        Seed of the collocation points and the initial parameters.
    target_loss : float
        Training stops when the loss falls below this.
    resume : bool
        Continue the run in ``store`` from its last checkpoint.
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

    Returns
    -------
    xarray.Dataset
        ``mu``, ``exact`` and ``error`` on a grid; ``attrs`` hold the summary
        (problem, formulation, strategy, mse, rel_l2, epochs, wall_s, store, ...).
        MSE and relative L2 are measured on held-back Sobol test points. The ``history_*``
        variables hold the training records; the last record of each window and group also
        holds the window's profile (:mod:`daskie.profiler`: ``window_s``, ``sync_s``,
        ``peak_rss_mb``, ``t_start``, ``t_end``, ``loss_<block>``).

    Notes
    -----
    On a distributed client, ``solve`` installs :class:`daskie.dashboard.DashboardPlugin` on
    the scheduler: the page ``/daskie`` next to ``/status`` on the Dask dashboard shows the
    run while it trains. Its address is logged at INFO level on the ``daskie.dashboard``
    logger when the run starts (``logging.basicConfig(level="INFO")`` prints it).
    """
    from daskie.graph import builder
    from daskie.graph.tasks import RunContext, merge_params, objective_for
    from daskie.problems import Problem, catalog
    from daskie.strategies import CEPTF, Monolithic, Strategy
    from daskie.train.optimizers import Optimizer

    if isinstance(problem, str):
        problem = catalog.get(problem)
    if not isinstance(problem, Problem):
        raise SpecError(f"problem must be a Problem or a catalog name, got {type(problem).__name__}")
    formulation = default_formulation() if formulation is None else formulation
    strategy = Monolithic() if strategy is None else strategy
    optimizer = default_optimizer(formulation) if optimizer is None else optimizer
    if not isinstance(strategy, Strategy):
        raise SpecError(f"strategy must be a daskie Strategy (Monolithic(), CEPTF(...)), got {strategy!r}")
    if not isinstance(optimizer, Optimizer):
        raise SpecError(f"optimizer must be a daskie Optimizer, got {optimizer!r}")
    if not (isinstance(target_loss, (int, float)) and target_loss >= 0):
        raise SpecError(f"target_loss must be a number >= 0, got {target_loss!r}")
    if resume and overwrite:
        raise SpecError("resume and overwrite exclude each other")
    if resume and store is None:
        raise SpecError("resume=True needs the store of the run to continue")
    check_int("workers", workers)

    run_store = None
    if store is not None:
        from daskie.store import RunStore

        run_store = RunStore(store, mode="a" if resume else ("w" if overwrite else "w-"))

    disc = formulation.discretize(problem, seed=seed)
    plan = None
    if isinstance(strategy, CEPTF):
        from daskie.plan import make_plan

        # data-parallel groups: each Plan group takes `shards` workers
        per_group = getattr(strategy, "shards", 1) if strategy.order == "joint" else 1
        plan = make_plan(disc, workers=max(1, workers // per_group), gpus=gpus)
    groups = strategy.groups(disc, plan)
    token = builder.run_token(problem.describe(), _data_fingerprint(problem, disc), formulation,
                              optimizer, strategy, seed, target_loss,
                              plan.to_json() if plan else None, threads, eval_every)
    ctx = RunContext(problem, formulation, optimizer, int(seed), float(target_loss), threads, token,
                     eval_every)
    objective = objective_for(ctx)  # the client's copy: same numbers, used for the summary

    meta = {"problem_spec": problem.describe(), "formulation": formulation.label,
            "formulation_options": repr(formulation), "optimizer": optimizer.label,
            "optimizer_options": repr(optimizer), "strategy": strategy.label,
            "strategy_options": repr(strategy), "seed": int(seed), "target_loss": float(target_loss),
            "plan": plan.to_dict() if plan else None, "groups": [list(g) for g in groups],
            "discretization": disc.info}
    resume_point, history = None, []
    if run_store is not None:
        if resume:
            _check_same_run(run_store.read_meta(), meta)
            ckpt = run_store.latest_checkpoint()
            if ckpt is not None:
                resume_point = builder.load_outputs(ckpt[2])
                history = run_store.history()
        else:
            run_store.write_meta(meta)

    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(local_cluster(workers, 1, gpus))
        available = set() if client == "sync" else builder.check_resources(plan, client)
        from daskie.collectives.spmd import cluster_workers

        n_workers = 1 if client == "sync" else len(cluster_workers(client))
        live = None
        if client != "sync":  # the live page on the scheduler's dashboard; its link is logged
            from daskie.dashboard.plugin import LiveRun

            live = LiveRun(client, token, {
                "problem": problem.name, "formulation": formulation.label, "strategy": strategy.label,
                "optimizer": optimizer.label, "epochs": optimizer.steps + strategy.polish_steps()})
        prior_wall = max([r.get("elapsed_s", 0.0) for r in history] + [0.0])
        t0 = time.perf_counter()

        def window_done(k, outputs):
            params = merge_params(outputs)
            recs = [r for out in outputs for r in out.records]
            theta = objective.layout.join(params)
            summary = {"window": k, "epoch": max(o.state.epoch for o in outputs),
                       "elapsed_s": prior_wall + time.perf_counter() - t0,
                       "loss": float(objective.loss(theta).detach()), **objective.accuracy(theta)}
            recs.append({**summary, "group": -2, "submodels": "joint", "optimizer": "window"})
            if live is not None:
                live.window_done(summary)
            history.extend(recs)
            if run_store is not None:
                run_store.write_checkpoint(k, {n: v.numpy() for n, v in params.items()},
                                           builder.dump_outputs(k, outputs), recs)
            if progress is not None:
                for r in recs:
                    progress(r)
            if on_window is not None:
                on_window(k, summary)

        try:
            final = strategy.execute(ctx, groups, plan, client, available=available,
                                     resume=resume_point, on_window=window_done)
        except TrainingDiverged as exc:
            where = f" in {run_store.path}" if run_store is not None else ""
            raise TrainingDiverged(f"{exc}; training stopped, the last completed window's "
                                   f"checkpoint{where} is kept") from exc
        wall = time.perf_counter() - t0

    if final is None:  # resumed a run whose windows had all completed
        final = resume_point[1]
    params = merge_params(final)
    theta = objective.layout.join(params)
    summary = {
        "problem": problem.name, "formulation": formulation.label, "strategy": strategy.label,
        "optimizer": optimizer.label, **objective.accuracy(theta),
        "loss": float(objective.loss(theta).detach()),
        "epochs": int(max(o.state.epoch for o in final)),
        "wall_s": float(wall + prior_wall), "n_params": int(objective.layout.total),
        "done": next((o.state.done for o in final if o.state.done), "budget"),
        "store": None if run_store is None else str(run_store.path),
        "seed": int(seed), "workers": n_workers,
    }
    if plan is not None:  # seed 000's per-run figures (SR needs a baseline: metrics.compare)
        from daskie.metrics import metric_attrs, plan_metrics

        summary.update(metric_attrs(plan_metrics(history, plan)))
    ds = solution_dataset(objective, theta, problem, grid)
    ds.attrs.update({k: (v if v is not None else "") for k, v in summary.items()})
    if run_store is not None:
        run_store.write_result(ds, history, summary,
                               params={n: v.detach().numpy() for n, v in params.items()})
    from daskie.store import history_to_dataset

    return ds.merge(history_to_dataset(history)) if history else ds
