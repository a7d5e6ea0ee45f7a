"""Fault stress: kill a worker at several moments of a run, many times; count identical results
and hangs.

    python benchmarks/faults.py --runs 10 --out faults.json [--bound 240] [--strategies dp,ceptf]

Every run is a fresh ``LocalCluster(n_workers=3, threads_per_worker=1, processes=True)`` in a
subprocess of its own, under a wall-time bound: a run that exceeds it counts as a hang and is
killed (its process group, cluster included). One worker process is SIGKILLed at one of these
moments (the nanny starts a fresh one; the run must carry on, on the workers alive):

* ``during-window`` -- shortly after window 1 ended, while window 2 (submitted ahead) trains;
* ``between-windows`` -- inside ``on_window`` after window 1, on the client, before the next
  window's result is asked for;
* ``during-gather`` -- the moment a rank task of window 2 has finished and its result sits
  in the worker's memory, before the client has fetched it (a scheduler plugin watches the
  task transitions): the result goes with the worker;
* ``during-checkpoint`` -- while the client writes window 2's checkpoint into the run store.

Each run is compared with an undisturbed run of the same configuration on the same kind of
cluster (computed first): ``identical`` counts runs whose stored solution ``mu`` is bit for bit
the undisturbed one's. ``max_recovery_s`` is the longest time from a kill to the next
completed window. JSON (``--out``): one record per scenario with ``scenario``, ``runs``,
``identical``, ``hangs``, ``max_recovery_s`` (and ``strategy``, ``errors``, ``killed``).

Written against the public API only (``daskie.solve(..., client=client)``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

SCENARIOS = ("during-window", "between-windows", "during-gather", "during-checkpoint")
STRATEGIES = ("dp", "ceptf")
KILL_WINDOW = 1  # the window after which (or during whose successor) a worker dies


def _setup(strategy: str):
    """A small problem per strategy: (problem, formulation, strategy, optimizer)."""
    from daskie import CEPTF, MLP, DataParallel, LevenbergMarquardt, OrderReduction
    from daskie import QuadratureCollocation

    if strategy == "dp":
        return ("fredholm1d", QuadratureCollocation(net=MLP(hidden=(10, 10)), points=128),
                DataParallel(shards=2, window=4), LevenbergMarquardt(steps=24))
    return ("E1", OrderReduction(net=MLP(hidden=(8, 8)), points=64), CEPTF(window=4),
            LevenbergMarquardt(steps=24))


class _Killer:
    """Finds the worker processes of the cluster and kills one of them once."""

    def __init__(self, client):
        self.client = client
        self.t_kill = None
        self.killed = None
        self.pids = client.run(os.getpid)  # worker address -> process id (same machine)

    def busy_worker(self):
        processing = self.client.processing()
        busy = [a for a, keys in processing.items() if keys and a in self.pids]
        holding = [a for a, keys in self.client.has_what().items() if keys and a in self.pids]
        return (busy or holding or sorted(self.pids))[0]

    def kill(self, address=None):
        if self.t_kill is not None:
            return
        address = address or self.busy_worker()
        self.t_kill = time.perf_counter()
        self.killed = address
        os.kill(self.pids[address], signal.SIGKILL)


def _gather_plugin(killer, window, scheduler):
    """A scheduler plugin that kills the worker holding a finished rank task of ``window``."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    class KillOnResult(SchedulerPlugin):
        def __init__(self):
            # Added to the scheduler object directly (it lives in this process), so its
            # start() is not called: the scheduler is given here.
            self.scheduler = scheduler

        def transition(self, key, start, finish, *args, **kwargs):
            name = key if isinstance(key, str) else str(key)
            if finish != "memory" or killer.t_kill is not None \
                    or not name.startswith(f"w{window:05d}-") or "-rank" not in name:
                return
            ts = self.scheduler.tasks.get(key)
            holders = [ws.address for ws in (ts.who_has if ts is not None else ())]
            if holders and holders[0] in killer.pids:
                killer.kill(holders[0])

    return KillOnResult()


