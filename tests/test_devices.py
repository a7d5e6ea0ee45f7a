"""Every tensor on the objective's device: dry runs without a GPU.

Two complementary checks stand in for a GPU on the CPU machines CI has:

* **meta placement**: discretizations built on torch's ``meta`` device (shapes, no numbers);
  every residual, Jacobian and network pass then runs there, and a tensor made on the CPU
  by default meets a meta one and fails ("not on the expected device");
* **the implicit-default trap**: real CPU objectives stepped inside ``torch.device("meta")``,
  where every tensor made without ``device=`` lands on meta and collides with the CPU data
  -- the optimizers and the collective objectives need real numbers (losses, gain ratios),
  so they are checked this way.

And the float32 path against float64 on the catalog, the device a task computes on
(``RunContext.device``, the resource tag), and the group's backend choice.
"""

import dataclasses

import numpy as np
import pytest
import torch

from daskie import LevenbergMarquardt, OrderReduction, QuadratureCollocation
from daskie.collectives import local_groups, run_threads
from daskie.collectives.group import backend_for
from daskie.errors import PlanError, SpecError
from daskie.formulations.stein import Stein
from daskie.nn import MLP, MX, TTMLP, DeepONet, Int8
from daskie.nn.stages import StageSplit
from daskie.problems import catalog
from daskie.train import LBFGS, Adam, Chain, Objective, TrainState, advance
from daskie.train.collective import PartitionedObjective, ShardedObjective
from daskie.train.trust_region import TrustRegion

META = torch.device("meta")
SMALL_Q = QuadratureCollocation(net=MLP(hidden=(6, 6)), points=24, test_points=16)
SMALL_OR = OrderReduction(net=MLP(hidden=(6,)), points=16, aux_points=16, test_points=16)


def trap():
    """Tensors made without ``device=`` go to meta, where they cannot meet the CPU's."""
    return torch.device("meta")


# --- formulations: residual and Jacobian on meta ------------------------------------------
FORMULATIONS = [
    ("E1", SMALL_Q), ("E2", SMALL_Q), ("E3", SMALL_Q), ("E4", SMALL_Q),
    ("abel", SMALL_Q),  # weakly singular: product Gauss-Jacobi, graded
    ("lshape", SMALL_Q),  # a domain with a hole: rules per cell
    ("nvolterra1d", SMALL_Q),
    ("hd-volterra-d4", dataclasses.replace(SMALL_Q, local_level=2)),  # separable, Smolyak
    ("hd-fredholm-d4", dataclasses.replace(SMALL_Q, qmc_nodes=32)),  # shared Sobol rule
    ("E1", SMALL_OR), ("E3", SMALL_OR),
    ("E1", dataclasses.replace(SMALL_OR, constraints="loss", bc_points=8)),
    ("E1", dataclasses.replace(SMALL_OR, derivative=Stein(samples=2))),
    ("E1", QuadratureCollocation(net=MLP(hidden=(5,), activation="gelu"), points=12,
                                 test_points=8)),  # no closed-form tangent: vmap(grad)
]


@pytest.mark.parametrize("name,formulation", FORMULATIONS,
                         ids=[f"{n}-{f.label}-{i}" for i, (n, f) in enumerate(FORMULATIONS)])
def test_every_formulation_residual_and_jacobian_run_on_meta(name, formulation):
    disc = formulation.discretize(catalog.get(name), seed=0, device=META)
    assert disc.device == META and disc.dtype == torch.float64
    obj = Objective(disc)
    theta = obj.init_params(0)
    assert theta.device == META
    r = obj.residuals(theta)
    r2, J = obj.jacobian(theta)
    assert r.device == META and J.device == META
    assert J.shape == (r.numel(), obj.layout.total) and r2.shape == r.shape
    # the generic Jacobian (no linear parts: vmap of jvp through the residual map) too
    generic = Objective(dataclasses.replace(disc, linear_parts=None))
    _, Jg = generic.jacobian(theta)
    assert Jg.device == META and Jg.shape == J.shape
    # data shards are placed the same way
    if name == "E1":
        part = formulation.discretize(catalog.get(name), shard=(1, 2), device=META)
        assert Objective(part).jacobian(theta)[1].device == META


