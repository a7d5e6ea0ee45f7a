"""What every task of a run shares: the run's context, its outputs, and the objective.

A :class:`RunContext` is shipped to each worker once; :func:`objective_for` rebuilds the
run's objective there (once per worker process, kept in the worker's
:class:`~daskie.runtime.state.WorkerState`). A :class:`WindowOutput` is what a training window
returns; :meth:`WindowOutput.to_tree` / :meth:`WindowOutput.from_tree` turn it into plain data
(tensors, numbers, strings) for the store's checkpoints.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, fields

import torch

from daskie.runtime.state import worker_state
from daskie.train.loop import TrainState
from daskie.train.objective import Objective

__all__ = ["RunContext", "WindowOutput", "objective_for", "merge_params", "torch_threads"]


@dataclass(frozen=True, eq=False)
class RunContext:
    """Everything a task needs besides its inputs; shipped to each worker once.

    Attributes
    ----------
    problem, formulation, optimizer : the run's objects
    seed : int
    target_loss : float
    threads : int or None
        torch threads inside tasks (None: leave torch's default).
    token : str
        Deterministic identity of the run (graph keys and the workers' caches use it).
    eval_every : int
        Record the test MSE every this many steps (0: at the end of each window).
    """

    problem: object
    formulation: object
    optimizer: object
    seed: int
    target_loss: float
    threads: int | None
    token: str
    eval_every: int = 0

    def build(self, shard=None) -> Objective:
        """The objective of this run (of data shard ``shard=(k, n)``), built once per worker
        process (:class:`~daskie.runtime.state.WorkerState`)."""
        return objective_for(self, shard)


@dataclass
class WindowOutput:
    """What a window task returns: the group's state, its parameters and its records."""

    group: int
    state: TrainState
    params: dict
    records: list = field(default_factory=list)
    joint_loss: float = float("nan")

    def to_tree(self) -> dict:
        """Plain data (tensors, numbers, strings, None) for a checkpoint; no records (the
        store keeps those as history)."""
        return {"group": int(self.group), "state": asdict(self.state),
                "params": dict(self.params), "joint_loss": float(self.joint_loss)}

    @classmethod
    def from_tree(cls, tree) -> "WindowOutput":
        """Inverse of :meth:`to_tree`."""
        names = {f.name for f in fields(TrainState)}
        state = TrainState(**{k: v for k, v in dict(tree["state"]).items() if k in names})
        return cls(int(tree["group"]), state, dict(tree["params"]), [],
                   float(tree.get("joint_loss", float("nan"))))


def objective_for(ctx: RunContext, shard=None) -> Objective:
    """The objective of ``ctx`` (of data shard ``shard=(k, n)`` when given), built once per
    worker process (discretizing is not free)."""
    key = (ctx.token, None if shard is None else tuple(shard))

    def make():
        # user formulations may not know shards: ask for one only when sharding
        extra = {} if shard is None else {"shard": shard}
        return Objective(ctx.formulation.discretize(ctx.problem, seed=ctx.seed, **extra))

    return worker_state().cached(worker_state().objectives, key, make)


def merge_params(outputs) -> dict:
    """The parameters of every sub-model, from the outputs of the groups of one window."""
    params = {}
    for out in outputs:
        params.update(out.params)
    return params


@contextlib.contextmanager
def torch_threads(n):
    """Run with ``n`` torch threads (None: as they are), restoring the caller's afterwards."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None and n != before:
            torch.set_num_threads(before)
