"""What every strategy spec shares: the base class, the collective options, the placements.

A strategy is a *spec*: a frozen dataclass with validated, defaulted fields that says what is
split and how -- never how it runs. Each names its runner in :mod:`daskie.runtime` (the
window graph, the SPMD group runner, or the iteration runner) and hands itself to it in
:meth:`Strategy.execute`; a strategy that needs a Plan makes it in :meth:`Strategy.plan`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

from daskie.errors import SpecError, check_int

__all__ = ["Strategy", "Comm", "Balanced", "Whole", "check_bool", "check_comm"]


def check_bool(field: str, value) -> None:
    """Raise :class:`SpecError` naming ``field`` unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise SpecError(f"{field} must be True or False, got {value!r}")


class Strategy(abc.ABC):
    """Base class of the strategy specs.

    Subclasses are frozen dataclasses; they define :meth:`groups` and :meth:`execute`, and
    may define :meth:`plan`.
    """

    @property
    def label(self) -> str:
        """Short name for records and stores."""
        return type(self).__name__.lower()

    def plan(self, disc, workers: int, gpus: int = 0):
        """The Plan this strategy trains with on ``workers`` workers (None: no plan)."""
        return None

    @abc.abstractmethod
    def groups(self, disc, plan) -> tuple[tuple[str, ...], ...]:
        """Sub-models trained together, one tuple per task of a window."""

    def polish_steps(self) -> int:
        """Joint steps of all sub-models after the windows (0: none)."""
        return 0

    def progress_total(self, optimizer) -> int:
        """Optimizer steps the run takes at most (for progress bars)."""
        return optimizer.steps + self.polish_steps()

    def check_optimizer(self, optimizer) -> None:
        """Raise :class:`~daskie.errors.SpecError`, naming what does not fit, when this
        strategy cannot train with ``optimizer`` (called when a front door resolves its
        arguments, before anything runs); every optimizer fits by default."""

    #: True when one seed's whole training is one task on one worker, so that several
    #: seeds can train as independent tasks (restarts).
    seeds_as_tasks: bool = False

    @abc.abstractmethod
    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        """Train on ``executor``; return the final :class:`~daskie.runtime.WindowOutput` list.

        ``resume`` is ``(k, outputs)`` of the last completed window; ``start`` the flat
        initial parameters when not resuming (default: the objective's seeded
        ``init_params``); ``on_window(k, outputs)`` is called after each window, with outputs
        whose ``params`` together cover every sub-model.
        """


@dataclass(frozen=True)
class Comm:
    """How the ranks of a group synchronise (every strategy that syncs takes one).

    Parameters
    ----------
    method : str
        All-reduce method (:data:`daskie.collectives.METHODS`: ``"gloo"``, ``"ring"``,
        ``"ps"``, ``"tree"``).
    compress : str or None
        ``"fp16"``: half-precision all-reduce payloads with error feedback.
    timeout : float
        Seconds a collective may wait for a peer before the window fails (default: the
        setting ``daskie.collective-timeout``, 120).
    retries : int
        Times a failed window is run again (fresh group, same input) before giving up
        (default: the setting ``daskie.retries``, 2).
    """

    method: str = "gloo"
    compress: str | None = None
    timeout: float = field(default_factory=lambda: _setting("collective-timeout"))
    retries: int = field(default_factory=lambda: _setting("retries"))

    def __post_init__(self):
        from daskie.collectives import METHODS

        t = self.timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise SpecError(f"Comm.timeout must be a positive number of seconds, got {t!r}")
        check_int("Comm.retries", self.retries, 0)
        if self.method not in METHODS:
            raise SpecError(f"Comm.method must be one of {METHODS}, got {self.method!r}")
        if self.compress not in (None, "fp16"):
            raise SpecError(f"Comm.compress must be None or 'fp16', got {self.compress!r}")


def _setting(key):
    from daskie import config

    return config.get(key)


def check_comm(owner: str, comm) -> None:
    """Raise :class:`SpecError` unless ``comm`` is a :class:`Comm`."""
    if not isinstance(comm, Comm):
        raise SpecError(f"{owner}.comm must be a daskie Comm(method, compress, timeout, retries), "
                        f"got {comm!r}")


@dataclass(frozen=True)
class Balanced:
    """CEPTF placement: evaluation rows dealt to the workers by estimated work
    (:func:`daskie.plan.balanced_pieces`). The Plan's groups keep their sub-models together
    and the sub-model at each boundary is split over two workers, so no worker waits for the
    heaviest one. Assumes workers of equal speed: ranks with different resource tags (GPU and
    CPU) keep whole sub-models. Levenberg-Marquardt's normal equations split by rows."""


@dataclass(frozen=True)
class Whole:
    """CEPTF placement: each worker evaluates whole sub-models (its Plan group's).

    Parameters
    ----------
    rebalance : bool
        After every window, re-pack the Plan's groups from each worker's measured compute
        time per step (:func:`daskie.plan.planner.rebalance`); the numbers do not change,
        only which worker evaluates which sub-model.
    lm_split : str
        How Levenberg-Marquardt's normal equations are formed: ``"rows"`` (each worker takes
        every n-th row of every block for all sub-models and one all-reduce sums ``J^T J``)
        or ``"columns"`` (each worker the Jacobian columns of its own sub-models,
        all-gathered, then its rows of ``J^T J``). The row split moves P x P numbers where the
        column split moves N x P (``benchmarks/speedup.py --optimizer lm``).
    """

    rebalance: bool = False
    lm_split: str = "rows"

    def __post_init__(self):
        check_bool("Whole.rebalance", self.rebalance)
        if self.lm_split not in ("rows", "columns"):
            raise SpecError(f"Whole.lm_split must be 'rows' or 'columns', got {self.lm_split!r}")
