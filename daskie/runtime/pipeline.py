"""The futures pipeline: rounds of parallel tasks and a sequential correction.

Parareal (:func:`daskie.parallel_in_time.parareal`), ParaFlow and APTS share one shape: an
outer iteration ``carry -> carry`` whose inside is a few parallel tasks (fine propagators,
local solves) and a correction that depends on all of them. :func:`iterate` drives it: it
submits up to ``lookahead`` iterations ahead (each on the future of the previous one, so the
workers go on while the client looks at a result), yields every finished carry in order, and
cancels what is still pending when the caller stops. With an in-process executor the same
task functions run one after another at submission: the same numbers, no cluster.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import torch

from daskie.errors import TrainingDiverged

__all__ = ["iterate", "check_finite", "round_robin"]


def check_finite(carry) -> None:
    """Raise :class:`~daskie.errors.TrainingDiverged` when the carry's parameters are not
    finite."""
    if not bool(torch.isfinite(carry.theta).all()):
        raise TrainingDiverged(f"parameters became non-finite at iteration {carry.iteration}")


def round_robin(executor) -> list[str]:
    """Worker addresses in a fixed order, for placing the parallel tasks of a round: without
    it, measured on a 2-worker LocalCluster, the scheduler follows data locality and puts
    every fine task on the worker that ran the coarse chain, one after another."""
    return sorted(executor.workers())


def iterate(executor, carry, step, *, limit=None, lookahead: int = 2):
    """Yield the carry after each iteration until one is ``done`` (or ``limit`` ran).

    Parameters
    ----------
    executor : Executor
    carry : object
        The start (has ``done``, ``iteration`` and ``theta``).
    step : callable
        ``step(carry_or_future, k) -> future`` submits iteration ``k`` on the executor.
    limit : int, optional
        Iterations allowed in all; when they are spent the last carry is yielded again with
        ``done="budget"``.
    lookahead : int
        Iterations submitted ahead on a cluster (1 in process: nothing is computed ahead).
    """
    if carry.done is not None:
        return
    ahead = executor.in_flight(lookahead)
    pending = deque()
    current, k, submitted = carry, carry.iteration, 0
    try:
        while True:
            while len(pending) < ahead and (limit is None or submitted < limit):
                current = step(current, k)
                pending.append(current)
                k += 1
                submitted += 1
            if not pending:
                yield replace(carry, done=carry.done or "budget", last=None)
                return
            carry = executor.gather([pending.popleft()])[0]
            check_finite(carry)
            yield carry
            if carry.done is not None:
                return
    finally:
        executor.cancel(list(pending))
