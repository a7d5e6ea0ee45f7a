"""One cost model of sub-model evaluations, for the planner and for row balancing.

:func:`evaluation_cost` estimates what one evaluation of a sub-model costs (forward and
backward, in multiply-adds of the network's forward pass at one point); the planner's
per-sub-model ``flops_per_step`` (:mod:`daskie.plan.planner`) is the sum of these over a
sub-model's evaluations, and :func:`balanced_pieces` deals evaluation rows to the ranks of a
CEPTF group by the same numbers, once, on the client (the ranks read the pieces from the
Plan, :meth:`daskie.plan.Plan.with_pieces`).
"""

from __future__ import annotations

__all__ = ["DERIVATIVE_ROWS", "CALL_ROWS", "evaluation_cost", "balanced_pieces"]

#: An input derivative (closed-form tangent) costs this many
#: plain rows, and every call costs this many rows on top (dispatch of its small ops).
#: Fitted to float64 tanh MLPs of width 40 on one CPU thread (``mu@x`` 1024 rows 2.4 ms,
#: ``mu@F0.1`` 2048 rows 4.2 ms, ``dF0.1`` 2048 rows 8.9 ms).
DERIVATIVE_ROWS = 2.2
CALL_ROWS = 200


def evaluation_cost(disc, key, rows=None) -> float:
    """Estimated cost of ``rows`` rows (default: all) of evaluation ``key`` of ``disc``."""
    ev = disc.evaluations[key]
    sub = disc.submodels[ev.submodel]
    flops = sub.net.flops(sub.in_dim) if hasattr(sub.net, "flops") else sub.n_params
    rows = ev.size if rows is None else rows
    return float(flops) * (rows * (DERIVATIVE_ROWS if ev.derivative is not None else 1.0)
                           + CALL_ROWS)


def balanced_pieces(disc, owners, n_ranks: int, *, min_rows: int = 32):
    """Row ranges of every evaluation for ``n_ranks`` ranks, with equal estimated work.

    The evaluations are taken sub-model by sub-model in the order of ``owners`` (the Plan's
    groups: sub-models that belong together stay on one rank) and dealt to rank 0, 1, ...
    in turn; the evaluation that crosses a rank's share (:func:`evaluation_cost`) is cut
    into two row ranges, so the heaviest sub-model is split over two ranks instead of
    making its rank the slowest. Pieces of fewer than ``min_rows`` rows are not cut off.

    Returns
    -------
    list of list of (key, lo, hi)
        One list per rank, for the ``pieces`` of
        :class:`~daskie.train.collective.PartitionedObjective`.
    """
    ev = disc.evaluations
    keys = [k for own in owners for name in own for k in ev if ev[k].submodel == name]
    total = sum(evaluation_cost(disc, k) for k in keys)
    # each of the n - 1 cuts makes one more call
    calls = [evaluation_cost(disc, k, 0) for k in keys]
    target = (total + (n_ranks - 1) * sum(calls) / max(len(calls), 1)) / n_ranks
    pieces: list = [[] for _ in range(n_ranks)]
    r, load = 0, 0.0
    for k in keys:
        n, lo = ev[k].size, 0
        per_row = evaluation_cost(disc, k, 1) - evaluation_cost(disc, k, 0)
        call = evaluation_cost(disc, k, 0)
        while lo < n:
            rest = (n - lo) * per_row + call
            if r == n_ranks - 1 or load + rest <= target * 1.01:
                pieces[r].append((k, lo, n))
                load += rest
                break
            take = int((target - load - call) // per_row)
            if take >= min_rows and n - lo - take >= min_rows:
                pieces[r].append((k, lo, lo + take))
                lo += take
            elif take > 0 and n - lo - take < min_rows:  # nearly all fits: keep it whole
                pieces[r].append((k, lo, n))
                load += rest
                break
            r, load = r + 1, 0.0
    return pieces
