"""Hostile input at two_pass_universal_set: arrays, .npy files and callables, refused with one clear
message or answered exactly as the oracle.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from streamlev import two_pass_universal_set

from . import naive
from .hostile_inputs import (
    BAD_KEYS,
    BAD_NPY,
    GOOD_KEYS,
    _blocks_of,
    _write_npy_cases,
    base_keys,
    oracle,
)

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


NPY_CASES = [
    "c-order",
    "fortran-order",
    "float32",
    "int16",
    "empty",
    "str-path",
    *BAD_NPY,
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
