"""DeepONet (Lu et al. 2021; seed 001) as a pure function of one flat parameter vector.

``G(f)(x) = sum_k b_k(f(s_1), ..., f(s_m)) t_k(x) + b_0``: a *branch* network reads the
input function at ``m`` fixed sensors, a *trunk* network reads the point ``x``, and a dot
product of their ``p`` features (per output) gives the operator's value. Like
:class:`~daskie.nn.mlp.MLP`, the parameters are one flat float64 vector, so every daskie
optimizer, checkpoint and all-reduce treats a DeepONet exactly like any other network; the
branch and trunk are described by :class:`MLP` specs (hidden widths, activation,
initialisation) and their layers are laid out as ``MLP`` lays out its own.

A point of a DeepONet is the row ``z = (f(s_1), ..., f(s_m), x_1, ..., x_d)`` (``in_dim =
m + d``): that makes it a daskie network ``R^(m+d) -> R`` whose per-point parameter
gradients the objectives form as for any other. :meth:`DeepONet.operator` evaluates the
Cartesian product of ``n_f`` inputs and ``n_x`` points with one branch and one trunk pass
(prediction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daskie.errors import SpecError, check_int
from daskie.nn.mlp import MLP, activation, activation_derivative

__all__ = ["DeepONet"]


@dataclass(frozen=True)
class DeepONet:
    """Branch on ``f`` at ``sensors`` points, trunk on ``x``, dot-product head.

    Parameters
    ----------
    sensors : int
        ``m``: values of the input function the branch reads.
    dim : int
        ``d``: coordinates of the trunk's point.
    branch, trunk : MLP
        Hidden widths, activation and initialisation of the two networks (their scalar
        output layer is replaced by ``width * outputs`` features). The branch's last layer
        is linear, the trunk's is activated (Lu et al.'s unstacked DeepONet).
        ``branch=None``: a linear branch (its features a linear map of the sensor values),
        which represents the solution operator of a linear family exactly once the trunk
        spans it.
    width : int
        ``p``: features per output in the dot product.
    outputs : int
        Outputs of the operator (each with its own ``p`` features of both networks).
    bias : bool
        Add a trainable constant ``b_0`` per output.
    """

    sensors: int
    dim: int = 1
    branch: MLP | None = field(default_factory=lambda: MLP(hidden=(40, 40)))
    trunk: MLP = field(default_factory=lambda: MLP(hidden=(40, 40)))
    width: int = 40
    outputs: int = 1
    bias: bool = True

    def __post_init__(self):
        check_int("DeepONet.sensors", self.sensors)
        check_int("DeepONet.dim", self.dim)
        check_int("DeepONet.width", self.width)
        check_int("DeepONet.outputs", self.outputs)
        for name in ("branch", "trunk"):
            if name == "branch" and self.branch is None:
                continue
            if not isinstance(getattr(self, name), MLP):
                raise SpecError(f"DeepONet.{name} must be a daskie MLP spec (hidden widths, "
                                f"activation, init), got {getattr(self, name)!r}")
        if not isinstance(self.bias, bool):
            raise SpecError(f"DeepONet.bias must be True or False, got {self.bias!r}")

    @property
    def _branch_activation(self) -> str:
        # a linear branch applies none; "tanh" is only a placeholder for the layer loops
        return "tanh" if self.branch is None else self.branch.activation

    # --- layout -----------------------------------------------------------------------------
    @property
    def in_dim(self) -> int:
        """Inputs of one point: ``sensors + dim``."""
        return self.sensors + self.dim

    def _sizes(self):
        q = self.width * self.outputs
        hidden = () if self.branch is None else self.branch.hidden
        return [self.sensors, *hidden, q], [self.dim, *self.trunk.hidden, q]

    def _check_in_dim(self, in_dim):
        if in_dim is not None and int(in_dim) != self.in_dim:
            raise SpecError(f"a DeepONet with {self.sensors} sensors in {self.dim}-D takes points "
                            f"of {self.in_dim} inputs, got {in_dim}")

    def n_params(self, in_dim: int | None = None) -> int:
        """Number of parameters (``in_dim``, when given, must be ``sensors + dim``)."""
        self._check_in_dim(in_dim)
        total = sum((a + 1) * b for s in self._sizes() for a, b in zip(s[:-1], s[1:]))
        return total + (self.outputs if self.bias else 0)

    def flops(self, in_dim: int | None = None) -> int:
        """Multiply-adds of one forward pass at one point."""
        return sum(a * b for s in self._sizes() for a, b in zip(s[:-1], s[1:])) + \
            self.width * self.outputs

    def init_params(self, in_dim, generator):
        """A fresh flat parameter vector (float64) drawn from ``generator``: each network's
        weights as its ``MLP`` spec initialises them (Glorot-normal or N(0, init_std)),
        biases and the head's constant at 0."""
        import torch

        self._check_in_dim(in_dim)
        chunks = []
        for spec, sizes in zip((self.branch, self.trunk), self._sizes()):
            for a, b in zip(sizes[:-1], sizes[1:]):
                normal = spec is not None and spec.init == "normal"
                std = spec.init_std if normal else (2.0 / (a + b)) ** 0.5
                chunks.append(torch.randn(b * a, generator=generator, dtype=torch.float64,
                                          device=generator.device) * std)
                chunks.append(torch.zeros(b, dtype=torch.float64, device=generator.device))
        if self.bias:
            chunks.append(torch.zeros(self.outputs, dtype=torch.float64, device=generator.device))
        return torch.cat(chunks)

    def _split(self, theta):
        """``(branch layers, trunk layers, bias)``; layers as ``(weight (out, in), bias)``."""
        offset, nets = 0, []
        for sizes in self._sizes():
            layers = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                w = theta[offset:offset + a * b].view(b, a)
                offset += a * b
                layers.append((w, theta[offset:offset + b]))
                offset += b
            nets.append(layers)
        b0 = theta[offset:offset + self.outputs] if self.bias else None
        return nets[0], nets[1], b0

    # --- the branch's output layer (least-squares head) -------------------------------------
    def head_slices(self) -> tuple[slice, slice]:
        """Where the branch's output layer lies in the flat parameters: ``(weight, bias)``
        slices (the weight ``(width * outputs, h)`` row-major, ``h`` the branch's last hidden
        width, or the sensors for a linear branch)."""
        branch = self._sizes()[0]
        offset = sum((a + 1) * b for a, b in zip(branch[:-2], branch[1:-1]))
        h, q = branch[-2], branch[-1]
        return slice(offset, offset + h * q), slice(offset + h * q, offset + h * q + q)

    def head_features(self, theta, f_values):
        """What the branch's output layer reads, with a column of ones (its bias): shape
        ``(n_f, h + 1)``. The branch's features are ``head_features @ W`` with ``W`` of
        :meth:`with_head`."""
        import torch

        branch, _, _ = self._split(theta)
        h = self._run(branch[:-1], f_values, activation(self._branch_activation), True)
        return torch.cat([h, torch.ones(h.shape[:-1] + (1,), dtype=h.dtype, device=h.device)], dim=-1)

    def with_head(self, theta, W):
        """``theta`` with the branch's output layer set from ``W`` ``(h + 1, width * outputs)``
        (weights in its first ``h`` rows, bias in the last); a new vector."""
        w, b = self.head_slices()
        out = theta.detach().clone()
        out[w] = W[:-1].T.reshape(-1)
        out[b] = W[-1]
        return out

    @staticmethod
    def _run(layers, h, act, last_active: bool):
        import torch

        for k, (w, b) in enumerate(layers):
            h = torch.nn.functional.linear(h, w, b)
            if k < len(layers) - 1 or last_active:
                h = act(h)
        return h

    # --- values -----------------------------------------------------------------------------
    def features(self, theta, f_values, x):
        """Branch features of ``f_values`` (``(..., m)``) and trunk features of ``x``
        (``(..., d)``), each of shape ``(..., outputs, width)``, and the head's bias."""
        branch, _, b0 = self._split(theta)
        fb = self._run(branch, f_values, activation(self._branch_activation), False)
        return fb.reshape(fb.shape[:-1] + (self.outputs, self.width)), \
            self.trunk_features(theta, x), b0

    def output_bias(self, theta):
        """The head's constant ``b0``, one per output (None without ``bias``)."""
        return self._split(theta)[2]

    def trunk_features(self, theta, x):
        """Trunk features of ``x`` (``(..., d)``), shape ``(..., outputs, width)``."""
        _, trunk, _ = self._split(theta)
        ft = self._run(trunk, x, activation(self.trunk.activation), True)
        return ft.reshape(ft.shape[:-1] + (self.outputs, self.width))

    def apply(self, theta, z):
        """Output at points ``z = (f at the sensors, x)`` of shape ``(n, sensors + dim)`` (or
        ``(sensors + dim,)``): shape ``(n,)`` for one output, ``(n, outputs)`` for several."""
        fb, ft, b0 = self.features(theta, z[..., :self.sensors], z[..., self.sensors:])
        out = (fb * ft).sum(dim=-1)
        if b0 is not None:
            out = out + b0
        return out[..., 0] if self.outputs == 1 else out

    def operator(self, theta, f_values, x):
        """``G(f_i)(x_j)`` for every input ``f_values[i]`` (``(n_f, m)``) and point ``x[j]``
        (``(n_x, d)``), with one branch pass per input and one trunk pass per point: shape
        ``(n_f, n_x)`` (one output) or ``(n_f, n_x, outputs)``."""
        import torch

        fb, ft, b0 = self.features(theta, f_values, x)
        out = torch.einsum("iop,jop->ijo", fb, ft)
        if b0 is not None:
            out = out + b0
        return out[..., 0] if self.outputs == 1 else out

    def point_jacobian(self, theta, z, row_weights=None):
        """Per-point parameter gradients of the output, shape ``(n, n_params)``.

        Hand-written reverse mode through both networks at once (the branch's output
        gradient is the trunk's features and the other way round); several times faster
        than ``vmap(grad(apply))``, which is what Levenberg-Marquardt's Jacobians rest on.
        Returns None (callers fall back to ``vmap``) for several outputs, weighted rows, or
        an activation without a closed-form derivative here (gelu).
        """
        import torch

        acts = (self._branch_activation, self.trunk.activation)
        if self.outputs != 1 or row_weights is not None or "gelu" in acts or z.ndim != 2:
            return None
        branch, trunk, b0 = self._split(theta)
        n = z.shape[0]

        def forward(layers, h, name, last_active):
            act, hs, pre = activation(name), [h], []
            for k, (w, b) in enumerate(layers):
                s = torch.nn.functional.linear(hs[-1], w, b)
                pre.append(s)
                hs.append(act(s) if k < len(layers) - 1 or last_active else s)
            return hs, pre

        def backward(layers, hs, pre, delta, name):
            blocks = []
            for k in range(len(layers) - 1, -1, -1):
                blocks.append(delta)  # bias
                blocks.append((delta[:, :, None] * hs[k][:, None, :]).reshape(n, -1))
                if k > 0:
                    delta = (delta @ layers[k][0]) * activation_derivative(name, pre[k - 1], hs[k])
            return blocks[::-1]

        hb, pb = forward(branch, z[:, :self.sensors], acts[0], False)
        ht, pt = forward(trunk, z[:, self.sensors:], acts[1], True)
        fb, ft = hb[-1], ht[-1]
        gb = backward(branch, hb, pb, ft, acts[0])
        gt = backward(trunk, ht, pt, fb * activation_derivative(acts[1], pt[-1], ft), acts[1])
        parts = gb + gt  # each in layout order: (weight, bias) per layer, input layer first
        if b0 is not None:
            parts.append(torch.ones(n, 1, dtype=z.dtype, device=z.device))
        return torch.cat(parts, dim=1)
