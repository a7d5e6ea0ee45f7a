"""Tensor-train layers, quantized training and Stein-estimator residuals (seed 003).

TT layers against the dense layers they factor (full ranks: the same numbers), per-point
Jacobians against autograd and the formulation's Jacobian against ``jacrev``; the quantizers
against their error bounds; the Stein estimator against the autodiff derivative within its
own standard error; Levenberg-Marquardt training a TT network.
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from daskie.errors import SpecError
from daskie.formulations import OrderReduction
from daskie.formulations.stein import Stein, stein_derivative
from daskie.nn import MLP, MX, TTMLP, Int8
from daskie.nn.quant import quantize_pair, straight_through
from daskie.nn.tt import factorize, tt_decompose, tt_full_ranks, tt_reconstruct
from daskie.problems import catalog
from daskie.train import LevenbergMarquardt, Objective


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _autograd_jacobian(net, theta, z):
    return vmap(grad(lambda p, zz: net.apply(p, zz)), in_dims=(None, 0))(theta, z)


# --- tensor-train layers ------------------------------------------------------------------

@pytest.mark.parametrize("out_f,in_f", [((4, 8), (4, 4)), ((2, 4, 4), (2, 2, 4)), ((3, 5), (2, 6))])
def test_tt_full_ranks_reconstruct_the_matrix(out_f, in_f):
    w = torch.randn(math.prod(out_f), math.prod(in_f), generator=_gen(), dtype=torch.float64)
    cores = tt_decompose(w, out_f, in_f)
    assert [c.shape[3] for c in cores[:-1]] == list(tt_full_ranks(out_f, in_f))
    assert torch.allclose(tt_reconstruct(cores), w, atol=1e-12, rtol=0)
    # truncated ranks are an approximation, and a worse one than full ranks
    low = tt_reconstruct(tt_decompose(w, out_f, in_f, ranks=(1,) * (len(out_f) - 1)))
    assert (low - w).abs().max() > 1e-3


def test_tt_network_at_full_ranks_equals_the_dense_network():
    dense = MLP(hidden=(16, 16, 16))
    tt = TTMLP(hidden=(16, 16, 16), ranks=10**6, cores=2)
    assert tt.ranks == (10**6,)  # capped at the full rank per layer
    theta = dense.init_params(3, _gen(1))
    tt_theta = tt.params_from_dense(theta, 3)
    assert tt_theta.numel() == tt.n_params(3) > dense.n_params(3)  # full ranks store more
    z = torch.rand(40, 3, generator=_gen(2), dtype=torch.float64)
    assert torch.allclose(tt.apply(tt_theta, z), dense.apply(theta, z), atol=1e-12, rtol=0)
    for axis in range(3):
        _, d_tt = tt.apply_tangent(tt_theta, z, axis)
        _, d_dense = dense.apply_tangent(theta, z, axis)
        assert torch.allclose(d_tt, d_dense, atol=1e-12, rtol=0)
    for w_tt, w_dense in zip(tt.layers(tt_theta, 3), dense.layers(theta, 3)):
        assert torch.allclose(w_tt[0], w_dense[0], atol=1e-12, rtol=0)


def test_tt_counts_parameters_and_bytes():
    tt = TTMLP(hidden=(32, 32, 32), ranks=2, cores=3)
    # 32 = 2 x 4 x 4; cores (1,2,2,2), (2,4,4,2), (2,4,4,1): 8 + 64 + 32 = 104 per TT layer
    assert factorize(32, 3) == (2, 4, 4)
    assert tt.n_params(2) == (2 + 1) * 32 + 2 * (104 + 32) + 33
    assert tt.dense_params(2) == MLP(hidden=(32, 32, 32)).n_params(2)
    assert tt.dense_params(2) / tt.n_params(2) > 5
    assert tt.nbytes(2) == 8 * tt.n_params(2)
    assert sum(tt.layer_params(2)) == tt.n_params(2)
    assert tt.init_params(2, _gen()).numel() == tt.n_params(2)


def test_tt_init_has_the_dense_variance():
    tt = TTMLP(hidden=(64, 64), ranks=4, cores=3)
    ws = [list(tt.layers(tt.init_params(2, _gen(s)), 2))[1][0] for s in range(20)]
    var = torch.stack(ws).var().item()
    assert 0.6 < var / (2.0 / 128) < 1.6


@pytest.mark.parametrize("net", [
    TTMLP(hidden=(16, 16, 16), ranks=3, cores=2),
    TTMLP(hidden=(8, 12), ranks=(2,), cores=2, activation="sin"),
    MLP(hidden=(12, 12), quant=Int8()),
    MLP(hidden=(12, 12), quant=Int8(weight_scale="row")),
    MLP(hidden=(12, 12), quant=MX(block=4), activation="sigmoid"),
    TTMLP(hidden=(16, 16), ranks=2, quant=Int8()),
    TTMLP(hidden=(16, 16), ranks=2, quant=Int8(weight_scale="row", activations=False)),
], ids=["tt", "tt-sin", "int8", "int8-row", "mx", "tt-int8", "tt-int8-row-wonly"])
def test_point_jacobians_equal_autograd(net):
    theta = net.init_params(3, _gen(3))
    theta = theta + 0.1 * torch.randn(theta.shape, generator=_gen(4), dtype=torch.float64)  # biases != 0
    z = torch.rand(9, 3, generator=_gen(5), dtype=torch.float64)
    jac = net.point_jacobian(theta, z)
    assert torch.allclose(jac, _autograd_jacobian(net, theta, z), atol=1e-12, rtol=0)
    c = torch.rand(3, 3, generator=_gen(6), dtype=torch.float64)
    fused = net.point_jacobian(theta, z, row_weights=c)
    assert torch.allclose(fused, torch.einsum("mq,mqp->mp", c, jac.view(3, 3, -1)), atol=1e-12, rtol=0)
    # the tangent of the (quantized) network, straight-through, equals forward-mode autodiff
    _, tangent = net.apply_tangent(theta, z, 1)
    e = torch.zeros_like(z)
    e[:, 1] = 1.0
    assert torch.allclose(tangent, torch.func.jvp(lambda zz: net.apply(theta, zz), (z,), (e,))[1],
                          atol=1e-12, rtol=0)


@pytest.mark.parametrize("net,derivative", [
    (TTMLP(hidden=(8, 8), ranks=2), "autodiff"),
    (MLP(hidden=(8, 8), quant=Int8()), "autodiff"),
    (MLP(hidden=(8, 8)), Stein(samples=3, width=0.05)),
    (TTMLP(hidden=(8, 8), ranks=2, quant=MX(block=4)), Stein(samples=2, width=0.05)),
], ids=["tt", "int8", "stein", "tt-mx-stein"])
def test_order_reduction_jacobian_equals_jacrev(net, derivative):
    disc = OrderReduction(net=net, points=24, aux_points=16, derivative=derivative).discretize(
        catalog.get("E3"), seed=0)
    obj = Objective(disc)
    theta = obj.init_params(0)
    r, jac = obj.jacobian(theta)
    assert torch.allclose(r, obj.residuals(theta), atol=1e-14, rtol=0)
    assert torch.allclose(jac, torch.func.jacrev(obj.residuals)(theta), atol=1e-12, rtol=0)


def test_levenberg_marquardt_trains_a_tt_network():
    problem = catalog.get("fredholm1d")
    net = TTMLP(hidden=(16, 16), ranks=2, cores=2)  # 274 parameters in mu, F1
    obj = Objective(OrderReduction(net=net, points=64, aux_points=96).discretize(problem, seed=0))
    theta = obj.init_params(0)
    mse0 = obj.mse(theta)
    lm = LevenbergMarquardt(steps=30, scaling="levenberg")
    state = lm.init_state(obj, theta)
    for k in range(lm.steps):
        theta, state, info = lm.step(obj, theta, state, k)
    # measured: loss 4.5e-7, MSE 1.9e-7 (held-back points) after 30 steps
    assert info["loss"] < 2e-6
    assert obj.mse(theta) < 1e-6 < mse0 * 1e-3


# --- quantization -------------------------------------------------------------------------

def test_int8_error_within_half_a_step():
    x = torch.randn(37, 23, generator=_gen(7), dtype=torch.float64) * 3
    q = Int8()
    deq = q.dequantize_weight(x)
    step = x.abs().max() / 127
    assert (deq - x).abs().max() <= step / 2 * (1 + 1e-12)
    assert (deq - x).abs().max() > step / 4  # the rounding is real
    assert torch.allclose(deq / step, torch.round(deq / step), atol=1e-9)  # on the grid
    assert (deq / step).abs().max() <= 127 + 1e-9
    h = torch.rand(5, 40, generator=_gen(8), dtype=torch.float64) * torch.tensor([[1.0], [0.1], [1e-3], [2.0], [0.0]],
                                                                              dtype=torch.float64)
    row_step = h.abs().amax(dim=1, keepdim=True) / 127
    err = (q.dequantize_activation(h) - h).abs()
    assert torch.all(err <= row_step / 2 * (1 + 1e-12))
    assert torch.all(q.dequantize_activation(h)[4] == 0)  # a zero row stays zero


def test_int8_row_scales_keep_each_row_within_half_its_own_step():
    x = torch.randn(9, 14, generator=_gen(20), dtype=torch.float64)
    x[3] *= 1e-4  # a row of small weights
    x[6] = 0.0  # and a zero row
    q = Int8(weight_scale="row")
    deq, step = q.dequantize_weight(x), q.step_weight(x)
    for i in range(9):
        row_step = x[i].abs().max() / 127 if x[i].abs().max() > 0 else 1.0
        assert torch.all(step[i] == row_step)  # one scale per output row, of that row only
        err = (deq[i] - x[i]).abs()
        assert err.max() <= row_step / 2 * (1 + 1e-12)
        assert torch.allclose(deq[i] / row_step, torch.round(deq[i] / row_step), atol=1e-9)
    assert torch.all(deq[6] == 0)
    # the small row keeps 8 bits of its own; one scale for the tensor rounds it to zero
    assert (deq[3] - x[3]).abs().max() <= x[3].abs().max() / 254 * (1 + 1e-12)
    assert torch.all(Int8().dequantize_weight(x)[3] == 0)
    # a row's scale is a function of that row only: changing another row leaves it unchanged
    y = x.clone()
    y[0] *= 50
    assert torch.equal(q.dequantize_weight(y)[1:], deq[1:])
    assert not torch.equal(Int8().dequantize_weight(y)[1:], Int8().dequantize_weight(x)[1:])
    assert q.weight_bytes((9, 14)) == 9 * 14 + 9 * 4 and Int8().weight_bytes((9, 14)) == 9 * 14 + 4
    assert (q.label, Int8(activations=False).label, Int8(bits=12).label) == ("int8-row", "int8-wonly", "int12")


def test_int8_weights_only_leaves_the_activations_exact():
    theta = MLP(hidden=(10, 10)).init_params(3, _gen(21))
    z = torch.rand(17, 3, generator=_gen(22), dtype=torch.float64)
    q = Int8(weight_scale="row", activations=False)
    h = torch.rand(4, 10, generator=_gen(23), dtype=torch.float64)
    assert torch.equal(q.activation(h), h) and torch.all(q.step_activation(h) == 0)
    # the network is the float64 network of the per-row rounded weights, computed by hand
    hand, offset, sizes = z, 0, [3, 10, 10, 1]
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = theta[offset:offset + a * b].view(b, a)
        step = w.abs().amax(dim=1, keepdim=True) / 127
        w = torch.round(w / step) * step
        bias = theta[offset + a * b:offset + a * b + b]
        offset += a * b + b
        hand = hand @ w.T + bias
        if k < 2:
            hand = torch.tanh(hand)
    assert torch.allclose(MLP(hidden=(10, 10), quant=q).apply(theta, z), hand[:, 0], atol=1e-14, rtol=0)
    assert not torch.allclose(MLP(hidden=(10, 10), quant=Int8(weight_scale="row")).apply(theta, z),
                              hand[:, 0], atol=1e-6, rtol=0)  # with activations it differs


def test_mx_error_within_the_block_bound():
    x = torch.randn(20, 13, generator=_gen(9), dtype=torch.float64)
    x[:8, :8] *= 1e-3  # a tile of small values keeps its own scale
    q = MX(block=8)
    step = q.step_weight(x)
    assert torch.all(torch.log2(step) == torch.round(torch.log2(step)))  # powers of two
    err = (q.dequantize_weight(x) - x).abs()
    assert torch.all(err <= step / 2)
    for r0 in range(0, 20, 8):
        for c0 in range(0, 13, 8):
            tile = x[r0:r0 + 8, c0:c0 + 8]
            assert torch.all(step[r0:r0 + 8, c0:c0 + 8] == step[r0, c0])  # one scale per tile
            assert err[r0:r0 + 8, c0:c0 + 8].max() <= tile.abs().max() / 127
    # square tiles: W^T quantizes to the transpose of q(W)
    assert torch.equal(q.dequantize_weight(x.T), q.dequantize_weight(x).T)
    h = torch.randn(6, 20, generator=_gen(10), dtype=torch.float64)
    hs = q.step_activation(h)
    assert torch.all((q.dequantize_activation(h) - h).abs() <= hs / 2)
    assert torch.all(hs[:, :8] == hs[:, :1])  # one scale per 8 features of a row


def test_straight_through_gradient_and_float64_master_weights():
    w = torch.randn(6, 4, generator=_gen(11), dtype=torch.float64, requires_grad=True)
    c = torch.randn(6, 4, generator=_gen(12), dtype=torch.float64)
    for q in (Int8(), MX(block=2)):
        (g,) = torch.autograd.grad((q.weight(w) * c).sum(), w)
        assert torch.equal(g, c)
        assert q.weight(w).dtype == torch.float64
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(straight_through(x, torch.round(x)).sum(), x)
    assert torch.equal(g, torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("quant", [Int8(), Int8(weight_scale="row"), MX(block=4)], ids=["int8", "int8-row", "mx"])
def test_quantized_network_is_batch_independent_and_shards_sum_to_the_full_gradient(quant):
    net = MLP(hidden=(10, 10), quant=quant)
    theta = net.init_params(2, _gen(13))
    z = torch.rand(30, 2, generator=_gen(14), dtype=torch.float64)
    whole = net.apply(theta, z)
    parts = torch.cat([net.apply(theta, z[i:i + 7]) for i in range(0, 30, 7)])
    # no scale depends on the batch (BLAS may round a batch of 7 differently in the last bit)
    assert torch.allclose(whole, parts, atol=1e-14, rtol=0)
    assert not torch.allclose(whole, MLP(hidden=(10, 10)).apply(theta, z), atol=1e-6)  # it quantizes
    form = OrderReduction(net=net, points=32, aux_points=16)
    problem = catalog.get("E1")
    full = Objective(form.discretize(problem, seed=0))
    theta = full.init_params(0)
    loss, g = torch.func.grad_and_value(full.loss)(theta)[::-1]
    shards = [Objective(form.discretize(problem, seed=0, shard=(k, 2))) for k in range(2)]
    sl = sum(float(s.loss(theta)) for s in shards)
    sg = sum(torch.func.grad(s.loss)(theta) for s in shards)
    assert abs(sl - float(loss)) < 1e-13 * max(1.0, float(loss))
    assert torch.allclose(sg, g, atol=1e-12, rtol=0)


def test_quantization_storage():
    dense = MLP(hidden=(16, 16))
    assert dense.nbytes(2) == 8 * dense.n_params(2)
    q8 = MLP(hidden=(16, 16), quant=Int8())
    weights = 2 * 16 + 16 * 16 + 16
    assert q8.nbytes(2) == weights + 3 * 4 + 8 * (16 + 16 + 1)
    mx = MLP(hidden=(16, 16), quant=MX(block=8))
    assert mx.nbytes(2) == weights + (2 + 4 + 2) + 8 * 33  # one exponent byte per tile


# --- Stein estimator ----------------------------------------------------------------------

def _third_derivative(fn, z, axis):
    e = torch.zeros_like(z)
    e[:, axis] = 1.0
    d1 = lambda p: torch.func.jvp(fn, (p,), (e,))[1]  # noqa: E731
    d2 = lambda p: torch.func.jvp(d1, (p,), (e,))[1]  # noqa: E731
    return torch.func.jvp(d2, (z,), (e,))[1]


def test_stein_mean_matches_autodiff_within_its_standard_error():
    net = MLP(hidden=(12, 12))
    theta = net.init_params(3, _gen(15))
    z = torch.rand(6, 3, generator=_gen(16), dtype=torch.float64)
    fn = lambda p: net.apply(theta, p)  # noqa: E731
    exact = net.apply_tangent(theta, z, 2)[1]
    # plain estimator: unbiased for the smoothed derivative F' + s^2 F'''/2 (here ~1e-8)
    with torch.no_grad():
        est, se = stein_derivative(fn, z, 2, Stein(samples=4000, width=1e-3, seed=3, normalized=False))
    assert torch.all(se > 0)
    assert torch.all((est - exact).abs() <= 4 * se)
    # and its standard error is what theory says: sqrt(2 / S) |F'| per point
    assert torch.allclose(se, (2.0 / 4000) ** 0.5 * exact.abs(), rtol=0.15)


def test_normalized_stein_carries_only_the_smoothing_bias():
    # D = F' + s^2 F''' sum(e^4) / (6 sum(e^2)) + O(s^4); with many draws sum e^4 / sum e^2 -> 3
    net = MLP(hidden=(12, 12))
    theta = net.init_params(3, _gen(15))
    z = torch.rand(6, 3, generator=_gen(16), dtype=torch.float64)
    fn = lambda p: net.apply(theta, p)  # noqa: E731
    exact = net.apply_tangent(theta, z, 2)[1]
    third = _third_derivative(fn, z, 2).detach()
    width = 0.05
    with torch.no_grad():
        est, se = stein_derivative(fn, z, 2, Stein(samples=4000, width=width, seed=3))
    assert torch.all((est - exact).abs() > 10 * se)  # the gap is not noise ...
    bias = width ** 2 * third / 2
    assert torch.all((est - exact - bias).abs() <= 4 * se + 0.1 * bias.abs())  # ... it is s^2 F'''/2


def test_normalized_stein_is_exact_along_a_linear_direction():
    z = torch.rand(10, 2, generator=_gen(17), dtype=torch.float64)
    fn = lambda p: torch.sin(3 * p[:, 0]) + (2.0 + p[:, 0]) * p[:, 1]  # noqa: E731
    est, se = stein_derivative(fn, z, 1, Stein(samples=3, width=0.3, normalized=True))
    assert torch.allclose(est, 2.0 + z[:, 0], atol=1e-12, rtol=0)
    assert torch.all(se < 1e-10)


def test_stein_residuals_shard_like_the_serial_ones():
    form = OrderReduction(net=MLP(hidden=(6,)), points=20, aux_points=13, derivative=Stein(samples=3))
    problem = catalog.get("E2")
    full = form.discretize(problem, seed=1)
    for k in range(2):  # odd point counts: shard 0 holds one row more than shard 1
        half = form.discretize(problem, seed=1, shard=(k, 2))
        for key in ("dF0.1", "dF0.2"):
            n = full.evaluations[key].size // 6
            keep = np.arange(k, n, 2)
            pts = full.evaluations[key].points.view(n, 6, -1)[keep].reshape(-1, 3 if key == "dF0.2" else 4)
            assert torch.equal(pts, half.evaluations[key].points)
    assert full.info["derivative"] == "stein(3, 0.01, normalized)"


def test_difference_based_quantization_keeps_small_differences():
    net = MLP(hidden=(16, 16), quant=Int8())
    plain = MLP(hidden=(16, 16))
    theta = net.init_params(2, _gen(18))
    z = torch.rand(50, 2, generator=_gen(19), dtype=torch.float64)
    d = torch.zeros_like(z)
    d[:, 1] = 1e-4
    exact = plain.apply(theta, z + d) - plain.apply(theta, z - d)
    fp, fm = net.apply_pairs(theta, z + d, z - d)
    pointwise = net.apply(theta, z + d) - net.apply(theta, z - d)
    err_pair, err_point = (fp - fm - exact).abs().max(), (pointwise - exact).abs().max()
    assert err_pair < 0.05 * exact.abs().max()
    assert err_point > 5 * err_pair
    # the pair scheme itself: m +- d with both quantized on their own scales
    hp, hm = torch.rand(4, 8, dtype=torch.float64), torch.rand(4, 8, dtype=torch.float64)
    a, b = quantize_pair(Int8(), hp, hm)
    assert torch.allclose(a - b, 2 * Int8().dequantize_activation(0.5 * (hp - hm)), atol=1e-15)


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("make,match", [
    (lambda: TTMLP(hidden=(7, 7)), "width 7"),
    (lambda: TTMLP(hidden=(16,)), "at least two hidden"),
    (lambda: TTMLP(hidden=(16, 16), ranks=(2, 2)), "TTMLP.ranks"),
    (lambda: TTMLP(hidden=(16, 16), cores=1), "TTMLP.cores"),
    (lambda: MLP(quant="int8"), "MLP.quant"),
    (lambda: Int8(bits=1), "Int8.bits"),
    (lambda: Int8(weight_scale="column"), "Int8.weight_scale"),
    (lambda: Int8(activations=1), "Int8.activations"),
    (lambda: MX(block=0), "MX.block"),
    (lambda: Stein(width=0.0), "Stein.width"),
    (lambda: Stein(samples=0), "Stein.samples"),
    (lambda: OrderReduction(derivative="fd"), "derivative"),
])
def test_bad_options_name_the_field(make, match):
    with pytest.raises(SpecError, match=match):
        make()


# --- through the runtime ------------------------------------------------------------------

@pytest.mark.usefixtures("runtime_numbers")
def test_quantized_tt_stein_data_parallel_equals_serial_and_one_process(client):
    """Quantization scales depend on no batch or rank: data-parallel LM of a quantized TT
    network with Stein residuals gives the serial numbers on a cluster, and one process's."""
    form = OrderReduction(net=TTMLP(hidden=(8, 8), ranks=2, quant=Int8()), points=64, aux_points=64,
                          derivative=Stein(samples=2, width=0.05))
    e1 = catalog.get("E1")
    opt = LevenbergMarquardt(steps=3, scaling="levenberg")
    dist, mono = _serial_cluster_and_one_process(e1, form, opt, client)
    assert dist.attrs["n_params"] == mono.attrs["n_params"] == sum(
        s.n_params for s in form.discretize(e1).submodels.values())


