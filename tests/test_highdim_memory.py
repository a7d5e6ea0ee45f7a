"""Issue 30, item 3 and the boundary points: quadrature collocation with the network evaluated
in bounded blocks (``block_mb``, :class:`BlockedMLP`) gives the unblocked residuals and
Jacobians to rounding; data-parallel row shards of a blocked discretization sum to the whole;
a bad budget is a clear error; collocation points on the box's faces and corners."""

import math

import numpy as np
import pytest
import torch

from daskie import MLP, QuadratureCollocation
from daskie.errors import SpecError
from daskie.formulations.quadrature import BlockedMLP, collocation_points, memory_estimate
from daskie.problems import catalog
from daskie.problems.nonseparable import build
from daskie.train.objective import Objective

# one rule kind each: a shared Smolyak rule (Fredholm), per-point rules mapped onto the
# kernel's factors (mixed) and onto each point's box (Volterra)
CASES = [("hd-bumps-fredholm", {"shared_rule": "smolyak", "level": 3}),
         ("hd-bumps-mixed", {"local_level": 2}),
         ("hd-bumps-volterra", {"local_level": 2, "separable": "never"})]


def _form(block_mb, **kw):
    return QuadratureCollocation(net=MLP(hidden=(8, 8)), points=60, test_points=16,
                                 block_mb=block_mb, **kw)


@pytest.mark.parametrize("family,kw", CASES)
def test_blocked_residual_and_jacobian_equal_the_unblocked_ones(family, kw):
    p = build(family, 4)
    plain = _form(None, **kw).discretize(p)
    # 0.05 MiB holds 16 points of this network: every evaluation and the shared kernel
    # matrix's rows are split into several blocks
    blocked = _form(0.05, **kw).discretize(p)
    assert type(plain.submodels["mu"].net) is MLP
    assert isinstance(blocked.submodels["mu"].net, BlockedMLP)
    assert blocked.info["block_points"] < max(e.size for e in blocked.evaluations.values())
    o1, o2 = Objective(plain), Objective(blocked)
    theta = o1.init_params(3)
    r1, j1 = o1.jacobian(theta)
    r2, j2 = o2.jacobian(theta)
    assert torch.allclose(r1, r2, rtol=0, atol=1e-15 * float(r1.abs().max()))
    assert torch.allclose(j1, j2, rtol=0, atol=1e-14 * float(j1.abs().max()))
    # and the residual at the exact solution (the rules' floor) is the same number
    ex = {k: torch.as_tensor(p.exact_at(e.points.numpy())) for k, e in plain.evaluations.items()}
    f1 = plain.residual_fn(ex)["equation"]
    f2 = blocked.residual_fn(ex)["equation"]
    assert torch.allclose(f1, f2, rtol=0, atol=1e-15)


def test_blocked_mlp_matches_the_plain_network_with_row_weights():
    net = MLP(hidden=(6, 5))
    blocked = BlockedMLP.wrap(net, 7)
    theta = net.init_params(3, torch.Generator().manual_seed(1))
    z = torch.rand(40, 3, dtype=torch.float64)
    assert torch.allclose(blocked.apply(theta, z), net.apply(theta, z), rtol=0, atol=1e-15)
    assert torch.allclose(blocked.point_jacobian(theta, z), net.point_jacobian(theta, z),
                          rtol=0, atol=1e-15)
    c = torch.rand(8, 5, dtype=torch.float64)  # 8 rows of 5 points: blocks of one row
    assert torch.allclose(blocked.point_jacobian(theta, z, row_weights=c),
                          net.point_jacobian(theta, z, row_weights=c), rtol=0, atol=1e-14)


def test_row_shards_of_a_blocked_discretization_sum_to_the_whole():
    # DataParallel's contract: the shards' normal equations add up to the full ones
    p = build("hd-bumps-fredholm", 4)
    form = _form(0.05, shared_rule="smolyak", level=3)
    full = Objective(form.discretize(p))
    theta = full.init_params(0)
    loss, jtj, jtr = full.normal_equations(theta)
    parts = [Objective(form.discretize(p, shard=(k, 2))).normal_equations(theta) for k in (0, 1)]
    assert math.isclose(sum(q[0] for q in parts), loss, rel_tol=1e-12)
    assert torch.allclose(parts[0][1] + parts[1][1], jtj, rtol=1e-12, atol=1e-15)
    assert torch.allclose(parts[0][2] + parts[1][2], jtr, rtol=1e-12, atol=1e-15)


def test_memory_estimate_counts_the_rules_per_worker():
    p = build("hd-bumps-fredholm", 4)
    form = _form(0.5, shared_rule="smolyak", level=3)
    disc = form.discretize(p)
    m = disc.evaluations["mu@nodes0"].size
    est = memory_estimate(form, p)
    n, P = 60, form.net.n_params(4)
    assert est["shared_mb"] == pytest.approx((2 * n * m + m * P) * 8 / 2**20)
    half = memory_estimate(form, p, shards=2)
    assert half["points_per_worker"] == 30
    assert half["shared_mb"] < est["shared_mb"]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "big", True])
def test_a_bad_block_budget_is_a_clear_error(bad):
    with pytest.raises(SpecError, match="block_mb must be a positive number"):
        _form(bad)


