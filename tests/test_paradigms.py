"""Seed 000's baselines on the SPMD runner: model, pipeline (GPipe) and hybrid parallelism.

The layers of every network split over ranks (daskie.nn.stages), activations and their
gradients sent stage to stage through daskie.collectives (daskie.runtime.stages): each
paradigm equals one-process full-batch training, serial (threads) == LocalCluster, with
window checkpoints (stop and resume == uninterrupted) and a killed worker changing nothing."""

import os

import numpy as np
import pytest
import torch
import xarray as xr

from daskie import (LBFGS, Adam, Comm, Hybrid, LevenbergMarquardt, ModelParallel, Monolithic,
                    OrderReduction, Pipeline, QuadratureCollocation, solve)
from daskie.cluster import local_cluster
from daskie.collectives import local_groups, run_threads
from daskie.errors import SpecError
from daskie.nn import MLP
from daskie.nn.stages import StageSplit
from daskie.problems import catalog
from daskie.runtime import DaskExecutor
from daskie.runtime.stages import StagedObjective
from daskie.store import RunStore
from daskie.train import Objective

# the runtime's numbers on short trainings (tests/conftest.py: runtime_numbers)
pytestmark = pytest.mark.usefixtures("runtime_numbers")

SMALL_OR = OrderReduction(net=MLP(hidden=(10, 10, 10)), points=96, aux_points=128)
SMALL_Q = QuadratureCollocation(net=MLP(hidden=(12, 12, 12)), points=160)


@pytest.fixture(scope="module")
def e1():
    return catalog.get("E1")


def _mu(ds):
    return ds["mu"].values


