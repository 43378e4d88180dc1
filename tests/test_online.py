"""OnlineLeverage against the exact oracle: one pass, online ridge scores, accessors, ids, storage.

Block sizes, merge orders, mid-stream serialisation and refused blocks are properties every exact sketch
shares: tests/test_conformance.py checks them over each sketch class, tests/test_inputs_sketches.py the
refusal messages.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamlev as sl
from streamlev import OnlineLeverage
from streamlev.online import single

from . import naive
from .strategies import eps_values, key_matrices, short_wide_keys


def feed(sk, K, sizes):
    a = 0
    for s in sizes:
        sk.update(K[a : a + s])
        a += s
    assert a == K.shape[0]
    return sk


def random_sizes(rng, n):
    sizes = []
    left = n
    while left:
        s = int(min(left, rng.integers(0, 40)))
        sizes.append(s)
        left -= s
    return sizes


@given(key_matrices(max_n=120), eps_values, st.floats(0, 10), st.integers(0, 2**31))
def test_one_pass_equals_oracle(K, eps, ridge, seed):
    ridge = 0.0 if ridge < 2 else ridge
    rng = np.random.default_rng(seed)
    sk = feed(OnlineLeverage(K.shape[1], eps, ridge=ridge), K, random_sizes(rng, K.shape[0]))
    K64 = np.asarray(K, float)
    tau = naive.leverage(K64) if ridge == 0 else naive.ridge_leverage(K64, ridge)
    naive.assert_set_matches(sk.universal_set(), tau, eps)
    assert sk.n_seen == K.shape[0]
    r = naive.rank(K64) if ridge == 0 else K.shape[1]
    assert sk.n_candidates <= r / eps * (1 + 1e-9)


@given(
    key_matrices(max_n=80, kinds=("gaussian", "outlier_rows", "duplicates", "zero_rows")),
    st.floats(1e-3, 1e2),
    st.integers(0, 2**31),
)
def test_online_ridge_scores_sequential_and_logdet(K, lam, seed):
    rng = np.random.default_rng(seed)
    K64 = np.asarray(K, float)
    n, d = K.shape
    sk = OnlineLeverage(d, 0.1, ridge=lam)
    got, us = [], []
    a = 0
    for s in random_sizes(rng, n):
        got.append(sk.update_scores(K[a : a + s]))
        us.append(sk.last_online_u_)
        a += s
    got = np.concatenate(got)
    # the sketch's own u_i (for the log-det checksum) agree with its scores to the last bit
    np.testing.assert_allclose(got, np.concatenate(us) / (1 + np.concatenate(us)), rtol=1e-15)
    u = naive.online_ridge_u(K64, lam)
    ref = u / (1 + u)
    logdet = float(np.sum(np.log1p(u)))
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-12)
    final = naive.ridge_leverage(K64, lam)
    assert np.all(got >= final - 1e-9)
    truth = naive.ridge_logdet(K64, lam)
    assert abs(sk.logdet() - truth) <= 1e-8 * max(1.0, abs(truth))
    assert abs(logdet - truth) <= 1e-8 * max(1.0, abs(truth))
    assert abs(np.sum(np.log1p(np.concatenate(us))) - truth) <= 1e-7 * max(1.0, abs(truth))


def test_scores_and_keys_accessors():
    K = np.random.default_rng(0).standard_normal((300, 4))
    K[7] *= 50
    sk = OnlineLeverage(4, 0.05).update(K)
    ids, tau = sk.scores()
    np.testing.assert_array_equal(ids, sl.universal_set(K, 0.05))
    np.testing.assert_allclose(tau, sl.leverage_scores(K)[ids], rtol=1e-10)
    ids2, keys = sk.keys()
    np.testing.assert_array_equal(keys, K[ids2])


def test_rank_growth_zero_blocks_and_extreme_magnitudes():
    rng = np.random.default_rng(1)
    d = 6
    sk = OnlineLeverage(d, 0.2)
    blocks = [np.zeros((5, d))]
    for r in range(1, d + 1):  # rank grows one direction at a time
        blocks.append(rng.standard_normal((4, r)) @ np.eye(r, d))
        blocks.append(np.zeros((3, d)))
    blocks.append(rng.standard_normal((30, d)) * 1e150)
    blocks.append(rng.standard_normal((30, d)) * 1e-150)
    K = np.vstack(blocks)
    for b in blocks:
        sk.update(b)
    naive.assert_set_matches(sk.universal_set(), naive.leverage(K), 0.2)


def test_start_ids_and_explicit_ids():
    K = np.random.default_rng(2).standard_normal((50, 3))
    U = sl.universal_set(K, 0.1)
    sk = OnlineLeverage(3, 0.1, start=1000).update(K)
    np.testing.assert_array_equal(sk.universal_set(), U + 1000)
    ids = np.arange(50)[::-1] * 3
    sk2 = OnlineLeverage(3, 0.1).update(K, ids=ids)
    np.testing.assert_array_equal(sk2.universal_set(), np.sort(ids[U]))


def test_constructor_errors():
    with pytest.raises(ValueError, match="eps"):
        OnlineLeverage(3, 0.0)
    with pytest.raises(ValueError, match="dim"):
        OnlineLeverage(0, 0.1)
    with pytest.raises(TypeError, match="dim"):
        OnlineLeverage(2.5, 0.1)
    with pytest.raises(ValueError, match="ridge"):
        OnlineLeverage(3, 0.1, ridge=-1)
    with pytest.raises(ValueError, match="ridge > 0"):
        OnlineLeverage(3, 0.1).update_scores(np.eye(3))


def test_float32_storage():
    K = np.random.default_rng(4).standard_normal((500, 5)).astype(np.float32)
    K[3] *= 40
    sk = OnlineLeverage(5, 0.05).update(K)
    assert sk.keys()[1].dtype == np.float32  # candidates stored as float32
    np.testing.assert_array_equal(sk.universal_set(), sl.universal_set(K.astype(np.float64), 0.05))
    sk2 = OnlineLeverage.from_bytes(sk.to_bytes())
    np.testing.assert_array_equal(sk2.universal_set(), sk.universal_set())


def test_pickle_round_trip():
    import pickle

    sk = OnlineLeverage(3, 0.1, ridge=0.5).update(np.random.default_rng(5).standard_normal((30, 3)))
    sk2 = pickle.loads(pickle.dumps(sk))
    assert sk2 == sk


def _wide_streams():
    """Streams whose first states are rank-deficient: short Gaussian, low-rank, dependent columns, scaled, float32."""
    rng = np.random.default_rng(11)
    d = 96
    yield rng.standard_normal((400, d)), 0.2, [24] * 16 + [16]
    low = rng.standard_normal((500, 9)) @ rng.standard_normal((9, d))
    yield low, 0.05, [40] * 12 + [20]
    dep = rng.standard_normal((300, d))
    dep[:, 7] = dep[:, 3]
    dep[:, 50] = 0.0
    yield dep, 0.3, [30] * 10
    yield rng.standard_normal((350, d)) * np.logspace(-150, 150, d), 0.1, [50] * 7
    yield rng.standard_normal((300, d)).astype(np.float32), 0.15, [10] * 30


@pytest.mark.parametrize("case", range(5))
def test_rank_certificate_changes_no_set_score_or_byte(monkeypatch, case):
    """Eviction tests decided by the certified rank bound give the same sketch, byte for byte, as the SVD rule."""
    from streamlev._factor import Factor

    K, eps, sizes = list(_wide_streams())[case]
    # Small buffers and early eviction tests, as at d >= 256 where the first d rows take several states.
    monkeypatch.setattr(single, "pending_rows", lambda d: 32)
    monkeypatch.setattr(single, "MIN_RESCORE", 16)

    def run():
        sk = feed(OnlineLeverage(K.shape[1], eps), K, sizes)
        U = sk.universal_set()
        return sk.to_bytes(), U, sk.scores()[1]

    calls = []
    real = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = run()
    n_new = len(calls)
    with monkeypatch.context() as mp:
        mp.setattr(Factor, "rank_at_least", lambda self, k: self.rank >= k)  # the SVD rule at every test
        want = run()
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    assert n_new < len(calls) - n_new  # the certificate saved SVDs
    naive.assert_set_matches(got[1], naive.leverage(np.asarray(K, dtype=np.float64)), eps)


def _long_streams():
    """Streams past d rows whose bounds drop rows: plain, scaled columns, ridge, big blocks (the Gram path)."""
    rng = np.random.default_rng(12)
    K = rng.standard_normal((6000, 48)) * np.logspace(-3, 3, 48)
    K[::101] *= 20
    yield K, 0.02, 0.0, [100] * 60
    yield rng.standard_normal((5000, 40)) * np.logspace(-150, 150, 40), 0.03, 0.0, [250] * 20
    yield rng.standard_normal((4000, 32)), 0.02, 2.0, [64] * 62 + [32]
    yield rng.standard_normal((9000, 24)), 0.01, 0.0, [3000] * 3


@pytest.mark.parametrize("case", range(4))
def test_bracketed_bounds_change_no_set_score_or_byte(monkeypatch, case):
    """Admission by bracketed bounds (sides computed only when a row falls in the bracket) gives the same sketch,
    byte for byte, as bounds from the SVD at once."""
    from streamlev._factor import Bound, Factor

    K, eps, ridge, sizes = list(_long_streams())[case]
    monkeypatch.setattr(single, "pending_rows", lambda d: 200)  # several factor states per stream

    def run():
        sk = feed(OnlineLeverage(K.shape[1], eps, ridge=ridge), K, sizes)
        mid = sk.to_bytes()
        sk.update(K[:300] * 0.5)
        return mid, sk.to_bytes(), sk.universal_set(), sk.scores()[1]

    lazy, computed = [], []
    real_bracket, real_compute = Factor._bracketed_bound, Bound._compute

    def bracket(self):
        b = real_bracket(self)
        lazy.extend([b] if b is not None else [])
        return b

    monkeypatch.setattr(Factor, "_bracketed_bound", bracket)
    monkeypatch.setattr(Bound, "_compute", lambda self: computed.append(1) or real_compute(self))
    got = run()
    assert lazy  # bracketed bounds were made (and, but for the big blocks, some never needed their SVD)
    assert case == 3 or len(computed) < len(lazy)
    with monkeypatch.context() as mp:
        mp.setattr(Factor, "_bracketed_bound", lambda self: None)  # every bound from its SVD at once
        want = run()
    assert got[:2] == want[:2]
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(got[3], want[3])
    naive.assert_set_matches(
        got[2],
        naive.ridge_leverage(np.vstack([K, K[:300] * 0.5]), ridge)
        if ridge
        else naive.leverage(np.vstack([K, K[:300] * 0.5])),
        eps,
    )


# --- short wide streams (every state rank-deficient): independent rows are kept with score 1, no SVD ---------


def _short_wide(kind, n=150, d=300, seed=31):
    """n < d keys; "dependent": row 60 in the span of rows 5 and 9, rows 100..109 copy rows 10..19 (0.5 each)."""
    return short_wide_keys(kind, n, d, seed, combo_row=60, duplicates=zip(range(100, 110), range(10, 20)))


@pytest.mark.parametrize("kind", ["gauss", "scaled", "float32", "dependent", "near"])
@pytest.mark.parametrize("eps", [0.1, 0.6, 1.0])
def test_short_wide_stream_matches_the_oracle(kind, eps, monkeypatch):
    """Set and scores equal the SVD oracle's; independent rows need no SVD for the set or the scores."""
    K = _short_wide(kind)
    want = naive.leverage(K)
    calls = []
    real = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *a, **k: calls.append(1) or real(*a, **k))
    sk = feed(OnlineLeverage(K.shape[1], eps), K, [64, 1, 40, 45])
    U = sk.universal_set()
    naive.assert_set_matches(U, want, eps)
    ids, tau = sk.scores()
    assert np.array_equal(ids, U)
    assert np.max(np.abs(tau - want[ids])) <= (1e-6 if kind == "near" else 1e-10)
    if kind in ("gauss", "scaled", "float32"):
        assert U.size == K.shape[0] and np.all(tau == 1.0) and calls == []
    if kind == "dependent" and eps == 0.6:
        assert not np.isin([10, 19, 100, 109], U).any()
        restored = OnlineLeverage.from_bytes(sk.to_bytes())
        assert np.array_equal(restored.universal_set(), U)