def one_run(scenario: str, strategy: str) -> dict:
    """One run in this process: a fresh cluster, one kill (unless ``undisturbed``)."""
    import warnings

    from distributed import Client, LocalCluster

    import daskie
    from daskie.store import RunStore

    warnings.simplefilter("ignore")  # discrepancy warnings of a tiny net: not the point here
    problem, formulation, spec, optimizer = _setup(strategy)
    windows_done: list[float] = []
    store = os.path.join(tempfile.mkdtemp(), "run.zarr")
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        killer = _Killer(client)
        if scenario == "during-gather":
            cluster.scheduler.add_plugin(_gather_plugin(killer, KILL_WINDOW + 1, cluster.scheduler))
        if scenario == "during-checkpoint":
            original = RunStore.write_checkpoint

            def write_checkpoint(self, checkpoint):
                if checkpoint.window == KILL_WINDOW + 1:
                    killer.kill()
                return original(self, checkpoint)

            RunStore.write_checkpoint = write_checkpoint

        def on_window(k, summary):
            windows_done.append(time.perf_counter())
            if k != KILL_WINDOW:
                return
            if scenario == "between-windows":
                killer.kill()
            elif scenario == "during-window":
                threading.Timer(0.05, killer.kill).start()

        t0 = time.perf_counter()
        ds = daskie.solve(problem, formulation=formulation, strategy=spec, optimizer=optimizer,
                          client=client, store=store, on_window=on_window, target_loss=0.0)
        wall = time.perf_counter() - t0
    after = [t for t in windows_done if killer.t_kill is not None and t > killer.t_kill]
    return {"mu_sha256": hashlib.sha256(ds["mu"].values.tobytes()).hexdigest(),
            "mse": float(ds.attrs["mse"]), "wall_s": wall, "killed": killer.killed is not None,
            "recovery_s": (after[0] - killer.t_kill) if after else None}


def _child(scenario, strategy, bound) -> dict:
    """``one_run`` in a subprocess under a wall-time bound; a hang is killed with its cluster."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", scenario, "--strategies", strategy]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: the workers too
    try:
        out, err = proc.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"hang": True}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        lines = err.strip().splitlines() or ["(no output)"]
        # the retries' warnings say what failed before the last attempt
        retries = [line[:400] for line in lines if "failed (" in line]
        return {"error": f"exit {proc.returncode}: {lines[-1]}", "retries": retries}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per scenario (default 10)")
    parser.add_argument("--bound", type=float, default=240.0,
                        help="seconds a run may take before it counts as a hang (default 240)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="dp (DataParallel(shards=2)) and/or ceptf (CEPTF()), default both")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"default all: {', '.join(SCENARIOS)}")
    parser.add_argument("--out", help="JSON file for the records")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.one, args.strategies)), flush=True)
        return 0
    records = []
    for strategy in args.strategies.split(","):
        base = _child("undisturbed", strategy, args.bound)
        if "mu_sha256" not in base:
            print(f"{strategy}: the undisturbed run failed: {base}", file=sys.stderr)
            return 1
        for scenario in args.scenarios.split(","):
            results = [_child(scenario, strategy, args.bound) for _ in range(args.runs)]
            recoveries = [r["recovery_s"] for r in results if r.get("recovery_s") is not None]
            rec = {"scenario": f"{strategy}/{scenario}", "strategy": strategy,
                   "runs": len(results),
                   "identical": sum(r.get("mu_sha256") == base["mu_sha256"] for r in results),
                   "hangs": sum(bool(r.get("hang")) for r in results),
                   "max_recovery_s": max(recoveries) if recoveries else None,
                   "killed": sum(bool(r.get("killed")) for r in results),
                   "errors": [r["error"] for r in results if "error" in r],
                   "retry_logs": [r["retries"] for r in results if r.get("retries")],
                   "baseline_mse": base["mse"]}
            records.append(rec)
            rec_s = "n/a" if rec["max_recovery_s"] is None else f"{rec['max_recovery_s']:.2f}"
            print(f"{rec['scenario']:<30} runs {rec['runs']:>3}  identical {rec['identical']:>3}  "
                  f"hangs {rec['hangs']:>2}  killed {rec['killed']:>3}  max recovery {rec_s} s"
                  + (f"  errors: {rec['errors'][0]}" if rec["errors"] else ""), flush=True)
            if args.out:  # after every scenario: a long stress run keeps what it measured
                with open(args.out, "w") as fh:
                    json.dump(records, fh, indent=1)
    return 0


if __name__ == "__main__":  # worker processes of the LocalCluster import this file
    sys.exit(main())
