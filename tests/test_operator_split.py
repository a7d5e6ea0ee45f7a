"""Issue 29: trunk- and branch x trunk-parallel operator training (== one process, serial ==
LocalCluster, resume bitwise, worker loss, each rank reading its slice), the planner's split,
and parametric families trained end to end."""

import numpy as np
import pytest
import torch

from daskie.errors import SpecError
from daskie.nn import MLP, DeepONet
from daskie.operator import (OperatorBranchTrunkParallel, OperatorDataParallel, OperatorLoss,
                             OperatorTrunkParallel, TrainingSet, fit_operator, generate_dataset)
from daskie.plan.operator_split import choose_split
from daskie.problems import Domain, IntegralTerm, Problem
from daskie.problems.families import family
from daskie.problems.parametric import ParametricFamily
from daskie.store.dataset import OperatorDataset
from daskie.train import Adam, LeastSquaresHead, LevenbergMarquardt, Objective, train

SMALL = dict(sensors=16, query=9, block=8)


def small_net(sensors=16, dim=1):
    return DeepONet(sensors, dim, branch=MLP(hidden=(12,)), trunk=MLP(hidden=(12,)), width=8)


@pytest.fixture(scope="module")
def fredholm_set(tmp_path_factory):
    fam = family("fredholm-1d")
    path = tmp_path_factory.mktemp("data") / "fredholm.zarr"
    generate_dataset(fam, path, 48, seed=0, client="sync", **SMALL)
    return fam, str(path)


def _one_process(fam, path, loss, optimizer, seed=0):
    disc = loss.discretize(TrainingSet(path, fam, (0, 40), (40, 48)), seed=seed)
    state, _ = train(Objective(disc), optimizer, seed=seed)
    return state.theta


# --- the same numbers, however the rows are split ----------------------------------------------
@pytest.mark.parametrize("strategy", [OperatorTrunkParallel(points=2, window=3),
                                      OperatorTrunkParallel(points=3, window=None),
                                      OperatorBranchTrunkParallel(instances=2, points=2,
                                                                  window=4)],
                         ids=["trunk2", "trunk3", "branch-trunk-2x2"])
@pytest.mark.parametrize("optimizer", [Adam(lr=3e-3, steps=10), LevenbergMarquardt(steps=4)],
                         ids=["adam", "lm"])
def test_trunk_and_grid_splits_equal_one_process(fredholm_set, strategy, optimizer):
    fam, path = fredholm_set
    loss = OperatorLoss(small_net(), skip=True)
    op, hist = fit_operator(fam, path, loss=loss, client="sync", optimizer=optimizer,
                            strategy=strategy, train=(0, 40), test=(40, 48))
    torch.testing.assert_close(op.theta, _one_process(fam, path, loss, optimizer), rtol=0,
                               atol=1e-10)
    i, p = strategy.grid(None)
    assert {r["rank"] for r in hist} == set(range(i * p))
    assert {r["submodels"] for r in hist} == {f"instances{a}/{i} points{b}/{p}"
                                              for a in range(i) for b in range(p)}


def test_physics_informed_training_is_trunk_parallel_too(fredholm_set):
    fam, path = fredholm_set
    loss = OperatorLoss(small_net(), data=1.0, physics=1.0, quadrature=12, skip=True)
    optimizer = Adam(lr=3e-3, steps=6)
    op, _ = fit_operator(fam, path, loss=loss, client="sync", optimizer=optimizer,
                         strategy=OperatorTrunkParallel(points=2, window=None),
                         train=(0, 40), test=(40, 48))
    torch.testing.assert_close(op.theta, _one_process(fam, path, loss, optimizer), rtol=0,
                               atol=1e-10)


def test_each_rank_reads_only_its_slice_of_the_data_set(fredholm_set, monkeypatch):
    fam, path = fredholm_set
    reads = []
    original = OperatorDataset.read

    def spy(self, lo, hi, names=("params", "f", "mu"), points=None):
        out = original(self, lo, hi, names, points)
        if "mu" in names:
            reads.append((lo, hi, points, out["mu"].shape))
        return out

    monkeypatch.setattr(OperatorDataset, "read", spy)
    fit_operator(fam, path, loss=OperatorLoss(small_net()), client="sync",
                 optimizer=Adam(lr=3e-3, steps=2),
                 strategy=OperatorBranchTrunkParallel(instances=2, points=2, window=None),
                 train=(0, 40), test=(40, 48))
    train_reads = sorted(r for r in reads if r[2] is not None)
    # four ranks, four blocks: instances [0, 20) and [20, 40) by points [0, 4) and [4, 9)
    assert train_reads == [(0, 20, (0, 4), (20, 4)), (0, 20, (4, 9), (20, 5)),
                           (20, 40, (0, 4), (20, 4)), (20, 40, (4, 9), (20, 5))]
    # and a rank's rows are exactly that block of the data set
    loss = OperatorLoss(small_net())
    rows = loss.shard_rows(TrainingSet(path, fam, (0, 40)), shard=(1, 2), points=(1, 2))
    store = OperatorDataset.open(path)
    np.testing.assert_array_equal(rows.mu.numpy(), store.read(20, 40)["mu"][:, 4:9])
    np.testing.assert_array_equal(rows.x, store.query[4:9])
    assert rows.share == pytest.approx((20 / 40) * (5 / 9))


