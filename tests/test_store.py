"""RunStore: write == read for metadata, checkpoints, history and results."""

import math

import numpy as np
import pytest
import xarray as xr
import zarr

from daskie.errors import SpecError, StoreExistsError, StoreMissingError
from daskie.store import RunStore, history_to_dataset


def _params(seed):
    rng = np.random.default_rng(seed)
    return {"mu": rng.standard_normal(7), "F1.2": rng.standard_normal(3)}


def _records(window, n=2):
    return [{"window": window, "epoch": window * n + k, "loss": 10.0 ** -(window + k),
             "submodel": "mu"} for k in range(n)]


def _solution():
    x0 = np.linspace(0.0, 1.0, 4)
    x1 = np.linspace(0.0, 1.0, 3)
    exact = np.add.outer(x0, x1)
    mu = exact + 1e-6
    return xr.Dataset({"mu": (("x0", "x1"), mu), "exact": (("x0", "x1"), exact),
                       "error": (("x0", "x1"), mu - exact)}, coords={"x0": x0, "x1": x1})


def test_meta_round_trip_with_nested_dicts_and_numpy_scalars(tmp_path):
    store = RunStore(tmp_path / "run")
    meta = {"problem": {"name": "E1", "domain": {"lo": [0.0, 0.0], "hi": [1.0, 1.0]}},
            "plan": {"n_sub": 3, "groups": [["mu"], ["F1.1", "F1.2"]]}, "seed": np.int64(7),
            "lam": np.array([0.5, 1.5])}
    store.write_meta(meta)
    store.write_meta({"config": {"window": 50}})
    got = RunStore(tmp_path / "run", mode="a").read_meta()
    assert got == {**meta, "seed": 7, "lam": [0.5, 1.5], "config": {"window": 50}}
    assert type(got["seed"]) is int
    assert xr.open_zarr(tmp_path / "run").attrs["problem"]["domain"]["hi"] == [1.0, 1.0]


