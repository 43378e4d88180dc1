"""MultiHeadLeverage: rows fed to one head through head(h) and the shared id bookkeeping."""

import numpy as np

from streamlev import MultiHeadLeverage

from . import naive


def test_rows_fed_to_one_head_keep_ids_distinct_and_bytes_loadable():
    # head(h) shares state with the multi-head sketch, so rows may be fed to one head directly; the
    # default ids of later multi-head blocks must continue after them, and the sketch's own bytes load.
    rng = np.random.default_rng(3)
    H, d, eps = 3, 4, 0.3
    A = rng.standard_normal((H, 10, d))
    X1 = rng.standard_normal((5, d))
    B = rng.standard_normal((H, 10, d))
    mh = MultiHeadLeverage(H, d, eps)
    mh.update(A)
    mh.head(1).update(X1)  # ids 10..14 for head 1
    mh.update(B)  # ids 15..24 for every head
    for h in range(H):
        rows = np.concatenate([A[h], X1, B[h]]) if h == 1 else np.concatenate([A[h], B[h]])
        ids = np.r_[0:25] if h == 1 else np.r_[0:10, 15:25]
        got = mh.universal_set(h)
        assert set(got) <= set(ids), (h, got)  # no id of another head's rows, none reused
        # the oracle's set on the head's own rows, with their ids (up to keys within rounding of eps)
        naive.assert_set_matches(np.searchsorted(ids, got), naive.leverage(rows), eps)
    back = MultiHeadLeverage.from_bytes(mh.to_bytes())
    for h in range(H):
        np.testing.assert_array_equal(back.universal_set(h), mh.universal_set(h))
    assert back.to_bytes() == mh.to_bytes()


def test_multihead_bytes_and_equality_do_not_depend_on_queries():
    rng = np.random.default_rng(5)
    H, d, eps = 3, 6, 0.05
    KH = rng.standard_normal((H, 900, d)) * np.logspace(-2, 2, d)
    asked, quiet = MultiHeadLeverage(H, d, eps), MultiHeadLeverage(H, d, eps)
    for a in range(0, 900, 100):
        asked.update(KH[:, a : a + 100])
        quiet.update(KH[:, a : a + 100])
        assert asked == quiet  # comparing changes neither
    asked.universal_set()  # absorbs the buffers and evicts in place
    assert asked == quiet and asked.to_bytes() == quiet.to_bytes()
    quiet.update(KH[:, :1] + 1.0)
    assert asked != quiet
