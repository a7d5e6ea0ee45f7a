"""The error estimate (daskie.estimate) against exact solutions: answers made wrong on purpose
(the exact solution plus a known perturbation) must get an estimate within a factor 10 of
their true relative L2 error, or the resolution where the true error is below it."""

import math

import numpy as np
import pytest

from daskie.errors import SpecError
from daskie.estimate import (EstimateBudget, ReferenceEstimator, ResidualEstimator,
                             error_estimator, estimate_error, graded_rule)
from daskie.problems import catalog


def true_rel_l2(problem, mu):
    """Relative L2 error on a rule independent of the estimators' (a finer graded rule in
    d <= 3: two graded rules of different depth agree; 2^15 Sobol points above)."""
    if problem.dim <= 3:
        x, w = graded_rule(problem.domain)
        # refine: split every node's weight onto a Gauss pair around it is overkill; the rule
        # integrates the smooth and near-face perturbations below to < 1 %.
    else:
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
    if true > out["resolution"]:
        assert true / 10 < out["error_estimate"] < 10 * true, (problem.name, size, true, out)
    else:
        assert out["error_estimate"] == out["resolution"] and not out["resolved"]
    return out


@pytest.mark.parametrize("name", ["E1", "E3", "abel"])
def test_reference_estimator_sees_smooth_and_near_face_errors(name):
    problem = catalog.get(name)
    est = error_estimator(problem)
    assert isinstance(est, ReferenceEstimator)
    for size in (1e-3, 1e-6, 1e-9):
        check(est, problem, smooth(problem), size)
        check(est, problem, near_face(problem), size)
    assert est(problem.exact)["resolved"] is False


@pytest.mark.parametrize("name", ["hd-sharp-d4", "hd-volterra-d4"])
def test_residual_estimator_in_high_dimension(name):
    problem = catalog.get(name)
    est = ResidualEstimator(problem, budget=EstimateBudget(nodes=512, mapped=256))
    out = check(est, problem, smooth(problem), 1e-3)
    assert out["method"].startswith("residual")
    check(est, problem, smooth(problem), 1e-9)


def test_budget_names_the_field():
    with pytest.raises(SpecError, match="EstimateBudget.nodes"):
        EstimateBudget(nodes=3)
