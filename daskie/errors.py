"""Exceptions raised by daskie. Every message names the field or argument that is wrong."""

from numbers import Integral

__all__ = ["PlanWarning", "DaskieError", "SpecError", "TrainingDiverged", "StoreExistsError", "StoreMissingError",
           "PlanError", "CheckpointError", "StorePathError", "UnsafeStoreError", "StoreLockedError",
           "CheckpointWarning", "ToleranceWarning", "DiscrepancyWarning", "check_int"]


class DaskieError(Exception):
    """Base class of daskie's own errors."""


class SpecError(DaskieError, ValueError):
    """An invalid problem, formulation, strategy or option; the message names the field."""


class PlanError(DaskieError, ValueError):
    """A plan that cannot run on the cluster at hand (e.g. no worker has the resource)."""


class TrainingDiverged(DaskieError, FloatingPointError):
    """The loss became NaN or infinite; the last good state is kept."""


class ToleranceWarning(UserWarning):
    """The answer's error estimate exceeds the tolerance the solve asked for, or no estimate
    could be made; the one-line message gives the estimate, the tolerance, what stopped the
    training and what to try."""


class DiscrepancyWarning(ToleranceWarning):
    """The neural answer differs from the classical reference by more than a tolerance (or
    lies on another solution of a nonlinear equation): :func:`daskie.assess.assess` with
    ``warn=True``; ``solve`` reports through :class:`ToleranceWarning`."""


class PlanWarning(UserWarning):
    """The Plan was adapted to the cluster at hand (e.g. GPU groups placed on CPU workers)."""


class StoreExistsError(DaskieError, FileExistsError):
    """A run store exists already and neither ``overwrite`` nor ``resume`` was asked for."""


class StoreMissingError(DaskieError, FileNotFoundError):
    """``resume`` was asked for, but there is no run store at the path."""


class CheckpointError(DaskieError, ValueError):
    """A stored checkpoint that cannot be read: another schema version, or damaged data."""


class StoreLockedError(DaskieError, RuntimeError):
    """Another process is writing the run store (one writer per store); the message names the
    store and the writer's pid."""


class CheckpointWarning(UserWarning):
    """A checkpoint that cannot be read was skipped: the run resumes from an older one; the
    message names the unreadable checkpoint and the skipped windows."""


class UnsafeStoreError(DaskieError, ValueError):
    """A store holding arrays that only pickle (or another code-running codec) could read;
    daskie refuses to open them."""


class StorePathError(SpecError):
    """A store (or output file) path that cannot be written: under a file, no permission, a
    read-only or virtual file system; the message names the path and the reason."""


def check_int(field: str, value, low: int = 1, *, allow_none: bool = False, alternative: str = ""):
    """Raise :class:`SpecError` naming ``field`` unless ``value`` is an int >= ``low``.

    Booleans are not ints here; ``allow_none`` also accepts None; ``alternative`` names another
    accepted value in the message (e.g. ``'"auto"'``) — the caller handles that value itself.
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        kind = "a positive int" if low == 1 else f"an int >= {low}"
        extra = "".join(f" or {a}" for a in (["None"] if allow_none else []) + ([alternative] if alternative else []))
        raise SpecError(f"{field} must be {kind}{extra}, got {value!r}")