def test_placed_discretizations_hold_the_cpu_numbers_in_their_dtype():
    problem = catalog.get("E2")
    cpu = SMALL_OR.discretize(problem, seed=3)
    f32 = SMALL_OR.discretize(problem, seed=3, dtype=torch.float32)
    theta = Objective(cpu).init_params(1)
    for key, ev in cpu.evaluations.items():
        assert f32.evaluations[key].points.dtype == torch.float32
        torch.testing.assert_close(f32.evaluations[key].points.double(), ev.points,
                                   rtol=1e-7, atol=1e-7)
    r64 = Objective(cpu).residuals(theta)
    r32 = Objective(f32).residuals(theta)  # theta moves to float32 inside
    assert r32.dtype == torch.float32
    torch.testing.assert_close(r32.double(), r64, rtol=1e-4, atol=1e-5)
    with pytest.raises(SpecError, match="floating-point"):
        SMALL_Q.discretize(problem, dtype=torch.int64)


# --- networks on meta ------------------------------------------------------------------------
NETS = [MLP(hidden=(5, 4), activation=a) for a in ("tanh", "sin", "softplus", "sigmoid", "gelu")] + [
    TTMLP(hidden=(8, 8), ranks=2), MLP(hidden=(6, 6), quant=Int8()), MLP(hidden=(8, 8), quant=MX()),
    TTMLP(hidden=(8, 8), quant=Int8())]


@pytest.mark.parametrize("net", NETS, ids=lambda n: f"{type(n).__name__}-{n.activation}-{n.quant}")
def test_every_network_runs_on_meta(net):
    theta = net.init_params(3, torch.Generator().manual_seed(0)).to(META)
    z = torch.zeros(10, 3, dtype=torch.float64, device=META)
    assert net.apply(theta, z).shape == (10,) and net.apply(theta, z).device == META
    tangent = net.apply_tangent(theta, z, 1)
    if tangent is not None:
        assert tangent[1].device == META
    jac = net.point_jacobian(theta, z)
    if jac is not None:
        assert jac.shape == (10, net.n_params(3)) and jac.device == META
        fused = net.point_jacobian(theta, z, row_weights=torch.ones(5, 2, dtype=torch.float64,
                                                                       device=META))
        assert fused.shape == (5, net.n_params(3)) and fused.device == META
    plus, minus = net.apply_pairs(theta, z, z)
    assert plus.device == META and minus.device == META


def test_deeponet_and_layer_stages_run_on_meta():
    net = DeepONet(6, 2, branch=MLP(hidden=(7,)), trunk=MLP(hidden=(5,)), width=4)
    theta = net.init_params(8, torch.Generator().manual_seed(0)).to(META)
    z = torch.zeros(9, 8, dtype=torch.float64, device=META)
    assert net.apply(theta, z).device == META
    assert net.point_jacobian(theta, z).shape == (9, net.n_params())
    f = torch.zeros(3, 6, dtype=torch.float64, device=META)
    x = torch.zeros(4, 2, dtype=torch.float64, device=META)
    assert net.operator(theta, f, x).shape[:2] == (3, 4)
    assert net.head_features(theta, f).device == META
    split = StageSplit.balanced(MLP(hidden=(6, 6, 6)), 2, 2)
    th = MLP(hidden=(6, 6, 6)).init_params(2, torch.Generator().manual_seed(0)).to(META)
    h, t = split.forward(0, th, torch.zeros(5, 2, dtype=torch.float64, device=META), axis=1)
    h, t = split.forward(1, th, h, t, axis=1)
    assert h.shape == (5, 1) and h.device == META and t.device == META


# --- one step of every optimizer under the implicit-default trap ------------------------------
@pytest.fixture(scope="module")
def e1_objective():
    return Objective(SMALL_Q.discretize(catalog.get("E1"), seed=0))


OPTIMIZERS = [
    Adam(steps=2), LBFGS(steps=2),
    LevenbergMarquardt(steps=2), LevenbergMarquardt(steps=2, scaling="levenberg"),
    LevenbergMarquardt(steps=2, solver="cg", scaling="levenberg"),
    TrustRegion(steps=2), TrustRegion(steps=2, model="sr1"), TrustRegion(steps=2, model="first-order"),
    Chain((Adam(steps=1), LevenbergMarquardt(steps=1))),
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=[
    "adam", "lbfgs", "lm-direct-marquardt", "lm-direct-levenberg", "lm-cg", "trust-region-gn",
    "trust-region-sr1", "trust-region-first-order", "chain-adam-lm"])
