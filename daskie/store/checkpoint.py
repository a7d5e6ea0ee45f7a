"""Window checkpoints as data: named arrays plus a JSON description, never code.

A checkpoint holds the state a run needs to continue after window ``window``: the outputs of
that window (parameters, optimizer state, counters, RNG states, ...) as a *state tree*, and
the training records the window produced. A state tree is built from

* containers: ``dict`` (string keys), ``list``, ``tuple``;
* leaves: ``torch.Tensor``, ``numpy.ndarray`` (bool, int, unsigned, float or complex dtype),
  numpy scalars of those dtypes, ``int``, ``float``, ``bool``, ``str`` and ``None``.

:func:`encode_tree` splits a tree into its arrays (by path) and a JSON-able *structure*;
:func:`decode_tree` is its exact inverse: torch tensors come back as torch tensors of the
same dtype and shape, arrays as arrays, tuples as tuples, floats bit for bit (they are kept
as ``float.hex`` strings, so NaN and infinities survive JSON), ints of any size (as decimal
strings). Nothing in a checkpoint is executed on reading: the worst a tampered checkpoint can
do is fail to decode, with :class:`~daskie.errors.CheckpointError`.

The structure carries :data:`SCHEMA_VERSION`; a reader refuses another version rather than
guessing what its fields mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from daskie.errors import CheckpointError

__all__ = ["SCHEMA_VERSION", "Checkpoint", "encode_tree", "decode_tree"]

#: Version of the checkpoint layout (structure nodes and array naming) written by this daskie.
SCHEMA_VERSION = 1

# numpy dtype kinds a checkpoint array may have: bool, signed, unsigned, float, complex.
_ARRAY_KINDS = "biufc"
# torch dtypes numpy cannot represent travel as a same-width integer view of their bits.
_BIT_VIEWS = {"bfloat16": "int16", "float8_e4m3fn": "int8", "float8_e5m2": "int8"}


@dataclass(frozen=True)
class Checkpoint:
    """The state at the end of one training window.

    Parameters
    ----------
    window : int
        Index of the window (>= 0).
    outputs : list
        The window's outputs as a state tree (see the module docstring): what the next
        window, or a resumed run, starts from.
    records : list of dict
        The flat training records produced during this window (values: int, float, bool,
        str or None).
    """

    window: int
    outputs: list
    records: list = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, (int, np.integer)) \
                or self.window < 0:
            raise TypeError(f"Checkpoint.window must be an int >= 0, got {self.window!r}")
        if not isinstance(self.outputs, (list, tuple)):
            raise TypeError(f"Checkpoint.outputs must be a list (a state tree), "
                            f"got {type(self.outputs).__name__}")
        if not isinstance(self.records, (list, tuple)):
            raise TypeError(f"Checkpoint.records must be a list of dicts, "
                            f"got {type(self.records).__name__}")


def _torch():
    import torch

    return torch


def encode_tree(tree, prefix: str = "state") -> tuple[dict[str, np.ndarray], dict]:
    """Split a state tree into named arrays and a JSON-able structure.

    Parameters
    ----------
    tree : state tree
        Nested dict (string keys) / list / tuple of tensors, arrays and plain scalars.
    prefix : str
        Start of the array names (``"<prefix>_00000"``, ``"<prefix>_00001"``, ...).

    Returns
    -------
    arrays : dict of str to numpy.ndarray
        Every tensor and array of the tree, by name, in the order they occur.
    structure : dict
        Plain JSON data (dicts, lists, strings, bools, None) describing the tree; array
        leaves refer to ``arrays`` by name.

    Raises
    ------
    TypeError
        A leaf of another type, a dict key that is not a string, or an array of an
        unsupported dtype (object, string, datetime); the message names the leaf's path,
        e.g. ``outputs[0]['state']['rng']``.
    """
    arrays: dict[str, np.ndarray] = {}
    torch = _torch()

    def name_for(array):
        name = f"{prefix}_{len(arrays):05d}"
        arrays[name] = array
        return name

    def enc(value, path):
        # bool before int (bool is an int), numpy scalars before float (np.float64 is a float).
        if value is None:
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, np.generic):
            if value.dtype.kind not in _ARRAY_KINDS:
                raise TypeError(f"{path}: numpy scalar of dtype {value.dtype} cannot be "
                                f"checkpointed (bool, int, float or complex only)")
            return {"scalar": name_for(np.asarray(value))}
        if isinstance(value, int):
            return {"int": str(value)}
        if isinstance(value, float):
            return {"float": float.hex(value)}
        if isinstance(value, str):
            return {"str": value}
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
            dtype = str(t.dtype).removeprefix("torch.")
            if t.is_sparse or t.layout != torch.strided:
                raise TypeError(f"{path}: only dense (strided) tensors can be checkpointed, "
                                f"got layout {t.layout}")
            if dtype in _BIT_VIEWS:
                array = t.contiguous().view(getattr(torch, _BIT_VIEWS[dtype])).numpy()
            else:
                try:
                    array = t.contiguous().numpy()
                except TypeError as exc:
                    raise TypeError(f"{path}: torch dtype {dtype} cannot be checkpointed") from exc
            return {"tensor": name_for(array.copy()), "dtype": dtype}
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in _ARRAY_KINDS:
                raise TypeError(f"{path}: array of dtype {value.dtype} cannot be checkpointed "
                                f"(bool, int, float or complex only)")
            return {"ndarray": name_for(np.array(value, copy=True))}
        if isinstance(value, Mapping) and type(value) is dict:
            keys = list(value)
            for k in keys:
                if not isinstance(k, str):
                    raise TypeError(f"{path}: dict key {k!r} is not a string; state-tree "
                                    f"dicts have string keys")
            return {"dict": [[k, enc(value[k], f"{path}[{k!r}]")] for k in keys]}
        if type(value) in (list, tuple):
            items = [enc(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return {"list" if type(value) is list else "tuple": items}
        raise TypeError(f"{path}: {type(value).__module__}.{type(value).__qualname__} cannot "
                        f"be checkpointed; a state tree holds dicts, lists, tuples, tensors, "
                        f"arrays, int, float, bool, str and None")

    structure = {"schema_version": SCHEMA_VERSION, "tree": enc(tree, "outputs")}
    return arrays, structure


def decode_tree(arrays: Mapping, structure: Mapping):
    """Rebuild the state tree that :func:`encode_tree` split.

    Parameters
    ----------
    arrays : mapping of str to array-like
        The arrays by name, as :func:`encode_tree` returned them (or as read from a store).
    structure : mapping
        The structure :func:`encode_tree` returned.

    Returns
    -------
    state tree
        Equal to the encoded tree: same container types, tensors with the same dtype and
        shape, arrays with the same dtype, scalars exactly.

    Raises
    ------
    CheckpointError
        The structure has another schema version, is malformed, or refers to a missing
        array, or an array does not fit its declared dtype.
    """
    if not isinstance(structure, Mapping):
        raise CheckpointError(f"checkpoint structure must be a JSON object, "
                              f"got {type(structure).__name__}")
    version = structure.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CheckpointError(
            f"checkpoint has schema version {version!r}; this daskie reads version "
            f"{SCHEMA_VERSION} only (start a new run, or resume with the daskie that wrote it)")
    torch = _torch()

    def array(name, path):
        if not isinstance(name, str) or name not in arrays:
            raise CheckpointError(f"checkpoint {path} refers to a missing array {name!r}")
        return np.asarray(arrays[name])

    def dec(node, path):
        if node is None or isinstance(node, bool):
            return node
        if not isinstance(node, Mapping) or len(node) not in (1, 2):
            raise CheckpointError(f"checkpoint {path}: malformed node {str(node)[:80]!r}")
        kind = next(iter(node))
        payload = node[kind]
        if kind == "int" and isinstance(payload, str):
            return int(payload)
        if kind == "float" and isinstance(payload, str):
            return float.fromhex(payload)
        if kind == "str" and isinstance(payload, str):
            return payload
        if kind == "scalar":
            a = array(payload, path)
            if a.ndim != 0:
                raise CheckpointError(f"checkpoint {path}: scalar array has shape {a.shape}")
            return a[()]
        if kind == "ndarray":
            return array(payload, path).copy()
        if kind == "tensor":
            dtype = node.get("dtype")
            target = getattr(torch, dtype, None) if isinstance(dtype, str) else None
            if not isinstance(target, torch.dtype):
                raise CheckpointError(f"checkpoint {path}: unknown torch dtype {dtype!r}")
            t = torch.from_numpy(np.array(array(payload, path), copy=True, order="C"))
            if dtype in _BIT_VIEWS:
                t = t.view(target)
            if t.dtype != target:
                raise CheckpointError(f"checkpoint {path}: array holds {t.dtype}, "
                                      f"declared {dtype}")
            return t
        if kind == "dict" and isinstance(payload, list):
            out = {}
            for item in payload:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                    raise CheckpointError(f"checkpoint {path}: malformed dict entry")
                out[item[0]] = dec(item[1], f"{path}[{item[0]!r}]")
            return out
        if kind in ("list", "tuple") and isinstance(payload, list):
            items = [dec(v, f"{path}[{i}]") for i, v in enumerate(payload)]
            return items if kind == "list" else tuple(items)
        raise CheckpointError(f"checkpoint {path}: malformed node of kind {kind!r}")

    try:
        return dec(structure.get("tree"), "outputs")
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a tampered float.hex string
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint cannot be decoded: {exc}") from exc

