"""A one-line progress bar for terminals: epochs, loss, test MSE and the time left."""

from __future__ import annotations

import math
import time

__all__ = ["ProgressBar"]


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class ProgressBar:
    """Redraw one line of ``stream`` (a terminal) as training records arrive.

    Use it as ``daskie.solve``'s ``progress`` callback; it redraws on every per-window joint
    record (``kind == "window"``, the client's record after each window) and ends the line on
    :meth:`close`.

    Parameters
    ----------
    total : int
        Epochs (optimizer steps) the run will take at most.
    stream : file
        Where to draw (a terminal: the line is rewritten with ``\\r``).
    width : int
        Characters of the bar itself.
    """

    def __init__(self, total: int, stream, width: int = 24):
        self.total = max(1, int(total))
        self.stream = stream
        self.width = int(width)
        self._t0 = time.perf_counter()
        self._drawn = False

    def line(self, epoch: int, loss: float, mse: float, elapsed: float, rate: float = math.nan) -> str:
        """The text of the bar at ``epoch`` after ``elapsed`` seconds, at ``rate`` epochs/s."""
        done = min(1.0, epoch / self.total)
        fill = int(round(done * self.width))
        eta = (self.total - epoch) / rate if rate > 0 else math.inf
        mse_text = f"  mse {mse:.2e}" if math.isfinite(mse) else ""
        return (f"[{'#' * fill}{'.' * (self.width - fill)}] {100 * done:3.0f}%  epoch {epoch}/{self.total}"
                f"  loss {loss:.2e}{mse_text}  {_clock(elapsed)} elapsed, ETA {_clock(eta)}")

    def __call__(self, record: dict) -> None:
        if record.get("kind") != "window":
            return
        epoch = int(record["epoch"])
        # ``elapsed_s`` is the run's training time (a resumed run's earlier sessions included,
        # cluster start-up excluded), so epochs per second come out right in both cases.
        trained = float(record.get("elapsed_s", math.nan))
        rate = epoch / trained if trained > 0 and epoch > 0 else math.nan
        text = self.line(epoch, float(record.get("loss", math.nan)), float(record.get("mse", math.nan)),
                         time.perf_counter() - self._t0, rate)
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the line (call once after the run)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
