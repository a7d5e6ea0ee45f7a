"""The profiler: per-window figures in the records and the store, and agreement with the wall
time measured outside the tasks."""

import time

import numpy as np
import pytest

import daskie
from daskie import MLP, LevenbergMarquardt, Monolithic, QuadratureCollocation, catalog
from daskie.runtime.profiler import PROFILE_FIELDS, WindowProfiler
from daskie.train.loop import TrainState, advance
from daskie.train.objective import Objective

# the runtime's numbers on short trainings (tests/conftest.py: runtime_numbers)
pytestmark = pytest.mark.usefixtures("runtime_numbers")

SMALL_Q = QuadratureCollocation(net=MLP(hidden=(8, 8)), points=64, nodes=8, test_points=200)


@pytest.fixture(scope="module")
def client():
    from daskie.cluster import local_cluster

    with local_cluster(workers=1) as c:
        # A fresh worker process imports torch and daskie and warms torch's kernels on its first
        # task (about a second, once per process, not per run); the timing test measures a run,
        # so one tiny solve goes first.
        daskie.solve("fredholm1d", formulation=SMALL_Q, optimizer=LevenbergMarquardt(steps=1), client=c)
        yield c


def test_window_figures_outside_a_worker():
    obj = Objective(SMALL_Q.discretize(catalog.get("E1"), seed=0))
    t0 = time.time()
    prof = WindowProfiler("run", 3, 0, "mu")
    state, records = advance(obj, LevenbergMarquardt(steps=5), TrainState(theta=obj.init_params(0)), 5,
                             record_extra={"window": 3, "group": 0}, callback=prof.step)
    prof.add_sync(0.25)
    fields = prof.finish(records, obj, state.theta)
    last = records[-1]
    assert set(PROFILE_FIELDS) <= set(last) and "peak_cuda_mb" not in last  # no GPU used here
    assert t0 <= last["t_start"] < last["t_end"] <= time.time()
    # T_k covers the steps and is the span between the timestamps
    assert last["window_s"] >= sum(r["step_s"] for r in records)
    assert last["window_s"] == pytest.approx(last["t_end"] - last["t_start"], abs=0.01)
    assert last["sync_s"] == 0.25 and 10 < last["peak_rss_mb"] < 1e5
    # the loss terms are the blocks' mean squared residuals; one block here, equal to the loss
    assert set(obj.blocks) == {"equation"}
    assert last["loss_equation"] == pytest.approx(float(obj.loss(state.theta)), rel=1e-9)
    assert fields["window_s"] == last["window_s"]
    assert all("window_s" not in r for r in records[:-1])
    assert WindowProfiler("run", 0, 0, "mu").finish([]) == {}  # a window with nothing to do


def test_window_times_add_up_to_the_wall_time(client):
    # One monolithic task: the profiler's T_k against the wall time solve() measures around the
    # graph (submission, the init task, transfers, the client's per-window work: about 0.15 s).
    form = QuadratureCollocation(net=MLP(hidden=(16, 16)), points=128, nodes=8, test_points=200)
    back = daskie.solve("E1", formulation=form, strategy=Monolithic(), client=client,
                        optimizer=LevenbergMarquardt(steps=250), target_loss=0.0)
    profiled = np.isfinite(back.history_window_s.values)
    assert profiled.sum() == 1  # one window, one group
    window_s = float(back.history_window_s.values[profiled].sum())
    wall = back.attrs["wall_s"]
    assert 0.9 * wall <= window_s <= wall, (window_s, wall)
    i = int(np.flatnonzero(profiled)[0])
    assert back.history_worker.values[i].startswith("tcp://127.0.0.1")
    assert back.history_epoch.values[i] == 250 and np.isfinite(back.history_mse.values[i])
    assert back.history_sync_s.values[i] == 0.0
    assert back.history_peak_rss_mb.values[i] > 10
    assert back.history_loss_equation.values[i] > 0
    # the step records cover the window: their times add up to less than T_k
    steps = back.history_step_s.values[back.history_group.values == 0]
    assert 0.5 * window_s < np.nansum(steps) <= window_s
