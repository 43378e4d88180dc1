"""Dense linear algebra under the factor, split over the library's threads where that pays.

Householder QR of stacked triangles, triangular inverses, whitening, Gram matrices and row norms.

Every routine computes the same bits however its work is split: threads take contiguous rows and their parts
are combined in a fixed order, and LAPACK runs single-threaded inside (:func:`streamlev._threads.blas_threads`).
"""

from __future__ import annotations

import contextlib

import numpy as np
from scipy.linalg import lapack

from ._lazy import kernels
from ._threads import blas_threads, get_num_threads, parts_for, split_run
from ._tuning import (
    CHUNK_ROWS,
    GRAM_KERNEL_MAX_DIM,
    TILED_COPY_MIN_DIM,
    TP_ENTRIES,
    TP_NB,
    TRI_INV_LAPACK_MIN_DIM,
)

__all__ = [
    "c_float",
    "colnorms",
    "fortran_copy",
    "gram",
    "max_abs",
    "merge_r",
    "qr_r",
    "tp_qr_r",
    "tri_inv",
    "triu_c",
    "whiten",
    "whitened_sqnorms",
]


def qr_r(A: np.ndarray, blocked: bool = False) -> np.ndarray:
    """R factor (min(m, d) x d, upper triangular, C-contiguous) of a Householder QR of A.

    ``A`` is overwritten when it is a Fortran-ordered float64 array.  Runs
    LAPACK single-threaded (see :func:`blas_threads`).  ``blocked=True``
    gives dgeqrf the workspace of its blocked algorithm (64 columns a block:
    several times faster on wide blocks); its rounding differs from the
    unblocked default, which the factors kept by the sketches use, so that
    their bytes stay as they are.
    """
    A = np.asarray(A, dtype=np.float64, order="F")
    m, d = A.shape
    with blas_threads(1):
        if blocked:
            qr, _tau, _work, info = lapack.dgeqrf(A, lwork=max(1, 64 * d), overwrite_a=1)
        else:
            qr, _tau, _work, info = lapack.dgeqrf(A, overwrite_a=1)
    if info != 0:  # pragma: no cover - LAPACK argument error
        raise RuntimeError(f"LAPACK dgeqrf failed with info={info}")
    k = min(m, d)
    R = np.triu(qr[:k, :])
    if k < d:
        R = np.vstack([R, np.zeros((d - k, d))])
    return np.ascontiguousarray(R)


