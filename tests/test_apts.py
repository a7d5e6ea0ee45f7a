"""Trust region, APTS and SAPTS (seed 004): the radius rule, the subproblem solvers, exact
minimisers, APTS(1) == TR, serial == distributed, fit and solve, options."""

import math

import numpy as np
import pytest
import torch

import daskie
from daskie import MLP, QuadratureCollocation
from daskie.runtime import DaskExecutor
from daskie.errors import SpecError
from daskie.fit import fit
from daskie.strategies import APTS, SAPTS
from daskie.train.loop import TrainState, advance
from daskie.train.module import ModuleObjective, Residuals
from daskie.train.objective import Layout
from daskie.train.trust_region import (RadiusRule, SR1Memory, TrustRegion, _solve_eigen,
                                       solve_dense, steihaug_cg)

# the runtime's numbers on short trainings (tests/conftest.py: runtime_numbers)
pytestmark = pytest.mark.usefixtures("runtime_numbers")

SMALL_Q = QuadratureCollocation(net=MLP(hidden=(8, 8)), points=64, nodes=8, test_points=200)


def train_in_process(strategy, objective, **kwargs):
    """The iteration runner in this process (what fit(client="sync") uses)."""
    from daskie.runtime import InProcess
    from daskie.runtime.iterations import train

    return train(strategy, objective, InProcess(), **kwargs)


class LinearLeastSquares:
    """loss = ||A w - b||^2 with data shards of rows k, k + n, ... (losses sum to the full)."""

    def __init__(self, A, b):
        self.A, self.b = A, b
        self.layout = Layout(("w",), (A.shape[1],))
        self.n_data = A.shape[0]

    def init_params(self, seed):
        return torch.zeros(self.A.shape[1], dtype=torch.float64)

    def residuals(self, theta):
        return self.A @ theta - self.b

    def loss(self, theta):
        r = self.residuals(theta)
        return r @ r

    def jacobian(self, theta):
        return self.residuals(theta).detach(), self.A

    def mse(self, theta):
        return float("nan")

    def shard(self, k, n):
        return LinearLeastSquares(self.A[k::n], self.b[k::n])


class Quadratic:
    """loss = (w - m).A (w - m) / 2 from w = 0 (no Jacobian: the SR1 / first-order models)."""

    def __init__(self, A, m):
        self.A, self.m = A, m
        self.layout = Layout(("w",), (len(m),))

    def init_params(self, seed):
        return torch.zeros(len(self.m), dtype=torch.float64)

    def loss(self, theta):
        d = theta - self.m
        return 0.5 * d @ (self.A @ d)

    def mse(self, theta):
        return float("nan")


