"""The thread policy of streamlev._threads: measured choice between threads and the calling thread."""

from __future__ import annotations

import os

import numpy as np
import pytest

from streamlev import _threads


@pytest.fixture
def clock(monkeypatch):
    """A fake perf_counter for _threads: tests move time by hand."""
    now = [100.0]
    monkeypatch.setattr(_threads.time, "perf_counter", lambda: now[0])
    return now


def test_choice_measures_both_modes_then_keeps_the_faster(clock):
    c = _threads._Choice()
    assert c.pick() is True  # nothing measured: threads first
    c.record(True, 1.0, 100)  # threads: 0.01 s per unit
    assert c.pick() is False  # then the calling thread alone, once
    c.record(False, 0.5, 100)  # alone: 0.005 s per unit -> faster
    for _ in range(5):
        assert c.pick() is False
        c.record(False, 0.5, 100)


def test_choice_probes_the_other_mode_and_switches_when_it_wins(clock):
    c = _threads._Choice()
    c.record(True, 1.0, 100)
    c.record(False, 0.5, 100)
    assert c.pick() is False
    clock[0] += _threads.PROBE_MIN_INTERVAL  # interval over: one probe of threads
    assert c.pick() is True
    c.record(True, 0.1, 100)  # threads now measure faster (the load went away)
    assert c.pick() is True
    c.record(True, 0.1, 100)
    assert c.pick() is True


def test_lost_probes_are_spaced_by_their_cost(clock):
    c = _threads._Choice()
    c.record(True, 10.0, 100)  # threads: 0.1 s per unit (a busy machine)
    c.record(False, 0.1, 100)  # alone: 0.001 s per unit
    clock[0] += _threads.PROBE_MIN_INTERVAL
    assert c.pick() is True  # probe
    c.record(True, 10.0, 100)  # lost by 9.9 s
    assert c.interval >= _threads.PROBE_COST_RATIO * 9.9
    clock[0] += _threads.PROBE_MAX_INTERVAL
    assert c.pick() is False  # no probe before the cost-based interval is over
    clock[0] += c.interval
    assert c.pick() is True


def test_moving_average_follows_a_slowdown(clock):
    c = _threads._Choice()
    c.record(True, 0.1, 100)
    c.record(False, 0.5, 100)
    assert c.pick() is True
    for _ in range(20):  # threads become 10x slower (another process took a core)
        c.record(True, 1.0 * 10, 100)
    assert c.pick() is False


def test_split_run_gives_the_same_parts_on_threads_and_alone(monkeypatch):
    """The split is fixed by the thread count; running the parts in turn changes nothing but the speed."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 16))

    def part(a, b):
        return X[a:b].T @ X[a:b]

    outs = {}
    for threaded in (True, False):
        monkeypatch.setattr(_threads._Choice, "pick", lambda self, t=threaded: t)
        outs[threaded] = _threads.split_run(part, X.shape[0], 3)
    assert len(outs[True]) == len(outs[False]) == 3
    for a, b in zip(outs[True], outs[False]):
        assert np.array_equal(a, b)
    expect = [part(a, b) for a, b in _threads.split_bounds(X.shape[0], 3)]
    for a, b in zip(outs[False], expect):
        assert np.array_equal(a, b)


def test_split_run_records_the_mode_it_ran(monkeypatch):
    seen = []
    monkeypatch.setattr(_threads._Choice, "pick", lambda self: False)
    monkeypatch.setattr(_threads._Choice, "record", lambda self, threaded, s, w: seen.append((threaded, w)))

    def part(a, b):
        return b - a

    assert _threads.split_run(part, 1000, 2) == [500, 500]
    assert seen == [(False, 1000)]


def test_passive_openmp_sets_the_policy_only_while_the_runtime_loads(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with _threads._passive_openmp():
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ


def test_passive_openmp_keeps_the_users_policy(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    with _threads._passive_openmp():
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_run_parallel_gives_the_serial_twins_result(monkeypatch):
    """Whichever mode the choice takes, run_parallel returns what the called function returns."""
    calls = []

    def par(x):
        calls.append("par")
        return x + 1

    def ser(x):
        calls.append("ser")
        return x + 1

    monkeypatch.setattr(_threads, "parallel_threads", lambda: 2)
    monkeypatch.setattr(_threads, "parallel_region", lambda n: _Null())
    for threaded in (True, False):
        monkeypatch.setattr(_threads._Choice, "pick", lambda self, t=threaded: t)
        assert _threads.run_parallel(par, ser, (1,), 10) == 2
    assert calls == ["par", "ser"]


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
