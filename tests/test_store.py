"""RunStore: write == read for metadata, checkpoints (data, never code), history and results;
atomic checkpoints (a process killed inside a write) and transactional runs."""

import datetime
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

import daskie
from daskie.errors import (CheckpointError, CheckpointWarning, SpecError, StoreExistsError, StoreMissingError,
                           StorePathError, UnsafeStoreError)
from daskie.records import FIELDS
from daskie.store import (OUTCOMES, SCHEMA_VERSION, Checkpoint, RunStore, decode_tree,
                          encode_tree, history_to_dataset, records_from_dataset)


def _params(seed):
    rng = np.random.default_rng(seed)
    return {"mu": rng.standard_normal(7), "F1.2": rng.standard_normal(3)}


def _records(window, n=2):
    return [{"window": window, "epoch": window * n + k, "loss": 10.0 ** -(window + k),
             "submodel": "mu"} for k in range(n)]


def _state(seed):
    """A window's outputs as a state tree like the ones solve checkpoints."""
    gen = torch.Generator().manual_seed(seed)
    return [{"group": g, "params": {"mu": torch.randn(5, generator=gen, dtype=torch.float64)},
             "optimizer": {"damping": 1e-3 * (seed + 1), "step": 10 * seed + g,
                           "moments": (torch.randn(5, generator=gen), torch.zeros(5)),
                           "rng": gen.get_state(), "done": None, "stage": "lm"}}
            for g in range(2)]


def _assert_tree_equal(got, want, path="outputs"):
    assert type(got) is type(want), path
    if isinstance(want, dict):
        assert list(got) == list(want), path
        for k in want:
            _assert_tree_equal(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_tree_equal(g, w, f"{path}[{i}]")
    elif isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and got.shape == want.shape, path
        assert torch.equal(got.view(torch.uint8) if got.numel() else got,
                           want.detach().contiguous().view(torch.uint8) if want.numel() else want), path
    elif isinstance(want, (np.ndarray, np.generic)):
        assert got.dtype == want.dtype and np.shape(got) == np.shape(want), path
        np.testing.assert_array_equal(got, want)
    elif isinstance(want, float):
        assert got.hex() == want.hex() or (math.isnan(got) and math.isnan(want)), path
    else:
        assert got == want, path


def _solution():
    x0 = np.linspace(0.0, 1.0, 4)
    x1 = np.linspace(0.0, 1.0, 3)
    exact = np.add.outer(x0, x1)
    mu = exact + 1e-6
    return xr.Dataset({"mu": (("x0", "x1"), mu), "exact": (("x0", "x1"), exact),
                       "error": (("x0", "x1"), mu - exact)}, coords={"x0": x0, "x1": x1})


def _finished_run(path, seed=1):
    with RunStore(path, mode="w-") as store:
        store.write_meta({"seed": seed})
        store.write_checkpoint(Checkpoint(0, _state(seed), _records(0)))
        store.write_result(_solution() * seed, _records(0), {"mse": 1e-3 * seed})
    assert store.outcome == "complete"
    return store


def _leftovers(directory):
    return sorted(os.listdir(directory))


# -- state trees ----------------------------------------------------------------------------

TREES = {
    "scalars": [1, -7, 2**100, 0.1, -0.0, float("inf"), float("nan"), True, False, None, "µ"],
    "containers": [{"a": [1, (2, 3)], "b": {}, "c": [], "d": ()}, ((),)],
    "tensors": [torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),  # non-contiguous
                torch.tensor([1, 2], dtype=torch.int64), torch.tensor(True),
                torch.ones(3, dtype=torch.bfloat16) / 3, torch.zeros(0, 4, dtype=torch.float64),
                torch.tensor([1 + 2j], dtype=torch.complex128), torch.get_rng_state(),
                torch.ones(2, requires_grad=True) * 2],
    "arrays": [np.eye(3), np.arange(4, dtype=np.uint16), np.array([1 + 1j], dtype=np.complex64),
               np.zeros((0,), dtype=np.float32), np.array(3.5), np.array([True, False])],
    "numpy scalars": [np.float32(1.5), np.int64(-3), np.bool_(True)],
    "rng state": [np.random.default_rng(7).bit_generator.state],
    "train state": _state(3),
}


@pytest.mark.parametrize("name", list(TREES))
def test_state_tree_round_trip_is_exact(name):
    tree = TREES[name]
    arrays, structure = encode_tree(tree)
    json.dumps(structure, allow_nan=False)  # plain JSON: no NaN tokens, no objects
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    _assert_tree_equal(decode_tree(arrays, structure), tree)


