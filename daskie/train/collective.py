"""Objectives whose work is split over the ranks of a collective group.

Both present the whole problem to an unmodified optimizer (same ``layout``, same
``loss``/``value_and_grad``/``normal_equations`` as the one-process
:class:`~daskie.train.objective.Objective`), so every rank runs the same optimizer on the same
numbers and takes the same steps; only the work behind each call is split.

* :class:`ShardedObjective` — data parallel (rows): each rank holds data shard k of n of
  every residual block (``formulation.discretize(problem, shard=(k, n))``); losses, gradients
  and Gauss-Newton normal equations ``J_k^T J_k``, ``J_k^T r_k`` are summed with one
  all-reduce (fused into buckets).
* :class:`PartitionedObjective` — model parallel (columns, CEPTF): each rank evaluates only
  its own sub-models; every loss evaluation all-gathers the evaluation values (small
  vectors), every rank computes the residual map and the loss, and the gradient of the loss
  reaches each rank's own parameters through its own values; one all-reduce of the (disjoint)
  gradient slices gives every rank the exact joint gradient. Its normal equations gather
  each rank's Jacobian columns; the matrix-free product is the local objective's (exact, not
  split).

``group`` is a :class:`daskie.collectives.Group` (or anything with ``allreduce``,
``allreduce_many`` and ``allgather``).
"""

from __future__ import annotations

import torch

__all__ = ["ShardedObjective", "PartitionedObjective"]

