"""Strategies: how sub-models are grouped into tasks and how training windows are chained.

A strategy is a frozen dataclass with validated options. Every strategy here trains in
*windows*: a window task advances one group of sub-models by ``window`` optimizer steps,
with the other sub-models' parameters as inputs. Windows are pure functions of their
inputs, so they are checkpoints, resume points and the unit Dask recomputes after a fault.

The strategy only decides the groups and which window outputs each window reads; the graph
builder (:mod:`daskie.graph.builder`) turns that into Dask tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from daskie.errors import SpecError, check_int

__all__ = ["Strategy", "Monolithic", "CEPTF"]


class Strategy:
    """Base class. Subclasses define :meth:`groups` and :meth:`inputs`."""

    window: int | None

    @property
    def label(self) -> str:
        """Short name for records and stores."""
        return type(self).__name__.lower()

    def groups(self, disc, plan) -> tuple[tuple[str, ...], ...]:  # pragma: no cover
        """Sub-models trained together, one tuple per task of a window."""
        raise NotImplementedError

    def inputs(self, group: int, groups, plan) -> tuple[int, ...]:
        """Groups whose previous-window output window (k, group) reads (besides its own)."""
        return ()

    def sequential(self) -> bool:
        """True when the groups of one window run one after another (Gauss-Seidel)."""
        return False

    def polish_steps(self) -> int:
        """Joint steps of all sub-models after the windows (0: none)."""
        return 0

    def execute(self, ctx, groups, plan, client, *, available=frozenset(), resume=None,
                on_window=None):
        """Run the training; return the final :class:`~daskie.graph.tasks.WindowOutput` list.

        The default builds the window graph (:func:`daskie.graph.builder.build`) and runs it
        on ``client`` (a distributed Client or ``"sync"``), calling ``on_window(k, outputs)``
        after each window. Strategies with another shape of graph (Parareal, data-parallel
        shards) override this and keep the same contract: ``resume`` is ``(k, outputs)`` of
        the last completed window, and ``on_window`` receives outputs whose ``params``
        together cover every sub-model.
        """
        from daskie.collectives.spmd import cluster_workers
        from daskie.graph import builder

        workers = None if client == "sync" else sorted(cluster_workers(client))
        graph = builder.build(self, ctx, groups, plan, total_steps=ctx.optimizer.steps,
                              available=available, resume=resume, workers=workers)
        final, _ = builder.run(graph, client, on_window=on_window)
        return final


class ObjectiveStrategy(Strategy):
    """A strategy that trains a whole flat-parameter objective through one method,

        ``train(objective, client, *, seed, target_loss, threads, resume, on_window, source,
        theta0) -> list[WindowOutput]``,

    which serves both :func:`daskie.fit` (torch modules) and :func:`daskie.solve` (through
    :meth:`execute`, with the problem's objective and ``source=ctx`` for the workers).
    """

    def execute(self, ctx, groups, plan, client, *, available=frozenset(), resume=None,
                on_window=None):
        """Train the problem's objective (see :meth:`Strategy.execute` for the contract)."""
        from daskie.graph.tasks import objective_for

        return self.train(objective_for(ctx), client, seed=ctx.seed, target_loss=ctx.target_loss,
                          threads=ctx.threads, resume=resume, on_window=on_window, source=ctx)

    def checkpoint_windows(self, iterations, carry, record, output, *, window, on_window,
                           resume):
        """Group an iteration stream into checkpoint windows of ``self.checkpoint_every``
        records; returns the last window's outputs.

        ``record(c, previous, window)`` makes the record of iterate ``c`` (or None for none);
        ``output(c, records)`` the window outputs at ``c``, passed to
        ``on_window(window, outputs)``. A window also closes at the iterate that ends the
        training. Without any record (and no resume point) the start is the output.
        """
        records, final = [], None
        for c in iterations:
            rec = record(c, carry, window)
            if rec is not None:
                records.append(rec)
            carry = c
            if records and (len(records) >= self.checkpoint_every or c.done is not None):
                final = output(c, records)
                if on_window is not None:
                    on_window(window, final)
                window, records = window + 1, []
        if final is None and resume is None:
            final = output(carry, [])
        return final


@dataclass(frozen=True)
class Monolithic(Strategy):
    """Everything in one task: the baseline every speed-up is measured against.

    Parameters
    ----------
    window : int or None
        Optimizer steps per task. ``None`` (default): the whole training is one task; an
        int splits it into a chain of tasks, each a checkpoint to resume from.
    """

    window: int | None = None

    def __post_init__(self):
        check_int("Monolithic.window", self.window, allow_none=True)

    def groups(self, disc, plan):
        return (tuple(disc.submodels),)


@dataclass(frozen=True)
class CEPTF(Strategy):
    """CEPTF sub-model parallelism (seed 000): the Plan's groups train on their own workers.

    ``order="joint"`` (default): every window is one group of tasks running at the same time,
    one per Plan group, each evaluating only its own sub-models; every step they exchange the
    evaluation values (all-gather) and the gradient slices (all-reduce) through
    :mod:`daskie.collectives`, so the training is the monolithic one (equal up to rounding
    for the same seed) with each worker doing its own networks' work. Levenberg-Marquardt
    steps gather each rank's Jacobian columns and rows of ``J^T J``.

    ``order="jacobi"`` or ``"gauss-seidel"``: block-coordinate windows for weakly coupled
    problems — each group trains on the joint loss with the other groups frozen at their
    latest values, in parallel (Jacobi) or one after another; a final joint ``polish``.
    These converge much worse per step than joint training on coupled sub-models (E1:
    MSE 4e-2 against 8e-9 after 250 LM steps, ``benchmarks/results/overhead.json``).

    Parameters
    ----------
    window : int
        Optimizer steps per window (seed 000 Algorithm 2's synchronisation interval; with
        ``"joint"`` a checkpoint and the unit re-run after a failure).
    order : str
        ``"joint"``, ``"jacobi"`` or ``"gauss-seidel"``.
    polish : int
        Joint steps after block-coordinate windows.
    shards : int
        Data-parallel groups (``"joint"``): every Plan group is spread over ``shards``
        workers, each evaluating every ``shards``-th row of the group's evaluations; the
        Plan is made for ``workers // shards`` groups.
    lm_split : str
        How ``"joint"`` forms Levenberg-Marquardt's normal equations: ``"rows"`` (default:
        each worker takes every n-th row of every block for all sub-models and one all-reduce
        sums ``J^T J``) or ``"columns"`` (each worker the Jacobian columns of its own
        sub-models, all-gathered, then its rows of ``J^T J``). Measured by
        ``benchmarks/speedup.py --optimizer lm``; the row split moves P x P numbers where
        the column split moves N x P.
    balance : bool
        ``"joint"``: deal the evaluation rows to the workers by estimated work
        (:func:`daskie.train.collective.balanced_pieces`): the Plan's groups keep their
        sub-models together and the sub-model at each boundary is split over two workers, so
        no worker waits for the heaviest sub-model. Assumes workers of equal speed: ranks
        with different resource tags (GPU and CPU) keep whole sub-models. The numbers equal
        the unbalanced ones up to rounding (gradients are summed over the ranks).
    rebalance : bool
        ``"joint"`` with ``balance=False``: after every window, re-pack the Plan's groups from each worker's
        measured compute time per step (:func:`daskie.plan.planner.rebalance`); the numbers
        do not change, only which worker evaluates which sub-model.
    method, compress, timeout, retries :
        Collective options of ``"joint"`` (see :class:`~daskie.strategies.DataParallel`).
    """

    window: int = 50
    order: str = "joint"
    polish: int = 0
    shards: int = 1
    lm_split: str = "rows"
    balance: bool = True
    rebalance: bool = False
    method: str = "gloo"
    compress: str | None = None
    timeout: float = 120.0
    retries: int = 2

    def __post_init__(self):
        from daskie.strategies.spmd import _check_spmd_options

        check_int("CEPTF.window", self.window, allow_none=True)
        if self.order not in ("joint", "jacobi", "gauss-seidel"):
            raise SpecError(f"CEPTF.order must be 'joint', 'jacobi' or 'gauss-seidel', "
                            f"got {self.order!r}")
        check_int("CEPTF.polish", self.polish, 0)
        check_int("CEPTF.shards", self.shards)
        if self.shards > 1 and self.order != "joint":
            raise SpecError("CEPTF.shards > 1 (data-parallel groups) needs order='joint'")
        if self.lm_split not in ("rows", "columns"):
            raise SpecError(f"CEPTF.lm_split must be 'rows' or 'columns', got {self.lm_split!r}")
        if not isinstance(self.rebalance, bool):
            raise SpecError(f"CEPTF.rebalance must be True or False, got {self.rebalance!r}")
        if self.rebalance and self.order != "joint":
            raise SpecError("CEPTF.rebalance needs order='joint'")
        if not isinstance(self.balance, bool):
            raise SpecError(f"CEPTF.balance must be True or False, got {self.balance!r}")
        if self.balance and self.rebalance:
            raise SpecError("CEPTF.rebalance re-packs whole sub-models: it needs balance=False")
        if self.balance and self.lm_split == "columns":
            raise SpecError("CEPTF.lm_split='columns' needs whole sub-models per worker: "
                            "pass balance=False")
        if self.order == "joint" and self.polish:
            raise SpecError("CEPTF.polish applies to the block-coordinate orders ('jacobi', "
                            "'gauss-seidel'); order='joint' already trains jointly")
        _check_spmd_options("CEPTF", self.timeout, self.retries, self.method, self.compress)

    def groups(self, disc, plan):
        return tuple(p.submodels for p in plan.groups)

    def inputs(self, group, groups, plan):
        # Every other group: the residual map reads all evaluations, so a window needs the
        # latest parameters of every sub-model (not only those sharing a block with it).
        return tuple(h for h in range(len(groups)) if h != group)

    def sequential(self):
        return self.order == "gauss-seidel"

    def polish_steps(self):
        return self.polish

    def execute(self, ctx, groups, plan, client, *, available=frozenset(), resume=None,
                on_window=None):
        """Joint: SPMD windows (:mod:`daskie.strategies.spmd`); else the window graph."""
        if self.order == "joint":
            from daskie.strategies.spmd import joint_ceptf

            return joint_ceptf(self, ctx, groups, plan, client, resume=resume,
                               on_window=on_window)
        return super().execute(ctx, groups, plan, client, available=available, resume=resume,
                               on_window=on_window)
