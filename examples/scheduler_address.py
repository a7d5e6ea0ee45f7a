"""Solve on a Dask cluster that is already running, given its scheduler's address.

    python examples/scheduler_address.py tcp://scheduler-host:8786

The workers should declare the resource daskie's tasks ask for, e.g.
``dask worker tcp://scheduler-host:8786 --nthreads 1 --resources CPU=1`` (and
``--resources CPU=1,GPU=1`` on GPU machines). Without an address, this script starts such a
cluster itself on 127.0.0.1 (``dask scheduler`` and two ``dask worker`` processes), connects to
it by address exactly as it would to a remote one, and stops it at the end.
"""

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time

import daskie
from daskie import LevenbergMarquardt
from daskie.cluster import make_cluster


@contextlib.contextmanager
def scheduler_and_workers(n=2):
    """A ``dask scheduler`` and ``n`` ``dask worker`` processes on 127.0.0.1; yields the
    scheduler's address (read from its log line), stops them by pid on exit."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                               "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)]
    try:
        address = None
        for _ in range(300):
            found = re.search(r"Scheduler at:\s+(tcp://\S+)", open(log.name).read())
            if found:
                address = found.group(1)
                break
            time.sleep(0.1)
        if address is None:
            raise RuntimeError(f"the scheduler did not start; see {log.name}")
        for _ in range(n):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host",
                 "127.0.0.1", "--nthreads", "1", "--resources", "CPU=1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        os.unlink(log.name)


def main(address):
    # workers=2: wait (bounded, daskie.cluster.wait-timeout) until two workers are there
    with make_cluster(address, workers=2) as client:
        print(f"connected to {address}: {len(client.scheduler_info(n_workers=-1)['workers'])} "
              f"workers")
        ds = daskie.solve("E1", optimizer=LevenbergMarquardt(steps=30), client=client)
    print(f"E1: MSE {ds.attrs['mse']:.2e}, {ds.attrs['epochs']} epochs, "
          f"{ds.attrs['wall_s']:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with scheduler_and_workers(2) as addr:
            main(addr)
