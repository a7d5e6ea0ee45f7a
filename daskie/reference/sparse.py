"""Sparse-grid (Smolyak) Nystrom: the third classical rival in high dimension (numpy only).

The unknowns are ``mu`` at the nodes of a Smolyak sparse grid of ``level`` on the domain's
box, built by the same combination technique as :func:`daskie.quadrature.smolyak_rule`:

    A(L, d) = sum_{L <= |l| <= L + d - 1} (-1)^(L + d - 1 - |l|) C(d - 1, L + d - 1 - |l|)
              U^{l_1} x ... x U^{l_d},

with ``U^l`` the ``(2l - 1)``-point Gauss-Legendre rule, here read as the tensor Lagrange
*interpolant* on those nodes (the node set is the union of the component grids, zero-weight
quadrature nodes included). ``M(mu)`` is interpolated from its nodal values by that
combination, and every integral is taken of the interpolant (product integration): for a
kernel of 1-D factors ``K(X, T) = prod_i k_i(x_i, t_i)`` (:class:`~daskie.problems.highdim.
ProductKernel`) the integral of a tensor Lagrange basis function over the box
``[a, b(X)]`` is the product over the coordinates of

    B_i[k](X) = Int_{a_i}^{b_i(X)} k_i(x_i, t) L_k(t) dt,

each taken by a 1-D Gauss rule of ``quad_nodes`` points. So Volterra, mixed and Fredholm
terms are all rows of one ``N x N`` matrix, assembled grid by grid as row-wise Kronecker
products, and the same rows at any point give the Nystrom interpolant
``(f + sum lam Int K M(mu)) / alpha`` there.

For a solution that is a sum of smooth products (each factor a 1-D function of moderate
degree), the error falls like the sparse grid's interpolation error, ``N^(-r) log(N)^(..)``,
with node counts that grow polynomially in d (d = 8: 161 / 1105 / 6097 nodes at levels
3 / 4 / 5; d = 12: 337 / 3225 / 24441). Memory is ``8 N^2`` bytes per term plus the Newton
Jacobian; time ``N^3``.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from daskie.errors import SpecError
from daskie.quadrature import gauss_legendre
from daskie.reference.qmc import _check_count, interpolate, nodal_solve

__all__ = ["SparseNystrom", "SparseSolution", "sparse_grid"]


@lru_cache(maxsize=16)
def _levels_1d(level: int):
    """The 1-D nodes on [0, 1] of levels 1..level (``2l - 1`` Gauss-Legendre points each), as
    indices into one list of distinct points (the midpoint is shared), and that list."""
    points: list[float] = []
    index: dict[float, int] = {}
    per_level = []
    for l in range(1, level + 1):
        u, _ = gauss_legendre(2 * l - 1, 0.0, 1.0)
        ids = []
        for v in np.round(u, 14):
            ids.append(index.setdefault(float(v), len(points)))
            if ids[-1] == len(points):
                points.append(float(v))
        per_level.append(np.array(ids))
    return np.array(points), tuple(per_level)


@lru_cache(maxsize=16)
def sparse_grid(d: int, level: int):
    """The Smolyak combination on ``[0, 1]^d``: ``(nodes (N, d), grids)`` with ``grids`` a
    tuple of ``(coef, levels, index)``: each component tensor grid's coefficient, its 1-D
    level per coordinate and the union-node index of each of its nodes (C order)."""
    d, level = int(d), int(level)
    points, per_level = _levels_1d(level)
    q = level + d - 1
    union: dict[tuple, int] = {}
    grids = []
    for s in range(max(d, q - d + 1), q + 1):
        coef = (-1) ** (q - s) * math.comb(d - 1, q - s)
        # compositions of s into d parts >= 1: levels l_i = 1 + extra_i, sum extra = s - d
        for extra in _partitions(s - d, d):
            levels = tuple(1 + e for e in extra)
            ids = [per_level[l - 1] for l in levels]
            index = np.array([union.setdefault(t, len(union)) for t in itertools.product(*ids)])
            grids.append((coef, levels, index))
    nodes = points[np.array(list(union), dtype=int).reshape(-1, d)]
    nodes.setflags(write=False)
    return nodes, tuple(grids)


def _partitions(total: int, parts: int):
    """Tuples of ``parts`` integers >= 0 summing to ``total``."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _partitions(total - first, parts - 1):
            yield (first,) + rest


