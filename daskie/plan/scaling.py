"""A scaling model: what a CEPTF step would take on N workers with G GPUs, and the SR it gives.

Pure arithmetic on plain numbers and a :class:`~daskie.plan.Plan` (no Dask, no torch), so it
runs anywhere the planner does (``daskie plan E1 --workers 64 --gpus 8 --predict``).

**Compute.** One step of the joint CEPTF objective (balanced placement) on ``R`` ranks is
``replicated + split / share``: every rank evaluates its own rows of the sub-models (the
``split`` part, dealt by the Plan's cost model) and then the whole residual map, loss and
optimizer update (the ``replicated`` part). :class:`StepCosts` holds both in seconds per step
on one CPU core: from run histories (the profiler's ``window_s`` - ``sync_s`` per rank, with a
one-thread step of the whole problem), from a one-thread step and a replicated fraction, or
from the Plan's ``flops_per_step`` at a measured rate. A GPU rank runs ``gpu_speed`` times
faster than one CPU core; that factor is an **assumption** (a parameter), not a measurement
(no GPU was available where the model was validated).

**Communication.** Per step a CEPTF rank all-gathers the sub-models' values at the
evaluation points (``8 x rows`` bytes) and all-reduces the gradient (``8 x parameters``
bytes). An all-reduce of ``S`` bytes among ``n`` ranks by

* ring (and gloo, whose CPU all-reduce is ring-based): ``2(n-1)`` rounds, each rank sends
  and receives ``2(n-1)/n S`` over its link (full duplex);
* parameter server: 2 rounds, the server receives ``(n-1) S`` and then sends ``(n-1) S``;
* binomial tree: ``2 ceil(log2 n)`` rounds of ``S`` each, up then down;

takes ``max(rounds x latency + link bytes / bandwidth, rounds x round_s + handled bytes /
copy rate)``: the wire and the CPU work (pack, send, receive, reduce at each rank's
:class:`Algorithm` rate) overlap, and whichever is slower sets the time. Ranks that share a
host with fewer cores than ranks share those cores (the busiest rank's bytes, or all ranks'
bytes over the cores, whichever is more).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

__all__ = ["ALGORITHMS", "Algorithm", "Network", "Prediction", "StepCosts", "allgather_time",
           "allreduce_time", "collective_bytes", "predict", "predict_data_parallel", "LOOPBACK",
           "GIGABIT", "EMULATED_GIGABIT", "CPU_S_PER_FLOP", "REPLICATED_FRACTION"]

MB = 2**20


@dataclass(frozen=True)
class Network:
    """The links between hosts.

    Parameters
    ----------
    name : str
    latency_s : float
        One-way latency of one message round, seconds.
    bandwidth_Bps : float
        Bytes per second each way on each host's link (``math.inf``: no wire limit, as on
        loopback, where the CPU work bounds a collective).
    """

    name: str
    latency_s: float
    bandwidth_Bps: float


@dataclass(frozen=True)
class Algorithm:
    """A collective implementation's CPU costs.

    Parameters
    ----------
    name : {"ring", "ps", "tree", "gloo"}
    round_s : float
        Software time of one round (a send/receive pair, its bookkeeping and waits).
    copy_Bps : float
        Bytes per second one core handles (sent plus received, reduced on the way).
    """

    name: str
    round_s: float
    copy_Bps: float


#: Measured on this repository's 2-vCPU host (benchmarks/results/collectives.json, loopback,
#: 2 ranks): round_s from the 1 MB all-reduce, copy_Bps from the 1 MB -> 100 MB slope
#: (``benchmarks/scaling_model.py`` refits them and reports the error everywhere else).
ALGORITHMS = {
    "ring": Algorithm("ring", 2.044e-3, 1.509e9),
    "ps": Algorithm("ps", 1.231e-3, 1.408e9),
    "tree": Algorithm("tree", 0.930e-3, 1.346e9),
    "gloo": Algorithm("gloo", 0.479e-3, 2.656e9),
}

#: Loopback: no wire limit; latency of a local TCP round trip's one way (assumed 20 us).
LOOPBACK = Network("loopback", 20e-6, math.inf)
#: benchmarks/netns.py's 1 Gbit/s links: 114.3 MB/s of TCP payload each way (measured,
#: ``netns.py --check``); no netem delay (the kernel lacks sch_netem), so veth latency only.
EMULATED_GIGABIT = Network("emulated-1gbit", 50e-6, 114.3 * MB)
#: Gigabit Ethernet as in seed 000 Sec. 5.2 (1 Gbps, measured latency 0.3 ms), at the same
#: TCP payload rate as the emulated links.
GIGABIT = Network("gigabit-0.3ms", 0.3e-3, 114.3 * MB)

#: Share of a CEPTF step every rank does whole, fitted to E1 on 2 loopback workers (stored
#: 19.55 ms/step against 26.51 ms on one thread; benchmarks/scaling_model.py).
REPLICATED_FRACTION = 0.36

#: Seconds per planner flop (``Plan.flops_per_step`` unit) of one CPU core of this host:
#: E1, order reduction, nets 40x40x40, 1024 + 1024 points, Adam, one thread, measured
#: 26.5 ms/step (benchmarks/results/speedup_adam.json, mono-1t) over that plan's flops.
CPU_S_PER_FLOP = 2.0e-10


def collective_bytes(method: str, n: int, nbytes: float):
    """Rounds and bytes of an all-reduce of ``nbytes`` among ``n`` ranks.

    Returns
    -------
    rounds : int
        Sequential message rounds.
    link : float
        Bytes the busiest link carries in one direction, summed over sequential phases.
    busiest : float
        Bytes the busiest rank handles (sent plus received).
    total : float
        Bytes all ranks handle together.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n == 1:
        return 0, 0.0, 0.0, 0.0
    s = float(nbytes)
    if method in ("ring", "gloo"):
        per = 2 * (n - 1) / n * s
        return 2 * (n - 1), per, 2 * per, n * 2 * per
    if method == "ps":
        return 2, 2 * (n - 1) * s, 2 * (n - 1) * s, 4 * (n - 1) * s
    if method == "tree":
        depth = math.ceil(math.log2(n))
        return 2 * depth, 2 * depth * s, 2 * depth * s, 4 * (n - 1) * s
    raise ValueError(f"unknown all-reduce method {method!r}; use one of ring, ps, tree, gloo")


