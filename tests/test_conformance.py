"""One conformance suite run over every exact streaming sketch.

Each sketch kind is wrapped in a tiny adapter exposing update / merge /
universal_set / to_bytes / from_bytes for a single (n, d) stream:

* ``online``: :class:`streamlev.OnlineLeverage`;
* ``multihead``: :class:`streamlev.MultiHeadLeverage` with 3 heads fed K, K·B
  (B invertible and badly column-scaled) and 2**300·K — by the invariance of
  leverage scores all three heads must return the same set, which is checked on
  every call (for K·B only while the rows fed are well-conditioned: near a rank
  decision the rounding of K·B may legitimately decide the other way).

Here live the properties every exact sketch shares, against the oracle: any block sizes (single rows, one
block, random blocks), random partitions merged in a random order, serialisation mid-stream then more rows,
and random interleavings of all of these.  Refused input (messages, bytes unchanged) is in
tests/test_inputs_sketches.py and tests/test_inputs_heads.py; the surface every stateful class shares,
approximate ones included, in tests/test_sketch_contract.py.
"""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import streamlev as sl

from . import naive
from .strategies import KINDS as ALL_KEY_KINDS
from .strategies import eps_values, key_matrices


class OnlineAdapter:
    key_kinds = ALL_KEY_KINDS

    def __init__(self, d, eps, ridge=0.0, start=0):
        self.sk = sl.OnlineLeverage(d, eps, ridge=ridge, start=start)

    def update(self, X, ids=None):
        self.sk.update(X, ids=ids)
        return self

    def merge(self, other):
        self.sk.merge(other.sk)
        return self

    def universal_set(self):
        return self.sk.universal_set()

    def to_bytes(self):
        return self.sk.to_bytes()

    @property
    def n_seen(self):
        return self.sk.n_seen

    @classmethod
    def from_bytes(cls, data):
        obj = cls.__new__(cls)
        obj.sk = sl.OnlineLeverage.from_bytes(data)
        return obj


class MultiHeadAdapter:
    def __init__(self, d, eps, ridge=0.0, start=0):
        rng = np.random.default_rng(d)
        self.T = (rng.standard_normal((d, d)) + 3 * np.eye(d)) * np.logspace(-3, 3, d)
        self.ridge = ridge
        self.rows = []
        self.sk = sl.MultiHeadLeverage(3, d, eps, ridge=ridge, start=start)

    def _stack(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None]
        if self.ridge > 0:  # ridge scores are not invariant to K -> K·B: feed K three times
            return np.stack([X, X, X])
        return np.stack([X, X @ self.T, X * 2.0**300])

    def update(self, X, ids=None):
        self.sk.update(self._stack(X), ids=ids)
        if self.rows is not None:
            self.rows.append(np.atleast_2d(np.asarray(X, dtype=np.float64)))
        return self

    def merge(self, other):
        self.sk.merge(other.sk)
        self.rows = None if self.rows is None or other.rows is None else self.rows + other.rows
        return self

    def universal_set(self):
        sets = self.sk.universal_set()
        np.testing.assert_array_equal(sets[2], sets[0])
        if self.rows is None:
            return sets[0]
        K = np.vstack(self.rows) if self.rows else np.zeros((0, self.sk.dim))
        Kn = naive.column_normalise(K)
        if K.shape[0] and Kn.shape[1] and np.linalg.cond(Kn) < 1e6:
            np.testing.assert_array_equal(sets[1], sets[0])
        return sets[0]

    def to_bytes(self):
        return self.sk.to_bytes()

    @property
    def n_seen(self):
        return self.sk.n_seen

    @classmethod
    def from_bytes(cls, data):
        obj = cls.__new__(cls)
        obj.sk = sl.MultiHeadLeverage.from_bytes(data)
        d = obj.sk.dim
        rng = np.random.default_rng(d)
        obj.T = (rng.standard_normal((d, d)) + 3 * np.eye(d)) * np.logspace(-3, 3, d)
        obj.ridge = obj.sk.ridge
        obj.rows = None  # a restored sketch no longer knows its rows: skip the K·B re-check
        return obj


# the multihead adapter transforms K, so keep keys free of exact rank ties under K·B
MultiHeadAdapter.key_kinds = (
    "gaussian",
    "duplicates",
    "zero_rows",
    "outlier_rows",
    "heavy_first",
    "heavy_last",
    "rank_deficient",
)
SKETCHES = {"online": OnlineAdapter, "multihead": MultiHeadAdapter}
sketch_kinds = pytest.mark.parametrize("kind", sorted(SKETCHES))


def random_sizes(rng, n):
    sizes, left = [], n
    while left:
        s = int(min(left, rng.integers(0, 30)))
        sizes.append(s)
        left -= s
    return sizes


def oracle_tau(K, ridge):
    K = np.asarray(K, float)
    return naive.leverage(K) if ridge == 0 else naive.ridge_leverage(K, ridge)


def draw_keys(data, kind):
    return data.draw(key_matrices(max_n=90, kinds=SKETCHES[kind].key_kinds), label="K")


@sketch_kinds
@given(st.data(), eps_values, st.sampled_from([0.0, 0.5]), st.integers(0, 2**31))
def test_block_sizes_rows_and_single_block_agree(kind, data, eps, ridge, seed):
    K = draw_keys(data, kind)
    rng = np.random.default_rng(seed)
    S = SKETCHES[kind]
    n, d = K.shape
    one = S(d, eps, ridge).update(K).universal_set()
    rows = S(d, eps, ridge)
    for k in K:
        rows.update(k)
    blocks = S(d, eps, ridge)
    a = 0
    for s in random_sizes(rng, n):
        blocks.update(K[a : a + s])
        a += s
    tau = oracle_tau(K, ridge)
    naive.assert_same_set(rows.universal_set(), one, tau, eps)
    naive.assert_same_set(blocks.universal_set(), one, tau, eps)
    naive.assert_set_matches(one, tau, eps)
    if ridge == 0:  # and the in-memory path
        naive.assert_same_set(one, sl.universal_set(K, eps), tau, eps)
    assert rows.n_seen == blocks.n_seen == n


