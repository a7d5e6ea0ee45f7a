"""The planner (seed 000, Algorithm 1): weights, group counts, balance, GPU tags, JSON."""

import itertools
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from daskie.errors import SpecError
from daskie.formulations import Discretization, Evaluation, SubModel
from daskie.formulations.order_reduction import OrderReduction
from daskie.formulations.quadrature import QuadratureCollocation
from daskie.nn.mlp import MLP
from daskie.plan import Placement, Plan, make_plan
from daskie.plan.plan import ResidualBlock, SubmodelCost
from daskie.plan.planner import rebalance
from daskie.problems import catalog
from daskie.train.objective import Objective

TINY = MLP(hidden=(1,))  # flops(1) = 2, so a plain evaluation on p points costs 6 p


@pytest.fixture(scope="module")
def e1():
    return OrderReduction(points=64, aux_points=64).discretize(catalog.get("E1"))


@pytest.fixture(scope="module")
def e1_quad():
    return QuadratureCollocation(points=64, nodes=4).discretize(catalog.get("E1"))


def synthetic(costs, couplings=()):
    """A discretization of E1's problem with one sub-model per entry of ``costs``
    (``{name: points}``, cost 6 * (points + 200) each: daskie.plan.cost's 200 rows per call) and one residual block per coupled pair."""
    submodels = {n: SubModel(n, 1, TINY) for n in costs}
    evaluations = {f"{n}@": Evaluation(n, np.zeros((p, 1))) for n, p in costs.items()}
    blocks = {f"own{n}": (f"{n}@",) for n in costs}
    for a, b in couplings:
        blocks[f"{a}~{b}"] = (f"{a}@", f"{b}@")
    return Discretization(problem=catalog.get("E1"), submodels=submodels, evaluations=evaluations,
                          residual_fn=lambda values: {}, solution=next(iter(costs)),
                          test_points=np.zeros((1, 2)), test_exact=None,
                          block_evaluations=blocks, info={"formulation": "synthetic"})


def loads(plan):
    return [g.flops_per_step for g in plan.groups]


# --- Algorithm 1's quantities -------------------------------------------------------------
@pytest.mark.parametrize("name, weight, c_eff", [
    ("E1", 1.0, 2.0),        # linear Fredholm, d = 2
    ("E2", 1.25, 2.5),       # linear Volterra
    ("E3", 1.5, 3.0),        # nonlinear Fredholm
    ("E4", 1.875, 3.75),     # nonlinear Volterra: 1.5 * 1.25
])
def test_term_weights_and_c_eff(name, weight, c_eff):
    disc = OrderReduction(points=64, aux_points=64).discretize(catalog.get(name))
    plan = make_plan(disc, workers=64)
    assert plan.term_weights == (weight,)
    assert plan.term_dims == (2,)
    assert plan.c_eff == plan.complexity == c_eff


def test_weak_singularity_weighs_most():
    disc = QuadratureCollocation(points=32, nodes=4).discretize(catalog.get("abel"))
    plan = make_plan(disc)
    assert plan.term_weights == (1.5,) and plan.term_dims == (1,) and plan.c_eff == 1.5


def test_cost_model_of_one_group(e1):
    plan = make_plan(e1, workers=64)
    mu = e1.submodels["mu"]
    # the one cost model (daskie.plan.cost): forward flops x (rows x 2.2 for an input
    # derivative, else rows, + 200 rows per call), times 3 for forward and backward
    expected = sum(mu.net.flops(mu.in_dim) * 3 * (ev.size * (2.2 if ev.derivative is not None else 1)
                                                  + 200)
                   for ev in e1.evaluations.values() if ev.submodel == "mu")
    group = plan.groups[plan.group_of("mu")]
    assert group.submodels == ("mu",)
    assert group.flops_per_step == pytest.approx(expected, rel=1e-12)
    points = sum(ev.size for ev in e1.evaluations.values() if ev.submodel == "mu")
    assert group.memory_bytes == mu.n_params * 32 + points * sum(mu.net.sizes(2)) * 24


# --- N_max and N_sub ----------------------------------------------------------------------
def test_n_sub_is_capped_by_workers(e1):
    assert make_plan(e1, workers=1).n_sub == 1
    assert make_plan(e1, workers=2).n_sub == 2


