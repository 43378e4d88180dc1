"""Lewis weights, ℓ_p sensitivities and p != 2 universal sets against independent oracles.

Oracles (tests/naive_lp.py): the defining fixed-point equation evaluated with np.linalg.pinv, a
plain Cohen–Peng loop, L-BFGS-B on the convex Lewis objective (p > 2), and exact ℓ_p
sensitivities by scipy (linprog for p = 1, BFGS otherwise).  Runtime budget: ~25 s (default run).
"""

import functools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamlev as sl
from streamlev import _rowbasis as rowbasis
from streamlev import lewis

from . import naive, naive_lp
from .strategies import key_matrices

P_GUARANTEE = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
P_ALL = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0)


def keys(seed, n=24, d=3, heavy=2):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d)) * np.logspace(-1, 1, d)
    K[:heavy] *= 4.0
    return K


def c_p(p, r):
    return 1.0 if p <= 2 else r ** (p / 2 - 1)


@functools.cache
def oracle_alpha(seed, p):
    return naive_lp.sensitivities(keys(seed), p)


# --- Lewis weights --------------------------------------------------------------------------


@pytest.mark.parametrize("p", P_ALL)
def test_lewis_weights_satisfy_definition_and_sum_to_rank(p):
    rng = np.random.default_rng(10)
    K = rng.standard_normal((60, 5)) * np.array([1e-3, 1, 10, 1e3, 1])
    K[7] = 0.0
    w = sl_lewis(K, p)
    assert w[7] == 0.0
    assert np.all(w >= 0) and np.all(w <= 1 + 1e-12)
    assert abs(w.sum() - naive.rank(K)) < 1e-9
    assert naive_lp.lewis_residual(K, w, p) < 1e-7


def sl_lewis(K, p, **kw):
    return lewis.lewis_weights(K, p, **kw)


@pytest.mark.parametrize("p", (0.5, 1.0, 1.5, 3.0, 3.5))
def test_lewis_matches_plain_cohen_peng(p):
    K = keys(11, n=40, d=4)
    np.testing.assert_allclose(sl_lewis(K, p), naive_lp.lewis_cohen_peng(K, p), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("p", (3.0, 4.0, 6.0, 10.0))
def test_lewis_matches_convex_program(p):
    """p >= 4 (no Cohen–Peng contraction): compare with L-BFGS-B on the convex objective."""
    K = keys(12, n=40, d=4, heavy=4)
    np.testing.assert_allclose(sl_lewis(K, p), naive_lp.lewis_convex(K, p), rtol=1e-6)


def test_p2_is_leverage():
    K = keys(13, n=50, d=5)
    np.testing.assert_allclose(sl_lewis(K, 2.0), naive.leverage(K), rtol=1e-10)


@pytest.mark.parametrize("p", (6.0, 10.0))
def test_large_p_hard_keys_converge(p):
    """Heavy rows and outlier channels, p >= 4: the descent method still converges."""
    rng = np.random.default_rng(14)
    K = rng.standard_normal((300, 8)) * np.logspace(-3, 3, 8)
    K[:5] *= 1e3
    w = sl_lewis(K, p)
    assert abs(w.sum() - 8) < 1e-9
    assert naive_lp.lewis_residual(K, w, p) < 1e-6


@given(K=key_matrices(max_n=30, max_d=5), p=st.sampled_from([0.7, 1.0, 1.5, 3.0, 4.0, 6.0]), seed=st.integers(0, 2**31))
def test_lewis_properties(K, p, seed):
    """Σ w = rank; definition; invariance K -> K·B; permutation equivariance; zero rows get 0."""
    w = sl_lewis(K, p)
    r = naive.rank(K)
    assert abs(w.sum() - r) < 1e-7 * max(r, 1)
    nz = np.any(K != 0, axis=1)
    assert np.all(w[~nz] == 0)
    assert np.all(w[nz] > 0)
    rng = np.random.default_rng(seed)
    d = K.shape[1]
    # B = D⁻¹GD with D the column norms: mixing channels of very different scales would destroy
    # the small ones in floating point (K·B itself would be ill conditioned), which is not the
    # invariance under test.
    norms = np.linalg.norm(np.asarray(K, float), axis=0)
    D = np.where(norms > 0, norms, 1.0)
    B = (rng.standard_normal((d, d)) + 3 * np.eye(d)) * D[None, :] / D[:, None]
    perm = rng.permutation(K.shape[0])
    KB = np.asarray(K, float) @ B
    wB = sl_lewis(KB, p)
    assert abs(wB.sum() - naive.rank(KB)) < 1e-7 * max(r, 1)
    if naive.rank(KB) == r:  # K·B can cross the numerical rank threshold when K is rank deficient
        np.testing.assert_allclose(wB, w, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(sl_lewis(K[perm], p), w[perm], rtol=1e-6, atol=1e-10)


def test_lewis_rank_deficient_and_tiny():
    rng = np.random.default_rng(15)
    K = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 5))
    for p in (1.0, 3.0, 6.0):
        w = sl_lewis(K, p)
        assert abs(w.sum() - 2) < 1e-9
        assert naive_lp.lewis_residual(K, w, p) < 1e-7
    assert sl_lewis(np.zeros((0, 3)), 3.0).shape == (0,)
    np.testing.assert_array_equal(sl_lewis(np.zeros((4, 3)), 3.0), np.zeros(4))
    np.testing.assert_allclose(sl_lewis(np.ones((1, 3)), 6.0), [1.0])


