"""Selected-key attention, causal universal sets, metrics and the KV-cache policy.

Oracles: tests/naive.py (SVD leverage, worst-case queries, power attention) and
tests/naive_lp.py (exact ℓ_p sensitivities by scipy, dense attention loops).
Runtime budget: ~25 s (default run).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamlev as sl
from streamlev import _attention as att  # the module; streamlev.attention is the function

from . import naive, naive_lp
from .strategies import eps_values, key_matrices

P_GUARANTEE = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def keys(seed, n=24, d=3, heavy=2):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d)) * np.logspace(-1, 1, d)
    K[:heavy] *= 4.0
    return K


# --- attention() against direct dense computation --------------------------------------------


def test_softmax_attention_matches_dense():
    rng = np.random.default_rng(0)
    Q, K, V = rng.standard_normal((7, 4)), rng.standard_normal((11, 4)), rng.standard_normal((11, 5))
    np.testing.assert_allclose(
        att.attention(Q, K, V), naive_lp.softmax_attention_output(Q, K, V), rtol=1e-12, atol=1e-14
    )
    key_mask = rng.random(11) < 0.5
    np.testing.assert_allclose(
        att.attention(Q, K, V, mask=key_mask, scale=0.7),
        naive_lp.softmax_attention_output(Q, K, V, key_mask, scale=0.7),
        rtol=1e-12,
        atol=1e-14,
    )
    qmask = rng.random((7, 11)) < 0.5
    np.testing.assert_allclose(
        att.attention(Q, K, V, mask=qmask), naive_lp.softmax_attention_output(Q, K, V, qmask), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("p", (0.5, 1.0, 2.0, 3.0, 6.0))
def test_power_attention_matches_dense(p):
    rng = np.random.default_rng(1)
    Q, K, V = rng.standard_normal((6, 3)), rng.standard_normal((9, 3)), rng.standard_normal((9, 2))
    np.testing.assert_allclose(
        att.attention(Q, K, V, kind="power", p=p), naive_lp.power_attention_output(Q, K, V, p), rtol=1e-12, atol=1e-14
    )
    mask = rng.random((6, 9)) < 0.6
    np.testing.assert_allclose(
        att.attention(Q, K, V, mask=mask, kind="power", p=p),
        naive_lp.power_attention_output(Q, K, V, p, mask),
        rtol=1e-12,
        atol=1e-14,
    )
    np.testing.assert_allclose(
        att.attention_weights(Q, K, kind="power", p=p), naive.power_attention(Q, K, p), rtol=1e-12, atol=1e-15
    )


def test_batched_heads_broadcast_and_match_per_head():
    rng = np.random.default_rng(2)
    H, nq, n, d = 3, 5, 8, 4
    Q, K, V = rng.standard_normal((H, nq, d)), rng.standard_normal((H, n, d)), rng.standard_normal((H, n, 2))
    mask = rng.random((H, n)) < 0.7
    out = att.attention(Q, K, V, mask=mask)
    assert out.shape == (H, nq, 2)
    for h in range(H):
        np.testing.assert_allclose(
            out[h], naive_lp.softmax_attention_output(Q[h], K[h], V[h], mask[h]), rtol=1e-12, atol=1e-14
        )
    # one query set shared by all heads broadcasts
    out2 = att.attention(Q[0], K, V, kind="power", p=3.0)
    for h in range(H):
        np.testing.assert_allclose(
            out2[h], naive_lp.power_attention_output(Q[0], K[h], V[h], 3.0), rtol=1e-12, atol=1e-14
        )


def test_softmax_is_stable_for_huge_logits():
    rng = np.random.default_rng(3)
    Q, K, V = 1e4 * rng.standard_normal((4, 3)), rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    out = att.attention(Q, K, V, scale=1.0)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, naive_lp.softmax_attention_output(Q, K, V, scale=1.0), rtol=1e-10)
    out_p = att.attention(1e200 * Q, K, V, kind="power", p=6.0)  # |x|^6 would overflow
    np.testing.assert_allclose(out_p, naive_lp.power_attention_output(Q, K, V, 6.0), rtol=1e-10)


def test_rows_without_keys_give_zeros_not_nan():
    rng = np.random.default_rng(4)
    Q, K, V = rng.standard_normal((3, 2)), rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    mask = np.ones((3, 4), bool)
    mask[1] = False
    for kind in ("softmax", "power"):
        out = att.attention(Q, K, V, mask=mask, kind=kind)
        np.testing.assert_array_equal(out[1], 0.0)
        assert np.all(np.isfinite(out))
    Q0 = np.zeros((2, 2))
    np.testing.assert_array_equal(att.attention(Q0, K, V, kind="power"), 0.0)
    # softmax of all-zero logits is uniform (defined), not zero
    np.testing.assert_allclose(att.attention(Q0, K, V), np.tile(V.mean(axis=0), (2, 1)))


# --- select_keys -----------------------------------------------------------------------------


@given(K=key_matrices(max_n=40, max_d=5), eps=eps_values)
def test_select_keys_eps_is_universal_set(K, eps):
    mask = att.select_keys(K, eps=eps)
    naive.assert_set_matches(np.flatnonzero(mask), naive.leverage(K), eps)


def test_select_keys_heads_and_top_k():
    rng = np.random.default_rng(5)
    K = rng.standard_normal((2, 3, 20, 4)) * rng.uniform(0.1, 10, size=(2, 3, 20, 1))
    m = att.select_keys(K, eps=0.1)
    assert m.shape == (2, 3, 20) and m.dtype == bool
    for a in range(2):
        for b in range(3):
            np.testing.assert_array_equal(np.flatnonzero(m[a, b]), sl.universal_set(K[a, b], 0.1))
    t = att.select_keys(K, top_k=5)
    assert np.all(t.sum(axis=-1) == 5)
    for a in range(2):
        for b in range(3):
            lev = naive.leverage(K[a, b])
            assert set(np.flatnonzero(t[a, b])) == set(np.argsort(-lev)[:5])
    assert att.select_keys(K, top_k=50).all()
    # ties go to the lower index
    # leverage (0.5, 0.5, 1, 1/3, 1/3, 1/3): the tie at 1/3 goes to index 3
    np.testing.assert_array_equal(
        att.select_keys(np.eye(3)[[0, 0, 1, 2, 2, 2]], top_k=4), [True, True, True, True, False, False]
    )


@pytest.mark.parametrize("p", (1.5, 3.0))
def test_select_keys_p_and_top_k_lewis(p):
    K = keys(6)
    np.testing.assert_array_equal(np.flatnonzero(att.select_keys(K, eps=0.1, p=p)), sl.universal_set(K, 0.1, p=p))
    w = naive_lp.lewis_cohen_peng(K, p)
    assert set(np.flatnonzero(att.select_keys(K, top_k=4, p=p))) == set(np.argsort(-w)[:4])


# --- guarantee: every heavy entry is kept -----------------------------------------------------


@pytest.mark.parametrize("p", P_GUARANTEE)
def test_mask_keeps_every_heavy_entry_random_and_worst_case(p):
    K = keys(7, n=30)
    eps = 0.1
    mask = att.select_keys(K, eps=eps, p=p)
    rng = np.random.default_rng(8)
    Q = rng.standard_normal((400, 3)) * rng.uniform(0.01, 100, size=(400, 1))
    if p == 2.0:
        Q = np.vstack([Q, naive.worst_case_queries(K)])
    else:  # queries optimised to make each key as heavy as possible
        Q = np.vstack([Q, [naive_lp.sensitivity(K, j, p)[1] for j in range(K.shape[0])]])
    A = att.attention_weights(Q, K, kind="power", p=p)
    assert att.heavy_entry_recall(A, mask, eps) == 1.0
    # the worst-case queries of the excluded keys put < eps on them
    worst = A[400:]
    out = ~mask
    assert np.all(worst[np.flatnonzero(out), np.flatnonzero(out)] < eps)


# --- causal masks ----------------------------------------------------------------------------


@given(K=key_matrices(max_n=30, max_d=4), eps=st.sampled_from([0.5, 0.2, 0.1]), ridge=st.sampled_from([0.0, 0.0, 0.5]))
def test_causal_rows_are_prefix_universal_sets_p2(K, eps, ridge):
    M = att.select_keys(K, eps=eps, ridge=ridge, causal=True)
    n = K.shape[0]
    assert M.shape == (n, n)
    assert not np.any(np.triu(M, 1))
    for i in range(n):
        P = np.asarray(K[: i + 1], float)
        tau = naive.leverage(P) if ridge == 0 else naive.ridge_leverage(P, ridge)
        naive.assert_set_matches(np.flatnonzero(M[i]), tau, eps, rtol=1e-7)
    # an evicted key never re-enters
    first_out = np.where(M, 0, 1)
    for j in range(n):
        col = M[j:, j]
        if not col.all():
            assert not col[np.argmin(col) :].any()
    del first_out


@pytest.mark.parametrize("p", (1.0, 1.5, 3.0, 4.0, 6.0))
def test_causal_rows_are_prefix_universal_sets_p(p):
    K = keys(9, n=18)
    eps = 0.2
    M = att.select_keys(K, eps=eps, p=p, causal=True)
    for i in range(K.shape[0]):
        np.testing.assert_array_equal(np.flatnonzero(M[i]), sl.universal_set(K[: i + 1], eps, p=p))
    # independent check of two prefixes against scipy sensitivities
    for i in (5, 17):
        alpha = naive_lp.sensitivities(K[: i + 1], p)
        naive.assert_set_matches(np.flatnonzero(M[i]), alpha, eps, rtol=1e-6)


def test_causal_power_attention_heavy_entries_kept():
    K = keys(10, n=25)
    eps = 0.15
    rng = np.random.default_rng(11)
    for p in (2.0, 1.5):
        M = att.select_keys(K, eps=eps, p=p, causal=True)
        Q = rng.standard_normal((25, 3)) * 10
        causal = np.tril(np.ones((25, 25), bool))
        A = att.attention_weights(Q, K, mask=causal, kind="power", p=p)
        assert att.heavy_entry_recall(A, M, eps) == 1.0


def test_causal_top_k():
    K = keys(12, n=15)
    M = att.select_keys(K, top_k=3, causal=True)
    for i in range(15):
        lev = naive.leverage(K[: i + 1])
        assert set(np.flatnonzero(M[i])) == set(np.argsort(-lev, kind="stable")[:3])


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_on_hand_built_example():
    A = np.array([[0.6, 0.3, 0.1], [0.05, 0.05, 0.9]])
    mask = np.array([True, False, True])
    assert att.heavy_entry_recall(A, mask, 0.25) == pytest.approx(2 / 3)
    assert att.heavy_entry_recall(A, mask, 0.95) == 1.0
    np.testing.assert_allclose(att.attention_mass_kept(A, mask), [0.7, 0.95])
    qmask = np.array([[True, True, False], [False, False, False]])
    np.testing.assert_allclose(att.attention_mass_kept(A, qmask), [0.9, 0.0])
    assert att.relative_output_error(np.array([3.0, 4.0]), np.array([3.0, 0.0])) == pytest.approx(4 / 3)
    assert att.relative_output_error(np.zeros(2), np.zeros(2)) == 0.0
    assert att.relative_output_error(np.ones(2), np.zeros(2)) == np.inf


def test_selected_power_attention_error_is_small():
    """Keeping the universal set loses < eps mass per dropped key for power attention."""
    rng = np.random.default_rng(13)
    K = rng.standard_normal((200, 4))
    K[:4] *= 8
    V = rng.standard_normal((200, 3))
    Q = rng.standard_normal((50, 4))
    mask = att.select_keys(K, eps=0.05)
    A = att.attention_weights(Q, K, kind="power", p=2.0)
    kept = att.attention_mass_kept(A, mask)
    assert np.all(kept <= 1 + 1e-12)
    assert np.all(A[:, ~mask] < 0.05)
    err = att.relative_output_error(
        att.attention(Q, K, V, mask=mask, kind="power"), att.attention(Q, K, V, kind="power")
    )
    assert 0 <= err < 10


# --- KV cache --------------------------------------------------------------------------------


def test_kv_cache_p2_holds_prefix_set_sinks_window_and_is_lossless():
    rng = np.random.default_rng(14)
    n, d, eps, sinks, window = 60, 4, 0.1, 2, 3
    K = rng.standard_normal((n, d)) * np.array([1, 3, 0.2, 1])
    K[rng.choice(n, 6, replace=False)] *= 6
    V = rng.standard_normal((n, 2))
    cache = att.LeverageKVCache(d, eps, sinks=sinks, window=window)
    evicted_at = {}
    for t in range(n):
        before = set(cache.positions_.tolist())
        cache.update(K[t], values=V[t])
        held = set(cache.positions_.tolist())
        for j in (before | {t}) - held:
            evicted_at[j] = t
        prefix = K[: t + 1]
        lev = naive.leverage(prefix)
        must = (
            set(np.flatnonzero(lev >= eps * (1 + 1e-8)))
            | set(range(min(sinks, t + 1)))
            | set(range(max(0, t + 1 - window), t + 1))
        )
        may = must | set(np.flatnonzero(lev >= eps * (1 - 1e-8)))
        assert must <= held <= may
        assert len(cache) <= d / eps + sinks + window
        np.testing.assert_array_equal(cache.keys_, K[cache.positions_])
        np.testing.assert_array_equal(cache.values_, V[cache.positions_])
        # adversarial: the worst-case query of every evicted key, against the whole prefix
        ev = np.array(sorted(evicted_at), dtype=int)
        if ev.size:
            Qw = naive.worst_case_queries(prefix)[ev]
            A = naive.power_attention(Qw, prefix, 2.0)
            assert np.all(A[np.arange(ev.size), ev] < eps)
    assert evicted_at  # the test exercised eviction


@pytest.mark.parametrize("p", (1.5, 3.0))
def test_kv_cache_power_lossless_against_optimised_queries(p):
    K = keys(15, n=30)
    eps = 0.2
    cache = att.LeverageKVCache(3, eps, p=p, window=2, sinks=1)
    evicted = set()
    for t in range(K.shape[0]):
        before = set(cache.positions_.tolist())
        cache.update(K[t])
        evicted |= (before | {t}) - set(cache.positions_.tolist())
    assert evicted
    assert {0, 28, 29} <= set(cache.positions_.tolist())
    # no query over the full stream (or any later prefix) can make an evicted key eps-heavy
    for j in sorted(evicted):
        alpha, q = naive_lp.sensitivity(K, j, p)
        assert alpha < eps
        assert naive_lp.power_attention(q[None, :], K, p)[0, j] < eps


def test_kv_cache_bad_input():
    with pytest.raises(ValueError, match="eps"):
        att.LeverageKVCache(4, 2.0)
    with pytest.raises(ValueError, match="ridge"):
        att.LeverageKVCache(4, 0.1, p=3.0, ridge=1.0)
    with pytest.raises(ValueError, match="window"):
        att.LeverageKVCache(4, 0.1, window=-1)
    c = att.LeverageKVCache(4, 0.1)
    with pytest.raises(ValueError, match="expected 4"):
        c.update(np.ones(5))
    c.update(np.ones(4))
    before = c.to_bytes()
    with pytest.raises(ValueError, match="every token or for none"):
        c.update(np.ones(4), values=np.ones(2))
    with pytest.raises(ValueError, match="positions 1..2"):
        c.update(np.ones((2, 4)), ids=[5, 6])
    assert c.to_bytes() == before
    assert c.nbytes > 0


def test_kv_cache_deprecated_spellings_warn_and_still_work():
    c = att.LeverageKVCache(4, 0.1)
    with pytest.warns(DeprecationWarning, match="update"):
        c.append(np.ones(4))
    with pytest.warns(DeprecationWarning, match="update"), pytest.raises(ValueError, match="one key"):
        c.append(np.ones((2, 4)))
    with pytest.warns(DeprecationWarning, match="n_seen"):
        assert c.n_seen_ == 1 == c.n_seen
    with pytest.warns(DeprecationWarning, match="nbytes"):
        assert c.nbytes() == c.nbytes > 0


# --- bad input -------------------------------------------------------------------------------


def test_select_keys_bad_input():
    K = keys(16)
    with pytest.raises(ValueError, match="exactly one of eps"):
        att.select_keys(K)
    with pytest.raises(ValueError, match="exactly one of eps"):
        att.select_keys(K, eps=0.1, top_k=3)
    with pytest.raises(ValueError, match="eps must"):
        att.select_keys(K, eps=0.0)
    with pytest.raises(ValueError, match="top_k"):
        att.select_keys(K, top_k=0)
    with pytest.raises(TypeError, match="top_k"):
        att.select_keys(K, top_k=2.5)
    with pytest.raises(ValueError, match="ridge"):
        att.select_keys(K, eps=0.1, p=3.0, ridge=1.0)
    with pytest.raises(ValueError, match="p >= 1"):
        att.select_keys(K, eps=0.1, p=0.5, causal=True)
    with pytest.raises(ValueError, match="2-D"):
        att.select_keys(K[0], eps=0.1)
    bad = K.copy()
    bad[2, 0] = np.inf
    with pytest.raises(ValueError, match="row 2"):
        att.select_keys(bad, eps=0.1)


def test_attention_bad_input():
    rng = np.random.default_rng(17)
    Q, K, V = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    with pytest.raises(ValueError, match="kind"):
        att.attention(Q, K, V, kind="linear")
    with pytest.raises(ValueError, match="last dimension"):
        att.attention(Q[:, :3], K, V)
    with pytest.raises(ValueError, match="one row per key"):
        att.attention(Q, K, V[:4])
    with pytest.raises(TypeError, match="boolean"):
        att.attention(Q, K, V, mask=np.ones(5))
    with pytest.raises(ValueError, match="does not fit"):
        att.attention(Q, K, V, mask=np.ones(4, bool))
    with pytest.raises(ValueError, match="scale"):
        att.attention(Q, K, V, scale=np.nan)
    with pytest.raises(ValueError, match="p must"):
        att.attention(Q, K, V, kind="power", p=-1)
    with pytest.raises(TypeError, match="complex"):
        att.attention(Q.astype(complex), K, V)


def test_empty_inputs():
    assert att.select_keys(np.zeros((0, 3)), eps=0.1).shape == (0,)
    assert att.select_keys(np.zeros((2, 0, 3)), eps=0.1, causal=True).shape == (2, 0, 0)
    assert att.select_keys(np.zeros((4, 3)), eps=0.1, p=3.0).sum() == 0  # zero keys get no attention
    for kind in ("softmax", "power"):
        np.testing.assert_array_equal(
            att.attention(np.ones((2, 3)), np.zeros((0, 3)), np.zeros((0, 2)), kind=kind), np.zeros((2, 2))
        )
