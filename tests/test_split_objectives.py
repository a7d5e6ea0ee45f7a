"""The training layer's split objectives (daskie.train.collective): data shards, objectives
whose work is split over the ranks of a group (threads of this process), the row pieces of
the one cost model (daskie.plan.cost), and Levenberg-Marquardt's matrix-free solve and torch
models. Each must equal the one-process objective up to rounding."""

import pytest
import torch

from daskie import LevenbergMarquardt, OrderReduction, QuadratureCollocation
from daskie.collectives import local_groups, run_threads
from daskie.errors import SpecError
from daskie.nn import MLP
from daskie.problems import catalog
from daskie.train import LBFGS, Objective, TrainState, advance
from daskie.plan import balanced_pieces, evaluation_cost
from daskie.train.collective import PartitionedObjective, ShardedObjective

# the runtime's numbers on short trainings (tests/conftest.py: runtime_numbers)
pytestmark = pytest.mark.usefixtures("runtime_numbers")

SMALL_OR = OrderReduction(net=MLP(hidden=(10, 10)), points=96, aux_points=128)
SMALL_Q = QuadratureCollocation(net=MLP(hidden=(12, 12)), points=160)


@pytest.fixture(scope="module")
def e1():
    return catalog.get("E1")


# --- data shards ----------------------------------------------------------------------------
@pytest.mark.parametrize("formulation", [SMALL_Q, SMALL_OR], ids=["quadrature", "order-reduction"])
def test_shard_losses_and_normal_equations_sum_to_the_full_ones(e1, formulation):
    full = Objective(formulation.discretize(e1, seed=1))
    theta = full.init_params(0)
    loss, A, g = full.normal_equations(theta)
    parts = [Objective(formulation.discretize(e1, seed=1, shard=(k, 3))).normal_equations(theta)
             for k in range(3)]
    assert sum(p[0] for p in parts) == pytest.approx(loss, rel=1e-13)
    torch.testing.assert_close(sum(p[1] for p in parts), A, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sum(p[2] for p in parts), g, rtol=1e-12, atol=1e-14)


def test_shards_hold_every_collocation_point_once(e1):
    full = SMALL_Q.discretize(e1, seed=0)
    pts = [SMALL_Q.discretize(e1, seed=0, shard=(k, 4)).evaluations["mu@x"].points for k in range(4)]
    together = torch.cat(pts)
    assert together.shape == full.evaluations["mu@x"].points.shape
    assert torch.equal(torch.sort(together[:, 0]).values,
                       torch.sort(full.evaluations["mu@x"].points[:, 0]).values)


@pytest.mark.parametrize("shard, match", [((2, 2), "0 <= k < n"), ((0, 0), "n >= 1"),
                                          ("ab", "pair"), ((0, 10**6), "empty")])
def test_bad_shards_are_rejected_with_the_reason(e1, shard, match):
    with pytest.raises(SpecError, match=match):
        SMALL_Q.discretize(e1, shard=shard)


# --- objectives over ranks -------------------------------------------------------------------
def _sharded(group, formulation, problem, theta):
    obj = ShardedObjective(Objective(formulation.discretize(problem, shard=(group.rank, group.size))),
                           group)
    th = theta.clone().requires_grad_(True)
    loss = obj.loss(th)
    loss.backward()
    return float(loss.detach()), th.grad, obj.value_and_grad(theta), obj.normal_equations(theta)


def _partitioned(group, formulation, problem, theta, owners, pieces=None):
    local = Objective(formulation.discretize(problem))
    rows = None
    if pieces is not None:  # row pieces: the normal equations come from the row split
        rows = ShardedObjective(Objective(formulation.discretize(
            problem, shard=(group.rank, group.size))), group)
    obj = PartitionedObjective(local, group, owners, rows=rows, pieces=pieces)
    th = theta.clone().requires_grad_(True)
    loss = obj.loss(th)
    loss.backward()
    return float(loss.detach()), th.grad, obj.value_and_grad(theta), obj.normal_equations(theta)


