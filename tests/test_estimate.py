"""The error estimate (daskie.estimate) against exact solutions: answers made wrong on purpose
(the exact solution plus a known perturbation) must get an estimate within a factor 10 of
their true relative L2 error, or the resolution where the true error is below it.
The full sweep is benchmarks/estimate.py."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from daskie.errors import SpecError
from daskie.estimate import (EstimateBudget, ReferenceEstimator, ResidualEstimator,
                             error_estimator, estimate_error, graded_rule)
from daskie.problems import catalog

SMALL = EstimateBudget(nodes=256, mapped=320, shared=1024, boundary=32)


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "estimate.py"
    spec = importlib.util.spec_from_file_location("estimate_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def true_rel_l2(problem, mu):
    """On a rule independent of the estimators': finer composite Gauss (d <= 3), 2^15 Sobol
    points above."""
    x, w = _bench().truth_rule(problem) if problem.dim <= 3 else (None, None)
    if x is None:
        x = problem.domain.sample(1 << 15, seed=99)
        w = np.full(len(x), problem.domain.volume / len(x))
    ex = problem.exact(x)
    return math.sqrt(w @ (mu(x) - ex) ** 2) / math.sqrt(w @ ex**2)


def smooth(problem):
    lo, hi = np.asarray(problem.domain.lower), np.asarray(problem.domain.upper)
    return lambda x: np.cos(np.pi * ((x - lo) / (hi - lo)).mean(-1) + 0.3)


def near_face(problem, width=0.01):
    lo, hi = np.asarray(problem.domain.lower), np.asarray(problem.domain.upper)
    return lambda x: np.exp(-((x[..., 0] - lo[0]) / (hi[0] - lo[0])) / width)


def check(est, problem, g, size):
    mu = lambda x: problem.exact(x) + size * g(x)  # noqa: E731
    true = true_rel_l2(problem, mu)
    out = est(mu)
    scale = max(true, out["resolution"])
    assert scale / 10 <= out["error_estimate"] <= 10 * scale, (problem.name, size, true, out)
    assert out["error_estimate"] >= out["resolution"]
    return true, out


@pytest.mark.parametrize("name", ["E1", "E3", "E4", "abel"])
def test_reference_estimator_sees_smooth_and_near_face_errors(name):
    problem = catalog.get(name)
    est = error_estimator(problem)
    assert isinstance(est, ReferenceEstimator)
    for size in (1e-3, 1e-6, 1e-9):
        for g in (smooth(problem), near_face(problem)):
            true, out = check(est, problem, g, size)
            assert out["resolved"] and 0.5 < out["error_estimate"] / true < 2
    exact = est(problem.exact)
    assert not exact["resolved"] and exact["error_estimate"] == exact["resolution"] < 1e-12


def test_an_error_at_the_end_that_interior_points_miss_is_seen():
    """Abel's equation (solution sqrt(x)): an answer wrong only within 1e-5 of x = 0 has an
    error no interior test point shows; the estimate and its max see it."""
    problem = catalog.get("abel")
    mu = lambda x: problem.exact(x) + 1e-4 * np.exp(-x[..., 0] / 1e-5)  # noqa: E731
    interior = problem.domain.sample(1000, seed=3)
    assert np.max(np.abs(mu(interior) - problem.exact(interior))) < 1e-15
    out = estimate_error(problem, mu)
    true = true_rel_l2(problem, mu)
    assert 0.5 < out["error_estimate"] / true < 2 and out["max_error_estimate"] > 0.5e-4


def test_residual_estimator_agrees_with_the_reference_on_a_nonlinear_volterra_equation():
    problem = catalog.get("E4")
    mu = lambda x: problem.exact(x) * (1 + 1e-5 * np.sin(3 * x[..., 0] + x[..., 1]))  # noqa: E731
    ref = ReferenceEstimator(problem)(mu)
    res = ResidualEstimator(problem, budget=SMALL)(mu)
    assert res["resolved"] and 0.5 < res["error_estimate"] / ref["error_estimate"] < 2
    assert res["method"].startswith("residual")


@pytest.mark.parametrize("name", ["hd-sharp-d4", "hd-mixed-d4"])
def test_residual_estimator_in_high_dimension(name):
    problem = catalog.get(name)
    est = error_estimator(problem, budget=SMALL)
    assert isinstance(est, ResidualEstimator)
    true, out = check(est, problem, smooth(problem), 1e-3)
    assert out["resolved"]
    check(est, problem, near_face(problem), 1e-3)
    check(est, problem, smooth(problem), 1e-9)


def test_residual_estimator_on_a_non_separable_equation():
    """lorentz-d4: mu = 1 / (1 + |X - c|^2 / s^2), Gaussian Fredholm kernel (no factors:
    the shared rules), f exact to rounding."""
    problem = _bench().lorentz(4)
    est = ResidualEstimator(problem, budget=EstimateBudget(nodes=256, boundary=32))
    true, out = check(est, problem, smooth(problem), 1e-3)
    assert out["resolved"] and 0.5 < out["error_estimate"] / true < 2
    true, out = check(est, problem, smooth(problem), 1e-9)
    assert not out["resolved"] and out["resolution"] < 1e-4


def test_budget_and_problem_errors_name_the_field():
    with pytest.raises(SpecError, match="EstimateBudget.nodes"):
        EstimateBudget(nodes=3)
    with pytest.raises(SpecError, match="weakly singular"):
        ResidualEstimator(catalog.get("abel"))


def test_graded_rule_integrates_the_domain_and_reaches_the_faces():
    for problem in (catalog.get("abel"), catalog.get("lshape"), catalog.get("fredholm3d")):
        x, w = graded_rule(problem.domain)
        assert w.sum() == pytest.approx(problem.domain.volume, rel=1e-13)
        assert problem.domain.contains(x).all()
    x, _ = graded_rule(catalog.get("abel").domain)
    assert x.min() < 1e-10 and x.max() > 1 - 1e-10


def test_same_seed_same_numbers_and_the_seed_changes_only_the_rules():
    problem = catalog.get("hd-volterra-d4")
    mu = lambda x: problem.exact(x) * (1 + 1e-4 * np.cos(x.sum(-1)))  # noqa: E731
    a = ResidualEstimator(problem, seed=3, budget=SMALL)(mu)
    b = ResidualEstimator(problem, seed=3, budget=SMALL)(mu)
    c = ResidualEstimator(problem, seed=4, budget=SMALL)(mu)
    assert a["error_estimate"] == b["error_estimate"] and a["resolution"] == b["resolution"]
    assert a["error_estimate"] != c["error_estimate"]
    assert c["error_estimate"] == pytest.approx(a["error_estimate"], rel=0.2)


def test_a_non_finite_answer_is_infinitely_wrong():
    problem = catalog.get("fredholm1d")
    out = estimate_error(problem, lambda x: np.where(x[..., 0] > 0.5, np.nan, 1.0))
    assert out["error_estimate"] == math.inf and out["max_error_estimate"] == math.inf