def _time(rounds, link, busiest, total, n, network, algo, ranks_per_host, cores_per_host):
    wire = rounds * network.latency_s + (link / network.bandwidth_Bps
                                         if math.isfinite(network.bandwidth_Bps) else 0.0)
    handled = busiest
    if cores_per_host is not None:
        on_host = min(n, ranks_per_host)
        if on_host > cores_per_host:  # ranks share cores: the host's bytes over its cores
            handled = max(busiest, total * on_host / n / cores_per_host)
    cpu = rounds * algo.round_s + handled / algo.copy_Bps
    return max(wire, cpu)


def allreduce_time(method: str, n: int, nbytes: float, network: Network, *,
                   algorithm: Algorithm | None = None, ranks_per_host: int = 1,
                   cores_per_host: int | None = None) -> float:
    """Predicted seconds of one all-reduce of ``nbytes`` among ``n`` ranks.

    Parameters
    ----------
    method : {"ring", "ps", "tree", "gloo"}
    n : int
    nbytes : float
    network : Network
    algorithm : Algorithm, optional
        CPU costs (default: :data:`ALGORITHMS` ``[method]``).
    ranks_per_host, cores_per_host : int, optional
        Ranks placed on one host and its cores (``None``: one rank per host, a core each).
    """
    algo = algorithm or ALGORITHMS[method]
    return _time(*collective_bytes(method, n, nbytes), n, network, algo, ranks_per_host,
                 cores_per_host)


