"""H exact one-pass sketches in one: :class:`MultiHeadLeverage` (the heads of an attention layer).

Each head is a :class:`~streamlev.online.single.Stream` (factor, candidates,
buffer); the heads share one :class:`~streamlev.online.ids.IdLedger`, a
buffer of small blocks with a head axis
(:class:`~streamlev.online.buffer.PendingRows`) and running Gram sums for
the kernel path (:class:`~streamlev.online.gramsums.GramSums`).
"""

from __future__ import annotations

import copy

import numpy as np
from numpy.typing import ArrayLike

from .. import serialize
from .._factor import (
    BOUND_MIN_ROWS_PER_DIM,
    FAST_MIN_ROWS_PER_DIM,
    FAST_TRACE_MAX,
    admit,
    admit_threshold,
    bounds_many,
    fast_ok_many,
    rinv_many,
    whitened_update_many,
)
from .._lazy import kernels
from .._linalg import gram
from .._sketch import Sketch
from .._threads import parts_for, split_run
from .._tuning import ACC_MIN_ROWS, ACC_MIN_ROWS_PER_DIM, ADMITTED_FLUSH, ADMITTED_FLUSH_FRACTION, HEAD_PENDING_ENTRIES
from .._validate import MAX_MAGNITUDE, MIN_MAGNITUDE, as_keys, check_dim, check_factor_memory, check_positive_int
from .buffer import PendingRows, candidate_chunk_rows, pending_rows, right_sized
from .gramsums import GramSums, KernelState
from .ids import ID_MAX, IdLedger
from .single import OnlineLeverage, Stream, attached, check_merge_ids, pack_stream, stream_from_bytes

__all__ = ["MultiHeadLeverage"]