def test_one_step_of_every_optimizer_makes_no_tensor_on_an_implicit_device(e1_objective, optimizer):
    state = TrainState(theta=e1_objective.init_params(0))
    reference, _ = advance(e1_objective, optimizer, state, 2, final_mse=False)
    with trap():
        got, records = advance(e1_objective, optimizer, state, 2, final_mse=False)
    assert len(records) == 2 and got.theta.device.type == "cpu"
    assert torch.equal(got.theta, reference.theta)  # the trap changed nothing but the default


def test_least_squares_head_warm_start_and_minibatch_steps_make_no_implicit_tensor(e1_objective):
    from daskie.train.gradient_flow import gradient_steps, generator
    from daskie.train.module import ModuleObjective
    from daskie.train.warm_start import fit_to

    theta = e1_objective.init_params(0)
    problem = e1_objective.disc.problem
    with trap():
        fitted = fit_to(e1_objective, problem.exact_at, theta, steps=2)
    assert fitted.device.type == "cpu" and not torch.equal(fitted, theta)
    module = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    x = torch.linspace(0, 1, 20, dtype=torch.float64).reshape(10, 2)
    obj = ModuleObjective(module, torch.nn.MSELoss(), (x, x.sum(1, keepdim=True)))
    th = obj.init_params(0)
    with trap():
        out = gradient_steps(obj, th, 0.1, 2, 4, generator(0, 1), obj.n_data)
    assert out.device.type == "cpu" and not torch.equal(out, th)


def test_the_least_squares_head_step_makes_no_implicit_tensor(tmp_path):
    from daskie.operator import OperatorLoss, TrainingSet
    from daskie.operator.data import sensor_points, solve_block
    from daskie.problems.families import family
    from daskie.store.dataset import OperatorDataset
    from daskie.train import LeastSquaresHead

    fam = family("fredholm-1d")
    store = OperatorDataset.create(tmp_path / "d.zarr", {"n": 16, "block": 8, "family": fam.describe()},
                                   sensor_points(fam, 8), sensor_points(fam, 5), fam.n_params)
    for b in range(2):
        store.write_block(b, solve_block(fam, 0, 8 * b, 8 * b + 8, store.sensors, store.query))
    net = DeepONet(8, 1, branch=MLP(hidden=(6,)), trunk=MLP(hidden=(6,)), width=4)
    data = TrainingSet(str(tmp_path / "d.zarr"), fam, (0, 12), (12, 16))
    for loss in (OperatorLoss(net), OperatorLoss(net, data=1.0, physics=1.0, quadrature=8)):
        meta = Objective(loss.discretize(data, device=META))  # the operator's residual on meta
        assert meta.jacobian(meta.init_params(0))[1].device == META
    obj = Objective(OperatorLoss(net).discretize(data))
    opt = LeastSquaresHead(Adam(steps=2))
    state = TrainState(theta=obj.init_params(0))
    reference, _ = advance(obj, opt, state, 2, final_mse=False)
    with trap():
        got, _ = advance(obj, opt, state, 2, final_mse=False)
    assert torch.equal(got.theta, reference.theta)


# --- collective objectives under the trap ------------------------------------------------------
def _collective_steps(group, theta, kind):
    local = Objective(SMALL_OR.discretize(catalog.get("E1"),
                                          shard=(group.rank, group.size) if kind == "rows" else None))
    with trap():
        if kind == "rows":
            obj = ShardedObjective(local, group)
        else:
            obj = PartitionedObjective(local, group, [("F0.1",), ("mu", "F0.2")])
        loss, g = obj.value_and_grad(theta)
        _, A, b = obj.normal_equations(theta)
        state, _ = advance(obj, LevenbergMarquardt(steps=1), TrainState(theta=theta), 1,
                           final_mse=False)
    return loss, g, A, b, state.theta, group.backend


@pytest.mark.parametrize("kind", ["rows", "columns"])
def test_collective_objectives_make_no_implicit_tensor_and_agree_on_gloo(kind):
    full = Objective(SMALL_OR.discretize(catalog.get("E1")))
    theta = full.init_params(2)
    loss, g = full.value_and_grad(theta)
    with local_groups(2) as groups:
        out = run_threads(groups, _collective_steps, [(theta, kind)] * 2)
    for l_, g_, A_, b_, th_, backend in out:
        assert backend == "gloo"  # CPU ranks
        assert l_ == pytest.approx(loss, rel=1e-12)
        torch.testing.assert_close(g_, g, rtol=1e-10, atol=1e-13)
    assert torch.equal(out[0][4], out[1][4])