@pytest.mark.parametrize("strategy", [OperatorTrunkParallel(points=2, window=4),
                                      OperatorBranchTrunkParallel(instances=1, points=2,
                                                                  window=4)],
                         ids=["trunk", "branch-trunk-1x2"])
def test_trunk_parallel_serial_equals_local_cluster(fredholm_set, client, strategy):
    fam, path = fredholm_set
    kwargs = dict(loss=OperatorLoss(small_net()), optimizer=Adam(lr=3e-3, steps=10),
                  strategy=strategy, train=(0, 40), test=(40, 48))
    serial, _ = fit_operator(fam, path, client="sync", **kwargs)
    cluster, hist = fit_operator(fam, path, client=client, **kwargs)
    torch.testing.assert_close(cluster.theta, serial.theta, rtol=0, atol=1e-12)
    assert len({r["worker"] for r in hist}) == 2


def test_a_stopped_trunk_parallel_training_resumes_bitwise(fredholm_set, tmp_path):
    fam, path = fredholm_set
    kwargs = dict(loss=OperatorLoss(small_net()), optimizer=LevenbergMarquardt(steps=6),
                  strategy=OperatorTrunkParallel(points=2, window=2), train=(0, 40),
                  test=(40, 48), client="sync")
    straight, full = fit_operator(fam, path, **kwargs)
    store = str(tmp_path / "run.zarr")

    def stop(k, outputs):
        if k == 0:
            raise KeyboardInterrupt("stopped by the test")

    with pytest.raises(KeyboardInterrupt):
        fit_operator(fam, path, store=store, on_window=stop, **kwargs)
    resumed, history = fit_operator(fam, path, store=store, resume=True, **kwargs)
    torch.testing.assert_close(resumed.theta, straight.theta, rtol=0, atol=0)
    assert [r["epoch"] for r in history] == [r["epoch"] for r in full]


def test_the_same_numbers_after_a_worker_is_killed_during_trunk_parallel_training(fredholm_set):
    import os
    import signal

    from daskie.cluster import local_cluster
    from daskie.strategies import Comm

    fam, path = fredholm_set
    kwargs = dict(loss=OperatorLoss(small_net()), optimizer=Adam(lr=3e-3, steps=6),
                  strategy=OperatorTrunkParallel(points=2, window=2, comm=Comm(timeout=10)),
                  train=(0, 40), test=(40, 48))
    reference, _ = fit_operator(fam, path, client="sync", **kwargs)
    with local_cluster(3) as own:
        def on_window(k, outputs):
            if k == 0:
                addr = sorted({r["worker"] for r in outputs[0].records})[0]
                os.kill(own.run(os.getpid, workers=[addr])[addr], signal.SIGKILL)

        op, hist = fit_operator(fam, path, client=own, on_window=on_window, **kwargs)
    torch.testing.assert_close(op.theta, reference.theta, rtol=0, atol=0)
    assert max(r.get("attempts", 1) for r in hist) >= 2


def test_a_split_that_cannot_hold_a_least_squares_head_or_its_grid_is_refused(fredholm_set):
    fam, path = fredholm_set
    with pytest.raises(SpecError, match="LeastSquaresHead needs every instance's whole query"):
        fit_operator(fam, path, loss=OperatorLoss(small_net()), client="sync",
                     optimizer=LeastSquaresHead(Adam(lr=3e-3, steps=2)),
                     strategy=OperatorTrunkParallel(points=2), train=(0, 40))
    with pytest.raises(SpecError, match="10 point shards of 9 query points"):
        fit_operator(fam, path, loss=OperatorLoss(small_net()), client="sync",
                     optimizer=Adam(lr=3e-3, steps=2),
                     strategy=OperatorTrunkParallel(points=10, window=None), train=(0, 40))
    with pytest.raises(SpecError, match="OperatorBranchTrunkParallel.points"):
        OperatorBranchTrunkParallel(instances=2, points=0)
    with pytest.raises(SpecError, match="strategy must be one of OperatorDataParallel"):
        fit_operator(fam, path, loss=OperatorLoss(small_net()), client="sync",
                     strategy="trunk", train=(0, 40))


