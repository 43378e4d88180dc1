"""Exact leverage scores and universal sets against independent oracles (tests/naive.py)."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamlev as sl

from . import naive
from .strategies import eps_values, key_matrices, short_wide_keys


def rel_err(a, b, floor=1e-12):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor))) if a.size else 0.0


# --- accuracy targets: QR-grade relative error on hard keys -----------------------------------------


def test_well_conditioned_relative_error_1e8():
    K = np.random.default_rng(0).standard_normal((20000, 16))
    assert rel_err(sl.leverage_scores(K), naive.leverage(K)) <= 1e-8


def test_vandermonde_cond_1e8():
    t = np.linspace(0.0, 1.0, 20000)
    K = np.vander(t, 12)
    cond = np.linalg.cond(naive.column_normalise(K))
    assert 1e7 < cond < 1e9
    assert rel_err(sl.leverage_scores(K), naive.leverage(K)) <= 1e-6


def test_column_scales_1e_minus6_to_1e6():
    rng = np.random.default_rng(1)
    K = rng.standard_normal((20000, 12))
    Ks = K * np.logspace(-6, 6, 12)
    # Scale invariance: the oracle of the unscaled matrix is the truth.
    truth = naive.leverage(K)
    assert rel_err(sl.leverage_scores(Ks), truth) <= 1e-6
    assert rel_err(sl.leverage_scores(K), truth) <= 1e-8


def test_gram_route_would_fail_here():
    """The Vandermonde case really is hard: the Gram route misses the target by orders of magnitude."""
    t = np.linspace(0.0, 1.0, 20000)
    K = np.vander(t, 12)
    G = K.T @ K
    L = np.linalg.cholesky(G)
    Y = np.linalg.solve(L, K.T)
    gram = np.sum(Y**2, axis=0)
    assert rel_err(gram, naive.leverage(K)) > 1e-5
    assert rel_err(sl.leverage_scores(K), naive.leverage(K)) < 1e-6


def test_ridge_matches_oracle_and_decreases():
    rng = np.random.default_rng(2)
    K = rng.standard_normal((500, 6)) * np.array([1, 2, 3, 1e-2, 5, 1])
    prev = sl.leverage_scores(K)
    for lam in [1e-6, 1e-2, 1.0, 10.0, 1e3]:
        t = sl.leverage_scores(K, ridge=lam)
        assert rel_err(t, naive.ridge_leverage(K, lam)) <= 1e-9
        assert np.all(t <= prev + 1e-12)
        prev = t


def test_float32_stays_float32_accumulates_in_float64():
    K = np.random.default_rng(3).standard_normal((3000, 10)).astype(np.float32)
    t = sl.leverage_scores(K)
    assert t.dtype == np.float64
    assert rel_err(t, naive.leverage(K.astype(np.float64))) <= 1e-9


def test_integer_and_bool_keys_are_converted():
    rng = np.random.default_rng(4)
    Ki = rng.integers(-5, 6, size=(200, 4))
    assert rel_err(sl.leverage_scores(Ki), naive.leverage(Ki.astype(float))) <= 1e-10
    Kb = rng.random((200, 4)) < 0.5
    assert rel_err(sl.leverage_scores(Kb), naive.leverage(Kb.astype(float)), floor=1e-8) <= 1e-8


def test_empty_and_edge_shapes():
    assert sl.leverage_scores(np.zeros((0, 3))).shape == (0,)
    assert sl.universal_set(np.zeros((0, 3)), 0.1).dtype == np.int64
    assert sl.universal_set(np.zeros((0, 3)), 0.1).size == 0
    np.testing.assert_array_equal(sl.leverage_scores(np.zeros((5, 3))), np.zeros(5))
    np.testing.assert_allclose(sl.leverage_scores(np.ones((1, 3))), [1.0])
    # n < d: every row of a generic short matrix has leverage 1.
    np.testing.assert_allclose(sl.leverage_scores(np.random.default_rng(5).standard_normal((3, 7))), 1.0)


def test_extreme_magnitudes():
    rng = np.random.default_rng(6)
    K = rng.standard_normal((300, 5))
    truth = naive.leverage(K)
    for s in (1e-150, 1e150):
        assert rel_err(sl.leverage_scores(K * s), truth) <= 1e-9
    M = K.copy()
    M[::2] *= 1e150
    M[1::2] *= 1e-150
    assert rel_err(sl.leverage_scores(M), naive.leverage(M)) <= 1e-9


# --- properties --------------------------------------------------------------------------------------


@given(key_matrices())
def test_scores_equal_oracle(K):
    t = sl.leverage_scores(K)
    K64 = np.asarray(K, dtype=np.float64)
    assert t.shape == (K.shape[0],) and t.dtype == np.float64
    assert np.all((t >= 0) & (t <= 1))
    r = naive.rank(K64)
    assert abs(t.sum() - r) <= 1e-6 * max(1, r)
    np.testing.assert_allclose(t, naive.leverage(K64), rtol=1e-6, atol=1e-9)


@given(key_matrices(kinds=("gaussian", "outlier_rows", "duplicates", "zero_rows")), st.data())
def test_row_permutation_equivariance(K, data):
    perm = np.random.default_rng(data.draw(st.integers(0, 2**31))).permutation(K.shape[0])
    np.testing.assert_allclose(sl.leverage_scores(K[perm]), sl.leverage_scores(K)[perm], rtol=1e-9, atol=1e-12)


@given(
    key_matrices(kinds=("gaussian", "outlier_rows", "duplicates", "zero_rows", "heavy_first"), float32=False),
    st.integers(0, 2**31),
)
def test_invariance_under_invertible_transform(K, seed):
    rng = np.random.default_rng(seed)
    d = K.shape[1]
    B = rng.standard_normal((d, d)) + 3 * np.eye(d)  # invertible, moderate condition
    B *= 10.0 ** rng.uniform(-3, 3, size=d)  # and column scaling on top
    np.testing.assert_allclose(sl.leverage_scores(K @ B), sl.leverage_scores(K), rtol=1e-6, atol=1e-9)


@given(key_matrices(kinds=("gaussian", "outlier_rows", "duplicates")), st.floats(1e-4, 1e2))
def test_ridge_scores_decrease_in_lambda(K, lam):
    t1 = sl.leverage_scores(K, ridge=lam)
    t2 = sl.leverage_scores(K, ridge=2 * lam)
    t0 = sl.leverage_scores(K)
    assert np.all(t2 <= t1 + 1e-12) and np.all(t1 <= t0 + 1e-9)
    np.testing.assert_allclose(t1, naive.ridge_leverage(K, lam), rtol=1e-7, atol=1e-12)


@given(
    key_matrices(
        max_n=60,
        max_d=6,
        kinds=("gaussian", "outlier_rows", "duplicates", "zero_rows", "heavy_first", "heavy_last", "rank_deficient"),
    ),
    eps_values,
    st.integers(0, 2**31),
)
def test_universal_set_guarantee(K, eps, seed):
    K = np.asarray(K, dtype=np.float64)
    U = sl.universal_set(K, eps)
    assert U.dtype == np.int64 and np.all(np.diff(U) > 0)
    r = naive.rank(K)
    assert U.size <= r / eps * (1 + 1e-9)
    naive.assert_set_matches(U, naive.leverage(K), eps)
    rng = np.random.default_rng(seed)
    d = K.shape[1]
    Q = np.vstack([rng.standard_normal((50, d)), naive.worst_case_queries(K)])
    A = naive.power_attention(Q, K, 2.0)
    heavy_cols = np.flatnonzero((A >= eps * (1 + 1e-9)).any(axis=0))
    assert np.isin(heavy_cols, U).all()


def test_worst_case_query_attains_leverage():
    K = np.random.default_rng(7).standard_normal((40, 5))
    Qw = naive.worst_case_queries(K)
    A = naive.power_attention(Qw, K, 2.0)
    np.testing.assert_allclose(np.diag(A), sl.leverage_scores(K), rtol=1e-8)


def test_universal_set_ridge():
    K = np.random.default_rng(8).standard_normal((300, 4))
    K[:3] *= 20
    for lam in (0.1, 10.0):
        naive.assert_set_matches(sl.universal_set(K, 0.05, ridge=lam), naive.ridge_leverage(K, lam), 0.05)


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [sl.leverage_scores, lambda K: sl.universal_set(K, 0.1)])
def test_bad_input_messages(fn):
    good = np.random.default_rng(9).standard_normal((10, 3))
    bad = good.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="row 4"):
        fn(bad)
    bad[4, 1] = 0
    bad[7, 0] = -np.inf
    with pytest.raises(ValueError, match="row 7"):
        fn(bad)
    with pytest.raises(ValueError, match="2-D"):
        fn(good[0])
    with pytest.raises(ValueError, match="2-D"):
        fn(good[None])
    with pytest.raises(TypeError, match="complex"):
        fn(good.astype(complex))
    with pytest.raises(TypeError, match="object"):
        fn(np.array([[1.0, 2.0], [3.0]], dtype=object))
    with pytest.raises(TypeError, match="real numbers"):
        fn(np.array([["a", "b"]]))
    with pytest.raises(TypeError):
        fn("keys.npy")
    with pytest.raises(ValueError, match="d = 0"):
        fn(np.zeros((4, 0)))


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        sl.universal_set(np.eye(3), eps)


def test_bad_eps_type_and_ridge():
    with pytest.raises(TypeError, match="eps"):
        sl.universal_set(np.eye(3), "0.1")
    for ridge in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ridge"):
            sl.leverage_scores(np.eye(3), ridge=ridge)
    with pytest.raises(ValueError, match="p must"):
        sl.universal_set(np.eye(3), 0.1, p=-1.0)


def test_non_contiguous_and_read_only_inputs_work():
    K = np.asfortranarray(np.random.default_rng(10).standard_normal((100, 6)))
    K.setflags(write=False)
    t = sl.leverage_scores(K[::2, ::2])
    np.testing.assert_allclose(t, naive.leverage(K[::2, ::2]), rtol=1e-9)
    before = K.copy()
    sl.leverage_scores(K)
    np.testing.assert_array_equal(K, before)


def _hard_keys():
    rng = np.random.default_rng(23)
    G = rng.standard_normal((400, 12))
    deficient = G[:, :5] @ rng.standard_normal((5, 12))  # rank 5
    scaled = G * np.logspace(-6, 6, 12)  # column scales 1e-6..1e6
    U, _, Vt = np.linalg.svd(G, full_matrices=False)
    illcond = (U * np.logspace(0, -8, 12)) @ Vt  # condition number 1e8
    zero_col = G.copy()
    zero_col[:, 3] = 0.0
    return {
        "gaussian": G,
        "rank 5": deficient,
        "column scales 1e-6..1e6": scaled,
        "condition 1e8": illcond,
        "zero column": zero_col,
        "magnitude 1e200": G * 1e200,
        "magnitude 1e-200": G * 1e-200,
        "n < d": G[:7],
    }


@pytest.mark.parametrize("name", list(_hard_keys()))
@pytest.mark.parametrize("small", [True, False], ids=["svd path", "factor path"])
def test_both_in_memory_paths_match_the_oracle(name, small, monkeypatch):
    """Small keys take one SVD (no compiled kernel), larger ones the blocked factor: both against naive.leverage."""
    from streamlev import exact

    if not small:
        monkeypatch.setattr(exact, "SMALL_ENTRIES", 0)
    K = _hard_keys()[name]
    ref = _hard_keys()["gaussian"] if name.startswith("magnitude") else K  # the oracle's norms would overflow
    want = naive.leverage(ref)
    got = sl.leverage_scores(K)
    tol = 1e-6 if name in ("condition 1e8", "column scales 1e-6..1e6") else 1e-9
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 1e-3)
    assert abs(got.sum() - naive.rank(ref)) < 1e-6
    np.testing.assert_array_equal(sl.universal_set(K, 0.05), naive.universal_set(ref, 0.05))


def test_small_path_is_taken_below_the_size_limit_only(monkeypatch):
    from streamlev import exact

    calls = []
    real = exact._scores_small
    monkeypatch.setattr(exact, "_scores_small", lambda K: calls.append(K.shape) or real(K))
    rng = np.random.default_rng(1)
    sl.leverage_scores(rng.standard_normal((exact.SMALL_ENTRIES // 64, 64)))
    sl.leverage_scores(rng.standard_normal((exact.SMALL_ENTRIES // 64 + 1, 64)))
    sl.leverage_scores(rng.standard_normal((100, 8)), ridge=0.5)  # ridge: the factor path
    assert calls == [(exact.SMALL_ENTRIES // 64, 64)]


def test_membership_tolerance_is_the_factors():
    from streamlev import _factor, exact

    assert exact.THRESHOLD_RTOL == _factor.THRESHOLD_RTOL


def test_small_keys_load_no_compiled_kernel(tmp_path):
    """A short job in a fresh process (validation, scores, the CLI) does not import numba."""
    import subprocess
    import sys

    path = tmp_path / "k.npy"
    np.save(path, np.random.default_rng(2).standard_normal((1000, 64)))
    code = (
        "import sys, numpy as np, streamlev\n"
        f"K = np.load({str(path)!r})\n"
        "streamlev.universal_set(K, 0.01); streamlev.leverage_scores(K)\n"
        "from streamlev.cli import main\n"
        f"main(['select', {str(path)!r}, '--eps', '0.01', '--json'])\n"
        "print('numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_small_keys_report_the_first_nonfinite_row():
    K = np.ones((50, 4))
    K[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        sl.leverage_scores(K)
    K[7, 2] = 1.0
    K[31, 0] = -np.inf
    with pytest.raises(ValueError, match="row 31"):
        sl.universal_set(K.astype(np.float32), 0.1)


def test_the_exact_layer_takes_p_2_only_and_the_public_function_dispatches():
    K = np.random.default_rng(3).standard_normal((30, 3))
    with pytest.raises(ValueError, match=r"streamlev.universal_set\(K, eps, p=3.0\)"):
        sl.exact.universal_set(K, 0.2, p=3.0)
    np.testing.assert_array_equal(sl.universal_set(K, 0.2, p=3.0), sl.universal_set_p(K, 0.2, p=3.0))
    np.testing.assert_array_equal(sl.universal_set(K, 0.2), np.flatnonzero(naive.leverage(K) >= 0.2))


TINY_SCALES = [1e-310, 2.0**-1070, 1e-320]


def tiny_variants(G, s):
    """G with the whole matrix, one column or two columns scaled by s (plain leverage scores unchanged)."""
    one = G.copy()
    one[:, 3] *= s
    two = G.copy()
    two[:, [0, 5]] *= s
    return {"whole": G * s, "one column": one, "two columns": two}


def column_normalised(K):
    """K with each column scaled to max |x| in [0.5, 1) by exact powers of two: the oracle's view of tiny keys."""
    m = np.max(np.abs(K), axis=0)
    return np.ldexp(K, -np.frexp(np.where(m > 0, m, 1.0))[1])


