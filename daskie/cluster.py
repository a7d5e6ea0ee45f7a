"""Cluster entry points: a ``distributed.Client`` on a laptop, a running scheduler, or a batch queue.

:func:`make_cluster` is the one place that turns "where should this run" into a client::

    with make_cluster("slurm", workers=2, gpus=1) as client:     # dask-jobqueue's SLURMCluster
        daskie.solve("E1", client=client)
    with make_cluster("local") as client: ...                     # daskie's embedded cluster
    with make_cluster("local", workers=2, gpus=2) as client: ...  # one worker per GPU
    with make_cluster("local-cuda") as client: ...                # dask-cuda's LocalCUDACluster
    with make_cluster("tcp://10.0.0.5:8786") as client: ...       # a scheduler that is running

For ``"slurm"`` and ``"pbs"`` the cluster is dask-jobqueue's own :class:`~dask_jobqueue.SLURMCluster`
or :class:`~dask_jobqueue.PBSCluster`, so the job settings (cores, memory, walltime,
queue/partition, account, interface, extra directives, prologue) come from Dask's
configuration under ``jobqueue.slurm`` / ``jobqueue.pbs``: an HPC user's existing jobqueue
YAML works unchanged. daskie adds only what jobqueue leaves unset (``daskie.cluster.*`` in
``daskie/daskie.yaml``: one worker process per job, its cores and memory) and what daskie's
tasks need: every worker declares the resource ``CPU=<threads>``, and ``gpus`` of them also
``GPU=1`` (the tag the Plan puts on its heaviest groups), in jobs that ask the queue for a
GPU (``daskie.cluster.gpu-directives``). Keyword ``overrides`` go to the jobqueue class as
they are (``interface="lo"``, ``queue="gpu"``, ``walltime="01:00:00"``, ...).

Workers are asked for with ``scale`` (or ``adapt(minimum, maximum)``), sized from the Plan's
``N_sub`` and GPU groups when a plan is given, and waited for with a bound
(``daskie.cluster.wait-timeout``): a queue that never starts them ends in a
:class:`QueueTimeout` that names the queue and lists the pending jobs as the queue shows them
(``squeue`` / ``qstat``); the jobs are cancelled when the context closes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass

from daskie.errors import DaskieError, SpecError, check_int

__all__ = ["ClusterError", "local_cluster", "local_cuda_cluster", "QueueTimeout", "Size", "gpu_options",
           "is_address", "job_settings", "make_cluster", "size_for", "worker_environment",
           "worker_resources"]

#: Kinds of cluster :func:`make_cluster` starts itself (anything else must be an address).
KINDS = ("local", "slurm", "pbs")
#: dask-cuda's local cluster (the ``gpu`` extra); not in :data:`KINDS`, which the CLI offers.
LOCAL_CUDA = "local-cuda"
_ADDRESS_PREFIXES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")
# How each queue lists jobs: the command and the job-id option (ids comma-joined for SLURM).
_STATUS = {"slurm": ("squeue", "--noheader", "-o", "%i %P %j %T %r %M", "-j"),
           "pbs": ("qstat", "-w")}



@contextlib.contextmanager
def local_cluster(workers: int = 2, threads_per_worker: int = 1, gpus: int = 0, *,
                  profile: bool = False, dashboard_address: str | None = "127.0.0.1:0",
                  timeout: float = 60.0):
    """An embedded cluster on 127.0.0.1 with CPU (and GPU) resource tags, and its Client.

    The scheduler runs in this process; every worker's nanny is a ``dask spec`` subprocess of
    its own (a fresh interpreter), never a child that re-imports this process's ``__main__``:
    ``daskie.solve(problem)`` at the top level of a script runs as it reads, without an
    ``if __name__ == "__main__":`` guard (a nanny spawned from here re-ran the script in every
    worker, which failed with "Nanny failed to start"). The workers see this process's
    ``sys.path`` and Dask configuration; a worker that dies is restarted by its nanny.

    Parameters
    ----------
    workers : int
        Worker processes.
    threads_per_worker : int
        Threads of each worker (its ``CPU`` resource).
    gpus : int
        Of the workers, this many are GPU workers: worker ``i < gpus`` declares ``GPU=1`` and
        sees only GPU ``i`` of this machine (``CUDA_VISIBLE_DEVICES``, from the GPUs this
        process may use), one worker per GPU, as ``dask-cuda`` does; the other workers see no
        GPU. With ``gpus=0`` the workers see what this process sees.
    profile : bool
        Keep the workers' statistical profiler (the dashboard's Profile page). Off by default:
        its thread takes the GIL every 10 ms to sample the training thread, which cost about
        5 % of a CEPTF step here (E1, 2 workers: 18.5 -> 17.6 ms). On a cluster of your own,
        ``distributed.worker.profile.enabled: false`` does the same.
    dashboard_address : str or None
        The scheduler's dashboard (None: none).
    timeout : float
        Seconds to wait for the workers to connect.

    Raises
    ------
    ClusterError
        Workers that did not connect within ``timeout``.
    """
    import dask
    from distributed import Client, Scheduler, SpecCluster

    check_int("workers", workers)
    check_int("threads_per_worker", threads_per_worker)
    check_int("gpus", gpus, 0)
    if gpus > workers:
        raise SpecError(f"gpus={gpus} GPU workers do not fit in workers={workers}")
    # The nanny sets MALLOC_TRIM_THRESHOLD_ for its workers, which makes glibc return freed
    # memory eagerly; torch's many mid-sized temporaries then run 3-4x slower on a worker
    # than in-process (measured: 10 PINN steps 1.9-2.8 s against 0.6-0.8 s). Serving those
    # from mmap-free heap memory restores in-process speed.
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
               "MALLOC_MMAP_THRESHOLD_": 64 * 2**20}
    # Each nanny forks its worker: the nanny is a fresh interpreter of its own that never
    # touches CUDA (torch is imported by the worker's first task), so fork is safe there and
    # saves a second interpreter start per worker. Two workers, medians of 4 starts (load
    # 7-11 on 2 cores): start 4.2 s with spawn, 2.5 s with fork, 2.1 s for the former
    # LocalCluster (whose workers re-ran a user's script); close 0.06 s against 0.86 s.
    # Linux only: macOS's system libraries are not fork-safe (Python spawns there too).
    config = {"distributed.nanny.pre-spawn-environ": environ,
              "distributed.worker.multiprocessing-method":
                  "fork" if sys.platform.startswith("linux") else "spawn"}
    if not profile:
        config["distributed.worker.profile.enabled"] = False
    with contextlib.ExitStack() as stack:
        levels: dict = {}
        stack.callback(_restore_levels, levels)  # unwound last
        stack.enter_context(dask.config.set(config))
        if sys.platform == "win32":  # distributed starts no worker subprocesses there
            yield stack.enter_context(_spawned_cluster(workers, threads_per_worker, gpus,
                                                       dashboard_address, levels))
            return
        worker_process = _worker_process()
        specs = {i: {"cls": worker_process, "options": {
            "name": i, "env": worker_environment(i, gpus),
            "worker_kwargs": {"nthreads": threads_per_worker, "host": "127.0.0.1",
                              "resources": worker_resources(i, threads_per_worker, gpus),
                              "memory_limit": _memory_limit(workers),
                              # The workers' own log records stay below CRITICAL: every task's
                              # error reaches the client with its traceback anyway, and what is
                              # left are the heartbeats of workers whose scheduler is already
                              # closing (a 30-line CommClosedError after a Ctrl-C)
                              "silence_logs": logging.CRITICAL}}}
                 for i in range(workers)}
        scheduler = {"cls": Scheduler, "options": {
            "host": "127.0.0.1", "dashboard": dashboard_address is not None,
            "dashboard_address": dashboard_address}}
        cluster = stack.enter_context(SpecCluster(workers=specs, scheduler=scheduler,
                                                  silence_logs=logging.CRITICAL,
                                                  name="daskie-local"))
        client = stack.enter_context(Client(cluster))
        # unwound first: while the cluster is torn down, distributed's heartbeats and
        # asyncio's "Task exception was never retrieved" about connections closing under them
        # are noise after a finished (or failed, already reported) run
        stack.callback(_silence_teardown, levels)
        try:
            client.wait_for_workers(workers, timeout=timeout)
        except TimeoutError as exc:
            raise ClusterError(f"the embedded cluster's {workers} worker processes did not all "
                               f"connect within {timeout:g} s (their output above says why)") from exc
        yield client


#: What a worker subprocess runs: take the parent's ``sys.path``, then dask's command line
#: (``dask spec ...``); its ``__main__`` is this string, which no spawned child re-imports.
_BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv.pop(1)); sys.argv[0] = 'dask'; "
         "from dask.cli import run_cli; run_cli()")


def _worker_process():
    """The worker class of :func:`local_cluster` (made here: ``distributed`` is imported only
    when a cluster starts)."""
    import asyncio
    import json
    import os
    import sys

    import dask
    from distributed.deploy.subprocess import Subprocess

    class WorkerProcess(Subprocess):
        """One Dask worker (a nanny and its worker) in a ``dask spec`` subprocess: a fresh
        interpreter with this process's ``sys.path`` and Dask configuration and its own
        ``env``, whose ``__main__`` is not the user's script (:data:`_BOOT`)."""

        def __init__(self, scheduler: str, name=None, worker_kwargs=None, env=None):
            self.scheduler, self.name = scheduler, name
            self.worker_kwargs, self.env = dict(worker_kwargs or {}), dict(env or {})
            super().__init__()

        async def _start(self) -> None:
            spec = {"cls": "distributed.Nanny", "opts": {"name": self.name, **self.worker_kwargs}}
            # what a spawned child inherits: the config, and this process's sys.path set once
            # the interpreter has started (as multiprocessing does; in PYTHONPATH a directory
            # holding a module named like the standard library's, benchmarks/operator.py,
            # would shadow it before the interpreter is up)
            # and the nanny's own log records below CRITICAL too (its "Nanny at ... closed"
            # after a Ctrl-C would break the command line's one-line report)
            inherited = copy.deepcopy(dask.config.global_config)
            inherited.setdefault("logging", {})["distributed"] = "critical"
            env = {**os.environ, **self.env,
                   "DASK_INTERNAL_INHERIT_CONFIG": dask.config.serialize(inherited)}
            paths = [p for p in sys.path if isinstance(p, str)]
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _BOOT, json.dumps(paths), "spec", self.scheduler,
                "--spec", json.dumps(spec), env=env)

    return WorkerProcess


