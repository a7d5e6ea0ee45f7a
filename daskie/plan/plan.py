"""The partition plan: plain data that says which sub-models train together, and where.

A :class:`Plan` is what the planner (:func:`daskie.plan.make_plan`) hands to the graph
builder, the store and the CLI. It holds only numbers, strings, tuples and a dict, so it is
written to JSON and read back unchanged, compared with ``==``, and printed with
:meth:`Plan.describe`; nothing in it needs a cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from functools import cached_property

from daskie.errors import SpecError

__all__ = ["Placement", "Plan", "ResidualBlock", "SubmodelCost"]

#: Resource tags a placement may carry (the names of Dask worker resources).
RESOURCES = ("GPU", "CPU")


@dataclass(frozen=True)
class Placement:
    """One group of sub-models trained together in one task.

    Parameters
    ----------
    index : int
        Position of the group in :attr:`Plan.groups` (0 is the heaviest).
    submodels : tuple of str
        Names of the group's sub-models, in the discretization's order.
    resource : str
        ``"GPU"`` or ``"CPU"``: the worker resource the group's task asks for.
    flops_per_step : float
        Estimated multiply-adds of one training step of the group: three times (forward plus
        backward) the sum of :func:`daskie.plan.cost.evaluation_cost` over the evaluations of
        its sub-models.
    memory_bytes : float
        Estimated training memory of the group: per sub-model ``n_params * 8 * 4`` (float64
        parameters, gradients and two Adam moments) plus ``points * sum(layer widths) * 8 * 3``
        for the stored activations.
    jacobian_bytes : float
        Bytes of the float64 Jacobian of one Levenberg-Marquardt step of the group:
        ``rows x parameters x 8``, with the rows of every residual block that involves one of
        its sub-models and the parameters of all of them (0 in plans written before it existed).
    step_s : float or None
        Measured seconds per training step, set by :func:`daskie.plan.planner.rebalance`
        (None in a plan made from the static estimates alone).
    """

    index: int
    submodels: tuple[str, ...]
    resource: str
    flops_per_step: float
    memory_bytes: float
    jacobian_bytes: float = 0.0
    step_s: float | None = None

    def to_dict(self) -> dict:
        """JSON-compatible dict (the sub-models as a list; ``step_s`` only when measured)."""
        out = {"index": self.index, "submodels": list(self.submodels), "resource": self.resource,
               "flops_per_step": self.flops_per_step, "memory_bytes": self.memory_bytes,
               "jacobian_bytes": self.jacobian_bytes}
        if self.step_s is not None:
            out["step_s"] = self.step_s
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Placement":
        """Inverse of :meth:`to_dict` (``jacobian_bytes`` and ``step_s`` may be absent)."""
        _require(data, ["index", "submodels", "resource", "flops_per_step", "memory_bytes"],
                 "placement")
        if data["resource"] not in RESOURCES:
            raise SpecError(f"placement resource must be one of {RESOURCES}, got {data['resource']!r}")
        step_s = data.get("step_s")
        return cls(index=int(data["index"]), submodels=tuple(str(s) for s in data["submodels"]),
                   resource=str(data["resource"]), flops_per_step=float(data["flops_per_step"]),
                   memory_bytes=float(data["memory_bytes"]),
                   jacobian_bytes=float(data.get("jacobian_bytes", 0.0)),
                   step_s=None if step_s is None else float(step_s))


@dataclass(frozen=True)
class SubmodelCost:
    """The planner's estimates for one sub-model's training step.

    Parameters
    ----------
    name : str
        The sub-model.
    n_params : int
        Its number of parameters P.
    points : int
        Points over all of its evaluations (plain and derivative).
    flops_per_step : float
        Forward plus backward multiply-adds of its MLP at those points:
        ``points * net.flops(in_dim) * 3`` per evaluation, doubled for a derivative evaluation.
    memory_bytes : float
        ``n_params * 8 * 4`` (float64 parameters, gradients, two Adam moments) plus
        ``points * sum(layer widths) * 8 * 3`` (stored activations).
    jacobian_rows : int
        N: residual rows of the blocks that involve it (the rows of its columns of J).
    jacobian_bytes : float
        ``N * P * 8``: its float64 Jacobian columns in a Levenberg-Marquardt step.
    """

    name: str
    n_params: int
    points: int
    flops_per_step: float
    memory_bytes: float
    jacobian_rows: int
    jacobian_bytes: float

    def to_dict(self) -> dict:
        """JSON-compatible dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "SubmodelCost":
        """Inverse of :meth:`to_dict`."""
        _require(data, [f.name for f in fields(cls)], "sub-model cost")
        return cls(name=str(data["name"]), n_params=int(data["n_params"]),
                   points=int(data["points"]),
                   flops_per_step=float(data["flops_per_step"]),
                   memory_bytes=float(data["memory_bytes"]),
                   jacobian_rows=int(data["jacobian_rows"]),
                   jacobian_bytes=float(data["jacobian_bytes"]))


