"""Every code block of the documentation (``docs/**/*.md``) works as written, as the README's do.

A page is a walk-through: its ```python and ```bash blocks run in document order in one scratch
folder laid out like a checkout (``../shared/data`` beside it), so a block may use what an earlier
one wrote. Python blocks run as scripts with this interpreter, bash blocks with this environment's
``bin`` first on PATH (the runner is ``tests/_codeblocks.py``, shared with ``tests/test_readme.py``).
Shell lines that cannot run inside the test suite are listed in ``NOT_RUN`` with the reason; any
other line runs. Snippets that cannot run at all (a SLURM job script, a site file) are written as
```text or ```yaml, which are not run.

Building the site itself (Sphinx, warnings as errors) is ``make docs``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import tomoflow_tests_codeblocks as codeblocks  # the code-block runner, registered by tests/conftest.py

REPO = codeblocks.REPO
DOCS = REPO / "docs"
PACKAGE = REPO / "tomoflow"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)
TEXTS = {p: p.read_text(encoding="utf-8") for p in PAGES}

#: Documentation shell lines not run here: (pattern, why).
NOT_RUN = [
    (
        re.compile(r"^make (demo|test)\b"),
        "`make test` is this suite; `make demo` is `tomoflow demo` (tests/cli/test_demo.py)",
    ),
    (re.compile(r"^pip install\b"), "installs packages; the suite runs in an environment that has them"),
    (
        re.compile(r"--cluster (slurm|pbs)\b"),
        "needs a SLURM or PBS scheduler (tests marked slurm use a real one-node SLURM)",
    ),
    (re.compile(r"--cluster local-cuda\b"), "needs dask-cuda and an NVIDIA GPU (tests/pipeline/test_gpu_conveyor.py)"),
    (re.compile(r"^kubectl\b"), "needs a Kubernetes cluster with the Dask operator"),
    (re.compile(r"--cluster tcp://"), "needs a scheduler that already runs (the Kubernetes one above)"),
]


def _name(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def _runnable(text: str) -> list[tuple[int, str, list[str] | str]]:
    """The blocks of a page that run, in order: (index, language, lines to run or Python code)."""
    out: list[tuple[int, str, list[str] | str]] = []
    for i, (lang, code) in enumerate(codeblocks.blocks(text)):
        if lang == "python":
            out.append((i, lang, code))
        elif lang == "bash":
            lines, _ = codeblocks.shell_lines(code, NOT_RUN)
            if lines:
                out.append((i, lang, lines))
    return out


RUNNABLE_PAGES = [p for p in PAGES if _runnable(TEXTS[p])]


def test_every_guide_has_examples():
    """The quick start and each user guide show the commands and the Python API, and each is run."""
    guides = [DOCS / "install.md", *sorted((DOCS / "guides").glob("*.md"))]
    assert len(guides) >= 4
    for page in guides:
        langs = {lang for _, lang, _ in _runnable(TEXTS[page])}
        assert langs == {"python", "bash"}, f"{_name(page)}: runnable blocks {sorted(langs)}"


def test_not_run_lines_are_still_in_the_docs():
    """Each NOT_RUN entry matches a line of the docs (no stale exemptions)."""
    stale = codeblocks.stale_not_run(list(TEXTS.values()), NOT_RUN)
    assert not stale, f"NOT_RUN entries that match no docs line: {stale}"


def test_every_public_subpackage_has_an_api_page():
    """docs/api/ has a page per public subpackage (the site's build, `make docs`, checks they are linked)."""
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file() and not p.name.startswith("_")}
    documented = {p.stem for p in (DOCS / "api").glob("*.md")}
    # cli: documented by `tomoflow --help`; models: renamed tomoflow/weights (issue 21; docs/api/weights.md)
    missing = subpackages - documented - {"cli", "models"}
    assert not missing, f"add docs/api/<name>.md for {sorted(missing)}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=_name)
def test_page_examples_run(page, tmp_path, shared_data):
    work = codeblocks.scratch_checkout(tmp_path)
    before = set(os.listdir(REPO))
    for index, lang, code in _runnable(TEXTS[page]):
        if lang == "python":
            p = codeblocks.run_python(code, work, tmp_path / f"block_{index}.py")
        else:
            p = codeblocks.run_bash(code, work, tmp_path / f"block_{index}.sh")
        assert p.returncode == 0, f"{_name(page)}: {lang} block {index} failed:\n{codeblocks.report(p)}"
    created = set(os.listdir(REPO)) - before
    assert not created, f"{_name(page)}: its examples wrote into the repository: {sorted(created)}"
