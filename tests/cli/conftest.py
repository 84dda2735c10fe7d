"""Fixtures of the command-line tests: run ``tomoflow`` as a user would (typer's CliRunner, or a real
process), check that a mistake is one line on stderr, and that nothing was left on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tomoflow.cli import app


class Ran:
    """What a command did: exit code, stdout, stderr (and both interleaved)."""

    def __init__(self, code: int, stdout: str, stderr: str, output: str) -> None:
        self.code, self.stdout, self.stderr, self.output = code, stdout, stderr, output

    def __repr__(self) -> str:  # shown by a failing assert
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@pytest.fixture(scope="session")
def cli() -> Callable[..., Ran]:
    """``cli("recon", store, "--out", vol)``: run a command in this process (exceptions propagate)."""
    runner = CliRunner()

    def run(*args: Any) -> Ran:
        r = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return Ran(r.exit_code, r.stdout, r.stderr, r.output)

    return run


@pytest.fixture(scope="session")
def cli_process() -> Callable[..., Ran]:
    """Run ``tomoflow ...`` as a separate process (real stdout/stderr, logging and Rich consoles)."""

    def run(*args: Any, cwd: Path | None = None) -> Ran:
        p = subprocess.run(
            [sys.executable, "-m", "tomoflow.cli", *map(str, args)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "80"},
        )
        return Ran(p.returncode, p.stdout, p.stderr, p.stdout + p.stderr)

    return run


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")}


@pytest.fixture
def one_line_error() -> Callable[..., str]:
    """``one_line_error(ran, *words)``: exit code 2, exactly one ``error:`` line on stderr holding every
    word, no traceback anywhere. Returns the line."""

    def check(ran: Ran, *words: str) -> str:
        assert ran.code == 2, ran
        lines = ran.stderr.splitlines()
        assert len(lines) == 1, ran
        assert lines[0].startswith("error: "), ran
        assert "Traceback" not in ran.output, ran
        for w in words:
            assert w in lines[0], (w, ran)
        return lines[0]

    return check


@pytest.fixture
def unchanged() -> Callable[[Path], Any]:
    """``with unchanged(folder): ...`` asserts nothing was created, removed or renamed under folder."""
    import contextlib

    @contextlib.contextmanager
    def watch(root: Path):
        before = files_under(root)
        yield
        after = files_under(root)
        assert after == before, f"left behind: {sorted(after - before)}; removed: {sorted(before - after)}"

    return watch


@pytest.fixture(scope="session")
def tooth_store(tmp_path_factory, tooth_h5, cli) -> Path:
    """The tooth scan ingested once for the session (read only: tests that save a centre make their own)."""
    store = tmp_path_factory.mktemp("cli") / "tooth.zarr"
    ran = cli("ingest", tooth_h5, store)
    assert ran.code == 0, ran
    return store


@pytest.fixture
def fresh_tooth_store(tmp_path, tooth_h5, cli) -> Path:
    """The tooth scan ingested into this test's own folder, under a name holding Rich markup."""
    store = tmp_path / "scan [b].zarr"
    ran = cli("ingest", tooth_h5, store)
    assert ran.code == 0, ran
    return store
