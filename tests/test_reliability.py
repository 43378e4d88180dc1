"""Reliability: hostile input at every public entry point, adversarial numerics, determinism.

Part 1 is a bad-input catalogue.  Every case either works — and then its result
is compared with the independent oracle (:mod:`tests.naive`) — or raises
``ValueError`` / ``TypeError`` whose message names the problem and the fix
(matched below).  Refused updates and merges must leave every sketch
byte-for-byte as it was (``to_bytes`` before == after), and the stream must go
on to the oracle's answer afterwards: nothing already fed is lost.

Part 2 feeds adversarial keys (Vandermonde with cond >= 1e8, column scales
1e-8..1e8, rows scaled by 1e±150, rank-deficient prefixes that become full
rank, exact duplicates, all-zero blocks, heavy keys first or last) to every
exact method — the one-pass sketch in random blocks, merges of random shards,
the two-pass function over arrays / callables / .npy files, and the in-memory
function — and checks each against the oracle.  Part 3 checks determinism: the
same rows in any blocking, partition and merge order give identical sets.

Budget: about 30 s in the default run.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamlev as sl
from streamlev import OnlineLeverage, leverage_scores, two_pass_universal_set, universal_set
from streamlev.approx import ApproxLeverage
from streamlev.cli import main as cli_main

from . import naive

NAN_MSG = r"NaN or infinity in row {row}.*remove or impute"


def base_keys(n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d))
    K[5] *= 30.0
    K[17, -1] = 40.0
    return K


def oracle(K, ridge=0.0):
    K = np.asarray(K, dtype=np.float64)
    if K.shape[0] == 0:
        return np.zeros(0)
    return naive.leverage(K) if ridge == 0 else naive.ridge_leverage(K, ridge)


def put(K, row, value):
    K = np.array(K, dtype=np.float64)
    K[row, 1] = value
    return K


# ================================================================================================
# Part 1 - bad-input catalogue
# ================================================================================================

K0 = base_keys()
D0 = K0.shape[1]

#: (id, make the bad keys, exception, message pattern) - keys handed to a function expecting (n, d)
BAD_KEYS = [
    ("nan", lambda: put(K0, 3, np.nan), ValueError, NAN_MSG.format(row=3)),
    ("+inf", lambda: put(K0, 5, np.inf), ValueError, NAN_MSG.format(row=5)),
    ("-inf", lambda: put(K0, 0, -np.inf), ValueError, NAN_MSG.format(row=0)),
    ("nan-float32", lambda: put(K0, 39, np.nan).astype(np.float32), ValueError, NAN_MSG.format(row=39)),
    ("1-D", lambda: K0[0], ValueError, r"2-D array.*reshape\(1, -1\)"),
    ("3-D", lambda: K0[None], ValueError, r"2-D array of shape \(n, d\), got 3-D"),
    ("0-D", lambda: np.float64(1.0), ValueError, r"2-D array.*got 0-D"),
    ("no-columns", lambda: np.zeros((40, 0)), ValueError, r"d = 0 columns.*at least one feature"),
    ("complex", lambda: K0.astype(np.complex128), TypeError, r"must be real.*\.real"),
    ("complex-zero-imag", lambda: K0 + 0j, TypeError, r"must be real.*\.real"),
    ("object", lambda: K0.astype(object), TypeError, r"dtype object.*np\.asarray"),
    ("unicode", lambda: K0.astype(str), TypeError, r"must hold real numbers.*np\.asarray"),
    ("bytes-dtype", lambda: K0.astype("S8"), TypeError, r"must hold real numbers.*np\.asarray"),
    ("datetime", lambda: np.zeros((40, 4), dtype="datetime64[s]"), TypeError, r"must hold real numbers"),
    ("timedelta", lambda: np.zeros((40, 4), dtype="timedelta64[s]"), TypeError, r"must hold real numbers"),
    ("structured", lambda: np.zeros((40, 4), dtype=[("a", "f8")]), TypeError, r"must hold real numbers"),
    ("python-str", lambda: "keys.npy", TypeError, r"numeric array.*np\.load"),
    ("python-bytes", lambda: b"\x00" * 32, TypeError, r"numeric array"),
    ("None", lambda: None, TypeError, r"dtype object"),
    ("ragged-list", lambda: [[1.0, 2.0], [3.0]], ValueError, r"rectangular numeric array"),
    ("mixed-list", lambda: [[1.0, "a"], [3.0, 4.0]], TypeError, r"must hold real numbers"),
]

#: (id, make the keys) - unusual but valid keys: the result must equal the oracle's
WIDE = base_keys(80, 8, seed=3)
RO = K0.copy()
RO.flags.writeable = False
GOOD_KEYS = [
    ("noncontiguous-rows", lambda: base_keys(80, 4, seed=1)[::2]),
    ("noncontiguous-cols", lambda: WIDE[:, ::2]),
    ("negative-strides", lambda: K0[::-1, ::-1]),
    ("fortran-order", lambda: np.asfortranarray(K0)),
    ("transposed-view", lambda: np.ascontiguousarray(K0.T).T),
    ("read-only", lambda: RO),
    ("read-only-noncontiguous", lambda: RO[::3]),
    ("float32", lambda: K0.astype(np.float32)),
    ("float16", lambda: K0.astype(np.float16)),
    ("longdouble", lambda: K0.astype(np.longdouble)),
    ("int64", lambda: np.round(K0 * 10).astype(np.int64)),
    ("uint8", lambda: (np.abs(K0) * 7).astype(np.uint8)),
    ("bool", lambda: K0 > 0.3),
    ("big-endian", lambda: K0.astype(">f8")),
    ("list-of-lists", K0.tolist),
    ("empty", lambda: np.zeros((0, 4))),
    ("one-row", lambda: K0[:1]),
    ("all-zero", lambda: np.zeros((12, 4))),
    ("fewer-rows-than-columns", lambda: WIDE[:3]),
]


def _snapshot(*arrays):
    return [np.array(a, copy=True) if isinstance(a, np.ndarray) else None for a in arrays]


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
    with pytest.raises(exc, match=r"p must be a (finite|real) number > 0"):
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


# ---- sketches: refused updates change nothing, accepted ones equal the oracle ------------------


def make_sketch(kind, d=D0, eps=0.1, ridge=0.0, start=0):
    if kind == "online":
        return OnlineLeverage(d, eps, ridge=ridge, start=start)
    return ApproxLeverage(d, eps, ell=d, ridge=max(ridge, 1.0), start=start)  # ell = d: exact (c = 1)


def check_sketch_against_oracle(sk, K, ids=None):
    K = np.asarray(K, dtype=np.float64)
    ids = np.arange(K.shape[0]) if ids is None else np.asarray(ids)
    if isinstance(sk, OnlineLeverage):
        tau = oracle(K, sk.ridge)
        U = sk.universal_set()
        must = ids[tau >= sk.eps * (1 + 1e-8)]
        may = ids[tau >= sk.eps * (1 - 1e-8)]
    else:
        tau = oracle(K, sk.ridge)
        U = sk.universal_set()
        must = ids[tau >= sk.eps * (1 + 1e-8)]
        may = ids[tau >= sk.eps / sk.c * (1 - 1e-8)]
    assert np.setdiff1d(must, U).size == 0, f"missing {np.setdiff1d(must, U)}"
    assert np.setdiff1d(U, may).size == 0, f"extra {np.setdiff1d(U, may)}"
    assert sk.n_seen == K.shape[0]


#: bad blocks for a sketch of dim 4 that already holds rows 0..19 of K0
BAD_BLOCKS = [c for c in BAD_KEYS if c[0] not in ("1-D", "no-columns", "python-str", "python-bytes")] + [
    ("1-D-wrong-length", lambda: np.ones(5), ValueError, r"number of features of X has changed: expected 4, got 5"),
    ("dim-changes", lambda: np.ones((3, 5)), ValueError, r"has changed: expected 4, got 5.*same dimension"),
    ("dim-shrinks", lambda: np.ones((3, 3)), ValueError, r"has changed: expected 4, got 3"),
    ("no-columns", lambda: np.zeros((3, 0)), ValueError, r"has changed: expected 4, got 0"),
    ("python-str", lambda: "rows.csv", TypeError, r"numeric array"),
]


@pytest.mark.parametrize("case", BAD_BLOCKS, ids=[c[0] for c in BAD_BLOCKS])
@pytest.mark.parametrize("kind,method", [("online", "update"), ("approx", "update"), ("online", "update_scores")])
def test_refused_block_leaves_sketch_byte_identical(kind, method, case):
    case_id, make, exc, pattern = case
    ridge = 0.5 if method == "update_scores" else 0.0
    sk = make_sketch(kind, ridge=ridge)
    getattr(sk, method)(K0[:20])
    before = sk.to_bytes()
    X = make()
    with pytest.raises(exc, match=pattern):
        getattr(sk, method)(X)
    assert sk.to_bytes() == before, "a refused block changed the sketch"
    # nothing lost: the stream continues to the oracle's answer
    getattr(sk, method)(K0[20:])
    check_sketch_against_oracle(sk, K0)


@pytest.mark.parametrize(
    "case",
    [c for c in GOOD_KEYS if c[0] not in ("fewer-rows-than-columns", "noncontiguous-cols")],
    ids=[c[0] for c in GOOD_KEYS if c[0] not in ("fewer-rows-than-columns", "noncontiguous-cols")],
)
@pytest.mark.parametrize("kind", ["online", "approx"])
def test_sketch_accepts_unusual_valid_blocks(kind, case):
    _, make = case
    X = make()
    arr = np.asarray(X, dtype=np.float64)
    before = _snapshot(X)[0]
    sk = make_sketch(kind, ridge=0.0)
    sk.update(K0[:10])
    sk.update(X)
    sk.update(K0[10:])
    check_sketch_against_oracle(sk, np.concatenate([K0[:10], arr, K0[10:]]))
    if before is not None:
        np.testing.assert_array_equal(np.asarray(X), before)


def test_online_scores_and_logdet_need_a_ridge():
    sk = OnlineLeverage(4, 0.1).update(K0[:20])
    before = sk.to_bytes()
    with pytest.raises(ValueError, match=r"need ridge > 0.*ridge=λ"):
        sk.update_scores(K0[20:])
    with pytest.raises(ValueError, match=r"logdet needs ridge > 0"):
        sk.logdet()
    assert sk.to_bytes() == before


@pytest.mark.parametrize("kind", ["online", "approx"])
def test_single_rows_and_empty_blocks_are_accepted(kind):
    sk = make_sketch(kind)
    for k in K0:
        sk.update(k)  # (d,) is one row
        sk.update(np.zeros((0, D0)))  # empty block: no-op
        sk.update(np.zeros((0, D0), dtype=np.float32), ids=np.zeros(0, dtype=np.int64))
    check_sketch_against_oracle(sk, K0)


@pytest.mark.parametrize("kind", ["online", "approx"])
def test_empty_block_with_empty_list_of_ids(kind):
    sk = make_sketch(kind).update(K0)
    before = sk.to_bytes()
    sk.update(np.zeros((0, D0)), ids=[])
    assert sk.to_bytes() == before


IDS_BAD = [
    ("wrong-length", lambda: np.arange(100, 103), ValueError, r"one id per row \(2\)|one id per row of X \(2\)"),
    ("2-D", lambda: np.arange(100, 104).reshape(2, 2), ValueError, r"1-D array with one id per row"),
    ("float", lambda: np.array([100.0, 101.0]), TypeError, r"ids must be integers"),
    ("strings", lambda: np.array(["a", "b"]), TypeError, r"ids must be integers"),
    ("object", lambda: np.array([100, None], dtype=object), TypeError, r"ids must be integers"),
    ("duplicate", lambda: np.array([100, 100]), ValueError, r"distinct"),
    ("beyond-int64", lambda: np.array([2**63, 2**63 + 1], dtype=np.uint64), ValueError, r"int64"),
    ("already-fed", lambda: np.array([3, 100]), ValueError, r"already fed"),
]


# ApproxLeverage keeps no id history (its merge compares candidate ids only): "already-fed" is online-only.
@pytest.mark.parametrize(
    "kind,case",
    [(k, c) for k in ("online", "approx") for c in IDS_BAD if not (k == "approx" and c[0] == "already-fed")],
    ids=[f"{k}-{c[0]}" for k in ("online", "approx") for c in IDS_BAD if not (k == "approx" and c[0] == "already-fed")],
)
def test_bad_ids_are_refused_and_change_nothing(kind, case):
    case_id, make, exc, pattern = case
    sk = make_sketch(kind).update(K0[:20])
    before = sk.to_bytes()
    with pytest.raises(exc, match=pattern):
        sk.update(K0[20:22], ids=make())
    assert sk.to_bytes() == before
    sk.update(K0[20:])
    check_sketch_against_oracle(sk, K0)


@pytest.mark.parametrize("kind", ["online", "approx"])
def test_explicit_negative_and_unsigned_ids_work(kind):
    sk = make_sketch(kind)
    ids = np.concatenate([-1 - np.arange(20), 1000 + np.arange(20)])
    sk.update(K0[:20], ids=ids[:20].astype(np.int32))
    sk.update(K0[20:], ids=ids[20:].astype(np.uint16))
    check_sketch_against_oracle(sk, K0, ids=ids)


# ---- merges -------------------------------------------------------------------------------------


def _merge_pair(kind, **other_kwargs):
    a = make_sketch(kind).update(K0[:20])
    kw = dict(d=D0, eps=0.1, ridge=0.0, start=20)
    kw.update(other_kwargs)
    b = make_sketch(kind, **kw)
    b.update(K0[20:, : kw["d"]] if kw["d"] <= D0 else np.hstack([K0[20:], np.ones((20, kw["d"] - D0))]))
    return a, b


MERGE_BAD = [
    ("different-dim", dict(d=5), ValueError, r"different dim.*4.*5"),
    ("different-eps", dict(eps=0.2), ValueError, r"different eps.*0\.1.*0\.2"),
    ("different-ridge", dict(ridge=3.0), ValueError, r"different ridge"),
    ("overlapping-ids", dict(start=10), ValueError, r"overlap|both sketches hold rows"),
]


@pytest.mark.parametrize("case", MERGE_BAD, ids=[c[0] for c in MERGE_BAD])
@pytest.mark.parametrize("kind", ["online", "approx"])
def test_refused_merge_changes_neither_sketch(kind, case):
    case_id, kw, exc, pattern = case
    if kind == "approx" and case_id == "different-ridge":
        kw = dict(ridge=3.0)  # approx uses max(ridge, 1): 3 != 1
    if kind == "approx" and case_id == "overlapping-ids":
        # ApproxLeverage detects overlap through candidate ids only: make both hold the same heavy row id
        a = make_sketch(kind).update(K0[:20])
        b = make_sketch(kind).update(K0[:20] * 2.0)
    else:
        a, b = _merge_pair(kind, **kw)
    ba, bb = a.to_bytes(), b.to_bytes()
    with pytest.raises(exc, match=pattern):
        a.merge(b)
    assert a.to_bytes() == ba and b.to_bytes() == bb
    # both still work afterwards
    a.merge(make_sketch(kind, start=20).update(K0[20:]))
    check_sketch_against_oracle(a, K0)


@pytest.mark.parametrize("other", ["None", "bytes", "array", "self", "other-class"])
@pytest.mark.parametrize("kind", ["online", "approx"])
def test_merge_with_non_sketches(kind, other):
    a = make_sketch(kind).update(K0[:20])
    before = a.to_bytes()
    obj = {
        "None": None,
        "bytes": a.to_bytes(),
        "array": K0,
        "self": a,
        "other-class": make_sketch("approx" if kind == "online" else "online"),
    }[other]
    exc, pattern = (ValueError, r"itself") if other == "self" else (TypeError, r"can only merge another")
    with pytest.raises(exc, match=pattern):
        a.merge(obj)
    assert a.to_bytes() == before


@pytest.mark.parametrize("kind", ["online", "approx"])
def test_merging_empty_sketches_either_way(kind):
    a = make_sketch(kind)
    a.merge(make_sketch(kind))
    a.merge(make_sketch(kind).update(K0))
    a.merge(make_sketch(kind, start=1000))
    b = make_sketch(kind, start=5000).merge(a)
    check_sketch_against_oracle(a, K0)
    check_sketch_against_oracle(b, K0)


# ---- two_pass_universal_set: arrays, .npy paths, callables ---------------------------------------

#: two_pass_universal_set reads other sources than arrays: these inputs mean something else there
TWO_PASS_OVERRIDES = {
    "python-bytes": (ValueError, r"block must be a 2-D array"),  # a sequence of ints: 0-D blocks
    "None": (TypeError, r"reads its source twice: pass an array, a path to a \.npy file"),
    "ragged-list": (ValueError, r"number of features of block has changed: expected 2, got 1"),  # a list of blocks
}


@pytest.mark.parametrize(
    "case",
    [c for c in BAD_KEYS if c[0] not in ("python-str",)],
    ids=[c[0] for c in BAD_KEYS if c[0] not in ("python-str",)],
)
def test_two_pass_refuses_bad_arrays(case):
    name, make, exc, pattern = case
    exc, pattern = TWO_PASS_OVERRIDES.get(name, (exc, pattern))
    with pytest.raises(exc, match=pattern if "NaN" not in pattern else r"NaN or infinity in row \d+"):
        two_pass_universal_set(make(), 0.1, block_size=7)


@pytest.mark.parametrize("case", GOOD_KEYS, ids=[c[0] for c in GOOD_KEYS])
@pytest.mark.parametrize("block_size", [None, 1, 7])
def test_two_pass_accepts_unusual_arrays(case, block_size):
    _, make = case
    K = make()
    naive.assert_set_matches(
        two_pass_universal_set(K, 0.1, block_size=block_size), oracle(np.asarray(K, dtype=np.float64)), 0.1
    )


def _write_npy_cases(tmp):
    """name -> (path, expectation): expectation is an array (works) or (exception, pattern)."""
    K = base_keys(100, 4, seed=5)
    out = {}

    def save(name, arr, **kw):
        p = tmp / name
        np.save(p, arr, **kw)
        return p

    out["c-order"] = (save("c.npy", K), K)
    out["fortran-order"] = (save("f.npy", np.asfortranarray(K)), K)
    out["float32"] = (save("f32.npy", K.astype(np.float32)), K.astype(np.float32))
    out["int16"] = (save("i16.npy", (K * 100).astype(np.int16)), (K * 100).astype(np.int16))
    out["empty"] = (save("empty.npy", np.zeros((0, 4))), np.zeros((0, 4)))
    out["str-path"] = (str(out["c-order"][0]), K)
    raw = out["c-order"][0].read_bytes()
    trunc = tmp / "trunc.npy"
    trunc.write_bytes(raw[:-100])
    out["truncated-data"] = (trunc, (ValueError, r"truncated.*re-create the file"))
    trunc_h = tmp / "trunch.npy"
    trunc_h.write_bytes(raw[:40])
    out["truncated-header"] = (trunc_h, (ValueError, r"corrupt \.npy header|truncated|not a \.npy"))
    text = tmp / "text.npy"
    text.write_text("1.0,2.0,3.0,4.0\n5,6,7,8\n")
    out["text-named-npy"] = (text, (ValueError, r"not a \.npy file.*np\.save"))
    empty_file = tmp / "zero.npy"
    empty_file.write_bytes(b"")
    out["zero-byte-file"] = (empty_file, (ValueError, r"not a \.npy file"))
    d = tmp / "dir.npy"
    d.mkdir()
    out["directory"] = (d, (IsADirectoryError, r"is a directory.*pass a \.npy"))
    out["missing"] = (tmp / "missing.npy", (FileNotFoundError, r"no such file.*check the path"))
    out["object-pickle"] = (
        save("obj.npy", K.astype(object), allow_pickle=True),
        (TypeError, r"Python objects.*save a numeric array"),
    )
    out["complex"] = (save("cplx.npy", K + 1j), (TypeError, r"must be real"))
    out["unicode"] = (save("u.npy", K.astype(str)), (TypeError, r"must hold real numbers"))
    out["1-D"] = (save("one.npy", K[:, 0]), (ValueError, r"shape \(100,\).*reshape"))
    out["3-D"] = (save("three.npy", K[None]), (ValueError, r"shape \(1, 100, 4\).*2-D"))
    Kn = K.copy()
    Kn[70, 2] = np.nan
    out["nan-row-70"] = (save("nan.npy", Kn), (ValueError, r"NaN or infinity in row 70.*remove or impute"))
    bad_hdr = bytearray(raw)
    bad_hdr[12:20] = b"@@@@@@@@"
    p = tmp / "badhdr.npy"
    p.write_bytes(bytes(bad_hdr))
    out["corrupt-header"] = (p, (ValueError, r"corrupt \.npy header"))
    return out


NPY_CASES = [
    "c-order",
    "fortran-order",
    "float32",
    "int16",
    "empty",
    "str-path",
    "truncated-data",
    "truncated-header",
    "text-named-npy",
    "zero-byte-file",
    "directory",
    "missing",
    "object-pickle",
    "complex",
    "unicode",
    "1-D",
    "3-D",
    "nan-row-70",
    "corrupt-header",
]


@pytest.fixture(scope="module")
def npy_files(tmp_path_factory):
    return _write_npy_cases(tmp_path_factory.mktemp("npy"))


@pytest.mark.parametrize("case", NPY_CASES)
def test_two_pass_npy_paths(npy_files, case):
    path, expect = npy_files[case]
    if isinstance(expect, tuple):
        exc, pattern = expect
        with pytest.raises(exc, match=pattern):
            two_pass_universal_set(path, 0.1, block_size=32)
        return
    naive.assert_set_matches(
        two_pass_universal_set(path, 0.1, block_size=32), oracle(np.asarray(expect, dtype=np.float64)), 0.1
    )


def test_two_pass_npy_is_memory_mapped_read_only(tmp_path):
    K = base_keys(200, 4, seed=9)
    p = tmp_path / "k.npy"
    np.save(p, K)
    os.chmod(p, 0o444)
    mm = np.load(p, mmap_mode="r")
    naive.assert_set_matches(two_pass_universal_set(mm, 0.1), oracle(K), 0.1)
    naive.assert_set_matches(two_pass_universal_set(p, 0.1), oracle(K), 0.1)
    np.testing.assert_array_equal(np.load(p), K)


def _blocks_of(K, sizes):
    a = 0
    for s in sizes:
        yield K[a : a + s]
        a += s


K1 = base_keys(60, 4, seed=11)


def _nan_in_third_block():
    bad = K1.copy()
    bad[33, 0] = np.inf
    return list(_blocks_of(bad, [10, 20, 30]))


CALLABLE_BAD = [
    ("dim-changes", lambda: [K1[:10], np.ones((5, 5))], ValueError, r"has changed: expected 4, got 5"),
    ("nan-global-row", _nan_in_third_block, ValueError, r"NaN or infinity in row 33"),
    ("complex-block", lambda: [K1[:10], K1[10:20] + 1j], TypeError, r"must be real"),
    ("string-block", lambda: [K1[:10].astype(str)], TypeError, r"must hold real numbers"),
    ("3-D-block", lambda: [K1[None]], ValueError, r"2-D array"),
    ("object-block", lambda: [K1[:10].astype(object)], TypeError, r"dtype object"),
    ("returns-None", lambda: None, TypeError, r"cannot read keys from a NoneType"),
    ("returns-int", lambda: 5, TypeError, r"cannot read keys from a int"),
    ("returns-callable", lambda: lambda: [K1], TypeError, r"not another callable"),
]


@pytest.mark.parametrize("case", CALLABLE_BAD, ids=[c[0] for c in CALLABLE_BAD])
def test_two_pass_refuses_bad_callables(case):
    _, make, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        two_pass_universal_set(make, 0.1)


def test_two_pass_source_that_changes_between_passes():
    calls = []

    def source():
        calls.append(1)
        return [K1] if len(calls) == 1 else [K1[:50]]

    with pytest.raises(ValueError, match=r"60 rows in pass 1 but 50 in pass 2.*same rows"):
        two_pass_universal_set(source, 0.1)


@pytest.mark.parametrize("src", ["generator", "iterator", "file-object"])
def test_two_pass_refuses_read_once_sources(src):
    obj = {"generator": (b for b in [K1]), "iterator": iter([K1]), "file-object": io.BytesIO(K1.tobytes())}[src]
    with pytest.raises(TypeError, match=r"reads its source twice.*zero-argument callable"):
        two_pass_universal_set(obj, 0.1)


CALLABLE_GOOD = [
    ("uneven-blocks-with-empties", lambda: _blocks_of(K1, [0, 7, 0, 0, 13, 1, 39, 0])),
    ("single-rows", lambda: iter(list(K1))),
    ("mixed-dtypes", lambda: [K1[:20].astype(np.float32), K1[20:40], (K1[40:] * 0 + 1).astype(np.int8)]),
    ("returns-array", lambda: K1),
    ("list-source", None),
    ("noncontiguous-blocks", lambda: [np.asfortranarray(K1[:30]), K1[30:][::-1][::-1]]),
]


@pytest.mark.parametrize("case", CALLABLE_GOOD, ids=[c[0] for c in CALLABLE_GOOD])
def test_two_pass_accepts_callables(case):
    name, make = case
    if name == "list-source":
        src = [K1[:25], K1[25:]]
        ref = K1
    else:
        src = make
        ref = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in make()])
    naive.assert_set_matches(two_pass_universal_set(src, 0.1), oracle(ref), 0.1)


def test_two_pass_empty_sources():
    assert two_pass_universal_set(lambda: [], 0.1).size == 0
    assert two_pass_universal_set(np.zeros((0, 3)), 0.1).size == 0
    assert two_pass_universal_set(lambda: [np.zeros((0, 3))], 0.1).dtype == np.int64


# ---- the command line ----------------------------------------------------------------------------


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


_CLI_FILES = {}


def _cli_file(tmp_path_factory):
    if not _CLI_FILES:
        tmp = tmp_path_factory.mktemp("cli")
        _CLI_FILES.update({k: v[0] for k, v in _write_npy_cases(tmp).items()})
    return _CLI_FILES


def check_cli_error(extra_argv, pattern, path=None):
    path = path if path is not None else _CLI_DEFAULT_PATH[0]
    code, out, err = run_cli(["select", str(path), *extra_argv])
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.match(r"streamlev( select)?: error: ", lines[0]), err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err


_CLI_DEFAULT_PATH = [None]


@pytest.fixture(scope="module", autouse=True)
def _cli_default(tmp_path_factory):
    files = _cli_file(tmp_path_factory)
    _CLI_DEFAULT_PATH[0] = files["c-order"]


CLI_NPY_BAD = [
    "truncated-data",
    "truncated-header",
    "text-named-npy",
    "zero-byte-file",
    "directory",
    "missing",
    "object-pickle",
    "complex",
    "unicode",
    "1-D",
    "3-D",
    "nan-row-70",
    "corrupt-header",
]


@pytest.mark.parametrize("method", ["two-pass", "online", "exact"])
@pytest.mark.parametrize("case", CLI_NPY_BAD)
def test_cli_bad_files_one_line_exit_2(tmp_path_factory, case, method):
    files = _cli_file(tmp_path_factory)
    patterns = {
        "truncated-data": r"truncated",
        "truncated-header": r"corrupt \.npy header|truncated|not a \.npy",
        "text-named-npy": r"not a \.npy file",
        "zero-byte-file": r"not a \.npy file",
        "directory": r"is a directory",
        "missing": r"no such file",
        "object-pickle": r"Python objects",
        "complex": r"must be real",
        "unicode": r"must hold real numbers",
        "1-D": r"2-D",
        "3-D": r"2-D",
        "nan-row-70": r"NaN or infinity in row 70",
        "corrupt-header": r"corrupt \.npy header",
    }
    check_cli_error(["--eps", "0.1", "--method", method], patterns[case], path=files[case])


@pytest.mark.parametrize(
    "value,pattern",
    [
        ("0", r"eps must lie in \(0, 1\]"),
        ("-0.5", r"eps must lie in"),
        ("1.000000001", r"eps must lie in"),
        ("nan", r"eps must lie in"),
        ("inf", r"eps must lie in"),
        ("-inf", r"eps must lie in"),
        ("abc", r"invalid float value"),
        ("", r"invalid float value"),
    ],
)
def test_cli_bad_eps(value, pattern):
    check_cli_error([f"--eps={value}"], pattern)


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["--eps", "0.1", "--ridge", "-1"], r"ridge must be a finite number >= 0"),
        (["--eps", "0.1", "--ridge", "inf"], r"ridge must be a finite number >= 0"),
        (["--eps", "0.1", "--p", "0"], r"p must be a finite number > 0"),
        (["--eps", "0.1", "--p", "nan"], r"p must be a finite number > 0"),
        (["--eps", "0.1", "--block-size", "0"], r"block-size must be an integer >= 1"),
        (["--eps", "0.1", "--block-size", "x"], r"invalid int value"),
        (["--eps", "0.1", "--method", "magic"], r"invalid choice"),
        (["--eps", "0.1", "--dim", "5"], r"d = 4 columns but --dim 5"),
        (["--eps", "0.1", "--key", "K"], r"--key NAME applies to \.npz files only"),
        (["--eps", "0.1", "--p", "3"], r"--p 3 is supported by --method exact only"),
        ([], r"required: --eps"),
    ],
    ids=[
        "ridge<0",
        "ridge-inf",
        "p=0",
        "p-nan",
        "block-0",
        "block-str",
        "method",
        "dim-mismatch",
        "key-npy",
        "p-streaming",
        "no-eps",
    ],
)
def test_cli_bad_flags_one_line_exit_2(argv, pattern):
    check_cli_error(argv, pattern)


@pytest.mark.parametrize("method", ["two-pass", "online", "exact"])
@pytest.mark.parametrize("case", ["c-order", "fortran-order", "float32", "int16"])
def test_cli_valid_files_give_the_oracle_set(tmp_path_factory, case, method):
    import json

    files = _cli_file(tmp_path_factory)
    code, out, err = run_cli(
        ["select", str(files[case]), "--eps", "0.1", "--method", method, "--json", "--block-size", "16", "--quiet"]
    )
    assert code == 0, err
    K = np.load(files[case]).astype(np.float64)
    naive.assert_set_matches(json.loads(out)["indices"], oracle(K), 0.1)


def test_cli_empty_file(tmp_path_factory):
    files = _cli_file(tmp_path_factory)
    code, out, err = run_cli(["select", str(files["empty"]), "--eps", "0.1", "--json", "--quiet"])
    assert code == 0, err


# ================================================================================================
# Part 2 - adversarial numerics against the oracle
# ================================================================================================


def _vandermonde(rng, n, d):
    t = np.sort(rng.uniform(0.0, 1.0, size=n))
    return np.vander(t, d)


def _cond_scaled(K):
    Kn = naive.column_normalise(K)
    S = np.linalg.svd(Kn, compute_uv=False)
    return S[0] / S[-1] if S[-1] > 0 else np.inf


@st.composite
def adversarial(draw):
    """(name, K, ridge, rtol): keys of one adversarial kind, and the tie band for the comparison."""
    kind = draw(
        st.sampled_from(
            [
                "vandermonde",
                "column-scales",
                "rows-1e150",
                "rows-1e-150",
                "mixed-1e150",
                "rank-grows",
                "duplicates",
                "zero-blocks",
                "heavy-first",
                "heavy-last",
                "rare-direction-late",
            ]
        )
    )
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    d = draw(st.integers(2, 7))
    n = draw(st.integers(d, 90))
    K = rng.standard_normal((n, d))
    rtol = 1e-8
    if kind == "vandermonde":
        d = draw(st.integers(9, 15))
        n = draw(st.integers(3 * d, 120))
        K = _vandermonde(rng, n, d)
        # tie band: scores are QR-accurate to a few times cond * unit roundoff (measured 2.8e-8 at
        # cond 1.05e8, 3e-5 at cond 1.7e10; about 4e-8 at cond 1.3e8)
        rtol = max(1e-8, 1e-14 * _cond_scaled(K))
    elif kind == "column-scales":
        K *= 10.0 ** rng.uniform(-8, 8, size=d)
    elif kind == "rows-1e150":
        K *= 1e150
    elif kind == "rows-1e-150":
        K *= 1e-150
    elif kind == "mixed-1e150":  # individual rows scaled by 1e+150 or 1e-150
        s = rng.choice([1e150, 1e-150, 1.0], size=n)
        K *= s[:, None]
    elif kind == "rank-grows":  # rank 1, then 2, ... then full: each block adds one direction
        r = np.minimum(np.arange(n) * d // n + 1, d)
        K = np.where(np.arange(d)[None, :] < r[:, None], K, 0.0) @ rng.standard_normal((d, d))
    elif kind == "duplicates":
        K = K[rng.integers(0, max(1, n // 3), size=n)]
    elif kind == "zero-blocks":
        K[rng.random(n) < 0.5] = 0.0
        K[: n // 3] = 0.0  # a leading all-zero stretch
    elif kind == "heavy-first":
        K[:d] *= 1e4
    elif kind == "heavy-last":
        K[-d:] *= 1e4
    elif kind == "rare-direction-late":
        K[:, -1] = 0.0
        K[-1, -1] = 1e-3  # the only row with a last coordinate arrives last
    ridge = draw(st.sampled_from([0.0, 0.0, 0.3])) if kind not in ("rows-1e150", "rows-1e-150", "mixed-1e150") else 0.0
    if kind == "vandermonde" or kind == "column-scales":
        ridge = 0.0  # ridge is not scale-invariant: column scales would make it trivial
    return kind, K, ridge, rtol


def _oracle_scaled(K, ridge):
    """Oracle scores; for ridge = 0 each column is first scaled by an exact power of two.

    τ is invariant under column scaling, and scaling by 2^-e is exact, so this only keeps
    the oracle's own sums of squares (column norms) inside the float64 range for keys of
    magnitude up to 1e±308.
    """
    K = np.asarray(K, dtype=np.float64)
    if ridge == 0 and K.size:
        colmax = np.abs(K).max(axis=0)
        e = np.where(colmax > 0, np.frexp(np.where(colmax > 0, colmax, 1.0))[1], 0)
        K = np.ldexp(K, -e[None, :])
    return oracle(K, ridge)


def _random_sizes(rng, n):
    sizes, left = [], n
    while left:
        s = int(min(left, rng.integers(0, 25)))
        sizes.append(s)
        left -= s
    return sizes


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


# ================================================================================================
# Part 3 - determinism: identical sets for any blocking, partition and merge order
# ================================================================================================


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


# ================================================================================================
# MultiHeadLeverage (H streams in one object): the same catalogue, per head
# ================================================================================================

H = 3
KH = np.stack([base_keys(40, 4, seed=20 + h) for h in range(H)])


def _mh_put(row_head, row, value):
    X = KH.copy()
    X[row_head, row, 2] = value
    return X


MH_BAD = [
    ("nan-head-1", lambda: _mh_put(1, 2, np.nan), ValueError, r"NaN or infinity in stream \(1,\), row 2"),
    ("inf-head-2", lambda: _mh_put(2, 39, np.inf), ValueError, r"NaN or infinity in stream \(2,\), row 39"),
    ("wrong-heads", lambda: KH[:2], ValueError, r"shape \(heads=3, m, 4\).*first axis indexes the heads"),
    ("wrong-dim", lambda: KH[:, :, :3], ValueError, r"has changed: expected 4, got 3"),
    ("2-D-not-heads", lambda: KH[0], ValueError, r"3-D array of shape \(H, n, d\)"),
    ("4-D", lambda: KH[None], ValueError, r"3-D array"),
    ("complex", lambda: KH + 0j, TypeError, r"must be real"),
    ("object", lambda: KH.astype(object), TypeError, r"dtype object"),
    ("strings", lambda: KH.astype(str), TypeError, r"must hold real numbers"),
    ("python-str", lambda: "keys", TypeError, r"numeric array"),
    ("None", lambda: None, TypeError, r"dtype object"),
]


def _mh_oracle_check(sk, K3, ids=None):
    for h in range(K3.shape[0]):
        tau = oracle(K3[h], sk.ridge)
        idx = np.arange(K3.shape[1]) if ids is None else np.asarray(ids)
        naive.assert_set_matches(
            np.searchsorted(idx, sk.universal_set(h)) if ids is not None else sk.universal_set(h), tau, sk.eps
        )


@pytest.mark.parametrize("case", MH_BAD, ids=[c[0] for c in MH_BAD])
@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_multihead_refused_block_changes_nothing(case, ridge):
    _, make, exc, pattern = case
    sk = sl.MultiHeadLeverage(H, 4, 0.1, ridge=ridge).update(KH[:, :20])
    before = sk.to_bytes()
    with pytest.raises(exc, match=pattern):
        sk.update(make())
    assert sk.to_bytes() == before
    sk.update(KH[:, 20:])
    _mh_oracle_check(sk, KH)


MH_GOOD = [
    ("noncontiguous", lambda: np.stack([base_keys(80, 4, seed=30 + h) for h in range(H)])[:, ::2]),
    ("heads-last-transposed", lambda: np.ascontiguousarray(KH.transpose(1, 2, 0)).transpose(2, 0, 1)),
    ("read-only", lambda: np.lib.stride_tricks.as_strided(KH, writeable=False)),
    ("float32", lambda: KH.astype(np.float32)),
    ("int", lambda: np.round(KH * 5).astype(np.int32)),
    ("empty", lambda: np.zeros((H, 0, 4))),
]


@pytest.mark.parametrize("case", MH_GOOD, ids=[c[0] for c in MH_GOOD])
def test_multihead_accepts_unusual_valid_blocks(case):
    _, make = case
    X = make()
    sk = sl.MultiHeadLeverage(H, 4, 0.1).update(KH[:, :10]).update(X).update(KH[:, 10:])
    full = np.concatenate([KH[:, :10], np.asarray(X, dtype=np.float64), KH[:, 10:]], axis=1)
    _mh_oracle_check(sk, full)


def test_multihead_one_row_per_head_and_empty_blocks():
    sk = sl.MultiHeadLeverage(H, 4, 0.1)
    for i in range(KH.shape[1]):
        sk.update(KH[:, i])  # (H, d): one row per head
        sk.update(np.zeros((H, 0, 4)))
    _mh_oracle_check(sk, KH)


@pytest.mark.parametrize(
    "value,exc",
    [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("2", TypeError), (True, TypeError), (None, TypeError)],
)
def test_multihead_heads_out_of_range(value, exc):
    with pytest.raises(exc, match=r"heads must be an integer >= 1"):
        sl.MultiHeadLeverage(value, 4, 0.1)


@pytest.mark.parametrize(
    "kw,exc,pattern",
    [
        (dict(heads=2), ValueError, r"different numbers of heads: 3 vs 2"),
        (dict(dim=5), ValueError, r"different dim"),
        (dict(eps=0.2), ValueError, r"different eps"),
        (dict(ridge=1.0), ValueError, r"different ridge"),
        (dict(start=10), ValueError, r"overlap"),
    ],
    ids=["heads", "dim", "eps", "ridge", "overlapping-ids"],
)
def test_multihead_refused_merge_changes_neither(kw, exc, pattern):
    a = sl.MultiHeadLeverage(H, 4, 0.1).update(KH[:, :20])
    args = dict(heads=H, dim=4, eps=0.1, ridge=0.0, start=20)
    args.update(kw)
    b = sl.MultiHeadLeverage(args["heads"], args["dim"], args["eps"], ridge=args["ridge"], start=args["start"])
    b.update(np.random.default_rng(1).standard_normal((args["heads"], 5, args["dim"])))
    ba, bb = a.to_bytes(), b.to_bytes()
    with pytest.raises(exc, match=pattern):
        a.merge(b)
    assert a.to_bytes() == ba and b.to_bytes() == bb


def test_multihead_merge_with_non_sketches_and_itself():
    a = sl.MultiHeadLeverage(H, 4, 0.1).update(KH[:, :20])
    before = a.to_bytes()
    for obj in (None, OnlineLeverage(4, 0.1), KH):
        with pytest.raises(TypeError, match=r"can only merge another MultiHeadLeverage"):
            a.merge(obj)
    with pytest.raises(ValueError, match=r"itself"):
        a.merge(a)
    assert a.to_bytes() == before
