"""Shared pytest configuration: a deterministic hypothesis profile.

deadline=None because the first example of a numba-backed path pays JIT
compilation and would otherwise fail hypothesis's deadline at random.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    max_examples=60,
)
settings.register_profile("dev", deadline=None, max_examples=30)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("STREAMLEV_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def threads():
    """Restore the library's thread setting after a test changes it."""
    from streamlev import _threads

    prev = _threads._USER_THREADS
    yield _threads
    _threads._USER_THREADS = prev
