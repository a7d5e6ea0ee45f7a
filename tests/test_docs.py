"""The documentation: every public name has a docstring, every code block of the README and the
docs runs as written, the site builds with warnings as errors, and it renders in Chromium.

* The docstring test walks the same names as the API reference (``docs/_ext/daskie_api.py``:
  ``daskie.__all__`` and the ``__all__`` of every package page), and their public methods.
* Code blocks: every ```` ```python ```` block of ``README.md`` and of the Markdown pages in
  ``docs/``, and every ``.. code-block:: python`` of the reStructuredText pages, runs as a
  script file in a fresh interpreter in an empty directory. A block whose first line is
  ``# docs-test: skip (why)`` is not run (it needs a real cluster, a batch queue or a GPU);
  the reason is required and shows in the skip.
* The build: ``sphinx-build -W --keep-going`` (incremental when ``.ci/run`` built the site just
  before); then headless Chromium loads four pages, screenshots them and checks what a person
  would see: the page's title in the rendered DOM and a screenshot that is not blank.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP = re.compile(r"^#\s*docs-test:\s*skip\s*\((.+)\)\s*$")


def _api_module():
    spec = importlib.util.spec_from_file_location("daskie_api", DOCS / "_ext" / "daskie_api.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- docstrings -----------------------------------------------------------------------------------

# Names without a docstring in modules that others are rewriting now (the lead empties this
# list as those docstrings land). Nothing else may be missing one.
ALLOWED_UNDOCUMENTED: set[str] = set()


def _has_doc(obj) -> bool:
    doc = inspect.getdoc(obj)
    if not doc or not doc.strip():
        return False
    # dataclasses and named tuples without a docstring get their signature as one
    return not (inspect.isclass(obj) and doc.startswith(obj.__name__ + "("))


def _methods(cls):
    """Public functions and properties defined in ``cls`` itself (inherited ones are checked
    where they are defined; an override without a docstring inherits its base's, as autodoc
    shows it)."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        elif isinstance(value, property):
            value = value.fget
        if inspect.isfunction(value):
            yield name, value


def _inherited_doc(cls, name) -> bool:
    for base in cls.__mro__[1:]:
        value = base.__dict__.get(name)
        if isinstance(value, property):
            value = value.fget
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if value is not None and getattr(value, "__doc__", None):
            return True
    return False


def public_names():
    """``{canonical name: documented?}`` for every public function, class and method."""
    out = {}
    for canonical, obj, kind, _ in _api_module().public_objects():
        if kind in ("data", "module"):
            continue
        out[canonical] = _has_doc(obj)
        if inspect.isclass(obj):
            for name, fn in _methods(obj):
                doc = bool(fn.__doc__ and fn.__doc__.strip()) or _inherited_doc(obj, name)
                out[f"{canonical}.{name}"] = doc
    return out


def test_every_public_name_has_a_docstring():
    names = public_names()
    assert len(names) > 300  # the walk found the API, not an empty list
    missing = sorted(n for n, ok in names.items() if not ok and n not in ALLOWED_UNDOCUMENTED)
    assert not missing, f"{len(missing)} public names without a docstring: {missing}"
    stale = sorted(n for n in ALLOWED_UNDOCUMENTED if names.get(n, True))
    assert not stale, f"documented now (or gone): remove from ALLOWED_UNDOCUMENTED: {stale}"


def test_docstring_check_sees_a_missing_docstring():
    class Bare:
        def run(self):
            pass

    assert not _has_doc(Bare) and not list(n for n, f in _methods(Bare) if f.__doc__)
    assert _has_doc(test_docstring_check_sees_a_missing_docstring) is False  # no docstring here


# -- code blocks ----------------------------------------------------------------------------------

def _md_blocks(text):
    return [(m.start(), m.group(1)) for m in
            re.finditer(r"^```python[^\n]*\n(.*?)^```", text, re.S | re.M)]


def _rst_blocks(text):
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if re.match(r"^\s*\.\. code-block:: python\s*$", lines[i]):
            indent = len(lines[i]) - len(lines[i].lstrip()) + 3
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or lines[j].lstrip().startswith(":")
                                      and j == i + 1):
                j += 1
            body = []
            while j < len(lines) and (not lines[j].strip()
                                      or len(lines[j]) - len(lines[j].lstrip()) >= indent):
                body.append(lines[j][indent:])
                j += 1
            out.append((sum(len(x) + 1 for x in lines[:i]), "\n".join(body).strip("\n") + "\n"))
            i = j
        else:
            i += 1
    return out


def code_blocks():
    """``[(id, source)]`` of every Python block of README.md and of the docs' pages."""
    files = [ROOT / "README.md"]
    for path in sorted(DOCS.rglob("*")):
        rel = path.relative_to(DOCS).parts
        if rel[0] in ("_build", "auto_gallery", "api", "gallery", "_ext") or \
                path.suffix not in (".md", ".rst"):
            continue
        files.append(path)
    out = []
    for path in files:
        text = path.read_text()
        blocks = _md_blocks(text) if path.suffix == ".md" else _rst_blocks(text)
        for offset, source in blocks:
            line = text.count("\n", 0, offset) + 1
            out.append((f"{path.relative_to(ROOT)}:{line}", source))
    return out


