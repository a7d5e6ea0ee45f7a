"""One run session: what every front door does around ``strategy.execute``.

``solve``, ``fit``, ``generate_dataset``, ``fit_operator`` and ``learn_operator`` (and the CLI
through them) all read the same way::

    resolve the arguments -> build the run context -> Session -> strategy.execute -> summarize

The session is the only place that

* turns the public ``client`` argument into an executor, with one meaning everywhere
  (:func:`check_client`, :meth:`Session.connect`): ``None`` starts daskie's embedded
  ``LocalCluster`` for the duration of the call, ``"sync"`` runs every task in this process,
  a ``distributed.Client`` runs them on its cluster, an executor is used as it is;
* opens, checks and resumes the run store with one identity policy (:func:`check_same_run`:
  a stored run continues only under the same identity, and the message names what differs);
* hands the runners one ``window_done`` (history, checkpoint, progress, live page, the
  caller's callback), and writes the result.

Layering: above ``runtime``, ``store`` and ``dashboard``, below the front doors; it imports
none of the front doors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

from daskie import records as kinds
from daskie.errors import SpecError

__all__ = ["Session", "Trained", "check_callback", "check_client", "check_same_run", "open_session"]

log = logging.getLogger("daskie")


@dataclass
class Trained:
    """What a training front door returns (:func:`daskie.fit`, :func:`daskie.fit_operator`):
    the trained model, its history and a summary of the run.

    It unpacks as ``model, history = daskie.fit(...)`` (iteration yields those two), the
    shape these functions returned before they returned a result object.

    Attributes
    ----------
    model : object
        The trained model (a ``torch.nn.Module`` for ``fit``, an
        :class:`~daskie.operator.Operator` for ``fit_operator``).
    history : list of dict
        One flat record per step or iteration (:mod:`daskie.records`).
    summary : dict
        What the run did: ``strategy``, ``seed``, ``loss`` (the final one), ``stopped_by``
        (what ended training: ``"budget"``, ``"target"``, a stopping rule's reason),
        ``steps`` and ``wall_s``, and what the entry point adds.
    """

    model: object
    history: list
    summary: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.model, self.history))


def check_client(client) -> None:
    """Refuse a ``client`` argument that is none of the accepted kinds, naming it."""
    if client is None or (isinstance(client, str) and client == "sync"):
        return
    from daskie.runtime.executor import Executor

    try:
        from distributed import Client
    except ImportError:  # pragma: no cover
        Client = ()
    if not isinstance(client, (Client, Executor)):
        raise SpecError(f"client must be None (start an embedded LocalCluster), 'sync' (this "
                        f"process) or a distributed.Client, got {client!r}")


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def check_same_run(stored: dict, identity: dict, path) -> None:
    """Refuse to resume the run stored at ``path`` under another identity.

    ``identity`` holds what must not change between a run and its resumption (problem,
    formulation, optimizer, strategy, seed, ...; a ``"token"`` may summarise what has no field
    of its own); the message names every field that differs.
    """
    if not stored:
        raise SpecError(f"cannot resume {path}: it holds no run identity (it was not written by "
                        "this kind of run, or by an older daskie); start a new store")
    differ = [k for k in identity if _plain(stored.get(k)) != _plain(identity[k])]
    if len(differ) > 1 and "token" in differ:  # the token summarises the rest: name the rest
        differ.remove("token")
    if differ:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {identity[k]!r}" for k in differ)
        raise SpecError(f"cannot resume {path}: the stored run differs in {', '.join(differ)} "
                        f"({detail}); resume with the same settings or start a new store")


@dataclass
class Session:
    """The lifecycle of one run: its store, its executor, its history and its callbacks.

    Made by :func:`open_session`; the front door then calls :meth:`connect` (the executor),
    :meth:`execute` (the strategy, with :meth:`window_done` after every window) and
    :meth:`write_result`.

    Attributes
    ----------
    store : RunStore or None
        The run's store (None: nothing is stored).
    resume_point : (int, list of WindowOutput) or None
        The newest checkpoint of a resumed run.
    history : list of dict
        Every training record so far (a resumed run's stored records first).
    summarize : callable, optional
        ``summarize(k, outputs) -> dict`` the front door's summary of window ``k`` (written
        as a ``kind="window"`` record and sent to the live page); None: no summary record.
    on_window : callable, optional
        ``on_window(k, outputs, summary)`` after each window's checkpoint is written.
    progress : callable, optional
        ``progress(record)`` for every training record as windows complete.
    executor : Executor or None
        Inside :meth:`connect`: where the run's tasks run.
    live : LiveRun or None
        The run's live dashboard page, once :meth:`start_live_page` announced it.
    prior_wall_s : float
        Training time of the earlier sessions of a resumed run.
    """

    store: object = None
    resume_point: tuple | None = None
    history: list = field(default_factory=list)
    summarize: object = None
    on_window: object = None
    progress: object = None
    executor: object = None
    live: object = None
    prior_wall_s: float = 0.0
    _t0: float = field(default_factory=time.perf_counter)
    _closed: bool = False

    @property
    def finished(self) -> bool:
        """True when the run being resumed has nothing left to train."""
        if self.store is None or self.resume_point is None:
            return False
        return self.store.has_result or any(o.state.done is not None for o in self.resume_point[1])

    @contextlib.contextmanager
    def connect(self, client, *, workers: int = 2, gpus: int = 0):
        """The executor of ``client`` for the ``with`` block (an embedded LocalCluster for
        ``None``, torn down at the end)."""
        from daskie.runtime.executor import as_executor

        with contextlib.ExitStack() as stack:
            if client is None:
                from daskie import config
                from daskie.cluster import local_cluster

                client = stack.enter_context(local_cluster(
                    workers, config.get("threads-per-worker"), gpus,
                    dashboard_address=config.get("dashboard-address")))
            self.executor = as_executor(client)
            try:
                yield self.executor
            finally:
                self.executor = None

    def start_live_page(self, token: str, info: dict) -> None:
        """Announce the run on the executor's live page (nothing in process)."""
        self.live = self.executor.live_page(token, info)

    def elapsed(self) -> float:
        """Training wall time of the run: earlier sessions' and this one's (seconds)."""
        return self.prior_wall_s + time.perf_counter() - self._t0

    def window_done(self, k: int, outputs) -> None:
        """What happens after every window: the records into the history (with the front
        door's window summary), the checkpoint into the store, progress, the live page and
        the caller's callback."""
        from daskie.store.checkpoint import Checkpoint

        recs = [r for out in outputs for r in out.records]
        summary = None
        if self.summarize is not None:
            summary = {"window": k, "epoch": max(o.state.epoch for o in outputs),
                       "elapsed_s": self.elapsed(), **self.summarize(k, outputs)}
            recs.append({**summary, "kind": kinds.WINDOW, "submodels": "joint",
                         "optimizer": "window"})
            if self.live is not None:
                self.live.window_done(summary)
        self.history.extend(recs)
        if self.store is not None:
            self.store.write_checkpoint(Checkpoint(k, [o.to_tree() for o in outputs], recs))
        if self.progress is not None:
            for r in recs:
                self.progress(r)
        if self.on_window is not None:
            self.on_window(k, outputs, summary)

    def execute(self, strategy, ctx, groups=None, plan=None, *, objective=None, start=None):
        """``strategy.execute`` on the session's executor, from the resume point, with
        :meth:`window_done` after every window; ``objective`` is this process's copy of the
        run's objective, served to the tasks that run here."""
        self._t0 = time.perf_counter()
        with self.executor.hosting(ctx.token, objective):
            return strategy.execute(self.executor, ctx, groups, plan, resume=self.resume_point,
                                    on_window=self.window_done, start=start)

    def write_result(self, dataset, summary: dict, params: dict) -> None:
        """The run's result into its store (nothing without one)."""
        if self.store is not None:
            self.store.write_result(dataset, self.history, summary, params=params)

    def close(self, failed: bool = False) -> None:
        """Close the store: kept when the run finished, staged or discarded when it failed
        (:class:`~daskie.store.RunStore`)."""
        if self.store is not None and not self._closed:
            self._closed = True
            self.store.close(failed=failed)


def check_callback(name: str, value) -> None:
    """Raise SpecError naming ``name`` unless ``value`` is None or callable.

    For a front door's ``progress`` and ``on_window``, before it wraps them and before any
    work (``progress=False`` failed with a TypeError at the end of the first window)."""
    if value is not None and not callable(value):
        raise SpecError(f"{name} must be a callable or None, got {value!r}")


@contextlib.contextmanager
def open_session(store=None, *, resume: bool = False, overwrite: bool = False,
                 identity: dict | None = None, meta: dict | None = None, summarize=None,
                 on_window=None, progress=None):
    """A :class:`Session` for the ``with`` block, with its store open and its resume point read.

    Parameters
    ----------
    store : str or path, optional
        The run store (None: nothing is stored, nothing can be resumed).
    resume : bool
        Continue the stored run from its newest checkpoint (its identity must match).
    overwrite : bool
        Replace an existing store (transactional: :class:`~daskie.store.RunStore`).
    identity : dict
        What must not change between a run and its resumption; stored under ``"identity"``.
    meta : dict
        The run's description, stored with it (the identity is added).
    summarize, on_window, progress : callable, optional
        As the :class:`Session` attributes.

    The store is closed when the block ends: kept when it ends normally, closed as failed
    (staged for resume, or discarded) when it raises.
    """
    if resume and overwrite:
        raise SpecError("resume and overwrite exclude each other")
    if resume and store is None:
        raise SpecError("resume=True needs the store= of the run to continue")
    identity = dict(identity or {})
    session = Session(summarize=summarize, on_window=on_window, progress=progress)
    if store is not None:
        from daskie.runtime.context import WindowOutput
        from daskie.store import RunStore

        session.store = RunStore(store, mode="a" if resume else ("w" if overwrite else "w-"))
    try:
        if session.store is not None and resume:
            session.store.lock()  # a second writer fails now, not after a trained window
            check_same_run(session.store.read_meta().get("identity"), identity,
                           session.store.path)
            ckpt = session.store.latest_checkpoint()
            if ckpt is not None:
                session.resume_point = (ckpt.window,
                                        [WindowOutput.from_tree(t) for t in ckpt.outputs])
                session.history = session.store.history()
                session.prior_wall_s = max([r.get("elapsed_s", 0.0) for r in session.history]
                                           + [0.0])
        elif session.store is not None:
            session.store.write_meta({**(meta or {}), "identity": identity})
        yield session
    except BaseException:
        session.close(failed=True)
        raise
    session.close()
