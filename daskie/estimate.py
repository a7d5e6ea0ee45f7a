"""An error estimate for every answer, in every dimension (issue 26, item 2).

``estimate_error(problem, mu)`` estimates the relative L2 error ``||mu - mu*|| / ||mu*||`` of an
answer ``mu`` (a numpy callable on ``(k, d)`` points) over the whole domain, without the exact
solution ``mu*``, and says how small an error it can resolve. Two estimators, chosen by
dimension (:func:`error_estimator`):

* :class:`ReferenceEstimator` (``d <= 3``): the Nystrom reference at ``n`` and at a finer
  ``n_fine`` Gauss points per coordinate. The estimate is the L2 distance from ``mu`` to the
  fine reference on a composite Gauss rule whose panels are graded geometrically towards every
  face (so an error that hides within 1e-6 of an end is integrated, not missed); the
  resolution is the distance between the two references (the coarse one's error, an upper
  bound on the fine one's), measured, not assumed.
* :class:`ResidualEstimator` (any ``d``, the default for ``d >= 4``): a posteriori, with no
  reference. The residual ``r = f + sum lam K M(mu) - alpha mu`` of the continuous equation is
  computed at fresh points (scrambled Sobol, a quarter of them in log-graded layers along the
  faces, weighted by the mixture's density) with two independent rules for each integral:
  randomized QMC (several scrambles: mean and standard error) and Smolyak sparse grids at two
  levels (value and level difference); the one with the smaller error is used. The error
  ``e = mu* - mu`` then solves the linearized equation ``(alpha - sum lam K M'(mu)) e = r``
  (one Newton step) on a QMC Nystrom discretization of the same points, with singularity
  subtraction (``Int K h = Int K (h - h(x)) + h(x) Int K``) so that narrow kernels do not
  swamp the diagonal. Volterra limits map the rules onto each point's box ``[a, x]``; kernels
  that expose their 1-D factors (:class:`~daskie.problems.highdim.ProductKernel`) have them
  mapped onto each factor's mass (importance sampling). The resolution is twice the rules'
  error estimate, carried through the same solve.

Both are objects built once per problem (the expensive parts: references, nodes, kernel
matrices, for linear problems the inverse of the linearized operator) whose ``__call__(mu)``
is cheap, for checks at every training window. Pure numpy (and torch through the problem's
nonlinearities and Sobol points): no Dask, zarr or bokeh.

Cost, measured on the shared 2-core machine with ``mu`` a 64 x 64 tanh network (torch, one
thread), default :class:`EstimateBudget`: d = 1 setup 0.05-0.2 s, call < 0.01 s (280
points); d = 2 setup 0.8-1.1 s (lshape 10 s), call 0.02 s (5216 points); d = 3 setup 4.7 s,
call 0.05 s (13916 points); d = 6 setup 0.2-0.4 s, call 3.7 s; d = 8 setup 0.5-1.7 s, call
5 s (mapped rules: ``mu`` at 2.6e6 points) or 1 s (a shared Fredholm rule). With
``EstimateBudget(nodes=512, mapped=640, shared=8192)`` a d = 8 call takes 1 s (resolution
1.8e-5 instead of 8e-8 on hd-mixed-d8).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from daskie.errors import SpecError

__all__ = ["EstimateBudget", "ReferenceEstimator", "ResidualEstimator", "error_estimator",
           "estimate_error", "graded_rule", "tensor_rule"]

#: Relative level below which no estimate is trusted (double rounding in f, K mu, alpha mu).
ROUNDING = 1e-14


def _count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise SpecError(f"EstimateBudget.{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class EstimateBudget:
    """Sizes of an error estimate: what it costs and what it resolves.

    Parameters
    ----------
    nodes : int
        Fresh points of the residual estimator (Sobol, a quarter in layers along the faces):
        where the residual is computed and the unknowns of the correction solve (a dense
        ``nodes x nodes`` system).
    shared : int
        Nodes of each rule (the randomized-QMC one, and the finest Smolyak level) for
        Fredholm terms without product structure (shared by every point; ``mu`` is
        evaluated there once per call, the kernel at ``nodes x 1.6 shared`` pairs). On
        lorentz-d8 (benchmarks/estimate.py) 16384 Sobol points integrate to 2e-6, 4096 to
        7e-5.
    mapped : int
        Nodes per point of each rule mapped onto the point's Volterra box or onto a product
        kernel's factors (``mu`` is evaluated at up to ``2.2 * nodes * mapped`` points per
        call). The default takes the Smolyak rule to level 4 at d = 6 and 8 (533 and 1105
        nodes) and to level 5 at d = 4 (681), with 8 x 128 Sobol points.
    scrambles : int
        Independent scrambles the QMC rule is split into (each of a power of 2 points, at
        most ``shared`` or ``mapped / scrambles``): their spread is its standard error.
    boundary : int
        Points on the domain's faces (and corners) where the residual estimator also looks.
    fine : int, optional
        Gauss points per coordinate of the fine reference (default: 1.5 times the reference's,
        at least 8 more, in 1-D and 2-D; 2 more in 3-D, where one more costs seconds).
    """

    nodes: int = 1024
    shared: int = 16384
    mapped: int = 1280
    scrambles: int = 8
    boundary: int = 128
    fine: int | None = None

    def __post_init__(self):
        _count("nodes", self.nodes, 16)
        _count("scrambles", self.scrambles, 2)
        _count("shared", self.shared, 2 * self.scrambles)
        _count("mapped", self.mapped, 2 * self.scrambles)
        _count("boundary", self.boundary, 0)
        if self.fine is not None:
            _count("fine", self.fine, 3)


def _result(method, rel, res, max_rel, max_res, seconds, **extra) -> dict:
    # an answer with NaN or inf somewhere is infinitely wrong, not unknown
    rel = rel if math.isfinite(rel) else math.inf
    max_rel = max_rel if math.isfinite(max_rel) else math.inf
    resolved = bool(rel > res)
    return {"error_estimate": float(max(rel, res)),
            "max_error_estimate": float(max(max_rel, max_res)), "resolution": float(res),
            "max_resolution": float(max_res), "resolved": resolved,
            "raw_estimate": float(rel), "method": method, "seconds": float(seconds),
            "note": "" if resolved else "the answer is more accurate than the estimate can "
                                        f"resolve: error_estimate is the resolution {res:.1e}",
            **extra}


# --- the reference estimator (d <= 3) -----------------------------------------------------
def _graded_unit(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss rule on [0, 1], panels graded geometrically towards both ends."""
    depth, inner, q = {1: (10, 16, 8), 2: (6, 8, 4)}.get(dim, (3, 4, 3))
    ends = [10.0 ** -k for k in range(depth, 1, -1)]  # 1e-depth .. 1e-2
    mid = np.linspace(0.01, 0.99, inner + 1)
    cuts = np.unique(np.concatenate([[0.0], ends, mid, 1.0 - np.array(ends[::-1]), [1.0]]))
    u, w = np.polynomial.legendre.leggauss(q)
    a, b = cuts[:-1, None], cuts[1:, None]
    return (a + 0.5 * (b - a) * (u + 1)).ravel(), (0.5 * (b - a) * w).ravel()


