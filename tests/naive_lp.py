"""Deliberately dumb ℓ_p oracles, written without any streamlev code.

- Lewis weights by the plain definition: the residual of w_j = (k_jᵀ(KᵀW^{1-2/p}K)⁺k_j)^{p/2}
  with np.linalg.pinv, a slow Cohen–Peng loop (p < 4) and, for p > 2, scipy's L-BFGS-B on the
  convex objective -log det(KᵀW^{1-2/p}K) + (1-2/p)·Σw (slogdet of an explicit Gram matrix).
- Exact ℓ_p sensitivity α_j = 1/min_{q·k_j=1} ‖Kq‖_p^p: scipy.optimize.linprog for p = 1 and
  scipy.optimize.minimize (BFGS on the p-norm over the affine set, several starts) for p > 1.
- Brute-force attention.
"""

import numpy as np
from scipy.optimize import linprog, minimize


def _svd_leverage(X):
    """Leverage scores from the SVD of the column-normalised X (matrix_rank tolerance)."""
    X = np.asarray(X, float)
    norms = np.linalg.norm(X, axis=0)
    Xn = X[:, norms > 0] / norms[norms > 0]
    U, S, _ = np.linalg.svd(Xn, full_matrices=False)
    r = int(np.sum(S > S[0] * max(X.shape) * np.finfo(float).eps))
    return np.sum(U[:, :r] ** 2, axis=1)


def lewis_residual(K, w, p):
    """max_j |log(w_j / (k_jᵀ(KᵀW^{1-2/p}K)⁺k_j)^{p/2})| over rows with w_j > 0.

    k_jᵀ(KᵀW^aK)⁺k_j = τ_j(W^{a/2}K) / w_j^a with τ from an SVD of the column-normalised,
    row-weighted keys (so column scales and heavy rows do not spoil the oracle).
    """
    K = np.asarray(K, float)
    w = np.asarray(w, float)
    a = 1.0 - 2.0 / p
    act = w > 0
    la = 0.5 * a * np.log(w[act])
    tau = _svd_leverage(K[act] * np.exp(la - la.max())[:, None])
    log_t = np.log(tau) - 2.0 * la
    return float(np.max(np.abs(np.log(w[act]) - 0.5 * p * log_t)))


def lewis_cohen_peng(K, p, iters=3000):
    """Plain Cohen–Peng iteration with an explicit pseudo-inverse (p < 4 only)."""
    K = np.asarray(K, float)
    n = K.shape[0]
    act = np.any(K != 0, axis=1)
    Ka = K[act]
    w = np.ones(act.sum())
    a = 1.0 - 2.0 / p
    for _ in range(iters):
        M = Ka.T @ (Ka * (w**a)[:, None])
        t = np.einsum("ij,jk,ik->i", Ka, np.linalg.pinv(M, hermitian=True), Ka)
        w_new = t ** (p / 2)
        if np.max(np.abs(np.log(w_new / w))) < 1e-13:
            w = w_new
            break
        w = w_new
    out = np.zeros(n)
    out[act] = w
    return out


def lewis_convex(K, p):
    """Lewis weights for p >= 2 from the Lewis ellipsoid: M* = argmin -log det M + (2/p)Σ(k_jᵀMk_j)^{p/2}.

    The objective is convex in M for p >= 2 and its stationarity condition is
    M⁻¹ = KᵀW^{1-2/p}K with w_j = (k_jᵀMk_j)^{p/2}.  Solved by BFGS over the Cholesky factor
    M = LLᵀ (d(d+1)/2 variables); returns w_j = (k_jᵀMk_j)^{p/2}.
    """
    K = np.asarray(K, float)
    n, d = K.shape
    il = np.tril_indices(d)

    def unpack(x):
        L = np.zeros((d, d))
        L[il] = x
        return L

    def f(x):
        L = unpack(x)
        Z = K @ L
        s2 = np.sum(Z * Z, axis=1)
        val = -2.0 * np.sum(np.log(np.abs(np.diag(L)))) + (2.0 / p) * np.sum(s2 ** (p / 2))
        G = 2.0 * K.T @ (Z * (s2 ** (p / 2 - 1))[:, None])
        G[np.diag_indices(d)] -= 2.0 / np.diag(L)
        return val, G[il]

    x0 = np.eye(d)[il] / np.sqrt(np.mean(np.sum(K * K, axis=1)))
    res = minimize(f, x0, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 20000})
    L = unpack(res.x)
    return np.sum((K @ L) ** 2, axis=1) ** (p / 2)


