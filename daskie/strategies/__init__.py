"""Strategies: how sub-models and windows are spread over the cluster."""

from daskie.strategies.apts import APTS, SAPTS
from daskie.strategies.base import CEPTF, Monolithic, Strategy
from daskie.strategies.paraflow import GradientDescent, ParaFlow, ParaFlowS
from daskie.strategies.spmd import DataParallel

__all__ = ["APTS", "CEPTF", "DataParallel", "SAPTS", "GradientDescent", "Monolithic", "ParaFlow", "ParaFlowS", "Strategy"]
