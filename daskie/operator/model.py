"""A trained operator: a DeepONet and its parameters, answering new instances."""

from __future__ import annotations

import numpy as np

from daskie.errors import SpecError

__all__ = ["Operator"]


class Operator:
    """The solution operator ``f -> mu`` of a family, learned once.

    Parameters
    ----------
    net : DeepONet
    theta : torch.Tensor
        Trained flat parameters.
    sensors : ndarray (m, d)
        Where the input ``f`` is read.
    query : ndarray (q, d)
        The default output points (the data set's query points).
    family : Family, optional
        The family (lets :meth:`predict` take instance parameters).
    skip : bool
        The network learned ``mu - f / alpha`` (``OperatorLoss(skip=True)``): the operator
        adds ``f / alpha`` back, with ``f`` at the output points from the family's random
        field fitted to the sensor values (exact for the family's own ``f``; needs
        ``family``).

    Attributes
    ----------
    history : list of dict or None
        Training records (set by :func:`~daskie.operator.learn_operator`).
    evaluation : xarray.Dataset or None
        The held-out evaluation (set by :func:`~daskie.operator.learn_operator`).
    split : OperatorSplit or None
        The planner's split of the training, when :func:`~daskie.operator.fit_operator`
        chose it (:func:`daskie.plan.operator_split.choose_split`; its ``reason`` says why).
    """

    def __init__(self, net, theta, sensors, query, family=None, skip: bool = False):
        if skip and family is None:
            raise SpecError("an operator that learned mu - f / alpha (skip=True) needs its "
                            "family, to evaluate f at the output points")
        self.net, self.family, self.skip = net, family, bool(skip)
        self.history, self.evaluation, self.split = None, None, None
        self.theta = theta.detach().clone()
        self.sensors = np.asarray(sensors, dtype=float)
        self.query = np.asarray(query, dtype=float)

    def __repr__(self):
        name = None if self.family is None else self.family.name
        return (f"Operator(family={name!r}, sensors={len(self.sensors)}, "
                f"params={self.theta.numel()})")

    def __call__(self, f_values, x=None, *, f_at_x=None, skip_at_x=None) -> np.ndarray:
        """``mu`` of the instances whose branch inputs are ``f_values`` (``(n, m)``, or
        ``(m,)`` for one: ``f`` at the sensors, then lambda for families that vary it, see
        :meth:`inputs`), at points ``x`` (``(k, d)``; default: the query points): shape
        ``(n, k)`` (or ``(k,)``). One branch pass per instance and one trunk pass per point.
        ``f_at_x`` (``(n, k)``): ``f`` at ``x`` where known (operators with ``skip``; else it
        is fitted from the sensor values, for a :class:`~daskie.problems.families.Family`);
        ``skip_at_x`` (``(n, k)``): ``f / alpha`` at ``x`` (the family's ``skip_values``;
        what an operator of a :class:`~daskie.problems.parametric.ParametricFamily` with
        ``skip`` needs)."""
        import torch

        f = np.asarray(f_values, dtype=float)
        one = f.ndim == 1
        f = np.atleast_2d(f)
        if f.shape[1] != self.net.sensors:
            raise SpecError(f"f_values must hold the {self.net.sensors} branch inputs (f at the "
                            f"{len(self.sensors)} sensors, then lambda if the family varies it) "
                            f"on the last axis, got shape {np.shape(f_values)}")
        x = self.query if x is None else np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.net.dim:
            raise SpecError(f"x must have shape (k, {self.net.dim}), got {x.shape}")
        with torch.no_grad():
            # on the parameters' device, back as float64 numpy
            at = lambda a: torch.as_tensor(a).to(device=self.theta.device, dtype=self.theta.dtype)  # noqa: E731
            out = self.net.operator(self.theta, at(f), at(x))
            out = out.to(device="cpu", dtype=torch.float64).numpy()
        if self.skip:
            if skip_at_x is not None:
                out = out + np.atleast_2d(skip_at_x)
            else:
                if not hasattr(self.family, "field"):
                    raise SpecError(f"family {self.family.name!r} has no random field to fit f "
                                    "to the sensor values: pass skip_at_x (f / alpha at x, "
                                    "family.skip_values(params, x)) or use predict(params)")
                fx = self._f_at(f, x) if f_at_x is None else np.atleast_2d(f_at_x)
                out = out + fx / float(self.family.alpha)
        return out[0] if one else out

    def _f_at(self, f, x) -> np.ndarray:
        """``f`` at ``x`` of inputs whose sensor values are ``f[:, :sensors]``: the family's
        random field fitted to them by least squares (its basis at the sensors), as one
        linear map of the sensor values (kept for the query points)."""
        same = x is self.query or (x.shape == self.query.shape and np.array_equal(x, self.query))
        fit = getattr(self, "_query_fit", None) if same else None
        if fit is None:
            fam = self.family
            field, lo, hi = fam.field, fam.domain.lower, fam.domain.upper
            eye = np.eye(field.n_coefficients(fam.dim))
            at_s = field.evaluate(eye, self.sensors, lo, hi) - field.mean  # (K, m), scaled
            at_x = field.evaluate(eye, x, lo, hi) - field.mean  # (K, k)
            fit = np.linalg.pinv(at_s.T).T @ at_x  # (m, k): sensor values -> values at x
            if same:
                self._query_fit = fit
        return self.family.field.mean + (f[:, :len(self.sensors)] - self.family.field.mean) @ fit

    def inputs(self, params) -> np.ndarray:
        """The branch inputs of family instances ``params`` (``(n, n_params)``): ``f`` at the
        sensors, then lambda when the family varies it."""
        from daskie.operator.formulation import branch_inputs

        if self.family is None:
            raise SpecError("this operator has no family: pass its branch inputs instead")
        params = np.atleast_2d(params)
        return branch_inputs(self.family, self.family.f_values(params, self.sensors), params,
                             self.sensors)

    def predict(self, params, x=None) -> np.ndarray:
        """``mu`` of family instances ``params`` (``(n, n_params)``) at ``x`` (default: the
        query points), shape ``(n, k)``."""
        x = self.query if x is None else np.asarray(x, dtype=float)
        skip = self.family.skip_values(np.atleast_2d(params), x) if self.skip else None
        return self(self.inputs(params), x, skip_at_x=skip)

    def dataset(self, f_values, x=None):
        """The prediction as an ``xarray.Dataset``: ``mu (instance, point)``, ``inputs
        (instance, input)`` and the coordinates ``x (point, dim)``, ``sensor_x (sensor, dim)``."""
        import xarray as xr

        x = self.query if x is None else np.asarray(x, dtype=float)
        f = np.atleast_2d(np.asarray(f_values, dtype=float))
        mu = self(f, x)
        ds = xr.Dataset({"mu": (("instance", "point"), mu), "inputs": (("instance", "input"), f),
                         "x": (("point", "dim"), x), "sensor_x": (("sensor", "dim"), self.sensors)})
        ds["mu"].attrs["description"] = "operator prediction of mu"
        ds["inputs"].attrs["description"] = "branch inputs: f at the sensors (then lambda)"
        return ds

    @staticmethod
    def net_spec(net) -> dict:
        """The DeepONet as plain data (JSON) for a run store; :meth:`load` rebuilds it."""
        from dataclasses import asdict

        spec = asdict(net)
        for part in ("branch", "trunk"):
            if spec[part] is not None:
                spec[part] = {**spec[part], "hidden": list(spec[part]["hidden"])}
        return spec

    @classmethod
    def load(cls, store, family=None) -> "Operator":
        """The operator stored in the run store ``store`` (written by
        :func:`~daskie.operator.fit_operator` or :func:`~daskie.operator.learn_operator`
        with ``store=``): the final parameters, sensors and query points of a finished run
        (the store alone is needed), or those of the newest checkpoint of an unfinished one
        (with the sensors of its data set). ``family`` defaults to the built-in family of the
        stored name, if there is one.

        Raises
        ------
        SpecError
            When ``store`` is no run store, or holds no trained operator.
        """
        import torch

        from daskie.nn import MLP, DeepONet
        from daskie.problems.families import FAMILIES, family as named
        from daskie.store import RunStore
        from daskie.store.dataset import OperatorDataset

        if not RunStore.exists(store):
            raise SpecError(f"{store!r} is not a daskie run store (nothing, or something else, "
                            "is there)")
        runs = RunStore(store, mode="a")
        try:
            meta = runs.read_meta()
            op_meta = meta.get("operator")
            finished = "finished_utc" in meta
            if op_meta is not None and finished:
                with runs.read() as ds:
                    theta = torch.as_tensor(ds["params_G"].values.copy())
                    sensors, query = ds["sensor_x"].values.copy(), ds["x"].values.copy()
                ckpt = None
            else:
                ckpt = runs.latest_checkpoint()
        finally:
            runs.close()
        if op_meta is None or (not finished and ckpt is None):
            raise SpecError(f"{runs.path} holds no trained operator (no operator run with a "
                            "result or a checkpoint)")
        spec = dict(op_meta["net"])
        for part in ("branch", "trunk"):
            if spec[part] is not None:
                spec[part] = MLP(**{**spec[part], "hidden": tuple(spec[part]["hidden"])})
        net = DeepONet(**spec)
        name = op_meta["family"]["name"]
        if family is None and name in FAMILIES and named(name).describe() == op_meta["family"]:
            family = named(name)
        if ckpt is not None:
            data = OperatorDataset.open(op_meta["data"])
            theta = ckpt.outputs[0]["state"]["theta"]
            sensors, query = data.sensors, data.query
        return cls(net, theta, sensors, query, family, skip=bool(op_meta.get("skip", False)))

    @staticmethod
    def relative_errors(predicted, reference) -> np.ndarray:
        """Relative L2 error of each instance (rows): ``|p - r| / |r|`` over the points."""
        p, r = np.atleast_2d(predicted), np.atleast_2d(reference)
        return np.linalg.norm(p - r, axis=1) / np.linalg.norm(r, axis=1)
