"""Issue 29: a family's own training defaults (OperatorDefaults): what learn_operator trains
when told no more is exactly the network and optimizer they name, bad defaults are refused
naming the field, and families without them keep the general defaults."""

import numpy as np
import pytest
import torch

from daskie.errors import SpecError
from daskie.nn import MLP, DeepONet
from daskie.operator import (OperatorDataParallel, OperatorLoss, default_net, default_optimizer,
                             fit_operator, learn_operator)
from daskie.problems import Domain, IntegralTerm, Problem
from daskie.problems.families import family
from daskie.problems.parametric import OperatorDefaults, ParametricFamily
from daskie.train import Adam, LeastSquaresHead, LevenbergMarquardt

BOX = Domain((0.0,), (1.0,))


def _build(p):
    a, b, w = p
    return Problem(BOX, f=lambda x: a + b * x[..., 0],
                   terms=[IntegralTerm(lambda x, t: np.exp(-(x - t)[..., 0] ** 2 / w), lam=0.5)])


def _draw(rng):
    return np.array([*rng.normal(size=2), rng.uniform(0.2, 1.0)])


def _family(**kw):
    return ParametricFamily("tiny-width", BOX, _build, _draw, params=("a", "b", "w"),
                            inputs=("f", "w"), reference_n=12, sensors=6, query=7, **kw)


TRAINING = OperatorDefaults(n=30, branch=(10, 10), trunk=(8,), width=6, optimizer="lshead",
                            steps=15, lr=2e-3, decay=1e-3, ridge=1e-8)


def test_learn_operator_without_settings_trains_the_familys_own_defaults(tmp_path):
    fam = _family(training=TRAINING)
    op = learn_operator(fam, data=tmp_path / "d.zarr", client="sync")
    # n = 30: the last min(200, 30 // 5) = 6 held out
    assert op.evaluation.attrs["n_test"] == 6
    net = DeepONet(7, 1, branch=MLP(hidden=(10, 10)), trunk=MLP(hidden=(8,)), width=6)
    assert default_net(fam, 6) == net
    opt = LeastSquaresHead(Adam(lr=2e-3, decay=1e-3, steps=15), ridge=1e-8)
    assert default_optimizer(net, family=fam) == opt
    same, _ = fit_operator(fam, tmp_path / "d.zarr", loss=OperatorLoss(net, skip=True),
                           optimizer=opt, strategy=OperatorDataParallel(shards=2),
                           train=(0, 24), test=(24, 30), client="sync")
    torch.testing.assert_close(op.theta, same.theta, rtol=0, atol=1e-12)
    assert op.theta.numel() == net.n_params()


def test_steps_and_the_optimizer_kind_follow_the_defaults():
    net = DeepONet(7, 1)
    adam = _family(training=OperatorDefaults(optimizer="adam", steps=9, lr=1e-3, decay=0.0))
    assert default_optimizer(net, family=adam) == Adam(lr=1e-3, decay=0.0, steps=9)
    assert default_optimizer(net, 4, family=adam) == Adam(lr=1e-3, decay=0.0, steps=4)
    lm = _family(training=OperatorDefaults(optimizer="lm", steps=7, branch=None))
    assert default_optimizer(net, family=lm) == LevenbergMarquardt(steps=7)
    assert default_net(lm, 6).branch is None  # branch=None: a linear branch


def test_a_family_without_defaults_keeps_the_general_ones():
    fam = family("fredholm-1d")
    net = default_net(fam, 32)
    assert net.branch is None and net.width == 24  # a linear branch for a linear family
    assert default_optimizer(net, family=fam) == default_optimizer(net) \
        == LevenbergMarquardt(steps=100)
    plain = _family()
    assert default_net(plain, 6) == DeepONet(7, 1, branch=MLP(hidden=(32,)),
                                             trunk=MLP(hidden=(20, 20)), width=20)


@pytest.mark.parametrize("kw, field", [
    (dict(n=1), "OperatorDefaults.n"), (dict(branch=()), "OperatorDefaults.branch"),
    (dict(trunk=(8, 0)), "OperatorDefaults.trunk"), (dict(width=0), "OperatorDefaults.width"),
    (dict(optimizer="sgd"), "OperatorDefaults.optimizer"),
    (dict(steps=0), "OperatorDefaults.steps"), (dict(lr=0.0), "OperatorDefaults.lr"),
    (dict(decay=-1.0), "OperatorDefaults.decay"),
    (dict(ridge=float("nan")), "OperatorDefaults.ridge")])
def test_bad_defaults_are_refused_naming_the_field(kw, field):
    with pytest.raises(SpecError, match=field):
        OperatorDefaults(**kw)


def test_a_family_refuses_bad_training_or_point_chunk_naming_it():
    with pytest.raises(SpecError, match="ParametricFamily.training"):
        _family(training={"n": 30})
    with pytest.raises(SpecError, match="ParametricFamily.point_chunk"):
        _family(point_chunk=0)


def test_the_built_in_kernel_families_carry_defaults_and_chunk_the_fine_grid():
    for name in ("fredholm-1d-width", "volterra-1d-decay", "fredholm-2d-fine"):
        fam = family(name)
        assert isinstance(fam.training, OperatorDefaults)
        assert default_optimizer(default_net(fam, 8), family=fam).stages()[0].steps \
            == fam.training.steps
    fine = family("fredholm-2d-fine")
    assert (fine.query ** 2) % fine.point_chunk == 0  # 64 x 64 points in whole chunks
