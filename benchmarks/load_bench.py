"""Speed on a busy machine: streamlev while another process keeps one core busy.

The script starts that process itself (a pure-Python spin loop pinned to the
last CPU this process may use) and stops it at the end.  Under that load it
measures:

* ``MultiHeadLeverage`` against a loop over per-head ``OnlineLeverage``
  sketches, on (12, 256, 64) blocks (target: at least 2x the loop);
* ``OnlineLeverage``, ``two_pass_universal_set`` and ``leverage_scores`` with
  the default thread count against their own time on one thread
  (``set_num_threads(1)``) under the same load (target: at most 1.5x).

Each pair is timed alternately (best of ``--repeats``), so both sides see the
same load.  The figures are measured under two thread policies, each in a
fresh process under the same busy process:

``library``
    streamlev as shipped: numba's OpenMP threads sleep between parallel
    regions (passive wait policy) and each split runs on threads or on the
    calling thread, whichever measures faster (``streamlev._threads``).
``spinning, always threads``
    OpenMP's default wait policy (idle threads spin) and threads for every
    split whatever they measure: the policy that ignores load, through two
    private switches.

The machine's own load is recorded (load average at the start and the
fraction of CPU time in use during the run, from /proc/stat); other users of
the machine add to the busy process's load.

Usage::

    python benchmarks/load_bench.py            # 10^6 rows per head; 10^6 x 64 keys
    python benchmarks/load_bench.py --quick    # 10^5 rows
    python benchmarks/load_bench.py --no-load  # the same figures without the busy process
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import _common
import numpy as np

SPIN = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"
POLICIES = ("spinning, always threads", "library")


def cpu_times():
    """(busy, total) jiffies of the whole machine from /proc/stat, or None."""
    try:
        with open("/proc/stat", encoding="utf-8") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def heads_blocks(rows, heads=12, m=256, d=64, seed=0):
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 2.0, size=(heads, 1, d))
    return [rng.standard_normal((heads, m, d)) * scale for _ in range(max(1, rows // m))]


def run_multi(blocks, eps):
    import streamlev

    H, _m, d = blocks[0].shape
    sk = streamlev.MultiHeadLeverage(H, d, eps)
    for X in blocks:
        sk.update(X)
    return sk


def run_loop(blocks, eps):
    import streamlev

    H, _m, d = blocks[0].shape
    sks = [streamlev.OnlineLeverage(d, eps) for _ in range(H)]
    for X in blocks:
        for h in range(H):
            sks[h].update(X[h])
    return sks


def alternate(fa, fb, repeats):
    """Best times of ``fa`` and ``fb``, run alternately ``repeats`` times each."""
    ta = tb = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta, tb = min(ta, t1 - t0), min(tb, t2 - t1)
    return ta, tb


def child(args):
    """Measure every figure under one policy (in a fresh process); print the rows as JSON."""
    from streamlev import _threads

    policy = args.child
    _threads._PASSIVE = policy == "library"
    _threads._ADAPTIVE = policy == "library"
    import streamlev

    eps = args.eps
    for X in heads_blocks(4096):  # compile every kernel before timing
        run_multi([X] * 2, eps)
    rows = []
    blocks = heads_blocks(args.head_rows)
    t_multi, t_loop = alternate(lambda: run_multi(blocks, eps), lambda: run_loop(blocks, eps), args.repeats)
    rows.append(
        {
            "policy": policy,
            "case": "MultiHeadLeverage vs per-head loop",
            "shape": [12, 256, 64],
            "rows_per_head": len(blocks) * 256,
            "seconds": t_multi,
            "baseline_seconds": t_loop,
            "speedup": t_loop / t_multi,
        }
    )
    n, d = args.rows[0], args.dim[0]
    rng = np.random.default_rng(1)
    K = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, size=d)
    block = 16384

    def online():
        sk = streamlev.OnlineLeverage(d, eps)
        for a in range(0, n, block):
            sk.update(K[a : a + block])
        return sk.universal_set()

    cases = {
        "OnlineLeverage": online,
        "two_pass_universal_set": lambda: streamlev.two_pass_universal_set(K, eps),
        "leverage_scores": lambda: streamlev.leverage_scores(K),
    }

    def one_thread(fn):
        def run():
            streamlev.set_num_threads(1)
            try:
                return fn()
            finally:
                streamlev.set_num_threads(None)

        return run

    for name, fn in cases.items():
        fn()  # warm up
        t_def, t_one = alternate(fn, one_thread(fn), args.repeats)
        rows.append(
            {
                "policy": policy,
                "case": name,
                "n": n,
                "d": d,
                "threads": streamlev.get_num_threads(),
                "seconds": t_def,
                "one_thread_seconds": t_one,
                "ratio_to_one_thread": t_def / t_one,
            }
        )
    print("ROWS " + json.dumps(rows), flush=True)


def main():
    ap = _common.parser(__doc__, dim=64, rows=10**6, repeats=3)
    ap.add_argument("--head-rows", type=int, default=None, help="rows per head for the multi-head case")
    ap.add_argument("--eps", type=float, default=1e-3, help="attention threshold")
    ap.add_argument("--no-load", action="store_true", help="do not start the busy process")
    ap.add_argument("--child", choices=POLICIES, help=argparse_hidden())
    args = ap.parse_args()
    if args.quick:
        args.rows = [10**5]
    if args.head_rows is None:
        args.head_rows = 10**5 if args.quick else 10**6
    if args.child:
        child(args)
        return
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    load = {
        "busy_process": None if args.no_load else f"python spin loop pinned to CPU {cpus[-1]}",
        "loadavg_at_start": list(os.getloadavg()),
        "cpus": len(cpus),
    }
    print(load, flush=True)
    spinner = None if args.no_load else subprocess.Popen([sys.executable, "-c", SPIN, str(cpus[-1])])
    c0 = cpu_times()
    results = []
    try:
        for policy in POLICIES:
            cmd = [
                sys.executable,
                sys.argv[0],
                "--child",
                policy,
                "--eps",
                str(args.eps),
                "--repeats",
                str(args.repeats),
            ]
            cmd += ["--head-rows", str(args.head_rows), "--rows", str(args.rows[0]), "--dim", str(args.dim[0])]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise SystemExit(f"the {policy!r} run failed:\n{proc.stderr}")
            out = proc.stdout
            rows = json.loads(next(line[5:] for line in out.splitlines() if line.startswith("ROWS ")))
            for row in rows:
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            results += rows
    finally:
        c1 = cpu_times()
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    load["machine_busy_fraction_during_run"] = None if not (c0 and c1) else (c1[0] - c0[0]) / max(1, c1[1] - c0[1])
    load["loadavg_at_end"] = list(os.getloadavg())
    print(load)
    for r in results:
        r["load"] = load
    targets = []
    for r in results:
        if r["policy"] != "library":
            continue
        if "speedup" in r:
            name, measured, target, ok, unit = (
                "MultiHeadLeverage vs per-head loop",
                r["speedup"],
                ">= 2",
                None,
                "x loop",
            )
            ok = measured >= 2
        else:
            name, measured, target, unit = (
                f"{r['case']} vs its one-thread time",
                r["ratio_to_one_thread"],
                "<= 1.5",
                "x",
            )
            ok = measured <= 1.5
        suffix = "" if args.no_load else " under load"
        targets.append({"name": name + suffix, "measured": measured, "target": target, "met": ok, "unit": unit})
    _common.write_record("load_none" if args.no_load else "load", args, results, targets)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
