"""Parareal with user propagators, serially or as Dask futures.

Parareal (Gander & Lunet 2024; seed 002 Eq 3) updates approximations ``U[n]`` of the states
at the slice boundaries ``t_0 < ... < t_N`` by

    U[n+1]^{k+1} = G(U[n]^{k+1}) + F(U[n]^k) - G(U[n]^k)

where the fine propagations ``F(U[n]^k)`` of one iteration are independent and run in
parallel; only the coarse correction is sequential. After ``k`` iterations the first ``k``
slices equal the sequential fine solution (the exactness property).

On a cluster every propagation is a task (through the run's executor,
:mod:`daskie.runtime`): the fine tasks of an iteration
are submitted from the previous iteration's futures (nothing is gathered in between) and
placed round-robin with ``workers=`` -- without that, measured on a 2-worker LocalCluster,
the scheduler follows data locality and puts every fine task on the worker that ran the
coarse chain, one after another. One gather at the end. Without a client the same
functions run in this process (an in-process executor) in the same order, so both give the
same numbers.
"""

from __future__ import annotations

from daskie.runtime.parareal import check_slices, parareal_futures

__all__ = ["parareal", "parareal_futures"]


def parareal(coarse, fine, y0, n_slices: int, iterations: int, client="sync", *, initial=None,
             args=()):
    """Run ``iterations`` Parareal iterations over ``n_slices`` slices.

    Parameters
    ----------
    coarse, fine : callable
        ``coarse(y, n) -> y`` and ``fine(y, n) -> y`` propagate a state over slice ``n``
        (``0 <= n < n_slices``). States support ``a + b - c`` (tensors, arrays, floats).
        With a client they must pickle (module-level functions or ``functools.partial``).
    y0 : state
        Initial state at ``t_0``.
    n_slices : int
        Number of slices N.
    iterations : int
        Parareal iterations K (0 returns only the initial approximation).
    client : "sync", distributed.Client or Executor
        Run the propagations as tasks on a client's workers; ``"sync"`` (default) runs them
        in this process.
    initial : sequence of N + 1 states, optional
        The iteration-0 approximations ``U[0..N]`` (``initial[0]`` is replaced by ``y0``).
        Default: the coarse chain ``U[n+1] = coarse(U[n], n)``.
    args : tuple
        Extra arguments of every propagation: ``coarse(y, n, *args)``, ``fine(y, n, *args)``
        (with a client they may be futures, e.g. a scattered model, shipped once per worker).

    Returns
    -------
    list of list
        ``result[k][n]``: the state at the end of slice ``n - 1`` (``n = 0`` is ``y0``)
        after ``k`` iterations, for ``k = 0..iterations`` and ``n = 0..n_slices``;
        ``result[k][n]`` equals ``fine`` applied ``n`` times to ``y0`` for ``n <= k``.
    """
    from daskie.runtime.executor import as_executor

    check_slices(n_slices, iterations)
    executor = as_executor(client)
    futures = parareal_futures(executor, coarse, fine, y0, n_slices, iterations, initial=initial,
                               args=args)
    return [executor.gather(row) for row in futures]
