"""Quantized training: fake quantization of weights and activations with straight-through
gradients (seed 003).

The master weights stay float64 (the flat parameter vector every optimizer, checkpoint and
all-reduce sees); the forward pass reads them through a quantizer that rounds them to a
low-precision grid and hands the rounded values on as float64 numbers. Gradients pass
the rounding straight through (``d q(w) / d w = 1``), so the optimizer updates the master
weights with the gradient of the quantized network.

Every scale is a function of the values it quantizes only: a weight tensor's (or a weight
row's) scale of the (replicated) master weights, an activation's scale of its own row (one
point). No scale depends on the batch, the shard or a random draw, so every rank of a
data-parallel run quantizes the same numbers the same way, and sharded training equals
serial training.

Two formats:

* :class:`Int8` -- symmetric integers, one scale per weight tensor (``max|w| / 127``) or one
  per output row of a weight matrix (``max|W[i, :]| / 127``, ``weight_scale="row"``), and one
  per activation row; error at most half a scale step per element. ``activations=False``
  quantizes the weights only (for measuring which part of the error dominates).
* :class:`MX` -- an MX-like block format: square ``block x block`` tiles of a weight matrix
  share one power-of-two scale (a square tile is the same tile of ``W`` and of ``W^T``, so
  the backward pass reads the forward's quantized weights: seed 003's square-block MX), and
  activations share one per ``block`` consecutive features of a row; elements are signed
  ``bits``-bit integers. Error at most half a step, and a step is below
  ``2 max|tile| / (2^(bits-1) - 1)``.

:func:`quantize_pair` is the difference-based scheme for the Stein residual: the two
activations ``h(z + d)``, ``h(z - d)`` of an antithetic pair are quantized as their mean and
their half difference, each on its own scale, so the small difference the estimator needs
does not vanish below the step of the large values (underflow).
"""

from __future__ import annotations

from dataclasses import dataclass

from daskie.errors import SpecError

__all__ = ["Quantizer", "Int8", "MX", "straight_through", "quantize_pair"]


def straight_through(x, q):
    """``q`` in the forward pass, gradient of ``x`` in the backward pass (``x + (q - x)``
    with the difference detached); works under ``torch.func`` transforms."""
    return x + (q - x).detach()


def _round_to(x, step, qmax):
    import torch

    return torch.clamp(torch.round(x / step), -qmax, qmax) * step


def _pow2_step(amax, qmax):
    """Power-of-two step ``2^ceil(log2(amax / qmax))`` (``amax = 0``: step 1)."""
    import torch

    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    return torch.exp2(torch.ceil(torch.log2(safe / qmax)))


class Quantizer:
    """Base class of the formats: ``weight(w)`` and ``activation(h)`` return the quantized
    values (float64, straight-through gradients); ``step_weight`` / ``step_activation``
    the grid step of every element (for error bounds); ``weight_bytes(shape)`` the storage
    of one quantized weight tensor."""

    bits: int = 8

    @property
    def qmax(self) -> int:
        """Largest integer magnitude of the format."""
        return 2 ** (self.bits - 1) - 1

    @property
    def label(self) -> str:
        """Short name for records."""
        return type(self).__name__.lower()

    def weight(self, w):
        """Quantized weights ``w`` (a 2-D tensor), straight-through."""
        return straight_through(w, self.dequantize_weight(w))

    def activation(self, h):
        """Quantized activations ``h`` (rows = points), straight-through."""
        return straight_through(h, self.dequantize_activation(h))

    def dequantize_weight(self, w):
        """Round ``w`` to the format's grid and return the values (no gradient rule)."""
        return _round_to(w.detach(), self.step_weight(w.detach()), self.qmax)

    def dequantize_activation(self, h):
        """Round ``h`` to the format's grid and return the values (no gradient rule)."""
        return _round_to(h.detach(), self.step_activation(h.detach()), self.qmax)

    def step_weight(self, w):  # pragma: no cover - abstract
        """Grid step of every element of the weight tensor ``w`` (same shape)."""
        raise NotImplementedError

    def step_activation(self, h):  # pragma: no cover - abstract
        """Grid step of every element of the activations ``h`` (same shape)."""
        raise NotImplementedError

    def weight_bytes(self, shape) -> int:  # pragma: no cover - abstract
        """Bytes of one stored weight tensor of ``shape``: integers plus scales."""
        raise NotImplementedError


def _check_bits(owner, bits):
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise SpecError(f"{owner}.bits must be an int in [2, 16], got {bits!r}")


