"""Hostile input at MultiHeadLeverage: the bad-input catalogue per head; refusals change nothing."""

from __future__ import annotations

import numpy as np
import pytest

import streamlev as sl
from streamlev import OnlineLeverage

from . import naive
from .hostile_inputs import (
    base_keys,
    oracle,
)

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
