"""The sketch contract (streamlev._sketch), run over every stateful sketch class.

Each class is checked against its own guarantee with an independent oracle:
exact equality for OnlineLeverage and MultiHeadLeverage, the sandwich
{τ >= eps} ⊆ U ⊆ {τ >= eps/c} for ApproxLeverage, a superset of every key
whose ℓ_p sensitivity the oracle certifies >= eps for OnlinePowerSet, and the
prefix universal set plus sinks and window for LeverageKVCache.
"""

import pickle

import numpy as np
import pytest

import streamlev as sl
from streamlev._sketch import Sketch

from . import naive, naive_lp
from .test_conformance import SKETCHES as CONFORMANCE

D, EPS = 3, 0.2


def _keys(n=48, seed=0):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, D)) * np.array([1.0, 4.0, 0.3])
    K[rng.choice(n, 4, replace=False)] *= 6.0  # a few heavy keys
    return K


def _sensitive(K, p):
    """Keys the ℓ_p oracle certifies as eps-heavy (its optimised queries give lower bounds on α)."""
    alpha = naive_lp.sensitivities(K, p)
    return np.flatnonzero(alpha >= EPS * (1 + 1e-6))


class Kind:
    """How to build one sketch class, feed it a stream, and check its guarantee."""

    mergeable = True
    #: merges of random partitions are checked for this class in tests/test_conformance.py, over hypothesis
    #: streams against the oracle; here only the classes that suite does not run
    conformance = False

    def make(self, start=0):
        raise NotImplementedError

    def feed(self, sk, X, ids=None):
        return sk.update(X, ids=ids)

    def sets(self, sk):
        return [sk.universal_set()]

    def check(self, sk, K, ids):
        raise NotImplementedError


class Online(Kind):
    conformance = True

    def make(self, start=0):
        return sl.OnlineLeverage(D, EPS, start=start)

    def check(self, sk, K, ids):
        naive.assert_set_matches(np.searchsorted(ids, sk.universal_set()), naive.leverage(K), EPS)


class MultiHead(Kind):
    # heads fed K, K scaled by 2^40 and K with a column scaled by 1e-3: the same scores, the same set
    conformance = True

    def make(self, start=0):
        return sl.MultiHeadLeverage(3, D, EPS, start=start)

    def feed(self, sk, X, ids=None):
        X = np.atleast_2d(X)
        return sk.update(np.stack([X, X * 2.0**40, X * np.array([1.0, 1e-3, 1.0])]), ids=ids)

    def sets(self, sk):
        return sk.universal_set()

    def check(self, sk, K, ids):
        for U in sk.universal_set():
            naive.assert_set_matches(np.searchsorted(ids, U), naive.leverage(K), EPS)


class Approx(Kind):
    def make(self, start=0):
        return sl.ApproxLeverage(D, EPS, ell=2, ridge=4.0, start=start, max_c=None)

    def check(self, sk, K, ids):
        tau = naive.ridge_leverage(K, 4.0)
        U = np.searchsorted(ids, sk.universal_set())
        must = np.flatnonzero(tau >= EPS * (1 + 1e-8))
        may = np.flatnonzero(tau >= EPS / sk.c * (1 - 1e-8))
        assert np.isin(must, U).all() and np.isin(U, may).all(), (must, U, may, sk.c)


class PowerSet(Kind):
    def make(self, start=0):
        sk = sl.OnlinePowerSet(D, EPS, p=3.0)
        if start:  # no start parameter: the first ids are given explicitly
            sk._first = start
        return sk

    def feed(self, sk, X, ids=None):
        first = getattr(sk, "_first", None)
        if ids is None and first is not None:
            m = np.atleast_2d(X).shape[0]
            ids = np.arange(first + sk.n_seen, first + sk.n_seen + m)
        return sk.update(X, ids=ids)

    def check(self, sk, K, ids):
        U = np.searchsorted(ids, sk.universal_set())
        assert np.isin(_sensitive(K, 3.0), U).all()


class KVCache(Kind):
    mergeable = False

    def make(self, start=0):
        return sl.LeverageKVCache(D, EPS, sinks=1, window=2)

    def check(self, sk, K, ids):
        n = K.shape[0]
        tau = naive.leverage(K)
        held = set(sk.universal_set().tolist())
        must = set(np.flatnonzero(tau >= EPS * (1 + 1e-8))) | {0} | {n - 2, n - 1}
        may = must | set(np.flatnonzero(tau >= EPS * (1 - 1e-8)))
        assert must <= held <= may


