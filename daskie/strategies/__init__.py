"""Strategies: how sub-models and windows are spread over the cluster."""

from daskie.strategies.base import CEPTF, Monolithic, Strategy
from daskie.strategies.paraflow import GradientDescent, ParaFlow, ParaFlowS

__all__ = ["CEPTF", "GradientDescent", "Monolithic", "ParaFlow", "ParaFlowS", "Strategy"]
