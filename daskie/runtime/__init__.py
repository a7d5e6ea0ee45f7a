"""The runtime: the one place that knows how work runs.

* executors (:mod:`~daskie.runtime.executor`): :class:`InProcess` and :class:`DaskExecutor`,
  resolved once from the public ``client`` argument by :func:`as_executor`;
* worker-side state (:mod:`~daskie.runtime.state`): one :class:`WorkerState` per worker
  process, owned by the :class:`DaskiePlugin` worker plugin;
* runners, one per shape of work: the window graph (:mod:`~daskie.runtime.window_graph`),
  the SPMD group runner (:mod:`~daskie.runtime.spmd`, on :mod:`~daskie.runtime.groups`), and
  the iteration runner (:mod:`~daskie.runtime.iterations`) on the futures pipeline
  (:mod:`~daskie.runtime.pipeline`);
* what tasks share (:mod:`~daskie.runtime.context`) and what they measure
  (:mod:`~daskie.runtime.profiler`).

See ``docs/architecture.md`` for the flow and the layering rules.
"""

from daskie.runtime.context import RunContext, WindowOutput, merge_params, objective_for
from daskie.runtime.executor import (DaskExecutor, Executor, InProcess, LostResult, SchedulerLost,
                                     as_executor)
from daskie.runtime.groups import Groups, run_group
from daskie.runtime.state import DaskiePlugin, WorkerState, worker_state

__all__ = ["DaskExecutor", "DaskiePlugin", "Executor", "Groups", "InProcess", "LostResult",
           "RunContext", "SchedulerLost", "WindowOutput", "WorkerState", "as_executor",
           "merge_params", "objective_for", "run_group", "worker_state"]
