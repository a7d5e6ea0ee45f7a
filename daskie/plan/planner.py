"""The planner: seed 000's Algorithm 1 (adaptive model partitioning) as pure data code.

Algorithm 1 names its steps but leaves the weight function ``f(linearity, kappa_i, n_i)``,
the memory model and ``ClusterTerms`` unspecified. daskie reads them as follows.

1. **Term weights.** ``omega_i = (1 + 0.5 [M_i nonlinear]) * kappa_i`` with the kernel
   complexity ``kappa_i = 1`` for a smooth Fredholm kernel, ``1.25`` for Volterra or mixed
   limits (the integration box depends on the point) and ``1.5`` for a weak singularity
   (``term.singularity > 0``, which takes precedence). ``n_i`` is the problem's dimension d.
2. **Effective complexity.** ``C_eff = sum_i omega_i n_i``.
3. **Resource constraint.** ``N_max = min(workers, floor(workers * memory_per_worker /
   m_max))`` with ``m_max`` the memory estimate of the largest sub-model; an explicit
   ``n_max`` lowers it further.
4. **Adaptive balancing.** ``N_sub = min(ceil(C_eff) + 1, N_max, number of sub-models)``,
   at least 1.
5. **ClusterTerms.** The sub-models (the PDE terms of Eq 4.4 each network is trained on) are
   split into ``N_sub`` groups by longest-processing-time greedy on ``flops_per_step``:
   heaviest first (ties by name), each into the currently lightest group (ties by the lower
   group). A second, coupling-aware pass runs the same greedy but may put a sub-model into a
   group it shares residual blocks with instead, when that group's new load stays at or below
   the maximum load the lightest group would give; it is kept only if its final maximum load
   is no larger than plain LPT's and it leaves no group empty, so coupling never costs balance.
6. **Hardware mapping.** Groups are numbered heaviest first; with ``gpus = G > 0`` the first
   ``G`` get the resource ``"GPU"``, the rest ``"CPU"`` (the paper gives GPUs to mu and the
   high-dimensional F_{i,m}, which are the heaviest networks).
7. **Dependencies.** Two groups depend on each other when some residual block
   (``Discretization.couplings``) involves sub-models of both.

The cost model (:class:`~daskie.plan.plan.SubmodelCost`, one per sub-model in
:attr:`Plan.costs`): a training step costs ``points * net.flops(in_dim) * 3`` per evaluation
(forward plus backward), doubled for a derivative evaluation; memory is ``n_params * 8 * 4``
(parameters, gradients, two Adam moments in float64) plus ``points * sum(layer widths) * 8 * 3``
(stored activations) per sub-model. A Levenberg-Marquardt step also holds the float64
Jacobian, ``N x P x 8`` bytes with ``N`` the rows of the residual blocks that involve the
sub-model (for a group: of those that involve any of its sub-models) and ``P`` its
parameters; it is reported beside the memory, not added to it, since first-order optimizers
never form it. Block rows are read from the residual map itself (applied to zeros).

The groups can be formed again from measured step times instead of FLOPs with
:func:`rebalance` (the same ClusterTerms rule), for example between training windows.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import replace
from numbers import Integral, Real

from daskie.errors import SpecError, check_int
from daskie.formulations.base import Discretization
from daskie.plan.cost import evaluation_cost
from daskie.plan.plan import Placement, Plan, ResidualBlock, SubmodelCost

__all__ = ["make_plan", "rebalance", "term_weight"]

#: Kernel complexities kappa_i.
KAPPA_FREDHOLM, KAPPA_VOLTERRA, KAPPA_SINGULAR = 1.0, 1.25, 1.5
#: Extra weight of a nonlinear M_i.
NONLINEAR_EXTRA = 0.5
#: Forward plus backward pass relative to one forward pass (flops_per_step counts both).
STEP_FACTOR = 3.0
_BYTES = 8  # float64


def term_weight(term) -> float:
    """The weight omega_i of one :class:`~daskie.problems.spec.IntegralTerm`.

    ``(1 + 0.5 [nonlinear]) * kappa`` with kappa 1 (smooth Fredholm), 1.25 (Volterra or mixed
    limits) or 1.5 (weak singularity).
    """
    if term.singularity > 0:
        kappa = KAPPA_SINGULAR
    elif not term.is_fredholm:
        kappa = KAPPA_VOLTERRA
    else:
        kappa = KAPPA_FREDHOLM
    return (1.0 + (0.0 if term.nonlinearity.linear else NONLINEAR_EXTRA)) * kappa


def make_plan(disc: Discretization, workers: int = 2, gpus: int = 0,
              memory_per_worker: float = 8e9, n_max: int | None = None) -> Plan:
    """Partition a discretization's sub-models for a cluster (seed 000, Algorithm 1).

    The cluster is described, not contacted: a plan for 64 workers and 8 GPUs is made on a
    laptop. See the module docstring for the rules.

    Parameters
    ----------
    disc : Discretization
        The formulation applied to a problem (its sub-models, evaluations and couplings).
    workers : int
        Number of workers (compute units U), at least 1.
    gpus : int
        Number of GPUs among them, ``0 <= gpus <= workers``.
    memory_per_worker : float
        Bytes of memory per worker; the total memory M is ``workers * memory_per_worker``.
    n_max : int, optional
        Upper bound on the number of groups in addition to Algorithm 1's N_max.

    Returns
    -------
    Plan
        With per sub-model estimates (:attr:`Plan.costs`) and the residual blocks
        (:attr:`Plan.blocks`) beside the groups.

    Raises
    ------
    SpecError
        For an argument out of range; the message names it.
    """
    _check_args(disc, workers, gpus, memory_per_worker, n_max)
    problem = disc.problem
    weights = tuple(term_weight(t) for t in problem.terms)
    dims = tuple(int(problem.dim) for _ in problem.terms)
    c_eff = float(sum(w * n for w, n in zip(weights, dims)))

    costs, blocks = _estimates(disc)
    total_memory = workers * float(memory_per_worker)
    largest = max(c.memory_bytes for c in costs)
    plan_max = max(1, min(int(workers), math.floor(total_memory / largest)))
    if n_max is not None:
        plan_max = min(plan_max, int(n_max))
    # Round away float noise before ceil so that C_eff = 3.0000000000000004 counts as 3.
    n_sub = max(1, min(math.ceil(round(c_eff, 9)) + 1, plan_max, len(costs)))

    base = Plan(problem=str(problem.name), formulation=str(disc.info.get("formulation", "custom")),
                term_weights=weights, term_dims=dims, c_eff=c_eff, n_max=int(plan_max),
                n_sub=int(n_sub), groups=(), dependencies={}, workers=int(workers), gpus=int(gpus),
                costs=costs, blocks=blocks)
    return _pack(base, {c.name: c.flops_per_step for c in costs}, measured=False)


def rebalance(plan: Plan, step_times: Mapping) -> Plan:
    """Re-pack a plan's groups by measured step times instead of the static FLOP estimates.

    The plan's ``N_sub`` groups are formed again by the same ClusterTerms rule as
    :func:`make_plan` (longest-processing-time greedy with the coupling-aware pass), with each
    sub-model's cost its measured seconds per step. Groups are numbered heaviest first by
    those times, the first ``plan.gpus`` get ``"GPU"``, dependencies follow the residual
    blocks, and each :class:`Placement` carries ``step_s``, the sum of its sub-models' times.

    A strategy may call it between windows: from the records of the last window(s) it
    measures each group's ``window_s / steps`` (or each sub-model's), calls
    ``rebalance(plan, times)`` and builds the following windows from the new groups. The
    parameters carry over unchanged, since they are keyed by sub-model name, not by group.

    Parameters
    ----------
    plan : Plan
        A plan from :func:`make_plan` (it must carry ``costs`` and ``blocks``).
    step_times : dict
        Measured seconds per training step (> 0), keyed by group index (an ``int`` of
        ``plan.groups``) or by sub-model name (a ``str``). A group's time is split among
        its sub-models in proportion to their static ``flops_per_step`` (equally when those
        are all 0); a sub-model's own entry takes precedence. Sub-models measured neither
        way are costed at their FLOPs times the measured seconds per FLOP (the mean measured
        time when the measured sub-models have no FLOPs).

    Returns
    -------
    Plan
        A new plan with the same sub-models, ``N_sub``, costs and blocks; only the groups,
        their order, tags and dependencies may differ. Packing assumes that sub-models
        trained together take the sum of their times.

    Raises
    ------
    SpecError
        When ``plan`` is not a Plan or lacks costs/blocks, or ``step_times`` is empty, names
        an unknown group or sub-model, or holds a time that is not a finite number > 0.
    """
    if not isinstance(plan, Plan):
        raise SpecError(f"plan must be a daskie Plan (make_plan(...)), got {type(plan).__name__}")
    if not plan.costs or not plan.blocks:
        raise SpecError("plan carries no per sub-model costs or residual blocks (it was written "
                        "by an older daskie); make it again with make_plan before rebalancing")
    if not isinstance(step_times, Mapping) or not step_times:
        raise SpecError("step_times must be a non-empty dict {group index or sub-model name: "
                        f"seconds per step}}, got {step_times!r}")
    flops = {c.name: c.flops_per_step for c in plan.costs}
    by_group, by_name = {}, {}
    for key, value in step_times.items():
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
                or value <= 0:
            raise SpecError(f"step_times[{key!r}] must be a finite number of seconds > 0, "
                            f"got {value!r}")
        if isinstance(key, str):
            if key not in flops:
                names = list(flops)
                more = f" and {len(names) - 8} more" if len(names) > 8 else ""
                raise SpecError(f"step_times names sub-model {key!r}, which the plan does not "
                                f"have; it has {', '.join(names[:8])}{more}")
            by_name[key] = float(value)
        elif isinstance(key, Integral) and not isinstance(key, bool) \
                and 0 <= key < len(plan.groups):
            by_group[int(key)] = float(value)
        else:
            raise SpecError(f"step_times key {key!r} is neither a group index "
                            f"0..{len(plan.groups) - 1} nor a sub-model name")
    seconds = {}
    for g, t in by_group.items():
        members = plan.groups[g].submodels
        total = sum(flops[n] for n in members)
        for n in members:
            seconds[n] = t * (flops[n] / total if total > 0 else 1.0 / len(members))
    seconds.update(by_name)
    measured_flops = sum(flops[n] for n in seconds)
    rate = sum(seconds.values()) / measured_flops if measured_flops > 0 else None
    mean = sum(seconds.values()) / len(seconds)
    for n in flops:
        if n not in seconds:
            seconds[n] = flops[n] * rate if rate is not None else mean
    return _pack(plan, seconds, measured=True)


def _estimates(disc):
    """Per sub-model estimates (the cost model of the module docstring) and the blocks."""
    names = list(disc.submodels)
    flops = dict.fromkeys(names, 0.0)
    points = dict.fromkeys(names, 0)
    for key, ev in disc.evaluations.items():  # the one cost model (daskie.plan.cost)
        flops[ev.submodel] += STEP_FACTOR * evaluation_cost(disc, key)
        points[ev.submodel] += ev.size
    rows = _block_rows(disc)
    couplings = disc.couplings
    blocks = tuple(ResidualBlock(b, tuple(subs), rows[b]) for b, subs in couplings.items())
    jac_rows = dict.fromkeys(names, 0)
    for blk in blocks:
        for name in blk.submodels:
            jac_rows[name] += blk.rows
    costs = []
    for name in names:
        sub = disc.submodels[name]
        costs.append(SubmodelCost(
            name=name, n_params=int(sub.n_params), points=int(points[name]),
            flops_per_step=float(flops[name]),
            memory_bytes=float(sub.n_params * _BYTES * 4
                               + points[name] * sum(sub.net.sizes(sub.in_dim)) * _BYTES * 3),
            jacobian_rows=int(jac_rows[name]),
            jacobian_bytes=float(jac_rows[name] * sub.n_params * _BYTES)))
    return tuple(costs), blocks


def _block_rows(disc) -> dict[str, int]:
    """Residual rows of each block: the residual map applied to zero values gives the shapes
    (cheap: one pass, no network). A block the map does not return (a hand-made
    discretization) counts the points of its largest evaluation."""
    import torch

    zeros = {k: torch.zeros(ev.size, dtype=torch.float64) for k, ev in disc.evaluations.items()}
    with torch.no_grad():
        out = disc.residual_blocks(zeros)
    out = out if isinstance(out, dict) else {}
    return {b: (int(out[b].numel()) if b in out
                else max((disc.evaluations[e].size for e in evs), default=0))
            for b, evs in disc.block_evaluations.items()}


def _pack(plan: Plan, cost: dict, measured: bool) -> Plan:
    """``plan`` with its groups formed from ``cost`` (per sub-model): ClusterTerms, heaviest
    first numbering, GPU tags, per-group estimates and dependencies."""
    names = [c.name for c in plan.costs]
    est = {c.name: c for c in plan.costs}
    n_sub = plan.n_sub
    blocks = {b.name: b.submodels for b in plan.blocks}
    rows = {b.name: b.rows for b in plan.blocks}
    assignment = _cluster_terms(names, cost, blocks, rows, n_sub)

    # Number groups heaviest first (ties: the group whose first sub-model comes first).
    order = {name: k for k, name in enumerate(names)}
    members = [[] for _ in range(n_sub)]
    for name in names:
        members[assignment[name]].append(name)
    load = [sum(cost[n] for n in m) for m in members]
    ranked = sorted(range(n_sub), key=lambda g: (-load[g], order[members[g][0]]))
    renumber = {old: new for new, old in enumerate(ranked)}
    group_of = {name: renumber[assignment[name]] for name in names}
    deps = {g: set() for g in range(n_sub)}
    jac_rows = [0] * n_sub  # rows of the blocks that involve each group (new numbering)
    for b in plan.blocks:
        touched = {group_of[s] for s in b.submodels}
        for g in touched:
            deps[g] |= touched - {g}
            jac_rows[g] += b.rows

    groups = tuple(
        Placement(index=new, submodels=tuple(members[old]),
                  resource="GPU" if new < plan.gpus else "CPU",
                  flops_per_step=float(sum(est[n].flops_per_step for n in members[old])),
                  memory_bytes=float(sum(est[n].memory_bytes for n in members[old])),
                  jacobian_bytes=float(jac_rows[new] * sum(est[n].n_params for n in members[old])
                                       * _BYTES),
                  step_s=float(load[old]) if measured else None)
        for new, old in enumerate(ranked))
    return replace(plan, groups=groups, dependencies={g: tuple(sorted(d)) for g, d in deps.items()})


def _check_args(disc, workers, gpus, memory_per_worker, n_max):
    if not isinstance(disc, Discretization):
        raise SpecError(f"disc must be a Discretization (Formulation.discretize(problem)), "
                        f"got {type(disc).__name__}")
    if not disc.submodels:
        raise SpecError("disc has no sub-models to plan")
    check_int("workers", workers)
    check_int("gpus", gpus, 0)
    if gpus > workers:
        raise SpecError(f"gpus = {gpus} exceeds workers = {workers}: every GPU belongs to a worker")
    if (isinstance(memory_per_worker, bool) or not isinstance(memory_per_worker, Real)
            or not math.isfinite(memory_per_worker) or memory_per_worker <= 0):
        raise SpecError("memory_per_worker must be a finite number of bytes > 0, "
                        f"got {memory_per_worker!r}")
    check_int("n_max", n_max, allow_none=True)


def _cluster_terms(names, cost, blocks, rows, k):
    """ClusterTerms: ``{sub-model: group}`` with ``k`` non-empty groups (0-based, unordered).

    Plain LPT, and LPT with a preference for coupled groups; the coupled one is returned when
    it is no worse in maximum load.
    """
    plain = _lpt(names, cost, blocks, rows, k, coupled=False)
    if k == 1 or not blocks:
        return plain
    coupled = _lpt(names, cost, blocks, rows, k, coupled=True)
    if coupled is not None and _max_load(coupled, cost, k) <= _max_load(plain, cost, k):
        return coupled
    return plain


def _max_load(assignment, cost, k):
    load = [0.0] * k
    for name, g in assignment.items():
        load[g] += cost[name]
    return max(load)


def _lpt(names, cost, blocks, rows, k, coupled):
    """Longest-processing-time greedy; ``coupled`` lets a sub-model join the group it shares
    the most residual rows with when that does not raise the running maximum load beyond what
    the lightest group would give. Runs in O(n log k + sum of block sizes)."""
    items = sorted(names, key=lambda n: (-cost[n], n))
    load = [0.0] * k
    heap = [(0.0, g) for g in range(k)]  # (load, group); stale entries are skipped
    assignment = {}
    blocks_of = {}
    if coupled:
        for b, subs in blocks.items():
            for s in subs:
                blocks_of.setdefault(s, []).append(b)
    in_block = {b: {} for b in blocks} if coupled else {}  # block -> {group: members placed}
    size = [0] * k
    empty = k
    running_max = 0.0
    for pos, name in enumerate(items):
        while heap[0][0] != load[heap[0][1]]:
            heapq.heappop(heap)
        lightest = heap[0][1]
        choice = lightest
        if coupled:
            bound = max(running_max, load[lightest] + cost[name])
            spare = len(items) - pos - 1 >= empty  # others can still fill every empty group
            ties = {}
            for b in blocks_of.get(name, ()):
                for g in in_block[b]:
                    ties[g] = ties.get(g, 0) + rows[b]
            best = None
            for g, strength in ties.items():
                if g == lightest or load[g] + cost[name] > bound or not spare:
                    continue
                key = (-strength, load[g], g)
                if best is None or key < best:
                    best = key
            if best is not None:
                best_tie = ties.get(lightest, 0)
                if -best[0] > best_tie:
                    choice = best[2]
        if size[choice] == 0:
            empty -= 1
        size[choice] += 1
        assignment[name] = choice
        load[choice] += cost[name]
        running_max = max(running_max, load[choice])
        heapq.heappush(heap, (load[choice], choice))
        if coupled:
            for b in blocks_of.get(name, ()):
                in_block[b][choice] = in_block[b].get(choice, 0) + 1
    if empty:
        return None
    return assignment