@pytest.mark.usefixtures("runtime_numbers")
def test_per_row_int8_adam_data_parallel_equals_serial_and_one_process(client):
    """Per-row weight scales depend on the replicated master weights only: data-parallel Adam
    of a per-row int8 network gives the serial numbers on a cluster, and one process's."""
    from daskie import Adam

    form = OrderReduction(net=MLP(hidden=(8, 8), quant=Int8(weight_scale="row")), points=64, aux_points=64)
    _serial_cluster_and_one_process(catalog.get("E2"), form, Adam(lr=1e-2, steps=4), client)


def _serial_cluster_and_one_process(problem, form, opt, client):
    """Data-parallel training in this process == on the cluster (bitwise), and == one
    process (1e-9); returns the cluster's and the one process's results."""
    from daskie import DataParallel, Monolithic, solve

    mono = solve(problem, form, Monolithic(), opt, client="sync")
    serial = solve(problem, form, DataParallel(shards=2, window=2), opt, client="sync")
    dist = solve(problem, form, DataParallel(shards=2, window=2), opt, client=client)
    np.testing.assert_array_equal(serial["mu"].values, dist["mu"].values)
    assert serial.attrs["loss"] == dist.attrs["loss"]
    np.testing.assert_allclose(dist["mu"].values, mono["mu"].values, rtol=0, atol=1e-9)
    return dist, mono