def test_decoded_numpy_rng_state_restores_the_generator():
    gen = np.random.default_rng(11)
    gen.random(5)
    arrays, structure = encode_tree([gen.bit_generator.state])
    fresh = np.random.default_rng(0)
    fresh.bit_generator.state = decode_tree(arrays, structure)[0]
    np.testing.assert_array_equal(fresh.random(4), gen.random(4))


@pytest.mark.parametrize("tree, path", [
    ([{"f": lambda x: x}], r"outputs\[0\]\['f'\]"),
    ([{1: 2}], r"outputs\[0\].*key 1"),
    ([[{1, 2}]], r"outputs\[0\]\[0\]"),
    ([np.array([object()], dtype=object)], r"outputs\[0\].*dtype object"),
    ([np.array(["a"])], r"outputs\[0\].*dtype <U1"),
    ([{"s": slice(1)}], r"outputs\[0\]\['s'\].*slice"),
])
def test_encode_refuses_what_is_not_data_and_names_the_path(tree, path):
    with pytest.raises(TypeError, match=path):
        encode_tree(tree)


def test_decode_refuses_other_schema_versions_and_tampered_structures():
    arrays, structure = encode_tree([torch.ones(2), 1.5])
    with pytest.raises(CheckpointError, match=f"schema version 99.*version {SCHEMA_VERSION}"):
        decode_tree(arrays, {**structure, "schema_version": 99})
    bad = [{"schema_version": SCHEMA_VERSION, "tree": {"list": [{"tensor": "state_00009",
                                                                 "dtype": "float32"}]}},
           {"schema_version": SCHEMA_VERSION, "tree": {"list": [{"float": "not hex"}]}},
           {"schema_version": SCHEMA_VERSION, "tree": {"pickle": "gASV"}},
           {"schema_version": SCHEMA_VERSION, "tree": {"list": [{"tensor": "state_00000",
                                                                 "dtype": "Tensor"}]}},
           {"schema_version": SCHEMA_VERSION, "tree": {"list": [{"tensor": "state_00000",
                                                                 "dtype": "int64"}]}},
           "not a dict"]
    for structure in bad:
        with pytest.raises(CheckpointError):
            decode_tree(arrays, structure)


# -- metadata, checkpoints, history ---------------------------------------------------------

def test_meta_round_trip_with_nested_dicts_and_numpy_scalars(tmp_path):
    store = RunStore(tmp_path / "run")
    meta = {"problem": {"name": "E1", "domain": {"lo": [0.0, 0.0], "hi": [1.0, 1.0]}},
            "plan": {"n_sub": 3, "groups": [["mu"], ["F1.1", "F1.2"]]}, "seed": np.int64(7),
            "lam": np.array([0.5, 1.5])}
    store.write_meta(meta)
    store.write_meta({"config": {"window": 50}})
    store.write_checkpoint(Checkpoint(0, [], []))
    got = RunStore(tmp_path / "run", mode="a").read_meta()
    provenance = {k: got.pop(k) for k in ("daskie_version", "torch_version", "xarray_version",
                                          "zarr_version", "created_utc", "path")}
    assert got == {**meta, "seed": 7, "lam": [0.5, 1.5], "config": {"window": 50}}
    assert type(got["seed"]) is int
    assert provenance["path"] == str(tmp_path / "run")
    assert xr.open_zarr(tmp_path / "run").attrs["problem"]["domain"]["hi"] == [1.0, 1.0]


def test_meta_rejects_what_json_cannot_hold(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(SpecError, match=r"meta\['f'\]"):
        store.write_meta({"f": lambda x: x})
    with pytest.raises(SpecError, match="non-string key"):
        store.write_meta({"d": {1: "a"}})
    store.close()


def test_checkpoint_round_trip_is_exact_and_readable_with_xarray(tmp_path):
    store = RunStore(tmp_path / "run")
    assert store.latest_checkpoint() is None and store.history() == []
    state = _state(0)
    store.write_checkpoint(Checkpoint(0, state, _records(0)))
    got = RunStore(tmp_path / "run", mode="a").latest_checkpoint()
    assert isinstance(got, Checkpoint) and got.window == 0
    _assert_tree_equal(got.outputs, state)
    assert got.records == _records(0)
    assert store.history() == _records(0)
    # Users can read a checkpoint with xarray alone: the arrays and their JSON description.
    ds = xr.open_zarr(tmp_path / "run", group="checkpoints/window_00000", consolidated=False)
    assert ds.attrs["schema_version"] == SCHEMA_VERSION and ds.attrs["window"] == 0
    np.testing.assert_array_equal(ds["state_00000"].values, state[0]["params"]["mu"].numpy())


def test_no_pickle_anywhere_in_the_store_package():
    folder = os.path.dirname(daskie.store.__file__)
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name)) as fh:
                code = fh.read()
            assert "import pickle" not in code and "pickle.load" not in code, name


