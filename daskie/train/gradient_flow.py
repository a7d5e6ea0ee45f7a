"""The numerics of training as a gradient flow (seed 002): propagators and iterations.

The gradient flow ``dW/dt = -grad L(W)`` is split into windows; ParaFlow runs one Parareal
iteration per window with

* the fine propagator F (:func:`fine`): ``n_fine`` (stochastic) gradient steps of length
  ``eta``;
* the coarse propagator G (:func:`coarse`): one full-batch gradient step of length
  ``n_fine * eta``;

and the next window starts from the iterate of least loss (:func:`select`). ParaFlowS
(:func:`paraflows_iteration`) is its sequential form, and :func:`descent_iteration` plain
(stochastic) gradient descent. Everything here is a pure function of its arguments (the
strategy spec supplies the options); the runtime decides where it runs.

Objectives need ``layout``, ``init_params(seed)`` and ``loss(theta)`` (plus
``batch_loss(theta, index)`` for minibatches). ``n_data`` (rows of the data set, or residual
rows) is passed in, never written onto the objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from daskie.train.objective import loss_and_grad
from daskie.train.protocols import HasRows

__all__ = ["Carry", "generator", "n_data", "loss_value", "value_and_grad", "gradient_steps",
           "coarse", "fine", "select", "finish", "paraflows_iteration", "descent_iteration"]


@dataclass
class Carry:
    """What passes from one iteration to the next (small: parameters and counters)."""

    theta: torch.Tensor
    loss: float
    iteration: int = 0
    grad_calls: int = 0
    grad_calls_path: int = 0
    done: str | None = None
    last: dict | None = None  # the last iteration's record fields
    wall_s: float = 0.0


def generator(seed: int, *stream: int) -> torch.Generator:
    """A torch generator for one minibatch stream, independent of where it runs (a CPU
    generator: the same batches on every device; the indices move to the objective's)."""
    state = np.random.SeedSequence([int(seed), *[int(s) for s in stream]]).generate_state(2)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) << 32 | int(state[1]))


def n_data(obj) -> int:
    """Rows of ``obj``'s data: its ``n_data``, or one per residual of an integral-equation
    objective."""
    if isinstance(obj, HasRows):
        return int(obj.n_data)
    with torch.no_grad():
        return int(obj.residuals(obj.init_params(0)).numel())


def value_and_grad(obj, theta, index=None):
    """``(loss, gradient)`` of the full loss, or of the rows ``index`` (``batch_loss``)."""
    loss, g = loss_and_grad(obj.loss if index is None else lambda th: obj.batch_loss(th, index),
                            theta)
    return float(loss), g


def loss_value(obj, theta) -> float:
    """The loss at ``theta`` (inf when not finite)."""
    # not under no_grad: physics-informed losses differentiate the model in its inputs
    value = float(obj.loss(theta.detach()).detach())
    return value if math.isfinite(value) else math.inf


def gradient_steps(obj, theta, eta: float, steps: int, batch: int | None, gen, rows: int):
    """``steps`` (stochastic) gradient steps ``W <- W - eta * grad L_I(W)``.

    ``batch=None`` (or >= ``rows``, the data size) takes full-batch steps; otherwise each
    step draws ``batch`` distinct rows from ``gen``.
    """
    full = batch is None or batch >= rows
    theta = theta.detach()
    for _ in range(int(steps)):
        index = None if full else torch.randperm(rows, generator=gen, device="cpu")[:batch]
        _, g = value_and_grad(obj, theta, index)
        theta = theta - eta * g
    return theta


def coarse(obj, spec, theta):
    """G: one full-batch gradient step of length ``n_fine * eta``."""
    _, g = value_and_grad(obj, theta)
    return theta.detach() - spec.eta * spec.n_fine * g


def fine(obj, spec, theta, seed, k, n, rows):
    """F over slice ``n`` of window ``k``: ``n_fine`` steps on their own minibatch stream."""
    return gradient_steps(obj, theta, spec.eta, spec.n_fine, spec.batch, generator(seed, 0, k, n),
                          rows)


