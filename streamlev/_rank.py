"""A certified lower bound on the numerical rank of a triangular factor, without its SVD.

The rank rule of :class:`streamlev._factor.Factor` (λ = 0) counts the singular
values of the column-normalised factor ``Rs = R D⁻¹`` (zero columns dropped)
that exceed ``tol = S[0]·max(n, d)·eps``, S computed by LAPACK's SVD.  On a
wide stream the factor is rank-deficient for its first d rows, and the online
sketch asks at each new state whether the rank is at least a given count
(whether an eviction can pay); one d x d SVD per state is the largest cost of
that phase.  :func:`rank_lower_bound` answers from one triangular inverse
instead (about d³/3 flops against the SVD's ~4·d³ sequential ones) and is
conservative: it never exceeds the rank the SVD rule gives, and when it is too
small to decide, the caller computes the SVD (docs/design.md, the section on
numerics).

Why it is a lower bound.  Deleting rows or columns of a matrix never raises
its k-th largest singular value.  For any k non-zero columns J of R, the
principal block ``Rs[J, J]`` is upper triangular and comes from ``Rs`` by
deleting rows and columns, so σ_k(Rs) >= σ_min(Rs[J, J]) >= 1/‖Rs[J, J]⁻¹‖_F.
For the leading blocks T_k of one principal block T, one inverse X gives
every ``T_k⁻¹ = X[:k, :k]`` (inverses of upper-triangular matrices nest), so
``‖T_k⁻¹‖_F²`` is a cumulative sum of X's column sums of squares.

Margins (why the SVD rule must count σ_k).  The computed X satisfies
``|X T - I| <= c_k·u·|X||T|`` (column-wise triangular inversion, c_k ~ k; we
allow k²), hence ``‖T_k⁻¹‖_F <= ‖X_k‖_F/(1 - ρ_k)`` with
``ρ_k = k²·u·‖X_k‖_F·‖T_k‖_F`` and ``‖T_k‖_F <= 1.01·sqrt(k)``; below the
threshold that follows, ρ_k <= 0.03 (k <= nz <= d), so σ_k(Rs) >= 1/(4‖X_k‖_F)
(a factor 2 to spare covers rounding in the norm).
The SVD is backward stable: its values are those of ``Rs + E`` up to
relative O(d·u), with ``‖E‖ <= p·u·‖Rs‖_F``; we allow p = 4·d², far above
what Householder bidiagonalisation can produce in practice (LAPACK states
p as a modestly growing function of the dimensions).  With ``‖Rs‖_F <= sqrt(nz)``
(unit columns) the computed S_k exceeds the computed tolerance whenever
``σ_k(Rs) > 2·1.01·sqrt(nz)·(4·d² + max(n, d))·u``, the certification threshold.
At d = 2048 that is ~3e-7, against ~1e-3 for the smallest singular value of
the column-normalised factor of a few thousand Gaussian keys.  Columns that
are exactly or nearly dependent on earlier ones (diagonal below DIAG_MIN of
their norm) are left out of the block, so they cost one unit of the bound
each; the caller falls back to the SVD only when the bound is short of the
count it asks about.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from ._threads import blas_threads

__all__ = ["certification_threshold", "rank_lower_bound"]

_U = np.finfo(np.float64).eps
#: Columns whose diagonal entry is below this fraction of their norm (nearly in the span of the columns before
#: them, or zero) are left out of the certifying block: they would only end its certified prefix early.
DIAG_MIN = 1e-8


def certification_threshold(d: int, n: int, nz: int) -> float:
    """The σ a leading block of the column-normalised factor must provably exceed to count toward the rank.

    ``d``: the factor's dimension, ``n``: rows summarised, ``nz``: non-zero columns.
    """
    return 2.0 * 1.01 * np.sqrt(nz) * (4.0 * float(d) ** 2 + max(n, d)) * _U


def rank_lower_bound(R: np.ndarray, scale: np.ndarray, n: int, nz: int) -> int:
    """A number L <= the SVD rank rule's rank of the factor R (d x d, upper triangular) of n rows.

    ``scale``: the column norms of R (1 where a column is zero), by which the
    rank rule divides R's columns — the same values, so the block is bit for
    bit part of the matrix the SVD would see.  ``nz``: the number of non-zero
    columns.  The columns J whose diagonal entry is at least DIAG_MIN of their
    norm (at most min(n, d) of them: the rank cannot exceed n) form the
    principal block ``T = Rs[J, J]``, upper triangular; its leading blocks
    certify the rank, one triangular inverse for all.  Returns 0 when nothing
    can be certified.
    """
    d = R.shape[0]
    ratio = np.abs(np.diag(R)) / scale
    J = np.flatnonzero(ratio >= DIAG_MIN)[: min(n, d)]
    kb = J.size
    if kb == 0:
        return 0
    T = (R[J[:, None], J] if kb < d else np.array(R, dtype=np.float64)) / scale[J]
    with blas_threads(1):
        Xt, info = lapack.dtrtri(T.T, lower=1, overwrite_c=1)  # (Tᵀ)⁻¹ = (T⁻¹)ᵀ; T.T is Fortran-ordered, no copy
    if info != 0:  # pragma: no cover - the diagonal of T is non-zero
        return 0
    with np.errstate(over="ignore", invalid="ignore"):
        colsq = np.einsum("ij,ij->i", Xt, Xt)  # column sums of squares of T⁻¹ (its lower triangle is zero)
        F = np.sqrt(np.cumsum(colsq))  # ‖T_k⁻¹‖_F for k = 1..kb (computed); inf or NaN past a breakdown
        ok = F * (4.0 * certification_threshold(d, n, nz)) < 1.0
    # F is non-decreasing in k, so the certified k form a prefix; stop at the first failure (NaN fails too).
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if bad.size else kb