@pytest.mark.parametrize("split", ["rows", "columns", "balanced"])
def test_objectives_over_ranks_equal_the_one_process_objective(e1, split):
    full = Objective(SMALL_OR.discretize(e1))
    theta = full.init_params(3)
    loss, grad = full.value_and_grad(theta)
    _, A, g = full.normal_equations(theta)
    with local_groups(2) as groups:
        if split == "rows":
            out = run_threads(groups, _sharded, [(SMALL_OR, e1, theta)] * 2)
        elif split == "columns":
            owners = [("F0.1",), ("mu", "F0.2")]
            out = run_threads(groups, _partitioned, [(SMALL_OR, e1, theta, owners)] * 2)
        else:
            owners = [("F0.1",), ("mu", "F0.2")]
            # two evaluations cut between the ranks, one of them delivered out of row order
            pieces = [[("dF0.1", 0, 256), ("F0.2<", 0, 128), ("mu@x", 50, 96)],
                      [("mu@x", 0, 50), ("mu@F0.1", 0, 100), ("dF0.2", 0, 128), ("F0.2@x", 0, 96),
                       ("mu@F0.1", 100, 256)]]
            out = run_threads(groups, _partitioned, [(SMALL_OR, e1, theta, owners, pieces)] * 2)
    for l_bw, g_bw, (l_vg, g_vg), (l_ne, A_ne, g_ne) in out:
        assert l_bw == pytest.approx(loss, rel=1e-13)
        assert l_vg == pytest.approx(loss, rel=1e-13)
        assert l_ne == pytest.approx(loss, rel=1e-13)
        torch.testing.assert_close(g_bw, grad, rtol=1e-11, atol=1e-14)
        torch.testing.assert_close(g_vg, grad, rtol=1e-11, atol=1e-14)
        torch.testing.assert_close(A_ne, A, rtol=1e-11, atol=1e-14)
        torch.testing.assert_close(g_ne, g, rtol=1e-11, atol=1e-14)


def test_partitioned_owners_must_cover_every_submodel_once(e1):
    full = Objective(SMALL_OR.discretize(e1))
    owners = [("mu", "F0.1", "F0.2")]
    with local_groups(1) as (g,):
        with pytest.raises(ValueError, match="exactly once"):
            PartitionedObjective(full, g, [("mu", "F0.1")])
        n = full.disc.evaluations["mu@x"].size
        whole = [(k, 0, full.disc.evaluations[k].size) for k in full.eval_keys]
        gap = [p if p[0] != "mu@x" else ("mu@x", 1, n) for p in whole]
        with pytest.raises(ValueError, match="row of evaluation 'mu@x' exactly once"):
            PartitionedObjective(full, g, owners, pieces=[gap])
        with pytest.raises(ValueError, match="row of evaluation 'mu@x' exactly once"):
            PartitionedObjective(full, g, owners, pieces=[whole + [("mu@x", 0, 1)]])
        with pytest.raises(ValueError, match="unknown evaluation 'nope'"):
            PartitionedObjective(full, g, owners, pieces=[whole + [("nope", 0, 1)]])
        with pytest.raises(ValueError, match="pieces name 2 ranks"):
            PartitionedObjective(full, g, owners, pieces=[whole, []])


@pytest.mark.parametrize("ranks", [2, 3, 5])
def test_balanced_pieces_cover_every_row_once_with_equal_estimated_work(ranks):
    from daskie.formulations import OrderReduction

    disc = OrderReduction(net=MLP(hidden=(40, 40, 40)), points=1024,
                          aux_points=1024).discretize(catalog.get("E1"))
    owners = [("F0.1",), ("mu", "F0.2")]
    pieces = balanced_pieces(disc, owners, ranks)
    for k, ev in disc.evaluations.items():
        rows = sorted(r for p in pieces for kk, lo, hi in p if kk == k for r in range(lo, hi))
        assert rows == list(range(ev.size)), k
    loads = [sum(evaluation_cost(disc, k, hi - lo) for k, lo, hi in p) for p in pieces]
    total = sum(evaluation_cost(disc, k) for k in disc.evaluations)
    # every cut adds one call's cost; apart from that the shares are equal to 2 %
    assert max(loads) <= total / ranks * 1.02 + max(evaluation_cost(disc, k, 0)
                                                     for k in disc.evaluations)
    assert min(loads) >= total / ranks * 0.9
    # the Plan's order is kept: rank 0 starts with the first group's sub-model
    assert pieces[0][0][0] == "dF0.1"
    # the cost model: a derivative row costs more than a value row of the same network
    assert evaluation_cost(disc, "dF0.1", 10) > evaluation_cost(disc, "F0.2<", 10)


