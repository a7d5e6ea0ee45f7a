"""CEPTF metrics (seed 000 Eq 4.1, Eq 4.3) and time to a target, against hand-computed values."""

import math
import subprocess
import sys

import numpy as np
import pytest

import daskie
from daskie import CEPTF, BlockCoordinate, MLP, LevenbergMarquardt, Monolithic, OrderReduction
from daskie.errors import SpecError
from daskie.metrics import (artp, computational_efficiency, group_times, run_metrics,
                            speedup_efficiency, speedup_ratio, time_to_target)
from daskie.store import history_to_dataset, records_from_dataset

# the runtime's numbers on short trainings (tests/conftest.py: runtime_numbers)
pytestmark = pytest.mark.usefixtures("runtime_numbers")


# --- Eq 4.1: SR, SE, CE -------------------------------------------------------------------
def test_speedup_ratio_and_efficiency():
    assert speedup_ratio(10.0, 4.0) == 2.5
    assert speedup_efficiency(10.0, 4.0, 2) == 1.25
    assert speedup_efficiency(10.0, 4.0, 5) == 0.5
    assert speedup_ratio(3, 6) == 0.5  # ints are seconds too; a slow-down is < 1


def test_computational_efficiency_eq_4_1():
    # 2.5 * exp(-log 4 / 2) = 2.5 / sqrt(4) = 1.25
    assert computational_efficiency(10.0, 4.0, 4, 2.0) == pytest.approx(1.25, rel=1e-15)
    # one sub-model: no complexity penalty, CE = SR
    assert computational_efficiency(10.0, 4.0, 1, 3.7) == 2.5
    # C(IE) = 1: CE = SR / N_sub = SE
    assert computational_efficiency(9.0, 3.0, 3, 1.0) == pytest.approx(speedup_efficiency(9.0, 3.0, 3))
    # a harder equation (larger C) is penalised less for the same N_sub
    assert computational_efficiency(10.0, 4.0, 4, 4.0) == pytest.approx(2.5 * 4 ** -0.25)


def test_unreached_target_gives_nan():
    assert math.isnan(speedup_ratio(math.nan, 4.0))
    assert math.isnan(speedup_efficiency(10.0, math.nan, 2))
    assert math.isnan(computational_efficiency(math.nan, 4.0, 2, 2.0))


# --- Eq 4.3: ARTP ---------------------------------------------------------------------------
def test_artp_eq_4_3():
    # (0.25 * 2 + 0.75 * 4) * exp(log 2 / 1) = 3.5 * 2
    assert artp([2.0, 4.0], [0.25, 0.75], 1.0) == pytest.approx(7.0, rel=1e-15)
    # (1 * 1 + 1 * 2 + 1 * 3) * 3 ** (1 / 2)
    assert artp((1.0, 2.0, 3.0), np.ones(3), 2.0) == pytest.approx(6.0 * math.sqrt(3.0))
    # a single sub-model: no resource factor
    assert artp([5.0], [0.5], 0.3) == 2.5


def test_artp_reduces_to_rtp_eq_4_2():
    # weights summing to 1, every T_k = T_par: RTP = N_sub ** (1 / C) * T_par
    n, c, t_par = 4, 2.5, 3.0
    assert artp([t_par] * n, [1 / n] * n, c) == pytest.approx(n ** (1 / c) * t_par, rel=1e-14)


# --- time to a target ---------------------------------------------------------------------
def joint(window, elapsed, mse):
    return {"kind": "window", "window": window, "submodels": "joint", "elapsed_s": elapsed,
            "mse": mse}


def step(group, window, wall, mse=None, **extra):
    rec = {"kind": "step", "group": group, "window": window, "epoch": window + 1, "wall_s": wall,
           "step_s": 0.1,
           "loss": 1.0, **extra}
    if mse is not None:
        rec["mse"] = mse
    return rec


SOLVE_HISTORY = [
    step(0, 0, 0.5, mse=1e-9),      # a group's own clock: must not count
    step(1, 0, 0.7, window_s=0.8),
    joint(0, 2.0, 1e-6),
    step(0, 1, 1.0, mse=1e-10, window_s=0.6),
    step(1, 1, 1.4, window_s=0.9),
    joint(1, 4.0, 1e-9),
    joint(2, 6.0, 1e-11),
]


