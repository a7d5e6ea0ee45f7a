"""What optimizers and strategies need of an objective, as declared protocols.

Optional capabilities are protocols of their own, checked with ``isinstance`` where they are
used: :class:`HasGradient` (an objective that computes its own loss and gradient, e.g. summed
over data-parallel shards), :class:`HasNormalEquations` (the same for Gauss-Newton's normal
equations), :class:`HasRows` (it counts its data rows), :class:`Shardable` (it can cut itself into data shards) and :class:`Placed` (it
computes on a device and dtype of its own; see :func:`placement`).

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
           "SolutionObjective", "HasGradient", "HasNormalEquations", "HasRows", "Shardable", "Placed",
           "HasWindowStats",
           "placement"]


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


@runtime_checkable
class HasGradient(Protocol):
    """An objective that computes ``(loss, gradient)`` itself (a data-parallel objective sums
    them over its shards); others are differentiated through ``loss`` by autograd."""

    def value_and_grad(self, theta): ...


@runtime_checkable
class HasNormalEquations(Protocol):
    """A least-squares objective that computes Gauss-Newton's ``(loss, J^T J, J^T r)`` itself
    (summed over shards, or without forming the whole Jacobian)."""

    def normal_equations(self, theta): ...


@runtime_checkable
class HasRows(Protocol):
    """An objective that says how many data rows it has (the unit of a gradient budget)."""

    n_data: int


@runtime_checkable
class Shardable(Protocol):
    """An objective that cuts itself into data shard ``k`` of ``n`` (an objective of its own)."""

    def shard(self, k: int, n: int): ...


@runtime_checkable
class HasWindowStats(Protocol):
    """A rank's objective that reports what a training window cost it beyond the steps (layer
    stages: the pipeline bubble and the point-to-point traffic), added to the window's last
    record."""

    def window_stats(self) -> dict: ...


@runtime_checkable
class Placed(Protocol):
    """An objective that computes on a device and dtype of its own."""

    device: object
    dtype: object


def placement(objective):
    """``(device, dtype)`` ``objective`` computes on: its own (:class:`Placed`), else the CPU
    in float64 (a user objective written for the CPU)."""
    import torch

    if isinstance(objective, Placed):
        return objective.device, objective.dtype
    return torch.device("cpu"), torch.float64