def _barycentric(nodes: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Lagrange basis of ``nodes`` (m,) at ``t`` (any shape): shape ``t.shape + (m,)``."""
    m = len(nodes)
    if m == 1:
        return np.ones(t.shape + (1,))
    bary = np.array([1.0 / np.prod(nodes[k] - np.delete(nodes, k)) for k in range(m)])
    diff = t[..., None] - nodes
    exact = diff == 0.0
    diff[exact] = 1.0
    terms = bary / diff
    out = terms / terms.sum(axis=-1, keepdims=True)
    hit = exact.any(axis=-1)
    out[hit] = exact[hit]
    return out


class _Rows:
    """Product-integration rows of one term: ``rows(x) @ M(mu_nodes)`` is the integral."""

    def __init__(self, problem, term, level: int, quad_nodes: int):
        factors = getattr(term.kernel, "factors", None)
        if factors is None or len(factors) != problem.dim:
            raise SpecError("SparseNystrom needs kernels of 1-D factors (ProductKernel), "
                            f"one per coordinate; {problem.name} has another kernel")
        self.term, self.factors = term, factors
        self.d, self.level = problem.dim, level
        self.lo = np.asarray(problem.domain.lower, dtype=float)
        self.hi = np.asarray(problem.domain.upper, dtype=float)
        self.u, self.w = gauss_legendre(quad_nodes, 0.0, 1.0)
        points, per_level = _levels_1d(level)
        self.level_nodes = [points[ids] for ids in per_level]  # on [0, 1]
        _, self.grids = sparse_grid(self.d, level)

    def _axis(self, i, x, a, b):
        """``B[l][p, k] = Int_a^b k_i(x_p, t) L^l_k(t) dt`` for every level l: list of (n, m)."""
        t = a[:, None] + (b - a)[:, None] * self.u[None, :]  # (n, G)
        wk = (b - a)[:, None] * self.w[None, :] * self.factors[i](x[:, None], t)
        s = (t - self.lo[i]) / (self.hi[i] - self.lo[i])
        return [np.einsum("ng,ngk->nk", wk, _barycentric(nodes, s)) for nodes in self.level_nodes]

    def __call__(self, x: np.ndarray, n_nodes: int) -> np.ndarray:
        n = len(x)
        a = np.broadcast_to(np.asarray(self.term.lower, dtype=float), x.shape)
        b = self.term.upper_limits(x)
        axes = [self._axis(i, x[:, i], a[:, i], b[:, i]) for i in range(self.d)]
        out = np.zeros((n, n_nodes))
        for coef, levels, index in self.grids:
            row = np.full((n, 1), float(coef))
            for i, l in enumerate(levels):
                f = axes[i][l - 1]
                row = (row[:, :, None] * f[:, None, :]).reshape(n, -1)
            out[:, index] += row
        return out


class SparseSolution:
    """A sparse-grid Nystrom solution: nodal values and the Nystrom interpolant.

    Attributes
    ----------
    nodes : ndarray (N, d)
    values : ndarray (N,)
        ``mu`` at the nodes.
    wall_s : float
        Seconds of the solve (assembly included).
    n_unknowns, newton_iterations : int
    """

    def __init__(self, problem, nodes, values, rows, lams, wall_s, iterations):
        self.problem, self.nodes, self.values = problem, nodes, values
        self._rows, self._lams = rows, lams
        self.wall_s, self.n_unknowns, self.newton_iterations = wall_s, len(values), iterations

    def __repr__(self):
        return (f"SparseSolution(problem={self.problem.name!r}, n_unknowns={self.n_unknowns}, "
                f"newton_iterations={self.newton_iterations}, wall_s={self.wall_s:.3f})")

    def __call__(self, x) -> np.ndarray:
        """``mu`` at points ``x`` ``(k, d)``: ``(f + sum lam Int K M(mu)) / alpha``."""
        return interpolate(self.problem, x, self.values, self._lams,
                           lambda i, xs: self._rows[i](xs, self.n_unknowns),
                           max(1, 2**24 // max(self.n_unknowns, 1)), "sparse-grid Nystrom")


@dataclass(frozen=True)
class SparseNystrom:
    """Nystrom on a Smolyak sparse grid with product integration (module docstring).

    Parameters
    ----------
    level : int
        Smolyak level (>= 1); node counts in :meth:`unknowns`.
    quad_nodes : int
        Gauss points of the 1-D integrals of kernel factor x Lagrange basis.
    tol, max_newton : float, int
        Newton's stopping rule (as :class:`~daskie.reference.QMCNystrom`).
    memory_budget : int, optional
        Bytes the dense matrices may take; a larger grid is refused with a SpecError before
        anything is assembled.
    """

    level: int = 3
    quad_nodes: int = 64
    tol: float = 1e-12
    max_newton: int = 30
    memory_budget: int | None = None

    def __post_init__(self):
        _check_count("level", self.level, 1, "SparseNystrom")
        _check_count("quad_nodes", self.quad_nodes, 1, "SparseNystrom")
        _check_count("max_newton", self.max_newton, 1, "SparseNystrom")
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise SpecError(f"SparseNystrom.tol must be a positive number, got {self.tol!r}")
        if self.memory_budget is not None:
            _check_count("memory_budget", self.memory_budget, 1, "SparseNystrom")

    def unknowns(self, problem) -> int:
        """N, the sparse grid's node count for ``problem``'s dimension."""
        return len(sparse_grid(problem.dim, self.level)[0])

    def matrix_bytes(self, problem) -> int:
        """Bytes of the dense matrices: one operator per term, plus the Newton Jacobian."""
        n = self.unknowns(problem)
        return 8 * n * n * (len(problem.terms) + (0 if problem.is_linear else 1))

    def solve(self, problem) -> SparseSolution:
        """Solve ``problem`` on its box.

        Raises
        ------
        SpecError
            For a domain that is not a single box, a kernel without 1-D factors, or when
            :meth:`matrix_bytes` exceeds ``memory_budget``.
        NewtonDidNotConverge
            When Newton's method does not reach ``tol`` within ``max_newton`` iterations.
        """
        if not problem.domain.is_box or len(problem.domain.cells()) != 1:
            raise SpecError("SparseNystrom needs a domain that is one box")
        need = self.matrix_bytes(problem)
        if self.memory_budget is not None and need > self.memory_budget:
            raise SpecError(f"SparseNystrom(level={self.level}) on d = {problem.dim} needs "
                            f"{need / 2**30:.2f} GiB of dense matrices, above memory_budget "
                            f"{self.memory_budget / 2**30:.2f} GiB")
        start = time.perf_counter()
        lo = np.asarray(problem.domain.lower, dtype=float)
        hi = np.asarray(problem.domain.upper, dtype=float)
        unit, _ = sparse_grid(problem.dim, self.level)
        nodes = lo + (hi - lo) * unit
        rows = [_Rows(problem, t, self.level, self.quad_nodes) for t in problem.terms]
        lams = [float(t.lam) for t in problem.terms]
        ops = [lam * r(nodes, len(nodes)) for lam, r in zip(lams, rows)]
        mu, iterations = nodal_solve(problem.alpha_at(nodes), problem.f_at(nodes), ops,
                                     [t.nonlinearity for t in problem.terms],
                                     linear=problem.is_linear, tol=self.tol,
                                     max_newton=self.max_newton, who="SparseNystrom")
        return SparseSolution(problem, nodes, mu, rows, lams, time.perf_counter() - start,
                              iterations)