def graded_rule(domain) -> tuple[np.ndarray, np.ndarray]:
    """Tensor composite Gauss rule on every cell of ``domain``, panels graded geometrically
    towards every face (1-D: down to 1e-10 of an end; 2-D 1e-6; 3-D 1e-3 of the cell)."""
    return tensor_rule(domain, *_graded_unit(domain.dim))


def tensor_rule(domain, s, w) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D rule ``(s, w)`` on [0, 1] as a tensor rule on every cell of ``domain``:
    ``(nodes, weights)``."""
    nodes, weights = [], []
    for lo, hi in domain.cells():
        lo, hi = np.asarray(lo), np.asarray(hi)
        mesh = np.stack(np.meshgrid(*([s] * domain.dim), indexing="ij"), -1).reshape(-1, domain.dim)
        wm = np.prod(np.stack(np.meshgrid(*([w] * domain.dim), indexing="ij"), -1), -1).ravel()
        nodes.append(lo + (hi - lo) * mesh)
        weights.append(wm * float(np.prod(hi - lo)))
    return np.concatenate(nodes), np.concatenate(weights)


class ReferenceEstimator:
    """Error of answers to ``problem`` against a refined Nystrom reference (``d <= 3``).

    Parameters
    ----------
    problem : Problem
    reference : ReferenceSolution, optional
        The reference at the default resolution if already computed (it is the coarse one).
    budget : EstimateBudget, optional
        ``fine`` sets the fine reference's Gauss points per coordinate.

    Raises
    ------
    SpecError
        When the Nystrom reference does not converge (a nonlinear Newton that fails).
    """

    method = "reference"
    #: Training stops at an estimate within ``margin * tol``: the lowest estimate / true
    #: error ratio measured for this estimator is 0.77 (165 rows of
    #: benchmarks/results/estimate.json resolved above their resolution; 5 % quantile 0.985).
    margin = 0.75

    def __init__(self, problem, *, reference=None, budget: EstimateBudget | None = None):
        from daskie.assess import boundary_points, reference_resolution, reference_solution
        from daskie.reference import NewtonDidNotConverge, Nystrom

        start = time.perf_counter()
        budget = budget or EstimateBudget()
        self.problem = problem
        cells = len(problem.domain.cells())
        if reference is None:
            n = reference_resolution(problem)
            reference = reference_solution(problem, n)
            if reference is None:
                raise SpecError(f"{problem.name}: the Nystrom reference (n = {n}) did not "
                                "converge; use ResidualEstimator")
        else:
            n = round((reference.n_unknowns / cells) ** (1.0 / problem.dim))
        n_fine = budget.fine or (n + 2 if problem.dim >= 3 else max(math.ceil(1.5 * n), n + 8))
        try:
            start_from = None if problem.is_linear else reference
            fine = Nystrom(n=n_fine).solve(problem, initial=start_from)
        except NewtonDidNotConverge as exc:
            raise SpecError(f"{problem.name}: the fine reference (n = {n_fine}) did not "
                            f"converge ({exc})") from None
        self.n, self.n_fine = n, n_fine
        self.nodes, self.weights = graded_rule(problem.domain)
        self.edge = boundary_points(problem.domain)
        every = np.concatenate([self.nodes, self.edge])
        self._fine = fine(every)
        coarse = reference(every)
        k = len(self.nodes)
        self._norm = self._l2(self._fine[:k])
        self._peak = float(np.max(np.abs(self._fine)))
        diff = coarse - self._fine
        self.resolution = max(self._l2(diff[:k]) / self._norm, ROUNDING)
        self.max_resolution = max(float(np.max(np.abs(diff))) / self._peak, ROUNDING)
        self.setup_seconds = time.perf_counter() - start

    def _l2(self, v) -> float:
        return float(np.sqrt(self.weights @ (v * v)))

    def __call__(self, mu) -> dict:
        """Estimate the error of ``mu`` (numpy callable on ``(k, d)`` points); see
        :func:`estimate_error` for the keys."""
        start = time.perf_counter()
        k = len(self.nodes)
        diff = np.asarray(mu(np.concatenate([self.nodes, self.edge])), dtype=float) - self._fine
        rel = self._l2(diff[:k]) / self._norm
        max_rel = float(np.max(np.abs(diff))) / self._peak
        return _result(f"reference (Nystrom n = {self.n} vs {self.n_fine})", rel, self.resolution,
                       max_rel, self.max_resolution, time.perf_counter() - start,
                       setup_seconds=self.setup_seconds, points=k + len(self.edge))


# --- the residual estimator (any d) ------------------------------------------------------
def _rms(v) -> float:
    return float(np.sqrt(np.mean(np.square(v))))


def _sobol(m: int, d: int, seed: int) -> np.ndarray:
    from daskie.quadrature import sobol_rule

    return sobol_rule(m, np.zeros(d), np.ones(d), seed=seed)[0]


def _face_points(domain, count: int, seed: int) -> np.ndarray:
    """``count`` points on the faces of ``domain``'s box (corners first, at most half of them),
    kept where they lie in the domain."""
    d = domain.dim
    lo, hi = np.asarray(domain.lower), np.asarray(domain.upper)
    if count == 0:
        return np.empty((0, d))
    corners = np.array(np.meshgrid(*([[0.0, 1.0]] * d), indexing="ij")).reshape(d, -1).T
    corners = corners[:max(count // 2, 1)]
    u = _sobol(max(count - len(corners), 1), d, seed)
    face = np.arange(len(u)) % (2 * d)
    u[np.arange(len(u)), face % d] = (face >= d).astype(float)
    x = lo + (hi - lo) * np.concatenate([corners, u])[:count]
    return x[domain.contains(x)]


#: Share of the residual estimator's points placed in layers along the faces, their depths
#: log-uniform from LAYER[0] to LAYER[1] of the box's side (the rest are uniform Sobol points).
LAYER_SHARE, LAYER = 0.25, (1e-8, 0.02)


def _layered_points(domain, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of ``domain`` with their quadrature weights: a mixture of uniform Sobol
    points and points in thin layers along every face, weighted by ``1 / (n p(x))`` with
    ``p`` the mixture's density. An error that lives within 1e-4 of a face (invisible to
    uniform points: 1024 of them put 0.1 there) is then integrated, unbiased, with weights
    bounded by ``volume / ((1 - LAYER_SHARE) n)``."""
    d = domain.dim
    lo, hi = np.asarray(domain.lower), np.asarray(domain.upper)
    side = hi - lo
    n_layer = int(LAYER_SHARE * n) // (2 * d) * (2 * d)
    x = [domain.sample(n - n_layer, seed=seed)]
    eps, h = LAYER
    if n_layer:
        u = _sobol(n_layer, d, seed + 1)
        face = np.arange(n_layer) % (2 * d)
        j, rows = face % d, np.arange(n_layer)
        depth = eps * (h / eps) ** u[rows, j] * side[j]
        pts = lo + side * u
        pts[rows, j] = np.where(face < d, lo[j] + depth, hi[j] - depth)
        x.append(pts[domain.contains(pts)])
    x = np.concatenate(x)
    vol = float(np.prod(side))
    density = np.full(len(x), (1.0 - LAYER_SHARE) / vol)
    if n_layer:
        for j in range(d):
            for depth in (x[:, j] - lo[j], hi[j] - x[:, j]):
                inside = (depth >= eps * side[j]) & (depth <= h * side[j])
                q = np.where(inside, 1.0 / (np.maximum(depth, 1e-300) * math.log(h / eps)), 0.0)
                density += LAYER_SHARE / (2 * d) * q / (vol / side[j])
    weights = 1.0 / (len(x) * density)
    # rejected (holes) points change the normalisation: rescale to the domain's volume
    return x, weights * domain.volume / weights.sum() if not domain.is_box else weights


