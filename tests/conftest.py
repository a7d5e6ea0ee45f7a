"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread in the test process: on a 2-core machine shared with LocalCluster
    workers, torch's default thread pool oversubscribes the cores (measured: 207 s instead
    of 18 s for the core tests). Results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster (2 workers x 1 thread, on 127.0.0.1) and its Client, per test module."""
    from daskie.api import local_cluster

    with local_cluster(workers=2) as c:
        yield c


@pytest.fixture(scope="module")
def runtime_numbers():
    """Solve without the reference check and from the seeded random start (issue 15): for
    tests of the runtime's numbers on short trainings far from converged, where a warm start
    would change the start and the discrepancy warning is the expected outcome, not what is
    tested."""
    import dask

    with dask.config.set({"daskie.check": False, "daskie.init": "random"}):
        yield
