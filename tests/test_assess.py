"""The checks beside every neural answer (daskie.assess), warm starts, convergence-based
stopping, restarts, kinks, grading and row scaling: against exact solutions and the reference."""

import math
import warnings

import numpy as np
import pytest
import torch

from daskie import assess
from daskie.errors import DiscrepancyWarning, SpecError
from daskie.formulations import QuadratureCollocation
from daskie.nn import MLP
from daskie.problems import VOLTERRA, Domain, IntegralTerm, Nonlinearity, Problem, catalog
from daskie.reference import Nystrom
from daskie.train import LevenbergMarquardt, Objective
from daskie.train.loop import TrainState, advance
from daskie.train.optimizers import Stopping
from daskie.train.restarts import best_of, train_restarts, train_seed, with_floor
from daskie.train.warm_start import initial_params

U1 = Domain((0.0,), (1.0,))
SMALL = MLP(hidden=(8, 8))
#: u = x + 1/2 Int_0^1 x t u^2: u = a x with a = 1 + a^2 / 8, two real solutions.
A_LOW, A_HIGH = 4.0 - 2.0 * math.sqrt(2.0), 4.0 + 2.0 * math.sqrt(2.0)


def _x(p):
    return p[..., 0]


def two_solutions():
    return Problem(domain=U1, f=_x, name="two-solutions",
                   terms=(IntegralTerm(lambda p, t: _x(p) * _x(t), lam=0.5,
                                       nonlinearity=Nonlinearity.power(2)),),
                   exact=lambda p: A_LOW * _x(p))


def green(kink):
    """u = f + Int_0^1 G u, G = min(x,t)(1 - max(x,t)), u = e^x."""
    return Problem(domain=U1, name="green",
                   f=lambda p: np.exp(_x(p)) - (1.0 - np.exp(_x(p)) + (math.e - 1.0) * _x(p)),
                   terms=(IntegralTerm(lambda p, t: np.minimum(_x(p), _x(t)) * (1 - np.maximum(_x(p), _x(t))),
                                       kink=kink),),
                   exact=lambda p: np.exp(_x(p)))


# --- boundary points -----------------------------------------------------------------------
def test_boundary_points_hold_the_ends_corners_and_edges_and_stay_in_the_domain():
    x1 = assess.boundary_points(Domain((0.0,), (2.0,)))
    assert x1.min() == 0.0 and x1.max() == 2.0 and np.any((x1 > 0) & (x1 < 1e-5))
    x2 = assess.boundary_points(Domain((0.0, 0.0), (2.0, 1.0)), per_edge=5)
    corners = {(0.0, 0.0), (2.0, 0.0), (0.0, 1.0), (2.0, 1.0)}
    assert corners <= {tuple(p) for p in x2}
    on_edge = np.isclose(x2[:, 0] % 2.0, 0) | np.isclose(x2[:, 1] % 1.0, 0)
    assert on_edge.all() and len(x2) == 4 * 5 - 4
    lshape = catalog.get("lshape").domain
    xl = assess.boundary_points(lshape)
    assert lshape.contains(xl).all()
    assert not np.any((xl[:, 0] > 0.5) & (xl[:, 1] > 0.5))  # nothing in the hole
    assert (0.5, 0.5) in {tuple(p) for p in xl}  # the re-entrant corner


