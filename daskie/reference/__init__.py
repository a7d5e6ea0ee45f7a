"""Classical reference solvers, used to check the neural solutions: Nystrom on tensor
Gauss-Legendre nodes, and quasi-Monte Carlo Nystrom for high dimension."""

from daskie.reference.nystrom import NewtonDidNotConverge, Nystrom, ReferenceSolution
from daskie.reference.qmc import QMCNystrom, QMCSolution

__all__ = ["Nystrom", "ReferenceSolution", "NewtonDidNotConverge", "QMCNystrom", "QMCSolution"]
