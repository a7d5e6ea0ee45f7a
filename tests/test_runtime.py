"""The distributed runtime: data shards, objectives split over ranks, the SPMD strategies
(DataParallel, joint CEPTF) and their fault tolerance, Levenberg-Marquardt's matrix-free
solve. Serial (threads of this process) and LocalCluster runs must give the same numbers,
and both must equal one-process training up to rounding."""

import os
import threading

import numpy as np
import pytest
import torch

from daskie import (CEPTF, Balanced, BlockCoordinate, Comm, Whole, Adam, DataParallel, LevenbergMarquardt, Monolithic, OrderReduction,
                    QuadratureCollocation, solve)
from daskie.api import local_cluster
from daskie.collectives import local_groups, run_threads
from daskie.runtime import DaskExecutor
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


# --- strategies: serial == cluster == one process -------------------------------------------
def _mu(ds):
    return ds["mu"].values


def test_data_parallel_lm_equals_one_process_lm(e1, client):
    opt = LevenbergMarquardt(steps=4)
    mono = solve(e1, SMALL_Q, Monolithic(), opt, client="sync")
    serial = solve(e1, SMALL_Q, DataParallel(shards=2, window=2), opt, client="sync")
    dist = solve(e1, SMALL_Q, DataParallel(shards=2, window=2), opt, client=client)
    np.testing.assert_array_equal(_mu(serial), _mu(dist))  # same shards, same sums
    assert serial.attrs["loss"] == dist.attrs["loss"]
    np.testing.assert_allclose(_mu(dist), _mu(mono), rtol=0, atol=1e-9)
    assert dist.attrs["loss"] == pytest.approx(mono.attrs["loss"], rel=1e-6)
    assert dist.attrs["strategy"] == "data-parallel" and dist.attrs["epochs"] == 4
    ranks = set(dist["history_rank"].values[~np.isnan(dist["history_rank"].values)])
    assert ranks == {0.0, 1.0}  # every rank's records reach the history (same steps, checked)
    sync = dist["history_sync_s"].values
    assert np.nanmax(sync) > 0  # the all-reduces were timed


def test_data_parallel_adam_full_batch_equals_one_process(e1, client):
    opt = Adam(lr=1e-2, steps=6)
    mono = solve(e1, SMALL_Q, Monolithic(), opt, client="sync")
    dist = solve(e1, SMALL_Q, DataParallel(shards=2, window=3), opt, client=client)
    np.testing.assert_allclose(_mu(dist), _mu(mono), rtol=0, atol=1e-10)


@pytest.mark.parametrize("optimizer, placement", [
    (Adam(lr=1e-2, steps=6), Balanced()),
    (Adam(lr=1e-2, steps=6), Whole()),
    (LevenbergMarquardt(steps=3, scaling="levenberg"), Balanced()),
    (LevenbergMarquardt(steps=3, scaling="levenberg"), Whole(lm_split="columns"))],
    ids=["adam", "adam-whole-submodels", "lm-rows", "lm-columns"])
def test_joint_ceptf_equals_monolithic_training(e1, client, optimizer, placement):
    mono = solve(e1, SMALL_OR, Monolithic(), optimizer, client="sync")
    strategy = CEPTF(window=3, placement=placement)
    serial = solve(e1, SMALL_OR, strategy, optimizer, client="sync", workers=2)
    dist = solve(e1, SMALL_OR, strategy, optimizer, client=client, workers=2)
    np.testing.assert_array_equal(_mu(serial), _mu(dist))
    np.testing.assert_allclose(_mu(dist), _mu(mono), rtol=0, atol=1e-9)
    assert dist.attrs["epochs"] == optimizer.steps
    subs = {s for s in dist["history_submodels"].values if isinstance(s, str) and s != "joint"}
    # sub-model names (a balanced rank names the sub-models whose rows it evaluates)
    assert subs and all(set(s.split("+")) <= {"mu", "F0.1", "F0.2"} for s in subs)
    steps = dist["history_kind"].values == "step"
    assert set(dist["history_rank"].values[steps]) == {0.0, 1.0}  # both ranks' records


