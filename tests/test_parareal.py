"""Parareal with user propagators: exactness, serial == distributed, round-robin placement."""

import math

import numpy as np
import pytest

from daskie.errors import SpecError
from daskie.parallel_in_time import parareal


def euler(lam, steps, dt):
    def prop(y, n):
        for _ in range(steps):
            y = y + dt * lam(y)
        return y
    return prop


def logistic(y):
    return y * (1.0 - y) - 0.3 * np.sin(3.0 * y)


N = 6
COARSE = euler(logistic, 1, 0.5)
FINE = euler(logistic, 50, 0.01)


def fine_chain(y0, n):
    out = [y0]
    for k in range(n):
        out.append(FINE(out[-1], k))
    return out


@pytest.mark.parametrize("initial", [None, "constant"])
def test_exactness_after_k_iterations(initial):
    y0 = np.array([0.1, 0.4, 1.3])
    init = None if initial is None else [y0] * (N + 1)
    hist = parareal(COARSE, FINE, y0, N, N, initial=init)
    exact = fine_chain(y0, N)
    assert len(hist) == N + 1 and all(len(h) == N + 1 for h in hist)
    for k in range(N + 1):
        for n in range(k + 1):
            np.testing.assert_allclose(hist[k][n], exact[n], rtol=0, atol=1e-12)
    # and not before: the coarse guess really is coarse
    assert np.max(np.abs(hist[0][N] - exact[N])) > 1e-3
    assert np.max(np.abs(hist[1][N] - exact[N])) < np.max(np.abs(hist[0][N] - exact[N]))


def test_scalar_linear_matches_closed_form():
    lam = -1.0
    hist = parareal(euler(lambda y: lam * y, 1, 0.1), euler(lambda y: lam * y, 10, 0.01), 1.0, 4, 4)
    for n in range(5):
        assert hist[4][n] == pytest.approx(0.99 ** (10 * n), rel=1e-12)
    assert hist[0][1] == pytest.approx(0.9)


def test_distributed_equals_serial_and_spreads_fine_tasks(client):
    from distributed import get_task_stream

    y0 = np.array([0.2, 0.7])
    serial = parareal(COARSE, FINE, y0, 4, 3)
    with get_task_stream(client) as ts:
        dist = parareal(COARSE, FINE, y0, 4, 3, client=client)
    for k in range(4):
        for n in range(5):
            np.testing.assert_allclose(dist[k][n], serial[k][n], rtol=0, atol=1e-12)
    fine_workers = {t["worker"] for t in ts.data if "-fine-" in t["key"]}
    assert len(fine_workers) == 2  # round-robin, not all on the coarse chain's worker


@pytest.mark.parametrize("kwargs, name", [({"n_slices": 0}, "n_slices"),
                                          ({"iterations": -1}, "iterations"),
                                          ({"n_slices": 2.0}, "n_slices")])
def test_bad_arguments_name_them(kwargs, name):
    args = {"n_slices": 3, "iterations": 1, **kwargs}
    with pytest.raises(SpecError, match=name):
        parareal(COARSE, FINE, 0.1, args["n_slices"], args["iterations"])
    assert math.isfinite(FINE(0.1, 0))
