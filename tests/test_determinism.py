"""Determinism: the same rows in any blocking, partition and merge order give identical sets."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlev import OnlineLeverage, two_pass_universal_set, universal_set

from . import naive
from .hostile_inputs import (
    _oracle_scaled,
    _random_sizes,
    adversarial,
)


def _gap_eps(tau, draw_index):
    """An eps halfway (geometrically) between two distinct oracle scores, far from every score."""
    t = np.unique(tau[tau > 1e-6])
    if t.size < 2:
        return 0.5
    gaps = t[1:] / t[:-1]
    ok = np.flatnonzero(gaps > 1.001)
    if ok.size == 0:
        return 0.5
    i = ok[draw_index % ok.size]
    return float(min(1.0, math.sqrt(t[i] * t[i + 1])))


@settings(max_examples=25)
@given(adversarial(), st.integers(0, 1000), st.integers(0, 2**31))
def test_same_rows_any_blocking_partition_and_merge_order_identical(case, which, seed):
    kind, K, ridge, _ = case
    rng = np.random.default_rng(seed)
    n, d = K.shape
    eps = _gap_eps(_oracle_scaled(K, ridge), which)
    results = []
    results.append(universal_set(K, eps, ridge=ridge))
    for _ in range(3):  # random blockings
        sk = OnlineLeverage(d, eps, ridge=ridge)
        a = 0
        for s in _random_sizes(rng, n):
            sk.update(K[a : a + s])
            a += s
        results.append(sk.universal_set())
    rows = OnlineLeverage(d, eps, ridge=ridge)
    for k in K:
        rows.update(k)
    results.append(rows.universal_set())
    for _ in range(3):  # random partitions (non-contiguous shards) and random binary merge trees
        parts = int(rng.integers(2, 6))
        labels = rng.integers(0, parts, size=n)
        pool = [
            OnlineLeverage(d, eps, ridge=ridge).update(K[labels == p], ids=np.flatnonzero(labels == p))
            for p in range(parts)
        ]
        while len(pool) > 1:
            i, j = sorted(rng.choice(len(pool), size=2, replace=False))
            merged = pool[i].merge(pool[j])
            pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [merged]
        results.append(pool[0].universal_set())
    for bs in (1, 5, None):
        results.append(two_pass_universal_set(K, eps, ridge=ridge, block_size=bs))
    # serialise mid-stream, restore, continue
    half = n // 2
    sk = OnlineLeverage.from_bytes(OnlineLeverage(d, eps, ridge=ridge).update(K[:half]).to_bytes())
    results.append(sk.update(K[half:]).universal_set())
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    naive.assert_set_matches(results[0], _oracle_scaled(K, ridge), eps)
