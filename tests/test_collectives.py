"""daskie.collectives: every all-reduce equals the sum, peers that fail make others raise in
bounded time, and groups bootstrapped through Dask work on a real LocalCluster."""

import os
import threading
import time

import numpy as np
import pytest
import torch

from daskie.collectives import METHODS, Group, GroupError, free_port, local_groups, run_threads
from daskie.runtime import DaskExecutor, Groups, run_group
from daskie.errors import PlanError, SpecError

# the runtime's numbers on short trainings (tests/conftest.py: runtime_numbers)
pytestmark = pytest.mark.usefixtures("runtime_numbers")


def _inputs(n, size, dtype, seed=0):
    return [torch.randn(size, dtype=dtype, generator=torch.Generator().manual_seed(seed + r))
            for r in range(n)]


def _allreduce(group, x, method, compress=None, op="sum"):
    t = x.clone()
    group.allreduce(t, method=method, compress=compress, op=op)
    return t


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("method", METHODS)
def test_allreduce_equals_the_numpy_sum(n, method):
    xs = _inputs(n, 1001, torch.float64)
    expected = np.sum([x.numpy() for x in xs], axis=0)
    with local_groups(n) as groups:
        out = run_threads(groups, _allreduce, [(x, method) for x in xs])
    for o in out:
        np.testing.assert_allclose(o.numpy(), expected, rtol=1e-14, atol=1e-14)
        assert torch.equal(o, out[0])  # every rank ends with the same numbers


@pytest.mark.parametrize("method", METHODS)
def test_float32_allreduce_is_exact_up_to_summation_order(method):
    xs = _inputs(4, 3000, torch.float32, seed=3)
    exact = np.sum([x.numpy().astype(np.float64) for x in xs], axis=0)
    with local_groups(4) as groups:
        out = run_threads(groups, _allreduce, [(x, method) for x in xs])
    # four float32 additions: at most a few ulps of the largest partial sum
    bound = 4 * np.finfo(np.float32).eps * np.sum([np.abs(x.numpy()) for x in xs], axis=0)
    assert np.all(np.abs(out[0].numpy() - exact) <= bound)
    assert out[0].dtype == torch.float32


def test_mean_divides_by_the_number_of_ranks():
    xs = _inputs(3, 10, torch.float64)
    with local_groups(3) as groups:
        out = run_threads(groups, _allreduce, [(x, "ring", None, "mean") for x in xs])
    np.testing.assert_allclose(out[1].numpy(), np.mean([x.numpy() for x in xs], axis=0), rtol=1e-14)


@pytest.mark.parametrize("method", METHODS)
def test_fp16_compression_is_within_half_precision_of_the_sum(method):
    xs = _inputs(4, 2000, torch.float32, seed=7)
    exact = np.sum([x.numpy() for x in xs], axis=0)
    with local_groups(4) as groups:
        out = run_threads(groups, _allreduce, [(x, method, "fp16") for x in xs])
    # each of the 4 inputs and each partial sum rounded once to fp16 (unit roundoff 2^-11)
    scale = np.sum([np.abs(x.numpy()) for x in xs], axis=0)
    err = np.abs(out[0].numpy() - exact)
    assert np.all(err <= 2 * 4 * 2.0**-11 * scale + 1e-7)
    assert err.max() > 0  # it did compress
    for o in out:
        assert torch.equal(o, out[0])


def _repeated_compressed(group, x, k):
    total = torch.zeros_like(x)
    for _ in range(k):
        t = x.clone()
        group.allreduce(t, method="ring", compress="fp16", key="g")
        total += t
    return total / k


def test_error_feedback_makes_the_average_of_repeated_sums_converge():
    # The rounding error of one call is fed into the next: the mean over k calls of the same
    # input approaches the exact sum like 1/k (without feedback it would stay at one rounding).
    xs = [x * 1000 + 0.1234567 for x in _inputs(2, 500, torch.float32, seed=11)]
    exact = xs[0].double() + xs[1].double()
    with local_groups(2) as groups:
        one = run_threads(groups, _repeated_compressed, [(x, 1) for x in xs])[0]
        many = run_threads(groups, _repeated_compressed, [(x, 64) for x in xs])[0]
    err_one = float((one.double() - exact).abs().max())
    err_many = float((many.double() - exact).abs().max())
    assert err_many < err_one / 8


def _many(group, tensors):
    tensors = [t.clone() for t in tensors]
    group.allreduce_many(tensors)
    return tensors, len(group.log)


