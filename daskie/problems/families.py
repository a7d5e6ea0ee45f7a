"""Parametric families of integral equations: one equation form, many instances.

A :class:`Family` fixes the domain, the kernel, the nonlinearity and ``alpha``, and draws the
rest per instance from a seeded distribution: the right-hand side ``f`` from a Gaussian
random field (a truncated random Fourier expansion, :class:`RandomField`) and ``lambda`` from
an interval. Each instance is described by one flat parameter vector (the field's
coefficients, then ``lambda``), which is what a data set stores; :meth:`Family.problem` turns
a parameter vector back into a daskie :class:`~daskie.problems.Problem`, whose reference
solution (:class:`~daskie.reference.Nystrom`) is the instance's answer.

Instance ``i`` of seed ``s`` is drawn from its own generator (``numpy`` seeded by
``(s, i)``), so it does not depend on how many instances are drawn, in which order, or on
which worker: a half-generated data set continues with exactly the instances it would have
had.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from daskie.errors import SpecError, check_int
from daskie.problems.domain import Domain
from daskie.problems.spec import VOLTERRA, IntegralTerm, Nonlinearity, Problem

__all__ = ["RandomField", "Family", "FieldAndKernel", "FieldAndRange", "FAMILIES", "family"]


@dataclass(frozen=True)
class RandomField:
    """A Gaussian random field on a box, as a truncated random Fourier expansion.

    ``f(x) = mean + scale * sum_k s_k (a_k cos(pi k.u) + b_k sin(pi k.u))`` with
    ``u = (x - lower) / (upper - lower)``, multi-indices ``k`` in ``{0..modes-1}^d``,
    ``a_k, b_k ~ N(0, 1)`` and spectral weights ``s_k = exp(-(pi |k| length)^2 / 4)`` (the
    spectral density of a squared-exponential covariance of correlation length
    ``length``), normalised so that ``sum s_k^2 = 1``: the field's pointwise variance is
    about ``scale^2``. This is the Karhunen-Loeve picture of a stationary field truncated to
    its leading modes.

    Parameters
    ----------
    modes : int
        Fourier modes per coordinate (``2 * modes**d`` coefficients).
    length : float
        Correlation length, relative to the box (smaller: rougher fields).
    scale, mean : float
        Standard deviation and mean of the field.
    """

    modes: int = 6
    length: float = 0.2
    scale: float = 1.0
    mean: float = 0.0

    def __post_init__(self):
        check_int("RandomField.modes", self.modes, 1)
        for name in ("length", "scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise SpecError(f"RandomField.{name} must be a positive number, got {v!r}")
        if not (isinstance(self.mean, (int, float)) and math.isfinite(self.mean)):
            raise SpecError(f"RandomField.mean must be a finite number, got {self.mean!r}")

    def wavenumbers(self, d: int) -> np.ndarray:
        """Multi-indices ``k``, shape ``(modes**d, d)``."""
        return np.array(list(itertools.product(range(self.modes), repeat=d)), dtype=float)

    def n_coefficients(self, d: int) -> int:
        """Coefficients of one draw in ``d`` dimensions."""
        return 2 * self.modes**d

    def weights(self, d: int) -> np.ndarray:
        """Spectral weights ``s_k`` (normalised: ``sum s_k^2 = 1``)."""
        k = self.wavenumbers(d)
        s = np.exp(-(math.pi * self.length) ** 2 * np.sum(k**2, axis=1) / 4.0)
        return s / np.sqrt(np.sum(s**2))

    def draw(self, d: int, rng: np.random.Generator) -> np.ndarray:
        """One draw's coefficients ``(a, b)`` concatenated, shape ``(2 * modes**d,)``."""
        return rng.standard_normal(self.n_coefficients(d))

    def evaluate(self, coefficients, x, lower, upper) -> np.ndarray:
        """Field values at points ``x`` (shape ``(..., d)``) for coefficients of shape
        ``(n_coef,)`` -> ``(...)``, or ``(n, n_coef)`` -> ``(n, ...)`` (several draws)."""
        x = np.asarray(x, dtype=float)
        c = np.asarray(coefficients, dtype=float)
        d = x.shape[-1]
        lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
        phase = math.pi * ((x - lo) / (hi - lo)) @ self.wavenumbers(d).T  # (..., K)
        s = self.weights(d)
        n_k = len(s)
        a, b = c[..., :n_k] * s, c[..., n_k:] * s
        basis_c, basis_s = np.cos(phase), np.sin(phase)
        if c.ndim == 1:
            return self.mean + self.scale * (basis_c @ a + basis_s @ b)
        flat_c = basis_c.reshape(-1, n_k)
        flat_s = basis_s.reshape(-1, n_k)
        out = flat_c @ a.T + flat_s @ b.T  # (points, n)
        return self.mean + self.scale * out.T.reshape((len(c),) + x.shape[:-1])


