"""Cluster entry points (daskie.cluster): sizing from the Plan, job settings from dask-jobqueue's
own configuration, GPU jobs, and the named errors; no batch queue needed (the real SLURM test
is tests/test_slurm.py)."""

from __future__ import annotations

import dask
import dask_jobqueue  # noqa: F401  (registers jobqueue.*; imported inside a dask.config.set
# block, its defaults would leave with the block)
import pytest

from daskie.cluster import ClusterError, Size, job_settings, make_cluster, size_for
from daskie.errors import SpecError


@pytest.fixture(scope="module")
def e1_plan():
    from daskie.formulations import OrderReduction
    from daskie.nn import MLP
    from daskie.plan import make_plan
    from daskie.problems import catalog

    disc = OrderReduction(net=MLP(hidden=(8,)), points=32, aux_points=32).discretize(
        catalog.get("E1"), seed=0)
    return make_plan(disc, workers=8, gpus=1)


def test_size_comes_from_the_plan_unless_given(e1_plan):
    n_gpu = sum(g.resource == "GPU" for g in e1_plan.groups)
    assert n_gpu == 1
    assert size_for(plan=e1_plan) == Size(e1_plan.n_sub, 1)
    assert size_for(workers=5, plan=e1_plan) == Size(5, 1)
    assert size_for(workers=3, gpus=2) == Size(3, 2)
    with dask.config.set({"daskie.workers": 4}):
        assert size_for() == Size(4, 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"workers": 1, "gpus": 2}, "gpus=2 GPU workers do not fit in workers=1"),
    ({"workers": 0}, "workers must be a positive int"),
    ({"gpus": -1}, "gpus must be an int >= 0"),
])
def test_bad_sizes_are_named(kwargs, message):
    with pytest.raises(SpecError, match=message):
        size_for(**kwargs)


def test_an_existing_jobqueue_yaml_wins_over_daskie_defaults():
    site = {"jobqueue.slurm.cores": 4, "jobqueue.slurm.memory": "16GB",
            "jobqueue.slurm.queue": "gpu-long", "jobqueue.slurm.account": "proj42",
            "jobqueue.slurm.walltime": "02:00:00",
            "jobqueue.slurm.job-extra-directives": ["--constraint=a100"]}
    with dask.config.set(site):
        kwargs = job_settings("slurm", Size(2, 0), {})
        # nothing the site set is overridden; daskie adds its one-process default and the tag
        assert "cores" not in kwargs and "memory" not in kwargs
        assert kwargs["processes"] == 1
        assert kwargs["worker_extra_args"][-2:] == ["--resources", "CPU=4"]
        script = _job_script("slurm", kwargs)
    for line in ("#SBATCH -p gpu-long", "#SBATCH -A proj42", "#SBATCH -t 02:00:00",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --constraint=a100",
                 "--nthreads 4", "--resources CPU=4"):
        assert line in script, line


def test_daskie_defaults_fill_what_jobqueue_leaves_unset():
    kwargs = job_settings("pbs", Size(1, 0), {"walltime": "00:10:00"})
    assert (kwargs["cores"], kwargs["memory"], kwargs["processes"]) == (1, "4GiB", 1)
    assert kwargs["walltime"] == "00:10:00"
    assert "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False" in kwargs["job_script_prologue"]
    script = _job_script("pbs", kwargs)
    assert "#PBS -l walltime=00:10:00" in script and "--resources CPU=1" in script


def test_a_gpu_job_declares_gpu_and_asks_the_queue_for_one():
    from daskie.cluster import gpu_options

    opts = gpu_options("slurm", job_settings("slurm", Size(2, 1), {}))
    script = _job_script("slurm", opts)
    assert "--resources CPU=1,GPU=1" in script and "#SBATCH --gres=gpu:1" in script
    cpu = _job_script("slurm", job_settings("slurm", Size(2, 1), {}))
    assert "GPU" not in cpu and "--gres" not in cpu


def test_gpu_workers_need_one_process_per_job_and_cpu_jobs_split_their_cores():
    with pytest.raises(SpecError, match="GPU workers need one worker process per job"):
        job_settings("slurm", Size(2, 1), {"processes": 4})
    kwargs = job_settings("slurm", Size(8, 0), {"processes": 4, "cores": 8})
    assert kwargs["worker_extra_args"][-2:] == ["--resources", "CPU=2"]


def test_a_gpu_job_keeps_the_threads_its_cpu_twin_declares():
    from daskie.cluster import gpu_options

    with dask.config.set({"jobqueue.slurm.cores": 6}):
        opts = gpu_options("slurm", job_settings("slurm", Size(2, 1), {}))
    assert opts["worker_extra_args"][-2:] == ["--resources", "CPU=6,GPU=1"]


@pytest.mark.parametrize("kind, kwargs, message", [
    ("kubernetes", {}, "cluster must be one of local, slurm, pbs or a scheduler address"),
    ("slurm", {"adapt": (1, 4), "gpus": 1, "workers": 2}, "adapt with GPU workers"),
    ("slurm", {"adapt": (3, 2)}, "1 <= minimum <= maximum"),
    ("local", {"adapt": (1, 2)}, "adapt applies to the batch queues"),
    ("local", {"queue": "x"}, "the local cluster takes no jobqueue settings"),
    ("slurm", {"timeout": 0}, "timeout must be a positive number"),
])
def test_bad_cluster_arguments_are_named(kind, kwargs, message):
    with pytest.raises(SpecError, match=message):
        with make_cluster(kind, **kwargs):
            pass


def test_a_queue_that_is_not_installed_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch/qsub on it
    with pytest.raises(ClusterError, match="'qsub' is not on PATH"):
        with make_cluster("pbs"):
            pass


def test_an_address_without_a_scheduler_is_named():
    with pytest.raises(ClusterError, match="no Dask scheduler answered at tcp://127.0.0.1:9"):
        with make_cluster("tcp://127.0.0.1:9", timeout=2):
            pass


def test_local_and_address_clusters_give_clients_with_the_asked_workers():
    with make_cluster("local", workers=2) as client:
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        assert len(info) == 2 and all(w["resources"] == {"CPU": 1} for w in info)
        address = client.scheduler.address
        with make_cluster(address, workers=2) as other:
            assert len(other.scheduler_info(n_workers=-1)["workers"]) == 2
        # a bounded wait for workers the scheduler does not have, then a named error
        with pytest.raises(ClusterError, match=r"has 2 of 3 workers after 1 s"):
            with make_cluster(address, workers=3, timeout=1):
                pass
        with pytest.raises(ClusterError, match="has 0 workers with resource GPU, 1 are needed"):
            with make_cluster(address, workers=2, gpus=1, timeout=1):
                pass


def _job_script(kind, kwargs):
    """The job script jobqueue's own Job class writes for these settings (no cluster)."""
    from dask_jobqueue.pbs import PBSJob
    from dask_jobqueue.slurm import SLURMJob

    cls = SLURMJob if kind == "slurm" else PBSJob
    opts = {k: v for k, v in kwargs.items() if k != "scheduler_options"}
    return cls(scheduler="tcp://127.0.0.1:8786", name="w0", **opts).job_script()


def test_the_cli_refuses_an_unknown_cluster_in_one_line(capsys):
    from daskie.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["solve", "E1", "--cluster", "kubernetes"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--cluster: must be local, slurm, pbs or a scheduler address" in err
    assert len(err.strip().splitlines()) == 1