@dataclass(frozen=True)
class ResidualBlock:
    """One residual block of the discretization, as far as planning needs it.

    Parameters
    ----------
    name : str
        The block (``Discretization.block_evaluations`` key).
    submodels : tuple of str
        The sub-models whose evaluations it reads (sorted).
    rows : int
        Its number of residual rows.
    """

    name: str
    submodels: tuple[str, ...]
    rows: int

    def to_dict(self) -> dict:
        """JSON-compatible dict."""
        return {"name": self.name, "submodels": list(self.submodels), "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict) -> "ResidualBlock":
        """Inverse of :meth:`to_dict`."""
        _require(data, ["name", "submodels", "rows"], "residual block")
        return cls(name=str(data["name"]), submodels=tuple(str(s) for s in data["submodels"]),
                   rows=int(data["rows"]))


@dataclass(frozen=True)
class Plan:
    """The planner's answer (seed 000, Algorithm 1) for one discretization and cluster.

    Parameters
    ----------
    problem, formulation : str
        Names of the problem and of the formulation that produced the sub-models.
    term_weights : tuple of float
        The weight omega_i of each integral term.
    term_dims : tuple of int
        The integration dimension n_i of each term (the problem's dimension d).
    c_eff : float
        Effective complexity ``C_eff = sum_i omega_i n_i``.
    n_max : int
        Largest useful number of groups: ``min(workers, floor(memory / sub-model memory))``.
    n_sub : int
        Number of groups, ``min(ceil(C_eff) + 1, n_max, number of sub-models)``.
    groups : tuple of Placement
        The groups, heaviest first; every sub-model is in exactly one.
    dependencies : dict of int to tuple of int
        For each group, the other groups it shares a residual block with (symmetric).
    workers, gpus : int
        The cluster the plan was made for.
    costs : tuple of SubmodelCost
        Per sub-model estimates, in the discretization's order (empty in plans written
        before they existed).
    blocks : tuple of ResidualBlock
        The residual blocks and the sub-models each couples (what
        :func:`daskie.plan.planner.rebalance` re-packs by); empty in older plans.
    pieces : tuple
        Balanced placement (:meth:`with_pieces`): per rank, the row ranges
        ``(evaluation, lo, hi)`` it evaluates; empty when sub-models are placed whole.
    """

    problem: str
    formulation: str
    term_weights: tuple[float, ...]
    term_dims: tuple[int, ...]
    c_eff: float
    n_max: int
    n_sub: int
    groups: tuple[Placement, ...]
    dependencies: dict[int, tuple[int, ...]]
    workers: int
    gpus: int
    costs: tuple[SubmodelCost, ...] = ()
    blocks: tuple[ResidualBlock, ...] = ()
    pieces: tuple = ()

    def on_cpu(self) -> "Plan":
        """This plan with every group on CPU workers (for a cluster without GPUs)."""
        return replace(self, groups=tuple(replace(g, resource="CPU") for g in self.groups),
                       gpus=0)

    def with_pieces(self, disc, ranks: int) -> "Plan":
        """This plan with its evaluation rows dealt to ``ranks`` ranks by estimated work
        (:func:`daskie.plan.cost.balanced_pieces`), the groups' sub-models kept together in
        the order of the groups."""
        from daskie.plan.cost import balanced_pieces

        owners = tuple(g.submodels for g in self.groups)
        pieces = balanced_pieces(disc, owners, ranks)
        return replace(self, pieces=tuple(tuple((str(k), int(lo), int(hi)) for k, lo, hi in p)
                                          for p in pieces))

    @property
    def complexity(self) -> float:
        """``C(IE)``, the complexity the CE metric (seed 000 Eq 4.1) divides by: ``C_eff``."""
        return self.c_eff

    @property
    def submodels(self) -> tuple[str, ...]:
        """Every sub-model of the plan, group by group."""
        return tuple(name for g in self.groups for name in g.submodels)

    @cached_property
    def _group_index(self) -> dict[str, int]:
        return {name: g.index for g in self.groups for name in g.submodels}

    def group_of(self, submodel: str) -> int:
        """Index of the group that trains ``submodel``.

        Raises
        ------
        KeyError
            If the plan has no sub-model of that name.
        """
        try:
            return self._group_index[submodel]
        except KeyError:
            raise KeyError(f"the plan has no sub-model {submodel!r}; it has "
                           f"{', '.join(self.submodels)}") from None

    def cost_of(self, submodel: str) -> SubmodelCost:
        """The planner's estimates for ``submodel``.

        Raises
        ------
        KeyError
            If the plan has no estimates for a sub-model of that name.
        """
        for cost in self.costs:
            if cost.name == submodel:
                return cost
        raise KeyError(f"the plan has no cost estimates for {submodel!r}; it has them for "
                       f"{', '.join(c.name for c in self.costs) or 'no sub-model'}")

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-compatible dict: lists for tuples, string keys for ``dependencies``."""
        return {
            "problem": self.problem, "formulation": self.formulation,
            "term_weights": list(self.term_weights), "term_dims": list(self.term_dims),
            "c_eff": self.c_eff, "n_max": self.n_max, "n_sub": self.n_sub,
            "groups": [g.to_dict() for g in self.groups],
            "dependencies": {str(k): list(v) for k, v in self.dependencies.items()},
            "workers": self.workers, "gpus": self.gpus,
            "costs": [c.to_dict() for c in self.costs],
            "blocks": [b.to_dict() for b in self.blocks],
            "pieces": [[list(piece) for piece in rank] for rank in self.pieces],
        }

    def to_json(self) -> str:
        """The plan as a JSON string (deterministic: the same plan gives the same text)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        """Inverse of :meth:`to_dict`: ``Plan.from_dict(p.to_dict()) == p``.

        ``costs`` and ``blocks`` may be absent (plans written before they existed).
        """
        optional = ("costs", "blocks", "pieces")
        _require(data, [f.name for f in fields(cls) if f.name not in optional], "plan")
        return cls(
            problem=str(data["problem"]), formulation=str(data["formulation"]),
            term_weights=tuple(float(w) for w in data["term_weights"]),
            term_dims=tuple(int(n) for n in data["term_dims"]),
            c_eff=float(data["c_eff"]), n_max=int(data["n_max"]), n_sub=int(data["n_sub"]),
            groups=tuple(Placement.from_dict(g) for g in data["groups"]),
            dependencies={int(k): tuple(int(j) for j in v) for k, v in data["dependencies"].items()},
            workers=int(data["workers"]), gpus=int(data["gpus"]),
            costs=tuple(SubmodelCost.from_dict(c) for c in data.get("costs", ())),
            blocks=tuple(ResidualBlock.from_dict(b) for b in data.get("blocks", ())),
            pieces=tuple(tuple((str(k), int(lo), int(hi)) for k, lo, hi in rank)
                         for rank in data.get("pieces", ())),
        )

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    # --- display ------------------------------------------------------------------------
    def describe(self, max_names: int = 6, max_submodels: int = 12) -> str:
        """A printable summary: Algorithm 1's quantities, the heaviest sub-models' estimates,
        then one row per group.

        Parameters
        ----------
        max_names : int
            Sub-model names listed per group before the rest is counted (``+N more``).
        max_submodels : int
            Sub-models listed with their estimates, heaviest first, before the rest is counted.
        """
        weights = ", ".join(f"{w:g}" for w in self.term_weights)
        dims = ", ".join(str(n) for n in self.term_dims)
        n_models = sum(len(g.submodels) for g in self.groups)
        n_gpu = sum(g.resource == "GPU" for g in self.groups)
        head = [
            f"Plan for {self.problem} ({self.formulation}): {_count(n_models, 'sub-model')} in "
            f"{_count(self.n_sub, 'group')} on {_count(self.workers, 'worker')} "
            f"({_count(self.gpus, 'GPU')}; {n_gpu} on GPU)",
            f"  term weights omega = [{weights}], term dims n = [{dims}]",
            f"  C_eff = sum omega_i n_i = {self.c_eff:g}",
            f"  N_max = {self.n_max}, N_sub = min(ceil(C_eff) + 1, N_max, sub-models) = {self.n_sub}",
        ]
        if self.costs:
            heaviest = sorted(self.costs, key=lambda c: -c.flops_per_step)
            rows = [("sub-model", "params", "points", "GFLOP/step", "memory MB", "LM Jacobian MB")]
            rows += [(c.name, str(c.n_params), str(c.points), f"{c.flops_per_step / 1e9:.4g}",
                      f"{c.memory_bytes / 1e6:.4g}", f"{c.jacobian_bytes / 1e6:.4g}")
                     for c in heaviest[:max_submodels]]
            head += _table(rows)
            if len(heaviest) > max_submodels:
                head.append(f"+{len(heaviest) - max_submodels} more sub-models")
        timed = any(g.step_s is not None for g in self.groups)
        rows = [("group", "sub-models", "resource", "GFLOP/step", "memory MB", "LM Jacobian MB")
                + (("s/step",) if timed else ()) + ("couples to",)]
        for g in self.groups:
            names = list(g.submodels[:max_names])
            if len(g.submodels) > max_names:
                names.append(f"+{len(g.submodels) - max_names} more")
            deps = ", ".join(str(j) for j in self.dependencies.get(g.index, ())) or "-"
            step = (("-" if g.step_s is None else f"{g.step_s:.4g}",) if timed else ())
            rows.append((str(g.index), ", ".join(names), g.resource, f"{g.flops_per_step / 1e9:.4g}",
                         f"{g.memory_bytes / 1e6:.4g}", f"{g.jacobian_bytes / 1e6:.4g}")
                        + step + (deps,))
        return "\n".join(head + _table(rows))


def _table(rows):
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def _count(n, noun):
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _require(data, keys, what):
    if not isinstance(data, dict):
        raise SpecError(f"a {what} must be read from a dict, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise SpecError(f"{what} dict misses {', '.join(missing)}")
