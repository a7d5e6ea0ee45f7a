"""Sphinx configuration of daskie's documentation.

Build (offline: no intersphinx, no link checks, nothing fetched)::

    pip install -e ".[docs]" "torch==2.13.0"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The gallery (``docs/gallery/plot_*.py``) runs at build time; the API pages are written from
the package's ``__all__`` lists (``_ext/daskie_api.py``); the benchmark tables are read from
``benchmarks/results/`` (``_ext/daskie_benchmarks.py``).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

# Gallery examples run in this process: keep them on one thread each and off the GPU, and
# keep matplotlib headless.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import daskie  # noqa: E402

project = "daskie"
author = "the daskie developers"
copyright = "the daskie developers, BSD-3-Clause"
release = version = daskie.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "daskie_api",
    "daskie_benchmarks",
    "daskie_cli",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# highdim.md is a page only through guide/highdim.md, which includes it.
exclude_patterns = ["_build", "highdim.md", "gallery/GALLERY_HEADER.rst",
                    "**/sg_execution_times.rst", "auto_gallery/*.ipynb", "auto_gallery/*.zip"]
templates_path = []
nitpicky = True
# Offline build: no intersphinx. References to other projects' objects become plain text
# (daskie_api.resolve_alias); every reference to a daskie object must resolve.
suppress_warnings = []

# -- autodoc / numpydoc ------------------------------------------------------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc's Parameters section says the types
autodoc_inherit_docstrings = True
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()
add_module_names = False
python_display_short_literal_types = True

# -- MyST (architecture.md, highdim.md) -------------------------------------------------------
myst_heading_anchors = 3
# The README-style Markdown pages refer to files of the repository (``benchmarks/...``) as
# literal text, never as links, so nothing here needs a link target outside docs/.

# -- sphinx-gallery ---------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_gallery",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "plot_gallery": "True",
    "capture_repr": ("__repr__",),
    "show_memory": False,
    "show_signature": False,
    "min_reported_time": 0,
    "within_subsection_order": "daskie_api.GalleryOrder",
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "write_computation_times": True,
}

# -- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"daskie {version}"
html_static_path = ["_static"]
html_css_files = ["daskie.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 7,
    "icon_links": [],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {page: [] for page in ("index", "benchmarks", "architecture", "changelog",
                                       "contributing")}
html_show_sourcelink = False
html_copy_source = False
