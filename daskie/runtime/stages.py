"""Layer stages of the networks on the ranks of a group: model, pipeline and hybrid parallelism.

:class:`StagedObjective` presents the whole problem to an unmodified first-order optimizer
(the same ``layout``, ``loss`` and ``value_and_grad`` as the one-process
:class:`~daskie.train.objective.Objective`) while each rank holds only a range of layers of
every sub-model's network (:class:`~daskie.nn.stages.StageSplit`). The ranks of a group of
``replicas x stages`` are laid out replica by replica: rank ``r`` is stage ``r % stages`` of
replica ``r // stages``, and a replica trains on data shard ``(r // stages, replicas)`` of
the collocation rows (one replica: all rows).

One evaluation of the loss and its gradient is a GPipe schedule over ``micro_batches`` row
chunks of every evaluation:

1. forward: stage 0 runs its layers on micro-batch 0 and sends the activations (and, for an
   input-derivative evaluation, their tangents) to stage 1 through
   :meth:`daskie.collectives.Group.send`, goes on with micro-batch 1, and so on; every later
   stage receives, runs its layers and sends on;
2. the last stage assembles the evaluation values of all micro-batches, forms the residuals
   and the loss and the gradient of the loss with respect to each micro-batch's outputs;
3. backward, micro-batches in reverse order: each stage receives the gradient of its outputs,
   backpropagates through its layers (autograd) into its own parameters and its inputs, and
   sends the gradient of its inputs to the stage before it;
4. one all-reduce of ``[loss, gradient]`` (each rank non-zero only on its own parameters, and
   the loss only on each replica's last stage) gives every rank the exact total loss and
   gradient, and every rank takes the same optimizer step.

With one micro-batch this is model parallelism: one stage works at a time. Each rank
measures its *bubble*: the fraction of the schedule's wall time it spent waiting in
``send``/``recv`` for a neighbour (GPipe's idle share is ``(S - 1) / (M + S - 1)`` with equal
stages and free messages).

Second-order optimizers (Levenberg-Marquardt, trust region) need per-point Jacobians of
every stage; they are refused by the strategies (:mod:`daskie.strategies.model_parallel`).
"""

from __future__ import annotations

import time

import torch

from daskie.errors import SpecError
from daskie.nn.mlp import MLP
from daskie.nn.stages import StageSplit

__all__ = ["StagedObjective", "stage_splits"]

#: Tags of the point-to-point messages (forward activations, backward gradients).
_FORWARD, _BACKWARD = 0, 1


def stage_splits(disc, stages: int) -> dict:
    """``{sub-model: StageSplit}`` of every sub-model of ``disc`` over ``stages`` stages.

    Raises :class:`~daskie.errors.SpecError` naming the sub-model that is not an
    :class:`~daskie.nn.MLP` or has fewer layers than stages.
    """
    out = {}
    for name, sub in disc.submodels.items():
        if not isinstance(sub.net, MLP):
            raise SpecError(f"layer stages need MLP sub-models; {name!r} is a "
                            f"{type(sub.net).__name__}")
        try:
            out[name] = StageSplit.balanced(sub.net, sub.in_dim, stages)
        except SpecError as exc:
            raise SpecError(f"sub-model {name!r}: {exc}") from None
    return out


class _SumWithGradient(torch.autograd.Function):
    """The pipelined loss as a differentiable function of ``theta`` (for optimizers that call
    ``loss(theta).backward()``, L-BFGS): forward runs the schedule with its backward pass,
    backward returns the gradient it computed."""

    @staticmethod
    def forward(ctx, theta, objective):
        loss, g = objective.value_and_grad(theta)
        ctx.save_for_backward(g)
        return torch.tensor(loss, dtype=theta.dtype, device=theta.device)

    @staticmethod
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return grad * g, None


