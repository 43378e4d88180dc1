"""Hostile input at the sketches: refused blocks, ids and merges leave every sketch byte-identical, and the
stream then goes on to the oracle's answer; unusual valid blocks are accepted.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamlev import OnlineLeverage

from .hostile_inputs import (
    BAD_KEYS,
    D0,
    GOOD_KEYS,
    K0,
    _snapshot,
    check_sketch_against_oracle,
    make_sketch,
)

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
    sk.update(np.zeros((0, D0)))
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