def test_reaching_the_target_stops_the_window_chain_submitted_ahead(e1, client):
    # on a cluster window k+1 is submitted on window k's futures before k ends; when k
    # reaches the target, k+1 must take no step and the run must end with k
    opt = Adam(lr=1e-2, steps=12)
    first = solve(e1, SMALL_Q, Monolithic(), Adam(lr=1e-2, steps=1), client="sync",
                  target_loss=0.0)
    # a step records the loss before its update: the second step reports first's loss
    target = 1.0001 * first.attrs["loss"]
    serial = solve(e1, SMALL_Q, DataParallel(shards=2, window=3), opt, client="sync",
                   target_loss=target)
    dist = solve(e1, SMALL_Q, DataParallel(shards=2, window=3), opt, client=client,
                 target_loss=target)
    for ds in (serial, dist):
        assert ds.attrs["done"] == "target" and ds.attrs["epochs"] == 2  # inside window 0
        assert int((ds["history_kind"].values == "window").sum()) == 1  # one window summary
    np.testing.assert_array_equal(_mu(dist), _mu(serial))


def test_data_parallel_with_fp16_all_reduce_trains_close_to_full_precision(e1, client):
    opt = Adam(lr=1e-2, steps=6)
    full = solve(e1, SMALL_Q, DataParallel(shards=2, window=3), opt, client=client)
    half = solve(e1, SMALL_Q, DataParallel(shards=2, window=3, comm=Comm(compress="fp16")), opt, client=client)
    diff = np.abs(_mu(half) - _mu(full)).max()
    assert 0 < diff < 1e-2 * np.abs(_mu(full)).max()


def test_divergence_on_a_rank_is_reported_not_retried(e1, client):
    from daskie.errors import TrainingDiverged

    bad = Adam(lr=1e-3, steps=2) >> Adam(lr=1e300, decay=0.0, steps=2)
    with pytest.raises(TrainingDiverged, match="last good state"):
        solve(e1, SMALL_Q, DataParallel(shards=2, window=4), bad, client=client)


@pytest.mark.parametrize("build, match", [
    (lambda: DataParallel(shards=0), "DataParallel.shards"),
    (lambda: Comm(method="allgather"), "Comm.method"),
    (lambda: Comm(timeout=-1), "Comm.timeout"),
    (lambda: Comm(retries=-1), "Comm.retries"),
    (lambda: Comm(compress="bf16"), "Comm.compress"),
    (lambda: DataParallel(comm="gloo"), "DataParallel.comm"),
    (lambda: BlockCoordinate(order="random"), "BlockCoordinate.order"),
    (lambda: BlockCoordinate(order="joint"), "joint training is CEPTF"),
    (lambda: CEPTF(placement="balanced"), "CEPTF.placement"),
    (lambda: Whole(lm_split="diagonal"), "Whole.lm_split"),
    (lambda: Whole(rebalance="yes"), "Whole.rebalance"),
    (lambda: CEPTF(shards=2, placement=Whole(rebalance=True)), "needs shards=1"),
    (lambda: LevenbergMarquardt(solver="qr"), "LevenbergMarquardt.solver"),
    (lambda: LevenbergMarquardt(memory_budget="lots"), "LevenbergMarquardt.memory_budget"),
    (lambda: LevenbergMarquardt(cg_tol=2.0), "LevenbergMarquardt.cg_tol"),
])
def test_bad_runtime_options_name_the_option(build, match):
    with pytest.raises(SpecError, match=match):
        build()


# --- fault tolerance ------------------------------------------------------------------------
@pytest.mark.slow
def test_killing_a_worker_mid_run_changes_nothing(e1):
    formulation = QuadratureCollocation(points=400)
    opt = LevenbergMarquardt(steps=8)
    strategy = DataParallel(shards=2, window=2, comm=Comm(timeout=10))
    reference = solve(e1, formulation, strategy, opt, client="sync")
    with local_cluster(2) as client:
        def kill():
            addr = sorted(DaskExecutor(client).workers())[0]
            os.kill(client.run(os.getpid, workers=[addr])[addr], 9)

        def on_window(k, summary):
            if k == 0:  # the next window is running: kill one of its workers
                threading.Timer(0.1, kill).start()

        ds = solve(e1, formulation, strategy, opt, client=client, on_window=on_window)
    np.testing.assert_array_equal(_mu(ds), _mu(reference))
    assert ds.attrs["loss"] == reference.attrs["loss"]
    attempts = ds["history_attempts"].values
    assert np.nanmax(attempts) >= 2  # a window was run again on a fresh group


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


