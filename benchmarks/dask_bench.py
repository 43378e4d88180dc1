"""Rows per second of streamlev.dask.universal_set on 1 vs 2 Dask worker processes.

Keys are read from a .npy file by the workers themselves (streamlev.dask.from_npy:
each chunk is memory-mapped and sketched in one task).  Prints a table with
rows/s, the speedup of 2 workers over 1 (target >= 1.6x on 2 free cores), and,
for scale, numpy's K.T @ K over the same file chunk by chunk in this process
(one BLAS thread) — the cheapest possible pass over the keys, not an exact
universal set.

    python benchmarks/dask_bench.py                       # 10^7 x 64 float64 (5.1 GB, temporary)
    python benchmarks/dask_bench.py --quick               # 10^6 rows
    python benchmarks/dask_bench.py --rows 2000000 --dtype float32
    python benchmarks/dask_bench.py --path /data/keys.npy           # keep the file and reuse it

The machine's load average is printed before and after (and stored in the JSON record,
``benchmarks/results/dask.json``): other processes on the same cores depress the measured speedup.
"""

import os
import tempfile
import time

import _common
import numpy as np
from distributed import Client, LocalCluster
from threadpoolctl import threadpool_limits

import streamlev.dask as sd


def write_keys(path, n, d, dtype, seed=0, block=1 << 18):
    """Gaussian keys with a few heavy rows, written block by block (never whole in memory)."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, d))
    for a in range(0, n, block):
        b = min(n, a + block)
        K = rng.standard_normal((b - a, d))
        K[rng.random(b - a) < 2e-5] *= 300.0
        out[a:b] = K
    out.flush()
    del out


def numpy_gram_rows_per_s(path, chunk_rows):
    K = np.load(path, mmap_mode="r")
    t = time.perf_counter()
    with threadpool_limits(1):
        G = np.zeros((K.shape[1], K.shape[1]))
        for a in range(0, K.shape[0], chunk_rows):
            B = np.asarray(K[a : a + chunk_rows], dtype=np.float64)
            G += B.T @ B
    return K.shape[0] / (time.perf_counter() - t)


def _warm_up(x_dim, eps):
    """Import streamlev and compile whatever it JIT-compiles, on every worker, before timing."""
    import streamlev.dask as sdw  # noqa: PLC0415

    block = np.random.default_rng(0).standard_normal((20_000, x_dim))
    sdw._sketch_rows(block, 0, dim=x_dim, eps=eps, ridge=0.0, block_size=4096).merge(
        sdw._sketch_rows(block, 20_000, dim=x_dim, eps=eps, ridge=0.0, block_size=4096)
    )


def run(path, workers, eps, chunk_rows, repeats):
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    best, cpu, U = np.inf, np.nan, None
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env, silence_logs=40
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        client.run(_warm_up, x_dim=np.load(path, mmap_mode="r").shape[1], eps=eps)
        x = sd.from_npy(path, chunk_rows=chunk_rows)
        # Background CPU of an idle worker (heartbeats, monitors), per second of wall time.
        a, t = client.run(time.process_time), time.perf_counter()
        time.sleep(5.0)
        b, idle_wall = client.run(time.process_time), time.perf_counter() - t
        idle = {w: (b[w] - a[w]) / idle_wall for w in a}
        for _ in range(repeats):
            cpu0 = client.run(time.process_time)
            t = time.perf_counter()
            U = sd.universal_set(x, eps)
            wall = time.perf_counter() - t
            cpu1 = client.run(time.process_time)
            if wall < best:
                best = wall
                cpu = [cpu1[w] - cpu0[w] for w in cpu1]
                work = [cpu1[w] - cpu0[w] - idle[w] * wall for w in cpu1]
    return x.shape[0] / best, best, cpu, work, U


def main(argv=None):
    ap = _common.parser(__doc__.split("\n")[0], dim=64, rows=10_000_000, repeats=2)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--eps", type=float, default=0.01)
    ap.add_argument("--chunk-rows", type=int, default=131_072)
    ap.add_argument(
        "--path",
        default=None,
        help="keys .npy file: reused if it has the requested shape and dtype, else written there "
        "and kept (default: written to a temporary directory and removed)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.rows = [1_000_000]
    rows_n, dim = args.rows[0], args.dim[0]

    tmp = None
    if args.path is None:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "keys.npy")
    else:
        path = args.path
    try:
        old = np.load(path, mmap_mode="r")
        reuse = old.shape == (rows_n, dim) and old.dtype == np.dtype(args.dtype)
        del old
    except (OSError, ValueError):
        reuse = False
    t = time.perf_counter()
    if not reuse:
        write_keys(path, rows_n, dim, np.dtype(args.dtype))
    size = os.path.getsize(path)
    print(
        f"{'reused' if reuse else 'wrote'} {rows_n:,} x {dim} {args.dtype} keys "
        f"({size / 1e9:.2f} GB) in {time.perf_counter() - t:.1f} s at {path}"
    )
    load0 = os.getloadavg()
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} on {os.cpu_count()} cores")

    np_rate = numpy_gram_rows_per_s(path, args.chunk_rows)  # also warms the page cache
    r1, t1, c1, w1, U1 = run(path, 1, args.eps, args.chunk_rows, args.repeats)
    r2, t2, c2, w2, U2 = run(path, 2, args.eps, args.chunk_rows, args.repeats)
    assert np.array_equal(U1, U2), "1 and 2 workers disagree"
    load1 = os.getloadavg()

    print(f"\n{'method':<34}{'wall s':>8}{'rows/s':>13}{'vs numpy':>10}{'worker CPU s':>14}{'CPU/wall':>10}")
    print(
        f"{'numpy K.T @ K (1 thread, here)':<34}{rows_n / np_rate:>8.2f}{np_rate:>13,.0f}{1.0:>10.2f}{'':>14}{'':>10}"
    )
    rows = (("streamlev.dask, 1 worker", r1, t1, c1), ("streamlev.dask, 2 workers", r2, t2, c2))
    for label, r, t, c in rows:
        print(f"{label:<34}{t:>8.2f}{r:>13,.0f}{r / np_rate:>10.2f}{sum(c):>14.1f}{sum(c) / t:>10.2f}")
    print(f"\nspeedup 2 workers / 1 worker: {r2 / r1:.2f}x (target >= 1.6x on 2 free cores)")
    print(
        f"CPU seconds per 10^6 rows: {sum(c1) / rows_n * 1e6:.2f} (1 worker), "
        f"{sum(c2) / rows_n * 1e6:.2f} (2 workers); CPU/wall = cores the workers actually got"
    )
    # Not a measurement of wall time: the speedup 2 workers would reach if each had a free core,
    # from how the work was split (1-worker CPU time over the busier worker's CPU time), with and
    # without each worker's idle background CPU (which grows with wall time, so with the load).
    print(
        f"per-worker CPU s with 2 workers: {', '.join(f'{c:.1f}' for c in c2)}; projected speedup "
        f"with 2 free cores: {sum(c1) / max(c2):.2f}x raw, {sum(w1) / max(w2):.2f}x without idle "
        f"background CPU ({', '.join(f'{c - w:.1f}' for c, w in zip(c2, w2, strict=True))} s per worker)"
    )
    print(f"universal set: {U1.size} keys at eps={args.eps}; identical on 1 and 2 workers")
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    results = [
        dict(method="numpy K.T @ K (1 thread, in process)", wall_s=rows_n / np_rate, rows_per_s=np_rate, vs_numpy=1.0),
        *(
            dict(
                method=label, wall_s=t, rows_per_s=r, vs_numpy=r / np_rate, worker_cpu_s=sum(c), cpu_per_wall=sum(c) / t
            )
            for label, r, t, c in rows
        ),
    ]
    args.load_average = [list(load0), list(load1)]
    targets = [
        dict(
            name="2 workers / 1 worker on 2 free cores", measured=r2 / r1, target=">= 1.6", met=r2 / r1 >= 1.6, unit="x"
        )
    ]
    _common.write_record("dask", args, results, targets)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
