"""How operator training is split over the workers: instances, query points or both.

Seed 001 trains DeepONets three ways: branch-parallel (the instances sharded), trunk-parallel
(the query points sharded) and branch- and trunk-parallel (a grid of ranks). Every split gives
each rank the same number of rows (instance x point); they differ in what each rank repeats.
A DeepONet evaluates its branch once per instance and its trunk once per point, so a rank of
an ``I x P`` grid evaluates the branch on ``n / I`` instances and the trunk on ``q / P``
points, and holds their activations; the rows' products, residuals and (for
Levenberg-Marquardt) Jacobian rows are ``n q / (I P)`` whatever the split. :func:`choose_split`
models both per rank and step -- memory and multiply-adds -- and picks the cheapest split that
fits the workers' memory, saying why in words. Plain numbers in, plain data out: no cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from daskie.errors import SpecError, check_int

__all__ = ["OperatorSplit", "choose_split"]

#: Fraction of a worker's memory a rank's training may plan to use (the rest: the
#: interpreter, torch, the data set's reads, dask's own).
MEMORY_FRACTION = 0.5
#: Splits whose modelled cost is within this factor of the cheapest count as equal; the
#: branch split is then preferred (whole instances per rank: one slab of the data set each).
TIE = 1.02


@dataclass(frozen=True)
class OperatorSplit:
    """The planner's choice of split, with its model's figures.

    Attributes
    ----------
    split : str
        ``"branch"``, ``"trunk"`` or ``"branch-trunk"``.
    instances, points : int
        Shards of the instances and of the query points (``instances * points`` ranks).
    rank_bytes : float
        Modelled memory of one rank's training.
    rank_madds : float
        Modelled multiply-adds of one rank's step.
    reason : str
        Why, in words.
    candidates : tuple of dict
        Every grid considered: ``instances``, ``points``, ``rank_bytes``, ``rank_madds``,
        ``fits``.
    """

    split: str
    instances: int
    points: int
    rank_bytes: float
    rank_madds: float
    reason: str
    candidates: tuple = ()

    def to_dict(self) -> dict:
        """Plain data (JSON) for run stores and benchmark records."""
        return {"split": self.split, "instances": self.instances, "points": self.points,
                "rank_bytes": self.rank_bytes, "rank_madds": self.rank_madds,
                "reason": self.reason, "candidates": list(self.candidates)}


def _split_name(i: int, p: int) -> str:
    return "branch" if p == 1 else "trunk" if i == 1 else "branch-trunk"


def _size(v: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= scale:
            return f"{v / scale:.1f} {unit}"
    return f"{v:.0f} B"


def choose_split(n_instances: int, n_points: int, ranks: int, memory: float, *,
                 branch_layers, trunk_layers, n_params: int, jacobian: bool = False,
                 points_allowed: bool = True) -> OperatorSplit:
    """The split of ``n_instances x n_points`` training rows over ``ranks`` ranks.

    Parameters
    ----------
    n_instances, n_points : int
        Training instances and query points per instance (the data set's shape).
    ranks : int
        Ranks (one per worker).
    memory : float
        Bytes of memory of the smallest worker.
    branch_layers, trunk_layers : sequence of int
        Layer widths of the branch and the trunk, inputs first (``DeepONet._sizes()``).
    n_params : int
        Parameters of the network (all-reduced every step, whatever the split).
    jacobian : bool
        Whether each rank forms its rows' Jacobian (Levenberg-Marquardt: ``rows x n_params``).
    points_allowed : bool
        False where the training needs whole query grids per rank (a least-squares head).

    Returns
    -------
    OperatorSplit
        The cheapest grid ``(instances, points)`` whose rank fits ``MEMORY_FRACTION`` of
        ``memory`` (the branch split among near-ties), or the smallest in memory if none
        fits (said in its reason).
    """
    for name, v in (("n_instances", n_instances), ("n_points", n_points), ("ranks", ranks),
                    ("n_params", n_params)):
        check_int(name, v)
    if not (isinstance(memory, (int, float)) and memory > 0):
        raise SpecError(f"memory must be a positive number of bytes, got {memory!r}")
    b_layers, t_layers = [int(v) for v in branch_layers], [int(v) for v in trunk_layers]
    b_madds = sum(a * b for a, b in zip(b_layers[:-1], b_layers[1:]))
    t_madds = sum(a * b for a, b in zip(t_layers[:-1], t_layers[1:]))
    width = b_layers[-1]
    budget = MEMORY_FRACTION * float(memory)
    rows_total = n_instances * n_points
    candidates = []
    for i in range(1, ranks + 1):
        if ranks % i:
            continue
        p = ranks // i
        if i > n_instances or p > n_points or (p > 1 and not points_allowed):
            continue
        n_r, q_r = -(-n_instances // i), -(-n_points // p)
        rows = n_r * q_r
        # forward and backward: about 3x the forward's multiply-adds; LM: J^T J of the rows
        madds = 3.0 * (n_r * b_madds + q_r * t_madds + rows * width)
        if jacobian:
            madds += rows * n_params * (n_params + 3 * width)
        # data (targets, branch inputs), activations kept for the backward pass, the rows'
        # values, residuals and gradients, the Jacobian rows; float64
        floats = rows * 4 + n_r * b_layers[0] + n_r * sum(b_layers[1:]) * 2 \
            + q_r * sum(t_layers) * 2 + 4 * n_params
        if jacobian:
            floats += rows * n_params + n_params ** 2
        candidates.append({"instances": i, "points": p, "rank_bytes": 8.0 * floats,
                           "rank_madds": madds, "fits": 8.0 * floats <= budget})
    if not candidates:
        raise SpecError(f"no grid of {ranks} ranks fits {n_instances} instances x {n_points} "
                        "points (use fewer ranks)")
    fitting = [c for c in candidates if c["fits"]]
    if fitting:
        best = min(c["rank_madds"] for c in fitting)
        near = [c for c in fitting if c["rank_madds"] <= TIE * best]
        pick = max(near, key=lambda c: (c["instances"], -c["points"]))
    else:
        pick = min(candidates, key=lambda c: c["rank_bytes"])
    i, p = pick["instances"], pick["points"]
    name = _split_name(i, p)
    others = "; ".join(f"{_split_name(c['instances'], c['points'])} {c['instances']}x"
                       f"{c['points']}: {c['rank_madds'] / 1e6:.3g} M, "
                       f"{_size(c['rank_bytes'])}" for c in candidates if c is not pick)
    why = (f"{name} ({i} instance x {p} point shards of {n_instances} x {n_points} rows): per "
           f"rank and step {pick['rank_madds'] / 1e6:.3g} M multiply-adds and "
           f"{_size(pick['rank_bytes'])} of the {_size(budget)} planned per worker; a rank "
           f"repeats the branch ({b_madds} per instance) on {-(-n_instances // i)} instances "
           f"and the trunk ({t_madds} per point) on {-(-n_points // p)} points")
    if not fitting:
        why += "; NO split fits the workers' memory: this is the smallest (use more workers)"
    elif others:
        why += f" (others: {others})"
    rows_note = f"; {rows_total // ranks} rows per rank whatever the split"
    return OperatorSplit(name, i, p, pick["rank_bytes"], pick["rank_madds"], why + rows_note,
                         tuple(candidates))
