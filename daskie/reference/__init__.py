"""Classical reference solvers, used to check the neural solutions: Nystrom on tensor
Gauss-Legendre nodes, and quasi-Monte Carlo and sparse-grid (Smolyak) Nystrom for high
dimension."""

from daskie.reference.nystrom import NewtonDidNotConverge, Nystrom, ReferenceSolution
from daskie.reference.qmc import QMCNystrom, QMCSolution
from daskie.reference.sparse import SparseNystrom, SparseSolution

__all__ = ["Nystrom", "ReferenceSolution", "NewtonDidNotConverge", "QMCNystrom", "QMCSolution",
           "SparseNystrom", "SparseSolution"]
