"""The scaling model (daskie.plan.scaling) against closed-form cases: the all-reduce
algorithms' bytes, bandwidth- and latency-bound times, shared cores, Amdahl's law for the
compute split, GPU ranks, and step costs read back from profiler records."""

from __future__ import annotations

import math

import pytest

from daskie.plan import scaling
from daskie.plan.scaling import Algorithm, Network, StepCosts

S = 8e6  # bytes
FREE_CPU = Algorithm("free", 0.0, math.inf)  # no software cost: the wire alone
WIRE = Network("wire", 0.0, 1e8)


@pytest.fixture(scope="module")
def plan():
    from daskie.formulations import OrderReduction
    from daskie.nn import MLP
    from daskie.plan import make_plan
    from daskie.problems import catalog

    disc = OrderReduction(net=MLP(hidden=(8,)), points=32, aux_points=32).discretize(
        catalog.get("E1"), seed=0)
    return make_plan(disc, workers=4, gpus=1)


@pytest.mark.parametrize("method, n, rounds, link", [
    ("ring", 2, 2, S), ("ring", 4, 6, 1.5 * S), ("gloo", 8, 14, 1.75 * S),
    ("ps", 2, 2, 2 * S), ("ps", 4, 2, 6 * S),
    ("tree", 2, 2, 2 * S), ("tree", 4, 4, 4 * S), ("tree", 5, 6, 6 * S),
    ("ring", 1, 0, 0.0),
])
def test_collective_bytes_are_the_algorithms_closed_forms(method, n, rounds, link):
    r, l, busiest, total = scaling.collective_bytes(method, n, S)
    assert (r, l) == (rounds, pytest.approx(link))
    if method in ("ring", "gloo") and n > 1:
        assert busiest == pytest.approx(2 * link) and total == pytest.approx(n * 2 * link)
    if method == "ps" and n > 1:
        assert total == pytest.approx(4 * (n - 1) * S)  # server 2(n-1)S + clients 2S each


def test_a_bandwidth_bound_all_reduce_takes_its_link_bytes_over_the_bandwidth():
    for method, n, factor in (("ring", 2, 1.0), ("ring", 4, 1.5), ("ps", 4, 6.0),
                              ("tree", 4, 4.0)):
        t = scaling.allreduce_time(method, n, S, WIRE, algorithm=FREE_CPU)
        assert t == pytest.approx(factor * S / 1e8), method


def test_a_latency_bound_all_reduce_takes_its_rounds_times_the_latency():
    slow = Network("slow", 1e-3, math.inf)
    assert scaling.allreduce_time("ring", 8, 0.0, slow, algorithm=FREE_CPU) == pytest.approx(14e-3)
    assert scaling.allreduce_time("ps", 8, 0.0, slow, algorithm=FREE_CPU) == pytest.approx(2e-3)
    assert scaling.allgather_time(8, 0.0, slow, algorithm=FREE_CPU) == pytest.approx(7e-3)


def test_wire_and_cpu_overlap_and_the_slower_sets_the_time():
    cpu = Algorithm("cpu", 1e-3, 1e9)
    # ring n=2: wire S/1e8 = 80 ms; cpu 2 rounds + 2S/1e9 = 18 ms
    assert scaling.allreduce_time("ring", 2, S, WIRE, algorithm=cpu) == pytest.approx(0.08)
    fast = Network("fast", 0.0, 1e12)
    assert scaling.allreduce_time("ring", 2, S, fast, algorithm=cpu) == pytest.approx(
        2e-3 + 2 * S / 1e9)


def test_ranks_sharing_cores_share_the_copy_work():
    cpu = Algorithm("cpu", 0.0, 1e9)
    loop = Network("loop", 0.0, math.inf)
    alone = scaling.allreduce_time("ring", 4, S, loop, algorithm=cpu)
    shared = scaling.allreduce_time("ring", 4, S, loop, algorithm=cpu, ranks_per_host=4,
                                    cores_per_host=2)
    assert alone == pytest.approx(3 * S / 1e9)            # busiest rank: 2 x 1.5 S
    assert shared == pytest.approx(12 * S / 2 / 1e9)      # all ranks' 12 S over 2 cores


def test_compute_on_cpu_ranks_follows_amdahl(plan):
    costs = StepCosts(replicated_s=0.02, split_s=0.08)
    free = Network("free", 0.0, math.inf)
    for ranks in (1, 2, 4, 16):
        p = scaling.predict(plan, costs, free, ranks=ranks, gpus=0,
                            algorithms={"gloo": FREE_CPU})
        assert p.step_s == pytest.approx(0.02 + 0.08 / ranks)
        assert p.sr == pytest.approx(0.1 / (0.02 + 0.08 / ranks))