class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum of a scalar over the ranks. Backward: the gradient passes through
    (every rank's local loss enters the total with weight one)."""

    @staticmethod
    def forward(ctx, local, group):
        out = local.detach().reshape(1).clone()
        group.allreduce(out)
        return out.reshape(())

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _SumGradients(torch.autograd.Function):
    """Forward: identity on the parameters. Backward: all-reduce their gradient, so that each
    rank's partial gradient becomes the total one."""

    @staticmethod
    def forward(ctx, theta, group):
        ctx.group = group
        return theta.view_as(theta)

    @staticmethod
    def backward(ctx, grad):
        g = grad.contiguous().clone()
        ctx.group.allreduce(g, key="grad")
        return g, None


class _Delegate:
    """Attributes the optimizers and the loop read (layout, init_params, mse, ...) come from
    the local objective."""

    def __init__(self, local, group):
        self.local, self.group = local, group

    def __getattr__(self, name):
        return getattr(self.__dict__["local"], name)


class ShardedObjective(_Delegate):
    """Data-parallel objective: the sum over the ranks of their shards' objectives.

    Parameters
    ----------
    local : Objective
        This rank's shard (losses of the shards sum to the full loss).
    group : Group
        The ranks holding the other shards.
    """

    def loss(self, theta):
        """Total loss (differentiable: its gradient is all-reduced)."""
        th = _SumGradients.apply(theta, self.group) if theta.requires_grad else theta
        return _SumOverRanks.apply(self.local.loss(th), self.group)

    def value_and_grad(self, theta):
        """Total ``(loss, gradient)`` with one all-reduce."""
        from daskie.train.objective import loss_and_grad

        loss, g = loss_and_grad(self.local.loss, theta)
        buf = torch.cat([loss.reshape(1), g])
        self.group.allreduce(buf, key="grad")
        return float(buf[0]), buf[1:]

    def normal_equations(self, theta):
        """Summed ``(loss, J^T J, J^T r)``: the rank's rows, then one fused all-reduce."""
        loss, A, g = self.local.normal_equations(theta)
        head = torch.cat([torch.tensor([loss], dtype=g.dtype, device=g.device), g])
        self.group.allreduce(head, key="normal.g")
        self.group.allreduce(A, key="normal.A")  # in place: P x P is too big to copy
        return float(head[0]), A, head[1:]

    def head_sums(self, theta):
        """The least-squares head's row sums over every rank's shard, one all-reduce."""
        sums = self.local.head_sums(theta)  # fresh tensors: summed in place
        self.group.allreduce_many(list(sums), key="head", compress=None)  # Gram: full precision
        return sums

    def gauss_newton_product(self, theta, v):
        """Summed ``J_k^T J_k v`` (matrix-free LM)."""
        out = self.local.gauss_newton_product(theta, v).contiguous()
        self.group.allreduce(out, key="gn")
        return out

    def jacobian_bytes(self) -> int:
        """Bytes of this rank's Jacobian rows (what one worker must hold)."""
        return self.local.jacobian_bytes()


class PartitionedObjective(_Delegate):
    """Model-parallel objective: each rank evaluates its own pieces of the evaluations.

    By default rank r evaluates the sub-models in ``owners[r]`` (every row of their
    evaluations); ``pieces`` instead gives each rank explicit row ranges of evaluations (see
    :func:`balanced_pieces`: equal estimated work per rank, the heaviest sub-model's rows
    split over two ranks).

    Parameters
    ----------
    local : Objective
        The full objective (every rank discretizes the whole problem; it evaluates only its
        own pieces).
    group : Group
        One rank per entry of ``owners`` (times ``shards``), or per entry of ``pieces``.
    owners : sequence of tuple of str
        The sub-models of each group of ranks; together, every sub-model exactly once.
    shards : int
        Ranks per group (data-parallel groups): rank ``r`` belongs to group ``r // shards``
        and evaluates rows ``s, s + shards, ...`` (``s = r % shards``) of its group's
        evaluations; the group size must be ``len(owners) * shards``. The column-split
        normal equations need ``shards == 1``.
    rows : ShardedObjective, optional
        When given, the Gauss-Newton normal equations come from it (a row split over the
        same ranks, all sub-models per rank) instead of gathering Jacobian columns: the row
        split moves only ``J^T J`` (P x P) where the column split moves ``J`` (N x P).
    pieces : sequence of sequence of (key, lo, hi), optional
        Rows ``lo:hi`` of evaluation ``key`` for each rank (one entry per rank); together
        they must cover every row of every evaluation exactly once. Overrides the
        owners-based assignment (``owners`` still orders the sub-models); the column-split
        normal equations are then unavailable.
    """

    def __init__(self, local, group, owners, shards: int = 1, rows=None, pieces=None,
                 local_grads: bool = False):
        super().__init__(local, group)
        self.rows = rows
        if local_grads and (pieces is not None or shards != 1):
            raise ValueError("local_grads needs whole sub-models per rank (no pieces, shards=1)")
        self.local_grads = bool(local_grads)
        names = [n for own in owners for n in own]
        if sorted(names) != sorted(local.layout.names):
            raise ValueError(f"owners {owners} must cover the sub-models {local.layout.names} "
                             "exactly once")
        from daskie.formulations.base import Evaluation
        from daskie.train.objective import Objective

        ev = local.disc.evaluations
        self.owners = tuple(tuple(o) for o in owners)
        self.shards = int(shards)
        if pieces is None:
            if len(owners) * shards != group.size:
                raise ValueError(f"{len(owners)} groups x {shards} shards need "
                                 f"{len(owners) * shards} ranks, the group has {group.size}")
            self.mine = self.owners[group.rank // self.shards]
            self.pieces = [tuple((k, slice(r % shards, None, shards)) for k in local.eval_keys
                                 if ev[k].submodel in self.owners[r // shards])
                           for r in range(group.size)]
        else:
            if len(pieces) != group.size:
                raise ValueError(f"pieces name {len(pieces)} ranks, the group has {group.size}")
            self.mine = None  # no column ownership
            self.pieces = [tuple((k, slice(int(lo), int(hi))) for k, lo, hi in piece)
                           for piece in pieces]
        # each evaluation's rows, in the order the pieces deliver them (rank, then piece)
        delivered: dict = {k: [] for k in local.eval_keys}
        self._counts = []  # rows of each piece of each rank
        for piece in self.pieces:
            self._counts.append([])
            for k, sl in piece:
                if k not in delivered:
                    raise ValueError(f"pieces name an unknown evaluation {k!r}")
                delivered[k].append(torch.arange(ev[k].size, device="cpu")[sl])  # bookkeeping
                self._counts[-1].append(len(delivered[k][-1]))
        self._orders = {}
        for k, parts in delivered.items():
            got = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device="cpu")
            if not torch.equal(torch.sort(got).values, torch.arange(ev[k].size, device="cpu")):
                raise ValueError(f"the pieces must cover each row of evaluation {k!r} exactly "
                                 "once")
            if len(parts) > 1:  # reorder the delivered rows back (differentiable gather)
                self._orders[k] = torch.argsort(got).to(local.device)
        self._evals = [Evaluation(ev[k].submodel, ev[k].points[sl].contiguous(), ev[k].derivative)
                       for k, sl in self.pieces[group.rank]]
        self._sizes = [sum(counts) for counts in self._counts]
        self._busy = bool(self._evals)
        if self.mine is not None:
            # Own columns of J; the other sub-models' values always come from their owners.
            zero = {n: torch.zeros(s, dtype=local.dtype, device=local.device)
                    for n, s in zip(local.layout.names, local.layout.sizes)}
            self._own = Objective(local.disc, trainable=self.mine, frozen=zero)
            self._own._constants = {}
            self._own.blocks = local.blocks  # every residual row, zero where a block is not ours

    def values(self, theta):
        """All evaluation values at ``theta``: own pieces computed here (differentiable in
        ``theta``), the others gathered from their ranks."""
        from daskie.train.objective import evaluate_one

        params = self.local.layout.split(self.local.place(theta))
        subs = self.local.disc.submodels
        own = [evaluate_one(subs[e.submodel], e, params[e.submodel]) for e in self._evals]
        flat = torch.cat([v.detach().reshape(-1) for v in own]) if own \
            else torch.zeros(0, dtype=self.local.dtype, device=self.local.device)
        parts = self.group.allgather(flat, sizes=self._sizes)
        delivered: dict = {}
        for r, (piece, counts) in enumerate(zip(self.pieces, self._counts)):
            start = 0
            for i, ((k, _), n) in enumerate(zip(piece, counts)):
                delivered.setdefault(k, []).append(
                    own[i] if r == self.group.rank else parts[r][start:start + n])
                start += n
        return {k: torch.cat(vs)[self._orders[k]] if k in self._orders else vs[0]
                for k, vs in delivered.items()}

    def loss(self, theta):
        """The joint loss (the same number on every rank; differentiable, exact gradient)."""
        th = _SumGradients.apply(theta, self.group) if theta.requires_grad else theta
        r = self.local.residuals_from_values(self.values(th))
        if not self._busy and theta.requires_grad:
            # keep theta in the graph: this rank must join the gradient all-reduce too
            return r @ r + 0.0 * th.sum()
        return r @ r

    def residuals(self, theta):
        """The joint residual vector."""
        return self.local.residuals_from_values(self.values(theta))

    def value_and_grad(self, theta):
        """Joint ``(loss, gradient)``: own slice by autograd, then one all-reduce.

        With ``local_grads`` (whole sub-models per rank, an element-wise optimizer) the
        all-reduce is skipped: the gradient is exact on this rank's own parameters and zero
        elsewhere, and each rank updates only its own; the runner takes every parameter from
        its owner at the end of the window.
        """
        th = theta.detach().requires_grad_(True)
        r = self.local.residuals_from_values(self.values(th))
        loss = r @ r
        g = torch.autograd.grad(loss, th)[0] if loss.requires_grad else torch.zeros_like(th)
        g = g.contiguous()
        if not self.local_grads:
            self.group.allreduce(g, key="grad")
        return float(loss.detach()), g

    def normal_equations(self, theta):
        """Joint ``(loss, J^T J, J^T r)``: own Jacobian columns, all-gathered, then each rank
        forms its rows of ``J^T J`` and the rows are all-gathered (model-parallel LM)."""
        if self.rows is not None:
            return self.rows.normal_equations(theta)
        if self.mine is None:
            raise NotImplementedError("column-split normal equations need sub-model owners "
                                      "(not row pieces); pass rows= for the row split")
        if self.shards != 1:
            raise NotImplementedError("column-split normal equations need one rank per group "
                                      "(shards=1); pass rows= for the row split")
        theta = self.local.place(theta.detach())
        with torch.no_grad():
            values = self.values(theta)
        offsets = self.local.layout.offsets
        if self.mine:
            own_theta = torch.cat([theta[offsets[n][0]:offsets[n][1]] for n in self.mine])
            r, J_own = self._own.jacobian(own_theta, values=values)
        else:  # a rank without sub-models (more ranks than sub-models) adds no columns
            r = self.local.residuals_from_values(values)
            J_own = torch.zeros(r.numel(), 0, dtype=r.dtype, device=r.device)
        cols = self.group.allgather(J_own.T.contiguous().reshape(-1))
        n_rows = r.numel()
        J = torch.zeros(n_rows, self.local.layout.total, dtype=r.dtype, device=r.device)
        for rank, own in enumerate(self.owners):
            block = cols[rank].reshape(-1, n_rows).T
            start = 0
            for name in own:
                lo, hi = offsets[name]
                J[:, lo:hi] = block[:, start:start + hi - lo]
                start += hi - lo
        rows = J_own.T @ J  # this rank's rows of J^T J, in its own column order
        gathered = self.group.allgather(torch.cat([(J_own.T @ r), rows.reshape(-1)]))
        A = torch.empty(J.shape[1], J.shape[1], dtype=r.dtype, device=r.device)
        g = torch.empty(J.shape[1], dtype=r.dtype, device=r.device)
        for rank, own in enumerate(self.owners):
            width = sum(offsets[n][1] - offsets[n][0] for n in own)
            g_r, A_r = gathered[rank][:width], gathered[rank][width:].reshape(width, J.shape[1])
            start = 0
            for name in own:
                lo, hi = offsets[name]
                g[lo:hi] = g_r[start:start + hi - lo]
                A[lo:hi] = A_r[start:start + hi - lo]
                start += hi - lo
        return float(r @ r), A, g