def test_time_to_target_reads_the_joint_records_of_solve():
    assert time_to_target(SOLVE_HISTORY, 1e-8) == 4.0
    assert time_to_target(SOLVE_HISTORY, 1e-9) == 4.0  # reaching means <= target
    assert time_to_target(SOLVE_HISTORY, 1e-10) == 6.0
    assert time_to_target(SOLVE_HISTORY, 1e-5) == 2.0
    assert math.isnan(time_to_target(SOLVE_HISTORY, 1e-12))


def test_time_to_target_of_a_single_training_loop():
    recs = [{"epoch": 1, "wall_s": 0.1, "mse": 1e-3, "loss": 1e-2},
            {"epoch": 2, "wall_s": 0.3, "loss": 1e-4},            # no MSE recorded here
            {"epoch": 3, "wall_s": 0.6, "mse": float("nan"), "loss": 1e-6},
            {"epoch": 4, "wall_s": 0.9, "mse": 1e-7, "loss": 1e-8}]
    assert time_to_target(recs, 1e-6) == 0.9
    assert time_to_target(recs, 1e-4, key="loss") == 0.3
    assert math.isnan(time_to_target(recs, 1e-9))
    # elapsed_s, where present, is the clock
    assert time_to_target([{"wall_s": 0.2, "elapsed_s": 1.5, "mse": 0.0}], 1e-3) == 1.5


def test_polish_records_continue_the_window_clock():
    polish = [{"kind": "polish", "window": -1, "epoch": 7, "wall_s": 10.2, "step_s": 0.2, "mse": 1e-10},
              {"kind": "polish", "window": -1, "epoch": 8, "wall_s": 10.5, "step_s": 0.3, "mse": 1e-12}]
    # the polish starts at its first record's wall_s - step_s = 10.0, after the last window (6.0)
    assert time_to_target(SOLVE_HISTORY + polish, 1e-12) == pytest.approx(6.5)
    assert time_to_target(SOLVE_HISTORY + polish, 1e-11) == 6.0  # a window got there first


def test_time_to_target_survives_the_store_round_trip():
    back = records_from_dataset(history_to_dataset(SOLVE_HISTORY))
    for target in (1e-5, 1e-8, 1e-10, 1e-12):
        a, b = time_to_target(SOLVE_HISTORY, target), time_to_target(back, target)
        assert a == b or (math.isnan(a) and math.isnan(b))


def test_group_times_sum_each_groups_windows():
    np.testing.assert_array_equal(group_times(SOLVE_HISTORY, 2), [0.6, 0.8 + 0.9])
    np.testing.assert_array_equal(group_times(SOLVE_HISTORY, 3), [0.6, 0.8 + 0.9, 0.0])
    with pytest.raises(SpecError, match="group 1.*n_sub = 1"):
        group_times(SOLVE_HISTORY, 1)


def test_group_times_charge_each_group_its_compute_in_joint_windows():
    # CEPTF: every rank's records; a group is charged window_s - sync_s of its slowest rank
    recs = [step(0, 0, 0.4, rank=0, window_s=1.5, sync_s=0.5), step(1, 0, 0.4, rank=1, window_s=1.5,
                                                                      sync_s=1.0),
            joint(0, 2.0, 1e-3),
            step(0, 1, 0.9, rank=0, window_s=2.5, sync_s=0.5), step(1, 1, 0.9, rank=1, window_s=2.5,
                                                                      sync_s=2.0),
            step(1, 1, 0.9, rank=2, window_s=2.5, sync_s=1.5),  # a second shard of group 1
            joint(1, 4.5, 1e-4)]
    np.testing.assert_array_equal(group_times(recs, 3), [1.0 + 2.0, 0.5 + 1.0, 0.0])


# --- run_metrics ----------------------------------------------------------------------------
SEQ_HISTORY = [joint(0, 5.0, 1e-7), joint(1, 12.0, 1e-9)]


def test_run_metrics_hand_computed():
    m = run_metrics(SEQ_HISTORY, SOLVE_HISTORY, n_sub=2, c_ie=2.0, target=1e-8)
    assert (m["t_seq"], m["t_par"], m["n_sub"], m["c_ie"], m["target"]) == (12.0, 4.0, 2, 2.0, 1e-8)
    assert m["sr"] == 3.0
    assert m["se"] == 1.5
    assert m["ce"] == pytest.approx(3.0 / math.sqrt(2.0), rel=1e-15)
    assert m["t_k"] == pytest.approx([0.6, 1.7], rel=1e-15)
    # default weights 1 / N_sub: (0.6 + 1.7) / 2 * 2 ** (1 / 2)
    assert m["artp"] == pytest.approx(1.15 * math.sqrt(2.0), rel=1e-14)
    weighted = run_metrics(SEQ_HISTORY, SOLVE_HISTORY, 2, 2.0, 1e-8, weights=[0.75, 0.25])
    assert weighted["artp"] == pytest.approx((0.75 * 0.6 + 0.25 * 1.7) * math.sqrt(2.0))


