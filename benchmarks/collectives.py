"""All-reduce methods of :class:`daskie.collectives.Group` on Dask workers: ring, parameter
server, binomial tree and gloo's own, with and without fp16 compression.

    python benchmarks/collectives.py [--network loopback|emulated|both] [--workers 2 4]
        [--sizes 1 10 100] [--repeats 7] [--repeats-large 5] [--rate 1gbit] [--out FILE]

For every network, group size n, payload of S MB (float32, MB = 2**20 bytes), method and
compression the ranks run (through :func:`daskie.collectives.run_group`, one pinned task
per worker, one torch thread each) a warm-up round and then the repeats; the methods and
compressions take turns within each repeat, so slow drifts of a shared machine hit them
alike. Each timing is ``perf_counter`` around one ``group.allreduce`` after a barrier, in
every rank; a repeat's time is the slowest rank's (Dask scheduling is not counted). Every
result is checked against the exact sum (integer-valued data, exact in fp16 too).

Reported: the median time, algorithm bandwidth S/t and bus bandwidth 2(n-1)S/(n t) (S is
the float32 size also when the payload travels as fp16), the ratio ring/ps per
configuration, and on loopback the default method (``DEFAULT_METHOD``) against the fastest
method measured there. Networks:

* ``loopback`` — ``LocalCluster(n_workers=n, threads_per_worker=1, host="127.0.0.1")``;
* ``emulated`` — :func:`benchmarks.netns.emulated_cluster`: each worker in its own network
  namespace behind a full-duplex ``tbf`` link of ``--rate`` (needs root); the raw TCP
  throughput of one such link is measured first and recorded. The ring's lower bound there
  is 2(n-1)S/(nB) with B that throughput.

Targets: emulated 1 Gbit/s, 4 workers, 100 MB: ring <= 0.35x the parameter server; on
loopback the default method within 1.1x of the fastest. With more workers than cores
(4 workers on 2 cores here) the ranks share CPUs, which the loopback numbers show.

benchmarks/results/collectives.json: ``--network both --workers 2 4 --sizes 1 10 100
--repeats 7 --repeats-large 5`` (9.6 minutes, 2 cores shared with other jobs, load ~4).
Emulated 1 Gbit/s, 4 workers, 100 MB: ring 1.60 s, gloo 1.42 s, ps 5.40 s (ring/ps 0.30),
ring bound 1.35 s. Loopback: gloo fastest in 11 of 12 configurations; the 12th (2 workers,
100 MB, fp16: gloo 1.89 s vs tree 1.46 s, repeats spread 0.6-2.4 s) had gloo fastest again
in a 9-repeat rerun. fp16 compression is slower than none everywhere on this machine: its
casts and error feedback cost more CPU time than the halved bytes save on a 1 Gbit/s link.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from daskie.collectives import Group  # noqa: E402
from daskie.runtime import DaskExecutor, run_group  # noqa: E402
from daskie.runtime.groups import group_workers  # noqa: E402
from daskie.collectives.group import DEFAULT_METHOD, METHODS  # noqa: E402

MB = 2**20
COMPRESS = (None, "fp16")


def rank_bench(group, n_elems, configs, repeats, warmup):
    """On every rank: time each (method, compress) ``warmup + repeats`` times, in turns.

    Returns ``{"method|compress": {"s": [...], "ok": bool}}`` (this rank's times).
    """
    torch.set_num_threads(1)
    n, r = group.size, group.rank
    pattern = (torch.arange(n_elems, dtype=torch.int64) % 7).to(torch.float32)
    base = pattern + r
    expected = pattern * n + n * (n - 1) / 2   # exact in float32 and in fp16
    x = torch.empty_like(base)
    out = {f"{m}|{c}": {"s": [], "ok": True} for m, c in configs}
    for k in range(warmup + repeats):
        for method, compress in configs:
            x.copy_(base)
            group.barrier()
            t0 = time.perf_counter()
            group.allreduce(x, method=method, compress=compress, key=f"{method}")
            dt = time.perf_counter() - t0
            rec = out[f"{method}|{compress}"]
            rec["ok"] = rec["ok"] and bool(torch.equal(x, expected))
            if k >= warmup:
                rec["s"].append(dt)
    return out


# --- bootstrap -----------------------------------------------------------------------------
def _host(address):
    return address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")


def _free_port(dask_worker):
    import socket

    with socket.socket() as s:
        s.bind((_host(dask_worker.address), 0))
        return int(s.getsockname()[1])


def _rank_main(fn, rank, size, host, port, timeout, args):
    from distributed import get_worker

    group = Group(rank, size, host, port, timeout=timeout, local_host=_host(get_worker().address))
    try:
        return fn(group, *args)
    finally:
        group.close()


def _plain_run_group(client, fn, rank_args, *, timeout, name):
    """The bootstrap of ``run_group`` (one task per worker, pinned; rank 0's worker picks the
    port) without its monitoring loop: used when ``run_group`` itself fails on this
    distributed version (see ``probe_run_group``)."""
    import uuid

    size = len(rank_args)
    addrs = group_workers(DaskExecutor(client), size)
    port = client.run(_free_port, workers=[addrs[0]])[addrs[0]]
    tag = uuid.uuid4().hex[:8]
    futures = [client.submit(_rank_main, fn, r, size, _host(addrs[0]), port, timeout,
                             rank_args[r], key=f"{name}-rank{r}-{tag}", workers=[addrs[r]],
                             allow_other_workers=False, pure=False) for r in range(size)]
    return client.gather(futures)


def _probe(group):
    return group.rank


def probe_run_group(client, n, log):
    """Whether ``daskie.collectives.run_group`` works here (a trivial group of ``n``)."""
    try:
        ok = run_group(client, _probe, [()] * n, timeout=20, name="probe") == list(range(n))
        return ("run_group", None) if ok else ("fallback", "run_group returned wrong ranks")
    except Exception as exc:  # noqa: BLE001 - reported, then the fallback is used
        why = f"{type(exc).__name__}: {exc}"
        log(f"  run_group failed ({why}); using the same bootstrap without its wait loop")
        time.sleep(2)  # let the probe's ranks (already started) finish
        return "fallback", why


def bench_cluster(client, network, n, sizes, methods, repeats, repeats_large, warmup,
                  timeout, log):
    """All records for one cluster of ``n`` workers."""
    configs = [(m, c) for m in methods for c in COMPRESS]
    records = []
    how, why = probe_run_group(client, n, log)
    launch = run_group if how == "run_group" else _plain_run_group
    for mb in sizes:
        reps = repeats_large if mb >= 100 else repeats
        n_elems = int(mb * MB) // 4
        t0 = time.perf_counter()
        per_rank = launch(client, rank_bench,
                             [(n_elems, configs, reps, warmup)] * n,
                             timeout=timeout, name=f"bench-{network}-{n}-{mb}")
        wall = time.perf_counter() - t0
        for method, compress in configs:
            key = f"{method}|{compress}"
            ranks = [pr[key]["s"] for pr in per_rank]
            all_s = [max(ts) for ts in zip(*ranks)]
            med = statistics.median(all_s)
            size_b = mb * MB
            rec = {"network": network, "workers": n, "method": method,
                   "compress": compress or "none", "mb": mb, "repeats": reps,
                   "median_s": med, "min_s": min(all_s), "all_s": all_s,
                   "algbw_mb_s": size_b / med / MB,
                   "busbw_mb_s": 2 * (n - 1) * size_b / (n * med) / MB,
                   "correct": all(pr[key]["ok"] for pr in per_rank),
                   "cores": os.cpu_count(), "oversubscribed": n > (os.cpu_count() or 1),
                   "bootstrap": how, **({"run_group_error": why} if why else {})}
            records.append(rec)
        log(f"  {network} n={n} {mb:>5g} MB: {len(configs)} configs x ({warmup}+{reps}) "
            f"in {wall:.1f} s")
    return records


def run_loopback(n, args, log):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=":0", processes=True, memory_limit=0) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(n)
        return bench_cluster(client, "loopback", n, args.sizes, args.methods, args.repeats,
                             args.repeats_large, args.warmup, args.timeout, log)


def run_emulated(n, args, log):
    from netns import emulated_cluster

    with emulated_cluster(n, rate=args.rate) as client:
        return bench_cluster(client, f"emulated-{args.rate}", n, args.sizes, args.methods,
                             args.repeats, args.repeats_large, args.warmup, args.timeout, log)


# --- summary -------------------------------------------------------------------------------
def summarise(records, link_mb_s):
    by = {(r["network"], r["workers"], r["mb"], r["compress"], r["method"]): r for r in records}
    keys = sorted({k[:4] for k in by}, key=lambda k: (k[0], k[1], k[3] != "none", k[2]))
    ring_ps, default_fastest, bounds = [], [], []
    for net, n, mb, comp in keys:
        ring, ps = by.get((net, n, mb, comp, "ring")), by.get((net, n, mb, comp, "ps"))
        if ring and ps:
            ring_ps.append({"network": net, "workers": n, "mb": mb, "compress": comp,
                            "ring_s": ring["median_s"], "ps_s": ps["median_s"],
                            "ratio": ring["median_s"] / ps["median_s"]})
        methods = {m: by[(net, n, mb, comp, m)] for m in METHODS if (net, n, mb, comp, m) in by}
        if net == "loopback" and DEFAULT_METHOD in methods:
            fastest = min(methods, key=lambda m: methods[m]["median_s"])
            default_fastest.append({
                "network": net, "workers": n, "mb": mb, "compress": comp,
                "default": DEFAULT_METHOD, "default_s": methods[DEFAULT_METHOD]["median_s"],
                "fastest": fastest, "fastest_s": methods[fastest]["median_s"],
                "ratio": methods[DEFAULT_METHOD]["median_s"] / methods[fastest]["median_s"]})
        if net.startswith("emulated") and ring and link_mb_s.get(net):
            b = link_mb_s[net]
            payload = 0.5 if comp == "fp16" else 1.0
            bound = 2 * (n - 1) * mb * payload / (n * b)
            bounds.append({"network": net, "workers": n, "mb": mb, "compress": comp,
                           "link_mb_s": b, "ring_bound_s": bound, "ring_s": ring["median_s"],
                           "ring_over_bound": ring["median_s"] / bound})
    targets = []
    for r in ring_ps:
        if r["network"] == "emulated-1gbit" and r["workers"] == 4 and r["mb"] == 100 \
                and r["compress"] == "none":
            targets.append({"target": "emulated 1gbit, 4 workers, 100 MB: ring <= 0.35 x ps",
                            "value": r["ratio"], "met": r["ratio"] <= 0.35})
    if default_fastest:
        worst = max(default_fastest, key=lambda d: d["ratio"])
        targets.append({"target": f"loopback: default ({DEFAULT_METHOD}) within 1.1 x fastest "
                                  "(worst configuration)",
                        "value": worst["ratio"], "met": worst["ratio"] <= 1.1,
                        "where": {k: worst[k] for k in ("workers", "mb", "compress", "fastest")},
                        "met_in": sum(d["ratio"] <= 1.1 for d in default_fastest),
                        "of": len(default_fastest)})
    return {"ring_over_ps": ring_ps, "default_vs_fastest": default_fastest,
            "ring_bound": bounds, "targets": targets}


def table(records, summary):
    lines = []
    methods = [m for m in ("ring", "ps", "tree", "gloo") if any(r["method"] == m for r in records)]
    head = f"{'network':<16}{'n':>2} {'MB':>5} {'fp16':>5} {'reps':>4} " + "".join(
        f"{m + ' s':>9}" for m in methods) + f"{'ring/ps':>8} {'best':>5} {'busbw best MB/s':>16}"
    lines += [head, "-" * len(head)]
    by = {}
    for r in records:
        by.setdefault((r["network"], r["workers"], r["compress"], r["mb"]), {})[r["method"]] = r
    order = lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "none", kv[0][3])  # noqa: E731
    for (net, n, comp, mb), ms in sorted(by.items(), key=order):
        cells = "".join(f"{ms[m]['median_s']:9.4f}" if m in ms else f"{'-':>9}" for m in methods)
        ratio = (f"{ms['ring']['median_s'] / ms['ps']['median_s']:8.2f}"
                 if "ring" in ms and "ps" in ms else f"{'-':>8}")
        best = min(ms, key=lambda m: ms[m]["median_s"])
        bad = "" if all(r["correct"] for r in ms.values()) else "  WRONG SUM"
        over = " *" if ms[best]["oversubscribed"] else ""
        reps = ms[best]["repeats"]
        lines.append(f"{net:<16}{n:>2} {mb:>5g} {'yes' if comp == 'fp16' else 'no':>5} {reps:>4} "
                     f"{cells}{ratio} {best:>5} {ms[best]['busbw_mb_s']:16.1f}{over}{bad}")
    if any(r["oversubscribed"] for r in records):
        lines.append(f"* {max(r['workers'] for r in records)} workers on {os.cpu_count()} cores: "
                     "ranks share CPUs (oversubscribed), so reductions and copies queue for a core")
    if summary["default_vs_fastest"]:
        lines += ["", f"loopback: default method {DEFAULT_METHOD!r} vs the fastest measured"]
        for d in summary["default_vs_fastest"]:
            lines.append(f"  n={d['workers']} {d['mb']:>5g} MB fp16={d['compress']:<5} "
                         f"default {d['default_s']:.4f} s, fastest {d['fastest']} "
                         f"{d['fastest_s']:.4f} s: {d['ratio']:.2f}x")
    if summary["ring_bound"]:
        lines += ["", "emulated: ring against its bound 2(n-1)S/(nB) (B = measured link MB/s; "
                      "S halved with fp16)"]
        for b in summary["ring_bound"]:
            lines.append(f"  {b['network']} n={b['workers']} {b['mb']:>5g} MB fp16={b['compress']:<5} "
                         f"ring {b['ring_s']:.3f} s, bound {b['ring_bound_s']:.3f} s "
                         f"({b['ring_over_bound']:.2f}x)")
    if summary["targets"]:
        lines += ["", "targets:"]
        for t in summary["targets"]:
            lines.append(f"  {t['target']}: {t['value']:.3f} -> {'MET' if t['met'] else 'NOT MET'}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", choices=("loopback", "emulated", "both"), default="both")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 100], help="MB (2**20 B)")
    ap.add_argument("--methods", nargs="+", default=["ring", "ps", "tree", "gloo"],
                    choices=METHODS)
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats (after a warm-up)")
    ap.add_argument("--repeats-large", type=int, default=5, help="repeats for sizes >= 100 MB")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rate", default="1gbit", help="emulated link rate (tc syntax)")
    ap.add_argument("--timeout", type=float, default=300.0, help="group timeout, seconds")
    ap.add_argument("--out", help="write the records and the summary as JSON")
    args = ap.parse_args(argv)
    args.sizes = [int(s) if float(s).is_integer() else s for s in args.sizes]
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # tear the namespaces down

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    records, link_mb_s = [], {}
    nets = ["loopback", "emulated"] if args.network == "both" else [args.network]
    for net in nets:
        if net == "emulated":
            from netns import check

            log(f"emulated: raw TCP throughput of one {args.rate} link")
            link = check(args.rate, mb=100)
            link_mb_s[f"emulated-{args.rate}"] = (link["a_to_b"] + link["b_to_a"]) / 2
        for n in args.workers:
            t0 = time.perf_counter()
            log(f"{net}: {n} workers")
            records += (run_loopback if net == "loopback" else run_emulated)(n, args, log)
            log(f"{net}: {n} workers done in {time.perf_counter() - t0:.0f} s")
    summary = summarise(records, link_mb_s)
    print(table(records, summary))
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s")
    if args.out:
        meta = {"command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
                "cores": os.cpu_count(), "platform": platform.platform(),
                "torch": torch.__version__, "default_method": DEFAULT_METHOD,
                "repeats": args.repeats, "repeats_large": args.repeats_large,
                "warmup": args.warmup, "mb_bytes": MB, "total_s": total,
                "link_mb_s": link_mb_s,
                "timing": "perf_counter around one allreduce after a barrier in each rank; "
                          "per repeat the slowest rank; median over repeats",
                "note": "workers > cores means ranks share CPUs (oversubscribed)"}
        from harness import write_records

        summary_rows = summary if isinstance(summary, list) else [summary]
        write_records(args.out, [{"kind": "allreduce", **r} for r in records]
                      + [{"kind": "summary", **s} for s in summary_rows], **meta)


if __name__ == "__main__":
    main()
