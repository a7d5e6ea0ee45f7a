"""What one training window costs, recorded with the run and published live.

A :class:`WindowProfiler` wraps one window task (one window of one group of sub-models). It
measures the window's wall time ``T_k`` (``window_s``, from the start of the task to the end of
its last step), the time spent synchronising with other tasks (``sync_s``: collectives add to
it through :meth:`WindowProfiler.add_sync`; 0 while a window exchanges nothing), the process's
peak resident memory over the window (``peak_rss_mb``, sampled with psutil at every step), the
peak CUDA memory where the task used a GPU (``peak_cuda_mb``), the start and end wall-clock
timestamps (``t_start``, ``t_end``: seconds since the epoch, for the timeline) and the mean
squared residual of each residual block at the end (``loss_<block>``). These fields are added to
the window's last training record, which already names the window, group, sub-models and
worker and carries the test MSE; the records flow into the run's store as ``history_*``.

While the window trains, the profiler publishes its progress on the Dask event topic
``"daskie"`` (``get_worker().log_event``), at most every ``interval`` seconds plus once at the
end of the window, so that :mod:`daskie.dashboard` can draw it live. Outside a Dask worker
(``client="sync"``) nothing is published.
"""

from __future__ import annotations

import math
import time

import psutil
import torch

from daskie.records import TOPIC

__all__ = ["TOPIC", "PROFILE_FIELDS", "WindowProfiler", "publish"]


#: Fields the profiler adds to the last record of each window (besides ``loss_<block>``).
PROFILE_FIELDS = ("window_s", "sync_s", "peak_rss_mb", "t_start", "t_end")

_MB = 2.0**20


def _worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def publish(msg: dict, worker=None) -> None:
    """Publish ``msg`` (msgpack-serialisable) on :data:`TOPIC` from the current Dask worker.

    Does nothing outside a worker. ``worker`` saves the lookup when the caller has it.
    """
    worker = worker if worker is not None else _worker()
    if worker is not None:
        worker.log_event(TOPIC, msg)


class WindowProfiler:
    """Measure one training window and publish its progress.

    Create it at the start of the task (the clock starts then), pass :meth:`step` to
    :func:`~daskie.train.loop.advance` as its ``callback``, and call :meth:`finish` with the
    records afterwards.

    Parameters
    ----------
    run : str
        Token of the run (the live page follows one run at a time).
    window, group : int
        Window index and group index (``-1`` for the joint polish).
    submodels : str
        The group's sub-models joined with ``"+"``.
    interval : float
        Least time in seconds between two step events published by this window.
    """

    def __init__(self, run: str, window: int, group: int, submodels: str, *, interval: float = 0.2):
        self.t_start = time.time()
        self._t0 = time.perf_counter()
        self.interval = float(interval)
        self.sync_s = 0.0
        self._worker = _worker()
        self._head = {"run": run, "window": int(window), "group": int(group),
                      "submodels": submodels,
                      "worker": self._worker.address if self._worker is not None else "local"}
        self._process = psutil.Process()
        self.peak_rss = self._process.memory_info().rss
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
        self._last_publish = -math.inf

    def add_sync(self, seconds: float) -> None:
        """Count ``seconds`` spent waiting for or exchanging data with other tasks."""
        self.sync_s += float(seconds)

    def step(self, record: dict) -> None:
        """Callback after each optimizer step: sample memory, publish now and then."""
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
        now = time.perf_counter()
        if self._worker is not None and now - self._last_publish >= self.interval:
            self._last_publish = now
            publish({"kind": "step", **self._head, "epoch": int(record["epoch"]),
                     "loss": float(record["loss"]), "t": time.time()}, self._worker)

    def finish(self, records: list, objective=None, theta=None) -> dict:
        """Add the window's figures to its last record, publish them, and return them.

        Parameters
        ----------
        records : list of dict
            The window's training records (the last one receives the figures). When empty
            (the window had nothing to do) nothing is recorded or published.
        objective, theta : optional
            The window's :class:`~daskie.train.objective.Objective` and final parameters, for
            the loss of each residual block (``loss_<block>``).
        """
        if not records:
            return {}
        self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
        fields = {"window_s": time.perf_counter() - self._t0, "sync_s": self.sync_s,
                  "peak_rss_mb": self.peak_rss / _MB, "t_start": self.t_start, "t_end": time.time()}
        if self._cuda:
            fields["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / _MB
        if objective is not None and theta is not None:
            fields.update({f"loss_{b}": v for b, v in objective.block_losses(theta).items()})
        last = records[-1]
        last.update(fields)
        msg = {"kind": "window", **self._head, "epoch": int(last["epoch"]),
               "loss": float(last["loss"]), **fields}
        if "mse" in last:
            msg["mse"] = float(last["mse"])
        publish(msg, self._worker)
        return fields