@pytest.mark.parametrize("p", (3.0, 6.0, 0.5))
def test_max_iter_raises_convergence_error(p):
    K = keys(16, n=40, d=4)
    with pytest.raises(RuntimeError, match="max_iter"):
        sl_lewis(K, p, max_iter=1, tol=1e-14)
    assert issubclass(lewis.ConvergenceError, RuntimeError)


def test_bad_inputs():
    K = keys(17)
    with pytest.raises(ValueError, match="p must"):
        sl_lewis(K, 0.0)
    with pytest.raises(TypeError, match="p must"):
        sl_lewis(K, "2")
    with pytest.raises(ValueError, match="tol"):
        sl_lewis(K, 3.0, tol=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        sl_lewis(K, 3.0, max_iter=0)
    bad = K.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        sl_lewis(bad, 3.0)
    with pytest.raises(ValueError, match="2-D"):
        sl_lewis(K[0], 3.0)
    with pytest.raises(ValueError, match="ridge"):
        sl.universal_set(K, 0.1, p=3.0, ridge=0.5)
    with pytest.raises(ValueError, match="p >= 1"):
        lewis.sensitivity_bounds(K, 0.5)
    with pytest.raises(ValueError, match="eps"):
        lewis.universal_set_p(K, 1.5, p=3.0)


# --- sensitivities and bounds ----------------------------------------------------------------


@pytest.mark.parametrize("p", P_GUARANTEE)
def test_sensitivity_certificates_bracket_oracle(p):
    K = keys(20)
    alpha = oracle_alpha(20, p)
    lo, hi = lewis.sensitivity_bounds(K, p)
    assert np.all(lo <= alpha * (1 + 1e-7))
    assert np.all(alpha <= hi * (1 + 1e-7))
    assert np.all(hi <= lo * (1 + 1e-6))


@pytest.mark.parametrize("p", P_GUARANTEE)
def test_lewis_bound_dominates_sensitivity(p):
    """α_j <= c_p·w_j (c_p = 1 for p <= 2, rank^{p/2-1} otherwise) and the certified bound."""
    K = keys(20)
    alpha = oracle_alpha(20, p)
    w = sl_lewis(K, p)
    r = naive.rank(K)
    assert np.all(alpha <= c_p(p, r) * w * (1 + 1e-7))
    b = lewis.lewis_bound(K, p)
    assert np.all(alpha <= b * (1 + 1e-7))
    np.testing.assert_allclose(b, c_p(p, r) * w, rtol=1e-6)


# --- universal sets --------------------------------------------------------------------------


def optimised_queries(K, p, js):
    """For each key j, the query maximising A_jj (from the oracle's convex solve)."""
    return np.array([naive_lp.sensitivity(K, j, p)[1] for j in js]).reshape(len(js), K.shape[1])


@pytest.mark.parametrize("p", P_GUARANTEE)
@pytest.mark.parametrize("eps", (0.05, 0.2))
def test_universal_set_p_guarantee(p, eps):
    K = keys(20)
    alpha = oracle_alpha(20, p)
    U = sl.universal_set(K, eps, p=p)
    assert U.dtype == np.int64 and np.all(np.diff(U) > 0)
    # exactly the keys some query can make eps-heavy (ties within the oracle's precision aside)
    naive.assert_set_matches(U, alpha, eps, rtol=1e-6)
    # random queries: every heavy entry lies in U
    rng = np.random.default_rng(21)
    Q = rng.standard_normal((500, K.shape[1])) * rng.uniform(0.1, 10, size=(500, 1))
    A = naive_lp.power_attention(Q, K, p)
    assert np.all(np.isin(np.nonzero(A >= eps)[1], U))
    # adversarial queries optimised to make each excluded key heavy stay below eps
    out = np.setdiff1d(np.arange(K.shape[0]), U)
    if out.size:
        Qa = optimised_queries(K, p, out)
        Aa = naive_lp.power_attention(Qa, K, p)
        assert np.all(Aa[np.arange(out.size), out] < eps)
    # and the kept keys really can be made heavy (the set is not padded)
    Qi = optimised_queries(K, p, U)
    Ai = naive_lp.power_attention(Qi, K, p)
    assert np.all(Ai[np.arange(U.size), U] >= eps * (1 - 1e-6))


@pytest.mark.parametrize("p", P_GUARANTEE)
def test_unrefined_set_is_lewis_set(p):
    K = keys(20)
    eps = 0.1
    r = naive.rank(K)
    w = sl_lewis(K, p)
    U0 = lewis.universal_set_p(K, eps, p=p, refine=False)
    naive.assert_set_matches(U0, c_p(p, r) * w, eps, rtol=1e-6)
    assert U0.size <= c_p(p, r) * r / eps * (1 + 1e-6)
    assert np.all(np.isin(sl.universal_set(K, eps, p=p), U0))


def test_p2_universal_set_equals_leverage_set():
    K = keys(22, n=60, d=4)
    for eps in (0.05, 0.1, 0.5):
        naive.assert_set_matches(lewis.universal_set_p(K, eps, p=2.0), naive.leverage(K), eps)
        naive.assert_set_matches(lewis.universal_set_p(K, eps, p=2.0, ridge=0.3), naive.ridge_leverage(K, 0.3), eps)


def test_p_below_one_set_holds_heavy_entries():
    """p < 1 (no convex oracle): random and locally optimised queries never escape the set."""
    from scipy.optimize import minimize

    K = keys(23, n=20)
    p, eps = 0.5, 0.3
    U = sl.universal_set(K, eps, p=p)
    rng = np.random.default_rng(24)
    Q = rng.standard_normal((2000, K.shape[1]))
    A = naive_lp.power_attention(Q, K, p)
    assert np.all(np.isin(np.nonzero(A >= eps)[1], U))
    for j in np.setdiff1d(np.arange(K.shape[0]), U):

        def neg(q, j=j):
            return -naive_lp.power_attention(q[None, :], K, p)[0, j]

        best = min(minimize(neg, rng.standard_normal(K.shape[1]), method="Nelder-Mead").fun for _ in range(3))
        assert -best < eps


# --- one pass --------------------------------------------------------------------------------


@pytest.mark.parametrize("p", (1.0, 1.5, 3.0))
def test_online_power_set_never_misses_and_stays_bounded(p):
    K = keys(25, n=120, d=3, heavy=3)
    rng = np.random.default_rng(26)
    K[rng.choice(120, 5, replace=False)] *= 6.0
    eps = 0.15
    r = naive.rank(K)
    bound = c_p(p, r) * r / eps * (1 + 1e-6)
    ops = lewis.OnlinePowerSet(3, eps, p=p)
    sizes = []
    for start in range(0, 120, 10):
        ops.update(K[start : start + 10])
        sizes.append(len(ops.index_))
    assert max(sizes) <= bound
    exact = sl.universal_set(K, eps, p=p)
    assert np.all(np.isin(exact, ops.universal_set()))
    assert ops.nbytes >= ops.keys_.nbytes + ops.index_.nbytes
    np.testing.assert_array_equal(ops.keys_, K[ops.index_])
    # one key at a time: same guarantee
    ops1 = lewis.OnlinePowerSet(3, eps, p=p)
    for i in range(120):
        ops1.update(K[i])
    assert np.all(np.isin(exact, ops1.universal_set()))


def test_online_power_set_deprecated_spellings_warn_and_still_work():
    K = keys(25, n=40, d=3, heavy=3)
    ops = lewis.OnlinePowerSet(3, 0.2, p=3.0)
    with pytest.warns(DeprecationWarning, match="update"):
        ops.fit(K[i : i + 10] for i in range(0, 40, 10))
    with pytest.warns(DeprecationWarning, match="universal_set"):
        np.testing.assert_array_equal(ops.result(), ops.universal_set())
    with pytest.warns(DeprecationWarning, match="n_seen"):
        assert ops.n_seen_ == 40 == ops.n_seen
    with pytest.warns(DeprecationWarning, match="nbytes"):
        assert ops.nbytes() == ops.nbytes


def test_online_power_set_bad_input():
    ops = lewis.OnlinePowerSet(3, 0.1, p=3.0)
    with pytest.raises(ValueError, match="expected 3"):
        ops.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match="eps"):
        lewis.OnlinePowerSet(3, 0.0, p=3.0)


