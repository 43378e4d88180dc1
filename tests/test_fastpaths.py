"""The fast paths of issue 4 against the oracles: screening bounds, the update ramp, thread splits,
buffered small blocks, batched multi-head updates and the vectorised validation scan.

Every check compares with tests/naive.py (float64 SVD of the column-normalised keys) or with a
plain computation written here; none compares the library with itself only.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamlev as sl
from streamlev import _threads
from streamlev._factor import Factor, admit, at_least

from . import naive
from .strategies import eps_values, key_matrices


@pytest.fixture
def threads():
    """Restore the library's thread setting after a test changes it."""
    prev = _threads._USER_THREADS
    yield _threads
    _threads._USER_THREADS = prev


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
    from streamlev import _factor

    calls = []
    orig = _factor._compute_bounds
    monkeypatch.setattr(_factor, "_compute_bounds", lambda facs: calls.append(len(facs)) or orig(facs))
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


# -- threads -------------------------------------------------------------------------------------------
def test_results_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(5)
    K = rng.standard_normal((100_000, 24)).astype(np.float32)
    K[:, 0] *= 1e3
    out = {}
    for t in (1, 2, 3):
        threads.set_num_threads(t)
        sk = sl.OnlineLeverage(24, 2e-3).update(K)
        out[t] = (sl.leverage_scores(K), sk.universal_set(), sl.two_pass_universal_set(K, 2e-3))
    tau = naive.leverage(K.astype(np.float64))
    for t, (scores, U1, U2) in out.items():
        assert np.max(np.abs(scores - tau) / tau) < 1e-9, t
        np.testing.assert_array_equal(U1, out[1][1])
        np.testing.assert_array_equal(U2, out[1][1])
    naive.assert_set_matches(out[1][1], tau, 2e-3)


def test_set_num_threads_validates_and_restores(threads):
    with pytest.raises(ValueError, match="positive integer"):
        threads.set_num_threads(0)
    with pytest.raises(ValueError, match="positive integer"):
        threads.set_num_threads(1.5)
    threads.set_num_threads(3)
    assert threads.get_num_threads() == 3
    assert threads.set_num_threads(None) == 3
    # back to the default, which the environment gave at first use (other tests may change os.environ later)
    assert threads.get_num_threads() == threads._ENV_THREADS >= 1


