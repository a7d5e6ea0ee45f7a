"""Classical reference solvers, used to check the neural solutions."""

from daskie.reference.nystrom import NewtonDidNotConverge, Nystrom, ReferenceSolution

__all__ = ["Nystrom", "ReferenceSolution", "NewtonDidNotConverge"]
