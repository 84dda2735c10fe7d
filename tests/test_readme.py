"""Every code block of README.md works as written.

* Each ```python block is saved as a script and run with this interpreter from the repository root,
  as a user would (it writes only into ``readme-output/``, which the test removes).
* The ```bash blocks are run with bash in a scratch folder laid out like a checkout (``../shared/data``
  next to it), with this environment's ``bin`` first on PATH in place of ``source .venv/bin/activate``.
  Lines that cannot run inside the test suite are listed in ``NOT_RUN`` with the reason; any other
  line runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED = REPO.parent / "shared"
OUTPUT = REPO / "readme-output"  # the folder the Python example writes to

#: README shell lines not run here: (pattern, why).
NOT_RUN = [
    (re.compile(r"^make (demo|test)\b"), "`make test` is this suite; `make demo` is `tomoflow demo` (tests/cli/test_demo.py)"),
    (re.compile(r"^source \.venv/bin/activate$"), "replaced by this environment's bin folder first on PATH"),
    (re.compile(r"--cluster slurm\b"), "needs a SLURM scheduler"),
    (re.compile(r"--cluster local-cuda\b"), "needs dask-cuda and an NVIDIA GPU (tests/pipeline/test_gpu_conveyor.py)"),
]


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


PYTHON_BLOCKS = blocks("python")
BASH_BLOCKS = blocks("bash")


def _shell_lines(block: str) -> tuple[list[str], list[str]]:
    run, skipped = [], []
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if not command:
            continue
        (skipped if any(p.search(command) for p, _ in NOT_RUN) else run).append(line)
    return run, skipped


#: The shell blocks with a line to run (a block of `make` lines only is not run).
RUNNABLE_BASH = [i for i, b in enumerate(BASH_BLOCKS) if _shell_lines(b)[0]]


def test_readme_has_examples():
    assert PYTHON_BLOCKS and BASH_BLOCKS


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_example_runs_as_a_script(index, tmp_path, shared_data):
    script = tmp_path / f"readme_example_{index}.py"
    script.write_text(PYTHON_BLOCKS[index], encoding="utf-8")
    before = set(os.listdir(REPO))
    shutil.rmtree(OUTPUT, ignore_errors=True)
    try:
        p = _run([sys.executable, str(script)], cwd=REPO)
        created = set(os.listdir(REPO)) - before - {OUTPUT.name}
    finally:
        shutil.rmtree(OUTPUT, ignore_errors=True)
    assert p.returncode == 0, f"README python block {index} failed:\n{p.stdout}\n{p.stderr}"
    assert not created, f"README python block {index} wrote outside {OUTPUT.name}/: {sorted(created)}"


def test_not_run_lines_are_still_in_the_readme():
    """Each NOT_RUN entry matches a README line (no stale exemptions), and the tour itself runs."""
    commands = [line.split("#", 1)[0].strip() for b in BASH_BLOCKS for line in b.splitlines()]
    for pattern, why in NOT_RUN:
        assert any(pattern.search(c) for c in commands), f"NOT_RUN entry {pattern.pattern!r} ({why}) matches nothing"
    assert sum(len(_shell_lines(b)[0]) for b in BASH_BLOCKS) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("index", RUNNABLE_BASH)
def test_shell_example_runs(index, tmp_path, shared_data):
    lines, _ = _shell_lines(BASH_BLOCKS[index])
    work = tmp_path / "checkout"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    script = tmp_path / "tour.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "COLUMNS": "120"}
    p = _run(["bash", "-x", str(script)], cwd=work, env=env)
    assert p.returncode == 0, f"README bash block {index} failed:\n{p.stdout}\n{p.stderr}"
    if "tomoflow center tooth.zarr" in BASH_BLOCKS[index]:  # what the comment promises
        assert re.search(r"rotation centre: 295\.[89]\d px", p.stdout), p.stdout
        assert "saved by `tomoflow center --save`" in p.stdout, p.stdout