def test_a_budget_below_one_point_names_the_minimum():
    form = _form(1e-6)  # a few bytes: no evaluation point of the network fits
    with pytest.raises(SpecError, match="block_mb=1e-06 MiB is below one evaluation point"):
        form.discretize(build("hd-bumps-fredholm", 4))


def test_boundary_points_hold_the_corners_and_lie_on_faces():
    p = build("hd-bumps-fredholm", 3)
    n = 100
    x = collocation_points(p, n, seed=0, boundary=0.3)
    inner, edge = x[:70], x[70:]
    assert np.all((inner > 0) & (inner < 1))  # the Sobol points untouched
    on_face = np.any((edge == 0.0) | (edge == 1.0), axis=1)
    assert on_face.all()
    corners = {tuple(c) for c in edge[:8]}
    assert corners == {tuple(float(b) for b in np.binary_repr(k, 3)[::-1]) for k in range(8)}
    # the faces after the corners: each of the 2d = 6 faces gets 22 // 6 or 22 // 6 + 1
    rest = edge[8:]
    counts = [int(np.sum(rest[:, j] == v)) for j in range(3) for v in (0.0, 1.0)]
    assert sum(counts) >= len(rest) and min(counts) >= 3


def test_more_corners_than_fit_are_sampled_distinct_and_seeded():
    p = build("hd-bumps-fredholm", 8)  # 256 corners, 40 boundary points: 20 corners
    x = collocation_points(p, 200, seed=3, boundary=0.2)
    edge = x[160:]
    corners = edge[:20]
    assert np.all((corners == 0.0) | (corners == 1.0))
    assert len({tuple(c) for c in corners}) == 20
    assert np.array_equal(collocation_points(p, 200, seed=3, boundary=0.2), x)
    other = collocation_points(p, 200, seed=4, boundary=0.2)[160:180]
    assert {tuple(c) for c in other} != {tuple(c) for c in corners}
    # the rest on faces, one coordinate each at 0 or 1, the others inside
    rest = edge[20:]
    assert np.all(np.sum((rest == 0.0) | (rest == 1.0), axis=1) == 1)


def test_boundary_collocation_keeps_the_rules_exact_on_zero_volume_boxes():
    # Volterra at a point with x_j = 0: the box [0, x] has no volume, the integral is 0 and
    # the residual at the exact solution is mu - f = 0 there, to rounding (no NaN from the
    # rule mapped onto an empty box)
    p = build("hd-bumps-volterra", 4)
    form = QuadratureCollocation(net=MLP(hidden=(8,)), points=64, test_points=16,
                                 local_level=2, boundary=0.25)
    disc = form.discretize(p)
    x = disc.evaluations["mu@x"].points.numpy()
    low = np.any(x == 0.0, axis=1)
    assert low.sum() >= 8
    ex = {k: torch.as_tensor(p.exact_at(e.points.numpy())) for k, e in disc.evaluations.items()}
    res = disc.residual_fn(ex)["equation"].numpy()
    assert np.all(np.isfinite(res))
    assert np.max(np.abs(res[low])) < 1e-14


@pytest.mark.parametrize("bad", [-0.1, 1.0, "some", None])
def test_a_bad_boundary_fraction_is_a_clear_error(bad):
    with pytest.raises(SpecError, match="boundary must be a fraction of the points"):
        QuadratureCollocation(boundary=bad)


def test_boundary_points_need_a_box():
    p = next(catalog.get(n) for n in catalog.names() if not catalog.get(n).domain.is_box)
    with pytest.raises(SpecError, match="is not a box"):
        QuadratureCollocation(net=MLP(hidden=(4,)), points=20, boundary=0.1).discretize(p)


@pytest.mark.parametrize("family,kw", CASES[:2])
def test_blocked_jacobian_is_the_derivative_of_the_residuals(family, kw):
    # central differences along a random direction: J v = (r(th + h v) - r(th - h v)) / 2h
    o = Objective(_form(0.05, **kw).discretize(build(family, 4)))
    theta = o.init_params(1)
    _, jac = o.jacobian(theta)
    v = torch.randn(theta.shape, dtype=theta.dtype, generator=torch.Generator().manual_seed(2))
    h = 1e-6
    fd = (o.residuals(theta + h * v) - o.residuals(theta - h * v)) / (2 * h)
    assert float((jac @ v - fd).abs().max()) < 1e-8 * float(fd.abs().max())


def test_auto_boundary_is_a_tenth_above_the_tensor_rules_dimension_and_none_below():
    form = QuadratureCollocation(net=MLP(hidden=(4,)), points=40, test_points=8, local_level=2,
                                 boundary="auto")
    assert QuadratureCollocation().boundary == 0.0  # the default: no boundary points
    high = form.discretize(build("hd-bumps-mixed", 4))
    assert high.info["boundary"] == 0.1
    x = high.evaluations["mu@x"].points.numpy()
    assert np.sum(np.all((x == 0.0) | (x == 1.0), axis=1)) == 2  # 4 boundary points, 2 corners
    assert form.discretize(build("hd-bumps-mixed", 3)).info["boundary"] == 0.0
