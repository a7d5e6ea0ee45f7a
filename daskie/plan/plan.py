"""The partition plan: plain data that says which sub-models train together, and where.

A :class:`Plan` is what the planner (:func:`daskie.plan.make_plan`) hands to the graph
builder, the store and the CLI. It holds only numbers, strings, tuples and a dict, so it is
written to JSON and read back unchanged, compared with ``==``, and printed with
:meth:`Plan.describe`; nothing in it needs a cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cached_property

from daskie.errors import SpecError

__all__ = ["Placement", "Plan"]

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
        Estimated multiply-adds of one training step of the group: for every evaluation of
        its sub-models, ``points * net.flops(in_dim) * 3`` (forward plus backward is about
        three forward passes), doubled for a derivative evaluation.
    memory_bytes : float
        Estimated training memory of the group: per sub-model ``n_params * 8 * 4`` (float64
        parameters, gradients and two Adam moments) plus ``points * sum(layer widths) * 8 * 3``
        for the stored activations.
    """

    index: int
    submodels: tuple[str, ...]
    resource: str
    flops_per_step: float
    memory_bytes: float

    def to_dict(self) -> dict:
        """JSON-compatible dict (the sub-models as a list)."""
        return {"index": self.index, "submodels": list(self.submodels), "resource": self.resource,
                "flops_per_step": self.flops_per_step, "memory_bytes": self.memory_bytes}

    @classmethod
    def from_dict(cls, data: dict) -> "Placement":
        """Inverse of :meth:`to_dict`."""
        _require(data, [f.name for f in fields(cls)], "placement")
        if data["resource"] not in RESOURCES:
            raise SpecError(f"placement resource must be one of {RESOURCES}, got {data['resource']!r}")
        return cls(index=int(data["index"]), submodels=tuple(str(s) for s in data["submodels"]),
                   resource=str(data["resource"]), flops_per_step=float(data["flops_per_step"]),
                   memory_bytes=float(data["memory_bytes"]))


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
        }

    def to_json(self) -> str:
        """The plan as a JSON string (deterministic: the same plan gives the same text)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        """Inverse of :meth:`to_dict`: ``Plan.from_dict(p.to_dict()) == p``."""
        _require(data, [f.name for f in fields(cls)], "plan")
        return cls(
            problem=str(data["problem"]), formulation=str(data["formulation"]),
            term_weights=tuple(float(w) for w in data["term_weights"]),
            term_dims=tuple(int(n) for n in data["term_dims"]),
            c_eff=float(data["c_eff"]), n_max=int(data["n_max"]), n_sub=int(data["n_sub"]),
            groups=tuple(Placement.from_dict(g) for g in data["groups"]),
            dependencies={int(k): tuple(int(j) for j in v) for k, v in data["dependencies"].items()},
            workers=int(data["workers"]), gpus=int(data["gpus"]),
        )

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    # --- display ------------------------------------------------------------------------
    def describe(self, max_names: int = 6) -> str:
        """A printable summary: Algorithm 1's quantities, then one row per group.

        Parameters
        ----------
        max_names : int
            Sub-model names listed per group before the rest is counted (``+N more``).
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
        rows = [("group", "sub-models", "resource", "GFLOP/step", "memory MB", "couples to")]
        for g in self.groups:
            names = list(g.submodels[:max_names])
            if len(g.submodels) > max_names:
                names.append(f"+{len(g.submodels) - max_names} more")
            deps = ", ".join(str(j) for j in self.dependencies.get(g.index, ())) or "-"
            rows.append((str(g.index), ", ".join(names), g.resource, f"{g.flops_per_step / 1e9:.4g}",
                         f"{g.memory_bytes / 1e6:.4g}", deps))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        table = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(head + table)


def _count(n, noun):
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _require(data, keys, what):
    if not isinstance(data, dict):
        raise SpecError(f"a {what} must be read from a dict, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise SpecError(f"{what} dict misses {', '.join(missing)}")
