"""The CEPTF paper's efficiency metrics (seed 000, section 4.1 and Eq 4.3), as pure functions.

All times are wall seconds to the *same target accuracy* on the same machine:

* speed-up ratio ``SR = T_seq / T_par`` (the paper prints it times 100 %);
* speed-up efficiency ``SE = T_seq / (N_sub T_par) = SR / N_sub``;
* computational efficiency ``CE = SR * exp(-log(N_sub) / C(IE)) = SR * N_sub**(-1 / C(IE))``
  (Eq 4.1), with ``C(IE)`` the equation's complexity, which daskie's planner computes as
  ``C_eff = sum_i omega_i n_i`` (:attr:`daskie.plan.Plan.complexity`);
* adaptive resource-time product ``ARTP = (sum_k w_k T_k) * exp(log(N_sub) / C_eff)`` (Eq 4.3),
  with ``T_k`` the execution time of sub-model (group) ``k`` and ``w_k`` its computational
  weight. With weights that sum to 1 and every ``T_k = T_par`` it is the resource-time product
  ``RTP = N_sub**(1 / C(IE)) * T_par`` of Eq 4.2.

The paper prints SR, SE and CE as percentages; here they are plain ratios (``SR = 3.18`` is the
paper's 318 %). :func:`time_to_target` reads ``T_seq`` and ``T_par`` from the training records
that :func:`daskie.solve` returns (``history_*``) or stores, and :func:`run_metrics` computes
everything from two such histories. The module imports numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real

import numpy as np

from daskie import records as kinds
from daskie.errors import SpecError, check_int

__all__ = ["speedup_ratio", "speedup_efficiency", "computational_efficiency", "artp",
           "time_to_target", "group_times", "run_metrics", "plan_metrics", "compare",
           "metric_attrs"]



def _time(name: str, value) -> float:
    """A duration in seconds: finite and > 0, or NaN (the target was never reached)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise SpecError(f"{name} must be a number of seconds, got {value!r}")
    value = float(value)
    if math.isnan(value):
        return value
    if not math.isfinite(value) or value <= 0:
        raise SpecError(f"{name} must be a finite number of seconds > 0 (or NaN: target not "
                        f"reached), got {value!r}")
    return value


