"""Hostile input at the function entry points (streamlev._validate's checks): bad keys and parameters are
refused with a message naming the problem and the fix; unusual valid keys give the oracle's answer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamlev import OnlineLeverage, leverage_scores, two_pass_universal_set, universal_set
from streamlev.approx import ApproxLeverage

from . import naive
from .hostile_inputs import (
    BAD_KEYS,
    GOOD_KEYS,
    K0,
    RO,
    _snapshot,
    oracle,
)

RO.flags.writeable = False


@pytest.mark.parametrize("case", BAD_KEYS, ids=[c[0] for c in BAD_KEYS])
@pytest.mark.parametrize("fn", ["leverage_scores", "universal_set", "universal_set_ridge", "universal_set_p1.5"])
def test_functions_refuse_bad_keys(fn, case):
    _, make, exc, pattern = case
    call = {
        "leverage_scores": leverage_scores,
        "universal_set": lambda K: universal_set(K, 0.1),
        "universal_set_ridge": lambda K: universal_set(K, 0.1, ridge=1.0),
        "universal_set_p1.5": lambda K: universal_set(K, 0.1, p=1.5),
    }[fn]
    with pytest.raises(exc, match=pattern):
        call(make())


@pytest.mark.parametrize("case", GOOD_KEYS, ids=[c[0] for c in GOOD_KEYS])
@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_functions_accept_unusual_valid_keys(case, ridge):
    _, make = case
    K = make()
    before = _snapshot(K)[0]
    tau = oracle(np.asarray(K, dtype=np.float64), ridge)
    got = leverage_scores(K, ridge=ridge)
    assert got.dtype == np.float64 and got.shape == tau.shape
    np.testing.assert_allclose(got, tau, rtol=1e-6, atol=1e-12)
    naive.assert_set_matches(universal_set(K, 0.1, ridge=ridge), tau, 0.1)
    if before is not None:  # the input is never written to
        np.testing.assert_array_equal(np.asarray(K), before)


EPS_BAD = [
    (0, ValueError),
    (0.0, ValueError),
    (-0.5, ValueError),
    (1.0 + 1e-9, ValueError),
    (2, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    ("0.1", TypeError),
    (None, TypeError),
    (True, TypeError),
    ([0.1], TypeError),
    (0.1 + 0j, TypeError),
    (np.array([0.1]), TypeError),
]


RIDGE_BAD = [
    (-1e-300, ValueError),
    (-1, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    ("1", TypeError),
    (None, TypeError),
    (True, TypeError),
    (1j, TypeError),
]


P_BAD = [
    (0, ValueError),
    (-2, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    ("2", TypeError),
    (None, TypeError),
    (False, TypeError),
]


DIM_BAD = [
    (0, ValueError),
    (-1, ValueError),
    (2.5, TypeError),
    ("4", TypeError),
    (None, TypeError),
    (True, TypeError),
    (np.float64(4.0), TypeError),
]


INT_BAD = [(0, ValueError), (-5, ValueError), (2.5, TypeError), ("64", TypeError), (True, TypeError)]


def _param_cases(values):
    return [pytest.param(v, e, id=f"{v!r}:{e.__name__}") for v, e in values]


@pytest.mark.parametrize("value,exc", _param_cases(EPS_BAD))
@pytest.mark.parametrize("where", ["universal_set", "OnlineLeverage", "two_pass", "ApproxLeverage"])
def test_eps_out_of_range(where, value, exc):
    call = {
        "universal_set": lambda: universal_set(K0, value),
        "OnlineLeverage": lambda: OnlineLeverage(4, value),
        "two_pass": lambda: two_pass_universal_set(K0, value),
        "ApproxLeverage": lambda: ApproxLeverage(4, value, ell=2, ridge=1.0),
    }[where]
    with pytest.raises(exc, match=r"eps must (lie in|be a real number in) \(0, 1\]"):
        call()


@pytest.mark.parametrize("value,exc", _param_cases(RIDGE_BAD))
@pytest.mark.parametrize("where", ["leverage_scores", "universal_set", "OnlineLeverage", "two_pass", "ApproxLeverage"])
def test_ridge_out_of_range(where, value, exc):
    call = {
        "leverage_scores": lambda: leverage_scores(K0, ridge=value),
        "universal_set": lambda: universal_set(K0, 0.1, ridge=value),
        "OnlineLeverage": lambda: OnlineLeverage(4, 0.1, ridge=value),
        "two_pass": lambda: two_pass_universal_set(K0, 0.1, ridge=value),
        "ApproxLeverage": lambda: ApproxLeverage(4, 0.1, ell=2, ridge=value),
    }[where]
    with pytest.raises(exc, match=r"ridge must be a (finite|real) number >= 0"):
        call()


@pytest.mark.parametrize("value,exc", _param_cases(P_BAD))
def test_p_out_of_range(value, exc):
    with pytest.raises(exc, match=r"p must be a (finite|real) number (> 0|in \[0\.1, 64\])"):
        universal_set(K0, 0.1, p=value)


@pytest.mark.parametrize("p", [1.0, 1.5, 3.0])
def test_ridge_with_p_other_than_2_is_refused(p):
    with pytest.raises(ValueError, match=r"only defined for p = 2.*use ridge=0\.0"):
        universal_set(K0, 0.1, p=p, ridge=0.5)


@pytest.mark.parametrize("value,exc", _param_cases(DIM_BAD))
@pytest.mark.parametrize("cls", ["OnlineLeverage", "ApproxLeverage"])
def test_dim_out_of_range(cls, value, exc):
    make = {
        "OnlineLeverage": lambda: OnlineLeverage(value, 0.1),
        "ApproxLeverage": lambda: ApproxLeverage(value, 0.1, ell=1, ridge=1.0),
    }[cls]
    with pytest.raises(exc, match=r"dim must be an integer >= 1"):
        make()


@pytest.mark.parametrize("value", [1.5, "0", None, True, np.float64(3)])
@pytest.mark.parametrize("cls", ["OnlineLeverage", "ApproxLeverage"])
def test_start_must_be_an_integer(cls, value):
    make = {
        "OnlineLeverage": lambda: OnlineLeverage(4, 0.1, start=value),
        "ApproxLeverage": lambda: ApproxLeverage(4, 0.1, ell=1, ridge=1.0, start=value),
    }[cls]
    with pytest.raises(TypeError, match=r"start must be an integer"):
        make()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**63 - 1])
def test_start_beyond_int64_is_refused_or_works(value):
    """Ids are int64: a start that cannot number the rows must be refused up front, never overflow later."""
    try:
        sk = OnlineLeverage(4, 0.1, start=value)
    except ValueError as exc:
        assert "start" in str(exc)
        return
    before = sk.to_bytes()
    try:
        sk.update(K0[:2])
    except ValueError as exc:
        assert "id" in str(exc)
        assert sk.to_bytes() == before
        return
    np.testing.assert_array_equal(sk.universal_set(), value + np.flatnonzero(oracle(K0[:2]) >= 0.1))


@pytest.mark.parametrize("value,exc", _param_cases(INT_BAD))
def test_block_size_out_of_range(value, exc):
    with pytest.raises(exc, match=r"block_size must be an integer >= 1"):
        two_pass_universal_set(K0, 0.1, block_size=value)


@pytest.mark.parametrize(
    "kwargs,exc,pattern",
    [
        (dict(ell=0, ridge=1.0), ValueError, r"ell must be an integer >= 1"),
        (dict(ell=5, ridge=1.0), ValueError, r"ell must be at most dim = 4"),
        (dict(ell=2.5, ridge=1.0), TypeError, r"ell must be an integer"),
        (dict(ell=2, ridge=0.0), ValueError, r"needs ridge > 0"),
        (dict(ell=2, ridge=1.0, max_c=0.5), ValueError, r"max_c must be a finite number >= 1"),
        (dict(ell=2, ridge=1.0, max_c="2"), TypeError, r"max_c must be a real number"),
    ],
    ids=["ell=0", "ell>dim", "ell-float", "ridge=0", "max_c<1", "max_c-str"],
)
def test_approx_specific_parameters(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        ApproxLeverage(4, 0.1, **kwargs)