# --- stages of one network --------------------------------------------------------------
@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_stages_one_after_another_are_the_network(stages):
    net = MLP(hidden=(7, 9, 5), activation="tanh")
    split = StageSplit.balanced(net, 2, stages)
    assert split.stages == stages and split.bounds[0] == 0 and split.bounds[-1] == 4
    # the stages' parameter ranges tile the flat vector
    ranges = [split.param_range(s) for s in range(stages)]
    assert ranges[0][0] == 0 and ranges[-1][1] == net.n_params(2)
    assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:]))
    theta = net.init_params(2, torch.Generator().manual_seed(3))
    z = torch.rand(11, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    h, t = z, None
    for s in range(stages):
        assert h.shape[1] == split.width_in(s)
        h, t = split.forward(s, theta, h, t, axis=1)
    out, tangent = net.apply_tangent(theta, z, 1)
    torch.testing.assert_close(h[:, 0], out, rtol=0, atol=1e-15)
    torch.testing.assert_close(t[:, 0], tangent, rtol=0, atol=1e-15)
    h = z
    for s in range(stages):
        h, _ = split.forward(s, theta, h)
    torch.testing.assert_close(h[:, 0], net.apply(theta, z), rtol=0, atol=1e-15)


def test_balanced_stages_hold_equal_work():
    # the paper's net on 1-D inputs: 40 + 6 x 1600 + 40 multiply-adds; two stages of 4 layers
    assert StageSplit.balanced(MLP.paper(), 1, 2).bounds == (0, 4, 8)
    assert StageSplit.balanced(MLP.paper(), 1, 4).bounds == (0, 2, 4, 6, 8)
    with pytest.raises(SpecError, match="at least 5 layers"):
        StageSplit.balanced(MLP(hidden=(4, 4, 4)), 2, 5)
    with pytest.raises(SpecError, match="StageSplit.bounds"):
        StageSplit(MLP(hidden=(4, 4)), 2, (0, 2, 2, 3))


def _staged_grad(group, formulation, problem, stages, replicas, micro, theta):
    shard = (group.rank // stages, replicas) if replicas > 1 else None
    local = Objective(formulation.discretize(problem, shard=shard))
    obj = StagedObjective(local, group, stages, replicas, micro)
    loss, g = obj.value_and_grad(theta)
    with torch.no_grad():
        plain = float(obj.loss(theta))
    return loss, g, plain, obj.window_stats()


@pytest.mark.parametrize("stages, replicas, micro", [(2, 1, 1), (2, 1, 3), (3, 1, 2), (2, 2, 2)],
                         ids=["mp2", "pp2x3", "pp3x2", "hp2x2"])
@pytest.mark.parametrize("formulation", [SMALL_OR, SMALL_Q], ids=["order-reduction", "quadrature"])
def test_staged_gradient_is_the_one_process_gradient(e1, formulation, stages, replicas, micro):
    full = Objective(formulation.discretize(e1))
    theta = full.init_params(0)
    loss, grad = full.value_and_grad(theta)
    n = stages * replicas
    with local_groups(n) as groups:
        out = run_threads(groups, _staged_grad,
                          [(formulation, e1, stages, replicas, micro, theta)] * n)
    for r, (l_r, g_r, plain, stats) in enumerate(out):
        assert l_r == pytest.approx(loss, rel=1e-13) and plain == pytest.approx(loss, rel=1e-13)
        torch.testing.assert_close(g_r, grad, rtol=0, atol=1e-13)
        assert stats["stage"] == r % stages and 0.0 <= stats["bubble"] <= 1.0
        # only stages with a neighbour send anything (activations or their gradients)
        assert (stats["p2p_bytes"] > 0) == (stages > 1)


# --- strategies: one process == serial == cluster ---------------------------------------------
@pytest.mark.parametrize("strategy", [ModelParallel(window=3), Pipeline(window=3, micro_batches=3)],
                         ids=["model-parallel", "pipeline"])
def test_layer_stages_equal_one_process_training(e1, client, strategy):
    opt = Adam(lr=1e-2, steps=6)
    mono = solve(e1, SMALL_OR, Monolithic(), opt, client="sync")
    serial = solve(e1, SMALL_OR, strategy, opt, client="sync")
    dist = solve(e1, SMALL_OR, strategy, opt, client=client)
    np.testing.assert_array_equal(_mu(serial), _mu(dist))  # same stages, same sums
    np.testing.assert_allclose(_mu(dist), _mu(mono), rtol=0, atol=1e-10)
    assert dist.attrs["strategy"] == strategy.label and dist.attrs["epochs"] == 6
    last = ~np.isnan(dist["history_bubble"].values)
    assert set(dist["history_stage"].values[last]) == {0.0, 1.0}  # both stages reported
    bubble = dist["history_bubble"].values[last]
    assert np.all((bubble > 0) & (bubble < 1))  # each stage waited for the other, not always
    assert np.all(dist["history_p2p_bytes"].values[last] > 0)


def test_pipeline_with_lbfgs_equals_one_process(e1):
    opt = LBFGS(steps=3)
    mono = solve(e1, SMALL_Q, Monolithic(), opt, client="sync")
    pipe = solve(e1, SMALL_Q, Pipeline(window=2, micro_batches=2), opt, client="sync")
    np.testing.assert_allclose(_mu(pipe), _mu(mono), rtol=0, atol=1e-10)


def test_hybrid_two_by_two_equals_one_process_training(e1):
    opt = Adam(lr=1e-2, steps=4)
    mono = solve(e1, SMALL_Q, Monolithic(), opt, client="sync")
    serial = solve(e1, SMALL_Q, Hybrid(window=2, micro_batches=2), opt, client="sync")
    np.testing.assert_allclose(_mu(serial), _mu(mono), rtol=0, atol=1e-10)
    steps = serial["history_kind"].values == "step"
    assert set(serial["history_rank"].values[steps]) == {0.0, 1.0, 2.0, 3.0}


@pytest.mark.slow
def test_hybrid_on_four_workers_equals_serial(e1):
    opt = Adam(lr=1e-2, steps=4)
    serial = solve(e1, SMALL_Q, Hybrid(window=2, micro_batches=2), opt, client="sync")
    with local_cluster(workers=4) as client4:  # 2 replicas x 2 stages: one rank per worker
        dist = solve(e1, SMALL_Q, Hybrid(window=2, micro_batches=2), opt, client=client4)
    np.testing.assert_array_equal(_mu(dist), _mu(serial))
    steps = dist["history_kind"].values == "step"
    assert set(dist["history_rank"].values[steps]) == {0.0, 1.0, 2.0, 3.0}
    labels = {s for s in dist["history_submodels"].values[steps]}
    assert labels == {f"stage{s}/2 replica{d}/2" for s in (0, 1) for d in (0, 1)}


# --- checkpoints and faults ------------------------------------------------------------------
def test_pipeline_stopped_and_resumed_equals_uninterrupted(client, tmp_path):
    kw = dict(formulation=SMALL_Q, optimizer=Adam(lr=1e-2, steps=9),
              strategy=Pipeline(window=3, micro_batches=2), client=client)
    whole = solve("nvolterra1d", store=tmp_path / "whole.zarr", **kw)

    def stop_after_second(k, summary):
        if k == 1:
            raise KeyboardInterrupt

    path = tmp_path / "part.zarr"
    with pytest.raises(KeyboardInterrupt):
        solve("nvolterra1d", store=path, on_window=stop_after_second, **kw)
    assert RunStore(path, mode="a").latest_checkpoint().window == 1
    resumed = solve("nvolterra1d", store=path, resume=True, **kw)
    np.testing.assert_array_equal(resumed.mu.values, whole.mu.values)
    assert resumed.attrs["epochs"] == whole.attrs["epochs"] == 9
    windows = xr.open_zarr(path)
    joint = windows.history_kind.values == "window"
    assert sorted(windows.history_window.values[joint].astype(int)) == [0, 1, 2]


@pytest.mark.slow
def test_killing_a_stage_worker_mid_run_changes_nothing(e1):
    opt = Adam(lr=1e-2, steps=8)
    strategy = ModelParallel(window=2, comm=Comm(timeout=10))
    reference = solve(e1, SMALL_Q, strategy, opt, client="sync")
    with local_cluster(2) as client:
        def on_window(k, summary):
            # window 0 is gathered; the windows after it, submitted ahead, run or hold their
            # results on both stages' workers: kill one, and a window must run again
            if k == 0:
                addr = sorted(DaskExecutor(client).workers())[0]
                os.kill(client.run(os.getpid, workers=[addr])[addr], 9)

        ds = solve(e1, SMALL_Q, strategy, opt, client=client, on_window=on_window)
    np.testing.assert_array_equal(_mu(ds), _mu(reference))
    assert np.nanmax(ds["history_attempts"].values) >= 2  # a window ran again on a fresh group


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("build, match", [
    (lambda: ModelParallel(stages=0), "ModelParallel.stages"),
    (lambda: Pipeline(micro_batches=0), "Pipeline.micro_batches"),
    (lambda: Pipeline(window=-1), "Pipeline.window"),
    (lambda: Hybrid(replicas=0), "Hybrid.replicas"),
    (lambda: Hybrid(stages=1.5), "Hybrid.stages"),
    (lambda: Hybrid(comm="ring"), "Hybrid.comm"),
])
def test_bad_options_name_the_option(build, match):
    with pytest.raises(SpecError, match=match):
        build()


def test_unsupported_training_is_a_named_error(e1):
    with pytest.raises(SpecError, match="ModelParallel trains with Adam or L-BFGS.*got LevenbergMarquardt"):
        solve(e1, SMALL_Q, ModelParallel(), LevenbergMarquardt(steps=2), client="sync")
    with pytest.raises(SpecError, match="sub-model 'mu'.*4 stages need a network of at least 4"):
        solve(e1, QuadratureCollocation(net=MLP(hidden=(5, 5)), points=64),
              Pipeline(stages=4), Adam(steps=2), client="sync")


def test_stages_refuse_tensor_train_and_quantized_networks():
    # the stages slice the dense flat layout: a compressed network would be cut wrongly
    from daskie.nn import TTMLP, Int8

    with pytest.raises(SpecError, match="dense, full-precision MLP; got TTMLP"):
        StageSplit.balanced(TTMLP(hidden=(8, 8, 8)), 1, 2)
    with pytest.raises(SpecError, match="got MLP with quant=Int8"):
        StageSplit.balanced(MLP(hidden=(8, 8), quant=Int8()), 1, 2)
