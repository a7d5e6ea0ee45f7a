"""Optimizers and the training loop on problems with known minimisers.

The optimizers see an objective only through ``loss(theta)``, ``jacobian(theta) -> (r, J)``
(Levenberg-Marquardt), and the loop through ``init_params(seed)`` and ``mse(theta)``; a
small least-squares class stands in for a formulation's :class:`Objective` where the
minimiser must be known exactly.
"""

import math
import warnings

import pytest
import torch

from daskie.errors import SpecError, TrainingDiverged
from daskie.formulations import QuadratureCollocation
from daskie.nn.mlp import MLP
from daskie.problems import catalog
from daskie.train import LBFGS, Adam, Chain, LevenbergMarquardt, Objective, TrainState, advance, train



class LeastSquares:
    """``loss = |r(theta)|^2`` with the Jacobian from autograd, minimiser known."""

    def __init__(self, residual_fn, theta0, minimiser=None):
        self.residual_fn = residual_fn
        self.theta0 = torch.as_tensor(theta0, dtype=torch.float64)
        self.minimiser = None if minimiser is None else torch.as_tensor(minimiser, dtype=torch.float64)

    def init_params(self, seed):
        return self.theta0.clone()

    def residuals(self, theta):
        return self.residual_fn(theta)

    def loss(self, theta):
        r = self.residual_fn(theta)
        return r @ r

    def jacobian(self, theta):
        theta = theta.detach()
        return self.residual_fn(theta), torch.func.jacrev(self.residual_fn)(theta)

    def mse(self, theta):
        if self.minimiser is None:
            return math.nan
        return float(torch.mean((theta - self.minimiser) ** 2))


def rosenbrock():
    """r = (10 (y - x^2), 1 - x): the only zero, and minimiser, is (1, 1)."""
    return LeastSquares(lambda t: torch.stack([10.0 * (t[1] - t[0] ** 2), 1.0 - t[0]]),
                        [-1.2, 1.0], minimiser=[1.0, 1.0])


def quadratic():
    """loss = sum_j s_j^2 (theta_j - c_j)^2, ill-conditioned 1:100, minimiser c."""
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    s = torch.tensor([1.0, 3.0, 0.3], dtype=torch.float64)
    return LeastSquares(lambda t: s * (t - c), [0.0, 0.0, 0.0], minimiser=c)


def small_objective():
    disc = QuadratureCollocation(net=MLP(hidden=(5,)), points=16, test_points=10).discretize(
        catalog.get("fredholm1d"))
    return Objective(disc)


# --- Levenberg-Marquardt -----------------------------------------------------------------
def test_levenberg_marquardt_solves_linear_least_squares():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    b = torch.randn(30, generator=gen, dtype=torch.float64)
    expected = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    objective = LeastSquares(lambda t: A @ t - b, torch.zeros(6), minimiser=expected)
    state, records = train(objective, LevenbergMarquardt(steps=40))
    # On a linear problem each LM step shrinks the error by about the damping (1e-3, then
    # /3 per accepted step): three steps reach ~1e-10, after which loss changes are below
    # the rounding of the loss (~32) and the damping climbs to its ceiling.
    assert state.done == "stalled"
    torch.testing.assert_close(state.theta, expected, rtol=0, atol=1e-9)
    # the residual at the answer is orthogonal to the columns of A (normal equations)
    assert float((A.T @ (A @ state.theta - b)).abs().max()) < 1e-8
    assert records[0]["loss"] > records[-1]["loss"]
    assert records[-1]["loss"] == pytest.approx(float(objective.loss(expected)), rel=1e-12)


@pytest.mark.parametrize("scaling", ["marquardt", "levenberg"])
def test_levenberg_marquardt_reaches_the_rosenbrock_minimiser(scaling):
    state, records = train(rosenbrock(), LevenbergMarquardt(steps=200, scaling=scaling))
    torch.testing.assert_close(state.theta, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-8)
    assert state.done in ("stalled", "budget")
    # losses never increase: LM only accepts steps that reduce the loss
    losses = [r["loss"] for r in records]
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert all(r["optimizer"] == "LevenbergMarquardt" for r in records)


def test_levenberg_marquardt_stalls_at_an_exact_zero():
    # At the minimiser no step reduces the loss: the damping climbs to its ceiling and the
    # stage reports that it can do no more.
    objective = LeastSquares(lambda t: t - 1.0, [1.0, 1.0])
    state, records = train(objective, LevenbergMarquardt(steps=50, max_damping=1e3))
    assert state.done == "stalled"
    assert records[-1]["stalled"] and records[-1]["damping"] > 1e3
    torch.testing.assert_close(state.theta, torch.ones(2, dtype=torch.float64), rtol=0, atol=0)


# --- Adam --------------------------------------------------------------------------------
def test_adam_learning_rate_follows_the_schedule():
    lr, decay = 0.1, 0.5
    state, records = train(quadratic(), Adam(lr=lr, decay=decay, steps=6))
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    for r in records:
        assert r["lr"] == pytest.approx(lr / (1.0 + decay * (r["epoch"] - 1)), rel=1e-15)


