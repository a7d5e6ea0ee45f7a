"""Stages of an :class:`~daskie.nn.mlp.MLP`: contiguous layer ranges of one network.

Model and pipeline parallelism split one network by layers: stage ``s`` holds layers
``bounds[s] .. bounds[s + 1] - 1`` (weight layers, input layer first), takes the activation
leaving the stage before it and passes its own on. :class:`StageSplit` says which layers and
which parameters (a contiguous range of the MLP's flat vector: the layers lie in order, each
its weights then its bias) belong to each stage, and :meth:`StageSplit.forward` runs one
stage -- the same tensor operations as :meth:`MLP.apply` and :meth:`MLP.apply_tangent`, so
that the stages one after another give the network's numbers. Backward passes are autograd
through :meth:`~StageSplit.forward` (the runtime sends the gradient of each stage's output
back to the stage before it).

A stage that carries an input derivative passes two arrays: the activation ``h`` and its
tangent ``t = dh / dz[axis]`` (forward mode written out over the layers, as
:meth:`MLP.apply_tangent`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from daskie.errors import SpecError
from daskie.nn.mlp import MLP, activation, activation_derivative

__all__ = ["StageSplit"]


@dataclass(frozen=True)
class StageSplit:
    """The layers of one MLP dealt to ``len(bounds) - 1`` stages.

    Parameters
    ----------
    net : MLP
    in_dim : int
        Inputs of the network.
    bounds : tuple of int
        Layer boundaries: stage ``s`` holds weight layers ``bounds[s]`` to
        ``bounds[s + 1] - 1``; ``bounds[0] == 0``, ``bounds[-1]`` the number of weight layers
        (``len(net.hidden) + 1``), strictly increasing (no empty stage).
    """

    net: MLP
    in_dim: int
    bounds: tuple[int, ...]

    def __post_init__(self):
        if type(self.net) is not MLP or self.net.quant is not None:
            # the stages slice the dense flat layout and run dense full-precision layers
            raise SpecError(f"layer stages need a dense, full-precision MLP; got "
                            f"{type(self.net).__name__}"
                            + (f" with quant={self.net.quant!r}" if self.net.quant is not None else "")
                            + " (train tensor-train or quantized networks without stages)")
        n = self.n_layers
        b = tuple(int(v) for v in self.bounds)
        if len(b) < 2 or b[0] != 0 or b[-1] != n or any(x >= y for x, y in zip(b[:-1], b[1:])):
            raise SpecError(f"StageSplit.bounds must rise strictly from 0 to the {n} layers of "
                            f"the network, got {self.bounds!r}")
        object.__setattr__(self, "bounds", b)

    @classmethod
    def balanced(cls, net: MLP, in_dim: int, stages: int) -> "StageSplit":
        """Contiguous layer ranges of about equal multiply-adds (at least one layer each).

        Raises :class:`~daskie.errors.SpecError` when the network has fewer layers than
        ``stages``.
        """
        sizes = net.sizes(in_dim)
        cost = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
        n = len(cost)
        if not isinstance(stages, int) or stages < 1:
            raise SpecError(f"stages must be a positive int, got {stages!r}")
        if stages > n:
            raise SpecError(f"{stages} stages need a network of at least {stages} layers; "
                            f"{net.hidden} has {n} weight layers")
        # the cut points with the smallest largest stage (few layers: try them all)
        best = min(itertools.combinations(range(1, n), stages - 1),
                   key=lambda cut: max(sum(cost[a:b]) for a, b in
                                       zip((0, *cut), (*cut, n))))
        bounds = (0, *best, n)
        return cls(net, int(in_dim), tuple(bounds))

    @property
    def n_layers(self) -> int:
        """Weight layers of the network."""
        return len(self.net.hidden) + 1

    @property
    def stages(self) -> int:
        """Number of stages."""
        return len(self.bounds) - 1

    def _offsets(self) -> list[int]:
        sizes = self.net.sizes(self.in_dim)
        out = [0]
        for a, b in zip(sizes[:-1], sizes[1:]):
            out.append(out[-1] + a * b + b)
        return out

    def param_range(self, stage: int) -> tuple[int, int]:
        """``(start, stop)`` of stage ``stage``'s parameters in the network's flat vector."""
        off = self._offsets()
        return off[self.bounds[stage]], off[self.bounds[stage + 1]]

    def width_in(self, stage: int) -> int:
        """Width of the activation entering stage ``stage`` (the inputs for stage 0)."""
        return self.net.sizes(self.in_dim)[self.bounds[stage]]

    def width_out(self, stage: int) -> int:
        """Width of the activation leaving stage ``stage`` (1 for the last)."""
        return self.net.sizes(self.in_dim)[self.bounds[stage + 1]]

    def forward(self, stage: int, theta, h, t=None, axis: int | None = None):
        """Run stage ``stage`` of the network with flat parameters ``theta`` (the whole
        network's vector; only this stage's layers are read).

        Parameters
        ----------
        h : tensor (n, width_in)
            The activation entering the stage (the points for stage 0).
        t : tensor (n, width_in), optional
            Its tangent along input ``axis`` (None at stage 0: the first layer's tangent is a
            column of its weights).
        axis : int, optional
            Input derivative carried through the stage (None: values only).

        Returns
        -------
        (h, t)
            The activation leaving the stage and its tangent (None without ``axis``); after the
            last stage ``h`` has shape ``(n, 1)``.
        """
        import torch

        if axis is not None and self.net.activation == "gelu":
            raise SpecError("stage-split derivatives need a closed-form activation derivative; "
                            "MLP.activation 'gelu' has none here")
        act = activation(self.net.activation)
        lo, hi = self.bounds[stage], self.bounds[stage + 1]
        for k, (w, bias, last) in enumerate(self.net.layers(theta, self.in_dim)):
            if k < lo:
                continue
            if k >= hi:
                break
            s = torch.nn.functional.linear(h, w, bias)
            if axis is None:
                h = s if last else act(s)
                continue
            ds = w[:, axis] if t is None else t @ w.T  # the first layer: one column for all points
            if not last:
                h = act(s)
                t = activation_derivative(self.net.activation, s, h) * ds
            else:
                h, t = s, ds
        if t is not None and t.shape != h.shape:
            t = t.expand_as(h)
        return h, t
