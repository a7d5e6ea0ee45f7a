"""How good is the error estimate? Answers made wrong on purpose, against exact solutions.

For every equation (the catalog's E1-E4, 1-D Fredholm/Volterra, linear and nonlinear, the
weakly singular Abel equations, the L-shape, 3-D; the ``hd-*`` families at d = 4, 6, 8; and
:func:`lorentz`, a non-separable high-dimensional equation) the exact solution is perturbed by
a known function of size 1e-3, 1e-6 and 1e-9: a smooth global one, one localized within 0.01
of a face, an oscillating one (4 periods along x_1 times 3 along x_d), a random tanh network
(an error shaped like a trained network's) and (d <= 3) one within 1e-4 of the far end of the
first coordinate, where interior test points see nothing. Each row compares
``daskie.estimate``'s ``error_estimate`` with the true relative L2 error (on an independent,
finer rule). A row is good when the estimate lies within a factor 10 of
``max(true, resolution)``: at the resolution the estimate says it cannot see further.

    python benchmarks/estimate.py --out benchmarks/results/estimate.json
    python benchmarks/estimate.py --quick          # fewer problems, one size per kind

Options: ``--residual-low-d`` also runs the residual estimator on the d <= 3 equations
(cross-check of the high-dimensional method where the reference is known), ``--validation``
adds the validation set (benchmarks/validation_set.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from daskie.estimate import (EstimateBudget, ReferenceEstimator, ResidualEstimator, tensor_rule,
                             error_estimator)
from daskie.problems import Domain, IntegralTerm, Problem, catalog

LOW = ["E1", "E2", "E3", "E4", "fredholm1d", "volterra1d", "nfredholm1d", "nvolterra1d",
       "abel", "lshape", "fredholm3d"]
HIGH = [f"{fam}-d{d}" for d in (4, 6, 8)
        for fam in ("hd-fredholm", "hd-volterra", "hd-mixed", "hd-sharp")]
SIZES = (1e-3, 1e-6, 1e-9)


# --- a non-separable high-dimensional equation ----------------------------------------------
def _erf(x):
    import torch

    return torch.special.erf(torch.as_tensor(np.asarray(x, dtype=float))).numpy()


def lorentz(d: int, lam: float = 0.5) -> Problem:
    """``mu = f + lam Int_[0,1]^d exp(-|X - T|^2 / d) mu dT`` with the exact solution
    ``mu = 1 / (1 + |X - c|^2 / s^2)``, ``c_j = 0.2 + 0.6 j / (d - 1)``, ``s^2 = d / 8``: a
    Lorentzian bump, structure along every axis, no product form.

    ``f`` is exact to about 1e-14: with ``1 / (1 + q) = Int_0^inf e^(-z (1 + q)) dz`` the
    integral is ``Int_0^inf e^(-z) prod_j F_j(z) dz``, each ``F_j`` a 1-D integral of a product
    of two Gaussians (closed form with erf), and the z-integral a composite Gauss rule on
    [0, 60] (30 points on each of 10 geometric panels; 20 points agree to 1e-15).
    The kernel is a plain function (no factors), so the estimator takes its shared rules.
    """
    c = 0.2 + 0.6 * np.arange(d) / max(d - 1, 1)
    s2 = d / 8.0
    sigma = float(d)

    def exact(p):
        p = np.asarray(p, dtype=float)
        return 1.0 / (1.0 + np.sum((p - c) ** 2, axis=-1) / s2)

    cuts = np.array([0.0, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 48, 60])
    g, gw = np.polynomial.legendre.leggauss(30)
    z = (cuts[:-1, None] + 0.5 * np.diff(cuts)[:, None] * (g + 1)).ravel()
    zw = (0.5 * np.diff(cuts)[:, None] * gw).ravel() * np.exp(-z)

    def integral(p):
        flat = p.reshape(-1, d)
        out = np.empty(len(flat))
        for s in range(0, len(flat), 256):
            x = flat[s:s + 256, None, :]  # (k, 1, d)
            zz = z[None, :, None]
            p1, p2 = 1.0 / sigma, zz / s2
            a = p1 + p2
            m = (p1 * x + p2 * c) / a
            ra = np.sqrt(a)
            fj = (np.exp(-p1 * p2 / a * (x - c) ** 2) * 0.5 * math.sqrt(math.pi) / ra
                  * (_erf(ra * (1.0 - m)) - _erf(-ra * m)))
            out[s:s + 256] = np.prod(fj, axis=-1) @ zw
        return out.reshape(p.shape[:-1])

    def f(p):
        p = np.asarray(p, dtype=float)
        return exact(p) - lam * integral(p)

    kernel = lambda p, t: np.exp(-np.sum((p - t) ** 2, axis=-1) / sigma)  # noqa: E731
    return Problem(domain=Domain((0.0,) * d, (1.0,) * d), f=f,
                   terms=(IntegralTerm(kernel, lam=lam),), exact=exact, name=f"lorentz-d{d}",
                   description=f"mu = f + {lam} Int exp(-|X-T|^2/{d}) mu, mu = 1/(1+|X-c|^2/{s2})")


def problem(name: str) -> Problem:
    if name.startswith("lorentz-d"):
        return lorentz(int(name.split("-d")[1]))
    if name.startswith("v-"):
        sys.path.insert(0, str(Path(__file__).parent))
        import validation_set

        return validation_set.get(name)
    return catalog.get(name)


# --- perturbations and the true error -------------------------------------------------------
def perturbations(p: Problem) -> dict:
    lo, hi = np.asarray(p.domain.lower), np.asarray(p.domain.upper)

    def unit(x):
        return (np.asarray(x, dtype=float) - lo) / (hi - lo)

    out = {"smooth": lambda x: np.cos(np.pi * unit(x).mean(-1) + 0.3),
           "face": lambda x: np.exp(-unit(x)[..., 0] / 0.01),
           # what a network's error looks like more: oscillating, along two axes
           "wiggle": lambda x: np.sin(8 * np.pi * unit(x)[..., 0] + 1.0)
           * np.cos(6 * np.pi * unit(x)[..., -1])}
    out["network"] = _random_network(p.dim)
    if p.dim <= 3:
        out["thin-end"] = lambda x: np.exp(-(1.0 - unit(x)[..., 0]) / 1e-4)
    return out


def _random_network(d: int, seed: int = 0):
    """A random tanh network (two hidden layers of 32) on the unit box, scaled to max 1 on
    Sobol points: an error shaped like a trained network's, everywhere at once."""
    import torch

    gen = torch.Generator().manual_seed(seed + d)
    sizes = [d, 32, 32, 1]
    layers = [(torch.randn(a, b, generator=gen, dtype=torch.float64) * 2 / math.sqrt(a),
               torch.randn(b, generator=gen, dtype=torch.float64))
              for a, b in zip(sizes, sizes[1:])]

    def net(x):
        h = torch.as_tensor(np.asarray(x, dtype=float).reshape(-1, d))
        for i, (w, b) in enumerate(layers):
            h = h @ w + b
            if i < len(layers) - 1:
                h = torch.tanh(h)
        return h[:, 0].numpy().reshape(np.shape(x)[:-1])

    scale = float(np.max(np.abs(net(np.random.default_rng(0).random((4096, d))))))
    return lambda x: net(x) / scale


