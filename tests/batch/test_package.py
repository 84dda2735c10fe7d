"""The batch package as a whole: its public names, and what importing it (and the storage layer) loads.

Each import check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import tomoflow.batch


def _loaded(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_public_name_resolves_from_its_module():
    assert sorted(tomoflow.batch._LAZY) == sorted(tomoflow.batch.__all__)
    for name, module in tomoflow.batch._LAZY.items():
        assert getattr(tomoflow.batch, name) is getattr(importlib.import_module(module), name), name


def test_importing_the_batch_package_loads_no_torch():
    mods = _loaded("import tomoflow.batch\nfrom tomoflow.batch import run_batch, scan_archive, load_manifest")
    assert "torch" not in mods
    assert "tomoflow.batch.runner" in mods  # the names were really loaded


def test_the_storage_layer_imports_nothing_above_it():
    mods = _loaded("import tomoflow.io")
    above = [
        m
        for m in mods
        if m.split(".")[:2][-1] in ("pipeline", "batch", "recover", "register", "align", "train")
        and m.startswith("tomoflow.")
    ]
    assert above == []
