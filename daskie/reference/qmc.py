"""Quasi-Monte Carlo Nystrom: the classical rival in high dimension (numpy only).

The unknowns are ``mu`` at ``N`` scrambled-Sobol nodes ``t_j`` of the domain's box, each with
the weight ``vol / N``. Every integral at a node ``t_i`` is the equal-weight sum over all nodes,
with the integration box ``[a, b(t_i)]`` of Volterra directions as an indicator
``1[a <= t_j <= b(t_i)]``:

    alpha_i mu_i = f_i + sum_k lam_k (vol / N) sum_j K_k(t_i, t_j) 1_k[i, j] M_k(mu_j),

an ``N x N`` dense system (solved directly, or by Newton for nonlinear ``M``). The solution
between nodes is the Nystrom interpolant ``(f(x) + sum lam Int K M(mu)) / alpha`` with the same
rule. Its memory is ``8 N^2`` bytes (plus one Newton Jacobian of the same size) and its time
``N^3``: that, and the QMC error of an integrand with a jump (the Volterra indicator) or a
narrow peak (a sharp kernel), is what bounds it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from daskie.errors import SpecError
from daskie.reference.nystrom import NewtonDidNotConverge

__all__ = ["QMCNystrom", "QMCSolution", "interpolate", "nodal_solve", "operator_matrix"]

#: Rows of the operator assembled at once (the kernel's temporaries are rows x N x d).
_ROWS = 256


def _check_count(name, value, low, owner="QMCNystrom"):
    """Raise a SpecError naming ``owner.name`` unless ``value`` is an integer >= ``low`` (the
    option checks of the quadrature rivals)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise SpecError(f"{owner}.{name} must be an integer >= {low}, got {value!r}")


def _operator(problem, i, x, nodes, weight):
    """``A[p, j] = weight K_i(x_p, t_j) 1[t_j in the box of x_p]`` for term ``i``."""
    term = problem.terms[i]
    a = np.asarray(term.lower, dtype=float)
    out = np.empty((len(x), len(nodes)))
    for s in range(0, len(x), _ROWS):
        xs = x[s:s + _ROWS]
        k = problem.kernel_at(i, xs[:, None, :], nodes[None, :, :])
        if not term.is_fredholm:
            b = term.upper_limits(xs)
            inside = np.all((nodes[None, :, :] >= a) & (nodes[None, :, :] <= b[:, None, :]), axis=2)
            k = k * inside
        out[s:s + _ROWS] = weight * k
    return out


def nodal_solve(alpha, f, ops, ms, *, linear: bool, tol: float, max_newton: int, who: str):
    """Solve ``alpha mu = f + sum_k ops[k] @ ms[k](mu)`` for nodal ``mu``: one dense solve
    when linear, else Newton from ``f / alpha`` (stops when the update is below
    ``tol * max(1, max|mu|)``, or below ``1e-10`` of it and no longer halving). Returns
    ``(mu, iterations)``; raises :class:`NewtonDidNotConverge` naming ``who``."""
    if linear:
        return np.linalg.solve(np.diag(alpha) - sum(ops), f), 0
    mu = f / np.where(alpha != 0, alpha, 1.0)
    previous = np.inf
    for iterations in range(1, max_newton + 1):
        jac = np.diag(alpha) - sum(a * m.grad(mu)[None, :] for a, m in zip(ops, ms))
        res = alpha * mu - f - sum(a @ m(mu) for a, m in zip(ops, ms))
        step = np.linalg.solve(jac, res)
        del jac
        mu = mu - step
        size, scale = float(np.max(np.abs(step))), max(1.0, float(np.max(np.abs(mu))))
        if size <= tol * scale or (size <= 1e-10 * scale and size >= 0.5 * previous):
            return mu, iterations
        previous = size
    raise NewtonDidNotConverge(f"{who}: Newton did not converge in max_newton={max_newton} "
                               f"iterations (last update {size:.2e})")


def operator_matrix(problem, i, x, nodes, weight) -> np.ndarray:
    """The equal-weight Nystrom matrix of term ``i``: ``A[p, j] = weight K_i(x_p, t_j)
    1[t_j in the integration box of x_p]`` for points ``x`` ``(k, d)`` and nodes ``(N, d)``
    (assembled in blocks of rows)."""
    return _operator(problem, i, np.asarray(x, dtype=float), np.asarray(nodes, dtype=float),
                     float(weight))


