"""Quadrature rules on boxes and intervals (numpy only).

Gauss-Legendre tensor rules in low dimension, scrambled-Sobol quasi-Monte Carlo rules in
high dimension, and Gauss-Jacobi rules for weakly singular kernels ``(x - t)^(-a)``.
Every rule is returned as ``(nodes, weights)`` with nodes of shape ``(m, d)``.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

__all__ = ["gauss_legendre", "gauss_jacobi", "tensor_rule", "sobol_rule", "domain_rule"]


@lru_cache(maxsize=64)
def _leggauss(n: int):
    x, w = np.polynomial.legendre.leggauss(n)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def gauss_legendre(n: int, a: float = -1.0, b: float = 1.0):
    """``n``-point Gauss-Legendre rule on ``[a, b]``: exact for polynomials of degree 2n-1."""
    x, w = _leggauss(int(n))
    half = 0.5 * (b - a)
    return a + half * (x + 1.0), half * w


@lru_cache(maxsize=64)
def gauss_jacobi(n: int, alpha: float, beta: float):
    """``n``-point Gauss-Jacobi rule for ``Int_{-1}^{1} (1-u)^alpha (1+u)^beta g(u) du``.

    Computed by the Golub-Welsch eigenvalue method from the Jacobi recurrence, so it needs
    nothing beyond numpy. Requires ``alpha, beta > -1``.
    """
    from math import lgamma, exp, log

    if not (alpha > -1 and beta > -1):
        raise ValueError(f"Gauss-Jacobi needs alpha, beta > -1, got {alpha}, {beta}")
    k = np.arange(n, dtype=float)
    ab = alpha + beta
    diag = np.empty(n)
    denom = (2 * k + ab) * (2 * k + ab + 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        diag = np.where(denom == 0, (beta - alpha) / (ab + 2), (beta**2 - alpha**2) / denom)
    kk = k[1:]
    off = np.sqrt(
        4 * kk * (kk + alpha) * (kk + beta) * (kk + ab)
        / ((2 * kk + ab) ** 2 * (2 * kk + ab + 1) * (2 * kk + ab - 1))
    )
    jac = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
    nodes, vecs = np.linalg.eigh(jac)
    mu0 = exp((ab + 1) * log(2.0) + lgamma(alpha + 1) + lgamma(beta + 1) - lgamma(ab + 2))
    weights = mu0 * vecs[0] ** 2
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def tensor_rule(n: int | tuple[int, ...], lower, upper):
    """Tensor Gauss-Legendre rule with ``n`` points per coordinate on the box ``[lower, upper]``."""
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    d = len(lower)
    ns = (n,) * d if np.isscalar(n) else tuple(n)
    rules = [gauss_legendre(m, lo, hi) for m, lo, hi in zip(ns, lower, upper)]
    nodes = np.array(list(itertools.product(*(r[0] for r in rules)))).reshape(-1, d)
    weights = np.array([np.prod(c) for c in itertools.product(*(r[1] for r in rules))])
    return nodes, weights


def sobol_rule(m: int, lower, upper, seed: int = 0):
    """Equal-weight scrambled-Sobol rule with ``m`` nodes on the box ``[lower, upper]``."""
    import torch

    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    engine = torch.quasirandom.SobolEngine(len(lower), scramble=True, seed=int(seed))
    u = engine.draw(int(m), dtype=torch.float64).numpy()
    vol = float(np.prod(upper - lower))
    return lower + (upper - lower) * u, np.full(int(m), vol / m)


def domain_rule(domain, n: int):
    """Tensor Gauss rule with ``n`` points per coordinate on every cell of ``domain``."""
    parts = [tensor_rule(n, lo, hi) for lo, hi in domain.cells()]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
