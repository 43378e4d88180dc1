"""streamlev._validate: the one place that checks and converts input, seen through every entry point."""

import numpy as np
import pytest

import streamlev as sl


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
