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
        threads: int | None = 1, on_window=None):
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
    client : distributed.Client, optional
        Run the strategy's tasks on this client; ``None`` trains in this process (the same
        numbers for the same seed).
    seed : int
        Seed of the minibatch streams.
    target_loss : float
        Stop once the loss falls below it.
    threads : int or None
        torch threads inside the computation.
    on_window : callable, optional
        ``on_window(w, outputs)`` at every checkpoint window.

    Returns
    -------
    (torch.nn.Module, list of dict)
        A trained copy of ``module`` and the history: one flat record per iteration
        (iteration, loss, grad_calls, wall_s, slice, ...).
    """
    from daskie.runtime.executor import as_executor
    from daskie.runtime.iterations import train
    from daskie.strategies import IterationStrategy, Strategy
    from daskie.train.module import ModuleObjective

    if not isinstance(strategy, Strategy):
        raise SpecError(f"strategy must be a daskie Strategy (e.g. ParaFlowS()), got {strategy!r}")
    if not isinstance(strategy, IterationStrategy):
        raise SpecError(f"strategy {type(strategy).__name__} cannot train a torch module: use an "
                        "iteration strategy (ParaFlow, ParaFlowS, GradientDescent, APTS, SAPTS)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"seed must be an int, got {seed!r}")
    if not (isinstance(target_loss, (int, float)) and target_loss >= 0):
        raise SpecError(f"target_loss must be a number >= 0, got {target_loss!r}")
    objective = ModuleObjective(module, loss_fn, data)
    history = []

    def window_done(w, outputs):
        for out in outputs:
            history.extend(out.records)
        if on_window is not None:
            on_window(w, outputs)

    # None means "in this process" here (no cluster is started for a module)
    executor = as_executor("sync" if client is None else client)
    final = train(strategy, objective, executor, seed=seed, target_loss=float(target_loss),
                  threads=threads, on_window=window_done, theta0=objective.current_params())
    return objective.load(final[0].state.theta), history