def test_n_sub_is_capped_by_submodel_count(e1, e1_quad):
    # E1: ceil(C_eff) + 1 = 3 = number of sub-models; E3: 4 > 3 sub-models.
    assert make_plan(e1, workers=64).n_sub == 3
    e3 = OrderReduction(points=64, aux_points=64).discretize(catalog.get("E3"))
    assert make_plan(e3, workers=64).n_sub == 3
    assert make_plan(e1_quad, workers=64, gpus=8).n_sub == 1


def test_n_sub_is_capped_by_c_eff():
    disc = synthetic({f"s{k}": 10 + k for k in range(10)})
    plan = make_plan(disc, workers=64)  # E1's problem: C_eff = 2
    assert plan.n_max == 64 and plan.n_sub == 3


def test_n_sub_is_capped_by_memory_and_explicit_n_max(e1):
    largest = max(g.memory_bytes for g in make_plan(e1, workers=64).groups)
    tight = make_plan(e1, workers=2, memory_per_worker=largest / 2)  # total = one sub-model
    assert tight.n_max == 1 and tight.n_sub == 1
    three = make_plan(e1, workers=3, memory_per_worker=largest)
    assert three.n_max == 3 and three.n_sub == 3
    assert make_plan(e1, workers=64, n_max=2).n_sub == 2
    starved = make_plan(e1, workers=4, memory_per_worker=1.0)  # nothing fits: still one group
    assert starved.n_max == 1 and starved.n_sub == 1


# --- ClusterTerms -------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2, 3, 64])
def test_every_submodel_is_in_exactly_one_group(e1, workers):
    plan = make_plan(e1, workers=workers)
    assert sorted(plan.submodels) == sorted(e1.submodels)
    assert len(plan.groups) == plan.n_sub
    assert all(g.submodels for g in plan.groups)
    assert [g.index for g in plan.groups] == list(range(plan.n_sub))
    for g in plan.groups:
        assert all(plan.group_of(n) == g.index for n in g.submodels)


def best_max_load(costs, k):
    names = list(costs)
    best = np.inf
    for labels in itertools.product(range(k), repeat=len(names)):
        if len(set(labels)) == k:
            load = np.zeros(k)
            np.add.at(load, list(labels), [costs[n] for n in names])
            best = min(best, load.max())
    return best


def test_lpt_is_optimal_for_e1_on_two_workers(e1):
    plan = make_plan(e1, workers=2)
    alone = make_plan(e1, workers=64)
    single = {n: alone.groups[alone.group_of(n)].flops_per_step for n in e1.submodels}
    assert max(loads(plan)) == best_max_load(single, 2)
    # The heaviest sub-model trains alone; the two lighter ones share the other worker.
    heaviest = max(single, key=single.get)
    assert plan.groups[plan.group_of(heaviest)].submodels == (heaviest,)


def test_heaviest_submodel_is_alone_when_each_has_a_group(e1):
    plan = make_plan(e1, workers=64)
    assert all(len(g.submodels) == 1 for g in plan.groups)
    assert loads(plan) == sorted(loads(plan), reverse=True)


def test_lpt_meets_grahams_bound_on_random_costs():
    rng = np.random.default_rng(3)
    for trial in range(5):
        costs = {f"s{k}": int(c) for k, c in enumerate(rng.integers(1, 60, size=7))}
        disc = synthetic(costs)
        plan = make_plan(disc, workers=3, n_max=3)
        opt = best_max_load({n: 6 * (p + 200) for n, p in costs.items()}, 3)
        assert opt <= max(loads(plan)) <= (4 / 3 - 1 / 9) * opt + 1e-9


def test_coupled_submodels_join_when_balance_allows():
    # LPT alone: {a}, {b}, {c, d}; d is coupled to b and joining b keeps the max load (a).
    disc = synthetic({"a": 1000, "b": 300, "c": 200, "d": 200}, couplings=[("b", "d")])
    plan = make_plan(disc, workers=3, n_max=3)
    assert plan.group_of("d") == plan.group_of("b") != plan.group_of("c")
    assert max(loads(plan)) == 6 * (1000 + 200)


def test_coupling_never_costs_balance():
    # c is coupled to a only, but joining a would raise the max load: LPT's choice stands.
    disc = synthetic({"a": 1400, "b": 600, "c": 400}, couplings=[("a", "c")])
    plan = make_plan(disc, workers=2)
    assert plan.group_of("c") == plan.group_of("b") != plan.group_of("a")
    assert max(loads(plan)) == 6 * (1400 + 200)


