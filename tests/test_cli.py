"""The command line: help for every option, one-line errors found inside solve, closed pipes,
Ctrl-C during a run on the embedded cluster, resuming a finished run."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from daskie.cli import build_parser
from daskie.store import Checkpoint, RunStore

DAskie = [sys.executable, "-m", "daskie.cli"]  # noqa: N816


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.choices and "solve" in a.choices)
    return action.choices


@pytest.mark.parametrize("command", ["list", "plan", "solve", "report", "metrics"])
def test_every_option_has_help_and_shows_its_default(command):
    sub = _subparsers()[command]
    text = sub.format_help()
    for action in sub._actions:
        if not action.option_strings or action.help == "==SUPPRESS==":
            continue
        assert action.help, f"{command} {action.option_strings} has no help"
        if action.default not in (None, False) and action.dest != "help":
            shown = f"(default: {action.default})"
            assert shown in " ".join(text.split()) or "default" in action.help, \
                f"{command} {action.option_strings[0]} does not show its default"


def test_plan_and_solve_say_which_formulation_is_their_default():
    subs = _subparsers()
    plan, solve = (" ".join(subs[c].format_help().split()) for c in ("plan", "solve"))
    assert "(default: order-reduction)" in plan and "solve's default is quadrature" in plan
    assert "(default: quadrature)" in solve and "plan's default is order reduction" in solve


def test_a_closed_pipe_ends_quietly():
    with subprocess.Popen([*DAskie, "list", "--json"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        proc.stdout.close()  # the reader is gone before daskie writes
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141
    assert err == ""


def test_an_error_found_inside_solve_is_the_only_line(tmp_path):
    path = tmp_path / "other.zarr"
    with RunStore(path) as store:  # a resumable run with another seed
        store.write_meta({"identity": {"seed": 99}})
        store.write_checkpoint(Checkpoint(0, [], []))
    proc = subprocess.run([*DAskie, "solve", "fredholm1d", "--store", str(path), "--resume"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()]  # no "solving ..." header first
    assert re.match(r"daskie: error: cannot resume \S+: the stored run differs in [a-z_, ]*\bseed\b", proc.stderr)


def test_resuming_a_finished_run_says_so_without_training(tmp_path):
    path = tmp_path / "done.zarr"
    with RunStore(path) as store:
        store.write_result(xr.Dataset({"mu": ("i", np.zeros(2))}), [],
                           {"problem": "fredholm1d", "mse": 1e-9, "rel_l2": 1e-5, "epochs": 40,
                            "wall_s": 3.0, "done": "budget", "store": str(path)})
    before = xr.open_zarr(path).attrs["wall_s"]
    proc = subprocess.run([*DAskie, "solve", "fredholm1d", "--store", str(path), "--resume"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "already complete; nothing to resume" in proc.stdout and "MSE 1.000e-09" in proc.stdout
    assert proc.stderr == ""
    assert xr.open_zarr(path).attrs["wall_s"] == before  # not rewritten
    other = subprocess.run([*DAskie, "solve", "E1", "--store", str(path), "--resume"],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "holds a run of fredholm1d, not E1" in other.stderr


def test_ctrl_c_during_a_run_prints_one_line_and_keeps_a_resumable_store(tmp_path):
    # The workers of the embedded cluster are in the process group too: they must not print.
    path = tmp_path / "run.zarr"
    proc = subprocess.Popen([*DAskie, "solve", "fredholm1d", "--steps", "100000", "--window", "5",
                             "--store", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stderr:  # wait for the first completed window
            lines.append(line)
            if line.startswith("window"):
                break
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    tail = err.strip().splitlines()
    assert tail[-1] == f"daskie: interrupted; a resumable store is kept at {path} (--resume continues it)"
    assert all(line.startswith(("daskie: ", "window ")) for line in tail), err
    assert "Traceback" not in err and "Task exception" not in err
    assert RunStore(path, mode="a").latest_checkpoint() is not None
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_ctrl_c_while_waiting_for_the_workers_of_an_address_ends_at_once(tmp_path):
    # A scheduler with no workers: `--cluster ADDRESS` waits for them (bounded, minutes by
    # default). Those workers are not this terminal's processes, so Ctrl-C must not be
    # ignored while the wait lasts.
    from daskie.collectives.group import free_port

    port = free_port()
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", ":0", "--no-show"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    try:
        proc = subprocess.Popen([*DAskie, "solve", "fredholm1d", "--cluster",
                                 f"tcp://127.0.0.1:{port}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                env={**os.environ, "DASK_DASKIE__CLUSTER__WAIT_TIMEOUT": "300"})
        try:
            time.sleep(8)  # imports, the connection, then the wait for workers
            assert proc.poll() is None, proc.communicate()
            os.killpg(proc.pid, signal.SIGINT)
            t0 = time.monotonic()
            _, err = proc.communicate(timeout=60)
            waited = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        os.killpg(scheduler.pid, signal.SIGTERM)
        scheduler.wait(timeout=30)
    assert proc.returncode == 130, err
    assert waited < 20, f"Ctrl-C took {waited:.1f} s to end the wait"
    assert err.strip().splitlines()[-1].startswith("daskie: interrupted"), err
    assert "Traceback" not in err, err
