"""ApproxLeverage (Frequent-Directions ridge-leverage sketch) against the exact oracle tests/naive.py.

Every check compares with naive.ridge_leverage (an SVD of the full key matrix) or with
an SVD/eigendecomposition computed here; nothing is taken from the code under test
except the quantities whose bounds are being checked (the shrinkage Δ, c, the sketch B).
Runtime budget: about 40 s in the default profile.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamlev import serialize
from streamlev.approx import ApproxGuaranteeWarning, ApproxLeverage

from . import naive

# Many tests use a small ridge on purpose (c > max_c); the warning itself is tested with pytest.warns
# and with warnings turned into errors where it must not appear.
pytestmark = pytest.mark.filterwarnings("ignore::streamlev.approx.ApproxGuaranteeWarning")

RTOL = 1e-8  # ties within this relative distance of a threshold may go either way


# --- strategies --------------------------------------------------------------------------------------

KINDS = ("decaying", "heavy_rare", "gaussian", "low_rank_plus_noise", "zero_rows", "duplicates")


def _random_rotation(rng, d):
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


@st.composite
def key_problems(draw, *, max_n=240, max_d=64):
    """(K, ell, ridge, eps): keys of a structured kind, a budget ell < d, a ridge and a threshold."""
    kind = draw(st.sampled_from(KINDS))
    d = draw(st.integers(2, max_d))
    n = draw(st.integers(1, max_n))
    ell = draw(st.integers(1, d - 1))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "decaying":
        # Singular spectrum decaying like j^-a or exponentially, in a random basis.
        j = np.arange(1, d + 1)
        spec = j ** -draw(st.sampled_from([0.5, 1.0, 2.0])) if draw(st.booleans()) else 0.7**j
        K = (rng.standard_normal((n, d)) * spec) @ _random_rotation(rng, d)
    elif kind == "heavy_rare":
        # Small isotropic background plus a few rows pointing in directions nobody else uses.
        K = 0.05 * rng.standard_normal((n, d))
        h = int(rng.integers(1, min(n, 6) + 1))
        rows = rng.choice(n, size=h, replace=False)
        K[rows] = rng.standard_normal((h, d)) * 10.0 ** rng.uniform(0, 2, size=(h, 1))
    elif kind == "low_rank_plus_noise":
        r = int(rng.integers(1, d))
        K = rng.standard_normal((n, r)) @ rng.standard_normal((r, d)) + 1e-3 * rng.standard_normal((n, d))
    else:
        K = rng.standard_normal((n, d))
        if kind == "zero_rows":
            K[rng.random(n) < 0.4] = 0.0
        elif kind == "duplicates":
            K = K[rng.integers(0, max(1, n // 3), size=n)]
    if draw(st.booleans()):
        K = K.astype(np.float32)
    # Ridge relative to the FD error bound (2): gamma >= 2 guarantees c <= 1 + 1/gamma; small gamma
    # exercises large c.
    tail = fd_bound(K, ell)
    scale = max(np.linalg.norm(np.asarray(K, float), 2) ** 2, 1e-300)
    gamma = draw(st.sampled_from([0.1, 0.5, 2.0, 10.0]))
    ridge = gamma * max(tail, 1e-3 * scale)
    eps = draw(st.sampled_from([1.0, 0.5, 0.2, 0.1, 0.05, 0.01, 1e-3]))
    return K, ell, ridge, eps


def fd_bound(K, ell):
    """min over 0 <= k <= ell of ‖K − K_k‖_F² / (ell + 1 − k), from an SVD of K."""
    S = np.linalg.svd(np.asarray(K, float), compute_uv=False)
    S2 = np.concatenate([S**2, np.zeros(ell + 1)])
    tails = np.cumsum(S2[::-1])[::-1]  # tails[k] = sum_{j >= k} s_j²
    return float(min(tails[k] / (ell + 1 - k) for k in range(ell + 1)))


# --- checks ------------------------------------------------------------------------------------------


def check_guarantee(sk, K, eps, ridge):
    """Both inclusions, the FD sandwich (1), the shrinkage bound (2) and the candidate bound."""
    K64 = np.asarray(K, float)
    d = K64.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApproxGuaranteeWarning)
        U = sk.universal_set()
    assert U.dtype == np.int64 and np.all(np.diff(U) > 0)
    tau = naive.ridge_leverage(K64, ridge)
    c = sk.c
    assert c == pytest.approx(1.0 + sk.shrinkage / ridge)
    must = np.flatnonzero(tau >= eps * (1 + RTOL))
    allowed = np.flatnonzero(tau >= eps / c * (1 - RTOL))
    missing = np.setdiff1d(must, U)
    extra = np.setdiff1d(U, allowed)
    assert missing.size == 0, f"keys {missing[:10]}, scores {tau[missing[:10]]} >= eps={eps}, missing"
    assert extra.size == 0, f"keys {extra[:10]} with scores {tau[extra[:10]]} < eps/c={eps / c} kept"
    # (1): BᵀB ⪯ KᵀK ⪯ BᵀB + Δ·I, checked with an eigendecomposition of the difference.
    B = sk.sketch()
    assert B.shape[0] == sk.rank <= min(2 * sk.ell, d)
    norm2 = np.linalg.norm(K64, 2) ** 2 if K64.size else 0.0
    tol = 1e-9 * max(norm2, 1e-300)
    ev = np.linalg.eigvalsh(K64.T @ K64 - B.T @ B)
    assert ev.min() >= -tol and ev.max() <= sk.shrinkage + tol
    # (2): Δ <= ‖K − K_k‖_F²/(ell + 1 − k) for every k <= ell.
    assert sk.shrinkage <= fd_bound(K64, sk.ell) * (1 + 1e-9) + tol
    # Candidate bound after eviction: |U| <= (rank + d·(c − 1)) / eps.
    assert len(U) <= (sk.rank + d * (c - 1.0)) / eps * (1 + 1e-9) + 1e-9
    assert sk.n_candidates == len(U)
    # The reported scores are the upper bounds of (3): τ <= τ̃ <= c·τ.
    ids, t_up = sk.scores()
    assert np.array_equal(ids, U)
    assert np.all(t_up >= tau[U] * (1 - RTOL)) and np.all(t_up <= c * tau[U] * (1 + RTOL) + 1e-300)
    kid, keys = sk.keys()
    assert np.array_equal(kid, U) and np.array_equal(keys, np.asarray(K)[U])
    return U


def blocks_of(K, sizes):
    out, a = [], 0
    for s in sizes:
        out.append(K[a : a + s])
        a += s
    if a < len(K):
        out.append(K[a:])
    return out


# --- properties --------------------------------------------------------------------------------------


@given(key_problems(), st.lists(st.integers(1, 90), min_size=1, max_size=8))
def test_both_inclusions_any_blocks(problem, sizes):
    K, ell, ridge, eps = problem
    sk = ApproxLeverage(K.shape[1], eps, ell=ell, ridge=ridge)
    for B in blocks_of(K, sizes):
        assert sk.update(B) is sk
    assert sk.n_seen == len(K)
    check_guarantee(sk, K, eps, ridge)


@given(key_problems(max_n=150, max_d=32), st.data())
def test_block_size_does_not_matter_for_the_guarantee(problem, data):
    K, ell, ridge, eps = problem
    n, d = K.shape
    one = ApproxLeverage(d, eps, ell=ell, ridge=ridge).update(K)
    rows = ApproxLeverage(d, eps, ell=ell, ridge=ridge)
    for i in range(n):
        rows.update(K[i])  # a single row of shape (dim,)
    sizes = data.draw(st.lists(st.integers(1, 40), min_size=1, max_size=10))
    blk = ApproxLeverage(d, eps, ell=ell, ridge=ridge)
    for B in blocks_of(K, sizes):
        blk.update(B)
    for sk in (one, rows, blk):
        check_guarantee(sk, K, eps, ridge)


@given(key_problems(max_n=200, max_d=48), st.data())
def test_merge_random_partitions_random_order(problem, data):
    K, ell, ridge, eps = problem
    n, d = K.shape
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n_shards = data.draw(st.integers(1, 6))
    owner = rng.integers(0, n_shards, size=n)  # arbitrary (non-contiguous) partition, explicit ids
    shards = []
    for s in range(n_shards):
        idx = np.flatnonzero(owner == s)
        sk = ApproxLeverage(d, eps, ell=ell, ridge=ridge)
        for part in np.array_split(idx, rng.integers(1, 4)):
            sk.update(K[part], ids=part)
        shards.append(sk)
    # Merge in a random tree: repeatedly merge two random sketches.
    while len(shards) > 1:
        i, j = rng.choice(len(shards), size=2, replace=False)
        merged = shards[i].merge(shards[j])
        shards = [s for k, s in enumerate(shards) if k not in (i, j)] + [merged]
    assert shards[0].n_seen == n
    check_guarantee(shards[0], K, eps, ridge)


@given(key_problems(max_n=160, max_d=40), st.integers(1, 159))
def test_serialise_mid_stream_restore_continue(problem, cut):
    K, ell, ridge, eps = problem
    d = K.shape[1]
    cut = min(cut, len(K))
    a = ApproxLeverage(d, eps, ell=ell, ridge=ridge, start=7, max_c=None).update(K[:cut])
    blob = a.to_bytes()
    b = ApproxLeverage.from_bytes(blob)
    assert b.to_bytes() == blob
    a.update(K[cut:])
    b.update(K[cut:])
    assert a.to_bytes() == b.to_bytes()
    assert np.array_equal(a.universal_set(), b.universal_set())


# --- deterministic cases -----------------------------------------------------------------------------


def test_no_shrink_means_exact_ridge_set():
    rng = np.random.default_rng(0)
    K = rng.standard_normal((50, 30))
    sk = ApproxLeverage(30, 0.1, ell=10, ridge=1.0).update(K)  # 50 rows > 2·ell = 20: shrinks
    assert sk.shrinkage > 0
    exact = ApproxLeverage(30, 0.1, ell=10, ridge=1.0).update(K[:20])  # fits: no shrink, c = 1
    assert exact.shrinkage == 0.0 and exact.c == 1.0
    naive.assert_set_matches(exact.universal_set(), naive.ridge_leverage(K[:20], 1.0), 0.1)
    # 2·ell >= d: the sketch never needs to shrink, whatever n is.
    wide = ApproxLeverage(30, 0.1, ell=20, ridge=1.0).update(K)
    assert wide.shrinkage == 0.0
    naive.assert_set_matches(wide.universal_set(), naive.ridge_leverage(K, 1.0), 0.1)


def test_heavy_rare_direction_is_found_after_long_background():
    rng = np.random.default_rng(1)
    d, n = 64, 5000
    K = 0.1 * rng.standard_normal((n, d)) @ np.diag(0.9 ** np.arange(d))
    rare = rng.standard_normal(d)
    rare /= np.linalg.norm(rare)
    K[1234] += 20 * rare
    K[4321] += 15 * rare[::-1]
    ell = 16
    ridge = 2 * fd_bound(K, ell)
    sk = ApproxLeverage(d, 0.2, ell=ell, ridge=ridge)
    for a in range(0, n, 256):
        sk.update(K[a : a + 256])
    assert sk.c <= 1.5
    U = check_guarantee(sk, K, 0.2, ridge)
    assert {1234, 4321} <= set(U.tolist())
    assert sk.nbytes < 2 * ell * d * 8 + 64 * (d + 1) * 8 + 4096  # O(ell·d + candidates·d), not O(n)


def test_extreme_magnitudes_and_zero_blocks():
    rng = np.random.default_rng(2)
    for scale in (1e-150, 1.0, 1e150):
        K = rng.standard_normal((120, 20)) * scale
        K[30:50] = 0.0
        K[7] *= 50
        ridge = 2 * fd_bound(K, 6)
        sk = ApproxLeverage(20, 0.05, ell=6, ridge=ridge)
        sk.update(np.zeros((5, 20)))
        sk.update(K[5:], ids=np.arange(5, 120))
        check_guarantee(sk, np.vstack([np.zeros((5, 20)), K[5:]]), 0.05, ridge)


def test_small_ridge_warns_but_keeps_every_heavy_key():
    rng = np.random.default_rng(3)
    K = rng.standard_normal((400, 32))
    ridge = 0.01 * fd_bound(K, 4)
    sk = ApproxLeverage(32, 0.05, ell=4, ridge=ridge, max_c=2.0).update(K)
    assert sk.c > 2.0
    with pytest.warns(ApproxGuaranteeWarning, match="ridge >="):
        U = sk.universal_set()
    tau = naive.ridge_leverage(K, ridge)
    assert np.setdiff1d(np.flatnonzero(tau >= 0.05 * (1 + RTOL)), U).size == 0
    quiet = ApproxLeverage(32, 0.05, ell=4, ridge=ridge, max_c=None).update(K)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.universal_set()


def test_default_ids_and_start():
    rng = np.random.default_rng(4)
    K = rng.standard_normal((30, 8)) * 0.01
    K[[3, 17, 29]] = 10 * rng.standard_normal((3, 8))
    sk = ApproxLeverage(8, 0.5, ell=3, ridge=1.0, start=100)
    sk.update(K[:10]).update(K[10:])
    tau = naive.ridge_leverage(K, 1.0)
    U = sk.universal_set()
    assert set(np.flatnonzero(tau >= 0.5) + 100) <= set(U.tolist())
    assert U.min() >= 100 and U.max() <= 129


def test_float32_keys_stay_float32_and_give_the_float64_result():
    K = np.random.default_rng(5).standard_normal((200, 24)).astype(np.float32)
    a = ApproxLeverage(24, 0.05, ell=5, ridge=600.0).update(K)
    b = ApproxLeverage(24, 0.05, ell=5, ridge=600.0).update(K.astype(np.float64))
    assert np.array_equal(a.universal_set(), b.universal_set()) and a.universal_set().size
    assert np.array_equal(a.sketch(), b.sketch()) and a.shrinkage == b.shrinkage
    assert a.keys()[1].dtype == np.float32 and b.keys()[1].dtype == np.float64
    assert a.nbytes < b.nbytes
    a.update(100 * K[:3].astype(np.float64), ids=[1000, 1001, 1002])  # a float64 block upgrades storage
    assert a.keys()[1].dtype == np.float64


def test_candidate_store_stays_bounded_over_a_long_stream():
    """After each eviction <= (rank + d·(c − 1))/eps candidates; in between at most twice that + a block."""
    rng = np.random.default_rng(6)
    d, ell, eps, block = 32, 8, 0.01, 200
    spec = 0.6 ** np.arange(d)
    sk = ApproxLeverage(d, eps, ell=ell, ridge=10.0)
    peak, bound = 0, 0.0
    for _ in range(60):
        sk.update(rng.standard_normal((block, d)) * spec)
        peak = max(peak, sk.n_candidates)
        bound = max(bound, (sk.rank + d * (sk.c - 1)) / eps)
    assert bound < 60 * block / 2  # the bound is meaningful here (c stays small)
    assert peak <= max(64, 2 * bound) + block
    U = sk.universal_set()
    assert len(U) <= (sk.rank + d * (sk.c - 1)) / eps


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.full((3, 6), np.nan), ValueError, "NaN"),
        (np.vstack([np.ones((2, 6)), [[np.inf] * 6]]), ValueError, "row 2"),
        (np.ones((3, 5)), ValueError, "expected 6"),
        (np.ones((3, 6), dtype=complex), TypeError, "complex"),
        (np.array([["a"] * 6]), TypeError, "dtype"),
        (np.ones((2, 3, 6)), ValueError, "2-D"),
        ("keys", TypeError, "numeric"),
    ],
)
def test_refused_block_leaves_state_identical(bad, exc, match):
    rng = np.random.default_rng(7)
    sk = ApproxLeverage(6, 0.1, ell=2, ridge=1.0).update(rng.standard_normal((20, 6)))
    before = sk.to_bytes()
    with pytest.raises(exc, match=match):
        sk.update(bad)
    assert sk.to_bytes() == before


@pytest.mark.parametrize(
    "ids, exc",
    [
        (np.arange(4), ValueError),  # wrong length
        (np.arange(5).reshape(5, 1), ValueError),
        (np.linspace(0, 1, 5), TypeError),
        (["a"] * 5, TypeError),
    ],
)
def test_bad_ids_refused_without_change(ids, exc):
    sk = ApproxLeverage(6, 0.1, ell=2, ridge=1.0).update(np.ones((3, 6)))
    before = sk.to_bytes()
    with pytest.raises(exc, match="ids"):
        sk.update(np.ones((5, 6)), ids=ids)
    assert sk.to_bytes() == before


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(dim=0, eps=0.1, ell=1, ridge=1.0), ValueError, "dim"),
        (dict(dim=8, eps=0.0, ell=2, ridge=1.0), ValueError, "eps"),
        (dict(dim=8, eps=1.5, ell=2, ridge=1.0), ValueError, "eps"),
        (dict(dim=8, eps=0.1, ell=0, ridge=1.0), ValueError, "ell"),
        (dict(dim=8, eps=0.1, ell=9, ridge=1.0), ValueError, "ell must be at most"),
        (dict(dim=8, eps=0.1, ell=2.5, ridge=1.0), TypeError, "ell"),
        (dict(dim=8, eps=0.1, ell=2, ridge=0.0), ValueError, "ridge > 0"),
        (dict(dim=8, eps=0.1, ell=2, ridge=-1.0), ValueError, "ridge"),
        (dict(dim=8, eps=0.1, ell=2, ridge=1.0, start=1.5), TypeError, "start"),
        (dict(dim=8, eps=0.1, ell=2, ridge=1.0, max_c=0.5), ValueError, "max_c"),
    ],
)
def test_bad_parameters(kwargs, exc, match):
    dim = kwargs.pop("dim")
    eps = kwargs.pop("eps")
    with pytest.raises(exc, match=match):
        ApproxLeverage(dim, eps, **kwargs)


def test_bad_merges():
    a = ApproxLeverage(6, 0.1, ell=2, ridge=1.0).update(np.eye(6))
    with pytest.raises(ValueError, match="ell"):
        a.merge(ApproxLeverage(6, 0.1, ell=3, ridge=1.0))
    with pytest.raises(ValueError, match="ridge"):
        a.merge(ApproxLeverage(6, 0.1, ell=2, ridge=2.0))
    with pytest.raises(ValueError, match="itself"):
        a.merge(a)
    with pytest.raises(TypeError, match="ApproxLeverage"):
        a.merge(object())
    b = ApproxLeverage(6, 0.1, ell=2, ridge=1.0).update(np.eye(6))  # same ids 0..5
    before = a.to_bytes()
    with pytest.raises(ValueError, match="disjoint"):
        a.merge(b)
    assert a.to_bytes() == before


# --- serialisation -----------------------------------------------------------------------------------


def _sketch_with_state():
    rng = np.random.default_rng(8)
    K = rng.standard_normal((90, 10))
    K[[5, 50]] *= 30
    return ApproxLeverage(10, 0.05, ell=3, ridge=5.0, start=3, max_c=None).update(K), K


def test_round_trip_exact():
    sk, _K = _sketch_with_state()
    blob = sk.to_bytes()
    back = ApproxLeverage.from_bytes(blob)
    assert back.to_bytes() == blob
    for name in ("dim", "eps", "ell", "ridge", "start", "max_c", "n_seen", "n_candidates", "shrinkage", "c"):
        assert getattr(back, name) == getattr(sk, name)
    assert np.array_equal(back.sketch(), sk.sketch())
    assert np.array_equal(back.universal_set(), sk.universal_set())


def test_pickle_goes_through_bytes():
    import pickle

    sk, _K = _sketch_with_state()
    back = pickle.loads(pickle.dumps(sk))
    assert back == sk and back.to_bytes() == sk.to_bytes()


def test_corrupted_truncated_foreign_bytes_refused():
    sk, _K = _sketch_with_state()
    blob = sk.to_bytes()
    rng = np.random.default_rng(9)
    for cut in sorted(set(rng.integers(0, len(blob), size=40).tolist()) | {0, 1, len(blob) - 1}):
        with pytest.raises(ValueError):
            ApproxLeverage.from_bytes(blob[:cut])
    for pos in rng.integers(0, len(blob), size=40):
        bad = bytearray(blob)
        bad[pos] ^= 0x5A
        with pytest.raises(ValueError):
            ApproxLeverage.from_bytes(bytes(bad))
    with pytest.raises(ValueError):
        ApproxLeverage.from_bytes(serialize.pack("OnlineLeverage", {"dim": 10}, {}))
    with pytest.raises(ValueError):
        ApproxLeverage.from_bytes("not bytes")


def test_well_formed_but_inconsistent_states_refused():
    sk, _K = _sketch_with_state()
    meta, arrays = serialize.unpack(sk.to_bytes(), "ApproxLeverage")

    def refused(meta_change=None, array_change=None):
        m = dict(meta, **(meta_change or {}))
        a = dict(arrays, **(array_change or {}))
        with pytest.raises(ValueError):
            ApproxLeverage.from_bytes(serialize.pack("ApproxLeverage", m, a))

    refused({"dim": 11})
    refused({"ell": 20})
    refused({"ridge": 0.0})
    refused({"eps": 2.0})
    refused({"delta": -1.0})
    refused({"n_seen": 0})
    refused({"state_version": 99})
    refused({"key_dtype": "int8"})
    refused({"key_dtype": "float32"})
    refused({"dim": "10"})
    refused(array_change={"s": arrays["s"][::-1].copy()})
    refused(array_change={"vt": arrays["vt"][:, :5].copy()})
    refused(array_change={"cand_ids": arrays["cand_ids"].astype(np.float64)})
    refused(array_change={"s": np.full(7, 1.0)})
    refused(array_change={"cand_ids": np.zeros_like(arrays["cand_ids"])})
    bad_vt = arrays["vt"].copy()
    bad_vt[0, 0] = np.nan
    refused(array_change={"vt": bad_vt})
    m = dict(meta)
    del m["delta"]
    with pytest.raises(ValueError):
        ApproxLeverage.from_bytes(serialize.pack("ApproxLeverage", m, arrays))


def test_too_small_a_ridge_warns_at_the_update_where_c_exceeds_max_c_once():
    rng = np.random.default_rng(7)
    K = rng.standard_normal((1200, 32))
    sk = ApproxLeverage(32, 0.2, ell=4, ridge=1.0, max_c=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ApproxGuaranteeWarning)
        sk.update(K[:4])  # no shrinkage yet: c = 1
    assert sk.c == 1.0
    with pytest.warns(ApproxGuaranteeWarning, match=r"c = 1 \+ Δ/ridge .* > max_c = 2.*suggest") as record:
        for block in np.array_split(K[4:], 6):
            sk.update(block)
    assert len(record) == 1 and sk.c > 2.0  # once, at the update where it happened
    assert record[0].filename == __file__  # points at the caller's update()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ApproxGuaranteeWarning)
        sk.update(K[:10], ids=np.arange(5000, 5010))  # not repeated


@pytest.mark.parametrize("whole", [True, False])
def test_suggest_gives_ell_and_ridge_that_keep_c_below_the_target(whole):
    rng = np.random.default_rng(8)
    n, d = 4000, 96
    K = rng.standard_normal((n, 5)) @ rng.standard_normal((5, d)) + 0.1 * rng.standard_normal((n, d))
    K[[17, 2500]] += 30 * rng.standard_normal((2, d))
    sample = K if whole else K[rng.choice(n, 800, replace=False)]
    ell, ridge, tail = ApproxLeverage.suggest(sample, c=1.5, ell=12, n_rows=None if whole else n)
    assert ell == 12 and ridge == pytest.approx(tail / 0.5)
    sk = ApproxLeverage(d, 0.1, ell=ell, ridge=ridge)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ApproxGuaranteeWarning)
        for block in np.array_split(K, 10):
            sk.update(block)
        U = sk.universal_set()
    assert sk.c <= 1.5
    tau = naive.ridge_leverage(K, ridge)
    assert set(np.flatnonzero(tau >= 0.1)) <= set(U.tolist()) <= set(np.flatnonzero(tau >= 0.1 / sk.c * (1 - 1e-9)))


def test_suggest_refuses_bad_arguments():
    K = np.ones((10, 4))
    with pytest.raises(ValueError, match="c must be"):
        ApproxLeverage.suggest(K, c=1.0)
    with pytest.raises(ValueError, match="ell must be at most"):
        ApproxLeverage.suggest(K, ell=5)
    with pytest.raises(ValueError, match="no keys"):
        ApproxLeverage.suggest(np.zeros((0, 4)))
