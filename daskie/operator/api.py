"""Entry points of operator learning: generate a family's data set, train an operator on it.

Both take the public ``client`` argument (``None``: daskie's embedded LocalCluster with two
workers, as :func:`daskie.solve` starts it; ``"sync"``: in this process; a
``distributed.Client``) and turn it into an executor here, and nowhere below.
"""

from __future__ import annotations

import contextlib
import os

from daskie.errors import SpecError, check_int

__all__ = ["generate_dataset", "fit_operator"]

#: Default points per coordinate: sensors and query points (1-D, 2-D and up).
_SENSORS = {1: 32, 2: 8}
_QUERY = {1: 33, 2: 12}


@contextlib.contextmanager
def _executor(client):
    from daskie.runtime.executor import as_executor

    if client is None:
        from daskie.api import local_cluster

        with local_cluster(workers=2) as c:
            yield as_executor(c)
    else:
        yield as_executor(client)


def _check_family(family):
    from daskie.problems.families import Family

    if not isinstance(family, Family):
        raise SpecError(f"family must be a daskie Family (daskie.problems.families.family(name)), "
                        f"got {family!r}")


def generate_dataset(family, path, n: int, *, seed: int = 0, sensors: int | None = None,
                     query: int | None = None, block: int = 16, client=None, ahead=None,
                     on_block=None) -> dict:
    """Solve ``n`` instances of ``family`` by its reference, as tasks, into a zarr data set.

    Instances are drawn from the family's seeded streams (instance i from ``(seed, i)``),
    solved in blocks of ``block`` (one task each) and written to ``path`` block by block as
    the results arrive. A data set already at ``path`` with the same settings is continued:
    only its missing blocks are computed.

    Parameters
    ----------
    family : Family
    path : str or path-like
        The data set (``xarray.open_zarr(path)`` reads it).
    n : int
        Instances.
    seed : int
    sensors, query : int, optional
        Points per coordinate of the regular sensor grid (the branch's input; default 32 in
        1-D, 8 in 2-D) and of the query grid (where ``mu`` is stored; default 33, 12).
    block : int
        Instances per task (and per zarr chunk).
    client : None, "sync" or distributed.Client
        Where the tasks run (None: an embedded LocalCluster of two workers).
    ahead : int, optional
        Tasks in flight at most (default four per worker).
    on_block : callable, optional
        ``on_block(k, written, pending)`` after each block is on disk.

    Returns
    -------
    dict
        ``path``, ``n``, ``blocks``, ``solved`` (blocks computed now), ``skipped`` (found on
        disk), ``wall_s``.
    """
    from dask.base import tokenize

    from daskie.operator.data import generate_on, sensor_points
    from daskie.store.dataset import OperatorDataset

    _check_family(family)
    check_int("n", n)
    check_int("seed", seed, 0)
    check_int("block", block)
    d = family.dim
    sensors = _SENSORS.get(d, 4) if sensors is None else sensors
    query = _QUERY.get(d, 5) if query is None else query
    check_int("sensors", sensors, 2)
    check_int("query", query, 2)
    spec = {"family": family.describe(), "seed": int(seed), "n": int(n), "block": int(block),
            "sensors_per_axis": int(sensors), "query_per_axis": int(query)}
    spec["token"] = tokenize(repr(sorted(spec.items())))[:16]
    store = OperatorDataset.create(path, spec, sensor_points(family, sensors),
                                   sensor_points(family, query), family.n_params)
    with _executor(client) as executor:
        out = generate_on(executor, family, store, seed=seed, ahead=ahead, on_block=on_block)
    return {"path": store.path, "n": store.n, **out}


