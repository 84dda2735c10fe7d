"""Sphinx configuration of tomoflow's documentation (``make docs``).

Pages are Markdown (MyST-Parser); the API reference is generated from the numpydoc docstrings by
autodoc. Nothing is fetched from the network: no intersphinx, no external JavaScript.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, not an installed copy

import tomoflow  # noqa: E402

# The pydantic models are built before autodoc starts importing: once Sphinx has inspected pydantic's
# BaseModel, building a model that keeps extra keys (the model card) evaluates BaseModel's own
# `__pydantic_extra__: Dict[...]` annotation in the wrong namespace and fails ("name 'Dict' is not defined").
import tomoflow.batch.manifest  # noqa: E402
import tomoflow.io.metadata  # noqa: E402
import tomoflow.weights.card  # noqa: E402

project = "tomoflow"
author = "tomoflow developers"
copyright = "tomoflow developers"  # noqa: A001 (Sphinx's name)
release = tomoflow.__version__
version = release.split("+")[0]

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "**/.ipynb_checkpoints",
]
templates_path = ["_templates"]

# MyST: ```{directive} blocks, :::{note} fences, $math$, heading anchors for links like (architecture.md#layers)
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "fieldlist"]
myst_heading_anchors = 3

# autodoc: a package page documents the names in its ``__all__`` (imported from submodules included)
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types in words
autosummary_generate = False

# numpydoc: no per-class method tables (they would need a generated page per method)
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"tomoflow {version}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = []
