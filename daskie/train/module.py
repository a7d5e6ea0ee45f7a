"""Plain torch modules as daskie objectives over one flat parameter vector.

:class:`ModuleObjective` gives a ``torch.nn.Module`` + loss + data the part of
:class:`~daskie.train.objective.Objective`'s interface that first-order strategies use
(ParaFlow, plain gradient descent, and later APTS), so the same strategy code trains an
integral-equation formulation and any torch model:

* ``layout`` (``layout.total``, ``split``, ``join``) over the module's parameters, in
  ``named_parameters()`` order;
* ``init_params(seed)`` -- the module's own initialisation (``reset_parameters`` of each
  layer) under ``torch.manual_seed(seed)``; the module passed in is not changed;
* ``loss(theta)`` on the whole data set and ``batch_loss(theta, index)`` on a subset of
  its rows, both through :func:`torch.func.functional_call`, so ``theta`` can be any tensor
  (a leaf that requires grad, a tensor inside ``torch.func.grad``);
* ``n_data`` -- rows of the data set (the paper's N, the unit of the gradient budget);
* ``mse(theta)`` -- NaN (no exact solution) so records written by shared code stay uniform.

A loss given as :class:`Residuals` (``fn(predictions, *targets) -> residual per row``) makes
the objective a least-squares one, ``loss = sum r^2``: ``residuals(theta)`` and
``jacobian(theta)`` (per-row parameter gradients under ``vmap``, never ``jacrev`` over the
whole batch) let :class:`~daskie.train.optimizers.LevenbergMarquardt` train any torch model,
e.g. ``daskie.train.train(ModuleObjective(net, Residuals(lambda p, y: p - y), (x, y)),
LevenbergMarquardt())``.

The loss is called as ``loss_fn(module(inputs), *targets)`` for ``data = (inputs,
*targets)`` -- the torch convention (``torch.nn.MSELoss()``, cross entropy, ...). A loss that
needs the model itself (physics-informed losses differentiate the network with respect to
its inputs) is wrapped in :class:`ModelLoss` and called as ``fn(model, *data)``, where
``model(x)`` evaluates the module with the candidate parameters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import functional_call

from daskie.errors import SpecError
from daskie.train.objective import Layout

__all__ = ["ModelLoss", "ModuleObjective", "Residuals"]


@dataclass(frozen=True)
class ModelLoss:
    """A loss that receives the model, not its predictions: ``fn(model, *batch) -> scalar``.

    Parameters
    ----------
    fn : callable
        ``fn(model, *batch)``; ``model(x)`` runs the module with the parameters being
        evaluated, ``batch`` is the data tuple restricted to the current rows.
    """

    fn: Callable

    def __post_init__(self):
        if not callable(self.fn):
            raise SpecError(f"ModelLoss.fn must be callable, got {self.fn!r}")


@dataclass(frozen=True)
class Residuals:
    """A least-squares loss: ``fn(predictions, *targets)`` returns the residuals, one row (or
    one row of values) per data row; the loss is their sum of squares. A residual of row i
    must depend on row i of the data only (per-row Jacobians rely on it).

    Parameters
    ----------
    fn : callable
        ``fn(predictions, *targets) -> tensor`` with the data's row axis first.
    """

    fn: Callable

    def __post_init__(self):
        if not callable(self.fn):
            raise SpecError(f"Residuals.fn must be callable, got {self.fn!r}")


def _as_data(data):
    if isinstance(data, torch.Tensor):
        data = (data,)
    if not isinstance(data, (tuple, list)) or not data:
        raise SpecError("data must be a tensor or a non-empty tuple of tensors (inputs, *targets), "
                        f"got {type(data).__name__}")
    data = tuple(data)
    for i, t in enumerate(data):
        if not isinstance(t, torch.Tensor) or t.ndim == 0:
            raise SpecError(f"data[{i}] must be a torch tensor with a leading row axis, got "
                            f"{type(t).__name__}")
    n = data[0].shape[0]
    for i, t in enumerate(data):
        if t.shape[0] != n:
            raise SpecError(f"data[{i}] has {t.shape[0]} rows but data[0] has {n}: every tensor "
                            "of data needs the same number of rows")
    if n == 0:
        raise SpecError("data has no rows")
    return data


class ModuleObjective:
    """A torch module, a loss and a data set as a function of one flat parameter vector.

    Parameters
    ----------
    module : torch.nn.Module
        The model; its parameters define the layout. It is copied, never trained in place.
    loss_fn : callable, ModelLoss or Residuals
        ``loss_fn(module(inputs), *targets)``, a :class:`ModelLoss`, or :class:`Residuals`
        (least squares: Levenberg-Marquardt can train it).
    data : tensor or tuple of tensors
        ``(inputs, *targets)`` sharing their first (row) axis.

    The objective computes where the module's parameters are (``device``, ``dtype``): put the
    module and the data on one device before (``module.to("cuda")``, ``x.cuda()``).
    """

    def __init__(self, module, loss_fn, data):
        if not isinstance(module, torch.nn.Module):
            raise SpecError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not (callable(loss_fn) or isinstance(loss_fn, (ModelLoss, Residuals))):
            raise SpecError(f"loss_fn must be callable, got {loss_fn!r}")
        params = dict(module.named_parameters())
        if not params:
            raise SpecError("module has no parameters to train")
        self.module = copy.deepcopy(module)
        self.loss_fn = loss_fn
        self.data = _as_data(data)
        where = next(self.module.parameters()).device
        for i, t in enumerate(self.data):
            if t.device != where:
                raise SpecError(f"data[{i}] is on {t.device} but the module's parameters are on "
                                f"{where}: put the module and the data on one device")
        self.layout = Layout(tuple(params), tuple(p.numel() for p in params.values()))
        self._shapes = {n: p.shape for n, p in params.items()}
        self._buffers = dict(self.module.named_buffers())

    @property
    def n_data(self) -> int:
        """Rows of the data set (N of the gradient budget)."""
        return int(self.data[0].shape[0])

    @property
    def dtype(self):
        """The dtype of the module's parameters."""
        return next(self.module.parameters()).dtype

    @property
    def device(self):
        """The device of the module's parameters and data: the objective computes there."""
        return next(self.module.parameters()).device

    # --- parameters ----------------------------------------------------------------------
    def init_params(self, seed: int) -> torch.Tensor:
        """The module's own initialisation under ``torch.manual_seed(seed)``, flattened."""
        fresh = copy.deepcopy(self.module)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for m in fresh.modules():
                if m is not fresh and hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        return torch.cat([p.detach().reshape(-1) for p in fresh.parameters()]).clone()

    def current_params(self) -> torch.Tensor:
        """The module's present parameters, flattened (to continue training it)."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()

    def params_dict(self, theta) -> dict:
        """``{name: tensor}`` views of ``theta`` shaped like the module's parameters."""
        return {n: v.view(self._shapes[n]) for n, v in self.layout.split(theta).items()}

    def load(self, theta) -> torch.nn.Module:
        """A copy of the module holding parameters ``theta``."""
        out = copy.deepcopy(self.module)
        with torch.no_grad():
            for p, v in zip(out.parameters(), self.params_dict(theta.detach()).values()):
                p.copy_(v)
        return out

    # --- values --------------------------------------------------------------------------
    def _model(self, theta):
        params = {**self.params_dict(theta), **self._buffers}
        return lambda *x: functional_call(self.module, params, x)

    def _loss(self, theta, batch):
        model = self._model(theta)
        if isinstance(self.loss_fn, ModelLoss):
            return self.loss_fn.fn(model, *batch)
        if isinstance(self.loss_fn, Residuals):
            r = self.loss_fn.fn(model(batch[0]), *batch[1:]).reshape(-1)
            return r @ r
        return self.loss_fn(model(batch[0]), *batch[1:])

    def _require_residuals(self):
        if not isinstance(self.loss_fn, Residuals):
            raise SpecError("Levenberg-Marquardt needs residuals: pass the loss as "
                            "daskie.train.module.Residuals(fn) with fn(predictions, *targets)")

    def residuals(self, theta):
        """The residual vector on the whole data set (loss = its sum of squares)."""
        self._require_residuals()
        return self.loss_fn.fn(self._model(theta)(self.data[0]), *self.data[1:]).reshape(-1)

    def jacobian(self, theta, chunk: int = 4096):
        """``(r, J)`` with ``J = dr/dtheta`` from per-row parameter gradients (``vmap`` of
        ``jacrev`` over one row at a time, ``chunk`` rows per batch)."""
        from torch.func import jacrev, vmap

        self._require_residuals()
        theta = theta.detach()

        def row(th, *one):
            batch = tuple(t.unsqueeze(0) for t in one)
            return self.loss_fn.fn(self._model(th)(batch[0]), *batch[1:]).reshape(-1)

        per_row = vmap(jacrev(row), in_dims=(None, *[0] * len(self.data)))
        n = self.n_data
        J = torch.cat([per_row(theta, *(t[s:s + chunk] for t in self.data)).reshape(-1, theta.numel())
                       for s in range(0, n, chunk)])
        with torch.no_grad():
            r = self.residuals(theta)
        return r, J

    def loss(self, theta):
        """Loss on the whole data set."""
        return self._loss(theta, self.data)

    def batch_loss(self, theta, index):
        """Loss on the rows ``index`` (a LongTensor) of the data set."""
        index = index.to(self.device)
        return self._loss(theta, tuple(t[index] for t in self.data))

    def mse(self, theta) -> float:
        """No exact solution for a plain model: NaN."""
        return float("nan")