def sensitivity(K, j, p, starts=4, seed=0):
    """α_j = 1 / min_{q·k_j = 1} ‖Kq‖_p^p by scipy (LP for p = 1, BFGS with several starts otherwise).

    Returns (alpha, q_best) with q_best the optimising query (q·k_j = 1).
    """
    K = np.asarray(K, float)
    n, d = K.shape
    kj = K[j]
    if not np.any(kj):
        return 0.0, np.zeros(d)
    if p == 1.0:
        # variables [q (d), t (n)]; min Σt s.t. -t <= Kq <= t, k_j·q = 1
        c = np.concatenate([np.zeros(d), np.ones(n)])
        A_ub = np.block([[K, -np.eye(n)], [-K, -np.eye(n)]])
        b_ub = np.zeros(2 * n)
        A_eq = np.concatenate([kj, np.zeros(n)])[None, :]
        res = linprog(
            c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=[(None, None)] * d + [(0, None)] * n, method="highs"
        )
        q = res.x[:d]
        return 1.0 / np.sum(np.abs(K @ q)), q
    # affine parameterisation q = q0 + N c
    q0 = kj / (kj @ kj)
    _u, _s, vt = np.linalg.svd(kj[None, :])
    N = vt[1:].T
    rng = np.random.default_rng(seed)
    best = (np.inf, q0)

    def obj(c):
        z = K @ (q0 + N @ c)
        return np.sum(np.abs(z) ** p) ** (1.0 / p)

    for s in range(starts):
        c0 = np.zeros(d - 1) if s == 0 else rng.standard_normal(d - 1)
        if d == 1:
            val = obj(np.zeros(0))
            best = (val, q0)
            break
        res = minimize(obj, c0, method="BFGS", options={"gtol": 1e-12, "maxiter": 5000})
        if res.fun < best[0]:
            best = (res.fun, q0 + N @ res.x)
    return 1.0 / best[0] ** p, best[1]


def sensitivities(K, p, **kw):
    K = np.asarray(K, float)
    return np.array([sensitivity(K, j, p, **kw)[0] for j in range(K.shape[0])])


def power_attention(Q, K, p):
    """A = row-normalise(|QKᵀ|^p); all-zero rows stay zero."""
    S = np.abs(np.asarray(Q, float) @ np.asarray(K, float).T) ** p
    tot = S.sum(axis=-1, keepdims=True)
    return np.divide(S, tot, out=np.zeros_like(S), where=tot > 0)


def softmax_attention_output(Q, K, V, mask=None, scale=None):
    """Direct dense softmax attention with a boolean mask; rows with no kept key give zeros."""
    Q = np.asarray(Q, float)
    K = np.asarray(K, float)
    V = np.asarray(V, float)
    scale = 1.0 / np.sqrt(Q.shape[-1]) if scale is None else scale
    L = scale * (Q @ K.T)
    if mask is None:
        mask = np.ones(L.shape, bool)
    mask = np.broadcast_to(mask, L.shape)
    out = np.zeros((Q.shape[0], V.shape[1]))
    for i in range(Q.shape[0]):
        idx = np.flatnonzero(mask[i])
        if idx.size == 0:
            continue
        e = np.exp(L[i, idx] - L[i, idx].max())
        out[i] = (e / e.sum()) @ V[idx]
    return out


def power_attention_output(Q, K, V, p, mask=None):
    Q = np.asarray(Q, float)
    K = np.asarray(K, float)
    V = np.asarray(V, float)
    S = np.abs(Q @ K.T) ** p
    if mask is not None:
        S = S * np.broadcast_to(mask, S.shape)
    out = np.zeros((Q.shape[0], V.shape[1]))
    for i in range(Q.shape[0]):
        tot = S[i].sum()
        if tot > 0:
            out[i] = (S[i] / tot) @ V
    return out
