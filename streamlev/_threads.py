"""Thread use of streamlev, in one place: the BLAS thread limit and the row-splitting worker pool.

Two facts decide how threads are used (``python benchmarks/kernels_bench.py``
measures them; the figures are on the documentation's performance page):

* OpenBLAS runs the thin products streamlev needs (``B·W`` for an m x 64
  block) hardly faster on 2 threads than on 1, while small LAPACK calls
  (QR/SVD of matrices a few hundred wide) run many times *slower* on 2 busy
  threads (docs/design.md, "Numerics: tiers and error bounds", threads).  So
  BLAS itself runs single-threaded inside every streamlev call that matters.
* numpy's matmul releases the GIL, so splitting a block's rows into one part
  per core and running single-threaded BLAS on each part in a thread of its
  own gives the speed-up instead.  (scipy's f2py BLAS wrappers keep the GIL, so
  they are not used for this.)  numba kernels are compiled with ``nogil=True``
  and split the same way.

The number of worker threads is, in order: :func:`set_num_threads`; the
``STREAMLEV_NUM_THREADS`` environment variable (the environment is read once,
at first use); the smallest of
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` when set
(Dask's nanny sets them to 1 in each worker process, so workers do not
oversubscribe); otherwise the CPUs this process may run on.

That number fixes how a block is *split* (so results never depend on the
machine's load); whether the parts then *run* on threads or one after the
other on the calling thread is decided call by call from measured speed
(:class:`_Choice`).  A core kept busy by another process makes threads that
wait for each other slower than one thread alone — a worker that is not
scheduled holds up the whole call — and the choice then falls back to the
calling thread until threads measure faster again, with no setting needed.
The parts run in the same order with the same arithmetic either way, so the
results are the same bits.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

from ._tuning import PROBE_COST_RATIO, PROBE_MAX_INTERVAL, PROBE_MIN_INTERVAL, RATE_WEIGHT

__all__ = [
    "blas_threads",
    "get_num_threads",
    "set_num_threads",
    "split_bounds",
    "split_run",
    "parts_for",
    "parallel_threads",
    "parallel_region",
    "run_parallel",
]

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

    The libraries are found once (threadpoolctl); entering and leaving then
    costs far less than ``threadpoolctl.threadpool_limits`` does per use,
    which matters for blocks of a few hundred rows.  A context
    nested inside one with the same ``n`` on the same thread costs nothing
    (the per-head loops of :class:`streamlev.online.MultiHeadLeverage` nest
    dozens).

    The count is process-wide (in a pthreads OpenBLAS), so ``n = 1`` — the
    only limit the library asks for — is a *hold* counted over all threads
    (:func:`_hold`): the first holder sets one thread, the last one out
    restores what the first found, so threads holding at once (several
    streams sketched in threads of one program, a Dask worker's threads) do
    not undo each other's limit.  Any other ``n`` is set and undone by the
    context alone.
    """

    __slots__ = ("n", "_libs", "_saved", "_prev")

    def __init__(self, n: int):
        self.n = int(n)
        self._libs = None
        self._saved = None
        self._prev = None

    def __enter__(self):
        prev = getattr(_ACTIVE, "n", None)
        if prev == self.n:  # an enclosing context on this thread already holds this limit
            self._saved = None
            return self
        libs = self._libs if self._libs is not None else _blas_libs()
        if self.n == 1:
            self._saved = _hold(libs)
        else:
            saved = []
            for lib in libs:
                get, put = _controls(lib)
                cur = get()
                if cur != self.n:
                    put(self.n)
                saved.append(cur)
            self._saved = saved
        self._prev = prev
        _ACTIVE.n = self.n
        return self

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        libs = self._libs if self._libs is not None else _blas_libs()
        if self.n == 1:
            _release(libs, self._saved)
        else:
            for lib, cur in zip(libs, self._saved):
                if cur != self.n:
                    _controls(lib)[1](cur)
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
    from ._validate import check_positive_int  # noqa: PLC0415 - the API's one integer rule

    _USER_THREADS = check_positive_int(n, "the number of threads (None for the default)")
    return prev