def _adam_partitioned(group, problem, owners, shards, steps):
    obj = PartitionedObjective(Objective(SMALL_OR.discretize(problem)), group, owners, shards)
    state, _ = advance(obj, Adam(lr=1e-2, steps=steps), TrainState(theta=obj.init_params(0)), steps,
                       final_mse=False)
    rows = {k: len(range(*sl.indices(obj.local.disc.evaluations[k].size)))
            for k, sl in obj.pieces[group.rank]}
    return state.theta, rows.get("mu@x")


def test_data_parallel_groups_train_like_one_process(e1):
    # two groups, each over two ranks (four ranks), every rank half the rows of its group
    full = Objective(SMALL_OR.discretize(e1))
    ref, _ = advance(full, Adam(lr=1e-2, steps=5), TrainState(theta=full.init_params(0)), 5,
                     final_mse=False)
    owners = [("mu", "F0.2"), ("F0.1",)]
    with local_groups(4) as groups:
        out = run_threads(groups, _adam_partitioned, [(e1, owners, 2, 5)] * 4)
    torch.testing.assert_close(out[0][0], ref.theta, rtol=1e-10, atol=1e-12)
    assert all(torch.equal(o[0], out[0][0]) for o in out)
    assert out[0][1] == out[1][1] == SMALL_OR.points // 2  # mu@x split over ranks 0 and 1


def test_ceptf_with_data_parallel_groups_on_a_cluster(e1, client):
    opt = Adam(lr=1e-2, steps=4)
    mono = solve(e1, SMALL_OR, Monolithic(), opt, client="sync")
    dist = solve(e1, SMALL_OR, CEPTF(window=2, shards=2, placement=Whole()), opt, client=client,
                 workers=2)
    np.testing.assert_allclose(_mu(dist), _mu(mono), rtol=0, atol=1e-10)
    subs = {s for s in dist["history_submodels"].values if isinstance(s, str) and "shard" in s}
    assert subs == {"mu+F0.1+F0.2 shard0/2", "mu+F0.1+F0.2 shard1/2"}  # every rank's records


def test_ceptf_shards_with_levenberg_marquardt(e1):
    opt = LevenbergMarquardt(steps=2, scaling="levenberg")
    mono = solve(e1, SMALL_OR, Monolithic(), opt, client="sync")
    rows = solve(e1, SMALL_OR, CEPTF(window=2, shards=2), opt, client="sync")
    np.testing.assert_allclose(_mu(rows), _mu(mono), rtol=0, atol=1e-9)
    with pytest.raises(SpecError, match="lm_split='rows'"):
        solve(e1, SMALL_OR, CEPTF(window=2, shards=2, placement=Whole(lm_split="columns")), opt,
              client="sync")


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


def test_rebalancing_between_windows_changes_placement_not_numbers(e1, client):
    opt = Adam(lr=1e-2, steps=6)
    fixed = solve(e1, SMALL_OR, CEPTF(window=2, placement=Whole()), opt, client=client, workers=2)
    moving = solve(e1, SMALL_OR, CEPTF(window=2, placement=Whole(rebalance=True)), opt,
                   client=client, workers=2)
    np.testing.assert_array_equal(_mu(moving), _mu(fixed))
    placements = [p for p in moving["history_placement"].values if isinstance(p, str) and p]
    assert len(placements) == 3 and all(" | " in p for p in placements)
    with pytest.raises(TypeError, match="rebalance"):  # block-coordinate windows do not re-pack
        BlockCoordinate(order="jacobi", rebalance=True)
