"""The schema of training records: one flat dict per event, with a named ``kind``.

Every record daskie writes (into the history a run returns, its store and the live page)
carries a ``kind`` field, one of :data:`KINDS`. Readers select records through
:func:`of_kind` or the predicates below, never through magic group numbers.

* ``"step"`` — one optimizer step inside a training window of one group (or rank): ``epoch``,
  ``loss``, ``optimizer``, ``step_s``, ``wall_s``, ``window``, ``group``, ``submodels``,
  ``worker`` (and, on the window's last step, the profiler's fields: ``window_s``,
  ``sync_s``, ``peak_rss_mb``, ``t_start``, ``t_end``, ``loss_<block>``);
* ``"iteration"`` — one outer iteration of an iteration strategy (ParaFlow family, APTS):
  ``iteration``, ``loss``, ``grad_calls``, ``wall_s`` and the strategy's own fields;
* ``"window"`` — the summary :func:`daskie.solve` adds after each window on the client: the
  joint ``loss``, the test ``mse`` and ``rel_l2``, ``epoch`` and ``elapsed_s`` (training wall
  time since the run began, earlier sessions of a resumed run included);
* ``"polish"`` — a step of the joint polish after block-coordinate windows.

``group`` is the index of the Plan group (or 0 for one-group strategies) on ``"step"``
records, and absent elsewhere.
"""

from __future__ import annotations

__all__ = ["TOPIC", "KINDS", "STEP", "ITERATION", "WINDOW", "POLISH", "FIELDS", "of_kind", "is_window",
           "is_training", "kind_of"]

#: The Dask event topic every live record is published on (tasks' profiles, the client's
#: window summaries) and the live dashboard page listens to.
TOPIC = "daskie"

STEP = "step"
ITERATION = "iteration"
WINDOW = "window"
POLISH = "polish"

#: Every record kind, in the order a run produces them.
KINDS = (STEP, ITERATION, WINDOW, POLISH)

#: What the common fields mean (documentation of the ``history_*`` variables of a store).
FIELDS = {
    "kind": "record kind: 'step' (optimizer step of one group), 'iteration' (outer iteration "
            "of an iteration strategy), 'window' (joint summary after a window), 'polish' "
            "(joint polish step)",
    "epoch": "optimizer steps (or iterations) taken so far",
    "iteration": "outer iterations taken so far (iteration strategies)",
    "loss": "least-squares loss (mean squared residual) after this step",
    "mse": "mean squared error against the exact solution on the held-back test points",
    "rel_l2": "relative L2 error against the exact solution on the held-back test points",
    "optimizer": "label of the optimizer (stage) that took the step",
    "window": "index of the training window",
    "group": "index of the Plan group (step records)",
    "rank": "rank of the SPMD group that wrote the record",
    "submodels": "sub-models trained by the task that wrote the record",
    "worker": "address of the Dask worker that ran the task ('local' in process)",
    "step_s": "seconds of this optimizer step",
    "wall_s": "training seconds accumulated by the task that wrote the record",
    "elapsed_s": "training seconds since the run began (window records)",
    "window_s": "seconds of the whole window task (last step of a window)",
    "sync_s": "seconds spent in collectives during the window (last step of a window)",
    "peak_rss_mb": "peak resident memory of the worker process over the window, MiB",
    "t_start": "wall-clock start of the window task, seconds since the epoch",
    "t_end": "wall-clock end of the window task, seconds since the epoch",
    "grad_calls": "gradient evaluations so far, counted in data rows (iteration strategies)",
    "attempts": "times the window ran (1: no retry after a failure)",
}


def kind_of(record) -> str:
    """The kind of ``record`` (``"step"`` for a record written before kinds existed)."""
    return record.get("kind", STEP)


def of_kind(records, *kinds: str) -> list:
    """The records whose kind is one of ``kinds``."""
    wanted = set(kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown record kinds {sorted(unknown)}; kinds are {KINDS}")
    return [r for r in records if kind_of(r) in wanted]


def is_window(record) -> bool:
    """True for the client's summary record after a window."""
    return kind_of(record) == WINDOW


def is_training(record) -> bool:
    """True for records a training task wrote (steps and iterations, not summaries)."""
    return kind_of(record) in (STEP, ITERATION)
