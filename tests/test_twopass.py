"""two_pass_universal_set over arrays, .npy files and callables, against the oracle."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamlev as sl

from . import naive
from .strategies import eps_values, key_matrices


@given(key_matrices(max_n=120), eps_values, st.sampled_from([0.0, 0.3, 5.0]), st.integers(1, 50))
def test_array_source_equals_oracle(K, eps, ridge, block):
    got = sl.two_pass_universal_set(K, eps, ridge=ridge, block_size=block)
    K64 = np.asarray(K, float)
    tau = naive.leverage(K64) if ridge == 0 else naive.ridge_leverage(K64, ridge)
    naive.assert_set_matches(got, tau, eps)
    np.testing.assert_array_equal(got, sl.universal_set(K, eps, ridge=ridge))


@given(key_matrices(max_n=120), eps_values, st.integers(0, 2**31))
def test_callable_source_with_ragged_blocks(K, eps, seed):
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(0, K.shape[0] + 1, size=5))

    def blocks():
        return iter(np.split(K, cuts))

    np.testing.assert_array_equal(sl.two_pass_universal_set(blocks, eps), sl.universal_set(K, eps))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npy_file_is_memory_mapped_and_exact(tmp_path, dtype):
    rng = np.random.default_rng(0)
    K = rng.standard_normal((30_000, 12)).astype(dtype)
    K[::997] *= 40
    path = tmp_path / "keys.npy"
    np.save(path, K)
    got = sl.two_pass_universal_set(str(path), 1e-3, block_size=1000)
    naive.assert_set_matches(got, naive.leverage(K.astype(float)), 1e-3)
    np.testing.assert_array_equal(sl.two_pass_universal_set(path, 1e-3), got)


def test_adversarial_numerics():
    t = np.linspace(0, 1, 5000)
    V = np.vander(t, 10) * np.logspace(-4, 4, 10)
    naive.assert_set_matches(sl.two_pass_universal_set(V, 1e-3, block_size=333), naive.leverage(V), 1e-3)


def test_generator_is_refused_with_advice():
    K = np.eye(3)
    with pytest.raises(TypeError, match="OnlineLeverage"):
        sl.two_pass_universal_set((b for b in [K]), 0.1)


def test_changing_source_is_detected():
    calls = {"n": 0}

    def source():
        calls["n"] += 1
        return iter([np.eye(3)] * calls["n"])

    with pytest.raises(ValueError, match="same rows"):
        sl.two_pass_universal_set(source, 0.1)


def test_empty_and_bad_arguments(tmp_path):
    assert sl.two_pass_universal_set(np.zeros((0, 3)), 0.1).size == 0
    with pytest.raises(ValueError, match="eps"):
        sl.two_pass_universal_set(np.eye(3), 2.0)
    with pytest.raises(ValueError, match="block_size"):
        sl.two_pass_universal_set(np.eye(3), 0.1, block_size=0)
    with pytest.raises(FileNotFoundError):
        sl.two_pass_universal_set(str(tmp_path / "missing.npy"), 0.1)
    bad = np.ones((10, 3))
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        sl.two_pass_universal_set(bad, 0.1, block_size=4)


def test_missing_file_message_gives_no_command_line_advice(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file") as info:
        sl.two_pass_universal_set(tmp_path / "missing.npy", 0.1)
    assert "'-'" not in str(info.value) and "stdin" not in str(info.value)
