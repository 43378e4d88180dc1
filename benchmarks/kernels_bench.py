"""The measurements behind streamlev's thread and kernel choices, reproducible.

    python benchmarks/kernels_bench.py           # n = 10^6, d = 64, about half a minute
    python benchmarks/kernels_bench.py --quick   # n = 2·10^5

``--rows`` and ``--dim`` set the keys of the Gram measurements, ``--repeats`` the timed runs of
each (best kept).  The JSON record goes to ``benchmarks/results/kernels.json``.

Prints, all in one process on the same data:

* one ``K.T @ K`` with OpenBLAS on 1 and on 2 threads, split into one part per core run in Python
  threads with single-threaded BLAS, and streamlev's Gram matrix (:func:`streamlev._linalg.gram`: the
  numba kernel :func:`streamlev._kernels.gram_upper`, one part per core); and per 256 x 64 block in
  cache, ``gram_upper`` against OpenBLAS ``dsyrk`` on one thread;
* the Gram product of float32 keys with float64 accumulation (converted per chunk, by chunk size)
  and with float32 accumulation, and the relative error of the scores each gives;
* the validation scan (:func:`streamlev._kernels.scan_block`) against numpy's sum + max + min, and the
  row-norm kernel with ``reassoc`` against the same loop compiled without it, per 16,384 x 64 block;
* the multi-head kernels for 12 heads, d = 64: stacked triangular inverses and column norms against
  their per-matrix or numpy forms, and staging one (12, 256, 64) block (copy into the shared buffer,
  then one validate-and-screen pass) against the earlier contiguous copy + scan + screen + copy;
* the kernel MultiHeadLeverage takes larger blocks through (screening and ``gram_upper`` per head on
  numba's threads): heads handed out one at a time against numba's static split and serial, with and
  without 1 ms of other work between calls.
"""

from __future__ import annotations

import contextlib
import time

import _common
import numpy as np

import streamlev
from streamlev import _kernels, _linalg, _threads

#: Every figure printed, as flat rows of the JSON record (``table`` names the section).
RESULTS: list[dict] = []
SETTINGS = {"repeats": 5}  # --repeats


def record(table, what, seconds, **extra):
    RESULTS.append(dict(table=table, what=what, seconds=seconds, **extra))


def best(fn, repeat=None):
    repeat = SETTINGS["repeats"] if repeat is None else repeat
    fn()
    out = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def chunked_gram(K, acc, chunk):
    d = K.shape[1]

    def part(a, b):
        C = np.zeros((d, d), dtype=acc)
        for s in range(a, b, chunk):
            X = K[s : min(b, s + chunk)]
            if X.dtype != acc:
                X = X.astype(acc)
            C += X.T @ X
        return C

    res = _threads.split_run(part, K.shape[0], _threads.parts_for(K.shape[0]))
    return sum(res[1:], res[0])


def scores_from_gram(K, C):
    W = np.linalg.inv(np.linalg.cholesky(np.asarray(C, dtype=np.float64))).T
    Y = np.asarray(K, dtype=np.float64) @ W
    return np.einsum("ij,ij->i", Y, Y)


def main(argv=None):
    ap = _common.parser(__doc__.split("\n")[0], dim=64, rows=10**6, repeats=5)
    args = ap.parse_args(argv)
    n, d = (200_000 if args.quick else args.rows[0]), args.dim[0]
    SETTINGS["repeats"] = args.repeats
    rng = np.random.default_rng(0)
    K = rng.standard_normal((n, d))
    K32 = K.astype(np.float32)
    print(
        f"streamlev {streamlev.__version__}, numpy {np.__version__}, n={n:,}, d={d}, "
        f"threads={streamlev.get_num_threads()}"
    )

    print("\n== K.T @ K (float64) ==")
    t2 = best(lambda: K.T @ K)
    with _threads.blas_threads(1):
        t1 = best(lambda: K.T @ K)
    ts = best(lambda: chunked_gram(K, np.float64, 4096))
    tg = best(lambda: _linalg.gram(K))
    print(
        f"  OpenBLAS 2 threads {t2 * 1e3:7.1f} ms   1 thread {t1 * 1e3:7.1f} ms   "
        f"split over {streamlev.get_num_threads()} Python threads {ts * 1e3:7.1f} ms   "
        f"streamlev gram (numba, split) {tg * 1e3:7.1f} ms"
    )
    g = f"K.T @ K, {n:,} x {d} float64"
    record(g, "OpenBLAS, 2 threads", t2)
    record(g, "OpenBLAS, 1 thread", t1)
    record(g, f"split over {streamlev.get_num_threads()} Python threads, 1-thread BLAS", ts)
    record(g, "streamlev gram (numba kernel, split)", tg)
    B = np.ascontiguousarray(K[:256])
    C = np.zeros((d, d))
    with _threads.blas_threads(1):
        t_syrk = best(lambda: [B.T @ B for _ in range(1000)]) / 1000
    t_numba = best(lambda: [_kernels.gram_upper(B, C) for _ in range(1000)]) / 1000
    print(
        f"  one 256 x {d} block in cache: OpenBLAS dsyrk (B.T @ B, 1 thread) {t_syrk * 1e6:.1f} µs   "
        f"gram_upper {t_numba * 1e6:.1f} µs"
    )
    record(f"one 256 x {d} block in cache", "OpenBLAS dsyrk (B.T @ B, 1 thread)", t_syrk)
    record(f"one 256 x {d} block in cache", "gram_upper", t_numba)

    print("\n== Gram product of float32 keys ==")
    Kn = K32.astype(np.float64)
    Kn /= np.linalg.norm(Kn, axis=0)
    U, _, _ = np.linalg.svd(Kn, full_matrices=False)
    tau = np.einsum("ij,ij->i", U, U)  # oracle: SVD of the column-normalised keys
    t64 = best(lambda: chunked_gram(K, np.float64, 4096))
    print(f"  float64 keys, float64 accumulation (reference)      {t64 * 1e3:7.1f} ms")
    f32 = f"Gram product of float32 keys, {n:,} x {d}"
    record(f32, "float64 keys, float64 accumulation (reference)", t64)
    for chunk in (4096, 16384, 65536):
        t = best(lambda chunk=chunk: chunked_gram(K32, np.float64, chunk))
        print(f"  float32 keys, float64 accumulation, chunks {chunk:>6,} {t * 1e3:7.1f} ms")
        record(f32, f"float32 keys, float64 accumulation, chunks of {chunk:,}", t)
    t = best(lambda: chunked_gram(K32, np.float32, 4096))
    for acc in (np.float64, np.float32):
        err = np.max(np.abs(scores_from_gram(K32, chunked_gram(K32, acc, 4096)) - tau) / tau)
        label = "float32 keys, float32 accumulation" if acc == np.float32 else "float32 keys, float64 accumulation"
        extra = f"{t * 1e3:7.1f} ms" if acc == np.float32 else "       "
        print(f"  {label:<50} {extra}   max rel. error of the scores {err:.1e}")
        record(f32, label, t if acc == np.float32 else None, max_rel_err=err)
    t = best(lambda: _linalg.gram(K32))
    err = np.max(np.abs(scores_from_gram(K32, _linalg.gram(K32)) - tau) / tau)
    print(
        f"  {'float32 keys, streamlev gram (float64 products)':<50} {t * 1e3:7.1f} ms   "
        f"max rel. error of the scores {err:.1e}"
    )
    record(f32, "float32 keys, streamlev gram (float64 products)", t, max_rel_err=err)

    print("\n== per 16,384 x 64 float64 block ==")
    B = K[:16384]
    dinv = np.ones(d)
    t_np = best(lambda: (np.add.reduce(B, axis=None), B.max(), B.min()), 50)
    t_scan = best(lambda: _kernels.scan_block(B), 50)
    print(f"  validation: numpy sum + max + min {t_np * 1e3:.3f} ms   scan_block {t_scan * 1e3:.3f} ms")
    blk = f"one 16,384 x {d} float64 block"
    record(blk, "validation: numpy sum + max + min", t_np)
    record(blk, "validation: scan_block", t_scan)
    import numba

    @numba.njit(cache=False, nogil=True)
    def plain(B, dinv):  # the same loop as scaled_row_sqnorms, compiled without reassoc
        m, k = B.shape
        out = np.empty(m)
        for i in range(m):
            s = 0.0
            for j in range(k):
                v = B[i, j] * dinv[j]
                s += v * v
            out[i] = s
        return out

    t_plain = best(lambda: plain(B, dinv), 50)
    t_re = best(lambda: _kernels.scaled_row_sqnorms(B, dinv), 50)
    print(f"  row norms: plain loop {t_plain * 1e3:.3f} ms   with reassoc (scaled_row_sqnorms) {t_re * 1e3:.3f} ms")
    record(blk, "row norms: plain loop", t_plain)
    record(blk, "row norms: with reassoc (scaled_row_sqnorms)", t_re)
    multihead(rng)
    _common.write_record("kernels", args, RESULTS)


def multihead(rng, H=12, d=64, m=256, blocks=400):
    from scipy.linalg import lapack

    print(f"\n== multi-head kernels, {H} heads, d = {d} ==")
    Rs = np.stack([np.linalg.qr(rng.standard_normal((4 * d, d)))[1] for _ in range(H)])

    def lapack_inv():
        with _threads.blas_threads(1):
            return [lapack.dtrtri(R, lower=0)[0] for R in Rs]

    import numba

    @numba.njit(cache=False, nogil=True)
    def by_columns(U):  # the same back substitution with the inner sum down a column (strided)
        n_h, k, _ = U.shape
        out = np.zeros_like(U)
        for h in range(n_h):
            for j in range(k - 1, -1, -1):
                out[h, j, j] = 1.0 / U[h, j, j]
                for i in range(j - 1, -1, -1):
                    acc = 0.0
                    for q in range(i + 1, j + 1):
                        acc += U[h, i, q] * out[h, q, j]
                    out[h, i, j] = -acc / U[h, i, i]
        return out

    t_k = best(lambda: _kernels.tri_inv_upper_batched(Rs), 50)
    t_col = best(lambda: by_columns(Rs), 50)
    t_l = best(lapack_inv, 50)
    print(
        f"  {H} triangular inverses: tri_inv_upper_batched (by rows) {t_k * 1e3:.3f} ms   the loop by columns "
        f"{t_col * 1e3:.3f} ms   LAPACK dtrtri one by one {t_l * 1e3:.3f} ms"
    )
    mh = f"multi-head kernels, {H} heads, d = {d}"
    record(mh, f"{H} triangular inverses: tri_inv_upper_batched", t_k)
    record(mh, f"{H} triangular inverses: the loop by columns", t_col)
    record(mh, f"{H} triangular inverses: LAPACK dtrtri one by one", t_l)

    def np_colnorms():
        big = np.max(np.abs(Rs), axis=-2)
        safe = np.where(big > 0, big, 1.0)[..., None, :]
        return big * np.sqrt(np.einsum("...ij,...ij->...j", Rs / safe, Rs / safe))

    t_c = best(lambda: _kernels.colnorms_batched(Rs), 50)
    t_n = best(np_colnorms, 50)
    print(
        f"  {H} column-norm vectors (scaled, overflow-safe): colnorms_batched {t_c * 1e6:.0f} µs   numpy "
        f"{t_n * 1e6:.0f} µs"
    )
    record(mh, f"{H} column-norm vectors: colnorms_batched", t_c)
    record(mh, f"{H} column-norm vectors: numpy", t_n)

    K = rng.standard_normal((H, m * blocks, d))  # the caller's keys: blocks are strided views K[:, a:b]
    dinv = np.ones((H, d))
    P = np.empty((H, 16 * m, d))
    norms = np.empty((H, m))

    def staged():
        for b in range(blocks):
            o = (b % 16) * m
            P[:, o : o + m] = K[:, b * m : (b + 1) * m]
            _kernels.scan_screen_rows(P, o, o + m, dinv, norms)

    def before():
        for b in range(blocks):
            o = (b % 16) * m
            X = np.ascontiguousarray(K[:, b * m : (b + 1) * m])
            _kernels.scan_block(X.reshape(-1, d))
            _kernels.scaled_row_sqnorms_batched(X, dinv)
            P[:, o : o + m] = X

    t_s = best(staged, 3) / blocks
    t_b = best(before, 3) / blocks
    print(
        f"  one ({H}, {m}, {d}) block from a strided view: staged (copy + scan_screen_rows) {t_s * 1e3:.3f} ms   "
        f"contiguous copy + scan + screen + copy {t_b * 1e3:.3f} ms"
    )
    record(mh, f"one ({H}, {m}, {d}) block: staged (copy + scan_screen_rows)", t_s)
    record(mh, f"one ({H}, {m}, {d}) block: contiguous copy + scan + screen + copy", t_b)
    heads_kernel(rng, H, d, m)


