"""Parametric families: seeded sampling, the random field, and every instance's reference."""

import numpy as np
import pytest

from daskie.errors import SpecError
from daskie.problems.families import FAMILIES, Family, RandomField, family
from daskie.problems import Domain, IntegralTerm, Problem
from daskie.problems.parametric import ParametricFamily
from daskie.problems.spec import VOLTERRA
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


def _is_volterra(problem):
    return any(VOLTERRA in term.upper for term in problem.terms)


def test_built_in_families_are_the_kinds_the_issues_ask_for():
    kinds = set()
    for name in FAMILIES:
        fam = family(name)
        problem = fam.problem(fam.sample(1)[0])
        kinds.add((fam.dim, _is_volterra(problem), problem.is_linear))
    assert (1, False, True) in kinds and (1, True, False) in kinds and (2, False, True) in kinds
    # issue 29: two 1-D families whose kernel varies (the branch is told its parameter), one
    # 2-D family on a fine query grid
    x = np.array([[0.2], [0.7]])
    t = np.array([[0.5], [0.1]])
    for name in ("fredholm-1d-width", "volterra-1d-decay"):
        fam = family(name)
        assert isinstance(fam, ParametricFamily) and fam.dim == 1 and fam.params[-1] in fam.inputs
        a, b = (fam.problem(p).terms[0].kernel(x, t) for p in fam.sample(2, seed=1))
        assert np.abs(a - b).max() > 1e-3  # two instances, two kernels
    fine = family("fredholm-2d-fine")
    assert fine.dim == 2 and fine.query ** 2 >= 64 * 64


def test_a_parametric_family_draws_its_instances_from_seeded_streams():
    fam = family("fredholm-1d-width")
    ten = fam.sample(10, seed=3)
    np.testing.assert_array_equal(fam.sample(4, seed=3, start=5), ten[5:9])
    widths = fam.sample(300, seed=0)[:, -1]
    assert widths.min() >= 0.1 and widths.max() <= 1.0 and widths.std() > 0.2
    x = fam.domain.sample(11, seed=2)
    values = fam.f_values(ten[:3], x)
    for i, p in enumerate(ten[:3]):
        np.testing.assert_array_equal(values[i], fam.problem(p).f(x))


def _user_problem(p):
    # alpha(x) = 1 + a x, a kernel of width w: what Family cannot say
    a, w, c = p
    return Problem(Domain((0.0,), (1.0,)), f=lambda x: np.cos(c * x[..., 0]),
                   terms=[IntegralTerm(lambda x, t: np.exp(-(x - t)[..., 0] ** 2 / w), lam=0.4)],
                   alpha=lambda x: 1.0 + a * x[..., 0])


def _user_draw(rng):
    return np.array([rng.uniform(0.0, 1.0), rng.uniform(0.2, 1.0), rng.uniform(1.0, 3.0)])


def test_a_user_family_varies_alpha_and_the_kernel_and_gives_them_to_the_branch():
    fam = ParametricFamily("user", Domain((0.0,), (1.0,)), _user_problem, _user_draw,
                           params=("a", "w", "c"), inputs=("f", "alpha", "w"))
    p = fam.sample(3, seed=1)
    s = np.linspace(0, 1, 5)[:, None]
    inputs = fam.branch_inputs(fam.f_values(p, s), p, s)
    assert inputs.shape == (3, fam.n_inputs(5)) == (3, 11)
    np.testing.assert_allclose(inputs[:, 5:10], 1.0 + p[:, :1] * s[:, 0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(inputs[:, 10], p[:, 1])
    np.testing.assert_allclose(fam.skip_values(p, s), np.cos(p[:, 2:] * s[:, 0])
                               / (1.0 + p[:, :1] * s[:, 0]), rtol=1e-14)
    ref = fam.reference().solve(fam.problem(p[0]))  # the Nystrom reference solves it
    res = Nystrom(fam.reference_n + 8).residual(fam.problem(p[0]), ref)
    assert np.max(np.abs(res)) < 1e-9
    # a changed function is another family to a data set (its fingerprint differs)
    other = ParametricFamily("user", Domain((0.0,), (1.0,)), _user_problem,
                             lambda rng: _user_draw(rng) * 1.01, params=("a", "w", "c"))
    assert other.describe() != fam.describe()
    assert ParametricFamily("user", Domain((0.0,), (1.0,)), _user_problem, _user_draw,
                            params=("a", "w", "c"), inputs=("f", "alpha", "w")).describe() \
        == fam.describe()


def test_a_bad_parametric_family_is_refused_at_construction_with_the_field_named():
    box = Domain((0.0,), (1.0,))
    ok = dict(params=("a", "w", "c"))
    with pytest.raises(SpecError, match=r"inputs: 'width' is neither 'f', 'alpha' nor one of"):
        ParametricFamily("u", box, _user_problem, _user_draw, inputs=("f", "width"), **ok)
    with pytest.raises(SpecError, match=r"distribution of 'u' must return 3 finite numbers"):
        ParametricFamily("u", box, _user_problem, lambda rng: np.zeros(2), **ok)
    with pytest.raises(SpecError, match=r"distribution of 'u' must return 3 finite numbers"):
        ParametricFamily("u", box, _user_problem, lambda rng: np.array([0.5, np.nan, 1.0]), **ok)
    with pytest.raises(SpecError, match=r"ParametricFamily.problem_of of 'u' returned a problem "
                                        r"on"):
        ParametricFamily("u", Domain((0.0,), (2.0,)), _user_problem, _user_draw, **ok)
    with pytest.raises(SpecError, match=r"ParametricFamily.problem_of of 'u' failed: ZeroDiv"):
        ParametricFamily("u", box, lambda p: 1 / 0, _user_draw, **ok)
    with pytest.raises(SpecError, match=r"must return a daskie Problem, got dict"):
        ParametricFamily("u", box, lambda p: {}, _user_draw, **ok)
    with pytest.raises(SpecError, match=r"ParametricFamily.params must be distinct"):
        ParametricFamily("u", box, _user_problem, _user_draw, params=("a", "a", "c"))
    with pytest.raises(SpecError, match=r"ParametricFamily.distribution must be callable"):
        ParametricFamily("u", box, _user_problem, None, **ok)


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
