"""Baseline sketches: the common contract, and each method against its OWN stated guarantee.

Guarantees hold with a stated probability over the seed, so each test runs a few dozen seeds and
checks that the empirical failure rate stays within the stated bound (with a binomial margin so
that the test is not flaky); the exact scores come from the SVD oracle in tests/naive.py.
"""

import math

import numpy as np
import pytest

from streamlev.baselines import (
    METHODS,
    CountSketchLeverage,
    ExactInMemory,
    FrequentDirections,
    KVPressLeverage,
    OnlineExact,
    OnlinePower,
    OnlineRowSampling,
    SRHTLeverage,
    TwoPassExact,
    UniformSampling,
)
from streamlev.baselines.countsketch import rows_for
from streamlev.baselines.sampling import oversample_for
from streamlev.baselines.srht import jl_dim
from streamlev.baselines.uniform import rows_for_coherence

from . import naive

TINY = 1e-12  # a threshold below every score: the set is then every row the method scores


def keys(n=3000, d=4, heavy=(5, 300), seed=0):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d))
    for j, i in enumerate(heavy):
        K[i] *= 20 + 10 * j
    return K


def feed(sk, K, blocks=3):
    for B in np.array_split(K, blocks):
        sk.update(B)
    if sk.passes == 2:
        for B in np.array_split(K, blocks):
            sk.second_pass(B)
    return sk


def within_binomial(failures, trials, rate):
    """failures <= trials·rate + 3 standard deviations + 1 (the stated rate, with margin)."""
    return failures <= trials * rate + 3 * math.sqrt(trials * rate * (1 - rate)) + 1


MAKERS = {
    "exact": lambda d, e, s: ExactInMemory(d, e),
    "online": lambda d, e, s: OnlineExact(d, e),
    "two-pass": lambda d, e, s: TwoPassExact(d, e),
    "approx": lambda d, e, s: FrequentDirections(d, e, ell=2, ridge=1.0),
    "power": lambda d, e, s: OnlinePower(d, e, p=3.0),
    "sampling": lambda d, e, s: OnlineRowSampling(d, e, oversample=8, seed=s),
    "countsketch": lambda d, e, s: CountSketchLeverage(d, e, sketch_rows=64, seed=s),
    "srht": lambda d, e, s: SRHTLeverage(d, e, sketch_rows=64, seed=s),
    "kvpress": lambda d, e, s: KVPressLeverage(d, e, seed=s),
    "uniform": lambda d, e, s: UniformSampling(d, e, sample_rows=64, seed=s),
}


def test_every_registered_method_is_tested():
    assert set(MAKERS) == set(METHODS)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_contract(name):
    K = keys(n=400)
    sk = MAKERS[name](4, 0.2, 1)
    assert sk.update(K[:200]) is sk
    before = (sk.n_seen, sk.nbytes)
    bad = K[200:210].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sk.update(bad)
    with pytest.raises(ValueError):
        sk.update(np.ones((3, 5)))  # wrong dimension
    assert (sk.n_seen, sk.nbytes) == before  # a refused block changes nothing
    sk.update(K[200:])
    if sk.passes == 2:
        with pytest.raises(RuntimeError, match="second pass"):
            sk.universal_set()
        for B in np.array_split(K, 3):
            assert sk.second_pass(B) is sk
    U = sk.universal_set()
    assert U.dtype == np.int64 and np.all(np.diff(U) > 0)
    assert isinstance(sk.n_seen, int) and sk.n_seen == 400
    assert isinstance(sk.nbytes, int) and sk.nbytes > 0
    with pytest.raises((TypeError, NotImplementedError)):
        sk.merge(object())


