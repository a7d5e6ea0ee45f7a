"""The embedded cluster as users meet it: a real script with ``daskie.solve`` at its top level,
and the GPU set-up (which worker sees which device, what a worker without CUDA says) on a
machine without a GPU."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from daskie.cluster import local_cluster, make_cluster, worker_environment, worker_resources
from daskie.errors import PlanError, SpecError

SCRIPT = textwrap.dedent("""\
    import daskie
    from daskie import LevenbergMarquardt, QuadratureCollocation
    from daskie.nn import MLP

    ds = daskie.solve("E1", QuadratureCollocation(net=MLP(hidden=(6,)), points=24),
                      optimizer=LevenbergMarquardt(steps=3), client=None, check=False,
                      init="random")
    print("solved", ds.mu.shape)
""")


def test_a_script_with_solve_at_its_top_level_runs_without_a_main_guard(tmp_path):
    # issue 25: the embedded cluster's spawned workers re-imported the script and printed
    # 299 lines with 8 tracebacks ("Nanny failed to start"), exit 1
    script = tmp_path / "first.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "Nanny failed" not in out.stderr, out.stderr[-3000:]
    assert "solved" in out.stdout
    assert out.stdout.count("solved") == 1  # the script ran once: no worker re-ran it


def test_gpu_workers_see_one_device_each_and_the_others_none():
    assert worker_environment(0, 0, {}) == {}  # no GPU workers: the machine's view
    assert worker_environment(0, 2, {}) == {"CUDA_VISIBLE_DEVICES": "0"}
    assert worker_environment(1, 2, {}) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert worker_environment(2, 2, {}) == {"CUDA_VISIBLE_DEVICES": ""}
    # the GPUs this process may use, in their order
    assert worker_environment(1, 2, {"CUDA_VISIBLE_DEVICES": "3, 5"}) == {"CUDA_VISIBLE_DEVICES": "5"}
    assert worker_resources(0, 2, 1) == {"CPU": 2, "GPU": 1}
    assert worker_resources(1, 2, 1) == {"CPU": 2}


def _gpu_task():
    from daskie.runtime.devices import require_device

    return require_device("GPU", "window 0 of group 0 (mu)")


def _imported(name):
    import importlib

    return importlib.import_module(name).__file__


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a worker without CUDA says")
def test_the_local_cluster_places_gpus_and_a_worker_without_cuda_says_so(tmp_path, monkeypatch):
    # the workers import what this process can (its sys.path), and a directory on it that
    # holds a module named like the standard library's does not shadow that at their start
    (tmp_path / "daskie_probe_module.py").write_text("VALUE = 1\n")
    (tmp_path / "operator.py").write_text("raise ImportError('shadowed the standard library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with local_cluster(3, gpus=2) as client:
        found = client.run(_imported, "daskie_probe_module")
        assert all(f == str(tmp_path / "daskie_probe_module.py") for f in found.values())
        assert all("operator.py" in f and str(tmp_path) not in f
                   for f in client.run(_imported, "operator").values())
        info = client.scheduler_info()["workers"]
        by_name = {w["name"]: (addr, w["resources"]) for addr, w in info.items()}
        assert {n: r for n, (_, r) in by_name.items()} == {
            0: {"CPU": 1, "GPU": 1}, 1: {"CPU": 1, "GPU": 1}, 2: {"CPU": 1}}
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert {n: seen[a] for n, (a, _) in by_name.items()} == {0: "0", 1: "1", 2: ""}
        # resource annotations reach the scheduler (dask/dask#7036: graph optimisation
        # dropped them; the runners compute with optimize_graph=False, as here)
        import dask
        from distributed import get_worker

        with dask.annotate(resources={"GPU": 1}):
            tasks = [dask.delayed(lambda k: get_worker().name, pure=False)(k) for k in range(6)]
        names = client.gather(client.compute(tasks, optimize_graph=False))
        assert set(names) <= {0, 1}
        gpu_worker = by_name[0][0]
        fut = client.submit(_gpu_task, workers=[gpu_worker], resources={"GPU": 1}, pure=False)
        with pytest.raises(PlanError, match=f"tagged GPU, but torch sees no CUDA device on "
                                            f"worker {gpu_worker}"):
            fut.result(timeout=60)


def test_local_cuda_without_dask_cuda_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # not installed
    with pytest.raises(SpecError, match=r"needs dask-cuda: pip install .daskie\[gpu\]"):
        with make_cluster("local-cuda"):
            pass


def test_local_cuda_starts_dask_cuda_with_daskie_resource_tags(monkeypatch):
    import contextlib
    import types

    seen = {}

    class FakeLocalCUDACluster(contextlib.AbstractContextManager):
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def __exit__(self, *exc):
            return None

    class FakeClient(contextlib.AbstractContextManager):
        def __init__(self, cluster):
            self.cluster = cluster

        def __exit__(self, *exc):
            return None

    monkeypatch.setitem(sys.modules, "dask_cuda",
                        types.SimpleNamespace(LocalCUDACluster=FakeLocalCUDACluster))
    monkeypatch.setattr("distributed.Client", FakeClient)
    with make_cluster("local-cuda", workers=2, gpus=2) as client:
        assert isinstance(client.cluster, FakeLocalCUDACluster)
    assert seen["n_workers"] == 2 and seen["resources"] == {"CPU": 1, "GPU": 1}


def test_bad_local_cluster_sizes_are_refused_with_the_field_named():
    with pytest.raises(SpecError, match="gpus=3 GPU workers do not fit in workers=2"):
        with local_cluster(2, gpus=3):
            pass
    with pytest.raises(SpecError, match="workers must be a positive int"):
        with local_cluster(0):
            pass
