"""daskie's settings in dask's configuration: defaults from the package YAML, overridden by
dask.config.set, environment variables (as dask parses them) and checked when read."""

import os
import subprocess
import sys

import dask
import pytest
import yaml

from daskie import config
from daskie.errors import SpecError


def test_defaults_come_from_the_package_yaml():
    with open(config.PATH) as fh:
        shipped = yaml.safe_load(fh)["daskie"]
    assert config.get("workers") == shipped["workers"] == 2
    assert config.get("threads-per-worker") == 1
    assert config.get("dashboard-address") == shipped["dashboard-address"]
    assert config.get("collective-timeout") == shipped["collective-timeout"]
    assert config.get("retries") == shipped["retries"]
    assert config.get("store.overwrite") is False
    assert config.get("store.grid") is None


def test_dask_config_set_wins_and_underscores_equal_hyphens():
    with dask.config.set({"daskie.workers": 5, "daskie.threads_per_worker": 3}):
        assert config.get("workers") == 5
        assert config.get("threads_per_worker") == 3 == config.get("threads-per-worker")
    assert config.get("workers") == 2


@pytest.mark.parametrize("key, value, match", [
    ("workers", 0, r"daskie\.workers must be a positive int, got 0"),
    ("workers", "two", r"daskie\.workers must be a positive int"),
    ("collective-timeout", -1, r"daskie\.collective-timeout must be a positive number of seconds"),
    ("retries", 1.5, r"daskie\.retries must be an int >= 0"),
    ("strategy", "fast", r"daskie\.strategy must be one of monolithic, ceptf, data-parallel"),
    ("dashboard-address", 8787, r"daskie\.dashboard-address must be an address"),
    ("store.overwrite", "yes", r"daskie\.store\.overwrite must be true or false"),
])
def test_bad_values_are_named_when_read(key, value, match):
    with dask.config.set({f"daskie.{key}": value}):
        with pytest.raises(SpecError, match=match):
            config.get(key)


def test_unknown_keys_are_named_unless_a_default_is_given():
    with pytest.raises(SpecError, match="unknown daskie setting 'wrokers'.*workers"):
        config.get("wrokers")
    assert config.get("wrokers", None) is None


def test_environment_variables_work_as_in_dask():
    code = ("from daskie import config; print(config.get('workers'), config.get('store.grid'), "
            "config.get('dashboard-address'))")
    env = {**os.environ, "DASK_DASKIE__WORKERS": "1", "DASK_DASKIE__STORE__GRID": "33",
           "DASK_DASKIE__DASHBOARD_ADDRESS": ":8789"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["1", "33", ":8789"]


def test_the_cli_defaults_come_from_the_config():
    from daskie.cli import build_parser

    with dask.config.set({"daskie.workers": 7, "daskie.strategy": "ceptf", "daskie.seed": 4}):
        args = build_parser().parse_args(["solve", "E1"])
    assert (args.workers, args.strategy, args.seed) == (7, "ceptf", 4)
    assert build_parser().parse_args(["solve", "E1"]).workers == 2


def test_settings_survive_a_config_context_entered_before_daskie_was_imported():
    # dask.config.set restores, on exit, the config as it was on entry: one entered before
    # daskie.config was first imported drops daskie's defaults with it
    import subprocess
    import sys

    code = ("import dask\n"
            "with dask.config.set({'daskie.check': False}):\n"
            "    from daskie import config\n"
            "print(config.get('init'), config.get('workers'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    from daskie import config

    assert out.stdout.split() == [str(config.get("init")), str(config.get("workers"))]