def test_run_metrics_when_a_run_misses_the_target():
    m = run_metrics(SEQ_HISTORY, SOLVE_HISTORY, 2, 2.0, 1e-10)  # the sequential run never got there
    assert math.isnan(m["t_seq"]) and m["t_par"] == 6.0
    assert all(math.isnan(m[k]) for k in ("sr", "se", "ce"))
    assert math.isfinite(m["artp"])
    unprofiled = run_metrics(SEQ_HISTORY, SEQ_HISTORY, 1, 2.0, 1e-8)
    assert unprofiled["sr"] == 1.0 and math.isnan(unprofiled["artp"])


FORM = OrderReduction(net=MLP(hidden=(6,)), points=32, aux_points=32, test_points=100)


@pytest.fixture(scope="module")
def sequential_run():
    ds = daskie.solve("E1", formulation=FORM, strategy=Monolithic(window=2),
                      optimizer=LevenbergMarquardt(steps=4), client="sync")
    return ds.attrs["mse"], records_from_dataset(ds)


@pytest.mark.parametrize("strategy", [BlockCoordinate(window=2, order="jacobi"), CEPTF(window=2)],
                         ids=["jacobi", "joint"])
def test_run_metrics_of_real_runs(sequential_run, strategy):
    # The records daskie.solve really produces (in-process scheduler, so quick).
    seq_mse, seq_recs = sequential_run
    par = daskie.solve("E1", formulation=FORM, strategy=strategy,
                       optimizer=LevenbergMarquardt(steps=4), client="sync", workers=2)
    par_recs = records_from_dataset(par)
    windows = [r for r in par_recs if "window_s" in r]
    assert windows, "the profiler's window_s must reach the history"
    target = max(seq_mse, par.attrs["mse"])
    m = run_metrics(seq_recs, par_recs, n_sub=2, c_ie=2.0, target=target)
    joint_elapsed = [r["elapsed_s"] for r in par_recs if r.get("kind") == "window"]
    assert m["t_par"] in joint_elapsed and m["t_seq"] > 0
    assert m["sr"] == pytest.approx(m["t_seq"] / m["t_par"], rel=1e-15)
    assert len(m["t_k"]) == 2 and all(t > 0 for t in m["t_k"])
    # joint windows: every rank's record reaches the history, each group charged its compute
    assert {r["group"] for r in windows} == {0, 1}
    assert sum(m["t_k"]) == pytest.approx(sum(r["window_s"] - (r["sync_s"] if "rank" in r else 0.0)
                                              for r in windows))
    assert m["artp"] == pytest.approx(sum(m["t_k"]) / 2 * 2 ** 0.5)


