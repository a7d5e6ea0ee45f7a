"""The planner (seed 000, Algorithm 1): which sub-models train together, and on what.

``make_plan(disc, workers=..., gpus=...)`` turns a :class:`~daskie.formulations.base.Discretization`
and a description of the cluster into a :class:`Plan` — plain data, JSON round-trippable,
printable with :meth:`Plan.describe`, and made without any cluster.
"""

from daskie.plan.cost import balanced_pieces, evaluation_cost
from daskie.plan.plan import Placement, Plan
from daskie.plan.planner import make_plan, rebalance, term_weight

__all__ = ["Placement", "Plan", "balanced_pieces", "evaluation_cost", "make_plan", "rebalance",
           "term_weight"]
