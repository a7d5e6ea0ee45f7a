"""``ModelParallel``, ``Pipeline``, ``Hybrid``: the layers of the networks split over workers
(seed 000's model, pipeline and hybrid-parallel baselines, section 5.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from daskie.errors import SpecError, check_int
from daskie.strategies.base import Comm, Strategy, check_comm

__all__ = ["ModelParallel", "Pipeline", "Hybrid"]


def _first_order_only(owner: str, optimizer) -> None:
    """Refuse optimizers that need per-point Jacobians (not built for layer stages)."""
    from daskie.train.optimizers import LBFGS, Adam

    bad = [s.label for s in optimizer.stages() if not isinstance(s, (Adam, LBFGS))]
    if bad:
        raise SpecError(f"{owner} trains with Adam or L-BFGS (first-order, one gradient per "
                        f"step through the stages); got {', '.join(bad)}")


class _Staged(Strategy):
    """What the layer-stage strategies share: the runner call (fields in the subclasses)."""

    def check_optimizer(self, optimizer):
        """Adam or L-BFGS only: the layer stages carry one gradient per step, no Jacobian."""
        _first_order_only(type(self).__name__, optimizer)


    def groups(self, disc, plan):
        """One group of every sub-model (each rank runs its layers of all of them); a
        network with fewer layers than stages is a named error here, before anything runs."""
        from daskie.runtime.stages import stage_splits

        if self.stages is not None:
            stage_splits(disc, self.stages)
        return (tuple(disc.submodels),)

    def _layout(self, executor) -> tuple[int, int, int]:
        """(stages, replicas, micro-batches) on ``executor``."""
        raise NotImplementedError

    def ranks(self, executor) -> int:
        """Ranks of a window's group (one per worker)."""
        stages, replicas, _ = self._layout(executor)
        return stages * replicas

    def execute(self, executor, ctx, groups, plan, *, resume=None, on_window=None, start=None):
        from daskie.runtime.spmd import LayerStages, run_spmd_windows

        stages, replicas, micro = self._layout(executor)
        work = LayerStages(stages=stages, replicas=replicas, micro_batches=micro)
        return run_spmd_windows(executor, ctx, work, stages * replicas, self.comm,
                                window=self.window, resume=resume, on_window=on_window,
                                start=start)


def _default_stages(stages, executor) -> int:
    if stages is not None:
        return stages
    return executor.default_ranks()


@dataclass(frozen=True)
class ModelParallel(_Staged):
    """Model parallelism: the layers of every network split over workers.

    Rank s holds a contiguous range of layers of every sub-model's network (about equal
    multiply-adds per stage, :class:`~daskie.nn.stages.StageSplit`). Every step the
    activations of all evaluation points go forward from stage to stage and their gradients
    come back through :mod:`daskie.collectives` point-to-point messages; one all-reduce of
    the (disjoint) gradient slices then gives every rank the exact gradient, so the training
    is the one-process training (full batch) with each worker doing its layers' work -- and
    only one stage busy at a time. Adam or L-BFGS.

    Runner: the SPMD group runner (:mod:`daskie.runtime.spmd`, rank work ``"stages"``).

    Parameters
    ----------
    stages : int or None
        Ranks, one per worker (None: every worker of the cluster, 2 in process).
    window : int or None
        Optimizer steps per window (a checkpoint, and the unit run again after a failure).
    comm : Comm
        Collective options (method, compression, timeout, retries).
    """

    stages: int | None = None
    window: int | None = 50
    comm: Comm = field(default_factory=Comm)

    def __post_init__(self):
        owner = type(self).__name__
        check_int(f"{owner}.stages", self.stages, allow_none=True)
        check_int(f"{owner}.window", self.window, allow_none=True)
        check_comm(owner, self.comm)

    @property
    def label(self) -> str:
        """``"model-parallel"``."""
        return "model-parallel"

    def _layout(self, executor):
        return _default_stages(self.stages, executor), 1, 1


@dataclass(frozen=True)
class Pipeline(ModelParallel):
    """Pipeline parallelism (GPipe): :class:`ModelParallel`'s stages fed by micro-batches.

    The rows of every evaluation are cut into ``micro_batches`` chunks; the forward passes of
    all chunks flow through the stages one after another (stage s works on chunk m while
    stage s + 1 works on chunk m - 1), then the backward passes in reverse order, then one
    synchronous update: the gradient is the full-batch one and the numbers are the one
    process's. Each rank measures its bubble (the share of the schedule it waited for a
    neighbour; ideally ``(S - 1) / (M + S - 1)``), recorded as ``bubble`` on the last step
    of each window.

    Parameters
    ----------
    stages, window, comm
        As :class:`ModelParallel`.
    micro_batches : int
        Chunks per evaluation (GPipe's M).
    """

    micro_batches: int = 4

    def __post_init__(self):
        super().__post_init__()
        check_int("Pipeline.micro_batches", self.micro_batches)

    @property
    def label(self) -> str:
        """``"pipeline"``."""
        return "pipeline"

    def _layout(self, executor):
        return _default_stages(self.stages, executor), 1, self.micro_batches


@dataclass(frozen=True)
class Hybrid(_Staged):
    """Hybrid parallelism: data-parallel replicas of a layer pipeline (replicas x stages).

    Rank r is stage ``r % stages`` of replica ``r // stages``; each replica trains on its data
    shard of the collocation rows (:class:`~daskie.strategies.DataParallel`'s shards) through
    the pipeline of :class:`Pipeline` (``micro_batches=1``: model parallelism inside each
    replica), and one all-reduce over all ranks sums the replicas' gradients: the full-batch
    gradient, the one-process numbers. The default 2 x 2 takes four workers.

    Parameters
    ----------
    replicas : int
        Data-parallel replicas.
    stages : int
        Layer stages per replica.
    micro_batches : int
        Chunks per evaluation in each replica's pipeline.
    window, comm
        As :class:`ModelParallel`.
    """

    replicas: int = 2
    stages: int = 2
    micro_batches: int = 1
    window: int | None = 50
    comm: Comm = field(default_factory=Comm)

    def __post_init__(self):
        check_int("Hybrid.replicas", self.replicas)
        check_int("Hybrid.stages", self.stages)
        check_int("Hybrid.micro_batches", self.micro_batches)
        check_int("Hybrid.window", self.window, allow_none=True)
        check_comm("Hybrid", self.comm)

    @property
    def label(self) -> str:
        """``"hybrid"``."""
        return "hybrid"

    def _layout(self, executor):
        return self.stages, self.replicas, self.micro_batches
