"""ℓ_p Lewis weights, exact ℓ_p sensitivities and the universal sets of f(x) = |x|^p attention.

Facts used (docs/design.md, "Power attention" and "Prefix monotonicity").  For keys K (n x d) and a
query q, power attention gives key j the weight A_j(q) = |q·k_j|^p / Σ_i |q·k_i|^p.  Its supremum
over q is the ℓ_p *sensitivity*

    α_j = max_q |q·k_j|^p / ‖Kq‖_p^p = 1 / min_{q·k_j = 1} ‖Kq‖_p^p ,

so {j : α_j >= eps} is the smallest query-independent set holding every entry A_ij >= eps.
Sensitivities only decrease when rows are added, so the sensitivity of a key with respect to any
subset of the rows upper-bounds its sensitivity with respect to all of them.

The Lewis weights w (w_j = τ_j(W^{1/2-1/p} K), Σ w = rank K) bound them: α_j <= c_p·w_j with
c_p = 1 for p <= 2 and c_p = rank^{p/2-1} (<= d^{p/2-1}) for p > 2.  This module never relies on
the iterate being exactly converged for that bound: :func:`lewis_bound` evaluates a bound that holds
for *any* positive weight vector v (it equals c_p·w_j at the fixed point):

* p <= 2:  α_j <= u_j · max_i (u_i / v_i)^{2/p-1},
* p > 2:   α_j <= u_j · (Σ_i v_i)^{p/2-1},

where u_j = (k_jᵀ(KᵀV^{1-2/p}K)⁺k_j)^{p/2} is one Cohen–Peng update of v.  (Proof: Cauchy–Schwarz in
the metric KᵀV^{1-2/p}K, then Hölder; see the docstring of :func:`lewis_bound`.)

For p >= 1 the sensitivity is a convex problem; :func:`sensitivity_bounds` solves it by a smoothed
Newton method and returns *certificates*: a query q with |q·k_j|^p/‖Kq‖_p^p (a lower bound) and a
dual vector y with Kᵀy = k_j, whose ‖y‖_{p'}^p is an upper bound (weak duality:
1 = q·k_j = yᵀKq <= ‖y‖_{p'}‖Kq‖_p).  A key is dropped only on an upper bound below eps, so no key
whose sensitivity reaches eps is ever dropped, whatever the optimiser does.

All leverage scores come from :func:`streamlev.exact.leverage_scores` (blocked Householder QR),
never from an inverted Gram matrix.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import cho_solve, lapack

from ._factor import THRESHOLD_RTOL, at_least
from ._rowbasis import CHOLQR_COND_MAX, row_basis
from ._threads import blas_threads
from ._tuning import CERT_BATCH, SCREEN_TOL
from ._validate import as_keys, check_eps, check_p, check_ridge
from .exact import leverage_scores
from .exact import universal_set as _leverage_universal_set

__all__ = [
    "ConvergenceError",
    "CostError",
    "lewis_weights",
    "lewis_bound",
    "lp_sensitivities",
    "sensitivity_bounds",
    "universal_set_p",
]

_EPS64 = np.finfo(np.float64).eps
_DEFAULT_TOL = 1e-9
_DEFAULT_MAX_ITER = 1000
#: Largest p handled by the Cohen–Peng fixed point; larger p use the convex descent method.
_CP_MAX_P = 3.0


def _one_blas_thread(func):
    """Run ``func`` with BLAS limited to one thread.

    The work here is many small factorisations (n x d QRs, r x r solves), and small LAPACK calls
    run many times slower on several busy BLAS threads than on one (docs/design.md, "Numerics:
    tiers and error bounds").  The controller is created once, on first use.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with blas_threads(1):  # the library's one thread controller (streamlev._threads)
            return func(*args, **kwargs)

    return wrapper


class ConvergenceError(RuntimeError):
    """An iterative method reached ``max_iter`` before meeting its tolerance."""


# ----------------------------------------------------------------------------------------------
# Row-space basis
# ----------------------------------------------------------------------------------------------


def _weighted_leverage(U: np.ndarray, log_s: np.ndarray) -> np.ndarray:
    """Leverage scores of diag(s)·U with s = exp(log_s), via streamlev.exact.leverage_scores.

    The scale is normalised by its maximum (leverage is invariant to a global factor) and rows
    are sorted by decreasing scale before the QR (Powell–Reid: Householder QR of strongly
    row-scaled matrices is accurate when the heavy rows come first).
    """
    ls = log_s - np.max(log_s)
    order = np.argsort(-ls, kind="stable")
    s = np.exp(ls[order])
    tau_sorted = leverage_scores(U[order] * s[:, None])
    tau = np.empty_like(tau_sorted)
    tau[order] = tau_sorted
    return tau


def _log_det_weighted(U: np.ndarray, log_s: np.ndarray) -> float:
    """Return log det(Uᵀ S² U) from the R of a Householder QR (no Gram matrix)."""
    top = float(np.max(log_s))
    s = np.exp(log_s - top)  # log det(UᵀS²U) = log det(Uᵀ(S/c)²U) + 2r·log c
    R = np.linalg.qr(U * s[:, None], mode="r")
    diag = np.abs(np.diag(R))
    if np.any(diag == 0):
        return -math.inf
    return float(2.0 * np.sum(np.log(diag)) + 2.0 * U.shape[1] * top)


# ----------------------------------------------------------------------------------------------
# Lewis weights
# ----------------------------------------------------------------------------------------------


def _lewis_active(U: np.ndarray, p: float, tol: float, max_iter: int):
    """Lewis weights of the full-column-rank U (all rows nonzero).

    Returns ``(tau, v)``: ``tau`` = leverage of W^{1/2-1/p}U at the final iterate w = exp(v)
    (sums to rank exactly), and ``v`` = log of the final iterate, with max|log tau - v| <= tol.
    """
    m = U.shape[0]
    tau = np.einsum("ij,ij->i", U, U)  # the leverage scores of U, whose columns are orthonormal
    if p == 2.0 or m == 0:
        return tau, np.log(np.maximum(tau, np.finfo(float).tiny))
    a = 1.0 - 2.0 / p
    v = np.log(tau)
    if p <= _CP_MAX_P:
        for _, (tau_k, v_k, res) in zip(range(max_iter), _cohen_peng(U, p, v), strict=False):
            if res <= tol:
                return tau_k, v_k
        raise ConvergenceError(
            f"Lewis weights for p={p} did not reach tol={tol} in max_iter={max_iter} "
            f"Cohen-Peng iterations (rate |1-p/2| = {abs(1 - p / 2):.3g}); raise max_iter or tol"
        )

    # p > 3 (necessarily for p >= 4): F(w) = -log det(Uᵀ W^a U) + a Σ w is convex in w (W^a is
    # concave for 0 < a < 1, log det is concave and increasing); its stationary point is
    # w = τ(W^{1/2-1/p}U), the
    # Lewis weights.  In v = log w the direction Δ = log τ - v is a descent direction
    # (∇_v F · Δ = -a Σ (τ - w)(log τ - log w) <= 0).  Steps start at η = 2p/(p+2), which makes
    # the linearised iteration contract with rate (p-2)/(p+2), and back-track (Armijo) on F far
    # from the optimum; close to it (predicted decrease below rounding) the full step is taken.
    eta0 = 2.0 * p / (p + 2.0)
    tau = _weighted_leverage(U, 0.5 * a * v)
    F = _log_det_weighted(U, 0.5 * a * v) * -1.0 + a * float(np.sum(np.exp(v)))
    for _ in range(max_iter):
        res = np.log(tau) - v
        if float(np.max(np.abs(res))) <= tol:
            return tau, v
        w = np.exp(v)
        slope = a * float(np.dot(w - tau, res))  # = ∇_v F · Δ <= 0
        eta = eta0
        while True:
            v_try = v + eta * res
            F_try = -_log_det_weighted(U, 0.5 * a * v_try) + a * float(np.sum(np.exp(v_try)))
            if abs(eta * slope) <= 1e-12 * (abs(F) + 1.0) or F_try <= F + 1e-4 * eta * slope:
                break
            eta *= 0.5
            if eta < 1e-12:
                raise ConvergenceError(f"Lewis weights for p={p}: line search failed")
        v, F = v_try, F_try
        tau = _weighted_leverage(U, 0.5 * a * v)
        if np.any(tau <= 0) or not np.all(np.isfinite(tau)):
            raise ConvergenceError(f"Lewis weights for p={p}: weights left the floating-point range")
    raise ConvergenceError(
        f"Lewis weights for p={p} did not reach tol={tol} in max_iter={max_iter} iterations "
        f"(asymptotic rate (p-2)/(p+2) = {(p - 2) / (p + 2):.3g}); raise max_iter or tol"
    )


def _cohen_peng(U: np.ndarray, p: float, v: np.ndarray):
    """Cohen–Peng iterates for the Lewis weights of U (p < 4), from log-weights v: yields (τ, v, residual).

    τ is the leverage of W^{1/2-1/p}U at w = exp(v) (a Householder-grade computation at every
    iterate, so the bound of :func:`lewis_bound` holds for each) and the residual is
    max|log τ - v|.  The update v <- (p/2)(log τ - a v) is a contraction with rate |1 - p/2| in
    the max-norm of log weights (for every p < 4); its step equals (p/2)·residual.  Used up to
    p = 3 (rate <= 1/2 on [1, 3]); beyond, the descent method of :func:`_lewis_active` is faster.
    """
    a = 1.0 - 2.0 / p
    while True:
        tau = _weighted_leverage(U, 0.5 * a * v)
        if np.any(tau <= 0) or not np.all(np.isfinite(tau)):
            raise ConvergenceError(
                f"Lewis weights for p={p}: weights left the floating-point range; "
                f"p this far from 2 needs better-scaled keys"
            )
        log_tau = np.log(tau)
        yield tau, v, float(np.max(np.abs(log_tau - v)))
        v = 0.5 * p * (log_tau - a * v)


def _check_tol_iter(tol, max_iter):
    if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, (int, float, np.floating, np.integer)):
        raise TypeError(f"tol must be a positive real number, got {type(tol).__name__}")
    tol = float(tol)
    if not (tol > 0) or not math.isfinite(tol):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}; e.g. tol=1e-9")
    if isinstance(max_iter, (bool, np.bool_)) or not isinstance(max_iter, (int, np.integer)):
        raise TypeError(f"max_iter must be an integer >= 1, got {type(max_iter).__name__}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter}")
    return tol, int(max_iter)


