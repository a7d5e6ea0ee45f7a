"""``solve(tol=...)``: training stops when the error estimate is within the tolerance, the
summary says how good the answer is, one warning exactly when the tolerance is missed, and the
result never depends on the machine's speed unless a time limit was asked for."""

import subprocess
import sys

import numpy as np
import pytest

import daskie
from daskie import MLP, LevenbergMarquardt, QuadratureCollocation, config
from daskie.errors import SpecError, ToleranceWarning
from daskie.estimate import ReferenceEstimator
from daskie.train.optimizers import Stopping

SMALL = QuadratureCollocation(net=MLP(hidden=(10, 10)), points=64, test_points=200)


def _rel_l2_on_grid(ds):
    err, ex = ds["error"].values, ds["exact"].values
    return float(np.sqrt(np.nanmean(err**2) / np.nanmean(ex**2)))


@pytest.mark.parametrize("name", ["fredholm1d", "volterra1d"])
def test_the_default_solve_stops_at_the_tolerance_and_its_estimate_is_true(name):
    ds = daskie.solve(name, formulation=SMALL, client="sync")  # a warning would fail the test
    a = ds.attrs
    assert a["tol"] == config.get("tol") == 1e-5 and a["converged"] and a["warnings"] == []
    assert a["stopped_by"] == "tol" and a["error_estimate"] <= 1e-5
    true = _rel_l2_on_grid(ds)  # the grid includes the ends of the interval
    assert true / 10 <= a["error_estimate"] <= 10 * true
    assert not a["time_limited"]


def test_a_tighter_tolerance_trains_longer_and_is_met():
    loose = daskie.solve("fredholm1d", formulation=SMALL, client="sync", tol=1e-4)
    tight = daskie.solve("fredholm1d", formulation=SMALL, client="sync", tol=1e-6)
    assert loose.attrs["stopped_by"] == tight.attrs["stopped_by"] == "tol"
    assert loose.attrs["epochs"] < tight.attrs["epochs"]
    # each stops once its estimate is within the reference estimator's margin of its tol
    assert loose.attrs["error_estimate"] <= ReferenceEstimator.margin * 1e-4
    assert tight.attrs["error_estimate"] <= ReferenceEstimator.margin * 1e-6
    assert _rel_l2_on_grid(tight) <= 1e-6 and _rel_l2_on_grid(tight) < _rel_l2_on_grid(loose)


def test_the_same_call_gives_the_same_numbers():
    # no wall-clock rule: the result is a function of the arguments alone
    first = daskie.solve("volterra1d", formulation=SMALL, client="sync")
    second = daskie.solve("volterra1d", formulation=SMALL, client="sync")
    np.testing.assert_array_equal(first.mu.values, second.mu.values)
    assert first.attrs["epochs"] == second.attrs["epochs"]


def test_the_tolerance_stop_is_the_same_on_a_cluster(client):
    serial = daskie.solve("volterra1d", formulation=SMALL, client="sync")
    dist = daskie.solve("volterra1d", formulation=SMALL, client=client)
    np.testing.assert_array_equal(serial.mu.values, dist.mu.values)
    assert serial.attrs["stopped_by"] == dist.attrs["stopped_by"] == "tol"


def test_an_explicit_step_count_is_obeyed():
    with pytest.warns(ToleranceWarning, match=r"stopped by budget\); try more optimizer steps"):
        ds = daskie.solve("fredholm1d", formulation=SMALL, client="sync",
                          optimizer=LevenbergMarquardt(steps=3), init="random")
    assert ds.attrs["epochs"] == 3 and not ds.attrs["converged"]
    assert len(ds.attrs["warnings"]) == 1 and "> tol 1e-05" in ds.attrs["warnings"][0]


def test_a_time_limit_is_said_in_the_summary():
    with pytest.warns(ToleranceWarning, match=r"stopped by time\); try a larger max_time"):
        ds = daskie.solve("fredholm1d", formulation=SMALL, client="sync", init="random",
                          max_time=1e-9)
    assert ds.attrs["time_limited"] and ds.attrs["stopped_by"] == "time"


def test_without_checks_there_is_no_estimate_and_no_warning():
    ds = daskie.solve("fredholm1d", formulation=SMALL, client="sync", check=False,
                      optimizer=LevenbergMarquardt(steps=3))
    assert np.isnan(ds.attrs["error_estimate"]) and ds.attrs["warnings"] == []


