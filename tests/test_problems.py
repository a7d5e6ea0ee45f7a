"""Problem specifications, domains, quadrature rules and the catalog.

Validation: every error path raises :class:`SpecError` with a message naming the field.
Mathematics: every catalog problem's ``exact`` satisfies its equation, checked with
quadrature rules independent of the ones the formulations use.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from daskie.errors import SpecError
from daskie.problems import VOLTERRA, Domain, IntegralTerm, Noise, Nonlinearity, Problem, catalog
from daskie.quadrature import domain_rule, gauss_jacobi, gauss_legendre, tensor_rule

UNIT1 = Domain((0.0,), (1.0,))
UNIT2 = Domain((0.0, 0.0), (1.0, 1.0))
LSHAPE = Domain((0.0, 0.0), (1.0, 1.0), holes=[((0.5, 0.5), (1.0, 1.0))])


def _x(p):
    return p[..., 0]


def _ones(p, t):
    return np.ones(np.broadcast_shapes(p.shape, t.shape)[:-1])


def _fredholm(domain=UNIT1, **term):
    """A valid problem on ``domain`` whose single term takes the options ``term``."""
    return Problem(domain=domain, f=_x, terms=(IntegralTerm(_ones, **term),))


# --- Domain validation --------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(lower=("a",), upper=(1.0,)), r"domain\.lower must be a sequence of numbers"),
    (dict(lower=(0.0,), upper=(object(),)), r"domain\.upper must be a sequence of numbers"),
    (dict(lower=(0.0,), upper=(math.inf,)), r"domain\.upper must be finite"),
    (dict(lower=(0.0, 0.0), upper=(1.0,)), r"domain\.lower has 2 coordinates but domain\.upper has 1"),
    (dict(lower=(1.0,), upper=(1.0,)), r"domain is empty: need lower < upper"),
    (dict(lower=(0.0, 2.0), upper=(1.0, 1.0)), r"domain is empty: need lower < upper"),
    (dict(lower=(0.0,), upper=(1.0,), holes=[((0.0,), (1.0,))]), r"holes cover the whole box"),
    (dict(lower=(0.0,), upper=(1.0,), holes=[((-1.0,), (2.0,))]), r"holes cover the whole box"),
    (dict(lower=(0.0, 0.0), upper=(1.0, 1.0), holes=[((0.0, 0.0), (1.0, 0.5)),
                                                      ((0.0, 0.5), (1.0, 1.0))]),
     r"holes cover the whole box"),
    (dict(lower=(0.0, 0.0), upper=(1.0, 1.0), holes=[((0.5,), (1.0,))]),
     r"domain\.holes\[0\] must have 2 coordinates"),
    (dict(lower=(0.0, 0.0), upper=(1.0, 1.0), holes=[(0.5, 0.5, 1.0)]),
     r"domain\.holes\[0\] must be a \(lower, upper\) pair"),
    (dict(lower=(0.0, 0.0), upper=(1.0, 1.0), holes=[((0.6, 0.5), (0.6, 1.0))]),
     r"domain\.holes\[0\] is empty"),
    (dict(lower=(0.0, 0.0), upper=(1.0, 1.0), holes=[((0.5, "b"), (1.0, 1.0))]),
     r"domain\.holes\[0\]\.lower must be a sequence of numbers"),
])
def test_domain_validation(kwargs, match):
    with pytest.raises(SpecError, match=match):
        Domain(**kwargs)


def test_domain_sample_rejects_nonpositive_counts():
    with pytest.raises(SpecError, match="number of points must be positive"):
        UNIT1.sample(0)


# --- Problem, IntegralTerm, Nonlinearity and Noise validation -----------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(domain=((0.0,), (1.0,))), r"domain must be a daskie Domain, got tuple"),
    (dict(f=3.0), r"f must be callable"),
    (dict(terms=()), r"terms must hold at least one IntegralTerm"),
    (dict(terms=[]), r"terms must hold at least one IntegralTerm"),
    (dict(terms=(_ones,)), r"terms\[0\] must be an IntegralTerm, got function"),
    (dict(alpha=math.nan), r"alpha must be a finite number or a callable"),
    (dict(alpha=math.inf), r"alpha must be a finite number or a callable"),
    (dict(exact=2.0), r"exact must be callable or None"),
    (dict(noise=0.05), r"noise must be a daskie Noise, got float"),
    # f returning (n, 1) or (n, 2) instead of (n,)
    (dict(f=lambda p: p), r"f must return one value per point: expected shape \(512,\)"),
    (dict(f=lambda p: np.stack([_x(p), _x(p)], -1)), r"f must return one value per point"),
    (dict(alpha=lambda p: p), r"alpha must return one value per point"),
    (dict(exact=lambda p: _x(p)[:3]), r"exact must return one value per point"),
    (dict(f=lambda p: np.where(_x(p) > 0.5, np.inf, 1.0)), r"f is not finite on the domain"),
    (dict(exact=lambda p: np.full(_x(p).shape, np.nan)), r"exact is not finite on the domain"),
    (dict(alpha=lambda p: np.full(_x(p).shape, -np.inf)), r"alpha is not finite on the domain"),
])
def test_problem_validation(kwargs, match):
    spec = dict(domain=UNIT1, f=_x, terms=(IntegralTerm(_ones),))
    spec.update(kwargs)
    with pytest.raises(SpecError, match=match):
        Problem(**spec)


@pytest.mark.filterwarnings("ignore:invalid value encountered in log:RuntimeWarning")
def test_f_with_nan_from_numpy_on_the_domain_is_rejected():
    # log(x - 2) is NaN everywhere on [0, 1]; numpy warns, the spec must still refuse it.
    with pytest.raises(SpecError, match=r"f is not finite on the domain"):
        Problem(domain=UNIT1, f=lambda p: np.log(_x(p) - 2.0), terms=(IntegralTerm(_ones),))


def test_non_numeric_alpha_is_a_spec_error():
    with pytest.raises(SpecError, match=r"alpha"):
        Problem(domain=UNIT1, f=_x, terms=(IntegralTerm(_ones),), alpha="abc")


@pytest.mark.parametrize("term, domain, match", [
    (dict(kernel=2.0), UNIT1, r"terms\[0\]\.kernel must be callable"),
    (dict(kernel=lambda p, t: np.where(_x(t) > _x(p), np.inf, 1.0)), UNIT1,
     r"terms\[0\]\.kernel is not finite on the domain"),
    (dict(kernel=lambda p, t: np.stack([_x(p), _x(t)], -1)), UNIT1,
     r"terms\[0\]\.kernel must return one value per point"),
    (dict(lam="a"), UNIT1, r"terms\[0\]\.lam must be one number per term, got 'a'"),
    (dict(lam=[1.0, 2.0]), UNIT1, r"terms\[0\]\.lam must be one number per term, got \[1\.0, 2\.0\]"),
    (dict(lam=None), UNIT1, r"terms\[0\]\.lam must be one number per term"),
    (dict(lam=math.nan), UNIT1, r"terms\[0\]\.lam must be finite"),
    (dict(lam=-math.inf), UNIT1, r"terms\[0\]\.lam must be finite"),
    (dict(lower=(0.0, 0.0)), UNIT1, r"terms\[0\]\.lower has 2 limits but the domain has 1"),
    (dict(upper=(1.0,)), UNIT2, r"terms\[0\]\.upper has 1 limits but the domain has 2"),
    (dict(upper=("y", 1.0)), UNIT2, r"terms\[0\]\.upper\[0\] = 'y' names no coordinate"),
    (dict(upper=(1.0, "x2")), UNIT2, r"terms\[0\]\.upper\[1\] = 'x2' names no coordinate"),
    (dict(upper=(VOLTERRA, VOLTERRA)), LSHAPE, r"terms\[0\]: Volterra limits on a domain with holes"),
    (dict(lower=(0.2,), upper=(VOLTERRA,)), UNIT1, r"terms\[0\]\.lower\[0\] = 0\.2 lies above"),
    (dict(lower=(0.5,), upper=(0.5,)), UNIT1, r"terms\[0\]: lower\[0\] = 0\.5 must be below upper\[0\]"),
    (dict(lower=(-0.5,)), UNIT1, r"terms\[0\] integrates coordinate 0 over \[-0\.5, 1\.0\], outside"),
    (dict(upper=(1.0, 2.0)), UNIT2, r"terms\[0\] integrates coordinate 1 over \[0\.0, 2\.0\], outside"),
    (dict(nonlinearity=lambda u: u**2), UNIT1, r"terms\[0\]\.nonlinearity must be a Nonlinearity"),
    (dict(singularity=1.0), UNIT1, r"terms\[0\]\.singularity must be in \[0, 1\)"),
    (dict(singularity=-0.1), UNIT1, r"terms\[0\]\.singularity must be in \[0, 1\)"),
    (dict(singularity=0.5, upper=(VOLTERRA, VOLTERRA)), UNIT2,
     r"terms\[0\]\.singularity is supported for 1-D terms only \(d = 2\)"),
])
def test_integral_term_validation(term, domain, match):
    term = {"kernel": _ones, **term}
    with pytest.raises(SpecError, match=match):
        Problem(domain=domain, f=_x, terms=(IntegralTerm(**term),))


def test_errors_name_the_offending_term():
    good = IntegralTerm(_ones)
    with pytest.raises(SpecError, match=r"terms\[1\]\.lam must be finite"):
        Problem(domain=UNIT1, f=_x, terms=(good, IntegralTerm(_ones, lam=math.nan)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(f_sigma=-0.1), r"noise\.f_sigma must be a finite number >= 0"),
    (dict(f_sigma=math.inf), r"noise\.f_sigma must be a finite number >= 0"),
    (dict(f_sigma=math.nan), r"noise\.f_sigma must be a finite number >= 0"),
    (dict(lam_spread=1.0), r"noise\.lam_spread must be in \[0, 1\)"),
    (dict(lam_spread=-0.1), r"noise\.lam_spread must be in \[0, 1\)"),
])
def test_noise_validation(kwargs, match):
    with pytest.raises(SpecError, match=match):
        Noise(**kwargs)


def test_noise_draw_is_seeded_and_bounded():
    f = np.linspace(-2.0, 1.0, 50)
    noise = Noise(f_sigma=0.1, lam_spread=0.2)
    a = noise.draw(f, 3, np.random.default_rng(4))
    b = noise.draw(f, 3, np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.all((a[1] >= 0.8) & (a[1] <= 1.2))
    # 50 draws of N(0, 0.1 * max|f| = 0.2): the sample std lies within 40% of 0.2.
    assert 0.12 < np.std(a[0] - f) < 0.28


def test_validated_terms_fill_in_the_domain_limits():
    problem = Problem(domain=UNIT2, f=_x, terms=IntegralTerm(_ones, lam=2, upper=(VOLTERRA, 1)))
    (term,) = problem.terms
    assert term.lam == 2.0 and isinstance(term.lam, float)
    assert term.lower == (0.0, 0.0) and term.upper == (VOLTERRA, 1.0)
    assert term.volterra_axes == (0,) and not term.is_fredholm
    np.testing.assert_array_equal(term.upper_limits(np.array([[0.3, 0.7]])), [[0.3, 1.0]])


def test_catalog_get_unknown_name_lists_the_names():
    with pytest.raises(SpecError, match=r"unknown problem 'nope'") as info:
        catalog.get("nope")
    for name in catalog.names():
        assert name in str(info.value)


def test_catalog_get_is_case_insensitive():
    assert catalog.get("e1").name == "E1"
    assert catalog.get("LSHAPE").name == "lshape"


# --- every catalog problem's exact solution satisfies its equation --------------------------
def _abel_integral(term, x, mu):
    """Int_a^x (x - t)^(-1/2) g(x, t) mu(t) dt with t = a + (x - a) sin^2(phi): the Jacobian
    cancels the kernel's singularity at t = x and smooths sqrt(t - a) behaviour at t = a, so
    plain Gauss-Legendre in phi converges spectrally."""
    assert term.singularity == 0.5 and term.volterra_axes == (0,)
    a = term.lower[0]
    phi, w = gauss_legendre(40, 0.0, 0.5 * np.pi)
    h = x[0] - a
    t = (a + h * np.sin(phi) ** 2)[:, None]
    integrand = 2.0 * np.sqrt(h) * np.sin(phi) * term.kernel(x[None, :], t) * term.nonlinearity(mu(t))
    return float(w @ integrand)


def _integrals(problem, term, x, mu):
    """Int_{a}^{b(x)} K(x, T) M(mu(T)) dT at the points x, by rules the formulations do not use."""
    if term.singularity > 0:
        return np.array([_abel_integral(term, xi, mu) for xi in x])
    if not problem.domain.is_box:
        # A different node count from the 28 the catalog manufactures lshape's f with.
        rules = [domain_rule(problem.domain, 20)] * len(x)
    elif term.is_fredholm:
        rules = [tensor_rule(30 if problem.dim < 3 else 16, term.lower, term.upper)] * len(x)
    else:
        rules = [tensor_rule(30, term.lower, b) for b in term.upper_limits(x)]
    return np.array([w @ (term.kernel(xi[None, :], nodes) * term.nonlinearity(mu(nodes)))
                     for xi, (nodes, w) in zip(x, rules)])


def _held_out_points(domain, n=20, seed=2024):
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(domain.lower), np.asarray(domain.upper)
    x = lo + (hi - lo) * rng.random((4 * n, domain.dim))
    return x[domain.contains(x)][:n]


def _residual(problem, mu, x):
    """alpha mu - f - sum_i lam_i Int K_i M_i(mu) at the points x."""
    rhs = problem.f(x) + sum(term.lam * _integrals(problem, term, x, mu) for term in problem.terms)
    return problem.alpha_at(x) * mu(x) - rhs


@pytest.mark.parametrize("name", catalog.names())
def test_catalog_exact_solution_satisfies_the_equation(name):
    problem = catalog.get(name)
    assert problem.exact is not None
    x = _held_out_points(problem.domain)
    assert len(x) == 20
    # E4-noisy: the noise is drawn at discretization; f, lam and exact are E4's clean ones.
    residual = _residual(problem, problem.exact, x)
    # Every integrand is analytic on its box (abel's after the substitution), so 30-point
    # rules are at rounding level: 1e-12 leaves room for rounding and catches any error in
    # f, lam or exact larger than that.
    assert np.max(np.abs(residual)) < 1e-12, residual


def test_nfredholm1d_has_a_second_solution():
    # mu = e^x + b x solves mu = e^x - x (e^2+1)/8 + x/2 Int_0^1 t mu^2 dt iff
    # b = b (e - 2) + b^2 / 8, i.e. b = 0 (the catalog's exact) or b = 8 (3 - e). Training
    # can land on either (a network found the second one at loss 1e-13, MSE 1.69 = b^2/3).
    problem = catalog.get("nfredholm1d")
    x = _held_out_points(problem.domain)
    other = lambda p: np.exp(_x(p)) + 8 * (3 - np.e) * _x(p)  # noqa: E731
    assert np.max(np.abs(_residual(problem, other, x))) < 1e-12
    wrong = lambda p: np.exp(_x(p)) + 2.0 * _x(p)  # noqa: E731
    assert np.max(np.abs(_residual(problem, wrong, x))) > 1e-2


def test_catalog_noisy_problem_keeps_the_clean_data():
    clean, noisy = catalog.get("E4"), catalog.get("E4-noisy")
    x = _held_out_points(UNIT2)
    assert noisy.noise == Noise(f_sigma=0.05, lam_spread=0.1, seed=0) and clean.noise is None
    np.testing.assert_array_equal(noisy.f(x), clean.f(x))
    assert noisy.terms[0].lam == clean.terms[0].lam


# --- domains -----------------------------------------------------------------------------
@pytest.mark.parametrize("domain", [UNIT1, UNIT2, LSHAPE, Domain((-1.0, 2.0, 0.0), (0.0, 3.0, 0.5))])
def test_domain_sample_is_inside_distinct_and_seeded(domain):
    x = domain.sample(300, seed=3)
    assert x.shape == (300, domain.dim)
    assert np.all(domain.contains(x))
    assert len(np.unique(x, axis=0)) == 300
    np.testing.assert_array_equal(x, domain.sample(300, seed=3))
    assert not np.array_equal(x, domain.sample(300, seed=4))


def test_lshape_sample_covers_the_l_evenly():
    x = LSHAPE.sample(3000, seed=1)
    # Each of the three unit-half squares holds a third of the area, so about a third of a
    # quasi-uniform sample.
    for lo in [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5)]:
        frac = np.mean(np.all((x >= lo) & (x < np.add(lo, 0.5)), axis=1))
        assert abs(frac - 1 / 3) < 0.02


def test_contains_excludes_the_open_hole_but_keeps_its_boundary():
    inside_hole = [[0.75, 0.75], [0.51, 0.99], [0.9, 0.6]]
    # the closure of the L: the hole's inner faces belong to it ...
    boundary = [[0.5, 0.75], [0.75, 0.5], [0.5, 0.5], [1.0, 0.5], [0.5, 1.0]]
    # ... but not the hole's faces on the outer box, which no point of the L comes near
    hole_on_box = [[1.0, 0.75], [0.75, 1.0], [1.0, 1.0]]
    rest = [[0.25, 0.25], [0.25, 0.9], [0.9, 0.25], [0.0, 0.0]]
    outside_box = [[-0.1, 0.2], [0.2, 1.01]]
    assert not LSHAPE.contains(inside_hole).any()
    assert not LSHAPE.contains(hole_on_box).any()
    assert LSHAPE.contains(boundary).all()
    assert LSHAPE.contains(rest).all()
    assert not LSHAPE.contains(outside_box).any()
    assert UNIT2.contains(inside_hole).all()


@pytest.mark.parametrize("domain, volume, n_cells", [
    (UNIT2, 1.0, 1),
    (LSHAPE, 0.75, 3),
    (Domain((0.0, 0.0), (2.0, 1.0), holes=[((0.5, 0.25), (1.0, 0.75))]), 1.75, 8),
    (Domain((0.0, 0.0), (1.0, 1.0), holes=[((-1.0, 0.5), (2.0, 2.0))]), 0.5, 1),
])
def test_cells_tile_the_domain(domain, volume, n_cells):
    cells = domain.cells()
    assert len(cells) == n_cells
    assert sum(np.prod(np.subtract(hi, lo)) for lo, hi in cells) == pytest.approx(volume, abs=1e-15)
    assert domain.volume == pytest.approx(volume, abs=1e-15)
    # The cells lie in the domain and cover it: every sample point is in exactly one
    # closed cell, except points on a shared face (measure zero, not drawn).
    x = domain.sample(500, seed=9)
    counts = sum(np.all((x >= lo) & (x <= hi), axis=1).astype(int) for lo, hi in cells)
    assert np.all(counts == 1)
    for lo, hi in cells:
        assert domain.contains(0.5 * (np.asarray(lo) + np.asarray(hi)))


def test_domain_rule_integrates_over_the_l_shape():
    nodes, w = domain_rule(LSHAPE, 4)
    assert np.all(LSHAPE.contains(nodes))
    assert w.sum() == pytest.approx(0.75, abs=1e-14)
    # Int_L x^2 y dA = Int_square - Int_hole = 1/6 - (7/24)(3/8)
    assert w @ (nodes[:, 0] ** 2 * nodes[:, 1]) == pytest.approx(1 / 6 - 7 / 64, abs=1e-14)


# --- quadrature rules --------------------------------------------------------------------
def _singular_moment(k):
    """Int_{-1}^1 (1-u)^(-1/2) u^k du, exactly: expand u^k = ((1+u) - 1)^k and use
    Int (1-u)^(-1/2) (1+u)^j du = 2^(j+1/2) B(1/2, j+1), B(1/2, j+1) = 2 4^j (j!)^2 / (2j+1)!.
    The alternating sum is done in rationals, so it loses nothing to cancellation."""
    total = sum(Fraction(math.comb(k, j) * (-1) ** (k - j) * 2**j * 2 * 4**j * math.factorial(j) ** 2,
                         math.factorial(2 * j + 1)) for j in range(k + 1))
    return math.sqrt(2.0) * float(total)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_gauss_jacobi_is_exact_for_polynomials_against_the_singular_weight(n):
    u, w = gauss_jacobi(n, -0.5, 0.0)
    assert len(u) == n and np.all(np.abs(u) < 1) and np.all(w > 0)
    assert _singular_moment(0) == pytest.approx(2 * math.sqrt(2.0), rel=1e-15)
    for k in range(2 * n):
        assert w @ u**k == pytest.approx(_singular_moment(k), rel=1e-13, abs=1e-14), k
    # ... and not beyond its degree 2n - 1 (the rule is Gaussian, not better).
    assert abs(w @ u ** (2 * n) - _singular_moment(2 * n)) > 1e-6


def test_gauss_jacobi_with_both_exponents_matches_the_beta_function():
    a, b = -0.3, 0.7
    u, w = gauss_jacobi(8, a, b)
    # Int (1-u)^a (1+u)^b (1+u)^2 du = 2^(a+b+3) B(a+1, b+3)
    exact = 2 ** (a + b + 3) * math.exp(math.lgamma(a + 1) + math.lgamma(b + 3) - math.lgamma(a + b + 4))
    assert w @ (1 + u) ** 2 == pytest.approx(exact, rel=1e-13)


def test_gauss_jacobi_rejects_non_integrable_weights():
    with pytest.raises(ValueError, match="alpha, beta > -1"):
        gauss_jacobi(4, -1.0, 0.0)


def test_tensor_rule_is_exact_for_polynomials():
    n = 3  # exact up to degree 5 in each coordinate
    nodes, w = tensor_rule(n, (0.0, -1.0, 1.0), (2.0, 0.5, 1.5))
    assert nodes.shape == (27, 3)
    x, y, z = nodes.T
    # Int_0^2 x^5 dx * Int_-1^0.5 y^4 dy * Int_1^1.5 z^3 dz
    exact = (2**6 / 6) * ((0.5**5 + 1) / 5) * ((1.5**4 - 1) / 4)
    assert w @ (x**5 * y**4 * z**3) == pytest.approx(exact, rel=1e-13)
    assert w.sum() == pytest.approx(2.0 * 1.5 * 0.5, rel=1e-14)
    # degree 6 in x is beyond 3 Gauss points
    assert abs(w @ x**6 - (2**7 / 7) * 1.5 * 0.5) > 1e-3


def test_tensor_rule_takes_a_count_per_coordinate():
    nodes, w = tensor_rule((2, 5), (0.0, 0.0), (1.0, 1.0))
    assert nodes.shape == (10, 2)
    assert w @ (nodes[:, 1] ** 9) == pytest.approx(0.1, rel=1e-13)


# --- nonlinearities ----------------------------------------------------------------------
def test_power_nonlinearity_and_its_derivative_on_numpy_and_torch():
    square = Nonlinearity.power(2)
    u = np.array([-1.5, 0.0, 0.25, 3.0])
    assert isinstance(square(u), np.ndarray) and isinstance(square.grad(u), np.ndarray)
    np.testing.assert_allclose(square(u), u**2, rtol=1e-15)
    np.testing.assert_allclose(square.grad(u), 2 * u, rtol=1e-15)
    ut = torch.tensor(u)
    assert isinstance(square.grad(ut), torch.Tensor)
    torch.testing.assert_close(square.grad(ut), 2 * ut, rtol=1e-15, atol=0)
    assert not square.linear
    assert Nonlinearity.power(1).linear and Nonlinearity.power(1).name == "identity"


def test_custom_nonlinearity_gets_its_derivative_by_autograd():
    m = Nonlinearity(torch.sin, name="sin")
    u = np.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(m.grad(u), np.cos(u), rtol=1e-14, atol=1e-15)
    ut = torch.tensor(u, requires_grad=True)
    g = m.grad(ut)
    torch.testing.assert_close(g, torch.cos(ut.detach()), rtol=1e-14, atol=1e-15)
    assert not g.requires_grad  # the derivative is data, detached from the input graph
    np.testing.assert_allclose(Nonlinearity(lambda v: v**3).grad(u), 3 * u**2, rtol=1e-14)


@pytest.mark.parametrize("m, fn, dfn", [
    (Nonlinearity.identity(), lambda u: u, lambda u: np.ones_like(u)),
    (Nonlinearity.sin(), np.sin, np.cos),
    (Nonlinearity.exp(), np.exp, np.exp),
    (Nonlinearity.power(3), lambda u: u**3, lambda u: 3 * u**2),
])
def test_builtin_nonlinearities_match_numpy(m, fn, dfn):
    u = np.linspace(-2.0, 2.0, 9)
    np.testing.assert_allclose(m(u), fn(u), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(m.grad(u), dfn(u), rtol=1e-14, atol=1e-15)


# --- data checked where it is used (issue 16) ----------------------------------------------
def test_check_values_names_the_field_on_the_points_a_discretization_evaluates():
    # f is NaN on a sliver [0.9, 0.9005] that construction's samples may miss, but a
    # discretization evaluating a point there must refuse it, naming f.
    problem = Problem(domain=UNIT1, f=lambda p: np.where(np.abs(_x(p) - 0.90025) < 2.5e-4,
                                                         np.nan, _x(p)),
                      terms=(IntegralTerm(_ones),))
    x = np.array([[0.1], [0.9002], [0.5]])
    with pytest.raises(SpecError, match=r"^f is not finite on the domain: NaN or inf at 1 of "
                                        r"the 3 points .*index \(1,\)"):
        problem.check_values(x)
    np.testing.assert_array_equal(problem.f_at(x[[0, 2]]), [0.1, 0.5])


def test_kernels_are_checked_on_shared_and_per_point_nodes():
    # inf on a sliver of t that construction's samples miss
    kernel = lambda p, t: np.where(np.abs(t[..., 0] - 0.99731) < 1e-6, np.inf,  # noqa: E731
                                   1.0 + 0 * p[..., 0])
    problem = Problem(domain=UNIT1, f=_x, terms=(IntegralTerm(_ones), IntegralTerm(kernel)))
    x = np.array([[0.2], [0.4]])
    problem.check_values(x, np.array([[0.1], [0.5]]))
    with pytest.raises(SpecError, match=r"terms\[1\]\.kernel is not finite"):
        problem.check_values(x, np.array([[0.1], [0.99731]]))
    with pytest.raises(SpecError, match=r"terms\[1\]\.kernel is not finite"):
        problem.check_values(x, np.array([[[0.1], [0.2]], [[0.3], [0.99731]]]))
    values = problem.kernel_at(0, x[:, None, :], np.array([[0.1], [0.5], [0.7]])[None])
    assert values.shape == (2, 3) and values.dtype == np.float64
    with pytest.raises(SpecError, match=r"nodes must have shape"):
        problem.check_values(x, np.zeros((3, 2)))


def test_check_values_refuses_complex_without_a_complex_warning():
    # warnings are errors in this suite: a ComplexWarning would fail the test as well.
    from daskie.problems.validate import check_values

    for values in (np.array([1.0 + 0j, 2.0]), 0.1j):
        with pytest.raises(SpecError, match=r"^K returned complex values"):
            check_values(values, (2,), "K")
    with pytest.raises(SpecError, match=r"^K returned non-numeric values \(dtype <U1\)"):
        check_values(np.array(["a", "b"]), (2,), "K")
    with pytest.raises(SpecError, match=r"^K returned non-numeric values \(objects"):
        check_values(np.array(["a", 1.0], dtype=object), (2,), "K")
    np.testing.assert_array_equal(check_values(np.array([True, False]), (2,), "K"), [1.0, 0.0])
    with pytest.raises(SpecError, match=r"^K returned a scalar \(int\).*expected shape \(2,\)"):
        check_values(3, (2,), "K")  # used as an array later: a scalar is refused here
    np.testing.assert_array_equal(check_values(3, (), "K"), 3.0)


def test_volterra_kernels_are_checked_only_below_the_diagonal():
    # sqrt(x - t) is real on the integration region t <= x, NaN above it.
    with np.errstate(invalid="ignore"):
        problem = Problem(domain=UNIT1, f=_x,
                          terms=(IntegralTerm(lambda p, t: np.sqrt(p[..., 0] - t[..., 0]),
                                              upper=(VOLTERRA,)),))
    assert problem.terms[0].volterra_axes == (0,)


def test_nonlinearity_is_probed_at_construction():
    assert Nonlinearity(torch.tanh, name="tanh").grad(np.array([0.0]))[0] == 1.0
    Nonlinearity(lambda u: u**3, lambda u: 3 * u**2, name="cube")
    cases = [
        (lambda u: np.sin(u), "raised .* on a torch tensor"),
        (lambda u: u.sum(), r"elementwise: a tensor of shape \(3, 4\) gave shape \(\)"),
        (lambda u: 2.0, "returned float, not a torch tensor"),
        (lambda u: torch.log(u), r"not real and finite on values in \[-1, 1\]"),
        (lambda u: torch.as_tensor(u.detach().numpy() ** 2), "cannot be differentiated"),
    ]
    for fn, match in cases:
        with pytest.raises(SpecError, match=f"^Nonlinearity 'bad'.*{match}"):
            Nonlinearity(fn, name="bad")
    with pytest.raises(SpecError, match=r"'bad'\.derivative must return a tensor"):
        Nonlinearity(torch.sin, lambda u: 1.0, name="bad")
    with pytest.raises(SpecError, match=r"Nonlinearity.name must be a non-empty str"):
        Nonlinearity(torch.sin, name=3)


def test_empty_domain_and_argument_types_are_named():
    with pytest.raises(SpecError, match="domain must have at least one coordinate"):
        Domain((), ())
    with pytest.raises(SpecError, match=r"^name must be a str, got 3"):
        Problem(domain=UNIT1, f=_x, terms=(IntegralTerm(_ones),), name=3)
    with pytest.raises(SpecError, match=r"terms\[0\]\.lam must be one number per term, got '2'"):
        _fredholm(lam="2")
    with pytest.raises(SpecError, match=r"terms\[0\]\.lower\[0\] must be a number, got 'a'"):
        _fredholm(lower=("a",))
    with pytest.raises(SpecError, match=r"terms\[0\]\.upper must be a sequence"):
        _fredholm(upper=1.0)
    with pytest.raises(SpecError, match=r"terms\[0\]\.singularity must be a number"):
        _fredholm(singularity="0.5")
    with pytest.raises(SpecError, match=r"^alpha must be a finite number or a callable"):
        Problem(domain=UNIT1, f=_x, terms=(IntegralTerm(_ones),), alpha=True)


def test_units_are_validated_and_described_only_when_given():
    problem = Problem(domain=UNIT1, f=_x, terms=(IntegralTerm(_ones),), units={"x": "m", "mu": "K"})
    assert problem.describe()["units"] == {"x": "m", "mu": "K"}
    assert "units" not in Problem(domain=UNIT1, f=_x, terms=(IntegralTerm(_ones),)).describe()
    with pytest.raises(SpecError, match=r"^units must be a dict of \['mu', 'x', 'x0'\]"):
        Problem(domain=UNIT1, f=_x, terms=(IntegralTerm(_ones),), units={"y": "m"})