def fit_operator(family, data, net=None, *, strategy=None, optimizer=None, loss=None,
                 train=None, test=None, client=None, seed: int = 0, threads: int | None = 1,
                 target_loss: float = 0.0, store=None, resume: bool = False, on_window=None):
    """Train a DeepONet on a family's data set; returns the operator and its history.

    Parameters
    ----------
    family : Family
        The family the data set holds (checked against the data set's description).
    data : str or path-like
        A data set made by :func:`generate_dataset`, visible to every worker.
    net : DeepONet, optional
        Default: ``DeepONet(sensors=m, dim=d)`` with ``m`` the data set's sensors (plus one,
        lambda, for families that vary it). Give either ``net`` or ``loss``.
    strategy : OperatorDataParallel, optional
        Default ``OperatorDataParallel()`` (one rank per worker; 2 ranks in process).
    optimizer : Optimizer, optional
        Default ``Adam(lr=1e-3, steps=1000)``; ``LevenbergMarquardt(...)`` where the
        parameter count allows (each rank forms its rows' ``J^T J``, P x P).
    loss : OperatorLoss, optional
        Data and/or physics-informed loss (default: the data loss of ``net``).
    train, test : (int, int), optional
        Instance ranges ``[first, stop)``; default: the last ``min(200, n // 5)``
        instances are held out and the rest trained on.
    client : None, "sync" or distributed.Client
        Where training runs (None: an embedded LocalCluster of two workers).
    seed : int
        Seed of the initial parameters.
    threads : int or None
        torch threads per rank.
    target_loss : float
        Stop once the loss falls below it.
    store : str or path-like, optional
        A run store (:class:`~daskie.store.RunStore`) for the window checkpoints; the trained
        operator is reloaded from it with :meth:`Operator.load`. Never replaced: a new run
        needs a new path.
    resume : bool
        Continue the run in ``store`` from its newest checkpoint (the same arguments
        otherwise): it ends with the numbers of a run that was never stopped.
    on_window : callable, optional
        ``on_window(k, outputs)`` after every window.

    Returns
    -------
    (Operator, list of dict)
        The trained operator (callable on ``f`` at the sensors) and every rank's records.
    """
    from daskie.nn.deeponet import DeepONet
    from daskie.operator.formulation import OperatorLoss, TrainingSet, n_branch_inputs
    from daskie.operator.model import Operator
    from daskie.runtime.context import RunContext
    from daskie.runtime.window_graph import run_token
    from daskie.store import Checkpoint
    from daskie.store.dataset import OperatorDataset
    from daskie.strategies.operator import OperatorDataParallel
    from daskie.train.optimizers import Adam, Optimizer

    _check_family(family)
    if not isinstance(data, (str, os.PathLike)):
        raise SpecError("data must be the path of a data set made by generate_dataset, "
                        f"got {data!r}")
    data_store = OperatorDataset.open(data)
    spec = data_store.spec
    if spec.get("family") != family.describe():
        raise SpecError(f"the data set at {data_store.path} holds family "
                        f"{spec.get('family', {}).get('name')!r} with other settings than "
                        f"{family.name!r}")
    if not data_store.complete:
        raise SpecError(f"the data set at {data_store.path} is not complete "
                        f"({len(data_store.pending())} blocks missing): run generate_dataset "
                        "again to finish it")
    if loss is None:
        m = n_branch_inputs(family, len(data_store.sensors))
        net = DeepONet(sensors=m, dim=family.dim) if net is None else net
        loss = OperatorLoss(net)
    elif not isinstance(loss, OperatorLoss):
        raise SpecError(f"loss must be an OperatorLoss, got {loss!r}")
    elif net is not None and net != loss.net:
        raise SpecError("give the network once: as net=, or inside loss=OperatorLoss(net)")
    strategy = OperatorDataParallel() if strategy is None else strategy
    if not isinstance(strategy, OperatorDataParallel):
        raise SpecError(f"strategy must be an OperatorDataParallel, got {strategy!r}")
    optimizer = Adam(lr=1e-3, steps=1000) if optimizer is None else optimizer
    if not isinstance(optimizer, Optimizer):
        raise SpecError(f"optimizer must be a daskie Optimizer, got {optimizer!r}")
    check_int("seed", seed, 0)
    if train is None:
        held = min(200, data_store.n // 5)
        train = (0, data_store.n - held)
        test = (data_store.n - held, data_store.n) if test is None and held else test
    training = TrainingSet(data_store.path, family, train, test)
    token = run_token(training.describe(), spec, loss, optimizer, strategy, seed, threads,
                      target_loss)
    ctx = RunContext(training, loss, optimizer, int(seed), float(target_loss), threads, token)
    meta = {"operator": {"token": token, "family": family.describe(), "data": data_store.path,
                         "net": Operator.net_spec(loss.net), "loss": repr(loss),
                         "optimizer": repr(optimizer), "strategy": repr(strategy),
                         "seed": int(seed), "train": list(training.train),
                         "test": None if training.test is None else list(training.test)}}
    runs, start, history = _open_run(store, resume, token, meta)

    def window_done(k, outputs):
        recs = [r for out in outputs for r in out.records]
        history.extend(recs)
        if runs is not None:
            runs.write_checkpoint(Checkpoint(k, [o.to_tree() for o in outputs], recs))
        if on_window is not None:
            on_window(k, outputs)

    try:
        with _executor(client) as executor:
            final = strategy.execute(executor, ctx, None, None, resume=start,
                                     on_window=window_done)
    finally:
        if runs is not None:
            runs.close()
    op = Operator(loss.net, final[0].state.theta, data_store.sensors, data_store.query, family)
    return op, history


def _open_run(store, resume, token, meta):
    """``(run store or None, resume point or None, earlier records)`` for ``fit_operator``."""
    from daskie.runtime.context import WindowOutput
    from daskie.store import RunStore

    if store is None:
        if resume:
            raise SpecError("resume=True needs the store= of the run to continue")
        return None, None, []
    if not resume:
        runs = RunStore(store, mode="w-")
        runs.write_meta(meta)
        return runs, None, []
    runs = RunStore(store, mode="a")
    old = runs.read_meta().get("operator", {})
    if old.get("token") != token:
        runs.close()
        raise SpecError(f"the run in {runs.path} was trained with other arguments (family, data, "
                        "network, loss, optimizer, strategy or seed): resume it with the same ones")
    ckpt = runs.latest_checkpoint()
    if ckpt is None:
        return runs, None, []
    return runs, (ckpt.window, [WindowOutput.from_tree(t) for t in ckpt.outputs]), runs.history()
