"""numba kernels: arrays in, arrays out, no validation.

Every kernel is compiled through the one :func:`jit` wrapper below, which holds
all numba options: ``cache=True`` (compiled code is reused across processes),
``nogil=True``, and no ``fastmath`` — fastmath would let LLVM assume there are
no NaN/inf values and reassociate sums, which breaks the library's non-finite
checks and its accuracy targets.  Explicit signatures compile float64 (and,
where keys are read, float32) versions eagerly on first import of this module.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["jit", "tri_inv_upper_batched", "row_sqnorms", "scaled_row_sqnorms", "scan_block"]


def jit(signature):
    """The single njit wrapper of streamlev (options documented in the module docstring)."""
    return numba.njit(signature, cache=True, nogil=True, fastmath=False, error_model="numpy")


def _arr(dtype, ndim, readonly=False):
    return numba.types.Array(dtype, ndim, "C", readonly=readonly)


def _block_signatures():
    """(m, d) key blocks of float32 or float64, writable or read-only (memory-mapped files)."""
    return [numba.float64[::1](_arr(dt, 2, ro), numba.float64[::1])
            for dt in (numba.float64, numba.float32) for ro in (False, True)]


@jit(["float64[:, :, ::1](float64[:, :, ::1])"])
def tri_inv_upper_batched(U):  # pragma: no cover - compiled
    """Inverses of a stack of nonsingular upper-triangular matrices (back substitution)."""
    H, d, _ = U.shape
    out = np.zeros_like(U)
    for h in range(H):
        for j in range(d - 1, -1, -1):
            out[h, j, j] = 1.0 / U[h, j, j]
            for i in range(j - 1, -1, -1):
                s = 0.0
                for k in range(i + 1, j + 1):
                    s += U[h, i, k] * out[h, k, j]
                out[h, i, j] = -s / U[h, i, i]
    return out


@jit([numba.float64[::1](_arr(dt, 2, ro)) for dt in (numba.float64, numba.float32) for ro in (False, True)])
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


@jit(_block_signatures())
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


@jit([numba.types.Tuple((numba.int64, numba.float64))(_arr(dt, 2, ro))
      for dt in (numba.float64, numba.float32) for ro in (False, True)])
def scan_block(X):  # pragma: no cover - compiled
    """(first row holding NaN/±inf or -1, largest |x|), in one branch-free (vectorisable) pass."""
    m, d = X.shape
    big = 0.0
    poison = 0.0  # v*0 is 0 for finite v and NaN for NaN/±inf
    for i in range(m):
        for j in range(d):
            v = np.float64(X[i, j])
            poison += v * 0.0
            big = max(big, abs(v))
    if poison == 0.0:
        return -1, big
    for i in range(m):  # rare path: locate the first bad row
        for j in range(d):
            if not np.isfinite(X[i, j]):
                return i, big
    return -1, big  # unreachable