@pytest.mark.parametrize("name", ["sampling", "countsketch", "srht", "kvpress", "uniform"])
def test_randomised_methods_repeat_with_a_seed_and_refuse_a_bad_one(name):
    K = keys(n=500)
    a = feed(MAKERS[name](4, 0.05, 7), K).universal_set()
    b = feed(MAKERS[name](4, 0.05, 7), K).universal_set()
    assert np.array_equal(a, b)
    with pytest.raises(TypeError, match="seed"):
        METHODS[name].cls(4, 0.05, seed=1.5, **({} if name == "kvpress" else {METHODS[name].param: 8}))


@pytest.mark.parametrize("name", ["sampling", "kvpress", "exact", "power"])
def test_methods_that_cannot_merge_say_why(name):
    with pytest.raises(NotImplementedError, match=r"\w{10}"):
        MAKERS[name](4, 0.2, 0).merge(MAKERS[name](4, 0.2, 0))


# -- streamlev's own methods: exact ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["exact", "online", "two-pass"])
def test_exact_adapters_return_the_oracle_set(name):
    K = keys(n=1500, d=5)
    tau = naive.leverage(K)
    sk = feed(MAKERS[name](5, 0.05, 0), K)
    assert np.array_equal(sk.universal_set(), np.flatnonzero(tau >= 0.05))
    ids, sc = sk.scores()
    np.testing.assert_allclose(sc, tau[ids], rtol=1e-8)


def test_two_pass_merge_of_shards_is_exact():
    K = keys(n=900)
    a, b = TwoPassExact(4, 0.05), TwoPassExact(4, 0.05, start=600)
    a.update(K[:600])
    b.update(K[600:])
    a.merge(b)
    a.second_pass(K)
    assert np.array_equal(a.universal_set(), naive.universal_set(K, 0.05))


def test_frequent_directions_keeps_its_sandwich():
    K = keys(n=2000, d=8)
    lam = 50.0
    sk = feed(FrequentDirections(8, 0.05, ell=3, ridge=lam), K)
    tau = naive.ridge_leverage(K, lam)
    U = sk.universal_set()
    assert set(np.flatnonzero(tau >= 0.05)) <= set(U)
    assert np.all(tau[U] >= 0.05 / sk.c * (1 - 1e-9))


def test_online_power_holds_a_superset_of_the_exact_lp_set():
    import streamlev

    K = keys(n=400, d=3)
    U = feed(OnlinePower(3, 0.1, p=3.0), K).universal_set()
    assert set(streamlev.universal_set(K, 0.1, p=3.0)) <= set(U)


# -- CountSketch + QR ---------------------------------------------------------------------------------------


def test_countsketch_score_bound_holds_with_the_stated_probability():
    d, delta, fail = 3, 0.3, 0.2
    m = rows_for(d, delta, fail)
    K = keys(n=4000, d=d)
    tau = naive.leverage(K)
    failures = 0
    seeds = 30
    for seed in range(seeds):
        ids, est = feed(CountSketchLeverage(d, TINY, sketch_rows=m, seed=seed), K).scores()
        assert ids.size == K.shape[0]
        r = est / tau
        failures += not (r.min() >= 1 / (1 + delta) ** 2 and r.max() <= 1 / (1 - delta) ** 2)
    assert within_binomial(failures, seeds, fail)