@_one_blas_thread
def lewis_weights(
    K: ArrayLike, p: float, *, tol: float = _DEFAULT_TOL, max_iter: int = _DEFAULT_MAX_ITER
) -> np.ndarray:
    """ℓ_p Lewis weights of the rows of K.

    The Lewis weights are the unique w >= 0 with w_j = τ_j(W^{1/2-1/p} K) (leverage scores of the
    reweighted keys), equivalently w_j = (k_jᵀ(KᵀW^{1-2/p}K)⁺k_j)^{p/2}.  For p = 2 they are the
    leverage scores.

    Parameters
    ----------
    K : array_like, shape (n, d)
        Keys.
    p : float in (0, inf)
        Exponent of f(x) = |x|^p.
    tol : float, default 1e-9
        Stop when max_j |log(τ_j(W^{1/2-1/p}K) / w_j)| <= tol at the current iterate w.
    max_iter : int, default 1000
        Iteration limit; :class:`ConvergenceError` (a RuntimeError) is raised when it is reached.

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
        The leverage scores τ(W^{1/2-1/p}K) at the final iterate: they sum to rank(K) exactly (to
        rounding) and lie within a factor exp(tol) of the iterate.  Zero rows get weight 0.

    Raises
    ------
    ConvergenceError
        If ``max_iter`` is reached (or weights leave the floating-point range for extreme p).

    Notes
    -----
    Method: p <= 3 uses the Cohen–Peng fixed point w <- (w^{2/p-1}·τ(W^{1/2-1/p}K))^{p/2}, a
    contraction with rate |1 - p/2| (it converges for every p < 4, but slowly near 4).  p > 3
    minimises the function F(w) = -log det(KᵀW^{1-2/p}K) + (1-2/p)·Σ w, convex for p > 2 and
    stationary exactly at the Lewis weights, by steps along log τ - log w with Armijo
    back-tracking (a descent direction; local rate (p-2)/(p+2)).  Each
    iteration costs one or two Householder QRs of an n x rank matrix.  The keys are first reduced
    to an orthonormal basis of their row space (the weights depend only on it), which also
    removes any dependence on the scaling of the columns.
    """
    K = as_keys(K, tiny="rescale")  # ℓ_p weights do not depend on column scales
    p = check_p(p)
    tol, max_iter = _check_tol_iter(tol, max_iter)
    n = K.shape[0]
    out = np.zeros(n)
    if n == 0:
        return out
    U, active = row_basis(K)
    if U.shape[0] == 0 or U.shape[1] == 0:
        return out
    tau, _v = _lewis_active(U, p, tol, max_iter)
    out[active] = tau
    return out


