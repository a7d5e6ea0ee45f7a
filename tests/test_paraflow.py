"""ParaFlow, ParaFlowS and gradient descent: solve and fit, serial == distributed, budgets."""

import numpy as np
import pytest
import torch
import xarray as xr

import daskie
from daskie import MLP, QuadratureCollocation
from daskie.runtime import DaskExecutor
from daskie.errors import SpecError
from daskie.fit import fit
from daskie.strategies import CEPTF, GradientDescent, Monolithic, ParaFlow, ParaFlowS
from daskie.train.module import ModelLoss, ModuleObjective
from daskie.train.objective import Layout

# the runtime's numbers on short trainings (tests/conftest.py: runtime_numbers)
pytestmark = pytest.mark.usefixtures("runtime_numbers")

SMALL_Q = QuadratureCollocation(net=MLP(hidden=(8, 8)), points=64, nodes=8, test_points=200)


def train_in_process(strategy, objective, **kwargs):
    """The iteration runner in this process (what fit(client="sync") uses)."""
    from daskie.runtime import InProcess
    from daskie.runtime.iterations import train

    return train(strategy, objective, InProcess(), **kwargs)


def approximation():
    """Seed 002's approximation set-up, smaller: e^-x sin x on 30 points, [1, 8, 1] sigmoid."""
    torch.manual_seed(0)
    x = torch.linspace(0, 10, 30, dtype=torch.float64)[:, None]
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Sigmoid(), torch.nn.Linear(8, 1)).double()
    return net, (lambda p, t: 0.5 * ((p - t) ** 2).sum()), (x, torch.exp(-x) * torch.sin(x))


def initial_loss(net, loss, data):
    with torch.no_grad():
        return float(loss(net(data[0]), data[1]))


def flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("strategy", [
    ParaFlow(eta=0.01, n_fine=5, n_coarse=2, batch=5, budget=3000),
    ParaFlow(eta=0.01, n_fine=5, n_coarse=3, init="constant", budget=3000),
    ParaFlowS(eta=0.01, n_fine=5, n_coarse=4, batch=7, budget=3000, checkpoint_every=3),
    GradientDescent(eta=0.01, batch=4, budget=800, steps_per_record=9),
])
def test_fit_distributed_equals_serial(client, strategy):
    net, loss, data = approximation()
    m1, h1 = fit(net, loss, data, strategy, seed=4, client="sync")
    m2, h2 = fit(net, loss, data, strategy, seed=4, client=client)
    np.testing.assert_allclose(flat(m2).numpy(), flat(m1).numpy(), rtol=0, atol=1e-12)
    assert [r["grad_calls"] for r in h1] == [r["grad_calls"] for r in h2]
    assert [r["slice"] for r in h1] == [r["slice"] for r in h2]
    assert h1[-1]["loss"] < initial_loss(net, loss, data)
    assert torch.equal(flat(net), flat(approximation()[0]))  # the module passed in is untouched
    if isinstance(strategy, ParaFlow):
        assert {r["worker"] for r in h2} <= set(DaskExecutor(client).workers())


def test_paraflow_budget_matches_hand_count():
    net, loss, data = approximation()  # N = 30 rows
    # one window: 2 fine propagations of 5 steps on 5 rows, 2 * 2 - 1 full gradients
    _, hist = fit(net, loss, data, ParaFlow(eta=0.01, n_fine=5, n_coarse=2, batch=5, budget=1000), client="sync")
    assert [r["grad_calls"] for r in hist] == [140 * i for i in range(1, 8)]  # 1000 // 140 = 7
    assert [r["grad_calls_path"] for r in hist] == [(25 + 3 * 30) * i for i in range(1, 8)]
    _, hist = fit(net, loss, data, ParaFlow(eta=0.01, n_fine=5, n_coarse=3, init="constant",
                                            budget=2000), client="sync")
    # full batch: 3 fine of 5 x 30, 5 G; path: one fine, one G, two corrections
    assert hist[0]["grad_calls"] == 3 * 150 + 5 * 30 and hist[0]["grad_calls_path"] == 150 + 3 * 30
    assert len(hist) == 2000 // 600