def test_many_submodels_are_planned_fast_and_balanced():
    rng = np.random.default_rng(0)
    n = 3000
    costs = {f"s{k:04d}": int(p) for k, p in enumerate(rng.integers(1, 50, size=n))}
    names = list(costs)
    chain = list(zip(names[:-1], names[1:]))
    big = synthetic(costs, couplings=chain)
    big.problem = _wide_problem(40)  # C_eff = 40, so N_sub = 41
    start = time.perf_counter()
    plan = make_plan(big, workers=64, gpus=8)
    assert time.perf_counter() - start < 2.0
    assert plan.n_sub == 41 and sorted(plan.submodels) == sorted(names)
    total = 6.0 * sum(p + 200 for p in costs.values())
    assert max(loads(plan)) <= total / plan.n_sub + 6.0 * (max(costs.values()) + 200)


def _wide_problem(n_terms):
    from daskie.problems import Domain, IntegralTerm, Problem

    kernel = lambda x, t: np.ones(np.broadcast_shapes(x.shape, t.shape)[:-1])  # noqa: E731
    return Problem(domain=Domain((0.0,), (1.0,)), f=lambda x: x[..., 0],
                   terms=tuple(IntegralTerm(kernel, lam=0.01) for _ in range(n_terms)), name="wide")


# --- hardware mapping and dependencies ----------------------------------------------------
@pytest.mark.parametrize("workers, gpus", [(2, 1), (3, 1), (3, 2), (64, 8), (4, 0)])
def test_gpus_go_to_the_heaviest_groups(e1, workers, gpus):
    plan = make_plan(e1, workers=workers, gpus=gpus)
    on_gpu = [g for g in plan.groups if g.resource == "GPU"]
    on_cpu = [g for g in plan.groups if g.resource == "CPU"]
    assert len(on_gpu) == min(gpus, plan.n_sub)
    assert len(on_gpu) + len(on_cpu) == plan.n_sub
    if on_gpu and on_cpu:
        assert min(g.flops_per_step for g in on_gpu) >= max(g.flops_per_step for g in on_cpu)


@pytest.mark.parametrize("workers", [2, 3, 64])
def test_dependencies_are_symmetric_and_come_from_couplings(e1, workers):
    plan = make_plan(e1, workers=workers)
    expected = {g: set() for g in range(plan.n_sub)}
    for subs in e1.couplings.values():
        groups = {plan.group_of(s) for s in subs}
        for g in groups:
            expected[g] |= groups - {g}
    assert {g: set(d) for g, d in plan.dependencies.items()} == expected
    for g, deps in plan.dependencies.items():
        assert g not in deps and list(deps) == sorted(deps)
        assert all(g in plan.dependencies[h] for h in deps)


def test_single_group_has_no_dependencies(e1_quad):
    plan = make_plan(e1_quad, workers=4)
    assert plan.dependencies == {0: ()}


def test_large_simulated_cluster(e1):
    plan = make_plan(e1, workers=64, gpus=8)
    assert (plan.workers, plan.gpus, plan.n_max, plan.n_sub) == (64, 8, 64, 3)
    assert all(g.resource == "GPU" for g in plan.groups)
    assert plan.dependencies == {0: (1, 2), 1: (0, 2), 2: (0, 1)}


def test_simulated_large_cluster_tags_the_heaviest_submodels():
    # 64 sub-models, C_eff = 63: one group each on 64 workers; the 8 heaviest go to the GPUs.
    rng = np.random.default_rng(5)
    costs = {f"s{k:02d}": int(p) for k, p in enumerate(rng.permutation(np.arange(10, 74)))}
    disc = synthetic(costs)
    disc.problem = _wide_problem(63)
    plan = make_plan(disc, workers=64, gpus=8)
    assert plan.n_sub == 64 and all(len(g.submodels) == 1 for g in plan.groups)
    heaviest = sorted(costs, key=costs.get, reverse=True)[:8]
    assert {g.submodels[0] for g in plan.groups if g.resource == "GPU"} == set(heaviest)
    assert [g.resource for g in plan.groups] == ["GPU"] * 8 + ["CPU"] * 56


# --- per sub-model estimates ----------------------------------------------------------------
def restricted_jacobian(disc, names):
    """The Jacobian an LM step of ``names`` forms, with the others frozen."""
    full = Objective(disc)
    params = full.layout.split(full.init_params(0))
    obj = Objective(disc, trainable=names, frozen={n: v for n, v in params.items() if n not in names})
    return obj.jacobian(obj.layout.join({n: params[n] for n in names}))[1]


