"""The iteration runner: strategies whose unit is an outer iteration, not a training window.

ParaFlow, ParaFlowS and GradientDescent (seed 002, :mod:`daskie.train.gradient_flow`) and APTS
and SAPTS (seed 004, :mod:`daskie.train.apts`) train a whole flat-parameter objective through
rounds of tasks on the :mod:`futures pipeline <daskie.runtime.pipeline>`:

* ParaFlow: a Parareal iteration per round (parallel fine propagators, a coarse correction),
  then the least-loss iterate;
* ParaFlowS, GradientDescent: one task per round;
* APTS, SAPTS: ``subdomains`` local solves in parallel, then the global step.

:func:`train` is the one driver for all of them, behind both front doors: :func:`daskie.fit`
(a torch module's objective) and :func:`daskie.solve` (the integral equation's, rebuilt on the
workers from the run's :class:`~daskie.runtime.context.RunContext`). Iterations are grouped
into checkpoint windows of ``checkpoint_every`` records (``on_window`` calls, store
checkpoints).
"""

from __future__ import annotations

import time
import uuid

from daskie import records as kinds
from daskie.errors import SpecError
from daskie.runtime.parareal import parareal_futures
from daskie.runtime.context import WindowOutput, torch_threads
from daskie.runtime.pipeline import iterate, round_robin
from daskie.runtime.state import where, worker_state
from daskie.train import apts as tr
from daskie.train import gradient_flow as gf
from daskie.train.loop import TrainState
from daskie.train.protocols import MiniBatchObjective, ObjectiveSource

__all__ = ["train", "objective_of", "shard_of", "GradientFlowIterations", "TrustRegionIterations"]


def objective_of(source):
    """The objective a task works on: built from an :class:`ObjectiveSource` (once per
    worker), or the source itself when it is an objective."""
    return source.build() if isinstance(source, ObjectiveSource) else source


def shard_of(source, objective, k: int, n: int, run: str):
    """Data shard k of n (:func:`daskie.train.apts.make_shard`), built once per worker and
    run (``run`` names the run: sources that are plain objects have no token)."""
    state = worker_state()
    # the entry holds the source: an identity-named run keeps its name while cached
    shard, scale, _ = state.cached(state.shards, (run, k, n),
                                   lambda: (*tr.make_shard(source, objective, k, n), source))
    return shard, scale


# --- task functions (module level so they pickle) -------------------------------------------
def _coarse_task(theta, n, source, spec, seed, k, threads, rows):
    with torch_threads(threads):
        return gf.coarse(objective_of(source), spec, theta)


def _fine_task(theta, n, source, spec, seed, k, threads, rows):
    with torch_threads(threads):
        return gf.fine(objective_of(source), spec, theta, seed, k, n, rows)


def _loss_task(theta, source, threads):
    with torch_threads(threads):
        return gf.loss_value(objective_of(source), theta)


def _carry_theta(carry):
    return carry.theta


def _select_task(spec, carry, rows, target_loss, *thetas_losses):
    if carry.done is not None:
        return carry
    m = len(thetas_losses) // 2
    return gf.select(spec, carry, rows, target_loss, thetas_losses[:m], thetas_losses[m:], where())


def _iteration_task(spec, source, seed, carry, rows, target_loss, threads):
    if carry.done is not None:
        return carry
    with torch_threads(threads):
        return spec.iteration_step()(objective_of(source), spec, seed, carry, rows, target_loss,
                                     where())


def _local_task(spec, source, carry, i, seed, model, threads):
    if carry.done is not None:
        return None
    with torch_threads(threads):
        return tr.local_solve(spec, objective_of(source), source, carry, i, seed, model, where())


def _global_task(spec, source, carry, seed, target_loss, model, threads, *local_steps):
    if carry.done is not None:
        return carry
    with torch_threads(threads):
        return tr.global_step(spec, objective_of(source), source, carry, seed, target_loss, model,
                              local_steps, where())


