"""A trained operator against the reference on held-out instances, as one xarray Dataset.

The same figures serve the run store's result (:func:`~daskie.operator.fit_operator` with
``store=``), the CLI's summary line, the report page and the benchmark: the relative L2 error
of every held-out instance, its median and 95th percentile, and the error of a trivial
baseline (the mean of the training solutions) that any operator worth training must beat.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["evaluate", "summary_of"]


def evaluate(op, data, test, train=None) -> xr.Dataset:
    """Predictions of ``op`` on instances ``test = (first, stop)`` of the data set ``data``.

    Parameters
    ----------
    op : Operator
    data : OperatorDataset
    test : (int, int)
        Held-out instances.
    train : (int, int), optional
        Training instances: their mean solution is the baseline (default: none).

    Returns
    -------
    xarray.Dataset
        ``prediction`` and ``reference`` ``(instance, point)``, ``rel_l2`` (and
        ``baseline_rel_l2``) ``(instance)``, ``f (instance, sensor)``, ``params (instance,
        param)``, the coordinates ``x (point, dim)`` and ``sensor_x (sensor, dim)``;
        :func:`summary_of` its figures as attributes.
    """
    lo, hi = (int(v) for v in test)
    rows = data.read(lo, hi)
    inputs = _inputs(op, rows)
    skip_at_x = None
    if op.skip:  # f / alpha at the query points from the instances' own data, not a fit
        skip_at_x = op.family.skip_values(rows["params"], op.query)
    prediction = op(inputs, skip_at_x=skip_at_x)
    reference = rows["mu"]
    rel = op.relative_errors(prediction, reference)
    ds = xr.Dataset(
        {"prediction": (("instance", "point"), prediction),
         "reference": (("instance", "point"), reference),
         "rel_l2": (("instance",), rel),
         "f": (("instance", "sensor"), rows["f"]),
         "params": (("instance", "param"), rows["params"]),
         "x": (("point", "dim"), op.query), "sensor_x": (("sensor", "dim"), op.sensors)},
        coords={"instance": np.arange(lo, hi)})
    text = {"prediction": "the operator's mu at the query points",
            "reference": "the reference (Nystrom) solution at the query points",
            "rel_l2": "relative L2 error |prediction - reference| / |reference| per instance",
            "f": "f at the sensors", "params": "instance parameters",
            "x": "query coordinates", "sensor_x": "sensor coordinates"}
    if train is not None:
        a, b = (int(v) for v in train)
        mean = data.read(a, b, names=("mu",))["mu"].mean(axis=0)
        ds["baseline_rel_l2"] = ("instance",), op.relative_errors(
            np.broadcast_to(mean, reference.shape), reference)
        text["baseline_rel_l2"] = "relative L2 error of the mean training solution"
    for name, words in text.items():
        ds[name].attrs["description"] = words
    ds.attrs.update(summary_of(ds))
    return ds


def _inputs(op, rows) -> np.ndarray:
    from daskie.operator.formulation import branch_inputs

    if op.family is None:
        return rows["f"]
    return branch_inputs(op.family, rows["f"], rows["params"], op.sensors)


def summary_of(ds: xr.Dataset) -> dict:
    """``n_test``, ``rel_l2_median``, ``rel_l2_p95``, ``rel_l2_max`` (and
    ``baseline_rel_l2_median``) of an :func:`evaluate` Dataset."""
    rel = np.asarray(ds["rel_l2"].values)
    out = {"n_test": int(rel.size), "rel_l2_median": float(np.median(rel)),
           "rel_l2_p95": float(np.quantile(rel, 0.95)), "rel_l2_max": float(rel.max())}
    if "baseline_rel_l2" in ds:
        out["baseline_rel_l2_median"] = float(np.median(ds["baseline_rel_l2"].values))
    return out
