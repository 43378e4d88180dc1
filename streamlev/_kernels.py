"""numba kernels: arrays in, arrays out, no validation.

Every kernel is compiled through the one :func:`jit` wrapper below, which holds
all numba options: ``cache=True`` (compiled code is reused across processes),
``nogil=True`` (so :func:`streamlev._threads.split_run` can run parts of a
block on several cores), ``error_model="numpy"``, and no ``fastmath`` flags
that change the meaning of NaN or infinity (``nnan``/``ninf``/``fast``): the
library's non-finite checks rely on NaN and inf propagating.

The one relaxation, ``reassoc=True``, lets LLVM reorder a row's sum of squares
into SIMD lanes.  It changes only the order of additions (the error bound of a
d-term sum of non-negative numbers, d·u relative, is the same in any order),
keeps NaN/inf semantics, and made the row-norm kernels 4x faster here (0.17 ms
vs 0.70 ms for a 16384 x 64 block, ``python benchmarks/kernels_bench.py``).  Kernels whose result must be bit-for-bit
order-defined do not use it.

Explicit signatures compile float64 and float32 (and read-only, for
memory-mapped files) versions eagerly on first import of this module.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["jit", "colnorms_batched", "tri_inv_upper_batched", "row_sqnorms", "scaled_row_sqnorms",
           "scaled_row_sqnorms_batched", "scan_block", "scan_screen_rows"]


def jit(signature, *, reassoc: bool = False):
    """The single njit wrapper of streamlev (options documented in the module docstring)."""
    fastmath = {"reassoc"} if reassoc else False
    return numba.njit(signature, cache=True, nogil=True, fastmath=fastmath, error_model="numpy")


def _arr(dtype, ndim, readonly=False):
    return numba.types.Array(dtype, ndim, "C", readonly=readonly)


_KEY_TYPES = [(dt, ro) for dt in (numba.float64, numba.float32) for ro in (False, True)]


@jit(["float64[:, :, ::1](float64[:, :, ::1])"])
def tri_inv_upper_batched(U):  # pragma: no cover - compiled
    """Inverses of a stack of nonsingular upper-triangular matrices (back substitution, row by row).

    Row i of X = U⁻¹ is ``(e_i - Σ_{k>i} U[i,k]·X[k]) / U[i,i]``; the inner loop
    runs along rows (contiguous, vectorised), and each entry's sum is taken in
    increasing k, as in a column-oriented back substitution (same result, bit
    for bit).  12 inverses of 64 x 64: 0.23-0.25 ms this way, 0.61-0.69 ms
    with the sum down a column, about as fast as LAPACK dtrtri called once per
    matrix (0.22-0.32 ms) without leaving numba (``benchmarks/kernels_bench.py``).
    """
    H, d, _ = U.shape
    out = np.zeros_like(U)
    acc = np.zeros(d)
    for h in range(H):
        for i in range(d - 1, -1, -1):
            for j in range(d):
                acc[j] = 0.0
            for k in range(i + 1, d):
                u = U[h, i, k]
                for j in range(d):  # out[h, k, :k] is zero: full rows keep the loop simple to vectorise
                    acc[j] += u * out[h, k, j]
            out[h, i, i] = 1.0 / U[h, i, i]
            for j in range(i + 1, d):
                out[h, i, j] = -acc[j] / U[h, i, i]
    return out


@jit(["float64[:, ::1](float64[:, :, ::1])"])
def colnorms_batched(R):  # pragma: no cover - compiled
    """Euclidean norms of the columns of each matrix of a stack (H, n, d), without overflow or underflow.

    Each column is scaled by its largest |entry| before squaring (a zero
    column has norm 0).  A stack of 12 64 x 64 factors: 25-30 µs against
    120-160 µs for the same arithmetic in numpy (``benchmarks/kernels_bench.py``).
    """
    H, n, d = R.shape
    out = np.empty((H, d))
    big = np.zeros(d)
    acc = np.zeros(d)
    for h in range(H):
        for j in range(d):
            big[j] = 0.0
            acc[j] = 0.0
        for i in range(n):
            for j in range(d):
                a = abs(R[h, i, j])
                big[j] = a if a > big[j] else big[j]
        for j in range(d):
            big[j] = big[j] if big[j] > 0.0 else 1.0
        for i in range(n):
            for j in range(d):
                v = R[h, i, j] / big[j]
                acc[j] += v * v
        for j in range(d):
            out[h, j] = big[j] * np.sqrt(acc[j])
    return out


@jit([numba.float64[::1](_arr(dt, 2, ro)) for dt, ro in _KEY_TYPES], reassoc=True)
def row_sqnorms(Y):  # pragma: no cover - compiled
    """Squared norms of the rows of a C-ordered 2-D array, accumulated in float64."""
    m, d = Y.shape
    out = np.empty(m)
    for i in range(m):
        s = 0.0
        for j in range(d):
            v = np.float64(Y[i, j])
            s += v * v
        out[i] = s
    return out


@jit([numba.float64[::1](_arr(dt, 2, ro), numba.float64[::1]) for dt, ro in _KEY_TYPES], reassoc=True)
def scaled_row_sqnorms(B, dinv):  # pragma: no cover - compiled
    """‖b_i ∘ dinv‖² for every row of a C-ordered block, accumulated in float64."""
    m, d = B.shape
    out = np.empty(m)
    for i in range(m):
        s = 0.0
        for j in range(d):
            v = np.float64(B[i, j]) * dinv[j]
            s += v * v
        out[i] = s
    return out


@jit([numba.float64[:, ::1](_arr(dt, 3, ro), numba.float64[:, ::1]) for dt, ro in _KEY_TYPES], reassoc=True)
def scaled_row_sqnorms_batched(B, dinv):  # pragma: no cover - compiled
    """‖b_hi ∘ dinv_h‖² for a stack of blocks (H, m, d) with one scaling per stack entry."""
    H, m, d = B.shape
    out = np.empty((H, m))
    for h in range(H):
        for i in range(m):
            s = 0.0
            for j in range(d):
                v = np.float64(B[h, i, j]) * dinv[h, j]
                s += v * v
            out[h, i] = s
    return out


@jit([numba.types.Tuple((numba.boolean, numba.float64))(numba.float64[::1], numba.float64[::1])])
def _column_verdict(poison, big):  # pragma: no cover - compiled
    """(any NaN/±inf seen, largest |x|) from the per-column accumulators of a validation scan."""
    top = 0.0
    bad = False
    for j in range(poison.shape[0]):
        top = big[j] if big[j] > top else top
        if poison[j] != 0.0:  # v*0 is 0 for finite v and NaN for NaN/±inf; NaN compares unequal to everything
            bad = True
    return bad, top


@jit([numba.types.Tuple((numba.int64, numba.float64))(_arr(dt, 3), numba.int64, numba.int64, numba.float64[:, ::1],
                                                      numba.float64[:, ::1]) for dt in (numba.float64, numba.float32)],
     reassoc=True)
def scan_screen_rows(P, a, b, dinv, norms):  # pragma: no cover - compiled
    """Validate and screen rows a..b of every stream of a stack P (H, rows, d) in one pass.

    Writes ``norms[h, i - a] = ‖P[h, i] ∘ dinv_h‖²`` (float64 accumulation)
    and returns (``h·(b - a) + i - a`` for the first row i, in the first
    stream h, that holds NaN/±inf, or -1; the largest |x|).  The NaN/inf test
    uses per-column accumulators as :func:`scan_block` does; ``reassoc`` only
    reorders the non-negative sums of the norms.  Taking the whole C-ordered
    stack and a row range keeps the inner loop contiguous, so it vectorises
    (over an arbitrary strided view it does not).  Copy plus this
    pass: 0.16-0.23 ms per (12, 256, 64) block against 0.25-0.31 ms for a
    contiguous copy, a scan, a screening pass and a copy into the buffer
    (``benchmarks/kernels_bench.py``).
    """
    H, _, d = P.shape
    poison = np.zeros(d)
    big = np.zeros(d)
    for h in range(H):
        for i in range(a, b):
            s = 0.0
            for j in range(d):
                v = np.float64(P[h, i, j])
                poison[j] += v * 0.0
                x = abs(v)
                big[j] = x if x > big[j] else big[j]
                w = v * dinv[h, j]
                s += w * w
            norms[h, i - a] = s
    bad, top = _column_verdict(poison, big)
    if not bad:
        return -1, top
    for h in range(H):  # rare path: locate the first bad row
        for i in range(a, b):
            for j in range(d):
                if not np.isfinite(P[h, i, j]):
                    return h * (b - a) + i - a, top
    return -1, top  # unreachable


@jit([numba.types.Tuple((numba.int64, numba.float64))(_arr(dt, 2, ro)) for dt, ro in _KEY_TYPES])
def scan_block(X):  # pragma: no cover - compiled
    """(first row holding NaN/±inf or -1, largest |x|), in one pass.

    One accumulator per column (no reduction across the inner loop), so LLVM
    vectorises it without any fastmath flag: 0.19 ms for a 16384 x 64 block,
    against 0.36 ms for numpy's sum + max + min (``benchmarks/kernels_bench.py``).
    """
    m, d = X.shape
    poison = np.zeros(d)  # v*0 is 0 for finite v and NaN for NaN/±inf
    big = np.zeros(d)
    for i in range(m):
        for j in range(d):
            v = np.float64(X[i, j])
            poison[j] += v * 0.0
            a = abs(v)
            big[j] = a if a > big[j] else big[j]
    bad, top = _column_verdict(poison, big)
    if not bad:
        return -1, top
    for i in range(m):  # rare path: locate the first bad row
        for j in range(d):
            if not np.isfinite(X[i, j]):
                return i, top
    return -1, top  # unreachable