# --- the benchmark's optimizer option and quantization floor ------------------------------

def _compression_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compression.py"
    spec = importlib.util.spec_from_file_location("compression_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_compression_benchmark_trains_every_network_with_the_chosen_optimizer(tmp_path):
    import json

    from daskie import Adam

    bench = _compression_bench()
    small = ["--problems", "E1", "--points", "32", "--aux-points", "32", "--width", "6", "--steps", "5"]
    out = tmp_path / "adam.json"
    bench.main([*small, "--optimizer", "adam", "--lr", "3e-3", "--only", "dense,int8,int8row",
                "--out", str(out)])
    recs = {r["quant"] or "dense": r for r in json.loads(out.read_text())}
    assert {r["optimizer"] for r in recs.values()} == {"adam"} and recs["int8-row"]["lr"] == 3e-3
    assert recs["int8-row"]["network"] == "int8" and recs["int8-row"]["steps"] == 5
    # the dense record is Adam(lr=3e-3) on the same objective, step for step
    form = OrderReduction(net=MLP(hidden=(6, 6, 6)), points=32, aux_points=32)
    obj = Objective(form.discretize(catalog.get("E1"), seed=0))
    theta, opt = obj.init_params(0), Adam(lr=3e-3, steps=5)
    state = opt.init_state(obj, theta)
    for k in range(5):
        theta, state, info = opt.step(obj, theta, state, k)
    assert recs["dense"]["mse"] == pytest.approx(obj.mse(theta), rel=1e-12)
    # the floor: the trained dense parameters read through each format, and each quantized
    # record carries its own format's figure
    ptq = recs["dense"]["ptq_mse"]
    assert ptq["int16"] == pytest.approx(recs["dense"]["mse"], rel=1e-3)  # 16 bits: all but exact
    assert ptq["int8"] != pytest.approx(recs["dense"]["mse"], rel=1e-6)
    quantized = Objective(OrderReduction(net=MLP(hidden=(6, 6, 6), quant=Int8(weight_scale="row")),
                                         points=32, aux_points=32).discretize(catalog.get("E1"), seed=0))
    assert ptq["int8-row"] == pytest.approx(quantized.mse(theta), rel=1e-12)
    assert recs["dense"]["ptq_loss"]["int8-row"] == pytest.approx(float(quantized.loss(theta)),
                                                                  rel=1e-12)
    assert recs["int8-row"]["ptq_floor_loss"] == recs["dense"]["ptq_loss"]["int8-row"]
    assert recs["int8"]["ptq_floor"] == ptq["int8"] and recs["int8-row"]["ptq_floor"] == ptq["int8-row"]
    assert recs["int8"]["mse_ratio"] == pytest.approx(recs["int8"]["mse"] / recs["dense"]["mse"])
    # and LM, the default
    bench.main([*small, "--only", "dense", "--out", str(tmp_path / "lm.json")])
    (lm,) = json.loads((tmp_path / "lm.json").read_text())
    assert lm["optimizer"] == "lm" and lm["lr"] is None and lm["mse"] < recs["dense"]["mse"]
