"""A formulation's least-squares objective over one flat parameter vector.

:class:`Objective` is what every optimizer sees: ``residuals(theta)`` with
``loss = residuals @ residuals``, ``loss(theta)``, ``jacobian(theta)`` and ``mse(theta)`` on the
held-back test points. ``theta`` concatenates the parameters of the trainable sub-models;
:meth:`Objective.restrict` freezes the others (block-coordinate windows).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, jvp, vmap

from daskie.errors import SpecError

__all__ = ["Layout", "Objective", "loss_and_grad"]

#: Points per chunk when forming per-point parameter gradients (bounds memory).
JAC_CHUNK = 4096

#: torch's forward-mode AD (``torch.func.jvp``) keeps its dual levels in process-global state:
#: two threads using it at once fail ("no level exists"). Threads of one process (worker
#: threads, in-process ranks) take turns through this lock; it is never held across a
#: collective operation.
FORWARD_AD = threading.RLock()


@dataclass(frozen=True)
class Layout:
    """Where each sub-model's parameters live in the flat vector."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        """Total number of parameters."""
        return sum(self.sizes)

    @property
    def offsets(self) -> dict[str, tuple[int, int]]:
        """``name -> (start, stop)``."""
        out, start = {}, 0
        for n, s in zip(self.names, self.sizes):
            out[n] = (start, start + s)
            start += s
        return out

    def split(self, theta) -> dict:
        """Views of ``theta`` per sub-model."""
        return {n: theta[a:b] for n, (a, b) in self.offsets.items()}

    def join(self, parts: dict):
        """Concatenate per-sub-model vectors in layout order."""
        return torch.cat([parts[n] for n in self.names])


def loss_and_grad(loss_fn, theta):
    """``(loss, gradient)`` of the scalar ``loss_fn(theta)`` by autograd; the loss is returned
    as a detached 0-d tensor."""
    th = theta.detach().requires_grad_(True)
    loss = loss_fn(th)
    (g,) = torch.autograd.grad(loss, th)
    return loss.detach(), g


def evaluate_one(sub, ev, theta):
    """Value of evaluation ``ev`` (a sub-model or one input derivative) with parameters ``theta``."""
    if ev.derivative is None:
        product = getattr(sub.net, "operator", None) if ev.product is not None else None
        if product is not None and sub.zero_axis is None and sub.affine is None:
            out = product(theta, *ev.product)
            return out.reshape(len(ev.points), *out.shape[2:])
        return sub.apply(theta, ev.points)
    fast = sub.apply_derivative(theta, ev.points, ev.derivative) \
        if hasattr(sub, "apply_derivative") else None
    if fast is not None:
        return fast
    tangent = torch.zeros_like(ev.points)
    tangent[:, ev.derivative] = 1.0
    with FORWARD_AD:
        return jvp(lambda z: sub.apply(theta, z), (ev.points,), (tangent,))[1]


def point_jacobian(sub, ev, theta) -> torch.Tensor:
    """Per-point parameter gradients of ``ev``: shape ``(n_points, n_params)``."""
    k = ev.derivative
    if k is None and sub.affine is not None:  # scale * net + shift: the net's rows, scaled
        plain = dataclasses.replace(sub, affine=None)
        return point_jacobian(plain, ev, theta) * sub.affine(ev.points)[0][:, None]
    if k is None:
        fast = sub.net.point_jacobian(theta, ev.points)
        if fast is not None:
            if sub.zero_axis is not None:
                fast = fast * (ev.points[:, sub.zero_axis] - sub.zero_value)[:, None]
            return fast

    def single(th, z):
        if k is None:
            return sub.apply(th, z)
        e = torch.zeros_like(z)
        e[k] = 1.0
        return jvp(lambda zz: sub.apply(th, zz), (z,), (e,))[1]

    per_point = vmap(grad(single), in_dims=(None, 0))
    pts = ev.points
    with FORWARD_AD:
        return torch.cat([per_point(theta, pts[s:s + JAC_CHUNK])
                          for s in range(0, len(pts), JAC_CHUNK)])


