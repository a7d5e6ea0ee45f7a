"""Operator learning: DeepONet, the data set as tasks (round trip, resume), the physics
residual, data-parallel == one process, serial == LocalCluster, and a trained operator
against a trivial baseline."""

import numpy as np
import pytest
import torch
import xarray as xr
from torch.func import grad, vmap

from daskie.errors import SpecError
from daskie.nn import MLP, DeepONet
from daskie.operator import (Operator, OperatorLoss, TrainingSet, fit_operator, generate_dataset,
                             learn_operator)
from daskie.operator.data import sensor_points, solve_block
from daskie.problems.families import family
from daskie.store.dataset import OperatorDataset
from daskie.operator import OperatorDataParallel
from daskie.train import Adam, Chain, LeastSquaresHead, LevenbergMarquardt, Objective, train

SMALL = dict(sensors=16, query=9, block=8)


def small_net(sensors=16, dim=1):
    return DeepONet(sensors, dim, branch=MLP(hidden=(12,)), trunk=MLP(hidden=(12,)), width=8)


@pytest.fixture(scope="module")
def fredholm_set(tmp_path_factory):
    fam = family("fredholm-1d")
    path = tmp_path_factory.mktemp("data") / "fredholm.zarr"
    generate_dataset(fam, path, 48, seed=0, client="sync", **SMALL)
    return fam, str(path)


# --- DeepONet ---------------------------------------------------------------------------------
@pytest.mark.parametrize("branch", [MLP(hidden=(9, 7)), None], ids=["mlp", "linear"])
def test_deeponet_rows_equal_its_cartesian_product_and_jacobian_equals_autograd(branch):
    net = DeepONet(6, 2, branch=branch, trunk=MLP(hidden=(8,), activation="sin"), width=5)
    theta = net.init_params(8, torch.Generator().manual_seed(1)) + 0.05
    assert theta.numel() == net.n_params(8)
    f, x = torch.randn(4, 6, dtype=torch.float64), torch.rand(3, 2, dtype=torch.float64)
    rows = torch.cat([f.repeat_interleave(3, 0), x.repeat(4, 1)], dim=1)
    torch.testing.assert_close(net.apply(theta, rows).view(4, 3), net.operator(theta, f, x),
                               rtol=0, atol=1e-14)
    auto = vmap(grad(lambda th, z: net.apply(th, z)), in_dims=(None, 0))(theta, rows)
    torch.testing.assert_close(net.point_jacobian(theta, rows), auto, rtol=0, atol=1e-13)


def test_deeponet_several_outputs_and_its_checks():
    net = DeepONet(4, 1, outputs=3, width=5, branch=MLP(hidden=(6,)), trunk=MLP(hidden=(6,)))
    theta = net.init_params(5, torch.Generator().manual_seed(0))
    out = net.operator(theta, torch.randn(2, 4, dtype=torch.float64),
                       torch.rand(7, 1, dtype=torch.float64))
    assert out.shape == (2, 7, 3)
    with pytest.raises(SpecError, match="DeepONet.width"):
        DeepONet(4, width=0)
    with pytest.raises(SpecError, match="points of 5 inputs"):
        net.n_params(6)


# --- the data set -----------------------------------------------------------------------------
def test_data_set_round_trips_through_xarray_and_holds_the_reference_solutions(fredholm_set):
    fam, path = fredholm_set
    ds = xr.open_zarr(path)
    assert ds.sizes["instance"] == 48 and bool(ds.done.all())
    params = fam.sample(48, seed=0)
    np.testing.assert_array_equal(ds.params.values, params)
    x = ds.query_x.values
    np.testing.assert_array_equal(x, sensor_points(fam, 9))
    for i in (0, 17, 47):
        ref = fam.reference().solve(fam.problem(params[i]))
        np.testing.assert_allclose(ds.mu.values[i], ref(x), rtol=0, atol=1e-14)
    np.testing.assert_allclose(ds.f.values, fam.f_values(params, ds.sensor_x.values), atol=1e-15)


