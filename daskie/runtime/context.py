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

from daskie.errors import SpecError
from daskie.runtime.devices import resolve_device
from daskie.runtime.state import worker_state
from daskie.train.loop import TrainState, to_device
from daskie.train.objective import Objective

__all__ = ["RunContext", "WindowOutput", "objective_for", "merge_params", "torch_threads",
           "run_token"]


def run_token(*parts) -> str:
    """The deterministic identity of a run: the same problem, plan, options and seed give the
    same token (graph keys and the workers' caches use it)."""
    import dask.base

    return dask.base.tokenize(*[repr(p) for p in parts])


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
    device : str or None
        Where the objectives of the run's tasks compute: None decides per task from its
        resource tag (a ``GPU`` task on CUDA, every other task on the CPU:
        :func:`~daskie.runtime.devices.require_device`); ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"meta"`` puts every objective there, the client's included
        (``"cuda"`` on a machine without CUDA is a named error). Results leave the tasks on
        the CPU (:class:`WindowOutput`), whatever device computed them.
    dtype : str
        ``"float64"`` (default) or ``"float32"``: the precision the objectives compute in;
        results leave the tasks in float64 (:func:`daskie.train.loop.advance` hands a state
        back in the dtype it came in).
    """

    problem: object
    formulation: object
    optimizer: object
    seed: int
    target_loss: float
    threads: int | None
    token: str
    eval_every: int = 0
    device: str | None = None
    dtype: str = "float64"

    def build(self, shard=None) -> Objective:
        """The objective of this run (of data shard ``shard=(k, n)``), built once per worker
        process (:class:`~daskie.runtime.state.WorkerState`)."""
        return objective_for(self, shard)


@dataclass
class WindowOutput:
    """What a window task returns: the group's state, its parameters and its records.

    Its tensors are on the CPU, whatever device trained them (moved when it is made): what
    goes back to the client and into the store is the same on every cluster.
    """

    group: int
    state: TrainState
    params: dict
    records: list = field(default_factory=list)
    joint_loss: float = float("nan")

    def __post_init__(self):
        self.state = to_device(self.state, "cpu")
        self.params = to_device(self.params, "cpu")

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
    worker process and device (discretizing is not free), on the device of the task asking
    (``ctx.device``, or :func:`~daskie.runtime.devices.resolve_device`'s choice from the
    task's resource tag): its data move there once, here."""
    device = resolve_device(ctx.device)
    key = (ctx.token, None if shard is None else tuple(shard))
    if device != "cpu":
        key = key + (device,)
    if ctx.dtype != "float64":
        key = key + (ctx.dtype,)

    def make():
        # user formulations may not know shards or devices: ask only when needed
        extra = {} if shard is None else {"shard": shard}
        if device != "cpu" or ctx.dtype != "float64":
            if not _takes(ctx.formulation.discretize, "device"):
                raise SpecError(f"{type(ctx.formulation).__name__}.discretize takes no device "
                                f"argument, so it cannot be trained on {device!r} in "
                                f"{ctx.dtype}: add "
                                "device=None, dtype=None to it (Formulation.discretize) or run "
                                "on the CPU")
            if device != "cpu":
                extra["device"] = device
        if ctx.dtype != "float64":
            import torch

            extra["dtype"] = getattr(torch, ctx.dtype)
        return Objective(ctx.formulation.discretize(ctx.problem, seed=ctx.seed, **extra))

    return worker_state().cached(worker_state().objectives, key, make)


def _takes(fn, name: str) -> bool:
    """Whether ``fn`` accepts the keyword argument ``name``."""
    import inspect

    params = inspect.signature(fn).parameters.values()
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


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