@contextlib.contextmanager
def _spawned_cluster(workers, threads, gpus, dashboard_address, levels):
    """Windows: distributed's LocalCluster, whose spawned workers re-import ``__main__``
    (scripts need the ``if __name__ == "__main__":`` guard there); every worker the same
    resources."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                      host="127.0.0.1", dashboard_address=dashboard_address,
                      resources=worker_resources(0, threads, gpus),
                      silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        try:
            yield client
        finally:
            _silence_teardown(levels)


def worker_resources(i: int, threads: int, gpus: int) -> dict:
    """The resources local worker ``i`` declares: ``CPU=threads``, and ``GPU=1`` for the
    first ``gpus`` workers."""
    return {"CPU": threads, **({"GPU": 1} if i < gpus else {})}


def worker_environment(i: int, gpus: int, environ=None) -> dict:
    """What local worker ``i`` adds to its environment: with ``gpus > 0``, the one GPU it may
    see (``CUDA_VISIBLE_DEVICES``: the ``i``-th of the GPUs ``environ`` -- default this
    process's -- lets it use, for ``i < gpus``; none for the CPU workers)."""
    import os

    environ = os.environ if environ is None else environ
    if not gpus:
        return {}
    if i >= gpus:
        return {"CUDA_VISIBLE_DEVICES": ""}
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return {"CUDA_VISIBLE_DEVICES": ids[i] if i < len(ids) else str(i)}


def _memory_limit(workers: int):
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT // workers)


@contextlib.contextmanager
def local_cuda_cluster(gpus: int | None = None, threads_per_worker: int = 1, **overrides):
    """dask-cuda's :class:`~dask_cuda.LocalCUDACluster` (one worker per GPU, each seeing its
    own through ``CUDA_VISIBLE_DEVICES``) with daskie's resource tags (``CPU=threads``,
    ``GPU=1`` on every worker), and its Client.

    ``gpus``: workers (None: one per GPU of the machine); ``overrides`` go to
    ``LocalCUDACluster`` (``CUDA_VISIBLE_DEVICES="0,1"``, ``rmm_pool_size="20GB"``, ...). Its
    workers are spawned nannies, which re-import ``__main__``: scripts that use it need the
    ``if __name__ == "__main__":`` guard (daskie's own :func:`local_cluster` does not).

    Raises
    ------
    SpecError
        dask-cuda is not installed.
    """
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise SpecError("cluster 'local-cuda' needs dask-cuda: pip install \"daskie[gpu]\" (or "
                        "use cluster 'local' with gpus=N: daskie's own one-worker-per-GPU "
                        "cluster)") from None
    from distributed import Client

    kwargs = {"n_workers": gpus, "threads_per_worker": threads_per_worker, "host": "127.0.0.1",
              "dashboard_address": "127.0.0.1:0", "silence_logs": logging.CRITICAL,
              "resources": {"CPU": threads_per_worker, "GPU": 1}, **overrides}
    if kwargs["n_workers"] is None:
        del kwargs["n_workers"]
    with LocalCUDACluster(**kwargs) as cluster, Client(cluster) as client:
        yield client


_TEARDOWN_LOGGERS = ("distributed", "asyncio", "tornado")


def _silence_teardown(levels: dict) -> None:
    for name in _TEARDOWN_LOGGERS:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.setLevel(logging.CRITICAL + 1)


def _restore_levels(levels: dict) -> None:
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def is_address(text) -> bool:
    """Whether ``text`` names a scheduler address (``tcp://host:port`` and the like)."""
    return isinstance(text, str) and text.startswith(_ADDRESS_PREFIXES) and len(text) > 6


class ClusterError(DaskieError, RuntimeError):
    """A cluster could not be started or reached (the message says which and why)."""


class QueueTimeout(ClusterError, TimeoutError):
    """The batch queue did not start the workers within the bounded wait.

    Attributes
    ----------
    queue : str
        The queue (partition) the jobs were sent to, or ``"the default queue"``.
    pending : str
        The queue's own listing of the cluster's jobs when the wait ended.
    """

    def __init__(self, message: str, queue: str, pending: str):
        super().__init__(message)
        self.queue, self.pending = queue, pending


@dataclass(frozen=True)
class Size:
    """How many workers a run needs, and how many of them declare ``GPU=1``.

    Parameters
    ----------
    workers : int
        Worker processes (one per job on a batch queue).
    gpus : int
        Of those, the workers tagged ``GPU`` (``0 <= gpus <= workers``).
    """

    workers: int
    gpus: int


def size_for(workers=None, gpus: int = 0, plan=None) -> Size:
    """The cluster size for a run: explicit numbers, else the Plan's, else the setting.

    Parameters
    ----------
    workers : int, optional
        Worker processes. Default: with a ``plan``, its ``N_sub`` (a CEPTF window runs one
        task per group at once, so fewer workers serialise it); without one, the setting
        ``daskie.workers``.
    gpus : int
        Workers that declare ``GPU=1``. With a ``plan`` and ``gpus=0``, the number of the
        plan's groups tagged ``GPU``.
    plan : daskie.plan.Plan, optional
        The run's plan.

    Raises
    ------
    SpecError
        A count that is not an int, or more GPU workers than workers.
    """
    from daskie import config

    if gpus is None or isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise SpecError(f"gpus must be an int >= 0, got {gpus!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise SpecError(f"workers must be a positive int or None, got {workers!r}")
    if plan is not None:
        gpus = gpus or sum(g.resource == "GPU" for g in plan.groups)
        workers = workers or max(plan.n_sub, gpus)
    workers = workers or config.get("workers")
    if gpus > workers:
        raise SpecError(f"gpus={gpus} GPU workers do not fit in workers={workers}; "
                        f"ask for at least {gpus} workers")
    return Size(workers, gpus)


@contextlib.contextmanager
def make_cluster(kind: str, *, workers=None, gpus: int = 0, plan=None, adapt=None,
                 timeout: float | None = None, **overrides):
    """A ``distributed.Client`` on a cluster of ``kind``, closed (jobs cancelled) on exit.

    Parameters
    ----------
    kind : str
        ``"local"`` (daskie's embedded cluster on 127.0.0.1, :func:`local_cluster`: ``gpus``
        of its workers declare ``GPU=1``, one GPU each), ``"local-cuda"`` (dask-cuda's
        :class:`~dask_cuda.LocalCUDACluster`, one worker per GPU, each declaring ``GPU=1``:
        ``pip install "daskie[gpu]"``; ``gpus`` workers, default every GPU), ``"slurm"``
        (:class:`dask_jobqueue.SLURMCluster`), ``"pbs"`` (:class:`dask_jobqueue.PBSCluster`),
        or the address of a running scheduler (``"tcp://host:8786"``).
    workers, gpus, plan
        The size (:func:`size_for`): ``workers`` processes of which ``gpus`` declare
        ``GPU=1``; by default from ``plan`` (its ``N_sub`` and GPU-tagged groups).
    adapt : tuple of (int, int), optional
        ``(minimum, maximum)``: let the batch queue's cluster adapt between these numbers of
        workers (``cluster.adapt``) instead of ``scale(workers)``; the wait is for
        ``minimum``. Only for ``"slurm"``/``"pbs"`` without GPU workers (jobqueue adapts one
        job template).
    timeout : float, optional
        Seconds to wait for the workers (default: ``daskie.cluster.wait-timeout``).
    **overrides
        Keyword arguments for the jobqueue class, over the ``jobqueue.<kind>`` settings
        (``interface="lo"``, ``queue="gpu"``, ``account=...``, ``walltime=...``,
        ``job_extra_directives=[...]``, ``scheduler_options={...}``).

    Yields
    ------
    distributed.Client
        Connected, with the workers asked for already running.

    Raises
    ------
    SpecError
        An unknown kind, a bad size, ``adapt`` where it does not apply, overrides for a
        cluster that takes none.
    QueueTimeout
        The queue did not start the workers in time; the message names the queue and lists
        its pending jobs.
    ClusterError
        A scheduler address that cannot be reached, or too few workers there.

    Examples
    --------
    >>> with make_cluster("slurm", workers=2, gpus=1, interface="lo") as client:  # doctest: +SKIP
    ...     ds = daskie.solve("E1", client=client)
    """
    if not (kind in KINDS or kind == LOCAL_CUDA or is_address(kind)):
        raise SpecError(f"cluster must be one of {', '.join(KINDS)} or a scheduler address "
                        f"such as 'tcp://host:8786' (or {LOCAL_CUDA}, with dask-cuda), got {kind!r}")
    size = size_for(workers, gpus, plan)
    wait = _wait_timeout(timeout)
    if adapt is not None:
        adapt = _check_adapt(adapt, kind, size)
    if kind == "local":
        if overrides:
            raise SpecError(f"the local cluster takes no jobqueue settings, got "
                            f"{', '.join(sorted(overrides))}")

        # One embedded cluster for solve(client=None) and --cluster local.
        with local_cluster(size.workers, gpus=size.gpus) as client:
            yield client
        return
    if kind == LOCAL_CUDA:
        with local_cuda_cluster(size.gpus or None, **overrides) as client:
            yield client
        return
    if kind in ("slurm", "pbs"):
        with _jobqueue(kind, size, adapt, wait, overrides) as client:
            yield client
        return
    if overrides:
        raise SpecError(f"a scheduler address takes no jobqueue settings, got "
                        f"{', '.join(sorted(overrides))}")
    with _connect(kind, None if workers is None and plan is None else size, wait) as client:
        yield client


def _wait_timeout(timeout):
    from daskie import config

    value = config.get("cluster.wait-timeout") if timeout is None else timeout
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        where = "timeout" if timeout is not None else "dask config daskie.cluster.wait-timeout"
        raise SpecError(f"{where} must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_adapt(adapt, kind, size):
    if kind not in ("slurm", "pbs"):
        raise SpecError(f"adapt applies to the batch queues (slurm, pbs), not to {kind!r}")
    if size.gpus:
        raise SpecError("adapt with GPU workers is not supported: jobqueue adapts a single "
                        "job template; use scale (adapt=None) with gpus")
    ok = (isinstance(adapt, tuple) and len(adapt) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in adapt)
          and 1 <= adapt[0] <= adapt[1])
    if not ok:
        raise SpecError(f"adapt must be (minimum, maximum) with 1 <= minimum <= maximum, "
                        f"got {adapt!r}")
    return adapt


def job_settings(kind: str, size: Size, overrides: dict) -> dict:
    """Keyword arguments for the jobqueue class of ``kind``: daskie's defaults where
    ``jobqueue.<kind>`` leaves a setting unset, the ``CPU`` resource, then ``overrides``.

    Parameters
    ----------
    kind : {"slurm", "pbs"}
    size : Size
    overrides : dict
        Keyword arguments from the caller; they win over everything.

    Returns
    -------
    dict
    """
    import dask.config
    import dask_jobqueue  # noqa: F401  (importing it registers the jobqueue.* defaults)

    from daskie import config

    queue_conf = dask.config.get(f"jobqueue.{kind}")
    own = config.get("cluster")
    kwargs = {}
    # Only where jobqueue's own configuration is silent: a site's YAML wins over daskie.
    for key in ("cores", "memory", "processes"):
        if queue_conf.get(key) is None and own.get(key) is not None:
            kwargs[key] = own[key]
    processes = overrides.get("processes", kwargs.get("processes", queue_conf.get("processes")))
    cores = overrides.get("cores", kwargs.get("cores", queue_conf.get("cores")))
    if processes not in (None, 1) and size.gpus:
        raise SpecError(f"GPU workers need one worker process per job (one GPU=1 tag per job), "
                        f"got processes={processes!r} in jobqueue.{kind} or the overrides")
    # jobqueue splits a job's cores over its processes; each worker declares its own threads
    threads = max(1, int(cores or 1) // int(processes or 1))
    extra = list(overrides.get("worker_extra_args", queue_conf.get("worker-extra-args") or []))
    kwargs["worker_extra_args"] = extra + ["--resources", f"CPU={threads}"]
    prologue = list(overrides.get("job_script_prologue",
                                  queue_conf.get("job-script-prologue") or []))
    kwargs["job_script_prologue"] = prologue + list(own.get("job-script-prologue") or [])
    kwargs.update({k: v for k, v in overrides.items()
                   if k not in ("worker_extra_args", "job_script_prologue")})
    return kwargs


def gpu_options(kind: str, options: dict, threads: int | None = None) -> dict:
    """The job options of a GPU worker: ``options`` (a CPU worker's) with ``GPU=1`` declared
    beside ``CPU=<threads>`` and the queue's GPU directives (``daskie.cluster.gpu-directives``)
    added to its job directives.

    Parameters
    ----------
    kind : {"slurm", "pbs"}
    options : dict
        Keyword arguments of the jobqueue Job class (:func:`job_settings`' output).
    threads : int, optional
        The worker's threads (its ``CPU`` resource); default: the ``CPU=`` that ``options``
        already declares.

    Returns
    -------
    dict
        A new dict; ``options`` is not changed.
    """
    import dask.config
    import dask_jobqueue  # noqa: F401  (importing it registers the jobqueue.* defaults)

    from daskie import config

    opts = copy.deepcopy(options)
    args = list(opts.get("worker_extra_args") or [])
    if "--resources" in args:
        at = args.index("--resources")
        declared = dict(pair.split("=") for pair in args[at + 1].split(","))
        threads = threads or int(float(declared.get("CPU", 1)))
        args[at:at + 2] = []
    threads = threads or 1
    opts["worker_extra_args"] = args + ["--resources", f"CPU={threads},GPU=1"]
    directives = opts.get("job_extra_directives")
    if directives is None:
        directives = dask.config.get(f"jobqueue.{kind}.job-extra-directives") or []
    gpu = (config.get("cluster.gpu-directives") or {}).get(kind) or []
    opts["job_extra_directives"] = list(directives) + list(gpu)
    return opts


@contextlib.contextmanager
def _jobqueue(kind, size, adapt, wait, overrides):
    # dask-jobqueue is imported here, not at module level: the rest of daskie never needs it.
    from distributed import Client

    if kind == "slurm":
        from dask_jobqueue import SLURMCluster as Cluster
    else:
        from dask_jobqueue import PBSCluster as Cluster
    if shutil.which(Cluster.job_cls.submit_command) is None:
        raise ClusterError(f"--cluster {kind}: {Cluster.job_cls.submit_command!r} is not on "
                           f"PATH; run on a login node of the {kind.upper()} cluster")
    kwargs = job_settings(kind, size, overrides)
    try:
        cluster = Cluster(**kwargs)
    except ValueError as exc:  # jobqueue's own checks (cores/memory missing, bad values)
        raise SpecError(f"jobqueue.{kind}: {exc}") from exc
    with cluster, Client(cluster) as client:
        # GPU jobs are put into the spec before scale() adds the CPU ones: scaling down pops
        # the newest entries, so CPU workers go first and the GPU ones stay.
        for k in range(size.gpus):
            spec = {**cluster.new_spec,
                    "options": gpu_options(kind, cluster.new_spec["options"])}
            cluster.worker_spec[f"{cluster._name}-gpu-{k}"] = spec
        if adapt is not None:
            cluster.adapt(minimum=adapt[0], maximum=adapt[1])
            need = adapt[0]
        else:
            cluster.scale(size.workers)
            need = size.workers
        _wait_for(client, cluster, kind, need, wait)
        yield client


def _wait_for(client, cluster, kind, n, timeout):
    try:
        client.wait_for_workers(n, timeout=timeout)
    except TimeoutError:
        have = len(client.scheduler_info(n_workers=-1)["workers"])
        queue = cluster.new_spec["options"].get("queue") or "the default queue"
        ids = [j.job_id for j in cluster.workers.values() if getattr(j, "job_id", None)]
        pending = _queue_listing(kind, ids)
        raise QueueTimeout(
            f"{kind} queue {queue!r} started {have} of {n} workers in {timeout:g} s "
            f"(setting daskie.cluster.wait-timeout); its jobs (cancelled now):\n{pending}",
            queue, pending) from None


def _queue_listing(kind, job_ids) -> str:
    """What the queue says about ``job_ids`` (its own command's output), or why not."""
    cmd = list(_STATUS[kind])
    if kind == "slurm":
        cmd.append(",".join(job_ids) if job_ids else "0")
    else:
        cmd += job_ids
    if not job_ids:
        return "(no job was accepted by the queue)"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({' '.join(cmd[:1])} failed: {exc})"
    text = (out.stdout or out.stderr).strip()
    return text or f"(jobs {', '.join(job_ids)} are no longer listed by {cmd[0]})"


@contextlib.contextmanager
def _connect(address, size, wait):
    from distributed import Client

    try:
        client = Client(address, timeout=wait)
    except OSError as exc:
        raise ClusterError(f"no Dask scheduler answered at {address} within {wait:g} s: "
                           f"{exc}") from None
    with client:
        if size is not None:
            try:
                client.wait_for_workers(size.workers, timeout=wait)
            except TimeoutError:
                info = client.scheduler_info(n_workers=-1)["workers"]
                raise ClusterError(f"the scheduler at {address} has {len(info)} of "
                                   f"{size.workers} workers after {wait:g} s") from None
        if size is not None and size.gpus:
            info = client.scheduler_info(n_workers=-1)["workers"].values()
            gpu = sum((w.get("resources") or {}).get("GPU", 0) >= 1 for w in info)
            if gpu < size.gpus:
                raise ClusterError(f"the scheduler at {address} has {gpu} workers with "
                                   f"resource GPU, {size.gpus} are needed: start them with "
                                   f"dask worker {address} --resources GPU=1")
        yield client
