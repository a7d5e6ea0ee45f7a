"""A real single-node SLURM (scripts/slurm/up.sh): daskie.solve through dask-jobqueue's
SLURMCluster equals a LocalCluster run for the same seed; a queue that never starts the
workers ends in a named error. Marked ``slurm``; skipped, with the reason, where SLURM cannot
be installed or started (up.sh exits 3: no packages and no apt-get, or the install failed)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.slurm

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "slurm"
# Dask must advertise the loopback address (the node is 127.0.0.1), and a fixed dashboard
# port would clash with any other scheduler on this machine.
LOOPBACK = {"interface": "lo", "scheduler_options": {"dashboard_address": ":0"}}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A SLURM of our own under a temp dir; SLURM_CONF set while the module runs."""
    where = tmp_path_factory.mktemp("slurm")
    up = subprocess.run([str(SCRIPTS / "up.sh"), str(where)], capture_output=True, text=True,
                        timeout=600)
    if up.returncode == 3:
        pytest.skip(f"no SLURM on this machine: {up.stderr.strip()}")
    if up.returncode != 0:
        subprocess.run([str(SCRIPTS / "down.sh"), str(where), "--keep"], timeout=120)
        pytest.fail(f"scripts/slurm/up.sh failed ({up.returncode}): {up.stderr.strip()}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(where / "slurm.conf")
    try:
        yield where
    finally:
        # cancels our jobs first, then stops only the daemons whose pid files are under `where`
        down = subprocess.run([str(SCRIPTS / "down.sh"), str(where), "--keep"],
                              capture_output=True, text=True, timeout=120)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        pids = [where / "slurmctld.pid", where / "slurmd.pid", where / "munge" / "munged.pid"]
        assert down.returncode == 0 and not any(p.exists() for p in pids), down.stderr


def _jobs():
    out = subprocess.run(["squeue", "--noheader", "-o", "%i %j %T %b"], capture_output=True,
                         text=True, check=True)
    return [line.split() for line in out.stdout.splitlines()]


def _jobs_left(wait=30.0):
    """The jobs still listed after up to ``wait`` s (a cancelled job shows COMPLETING
    until its processes have ended)."""
    import time

    end = time.monotonic() + wait
    while (jobs := _jobs()) and time.monotonic() < end:
        time.sleep(0.25)
    return jobs


def _solve(client):
    import daskie
    from daskie import MLP, LevenbergMarquardt, QuadratureCollocation
    from daskie.errors import ToleranceWarning

    with warnings.catch_warnings():
        # 5 LM steps on a 9-parameter net are far from the Nystrom answer, on purpose: this
        # test compares two clusters, not accuracy (solve warns about the distance).
        warnings.simplefilter("ignore", ToleranceWarning)
        return daskie.solve("fredholm1d",
                            formulation=QuadratureCollocation(net=MLP(hidden=(8,)), points=64),
                            optimizer=LevenbergMarquardt(steps=5), client=client, seed=3)


def test_solve_on_slurm_equals_a_local_cluster(slurm):
    from daskie.cluster import local_cluster
    from daskie.cluster import make_cluster

    with make_cluster("slurm", workers=2, gpus=1, log_directory=str(slurm / "logs"),
                      timeout=120, **LOOPBACK) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        tags = sorted(sorted(w["resources"].items()) for w in workers)
        assert tags == [[("CPU", 1.0)], [("CPU", 1.0), ("GPU", 1.0)]]
        jobs = _jobs()
        assert len(jobs) == 2 and all(state == "RUNNING" for _, _, state, _ in jobs)
        # the GPU worker's job asked SLURM for the node's GRES gpu, the other did not
        assert sorted(gres for *_, gres in jobs) == ["N/A", "gres:gpu:1"]
        on_slurm = _solve(client)
    assert _jobs_left() == []  # the cluster cancelled its jobs on exit
    with local_cluster(2) as client:
        local = _solve(client)
    assert np.isfinite(on_slurm.mu.values).all()
    np.testing.assert_allclose(on_slurm.mu.values, local.mu.values, rtol=0, atol=1e-12)
    assert on_slurm.attrs["loss"] == pytest.approx(local.attrs["loss"], rel=1e-12, abs=0)


def test_a_queue_that_never_starts_workers_is_named_with_its_pending_jobs(slurm):
    from daskie.cluster import QueueTimeout, make_cluster

    # --begin an hour from now: SLURM accepts the job and keeps it pending (reason BeginTime)
    with pytest.raises(QueueTimeout) as err:
        with make_cluster("slurm", workers=1, queue="debug", timeout=3,
                          job_extra_directives=["--begin=now+3600"],
                          log_directory=str(slurm / "logs"), **LOOPBACK):
            raise AssertionError("a worker started")  # pragma: no cover
    message = str(err.value)
    assert "slurm queue 'debug' started 0 of 1 workers in 3 s" in message
    assert err.value.queue == "debug"
    assert "PENDING" in err.value.pending and "BeginTime" in err.value.pending
    assert _jobs_left() == []


def test_an_adaptive_slurm_cluster_starts_its_minimum_and_runs_tasks(slurm):
    from daskie.cluster import make_cluster

    with make_cluster("slurm", adapt=(1, 2), log_directory=str(slurm / "logs"), timeout=120,
                      **LOOPBACK) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) >= 1
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        assert 1 <= len(_jobs()) <= 2
    assert _jobs_left() == []
