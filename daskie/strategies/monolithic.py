"""``Monolithic``: everything in one task, the baseline every speed-up is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from daskie.errors import check_int
from daskie.strategies.base import Strategy

__all__ = ["Monolithic"]


@dataclass(frozen=True)
class Monolithic(Strategy):
    """Everything in one task: the baseline every speed-up is measured against.

    Runner: the window graph (:mod:`daskie.runtime.window_graph`), one group.

    Parameters
    ----------
    window : int or None
        Optimizer steps per task. ``None`` (default): the whole training is one task; an
        int splits it into a chain of tasks, each a checkpoint to resume from.
    """

    window: int | None = None

    seeds_as_tasks = True

    def __post_init__(self):
        check_int("Monolithic.window", self.window, allow_none=True)

    def groups(self, disc, plan):
        """Every sub-model in one group: one task trains them all."""
        return (tuple(disc.submodels),)

    def inputs(self, group, groups, plan) -> tuple[int, ...]:
        """Groups whose previous-window output window (k, group) reads (besides its own)."""
        return ()

    def sequential(self) -> bool:
        """True when the groups of one window run one after another."""
        return False

    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        """Train on the window graph (:mod:`daskie.runtime.window_graph`)."""
        from daskie.runtime import window_graph

        return window_graph.execute(self, executor, ctx, groups, plan, resume=resume,
                                    on_window=on_window, start=start)
