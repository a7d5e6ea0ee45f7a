"""``daskie.solve`` with the checks of issue 15: the reference beside the answer, warm starts,
restarts, boundary test points, the discrepancy warning."""

import math

import numpy as np
import pytest

import daskie
from daskie import MLP, LevenbergMarquardt, QuadratureCollocation
from daskie.errors import ToleranceWarning
from daskie.problems import Domain, IntegralTerm, Nonlinearity, Problem

SMALL = QuadratureCollocation(net=MLP(hidden=(8, 8)), points=64, test_points=200)
A_LOW, A_HIGH = 4.0 - 2.0 * math.sqrt(2.0), 4.0 + 2.0 * math.sqrt(2.0)
KEYS = ("mse", "mse_boundary", "reference_mse", "discrepancy", "wall_s", "stopped_by", "warnings", "init")


def _x(p):
    return p[..., 0]


def two_solutions(exact_a=A_LOW):
    """u = x + 1/2 Int_0^1 x t u^2: u = a x with a = 4 -+ 2 sqrt 2."""
    return Problem(domain=Domain((0.0,), (1.0,)), f=_x, name="two-solutions",
                   terms=(IntegralTerm(lambda p, t: _x(p) * _x(t), lam=0.5,
                                       nonlinearity=Nonlinearity.power(2)),),
                   exact=lambda p: exact_a * _x(p))


def test_default_solve_starts_from_the_reference_and_reports_the_checks():
    ds = daskie.solve(two_solutions(), formulation=SMALL, client="sync")  # any warning fails it
    for key in KEYS:
        assert key in ds.attrs, key
    assert ds.attrs["init"] == "reference" and ds.attrs["warnings"] == []
    assert ds.attrs["stopped_by"] in ("tol", "target", "floor", "stalled", "budget")
    assert ds.attrs["converged"] and ds.attrs["error_estimate"] <= ds.attrs["tol"]
    # the answer within the default tolerance (1e-5 relative L2) of the reference and the truth
    assert ds.attrs["reference_mse"] < 1e-25 and ds.attrs["discrepancy"] <= ds.attrs["tol"]
    assert ds.attrs["mse"] < 1e-9 and ds.attrs["mse_boundary"] < 1e-8
    assert ds.attrs["solution"] == "reference"


def test_tolerance_warning_fires_on_a_wrong_answer_and_is_in_the_summary():
    with pytest.warns(ToleranceWarning, match=r"error estimate \S+ > tol 1e-05 .*stopped by budget"):
        ds = daskie.solve(two_solutions(), formulation=SMALL, init="random",
                          optimizer=LevenbergMarquardt(steps=2), client="sync")
    assert ds.attrs["discrepancy"] > 1e-6 and len(ds.attrs["warnings"]) == 1
    assert ds.attrs["init"] == "random"


def test_the_other_branch_is_reported_as_another_solution():
    # The stated exact solution is the high branch; the reference's Newton (from f / alpha)
    # finds the low one, and so does the warm-started network: answer and reference agree
    # (no warning), and reference_mse shows the reference itself sits on the other branch.
    ds = daskie.solve(two_solutions(A_HIGH), formulation=SMALL, client="sync")
    assert ds.attrs["discrepancy"] <= ds.attrs["tol"] and ds.attrs["mse"] > 1.0  # vs the stated exact
    assert ds.attrs["reference_mse"] > 1.0  # the reference found the low branch too


def test_restarts_serial_equal_cluster_through_solve(client):
    kw = dict(formulation=SMALL, init="random", restarts=2, optimizer=LevenbergMarquardt(steps=4))
    with pytest.warns(ToleranceWarning):
        serial = daskie.solve(two_solutions(), client="sync", **kw)
    with pytest.warns(ToleranceWarning):
        dist = daskie.solve(two_solutions(), client=client, **kw)
    np.testing.assert_array_equal(serial.mu.values, dist.mu.values)
    assert serial.attrs["restarts"] == dist.attrs["restarts"] == 2
    assert serial.attrs["loss"] == min(serial.attrs["run_losses"])
    assert list(serial.attrs["run_losses"]) == list(dist.attrs["run_losses"])


def test_kinked_kernel_floor_is_low_with_the_kink_option():
    def green(kink):
        return Problem(domain=Domain((0.0,), (1.0,)), name="green",
                       f=lambda p: np.exp(_x(p)) - (1.0 - np.exp(_x(p)) + (math.e - 1.0) * _x(p)),
                       terms=(IntegralTerm(lambda p, t: np.minimum(_x(p), _x(t)) * (1 - np.maximum(_x(p), _x(t))),
                                           kink=kink),),
                       exact=lambda p: np.exp(_x(p)))

    opt = LevenbergMarquardt(steps=3)
    with pytest.warns(ToleranceWarning):
        plain = daskie.solve(green(()), formulation=SMALL, optimizer=opt, client="sync")
    with pytest.warns(ToleranceWarning):
        kinked = daskie.solve(green(True), formulation=SMALL, optimizer=opt, client="sync")
    assert plain.attrs["floor"] > 1e-10 and kinked.attrs["floor"] < 1e-26
