"""Quadrature collocation (the PINN baseline of seed 000): one network for mu, integrals by
fixed quadrature rules.

* Fredholm terms: one node set shared by every collocation point (tensor Gauss-Legendre on
  each domain cell for d <= ``gauss_max_dim``, scrambled Sobol above), so the integral is a
  dense matrix times ``M(mu(nodes))``.
* Volterra and mixed terms: the rule is mapped onto each point's box ``[a, b(X)]``.
* Weak singularities ``|x - t|^(-a)`` (1-D): product Gauss-Jacobi rules with the singular end
  at ``t = x`` (the interval is split at x for Fredholm limits).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from daskie.errors import SpecError, check_int
from daskie.formulations.base import Discretization, Evaluation, Formulation, SubModel, shard_rows
from daskie.nn.mlp import MLP
from daskie.quadrature import gauss_jacobi, sobol_rule, tensor_rule

__all__ = ["QuadratureCollocation"]


def collocation_points(problem, n, seed, graded_power=1.0):
    """Scrambled-Sobol collocation points in the domain; for 1-D problems with a weak
    singularity an optional grading ``x = a + (b - a) u**p`` clusters points at the left end."""
    x = problem.domain.sample(n, seed=seed)
    if graded_power != 1.0:
        lo, hi = problem.domain.lower[0], problem.domain.upper[0]
        x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** graded_power
    return x


def test_set(problem, n_test, seed):
    """Held-back test points (a Sobol stream no training set uses) and the exact solution there."""
    pts = problem.domain.sample(n_test, seed=10_007 + seed)
    exact = None if problem.exact is None else np.asarray(problem.exact(pts), dtype=float)
    return pts, exact


def rhs_values(problem, x, seed):
    """``f`` at ``x`` and the lambda factors, with one seeded noise draw if the problem has noise."""
    f = np.asarray(problem.f(x), dtype=float)
    factors = np.ones(len(problem.terms))
    if problem.noise is not None:
        f, factors = problem.noise.draw(f, len(problem.terms), np.random.default_rng(problem.noise.seed + seed))
    return f, factors


@dataclass(frozen=True)
class QuadratureCollocation(Formulation):
    """One network for mu; integrals by quadrature at fixed nodes.

    Parameters
    ----------
    net : MLP
        The network for mu.
    points : int or "auto"
        Collocation points; ``"auto"`` uses 2x the parameter count (fewer points than
        parameters lets the loss fall while the error does not).
    nodes : int
        Gauss points per coordinate (per domain cell) of the shared Fredholm rules in
        dimensions up to ``gauss_max_dim``, and of the 1-D Gauss-Jacobi rules.
    local_nodes : int
        Gauss points per coordinate of the per-point (Volterra and mixed) rules; these
        are evaluated at every collocation point, so they are kept smaller.
    qmc_nodes : int
        Sobol nodes for Fredholm terms above ``gauss_max_dim``.
    gauss_max_dim : int
        Largest dimension that uses tensor Gauss rules (they grow as nodes**d).
    test_points : int
        Held-back Sobol points for the MSE.
    graded : float
        Grading exponent for 1-D singular problems' collocation points (1 = none).
    """

    net: MLP = field(default_factory=MLP)
    points: int | str = "auto"
    nodes: int = 12
    local_nodes: int = 6
    qmc_nodes: int = 4096
    gauss_max_dim: int = 3
    test_points: int = 1000
    graded: float = 1.0

    def __post_init__(self):
        if not isinstance(self.net, MLP):
            raise SpecError(f"net must be a daskie MLP, got {type(self.net).__name__}")
        if not (isinstance(self.points, str) and self.points == "auto"):
            check_int("points", self.points, alternative='"auto"')
        for name in ("nodes", "local_nodes", "qmc_nodes", "gauss_max_dim", "test_points"):
            check_int(name, getattr(self, name))
        if not isinstance(self.graded, (int, float)) or isinstance(self.graded, bool) or not self.graded >= 1.0:
            raise SpecError(f"graded must be >= 1, got {self.graded}")

    @property
    def label(self) -> str:
        return "quadrature"

    def _fredholm_rule(self, problem, term, seed):
        d = problem.dim
        dom = problem.domain
        boxes = []
        for lo, hi in dom.cells():
            a = np.maximum(lo, term.lower)
            b = np.minimum(hi, term.upper)
            if np.all(b > a):
                boxes.append((a, b))
        if d <= self.gauss_max_dim:
            parts = [tensor_rule(self.nodes, a, b) for a, b in boxes]
        else:
            parts = [sobol_rule(self.qmc_nodes, a, b, seed=seed + 17) for a, b in boxes]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _mapped_rule(self, term, x):
        """Per-point rule on ``[a, b(x)]``: nodes ``(n, q, d)``, weights ``(n, q)``."""
        a = np.asarray(term.lower)
        b = term.upper_limits(x)
        unit_nodes, unit_w = tensor_rule(self.local_nodes, np.zeros(len(a)), np.ones(len(a)))
        span = b - a  # (n, d)
        nodes = a + span[:, None, :] * unit_nodes[None, :, :]
        weights = unit_w[None, :] * np.prod(span, axis=1)[:, None]
        return nodes, weights

    def _singular_rule(self, term, x):
        """Product Gauss-Jacobi for ``g(x,t) |x-t|^(-a)`` in 1-D: nodes ``(n, q, 1)``, weights
        including the singular factor."""
        a_exp = term.singularity
        u, w = gauss_jacobi(self.nodes, -a_exp, 0.0)  # weight (1-u)^(-a): singular at u = 1
        lo = term.lower[0]
        xs = x[:, 0]
        pieces_t, pieces_w = [], []
        # [lo, x]: t = lo + (x - lo)(1 + u)/2, so x - t = (x - lo)(1 - u)/2.
        h = (xs - lo) / 2.0
        pieces_t.append(lo + h[:, None] * (1 + u)[None, :])
        pieces_w.append(w[None, :] * np.abs(h[:, None]) ** (1 - a_exp))
        if term.is_fredholm:
            hi = term.upper[0]
            # [x, hi]: t = hi - (hi - x)(1 + u)/2, so t - x = (hi - x)(1 - u)/2.
            h2 = (hi - xs) / 2.0
            pieces_t.append(hi - h2[:, None] * (1 + u)[None, :])
            pieces_w.append(w[None, :] * np.abs(h2[:, None]) ** (1 - a_exp))
        return np.concatenate(pieces_t, axis=1)[..., None], np.concatenate(pieces_w, axis=1)

    def discretize(self, problem, seed: int = 0, shard=None) -> Discretization:
        """Collocation points, quadrature nodes and the residual map for ``problem``
        (``shard=(k, n)``: data shard k of n of the collocation points)."""
        d = problem.dim
        mu = SubModel("mu", d, self.net)
        n = 2 * mu.n_params if self.points == "auto" else self.points
        x = collocation_points(problem, n, seed, self.graded)
        f, lam_factor = rhs_values(problem, x, seed)  # the noise draw is over all points
        rows = shard_rows(len(x), shard)
        x, f = x[rows], f[rows]
        alpha = problem.alpha_at(x)
        T = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731

        evaluations = {"mu@x": Evaluation("mu", T(x))}
        terms = []  # (eval key, kind, weight-kernel matrix, nonlinearity, lam)
        shared = {}
        for i, term in enumerate(problem.terms):
            lam = term.lam * lam_factor[i]
            if term.singularity > 0:
                nodes, w = self._singular_rule(term, x)
                kind = "local"
            elif term.is_fredholm:
                nodes, w = self._fredholm_rule(problem, term, seed)
                kind = "shared"
            else:
                nodes, w = self._mapped_rule(term, x)
                kind = "local"
            if kind == "shared":
                token = (nodes.shape, float(np.sum(nodes)), float(np.sum(w)))
                key = shared.setdefault(token, f"mu@nodes{len(shared)}")
                wk = w[None, :] * term.kernel(x[:, None, :], nodes[None, :, :])
                evaluations.setdefault(key, Evaluation("mu", T(nodes)))
            else:
                key = f"mu@term{i}"
                wk = w * term.kernel(x[:, None, :], nodes)
                evaluations[key] = Evaluation("mu", T(nodes.reshape(-1, d)))
            terms.append((key, kind, T(wk), term.nonlinearity, float(lam)))

        f_t, alpha_t = T(f), T(alpha)

        def residual_fn(values):
            r = alpha_t * values["mu@x"] - f_t
            for key, kind, wk, m, lam in terms:
                mv = m(values[key])
                integral = wk @ mv if kind == "shared" else (wk * mv.view(wk.shape)).sum(dim=1)
                r = r - lam * integral
            return {"equation": r}

        def linear_parts(values):
            parts = {"mu@x": ("diag", alpha_t)}
            for key, kind, wk, m, lam in terms:
                dm = m.grad(values[key])
                c = -lam * (wk * dm[None, :] if kind == "shared" else wk * dm.view(wk.shape))
                if key in parts:  # terms sharing one node set add up
                    c = parts[key][1] + c
                parts[key] = ("dense" if kind == "shared" else "rows", c)
            return {"equation": parts}

        test_pts, test_exact = test_set(problem, self.test_points, seed)
        return Discretization(
            problem=problem, submodels={"mu": mu}, evaluations=evaluations,
            residual_fn=residual_fn, solution="mu", test_points=test_pts, test_exact=test_exact,
            block_evaluations={"equation": tuple(evaluations)}, linear_parts=linear_parts,
            weights={"equation": len(rows) / n},
            info={"formulation": self.label, "points": int(n), "nodes": self.nodes,
                  "shard": None if shard is None else [int(v) for v in shard],
                  "n_params": mu.n_params,
                  "node_evaluations": int(sum(e.size for e in evaluations.values())) - int(n)},
        )
