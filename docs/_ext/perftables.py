"""Sphinx extension: the performance page's tables, generated from benchmark JSON records.

Every ``benchmarks/results/*.json`` written by ``benchmarks/_common.py``'s ``write_record``
(an object with ``benchmark``, ``date``, ``machine``, ``versions``, ``parameters``,
``results`` and ``targets``) becomes one section: what ran and where, its targets with
the measured figure and verdict, and one table per kind of result row (rows carry an
optional ``table`` field naming their table).  Files of another shape (study outputs)
are listed by name only, so records added by new benchmarks need nothing here.

The directive ``{benchmark-records}`` renders them all; ``:only: NAME`` restricts it to
one benchmark.  :func:`record_markdown` returns the same content as Markdown text (used
for the README's short table through :func:`summary_markdown`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

REQUIRED = ("benchmark", "date", "machine", "versions", "results")


def load_records(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(benchmark records sorted by name then date, names of other JSON files) in ``folder``."""
    records, others = [], []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            others.append(path.name)
            continue
        if isinstance(data, dict) and all(k in data for k in REQUIRED):
            data["_file"] = path.name
            records.append(data)
        else:
            others.append(path.name)
    records.sort(key=lambda r: (str(r["benchmark"]), str(r.get("_file"))))
    return records, others


def fmt(value: Any) -> str:
    """One table cell: numbers to 4 significant digits, bytes-like columns left to the caller."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value == 0 or 1e-3 <= abs(value) < 1e4:
            return f"{value:.4g}"
        if 1e4 <= abs(value) < 1e12:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return str(value)


def _cell(value: Any, column: str) -> str:
    if column.endswith("bytes") and isinstance(value, (int, float)) and not isinstance(value, bool):
        b = float(value)
        for unit in ("B", "KB", "MB", "GB"):
            if b < 1024:
                return f"{b:.3g} {unit}"
            b /= 1024
        return f"{b:.3g} TB"
    return fmt(value).replace("|", "\\|")


def group_results(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Result rows by their ``table`` field (rows without one go to ``results``), in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in results:
        if isinstance(row, dict):
            groups.setdefault(str(row.get("table", "results")), []).append(row)
    return groups


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, body) of one table: the union of the rows' keys, in first-seen order, ``table`` left out."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key != "table" and key not in columns:
                columns.append(key)
    return columns, [[_cell(row.get(c), c) for c in columns] for row in rows]


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    """A pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def machine_line(record: dict[str, Any]) -> str:
    """'AMD EPYC ..., 2 cores, 7.8 GiB, Linux ..., Python 3.12' from a record's machine block."""
    m = record.get("machine") or {}
    parts = [str(m.get("cpu", "?")), f"{m.get('cores', '?')} cores"]
    if m.get("memory_gib"):
        parts.append(f"{m['memory_gib']} GiB")
    parts += [str(m.get("os", "")), f"Python {m.get('python', '?')}"]
    return ", ".join(p for p in parts if p)


def versions_line(record: dict[str, Any]) -> str:
    """'streamlev 0.1.0, numpy 2.4, ..., BLAS openblas 0.3.31 (SkylakeX, 2 threads)'."""
    v = dict(record.get("versions") or {})
    blas = v.pop("blas", None)
    text = ", ".join(f"{k} {val}" for k, val in v.items())
    if blas:
        text += ", BLAS " + "; ".join(
            f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')}, {b.get('num_threads')} threads)"
            for b in blas
        )
    return text


def targets_table(record: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, body) of a record's targets: what, target, measured, met."""
    body = []
    for t in record.get("targets") or []:
        measured = f"{fmt(t.get('measured'))} {t.get('unit', '')}".strip()
        if t.get("note"):
            measured += f" ({t['note']})"
        met = t.get("met")
        verdict = "–" if met is None else ("met" if met else "not met")
        body.append([str(t.get("name", "")), str(t.get("target", "")), measured, verdict])
    return ["target", "required", "this run", "verdict"], [[c.replace("|", "\\|") for c in r] for r in body]


def record_markdown(record: dict[str, Any], level: int = 2) -> str:
    """One record as Markdown: heading, provenance, targets, one table per result kind."""
    h = "#" * level
    quick = " (quick run)" if (record.get("parameters") or {}).get("quick") else ""
    out = [f"{h} `{record['benchmark']}`{quick}: {record['date']}", ""]
    out.append(f"* **command**: `{record.get('command', '?')}`")
    out.append(f"* **machine**: {machine_line(record)}")
    out.append(f"* **versions**: {versions_line(record)}")
    params = {k: v for k, v in (record.get("parameters") or {}).items() if v not in (None, False, "", [])}
    if params:
        out.append("* **parameters**: " + ", ".join(f"{k} = {fmt(v)}" for k, v in params.items()))
    out.append(f"* **file**: `benchmarks/results/{record.get('_file', '?')}`")
    out.append("")
    if record.get("targets"):
        out += [f"{h}# Targets", "", markdown_table(*targets_table(record)), ""]
    for name, rows in group_results(record.get("results") or []).items():
        out += [f"{h}# {name[:1].upper() + name[1:]}", "", markdown_table(*table_rows(rows)), ""]
    return "\n".join(out)


def summary_markdown(record: dict[str, Any]) -> str:
    """The README's short table: a record's targets (what, this run, verdict) with the machine named."""
    header, body = targets_table(record)
    keep = [0, 2, 3]  # the target's name states what is required
    quick = " (quick run: small sizes, information only)" if (record.get("parameters") or {}).get("quick") else ""
    return (
        f"{markdown_table([header[i] for i in keep], [[r[i] for i in keep] for r in body])}\n\n"
        f"Machine: {machine_line(record)}; {record['date'][:10]}, `{record.get('command', '')}`{quick}."
    )


class BenchmarkRecords(SphinxDirective):
    """``{benchmark-records}``: every benchmark record of the results folder, as sections of tables."""

    has_content = False
    option_spec = {"only": directives.unchanged, "level": directives.positive_int}

    def run(self) -> list[nodes.Node]:
        """The records as parsed Markdown (a section per record)."""
        folder = Path(self.config.perftables_results)
        records, others = load_records(folder)
        for path in folder.glob("*.json"):
            self.env.note_dependency(str(path))
        only = self.options.get("only")
        if only:
            records = [r for r in records if r["benchmark"] == only]
        text = "\n".join(record_markdown(r, self.options.get("level", 2)) for r in records)
        if not records:
            text = "No benchmark record has been written yet: run `python benchmarks/run.py`.\n"
        if others and not only:
            text += "\nOther result files (study outputs, see the studies pages): " + ", ".join(
                f"`{name}`" for name in others
            )
        return self.parse_text_to_nodes(text)


def setup(app):
    """Register the directive and its configuration value."""
    app.add_config_value("perftables_results", "benchmarks/results", "env")
    app.add_directive("benchmark-records", BenchmarkRecords)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":  # the README's performance table: python docs/_ext/perftables.py benchmarks/results/run.json
    import sys

    for name in sys.argv[1:]:
        print(summary_markdown(json.loads(Path(name).read_text(encoding="utf-8"))))