def test_gpu_ranks_help_only_where_the_rows_follow_speed(plan):
    costs = StepCosts(replicated_s=0.02, split_s=0.08)
    free = Network("free", 0.0, math.inf)
    kw = dict(ranks=4, gpus=2, gpu_speed=10.0, algorithms={"gloo": FREE_CPU})
    equal = scaling.predict(plan, costs, free, balance="equal", **kw)
    speed = scaling.predict(plan, costs, free, balance="speed", **kw)
    assert equal.compute_s == pytest.approx(0.02 + 0.08 / 4)         # a CPU rank bounds it
    assert speed.compute_s == pytest.approx(0.02 + 0.08 / (2 + 2 * 10.0))
    every = scaling.predict(plan, costs, free, ranks=4, gpus=4, gpu_speed=10.0,
                            algorithms={"gloo": FREE_CPU})
    assert every.compute_s == pytest.approx((0.02 + 0.08 / 4) / 10.0)


def test_communication_is_the_plans_bytes(plan):
    costs = StepCosts(0.0, 0.0)
    p = scaling.predict(plan, costs, WIRE, ranks=2, gpus=0, algorithms={"gloo": FREE_CPU})
    params = sum(c.n_params for c in plan.costs)
    rows = sum(c.points for c in plan.costs)
    assert p.reduce_s == pytest.approx(8 * params / 1e8)      # ring n=2: S over the link
    assert p.gather_s == pytest.approx(8 * rows / 2 / 1e8)    # half the values come in


def test_data_parallel_step_is_amdahl_plus_the_gradient_all_reduce():
    costs = StepCosts(0.002, 0.018)
    for ranks in (1, 2, 4):
        p = scaling.predict_data_parallel(costs, 1000, WIRE, ranks=ranks,
                                          algorithms={"gloo": FREE_CPU})
        assert p.compute_s == pytest.approx(0.002 + 0.018 / ranks)
        # ring: 2 (n-1)/n of the P + 1 float64 over the link, at 1e8 B/s and no latency
        assert p.reduce_s == pytest.approx(2 * (ranks - 1) / ranks * 8 * 1001 / 1e8)
        assert p.gather_s == 0.0 and p.sr == pytest.approx(0.02 / p.step_s)
    adam = scaling.predict_data_parallel(costs, 1000, WIRE, ranks=2, algorithms={"gloo": FREE_CPU})
    lm = scaling.predict_data_parallel(costs, 1000, WIRE, ranks=2, optimizer="lm",
                                       algorithms={"gloo": FREE_CPU})
    assert lm.reduce_s - adam.reduce_s == pytest.approx(8 * 1000**2 / 1e8)  # + J^T J
    with pytest.raises(ValueError, match="optimizer"):
        scaling.predict_data_parallel(costs, 10, WIRE, ranks=2, optimizer="sgd")
    with pytest.raises(ValueError, match="ranks"):
        scaling.predict_data_parallel(costs, 10, WIRE, ranks=0)


def test_step_costs_from_profiler_records_recover_the_split():
    # 2 ranks: replicated 4 ms + split 12 ms / 2 = 10 ms of compute each, plus waits
    records = []
    for rank in (0, 1):
        for window in range(4):
            sync = 0.05 * (rank + 1)
            records.append({"rank": rank, "window": window, "window_s": 50 * 0.010 + sync,
                            "sync_s": sync, "steps": 50})
    records[0]["window_s"] += 3.0  # the first window pays start-up: ignored
    costs = StepCosts.from_history(records, one_thread_s=0.016)
    assert costs.replicated_s == pytest.approx(0.004) and costs.split_s == pytest.approx(0.012)
    assert StepCosts.from_fraction(0.016, 0.25) == StepCosts(0.004, 0.012)
    with pytest.raises(ValueError, match="at least 2 ranks"):
        StepCosts.from_history(records[:4], one_thread_s=0.016)


@pytest.mark.parametrize("kwargs, message", [
    ({"balance": "fast"}, "balance must be 'equal' or 'speed'"),
    ({"gpu_speed": 0}, "gpu_speed must be > 0"),
    ({"method": "mpi"}, "unknown all-reduce method 'mpi'"),
])
def test_bad_model_inputs_are_named(plan, kwargs, message):
    with pytest.raises(ValueError, match=message):
        scaling.predict(plan, StepCosts(0.01, 0.01), WIRE, **kwargs)


def test_daskie_plan_predict_prints_the_models_step_and_sr(capsys):
    import json

    from daskie.cli import main

    argv = ["plan", "E1", "--workers", "6", "--gpus", "2", "--hidden", "8", "--points", "32",
            "--predict", "--gpu-speed", "4", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["plan"]["workers"] == 6 and out["plan"]["gpus"] == 2
    n_sub = out["plan"]["n_sub"]
    assert [p["ranks"] for p in out["predictions"]] == sorted({n_sub, n_sub * (6 // n_sub)})
    for p in out["predictions"]:
        assert p["step_s"] == pytest.approx(p["compute_s"] + p["gather_s"] + p["reduce_s"])
        assert p["sr"] == pytest.approx(p["seq_step_s"] / p["step_s"])
        assert p["assumptions"]["gpu_speed"] == 4.0
    assert main(argv[:-1]) == 0
    assert "predicted CEPTF step on" in capsys.readouterr().out
