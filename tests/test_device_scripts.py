"""The GPU-machine scripts: scripts/device-check runs its steps within a deadline and reports each one;
scripts/device-wheels' list pins what the machine lacks (checked against the development environment)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device-check"), *args], env=env, capture_output=True, text=True, timeout=300
    )
    rows = [line.split("\t") for line in (tmp_path / "steps.tsv").read_text().splitlines()[1:]]
    return r, rows


def test_device_check_runs_a_step_and_reports_it(tmp_path):
    r, rows = _check(tmp_path, "env")
    assert r.returncode == 0, r.stderr
    assert [row[:2] for row in rows] == [["env", "0"]]
    log = (tmp_path / "device-check.log").read_text()
    assert re.search(r"^torch \S+", log, re.M) and "tomoflow" in log and "torch cuda" in log


def test_device_check_leaves_out_steps_past_its_deadline_and_refuses_unknown_ones(tmp_path):
    r, rows = _check(tmp_path, "--deadline", "5", "env", "tests")
    assert r.returncode == 0
    assert [(row[0], row[3]) for row in rows] == [("env", "not run: 5 s left"), ("tests", "not run: 5 s left")]
    bad = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device-check"), "everything"],
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown argument everything" in bad.stderr


def _pins() -> dict[str, str]:
    lines = (ROOT / "scripts" / "device-wheels.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if line.strip() and not line.startswith("#"))


@pytest.mark.parametrize("name", ["dask", "distributed", "zarr", "numcodecs", "pydantic", "pydantic_core", "bokeh"])
def test_device_wheels_are_the_versions_tomoflow_is_developed_with(name):
    """The GPU machine runs the same dask, zarr and pydantic as the tests here (constraints.txt)."""
    assert _pins()[name] == metadata.version(name)


def test_device_wheels_cover_what_the_image_lacks():
    image = {
        re.sub(r"[-_.]+", "-", line).lower()
        for line in (ROOT / "scripts" / "device-packages.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    pinned = {re.sub(r"[-_.]+", "-", n).lower() for n in _pins()}
    needed = {"dask", "distributed", "zarr", "numcodecs", "pydantic", "bokeh", "dask-cuda", "olefile", "monai"}
    assert needed <= pinned and not (needed & image)
