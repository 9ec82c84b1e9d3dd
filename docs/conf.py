"""Sphinx configuration for optnorm's documentation (``python -m sphinx -W -b html docs docs/_build``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import optnorm  # noqa: E402
import gen_tables  # noqa: E402

# The API lists and the capability table are generated from the code before Sphinx reads anything.
API_FILES = gen_tables.write_all(HERE)

project = "optnorm"
author = "optnorm developers"
copyright = "2026, optnorm developers"
release = version = optnorm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",   # MathJax served from _static: math renders without network access
    "numpydoc",
]
autosummary_generate = API_FILES
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
exclude_patterns = ["_build", "examples/*.py", "_api_*.rst", "_capabilities.rst"]
html_theme = "alabaster"
html_static_path = ["_static"]
suppress_warnings = ["autosummary.import_cycle"]

