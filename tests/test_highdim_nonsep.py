"""Non-separable high-dimensional families (issue 30) and the sparse-grid Nystrom rival:
closed-form f against independent integrals (a tensor Gauss rule on the whole kernel at
d = 4; a 1-D factorisation with Gauss rules, no erf, at d = 12), small-d versions against the
tensor Nystrom solution, and the sparse grid's nodes, rows and convergence."""

import numpy as np
import pytest

from daskie.errors import SpecError
from daskie.problems import catalog
from daskie.problems.highdim import GaussFactor
from daskie.problems.nonseparable import AMPLITUDES, FAMILIES, bumps, build, centres, width2
from daskie.quadrature import gauss_legendre, smolyak_rule, tensor_rule
from daskie.reference import Nystrom, SparseNystrom
from daskie.reference.sparse import sparse_grid


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_closed_form_f_matches_a_tensor_gauss_rule_at_d4(family):
    # 16^4 Gauss nodes on each point's box, the kernel evaluated as a whole (not by factors)
    p = catalog.get(f"{family}-d4")
    term = p.terms[0]
    for x in p.domain.sample(3, seed=11):
        b = term.upper_limits(x[None])[0]
        t, w = tensor_rule(16, term.lower, b)
        integral = w @ (term.kernel(x[None], t) * term.nonlinearity(p.exact(t)))
        assert abs(p.exact(x[None])[0] - p.f(x[None])[0] - term.lam * integral) < 1e-13


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_closed_form_f_matches_a_1d_factorisation_at_d12(family):
    # mu^p is a sum of products of 1-D Gaussians and K a product of 1-D factors, so the
    # integral is a sum of products of 1-D integrals: each by a 40-point Gauss rule here
    p = catalog.get(f"{family}-d12")
    term, d = p.terms[0], 12
    c, s2, amp = centres(d), width2(d), np.asarray(AMPLITUDES)
    power = 1 if family == "hd-bumps-fredholm" else 2
    pairs = ([(amp[j], (j,)) for j in range(3)] if power == 1 else
             [(amp[j] * amp[k], (j, k)) for j in range(3) for k in range(3)])
    for x in p.domain.sample(3, seed=5):
        b = term.upper_limits(x[None])[0]
        total = 0.0
        for coef, js in pairs:
            prod = coef
            for i, k in enumerate(term.kernel.factors):
                t, w = gauss_legendre(40, term.lower[i], b[i])
                g = k(x[i], t) * np.prod([np.exp(-(t - c[j, i]) ** 2 / s2) for j in js], axis=0)
                prod *= w @ g
            total += prod
        residual = p.exact(x[None])[0] - p.f(x[None])[0] - term.lam * total
        assert abs(residual) < 1e-13, (family, x, residual)


def test_the_bumps_are_not_a_product():
    # a rank-one function g(x) = g1(x_1) g2(x_2..x_d) has g(a,b) g(a',b') = g(a,b') g(a',b)
    p = catalog.get("hd-bumps-volterra-d6")
    a, a2 = np.array([0.1]), np.array([0.9])
    rest, rest2 = np.full(5, 0.2), np.full(5, 0.8)
    left = bumps(np.r_[a, rest]) * bumps(np.r_[a2, rest2])
    right = bumps(np.r_[a, rest2]) * bumps(np.r_[a2, rest])
    assert abs(left - right) > 1e-3 * abs(left)
    assert p.exact is bumps


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("d,n,tol", [(2, 24, 1e-12), (3, 12, 1e-7)])
def test_small_d_matches_tensor_nystrom(family, d, n, tol):
    p = catalog.get(f"{family}-d{d}")
    sol = Nystrom(n=n).solve(p)
    assert np.max(np.abs(sol.values - p.exact(sol.nodes))) < tol


def test_catalog_lists_the_new_families_up_to_d12():
    names = catalog.names(highdim=True)
    for family in FAMILIES:
        assert f"{family}-d12" in names and f"{family}-d10" in names
        assert f"{family}-d12" not in catalog.names()
    with pytest.raises(SpecError, match="unknown non-separable family"):
        build("hd-bumps", 4)
    with pytest.raises(SpecError, match="d must be an integer >= 2"):
        build("hd-bumps-volterra", 1)


@pytest.mark.parametrize("d,level", [(4, 3), (6, 4), (8, 3)])
def test_sparse_grid_nodes_are_the_smolyak_rule_nodes(d, level):
    nodes, grids = sparse_grid(d, level)
    rule, _ = smolyak_rule(level, np.zeros(d), np.ones(d))
    assert len(nodes) == len(rule)
    key = {tuple(np.round(v, 12)) for v in nodes}
    assert {tuple(np.round(v, 12)) for v in rule} == key
    # the combination coefficients sum to 1 (a constant is reproduced)
    assert sum(c for c, _, _ in grids) == 1


