"""Operator learning (seed 001): families of integral equations learned once.

* :func:`generate_dataset` -- a family's instances solved by the Nystrom reference as tasks,
  streamed into one zarr data set (resumable);
* :class:`OperatorLoss` -- the DeepONet objective: data loss and/or the physics-informed
  residual of the integral equation (:mod:`daskie.operator.formulation`);
* :func:`fit_operator` -- data-parallel training (:class:`OperatorDataParallel`, next to its rank work)
  returning a trained :class:`Operator` and its history;
* :func:`learn_operator` -- both at once on one cluster, the operator measured on held-out
  instances (:func:`~daskie.operator.evaluation.evaluate`).
"""

from daskie.operator.api import (default_net, default_optimizer, fit_operator, generate_dataset,
                                 learn_operator)
from daskie.operator.formulation import OperatorLoss, TrainingSet
from daskie.operator.model import Operator
from daskie.operator.strategy import OperatorDataParallel

__all__ = ["Operator", "OperatorDataParallel", "OperatorLoss", "TrainingSet", "default_net", "default_optimizer",
           "fit_operator",
           "generate_dataset", "learn_operator"]