def test_allreduce_many_fuses_tensors_into_buckets():
    rank_inputs = [[torch.full((100,), float(r + 1)), torch.full((3, 4), 2.0 * r, dtype=torch.float64),
                    torch.arange(50, dtype=torch.float32) * r] for r in range(2)]
    with local_groups(2, bucket_mb=300 * 4 / 2**20) as groups:  # 300 float32 per bucket
        out = run_threads(groups, _many, [(t,) for t in rank_inputs])
    tensors, ops = out[0]
    assert torch.equal(tensors[0], torch.full((100,), 3.0))
    assert torch.equal(tensors[1], torch.full((3, 4), 2.0, dtype=torch.float64))
    assert torch.equal(tensors[2], torch.arange(50, dtype=torch.float32))
    assert ops == 2  # one float32 bucket (150 values) and one float64 bucket


def _gather_bcast_p2p(group):
    r = group.rank
    parts = group.allgather(torch.arange(r + 1, dtype=torch.float64) + 10 * r)
    b = torch.full((4,), float(r))
    group.broadcast(b, root=1)
    got = torch.zeros(3)
    if r == 0:
        group.send(torch.tensor([1.0, 2.0, 3.0]), 1, tag=5)
    elif r == 1:
        group.recv(got, 0, tag=5)
    group.barrier()
    return parts, b, got, {rec["op"] for rec in group.log}


def test_allgather_broadcast_and_point_to_point():
    with local_groups(3) as groups:
        out = run_threads(groups, _gather_bcast_p2p, [()] * 3)
    for parts, b, _, ops in out:
        assert [p.tolist() for p in parts] == [[0.0], [10.0, 11.0], [20.0, 21.0, 22.0]]
        assert torch.equal(b, torch.full((4,), 1.0))
        assert {"allgather", "broadcast", "barrier"} <= ops
    assert out[1][2].tolist() == [1.0, 2.0, 3.0]
    assert "recv" in out[1][3] and "send" in out[0][3]


def test_every_operation_is_timed_and_recorded():
    with local_groups(2) as groups:
        run_threads(groups, _allreduce, [(torch.ones(10), "ring"), (torch.ones(10), "ring")])
        rec = groups[0].log[-1]
    assert rec["op"] == "allreduce" and rec["method"] == "ring" and rec["bytes"] == 40
    assert rec["seconds"] > 0 and groups[0].sync_s >= rec["seconds"]


def _one_never_sends(group, release):
    if group.rank == 0:
        release.wait(30)
        return None
    t0 = time.perf_counter()
    with pytest.raises(GroupError, match="timed out|peer"):
        group.recv(torch.zeros(3), 0)
    return time.perf_counter() - t0


def test_a_peer_that_never_sends_makes_the_receiver_raise_within_the_timeout():
    release = threading.Event()
    with local_groups(2) as groups:  # joining gets the default timeout (a slow rendezvous on
        groups[1].timeout = 1.5      # a loaded machine once took over 1.5 s); the receive 1.5 s
        try:
            waited = run_threads(groups[1:], _one_never_sends, [(release,)])[0]
        finally:
            release.set()
    assert 1.0 < waited < 10.0


def test_a_group_whose_peer_never_comes_raises_within_the_timeout():
    t0 = time.perf_counter()
    with pytest.raises(GroupError, match="could not join"):
        Group(1, 2, "127.0.0.1", free_port(), timeout=1.0)
    assert time.perf_counter() - t0 < 15


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "butterfly"}, "method"),
    ({"timeout": 0}, "timeout"),
])
def test_bad_group_options_name_the_option(kwargs, match):
    with pytest.raises(SpecError, match=match):
        Group(0, 1, "127.0.0.1", free_port(), **kwargs)


def test_allreduce_rejects_integer_tensors_and_unknown_compression():
    with local_groups(1) as (g,):
        with pytest.raises(SpecError, match="float32 or float64"):
            g.allreduce(torch.ones(3, dtype=torch.int64))
        with pytest.raises(SpecError, match="compress"):
            g.allreduce(torch.ones(3), compress="int8")


# --- through Dask -------------------------------------------------------------------------
def _rank_sum(group, value):
    t = torch.full((1000,), float(value), dtype=torch.float64)
    group.allreduce(t, method="ring")
    return float(t[0]), os.getpid()


def test_run_group_on_a_local_cluster_runs_one_rank_per_worker(client):
    out = run_group(client, _rank_sum, [(1.0,), (2.0,)], timeout=30)
    assert [v for v, _ in out] == [3.0, 3.0]
    pids = {pid for _, pid in out}
    assert len(pids) == 2 and os.getpid() not in pids


def _fail_on_rank_one(group):
    if group.rank == 1:
        raise ValueError("rank one breaks")
    t = torch.ones(10)
    group.allreduce(t)  # waits for a peer that is gone
    return t


