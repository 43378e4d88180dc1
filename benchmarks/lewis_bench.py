"""Memory and time of the one-pass p != 2 universal set (streamlev.lewis.OnlinePowerSet).

For each exponent p the keys are streamed in blocks through OnlinePowerSet and compared with
the in-memory exact set (streamlev.lewis.universal_set_p on all keys):

* held      - most key rows held between blocks (the state; bound c_p·rank/eps),
* peak MB   - peak traced allocation during the pass (tracemalloc; numpy registers with it),
* input MB  - the keys as float64, for scale,
* superset  - the one-pass result contains every key of the exact set (the guarantee),
* time      - wall time of the one pass (untraced run), and both times relative to
              numpy.linalg.qr of the same keys (best of 5, measured in this process).

Keys:
    python benchmarks/lewis_bench.py                          # bundled MiniLM keys if present,
                                                              # plus synthetic keys at growing n
    python benchmarks/lewis_bench.py path/to/keys.npz --key K # (..., n, d) arrays: every stream
    python benchmarks/lewis_bench.py keys.npy --p 1 1.5 3 --eps 0.05

A .npz/.npy array of shape (..., n, d) is read as independent streams of n keys (e.g. layers x
heads); --max-streams limits how many are run.  BLAS is limited to one thread (small
factorisations; see DESIGN.md §2).
"""

import argparse
import os
import time
import tracemalloc

import numpy as np
from threadpoolctl import threadpool_limits

from streamlev import lewis

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.join(HERE, "..", "streamlev", "data", "minilm_keys.npz")


def realish_keys(n, d, seed=0):
    """Synthetic keys with the structure of real ones: correlated channels, a few outlier
    channels (x20), a slow drift, and rare directions carried by a handful of rows."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    K = rng.standard_normal((n, d)) @ mix
    K[:, : max(1, d // 16)] *= 20.0
    K += np.linspace(0, 2, n)[:, None] * rng.standard_normal(d)[None, :]
    rare = rng.choice(n, size=8, replace=False)
    K[rare] = 30.0 * rng.standard_normal((8, d))
    return K


def load_streams(path, key):
    if path.endswith(".npz"):
        z = np.load(path)
        name = key or ("K" if "K" in z.files else z.files[0])
        arr = z[name]
    else:
        arr = np.load(path, mmap_mode="r")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim < 2:
        raise SystemExit(f"{path}: expected an array of shape (..., n, d), got {arr.shape}")
    return arr.reshape(-1, arr.shape[-2], arr.shape[-1])


def one_pass(K, eps, p, block, trace=False):
    """Stream K through OnlinePowerSet; returns (result, most rows held, peak traced bytes, seconds).

    Timing runs without tracemalloc (it slows numpy's many small allocations down several
    fold); the peak is measured in a separate traced run.
    """
    if trace:
        tracemalloc.start()
    t = time.perf_counter()
    ops = lewis.OnlinePowerSet(K.shape[1], eps, p=p)
    held = 0
    for a in range(0, K.shape[0], block):
        ops.update(K[a : a + block])
        held = max(held, ops.index_.size)
    dt = time.perf_counter() - t
    peak = 0
    if trace:
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return ops.result(), held, peak, dt


def in_memory(K, eps, p, trace=False):
    if trace:
        tracemalloc.start()
    t = time.perf_counter()
    U = lewis.universal_set_p(K, eps, p=p)
    dt = time.perf_counter() - t
    peak = 0
    if trace:
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return U, peak, dt


def qr_time(K, repeat=5):
    """Best of ``repeat`` timings of numpy.linalg.qr(K) (the numpy reference, same process)."""
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        np.linalg.qr(K, mode="r")
        best = min(best, time.perf_counter() - t)
    return best


def row(label, K, eps, p, block):
    res, held, _pk, dt = one_pass(K, eps, p, block)
    _r, _h, peak, _dt = one_pass(K, eps, p, block, trace=True)
    exact, _pk, dt_mem = in_memory(K, eps, p)
    _e, peak_mem, _dt = in_memory(K, eps, p, trace=True)
    tq = max(qr_time(K), 1e-6)
    ok = bool(np.all(np.isin(exact, res)))
    mb = 1 / 2**20
    print(
        f"{label:>22} {K.shape[0]:>7} {K.shape[1]:>3} {p:>4} {eps:>6} | {held:>6} {res.size:>6} "
        f"{exact.size:>6} {str(ok):>8} | {peak * mb:>8.2f} {peak_mem * mb:>8.2f} {K.nbytes * mb:>8.2f} | "
        f"{dt:>7.2f} {dt / tq:>8.0f} {dt_mem / tq:>8.0f}"
    )
    return ok, held, peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", help=".npy or .npz keys of shape (..., n, d)")
    ap.add_argument("--key", help="array name inside a .npz (default K, else the first)")
    ap.add_argument("--p", type=float, nargs="+", default=[1.0, 1.5, 3.0])
    ap.add_argument("--eps", type=float, default=0.05)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--max-streams", type=int, default=3)
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[4000, 16000],
        help="synthetic stream lengths (memory must not grow with n)",
    )
    ap.add_argument("--d", type=int, default=32)
    args = ap.parse_args(argv)
    path = args.path or (BUNDLED if os.path.exists(BUNDLED) else None)
    hdr = (
        f"{'keys':>22} {'n':>7} {'d':>3} {'p':>4} {'eps':>6} | {'held':>6} {'1pass':>6} {'exact':>6} "
        f"{'superset':>8} | {'peak MB':>8} {'inmem MB':>8} {'input MB':>8} | {'time s':>7} "
        f"{'1pass/qr':>8} {'inmem/qr':>8}"
    )
    all_ok = True
    with threadpool_limits(1, user_api="blas"):
        print(hdr)
        print("-" * len(hdr))
        if path:
            streams = load_streams(path, args.key)
            for s in range(min(args.max_streams, streams.shape[0])):
                for p in args.p:
                    ok, _h, _pk = row(f"{os.path.basename(path)}[{s}]", streams[s], args.eps, p, args.block)
                    all_ok &= ok
        for p in args.p:
            peaks = []
            for n in args.sizes:
                ok, _h, pk = row("synthetic", realish_keys(n, args.d), args.eps, p, args.block)
                all_ok &= ok
                peaks.append(pk)
            print(
                f"{'':>22} one-pass peak memory at n={args.sizes[-1]} / n={args.sizes[0]}: "
                f"{peaks[-1] / peaks[0]:.2f}x (input grew {args.sizes[-1] / args.sizes[0]:.0f}x)"
            )
    print("every one-pass result contains the exact set:", all_ok)
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
