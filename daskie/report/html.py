"""Write a report as one HTML file with bokeh's JavaScript inlined (opens without a network)."""

from __future__ import annotations

import json
import os

from daskie.errors import SpecError, StorePathError

__all__ = ["write_report", "run_report", "bench_report", "check_output"]


def check_output(path) -> str:
    """Raise :class:`~daskie.errors.StorePathError` unless a file can be written at ``path``.

    Checked before a report is drawn, so that a wrong ``-o`` costs nothing and says which
    directory is missing, instead of failing at the very end with a raw OSError.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise StorePathError(f"cannot write {path!r}: it is a directory")
    if not os.path.isdir(folder):
        parent = folder
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if os.path.isdir(parent):
            raise StorePathError(f"cannot write {path!r}: the directory {folder!r} does not exist")
        raise StorePathError(f"cannot write {path!r}: {parent!r} is a file, not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorePathError(f"cannot write {path!r}: no write permission in {folder!r}")
    return path


def run_report(store, out) -> str:
    """Write the report of the run stored at ``store`` to the HTML file ``out``; return its path.

    Parameters
    ----------
    store : str or path
        A run's zarr store (``daskie.solve(..., store=...)``, ``daskie solve --store``).
    out : str or path
        The HTML file to write (replaced if it exists).
    """
    from daskie.report.run import run_layout
    from daskie.store import RunStore

    path = os.fspath(store)
    if not RunStore.exists(path):
        raise SpecError(f"{path!r} is not a daskie run store (no zarr group there); give the "
                        f"--store directory of a run or a benchmark's JSON file")
    from daskie.report.run import run_title

    store = RunStore(path, mode="a")
    windows = store.windows()
    with store.read() as ds:
        ds = ds.load()
    # A run without a result has no history in its root dataset: that of its checkpoints.
    has_history = any(str(n).startswith("history_") for n in ds.data_vars)
    records = None if has_history else store.history()
    layout = run_layout(ds, records=records, windows=windows)
    return write_page(layout, out, run_title(ds.attrs).replace("daskie run: ", "daskie: "))


def bench_report(records_file, out) -> str:
    """Write the charts of a benchmark's JSON records (``benchmarks/*.py --out``) to ``out``."""
    from daskie.report.bench import bench_layout

    path = os.fspath(records_file)
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise SpecError(f"no benchmark file at {path!r}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path!r} is not valid JSON ({exc})") from None
    name = os.path.basename(path)
    return write_page(bench_layout(data, title=f"daskie benchmark: {name}"), out, f"daskie: {name}")


def write_report(source, out=None) -> str:
    """Report of ``source``: a run store (directory) or a benchmark's ``.json`` file.

    ``out`` defaults to ``source`` with the suffix ``.html``. Returns the path written.
    """
    path = os.fspath(source).rstrip("/")
    if out is None:
        out = os.path.splitext(path)[0] + ".html"
    check_output(out)
    if path.endswith(".json") or os.path.isfile(path):
        return bench_report(path, out)
    if not os.path.exists(path):
        raise SpecError(f"nothing at {path!r}: give a run store directory or a benchmark .json file")
    return run_report(path, out)


def write_page(layout, out, title) -> str:
    """Write a bokeh ``layout`` as one self-contained HTML file (bokeh's JavaScript inline,
    so the page opens without a network) titled ``title``; returns the path written.
    ``out`` is checked first (:func:`check_output`): a missing folder or a file that cannot
    be written is a :class:`~daskie.errors.StorePathError` naming it."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    out = check_output(out)
    text = file_html(layout, resources=INLINE, title=title)
    try:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise StorePathError(f"cannot write {out!r}: {exc.strerror or exc}") from exc
    return out