def _lbfgs_partitioned(group, problem, steps):
    obj = PartitionedObjective(Objective(SMALL_OR.discretize(problem)), group,
                               [("mu",), ("F0.1", "F0.2")])
    state, _ = advance(obj, LBFGS(steps=steps), TrainState(theta=obj.init_params(0)), steps,
                       final_mse=False)
    return state.theta


def test_model_parallel_lbfgs_takes_the_one_process_steps(e1):
    # L-BFGS needs global dot products and a line search: it works unmodified because every
    # rank sees the joint loss and gradient.
    full = Objective(SMALL_OR.discretize(e1))
    ref, _ = advance(full, LBFGS(steps=4), TrainState(theta=full.init_params(0)), 4, final_mse=False)
    with local_groups(2) as groups:
        out = run_threads(groups, _lbfgs_partitioned, [(e1, 4)] * 2)
    torch.testing.assert_close(out[0], ref.theta, rtol=1e-9, atol=1e-11)
    assert torch.equal(out[0], out[1])


# --- Levenberg-Marquardt's matrix-free solve ---------------------------------------------------
def test_matrix_free_lm_takes_the_direct_steps(e1):
    obj = Objective(SMALL_Q.discretize(e1))
    theta = obj.init_params(0)
    direct = LevenbergMarquardt(steps=3, scaling="levenberg", solver="direct")
    cg = LevenbergMarquardt(steps=3, scaling="levenberg", solver="cg", cg_iters=2000, cg_tol=1e-13)
    a, _ = advance(obj, direct, TrainState(theta=theta), 3, final_mse=False)
    b, recs = advance(obj, cg, TrainState(theta=theta), 3, final_mse=False)
    assert b.loss == pytest.approx(a.loss, rel=1e-5)
    assert all(r["cg_iters"] >= 1 for r in recs)


def test_gauss_newton_product_is_jtj_times_v(e1):
    obj = Objective(SMALL_Q.discretize(e1))
    theta = obj.init_params(1)
    _, A, _ = obj.normal_equations(theta)
    v = torch.randn(theta.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(obj.gauss_newton_product(theta, v), A @ v, rtol=1e-10, atol=1e-12)


def test_memory_budget_switches_to_the_matrix_free_solve(e1):
    obj = Objective(SMALL_Q.discretize(e1))
    need = obj.jacobian_bytes() + 8 * obj.layout.total ** 2
    assert not LevenbergMarquardt(memory_budget=need + 1).uses_cg(obj)
    assert LevenbergMarquardt(memory_budget=need - 1).uses_cg(obj)
    assert LevenbergMarquardt(memory_budget="1KB").uses_cg(obj)
    assert not LevenbergMarquardt().uses_cg(obj)


# --- Levenberg-Marquardt for plain torch models ---------------------------------------------
def test_lm_trains_a_torch_model_to_the_lstsq_answer():
    from daskie.train import train
    from daskie.train.module import ModuleObjective, Residuals

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, dtype=torch.float64, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64) + 0.3 \
        + 0.1 * torch.randn(200, 1, dtype=torch.float64, generator=g)
    net = torch.nn.Linear(3, 1).double()
    obj = ModuleObjective(net, Residuals(lambda pred, target: pred - target), (x, y))
    state, _ = train(obj, LevenbergMarquardt(steps=20), seed=1)
    A = torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(A, y).solution[:, 0]
    torch.testing.assert_close(state.theta, coef, rtol=1e-8, atol=1e-10)  # weight then bias


def test_module_jacobian_matches_jacrev_and_lm_needs_residuals():
    from daskie.train.module import ModuleObjective, Residuals

    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 2, dtype=torch.float64, generator=g)
    y = torch.sin(x[:, :1])
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    obj = ModuleObjective(net, Residuals(lambda p, t: p - t), (x, y))
    theta = obj.init_params(0)
    r, J = obj.jacobian(theta, chunk=16)
    torch.testing.assert_close(J, torch.func.jacrev(obj.residuals)(theta), rtol=1e-10, atol=1e-12)
    assert float(r @ r) == pytest.approx(float(obj.loss(theta)), rel=1e-12)
    plain = ModuleObjective(net, torch.nn.MSELoss(), (x, y))
    with pytest.raises(SpecError, match="Residuals"):
        plain.jacobian(theta)