# --- the planner ------------------------------------------------------------------------------
def test_the_planner_splits_what_each_rank_would_repeat_and_says_why():
    net = DeepONet(64, 2, branch=MLP(hidden=(32,)), trunk=MLP(hidden=(32, 32)), width=20)
    b, t = net._sizes()
    kw = dict(branch_layers=b, trunk_layers=t, n_params=net.n_params())
    # 1-D: few points, many instances: the trunk is cheap to repeat, the branch is not
    one_d = choose_split(4000, 33, 2, 8e9, **kw)
    assert (one_d.split, one_d.instances, one_d.points) == ("branch", 2, 1)
    # a fine grid, few instances: the trunk's 4096 points per rank are the cost to share
    fine = choose_split(64, 4096, 2, 8e9, **kw)
    assert (fine.split, fine.instances, fine.points) == ("trunk", 1, 2)
    assert "trunk (1 instance x 2 point shards" in fine.reason and "branch 2x1" in fine.reason
    # four ranks over both big: a grid
    grid = choose_split(2048, 4096, 4, 8e9, **kw)
    assert grid.split == "branch-trunk" and (grid.instances, grid.points) == (2, 2)
    # a least-squares head keeps whole grids per rank
    assert choose_split(64, 4096, 2, 8e9, points_allowed=False, **kw).split == "branch"
    # Levenberg-Marquardt's Jacobian rows on a small worker: nothing fits, and it says so
    tight = choose_split(64, 4096, 2, 1e6, jacobian=True, **kw)
    assert "NO split fits" in tight.reason
    with pytest.raises(SpecError, match="memory must be a positive number"):
        choose_split(64, 4096, 2, 0, **kw)


def test_fit_operator_without_a_strategy_takes_the_planners_split(fredholm_set):
    fam, path = fredholm_set
    op, hist = fit_operator(fam, path, loss=OperatorLoss(small_net()), client="sync",
                            optimizer=Adam(lr=3e-3, steps=2), train=(0, 40), test=(40, 48))
    assert op.split is not None and op.split.split == "branch" and "per rank" in op.split.reason
    assert {r["submodels"] for r in hist} == {"shard0/2", "shard1/2"}


# --- parametric families, end to end -----------------------------------------------------------
def _width_problem(p):
    a, w = p
    return Problem(Domain((0.0,), (1.0,)), f=lambda x: np.sin(3 * x[..., 0]) + a,
                   terms=[IntegralTerm(lambda x, t: np.exp(-(x - t)[..., 0] ** 2 / w), lam=0.5)],
                   alpha=lambda x: 1.0 + 0.5 * x[..., 0])


def _width_draw(rng):
    return np.array([rng.normal(), rng.uniform(0.1, 1.0)])


@pytest.fixture(scope="module")
def user_set(tmp_path_factory):
    fam = ParametricFamily("user-width", Domain((0.0,), (1.0,)), _width_problem, _width_draw,
                           params=("a", "w"), inputs=("f", "alpha", "w"), reference_n=32)
    path = tmp_path_factory.mktemp("data") / "user.zarr"
    generate_dataset(fam, path, 24, seed=0, client="sync", sensors=8, query=9, block=8)
    return fam, str(path)


def test_a_user_family_data_set_on_a_local_cluster_equals_the_serial_one(user_set, client,
                                                                         tmp_path):
    fam, path = user_set
    other = tmp_path / "cluster.zarr"
    generate_dataset(fam, other, 24, seed=0, client=client, sensors=8, query=9, block=8)
    a, b = OperatorDataset.open(path).read(0, 24), OperatorDataset.open(other).read(0, 24)
    for name in ("params", "f", "mu"):
        np.testing.assert_array_equal(a[name], b[name])
    # the reference: mu solves (1 + x/2) mu = f + 0.5 Int exp(-(x-t)^2/w) mu
    ref = fam.reference().solve(fam.problem(a["params"][3]))
    np.testing.assert_allclose(a["mu"][3], ref(OperatorDataset.open(path).query), rtol=1e-13)


def test_a_user_family_trains_and_its_operator_predicts_its_evaluation(user_set):
    fam, path = user_set
    net = DeepONet(fam.n_inputs(8), 1, branch=MLP(hidden=(12,)), trunk=MLP(hidden=(12,)),
                   width=8)
    assert net.sensors == 8 + 8 + 1  # f and alpha at 8 sensors, the width
    loss = OperatorLoss(net, skip=True)
    op, _ = fit_operator(fam, path, loss=loss, client="sync", optimizer=LevenbergMarquardt(
        steps=15), strategy=OperatorTrunkParallel(points=2, window=None), train=(0, 20),
        test=(20, 24))
    torch.testing.assert_close(op.theta, _theta_one_process(fam, path, loss), rtol=0, atol=1e-10)
    from daskie.operator.evaluation import evaluate

    ev = evaluate(op, OperatorDataset.open(path), (20, 24), (0, 20))
    params = OperatorDataset.open(path).read(20, 24)["params"]
    np.testing.assert_allclose(op.predict(params), ev["prediction"].values, rtol=0, atol=1e-12)
    assert ev.attrs["rel_l2_median"] < ev.attrs["baseline_rel_l2_median"]
    with pytest.raises(SpecError, match="physics > 0 needs a Family"):
        fit_operator(fam, path, loss=OperatorLoss(net, physics=1.0), client="sync",
                     optimizer=Adam(steps=1), train=(0, 20))


def _theta_one_process(fam, path, loss):
    disc = loss.discretize(TrainingSet(path, fam, (0, 20), (20, 24)), seed=0)
    state, _ = train(Objective(disc), LevenbergMarquardt(steps=15), seed=0)
    return state.theta