@sketch_kinds
@given(st.data(), eps_values, st.integers(1, 5), st.integers(0, 2**31))
def test_random_partitions_merged_in_random_order(kind, data, eps, parts, seed):
    K = draw_keys(data, kind)
    rng = np.random.default_rng(seed)
    S = SKETCHES[kind]
    n, d = K.shape
    labels = rng.integers(0, parts, size=n)
    pool = [S(d, eps).update(K[labels == p], ids=np.flatnonzero(labels == p)) for p in rng.permutation(parts)]
    while len(pool) > 1:
        i, j = sorted(rng.choice(len(pool), size=2, replace=False))
        a, b = pool[i], pool[j]
        rest = [x for k, x in enumerate(pool) if k not in (i, j)]
        pool = rest + [a.merge(b)]
    expected = S(d, eps).update(K).universal_set()
    tau = oracle_tau(K, 0.0)
    naive.assert_same_set(pool[0].universal_set(), expected, tau, eps)
    naive.assert_set_matches(expected, tau, eps)
    naive.assert_same_set(pool[0].universal_set(), sl.universal_set(K, eps), tau, eps)
    assert pool[0].n_seen == n


@sketch_kinds
@given(st.data(), eps_values, st.integers(0, 2**31))
def test_serialize_mid_stream_restore_continue(kind, data, eps, seed):
    K = draw_keys(data, kind)
    rng = np.random.default_rng(seed)
    S = SKETCHES[kind]
    n, d = K.shape
    cut = int(rng.integers(0, n + 1))
    a = S(d, eps).update(K[:cut])
    saved = a.to_bytes()
    b = S.from_bytes(saved)
    assert b.to_bytes() == saved
    a.update(K[cut:])
    b.update(K[cut:])
    np.testing.assert_array_equal(b.universal_set(), a.universal_set())
    assert b.to_bytes() == a.to_bytes()
    naive.assert_set_matches(b.universal_set(), oracle_tau(K, 0.0), eps)
    assert b.n_seen == n


class SketchMachine(RuleBasedStateMachine):
    """Random interleavings of update / merge / serialize / universal_set against the oracle."""

    def __init__(self):
        super().__init__()
        self.d = 4
        self.eps = 0.15
        self.rng = np.random.default_rng(12345)
        self.sketches = []  # list of (sketch, ids fed)
        self.next_id = 0
        self.rows = {}

    def _new_rows(self, m, heavy):
        X = self.rng.standard_normal((m, self.d))
        if heavy and m:
            X[0] *= 30
        ids = np.arange(self.next_id, self.next_id + m)
        self.next_id += m
        for i, x in zip(ids, X):
            self.rows[int(i)] = x
        return X, ids

    @rule(kind=st.sampled_from(sorted(SKETCHES)))
    def new_sketch(self, kind):
        if len(self.sketches) < 4:
            self.sketches.append((SKETCHES[kind](self.d, self.eps), []))

    @precondition(lambda self: self.sketches)
    @rule(i=st.integers(0, 3), m=st.integers(0, 12), heavy=st.booleans())
    def update(self, i, m, heavy):
        sk, fed = self.sketches[i % len(self.sketches)]
        X, ids = self._new_rows(m, heavy)
        sk.update(X, ids=ids)
        fed.extend(ids.tolist())

    @precondition(lambda self: len(self.sketches) >= 2)
    @rule(i=st.integers(0, 3), j=st.integers(0, 3))
    def merge(self, i, j):
        i %= len(self.sketches)
        j %= len(self.sketches)
        if i == j or type(self.sketches[i][0]) is not type(self.sketches[j][0]):
            return
        (a, fa), (b, fb) = self.sketches[i], self.sketches[j]
        a.merge(b)
        fa.extend(fb)
        del self.sketches[j]

    @precondition(lambda self: self.sketches)
    @rule(i=st.integers(0, 3))
    def serialize_roundtrip(self, i):
        i %= len(self.sketches)
        sk, fed = self.sketches[i]
        self.sketches[i] = (type(sk).from_bytes(sk.to_bytes()), fed)

    @invariant()
    def every_sketch_equals_oracle(self):
        for sk, fed in self.sketches:
            got = sk.universal_set()
            if not fed:
                assert got.size == 0
                continue
            ids = np.array(sorted(fed))
            K = np.array([self.rows[i] for i in ids])
            expected = ids[naive.universal_set(K, self.eps)]
            np.testing.assert_array_equal(got, expected)


TestSketchMachine = SketchMachine.TestCase
TestSketchMachine.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)


def _peak_streaming(n, d=16, block=4096):
    def blocks():
        rng = np.random.default_rng(0)
        left = n
        while left:
            m = min(block, left)
            yield rng.standard_normal((m, d))
            left -= m

    sk = sl.OnlineLeverage(d, 0.01)
    tracemalloc.start()
    try:
        for B in blocks():
            sk.update(B)
        sk.universal_set()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def test_memory_flat_in_n():
    _peak_streaming(20_000)  # warm-up: first calls load numba kernels and LAPACK wrappers (traced too)
    small = _peak_streaming(200_000)
    large = _peak_streaming(2_000_000)
    # a block is 4096 x 16 x 8 B = 0.5 MB; candidates are at most ~2·d/eps = 3200 keys of 128 B
    assert small <= 4 * 2**20, small
    assert large <= 1.2 * small, (small, large)
