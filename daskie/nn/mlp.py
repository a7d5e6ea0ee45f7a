"""Multilayer perceptrons as pure functions of one flat parameter vector.

A flat vector makes every optimizer (Adam, L-BFGS, Levenberg-Marquardt), every checkpoint
and every all-reduce the same simple operation on one tensor, and per-point parameter
gradients are a ``torch.func.vmap`` of ``torch.func.grad`` over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daskie.errors import SpecError

__all__ = ["MLP", "activation_derivative"]

_ACTIVATIONS = ("tanh", "sin", "gelu", "softplus", "sigmoid")


@dataclass(frozen=True)
class MLP:
    """A fully connected network ``R^in -> R`` with a given hidden architecture.

    Parameters
    ----------
    hidden : tuple of int
        Widths of the hidden layers. ``MLP.paper()`` is seed 000's network
        (9 layers in all: 7 hidden layers of 40).
    activation : str
        One of ``tanh`` (default), ``sin``, ``gelu``, ``softplus``, ``sigmoid``.
    init : str
        ``"normal"``: weights ~ N(0, init_std) as in seed 000; ``"xavier"``: Glorot-normal
        weights (better for second-order training from a random start). Biases start at 0.
    init_std : float
        Standard deviation for ``init="normal"``.
    """

    hidden: tuple[int, ...] = (20, 20, 20)
    activation: str = "tanh"
    init: str = "xavier"
    init_std: float = 0.1

    def __post_init__(self):
        hidden = tuple(self.hidden) if np.iterable(self.hidden) else (self.hidden,)
        if not hidden or not all(isinstance(h, (int, np.integer)) and h > 0 for h in hidden):
            raise SpecError(f"MLP.hidden must be a non-empty tuple of positive ints, got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        if self.activation not in _ACTIVATIONS:
            raise SpecError(f"MLP.activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        if self.init not in ("normal", "xavier"):
            raise SpecError(f"MLP.init must be 'normal' or 'xavier', got {self.init!r}")
        if not self.init_std > 0:
            raise SpecError(f"MLP.init_std must be positive, got {self.init_std}")

    @classmethod
    def paper(cls) -> "MLP":
        """Seed 000's network: 9 layers in all (7 hidden x 40), tanh, N(0, 0.1) weights."""
        return cls(hidden=(40,) * 7, activation="tanh", init="normal", init_std=0.1)

    def sizes(self, in_dim: int) -> list[int]:
        """Layer widths from input to the scalar output."""
        return [int(in_dim), *self.hidden, 1]

    def n_params(self, in_dim: int) -> int:
        """Number of parameters for ``in_dim`` inputs."""
        s = self.sizes(in_dim)
        return sum((a + 1) * b for a, b in zip(s[:-1], s[1:]))

    def flops(self, in_dim: int) -> int:
        """Multiply-adds of one forward pass at one point (for the planner)."""
        s = self.sizes(in_dim)
        return sum(a * b for a, b in zip(s[:-1], s[1:]))

    def init_params(self, in_dim: int, generator):
        """A fresh flat parameter vector (float64) drawn from ``generator`` (a torch.Generator)."""
        import torch

        chunks = []
        for a, b in zip(self.sizes(in_dim)[:-1], self.sizes(in_dim)[1:]):
            std = self.init_std if self.init == "normal" else (2.0 / (a + b)) ** 0.5
            chunks.append(torch.randn(b * a, generator=generator, dtype=torch.float64) * std)
            chunks.append(torch.zeros(b, dtype=torch.float64))
        return torch.cat(chunks)

    def layers(self, theta, in_dim: int):
        """``(weight (out, in), bias, is_last)`` views of ``theta``, input layer first."""
        sizes = self.sizes(in_dim)
        offset = 0
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = theta[offset:offset + a * b].view(b, a)
            offset += a * b
            yield w, theta[offset:offset + b], k == len(sizes) - 2
            offset += b

    def apply(self, theta, z):
        """Network output at points ``z`` of shape ``(n, in_dim)`` (or ``(in_dim,)``)."""
        import torch

        act = _act(self.activation)
        h = z
        for w, bias, last in self.layers(theta, z.shape[-1]):
            h = torch.nn.functional.linear(h, w, bias)
            if not last:
                h = act(h)
        return h[..., 0]

    def apply_tangent(self, theta, z, axis: int):
        """``(output, d output / d z[axis])`` at points ``z`` of shape ``(n, in_dim)``.

        Forward-mode differentiation written out over the layers (the tangent of the first
        layer is a column of its weights; each later one is ``tangent @ W.T`` times the
        activation's derivative). Plain tensor operations, so reverse mode through it gives
        parameter gradients; several times cheaper than ``torch.func.jvp`` of :meth:`apply`
        for small networks. Returns None for activations without a closed-form derivative
        here (gelu).
        """
        import torch

        if self.activation == "gelu":
            return None
        act = _act(self.activation)
        h, t = z, None
        for w, bias, last in self.layers(theta, z.shape[-1]):
            s = torch.nn.functional.linear(h, w, bias)
            ds = w[:, axis] if t is None else t @ w.T  # first layer: the same for all points
            if not last:
                h = act(s)
                t = activation_derivative(self.activation, s, h) * ds
            else:
                h, t = s, ds
        return h[..., 0], t.expand_as(h)[..., 0]

    def point_jacobian(self, theta, z, row_weights=None):
        """Per-point parameter gradients of the output, shape ``(n, n_params)``.

        Hand-written reverse mode over the layers (one forward, one backward for all
        points at once); several times faster than ``vmap(grad(...))`` for small networks.
        With ``row_weights`` ``C`` of shape ``(m, q)`` (``n = m q``) it returns the weighted
        sums ``sum_k C[i, k] J[i q + k]``, shape ``(m, n_params)``, without forming the
        ``n x n_params`` matrix (quadrature rules mapped per collocation point).
        Returns None for activations without a closed-form derivative here (gelu).
        """
        import torch

        if self.activation == "gelu":
            return None
        act = _act(self.activation)
        weights, hs, pre = [], [z], []
        for w, bias, last in self.layers(theta, z.shape[-1]):
            weights.append(w)
            s = torch.nn.functional.linear(hs[-1], w, bias)
            pre.append(s)
            hs.append(s if last else act(s))
        n = z.shape[0]
        delta = torch.ones(n, 1, dtype=z.dtype)
        blocks = []
        for layer in range(len(weights) - 1, -1, -1):
            if row_weights is None:
                blocks.append(delta)  # bias gradients
                blocks.append((delta[:, :, None] * hs[layer][:, None, :]).reshape(n, -1))
            else:
                m, q = row_weights.shape
                wd = (row_weights.reshape(n, 1) * delta).view(m, q, -1)
                blocks.append(wd.sum(dim=1))
                blocks.append(torch.bmm(wd.transpose(1, 2), hs[layer].view(m, q, -1)).reshape(m, -1))
            if layer > 0:
                delta = (delta @ weights[layer]) * activation_derivative(self.activation, pre[layer - 1],
                                                                         hs[layer])
        return torch.cat(blocks[::-1], dim=1)


def activation_derivative(name: str, s, h):
    """The derivative of activation ``name`` at its input ``s``, from ``s`` and its output
    ``h`` (tanh and sigmoid from ``h``: no second evaluation)."""
    import torch

    if name == "tanh":
        return 1.0 - h * h
    if name == "sin":
        return torch.cos(s)
    if name == "sigmoid":
        return h * (1.0 - h)
    return torch.sigmoid(s)  # softplus


def _act(name):
    import torch

    return {"tanh": torch.tanh, "sin": torch.sin, "gelu": torch.nn.functional.gelu,
            "softplus": torch.nn.functional.softplus, "sigmoid": torch.sigmoid}[name]