def allgather_time(n: int, nbytes: float, network: Network, *, method: str = "gloo",
                   algorithm: Algorithm | None = None, ranks_per_host: int = 1,
                   cores_per_host: int | None = None) -> float:
    """Predicted seconds of a ring all-gather that leaves ``nbytes`` (all ranks' parts
    together) on every rank: ``n - 1`` rounds, ``(n-1)/n nbytes`` over each link."""
    if n == 1:
        return 0.0
    algo = algorithm or ALGORITHMS[method]
    per = (n - 1) / n * float(nbytes)
    return _time(n - 1, per, 2 * per, n * 2 * per, n, network, algo, ranks_per_host,
                 cores_per_host)


@dataclass(frozen=True)
class StepCosts:
    """Seconds of one training step on one CPU core, split by how ranks share it.

    Parameters
    ----------
    replicated_s : float
        Work every rank does whole (residual map, loss, optimizer update, per-step overhead).
    split_s : float
        Work dealt over the ranks (the sub-models' evaluations and their backward pass).
    """

    replicated_s: float
    split_s: float

    @property
    def total_s(self) -> float:
        """One process, one core: ``replicated_s + split_s``."""
        return self.replicated_s + self.split_s

    @property
    def replicated_fraction(self) -> float:
        """``replicated_s / total_s`` (0 for a step of no time)."""
        return self.replicated_s / self.total_s if self.total_s else 0.0

    @classmethod
    def from_fraction(cls, one_thread_s: float, replicated_fraction: float) -> "StepCosts":
        """From a measured one-thread step of the whole problem and the replicated fraction."""
        if not 0.0 <= replicated_fraction <= 1.0:
            raise ValueError(f"replicated_fraction must be in [0, 1], got {replicated_fraction}")
        return cls(one_thread_s * replicated_fraction, one_thread_s * (1 - replicated_fraction))

    @classmethod
    def from_history(cls, records, one_thread_s: float, steps: int | None = None) -> "StepCosts":
        """From a CEPTF run's per-rank profiler records and a one-thread step.

        Each rank's compute per step is ``(window_s - sync_s) / steps`` (median over its
        windows after the first); with ``R`` ranks of mean compute ``c``,
        ``c = replicated + split / R`` and ``one_thread_s = replicated + split``.

        Parameters
        ----------
        records : iterable of dict
            The last record of each window and rank (``rank``, ``window_s``, ``sync_s``,
            ``steps``), e.g. from a run store's ``history_*``.
        one_thread_s : float
            Measured seconds of one step of the whole problem in one process, one thread.
        steps : int, optional
            Steps per window, for records without ``steps``.
        """
        per_rank = rank_compute_s(records, steps)
        r = len(per_rank)
        if r < 2:
            raise ValueError("from_history needs the records of at least 2 ranks")
        c = sum(per_rank.values()) / r
        split = max(0.0, (one_thread_s - c) * r / (r - 1))
        return cls(max(0.0, one_thread_s - split), split)

    @classmethod
    def from_plan(cls, plan, replicated_fraction: float,
                  s_per_flop: float = None) -> "StepCosts":
        """From the Plan's ``flops_per_step`` at ``s_per_flop`` (default
        :data:`CPU_S_PER_FLOP`, measured here) and a replicated fraction."""
        rate = CPU_S_PER_FLOP if s_per_flop is None else s_per_flop
        flops = sum(g.flops_per_step for g in plan.groups)
        return cls.from_fraction(flops * rate, replicated_fraction)


