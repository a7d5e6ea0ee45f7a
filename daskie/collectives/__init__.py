"""Collectives for tasks that run at the same time on different workers.

* :class:`Group` — one rank of a gloo communicator: ``allreduce`` (methods ``"ring"``,
  ``"ps"``, ``"tree"``, ``"gloo"``; fp16 compression with error feedback; buckets),
  ``allreduce_many``, ``allgather``, ``broadcast``, ``send``/``recv``, ``barrier``; every
  operation bounded by a timeout and recorded in ``Group.log``.
* :func:`local_groups` / :func:`run_threads` — a group of threads in this process (tests, the
  in-process path of the SPMD runner).

Groups are bootstrapped on a Dask cluster by :mod:`daskie.runtime.groups`
(:func:`daskie.runtime.run_group`: one pinned task per rank, a free port chosen at run time).
This package knows nothing of Dask.
"""

from daskie.collectives.group import (METHODS, Group, GroupError, free_port, local_groups,
                                      run_threads)

__all__ = ["Group", "GroupError", "METHODS", "local_groups", "run_threads", "free_port"]
