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

import uuid

__all__ = ["parareal", "parareal_futures"]


def _check(n_slices, iterations):
    from daskie.errors import check_int

    check_int("parareal: n_slices", n_slices, 1)
    check_int("parareal: iterations", iterations, 0)


def _correct(fine_value, coarse_new, coarse_old):
    return fine_value + coarse_new - coarse_old


def _identity(y):
    return y


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

    _check(n_slices, iterations)
    executor = as_executor(client)
    futures = parareal_futures(executor, coarse, fine, y0, n_slices, iterations, initial=initial,
                               args=args)
    return [executor.gather(row) for row in futures]


def parareal_futures(executor, coarse, fine, y0, n_slices: int, iterations: int, *, initial=None,
                     args=(), token: str | None = None, workers=None):
    """Submit Parareal to ``executor`` and return the futures of :func:`parareal`'s result.

    The same arguments as :func:`parareal`; ``y0``, the entries of ``initial`` and ``args``
    may be futures (so windows can be chained without a gather). ``token`` names the keys
    (``parareal-<token>-<kind>-<k>-<n>``; default a random one). ``workers`` lists the
    worker addresses the fine tasks go to, round-robin by slice (default all of the
    executor's workers, in address order). An in-process executor runs each task at
    submission, in the order :func:`parareal` describes.
    """
    _check(n_slices, iterations)
    token = token or uuid.uuid4().hex
    workers = list(sorted(executor.workers()) if workers is None else workers)

    def key(kind, k, n):
        return f"parareal-{token}-{kind}-{k}-{n}"

    args = tuple(args)

    def submit(fn, *a, k_key):
        return executor.submit(fn, *a, key=k_key)

    if not _is_future(y0):
        y0 = executor.submit(_identity, y0, key=key("y0", 0, 0))
    if initial is None:
        u = [y0]
        for n in range(n_slices):
            u.append(submit(coarse, u[n], n, *args, k_key=key("coarse", 0, n)))
        g_old = u[1:]
    else:
        u = [y0, *list(initial)[1:]]
        u = [v if _is_future(v) else executor.submit(_identity, v, key=key("init", 0, n))
             for n, v in enumerate(u)]
        g_old = [submit(coarse, u[n], n, *args, k_key=key("coarse", 0, n)) for n in range(n_slices)]
    history = [u]
    for k in range(1, iterations + 1):
        f = [executor.submit(fine, u[n], n, *args, key=key("fine", k, n),
                             workers=[workers[n % len(workers)]])
             for n in range(n_slices)]
        new, g_new = [y0, f[0]], [g_old[0]]
        for n in range(1, n_slices):
            g = submit(coarse, new[n], n, *args, k_key=key("coarse", k, n))
            g_new.append(g)
            new.append(submit(_correct, f[n], g, g_old[n], k_key=key("correct", k, n)))
        u, g_old = new, g_new
        history.append(u)
    return history


def _is_future(x) -> bool:
    """A task's future (of any executor), as opposed to a state."""
    return hasattr(x, "key") and callable(getattr(x, "result", None))
