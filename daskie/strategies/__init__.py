"""Strategies: how sub-models and windows are spread over the cluster."""

from daskie.strategies.base import CEPTF, Monolithic, Strategy

__all__ = ["CEPTF", "Monolithic", "Strategy"]
