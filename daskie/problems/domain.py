"""Integration and solution domains: a box, or a box with box-shaped holes."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from daskie.errors import SpecError

__all__ = ["Domain"]


def _as_bounds(values, field: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in np.atleast_1d(np.asarray(values, dtype=float)))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{field} must be a sequence of numbers, got {values!r}") from exc
    if not all(np.isfinite(out)):
        raise SpecError(f"{field} must be finite, got {out}")
    return out


@dataclass(frozen=True)
class Domain:
    """A box ``[lower, upper]`` in R^d, optionally with box-shaped holes removed.

    Parameters
    ----------
    lower, upper : sequence of float
        Corners of the bounding box; ``lower[j] < upper[j]`` for every coordinate.
    holes : sequence of (lower, upper) pairs, optional
        Boxes removed from the domain, e.g. the L-shaped domain is
        ``Domain((0, 0), (1, 1), holes=[((0.5, 0.5), (1, 1))])``.

    Notes
    -----
    The domain is decomposed exactly into disjoint axis-aligned cells (:meth:`cells`),
    which is what quadrature rules integrate over; nothing else assumes a grid.
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    holes: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = ()

    def __post_init__(self):
        lower = _as_bounds(self.lower, "domain.lower")
        upper = _as_bounds(self.upper, "domain.upper")
        if not lower:
            raise SpecError("domain must have at least one coordinate: lower and upper are "
                            "empty")
        if len(lower) != len(upper):
            raise SpecError(
                f"domain.lower has {len(lower)} coordinates but domain.upper has {len(upper)}"
            )
        if not all(lo < hi for lo, hi in zip(lower, upper)):
            raise SpecError(f"domain is empty: need lower < upper, got {lower} and {upper}")
        holes = []
        for k, hole in enumerate(self.holes):
            try:
                hlo, hhi = hole
            except (TypeError, ValueError) as exc:
                raise SpecError(f"domain.holes[{k}] must be a (lower, upper) pair") from exc
            hlo = _as_bounds(hlo, f"domain.holes[{k}].lower")
            hhi = _as_bounds(hhi, f"domain.holes[{k}].upper")
            if len(hlo) != len(lower) or len(hhi) != len(lower):
                raise SpecError(f"domain.holes[{k}] must have {len(lower)} coordinates")
            if not all(a < b for a, b in zip(hlo, hhi)):
                raise SpecError(f"domain.holes[{k}] is empty: need lower < upper")
            holes.append((hlo, hhi))
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "holes", tuple(holes))
        if self.volume <= 0:
            raise SpecError("domain is empty: its holes cover the whole box")

    @property
    def dim(self) -> int:
        """Number of coordinates d."""
        return len(self.lower)

    @property
    def is_box(self) -> bool:
        """True when the domain has no holes."""
        return not self.holes

    def contains(self, x) -> np.ndarray:
        """Boolean mask of the points ``x`` (shape ``(..., d)``) that lie in the domain."""
        x = np.asarray(x, dtype=float)
        lo, hi = np.asarray(self.lower), np.asarray(self.upper)
        inside = np.all((x >= lo) & (x <= hi), axis=-1)
        for hlo, hhi in self.holes:
            # The domain is the closure of box minus holes: a hole's inner faces belong to
            # the domain, but where a hole reaches the box's boundary its face there does not
            # (e.g. (1, 0.8) is not in the L-shape [0,1]^2 minus [0.5,1]^2).
            hlo, hhi = np.asarray(hlo), np.asarray(hhi)
            above = np.where(hlo <= lo, x >= hlo, x > hlo)
            below = np.where(hhi >= hi, x <= hhi, x < hhi)
            inside &= ~np.all(above & below, axis=-1)
        return inside

    def cells(self) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
        """Disjoint boxes whose union is the domain (one box when there are no holes)."""
        if self.is_box:
            return [(self.lower, self.upper)]
        cuts = []
        for j in range(self.dim):
            pts = {self.lower[j], self.upper[j]}
            for hlo, hhi in self.holes:
                pts |= {min(max(hlo[j], self.lower[j]), self.upper[j])}
                pts |= {min(max(hhi[j], self.lower[j]), self.upper[j])}
            cuts.append(sorted(pts))
        cells = []
        for idx in itertools.product(*(range(len(c) - 1) for c in cuts)):
            lo = tuple(cuts[j][i] for j, i in enumerate(idx))
            hi = tuple(cuts[j][i + 1] for j, i in enumerate(idx))
            centre = 0.5 * (np.asarray(lo) + np.asarray(hi))
            if self.contains(centre):
                cells.append((lo, hi))
        return cells

    @property
    def volume(self) -> float:
        """Lebesgue measure of the domain."""
        return float(sum(np.prod(np.subtract(hi, lo)) for lo, hi in self.cells()))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` scrambled-Sobol points inside the domain, shape ``(n, d)``.

        Points in holes are rejected, so the result is quasi-uniform on the domain.
        """
        import torch  # local: importing daskie must stay cheap

        if n <= 0:
            raise SpecError(f"number of points must be positive, got {n}")
        engine = torch.quasirandom.SobolEngine(self.dim, scramble=True, seed=int(seed))
        lo, hi = np.asarray(self.lower), np.asarray(self.upper)
        out = np.empty((0, self.dim))
        while len(out) < n:
            u = engine.draw(max(2 * (n - len(out)), 16), dtype=torch.float64).numpy()
            x = lo + (hi - lo) * u
            out = np.concatenate([out, x[self.contains(x)]])
        return out[:n]

    def grid(self, n: int) -> np.ndarray:
        """A regular grid of ``n`` points per coordinate, shape ``(n**d, d)``, masked to the domain.

        Used for plots and the stored solution only (test sets for accuracy are
        held-back Sobol points, see :meth:`sample`).
        """
        axes = [np.linspace(lo, hi, n) for lo, hi in zip(self.lower, self.upper)]
        mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, self.dim)
        return mesh

    def to_dict(self) -> dict:
        """Plain-data description (JSON-serialisable)."""
        return {"lower": list(self.lower), "upper": list(self.upper),
                "holes": [[list(a), list(b)] for a, b in self.holes]}