def _lewis_bound_active(U: np.ndarray, p: float, tol: float, max_iter: int) -> np.ndarray:
    """Certified upper bound on the ℓ_p sensitivity of every row of U (see :func:`lewis_bound`)."""
    if p == 2.0:
        return _weighted_leverage(U, np.zeros(U.shape[0]))
    return _bound_from_lewis(U, p, tol, max_iter)


def _bound_from_lewis(U: np.ndarray, p: float, tol: float, max_iter: int) -> np.ndarray:
    """The certified bound of :func:`lewis_bound` from (possibly unconverged) Lewis weights of U."""
    tau, v = _lewis_active(U, p, tol, max_iter)
    return _bound_from_weights(tau, v, p)


def _bound_from_weights(tau: np.ndarray, v: np.ndarray, p: float) -> np.ndarray:
    """The bound of :func:`lewis_bound` from leverage τ of W^{1/2-1/p}U and log-weights v."""
    a = 1.0 - 2.0 / p
    # u = one Cohen–Peng update of v: log u = (p/2)(log τ - a v).
    log_u = 0.5 * p * (np.log(tau) - a * v)
    if p <= 2.0:
        log_gamma = (2.0 / p - 1.0) * float(np.max(log_u - v))
    else:
        log_gamma = (0.5 * p - 1.0) * math.log(float(np.sum(np.exp(v))))
    return np.exp(log_u + log_gamma)


@_one_blas_thread
def lewis_bound(K: ArrayLike, p: float, *, tol: float = _DEFAULT_TOL, max_iter: int = _DEFAULT_MAX_ITER) -> np.ndarray:
    """Certified upper bounds b_j >= α_j on the ℓ_p sensitivities, from Lewis weights.

    Parameters
    ----------
    K : array_like, shape (n, d)
        Keys.
    p : float in (0, inf)
        Exponent.
    tol, max_iter
        Passed to the Lewis-weight iteration.

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
        b_j ≈ c_p·w_j (c_p = 1 for p <= 2, rank^{p/2-1} for p > 2), and b_j >= α_j holds for the
        computed iterate whether or not it is fully converged.  Zero rows get 0.

    Notes
    -----
    Let v > 0 be any weights, M = KᵀV^{1-2/p}K, t_j = k_jᵀM⁺k_j, u_j = t_j^{p/2} and
    S = xᵀMx = Σ_i v_i^{1-2/p}(k_i·x)².  Cauchy–Schwarz gives (k_i·x)² <= t_i·S.  For p <= 2,
    (k_i·x)² <= |k_i·x|^p (t_i S)^{1-p/2} summed with weights v_i^{1-2/p} gives
    S^{p/2} <= max_i (u_i/v_i)^{2/p-1}·‖Kx‖_p^p; for p > 2 Hölder gives
    S^{p/2} <= (Σ v)^{p/2-1}·‖Kx‖_p^p.  With |k_j·x|^p <= u_j S^{p/2} both bounds follow; at the
    fixed point u = v = w and Σ w = rank.
    """
    K = as_keys(K, tiny="rescale")  # ℓ_p weights do not depend on column scales
    p = check_p(p)
    tol, max_iter = _check_tol_iter(tol, max_iter)
    out = np.zeros(K.shape[0])
    if K.shape[0] == 0:
        return out
    U, active = row_basis(K)
    if U.shape[0] == 0 or U.shape[1] == 0:
        return out
    out[active] = _lewis_bound_active(U, p, tol, max_iter)
    return out


