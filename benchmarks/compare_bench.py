"""Sketch accuracy on the bundled MiniLM keys: ``streamlev compare`` over every method, timed end to end.

The keys of all 6 layers x 12 heads of sentence-transformers/all-MiniLM-L6-v2 on one 512-token
passage (streamlev/data/minilm_keys.npz) form one stream of 36,864 rows of d = 32.  The script
saves them to a temporary .npy file, runs ``python -m streamlev compare FILE --eps EPS --json``
in a subprocess (the command a user types), and records the table (one row per method and size:
recall, precision, score ratios, peak state, rows/s) and the wall time of the command.

    python benchmarks/compare_bench.py            # eps = 0.005, 3 seeds
    python benchmarks/compare_bench.py --quick    # 1 seed
    python benchmarks/compare_bench.py --plot docs/guide/compare_minilm.png   # the docs figure
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import numpy as np

import streamlev
from streamlev.datasets import load_minilm_keys


def main(argv=None) -> int:
    ap = _common.parser(__doc__.splitlines()[0], dim=None, rows=None, repeats=1)
    ap.add_argument("--eps", type=float, default=0.005, help="threshold (default 0.005: 86 keys of 36,864)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per randomised method (default 3, --quick 1)")
    ap.add_argument("--plot", type=Path, default=None, help="also save the recall/precision-memory figure here")
    args = ap.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    sample = load_minilm_keys()
    K = sample.K.reshape(-1, sample.head_dim)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(streamlev.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "minilm_keys.npy"
        np.save(path, K)
        cmd = [sys.executable, "-m", "streamlev", "compare", str(path), "--eps", str(args.eps)]
        cmd += ["--seeds", str(seeds), "--json", "--quiet"]
        shown = cmd[5:]  # the command as a user types it (the plot path as given)
        if args.plot:
            cmd += ["--plot", str(args.plot.resolve())]
            shown = [*shown, "--plot", str(args.plot)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env, check=False)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode())
        return proc.returncode
    res = streamlev.Comparison.from_json(proc.stdout.decode())
    print(f"n = {res.n:,} x d = {res.d}, eps = {res.eps:g}, {seeds} seed(s): {wall:.1f} s for the whole command\n")
    print(res.to_markdown())
    results = [{k: v for k, v in row.items()} for row in res.summary()]
    exact_ok = all(r["recall"] == 1.0 and r["precision"] == 1.0 for r in res.runs if r["exact_method"])
    targets = [
        {
            "name": "streamlev compare on the MiniLM keys, wall time",
            "measured": round(wall, 2),
            "target": "< 60",
            "met": wall < 60,
            "unit": "s",
        },
        {
            "name": "exact, one-pass and two-pass rows: recall = precision = 1",
            "measured": exact_ok,
            "target": True,
            "met": exact_ok,
            "unit": "",
        },
    ]
    params = dict(
        vars(args),
        seeds=seeds,
        n=res.n,
        d=res.d,
        exact_set_size=int(res.exact_set.size),
        source="streamlev/data/minilm_keys.npz, K reshaped to (layers*heads*tokens, head_dim)",
        cli_command="python -m streamlev compare minilm_keys.npy " + " ".join(shown),
    )
    _common.write_record("compare", params, results, targets)
    return 0 if all(t["met"] for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
