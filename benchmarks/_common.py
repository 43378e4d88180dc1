"""What every benchmark script shares: one flag vocabulary and one JSON record.

Flags (every script accepts them; a script documents which defaults it uses):

``--quick``          small sizes that finish in about a minute (figures are information only)
``--dim D [D ...]``  key dimension(s)
``--rows N [N ...]`` number of rows (keys), one or several sizes
``--repeats R``      timed runs per measurement; the best (smallest) time is kept
``--json PATH``      where to write the JSON record (default: ``benchmarks/results/<name>[_quick].json``)

The JSON record (one object per run)::

    {
      "benchmark": "<name>",             # the script's name, e.g. "run", "wide"
      "date": "2026-12-03T12:00:00Z",    # UTC, when the run finished
      "command": "python benchmarks/wide_bench.py --quick",
      "machine": {...},                  # CPU model, cores, memory, OS, Python
      "versions": {...},                 # streamlev, numpy, scipy, numba, BLAS (+ torch etc. when loaded)
      "parameters": {...},               # the script's arguments
      "results": [{...}, ...],           # one flat object per table row
      "targets": [                       # optional: what the run is judged by
        {"name": "...", "measured": 0.42, "target": "<= 0.8", "met": true, "unit": "x numpy"}
      ]
    }

Scripts import this module as ``_common`` (their own directory is on ``sys.path`` when run as
``python benchmarks/<script>.py``); the package itself must be installed, no path is edited.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parser(
    description: str,
    *,
    dim: Sequence[int] | int | None = 64,
    rows: Sequence[int] | int | None = 10**6,
    repeats: int = 3,
) -> argparse.ArgumentParser:
    """An argument parser with the shared flags; scripts add their own flags to it."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, about a minute (figures are information only)")
    ap.add_argument("--dim", type=int, nargs="+", default=_as_list(dim), metavar="D", help="key dimension(s)")
    ap.add_argument("--rows", type=int, nargs="+", default=_as_list(rows), metavar="N", help="number(s) of rows")
    ap.add_argument("--repeats", type=int, default=repeats, metavar="R", help="timed runs per figure (best kept)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="where to write the JSON record")
    return ap


def _as_list(value: Sequence[int] | int | None) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return [value]
    return list(value)


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Run ``fn`` ``repeats`` times; return the smallest wall time (s) and the last result."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def machine() -> dict[str, Any]:
    """CPU model, core count, memory and OS of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    mem_gib = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, Any]:
    """Versions of streamlev and of the numerical libraries it runs on (those already imported, plus the core)."""
    import numpy as np
    import scipy

    import streamlev

    out: dict[str, Any] = {"streamlev": streamlev.__version__, "numpy": np.__version__, "scipy": scipy.__version__}
    try:
        import numba

        out["numba"] = numba.__version__
    except ImportError:  # pragma: no cover - numba is a dependency
        pass
    for name in ("torch", "transformers", "dask", "sklearn"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = [
            {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        ]
    except Exception:  # pragma: no cover - informational only
        pass
    return out


def default_path(name: str, quick: bool) -> Path:
    """``benchmarks/results/<name>.json``, or ``<name>_quick.json`` for ``--quick`` runs."""
    return RESULTS_DIR / f"{name}{'_quick' if quick else ''}.json"


def write_record(
    name: str,
    args: argparse.Namespace | dict[str, Any],
    results: list[dict[str, Any]],
    targets: list[dict[str, Any]] | None = None,
    path: Path | None = None,
) -> Path:
    """Write the JSON record of one run and return its path (see the module docstring for the fields)."""
    params = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    if path is None:
        path = params.get("json") or default_path(name, bool(params.get("quick")))
    params.pop("json", None)
    record = {
        "benchmark": name,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()},
        "results": results,
        "targets": targets or [],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


def _jsonable(obj: Any) -> Any:
    """numpy scalars and arrays as plain JSON values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