@pytest.mark.parametrize("which", ["e1", "e1_quad"])
def test_submodel_costs_match_the_jacobians_lm_forms(which, request):
    disc = request.getfixturevalue(which)
    plan = make_plan(disc, workers=64)
    assert [c.name for c in plan.costs] == list(disc.submodels)
    for cost in plan.costs:
        sub = disc.submodels[cost.name]
        jac = restricted_jacobian(disc, [cost.name])
        assert jac.shape == (cost.jacobian_rows, cost.n_params) == (cost.jacobian_rows, sub.n_params)
        assert cost.jacobian_bytes == jac.numel() * 8
        assert cost.points == sum(ev.size for ev in disc.evaluations.values()
                                  if ev.submodel == cost.name)
        alone = plan.groups[plan.group_of(cost.name)]
        assert (cost.flops_per_step, cost.memory_bytes, cost.jacobian_bytes) == \
            (alone.flops_per_step, alone.memory_bytes, alone.jacobian_bytes)
    assert {b.name: b.submodels for b in plan.blocks} == disc.couplings


def test_group_estimates_add_up_and_the_group_jacobian_is_its_lm_jacobian(e1):
    plan = make_plan(e1, workers=2)
    shared = next(g for g in plan.groups if len(g.submodels) == 2)
    members = [plan.cost_of(n) for n in shared.submodels]
    assert shared.flops_per_step == pytest.approx(sum(c.flops_per_step for c in members), rel=1e-15)
    assert shared.memory_bytes == pytest.approx(sum(c.memory_bytes for c in members), rel=1e-15)
    jac = restricted_jacobian(e1, list(shared.submodels))
    assert shared.jacobian_bytes == jac.numel() * 8
    # a shared block counts once for the group, once per sub-model for the sub-models
    assert shared.jacobian_bytes < sum(c.jacobian_rows for c in members) * \
        sum(c.n_params for c in members) * 8
    with pytest.raises(KeyError, match="nope"):
        plan.cost_of("nope")


def test_block_rows_fall_back_to_the_largest_evaluation():
    disc = synthetic({"a": 30, "b": 20}, couplings=[("a", "b")])  # residual_fn returns nothing
    plan = make_plan(disc, workers=1)
    rows = {b.name: b.rows for b in plan.blocks}
    assert rows == {"owna": 30, "ownb": 20, "a~b": 30}
    assert plan.cost_of("a").jacobian_rows == 60 and plan.cost_of("b").jacobian_rows == 50


# --- rebalance ------------------------------------------------------------------------------
def abc_plan(gpus=0):
    # static costs 6000, 3600, 2400 (6 x (points + 200)): LPT gives {a} and {b, c}
    disc = synthetic({"a": 800, "b": 400, "c": 200}, couplings=[("a", "c")])
    plan = make_plan(disc, workers=2, gpus=gpus)
    assert [g.submodels for g in plan.groups] == [("a",), ("b", "c")]
    return plan


def test_rebalance_with_times_proportional_to_flops_keeps_the_groups(e1):
    for plan in (abc_plan(), make_plan(e1, workers=2, gpus=1)):
        again = rebalance(plan, {c.name: c.flops_per_step * 1e-9 for c in plan.costs})
        assert [g.submodels for g in again.groups] == [g.submodels for g in plan.groups]
        assert [g.resource for g in again.groups] == [g.resource for g in plan.groups]
        assert again.dependencies == plan.dependencies
        assert [g.step_s for g in again.groups] == \
            pytest.approx([g.flops_per_step * 1e-9 for g in plan.groups], rel=1e-12)
        assert all(g.step_s is None for g in plan.groups)


def test_rebalance_repacks_by_measured_times():
    plan = abc_plan(gpus=1)
    # measured: a is the cheapest after all; LPT on (b 3.5, c 2, a 1) gives {b} and {c, a}
    new = rebalance(plan, {"a": 1.0, "b": 3.5, "c": 2.0})
    assert [g.submodels for g in new.groups] == [("b",), ("a", "c")]
    assert [g.step_s for g in new.groups] == [3.5, 3.0]
    assert [g.resource for g in new.groups] == ["GPU", "CPU"]
    assert new.dependencies == {0: (), 1: ()}  # a and c, the coupled pair, now train together
    # static estimates travel with the groups
    assert new.groups[1].flops_per_step == 6.0 * (1000 + 400)
    assert (new.n_sub, new.costs, new.blocks, new.c_eff) == (plan.n_sub, plan.costs, plan.blocks,
                                                             plan.c_eff)
    assert Plan.from_json(new.to_json()) == new


