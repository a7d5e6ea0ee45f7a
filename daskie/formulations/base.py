"""What every formulation produces: sub-models, the evaluations they need, residual blocks.

A :class:`Discretization` is the contract between formulations and everything that trains:

* ``submodels`` — the networks (mu, and for order reduction the auxiliary F_{i,m});
* ``evaluations`` — each a sub-model (or one of its input derivatives) at a fixed point set;
* ``residual_blocks(values)`` — the residuals as differentiable functions of those values.

Because the residuals depend on the parameters only through the evaluations, the Jacobian
of the residuals is ``dR/dE @ dE/dtheta``: per-point parameter gradients of each network
(cheap, ``vmap(grad)``) pushed forward through ``R`` (``jvp``). The same split lets the
distributed runtime evaluate each network on its own worker and exchange only the values
``E`` and the gradients ``dL/dE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from daskie.nn.mlp import MLP

__all__ = ["SubModel", "Evaluation", "Discretization", "Formulation", "shard_rows", "tensor_maker"]


def tensor_maker(device=None, dtype=None):
    """``T(array) -> Tensor`` that puts a discretization's data (numpy arrays, computed in
    float64) on ``device`` in ``dtype`` (None: the CPU, float64), in one copy.

    Every formulation builds its tensors through one of these, so that a discretization lives
    on one device and the data move there once, when it is built, never per step.
    """
    import torch

    device = torch.device("cpu" if device is None else device)
    dtype = torch.float64 if dtype is None else dtype
    if not dtype.is_floating_point:
        from daskie.errors import SpecError

        raise SpecError(f"a discretization's dtype must be a floating-point torch dtype, got {dtype}")

    def T(a):
        host = torch.as_tensor(np.ascontiguousarray(a, dtype=np.float64), device="cpu")
        return host.to(device=device, dtype=dtype)

    T.device, T.dtype = device, dtype
    return T


def shard_rows(n_rows: int, shard) -> np.ndarray:
    """Row indices of data shard ``shard = (k, n)`` of ``n_rows`` rows (``None``: all rows).

    Shard k takes rows ``k, k + n, k + 2n, ...``: every shard samples the whole domain,
    and the n shards together hold every row exactly once.
    """
    if shard is None:
        return np.arange(n_rows)
    from daskie.errors import SpecError

    try:
        k, n = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise SpecError(f"shard must be a pair (k, n), got {shard!r}") from None
    if n < 1 or not 0 <= k < n:
        raise SpecError(f"shard (k, n) needs n >= 1 and 0 <= k < n, got {shard!r}")
    if n > n_rows:
        raise SpecError(f"shard {shard!r}: {n} shards of {n_rows} rows leave some shard empty")
    return np.arange(k, n_rows, n)


@dataclass(frozen=True)
class SubModel:
    """One network of a formulation.

    Parameters
    ----------
    name : str
        ``"mu"`` for the solution, ``"F{i}.{m}"`` for order-reduction auxiliaries.
    in_dim : int
        Number of inputs.
    net : MLP
        Architecture.
    zero_axis : int, optional
        When set, the output is ``(z[zero_axis] - zero_value) * net(z)``: the zero
        constraint (seed 000 Eq 4.5) holds exactly by construction.
    zero_value : float
        See ``zero_axis``.
    role : str
        ``"solution"`` or ``"auxiliary"``.
    term, order : int, optional
        For auxiliaries: the integral term i and the chain position m.
    affine : callable, optional
        ``affine(z) -> (scale, shift)``, tensors ``(n,)`` at points ``z``: the output is
        ``scale * net(z) + shift`` (``daskie.formulations.quadrature.SecondKind``: ``mu = (f +
        net) / alpha``, the network learns the integral terms). Values only: a sub-model with
        ``affine`` has no input derivatives.
    """

    name: str
    in_dim: int
    net: MLP
    zero_axis: int | None = None
    zero_value: float = 0.0
    role: str = "solution"
    term: int | None = None
    order: int | None = None
    affine: object = None

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return self.net.n_params(self.in_dim)

    def init_params(self, generator):
        """Fresh flat parameter vector."""
        return self.net.init_params(self.in_dim, generator)

    def apply(self, theta, z):
        """Sub-model output at ``z`` (shape ``(n, in_dim)`` or ``(in_dim,)``)."""
        out = self.net.apply(theta, z)
        if self.zero_axis is not None:
            out = (z[..., self.zero_axis] - self.zero_value) * out
        if self.affine is not None:
            scale, shift = self.affine(z)
            out = scale * out + shift
        return out

    def apply_derivative(self, theta, z, axis: int):
        """Derivative of the output along input ``axis`` at points ``z`` (shape
        ``(n, in_dim)``), or None when the network has no closed-form tangent (then callers
        use ``torch.func.jvp`` of :meth:`apply`)."""
        if self.affine is not None:
            from daskie.errors import SpecError

            raise SpecError(f"sub-model {self.name!r} has an output transform (affine): its input "
                            f"derivatives are not available")
        tangent = getattr(self.net, "apply_tangent", None)
        pair = tangent(theta, z, axis) if tangent is not None else None
        if pair is None:
            return None
        out, d = pair
        if self.zero_axis is not None:
            d = (z[..., self.zero_axis] - self.zero_value) * d
            if axis == self.zero_axis:
                d = d + out
        return d


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A sub-model, or its derivative along input ``derivative``, at fixed ``points``.

    ``product=(inputs, coords)``, when given, says that ``points`` are the Cartesian product
    of the rows of ``inputs (n, a)`` and of ``coords (q, b)``, instance-major (row
    ``i q + j`` is ``(inputs[i], coords[j])``): a network with an ``operator(theta, inputs,
    coords)`` method (a DeepONet) then evaluates them with one pass per factor instead of
    one per row.
    """

    submodel: str
    points: object  # torch.Tensor (n, in_dim), float64
    derivative: int | None = None
    product: tuple | None = None

    @property
    def size(self) -> int:
        """Number of points."""
        return int(self.points.shape[0])


