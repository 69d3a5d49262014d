"""The committed notebooks: structure the course promises (nbval runs them in run.sh test)."""

import nbformat
import pytest

from conftest import REPO  # tests/conftest.py

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_numbered_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("00_")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_structure_and_committed_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = nb.cells[0].source
    assert "You will learn" in first and "Prerequisites" in first and "Runtime" in first
    last_md = [c.source for c in nb.cells if c.cell_type == "markdown"][-1]
    assert "## Summary" in last_md and "## Exercises" in last_md
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "I2V_FAST" in params[0].source
    # committed from one top-to-bottom run: execution counts 1, 2, 3, ...
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert path.stat().st_size <= 3 * 2 ** 20
    # notebooks hold no training / sampling / metric logic of their own; a cell tagged "by-hand" writes one
    # out as the lesson, and must check itself against the package
    for c in code:
        if "by-hand" in c.metadata.get("tags", []):
            assert "assert " in c.source, f"{path.name}: a by-hand cell must check itself against the package"
            continue
        for banned in ("loss.backward", "optimizer.step", "torch.optim", "def train"):
            assert banned not in c.source, f"{path.name}: '{banned}' belongs in i2v_helpers"
