"""MultiHeadLeverage against the oracle: every path a block takes (shared buffer, staged blocks, the
no-copy kernel path), rows fed to one head through head(h), shared ids, bytes and threads.
"""

import numpy as np
import pytest

import streamlev as sl
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


# -- multi-head blocks staged in the shared buffer -------------------------------------------------------
def _spy(monkeypatch, method, hit, miss, is_hit):
    """Count the calls of ``MultiHeadLeverage.<method>`` whose result ``is_hit`` (key ``hit``) or not (``miss``)."""
    from streamlev.online import MultiHeadLeverage

    seen = {hit: 0, miss: 0}
    orig = getattr(MultiHeadLeverage, method)

    def spy(self, X, ids):
        out = orig(self, X, ids)
        seen[hit if is_hit(out) else miss] += 1
        return out

    monkeypatch.setattr(MultiHeadLeverage, method, spy)
    return seen


def _count_staged(monkeypatch):
    return _spy(monkeypatch, "_stage", "staged", "general", lambda out: out is not None)


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


def _spy_accumulate(monkeypatch):
    return _spy(monkeypatch, "_accumulate", "kernel", "other", bool)


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