def _staged_steps(group, theta):
    from daskie.runtime.stages import StagedObjective

    local = Objective(SMALL_Q.discretize(catalog.get("E1")))
    with trap():
        obj = StagedObjective(local, group, stages=2, micro_batches=2)
        loss, g = obj.value_and_grad(theta)
        state, _ = advance(obj, Adam(steps=1), TrainState(theta=theta), 1, final_mse=False)
    return loss, g, state.theta


def test_layer_stages_make_no_implicit_tensor():
    full = Objective(SMALL_Q.discretize(catalog.get("E1")))
    theta = full.init_params(1)
    loss, g = full.value_and_grad(theta)
    with local_groups(2) as groups:
        out = run_threads(groups, _staged_steps, [(theta,)] * 2)
    for l_, g_, th_ in out:
        assert l_ == pytest.approx(loss, rel=1e-12)
        torch.testing.assert_close(g_, g, rtol=1e-10, atol=1e-13)
    assert torch.equal(out[0][2], out[1][2])


def test_backend_for_picks_nccl_only_when_every_rank_is_on_cuda():
    assert backend_for(["cuda", "cuda:1"]) == "nccl"
    assert backend_for([torch.device("cuda", 0)] * 4) == "nccl"
    assert backend_for(["cuda", "cpu"]) == "gloo"
    assert backend_for(["cpu", "cpu"]) == "gloo"
    assert backend_for(["meta"]) == "gloo"
    with pytest.raises(SpecError, match="at least one rank"):
        backend_for([])


# --- float32 against float64 on the catalog ---------------------------------------------------
@pytest.mark.parametrize("name", ["E1", "E2", "E3", "E4"])
def test_float32_adam_follows_float64_on_the_catalog(name):
    problem = catalog.get(name)
    form = QuadratureCollocation(net=MLP(hidden=(8, 8)), points=64, test_points=64)
    runs = {}
    for dtype in (torch.float64, torch.float32):
        obj = Objective(form.discretize(problem, seed=0, dtype=dtype))
        state = TrainState(theta=obj.init_params(0).double())
        state, records = advance(obj, Adam(steps=30, lr=1e-2), state, 30)
        assert state.theta.dtype == torch.float64  # back in the dtype it came in
        runs[dtype] = (records[0]["loss"], records[-1]["loss"], records[-1]["mse"])
    first64, last64, mse64 = runs[torch.float64]
    first32, last32, mse32 = runs[torch.float32]
    assert first32 == pytest.approx(first64, rel=1e-5)
    assert last32 == pytest.approx(last64, rel=1e-2)  # 30 steps: rounding, not a new path
    assert last64 < 0.5 * first64  # the steps did something
    assert mse32 == pytest.approx(mse64, rel=1e-2)


# --- which device a task computes on ----------------------------------------------------------
def test_device_strings_are_checked_with_the_field_named():
    from daskie.runtime.devices import check_device, resolve_device

    assert check_device(None) is None
    assert check_device("cpu") == "cpu" and check_device("cuda:1") == "cuda:1"
    assert check_device(torch.device("meta")) == "meta"
    for bad in ("gpu", "cpu:1", "cuda:x", 3):
        with pytest.raises(SpecError, match="device must be"):
            check_device(bad)
    with pytest.raises(SpecError,
                       match=r"solve\(device=\) must be None, 'cpu', 'cuda' or 'cuda:N', got 'meta'"):
        check_device("meta", "solve(device=)", meta=False)
    if not torch.cuda.is_available():
        with pytest.raises(PlanError, match="no CUDA device"):
            resolve_device("cuda")


def test_a_gpu_tag_decides_the_device_of_its_own_task_only(monkeypatch):
    from daskie.runtime import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def gpu_task():
        assert devices.require_device("GPU", "window 0") == "cuda"
        return devices.task_device()

    def cpu_task():
        devices.require_device("CPU", "window 1")
        return devices.task_device()

    assert gpu_task() == "cuda"
    assert devices.task_device() == "cpu"  # the task has ended: its decision went with it
    assert cpu_task() == "cpu"
    assert gpu_task() == "cuda"

    def untagged_task():  # a polish or init task: never asked
        return devices.task_device()

    assert untagged_task() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PlanError, match="tagged GPU, but torch sees no CUDA device"):
        devices.require_device("GPU", "window 2")


