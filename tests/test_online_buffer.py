"""The online sketches' buffer of small blocks and evictions (streamlev.online.buffer, Stream) against the oracle."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import streamlev as sl

from . import naive
from .strategies import eps_values, key_matrices


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
