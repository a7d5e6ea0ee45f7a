"""The training loop: advance a :class:`TrainState` by a number of optimizer steps.

``advance`` is the unit every strategy runs: the monolithic strategy calls it once for the
whole budget, the CEPTF windows call it for W steps at a time. It is a pure function of
its inputs (objective, optimizer, state, step count), which is what makes windows
checkpointable, resumable and safe for Dask to recompute.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

from daskie.errors import TrainingDiverged
from daskie.train.protocols import SolutionObjective, placement

__all__ = ["TrainState", "advance", "train", "to_device"]


def to_device(tree, device, dtype=None):
    """``tree`` (tensors in dicts, lists, tuples, a :class:`TrainState`) with every tensor on
    ``device`` and every floating-point tensor in ``dtype`` (None: as it is); other leaves as
    they are. Tensors already there are kept, not copied."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device=device, dtype=dtype if dtype is not None and tree.is_floating_point()
                       else None)
    if isinstance(tree, TrainState):
        return replace(tree, theta=to_device(tree.theta, device, dtype),
                       opt_state=to_device(tree.opt_state, device, dtype))
    if isinstance(tree, dict):
        return {k: to_device(v, device, dtype) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_device(v, device, dtype) for v in tree)
    return tree


@dataclass
class TrainState:
    """Where training stands: parameters, optimizer state and counters.

    Attributes
    ----------
    theta : torch.Tensor
        Flat parameters of the objective's trainable sub-models.
    epoch : int
        Optimizer steps taken so far (all stages).
    stage, stage_epoch : int
        Current stage of a :class:`~daskie.train.optimizers.Chain` and steps taken in it.
    opt_state : dict or None
        The current stage's optimizer state (None: not initialised yet).
    done : str or None
        Why training ended: ``"target"`` (loss below target), ``"budget"`` (steps used up),
        ``"stalled"`` (the damping hit its ceiling, or with convergence-based stopping the
        loss stopped falling), ``"floor"`` (the loss reached the discretization floor) or
        ``"time"`` (the wall-time budget of :class:`~daskie.train.optimizers.Stopping`).
    loss : float
        Last reported loss.
    wall_s : float
        Training wall time accumulated so far (seconds).
    """

    theta: torch.Tensor
    epoch: int = 0
    stage: int = 0
    stage_epoch: int = 0
    opt_state: dict | None = None
    done: str | None = None
    loss: float = math.inf
    wall_s: float = 0.0
    meta: dict = field(default_factory=dict)


def advance(objective, optimizer, state: TrainState, n_steps: int, *, target_loss: float = 0.0,
            eval_every: int = 0, callback=None, record_extra=None, final_mse: bool = True):
    """Take up to ``n_steps`` optimizer steps from ``state``.

    Parameters
    ----------
    objective : Objective
        What to minimise.
    optimizer : Optimizer
        A single optimizer or a :class:`~daskie.train.optimizers.Chain`.
    state : TrainState
        Start; not modified (a new state is returned).
    n_steps : int
        Steps to take at most (fewer when the target is met or the budget ends).
    target_loss : float
        Stop as soon as the loss falls below this.
    eval_every : int
        Also record the test MSE every this many steps (0: only at the end of the call).
    callback : callable, optional
        ``callback(record)`` after each step (progress bars, live dashboards).
    record_extra : dict, optional
        Fields added to every record (window index, sub-model, worker).
    final_mse : bool
        Record the test MSE after the last step.

    Returns
    -------
    (TrainState, list of dict)
        The new state and one record per step: epoch, loss, optimizer, wall_s and, where
        evaluated, mse.

    Raises
    ------
    TrainingDiverged
        When the loss turns NaN or infinite; ``exc.state`` is the last good state.

    Notes
    -----
    The steps run on the objective's device and dtype (``objective.device``,
    ``objective.dtype``): the state's tensors move there once, at the start, and the new
    state comes back on the device and in the dtype ``state`` came in with (a window task's
    CPU checkpoint in, a CPU checkpoint out, whatever device trained it).
    """
    stages = optimizer.stages()
    home = (state.theta.device, state.theta.dtype)
    try:
        state, records = _advance(objective, stages, to_device(state, *placement(objective)),
                                  n_steps, target_loss, eval_every, callback, record_extra, final_mse)
    except TrainingDiverged as exc:
        if getattr(exc, "state", None) is not None:
            exc.state = to_device(exc.state, *home)
        raise
    return to_device(state, *home), records