BLOCKS = code_blocks()


def test_code_blocks_are_found():
    ids = [i for i, _ in BLOCKS]
    assert any(i.startswith("README.md") for i in ids)
    assert any(i.startswith("docs/guide/equations.rst") for i in ids)
    # the extractor reads an indented rst block to its end and no further
    sample = ".. code-block:: python\n\n   a = 1\n\n   b = 2\n\nText after.\n"
    assert _rst_blocks(sample)[0][1] == "a = 1\n\nb = 2\n"


def _skip_reason(block_id, source):
    first = source.lstrip().splitlines()[0] if source.strip() else ""
    if first.startswith("#") and "docs-test" in first:
        reason = SKIP.match(first)
        assert reason, f"{block_id}: write the skip marker as '# docs-test: skip (why)'"
        return reason.group(1)
    return None


def _run_block(source, where):
    script = where / "snippet.py"
    script.write_text(source)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONWARNINGS": "ignore::UserWarning"}
    return subprocess.run([sys.executable, str(script)], cwd=where, env=env,
                          capture_output=True, text=True, timeout=280)


@pytest.fixture(scope="module")
def block_runs(request, tmp_path_factory):
    """The selected runnable blocks, started at once two processes at a time (each block is
    one single-threaded interpreter; CI has two cores): ``{block id: future}``. Each test then
    waits for its own block only."""
    from concurrent.futures import ThreadPoolExecutor

    selected = {item.callspec.params["block_id"] for item in request.session.items
                if "block_id" in getattr(getattr(item, "callspec", None), "params", {})}
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {}
    for block_id, source in BLOCKS:
        if block_id in selected and _skip_reason(block_id, source) is None:
            where = tmp_path_factory.mktemp("block")
            futures[block_id] = pool.submit(_run_block, source, where)
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("block_id,source", BLOCKS, ids=[i for i, _ in BLOCKS])
def test_code_block_runs_as_a_script(block_id, source, block_runs):
    reason = _skip_reason(block_id, source)
    if reason is not None:
        pytest.skip(f"{block_id}: {reason}")
    res = block_runs[block_id].result()
    assert res.returncode == 0, f"{block_id} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"


# -- the site -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site():
    """The built site: ``sphinx-build -W --keep-going`` into ``docs/_build/html``."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed: "
                        "pip install -e '.[test,docs]'")
    out = DOCS / "_build" / "html"
    res = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                          "html", str(DOCS), str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-6000:]
    return out


def test_site_has_every_page(site):
    for page in ["index", "getting-started/install", "getting-started/first-solve",
                 "getting-started/first-cluster", "getting-started/gpu", "guide/equations",
                 "guide/formulations", "guide/optimizers", "guide/strategies", "guide/clusters",
                 "guide/operator", "guide/highdim", "guide/stores", "guide/dashboard",
                 "guide/settings", "guide/cli", "guide/reference", "api/index", "api/daskie",
                 "benchmarks", "architecture", "changelog", "contributing",
                 "auto_gallery/index"]:
        assert (site / f"{page}.html").exists(), page
    api = (site / "api" / "daskie.problems.html").read_text()
    assert 'id="daskie.problems.Problem"' in api  # autodoc documented it under its package
    gallery = sorted((site / "auto_gallery").glob("plot_*.html"))
    assert len(gallery) >= 5
    for page in gallery:  # every example ran and drew its figure
        assert "sphx-glr-single-img" in page.read_text() or "sphx-glr-multi-img" in \
            page.read_text(), page.name


def _pixels(png):
    import numpy as np
    from PIL import Image

    with Image.open(png) as im:
        return np.asarray(im.convert("L"), dtype=float)


@pytest.mark.parametrize("page,title,height", [
    ("index.html", "daskie", 1100),
    ("guide/equations.html", "Writing an equation", 1400),
    ("auto_gallery/plot_first_solve.html", "The first solve", 3300),  # down to the figures
    ("api/daskie.problems.html", "Problems and the catalog", 1400),
])
def test_page_renders_in_chromium(site, chromium, render, page, title, height):
    shots = site.parent / "screenshots"  # kept beside the site, for a person to look at
    shots.mkdir(exist_ok=True)
    png = shots / (page.replace("/", "_").replace(".html", ".png"))
    _, errors = render(site / page, png, height=height)
    assert not errors, errors
    px = _pixels(png)
    assert px.std() > 20, "blank page"  # text, code and figures, not one colour
    dom = subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox",
                          "--virtual-time-budget=5000", "--dump-dom", (site / page).as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert re.search(r"<title>[^<]*" + re.escape(title), dom), dom[:500]
    assert re.search(r"<h1>[^<]*" + re.escape(title.split(":")[0]), dom)
    if "auto_gallery" in page:  # the example's figure is on the page and was loaded
        assert re.search(r'<img[^>]+sphx_glr_plot_first_solve_\d+\.png', dom)
