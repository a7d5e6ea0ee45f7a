"""Any parametric family: a function ``params -> Problem`` and a seeded parameter distribution.

:class:`~daskie.problems.families.Family` is the convenient case (one kernel, ``f`` from a
random field, ``lambda`` from an interval). :class:`ParametricFamily` is the general one: the
user writes how one instance's parameter vector becomes a daskie
:class:`~daskie.problems.Problem` (any kernel width or decay, a coefficient ``alpha(x)``, a
second term's strength, ...) and how one parameter vector is drawn from a
``numpy.random.Generator``; ``inputs`` says what the operator's branch sees of an instance:
``"f"`` and ``"alpha"`` sampled at the sensors, and parameters by name, as they are::

    def build(p):
        width = p[2]
        return Problem(Domain((0.0,), (1.0,)), f=lambda x: p[0] + p[1] * x[..., 0],
                       terms=[IntegralTerm(lambda x, t: np.exp(-(x - t)[..., 0] ** 2 / width),
                                           lam=0.5)])

    fam = ParametricFamily("my-family", Domain((0.0,), (1.0,)), build,
                           lambda rng: np.array([*rng.normal(size=2), rng.uniform(0.1, 1.0)]),
                           params=("a", "b", "width"), inputs=("f", "width"))

Instance ``i`` of seed ``s`` is drawn from its own generator (``numpy`` seeded by
``(s, i)``), as for :class:`Family`. Everything is checked at construction, on instance 0 of
seed 0, with errors that name the field. The families' shared surface (what the data set
generation, the operator loss and the operator read) is :data:`FAMILY_SURFACE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from daskie.errors import SpecError, check_int
from daskie.problems.domain import Domain
from daskie.problems.spec import Problem

__all__ = ["ParametricFamily", "OperatorDefaults", "FAMILY_SURFACE", "check_family"]

#: What operator learning reads of a family (``Family`` and ``ParametricFamily`` both have it).
FAMILY_SURFACE = ("name", "domain", "dim", "n_params", "sample", "problem", "reference",
                  "f_values", "skip_values", "n_inputs", "branch_inputs", "linear", "describe")

_FIELDS = ("f", "alpha")


_OPTIMIZERS = ("lshead", "adam", "lm")


@dataclass(frozen=True)
class OperatorDefaults:
    """How :func:`daskie.operator.learn_operator` learns a family's operator when told no
    more (its ``n``, :func:`~daskie.operator.default_net` and
    :func:`~daskie.operator.default_optimizer`): plain numbers, no network objects.

    Parameters
    ----------
    n : int
        Instances of the data set (training plus held out).
    branch : tuple of int or None
        Hidden widths of the DeepONet's tanh branch (None: a linear branch).
    trunk : tuple of int
        Hidden widths of the tanh trunk.
    width : int
        Features of the dot product.
    optimizer : str
        ``"lshead"``: Adam on the hidden layers with the branch's output layer solved by
        least squares before every step (:class:`~daskie.train.LeastSquaresHead`, full
        batch); ``"adam"``; ``"lm"``: Levenberg-Marquardt.
    steps : int
        Optimizer steps.
    lr, decay : float
        Adam's learning rate and its decay ``lr_k = lr / (1 + decay k)``.
    ridge : float
        The least-squares head's ridge.
    """

    n: int = 500
    branch: tuple | None = (32,)
    trunk: tuple = (20, 20)
    width: int = 20
    optimizer: str = "lshead"
    steps: int = 2000
    lr: float = 3e-3
    decay: float = 5e-4
    ridge: float = 1e-9

    def __post_init__(self):
        where = "OperatorDefaults"
        check_int(f"{where}.n", self.n, 2)
        for name in ("branch", "trunk"):
            v = getattr(self, name)
            if name == "branch" and v is None:
                continue
            if not isinstance(v, (tuple, list)) or not v:
                raise SpecError(f"{where}.{name} must be a tuple of hidden widths, got {v!r}")
            for w in v:
                check_int(f"{where}.{name}", w)
            object.__setattr__(self, name, tuple(int(w) for w in v))
        check_int(f"{where}.width", self.width)
        if self.optimizer not in _OPTIMIZERS:
            raise SpecError(f"{where}.optimizer must be one of {_OPTIMIZERS}, got "
                            f"{self.optimizer!r}")
        check_int(f"{where}.steps", self.steps)
        for name in ("lr", "decay", "ridge"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0 or (name == "lr" and v == 0):
                raise SpecError(f"{where}.{name} must be a finite number "
                                f"{'> 0' if name == 'lr' else '>= 0'}, got {v!r}")


def _problem_values(problem: Problem, name: str, x) -> np.ndarray:
    return problem.f_at(x) if name == "f" else problem.alpha_at(x)


@dataclass(frozen=True, eq=False)
class ParametricFamily:
    """A family of integral equations given by ``problem_of(params)`` and a seeded distribution.

    Parameters
    ----------
    name : str
        Label (data sets, runs and reports record it).
    domain : Domain
        A box; every instance's problem must be posed on it.
    problem_of : callable
        ``problem_of(params) -> Problem`` for one instance's parameter vector (``(n_params,)``).
    distribution : callable
        ``distribution(rng) -> params``: one instance's parameters drawn from the
        ``numpy.random.Generator`` ``rng`` (finite numbers, ``len(params)`` of them).
    params : tuple of str
        The parameters' names, in order.
    inputs : tuple of str
        What the branch reads of an instance, in order: ``"f"`` and ``"alpha"`` (the
        problem's right-hand side and coefficient at the sensors), and parameter names
        (their values as they are: a kernel width, a decay rate, a term's strength).
    linear : bool
        True when the solution is linear in the branch inputs (a linear branch suffices;
        only then, e.g. ``f`` varying alone under a fixed linear equation).
    reference_n : int
        Gauss points per coordinate of the instances' Nystrom reference.
    sensors, query : int, optional
        Default points per coordinate of a data set's sensor and query grids (None: the
        defaults by dimension of :func:`daskie.operator.generate_dataset`).
    point_chunk : int, optional
        Default query points per zarr chunk of a data set's ``mu`` (None: one chunk): set it
        for a fine query grid that trunk-parallel ranks share, so that each reads only its
        own chunks.
    training : OperatorDefaults, optional
        How :func:`~daskie.operator.learn_operator` trains the family's operator when told
        no more (None: :func:`~daskie.operator.default_net` and
        :func:`~daskie.operator.default_optimizer`'s general defaults).
    description : str

    Raises
    ------
    SpecError
        At construction, naming the field: a wrong type, an input that is neither ``"f"``,
        ``"alpha"`` nor a parameter, a distribution that returns the wrong number of
        parameters or non-finite ones, a problem on another domain, or one that fails.
    """

    name: str
    domain: Domain
    problem_of: Callable
    distribution: Callable
    params: tuple = ()
    inputs: tuple = ("f",)
    linear: bool = False
    reference_n: int = 24
    sensors: int | None = None
    query: int | None = None
    point_chunk: int | None = None
    training: OperatorDefaults | None = None
    description: str = ""

    def __post_init__(self):
        where = "ParametricFamily"
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"{where}.name must be a non-empty str, got {self.name!r}")
        if not isinstance(self.domain, Domain) or not self.domain.is_box:
            raise SpecError(f"{where}.domain must be a daskie Domain without holes (a box)")
        for field in ("problem_of", "distribution"):
            if not callable(getattr(self, field)):
                raise SpecError(f"{where}.{field} must be callable, got {getattr(self, field)!r}")
        names = tuple(self.params) if isinstance(self.params, (list, tuple)) else None
        if not names or not all(isinstance(p, str) and p for p in names) \
                or len(set(names)) != len(names):
            raise SpecError(f"{where}.params must be distinct non-empty names, one per "
                            f"parameter, got {self.params!r}")
        object.__setattr__(self, "params", names)
        inputs = tuple(self.inputs) if isinstance(self.inputs, (list, tuple)) else None
        if not inputs or len(set(inputs)) != len(inputs):
            raise SpecError(f"{where}.inputs must be distinct names (\"f\", \"alpha\" or "
                            f"parameters), got {self.inputs!r}")
        for item in inputs:
            if item not in _FIELDS and item not in names:
                raise SpecError(f"{where}.inputs: {item!r} is neither 'f', 'alpha' nor one of "
                                f"the parameters {names}")
        object.__setattr__(self, "inputs", inputs)
        if not isinstance(self.linear, bool):
            raise SpecError(f"{where}.linear must be True or False, got {self.linear!r}")
        check_int(f"{where}.reference_n", self.reference_n, 2)
        check_int(f"{where}.sensors", self.sensors, 2, allow_none=True)
        check_int(f"{where}.query", self.query, 2, allow_none=True)
        check_int(f"{where}.point_chunk", self.point_chunk, allow_none=True)
        if self.training is not None and not isinstance(self.training, OperatorDefaults):
            raise SpecError(f"{where}.training must be an OperatorDefaults or None, got "
                            f"{self.training!r}")
        if not isinstance(self.description, str):
            raise SpecError(f"{where}.description must be a str, got {self.description!r}")
        object.__setattr__(self, "_probe", self._check_instance())

    def _check_instance(self) -> list:
        """Instance 0 of seed 0 drawn and built (every check a user's family must pass), and
        a fingerprint of it: its parameters, ``f`` and ``alpha`` at a few points and every
        kernel at a few pairs (a changed function gives another data set token)."""
        p = self.sample(1)[0]
        prob = self.problem(p, _where="ParametricFamily.problem_of")
        x = self.domain.grid(3)
        t = x[::-1]
        probe = list(p) + list(prob.f_at(x)) + list(prob.alpha_at(x))
        for term in prob.terms:
            k = np.asarray(term.kernel(x, t), dtype=float)
            probe += list(np.broadcast_to(k, x.shape[:-1])) + [float(term.lam)]
        return [float(f"{v:.12g}") for v in probe]

    # --- parameters -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Coordinates of the domain."""
        return self.domain.dim

    @property
    def n_params(self) -> int:
        """Length of one instance's parameter vector."""
        return len(self.params)

    def sample(self, n: int, seed: int = 0, start: int = 0) -> np.ndarray:
        """Parameters of instances ``start .. start + n - 1`` of ``seed``, shape
        ``(n, n_params)``; instance i from its own generator seeded by ``(seed, i)``."""
        check_int("n", n, 0)
        check_int("seed", seed, 0)
        check_int("start", start, 0)
        out = np.empty((n, self.n_params))
        for row, i in enumerate(range(start, start + n)):
            try:
                p = np.asarray(self.distribution(np.random.default_rng([int(seed), int(i)])),
                               dtype=float).reshape(-1)
            except SpecError:
                raise
            except Exception as exc:
                raise SpecError(f"ParametricFamily.distribution of {self.name!r} failed on "
                                f"instance {i}: {type(exc).__name__}: {exc}") from exc
            if p.shape != (self.n_params,) or not np.all(np.isfinite(p)):
                raise SpecError(f"ParametricFamily.distribution of {self.name!r} must return "
                                f"{self.n_params} finite numbers (params={self.params}), got "
                                f"{p!r} for instance {i}")
            out[row] = p
        return out

    def problem(self, params, _where="the problem of an instance") -> Problem:
        """The daskie :class:`Problem` of one instance (parameters of shape ``(n_params,)``)."""
        p = np.asarray(params, dtype=float).reshape(-1)
        if p.shape != (self.n_params,):
            raise SpecError(f"an instance of family {self.name!r} has {self.n_params} parameters "
                            f"{self.params}, got {p.shape}")
        try:
            prob = self.problem_of(p.copy())
        except SpecError as exc:
            raise SpecError(f"{_where} of {self.name!r}: {exc}") from exc
        except Exception as exc:
            raise SpecError(f"{_where} of {self.name!r} failed: {type(exc).__name__}: "
                            f"{exc}") from exc
        if not isinstance(prob, Problem):
            raise SpecError(f"{_where} of {self.name!r} must return a daskie Problem, got "
                            f"{type(prob).__name__}")
        if prob.domain.to_dict() != self.domain.to_dict():
            raise SpecError(f"{_where} of {self.name!r} returned a problem on "
                            f"{prob.domain.to_dict()}, not on the family's domain "
                            f"{self.domain.to_dict()}")
        return prob

    def _per_instance(self, params, x, name) -> np.ndarray:
        p = np.atleast_2d(np.asarray(params, dtype=float))
        x = np.asarray(x, dtype=float)
        return np.stack([_problem_values(self.problem(q), name, x) for q in p]) \
            if len(p) else np.zeros((0, len(x)))

    def f_values(self, params, x) -> np.ndarray:
        """``f`` of instances ``params`` (``(n, n_params)``) at points ``x`` (``(k, d)``):
        shape ``(n, k)``."""
        return self._per_instance(params, x, "f")

    def skip_values(self, params, x) -> np.ndarray:
        """``f / alpha`` at ``x`` of each instance, ``(n, k)``: what an operator with the skip
        connection adds to the learned integral term."""
        p = np.atleast_2d(np.asarray(params, dtype=float))
        x = np.asarray(x, dtype=float)
        out = [self.problem(q) for q in p]
        return np.stack([q.f_at(x) / q.alpha_at(x) for q in out]) if out else \
            np.zeros((0, len(x)))

    def n_inputs(self, sensors: int) -> int:
        """Inputs of the branch for ``sensors`` sensor points (each field at every sensor,
        each parameter once)."""
        return sum(sensors if item in _FIELDS else 1 for item in self.inputs)

    def branch_inputs(self, f_sensors, params, sensor_x=None) -> np.ndarray:
        """What the branch reads of each instance (``inputs``, in order): ``f_sensors``
        (``(n, m)``, ``f`` at the sensors as the data set stores it), ``alpha`` at
        ``sensor_x``, the named parameters of ``params``."""
        p = np.atleast_2d(np.asarray(params, dtype=float))
        parts = []
        for item in self.inputs:
            if item == "f":
                parts.append(np.atleast_2d(np.asarray(f_sensors, dtype=float)))
            elif item == "alpha":
                if sensor_x is None:
                    raise SpecError(f"family {self.name!r} gives alpha to the branch: pass the "
                                    "sensor coordinates (sensor_x)")
                parts.append(self._per_instance(p, sensor_x, "alpha"))
            else:
                parts.append(p[:, [self.params.index(item)]])
        return np.concatenate(parts, axis=1)

    def reference(self):
        """The instances' reference solver (:class:`~daskie.reference.Nystrom`)."""
        from daskie.reference import Nystrom

        return Nystrom(self.reference_n)

    def describe(self) -> dict:
        """Plain-data summary (JSON-serialisable) for data sets and benchmarks; its
        ``fingerprint`` (instance 0 of seed 0: parameters, ``f``, ``alpha``, kernels at a few
        points) changes when the user's functions do."""
        return {"name": self.name, "kind": "parametric", "dim": self.dim,
                "domain": self.domain.to_dict(), "params": list(self.params),
                "inputs": list(self.inputs), "linear": self.linear,
                "reference_n": self.reference_n, "n_params": self.n_params,
                "description": self.description, "fingerprint": list(self._probe)}

    def __repr__(self):
        return (f"ParametricFamily({self.name!r}, dim={self.dim}, params={self.params}, "
                f"inputs={self.inputs})")


def check_family(family, what: str = "family") -> None:
    """Refuse what is not a family (a :class:`~daskie.problems.families.Family` or a
    :class:`ParametricFamily`), naming what is missing."""
    from daskie.problems.families import Family

    if isinstance(family, (Family, ParametricFamily)):
        return
    raise SpecError(f"{what} must be a daskie Family or ParametricFamily "
                    f"(daskie.problems.families.family(name) for a built-in one), got {family!r}")