# --- the two families --------------------------------------------------------------------------
class GradientFlowIterations:
    """The iterations of ParaFlow, ParaFlowS and GradientDescent (the spec's
    ``iteration_step``: one task per iteration, or ParaFlow's Parareal round)."""

    stop_at_start = True  # a start below the target is the answer

    def __init__(self, spec, objective, source, seed, target_loss, threads):
        self.spec, self.objective, self.source = spec, objective, source
        self.seed, self.target_loss, self.threads = seed, target_loss, threads
        self.rows = gf.n_data(objective)
        if spec.batch is not None and spec.batch < self.rows and \
                not isinstance(objective, MiniBatchObjective):
            raise SpecError(f"{type(spec).__name__}.batch={spec.batch}: this objective has no "
                            "minibatch loss (integral-equation residuals are coupled through "
                            "the quadrature); use batch=None")

    def start(self, theta):
        with torch_threads(self.threads):
            return gf.Carry(theta, gf.loss_value(self.objective, theta))

    def resume(self, st):
        return gf.Carry(st.theta, st.loss, st.epoch, st.meta.get("grad_calls", 0),
                        st.meta.get("grad_calls_path", 0), st.done)

    def state(self, c):
        return TrainState(theta=c.theta, epoch=c.iteration, loss=c.loss, wall_s=c.wall_s,
                          done=c.done, meta={"grad_calls": c.grad_calls,
                                             "grad_calls_path": c.grad_calls_path})

    def record(self, c, previous):
        if c.last is None or c.iteration <= previous.iteration:
            return None
        return {"iteration": c.iteration, "epoch": c.iteration, "loss": c.loss,
                "grad_calls": c.grad_calls, "grad_calls_path": c.grad_calls_path, **c.last}

    def limit(self, carry):
        return self.spec.max_iterations(self.rows, carry.grad_calls)

    def step(self, executor, src, token, workers):
        spec, seed, rows, target, threads = (self.spec, self.seed, self.rows, self.target_loss,
                                             self.threads)
        if spec.iteration_step() is not None:
            def one_task(carry_f, k):
                return executor.submit(_iteration_task, spec, src, seed, carry_f, rows, target,
                                       threads, key=f"{spec.label}-{token}-{k}")
            return one_task

        def parareal_round(carry_f, k):
            y0 = executor.submit(_carry_theta, carry_f, key=f"paraflow-{token}-{k}-start")
            hist = parareal_futures(executor, _coarse_task, _fine_task, y0, spec.n_coarse, 1,
                                    initial=None if spec.init == "coarse" else [y0] * (spec.n_coarse + 1),
                                    args=(src, spec, seed, k, threads, rows),
                                    token=f"{token}-{k}", workers=workers)
            w1 = hist[1][1:]
            losses = [executor.submit(_loss_task, w, src, threads,
                                      key=f"paraflow-{token}-{k}-loss-{n}",
                                      workers=[workers[n % len(workers)]])
                      for n, w in enumerate(w1)]
            return executor.submit(_select_task, spec, carry_f, rows, target, *w1, *losses,
                                   key=f"paraflow-{token}-{k}-select")
        return parareal_round


class TrustRegionIterations:
    """The iterations of APTS and SAPTS: local solves in parallel, then a global step."""

    stop_at_start = False

    def __init__(self, spec, objective, source, seed, target_loss, threads):
        self.spec, self.objective, self.source = spec, objective, source
        self.seed, self.target_loss, self.threads = seed, target_loss, threads
        spec.check(objective, source)
        self.model = spec.resolve_model(objective)

    def start(self, theta):
        spec = self.spec
        with torch_threads(self.threads):
            fn = spec.global_function(self.objective, self.source, 0, self.seed)
            loss, grad = fn.value_and_grad(theta)
            monitor = tr._monitor(self.objective, theta) if spec.fresh_data else loss
        return tr.Carry(theta, loss, grad, float(spec.radius), monitor=monitor,
                        grad_calls=fn.grad_calls)

    def resume(self, st):
        o = st.opt_state
        return tr.Carry(st.theta, o["loss"], o["grad"], o["radius"], o["S"], o["Y"], st.loss,
                        st.epoch, st.meta.get("grad_calls", 0), st.meta.get("loss_calls", 0),
                        st.done)

    def state(self, c):
        return TrainState(theta=c.theta, epoch=c.iteration, loss=c.monitor, wall_s=c.wall_s,
                          done=c.done,
                          opt_state={"loss": c.loss, "grad": c.grad, "radius": c.radius,
                                     "S": c.S, "Y": c.Y},
                          meta={"grad_calls": c.grad_calls, "loss_calls": c.loss_calls})

    def record(self, c, previous):
        return {"iteration": c.iteration, "epoch": c.iteration, "loss": c.monitor,
                "grad_calls": c.grad_calls, "loss_calls": c.loss_calls,
                "step_s": c.wall_s - previous.wall_s, **c.last}

    def limit(self, carry):
        return None

    def step(self, executor, src, token, workers):
        spec, seed, target, threads, model = (self.spec, self.seed, self.target_loss,
                                              self.threads, self.model)

        def apts_round(carry_f, k):
            steps = [executor.submit(_local_task, spec, src, carry_f, i, seed, model, threads,
                                     key=f"{spec.label}-{token}-{k}-local-{i}",
                                     workers=[workers[i % len(workers)]])
                     for i in range(spec.subdomains)]
            return executor.submit(_global_task, spec, src, carry_f, seed, target, model, threads,
                                   *steps, key=f"{spec.label}-{token}-{k}-global")
        return apts_round