class Objective:
    """Least-squares objective of a :class:`~daskie.formulations.base.Discretization`.

    Parameters
    ----------
    disc : Discretization
    trainable : sequence of str, optional
        Sub-models whose parameters form ``theta`` (default: all).
    frozen : dict, optional
        Parameter vectors of the other sub-models (required when ``trainable`` is a subset).

    Notes
    -----
    The objective computes on its discretization's device, in its dtype (``device`` and
    ``dtype``: where :meth:`Formulation.discretize
    <daskie.formulations.base.Formulation.discretize>` placed it). Every method takes
    ``theta`` from anywhere and moves it there first (a no-op when it is there already: the
    training loop moves a state in once per call of :func:`~daskie.train.loop.advance`);
    what it makes, it makes there. :meth:`solution` and :meth:`accuracy` return numpy (CPU).
    """

    def __init__(self, disc, trainable=None, frozen=None):
        self.disc = disc
        self.device, self.dtype = disc.device, disc.dtype
        names = tuple(disc.submodels) if trainable is None else tuple(trainable)
        self.layout = Layout(names, tuple(disc.submodels[n].n_params for n in names))
        self.frozen = {k: self.place(v.detach()) for k, v in (frozen or {}).items() if k not in names}
        # Only the residual blocks that involve a trainable sub-model matter to it.
        self.blocks = tuple(b for b, subs in disc.couplings.items() if set(subs) & set(names))
        # The residual map reads every evaluation; those of frozen sub-models are constants,
        # computed once.
        self.eval_keys = tuple(disc.evaluations)
        self.trainable_keys = tuple(k for k in self.eval_keys if disc.evaluations[k].submodel in names)
        missing = {disc.evaluations[k].submodel for k in self.eval_keys} - set(names) - set(self.frozen)
        if missing:
            raise ValueError(f"frozen parameters missing for sub-models {sorted(missing)}")
        self._constants = None

    # --- parameters ----------------------------------------------------------------------
    def place(self, tensor):
        """``tensor`` on this objective's device, in its dtype (itself when it is there)."""
        return tensor.to(device=self.device, dtype=self.dtype)

    def init_params(self, seed: int) -> torch.Tensor:
        """Initial flat parameters, on the objective's device; each sub-model draws from its
        own seeded stream, so a sub-model's start does not depend on which others are trained
        with it. Drawn on the CPU in float64 and then moved: the same start on every device."""
        parts = {}
        for i, name in enumerate(self.disc.submodels):
            g = torch.Generator(device="cpu").manual_seed(int(seed) * 1000 + i)
            parts[name] = self.disc.submodels[name].init_params(g)
        return self.place(self.layout.join(parts))

    def _all_params(self, theta) -> dict:
        return {**self.frozen, **self.layout.split(self.place(theta))}

    # --- values --------------------------------------------------------------------------
    def values(self, theta, keys=None) -> dict:
        """Evaluation values ``{key: tensor}`` at ``theta``."""
        d = self.disc
        params = self._all_params(theta)

        def one(k):
            ev = d.evaluations[k]
            return evaluate_one(d.submodels[ev.submodel], ev, params[ev.submodel])

        if self._constants is None:
            with torch.no_grad():
                self._constants = {k: one(k) for k in self.eval_keys if k not in self.trainable_keys}
        return {k: (self._constants[k] if k in self._constants else one(k))
                for k in (self.eval_keys if keys is None else keys)}

    def _stack(self, blocks: dict):
        w = self.disc.weights
        return torch.cat([(w.get(b, 1.0) / blocks[b].numel()) ** 0.5 * blocks[b].reshape(-1)
                          for b in self.blocks])

    def residuals_from_values(self, values: dict):
        """Scaled residual vector from evaluation values (``loss = r @ r``)."""
        return self._stack(self.disc.residual_blocks(values))

    def residuals(self, theta):
        """Scaled residual vector ``r(theta)`` with ``loss = r @ r``."""
        return self.residuals_from_values(self.values(theta))

    def loss(self, theta):
        """Weighted sum of the blocks' mean squared residuals."""
        r = self.residuals(theta)
        return r @ r

    def block_losses(self, theta) -> dict[str, float]:
        """Mean squared residual of each block (for histories)."""
        with torch.no_grad():
            blocks = self.disc.residual_blocks(self.values(theta))
        return {b: float(torch.mean(blocks[b] ** 2)) for b in self.blocks}

    def jacobian(self, theta, values=None):
        """``(r, J)``: residuals and their Jacobian ``dr/dtheta`` of shape ``(n_r, n_params)``.

        ``values`` (optional) are the evaluation values at the current parameters when the
        caller has them already (the model-parallel runtime gathers them from the workers
        that own the other sub-models).

        Built from per-point parameter gradients of each evaluation combined with the
        derivative of the residual map (structured when the formulation provides
        ``linear_parts``, else pushed forward with ``jvp``); never ``jacrev`` over the
        batched residual.
        """
        if self.disc.linear_parts is None:
            return self._jacobian_generic(theta, values)
        d = self.disc
        with torch.no_grad():
            values = self.values(theta) if values is None else values
            blocks = d.residual_blocks(values)
        parts = d.linear_parts(values)
        params = self.layout.split(self.place(theta.detach()))
        offsets = self.layout.offsets
        cache = {}

        def point_jac(key, row_weights=None):
            ev = d.evaluations[key]
            sub = d.submodels[ev.submodel]
            if row_weights is not None and ev.derivative is None:
                w = row_weights
                if sub.zero_axis is not None:
                    w = w * (ev.points[:, sub.zero_axis] - sub.zero_value).view(w.shape)
                if sub.affine is not None:
                    w = w * sub.affine(ev.points)[0].view(w.shape)
                fused = sub.net.point_jacobian(params[ev.submodel], ev.points, row_weights=w)
                if fused is not None:
                    return fused
            if key not in cache:
                cache[key] = point_jacobian(sub, ev, params[ev.submodel])
            jac = cache[key]
            if row_weights is None:
                return jac
            m, q = row_weights.shape
            return torch.einsum("mq,mqp->mp", row_weights, jac.view(m, q, -1))

        rows, res = [], []
        for b in self.blocks:
            rb = blocks[b].reshape(-1)
            scale = (d.weights.get(b, 1.0) / rb.numel()) ** 0.5
            jb = torch.zeros(rb.numel(), self.layout.total, dtype=rb.dtype, device=rb.device)
            for key, (kind, c) in parts[b].items():
                name = d.evaluations[key].submodel
                if name not in offsets:
                    continue
                lo, hi = offsets[name]
                # in place: no temporary as large as the Jacobian block
                if kind == "diag":
                    jb[:, lo:hi].addcmul_(point_jac(key), c[:, None])
                elif kind == "dense":
                    jb[:, lo:hi].addmm_(c, point_jac(key))
                else:
                    jb[:, lo:hi] += point_jac(key, row_weights=c)
            rows.append(jb.mul_(scale))  # in place: J is the largest array of a step
            res.append(scale * rb)
        if len(rows) == 1:
            return res[0], rows[0]
        return torch.cat(res), torch.cat(rows)

    def _jacobian_generic(self, theta, values=None):
        """Jacobian by pushing per-point gradients forward through the residual map."""
        with torch.no_grad():
            values = self.values(theta) if values is None else values
        keys = self.eval_keys
        primals = tuple(values[k] for k in keys)

        def resid(*vals):
            return self.residuals_from_values(dict(zip(keys, vals)))

        r = resid(*primals).detach()
        cols = []
        params = self.layout.split(self.place(theta.detach()))
        d = self.disc
        for name in self.layout.names:
            sub = d.submodels[name]
            mine = [k for k in keys if d.evaluations[k].submodel == name]
            jac = {k: point_jacobian(sub, d.evaluations[k], params[name]) for k in mine}
            p = self.layout.sizes[self.layout.names.index(name)]

            def push(*tangent_cols):
                it = iter(tangent_cols)
                tangents = tuple(next(it) if k in jac else torch.zeros_like(values[k]) for k in keys)
                return jvp(resid, primals, tangents)[1]

            if mine:
                with FORWARD_AD:
                    cols.append(vmap(push, in_dims=1, out_dims=1)(*(jac[k] for k in mine)))
            else:
                cols.append(torch.zeros(len(r), p, dtype=r.dtype, device=r.device))
        return r, torch.cat(cols, dim=1)

    # --- a least-squares output layer (LeastSquaresHead) ---------------------------------
    def _head(self):
        head = self.disc.head
        if head is None or head.submodel not in self.layout.names:
            raise SpecError(
                f"the {self.disc.info.get('formulation', 'formulation')!r} objective has no "
                "output layer to solve by least squares (LeastSquaresHead needs a loss linear "
                "in it: an OperatorLoss with the data loss only, one output)")
        return head

    def head_sums(self, theta):
        """This objective's row sums of the least-squares head's normal equations
        (``Discretization.head``); data-parallel objectives sum them over the ranks."""
        head = self._head()
        return head.sums(self._all_params(theta.detach())[head.submodel])

    def with_head(self, theta, sums, ridge: float):
        """``theta`` with the head solved from the summed ``sums``."""
        head = self._head()
        parts = self.layout.split(self.place(theta.detach()))
        parts[head.submodel] = head.solve(parts[head.submodel], sums, ridge)
        return self.layout.join(parts)

    def head_mask(self):
        """Boolean mask of the entries of ``theta`` that :meth:`with_head` sets."""
        head = self._head()
        lo, hi = self.layout.offsets[head.submodel]
        out = torch.zeros(self.layout.total, dtype=torch.bool, device=self.device)
        out[lo:hi] = head.mask(hi - lo, device=self.device)
        return out

    # --- second-order pieces (Levenberg-Marquardt, trust region) --------------------------
    def jacobian_bytes(self) -> int:
        """Bytes of the dense Jacobian ``(n_residuals, n_params)`` in the objective's dtype."""
        return self.dtype.itemsize * self._n_residuals() * self.layout.total

    def _n_residuals(self) -> int:
        if getattr(self, "_rows", None) is None:
            with torch.no_grad():
                self._rows = int(self.residuals(self.init_params(0)).numel())
        return self._rows

    def normal_equations(self, theta):
        """``(loss, J^T J, J^T r)`` at ``theta`` (data-parallel objectives sum them over shards)."""
        r, J = self.jacobian(theta)
        return float(r @ r), J.T @ J, J.T @ r

    def value_and_grad(self, theta):
        """``(loss, dloss/dtheta)`` at ``theta``."""
        loss, g = loss_and_grad(self.loss, theta)
        return float(loss), g

    def gauss_newton_product(self, theta, v):
        """``J^T (J v)`` without forming J (one jvp and one vjp through the residuals)."""
        theta, v = self.place(theta.detach()), self.place(v)
        with FORWARD_AD:
            _, jv = jvp(self.residuals, (theta,), (v,))
        _, pull = torch.func.vjp(self.residuals, theta)
        return pull(jv)[0]

    # --- accuracy ------------------------------------------------------------------------
    def solution(self, theta, points) -> np.ndarray:
        """mu at ``points`` (numpy ``(n, d)``) from the solution sub-model, as numpy (float64,
        computed on the objective's device)."""
        params = self._all_params(theta)
        sub = self.disc.submodels[self.disc.solution]
        with torch.no_grad():
            z = self.place(torch.as_tensor(np.asarray(points, dtype=float)))
            out = sub.apply(params[sub.name].detach(), z)
            return out.to(device="cpu", dtype=torch.float64).numpy()

    def accuracy(self, theta) -> dict[str, float]:
        """MSE, relative L2 and max error against the exact solution on the held-back test
        points (NaN when the problem has no exact solution)."""
        d = self.disc
        if d.test_exact is None:
            return {"mse": float("nan"), "rel_l2": float("nan"), "max_abs_error": float("nan")}
        err = self.solution(theta, d.test_points) - d.test_exact
        return {"mse": float(np.mean(err**2)),
                "rel_l2": float(np.linalg.norm(err) / np.linalg.norm(d.test_exact)),
                "max_abs_error": float(np.max(np.abs(err)))}

    def mse(self, theta) -> float:
        """Mean squared error against the exact solution on the held-back test points."""
        return self.accuracy(theta)["mse"]

    def restrict(self, trainable, theta) -> "Objective":
        """The objective over ``trainable`` sub-models with the rest frozen at ``theta``'s values."""
        return Objective(self.disc, trainable, frozen={**self.frozen, **self.layout.split(theta)})