def test_meta_rejects_what_json_cannot_hold(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(SpecError, match=r"meta\['f'\]"):
        store.write_meta({"f": lambda x: x})
    with pytest.raises(SpecError, match="non-string key"):
        store.write_meta({"d": {1: "a"}})


def test_checkpoint_round_trip_is_exact(tmp_path):
    store = RunStore(tmp_path / "run")
    assert store.latest_checkpoint() is None and store.history() == []
    params = _params(0)
    blob = bytes(range(256)) + b"\x00\x00"
    store.write_checkpoint(0, params, blob, _records(0))
    window, got, got_blob = RunStore(tmp_path / "run", mode="a").latest_checkpoint()
    assert window == 0 and list(got) == ["mu", "F1.2"]
    for name in params:
        assert got[name].dtype == np.float64
        np.testing.assert_array_equal(got[name], params[name])
    assert got_blob == blob
    assert store.history() == _records(0)
    # Users can read a checkpoint with xarray alone.
    ds = xr.open_zarr(tmp_path / "run", group="checkpoints/window_00000", consolidated=False)
    np.testing.assert_array_equal(ds["params_mu"].values, params["mu"])


def test_latest_checkpoint_is_newest_complete_one_and_history_is_in_window_order(tmp_path):
    store = RunStore(tmp_path / "run")
    # Written out of order: the order of windows comes from their index, not from the writes.
    for window in (2, 0, 1):
        store.write_checkpoint(window, _params(window), f"state{window}".encode(),
                               _records(window))
    # A crash while writing window 3: its group exists but was never marked complete.
    store.write_checkpoint(3, _params(3), b"state3", _records(3))
    del zarr.open_group(tmp_path / "run" / "checkpoints" / "window_00003").attrs["complete"]
    window, params, blob = RunStore(tmp_path / "run", mode="a").latest_checkpoint()
    assert (window, blob) == (2, b"state2")
    np.testing.assert_array_equal(params["mu"], _params(2)["mu"])
    assert store.history() == _records(0) + _records(1) + _records(2)
    # Rewriting the crashed window makes it count.
    store.write_checkpoint(3, _params(3), b"again", _records(3, n=1))
    assert store.latest_checkpoint()[::2] == (3, b"again")
    assert store.history()[-2:] == _records(2)[-1:] + _records(3, n=1)


def test_empty_blob_params_and_records(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_checkpoint(5, {}, b"", [])
    assert store.latest_checkpoint() == (5, {}, b"")
    assert store.history() == []


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
    store.write_checkpoint(0, {}, b"", records)
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


def test_write_result_is_readable_with_plain_open_zarr(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_meta({"problem": {"name": "E1"}, "seed": 3})
    store.write_checkpoint(0, _params(0), b"s0", _records(0))
    store.write_checkpoint(1, _params(1), b"s1", _records(1))
    history = store.history() + [{"window": 2, "epoch": 4, "loss": 1e-4, "submodel": "F1.2",
                                  "mse": 2e-9, "wall_s": 0.5}]
    summary = {"mse": 2e-9, "rel_l2": np.float64(1e-5), "epochs": 5, "wall_s": 1.25}
    solution = _solution()
    store.write_result(solution, history, summary)

    ds = xr.open_zarr(str(tmp_path / "run"))
    for name in ("mu", "exact", "error"):
        xr.testing.assert_equal(ds[name].load(), solution[name])
    assert ds.sizes["record"] == len(history)
    np.testing.assert_array_equal(ds["history_epoch"].values, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(ds["history_submodel"].values,
                                  ["mu", "mu", "mu", "mu", "F1.2"])
    assert ds["history_submodel"].dtype.kind == "U"
    assert np.isnan(ds["history_mse"].values[:4]).all() and ds["history_mse"].values[4] == 2e-9
    # Final parameters default to the latest complete checkpoint's.
    np.testing.assert_array_equal(ds["params_mu"].values, _params(1)["mu"])
    assert ds["params_F1.2"].dims == ("param_F1.2",)
    assert ds.attrs == {"problem": {"name": "E1"}, "seed": 3, "mse": 2e-9, "rel_l2": 1e-5,
                        "epochs": 5, "wall_s": 1.25}
    xr.testing.assert_identical(store.read().load(), ds.load())
    # Checkpoints stay, and the summary joins the metadata.
    assert store.latest_checkpoint()[0] == 1
    assert store.read_meta()["rel_l2"] == 1e-5


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


def test_create_refuses_existing_path_and_names_it(tmp_path):
    path = tmp_path / "run"
    RunStore(path)
    assert RunStore.exists(path) and not RunStore.exists(tmp_path / "other")
    with pytest.raises(StoreExistsError, match="run") as info:
        RunStore(path)
    assert str(path) in str(info.value)
    assert "overwrite" in str(info.value) and "resume" in str(info.value)
    # Anything at the path counts, not only run stores.
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreExistsError):
        RunStore(tmp_path / "file", mode="w-")


def test_overwrite_replaces_the_store(tmp_path):
    path = tmp_path / "run"
    old = RunStore(path)
    old.write_meta({"seed": 1})
    old.write_checkpoint(4, _params(0), b"old", _records(4))
    new = RunStore(path, mode="w")
    assert new.read_meta() == {} and new.latest_checkpoint() is None
    assert xr.open_zarr(path).attrs == {}


def test_overwrite_refuses_to_delete_what_is_not_a_run_store(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("precious")
    with pytest.raises(SpecError, match="not a daskie run store"):
        RunStore(tmp_path / "data", mode="w")
    assert (tmp_path / "data" / "keep.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    assert RunStore.exists(RunStore(tmp_path / "empty", mode="w").path)


def test_resume_needs_an_existing_store(tmp_path):
    with pytest.raises(StoreMissingError, match="no run store at .*missing.*resume"):
        RunStore(tmp_path / "missing", mode="a")
    (tmp_path / "plain").mkdir()
    with pytest.raises(SpecError, match="not a daskie run store"):
        RunStore(tmp_path / "plain", mode="a")
    with pytest.raises(SpecError, match="mode"):
        RunStore(tmp_path / "x", mode="r")


def test_checkpoint_validation(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(SpecError, match="window"):
        store.write_checkpoint(-1, {}, b"", [])
    with pytest.raises(SpecError, match="blob"):
        store.write_checkpoint(0, {}, "text", [])
    with pytest.raises(SpecError, match=r"params\['mu'\].*flat"):
        store.write_checkpoint(0, {"mu": np.zeros((2, 2))}, b"", [])
    assert store.latest_checkpoint() is None