def test_solve_stores_the_plan_metrics_and_compare_writes_sr(sequential_run, tmp_path):
    from daskie.cli import main
    from daskie.metrics import compare
    from daskie.plan import make_plan
    from daskie.store import RunStore

    opt = LevenbergMarquardt(steps=4)
    seq = daskie.solve("E1", formulation=FORM, strategy=Monolithic(window=2), optimizer=opt,
                       client="sync", store=tmp_path / "seq")
    par = daskie.solve("E1", formulation=FORM, strategy=BlockCoordinate(window=2, order="jacobi"),
                       optimizer=opt, client="sync", workers=2, store=tmp_path / "par")
    plan = make_plan(FORM.discretize(daskie.problems.catalog.get("E1")), workers=2)
    flops = np.array([g.flops_per_step for g in plan.groups])
    t_k = group_times(records_from_dataset(par), 2)
    assert par.attrs["metrics_n_sub"] == 2 and par.attrs["metrics_c_eff"] == plan.c_eff
    np.testing.assert_allclose(par.attrs["metrics_w_k"], flops / flops.sum(), rtol=1e-15)
    assert par.attrs["metrics_artp"] == pytest.approx(artp(t_k, flops / flops.sum(), plan.c_eff),
                                                      rel=1e-12)
    stored = RunStore(tmp_path / "par", mode="a").read_meta()
    assert stored["metrics_artp"] == pytest.approx(par.attrs["metrics_artp"], rel=1e-12)
    assert "metrics_n_sub" not in seq.attrs  # no plan, no per-run metrics

    m = compare(tmp_path / "seq", tmp_path / "par", write=True)
    best = [min(r["mse"] for r in records_from_dataset(ds) if r.get("mse") == r.get("mse")
                and "mse" in r) for ds in (seq, par)]
    assert m["target"] == max(best) and m["t_seq"] > 0 and m["t_par"] > 0
    assert m["sr"] == pytest.approx(m["t_seq"] / m["t_par"], rel=1e-15)
    assert m == compare(seq, par)  # datasets and stores give the same figures
    stored = RunStore(tmp_path / "par", mode="a").read_meta()
    assert stored["metrics_sr"] == pytest.approx(m["sr"], rel=1e-15)
    assert stored["metrics_target"] == m["target"]
    with pytest.raises(SpecError, match="metrics_n_sub"):
        compare(par, seq)
    with pytest.raises(SpecError, match="store"):
        compare(seq, par.assign_attrs(store=""), write=True)

    assert main(["metrics", str(tmp_path / "par"), "--baseline", str(tmp_path / "seq"),
                 "--no-write"]) == 0
    assert main(["metrics", str(tmp_path / "seq"), "--baseline", str(tmp_path / "par")]) == 2


# --- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("call, word", [
    (lambda: speedup_ratio(-1.0, 2.0), "t_seq"),
    (lambda: speedup_ratio(1.0, 0.0), "t_par"),
    (lambda: speedup_ratio(1.0, math.inf), "t_par"),
    (lambda: speedup_ratio("1", 2.0), "t_seq"),
    (lambda: speedup_ratio(True, 2.0), "t_seq"),
    (lambda: speedup_efficiency(1.0, 2.0, 0), "n_sub"),
    (lambda: speedup_efficiency(1.0, 2.0, 1.5), "n_sub"),
    (lambda: computational_efficiency(1.0, 2.0, 2, 0.0), "c_ie"),
    (lambda: computational_efficiency(1.0, 2.0, 2, math.nan), "c_ie"),
    (lambda: artp([], [], 1.0), "times"),
    (lambda: artp([1.0, 2.0], [1.0], 1.0), "weights"),
    (lambda: artp([1.0, -2.0], [1.0, 1.0], 1.0), r"times\[1\]"),
    (lambda: artp([1.0], [math.nan], 1.0), r"weights\[0\]"),
    (lambda: artp([[1.0]], [1.0], 1.0), "times"),
    (lambda: artp({"a": 1.0}, [1.0], 1.0), "times"),
    (lambda: artp([1.0], [1.0], -1.0), "c_eff"),
    (lambda: time_to_target({"mse": 1.0}, 1e-3), "history_records"),
    (lambda: time_to_target([{"mse": 1.0}, 3], 1e-3), r"history_records\[1\]"),
    (lambda: time_to_target([], 0.0), "target_mse"),
    (lambda: time_to_target([], math.nan), "target_mse"),
    (lambda: time_to_target([], 1e-3, key=""), "key"),
    (lambda: time_to_target([{"kind": "window", "mse": 0.0}], 1e-3), r"history_records\[0\].*elapsed_s"),
    (lambda: time_to_target([{"mse": 0.0}], 1e-3), "wall_s"),
    (lambda: group_times("records", 2), "records"),
    (lambda: run_metrics(SEQ_HISTORY, SOLVE_HISTORY, 2, 2.0, 1e-8, weights=[1.0]), "weights"),
    (lambda: run_metrics(SEQ_HISTORY, SOLVE_HISTORY, 0, 2.0, 1e-8), "n_sub"),
    (lambda: run_metrics(SEQ_HISTORY, SOLVE_HISTORY, 2, 0, 1e-8), "c_ie"),
    (lambda: run_metrics(SEQ_HISTORY, SOLVE_HISTORY, 2, 2.0, -1.0), "target_mse"),
])
def test_bad_arguments_name_themselves(call, word):
    with pytest.raises(SpecError, match=word):
        call()


def test_metrics_import_numpy_only():
    code = ("import sys, daskie.metrics; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed', 'zarr', 'torch', 'xarray')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
