"""The library's thread control (streamlev._threads as the sketches use it): results independent of the
thread count, set_num_threads, blas_threads, split_run and numba's parallel regions.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import streamlev as sl
from streamlev import _threads

from . import naive


# -- threads -------------------------------------------------------------------------------------------
def test_results_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(5)
    K = rng.standard_normal((100_000, 24)).astype(np.float32)
    K[:, 0] *= 1e3
    out = {}
    for t in (1, 2, 3):
        threads.set_num_threads(t)
        sk = sl.OnlineLeverage(24, 2e-3).update(K)
        out[t] = (sl.leverage_scores(K), sk.universal_set(), sl.two_pass_universal_set(K, 2e-3))
    tau = naive.leverage(K.astype(np.float64))
    for t, (scores, U1, U2) in out.items():
        assert np.max(np.abs(scores - tau) / tau) < 1e-9, t
        np.testing.assert_array_equal(U1, out[1][1])
        np.testing.assert_array_equal(U2, out[1][1])
    naive.assert_set_matches(out[1][1], tau, 2e-3)


def test_set_num_threads_validates_and_restores(threads):
    with pytest.raises(ValueError, match="integer >= 1"):
        threads.set_num_threads(0)
    with pytest.raises(TypeError, match="integer >= 1"):
        threads.set_num_threads(1.5)
    threads.set_num_threads(3)
    assert threads.get_num_threads() == 3
    assert threads.set_num_threads(None) == 3
    # back to the default, which the environment gave at first use (other tests may change os.environ later)
    assert threads.get_num_threads() == threads._ENV_THREADS >= 1


def test_environment_sets_the_default_thread_count():
    code = "from streamlev import _threads; print(_threads.get_num_threads())"
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STREAMLEV_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }
    for extra, want in [
        ({"STREAMLEV_NUM_THREADS": "3"}, "3"),
        ({"OMP_NUM_THREADS": "1"}, "1"),
        ({"OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "1"}, "1"),
    ]:
        out = subprocess.run(
            [sys.executable, "-c", code], env={**base, **extra}, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == want, (extra, out.stdout, out.stderr)
    bad = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "STREAMLEV_NUM_THREADS": "many"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "STREAMLEV_NUM_THREADS must be a positive integer" in bad.stderr


def test_split_run_covers_rows_in_order_and_propagates_errors(threads):
    threads.set_num_threads(3)
    res = threads.split_run(lambda a, b: (a, b), 10, 3)
    assert res == [(0, 3), (3, 6), (6, 10)]
    # a split asked for inside a running split runs in one part (no hand-off that could wait on itself)
    nested = threads.split_run(lambda a, b: threads.split_run(lambda c, e: (c, e), b - a, 3), 8, 2)
    assert nested == [[(0, 4)], [(0, 4)]]

    def boom(a, b):
        if a > 0:
            raise RuntimeError("part failed")
        return a

    with pytest.raises(RuntimeError, match="part failed"):
        threads.split_run(boom, 10, 2)


def test_blas_threads_restores_the_previous_limit():
    from threadpoolctl import threadpool_info

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with _threads.blas_threads(1):
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        with _threads.blas_threads(1):
            pass
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        with _threads.blas_threads(2):  # a different limit nested inside is set and undone
            assert all(i["num_threads"] == 2 for i in threadpool_info() if i["user_api"] == "blas")
            with _threads.blas_threads(1):
                assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
            assert all(i["num_threads"] == 2 for i in threadpool_info() if i["user_api"] == "blas")
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


def test_blas_threads_holds_from_overlapping_threads():
    """Two threads in blas_threads(1) at once: the first one out must not lift the limit the other still needs."""
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    def counts():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    with threadpool_limits(2, user_api="blas"):  # a count other than 1 to come back to (also on 1-core machines)
        before = counts()
        seen = {}
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

        def first():
            with _threads.blas_threads(1):
                a_in.set()
                b_in.wait(30)
            a_out.set()

        def second():
            a_in.wait(30)
            with _threads.blas_threads(1):
                b_in.set()
                a_out.wait(30)
                seen["b, after a left"] = counts()
            seen["after both"] = counts()

        ts = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert seen["b, after a left"] == [1] * len(before)
        assert seen["after both"] == before
        assert counts() == before


def test_parallel_kernels_are_off_in_a_forked_child():
    """GNU OpenMP cannot run in a child forked after it ran: the child uses the serial kernels and gets the oracle."""
    code = r"""
import multiprocessing as mp, numpy as np, streamlev as sl
from streamlev import _threads

def work(q):
    rng = np.random.default_rng(1)
    K = rng.standard_normal((3, 6000, 8))
    mh = sl.MultiHeadLeverage(3, 8, 0.01)
    for a in range(0, 6000, 1000):
        mh.update(K[:, a:a + 1000])
    q.put((_threads._PAR_FORKED, [u.tolist() for u in mh.universal_set()]))

if __name__ == "__main__":
    rng = np.random.default_rng(1)
    K = rng.standard_normal((3, 6000, 8))
    mh = sl.MultiHeadLeverage(3, 8, 0.01)
    for a in range(0, 6000, 1000):
        mh.update(K[:, a:a + 1000])
    assert _threads._PAR_USED
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=work, args=(q,))
    p.start()
    forked, sets = q.get(timeout=120)
    p.join(60)
    assert p.exitcode == 0 and forked
    assert sets == [u.tolist() for u in mh.universal_set()]
    print("ok")
"""
    env = dict(os.environ, STREAMLEV_NUM_THREADS="2")
    res = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300, env=env
    )
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


def test_parallel_region_sets_and_restores_numba_threads_and_leaves_blas_alone():
    import numba
    from threadpoolctl import threadpool_info

    from streamlev._threads import parallel_region

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = (numba.get_num_threads(), numba.get_parallel_chunksize(), blas())
    with parallel_region(1):
        assert (numba.get_num_threads(), numba.get_parallel_chunksize(), blas()) == (1, 1, before[2])
    assert (numba.get_num_threads(), numba.get_parallel_chunksize(), blas()) == before
