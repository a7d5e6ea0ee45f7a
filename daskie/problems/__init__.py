"""Integral-equation specifications and the catalog of named problems."""

from daskie.problems.domain import Domain
from daskie.problems.spec import VOLTERRA, IntegralTerm, Noise, Nonlinearity, Problem
from daskie.problems import catalog

__all__ = ["Domain", "IntegralTerm", "Noise", "Nonlinearity", "Problem", "VOLTERRA", "catalog"]
