"""``QuadratureCollocation(ansatz="second-kind")``: the network learns the integral terms and
``mu = (f + net) / alpha`` (:class:`daskie.formulations.quadrature.SecondKind`). Its residuals
are the plain formulation's at that mu, its Jacobian is their derivative, a solve meets the
exact solution, serial == LocalCluster, and an equation without ``alpha`` is refused by name."""


import cloudpickle
import numpy as np
import pytest
import torch

import daskie
from daskie import MLP, DataParallel, LevenbergMarquardt, Monolithic, QuadratureCollocation
from daskie.errors import SpecError
from daskie.formulations.quadrature import SecondKind
from daskie.problems import Domain, IntegralTerm, Problem
from daskie.problems.nonseparable import build
from daskie.train.objective import Objective

CASES = [("hd-bumps-fredholm", {"shared_rule": "smolyak", "level": 3}),
         ("hd-bumps-mixed", {"local_level": 2}),
         ("hd-bumps-volterra", {"local_level": 2, "separable": "never"})]


def _form(ansatz, block_mb=None, **kw):
    return QuadratureCollocation(net=MLP(hidden=(8, 8)), points=60, test_points=16,
                                 block_mb=block_mb, ansatz=ansatz, **kw)


@pytest.mark.parametrize("block_mb", [None, 0.05])
@pytest.mark.parametrize("family,kw", CASES)
def test_residuals_are_the_plain_ones_at_mu_equal_f_plus_net_over_alpha(family, kw, block_mb):
    p = build(family, 4)
    plain = _form("mu", **kw).discretize(p)
    second = _form("second-kind", block_mb, **kw).discretize(p)
    theta = Objective(second).init_params(5)
    values = {}
    for key, ev in second.evaluations.items():
        x = ev.points.numpy()
        g = second.submodels["mu"].net.apply(theta, ev.points)
        values[key] = (torch.as_tensor(p.f_at(x)) + g) / torch.as_tensor(p.alpha_at(x))
    want = plain.residual_fn(values)["equation"]
    with torch.no_grad():
        got = second.residual_fn(Objective(second).values(theta))["equation"]
    assert torch.allclose(got, want, rtol=0, atol=1e-13 * float(want.abs().max()))


@pytest.mark.parametrize("family,kw", CASES)
def test_jacobian_is_the_derivative_of_the_residuals(family, kw):
    p = build(family, 3)
    obj = Objective(_form("second-kind", 0.05, **kw).discretize(p))
    theta = obj.init_params(2)
    r, jac = obj.jacobian(theta)
    h = 1e-6
    for k in (0, 7, len(theta) - 1):
        e = torch.zeros_like(theta)
        e[k] = h
        fd = (obj.jacobian(theta + e)[0] - obj.jacobian(theta - e)[0]) / (2 * h)
        assert torch.allclose(jac[:, k], fd, rtol=0, atol=1e-7 * max(1.0, float(fd.abs().max())))


def _peaked_f_problem(alpha=2.0):
    """2 mu(x) - 0.5 Int_0^1 exp(x t) mu(t) dt = f with mu = x + exp(-(x - 0.4)^2 / 0.002): a
    peak 0.03 wide that an 8 x 8 network cannot follow, carried by f; the integral term is
    smooth (its exact value by a 400-node Gauss rule, converged to rounding)."""
    from daskie.quadrature import gauss_legendre

    nodes, weights = gauss_legendre(400, 0.0, 1.0)

    def exact(x):
        x = x[..., 0]
        return x + np.exp(-(x - 0.4) ** 2 / 0.002)

    def f(x):
        xs = x[..., 0]
        integral = (np.exp(xs[..., None] * nodes) * exact(nodes[:, None])) @ weights
        return alpha * exact(x) - 0.5 * integral

    return Problem(domain=Domain((0.0,), (1.0,)), f=f, alpha=alpha, exact=exact,
                   terms=(IntegralTerm(kernel=lambda x, t: np.exp(x[..., 0] * t[..., 0]),
                                       lam=0.5),), name="peaked-f")


def test_a_solve_meets_a_peaked_solution_that_the_plain_ansatz_cannot():
    p = _peaked_f_problem()
    kw = dict(strategy=Monolithic(window=20), optimizer=LevenbergMarquardt(steps=40),
              client="sync", check=False, init="random")
    form = dict(net=MLP(hidden=(8, 8)), nodes=200, test_points=400)
    second = daskie.solve(p, formulation=QuadratureCollocation(ansatz="second-kind", **form), **kw)
    plain = daskie.solve(p, formulation=QuadratureCollocation(**form), **kw)
    # the peak is f's: mu = (f + net) / alpha carries it exactly, the smooth term is learnt
    # (measured: 1.2e-5 against 3.3e-3 in these 40 LM steps; the rule's floor is 3e-15)
    assert second.attrs["rel_l2"] < 3e-5
    assert plain.attrs["rel_l2"] > 100 * second.attrs["rel_l2"]
    # and the returned solution (on solve's grid, the peak included) is (f + net) / alpha
    x = second.x0.values[:, None]
    np.testing.assert_allclose(second.mu.values, p.exact_at(x), rtol=0, atol=1e-4)


