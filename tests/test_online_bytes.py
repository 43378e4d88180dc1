"""OnlineLeverage bytes: canonical (independent of what was asked for) and equality without side effects."""

import numpy as np
import pytest

from streamlev import OnlineLeverage

from . import naive


def _stream(rng, n=3000, d=8):
    K = rng.standard_normal((n, d)) * np.logspace(-3, 3, d)
    K[::41] *= 30.0  # heavy rows: a universal set that is neither empty nor everything
    return K


@pytest.mark.parametrize("block", [1, 37, 700])
def test_queries_do_not_change_the_bytes(block):
    rng = np.random.default_rng(block)
    K = _stream(rng)
    d, eps = K.shape[1], 0.02
    asked, quiet = OnlineLeverage(d, eps), OnlineLeverage(d, eps)
    for a in range(0, K.shape[0], block):
        asked.update(K[a : a + block])
        quiet.update(K[a : a + block])
    before = quiet.to_bytes()
    assert quiet.to_bytes() == before
    U = asked.universal_set()  # absorbs buffered rows and evicts in place
    naive.assert_set_matches(U, naive.leverage(K), eps)
    assert 0 < U.size < K.shape[0]
    assert asked.to_bytes() == before
    asked.scores()
    asked.keys()
    assert asked.to_bytes() == before and asked == quiet


def test_bytes_hold_exactly_the_universal_set_sorted():
    rng = np.random.default_rng(2)
    K = _stream(rng, n=2000)
    ids = rng.permutation(10 * K.shape[0])[: K.shape[0]]  # scattered, unsorted ids
    sk = OnlineLeverage(K.shape[1], 0.02)
    for a in range(0, K.shape[0], 300):
        sk.update(K[a : a + 300], ids=ids[a : a + 300])
    back = OnlineLeverage.from_bytes(sk.to_bytes())
    assert back.n_candidates == sk.universal_set().size  # no candidate beyond the set
    got, _keys = back.keys()
    np.testing.assert_array_equal(got, sk.universal_set())
    naive.assert_set_matches(np.flatnonzero(np.isin(ids, got)), naive.leverage(K), 0.02)


def test_equality_has_no_side_effect():
    # Comparing mid-stream must not absorb the buffer or evict: the sketch then evolves exactly as one
    # nobody looked at (absorbing 200 buffered rows early could change the factor's rounding).
    rng = np.random.default_rng(4)
    K = _stream(rng, n=400)
    a, b, c = (OnlineLeverage(8, 0.02).update(K[:200]) for _ in range(3))
    n_a = a.n_candidates
    assert a == b
    assert a.n_candidates == n_a and a._stream.pending.n == 200  # nothing evicted, the buffer still waits
    for sk in (a, b, c):
        sk.update(K[200:])
    assert a.to_bytes() == c.to_bytes() and b.to_bytes() == c.to_bytes()
    assert a != OnlineLeverage(8, 0.02).update(K[:399])
