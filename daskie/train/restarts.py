"""Several seeds, the best kept: restarts for bad local minima (issue 15, class 2).

:func:`train_seed` is one independent training run (warm start, then the optimizer) and a
pure function of its arguments, so the runtime can submit K of them as independent tasks;
:func:`best_of` keeps the lowest loss; :func:`train_restarts` runs the seeds in turn, and
restarts by itself when a run stalls far above the discretization floor while time is left.
Serial and distributed runs of the same seeds give the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from daskie.errors import check_int
from daskie.train.loop import TrainState, advance
from daskie.train.warm_start import initial_params

__all__ = ["SeedResult", "with_floor", "with_tolerance", "with_time", "other_scaling", "train_seed",
           "seed_task", "best_of", "train_restarts", "needs_restart"]

#: A run that stalled with its loss more than this factor above the discretization floor
#: restarts from another seed. Measured on the validation set's 3-D equation: a bad minimum
#: sat at loss 1e-1 against a floor of 1e-30; runs that converge stall within 1e2 of the floor.
RESTART_FACTOR = 1e4


@dataclass
class SeedResult:
    """One seed's run: its final state, records and how it started."""

    seed: int
    state: TrainState
    records: list = field(default_factory=list)
    init: dict = field(default_factory=dict)
    wall_s: float = 0.0


def _with_stops(optimizer, change):
    """``optimizer`` with ``change(stop)`` as every stage's
    :class:`~daskie.train.optimizers.Stopping` (stages with a fixed step count, which have
    none, unchanged: an explicit count is obeyed)."""
    from daskie.train.optimizers import Chain

    stages = [replace(s, stop=change(s.stop)) if s.stop is not None else s
              for s in optimizer.stages()]
    return stages[0] if len(stages) == 1 else Chain(tuple(stages))


def with_floor(optimizer, floor):
    """``optimizer`` with every stopping rule told the discretization floor."""
    if floor is None:
        return optimizer
    return _with_stops(optimizer, lambda stop: replace(stop, floor=float(floor)))


def with_tolerance(optimizer, tol: float, estimator, estimate_factor: float | None = None):
    """``optimizer`` with every stopping rule told the tolerance and the error estimator
    (training stops once the estimate is within ``tol``), and how far the loss must fall
    between two estimates (None: the rule's own)."""
    def told(stop):
        stop = replace(stop, tol=float(tol), estimator=estimator)
        return stop if estimate_factor is None else replace(stop, estimate_factor=estimate_factor)

    return _with_stops(optimizer, told)


def with_time(optimizer, seconds: float):
    """``optimizer`` with every stopping rule given at most ``seconds`` of training."""
    def cap(stop):
        limit = seconds if stop.max_wall_s is None else min(stop.max_wall_s, seconds)
        return replace(stop, max_wall_s=max(0.0, float(limit)))

    return _with_stops(optimizer, cap)


def other_scaling(optimizer):
    """``optimizer`` with every Levenberg-Marquardt stage's damping scaling swapped
    (``"marquardt"`` <-> ``"levenberg"``); other stages unchanged.

    A restart's second chance: Marquardt's diag(J^T J) damping follows the columns' scales
    and can stall where they differ by orders (measured on E2, the linear 2-D Volterra
    equation: every start stalled at relative error 1.7e-4 with Marquardt's scaling, the
    first start with Levenberg's met 1e-5 at 3.2e-6), while plain Levenberg damping is the
    slower of the two where both converge.
    """
    from daskie.train.optimizers import Chain, LevenbergMarquardt

    swap = {"marquardt": "levenberg", "levenberg": "marquardt"}
    stages = [replace(s, scaling=swap[s.scaling]) if isinstance(s, LevenbergMarquardt) else s
              for s in optimizer.stages()]
    return stages[0] if len(stages) == 1 else Chain(tuple(stages))


def train_seed(objective, optimizer, seed: int, *, init: str = "auto", reference=None,
               target_loss: float = 0.0, eval_every: int = 0, callback=None) -> SeedResult:
    """Initial parameters for ``seed`` (:func:`~daskie.train.warm_start.initial_params`),
    then ``optimizer`` to its stopping rule; a pure function of its arguments."""
    t0 = time.perf_counter()
    theta, info = initial_params(objective, init, seed=seed, reference=reference)
    state = TrainState(theta=theta, meta={"seed": int(seed), "init": info["init"]})
    state, records = advance(objective, optimizer, state, optimizer.steps + 1,
                             target_loss=target_loss, eval_every=eval_every, callback=callback)
    return SeedResult(int(seed), state, records, info, time.perf_counter() - t0)