@dataclass(eq=False)
class Discretization:
    """A formulation applied to one problem: everything training needs, as tensors.

    Attributes
    ----------
    problem : Problem
    submodels : dict of SubModel
    evaluations : dict of Evaluation
    residual_fn : callable
        ``residual_fn(values) -> dict[str, Tensor]`` mapping evaluation values to the
        residual blocks; the loss is ``sum_b weight_b * mean(r_b**2)``.
    weights : dict of float
        Block weights (1 by default).
    solution : str
        Name of the sub-model that approximates mu.
    test_points, test_exact : numpy arrays
        Held-back points (never used in training) and the exact solution there (or None).
    couplings : dict
        For each residual block, the sub-models it involves (planner and windows use it).
    info : dict
        Plain-data description (point counts, rules) for stores and reports.
    head : object, optional
        For formulations whose residual is linear in the output layer of a sub-model (a
        data misfit): an object with ``sums(params)`` (this discretization's row sums of the
        head's normal equations) and ``solve(params, sums, ridge)`` (that sub-model's
        parameters with the least-squares head put in), which
        :class:`~daskie.train.head.LeastSquaresHead` reads.
    linear_parts : callable, optional
        ``linear_parts(values) -> {block: {key: (kind, C)}}``: the derivative of each
        residual block with respect to each evaluation, in structured form — ``"diag"``
        (``C`` of shape ``(n,)``), ``"dense"`` (``(n_block, n_eval)``) or ``"rows"``
        (``(n_block, q)``: row i reads evaluation points ``i q .. i q + q - 1``). With it the
        Jacobian is assembled without pushing every parameter direction through the
        residual map; without it, a generic ``vmap(jvp)`` is used.
    """

    problem: object
    submodels: dict[str, SubModel]
    evaluations: dict[str, Evaluation]
    residual_fn: Callable
    solution: str
    test_points: np.ndarray
    test_exact: np.ndarray | None
    block_evaluations: dict[str, tuple[str, ...]]
    weights: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    linear_parts: Callable | None = None
    head: object | None = None

    @property
    def couplings(self) -> dict[str, tuple[str, ...]]:
        """Sub-models involved in each residual block."""
        return {b: tuple(sorted({self.evaluations[e].submodel for e in evs}))
                for b, evs in self.block_evaluations.items()}

    def residual_blocks(self, values: dict) -> dict:
        """Residual blocks from evaluation values."""
        return self.residual_fn(values)

    @property
    def device(self):
        """The torch device every tensor of this discretization lives on (that of its
        evaluation points; :meth:`Formulation.discretize` places them)."""
        return next(iter(self.evaluations.values())).points.device

    @property
    def dtype(self):
        """The floating-point dtype of this discretization's tensors (float64 by default)."""
        return next(iter(self.evaluations.values())).points.dtype


class Formulation:
    """Base class: a formulation turns a :class:`Problem` into a :class:`Discretization`.

    Subclasses are frozen dataclasses with typed, validated options and implement
    :meth:`discretize`.
    """

    def discretize(self, problem, seed: int = 0, shard=None, *, device=None,
                   dtype=None) -> Discretization:  # pragma: no cover
        """Build the discretization of ``problem`` (points drawn with ``seed``).

        ``shard=(k, n)`` keeps data shard k of n of every residual block's rows (see
        :func:`shard_rows`), with block weights scaled so that the n shards' losses sum to
        the full loss and their normal equations to the full ones (data-parallel training).

        ``device`` and ``dtype`` place the discretization: every tensor it holds (points,
        data, the residual map's constants) is made there, once, from float64 numpy data
        (:func:`tensor_maker`); None: the CPU, float64. The same points and numbers on every
        device: only the arithmetic moves. An objective built on it computes there
        (:class:`~daskie.train.objective.Objective` takes its device from it). A user
        formulation that does not take these arguments still works on the CPU.
        """
        raise NotImplementedError

    @property
    def label(self) -> str:
        """Short name used in records and stores."""
        return type(self).__name__

    def solver_defaults(self) -> dict:
        """Options of the optimizer a solve of this formulation uses when none is given
        (:func:`daskie.api.default_optimizer` builds it): Levenberg-Marquardt's damping
        ``scaling`` and the step budget ``max_steps`` of its convergence-based stopping.

        Marquardt's scaling (damping by diag J^T J) for one network, and at most 2000 steps:
        training stops when the error estimate is within the tolerance, on a ridge, at the
        discretization floor or on a stall long before (no wall-clock limit; issue 15: with
        a fixed 300 steps the loss was still falling by orders of magnitude at the end). A
        formulation whose loss wants other options overrides this.
        """
        return {"scaling": "marquardt", "max_steps": 2000}
