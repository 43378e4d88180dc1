"""Exact leverage scores of wide keys (d = 256 .. 2048) against what a user would write with numpy.

Not run in CI.  For each d, one matrix of Gaussian keys with one row in 997 scaled by 30 (the heavy keys the
set must keep) and its columns scaled over 1e-3..1e3; prints seconds, rows/s, the ratio to numpy's
``np.linalg.qr`` route (reduced Q, squared row norms — on BLAS's own threads), the largest relative error
against that route, and for the sketch whether its set equals the set of the numpy scores (ties within
1e-8 either way).  numpy's Gram + Cholesky route is shown too: fast, but it squares the condition number.

    python benchmarks/wide_bench.py                      # d = 256, 512, 1024, 2048 (about 2 minutes)
    python benchmarks/wide_bench.py --dim 1024 --eps 0.1
    python benchmarks/wide_bench.py --quick              # d = 256, 512 at a quarter of the rows
    python benchmarks/wide_bench.py --dim 2048 --rows 8192   # one size; --rows pairs with --dim

For each d the same is measured on a short input of d/2 rows (``--short`` rows, "n < d"): every state of the
sketch and the final factor are rank-deficient.  Gaussian rows are certified linearly independent by the rank
lower bound of ``streamlev/_rank.py`` (one triangular inverse), so every score is exactly 1 and neither the rank
SVD nor the pseudo-inverse map is computed (``Factor.rows_independent``); rows the certificate cannot decide
(dependent or nearly dependent ones) would need the SVD of the d x d factor.  Up to SMALL_ENTRIES entries,
``leverage_scores`` takes one SVD of the keys instead (``streamlev/exact.py``).

Every time is the best of ``--repeats`` runs; the record (``benchmarks/results/wide[_quick].json``) holds
one row per method and d, and the target ratios (<= 1.0x numpy's QR for ``leverage_scores`` and
``OnlineLeverage``).  numpy's QR is timed on BLAS's default threads and on one; the ratios are to the faster
of the two (on a busy machine, BLAS's threads can make it many times slower).

The exact sketch keeps a d x d triangular factor: rows go in by a triangular-pentagonal Householder QR
(LAPACK dtpqrt) while they are few compared with d, by whitened Gram updates once chunks of 4·d rows fit
the ramp (streamlev/_factor.py, Factor.update); OnlineLeverage is fed 256-row blocks, as a stream of
tokens would arrive, and buffers them (pending_rows).
"""

from __future__ import annotations

import os
import sys
import time

import _common
import numpy as np
import scipy.linalg as sla
from threadpoolctl import threadpool_limits

import streamlev

ROWS = {256: 200_000, 512: 100_000, 1024: 30_000, 2048: 8_192}


def make_keys(n, d, seed=0):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d))
    K[::997] *= 30.0
    return K * np.logspace(-3, 3, d)


def numpy_qr(K):
    Q, _ = np.linalg.qr(K)
    return np.einsum("ij,ij->i", Q, Q)


def numpy_gram(K):
    L = np.linalg.cholesky(K.T @ K)
    Y = sla.solve_triangular(L, K.T, lower=True)
    return np.einsum("ij,ij->j", Y, Y)


def sketch(K, eps, block=256):
    sk = streamlev.OnlineLeverage(K.shape[1], eps)
    for a in range(0, K.shape[0], block):
        sk.update(K[a : a + block])
    return sk.universal_set()


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def same_set(U, tau, eps, rtol=1e-8):
    want = np.flatnonzero(tau >= eps * (1 + rtol))
    maybe = np.flatnonzero(tau >= eps * (1 - rtol))
    return bool(np.isin(want, U).all() and np.isin(U, maybe).all())


def main(argv=None):
    ap = _common.parser(__doc__, dim=[256, 512, 1024, 2048], rows=None, repeats=1)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--short", type=float, default=0.5, help="rows of the short input per dimension (0: none)")
    args = ap.parse_args(argv)
    dims = args.dim if not args.quick or args.dim != [256, 512, 1024, 2048] else [256, 512]
    sizes = args.rows or [ROWS.get(d, max(4 * d, 8192)) // (4 if args.quick else 1) for d in dims]
    if len(sizes) == 1:
        sizes = sizes * len(dims)
    if len(sizes) != len(dims):
        raise SystemExit("--rows takes one size or one per --dim")
    warm = make_keys(3000, 64)
    streamlev.leverage_scores(warm)
    sketch(warm, args.eps)
    print(f"load average at start: {os.getloadavg()}")
    print(
        f"{'method':<36}{'d':>6}{'n':>9}{'seconds':>10}{'rows/s':>11}{'vs numpy qr':>13}{'max rel err':>13}"
        f"{'same set':>10}"
    )
    results, targets = [], []
    cases = [(d, n, "") for d, n in zip(dims, sizes)]
    cases += [(d, max(1, int(args.short * d)), " (n < d)") for d in dims if 0 < int(args.short * d) < d]
    for d, n, tag in cases:
        K = make_keys(n, d, seed=d)
        t_qr_def, tau = _common.best_time(lambda K=K: numpy_qr(K), args.repeats)
        with threadpool_limits(1, user_api="blas"):
            t_qr_one, _tau1 = _common.best_time(lambda K=K: numpy_qr(K), args.repeats)
        t_qr = min(t_qr_def, t_qr_one)  # the baseline: numpy's better thread setting (a busy machine slows threads)
        rows = [
            ("numpy qr (reduced Q)" + tag, t_qr_def, 0.0, None),
            ("numpy qr, 1 BLAS thread" + tag, t_qr_one, 0.0, None),
        ]
        if not tag:  # (KᵀK is singular for n < d)
            t, tg = _common.best_time(lambda K=K: numpy_gram(K), args.repeats)
            rows.append(("numpy Gram + Cholesky", t, float(np.max(np.abs(tg - tau) / tau)), None))
        t, ts = _common.best_time(lambda K=K: streamlev.leverage_scores(K), args.repeats)
        rows.append(("streamlev.leverage_scores" + tag, t, float(np.max(np.abs(ts - tau) / tau)), None))
        t, U = _common.best_time(lambda K=K: sketch(K, args.eps), args.repeats)
        rows.append((f"OnlineLeverage eps={args.eps:g}" + tag, t, None, same_set(U, tau, args.eps)))
        for name, sec, err, ok in rows:
            print(
                f"{name:<36}{d:>6}{n:>9,}{sec:>10.2f}{n / sec:>11,.0f}{sec / t_qr:>12.2f}x"
                f"{'-' if err is None else f'{err:.1e}':>13}{'-' if ok is None else ('yes' if ok else 'NO'):>10}"
            )
            results.append(
                {
                    "method": name,
                    "d": d,
                    "n": n,
                    "seconds": sec,
                    "rows_per_s": n / sec,
                    "x_numpy_qr": sec / t_qr,
                    "max_rel_err_vs_numpy_qr": err,
                    "same_set": ok,
                    "loadavg": list(os.getloadavg()),
                }
            )
            if name.startswith(("streamlev", "OnlineLeverage")):
                targets.append(
                    {
                        "name": f"{name.split()[0]} d={d}, n={n}{tag}",
                        "measured": sec / t_qr,
                        "target": "<= 1.0",
                        "met": sec / t_qr <= 1.0,
                        "unit": "x numpy qr",
                    }
                )
        sys.stdout.flush()
    _common.write_record("wide", args, results, targets)


if __name__ == "__main__":
    main()
