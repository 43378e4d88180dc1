"""Exact leverage scores of wide keys (d = 256 .. 2048) against what a user would write with numpy.

Not run in CI.  For each d, one matrix of Gaussian keys with one row in 997 scaled by 30 (the heavy keys the
set must keep) and its columns scaled over 1e-3..1e3; prints seconds, rows/s, the ratio to numpy's
``np.linalg.qr`` route (reduced Q, squared row norms — on BLAS's own threads), the largest relative error
against that route, and for the sketch whether its set equals the set of the numpy scores (ties within
1e-8 either way).  numpy's Gram + Cholesky route is shown too: fast, but it squares the condition number.

    python benchmarks/wide_bench.py                      # d = 256, 512, 1024, 2048 (about 2 minutes)
    python benchmarks/wide_bench.py --dims 1024 --eps 0.1

The exact sketch keeps a d x d triangular factor: rows go in by a triangular-pentagonal Householder QR
(LAPACK dtpqrt) while they are few compared with d, by whitened Gram updates once chunks of 4·d rows fit
the ramp (streamlev/_factor.py, Factor.update); OnlineLeverage is fed 256-row blocks, as a stream of
tokens would arrive, and buffers them (pending_rows).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipy.linalg as sla

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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="256,512,1024,2048", help="comma-separated key dimensions")
    ap.add_argument("--eps", type=float, default=0.1)
    args = ap.parse_args(argv)
    dims = [int(x) for x in args.dims.split(",")]
    warm = make_keys(3000, 64)
    streamlev.leverage_scores(warm)
    sketch(warm, args.eps)
    print(
        f"{'method':<28}{'d':>6}{'n':>9}{'seconds':>10}{'rows/s':>11}{'vs numpy qr':>13}{'max rel err':>13}"
        f"{'same set':>10}"
    )
    for d in dims:
        n = ROWS.get(d, max(4 * d, 8192))
        K = make_keys(n, d, seed=d)
        t_qr, tau = timed(numpy_qr, K)
        rows = [("numpy qr (reduced Q)", t_qr, 0.0, "-")]
        t, tg = timed(numpy_gram, K)
        rows.append(("numpy Gram + Cholesky", t, float(np.max(np.abs(tg - tau) / tau)), "-"))
        t, ts = timed(streamlev.leverage_scores, K)
        rows.append(("streamlev.leverage_scores", t, float(np.max(np.abs(ts - tau) / tau)), "-"))
        t, U = timed(sketch, K, args.eps)
        ok = "yes" if same_set(U, tau, args.eps) else "NO"
        rows.append((f"OnlineLeverage eps={args.eps:g}", t, float("nan"), ok))
        for name, sec, err, ok in rows:
            print(
                f"{name:<28}{d:>6}{n:>9,}{sec:>10.2f}{n / sec:>11,.0f}{sec / t_qr:>12.2f}x"
                f"{'-' if err != err else f'{err:.1e}':>13}{ok:>10}"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
