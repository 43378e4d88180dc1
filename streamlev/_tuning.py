"""Performance thresholds, in one place: what each trades, and the benchmark that set it.

None of these changes an answer beyond rounding (the guarantees hold for any
value); they decide which of several exact paths a computation takes.  The
modules that use them import them by name, so a test can still patch the
value a module sees.  Run the named benchmark (``benchmarks/``) before
changing one; its JSON record under ``benchmarks/results/`` feeds the
performance page.
"""

from __future__ import annotations

# -- the factor (streamlev._factor) -----------------------------------------------------------------------
#: Rows of B per LAPACK dtpqrt call: bounds the Fortran-ordered float64 copy (16 MB) against call overhead.
TP_ENTRIES = 1 << 21
#: Block size nb of dtpqrt: small nb wins at d <= 256, large at d >= 1024 (benchmarks/wide_bench.py).
TP_NB = 32
#: From this d on, triangular inverses come from LAPACK dtrtri instead of the numba back substitution, whose
#: row sweeps leave the cache on wide factors (benchmarks/wide_bench.py).  Each d has one method, so a cached
#: inverse has the same bits however it was computed.
TRI_INV_LAPACK_MIN_DIM = 512
#: From this d on, copies between C and Fortran order around LAPACK calls (dtpqrt, dtrtri, dtrcon) go through the
#: tiled numba kernel, several times faster than numpy's copy on a 2048 x 2048 factor; smaller copies stay in numpy,
#: which loads no compiled code (benchmarks/wide_bench.py).
TILED_COPY_MIN_DIM = 256
#: Rows per matrix product inside one thread's part: float64 temporaries (~2 MB) against call overhead.
CHUNK_ROWS = 4096
#: Up to this d the Gram matrix BᵀB comes from the numba kernel, beyond it from BLAS, whose blocking wins once
#: the kernel's d x 264 scratch leaves the L2 cache (benchmarks/kernels_bench.py).
GRAM_KERNEL_MAX_DIM = 256
#: A screening bound is recomputed once the rows it was computed from grow by this factor: an SVD of the factor
#: against bounds that admit more rows as they age (benchmarks/run.py).
BOUND_REFRESH = 1.25
#: ... and by at least this many rows per dimension; evictions of fewer candidates than this many rows per
#: dimension score them all instead of computing a fresh bound (an SVD costs about 4-8·d exact scores;
#: benchmarks/wide_bench.py).
BOUND_MIN_ROWS_PER_DIM = 8
#: The SVDs of several factors' bounds are split over the threads from this d on (thread hand-off against
#: the SVD's own cost; benchmarks/run.py, multi-head).
BOUND_SPLIT_MIN_DIM = 128
#: Smallest chunk of a block taken through one fast update while a young factor ramps up: fewer d³ steps
#: against the trace budget of each update (benchmarks/run.py).
RAMP_MIN = 256
#: A whitened update takes at least this many rows per dimension; smaller chunks go by Householder: ~m·d² + 6·d³
#: against ~2·m·d² (benchmarks/wide_bench.py).
FAST_MIN_ROWS_PER_DIM = 4

# -- the online sketches (streamlev.online) -----------------------------------------------------------------
#: Entries of the buffer of small blocks of one OnlineLeverage (16 MB of float64): fewer d³ factor updates
#: against memory (benchmarks/run.py, wide_bench.py).
PENDING_ENTRIES = 1 << 21
#: The same per head of a MultiHeadLeverage, whose heads share the arithmetic of a block (benchmarks/run.py).
HEAD_PENDING_ENTRIES = 1 << 18
#: Candidate parts are joined into one array after an eviction leaves more than this many: one copy against
#: per-part overhead of later evictions (benchmarks/soak.py).
MAX_PARTS = 256
#: Candidates are not re-scored before there are this many: amortises evictions over tiny blocks
#: (benchmarks/run.py, decoding).
MIN_RESCORE = 256
#: Rows per sub-block of OnlineLeverage.update_scores: one (d + s) x s QR each, exact online scores either way.
ONLINE_SUB = 64
#: Multi-head blocks of at least this many entries (H·m·d) run the kernel on numba's threads, smaller ones
#: serially: a thread hand-off against the block's work (benchmarks/load_bench.py).
PARALLEL_MIN_ENTRIES = 1 << 14
#: Multi-head blocks of at least this many rows per head take the kernel path (no copy), smaller ones the shared
#: buffer: the kernel's fixed cost per head against a copy (benchmarks/run.py, multi-head decode and prefill).
ACC_MIN_ROWS = 64
#: ... and only once every head's factor holds this many rows per dimension: before, the kernel path pays a
#: stacked update per block where the buffer takes several (benchmarks/run.py, multi-head at d = 128 and 256).
ACC_MIN_ROWS_PER_DIM = 32
#: MultiHeadLeverage refreshes its factors and bounds early once this many rows (over all heads) were admitted
#: since the last update ...: a stacked update against storing and later scoring the rows a stale bound admits
#: (benchmarks/run.py, multi-head).
ADMITTED_FLUSH = 4096
#: ... and the rows waiting are at least 1/this of the factor's.
ADMITTED_FLUSH_FRACTION = 8

# -- threads (streamlev._threads) -----------------------------------------------------------------------
#: A probe of the mode not in use (threads or the calling thread alone) runs at most this often (seconds) while
#: it keeps losing; the interval doubles after each lost probe up to PROBE_MAX_INTERVAL and restarts from here
#: when a probe wins (benchmarks/load_bench.py).
PROBE_MIN_INTERVAL = 0.05
PROBE_MAX_INTERVAL = 1.0
#: After a lost probe that cost ``x`` seconds more than the mode in use would have, the next one waits at least
#: ``PROBE_COST_RATIO·x`` seconds (beyond PROBE_MAX_INTERVAL if need be), so lost probes cost at most about
#: 1/PROBE_COST_RATIO of the run time whatever the load.
PROBE_COST_RATIO = 20.0
#: Weight of the newest call in the running speed of the mode in use (exponential moving average).
RATE_WEIGHT = 0.25

# -- small inputs (streamlev.exact, streamlev._validate) ------------------------------------------------------
#: Keys with at most this many entries (n·d) and no ridge are scored by one LAPACK SVD of the column-normalised
#: matrix and validated with numpy instead of the blocked factor and the numba scan: no compiled kernel is
#: loaded, so a short job in a fresh process does not pay for loading them (benchmarks/coldstart_bench.py).
SMALL_ENTRIES = 1 << 17

# -- exact p != 2 sets (streamlev.lewis) ---------------------------------------------------------------------
#: Candidates certified together: temporaries are n x CERT_BATCH, against per-batch call overhead
#: (benchmarks/lewis_bench.py).
CERT_BATCH = 32
#: Tolerance of the Lewis weights (max |log τ - log w|) when certificates decide the set afterwards: any iterate
#: gives a valid candidate bound, and each halving of the tolerance costs a leverage computation at p = 1
#: (benchmarks/lewis_bench.py).
SCREEN_TOL = 1e-2