def test_a_failing_rank_fails_the_group_without_hanging(client):
    t0 = time.perf_counter()
    with pytest.raises(GroupError, match="rank"):
        run_group(client, _fail_on_rank_one, [(), ()], timeout=5)
    assert time.perf_counter() - t0 < 30
    # the cluster is usable afterwards
    assert run_group(client, _rank_sum, [(1.0,), (1.0,)], timeout=30)[0][0] == 2.0


def _fail_late_on_rank_one(group):
    if group.rank == 1:
        group.close()  # its peer sees the connection go at once ...
        time.sleep(0.5)
        raise ValueError("rank one breaks")  # ... and the cause comes a moment later
    t = torch.ones(10)
    group.allreduce(t)
    return t


def test_a_group_failure_names_the_rank_that_caused_it_before_its_peers_echoes(client):
    with pytest.raises(GroupError) as info:
        run_group(client, _fail_late_on_rank_one, [(), ()], timeout=20)
    message = str(info.value)
    assert message.startswith("group group: rank 1 failed: ValueError: rank one breaks"), message
    assert "; rank 0: GroupError" in message and "a peer went away" in message, message


def _rank_identity(group, value):
    t = torch.full((10,), float(value), dtype=torch.float64)
    group.allreduce(t)
    return float(t[0]), id(group), len(group.log)


def _cached_groups(dask_worker=None):
    from daskie.runtime.state import PLUGIN_NAME

    # the groups a worker keeps open live in its daskie plugin's state, nowhere else
    return sorted(str(k[0]) for k in dask_worker.plugins[PLUGIN_NAME].state.groups)


def test_reused_group_skips_the_rendezvous_and_is_released(client):
    groups = Groups(DaskExecutor(client), "test-reuse")
    first = groups.run(_rank_identity, [(1.0,), (2.0,)], reuse="test-reuse")
    second = groups.run(_rank_identity, [(3.0,), (4.0,)], reuse="test-reuse")
    assert [v for v, _, _ in first] == [3.0, 3.0] and [v for v, _, _ in second] == [7.0, 7.0]
    # the same Group objects served both calls, their logs reset in between
    assert [g for _, g, _ in first] == [g for _, g, _ in second]
    assert [n for _, _, n in second] == [1, 1]
    assert all(keys and all(k.startswith("test-reuse@") for k in keys)
               for keys in client.run(_cached_groups).values())
    groups.release()
    assert all(not keys for keys in client.run(_cached_groups).values())
    # after the release the key starts a fresh group
    third = groups.run(_rank_identity, [(1.0,), (1.0,)], reuse="test-reuse")
    assert [v for v, _, _ in third] == [2.0, 2.0]
    assert {g for _, g, _ in third}.isdisjoint({g for _, g, _ in first})
    groups.release()


def test_a_failed_call_does_not_leave_a_reusable_group(client):
    groups = Groups(DaskExecutor(client), "test-fail")
    with pytest.raises(GroupError):
        groups.run(_fail_on_rank_one, [(), ()], timeout=5, reuse="test-fail")
    # the same key after the failure: a fresh rendezvous on a fresh port, not a half group
    out = groups.run(_rank_identity, [(1.0,), (2.0,)], timeout=30, reuse="test-fail")
    assert [v for v, _, _ in out] == [3.0, 3.0]
    groups.release()
    assert all(not keys for keys in client.run(_cached_groups).values())


def test_run_group_needs_a_worker_per_rank(client):
    with pytest.raises(PlanError, match="3 ranks needs 3 workers"):
        run_group(client, _rank_sum, [(1.0,)] * 3)


def test_in_process_groups_give_the_cluster_numbers(client):
    local = run_group("sync", _rank_sum, [(1.5,), (2.0,)])
    remote = run_group(client, _rank_sum, [(1.5,), (2.0,)])
    assert [v for v, _ in local] == [v for v, _ in remote] == [3.5, 3.5]


def test_a_reused_group_stays_on_its_workers_when_the_idle_order_flips(client, monkeypatch):
    import daskie.runtime.groups as groups_module

    names = sorted(str(w["name"]) for w in client.scheduler_info()["workers"].values())
    calls = {"n": 0}

    def flipping(info):  # the first call sees one worker busy, later calls the other
        calls["n"] += 1
        busy = names[0] if calls["n"] <= len(names) else names[1]
        return int(str(info.get("name")) == busy)

    monkeypatch.setattr(groups_module, "_executing", flipping)
    groups = Groups(DaskExecutor(client), "test-flip")
    first = groups.run(_rank_identity, [(1.0,), (2.0,)], reuse="test-flip")
    second = groups.run(_rank_identity, [(3.0,), (4.0,)], reuse="test-flip")
    assert [g for _, g, _ in first] == [g for _, g, _ in second]  # the kept group, not a new one
    groups.release()
    assert all(not keys for keys in client.run(_cached_groups).values())