def test_rebalance_by_group_splits_a_groups_time_by_flops():
    plan = abc_plan()
    # group 1 = {b, c}: 5 s split 3 : 2 by their FLOPs (3600 : 2400); group 0 = {a}: 1 s
    by_group = rebalance(plan, {0: 1.0, 1: 5.0})
    assert by_group == rebalance(plan, {"a": 1.0, "b": 3.0, "c": 2.0})
    # a sub-model's own time takes precedence over its group's share
    assert rebalance(plan, {1: 5.0, "b": 0.5, "a": 1.0}).groups[0].submodels == ("c",)


def test_rebalance_costs_unmeasured_submodels_at_the_measured_rate():
    plan = abc_plan()
    # a: 2 s for 6000 FLOPs -> b 1.2 s, c 0.8 s
    new = rebalance(plan, {"a": 2.0})
    assert [g.submodels for g in new.groups] == [("a",), ("b", "c")]
    assert [g.step_s for g in new.groups] == pytest.approx([2.0, 2.0], rel=1e-15)


def test_rebalance_a_single_group():
    disc = synthetic({"a": 10, "b": 20})
    plan = make_plan(disc, workers=1)
    new = rebalance(plan, {0: 0.25})
    assert new.groups[0].submodels == plan.groups[0].submodels and new.groups[0].step_s == 0.25


@pytest.mark.parametrize("times, word", [
    ({}, "non-empty"),
    ([("a", 1.0)], "dict"),
    ({"nope": 1.0}, "nope"),
    ({2: 1.0}, "group index"),
    ({-1: 1.0}, "group index"),
    ({True: 1.0}, "group index"),
    ({0: 0.0}, r"step_times\[0\]"),
    ({"a": float("nan")}, "step_times"),
    ({"a": True}, "step_times"),
    ({"a": "1"}, "step_times"),
])
def test_rebalance_rejects_bad_times(times, word):
    with pytest.raises(SpecError, match=word):
        rebalance(abc_plan(), times)


def test_rebalance_needs_a_plan_with_costs():
    plan = abc_plan()
    old = plan.to_dict()
    del old["costs"], old["blocks"]
    for g in old["groups"]:
        del g["jacobian_bytes"]
    legacy = Plan.from_dict(old)  # plans written before the estimates still read
    assert legacy.costs == () and legacy.blocks == () and legacy.groups[0].jacobian_bytes == 0.0
    assert [g.submodels for g in legacy.groups] == [g.submodels for g in plan.groups]
    with pytest.raises(SpecError, match="make_plan"):
        rebalance(legacy, {0: 1.0})
    with pytest.raises(SpecError, match="plan"):
        rebalance(plan.to_dict(), {0: 1.0})


# --- data -----------------------------------------------------------------------------------
@pytest.mark.parametrize("workers, gpus", [(2, 0), (64, 8)])
def test_json_round_trip_is_exact(e1, workers, gpus):
    plan = make_plan(e1, workers=workers, gpus=gpus)
    back = Plan.from_json(plan.to_json())
    assert back == plan
    assert back.to_json() == plan.to_json()
    assert json.loads(plan.to_json()) == plan.to_dict()
    assert Plan.from_dict(plan.to_dict()) == plan
    assert all(isinstance(g, Placement) for g in back.groups)
    assert all(isinstance(c, SubmodelCost) for c in back.costs) and back.costs == plan.costs
    assert all(isinstance(b, ResidualBlock) for b in back.blocks) and back.blocks == plan.blocks
    assert "step_s" not in plan.to_dict()["groups"][0]


def test_plan_is_deterministic():
    def build():
        disc = OrderReduction(points=64, aux_points=64).discretize(catalog.get("E4"))
        return make_plan(disc, workers=2, gpus=1).to_json()

    assert build() == build()


def test_from_dict_names_missing_keys(e1):
    data = make_plan(e1).to_dict()
    del data["n_sub"]
    with pytest.raises(SpecError, match="n_sub"):
        Plan.from_dict(data)


def test_group_of_unknown_submodel(e1):
    with pytest.raises(KeyError, match="nope"):
        make_plan(e1).group_of("nope")