def seed_task(ctx, seed: int, init: str = "auto", reference=None) -> SeedResult:
    """:func:`train_seed` as a task of the runtime: ``ctx`` is the run's context (its
    ``build()`` gives the objective, cached per worker; ``optimizer``, ``target_loss`` and
    ``threads`` are the run's). The result's tensors are on the CPU, whatever device trained."""
    import torch

    from daskie.train.loop import to_device

    before = torch.get_num_threads()
    if ctx.threads is not None and ctx.threads != before:
        torch.set_num_threads(ctx.threads)
    try:
        out = train_seed(ctx.build(), ctx.optimizer, seed, init=init, reference=reference,
                         target_loss=ctx.target_loss)
        out.state = to_device(out.state, "cpu")
        return out
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def best_of(results):
    """The best result: one that met its tolerance (``done == "tol"``) before one that did
    not, then the lowest final loss (the first seed among equals: deterministic)."""
    return min(results, key=lambda r: (r.state.done != "tol", r.state.loss, r.seed))


def needs_restart(result: SeedResult, floor) -> bool:
    """Whether ``result`` stalled far above the discretization ``floor``."""
    return (result.state.done == "stalled" and floor is not None
            and result.state.loss > RESTART_FACTOR * max(floor, 1e-300))


def train_restarts(objective, optimizer, *, restarts: int = 1, seed: int = 0, init: str = "auto",
                   reference=None, floor=None, target_loss: float = 0.0, auto: bool = True,
                   max_auto: int = 3, max_wall_s: float | None = None, runner=None,
                   first=None, restart=None, restart_init: str | None = None, vary=None):
    """Train seeds ``seed, seed + 1, ...`` and keep the best (:func:`best_of`).

    The one restart loop of daskie: ``solve`` runs it with its seeds as tasks of the
    runtime (``runner``), its first run as ``first`` and its tolerance in ``restart``.

    Parameters
    ----------
    objective, optimizer :
        What to minimise and how.
    restarts : int
        Seeds trained in any case (K).
    seed : int
        First seed.
    init, reference :
        Passed to :func:`train_seed` (every seed starts the same way).
    floor : float, optional
        Discretization floor; with ``auto`` and no ``restart`` rule, a best run that stalled
        more than :data:`RESTART_FACTOR` above it starts another seed (:func:`needs_restart`).
    target_loss : float
    auto : bool
        Restart automatically (up to ``max_auto`` more seeds) while ``restart`` says so.
    max_auto : int
    max_wall_s : float, optional
        Time budget of all seeds together (the sum of their wall times, ``first`` included);
        an automatic restart gets what is left, and none starts with less than a tenth left.
    runner : callable, optional
        ``runner(seeds, optimizer, init) -> list of SeedResult`` running :func:`train_seed`
        for several seeds (the runtime submits them as independent tasks); default: one
        after another in this process.
    first : list of SeedResult, optional
        Runs already made (of seeds ``seed, ..., seed + restarts - 1``): they are not
        trained again.
    restart : callable, optional
        ``restart(best) -> bool``: whether another seed may do better than the best run so
        far (default: :func:`needs_restart` with ``floor``).
    restart_init : str, optional
        How an automatic restart starts (default ``init``).
    vary : callable, optional
        ``vary(optimizer, i) -> optimizer`` for automatic restart ``i = 1, 2, ...`` (e.g.
        :func:`other_scaling` on every other one); default: the same optimizer.

    Returns
    -------
    (SeedResult, list of SeedResult)
        The best run and every run, in seed order.
    """
    check_int("restarts", restarts)
    if runner is None:
        def runner(seeds, opt, how):
            return [train_seed(objective, opt, s, init=how, reference=reference,
                               target_loss=target_loss) for s in seeds]
    if restart is None:
        def restart(best):
            return needs_restart(best, floor)
    results = list(first) if first is not None else list(
        runner(list(range(seed, seed + restarts)), optimizer, init))
    extra = 0
    while results and auto and extra < max_auto and restart(best_of(results)):
        left = None if max_wall_s is None else max_wall_s - sum(r.wall_s for r in results)
        if left is not None and left < 0.1 * max_wall_s:
            break  # too little time for another seed to get anywhere
        extra += 1
        opt = optimizer if vary is None else vary(optimizer, extra)
        opt = opt if left is None else with_time(opt, left)
        results += list(runner([seed + restarts + extra - 1], opt, restart_init or init))
    return best_of(results), results
