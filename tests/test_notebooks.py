"""The committed notebooks are the executed form of their paired jupytext scripts, and stay small."""
from pathlib import Path

import jupytext
import nbformat
import pytest


NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SCRIPTS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
STAMP_TAG = "run-stamp"


def test_there_are_notebooks():
    assert len(SCRIPTS) >= 1


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_notebook_matches_its_script_and_is_committed_executed(script):
    notebook_path = script.with_suffix(".ipynb")
    assert notebook_path.is_file(), f"{notebook_path.name} is missing: run python scripts/execute_notebooks.py"
    assert notebook_path.stat().st_size < 1 << 20, f"{notebook_path.name} is over 1 MiB"
    committed = nbformat.read(notebook_path, as_version=4)
    cells = [c for c in committed.cells if STAMP_TAG not in c.metadata.get("tags", [])]
    assert len(cells) == len(committed.cells) - 1, "the first cell must state the machine, date and wall time"
    source = jupytext.read(script)
    assert [(c.cell_type, c.source) for c in cells] == [(c.cell_type, c.source) for c in source.cells], \
        f"{notebook_path.name} differs from {script.name}: rebuild it with scripts/execute_notebooks.py"
    code = [c for c in cells if c.cell_type == "code"]
    assert all(c.get("outputs") or c.get("execution_count") for c in code), \
        f"{notebook_path.name} is committed without the outputs of a run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{notebook_path.name} holds an error output"
