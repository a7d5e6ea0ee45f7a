"""The numerics of APTS and SAPTS (seed 004 Algorithm 1): local and global trust-region steps.

One iteration k from ``theta^k`` with global loss f, gradient ``g`` and radius Delta:

1. *Local solves* (:func:`local_solve`, one per subdomain i = 1..N, independent): on data
   shard D_i, the local loss ``f_i(w) = f(w; D_i) + (g - grad f(theta^k; D_i)) . (w - theta^k)``
   (Eq 3-4: its gradient at ``theta^k`` is the global one) is decreased by at most
   ``local_steps`` trust-region iterations starting at radius ``Delta / N``, stopping early
   when the local step reaches the local boundary ``||s_i|| = Delta / N``; so
   ``||sum_i s_i|| <= Delta`` (Eq 5).
2. *Global acceptance* (:func:`global_step`): ``rho = (f(theta) - f(theta + sum s_i)) /
   sum_i (f_i(theta) - f_i(theta + s_i))`` (Eq 6); the summed step is taken when
   ``rho >= eta_1`` and the radius updated by Eq 7; then one global trust-region iteration
   (Algorithm 1 line 9).

The strategy spec (:class:`~daskie.strategies.APTS`) supplies the options and the data of each
iteration (``global_function``, ``local_function``); the runtime decides where the steps run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from daskie.train.protocols import HasRows, placement
from daskie.train.trust_region import (LossFunction, Point, SR1Memory, complete, evaluate,
                                       evaluate_trial, reduction_ratio, trust_region_iteration,
                                       is_least_squares)

__all__ = ["Carry", "LocalStep", "Rows", "make_shard", "local_solve", "global_step"]


class Rows:
    """The rows ``index`` of an objective with ``batch_loss`` as an objective of its own."""

    def __init__(self, objective, index):
        self.objective = objective
        self.index = index

    def loss(self, theta):
        return self.objective.batch_loss(theta, self.index)

    @property
    def device(self):
        """The objective's device (where the rows' losses compute)."""
        return placement(self.objective)[0]

    @property
    def dtype(self):
        """The objective's dtype."""
        return placement(self.objective)[1]


def make_shard(source, objective, k: int, n: int):
    """Data shard k of n of the objective and the factor that scales its loss to an estimate
    of the full loss.

    A source that can build shards (an :class:`~daskie.train.protocols.ObjectiveSource`: the
    run's discretization of shard k of n, whose losses sum to the full loss) is asked for it;
    else the objective's own ``shard(k, n)``; else rows ``k, k + n, ...`` of its data.
    """
    from daskie.train.module import ModuleObjective
    from daskie.train.protocols import ObjectiveSource, Shardable

    if n == 1:
        return objective, 1.0
    if isinstance(source, ObjectiveSource):
        return source.build((k, n)), float(n)
    if isinstance(objective, Shardable):
        return objective.shard(k, n), float(n)
    rows = torch.arange(k, int(objective.n_data), n, device="cpu")  # batch_loss moves them
    if isinstance(objective, ModuleObjective):  # a module of its own: Jacobians too
        part = ModuleObjective(objective.module, objective.loss_fn,
                               tuple(t[rows.to(t.device)] for t in objective.data))
    else:
        part = Rows(objective, rows)
    # sums of squares add up over shards; other losses are taken as means
    return part, float(n) if is_least_squares(objective) else 1.0


def _rows(objective) -> int:
    return int(objective.n_data) if isinstance(objective, HasRows) else 0


def _monitor(objective, theta) -> float:
    return LossFunction(objective).value(theta)


@dataclass
class Carry:
    """The global state between iterations (small: parameters, gradient, radius, L-SR1 pairs).

    ``loss`` and ``grad`` are the global loss and gradient at ``theta`` on the data of the
    iteration about to run; ``monitor`` is the full-data loss at ``theta`` (the records' loss).
    """

    theta: torch.Tensor
    loss: float
    grad: torch.Tensor
    radius: float
    S: torch.Tensor | None = None
    Y: torch.Tensor | None = None
    monitor: float = math.nan
    iteration: int = 0
    grad_calls: int = 0
    loss_calls: int = 0
    done: str | None = None
    last: dict | None = None
    wall_s: float = 0.0


