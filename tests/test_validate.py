"""streamlev._validate: the one place that checks and converts input, seen through every entry point."""

import warnings

import numpy as np
import pytest

import streamlev as sl
from streamlev._validate import PrecisionWarning


@pytest.mark.parametrize("n", [np.int64(2), np.int32(3), np.uint8(1), 4])
def test_set_num_threads_takes_any_integer_type(n):
    sl.set_num_threads(n)
    try:
        assert sl.get_num_threads() == int(n)
    finally:
        sl.set_num_threads(None)


@pytest.mark.parametrize(
    ("bad", "exc"), [(1.5, TypeError), ("2", TypeError), (True, TypeError), (0, ValueError), (-3, ValueError)]
)
def test_set_num_threads_uses_the_positive_int_rule_of_the_api(bad, exc):
    with pytest.raises(exc) as got:
        sl.set_num_threads(bad)
    with pytest.raises(exc) as same_rule:
        sl.OnlineLeverage(bad, 0.1)
    assert "integer >= 1" in str(got.value) and "integer >= 1" in str(same_rule.value)


def _entry_points(dim):
    """Every public way to hand a key matrix to streamlev: (name, call(K), sketch or None)."""
    import streamlev.dask as sd

    online = sl.OnlineLeverage(dim, 0.1)
    approx = sl.ApproxLeverage(dim, 0.1, ell=max(1, dim // 2), ridge=1.0, max_c=None)
    power = sl.OnlinePowerSet(dim, 0.1, p=3.0)
    heads = sl.MultiHeadLeverage(2, dim, 0.1)
    return [
        ("universal_set", lambda K: sl.universal_set(K, 0.1), None),
        ("leverage_scores", sl.leverage_scores, None),
        ("universal_set p=3", lambda K: sl.universal_set(K, 0.1, p=3.0), None),
        ("lewis_weights", lambda K: sl.lewis_weights(K, 3.0), None),
        ("two_pass", lambda K: sl.two_pass_universal_set(K, 0.1), None),
        ("dask", lambda K: sd.universal_set(K, 0.1), None),
        ("OnlineLeverage.update", online.update, online),
        ("ApproxLeverage.update", approx.update, approx),
        ("OnlinePowerSet.update", power.update, power),
        ("MultiHeadLeverage.update", lambda K: heads.update(K[None].repeat(2, axis=0)), heads),
    ]


def _state(sketch):
    return None if sketch is None or not hasattr(sketch, "to_bytes") else sketch.to_bytes()


def test_masked_arrays_are_refused_with_advice_and_leave_sketches_unchanged():
    rng = np.random.default_rng(0)
    K = np.ma.masked_array(rng.standard_normal((30, 4)))
    K[5, 2] = np.ma.masked
    for name, call, sketch in _entry_points(4):
        before = _state(sketch)
        with pytest.raises(ValueError, match=r"masked .*\.filled\(.*compress_rows") as info:
            call(K)
        assert "\n" not in str(info.value), name
        assert _state(sketch) == before, name


def test_masked_array_without_masked_entries_is_read_as_its_data():
    rng = np.random.default_rng(1)
    K = rng.standard_normal((40, 3))
    np.testing.assert_array_equal(sl.universal_set(np.ma.masked_array(K), 0.1), sl.universal_set(K, 0.1))


def test_extended_precision_warns_when_rounding_changes_values():
    rng = np.random.default_rng(2)
    K = rng.standard_normal((50, 4))
    exact = K.astype(np.longdouble)  # float64 values: nothing to round, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(sl.universal_set(exact, 0.1), sl.universal_set(K, 0.1))
    if np.finfo(np.longdouble).nmant <= 52:
        pytest.skip("longdouble is float64 on this platform: nothing can be rounded")
    finer = exact + exact * np.longdouble(2.0) ** -60
    for _name, call, _sketch in _entry_points(4):
        with pytest.warns(PrecisionWarning, match=r"rounded to float64.*astype\(np\.float64\)"):
            call(finer)


def test_extended_precision_beyond_the_float64_range_is_refused():
    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("longdouble is float64 on this platform")
    K = np.ones((5, 2), dtype=np.longdouble)
    K[3, 1] = np.longdouble(10.0) ** 400
    with pytest.raises(ValueError, match="beyond the float64 range"):
        sl.universal_set(K, 0.1)


def test_one_dimensional_input_follows_one_rule_everywhere():
    """A 1-D array is one key.  It is accepted where the key dimension is fixed beforehand (a
    sketch's update, a cache's append), so it cannot be misread, and refused with both reshapes
    suggested where the dimension would be guessed from it."""
    x = np.array([1.0, -2.0, 0.5, 3.0])
    for name, call, sketch in _entry_points(4):
        if sketch is None:
            with pytest.raises(ValueError, match=r"reshape\(1, -1\).*reshape\(-1, 1\)"):
                call(x)
        elif name != "MultiHeadLeverage.update":
            call(x)  # accepted as one row
    online = sl.OnlineLeverage(4, 0.1).update(x)
    assert online.to_bytes() == sl.OnlineLeverage(4, 0.1).update(x.reshape(1, -1)).to_bytes()
    with pytest.raises(ValueError, match="expected 4, got 3"):
        sl.OnlineLeverage(4, 0.1).update(x[:3])


def _hostile_scalings():
    """Keys at the edges of the float range: (name, K).  Column and whole-matrix scales leave plain
    leverage scores unchanged; row scales change them (the oracle sees the same matrix)."""
    G = np.random.default_rng(5).standard_normal((120, 6))
    G[[3, 60], 5] *= 40.0  # a couple of heavy rows
    out = {}
    for s in (1e-310, 1e-300, 1e-200, 1e200):
        out[f"all x {s:g}"] = G * s
        col = G.copy()
        col[:, 2] *= s
        out[f"column x {s:g}"] = col
        row = G.copy()
        row[7] *= s
        out[f"row x {s:g}"] = row
    mixed = G * [1e-310, 1.0, 1e200, 1e-300, 1e-150, 1.0]
    out["mixed columns"] = mixed
    return out


def _oracle_set(K, eps):
    from . import naive

    m = np.max(np.abs(K), axis=0)
    return naive.leverage(np.ldexp(K, -np.frexp(np.where(m > 0, m, 1.0))[1]))


def _stream_runs(K, eps):
    """(name, run() -> indices, sketch or None) for every path that reads keys block by block."""
    import streamlev.dask as sd

    d = K.shape[1]
    online = sl.OnlineLeverage(d, eps)
    heads = sl.MultiHeadLeverage(2, d, eps)
    left, right = sl.OnlineLeverage(d, eps), sl.OnlineLeverage(d, eps)

    def merged():
        left.update(K[:50])
        right.update(K[50:], ids=np.arange(50, K.shape[0]))
        return left.merge(right).universal_set()

    return [
        ("OnlineLeverage", lambda: online.update(K[:40]).update(K[40:]).universal_set(), online),
        ("two_pass", lambda: sl.two_pass_universal_set(K, eps, block_size=32), None),
        ("merge", merged, left),
        ("MultiHeadLeverage", lambda: heads.update(np.stack([K, K[::-1]])).universal_set()[0], heads),
        ("dask", lambda: sd.universal_set(K, eps), None),
    ]


@pytest.mark.parametrize("case", sorted(_hostile_scalings()))
def test_every_path_gives_the_oracle_or_refuses_in_one_line(case):
    from . import naive

    K = _hostile_scalings()[case]
    eps = 0.05
    tau = _oracle_set(K, eps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        naive.assert_set_matches(sl.universal_set(K, eps), tau, eps)  # in memory: always answers
        for name, run, sketch in _stream_runs(K, eps):
            before = None if sketch is None else sketch.to_bytes()
            try:
                got = run()
            except ValueError as exc:
                assert "\n" not in str(exc) and "magnitude" in str(exc), (name, str(exc))
                if sketch is not None and name != "merge":
                    assert sketch.to_bytes() == before, name
                continue
            naive.assert_set_matches(got, tau, eps)


@pytest.mark.parametrize("make", [lambda: sl.OnlineLeverage(10**6, 0.1), lambda: sl.MultiHeadLeverage(64, 10**5, 0.1)])
def test_a_factor_beyond_the_machine_memory_is_refused_with_the_alternative(make):
    with pytest.raises(ValueError, match=r"d x d float64 factor: .*iB, more than this machine's .*ApproxLeverage"):
        make()
