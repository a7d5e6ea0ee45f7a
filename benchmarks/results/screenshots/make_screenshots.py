"""Make the screenshots of issue 16 (reports and the live page) in headless chromium.

    python benchmarks/results/screenshots/make_screenshots.py [--only run,interrupted,bench,live]

Writes HTML and PNG files next to this script: ``run_2d.png`` (a 2-D run's report),
``interrupted.png`` (the report of a run stopped after its third window), ``bench.png`` (the
accuracy benchmark's report) and ``live_ceptf.png`` (the live page while a joint CEPTF run
trains on a 2-worker LocalCluster).
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def shoot_live(url: str, png: Path, wait_s: float = 12.0):
    """Screenshot of a bokeh *server* page: it draws only after its websocket session has
    synced, which ``--screenshot`` does not wait for; so drive chromium over its DevTools
    protocol (tornado's websocket client), wait, and capture."""
    import base64
    import json
    import socket
    import urllib.request

    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(["chromium", "--headless", "--disable-gpu", "--no-sandbox",
                             "--hide-scrollbars", "--window-size=1400,1800",
                             f"--remote-debugging-port={port}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
                ws = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
                break
            except (OSError, StopIteration):
                time.sleep(0.2)
        time.sleep(wait_s)

        async def capture():
            conn = await websocket_connect(ws, max_message_size=64 * 2**20)
            conn.write_message(json.dumps({"id": 1, "method": "Page.captureScreenshot",
                                           "params": {"format": "png"}}))
            while True:
                msg = json.loads(await conn.read_message())
                if msg.get("id") == 1:
                    return base64.b64decode(msg["result"]["data"])

        png.write_bytes(IOLoop.current().run_sync(capture))
        print("wrote", png)
    finally:
        proc.kill()
        proc.wait()


def shoot(target: str, png: Path, budget_ms: int = 10000):
    subprocess.run(["chromium", "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                    "--window-size=1400,1800", f"--virtual-time-budget={budget_ms}",
                    f"--screenshot={png}", target], capture_output=True, timeout=180, check=True)
    print("wrote", png)


def run_2d(tmp):
    import daskie
    from daskie import MLP, LevenbergMarquardt, Monolithic, QuadratureCollocation
    from daskie.report import write_report

    store = Path(tmp) / "e1.zarr"
    daskie.solve("E1", formulation=QuadratureCollocation(net=MLP(hidden=(16, 16))),
                 strategy=Monolithic(window=20), optimizer=LevenbergMarquardt(steps=100),
                 client="sync", store=store)
    html = write_report(store, HERE / "run_2d.html")
    shoot(Path(html).as_uri(), HERE / "run_2d.png")


def interrupted(tmp):
    import daskie
    from daskie import MLP, LevenbergMarquardt, Monolithic, QuadratureCollocation
    from daskie.report import write_report

    store = Path(tmp) / "stopped.zarr"

    def stop(k, summary):
        if k == 2:
            raise KeyboardInterrupt

    try:
        daskie.solve("lshape", formulation=QuadratureCollocation(net=MLP(hidden=(12, 12))),
                     strategy=Monolithic(window=10), optimizer=LevenbergMarquardt(steps=200),
                     client="sync", store=store, on_window=stop)
    except KeyboardInterrupt:
        pass
    html = write_report(store, HERE / "interrupted.html")
    shoot(Path(html).as_uri(), HERE / "interrupted.png")


def bench(tmp):
    from daskie.report import write_report

    html = write_report(ROOT / "benchmarks" / "results" / "accuracy.json", HERE / "bench.html")
    shoot(Path(html).as_uri(), HERE / "bench.png")


def live(tmp):
    from distributed import Client, LocalCluster

    import daskie
    from daskie import CEPTF, MLP, Adam, OrderReduction
    from daskie.dashboard.plugin import page_url

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        done = {}

        def train():
            done["ds"] = daskie.solve("E1", formulation=OrderReduction(net=MLP(hidden=(12, 12))),
                                      strategy=CEPTF(window=20), optimizer=Adam(steps=3000),
                                      target_loss=0.0, client=client)

        thread = threading.Thread(target=train, daemon=True)
        thread.start()
        url = page_url(client)
        time.sleep(40)  # some windows in
        shoot_live(url, HERE / "live_ceptf.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="run,interrupted,bench,live")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        raise SystemExit("needs chromium (apt-get install -y chromium)")
    tmp = tempfile.mkdtemp()
    try:
        for name in args.only.split(","):
            {"run": run_2d, "interrupted": interrupted, "bench": bench, "live": live}[name](tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # the LocalCluster's worker processes import this file
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