def train(spec, objective, executor, *, seed: int = 0, target_loss: float = 0.0,
          threads: int | None = 1, resume=None, on_window=None, source=None, theta0=None):
    """Train ``objective`` with an iteration strategy from ``theta0`` (default
    ``objective.init_params(seed)``) on ``executor``.

    Parameters
    ----------
    spec : ParaFlow, ParaFlowS, GradientDescent, APTS or SAPTS
    objective : LossObjective
        The flat-parameter objective (this process's copy).
    executor : Executor
    seed : int
        Seed of the initial parameters and of the minibatch streams.
    target_loss : float
        Stop once the loss falls below it.
    threads : int or None
        torch threads inside the computation (restored afterwards).
    resume : (int, list of WindowOutput), optional
        The last completed checkpoint window to continue from.
    on_window : callable, optional
        ``on_window(w, outputs)`` every ``checkpoint_every`` iterations and at the end.
    source : ObjectiveSource, optional
        What tasks rebuild the objective and its shards from (a RunContext); default the
        objective itself.
    theta0 : tensor, optional
        Start parameters.

    Returns
    -------
    list of WindowOutput
        One output with all sub-models' parameters, the final state and the last window's
        records.
    """
    source = objective if source is None else source
    scheme = spec.iteration_scheme()(spec, objective, source, seed, target_loss, threads)
    if resume is not None:
        w0, outs = resume
        carry = scheme.resume(outs[0].state)
        w0, prior_wall = w0 + 1, outs[0].state.wall_s
    else:
        theta = objective.init_params(seed) if theta0 is None else theta0.detach().clone()
        carry = scheme.start(theta)
        w0, prior_wall = 0, 0.0
    names = "+".join(objective.layout.names)
    label = type(spec).__name__

    def output(c, records):
        params = {n: v.clone() for n, v in objective.layout.split(c.theta).items()}
        return [WindowOutput(0, scheme.state(c), params, records, scheme.state(c).loss)]

    t0 = time.perf_counter()
    carry.wall_s = prior_wall
    head = {"kind": kinds.ITERATION, "group": 0, "submodels": names, "optimizer": label}

    def record(c, previous, window):
        c.wall_s = prior_wall + time.perf_counter() - t0
        rec = scheme.record(c, previous)
        if rec is None:
            c.wall_s = previous.wall_s
            return None
        return {**rec, "wall_s": c.wall_s, "window": window, **head}

    return _checkpoint_windows(spec, _rounds(spec, scheme, executor, source, carry, target_loss),
                               carry, record, output, window=w0, on_window=on_window,
                               resume=resume)


def _rounds(spec, scheme, executor, source, carry, target_loss):
    """Yield the carry after each iteration until done."""
    if carry.done is not None:
        return
    if scheme.stop_at_start and carry.loss < target_loss:
        carry.done = "target"
        yield carry
        return
    src = executor.scatter(source)
    token = uuid.uuid4().hex
    step = scheme.step(executor, src, token, round_robin(executor))
    yield from iterate(executor, carry, step, limit=scheme.limit(carry))


def _checkpoint_windows(spec, iterations, carry, record, output, *, window, on_window, resume):
    """Group an iteration stream into checkpoint windows of ``spec.checkpoint_every``
    records; returns the last window's outputs.

    ``record(c, previous, window)`` makes the record of iterate ``c`` (or None for none);
    ``output(c, records)`` the window outputs at ``c``, passed to ``on_window(window,
    outputs)``. A window also closes at the iterate that ends the training. Without any
    record (and no resume point) the start is the output.
    """
    records, final = [], None
    for c in iterations:
        rec = record(c, carry, window)
        if rec is not None:
            records.append(rec)
        carry = c
        if records and (len(records) >= spec.checkpoint_every or c.done is not None):
            final = output(c, records)
            if on_window is not None:
                on_window(window, final)
            window, records = window + 1, []
    if final is None and resume is None:
        final = output(carry, [])
    return final