def rank_compute_s(records, steps: int | None = None) -> dict:
    """Median compute seconds per step of each rank, ``(window_s - sync_s) / steps``, over
    its windows after the first (the first pays start-up); ``steps`` for records without."""
    per: dict = {}
    for rec in records:
        n = rec.get("steps") or steps
        ws, rank = rec.get("window_s"), rec.get("rank")
        if ws is None or rank is None or not n or math.isnan(float(ws)) \
                or math.isnan(float(rank)):
            continue
        ss = float(rec.get("sync_s") or 0.0)
        per.setdefault(int(rank), []).append((int(rec.get("window", 0)),
                                              (float(ws) - ss) / float(n)))
    out = {}
    for rank, items in per.items():
        items.sort()
        vals = sorted(v for _, v in (items[1:] or items))
        out[rank] = vals[len(vals) // 2]
    return out


@dataclass(frozen=True)
class Prediction:
    """A predicted CEPTF step.

    Attributes
    ----------
    ranks, gpus : int
        Ranks of the joint group, and how many of them run on a GPU.
    compute_s, gather_s, reduce_s : float
        The slowest rank's compute, the all-gather and the gradient all-reduce, per step.
    step_s : float
        ``compute_s + gather_s + reduce_s``.
    seq_step_s : float
        One process on one CPU core (the SR baseline).
    sr : float
        ``seq_step_s / step_s`` (seed 000 Eq 4.1 at equal steps).
    assumptions : dict
        The model's inputs that were not measured (``gpu_speed``, ``balance``, network, ...).
    """

    ranks: int
    gpus: int
    compute_s: float
    gather_s: float
    reduce_s: float
    step_s: float
    seq_step_s: float
    sr: float
    assumptions: dict = field(default_factory=dict)

    def describe(self) -> str:
        """One printable paragraph."""
        a = self.assumptions
        return (f"predicted CEPTF step on {self.ranks} ranks ({self.gpus} on GPU): "
                f"{self.step_s * 1e3:.3g} ms = compute {self.compute_s * 1e3:.3g} ms + "
                f"all-gather {self.gather_s * 1e3:.3g} ms + all-reduce "
                f"{self.reduce_s * 1e3:.3g} ms; one CPU core {self.seq_step_s * 1e3:.3g} ms; "
                f"SR {self.sr:.2f}\n  assumptions: " + ", ".join(f"{k}={v}" for k, v in a.items()))


def _algorithm(method: str, algorithms: dict | None) -> Algorithm:
    """The CPU costs of all-reduce ``method``, from ``algorithms`` or :data:`ALGORITHMS`."""
    algos = algorithms or ALGORITHMS
    if method not in algos:
        raise ValueError(f"unknown all-reduce method {method!r}; use one of "
                         f"{', '.join(sorted(algos))}")
    return algos[method]


def predict(plan, costs: StepCosts, network: Network, *, ranks: int | None = None,
            gpus: int | None = None, gpu_speed: float = 5.0, method: str = "gloo",
            balance: str = "equal", ranks_per_host: int = 1, cores_per_host: int | None = None,
            algorithms: dict | None = None) -> Prediction:
    """Predict one CEPTF (joint, balanced) step of ``plan``.

    Parameters
    ----------
    plan : daskie.plan.Plan
        Gives the bytes exchanged (its ``costs``: parameters and evaluation points).
    costs : StepCosts
        Seconds per step on one CPU core.
    network : Network
    ranks : int, optional
        Ranks of the joint group (default: ``plan.n_sub``, one per group).
    gpus : int, optional
        Ranks on a GPU (default: the plan's GPU-tagged groups, at most ``ranks``).
    gpu_speed : float
        **Assumed** speed of a GPU rank relative to one CPU core, for all of its work.
    method : str
        The gradient all-reduce (``ring``, ``ps``, ``tree``, ``gloo``); the all-gather is
        ring-shaped and uses the same algorithm's CPU costs.
    balance : {"equal", "speed"}
        ``"equal"``: rows dealt by estimated work regardless of device (what the balanced
        placement does today); ``"speed"``: in proportion to each rank's speed.
    ranks_per_host, cores_per_host : int, optional
        Placement of ranks on hosts, for collectives of ranks sharing cores.
    algorithms : dict, optional
        ``{method: Algorithm}`` overriding :data:`ALGORITHMS` (e.g. freshly fitted).

    Returns
    -------
    Prediction
    """
    if balance not in ("equal", "speed"):
        raise ValueError(f"balance must be 'equal' or 'speed', got {balance!r}")
    if not gpu_speed > 0:
        raise ValueError(f"gpu_speed must be > 0, got {gpu_speed}")
    r = plan.n_sub if ranks is None else int(ranks)
    g = sum(p.resource == "GPU" for p in plan.groups) if gpus is None else int(gpus)
    g = min(g, r)
    if r < 1:
        raise ValueError(f"ranks must be >= 1, got {r}")
    speeds = [gpu_speed] * g + [1.0] * (r - g)
    if balance == "equal":
        times = [(costs.replicated_s + costs.split_s / r) / s for s in speeds]
    else:
        times = [costs.replicated_s / s + costs.split_s / sum(speeds) for s in speeds]
    compute = max(times)
    algo = _algorithm(method, algorithms)
    rows = sum(c.points for c in plan.costs)
    params = sum(c.n_params for c in plan.costs)
    kw = dict(algorithm=algo, ranks_per_host=ranks_per_host, cores_per_host=cores_per_host)
    gather = allgather_time(r, 8.0 * rows, network, method=method, **kw)
    reduce = allreduce_time(method, r, 8.0 * params, network, **kw)
    step = compute + gather + reduce
    return Prediction(ranks=r, gpus=g, compute_s=compute, gather_s=gather, reduce_s=reduce,
                      step_s=step, seq_step_s=costs.total_s, sr=costs.total_s / step,
                      assumptions={"gpu_speed": gpu_speed, "balance": balance,
                                   "method": method, "network": network.name,
                                   "replicated_fraction": round(costs.replicated_fraction, 3)})


def predict_data_parallel(costs: StepCosts, n_params: int, network: Network, *, ranks: int,
                          optimizer: str = "adam", method: str = "gloo",
                          ranks_per_host: int = 1, cores_per_host: int | None = None,
                          algorithms: dict | None = None) -> Prediction:
    """Predict one data-parallel step (operator learning, :class:`~daskie.strategies.DataParallel`).

    Every rank computes its shard's loss and gradient (``costs.split_s`` is dealt over the
    ranks) and the optimizer update (``costs.replicated_s``, done whole by every rank); the
    ranks then all-reduce what the optimizer needs, as
    :class:`~daskie.train.collective.ShardedObjective` does: for ``"adam"`` the loss and the
    gradient in one buffer (``P + 1`` float64); for ``"lm"`` the loss and ``J^T r``
    (``P + 1``) and then ``J^T J`` (``P^2``).

    Parameters
    ----------
    costs : StepCosts
        Seconds per step on one CPU core.
    n_params : int
        Parameters ``P`` of the network.
    network : Network
    ranks : int
    optimizer : {"adam", "lm"}
    method, ranks_per_host, cores_per_host, algorithms
        As for :func:`predict`.

    Returns
    -------
    Prediction
        ``gather_s`` is 0 (data parallelism gathers nothing); ``sr`` is the speed-up over one
        CPU core at equal steps.
    """
    if optimizer not in ("adam", "lm"):
        raise ValueError(f"optimizer must be 'adam' or 'lm', got {optimizer!r}")
    r = int(ranks)
    if r < 1:
        raise ValueError(f"ranks must be >= 1, got {r}")
    kw = dict(algorithm=_algorithm(method, algorithms), ranks_per_host=ranks_per_host,
              cores_per_host=cores_per_host)
    p = int(n_params)
    reduce = allreduce_time(method, r, 8.0 * (p + 1), network, **kw)
    if optimizer == "lm":
        reduce += allreduce_time(method, r, 8.0 * p * p, network, **kw)
    compute = costs.replicated_s + costs.split_s / r
    step = compute + reduce
    return Prediction(ranks=r, gpus=0, compute_s=compute, gather_s=0.0, reduce_s=reduce,
                      step_s=step, seq_step_s=costs.total_s, sr=costs.total_s / step,
                      assumptions={"optimizer": optimizer, "method": method,
                                   "network": network.name, "n_params": p,
                                   "replicated_fraction": round(costs.replicated_fraction, 3)})


def with_algorithms(fitted: dict) -> dict:
    """:data:`ALGORITHMS` with the entries of ``fitted`` (``{name: (round_s, copy_Bps)}``)."""
    out = dict(ALGORITHMS)
    for name, (round_s, copy) in fitted.items():
        out[name] = replace(out.get(name, Algorithm(name, 0.0, 1.0)), round_s=round_s,
                            copy_Bps=copy)
    return out
