"""Operator-learning data sets: many solved instances of one family in one zarr group.

Layout at ``path`` (zarr format 2, consolidated metadata, so ``xarray.open_zarr(path)``
opens it)::

    params    (instance, param)   each instance's parameters (field coefficients, lambda)
    f         (instance, sensor)  f at the sensor points (the branch's input)
    mu        (instance, query)   the reference solution at the query points
    solve_s   (instance)          wall seconds of the instance's reference solve
    residual  (instance)          max residual of the reference's discrete system
    sensor_x  (sensor, dim)       sensor coordinates
    query_x   (query, dim)        query coordinates
    done      (block)             True once block k's instances are all on disk
    .zattrs                       spec (JSON: family, seed, sizes, points), provenance

The instances are written in blocks of ``block`` rows, one zarr chunk each (``mu`` also cut
along the query points into chunks of ``point_chunk`` points when the spec says so: a
trunk-parallel rank whose points are whole chunks then reads only its own bytes); a block's data
are written before its ``done`` flag, so a generation stopped at any moment (an exception, a
killed process) leaves every flagged block complete, and :meth:`OperatorDataset.pending`
names exactly the blocks still to compute: resuming continues where it stopped and
recomputes nothing.
"""

from __future__ import annotations

import datetime
import json
import os

import numpy as np
import xarray as xr
import zarr

from daskie.errors import SpecError, StorePathError

__all__ = ["OperatorDataset"]

_ZARR_FORMAT = 2
_PER_INSTANCE = ("params", "f", "mu", "solve_s", "residual")


