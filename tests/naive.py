"""Deliberately dumb oracles, written without any streamlev code.

Every fast path of the library is tested against these.  They favour
obviousness over speed: a float64 SVD of the column-normalised matrix for
leverage scores, an explicit inverse for ridge scores, brute force for
attention entries.
"""

import numpy as np

EPS64 = np.finfo(np.float64).eps


def column_normalise(K):
    K = np.asarray(K, dtype=np.float64)
    norms = np.linalg.norm(K, axis=0)
    keep = norms > 0
    return K[:, keep] / norms[keep]


def rank(K):
    K = np.asarray(K, dtype=np.float64)
    if K.shape[0] == 0:
        return 0
    Kn = column_normalise(K)
    if Kn.shape[1] == 0:
        return 0
    S = np.linalg.svd(Kn, compute_uv=False)
    return int(np.sum(S > S[0] * max(K.shape) * EPS64))


def leverage(K):
    """τ_i = ‖U_r[i]‖² from the SVD of the column-normalised K (matrix_rank tolerance)."""
    K = np.asarray(K, dtype=np.float64)
    n = K.shape[0]
    if n == 0:
        return np.zeros(0)
    Kn = column_normalise(K)
    if Kn.shape[1] == 0:
        return np.zeros(n)
    U, S, _ = np.linalg.svd(Kn, full_matrices=False)
    r = int(np.sum(S > S[0] * max(K.shape) * EPS64))
    return np.sum(U[:, :r] ** 2, axis=1)


def leverage_pinv(K):
    """τ_i = k_iᵀ (KᵀK)⁺ k_i via np.linalg.pinv of the column-normalised matrix."""
    Kn = column_normalise(K)
    P = np.linalg.pinv(Kn)  # (d, n)
    return np.einsum("ij,ji->i", Kn, P)


def ridge_leverage(K, lam):
    """τ_i = k_iᵀ (KᵀK + λI)⁻¹ k_i via an SVD of K (no column scaling: ridge is not scale invariant)."""
    K = np.asarray(K, dtype=np.float64)
    U, S, _ = np.linalg.svd(K, full_matrices=False)
    return np.sum(U**2 * (S**2 / (S**2 + lam)), axis=1)


def universal_set(K, eps, lam=0.0):
    t = leverage(K) if lam == 0 else ridge_leverage(K, lam)
    return np.flatnonzero(t >= eps)


def power_attention(Q, K, p=2.0):
    """A = row-normalise(|QKᵀ|^p); rows with all-zero logits become zero rows."""
    S = np.abs(np.asarray(Q, float) @ np.asarray(K, float).T) ** p
    tot = S.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        A = np.where(tot > 0, S / np.where(tot > 0, tot, 1), 0.0)
    return A


def worst_case_queries(K):
    """q_j = (KᵀK)⁺ k_j for every j, as the rows of an (n, d) matrix, via np.linalg.pinv(K)."""
    K = np.asarray(K, dtype=np.float64)
    P = np.linalg.pinv(K)  # (d, n); (KᵀK)⁺ = P Pᵀ
    return (P @ (P.T @ K.T)).T  # (n, d): row j is q_j


def assert_set_matches(U, tau, eps, rtol=1e-8):
    """U must contain every j with τ_j >= eps·(1+rtol) and nothing with τ_j < eps·(1-rtol).

    Keys whose oracle score lies within rtol of eps are ties that rounding decides
    either way; both answers are accepted.
    """
    U = np.asarray(U)
    tau = np.asarray(tau)
    must = np.flatnonzero(tau >= eps * (1 + rtol))
    may = np.flatnonzero(tau >= eps * (1 - rtol))
    missing = np.setdiff1d(must, U)
    extra = np.setdiff1d(U, may)
    assert missing.size == 0, f"keys {missing[:10]} with scores {tau[missing[:10]]} >= eps={eps} are missing"
    assert extra.size == 0, f"keys {extra[:10]} with scores {tau[extra[:10]]} < eps={eps} were kept"


def assert_same_set(U, V, tau, eps, rtol=1e-8):
    """Two computed sets agree except on ties: keys whose oracle score lies within rtol of eps.

    Different block sizes or merge orders round differently, so at a tie one
    order may keep a key that another drops; anywhere else they must agree.
    """
    tau = np.asarray(tau)
    diff = np.setxor1d(np.asarray(U), np.asarray(V))
    off = diff[np.abs(tau[diff] - eps) > rtol * eps]
    assert off.size == 0, f"keys {off[:10]} with scores {tau[off[:10]]} (eps={eps}) are in one set only"


def online_ridge_u(K, lam):
    """u_i = k_iᵀ(λI + Σ_{j<i} k_j k_jᵀ)⁻¹k_i, one row at a time, via the SVD of [K_<i; √λ·I].

    The augmented SVD avoids forming λI + KᵀK (whose solve loses accuracy when
    rows are large); it is O(n·(n+d)·d²) and meant for small test matrices.
    """
    K = np.asarray(K, dtype=np.float64)
    n, d = K.shape
    u = np.empty(n)
    for i in range(n):
        A = np.vstack([K[:i], np.sqrt(lam) * np.eye(d)])
        _, S, Vt = np.linalg.svd(A, full_matrices=False)
        u[i] = np.sum((Vt @ K[i] / S) ** 2)
    return u


def ridge_logdet(K, lam):
    """ln det(I + KᵀK/λ) from the singular values of K."""
    S = np.linalg.svd(np.asarray(K, dtype=np.float64), compute_uv=False)
    return float(np.sum(np.log1p(S**2 / lam)))


def factor_rank(R, n):
    """Rank rule of a d x d factor of n rows: singular values of the column-normalised R above σ_max·max(n, d)·eps."""
    R = np.asarray(R, dtype=np.float64)
    Rn = column_normalise(R)
    if Rn.shape[1] == 0:
        return 0
    S = np.linalg.svd(Rn, compute_uv=False)
    return int(np.sum(S > S[0] * max(n, R.shape[0]) * EPS64))