def test_fit_returns_the_model_its_history_and_a_summary():
    net, loss, data = approximation()
    out = fit(net, loss, data, ParaFlow(eta=0.01, n_fine=5, n_coarse=2, batch=5, budget=1000),
              seed=2, client="sync")
    model, history = out  # unpacks as the (model, history) pair
    assert model is out.model and history is out.history and len(history) == 7
    s = out.summary
    assert s["strategy"] == "paraflow" and s["seed"] == 2 and s["steps"] == 7
    assert s["loss"] == history[-1]["loss"]
    assert s["loss"] == pytest.approx(initial_loss(model, loss, data), rel=1e-12)  # the model's
    assert s["stopped_by"] == "budget" and s["wall_s"] > 0


def test_paraflows_budget_matches_hand_count():
    net, loss, data = approximation()
    _, hist = fit(net, loss, data, ParaFlowS(eta=0.02, n_fine=4, n_coarse=6, batch=3, budget=5000), client="sync")
    prev = 0
    for r in hist:
        assert r["grad_calls"] - prev == 4 * 3 + 30 * r["coarse_actions"]
        # G(W_0) always; one more per accepted correction beyond the first, none after a break
        expect = r["slice"] + 1 if r["break"] == "increase" else max(r["slice"], 1)
        assert r["coarse_actions"] == expect
        prev = r["grad_calls"]
    assert prev <= 5000 and 5000 - prev < 12 + 30 * 6 + 30
    _, gd = fit(net, loss, data, GradientDescent(eta=0.01, batch=7, budget=1000, steps_per_record=50), client="sync")
    assert gd[-1]["grad_calls"] == 7 * (1000 // 7) and len(gd) == 3


class Quadratic:
    """L(w) = w^2 / 2 with one data row: every quantity of ParaFlowS has a closed form."""

    layout = Layout(("w",), (1,))
    n_data = 1

    def init_params(self, seed):
        return torch.ones(1, dtype=torch.float64)

    def loss(self, theta):
        return 0.5 * (theta**2).sum()


def test_paraflows_early_break_by_hand():
    # eta = 0.5, N_F = 5: f_0 = 0.5^5 W; eta_G = 2.5 makes G unstable (W -> -1.5 W), so
    # W_2 = f_0 + G(W_1) - g_0 = (0.03125 - 0.046875 + 1.5) W grows: break after one slice.
    records = []
    out = train_in_process(ParaFlowS(eta=0.5, n_fine=5, n_coarse=10, budget=10**6, windows=3),
        Quadratic(), on_window=lambda w, o: records.extend(o[0].records))
    assert [r["slice"] for r in records] == [1, 1, 1]
    assert [r["break"] for r in records] == ["increase"] * 3
    assert [r["coarse_actions"] for r in records] == [2, 2, 2]  # g_0 and G(W_1), not N_G + 1
    assert [r["grad_calls"] for r in records] == [7, 14, 21]
    assert float(out[0].state.theta) == pytest.approx(0.03125**3, rel=1e-12)
    assert out[0].state.done == "windows"


def test_paraflows_without_break_extrapolates():
    # eta_G = 0.5: W_{n+1} = f_0 - 0.5 + 0.5 W_n decreases to the fixed point 2 f_0 - 1.
    records = []
    train_in_process(ParaFlowS(eta=0.1, n_fine=5, n_coarse=8, budget=10**6, windows=1),
        Quadratic(), on_window=lambda w, o: records.extend(o[0].records))
    f0 = 0.9**5
    w = 1.0
    for _ in range(8):
        w = f0 if w == 1.0 else f0 - 0.5 + 0.5 * w
    assert records[0]["slice"] == 8 and records[0]["break"] == "none"
    assert records[0]["loss"] == pytest.approx(0.5 * w * w, rel=1e-12)
    assert records[0]["loss"] < 0.5 * f0**2  # better than the fine propagator alone (Theorem 1)


def test_solve_paraflows_lowers_the_loss(tmp_path):
    ds = daskie.solve("fredholm1d", formulation=SMALL_Q, client="sync", store=tmp_path / "r.zarr",
                      strategy=ParaFlowS(eta=0.05, n_fine=10, n_coarse=5, budget=64 * 300,
                                         checkpoint_every=5))
    mine = ds.history_optimizer.values == "ParaFlowS"
    losses = ds.history_loss.values[mine]
    assert ds.attrs["loss"] < 0.5 * losses[0] and np.all(np.diff(losses) <= 0)
    assert ds.attrs["strategy"] == "paraflows" and ds.attrs["done"] == "budget"
    back = xr.open_zarr(tmp_path / "r.zarr")
    assert back.history_grad_calls.values[mine].max() <= 64 * 300
    assert set(back.history_slice.values[mine].astype(int)) - set(range(6)) == set()


def test_solve_paraflow_distributed_equals_serial_and_resumes(client, tmp_path):
    strategy = ParaFlow(eta=0.05, n_fine=5, n_coarse=2, budget=64 * 120, checkpoint_every=2)
    kw = dict(formulation=SMALL_Q, strategy=strategy, seed=1)
    serial = daskie.solve("fredholm1d", client="sync", **kw)
    dist = daskie.solve("fredholm1d", client=client, **kw)
    np.testing.assert_allclose(dist.mu.values, serial.mu.values, rtol=0, atol=1e-12)
    assert dist.attrs["epochs"] == serial.attrs["epochs"] > 4

    def stop(k, summary):
        if k == 1:
            raise KeyboardInterrupt

    path = tmp_path / "part.zarr"
    with pytest.raises(KeyboardInterrupt):
        daskie.solve("fredholm1d", client="sync", store=path, on_window=stop, **kw)
    resumed = daskie.solve("fredholm1d", client="sync", store=path, resume=True, **kw)
    np.testing.assert_allclose(resumed.mu.values, serial.mu.values, rtol=0, atol=1e-12)
    assert resumed.attrs["epochs"] == serial.attrs["epochs"]


def test_module_objective_interface():
    net, loss, data = approximation()
    obj = ModuleObjective(net, loss, data)
    theta = obj.current_params()
    assert obj.layout.total == theta.numel() == 25 and obj.n_data == 30
    assert float(obj.loss(theta)) == pytest.approx(initial_loss(net, loss, data), rel=1e-14)
    idx = torch.tensor([0, 3, 7])
    assert float(obj.batch_loss(theta, idx)) == pytest.approx(
        initial_loss(net, loss, (data[0][idx], data[1][idx])), rel=1e-14)
    a, b = obj.init_params(3), obj.init_params(3)
    assert torch.equal(a, b) and not torch.equal(a, obj.init_params(4))
    # a ModelLoss sees the model: here the same loss written against it
    obj2 = ModuleObjective(net, ModelLoss(lambda model, x, y: loss(model(x), y)), data)
    assert float(obj2.loss(theta)) == float(obj.loss(theta))
    assert torch.equal(flat(obj.load(theta)), theta)


@pytest.mark.parametrize("cls, kwargs, field", [
    (ParaFlow, {"eta": 0.0}, "eta"),
    (ParaFlow, {"n_fine": 0}, "n_fine"),
    (ParaFlow, {"n_coarse": 1.5}, "n_coarse"),
    (ParaFlow, {"init": "random"}, "init"),
    (ParaFlow, {"budget": 0}, "budget"),
    (ParaFlowS, {"batch": 0}, "batch"),
    (ParaFlowS, {"eta": float("nan")}, "eta"),
    (ParaFlowS, {"windows": 0}, "windows"),
    (ParaFlowS, {"checkpoint_every": True}, "checkpoint_every"),
    (GradientDescent, {"steps_per_record": 0}, "steps_per_record"),
])
def test_bad_parameters_name_the_field(cls, kwargs, field):
    with pytest.raises(SpecError, match=rf"{cls.__name__}\.{field}"):
        cls(**kwargs)


def test_bad_fit_and_solve_arguments_name_them():
    net, loss, data = approximation()
    with pytest.raises(SpecError, match="module"):
        fit("net", loss, data, ParaFlowS())
    with pytest.raises(SpecError, match="iteration strategy"):
        fit(net, loss, data, Monolithic(), client="sync")
    with pytest.raises(SpecError, match="rows"):
        fit(net, loss, (data[0], data[1][:5]), ParaFlowS(), client="sync")
    with pytest.raises(SpecError, match="batch"):
        daskie.solve("fredholm1d", formulation=SMALL_Q, client="sync", strategy=ParaFlowS(batch=8))
    with pytest.raises(SpecError, match="iteration strategy"):
        fit(net, loss, data, CEPTF(), client="sync")


def test_fit_names_an_on_window_that_is_not_callable():
    model = torch.nn.Linear(1, 1).double()
    x = torch.linspace(0, 1, 8, dtype=torch.float64)[:, None]
    with pytest.raises(SpecError, match="on_window must be a callable or None, got 'yes'"):
        fit(model, torch.nn.functional.mse_loss, (x, 2 * x), Monolithic(), client="sync",
            on_window="yes")
