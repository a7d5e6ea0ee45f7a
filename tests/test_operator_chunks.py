"""Issue 29: zarr chunks along the query points. A data set made with ``point_chunk`` cuts
``mu`` into (block x point_chunk) chunks; trunk- and branch x trunk-parallel ranks take whole
chunks of points, so no rank reads a byte of another's. Checked on disk: every chunk file a
rank does not own is overwritten with garbage, and the rank's read (and its training rows)
still give exactly what was written."""

import os

import numpy as np
import pytest
import torch

from daskie.errors import SpecError
from daskie.nn import MLP, DeepONet
from daskie.operator import (OperatorBranchTrunkParallel, OperatorLoss, OperatorTrunkParallel,
                             TrainingSet, fit_operator, generate_dataset)
from daskie.operator.data import sensor_points, solve_block
from daskie.operator.formulation import instance_shard, point_shard
from daskie.problems.families import family
from daskie.store.dataset import OperatorDataset
from daskie.train import Adam

N, BLOCK, SENSORS, QUERY, CHUNK = 32, 8, 12, 17, 4  # 17 points: chunks of 4, 4, 4, 4, 1


@pytest.fixture(scope="module")
def chunked(tmp_path_factory):
    fam = family("fredholm-1d")
    path = str(tmp_path_factory.mktemp("data") / "chunked.zarr")
    generate_dataset(fam, path, N, seed=3, sensors=SENSORS, query=QUERY, block=BLOCK,
                     point_chunk=CHUNK, client="sync")
    return fam, path


