"""The operator-learning objective as a daskie formulation (no Dask, no zarr here).

Training a DeepONet on a family is a least-squares problem over one network: its value at
rows ``z = (f_i at the sensors, x_j)`` for the training instances ``i`` and points ``j``.
:class:`OperatorLoss` writes it as a :class:`~daskie.formulations.base.Discretization` with
one sub-model (``"G"``), so every optimizer (Adam, L-BFGS, Levenberg-Marquardt), the
data-parallel objective (:class:`~daskie.train.collective.ShardedObjective`), the SPMD runner
and its checkpoints train it exactly as they train an integral equation. Two residual blocks:

* ``"data"`` -- ``G(f_i)(x_j) - mu_i(x_j)`` against the reference solutions of the data set;
* ``"physics"`` -- the integral equation itself,
  ``alpha G(f_i)(x_j) - f_i(x_j) - lam_i sum_k W_jk K(x_j, t_jk) M(G(f_i)(t_jk))``, with the
  Gauss rules of :mod:`daskie.quadrature` (shared nodes for Fredholm families, a rule mapped
  onto ``[lower, x_j]`` per point for Volterra families); it needs no solutions.

``shard=(k, n)`` keeps the k-th of n contiguous ranges of the training instances and reads
only those rows of the data set, with block weights scaled so that the shards' losses sum to
the full loss (the mean over every training row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from daskie.errors import SpecError, check_int
from daskie.formulations.base import Discretization, Evaluation, Formulation, SubModel, tensor_maker
from daskie.nn.deeponet import DeepONet
from daskie.quadrature import tensor_rule

__all__ = ["TrainingSet", "OperatorLoss", "DeepONetHead", "instance_shard", "point_shard",
           "branch_inputs",
           "n_branch_inputs"]


def _range(value, name):
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a pair (first, stop) of instance indices, "
                        f"got {value!r}") from None
    if not 0 <= lo < hi:
        raise SpecError(f"{name} must satisfy 0 <= first < stop, got {value!r}")
    return lo, hi


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """What an operator is trained on: a data set on disk, its family, which instances.

    Parameters
    ----------
    path : str
        The data set (:class:`~daskie.store.dataset.OperatorDataset`), visible to every
        worker (each reads its own shard).
    family : Family
        The family the data set was generated from (the physics residual needs it).
    train : (int, int)
        Instances ``[first, stop)`` to train on.
    test : (int, int), optional
        Held-out instances ``[first, stop)`` for the test error in the records.
    """

    path: str
    family: object
    train: tuple[int, int]
    test: tuple[int, int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "train", _range(self.train, "TrainingSet.train"))
        if self.test is not None:
            object.__setattr__(self, "test", _range(self.test, "TrainingSet.test"))

    @property
    def name(self) -> str:
        """The family's name (labels of plans, records and reports)."""
        return self.family.name

    def describe(self) -> dict:
        """Plain data (JSON-serialisable) for tokens and records."""
        return {"path": self.path, "family": self.family.describe(), "train": list(self.train),
                "test": None if self.test is None else list(self.test)}


def instance_shard(first: int, stop: int, shard) -> tuple[int, int]:
    """Instances ``[lo, hi)`` of shard ``(k, n)`` of ``[first, stop)``: contiguous ranges
    (each rank reads one slab of the store), sizes differing by at most one."""
    if shard is None:
        return first, stop
    k, n = (int(v) for v in shard)
    total = stop - first
    if n < 1 or not 0 <= k < n:
        raise SpecError(f"shard (k, n) needs n >= 1 and 0 <= k < n, got {shard!r}")
    if n > total:
        raise SpecError(f"{n} shards of {total} training instances leave some shard empty")
    return first + (k * total) // n, first + ((k + 1) * total) // n