@pytest.mark.parametrize("p", (1.0, 1.5, 3.0, 6.0))
def test_lewis_bound_valid_for_unconverged_weights(p):
    """The certified bound holds for any iterate, not only at the fixed point (tol=0.5)."""
    K = keys(20)
    alpha = oracle_alpha(20, p)
    loose = lewis.lewis_bound(K, p, tol=0.5)
    assert np.all(alpha <= loose * (1 + 1e-7))
    exact_set = np.flatnonzero(alpha >= 0.1)
    U = lewis.universal_set_p(K, 0.1, p=p, refine=False, tol=0.5)
    assert np.all(np.isin(exact_set, U))


# --- exact sets at scale: batched certificates, the time limit, progress, memory --------------------------------


@pytest.mark.parametrize("p", (1.0, 1.5, 3.0, 4.0))
@pytest.mark.parametrize("batch", (1, 5, 128))
def test_batched_certificates_give_the_oracle_set(p, batch, monkeypatch):
    """Candidates certified in batches of any size: exactly the keys whose oracle sensitivity reaches eps."""
    monkeypatch.setattr(lewis, "CERT_BATCH", batch)
    K = keys(20)
    U = sl.universal_set(K, 0.2, p=p)
    naive.assert_set_matches(U, oracle_alpha(20, p), 0.2, rtol=1e-6)