def heads_kernel(rng, H, d, m, rounds=15, batch=20):
    """The kernel MultiHeadLeverage takes blocks of 64+ rows through (streamlev._kernels.heads_screen_gram)."""
    import numba

    state = dict(
        dinv=np.ones((H, d)),
        up=np.full(H, 1e-9),
        thr=1e-3,
        W=np.zeros((H, d, d)),
        budget=1e300,
        acc_tr=np.zeros(H),
        hi=np.zeros((H, d, d)),
        lo=np.zeros((H, d, d)),
        C=np.zeros((H, d, d)),
        nrec=np.zeros(H, dtype=np.int64),
        T=np.zeros((H, d, d)),
        keep=np.zeros((H, m), dtype=bool),
        took=np.zeros(H, dtype=bool),
        rows=np.zeros(H, dtype=np.int64),
        limit=np.full(H, 1 << 60),
        kept=np.zeros(H, dtype=np.int64),
        tk=np.zeros((H, 0, d)),
        tid=np.zeros((H, 0), dtype=np.int64),
        used=np.zeros(H, dtype=np.int64),
        ids=np.zeros(0, dtype=np.int64),
        id0=0,
    )

    def per_call(fn, ctx, count, gap=0.0):
        """µs per call on blocks drawn just before each call (as a model hands them over).

        gap > 0: that many seconds of a busy loop between calls.
        """
        spent = 0.0
        for _ in range(count):
            X = rng.standard_normal((H, m, d))
            if gap > 0:
                t_end = time.perf_counter() + gap
                while time.perf_counter() < t_end:
                    pass
            with ctx():
                t0 = time.perf_counter()
                fn(X, *state.values())
                spent += time.perf_counter() - t0
        return spent / count * 1e6

    n = _threads.parallel_threads()
    par, ser = _kernels.heads_screen_gram, _kernels.heads_screen_gram_serial

    @numba.njit(parallel=True, cache=False)
    def launch(a):
        for i in numba.prange(a.shape[0]):
            a[i] += 1.0

    a = np.zeros(n)
    with _threads.parallel_region(n):
        t_numba = best(lambda: [launch(a) for _ in range(1000)], 5) / 1000
    t_split = best(lambda: [_threads.split_run(lambda lo, hi: None, n, n) for _ in range(200)], 5) / 200
    print(
        f"  handing work to the other core: a numba parallel launch {t_numba * 1e6:.1f} µs   "
        f"split_run (Python threads) {t_split * 1e6:.1f} µs"
    )
    hk = f"heads_screen_gram, one ({H}, {m}, {d}) block per call"
    record(hk, "a numba parallel launch", t_numba)
    record(hk, "split_run (Python threads)", t_split)
    variants = {
        f"{n} threads, heads one at a time": (par, lambda: _threads.parallel_region(n)),
        f"{n} threads, numba's static split": (par, lambda: _Static(n)),
        "serial": (ser, contextlib.nullcontext),
    }
    for f, c in variants.values():
        per_call(f, c, 20)  # warm-up
    print(
        f"  heads_screen_gram, one ({H}, {m}, {d}) block drawn just before each call: median over {rounds} rounds "
        f"of {batch} calls per variant, variants interleaved (µs per call):"
    )
    for gap, label in ((0.0, "back to back"), (1e-3, "1 ms busy loop between calls")):
        res = {k: [] for k in variants}
        for r in range(rounds):
            for k in list(variants) if r % 2 == 0 else list(variants)[::-1]:
                res[k].append(per_call(*variants[k], batch, gap=gap))
        print(f"    {label}: " + "   ".join(f"{k} {np.median(v):.0f}" for k, v in res.items()))
        for k, v in res.items():
            record(hk, f"{k}, {label} (median)", float(np.median(v)) * 1e-6)


class _Static:
    """parallel_region with numba's default static split of the iterations, for comparison."""

    def __init__(self, n):
        self.region = _threads.parallel_region(n)

    def __enter__(self):
        import numba

        self.region.__enter__()
        numba.set_parallel_chunksize(0)
        return self

    def __exit__(self, *exc):
        import numba

        numba.set_parallel_chunksize(1)  # what the region set, so that it restores the caller's value
        return self.region.__exit__(*exc)


if __name__ == "__main__":
    main()