@pytest.mark.parametrize("s", TINY_SCALES)
def test_subnormal_keys_in_memory_give_the_unscaled_answer(s):
    """Columns near the underflow are rescaled by exact powers of two before factoring."""
    G = np.random.default_rng(0).standard_normal((300, 8))
    for name, K in tiny_variants(G, s).items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no RuntimeWarning from NaN or overflow
            got = sl.universal_set(K, 0.04)
            scores = sl.leverage_scores(K)
        # subnormal entries keep fewer digits than G (1e-320 about 3), so the reference is the oracle on
        # the rounded keys themselves, column-normalised; at 1e-310 that is G's own answer
        tau = naive.leverage(column_normalised(K))
        naive.assert_set_matches(got, tau, 0.04)
        np.testing.assert_allclose(scores, tau, rtol=1e-9, atol=1e-12, err_msg=name)
        if s == 1e-310:
            naive.assert_set_matches(got, naive.leverage(G), 0.04)


def test_subnormal_keys_for_p_other_than_2_give_the_unscaled_answer():
    from . import naive_lp

    G = np.random.default_rng(3).standard_normal((24, 3)) * [0.3, 1.0, 3.0]
    alpha = naive_lp.sensitivities(G, 3.0)
    for K in (G * 1e-310, G * [1.0, 1e-312, 1.0]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            naive.assert_set_matches(sl.universal_set(K, 0.2, p=3.0), alpha, 0.2, rtol=1e-6)
            np.testing.assert_allclose(sl.lewis_weights(K, 3.0), sl.lewis_weights(G, 3.0), rtol=1e-6)


def test_subnormal_column_with_a_ridge_is_refused_with_advice():
    """Ridge scores change with column scales, so tiny columns cannot be rescaled silently."""
    G = np.random.default_rng(1).standard_normal((50, 4))
    G[:, 2] *= 1e-310
    with pytest.raises(ValueError, match=r"column 2 .*ldexp"):
        sl.universal_set(G, 0.1, ridge=0.5)


# --- short wide keys (n < d) on the factor path: certified independent rows score exactly 1 -----------------


def _short_wide(kind, n=300, d=600, seed=21):
    """n x d keys above the small-input limit; "dependent": rows 5, 9, 100 share a 2-dimensional span and rows
    200..209 copy rows 10..19 (0.5 each)."""
    return short_wide_keys(kind, n, d, seed, combo_row=100, duplicates=zip(range(200, 210), range(10, 20)))


@pytest.mark.parametrize("kind", ["gauss", "scaled", "float32", "dependent", "near"])
def test_short_wide_keys_match_the_oracle(kind, monkeypatch):
    """Scores and sets equal the SVD oracle's; independent rows are scored 1 without any SVD."""
    from streamlev._tuning import SMALL_ENTRIES

    K = _short_wide(kind)
    assert K.size > SMALL_ENTRIES  # the factor path
    want = naive.leverage(K)
    calls = []
    real = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = sl.leverage_scores(K)
    assert np.max(np.abs(got - want)) <= (1e-6 if kind == "near" else 1e-10)
    for eps in (0.3, 0.6, 1.0):
        naive.assert_set_matches(sl.universal_set(K, eps), want, eps)
    if kind in ("gauss", "scaled", "float32"):
        assert np.all(got == 1.0) and calls == []
    if kind == "dependent":
        assert np.allclose(got[[10, 19, 200, 209]], 0.5) and got.sum() == pytest.approx(K.shape[0] - 11)


def test_short_wide_fortran_ordered_keys_are_not_overwritten():
    """The certificate's QR works on a copy: a Fortran-ordered float64 input comes back unchanged."""
    K = np.asfortranarray(_short_wide("gauss"))
    before = K.copy()
    assert np.all(sl.leverage_scores(K) == 1.0)
    assert np.array_equal(K, before)
