"""The notebooks under notebooks/ are committed clean; the documentation build executes them (tests/test_docs.py)."""

import json
from pathlib import Path

import pytest

NBS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert len(NBS) >= 3, NBS


@pytest.mark.parametrize("path", NBS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a notebook without code cells"
    assert not any(c.get("outputs") for c in code), "strip outputs before committing"
    assert all(c.get("execution_count") is None for c in code), "strip execution counts before committing"


@pytest.mark.parametrize("path", NBS, ids=lambda p: p.name)
def test_notebooks_remove_the_files_they_write(path):
    """Files written by a notebook go to a tempfile.TemporaryDirectory (removed), never to mkdtemp (kept)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "mkdtemp(" not in code and "NamedTemporaryFile(delete=False" not in code