@dataclass
class LocalStep:
    """One subdomain's result: its step, the decrease of its local loss and its costs."""

    step: torch.Tensor
    decrease: float
    iterations: int
    grad_calls: int
    loss_calls: int
    worker: str


def local_solve(spec, objective, source, carry: Carry, i: int, seed: int, model: str, worker: str):
    """Subdomain i's preconditioning step (Algorithm 1 lines 5-6)."""
    n = spec.subdomains
    fn = spec.local_function(objective, source, i, carry.iteration, seed)
    theta0 = carry.theta.detach()
    start = evaluate(fn, theta0, model)
    local = fn.shifted(carry.grad - start.grad, theta0)  # Eq 3-4
    point = Point(theta0, start.loss, carry.grad, start.hessian)
    rule = spec.rule.scaled(1.0 / n)
    cap = radius = carry.radius / n
    memory = SR1Memory(carry.S, carry.Y, spec.memory) if model == "sr1" else None
    taken = 0
    for _ in range(spec.local_steps):
        left = cap - float((point.theta - theta0).norm())
        if left <= 1e-12 * cap:  # the local step reached the local boundary
            break
        point = complete(local, point, model)
        point, radius, memory, _ = trust_region_iteration(local, point, radius, rule, model,
                                                          memory, step_bound=left)
        taken += 1
    return LocalStep(point.theta - theta0, start.loss - point.loss, taken,
                     fn.grad_calls + local.grad_calls, fn.loss_calls + local.loss_calls,
                     worker)

def global_step(spec, objective, source, carry: Carry, seed, target_loss, model, local_steps,
                worker: str):
    """Eq 6-7 on the summed local steps, then one global trust-region iteration."""
    k = carry.iteration
    fn = spec.global_function(objective, source, k, seed)
    step = torch.zeros_like(carry.theta)
    predicted = 0.0
    for loc in local_steps:  # in subdomain order: the same sums wherever the tasks ran
        step = step + loc.step
        predicted += loc.decrease
    memory = SR1Memory(carry.S, carry.Y, spec.memory) if model == "sr1" else None
    point = Point(carry.theta, carry.loss, carry.grad)
    trial = carry.theta + step
    trial_loss, trial_grad = evaluate_trial(fn, trial, model)
    rho = reduction_ratio(carry.loss, trial_loss, predicted)
    accepted, radius = spec.rule.update(rho, carry.radius)
    if accepted:
        point = Point(trial, trial_loss, trial_grad)
        if memory is not None:
            memory = memory.add(step, trial_grad - carry.grad)
    point = complete(fn, point, model)
    nxt, new_radius, memory, trial_info = trust_region_iteration(fn, point, radius, spec.rule,
                                                                 model, memory)
    total = spec.iterations(_rows(objective))
    extra_grads = 0
    if spec.fresh_data:  # SAPTS: the next iteration's loss and gradient on its minibatch
        nfn = spec.global_function(objective, source, k + 1, seed)
        loss_next, grad_next = nfn.value_and_grad(nxt.theta)
        monitor, extra_grads = _monitor(objective, nxt.theta), nfn.grad_calls
    else:
        nxt = complete(fn, nxt, "first-order")  # Gauss-Newton trials carry no gradient
        loss_next, grad_next, monitor = nxt.loss, nxt.grad, nxt.loss
    out = Carry(nxt.theta, loss_next, grad_next, new_radius,
                memory.S if memory else None, memory.Y if memory else None, monitor, k + 1,
                carry.grad_calls + fn.grad_calls + extra_grads
                + sum(s.grad_calls for s in local_steps),
                carry.loss_calls + fn.loss_calls + sum(s.loss_calls for s in local_steps))
    out.last = {"rho": float(rho), "accepted": bool(accepted), "rho_global": float(trial_info.rho),
                "accepted_global": bool(trial_info.accepted), "radius": float(new_radius),
                "step_norm": float(step.norm()),
                "local_steps": sum(s.iterations for s in local_steps) / len(local_steps),
                "data_epoch": spec.data_epoch(k + 1, _rows(objective)),
                "worker": worker}
    if out.monitor < target_loss:
        out.done = "target"
    elif not accepted and not trial_info.accepted and new_radius <= spec.min_radius:
        out.done = "stalled"
    elif float(grad_next.norm()) == 0.0:
        out.done = "stalled"
    elif out.iteration >= total:
        out.done = "epochs"
    return out
