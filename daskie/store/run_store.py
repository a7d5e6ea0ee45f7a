"""One training run as one zarr group, written through xarray.

Layout of a run at ``path`` (zarr format 2, metadata consolidated so that a plain
``xarray.open_zarr(path)`` opens it without warnings)::

    path/                            root group
        .zattrs                      run metadata (write_meta), provenance (daskie and torch
                                     versions, created_utc, the absolute path) and, after
                                     write_result, the summary and finished_utc
        mu, exact, error, x0, ...    the solution (write_result), with long_name/description
                                     (and units where the problem gives them)
        record, history_<key>        the training history on dim "record"; every variable's
                                     description says what the field means
        params_<name>                final flat parameters of sub-model <name>
        checkpoints/
            window_00007/            one group per training window (write_checkpoint)
                state_00000, ...     the arrays of the window's state tree (daskie.store.checkpoint)
                record, history_<key>  the records produced in this window
                .zattrs              window, schema_version, structure (JSON), complete

**Checkpoints are data.** A checkpoint is a state tree of arrays and plain values described by
JSON (:mod:`daskie.store.checkpoint`); nothing in a store is ever unpickled or executed, and a
checkpoint of another schema version is refused with :class:`~daskie.errors.CheckpointError`.

**Every checkpoint write is atomic.** A checkpoint is written into a hidden directory beside
the others (``checkpoints/.window_00007.writing-*``) and renamed into place only once all of
its arrays are on disk, so a process killed in the middle of a write leaves the previous
checkpoint as the latest one. (Rewriting a window that already exists moves the old one aside
first; a crash in that instant leaves the window before it as the latest.) The consolidated
metadata is replaced by a rename too.

**One writer per store.** Whoever writes a store holds its lock, ``fcntl.flock`` on
``.NAME.lock`` beside it (:mod:`daskie.store.lock`): ``mode="w-"`` and ``"w"`` from opening,
``mode="a"`` from :meth:`RunStore.lock` or its first write (so that readers never wait). A
second writer gets :class:`~daskie.errors.StoreLockedError` naming the store and the holder's
pid; the operating system drops the lock when the holder's process ends, however it ends.

**Runs are transactional.** A new run (``mode="w-"`` or ``"w"``) is written into a staging
directory beside the target (``.NAME.staging-PID-*`` in the same directory, hence the same file
system). Where nothing is at the target, the run takes its place once it has *something worth
keeping*: **at least one complete checkpoint, or a written result**. Where a run is at the
target (an overwrite), that run stays **until the new one has its result**: at its first
checkpoint the new run moves to ``.NAME.pending`` beside the target, where ``mode="a"``
(``resume=True``) continues it, and its result replaces the old run in one rename. A new
overwrite discards such an unfinished one. :meth:`RunStore.close` (or leaving the ``with``
block) ends the transaction and sets :attr:`RunStore.outcome`:

* ``"complete"`` — a result is in the store at ``path``;
* ``"resumable"`` — the store at ``path`` holds at least one complete checkpoint and no
  result: ``resume=True`` / ``--resume`` continues it;
* ``"previous-run-kept"`` — the new run kept nothing, and the run that was at ``path`` before
  is untouched;
* ``"previous-run-kept-resumable"`` — an overwrite stopped before its result: the previous run
  at ``path`` is untouched and the new one is kept in ``.NAME.pending``, resumable;
* ``"nothing-written"`` — the new run kept nothing and nothing is left at ``path`` (no
  metadata-only shell store; directories created for it are removed again).

**Damaged checkpoints.** Resuming reads the records of every checkpoint and the state of the
newest: a chunk that cannot be read (bit rot, a truncated copy) makes the run resume from the
newest checkpoint before it whose records and state, and the records of all before it, can be
read, with one :class:`~daskie.errors.CheckpointWarning` naming the damaged checkpoint and the
skipped windows (:meth:`RunStore.latest_checkpoint`). Arrays that only pickle could read and
other schema versions are refused (:class:`~daskie.errors.CheckpointError`), never skipped.

Zarr format 2 is used because format 3 has no specification for fixed-width unicode strings
and no consolidated metadata (zarr warns about both).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Mapping

import numpy as np
import xarray as xr
import zarr

from daskie.errors import (CheckpointError, CheckpointWarning, SpecError, StoreExistsError,
                           StoreMissingError, StorePathError, UnsafeStoreError)
from daskie.records import FIELDS
from daskie.store.checkpoint import SCHEMA_VERSION, Checkpoint, decode_tree, encode_tree
from daskie.store.lock import StoreLock

__all__ = ["RunStore", "history_to_dataset", "records_from_dataset", "OUTCOMES"]

#: The values of :attr:`RunStore.outcome` after :meth:`RunStore.close` (module docstring).
OUTCOMES = ("complete", "resumable", "previous-run-kept", "previous-run-kept-resumable",
            "nothing-written")

_ZARR_FORMAT = 2
_HISTORY = "history_"
_PARAMS = "params_"
_CHECKPOINTS = "checkpoints"
_WINDOW = re.compile(r"^window_(\d+)$")
_STATE = "state"
# What a write leaves beside its target until it finishes: .NAME.<what>-<pid>-<8 hex>.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<what>writing|staging|replaced)-(?P<pid>\d+)-[0-9a-f]{8}$")
_META_FILES = (".zgroup", ".zattrs", ".zarray")
# Units of the common record fields (descriptions come from daskie.records.FIELDS).
_UNITS = {"step_s": "s", "wall_s": "s", "elapsed_s": "s", "window_s": "s", "sync_s": "s",
          "peak_rss_mb": "MiB", "peak_cuda_mb": "MiB", "t_start": "s",
          "t_end": "s"}  # (not "s since 1970-...": xarray would decode them as datetimes)
# Columns whose values were ints or bools but had gaps are stored as float64 with NaN; this
# variable attribute remembers the original type so that reading gives the same records back.
_RECORD_TYPE = "record_type"


def history_to_dataset(records) -> xr.Dataset:
    """Training records as a dataset on dim ``"record"``.

    Parameters
    ----------
    records : iterable of dict
        Flat records (values: int, float, bool, str or None). Keys may differ between
        records; the dataset holds the union of keys.

    Returns
    -------
    xarray.Dataset
        One variable ``history_<key>`` per key and the coordinate ``record`` (0, 1, ...).
        Strings are fixed-width unicode (``"<U.."``) filled with ``""`` where a record lacks
        the key; numbers are float64 filled with NaN where a record lacks the key (ints and
        bools keep their dtype when every record has them).

    Raises
    ------
    SpecError
        A record that is not a dict, a key that is not a string or contains ``"/"``, a value
        that is not a plain scalar, or a key with both strings and numbers.
    """
    records = list(records)
    keys: dict[str, None] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise SpecError(f"records[{i}] must be a dict, got {type(rec).__name__}")
        for key in rec:
            _check_name(key, f"records[{i}] key")
            keys.setdefault(key)
    data_vars = {}
    for key in keys:
        values = [_plain_scalar(rec.get(key), f"records[{i}][{key!r}]")
                  for i, rec in enumerate(records)]
        column = _column(key, values)
        column.attrs.update(_field_attrs(key))
        data_vars[_HISTORY + key] = column
    record = xr.Variable("record", np.arange(len(records), dtype=np.int64),
                         attrs={"long_name": "record index",
                                "description": "training records in the order they were "
                                               "written; see each history_* variable"})
    return xr.Dataset(data_vars, coords={"record": record})


def _field_attrs(key: str) -> dict:
    """``long_name``, ``description`` (and ``units``) of the history field ``key``."""
    if key in FIELDS:
        description = FIELDS[key]
    elif key.startswith("loss_"):
        description = f"loss (mean squared residual) of the residual block {key[5:]!r}"
    else:
        description = ("field recorded by the strategy or optimizer (not one of the common "
                       "fields of daskie.records.FIELDS)")
    attrs = {"long_name": key.replace("_", " "), "description": description}
    if key in _UNITS:
        attrs["units"] = _UNITS[key]
    return attrs


def _column(key, values) -> xr.Variable:
    present = [v for v in values if v is not None]
    complete = len(present) == len(values)
    if present and all(isinstance(v, str) for v in present):
        width = max(1, *(len(v) for v in present))
        return xr.Variable("record", np.array([v or "" for v in values], dtype=f"<U{width}"))
    if any(isinstance(v, str) for v in present):
        raise SpecError(f"records key {key!r} mixes strings and numbers; use one type per key")
    if present and all(isinstance(v, bool) for v in present):
        kind = "bool"
    elif present and all(isinstance(v, int) for v in present):
        kind = "int"
    else:
        kind = "float"
    if complete and kind != "float":
        return xr.Variable("record", np.array(values, dtype=bool if kind == "bool" else np.int64))
    data = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    attrs = {} if kind == "float" else {_RECORD_TYPE: kind}
    return xr.Variable("record", data, attrs=attrs)


def records_from_dataset(ds: xr.Dataset) -> list[dict]:
    """Inverse of :func:`history_to_dataset`; NaN and ``""`` read as a missing key."""
    records: list[dict] = [{} for _ in range(ds.sizes.get("record", 0))]
    for name, var in ds.data_vars.items():
        if not str(name).startswith(_HISTORY):
            continue
        key = str(name)[len(_HISTORY):]
        values = var.values
        kind = var.attrs.get(_RECORD_TYPE, {"U": "str", "b": "bool", "i": "int"}.get(
            values.dtype.kind, "float"))
        convert = {"str": str, "bool": bool, "int": int, "float": float}[kind]
        for rec, value in zip(records, values.tolist()):
            if value == "" or (isinstance(value, float) and math.isnan(value)):
                continue
            rec[key] = convert(value)
    return records


def _plain_scalar(value, where):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biufU":
        return value.item()
    raise SpecError(f"{where} must be an int, float, bool or str, got {type(value).__name__}")


def _check_name(name, where):
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise SpecError(f"{where} must be a non-empty string without '/' or '\\', got {name!r}")


def _json_attrs(attrs, where) -> dict:
    """``attrs`` with numpy scalars/arrays and tuples made plain; checked JSON-serialisable."""
    if not isinstance(attrs, Mapping):
        raise SpecError(f"{where} must be a dict, got {type(attrs).__name__}")

    def plain(value, at):
        if isinstance(value, Mapping):
            for k in value:
                if not isinstance(k, str):
                    raise SpecError(f"{at} has a non-string key {k!r}; JSON keys are strings")
            return {k: plain(v, f"{at}[{k!r}]") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, f"{at}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, np.ndarray):
            return plain(value.tolist(), at)
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise SpecError(f"{at} must be JSON-serialisable, got {type(value).__name__}")

    return plain(attrs, where)


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _provenance(path: str) -> dict:
    """Root attributes that let a reader of the store alone know where it came from."""
    import torch

    return {"daskie_version": _daskie_version(), "torch_version": torch.__version__,
            "xarray_version": xr.__version__, "zarr_version": zarr.__version__,
            "created_utc": _utc_now(), "path": path}


def _daskie_version() -> str:
    """daskie's version from the package metadata (not ``import daskie``: the store sits
    below the package's entry points)."""
    try:
        return importlib.metadata.version("daskie")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def _first_existing(path: str) -> str:
    """``path`` or its nearest ancestor that exists."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _check_writable_location(path: str) -> None:
    """Raise :class:`StorePathError` when a store could not be created at ``path``."""
    parent = os.path.dirname(path)
    ancestor = _first_existing(parent)
    if not os.path.isdir(ancestor):
        raise StorePathError(f"cannot create a store at {path!r}: {ancestor!r} is a file, "
                             f"not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise StorePathError(f"cannot create a store at {path!r}: no write permission in "
                             f"{ancestor!r}")
    try:
        readonly = bool(os.statvfs(ancestor).f_flag & os.ST_RDONLY)
    except OSError:
        readonly = False
    if readonly:
        raise StorePathError(f"cannot create a store at {path!r}: {ancestor!r} is on a "
                             f"read-only file system")


# Codecs that only transform bytes or numbers; anything else (pickle, msgpack, vlen, JSON
# object codecs) could build arbitrary Python objects on reading, so such an array is refused.
_SAFE_COMPRESSORS = {"blosc", "zstd", "zlib", "gzip", "bz2", "lzma", "lz4"}
_SAFE_FILTERS = {"delta", "fixedscaleoffset", "quantize", "bitround", "shuffle", "astype"}


def _check_plain_arrays(directory: str, error: type, what: str, skip: tuple = ()) -> None:
    """Raise ``error`` if an array under ``directory`` is not plain numbers or strings.

    zarr format 2 can store object arrays whose chunks are pickles; reading one would run
    code chosen by whoever wrote the store. daskie never writes such arrays, so one found
    here means a store from elsewhere or a tampered one.
    """
    for here, dirs, files in os.walk(directory):
        top = here == directory
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (top and d in skip)]
        if ".zarray" not in files:
            continue
        name = os.path.relpath(here, directory)
        try:
            with open(os.path.join(here, ".zarray")) as fh:
                meta = json.load(fh)
            dtype = meta.get("dtype")
            kind = np.dtype(dtype).kind if isinstance(dtype, str) else "V"
            compressor = meta.get("compressor")
            filters = meta.get("filters") or []
            ok = (kind in "biufcUS"
                  and (compressor is None or compressor.get("id") in _SAFE_COMPRESSORS)
                  and all(isinstance(f, dict) and f.get("id") in _SAFE_FILTERS for f in filters))
        except (OSError, ValueError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise error(f"{what}: array {name!r} is not plain numbers or strings (object dtype, "
                        f"pickle or another code-running codec, or unreadable metadata); "
                        f"daskie refuses to read it")


class _Damaged(Exception):
    """A checkpoint's data cannot be read (the cause is the reader's error)."""


def _one_line(exc) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """One run = one zarr store at ``path`` (a local directory), written as a transaction.

    ``xarray.open_zarr(path)`` reads the main dataset (solution, history, final parameters,
    metadata and summary as attributes, every variable described) with nothing else. See the
    module docstring for the layout, the atomicity of checkpoints, the write lock and the
    transaction: a new run is staged beside ``path``; it takes an empty ``path`` once it holds
    a complete checkpoint, and replaces a run there only once it holds its result.

    Use it as a context manager; leaving the block by an exception counts as a failure::

        with RunStore("e1.zarr", mode="w") as store:
            store.write_meta(meta)
            store.write_checkpoint(Checkpoint(0, outputs, records))
            store.write_result(solution, history, summary)
        store.outcome   # "complete"; after a failure "resumable", "previous-run-kept"
                        # or "nothing-written", and store.message says it in words

    Parameters
    ----------
    path : str or os.PathLike
        Directory of the store. Missing parent directories are created (and removed again
        if the run leaves nothing).
    mode : {"w-", "w", "a"}
        ``"w-"`` starts a new run and refuses if anything exists at ``path``; ``"w"`` starts
        a new run that replaces the run store at ``path`` once it has its result (it refuses
        anything that is not a run store or an empty directory); ``"a"`` opens an existing
        store to read or resume it (writes go straight into it, each checkpoint atomic), or
        the unfinished overwrite kept beside it (``.NAME.pending``) if there is one. ``"w-"``
        and ``"w"`` hold the store's write lock from here; ``"a"`` from :meth:`lock`.

    Attributes
    ----------
    path : str
        The absolute path of the store (where the run is, or will be once kept).
    outcome : str or None
        None while open; after :meth:`close` one of :data:`OUTCOMES`.

    Raises
    ------
    StoreExistsError
        ``mode="w-"`` and something exists at ``path``.
    StoreMissingError (a FileNotFoundError)
        ``mode="a"`` and nothing exists at ``path``.
    StoreLockedError
        ``mode="w-"`` or ``"w"`` and another process writes the store (its pid is named).
    StorePathError (a SpecError)
        The store cannot be created at ``path``: under a file, without write permission, on a
        read-only or virtual file system (``/proc``).
    SpecError
        An unknown mode, a path that is not a string or path; ``mode="a"`` or ``"w"`` on
        something that is not a run store.
    """

    def __init__(self, path, mode: str = "w-"):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path):
            # A process killed while replacing a run may have left the old one aside.
            parent, name = os.path.split(os.path.abspath(os.fspath(path)))
            self._remove_stale(parent, only=name)
        self.check(path, mode)
        self.path = os.path.abspath(os.fspath(path))
        self.mode = mode
        self.outcome: str | None = None
        self._result_written = False
        self._made: list[str] = []
        self._lock: StoreLock | None = None
        self._staged = False   # writes go to a staging directory of this process
        self._pending = False  # writes go to the unfinished overwrite beside the path
        self._replaces = False  # a run is at the path; it stays until this run has a result
        self._resume = None    # (checkpoint, history, skipped windows) once scanned
        if mode == "a":
            self._dir = self._pending_path if self.exists(self._pending_path) else self.path
            self._pending = self._dir != self.path
            self._remove_stale(os.path.join(self._dir, _CHECKPOINTS))
            return
        parent, name = os.path.split(self.path)
        self._made = self._make_parents(parent)
        try:
            self._lock = StoreLock(self.path)
        except BaseException:
            self._remove_made()
            raise
        self._dir = os.path.join(parent, f".{name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self._staged = True
        self._replaces = self.exists(self.path)
        try:
            if mode == "w":  # overwriting starts again: an unfinished overwrite goes
                shutil.rmtree(self._pending_path, ignore_errors=True)
            zarr.open_group(self._dir, mode="w-", zarr_format=_ZARR_FORMAT)
            self._root("r+").attrs.update(_provenance(self.path))
            self._consolidate()
        except BaseException as exc:
            self._discard()
            self._release()
            self._remove_made()
            if isinstance(exc, OSError):
                raise StorePathError(f"cannot create a store at {self.path!r}: "
                                     f"{exc.strerror or exc}") from exc
            raise

    def __repr__(self):
        return f"RunStore({self.path!r}, mode={self.mode!r})"

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close(failed=exc_type is not None)
        return False

    @classmethod
    def check(cls, path, mode: str = "w-", *, probe: bool = False) -> None:
        """Raise the error ``RunStore(path, mode)`` would raise.

        Parameters
        ----------
        path : str or os.PathLike
            The store's path.
        mode : {"w-", "w", "a"}
            As for :class:`RunStore`.
        probe : bool
            Also create and remove an empty directory beside ``path`` (in its nearest
            existing ancestor), which finds what only trying can: virtual file systems such
            as ``/proc``. Without it, nothing on disk is touched.
        """
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise SpecError(f"store must be a path (str or os.PathLike), got {path!r}")
        path = os.fspath(path)
        if mode not in ("w-", "w", "a"):
            raise SpecError(f"mode must be 'w-' (create), 'w' (overwrite) or 'a' (resume), "
                            f"got {mode!r}")
        taken = os.path.lexists(path)
        pending = cls.pending_of(path)
        if mode == "a" and not taken and cls.exists(pending):
            path = pending  # an unfinished overwrite whose previous run is gone: resume it
            taken = True
        if mode == "a":
            if not taken:
                raise StoreMissingError(
                    f"no run store at {path!r} to resume; drop resume=True / --resume "
                    f"to start a new run there")
            if not cls.exists(path):
                raise SpecError(f"{path!r} exists but is not a daskie run store "
                                f"(no zarr group); cannot resume from it")
            if not os.access(path, os.W_OK | os.X_OK):
                raise StorePathError(f"cannot resume the store at {path!r}: no write permission")
            return
        if taken and mode == "w-":
            raise StoreExistsError(
                f"a run store (or other file) exists at {path!r}; pass overwrite=True / "
                f"--overwrite to replace it, or resume=True / --resume to continue it")
        if mode == "w-" and os.path.lexists(pending):
            raise StoreExistsError(
                f"an unfinished run that was to replace {path!r} is kept beside it ({pending!r}); "
                f"pass resume=True / --resume to continue it, or overwrite=True / --overwrite "
                f"to start again")
        if taken and not (cls.exists(path) or (os.path.isdir(path) and not os.path.islink(path)
                                               and not os.listdir(path))):
            raise SpecError(f"{path!r} exists and is not a daskie run store; overwrite "
                            f"only replaces run stores: choose another path or remove it")
        absolute = os.path.abspath(path)
        _check_writable_location(absolute)
        if probe:
            where = _first_existing(os.path.dirname(absolute))
            trial = os.path.join(where, f".daskie-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                os.mkdir(trial)
                os.rmdir(trial)
            except OSError as exc:
                raise StorePathError(f"cannot create a store at {path!r}: {exc.strerror or exc} "
                                     f"(in {where!r})") from exc

    @staticmethod
    def exists(path) -> bool:
        """Whether a run store (a zarr group) is at ``path``."""
        return os.path.isfile(os.path.join(os.fspath(path), ".zgroup"))

    @staticmethod
    def pending_of(path) -> str:
        """Where an overwrite of ``path`` keeps its run until it finishes: ``.NAME.pending``."""
        parent, name = os.path.split(os.path.abspath(os.fspath(path)))
        return os.path.join(parent, f".{name}.pending")

    @property
    def _pending_path(self) -> str:
        return self.pending_of(self.path)

    @property
    def pending(self) -> bool:
        """Whether this run is an overwrite kept beside :attr:`path` until it has a result
        (the previous run stays at :attr:`path` until then)."""
        return self._pending

    def lock(self) -> "RunStore":
        """Take the store's write lock: one writer per store, across processes.

        ``mode="w"`` and ``"w-"`` take it when opening; ``mode="a"`` takes it here or at its
        first write, so that readers of a store (reports, metrics) never wait for a run.
        Call it first when resuming, before reading the resume point. The lock is
        ``fcntl.flock`` on ``.NAME.lock`` beside the store (:mod:`daskie.store.lock`): the
        operating system releases it when the process ends, so a killed run leaves no stale
        lock. Taking it again does nothing.

        Returns
        -------
        RunStore
            This store.

        Raises
        ------
        StoreLockedError
            Another process writes the store; the message names it and its pid.
        """
        self._open_check()
        if self._lock is not None and self._lock.held:
            return self
        self._lock = StoreLock(self.path)
        # What is at the path may have changed before the lock was ours: look again.
        self._pending = self.exists(self._pending_path)
        where = self._pending_path if self._pending else self.path
        if where != self._dir:
            self._dir, self._resume = where, None
        if self._pending and "finished_utc" in self.read_meta():
            self._keep(result=True)  # a finished overwrite stopped just before it moved in
        return self

    # -- the transaction ------------------------------------------------------------------

    @property
    def has_result(self) -> bool:
        """Whether the store holds a result (written now or by an earlier session)."""
        return self._result_written or "finished_utc" in self.read_meta()

    def close(self, failed: bool = False) -> str:
        """End the run's transaction and say what is left at :attr:`path`.

        Parameters
        ----------
        failed : bool
            Whether the run failed (or was interrupted). Only matters for what the outcome
            is called: a staged run that kept nothing is discarded either way.

        Returns
        -------
        str
            :attr:`outcome`, one of :data:`OUTCOMES` (module docstring). Closing again
            returns the same outcome.
        """
        if self.outcome is not None:
            return self.outcome
        try:
            if self._staged:
                self._discard()
                self.outcome = "previous-run-kept" if self.exists(self.path) else "nothing-written"
            elif self._pending and not self.has_result:
                self.outcome = "previous-run-kept-resumable"
            elif self.has_result:
                self.outcome = "complete"
            else:
                self.outcome = "resumable"
        finally:
            self._release()
            self._remove_made()
        return self.outcome

    @property
    def message(self) -> str:
        """The outcome in words, for a message to the user (e.g. after a failure)."""
        if self.outcome is None:
            return f"the run store at {self.path} is still open"
        if self.outcome == "complete":
            return f"the finished run is in {self.path}"
        if self.outcome == "resumable":
            windows = self._complete_windows()
            last = f"last complete window {windows[-1][0]}; " if windows else ""
            return (f"a resumable store is kept at {self.path} ({last}resume=True / --resume "
                    f"continues it)")
        if self.outcome == "previous-run-kept":
            return f"nothing of this run was kept; the previous run at {self.path} is unchanged"
        if self.outcome == "previous-run-kept-resumable":
            windows = self._complete_windows()
            last = f" (last complete window {windows[-1][0]})" if windows else ""
            before = (f"the previous run at {self.path} is unchanged" if self.exists(self.path)
                      else f"nothing is at {self.path}")
            return (f"{before}; this unfinished run is kept beside it{last}, in "
                    f"{self._pending_path}: resume=True / --resume continues it (and it replaces "
                    f"the previous run when it finishes), overwrite=True / --overwrite starts again")
        return f"nothing was written at {self.path}"

    def _keep(self, result: bool = False):
        """The run has something worth keeping now (a checkpoint, or its ``result``).

        A staged run takes the place of what is at :attr:`path`, except a run there that it
        replaces: that one stays until this run has its result, and this run waits beside it
        (``.NAME.pending``, resumable from there).
        """
        if self._staged and self._replaces and not result:
            os.rename(self._dir, self._pending_path)
            self._dir, self._staged, self._pending = self._pending_path, False, True
            self._made = []
            return
        if not (self._staged or (self._pending and result)):
            return
        if os.path.lexists(self.path):
            if self.mode == "w-":
                raise StoreExistsError(f"a run store appeared at {self.path!r} while this run "
                                       f"was starting; this run stays in {self._dir!r}")
            parent, name = os.path.split(self.path)
            aside = os.path.join(parent, f".{name}.replaced-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.rename(self.path, aside)
            os.rename(self._dir, self.path)  # the commit: atomic on a POSIX file system
            shutil.rmtree(aside)
        else:
            os.rename(self._dir, self.path)
        self._dir = self.path
        self._staged = self._pending = False
        self._made = []

    def _discard(self):
        shutil.rmtree(self._dir, ignore_errors=True)

    def _release(self):
        if self._lock is not None:
            self._lock.release()

    def _remove_made(self):
        """Remove the parent directories this store made, if nothing else is in them."""
        for made in reversed(self._made):  # innermost first; only if still empty
            try:
                os.rmdir(made)
            except OSError:
                break
        self._made = []

    def _open_check(self):
        if self.outcome is not None:
            raise SpecError(f"the run store at {self.path} is closed ({self.outcome})")

    def _writing(self):
        """Check that the store is open, and hold its write lock."""
        self._open_check()
        self.lock()

    @staticmethod
    def _make_parents(parent: str) -> list[str]:
        missing = []
        probe = parent
        while probe and not os.path.lexists(probe):
            missing.append(probe)
            probe = os.path.dirname(probe)
        try:
            for d in reversed(missing):
                os.mkdir(d)
        except OSError as exc:
            for d in missing:
                if os.path.isdir(d):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
            raise StorePathError(f"cannot create the directory {d!r} for a store: "
                                 f"{exc.strerror or exc}") from exc
        return list(reversed(missing))

    @staticmethod
    def _remove_stale(directory: str, only: str | None = None):
        """Clean up after a process that was killed inside a write (its pid is in the names).

        Half-written directories (``.NAME.writing-*``, ``.NAME.staging-*``) are removed. A
        ``.NAME.replaced-*`` directory is the previous version moved aside just before its
        replacement was renamed in: it is renamed back if the replacement never arrived.
        """
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for entry in names:
            match = _LEFTOVER.match(entry)
            if not match or (only is not None and match["name"] != only) \
                    or _pid_alive(int(match["pid"])):
                continue
            full = os.path.join(directory, entry)
            final = os.path.join(directory, match["name"])
            if match["what"] == "replaced" and not os.path.lexists(final):
                os.rename(full, final)
            else:
                shutil.rmtree(full, ignore_errors=True)

    # -- metadata -------------------------------------------------------------------------

    def write_meta(self, attrs: dict) -> None:
        """Merge JSON-serialisable ``attrs`` (nested dicts allowed) into the root attributes.

        Numpy scalars and arrays are converted to plain Python values.
        """
        self._writing()
        attrs = _json_attrs(attrs, "meta")
        self._root("r+").attrs.update(attrs)
        self._consolidate()

    def read_meta(self) -> dict:
        """All root attributes: metadata, provenance and, after :meth:`write_result`, the
        summary."""
        return dict(self._root("r").attrs.asdict())

    # -- checkpoints ----------------------------------------------------------------------

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store the state at the end of a training window, atomically.

        Parameters
        ----------
        checkpoint : Checkpoint
            The window index, its outputs (a state tree: see :mod:`daskie.store.checkpoint`)
            and its records. Writing a window again replaces it.

        Raises
        ------
        TypeError
            ``checkpoint`` is not a :class:`Checkpoint`, or its outputs hold a value a state
            tree cannot (the message names its path).
        SpecError
            A record that :func:`history_to_dataset` refuses.

        Notes
        -----
        The first complete checkpoint of a new run moves the run to :attr:`path`, or beside
        a previous run there, which stays until this run has its result (module docstring).
        After a resume that skipped damaged checkpoints, the first write removes them.
        """
        self._writing()
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"checkpoint must be a daskie.store.Checkpoint, "
                            f"got {type(checkpoint).__name__}")
        window = int(checkpoint.window)
        arrays, structure = encode_tree(checkpoint.outputs, prefix=_STATE)
        ds = history_to_dataset(checkpoint.records)
        for name, array in arrays.items():
            ds[name] = xr.Variable(tuple(f"{name}_dim{j}" for j in range(array.ndim)), array,
                                   attrs={"description": "an array of the window's state tree "
                                                         "(see the group's 'structure')"})
        ds.attrs = {"window": window, "schema_version": SCHEMA_VERSION, "structure": structure,
                    "written_utc": _utc_now(), "complete": True}
        folder = os.path.join(self._dir, _CHECKPOINTS)
        if not os.path.isdir(folder):
            self._root("r+").create_group(_CHECKPOINTS)
        self._drop_skipped()
        name = f"window_{window:05d}"
        writing = os.path.join(folder, f".{name}.writing-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            ds.to_zarr(writing, mode="w-", zarr_format=_ZARR_FORMAT, consolidated=False)
            final = os.path.join(folder, name)
            if os.path.lexists(final):
                aside = os.path.join(folder, f".{name}.replaced-{os.getpid()}-"
                                             f"{uuid.uuid4().hex[:8]}")
                os.rename(final, aside)
                os.rename(writing, final)
                shutil.rmtree(aside)
            else:
                os.rename(writing, final)  # the commit: atomic on a POSIX file system
        except BaseException:
            shutil.rmtree(writing, ignore_errors=True)
            raise
        self._consolidate()
        self._resume = None
        self._keep()

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint that can be resumed, or None if there is none.

        That is the newest complete checkpoint whose state can be read and whose records,
        and those of every window before it, can be read too (so that :meth:`history` is
        whole). Newer checkpoints that cannot be read (a damaged chunk) are skipped with one
        :class:`~daskie.errors.CheckpointWarning` naming the unreadable checkpoint and the
        skipped windows; the first write of a resumed run removes them (they are trained
        again).

        Raises
        ------
        CheckpointError
            A checkpoint has another schema version or holds arrays only pickle could read
            (tampered with), or no complete checkpoint can be read at all; the message names
            the checkpoint (and the versions).
        """
        return self._resume_point()[0]

    def windows(self) -> list[int]:
        """The indices of the complete checkpoints, in order."""
        return [window for window, _ in self._complete_windows()]

    def history(self) -> list[dict]:
        """All records of the checkpoints up to :meth:`latest_checkpoint`'s, in window order.

        Raises
        ------
        CheckpointError
            As :meth:`latest_checkpoint`.
        """
        return list(self._resume_point()[1])

    def _resume_point(self):
        """``(checkpoint, history, skipped windows)``; read once per store, then kept."""
        if self._resume is not None:
            return self._resume
        windows = self._complete_windows()
        readable, damage = [], None
        for window, group in windows:  # the records of every window, oldest first
            try:
                readable.append((window, group, self._read_records(group)))
            except _Damaged as exc:
                damage = (group, exc.__cause__)
                break
        checkpoint = None
        while readable and checkpoint is None:  # the newest state that can be read
            window, group, records = readable[-1]
            try:
                checkpoint = Checkpoint(window, self._read_state(group), records)
            except _Damaged as exc:
                damage = damage or (group, exc.__cause__)
                readable.pop()
        if damage is not None and checkpoint is None:
            group, exc = damage
            raise CheckpointError(f"checkpoint {group} in {self._dir} cannot be read "
                                  f"({_one_line(exc)}) and no checkpoint before it can be "
                                  f"resumed: start a new run (overwrite=True / --overwrite)")
        skipped = [w for w, _ in windows[len(readable):]]
        if damage is not None:
            group, exc = damage
            warnings.warn(
                f"checkpoint {group} in {self._dir} cannot be read ({_one_line(exc)}); resuming "
                f"from window {checkpoint.window}, the newest that can be: windows "
                f"{', '.join(map(str, skipped))} are skipped and will be trained again",
                CheckpointWarning, stacklevel=3)
        history = [rec for _, _, records in readable for rec in records]
        self._resume = (checkpoint, history, skipped)
        return self._resume

    def _drop_skipped(self):
        """Remove the windows a resume skipped as unreadable (before writing new ones)."""
        if self._resume is None or not self._resume[2]:
            return
        for window in self._resume[2]:
            shutil.rmtree(os.path.join(self._dir, _CHECKPOINTS, f"window_{window:05d}"),
                          ignore_errors=True)
        self._resume = (*self._resume[:2], [])

    def _read_records(self, group) -> list[dict]:
        """The records of one checkpoint (its state arrays are not read)."""
        _check_plain_arrays(os.path.join(self._dir, group), CheckpointError,
                            f"checkpoint {group} in {self._dir}")
        try:
            with xr.open_zarr(self._dir, group=group, consolidated=False, chunks=None) as ds:
                version = ds.attrs.get("schema_version")
                if version != SCHEMA_VERSION:
                    raise CheckpointError(
                        f"checkpoint {group} in {self._dir} has schema version {version!r} "
                        f"({'written by an older daskie' if version is None else 'unknown here'}"
                        f"); this daskie reads version {SCHEMA_VERSION}: start a new run "
                        f"(overwrite)")
                names = [n for n in ds.data_vars if str(n).startswith(_HISTORY)]
                return records_from_dataset(ds[names].load())
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged chunk raises
            raise _Damaged() from exc

    def _read_state(self, group) -> list:
        """The state tree (the window's outputs) of one checkpoint."""
        try:
            with xr.open_zarr(self._dir, group=group, consolidated=False, chunks=None) as ds:
                arrays = {str(n): v.values for n, v in ds.data_vars.items()
                          if str(n).startswith(_STATE + "_")}
                structure = ds.attrs.get("structure")
        except Exception as exc:  # noqa: BLE001 - whatever a damaged chunk raises
            raise _Damaged() from exc
        outputs = decode_tree(arrays, structure)
        if not isinstance(outputs, list):
            raise CheckpointError(f"checkpoint {group} in {self._dir}: outputs are not a list")
        return outputs

    # -- result ---------------------------------------------------------------------------

    def write_result(self, solution: xr.Dataset, history: list, summary: dict,
                     params: dict | None = None) -> None:
        """Write the root dataset: solution, history, final parameters and summary.

        Parameters
        ----------
        solution : xarray.Dataset
            Solution variables (e.g. ``mu``, ``exact``, ``error``) on a grid (coords ``x0``,
            ``x1``, ...) or on scattered points. Its attributes join the root attributes; its
            variables' attributes are kept, and ``mu``, ``exact``, ``error`` and the ``x<j>``
            coordinates get a ``long_name`` and ``description`` (and ``units`` from the
            problem's ``units``, if the metadata's ``problem_spec`` has them) where missing.
        history : list of dict
            The full training history, stored as ``history_<key>`` on dim ``"record"``, each
            variable described (:data:`daskie.records.FIELDS`).
        summary : dict
            JSON-serialisable figures (mse, rel_l2, epochs, wall_s, ...) merged into the root
            attributes.
        params : dict of str to array, optional
            Final flat parameters per sub-model, stored as ``params_<name>`` on dims
            ``param_<name>``. Default: none.

        Writing a result again replaces the previous one; metadata and checkpoints stay. A new
        run's result moves the run to :attr:`path` (module docstring).
        """
        self._writing()
        self._drop_skipped()
        if not isinstance(solution, xr.Dataset):
            raise SpecError(f"solution must be an xarray.Dataset, got {type(solution).__name__}")
        clash = [str(n) for n in solution.variables
                 if str(n).startswith((_HISTORY, _PARAMS)) or n == "record"]
        if clash:
            raise SpecError(f"solution variables {clash} clash with the names used for the "
                            f"history ('record', 'history_*') and parameters ('params_*')")
        attrs = _json_attrs(solution.attrs, "solution.attrs")
        attrs.update(_json_attrs(summary, "summary"))
        root = self._root("r+")
        meta = root.attrs.asdict()
        described = self._described(solution, meta.get("problem_spec"))
        hist = history_to_dataset(history)
        ds = xr.merge([described, hist, self._params_dataset(params or {})],
                      compat="no_conflicts", join="exact", combine_attrs="drop")
        for part in (described, hist):  # merge dropped the variables' attributes
            for name, var in part.variables.items():
                ds[name].attrs = _json_attrs(dict(var.attrs), f"{name}.attrs")
        ds.attrs = {**meta, **attrs, "finished_utc": _utc_now()}
        # Drop the previous result first: its variables may have other shapes than the new ones.
        for name in [name for name, _ in root.arrays()]:
            del root[name]
        self._consolidate()
        ds.to_zarr(self._dir, mode="a", zarr_format=_ZARR_FORMAT, consolidated=False)
        self._consolidate()
        self._result_written = True
        self._keep(result=True)

    def read(self) -> xr.Dataset:
        """The root dataset, exactly as ``xarray.open_zarr(path)`` gives it.

        Raises
        ------
        UnsafeStoreError
            An array of the store could only be read by unpickling (a store from elsewhere
            or a tampered one); nothing of it is read.
        """
        _check_plain_arrays(self._dir, UnsafeStoreError, f"store {self.path}",
                            skip=(_CHECKPOINTS,))
        return xr.open_zarr(self._dir, consolidated=True)

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _described(solution: xr.Dataset, spec) -> xr.Dataset:
        units = spec.get("units") if isinstance(spec, Mapping) else None
        units = units if isinstance(units, Mapping) else {}
        defaults = {
            "mu": ("mu", "the trained network's solution mu(x)", units.get("mu")),
            "exact": ("exact solution", "the problem's exact solution at the same points",
                      units.get("mu")),
            "error": ("error", "mu - exact (signed pointwise error)", units.get("mu")),
        }
        out = solution.copy()
        for name in out.variables:
            name = str(name)
            if name in defaults:
                long_name, description, unit = defaults[name]
            elif re.fullmatch(r"x\d+", name):
                j = int(name[1:])
                long_name, description = f"x_{j + 1}", f"coordinate {j + 1} of the domain"
                unit = units.get(name, units.get("x"))
            else:
                continue
            attrs = dict(out[name].attrs)
            attrs.setdefault("long_name", long_name)
            attrs.setdefault("description", description)
            if unit is not None:
                attrs.setdefault("units", str(unit))
            out[name].attrs = attrs
        return out

    def _root(self, mode):
        # Never the consolidated copy: after a crash it may be older than the files.
        return zarr.open_group(self._dir, mode=mode, use_consolidated=False)

    def _consolidate(self):
        """Write the consolidated metadata of the whole tree, replacing it by a rename.

        Keeps ``xarray.open_zarr(path)`` fast and warning-free. zarr's own
        ``consolidate_metadata`` rewrites the file in place, which a crash can leave
        truncated; this writes the same format beside it and renames it over.
        """
        metadata = {}
        for here, dirs, files in os.walk(self._dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # skip half-written
            rel = os.path.relpath(here, self._dir)
            for name in _META_FILES:
                if name in files:
                    with open(os.path.join(here, name)) as fh:
                        key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                        metadata[key] = json.load(fh)
        target = os.path.join(self._dir, ".zmetadata")
        writing = f"{target}.writing-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(writing, "w") as fh:
            json.dump({"metadata": metadata, "zarr_consolidated_format": 1}, fh)
        os.replace(writing, target)

    def _complete_windows(self) -> list[tuple[int, str]]:
        folder = os.path.join(self._dir, _CHECKPOINTS)
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        found = []
        for name in names:
            match = _WINDOW.match(name)
            if not match:
                continue
            try:
                with open(os.path.join(folder, name, ".zattrs")) as fh:
                    complete = json.load(fh).get("complete") is True
            except (OSError, ValueError, AttributeError):
                complete = False
            if complete:
                found.append((int(match.group(1)), f"{_CHECKPOINTS}/{name}"))
        return sorted(found)

    @staticmethod
    def _params_dataset(params) -> xr.Dataset:
        if not isinstance(params, Mapping):
            raise SpecError(f"params must be a dict of sub-model name to flat array, "
                            f"got {type(params).__name__}")
        data_vars = {}
        for name, theta in params.items():
            _check_name(name, "params key (sub-model name)")
            theta = np.asarray(theta, dtype=np.float64)
            if theta.ndim != 1:
                raise SpecError(f"params[{name!r}] must be a flat (1-D) vector, "
                                f"got shape {theta.shape}")
            data_vars[_PARAMS + name] = xr.Variable(
                f"param_{name}", theta,
                attrs={"long_name": f"parameters of {name}",
                       "description": f"final flat parameter vector of the sub-model {name}"})
        return xr.Dataset(data_vars)
