"""Run the code blocks of a Markdown page as a user would: shared by tests/test_readme.py and
tests/test_docs.py (not a test module itself).

* A ```python block is saved as a script and run with this interpreter (so ``if __name__ ==
  "__main__":`` guards and Dask worker processes behave as for a user).
* A ```bash block is run with ``bash -x`` under ``set -euo pipefail``, with this environment's ``bin``
  first on PATH in place of ``source .venv/bin/activate``, in a scratch folder laid out like a
  checkout (:func:`scratch_checkout`: ``../shared`` beside it). Lines matching a *not-run* pattern
  (a command that cannot run inside the test suite, with the reason) are left out; any other line
  runs.

Only fences opened exactly as ```python or ```bash are run; other languages (```text, ```yaml,
```console) and MyST directives (```{eval-rst}) are not.

The suite imports test files by path (``--import-mode=importlib``), so ``tests/`` is not on
``sys.path``: a test module loads this file by its path, as ``tests/test_readme.py`` does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

#: A not-run rule: (pattern searched in a shell command, why it is not run here).
NotRun = tuple[re.Pattern[str], str]

_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", flags=re.S | re.M)


def blocks(text: str, language: str | None = None) -> list[tuple[str, str]]:
    """The fenced code blocks of Markdown ``text`` in order, as ``(language, code)``; only ``language``'s
    when given."""
    return [(lang, code) for lang, code in _FENCE.findall(text) if language is None or lang == language]


def command_of(line: str) -> str:
    """A shell line without its comment and surrounding blanks."""
    return line.split("#", 1)[0].strip()


def shell_lines(block: str, not_run: Sequence[NotRun]) -> tuple[list[str], list[str]]:
    """The lines of a bash block to run and the ones left out (by ``not_run``); blank and comment-only
    lines are in neither."""
    run, skipped = [], []
    for line in block.splitlines():
        command = command_of(line)
        if not command:
            continue
        (skipped if any(p.search(command) for p, _ in not_run) else run).append(line)
    return run, skipped


def stale_not_run(texts: Sequence[str], not_run: Sequence[NotRun]) -> list[str]:
    """The ``not_run`` entries that match no shell line of the pages ``texts`` (stale exemptions)."""
    commands = [command_of(line) for t in texts for _, b in blocks(t, "bash") for line in b.splitlines()]
    return [f"{p.pattern!r} ({why})" for p, why in not_run if not any(p.search(c) for c in commands)]


def scratch_checkout(tmp_path: Path) -> Path:
    """``tmp_path/checkout``, a folder laid out like a checkout: ``../shared`` (the real test data in
    ``../shared/data``) beside it."""
    work = tmp_path / "checkout"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    return work


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "120",
    }


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_python(code: str, cwd: Path, script: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Save ``code`` as ``script`` and run it with this interpreter in ``cwd``."""
    script.write_text(code, encoding="utf-8")
    return _run([sys.executable, str(script)], cwd=cwd, env=_env(), timeout=timeout)


def run_bash(lines: Sequence[str], cwd: Path, script: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run shell ``lines`` as one ``bash -x`` script (``set -euo pipefail``) saved as ``script``, in ``cwd``."""
    script.write_text("set -euo pipefail\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return _run(["bash", "-x", str(script)], cwd=cwd, env=_env(), timeout=timeout)


def report(p: subprocess.CompletedProcess) -> str:
    """What a failed block printed, for an assertion message."""
    return f"exit code {p.returncode}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}"
