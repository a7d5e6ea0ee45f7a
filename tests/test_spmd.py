"""The runtime's SPMD group runner (daskie.runtime.spmd) through its strategies: DataParallel
and CEPTF, serial (threads of this process) == LocalCluster == one-process training, windows
submitted ahead, placements and re-packing, fault tolerance (a killed worker changes nothing)."""

import os

import numpy as np
import pytest
import torch

from daskie import (CEPTF, Adam, Balanced, BlockCoordinate, Comm, DataParallel, LevenbergMarquardt,
                    Monolithic, OrderReduction, QuadratureCollocation, Whole, solve)
from daskie.cluster import local_cluster
from daskie.collectives import local_groups, run_threads
from daskie.runtime import DaskExecutor
from daskie.errors import SpecError
from daskie.nn import MLP
from daskie.problems import catalog
from daskie.train import Objective, TrainState, advance
from daskie.train.collective import PartitionedObjective

# the runtime's numbers on short trainings (tests/conftest.py: runtime_numbers)
pytestmark = pytest.mark.usefixtures("runtime_numbers")

SMALL_OR = OrderReduction(net=MLP(hidden=(10, 10)), points=96, aux_points=128)
SMALL_Q = QuadratureCollocation(net=MLP(hidden=(12, 12)), points=160)


@pytest.fixture(scope="module")
def e1():
    return catalog.get("E1")


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
        def on_window(k, summary):
            # window 0 is gathered; the windows after it, submitted ahead, run or hold their
            # results on both ranks' workers: kill one, and a window must run again
            if k == 0:
                addr = sorted(DaskExecutor(client).workers())[0]
                os.kill(client.run(os.getpid, workers=[addr])[addr], 9)

        ds = solve(e1, formulation, strategy, opt, client=client, on_window=on_window)
    np.testing.assert_array_equal(_mu(ds), _mu(reference))
    assert ds.attrs["loss"] == reference.attrs["loss"]
    attempts = ds["history_attempts"].values
    assert np.nanmax(attempts) >= 2  # a window was run again on a fresh group


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
