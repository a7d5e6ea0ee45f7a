"""``CEPTF``: the Plan's groups of sub-models train at the same time on their own workers,
jointly (seed 000 Algorithm 2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from daskie.errors import SpecError, check_int
from daskie.strategies.base import Balanced, Comm, Strategy, Whole, check_comm

__all__ = ["CEPTF"]


@dataclass(frozen=True)
class CEPTF(Strategy):
    """CEPTF sub-model parallelism (seed 000): the Plan's groups train on their own workers.

    Every window is one group of tasks running at the same time, one per Plan group (times
    ``shards``), each evaluating only its own sub-models; every step they exchange the
    evaluation values (all-gather) and the gradient slices (all-reduce) through
    :mod:`daskie.collectives`, so the training is the monolithic one (equal up to rounding
    for the same seed) with each worker doing its own networks' work. Levenberg-Marquardt
    steps sum each rank's rows of ``J^T J`` (or gather Jacobian columns, ``Whole(lm_split=
    "columns")``).

    Runner: the SPMD group runner (:mod:`daskie.runtime.spmd`). For block-coordinate windows
    (groups in turn, the others frozen) see :class:`~daskie.strategies.BlockCoordinate`.

    Parameters
    ----------
    window : int or None
        Optimizer steps per window (seed 000 Algorithm 2's synchronisation interval): a
        checkpoint, and the unit run again after a failure.
    shards : int
        Every Plan group is spread over ``shards`` workers, each evaluating every
        ``shards``-th row of the group's evaluations; the Plan is made for
        ``workers // shards`` groups.
    placement : Balanced or Whole
        :class:`~daskie.strategies.Balanced` (default): evaluation rows dealt to the workers
        by estimated work; :class:`~daskie.strategies.Whole`: whole sub-models per worker
        (optionally re-packed between windows, or LM by Jacobian columns).
    comm : Comm
        Collective options (method, compression, timeout, retries).
    """

    window: int | None = 50
    shards: int = 1
    placement: Balanced | Whole = Balanced()
    comm: Comm = field(default_factory=Comm)


    def __post_init__(self):
        check_int("CEPTF.window", self.window, allow_none=True)
        check_int("CEPTF.shards", self.shards)
        if not isinstance(self.placement, (Balanced, Whole)):
            raise SpecError(f"CEPTF.placement must be Balanced() or Whole(rebalance, lm_split), "
                            f"got {self.placement!r}")
        if self.shards > 1 and isinstance(self.placement, Whole) and self.placement.rebalance:
            raise SpecError("CEPTF.placement=Whole(rebalance=True) re-packs whole groups: it "
                            "needs shards=1")
        check_comm("CEPTF", self.comm)

    @property
    def lm_split(self) -> str:
        """How Levenberg-Marquardt's normal equations are split: ``"rows"`` or ``"columns"``."""
        return self.placement.lm_split if isinstance(self.placement, Whole) else "rows"

    def plan(self, disc, workers, gpus=0):
        """Algorithm 1's Plan for ``workers // shards`` groups; with balanced placement the
        Plan also carries each rank's row pieces (all ranks one resource kind)."""
        from daskie.plan import make_plan

        plan = make_plan(disc, workers=max(1, workers // self.shards), gpus=gpus)
        if isinstance(self.placement, Balanced) and len({g.resource for g in plan.groups}) == 1:
            plan = plan.with_pieces(disc, len(plan.groups) * self.shards)
        return plan

    def groups(self, disc, plan):
        """The Plan's groups of sub-models, one rank's share each."""
        return tuple(p.submodels for p in plan.groups)

    def resources(self, plan) -> list:
        """The resource tag of every rank."""
        return [g.resource for g in plan.groups for _ in range(self.shards)]

    def check_optimizer(self, optimizer):
        """Levenberg-Marquardt with ``shards > 1`` needs ``lm_split="rows"``."""
        from daskie.train.optimizers import LevenbergMarquardt

        if self.shards > 1 and self.lm_split == "columns" and \
                any(isinstance(s, LevenbergMarquardt) for s in optimizer.stages()):
            raise SpecError("CEPTF.shards > 1 with Levenberg-Marquardt needs lm_split='rows' "
                            "(the column split gathers whole Jacobian columns per group)")

    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        """Train the groups jointly on the SPMD runner (:mod:`daskie.runtime.spmd`): one
        pinned task per rank and window, the exact joint gradient by one all-reduce."""
        from daskie.runtime.spmd import ModelPieces, run_spmd_windows

        # Whole sub-models and an element-wise optimizer: no gradient exchange per step
        local = (not plan.pieces and self.shards == 1
                 and all(s.elementwise for s in ctx.optimizer.stages()))
        work = ModelPieces(tuple(groups), self.shards, self.lm_split,
                           list(plan.pieces) if plan.pieces else None, local_grads=local)
        replan = None
        if isinstance(self.placement, Whole) and self.placement.rebalance:
            replan = _Repacker(self, plan, work)
        return run_spmd_windows(executor, ctx, work, len(groups) * self.shards, self.comm,
                                window=self.window, resume=resume, on_window=on_window,
                                resources=self.resources(plan), replan=replan, start=start)


class _Repacker:
    """``Whole(rebalance=True)``: after each window, re-pack the Plan's groups by each rank's
    measured compute time per step (:func:`daskie.plan.planner.rebalance`)."""

    def __init__(self, spec, plan, work):
        self.spec, self.plan, self.work = spec, plan, work

    def __call__(self, per_rank):
        from dataclasses import replace

        from daskie.plan.planner import rebalance

        shards = self.spec.shards
        times = {}
        for r, recs in enumerate(per_rank):
            if recs and "window_s" in recs[-1]:
                compute = recs[-1]["window_s"] - recs[-1].get("sync_s", 0.0)
                g = r // shards
                times[g] = times.get(g, 0.0) + max(compute, 1e-9) / len(recs) / shards
        if len(times) == len(self.plan.groups):
            self.plan = rebalance(self.plan, times)
        owners = tuple(g.submodels for g in self.plan.groups)
        return replace(self.work, owners=owners), self.spec.resources(self.plan)