def test_latest_checkpoint_is_newest_complete_one_and_history_is_in_window_order(tmp_path):
    store = RunStore(tmp_path / "run")
    # Written out of order: the order of windows comes from their index, not from the writes.
    for window in (2, 0, 1):
        store.write_checkpoint(Checkpoint(window, _state(window), _records(window)))
    # A window whose group exists but was never marked complete does not count.
    store.write_checkpoint(Checkpoint(3, _state(3), _records(3)))
    del zarr.open_group(tmp_path / "run" / "checkpoints" / "window_00003").attrs["complete"]
    got = RunStore(tmp_path / "run", mode="a").latest_checkpoint()
    assert got.window == 2
    _assert_tree_equal(got.outputs, _state(2))
    assert store.history() == _records(0) + _records(1) + _records(2)
    # Rewriting the window makes it count.
    store.write_checkpoint(Checkpoint(3, [{"again": 1}], _records(3, n=1)))
    assert store.latest_checkpoint().outputs == [{"again": 1}]
    assert store.history()[-2:] == _records(2)[-1:] + _records(3, n=1)
    assert not [n for n in os.listdir(tmp_path / "run" / "checkpoints") if n.startswith(".window")]


def test_empty_outputs_and_records(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_checkpoint(Checkpoint(5, [], []))
    assert store.latest_checkpoint() == Checkpoint(5, [], [])
    assert store.history() == []


def test_checkpoint_of_another_schema_version_is_refused_naming_the_versions(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_checkpoint(Checkpoint(0, _state(0), _records(0)))
    zarr.open_group(tmp_path / "run" / "checkpoints" / "window_00000").attrs["schema_version"] = 7
    with pytest.raises(CheckpointError, match=f"window_00000.*version 7.*version {SCHEMA_VERSION}"):
        RunStore(tmp_path / "run", mode="a").latest_checkpoint()
    # A checkpoint of the first daskie (a pickled blob, no schema version) is refused too.
    del zarr.open_group(tmp_path / "run" / "checkpoints" / "window_00000").attrs["schema_version"]
    with pytest.raises(CheckpointError, match="None.*older daskie"):
        RunStore(tmp_path / "run", mode="a").latest_checkpoint()


class _Touch:
    """Unpickling this creates a file: the proof that a store ran code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_rewritten_to_unpickle_runs_nothing(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_checkpoint(Checkpoint(0, [torch.ones(3)], _records(0)))
    # The attack zarr format 2 allows: an object array whose chunk is a pickle.
    array_dir = tmp_path / "run" / "checkpoints" / "window_00000" / "state_00000"
    meta = json.loads((array_dir / ".zarray").read_text())
    meta.update(dtype="|O", compressor=None, filters=[{"id": "pickle", "protocol": 5}],
                shape=[1], chunks=[1])
    (array_dir / ".zarray").write_text(json.dumps(meta))
    marker = tmp_path / "pwned"
    payload = pickle.dumps(np.array([_Touch(str(marker))], dtype=object))
    for chunk in array_dir.iterdir():
        if not chunk.name.startswith("."):
            chunk.unlink()
    (array_dir / "0").write_bytes(payload)
    with pytest.raises(CheckpointError, match="state_00000.*pickle"):
        RunStore(tmp_path / "run", mode="a").latest_checkpoint()
    with pytest.raises(CheckpointError):
        RunStore(tmp_path / "run", mode="a").history()
    assert not marker.exists()


def test_a_result_rewritten_to_unpickle_is_not_opened(tmp_path):
    _finished_run(tmp_path / "run")
    mu = tmp_path / "run" / "mu" / ".zarray"
    meta = json.loads(mu.read_text())
    mu.write_text(json.dumps({**meta, "dtype": "|O", "filters": [{"id": "pickle"}]}))
    with pytest.raises(UnsafeStoreError, match="'mu'"):
        RunStore(tmp_path / "run", mode="a").read()


def test_damaged_checkpoint_fails_with_checkpoint_error(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_checkpoint(Checkpoint(0, [torch.ones(3)], []))
    (tmp_path / "run" / "checkpoints" / "window_00000" / "state_00000" / ".zarray").write_text("{")
    with pytest.raises(CheckpointError, match="window_00000"):
        RunStore(tmp_path / "run", mode="a").latest_checkpoint()


def test_write_checkpoint_validation(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(TypeError, match="window"):
        Checkpoint(-1, [], [])
    with pytest.raises(TypeError, match="outputs"):
        Checkpoint(0, {"not": "a list"}, [])
    with pytest.raises(TypeError, match="Checkpoint"):
        store.write_checkpoint((0, {}, b""))
    with pytest.raises(TypeError, match=r"outputs\[0\]\['net'\]"):
        store.write_checkpoint(Checkpoint(0, [{"net": torch.nn.Linear(2, 2)}], []))
    assert store.latest_checkpoint() is None
    assert store.close() == "nothing-written" and _leftovers(tmp_path) == []


def test_heterogeneous_records_round_trip(tmp_path):
    records = [{"epoch": 1, "loss": 0.5, "optimizer": "adam"},
               {"epoch": 2, "loss": 0.25, "mse": 1e-3, "worker": "tcp://w1", "done": True},
               {"epoch": 3, "loss": 0.125, "stage": 1, "optimizer": "lm"},
               {"epoch": 4, "loss": np.float64(0.0625), "stage": np.int64(2), "done": False}]
    ds = history_to_dataset(records)
    assert ds.sizes["record"] == 4
    assert ds["history_epoch"].dtype == np.int64
    assert ds["history_optimizer"].dtype.kind == "U"
    np.testing.assert_array_equal(ds["history_optimizer"].values, ["adam", "", "lm", ""])
    assert np.isnan(ds["history_mse"].values[[0, 2, 3]]).all()
    assert np.isnan(ds["history_stage"].values[:2]).all()
    store = RunStore(tmp_path / "run")
    store.write_checkpoint(Checkpoint(0, [], records))
    got = store.history()
    assert got == records
    # Types come back as written, also for int and bool columns that had gaps.
    assert type(got[2]["stage"]) is int and type(got[3]["stage"]) is int
    assert got[1]["done"] is True and got[3]["done"] is False


def test_records_validation():
    with pytest.raises(SpecError, match="mixes strings and numbers"):
        history_to_dataset([{"a": 1}, {"a": "x"}])
    with pytest.raises(SpecError, match=r"records\[0\]\['a'\]"):
        history_to_dataset([{"a": [1, 2]}])
    with pytest.raises(SpecError, match="records"):
        history_to_dataset([{"a/b": 1}])


# -- results: readable and self-describing ---------------------------------------------------

def test_write_result_is_readable_with_plain_open_zarr(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_meta({"problem": {"name": "E1"}, "seed": 3})
    store.write_checkpoint(Checkpoint(0, _state(0), _records(0)))
    store.write_checkpoint(Checkpoint(1, _state(1), _records(1)))
    history = store.history() + [{"window": 2, "epoch": 4, "loss": 1e-4, "submodel": "F1.2",
                                  "mse": 2e-9, "wall_s": 0.5}]
    summary = {"mse": 2e-9, "rel_l2": np.float64(1e-5), "epochs": 5, "wall_s": 1.25}
    solution = _solution()
    store.write_result(solution, history, summary, params=_params(1))

    ds = xr.open_zarr(str(tmp_path / "run"))
    for name in ("mu", "exact", "error"):
        np.testing.assert_array_equal(ds[name].values, solution[name].values)
    assert ds.sizes["record"] == len(history)
    assert records_from_dataset(ds) == history
    np.testing.assert_array_equal(ds["params_mu"].values, _params(1)["mu"])
    assert ds["params_F1.2"].dims == ("param_F1.2",)
    attrs = dict(ds.attrs)
    for key in ("daskie_version", "torch_version", "xarray_version", "zarr_version",
                "created_utc", "finished_utc", "path"):
        attrs.pop(key)
    assert attrs == {"problem": {"name": "E1"}, "seed": 3, "mse": 2e-9, "rel_l2": 1e-5,
                     "epochs": 5, "wall_s": 1.25}
    xr.testing.assert_identical(store.read().load(), ds.load())
    # Checkpoints stay, and the summary joins the metadata.
    assert store.latest_checkpoint().window == 1
    assert store.read_meta()["rel_l2"] == 1e-5
    assert store.close() == "complete"


def test_store_describes_itself(tmp_path):
    path = tmp_path / "sub" / "run.zarr"
    history = [{"kind": "step", "epoch": 1, "loss": 0.5, "step_s": 0.01, "loss_eq": 0.25,
                "custom": 3, "peak_rss_mb": 100.0},
               {"kind": "window", "window": 0, "mse": 1e-3, "elapsed_s": 1.0}]
    solution = _solution()
    solution["mu"].attrs = {"long_name": "mu (neural)", "note": "kept"}
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    with RunStore(path, mode="w-") as store:
        store.write_meta({"problem_spec": {"name": "heat", "units": {"x": "m", "mu": "K"}}})
        store.write_result(solution, history, {"mse": 1e-3})
    ds = xr.open_zarr(path)
    assert ds.attrs["path"] == str(path) and os.path.isabs(ds.attrs["path"])
    assert ds.attrs["daskie_version"] == daskie.__version__
    assert ds.attrs["torch_version"] == torch.__version__
    created = datetime.datetime.fromisoformat(ds.attrs["created_utc"])
    assert created.utcoffset() == datetime.timedelta(0) and created >= before
    assert ds["mu"].attrs == {"long_name": "mu (neural)", "note": "kept",
                              "description": "the trained network's solution mu(x)", "units": "K"}
    assert ds["error"].attrs["units"] == "K" and "mu - exact" in ds["error"].attrs["description"]
    assert ds["x0"].attrs["units"] == "m" and ds["x1"].attrs["long_name"] == "x_2"
    for key in ("kind", "epoch", "loss", "step_s", "window", "mse", "elapsed_s", "peak_rss_mb"):
        assert ds[f"history_{key}"].attrs["description"] == FIELDS[key], key
    assert ds["history_step_s"].attrs["units"] == "s"
    assert ds["history_peak_rss_mb"].attrs["units"] == "MiB"
    assert "'eq'" in ds["history_loss_eq"].attrs["description"]
    assert "not one of the common fields" in ds["history_custom"].attrs["description"]
    assert ds["record"].attrs["long_name"] == "record index"
    assert records_from_dataset(ds) == history


def test_write_result_again_replaces_it_on_scattered_points(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_result(_solution(), _records(0, n=5), {"mse": 1.0})
    points = xr.Dataset({"mu": ("point", np.arange(6.0)),
                         "x": (("point", "coord"), np.zeros((6, 3)))})
    params = {"mu": np.arange(4.0)}
    store.write_result(points, _records(0, n=2), {"mse": 0.5}, params=params)
    ds = xr.open_zarr(tmp_path / "run")
    assert set(ds.data_vars) == {"mu", "x", "params_mu", "history_window", "history_epoch",
                                 "history_loss", "history_submodel"}
    assert ds.sizes["record"] == 2 and ds["mu"].dims == ("point",)
    assert ds.attrs["mse"] == 0.5
    assert not math.isnan(ds["history_loss"].values[1])


def test_write_result_rejects_clashing_names(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(SpecError, match="history_loss"):
        store.write_result(xr.Dataset({"history_loss": ("i", [1.0])}), [], {})


# -- modes and paths ------------------------------------------------------------------------

def test_create_refuses_existing_path_and_names_it(tmp_path):
    path = tmp_path / "run"
    _finished_run(path)
    assert RunStore.exists(path) and not RunStore.exists(tmp_path / "other")
    with pytest.raises(StoreExistsError, match="run") as info:
        RunStore(path)
    assert str(path) in str(info.value)
    assert "overwrite" in str(info.value) and "resume" in str(info.value)
    # Anything at the path counts, not only run stores.
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreExistsError):
        RunStore(tmp_path / "file", mode="w-")


def test_overwrite_refuses_to_delete_what_is_not_a_run_store(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("precious")
    with pytest.raises(SpecError, match="not a daskie run store"):
        RunStore(tmp_path / "data", mode="w")
    assert (tmp_path / "data" / "keep.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    with RunStore(tmp_path / "empty", mode="w") as store:
        store.write_checkpoint(Checkpoint(0, [], []))
    assert RunStore.exists(tmp_path / "empty") and store.outcome == "resumable"


def test_resume_needs_an_existing_store(tmp_path):
    with pytest.raises(StoreMissingError, match="no run store at .*missing.*resume"):
        RunStore(tmp_path / "missing", mode="a")
    (tmp_path / "plain").mkdir()
    with pytest.raises(SpecError, match="not a daskie run store"):
        RunStore(tmp_path / "plain", mode="a")
    with pytest.raises(SpecError, match="mode"):
        RunStore(tmp_path / "x", mode="r")
    with pytest.raises(SpecError, match="store must be a path"):
        RunStore(3)


@pytest.mark.parametrize("where, reason", [
    ("afile.txt/sub.zarr", "is a file, not a directory"),
    ("afile.txt/deeper/sub.zarr", "is a file, not a directory"),
])
def test_store_under_a_file_is_a_named_path_error(tmp_path, where, reason):
    (tmp_path / "afile.txt").write_text("x")
    with pytest.raises(StorePathError, match=f"afile.txt.*{reason}"):
        RunStore.check(tmp_path / where)
    with pytest.raises(StorePathError, match=reason):
        RunStore(tmp_path / where)
    assert (tmp_path / "afile.txt").read_text() == "x"


def test_store_under_proc_is_a_named_path_error():
    with pytest.raises(StorePathError, match="/proc/daskie-test.zarr"):
        RunStore.check("/proc/daskie-test.zarr", probe=True)
    with pytest.raises(StorePathError, match="/proc/daskie-test.zarr"):
        RunStore("/proc/daskie-test.zarr")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_store_without_write_permission_is_a_named_path_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(StorePathError, match="no write permission"):
            RunStore(locked / "run.zarr")
    finally:
        locked.chmod(0o700)


# -- transactions ---------------------------------------------------------------------------

def test_overwrite_then_failure_keeps_the_old_run_intact(tmp_path):
    path = tmp_path / "run"
    _finished_run(path, seed=1)
    before = xr.open_zarr(path).load()
    with pytest.raises(RuntimeError, match="boom"):
        with RunStore(path, mode="w") as store:
            store.write_meta({"seed": 2})
            # Until the new run has a checkpoint, readers of the path see the old run.
            assert xr.open_zarr(path).attrs["seed"] == 1
            raise RuntimeError("boom")
    assert store.outcome == "previous-run-kept"
    assert "previous run" in store.message and str(path) in store.message
    xr.testing.assert_identical(xr.open_zarr(path).load(), before)
    _assert_tree_equal(RunStore(path, mode="a").latest_checkpoint().outputs, _state(1))
    assert _leftovers(tmp_path) == ["run"]


def test_an_interrupted_overwrite_keeps_the_finished_run_and_is_resumable_beside_it(tmp_path):
    path = tmp_path / "run"
    _finished_run(path, seed=1)
    before = xr.open_zarr(path).load()
    with pytest.raises(KeyboardInterrupt):
        with RunStore(path, mode="w") as store:
            store.write_meta({"seed": 2})
            store.write_checkpoint(Checkpoint(0, _state(2), _records(0)))
            assert store.pending and xr.open_zarr(path).attrs["seed"] == 1
            raise KeyboardInterrupt
    assert store.outcome == "previous-run-kept-resumable"
    pending = tmp_path / ".run.pending"
    assert RunStore.pending_of(path) == str(pending)
    assert store.message == (
        f"the previous run at {path} is unchanged; this unfinished run is kept beside it (last "
        f"complete window 0), in {pending}: resume=True / --resume continues it (and it replaces "
        f"the previous run when it finishes), overwrite=True / --overwrite starts again")
    xr.testing.assert_identical(xr.open_zarr(path).load(), before)  # nothing of it lost
    assert _leftovers(tmp_path) == [".run.pending", "run"]
    with pytest.raises(StoreExistsError, match="exists at"):
        RunStore(path, mode="w-")
    # Resuming continues the new run, from beside the old one ...
    with RunStore(path, mode="a") as resumed:
        resumed.lock()
        assert resumed.pending and resumed.read_meta()["seed"] == 2 and not resumed.has_result
        _assert_tree_equal(resumed.latest_checkpoint().outputs, _state(2))
        assert resumed.history() == _records(0)
        _damage(pending, 0, "history_loss")  # a damaged chunk is named where it is
        with pytest.raises(CheckpointError, match=f"window_00000 in {pending} cannot be read"):
            RunStore(path, mode="a").latest_checkpoint()
        resumed.write_checkpoint(Checkpoint(1, _state(3), _records(1)))
        xr.testing.assert_identical(xr.open_zarr(path).load(), before)
        # ... and its result replaces the old run, in one rename.
        resumed.write_result(_solution() * 2, _records(0) + _records(1), {"mse": 2e-3})
        assert not resumed.pending and xr.open_zarr(path).attrs["mse"] == 2e-3
    assert resumed.outcome == "complete" and resumed.message == f"the finished run is in {path}"
    done = RunStore(path, mode="a")
    assert done.read_meta()["seed"] == 2 and done.windows() == [0, 1]
    assert _leftovers(tmp_path) == ["run"]


def test_a_new_overwrite_discards_an_unfinished_one_and_a_direct_result_replaces_at_once(tmp_path):
    path = tmp_path / "run"
    _finished_run(path, seed=1)
    store = RunStore(path, mode="w")
    store.write_checkpoint(Checkpoint(0, _state(2), _records(0)))
    assert store.close(failed=True) == "previous-run-kept-resumable"
    with RunStore(path, mode="w") as again:  # starts again: the unfinished one goes
        assert _leftovers(tmp_path)[:1] == [".run.lock"] and ".run.pending" not in _leftovers(tmp_path)
        again.write_meta({"seed": 4})
        again.write_result(_solution() * 4, [], {"mse": 4e-3})  # no checkpoint: straight in
        assert xr.open_zarr(path).attrs["seed"] == 4
    assert again.outcome == "complete" and _leftovers(tmp_path) == ["run"]
    assert RunStore(path, mode="a").windows() == []


def test_overwrite_of_nothing_moves_in_at_the_first_checkpoint(tmp_path):
    path = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with RunStore(path, mode="w") as store:
            store.write_checkpoint(Checkpoint(0, _state(2), _records(0)))
            assert not store.pending and xr.open_zarr(path).attrs["path"] == str(path)
            raise KeyboardInterrupt
    assert store.outcome == "resumable"
    assert store.message.startswith(f"a resumable store is kept at {path}")
    assert "window 0" in store.message and _leftovers(tmp_path) == ["run"]


def test_fresh_path_failure_before_a_checkpoint_leaves_nothing(tmp_path):
    path = tmp_path / "new" / "dirs" / "run.zarr"
    with pytest.raises(ValueError):
        with RunStore(path, mode="w-") as store:
            store.write_meta({"seed": 1})
            raise ValueError("bad")
    assert store.outcome == "nothing-written" and store.message == f"nothing was written at {path}"
    assert _leftovers(tmp_path) == []
    with pytest.raises(SpecError, match="closed"):
        store.write_meta({"seed": 2})


def test_outcomes_of_successful_runs(tmp_path):
    store = _finished_run(tmp_path / "run")
    assert store.outcome == "complete" and store.close() == "complete"
    assert set(OUTCOMES) == {"complete", "resumable", "previous-run-kept",
                             "previous-run-kept-resumable", "nothing-written"}
    # Resuming a finished run without writing anything leaves it complete.
    with RunStore(tmp_path / "run", mode="a") as again:
        assert again.has_result
    assert again.outcome == "complete"


_CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    from daskie.store import Checkpoint, RunStore
    path, moment = sys.argv[1], sys.argv[2]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    store = RunStore(path, mode="w-")
    store.write_meta({"seed": 5})
    if moment == "before-first-checkpoint":
        die()
    store.write_checkpoint(Checkpoint(0, [{"theta": torch.arange(4.0)}], [{"window": 0, "loss": 1.0}]))
    if moment == "rename":        # every array of window 1 on disk, not yet committed
        real = os.rename
        def rename(src, dst):
            if ".writing-" in os.fspath(src):
                die()
            return real(src, dst)
        os.rename = rename
    elif moment == "arrays":      # in the middle of writing window 1's arrays
        import zarr.storage
        real_set = zarr.storage.LocalStore.set
        calls = []
        async def set_(self, key, value):
            calls.append(key)
            if len(calls) == 4:
                die()
            return await real_set(self, key, value)
        zarr.storage.LocalStore.set = set_
    elif moment == "consolidate": # after window 1 is committed, while the metadata is rewritten
        real_replace = os.replace
        def replace(src, dst):
            if os.fspath(dst).endswith(".zmetadata") and "window_00001" in open(src).read():
                die()
            return real_replace(src, dst)
        os.replace = replace
    store.write_checkpoint(Checkpoint(1, [{"theta": torch.arange(4.0) + 1}], [{"window": 1, "loss": 0.5}]))
    print("not killed")
""")


@pytest.mark.parametrize("moment", ["arrays", "rename", "consolidate"])
def test_a_process_killed_inside_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path,
                                                                                   moment):
    path = tmp_path / "run.zarr"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), moment],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    store = RunStore(path, mode="a")
    latest = store.latest_checkpoint()
    expected = 1 if moment == "consolidate" else 0  # committed before the kill, or not
    assert latest.window == expected
    assert torch.equal(latest.outputs[0]["theta"], torch.arange(4.0) + expected)
    assert store.history() == [{"window": w, "loss": [1.0, 0.5][w]} for w in range(expected + 1)]
    assert store.read_meta()["seed"] == 5
    assert xr.open_zarr(path).attrs["seed"] == 5  # the consolidated metadata is whole
    # Opening it to resume cleaned up the half-written window.
    assert not [n for n in os.listdir(path / "checkpoints") if n.startswith(".window")]