def _factors(kernel):
    """The 1-D factors of a product kernel (each with ``mass`` and ``quantile``), or None."""
    factors = getattr(kernel, "factors", None)
    if factors is None or not all(hasattr(k, "mass") and hasattr(k, "quantile") for k in factors):
        return None
    return factors


def _smolyak_levels(d: int, cap: int) -> tuple[int, int]:
    """The finest Smolyak level with at most ``cap`` nodes in ``d`` dimensions (at most 12: a
    23-point Gauss rule in 1-D), and the one below it (at least levels 2 and 3)."""
    from daskie.quadrature import smolyak_rule

    level = 3
    while level < 12 and len(smolyak_rule(level + 1, np.zeros(d), np.ones(d))[0]) <= cap:
        level += 1
    return level - 1, level


class _TermRule:
    """Two independent rules for the integral ``Int K M(mu)`` of one term at the evaluation
    points, each with its own error estimate, so that the better one is used:

    * randomized QMC: ``scrambles`` independent scrambled-Sobol rules, their mean and its
      standard error (robust: needs no smoothness);
    * Smolyak sparse grids at two levels: the finer's value and the difference between the
      two (spectral for smooth integrands: on the hd-* families at d = 8, level 4, 1105
      nodes, integrates to 1e-10 where 512 Sobol points reach 1e-5; the narrow hd-sharp
      kernel's quantile map is steep at the ends, and there QMC wins, 1e-5 against 8e-5).

    Both live on the unit cube ``u`` and are mapped per point onto the integration box (the
    Volterra directions' ``[a, x]``) or, for kernels that expose 1-D factors, onto each
    factor's mass (importance sampling: a narrow kernel is then sampled where it lives).
    Fredholm terms without factors share one rule between all points (larger, cheaper).
    """

    #: Points whose mapped nodes are built and evaluated at once (bounds memory to ~20 MB).
    ROWS = 128

    def __init__(self, problem, i, x, budget, seed):
        from daskie.quadrature import smolyak_rule

        term = problem.terms[i]
        d, dom = problem.dim, problem.domain
        self.term, self.scrambles, self.domain = term, budget.scrambles, dom
        self.a = np.asarray(term.lower, dtype=float)
        self.x, self.b = x, term.upper_limits(x)
        self.factors = _factors(term.kernel)
        self.shared = term.is_fredholm and self.factors is None
        cap = budget.shared if self.shared else budget.mapped
        m = 1 << int(math.log2(cap // budget.scrambles))  # Sobol's balance needs 2^k points
        parts = [(_sobol(m, d, seed + 7919 * (r + 1)), np.full(m, 1.0 / m))
                 for r in range(budget.scrambles)]
        parts += [smolyak_rule(level, np.zeros(d), np.ones(d)) for level in _smolyak_levels(d, cap)]
        self.u = np.concatenate([p[0] for p in parts])
        v = np.concatenate([p[1] for p in parts])
        self.starts = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
        n, rows = len(x), self.ROWS
        self.problem, self.index = problem, i
        if self.shared:
            # The shared rule's weights (points x nodes, 250 MB at the default budget) are
            # rebuilt in row blocks at each call rather than stored.
            self.t = self.a + (self.b[0] - self.a) * self.u
            self.scale = v * np.prod(self.b[0] - self.a) * dom.contains(self.t)
            finest = slice(self.starts[-1], None)
            self.mass = np.concatenate([self._shared_weights(slice(s, s + rows))[:, finest].sum(1)
                                        for s in range(0, n, rows)])
            return
        self.w = np.empty((n, len(v)))
        for s in range(0, n, rows):
            t = self._nodes(slice(s, s + rows))
            inside = dom.contains(t)
            if self.factors is not None:
                mass = np.ones(len(t))
                for j, k in enumerate(self.factors):
                    mass = mass * k.mass(x[s:s + rows, j], self.a[j], self.b[s:s + rows, j])
                self.w[s:s + rows] = mass[:, None] * v * inside
            else:
                vol = np.prod(self.b[s:s + rows] - self.a, axis=1)
                self.w[s:s + rows] = (vol[:, None] * v * inside
                                      * problem.kernel_at(i, x[s:s + rows, None, :], t))
        self.mass = self.w[:, self.starts[-1]:].sum(1)  # Int K by the finest Smolyak rule

    def _shared_weights(self, rows: slice) -> np.ndarray:
        return self.scale * self.problem.kernel_at(self.index, self.x[rows, None, :], self.t[None])

    def _nodes(self, rows: slice) -> np.ndarray:
        """The mapped nodes of the points ``rows``: shape ``(k, m, d)`` (rebuilt at each call
        rather than stored: 170 MB at d = 8 with the default budget)."""
        x, b, u = self.x[rows], self.b[rows], self.u
        if self.factors is None:
            return self.a + (b - self.a)[:, None, :] * u[None]
        t = np.empty((len(x), len(u), len(self.a)))
        for j, k in enumerate(self.factors):
            t[:, :, j] = k.quantile(x[:, j, None], self.a[j], b[:, j, None], u[None, :, j])
        return t

    def integrals(self, mu) -> tuple[np.ndarray, np.ndarray, str]:
        """``Int K M(mu)`` at the points, its error estimate, and which rule gave them."""
        m = self.term.nonlinearity
        if self.shared:
            g = m(np.asarray(mu(self.t), dtype=float))
            blocks = (slice(s, s + self.ROWS) for s in range(0, len(self.x), self.ROWS))
            parts = np.concatenate([np.add.reduceat(self._shared_weights(b) * g, self.starts, 1)
                                    for b in blocks])
        else:
            parts = np.empty((len(self.x), len(self.starts)))
            for s in range(0, len(self.x), self.ROWS):
                t = self._nodes(slice(s, s + self.ROWS))
                g = m(np.asarray(mu(t.reshape(-1, t.shape[-1])), dtype=float)).reshape(t.shape[:2])
                parts[s:s + self.ROWS] = np.add.reduceat(self.w[s:s + self.ROWS] * g,
                                                         self.starts, axis=1)
        r = self.scrambles
        qmc = parts[:, :r].mean(1), parts[:, :r].std(1, ddof=1) / math.sqrt(r)
        # The finest level's error: its difference from the level below (an estimate of the
        # coarser level's error, so an upper bound where the levels converge). Sharpening it
        # by the rate of the last two differences was tried and is unsafe: on lorentz-d4 the
        # levels 4, 5, 6 have errors 3.8e-4, 4.8e-6, 2.2e-6 (a stall), the differences fall
        # 140-fold and the sharpened estimate 2e-8 was 100 times too small.
        sparse = parts[:, -1], np.abs(parts[:, -1] - parts[:, -2])
        if _rms(sparse[1]) <= _rms(qmc[1]):
            return sparse + ("smolyak",)
        return qmc + ("sobol",)


class ResidualEstimator:
    """A posteriori error of answers to ``problem``: residual of the continuous equation at
    fresh points, turned into an error by one Newton step of the linearized equation.

    Parameters
    ----------
    problem : Problem
        Second-kind (``alpha != 0``), no weakly singular terms.
    seed : int
        Seed of the fresh points and of the rules' scrambles.
    budget : EstimateBudget, optional

    Raises
    ------
    SpecError
        For first-kind equations or weakly singular terms.
    """

    method = "residual"
    #: Training stops at an estimate within ``margin * tol``: the lowest estimate / true
    #: error ratio measured for this estimator is 0.33 (hd-fredholm-d4 stopped by the
    #: estimate, benchmarks/results/tolerance_highdim.json; 0.45 on hd-fredholm-d8,
    #: tolerance_highdim_d6_d8.json; 0.62 over the 218 rows of
    #: benchmarks/results/estimate.json resolved above their resolution).
    margin = 0.3

    def __init__(self, problem, *, seed: int = 0, budget: EstimateBudget | None = None):
        from daskie.reference.qmc import operator_matrix

        start = time.perf_counter()
        budget = budget or EstimateBudget()
        if any(t.singularity > 0 for t in problem.terms):
            raise SpecError(f"{problem.name}: the residual estimator does not integrate weakly "
                            "singular kernels; use ReferenceEstimator")
        self.problem, self.budget, dom = problem, budget, problem.domain
        self.x, self.wq = _layered_points(dom, budget.nodes, 1000 + seed)
        self.edge = _face_points(dom, budget.boundary, 2000 + seed)
        every = np.concatenate([self.x, self.edge])
        self.alpha = problem.alpha_at(every)
        if np.any(self.alpha == 0):
            raise SpecError(f"{problem.name}: the residual estimator needs alpha != 0 (a "
                            "second-kind equation)")
        self.f = problem.f_at(every)
        self.rules = [_TermRule(problem, i, every, budget, 3000 + seed)
                      for i in range(len(problem.terms))]
        n = len(self.x)
        self.ops = [t.lam * operator_matrix(problem, i, every, self.x, 1.0) * self.wq
                    for i, t in enumerate(problem.terms)]
        # Singularity subtraction: Int K h = Int K (h - h(x)) + h(x) Int K, with the kernel's
        # mass Int K from the term's own (finer, importance-sampled) rule. Without it, a
        # narrow kernel's self term w K(x_i, x_i) dominates its row (hd-sharp-d8: 31 times
        # the whole operator's norm) and the correction came out 30 times too small.
        self.shift = [t.lam * rule.mass - a.sum(1)
                      for t, rule, a in zip(problem.terms, self.rules, self.ops)]
        self._inverse = None
        if problem.is_linear:
            self._inverse = np.linalg.inv(self._jacobian([np.ones(n)] * len(self.ops)))
        self.setup_seconds = time.perf_counter() - start

    def _l2(self, v) -> float:
        return math.sqrt(float(self.wq @ (v * v)))

    def _jacobian(self, grads):
        n = len(self.x)
        diag = self.alpha[:n] - sum(c[:n] * g for c, g in zip(self.shift, grads))
        return np.diag(diag) - sum(a[:n] * g[None, :] for a, g in zip(self.ops, grads))

    def _solve(self, mu_x, rhs):
        n = len(self.x)
        if self._inverse is not None:
            e = self._inverse @ rhs[:, :n].T
            grads = [np.ones(len(mu_x))] * len(self.ops)
        else:
            grads = [t.nonlinearity.grad(mu_x) for t in self.problem.terms]
            e = np.linalg.solve(self._jacobian([g[:n] for g in grads]), rhs[:, :n].T)
        # Nystrom interpolation of the correction at the face points (subtraction included)
        side = rhs[:, n:].T + sum(a[n:] @ (g[:n, None] * e) for a, g in zip(self.ops, grads))
        diag = self.alpha[n:] - sum(c[n:] * g[n:] for c, g in zip(self.shift, grads))
        return np.concatenate([e, side / diag[:, None]]).T

    def __call__(self, mu) -> dict:
        """Estimate the error of ``mu`` (numpy callable on ``(k, d)`` points); see
        :func:`estimate_error` for the keys."""
        start = time.perf_counter()
        n = len(self.x)
        mu_x = np.asarray(mu(np.concatenate([self.x, self.edge])), dtype=float)
        r = self.f - self.alpha * mu_x
        var = np.zeros_like(r)
        size = np.abs(self.f) + np.abs(self.alpha * mu_x)
        used = []
        for rule, term in zip(self.rules, self.problem.terms):
            value, err, kind = rule.integrals(mu)
            used.append(kind)
            r += term.lam * value
            var += (term.lam * err) ** 2
            size += np.abs(term.lam * value)
        e, es = self._solve(mu_x, np.stack([r, np.sqrt(var) + ROUNDING * size]))
        star = mu_x + e
        norm = self._l2(star[:n])
        peak = float(np.max(np.abs(star)))
        rel = self._l2(e[:n]) / norm
        # twice the rules' error (two standard errors of the QMC mean), seen through the solve
        res = max(2.0 * self._l2(es[:n]) / norm, ROUNDING)
        max_rel = float(np.max(np.abs(e))) / peak
        max_res = max(2.0 * float(np.max(np.abs(es))) / peak, ROUNDING)
        return _result(f"residual ({n} points, {'/'.join(used)} rules)", rel, res,
                       max_rel, max_res, time.perf_counter() - start,
                       setup_seconds=self.setup_seconds, points=len(mu_x),
                       residual=self._l2(r[:n]) / norm)


# --- entry points ---------------------------------------------------------------------------
def error_estimator(problem, *, reference=None, seed: int = 0,
                    budget: EstimateBudget | None = None):
    """The error estimator for ``problem``, built once: :class:`ReferenceEstimator` where the
    Nystrom reference fits (``d <= 3``), :class:`ResidualEstimator` otherwise (and where the
    reference does not converge). Call it with an answer ``mu`` for :func:`estimate_error`'s
    dictionary; the expensive parts are not repeated."""
    singular = any(t.singularity > 0 for t in problem.terms)
    if problem.dim <= 3 or singular:
        try:
            return ReferenceEstimator(problem, reference=reference, budget=budget)
        except SpecError:
            if singular:
                raise
    return ResidualEstimator(problem, seed=seed, budget=budget)


def estimate_error(problem, mu, *, reference=None, seed: int = 0,
                   budget: EstimateBudget | None = None) -> dict:
    """Estimate the relative L2 error of an answer ``mu`` over the whole domain.

    Parameters
    ----------
    problem : Problem
    mu : callable
        The answer as a numpy function on ``(k, d)`` points.
    reference : ReferenceSolution, optional
        The Nystrom reference if already computed (``d <= 3``).
    seed : int
        Seed of the residual estimator's points and scrambles.
    budget : EstimateBudget, optional
        Sizes (cost and resolution).

    Returns
    -------
    dict
        ``error_estimate`` (relative L2 error, at least ``resolution``), ``max_error_estimate``
        (max pointwise error relative to ``max |mu*|``, boundary included), ``resolution`` and
        ``max_resolution`` (the smallest errors the estimate resolves), ``resolved`` (whether
        the raw estimate is above the resolution), ``raw_estimate``, ``method``, ``note``,
        ``seconds`` (of this call) and ``setup_seconds`` (of building the estimator).
    """
    est = error_estimator(problem, reference=reference, seed=seed, budget=budget)
    return est(mu)
