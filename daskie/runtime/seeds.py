"""Restarts as a runner: seeds trained as independent tasks.

:func:`train_seeds` submits one :func:`daskie.train.restarts.seed_task` per seed (a pure
function of the run's context and its seed) and gathers the results in seed order, so serial
and distributed runs of the same seeds give the same numbers.
"""

from __future__ import annotations

from dataclasses import replace

__all__ = ["train_seeds"]


def train_seeds(executor, ctx, seeds, *, init: str = "auto", reference=None, optimizer=None) -> list:
    """Train ``seeds`` as independent tasks on ``executor``; their
    :class:`~daskie.train.restarts.SeedResult` in the order of ``seeds``.

    ``optimizer`` replaces the run's (an automatic restart gets the time that is left)."""
    from daskie.train.restarts import seed_task

    ctx = ctx if optimizer is None else replace(ctx, optimizer=optimizer)
    futures = [executor.submit(seed_task, ctx, s, init, reference, key=f"seed-{s}-{ctx.token}")
               for s in seeds]
    return executor.gather(futures)
