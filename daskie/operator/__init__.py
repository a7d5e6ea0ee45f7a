"""Operator learning (seed 001): families of integral equations learned once.

* :func:`generate_dataset` -- a family's instances solved by the Nystrom reference as tasks,
  streamed into one zarr data set (resumable);
* :class:`OperatorLoss` -- the DeepONet objective: data loss and/or the physics-informed
  residual of the integral equation (:mod:`daskie.operator.formulation`);
* :func:`fit_operator` -- training split over the workers by instances
  (:class:`OperatorDataParallel`), query points (:class:`OperatorTrunkParallel`) or both
  (:class:`OperatorBranchTrunkParallel`), the planner choosing when none is given, returning
  a trained :class:`Operator` and its history;
* :func:`learn_operator` -- both at once on one cluster, the operator measured on held-out
  instances (:func:`~daskie.operator.evaluation.evaluate`).
"""

from daskie.operator.api import (default_net, default_optimizer, fit_operator, generate_dataset,
                                 learn_operator)
from daskie.operator.formulation import OperatorLoss, TrainingSet
from daskie.operator.model import Operator
from daskie.operator.strategy import (OperatorBranchTrunkParallel, OperatorDataParallel,
                                      OperatorTrunkParallel)

__all__ = ["Operator", "OperatorBranchTrunkParallel", "OperatorDataParallel", "OperatorLoss",
           "OperatorTrunkParallel", "TrainingSet", "default_net", "default_optimizer",
           "fit_operator",
           "generate_dataset", "learn_operator"]