@pytest.mark.parametrize("tol", [0, 1.5, -1e-6, float("nan"), "1e-6", True])
def test_a_bad_tolerance_is_named(tol):
    with pytest.raises(SpecError, match=r"^tol must be a relative L2 error in \(0, 1\)"):
        daskie.solve("fredholm1d", client="sync", tol=tol)


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), "10"])
def test_a_bad_time_limit_is_named(seconds):
    with pytest.raises(SpecError, match="^max_time must be a positive number of seconds"):
        daskie.solve("fredholm1d", client="sync", max_time=seconds)


def test_cli_bad_tolerance_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "daskie.cli", "solve", "fredholm1d", "--tol", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--tol" in proc.stderr and "(0, 1)" in proc.stderr


def test_stopping_checks_its_tolerance_and_when_to_estimate():
    with pytest.raises(SpecError, match="Stopping.tol must be a positive number"):
        Stopping(tol=0.0)
    with pytest.raises(SpecError, match="Stopping.estimator must be callable"):
        Stopping(tol=1e-6, estimator=3)
    assert Stopping().max_wall_s is None  # no stopwatch by default
    stop = Stopping(tol=1e-6, estimator=lambda mu: {"error_estimate": 0.0}, estimate_factor=10.0)
    assert stop.estimate_due(1.0, None, stopping=False)  # the first time
    far = (1.0, 1.0)  # the last estimate (at loss 1) far above margin * tol = 5e-7
    assert not stop.estimate_due(0.2, far, stopping=False)  # fell by less than 10x
    assert stop.estimate_due(0.1, far, stopping=False)
    assert stop.estimate_due(0.9, far, stopping=True)  # before any other stop
    # close above the goal: due once the loss fell to where the error (as sqrt of the loss)
    # would reach 0.8 * margin * tol, here (1e-6 / 4e-7)^2 = 6.25x, sooner than the 10x factor
    near = (1.0, 1e-6)
    assert not stop.estimate_due(0.17, near, stopping=False)
    assert stop.estimate_due(0.16, near, stopping=False)
    # just above the goal: at least a fall by sqrt(estimate_factor), not every step
    hover = (1.0, 5.01e-7)
    assert not stop.estimate_due(0.5, hover, stopping=False)
    assert stop.estimate_due(10 ** -0.5, hover, stopping=False)
    # the goal is margin * tol, the margin the estimator's own unless set
    class Rated:
        margin = 0.75

        def __call__(self, mu):
            return {"error_estimate": 0.0}

    assert Stopping(tol=1e-6, estimator=Rated()).goal() == pytest.approx(7.5e-7)
    assert Stopping(tol=1e-6, estimator=Rated(), margin=0.25).goal() == pytest.approx(2.5e-7)
    assert stop.goal() == pytest.approx(5e-7)  # an estimator without a margin: 0.5
    with pytest.raises(SpecError, match=r"Stopping.margin must lie in \(0, 1\]"):
        Stopping(margin=1.5)
    assert not Stopping().estimate_due(1.0, None, stopping=True)  # no tolerance: never
    # the estimator is not part of the option's identity (tokens, stored options)
    assert "estimator" not in repr(stop) and stop == Stopping(tol=1e-6, estimate_factor=10.0)


def test_a_loss_that_no_longer_follows_the_error_is_a_ridge():
    stop = Stopping(tol=1e-6, estimator=lambda mu: {"error_estimate": 0.0}, ridge_factor=1e3)
    # the loss fell 1000x while the estimate stayed: the loss improves only at the points
    assert stop.on_ridge([(1e-8, 4e-4), (1e-10, 4.2e-4)], 1e-11, 4.4e-4)
    # the estimate fell with the loss (by 10x for 1000x: the error ~ sqrt(loss) would be 30x)
    assert not stop.on_ridge([(1e-8, 4e-4)], 1e-11, 4e-5)
    # not yet 1000x of loss since any estimate
    assert not stop.on_ridge([(1e-9, 4e-4)], 1e-11, 4.4e-4)
    with pytest.raises(SpecError, match="Stopping.ridge_factor must be > 1"):
        Stopping(ridge_factor=1.0)


def test_a_linear_equation_starts_random_and_a_nonlinear_one_from_the_reference():
    from daskie.problems import catalog
    from daskie.train.warm_start import choose_init

    assert choose_init(catalog.get("E1"), reference=object())[0] == "random"
    assert choose_init(catalog.get("nfredholm1d"), reference=object())[0] == "reference"
