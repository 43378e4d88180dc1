"""ApproxLeverage (Frequent Directions, ell directions) against the exact d x d sketch and numpy, large d.

Not run in CI.  Prints one table: method, d, n, ell, seconds, rows/s, tracemalloc peak, the sketch's
.nbytes, time per row relative to numpy's in-memory ridge leverage (Gram + Cholesky, same process, same
rows), c = 1 + Δ/λ, and the set sizes; then a check of both inclusions of the approximate set against
the exact ridge scores of the rows the exact methods saw.

    python benchmarks/approx_bench.py            # d = 1024, 2048, 4096 (several minutes)
    python benchmarks/approx_bench.py --quick    # d = 1024, 2048 exact rows, 8192 approximate rows

``--dim`` sets the dimensions, ``--rows`` the approximate sketch's rows, ``--exact-rows`` the rows of the
exact methods (one value, or one per dimension).  The JSON record goes to ``benchmarks/results/approx.json``.

Keys: a rank-16 signal with a decaying spectrum, isotropic noise, and one row in 500 pointing in a
fresh random direction with a large norm (the "heavy rare" keys the set must keep).  The ridge comes
from the FD bound Δ <= ‖K − K_k‖_F²/(ell + 1 − k) with k = 16, so that c <= 1.5 is guaranteed for the
longest stream and the smallest ell (the rows' noise mass is known in closed form).

Memory: a sketch's peak is tracemalloc's over its own calls (reset before each one): the sketch, the
block being fed and the update's temporaries, not the generator's.  The exact and numpy methods see
the first --exact-rows rows only (the exact d x d sketch costs d² work per row), the approximate
sketch sees --approx-rows rows; the ratios compare time per row.  numpy's Gram + Cholesky pays a
one-off O(d³) Cholesky that n = O(d) rows do not amortise, so the row "numpy K.T@K only" (one Gram
product, the per-row floor of every exact method; peak = K plus the Gram matrix) is printed as well.
"""

from __future__ import annotations

import time
import tracemalloc

import _common
import numpy as np
import scipy.linalg as sla

from streamlev.approx import ApproxLeverage

RANK = 16
NOISE = 0.1
HEAVY_EVERY = 500
HEAVY_NORM = 300.0