@dataclass(frozen=True)
class Int8(Quantizer):
    """Symmetric integer quantization: one scale ``max|w| / qmax`` per weight tensor (or per
    output row of it), one ``max|h_row| / qmax`` per activation row (point).

    Parameters
    ----------
    bits : int
        Bits per element, sign included (8: int8, ``qmax = 127``).
    weight_scale : str
        ``"tensor"``: one scale per weight tensor; ``"row"``: one per output row ``W[i, :]``
        (per-channel, as most int8 training does: a row of small weights keeps its own
        resolution instead of the step of the tensor's largest weight).
    activations : bool
        Quantize the hidden activations too (default); False: weights only.
    """

    bits: int = 8
    weight_scale: str = "tensor"
    activations: bool = True

    def __post_init__(self):
        _check_bits("Int8", self.bits)
        if self.weight_scale not in ("tensor", "row"):
            raise SpecError(f"Int8.weight_scale must be 'tensor' or 'row', got {self.weight_scale!r}")
        if not isinstance(self.activations, bool):
            raise SpecError(f"Int8.activations must be True or False, got {self.activations!r}")

    @property
    def label(self) -> str:
        """``"int8"`` (``"int<bits>"`` for other widths), ``-row`` for per-row weight scales,
        ``-wonly`` without activation quantization."""
        name = "int8" if self.bits == 8 else f"int{self.bits}"
        return name + ("-row" if self.weight_scale == "row" else "") + ("" if self.activations else "-wonly")

    def step_weight(self, w):
        """One step ``max|w| / qmax`` for the whole tensor, or one per output row (``"row"``)."""
        import torch

        amax = w.abs().amax(dim=-1, keepdim=True) if self.weight_scale == "row" else w.abs().max()
        return torch.where(amax > 0, amax / self.qmax, torch.ones_like(amax)).expand_as(w)

    def step_activation(self, h):
        """One step ``max|h_row| / qmax`` per row (point); zero (exact) with ``activations=False``."""
        import torch

        if not self.activations:
            return torch.zeros_like(h)
        amax = h.abs().amax(dim=-1, keepdim=True)
        return torch.where(amax > 0, amax / self.qmax, torch.ones_like(amax)).expand_as(h)

    def activation(self, h):
        """Quantized activations ``h`` (straight-through); ``h`` itself with ``activations=False``."""
        return super().activation(h) if self.activations else h

    def dequantize_activation(self, h):
        """Activations rounded to the grid (``h`` unchanged with ``activations=False``)."""
        return super().dequantize_activation(h) if self.activations else h.detach()

    def weight_bytes(self, shape) -> int:
        """``bits / 8`` bytes per element and one float32 scale per tensor (per row with
        ``weight_scale="row"``)."""
        n = 1
        for s in shape:
            n *= int(s)
        scales = int(shape[0]) if self.weight_scale == "row" and len(shape) == 2 else 1
        return (n * self.bits + 7) // 8 + 4 * scales  # elements and float32 scales


@dataclass(frozen=True)
class MX(Quantizer):
    """MX-like square-block format: ``block x block`` weight tiles and ``block``-wide
    activation groups share one power-of-two scale (an 8-bit exponent); elements are signed
    ``bits``-bit integers.

    Parameters
    ----------
    block : int
        Side of a weight tile and width of an activation group.
    bits : int
        Bits per element, sign included.
    """

    block: int = 8
    bits: int = 8

    def __post_init__(self):
        if not isinstance(self.block, int) or isinstance(self.block, bool) or self.block < 1:
            raise SpecError(f"MX.block must be a positive int, got {self.block!r}")
        _check_bits("MX", self.bits)

    @property
    def label(self) -> str:
        """``"mx"``."""
        return "mx"

    def step_weight(self, w):
        """One power-of-two step per ``block x block`` tile of the 2-D ``w``."""
        import torch

        if w.ndim != 2:
            raise SpecError(f"MX weights must be 2-D, got shape {tuple(w.shape)}")
        b = self.block
        rows, cols = w.shape
        pr, pc = (-rows) % b, (-cols) % b
        padded = torch.nn.functional.pad(w.abs(), (0, pc, 0, pr))
        tiles = padded.view((rows + pr) // b, b, (cols + pc) // b, b)
        step = _pow2_step(tiles.amax(dim=(1, 3)), self.qmax)  # one per tile
        full = step.repeat_interleave(b, dim=0).repeat_interleave(b, dim=1)
        return full[:rows, :cols]

    def step_activation(self, h):
        """One power-of-two step per ``block`` consecutive features of a row."""
        import torch

        b = self.block
        width = h.shape[-1]
        pad = (-width) % b
        padded = torch.nn.functional.pad(h.abs(), (0, pad))
        groups = padded.reshape(*h.shape[:-1], (width + pad) // b, b)
        step = _pow2_step(groups.amax(dim=-1), self.qmax)
        return step.repeat_interleave(b, dim=-1)[..., :width]

    def weight_bytes(self, shape) -> int:
        """``bits / 8`` bytes per element and one exponent byte per tile."""
        rows, cols = (int(shape[0]), int(shape[1])) if len(shape) == 2 else (1, int(shape[0]))
        tiles = (-(-rows // self.block)) * (-(-cols // self.block))
        return (rows * cols * self.bits + 7) // 8 + tiles  # elements and one exponent byte per tile


def quantize_pair(quant: Quantizer, h_plus, h_minus):
    """Difference-based quantization of an antithetic pair of activations.

    Returns ``(m + d, m - d)`` with ``m = q((h+ + h-) / 2)`` and ``d = q((h+ - h-) / 2)``,
    each quantized on its own scale, straight-through. Quantizing ``h+`` and ``h-`` apart
    rounds both to the grid of the large values, and a difference below its step is lost;
    here the difference keeps ``bits`` bits of its own.
    """
    m = quant.activation(0.5 * (h_plus + h_minus))
    d = quant.activation(0.5 * (h_plus - h_minus))
    return m + d, m - d