def test_interrupted_generation_resumes_without_recomputing(fredholm_set, tmp_path):
    fam, whole = fredholm_set
    path = tmp_path / "half.zarr"

    def stop_after_two(k, written, pending):
        if written == 2:
            raise KeyboardInterrupt("stopped by the test")

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(fam, path, 48, seed=0, client="sync", ahead=1, on_block=stop_after_two,
                         **SMALL)
    store = OperatorDataset.open(path)
    assert store.pending() == [2, 3, 4, 5]
    out = generate_dataset(fam, path, 48, seed=0, client="sync", **SMALL)
    assert (out["solved"], out["skipped"]) == (4, 2)
    again = generate_dataset(fam, path, 48, seed=0, client="sync", **SMALL)
    assert (again["solved"], again["skipped"]) == (0, 6)
    a, b = xr.open_zarr(whole), xr.open_zarr(path)
    for name in ("params", "f", "mu"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_a_data_set_made_on_a_local_cluster_equals_the_serial_one(fredholm_set, client,
                                                                    tmp_path):
    fam, whole = fredholm_set
    path = tmp_path / "cluster.zarr"
    out = generate_dataset(fam, path, 48, seed=0, client=client, **SMALL)  # tasks write blocks
    assert (out["solved"], out["skipped"]) == (6, 0) and OperatorDataset.open(path).complete
    a, b = xr.open_zarr(whole), xr.open_zarr(path)
    for name in ("params", "f", "mu"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_a_data_set_with_other_settings_is_never_overwritten(fredholm_set):
    fam, path = fredholm_set
    with pytest.raises(SpecError, match="other settings"):
        generate_dataset(fam, path, 48, seed=1, client="sync", **SMALL)


def test_training_needs_a_complete_data_set(fredholm_set, tmp_path):
    fam, _ = fredholm_set
    path = tmp_path / "partial.zarr"
    spec = {"n": 16, "block": 8}
    store = OperatorDataset.create(path, {**spec, "family": fam.describe()},
                                   sensor_points(fam, 16), sensor_points(fam, 9), fam.n_params)
    store.write_block(0, solve_block(fam, 0, 0, 8, store.sensors, store.query))
    with pytest.raises(SpecError, match="not complete"):
        fit_operator(fam, str(path), small_net(), client="sync")


# --- the physics-informed residual ------------------------------------------------------------
@pytest.mark.parametrize("name", ["fredholm-1d", "volterra-1d-sin", "fredholm-2d"])
def test_physics_residual_of_the_reference_solution_is_at_rounding_level(name):
    fam = family(name)
    loss = OperatorLoss(small_net(4, fam.dim), data=0.0, physics=1.0, quadrature=32)
    params = fam.sample(3, seed=5)
    x = fam.domain.sample(11, seed=3)
    terms = loss.physics_terms(fam, params, x)
    refs = [fam.reference().solve(fam.problem(p)) for p in params]
    nodes = terms["nodes"]
    mu_x = torch.tensor(np.stack([r(x) for r in refs]))
    mu_nodes = torch.tensor(np.stack([r(nodes.reshape(-1, fam.dim)).reshape(nodes.shape[:-1])
                                      for r in refs]))
    res = loss.physics_residual(fam, terms, mu_x, mu_nodes)
    assert res.shape == (3, 11)
    assert float(res.abs().max()) < 1e-12
    # and a wrong solution is far from it: the residual measures something
    assert float(loss.physics_residual(fam, terms, 1.01 * mu_x, 1.01 * mu_nodes).abs().max()) > 1e-3


# --- data-parallel == one process; serial == LocalCluster --------------------------------------
def _one_process(fam, path, loss, optimizer, seed=0):
    disc = loss.discretize(TrainingSet(path, fam, (0, 40), (40, 48)), seed=seed)
    state, _ = train(Objective(disc), optimizer, seed=seed)
    return state.theta


@pytest.mark.parametrize("optimizer", [Adam(lr=3e-3, steps=12), LevenbergMarquardt(steps=4),
                                       LeastSquaresHead(Adam(lr=3e-3, steps=12))],
                         ids=["adam", "lm", "lshead"])
def test_data_parallel_equals_one_process(fredholm_set, optimizer):
    fam, path = fredholm_set
    loss = OperatorLoss(small_net())
    op, hist = fit_operator(fam, path, loss=loss, client="sync", optimizer=optimizer,
                            strategy=OperatorDataParallel(shards=2, window=3),
                            train=(0, 40), test=(40, 48))
    reference = _one_process(fam, path, loss, optimizer)
    if isinstance(optimizer, LeastSquaresHead):
        # the head's solve amplifies the sums' rounding by up to 1 / ridge (measured: 1.4e-10
        # of the parameters' scale): equal up to that
        scale = float(reference.abs().max())
        assert float((op.theta - reference).abs().max()) < 1e-9 * scale
    else:
        torch.testing.assert_close(op.theta, reference, rtol=0, atol=1e-10)
    assert {r["rank"] for r in hist} == {0, 1}


@pytest.mark.parametrize("skip", [False, True], ids=["mu", "integral-term"])
def test_physics_informed_training_is_data_parallel_too(fredholm_set, skip):
    fam, path = fredholm_set
    loss = OperatorLoss(small_net(), data=1.0, physics=1.0, quadrature=12, skip=skip)
    optimizer = Adam(lr=3e-3, steps=6)
    op, _ = fit_operator(fam, path, loss=loss, client="sync", optimizer=optimizer,
                         strategy=OperatorDataParallel(shards=2, window=None),
                         train=(0, 40), test=(40, 48))
    torch.testing.assert_close(op.theta, _one_process(fam, path, loss, optimizer), rtol=0,
                               atol=1e-10)


@pytest.mark.parametrize("optimizer", [Adam(lr=3e-3, steps=10),
                                       LeastSquaresHead(Adam(lr=3e-3, steps=10))],
                         ids=["adam", "lshead"])
def test_serial_equals_local_cluster(fredholm_set, client, optimizer):
    fam, path = fredholm_set
    kwargs = dict(loss=OperatorLoss(small_net()), optimizer=optimizer,
                  strategy=OperatorDataParallel(shards=2, window=4), train=(0, 40), test=(40, 48))
    serial, _ = fit_operator(fam, path, client="sync", **kwargs)
    cluster, hist = fit_operator(fam, path, client=client, **kwargs)
    torch.testing.assert_close(cluster.theta, serial.theta, rtol=0, atol=1e-12)
    assert len({r["worker"] for r in hist}) == 2


def _disc(fam, path, loss, seed=0):
    return loss.discretize(TrainingSet(path, fam, (0, 40), (40, 48)), seed=seed)


def test_rows_of_a_product_are_evaluated_once_per_factor_with_the_same_numbers(fredholm_set):
    import dataclasses

    fam, path = fredholm_set
    for loss in (OperatorLoss(small_net()), OperatorLoss(small_net(), physics=1.0, quadrature=6)):
        disc = _disc(fam, path, loss)
        assert all(ev.product is not None for ev in disc.evaluations.values())
        rows = dataclasses.replace(disc, evaluations={
            k: dataclasses.replace(ev, product=None) for k, ev in disc.evaluations.items()})
        fast, slow = Objective(disc), Objective(rows)
        theta = fast.init_params(3) + 0.1
        for a, b in zip(fast.value_and_grad(theta), slow.value_and_grad(theta)):
            torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-13,
                                       atol=1e-15)


@pytest.mark.parametrize("branch", [MLP(hidden=(12,)), None], ids=["mlp", "linear"])
def test_the_least_squares_head_is_the_minimiser_of_the_data_misfit(fredholm_set, branch):
    fam, path = fredholm_set
    net = DeepONet(16, 1, branch=branch, trunk=MLP(hidden=(12,)), width=8)
    obj = Objective(_disc(fam, path, OperatorLoss(net)))
    theta = obj.init_params(5) + 0.05
    mask = obj.head_mask()
    assert int(mask.sum()) == (12 + 1 if branch is not None else 17) * 8
    ridge = 1e-6
    solved = obj.with_head(theta, obj.head_sums(theta), ridge=ridge)
    torch.testing.assert_close(solved[~mask], theta[~mask], rtol=0, atol=0)
    # the network is linear in the head: its ridge least-squares solution by numpy, from the
    # rows (the ridge relative to the largest eigenvalue of the normal equations)
    r, J = obj.jacobian(theta)
    A = J[:, mask].numpy()
    b = (A @ theta[mask].numpy()) - r.numpy()
    M = A.T @ A
    expected = np.linalg.solve(M + ridge * np.linalg.eigvalsh(M).max() * np.eye(len(M)), A.T @ b)
    np.testing.assert_allclose(solved[mask].numpy(), expected, rtol=1e-7,
                               atol=1e-9 * np.abs(expected).max())
    # stationary for misfit + ridge: the misfit's gradient there is -2 ridge s_max W
    _, g = obj.value_and_grad(solved)
    np.testing.assert_allclose(g[mask].numpy(), -2 * ridge * np.linalg.eigvalsh(M).max()
                               * solved[mask].numpy(), rtol=1e-5, atol=1e-12)
    assert obj.loss(solved) < obj.loss(theta)


def test_a_least_squares_head_trains_only_the_hidden_layers_by_gradient(fredholm_set):
    fam, path = fredholm_set
    obj = Objective(_disc(fam, path, OperatorLoss(small_net())))
    adam = Adam(lr=3e-3, steps=20)
    state, hist = train(obj, LeastSquaresHead(adam), seed=0)
    plain, _ = train(obj, adam, seed=0)
    # the returned head is the exact one for the final hidden layers
    again = obj.with_head(state.theta, obj.head_sums(state.theta), LeastSquaresHead().ridge)
    torch.testing.assert_close(again, state.theta, rtol=0, atol=1e-12)
    # measured: loss 7.6e-2 against 6.5e-1 for Adam alone, 20 steps
    assert float(obj.loss(state.theta)) < float(obj.loss(plain.theta)) / 4
    assert hist[-1]["optimizer"] == "LSHead(Adam)"


def test_a_least_squares_head_is_refused_where_the_loss_is_not_linear_in_it(fredholm_set,
                                                                              tmp_path):
    fam, path = fredholm_set
    physics = OperatorLoss(small_net(), physics=1.0, quadrature=6)
    with pytest.raises(SpecError, match="no output layer to solve by least squares"):
        train(Objective(_disc(fam, path, physics)), LeastSquaresHead(Adam(steps=2)))
    with pytest.raises(SpecError, match="needs OperatorLoss\\(physics=0\\)"):
        fit_operator(fam, path, loss=physics, optimizer=LeastSquaresHead(Adam(steps=2)),
                     client="sync", train=(0, 40), test=(40, 48))
    # learn_operator refuses before it generates any data
    with pytest.raises(SpecError, match="needs OperatorLoss\\(physics=0\\)"):
        learn_operator(fam, 16, data=tmp_path / "none.zarr", loss=physics,
                       optimizer=LeastSquaresHead(Adam(steps=2)), client="sync", **SMALL)
    assert not (tmp_path / "none.zarr").exists()
    with pytest.raises(SpecError, match="LeastSquaresHead.ridge"):
        LeastSquaresHead(ridge=-1.0)
    with pytest.raises(SpecError, match="LeastSquaresHead.inner"):
        LeastSquaresHead(Chain((Adam(steps=2), Adam(steps=2))))


# --- a trained operator -----------------------------------------------------------------------
def test_a_trained_operator_beats_the_mean_solution_on_held_out_instances(fredholm_set):
    fam, path = fredholm_set
    op, hist = fit_operator(fam, path, small_net(), client="sync",
                            optimizer=LevenbergMarquardt(steps=25),
                            strategy=OperatorDataParallel(shards=1, window=None),
                            train=(0, 40), test=(40, 48))
    ds = xr.open_zarr(path)
    mu, f = ds.mu.values, ds.f.values
    model = op.relative_errors(op(f[40:]), mu[40:])
    baseline = op.relative_errors(np.broadcast_to(mu[:40].mean(axis=0), mu[40:].shape), mu[40:])
    # measured: median 11 % against 91 % for the mean solution (40 training instances)
    assert np.median(model) < np.median(baseline) / 5
    assert op.predict(fam.sample(48, seed=0)[40:]).shape == (8, 9)
    ds_pred = op.dataset(f[40:42])
    assert ds_pred.mu.shape == (2, 9)
    np.testing.assert_allclose(ds_pred.mu.values, op(f[40:42]), rtol=0, atol=0)


def test_a_family_that_varies_lambda_gives_lambda_to_the_branch(tmp_path):
    fam = family("volterra-1d-sin")
    path = str(tmp_path / "volterra.zarr")
    generate_dataset(fam, path, 16, seed=0, client="sync", **SMALL)
    with pytest.raises(SpecError, match="16 sensors and lambda"):
        fit_operator(fam, path, small_net(16), client="sync")
    op, _ = fit_operator(fam, path, small_net(17), client="sync", optimizer=Adam(steps=2),
                         strategy=OperatorDataParallel(shards=2, window=None), train=(0, 12),
                         test=(12, 16))
    params = fam.sample(16, seed=0)
    inputs = op.inputs(params)
    np.testing.assert_array_equal(inputs[:, -1], fam.lam_values(params))
    np.testing.assert_allclose(op.predict(params), op(inputs), rtol=0, atol=0)


@pytest.mark.parametrize("batch, optimizer", [
    (None, Adam(lr=3e-3, steps=9)), (8, Adam(lr=3e-3, steps=9)),
    (None, LeastSquaresHead(Adam(lr=3e-3, steps=9)))], ids=["full-batch", "mini-batch", "lshead"])
def test_a_stopped_training_resumes_to_the_numbers_of_an_unstopped_one(fredholm_set, tmp_path,
                                                                        batch, optimizer):
    fam, path = fredholm_set
    kwargs = dict(loss=OperatorLoss(small_net()), optimizer=optimizer,
                  strategy=OperatorDataParallel(shards=2, window=3, batch=batch), train=(0, 40),
                  test=(40, 48), client="sync")
    straight, full_history = fit_operator(fam, path, **kwargs)
    store = str(tmp_path / "run.zarr")

    def stop_after_first(k, outputs):
        if k == 0:
            raise KeyboardInterrupt("stopped by the test")

    with pytest.raises(KeyboardInterrupt):
        fit_operator(fam, path, store=store, on_window=stop_after_first, **kwargs)
    resumed, history = fit_operator(fam, path, store=store, resume=True, **kwargs)
    torch.testing.assert_close(resumed.theta, straight.theta, rtol=0, atol=0)
    assert [r["epoch"] for r in history] == [r["epoch"] for r in full_history]
    loaded = type(resumed).load(store)
    assert loaded.net == resumed.net and loaded.family is not None
    np.testing.assert_array_equal(loaded(np.ones((2, 16))), resumed(np.ones((2, 16))))
    with pytest.raises(SpecError, match="the stored run differs in optimizer"):
        fit_operator(fam, path, store=store, resume=True,
                     **{**kwargs, "optimizer": Adam(lr=1e-3, steps=9)})


def test_bad_operator_arguments_are_refused_with_the_field_named(fredholm_set):
    fam, path = fredholm_set
    with pytest.raises(SpecError, match="OperatorDataParallel.window"):
        OperatorDataParallel(window=0)
    with pytest.raises(SpecError, match="data > 0 or physics > 0"):
        OperatorLoss(small_net(), data=0.0)
    with pytest.raises(SpecError, match="16 sensors in 1-D"):
        fit_operator(fam, path, small_net(12), client="sync")
    with pytest.raises(SpecError, match="holds family 'fredholm-1d'"):
        fit_operator(family("volterra-1d-sin"), path, small_net(17), client="sync")
    with pytest.raises(SpecError, match="resume=True needs the store"):
        fit_operator(fam, path, small_net(), client="sync", resume=True)
    with pytest.raises(SpecError, match="on_window must be a callable or None, got 3"):
        fit_operator(fam, path, small_net(), client="sync", on_window=3)


# --- mini-batches -----------------------------------------------------------------------------
def test_each_rank_visits_its_shard_once_per_pass_in_its_own_seeded_order():
    from daskie.operator.batches import batch_of, rank_share

    assert [rank_share(10, r, 3) for r in range(3)] == [3, 3, 4]
    # 17 instances, 4 per step: 4 steps per pass, each instance at most once, one left out
    steps = [batch_of(5, 1, 17, 4, t) for t in range(4)]
    seen = np.concatenate(steps)
    assert len(set(seen.tolist())) == 16 and seen.max() < 17
    assert not np.array_equal(batch_of(5, 1, 17, 4, 4), steps[0])  # the next pass reshuffles
    assert not np.array_equal(batch_of(5, 0, 17, 4, 0), steps[0])  # another rank, another order
    np.testing.assert_array_equal(batch_of(5, 1, 17, 4, 2), steps[2])  # a function of the step


def test_a_mini_batch_step_loss_is_the_mean_over_the_ranks_batches(fredholm_set):
    # every step's recorded loss, recomputed from the DeepONet itself on the union of the
    # instances the ranks' seeded orders pick (the batch of step t at the parameters after t)
    from daskie.operator.batches import batch_of, rank_share
    from daskie.operator.formulation import instance_shard

    fam, path = fredholm_set
    net, batch = small_net(), 10
    thetas = []
    op, hist = fit_operator(fam, path, loss=OperatorLoss(net), client="sync",
                            optimizer=Adam(lr=3e-3, steps=4),
                            strategy=OperatorDataParallel(shards=2, window=1, batch=batch),
                            train=(0, 40), test=(40, 48),
                            on_window=lambda k, out: thetas.append(out[0].state.theta))
    ds = xr.open_zarr(path)
    f, mu, x = ds.f.values, ds.mu.values, ds.query_x.values
    theta0 = OperatorLoss(net).discretize(TrainingSet(path, fam, (0, 40)))
    start = Objective(theta0).init_params(0)
    for step, theta in enumerate([start] + thetas[:-1]):
        picked = []
        for r in range(2):
            lo, hi = instance_shard(0, 40, (r, 2))
            picked += list(lo + batch_of(0, r, hi - lo, rank_share(batch, r, 2), step))
        assert len(set(picked)) == batch
        pred = net.operator(theta, torch.tensor(f[picked]), torch.tensor(x)).numpy()
        expected = np.mean((pred - mu[picked]) ** 2)
        recorded = [r["loss"] for r in hist if r["epoch"] == step + 1 and r["rank"] == 0]
        np.testing.assert_allclose(recorded, [expected], rtol=1e-12)


@pytest.mark.parametrize("optimizer", [Adam(lr=3e-3, steps=10),
                                       LeastSquaresHead(Adam(lr=3e-3, steps=10))],
                         ids=["adam", "lshead"])
def test_mini_batch_training_serial_equals_local_cluster(fredholm_set, client, optimizer):
    fam, path = fredholm_set
    kwargs = dict(loss=OperatorLoss(small_net()), optimizer=optimizer,
                  strategy=OperatorDataParallel(shards=2, window=4, batch=8), train=(0, 40),
                  test=(40, 48))
    serial, _ = fit_operator(fam, path, client="sync", **kwargs)
    cluster, hist = fit_operator(fam, path, client=client, **kwargs)
    torch.testing.assert_close(cluster.theta, serial.theta, rtol=0, atol=0)
    assert len({r["worker"] for r in hist}) == 2
    full, _ = fit_operator(fam, path, client="sync",
                           **{**kwargs, "strategy": OperatorDataParallel(shards=2, window=4)})
    assert not torch.allclose(full.theta, serial.theta)  # the batches are not the full batch


def test_the_same_numbers_after_a_worker_is_killed_during_mini_batch_training(fredholm_set):
    # as tests/test_faults.py: kill a worker that ran window 0; the window submitted ahead on
    # its results runs again from its input on the workers alive, with the same batches
    import os
    import signal

    from daskie.cluster import local_cluster
    from daskie.strategies import Comm

    fam, path = fredholm_set
    kwargs = dict(loss=OperatorLoss(small_net()), optimizer=Adam(lr=3e-3, steps=6),
                  strategy=OperatorDataParallel(shards=2, window=2, batch=8,
                                                comm=Comm(timeout=10)),
                  train=(0, 40), test=(40, 48))
    reference, _ = fit_operator(fam, path, client="sync", **kwargs)
    with local_cluster(3) as own:
        def on_window(k, outputs):
            if k == 0:
                addr = sorted({r["worker"] for r in outputs[0].records})[0]
                os.kill(own.run(os.getpid, workers=[addr])[addr], signal.SIGKILL)

        op, hist = fit_operator(fam, path, client=own, on_window=on_window, **kwargs)
    torch.testing.assert_close(op.theta, reference.theta, rtol=0, atol=0)
    assert max(r.get("attempts", 1) for r in hist) >= 2  # a window ran again


def test_a_batch_larger_than_a_shard_is_refused_with_the_field_named(fredholm_set):
    fam, path = fredholm_set
    with pytest.raises(SpecError, match="OperatorDataParallel.batch"):
        OperatorDataParallel(batch=0)
    with pytest.raises(SpecError, match="batch=50 needs 25 instances"):
        fit_operator(fam, path, small_net(), client="sync", optimizer=Adam(steps=1),
                     strategy=OperatorDataParallel(shards=2, batch=50), train=(0, 40))


# --- the integral term only (skip) ------------------------------------------------------------
def test_with_skip_the_reference_less_f_has_zero_data_and_physics_residuals(fredholm_set):
    # the network's target is mu - f / alpha: the reference's values there give residuals at
    # rounding level in both blocks, and the plain target would not
    fam, path = fredholm_set
    loss = OperatorLoss(small_net(), data=1.0, physics=1.0, quadrature=32, skip=True)
    disc = loss.discretize(TrainingSet(path, fam, (0, 3)))
    params = fam.sample(3, seed=0)
    x = OperatorDataset.open(path).query
    nodes = loss.physics_rule(fam, x)[0].reshape(-1, 1)
    refs = [fam.reference().solve(fam.problem(p)) for p in params]
    less_f = lambda pts: np.stack([r(pts) for r in refs]) - fam.f_values(params, pts)  # noqa: E731
    values = {"G@x": torch.tensor(less_f(x).reshape(-1)),
              "G@nodes": torch.tensor(less_f(nodes).reshape(-1))}
    blocks = disc.residual_blocks(values)
    assert float(blocks["data"].abs().max()) < 1e-13
    assert float(blocks["physics"].abs().max()) < 1e-12
    values["G@x"] = values["G@x"] + torch.tensor(fam.f_values(params, x).reshape(-1))
    assert float(disc.residual_blocks(values)["data"].abs().max()) > 0.1


def test_an_operator_with_skip_adds_f_back_from_the_sensor_values(fredholm_set):
    fam, path = fredholm_set
    op, _ = fit_operator(fam, path, loss=OperatorLoss(small_net(), skip=True), client="sync",
                         optimizer=Adam(steps=3),
                         strategy=OperatorDataParallel(shards=1, window=None),
                         train=(0, 40), test=(40, 48))
    params = fam.sample(4, seed=9)
    x = np.linspace(0, 1, 7)[:, None]
    plain = Operator(op.net, op.theta, op.sensors, op.query, fam)  # the network alone
    # f at new points, fitted from the 16 sensor values in the field's basis: exact
    np.testing.assert_allclose(op(op.inputs(params), x) - plain(op.inputs(params), x),
                               fam.f_values(params, x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(op.predict(params, x), op(op.inputs(params), x), atol=1e-12)
    with pytest.raises(SpecError, match="needs its family"):
        Operator(op.net, op.theta, op.sensors, op.query, None, skip=True)