# ----------------------------------------------------------------------------------------------
# Exact sensitivities with certificates (p >= 1)
# ----------------------------------------------------------------------------------------------


def _dual_upper(U: np.ndarray, y: np.ndarray, uj: np.ndarray, p: float) -> float:
    """Certified upper bound ‖y'‖_{p'}^p (+ a feasibility correction) on α_j.

    ``y`` need only satisfy Uᵀy ≈ u_j: it is first projected onto {y : Uᵀy = u_j} along
    range(U) (U has orthonormal columns), and the rounding residual e = Uᵀy - u_j is charged
    explicitly: for every q, |u_j·q| <= ‖y‖_{p'}‖Uq‖_p + ‖e‖₂‖q‖₂ and
    ‖q‖₂ = ‖Uq‖₂ <= m^{max(0, 1/2-1/p)}‖Uq‖_p.
    """
    m = U.shape[0]
    y = y + U @ (uj - U.T @ y)
    e = float(np.linalg.norm(U.T @ y - uj))
    ay = np.abs(y)
    ymax = float(np.max(ay)) if m else 0.0
    if p == 1.0:
        nrm = ymax
    elif ymax == 0.0:
        nrm = 0.0
    else:
        pc = p / (p - 1.0)
        nrm = ymax * float(np.sum((ay / ymax) ** pc)) ** (1.0 / pc)
    corr = e * m ** max(0.0, 0.5 - 1.0 / p) * (1.0 + 1e-12)
    # In the log domain: for large p a dual far from optimal gives a bound beyond the float range, and
    # such a bound (> 1 >= α_j) certifies nothing: +inf.
    log_ub = p * math.log(nrm + corr) if nrm + corr > 0.0 else -math.inf
    return math.exp(log_ub) if log_ub < 700.0 else math.inf


def _weighted_correction(U: np.ndarray, rho: np.ndarray, az: np.ndarray) -> np.ndarray:
    """Δ minimising Σ Δ_i²/d_i subject to UᵀΔ = ρ, with d_i large where |z_i| is small."""
    zmax = float(np.max(az)) or 1.0
    sd = 1.0 / np.sqrt(az / zmax + 1e-12)
    A = U * sd[:, None]
    Q, R = np.linalg.qr(A, mode="reduced")
    try:
        eta = Q @ np.linalg.solve(R.T, rho)
    except np.linalg.LinAlgError:
        return np.zeros_like(az)
    if not np.all(np.isfinite(eta)):
        return np.zeros_like(az)
    return sd * eta


def _primal_lower(z: np.ndarray, p: float) -> float:
    """|u_j·q|^p / ‖Uq‖_p^p for a query with u_j·q = 1 (z = Uq)."""
    az = np.abs(z)
    zmax = float(np.max(az))
    if zmax == 0.0:
        return 0.0
    s = float(np.sum((az / zmax) ** p))
    return math.exp(-p * math.log(zmax) - math.log(s))


