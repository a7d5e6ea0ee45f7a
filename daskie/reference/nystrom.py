"""The classical reference solver: a Nystrom method on tensor Gauss-Legendre nodes (numpy only).

The unknowns are ``mu`` at ``n`` Gauss-Legendre points per coordinate on every cell of the
domain. Each integral ``Int_{lower}^{upper(X)} K(X, T) M(mu(T)) dT`` is computed with a Gauss
rule mapped onto the integration box (cut along the domain's cells), and ``M(mu)`` at the
mapped nodes is the tensor barycentric Lagrange interpolant of its nodal values. For smooth
data the discrete solution converges spectrally in ``n``.

Weakly singular 1-D terms ``g(x, t) |x - t|^(-a)`` use product Gauss-Jacobi rules with the
singular end at ``t = x``. Their solutions behave like ``(x - lower)^(1 - a)`` near the lower
end when the term is a Volterra one, so the nodes are then graded there:
``x = lower + L s^q`` with ``q`` the denominator of ``1 - a`` (``q = 2`` for Abel's kernel),
which makes such solutions smooth in ``s`` and restores fast convergence. A Fredholm singular
term over a sub-interval that does not contain ``x`` is integrated with the singular rule at
its nearest end; that is only algebraically accurate for ``x`` just outside the interval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from daskie.errors import DaskieError, SpecError
from daskie.quadrature import gauss_jacobi, gauss_legendre

__all__ = ["Nystrom", "ReferenceSolution", "NewtonDidNotConverge"]

#: Points whose operator rows are assembled at once (bounds memory to a few 10 MB in 3-D).
_CHUNK = 512


class NewtonDidNotConverge(DaskieError, ArithmeticError):
    """Newton's method for a nonlinear reference solve did not reach its tolerance."""


@dataclass(frozen=True)
class _Axis:
    """One coordinate of one cell, parametrised as ``x = lo + length * s**q``, s in [0, 1]."""

    lo: float
    length: float
    q: int = 1

    def x(self, s):
        return self.lo + self.length * s**self.q

    def s(self, x):
        r = (np.asarray(x, dtype=float) - self.lo) / self.length
        return r if self.q == 1 else np.clip(r, 0.0, None) ** (1.0 / self.q)

    def dx(self, s):
        return self.length * self.q * s ** (self.q - 1)


