"""Formulations: a problem becomes sub-models, point sets and residuals."""

from daskie.formulations.base import Discretization, Evaluation, Formulation, SubModel
from daskie.formulations.order_reduction import OrderReduction
from daskie.formulations.quadrature import QuadratureCollocation

__all__ = ["Discretization", "Evaluation", "Formulation", "OrderReduction",
           "QuadratureCollocation", "SubModel"]
