"""streamlev._factor and streamlev._linalg against the oracles: screening bounds, update tiers, QR, inverses.

Every check compares with tests/naive.py (float64 SVD of the column-normalised keys) or with a
plain computation written here; none compares the library with itself only.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamlev as sl
from streamlev._factor import Factor, admit, at_least

from . import naive
from .strategies import eps_values, key_matrices, short_wide_keys


def _factor_of(K, ridge=0.0, block=None):
    fac = Factor(K.shape[1], ridge)
    block = block or K.shape[0]
    for a in range(0, K.shape[0], block):
        fac.update(K[a : a + block])
    return fac


# -- screening bounds ---------------------------------------------------------------------------------
@given(key_matrices(min_n=2, max_n=120), st.sampled_from([0.0, 0.5]), st.integers(0, 2**31))
def test_two_sided_bounds_hold_and_upper_stays_valid(K, ridge, seed):
    """lb <= τ <= ub for absorbed rows (fresh bound); the upper side still holds after more rows."""
    K64 = np.asarray(K, float)
    fac = _factor_of(K, ridge)
    b = fac.bound(fresh=True)
    tau = naive.leverage(K64) if ridge == 0 else naive.ridge_leverage(K64, ridge)
    if b is None:  # singular or too ill-conditioned: no bound is claimed, scoring is exact
        return
    t = b.sqnorms(K)
    # (1e-14 absolute: the oracle's own rounding, e.g. 5e-34 for an all-zero row)
    assert np.all(t * b.lo <= tau * (1 + 1e-9) + 1e-14)
    assert np.all(t * b.up >= tau * (1 - 1e-9) - 1e-14)
    # More rows: scores only fall, so the old upper bound still bounds every score.
    rng = np.random.default_rng(seed)
    more = rng.standard_normal((int(rng.integers(1, 60)), K.shape[1])) * rng.uniform(0.1, 10)
    K2 = np.vstack([K64, more])
    fac.update(more)
    tau2 = naive.leverage(K2) if ridge == 0 else naive.ridge_leverage(K2, ridge)
    assert np.all(b.sqnorms(K2) * b.up >= tau2 * (1 - 1e-9) - 1e-14)


@given(key_matrices(min_n=2, max_n=150), eps_values, st.sampled_from([0.0, 0.3]))
def test_classify_equals_exact_membership(K, eps, ridge):
    from streamlev import _factor

    fac = _factor_of(K, ridge)
    got = fac.classify(K, eps)
    np.testing.assert_array_equal(got, at_least(fac.scores(K), eps))
    with pytest.MonkeyPatch.context() as mp:  # screening bounds even for few rows (by default only from 8·d rows)
        mp.setattr(_factor, "BOUND_MIN_ROWS_PER_DIM", 0)
        np.testing.assert_array_equal(_factor_of(K, ridge).classify(K, eps), got)
    K64 = np.asarray(K, float)
    tau = naive.leverage(K64) if ridge == 0 else naive.ridge_leverage(K64, ridge)
    naive.assert_set_matches(np.flatnonzero(got), tau, eps)


def test_classify_decides_most_rows_without_scoring():
    """On well-conditioned keys the bounds decide almost every row (the point of screening)."""
    rng = np.random.default_rng(0)
    K = rng.standard_normal((50_000, 16)) * np.logspace(-3, 3, 16)
    fac = _factor_of(K, block=8192)
    b = fac.bound(fresh=True)
    t = b.sqnorms(K)
    eps = 16 / 50_000
    undecided = at_least(t * b.up, eps) & ~at_least(t * b.lo, eps)
    assert undecided.mean() < 0.5, undecided.mean()
    tau = naive.leverage(K)
    np.testing.assert_array_equal(np.flatnonzero(fac.classify(K, eps)), np.flatnonzero(at_least(tau, eps)))


def test_few_rows_are_scored_without_a_fresh_bound(monkeypatch):
    """Evicting fewer than 8·d candidates scores them (no SVD for a bound); more take the bound; both exact."""
    calls = []
    orig = Factor._compute_bounds
    monkeypatch.setattr(Factor, "_compute_bounds", staticmethod(lambda facs: calls.append(len(facs)) or orig(facs)))
    rng = np.random.default_rng(61)
    d = 40
    K = rng.standard_normal((6000, d)) * np.logspace(-4, 4, d)
    fac = _factor_of(K)
    tau = naive.leverage(K)
    for rows, eps in ((8 * d - 1, 0.004), (8 * d, 0.004), (6000, 0.01)):
        calls.clear()
        fac._bound = None
        got = fac.classify(K[:rows], eps)
        assert bool(calls) == (rows >= 8 * d), (rows, calls)
        naive.assert_set_matches(np.flatnonzero(got), tau[:rows], eps)


def test_admit_handles_infinite_bounds_and_the_threshold():
    u = np.array([0.0, np.inf, 1e300, 0.25, 0.25 * (1 - 1e-6)])
    # u/(1+u) >= 0.2 <=> u >= 0.25
    np.testing.assert_array_equal(admit(u, 0.2), [False, True, True, True, False])
    assert admit(np.array([np.inf]), 1.0)[0]


def test_row_far_outside_the_span_is_admitted():
    rng = np.random.default_rng(3)
    K = rng.standard_normal((40_000, 8))
    K[-1] = 1e200  # its scaled norm squared overflows to inf: must be admitted, not lost as NaN
    sk = sl.OnlineLeverage(8, 0.5)
    for a in range(0, K.shape[0], 5000):
        sk.update(K[a : a + 5000])
    assert K.shape[0] - 1 in sk.universal_set()
    # the oracle's column norms would overflow; τ does not change when all of K is scaled by a constant
    naive.assert_set_matches(sk.universal_set(), naive.leverage(K * 1e-190), 0.5)


# -- the update ramp and tiers -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gaussian", "scaled", "vandermonde", "rank_deficient", "new_directions"])
def test_update_of_big_blocks_matches_the_oracle(kind):
    """A young factor given one big block (probe, ramp, Householder fallbacks) scores like the SVD."""
    rng = np.random.default_rng(7)
    n, d = 30_000, 12
    if kind == "gaussian":
        K = rng.standard_normal((n, d))
    elif kind == "scaled":
        K = rng.standard_normal((n, d)) * np.logspace(-6, 6, d)
    elif kind == "vandermonde":
        K = np.vander(np.sort(rng.uniform(0, 1, n)), d)
    elif kind == "rank_deficient":
        K = rng.standard_normal((n, 5)) @ rng.standard_normal((5, d))
    else:  # the second half brings directions the first half lacks
        K = rng.standard_normal((n, d))
        K[: n // 2, d // 2 :] *= 1e-9
    tau = naive.leverage(K)
    for block in (n, 4096, 777):
        got = _factor_of(K, block=block).scores(K)
        tol = 1e-6 if kind == "vandermonde" else 1e-9
        big = tau > 1e-12
        err = np.max(np.abs(got[big] - tau[big]) / tau[big])
        assert err <= tol, (kind, block, err)


def test_block_and_stream_paths_agree_on_the_set():
    rng = np.random.default_rng(11)
    K = rng.standard_normal((120_000, 16))
    K[:, :2] *= 30
    K[rng.choice(K.shape[0], 10, replace=False)] *= 40
    eps = 1e-3
    tau = naive.leverage(K)
    U = sl.universal_set(K, eps)
    naive.assert_set_matches(U, tau, eps)
    for block in (16384, 3000, 256):
        sk = sl.OnlineLeverage(16, eps)
        for a in range(0, K.shape[0], block):
            sk.update(K[a : a + block])
        np.testing.assert_array_equal(sk.universal_set(), U)
    np.testing.assert_array_equal(sl.two_pass_universal_set(K, eps), U)


def test_wide_factor_takes_householder_until_whitened_updates_pay(monkeypatch):
    """At d = 256 whitened updates come only in chunks of at least 4·d rows (Householder before that); exact."""
    from streamlev import _factor

    seen = []
    orig = Factor._fast_update

    def spy(self, B, *args, **kwargs):
        seen.append(B.shape[0])
        return orig(self, B, *args, **kwargs)

    monkeypatch.setattr(Factor, "_fast_update", spy)
    rng = np.random.default_rng(47)
    d = 256
    K = rng.standard_normal((14_000, d)) * np.logspace(-4, 4, d)
    fac = Factor(d)
    for a in range(0, K.shape[0], 3000):
        fac.update(K[a : a + 3000])
    assert _factor.FAST_MIN_ROWS_PER_DIM == 4
    assert seen and min(seen) >= 4 * d  # some whitened updates, none of fewer than 4·d rows
    assert fac.n == K.shape[0]
    np.testing.assert_allclose(fac.scores(K), naive.leverage(K), rtol=1e-8)


def test_rank_deficient_factor_rank_then_scores_state_by_state():
    """Fewer rows than dimensions, then rank-deficient with many rows: rank and pinv scores at every state."""
    rng = np.random.default_rng(53)
    d = 40
    K = np.vstack([rng.standard_normal((25, d)), rng.standard_normal((400, 7)) @ rng.standard_normal((7, d))])
    K *= np.logspace(-5, 5, d)
    fac = Factor(d)
    for a, b in [(0, 10), (10, 25), (25, 30), (30, 425)]:
        fac.update(K[a:b])
        assert fac.bound(fresh=True) is None  # singular: no screening bounds
        assert fac.rank == naive.rank(K[:b])  # the rank first (singular values only) ...
        np.testing.assert_allclose(fac.scores(K[:b]), naive.leverage(K[:b]), rtol=1e-8, atol=1e-12)  # ... then scores
        assert fac.rank == naive.rank(K[:b])


@pytest.mark.parametrize("d", [200, 512])
def test_triangular_inverse_of_wide_factors_single_and_stacked(d):
    """Kernel below TRI_INV_LAPACK_MIN_DIM, dtrtri from it: inverse to rounding, the same bits single and stacked."""
    from streamlev._factor import TRI_INV_LAPACK_MIN_DIM, rinv_many
    from streamlev._linalg import tri_inv

    rng = np.random.default_rng(59)
    facs = []
    for _k in range(2):
        f = Factor(d)
        f.R = np.linalg.qr(rng.standard_normal((d + 9, d)) * np.logspace(-3, 3, d), mode="r")
        facs.append(f)
    X = tri_inv(facs[0].R)
    assert X.flags.c_contiguous
    np.testing.assert_array_equal(np.tril(X, -1), 0.0)
    C = np.linalg.norm(facs[0].R, axis=0)  # R C⁻¹ is well conditioned; its inverse is C R⁻¹ (numpy's LU)
    np.testing.assert_allclose(C[:, None] * X, np.linalg.inv(facs[0].R / C), rtol=1e-8, atol=1e-11)
    stacked = rinv_many(facs)
    np.testing.assert_array_equal(stacked[0], X)
    np.testing.assert_array_equal(stacked[1], tri_inv(facs[1].R))
    assert (d >= TRI_INV_LAPACK_MIN_DIM) == (d == 512)


def test_absorb_gram_matches_householder():
    from streamlev._factor import Factor, whitened_update_many

    rng = np.random.default_rng(37)
    d = 7
    A = rng.standard_normal((500, d)) * np.logspace(-2, 2, d)
    B = rng.standard_normal((300, d)) * np.logspace(-2, 2, d)
    f = Factor(d)
    f.update(A)
    f.absorb_gram(B.T @ B, B.shape[0])
    assert f.n == 800
    K = np.vstack([A, B])
    np.testing.assert_allclose(f.scores(K), naive.leverage(K), rtol=1e-10)
    g = Factor(d)
    g.update(A)
    R = g.R.copy()
    assert whitened_update_many([g], (1e3 * B).T @ (1e3 * B)[None], 300) == [0]  # trace far over 64: refused
    np.testing.assert_array_equal(g.R, R)
    assert g.n == 500


def test_stacked_bounds_split_over_threads_are_identical_and_bracket_the_oracle(threads):
    """bounds_many of wide factors (SVDs split over threads from BOUND_SPLIT_MIN_DIM): same bytes, valid bounds."""
    from streamlev._factor import BOUND_SPLIT_MIN_DIM, bounds_many

    d = BOUND_SPLIT_MIN_DIM + 2
    rng = np.random.default_rng(41)
    Ks = [rng.standard_normal((900, d)) * np.logspace(-2 - h, 2 + h, d) for h in range(5)]
    got = {}
    for t in (1, 2):
        threads.set_num_threads(t)
        facs = [_factor_of(K) for K in Ks]
        got[t] = bounds_many(facs, fresh=True)
    for b1, b2, K in zip(got[1], got[2], Ks):
        assert b1 is not None and b2 is not None
        np.testing.assert_array_equal(b1.dinv, b2.dinv)
        assert (b1.up, b1.lo, b1.n) == (b2.up, b2.lo, b2.n)
        tau = naive.leverage(K)  # ‖k_j S⁻¹‖² for the rows that built S
        sq = np.sum((K * b1.dinv) ** 2, axis=1)
        assert np.all(b1.lo * sq <= tau * (1 + 1e-9)) and np.all(tau <= b1.up * sq * (1 + 1e-9))
        assert b1.up / b1.lo > 1.0  # a real bracket, not a point


def _bracket_cases():
    rng = np.random.default_rng(43)
    yield rng.standard_normal((400, 48)), 0.0  # well conditioned
    yield rng.standard_normal((300, 64)) * np.logspace(-150, 150, 64), 0.0  # columns over 300 decades
    yield np.vander(np.linspace(0.1, 1, 200), 14, increasing=True), 0.0  # condition ~1e6 and beyond
    K = rng.standard_normal((130, 128))
    yield K, 0.0  # barely tall: σ_min small
    yield K, 0.5  # ridge: the factor of [R; √λI]
    yield rng.standard_normal((2000, 16)) @ np.diag(np.geomspace(1, 1e-5, 16)), 0.0


@pytest.mark.parametrize("case", range(6))
def test_bracketed_bound_brackets_the_svd_bound(case):
    """A bracketed bound exists only where the SVD gives one, its interval holds the SVD's up, its sides once read
    are the SVD's bit for bit, and its admission equals admit(t·up) row by row — thresholds placed on the bracket
    edges and on up itself included."""
    from streamlev._factor import Factor, admit_threshold

    K, ridge = list(_bracket_cases())[case]
    fac = _factor_of(K, ridge)
    exact = Factor._compute_bounds([fac])[0]
    lazy = fac._bracketed_bound()
    if lazy is None:
        return
    assert exact is not None
    up_lo, up_hi = lazy._up_range
    assert up_lo <= exact.up <= up_hi
    np.testing.assert_array_equal(lazy.dinv, exact.dinv)
    t = lazy.sqnorms(K)
    rng = np.random.default_rng(case)
    for eps in (0.5, 0.05, 1e-3):
        thr = admit_threshold(eps)
        # rows straddling thr/up, thr/up_lo and thr/up_hi by a few ulps (the undecided band and its edges)
        edges = [thr / exact.up, thr / up_lo, thr / up_hi]
        probe = np.concatenate(
            [np.nextafter(e, [0, np.inf, 1e300]) for e in edges] + [t, rng.uniform(0, 2 * t.max(), 50)]
        )
        fresh = Factor._bracketed_bound(fac)
        np.testing.assert_array_equal(fresh.admit(probe, eps), admit(probe * exact.up, eps))
        far = probe[(probe * up_lo >= thr) | ~(probe * up_hi >= thr)]  # decided by the bracket
        fresh = Factor._bracketed_bound(fac)
        np.testing.assert_array_equal(fresh.admit(far, eps), admit(far * exact.up, eps))
        assert fresh._up is None  # ... without the SVD
    assert (lazy.up, lazy.lo) == (exact.up, exact.lo)


def test_bracketed_bound_is_used_and_held_memory_is_counted():
    """A wide factor past d rows gets a bracketed bound (no SVD); nbytes counts the earlier factor it holds."""
    d = 160
    K = np.random.default_rng(44).standard_normal((3 * d, d))
    fac = _factor_of(K[: 2 * d])
    b = fac.bound()
    assert b is not None and b._up is None
    assert fac.nbytes() == fac.R.nbytes  # it holds the current factor: nothing extra
    fac.update(K[2 * d :])
    assert fac.bound() is b and fac.nbytes() == 2 * fac.R.nbytes
    assert b.admit(b.sqnorms(K[2 * d :]), 0.05).all()  # every new row can still reach 0.05 (scores ~ d/n)
    _ = b.up
    assert b._up is not None and fac.nbytes() == fac.R.nbytes


# --- rows certified independent (a short wide stream's states): scores exactly 1 without the SVD ------------


def _short_keys(kind, n=80, d=120, seed=11):
    """n < d keys; "dependent": row n // 2 in the span of two earlier rows and the last row a copy of row 3."""
    return short_wide_keys(kind, n, d, seed, combo_row=n // 2, duplicates=[(n - 1, 3)], near=1e-13)


@pytest.mark.parametrize("kind", ["gauss", "scaled", "float32", "dependent", "near"])
def test_rows_independent_only_when_the_svd_oracle_finds_n_independent_rows(kind):
    """At every state: True implies the oracle rank of the rows and of the factor is n; Gaussian rows are certified,
    exactly dependent ones never are."""
    K = _short_keys(kind)
    fac = Factor(K.shape[1])
    seen = []
    for a in range(0, K.shape[0], 16):
        fac.update(K[a : a + 16])
        rows = K[: a + 16]
        ok = fac.rows_independent()
        r = naive.rank(rows)
        if ok:
            assert r == fac.n
            assert naive.factor_rank(fac.R, fac.n) >= fac.n
        seen.append((fac.n, ok, r))
    if kind in ("gauss", "scaled", "float32"):
        assert all(ok for _, ok, _ in seen)
    if kind == "dependent":
        assert [ok for _, ok, _ in seen] == [n <= 40 for n, _, _ in seen]  # the dependent row is row 40
        assert seen[-1][2] == K.shape[0] - 2
    if kind == "near":
        assert not seen[-1][1]


def test_rows_independent_is_false_for_a_ridge_more_rows_than_d_and_no_rows():
    K = _short_keys("gauss", n=40, d=30)
    assert not Factor(30).rows_independent()
    fac = Factor(30, ridge=1.0)
    fac.update(K[:10])
    assert not fac.rows_independent()  # ridge scores are below 1
    fac = Factor(30)
    fac.update(K)
    assert not fac.rows_independent()  # 40 rows in d = 30