def test_countsketch_is_linear_so_shards_merge_exactly():
    K = keys(n=1000)
    whole = CountSketchLeverage(4, 0.1, sketch_rows=50, seed=3).update(K)
    a = CountSketchLeverage(4, 0.1, sketch_rows=50, seed=3).update(K[:400])
    b = CountSketchLeverage(4, 0.1, sketch_rows=50, seed=3, start=400).update(K[400:])
    np.testing.assert_allclose(a.merge(b).sketch(), whole.sketch(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="overlap"):
        CountSketchLeverage(4, 0.1, sketch_rows=50, seed=3).update(K[:10]).merge(
            CountSketchLeverage(4, 0.1, sketch_rows=50, seed=3).update(K[:10])
        )
    with pytest.raises(ValueError, match="seed"):
        a.merge(CountSketchLeverage(4, 0.1, sketch_rows=50, seed=4, start=5000))


def test_countsketch_each_row_lands_in_one_bucket_with_a_sign():
    K = np.eye(3)
    S = CountSketchLeverage(3, 0.1, sketch_rows=7, seed=0).update(K).sketch()
    assert np.count_nonzero(S) == 3 and set(np.abs(S[S != 0])) == {1.0}


# -- SRHT + JL ------------------------------------------------------------------------------------------------


def test_srht_sketch_is_the_sampled_hadamard_transform():
    """The grouped transform equals the definition r₁^{-1/2}·Σ_i (−1)^popcount(j_t & i)·D_i·k_i."""
    from streamlev.baselines._base import hash64

    K = keys(n=700, d=3)
    sk = SRHTLeverage(3, 0.1, sketch_rows=20, seed=5).update(K[:333]).update(K[333:])
    ids = np.arange(700)
    sign = np.where((hash64(ids, 5, 1) >> np.uint64(63)) == 0, 1.0, -1.0)
    rows = np.random.default_rng([5, 0x5248]).integers(0, 2**62, size=20, dtype=np.int64)
    H = 1.0 - 2.0 * (np.bitwise_count(rows[:, None] & ids[None, :]).astype(np.int64) & 1)
    np.testing.assert_allclose(sk.sketch(), H @ (K * sign[:, None]) / math.sqrt(20), rtol=1e-12, atol=1e-12)


def test_srht_relative_error_holds_with_probability_at_least_0_8():
    d, delta = 4, 0.5
    K = keys(n=2000, d=d)
    tau = naive.leverage(K)
    failures, seeds = 0, 30
    for seed in range(seeds):
        ids, est = feed(SRHTLeverage(d, TINY, sketch_rows=600, jl_eps=None, seed=seed), K).scores()
        r = est / tau[ids]
        failures += not (ids.size == K.shape[0] and r.min() >= 1 / (1 + delta) ** 2 and r.max() <= 1 / (1 - delta) ** 2)
    assert within_binomial(failures, seeds, 0.2)


def test_srht_jl_step_keeps_every_norm_within_1_pm_eps():
    d, n, jl = 160, 200, 0.9
    assert jl_dim(n, jl) < d  # the JL step is used
    K = np.random.default_rng(1).standard_normal((n, d))
    failures, seeds = 0, 20
    for seed in range(seeds):
        with_jl = feed(SRHTLeverage(d, TINY, sketch_rows=480, jl_eps=jl, seed=seed), K)
        exact_r = feed(SRHTLeverage(d, TINY, sketch_rows=480, jl_eps=None, seed=seed), K)
        assert with_jl.jl_dim_ == jl_dim(n, jl)
        r = with_jl.scores()[1] / exact_r.scores()[1]
        failures += not (r.min() >= 1 - jl and r.max() <= 1 + jl)
    assert within_binomial(failures, seeds, 1 / n)


# -- online row sampling ---------------------------------------------------------------------------------------


def test_online_sampling_spectral_bound_holds_with_probability_1_minus_1_over_d():
    d, e, lam = 4, 0.5, 1.0
    K = keys(n=3000, d=d)
    A = K.T @ K + lam * np.eye(d)
    w, V = np.linalg.eigh(A)
    Wh = V / np.sqrt(w)  # A^{-1/2}
    tau = naive.ridge_leverage(K, lam)
    failures, seeds = 0, 30
    for seed in range(seeds):
        sk = OnlineRowSampling(d, TINY, oversample=oversample_for(d, e), rel_error=e, ridge=lam, seed=seed).update(K)
        _ids, S = sk.sample()
        ev = np.linalg.eigvalsh(Wh.T @ (S.T @ S + lam * np.eye(d)) @ Wh)
        ids, est = sk.scores()  # kept rows scored against the final sample: within 1/(1 ± ε) on the same event
        r = est / tau[ids]
        held = ev.min() >= 1 - e and ev.max() <= 1 + e
        failures += not (held and r.min() >= 1 / (1 + e) * (1 - 1e-12) and r.max() <= 1 / (1 - e))
        assert sk.n_kept < K.shape[0]
    assert within_binomial(failures, seeds, 1 / d)


def test_online_sampling_keeps_every_heavy_row_when_oversample_times_eps_reaches_1():
    K = keys(n=2000, d=4)
    eps = 0.05
    heavy = np.flatnonzero(naive.leverage(K) >= eps)
    assert heavy.size
    for seed in range(10):
        ids, _ = OnlineRowSampling(4, eps, oversample=1 / eps, seed=seed).update(K).sample()
        assert set(heavy) <= set(ids)


# -- uniform sampling ----------------------------------------------------------------------------------------


def test_uniform_sample_includes_each_row_with_probability_k_over_n():
    n, k, seeds = 120, 12, 300
    K = np.random.default_rng(0).standard_normal((n, 2))
    counts = np.zeros(n)
    for seed in range(seeds):
        ids, _ = UniformSampling(2, 0.5, sample_rows=k, seed=seed).update(K[:50]).update(K[50:]).sample()
        assert ids.size == k
        counts[ids] += 1
    p = k / n
    sd = math.sqrt(seeds * p * (1 - p))
    assert np.abs(counts - seeds * p).max() <= 5 * sd


def test_uniform_spectral_bound_holds_at_the_coherence_sample_size():
    d, delta, fail = 3, 0.5, 0.2
    K = np.random.default_rng(2).standard_normal((20000, d))
    tau = naive.leverage(K)
    mu = K.shape[0] / d * tau.max()
    k = rows_for_coherence(d, mu, delta, fail)
    G = K.T @ K
    w, V = np.linalg.eigh(G)
    Wh = V / np.sqrt(w)
    failures, seeds = 0, 20
    for seed in range(seeds):
        sk = UniformSampling(d, TINY, sample_rows=k, seed=seed).update(K)
        _ids, S = sk.sample()
        ev = np.linalg.eigvalsh(Wh.T @ (K.shape[0] / k * S.T @ S) @ Wh)
        ids, est = sk.scores()  # scores against the rescaled sample: within 1/(1 ± δ) on the same event
        r = est / tau[ids]
        held = ev.min() >= 1 - delta and ev.max() <= 1 + delta
        failures += not (held and r.min() >= 1 / (1 + delta) and r.max() <= 1 / (1 - delta))
    assert within_binomial(failures, seeds, fail)


def test_uniform_merge_is_the_sample_of_all_rows():
    K = keys(n=600)
    whole = UniformSampling(4, 0.1, sample_rows=30, seed=9).update(K).sample()[0]
    a = UniformSampling(4, 0.1, sample_rows=30, seed=9).update(K[:250])
    b = UniformSampling(4, 0.1, sample_rows=30, seed=9, start=250).update(K[250:])
    assert np.array_equal(a.merge(b).sample()[0], whole)


# -- kvpress ---------------------------------------------------------------------------------------------------


def test_kvpress_score_is_the_centred_leverage_when_jitter_is_negligible():
    K = 30.0 * keys(n=1500, d=8) + 5.0  # large scale: the absolute jitter 1e-2 is negligible
    centred = naive.leverage(K - K.mean(axis=0))
    for seed in range(5):
        sk = KVPressLeverage(8, TINY, seed=seed).update(K)
        ids, sc = sk.scores()
        np.testing.assert_allclose(sc, centred[ids], rtol=2e-3, atol=1e-6)


def test_kvpress_jitter_only_lowers_the_scores():
    K = 1e-3 * keys(n=500, d=8)  # small scale: the jitter dominates
    centred = naive.leverage(K - K.mean(axis=0))
    tau = KVPressLeverage(8, 0.5, seed=0).update(K).all_scores()
    assert np.all(tau <= centred * (1 + 1e-4) + 1e-7)
    assert tau.max() < 0.5 * centred.max()