def tp_qr_r(R: np.ndarray, B: np.ndarray, trap: int = 0) -> np.ndarray:
    """R factor of a Householder QR of ``[R; B]`` for an upper-triangular R (d x d), C-contiguous.

    LAPACK's triangular-pentagonal QR (dtpqrt) never touches R's zero lower
    triangle: ~2·m·d² flops for m rows of B against ~2·d²·(d + m - d/3) for
    dgeqrf on the stacked matrix — far less time at d >= 256 (``benchmarks/wide_bench.py``).  ``trap > 0``
    declares the last ``trap`` rows of B upper trapezoidal (LAPACK's L; ``trap = d``:
    B is a d x d triangular factor itself, as in a merge).  B is copied to float64 Fortran
    order at most TP_ENTRIES entries at a time; R is not modified.  Runs LAPACK
    single-threaded (see :func:`blas_threads`).  Not split over threads: scipy's
    dtpqrt holds the GIL (two calls in two threads take as long as in a row),
    and numpy's QR, which releases it, ignores R's triangle.
    """
    d = R.shape[0]
    m = B.shape[0]
    if d == 0 or m == 0:
        return np.ascontiguousarray(np.triu(R), dtype=np.float64)
    A = fortran_copy(R)
    nb = min(d, TP_NB)
    step = m if trap else max(1, TP_ENTRIES // d)
    with blas_threads(1):
        for a in range(0, m, step):
            Bf = fortran_copy(B[a : a + step])
            A, _b, _t, info = lapack.dtpqrt(trap, nb, A, Bf, overwrite_a=1, overwrite_b=1)
            if info != 0:  # pragma: no cover - LAPACK argument error
                raise RuntimeError(f"LAPACK dtpqrt failed with info={info}")
    return triu_c(A)


def fortran_copy(A: np.ndarray) -> np.ndarray:
    """A Fortran-ordered float64 copy of a 2-D array (what LAPACK takes in place); float32 is widened exactly.

    From TILED_COPY_MIN_DIM columns on by the tiled kernel
    (:func:`streamlev._kernels.transpose_into`), below by numpy: the same values either way.
    """
    if A.shape[1] < TILED_COPY_MIN_DIM:
        return np.array(A, dtype=np.float64, order="F")
    A = c_float(A)
    out = np.empty((A.shape[1], A.shape[0]))
    kernels.transpose_into(A, out, False)
    return out.T


def triu_c(A: np.ndarray) -> np.ndarray:
    """The upper triangle of a square float64 array (below it zeros), as a new C-ordered array."""
    if A.shape[1] < TILED_COPY_MIN_DIM or not A.flags.f_contiguous:
        return np.ascontiguousarray(np.triu(A), dtype=np.float64)
    out = np.empty(A.shape)
    kernels.transpose_into(A.T, out, True)
    return out


def merge_r(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Factor of the union of two row sets: R of the QR of ``[R1; R2]`` (both triangular: ~2/3·d³ flops)."""
    return tp_qr_r(R1, R2, trap=R1.shape[0])


def colnorms(R: np.ndarray) -> np.ndarray:
    """Euclidean norms of the columns (of each matrix of a stack), without overflow or underflow."""
    A = np.ascontiguousarray(R, dtype=np.float64)
    out = kernels.colnorms_batched(A.reshape((-1,) + A.shape[-2:]))
    return out.reshape(A.shape[:-2] + A.shape[-1:])


def tri_inv(R: np.ndarray) -> np.ndarray:
    """Inverse of a nonsingular upper-triangular matrix, C order.

    The same method as the stacked inverses of :meth:`streamlev._factor.Factor.rinv_many` — the back
    substitution :func:`streamlev._kernels.tri_inv_upper_batched` below
    TRI_INV_LAPACK_MIN_DIM, LAPACK's dtrtri from there on — so that a
    factor's cached inverse has the same bits however it was computed, and
    so have the updates and sketches built from it (serialised, restored and
    continued sketches stay byte-identical).
    """
    if not np.all(np.diag(R) != 0):  # pragma: no cover - callers check nonsingularity first
        raise np.linalg.LinAlgError("singular triangular factor")
    if R.shape[0] >= TRI_INV_LAPACK_MIN_DIM:
        with blas_threads(1):
            X, info = lapack.dtrtri(fortran_copy(R), lower=0, overwrite_c=1)
        if info != 0:  # pragma: no cover - nonsingularity was checked
            raise np.linalg.LinAlgError(f"LAPACK dtrtri failed with info={info}")
        return triu_c(X)
    return kernels.tri_inv_upper_batched(np.ascontiguousarray(R, dtype=np.float64)[None])[0]


def _chunk(d: int) -> int:
    return max(256, (CHUNK_ROWS * 64) // max(1, d))


def whiten(B: np.ndarray, Rinv: np.ndarray) -> np.ndarray:
    """Y = B R⁻¹ as one GEMM with the explicit triangular inverse (float64, C order).

    A GEMM is faster than the triangular solve (dtrsm) at these sizes, and the
    triangular inverse is componentwise accurate, so the scores keep QR-grade
    accuracy (tested on Vandermonde keys of condition 1e8).
    """
    if B.dtype != np.float64:
        B = B.astype(np.float64)
    return B @ Rinv


def whitened_sqnorms(B: np.ndarray, W: np.ndarray) -> np.ndarray:
    """‖b W‖² for every row of B (float64), split over the library's threads, in bounded chunks.

    Nothing of size m x d is kept: each thread multiplies chunks of its rows by
    W and keeps only the row norms.
    """
    m = B.shape[0]
    step = _chunk(B.shape[1])

    def part(a, b):
        out = np.empty(b - a)
        for s in range(a, b, step):
            e = min(b, s + step)
            out[s - a : e - a] = kernels.row_sqnorms(whiten(B[s:e], W))
        return out

    with blas_threads(1):
        res = split_run(part, m, parts_for(m))
    return res[0] if len(res) == 1 else np.concatenate(res)


def gram(B: np.ndarray, W: np.ndarray | None = None, dinv: np.ndarray | None = None):
    """(B W)ᵀ(B W) — or BᵀB without W — in float64, split over the library's threads.

    Each thread forms the Gram matrix of its contiguous rows and the parts
    are added in a fixed order.  BᵀB comes from the numba kernel
    :func:`streamlev._kernels.gram_upper` (float32 rows converted as they are
    read, so products and sums are float64 throughout), faster than numpy's
    ``X.T @ X`` per part at these widths (``benchmarks/kernels_bench.py``).  Rows
    wider than :data:`GRAM_KERNEL_MAX_DIM` go to one BLAS ``X.T @ X`` over
    the whole block instead.  (B W)ᵀ(B W) multiplies by W with numpy, a
    chunk at a time.

    With ``dinv`` (the column scaling of a :class:`Bound`) the screening norms
    ‖b ∘ dinv‖² of every row are computed in the same sweep, while each row
    is in cache, and ``(C, norms)`` is returned: one pass over the block
    instead of two.
    """
    m, d = B.shape
    step = _chunk(d)  # 4096 rows at d = 64: the float32 -> float64 copy stays in cache (benchmarks/kernels_bench.py)
    t = np.empty(m) if dinv is not None else None
    if B.dtype not in (np.float32, np.float64):
        B = np.asarray(B, dtype=np.float64)

    def blas_part(a, b, rows):
        C = np.zeros((d, d))
        for s in range(a, b, rows):
            e = min(b, s + rows)
            X = B[s:e]
            if t is not None:
                t[s:e] = kernels.scaled_row_sqnorms(c_float(X), dinv)
            X = X.astype(np.float64, copy=False)
            if W is not None:
                X = X @ W
            C += X.T @ X
        return C

    def part(a, b):
        if W is not None:
            return blas_part(a, b, step)
        C = np.zeros((d, d))
        if t is None:
            kernels.gram_upper(B[a:b], C)
        else:
            kernels.gram_upper_norms(B[a:b], C, dinv, t[a:b])
        return C

    if W is None and d > GRAM_KERNEL_MAX_DIM:
        # Wide rows: one BLAS symmetric rank-k update over the whole block, on BLAS's own threads when the
        # library may use several (streamlev.set_num_threads), else on one (float32 converted in chunks of at
        # most 8 MB).
        with contextlib.nullcontext() if get_num_threads() > 1 else blas_threads(1):
            C = blas_part(0, m, max(1, m) if B.dtype == np.float64 else max(256, (1 << 20) // d))
        return C if t is None else (C, t)
    parts = parts_for(m)
    if W is None and parts == 1:  # no BLAS call to hold at one thread
        res = [part(0, m)]
    else:
        with blas_threads(1):
            res = split_run(part, m, parts)
    C = res[0]
    for P in res[1:]:
        C += P
    if W is None:
        C += np.triu(C, 1).T
    return C if t is None else (C, t)


def c_float(B: np.ndarray) -> np.ndarray:
    """B itself when it is a C-ordered float32/float64 array (what the numba kernels take), else a float64 copy."""
    if B.flags.c_contiguous and B.dtype in (np.float32, np.float64):
        return B
    return np.ascontiguousarray(B, dtype=np.float64)


def max_abs(B: np.ndarray) -> float:
    """Largest |entry| of a float block (one vectorised pass when C-contiguous)."""
    if B.size == 0:
        return 0.0
    if B.flags.c_contiguous and B.dtype in (np.float32, np.float64):
        return float(kernels.scan_block(B)[1])
    return float(max(B.max(), -B.min()))
