"""daskie's settings, kept in dask's configuration under the ``daskie`` namespace.

The defaults live in ``daskie/daskie.yaml`` (shipped with the package) and are registered
with :func:`dask.config.update_defaults` when this module is imported, the way distributed
and dask-jobqueue register theirs: values a user set in dask's YAML files
(``~/.config/dask/*.yaml``, ``$DASK_CONFIG``) or through ``DASK_*`` environment variables win
over them. As in dask, ``DASK_DASKIE__WORKERS=1`` sets ``daskie.workers`` to 1 and
``DASK_DASKIE__STORE__OVERWRITE=True`` sets ``daskie.store.overwrite``; hyphens and
underscores in keys are the same.

Unlike distributed, no copy of the YAML file is written into the user's configuration
directory on import: importing a library should not write into ``$HOME``. The file's
comments say what every setting does; ``daskie.config.defaults`` holds the parsed defaults.
"""

from __future__ import annotations

import math
import os

import dask.config
import yaml

from daskie.errors import SpecError

__all__ = ["get", "defaults", "PATH"]

#: The package's YAML file of defaults.
PATH = os.path.join(os.path.dirname(__file__), "daskie.yaml")

with open(PATH) as _fh:
    #: The defaults as parsed from :data:`PATH` (``{"daskie": {...}}``).
    defaults = yaml.safe_load(_fh)

dask.config.update_defaults(defaults)

_NO_DEFAULT = object()


def _yaml_default(canonical: str):
    node = defaults["daskie"]
    for part in canonical.split("."):
        if not isinstance(node, dict) or part not in node:
            return _NO_DEFAULT
        node = node[part]
    return node


def _positive_int(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"dask config daskie.{key} must be a positive int, got {value!r}")
    return value


def _count(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"dask config daskie.{key} must be an int >= 0, got {value!r}")
    return value


def _seconds(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise SpecError(f"dask config daskie.{key} must be a positive number of seconds, "
                        f"got {value!r}")
    return float(value)


def _choice(*options):
    def check(key, value):
        if value not in options:
            raise SpecError(f"dask config daskie.{key} must be one of {', '.join(options)}, "
                            f"got {value!r}")
        return value
    return check


def _address(key, value):
    if value is not None and not isinstance(value, str):
        raise SpecError(f"dask config daskie.{key} must be an address such as "
                        f"'127.0.0.1:8787' or ':0', or null, got {value!r}")
    return value


def _flag(key, value):
    if not isinstance(value, bool):
        raise SpecError(f"dask config daskie.{key} must be true or false, got {value!r}")
    return value


def _number(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise SpecError(f"dask config daskie.{key} must be a number >= 0, got {value!r}")
    return float(value)


def _tolerance(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value < 1:
        raise SpecError(f"dask config daskie.{key} must be a relative error in (0, 1), such as "
                        f"1e-6, got {value!r}")
    return float(value)


def _optional_seconds(key, value):
    return None if value is None else _seconds(key, value)


def _grid(key, value):
    return None if value is None else _positive_int(key, value)


# A value from a YAML file or an environment variable is checked when it is read, with an
# error naming the setting, rather than failing later deep inside a cluster start.
_CHECKS = {
    "workers": _positive_int,
    "threads-per-worker": _positive_int,
    "dashboard-address": _address,
    "formulation": _choice("quadrature", "order-reduction"),
    "strategy": _choice("monolithic", "ceptf", "data-parallel"),
    "optimizer": _choice("lm", "adam", "adam+lbfgs"),
    "seed": _count,
    "target-loss": _number,
    "tol": _tolerance,
    "max-time": _optional_seconds,
    "check": _flag,
    "init": _choice("auto", "reference", "f", "random"),
    "collective-timeout": _seconds,
    "retries": _count,
    "store.overwrite": _flag,
    "store.grid": _grid,
}


def get(key: str, default=_NO_DEFAULT):
    """The setting ``daskie.<key>``, checked.

    Parameters
    ----------
    key : str
        A key under ``daskie`` (dots for nesting; ``-`` and ``_`` are the same), e.g.
        ``"workers"``, ``"threads-per-worker"``, ``"dashboard-address"``,
        ``"collective-timeout"``, ``"retries"``, ``"store.overwrite"``.
    default : optional
        Returned when the key is not set anywhere (not even in the defaults).

    Returns
    -------
    object
        The value from (highest first) ``dask.config.set``, ``DASK_DASKIE__*`` environment
        variables and dask YAML files, or daskie's default.

    Raises
    ------
    SpecError
        An unknown key (and no ``default``), or a value of the wrong type or range; the
        message names the setting.
    """
    if not isinstance(key, str) or not key:
        raise SpecError(f"config key must be a non-empty str, got {key!r}")
    canonical = key.replace("_", "-")
    try:
        value = dask.config.get(f"daskie.{canonical}")
    except KeyError:
        # dask's config can lose daskie's defaults: a ``dask.config.set`` entered before this
        # module was first imported restores, on exit, a config without them
        value = _yaml_default(canonical)
        if value is _NO_DEFAULT:
            if default is not _NO_DEFAULT:
                return default
            known = ", ".join(sorted(_CHECKS))
            raise SpecError(f"unknown daskie setting {key!r}; the settings are: {known}") from None
    check = _CHECKS.get(canonical)
    return check(canonical, value) if check else value