def test_adam_without_decay_matches_torch_adam():
    objective = quadratic()
    ours, _ = train(objective, Adam(lr=0.05, decay=0.0, steps=25))
    p = objective.init_params(0).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=0.05, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(25):
        opt.zero_grad()
        objective.loss(p).backward()
        opt.step()
    torch.testing.assert_close(ours.theta, p.detach(), rtol=1e-12, atol=1e-14)


def test_adam_converges_on_a_quadratic():
    objective = quadratic()
    state, records = train(objective, Adam(lr=0.1, steps=600))
    torch.testing.assert_close(state.theta, objective.minimiser, rtol=0, atol=1e-6)
    assert records[-1]["loss"] < 1e-12 < records[0]["loss"]


# --- L-BFGS ------------------------------------------------------------------------------
def test_lbfgs_reaches_the_rosenbrock_minimiser():
    state, _ = train(rosenbrock(), LBFGS(steps=60))
    torch.testing.assert_close(state.theta, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-6)


def test_lbfgs_without_line_search_converges_on_a_quadratic():
    objective = quadratic()
    state, records = train(objective, LBFGS(steps=20, line_search=None))
    # quasi-Newton with unit steps converges superlinearly on a 3-D quadratic
    torch.testing.assert_close(state.theta, objective.minimiser, rtol=0, atol=1e-10)
    assert records[-1]["loss"] < records[0]["loss_before"]


@pytest.mark.parametrize("optimizer", [Adam(steps=1), LBFGS(steps=1)], ids=["adam", "lbfgs"])
def test_steps_do_not_warn(optimizer):
    objective = quadratic()
    theta = objective.init_params(0)
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch's once-per-process warnings, every time
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            optimizer.step(objective, theta, optimizer.init_state(objective, theta), 0)
    finally:
        torch.set_warn_always(before)


# --- Chain -------------------------------------------------------------------------------
def test_chain_runs_its_stages_in_order():
    chain = Adam(lr=0.01, steps=3) >> LBFGS(steps=2)
    assert isinstance(chain, Chain) and chain.steps == 5 and chain.label == "Adam+LBFGS"
    state, records = train(quadratic(), chain)
    assert [r["optimizer"] for r in records] == ["Adam"] * 3 + ["LBFGS"] * 2
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert state.epoch == 5 and state.done == "budget"
    assert "lr" in records[2] and "lr" not in records[3]
    assert "mse" in records[-1]


def test_chains_flatten():
    a, b, c = Adam(steps=1), LevenbergMarquardt(steps=2), Adam(steps=3)
    chain = (a >> b) >> (c >> a)
    assert chain.parts == (a, b, c, a) and chain.stages() == (a, b, c, a)
    assert chain.steps == 7


def test_chain_restarts_the_schedule_of_each_stage():
    chain = Adam(lr=0.1, decay=1.0, steps=2) >> Adam(lr=0.2, decay=1.0, steps=2)
    _, records = train(quadratic(), chain)
    assert [r["lr"] for r in records] == pytest.approx([0.1, 0.05, 0.2, 0.1], rel=1e-15)


# --- the loop ----------------------------------------------------------------------------
def test_advance_stops_at_the_target_loss():
    objective = quadratic()
    start = TrainState(theta=objective.init_params(0))
    state, records = advance(objective, Adam(lr=0.1, steps=1000), start, 1000, target_loss=1e-2)
    assert state.done == "target"
    assert records[-1]["loss"] < 1e-2 <= min(r["loss"] for r in records[:-1])
    assert state.epoch == len(records) < 1000
    # a finished state takes no more steps
    again, more = advance(objective, Adam(lr=0.1, steps=1000), state, 10)
    assert more == [] and torch.equal(again.theta, state.theta)


def test_advance_does_not_modify_its_input_state():
    objective = small_objective()
    start = TrainState(theta=objective.init_params(0))
    theta0 = start.theta.clone()
    advance(objective, LevenbergMarquardt(steps=5), start, 5)
    assert start.epoch == 0 and start.opt_state is None and start.done is None
    assert torch.equal(start.theta, theta0)


def test_advance_records_the_test_mse_when_asked():
    objective = small_objective()
    start = TrainState(theta=objective.init_params(0))
    state, records = advance(objective, LevenbergMarquardt(steps=6), start, 6, eval_every=2)
    assert [("mse" in r) for r in records] == [False, True, False, True, False, True]
    assert records[-1]["mse"] == objective.mse(state.theta)


class NaNAfter:
    """Wraps an objective; its loss turns NaN from the ``n``-th call on."""

    def __init__(self, objective, n):
        self.objective, self.n, self.calls = objective, n, 0

    def init_params(self, seed):
        return self.objective.init_params(seed)

    def loss(self, theta):
        self.calls += 1
        out = self.objective.loss(theta)
        return out * math.nan if self.calls >= self.n else out

    def mse(self, theta):
        return self.objective.mse(theta)


