"""``BlockCoordinate``: the Plan's groups train in turn with the others frozen (Jacobi or
Gauss-Seidel windows), for weakly coupled problems."""

from __future__ import annotations

from dataclasses import dataclass

from daskie.errors import SpecError, check_int
from daskie.strategies.base import Strategy

__all__ = ["BlockCoordinate"]


@dataclass(frozen=True)
class BlockCoordinate(Strategy):
    """Block-coordinate windows over the Plan's groups (the first version of CEPTF).

    Each window, every group trains on the joint loss with the other groups frozen at their
    latest values -- in parallel (``"jacobi"``: every group reads the previous window) or one
    after another (``"gauss-seidel"``: a group reads the groups before it in this window);
    then an optional joint ``polish``. These converge much worse per step than joint
    training (:class:`~daskie.strategies.CEPTF`) on coupled sub-models (E1: MSE 4e-2 against
    8e-9 after 250 LM steps, ``benchmarks/results/overhead.json``).

    Runner: the window graph (:mod:`daskie.runtime.window_graph`), one task per group and
    window, resource tags from the Plan.

    Parameters
    ----------
    window : int
        Optimizer steps per window and group.
    order : str
        ``"jacobi"`` or ``"gauss-seidel"``.
    polish : int
        Joint steps of all sub-models after the windows.
    """

    window: int = 50
    order: str = "jacobi"
    polish: int = 0


    def __post_init__(self):
        check_int("BlockCoordinate.window", self.window)
        if self.order not in ("jacobi", "gauss-seidel"):
            raise SpecError(f"BlockCoordinate.order must be 'jacobi' or 'gauss-seidel', got "
                            f"{self.order!r} (joint training is CEPTF())")
        check_int("BlockCoordinate.polish", self.polish, 0)

    @property
    def label(self) -> str:
        """``"block-jacobi"`` or ``"block-gauss-seidel"``."""
        return f"block-{self.order}"

    def plan(self, disc, workers, gpus=0):
        """The CEPTF planner's Plan (:func:`daskie.plan.make_plan`) on ``workers`` workers."""
        from daskie.plan import make_plan

        return make_plan(disc, workers=max(1, workers), gpus=gpus)

    def groups(self, disc, plan):
        """The Plan's groups of sub-models, trained in alternation."""
        return tuple(p.submodels for p in plan.groups)

    def inputs(self, group, groups, plan) -> tuple[int, ...]:
        """Every other group: the residual map reads all evaluations, so a window needs the
        latest parameters of every sub-model (not only those sharing a block with it)."""
        return tuple(h for h in range(len(groups)) if h != group)

    def sequential(self) -> bool:
        """True when the groups of one window run one after another (Gauss-Seidel)."""
        return self.order == "gauss-seidel"

    def polish_steps(self) -> int:
        """``polish``: joint steps of every sub-model after the windows."""
        return self.polish

    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        """Train on the window graph (:mod:`daskie.runtime.window_graph`), one task per group
        and window."""
        from daskie.runtime import window_graph

        return window_graph.execute(self, executor, ctx, groups, plan, resume=resume,
                                    on_window=on_window, start=start)