def test_a_process_killed_before_its_first_checkpoint_leaves_nothing_after_cleanup(tmp_path):
    path = tmp_path / "run.zarr"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), "before-first-checkpoint"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert not path.exists()  # only the hidden staging and lock file of the dead process
    assert [n.split("-")[0] for n in _leftovers(tmp_path)] == [".run.zarr.lock",
                                                               ".run.zarr.staging"]
    with RunStore(path, mode="w-") as store:  # the next run takes the lock (the kernel let it
        pass                                  # go) and removes the dead one's staging
    assert store.outcome == "nothing-written" and _leftovers(tmp_path) == []


def test_a_process_killed_while_replacing_a_run_leaves_the_old_run(tmp_path):
    path = tmp_path / "run.zarr"
    _finished_run(path, seed=3)
    child = textwrap.dedent("""
        import os, signal, sys
        import xarray as xr
        from daskie.store import Checkpoint, RunStore
        real = os.rename
        def rename(src, dst):
            if os.path.basename(src).endswith(".pending"):  # the old run aside, the new not in
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst)
        os.rename = rename
        store = RunStore(sys.argv[1], mode="w")
        store.write_meta({"seed": 4})
        store.write_checkpoint(Checkpoint(0, [], []))
        store.write_result(xr.Dataset({"mu": ("x0", [4.0])}), [], {"mse": 4e-3})
    """)
    proc = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert not path.exists()
    store = RunStore(path, mode="a")  # puts the old run back ...
    assert xr.open_zarr(path).attrs["seed"] == 3 and xr.open_zarr(path).attrs["mse"] == 3e-3
    store.lock()  # ... and the writer that resumes moves the finished new run in
    assert store.has_result and store.read_meta()["seed"] == 4
    assert xr.open_zarr(path).attrs["mse"] == 4e-3
    assert store.close() == "complete" and _leftovers(tmp_path) == ["run.zarr"]


