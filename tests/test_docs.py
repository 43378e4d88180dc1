"""The documentation site: its benchmark tables, and a full build with warnings as errors.

The build executes every notebook in notebooks/ (myst-nb, ``STREAMLEV_NOTEBOOK_QUICK=1``), so it is also the one
place the test suite runs them; a notebook's own ``assert`` cells fail the build.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _perftables():
    spec = importlib.util.spec_from_file_location("perftables", REPO / "docs" / "_ext" / "perftables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORD = {
    "benchmark": "toy",
    "date": "2026-01-02T03:04:05Z",
    "command": "benchmarks/toy.py --quick",
    "machine": {"cpu": "Test CPU 9000", "cores": 2, "memory_gib": 4.0, "os": "Linux", "python": "3.12.0"},
    "versions": {"streamlev": "0.1.0", "numpy": "2.4.0", "blas": [{"internal_api": "openblas", "version": "0.3"}]},
    "parameters": {"quick": True, "rows": [1000], "json": None},
    "results": [
        {"table": "speed", "method": "a", "seconds": 0.125, "peak_bytes": 3 * 2**20},
        {"table": "speed", "method": "b", "seconds": 2.5, "extra": True},
        {"table": "errors", "max_rel_err": 1.5e-15},
        {"n": 7},
    ],
    "targets": [{"name": "a <= 0.8x b", "measured": 0.05, "target": "<= 0.8", "met": True, "unit": "x b"}],
}


def test_records_are_loaded_and_other_json_files_listed(tmp_path):
    pt = _perftables()
    (tmp_path / "toy.json").write_text(json.dumps(RECORD))
    (tmp_path / "study.json").write_text(json.dumps({"runs": []}))
    (tmp_path / "broken.json").write_text("{")
    records, others = pt.load_records(tmp_path)
    assert [r["benchmark"] for r in records] == ["toy"]
    assert sorted(others) == ["broken.json", "study.json"]


def test_a_record_becomes_provenance_targets_and_one_table_per_kind():
    text = _perftables().record_markdown(dict(RECORD, _file="toy.json"))
    assert "Test CPU 9000, 2 cores" in text and "numpy 2.4.0" in text and "2026-01-02" in text
    assert "(quick run)" in text and "benchmarks/toy.py --quick" in text
    assert "| a <= 0.8x b | <= 0.8 | 0.05 x b | met |" in text
    for heading in ("# Speed", "# Errors", "# Results"):
        assert heading in text
    assert "| method | seconds | peak_bytes | extra |" in text  # union of the rows' keys, 'table' left out
    assert "| a | 0.125 | 3 MB | – |" in text and "1.5e-15" in text


def test_the_readme_summary_names_the_machine():
    text = _perftables().summary_markdown(RECORD)
    assert "Test CPU 9000" in text and "| a <= 0.8x b |" in text


def _tree(folder):
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


# The build executes the notebooks and the guide's code cells (a few minutes on 2 cores): the suite's one run of them.
@pytest.mark.slow
def test_docs_build_without_warnings_and_show_every_notebook(tmp_path):
    out = tmp_path / "html"
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    before = _tree(REPO / "notebooks")
    env = dict(os.environ, STREAMLEV_NOTEBOOK_QUICK="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-b", "html", "-d", str(tmp_path / "doctrees"), "docs", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    for nb in notebooks:
        page = out / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), page
        if "plt." in nb.read_text(encoding="utf-8"):
            assert "<img" in page.read_text(encoding="utf-8"), f"{nb.name}: no plot on its page"
    assert _tree(REPO / "notebooks") == before, "a notebook left files behind"
    copies = _tree(REPO / "docs" / "notebooks")
    assert copies == {Path(nb.name) for nb in notebooks}, "a notebook left files next to it"
    assert "<table" in (out / "studies" / "training.html").read_text(encoding="utf-8")  # a table made at build time
    perf = (out / "performance.html").read_text(encoding="utf-8")
    for record in (REPO / "benchmarks" / "results").glob("*.json"):
        data = json.loads(record.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "benchmark" in data and "results" in data:
            assert record.name in perf, record.name