def _spec_json(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


class OperatorDataset:
    """A data set of solved instances on disk (see the module docstring for the layout).

    Use :meth:`create` (new, or continue one with the same spec) or :meth:`open`.

    Attributes
    ----------
    path : str
        Absolute path of the zarr group.
    spec : dict
        What the data set holds (family description, seed, sizes, block).
    """

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        self._group = zarr.open_group(self.path, mode="r+", zarr_format=_ZARR_FORMAT,
                                      use_consolidated=False)
        attrs = dict(self._group.attrs)
        if "daskie_dataset" not in attrs:
            raise StorePathError(f"{self.path} is not a daskie operator data set (no "
                                 "daskie_dataset attribute)")
        self.spec = json.loads(attrs["daskie_dataset"])

    # --- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, path, spec: dict, sensors, query, n_params: int) -> "OperatorDataset":
        """A new data set at ``path``, or the one there if it was created with the same
        ``spec`` (to continue it).

        Parameters
        ----------
        path : str or path-like
        spec : dict
            JSON-serialisable; must hold ``n`` (instances) and ``block`` (instances per block);
            ``point_chunk`` (optional): query points per chunk of ``mu`` (default: all).
        sensors, query : ndarray of shape (m, d), (q, d)
        n_params : int

        Raises
        ------
        SpecError
            When a data set with another spec is at ``path`` (it is never overwritten).
        StorePathError
            When something else is at ``path``.
        """
        path = os.path.abspath(os.fspath(path))
        if os.path.exists(path):
            try:
                old = cls(path)
            except (StorePathError, FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
                raise StorePathError(f"{path} exists and is not a daskie operator data set: "
                                     "choose another path") from exc
            if _spec_json(old.spec) != _spec_json(spec):
                keys = set(spec) | set(old.spec)
                diff = sorted(k for k in keys if old.spec.get(k) != spec.get(k))
                raise SpecError(f"the data set at {path} was made with other settings "
                                f"(differs in {diff}); use another path or the same settings "
                                "to continue it")
            return old
        n, block = int(spec["n"]), int(spec["block"])
        sensors, query = np.asarray(sensors, dtype=float), np.asarray(query, dtype=float)
        n_blocks = -(-n // block)
        nan = np.nan
        ds = xr.Dataset(
            {"params": (("instance", "param"), np.full((n, n_params), nan)),
             "f": (("instance", "sensor"), np.full((n, len(sensors)), nan)),
             "mu": (("instance", "query"), np.full((n, len(query)), nan)),
             "solve_s": (("instance",), np.full(n, nan)),
             "residual": (("instance",), np.full(n, nan)),
             "sensor_x": (("sensor", "dim"), sensors),
             "query_x": (("query", "dim"), query),
             "done": (("block",), np.zeros(n_blocks, dtype=bool))})
        descriptions = {
            "params": "instance parameters: random-field coefficients, then lambda",
            "f": "right-hand side f at the sensor points (the branch input)",
            "mu": "reference solution mu at the query points",
            "solve_s": "wall seconds of the instance's reference (Nystrom) solve",
            "residual": "max residual of the reference's discrete system",
            "sensor_x": "sensor coordinates", "query_x": "query coordinates",
            "done": "True once every instance of the block is written"}
        for name, text in descriptions.items():
            ds[name].attrs["description"] = text
        ds.attrs.update({"daskie_dataset": _spec_json(spec),
                         "created_utc": datetime.datetime.now(datetime.timezone.utc)
                         .isoformat(timespec="seconds"),
                         "path": path})
        chunks = {name: {"chunks": (block,) + ds[name].shape[1:]} for name in _PER_INSTANCE}
        point_chunk = spec.get("point_chunk")
        if point_chunk is not None:
            if isinstance(point_chunk, bool) or not isinstance(point_chunk, int) \
                    or point_chunk < 1:
                raise SpecError(f"point_chunk must be a positive int (query points per chunk "
                                f"of mu), got {point_chunk!r}")
            chunks["mu"] = {"chunks": (block, min(int(point_chunk), len(query)))}
        chunks["done"] = {"chunks": (1,)}
        ds.to_zarr(path, mode="w-", zarr_format=_ZARR_FORMAT, consolidated=True, encoding=chunks)
        return cls(path)

    @classmethod
    def open(cls, path) -> "OperatorDataset":
        """The data set at ``path``.

        Raises
        ------
        StorePathError
            When nothing, or something else, is there.
        """
        path = os.path.abspath(os.fspath(path))
        if not os.path.exists(path):
            raise StorePathError(f"no operator data set at {path}")
        try:
            return cls(path)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise StorePathError(f"{path} is not a daskie operator data set") from exc

    # --- state ------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Instances of the data set."""
        return int(self.spec["n"])

    @property
    def block(self) -> int:
        """Instances per block (one zarr chunk, one unit of generation)."""
        return int(self.spec["block"])

    def block_range(self, k: int) -> tuple[int, int]:
        """Instances ``[lo, hi)`` of block ``k``."""
        return k * self.block, min(self.n, (k + 1) * self.block)

    def done(self) -> np.ndarray:
        """Boolean flag of every block."""
        return np.asarray(self._group["done"][:], dtype=bool)

    def pending(self) -> list[int]:
        """Blocks not yet on disk, in order."""
        return [int(k) for k in np.flatnonzero(~self.done())]

    @property
    def complete(self) -> bool:
        """Whether every block is on disk."""
        return bool(self.done().all())

    @property
    def point_chunk(self) -> int:
        """Query points per chunk of ``mu`` (all of them unless the data set was made with
        ``point_chunk``)."""
        return int(self._group["mu"].chunks[1])

    @property
    def sensors(self) -> np.ndarray:
        """Sensor coordinates ``(m, d)``."""
        return np.asarray(self._group["sensor_x"][:])

    @property
    def query(self) -> np.ndarray:
        """Query coordinates ``(q, d)``."""
        return np.asarray(self._group["query_x"][:])

    # --- data -------------------------------------------------------------------------------
    def write_block(self, k: int, values: dict) -> None:
        """Write block ``k`` (``values``: ``params``, ``f``, ``mu``, ``solve_s``, ``residual``
        for its instances), then flag it done."""
        lo, hi = self.block_range(k)
        for name in _PER_INSTANCE:
            v = np.asarray(values[name], dtype=float)
            if v.shape[0] != hi - lo:
                raise ValueError(f"block {k}: {name} has {v.shape[0]} rows, the block {hi - lo}")
            self._group[name][lo:hi] = v
        # the flag last: a block flagged done is complete on disk
        self._group["done"][k] = True

    def read(self, lo: int, hi: int, names=("params", "f", "mu"), points=None) -> dict:
        """Arrays ``names`` of instances ``[lo, hi)`` (only those rows are read); with
        ``points=(a, b)`` only query points ``[a, b)`` of ``mu`` (a trunk-parallel rank's
        slice).

        Raises
        ------
        SpecError
            When some of those instances are not generated yet.
        """
        if not 0 <= lo <= hi <= self.n:
            raise SpecError(f"instances [{lo}, {hi}) are outside the data set's 0..{self.n}")
        done = self.done()
        blocks = range(lo // self.block, -(-hi // self.block))
        missing = [k for k in blocks if not done[k]]
        if missing:
            raise SpecError(f"the data set at {self.path} lacks blocks {missing[:5]}"
                            f"{' ...' if len(missing) > 5 else ''} (instances [{lo}, {hi}) are "
                            "not all generated): finish generating it first")
        if points is None:
            return {name: np.asarray(self._group[name][lo:hi]) for name in names}
        a, b = (int(v) for v in points)
        q = self._group["mu"].shape[1]
        if not 0 <= a < b <= q:
            raise SpecError(f"query points [{a}, {b}) are outside the data set's 0..{q}")
        return {name: np.asarray(self._group[name][lo:hi, a:b] if name == "mu"
                                 else self._group[name][lo:hi]) for name in names}

    def to_xarray(self) -> xr.Dataset:
        """The data set as a lazy xarray Dataset (``xarray.open_zarr``)."""
        return xr.open_zarr(self.path)
