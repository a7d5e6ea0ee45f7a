"""Entry points of operator learning: generate a family's data set, train an operator on it.

Each takes the public ``client`` argument with the meaning it has at every front door
(``None``: daskie's embedded LocalCluster with two workers; ``"sync"``: this process; a
``distributed.Client``) and runs inside a run session (:mod:`daskie.session`).
"""

from __future__ import annotations

import logging
import os

from daskie.errors import SpecError, check_int

__all__ = ["generate_dataset", "fit_operator", "learn_operator", "default_net",
           "default_optimizer", "plan_split", "split_strategy"]

log = logging.getLogger("daskie.operator")

#: Default points per coordinate: sensors and query points (1-D, 2-D and up).
_SENSORS = {1: 32, 2: 8}
_QUERY = {1: 33, 2: 12}


def _check_family(family):
    from daskie.problems.parametric import check_family

    check_family(family)


def _check_optimizer(optimizer, loss):
    """Refuse what is not a daskie optimizer, and a :class:`~daskie.train.LeastSquaresHead`
    where ``loss`` is not linear in the branch's output layer (before any data are generated
    or any training starts)."""
    from daskie.operator.formulation import OperatorLoss
    from daskie.train.head import LeastSquaresHead
    from daskie.train.optimizers import Optimizer

    if not isinstance(optimizer, Optimizer):
        raise SpecError(f"optimizer must be a daskie Optimizer, got {optimizer!r}")
    head = any(isinstance(s, LeastSquaresHead) for s in optimizer.stages())
    if head and isinstance(loss, OperatorLoss) and (loss.physics > 0 or loss.net.outputs != 1):
        raise SpecError("LeastSquaresHead solves the branch's output layer of the data loss: "
                        "it needs OperatorLoss(physics=0) and a DeepONet with one output")