KINDS = {
    "OnlineLeverage": Online(),
    "MultiHeadLeverage": MultiHead(),
    "ApproxLeverage": Approx(),
    "OnlinePowerSet": PowerSet(),
    "LeverageKVCache": KVCache(),
}
kinds = pytest.mark.parametrize("name", sorted(KINDS))


def test_every_stateful_sketch_class_is_covered_here():
    public = [getattr(sl, name) for name in sl.__all__]
    classes = {obj.__name__ for obj in public if isinstance(obj, type) and issubclass(obj, Sketch)}
    assert classes == set(KINDS)
    # the classes whose merges are left to the conformance suite are exactly those it runs
    ran = {type(adapter(D, EPS).sk).__name__ for adapter in CONFORMANCE.values()}
    assert ran == {name for name, kind in KINDS.items() if kind.conformance}


@kinds
def test_contract_surface(name):
    kind = KINDS[name]
    K = _keys()
    sk = kind.make()
    assert kind.feed(sk, K[:30]) is sk
    assert kind.feed(sk, K[30]) is sk  # one row
    assert kind.feed(sk, np.zeros((0, D))) is sk  # an empty block
    kind.feed(sk, K[31:])
    assert type(sk.n_seen) is int and sk.n_seen == K.shape[0]
    assert isinstance(sk.nbytes, int) and sk.nbytes > 0
    for U in kind.sets(sk):
        assert U.dtype == np.int64 and np.all(U[1:] > U[:-1])
    kind.check(sk, K, np.arange(K.shape[0]))
    r = repr(sk)
    assert r.startswith(f"{name}(") and f"n_seen={K.shape[0]}" in r


@kinds
def test_bytes_pickle_and_equality_without_side_effects(name):
    kind = KINDS[name]
    K = _keys(seed=1)
    sk = kind.feed(kind.make(), K[:40])
    twin = kind.feed(kind.make(), K[:40])
    assert sk == twin
    data = sk.to_bytes()
    back = type(sk).from_bytes(data)
    assert back.to_bytes() == data and back == sk
    assert pickle.loads(pickle.dumps(sk)) == sk
    kind.sets(sk)  # a query changes neither the bytes nor equality
    assert sk.to_bytes() == data and sk == twin
    for s in (sk, back):
        kind.feed(s, K[40:])
    assert back == sk and sk != twin
    kind.check(back, K, np.arange(K.shape[0]))
    with pytest.raises(ValueError, match="not a valid"):
        type(sk).from_bytes(data[:-1] + bytes([data[-1] ^ 1]))


@kinds
def test_refused_blocks_and_merges_leave_the_sketch_unchanged(name):
    kind = KINDS[name]
    K = _keys(seed=2)
    sk = kind.feed(kind.make(), K[:20])
    before = sk.to_bytes()
    bad = K[20:25].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kind.feed(sk, bad)
    with pytest.raises(ValueError):
        kind.feed(sk, np.ones((2, D + 1)))
    with pytest.raises((TypeError, NotImplementedError)):
        sk.merge(K)
    if kind.mergeable:
        with pytest.raises(ValueError, match="itself"):
            sk.merge(sk)
        with pytest.raises(ValueError, match="overlap|disjoint"):
            sk.merge(kind.feed(kind.make(), K[:20]))  # the same rows and ids again
    else:
        with pytest.raises(NotImplementedError, match="cannot merge"):
            sk.merge(kind.make())
    assert sk.to_bytes() == before


@pytest.mark.parametrize("name", sorted(k for k, v in KINDS.items() if v.mergeable and not v.conformance))
@pytest.mark.parametrize("seed", [0, 1])
def test_random_partitions_merged_in_random_order_keep_the_guarantee(name, seed):
    kind = KINDS[name]
    rng = np.random.default_rng(seed)
    K = _keys(n=40, seed=seed + 3)
    labels = rng.integers(0, 3, size=K.shape[0])
    pool = [kind.feed(kind.make(), K[labels == p], ids=np.flatnonzero(labels == p)) for p in range(3)]
    rng.shuffle(pool)
    while len(pool) > 1:
        a, b = pool.pop(), pool.pop()
        pool.insert(int(rng.integers(0, len(pool) + 1)), a.merge(b))
    assert pool[0].n_seen == K.shape[0]
    kind.check(pool[0], K, np.arange(K.shape[0]))
