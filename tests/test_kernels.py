"""The numba kernels (streamlev._kernels) against plain numpy / LAPACK / extended precision: the validation
scan, Gram matrices, the multi-head screen-and-sum kernel, row classification and compaction.
"""

import numpy as np
import pytest

import streamlev as sl


# -- the validation scan -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows", [7, 40_000])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_validation_names_the_first_bad_row_in_every_layout(dtype, rows, bad):
    rng = np.random.default_rng(1)
    K = rng.standard_normal((rows, 12)).astype(dtype)
    where = [rows - 1, rows // 2 + 1]
    for r in where:
        K[r, 5] = bad
    first = min(where)
    for X in (K, np.asfortranarray(K), K[:, ::-1]):
        with pytest.raises(ValueError, match=f"row {first};"):
            sl.OnlineLeverage(12, 0.1).update(X)
    with pytest.raises(ValueError, match=rf"stream \(1,\), row {first};"):
        sl.MultiHeadLeverage(2, 12, 0.1).update(np.stack([np.ones_like(K), K]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scan_screen_rows_against_numpy(dtype):
    from streamlev._kernels import scan_screen_rows

    rng = np.random.default_rng(22)
    H, cap, d, a, b = 3, 50, 9, 12, 31
    P = (rng.standard_normal((H, cap, d)) * np.logspace(-3, 3, d)).astype(dtype)
    dinv = rng.random((H, d)) + 0.1
    norms = np.empty((H, b - a))
    P[1, a:b, 5] = 0.0  # a zero column of one head is not "small"
    P[2, a:b, 7] *= 1e-20  # the smallest non-zero column maximum, in one head only
    bad, big, small = scan_screen_rows(P, a, b, dinv, norms)
    rows = P[:, a:b].astype(np.float64)
    assert bad == -1 and big == np.abs(rows).max()
    cmax = np.abs(rows).max(axis=1)  # (H, d) per-head column maxima
    assert small == cmax[cmax > 0].min() == cmax[2, 7]
    np.testing.assert_allclose(norms, np.sum((rows * dinv[:, None, :]) ** 2, axis=2), rtol=1e-14)
    P[:, :a] = np.nan  # outside the range: ignored
    P[:, b:] = np.inf
    assert scan_screen_rows(P, a, b, dinv, norms)[0] == -1
    P[2, a + 3, 4] = -np.inf
    P[1, b - 1, 0] = np.nan
    assert scan_screen_rows(P, a, b, dinv, norms)[0] == 1 * (b - a) + (b - 1 - a)  # first in (head, row) order


# -- Gram matrices by the numba kernel (no BLAS) ---------------------------------------------------------------
@pytest.mark.parametrize(("m", "d"), [(1, 1), (3, 5), (257, 11), (600, 64), (9, 130)])
@pytest.mark.parametrize("layout", ["float64", "float32", "row-view", "reversed-columns", "read-only"])
def test_gram_upper_against_extended_precision(m, d, layout):
    from streamlev._kernels import gram_upper, gram_upper_norms

    rng = np.random.default_rng(m * 1000 + d)
    base = rng.standard_normal((2 * m, d)) * np.logspace(-4, 4, d)
    X = {
        "float64": base[:m].copy(),
        "float32": base[:m].astype(np.float32),
        "row-view": base[::2],
        "reversed-columns": np.ascontiguousarray(base[:m, ::-1])[:, ::-1],
        "read-only": base[:m].copy(),
    }[layout]
    X.setflags(write=layout != "read-only")
    XL = X.astype(np.longdouble)
    ref = XL.T @ XL  # 64-bit mantissa sums, no BLAS
    bound = 2 * m * np.finfo(np.float64).eps * (np.abs(XL).T @ np.abs(XL))  # the m·u error bound of any order
    start = rng.standard_normal((d, d))  # the kernel adds to C, upper triangle only
    C = start.copy()
    gram_upper(X, C)
    up = np.triu(np.ones((d, d), dtype=bool))
    assert np.all(np.abs((C - start).astype(np.longdouble) - ref)[up] <= bound[up] + 4 * np.abs(start[up]) * 1e-16)
    assert np.array_equal(C[~up], start[~up])
    dinv = rng.random(d) + 0.5
    C0, C2, norms = np.zeros((d, d)), np.zeros((d, d)), np.full(m, np.nan)
    gram_upper(X, C0)
    gram_upper_norms(X, C2, dinv, norms)
    np.testing.assert_array_equal(C2, C0)  # the same sums in the same order
    assert np.all(np.tril(C2, -1) == 0)
    np.testing.assert_allclose(norms, np.sum((X.astype(np.float64) * dinv) ** 2, axis=1), rtol=1e-13)


def test_gram_upper_propagates_nan_and_inf():
    from streamlev._kernels import gram_upper, gram_upper_norms

    X = np.ones((300, 9))
    X[200, 4] = np.nan
    X[7, 1] = np.inf
    C, norms = np.zeros((9, 9)), np.zeros(300)
    gram_upper_norms(X, C, np.ones(9), norms)
    assert np.isnan(C[4, 4]) and np.isnan(C[0, 4]) and np.isinf(C[1, 1]) and np.isnan(C[1, 4])
    assert np.isnan(norms[200]) and np.isinf(norms[7]) and np.all(np.isfinite(np.delete(norms, [7, 200])))
    C3 = np.zeros((9, 9))
    gram_upper(X[8:], C3)
    assert np.isnan(C3[4, 8]) and C3[0, 0] == 292.0


def test_gram_sums_blocks_into_the_symmetric_matrix_with_norms(threads):
    from streamlev._linalg import gram

    rng = np.random.default_rng(41)
    B = rng.standard_normal((10_000, 13)) * np.logspace(-3, 3, 13)
    dinv = 1.0 / np.linalg.norm(B, axis=0)
    for nthreads in (1, 2):
        threads.set_num_threads(nthreads)
        wide = rng.standard_normal((700, 300))  # wider than GRAM_KERNEL_MAX_DIM: BLAS over the whole block
        for X in (B, B.astype(np.float32), B[::3], np.arange(60).reshape(20, 3), wide, wide.astype(np.float32)):
            X64 = X.astype(np.float64)
            ref = X64.T @ X64
            C = gram(X)
            assert np.array_equal(C, C.T)
            np.testing.assert_allclose(C, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
            dv = np.resize(dinv, X.shape[1])
            C2, t = gram(X, dinv=dv)
            np.testing.assert_array_equal(C2, C)
            np.testing.assert_allclose(t, np.sum((X64 * dv) ** 2, axis=1), rtol=1e-13)


# -- multi-head blocks taken without a copy: one kernel screens them and adds their Gram matrices -----------
def _kernel_args(X, rng, budget=1e300, W=None):
    """Arguments for heads_screen_gram on a block X (H, m, d): random positive scalings and bounds."""

    H, m, d = X.shape
    dinv = rng.random((H, d)) + 0.5
    up = rng.random(H) * 0.01
    if W is None:
        W = np.zeros((H, d, d))
    return dict(
        X=X,
        dinv=dinv,
        up=up,
        thr=0.003,
        W=W,
        budget=budget,
        acc_tr=np.zeros(H),
        hi=np.zeros((H, d, d)),
        lo=np.zeros((H, d, d)),
        C=np.zeros((H, d, d)),
        nrec=np.zeros(H, dtype=np.int64),
        T=np.zeros((H, d, d)),
        keep=np.zeros((H, m), dtype=bool),
        took=np.zeros(H, dtype=bool),
        rows=np.zeros(H, dtype=np.int64),
        limit=np.full(H, 10**9),
        kept=np.zeros(H, dtype=np.int64),
        tk=np.zeros((H, 0, d), dtype=X.dtype),
        tid=np.zeros((H, 0), dtype=np.int64),
        used=np.zeros(H, dtype=np.int64),
        ids=np.zeros(0, dtype=np.int64),
        id0=0,
    )


def _run_kernel(args, parallel):
    from streamlev import _kernels as K
    from streamlev._threads import parallel_region

    if not parallel:
        return K.heads_screen_gram_serial(*args.values())
    with parallel_region(2):
        return K.heads_screen_gram(*args.values())


@pytest.mark.parametrize("layout", ["contiguous", "head-view", "token-major", "reversed-columns", "float32"])
def test_heads_screen_gram_against_numpy(layout):
    rng = np.random.default_rng(31)
    H, m, d = 5, 137, 11
    base = rng.standard_normal((H, 3 * m, d)) * np.logspace(-3, 3, d)
    X = {
        "contiguous": np.ascontiguousarray(base[:, :m]),
        "head-view": base[:, m : 2 * m],
        "token-major": np.ascontiguousarray(base[:, :m].transpose(1, 0, 2)).transpose(1, 0, 2),
        "reversed-columns": np.ascontiguousarray(base[:, :m, ::-1])[:, :, ::-1],
        "float32": base[:, :m].astype(np.float32),
    }[layout]
    X64 = X.astype(np.float64)
    out = {}
    for parallel in (False, True):
        args = _kernel_args(X, np.random.default_rng(5))
        for _ in range(20):  # 20 blocks: the recent sums join hi + lo after 16
            done, kept, refused, due = _run_kernel(args, parallel)
            assert (done, refused, due) == (1, 0, 0)
        u = np.sum((X64 * args["dinv"][:, None, :]) ** 2, axis=2) * args["up"][:, None]
        np.testing.assert_array_equal(args["keep"], u >= args["thr"])
        assert kept == int(np.sum(u >= args["thr"]))
        np.testing.assert_allclose(args["acc_tr"], 20 * u.sum(axis=1), rtol=1e-12)
        assert np.all(args["rows"] == 20 * m) and args["took"].all()
        total = args["hi"] + (args["lo"] + args["C"])
        for h in range(H):
            ref = 20 * (X64[h].T @ X64[h])
            scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
            assert np.all(np.abs(np.triu(total[h] - ref)) <= 1e-13 * scale)
            assert np.all(np.tril(total[h], -1) == 0) and np.all(np.tril(args["C"][h], -1) == 0)
        out[parallel] = [args[k].copy() for k in ("hi", "lo", "C", "keep", "acc_tr")]
    for a, b in zip(out[False], out[True]):  # each head is one thread's work: the same bits either way
        np.testing.assert_array_equal(a, b)


def test_heads_screen_gram_exact_trace_when_the_bound_is_loose_and_refusals():
    rng = np.random.default_rng(32)
    H, m, d = 4, 40, 6
    X = rng.standard_normal((H, m, d))
    A = rng.standard_normal((H, d, d))
    M = np.linalg.inv(A @ A.transpose(0, 2, 1) + d * np.eye(d))
    M = 0.5 * (M + M.transpose(0, 2, 1))
    W = 2 * np.triu(M) - M * np.eye(d)
    exact = np.array([np.trace(M[h] @ X[h].T @ X[h]) for h in range(H)])
    args = _kernel_args(X, rng, budget=0.0, W=W)
    args["up"][:] = 1.0  # the bounds' sum exceeds the budget: the exact trace decides
    args["budget"] = float(np.sort(exact)[1]) * 1.000001  # two heads within, two beyond
    done, kept, refused, due = _run_kernel(args, True)
    assert done == 1 and refused == 2
    np.testing.assert_array_equal(args["took"], exact <= args["budget"])
    np.testing.assert_allclose(args["acc_tr"], np.where(args["took"], exact, 0.0), rtol=1e-12)
    for h in range(H):  # the block's Gram matrix is in T for every head, added only where taken
        np.testing.assert_allclose(np.triu(args["T"][h]), np.triu(X[h].T @ X[h]), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(args["hi"][h], args["T"][h] if args["took"][h] else 0.0, rtol=0, atol=0)
    before = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[3, 17, 2] = bad
        args["X"] = Y
        assert _run_kernel(args, True) == (0, 0, 0, 0)
        for k, v in before.items():
            if k not in ("X", "keep", "T", "kept"):  # scratch
                np.testing.assert_array_equal(args[k], v, err_msg=k)


def test_heads_screen_gram_copies_kept_rows_to_the_tail():
    rng = np.random.default_rng(38)
    H, m, d = 3, 50, 5
    X = rng.standard_normal((H, m, d))
    for ids in (np.zeros(0, dtype=np.int64), rng.permutation(10**6)[:m].astype(np.int64)):
        args = _kernel_args(X, np.random.default_rng(6))
        args["up"][:] = 0.01 / np.median(np.sum((X * args["dinv"][:, None, :]) ** 2, axis=2))  # about half kept
        args.update(
            tk=np.full((H, 120, d), np.nan),
            tid=np.full((H, 120), -1, dtype=np.int64),
            used=np.array([0, 30, 70]),
            ids=ids,
            id0=1000,
        )
        done, kept, _, _ = _run_kernel(args, True)
        assert done == 2 and kept == args["keep"].sum() and 0 < kept < H * m
        want_ids = ids if ids.size else 1000 + np.arange(m)
        for h, start in enumerate((0, 30, 70)):
            k = int(args["keep"][h].sum())
            assert args["kept"][h] == k and args["used"][h] == start + k
            np.testing.assert_array_equal(args["tk"][h, start : start + k], X[h, args["keep"][h]])
            np.testing.assert_array_equal(args["tid"][h, start : start + k], want_ids[args["keep"][h]])
            assert np.isnan(args["tk"][h, start + k :]).all()
        args["used"][:] = [0, 30, 71]  # head 2 has no room for 50 more rows: nobody's rows are copied
        args["tk"][:] = np.nan
        done, kept, _, _ = _run_kernel(args, False)
        assert done == 1 and np.isnan(args["tk"]).all()
        np.testing.assert_array_equal(args["used"], [0, 30, 71])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_classify_rows_and_compact_rows_against_numpy(dtype):
    from streamlev._kernels import classify_rows, compact_rows

    rng = np.random.default_rng(39)
    B = (rng.standard_normal((500, 9)) * np.logspace(-2, 2, 9)).astype(dtype)
    dinv = 1.0 / np.linalg.norm(B.astype(np.float64), axis=0)
    t = np.sum((B.astype(np.float64) * dinv) ** 2, axis=1)
    up, lo = 3.0, 0.5
    e = float(np.median(t))
    codes = np.empty(500, dtype=np.uint8)
    und = classify_rows(B, dinv, up, lo, e, codes)
    np.testing.assert_array_equal(codes == 1, t * lo >= e)
    np.testing.assert_array_equal(codes == 2, (t * up >= e) & ~(t * lo >= e))
    assert und == int(np.sum(codes == 2)) > 0
    keep = rng.random(500) < 0.4
    A = B.copy()
    k = compact_rows(A, keep)
    assert k == keep.sum()
    np.testing.assert_array_equal(A[:k], B[keep])
