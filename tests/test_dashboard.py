"""The live page on a real LocalCluster's dashboard, fetched over 127.0.0.1 while a run trains;
the terminal progress bar."""

import io
import json
import logging
import threading
import time
import urllib.error
import urllib.request
import warnings


import daskie
from daskie import MLP, LevenbergMarquardt, Monolithic, QuadratureCollocation
from daskie.dashboard.plugin import page_url
from daskie.dashboard.progress import ProgressBar
from daskie.errors import ToleranceWarning

SMALL_Q = QuadratureCollocation(net=MLP(hidden=(8, 8)), points=64, nodes=8, test_points=200)


def _get(url):
    with urllib.request.urlopen(url, timeout=20) as resp:
        return resp.status, resp.read().decode()


def _data(url):
    status, body = _get(url + "/data.json")
    assert status == 200
    return json.loads(body)


def _points(data):
    return sum(len(c["epoch"]) for c in data["loss"].values()), len(data["windows"]["worker"])


def _pulled_sources(url):
    """Rows of each data source of the page's bokeh document, as a browser session gets it."""
    from bokeh.client import pull_session
    from bokeh.models import ColumnDataSource

    with pull_session(url=url) as session:
        return [len(next(iter(src.data.values()), ())) for src in
                session.document.select({"type": ColumnDataSource})]


def test_live_page_shows_the_run_while_it_trains(client, caplog):
    caplog.set_level(logging.INFO, logger="daskie.dashboard")
    url = page_url(client)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/daskie")
    result = {}
    # The run pauses after window 2 until the page has been read once, and after window 5
    # until it has been read again: the page is seen during training however fast the steps
    # are (a fixed sleep made this test depend on the machine's speed).
    gates = {2: threading.Event(), 5: threading.Event()}

    def hold(k, summary):
        if k in gates:
            gates[k].wait(60)

    def train():
        try:
            with warnings.catch_warnings():  # a tiny net: far from the reference, as expected
                warnings.simplefilter("ignore", ToleranceWarning)
                result["ds"] = daskie.solve("E1", formulation=SMALL_Q,
                                            strategy=Monolithic(window=2),
                                            optimizer=LevenbergMarquardt(steps=160),
                                            target_loss=0.0, client=client, on_window=hold)
        except BaseException as exc:  # re-raised in the test's thread
            result["error"] = exc

    def read_until(ok):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and thread.is_alive():
            try:
                data = _data(url)
            except urllib.error.HTTPError:  # the plugin is being installed
                data = None
            if data is not None and data["info"].get("problem") == "E1" and ok(data):
                return data
            time.sleep(0.1)
        return None

    thread = threading.Thread(target=train)
    thread.start()
    try:
        first = read_until(lambda d: all(_points(d)) and len(d["windows"]["worker"]) >= 3)
        assert first is not None, "no data on the page while training"
        status, page = _get(url)
        assert status == 200 and "bokeh" in page.lower()
        rows_first = _pulled_sources(url)
        gates[2].set()
        second = read_until(lambda d: len(d["windows"]["worker"]) >= 6)
        assert second is not None, "the page did not follow the run"
        rows_second = _pulled_sources(url)
        assert thread.is_alive()  # held after window 5: the page was read during training
    finally:
        for gate in gates.values():
            gate.set()
        thread.join(120)
    if "error" in result:
        raise result["error"]
    assert second["run"] == first["run"]
    # the loss curves and the timeline grow while the run trains
    assert _points(second)[0] > _points(first)[0] and _points(second)[1] > _points(first)[1]
    assert sum(rows_second) > sum(rows_first) > 0
    workers = set(second["windows"]["worker"])
    assert workers and all(w.startswith("tcp://127.0.0.1:") for w in workers)
    assert all(0 <= a < b for a, b in zip(second["windows"]["left"], second["windows"]["right"]))
    assert second["windows"]["sync_s"] and set(second["windows"]["sync_s"]) == {0.0}
    # the link is given when the run starts, and the run itself is unchanged by being watched
    assert any(url in r.getMessage() for r in caplog.records)
    assert result["ds"].attrs["epochs"] == 160
    # the page, fetched again after the run, holds every window of it
    final = _data(url)
    assert len(final["windows"]["worker"]) == 80 and len(final["mse"]["epoch"]) == 80


def test_progress_bar_line():
    out = io.StringIO()
    bar = ProgressBar(100, out)
    bar({"kind": "step", "group": 0, "epoch": 1, "loss": 1.0})  # step records: no redraw
    assert out.getvalue() == ""
    bar._t0 -= 12.0  # the bar was started 12 s ago (cluster start-up included)
    bar({"kind": "window", "window": 0, "epoch": 25, "loss": 2e-3, "mse": 1e-4, "elapsed_s": 5.0})
    bar({"kind": "window", "window": 1, "epoch": 50, "loss": 1e-5, "mse": 2e-6, "elapsed_s": 10.0})
    bar.close()
    lines = out.getvalue().split("\r")
    assert lines[-1].startswith("[############............]  50%  epoch 50/100  loss 1.00e-05  mse 2.00e-06")
    assert "00:12 elapsed, ETA 00:10" in lines[-1] and out.getvalue().endswith("\n")


def test_feed_draws_one_joint_curve_once_the_groups_share_their_loss():
    from daskie.dashboard.feed import RunFeed
    from daskie.dashboard.page import LivePage

    feed = RunFeed()
    feed.add({"kind": "run", "run": "r", "t": 0.0, "problem": "E1"})
    page = LivePage(feed)
    step = {"kind": "step", "run": "r", "window": 0, "optimizer": "Adam",
            "submodels": "F0.2<[10:20]+mu@x[0:5]"}
    feed.add({**step, "group": 0, "epoch": 1, "loss": 2.0})
    page.update()
    assert feed.joint is None and list(page.losses) == ["group:0:F0.2<[10:20]+mu@x[0:5]"]
    generation = feed.generation
    feed.add({**step, "group": 1, "epoch": 1, "loss": 2.0})  # the same joint loss
    assert feed.joint is True and feed.generation == generation + 1
    page.update()
    assert list(page.losses) == ["joint"]  # the per-group line went, legend entry included
    labels = [item.label.value for item in page.loss_plot.legend[0].items]
    assert labels == ["test MSE (after each window)", "joint loss (every group)"]
    assert page.losses["joint"].data == {"epoch": [1], "loss": [2.0]}
    feed.add({"kind": "joint", "run": "r", "window": 0, "epoch": 1, "loss": 2.0, "mse": 0.5})
    page.update()
    assert page.mse.data["mse"] == [0.5]
