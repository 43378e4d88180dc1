"""Exact leverage scores and the ε-universal set, for keys held in memory.

Guarantee (LevAttention, p = 2): with A = row-normalise((QKᵀ)∘²), every entry
A_ij >= eps has j in ``universal_set(K, eps)``, for every query matrix Q, and
the set has at most rank(K)/eps members.  The worst-case query for key j,
q_j = (KᵀK)⁺k_j, attains A_jj = τ_j, so no smaller Q-independent set exists.
"""

from __future__ import annotations

import numpy as np

from ._factor import Factor, at_least
from ._validate import as_keys, check_eps, check_p, check_ridge

__all__ = ["leverage_scores", "universal_set", "DEFAULT_BLOCK"]

#: Rows per block for in-memory factorisation (chosen by benchmarks/run.py).
DEFAULT_BLOCK = 16384


def _blocks(n: int, block: int):
    for start in range(0, n, block):
        yield start, min(n, start + block)


def _scores_validated(K: np.ndarray, ridge: float, block: int = DEFAULT_BLOCK) -> np.ndarray:
    n, d = K.shape
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    fac = Factor(d, ridge)
    for a, b in _blocks(n, block):
        fac.update(K[a:b])  # Householder or whitened updates, see Factor.update
    out[:] = fac.scores(K)  # threads over row ranges, bounded temporaries
    np.clip(out, 0.0, 1.0, out=out)
    return out


def leverage_scores(K, *, ridge: float = 0.0) -> np.ndarray:
    """Exact (ridge) leverage scores of the rows of K.

    Parameters
    ----------
    K : array_like, shape (n, d)
        Keys, one per row.  float32 keys are read as float32 and accumulated in
        float64; integer and bool keys are converted to float64.
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
    Computed from a triangular factor kept by blocked Householder QR (TSQR) or,
    once it is well conditioned, by whitened block updates (see
    :meth:`streamlev._factor.Factor.update`), then one multiplication by
    the inverse factor per block — never from the Gram matrix KᵀK and never from
    an unscaled SVD.  Memory: the input, the output, one block and a
    d x d factor.  Accuracy (see tests/test_exact.py): relative error
    <= 1e-8 for well-conditioned keys and <= 1e-6 up to condition number 1e8
    or column scales spanning 1e-6..1e6, against a float64 SVD of the
    column-normalised matrix.
    """
    K = as_keys(K)
    ridge = check_ridge(ridge)
    return _scores_validated(K, ridge)


def universal_set(K, eps, *, p: float = 2.0, ridge: float = 0.0) -> np.ndarray:
    """The ε-universal set of LevAttention: keys that some query can attend to with weight >= eps.

    Parameters
    ----------
    K : array_like, shape (n, d)
        Keys.
    eps : float in (0, 1]
        Attention threshold.
    p : float, default 2.0
        Exponent of the attention f(x) = |x|^p.  ``p = 2`` uses leverage
        scores; other values use ℓ_p Lewis weights (see :mod:`streamlev.lewis`).
    ridge : float, default 0.0
        λ >= 0 for ridge leverage scores (``p = 2`` only).

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices ``{i : τ_i >= eps}``.  A computed score within a relative
        ``THRESHOLD_RTOL`` (1e-10) below eps counts as reaching it, so rounding
        never drops a key whose exact score equals eps.  For p = 2 and every query matrix
        Q, each entry A_ij >= eps of A = row-normalise((QKᵀ)∘²) has j in the
        set, and the set has at most rank(K)/eps members.
    """
    eps = check_eps(eps)
    p = check_p(p)
    if p != 2.0:
        from . import lewis  # noqa: PLC0415 - optional path, imported on demand

        return lewis.universal_set_p(K, eps, p=p, ridge=ridge)
    K = as_keys(K)
    ridge = check_ridge(ridge)
    tau = _scores_validated(K, ridge)
    return np.flatnonzero(at_least(tau, eps)).astype(np.int64)
