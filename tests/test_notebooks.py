"""Every walkthrough in notebooks/ executes, and any cell that fails fails the test.

The harness leaves no way for an error to pass: errors are never allowed (``allow_errors=False``,
no ``allow_error_names``, ``force_raise_errors=True`` so a ``raises-exception`` tag cannot allow one
either), cells tagged to be skipped or to raise are refused, every code cell must have run, and a
traceback printed to a cell's stderr (say, by a background thread or a caught-and-logged error)
counts as a failure too. The tests at the end prove the harness raises on such notebooks.
"""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
FORBIDDEN_TAGS = {"raises-exception", "skip-execution"}


class NotebookFailed(AssertionError):
    """A notebook ran but did not run cleanly (refused tag, cell not run, printed traceback)."""


def run_notebook(nb: nbformat.NotebookNode, cwd: Path, *, timeout: int = 600) -> nbformat.NotebookNode:
    """Execute every code cell of ``nb`` in ``cwd`` with this environment's kernel.

    Raises
    ------
    CellExecutionError
        A cell raised.
    NotebookFailed
        A cell carries a tag that skips it or allows it to fail, did not run, or printed a traceback.
    """
    code_cells = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    for i, cell in code_cells:
        tags = FORBIDDEN_TAGS & set(cell.get("metadata", {}).get("tags", []))
        if tags:
            raise NotebookFailed(f"cell {i} is tagged {sorted(tags)}: every cell must run and must not fail")
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=False,
        allow_error_names=[],
        force_raise_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    for i, cell in code_cells:
        if cell.get("execution_count") is None:
            raise NotebookFailed(f"cell {i} did not run:\n{cell.source}")
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                raise NotebookFailed(f"cell {i} raised {out.get('ename')}: {out.get('evalue')}")
            if out.get("output_type") == "stream" and "Traceback (most recent call last)" in out.get("text", ""):
                raise NotebookFailed(f"cell {i} printed a traceback:\n{out['text']}")
    return nb


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tooth_h5):
    run_notebook(nbformat.read(path, as_version=4), path.parent)


# ----------------------------------------------------------------------------- the harness itself
def _notebook(*cells: str, tags: dict[int, list[str]] | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    for i, t in (tags or {}).items():
        nb.cells[i].metadata["tags"] = t
    return nb


def test_harness_raises_on_a_failing_cell(tmp_path):
    nb = _notebook("x = 1", "1 / 0", "open('after.txt', 'w').close()")
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        run_notebook(nb, tmp_path, timeout=120)
    assert not (tmp_path / "after.txt").exists()  # execution stopped at the failing cell


def test_harness_ignores_tags_that_would_allow_an_error(tmp_path):
    with pytest.raises(NotebookFailed, match="raises-exception"):
        run_notebook(_notebook("1 / 0", tags={0: ["raises-exception"]}), tmp_path, timeout=120)
    with pytest.raises(NotebookFailed, match="skip-execution"):
        run_notebook(_notebook("1 / 0", tags={0: ["skip-execution"]}), tmp_path, timeout=120)


def test_harness_raises_on_a_printed_traceback(tmp_path):
    nb = _notebook("import traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n    traceback.print_exc()")
    with pytest.raises(NotebookFailed, match="printed a traceback"):
        run_notebook(nb, tmp_path, timeout=120)


def test_harness_passes_a_clean_notebook(tmp_path):
    nb = run_notebook(_notebook("x = 6 * 7", "print(x)"), tmp_path, timeout=120)
    assert nb.cells[1].outputs[0]["text"] == "42\n"