# -- damaged checkpoints --------------------------------------------------------------------

def _four_windows(path):
    store = RunStore(path)
    for window in range(4):  # a run interrupted after window 3
        store.write_checkpoint(Checkpoint(window, _state(window), _records(window)))
    store.close(failed=True)


def _damage(path, window, array):
    chunk = path / "checkpoints" / f"window_{window:05d}" / array / "0"
    chunk.write_bytes(b"\x02\x01 not a blosc frame" + chunk.read_bytes()[20:])


def test_a_damaged_chunk_in_an_older_window_resumes_from_the_window_before_it(tmp_path):
    path = tmp_path / "run"
    _four_windows(path)
    _damage(path, 1, "history_loss")
    store = RunStore(path, mode="a")
    with pytest.warns(CheckpointWarning) as caught:
        latest = store.latest_checkpoint()
        assert store.history() == _records(0)  # whole up to the resume point
    assert len(caught) == 1  # once, though both were asked for
    message = str(caught[0].message)
    assert "\n" not in message and f"checkpoint checkpoints/window_00001 in {path}" in message
    assert "resuming from window 0" in message and "windows 1, 2, 3 are skipped" in message
    assert latest.window == 0
    _assert_tree_equal(latest.outputs, _state(0))
    # The resumed run's first checkpoint removes the skipped windows: trained again.
    store.write_checkpoint(Checkpoint(1, _state(11), _records(1)))
    assert store.windows() == [0, 1]
    store.close()
    again = RunStore(path, mode="a")
    assert again.latest_checkpoint().window == 1 and again.history() == _records(0) + _records(1)


def test_a_damaged_state_chunk_of_the_newest_window_resumes_from_the_one_before(tmp_path):
    path = tmp_path / "run"
    _four_windows(path)
    _damage(path, 3, "state_00000")
    _damage(path, 1, "state_00000")  # an older window's state is not needed to resume
    with pytest.warns(CheckpointWarning, match="window_00003.*from window 2.*windows 3 are"):
        latest = RunStore(path, mode="a").latest_checkpoint()
    assert latest.window == 2
    _assert_tree_equal(latest.outputs, _state(2))


def test_no_readable_checkpoint_is_one_named_error(tmp_path):
    path = tmp_path / "run"
    _four_windows(path)
    _damage(path, 0, "history_loss")
    with pytest.raises(CheckpointError) as caught:
        RunStore(path, mode="a").latest_checkpoint()
    message = str(caught.value)
    assert "\n" not in message and "window_00000" in message and "--overwrite" in message
