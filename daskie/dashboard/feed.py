"""The events of the run the live page shows, kept on the scheduler."""

from __future__ import annotations

import time

from daskie.report import figures

__all__ = ["RunFeed"]

_KEEP = ("window", "group", "rank", "submodels", "worker", "epoch", "loss", "mse", "window_s",
         "sync_s", "peak_rss_mb", "t_start", "t_end", "optimizer")


class RunFeed:
    """Records of one run, in arrival order, built from the events on the ``"daskie"`` topic.

    A ``"run"`` event (sent by ``daskie.solve`` when it starts) begins a new run and clears the
    feed; ``"step"`` and ``"window"`` events (from the window tasks) and ``"joint"`` events (the
    client's test MSE after each window) of that run become records in the format of the run's
    history, so that the live page and the report draw them with the same functions
    (:mod:`daskie.report.figures`). Events of other runs are ignored.

    Parameters
    ----------
    max_records : int
        Step records kept at most (window and joint records are always kept); beyond it every
        other step record is dropped, so a long run keeps its whole curve at a coarser grain.
    """

    def __init__(self, max_records: int = 50_000):
        self.max_records = int(max_records)
        self.run: str | None = None
        self.info: dict = {}
        self.t0 = time.time()
        self.records: list[dict] = []
        self.generation = 0  # bumped at every new run (pages then start over)
        # Whether the groups share one joint loss (figures.losses_are_joint): None until two
        # groups have reported the same step; when it is settled the pages redraw once, with
        # one joint curve instead of one per group.
        self.joint: bool | None = None

    def add(self, msg) -> None:
        """Take one event (a dict with ``kind`` and ``run``); anything else is ignored."""
        if not isinstance(msg, dict) or "kind" not in msg:
            return
        if msg["kind"] == "run":
            self.run, self.info = msg.get("run"), dict(msg)
            self.t0 = float(msg.get("t", time.time()))
            self.records = []
            self.joint = None
            self.generation += 1
            return
        if self.run is None:  # events of a run that was not announced: follow it
            self.run, self.t0 = msg.get("run"), float(msg.get("t_start", msg.get("t", time.time())))
            self.generation += 1
        if msg.get("run") != self.run:
            return
        rec = {k: msg[k] for k in _KEEP if k in msg and msg[k] is not None}
        rec.update({k: v for k, v in msg.items() if k.startswith("loss_") and v is not None})
        # The event's kind is not the record's: the client's "joint" event is the window
        # summary record, the tasks' events are steps (polish steps by their group).
        rec["kind"] = ("window" if msg["kind"] == "joint" else
                       "polish" if msg.get("group") == figures.POLISH or msg.get("record_kind") == "polish"
                       else "step")
        self.records.append(rec)
        if self.joint is None and rec["kind"] == "step":
            joint = figures.losses_are_joint(self.records)
            if joint is not None:
                self.joint = joint
                self.generation += 1  # curves are drawn differently from now on
        if len(self.records) > self.max_records:
            self._thin()

    def _thin(self):
        kept, odd = [], False
        for rec in self.records:
            if "t_start" in rec or rec.get("kind") == "window":
                kept.append(rec)
            else:
                odd = not odd
                if odd:
                    kept.append(rec)
        self.records = kept
        self.generation += 1  # sources must be rebuilt from the thinned records

    def columns(self, start: int = 0) -> dict:
        """The plot data of records ``start:`` (what the page streams, as plain lists)."""
        new = self.records[start:]
        return {"loss": figures.loss_columns(new, joint=bool(self.joint)),
                "mse": figures.mse_columns(new),
                "windows": figures.window_columns(new, self.t0)}

    def to_json(self) -> dict:
        """The whole feed as JSON-ready data: the run, its description and the plot data."""
        return {"run": self.run, "info": self.info, "records": len(self.records),
                "t0": self.t0, **self.columns()}