# --- the assessment ------------------------------------------------------------------------
def test_assess_is_silent_on_the_right_answer_and_warns_on_a_wrong_one():
    problem = catalog.get("fredholm1d")
    ref = assess.reference_solution(problem)
    pts = problem.domain.sample(100, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = assess.assess(problem, lambda x: problem.exact(x) * (1 + 1e-9), pts, reference=ref)
    assert good["warnings"] == [] and good["discrepancy"] < 1e-8
    assert good["reference_mse"] < 1e-25 and good["mse"] == pytest.approx(
        np.mean((1e-9 * problem.exact(pts)) ** 2), rel=1e-6)
    with pytest.warns(DiscrepancyWarning, match="differs from the Nystrom reference"):
        bad = assess.assess(problem, lambda x: problem.exact(x) * (1 + 1e-5), pts, reference=ref)
    assert 9e-6 < bad["discrepancy"] < 1.1e-5 and len(bad["warnings"]) == 1


def test_assess_warns_on_an_error_seen_only_at_the_boundary():
    # sqrt-type behaviour at an end: invisible to interior Sobol points (issue 15, class 7)
    problem = catalog.get("abel")
    ref = assess.reference_solution(problem)
    pts = problem.domain.sample(200, seed=1)
    mu = lambda x: np.sqrt(np.maximum(_x(x), 1e-4))  # noqa: E731
    with pytest.warns(DiscrepancyWarning, match="boundary"):
        out = assess.assess(problem, mu, pts, reference=ref)
    assert out["mse_boundary"] > 1e3 * out["mse"]


def test_which_solution_tells_another_solution_from_no_solution():
    problem = two_solutions()
    ref = assess.reference_solution(problem)
    assert np.allclose(ref.values, A_LOW * ref.nodes[:, 0], atol=1e-13)
    pts = problem.domain.sample(64, seed=2)
    with pytest.warns(DiscrepancyWarning, match="ANOTHER solution"):
        other = assess.assess(problem, lambda x: A_HIGH * _x(x), pts, reference=ref)
    assert other["solution"] == "other" and other["residual"] < 1e-13 and other["newton_moved"] < 1e-12
    with pytest.warns(DiscrepancyWarning, match="not a solution"):
        none = assess.assess(problem, lambda x: 2.0 * _x(x), pts, reference=ref)
    assert none["solution"] == "none" and none["residual"] > 1e-2


def test_newton_from_a_given_start_converges_to_the_solution_near_it():
    problem = two_solutions()
    high = Nystrom(n=12).solve(problem, initial=lambda x: 6.0 * _x(x))
    assert np.allclose(high.values, A_HIGH * high.nodes[:, 0], atol=1e-12)
    assert np.max(np.abs(Nystrom(n=24).residual(problem, lambda x: A_HIGH * _x(x)))) < 1e-13


# --- kinks, grading, scaling ---------------------------------------------------------------
def test_kink_option_lowers_the_floor_of_a_greens_function_kernel():
    form = QuadratureCollocation(net=SMALL, points=64, test_points=10)
    floors = {k: assess.discretization_floor(Objective(form.discretize(green(k))), green(k).exact)
              for k in (False, True)}
    assert floors[False] > 1e-9 and floors[True] < 1e-28, floors
    # and the reference alike: spectral with the split, algebraic without
    err = {k: np.max(np.abs(Nystrom(n=10).solve(green(k)).values - np.exp(Nystrom(n=10).solve(green(k)).nodes[:, 0])))
           for k in (False, True)}
    assert err[False] > 1e-6 and err[True] < 1e-12, err


def test_kink_must_name_coordinates():
    with pytest.raises(SpecError, match=r"kink = \(3,\) names a coordinate"):
        green((3,))


def test_grading_is_on_by_default_for_singular_volterra_terms_and_makes_the_rule_spectral():
    problem = catalog.get("abel")
    floors = {}
    for graded in (1.0, "auto"):
        disc = QuadratureCollocation(net=SMALL, points=64, test_points=10, graded=graded).discretize(problem)
        floors[graded] = assess.discretization_floor(Objective(disc), problem.exact)
        if graded == "auto":
            assert disc.info["graded"] == 2.0
            x = disc.evaluations["mu@x"].points.numpy()[:, 0]
            assert np.mean(x < 0.25) > 0.4  # points clustered at the singular end
    assert floors[1.0] > 1e-12 and floors["auto"] < 1e-26, floors


def test_rows_are_scaled_by_their_terms_where_f_is_nearly_cancelled():
    lam = -100.0
    problem = Problem(domain=U1, f=lambda p: _x(p) ** 2 - lam * np.exp(_x(p)) * (math.e - 2.0),
                      terms=(IntegralTerm(lambda p, t: np.exp(_x(p) + _x(t)), lam=lam),),
                      exact=lambda p: _x(p) ** 2)
    form = QuadratureCollocation(net=SMALL, points=32, test_points=10)
    auto = form.discretize(problem)
    plain = QuadratureCollocation(net=SMALL, points=32, test_points=10, row_scale="none").discretize(problem)
    assert auto.info["row_scaled"] and not plain.info["row_scaled"]
    theta = Objective(plain).init_params(0)
    r_auto = Objective(auto).residuals(theta).detach().numpy()
    r_plain = Objective(plain).residuals(theta).detach().numpy()
    x = auto.evaluations["mu@x"].points.numpy()[:, 0]
    size = 1.0 + 100.0 * np.exp(x) * (math.e - 1.0)  # |alpha| + |lam| Int |K|
    np.testing.assert_allclose(r_auto, r_plain / size, rtol=1e-10)
    assert not QuadratureCollocation(net=SMALL, points=32).discretize(catalog.get("E1")).info["row_scaled"]


def test_floor_of_the_reference_matches_that_of_the_exact_solution():
    problem = catalog.get("volterra1d")
    obj = Objective(QuadratureCollocation(net=SMALL, points=64, test_points=10).discretize(problem))
    ref = assess.reference_solution(problem)
    f_ref, f_exact = assess.discretization_floor(obj, ref), assess.discretization_floor(obj, problem.exact)
    assert f_exact < 1e-28 and f_ref < 1e-26


def test_refinement_lowers_a_high_floor_of_the_per_point_rule():
    eps = 0.05  # eps u = eps - Int_0^x u: u = e^(-x/eps), a stiff layer the 6-node rule misses
    problem = Problem(domain=U1, alpha=eps, f=lambda p: np.full(_x(p).shape, eps),
                      terms=(IntegralTerm(lambda p, t: np.ones(np.broadcast_shapes(p.shape, t.shape)[:-1]),
                                          lam=-1.0, upper=(VOLTERRA,)),),
                      exact=lambda p: np.exp(-_x(p) / eps))
    form = QuadratureCollocation(net=SMALL, points=64, test_points=10)
    refined, _, floor, note = assess.refine_for_floor(form, problem, problem.exact)
    coarse = assess.discretization_floor(Objective(form.discretize(problem)), problem.exact)
    assert coarse > 1e-10 and floor < 1e-20 and refined.local_nodes == 12 and "refined" in note


# --- stopping ------------------------------------------------------------------------------
def test_stopping_rules():
    stop = Stopping(window=3, min_decrease=0.1, floor=1e-10, max_wall_s=5.0)
    assert stop.check([1.0, 0.5, 0.2, 0.1], 0.0) is None
    assert stop.check([1.0, 0.99, 0.98, 0.97], 0.0) == "stalled"
    assert stop.check([1e-9, 0.99e-9, 0.98e-9, 0.97e-9], 0.0) == "floor"  # stalled near the floor
    assert stop.check([1.0, 1e-11], 0.0) == "floor"
    assert stop.check([1.0, 0.1], 6.0) == "time"
    with pytest.raises(SpecError, match="min_decrease"):
        Stopping(min_decrease=1.5)


def test_auto_steps_stop_on_convergence_and_say_why():
    lm = LevenbergMarquardt(steps="auto")
    assert lm.stop == Stopping() and lm.steps == Stopping().max_steps
    assert LevenbergMarquardt(steps=300).stop is None
    obj = Objective(QuadratureCollocation(net=SMALL, points=48, test_points=10).discretize(catalog.get("fredholm1d")))
    theta = obj.init_params(0)
    # a floor above the start: stops at the first step, as "floor"
    state, recs = advance(obj, with_floor(LevenbergMarquardt(steps="auto"), 1e3), TrainState(theta=theta), 50)
    assert state.done == "floor" and state.epoch == 1 and recs[-1]["stopped_by"] == "floor"
    # no floor, an unreachable target: it runs until the loss stops falling
    stop = Stopping(window=10, min_decrease=0.5, max_steps=400, max_wall_s=None)
    state, recs = advance(obj, LevenbergMarquardt(steps="auto", stop=stop), TrainState(theta=theta), 401)
    assert state.done == "stalled" and 10 < state.epoch < 400
    assert recs[-1]["loss"] > 0.5 * recs[-11]["loss"]
    pairs = list(zip(recs, recs[10:]))  # (step k - 10, step k): every one halved before the stall
    assert all(r["loss"] <= 0.5 * p["loss"] for p, r in pairs[:-1])


# --- warm starts and restarts --------------------------------------------------------------
def _two_solution_objective():
    problem = two_solutions()
    return problem, Objective(QuadratureCollocation(net=SMALL, points=64, test_points=50).discretize(problem))


@pytest.mark.parametrize("a", [A_LOW, A_HIGH])
def test_warm_start_from_the_reference_selects_its_branch(a):
    problem, obj = _two_solution_objective()
    # the reference on the branch near a x (Newton started there)
    ref = Nystrom(n=12).solve(problem, initial=lambda x: a * _x(x))
    result = train_seed(obj, LevenbergMarquardt(steps=40), 0, init="reference", reference=ref, target_loss=1e-20)
    mu = obj.solution(result.state.theta, obj.disc.test_points)
    assert result.init["init"] == "reference"
    x = obj.disc.test_points[:, 0]
    other = A_HIGH if a == A_LOW else A_LOW
    # on the reference's branch: 1e-3 from it, the other branch is 5.7 x away
    assert np.max(np.abs(mu - a * x)) < 1e-3 and np.min(np.abs(mu - other * x)[x > 0.1]) > 0.5
    assert result.state.loss < 1e-8


def test_default_init_chooses_the_reference_and_says_so():
    problem, obj = _two_solution_objective()
    ref = assess.reference_solution(problem)
    theta, info = initial_params(obj, "auto", seed=0, reference=ref)
    assert info["init"] == "reference" and "reference" in info["init_reason"]
    assert info["init_fit_mse"] < 1e-8
    theta, info = initial_params(obj, "auto", seed=0)
    assert info["init"] == "f"  # nonlinear, no reference: f / alpha
    np.testing.assert_allclose(obj.solution(theta, obj.disc.test_points), obj.disc.test_points[:, 0], atol=1e-3)
    with pytest.raises(SpecError, match="init must be one of"):
        initial_params(obj, "zeros")
    with pytest.raises(SpecError, match="needs the reference"):
        initial_params(obj, "reference")


def test_restarts_keep_the_best_of_the_seeds():
    _, obj = _two_solution_objective()
    best, runs = train_restarts(obj, LevenbergMarquardt(steps=3), restarts=3, seed=5, init="random")
    assert [r.seed for r in runs] == [5, 6, 7]
    assert best.state.loss == min(r.state.loss for r in runs)
    assert best is best_of(runs)


def test_a_stall_far_above_the_floor_restarts_with_another_seed():
    _, obj = _two_solution_objective()
    stalls = LevenbergMarquardt(steps="auto", stop=Stopping(window=2, min_decrease=0.999999, max_wall_s=None))
    best, runs = train_restarts(obj, stalls, seed=0, init="random", floor=1e-30, max_auto=2)
    assert [r.seed for r in runs] == [0, 1, 2] and all(r.state.done == "stalled" for r in runs)
    _, single = train_restarts(obj, stalls, seed=0, init="random", floor=None)
    assert len(single) == 1  # no floor known: no automatic restart


def test_automatic_restarts_vary_the_optimizer_and_reuse_the_first_runs():
    from daskie.train.optimizers import Adam, Chain
    from daskie.train.restarts import other_scaling

    _, obj = _two_solution_objective()
    stalls = LevenbergMarquardt(steps="auto", stop=Stopping(window=2, min_decrease=0.999999, max_wall_s=None))
    seen = []

    def runner(seeds, opt, how):
        seen.append((seeds, opt.scaling, how))
        return [train_seed(obj, opt, s, init=how) for s in seeds]

    first = [train_seed(obj, stalls, 0, init="random")]
    best, runs = train_restarts(obj, stalls, seed=0, init="reference", runner=runner, first=first,
                                restart=lambda best: best.state.done == "stalled", max_auto=2,
                                restart_init="random",
                                vary=lambda opt, i: other_scaling(opt) if i % 2 else opt)
    # the first run is not trained again; restart 1 swaps the scaling, restart 2 does not
    assert runs[0] is first[0] and [r.seed for r in runs] == [0, 1, 2]
    assert seen == [([1], "levenberg", "random"), ([2], "marquardt", "random")]
    assert best is best_of(runs)
    # other_scaling swaps every LM stage of a chain, leaves the others, and is its own inverse
    chain = Chain((Adam(steps=2), LevenbergMarquardt(steps=3, scaling="levenberg")))
    swapped = other_scaling(chain)
    assert [getattr(s, "scaling", None) for s in swapped.stages()] == [None, "marquardt"]
    assert other_scaling(swapped) == chain


def test_a_time_budget_counts_the_runs_already_made():
    _, obj = _two_solution_objective()
    stalls = LevenbergMarquardt(steps="auto", stop=Stopping(window=2, min_decrease=0.999999, max_wall_s=None))
    first = [train_seed(obj, stalls, 0, init="random")]
    first[0].wall_s = 95.0  # as if the first run had taken 95 of 100 s
    _, runs = train_restarts(obj, stalls, seed=0, first=first, max_wall_s=100.0,
                             restart=lambda best: True)
    assert runs == first  # 5 s left (< a tenth): no restart


def test_restarts_serial_equal_cluster():
    from distributed import Client, LocalCluster

    _, obj = _two_solution_objective()
    opt = LevenbergMarquardt(steps=5)
    serial = [train_seed(obj, opt, s, init="random") for s in (0, 1)]
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0", processes=True) as cluster, \
            Client(cluster) as client:
        futures = [client.submit(train_seed, obj, opt, s, init="random", pure=False) for s in (0, 1)]
        remote = client.gather(futures)
    for a, b in zip(serial, remote):
        assert a.seed == b.seed and a.state.loss == b.state.loss
        torch.testing.assert_close(a.state.theta, b.state.theta, rtol=0, atol=0)
    assert serial[0].state.loss != serial[1].state.loss


def test_the_reference_is_computed_up_to_d5_and_not_at_d6():
    # d = 6 with 4 nodes per axis is 4096 unknowns: its floor check alone took over 300 s
    from daskie.assess import reference_fits
    from daskie.problems import catalog

    assert reference_fits(catalog.get("hd-volterra-d4"))
    assert not reference_fits(catalog.get("hd-volterra-d6"))
    assert not reference_fits(catalog.get("hd-sharp-d8"))