def linear_problem(rows=40, cols=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    b = torch.randn(rows, generator=g, dtype=torch.float64)
    exact = np.linalg.lstsq(A.numpy(), b.numpy(), rcond=None)[0]
    return LinearLeastSquares(A, b), exact


def steps(objective, optimizer, n):
    """The optimizer's iterates and records over n single steps."""
    state, thetas, records = TrainState(theta=objective.init_params(0)), [], []
    thetas.append(state.theta)
    for _ in range(n):
        state, recs = advance(objective, optimizer, state, 1, final_mse=False)
        thetas.append(state.theta)
        records += recs
    return thetas, records


# --- the trust-region core ------------------------------------------------------------------
def test_radius_rule_is_seed_004_eq_7():
    rule = RadiusRule(alpha=0.25, beta=3.0, eta_1=0.1, eta_2=0.75, min_radius=0.01, max_radius=2.0)
    assert rule.update(0.9, 0.5) == (True, 1.5)      # very successful: grow
    assert rule.update(0.9, 1.0) == (True, 2.0)      # ... up to max_radius
    assert rule.update(0.5, 0.5) == (True, 0.5)      # successful: keep
    assert rule.update(0.1, 0.5) == (True, 0.5)      # rho = eta_1 is accepted
    assert rule.update(0.05, 0.5) == (False, 0.125)  # rejected: shrink
    assert rule.update(-math.inf, 0.02) == (False, 0.01)  # ... down to min_radius
    assert rule.scaled(0.5).max_radius == 1.0 and rule.scaled(0.5).min_radius == 0.005


def test_first_order_model_rho_and_radius_on_a_quadratic():
    A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    m = torch.tensor([10.0, -20.0, 5.0], dtype=torch.float64)
    obj = Quadratic(A, m)
    opt = TrustRegion(model="first-order", radius=4.0, min_radius=1e-3, max_radius=8.0, steps=60)
    thetas, records = steps(obj, opt, 60)
    radius = opt.radius
    for k, rec in enumerate(records):
        w = thetas[k]
        g = A @ (w - m)
        gn = float(g.norm())
        # the step is -radius g / |g|; on a quadratic rho has a closed form
        expect = 1.0 - 0.5 * radius * float(g @ (A @ g)) / gn**3
        assert rec["rho"] == pytest.approx(expect, rel=1e-9, abs=1e-12)
        accepted = expect >= opt.eta_1
        assert rec["accepted"] is accepted
        assert torch.equal(thetas[k + 1], w) is not accepted
        new = (min(2 * radius, 8.0) if expect > opt.eta_2
               else max(0.5 * radius, 1e-3) if expect < opt.eta_1 else radius)
        assert rec["radius"] == pytest.approx(new, rel=1e-12)
        assert 1e-3 <= rec["radius"] <= 8.0
        radius = new
    kinds = {("grow" if r["rho"] > opt.eta_2 else "shrink" if not r["accepted"] else "keep")
             for r in records}
    assert kinds == {"grow", "shrink", "keep"}
    assert records[-1]["loss"] < records[0]["loss"]


def test_sr1_model_converges_to_the_minimiser_of_a_quadratic():
    g = torch.Generator().manual_seed(1)
    M = torch.randn(5, 5, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(5, dtype=torch.float64)
    m = torch.randn(5, generator=g, dtype=torch.float64)
    thetas, records = steps(Quadratic(A, m), TrustRegion(model="sr1", radius=0.1, steps=80), 40)
    np.testing.assert_allclose(thetas[-1].numpy(), m.numpy(), atol=1e-8)
    radii = [r["radius"] for r in records]
    assert max(radii) > 0.1 and all(1e-10 <= r <= 10.0 for r in radii)


def test_gauss_newton_trust_region_solves_linear_least_squares():
    obj, exact = linear_problem()
    thetas, records = steps(obj, TrustRegion(radius=0.01, steps=40), 12)  # model "auto": GN
    np.testing.assert_allclose(thetas[-1].numpy(), exact, rtol=0, atol=1e-12)
    # the model is exact: every step is very successful until the minimiser is reached
    first = [r for r in records if r["rho"] < 0.999]
    assert records[0]["radius"] == 0.02 and all(r["accepted"] for r in records[:5])
    assert len(first) < len(records)


def test_subproblem_solvers_against_the_eigen_solution():
    g = torch.Generator().manual_seed(2)
    for case in range(30):
        M = torch.randn(7, 7, generator=g, dtype=torch.float64)
        B = M + M.T if case % 2 else M @ M.T
        grad = torch.randn(7, generator=g, dtype=torch.float64)
        if case % 5 == 0:  # the hard case: g orthogonal to the lowest eigenvector
            w, V = torch.linalg.eigh(B)
            grad = grad - (V[:, 0] @ grad) * V[:, 0]
        radius = 0.05 + 2.0 * float(torch.rand(1, generator=g))

        def model(s):
            return float(grad @ s + 0.5 * s @ (B @ s))

        best = model(_solve_eigen(B, grad, radius))
        s = solve_dense(B, grad, radius)
        assert float(s.norm()) <= radius * (1 + 1e-12)
        assert model(s) <= best + 0.03 * abs(best)  # Moré-Sorensen stops within 1 % of the radius
        cg = steihaug_cg(lambda v: B @ v, grad, radius)
        assert float(cg.norm()) <= radius * (1 + 1e-12) and model(cg) < 0


def test_sr1_memory_keeps_secant_pairs_and_skips_bad_ones():
    g = torch.Generator().manual_seed(3)
    H = torch.randn(6, 6, generator=g, dtype=torch.float64)
    H = H + H.T  # indefinite: SR1 may represent it
    mem = SR1Memory(size=4)
    for _ in range(6):
        s = torch.randn(6, generator=g, dtype=torch.float64)
        mem = mem.add(s, H @ s)
    assert mem.pairs == 4
    for s, y in zip(mem.S, mem.Y):  # hereditary secant condition on a quadratic
        np.testing.assert_allclose(mem.matvec(s).numpy(), y.numpy(), atol=1e-8)
    s = mem.S[-1]
    assert mem.add(s, mem.matvec(s)) is mem  # u = y - B s = 0 fails the denominator test
    assert mem.add(s, torch.full_like(s, float("nan"))) is mem


# --- APTS -----------------------------------------------------------------------------------
def test_apts_with_one_subdomain_takes_the_trust_region_iterates():
    # One subdomain: the local loss is the global one (zero consistency term), the local TR
    # takes the first TR step (to the boundary of Delta), rho of the sum is 1, so the radius
    # grows as in TR, and line 9 takes the second step: iterate k of APTS is TR's 2k while
    # every step is very successful (the Gauss-Newton model of linear least squares is exact).
    obj, exact = linear_problem()
    tr, _ = steps(obj, TrustRegion(radius=0.01, steps=20), 12)
    apts = []
    out = train_in_process(APTS(subdomains=1, epochs=6, radius=0.01, checkpoint_every=1),
        obj, on_window=lambda w, o: apts.append(o[0].state.theta))
    assert len(apts) == 6
    for k, theta in enumerate(apts, start=1):
        np.testing.assert_allclose(theta.numpy(), tr[2 * k].numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(out[0].state.theta.numpy(), exact, atol=1e-12)


@pytest.mark.parametrize("subdomains", [2, 4])
def test_apts_reaches_the_least_squares_minimiser(subdomains):
    obj, exact = linear_problem(rows=48)
    records = []
    out = train_in_process(APTS(subdomains=subdomains, epochs=40, checkpoint_every=5),
        obj, on_window=lambda w, o: records.extend(o[0].records))
    np.testing.assert_allclose(out[0].state.theta.numpy(), exact, rtol=0, atol=1e-9)
    radii = [r["radius"] for r in records]
    assert all(1e-10 <= r <= 10.0 for r in radii)
    assert any(r["accepted"] for r in records) and any(r["accepted_global"] for r in records)
    calls = [r["grad_calls"] for r in records]
    assert calls == sorted(calls) and calls[0] > subdomains  # every subdomain evaluates


def classifier():
    """Two Gaussian blobs in 2-D, a [2, 6, 2] tanh network, cross entropy."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(30, 2, generator=g, dtype=torch.float64) + 1.5,
                   torch.randn(30, 2, generator=g, dtype=torch.float64) - 1.5])
    y = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(30, dtype=torch.long)])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    return net, torch.nn.CrossEntropyLoss(), (x, y)


def flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_fit_trains_a_torch_module_with_apts():
    net, loss, data = classifier()
    before = flat(net).clone()
    trained, hist = fit(net, loss, data, APTS(subdomains=2, epochs=15, checkpoint_every=4), client="sync")
    with torch.no_grad():
        start = float(loss(net(data[0]), data[1]))
        accuracy = float((trained(data[0]).argmax(1) == data[1]).double().mean())
    assert len(hist) == 15 and hist[-1]["loss"] < 0.1 * start and accuracy == 1.0
    assert torch.equal(flat(net), before)  # the module passed in is untouched
    for key in ("loss", "rho", "radius", "accepted", "rho_global", "accepted_global",
                "grad_calls", "loss_calls", "wall_s", "step_s", "local_steps"):
        assert key in hist[0], key
    assert all(r["step_s"] > 0 for r in hist) and hist[0]["optimizer"] == "APTS"
    assert all(1 <= r["local_steps"] <= 5 for r in hist)


def test_apts_uses_gauss_newton_for_a_module_with_residuals():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(40, 1, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    loss = Residuals(lambda p, y: p - y)
    strategy = APTS(subdomains=2, epochs=12)
    assert strategy.resolve_model(ModuleObjective(net, loss, (x, torch.sin(3 * x)))) == "gauss-newton"
    assert strategy.resolve_model(ModuleObjective(net, torch.nn.MSELoss(), (x, x))) == "sr1"
    _, hist = fit(net, loss, (x, torch.sin(3 * x)), strategy, client="sync")
    assert hist[-1]["loss"] < 1e-3 * hist[0]["loss"]


@pytest.mark.parametrize("strategy", [
    APTS(subdomains=2, epochs=6, checkpoint_every=4),
    APTS(subdomains=3, epochs=4, model="first-order", local_steps=2),
    SAPTS(subdomains=2, minibatch=16, overlap=0.25, epochs=2, checkpoint_every=3),
])
def test_fit_distributed_equals_serial(client, strategy):
    net, loss, data = classifier()
    m1, h1 = fit(net, loss, data, strategy, seed=3, client="sync")
    m2, h2 = fit(net, loss, data, strategy, seed=3, client=client)
    np.testing.assert_allclose(flat(m2).numpy(), flat(m1).numpy(), rtol=0, atol=1e-12)
    for key in ("rho", "radius", "accepted", "grad_calls", "loss_calls"):
        assert [r[key] for r in h1] == [r[key] for r in h2], key
    assert {r["worker"] for r in h2} <= set(DaskExecutor(client).workers())
    assert h1[-1]["loss"] < h1[0]["loss"]


def test_sapts_minibatches_and_microbatches():
    s = SAPTS(subdomains=3, minibatch=20, overlap=0.1, epochs=2)
    assert s.batches(100) == 5 and s.iterations(100) == 10
    seen = []
    for k in range(5):  # one epoch
        rows = s.minibatch_rows(100, k, seed=7)
        assert torch.equal(rows, s.minibatch_rows(100, k, seed=7))  # seeded, repeatable
        assert len(rows) == 22 and len(set(rows.tolist())) == 22  # 20 + 10 % overlap
        prev = s.minibatch_rows(100, (k - 1) % 5, seed=7)
        assert set(rows[:2].tolist()) <= set(prev.tolist())  # shared with the previous one
        seen += rows[2:].tolist()
        micro = [s.microbatch_rows(rows, i) for i in range(3)]
        shared = set(rows[:2].tolist())
        assert all(shared <= set(m.tolist()) for m in micro)  # the overlap is in all of them
        assert set().union(*(set(m.tolist()) for m in micro)) == set(rows.tolist())
    assert sorted(seen) == list(range(100))  # one epoch visits every row once
    assert not torch.equal(s.minibatch_rows(100, 5, seed=7), s.minibatch_rows(100, 0, seed=7))
    assert len(SAPTS(subdomains=2, minibatch=20, microbatch=4, overlap=0.0)
               .microbatch_rows(torch.arange(20), 1)) == 4


def test_solve_apts_on_an_integral_equation_and_resume(client, tmp_path):
    strategy = APTS(subdomains=2, epochs=8, checkpoint_every=3)
    kw = dict(formulation=SMALL_Q, strategy=strategy, seed=1)
    serial = daskie.solve("fredholm1d", client="sync", **kw)
    mine = serial.history_optimizer.values == "APTS"
    losses = serial.history_loss.values[mine]
    assert serial.attrs["strategy"] == "apts" and serial.attrs["epochs"] == 8
    assert serial.attrs["loss"] < 1e-3 * losses[0]
    dist = daskie.solve("fredholm1d", client=client, **kw)
    np.testing.assert_allclose(dist.mu.values, serial.mu.values, rtol=0, atol=1e-12)

    def stop(k, summary):
        if k == 1:
            raise KeyboardInterrupt

    path = tmp_path / "part.zarr"
    with pytest.raises(KeyboardInterrupt):
        daskie.solve("fredholm1d", client="sync", store=path, on_window=stop, **kw)
    resumed = daskie.solve("fredholm1d", client="sync", store=path, resume=True, **kw)
    np.testing.assert_allclose(resumed.mu.values, serial.mu.values, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls, kwargs, field", [
    (APTS, {"subdomains": 0}, "subdomains"),
    (APTS, {"local_steps": 1.5}, "local_steps"),
    (APTS, {"epochs": True}, "epochs"),
    (APTS, {"checkpoint_every": 0}, "checkpoint_every"),
    (APTS, {"radius": -1.0}, "radius"),
    (APTS, {"radius": 20.0}, "radius"),
    (APTS, {"max_radius": 0.0, "min_radius": 0.0}, "max_radius"),
    (APTS, {"min_radius": -1.0}, "min_radius"),
    (APTS, {"alpha": 1.0}, "alpha"),
    (APTS, {"beta": 0.5}, "beta"),
    (APTS, {"eta_1": 0.8}, "eta_2"),
    (APTS, {"eta_1": -0.1}, "eta_1"),
    (APTS, {"eta_2": float("nan")}, "eta_2"),
    (APTS, {"model": "newton"}, "model"),
    (APTS, {"memory": 0}, "memory"),
    (SAPTS, {"minibatch": 0}, "minibatch"),
    (SAPTS, {"microbatch": 0}, "microbatch"),
    (SAPTS, {"microbatch": 200, "minibatch": 256}, "microbatch"),
    (SAPTS, {"overlap": 1.0}, "overlap"),
    (SAPTS, {"subdomains": 8, "minibatch": 4}, "subdomains"),
    (TrustRegion, {"steps": -1}, "steps"),
    (TrustRegion, {"alpha": "half"}, "alpha"),
])
def test_bad_options_name_the_field(cls, kwargs, field):
    with pytest.raises(SpecError, match=rf"{cls.__name__}\.{field}"):
        cls(**kwargs)


def test_objectives_apts_cannot_split_are_refused():
    net, loss, data = classifier()
    with pytest.raises(SpecError, match="SAPTS needs minibatches"):
        daskie.solve("fredholm1d", formulation=SMALL_Q, client="sync", strategy=SAPTS())
    with pytest.raises(SpecError, match="APTS.subdomains=61"):
        fit(net, loss, data, APTS(subdomains=61), client="sync")
    with pytest.raises(SpecError, match="gauss-newton"):
        fit(net, loss, data, APTS(model="gauss-newton"), client="sync")
    obj, _ = linear_problem()
    with pytest.raises(SpecError, match="cannot be split"):
        train_in_process(APTS(subdomains=2), _NoShards(obj))
    assert train_in_process(APTS(subdomains=1, epochs=2), _NoShards(obj))[0].state.epoch == 2


class _NoShards:
    def __init__(self, obj):
        self.layout, self.loss, self.init_params = obj.layout, obj.loss, obj.init_params
        self.jacobian = obj.jacobian
