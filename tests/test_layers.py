"""The layer rule: a module never imports a layer above it (docs/architecture.md, "Layers").

Every ``import`` of every module of the package is read from its source (function-level imports
included, since a lazy import is still a dependency), resolved to the package it names, and checked
against :data:`ALLOWED`. A test of the test writes a deliberate upward import into a copy of the
package and checks that it is caught.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tomoflow"

BASE = {"errors", "_checks", "backend", "geometry", "config", "_hashing", "_version", "_typing", "weights"}
SHARED_KERNELS = {"nn", "recon", "sim"}  # kernels every other kernel may use
KERNELS = SHARED_KERNELS | {"align", "register", "recover"}

#: Layer of each top-level module or subpackage of ``tomoflow`` (``__init__`` is the package itself).
LAYER = {
    **dict.fromkeys(BASE, 0),
    **dict.fromkeys(KERNELS, 1),
    "cluster": 2,  # connecting to a cluster, inspecting its workers: imports base modules only
    "io": 2,
    "pipeline": 3,
    "train": 3,
    "batch": 4,
    "report": 5,
    "schemas": 5,  # pictures, HTML and JSON Schemas of the interfaces
    "cli": 6,
    "testing": 6,
    "__init__": 6,
}


def allowed(src: str, dst: str) -> bool:
    """May top-level part ``src`` import top-level part ``dst``?"""
    if src == dst or dst == "_version":
        return True
    if src in BASE:
        return dst in BASE and not (src != "weights" and dst == "weights")
    if src in SHARED_KERNELS:  # nn, recon, sim: base and the shared kernels below them
        order = ["nn", "recon", "sim"]
        return dst in BASE or (dst in SHARED_KERNELS and order.index(dst) < order.index(src))
    if src in KERNELS:  # align, register, recover: never each other
        return dst in BASE or dst in SHARED_KERNELS
    if src == "cluster":
        return dst in BASE
    if src == "io":
        return dst in BASE or dst in KERNELS
    return LAYER[dst] < LAYER[src] or (LAYER[dst] == 2 and LAYER[src] > 2)


@dataclass(frozen=True)
class Edge:
    module: str
    line: int
    target: str
    src: str
    dst: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target} ({self.src} -> {self.dst})"


def _part(module: str, package: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(root: Path) -> list[Edge]:
    """Every import of another part of the package, from the sources under ``root``."""
    package = root.name
    edges: list[Edge] = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        here = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from tomoflow import config` names the module tomoflow.config
                targets = [f"{mod}.{a.name}" for a in node.names] if mod == package else [mod]
            for target in targets:
                if target == package or target.startswith(package + "."):
                    src, dst = _part(module, package), _part(target, package)
                    if src != dst:
                        edges.append(Edge(module, node.lineno, target, src, dst))
    return edges


def violations(root: Path) -> list[Edge]:
    return [e for e in imports(root) if e.dst in LAYER and e.src in LAYER and not allowed(e.src, e.dst)]


def test_every_part_of_the_package_has_a_layer():
    parts = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))
    }
    assert parts - LAYER.keys() == set(), "add these to LAYER (and to docs/architecture.md)"


def test_no_module_imports_a_layer_above_it():
    bad = violations(PACKAGE)
    assert not bad, "upward imports (see docs/architecture.md, Layers):\n" + "\n".join(map(str, bad))


def test_the_layer_test_catches_an_upward_import(tmp_path):
    """A deliberate violation in a copy of the package: storage importing the pipeline."""
    copy = tmp_path / "tomoflow"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.safetensors", "__pycache__"))
    before = {(e.module, e.dst) for e in violations(copy)}
    reader = copy / "io" / "readers.py"
    reader.write_text(
        reader.read_text(encoding="utf-8") + "\n\ndef _late():\n    from ..pipeline import engine  # noqa\n",
        encoding="utf-8",
    )
    kernel = copy / "recon" / "fbp.py"
    kernel.write_text("import tomoflow.io.output\n" + kernel.read_text(encoding="utf-8"), encoding="utf-8")
    found = {(e.module, e.dst) for e in violations(copy)} - before
    assert found == {("tomoflow.io.readers", "pipeline"), ("tomoflow.recon.fbp", "io")}


@pytest.mark.parametrize(
    ("src", "dst", "ok"),
    [
        ("io", "pipeline", False),
        ("recon", "io", False),
        ("recover", "align", False),
        ("align", "nn", True),
        ("pipeline", "cluster", True),
        ("batch", "pipeline", True),
        ("cli", "batch", True),
        ("batch", "cli", False),
        ("cli", "report", True),
        ("report", "cli", False),
        ("errors", "recon", False),
        ("sim", "recon", True),
        ("recon", "sim", False),
        ("cluster", "io", False),
    ],
)
def test_rule(src, dst, ok):
    assert allowed(src, dst) is ok