class StagedObjective:
    """The loss and gradient of ``local`` with each rank running its layers of every network.

    Parameters
    ----------
    local : Objective
        This rank's replica objective (data shard of its replica, or the whole problem).
    group : Group
        ``replicas * stages`` ranks (rank ``r``: replica ``r // stages``, stage
        ``r % stages``).
    stages : int
        Layer stages per replica.
    replicas : int
        Data-parallel replicas of the pipeline.
    micro_batches : int
        Row chunks of every evaluation sent through the pipeline one after another (1: model
        parallelism).
    """

    def __init__(self, local, group, stages: int, replicas: int = 1, micro_batches: int = 1):
        if stages * replicas != group.size:
            raise ValueError(f"{replicas} replicas x {stages} stages need {stages * replicas} "
                             f"ranks, the group has {group.size}")
        self.local, self.group = local, group
        self.stages, self.replicas, self.micro = int(stages), int(replicas), int(micro_batches)
        self.stage = group.rank % self.stages
        self.first = group.rank - self.stage  # rank of this replica's stage 0
        disc = local.disc
        self.splits = stage_splits(disc, self.stages)
        offsets = local.layout.offsets
        # this stage's parameters: a contiguous range of every sub-model's vector
        self.own = [(offsets[n][0] + a, offsets[n][0] + b)
                    for n, sp in self.splits.items() for a, b in [sp.param_range(self.stage)]]
        self.keys = tuple(local.eval_keys)
        self.chunks = {k: torch.tensor_split(torch.arange(disc.evaluations[k].size,
                                                          device=local.device), self.micro)
                       for k in self.keys}
        self.stats = {"pipeline_s": 0.0, "wait_s": 0.0, "allreduce_s": 0.0, "p2p_bytes": 0,
                      "calls": 0}

    def __getattr__(self, name):  # layout, init_params, mse, accuracy, ... of the local one
        return getattr(self.__dict__["local"], name)

    # --- the schedule ------------------------------------------------------------------
    def _widths(self, key, stage):
        """(width, carries a tangent) of evaluation ``key``'s activation entering ``stage``."""
        ev = self.local.disc.evaluations[key]
        return self.splits[ev.submodel].width_in(stage), ev.derivative is not None

    def _message_size(self, m, stage):
        n = 0
        for k in self.keys:
            w, tangent = self._widths(k, stage)
            n += len(self.chunks[k][m]) * w * (2 if tangent else 1)
        return n

    def _unpack(self, flat, m, stage, requires_grad):
        """Per-key ``(h, t)`` views of a received activation message (leaves of this stage's
        graph when differentiating)."""
        out, start = {}, 0
        for k in self.keys:
            w, tangent = self._widths(k, stage)
            rows = len(self.chunks[k][m])
            parts = []
            for _ in range(2 if tangent else 1):
                v = flat[start:start + rows * w].view(rows, w)
                start += rows * w
                parts.append(v.requires_grad_(True) if requires_grad else v)
            out[k] = (parts[0], parts[1] if tangent else None)
        return out

    def _send(self, tensors, dst, tag):
        flat = torch.cat([t.detach().reshape(-1) for t in tensors]) if tensors \
            else torch.zeros(0, dtype=self.local.dtype, device=self.local.device)
        t0 = time.perf_counter()
        self.group.send(flat, dst, tag=tag)
        self.stats["wait_s"] += time.perf_counter() - t0
        self.stats["p2p_bytes"] += flat.numel() * flat.element_size()

    def _recv(self, n, src, tag, dtype):
        buf = torch.empty(n, dtype=dtype, device=self.local.device)
        t0 = time.perf_counter()
        self.group.recv(buf, src, tag=tag)
        self.stats["wait_s"] += time.perf_counter() - t0
        return buf

    def _finish(self, key, h, t, rows):
        """The sub-model's value (or derivative) from the network's output at rows ``rows``
        of evaluation ``key`` (the zero-constraint factor of :class:`SubModel`)."""
        d = self.local.disc
        ev = d.evaluations[key]
        sub = d.submodels[ev.submodel]
        out = h[..., 0]
        if ev.derivative is None:
            if sub.zero_axis is not None:
                out = (ev.points[rows, sub.zero_axis] - sub.zero_value) * out
            if sub.affine is not None:
                scale, shift = sub.affine(ev.points)
                out = scale[rows] * out + shift[rows]
            return out
        dv = t[..., 0]
        if sub.zero_axis is not None:
            dv = (ev.points[rows, sub.zero_axis] - sub.zero_value) * dv
            if ev.derivative == sub.zero_axis:
                dv = dv + out
        return dv

    def _run(self, theta, grad: bool):
        """One pass of the schedule; returns ``(this rank's loss contribution, gradient or
        None)``: the loss on a replica's last stage, 0 elsewhere."""
        t_start = time.perf_counter()
        d = self.local.disc
        s, last = self.stage, self.stage == self.stages - 1
        prev, nxt = self.group.rank - 1, self.group.rank + 1
        th = theta.detach().requires_grad_(True) if grad else theta.detach()
        dtype = theta.dtype
        saved = []  # per micro-batch: (input leaves, outputs)
        with torch.set_grad_enabled(grad):
            params = self.local.layout.split(th)  # views made here, so autograd sees them
            for m in range(self.micro):
                if s == 0:
                    inputs = {k: (d.evaluations[k].points[self.chunks[k][m]], None)
                              for k in self.keys}
                else:
                    flat = self._recv(self._message_size(m, s), prev, _FORWARD, dtype)
                    inputs = self._unpack(flat, m, s, grad)
                outs = {}
                for k in self.keys:
                    ev = d.evaluations[k]
                    h, t = inputs[k]
                    outs[k] = self.splits[ev.submodel].forward(s, params[ev.submodel], h, t,
                                                               ev.derivative)
                if not last:
                    self._send([x for k in self.keys for x in outs[k] if x is not None], nxt,
                               _FORWARD)
                saved.append((inputs, outs))
            g = torch.zeros_like(theta) if grad else None
            loss = torch.zeros((), dtype=dtype, device=self.local.device)
            if last:
                values, leaves = {}, []
                for k in self.keys:
                    parts = []
                    for m, (_, outs) in enumerate(saved):
                        h, t = outs[k]
                        v = self._finish(k, h, t, self.chunks[k][m])
                        if grad:
                            v = v.detach().requires_grad_(True)
                            leaves.append(v)
                        parts.append(v)
                    values[k] = torch.cat(parts)
                r = self.local.residuals_from_values(values)
                loss = r @ r
                if grad:
                    dv = torch.autograd.grad(loss, leaves)
                    loss = loss.detach()
            if grad:
                for m in reversed(range(self.micro)):
                    inputs, outs = saved[m]
                    if last:
                        # each key's values of micro-batch m and the loss's gradient there
                        tensors = [self._finish(k, *outs[k], self.chunks[k][m])
                                   for k in self.keys]
                        grads = [dv[i * self.micro + m] for i in range(len(self.keys))]
                    else:
                        flat = self._recv(sum(x.numel() for k in self.keys for x in outs[k]
                                              if x is not None), nxt, _BACKWARD, dtype)
                        tensors, grads, start = [], [], 0
                        for k in self.keys:
                            for x in outs[k]:
                                if x is not None:
                                    tensors.append(x)
                                    grads.append(flat[start:start + x.numel()].view_as(x))
                                    start += x.numel()
                    ins = [x for k in self.keys for x in inputs[k] if x is not None] if s > 0 \
                        else []
                    got = torch.autograd.grad(tensors, [th, *ins], grads, allow_unused=True)
                    if got[0] is not None:
                        g += got[0]
                    if s > 0:
                        self._send([torch.zeros_like(x) if gx is None else gx
                                    for x, gx in zip(ins, got[1:])], prev, _BACKWARD)
        self.stats["pipeline_s"] += time.perf_counter() - t_start
        self.stats["calls"] += 1
        return loss.detach(), g

    # --- what the optimizer sees -------------------------------------------------------
    def value_and_grad(self, theta):
        """Total ``(loss, gradient)``: the schedule, then one all-reduce."""
        loss, g = self._run(theta, grad=True)
        buf = torch.cat([loss.reshape(1), g])
        t0 = time.perf_counter()
        self.group.allreduce(buf, key="grad")
        self.stats["allreduce_s"] += time.perf_counter() - t0
        return float(buf[0]), buf[1:]

    def loss(self, theta):
        """Total loss (differentiable in ``theta`` when it requires grad)."""
        if theta.requires_grad and torch.is_grad_enabled():
            return _SumWithGradient.apply(theta, self)
        loss, _ = self._run(theta, grad=False)
        buf = loss.reshape(1).clone()
        self.group.allreduce(buf, key="loss")
        return buf.reshape(())

    def normal_equations(self, theta):  # pragma: no cover - refused by the strategies
        """Not available: layer stages have no per-point Jacobians here."""
        raise SpecError("layer-stage strategies train with first-order optimizers (Adam, "
                        "L-BFGS); Levenberg-Marquardt needs per-point Jacobians")

    def window_stats(self) -> dict:
        """This rank's measurements so far: its stage, the bubble (fraction of the schedule's
        wall time spent waiting for a neighbour), point-to-point bytes, all-reduce seconds."""
        st = self.stats
        return {"stage": self.stage, "replica": self.group.rank // self.stages,
                "bubble": st["wait_s"] / st["pipeline_s"] if st["pipeline_s"] > 0 else 0.0,
                "pipeline_s": st["pipeline_s"], "p2p_wait_s": st["wait_s"],
                "p2p_bytes": st["p2p_bytes"], "allreduce_s": st["allreduce_s"]}