def blocks(n, d, block, seed=0):
    """Yield (ids, keys) blocks of the synthetic stream; the same seed gives the same rows."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((RANK, d)) / np.sqrt(d) * 30.0
    spec = 0.7 ** np.arange(RANK)
    for a in range(0, n, block):
        m = min(block, n - a)
        X = (rng.standard_normal((m, RANK)) * spec) @ W
        X += NOISE * rng.standard_normal((m, d))
        ids = np.arange(a, a + m)
        heavy = ids % HEAVY_EVERY == HEAVY_EVERY // 2
        if heavy.any():
            h = rng.standard_normal((int(heavy.sum()), d))
            X[heavy] += HEAVY_NORM * h / np.linalg.norm(h, axis=1, keepdims=True)
        yield ids, X


def ridge_for(n, d, ell):
    """2·‖K − K_k‖_F²/(ell + 1 − k) with k = RANK, using the expected noise mass n·d·NOISE²
    plus the heavy rows' mass (each outside the signal span)."""
    tail = n * d * NOISE**2 + (n // HEAVY_EVERY + 1) * HEAVY_NORM**2
    return 2.0 * tail / (ell + 1 - RANK)


def numpy_ridge_scores(K, lam):
    """What a user writes: Gram + ridge, Cholesky, triangular solve (in memory)."""
    G = K.T @ K
    G[np.diag_indices_from(G)] += lam
    L = np.linalg.cholesky(G)
    Y = sla.solve_triangular(L, K.T, lower=True, check_finite=False)
    return np.einsum("ij,ij->j", Y, Y)


def run_sketch(make, n, d, block):
    """Feed the stream; return (sketch, seconds of update+universal_set, peak bytes, set).

    The peak is tracemalloc's, taken over the sketch's calls only (reset before each one), so it
    counts the sketch, the block being fed and the temporaries of the update — not the generator's.
    """
    tracemalloc.start()
    sk = make()
    spent = 0.0
    peak = 0
    for ids, X in blocks(n, d, block):
        tracemalloc.reset_peak()
        t = time.perf_counter()
        sk.update(X, ids=ids)
        spent += time.perf_counter() - t
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        del X
    tracemalloc.reset_peak()
    t = time.perf_counter()
    U = sk.universal_set()
    spent += time.perf_counter() - t
    peak = max(peak, tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
    return sk, spent, peak, U


def run_numpy(n, d, block, lam, eps):
    K = np.vstack([X for _ids, X in blocks(n, d, block)])
    t = time.perf_counter()
    _G = K.T @ K
    t_gram = time.perf_counter() - t
    del _G
    tracemalloc.start()
    t = time.perf_counter()
    tau = numpy_ridge_scores(K, lam)
    spent = time.perf_counter() - t
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return tau, spent, peak + K.nbytes, np.flatnonzero(tau >= eps), t_gram


def svd_threads(d, ell):
    from threadpoolctl import threadpool_limits

    A = np.random.default_rng(1).standard_normal((2 * ell, d))
    out = {}
    for th in (1, 2):
        with threadpool_limits(limits=th, user_api="blas"):
            sla.svd(A, full_matrices=False, lapack_driver="gesdd")
            t = time.perf_counter()
            sla.svd(A, full_matrices=False, lapack_driver="gesdd")
            out[th] = time.perf_counter() - t
    return out


def main(argv=None):
    ap = _common.parser(__doc__.split("\n")[0], dim=[1024, 2048, 4096], rows=16384, repeats=1)
    ap.add_argument("--ells", type=int, nargs="+", default=[32, 128])
    ap.add_argument(
        "--exact-rows",
        type=int,
        nargs="+",
        default=None,
        help="rows for the exact sketch and numpy, one per d (default 4096, 2048, 1024)",
    )
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--no-exact", action="store_true", help="skip the exact d x d sketch")
    args = ap.parse_args(argv)
    if args.quick:
        args.dim, args.rows, args.exact_rows = [1024], [8192], args.exact_rows or [2048]
    dims, approx_rows = args.dim, args.rows[0]
    exact_rows = args.exact_rows or [max(args.block, 4096 * 1024 // d) for d in dims]
    if len(exact_rows) == 1:
        exact_rows = exact_rows * len(dims)
    if len(exact_rows) != len(dims):
        ap.error("--exact-rows takes one value, or one per --dim entry")

    from streamlev import OnlineLeverage

    t = svd_threads(1024, 64)
    print(
        f"SVD of a 128 x 1024 block: 1 BLAS thread {t[1] * 1e3:.1f} ms, 2 threads {t[2] * 1e3:.1f} ms "
        f"(ApproxLeverage runs its SVDs on 1 thread)\n"
    )

    head = (
        f"{'method':<22}{'d':>6}{'n':>7}{'ell':>5}{'seconds':>9}{'rows/s':>9}{'peak MB':>9}"
        f"{'nbytes MB':>10}{'x numpy/row':>12}{'c':>7}{'|U|':>6}"
    )
    print(head)
    print("-" * len(head))
    checks = []
    results = [dict(table="SVD threads", block="128 x 1024", one_thread_s=t[1], two_threads_s=t[2])]
    for d, n_ex in zip(dims, exact_rows, strict=True):
        # c <= 1.5 is guaranteed for the smallest ell on the longest stream.
        lam = ridge_for(approx_rows, d, min(args.ells))
        tau, t_np, peak_np, U_np, t_gram = run_numpy(n_ex, d, args.block, lam, args.eps)
        np_row = t_np / n_ex

        def row(name, n, ell, sec, peak, nbytes, c, u, d=d, np_row=np_row):
            print(
                f"{name:<22}{d:>6}{n:>7}{ell:>5}{sec:>9.2f}{n / sec:>9.0f}{peak / 2**20:>9.1f}"
                f"{nbytes / 2**20:>10.1f}{(sec / n) / np_row:>12.2f}{c:>7}{u:>6}",
                flush=True,
            )
            results.append(
                dict(
                    table="sketches",
                    method=name,
                    d=d,
                    n=n,
                    ell=None if ell == "-" else ell,
                    seconds=sec,
                    rows_per_s=n / sec,
                    peak_bytes=peak,
                    state_bytes=nbytes,
                    per_row_vs_numpy=(sec / n) / np_row,
                    c=c,
                    size=None if u == "-" else u,
                )
            )

        row("numpy Gram+Cholesky", n_ex, "-", t_np, peak_np, d * d * 8, "exact", len(U_np))
        row("numpy K.T@K only", n_ex, "-", t_gram, d * d * 8 + n_ex * d * 8, d * d * 8, "-", "-")
        if not args.no_exact:
            sk, sec, peak, U = run_sketch(
                lambda d=d, lam=lam: OnlineLeverage(d, args.eps, ridge=lam), n_ex, d, args.block
            )
            row("OnlineLeverage", n_ex, "-", sec, peak, sk.nbytes, "exact", len(U))
            checks.append((f"OnlineLeverage d={d}", U, tau, 1.0))
        for ell in args.ells:

            def mk(d=d, ell=ell, lam=lam):
                return ApproxLeverage(d, args.eps, ell=ell, ridge=lam, max_c=None)

            sk, sec, peak, U = run_sketch(mk, approx_rows, d, args.block)
            row("ApproxLeverage", approx_rows, ell, sec, peak, sk.nbytes, f"{sk.c:.3f}", len(U))
            sk2, _s, _p, U2 = run_sketch(mk, n_ex, d, args.block)  # same rows as numpy, for the check
            checks.append((f"ApproxLeverage d={d} ell={ell} n={n_ex}", U2, tau, sk2.c))
    print("\nInclusions against numpy's exact ridge scores on the exact methods' rows:")
    for name, U, tau, c in checks:
        must = np.flatnonzero(tau >= args.eps * (1 + 1e-8))
        allowed = np.flatnonzero(tau >= args.eps / c * (1 - 1e-8))
        miss = np.setdiff1d(must, U).size
        extra = np.setdiff1d(U, allowed).size
        print(f"  {name:<40} |U|={len(U):>4} |true|={must.size:>4} c={c:.3f} missing={miss} outside eps/c={extra}")
        results.append(
            dict(table="inclusions", sketch=name, size=len(U), exact_size=must.size, c=c, missing=miss, outside=extra)
        )
    ok = all(r["missing"] == 0 and r["outside"] == 0 for r in results if r["table"] == "inclusions")
    targets = [dict(name="both inclusions hold for every sketch", measured=ok, target="true", met=ok, unit="")]
    _common.write_record("approx", args, results, targets)


if __name__ == "__main__":
    main()
