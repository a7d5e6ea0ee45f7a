"""Exceptions raised by daskie. Every message names the field or argument that is wrong."""

__all__ = ["DaskieError", "SpecError", "TrainingDiverged", "StoreExistsError", "StoreMissingError",
           "PlanError"]


class DaskieError(Exception):
    """Base class of daskie's own errors."""


class SpecError(DaskieError, ValueError):
    """An invalid problem, formulation, strategy or option; the message names the field."""


class PlanError(DaskieError, ValueError):
    """A plan that cannot run on the cluster at hand (e.g. no worker has the resource)."""


class TrainingDiverged(DaskieError, FloatingPointError):
    """The loss became NaN or infinite; the last good state is kept."""


class StoreExistsError(DaskieError, FileExistsError):
    """A run store exists already and neither ``overwrite`` nor ``resume`` was asked for."""


class StoreMissingError(DaskieError, FileNotFoundError):
    """``resume`` was asked for, but there is no run store at the path."""
