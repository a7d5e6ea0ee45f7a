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
    """

    def __init__(self, net, theta, sensors, query, family=None):
        self.net, self.family = net, family
        self.theta = theta.detach().clone()
        self.sensors = np.asarray(sensors, dtype=float)
        self.query = np.asarray(query, dtype=float)

    def __repr__(self):
        name = None if self.family is None else self.family.name
        return (f"Operator(family={name!r}, sensors={len(self.sensors)}, "
                f"params={self.theta.numel()})")

    def __call__(self, f_values, x=None) -> np.ndarray:
        """``mu`` of the instances whose ``f`` at the sensors is ``f_values`` (``(n, m)``, or
        ``(m,)`` for one), at points ``x`` (``(k, d)``; default: the query points): shape
        ``(n, k)`` (or ``(k,)``). One branch pass per instance and one trunk pass per point."""
        import torch

        f = np.asarray(f_values, dtype=float)
        one = f.ndim == 1
        f = np.atleast_2d(f)
        if f.shape[1] != len(self.sensors):
            raise SpecError(f"f_values must hold f at the {len(self.sensors)} sensors (last "
                            f"axis), got shape {np.shape(f_values)}")
        x = self.query if x is None else np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.net.dim:
            raise SpecError(f"x must have shape (k, {self.net.dim}), got {x.shape}")
        with torch.no_grad():
            out = self.net.operator(self.theta, torch.as_tensor(f), torch.as_tensor(x)).numpy()
        return out[0] if one else out

    def f_at_sensors(self, params) -> np.ndarray:
        """``f`` of family instances ``params`` (``(n, n_params)``) at the sensors."""
        if self.family is None:
            raise SpecError("this operator has no family: pass f at the sensors instead")
        return self.family.f_values(params, self.sensors)

    def predict(self, params, x=None) -> np.ndarray:
        """``mu`` of family instances ``params`` (``(n, n_params)``) at ``x`` (default: the
        query points), shape ``(n, k)``."""
        return self(self.f_at_sensors(params), x)

    def dataset(self, f_values, x=None):
        """The prediction as an ``xarray.Dataset``: ``mu (instance, point)``, ``f (instance,
        sensor)`` and the coordinates ``x (point, dim)``, ``sensor_x (sensor, dim)``."""
        import xarray as xr

        x = self.query if x is None else np.asarray(x, dtype=float)
        f = np.atleast_2d(np.asarray(f_values, dtype=float))
        mu = self(f, x)
        ds = xr.Dataset({"mu": (("instance", "point"), mu), "f": (("instance", "sensor"), f),
                         "x": (("point", "dim"), x), "sensor_x": (("sensor", "dim"), self.sensors)})
        ds["mu"].attrs["description"] = "operator prediction of mu"
        ds["f"].attrs["description"] = "right-hand side at the sensors (the input)"
        return ds

    @staticmethod
    def relative_errors(predicted, reference) -> np.ndarray:
        """Relative L2 error of each instance (rows): ``|p - r| / |r|`` over the points."""
        p, r = np.atleast_2d(predicted), np.atleast_2d(reference)
        return np.linalg.norm(p - r, axis=1) / np.linalg.norm(r, axis=1)
