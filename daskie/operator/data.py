"""Training data as tasks: instances of a family solved by the reference, streamed to zarr.

Each block of instances is one task (:func:`solve_block`: draw the block's parameters from
the family's seeded streams, build each instance's :class:`~daskie.problems.Problem`, solve
it with the family's :class:`~daskie.reference.Nystrom` rule, sample ``f`` at the sensors and
``mu`` at the query points). Blocks are independent, so they run on every worker at once;
the client keeps a bounded number of them in flight and writes each result into the data
set (:class:`~daskie.store.dataset.OperatorDataset`) as it arrives, so memory stays bounded
however many instances there are. Only blocks the data set lacks are submitted: an
interrupted generation continues with the rest and recomputes nothing.
"""

from __future__ import annotations

import time

import numpy as np

from daskie.errors import check_int

__all__ = ["sensor_points", "solve_block", "solve_and_write", "generate_on"]


def sensor_points(family, per_axis: int) -> np.ndarray:
    """A regular grid of ``per_axis`` points per coordinate over the family's box (ends
    included), shape ``(per_axis**d, d)``."""
    check_int("points per coordinate", per_axis, 2)
    return family.domain.grid(per_axis)


def solve_block(family, seed: int, lo: int, hi: int, sensors, query) -> dict:
    """Instances ``[lo, hi)`` of ``family`` (seed ``seed``) solved by its reference.

    Returns
    -------
    dict
        ``params (n, n_params)``, ``f (n, m)`` at the sensors, ``mu (n, q)`` at the query
        points, ``solve_s (n,)`` (the reference solve's wall time) and ``residual (n,)``.
    """
    params = family.sample(hi - lo, seed=seed, start=lo)
    solver = family.reference()
    mu, wall, res = [], [], []
    for p in params:
        ref = solver.solve(family.problem(p))
        mu.append(ref(query))
        wall.append(ref.wall_s)
        res.append(ref.residual)
    return {"params": params, "f": family.f_values(params, sensors), "mu": np.array(mu),
            "solve_s": np.array(wall), "residual": np.array(res)}


def solve_and_write(path, k: int, family, seed: int, lo: int, hi: int, sensors, query) -> int:
    """Block ``k`` (instances ``[lo, hi)``) solved by :func:`solve_block` and written into
    the data set at ``path`` by the task itself, its done flag last (each block is its own
    zarr chunk: blocks written at once by several workers touch no common chunk). Returns
    ``k``. The client then moves no data at all: with the client writing every block, its
    CPU (on the workers' cores here) capped the 2-worker speed-up near 1.7."""
    from daskie.store.dataset import OperatorDataset

    OperatorDataset(path).write_block(k, solve_block(family, seed, lo, hi, sensors, query))
    return k


def generate_on(executor, family, store, *, seed: int, ahead: int | None = None,
                on_block=None) -> dict:
    """Generate the blocks ``store`` lacks on ``executor``; returns counts and times.

    Parameters
    ----------
    executor : Executor
    family : Family
    store : OperatorDataset
        Created with this family's spec (:func:`daskie.operator.generate_dataset`).
    seed : int
    ahead : int, optional
        Blocks in flight at most (default: four per worker).
    on_block : callable, optional
        ``on_block(k, written, total)`` after block k is on disk.

    Returns
    -------
    dict
        ``blocks`` (in the data set), ``solved`` (blocks computed now), ``skipped`` (already
        on disk), ``wall_s``.
    """
    pending = store.pending()
    total = -(-store.n // store.block)
    if ahead is None:
        ahead = 4 * max(1, len(executor.workers()))
    check_int("ahead", ahead)
    sensors, query = store.sensors, store.query
    token = store.spec.get("token", "data")
    t0 = time.perf_counter()
    queue, written = [], 0
    todo = iter(pending)

    def submit_next():
        k = next(todo, None)
        if k is None:
            return
        lo, hi = store.block_range(k)
        queue.append((k, executor.submit(solve_and_write, store.path, k, family, seed, lo, hi,
                                         sensors, query, key=f"daskie-data-{token}-{k:06d}",
                                         allow_other_workers=True)))

    try:
        for _ in range(ahead):
            submit_next()
        while queue:
            k, fut = queue.pop(0)
            executor.gather([fut])  # the task has written block k and flagged it done
            written += 1
            if on_block is not None:
                on_block(k, written, len(pending))
            submit_next()
    finally:
        executor.cancel([f for _, f in queue])
    return {"blocks": total, "solved": written, "skipped": total - len(pending),
            "wall_s": time.perf_counter() - t0}
