"""HTML reports from stored runs and benchmark records, rendered in headless Chromium."""

import importlib.util
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from bokeh.models import GlyphRenderer, Image

import daskie
from daskie import MLP, LevenbergMarquardt, Monolithic, QuadratureCollocation, catalog
from daskie.cli import main
from daskie.errors import ToleranceWarning, SpecError
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
        with warnings.catch_warnings():  # six steps of a tiny net: far from the reference
            warnings.simplefilter("ignore", ToleranceWarning)
            daskie.solve(name, formulation=SMALL_Q, strategy=Monolithic(window=3),
                         optimizer=LevenbergMarquardt(steps=6), client="sync", store=out[name])
    return out


def _images(layout):
    return [r.glyph for r in layout.select({"type": GlyphRenderer}) if isinstance(r.glyph, Image)]


def test_masked_domain_is_transparent_outside_the_l_shape(runs):
    with RunStore(runs["lshape"], mode="a").read() as ds:
        layout = run_layout(ds.load())
    images = _images(layout)
    assert len(images) == 4  # mu, exact, error, log10 |error|
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
    with warnings.catch_warnings():  # tiny networks: far from the reference, as expected
        warnings.simplefilter("ignore", ToleranceWarning)
        return [bench.run_one(p, "quadrature", "monolithic", 3, None)
                for p in ("fredholm1d", "volterra1d")]


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


def _pixels(png):
    from PIL import Image as PILImage

    with PILImage.open(png) as im:
        return np.asarray(im.convert("RGB"), dtype=float)


def test_report_renders_in_chromium_without_errors(runs, render, tmp_path):
    out = write_report(runs["lshape"], tmp_path / "lshape.html")
    png = tmp_path / "lshape.png"
    console, errors = render(out, png)
    assert errors == []
    assert any("document idle" in line for line in console), console  # bokeh finished rendering
    px = _pixels(png)
    assert px.std() > 20  # not a blank page
    # the plots drew colours (images and curves), not only black text on white
    colourful = np.abs(px - px.mean(axis=2, keepdims=True)).max(axis=2) > 40
    assert colourful.mean() > 0.02


def test_chromium_check_sees_javascript_errors(render, tmp_path):
    # The check above can fail: a page with a script error is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>text</p><script>undefinedFunction();</script></body></html>")
    png = tmp_path / "bad.png"
    _, errors = render(bad, png)
    assert errors and "undefinedFunction" in errors[0]
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    png = tmp_path / "blank.png"
    render(blank, png)
    assert _pixels(png).std() < 1


# -- pictures a person can read (issue 16) ------------------------------------------------------

from daskie.report import figures  # noqa: E402


def test_group_labels_name_sub_models_not_row_slices():
    assert figures.submodel_names("F0.2<[1457:2048]+mu@x[0:512]+F0.2") == "F0.2, mu"
    assert figures.group_label(1, "F0.1+mu+F0.2") == "group 1: F0.1, mu, F0.2"
    assert figures.group_label(figures.POLISH, "all") == "polish (all)"


def _steps(group, losses, window=0, **extra):
    return [{"kind": "step", "group": group, "submodels": f"S{group}", "window": window,
             "epoch": e + 1, "loss": v, "optimizer": "Adam", **extra} for e, v in enumerate(losses)]


def test_joint_losses_are_drawn_once_and_own_losses_per_group():
    joint = _steps(0, [3.0, 2.0]) + _steps(1, [3.0, 2.0])
    assert figures.losses_are_joint(joint) is True
    cols = figures.loss_columns(joint)
    assert list(cols) == ["joint"] and cols["joint"] == {"epoch": [1, 2], "loss": [3.0, 2.0]}
    own = _steps(0, [3.0, 2.0]) + _steps(1, [5.0, 4.0])
    assert figures.losses_are_joint(own) is False
    assert set(figures.loss_columns(own)) == {"group:0:S0", "group:1:S1"}
    assert figures.losses_are_joint(_steps(0, [1.0])) is None  # not settled yet
    # block losses: once per step, though every group of a joint run reports them
    blocks = _steps(0, [1.0], loss_eq=0.5) + _steps(1, [1.0], loss_eq=0.5)
    assert figures.loss_columns(blocks)["block:eq"] == {"epoch": [1], "loss": [0.5]}
    assert figures.curve_style("block:eq")["line_dash"] == "dashed"
    assert figures.curve_style("joint")["legend_label"] == "joint loss (every group)"


