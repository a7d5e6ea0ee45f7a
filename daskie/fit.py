"""``daskie.fit``: train a plain ``torch.nn.Module`` with a daskie strategy.

The iteration strategies (:class:`~daskie.strategies.IterationStrategy`: ParaFlow, ParaFlowS,
GradientDescent, APTS, SAPTS) train any flat-parameter objective through one runner,
:func:`daskie.runtime.iterations.train`; :func:`daskie.solve` hands it the integral equation's
:class:`~daskie.train.objective.Objective`, and ``fit`` a
:class:`~daskie.train.module.ModuleObjective`. One training path, two front doors.
"""

from __future__ import annotations

from daskie.errors import SpecError

__all__ = ["fit"]


def fit(module, loss_fn, data, strategy, *, client=None, seed: int = 0, target_loss: float = 0.0,
        threads: int | None = 1, on_window=None, workers: int = 2):
    """Train ``module`` on ``loss_fn`` and ``data`` with ``strategy``.

    Parameters
    ----------
    module : torch.nn.Module
        The model; training starts from its present parameters. It is not modified.
    loss_fn : callable or daskie.train.module.ModelLoss
        ``loss_fn(module(inputs), *targets)`` (torch convention), or a ``ModelLoss`` called
        as ``fn(model, *data)`` for losses that need the model (physics-informed).
    data : tensor or tuple of tensors
        ``(inputs, *targets)`` with a common leading row axis (minibatches pick rows).
    strategy : Strategy
        An iteration strategy (``ParaFlow``, ``ParaFlowS``, ``GradientDescent``, ``APTS``,
        ``SAPTS``).
    client : None, "sync" or distributed.Client
        Where the strategy's tasks run, with the meaning it has at every front door
        (:mod:`daskie.session`): ``None`` starts daskie's embedded LocalCluster for the call,
        ``"sync"`` trains in this process, a ``Client`` on its cluster (the same numbers for
        the same seed in all three).
    seed : int
        Seed of the minibatch streams.
    target_loss : float
        Stop once the loss falls below it.
    threads : int or None
        torch threads inside the computation.
    on_window : callable, optional
        ``on_window(w, outputs)`` at every checkpoint window.
    workers : int
        Workers of the embedded LocalCluster (``client=None``).

    Returns
    -------
    daskie.session.Trained
        ``model``: a trained copy of ``module``; ``history``: one flat record per iteration
        (iteration, loss, grad_calls, wall_s, slice, ...); ``summary``: ``strategy``,
        ``seed``, ``loss``, ``stopped_by``, ``steps``, ``wall_s``. It unpacks as
        ``model, history = daskie.fit(...)``.
    """
    from daskie.runtime.iterations import train
    from daskie.session import Trained, check_callback, check_client, open_session
    from daskie.strategies import IterationStrategy, Strategy
    from daskie.train.module import ModuleObjective

    check_callback("on_window", on_window)

    if not isinstance(strategy, Strategy):
        raise SpecError(f"strategy must be a daskie Strategy (e.g. ParaFlowS()), got {strategy!r}")
    if not isinstance(strategy, IterationStrategy):
        raise SpecError(f"strategy {type(strategy).__name__} cannot train a torch module: use an "
                        "iteration strategy (ParaFlow, ParaFlowS, GradientDescent, APTS, SAPTS)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"seed must be an int, got {seed!r}")
    if not (isinstance(target_loss, (int, float)) and target_loss >= 0):
        raise SpecError(f"target_loss must be a number >= 0, got {target_loss!r}")
    check_client(client)
    objective = ModuleObjective(module, loss_fn, data)
    user = None if on_window is None else (lambda w, outputs, summary: on_window(w, outputs))
    with open_session(on_window=user) as session:
        with session.connect(client, workers=workers) as executor:
            final = train(strategy, objective, executor, seed=seed, target_loss=float(target_loss),
                          threads=threads, on_window=session.window_done,
                          theta0=objective.current_params())
    state = final[0].state
    summary = {"strategy": strategy.label, "seed": seed, "loss": float(state.loss),
               "stopped_by": state.done or "budget", "steps": int(state.epoch),
               "wall_s": session.elapsed()}
    return Trained(objective.load(state.theta), session.history, summary)
