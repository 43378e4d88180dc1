"""Thread use of streamlev, in one place: the BLAS thread limit and the row-splitting worker pool.

Two facts measured on the project's 2-core machine (OpenBLAS 0.3.30/0.3.31,
numpy 2.4; ``python benchmarks/kernels_bench.py`` repeats the first two numbers)
decide how threads are used:

* OpenBLAS runs the thin products streamlev needs (``BᵀB`` and ``B·W`` for an
  m x 64 block) hardly faster on 2 threads than on 1 (172 ms vs 188 ms for one
  10^6 x 64 ``K.T @ K``), while small
  LAPACK calls (QR/SVD of matrices a few hundred wide) ran 10-300x *slower* on
  2 threads under load (DESIGN.md §2).  So BLAS itself runs single-threaded
  inside every streamlev call that matters.
* numpy's matmul releases the GIL, so splitting a block's rows into one part
  per core and running single-threaded BLAS on each part in a thread of its
  own gives the speed-up instead: the same ``K.T @ K`` took 101 ms in two
  parts on two threads.  (scipy's f2py BLAS wrappers keep the GIL, so
  they are not used for this.)  numba kernels are compiled with ``nogil=True``
  and split the same way.

The number of worker threads is, in order: :func:`set_num_threads`; the
``STREAMLEV_NUM_THREADS`` environment variable (the environment is read once,
at first use); the smallest of
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` when set
(Dask's nanny sets them to 1 in each worker process, so workers do not
oversubscribe); otherwise the CPUs this process may run on.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

__all__ = ["blas_threads", "get_num_threads", "set_num_threads", "split_bounds", "split_run", "parts_for",
           "parallel_threads", "parallel_region", "one_blas_thread"]

_LIBS = None
_USER_THREADS = None
_POOL = None
_POOL_SIZE = 0
_LOCK = threading.Lock()

#: A part of a split block has at least this many rows (below it, thread hand-off costs more than it saves).
MIN_ROWS_PER_PART = 4096


def _blas_libs():
    global _LIBS  # noqa: PLW0603 - created once per process
    if _LIBS is None:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415

        _LIBS = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    return _LIBS


class blas_threads:  # noqa: N801 - used like a function: ``with blas_threads(1): ...``
    """Context manager limiting every loaded BLAS library to ``n`` threads, restoring the previous counts.

    threadpoolctl finds the libraries once; entering and leaving then costs a
    few microseconds (``threadpoolctl.threadpool_limits`` costs ~20 µs per use,
    which mattered for blocks of a few hundred rows).  A context nested inside
    one with the same ``n`` on the same thread costs nothing (the per-head
    loops of :class:`streamlev.online.MultiHeadLeverage` nest dozens).  The
    limit is process-wide, so it is set by the calling thread around a whole
    split computation (:func:`split_run`), never from inside worker threads.
    """

    __slots__ = ("n", "_saved", "_prev")

    def __init__(self, n: int):
        self.n = int(n)
        self._saved = None
        self._prev = None

    def __enter__(self):
        prev = getattr(_ACTIVE, "n", None)
        if prev == self.n:  # an enclosing context on this thread already holds this limit
            self._saved = None
            return self
        libs = _blas_libs()
        self._saved = [lib.get_num_threads() for lib in libs]
        for lib, cur in zip(libs, self._saved):
            if cur != self.n:
                lib.set_num_threads(self.n)
        self._prev = prev
        _ACTIVE.n = self.n
        return self

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        for lib, cur in zip(_blas_libs(), self._saved):
            if cur != self.n:
                lib.set_num_threads(cur)
        _ACTIVE.n = self._prev
        self._saved = None
        return False


#: The limit held by the innermost :class:`blas_threads` context of each thread.
_ACTIVE = threading.local()


def _env_threads() -> int:
    raw = os.environ.get("STREAMLEV_NUM_THREADS")
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise ValueError(f"STREAMLEV_NUM_THREADS must be a positive integer, got {raw!r}") from None
    limits = []
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        try:
            limits.append(int(os.environ[var]))
        except (KeyError, ValueError):
            pass
    if limits:
        return max(1, min(limits))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


_ENV_THREADS = None


def get_num_threads() -> int:
    """Number of threads streamlev splits large blocks over (see the module docstring for the default).

    The environment is read once, at the first call.
    """
    global _ENV_THREADS  # noqa: PLW0603 - read once per process
    if _USER_THREADS is not None:
        return _USER_THREADS
    if _ENV_THREADS is None:
        _ENV_THREADS = _env_threads()
    return _ENV_THREADS


def set_num_threads(n: int | None) -> int:
    """Set the number of threads streamlev uses for large blocks; ``None`` restores the default.

    Returns the previous setting (as :func:`get_num_threads` reported it).
    Results do not depend on it beyond rounding in the last bits (sums of
    per-part Gram matrices are added in a fixed order).
    """
    global _USER_THREADS  # noqa: PLW0603 - process-wide setting, like numba.set_num_threads
    prev = get_num_threads()
    if n is None:
        _USER_THREADS = None
        return prev
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive integer (or None for the default), got {n!r}")
    _USER_THREADS = int(n)
    return prev


def _reset_after_fork():  # pragma: no cover - runs in forked children
    global _POOL, _POOL_SIZE, _LIBS, _ENV_THREADS, _PAR_FORKED, _PAR_LOCK  # noqa: PLW0603
    _POOL, _POOL_SIZE, _LIBS, _ENV_THREADS = None, 0, None, None
    _PAR_FORKED = _PAR_FORKED or _PAR_USED
    _PAR_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE  # noqa: PLW0603
    with _LOCK:
        if _POOL is None or _POOL_SIZE < workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="streamlev")
            _POOL_SIZE = workers
        return _POOL


def parts_for(m: int, min_rows: int = MIN_ROWS_PER_PART) -> int:
    """How many parts to split ``m`` rows into: one per thread, each at least ``min_rows`` rows."""
    return max(1, min(get_num_threads(), m // max(1, min_rows)))


def split_bounds(m: int, parts: int) -> list[tuple[int, int]]:
    """The contiguous (start, stop) row ranges :func:`split_run` gives its ``parts`` parts."""
    edges = [m * k // parts for k in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def split_run(fn, m: int, parts: int):
    """Run ``fn(a, b)`` on ``parts`` contiguous row ranges of ``range(m)``; return the results in order.

    Part 0 runs on the calling thread, the others on the pool.  BLAS is held
    at one thread for the duration, so each part runs single-threaded BLAS.
    A split requested from inside a running split runs in one part (no
    nested hand-off, which could wait on itself).
    """
    if parts <= 1 or getattr(_LOCAL, "busy", False):
        return [fn(0, m)]
    (a0, b0), *rest = split_bounds(m, parts)
    with blas_threads(1):
        pool = _pool(parts - 1)
        futures = [pool.submit(_guarded, fn, a, b) for a, b in rest]
        try:
            first = _guarded(fn, a0, b0)
        finally:
            wait(futures)  # never leave the BLAS limit while parts still run
        return [first] + [f.result() for f in futures]


_LOCAL = threading.local()


def _guarded(fn, a, b):
    prev = getattr(_LOCAL, "busy", False)
    _LOCAL.busy = True
    try:
        return fn(a, b)
    finally:
        _LOCAL.busy = prev


# -- numba's threads ----------------------------------------------------------------------------------------------
# A few kernels (``jit(parallel=True)`` in streamlev._kernels) split the heads of a block over numba's threads:
# handing work to a Python thread costs 60-75 µs here (a lock or queue round trip), numba's parallel launch
# 1.6 µs, which matters for blocks that take a few hundred µs.  Three rules keep this safe:
#
# * one launch at a time (a process-wide lock): numba's ``workqueue`` layer (used when neither TBB nor OpenMP is
#   available) aborts the process on concurrent launches, and concurrent launches would oversubscribe the cores
#   anyway;
# * never in a forked child of a process that has launched: GNU OpenMP cannot run there (numba then terminates
#   the child), so such children use the kernels' serial twins;
# * as many threads as :func:`get_num_threads` says (at most numba's own limit), so ``STREAMLEV_NUM_THREADS``,
#   ``OMP_NUM_THREADS`` and Dask's one-thread workers are respected.
_PAR_LOCK = threading.Lock()
_PAR_USED = False  # this process has launched a parallel kernel
_PAR_FORKED = False  # forked from a process that had: parallel kernels are off


def parallel_threads() -> int:
    """Threads a parallel kernel may use now: 1 means "call the serial twin"."""
    if _PAR_FORKED:
        return 1
    import numba  # noqa: PLC0415

    return max(1, min(get_num_threads(), int(numba.config.NUMBA_NUM_THREADS)))


class one_blas_thread:  # noqa: N801 - used like a function
    """Limit one BLAS library (a threadpoolctl controller) to one thread; ``None``: every library.

    Two ctypes calls each way (~1.5 µs) where :class:`blas_threads` over all
    libraries costs ~7 µs — it runs once per multi-head block.
    """

    __slots__ = ("lib", "_saved", "_all")

    def __init__(self, lib):
        self.lib = lib
        self._saved = None
        self._all = blas_threads(1) if lib is None else None

    def __enter__(self):
        if self._all is not None:
            self._all.__enter__()
            return self
        cur = self.lib.get_num_threads()
        if cur != 1:
            self.lib.set_num_threads(1)
            self._saved = cur
        return self

    def __exit__(self, *exc):
        if self._all is not None:
            return self._all.__exit__(*exc)
        if self._saved is not None:
            self.lib.set_num_threads(self._saved)
            self._saved = None
        return False


class parallel_region:  # noqa: N801 - used like a function: ``with parallel_region(n): kernel(...)``
    """Context for one launch of a parallel numba kernel on ``n`` threads (see the rules above).

    Also limits BLAS — the library ``lib`` (a threadpoolctl controller) the
    kernel calls, or every library — to one thread for its duration: the
    kernels call BLAS from numba's threads.

    Iterations are handed out one at a time (numba's parallel chunk size 1,
    restored afterwards): a thread that is late — numba's worker sleeps between
    calls, and waking it took tens of µs here — takes fewer heads instead of
    holding up the call (12 heads of 256 x 64: 245-270 µs per call instead of
    294-321 µs with numba's default static split).
    """

    __slots__ = ("n", "_blas", "_chunk")

    def __init__(self, n: int, lib=None):
        self.n = int(n)
        self._blas = one_blas_thread(lib)
        self._chunk = None

    def __enter__(self):
        global _PAR_USED  # noqa: PLW0603
        import numba  # noqa: PLC0415

        _PAR_LOCK.acquire()
        try:
            if numba.get_num_threads() != self.n:
                numba.set_num_threads(self.n)
            self._chunk = numba.set_parallel_chunksize(1)
            _PAR_USED = True
            self._blas.__enter__()
        except BaseException:
            _PAR_LOCK.release()
            raise
        return self

    def __exit__(self, *exc):
        import numba  # noqa: PLC0415

        try:
            self._blas.__exit__(*exc)
            numba.set_parallel_chunksize(self._chunk)
        finally:
            _PAR_LOCK.release()
        return False