def point_shard(q: int, points, chunk: int | None = None) -> tuple[int, int]:
    """Query points ``[a, b)`` of shard ``points=(j, P)`` of ``q`` points: contiguous ranges
    (each rank reads one slab of ``mu``), sizes differing by at most one.

    With ``chunk`` (the data set's query points per chunk of ``mu``,
    :attr:`~daskie.store.dataset.OperatorDataset.point_chunk`) cutting the points into at
    least ``P`` chunks, the shards are whole chunks instead (their counts differing by at
    most one): no two ranks read a common chunk of ``mu``. With fewer chunks than shards
    (one chunk: a data set made without ``point_chunk``) the even split above."""
    j, n = (int(v) for v in points)
    if n < 1 or not 0 <= j < n:
        raise SpecError(f"points (j, P) needs P >= 1 and 0 <= j < P, got {points!r}")
    if n > q:
        raise SpecError(f"{n} point shards of {q} query points leave some shard empty")
    if chunk is not None:
        c = int(chunk)
        if c < 1:
            raise SpecError(f"point chunk must be >= 1, got {chunk!r}")
        chunks = -(-q // c)
        if chunks >= n:
            return min(q, (j * chunks) // n * c), min(q, ((j + 1) * chunks) // n * c)
    return (j * q) // n, ((j + 1) * q) // n


def n_branch_inputs(family, sensors: int) -> int:
    """Inputs of the branch for ``sensors`` sensor values (the family's ``n_inputs``: one
    more, lambda, for a :class:`~daskie.problems.families.Family` that varies it; each
    field at every sensor and each named parameter once for a
    :class:`~daskie.problems.parametric.ParametricFamily`)."""
    return family.n_inputs(sensors)


def branch_inputs(family, f_sensors, params, sensor_x=None) -> np.ndarray:
    """What the branch reads of each instance (the family's ``branch_inputs``): ``f`` at
    the sensors, then what else the family gives it (lambda, ``alpha`` at the sensors
    ``sensor_x``, kernel parameters; :func:`n_branch_inputs`)."""
    return family.branch_inputs(f_sensors, params, sensor_x)


def _check_physics(family):
    from daskie.problems.families import Family

    if not isinstance(family, Family):
        raise SpecError(f"OperatorLoss.physics > 0 needs a Family (one kernel, its rule built "
                        f"once); family {family.name!r} is a {type(family).__name__}: train it "
                        "with the data loss (physics=0)")


def _rows(f_sensors, points):
    """Rows ``(f_i at the sensors, point)`` for every instance i (``f_sensors (n, m)``) and
    every point of ``points (p, d)``, instance-major: shape ``(n * p, m + d)``."""
    n, m = f_sensors.shape
    p, d = points.shape
    return np.concatenate([np.repeat(f_sensors, p, axis=0), np.tile(points, (n, 1))], axis=1)


@dataclass(frozen=True)
class OperatorLoss(Formulation):
    """DeepONet training objective: data loss, physics-informed loss, or both.

    Parameters
    ----------
    net : DeepONet
        The operator network (its ``sensors`` and ``dim`` must match the data set's).
    data : float
        Weight of the data loss (mean squared misfit to the reference solutions); 0: none.
    physics : float
        Weight of the physics-informed loss (mean squared residual of the integral
        equation at the query points); 0: none.
    quadrature : int
        Gauss points per coordinate of the physics residual's rules.
    test_instances : int
        Held-out instances the records' test error is measured on (at most; all query points).
    skip : bool
        Learn the integral term only: the network's output is ``mu - f / alpha`` (for a
        second-kind equation ``mu = f / alpha + (lam / alpha) Int K M(mu)``), and the
        operator adds ``f / alpha`` back (:class:`~daskie.operator.Operator`). The integral
        of a smooth kernel is far smoother than ``f``, and far easier for the trunk to span
        (``benchmarks/results/operator.json``).
    """

    net: DeepONet
    data: float = 1.0
    physics: float = 0.0
    quadrature: int = 32
    test_instances: int = 64
    skip: bool = False

    def __post_init__(self):
        if not isinstance(self.net, DeepONet):
            raise SpecError(f"OperatorLoss.net must be a daskie DeepONet, got {self.net!r}")
        for name in ("data", "physics"):
            v = getattr(self, name)
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not number or not math.isfinite(v) or v < 0:
                raise SpecError(f"OperatorLoss.{name} must be a number >= 0, got {v!r}")
        if self.data == 0 and self.physics == 0:
            raise SpecError("OperatorLoss needs data > 0 or physics > 0 (a loss to minimise)")
        check_int("OperatorLoss.quadrature", self.quadrature, 2)
        check_int("OperatorLoss.test_instances", self.test_instances)
        if not isinstance(self.skip, bool):
            raise SpecError(f"OperatorLoss.skip must be True or False, got {self.skip!r}")

    @property
    def label(self) -> str:
        """``"operator-data"``, ``"operator-data+physics"``, ... (``-skip`` with the skip
        connection)."""
        parts = [p for p, w in (("data", self.data), ("physics", self.physics)) if w > 0]
        return "operator-" + "+".join(parts) + ("-skip" if self.skip else "")

    # --- the physics rule -------------------------------------------------------------------
    def physics_rule(self, family, x):
        """``(nodes, WK, shared)`` of the integral at points ``x`` ``(p, d)``: shared nodes
        ``(Q, d)`` with ``WK (p, Q)`` (Fredholm), or nodes ``(p, Q, d)`` per point with
        ``WK (p, Q)`` (Volterra: the Gauss rule mapped onto ``[lower, x_j]``)."""
        lo, hi = np.asarray(family.domain.lower), np.asarray(family.domain.upper)
        n = self.quadrature
        if not family.volterra:
            t, w = tensor_rule(n, lo, hi)
            return t, w[None, :] * family.kernel(x[:, None, :], t[None, :, :]), True
        u, w = tensor_rule(n, np.zeros_like(lo), np.ones_like(hi))
        span = x - lo  # (p, d)
        t = lo + span[:, None, :] * u[None, :, :]
        wk = np.prod(span, axis=1)[:, None] * w[None, :] * family.kernel(x[:, None, :], t)
        return t, wk, False

    def physics_terms(self, family, params, x, *, device=None, dtype=None) -> dict:
        """What the physics residual of instances ``params`` at points ``x`` needs, as
        tensors on ``device`` in ``dtype`` (None: the CPU, float64): ``f`` there ``(n, p)``,
        ``lam (n, 1)``, the rule's ``nodes`` (numpy) and ``WK``, and whether the nodes are
        ``shared``."""
        T = tensor_maker(device, dtype)
        nodes, wk, shared = self.physics_rule(family, x)
        out = {"f": T(family.f_values(params, x)), "lam": T(family.lam_values(params))[:, None],
               "nodes": nodes, "wk": T(wk), "shared": shared}
        if self.skip:  # f at the nodes: the network's values there are mu - f / alpha
            flat = family.f_values(params, nodes.reshape(-1, x.shape[1]))
            out["f_nodes"] = T(flat.reshape((len(flat),) + nodes.shape[:-1]))
        return out

    @staticmethod
    def physics_residual(family, terms, mu_x, mu_nodes):
        """The physics residual ``(n, p)`` from values of ``mu`` (torch tensors) at the
        points, ``mu_x (n, p)``, and at the rule's nodes, ``mu_nodes`` (``(n, Q)`` shared,
        ``(n, p, Q)`` per point); ``terms`` from :meth:`physics_terms`. A public function of
        the values so that tests can put the reference solution in."""
        m = family.nonlinearity(mu_nodes)
        wk = terms["wk"]
        integral = m @ wk.T if terms["shared"] else (m * wk).sum(dim=-1)
        return float(family.alpha) * mu_x - terms["f"] - terms["lam"] * integral

    # --- the discretization -----------------------------------------------------------------
    def discretize(self, problem, seed: int = 0, shard=None, *, device=None,
                   dtype=None) -> Discretization:
        """Rows of the training instances of ``problem`` (a :class:`TrainingSet`), of data
        shard ``shard=(k, n)`` when given (a contiguous range of instances), on ``device``
        in ``dtype`` (None: the CPU, float64; :meth:`Formulation.discretize`)."""
        rows = self.shard_rows(problem, shard, device=device, dtype=dtype)
        return rows.discretization(None, rows.share)

    def shard_rows(self, problem, shard=None, *, points=None, device=None,
                   dtype=None) -> "ShardRows":
        """Everything the losses of shard ``shard`` need, read once from the data set and put
        on ``device`` in ``dtype`` once (None: the CPU, float64); with ``points=(j, P)`` only
        the j-th of P contiguous ranges of the query points (trunk-parallel ranks: only that
        slice of ``mu`` is read). Its
        :meth:`ShardRows.discretization` gives the objective of any subset of its instances
        (the full shard, or one mini-batch) there, without moving data again."""
        from daskie.store.dataset import OperatorDataset

        if not isinstance(problem, TrainingSet):
            raise SpecError(f"OperatorLoss trains on a TrainingSet, got {type(problem).__name__}")
        family, net = problem.family, self.net
        if self.physics > 0:
            _check_physics(family)
        store = OperatorDataset.open(problem.path)
        sensors, x = store.sensors, store.query
        m = n_branch_inputs(family, len(sensors))
        if net.sensors != m or net.dim != x.shape[1]:
            extra = " and lambda" if m > len(sensors) else ""
            raise SpecError(f"the data set has {len(sensors)} sensors{extra} in {x.shape[1]}-D "
                            f"(DeepONet(sensors={m}, dim={x.shape[1]})); the DeepONet takes "
                            f"{net.sensors} inputs in {net.dim}-D")
        for name, (a, b) in (("train", problem.train), ("test", problem.test or (0, 1))):
            if b > store.n:
                raise SpecError(f"TrainingSet.{name} = [{a}, {b}) reaches past the data set's "
                                f"{store.n} instances")
        first, stop = problem.train
        lo, hi = instance_shard(first, stop, shard)
        q_total = len(x)
        span = None if points is None else \
            point_shard(q_total, points, store.point_chunk)  # whole chunks of mu where it can
        if span is not None:
            x = x[span[0]:span[1]]
        data = store.read(lo, hi, points=span)
        T = tensor_maker(device, dtype)
        inputs = branch_inputs(family, data["f"], data["params"], sensors)
        terms = self.physics_terms(family, data["params"], x, device=T.device, dtype=T.dtype) \
            if self.physics > 0 else None
        test_points, test_exact = np.zeros((0, net.in_dim)), None
        if problem.test is not None:
            a, b = problem.test
            held = store.read(a, min(b, a + self.test_instances))
            # the records' test error: every query point (on every rank alike)
            test_points = _rows(branch_inputs(family, held["f"], held["params"], sensors),
                                store.query)
            test_exact = held["mu"]
            if self.skip:
                test_exact = test_exact - family.skip_values(held["params"], store.query)
            test_exact = test_exact.reshape(-1)
        target = data["mu"]
        if self.skip:
            target = target - family.skip_values(data["params"], x)
        return ShardRows(self, problem, (lo, hi), stop - first, x, T(inputs), T(target),
                         terms, test_points, test_exact,
                         None if shard is None else tuple(int(v) for v in shard),
                         q_total, None if points is None else tuple(int(v) for v in points))


@dataclass(frozen=True, eq=False)
class ShardRows:
    """A data shard of an :class:`OperatorLoss` in memory: the instances ``span = [lo, hi)``
    of ``n_total`` training instances, their branch inputs ``(n, m)``, the network's targets
    ``mu`` ``(n, p)`` at the query points ``x`` (the reference solutions, less ``f / alpha``
    with ``skip``) and, for the physics loss, the rule's terms."""

    loss: OperatorLoss
    problem: TrainingSet
    span: tuple
    n_total: int
    x: np.ndarray
    inputs: object
    mu: object
    terms: dict | None
    test_points: np.ndarray
    test_exact: np.ndarray | None
    shard: tuple | None
    q_total: int | None = None
    points: tuple | None = None

    @property
    def share(self) -> float:
        """The fraction of the training rows (instances x points) this shard holds: the
        weight under which the shards' losses sum to the mean over every row."""
        q = len(self.x) if self.q_total is None else self.q_total
        return (self.n / self.n_total) * (len(self.x) / q)

    @property
    def n(self) -> int:
        """Instances of the shard."""
        return self.span[1] - self.span[0]

    def discretization(self, index, share: float) -> Discretization:
        """The objective's discretization of the shard's instances ``index`` (local
        positions; None: all), its blocks weighted by ``share`` (the fraction of the step's
        rows these instances hold, so that the shards' losses sum to the mean over them)."""
        import torch

        loss, family, net = self.loss, self.problem.family, self.loss.net
        T = tensor_maker(self.inputs.device, self.inputs.dtype)  # where shard_rows put the shard
        idx = None if index is None else \
            torch.as_tensor(np.asarray(index, dtype=np.int64)).to(T.device)
        pick = (lambda a: a) if idx is None else (lambda a: a[idx])  # noqa: E731
        inputs, mu = pick(self.inputs), pick(self.mu)
        n_here, p = inputs.shape[0], len(self.x)
        x = T(self.x)
        sub = SubModel("G", net.in_dim, net)
        evaluations = {"G@x": Evaluation("G", _rows_t(inputs, x), product=(inputs, x))}
        weights, blocks = {}, {}
        target = mu.reshape(-1)
        if loss.data > 0:
            weights["data"] = float(loss.data) * share
            blocks["data"] = ("G@x",)
        if loss.physics > 0:
            full = self.terms
            terms = {**full, "f": pick(full["f"]), "lam": pick(full["lam"])}
            if loss.skip:
                terms["f_nodes"] = pick(full["f_nodes"])
            alpha = float(family.alpha)
            nodes = terms["nodes"]
            flat = T(nodes.reshape(-1, x.shape[1]))
            evaluations["G@nodes"] = Evaluation("G", _rows_t(inputs, flat),
                                                product=(inputs, flat))
            node_shape = (n_here, *nodes.shape[:-1])  # (n, Q) shared or (n, p, Q) per point
            weights["physics"] = float(loss.physics) * share
            blocks["physics"] = ("G@x", "G@nodes")

        def residual_fn(values):
            out = {}
            u = values["G@x"]
            if "data" in weights:
                out["data"] = u - target
            if "physics" in weights:
                u_x, u_nodes = u.reshape(n_here, p), values["G@nodes"].reshape(node_shape)
                if loss.skip:  # mu = u + f / alpha
                    u_x, u_nodes = u_x + terms["f"] / alpha, u_nodes + terms["f_nodes"] / alpha
                out["physics"] = loss.physics_residual(family, terms, u_x, u_nodes).reshape(-1)
            return out

        # the data block is the identity in G@x: the Jacobian is the per-point gradients
        linear_parts = None
        if "physics" not in weights:
            ones = torch.ones(n_here * p, dtype=T.dtype, device=T.device)
            linear_parts = lambda values: {"data": {"G@x": ("diag", ones)}}  # noqa: E731

        # a data misfit alone is linear in the branch's output layer: it can be solved for
        head = None
        if "physics" not in weights and net.outputs == 1 and self.points is None:
            head = DeepONetHead(net, inputs, x, mu)
        lo, hi = self.span
        return Discretization(
            problem=self.problem, submodels={"G": sub}, evaluations=evaluations,
            residual_fn=residual_fn, solution="G", test_points=self.test_points,
            test_exact=self.test_exact, block_evaluations=blocks, weights=weights,
            linear_parts=linear_parts, head=head,
            info={"formulation": loss.label, "instances": [int(lo), int(hi)],
                  "points": int(p), "rows": int(n_here * p), "n_params": sub.n_params,
                  "shard": None if self.shard is None else list(self.shard)})


@dataclass(frozen=True, eq=False)
class DeepONetHead:
    """The least-squares problem of a DeepONet's branch output layer under the data loss.

    With the branch's last hidden features ``Phi (n, h + 1)`` (ones appended), the trunk's
    features ``T (p, q)`` and the targets ``Y (n, p)``, the network's values are
    ``Phi W T^T + b0``, linear in the output layer ``W (h + 1, q)``; the misfit's minimiser
    solves ``(Phi^T Phi) W (T^T T) = Phi^T (Y - b0) T`` (with a ridge: :meth:`solve`).
    :meth:`sums` gives this shard's ``Phi^T Phi`` and ``Phi^T (Y - b0) T`` (sums over
    instances: data-parallel ranks all-reduce them), :meth:`solve` the parameters with the
    minimiser put in.
    """

    net: DeepONet
    inputs: object
    x: object
    target: object
    submodel: str = "G"

    def sums(self, theta):
        """``(Phi^T Phi, Phi^T (Y - b0) T)`` over this discretization's instances."""
        import torch

        with torch.no_grad():
            phi = self.net.head_features(theta, self.inputs)
            t = self.net.trunk_features(theta, self._x(theta))[:, 0, :]
            b0 = self.net.output_bias(theta)
            y = self.target if b0 is None else self.target - b0
            return phi.T @ phi, phi.T @ (y @ t)

    def solve(self, theta, sums, ridge: float):
        """``theta`` with the branch's output layer that minimises the summed misfit plus
        ``ridge * s_max ||W||^2`` (``s_max`` the largest eigenvalue of the system
        ``T^T T (x) Phi^T Phi``: the solve's condition number is at most ``1 / ridge``),
        from the eigendecompositions of the two Gram matrices."""
        import torch

        A, B = sums
        with torch.no_grad():
            t = self.net.trunk_features(theta, self._x(theta))[:, 0, :]
            sa, ua = torch.linalg.eigh(A)
            sc, uc = torch.linalg.eigh(t.T @ t)
            sa, sc = sa.clamp(min=0), sc.clamp(min=0)
            scale = sa[:, None] * sc[None, :]
            denom = scale + ridge * scale.max()
            # ridge 0: directions the data do not see get 0 (the least-norm solution)
            coef = torch.where(denom > 0, (ua.T @ B @ uc) / denom.clamp(min=1e-300), 0.0)
            W = ua @ coef @ uc.T
        return self.net.with_head(theta, W)

    def _x(self, theta):
        """The query points (a tensor of the discretization) where ``theta`` is."""
        return self.x.to(device=theta.device, dtype=theta.dtype)

    def mask(self, n_params: int, device="cpu"):
        """Boolean mask of the parameters :meth:`solve` sets (on ``device``)."""
        import torch

        out = torch.zeros(n_params, dtype=torch.bool, device=device)
        for s in self.net.head_slices():
            out[s] = True
        return out


def _rows_t(inputs, points):
    """:func:`_rows` on tensors."""
    import torch

    n, p = inputs.shape[0], points.shape[0]
    return torch.cat([inputs.repeat_interleave(p, dim=0), points.repeat(n, 1)], dim=1)
