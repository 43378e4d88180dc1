"""Exact leverage scores and the ε-universal set, for keys held in memory.

Guarantee (LevAttention, p = 2): with A = row-normalise((QKᵀ)∘²), every entry
A_ij >= eps has j in ``universal_set(K, eps)``, for every query matrix Q, and
the set has at most rank(K)/eps members.  The worst-case query for key j,
q_j = (KᵀK)⁺k_j, attains A_jj = τ_j, so no smaller Q-independent set exists.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._tuning import SMALL_ENTRIES
from ._validate import as_keys, check_eps, check_p, check_ridge

__all__ = ["leverage_scores", "universal_set", "DEFAULT_BLOCK"]

#: The membership tolerance of :func:`streamlev._factor.at_least` (the same constant; a test checks they agree).
THRESHOLD_RTOL = 1e-10

#: Rows per block for in-memory factorisation (chosen by benchmarks/run.py).
DEFAULT_BLOCK = 16384


def _blocks(n: int, block: int):
    for start in range(0, n, block):
        yield start, min(n, start + block)


def _scores_small(K: np.ndarray) -> np.ndarray:
    """Leverage scores of a small K from the SVD of its column-normalised copy, by the documented rank rule.

    Columns are first divided by their largest magnitude, so their norms
    neither overflow nor underflow at any scale; zero columns are dropped
    (they change no score).  Singular values <= σ_max·max(n, d)·machine-eps
    count as zero, as in :func:`leverage_scores`.
    """
    from ._threads import blas_threads  # noqa: PLC0415

    n, d = K.shape
    X = np.asarray(K, dtype=np.float64)
    top = np.max(np.abs(X), axis=0)
    nz = top > 0
    if not nz.any():
        return np.zeros(n)
    X = X[:, nz] / top[nz]
    X /= np.sqrt(np.einsum("ij,ij->j", X, X))
    with blas_threads(1):  # small LAPACK calls run slower on several BLAS threads, most of all on a busy machine
        U, S, _ = np.linalg.svd(X, full_matrices=False)
    r = int(np.count_nonzero(S > S[0] * max(n, d) * np.finfo(np.float64).eps))
    U = U[:, :r]
    return np.einsum("ij,ij->i", U, U)


def _tiny_rule(ridge: float) -> str:
    """What to do with columns too small to factorise (``_validate.MIN_MAGNITUDE``).

    They are rescaled by exact powers of two when the scores do not depend on
    column scales (ridge = 0); ridge scores do, so such columns are refused.
    """
    return "rescale" if ridge == 0.0 else "refuse"


def _rows_independent(K: np.ndarray) -> bool:
    """Whether the n <= d rows of K are certified linearly independent, without an SVD.

    One blocked Householder QR of (a copy of) K, about as fast as numpy's,
    then the certified rank lower bound of its factor
    (:meth:`streamlev._factor.Factor.rows_independent`).  When it cannot tell,
    the caller scores K by the usual route, from the start.
    """
    from ._factor import Factor  # noqa: PLC0415
    from ._linalg import qr_r  # noqa: PLC0415

    n, d = K.shape
    fac = Factor(d)
    fac.set_state(qr_r(np.array(K, dtype=np.float64, order="F"), blocked=True), n)  # a copy: dgeqrf overwrites it
    return fac.rows_independent()


def _scores_validated(K: np.ndarray, ridge: float, block: int = DEFAULT_BLOCK) -> np.ndarray:
    n, d = K.shape
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    if ridge == 0.0 and n * d <= SMALL_ENTRIES:
        out[:] = _scores_small(K)
        np.clip(out, 0.0, 1.0, out=out)
        return out
    from ._factor import Factor  # noqa: PLC0415 - loaded when needed (scipy), not for small keys

    if ridge == 0.0 and n <= d and _rows_independent(K):
        out[:] = 1.0  # n <= d rows certified independent: every score is exactly 1
        return out
    fac = Factor(d, ridge)
    for a, b in _blocks(n, block):
        fac.update(K[a:b])  # Householder or whitened updates, see Factor.update
    out[:] = fac.scores(K)  # threads over row ranges, bounded temporaries
    np.clip(out, 0.0, 1.0, out=out)
    return out


def leverage_scores(K: ArrayLike, *, ridge: float = 0.0) -> np.ndarray:
    """Exact (ridge) leverage scores of the rows of K.

    Parameters
    ----------
    K : array_like, shape (n, d)
        Keys, one per row.  float32 keys are read as float32 and accumulated in
        float64; integer, bool and float16 keys are converted to float64 (exactly);
        extended precision (float128 / longdouble) is rounded to float64 with a
        :class:`streamlev._validate.PrecisionWarning` when that changes a value.
        Masked arrays are refused when an entry is masked (pass ``K.filled(v)`` or
        ``np.ma.compress_rows(K)``).  A 1-D array is refused here (its dimension
        would be a guess); the ``update`` methods of the sketches, whose dimension
        is fixed, read a 1-D array as one key.
    ridge : float, default 0.0
        λ >= 0.  ``ridge > 0`` gives τ_i = k_iᵀ(KᵀK + λI)⁻¹k_i.  ``ridge = 0``
        gives τ_i = k_iᵀ(KᵀK)⁺k_i, where singular values of the
        column-normalised K that are <= σ_max·max(n, d)·machine-eps count as
        zero (the :func:`numpy.linalg.matrix_rank` rule, applied after column
        scaling so that it does not depend on the units of the columns).

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
        Scores in [0, 1]; for ``ridge = 0`` they sum to rank(K).

    Notes
    -----
    Keys of at most :data:`SMALL_ENTRIES` entries (without ridge) are scored
    from one SVD of the column-normalised matrix, with the rank rule above.
    Larger keys: computed from a triangular factor kept by blocked Householder QR (TSQR) or,
    once it is well conditioned, by whitened block updates (see
    :meth:`streamlev._factor.Factor.update`), then one multiplication by
    the inverse factor per block — never from the Gram matrix KᵀK and never from
    an unscaled SVD.  At most d rows (ridge = 0) are first certified linearly
    independent where they are (a Householder QR and a certified lower bound on
    its rank, docs/design.md, the section on numerics): their scores are then
    exactly 1, with no SVD.  Memory: the input, the output, one block and a
    d x d factor.  Accuracy (see tests/test_exact.py): relative error
    <= 1e-8 for well-conditioned keys and <= 1e-6 up to condition number 1e8
    or column scales spanning 1e-6..1e6, against a float64 SVD of the
    column-normalised matrix.
    """
    ridge = check_ridge(ridge)
    K = as_keys(K, tiny=_tiny_rule(ridge))
    return _scores_validated(K, ridge)


def universal_set(K: ArrayLike, eps: float, *, p: float = 2.0, ridge: float = 0.0) -> np.ndarray:
    """The ε-universal set of LevAttention for p = 2: keys with (ridge) leverage score >= eps.

    Parameters
    ----------
    K : array_like, shape (n, d)
        Keys.
    eps : float in (0, 1]
        Attention threshold.
    p : float, default 2.0
        Only 2 (leverage scores); :func:`streamlev.universal_set` takes any p.
    ridge : float, default 0.0
        λ >= 0 for ridge leverage scores.

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices ``{i : τ_i >= eps}``.  A computed score within a relative
        ``THRESHOLD_RTOL`` (1e-10) below eps counts as reaching it, so rounding
        never drops a key whose exact score equals eps.  For every query matrix
        Q, each entry A_ij >= eps of A = row-normalise((QKᵀ)∘²) has j in the
        set, and the set has at most rank(K)/eps members.
    """
    eps = check_eps(eps)
    if check_p(p) != 2.0:
        raise ValueError(
            f"streamlev.exact.universal_set computes leverage scores (p = 2), got p={p}; "
            f"use streamlev.universal_set(K, eps, p={p}) for power attention"
        )
    ridge = check_ridge(ridge)
    K = as_keys(K, tiny=_tiny_rule(ridge))
    tau = _scores_validated(K, ridge)
    return np.flatnonzero(tau >= eps * (1.0 - THRESHOLD_RTOL)).astype(np.int64)  # _factor.at_least's rule
