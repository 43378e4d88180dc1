"""Cold start: wall time of a fresh process running ``streamlev select`` on a small ``.npy`` file.

Every figure is the best of ``--repeats`` fresh processes (``subprocess``),
after one warm-up run of each command that fills numba's cache and the OS
file cache (so it measures every run after the first one ever).  The
commands are run in turn within each repeat, so they see the same load:

``python -c pass``             the interpreter alone
``python -c "import numpy"``   the interpreter and numpy: the floor of any numpy program
``streamlev select``           ``python -m streamlev select keys.npy --eps EPS --json``, one per ``--rows``

With ``--compare-src DIR`` the select command is also timed with ``DIR``
first on ``PYTHONPATH`` (another checkout of streamlev, e.g. an older
version), in the same repeats.  The JSON report of the select command's last
run is kept too (its ``seconds`` and ``startup_seconds`` fields).  The
machine's load average at the start is recorded: on a shared machine the
interpreter's own start varies by several times, so the figures to compare
are the differences and ratios to ``import numpy`` in the same run.

Usage::

    python benchmarks/coldstart_bench.py                       # 1,000 x 64 keys, 7 repeats
    python benchmarks/coldstart_bench.py --quick               # 3 repeats
    python benchmarks/coldstart_bench.py --compare-src ../old  # also another checkout
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import numpy as np

TARGET_SECONDS = 0.5


def run(cmd, env, cwd):
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=True)
    return time.perf_counter() - t0, out.stdout


def main():
    ap = _common.parser(__doc__, dim=64, rows=1000, repeats=7)
    ap.add_argument("--eps", type=float, default=0.01, help="attention threshold")
    ap.add_argument("--compare-src", type=Path, default=None, metavar="DIR", help="another checkout to time too")
    args = ap.parse_args()
    if args.quick:
        args.repeats = min(args.repeats, 3)
    here = os.environ.copy()
    py = sys.executable
    commands = {"python -c pass": ([py, "-c", "pass"], here), "import numpy": ([py, "-c", "import numpy"], here)}
    tmp = tempfile.TemporaryDirectory()  # also the working directory: `python -m` puts it first on sys.path
    rng = np.random.default_rng(0)
    for n in args.rows:
        path = Path(tmp.name) / f"keys_{n}x{args.dim[0]}.npy"
        np.save(path, rng.standard_normal((n, args.dim[0])))
        cmd = [py, "-m", "streamlev", "select", str(path), "--eps", str(args.eps), "--json"]
        commands[f"select {n}x{args.dim[0]}"] = (cmd, here)
        if args.compare_src is not None:
            env = dict(here, PYTHONPATH=str(args.compare_src.resolve()))
            commands[f"select {n}x{args.dim[0]} ({args.compare_src})"] = (cmd, env)
    load_start = list(os.getloadavg())
    best = dict.fromkeys(commands, float("inf"))
    reports = {}
    for cmd, env in commands.values():  # warm-up: numba's cache, the OS file cache
        run(cmd, env, tmp.name)
    for _ in range(args.repeats):
        for name, (cmd, env) in commands.items():
            t, out = run(cmd, env, tmp.name)
            best[name] = min(best[name], t)
            if name.startswith("select"):
                reports[name] = json.loads(out)
    tmp.cleanup()
    numpy_s = best["import numpy"]
    results = []
    for name, t in best.items():
        row = {
            "command": name,
            "wall_seconds": t,
            "over_import_numpy_seconds": t - numpy_s,
            "x_import_numpy": t / numpy_s,
        }
        rep = reports.get(name)
        if rep is not None:
            row.update(
                {
                    "n": rep["n"],
                    "d": rep["d"],
                    "reported_seconds": rep["seconds"],
                    "reported_startup_seconds": rep.get("startup_seconds"),
                    "reported_memory_bytes": rep["memory_bytes"],
                }
            )
        results.append(row)
        print(f"{name:40s} {t:7.3f} s   (+{t - numpy_s:6.3f} s over import numpy)")
    load = {"loadavg_at_start": load_start, "loadavg_at_end": list(os.getloadavg()), "cpus": os.cpu_count()}
    print(load)
    for r in results:
        r["load"] = load
    targets = []
    for name, t in best.items():
        if name.startswith("select") and "(" not in name:
            targets.append(
                {
                    "name": f"fresh process, {name}",
                    "measured": t,
                    "target": f"<= {TARGET_SECONDS}",
                    "met": t <= TARGET_SECONDS,
                    "unit": "s wall",
                }
            )
    _common.write_record("coldstart", args, results, targets)


if __name__ == "__main__":
    main()
