"""Collectives for Dask tasks that run at the same time on different workers.

* :class:`Group` — one rank of a gloo communicator: ``allreduce`` (methods ``"ring"``,
  ``"ps"``, ``"tree"``, ``"gloo"``; fp16 compression with error feedback; buckets),
  ``allreduce_many``, ``allgather``, ``broadcast``, ``send``/``recv``, ``barrier``; every
  operation bounded by a timeout and recorded in ``Group.log``.
* :func:`run_group` — bootstrap a group through Dask (one pinned task per rank, a free port
  chosen at run time) and run an SPMD function on it; threads of this process with
  ``client="sync"``; ``reuse=KEY`` keeps the group open for the next call
  (:func:`release_groups` closes it); :func:`submit_group` and :func:`gather_group` are its
  two halves, for chains of calls whose ranks take an earlier call's futures.
* :func:`local_groups` — a group of threads in this process (tests, the serial path).
"""

from daskie.collectives.group import (METHODS, Group, GroupError, free_port, local_groups,
                                      run_threads)
from daskie.collectives.spmd import (GroupCall, cancel_group, cluster_workers, gather_group,
                                     group_workers, release_groups, run_group, submit_group)

__all__ = ["Group", "GroupError", "METHODS", "run_group", "submit_group", "gather_group",
           "cancel_group", "GroupCall", "group_workers", "cluster_workers", "release_groups",
           "local_groups",
           "run_threads", "free_port"]
