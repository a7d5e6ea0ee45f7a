"""One training run as one zarr group, written through xarray.

Layout of a run at ``path`` (zarr format 2, root metadata consolidated so that a plain
``xarray.open_zarr(path)`` opens it without warnings)::

    path/                            root group
        .zattrs                      run metadata (write_meta) and summary (write_result)
        mu, exact, error, x0, ...    the solution (write_result)
        record, history_<key>        the training history on dim "record" (write_result)
        params_<name>                final flat parameters of sub-model <name> on dim "param_<name>"
        checkpoints/
            window_00007/            one group per training window (write_checkpoint)
                params_<name>        parameters at the end of the window
                blob                 opaque resume state, uint8 on dim "blob_byte"
                record, history_<key>  the records produced in this window
                .zattrs              window, submodels, complete (set last)

A checkpoint counts only once its ``complete`` attribute is set, which happens after all of
its arrays are written: a crash in the middle of a write leaves the previous checkpoint as the
latest one. Zarr format 2 is used because format 3 has no specification for fixed-width
unicode strings and no consolidated metadata (zarr warns about both).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping

import numpy as np
import xarray as xr
import zarr

from daskie.errors import SpecError, StoreExistsError, StoreMissingError

__all__ = ["RunStore", "history_to_dataset", "records_from_dataset"]

_ZARR_FORMAT = 2
_HISTORY = "history_"
_PARAMS = "params_"
_CHECKPOINTS = "checkpoints"
_WINDOW = re.compile(r"^window_(\d+)$")
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
        data_vars[_HISTORY + key] = _column(key, values)
    return xr.Dataset(data_vars, coords={"record": np.arange(len(records), dtype=np.int64)})


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


class RunStore:
    """One run = one zarr store at ``path`` (a local directory).

    ``xarray.open_zarr(path)`` reads the main dataset (solution, history, final parameters,
    metadata and summary as attributes) with nothing else. See the module docstring for the
    layout.

    Parameters
    ----------
    path : str or os.PathLike
        Directory of the store.
    mode : {"w-", "w", "a"}
        ``"w-"`` creates a new store and refuses if anything exists at ``path``; ``"w"``
        replaces an existing run store (it refuses to delete anything that is not a run store
        or an empty directory); ``"a"`` opens an existing store to resume it.

    Raises
    ------
    StoreExistsError
        ``mode="w-"`` and something exists at ``path``.
    StoreMissingError (a FileNotFoundError)
        ``mode="a"`` and nothing exists at ``path``.
    SpecError
        An unknown mode; ``mode="a"`` on something that is not a run store; ``mode="w"`` on
        something that is not a run store.
    """

    def __init__(self, path, mode: str = "w-"):
        self.check(path, mode)
        self.path = os.fspath(path)
        self.mode = mode
        if mode == "a":
            return
        if os.path.lexists(self.path):
            self._remove_existing()
        zarr.open_group(self.path, mode="w", zarr_format=_ZARR_FORMAT)
        self._consolidate()

    def __repr__(self):
        return f"RunStore({self.path!r}, mode={self.mode!r})"

    @classmethod
    def check(cls, path, mode: str = "w-") -> None:
        """Raise the error ``RunStore(path, mode)`` would raise, touching nothing on disk."""
        path = os.fspath(path)
        if mode not in ("w-", "w", "a"):
            raise SpecError(f"mode must be 'w-' (create), 'w' (overwrite) or 'a' (resume), "
                            f"got {mode!r}")
        taken = os.path.lexists(path)
        if mode == "a":
            if not taken:
                raise StoreMissingError(
                    f"no run store at {path!r} to resume; drop resume=True / --resume "
                    f"to start a new run there")
            if not cls.exists(path):
                raise SpecError(f"{path!r} exists but is not a daskie run store "
                                f"(no zarr group); cannot resume from it")
        elif taken and mode == "w-":
            raise StoreExistsError(
                f"a run store (or other file) exists at {path!r}; pass overwrite=True / "
                f"--overwrite to replace it, or resume=True / --resume to continue it")

    @staticmethod
    def exists(path) -> bool:
        """Whether a run store (a zarr group) is at ``path``."""
        return os.path.isfile(os.path.join(os.fspath(path), ".zgroup"))

    # -- metadata -------------------------------------------------------------------------

    def write_meta(self, attrs: dict) -> None:
        """Merge JSON-serialisable ``attrs`` (nested dicts allowed) into the root attributes.

        Numpy scalars and arrays are converted to plain Python values.
        """
        attrs = _json_attrs(attrs, "meta")
        self._root("r+").attrs.update(attrs)
        self._consolidate()

    def read_meta(self) -> dict:
        """All root attributes: metadata and, after :meth:`write_result`, the summary."""
        return dict(self._root("r").attrs.asdict())

    # -- checkpoints ----------------------------------------------------------------------

    def write_checkpoint(self, window: int, params: dict, blob: bytes, records: list) -> None:
        """Store the state at the end of training window ``window``.

        Parameters
        ----------
        window : int
            Window index (>= 0). Writing a window again replaces it.
        params : dict of str to array
            Flat float64 parameter vector per sub-model.
        blob : bytes
            Opaque state needed to resume exactly (optimizer state, counters).
        records : list of dict
            Training records produced during this window (see :func:`history_to_dataset`).
        """
        if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
            raise SpecError(f"window must be an int >= 0, got {window!r}")
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise SpecError(f"blob must be bytes, got {type(blob).__name__}")
        ds = history_to_dataset(records)
        ds.update(self._params_dataset(params))
        ds["blob"] = xr.Variable("blob_byte", np.frombuffer(bytes(blob), dtype=np.uint8))
        ds.attrs = {"window": int(window), "submodels": list(params)}
        group = f"{_CHECKPOINTS}/window_{int(window):05d}"
        root = self._root("r+")
        if group in root:
            del root[group]
        ds.to_zarr(self.path, group=group, mode="w", zarr_format=_ZARR_FORMAT,
                   consolidated=False)
        # Marked only after every array is on disk: an unmarked window is ignored on resume.
        self._root("r+")[group].attrs["complete"] = True
        self._consolidate()

    def latest_checkpoint(self) -> tuple[int, dict[str, np.ndarray], bytes] | None:
        """``(window, params, blob)`` of the newest complete checkpoint, or None if none."""
        windows = self._complete_windows()
        if not windows:
            return None
        window, group = windows[-1]
        ds = self._open_group(group)
        params = {name: ds[_PARAMS + name].values for name in ds.attrs["submodels"]}
        return window, params, ds["blob"].values.tobytes()

    def history(self) -> list[dict]:
        """All records of all complete checkpoints, in window order."""
        records: list[dict] = []
        for _, group in self._complete_windows():
            records.extend(records_from_dataset(self._open_group(group)))
        return records

    # -- result ---------------------------------------------------------------------------

    def write_result(self, solution: xr.Dataset, history: list, summary: dict,
                     params: dict | None = None) -> None:
        """Write the root dataset: solution, history, final parameters and summary.

        Parameters
        ----------
        solution : xarray.Dataset
            Solution variables (e.g. ``mu``, ``exact``, ``error``) on a grid (coords ``x0``,
            ``x1``, ...) or on scattered points. Its attributes join the root attributes.
        history : list of dict
            The full training history, stored as ``history_<key>`` on dim ``"record"``.
        summary : dict
            JSON-serialisable figures (mse, rel_l2, epochs, wall_s, ...) merged into the root
            attributes.
        params : dict of str to array, optional
            Final flat parameters per sub-model, stored as ``params_<name>`` on dims
            ``param_<name>``. Default: those of the latest complete checkpoint, if any.

        Writing a result again replaces the previous one; metadata and checkpoints stay.
        """
        if not isinstance(solution, xr.Dataset):
            raise SpecError(f"solution must be an xarray.Dataset, got {type(solution).__name__}")
        clash = [str(n) for n in solution.variables
                 if str(n).startswith((_HISTORY, _PARAMS)) or n == "record"]
        if clash:
            raise SpecError(f"solution variables {clash} clash with the names used for the "
                            f"history ('record', 'history_*') and parameters ('params_*')")
        attrs = _json_attrs(solution.attrs, "solution.attrs")
        attrs.update(_json_attrs(summary, "summary"))
        if params is None:
            latest = self.latest_checkpoint()
            params = latest[1] if latest is not None else {}
        ds = xr.merge([solution, history_to_dataset(history), self._params_dataset(params)],
                      compat="no_conflicts", join="exact", combine_attrs="drop")
        root = self._root("r+")
        ds.attrs = {**root.attrs.asdict(), **attrs}
        # Drop the previous result first: its variables may have other shapes than the new ones.
        for name in [name for name, _ in root.arrays()]:
            del root[name]
        self._consolidate()
        ds.to_zarr(self.path, mode="a", zarr_format=_ZARR_FORMAT, consolidated=True)

    def read(self) -> xr.Dataset:
        """The root dataset, exactly as ``xarray.open_zarr(path)`` gives it."""
        return xr.open_zarr(self.path, consolidated=True)

    # -- internals ------------------------------------------------------------------------

    def _remove_existing(self):
        if self.exists(self.path):
            shutil.rmtree(self.path)
        elif os.path.isdir(self.path) and not os.path.islink(self.path) \
                and not os.listdir(self.path):
            os.rmdir(self.path)
        else:
            raise SpecError(f"{self.path!r} exists and is not a daskie run store; overwrite "
                            f"only replaces run stores: choose another path or remove it")

    def _root(self, mode):
        # Never the consolidated copy: after a crash it may be older than the files.
        return zarr.open_group(self.path, mode=mode, use_consolidated=False)

    def _consolidate(self):
        # Keeps `xarray.open_zarr(path)` fast and warning-free; run after every write.
        zarr.consolidate_metadata(self.path, zarr_format=_ZARR_FORMAT)

    def _complete_windows(self) -> list[tuple[int, str]]:
        root = self._root("r")
        if _CHECKPOINTS not in root:
            return []
        found = []
        for name, group in root[_CHECKPOINTS].groups():
            match = _WINDOW.match(name)
            if match and group.attrs.get("complete") is True:
                found.append((int(match.group(1)), f"{_CHECKPOINTS}/{name}"))
        return sorted(found)

    def _open_group(self, group) -> xr.Dataset:
        with xr.open_zarr(self.path, group=group, consolidated=False, chunks=None) as ds:
            return ds.load()

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
            data_vars[_PARAMS + name] = xr.Variable(f"param_{name}", theta)
        return xr.Dataset(data_vars)
