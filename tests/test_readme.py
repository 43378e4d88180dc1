"""The README's promises: its quickstart prints what the README shows, its test command is CI's, it stays short."""

import contextlib
import io
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_quickstart_prints_what_the_readme_shows():
    m = re.search(r"## Quickstart\n\n```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", README, re.S)
    assert m, "the quickstart block and its printed output"
    code, shown = m.groups()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README quickstart", "exec"), {})  # noqa: S102 - the README's own code
    assert out.getvalue() == shown
    assert not shown.startswith("0 of"), "the quickstart's set must not be empty"


def test_the_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    install = next(line for line in ci.splitlines() if line.startswith("pip install"))
    assert f"{install} && python -m pytest" in README
    assert "python -m pytest" in ci and "ruff check ." in ci and "ruff format --check ." in ci


def test_readme_is_short():
    assert len(README.splitlines()) <= 200