def _complexity(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value <= 0:
        raise SpecError(f"{name} must be a finite number > 0 (the plan's C_eff), got {value!r}")
    return float(value)


def speedup_ratio(t_seq: float, t_par: float) -> float:
    """Speed-up ratio ``SR = T_seq / T_par`` (seed 000, section 4.1).

    Parameters
    ----------
    t_seq : float
        Seconds the monolithic (sequential) solver takes to the target accuracy.
    t_par : float
        Seconds the parallel (CEPTF) solver takes to the same target.

    Returns
    -------
    float
        ``T_seq / T_par`` as a ratio (the paper's percentage divided by 100); NaN when either
        time is NaN (a run that never reached the target).

    Raises
    ------
    SpecError
        When a time is not a number, not finite (other than NaN) or not positive.
    """
    return _time("t_seq", t_seq) / _time("t_par", t_par)


def speedup_efficiency(t_seq: float, t_par: float, n_sub: int) -> float:
    """Speed-up efficiency ``SE = T_seq / (N_sub T_par) = SR / N_sub`` (seed 000, section 4.1).

    Parameters
    ----------
    t_seq, t_par : float
        See :func:`speedup_ratio`.
    n_sub : int
        Number of sub-models (groups, one compute unit each) of the parallel run, >= 1.

    Returns
    -------
    float
        A ratio (1 is perfect strong scaling); NaN when a time is NaN.

    Raises
    ------
    SpecError
        For an invalid time or ``n_sub``; the message names the argument.
    """
    check_int("n_sub", n_sub)
    return speedup_ratio(t_seq, t_par) / n_sub


def computational_efficiency(t_seq: float, t_par: float, n_sub: int, c_ie: float) -> float:
    """Computational efficiency, seed 000 Eq 4.1.

    ``CE = (T_seq / T_par) * exp(-log(N_sub) / C(IE)) = SR * N_sub**(-1 / C(IE))``.

    Parameters
    ----------
    t_seq, t_par : float
        See :func:`speedup_ratio`.
    n_sub : int
        Number of sub-models of the parallel run, >= 1.
    c_ie : float
        The equation's complexity ``C(IE)`` (> 0): the planner's ``C_eff``
        (:attr:`daskie.plan.Plan.complexity`).

    Returns
    -------
    float
        A ratio; above 1 the acceleration outweighs the partitioning cost. NaN when a time
        is NaN.

    Raises
    ------
    SpecError
        For an invalid argument; the message names it.
    """
    check_int("n_sub", n_sub)
    c_ie = _complexity("c_ie", c_ie)
    return speedup_ratio(t_seq, t_par) * math.exp(-math.log(n_sub) / c_ie)


def artp(times, weights, c_eff: float) -> float:
    """Adaptive resource-time product, seed 000 Eq 4.3.

    ``ARTP = (sum_{k=1}^{N_sub} w_k T_k) * exp(log(N_sub) / C_eff(IE))`` with ``N_sub`` the
    number of sub-models, ``len(times)``.

    Parameters
    ----------
    times : sequence of float
        ``T_k``: execution time in seconds of each sub-model (each group of the plan), >= 0.
    weights : sequence of float
        ``w_k``: computational weight of each sub-model, >= 0, as many as ``times`` (for
        example each group's share of the plan's ``flops_per_step``). With weights summing
        to 1 and every ``T_k = T_par``, ARTP equals Eq 4.2's ``RTP = N_sub**(1/C) T_par``.
    c_eff : float
        The effective complexity ``C_eff(IE)`` (> 0), :attr:`daskie.plan.Plan.c_eff`.

    Returns
    -------
    float
        Seconds times the complexity-scaled resource count; smaller is better.

    Raises
    ------
    SpecError
        When ``times`` and ``weights`` are empty, differ in length, or hold negative or
        non-finite values, or ``c_eff`` is not a finite number > 0.
    """
    t = _vector("times", times)
    w = _vector("weights", weights)
    if len(t) != len(w):
        raise SpecError(f"times and weights must have one entry per sub-model; got {len(t)} "
                        f"times and {len(w)} weights")
    c_eff = _complexity("c_eff", c_eff)
    return float(np.dot(w, t) * math.exp(math.log(len(t)) / c_eff))


def _vector(name, values) -> np.ndarray:
    if isinstance(values, (str, bytes, Mapping)):
        raise SpecError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise SpecError(f"{name} must be a non-empty 1-D sequence of numbers, "
                        f"got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        raise SpecError(f"{name}[{bad[0]}] = {arr[bad[0]]!r}: every entry must be finite and >= 0")
    return arr


def _records(name, records) -> list:
    if isinstance(records, (str, bytes, Mapping)) or not hasattr(records, "__iter__"):
        raise SpecError(f"{name} must be a list of record dicts (daskie.solve's history, e.g. "
                        f"daskie.store.records_from_dataset(ds)), got {type(records).__name__}")
    records = list(records)
    for i, r in enumerate(records):
        if not isinstance(r, Mapping):
            raise SpecError(f"{name}[{i}] must be a dict, got {type(r).__name__}")
    return records


def _group(record):
    g = record.get("group")
    return None if g is None else int(g)


def _reached(record, key, target) -> bool:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    return math.isfinite(value) and value <= target


def _clock(name, i, record, field) -> float:
    value = record.get(field)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise SpecError(f"{name}[{i}] has no finite {field!r}, which time_to_target reads as "
                        f"its clock")
    return float(value)


def time_to_target(history_records, target_mse: float, key: str = "mse") -> float:
    """Wall seconds until a run first reaches ``target_mse``; NaN when it never does.

    Parameters
    ----------
    history_records : list of dict
        Training records: the history of :func:`daskie.solve` (``records_from_dataset(ds)``
        or ``RunStore.history()``), or the records of one :func:`daskie.train.train` call.
    target_mse : float
        The target, > 0; a record reaches it when ``record[key] <= target_mse``.
    key : str
        The record field compared with the target (``"mse"``, or ``"loss"``).

    Returns
    -------
    float
        Seconds, or NaN when no record reaches the target.

    Raises
    ------
    SpecError
        For records that are not a list of dicts, a bad target or key, or a record that
        reaches the target without a clock.

    Notes
    -----
    Which records count, and which clock they carry:

    * When the history holds the joint records that ``solve`` adds after every window
      (``kind == "window"``), only those count, with their ``elapsed_s`` (wall time since the run
      started, as the client saw it, across resumes). Per-step records of a window task are
      not used: their ``wall_s`` is that group's own training time, not the run's. Records of
      a joint polish (``kind == "polish"``) continue the clock from the last window:
      ``elapsed_s`` of the last joint record plus the polish's own ``wall_s`` since it began.
      The resolution is one window.
    * Otherwise (the records of a single training loop), the first record in list order that
      reaches the target gives its ``elapsed_s``, or its ``wall_s`` when it has none.
    """
    records = _records("history_records", history_records)
    if isinstance(target_mse, bool) or not isinstance(target_mse, Real) \
            or not math.isfinite(target_mse) or target_mse <= 0:
        raise SpecError(f"target_mse must be a finite number > 0, got {target_mse!r}")
    if not isinstance(key, str) or not key:
        raise SpecError(f"key must be the name of a record field such as 'mse', got {key!r}")
    target = float(target_mse)
    joint = [(i, r) for i, r in enumerate(records) if kinds.kind_of(r) == kinds.WINDOW]
    if not joint:
        for i, r in enumerate(records):
            if _reached(r, key, target):
                clock = "elapsed_s" if "elapsed_s" in r else "wall_s"
                return _clock("history_records", i, r, clock)
        return math.nan
    for i, r in joint:
        if _reached(r, key, target):
            return _clock("history_records", i, r, "elapsed_s")
    polish = [(i, r) for i, r in enumerate(records) if kinds.kind_of(r) == kinds.POLISH]
    if polish:
        i0, first = polish[0]
        start = _clock("history_records", i0, first, "wall_s") - float(first.get("step_s", 0.0))
        base = max(_clock("history_records", i, r, "elapsed_s") for i, r in joint)
        for i, r in polish:
            if _reached(r, key, target):
                return base + _clock("history_records", i, r, "wall_s") - start
    return math.nan


def group_times(records, n_sub: int) -> np.ndarray:
    """``T_k`` of each group ``k`` (0 to ``n_sub - 1``): the summed ``window_s`` of its windows.

    Parameters
    ----------
    records : list of dict
        A run's history. The profiler (:mod:`daskie.runtime.profiler`) writes ``window_s`` into the
        last record of every window task. Block-coordinate windows (``BlockCoordinate``)
        have one task per group: the record's ``group`` names it, and its ``window_s``
        counts. A joint window (``CEPTF``, step records with a ``rank``) runs every group at
        once, in lock-step, so what tells the groups apart is their compute: ``window_s -
        sync_s`` of the group's slowest rank (shard) is charged to the group. Records of
        other kinds (window summaries, polish) do not count (:mod:`daskie.records`).
    n_sub : int
        Number of groups of the run's plan.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_sub,)``; 0 for a group with no profiled window.

    Raises
    ------
    SpecError
        For invalid records or ``n_sub``, or a profiled group index ``>= n_sub``.
    """
    records = _records("records", records)
    check_int("n_sub", n_sub)
    out = np.zeros(n_sub)
    joint: dict = {}  # (window, group) -> compute seconds of the group's slowest rank
    for i, r in enumerate(records):
        g = _group(r)
        if kinds.kind_of(r) != kinds.STEP or g is None or "window_s" not in r:
            continue
        if g < 0 or g >= n_sub:
            raise SpecError(f"records[{i}] belongs to group {g}, but n_sub = {n_sub}: pass the "
                            f"number of groups of the run's plan")
        if "rank" in r:
            key = (r.get("window"), g)
            compute = float(r["window_s"]) - float(r.get("sync_s", 0.0))
            joint[key] = max(joint.get(key, 0.0), compute)
            continue
        out[g] += float(r["window_s"])
    for (_, g), seconds in joint.items():
        out[g] += seconds
    return out


def run_metrics(seq_records, par_records, n_sub: int, c_ie: float, target: float, *,
                weights=None, key: str = "mse") -> dict:
    """Every CEPTF metric of a parallel run against a sequential one, at one target accuracy.

    Parameters
    ----------
    seq_records : list of dict
        History of the monolithic (sequential) run, as :func:`daskie.solve` returns it.
    par_records : list of dict
        History of the parallel (CEPTF) run.
    n_sub : int
        Number of sub-models (groups) of the parallel run's plan
        (:attr:`~daskie.plan.Plan.n_sub`).
    c_ie : float
        The equation's complexity, the plan's ``C_eff`` (:attr:`~daskie.plan.Plan.complexity`).
    target : float
        Target accuracy: both times are measured to the first record with ``key <= target``.
    weights : sequence of float, optional
        ``w_k`` of ARTP, one per group; default ``1 / n_sub`` each (so that equal group times
        give Eq 4.2's RTP). The plan's shares
        ``[g.flops_per_step / total for g in plan.groups]`` are the paper's computational
        weights.
    key : str
        Record field compared with ``target``.

    Returns
    -------
    dict
        ``target``, ``t_seq``, ``t_par`` (seconds, NaN when never reached), ``n_sub``, ``c_ie``,
        ``sr``, ``se``, ``ce`` (ratios, NaN when a time is NaN), ``t_k`` (list of each group's
        summed window time, see :func:`group_times`) and ``artp`` (NaN when no window was
        profiled).

    Raises
    ------
    SpecError
        For any invalid argument; the message names it.
    """
    check_int("n_sub", n_sub)
    c_ie = _complexity("c_ie", c_ie)
    t_seq = time_to_target(seq_records, target, key)
    t_par = time_to_target(par_records, target, key)
    t_k = group_times(par_records, n_sub)
    if weights is None:
        w = np.full(n_sub, 1.0 / n_sub)
    else:
        w = _vector("weights", weights)
        if len(w) != n_sub:
            raise SpecError(f"weights must have n_sub = {n_sub} entries, got {len(w)}")
    return {
        "target": float(target), "t_seq": t_seq, "t_par": t_par, "n_sub": int(n_sub), "c_ie": c_ie,
        "sr": speedup_ratio(t_seq, t_par), "se": speedup_efficiency(t_seq, t_par, n_sub),
        "ce": computational_efficiency(t_seq, t_par, n_sub, c_ie),
        "t_k": t_k.tolist(),
        "artp": artp(t_k, w, c_ie) if t_k.any() else math.nan,
    }


def metric_attrs(metrics: Mapping) -> dict:
    """``metrics`` as run attributes: keys prefixed ``metrics_``, NaN stored as None."""
    return {f"metrics_{k}": (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in metrics.items()}


def plan_metrics(records, plan) -> dict:
    """What one parallel run's history says on its own: ``n_sub``, ``c_eff``, each group's
    time ``t_k`` (:func:`group_times`), the weights ``w_k`` (each group's share of the
    plan's ``flops_per_step``) and ``artp`` (Eq 4.3; NaN when no window was profiled).

    :func:`daskie.solve` stores these with every run that has a Plan (``CEPTF``), as the
    attributes ``metrics_*`` of the returned dataset and of the run's store.
    """
    n_sub = len(plan.groups)
    t_k = group_times(records, n_sub)
    flops = np.array([max(float(g.flops_per_step), 0.0) for g in plan.groups])
    w = flops / flops.sum() if flops.sum() > 0 else np.full(n_sub, 1.0 / n_sub)
    c_eff = float(plan.c_eff)
    return {"n_sub": n_sub, "c_eff": c_eff, "t_k": t_k.tolist(), "w_k": w.tolist(),
            "artp": artp(t_k, w, c_eff) if t_k.any() else math.nan}


def _history(run):
    """Records and attributes of a run: a dataset returned by ``solve`` or a store path."""
    import xarray as xr

    from daskie.store import RunStore
    from daskie.store.run_store import records_from_dataset

    if isinstance(run, xr.Dataset):
        return records_from_dataset(run), dict(run.attrs)
    store = RunStore(run, mode="a")
    return store.history(), store.read_meta()


def compare(baseline, run, target: float | None = None, *, key: str = "mse",
            write: bool = False) -> dict:
    """SR, SE, CE and ARTP of ``run`` against ``baseline`` (seed 000 Eq 4.1 and 4.3).

    Parameters
    ----------
    baseline, run : xarray.Dataset or path
        What :func:`daskie.solve` returned, or the paths of their stores. ``baseline`` is
        the sequential run (``Monolithic``); ``run`` the parallel one, whose stored
        ``metrics_n_sub`` and ``metrics_c_eff`` (written by ``solve`` for a Plan) are used.
    target : float, optional
        The accuracy both times are measured to (``key <= target``). Default: the loosest
        value both runs reached (the larger of their best ``key``), so the ratio compares
        the same accuracy.
    key : str
        Record field compared with ``target``.
    write : bool
        Also store the result as ``metrics_*`` attributes in ``run``'s store (``run`` must
        be a path, or a dataset whose ``store`` attribute names one).

    Returns
    -------
    dict
        :func:`run_metrics`' fields (``target``, ``t_seq``, ``t_par``, ``sr``, ``se``, ``ce``,
        ``t_k``, ``artp``, ...).

    Raises
    ------
    SpecError
        When ``run`` carries no plan metrics (not a Plan-based strategy), or a record lacks
        ``key``, or ``write`` has no store to write to.
    """
    seq_records, _ = _history(baseline)
    par_records, attrs = _history(run)
    if "metrics_n_sub" not in attrs:
        raise SpecError("run has no metrics_n_sub: compare needs a run of a strategy with a "
                        "Plan (CEPTF), as solve returns or stores it")
    n_sub, c_eff = int(attrs["metrics_n_sub"]), float(attrs["metrics_c_eff"])
    if target is None:
        best = [min((float(r[key]) for r in recs if key in r and r[key] == r[key]),
                    default=math.inf) for recs in (seq_records, par_records)]
        if not all(math.isfinite(b) for b in best):
            raise SpecError(f"no record of one of the runs holds {key!r}")
        target = max(best)
    weights = attrs.get("metrics_w_k")
    out = run_metrics(seq_records, par_records, n_sub, c_eff, target,
                      weights=list(weights) if weights is not None else None, key=key)
    if write:
        from daskie.store import RunStore

        path = run if not hasattr(run, "attrs") else (run.attrs.get("store") or None)
        if not path:
            raise SpecError("write=True needs the run's store: pass its path, or a dataset "
                            "solved with store=")
        RunStore(path, mode="a").write_meta(metric_attrs(out))
    return out