def test_run_context_device_places_the_objective_and_results_come_back_on_the_cpu():
    from daskie.runtime.context import RunContext, WindowOutput, objective_for
    from daskie.runtime.state import WorkerState

    problem = catalog.get("E1")
    ctx = RunContext(problem, SMALL_Q, Adam(steps=1), 0, 0.0, None, "tok-devices", device="meta")
    with WorkerState().current():
        obj = objective_for(ctx)
        assert obj.device == META and ctx.build().device == META
        cpu = objective_for(dataclasses.replace(ctx, device=None))
        assert cpu.device.type == "cpu"
        assert objective_for(dataclasses.replace(ctx, device="cpu")) is cpu  # one cache entry
    theta = cpu.init_params(0)
    out = WindowOutput(0, TrainState(theta=theta), {"mu": theta})
    assert out.state.theta is theta and out.params["mu"] is theta  # CPU: kept, not copied
    with pytest.raises(SpecError, match="device must be"):
        with WorkerState().current():
            objective_for(dataclasses.replace(ctx, device="tpu"))


def test_a_formulation_without_device_argument_is_refused_off_the_cpu():
    from daskie.runtime.context import RunContext, objective_for
    from daskie.runtime.state import WorkerState

    class Old(QuadratureCollocation):
        def discretize(self, problem, seed=0):  # an older user formulation
            return super().discretize(problem, seed=seed)

    old = Old(net=MLP(hidden=(4,)), points=8, test_points=8)
    ctx = RunContext(catalog.get("E1"), old, Adam(steps=1), 0, 0.0, None, "tok-old")
    with WorkerState().current():
        assert objective_for(ctx).device.type == "cpu"  # the CPU as before
        with pytest.raises(SpecError, match="takes no device argument"):
            objective_for(dataclasses.replace(ctx, device="meta"))


def test_solve_on_an_explicit_cpu_device_equals_the_default_and_bad_devices_are_named():
    import numpy as np
    import pytest

    import daskie
    from daskie import MLP, LevenbergMarquardt, QuadratureCollocation
    from daskie.errors import SpecError

    small = QuadratureCollocation(net=MLP(hidden=(6, 6)), points=32, test_points=50)
    kw = dict(formulation=small, optimizer=LevenbergMarquardt(steps=3), client="sync",
              check=False, init="random")
    np.testing.assert_array_equal(daskie.solve("fredholm1d", device="cpu", **kw).mu.values,
                                  daskie.solve("fredholm1d", **kw).mu.values)
    with pytest.raises(SpecError, match="device must be None, 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        daskie.solve("fredholm1d", device="tpu", **kw)
    if not torch.cuda.is_available():
        with pytest.raises(SpecError, match="torch sees no CUDA device"):
            daskie.solve("fredholm1d", device="cuda", **kw)


def test_solve_in_float32_with_adam_is_close_to_float64_and_lm_refuses_it(client):
    import numpy as np
    import pytest

    import daskie
    from daskie import MLP, Adam, LevenbergMarquardt, QuadratureCollocation
    from daskie.errors import SpecError

    small = QuadratureCollocation(net=MLP(hidden=(8, 8)), points=64, test_points=100)
    kw = dict(formulation=small, optimizer=Adam(steps=40), check=False, init="random")
    f64 = daskie.solve("fredholm1d", client="sync", **kw)
    f32 = daskie.solve("fredholm1d", client="sync", dtype="float32", **kw)
    dist = daskie.solve("fredholm1d", client=client, dtype="float32", **kw)
    assert f32.mu.dtype == np.float64  # results stay float64
    assert not np.array_equal(f32.mu.values, f64.mu.values)  # computed in another precision
    np.testing.assert_allclose(f32.mu.values, f64.mu.values, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(f32.mu.values, dist.mu.values)  # serial == cluster
    with pytest.raises(SpecError, match="dtype='float32' is for first-order optimizers"):
        daskie.solve("fredholm1d", client="sync", dtype="float32",
                     optimizer=LevenbergMarquardt(steps=2))
    with pytest.raises(SpecError, match="dtype must be 'float64' or 'float32', got 'half'"):
        daskie.solve("fredholm1d", client="sync", dtype="half")