def test_sparse_rows_integrate_the_interpolant_exactly():
    # M(mu) = 1 at every node: the row is the integral of K over the box, a product of masses
    p = catalog.get("hd-bumps-mixed-d6")
    solver = SparseNystrom(level=3)
    from daskie.reference.sparse import _Rows

    term = p.terms[0]
    rows = _Rows(p, term, 3, 64)
    x = p.domain.sample(5, seed=2)
    n = solver.unknowns(p)
    b = term.upper_limits(x)
    mass = np.prod([np.asarray(k.mass(x[:, i], 0.0, b[:, i]))
                    for i, k in enumerate(term.kernel.factors)], axis=0)
    assert np.allclose(rows(x, n) @ np.ones(n), mass, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["hd-bumps-volterra-d4", "hd-bumps-fredholm-d4",
                                  "hd-volterra-d4"])
def test_sparse_nystrom_converges_with_the_level(name):
    p = catalog.get(name)
    x = p.domain.sample(400, seed=3)
    err = [np.linalg.norm(SparseNystrom(level=lv).solve(p)(x) - p.exact(x)) for lv in (2, 3, 4)]
    assert err[2] < err[1] / 5 < err[0] / 25, err


def test_sparse_nystrom_matches_the_exact_solution_at_d2():
    p = catalog.get("hd-bumps-mixed-d2")
    sol = SparseNystrom(level=9).solve(p)
    assert np.max(np.abs(sol.values - p.exact(sol.nodes))) < 1e-8


def test_sparse_nystrom_refuses_oversize_and_other_kernels():
    p = catalog.get("hd-bumps-volterra-d8")
    solver = SparseNystrom(level=5, memory_budget=2**28)
    assert solver.unknowns(p) == 6097
    assert solver.matrix_bytes(p) == 2 * 8 * 6097**2
    with pytest.raises(SpecError, match=r"SparseNystrom\(level=5\) on d = 8 needs .* GiB"):
        solver.solve(p)
    with pytest.raises(SpecError, match="kernels of 1-D factors"):
        SparseNystrom(level=2).solve(catalog.get("fredholm3d"))
    with pytest.raises(SpecError, match="level must be an integer >= 1"):
        SparseNystrom(level=0)
    assert isinstance(p.terms[0].kernel.factors[0], type(catalog.get(
        "hd-bumps-volterra-d2").terms[0].kernel.factors[0]))
    assert not isinstance(p.terms[0].kernel.factors[0], GaussFactor)


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "highdim.py"
    spec = importlib.util.spec_from_file_location("highdim_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("d,grid", [(4, 9), (8, 3), (12, 2)])
def test_benchmark_boundary_points_hold_every_corner_and_lie_on_faces(d, grid):
    bench = _bench()
    x = bench.boundary_points(build("hd-bumps-volterra", d), faces=64)
    assert len(x) == grid**d + 64
    assert np.any((x[-64:] == 0.0) | (x[-64:] == 1.0), axis=1).all()
    corners = {tuple(c) for c in x[np.all((x == 0.0) | (x == 1.0), axis=1)]}
    assert len(corners) == 2**d


def test_benchmark_summary_keeps_each_rivals_best_and_names_the_winner():
    bench = _bench()
    recs = [{"problem": "p-d8", "dim": 8, "formulation": "quadrature", "rel_l2": 1e-5,
             "wall_s": 50.0, "size": 700},
            {"problem": "p-d8", "dim": 8, "formulation": "nystrom-qmc", "rel_l2": 1e-3,
             "wall_s": 10.0, "size": 512},
            {"problem": "p-d8", "dim": 8, "formulation": "nystrom-qmc", "rel_l2": 1e-4,
             "wall_s": 90.0, "size": 4096},
            {"problem": "p-d8", "dim": 8, "formulation": "nystrom-sparse", "rel_l2": 2e-4,
             "wall_s": 20.0, "size": 1105},
            {"kind": "floor", "problem": "p-d8", "rel_floor": 1e-6}]
    (row,) = bench.summarize(recs)
    assert row["qmc_rel_l2"] == 1e-4 and row["qmc_size"] == 4096
    assert row["best_rival"] == "nystrom-qmc" and row["ratio"] == pytest.approx(10.0)
    assert row["rival_in_wall"] == "nystrom-sparse" and row["rival_in_wall_rel_l2"] == 2e-4
    assert row["winner"] == "daskie"
