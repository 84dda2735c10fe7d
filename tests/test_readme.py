"""Every code block of README.md works as written.

* Each ```python block is saved as a script and run with this interpreter from the repository root,
  as a user would (it writes only into ``readme-output/``, which the test removes).
* The ```bash blocks are run with bash in a scratch folder laid out like a checkout (``../shared/data``
  next to it), with this environment's ``bin`` first on PATH in place of ``source .venv/bin/activate``.
  Lines that cannot run inside the test suite are listed in ``NOT_RUN`` with the reason; any other
  line runs.

The runner is shared with the documentation's test (``tests/_codeblocks.py``, ``tests/test_docs.py``).
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
import tomoflow_tests_codeblocks as codeblocks  # the code-block runner, registered by tests/conftest.py

REPO = codeblocks.REPO
README = REPO / "README.md"
OUTPUT = REPO / "readme-output"  # the folder the Python example writes to

#: README shell lines not run here: (pattern, why).
NOT_RUN = [
    (
        re.compile(r"^make (demo|test)\b"),
        "`make test` is this suite; `make demo` is `tomoflow demo` (tests/cli/test_demo.py)",
    ),
    (re.compile(r"^source \.venv/bin/activate$"), "replaced by this environment's bin folder first on PATH"),
    (re.compile(r"--cluster slurm\b"), "needs a SLURM scheduler"),
    (re.compile(r"--cluster local-cuda\b"), "needs dask-cuda and an NVIDIA GPU (tests/pipeline/test_gpu_conveyor.py)"),
]

TEXT = README.read_text(encoding="utf-8")
PYTHON_BLOCKS = [code for _, code in codeblocks.blocks(TEXT, "python")]
BASH_BLOCKS = [code for _, code in codeblocks.blocks(TEXT, "bash")]

#: The shell blocks with a line to run (a block of `make` lines only is not run).
RUNNABLE_BASH = [i for i, b in enumerate(BASH_BLOCKS) if codeblocks.shell_lines(b, NOT_RUN)[0]]


def test_readme_has_examples():
    assert PYTHON_BLOCKS and BASH_BLOCKS


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_example_runs_as_a_script(index, tmp_path, shared_data):
    before = set(os.listdir(REPO))
    shutil.rmtree(OUTPUT, ignore_errors=True)
    try:
        p = codeblocks.run_python(PYTHON_BLOCKS[index], REPO, tmp_path / f"readme_example_{index}.py")
        created = set(os.listdir(REPO)) - before - {OUTPUT.name}
    finally:
        shutil.rmtree(OUTPUT, ignore_errors=True)
    assert p.returncode == 0, f"README python block {index} failed:\n{codeblocks.report(p)}"
    assert not created, f"README python block {index} wrote outside {OUTPUT.name}/: {sorted(created)}"


def test_not_run_lines_are_still_in_the_readme():
    """Each NOT_RUN entry matches a README line (no stale exemptions), and the tour itself runs."""
    stale = codeblocks.stale_not_run([TEXT], NOT_RUN)
    assert not stale, f"NOT_RUN entries that match no README line: {stale}"
    assert sum(len(codeblocks.shell_lines(b, NOT_RUN)[0]) for b in BASH_BLOCKS) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("index", RUNNABLE_BASH)
def test_shell_example_runs(index, tmp_path, shared_data):
    lines, _ = codeblocks.shell_lines(BASH_BLOCKS[index], NOT_RUN)
    work = codeblocks.scratch_checkout(tmp_path)
    p = codeblocks.run_bash(lines, work, tmp_path / "tour.sh")
    assert p.returncode == 0, f"README bash block {index} failed:\n{codeblocks.report(p)}"
    if "tomoflow center tooth.zarr" in BASH_BLOCKS[index]:  # what the comment promises
        assert re.search(r"rotation centre: 295\.[89]\d px", p.stdout), p.stdout
        assert "saved by `tomoflow center --save`" in p.stdout, p.stdout