def test_advance_raises_training_diverged_with_the_last_good_state():
    objective = quadratic()
    start = TrainState(theta=objective.init_params(0))
    good, _ = advance(objective, Adam(lr=0.1, steps=10), start, 3)
    # Adam evaluates the loss once per step: the 4th step sees NaN
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 4") as info:
        advance(NaNAfter(objective, 4), Adam(lr=0.1, steps=10), start, 10)
    last = info.value.state
    assert last.epoch == 3
    assert torch.equal(last.theta, good.theta)
    assert last.loss == good.loss


@pytest.mark.parametrize("optimizer", [
    Adam(lr=0.01, steps=20),
    LevenbergMarquardt(steps=20),
    Adam(lr=0.01, steps=4) >> LevenbergMarquardt(steps=10),  # resumes across the stage change
], ids=["adam", "lm", "chain"])
def test_resuming_equals_running_through(optimizer):
    objective = small_objective()
    start = TrainState(theta=objective.init_params(0))
    mid, first = advance(objective, optimizer, start, 3)
    end, second = advance(objective, optimizer, mid, 4)
    through, records = advance(objective, optimizer, start, 7)
    assert end.epoch == through.epoch == 7
    assert torch.equal(end.theta, through.theta)
    assert end.loss == through.loss
    assert (end.stage, end.stage_epoch) == (through.stage, through.stage_epoch)
    assert [r["loss"] for r in first + second] == [r["loss"] for r in records]
    # and resuming from the same state twice gives the same result (advance is pure)
    again, _ = advance(objective, optimizer, mid, 4)
    assert torch.equal(again.theta, end.theta)


def test_lbfgs_resuming_twice_from_one_state_is_reproducible():
    objective = small_objective()
    opt = LBFGS(steps=20, line_search=None, lr=0.1)
    start = TrainState(theta=objective.init_params(0))
    mid, _ = advance(objective, opt, start, 3)
    once, _ = advance(objective, opt, mid, 4)
    twice, _ = advance(objective, opt, mid, 4)
    assert torch.equal(once.theta, twice.theta)


# --- option validation -------------------------------------------------------------------
@pytest.mark.parametrize("build, match", [
    (lambda: Adam(lr=-1), r"Adam\.lr must be positive, got -1"),
    (lambda: Adam(lr=0.0), r"Adam\.lr must be positive"),
    (lambda: Adam(decay=-0.1), r"Adam\.decay must be >= 0"),
    (lambda: Adam(betas=(0.9, 1.0)), r"Adam\.betas must lie in \[0, 1\)"),
    (lambda: Adam(eps=0.0), r"Adam\.eps must be positive"),
    (lambda: Adam(steps=-1), r"Adam\.steps must be an int >= 0, got -1"),
    (lambda: Adam(steps=2.5), r"Adam\.steps must be an int >= 0, got 2\.5"),
    (lambda: Adam(steps=True), r"Adam\.steps must be an int >= 0, got True"),
    (lambda: LBFGS(history=0), r"LBFGS\.history must be a positive int, got 0"),
    (lambda: LBFGS(history=2.0), r"LBFGS\.history must be a positive int"),
    (lambda: LBFGS(lr=-1.0), r"LBFGS\.lr must be positive"),
    (lambda: LBFGS(line_search="armijo"), r"LBFGS\.line_search must be 'strong_wolfe' or None"),
    (lambda: LBFGS(steps=-5), r"LBFGS\.steps must be an int >= 0"),
    (lambda: LevenbergMarquardt(scaling="x"),
     r"LevenbergMarquardt\.scaling must be 'levenberg' or 'marquardt', got 'x'"),
    (lambda: LevenbergMarquardt(damping=0.0), r"LevenbergMarquardt\.damping must be positive"),
    (lambda: LevenbergMarquardt(damping=1.0, max_damping=0.5),
     r"LevenbergMarquardt\.max_damping must exceed damping"),
    (lambda: LevenbergMarquardt(max_tries=0), r"LevenbergMarquardt\.max_tries must be a positive int"),
    (lambda: LevenbergMarquardt(steps="many"), r"LevenbergMarquardt\.steps must be an int >= 0"),
    (lambda: Chain(()), r"Chain needs at least one optimizer"),
    (lambda: Chain((Adam(), "lbfgs")), r"Chain\.parts\[1\] must be a single daskie optimizer"),
    (lambda: Chain((Chain((Adam(),)),)), r"Chain\.parts\[0\] must be a single daskie optimizer"),
])
def test_optimizer_options_are_validated(build, match):
    with pytest.raises(SpecError, match=match):
        build()


def test_non_numeric_learning_rate_is_a_spec_error():
    with pytest.raises(SpecError, match=r"Adam\.lr"):
        Adam(lr="a")
