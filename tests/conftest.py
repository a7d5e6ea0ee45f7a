"""Shared test settings."""

import ast
import functools
import sys
import threading

import pytest
import torch

if sys.version_info < (3, 13):
    # CPython before 3.13 keeps the AST constructor's recursion counter in one per-interpreter
    # struct, so two threads inside ``ast.parse`` at once (a GC pause lets the GIL switch in
    # the middle) fail with "SystemError: AST constructor recursion depth mismatch"
    # (python/cpython#106905). In this suite the main thread parses for pytest's assertion
    # rewriting while Dask's IO-loop thread (in-process clients) formats tracebacks, which on
    # 3.11 calls ``ast.parse`` for the ^^^ markers; CI failed on it twice (in test_structure,
    # and importing a plugin after the last test). One lock around ``ast.parse`` serialises them.
    _ast_parse = ast.parse
    _ast_lock = threading.RLock()

    @functools.wraps(_ast_parse)
    def _locked_parse(*args, **kwargs):
        with _ast_lock:
            return _ast_parse(*args, **kwargs)

    ast.parse = _locked_parse

    # The hypothesis plugin imports hypothesis at the terminal summary, through the assertion
    # rewriter's ast.parse, while a Dask thread of the last module may still be formatting a
    # traceback: the same race (seen once after 83 passed tests). Imported here, before any
    # thread exists.
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        pass


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
    from daskie.cluster import local_cluster

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


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless chromium (installed with apt-get where that is possible)."""
    import os
    import shutil
    import subprocess

    exe = shutil.which("chromium")
    if exe is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                       "chromium", shell=True, capture_output=True, timeout=900)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed and could not be installed "
                    "(`apt-get install chromium` needs apt-get and root)")
    return exe


@pytest.fixture(scope="session")
def render(chromium):
    """``render(html_file, png, height=1800) -> (console lines, JavaScript errors)``: the page
    opened in headless chromium, its screenshot in ``png``."""
    import subprocess
    from pathlib import Path

    def render(html_file, png, height=1800):
        res = subprocess.run(
            [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0", f"--window-size=1300,{height}",
             "--virtual-time-budget=10000", f"--screenshot={png}", Path(html_file).as_uri()],
            capture_output=True, text=True, timeout=120)
        console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
        errors = [line for line in console if ":ERROR:CONSOLE" in line or "Uncaught" in line
                  or "Error" in line]
        assert Path(png).exists(), res.stderr[-2000:]
        return console, errors

    return render
