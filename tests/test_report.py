"""HTML reports from stored runs and benchmark records, rendered in headless Chromium."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bokeh.models import GlyphRenderer, Image

import daskie
from daskie import MLP, LevenbergMarquardt, Monolithic, QuadratureCollocation, catalog
from daskie.cli import main
from daskie.errors import SpecError
from daskie.report import write_report
from daskie.report.run import run_layout
from daskie.store import RunStore

SMALL_Q = QuadratureCollocation(net=MLP(hidden=(8, 8)), points=64, nodes=8, test_points=200)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Stored runs, trained in this process (the reports need no cluster)."""
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for name in ("lshape", "fredholm1d"):
        out[name] = base / f"{name}.zarr"
        daskie.solve(name, formulation=SMALL_Q, strategy=Monolithic(window=3),
                     optimizer=LevenbergMarquardt(steps=6), client="sync", store=out[name])
    return out


def _images(layout):
    return [r.glyph for r in layout.select({"type": GlyphRenderer}) if isinstance(r.glyph, Image)]


def test_masked_domain_is_transparent_outside_the_l_shape(runs):
    with RunStore(runs["lshape"], mode="a").read() as ds:
        layout = run_layout(ds.load())
    images = _images(layout)
    assert len(images) == 3  # mu, exact, error
    x0, x1 = ds.x0.values, ds.x1.values
    grid = np.stack(np.meshgrid(x0, x1, indexing="xy"), axis=-1)  # rows along x1, as drawn
    inside = catalog.get("lshape").domain.contains(grid)
    assert all(glyph.color_mapper.nan_color == "rgba(0, 0, 0, 0)" for glyph in images)  # NaN: transparent
    renderers = [r for r in layout.select({"type": GlyphRenderer}) if isinstance(r.glyph, Image)]
    for r in renderers:
        img = np.asarray(r.data_source.data["image"][0])
        assert img.shape == inside.shape
        np.testing.assert_array_equal(np.isfinite(img), inside)
    assert (~inside).sum() > 0.2 * inside.size  # the missing quarter is really there


def test_reports_are_self_contained(runs, tmp_path):
    for name, path in runs.items():
        out = write_report(path, tmp_path / f"{name}.html")
        text = Path(out).read_text()
        # bokeh's JavaScript is inlined: no script tag has a source, and outside the scripts no
        # tag loads anything
        assert "Bokeh" in text
        assert not [tag for tag in re.findall(r"<script\b[^>]*>", text) if "src=" in tag]
        markup = re.sub(r"<script\b[^>]*>.*?</script>", "", text, flags=re.S)
        assert not re.search(r"<(link|img|iframe)\b[^>]*\b(src|href)=", markup)
        assert f"daskie run: {name}" in text and "Windows per worker" in text
    with pytest.raises(SpecError, match="not a daskie run store"):
        write_report(tmp_path, tmp_path / "x.html")
    with pytest.raises(SpecError, match="nothing at"):
        write_report(tmp_path / "missing.zarr")


def _accuracy_records():
    """Two records of the accuracy benchmark, made by its own code on tiny settings."""
    spec = importlib.util.spec_from_file_location("accuracy_bench", ROOT / "benchmarks" / "accuracy.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.formulation = lambda name, problem: SMALL_Q  # tiny networks: this is a test, not a benchmark
    return [bench.run_one(p, "quadrature", "monolithic", 3, None) for p in ("fredholm1d", "volterra1d")]


def test_cli_report_of_a_run_and_of_a_benchmark(runs, tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(_accuracy_records()))
    for source, out in ((runs["fredholm1d"], tmp_path / "run.html"), (bench, tmp_path / "bench.html")):
        assert main(["report", str(source), "-o", str(out)]) == 0
        assert out.stat().st_size > 100_000  # bokeh's JavaScript is inside
        assert f"wrote {out}" in capsys.readouterr().err
    text = (tmp_path / "bench.html").read_text()
    assert "Test MSE per problem and configuration" in text and "Nystrom reference" in text
    assert main(["report", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert "no benchmark file" in err and len(err.strip().splitlines()) == 1


# -- rendering in a real browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium")
    if exe is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                       "chromium", shell=True, capture_output=True, timeout=900)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed and could not be installed "
                    "(`apt-get install chromium` needs apt-get and root)")
    return exe


def _render(chromium, html_file, png):
    """Open ``html_file`` headless; return (console lines, JavaScript errors, PNG path)."""
    res = subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", "--window-size=1300,1800",
         "--virtual-time-budget=10000", f"--screenshot={png}", Path(html_file).as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    errors = [line for line in console if ":ERROR:CONSOLE" in line or "Uncaught" in line
              or "Error" in line]
    assert Path(png).exists(), res.stderr[-2000:]
    return console, errors, png


def _pixels(png):
    from PIL import Image as PILImage

    with PILImage.open(png) as im:
        return np.asarray(im.convert("RGB"), dtype=float)


def test_report_renders_in_chromium_without_errors(runs, chromium, tmp_path):
    out = write_report(runs["lshape"], tmp_path / "lshape.html")
    console, errors, png = _render(chromium, out, tmp_path / "lshape.png")
    assert errors == []
    assert any("document idle" in line for line in console), console  # bokeh finished rendering
    px = _pixels(png)
    assert px.std() > 20  # not a blank page
    # the plots drew colours (images and curves), not only black text on white
    colourful = np.abs(px - px.mean(axis=2, keepdims=True)).max(axis=2) > 40
    assert colourful.mean() > 0.02


def test_chromium_check_sees_javascript_errors(chromium, tmp_path):
    # The check above can fail: a page with a script error is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>text</p><script>undefinedFunction();</script></body></html>")
    _, errors, png = _render(chromium, bad, tmp_path / "bad.png")
    assert errors and "undefinedFunction" in errors[0]
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    _, _, png = _render(chromium, blank, tmp_path / "blank.png")
    assert _pixels(png).std() < 1