def test_window_cost_legend_has_one_entry_per_group_in_its_colour():
    from bokeh.models import ColumnDataSource, Legend

    recs = [{**r, "t_start": 1.0 + r["group"], "t_end": 2.0 + r["group"], "window_s": 1.0,
             "sync_s": 0.1} for r in _steps(0, [1.0]) + _steps(1, [1.0])]
    p = figures.window_cost_figure(ColumnDataSource(figures.window_columns(recs, 0.0)))
    (legend,) = [x for x in p.above if isinstance(x, Legend)]
    assert [item.label.field for item in legend.items] == ["label"]  # grouped by group label
    assert "coloured by group" in p.title.text


def test_error_maps_show_structure_and_state_the_maximum(tmp_path):
    from bokeh.models import ColorBar, Title

    from daskie.report.run import solution_figures

    x0 = x1 = np.linspace(0, 1, 41)
    err = 1e-6 * np.sin(6 * np.add.outer(x0, x1))
    err[-1, -1] = 1e-3  # a corner spike that a linear scale to the maximum would show alone
    ds = __import__("xarray").Dataset({"mu": (("x0", "x1"), err), "exact": (("x0", "x1"), 0 * err),
                                       "error": (("x0", "x1"), err)}, coords={"x0": x0, "x1": x1})
    layout = solution_figures(ds)
    plots = [p for r in layout for p in r.children]
    titles = [p.title.text for p in plots]
    assert titles == ["neural solution mu", "exact solution", "error mu - exact", "log10 |mu - exact|"]
    error_plot = plots[2]
    (bar,) = [x for x in error_plot.right if isinstance(x, ColorBar)]
    assert bar.title == "mu - exact"
    high = bar.color_mapper.high
    assert high == -bar.color_mapper.low and 0.9e-6 < high < 1.1e-6  # the 99th percentile
    captions = [x.text for x in error_plot.below if isinstance(x, Title)]
    assert any("max |value| 1.00e-03" in c for c in captions)
    assert all(any(isinstance(x, ColorBar) and x.title for x in p.right) for p in plots)


def test_report_of_an_interrupted_run_uses_its_checkpoints(tmp_path):
    from daskie.store import Checkpoint

    path = tmp_path / "stopped.zarr"
    store = RunStore(path)
    store.write_meta({"problem_spec": {"name": "lshape"}, "strategy": "monolithic"})
    records = _steps(0, [1.0, 0.5]) + [{"kind": "window", "window": 0, "epoch": 2, "loss": 0.5,
                                         "mse": 0.1234, "elapsed_s": 1.5}]
    store.write_checkpoint(Checkpoint(0, [], records))
    store.close(failed=True)
    out = write_report(path, tmp_path / "stopped.html")
    text = Path(out).read_text()
    assert "daskie run: lshape" in text and "daskie run: ?" not in text
    assert "Interrupted or failed: no result yet; 1 complete checkpoint (last window 0)" in text
    assert "before the profiler existed" not in text
    assert "0.1234" in text  # the last window's test MSE stands in for the final one


def test_benchmark_charts_keep_neural_rows_readable():
    from daskie.report.bench import bench_layout

    recs = [{"problem": p, "formulation": "quadrature", "strategy": "monolithic", "mse": m,
             "ref_mse": 1e-33, "wall_s": 10.0} for p, m in (("E1", 1e-9), ("E2", 1e-7))]
    layout = bench_layout(recs)
    mse_plot = next(c for c in layout.children if getattr(c, "title", None) is not None
                    and c.title.text.startswith("Test MSE"))
    low, high = mse_plot.y_range.start, mse_plot.y_range.end
    assert 1e-13 < low < 1e-9 and 1e-7 < high < 1e-4  # not 1e-34 .. 1e-2
    refs = [r for r in mse_plot.renderers if "note" in r.data_source.data
            and any(r.data_source.data["note"])]
    assert refs and refs[0].data_source.data["value"] == [1e-33, 1e-33]
    assert all(y >= low for y in refs[0].data_source.data["y"])
    table = layout.children[-1].text
    assert "In every record: formulation = quadrature" in table  # constant columns folded
