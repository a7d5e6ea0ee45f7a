"""``daskie operator FAMILY``: a learned operator from the command line, its run store (the
operator reloads from it alone) and its report page, rendered in a real browser; bad input
is one line and status 2."""

import json
import shutil

import numpy as np
import pytest
import xarray as xr

from daskie.cli import main
from daskie.operator import Operator

TINY = ["--n", "48", "--test", "8", "--workers", "0", "--sensors", "16", "--query", "9"]


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """One small operator learned by the command (in this process), with its store and page."""
    import contextlib
    import io

    base = tmp_path_factory.mktemp("cli")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["operator", "fredholm-1d", *TINY, "--steps", "30",
                       "--data", str(base / "data.zarr"), "--store", str(base / "run.zarr"),
                       "--report", str(base / "op.html")])
    return status, out.getvalue(), err.getvalue(), base


def test_the_command_learns_an_operator_with_progress_and_a_summary(learned):
    status, out, err, base = learned
    assert status == 0
    assert out.startswith("fredholm-1d: relative L2 median ") and "on 8 held-out" in out
    lines = err.strip().splitlines()
    assert lines[0].startswith("daskie: learning the operator of fredholm-1d")
    assert any(line.startswith("data ") for line in lines)
    assert any(line.startswith("window ") and "loss" in line for line in lines)
    ds = xr.open_zarr(base / "run.zarr")
    rel = ds.rel_l2.values
    # the printed median is the store's, and the operator beats the mean solution by far
    assert f"{np.median(rel):.3e}" in out
    assert ds.attrs["rel_l2_median"] < ds.attrs["baseline_rel_l2_median"] / 20
    assert ds.attrs["epochs"] == 30


def test_the_operator_reloads_from_its_store_alone(learned):
    _, _, _, base = learned
    shutil.rmtree(base / "data.zarr")  # the store needs nothing else
    op = Operator.load(base / "run.zarr")
    ds = xr.open_zarr(base / "run.zarr")
    assert op.skip  # the network learned the integral term; f / alpha is added back
    np.testing.assert_array_equal(op.predict(ds.params.values), ds.prediction.values)
    # from the sensor values alone (f at the query points fitted in the family's basis)
    np.testing.assert_allclose(op(op.inputs(ds.params.values)), ds.prediction.values,
                               rtol=0, atol=1e-10)
    ref = ds.reference.values
    np.testing.assert_allclose(op.relative_errors(op.predict(ds.params.values), ref),
                               ds.rel_l2.values, rtol=0, atol=0)


def test_report_of_an_operator_store_and_json_summary(learned, tmp_path, capsys):
    _, _, _, base = learned
    assert main(["report", str(base / "run.zarr"), "-o", str(tmp_path / "again.html")]) == 0
    text = (tmp_path / "again.html").read_text()
    assert "daskie operator: fredholm-1d" in text and "held-out instances" in text
    capsys.readouterr()
    assert main(["operator", "fredholm-1d", *TINY, "--steps", "2", "--optimizer", "adam",
                 "--batch", "8", "--data", str(tmp_path / "d.zarr"), "--json"]) == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out)
    assert summary["epochs"] == 2 and summary["n_test"] == 8 and summary["optimizer"] == "Adam"
    assert cap.err == ""  # --json: no progress
    assert main(["operator", "fredholm-1d", *TINY, "--steps", "3", "--optimizer", "lshead",
                 "--data", str(tmp_path / "d.zarr"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 3 and summary["optimizer"] == "LSHead(Adam)"


def test_the_report_page_renders_in_chromium(learned, render, tmp_path):
    from PIL import Image

    _, _, _, base = learned
    console, errors = render(base / "op.html", tmp_path / "op.png", height=2400)
    assert errors == []
    assert any("document idle" in line for line in console), console  # bokeh finished
    with Image.open(tmp_path / "op.png") as im:
        px = np.asarray(im.convert("RGB"), dtype=float)
    assert px.std() > 20  # not a blank page
    colourful = np.abs(px - px.mean(axis=2, keepdims=True)).max(axis=2) > 40
    assert colourful.mean() > 0.001  # curves, bars and markers in colour (measured 0.0026;
    # a page of black text on white has none)


@pytest.mark.parametrize("argv, words", [
    (["operator", "nope"], "no family named 'nope'"),
    (["operator", "fredholm-1d", "--n", "10", "--test", "10"], "leaves none of the --n 10"),
    (["operator", "fredholm-1d", "--steps", "0"], "--steps: must be a positive int"),
    (["operator", "fredholm-1d", "--resume"], "--resume needs the --store"),
    (["operator", "fredholm-1d", "--report", "/nonexistent/dir/op.html"], "does not exist"),
    (["operator", "volterra-1d-sin", "--optimizer", "lshead", "--physics", "1"],
     "needs --physics 0"),
], ids=["family", "test", "steps", "resume", "report", "lshead-physics"])
def test_bad_input_is_one_line_and_status_2(argv, words, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own checks exit
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err


def test_an_existing_store_or_a_batch_too_large_is_refused_in_one_line(learned, tmp_path,
                                                                         capsys):
    _, _, _, base = learned
    assert main(["operator", "fredholm-1d", "--store", str(base / "run.zarr")]) == 2
    err = capsys.readouterr().err
    assert "exists: give a new path, or --resume" in err and len(err.strip().splitlines()) == 1
    assert main(["operator", "fredholm-1d", *TINY, "--batch", "100", "--quiet",
                 "--data", str(tmp_path / "d.zarr")]) == 2
    err = capsys.readouterr().err
    assert "OperatorDataParallel.batch=100 needs 50" in err and len(err.strip().splitlines()) == 1


def test_every_operator_option_has_help_and_shows_its_default():
    from daskie.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.choices and "operator" in a.choices)
    sub = action.choices["operator"]
    text = " ".join(sub.format_help().split())
    for a in sub._actions:
        if not a.option_strings or a.dest == "help":
            continue
        assert a.help, f"operator {a.option_strings} has no help"
        if a.default not in (None, False):
            assert f"(default: {a.default})" in text or "default" in a.help, a.option_strings


USER_FAMILY = '''
import numpy as np
from daskie.problems import Domain, IntegralTerm, Problem
from daskie.problems.parametric import ParametricFamily

BOX = Domain((0.0,), (1.0,))


def build(p):
    a, w = p
    return Problem(BOX, f=lambda x: np.cos(3 * x[..., 0]) + a,
                   terms=[IntegralTerm(lambda x, t: np.exp(-(x - t)[..., 0] ** 2 / w), lam=0.5)])


def make():
    return ParametricFamily("cli-user", BOX, build,
                            lambda rng: np.array([rng.normal(), rng.uniform(0.2, 1.0)]),
                            params=("a", "w"), inputs=("f", "w"))
'''


def _run(argv):
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def test_a_user_family_from_a_file_trains_on_the_split_asked_for(tmp_path):
    (tmp_path / "fam.py").write_text(USER_FAMILY)
    base = [*TINY[:6], "--sensors", "8", "--query", "9", "--optimizer", "adam", "--steps", "4",
            "--json", "--quiet"]
    runs = {}
    for split in ("trunk", "branch", "auto"):
        status, out, _ = _run(["operator", f"{tmp_path / 'fam.py'}:make", *base, "--split",
                               split, "--data", str(tmp_path / "data.zarr")])
        assert status == 0
        runs[split] = json.loads(out)
        assert runs[split]["family"] == "cli-user"
    assert runs["trunk"]["split"] == "trunk" and runs["trunk"]["split_reason"] is None
    assert runs["auto"]["split"] == "branch" and "per rank" in runs["auto"]["split_reason"]
    # the split changes the order of the sums, not the numbers
    assert runs["trunk"]["loss"] == pytest.approx(runs["branch"]["loss"], rel=1e-10)


@pytest.mark.parametrize("spec, words", [
    ("no_such_module_29:FAMILY", "cannot import the module of family"),
    ("daskie.problems.families:nothing", "has no 'nothing'"),
    ("daskie.problems.families:RandomField", "must be a daskie Family or ParametricFamily"),
    ("missing_file.py:FAMILY", "no file 'missing_file.py'"),
])
def test_a_bad_user_family_is_one_line_naming_it(spec, words, capsys):
    assert main(["operator", spec, *TINY]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_points_without_a_trunk_split_is_refused(capsys):
    assert main(["operator", "fredholm-1d", *TINY, "--points", "2"]) == 2
    assert "--points shards the query points" in capsys.readouterr().err
