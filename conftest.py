"""pytest settings of the whole repository: the docstring examples of the package.

``pytest`` (see ``[tool.pytest.ini_options]`` in pyproject.toml) runs the tests in ``tests/`` and, with
``--doctest-modules``, the ``>>>`` examples in the docstrings of ``tomoflow/``. An example that cannot
run anywhere (it needs files of the user's, a GPU, a real cluster) is marked ``# doctest: +SKIP``
with the reason in the text next to it.

A module whose top-level imports need an optional package that is not installed here (CuPy and
dask-cuda of the ``gpu`` extra, ONNX, dask-jobqueue) is not collected for its examples: it cannot
be imported. Every other module must import, so a broken import still fails the run.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

#: Optional packages (extras of pyproject.toml) a module of the package may import at its top level.
OPTIONAL = ("cupy", "cupyx", "dask_cuda", "onnx", "onnxruntime", "dask_jobqueue", "dask_kubernetes")

PACKAGE = Path(__file__).resolve().parent / "tomoflow"


def _missing_optional(path: Path) -> str | None:
    """The first optional package that ``path`` imports at its top level and that is not installed."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None  # let the collection report it
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in OPTIONAL and importlib.util.find_spec(top) is None:
                return top
    return None


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """Leave out the package modules that cannot be imported on this machine (see the module docstring)."""
    if (
        collection_path.suffix == ".py"
        and collection_path.is_relative_to(PACKAGE)
        and _missing_optional(collection_path)
    ):
        return True
    return None