def interpolate(problem, x, values, lams, rows, chunk: int, who: str) -> np.ndarray:
    """The Nystrom interpolant ``(f + sum lam Int K M(mu)) / alpha`` at points ``x`` ``(k, d)``
    from nodal ``values``: ``rows(i, xs)`` is term ``i``'s weight-kernel matrix at the points
    ``xs``, taken ``chunk`` points at a time; ``who`` names the method in errors."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] != problem.dim:
        raise SpecError(f"x must have shape (k, {problem.dim}), got {x.shape}")
    alpha = problem.alpha_at(x)
    if np.any(alpha == 0):
        raise SpecError(f"the {who} interpolant needs alpha != 0 at every point")
    out = problem.f_at(x).copy()
    for i, (lam, term) in enumerate(zip(lams, problem.terms)):
        mv = term.nonlinearity(values)
        for s in range(0, len(x), chunk):
            out[s:s + chunk] += lam * (rows(i, x[s:s + chunk]) @ mv)
    return out / alpha


class QMCSolution:
    """A QMC-Nystrom solution: nodal values and the Nystrom interpolant.

    Attributes
    ----------
    nodes : ndarray (N, d)
    values : ndarray (N,)
        ``mu`` at the nodes.
    wall_s : float
        Seconds of the solve (assembly included).
    n_unknowns : int
    newton_iterations : int
    residual : float
        Max absolute residual of the discrete system.
    """

    def __init__(self, problem, nodes, weight, values, lams, wall_s, iterations, residual):
        self.problem, self.nodes, self.values = problem, nodes, values
        self._weight, self._lams = weight, lams
        self.wall_s, self.n_unknowns = wall_s, len(values)
        self.newton_iterations, self.residual = iterations, residual

    def __repr__(self):
        return (f"QMCSolution(problem={self.problem.name!r}, n_unknowns={self.n_unknowns}, "
                f"newton_iterations={self.newton_iterations}, wall_s={self.wall_s:.3f})")

    def __call__(self, x) -> np.ndarray:
        """``mu`` at points ``x`` ``(k, d)``: ``(f + sum lam Int K M(mu)) / alpha`` by the rule."""
        p = self.problem
        return interpolate(p, x, self.values, self._lams,
                           lambda i, xs: _operator(p, i, xs, self.nodes, self._weight),
                           4 * _ROWS, "QMC-Nystrom")


@dataclass(frozen=True)
class QMCNystrom:
    """Nystrom on ``nodes`` scrambled-Sobol points with equal weights (dense solve, Newton).

    Parameters
    ----------
    nodes : int
        N, the number of nodes and unknowns (memory ``8 N^2`` bytes per dense matrix).
    seed : int
        Scrambling seed of the Sobol sequence.
    tol : float
        Newton stops when the update is below ``tol * max(1, max|mu|)``.
    max_newton : int
        Newton iterations allowed before :class:`NewtonDidNotConverge`.
    memory_budget : int, optional
        Bytes the dense matrices may take; a larger N is refused with a SpecError.
    """

    nodes: int = 1024
    seed: int = 0
    tol: float = 1e-12
    max_newton: int = 30
    memory_budget: int | None = None

    def __post_init__(self):
        _check_count("nodes", self.nodes, 2)
        _check_count("seed", self.seed, 0)
        _check_count("max_newton", self.max_newton, 1)
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise SpecError(f"QMCNystrom.tol must be a positive number, got {self.tol!r}")
        if self.memory_budget is not None:
            _check_count("memory_budget", self.memory_budget, 1)

    def matrix_bytes(self, problem) -> int:
        """Bytes of the dense matrices: one operator per term, plus the Newton Jacobian."""
        n = int(self.nodes)
        return 8 * n * n * (len(problem.terms) + (0 if problem.is_linear else 1))

    def solve(self, problem) -> QMCSolution:
        """Solve ``problem`` on its box.

        Raises
        ------
        SpecError
            For a domain that is not a box, or when :meth:`matrix_bytes` exceeds
            ``memory_budget``.
        NewtonDidNotConverge
            When Newton's method does not reach ``tol`` within ``max_newton`` iterations.
        """
        if not problem.domain.is_box:
            raise SpecError("QMCNystrom needs a box domain")
        need = self.matrix_bytes(problem)
        if self.memory_budget is not None and need > self.memory_budget:
            raise SpecError(f"QMCNystrom(nodes={self.nodes}) needs {need / 2**30:.2f} GiB of dense "
                            f"matrices, above memory_budget {self.memory_budget / 2**30:.2f} GiB")
        from daskie.quadrature import sobol_rule

        start = time.perf_counter()
        lo, hi = problem.domain.lower, problem.domain.upper
        nodes, w = sobol_rule(self.nodes, lo, hi, seed=self.seed)
        weight = float(w[0])
        f = problem.f_at(nodes)
        alpha = problem.alpha_at(nodes)
        lams = [float(t.lam) for t in problem.terms]
        ops = [lam * _operator(problem, i, nodes, nodes, weight) for i, lam in enumerate(lams)]
        ms = [t.nonlinearity for t in problem.terms]

        def residual(mu):
            return alpha * mu - f - sum(a @ m(mu) for a, m in zip(ops, ms))

        mu, iterations = nodal_solve(alpha, f, ops, ms, linear=problem.is_linear, tol=self.tol,
                                     max_newton=self.max_newton, who="QMCNystrom")
        wall = time.perf_counter() - start
        res = float(np.max(np.abs(residual(mu))))
        return QMCSolution(problem, nodes, weight, mu, lams, wall, iterations, res)
