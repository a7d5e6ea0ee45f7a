"""Parareal's futures loop: the fine propagations of an iteration as parallel tasks, the
coarse correction after them, on any executor.

The public entry is :func:`daskie.parallel_in_time.parareal`; the iteration runner
(:mod:`daskie.runtime.iterations`, ParaFlow) calls :func:`parareal_futures` directly. The fine
tasks of an iteration are submitted from the previous iteration's futures (nothing is gathered
in between) and placed round-robin with ``workers=`` -- without that, measured on a 2-worker
LocalCluster, the scheduler follows data locality and puts every fine task on the worker that
ran the coarse chain, one after another. An in-process executor runs the same functions in
the same order, so both give the same numbers.
"""

from __future__ import annotations

import uuid

__all__ = ["parareal_futures", "check_slices"]


def check_slices(n_slices, iterations):
    """Refuse a slice count below 1 or a negative iteration count, naming it."""
    from daskie.errors import check_int

    check_int("parareal: n_slices", n_slices, 1)
    check_int("parareal: iterations", iterations, 0)


def _correct(fine_value, coarse_new, coarse_old):
    return fine_value + coarse_new - coarse_old


def _identity(y):
    return y


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
    check_slices(n_slices, iterations)
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
