"""Parametric families: seeded sampling, the random field, and every instance's reference."""

import numpy as np
import pytest

from daskie.errors import SpecError
from daskie.problems.families import FAMILIES, Family, RandomField, family
from daskie.problems import Domain
from daskie.reference import Nystrom


def test_instance_i_does_not_depend_on_how_many_are_drawn_or_where_drawing_starts():
    fam = family("volterra-1d-sin")
    all_ten = fam.sample(10, seed=3)
    np.testing.assert_array_equal(fam.sample(4, seed=3, start=5), all_ten[5:9])
    np.testing.assert_array_equal(fam.sample(10, seed=3), all_ten)
    assert not np.allclose(fam.sample(10, seed=4), all_ten)


def test_lambda_is_drawn_in_its_range_and_fixed_when_the_ends_agree():
    lam = family("volterra-1d-sin").lam_values(family("volterra-1d-sin").sample(200, seed=0))
    assert lam.min() >= 0.5 and lam.max() <= 1.5 and lam.std() > 0.2
    assert np.all(family("fredholm-1d").lam_values(family("fredholm-1d").sample(5)) == 0.5)


def test_f_values_of_many_instances_equal_each_instance_problem_f():
    for name in FAMILIES:
        fam = family(name)
        params = fam.sample(3, seed=1)
        x = fam.domain.sample(17, seed=2)
        values = fam.f_values(params, x)
        for i, p in enumerate(params):
            np.testing.assert_allclose(values[i], fam.problem(p).f(x), rtol=0, atol=1e-14)


def test_random_field_has_the_stated_mean_and_pointwise_variance():
    field = RandomField(modes=6, length=0.2, scale=2.0, mean=0.5)
    rng = np.random.default_rng(0)
    coef = np.stack([field.draw(1, rng) for _ in range(4000)])
    x = np.linspace(0, 1, 7)[:, None]
    values = field.evaluate(coef, x, (0.0,), (1.0,))  # (4000, 7)
    # sum s_k^2 (cos^2 + sin^2) = 1: the variance is scale^2 at every point
    np.testing.assert_allclose(values.var(axis=0), 4.0, rtol=0.1)
    np.testing.assert_allclose(values.mean(axis=0), 0.5, atol=0.15)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_instance_reference_solves_its_equation(name):
    # the family's Nystrom reference, checked by the residual of the continuous equation
    # under a finer rule than the solve's own
    fam = family(name)
    for p in fam.sample(2, seed=7):
        problem = fam.problem(p)
        ref = fam.reference().solve(problem)
        res = Nystrom(fam.reference_n + 8).residual(problem, ref)
        assert np.max(np.abs(res)) < 1e-9 * max(1.0, np.max(np.abs(ref.values)))


def test_built_in_families_are_the_three_kinds_the_issue_asks_for():
    kinds = set()
    for name in FAMILIES:
        fam = family(name)
        kinds.add((fam.dim, fam.volterra, fam.problem(fam.sample(1)[0]).is_linear))
    assert (1, False, True) in kinds and (1, True, False) in kinds and (2, False, True) in kinds


def test_bad_families_are_refused_with_the_field_named():
    box = Domain((0.0,), (1.0,))
    with pytest.raises(SpecError, match="Family.lam"):
        Family("x", box, lambda x, t: x[..., 0] * 0 + 1, lam=(2.0, 1.0))
    with pytest.raises(SpecError, match="RandomField.length"):
        RandomField(length=0)
    with pytest.raises(SpecError, match="no family named"):
        family("nope")
    with pytest.raises(SpecError, match="13 parameters"):
        family("fredholm-1d").problem(np.zeros(3))