def _advance(objective, stages, state, n_steps, target_loss, eval_every, callback, record_extra,
             final_mse):
    state = replace(state, meta=dict(state.meta))
    records = []
    extra = dict(record_extra or {})
    for _ in range(int(n_steps)):
        if state.done is not None:
            break
        while state.stage < len(stages) and state.stage_epoch >= stages[state.stage].steps:
            state.stage, state.stage_epoch, state.opt_state = state.stage + 1, 0, None
        if state.stage >= len(stages):
            state.done = "budget"
            break
        opt = stages[state.stage]
        if state.opt_state is None:
            state.opt_state = opt.init_state(objective, state.theta)
        t0 = time.perf_counter()
        theta, opt_state, info = opt.step(objective, state.theta, state.opt_state, state.epoch)
        dt = time.perf_counter() - t0
        loss = float(info["loss"])
        if not math.isfinite(loss) or not bool(torch.isfinite(theta).all()):
            exc = TrainingDiverged(
                f"loss became {loss} at epoch {state.epoch + 1} ({opt.label}); "
                f"the last good state (epoch {state.epoch}, loss {state.loss:.3e}) is kept")
            exc.state = state
            raise exc
        state = replace(state, theta=theta, opt_state=opt_state, epoch=state.epoch + 1,
                        stage_epoch=state.stage_epoch + 1, loss=loss, wall_s=state.wall_s + dt)
        rec = {"epoch": state.epoch, "loss": loss, "optimizer": opt.label, "step_s": dt,
               "wall_s": state.wall_s, **{k: v for k, v in info.items() if k != "loss"}, **extra}
        if info.get("stalled"):
            # The damping hit its ceiling: this stage can do no more; go on with the next.
            state.stage, state.stage_epoch, state.opt_state = state.stage + 1, 0, None
            if state.stage >= len(stages):
                state.done = "stalled"
        elif opt.stop is not None:
            why = _converged(opt.stop, state, loss)
            if why is not None:
                rec["stopped_by"] = why
                if why == "stalled" and state.stage + 1 < len(stages):
                    state.stage, state.stage_epoch, state.opt_state = state.stage + 1, 0, None
                else:
                    state.done = why
        if loss < target_loss:
            state.done = "target"
        if opt.stop is not None and isinstance(objective, SolutionObjective):
            _check_estimate(opt.stop, objective, state, rec, loss)
        if eval_every and state.epoch % eval_every == 0:
            rec["mse"] = objective.mse(state.theta)
        records.append(rec)
        if callback is not None:
            callback(rec)
    if final_mse and records and "mse" not in records[-1]:
        records[-1]["mse"] = objective.mse(state.theta)
    return state, records


def _check_estimate(stop, objective, state, rec, loss):
    """Stop with ``"tol"`` when the error estimate of the answer is within the tolerance
    (:meth:`~daskie.train.optimizers.Stopping.estimate_due` says when to compute it: a
    function of the losses, so the same run checks at the same steps on any machine)."""
    stopping = state.done is not None or rec.get("stopped_by") is not None
    seen = list(state.meta.get("estimates", ()))  # (loss, estimate) pairs, oldest first
    if not stop.estimate_due(loss, seen[-1] if seen else None, stopping):
        return
    theta = state.theta
    t0 = time.perf_counter()
    estimate = float(stop.estimator(lambda x: objective.solution(theta, x))["error_estimate"])
    state.meta["estimates"] = seen + [(loss, estimate)]
    rec.update(error_estimate=estimate, estimate_s=time.perf_counter() - t0)
    if estimate <= stop.goal():
        state.done = rec["stopped_by"] = "tol"
    elif state.done is None and stop.on_ridge(seen, loss, estimate):
        state.done = rec["stopped_by"] = "ridge"


def _converged(stop, state, loss):
    """Keep the last ``stop.window + 1`` losses of the stage in ``state.meta`` and ask
    ``stop`` whether to end; the history travels with the state across windows."""
    losses = list(state.meta.get("stop_losses", ()))[-stop.window:] + [loss]
    if state.stage_epoch == 1:
        losses = [loss]  # a new stage starts its own history
    state.meta["stop_losses"] = losses
    return stop.check(losses, state.wall_s)


def train(objective, optimizer, *, seed: int = 0, target_loss: float = 0.0, eval_every: int = 0,
          callback=None, state: TrainState | None = None):
    """Train ``objective`` with ``optimizer`` to the end of its budget or the loss target.

    A convenience over :func:`advance` for single-process use; returns ``(state, records)``.
    """
    if state is None:
        state = TrainState(theta=objective.init_params(seed))
    return advance(objective, optimizer, state, optimizer.steps + 1, target_loss=target_loss,
                   eval_every=eval_every, callback=callback)
