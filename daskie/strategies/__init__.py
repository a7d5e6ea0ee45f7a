"""Strategy specs: what is split and how (frozen, validated); :mod:`daskie.runtime` runs them.

| spec | runner |
| --- | --- |
| :class:`Monolithic` | window graph |
| :class:`BlockCoordinate` | window graph |
| :class:`CEPTF` | SPMD groups |
| :class:`DataParallel` | SPMD groups |
| :class:`daskie.operator.OperatorDataParallel` (lives with its rank work in :mod:`daskie.operator`) | SPMD groups |
| :class:`ModelParallel`, :class:`Pipeline`, :class:`Hybrid` | SPMD groups (layer stages) |
| :class:`ParaFlow`, :class:`ParaFlowS`, :class:`GradientDescent` | iterations |
| :class:`APTS`, :class:`SAPTS` | iterations |
"""

from daskie.strategies.apts import APTS, SAPTS
from daskie.strategies.base import Balanced, Comm, Strategy, Whole
from daskie.strategies.block_coordinate import BlockCoordinate
from daskie.strategies.ceptf import CEPTF
from daskie.strategies.data_parallel import DataParallel
from daskie.strategies.model_parallel import Hybrid, ModelParallel, Pipeline
from daskie.strategies.monolithic import Monolithic
from daskie.strategies.paraflow import GradientDescent, IterationStrategy, ParaFlow, ParaFlowS

__all__ = ["APTS", "Balanced", "BlockCoordinate", "CEPTF", "Comm", "DataParallel",
           "GradientDescent", "IterationStrategy", "Monolithic", "ParaFlow",
           "ParaFlowS", "SAPTS",
           "Strategy", "Whole",
           "Hybrid", "ModelParallel", "Pipeline"]
