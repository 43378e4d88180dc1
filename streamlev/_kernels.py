"""numba kernels: arrays in, arrays out, no validation.

Every kernel is compiled through the one :func:`jit` wrapper below, which holds
all numba options: ``cache=True`` (compiled code is reused across processes),
``nogil=True`` (so :func:`streamlev._threads.split_run` can run parts of a
block on several cores), ``error_model="numpy"``, and no ``fastmath`` flags
that change the meaning of NaN or infinity (``nnan``/``ninf``/``fast``): the
library's non-finite checks rely on NaN and inf propagating.

Two relaxations, both keeping NaN/inf semantics.  ``reassoc=True`` lets LLVM
reorder a sum into SIMD lanes: it changes only the order of additions (the
error bound of a d-term sum of non-negative numbers, d·u relative, is the same
in any order, and a Gram entry's sum of m products keeps the m·u bound of any
summation order), and made the row-norm kernels 4x faster here (0.17 ms vs
0.70 ms for a 16384 x 64 block, ``python benchmarks/kernels_bench.py``).
``contract=True`` lets it fuse a multiply and an add into one FMA (one
rounding instead of two).  Kernels whose result must be bit-for-bit
order-defined use neither.

Explicit signatures compile float64 and float32 (and read-only, for
memory-mapped files) versions eagerly on first import of this module; the
multi-head kernels compile lazily, once per argument types, and are cached
like the rest.  ``jit(parallel=True)`` kernels run ``numba.prange`` loops on
numba's threads and are only called inside
:class:`streamlev._threads.parallel_region`.  A parallel kernel's serial twin
is a Python function of its own: numba's disk cache keys compiled code by
function, not by the ``parallel`` option, so one function compiled both ways
loaded the serial code for both.  numba's thread-setting functions are not
called from jitted code (a kernel that does cannot be cached).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "jit",
    "colnorms_batched",
    "tri_inv_upper_batched",
    "row_sqnorms",
    "scaled_row_sqnorms",
    "scaled_row_sqnorms_batched",
    "scan_block",
    "scan_screen_rows",
    "gram_upper",
    "gram_upper_norms",
    "heads_screen_gram",
    "heads_screen_gram_serial",
    "gram_sum_one",
    "classify_rows",
    "compact_rows",
    "transpose_into",
]


def jit(signature=None, *, reassoc: bool = False, contract: bool = False, parallel: bool = False):
    """The single njit wrapper of streamlev (options documented in the module docstring).

    ``signature=None`` compiles lazily, once per argument types (then cached on
    disk); ``parallel=True`` makes ``numba.prange`` loops run on numba's
    threads — call such kernels only through :func:`streamlev._threads.parallel_region`.
    """
    fastmath = ({"reassoc"} if reassoc else set()) | ({"contract"} if contract else set()) or False
    opts = dict(cache=True, nogil=True, fastmath=fastmath, error_model="numpy")
    if parallel:
        opts["parallel"] = True
    return numba.njit(**opts) if signature is None else numba.njit(signature, **opts)


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


@jit()
def transpose_into(src, dst, upper):  # pragma: no cover - compiled
    """``dst[j, i] = src[i, j]`` (C-ordered arrays; src may be float32), by 8 x 8 tiles that stay in cache.

    With ``upper`` the entries of dst below its diagonal are set to zero
    instead (dst = triu(src.T)).  A C-ordered ``dst`` is the Fortran-ordered
    copy of ``src`` seen through ``dst.T``.  Each tile is written along dst's
    rows (contiguous stores); about 8x faster than numpy's copy across orders
    on a 2048 x 2048 factor, which is not tiled.  Exact: values are only
    moved (or widened from float32).
    """
    n0, n1 = src.shape
    t = 8
    for i0 in range(0, n0, t):
        i1 = min(i0 + t, n0)
        for j0 in range(0, n1, t):
            for j in range(j0, min(j0 + t, n1)):
                for i in range(i0, i1):
                    dst[j, i] = src[i, j]
    if upper:
        for j in range(n1):
            for i in range(min(j, n0)):
                dst[j, i] = 0.0


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


@jit(reassoc=True)
def _scaled_sqnorm(b, dinv):  # pragma: no cover - compiled
    """‖b ∘ dinv‖² of one row, accumulated in float64 (``reassoc`` only reorders the non-negative sum)."""
    s = 0.0
    for j in range(b.shape[0]):
        v = np.float64(b[j]) * dinv[j]
        s += v * v
    return s


@jit([numba.float64[::1](_arr(dt, 2, ro), numba.float64[::1]) for dt, ro in _KEY_TYPES], reassoc=True)
def scaled_row_sqnorms(B, dinv):  # pragma: no cover - compiled
    """‖b_i ∘ dinv‖² for every row of a C-ordered block, accumulated in float64."""
    m = B.shape[0]
    out = np.empty(m)
    for i in range(m):
        out[i] = _scaled_sqnorm(B[i], dinv)
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


@jit(
    [
        numba.int64(_arr(dt, 2, ro), numba.float64[::1], numba.float64, numba.float64, numba.float64, numba.uint8[::1])
        for dt, ro in _KEY_TYPES
    ],
    reassoc=True,
)
def classify_rows(B, dinv, up, lo, e, codes):  # pragma: no cover - compiled
    """Two-sided screening of rows already in a factor: codes[i] = 0 (out), 1 (in) or 2 (undecided).

    With t = ‖b_i ∘ dinv‖² (as :func:`scaled_row_sqnorms`): out when t·up < e,
    in when t·lo >= e, undecided otherwise; returns the number undecided.  One
    pass instead of a norm array, two products, two comparisons and a mask
    in numpy.
    """
    und = 0
    for i in range(B.shape[0]):
        s = _scaled_sqnorm(B[i], dinv)
        if s * lo >= e:
            codes[i] = 1
        elif s * up >= e:
            codes[i] = 2
            und += 1
        else:
            codes[i] = 0
    return und


@jit([numba.int64(dt[:, ::1], numba.boolean[::1]) for dt in (numba.float64, numba.float32)])
def compact_rows(A, keep):  # pragma: no cover - compiled
    """Move the rows of A with keep[i] to the front, in order, in place; return how many there are."""
    m, d = A.shape
    k = 0
    for i in range(m):
        if keep[i]:
            if k != i:
                for j in range(d):
                    A[k, j] = A[i, j]
            k += 1
    return k


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


@jit([numba.float64(numba.float64[::1])])
def _smallest_column(big):  # pragma: no cover - compiled
    """Smallest non-zero per-column largest |x| (+inf when every column is zero)."""
    small = np.inf
    for j in range(big.shape[0]):
        if 0.0 < big[j] < small:
            small = big[j]
    return small


@jit(
    [
        numba.types.Tuple((numba.int64, numba.float64, numba.float64))(
            _arr(dt, 3), numba.int64, numba.int64, numba.float64[:, ::1], numba.float64[:, ::1]
        )
        for dt in (numba.float64, numba.float32)
    ],
    reassoc=True,
)
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
    small = np.inf
    for h in range(H):
        hbig = np.zeros(d)
        for i in range(a, b):
            s = 0.0
            for j in range(d):
                v = np.float64(P[h, i, j])
                poison[j] += v * 0.0
                x = abs(v)
                hbig[j] = x if x > hbig[j] else hbig[j]
                w = v * dinv[h, j]
                s += w * w
            norms[h, i - a] = s
        small = min(small, _smallest_column(hbig))
        for j in range(d):
            big[j] = hbig[j] if hbig[j] > big[j] else big[j]
    bad, top = _column_verdict(poison, big)
    if not bad:
        return -1, top, small
    for h in range(H):  # rare path: locate the first bad row
        for i in range(a, b):
            for j in range(d):
                if not np.isfinite(P[h, i, j]):
                    return h * (b - a) + i - a, top, small
    return -1, top, small  # unreachable


@jit([numba.types.Tuple((numba.int64, numba.float64, numba.float64))(_arr(dt, 2, ro)) for dt, ro in _KEY_TYPES])
def scan_block(X):  # pragma: no cover - compiled
    """(first row holding NaN/±inf or -1, largest |x|, smallest non-zero column maximum), in one pass.

    The third value (+inf when every column is zero) lets the validation refuse
    or rescale columns too small to factorise (:data:`streamlev._validate.MIN_MAGNITUDE`).

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
    small = _smallest_column(big)
    if not bad:
        return -1, top, small
    for i in range(m):  # rare path: locate the first bad row
        for j in range(d):
            if not np.isfinite(X[i, j]):
                return i, top, small
    return -1, top, small  # unreachable


