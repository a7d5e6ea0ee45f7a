"""One writer per run store, across real processes: a second writer gets a named error with
the holder's pid; a killed writer leaves no stale lock; readers never wait."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import xarray as xr

from daskie.errors import StoreLockedError
from daskie.store import Checkpoint, RunStore

# Opens a store for writing, says so, and holds it until stdin closes (or it is killed).
_HOLDER = textwrap.dedent("""
    import sys
    from daskie.store import Checkpoint, RunStore
    path, mode = sys.argv[1], sys.argv[2]
    store = RunStore(path, mode=mode)
    store.lock()
    store.write_meta({"holder": True})
    store.write_checkpoint(Checkpoint(0, [], [{"window": 0}]))
    print("holding", flush=True)
    sys.stdin.read()
    store.close()
    print("closed", flush=True)
""")


@pytest.fixture
def holder():
    """Start a process that holds a store open for writing; ends them all afterwards."""
    started = []

    def start(path, mode="w-"):
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), mode],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started.append(proc)
        line = proc.stdout.readline()
        assert line == "holding\n", line + proc.stderr.read()
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()


@pytest.mark.parametrize("mode", ["w-", "w", "a"])
def test_a_second_writer_gets_a_named_error_with_the_holders_pid(tmp_path, holder, mode):
    path = tmp_path / "run.zarr"
    if mode != "w-":
        with RunStore(path, mode="w-") as store:
            store.write_result(xr.Dataset({"mu": ("x0", [1.0])}), [], {"mse": 1.0})
    proc = holder(path, mode)
    for second in ("w", "a"):
        with pytest.raises(StoreLockedError) as caught:
            RunStore(path, mode=second).lock()
        assert str(caught.value) == (
            f"the run store at {path} is being written by process {proc.pid}; one writer per "
            f"store: wait for that run to end, or choose another store")
    # Readers do not wait for the writer: the store is read as it stands.
    assert RunStore(path, mode="a").read_meta()["holder"] is True
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0 and proc.stdout.read() == "closed\n"
    with RunStore(path, mode="a") as after:  # the lock went with close()
        after.lock()
        assert after.windows() == [0]
    assert ".run.zarr.lock" not in os.listdir(tmp_path)  # the lock file went with the lock


def test_a_killed_writer_leaves_no_stale_lock(tmp_path, holder):
    path = tmp_path / "run.zarr"
    proc = holder(path)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert ".run.zarr.lock" in os.listdir(tmp_path)  # its file is left; its lock is not
    with RunStore(path, mode="a") as resumed:
        resumed.lock()
        assert resumed.latest_checkpoint().window == 0
        resumed.write_checkpoint(Checkpoint(1, [], []))
    assert resumed.outcome == "resumable" and sorted(os.listdir(tmp_path)) == ["run.zarr"]


def test_two_writers_in_one_process_are_refused_too(tmp_path):
    path = tmp_path / "run.zarr"
    first = RunStore(path)
    with pytest.raises(StoreLockedError, match=f"process {os.getpid()} \\(this process"):
        RunStore(path, mode="w")
    first.close()
    RunStore(path, mode="w").close()
    del first  # a store dropped without close() lets its lock go as well
    dropped = RunStore(path, mode="w")
    del dropped
    RunStore(path, mode="w").close()


def test_the_cli_refuses_a_second_solve_into_a_store_being_written(tmp_path, holder):
    path = tmp_path / "s.zarr"
    proc = holder(path)
    cli = subprocess.run([sys.executable, "-m", "daskie.cli", "solve", "E2", "--store", str(path),
                          "--overwrite", "--steps", "1", "--workers", "1", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert cli.stderr == (f"daskie: error: the run store at {path} is being written by process "
                          f"{proc.pid}; one writer per store: wait for that run to end, or "
                          f"choose another store\n")
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    assert RunStore(path, mode="a").read_meta()["holder"] is True  # the holder's run is whole