@dataclass(frozen=True, eq=False)
class Family:
    """A parametric family ``alpha mu = f + lam Int K(x, t) M(mu(t)) dt`` over a fixed domain.

    Parameters
    ----------
    name : str
        Label (data sets and benchmarks record it).
    domain : Domain
        A box (instances are solved by the Nystrom reference on it).
    kernel : callable
        ``K(x, t)`` on numpy arrays of shape ``(..., d)``, broadcasting.
    field : RandomField
        Distribution of ``f``.
    lam : (float, float)
        ``lambda ~ U(lam[0], lam[1])``; equal ends fix it.
    volterra : bool
        ``True``: ``Int_{lower}^{x}`` in every coordinate; ``False``: over the whole box.
    nonlinearity : Nonlinearity
        ``M`` (identity: a linear family).
    alpha : float
        Coefficient of ``mu`` (non-zero: a second-kind equation).
    reference_n : int
        Gauss points per coordinate of the instances' Nystrom reference (chosen per family so
        that the reference is converged to about 1e-13).
    description : str
    """

    name: str
    domain: Domain
    kernel: Callable
    field: RandomField = RandomField()
    lam: tuple[float, float] = (1.0, 1.0)
    volterra: bool = False
    nonlinearity: Nonlinearity | None = None
    alpha: float = 1.0
    reference_n: int = 24
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"Family.name must be a non-empty str, got {self.name!r}")
        if not isinstance(self.domain, Domain) or not self.domain.is_box:
            raise SpecError("Family.domain must be a daskie Domain without holes (a box)")
        if not callable(self.kernel):
            raise SpecError("Family.kernel must be callable: K(x, t)")
        if not isinstance(self.field, RandomField):
            raise SpecError(f"Family.field must be a RandomField, got {self.field!r}")
        try:
            lo, hi = (float(v) for v in self.lam)
        except (TypeError, ValueError):
            raise SpecError(f"Family.lam must be a pair (low, high), got {self.lam!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise SpecError(f"Family.lam must be finite with low <= high, got {self.lam!r}")
        object.__setattr__(self, "lam", (lo, hi))
        if self.nonlinearity is None:
            object.__setattr__(self, "nonlinearity", Nonlinearity.identity())
        if not isinstance(self.nonlinearity, Nonlinearity):
            raise SpecError("Family.nonlinearity must be a Nonlinearity, "
                            f"got {self.nonlinearity!r}")
        a = self.alpha
        if isinstance(a, bool) or not (isinstance(a, (int, float)) and math.isfinite(a) and a != 0):
            raise SpecError(f"Family.alpha must be a non-zero number, got {self.alpha!r}")
        check_int("Family.reference_n", self.reference_n, 2)

    # --- parameters -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Coordinates of the domain."""
        return self.domain.dim

    @property
    def n_params(self) -> int:
        """Length of one instance's parameter vector (field coefficients, then lambda)."""
        return self.field.n_coefficients(self.dim) + 1

    def sample(self, n: int, seed: int = 0, start: int = 0) -> np.ndarray:
        """Parameters of instances ``start .. start + n - 1`` of ``seed``, shape
        ``(n, n_params)``; instance i comes from its own generator seeded by ``(seed, i)``."""
        check_int("n", n, 0)
        check_int("seed", seed, 0)
        check_int("start", start, 0)
        out = np.empty((n, self.n_params))
        lo, hi = self.lam
        for row, i in enumerate(range(start, start + n)):
            rng = np.random.default_rng([int(seed), int(i)])
            out[row, :-1] = self.field.draw(self.dim, rng)
            out[row, -1] = lo + (hi - lo) * rng.random()
        return out

    def f_values(self, params, x) -> np.ndarray:
        """``f`` of instances ``params`` (``(n, n_params)``) at points ``x`` (``(k, d)``):
        shape ``(n, k)``."""
        p = np.atleast_2d(np.asarray(params, dtype=float))
        return self.field.evaluate(p[:, :-1], np.asarray(x, dtype=float),
                                   self.domain.lower, self.domain.upper)

    def skip_values(self, params, x) -> np.ndarray:
        """``f / alpha`` at ``x`` of each instance, ``(n, k)``: what an operator with the skip
        connection adds to the learned integral term."""
        return self.f_values(params, x) / float(self.alpha)

    @property
    def linear(self) -> bool:
        """Whether the solution is linear in the branch inputs (``f``, fixed ``lambda``, a
        linear equation): a linear branch suffices."""
        return self.nonlinearity.linear and self.lam[0] == self.lam[1]

    def n_inputs(self, sensors: int) -> int:
        """Inputs of the branch for ``sensors`` sensor values: one more (lambda) when the
        family varies lambda, which the operator cannot see in ``f``."""
        return sensors + (1 if self.lam[0] != self.lam[1] else 0)

    def branch_inputs(self, f_sensors, params, sensor_x=None) -> np.ndarray:
        """What the branch reads of each instance: ``f`` at the sensors, then lambda when
        the family varies it (``sensor_x`` is not needed: ``f`` is given)."""
        f = np.atleast_2d(np.asarray(f_sensors, dtype=float))
        if self.lam[0] == self.lam[1]:
            return f
        return np.concatenate([f, self.lam_values(params)[:, None]], axis=1)

    def lam_values(self, params) -> np.ndarray:
        """``lambda`` of each instance, shape ``(n,)``."""
        return np.atleast_2d(np.asarray(params, dtype=float))[:, -1].copy()

    def problem(self, params) -> Problem:
        """The daskie :class:`Problem` of one instance (parameters of shape ``(n_params,)``)."""
        p = np.asarray(params, dtype=float).reshape(-1)
        if p.shape != (self.n_params,):
            raise SpecError(f"an instance of family {self.name!r} has {self.n_params} parameters, "
                            f"got {p.shape}")
        coef, lam = p[:-1].copy(), float(p[-1])
        field, lo, hi = self.field, self.domain.lower, self.domain.upper
        upper = (VOLTERRA,) * self.dim if self.volterra else None
        term = IntegralTerm(kernel=self.kernel, lam=lam, upper=upper,
                            nonlinearity=self.nonlinearity)
        return Problem(domain=self.domain, f=lambda x: field.evaluate(coef, x, lo, hi),
                       terms=[term], alpha=float(self.alpha), name=self.name,
                       description=self.description)

    def reference(self):
        """The instances' reference solver (:class:`~daskie.reference.Nystrom`)."""
        from daskie.reference import Nystrom

        return Nystrom(self.reference_n)

    def describe(self) -> dict:
        """Plain-data summary (JSON-serialisable) for data sets and benchmarks."""
        return {"name": self.name, "dim": self.dim, "domain": self.domain.to_dict(),
                "field": vars(self.field), "lam": list(self.lam), "volterra": self.volterra,
                "nonlinearity": self.nonlinearity.name, "alpha": float(self.alpha),
                "reference_n": self.reference_n, "n_params": self.n_params,
                "description": self.description}


def _gauss_kernel(width: float):
    def kernel(x, t):
        return np.exp(-np.sum((x - t) ** 2, axis=-1) / width)
    return kernel


def _decay_kernel(x, t):
    return np.exp(-(x[..., 0] - t[..., 0]))


def _fredholm_1d() -> Family:
    return Family("fredholm-1d", Domain((0.0,), (1.0,)), _gauss_kernel(0.5),
                  field=RandomField(modes=6, length=0.2), lam=(0.5, 0.5),
                  description="mu = f + 0.5 Int_0^1 exp(-2 (x - t)^2) mu(t) dt, f a random field")


def _volterra_1d() -> Family:
    return Family("volterra-1d-sin", Domain((0.0,), (1.0,)), _decay_kernel,
                  field=RandomField(modes=6, length=0.2), lam=(0.5, 1.5), volterra=True,
                  nonlinearity=Nonlinearity.sin(), reference_n=64,
                  description="mu = f + lam Int_0^x exp(-(x - t)) sin(mu(t)) dt, f a random field, "
                              "lam ~ U(0.5, 1.5)")


def _fredholm_2d() -> Family:
    return Family("fredholm-2d", Domain((0.0, 0.0), (1.0, 1.0)), _gauss_kernel(1.0),
                  field=RandomField(modes=4, length=0.25), lam=(0.3, 0.3), reference_n=12,
                  description="mu = f + 0.3 Int_[0,1]^2 exp(-|x - t|^2) mu(t) dt, f a random field")


@dataclass(frozen=True)
class FieldAndKernel:
    """``problem_of`` of the built-in kernel-varying families: ``f`` from a random field
    (the first ``field.n_coefficients(d)`` parameters) and the kernel ``kind`` of the last
    parameter: ``"width"`` ``exp(-|x - t|^2 / p)``, ``"decay"`` ``exp(-p (x_0 - t_0))``.

    Parameters
    ----------
    domain : Domain
    field : RandomField
    kind : str
        ``"width"`` or ``"decay"``.
    lam : float
    volterra : bool
    """

    domain: Domain
    field: RandomField
    kind: str
    lam: float
    volterra: bool = False

    def __post_init__(self):
        if self.kind not in ("width", "decay"):
            raise SpecError(f"FieldAndKernel.kind must be 'width' or 'decay', got {self.kind!r}")

    def __call__(self, params) -> Problem:
        """The problem of one instance's parameters."""
        coef, p = np.asarray(params[:-1], dtype=float), float(params[-1])
        field, lo, hi = self.field, self.domain.lower, self.domain.upper
        kernel = _gauss_kernel(p) if self.kind == "width" else _decay_rate_kernel(p)
        upper = (VOLTERRA,) * self.domain.dim if self.volterra else None
        return Problem(domain=self.domain, f=lambda x: field.evaluate(coef, x, lo, hi),
                       terms=[IntegralTerm(kernel=kernel, lam=self.lam, upper=upper)])


@dataclass(frozen=True)
class FieldAndRange:
    """``distribution`` of the built-in kernel-varying families: a random field's
    coefficients, then one parameter ``~ U(low, high)``.

    Parameters
    ----------
    field : RandomField
    dim : int
    low, high : float
    """

    field: RandomField
    dim: int
    low: float
    high: float

    def __call__(self, rng) -> np.ndarray:
        """One instance's parameters drawn from ``rng``."""
        return np.append(self.field.draw(self.dim, rng), self.low + (self.high - self.low)
                         * rng.random())


def _decay_rate_kernel(rate: float):
    def kernel(x, t):
        return np.exp(-rate * (x[..., 0] - t[..., 0]))
    return kernel


def _kernel_family(name, domain, field, kind, lam, span, volterra=False, **kw):
    from daskie.problems.parametric import ParametricFamily

    d = domain.dim
    coefs = tuple(f"c{k}" for k in range(field.n_coefficients(d)))
    return ParametricFamily(name, domain, FieldAndKernel(domain, field, kind, lam, volterra),
                            FieldAndRange(field, d, *span), params=coefs + (kind,),
                            inputs=("f", kind), linear=False, **kw)


def _training_1d(steps):
    """learn_operator's defaults for the 1-D kernel-varying families (measured:
    benchmarks/results/operator_accuracy.json). Their solution operator is nonlinear in
    (f, kernel parameter): thousands of instances, a two-layer branch, Adam on the hidden
    layers with the branch's output layer solved by least squares before every step;
    ``steps`` (the Fredholm width family needs more than the Volterra decay one)."""
    from daskie.problems.parametric import OperatorDefaults

    return OperatorDefaults(n=3200, branch=(64, 64), trunk=(20, 20), width=20,
                            optimizer="lshead", steps=steps, lr=3e-3, decay=5e-4, ridge=1e-9)


def _training_2d_fine():
    """learn_operator's defaults for ``fredholm-2d-fine`` (as :func:`_training_1d`; the
    instances are 64 x 64 outputs each, a step costs 4096 / 33 times more per instance).
    2000 instances (1800 trained on): with 480 the branch overfits (held-out median rel L2
    2.6e-2), with 1800 it reaches 1.2e-3 in 1000 steps (benchmarks/results/
    operator_accuracy.json)."""
    from daskie.problems.parametric import OperatorDefaults

    return OperatorDefaults(n=2000, branch=(64, 64), trunk=(32, 32), width=24,
                            optimizer="lshead", steps=1000, lr=3e-3, decay=5e-4, ridge=1e-9)


def _fredholm_1d_width():
    return _kernel_family("fredholm-1d-width", Domain((0.0,), (1.0,)),
                          RandomField(modes=6, length=0.2), "width", 0.5, (0.1, 1.0),
                          reference_n=32, training=_training_1d(8000),
                          description="mu = f + 0.5 Int_0^1 exp(-(x - t)^2 / w) mu(t) dt, "
                                      "f a random field, the kernel width w ~ U(0.1, 1)")


def _volterra_1d_decay():
    return _kernel_family("volterra-1d-decay", Domain((0.0,), (1.0,)),
                          RandomField(modes=6, length=0.2), "decay", 1.0, (0.5, 4.0),
                          volterra=True, reference_n=64, training=_training_1d(3000),
                          description="mu = f + Int_0^x exp(-c (x - t)) mu(t) dt, f a random "
                                      "field, the decay rate c ~ U(0.5, 4)")


def _fredholm_2d_fine():
    return _kernel_family("fredholm-2d-fine", Domain((0.0, 0.0), (1.0, 1.0)),
                          RandomField(modes=4, length=0.25), "width", 0.3, (0.5, 2.0),
                          reference_n=12, sensors=8, query=64, point_chunk=512,
                          training=_training_2d_fine(),
                          description="mu = f + 0.3 Int_[0,1]^2 exp(-|x - t|^2 / w) mu(t) dt "
                                      "on a 64 x 64 query grid, f a random field, the kernel "
                                      "width w ~ U(0.5, 2)")


#: The built-in families by name: a 1-D linear Fredholm family (varying f), a 1-D nonlinear
#: Volterra family (varying f and lambda), a 2-D Fredholm family (varying f) -- each a
#: :class:`Family` -- and, as :class:`~daskie.problems.parametric.ParametricFamily`, two 1-D
#: families that vary the kernel (a Fredholm kernel's width, a Volterra kernel's decay) and a
#: 2-D one that varies the kernel's width, on a 64 x 64 query grid.
FAMILIES = {"fredholm-1d": _fredholm_1d, "volterra-1d-sin": _volterra_1d,
            "fredholm-2d": _fredholm_2d, "fredholm-1d-width": _fredholm_1d_width,
            "volterra-1d-decay": _volterra_1d_decay, "fredholm-2d-fine": _fredholm_2d_fine}


def family(name: str):
    """The built-in family ``name`` (one of :data:`FAMILIES`): a :class:`Family` or a
    :class:`~daskie.problems.parametric.ParametricFamily`."""
    if name not in FAMILIES:
        raise SpecError(f"no family named {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]()
