"""Tensor-train (TT) layers: weight matrices stored as chains of small cores (seed 003).

A layer ``W`` of shape ``(out, in)`` with ``out = m_1 ... m_d`` and ``in = n_1 ... n_d`` is
stored as cores ``G_k`` of shape ``(r_{k-1}, m_k, n_k, r_k)`` (``r_0 = r_d = 1``)::

    W[(i_1..i_d), (j_1..j_d)] = G_1[:, i_1, j_1, :] G_2[:, i_2, j_2, :] ... G_d[:, i_d, j_d, :]

(row and column multi-indices row-major). The layer has ``sum_k r_{k-1} m_k n_k r_k``
parameters instead of ``out * in``; with full ranks it represents every matrix
(:func:`tt_decompose` finds the cores of a given one). :class:`TTMLP` is an :class:`MLP`
whose hidden-to-hidden layers are TT layers, so every formulation takes it where it takes
an MLP, and its per-point Jacobians (Levenberg-Marquardt) are the dense layer's per-point
weight gradients mapped onto the cores by the reconstruction's Jacobian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daskie.errors import SpecError
from daskie.nn.mlp import MLP

__all__ = ["TTMLP", "factorize", "tt_full_ranks", "tt_reconstruct", "tt_decompose"]


def factorize(n: int, cores: int) -> tuple[int, ...]:
    """``n`` as a product of ``cores`` integer factors >= 2, as equal as possible, smallest
    first; raises :class:`SpecError` when there is none (e.g. a prime ``n``)."""
    best = None

    def search(rest, k, lo, acc):
        nonlocal best
        if k == 1:
            if rest >= lo:
                cand = (*acc, rest)
                if best is None or max(cand) - min(cand) < max(best) - min(best):
                    best = cand
            return
        f = lo
        while f ** k <= rest:
            if rest % f == 0:
                search(rest // f, k - 1, f, (*acc, f))
            f += 1

    search(int(n), int(cores), 2, ())
    if best is None:
        raise SpecError(f"width {n} has no factorisation into {cores} factors >= 2 for a "
                        f"tensor-train layer; choose another width or TTMLP.cores")
    return best


def tt_full_ranks(out_factors, in_factors) -> tuple[int, ...]:
    """The ranks at which a TT layer represents every ``(out, in)`` matrix."""
    sizes = [m * n for m, n in zip(out_factors, in_factors)]
    return tuple(min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes)))


def _core_shapes(out_factors, in_factors, ranks):
    r = (1, *ranks, 1)
    return [(r[k], m, n, r[k + 1]) for k, (m, n) in enumerate(zip(out_factors, in_factors))]


def tt_reconstruct(cores):
    """The matrix ``(prod m_k, prod n_k)`` of TT cores ``G_k`` ``(r, m_k, n_k, r')``."""
    import torch

    t = cores[0][0]  # (m1, n1, r1)
    rows, cols = t.shape[0], t.shape[1]
    for g in cores[1:]:
        t = torch.einsum("MNr,rmns->MmNns", t, g)
        rows, cols = rows * g.shape[1], cols * g.shape[2]
        t = t.reshape(rows, cols, g.shape[3])
    return t[..., 0]


def _merge(cores):
    """The cores' product as one tensor ``(r_first, prod m, prod n, r_last)``."""
    import torch

    t = cores[0]
    for g in cores[1:]:
        r, rows, cols, _ = t.shape
        t = torch.einsum("aMNr,rmns->aMmNns", t, g).reshape(r, rows * g.shape[1], cols * g.shape[2],
                                                             g.shape[3])
    return t


def _core_jacobian(cores, j):
    """``dW / dG_j`` as a matrix ``(out * in, numel(G_j))``: W is linear in each core,
    ``W[(l,i,r),(p,q,s)] = sum left[l,p,a] G_j[a,i,q,b] right[b,r,s]``, so the Jacobian is the
    product of the other cores with identities on core j's own indices (no autodiff: forward
    mode keeps process-global state that threads of one process cannot share)."""
    import torch

    g = cores[j]
    one = torch.ones(1, 1, 1, dtype=g.dtype, device=g.device)
    left = _merge(cores[:j])[0] if j > 0 else one  # (L, P, a)
    right = _merge(cores[j + 1:])[..., 0] if j < len(cores) - 1 else one  # (b, R, S)
    eye_m = torch.eye(g.shape[1], dtype=g.dtype, device=g.device)
    eye_n = torch.eye(g.shape[2], dtype=g.dtype, device=g.device)
    jac = torch.einsum("LPa,bRS,iI,qQ->LiRPqSaIQb", left, right, eye_m, eye_n)
    rows = left.shape[0] * g.shape[1] * right.shape[1]
    cols = left.shape[1] * g.shape[2] * right.shape[2]
    return jac.reshape(rows * cols, g.numel())


def tt_decompose(w, out_factors, in_factors, ranks=None):
    """TT cores of the matrix ``w`` ``(out, in)`` by sequential truncated SVDs (TT-SVD).

    ``ranks=None`` keeps full ranks (exact up to rounding); otherwise each rank is
    truncated to the given value (the best rank-``r`` split at each step).
    """
    import torch

    d = len(out_factors)
    full = tt_full_ranks(out_factors, in_factors)
    ranks = full if ranks is None else tuple(min(int(r), f) for r, f in zip(ranks, full))
    # (i1..id, j1..jd) -> (i1 j1, i2 j2, ..., id jd)
    t = w.reshape(*out_factors, *in_factors)
    t = t.permute(*[p for k in range(d) for p in (k, d + k)])
    cores, r_prev = [], 1
    rest = t.reshape(r_prev * out_factors[0] * in_factors[0], -1)
    for k in range(d - 1):
        u, s, vh = torch.linalg.svd(rest, full_matrices=False)
        r = min(ranks[k], s.numel())
        cores.append(u[:, :r].reshape(r_prev, out_factors[k], in_factors[k], r))
        rest = (s[:r, None] * vh[:r]).reshape(r * out_factors[k + 1] * in_factors[k + 1], -1)
        r_prev = r
    cores.append(rest.reshape(r_prev, out_factors[-1], in_factors[-1], 1))
    return cores


@dataclass(frozen=True)
class TTMLP(MLP):
    """An :class:`MLP` whose hidden-to-hidden layers are tensor-train layers.

    The input layer (``in_dim`` is 1-8 coordinates) and the scalar output layer stay dense;
    every layer between two hidden widths is stored as ``cores`` TT cores, each width split
    into ``cores`` near-equal factors (:func:`factorize`; 32 = 4 x 8, 40 = 5 x 8 for two
    cores). Quantization (``quant``) applies to each core.

    Parameters
    ----------
    hidden, activation, init, init_std, quant
        As :class:`MLP`. ``init`` sets the variance of the reconstructed weights
        (Glorot for ``"xavier"``, ``init_std**2`` for ``"normal"``), spread equally over
        the cores.
    ranks : int or tuple of int
        Internal TT ranks ``r_1 .. r_{cores-1}`` (one int: all of them), each capped at
        the full rank of the layer.
    cores : int
        Number of cores per TT layer (>= 2).
    """

    ranks: int | tuple[int, ...] = 2
    cores: int = 2

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.cores, int) or isinstance(self.cores, bool) or self.cores < 2:
            raise SpecError(f"TTMLP.cores must be an int >= 2, got {self.cores!r}")
        ranks = (self.ranks,) * (self.cores - 1) if isinstance(self.ranks, int) else tuple(self.ranks)
        if len(ranks) != self.cores - 1 or not all(isinstance(r, int) and not isinstance(r, bool)
                                                   and r >= 1 for r in ranks):
            raise SpecError(f"TTMLP.ranks must be a positive int or {self.cores - 1} positive ints "
                            f"(one per core boundary), got {self.ranks!r}")
        object.__setattr__(self, "ranks", ranks)
        if len(self.hidden) < 2:
            raise SpecError(f"TTMLP needs at least two hidden layers (a hidden-to-hidden layer to "
                            f"factorise), got hidden={self.hidden}")
        for width in set(self.hidden):
            factorize(width, self.cores)  # a clear error now, not at the first forward pass

    # --- which layers are TT, and their cores ---------------------------------------------
    def _is_tt(self, k: int) -> bool:
        return 0 < k < len(self.hidden)

    def tt_shapes(self, k: int, a: int, b: int):
        """Core shapes ``(r, m, n, r')`` of layer ``k`` (``a`` inputs, ``b`` outputs), or
        None for a dense layer."""
        if not self._is_tt(k):
            return None
        out_f, in_f = factorize(b, self.cores), factorize(a, self.cores)
        full = tt_full_ranks(out_f, in_f)
        ranks = tuple(min(r, f) for r, f in zip(self.ranks, full))
        return _core_shapes(out_f, in_f, ranks)

    def _weight_size(self, k, a, b):
        shapes = self.tt_shapes(k, a, b)
        return a * b if shapes is None else sum(math.prod(s) for s in shapes)

    def _cores(self, flat, shapes):
        out, offset = [], 0
        for s in shapes:
            n = math.prod(s)
            core = flat[offset:offset + n].view(*s)
            if self.quant is not None:
                core = self.quant.weight(core.reshape(s[0] * s[1], s[2] * s[3])).view(*s)
            out.append(core)
            offset += n
        return out

    def _weight(self, flat, k, a, b):
        shapes = self.tt_shapes(k, a, b)
        if shapes is None:
            return super()._weight(flat, k, a, b)
        return tt_reconstruct(self._cores(flat, shapes))

    def _weight_maps(self, theta, in_dim):
        import torch

        sizes = self.sizes(in_dim)
        maps, offset = [], 0
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes = self.tt_shapes(k, a, b)
            size = self._weight_size(k, a, b)
            if shapes is None:
                maps.append(None)
            else:
                # at the (quantized) cores the forward uses: quantization is straight-through
                cores = self._cores(theta[offset:offset + size].detach(), shapes)
                maps.append(torch.cat([_core_jacobian(cores, j) for j in range(len(cores))], dim=1))
            offset += size + b
        return maps

    def weight_shapes(self, in_dim):
        """Dense layers ``[(out, in)]``; TT layers their cores as ``(r m, n r')`` matrices."""
        sizes = self.sizes(in_dim)
        out = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes = self.tt_shapes(k, a, b)
            out.append([(b, a)] if shapes is None else [(s[0] * s[1], s[2] * s[3]) for s in shapes])
        return out

    def dense_params(self, in_dim: int) -> int:
        """Parameters of the dense :class:`MLP` with the same widths."""
        return MLP(hidden=self.hidden).n_params(in_dim)

    def init_params(self, in_dim: int, generator):
        """A fresh flat parameter vector (float64): dense layers as :class:`MLP`, TT cores
        with equal standard deviations whose product gives the reconstructed weights the
        variance of ``init`` (biases 0)."""
        import torch

        sizes = self.sizes(in_dim)
        chunks = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            var = self.init_std ** 2 if self.init == "normal" else 2.0 / (a + b)
            shapes = self.tt_shapes(k, a, b)
            if shapes is None:
                chunks.append(torch.randn(b * a, generator=generator, dtype=torch.float64,
                                          device=generator.device) * var ** 0.5)
            else:
                # Var W = prod_k s_k^2 * prod of the internal ranks (sums over them)
                inner = math.prod(s[3] for s in shapes[:-1])
                std = (var / inner) ** (0.5 / len(shapes))
                for s in shapes:
                    chunks.append(torch.randn(math.prod(s), generator=generator, dtype=torch.float64,
                                              device=generator.device) * std)
            chunks.append(torch.zeros(b, dtype=torch.float64, device=generator.device))
        return torch.cat(chunks)

    def params_from_dense(self, dense_theta, in_dim: int):
        """This network's parameters from a dense :class:`MLP`'s vector with the same widths:
        dense layers copied, TT layers by :func:`tt_decompose` truncated to ``ranks`` (exact
        at full ranks)."""
        import torch

        dense = MLP(hidden=self.hidden, activation=self.activation)
        sizes = self.sizes(in_dim)
        chunks = []
        for k, ((w, bias, _), a, b) in enumerate(zip(dense.layers(dense_theta, in_dim), sizes[:-1], sizes[1:])):
            shapes = self.tt_shapes(k, a, b)
            if shapes is None:
                chunks.append(w.reshape(-1))
            else:
                cores = tt_decompose(w, [s[1] for s in shapes], [s[2] for s in shapes],
                                     [s[3] for s in shapes[:-1]])
                chunks.extend(c.reshape(-1) for c in cores)
            chunks.append(bias)
        return torch.cat(chunks)
