"""What optimizers and strategies need of an objective, as declared protocols.

Every daskie objective (:class:`~daskie.train.objective.Objective`, the split objectives of
:mod:`daskie.train.collective`, :class:`~daskie.train.module.ModuleObjective`) is a
:class:`LossObjective`; least-squares ones are also :class:`LeastSquaresObjective` (Gauss-Newton
and Levenberg-Marquardt use their Jacobians); those with independent data rows are
:class:`MiniBatchObjective` (minibatch strategies). An :class:`ObjectiveSource` is what tasks
rebuild an objective from on a worker (:class:`~daskie.runtime.context.RunContext`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["LossObjective", "LeastSquaresObjective", "MiniBatchObjective", "ObjectiveSource",
           "SolutionObjective"]


@runtime_checkable
class LossObjective(Protocol):
    """A scalar loss of one flat parameter vector."""

    layout: object

    def init_params(self, seed: int): ...

    def loss(self, theta): ...


@runtime_checkable
class LeastSquaresObjective(LossObjective, Protocol):
    """A loss that is a sum of squared residuals, with their Jacobian ``(r, J)``."""

    def residuals(self, theta): ...

    def jacobian(self, theta): ...


@runtime_checkable
class MiniBatchObjective(LossObjective, Protocol):
    """A loss over independent data rows: any subset of rows is a loss of its own."""

    n_data: int

    def batch_loss(self, theta, index): ...


@runtime_checkable
class SolutionObjective(LossObjective, Protocol):
    """A loss whose parameters give the whole solution ``mu`` at any points (the integral
    equation's :class:`~daskie.train.objective.Objective`; not a rank's share of a split one):
    its answer can be checked against a tolerance while it trains."""

    def solution(self, theta, points): ...


@runtime_checkable
class ObjectiveSource(Protocol):
    """What a task rebuilds the objective (or data shard ``(k, n)`` of it) from."""

    def build(self, shard=None): ...