def generate_dataset(family, path, n: int, *, seed: int = 0, sensors: int | None = None,
                     query: int | None = None, block: int = 16, client=None, ahead=None,
                     on_block=None, point_chunk: int | None = None) -> dict:
    """Solve ``n`` instances of ``family`` by its reference, as tasks, into a zarr data set.

    Instances are drawn from the family's seeded streams (instance i from ``(seed, i)``),
    solved in blocks of ``block`` (one task each), and each task writes its block into
    ``path`` itself (``path`` must be visible to every worker, as training needs it to be),
    flagging it done last. A data set already at ``path`` with the same settings is
    continued: only its missing blocks are computed.

    Parameters
    ----------
    family : Family or ParametricFamily
    path : str or path-like
        The data set (``xarray.open_zarr(path)`` reads it).
    n : int
        Instances.
    seed : int
    sensors, query : int, optional
        Points per coordinate of the regular sensor grid (the branch's input) and of the
        query grid (where ``mu`` is stored): default the family's own (``sensors``,
        ``query`` of a :class:`~daskie.problems.parametric.ParametricFamily`: 8 and 64 for
        ``fredholm-2d-fine``), else 32 and 33 in 1-D, 8 and 12 in 2-D.
    block : int
        Instances per task (and per zarr chunk).
    client : None, "sync" or distributed.Client
        Where the tasks run (None: an embedded LocalCluster of two workers).
    point_chunk : int, optional
        Query points per zarr chunk of ``mu`` (default: the family's ``point_chunk`` where it
        cuts the query grid into whole chunks, else all of them). Trunk-parallel ranks then take whole chunks
        (:func:`~daskie.operator.formulation.point_shard`): each reads only its own bytes.
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
    from daskie.operator.data import generate_on, sensor_points
    from daskie.session import check_client, open_session
    from daskie.store.dataset import OperatorDataset

    _check_family(family)
    check_client(client)
    sensors, query = _points(family, sensors, query)
    spec = _dataset_spec(family, n, seed, sensors, query, block,
                         _point_chunk(family, point_chunk, query))
    store = OperatorDataset.create(path, spec, sensor_points(family, sensors),
                                   sensor_points(family, query), family.n_params)
    with open_session() as session, session.connect(client) as executor:
        out = generate_on(executor, family, store, seed=seed, ahead=ahead, on_block=on_block)
    return {"path": store.path, "n": store.n, **out}


def _points(family, sensors, query):
    """Points per coordinate of the sensor and query grids (defaults by dimension)."""
    d = family.dim
    if sensors is None:  # the family's own default (a fine-grid family), else by dimension
        sensors = getattr(family, "sensors", None) or _SENSORS.get(d, 4)
    if query is None:
        query = getattr(family, "query", None) or _QUERY.get(d, 5)
    check_int("sensors", sensors, 2)
    check_int("query", query, 2)
    return sensors, query


def _point_chunk(family, point_chunk, query):
    """Query points per chunk of ``mu``: the argument, else the family's where it cuts the
    ``query ** dim`` points into whole chunks (None: all in one)."""
    if point_chunk is None:
        own = getattr(family, "point_chunk", None)
        q = int(query) ** family.dim
        return own if own is not None and q % own == 0 and q > own else None
    check_int("point_chunk", point_chunk)
    return point_chunk


def _dataset_spec(family, n, seed, sensors, query, block, point_chunk=None) -> dict:
    """What a data set holds, with its deterministic token (the same settings, the same
    token: a data set is continued, never regenerated). ``point_chunk`` enters the spec
    only when given (data sets made before it keep their tokens)."""
    from dask.base import tokenize

    check_int("n", n)
    check_int("seed", seed, 0)
    check_int("block", block)
    spec = {"family": family.describe(), "seed": int(seed), "n": int(n), "block": int(block),
            "sensors_per_axis": int(sensors), "query_per_axis": int(query)}
    if point_chunk is not None:
        spec["point_chunk"] = int(point_chunk)
    spec["token"] = tokenize(repr(sorted(spec.items())))[:16]
    return spec


def default_net(family, sensors: int):
    """The DeepONet :func:`learn_operator` trains when given none, for a data set with
    ``sensors`` sensor values: a linear branch for linear families (their solution operator is
    linear in ``f``: the trunk need only span the solutions), a one-layer tanh branch for
    nonlinear ones; small enough for Levenberg-Marquardt (1505, 2629 and 1633 parameters
    for the built-in families). A family with its own ``training``
    (:class:`~daskie.problems.parametric.OperatorDefaults`: the kernel-varying built-in
    families) gets the branch, trunk and width it names."""
    from daskie.nn import MLP, DeepONet
    from daskie.operator.formulation import n_branch_inputs

    m = n_branch_inputs(family, sensors)
    own = getattr(family, "training", None)
    if own is not None:
        return DeepONet(m, family.dim,
                        branch=None if own.branch is None else MLP(hidden=own.branch),
                        trunk=MLP(hidden=own.trunk), width=own.width)
    if family.linear:
        return DeepONet(m, family.dim, branch=None, trunk=MLP(hidden=(16, 16)),
                        width=16 if family.dim >= 2 else 24)
    return DeepONet(m, family.dim, branch=MLP(hidden=(32,)), trunk=MLP(hidden=(20, 20)),
                    width=20)


def default_optimizer(net, steps: int | None = None, family=None):
    """What :func:`learn_operator` trains ``net`` with when given no optimizer: the
    optimizer of ``family``'s own ``training``
    (:class:`~daskie.problems.parametric.OperatorDefaults`) when it has one, else
    Levenberg-Marquardt (default 100 steps) up to 4000 parameters, where each rank's
    ``J^T J`` is at most 128 MB, Adam (default 2000 steps) beyond. ``steps`` replaces the
    default number of steps.

    LM's step costs rows x P^2: over thousands of instances of a nonlinear family,
    :class:`~daskie.train.LeastSquaresHead` around Adam (a larger branch, full batch) is
    the better choice; ``benchmarks/operator.py`` trains ``volterra-1d-sin`` so to a median
    relative L2 below 1e-3 on 3000 instances."""
    from daskie.train import Adam, LeastSquaresHead, LevenbergMarquardt

    own = getattr(family, "training", None)
    if own is not None:
        k = own.steps if steps is None else steps
        if own.optimizer == "lm":
            return LevenbergMarquardt(steps=k)
        adam = Adam(lr=own.lr, decay=own.decay, steps=k)
        return LeastSquaresHead(adam, ridge=own.ridge) if own.optimizer == "lshead" else adam
    if net.n_params() <= 4000:
        return LevenbergMarquardt(steps=100 if steps is None else steps)
    return Adam(steps=2000 if steps is None else steps)


def learn_operator(family, n: int | None = None, *, data=None, test: int | None = None, net=None,
                   loss=None, optimizer=None, strategy=None, client=None, seed: int = 0,
                   data_seed: int = 0, sensors: int | None = None, query: int | None = None,
                   block: int = 16, threads: int | None = 1, target_loss: float = 0.0,
                   store=None, resume: bool = False, on_block=None, on_window=None):
    """Learn the solution operator of a family once: data as tasks, then data-parallel training.

    Generates (or continues) the family's data set of ``n`` instances solved by the reference
    (:func:`generate_dataset`), trains a DeepONet on all but the last ``test`` of them
    (:func:`fit_operator`) and measures it on those held-out instances, on one cluster.

    Parameters
    ----------
    family : Family or str
        A family, or the name of a built-in one (:data:`daskie.problems.families.FAMILIES`).
    n : int, optional
        Instances in the data set (training plus held out); default the family's own
        (``training.n``, :class:`~daskie.problems.parametric.OperatorDefaults`), else 500.
    data : str or path-like, optional
        Where the data set is (continued if it exists with the same settings). Default: a
        directory named after the settings' token in the system's temporary directory, so
        that the same call finds its data again.
    test : int, optional
        Held-out instances (default ``min(200, n // 5)``).
    net, loss, optimizer, strategy, seed, threads, target_loss, store, resume, on_window
        As :func:`fit_operator`. ``net`` defaults to :func:`default_net`; ``loss`` to the
        data loss of ``net`` learning the integral term only
        (``OperatorLoss(net, skip=True)``); ``optimizer`` to :func:`default_optimizer`
        (the family's own where it has one).
    client : None, "sync" or distributed.Client
        Where everything runs (None: one embedded LocalCluster of two workers for both).
    data_seed, sensors, query, block, on_block
        As ``seed``, ``sensors``, ``query``, ``block`` and ``on_block`` of
        :func:`generate_dataset`.

    Returns
    -------
    Operator
        The trained operator; ``op.history`` holds every rank's training records and
        ``op.evaluation`` its held-out evaluation
        (:func:`~daskie.operator.evaluation.evaluate`, figures in ``.attrs``).
    """
    import tempfile

    from daskie.operator.evaluation import evaluate
    from daskie.problems.families import family as named
    from daskie.session import check_client, open_session
    from daskie.store.dataset import OperatorDataset

    if isinstance(family, str):
        family = named(family)
    _check_family(family)
    if n is None:
        own = getattr(family, "training", None)
        n = 500 if own is None else own.n
    check_int("n", n, 2)
    held = min(200, n // 5) if test is None else test
    check_int("test", held)
    if held >= n:
        raise SpecError(f"test={held} held-out instances leave none of the n={n} to train on")
    sensors, query = _points(family, sensors, query)
    if data is None:
        token = _dataset_spec(family, n, data_seed, sensors, query, block,
                              _point_chunk(family, None, query))["token"]
        data = os.path.join(tempfile.gettempdir(), f"daskie-data-{family.name}-{token}.zarr")
    if net is None and loss is None:
        from daskie.operator.data import sensor_points

        net = default_net(family, len(sensor_points(family, sensors)))
    if optimizer is None:
        optimizer = default_optimizer(net if net is not None else loss.net, family=family)
    if loss is None:
        from daskie.operator.formulation import OperatorLoss

        loss, net = OperatorLoss(net, skip=True), None
    _check_optimizer(optimizer, loss)
    train, test_range = (0, n - held), (n - held, n)
    check_client(client)
    with open_session() as session, session.connect(client) as c:
        generate_dataset(family, data, n, seed=data_seed, sensors=sensors, query=query,
                         block=block, client=c, on_block=on_block)
        op, history = fit_operator(family, data, net, strategy=strategy, optimizer=optimizer,
                                   loss=loss, train=train, test=test_range, client=c, seed=seed,
                                   threads=threads, target_loss=target_loss, store=store,
                                   resume=resume, on_window=on_window)
    op.history = history
    op.evaluation = evaluate(op, OperatorDataset.open(data), test_range, train)
    return op


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
    strategy : OperatorDataParallel, OperatorTrunkParallel or OperatorBranchTrunkParallel, optional
        The split of the rows (instances x query points) over the ranks. Default: the
        planner's choice (:func:`daskie.plan.operator_split.choose_split`, from the data
        set's shape, the network and the workers' memory; one rank per worker, 2 ranks in
        process), logged and kept with its reason in the run's meta (``operator.split``) and
        as ``op.split``.
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
        A run store (:class:`~daskie.store.RunStore`): the window checkpoints and, at the end,
        the result -- the final parameters (``params_G``), sensors and query points, the
        history and the evaluation on the ``test`` instances
        (:func:`~daskie.operator.evaluation.evaluate`: ``prediction``, ``reference``,
        ``rel_l2`` and their figures as attributes), readable with ``xarray.open_zarr``. The
        operator is reloaded from it alone with :meth:`Operator.load`; the report page is
        drawn from it (:func:`daskie.report.operator_report`). Never replaced: a new run
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
    from daskie.runtime.context import RunContext, run_token
    from daskie.session import check_callback, check_client, open_session
    from daskie.store.dataset import OperatorDataset
    from daskie.operator.strategy import check_operator_strategy
    from daskie.train.optimizers import Adam

    _check_family(family)
    check_client(client)
    check_callback("on_window", on_window)
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
    optimizer = Adam(lr=1e-3, steps=1000) if optimizer is None else optimizer
    _check_optimizer(optimizer, loss)
    split = None
    if strategy is None:
        split = plan_split(data_store, loss.net, optimizer, client,
                           train if train is not None else None)
        strategy = split_strategy(split)
        log.info("operator split: %s", split.reason)
    check_operator_strategy(strategy)
    _check_split(strategy, optimizer)
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
                         "skip": bool(loss.skip),
                         "optimizer": repr(optimizer), "strategy": repr(strategy),
                         "seed": int(seed), "train": list(training.train),
                         "test": None if training.test is None else list(training.test)}}
    identity = {k: v for k, v in meta["operator"].items() if k != "data"}
    if split is not None:  # the planner's reason: not part of the run's identity
        meta["operator"]["split"] = split.to_dict()
    user = None if on_window is None else (lambda k, outputs, summary: on_window(k, outputs))
    with open_session(store, resume=resume, identity=identity, meta=meta,
                      on_window=user) as session:
        with session.connect(client) as executor:
            _check_batch(strategy, strategy.ranks(executor), training.train)
            final = session.execute(strategy, ctx)
        op = Operator(loss.net, final[0].state.theta, data_store.sensors, data_store.query,
                      family, skip=loss.skip)
        op.split = split
        if session.store is not None:
            _write_result(session, op, data_store, training, final[0].state)
    return op, session.history


def _cluster_shape(client) -> tuple[int, float]:
    """``(ranks, bytes of the smallest worker)`` of the place ``client`` names, without
    starting it: a distributed Client's or an executor's workers; two ranks sharing this
    machine's memory for the embedded cluster (None) and in process ("sync")."""
    import psutil

    total = psutil.virtual_memory().total
    if client is None or isinstance(client, str):
        return 2, total / 2
    if hasattr(client, "default_ranks"):  # an executor (learn_operator's session)
        ranks, workers = client.default_ranks(), client.workers()
    else:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        ranks = len(workers)
    if not ranks:
        raise SpecError("the client's cluster has no workers to train on")
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    smallest = min(limits) if limits and min(limits) > 0 else total / max(1, ranks)
    return ranks, float(smallest)


def plan_split(data_store, net, optimizer, client, train=None):
    """The planner's split (:func:`daskie.plan.operator_split.choose_split`) of training
    ``net`` with ``optimizer`` on ``data_store``'s instances ``train`` (default: all but the
    held-out ones) on the cluster ``client`` names."""
    from daskie.plan.operator_split import choose_split
    from daskie.train import LevenbergMarquardt
    from daskie.train.head import LeastSquaresHead

    ranks, memory = _cluster_shape(client)
    if train is None:
        n = data_store.n - min(200, data_store.n // 5)
    else:
        n = int(train[1]) - int(train[0])
    stages = optimizer.stages()
    b_layers, t_layers = net._sizes()
    return choose_split(n, len(data_store.query), ranks, memory, branch_layers=b_layers,
                        trunk_layers=t_layers, n_params=net.n_params(),
                        jacobian=any(isinstance(s, LevenbergMarquardt) for s in stages),
                        points_allowed=not any(isinstance(s, LeastSquaresHead) for s in stages))


def split_strategy(split):
    """The operator strategy of a planned split (window and comm at their defaults)."""
    from daskie.operator.strategy import (OperatorBranchTrunkParallel, OperatorDataParallel,
                                          OperatorTrunkParallel)

    if split.points == 1:
        return OperatorDataParallel(shards=split.instances)
    if split.instances == 1:
        return OperatorTrunkParallel(points=split.points)
    return OperatorBranchTrunkParallel(instances=split.instances, points=split.points)


def _check_split(strategy, optimizer):
    """Refuse a least-squares head where the query points are sharded (its solve needs each
    instance's whole grid on one rank)."""
    from daskie.train.head import LeastSquaresHead

    if getattr(strategy, "split", "branch") != "branch" and \
            any(isinstance(s, LeastSquaresHead) for s in optimizer.stages()):
        raise SpecError(f"LeastSquaresHead needs every instance's whole query grid on one rank: "
                        f"use OperatorDataParallel, not {type(strategy).__name__}")


def _check_batch(strategy, ranks, train):
    """Refuse a mini-batch that some rank's shard cannot fill, before anything starts."""
    batch = strategy.batch
    if batch is None:
        return
    n = train[1] - train[0]
    if batch < ranks:
        raise SpecError(f"OperatorDataParallel.batch={batch} is less than one instance per rank "
                        f"({ranks} ranks)")
    share, smallest = -(-batch // ranks), n // ranks
    if share > smallest:
        raise SpecError(f"OperatorDataParallel.batch={batch} needs {share} instances per step "
                        f"of each of {ranks} ranks; the smallest shard of the {n} training "
                        f"instances holds {smallest}: use a smaller batch or fewer ranks")


def _write_result(session, op, data_store, training, state):
    """The run store's result: the operator's parameters, its sensors and query points, and
    its evaluation on the held-out instances (:func:`~daskie.operator.evaluation.evaluate`),
    so that :meth:`Operator.load` and the report need nothing but the store."""
    import xarray as xr

    from daskie.operator.evaluation import evaluate

    if training.test is not None:
        ds = evaluate(op, data_store, training.test, training.train)
    else:
        ds = xr.Dataset({"x": (("point", "dim"), op.query),
                         "sensor_x": (("sensor", "dim"), op.sensors)})
    summary = {"epochs": int(state.epoch), "loss": float(state.loss),
               "wall_s": float(state.wall_s), "done": state.done or "budget",
               "n_params": int(op.theta.numel()), "family": op.family.name}
    session.write_result(ds, summary, {"G": op.theta.numpy()})
