"""Sphinx configuration of the streamlev documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W -b html docs docs/_build/html

The notebooks in ``notebooks/`` are copied into ``docs/notebooks/`` (a build directory, not
committed) and executed by myst-nb at build time, so their plots appear without committed
outputs.  They run at small sizes unless ``STREAMLEV_NOTEBOOK_QUICK=0`` is set.  The
performance page is generated from the JSON records in ``benchmarks/results/``
(``_ext/perftables.py``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))  # the docs' own Sphinx extension, not the package

# The notebooks run at small sizes in documentation builds unless asked otherwise (the kernel inherits this).
os.environ.setdefault("STREAMLEV_NOTEBOOK_QUICK", "1")


def _copy_notebooks() -> None:
    """Mirror notebooks/*.ipynb into docs/notebooks/ (the toctree globs that directory)."""
    target = DOCS / "notebooks"
    target.mkdir(exist_ok=True)
    wanted = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    for old in target.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for name in wanted:
        src, dst = ROOT / "notebooks" / name, target / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


_copy_notebooks()

import streamlev  # noqa: E402  (after the path and environment set-up)

project = "streamlev"
author = "the streamlev developers"
copyright = "the streamlev developers"  # noqa: A001 - Sphinx's name
release = streamlev.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "perftables",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "jupyter_execute", "**.ipynb_checkpoints"]
templates_path: list[str] = []

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# myst-nb: execute every notebook at build time (outputs are never committed); a failing cell fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_render_markdown_format = "myst"  # text/markdown outputs (tables) parsed as MyST, which has tables

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"streamlev {release}"
html_static_path: list[str] = []

perftables_results = str(ROOT / "benchmarks" / "results")