# -- Gram matrices: C += XᵀX (upper triangle) in float64, no BLAS -------------------------------------------------
#: Rows of a block handled per step of the Gram kernels: transposed to float64 scratch of d x (256 + 8) entries
#: (132 KB at d = 64), which stays in cache while :func:`_gram_tiles` sweeps it.
_GRAM_STEP = 256
#: Padding of the scratch's rows: with rows of exactly 256 doubles (2 KB) the 64 entries written per key row fall
#: into two sets of the 8-way L1 cache; 264 spreads them.  Measured (one-off script, three rounds): 41 µs per
#: 256 x 64 block in cache against 64-72 µs unpadded, 10^6 x 64 rows from memory on two threads in 0.12-0.16 s
#: against 0.16-0.19 s.
_GRAM_PAD = 8


@jit(reassoc=True, contract=True)
def _gram_tiles(S, n, C):  # pragma: no cover - compiled
    """C[i, j] += Σ_{r<n} S[i, r]·S[j, r] for j >= i (C row-major, lower triangle untouched).

    S holds a step's rows as columns (d' x ≥n, d' = d rounded up to 4, zero
    padding rows).  Each 4 x 4 tile of C is 16 scalar accumulators over one
    contiguous sweep of 8 rows of S: LLVM keeps them in vector registers
    and vectorises along r (``reassoc``), one FMA per product (``contract``).
    """
    dp = S.shape[0]
    d = C.shape[0]
    for i0 in range(0, dp, 4):
        for j0 in range(i0, dp, 4):
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = 0.0
            a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = 0.0
            for r in range(n):
                x0 = S[i0, r]
                x1 = S[i0 + 1, r]
                x2 = S[i0 + 2, r]
                x3 = S[i0 + 3, r]
                y0 = S[j0, r]
                y1 = S[j0 + 1, r]
                y2 = S[j0 + 2, r]
                y3 = S[j0 + 3, r]
                a00 += x0 * y0
                a01 += x0 * y1
                a02 += x0 * y2
                a03 += x0 * y3
                a10 += x1 * y0
                a11 += x1 * y1
                a12 += x1 * y2
                a13 += x1 * y3
                a20 += x2 * y0
                a21 += x2 * y1
                a22 += x2 * y2
                a23 += x2 * y3
                a30 += x3 * y0
                a31 += x3 * y1
                a32 += x3 * y2
                a33 += x3 * y3
            tile = (a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33)
            for a in range(4):
                i = i0 + a
                for b in range(4):
                    j = j0 + b
                    if i <= j < d:
                        C[i, j] += tile[4 * a + b]