def _composite(depth: int, inner: int, q: int):
    ends = [10.0 ** -k for k in range(depth, 1, -1)]
    mid = np.linspace(0.01, 0.99, inner + 1)
    cuts = np.unique(np.concatenate([[0.0], ends, mid, 1.0 - np.array(ends[::-1]), [1.0]]))
    u, w = np.polynomial.legendre.leggauss(q)
    a, b = cuts[:-1, None], cuts[1:, None]
    return (a + 0.5 * (b - a) * (u + 1)).ravel(), (0.5 * (b - a) * w).ravel()


def truth_rule(p: Problem):
    """Finer than the estimator's and built apart from it: d <= 3 a composite Gauss rule
    graded to 1e-14 (1-D) / 1e-8 (2-D) / 1e-5 (3-D) of every face; above, 2^16 Sobol points."""
    if p.dim > 3:
        x = p.domain.sample(1 << 16, seed=424242)
        return x, np.full(len(x), p.domain.volume / len(x))
    s, w = _composite(*{1: (14, 40, 12), 2: (8, 16, 6), 3: (5, 8, 4)}[p.dim])
    return tensor_rule(p.domain, s, w)


def good(true: float, est: float, res: float) -> bool:
    scale = max(true, res)
    return scale / 10 <= est <= 10 * scale