def test_environment_sets_the_default_thread_count():
    code = "from streamlev import _threads; print(_threads.get_num_threads())"
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STREAMLEV_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }
    for extra, want in [
        ({"STREAMLEV_NUM_THREADS": "3"}, "3"),
        ({"OMP_NUM_THREADS": "1"}, "1"),
        ({"OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "1"}, "1"),
    ]:
        out = subprocess.run(
            [sys.executable, "-c", code], env={**base, **extra}, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == want, (extra, out.stdout, out.stderr)
    bad = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "STREAMLEV_NUM_THREADS": "many"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "STREAMLEV_NUM_THREADS must be a positive integer" in bad.stderr


def test_split_run_covers_rows_in_order_and_propagates_errors(threads):
    threads.set_num_threads(3)
    res = threads.split_run(lambda a, b: (a, b), 10, 3)
    assert res == [(0, 3), (3, 6), (6, 10)]
    # a split asked for inside a running split runs in one part (no hand-off that could wait on itself)
    nested = threads.split_run(lambda a, b: threads.split_run(lambda c, e: (c, e), b - a, 3), 8, 2)
    assert nested == [[(0, 4)], [(0, 4)]]

    def boom(a, b):
        if a > 0:
            raise RuntimeError("part failed")
        return a

    with pytest.raises(RuntimeError, match="part failed"):
        threads.split_run(boom, 10, 2)


def test_blas_threads_restores_the_previous_limit():
    from threadpoolctl import threadpool_info

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with _threads.blas_threads(1):
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        with _threads.blas_threads(1):
            pass
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        with _threads.blas_threads(2):  # a different limit nested inside is set and undone
            assert all(i["num_threads"] == 2 for i in threadpool_info() if i["user_api"] == "blas")
            with _threads.blas_threads(1):
                assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
            assert all(i["num_threads"] == 2 for i in threadpool_info() if i["user_api"] == "blas")
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


def test_blas_threads_holds_from_overlapping_threads():
    """Two threads in blas_threads(1) at once: the first one out must not lift the limit the other still needs."""
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    def counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    with threadpool_limits(2, user_api="blas"):  # a count other than 1 to come back to (also on 1-core machines)
        before = counts()
        seen = {}
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

        def first():
            with _threads.blas_threads(1):
                a_in.set()
                b_in.wait(30)
            a_out.set()

        def second():
            a_in.wait(30)
            with _threads.blas_threads(1):
                b_in.set()
                a_out.wait(30)
                seen["b, after a left"] = counts()
            seen["after both"] = counts()

        ts = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert seen["b, after a left"] == [1] * len(before)
        assert seen["after both"] == before
        assert counts() == before


# -- buffered small blocks -----------------------------------------------------------------------------
@given(key_matrices(min_n=1, max_n=120, max_d=5), eps_values, st.integers(0, 2**31))
def test_buffered_rows_count_everywhere(K, eps, seed):
    """Rows waiting in the buffer count in n_seen, bytes, merges and results."""
    rng = np.random.default_rng(seed)
    n, d = K.shape
    cut = int(rng.integers(0, n + 1))
    a = sl.OnlineLeverage(d, eps).update(K[:cut])
    assert a.n_seen == cut
    b = sl.OnlineLeverage(d, eps, start=cut).update(K[cut:])
    restored = sl.OnlineLeverage.from_bytes(a.to_bytes())
    assert restored.n_seen == cut
    merged = restored.merge(b)
    assert merged.n_seen == n
    np.testing.assert_array_equal(merged.universal_set(), sl.universal_set(K, eps))


def test_small_blocks_are_absorbed_in_bulk_and_still_exact():
    rng = np.random.default_rng(9)
    d, eps = 32, 5e-3
    K = rng.standard_normal((50_000, d))
    sk = sl.OnlineLeverage(d, eps)
    sizes = rng.integers(1, 300, size=300)  # about 45,000 rows in all
    a = 0
    for s in sizes:
        sk.update(K[a : a + s])
        a += s
        assert a <= K.shape[0]
        assert sk.n_seen == a
        assert sk._stream.pending.n < sk._stream.pending.cap  # never more than one buffer of rows outside the factor
    U = sk.universal_set()
    naive.assert_set_matches(U, naive.leverage(K[:a]), eps)
    assert sk._stream.pending.n == 0


def test_wide_keys_buffer_many_small_blocks_within_16_mb_and_stay_exact():
    """At d = 200 the buffer takes thousands of rows (a factor update per 256-row block cost 2x the time at d = 256)."""
    rng = np.random.default_rng(21)
    d, eps = 200, 0.02
    K = rng.standard_normal((25_000, d)) * np.logspace(-3, 3, d)  # column scales 1e-3..1e3
    sk = sl.OnlineLeverage(d, eps)
    assert (
        8 * d <= sk._stream.pending.cap and sk._stream.pending.cap * d * 8 <= 16 << 20
    )  # at least 8·d rows, at most 16 MB of float64
    most, a = 0, 0
    while a < K.shape[0]:
        s = int(rng.integers(1, 600))
        sk.update(K[a : a + s])
        a = min(a + s, K.shape[0])
        most = max(most, sk._stream.pending.n)
        assert sk._stream.pending.n < sk._stream.pending.cap
    assert most > (1 << 18) // d  # held more than the former 2^18-entry buffer
    naive.assert_set_matches(sk.universal_set(), naive.leverage(K), eps)
    mh = sl.MultiHeadLeverage(3, d, eps)
    assert all(st.pending.cap == mh._pend.cap <= (1 << 18) // d for st in mh._streams)  # heads keep 2 MB each


@pytest.mark.parametrize("m", [1, 5, 70, 400])
def test_triangular_pentagonal_qr_against_the_oracle(monkeypatch, m):
    """tp_qr_r (LAPACK dtpqrt on [R; B]) gives a triangular factor whose scores are the oracle's, chunked or not."""
    from streamlev import _factor

    rng = np.random.default_rng(43 + m)
    d = 24
    scales = np.logspace(-6, 6, d)
    A0 = rng.standard_normal((40, d)) * scales
    B = (rng.standard_normal((m, d)) * scales).astype(np.float32 if m == 70 else np.float64)
    R0 = np.linalg.qr(A0, mode="r")  # numpy's own Householder QR, not the library's
    keep = R0.copy()
    K = np.vstack([A0, B.astype(np.float64)])
    for entries in (_factor.TP_ENTRIES, 7 * d):  # one dtpqrt call, then chunks of 7 rows
        monkeypatch.setattr(_factor, "TP_ENTRIES", entries)
        R = _factor.tp_qr_r(R0, B)
        assert R.shape == (d, d) and R.flags.c_contiguous
        np.testing.assert_array_equal(np.tril(R, -1), 0.0)
        np.testing.assert_array_equal(R0, keep)  # the input factor is not modified
        tau = np.sum(np.linalg.solve(R.T, K.T) ** 2, axis=0)
        np.testing.assert_allclose(tau, naive.leverage(K), rtol=1e-8, atol=1e-14)
    # a merge: B triangular itself (trap = d), and a ridge-style diagonal
    R2 = np.linalg.qr(B.astype(np.float64), mode="r") if m >= d else None
    if R2 is not None:
        Rm = _factor.merge_r(R0, R2)
        np.testing.assert_allclose(np.sum(np.linalg.solve(Rm.T, K.T) ** 2, axis=0), naive.leverage(K), rtol=1e-8)
    lam = 0.3
    Rl = _factor.tp_qr_r(R0, np.sqrt(lam) * np.eye(d), trap=d)
    np.testing.assert_allclose(
        np.sum(np.linalg.solve(Rl.T, A0.T) ** 2, axis=0), naive.ridge_leverage(A0, lam), rtol=1e-8
    )


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
    from streamlev._factor import TRI_INV_LAPACK_MIN_DIM, rinv_many, tri_inv

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


def test_stream_evictions_run_only_when_candidates_exceed_rank_over_eps(monkeypatch):
    """An eviction decided before buffered rows are absorbed is re-checked with the rank after them (d = 300)."""
    from streamlev.online.single import Stream

    useful = []
    orig = Stream.evict

    def spy(self):
        self.flush()  # what evict does first
        useful.append(self.store.count * self.eps > self.factor.rank)
        return orig(self)

    rng = np.random.default_rng(67)
    d, eps = 300, 0.1
    K = rng.standard_normal((9000, d)) * np.logspace(-3, 3, d)
    K[::97] *= 40.0
    sk = sl.OnlineLeverage(d, eps)
    monkeypatch.setattr(Stream, "evict", spy)
    for a in range(0, K.shape[0], 256):
        sk.update(K[a : a + 256])
    assert useful and all(useful), useful  # some evictions ran, none while every candidate could stay
    monkeypatch.setattr(Stream, "evict", orig)
    naive.assert_set_matches(sk.universal_set(), naive.leverage(K), eps)


# -- multi-head batched updates ------------------------------------------------------------------------
def _heads_of_every_kind(rng, n, d):
    base = rng.standard_normal((n, d))
    return np.stack(
        [
            base,
            rng.standard_normal((n, d)) * np.logspace(-5, 5, d),  # outlier channels
            rng.standard_normal((n, 3)) @ rng.standard_normal((3, d)),  # rank 3: never the fast tier
            base * 1e120,  # squares overflow: no Gram tier
            np.vander(np.sort(rng.uniform(0, 1, n)), d),  # ill-conditioned: explicit-Y tier
        ]
    )


@pytest.mark.parametrize("nthreads", [1, 2])
def test_multihead_heads_in_different_regimes_match_the_oracle(threads, nthreads):
    threads.set_num_threads(nthreads)
    rng = np.random.default_rng(2)
    H, n, d, eps = 5, 12_000, 8, 0.01
    KH = _heads_of_every_kind(rng, n, d)
    mh = sl.MultiHeadLeverage(H, d, eps)
    a = 0
    for s in rng.integers(50, 700, size=200):
        mh.update(KH[:, a : a + s])
        a += s
        if a >= n:
            break
    a = min(a, n)
    assert mh.n_seen == a
    sets = mh.universal_set()
    for h in range(H):
        naive.assert_set_matches(sets[h], naive.leverage(KH[h, :a]), eps)
        np.testing.assert_array_equal(sets[h], sl.universal_set(KH[h, :a], eps))
    np.testing.assert_array_equal(sets[3], sets[0])  # leverage is invariant to scaling K


def test_multihead_head_view_and_bytes_include_buffered_rows():
    rng = np.random.default_rng(4)
    KH = rng.standard_normal((3, 1000, 6))
    mh = sl.MultiHeadLeverage(3, 6, 0.05).update(KH[:, :500])
    assert mh.n_seen == 500 and mh.head(1).n_seen == 500
    other = sl.MultiHeadLeverage.from_bytes(mh.to_bytes())
    mh.update(KH[:, 500:])
    other.update(KH[:, 500:])
    assert other.to_bytes() == mh.to_bytes()
    for h in range(3):
        np.testing.assert_array_equal(mh.universal_set(h), sl.universal_set(KH[h], 0.05))


# -- the validation scan -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows", [7, 40_000])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_validation_names_the_first_bad_row_in_every_layout(dtype, rows, bad):
    rng = np.random.default_rng(1)
    K = rng.standard_normal((rows, 12)).astype(dtype)
    where = [rows - 1, rows // 2 + 1]
    for r in where:
        K[r, 5] = bad
    first = min(where)
    for X in (K, np.asfortranarray(K), K[:, ::-1]):
        with pytest.raises(ValueError, match=f"row {first};"):
            sl.OnlineLeverage(12, 0.1).update(X)
    with pytest.raises(ValueError, match=rf"stream \(1,\), row {first};"):
        sl.MultiHeadLeverage(2, 12, 0.1).update(np.stack([np.ones_like(K), K]))


def test_multihead_one_token_per_call_matches_the_oracle():
    """Decoding: (H, d) rows one at a time go to the stacked chunk every head shares; bytes and merges see them."""
    rng = np.random.default_rng(8)
    H, d, n, eps = 4, 6, 900, 0.05
    KH = rng.standard_normal((H, n, d)) * np.array([1.0, 1e-4, 1e4, 3.0])[:, None, None]
    KH[2, ::97] *= 50  # heavy rows in one head only: its admissions differ from the others'
    mh = sl.MultiHeadLeverage(H, d, eps)
    for t in range(600):
        mh.update(KH[:, t])
        if t == 300:
            copy = sl.MultiHeadLeverage.from_bytes(mh.to_bytes())
    rest = sl.MultiHeadLeverage(H, d, eps, start=600).update(KH[:, 600:])
    mh.merge(rest)
    for h in range(H):
        np.testing.assert_array_equal(mh.universal_set(h), sl.universal_set(KH[h], eps))
        naive.assert_set_matches(mh.universal_set(h), naive.leverage(KH[h]), eps)
    for t in range(301, n):
        copy.update(KH[:, t])
    assert copy.to_bytes() == sl.MultiHeadLeverage.from_bytes(copy.to_bytes()).to_bytes()
    for h in range(H):
        np.testing.assert_array_equal(copy.universal_set(h), sl.universal_set(KH[h], eps))


# -- small kernels against plain numpy / LAPACK ---------------------------------------------------------
def test_batched_triangular_inverse_and_column_norms():
    import scipy.linalg as sla

    from streamlev._factor import colnorms
    from streamlev._kernels import tri_inv_upper_batched

    rng = np.random.default_rng(21)
    d = 16
    U = np.stack(
        [
            np.triu(rng.standard_normal((d, d))) + 4 * np.eye(d),
            np.linalg.qr(np.vander(np.linspace(0, 1, 200), d))[1],  # cond ~1e8
            (np.triu(rng.standard_normal((d, d))) + np.eye(d)) * np.logspace(-150, 150, d),
        ]
    )
    inv = tri_inv_upper_batched(np.ascontiguousarray(U))
    for k in range(U.shape[0]):
        ref = sla.solve_triangular(U[k], np.eye(d))
        assert np.all(np.tril(inv[k], -1) == 0)
        # componentwise-accurate triangular inversion: |X - X*| <= c·d·u·|X||U||X| (Higham, ch. 8)
        tol = 64 * d * np.finfo(float).eps * (np.abs(ref) @ np.abs(U[k]) @ np.abs(ref))
        assert np.all(np.abs(inv[k] - ref) <= tol + 1e-300)

    R = rng.standard_normal((4, 7, 5))
    R[1] *= 1e-305  # squares underflow
    R[2] *= 1e250  # squares overflow
    R[3, :, 2] = 0.0  # a zero column
    R[3, 0, 3] = 5e-324  # a denormal alone in its column
    ref = np.array(
        [
            [float(np.sqrt(np.sum((c / np.abs(c).max()) ** 2)) * np.abs(c).max()) if np.any(c) else 0.0 for c in M.T]
            for M in R
        ]
    )
    got = colnorms(R)
    np.testing.assert_allclose(got, ref, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(colnorms(R[0]), got[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scan_screen_rows_against_numpy(dtype):
    from streamlev._kernels import scan_screen_rows

    rng = np.random.default_rng(22)
    H, cap, d, a, b = 3, 50, 9, 12, 31
    P = (rng.standard_normal((H, cap, d)) * np.logspace(-3, 3, d)).astype(dtype)
    dinv = rng.random((H, d)) + 0.1
    norms = np.empty((H, b - a))
    bad, big = scan_screen_rows(P, a, b, dinv, norms)
    rows = P[:, a:b].astype(np.float64)
    assert bad == -1 and big == np.abs(rows).max()
    np.testing.assert_allclose(norms, np.sum((rows * dinv[:, None, :]) ** 2, axis=2), rtol=1e-14)
    P[:, :a] = np.nan  # outside the range: ignored
    P[:, b:] = np.inf
    assert scan_screen_rows(P, a, b, dinv, norms)[0] == -1
    P[2, a + 3, 4] = -np.inf
    P[1, b - 1, 0] = np.nan
    assert scan_screen_rows(P, a, b, dinv, norms)[0] == 1 * (b - a) + (b - 1 - a)  # first in (head, row) order


# -- multi-head blocks staged in the shared buffer -------------------------------------------------------
def _count_staged(monkeypatch):
    from streamlev.online import MultiHeadLeverage

    seen = {"staged": 0, "general": 0}
    orig = MultiHeadLeverage._stage

    def spy(self, X, ids):
        out = orig(self, X, ids)
        seen["staged" if out is not None else "general"] += 1
        return out

    monkeypatch.setattr(MultiHeadLeverage, "_stage", spy)
    return seen


def test_multihead_staged_blocks_of_any_layout_match_the_oracle(monkeypatch):
    """Blocks copied straight into the shared buffer and screened there give the same sketch for any strides."""
    seen = _count_staged(monkeypatch)
    rng = np.random.default_rng(23)
    n, d, eps = 4000, 8, 0.02
    KH = _heads_of_every_kind(rng, n, d)
    H = KH.shape[0]
    layouts = {
        "views": lambda X: X,
        "contiguous": np.ascontiguousarray,
        "token-major": lambda X: np.ascontiguousarray(X.transpose(1, 0, 2)).transpose(1, 0, 2),
        "reversed-columns": lambda X: np.ascontiguousarray(X[:, :, ::-1])[:, :, ::-1],
    }
    out = {}
    for name, lay in layouts.items():
        mh = sl.MultiHeadLeverage(H, d, eps)
        for a in range(0, n, 80):
            mh.update(lay(KH[:, a : a + 80]))
        out[name] = (mh.to_bytes(), mh.universal_set())
    assert seen["staged"] > 3 * seen["general"]  # the staged path is what these blocks take
    for name in layouts:
        assert out[name][0] == out["views"][0], name
    for h in range(H):
        naive.assert_set_matches(out["views"][1][h], naive.leverage(KH[h]), eps)

    monkeypatch.setattr(sl.MultiHeadLeverage, "_stage", lambda self, X, ids: None)  # the general path only
    mh = sl.MultiHeadLeverage(H, d, eps)
    for a in range(0, n, 80):
        mh.update(KH[:, a : a + 80])
    for h, u in enumerate(mh.universal_set()):
        np.testing.assert_array_equal(u, out["views"][1][h])


def _assert_bad_blocks_change_nothing(mh, block, inf):
    """Copies of ``block`` with NaN, ``inf`` or 1e260 planted (stream 2, rows 7 and 30), and repeated ids: each is
    refused with a message naming the problem, and the sketch's bytes do not change."""
    before = mh.to_bytes()
    for bad, pattern in [
        (np.nan, r"NaN or infinity in stream \(2,\), row 7;"),
        (inf, r"NaN or infinity in stream \(2,\), row 7;"),
        (1e260, r"magnitude 1e\+260"),
    ]:
        if block.dtype == np.float32 and bad == 1e260:
            continue  # not representable in float32
        X = block.copy()
        X[2, 7, 3] = bad
        X[2, 30, 0] = bad
        with pytest.raises(ValueError, match=pattern):
            mh.update(X)
        assert mh.to_bytes() == before
    with pytest.raises(ValueError, match="ids within a block must be distinct"):
        mh.update(block, ids=np.zeros(block.shape[1], dtype=int))
    assert mh.to_bytes() == before


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_multihead_staged_refusals_change_nothing(monkeypatch, dtype):
    seen = _count_staged(monkeypatch)
    rng = np.random.default_rng(24)
    H, n, d, eps = 3, 3000, 6, 0.05
    KH = rng.standard_normal((H, n, d)).astype(dtype)
    mh = sl.MultiHeadLeverage(H, d, eps)
    for a in range(0, 2000, 50):
        mh.update(KH[:, a : a + 50])
    before, staged = mh.to_bytes(), seen["staged"]
    _assert_bad_blocks_change_nothing(mh, KH[:, 2000:2050], -np.inf)
    assert mh.to_bytes() == before
    assert seen["staged"] == staged  # every refused block went to the general path, which named the problem
    for a in range(2000, n, 50):
        mh.update(KH[:, a : a + 50])
    assert seen["staged"] > staged
    for h in range(H):
        np.testing.assert_array_equal(mh.universal_set(h), sl.universal_set(KH[h], eps))


# -- Gram matrices by the numba kernel (no BLAS) ---------------------------------------------------------------
@pytest.mark.parametrize(("m", "d"), [(1, 1), (3, 5), (257, 11), (600, 64), (9, 130)])
@pytest.mark.parametrize("layout", ["float64", "float32", "row-view", "reversed-columns", "read-only"])
def test_gram_upper_against_extended_precision(m, d, layout):
    from streamlev._kernels import gram_upper, gram_upper_norms

    rng = np.random.default_rng(m * 1000 + d)
    base = rng.standard_normal((2 * m, d)) * np.logspace(-4, 4, d)
    X = {
        "float64": base[:m].copy(),
        "float32": base[:m].astype(np.float32),
        "row-view": base[::2],
        "reversed-columns": np.ascontiguousarray(base[:m, ::-1])[:, ::-1],
        "read-only": base[:m].copy(),
    }[layout]
    X.setflags(write=layout != "read-only")
    XL = X.astype(np.longdouble)
    ref = XL.T @ XL  # 64-bit mantissa sums, no BLAS
    bound = 2 * m * np.finfo(np.float64).eps * (np.abs(XL).T @ np.abs(XL))  # the m·u error bound of any order
    start = rng.standard_normal((d, d))  # the kernel adds to C, upper triangle only
    C = start.copy()
    gram_upper(X, C)
    up = np.triu(np.ones((d, d), dtype=bool))
    assert np.all(np.abs((C - start).astype(np.longdouble) - ref)[up] <= bound[up] + 4 * np.abs(start[up]) * 1e-16)
    assert np.array_equal(C[~up], start[~up])
    dinv = rng.random(d) + 0.5
    C0, C2, norms = np.zeros((d, d)), np.zeros((d, d)), np.full(m, np.nan)
    gram_upper(X, C0)
    gram_upper_norms(X, C2, dinv, norms)
    np.testing.assert_array_equal(C2, C0)  # the same sums in the same order
    assert np.all(np.tril(C2, -1) == 0)
    np.testing.assert_allclose(norms, np.sum((X.astype(np.float64) * dinv) ** 2, axis=1), rtol=1e-13)


def test_gram_upper_propagates_nan_and_inf():
    from streamlev._kernels import gram_upper, gram_upper_norms

    X = np.ones((300, 9))
    X[200, 4] = np.nan
    X[7, 1] = np.inf
    C, norms = np.zeros((9, 9)), np.zeros(300)
    gram_upper_norms(X, C, np.ones(9), norms)
    assert np.isnan(C[4, 4]) and np.isnan(C[0, 4]) and np.isinf(C[1, 1]) and np.isnan(C[1, 4])
    assert np.isnan(norms[200]) and np.isinf(norms[7]) and np.all(np.isfinite(np.delete(norms, [7, 200])))
    C3 = np.zeros((9, 9))
    gram_upper(X[8:], C3)
    assert np.isnan(C3[4, 8]) and C3[0, 0] == 292.0


def test_gram_sums_blocks_into_the_symmetric_matrix_with_norms(threads):
    from streamlev._factor import gram

    rng = np.random.default_rng(41)
    B = rng.standard_normal((10_000, 13)) * np.logspace(-3, 3, 13)
    dinv = 1.0 / np.linalg.norm(B, axis=0)
    for nthreads in (1, 2):
        threads.set_num_threads(nthreads)
        wide = rng.standard_normal((700, 300))  # wider than GRAM_KERNEL_MAX_DIM: BLAS over the whole block
        for X in (B, B.astype(np.float32), B[::3], np.arange(60).reshape(20, 3), wide, wide.astype(np.float32)):
            X64 = X.astype(np.float64)
            ref = X64.T @ X64
            C = gram(X)
            assert np.array_equal(C, C.T)
            np.testing.assert_allclose(C, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
            dv = np.resize(dinv, X.shape[1])
            C2, t = gram(X, dinv=dv)
            np.testing.assert_array_equal(C2, C)
            np.testing.assert_allclose(t, np.sum((X64 * dv) ** 2, axis=1), rtol=1e-13)


# -- multi-head blocks taken without a copy: one kernel screens them and adds their Gram matrices -----------
def _kernel_args(X, rng, budget=1e300, W=None):
    """Arguments for heads_screen_gram on a block X (H, m, d): random positive scalings and bounds."""

    H, m, d = X.shape
    dinv = rng.random((H, d)) + 0.5
    up = rng.random(H) * 0.01
    if W is None:
        W = np.zeros((H, d, d))
    return dict(
        X=X,
        dinv=dinv,
        up=up,
        thr=0.003,
        W=W,
        budget=budget,
        acc_tr=np.zeros(H),
        hi=np.zeros((H, d, d)),
        lo=np.zeros((H, d, d)),
        C=np.zeros((H, d, d)),
        nrec=np.zeros(H, dtype=np.int64),
        T=np.zeros((H, d, d)),
        keep=np.zeros((H, m), dtype=bool),
        took=np.zeros(H, dtype=bool),
        rows=np.zeros(H, dtype=np.int64),
        limit=np.full(H, 10**9),
        kept=np.zeros(H, dtype=np.int64),
        tk=np.zeros((H, 0, d), dtype=X.dtype),
        tid=np.zeros((H, 0), dtype=np.int64),
        used=np.zeros(H, dtype=np.int64),
        ids=np.zeros(0, dtype=np.int64),
        id0=0,
    )


def _run_kernel(args, parallel):
    from streamlev import _kernels as K
    from streamlev._threads import parallel_region

    if not parallel:
        return K.heads_screen_gram_serial(*args.values())
    with parallel_region(2):
        return K.heads_screen_gram(*args.values())


@pytest.mark.parametrize("layout", ["contiguous", "head-view", "token-major", "reversed-columns", "float32"])
def test_heads_screen_gram_against_numpy(layout):
    rng = np.random.default_rng(31)
    H, m, d = 5, 137, 11
    base = rng.standard_normal((H, 3 * m, d)) * np.logspace(-3, 3, d)
    X = {
        "contiguous": np.ascontiguousarray(base[:, :m]),
        "head-view": base[:, m : 2 * m],
        "token-major": np.ascontiguousarray(base[:, :m].transpose(1, 0, 2)).transpose(1, 0, 2),
        "reversed-columns": np.ascontiguousarray(base[:, :m, ::-1])[:, :, ::-1],
        "float32": base[:, :m].astype(np.float32),
    }[layout]
    X64 = X.astype(np.float64)
    out = {}
    for parallel in (False, True):
        args = _kernel_args(X, np.random.default_rng(5))
        for _ in range(20):  # 20 blocks: the recent sums join hi + lo after 16
            done, kept, refused, due = _run_kernel(args, parallel)
            assert (done, refused, due) == (1, 0, 0)
        u = np.sum((X64 * args["dinv"][:, None, :]) ** 2, axis=2) * args["up"][:, None]
        np.testing.assert_array_equal(args["keep"], u >= args["thr"])
        assert kept == int(np.sum(u >= args["thr"]))
        np.testing.assert_allclose(args["acc_tr"], 20 * u.sum(axis=1), rtol=1e-12)
        assert np.all(args["rows"] == 20 * m) and args["took"].all()
        total = args["hi"] + (args["lo"] + args["C"])
        for h in range(H):
            ref = 20 * (X64[h].T @ X64[h])
            scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
            assert np.all(np.abs(np.triu(total[h] - ref)) <= 1e-13 * scale)
            assert np.all(np.tril(total[h], -1) == 0) and np.all(np.tril(args["C"][h], -1) == 0)
        out[parallel] = [args[k].copy() for k in ("hi", "lo", "C", "keep", "acc_tr")]
    for a, b in zip(out[False], out[True]):  # each head is one thread's work: the same bits either way
        np.testing.assert_array_equal(a, b)


def test_heads_screen_gram_exact_trace_when_the_bound_is_loose_and_refusals():
    rng = np.random.default_rng(32)
    H, m, d = 4, 40, 6
    X = rng.standard_normal((H, m, d))
    A = rng.standard_normal((H, d, d))
    M = np.linalg.inv(A @ A.transpose(0, 2, 1) + d * np.eye(d))
    M = 0.5 * (M + M.transpose(0, 2, 1))
    W = 2 * np.triu(M) - M * np.eye(d)
    exact = np.array([np.trace(M[h] @ X[h].T @ X[h]) for h in range(H)])
    args = _kernel_args(X, rng, budget=0.0, W=W)
    args["up"][:] = 1.0  # the bounds' sum exceeds the budget: the exact trace decides
    args["budget"] = float(np.sort(exact)[1]) * 1.000001  # two heads within, two beyond
    done, kept, refused, due = _run_kernel(args, True)
    assert done == 1 and refused == 2
    np.testing.assert_array_equal(args["took"], exact <= args["budget"])
    np.testing.assert_allclose(args["acc_tr"], np.where(args["took"], exact, 0.0), rtol=1e-12)
    for h in range(H):  # the block's Gram matrix is in T for every head, added only where taken
        np.testing.assert_allclose(np.triu(args["T"][h]), np.triu(X[h].T @ X[h]), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(args["hi"][h], args["T"][h] if args["took"][h] else 0.0, rtol=0, atol=0)
    before = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[3, 17, 2] = bad
        args["X"] = Y
        assert _run_kernel(args, True) == (0, 0, 0, 0)
        for k, v in before.items():
            if k not in ("X", "keep", "T", "kept"):  # scratch
                np.testing.assert_array_equal(args[k], v, err_msg=k)


def _spy_accumulate(monkeypatch):
    from streamlev.online import MultiHeadLeverage

    seen = {"kernel": 0, "other": 0}
    orig = MultiHeadLeverage._accumulate

    def spy(self, X, ids):
        done = orig(self, X, ids)
        seen["kernel" if done else "other"] += 1
        return done

    monkeypatch.setattr(MultiHeadLeverage, "_accumulate", spy)
    return seen


def _tier1_heads(rng, n, d):
    base = rng.standard_normal((n, d))
    return np.stack(
        [
            base,
            rng.standard_normal((n, d)) * np.logspace(-5, 5, d),  # outlier channels
            base @ (rng.standard_normal((d, d)) + 3 * np.eye(d)),  # correlated channels
            rng.standard_t(3, size=(n, d)),  # heavy-tailed rows
        ]
    )


@pytest.mark.parametrize("nthreads", [1, 2])
def test_multihead_kernel_path_matches_the_oracle(monkeypatch, threads, nthreads):
    """Blocks of 64+ rows go through the kernel once the factors are well conditioned; sets as the oracle's."""
    threads.set_num_threads(nthreads)
    seen = _spy_accumulate(monkeypatch)
    rng = np.random.default_rng(33)
    n, d, eps = 30_000, 8, 0.002
    KH = _tier1_heads(rng, n, d)
    KH[1, 20_000] *= 1e4  # a row far outside the span in one head: over its trace budget, Householder
    KH[3, 25_000:25_100] = 0  # zero rows
    H = KH.shape[0]
    mh = sl.MultiHeadLeverage(H, d, eps)
    a = 0
    for s in rng.integers(64, 900, size=400):
        mh.update(KH[:, a : a + s])
        a += s
        if a >= n:
            break
    a = min(a, n)
    assert seen["kernel"] > 10 * seen["other"]
    assert mh.n_seen == a
    sets = mh.universal_set()
    for h in range(H):
        naive.assert_set_matches(sets[h], naive.leverage(KH[h, :a]), eps)
    assert 20_000 in sets[1]


def test_multihead_kernel_path_bytes_do_not_depend_on_layout_threads_or_restores(monkeypatch, threads):
    seen = _spy_accumulate(monkeypatch)
    rng = np.random.default_rng(34)
    n, d, eps = 12_000, 8, 0.005
    KH = _tier1_heads(rng, n, d)
    layouts = {
        "views": lambda X: X,
        "contiguous": np.ascontiguousarray,
        "token-major": lambda X: np.ascontiguousarray(X.transpose(1, 0, 2)).transpose(1, 0, 2),
        "reversed-columns": lambda X: np.ascontiguousarray(X[:, :, ::-1])[:, :, ::-1],
    }
    out = {}
    for nthreads in (1, 2):
        threads.set_num_threads(nthreads)
        for name, lay in layouts.items():
            mh = sl.MultiHeadLeverage(KH.shape[0], d, eps)
            for a in range(0, n, 200):
                mh.update(lay(KH[:, a : a + 200]))
                if a == 6000:  # serialise mid-stream: the restored sketch continues identically
                    mh = sl.MultiHeadLeverage.from_bytes(mh.to_bytes())
            out[name, nthreads] = mh.to_bytes()
    assert seen["kernel"] > 3 * seen["other"]
    assert len(set(out.values())) == 1
    sets = sl.MultiHeadLeverage.from_bytes(out["views", 1]).universal_set()
    for h in range(KH.shape[0]):
        naive.assert_set_matches(sets[h], naive.leverage(KH[h]), eps)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_multihead_kernel_refusals_change_nothing(monkeypatch, dtype):
    seen = _spy_accumulate(monkeypatch)
    rng = np.random.default_rng(35)
    H, n, d, eps = 3, 6000, 6, 0.01
    KH = rng.standard_normal((H, n, d)).astype(dtype)
    mh = sl.MultiHeadLeverage(H, d, eps)
    for a in range(0, 4000, 100):
        mh.update(KH[:, a : a + 100])
    assert seen["kernel"] > 0
    before = mh.to_bytes()
    _assert_bad_blocks_change_nothing(mh, KH[:, 4000:4100], np.inf)
    with pytest.raises(ValueError, match="already fed"):
        mh.update(KH[:, 4000:4100], ids=np.arange(100))
    assert mh.to_bytes() == before
    for a in range(4000, n, 100):
        mh.update(KH[:, a : a + 100])
    for h in range(H):
        naive.assert_set_matches(mh.universal_set(h), naive.leverage(KH[h]), eps)


def test_multihead_kernel_waits_for_32_rows_per_dimension(monkeypatch):
    """Early in the stream (factor rows < 32·d) blocks go to the shared buffer; then to the kernel; exact throughout."""
    from streamlev.online import MultiHeadLeverage

    calls = []
    orig = MultiHeadLeverage._accumulate

    def spy(self, X, ids):
        rows = min(st.factor.n for st in self._streams)
        done = orig(self, X, ids)
        calls.append((rows, done))
        return done

    monkeypatch.setattr(MultiHeadLeverage, "_accumulate", spy)
    rng = np.random.default_rng(38)
    H, n, d, eps = 3, 6000, 32, 0.05
    KH = rng.standard_normal((H, n, d)) * np.logspace(-3, 3, d)
    mh = sl.MultiHeadLeverage(H, d, eps)
    for a in range(0, n, 128):
        mh.update(KH[:, a : a + 128])
    assert all(rows >= 32 * d for rows, done in calls if done)
    assert any(done for _, done in calls) and not calls[0][1]
    for h in range(H):
        naive.assert_set_matches(mh.universal_set(h), naive.leverage(KH[h]), eps)


def test_multihead_kernel_takes_finite_large_keys_through_the_general_path(monkeypatch):
    """|x| >= 1e100 (squares unsafe for the Gram path) is valid input: handled by the general path, exactly."""
    seen = _spy_accumulate(monkeypatch)
    rng = np.random.default_rng(36)
    H, n, d, eps = 2, 3000, 5, 0.02
    KH = rng.standard_normal((H, n, d))
    KH[1, 2500:2600] *= 1e120
    mh = sl.MultiHeadLeverage(H, d, eps)
    for a in range(0, n, 100):
        mh.update(KH[:, a : a + 100])
    assert seen["kernel"] > 0 and seen["other"] > 0
    for h in range(H):
        naive.assert_set_matches(mh.universal_set(h), naive.leverage(KH[h]), eps)


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


def test_parallel_kernels_are_off_in_a_forked_child():
    """GNU OpenMP cannot run in a child forked after it ran: the child uses the serial kernels and gets the oracle."""
    code = r"""
import multiprocessing as mp, numpy as np, streamlev as sl
from streamlev import _threads

def work(q):
    rng = np.random.default_rng(1)
    K = rng.standard_normal((3, 6000, 8))
    mh = sl.MultiHeadLeverage(3, 8, 0.01)
    for a in range(0, 6000, 1000):
        mh.update(K[:, a:a + 1000])
    q.put((_threads._PAR_FORKED, [u.tolist() for u in mh.universal_set()]))

if __name__ == "__main__":
    rng = np.random.default_rng(1)
    K = rng.standard_normal((3, 6000, 8))
    mh = sl.MultiHeadLeverage(3, 8, 0.01)
    for a in range(0, 6000, 1000):
        mh.update(K[:, a:a + 1000])
    assert _threads._PAR_USED
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=work, args=(q,))
    p.start()
    forked, sets = q.get(timeout=120)
    p.join(60)
    assert p.exitcode == 0 and forked
    assert sets == [u.tolist() for u in mh.universal_set()]
    print("ok")
"""
    env = dict(os.environ, STREAMLEV_NUM_THREADS="2")
    res = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300, env=env
    )
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


def test_parallel_region_sets_and_restores_numba_threads_and_leaves_blas_alone():
    import numba
    from threadpoolctl import threadpool_info

    from streamlev._threads import parallel_region

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = (numba.get_num_threads(), numba.get_parallel_chunksize(), blas())
    with parallel_region(1):
        assert (numba.get_num_threads(), numba.get_parallel_chunksize(), blas()) == (1, 1, before[2])
    assert (numba.get_num_threads(), numba.get_parallel_chunksize(), blas()) == before


def test_heads_screen_gram_copies_kept_rows_to_the_tail():
    rng = np.random.default_rng(38)
    H, m, d = 3, 50, 5
    X = rng.standard_normal((H, m, d))
    for ids in (np.zeros(0, dtype=np.int64), rng.permutation(10**6)[:m].astype(np.int64)):
        args = _kernel_args(X, np.random.default_rng(6))
        args["up"][:] = 0.01 / np.median(np.sum((X * args["dinv"][:, None, :]) ** 2, axis=2))  # about half kept
        args.update(
            tk=np.full((H, 120, d), np.nan),
            tid=np.full((H, 120), -1, dtype=np.int64),
            used=np.array([0, 30, 70]),
            ids=ids,
            id0=1000,
        )
        done, kept, _, _ = _run_kernel(args, True)
        assert done == 2 and kept == args["keep"].sum() and 0 < kept < H * m
        want_ids = ids if ids.size else 1000 + np.arange(m)
        for h, start in enumerate((0, 30, 70)):
            k = int(args["keep"][h].sum())
            assert args["kept"][h] == k and args["used"][h] == start + k
            np.testing.assert_array_equal(args["tk"][h, start : start + k], X[h, args["keep"][h]])
            np.testing.assert_array_equal(args["tid"][h, start : start + k], want_ids[args["keep"][h]])
            assert np.isnan(args["tk"][h, start + k :]).all()
        args["used"][:] = [0, 30, 71]  # head 2 has no room for 50 more rows: nobody's rows are copied
        args["tk"][:] = np.nan
        done, kept, _, _ = _run_kernel(args, False)
        assert done == 1 and np.isnan(args["tk"]).all()
        np.testing.assert_array_equal(args["used"], [0, 30, 71])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_classify_rows_and_compact_rows_against_numpy(dtype):
    from streamlev._kernels import classify_rows, compact_rows

    rng = np.random.default_rng(39)
    B = (rng.standard_normal((500, 9)) * np.logspace(-2, 2, 9)).astype(dtype)
    dinv = 1.0 / np.linalg.norm(B.astype(np.float64), axis=0)
    t = np.sum((B.astype(np.float64) * dinv) ** 2, axis=1)
    up, lo = 3.0, 0.5
    e = float(np.median(t))
    codes = np.empty(500, dtype=np.uint8)
    und = classify_rows(B, dinv, up, lo, e, codes)
    np.testing.assert_array_equal(codes == 1, t * lo >= e)
    np.testing.assert_array_equal(codes == 2, (t * up >= e) & ~(t * lo >= e))
    assert und == int(np.sum(codes == 2)) > 0
    keep = rng.random(500) < 0.4
    A = B.copy()
    k = compact_rows(A, keep)
    assert k == keep.sum()
    np.testing.assert_array_equal(A[:k], B[keep])


def test_multihead_evictions_split_over_threads_give_the_same_bytes(threads):
    rng = np.random.default_rng(40)
    H, n, d, eps = 6, 40_000, 8, 5e-4  # 16,000 candidates per head before the first eviction
    KH = _tier1_heads(rng, n, d)[[0, 1, 2, 3, 0, 1]] * np.arange(1, 7)[:, None, None]
    out = []
    for nthreads in (1, 2):
        threads.set_num_threads(nthreads)
        mh = sl.MultiHeadLeverage(H, d, eps)
        for a in range(0, n, 500):
            mh.update(KH[:, a : a + 500])
        out.append(mh.to_bytes())
    assert out[0] == out[1]
    sets = sl.MultiHeadLeverage.from_bytes(out[0]).universal_set()
    for h in range(H):
        naive.assert_set_matches(sets[h], naive.leverage(KH[h]), eps)


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