def _certify_one(
    U: np.ndarray, j: int, p: float, *, eps: float | None, max_newton: int, q_init: np.ndarray | None = None
):
    """Bounds (lower, upper, q) on α_j for row j of U (orthonormal columns), p >= 1.

    Newton's method on the smoothed convex problem min_c Σ (z_i² + δ²)^{p/2}, z = U(q0 + N c),
    with δ = 0 for p >= 2 and δ decreasing geometrically for p < 2.  Certificates are evaluated
    at the start, every 5th step and whenever a Newton stage has converged; the loop stops
    early when ``eps`` is decided (upper < eps: excluded; lower >= eps: included) or the bounds
    agree to 1e-9.
    """
    m, r = U.shape
    uj = U[j]
    nu2 = float(uj @ uj)
    q0 = uj / nu2
    if r == 1:
        z = U @ q0
        lower = _primal_lower(z, p)
        return lower, lower * (1 + 1e-12), q0
    # Orthonormal basis N of u_j^⊥ from a Householder reflector.
    h = uj.copy()
    h[0] += math.copysign(math.sqrt(nu2), h[0] if h[0] != 0 else 1.0)
    H = np.eye(r) - 2.0 * np.outer(h, h) / float(h @ h)
    N = H[:, 1:]
    B = U @ N
    z0 = U @ q0
    c = np.zeros(r - 1)
    if q_init is not None:
        scale = float(q_init @ uj)
        if scale != 0 and math.isfinite(scale):
            c = N.T @ (q_init / scale)
    z = z0 + B @ c
    smooth = p < 2.0
    zscale = float(np.max(np.abs(z))) or 1.0
    delta = 0.1 * zscale if smooth else 0.0
    delta_min = 1e-13 * zscale
    lower, upper = 0.0, math.inf

    def phi(zz, dd):
        if dd == 0.0:
            return float(np.sum(np.abs(zz) ** p))
        return float(np.sum((zz * zz + dd * dd) ** (0.5 * p)))

    def certify(zz, g):
        nonlocal lower, upper
        lower = max(lower, _primal_lower(zz, p))
        mu = float(zz @ g)
        if mu > 0:
            y = g / mu
            if p < 2.0:
                # Put the feasibility correction on the near-zero residuals, where the optimal
                # dual of a non-smooth ℓ_p problem is free (p = 1: anywhere in [-1/φ, 1/φ]).
                y = y + _weighted_correction(U, uj - U.T @ y, np.abs(zz))
            upper = min(upper, _dual_upper(U, y, uj, p))
        if eps is not None and (upper < eps * (1.0 - THRESHOLD_RTOL) or lower >= eps):
            return True
        return upper <= lower * (1 + 1e-9)

    f = phi(z, delta)
    for it in range(max_newton):
        h2 = z * z + delta * delta
        if delta == 0.0:
            az = np.abs(z)
            g = np.sign(z) * az ** (p - 1.0)
            hd = (p - 1.0) * az ** (p - 2.0) if p > 2.0 else np.full(m, p - 1.0)
        else:
            g = z * h2 ** (0.5 * p - 1.0)
            hd = h2 ** (0.5 * p - 2.0) * ((p - 1.0) * z * z + delta * delta)
        grad = B.T @ g
        Hm = (B * hd[:, None]).T @ B
        Hm[np.diag_indices_from(Hm)] += 1e-14 * (np.trace(Hm) / (r - 1) + 1e-300)
        try:
            step = np.linalg.solve(Hm, grad)
        except np.linalg.LinAlgError:
            step = grad
        dec = float(grad @ step)
        stage_done = dec <= 1e-16 * max(f, 1e-300) or not math.isfinite(dec)
        # g is ∝ the dual of the smoothed problem: certificates from the current point
        if (it % 5 == 0 or stage_done or dec < 1e-6 * f) and certify(z, g):
            break
        if stage_done:
            if smooth and delta > delta_min:
                delta *= 0.1
                f = phi(z, delta)
                continue
            break
        t = 1.0
        while True:
            c_try = c - t * step
            z_try = z0 + B @ c_try
            f_try = phi(z_try, delta)
            if f_try <= f - 1e-4 * t * dec or t < 1e-10:
                break
            t *= 0.5
        c, z, f = c_try, z_try, f_try
        if smooth and dec < 1e-6 * f and delta > delta_min:
            delta *= 0.1
            f = phi(z, delta)
    q = q0 + N @ c
    return lower, upper, q


