"""Quadrature collocation (the PINN baseline of seed 000): one network for mu, integrals by
fixed quadrature rules.

* Fredholm terms: one node set shared by every collocation point (tensor Gauss-Legendre on
  each domain cell for d <= ``gauss_max_dim``, scrambled Sobol above), so the integral is a
  dense matrix times ``M(mu(nodes))``.
* Volterra and mixed terms: the rule is mapped onto each point's box ``[a, b(X)]``: tensor
  Gauss for d <= ``gauss_max_dim``, above it a Smolyak sparse grid (``local_level``) or a
  scrambled-Sobol rule (``local_qmc_nodes``), whose sizes do not grow as n^d (issue 18: at
  d = 4 the 6^4-node tensor rule per point did not finish a solve in 120 s).
* Separable kernels (a kernel that exposes 1-D ``factors`` with ``mass`` and ``quantile``, as
  :class:`daskie.problems.highdim.ProductKernel` does): the per-point rule is mapped onto
  each factor's distribution over ``[a_j, b_j(X)]``, ``t_j = Q_j(u_j)``, with weights
  ``prod_j mass_j``; the integrand left is ``M(mu(T))`` alone, smooth even where the kernel is
  a narrow peak. ``separable="auto"`` uses it for Volterra and mixed terms, ``"always"`` for
  Fredholm terms too (narrow kernels), ``"never"`` not at all.
* Weak singularities ``|x - t|^(-a)`` (1-D): product Gauss-Jacobi rules with the singular end
  at ``t = x`` (the interval is split at x for Fredholm limits). For Volterra terms the solution
  behaves like ``(x - a)^(1 - a)`` at the lower end; with grading (the default) the rule is
  taken in ``s`` with ``t = a + (x - a) s^q`` (``q`` the denominator of ``1 - a``), where that
  behaviour is smooth, and the collocation points are graded the same way.
* Kinks (``IntegralTerm.kink``): along a Fredholm coordinate whose kernel derivative jumps at
  ``t_k = x_k``, the rule is split there per point (two Gauss rules of ``nodes`` points).
* Residual scaling (``row_scale``): rows divided by the size of their terms per unit of mu,
  ``|alpha| + sum |lam| Int |K|``, when that exceeds ``|alpha|`` tenfold somewhere (f nearly
  cancelled by the integral).
* Memory (``block_mb``, issue 30): the network and its per-point parameter gradients are
  evaluated at a rule's nodes in blocks whose arrays fit ``block_mb`` (:class:`BlockedMLP`), and
  the shared rule's kernel matrix is assembled in row blocks of the same size, so what the
  network needs does not grow with the rule. What stays is the data the rules are: the
  shared rule's ``n x m`` weight-kernel matrix and its ``m x P`` node Jacobian, the per-point
  rules' ``n q`` nodes (:func:`memory_estimate`); ``DataParallel`` row shards divide the
  ``n`` of every worker.
* Boundary points (``boundary``, issue 30): a fraction of the collocation points moved onto
  the box's faces, the corners first while there are few (:func:`collocation_points`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from daskie.errors import SpecError, check_int
from daskie.formulations.base import (Discretization, Evaluation, Formulation, SubModel, shard_rows,
                                      tensor_maker)
from daskie.nn.mlp import MLP
from daskie.quadrature import (gauss_jacobi, gauss_legendre, smolyak_rule, sobol_rule, tensor_rule,
                               unit_rule)

__all__ = ["QuadratureCollocation", "BlockedMLP", "SecondKind", "endpoint_grading", "memory_estimate"]

#: ``row_scale="auto"`` scales the rows when the terms' size per unit of mu exceeds |alpha|
#: by this factor at some collocation point.
ROW_SCALE_RATIO = 10.0


def endpoint_grading(problem) -> int:
    """Grading exponent ``q`` for a 1-D problem with weakly singular Volterra terms: the
    denominator of ``1 - a`` (2 for Abel's kernel), else 1. The same rule grades the Nystrom
    reference's nodes."""
    from fractions import Fraction

    singular = [t.singularity for t in problem.terms if t.singularity > 0 and not t.is_fredholm]
    if problem.dim != 1 or not problem.domain.is_box or not singular:
        return 1
    return max(Fraction(1.0 - a).limit_denominator(4).denominator for a in singular)


def collocation_points(problem, n, seed, graded_power=1.0, boundary=0.0):
    """Scrambled-Sobol collocation points in the domain; for 1-D problems with a weak
    singularity an optional grading ``x = a + (b - a) u**p`` clusters points at the left end.

    ``boundary`` (a fraction in [0, 1), box domains): the last ``round(boundary n)`` points are
    moved onto the box's boundary: half of them corners (all ``2^d`` when they fit, else a
    seeded sample of distinct ones), then the Sobol points with one coordinate set to a face,
    cycling through the ``2d`` faces (in high dimension a Sobol point is almost never near a
    face or a corner, while the test points and the user's points may be there: at d = 10 a
    network trained without corners was 20x less accurate on the boundary than inside)."""
    x = problem.domain.sample(n, seed=seed)
    if graded_power != 1.0:
        lo, hi = problem.domain.lower[0], problem.domain.upper[0]
        x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** graded_power
    nb = int(round(boundary * n))
    if nb > 0:
        d = problem.dim
        lo, hi = np.asarray(problem.domain.lower, float), np.asarray(problem.domain.upper, float)
        start = n - nb
        if d <= 20 and 2**d <= nb // 2:
            corners = 2**d
            ids = np.arange(corners)
        else:  # a sample: distinct corners, as many as half the boundary points
            corners = nb // 2
            ids = np.random.default_rng(7919 + seed).choice(2**min(d, 62), size=corners,
                                                            replace=False) if d <= 62 else \
                np.random.default_rng(7919 + seed).integers(0, 2, size=(corners, d))
        bits = ids if ids.ndim == 2 else (ids[:, None] >> np.arange(d)[None, :]) & 1
        x[start:start + corners] = np.where(bits == 1, hi, lo)
        k = np.arange(nb - corners)
        rows = start + corners + k
        axis, side = k % d, (k // d) % 2
        x[rows, axis] = np.where(side == 1, hi[axis], lo[axis])
    return x


def test_set(problem, n_test, seed):
    """Held-back test points (a Sobol stream no training set uses) and the exact solution there."""
    pts = problem.domain.sample(n_test, seed=10_007 + seed)
    exact = None if problem.exact is None else problem.exact_at(pts)  # checked where used
    return pts, exact


def rhs_values(problem, x, seed):
    """``f`` at ``x`` and the lambda factors, with one seeded noise draw if the problem has noise."""
    f = problem.f_at(x)  # checked (finite, real, right shape) at every point it is used
    factors = np.ones(len(problem.terms))
    if problem.noise is not None:
        f, factors = problem.noise.draw(f, len(problem.terms), np.random.default_rng(problem.noise.seed + seed))
    return f, factors


def _bytes_per_point(net, in_dim: int, itemsize: int = 8) -> int:
    """Bytes one evaluation point takes in :meth:`MLP.point_jacobian` (its Jacobian row, the
    per-layer weight-gradient block, the forward's activations and the backward's deltas),
    the largest of the network's per-point computations."""
    widths = list(net.sizes(in_dim))
    wgrad = max(a * b for a, b in zip(widths[:-1], widths[1:]))
    return itemsize * (2 * net.n_params(in_dim) + wgrad + 4 * sum(widths))


class SecondKind:
    """The output transform of ``ansatz="second-kind"``: ``mu = (f + net) / alpha``.

    A second-kind equation ``alpha mu - sum_i lam_i Int K_i M_i(mu) = f`` gives
    ``mu = (f + sum_i lam_i Int ...) / alpha``: the network learns the integral terms, which
    are as smooth as the kernels in X, while ``f`` brings whatever structure it has exactly
    (Nystrom's interpolant, with the network in place of the quadrature sum). ``affine(z)``
    is ``(1 / alpha, f / alpha)`` at ``z``, computed once per point set (a tensor that comes
    back, as the fixed collocation and node sets do every step, is not recomputed).
    """

    def __init__(self, problem):
        self.problem = problem
        self._cache = {}  # id(z) -> (weak reference to z, (scale, shift)); gone with z

    def __call__(self, z):
        key = id(z)
        hit = self._cache.get(key)
        if hit is not None and hit[0]() is z:
            return hit[1]
        x = z.detach().to(device="cpu", dtype=torch.float64).numpy()
        alpha = self.problem.alpha_at(x)
        out = (torch.as_tensor(1.0 / alpha, dtype=z.dtype, device=z.device),
               torch.as_tensor(self.problem.f_at(x) / alpha, dtype=z.dtype, device=z.device))
        self._cache[key] = (weakref.ref(z, lambda _, k=key, c=self._cache: c.pop(k, None)), out)
        return out

    def __getstate__(self):  # the cache is this process's
        return {"problem": self.problem}

    def __setstate__(self, state):
        self.__init__(state["problem"])


@dataclass(frozen=True)
class BlockedMLP(MLP):
    """An :class:`~daskie.nn.mlp.MLP` that evaluates its output and its per-point parameter
    gradients in blocks of at most ``block`` points (``point_jacobian`` with row weights: of
    ``max(1, block // q)`` rows of ``q`` points), so that the intermediate arrays of one call
    are bounded by the block, not by the number of points. The same numbers as the plain
    network, to rounding (each block is the plain computation on its rows)."""

    block: int = 65536

    def __post_init__(self):
        super().__post_init__()
        check_int("block", self.block)

    @classmethod
    def wrap(cls, net: MLP, block: int) -> "BlockedMLP":
        """``net`` with the same options, blocked."""
        from dataclasses import fields

        return cls(**{f.name: getattr(net, f.name) for f in fields(MLP)}, block=int(block))

    def apply(self, theta, z):
        if z.dim() < 2 or len(z) <= self.block:
            return super().apply(theta, z)
        return torch.cat([super(BlockedMLP, self).apply(theta, z[s:s + self.block])
                          for s in range(0, len(z), self.block)])

    def point_jacobian(self, theta, z, row_weights=None):
        base = super(BlockedMLP, self)
        if row_weights is None:
            if len(z) <= self.block:
                return base.point_jacobian(theta, z)
            parts = [base.point_jacobian(theta, z[s:s + self.block])
                     for s in range(0, len(z), self.block)]
        else:
            m, q = row_weights.shape
            step = max(1, self.block // q)
            if m <= step:
                return base.point_jacobian(theta, z, row_weights=row_weights)
            parts = [base.point_jacobian(theta, z[i * q:(i + step) * q],
                                         row_weights=row_weights[i:i + step])
                     for i in range(0, m, step)]
        return None if parts[0] is None else torch.cat(parts)


def memory_estimate(formulation, problem, shards: int = 1) -> dict:
    """What a :class:`QuadratureCollocation` discretization of ``problem`` holds per worker on
    ``shards`` data shards, in MiB (float64): the shared rules' weight-kernel matrices
    (``n_w x m``, and one temporary of that size in each Jacobian), their
    node Jacobians (``m x P``), the per-point rules' nodes, weights, values and one
    temporary (``n_w q (d + 3)``; the sparse-grid size ``q`` for singular and kinked rules
    too, an estimate there), the Jacobian and the normal equations (``n_w P + 2 P^2``), and
    the network's blocks (``block_mb``, at most). ``n_w = ceil(n / shards)``. The benchmark
    records (issue 30) carry it beside the measured ``peak_mb``."""
    d = problem.dim
    p = formulation.net.n_params(d)
    n = 2 * p if formulation.points == "auto" else int(formulation.points)
    n_w = -(-n // int(shards))
    mib = 8 / 2**20
    out = {"points": n, "points_per_worker": n_w, "n_params": p, "shared_mb": 0.0,
           "local_mb": 0.0}
    for term in problem.terms:
        if formulation._separable(term) or not term.is_fredholm or term.singularity > 0 or term.kink:
            q = len(formulation.local_unit_rule(d)[0])
            out["local_mb"] += n_w * q * (d + 3) * mib
        else:
            m = len(formulation._fredholm_rule(problem, term, 0)[0])
            out["shared_mb"] += (2 * n_w * m + m * p) * mib
    out["jacobian_mb"] = (n_w * p + 2 * p * p) * mib
    out["block_mb"] = float(formulation.block_mb) if formulation.block_mb is not None else None
    out["total_mb"] = out["shared_mb"] + out["local_mb"] + out["jacobian_mb"] + (out["block_mb"] or 0.0)
    return out


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
        Sobol nodes for Fredholm terms above ``gauss_max_dim`` (``shared_rule="sobol"``).
    gauss_max_dim : int
        Largest dimension that uses tensor Gauss rules (they grow as nodes**d).
    shared_rule : {"auto", "gauss", "sobol", "smolyak"}
        The Fredholm node set shared by all points; ``"auto"``: tensor Gauss up to
        ``gauss_max_dim``, Sobol above.
    level : int
        Smolyak level of ``shared_rule="smolyak"``.
    local_rule : {"auto", "gauss", "sobol", "smolyak"}
        The per-point rule (Volterra, mixed and separable terms) on the unit cube before it
        is mapped; ``"auto"``: tensor Gauss of ``local_nodes`` up to ``gauss_max_dim``, Smolyak
        of ``local_level`` above (d = 6: 97 nodes at level 3, integrating exp(c . u), c <= 1/3,
        to 2e-7 where 1024 Sobol nodes leave 1e-5).
    local_qmc_nodes : int
        Nodes per point of ``local_rule="sobol"``.
    local_level : int
        Smolyak level of the per-point rule.
    separable : {"auto", "always", "never"}
        Where to map per-point rules onto a separable kernel's factors (module notes).
    test_points : int
        Held-back Sobol points for the MSE.
    graded : float or "auto"
        Grading exponent for 1-D singular problems' collocation points (1 = none);
        ``"auto"`` (default): :func:`endpoint_grading` of the problem, which also grades the
        singular Volterra rules (issue 15, class 6: without it the loss stayed four orders
        above what the rule allows and the error at the singular end was ~0.1).
    row_scale : {"auto", "terms", "none"}
        Divide each row by the size of its terms per unit of mu (``"terms"``), never
        (``"none"``), or when that size exceeds ``|alpha|`` tenfold somewhere (``"auto"``).
    block_mb : float or None
        Memory (MiB) of one block of network evaluations: the network and its per-point
        parameter gradients are evaluated at the rules' nodes in blocks whose arrays fit it
        (``BlockedMLP`` in ``daskie.formulations.quadrature``; the plain network where one
        block holds every node), and the shared rules' kernel matrices are assembled in row
        blocks of that size. The results are the unblocked ones to rounding. None: one block
        (no bound). What a worker holds besides: ``memory_estimate`` in the same module.
    boundary : float or "auto"
        Fraction of the collocation points moved onto the box's faces and corners
        (``collocation_points`` in the same module; 0: none, the Sobol points only).
        ``"auto"``: 0.1 on boxes above ``gauss_max_dim``, where Sobol points almost never come
        near a face or a corner, else 0 (issue 30, measured with the default points: relative
        L2 at d = 10, Fredholm, second-kind, 1.1e-3 -> 2.3e-4; d = 6, 0.19 -> 0.12; mixed
        d = 12, 0.057 -> 0.044; but on the smooth ``hd-fredholm-d6`` the default solve to tol
        1e-5 took longer than 2x the LM time of no boundary points, so 0 stays the default).
    ansatz : {"mu", "second-kind"}
        What the network learns: ``"mu"`` the solution; ``"second-kind"`` the integral terms,
        with ``mu = (f + net) / alpha`` (:class:`SecondKind`: the structure of ``f`` is exact
        and the network follows the terms, which are as smooth in X as the kernels; needs
        ``alpha`` nonzero at every point, a second-kind equation). Which one a network
        follows better depends on the problem (issue 30, ``docs/highdim.md``): where ``f``
        carries structure along every axis (bumps, peaks), second-kind (10-D Fredholm with
        three Gaussian bumps: relative L2 1.2e-3 against 0.10); where the solution is a
        smooth ridge such as ``exp(sum x / d)``, ``mu`` (hd-fredholm-d6: tol 1e-5 met in 328
        LM steps; second-kind had not met it after 11 CPU minutes).
    """

    net: MLP = field(default_factory=MLP)
    points: int | str = "auto"
    nodes: int = 12
    local_nodes: int = 6
    qmc_nodes: int = 4096
    gauss_max_dim: int = 3
    test_points: int = 1000
    graded: float | str = "auto"
    row_scale: str = "auto"
    shared_rule: str = "auto"
    level: int = 4
    local_rule: str = "auto"
    local_qmc_nodes: int = 256
    local_level: int = 3
    separable: str = "auto"
    block_mb: float | None = 1024.0
    boundary: float | str = 0.0
    ansatz: str = "mu"

    def __post_init__(self):
        if not isinstance(self.net, MLP):
            raise SpecError(f"net must be a daskie MLP, got {type(self.net).__name__}")
        if not (isinstance(self.points, str) and self.points == "auto"):
            check_int("points", self.points, alternative='"auto"')
        for name in ("nodes", "local_nodes", "qmc_nodes", "gauss_max_dim", "test_points",
                     "level", "local_qmc_nodes", "local_level"):
            check_int(name, getattr(self, name))
        for name in ("shared_rule", "local_rule"):
            if getattr(self, name) not in ("auto", "gauss", "sobol", "smolyak"):
                raise SpecError(f"{name} must be 'auto', 'gauss', 'sobol' or 'smolyak', "
                                f"got {getattr(self, name)!r}")
        if self.separable not in ("auto", "always", "never"):
            raise SpecError(f"separable must be 'auto', 'always' or 'never', got {self.separable!r}")
        if not (isinstance(self.graded, str) and self.graded == "auto") and (
                not isinstance(self.graded, (int, float)) or isinstance(self.graded, bool)
                or not self.graded >= 1.0):
            raise SpecError(f"graded must be >= 1, got {self.graded} (or 'auto')")
        if self.row_scale not in ("auto", "terms", "none"):
            raise SpecError(f"row_scale must be 'auto', 'terms' or 'none', got {self.row_scale!r}")
        if self.block_mb is not None and (
                not isinstance(self.block_mb, (int, float)) or isinstance(self.block_mb, bool)
                or not np.isfinite(self.block_mb) or not self.block_mb > 0):
            raise SpecError(f"block_mb must be a positive number of MiB (or None: one block), "
                            f"got {self.block_mb!r}")
        if not (isinstance(self.boundary, str) and self.boundary == "auto") and (
                not isinstance(self.boundary, (int, float)) or isinstance(self.boundary, bool)
                or not 0.0 <= self.boundary < 1.0):
            raise SpecError(f"boundary must be a fraction of the points in [0, 1) or 'auto', "
                            f"got {self.boundary!r}")
        if self.ansatz not in ("mu", "second-kind"):
            raise SpecError(f"ansatz must be 'mu' or 'second-kind', got {self.ansatz!r}")

    def block_points(self, in_dim: int, itemsize: int = 8) -> int | None:
        """Points per block of network evaluations under ``block_mb`` (None: unbounded);
        raises SpecError when ``block_mb`` does not hold one point."""
        if self.block_mb is None:
            return None
        per = _bytes_per_point(self.net, in_dim, itemsize)
        block = int(self.block_mb * 2**20 // per)
        if block < 1:
            raise SpecError(f"block_mb={self.block_mb} MiB is below one evaluation point of this "
                            f"network ({per / 2**20:.3g} MiB); raise it")
        return block

    @property
    def label(self) -> str:
        return "quadrature"

    def boundary_for(self, problem) -> float:
        """The fraction of collocation points on the boundary for ``problem`` (``boundary``)."""
        if isinstance(self.boundary, str):
            return 0.1 if problem.domain.is_box and problem.dim > self.gauss_max_dim else 0.0
        return float(self.boundary)

    def ansatz_for(self, problem, alpha) -> str:
        """What the network learns on ``problem`` (``ansatz``), given ``alpha`` at the
        collocation points; raises SpecError for ``"second-kind"`` where alpha vanishes."""
        alpha = np.abs(np.asarray(alpha, dtype=float))
        if self.ansatz == "second-kind" and not (
                alpha.size and np.all(alpha > 1e-12 * max(1.0, float(alpha.max())))):
            raise SpecError(f"ansatz='second-kind' divides by alpha, which vanishes at collocation "
                            f"points of {problem.name or 'this problem'} (a first-kind part); use "
                            f"ansatz='mu'")
        return self.ansatz

    def _fredholm_rule(self, problem, term, seed):
        d = problem.dim
        dom = problem.domain
        boxes = []
        for lo, hi in dom.cells():
            a = np.maximum(lo, term.lower)
            b = np.minimum(hi, term.upper)
            if np.all(b > a):
                boxes.append((a, b))
        kind = self.shared_rule
        if kind == "auto":
            kind = "gauss" if d <= self.gauss_max_dim else "sobol"
        if kind == "gauss":
            parts = [tensor_rule(self.nodes, a, b) for a, b in boxes]
        elif kind == "smolyak":
            parts = [smolyak_rule(self.level, a, b) for a, b in boxes]
        else:
            parts = [sobol_rule(self.qmc_nodes, a, b, seed=seed + 17) for a, b in boxes]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def local_unit_rule(self, d: int, seed: int = 0):
        """The per-point rule on ``[0, 1]^d`` before it is mapped (see ``local_rule``)."""
        kind = self.local_rule
        if kind == "auto":
            kind = "gauss" if d <= self.gauss_max_dim else "smolyak"
        size = {"gauss": self.local_nodes, "sobol": self.local_qmc_nodes,
                "smolyak": self.local_level}[kind]
        return unit_rule(kind, d, size, seed=seed + 29)

    def _separable(self, term) -> bool:
        factors = getattr(term.kernel, "factors", None)
        if self.separable == "never" or factors is None or len(factors) != len(term.upper):
            return False
        return self.separable == "always" or not term.is_fredholm

    def _factored_rule(self, term, x, seed):
        """Per-point rule mapped onto the kernel's factors: nodes ``(n, q, d)`` and weights
        ``(n, q)`` that already include the kernel (``sum_k w_k M(mu(t_k))`` is the integral)."""
        a = np.asarray(term.lower, dtype=float)
        b = term.upper_limits(x)
        u, unit_w = self.local_unit_rule(x.shape[1], seed)
        nodes = np.empty((len(x), len(u), x.shape[1]))
        mass = np.ones(len(x))
        for j, factor in enumerate(term.kernel.factors):
            nodes[:, :, j] = factor.quantile(x[:, j, None], a[j], b[:, j, None], u[None, :, j])
            mass = mass * np.asarray(factor.mass(x[:, j], a[j], b[:, j]), dtype=float)
        if not np.all(np.isfinite(mass)) or not np.all(np.isfinite(nodes)):
            raise SpecError("a separable kernel's factors gave non-finite masses or quantiles "
                            "on the collocation points")
        return nodes, mass[:, None] * unit_w[None, :]

    def _mapped_rule(self, term, x, seed=0):
        """Per-point rule on ``[a, b(x)]``: nodes ``(n, q, d)``, weights ``(n, q)``."""
        a = np.asarray(term.lower)
        b = term.upper_limits(x)
        unit_nodes, unit_w = self.local_unit_rule(len(a), seed)
        span = b - a  # (n, d)
        nodes = a + span[:, None, :] * unit_nodes[None, :, :]
        weights = unit_w[None, :] * np.prod(span, axis=1)[:, None]
        return nodes, weights

    def _kinked_rule(self, term, x):
        """Per-point rule for a term with kinks: per coordinate, Gauss on ``[a, b(x)]``
        (``local_nodes`` points along Volterra coordinates, ``nodes`` along Fredholm ones),
        split at ``x_k`` along the kinked Fredholm coordinates; nodes ``(n, q, d)``, weights
        ``(n, q)``."""
        n_pts, d = x.shape
        b = term.upper_limits(x)
        axes = []
        for j in range(d):
            lo = np.full(n_pts, term.lower[j])
            if j in term.volterra_axes:
                pieces = [(lo, b[:, j], self.local_nodes)]
            elif j in term.kink:
                mid = np.clip(x[:, j], lo, b[:, j])
                pieces = [(lo, mid, self.nodes), (mid, b[:, j], self.nodes)]
            else:
                pieces = [(lo, b[:, j], self.nodes)]
            ts, ws = [], []
            for a_, b_, m in pieces:
                u, w = gauss_legendre(m, 0.0, 1.0)
                ts.append(a_[:, None] + (b_ - a_)[:, None] * u)
                ws.append((b_ - a_)[:, None] * w)
            axes.append((np.concatenate(ts, 1), np.concatenate(ws, 1)))
        sizes = [t.shape[1] for t, _ in axes]
        nodes = np.empty((n_pts, *sizes, d))
        weights = np.ones((n_pts, *sizes))
        for j, (t, w) in enumerate(axes):
            shape = (n_pts,) + tuple(sizes[j] if i == j else 1 for i in range(d))
            nodes[..., j] = t.reshape(shape)
            weights = weights * w.reshape(shape)
        return nodes.reshape(n_pts, -1, d), weights.reshape(n_pts, -1)

    def _singular_rule(self, term, x, grading: int = 1):
        """Product Gauss-Jacobi for ``g(x,t) |x-t|^(-a)`` in 1-D: nodes ``(n, q, 1)``, weights
        including the singular factor. With ``grading = q > 1`` (Volterra terms), the part
        ``[lo, x]`` is taken in ``s``, ``t = lo + (x - lo) s^q``, where a solution term
        ``(t - lo)^(1/q)`` is smooth: ``x - t = h (1 - s) S(s)``, ``S = sum_i s^i``."""
        a_exp = term.singularity
        u, w = gauss_jacobi(self.nodes, -a_exp, 0.0)  # weight (1-u)^(-a): singular at u = 1
        lo = term.lower[0]
        xs = x[:, 0]
        pieces_t, pieces_w = [], []
        if grading > 1 and not term.is_fredholm:
            s = 0.5 * (1.0 + u)  # 1 - s = (1 - u)/2
            big_s = sum(s**i for i in range(grading))
            h = xs - lo
            pieces_t.append(lo + h[:, None] * (s**grading)[None, :])
            # dt = h q s^(q-1) ds, ds = du/2; (x - t)^(-a) = h^(-a) ((1-u)/2)^(-a) S^(-a)
            unit = w * 0.5 ** (1.0 - a_exp) * grading * s ** (grading - 1) * big_s ** (-a_exp)
            pieces_w.append(np.abs(h[:, None]) ** (1 - a_exp) * unit[None, :])
            return np.concatenate(pieces_t, axis=1)[..., None], np.concatenate(pieces_w, axis=1)
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

    @staticmethod
    def _shared_matrix(problem, i, x, nodes, w, budget):
        """``w_k K(x_i, t_k)`` of a shared rule, ``(n, m)``, assembled in row blocks whose
        temporaries (the kernel's factors, about three arrays of the block's size) fit
        ``budget`` bytes (None: one block)."""
        n, m = len(x), len(nodes)
        rows = n if budget is None else max(1, min(n, int(budget // (3 * 8 * m))))
        if rows >= n:
            return w[None, :] * problem.kernel_at(i, x[:, None, :], nodes[None, :, :])
        out = np.empty((n, m))
        for s in range(0, n, rows):
            out[s:s + rows] = problem.kernel_at(i, x[s:s + rows, None, :], nodes[None, :, :])
            out[s:s + rows] *= w[None, :]
        return out

    def discretize(self, problem, seed: int = 0, shard=None, *, device=None,
                   dtype=None) -> Discretization:
        """Collocation points, quadrature nodes and the residual map for ``problem``
        (``shard=(k, n)``: data shard k of n of the collocation points), on ``device`` in
        ``dtype`` (None: the CPU, float64; :meth:`Formulation.discretize`)."""
        d = problem.dim
        n = 2 * self.net.n_params(d) if self.points == "auto" else self.points
        grading = endpoint_grading(problem) if self.graded == "auto" else 1
        boundary = self.boundary_for(problem)
        if boundary > 0 and not problem.domain.is_box:
            raise SpecError(f"boundary={boundary} puts points on a box's faces; the domain of "
                            f"{problem.name or 'this problem'} is not a box")
        x = collocation_points(problem, n, seed, float(grading if self.graded == "auto" else self.graded),
                               boundary=boundary)
        f, lam_factor = rhs_values(problem, x, seed)  # the noise draw is over all points
        alpha = problem.alpha_at(x)
        ansatz = self.ansatz_for(problem, alpha)  # over all points: every shard the same
        rows = shard_rows(len(x), shard)
        x, f, alpha = x[rows], f[rows], alpha[rows]
        affine = SecondKind(problem) if ansatz == "second-kind" else None
        mu = SubModel("mu", d, self.net, affine=affine)
        T = tensor_maker(device, dtype)
        block = self.block_points(d, T.dtype.itemsize)

        evaluations = {"mu@x": Evaluation("mu", T(x))}
        terms = []  # (eval key, kind, weight-kernel matrix, nonlinearity, lam)
        shared = {}
        rule_names = []  # per term, for info
        for i, term in enumerate(problem.terms):
            lam = term.lam * lam_factor[i]
            if term.singularity > 0:
                nodes, w = self._singular_rule(term, x, grading)
                kind = "local"
            elif term.kink and problem.domain.is_box and any(
                    k not in term.volterra_axes for k in term.kink):
                nodes, w = self._kinked_rule(term, x)
                kind = "local"
            elif self._separable(term):
                nodes, w = self._factored_rule(term, x, seed)
                kind = "factored"
            elif term.is_fredholm:
                nodes, w = self._fredholm_rule(problem, term, seed)
                kind = "shared"
            else:
                nodes, w = self._mapped_rule(term, x, seed)
                kind = "local"
            rule_names.append(kind)
            if kind == "shared":
                token = (nodes.shape, float(np.sum(nodes)), float(np.sum(w)))
                key = shared.setdefault(token, f"mu@nodes{len(shared)}")
                wk = self._shared_matrix(problem, i, x, nodes, w,
                                         None if block is None else self.block_mb * 2**20)
                evaluations.setdefault(key, Evaluation("mu", T(nodes)))
            else:
                key = f"mu@term{i}"
                # factored rules carry the kernel in their weights
                wk = w if kind == "factored" else w * problem.kernel_at(i, x[:, None, :], nodes)
                evaluations[key] = Evaluation("mu", T(nodes.reshape(-1, d)))
                kind = "local"
            terms.append((key, kind, wk, term.nonlinearity, float(lam)))

        # Size of each row's terms per unit of mu; where it far exceeds |alpha|, f is nearly
        # cancelled by the integrals and the rows are divided by it (issue 15, class 4).
        size = np.abs(alpha) + sum(abs(lam) * np.abs(wk).reshape(len(x), -1).sum(axis=1)
                                   for _, _, wk, _, lam in terms)
        scaled = self.row_scale == "terms" or (
            self.row_scale == "auto" and bool(np.any(size > ROW_SCALE_RATIO * np.abs(alpha))))
        row = 1.0 / size if scaled else np.ones(len(x))
        if scaled:  # in place: the shared matrices are the largest arrays here
            for _, _, wk, _, _ in terms:
                wk *= row.reshape((-1,) + (1,) * (wk.ndim - 1))
        terms = [(key, kind, T(wk), m, lam) for key, kind, wk, m, lam in terms]
        if block is not None and max(e.size for e in evaluations.values()) > block:
            if type(self.net) is MLP:  # other networks (TTMLP, quantized subclasses) as they are
                mu = SubModel("mu", d, BlockedMLP.wrap(self.net, block), affine=affine)
        f_t, alpha_t = T(row * f), T(row * alpha)

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
                # one temporary as large as wk (the shared matrix), not two
                c = (wk * dm[None, :] if kind == "shared" else wk * dm.view(wk.shape)).mul_(-lam)
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
                  "graded": float(grading if self.graded == "auto" else self.graded),
                  "row_scaled": scaled,
                  "rules": rule_names,
                  "n_params": mu.n_params,
                  "node_evaluations": int(sum(e.size for e in evaluations.values())) - int(n),
                  "block_points": block, "boundary": boundary, "ansatz": ansatz},
        )