@jit()
def _rows_to_cols(X, a, n, S):  # pragma: no cover - compiled
    """S[j, r] = float64(X[a + r, j]) for r < n: rows read in order, written down S's columns."""
    d = X.shape[1]
    for r in range(n):
        for j in range(d):
            S[j, r] = np.float64(X[a + r, j])


@jit(reassoc=True)
def _rows_to_cols_norms(X, a, n, S, dinv, norms):  # pragma: no cover - compiled
    """:func:`_rows_to_cols`, and norms[a + r] = ‖x_r ∘ dinv‖² (as :func:`_scaled_sqnorm`) in the same sweep."""
    d = X.shape[1]
    for r in range(n):
        s = 0.0
        for j in range(d):
            v = np.float64(X[a + r, j])
            S[j, r] = v
            w = v * dinv[j]
            s += w * w
        norms[a + r] = s


@jit()
def gram_upper(X, C):  # pragma: no cover - compiled
    """C += the upper triangle of XᵀX (row-major; lower triangle untouched), products and sums in float64.

    X: a 2-D float32 or float64 array, any strides.  :func:`gram_upper_norms`
    without the norms.  On the AVX-512 machine it replaced OpenBLAS ``dsyrk``,
    which runs there at about half its ``dgemm`` rate: 31-36 µs per 256 x 64
    block in cache against 78-91 µs for numpy's ``B.T @ B`` on one BLAS thread;
    10^6 x 64 rows split over two threads in 94-95 ms against 108-113 ms with
    OpenBLAS split the same way and 201-210 ms for one ``K.T @ K`` (``python
    benchmarks/kernels_bench.py``, two runs).
    """
    gram_upper_norms(X, C, np.empty(0), np.empty(0))


