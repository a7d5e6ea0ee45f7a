"""Multilayer perceptrons as pure functions of one flat parameter vector.

A flat vector makes every optimizer (Adam, L-BFGS, Levenberg-Marquardt), every checkpoint
and every all-reduce the same simple operation on one tensor, and per-point parameter
gradients are a ``torch.func.vmap`` of ``torch.func.grad`` over it.

Each layer stores its weight parameters, then its bias. A dense layer stores ``W`` (out, in)
row-major; subclasses store the weights in another form (:class:`~daskie.nn.tt.TTMLP`:
tensor-train cores) by overriding the four weight hooks (``_weight_size``, ``_weight``,
``_weight_maps``, ``weight_shapes``), and every forward, tangent and Jacobian below serves
them unchanged. ``quant`` (:mod:`daskie.nn.quant`) quantizes the stored weights and the hidden
activations in the forward pass, with straight-through gradients onto the float64 master
weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daskie.errors import SpecError
from daskie.nn.quant import Quantizer

__all__ = ["MLP", "activation", "activation_derivative"]

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
    quant : Quantizer, optional
        Quantize the stored weights and the hidden activations in the forward pass
        (:class:`~daskie.nn.quant.Int8`, :class:`~daskie.nn.quant.MX`); gradients pass the
        rounding straight through to the float64 parameters. The network's input (the
        coordinates) and its scalar output are not quantized. None: full precision.
    """

    hidden: tuple[int, ...] = (20, 20, 20)
    activation: str = "tanh"
    init: str = "xavier"
    init_std: float = 0.1
    quant: Quantizer | None = None

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
        if self.quant is not None and not isinstance(self.quant, Quantizer):
            raise SpecError(f"MLP.quant must be a daskie.nn.quant format (Int8(), MX()) or None, "
                            f"got {self.quant!r}")

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
        return sum(self._weight_size(k, a, b) + b for k, (a, b) in enumerate(zip(s[:-1], s[1:])))

    def layer_params(self, in_dim: int) -> list[int]:
        """Parameters of each layer (its stored weights and its bias), input layer first: the
        layers lie in this order in the flat vector."""
        s = self.sizes(in_dim)
        return [self._weight_size(k, a, b) + b for k, (a, b) in enumerate(zip(s[:-1], s[1:]))]

    def weight_shapes(self, in_dim: int) -> list[list[tuple[int, int]]]:
        """The 2-D tensors each layer stores its weights in (dense: one ``(out, in)``); the
        shapes ``quant`` quantizes and :meth:`nbytes` counts."""
        s = self.sizes(in_dim)
        return [[(b, a)] for a, b in zip(s[:-1], s[1:])]

    def nbytes(self, in_dim: int) -> int:
        """Bytes of the parameters as the forward pass reads them: float64 (8 bytes each)
        without ``quant``; with it, the quantized weight tensors (integers and their scales,
        :meth:`Quantizer.weight_bytes`) and the float64 biases."""
        if self.quant is None:
            return 8 * self.n_params(in_dim)
        biases = sum(self.sizes(in_dim)[1:])
        return 8 * biases + sum(self.quant.weight_bytes(shape)
                                for layer in self.weight_shapes(in_dim) for shape in layer)

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
            chunks.append(torch.randn(b * a, generator=generator, dtype=torch.float64,
                                      device=generator.device) * std)
            chunks.append(torch.zeros(b, dtype=torch.float64, device=generator.device))
        return torch.cat(chunks)

    def layers(self, theta, in_dim: int):
        """``(weight (out, in), bias, is_last)`` of each layer as the forward pass uses them,
        input layer first: views of ``theta`` for a dense full-precision network (the weights
        rebuilt from their stored form and quantized otherwise)."""
        sizes = self.sizes(in_dim)
        offset = 0
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            size = self._weight_size(k, a, b)
            w = self._weight(theta[offset:offset + size], k, a, b)
            offset += size
            yield w, theta[offset:offset + b], k == len(sizes) - 2
            offset += b

    # --- weight hooks (subclasses store weights in other forms) ---------------------------
    def _weight_size(self, k: int, a: int, b: int) -> int:
        """Stored weight parameters of layer ``k`` (``a`` inputs, ``b`` outputs)."""
        return a * b

    def _weight(self, flat, k: int, a: int, b: int):
        """Layer ``k``'s weight matrix ``(b, a)`` from its stored parameters ``flat``."""
        w = flat.view(b, a)
        return w if self.quant is None else self.quant.weight(w)

    def _weight_maps(self, theta, in_dim: int) -> list:
        """Per layer, None when the stored weights are ``W`` itself, else the matrix ``R``
        ``(out * in, stored)`` with ``dW = R d(stored)`` (quantization passes straight
        through, so dense layers need none)."""
        return [None] * len(self.hidden + (1,))

    def _hidden_out(self, h):
        """A hidden activation as the next layer reads it (quantized with ``quant``)."""
        return h if self.quant is None else self.quant.activation(h)

    def apply(self, theta, z):
        """Network output at points ``z`` of shape ``(n, in_dim)`` (or ``(in_dim,)``)."""
        import torch

        act = activation(self.activation)
        h = z
        for w, bias, last in self.layers(theta, z.shape[-1]):
            h = torch.nn.functional.linear(h, w, bias)
            if not last:
                h = self._hidden_out(act(h))
        return h[..., 0]

    def apply_pairs(self, theta, z_plus, z_minus):
        """Outputs at the antithetic pairs ``(z_plus[i], z_minus[i])`` (Stein estimators).

        With ``quant`` the hidden activations of each pair are quantized the
        difference-based way (:func:`daskie.nn.quant.quantize_pair`: their mean and half
        difference on scales of their own), so that the difference the estimator needs
        survives quantization; without it, :meth:`apply` at both.
        """
        import torch

        from daskie.nn.quant import quantize_pair

        if self.quant is None:
            return self.apply(theta, z_plus), self.apply(theta, z_minus)
        act = activation(self.activation)
        hp, hm = z_plus, z_minus
        for w, bias, last in self.layers(theta, z_plus.shape[-1]):
            hp = torch.nn.functional.linear(hp, w, bias)
            hm = torch.nn.functional.linear(hm, w, bias)
            if not last:
                hp, hm = quantize_pair(self.quant, act(hp), act(hm))
        return hp[..., 0], hm[..., 0]

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
        act = activation(self.activation)
        h, t = z, None
        for w, bias, last in self.layers(theta, z.shape[-1]):
            s = torch.nn.functional.linear(h, w, bias)
            ds = w[:, axis] if t is None else t @ w.T  # first layer: the same for all points
            if not last:
                h = act(s)
                # quant: the rounding passes straight through the tangent as well
                t = activation_derivative(self.activation, s, h) * ds
                h = self._hidden_out(h)
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
        act = activation(self.activation)
        weights, hs, pre, raw = [], [z], [], [z]
        for w, bias, last in self.layers(theta, z.shape[-1]):
            weights.append(w)
            s = torch.nn.functional.linear(hs[-1], w, bias)
            pre.append(s)
            raw.append(s if last else act(s))
            hs.append(raw[-1] if last else self._hidden_out(raw[-1]))
        maps = self._weight_maps(theta, z.shape[-1])
        n = z.shape[0]
        delta = torch.ones(n, 1, dtype=z.dtype, device=z.device)
        blocks = []
        for layer in range(len(weights) - 1, -1, -1):
            if row_weights is None:
                blocks.append(delta)  # bias gradients
                wgrad = (delta[:, :, None] * hs[layer][:, None, :]).reshape(n, -1)
            else:
                m, q = row_weights.shape
                wd = (row_weights.reshape(n, 1) * delta).view(m, q, -1)
                blocks.append(wd.sum(dim=1))
                wgrad = torch.bmm(wd.transpose(1, 2), hs[layer].view(m, q, -1)).reshape(m, -1)
            blocks.append(wgrad if maps[layer] is None else wgrad @ maps[layer])
            if layer > 0:
                # the activation's derivative at its unquantized output (straight-through)
                delta = (delta @ weights[layer]) * activation_derivative(self.activation, pre[layer - 1],
                                                                         raw[layer])
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


def activation(name: str):
    """The torch function of the activation ``name`` (``"tanh"``, ``"sin"``, ``"gelu"``,
    ``"softplus"``, ``"sigmoid"``)."""
    import torch

    return {"tanh": torch.tanh, "sin": torch.sin, "gelu": torch.nn.functional.gelu,
            "softplus": torch.nn.functional.softplus, "sigmoid": torch.sigmoid}[name]