def _written(fam):
    """What generation must have written: the blocks solved again, in this process."""
    s, q = sensor_points(fam, SENSORS), sensor_points(fam, QUERY)
    parts = [solve_block(fam, 3, lo, min(N, lo + BLOCK), s, q) for lo in range(0, N, BLOCK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("params", "f", "mu")}


def _chunk_file(path, i, j):
    return os.path.join(path, "mu", f"{i}.{j}")


def _spoil_all_but(path, keep):
    """Overwrite every chunk file of ``mu`` not in ``keep`` (pairs ``(instance block, point
    chunk)``) with bytes no codec decodes: reading any of them raises."""
    n_i, n_j = -(-N // BLOCK), -(-QUERY // CHUNK)
    for i in range(n_i):
        for j in range(n_j):
            if (i, j) not in keep:
                with open(_chunk_file(path, i, j), "wb") as fh:
                    fh.write(b"not a chunk")


def _copy(path, tmp_path):
    import shutil

    out = str(tmp_path / "copy.zarr")
    shutil.copytree(path, out)
    return out


def _chunks_of(lo, hi, a, b):
    return {(i, j) for i in range(lo // BLOCK, -(-hi // BLOCK))
            for j in range(a // CHUNK, -(-b // CHUNK))}


def test_the_chunked_data_set_reads_back_what_was_written(chunked):
    fam, path = chunked
    store = OperatorDataset.open(path)
    assert store.point_chunk == CHUNK
    assert store._group["mu"].chunks == (BLOCK, CHUNK)
    assert store._group["f"].chunks == (BLOCK, SENSORS)  # only mu is cut along the points
    want = _written(fam)
    got = store.read(0, N)
    for name in ("params", "f", "mu"):
        np.testing.assert_array_equal(got[name], want[name])
    # any slab, aligned with the chunks or not
    for lo, hi, a, b in [(0, 8, 0, 4), (5, 27, 3, 14), (24, 32, 16, 17), (0, 32, 0, 17)]:
        np.testing.assert_array_equal(store.read(lo, hi, points=(a, b))["mu"],
                                      want["mu"][lo:hi, a:b])


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 5])
def test_point_shards_are_whole_chunks_that_cover_the_grid_once(ranks):
    spans = [point_shard(QUERY, (j, ranks), CHUNK) for j in range(ranks)]
    assert spans[0][0] == 0 and spans[-1][1] == QUERY
    for (a, b), (c, _) in zip(spans, spans[1:]):
        assert b == c and a < b  # contiguous, none empty
    for a, b in spans:
        assert a % CHUNK == 0 and (b % CHUNK == 0 or b == QUERY)
    counts = [-(-b // CHUNK) - a // CHUNK for a, b in spans]
    assert max(counts) - min(counts) <= 1
    owners = [set(range(a // CHUNK, -(-b // CHUNK))) for a, b in spans]
    assert sum(len(o) for o in owners) == len(set().union(*owners))  # no chunk shared


def test_fewer_chunks_than_ranks_fall_back_to_the_even_split():
    # one chunk (a data set made without point_chunk): the old even split
    assert [point_shard(9, (j, 2), 9) for j in range(2)] == [(0, 4), (4, 9)]
    assert [point_shard(9, (j, 2)) for j in range(2)] == [(0, 4), (4, 9)]
    # 5 chunks for 6 ranks: even split too
    assert point_shard(QUERY, (0, 6), CHUNK) == (0, 2)


@pytest.mark.parametrize("grid", [(1, 2), (1, 3), (2, 2), (4, 2)], ids=str)
def test_each_rank_reads_only_its_own_chunks(chunked, tmp_path, grid):
    fam, path = chunked
    instances, points = grid
    want = _written(fam)
    train = (0, N)
    for r in range(instances * points):
        i, j = divmod(r, points)
        lo, hi = instance_shard(*train, (i, instances))
        assert lo % BLOCK == 0 and hi % BLOCK == 0  # the grids here cut on block edges
        a, b = point_shard(QUERY, (j, points), CHUNK)
        spoiled = _copy(path, tmp_path / f"r{r}")
        _spoil_all_but(spoiled, _chunks_of(lo, hi, a, b))
        store = OperatorDataset.open(spoiled)
        np.testing.assert_array_equal(store.read(lo, hi, points=(a, b))["mu"],
                                      want["mu"][lo:hi, a:b])
        # the spoiled chunks really are unreadable: a rank that strayed would fail
        with pytest.raises(RuntimeError, match="decompression"):
            store.read(0, N)
        # and the rank's training rows come from those chunks alone
        net = DeepONet(SENSORS, 1, branch=MLP(hidden=(6,)), trunk=MLP(hidden=(6,)), width=4)
        rows = OperatorLoss(net).shard_rows(TrainingSet(spoiled, fam, train),
                                            shard=(i, instances), points=(j, points))
        np.testing.assert_array_equal(rows.mu.numpy(), want["mu"][lo:hi, a:b])
        np.testing.assert_array_equal(rows.x, sensor_points(fam, QUERY)[a:b])


def test_training_on_chunked_points_is_the_same_run_as_on_one_chunk(chunked, tmp_path):
    """The chunk-aligned shards change which rows each rank holds, not the loss: the
    trunk- and grid-parallel runs equal the one-rank run on the same data."""
    from daskie.operator import OperatorDataParallel

    fam, path = chunked
    net = DeepONet(SENSORS, 1, branch=MLP(hidden=(6,)), trunk=MLP(hidden=(6,)), width=4)
    kw = dict(loss=OperatorLoss(net, skip=True), client="sync",
              optimizer=Adam(lr=3e-3, steps=8), train=(0, 24), test=(24, 32))
    one, _ = fit_operator(fam, path, strategy=OperatorDataParallel(shards=1, window=None), **kw)
    for strategy in (OperatorTrunkParallel(points=3, window=3),
                     OperatorBranchTrunkParallel(instances=2, points=2, window=None)):
        op, _ = fit_operator(fam, path, strategy=strategy, **kw)
        torch.testing.assert_close(op.theta, one.theta, rtol=0, atol=1e-10)


def test_a_bad_point_chunk_is_refused_naming_it(tmp_path):
    fam = family("fredholm-1d")
    for bad in (0, -4, 2.5, True):
        with pytest.raises(SpecError, match="point_chunk"):
            generate_dataset(fam, str(tmp_path / "bad.zarr"), 8, sensors=SENSORS,
                             query=QUERY, block=BLOCK, point_chunk=bad, client="sync")
    assert not os.path.exists(tmp_path / "bad.zarr")


def test_a_data_set_without_point_chunk_keeps_its_settings_and_token(tmp_path):
    """The spec gains ``point_chunk`` only when it is given: data sets made before it are
    continued, not refused."""
    from daskie.operator.api import _dataset_spec

    fam = family("fredholm-1d")
    plain = _dataset_spec(fam, 16, 0, SENSORS, QUERY, BLOCK)
    assert "point_chunk" not in plain
    cut = _dataset_spec(fam, 16, 0, SENSORS, QUERY, BLOCK, CHUNK)
    assert cut["point_chunk"] == CHUNK and cut["token"] != plain["token"]
    path = str(tmp_path / "plain.zarr")
    generate_dataset(fam, path, 16, sensors=SENSORS, query=QUERY, block=BLOCK, client="sync")
    assert OperatorDataset.open(path).point_chunk == QUERY
    with pytest.raises(SpecError, match="point_chunk"):
        generate_dataset(fam, path, 16, sensors=SENSORS, query=QUERY, block=BLOCK,
                         point_chunk=CHUNK, client="sync")


def test_a_familys_point_chunk_applies_where_it_cuts_the_grid_into_whole_chunks():
    """fredholm-2d-fine's 512 cuts its own 64 x 64 grid in 8; on a 24 x 24 grid (576 points)
    it would leave 512 and 64: the default is then one chunk, and an explicit one is kept."""
    from daskie.operator.api import _point_chunk

    fine = family("fredholm-2d-fine")
    assert _point_chunk(fine, None, 64) == 512
    assert _point_chunk(fine, None, 24) is None
    assert _point_chunk(fine, 144, 24) == 144
    assert _point_chunk(family("fredholm-1d"), None, 33) is None