def finish(out: Carry, spec, target_loss: float) -> Carry:
    """Set ``out.done`` when training ends after this iteration."""
    if out.loss < target_loss:
        out.done = "target"
    elif out.last["slice"] == 0 and (spec.batch is None) and spec.deterministic_repeat():
        out.done = "stalled"  # full batch: the next window would repeat this one exactly
    if spec.windows is not None and out.iteration >= spec.windows and out.done is None:
        out.done = "windows"
    return out


def select(spec, carry: Carry, rows: int, target_loss: float, thetas, losses, worker: str):
    """ParaFlow (seed 002 Algorithm 1 line 12): the next window starts from the iterate of
    least loss among the window's start and its Parareal iterates."""
    thetas = [carry.theta, *thetas]
    losses = [carry.loss, *losses]
    best = int(np.argmin(losses))
    work, path = spec.window_cost(rows)
    out = Carry(thetas[best].detach().clone(), losses[best], carry.iteration + 1,
                carry.grad_calls + work, carry.grad_calls_path + path)
    out.last = {"slice": best, "coarse_actions": spec.coarse_actions(), "worker": worker}
    return finish(out, spec, target_loss)


def paraflows_iteration(obj, spec, seed, carry: Carry, rows: int, target_loss: float, worker):
    """ParaFlowS (seed 002 Algorithm 2): one fine propagation f_0 = F(W_k), g_0 = G(W_k),
    then W_{n+1} = f_0 + G(W_n) - g_0 while the loss decreases (at most ``n_coarse`` actions
    of G); the last decreasing iterate starts the next window."""
    k = carry.iteration
    fine_cost = min(spec.batch or rows, rows) * spec.n_fine
    left = spec.budget - carry.grad_calls
    if fine_cost + rows > left:
        return replace(carry, done="budget", last=None)
    eta_g = spec.eta * spec.n_fine
    f0 = gradient_steps(obj, carry.theta, spec.eta, spec.n_fine, spec.batch,
                        generator(seed, 0, k, 0), rows)
    _, g = value_and_grad(obj, carry.theta)
    g0 = carry.theta.detach() - eta_g * g
    calls, actions, stop = fine_cost + rows, 1, "none"
    accepted, losses = [carry.theta.detach()], [carry.loss]
    for n in range(spec.n_coarse):
        if n == 0:
            nxt = f0  # f_0 + G(W_0) - g_0 with G(W_0) = g_0
        else:
            if calls + rows > left:
                stop = "budget"
                break
            _, g = value_and_grad(obj, accepted[n])
            calls, actions = calls + rows, actions + 1
            nxt = f0 + (accepted[n] - eta_g * g) - g0
        value = loss_value(obj, nxt)
        if not value < losses[n]:  # Algorithm 2 line 8 (NaN counts as no decrease)
            stop = "increase"
            break
        accepted.append(nxt)
        losses.append(value)
    out = Carry(accepted[-1], losses[-1], carry.iteration + 1, carry.grad_calls + calls,
                carry.grad_calls_path + calls)
    out.last = {"slice": len(accepted) - 1, "coarse_actions": actions, "break": stop,
                "worker": worker}
    return finish(out, spec, target_loss)


def descent_iteration(obj, spec, seed, carry: Carry, rows: int, target_loss: float, worker):
    """``steps_per_record`` (stochastic) gradient steps with a constant step length."""
    per = min(spec.batch or rows, rows)
    steps = min(spec.steps_per_record, (spec.budget - carry.grad_calls) // per)
    if steps <= 0:
        return replace(carry, done="budget", last=None)
    theta = gradient_steps(obj, carry.theta, spec.eta, steps, spec.batch,
                           generator(seed, 1, carry.iteration), rows)
    out = Carry(theta, loss_value(obj, theta), carry.iteration + 1,
                carry.grad_calls + steps * per, carry.grad_calls_path + steps * per)
    out.last = {"slice": -1, "coarse_actions": 0, "worker": worker}
    return finish(out, spec, target_loss)