def test_time_limit_refuses_with_the_estimate_and_opt_in_runs(monkeypatch):
    monkeypatch.setattr(lewis, "CERT_BATCH", 2)
    K = keys(20)
    with pytest.raises(lewis.CostError, match=r"estimated .* s from the first 2 .*max_seconds=None"):
        lewis.universal_set_p(K, 0.05, p=3.0, max_seconds=1e-12)
    U = lewis.universal_set_p(K, 0.05, p=3.0, max_seconds=None)
    naive.assert_set_matches(U, oracle_alpha(20, 3.0), 0.05, rtol=1e-6)
    with pytest.raises(ValueError, match="max_seconds"):
        lewis.universal_set_p(K, 0.05, p=3.0, max_seconds=0)


def test_progress_reports_every_batch_up_to_all_candidates(monkeypatch):
    monkeypatch.setattr(lewis, "CERT_BATCH", 4)
    calls = []
    lewis.universal_set_p(keys(20), 0.05, p=1.5, progress=lambda done, total, est: calls.append((done, total, est)))
    assert calls, "no progress reported"
    dones = [c[0] for c in calls]
    assert dones == sorted(dones) and dones[-1] == calls[0][1]
    assert all(c[2] >= 0 for c in calls)


@pytest.mark.parametrize("p", (1.5, 3.0))
def test_exact_set_memory_is_linear_in_n(p):
    """No n x candidates temporary: the traced peak stays a small multiple of the keys' size (m x batch arrays)."""
    import tracemalloc

    rng = np.random.default_rng(5)
    n, d = 3000, 8
    K = rng.standard_normal((n, d))
    tracemalloc.start()
    try:
        U = lewis.universal_set_p(K, 0.002, p=p, max_seconds=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert U.size > 100  # many candidates, so an n x candidates array would be large
    assert peak < 12 * n * max(d, lewis.CERT_BATCH) * 8, peak  # n x |candidates| float64 alone: 72 MB


@pytest.mark.parametrize("p", [100.0, 1e6, 0.05, 1e-9])
def test_p_outside_the_supported_range_is_refused_up_front(p):
    """Beyond [P_MIN, P_MAX] the certificates leave the float range (p = 100 kept keys whose
    sensitivity is below 1e-6); such p are refused by every entry point with the range."""
    K = np.random.default_rng(0).standard_normal((300, 8))
    for call in (
        lambda: sl.universal_set(K, 0.1, p=p),
        lambda: sl.lewis_weights(K, p),
        lambda: lewis.OnlinePowerSet(8, 0.1, p=p),
    ):
        with pytest.raises(ValueError, match=r"p must lie in \[0\.1, 64\]"):
            call()


@pytest.mark.parametrize("p", [64.0, 40.0])
def test_largest_supported_p_matches_the_oracle(p):
    K = keys(20)
    naive.assert_set_matches(sl.universal_set(K, 0.2, p=p), naive_lp.sensitivities(K, p), 0.2, rtol=1e-6)


def test_dual_bound_beyond_the_float_range_is_infinite_not_an_error():
    U = np.linalg.qr(np.random.default_rng(1).standard_normal((30, 3)))[0]
    y = np.full(30, 1e4)
    assert lewis._dual_upper(U, y, U[0], 60.0) == np.inf


# --- the row basis and the screening before certificates -----------------------------------------------------


def conditioned_keys(seed, n, d, cond):
    """n x d keys with singular values spread log-uniformly over [1/cond, 1], mixed across all columns."""
    rng = np.random.default_rng(seed)
    Qa = np.linalg.qr(rng.standard_normal((n, d)))[0]
    Qb = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return (Qa * np.logspace(0, -np.log10(cond), d)) @ Qb


@pytest.mark.parametrize(("cond", "cholesky"), [(1.0, True), (1e3, True), (1e9, False)])
def test_row_basis_is_orthonormal_and_row_accurate_on_both_paths(cond, cholesky):
    """Cholesky QR (well conditioned) or Householder (otherwise): UᵀU = I to rounding, and ‖u_j‖² is the
    leverage of row j to high relative accuracy, also for rows 1e7 smaller than the rest and columns
    scaled over 1e-8..1e8."""
    n, d, tiny = 400, 6, 5
    K = conditioned_keys(3, n, d, cond) * np.logspace(-8, 8, d)
    K[:tiny] *= 1e-7
    Kn = naive.column_normalise(K)
    assert (rowbasis.cholesky_qr2(Kn) is not None) == cholesky
    U, active = rowbasis.row_basis(K)
    assert active.all() and U.shape == (n, d)
    np.testing.assert_allclose(U.T @ U, np.eye(d), rtol=0, atol=1e-13)
    tau = np.einsum("ij,ij->i", U, U)
    np.testing.assert_allclose(tau[tiny:], naive.leverage(K)[tiny:], rtol=1e-13 * cond + 1e-12)
    # the tiny rows: τ_j = t/(1+t), t = k_jᵀ(K_oᵀK_o)⁻¹k_j over the other rows (their own
    # contributions to the Gram matrix are 1e-14 relative), from an SVD of the rest.
    D = np.linalg.norm(K[tiny:], axis=0)
    Uo, S, Vt = np.linalg.svd(K[tiny:] / D, full_matrices=False)
    t = np.sum(((K[:tiny] / D) @ Vt.T / S) ** 2, axis=1)
    np.testing.assert_allclose(tau[:tiny], t / (1 + t), rtol=1e-13 * cond + 1e-9)


def column_and_row_variants(K):
    """The same sensitivities, other numerics: columns scaled 1e-30..1e30, and mixed by a matrix of condition 1e7."""
    d = K.shape[1]
    rng = np.random.default_rng(8)
    B = (
        np.linalg.qr(rng.standard_normal((d, d)))[0]
        @ np.diag(np.logspace(0, -7, d))
        @ np.linalg.qr(rng.standard_normal((d, d)))[0]
    )
    return {"columns 1e-30..1e30": K * np.logspace(-30, 30, d), "mixed, cond 1e7": K @ B}


@pytest.mark.parametrize("p", (1.0, 1.5, 3.0))
@pytest.mark.parametrize("variant", ["columns 1e-30..1e30", "mixed, cond 1e7"])
def test_exact_set_of_scaled_and_ill_conditioned_keys(p, variant):
    """α is invariant under K -> K·B (B invertible): the set of the transformed keys is the oracle set of K,
    whichever row-basis path (Cholesky QR for the scaled columns, Householder for the mixed keys) is taken."""
    K = keys(20)
    KB = column_and_row_variants(K)[variant]
    cholesky = rowbasis.cholesky_qr2(naive.column_normalise(KB)) is not None
    assert cholesky == variant.startswith("columns")
    for eps in (0.05, 0.2):
        naive.assert_set_matches(sl.universal_set(KB, eps, p=p), oracle_alpha(20, p), eps, rtol=1e-6)


@functools.cache
def oracle_alpha_rows(p):
    K = keys(21) * np.logspace(-2, 2, 24)[:, None]
    return K, naive_lp.sensitivities(K, p)


@pytest.mark.parametrize("p", (1.0, 1.5))
@pytest.mark.parametrize("screen_tol", (1e300, 1e-12))
def test_screening_depth_does_not_change_the_set(p, screen_tol, monkeypatch):
    """The candidate bound holds at every iterate: stopping the screen at the first iterate (tolerance 1e300)
    or running it to 1e-12 gives the oracle set, also for rows scaled over 1e-2..1e2."""
    monkeypatch.setattr(lewis, "SCREEN_TOL", screen_tol)
    for K, alpha in ((keys(20), oracle_alpha(20, p)), oracle_alpha_rows(p)):
        for eps in (0.05, 0.2, 0.6):
            naive.assert_set_matches(sl.universal_set(K, eps, p=p), alpha, eps, rtol=1e-6)


@pytest.mark.parametrize("p", (1.0, 1.5, 3.0))
@pytest.mark.parametrize("spread", (0.0, 3.0, 300.0))
def test_ellipsoid_certificates_hold_for_any_weights(p, spread):
    """Batched certificates bracket the oracle whatever weights shape the ellipsoid (log-weights of spread
    300 make the r x r Gram matrix unusable and take the Householder factor)."""
    K = keys(20)
    alpha = oracle_alpha(20, p)
    U, _active = rowbasis.row_basis(K)
    s = np.exp(spread * np.random.default_rng(4).standard_normal(U.shape[0]))
    s /= s.max()
    R = lewis._weighted_r(U, s)
    np.testing.assert_allclose(R.T @ R, (U * s[:, None] ** 2).T @ U, rtol=1e-8, atol=1e-14)
    J = np.arange(U.shape[0])
    lo, hi, _q = lewis._cheap_bounds(U, p, s, R, J, eps=2.0)  # eps above every α: every key gets an upper bound
    assert np.all(lo <= alpha * (1 + 1e-7))
    assert np.all(hi >= alpha * (1 - 1e-7))


@pytest.mark.parametrize("p", (1.0, 1.5, 3.0))
def test_exact_set_at_extreme_magnitudes_is_the_oracle_set(p):
    """Whole keys scaled by 1e-300 or 1e240, or columns by 1e-290..1e230: the oracle set of the unscaled keys
    (squared column norms at these magnitudes leave the float range unless the columns are scaled first)."""
    K = keys(20)
    for KS in (K * 1e-300, K * 1e240, K * np.logspace(-290, 230, K.shape[1])):
        naive.assert_set_matches(sl.universal_set(KS, 0.05, p=p), oracle_alpha(20, p), 0.05, rtol=1e-6)
        np.testing.assert_allclose(sl.lewis_weights(KS, p), sl.lewis_weights(K, p), rtol=1e-8)
