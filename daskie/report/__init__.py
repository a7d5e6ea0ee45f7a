"""Self-contained bokeh HTML reports of stored runs and benchmark records.

``write_report("run.zarr", "report.html")`` draws a run from its store alone (no cluster):
solution, exact solution and error, loss curves, the timeline of windows per worker, window
costs and the metrics table. ``write_report("bench.json", "bench.html")`` draws a benchmark's
records as charts. :mod:`daskie.report.figures` holds the figures the live dashboard page
shares. ``operator_report(store_or_operator, "op.html")`` draws a learned operator
(:mod:`daskie.report.operator`).
"""

from daskie.report.html import bench_report, run_report, write_report

__all__ = ["write_report", "run_report", "bench_report", "operator_report"]


def operator_report(source, out) -> str:
    """The report page of a learned operator (:func:`daskie.report.operator.operator_report`;
    imported on first use, as bokeh is)."""
    from daskie.report.operator import operator_report as write

    return write(source, out)