@_one_blas_thread
def sensitivity_bounds(
    K: ArrayLike, p: float, *, indices: ArrayLike | None = None, max_newton: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Certified lower and upper bounds on the exact ℓ_p sensitivities (p >= 1).

    Parameters
    ----------
    K : array_like, shape (n, d)
        Keys.
    p : float >= 1
        Exponent (the problem min_{q·k_j=1} ‖Kq‖_p^p is convex for p >= 1).
    indices : array_like of int, optional
        Rows to bound (default: all).
    max_newton : int, default 200
        Newton steps per row.

    Returns
    -------
    lower, upper : numpy.ndarray of float64
        lower_j <= α_j <= upper_j up to rounding.  lower_j is attained by an explicit query;
        upper_j is certified by a dual vector y with Kᵀy = k_j (weak duality).  Zero rows: 0, 0.
    """
    K = as_keys(K, tiny="rescale")  # ℓ_p weights do not depend on column scales
    p = check_p(p)
    if p < 1.0:
        raise ValueError(
            f"exact l_p sensitivities need p >= 1 (a convex problem), got p={p}; "
            f"use lewis_bound(K, p) for an upper bound when p < 1"
        )
    n = K.shape[0]
    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    lo = np.zeros(idx.size)
    hi = np.zeros(idx.size)
    U, active = row_basis(K)
    pos = np.cumsum(active) - 1
    for t, j in enumerate(idx):
        if not active[j] or U.shape[1] == 0:
            continue
        lo[t], hi[t], _q = _certify_one(U, int(pos[j]), p, eps=None, max_newton=max_newton)
    return lo, hi


def lp_sensitivities(K: ArrayLike, p: float, *, max_newton: int = 200) -> np.ndarray:
    """Exact ℓ_p sensitivities α_j = 1/min_{q·k_j=1}‖Kq‖_p^p (p >= 1), to about 1e-9 relative.

    Returns the certified upper bounds of :func:`sensitivity_bounds` (never below the truth).
    """
    return sensitivity_bounds(K, p, max_newton=max_newton)[1]


# ----------------------------------------------------------------------------------------------
# Universal sets
# ----------------------------------------------------------------------------------------------


def _lower_general(z: np.ndarray, j: int, p: float) -> float:
    """|z_j|^p / Σ_i |z_i|^p (the attention a query with Uq = z gives row j)."""
    az = np.abs(z)
    zmax = float(np.max(az))
    if zmax == 0.0 or az[j] == 0.0:
        return 0.0
    return float((az[j] / zmax) ** p / np.sum((az / zmax) ** p))


#: :func:`universal_set_p` refuses, by default, work estimated to take longer than this many seconds.
DEFAULT_MAX_SECONDS = 60.0


def _dual_upper_many(U: np.ndarray, Y: np.ndarray, UJ: np.ndarray, p: float) -> np.ndarray:
    """:func:`_dual_upper` for the columns of Y at once (column t must nearly satisfy Uᵀy = UJ[t])."""
    m = U.shape[0]
    Y = Y + U @ (UJ.T - U.T @ Y)
    res = U.T @ Y - UJ.T  # the residual left after the projection, charged below
    E = np.sqrt(np.einsum("ij,ij->j", res, res))
    ay = np.abs(Y)
    ymax = ay.max(axis=0) if m else np.zeros(Y.shape[1])
    if p == 1.0:
        nrm = ymax
    else:
        pc = p / (p - 1.0)
        safe = np.where(ymax > 0, ymax, 1.0)
        nrm = np.where(ymax > 0, ymax * np.sum((ay / safe) ** pc, axis=0) ** (1.0 / pc), 0.0)
    corr = E * m ** max(0.0, 0.5 - 1.0 / p) * (1.0 + 1e-12)
    with np.errstate(over="ignore"):
        return (nrm + corr) ** p  # inf (no information) rather than an error when out of range


def _cheap_bounds(U: np.ndarray, p: float, s: np.ndarray, R: np.ndarray, J: np.ndarray, *, eps: float):
    """Certificates from the Lewis ellipsoid for the candidates J, all at once, at O(m·|J|·r).

    With s ∝ w^{a/2} (a = 1 - 2/p) and M = UᵀS²U = RᵀR (s, R given):

    * query q = M⁻¹u_j (z = Uq)                                       -> lower bound (and a warm
      start for Newton);
    * query q = u_j, Uq = U u_j                                       -> a second lower bound;
    * dual  y = S²U M⁻¹u_j = s² ⊙ z satisfies Uᵀy = u_j               -> upper bound ‖y‖_{p'}^p;
    * dual  y = U u_j (UᵀU = I)                                       -> a second upper bound;
    * dual  y ∝ sign(z)|z|^{p-1} at the first query (the optimality condition), projected onto
      {Uᵀy = u_j}                                                      -> a third upper bound.

    Every lower bound is the attention of an explicit query (z is U times a vector), and every
    upper bound is charged for its dual's residual (:func:`_dual_upper_many`), so R only needs to
    be an accurate enough factor for the certificates to be sharp, not for them to hold.

    Lower bounds come first: a candidate whose lower bound reaches ``eps`` is decided (kept)
    and gets no upper bound (``inf``); each upper bound is computed only for the candidates
    the previous ones left undecided.  Returns ``(lower, upper, queries)`` with queries[:, t] = q
    (r x |J|) for candidate J[t] (callers pass batches of :data:`CERT_BATCH` candidates, so no
    m x candidates array exists).
    """
    UJ = U[J]
    Qj = cho_solve((R, False), UJ.T)  # M⁻¹u_j, r x |J|
    Z = U @ Qj
    Y2 = U @ UJ.T
    lo = np.maximum(_lower_many(Z, J, p), _lower_many(Y2, J, p))
    hi = np.full(J.size, np.inf)
    thr = eps * (1.0 - THRESHOLD_RTOL)
    todo = np.flatnonzero(lo < eps)
    if todo.size:
        hi[todo] = _dual_upper_many(U, (s * s)[:, None] * Z[:, todo], UJ[todo], p)
        todo = todo[hi[todo] >= thr]
    if todo.size:
        hi[todo] = np.minimum(hi[todo], _dual_upper_many(U, Y2[:, todo], UJ[todo], p))
        todo = todo[hi[todo] >= thr]
    if todo.size:
        Zt = Z[:, todo]
        az = np.abs(Zt)
        zmax = az.max(axis=0)
        Gd = np.sign(Zt) * (az / np.where(zmax > 0, zmax, 1.0)) ** (p - 1.0)  # ∝ the dual at the query Uq = z
        mu = np.einsum("ij,ij->j", Zt, Gd) / np.einsum("ij,ji->i", UJ[todo], U.T @ Zt)
        ok = mu > 0
        if ok.any():
            t = todo[ok]
            hi[t] = np.minimum(hi[t], _dual_upper_many(U, Gd[:, ok] / mu[ok], UJ[t], p))
    return lo, hi, Qj


def _weighted_r(U: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Upper-triangular R with RᵀR = UᵀS²U.

    Cholesky of the r x r Gram matrix when its factor is well conditioned (it then holds ~eps·cond²
    relative accuracy, ample for certificates that are checked anyway), else a Householder QR of S·U.
    """
    X = U * s[:, None]
    R, info = lapack.dpotrf(X.T @ X, lower=0, clean=1)
    if info == 0:
        rcond, info = lapack.dtrcon(R, norm="1", uplo="U")
        if info == 0 and rcond * CHOLQR_COND_MAX * U.shape[1] > 1.0:
            return R
    return np.linalg.qr(X, mode="r")


def _lower_many(Z: np.ndarray, J: np.ndarray, p: float) -> np.ndarray:
    """|z_j|^p / Σ_i |z_i|^p for column t of Z and row j = J[t] (the attention of the query Uq = z)."""
    az = np.abs(Z)
    zmax = az.max(axis=0)
    safe = np.where(zmax > 0, zmax, 1.0)
    zj = az[J, np.arange(J.size)]
    with np.errstate(invalid="ignore", divide="ignore", under="ignore"):
        return np.where((zmax > 0) & (zj > 0), (zj / safe) ** p / np.sum((az / safe) ** p, axis=0), 0.0)


def _screen(U: np.ndarray, eps: float, p: float, tol: float, max_iter: int):
    """Candidates for the certificates (p <= 3): ``(tau, v, keep)``, keep = the keys whose bound reaches eps.

    The bound of :func:`lewis_bound` holds at every Cohen–Peng iterate (each has a Householder-grade
    τ), so a key is a candidate only if its bound reaches eps at every iterate so far, and the
    candidates only decide which keys get certificates, never the set.  The iteration stops as
    soon as it stops paying: when no candidate is left, when an iteration removed fewer than half
    a batch of :data:`CERT_BATCH` candidates (an iteration, one leverage computation, costs about
    as much as the certificates of that many keys), or at ``tol``.  The starting point w = 1 is
    checked first: its leverage is that of U, which costs no factorisation.
    """
    m = U.shape[0]
    tau0 = np.einsum("ij,ij->i", U, U)  # the leverage of U (orthonormal columns): the weights w = 1
    keep = at_least(_bound_from_weights(tau0, np.zeros(m), p), eps)
    count = int(np.count_nonzero(keep))
    if count == 0:
        return tau0, np.zeros(m), keep
    for _, (tau, v, res) in zip(range(max_iter), _cohen_peng(U, p, np.log(tau0)), strict=False):
        keep &= at_least(_bound_from_weights(tau, v, p), eps)
        prev, count = count, int(np.count_nonzero(keep))
        if count == 0 or res <= tol or 2 * (prev - count) < CERT_BATCH:
            return tau, v, keep
    raise ConvergenceError(
        f"Lewis weights for p={p} did not reach tol={tol} in max_iter={max_iter} "
        f"Cohen-Peng iterations (rate |1-p/2| = {abs(1 - p / 2):.3g}); raise max_iter or tol"
    )


class CostError(ValueError):
    """An exact p != 2 universal set whose estimated cost exceeds the caller's time limit."""


def _universal_active(  # noqa: PLR0913 - the solver controls, the time limit and the progress callback
    U: np.ndarray,
    eps: float,
    p: float,
    *,
    refine: bool,
    tol: float,
    max_iter: int,
    max_newton: int,
    max_seconds: float | None = None,
    progress=None,
) -> np.ndarray:
    """Boolean keep-mask over the rows of U (orthonormal basis of the nonzero keys).

    Candidates (Lewis bound >= eps) are certified in batches of :data:`CERT_BATCH`: the batched
    ellipsoid certificates first, Newton (warm-started at the ellipsoid query) for those still
    undecided.  After the first batch the total time is estimated from it; above
    ``max_seconds`` a :class:`CostError` stating the estimate is raised.  ``progress(done,
    total, estimate_seconds)`` is called after every batch (the first one before any refusal).
    """
    m = U.shape[0]
    if m == 0 or U.shape[1] == 0:
        return np.zeros(m, dtype=bool)
    if p == 2.0:
        return at_least(_weighted_leverage(U, np.zeros(m)), eps)
    certify = refine and p >= 1.0
    if certify and p <= _CP_MAX_P:
        tau, v, keep = _screen(U, eps, p, max(tol, SCREEN_TOL), max_iter)
    else:
        # With certificates to follow, the weights need not be converged: the bound holds for any iterate and only
        # picks the candidates, so a looser iterate costs a few more candidates, not correctness.
        tau, v = _lewis_active(U, p, max(tol, SCREEN_TOL) if certify else tol, max_iter)
        keep = at_least(_bound_from_weights(tau, v, p), eps)
    if not certify:
        return keep
    cand = np.flatnonzero(keep)
    if cand.size == 0:
        return keep
    import time  # noqa: PLC0415

    ls = 0.5 * (1.0 - 2.0 / p) * v
    s = np.exp(ls - np.max(ls))
    R = _weighted_r(U, s)
    t0 = time.perf_counter()
    estimate = None
    for start in range(0, cand.size, CERT_BATCH):
        J = cand[start : start + CERT_BATCH]
        lo, hi, queries = _cheap_bounds(U, p, s, R, J, eps=eps)
        for t, j in enumerate(J):
            if lo[t] >= eps:  # a query gives it attention >= eps
                continue
            if not at_least(hi[t : t + 1], eps)[0]:
                keep[j] = False
            else:  # undecided: Newton, warm-started at the Lewis-ellipsoid query
                _lo, ub, _q = _certify_one(U, int(j), p, eps=eps, max_newton=max_newton, q_init=queries[:, t])
                keep[j] = bool(at_least(np.array([ub]), eps)[0])
        done = start + J.size
        elapsed = time.perf_counter() - t0
        estimate = elapsed * cand.size / done
        if progress is not None:
            progress(done, cand.size, estimate)
        if start == 0 and max_seconds is not None and estimate > max_seconds and done < cand.size:
            raise CostError(
                f"the exact p={p:g} set needs certificates for {cand.size:,} of {m:,} keys (their Lewis bound "
                f"reaches eps={eps:g}); estimated {estimate:,.0f} s from the first {done} (limit "
                f"max_seconds={max_seconds:g}). Pass max_seconds=None (CLI: --max-seconds inf) to run it anyway, "
                f"raise eps, or use refine=False for the certified Lewis-bound superset"
            )
    return keep


@_one_blas_thread
def universal_set_p(
    K: ArrayLike,
    eps: float,
    *,
    p: float,
    ridge: float = 0.0,
    refine: bool = True,
    tol: float = _DEFAULT_TOL,
    max_iter: int = _DEFAULT_MAX_ITER,
    max_newton: int = 200,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    progress: Callable[[int, int, float], None] | None = None,
) -> np.ndarray:
    """ε-universal set of power attention f(x) = ``|x|^p``: keys some query can give weight >= eps.

    Parameters
    ----------
    K : array_like, shape (n, d)
        Keys.
    eps : float in (0, 1]
        Attention threshold.
    p : float in (0, inf)
        Exponent; ``p = 2`` returns exactly :func:`streamlev.universal_set` (leverage scores).
    ridge : float, default 0.0
        Only ``ridge = 0`` is accepted for p != 2: ridge leverage has no ℓ_p counterpart with the
        attention guarantee, so a positive value raises ValueError rather than being ignored.
    refine : bool, default True
        For p >= 1, refine the Lewis-weight candidates by their exact sensitivity (convex
        problem, certified by duality).  ``False`` returns U_p = {j : c_p·w_j >= eps} (certified
        form, see :func:`lewis_bound`).  For p < 1 there is no convex formulation and U_p is
        returned.
    tol, max_iter, max_newton
        Iteration controls of the Lewis-weight and sensitivity solvers.
    max_seconds : float or None, default :data:`DEFAULT_MAX_SECONDS` (60)
        Time limit of the certificates (``refine``, p >= 1).  Their cost is estimated from the
        first batch of :data:`CERT_BATCH` candidates; an estimate above the limit raises
        :class:`CostError` (a ValueError) naming it, before the rest of the work.  ``None``
        opts in to any cost.
    progress : callable, optional
        Called as ``progress(done, total, estimate_seconds)`` after each batch of certified
        candidates (the CLI draws a progress bar with it).

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices.  Guarantee: every key j with α_j >= eps is in the set (α_j the exact ℓ_p
        sensitivity), hence for every query matrix Q every entry A_ij >= eps of
        A = row-normalise(|QKᵀ|^p) has j in the set.  With ``refine`` (p >= 1) a key is dropped
        only on a certificate α_j < eps, and keys whose certificates stay within the solver
        tolerance of eps are kept, so the set is {j : α_j >= eps} up to such near-ties.  Size:
        at most c_p·rank/eps·(1 + O(tol)) with c_p = 1 (p <= 2), rank^{p/2-1} (p > 2).

    Notes
    -----
    Cost: an orthonormal basis of the keys, then Lewis-weight iterations (a QR-grade leverage
    computation of the n x rank keys each).  With certificates to follow (p <= 3), the iteration
    stops as soon as an iteration removes fewer candidates than it costs to certify: the
    Lewis bound holds at every iterate, so this changes which keys get certificates, never the
    set.  Then for p >= 1, for every candidate (Lewis bound >= eps), dual bounds costing O(n·rank) each
    (batched matrix products), then a Newton solve (O(n·rank²) per step) for candidates still
    undecided.  The candidates can be most keys for p > 2 (the Lewis bound carries the factor
    rank^{p/2-1}), so the certificates cost O(n²·rank) in the worst case, against O(n·rank²)
    for p = 2.  Memory: O(n·rank + rank²) (batches of :data:`CERT_BATCH` candidates).
    """
    eps = check_eps(eps)
    p = check_p(p)
    ridge = check_ridge(ridge)
    if p == 2.0:
        return _leverage_universal_set(K, eps, ridge=ridge)
    if ridge > 0:
        raise ValueError(f"ridge={ridge} is only defined for p = 2 (ridge leverage scores); for p={p} use ridge=0.0")
    K = as_keys(K, tiny="rescale")  # ℓ_p weights do not depend on column scales
    tol, max_iter = _check_tol_iter(tol, max_iter)
    n = K.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    U, active = row_basis(K)
    keep = np.zeros(n, dtype=bool)
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be a positive number of seconds or None (no limit), got {max_seconds!r}")
    keep[active] = _universal_active(
        U,
        eps,
        p,
        refine=bool(refine),
        tol=tol,
        max_iter=max_iter,
        max_newton=max_newton,
        max_seconds=max_seconds,
        progress=progress,
    )
    return np.flatnonzero(keep).astype(np.int64)


def _subset_keep(
    rows: np.ndarray,
    eps: float,
    p: float,
    *,
    refine: bool,
    tol: float = _DEFAULT_TOL,
    max_iter: int = _DEFAULT_MAX_ITER,
) -> np.ndarray:
    """Keep-mask of the universal set of ``rows`` alone (validated float64 input)."""
    keep = np.zeros(rows.shape[0], dtype=bool)
    U, active = row_basis(rows)
    keep[active] = _universal_active(U, eps, p, refine=refine, tol=tol, max_iter=max_iter, max_newton=200)
    return keep


def __getattr__(name: str):
    # ``streamlev.lewis.OnlinePowerSet`` keeps working; the sketch lives in streamlev.powerset.
    if name == "OnlinePowerSet":
        from .powerset import OnlinePowerSet

        return OnlinePowerSet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
