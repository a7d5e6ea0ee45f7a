"""The bad-input catalogue (issue 16): every case names its error type and the field.

API cases assert the exception type and a message naming the field. CLI cases run
``daskie ...`` in a subprocess (no shared state, the real console script) and assert exit
status 2, exactly one line on stderr (``daskie: error: ...`` naming the option or path) and
no traceback. Nothing here starts a cluster: every error is found before one would start.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from daskie.errors import (CheckpointError, SpecError, StoreExistsError, StoreMissingError,
                           StorePathError)
from daskie.problems import VOLTERRA, Domain, IntegralTerm, Noise, Nonlinearity, Problem

UNIT1 = Domain((0.0,), (1.0,))


def _x(p):
    return p[..., 0]


def _ones(p, t):
    return np.ones(np.broadcast_shapes(p.shape, t.shape)[:-1])


def _problem(**kwargs):
    spec = dict(domain=UNIT1, f=_x, terms=(IntegralTerm(_ones),))
    spec.update(kwargs)
    return Problem(**spec)


def _term(**kwargs):
    return _problem(terms=(IntegralTerm(**{"kernel": _ones, **kwargs}),))


def _solve(**kwargs):
    import daskie

    return daskie.solve("fredholm1d", **{"client": "sync", **kwargs})


def _store(tmp_path, path, mode="w-"):
    from daskie.store import RunStore

    (tmp_path / "afile.txt").write_text("x")
    return RunStore(str(tmp_path / path) if not os.path.isabs(path) else path, mode=mode)


def _checkpoint(tree):
    from daskie.store import encode_tree

    return encode_tree(tree)


def _config(key):
    from daskie import config

    return config.get(key)


def _stored_checkpoint_of_version(tmp_path, version):
    import zarr

    from daskie.store import Checkpoint, RunStore

    store = RunStore(tmp_path / "run")
    store.write_checkpoint(Checkpoint(0, [torch.ones(2)], []))
    zarr.open_group(tmp_path / "run" / "checkpoints" / "window_00000").attrs["schema_version"] = version
    return RunStore(tmp_path / "run", mode="a").latest_checkpoint()


def _report(tmp_path, source, out):
    from daskie.report import write_report

    return write_report(str(tmp_path / source), str(tmp_path / out))


# (id, callable taking tmp_path, expected exception type, regex that names the field)
API_CASES = [
    # domains
    ("domain-empty", lambda p: Domain((), ()), SpecError, r"domain must have at least one coordinate"),
    ("domain-strings", lambda p: Domain(("a",), (1.0,)), SpecError, r"domain\.lower"),
    ("domain-inf", lambda p: Domain((0.0,), (np.inf,)), SpecError, r"domain\.upper must be finite"),
    ("domain-reversed", lambda p: Domain((1.0,), (0.0,)), SpecError, r"domain is empty"),
    ("domain-hole-shape", lambda p: Domain((0.0, 0.0), (1.0, 1.0), holes=[((0.5,), (1.0,))]),
     SpecError, r"domain\.holes\[0\]"),
    # problems: data
    ("f-complex-kernel", lambda p: _term(kernel=lambda x, t: np.exp(1j * x[..., 0] * t[..., 0])),
     SpecError, r"terms\[0\]\.kernel returned complex values"),
    ("kernel-constant-complex", lambda p: _term(kernel=lambda x, t: 0.1j), SpecError,
     r"terms\[0\]\.kernel returned complex values"),
    ("f-complex", lambda p: _problem(f=lambda x: x[..., 0] + 0j), SpecError, r"^f returned complex"),
    ("f-strings", lambda p: _problem(f=lambda x: np.full(x.shape[:-1], "a")), SpecError,
     r"^f returned non-numeric values"),
    ("f-nan-on-part", lambda p: _problem(f=lambda x: np.where(x[..., 0] > 0.97, np.nan, 1.0)),
     SpecError, r"^f is not finite on the domain"),
    ("f-raises", lambda p: _problem(f=lambda x: 1 / 0), SpecError, r"^f raised ZeroDivisionError"),
    ("f-wrong-shape", lambda p: _problem(f=lambda x: x), SpecError, r"^f must return one value per point"),
    ("f-not-callable", lambda p: _problem(f="x"), SpecError, r"^f must be callable"),
    # data callables returning one number: refused here, not as numpy's "non-broadcastable
    # output operand" in the middle of a solve (issue 25)
    ("f-scalar", lambda p: _problem(f=lambda x: 1.0), SpecError,
     r"^f returned a scalar \(float\) but must return one value per point: expected shape "
     r"\(512,\).*np\.full\(x\.shape\[:-1\], c\)"),
    ("f-numpy-scalar", lambda p: _problem(f=lambda x: np.float64(2.0)), SpecError,
     r"^f returned a scalar \(float64\)"),
    ("alpha-callable-scalar", lambda p: _problem(alpha=lambda x: 2.0), SpecError,
     r"^alpha returned a scalar .*give alpha=c \(a number\)"),
    ("exact-scalar", lambda p: _problem(exact=lambda x: 0.0), SpecError, r"^exact returned a scalar"),
    ("exact-wrong-shape", lambda p: _problem(exact=lambda x: x), SpecError,
     r"^exact must return one value per point: expected shape \(512,\), got \(512, 1\)"),
    ("kernel-scalar", lambda p: _term(kernel=lambda x, t: 1.0), SpecError,
     r"^terms\[0\]\.kernel returned a scalar \(float\) but must return one value per pair "
     r"\(x, t\).*c \+ 0 \* \(x\[\.\.\., 0\] \+ t\[\.\.\., 0\]\)"),
    ("kernel-wrong-shape", lambda p: _term(kernel=lambda x, t: x[..., 0]), SpecError,
     r"^terms\[0\]\.kernel must return one value per point"),
    # no equation for mu at all
    ("alpha0-lam0", lambda p: _problem(alpha=0, terms=(IntegralTerm(_ones, lam=0.0),)), SpecError,
     r"^alpha = 0 and every term's lam is 0: the equation reads 0 = f and does not determine mu;"),
    ("alpha0-lam0-two-terms", lambda p: _problem(alpha=0.0, terms=(IntegralTerm(_ones, lam=0),
                                                                   IntegralTerm(_ones, lam=0.0))),
     SpecError, r"^alpha = 0 and every term's lam is 0"),
    ("alpha-zero-somewhere-lam0", lambda p: _problem(alpha=lambda x: np.where(x[..., 0] < 0.5, 0.0, 1.0),
                                                     terms=(IntegralTerm(_ones, lam=0.0),)),
     SpecError, r"^alpha is 0 at \d+ of the 512 points checked and every term's lam is 0.*mu there"),
    ("alpha0-kernel0", lambda p: _problem(alpha=0, terms=(IntegralTerm(lambda x, t: 0 * _ones(x, t)),)),
     SpecError, r"^alpha = 0 and every term has lam = 0 or a kernel that is 0"),
    ("alpha-string", lambda p: _problem(alpha="1"), SpecError, r"^alpha must be a finite number"),
    ("alpha-bool", lambda p: _problem(alpha=True), SpecError, r"^alpha must be a finite number"),
    ("alpha-complex", lambda p: _problem(alpha=lambda x: 1j + 0 * x[..., 0]), SpecError,
     r"^alpha returned complex"),
    ("exact-nan", lambda p: _problem(exact=lambda x: np.full(x.shape[:-1], np.nan)), SpecError,
     r"^exact is not finite"),
    ("exact-not-callable", lambda p: _problem(exact=1.0), SpecError, r"^exact must be callable"),
    ("name-int", lambda p: _problem(name=3), SpecError, r"^name must be a str"),
    ("description-list", lambda p: _problem(description=["a"]), SpecError, r"^description must be a str"),
    ("terms-empty", lambda p: _problem(terms=()), SpecError, r"^terms must hold at least one"),
    ("terms-not-term", lambda p: _problem(terms=(_ones,)), SpecError, r"^terms\[0\] must be an IntegralTerm"),
    ("noise-float", lambda p: _problem(noise=0.1), SpecError, r"^noise must be a daskie Noise"),
    ("noise-negative", lambda p: Noise(f_sigma=-1.0), SpecError, r"noise\.f_sigma"),
    # problems: terms
    ("lam-string", lambda p: _term(lam="2"), SpecError, r"terms\[0\]\.lam"),
    ("lam-inf", lambda p: _term(lam=np.inf), SpecError, r"terms\[0\]\.lam must be finite"),
    ("upper-name", lambda p: _term(upper=("y",)), SpecError, r"terms\[0\]\.upper\[0\] = 'y' names no coordinate"),
    ("upper-scalar", lambda p: _term(upper=1.0), SpecError, r"terms\[0\]\.upper must be a sequence"),
    ("lower-string", lambda p: _term(lower=("a",)), SpecError, r"terms\[0\]\.lower\[0\] must be a number"),
    ("limits-count", lambda p: _term(lower=(0.0, 0.0)), SpecError, r"terms\[0\]\.lower has 2 limits"),
    ("singularity-one", lambda p: _term(singularity=1.0), SpecError, r"terms\[0\]\.singularity must be in \[0, 1\)"),
    ("singularity-string", lambda p: _term(singularity="0.5"), SpecError, r"terms\[0\]\.singularity must be a number"),
    ("nonlinearity-not", lambda p: _term(nonlinearity=np.sin), SpecError, r"terms\[0\]\.nonlinearity must be a Nonlinearity"),
    ("volterra-holes", lambda p: Problem(domain=Domain((0, 0), (1, 1), holes=[((0.5, 0.5), (1, 1))]),
                                         f=_x, terms=(IntegralTerm(_ones, upper=(VOLTERRA, 1.0)),)),
     SpecError, r"terms\[0\]: Volterra limits on a domain with holes"),
    # nonlinearities, probed at construction
    ("M-numpy", lambda p: Nonlinearity(lambda u: np.sin(u), name="npsin"), SpecError,
     r"Nonlinearity 'npsin' raised .* on a torch tensor"),
    ("M-raises", lambda p: Nonlinearity(lambda u: u.foo(), name="bad"), SpecError,
     r"Nonlinearity 'bad' raised AttributeError"),
    ("M-scalar", lambda p: Nonlinearity(lambda u: u.sum(), name="sum"), SpecError,
     r"Nonlinearity 'sum' must be elementwise"),
    ("M-not-tensor", lambda p: Nonlinearity(lambda u: 1.0, name="one"), SpecError,
     r"Nonlinearity 'one' returned float"),
    ("M-nan", lambda p: Nonlinearity(torch.log, name="log"), SpecError,
     r"Nonlinearity 'log' is not real and finite"),
    ("M-detached", lambda p: Nonlinearity(lambda u: u.detach() ** 2, name="det"), SpecError,
     r"Nonlinearity 'det' cannot be differentiated"),
    ("M-not-callable", lambda p: Nonlinearity(3), SpecError, r"Nonlinearity 'M': fn must be callable"),
    # solve's arguments (validated before any cluster starts)
    ("solve-client-string", lambda p: _solve(client="foo"), SpecError, r"^client must be"),
    ("solve-formulation-string", lambda p: _solve(formulation="quadrature"), SpecError,
     r"^formulation must be a daskie Formulation"),
    ("solve-strategy-string", lambda p: _solve(strategy="ceptf"), SpecError, r"^strategy must be"),
    ("solve-optimizer-string", lambda p: _solve(optimizer="lm"), SpecError, r"^optimizer must be"),
    ("solve-unknown-problem", lambda p: __import__("daskie").solve("nope", client="sync"),
     SpecError, r"unknown problem 'nope'"),
    ("solve-seed-float", lambda p: _solve(seed=1.5), SpecError, r"^seed must be an int"),
    ("solve-target-negative", lambda p: _solve(target_loss=-1.0), SpecError, r"^target_loss must be"),
    ("solve-workers-zero", lambda p: _solve(workers=0), SpecError, r"^workers must be a positive int"),
    ("solve-resume-overwrite", lambda p: _solve(resume=True, overwrite=True, store=str(p / "s")),
     SpecError, r"resume and overwrite exclude each other"),
    ("solve-resume-no-store", lambda p: _solve(resume=True), SpecError, r"resume=True needs the store"),
    # stores
    ("store-under-file", lambda p: _store(p, "afile.txt/sub.zarr"), StorePathError, r"afile\.txt' is a file"),
    ("store-in-proc", lambda p: _store(p, "/proc/daskie-x.zarr"), StorePathError, r"/proc/daskie-x\.zarr"),
    ("store-exists", lambda p: _store(p, "afile.txt"), StoreExistsError, r"afile\.txt"),
    ("store-resume-missing", lambda p: _store(p, "missing.zarr", "a"), StoreMissingError, r"missing\.zarr"),
    ("store-overwrite-data", lambda p: _store(p, "afile.txt", "w"), SpecError, r"not a daskie run store"),
    ("store-mode", lambda p: _store(p, "x.zarr", "r"), SpecError, r"^mode must be"),
    ("store-path-type", lambda p: __import__("daskie.store", fromlist=["RunStore"]).RunStore(3.5),
     SpecError, r"^store must be a path"),
    ("checkpoint-lambda", lambda p: _checkpoint([{"f": lambda: 0}]), TypeError, r"outputs\[0\]\['f'\]"),
    ("checkpoint-object-array", lambda p: _checkpoint([np.array([None], dtype=object)]), TypeError,
     r"outputs\[0\].*dtype object"),
    ("checkpoint-version", lambda p: _stored_checkpoint_of_version(p, 99), CheckpointError,
     r"schema version 99"),
    # settings and reports
    ("config-unknown", lambda p: _config("no-such-setting"), SpecError, r"unknown daskie setting 'no-such-setting'"),
    ("report-missing", lambda p: _report(p, "missing.zarr", "r.html"), SpecError, r"missing\.zarr"),
    ("report-out-dir", lambda p: _report(p, "afile.txt", "no/such/dir/r.html"), StorePathError,
     r"no/such/dir"),
]


@pytest.mark.parametrize("make, error, match", [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_api_bad_input_raises_a_named_error(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        make(tmp_path)


# (id, argv after `daskie`, regex the one stderr line must match); {tmp} is the test's folder
CLI_CASES = [
    ("unknown-command", ["frobnicate"], r"invalid choice: 'frobnicate'"),
    ("unknown-problem", ["solve", "NOPE"], r"unknown problem 'NOPE'"),
    ("points-zero", ["solve", "E1", "--points", "0"], r"--points: must be a positive int, got 0"),
    ("points-text", ["solve", "E1", "--points", "many"], r"--points: must be an int, got 'many'"),
    ("plan-points-zero", ["plan", "E1", "--points", "0"], r"--points: must be a positive int"),
    ("workers-zero", ["solve", "E1", "--workers", "0"], r"--workers: must be a positive int"),
    ("steps-negative", ["solve", "E1", "--steps", "-3"], r"--steps: must be a positive int"),
    ("window-negative", ["solve", "E1", "--window", "-1"], r"--window: must be an int >= 0"),
    ("hidden-zero", ["solve", "E1", "--hidden", "20", "0"], r"--hidden: must be a positive int"),
    ("target-nan", ["solve", "E1", "--target-loss", "nan"], r"--target-loss: must be a finite number"),
    ("gpus-negative", ["plan", "E1", "--gpus", "-1"], r"--gpus: must be an int >= 0"),
    ("formulation-unknown", ["solve", "E1", "--formulation", "pinn"], r"--formulation: invalid choice"),
    ("resume-no-store", ["solve", "E1", "--resume"], r"--resume needs the --store"),
    ("resume-overwrite", ["solve", "E1", "--resume", "--overwrite", "--store", "{tmp}/s.zarr"],
     r"--resume and --overwrite exclude each other"),
    ("resume-missing", ["solve", "E1", "--resume", "--store", "{tmp}/missing.zarr"],
     r"no run store at .*missing\.zarr"),
    ("store-in-proc", ["solve", "E1", "--store", "/proc/daskie-x.zarr"], r"/proc/daskie-x\.zarr"),
    ("store-under-file", ["solve", "E1", "--store", "{tmp}/afile.txt/sub.zarr"],
     r"afile\.txt' is a file, not a directory"),
    ("store-exists", ["solve", "E1", "--store", "{tmp}/afile.txt"], r"exists at .*afile\.txt"),
    ("report-missing", ["report", "{tmp}/missing.zarr"], r"nothing at .*missing\.zarr"),
    ("report-out-dir", ["report", "{tmp}/missing.zarr", "-o", "{tmp}/no/such/dir/r.html"],
     r"cannot write .*no/such/dir/r\.html.*does not exist"),
    ("report-out-under-file", ["report", "{tmp}/afile.txt", "-o", "{tmp}/afile.txt/r.html"],
     r"afile\.txt' is a file, not a directory"),
    ("report-bad-json", ["report", "{tmp}/bad.json"], r"bad\.json' is not valid JSON"),
    ("metrics-missing-baseline", ["metrics", "{tmp}/run.zarr", "--baseline", "{tmp}/missing.zarr"],
     r"--baseline .*missing\.zarr.*no daskie run store"),
    ("metrics-missing-run", ["metrics", "{tmp}/nope.zarr", "--baseline", "{tmp}/run.zarr"],
     r"RUN .*nope\.zarr.*no daskie run store"),
    ("config-workers-zero", ["solve", "E1"], r"dask config daskie\.workers must be a positive int, got 0"),
]


@pytest.fixture(scope="module")
def cli_folder(tmp_path_factory):
    """A folder with a file, a bad JSON file and one finished run store."""
    import xarray as xr

    from daskie.store import RunStore

    folder = tmp_path_factory.mktemp("cli")
    (folder / "afile.txt").write_text("x")
    (folder / "bad.json").write_text("{not json")
    with RunStore(folder / "run.zarr") as store:
        store.write_result(xr.Dataset({"mu": ("i", np.zeros(2))}), [], {"mse": 1.0})
    return folder


@pytest.mark.parametrize("argv, match", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_and_exit_2(cli_folder, argv, match):
    env = dict(os.environ)
    if match.startswith("dask config"):
        env["DASK_DASKIE__WORKERS"] = "0"
    argv = [a.replace("{tmp}", str(cli_folder)) for a in argv]
    before = sorted(os.listdir(cli_folder))
    proc = subprocess.run([sys.executable, "-m", "daskie.cli", *argv], capture_output=True,
                          text=True, timeout=120, env=env)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("daskie: error: "), lines[0]
    assert re.search(match, lines[0]), lines[0]
    assert proc.stdout == ""
    assert sorted(os.listdir(cli_folder)) == before  # nothing created on the way


def test_the_catalogue_holds_at_least_fifty_cases():
    assert len(API_CASES) + len(CLI_CASES) >= 50
    assert len({c[0] for c in API_CASES}) == len(API_CASES)
    assert len({c[0] for c in CLI_CASES}) == len(CLI_CASES)


def test_equations_next_to_the_refused_ones_are_accepted():
    # First kind (alpha = 0, a term acts on mu) and lam = 0 with alpha != 0 (mu = f / alpha)
    # are equations; so is a single point's value (shape ()), which stays a scalar.
    first_kind = _problem(alpha=0, terms=(IntegralTerm(_ones, lam=1.0),))
    assert first_kind.alpha_at(np.zeros((3, 1))).tolist() == [0.0, 0.0, 0.0]
    plain = _problem(alpha=2.0, terms=(IntegralTerm(_ones, lam=0.0),))
    np.testing.assert_array_equal(plain.f_at(np.array([[0.25], [0.5]])), [0.25, 0.5])
    assert plain.f_at(np.array([0.75])) == 0.75
