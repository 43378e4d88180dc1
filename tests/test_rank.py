"""streamlev._rank: the certified lower bound on a factor's rank, against the SVD rule at every state.

The oracle is tests/naive.py's ``factor_rank`` (numpy SVD of the column-normalised factor, the
matrix_rank tolerance with max(n, d)).  At every state of each stream the bound must not exceed it,
``Factor.rank_at_least(k)`` must equal ``rank >= k`` for every k around it, and on keys whose leading
columns are independent the bound must decide without an SVD.
"""

import numpy as np
import pytest

from streamlev._factor import Factor
from streamlev._rank import certification_threshold, rank_lower_bound

from . import naive

EPS64 = np.finfo(np.float64).eps


def _states(K, block):
    """(factor, rows so far) after each block of K."""
    fac = Factor(K.shape[1])
    for a in range(0, K.shape[0], block):
        fac.update(K[a : a + block])
        yield fac, K[: a + block]


def _bound(fac):
    scale = np.linalg.norm(fac.R, axis=0)
    nz = scale > 0
    return rank_lower_bound(fac.R, np.where(nz, scale, 1.0), fac.n, int(nz.sum()))


def _check_state(fac, want_full_prefix=False):
    """The bound is <= the oracle rank; rank_at_least agrees with the oracle for every k around it."""
    r = naive.factor_rank(fac.R, fac.n)
    lb = _bound(fac)
    assert 0 <= lb <= r
    if want_full_prefix:
        assert lb == min(fac.n, fac.dim)
    for k in {0, 1, lb, lb + 1, r - 1, r, r + 1, r - 0.5, r + 0.5, fac.dim, fac.dim + 1}:
        fresh = Factor(fac.dim)  # no cached rank: the certificate path is taken where it can decide
        fresh.set_state(fac.R, fac.n)
        assert fresh.rank_at_least(k) == (r >= k), (k, r, lb)
    return r, lb


def _keys(n, d, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_short_stream_is_certified_without_an_svd(monkeypatch, dtype):
    """Gaussian keys, fewer rows than d: the bound is the number of rows, and no SVD runs to know it."""
    d = 96
    K = _keys(300, d, 1, dtype)
    for fac, _rows in _states(K, 16):
        _check_state(fac, want_full_prefix=fac.n < d)
    calls = []
    real = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda *a, **k: calls.append(1) or real(*a, **k))
    for fac, _rows in _states(K[:80], 16):
        assert fac.rank_at_least(fac.n * 0.5)
        assert fac.rank_at_least(fac.n)
    assert calls == []


@pytest.mark.parametrize("scales", [(0, 0), (-150, 150), (150, -150), (-3, 3)])
def test_column_scalings_do_not_change_the_certificate(scales):
    """Columns scaled over 1e-150..1e150 (either order): the same bound and rank as unscaled keys, state by state."""
    d = 48
    K = _keys(120, d, 2)
    Ks = K * np.logspace(scales[0], scales[1], d)
    for (f1, _), (f2, _) in zip(_states(K, 8), _states(Ks, 8)):
        r1, lb1 = _check_state(f1, want_full_prefix=f1.n < d)
        r2, lb2 = _check_state(f2, want_full_prefix=f2.n < d)
        assert (r1, lb1) == (r2, lb2)


def test_low_rank_keys_state_by_state():
    """Keys of rank 12 in d = 64: the bound stops at 12 (never above), and rank_at_least matches the SVD rule."""
    rng = np.random.default_rng(3)
    K = rng.standard_normal((200, 12)) @ rng.standard_normal((12, 64))
    seen = []
    for fac, _rows in _states(K, 7):
        r, lb = _check_state(fac)
        seen.append((r, lb))
    assert seen[-1][0] == 12
    assert max(lb for _, lb in seen) == 12


def test_exactly_dependent_and_zero_columns():
    """Columns copied, scaled copies and zero columns: left out of the certifying block, the rest certified."""
    K = _keys(150, 40, 4)
    K[:, 5] = K[:, 2]
    K[:, 9] = -3.0 * K[:, 0]
    K[:, 20] = 0.0
    for fac, rows in _states(K, 6):
        r, lb = _check_state(fac)
        # The dependent and zero columns cost one row each of the first rows' rank: all else is certified.
        assert lb == r == min(rows.shape[0], 37)
    K = _keys(50, 40, 5)
    K[:, 0] = 0.0  # a zero first column
    K[:, 1] = K[:, 3] + 1e-12 * _keys(50, 1, 6)[:, 0]  # dependent up to 1e-12 (the SVD rule counts it; too close to
    # certify)
    for fac, rows in _states(K, 10):
        r, lb = _check_state(fac)
        assert lb == min(rows.shape[0], 38) and r == min(rows.shape[0], 39)


@pytest.fixture(params=[True, False], ids=["diag_screen", "no_diag_screen"])
def diag_screen(request, monkeypatch):
    """With and without leaving nearly dependent columns out of the block (without: the margins alone decide)."""
    from streamlev import _rank

    if not request.param:
        monkeypatch.setattr(_rank, "DIAG_MIN", 0.0)
    return request.param


@pytest.mark.parametrize("rel", [0.02, 0.3, 3.0, 30.0, 1e4, 1e6])
def test_singular_values_near_the_threshold(rel, diag_screen):
    """A column that differs from another by rel·tol: the SVD rule may or may not count it; the bound never does
    unless the certification margin is cleared (far above tol)."""
    n, d = 90, 32
    K = _keys(n, d, 6)
    tol = max(n, d) * EPS64
    K[:, 3] = K[:, 1] + rel * tol * np.linalg.norm(K[:, 1]) * _keys(n, 1, 7)[:, 0] / np.sqrt(n)
    for fac, _rows in _states(K, 9):
        r, lb = _check_state(fac)
        if fac.n >= d and rel * tol < 1e-3 * certification_threshold(d, fac.n, d):
            assert lb <= d - 1  # the near-dependent column is never certified
    if rel >= 1e6:
        assert lb == d and r == d


@pytest.mark.parametrize("rel", [0.3, 3.0])
def test_many_rows_raise_the_tolerance_and_the_margin(rel, diag_screen):
    """n >> d: the tolerance σ_max·n·eps grows with n; a column within rel·tol of another is never certified."""
    n, d = 3000, 4
    K = _keys(n, d, 8)
    tol = n * EPS64
    K[:, 1] = K[:, 0] + rel * tol * np.linalg.norm(K[:, 0]) * _keys(n, 1, 9)[:, 0] / np.sqrt(n)
    for fac, _rows in _states(K, 1000):
        r, lb = _check_state(fac)
        assert r == (3 if rel < 1 else 4)
        assert lb == (3 if diag_screen else 1)
