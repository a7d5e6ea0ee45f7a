"""The Nystrom reference solver against exact solutions."""

import numpy as np
import pytest

from daskie.errors import SpecError
from daskie.problems import Domain, IntegralTerm, Nonlinearity, Problem, catalog
from daskie.reference import NewtonDidNotConverge, Nystrom

UNIT1 = Domain((0.0,), (1.0,))

#: (n, max-error bound) per catalog problem; all converge spectrally (abel thanks to grading).
ACCURACY = {
    "E1": (16, 1e-12), "E2": (16, 1e-12), "E3": (16, 1e-12), "E4": (16, 1e-12),
    "abel": (16, 1e-12), "lshape": (16, 1e-10), "fredholm1d": (16, 1e-12),
    "volterra1d": (16, 1e-12), "nfredholm1d": (16, 1e-12), "nvolterra1d": (16, 1e-12),
    "fredholm3d": (10, 1e-12),
}


def max_error(problem, solution, points=200):
    x = problem.domain.sample(points, seed=7)
    return float(np.max(np.abs(solution(x) - problem.exact(x))))


def test_every_catalog_problem_has_a_bound():
    assert set(catalog.names()) - {"E4-noisy"} == set(ACCURACY)


@pytest.mark.parametrize("name", sorted(ACCURACY))
def test_catalog_problem_is_solved_to_its_bound(name):
    problem = catalog.get(name)
    n, bound = ACCURACY[name]
    solution = Nystrom(n=n).solve(problem)
    assert max_error(problem, solution) < bound
    assert solution.residual < 1e-12
    assert solution.n_unknowns == len(solution.values) == len(solution.nodes)
    assert solution.wall_s > 0


@pytest.mark.parametrize("name", ["E1", "volterra1d"])
def test_spectral_convergence(name):
    problem = catalog.get(name)
    errors = [max_error(problem, Nystrom(n=n).solve(problem)) for n in (4, 8, 12)]
    for coarse, fine in zip(errors, errors[1:]):
        assert fine < max(coarse / 100, 1e-13), errors


@pytest.mark.parametrize("name", ["abel", "E2", "lshape"])
def test_nystrom_interpolant_reproduces_the_nodal_values(name):
    solution = Nystrom(n=8).solve(catalog.get(name))
    np.testing.assert_allclose(solution(solution.nodes), solution.values, rtol=0, atol=1e-13)


def test_newton_iterates_for_nonlinear_and_not_for_linear_problems():
    assert Nystrom().solve(catalog.get("E3")).newton_iterations > 1
    assert Nystrom().solve(catalog.get("E1")).newton_iterations == 0
    assert Nystrom().solve(catalog.get("volterra1d")).newton_iterations == 0


def test_newton_that_cannot_converge_raises():
    with pytest.raises(NewtonDidNotConverge, match="max_newton=1"):
        Nystrom(max_newton=1).solve(catalog.get("E3"))


def _first_kind() -> Problem:
    # Int_0^1 e^(x t) mu(t) dt = (e^(x+1) - 1) / (x + 1), mu = e^t.
    return Problem(
        domain=UNIT1,
        f=lambda p: -(np.exp(p[..., 0] + 1.0) - 1.0) / (p[..., 0] + 1.0),
        terms=(IntegralTerm(lambda p, t: np.exp(p[..., 0] * t[..., 0])),),
        alpha=0.0,
        exact=lambda p: np.exp(p[..., 0]),
    )


def test_first_kind_is_solved_by_least_squares_at_small_n():
    problem = _first_kind()
    assert max_error(problem, Nystrom(n=6).solve(problem)) < 1e-4
    # Ill-posed: refining makes it worse once rounding dominates.
    assert max_error(problem, Nystrom(n=12).solve(problem)) > 1e-2


def test_nonlinear_first_kind_is_rejected():
    term = IntegralTerm(lambda p, t: np.exp(p[..., 0] * t[..., 0]), nonlinearity=Nonlinearity.power(2))
    problem = Problem(UNIT1, f=lambda p: p[..., 0], terms=(term,), alpha=0.0)
    with pytest.raises(SpecError, match="first-kind"):
        Nystrom(n=4).solve(problem)


def test_weakly_singular_fredholm_term_is_split_at_x():
    # mu = x; Int_0^1 |x-t|^(-1/2) t dt = 4/3 x^(3/2) + 2 x (1-x)^(1/2) + 2/3 (1-x)^(3/2).
    def integral(p):
        x = p[..., 0]
        return 4 / 3 * x**1.5 + 2 * x * np.sqrt(1 - x) + 2 / 3 * (1 - x) ** 1.5

    problem = Problem(
        domain=UNIT1,
        f=lambda p: p[..., 0] - 0.1 * integral(p),
        terms=(IntegralTerm(lambda p, t: np.ones(np.broadcast_shapes(p.shape, t.shape)[:-1]),
                            lam=0.1, singularity=0.5),),
        exact=lambda p: p[..., 0],
    )
    assert max_error(problem, Nystrom(n=8).solve(problem)) < 1e-13


def test_noisy_solve_uses_one_fixed_draw():
    problem = catalog.get("E4-noisy")
    x = problem.domain.sample(200, seed=7)
    clean = Nystrom().solve(problem)
    noisy = Nystrom().solve(problem, noisy=True)
    again = Nystrom().solve(problem, noisy=True)
    assert max_error(problem, clean) < 1e-12
    assert np.max(np.abs(noisy(x) - clean(x))) > 1e-2
    np.testing.assert_array_equal(noisy.values, again.values)
    assert noisy.noisy and not clean.noisy


def test_noisy_without_noise_is_rejected():
    with pytest.raises(SpecError, match="noise"):
        Nystrom(n=4).solve(catalog.get("E1"), noisy=True)


@pytest.mark.parametrize("n", [1, 0, "a", 2.5, True])
def test_bad_n_is_rejected(n):
    with pytest.raises(SpecError, match=r"\bn must"):
        Nystrom(n=n)


def test_evaluation_checks_its_points():
    solution = Nystrom(n=4).solve(catalog.get("lshape"))
    with pytest.raises(SpecError, match="outside"):
        solution(np.array([[0.75, 0.75]]))
    with pytest.raises(SpecError, match="shape"):
        solution(np.array([0.1, 0.2]))