def _reset_after_fork():  # pragma: no cover - runs in forked children
    global _POOL, _POOL_SIZE, _LIBS, _ENV_THREADS, _PAR_FORKED, _PAR_LOCK, _HOLD_LOCK  # noqa: PLW0603
    _POOL, _POOL_SIZE, _LIBS, _ENV_THREADS = None, 0, None, None
    _CHOICES.clear()
    _PAR_FORKED = _PAR_FORKED or _PAR_USED
    _PAR_LOCK = threading.Lock()
    _HOLD_LOCK = threading.Lock()
    _HOLDS.clear()


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

    Part 0 runs on the calling thread, the others on the pool — or, when
    :class:`_Choice` measured that faster (another process keeping a core
    busy), all parts in turn on the calling thread.  BLAS is held at one
    thread for the duration, so each part runs single-threaded BLAS.
    A split requested from inside a running split runs in one part (no
    nested hand-off, which could wait on itself).
    """
    if parts <= 1 or getattr(_LOCAL, "busy", False):
        return [fn(0, m)]
    choice = _choice(getattr(fn, "__code__", None) or type(fn))
    threaded = choice.pick()
    t0 = time.perf_counter()
    out = _split_threads(fn, m, parts) if threaded else _split_here(fn, m, parts)
    choice.record(threaded, time.perf_counter() - t0, m)
    return out


def _split_here(fn, m: int, parts: int) -> list:
    """The parts of :func:`split_run` one after the other on the calling thread (same ranges, same order)."""
    with blas_threads(1):
        return [_guarded(fn, a, b) for a, b in split_bounds(m, parts)]


def _split_threads(fn, m: int, parts: int) -> list:
    """The parts of :func:`split_run` on the pool, part 0 on the calling thread."""
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
# a launch of numba's threads costs far less than handing work to a Python thread (split_run)
# (``python benchmarks/kernels_bench.py`` measures both), which matters for blocks of a few hundred rows.  Three rules
# keep this safe:
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


_DIRECT = {}  # BLAS library path -> (get, set) ctypes functions of a pthreads OpenBLAS, or None
_HOLDS = {}  # BLAS library path -> [holders, count to restore]
_HOLD_LOCK = threading.Lock()
_OPENBLAS_NAMES = [
    (f"{p}openblas_get_num_threads{s}", f"{p}openblas_set_num_threads{s}") for p in ("scipy_", "") for s in ("64_", "")
]


def _direct_calls(lib):
    """openblas_get/set_num_threads of a pthreads OpenBLAS (threadpoolctl controller ``lib``), or None.

    Called directly: for a pthreads OpenBLAS, threadpoolctl only lets the first
    thread that set a limit change it again, so a limit asked for from another
    thread (a Dask worker's, say) would silently not apply — and OpenBLAS's
    own threads started from a part's thread oversubscribe the cores (they
    made a block of the multi-head kernel 100x slower when it still called
    BLAS from numba's threads).
    """
    key = lib.filepath
    if key not in _DIRECT:
        fns = None
        if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") == "pthreads":
            import ctypes  # noqa: PLC0415

            try:
                dll = ctypes.CDLL(lib.filepath)
                for g, st in _OPENBLAS_NAMES:
                    if hasattr(dll, g) and hasattr(dll, st):
                        get, put = getattr(dll, g), getattr(dll, st)
                        get.restype, get.argtypes = ctypes.c_int, []
                        put.restype, put.argtypes = None, [ctypes.c_int]
                        fns = (get, put)
                        break
            except OSError:  # pragma: no cover - the library vanished: threadpoolctl's calls instead
                fns = None
        _DIRECT[key] = fns
    return _DIRECT[key]


def _controls(lib):
    """(get, set) of one library's thread count: direct calls for a pthreads OpenBLAS, else threadpoolctl's."""
    fns = _direct_calls(lib)
    return fns if fns is not None else (lib.get_num_threads, lib.set_num_threads)


def _hold(libs) -> list:
    """Hold each library of ``libs`` at one thread; returns what :func:`_release` needs.

    Holders are counted per library (under a lock): the first sets one
    thread and notes the count it found, which the last one out restores.  A
    holder that finds the library set to another count while held (a
    different limit nested inside a hold) sets one thread again and gives
    that count back when it leaves.
    """
    found = []
    with _HOLD_LOCK:
        for lib in libs:
            get, put = _controls(lib)
            cur = get()
            hold = _HOLDS.get(lib.filepath)
            if hold is None or hold[0] == 0:
                _HOLDS[lib.filepath] = [1, cur]
                found.append(None)
            else:
                hold[0] += 1
                found.append(cur if cur != 1 else None)
            if cur != 1:
                put(1)
    return found


def _release(libs, found) -> None:
    """Undo one :func:`_hold` of the same libraries."""
    with _HOLD_LOCK:
        for lib, mine in zip(libs, found):
            hold = _HOLDS[lib.filepath]
            hold[0] -= 1
            if mine is not None:
                _controls(lib)[1](mine)
            elif hold[0] == 0 and hold[1] != 1:
                _controls(lib)[1](hold[1])


def _numba_controls():
    """(get threads, set threads, set chunk size) of numba's threading layer for the calling thread.

    numba's public functions take two process-wide locks per call; after
    the layer is up, its own ctypes entry points are
    called directly (falling back to the public functions if a numba
    version has none).
    """
    global _NUMBA_CTL  # noqa: PLW0603 - looked up once per process
    if _NUMBA_CTL is None:
        import numba  # noqa: PLC0415
        from numba.np.ufunc import parallel as npp  # noqa: PLC0415

        with _passive_openmp():
            numba.get_num_threads()  # starts the threading layer (loads the OpenMP runtime, which reads the policy)
        raw = [getattr(npp, name, None) for name in ("_get_num_threads", "_set_num_threads", "_set_parallel_chunksize")]
        public = [numba.get_num_threads, numba.set_num_threads, numba.set_parallel_chunksize]
        _NUMBA_CTL = tuple(r if callable(r) else p for r, p in zip(raw, public))
    return _NUMBA_CTL


_NUMBA_CTL = None


#: False leaves OpenMP's wait policy to its default (spinning), for benchmarks comparing both.
_PASSIVE = True


class _passive_openmp:  # noqa: N801 - used like a function: ``with _passive_openmp(): start the layer``
    """Start numba's threading layer with OpenMP's passive wait policy, unless the user chose one.

    By default GNU OpenMP's idle threads spin between parallel regions.  With
    a kernel launched every block, numba's worker then spins almost all the
    time: on a machine where another process keeps a core busy it takes that
    core's time slices from the busy process and from streamlev's own calling
    thread, and the multi-head sketch ran several times slower than its
    one-thread run (``python benchmarks/load_bench.py``).  Passive threads
    sleep between regions and cost a wake-up per launch instead.  The OpenMP
    runtime reads ``OMP_WAIT_POLICY`` once, when it is loaded, so the variable
    is set only for that moment and the environment is restored afterwards
    (child processes and later libraries see what the user set).  A runtime
    already loaded by another library keeps its own policy; the measured
    choice of :func:`run_parallel` still applies.
    """

    __slots__ = ("_set",)

    def __enter__(self):
        self._set = _PASSIVE and "OMP_WAIT_POLICY" not in os.environ
        if self._set:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return self

    def __exit__(self, *exc):
        if self._set:
            os.environ.pop("OMP_WAIT_POLICY", None)
        return False


class parallel_region:  # noqa: N801 - used like a function: ``with parallel_region(n): kernel(...)``
    """Context for one launch of a parallel numba kernel on ``n`` threads (see the rules above).

    Takes the launch lock, marks this process as having launched (for
    forked children), sets numba's thread count for the calling thread and
    hands iterations out one at a time (numba's parallel chunk size 1, so
    that a late thread — numba's worker sleeps between calls — takes fewer
    heads instead of holding up the call; in two runs of ``python
    benchmarks/kernels_bench.py`` it was within noise of numba's static split
    back to back and 3-8% faster with a busy loop between calls), restoring
    both afterwards.  The parallel kernels call no BLAS (their Gram matrices
    come from :func:`streamlev._kernels.gram_upper`), so BLAS is left as it is.
    """

    __slots__ = ("n", "_prev")

    def __init__(self, n: int):
        self.n = int(n)
        self._prev = None

    def __enter__(self):
        global _PAR_USED  # noqa: PLW0603
        get_n, set_n, set_chunk = _numba_controls()
        _PAR_LOCK.acquire()
        try:
            prev_n = get_n()
            if prev_n != self.n:
                set_n(self.n)
            self._prev = (prev_n, set_chunk(1))
            _PAR_USED = True
        except BaseException:
            _PAR_LOCK.release()
            raise
        return self

    def __exit__(self, *exc):
        _get_n, set_n, set_chunk = _numba_controls()
        try:
            prev_n, prev_chunk = self._prev
            set_chunk(prev_chunk)
            if prev_n != self.n:
                set_n(prev_n)
        finally:
            _PAR_LOCK.release()
        return False


# -- threads or not, from measured speed ------------------------------------------------------------------------
#: False runs every split on threads whatever they measure (ignoring load); for benchmarks comparing both.
_ADAPTIVE = True


class _Choice:
    """Threads or the calling thread alone, for one kind of call, from their measured speed.

    Keeps the seconds per unit of work of both modes: the mode in use as a
    moving average of its calls, the other one from its latest probe.  It
    picks the faster; every so often (:data:`PROBE_MIN_INTERVAL` doubling
    to :data:`PROBE_MAX_INTERVAL` while the probes lose, and spaced so that
    lost probes cost at most 1/:data:`PROBE_COST_RATIO` of the time) one call
    runs the other mode, so a change of load is noticed within about a
    second, or a few when a probe costs much more than the call it replaces.
    Unsynchronised: concurrent callers may race on the figures, which only
    blurs a timing.
    """

    __slots__ = ("rate", "probe_at", "interval", "probing")

    def __init__(self):
        self.rate = [0.0, 0.0]  # seconds per unit of work: [calling thread alone, threads]; 0 = not measured
        self.probe_at = 0.0
        self.interval = PROBE_MIN_INTERVAL
        self.probing = False

    def pick(self) -> bool:
        """True to run on threads."""
        if not _ADAPTIVE:
            return True
        alone, threads = self.rate
        if not threads:
            return True
        if not alone:
            return False
        best = threads <= alone
        if time.perf_counter() >= self.probe_at:
            self.probing = True
            return not best
        return best

    def record(self, threaded: bool, seconds: float, work: int) -> None:
        """Note that a call of ``work`` units took ``seconds`` on threads (``threaded``) or alone."""
        i = int(bool(threaded))
        r = seconds / max(1, work)
        now = time.perf_counter()
        if self.probing:
            self.probing = False
            other = self.rate[1 - i]
            self.rate[i] = r
            if r < other:
                self.interval = PROBE_MIN_INTERVAL
            else:  # lost: wait longer, and long enough that lost probes cost at most 1/PROBE_COST_RATIO of the time
                excess = (r - other) * max(1, work)
                self.interval = max(min(2 * self.interval, PROBE_MAX_INTERVAL), PROBE_COST_RATIO * excess)
            self.probe_at = now + self.interval
            return
        old = self.rate[i]
        if not old:
            self.rate[i] = r
            if self.rate[1 - i]:  # both measured: the next probe after one interval
                self.probe_at = now + self.interval
            return
        self.rate[i] = old + RATE_WEIGHT * (r - old)


_CHOICES: dict = {}


def _choice(key) -> _Choice:
    """The :class:`_Choice` of one kind of call (one per function body: a split's parts, a parallel kernel)."""
    c = _CHOICES.get(key)
    if c is None:
        c = _CHOICES.setdefault(key, _Choice())
    return c


def run_parallel(parallel_fn, serial_fn, args: tuple, work: int):
    """``parallel_fn(*args)`` on numba's threads or its serial twin ``serial_fn(*args)``, whichever is faster now.

    Both must compute the same result (a parallel kernel and its serial
    twin, :mod:`streamlev._kernels`).  ``work`` measures the call's size
    (e.g. its entries) for the speed figures of :class:`_Choice`.  Serial
    when :func:`parallel_threads` allows one thread only.
    """
    threads = parallel_threads()
    if threads <= 1:
        return serial_fn(*args)
    choice = _choice(getattr(parallel_fn, "py_func", parallel_fn))
    threaded = choice.pick()
    t0 = time.perf_counter()
    if threaded:
        with parallel_region(threads):
            out = parallel_fn(*args)
    else:
        out = serial_fn(*args)
    choice.record(threaded, time.perf_counter() - t0, work)
    return out