def test_distributed_equals_serial(client):
    p = build("hd-bumps-mixed", 3)
    kw = dict(formulation=_form("second-kind", local_level=2), optimizer=LevenbergMarquardt(steps=6),
              strategy=DataParallel(shards=2, window=3), check=False, init="random")
    serial = daskie.solve(p, client="sync", **kw)
    dist = daskie.solve(p, client=client, **kw)
    np.testing.assert_allclose(dist.mu.values, serial.mu.values, rtol=0, atol=1e-12)
    assert dist.attrs["mse"] == pytest.approx(serial.attrs["mse"], rel=1e-9)


def test_the_transform_pickles_without_its_cache_and_recomputes():
    p = build("hd-bumps-fredholm", 2)
    sk = SecondKind(p)
    z = torch.rand(5, 2, dtype=torch.float64)
    scale, shift = sk(z)
    assert sk(z) is sk(z)  # one computation per point set
    again = cloudpickle.loads(cloudpickle.dumps(sk))  # as Dask ships it
    s2, c2 = again(z)
    assert torch.equal(s2, scale) and torch.equal(c2, shift)
    np.testing.assert_allclose(shift.numpy(), p.f_at(z.numpy()), rtol=0, atol=0)  # alpha = 1


def test_an_equation_without_alpha_is_refused_by_name():
    p = Problem(domain=Domain((0.0,), (1.0,)), f=lambda x: x[..., 0], alpha=0.0,
                terms=(IntegralTerm(kernel=lambda x, t: 1.0 + 0 * x[..., 0] * t[..., 0]),),
                name="first-kind")
    with pytest.raises(SpecError, match="alpha.*first-kind"):
        _form("second-kind").discretize(p)


@pytest.mark.parametrize("bad", ["nu", "", None, 2])
def test_a_bad_ansatz_is_a_clear_error(bad):
    with pytest.raises(SpecError, match="ansatz must be 'mu' or 'second-kind'"):
        QuadratureCollocation(ansatz=bad)


def test_mu_is_the_default_and_second_kind_is_asked_for():
    form = QuadratureCollocation(net=MLP(hidden=(4,)), points=20, test_points=8, level=2,
                                 shared_rule="smolyak")
    assert form.ansatz == "mu"
    plain = form.discretize(build("hd-bumps-fredholm", 4))
    assert plain.info["ansatz"] == "mu" and plain.submodels["mu"].affine is None
    asked = _form("second-kind", shared_rule="smolyak", level=2).discretize(build("hd-bumps-fredholm", 4))
    assert asked.info["ansatz"] == "second-kind" and asked.submodels["mu"].affine is not None


@pytest.mark.parametrize("row_scale", ["none", "terms"])
def test_the_warm_start_target_is_one_fixed_point_step_from_f_over_alpha(row_scale):
    from daskie.quadrature import gauss_legendre
    from daskie.train.warm_start import picard_step

    p = _peaked_f_problem()
    disc = QuadratureCollocation(net=MLP(hidden=(4,)), nodes=50, points=30, test_points=8,
                                 ansatz="second-kind", row_scale=row_scale).discretize(p)
    x, mu1 = picard_step(disc)
    t, w = gauss_legendre(50, 0.0, 1.0)
    mu0_t = p.f_at(t[:, None]) / 2.0
    want = (p.f_at(x) + 0.5 * (np.exp(x[:, :1] * t[None, :]) * w) @ mu0_t) / 2.0
    np.testing.assert_allclose(mu1, want, rtol=1e-13, atol=0)


def test_a_nonlinear_solve_starts_from_the_fixed_point_step():
    p = build("hd-bumps-volterra", 3)
    ds = daskie.solve(p, formulation=_form("second-kind", local_level=2), client="sync",
                      optimizer=LevenbergMarquardt(steps=2), check=False, init="f")
    assert ds.attrs["init"] == "f" and "one fixed-point step" in ds.attrs["init_reason"]


def test_pipeline_stages_apply_the_transform_as_one_process_does():
    from daskie import Adam, Pipeline

    p = build("hd-bumps-fredholm", 4)
    form = _form("second-kind", shared_rule="smolyak", level=2)
    opt = Adam(lr=1e-2, steps=4)
    kw = dict(client="sync", check=False, init="random")
    mono = daskie.solve(p, form, Monolithic(), opt, **kw)
    pipe = daskie.solve(p, form, Pipeline(window=2, micro_batches=2), opt, **kw)
    np.testing.assert_allclose(pipe.mu.values, mono.mu.values, rtol=0, atol=1e-10)
