"""Initial parameters: random, or the network fitted first to a known function.

A nonlinear equation may have several solutions, and a network trained from a random start
can reach a zero residual on any of them (issue 15, class 1). Fitting the solution network by
least squares to the reference solution (``init="reference"``) or to ``f / alpha``
(``init="f"``) before training on the equation puts it on that branch, and from the
reference it also starts within reach of the target.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from daskie.errors import SpecError

__all__ = ["INITS", "fit_objective", "fit_to", "initial_params", "choose_init", "picard_step"]

#: Accepted values of ``init``.
INITS = ("auto", "random", "reference", "f")


def _solution_points(disc, max_rows: int) -> np.ndarray:
    """Points at which the equation reads the solution network, without repeats: all of
    them up to ``max_rows``, else every collocation point and an even sample of the rest.

    Per-point rules read the network at q nodes per collocation point; fitting at all of
    them cost 500 s for a kinked 1-D kernel (43k nodes, 901 parameters) where the
    collocation points and a sample fit as well in seconds.
    """
    pts = [ev.points.to(device="cpu", dtype=torch.float64).numpy() for ev in disc.evaluations.values()
           if ev.submodel == disc.solution and ev.derivative is None]
    first, rest = pts[0], np.unique(np.concatenate(pts[1:]), axis=0) if len(pts) > 1 else pts[0][:0]
    room = max(0, max_rows - len(first))
    if len(rest) > room:
        rest = rest[np.linspace(0, len(rest) - 1, room).astype(int)] if room else rest[:0]
    return np.unique(np.concatenate([first, rest]), axis=0)


def picard_step(disc):
    """``(x, mu_1)``: the collocation points and one fixed-point step from ``f / alpha``,
    ``mu_1 = (f + sum_i lam_i Int K_i M_i(f / alpha)) / alpha``, by the discretization's own
    rules; None where it has no collocation evaluation ``"mu@x"`` read by ``alpha mu``.

    The residual is affine in the value at the collocation points, ``r(v) = s (alpha v - f -
    terms)`` with s the rows' scale, so two residuals at ``v = 0`` and ``v = 1`` (the nodes at
    ``f / alpha``) give ``mu_1 = -r(0) / (r(1) - r(0))`` whatever the scaling."""
    ev = disc.evaluations.get("mu@x")
    if ev is None or ev.derivative is not None or set(disc.block_evaluations) != {"equation"}:
        return None
    from daskie.formulations.quadrature import SecondKind

    # f / alpha at every point set: a second-kind sub-model's transform has it (its shift),
    # computed once per set and kept for training
    plain = SecondKind(disc.problem)
    values = {}
    for key, e in disc.evaluations.items():
        affine = getattr(disc.submodels[e.submodel], "affine", None)
        affine = affine if isinstance(affine, SecondKind) else plain
        values[key] = affine(e.points)[1]
    with torch.no_grad():
        values["mu@x"] = torch.zeros_like(values["mu@x"])
        r0 = disc.residual_fn(values)["equation"]
        values["mu@x"] = torch.ones_like(values["mu@x"])
        r1 = disc.residual_fn(values)["equation"]
    slope = (r1 - r0).to(device="cpu", dtype=torch.float64).numpy()
    if not np.all(np.abs(slope) > 0):
        return None
    x = ev.points.to(device="cpu", dtype=torch.float64).numpy()
    return x, -r0.to(device="cpu", dtype=torch.float64).numpy() / slope


def fit_objective(objective, target, points=None):
    """The least-squares objective ``mean (mu(x) - target(x))^2`` over the solution network
    at ``points`` (default: the points where ``objective``'s equation reads it), other
    sub-models frozen at their seed-0 values, which the fit does not touch."""
    from daskie.formulations.base import Discretization, Evaluation, tensor_maker
    from daskie.train.objective import Objective

    disc = objective.disc
    x = _solution_points(disc, 2 * disc.submodels[disc.solution].n_params) if points is None \
        else points
    T = tensor_maker(disc.device, disc.dtype)  # the fit computes where the objective does
    t = T(np.asarray(target(x), dtype=float))
    one = torch.ones(len(x), dtype=T.dtype, device=T.device)
    fit = Discretization(
        problem=disc.problem, submodels={disc.solution: disc.submodels[disc.solution]},
        evaluations={"fit": Evaluation(disc.solution, T(x))},
        residual_fn=lambda v: {"fit": v["fit"] - t}, solution=disc.solution,
        test_points=disc.test_points, test_exact=disc.test_exact,
        block_evaluations={"fit": ("fit",)},
        linear_parts=lambda v: {"fit": {"fit": ("diag", one)}}, info={"formulation": "fit"})
    return Objective(fit)


def fit_to(objective, target, theta, *, steps: int = 60, rel_tol: float = 1e-12,
           max_wall_s: float | None = None, points=None):
    """Parameters of ``objective`` with the solution network fitted to ``target`` (a numpy
    callable) at ``points`` (see :func:`fit_objective`), starting from ``theta``; the other
    sub-models keep their values.

    Levenberg-Marquardt on the fit, until its mean squared misfit is below
    ``rel_tol * mean(target^2)``, it stalls, ``steps`` iterations or ``max_wall_s`` seconds.
    No time limit by default: a time-capped fit would make the start, and every number
    after it, depend on the machine's load (measured: 10 s gave misfits from 1e-11 to 1e-3
    at load averages 1 to 8 on 2 cores).
    """
    from daskie.train.loop import TrainState, advance
    from daskie.train.optimizers import LevenbergMarquardt, Stopping

    fit = fit_objective(objective, target, points)
    layout = objective.layout
    name = objective.disc.solution
    if name not in layout.names:
        return theta
    parts = layout.split(theta.detach().clone())
    x = fit.disc.evaluations["fit"].points.to(device="cpu", dtype=torch.float64).numpy()
    scale = float(np.mean(np.asarray(target(x), dtype=float) ** 2)) or 1.0
    opt = LevenbergMarquardt(steps=steps, stop=Stopping(max_steps=steps, max_wall_s=max_wall_s, window=50, min_decrease=0.01))
    state, _ = advance(fit, opt, TrainState(theta=parts[name].clone()), steps,
                       target_loss=rel_tol * scale, final_mse=False)
    parts[name] = state.theta
    return layout.join(parts)


def choose_init(problem, reference=None, n_submodels: int = 1) -> tuple[str, str]:
    """The default ``init`` for ``problem`` and why: for a nonlinear equation, which may have
    several solutions, the reference where one was computed, else ``f / alpha`` for
    second-kind equations (it selects the branch Newton and the fixed-point iteration start
    from); random otherwise.

    A linear equation has one solution, and there the warm start costs more than it saves
    (measured at tol 1e-5: on E1 the fit to the reference took longer than the whole
    training from a random start, 125 LM steps; on E3 it led into a ridge where the relative
    error sat at 4.4e-4 for 400 steps, while the random start met 1e-5 in 95). Formulations
    with auxiliary sub-models (order reduction) start random: the fit reaches only the
    solution network, and a fitted mu beside unfitted auxiliaries is no better a start."""
    if n_submodels > 1:
        return "random", "auxiliary sub-models (order reduction): random initial parameters"
    if problem.is_linear:
        return "random", "a linear equation has one solution: random initial parameters"
    if reference is not None:
        return "reference", "the Nystrom reference fits this problem: the network is fitted to it first"
    alpha_ok = callable(problem.alpha) or float(problem.alpha) != 0.0
    if not problem.is_linear and alpha_ok:
        return "f", "no reference: the network is fitted to f / alpha first (nonlinear equation)"
    return "random", "no reference: random initial parameters"


def initial_params(objective, init: str = "auto", *, seed: int = 0, reference=None):
    """Initial parameters of ``objective`` and a description of how they were chosen.

    Parameters
    ----------
    objective : Objective
    init : {"auto", "random", "reference", "f"}
        ``"reference"``: the seeded random start, then the solution network fitted to
        ``reference`` by least squares; ``"f"``: fitted to ``f / alpha``; ``"auto"``: see
        :func:`choose_init`.
    seed : int
        Seed of the random start.
    reference : callable, optional
        The reference solution (numpy ``mu(x)``), needed for ``init="reference"``.

    Returns
    -------
    (torch.Tensor, dict)
        ``theta`` and ``{"init": chosen, "init_reason": text, "init_fit_mse": misfit}``.
    """
    if init not in INITS:
        raise SpecError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
    problem = objective.disc.problem
    reason = f"init={init!r} was asked for"
    if init == "auto":
        init, reason = choose_init(problem, reference, len(objective.disc.submodels))
    theta = objective.init_params(seed)
    if init == "random":
        return theta, {"init": "random", "init_reason": reason, "init_fit_mse": math.nan}
    if init == "reference":
        if reference is None:
            raise SpecError("init='reference' needs the reference solution (reference=...)")
        target = reference
    else:
        if not callable(problem.alpha) and float(problem.alpha) == 0.0:
            raise SpecError("init='f' needs alpha != 0 (f / alpha); this is a first-kind equation")
        target = lambda x: np.asarray(problem.f(x), dtype=float) / problem.alpha_at(x)  # noqa: E731
        sub = objective.disc.submodels[objective.disc.solution]
        step = picard_step(objective.disc) if getattr(sub, "affine", None) is not None else None
        if step is not None:
            # the network learns the integral terms (mu = (f + net) / alpha): f / alpha is its
            # zero, a degenerate start; fitted instead to one fixed-point step from f / alpha
            # at the collocation points (issue 30)
            x, mu1 = step
            theta = fit_to(objective, lambda _: mu1, theta, points=x)
            misfit = float(np.mean((objective.solution(theta, x) - mu1) ** 2))
            return theta, {"init": init, "init_reason": reason + "; one fixed-point step from "
                           "f / alpha (the network learns the integral terms)",
                           "init_fit_mse": misfit}
    theta = fit_to(objective, target, theta)
    pts = objective.disc.test_points
    misfit = float(np.mean((objective.solution(theta, pts) - np.asarray(target(pts))) ** 2))
    return theta, {"init": init, "init_reason": reason, "init_fit_mse": misfit}
