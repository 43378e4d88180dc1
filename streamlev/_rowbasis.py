"""An orthonormal basis of the row space of the keys, row-accurate at every row scale.

Lewis weights and ℓ_p sensitivities depend on the keys only through their row space, so
:mod:`streamlev.lewis` and the attention bounds work on such a basis U (K = U·B with B of full row
rank).  Two Cholesky-QR passes when the column-normalised keys are well conditioned, otherwise a
Householder QR with the rows in decreasing norm and the rank rule of
:func:`streamlev.leverage_scores` (docs/design.md, power attention).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

__all__ = ["CHOLQR_COND_MAX", "cholesky_qr2", "row_basis"]

_EPS64 = np.finfo(np.float64).eps


def row_basis(K: np.ndarray):
    """Orthonormal basis U (m x r) of the column space of the nonzero rows of K.

    Returns ``(U, active)`` with ``active`` the boolean mask of nonzero rows.  Lewis weights and
    ℓ_p sensitivities of K equal those of U (they only depend on the row space: K_active = U·B
    with B of full row rank).  Computed from the column-normalised keys: by two Cholesky-QR passes
    (:func:`cholesky_qr2`) when they are well conditioned, otherwise from a Householder QR (rows in
    decreasing norm) and an SVD of its small triangular factor, with the
    :func:`numpy.linalg.matrix_rank` tolerance judged after column scaling (the rule of
    :func:`streamlev.leverage_scores`).
    """
    active = np.any(K != 0, axis=1)
    Ka = np.asarray(K if active.all() else K[active], dtype=np.float64)
    m, d = Ka.shape
    if m == 0:
        return np.zeros((0, 0)), active
    # columns divided by their largest |entry| first, so that their squared norms neither overflow
    # nor underflow at any magnitude (keys near 1e±300 included)
    top = np.max(np.abs(Ka), axis=0)
    nz = top > 0
    Kn = (Ka if nz.all() else Ka[:, nz]) / top[nz]
    Kn /= np.sqrt(np.einsum("ij,ij->j", Kn, Kn))
    U = cholesky_qr2(Kn)
    if U is not None:
        return U, active
    # Householder QR with the rows in decreasing norm (Powell–Reid: then accurate row by row, also for tiny rows)
    order = np.argsort(-np.einsum("ij,ij->i", Kn, Kn), kind="stable")
    Q, R = np.linalg.qr(Kn[order], mode="reduced")
    Ur, S, _ = np.linalg.svd(R)
    tol = S[0] * max(m, d) * _EPS64
    r = int(np.count_nonzero(S > tol))
    U = np.empty((m, r))
    U[order] = Q @ Ur[:, :r]
    return U, active


#: Largest estimated condition number of the column-normalised keys for which :func:`row_basis` takes
#: Cholesky QR: the first pass then leaves a basis within ~eps·cond² = 2e-6 of orthonormal, which the
#: second pass makes orthonormal to rounding.
CHOLQR_COND_MAX = 1e5


def cholesky_qr2(Kn: np.ndarray) -> np.ndarray | None:
    """Orthonormal basis of range(Kn) by two Cholesky-QR passes, or None when Kn is not safely well conditioned.

    Pass one: R₁ = chol(KnᵀKn), U₁ = Kn·R₁⁻¹; pass two: the same on U₁.  Each pass multiplies by a
    fixed invertible d x d matrix, so row i of the result is row i of Kn (to rounding relative to
    that row) times one matrix: its span is that of Kn row by row, at every row scale.  Taken only
    when the first factor's estimated condition number is below :data:`CHOLQR_COND_MAX` (which
    also puts every singular value far above the rank tolerance of :func:`row_basis`, so the rank
    is d) and the first pass lands within 0.1 of orthonormal; None sends the caller to Householder.
    """
    m, d = Kn.shape
    if m < d or d == 0:
        return None
    R1, info = lapack.dpotrf(Kn.T @ Kn, lower=0, clean=1)
    if info != 0:
        return None
    rcond, info = lapack.dtrcon(R1, norm="1", uplo="U")
    # dtrcon's 1-norm estimate is within a factor d of the 2-norm condition number
    if info != 0 or not rcond * CHOLQR_COND_MAX > 1.0 or d * max(m, d) * _EPS64 > 1e-3 * rcond:
        return None
    W1, info = lapack.dtrtri(R1, lower=0)
    if info != 0:
        return None
    U1 = Kn @ np.triu(W1)
    C = U1.T @ U1
    if not np.linalg.norm(C - np.eye(d)) <= 0.1:  # (also False for NaN)
        return None
    R2, info = lapack.dpotrf(C, lower=0, clean=1)
    if info != 0:
        return None
    W2, info = lapack.dtrtri(R2, lower=0)
    if info != 0:
        return None
    return np.ascontiguousarray(U1 @ np.triu(W2))
