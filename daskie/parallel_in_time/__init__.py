"""Parallel-in-time building blocks: Parareal with user propagators (serial or Dask futures)."""

from daskie.parallel_in_time.parareal import parareal, parareal_futures

__all__ = ["parareal", "parareal_futures"]