class MultiHeadLeverage(Sketch):
    """H independent key streams (e.g. the heads of one attention layer) in one sketch.

    Each head is an exact one-pass sketch with the guarantee of
    :class:`OnlineLeverage`.  A block of shape ``(H, m, dim)`` is handled as
    one array, not H.  Once the factors are well conditioned, a block of 64
    or more rows per head is never copied: one numba kernel, its heads on
    numba's threads, screens every row, copies the admitted ones to the
    candidates and adds each head's Gram matrix (float64, numba) to a
    running sum that the factors take in one stacked whitened update
    (:meth:`_accumulate`).  Smaller blocks (one token per call, when
    decoding) are validated and screened in one pass, buffered in one
    (H, rows, dim) array and absorbed together.  Only heads with admitted
    rows do per-head work for a block.

    Parameters
    ----------
    heads : int
        Number of streams H.
    dim : int
        Key dimension d (per head).
    eps : float in (0, 1]
        Attention threshold.
    ridge : float, default 0.0
        λ >= 0, as in :class:`OnlineLeverage`.
    start : int, default 0
        Id of the first row (token position); ids are shared by all heads.

    Notes
    -----
    Memory per head: a d x d factor and three d x d running sums, at most
    about rank/eps candidates after each eviction and a buffer of small
    blocks (``pending_rows(dim, HEAD_PENDING_ENTRIES)`` rows: 2 MB of float64
    per head), plus the block being processed.
    Results do not depend on the path a block takes or on the number of
    threads beyond rounding (tested: the same bytes for 1 and 2 threads and
    for any memory layout of the blocks).
    """

    _FAMILY = "MultiHeadLeverage"
    _MERGE_PARAMS = ("dim", "eps", "ridge")
    _REPR = ("heads", "dim", "eps", "ridge", "n_seen")

    def __init__(self, heads: int, dim: int, eps: float, *, ridge: float = 0.0, start: int = 0):
        self.heads = check_positive_int(heads, "heads")
        check_factor_memory(check_dim(dim), "MultiHeadLeverage", copies=self.heads)
        first = OnlineLeverage(dim, eps, ridge=ridge, start=start)  # validates the parameters
        self.dim, self.eps, self.ridge, self.start = first.dim, first.eps, first.ridge, first.start
        self._init_shared([Stream(self.dim, self.eps, self.ridge) for _ in range(self.heads)], IdLedger(self.start))

    def _init_shared(self, streams, ids):
        self._streams = streams  # one exact single-head state per head
        self._ids = ids  # the row ids, shared by every head (rows fed through head(h) included)
        self._views = [None] * self.heads  # the OnlineLeverage of each head (head(h)), made on demand
        pcap = pending_rows(self.dim, HEAD_PENDING_ENTRIES)
        self._pend = PendingRows(self.dim, pcap, heads=self.heads)  # small blocks not yet in the factors
        self._mtail = None  # [(H, rows, dim) keys, ids, rows used]: candidates every head keeps (_append_all)
        self._ktail = None  # [(H, rows, dim) keys, (H, rows) ids, (H,) used]: rows the kernel copies (_accumulate)
        for st in streams:  # rows fed to a head directly (head(h)) are buffered as the shared ones are
            st.pending.cap = pcap
        self._bounds = None  # stacked per-head screening bounds, refreshed after every factor change
        self._sums = None  # GramSums: Gram matrices of rows added to no factor yet (see _accumulate)
        self._kstate = None  # KernelState for _accumulate (None: stale; False: the kernel path does not apply)
        self._thr = admit_threshold(self.eps)
        self._fresh = False  # the next kernel state takes bounds at the factors' current state

    @property
    def n_seen(self) -> int:
        """Rows fed per head (the largest count of any head when rows were fed to single heads: :meth:`head`)."""
        sums = self._sums
        return self._pend.n + max(
            st.n_seen + (0 if sums is None else int(sums.rows[h])) for h, st in enumerate(self._streams)
        )

    @property
    def n_candidates(self) -> np.ndarray:
        """Candidate count of each head."""
        return np.array([st.store.count for st in self._streams])

    @property
    def nbytes(self) -> int:
        """Bytes held by all heads (and the shared buffer of small blocks)."""
        pend = self._pend.nbytes + self._ids.nbytes
        if self._sums is not None:
            pend += self._sums.nbytes
        if self._mtail is not None:
            pend += self._mtail[0].nbytes + self._mtail[1].nbytes
        if self._ktail is not None:
            pend += self._ktail[0].nbytes + self._ktail[1].nbytes
        return int(sum(st.nbytes for st in self._streams) + pend)

    def head(self, h: int) -> OnlineLeverage:
        """The sketch of head ``h``, holding every row fed so far (it shares state with this object).

        Rows fed to it directly join that head's stream only; their ids are
        taken from the ids all heads share, so later blocks' default ids
        continue after them.
        """
        self._flush_all()
        view = self._views[h]
        if view is None:
            view = self._views[h] = attached(self._streams[h], self._ids, self.start)
        return view

    def update(self, X: ArrayLike, ids: ArrayLike | None = None) -> MultiHeadLeverage:
        """Feed a block of shape (H, m, dim) (or (H, dim) for one row per head).

        Validated as a whole before anything changes; a refused block leaves
        every head as it was.

        Returns
        -------
        self
        """
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[0] == self.heads:
            X = X[:, None, :]
        if self._accumulate(X, ids):
            return self
        consecutive = ids is None
        staged = self._stage(X, ids)
        if staged is not None:
            B, ids, keep, big = staged
            m = B.shape[1]
        else:
            if isinstance(X, np.ndarray) and X.dtype in (np.float32, np.float64) and not X.flags.c_contiguous:
                X = np.ascontiguousarray(X)  # one pass for validation and screening below
            B, big = as_keys(X, name="X", ndim=3, dim=self.dim, with_max=True)
            if B.shape[0] != self.heads:
                raise ValueError(
                    f"X must have shape (heads={self.heads}, m, {self.dim}), got {B.shape}; "
                    f"the first axis indexes the heads"
                )
            m = B.shape[1]
            ids = self._ids.check(ids, m)
            if m == 0:
                return self
            B = np.ascontiguousarray(B)
            keep = self._screen(B)
        self._ids.record(ids, consecutive=consecutive)
        fed = self._keep_rows(B, ids, keep)
        if staged is not None:  # the rows are already in the shared buffer
            self._pend.count(m, big)
        else:
            self._push(B, big)
        self._evict_due_heads(fed)
        return self

    def _keep_rows(self, B, ids, keep):
        """Store the admitted rows (mask ``keep`` (H, m)) as candidates; return the heads that gained some."""
        any_h = keep.any(axis=1)
        full = keep.all(axis=1)
        fed = np.flatnonzero(any_h)
        if full.all():  # every head keeps every row (short streams, decoding): one stacked copy
            self._append_all(B, ids)
        elif fed.size:
            self._seal_all()
            for h in fed:
                store = self._streams[h].store
                if full[h]:
                    store.append(B[h], ids)
                else:
                    kh = keep[h]
                    store.append(B[h, kh], ids[kh], copy=False)
        return fed

    def _evict_due_heads(self, fed):
        # Only heads that gained candidates can have come due (a flush only raises the rank).
        due = [int(h) for h in fed if self._streams[h].evict_due()]
        if due:  # evictions score against every row fed
            self._flush_all()
            self._evict_heads(due)

    def _evict_heads(self, heads):
        """Evictions of several heads: their bounds as one stacked SVD, the heads split over the library's threads.

        An eviction is numba kernels (screening, compaction) and BLAS
        products that release the GIL, so heads run in parallel; each head's
        own work is that of :meth:`Stream.evict`.
        """
        streams = [self._streams[h] for h in heads]
        # the bounds Factor.classify_parts will use (fewer candidates than 8·d are scored without one)
        bounds_many([st.factor for st in streams if st.store.count >= BOUND_MIN_ROWS_PER_DIM * self.dim], fresh=True)

        def part(a, b):
            for st in streams[a:b]:
                st.evict()

        rows = sum(st.store.count for st in streams)
        split_run(part, len(heads), parts_for(len(heads), 1) if rows >= 1 << 16 else 1)

    # -- the usual block: screened, its Gram matrices added to running sums, no copy ----------------------
    def _kernel_state(self):
        """What :meth:`_accumulate` needs of the factors' current state, or None when it does not apply.

        It applies when every head's factor is in the tier-1 regime of
        :meth:`streamlev._factor.Factor.update` (nonsingular, column-normalised
        condition number <= GRAM_COND_MAX, squares safe) — which also means every
        head has a screening bound —, every factor holds at least
        ``ACC_MIN_ROWS_PER_DIM·dim`` rows, and no head holds rows of its own
        buffer.  Recomputed after every change of a factor.
        """
        if self._kstate is None:
            facs = [st.factor for st in self._streams]
            fast_ok_many(facs)
            if not all(f.gram_tier(0.0) and f.n >= ACC_MIN_ROWS_PER_DIM * self.dim for f in facs) or any(
                st.pending.n for st in self._streams
            ):
                self._kstate = False
                return None
            bounds = bounds_many(facs, fresh=self._fresh)
            self._fresh = False
            if any(b is None for b in bounds):  # pragma: no cover - tier 1 (cond <= 1e3) implies a bound
                self._kstate = False
                return None
            dinv = np.stack([b.dinv for b in bounds])
            up = np.array([b.up for b in bounds])
            Rinv = rinv_many(facs)
            M = np.matmul(Rinv, Rinv.transpose(0, 2, 1))  # (RᵀR)⁻¹: ⟨M, BᵀB⟩ = Σ ‖b R⁻¹‖² = trace(G)
            W = 2.0 * np.triu(M)  # weights of the upper triangle of BᵀB (its lower triangle is not formed)
            W -= M * np.eye(self.dim)
            limit = np.array([f.fast_rows() for f in facs], dtype=np.int64)
            self._kstate = KernelState(dinv, up, W, limit, FAST_TRACE_MAX, np.array([f.n for f in facs]))
        return self._kstate or None

    def _changed(self):
        """Forget everything derived from the factors' state (call after any of them changed)."""
        self._bounds = None
        self._kstate = None

    def _accumulate(self, X, ids) -> bool:
        """Take a float block (H, m, dim) without copying it, if the factors' state allows; True when done.

        One kernel (:func:`streamlev._kernels.heads_screen_gram`, the heads
        split over numba's threads) screens every row against its head's bound
        and forms each head's Gram matrix BᵀB (float64, :func:`~streamlev._kernels.gram_upper`) straight
        from the caller's array; the Gram matrices are added to per-head running
        sums with compensated summation (:class:`~streamlev.online.gramsums.GramSums`), and the factors
        take them in one whitened update (tier 1 of
        :meth:`streamlev._factor.Factor.update`) once the rows grew by half or
        their whitened trace reached FAST_TRACE_MAX/2.  The trace is bounded
        with a guarantee — by the rows' screening bounds, or exactly as
        ⟨(RᵀR)⁻¹, BᵀB⟩ when those are loose — so that update's Cholesky factor
        has condition number <= 1 + FAST_TRACE_MAX, as in a per-block update.
        A block whose own trace exceeds the budget (new directions) goes to its
        head's Householder path, rows in hand.  Nothing is committed before the
        whole block is known to be finite with safe squares; otherwise (and
        for other input) the general path handles the block and names any
        problem.
        """
        if not (
            type(X) is np.ndarray
            and X.ndim == 3
            and X.dtype in (np.float64, np.float32)
            and X.shape[0] == self.heads
            and X.shape[2] == self.dim
            and X.shape[1] >= ACC_MIN_ROWS
        ):
            return False
        state = self._kstate if self._kstate is not None else self._kernel_state()
        if not state:
            return False
        m = X.shape[1]
        if ids is not None:
            ids = self._ids.check(ids, m)  # refuses bad ids before anything changes
        elif self._ids.next_id + m > ID_MAX:
            return False  # the general path says why
        sums = self._sums if self._sums is not None else GramSums(self.heads, self.dim)
        tail = self._ktail
        if tail is not None and (tail[0].dtype != X.dtype or tail[0].shape[1] - int(tail[2].max()) < m):
            self._seal_ktail()
            tail = None
        start = self._ids.next_id
        done, kept, refused, due = sums.add(X, self._thr, state, tail or sums.no_tail(X.dtype), ids, start)
        if not done:
            return False  # a NaN/inf or an unsafe magnitude: nothing was added; the general path takes it
        self._sums = sums
        if ids is None:
            self._ids.record_run(start, start + m)
        else:
            self._ids.record(ids)
        fed = ()
        if kept:
            fed = np.flatnonzero(sums.kept)
            if done == 2:  # the kernel copied them to the tail
                for h in fed:
                    self._streams[h].store.count += int(sums.kept[h])
            else:
                if ids is None:
                    ids = np.arange(start, start + m, dtype=np.int64)
                self._keep_rows(X, ids, sums.keep[:, :m])
                cap = candidate_chunk_rows(self.dim, self.eps)
                if m <= cap // 4:  # rows are being kept: a tail for the next blocks' kept rows
                    self._ktail = [
                        np.empty((self.heads, cap, self.dim), dtype=X.dtype),
                        np.empty((self.heads, cap), dtype=np.int64),
                        np.zeros(self.heads, dtype=np.int64),
                    ]
        if refused:
            for h in np.flatnonzero(~sums.took):  # the block would pass this head's trace budget
                self._flush_sums([h])
                if not self._resum(h, m):
                    self._streams[h].factor.update(X[h])  # new directions: Householder, rows in hand
                self._changed()
        if kept:
            sums.admitted += kept
        if due:
            self._flush_sums()  # all heads at once: one stacked update (the heads fill up at similar rates)
        elif (
            sums.admitted >= ADMITTED_FLUSH
            and np.all(sums.rows * ADMITTED_FLUSH_FRACTION >= state.rows)
            and np.all(state.rows * self.eps >= self.dim)
        ):
            # Past the first rank/eps rows (before, nearly every row is in the universal set of the rows so
            # far), many rows passing the bound mean that it is stale: update the factors and bound early
            # rather than store and later score them all.
            self._flush_sums()
            self._fresh = True
        if kept:
            self._evict_due_heads(fed)
        return True

    def _resum(self, h, m) -> bool:
        """Start head h's empty running sum with the block's Gram matrix (still in the scratch), if in budget."""
        state = self._kernel_state()
        if state is None:
            return False
        sums = self._sums
        if not kernels.gram_sum_one(sums.T[h], state.W[h], state.budget, sums.hi[h], sums.lo[h], sums.tr[h : h + 1]):
            return False
        sums.rows[h] += m
        return True

    def _flush_sums(self, heads=None):
        """Add the running Gram sums of ``heads`` (default: all) to their factors, all in one stacked update.

        A refused update (not expected: the trace is kept below FAST_TRACE_MAX)
        falls back to :meth:`streamlev._factor.Factor.absorb_gram`.
        """
        sums = self._sums
        if sums is None:
            return
        todo = [int(h) for h in (range(self.heads) if heads is None else heads) if sums.rows[h]]
        if not todo:
            return
        facs = [self._streams[h].factor for h in todo]
        C = sums.grams(todo)
        rows = sums.rows[todo].copy()
        for i in whitened_update_many(facs, C, rows):
            facs[i].absorb_gram(C[i], int(rows[i]))
        sums.clear(todo)
        self._changed()

    # -- candidates every head keeps ---------------------------------------------------------------
    def _append_all(self, B, ids):
        """Blocks whose rows every head admits go into one stacked (H, rows, dim) chunk, copied once.

        The chunk becomes one part of each head (a view) when it is full or
        before anything reads the heads' candidates (:meth:`_seal_all`).
        """
        m = B.shape[1]
        cap = candidate_chunk_rows(self.dim, self.eps)
        a = 0
        while a < m:
            if self._mtail is not None and self._mtail[0].dtype != B.dtype:
                self._seal_all()
            if self._mtail is None:
                self._mtail = [np.empty((self.heads, cap, self.dim), dtype=B.dtype), np.empty(cap, dtype=np.int64), 0]
            buf, ib, used = self._mtail
            take = min(m - a, cap - used)
            buf[:, used : used + take] = B[:, a : a + take]
            ib[used : used + take] = ids[a : a + take]
            self._mtail[2] = used + take
            a += take
            if used + take == cap:
                self._seal_all()
        for st in self._streams:
            st.store.count += m

    def _seal_ktail(self):
        """Hand the kernel's candidate tail to the heads: each gets its kept rows as a part."""
        tail = self._ktail
        self._ktail = None
        if tail is None:
            return
        tk, tid, used = tail
        for h, st in enumerate(self._streams):
            k = int(used[h])
            if not k:
                continue
            st.store.add_part(right_sized(tk[h], k), right_sized(tid[h], k))

    def _seal_all(self):
        """Hand the stacked chunk (and the kernel's tail) to the heads: each gets its rows as parts."""
        self._seal_ktail()
        if self._mtail is None:
            return
        buf, ib, used = self._mtail
        self._mtail = None
        if not used:
            return
        ids = right_sized(ib, used)
        keys = right_sized(buf, used, axis=1)
        for h, st in enumerate(self._streams):
            st.store.add_part(keys[h], ids)

    # -- screening and the shared buffer ----------------------------------------------------------
    def _stacked_bounds(self):
        """The heads' screening bounds stacked: dinv (H, d), up (H, 1), and which heads have none.

        A head without a bound (rank-deficient or ill-conditioned so far)
        admits every row; its dinv and up are zero.
        """
        if self._bounds is None:
            bounds = bounds_many([st.factor for st in self._streams])
            none = np.array([b is None for b in bounds])
            dinv = np.zeros((self.heads, self.dim))
            up = np.zeros((self.heads, 1))
            for h, b in enumerate(bounds):
                if b is not None:
                    dinv[h], up[h, 0] = b.dinv, b.up
            self._bounds = (dinv, up, none)
        return self._bounds

    def _admission(self, norms):
        """Admission mask (H, m) from the rows' screening norms against the stacked bounds."""
        _dinv, up, none = self._stacked_bounds()
        keep = admit(norms * up, self.eps)
        if none.any():
            keep[none] = True
        return keep

    def _stage(self, X, ids):
        """The usual block in one pass: (rows, ids, admission mask, max |entry|), or None for the general path.

        A float block (H, m, dim) of the buffer's dtype that fits in the
        shared buffer without a flush is copied straight into the buffer's
        free rows (any strides) and validated and screened there by one
        kernel (:func:`streamlev._kernels.scan_screen_rows`): one pass over
        the caller's memory instead of a contiguous copy, a validation scan,
        a screening pass and a copy into the buffer.  Nothing is committed
        here: rows past the buffer's count are scratch, so a block with a bad
        entry leaves the sketch as it was and goes to the general path, which
        names the problem.
        """
        P, n0 = self._pend.buf, self._pend.n
        if not (
            isinstance(X, np.ndarray)
            and X.ndim == 3
            and P is not None
            and X.dtype == P.dtype
            and X.shape[0] == self.heads
            and X.shape[2] == self.dim
        ):
            return None
        m = X.shape[1]
        if m == 0 or m >= self._pend.cap or n0 + m > P.shape[1]:
            return None
        ids = self._ids.check(ids, m)
        P[:, n0 : n0 + m] = X
        norms = np.empty((self.heads, m))
        bad, big, small = kernels.scan_screen_rows(P, n0, n0 + m, self._stacked_bounds()[0], norms)
        if bad >= 0 or not big <= MAX_MAGNITUDE or small < MIN_MAGNITUDE:
            return None
        return P[:, n0 : n0 + m], ids, self._admission(norms), float(big)

    def _screen(self, B):
        """The admission mask (H, m) of a validated block's rows."""
        return self._admission(kernels.scaled_row_sqnorms_batched(B, self._stacked_bounds()[0]))

    def _push(self, B, big):
        m = B.shape[1]
        if m >= self._pend.cap:
            self._flush_all()
            self._each_head(lambda h, st: st.push(B[h], big))
            self._changed()
            return
        if not self._pend.fits(m, B.dtype):
            self._flush_all()
        self._pend.add(B, big)

    def _flush_all(self):
        """Absorb the shared buffer into every head's factor: batched across heads where possible.

        Also hands any stacked candidate chunk to the heads, so that after it
        every head's :class:`Stream` holds all its rows.
        """
        self._seal_all()
        self._flush_sums()
        n = self._pend.n
        if n:
            pend, big = self._pend.take()
            for st in self._streams:
                st.flush()  # rows fed to a head directly through head(h) come first
            todo = self._batched_update(pend, n, big)
            if todo:
                self._each_head(lambda h, st: st.factor.update(pend[h], big) if h in todo else None)
            self._changed()
        else:
            for st in self._streams:
                if st.pending.n:  # rows fed to a head directly through head(h)
                    self._each_head(lambda h, st: st.flush())
                    self._changed()
                    break

    def _batched_update(self, pend, n, big) -> set:
        """Tier 1 of :meth:`streamlev._factor.Factor.update` for all heads at once; the heads left to do.

        Per head the same arithmetic as the single-head update — C = BᵀB
        (heads split over threads), G = R⁻ᵀCR⁻¹, I + G = UᵀU, R ← UR — with
        the d x d steps as stacked operations, so one flush costs a handful of
        numpy calls instead of a few dozen per head.  Heads whose factor is not
        in the tier-1 regime, whose buffer is large compared with their rows,
        or whose update is refused (trace or Cholesky test) are returned and
        updated one by one — all heads when the buffer holds fewer than
        FAST_MIN_ROWS_PER_DIM·d rows (wide heads, d > 256 with the 2^18-entry
        buffer), which Householder takes for less.
        """
        facs = [st.factor for st in self._streams]
        if n < FAST_MIN_ROWS_PER_DIM * self.dim:  # too few rows for the d³ work to pay (wide heads): Householder
            return set(range(self.heads))
        fast_ok_many(facs)  # the per-head fast-path tests, their column norms stacked
        ok = [h for h, f in enumerate(facs) if f.gram_tier(big) and n <= f.fast_rows()]
        rest = set(range(self.heads)) - set(ok)
        if len(ok) < 2:
            return rest | set(ok)

        def grams(a, b):
            return [gram(pend[ok[i]]) for i in range(a, b)]

        C = np.stack([c for part in split_run(grams, len(ok), parts_for(len(ok), 1)) for c in part])
        refused = whitened_update_many([facs[h] for h in ok], C, n)
        return rest | {ok[i] for i in refused}

    def _each_head(self, fn):
        """``[fn(h, stream) for every head]``, in order, on the calling thread.

        Per-head updates, evictions and results are mostly short numpy and
        LAPACK calls that hold the GIL; run on two threads they are slower
        than on one, so only the Gram products of :meth:`_batched_update` are
        split over threads.
        """
        return [fn(h, st) for h, st in enumerate(self._streams)]

    # -- results ----------------------------------------------------------------------------------
    def universal_set(self, head: int | None = None) -> list[np.ndarray] | np.ndarray:
        """Sorted int64 ids of each head's universal set (a list), or of one head."""
        self._flush_all()
        if head is not None:
            return self._streams[head].universal_set()
        return self._each_head(lambda h, st: st.universal_set())

    def merge(self, other: MultiHeadLeverage) -> MultiHeadLeverage:
        """Merge another multi-head sketch of disjoint rows (head by head).

        Returns
        -------
        self
        """
        if not isinstance(other, MultiHeadLeverage):
            raise TypeError(f"can only merge another MultiHeadLeverage, got {type(other).__name__}")
        if other.heads != self.heads:
            raise ValueError(f"cannot merge sketches with different numbers of heads: {self.heads} vs {other.heads}")
        self._check_merge(other)
        self._seal_all()
        other._seal_all()  # a no-op for other's rows and answers
        self._streams[0].check_mergeable(other._streams[0])
        check_merge_ids(self._ids, other._ids)
        for a, b in zip(self._streams[1:], other._streams[1:]):
            a.check_mergeable(b)
        self._flush_all()
        other._flush_all()  # a no-op for other's rows and answers
        for a, b in zip(self._streams, other._streams):
            a.absorb(b)
        self._ids.absorb(other._ids)
        self._changed()
        return self

    def to_bytes(self) -> bytes:
        """Serialise all heads (the format of :mod:`streamlev.serialize`).

        Canonical, as :meth:`OnlineLeverage.to_bytes`: every head's factor
        holds every row fed (buffered rows absorbed in place) and its
        candidates are exactly its universal set, sorted by id.
        """
        self._flush_all()
        arrays = {
            f"head{h}": np.frombuffer(pack_stream(st, self._ids, self.start), dtype=np.uint8)
            for h, st in enumerate(self._streams)
        }
        return serialize.pack(self._FAMILY, {"heads": self.heads}, arrays)

    def _copy(self) -> MultiHeadLeverage:
        """An independent copy of the whole state (the heads' views are not copied)."""
        state = {k: v for k, v in self.__dict__.items() if k != "_views"}
        obj = MultiHeadLeverage.__new__(MultiHeadLeverage)
        obj.__dict__.update(copy.deepcopy(state))
        obj._views = [None] * self.heads
        return obj

    @classmethod
    def from_bytes(cls, data: bytes) -> MultiHeadLeverage:
        """Restore from :meth:`to_bytes`; ``ValueError`` on any corruption."""
        meta, arrays = serialize.unpack(data, cls._FAMILY)
        heads = meta.get("heads")
        if (
            set(meta) != {"heads"}
            or not isinstance(heads, int)
            or isinstance(heads, bool)
            or heads < 1
            or heads != len(arrays)
            or set(arrays) != {f"head{h}" for h in range(heads)}
        ):
            raise ValueError("not a valid streamlev sketch: inconsistent multi-head header")
        subs = [stream_from_bytes(arrays[f"head{h}"].tobytes()) for h in range(heads)]
        first, ids, start = subs[0]
        for st, ledger, st_start in subs[1:]:
            if (st.dim, st.eps, st.ridge, st_start) != (first.dim, first.eps, first.ridge, start):
                raise ValueError("not a valid streamlev sketch: heads disagree on dim/eps/ridge/start")
            if not ledger.same(ids):  # the heads share their row ids
                raise ValueError("not a valid streamlev sketch: heads disagree on their row ids")
        obj = cls.__new__(cls)
        obj.heads = heads
        obj.dim, obj.eps, obj.ridge, obj.start = first.dim, first.eps, first.ridge, start
        obj._init_shared([st for st, _, _ in subs], ids)
        return obj