def _contract_leading(g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Contract axis 1 of ``g`` (k, a, ...) with ``b`` (k, a, i), appending i: (k, ..., i)."""
    k, a = g.shape[:2]
    out = np.matmul(g.reshape(k, a, -1).transpose(0, 2, 1), b)
    return out.reshape(g.shape[:1] + g.shape[2:] + b.shape[2:])


class _Grid:
    """Nodes, interpolation and quadrature operators of one Nystrom discretisation."""

    def __init__(self, problem, n: int):
        self.problem, self.n, self.d = problem, n, problem.dim
        ref, w = np.polynomial.legendre.leggauss(n)
        self.s_nodes = 0.5 * (ref + 1.0)
        # Barycentric weights of Gauss-Legendre points (any common factor cancels).
        self.bary = (-1.0) ** np.arange(n) * np.sqrt((1.0 - ref**2) * w)
        q = self._grading(problem)
        self.cells = [[_Axis(lo[j], hi[j] - lo[j], q) for j in range(self.d)]
                      for lo, hi in problem.domain.cells()]
        mesh = np.stack(np.meshgrid(*([self.s_nodes] * self.d), indexing="ij"), -1)
        mesh = mesh.reshape(-1, self.d)
        self.size = n**self.d
        self.nodes = np.concatenate(
            [np.stack([ax.x(mesh[:, j]) for j, ax in enumerate(axes)], -1) for axes in self.cells])

    @staticmethod
    def _grading(problem) -> int:
        singular = [t.singularity for t in problem.terms if t.singularity > 0 and not t.is_fredholm]
        if problem.dim != 1 or not problem.domain.is_box or not singular:
            return 1
        return max(Fraction(1.0 - a).limit_denominator(4).denominator for a in singular)

    def basis(self, s: np.ndarray) -> np.ndarray:
        """Lagrange basis at reference points ``s`` (any shape) -> shape ``s.shape + (n,)``."""
        diff = s[..., None] - self.s_nodes
        exact = diff == 0.0
        diff[exact] = 1.0
        terms = self.bary / diff
        out = terms / terms.sum(axis=-1, keepdims=True)
        hit = exact.any(axis=-1)
        out[hit] = exact[hit]
        return out

    def interpolate(self, x: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Tensor Lagrange interpolant of nodal ``values`` at points ``x`` of the domain."""
        out = np.full(len(x), np.nan)
        for c, axes in enumerate(self.cells):
            lo = np.array([ax.lo for ax in axes])
            hi = lo + np.array([ax.length for ax in axes])
            inside = np.isnan(out) & np.all((x >= lo) & (x <= hi), axis=1)
            g = values[c * self.size:(c + 1) * self.size].reshape((1,) + (self.n,) * self.d)
            g = np.broadcast_to(g, (int(inside.sum()),) + g.shape[1:])
            for j, ax in enumerate(axes):
                g = _contract_leading(g, self.basis(ax.s(x[inside, j]))[:, :, None])
            out[inside] = g.reshape(-1)
        return out

    def rows(self, term, x: np.ndarray) -> np.ndarray:
        """Quadrature operator: ``rows(term, x) @ v`` is ``Int K(x, T) v(T) dT`` for nodal ``v``."""
        out = np.zeros((len(x), len(self.nodes)))
        lower = np.broadcast_to(np.asarray(term.lower, dtype=float), x.shape)
        upper = term.upper_limits(x)
        for c, axes in enumerate(self.cells):
            cell_lo = np.array([ax.lo for ax in axes])
            lo = np.maximum(lower, cell_lo)
            hi = np.maximum(np.minimum(upper, cell_lo + [ax.length for ax in axes]), lo)
            if not np.any(np.all(hi > lo, axis=1)):
                continue  # the integration box misses this cell
            if term.singularity > 0:
                rules = [self._singular_rule(term.singularity, axes[0], x[:, 0], lo[:, 0], hi[:, 0])]
            else:
                rules = [self._split_rule(ax, lo[:, j], hi[:, j], x[:, j]) if j in term.kink
                         else self._gauss_rule(ax, lo[:, j], hi[:, j]) for j, ax in enumerate(axes)]
            out[:, c * self.size:(c + 1) * self.size] = self._contract(term, x, axes, rules)
        return out

    def _gauss_rule(self, ax: _Axis, lo, hi):
        a, b = ax.s(lo), ax.s(hi)
        u, w = gauss_legendre(self.n, 0.0, 1.0)
        s = a[:, None] + (b - a)[:, None] * u
        return s, (b - a)[:, None] * w * ax.dx(s)

    def _split_rule(self, ax: _Axis, lo, hi, x):
        """Gauss rules on ``[lo, x]`` and ``[x, hi]``: the kernel's derivative jumps at
        ``t = x`` (a kink), and one rule across it converges only like ``n^-2``."""
        mid = np.clip(x, lo, hi)
        (s1, w1), (s2, w2) = self._gauss_rule(ax, lo, mid), self._gauss_rule(ax, mid, hi)
        return np.concatenate([s1, s2], axis=1), np.concatenate([w1, w2], axis=1)

    def _singular_rule(self, a: float, ax: _Axis, x, lo, hi):
        """Product Gauss-Jacobi rule in ``s`` for ``|x - t|^(-a)``, split at ``t = x``."""
        sx = ax.s(x)
        s_lo, s_hi = ax.s(lo), ax.s(hi)
        s_c = np.clip(sx, s_lo, s_hi)
        pieces = []
        for (ja, jb), left, right in (((-a, 0.0), s_lo, s_c), ((0.0, -a), s_c, s_hi)):
            u, w = gauss_jacobi(self.n, ja, jb)
            half = 0.5 * (right - left)[:, None]
            s = left[:, None] + half * (u + 1.0)
            # |x - X(s)| = length * S * |sx - s|, S = sum_i sx^i s^(q-1-i), exact for X = s^q.
            big_s = sum(sx[:, None] ** i * s ** (ax.q - 1 - i) for i in range(ax.q))
            big_s = np.where(big_s > 0, big_s, 1.0)
            gap = np.abs(s_c[:, None] - s)
            ratio = np.where(gap > 0, np.abs(sx[:, None] - s) / np.where(gap > 0, gap, 1.0), 1.0)
            ratio = np.where(sx[:, None] == s_c[:, None], 1.0, ratio)
            dist = ax.length * big_s * ratio
            pieces.append((s, half ** (1.0 - a) * w * dist ** (-a) * ax.dx(s)))
        return tuple(np.concatenate(p, axis=1) for p in zip(*pieces))

    def _contract(self, term, x, axes, rules):
        k, d = x.shape
        sizes = tuple(s.shape[1] for s, _ in rules)
        shape = (k,) + sizes

        def along(j, v):  # put the per-axis array v (k, n_j) on tensor axis j
            return v.reshape((k,) + tuple(sizes[j] if i == j else 1 for i in range(d)))

        t = np.stack([np.broadcast_to(along(j, axes[j].x(s)), shape)
                      for j, (s, _) in enumerate(rules)], axis=-1)
        weight = np.ones(shape)
        for j, (_, w) in enumerate(rules):
            weight = weight * along(j, w)
        kern = np.broadcast_to(term.kernel(x.reshape((k,) + (1,) * d + (d,)), t), shape)
        g = weight * kern
        for s, _ in rules:
            g = _contract_leading(g, self.basis(s))
        return g.reshape(k, -1)

    def operator(self, term, x: np.ndarray) -> np.ndarray:
        """:meth:`rows` assembled in chunks of points."""
        return np.concatenate([self.rows(term, x[i:i + _CHUNK]) for i in range(0, len(x), _CHUNK)])


class ReferenceSolution:
    """The Nystrom solution of a problem: nodal values and an evaluator.

    Attributes
    ----------
    problem : Problem
        The problem solved.
    nodes : ndarray, shape (m, d)
        Collocation nodes.
    values : ndarray, shape (m,)
        ``mu`` at the nodes.
    wall_s : float
        Wall-clock seconds of the solve, assembly included.
    n_unknowns : int
        ``m``.
    newton_iterations : int
        Newton updates taken (0 for linear problems, solved directly).
    residual : float
        Max absolute residual of the discrete system at the solution.
    noisy : bool
        Whether the perturbed data of ``problem.noise`` were solved.
    """

    def __init__(self, problem, grid, values, lams, wall_s, newton_iterations, residual, noisy):
        self.problem, self._grid, self._lams = problem, grid, lams
        self.nodes, self.values = grid.nodes, values
        self.wall_s, self.n_unknowns = wall_s, len(values)
        self.newton_iterations, self.residual, self.noisy = newton_iterations, residual, noisy

    def __repr__(self):
        return (f"ReferenceSolution(problem={self.problem.name!r}, n_unknowns={self.n_unknowns}, "
                f"newton_iterations={self.newton_iterations}, residual={self.residual:.2e}, "
                f"wall_s={self.wall_s:.3f})")

    def __call__(self, x) -> np.ndarray:
        """``mu`` at points ``x`` of shape ``(k, d)`` inside the domain; returns shape ``(k,)``.

        Uses the Nystrom interpolant ``(f + sum lam Int K M(mu)) / alpha`` with the solver's
        quadrature, which is as accurate as the nodal values. Where ``alpha == 0``, and for
        noisy solves (whose ``f`` is perturbed at the nodes only), it falls back to Lagrange
        interpolation of the nodal values.
        """
        p = self.problem
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != p.dim:
            raise SpecError(f"x must have shape (k, {p.dim}), got {x.shape}")
        if not np.all(p.domain.contains(x)):
            raise SpecError("x has points outside the problem's domain, where mu is not defined")
        alpha = p.alpha_at(x)
        out = self._grid.interpolate(x, self.values)
        use = alpha != 0 if not self.noisy else np.zeros(len(x), dtype=bool)
        if np.any(use):
            xs = x[use]
            rhs = np.asarray(p.f(xs), dtype=float).copy()
            for lam, term in zip(self._lams, p.terms):
                rhs += lam * (self._grid.operator(term, xs) @ term.nonlinearity(self.values))
            out[use] = rhs / alpha[use]
        return out


@dataclass(frozen=True)
class Nystrom:
    """Nystrom reference solver on tensor Gauss-Legendre nodes.

    Parameters
    ----------
    n : int
        Gauss-Legendre points per coordinate on each cell of the domain (>= 2); the
        system has ``n**d`` unknowns per cell.
    tol : float
        Newton stops when the update is below ``tol * max(1, max|mu|)``.
    max_newton : int
        Newton iterations allowed before :class:`NewtonDidNotConverge` is raised.
    memory_budget : int, optional
        Bytes the dense matrices may take (:meth:`matrix_bytes`); a larger system is refused
        with a SpecError before anything is assembled (in high dimension ``n**d`` unknowns
        stop fitting soon: d = 6, n = 8 is a 2.6e5-unknown system of 550 GB).

    Notes
    -----
    Linear problems are solved with one dense solve, nonlinear ones with Newton's method
    (Jacobian ``diag(alpha) - sum lam A diag(M'(mu))``) started from ``f / alpha``.
    First-kind equations (``alpha == 0`` everywhere) are ill-posed: their discrete
    system is solved in the least-squares sense, its error grows with ``n`` once the
    quadrature error falls below the conditioning, so use small ``n`` for them.
    """

    n: int = 16
    tol: float = 1e-13
    max_newton: int = 50
    memory_budget: int | None = None

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 2:
            raise SpecError(f"n must be an integer >= 2 (Gauss points per coordinate), got {self.n!r}")
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise SpecError(f"tol must be a positive number, got {self.tol!r}")
        if isinstance(self.max_newton, bool) or not isinstance(self.max_newton, (int, np.integer)) \
                or self.max_newton < 1:
            raise SpecError(f"max_newton must be an integer >= 1, got {self.max_newton!r}")
        budget = self.memory_budget
        if budget is not None and (isinstance(budget, bool) or budget < 1
                                   or not isinstance(budget, (int, np.integer))):
            raise SpecError(f"memory_budget must be a positive int (bytes) or None, "
                            f"got {self.memory_budget!r}")

    def unknowns(self, problem) -> int:
        """Size of the discrete system: ``n**d`` nodes per cell of the domain."""
        return len(problem.domain.cells()) * int(self.n) ** problem.dim

    def matrix_bytes(self, problem) -> int:
        """Bytes of the dense matrices of a solve: one operator per term, plus the Newton
        Jacobian for nonlinear problems."""
        m = self.unknowns(problem)
        return 8 * m * m * (len(problem.terms) + (0 if problem.is_linear else 1))

    def residual(self, problem, mu, x=None) -> np.ndarray:
        """Residual ``alpha mu - f - sum lam Int K M(mu)`` of the continuous equation for a
        function ``mu`` (a numpy callable on ``(k, d)`` points), at points ``x`` (default:
        this rule's nodes), with the integrals by this rule (``n`` nodes per coordinate,
        kinks split, singular ends graded): a refined check that does not depend on how
        ``mu`` was computed.
        """
        grid = _Grid(problem, int(self.n))
        x = grid.nodes if x is None else np.asarray(x, dtype=float)
        values = np.asarray(mu(grid.nodes), dtype=float)
        out = problem.alpha_at(x) * np.asarray(mu(x), dtype=float) - problem.f_at(x)
        for term in problem.terms:
            out -= term.lam * (grid.operator(term, x) @ term.nonlinearity(values))
        return out

    def solve(self, problem, noisy: bool = False, initial=None) -> ReferenceSolution:
        """Solve ``problem``; with ``noisy=True`` solve it with one draw of ``problem.noise``.

        ``initial`` (a numpy callable ``mu(x)``, e.g. a neural answer) is where Newton starts
        for a nonlinear problem, instead of ``f / alpha``: whether Newton stays near it tells
        whether it lies on a genuine solution of the equation.

        Raises
        ------
        SpecError
            For ``noisy=True`` without ``problem.noise``, or a nonlinear first-kind problem.
        NewtonDidNotConverge
            When Newton's method does not reach ``tol`` within ``max_newton`` iterations.
        """
        need = self.matrix_bytes(problem)
        if self.memory_budget is not None and need > self.memory_budget:
            raise SpecError(f"Nystrom(n={self.n}) on d = {problem.dim} needs {need / 2**30:.3g} GiB "
                            f"of dense matrices ({self.unknowns(problem)} unknowns), above "
                            f"memory_budget {self.memory_budget / 2**30:.3g} GiB")
        start = time.perf_counter()
        grid = _Grid(problem, int(self.n))
        x = grid.nodes
        f = problem.f_at(x)  # checked at every node
        lams = np.array([t.lam for t in problem.terms])
        if noisy:
            if problem.noise is None:
                raise SpecError(f"noisy=True but problem {problem.name!r} has no noise")
            rng = np.random.default_rng(problem.noise.seed)
            f, factors = problem.noise.draw(f, len(lams), rng)
            lams = lams * factors
        alpha = problem.alpha_at(x)
        first_kind = bool(np.all(alpha == 0))
        ops = [lam * grid.operator(t, x) for lam, t in zip(lams, problem.terms)]
        ms = [t.nonlinearity for t in problem.terms]

        def residual(mu):
            return alpha * mu - f - sum(a @ m(mu) for a, m in zip(ops, ms))

        if problem.is_linear:
            mat = np.diag(alpha) - sum(ops)
            mu = np.linalg.lstsq(mat, f, rcond=None)[0] if first_kind else np.linalg.solve(mat, f)
            iterations = 0
        elif first_kind:
            raise SpecError("nonlinear first-kind problems (alpha == 0 with a nonlinear M) "
                            "are not supported by the reference solver")
        else:
            mu0 = None if initial is None else np.asarray(initial(x), dtype=float)
            mu, iterations = self._newton(alpha, f, ops, ms, residual, mu0)
        wall = time.perf_counter() - start
        res = float(np.max(np.abs(residual(mu))))
        return ReferenceSolution(problem, grid, mu, lams, wall, iterations, res, noisy)

    def _newton(self, alpha, f, ops, ms, residual, mu0=None):
        safe = np.where(alpha != 0, alpha, 1.0)
        mu = np.where(alpha != 0, f / safe, 0.0) if mu0 is None else mu0.copy()
        previous = np.inf
        for it in range(1, self.max_newton + 1):
            jac = np.diag(alpha) - sum(a * m.grad(mu)[None, :] for a, m in zip(ops, ms))
            step = np.linalg.solve(jac, residual(mu))
            mu = mu - step
            size, scale = float(np.max(np.abs(step))), max(1.0, float(np.max(np.abs(mu))))
            # Stop at tol, or once the updates reach rounding level and stop shrinking.
            if size <= self.tol * scale or (size <= 1e-10 * scale and size >= 0.5 * previous):
                return mu, it
            previous = size
        raise NewtonDidNotConverge(
            f"Newton did not converge in max_newton={self.max_newton} iterations (last update "
            f"{size:.2e}, tol {self.tol:.0e}); raise max_newton or check that the problem has a "
            "solution near f / alpha")
