"""Adversarial numerics: Vandermonde keys with cond >= 1e8, column scales 1e-8..1e8, rows scaled by 1e±150,
rank-deficient prefixes that become full rank, duplicates, zero blocks, heavy keys first or last, fed to
every exact method and checked against the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlev import OnlineLeverage, leverage_scores, two_pass_universal_set, universal_set

from . import naive
from .hostile_inputs import (
    _blocks_of,
    _cond_scaled,
    _oracle_scaled,
    _random_sizes,
    _vandermonde,
    adversarial,
    base_keys,
)


@settings(max_examples=40)
@given(adversarial(), st.sampled_from([1.0, 0.5, 0.2, 0.05, 0.01]), st.integers(0, 2**31))
def test_adversarial_keys_every_exact_method_equals_oracle(case, eps, seed):
    kind, K, ridge, rtol = case
    rng = np.random.default_rng(seed)
    n, d = K.shape
    tau = _oracle_scaled(K, ridge)
    # 1. in memory
    naive.assert_set_matches(universal_set(K, eps, ridge=ridge), tau, eps, rtol=rtol)
    # 2. one pass in random blocks (empty blocks included)
    sizes = _random_sizes(rng, n)
    sk = OnlineLeverage(d, eps, ridge=ridge)
    a = 0
    for s in sizes:
        sk.update(K[a : a + s])
        a += s
    naive.assert_set_matches(sk.universal_set(), tau, eps, rtol=rtol)
    # 3. merges of random shards in a random order
    parts = int(rng.integers(1, 5))
    labels = rng.integers(0, parts, size=n)
    shards = [
        OnlineLeverage(d, eps, ridge=ridge).update(K[labels == p], ids=np.flatnonzero(labels == p))
        for p in range(parts)
    ]
    merged = shards[int(rng.integers(0, parts))]
    for sh in shards:
        if sh is not merged:
            merged.merge(sh)
    naive.assert_set_matches(merged.universal_set(), tau, eps, rtol=rtol)
    # 4. two passes over a callable with the same random blocks, and over the array
    naive.assert_set_matches(
        two_pass_universal_set(lambda: _blocks_of(K, sizes), eps, ridge=ridge), tau, eps, rtol=rtol
    )
    naive.assert_set_matches(
        two_pass_universal_set(K, eps, ridge=ridge, block_size=int(rng.integers(1, 40))), tau, eps, rtol=rtol
    )


def test_vandermonde_condition_numbers_reach_1e8_and_beyond():
    """The adversarial strategy really produces cond >= 1e8 after column scaling (and the sets match)."""
    rng = np.random.default_rng(0)
    conds = []
    for d in (12, 13, 14, 15):
        K = _vandermonde(rng, 120, d)
        c = _cond_scaled(K)
        conds.append(c)
        tau = naive.leverage(K)
        for eps in (0.5, 0.1, 0.05):
            rtol = max(1e-8, 1e-14 * c)
            naive.assert_set_matches(
                OnlineLeverage(d, eps).update(K[:50]).update(K[50:]).universal_set(), tau, eps, rtol=rtol
            )
            naive.assert_set_matches(two_pass_universal_set(K, eps, block_size=17), tau, eps, rtol=rtol)
            # the scores themselves, for the record: relative error grows with cond, stays small
            np.testing.assert_allclose(leverage_scores(K), tau, rtol=max(1e-7, 1e-14 * c), atol=1e-12)
    assert min(conds) >= 5e7 and max(conds) >= 1e10


@pytest.mark.parametrize("scale", [1e150, 1e-150])
def test_uniform_scaling_by_1e150_is_invisible(scale):
    K = base_keys(50, 5, seed=2)
    ref = universal_set(K, 0.1)
    tau = naive.leverage(K)
    np.testing.assert_allclose(leverage_scores(K * scale), tau, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(universal_set(K * scale, 0.1), ref)
    np.testing.assert_array_equal(OnlineLeverage(5, 0.1).update(K * scale).universal_set(), ref)
    np.testing.assert_array_equal(two_pass_universal_set(K * scale, 0.1, block_size=9), ref)


@pytest.mark.parametrize("scale", [1e160, 1e200, 1e300, 1e-170, 1e-200, 1e-300])
@pytest.mark.parametrize("mode", ["all-rows", "one-row"])
def test_extreme_scaling_works_or_is_refused(mode, scale):
    """Beyond 1e±150: finite keys must give the oracle's set, or a ValueError - never a silent wrong set."""
    K = base_keys(50, 5, seed=2)
    if mode == "all-rows":
        K = K * scale
    else:
        K[7] *= scale
    tau = _oracle_scaled(K, 0.0)  # exact power-of-two rescaling first: the oracle's own norms stay finite
    runs = {
        "universal_set": lambda X: universal_set(X, 0.1),
        "OnlineLeverage": lambda X: OnlineLeverage(5, 0.1).update(X[:20]).update(X[20:]).universal_set(),
        "two_pass": lambda X: two_pass_universal_set(X, 0.1, block_size=16),
    }
    for run in runs.values():
        try:
            got = run(K)
        except ValueError:
            continue
        naive.assert_set_matches(got, tau, 0.1)


@pytest.mark.parametrize(
    "first,second",
    [
        ([[1e308, 1, 2], [3, 4, 5]], [[1, 1, 1]]),
        ([[1e308, 0, 0], [1e308, 1, 0]], [[0, 0, 1]]),
    ],
    ids=["one-huge-entry", "two-huge-rows"],
)
def test_keys_near_float_max_work_or_are_refused_without_changing_the_sketch(first, second):
    first, second = np.array(first, dtype=float), np.array(second, dtype=float)
    K = np.vstack([first, second])
    tau = _oracle_scaled(K, 0.0)
    sk = OnlineLeverage(3, 0.1)
    for block in (first, second):
        before = sk.to_bytes()
        try:
            sk.update(block)
        except ValueError:
            assert sk.to_bytes() == before
            return
    naive.assert_set_matches(sk.universal_set(), tau, 0.1)


def test_rank_deficient_prefix_becomes_full_rank_in_one_sketch():
    rng = np.random.default_rng(4)
    d = 6
    prefix = rng.standard_normal((200, 2)) @ rng.standard_normal((2, d))
    K = np.vstack([np.zeros((30, d)), prefix, rng.standard_normal((5, d)) * 1e-3, rng.standard_normal((50, d))])
    sk = OnlineLeverage(d, 0.05)
    for a in range(0, K.shape[0], 16):
        sk.update(K[a : a + 16])
        naive.assert_set_matches(sk.universal_set(), naive.leverage(K[: a + 16]), 0.05)
    assert sk.rank == d
