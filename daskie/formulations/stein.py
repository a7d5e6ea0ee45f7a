"""Stein-estimator derivatives: input derivatives by Gaussian smoothing instead of automatic
differentiation (seed 003).

For a function ``F`` and a direction ``e`` (an input coordinate), Stein's lemma gives the
derivative of the Gaussian-smoothed ``F_s(z) = E F(z + s eps e)``, ``eps ~ N(0, 1)``::

    dF_s/de (z) = E[ eps (F(z + s eps e) - F(z - s eps e)) ] / (2 s)

(antithetic form: the central difference removes the even part of ``F`` from every sample).
With ``S`` seeded draws per point this is the *plain* estimator, unbiased for ``dF_s/de``,
with per-point standard error ``std_k(g_k) / sqrt(S)``, ``g_k = eps_k (F+ - F-) / (2 s)``.
``dF_s/de = dF/de + s^2 F'''/2 + O(s^4)``.

For training, the draws are fixed (seeded) so that the residual is a deterministic function
of the parameters, and the plain estimator's sample factor ``mean_k eps_k^2`` (1 only on
average) would scale every point's derivative by its own random number. The *normalized*
estimator divides by ``sum_k eps_k^2`` instead of ``S`` (the control variate
``E eps^2 = 1``): it is exact for ``F`` linear along ``e`` and carries only the
``O(s^2)`` smoothing error. Both are linear in ``F``'s values at the ``2 S`` perturbed points,
so their parameter Jacobian is a weighted sum of the network's per-point Jacobians (the
``"rows"`` linear part of a :class:`~daskie.formulations.base.Discretization`): no derivative
of the network with respect to its input is ever taken.
"""

from __future__ import annotations

from dataclasses import dataclass

from daskie.errors import SpecError, check_int

__all__ = ["Stein", "stein_derivative"]


@dataclass(frozen=True)
class Stein:
    """Stein (Gaussian-smoothing) estimator of an input derivative.

    Parameters
    ----------
    samples : int
        Antithetic draws per point (``2 * samples`` network evaluations per point).
    width : float
        Smoothing width ``s`` (the standard deviation of the perturbation), in the units of
        the input coordinate.
    seed : int
        Seed of the draws (each point set draws from its own stream of it).
    normalized : bool
        Divide by ``sum eps_k^2`` instead of ``samples`` (see the module docstring);
        the plain estimator with False.
    """

    samples: int = 8
    width: float = 1e-2
    seed: int = 0
    normalized: bool = True

    def __post_init__(self):
        check_int("Stein.samples", self.samples)
        if not isinstance(self.width, (int, float)) or isinstance(self.width, bool) or not self.width > 0 \
                or self.width != self.width or self.width == float("inf"):
            raise SpecError(f"Stein.width must be a positive finite number, got {self.width!r}")
        check_int("Stein.seed", self.seed, 0)
        if not isinstance(self.normalized, bool):
            raise SpecError(f"Stein.normalized must be True or False, got {self.normalized!r}")

    @property
    def label(self) -> str:
        """Short description for records."""
        kind = "normalized" if self.normalized else "plain"
        return f"stein({self.samples}, {self.width:g}, {kind})"

    def draws(self, n_rows: int, stream: int = 0):
        """Standard normal draws ``(n_rows, samples)`` of point set ``stream`` (float64, on the
        CPU: the same draws whatever device trains on them)."""
        import torch

        g = torch.Generator(device="cpu").manual_seed(int(self.seed) * 1_000_003 + int(stream))
        return torch.randn(int(n_rows), self.samples, generator=g, dtype=torch.float64, device="cpu")

    def weights(self, eps):
        """Weights ``(n, 2 S)`` of the values at ``stencil`` points (``+`` draws, then ``-``)."""
        import torch

        denom = (eps * eps).sum(dim=1, keepdim=True) if self.normalized else float(self.samples)
        c = eps / (2.0 * self.width * denom)
        return torch.cat([c, -c], dim=1)

    def stencil(self, points, axis: int, stream: int = 0, rows=None, total: int | None = None):
        """``(stencil_points, weights)``: the ``n * 2 S`` perturbed points (point ``i``'s
        ``S`` ``+`` draws, then its ``S`` ``-`` draws) and the weights ``(n, 2 S)`` with
        ``estimate = (weights * F(stencil_points).view(n, 2 S)).sum(1)``.

        ``rows``, ``total``: the indices of ``points`` in the full point set of ``total``
        points the draws are made for (a data shard keeps its own rows' draws, so sharded and
        serial residuals agree; torch's normal draws depend on how many are drawn at once).
        """
        import torch

        n = points.shape[0]
        if rows is None:
            eps = self.draws(n, stream)
        else:
            if total is None:
                raise SpecError("Stein.stencil: rows need the size of the full point set (total)")
            eps = self.draws(total, stream)[torch.as_tensor(rows, dtype=torch.long)]
        # drawn on the CPU (the same draws on every device), then moved once with the points
        eps = eps.to(device=points.device, dtype=points.dtype)
        shift = torch.zeros(n, self.samples, points.shape[1], dtype=points.dtype, device=points.device)
        shift[..., axis] = self.width * eps
        centre = points[:, None, :]
        pts = torch.cat([centre + shift, centre - shift], dim=1)
        return pts.reshape(n * 2 * self.samples, points.shape[1]), self.weights(eps)

    @staticmethod
    def combine(values, weights):
        """The estimates ``(n,)`` from the values at the stencil points."""
        return (weights * values.reshape(weights.shape)).sum(dim=1)


def stein_derivative(fn, z, axis: int, stein: Stein, stream: int = 0, pairs=None):
    """Stein estimate of ``d fn / d z[axis]`` at points ``z`` ``(n, d)`` and its standard error.

    Parameters
    ----------
    fn : callable
        ``fn(points) -> values`` (shape ``(m,)``).
    z : Tensor
        Points ``(n, d)``.
    axis : int
        Input coordinate to differentiate along.
    stein : Stein
    stream : int
        Draw stream (see :meth:`Stein.draws`).
    pairs : callable, optional
        ``pairs(z_plus, z_minus) -> (F+, F-)``; a quantized network's
        :meth:`~daskie.nn.mlp.MLP.apply_pairs` quantizes each pair the difference-based way.
        Default: ``fn`` at both.

    Returns
    -------
    (estimate, standard_error) : Tensors of shape ``(n,)``
        The standard error is that of the mean over the ``samples`` draws (the ratio
        estimator's, linearized, when ``stein.normalized``).
    """
    import torch

    if stein.samples < 2:
        raise SpecError("stein_derivative needs Stein.samples >= 2 to estimate a standard error")
    n, s = z.shape[0], stein.samples
    pts, _ = stein.stencil(z, axis, stream)
    pts = pts.view(n, 2 * s, -1)
    zp, zm = pts[:, :s].reshape(n * s, -1), pts[:, s:].reshape(n * s, -1)
    fp, fm = pairs(zp, zm) if pairs is not None else (fn(zp), fn(zm))
    eps = stein.draws(n, stream).to(device=z.device, dtype=z.dtype)
    g = eps * (fp - fm).view(n, s) / (2.0 * stein.width)  # per-draw estimates
    if stein.normalized:
        e2 = (eps * eps).sum(dim=1)
        est = g.sum(dim=1) / e2
        resid = g - est[:, None] * eps * eps
        se = torch.sqrt((resid * resid).sum(dim=1) * s / (s - 1)) / e2
    else:
        est = g.mean(dim=1)
        se = g.std(dim=1) / s ** 0.5
    return est, se
