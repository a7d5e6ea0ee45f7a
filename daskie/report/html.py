"""Write a report as one HTML file with bokeh's JavaScript inlined (opens without a network)."""

from __future__ import annotations

import json
import os

from daskie.errors import SpecError

__all__ = ["write_report", "run_report", "bench_report"]


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
    with RunStore(path, mode="a").read() as ds:
        layout = run_layout(ds.load())
        title = f"daskie: {ds.attrs.get('problem', os.path.basename(path))}"
    return _write(layout, out, title)


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
    return _write(bench_layout(data, title=f"daskie benchmark: {name}"), out, f"daskie: {name}")


def write_report(source, out=None) -> str:
    """Report of ``source``: a run store (directory) or a benchmark's ``.json`` file.

    ``out`` defaults to ``source`` with the suffix ``.html``. Returns the path written.
    """
    path = os.fspath(source).rstrip("/")
    if out is None:
        out = os.path.splitext(path)[0] + ".html"
    if path.endswith(".json") or os.path.isfile(path):
        return bench_report(path, out)
    if not os.path.exists(path):
        raise SpecError(f"nothing at {path!r}: give a run store directory or a benchmark .json file")
    return run_report(path, out)


def _write(layout, out, title) -> str:
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    out = os.fspath(out)
    text = file_html(layout, resources=INLINE, title=title)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    return out