@jit()
def gram_upper_norms(X, C, dinv, norms):  # pragma: no cover - compiled
    """:func:`gram_upper`, and the screening norms ``norms[i] = ‖x_i ∘ dinv‖²`` in the same pass over X.

    With an empty ``norms`` no norms are computed.  Taken _GRAM_STEP rows at a
    time: the rows are converted and transposed into cache-resident scratch,
    then swept tile by tile (:func:`_gram_tiles`).  Each entry is a sum of
    products in some order, as in BLAS: within m·u of exact (m rows).
    """
    m, d = X.shape
    S = np.zeros(((d + 3) // 4 * 4, _GRAM_STEP + _GRAM_PAD))
    for a in range(0, m, _GRAM_STEP):
        n = min(_GRAM_STEP, m - a)
        if norms.shape[0]:
            _rows_to_cols_norms(X, a, n, S, dinv, norms)
        else:
            _rows_to_cols(X, a, n, S)
        _gram_tiles(S, n, C)


# -- many heads: screening and Gram products of one block, every head in one call ------------------------------
@jit(reassoc=True)
def _screen_rows(X, dinv, up, thr, keep):  # pragma: no cover - compiled
    """Bounds u_i = ‖x_i ∘ dinv‖²·up of one head's rows: (Σ u_i, rows with u_i >= thr), keep[i] = u_i >= thr.

    ``reassoc`` only reorders each row's non-negative sum; a NaN or ±inf entry
    (or a square that overflows) makes the returned sum non-finite.
    """
    tot = 0.0
    kept = 0
    for i in range(X.shape[0]):
        u = _scaled_sqnorm(X[i], dinv) * up
        tot += u
        k = u >= thr
        keep[i] = k
        kept += k
    return tot, kept


@jit(reassoc=True)
def _weighted_sum(W, T):  # pragma: no cover - compiled
    """Σ_ab W_ab T_ab over two C-ordered d x d matrices (a fixed-length loop LLVM vectorises)."""
    d = T.shape[0]
    s = 0.0
    for a in range(d):
        for b in range(d):
            s += W[a, b] * T[a, b]
    return s


@jit()
def _two_sum_add(hi, lo, T):  # pragma: no cover - compiled
    """Add T to hi + lo entry by entry (hi + lo ← hi + lo + T), keeping the rounding error of every addition in lo.

    Knuth's two-sum, exact in round-to-nearest whatever the magnitudes; it
    must not be compiled with fastmath (reassociation would cancel it), so it
    lives in a function of its own.  However many blocks are added, hi + lo
    holds the sum of the T's to within a few units of the last place.  The
    whole square is swept (T's lower triangle is zero): a fixed-length inner
    loop vectorises, a triangular one did not (2 µs instead of 0.3 µs per
    64 x 64 matrix).
    """
    d = T.shape[0]
    for a in range(d):
        for b in range(d):
            x = hi[a, b]
            t = T[a, b]
            s = x + t
            bb = s - x
            lo[a, b] += (x - (s - bb)) + (t - bb)
            hi[a, b] = s


@jit()
def _copy_kept(Xh, keeph, tk, tid, start, ids, id0):  # pragma: no cover - compiled
    """Copy the kept rows of one head, in order, to tk[start:], their ids to tid[start:] (ids, or id0 + i)."""
    k = start
    for i in range(Xh.shape[0]):
        if keeph[i]:
            for j in range(Xh.shape[1]):
                tk[k, j] = Xh[i, j]
            tid[k] = ids[i] if ids.shape[0] else id0 + i
            k += 1


@jit()
def gram_sum_one(T, W, budget, hi, lo, acc_tr):  # pragma: no cover - compiled
    """Add a block's Gram matrix T (formed) to hi + lo if its whitened trace ⟨W, T⟩ keeps acc_tr[0] in budget.

    The exact branch of :func:`heads_screen_gram`'s step 2, and how a head's
    emptied sum restarts with the block it refused; True when added.
    """
    t = _weighted_sum(W, T)
    if not acc_tr[0] + t <= budget:  # also for a NaN t from an overflow
        return False
    _two_sum_add(hi, lo, T)
    acc_tr[0] += t
    return True


@jit()
def _head_add(Xh, budget, usum, Wh, acc_tr, hi, lo, Ch, nrec, Th, h):  # pragma: no cover
    """Step 2 of :func:`heads_screen_gram` for head h: True when the head took the block."""
    if acc_tr[h] + usum <= budget:
        gram_upper(Xh, Ch)
        acc_tr[h] += usum
        nrec[h] += 1
        if nrec[h] >= 16:
            _two_sum_add(hi, lo, Ch)
            Ch[:, :] = 0.0
            nrec[h] = 0
        return True
    Th[:, :] = 0.0
    gram_upper(Xh, Th)
    return gram_sum_one(Th, Wh, budget, hi, lo, acc_tr[h : h + 1])


@jit()
def _heads_verdict(usum, took, rows, limit, acc_tr, budget, m, kept, used, room):  # pragma: no cover
    """(heads that did not take the block, heads due) after step 2; counts the rows taken and the rows kept."""
    refused = 0
    due = 0
    for h in range(usum.shape[0]):
        if room:
            used[h] += kept[h]
        if took[h]:
            rows[h] += m
        refused += not took[h]
        due += rows[h] >= limit[h] or acc_tr[h] + 2.0 * usum[h] > budget
    return refused, due


@jit(parallel=True)
def heads_screen_gram(
    X,
    dinv,
    up,
    thr,
    W,
    budget,
    acc_tr,
    hi,
    lo,
    C,
    nrec,
    T,
    keep,
    took,
    rows,
    limit,
    kept,
    tk,
    tid,
    used,
    ids,
    id0,
):  # pragma: no cover - compiled
    """Screen every head's rows of a block and add their Gram matrices to the heads' running sums.

    Per head h (``numba.prange``: the heads are split over numba's threads):

    1. ``keep[h, i] = u_i >= thr`` for the rigorous upper bounds u_i = ‖x_hi ∘ dinv_h‖²·up_h
       on the rows' prefix scores (:class:`streamlev._factor.Bound`); their sum bounds the
       block's whitened trace Σ_i ‖x_hi R_h⁻¹‖².  A NaN or ±inf anywhere in the block makes
       some head's sum non-finite: then (0, 0, 0, 0) is returned and nothing is changed
       anywhere — the caller's general path names the problem.
    2. If ``acc_tr[h]`` plus that bound stays within ``budget``, the rows' Gram matrix is
       added to the head's recent sum C_h by :func:`gram_upper` (float64, upper triangle, read
       straight from X).  Otherwise T_h = X_hᵀX_h is formed apart and its exact
       whitened trace t_h = Σ_ab W_h,ab T_h,ab = ⟨(R_hᵀR_h)⁻¹, X_hᵀX_h⟩ (W_h = 2·triu(M_h) −
       diag(M_h)) is computed; T_h is added (to hi_h + lo_h, compensated) only if
       ``acc_tr[h] + t_h <= budget`` (false for a NaN t_h from an overflow too).  A trace within
       the budget keeps every row within 8·‖R_h‖ — squares safe, since the caller's factors
       have column norms < 1e100 — and the later whitened update's Cholesky factor
       well conditioned.  ``took[h]`` says whether the head took the block; ``rows[h]`` counts
       its rows.
    3. Every 16 blocks a head's recent sum C_h joins hi_h + lo_h by compensated summation,
       so the running sum hi + lo + C stays within a few units in the last place of the exact
       sum (C itself holds at most 16 plain float64 additions per entry).

    The rows each head keeps (``kept[h]`` of them) are copied, while in cache, to the head's
    candidate tail ``tk[h, used[h]:]`` with their ids (``ids``, or ``id0 + i`` when ``ids`` is
    empty) and ``used`` advanced — if every head's tail has room for m more rows; otherwise
    the caller copies them.

    Returns (1 — or 2 when the kept rows were copied to the tails —, rows kept over all heads,
    heads that did not take the block, heads due): due once ``rows[h] >= limit[h]`` or two more
    blocks like this one would pass the budget.  T and C have zero lower triangles, and keep
    them so.
    """
    H, m, _d = X.shape
    usum = np.zeros(H)
    room = tk.shape[1] - used.max() >= m  # kept rows go to the tail (committed with the block)
    for h in numba.prange(H):
        usum[h], kept[h] = _screen_rows(X[h], dinv[h], up[h], thr, keep[h])
        if room and kept[h]:
            _copy_kept(X[h], keep[h], tk[h], tid[h], used[h], ids, id0)
    for h in range(H):
        if not usum[h] < np.inf:
            return 0, 0, 0, 0
    for h in numba.prange(H):
        took[h] = _head_add(X[h], budget, usum[h], W[h], acc_tr, hi[h], lo[h], C[h], nrec, T[h], h)
    refused, due = _heads_verdict(usum, took, rows, limit, acc_tr, budget, m, kept, used, room)
    return 1 + room, kept.sum(), refused, due


#: The serial twin of heads_screen_gram (one thread, or a forked child of a process whose OpenMP runtime already
#: ran, where GNU OpenMP cannot be used; see streamlev._threads.parallel_region).  A function of its own: numba's
#: disk cache keys compiled code by function, not by the ``parallel`` option, so one Python function compiled
#: both ways would load one version for both.
@jit()
def heads_screen_gram_serial(
    X,
    dinv,
    up,
    thr,
    W,
    budget,
    acc_tr,
    hi,
    lo,
    C,
    nrec,
    T,
    keep,
    took,
    rows,
    limit,
    kept,
    tk,
    tid,
    used,
    ids,
    id0,
):  # pragma: no cover - compiled
    """:func:`heads_screen_gram` on the calling thread alone (same arithmetic, same results)."""
    H, m, _d = X.shape
    usum = np.zeros(H)
    room = tk.shape[1] - used.max() >= m  # kept rows go to the tail (committed with the block)
    for h in range(H):
        usum[h], kept[h] = _screen_rows(X[h], dinv[h], up[h], thr, keep[h])
        if room and kept[h]:
            _copy_kept(X[h], keep[h], tk[h], tid[h], used[h], ids, id0)
    for h in range(H):
        if not usum[h] < np.inf:
            return 0, 0, 0, 0
    for h in range(H):
        took[h] = _head_add(X[h], budget, usum[h], W[h], acc_tr, hi[h], lo[h], C[h], nrec, T[h], h)
    refused, due = _heads_verdict(usum, took, rows, limit, acc_tr, budget, m, kept, used, room)
    return 1 + room, kept.sum(), refused, due