def run(names, sizes, residual_low_d=False, budget=None):
    rows = []
    for name in names:
        p = problem(name)
        x, w = truth_rule(p)
        ex = p.exact(x)
        norm = math.sqrt(w @ ex**2)
        estimators = [error_estimator(p, budget=budget)]
        if residual_low_d and p.dim <= 3 and not any(t.singularity > 0 for t in p.terms):
            estimators.append(ResidualEstimator(p, budget=budget))
        for est in estimators:
            kind = "reference" if isinstance(est, ReferenceEstimator) else "residual"
            base = est(p.exact)
            rows.append(dict(problem=name, dim=p.dim, perturbation="none", size=0.0,
                             true_rel_l2=0.0, error_estimate=base["error_estimate"],
                             resolution=base["resolution"], ratio=float("nan"), good=True,
                             method=kind, seconds=base["seconds"],
                             setup_seconds=est.setup_seconds,
                             max_error_estimate=base["max_error_estimate"], true_max_rel=0.0))
            print(f"{name:16s} d={p.dim} {kind:9s} setup {est.setup_seconds:5.1f}s  call "
                  f"{base['seconds']:.2f}s  resolution {base['resolution']:.1e}", flush=True)
            for pert, g in perturbations(p).items():
                for size in sizes:
                    mu = lambda y, g=g, size=size: p.exact(y) + size * g(y)  # noqa: E731
                    true = math.sqrt(w @ (size * g(x)) ** 2) / norm
                    out = est(mu)
                    e = out["error_estimate"]
                    ok = good(true, e, out["resolution"])
                    rows.append(dict(problem=name, dim=p.dim, perturbation=pert, size=size,
                                     true_rel_l2=true, error_estimate=e,
                                     resolution=out["resolution"], ratio=e / true, good=ok,
                                     method=kind, seconds=out["seconds"],
                                     setup_seconds=est.setup_seconds,
                                     max_error_estimate=out["max_error_estimate"],
                                     true_max_rel=float(np.max(np.abs(size * g(x)))
                                                        / np.max(np.abs(ex)))))
                    print(f"  {pert:9s} {size:.0e}  true {true:.2e}  estimate {e:.2e}  "
                          f"resolution {out['resolution']:.1e}  ratio {e / true:8.2f}  "
                          f"max {out['max_error_estimate']:.1e} "
                          f"(true {rows[-1]['true_max_rel']:.1e})"
                          f"  {out['seconds']:.2f}s {'ok' if ok else 'MISS'}", flush=True)
    return rows


def summary(rows) -> str:
    scored = [r for r in rows if r["perturbation"] != "none"]
    ok = sum(r["good"] for r in scored)
    below = sum(r["error_estimate"] < max(r["true_rel_l2"], r["resolution"]) / 10 for r in scored)
    seen = [r for r in scored if r["true_rel_l2"] > r["resolution"]]
    close = sum(r["true_rel_l2"] / 10 <= r["error_estimate"] <= 10 * r["true_rel_l2"] for r in seen)
    worst = min((r["error_estimate"] / r["true_rel_l2"] for r in seen), default=float("nan"))
    return (f"{ok}/{len(scored)} rows within a factor 10 of max(true, resolution) "
            f"({100 * ok / max(len(scored), 1):.1f} %); {below} below it by more than 10x; "
            f"of the {len(seen)} rows whose true error is above the resolution, {close} within "
            f"a factor 10 of it (lowest estimate / true: {worst:.2f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--problems", nargs="*")
    ap.add_argument("--residual-low-d", action="store_true")
    ap.add_argument("--validation", action="store_true")
    args = ap.parse_args(argv)
    names = args.problems or (LOW + HIGH + ["lorentz-d4", "lorentz-d6", "lorentz-d8"])
    if args.validation:
        sys.path.insert(0, str(Path(__file__).parent))
        import validation_set

        names = names + validation_set.names()
    sizes = (1e-3, 1e-9) if args.quick else SIZES
    start = time.perf_counter()
    rows = run(names, sizes, residual_low_d=args.residual_low_d, budget=EstimateBudget())
    print(summary(rows), f"({time.perf_counter() - start:.0f} s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