def test_describe_shows_the_quantities(e1):
    text = make_plan(e1, workers=64, gpus=8).describe()
    assert "C_eff = sum omega_i n_i = 2" in text
    assert "N_max = 64, N_sub" in text and "= 3" in text
    assert "omega = [1]" in text
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("group"))
    assert len(lines) == header + 1 + 3
    for name in e1.submodels:
        assert any(f" {name} " in f" {line} " or f" {name}," in line for line in lines[header + 1:])
    assert all("GPU" in line for line in lines[header + 1:])


def test_describe_shortens_long_groups():
    disc = synthetic({f"s{k}": 10 for k in range(20)})
    text = make_plan(disc, workers=1).describe()
    assert "+14 more" in text
    assert "+8 more sub-models" in text


def test_describe_lists_submodel_estimates_and_measured_times(e1):
    plan = make_plan(e1, workers=2)
    lines = plan.describe().splitlines()
    head = lines.index(next(line for line in lines if line.startswith("sub-model")))
    assert "LM Jacobian MB" in lines[head]
    for cost, line in zip(sorted(plan.costs, key=lambda c: -c.flops_per_step), lines[head + 1:head + 4]):
        assert line.split()[:3] == [cost.name, str(cost.n_params), str(cost.points)]
        assert line.split()[-1] == f"{cost.jacobian_bytes / 1e6:.4g}"
    assert "s/step" not in plan.describe()
    timed = rebalance(plan, {0: 0.5, 1: 0.25})
    lines = timed.describe().splitlines()
    head = lines.index(next(line for line in lines if line.startswith("group")))
    assert lines[head].split()[-3:] == ["s/step", "couples", "to"]
    for g, line in zip(timed.groups, lines[head + 1:]):
        assert line.split()[-2] == f"{g.step_s:.4g}"


# --- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, word", [
    ({"workers": 0}, "workers"),
    ({"workers": 2.0}, "workers"),
    ({"workers": True}, "workers"),
    ({"gpus": -1}, "gpus"),
    ({"workers": 2, "gpus": 3}, "gpus"),
    ({"memory_per_worker": 0}, "memory_per_worker"),
    ({"memory_per_worker": -1e9}, "memory_per_worker"),
    ({"memory_per_worker": float("nan")}, "memory_per_worker"),
    ({"n_max": 0}, "n_max"),
])
def test_bad_arguments_name_themselves(e1, kwargs, word):
    with pytest.raises(SpecError, match=word):
        make_plan(e1, **kwargs)


def test_disc_must_be_a_discretization():
    with pytest.raises(SpecError, match="disc"):
        make_plan(catalog.get("E1"))


# --- command line ---------------------------------------------------------------------------
def test_cli_plan_prints_the_plan(capsys):
    from daskie.cli import main

    assert main(["plan", "E1", "--workers", "64", "--gpus", "8", "--points", "64", "--json"]) == 0
    plan = Plan.from_json(capsys.readouterr().out)
    assert (plan.workers, plan.gpus, plan.n_sub) == (64, 8, 3)
    assert all(g.resource == "GPU" for g in plan.groups)
    assert sorted(c.name for c in plan.costs) == ["F0.1", "F0.2", "mu"]
    disc = OrderReduction(points=64).discretize(catalog.get("E1"))
    assert plan == make_plan(disc, workers=64, gpus=8)
    assert main(["plan", "E1", "--workers", "2", "--points", "64"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Plan for E1 (order_reduction): 3 sub-models in 2 groups on 2 workers")
    assert "LM Jacobian MB" in text


@pytest.mark.parametrize("args, word", [
    (["plan", "E1", "--workers", "0"], "workers"),
    (["plan", "E1", "--workers", "4", "--gpus", "5"], "gpus"),
    (["plan", "E1", "--gpus", "-1"], "gpus"),
    (["plan", "nosuch"], "unknown problem"),
    (["plan", "E1", "--points", "0"], "points"),
])
def test_cli_plan_bad_input_is_one_line_and_exit_2(capsys, args, word):
    from daskie.cli import main

    try:  # a value out of range is argparse's error (SystemExit 2), a bad spec daskie's (2)
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert word in err and len(err.strip().splitlines()) == 1 and err.startswith("daskie: error:")


def test_cli_plan_bad_option_value_exits_2(capsys):
    from daskie.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["plan", "E1", "--workers", "many"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--workers" in err and len(err.strip().splitlines()) == 1


def test_planner_imports_no_dask_or_zarr():
    code = ("import sys, daskie.plan; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'zarr')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
