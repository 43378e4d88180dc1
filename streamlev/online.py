"""One-pass exact universal set: :class:`OnlineLeverage`.

Why one pass is exact (DESIGN.md §1.6).  For a fixed row j, its (ridge)
leverage score with respect to a prefix of the stream never increases as more
rows arrive.  So

* a row whose score with respect to the rows seen so far (its own block
  included) is below eps can never be in the final set: it is dropped;
* a candidate whose score drops below eps can never come back: it is evicted;
* every row of the final set is admitted when it arrives and never evicted.

At any moment the candidates, re-scored against the current factor, are
exactly the universal set of all rows seen so far.  Memory: the d x d factor,
the candidates — at most rank/eps right after each eviction; re-scoring (an
eviction) runs once their number has doubled and exceeds rank/eps, so between
evictions there are at most max(2·rank/eps, 256) plus one block — one block,
and for small blocks a buffer of at most :func:`pending_rows` rows.  Nothing is
O(n).

How the work is kept small (issue 4, ``benchmarks/run.py``):

* *admission by a rigorous bound*: a row is admitted when an upper bound on
  its prefix score reaches eps (:meth:`streamlev._factor.Factor.upper`, one
  O(d) pass per row); dropping a row whose bound is below eps is exact, and
  admitted rows are decided exactly at the next eviction;
* *evictions screened on both sides* (:meth:`~streamlev._factor.Factor.classify`):
  only candidates whose score is not decided by the bounds are scored;
* *deferred factor updates*: rows of small blocks are buffered and absorbed
  in one update (a bound computed before them still bounds every later
  score, so admission does not wait); every result (sets, scores, bytes,
  merges) absorbs the buffer first.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import serialize
from ._factor import Factor, admit, admit_threshold, qr_r, whiten
from ._validate import as_block, check_dim, check_eps, check_positive_int, check_ridge

__all__ = ["MultiHeadLeverage", "OnlineLeverage"]

#: Do not re-score candidates before there are this many (amortises tiny blocks).
_MIN_RESCORE = 256
#: Candidate parts are joined into one array after an eviction leaves more than this many.
_MAX_PARTS = 256
#: Row ids are int64.
_ID_MAX = 2**63 - 1
#: Rows per sub-block when computing sequential online scores (an s x s QR each).
_ONLINE_SUB = 64


#: Entries of the buffer of small blocks of one OnlineLeverage (:func:`pending_rows`): 16 MB of float64 keys.
PENDING_ENTRIES = 1 << 21
#: The same per head of a MultiHeadLeverage, whose heads share the arithmetic of a block (12 heads: 24 MB).
HEAD_PENDING_ENTRIES = 1 << 18


def pending_rows(dim: int, entries: int = PENDING_ENTRIES) -> int:
    """Rows of small blocks held back before one factor update: 64·d, at most ``entries`` entries, at least 256.

    A whitened factor update costs about 6·d³ flops (triangular inverse,
    R⁻ᵀCR⁻¹, Cholesky, U·R) on top of the ~m·d² of its m rows' Gram matrix,
    so blocks of fewer rows than this are collected into one update of this
    many; larger blocks are absorbed at once.  (Updates of fewer than 4·d
    rows go by Householder instead, ~2·m·d²: Factor.update.)  With the default 2^21 entries
    (16 MB of float64 keys, 8 MB of float32) an update takes 64·d rows up to
    d = 181 and at least 8·d rows up to d = 512, so the d³ work stays a small
    share of the Gram work where it used to dominate.  Measured (one-off
    script, OnlineLeverage fed 256-row blocks of Gaussian keys, two rounds):
    d = 256, 2·10^5 rows: 0.78-0.80 s against 1.73-1.76 s with the former
    2^18 entries (1,024 rows); d = 512, 10^5 rows: 3.8-4.1 s against
    8.5 s (512 rows); d = 1024, 3·10^4 rows: 21.8 s against 34.5 s (5.2 s
    since the Householder tier uses dtpqrt, README "Wide keys").  At d <= 64
    nothing changed (64·d rows).
    """
    return int(max(256, min(64 * dim, entries // max(1, dim))))


def candidate_chunk_rows(dim: int, eps: float) -> int:
    """Rows per candidate chunk: ~2^18 entries, but no more than the d/eps keys a universal set can hold."""
    return int(min(max(1024, (1 << 18) // dim), max(256, dim / eps)))


def _grow(buf, used, need, *, cap, dtype, tail, lead=()):
    """A row buffer (lead..., rows, tail...) holding at least ``need`` rows, at most ``cap``, growing geometrically.

    Small streams keep small buffers (the first rows allocate what they need);
    the first ``used`` rows are kept.
    """
    axis = len(lead)
    have = 0 if buf is None or buf.dtype != dtype else buf.shape[axis]
    if need <= have:
        return buf
    new = np.empty(lead + (min(cap, max(need, 2 * have, 64)),) + tail, dtype=dtype)
    if used:
        new[(slice(None),) * axis + (slice(0, used),)] = buf[(slice(None),) * axis + (slice(0, used),)]
    return new


def _right_sized(buf, used, axis=0):
    """The first ``used`` rows of a chunk along ``axis``: a view when at least half full, else a compact copy."""
    rows = buf[(slice(None),) * axis + (slice(0, used),)]
    return rows if 2 * used >= buf.shape[axis] else rows.copy()


class _IdRanges:
    """Half-open id intervals seen so far, coalesced; ``None`` once too fragmented to track."""

    MAX = 4096

    def __init__(self, arr=None):
        self.iv = np.zeros((0, 2), dtype=np.int64) if arr is None else np.asarray(arr, dtype=np.int64)
        self.tracked = True

    @staticmethod
    def from_ids(ids: np.ndarray) -> np.ndarray:
        m = ids.size
        if m and int(ids[-1]) - int(ids[0]) == m - 1 and (m < 3 or bool(np.all(np.diff(ids) == 1))):
            return np.array([[ids[0], int(ids[-1]) + 1]], dtype=np.int64)  # consecutive: no sort
        s = np.sort(ids)
        if s.size == 0:
            return np.zeros((0, 2), dtype=np.int64)
        brk = np.flatnonzero(np.diff(s) != 1) + 1
        lo = s[np.concatenate([[0], brk])]
        hi = s[np.concatenate([brk - 1, [s.size - 1]])] + 1
        return np.stack([lo, hi], axis=1)

    @staticmethod
    def overlaps(a: np.ndarray, b: np.ndarray) -> bool:
        if a.size == 0 or b.size == 0:
            return False
        # Interval lists are sorted and disjoint: check each b interval against a.
        idx = np.searchsorted(a[:, 0], b[:, 1], side="left")  # a intervals starting before b's end
        prev = np.maximum(idx - 1, 0)
        hit = (idx > 0) & (a[prev, 1] > b[:, 0])
        return bool(hit.any())

    @staticmethod
    def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        iv = np.concatenate([a, b]) if a.size else b
        if iv.shape[0] <= 1:
            return iv.copy()
        iv = iv[np.argsort(iv[:, 0], kind="stable")]
        lo, hi = iv[:, 0], np.maximum.accumulate(iv[:, 1])
        start = np.concatenate([[True], lo[1:] > hi[:-1]])
        grp = np.cumsum(start) - 1
        out = np.empty((int(grp[-1]) + 1, 2), dtype=np.int64)
        out[:, 0] = lo[start]
        last = np.concatenate([np.flatnonzero(start)[1:] - 1, [lo.size - 1]])
        out[:, 1] = hi[last]  # hi is a running maximum, so a group's end is at its last member
        return out


class OnlineLeverage:
    """One-pass, exact ε-universal set of a stream of keys (ridge or pseudo-inverse leverage).

    Parameters
    ----------
    dim : int
        Key dimension d.
    eps : float in (0, 1]
        Attention threshold: the set is ``{i : τ_i >= eps}`` over all rows seen.
    ridge : float, default 0.0
        λ >= 0.  ``ridge > 0`` uses ridge leverage τ_i = k_iᵀ(KᵀK + λI)⁻¹k_i;
        ``ridge = 0`` pseudo-inverse leverage with the rank tolerance of
        :func:`streamlev.leverage_scores`.
    start : int, default 0
        Id of the first row when ids are not given.

    Attributes
    ----------
    n_seen : int
        Rows fed so far.
    n_candidates : int
        Candidate keys currently stored (>= the size of the universal set).
    nbytes : int
        Bytes held by the factor and the candidates.

    Notes
    -----
    Guarantee: :meth:`universal_set` returns exactly ``{i : τ_i >= eps}`` for
    the rows seen so far — identical to :func:`streamlev.universal_set` on the
    concatenated rows — whatever the block sizes, for every partition of the
    rows into merged sketches, and in any merge order (up to keys whose score
    lies within rounding, ~1e-10 relative, of eps).  The factor is updated by
    Householder QR of ``[R; block]`` (TSQR) or by whitened block updates once
    it is well conditioned (:meth:`streamlev._factor.Factor.update`), so scores
    are QR-grade accurate and invariant to column scaling.  Rows are admitted
    by a rigorous upper bound on their prefix score and decided exactly at the
    next eviction; blocks smaller than :func:`pending_rows` rows are buffered
    and absorbed together, and every result includes them.

    Examples
    --------
    >>> import numpy as np, streamlev
    >>> sk = streamlev.OnlineLeverage(8, eps=0.05)
    >>> for block in np.array_split(np.random.default_rng(0).standard_normal((1000, 8)), 7):
    ...     _ = sk.update(block)
    >>> sk.universal_set().dtype
    dtype('int64')
    """

    _FAMILY = "OnlineLeverage"

    def __init__(self, dim, eps, *, ridge=0.0, start=0):
        self.dim = check_dim(dim)
        self.eps = check_eps(eps)
        self.ridge = check_ridge(ridge)
        if isinstance(start, (bool, np.bool_)) or not isinstance(start, numbers.Integral):
            raise TypeError(f"start must be an integer id, got {type(start).__name__}")
        self.start = int(start)
        if not -_ID_MAX <= self.start < _ID_MAX:
            raise ValueError(f"start must fit in int64, got {start}")
        self._next_id = self.start
        self._factor = Factor(self.dim, self.ridge)
        self._dtype = None  # storage dtype of candidate keys, fixed by the first block
        self._parts = []  # candidate (keys, ids) arrays, see _append
        self._tail = None  # [keys buffer, ids buffer, rows used]: the chunk small appends fill
        self._count = 0
        self._clean = 0  # candidate count right after the last eviction
        self._ranges = _IdRanges()
        self._pend = None  # rows of small blocks not yet in the factor (see _push)
        self._npend = 0
        self._pend_big = None  # largest |entry| of the buffered rows (None: unknown)
        self._pcap = pending_rows(self.dim)
        self.last_online_scores_ = None
        self.last_online_u_ = None

    # -- properties -----------------------------------------------------------------------------
    @property
    def n_seen(self) -> int:
        """Number of rows fed so far (merged sketches included)."""
        return self._factor.n + self._npend

    @property
    def n_candidates(self) -> int:
        """Number of candidate keys stored."""
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes of sketch state: factor, candidate keys and ids, id ranges."""
        pend = 0 if self._pend is None else self._pend.nbytes
        cand = sum(k.nbytes + i.nbytes for k, i in self._parts)
        if self._tail is not None:
            cand += self._tail[0].nbytes + self._tail[1].nbytes
        return int(self._factor.R.nbytes + cand + self._ranges.iv.nbytes + pend)

    @property
    def rank(self) -> int:
        """Numerical rank of the rows seen (d when ridge > 0)."""
        self._flush()
        return self._factor.rank

    def logdet(self) -> float:
        """Ln det(I + KᵀK/λ) of the rows seen (ridge > 0), from the factor.

        Equals Σ_i ln(1 + u_i) over the sequential online scores u_i of every
        row — the checksum DESIGN.md §1.7 gives.
        """
        if self.ridge <= 0:
            raise ValueError("logdet needs ridge > 0; create the sketch with ridge=λ")
        self._flush()
        return self._factor.logdet_ridge()

    def __repr__(self) -> str:
        return (
            f"OnlineLeverage(dim={self.dim}, eps={self.eps:g}, ridge={self.ridge:g}, "
            f"n_seen={self.n_seen}, n_candidates={self.n_candidates})"
        )

    # -- input checks (no mutation) --------------------------------------------------------------
    def _check_ids(self, ids, m: int) -> np.ndarray:
        if ids is None:
            if self._next_id + m > _ID_MAX:
                raise ValueError(
                    f"consecutive ids would pass the int64 limit ({self._next_id} + {m} rows); "
                    f"give explicit ids or a smaller start"
                )
            return np.arange(self._next_id, self._next_id + m, dtype=np.int64)
        arr = np.asarray(ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.size == 0 and m == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.ndim != 1 or arr.shape[0] != m:
            raise ValueError(f"ids must be a 1-D array with one id per row ({m}), got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        if arr.dtype == np.uint64 and m and int(arr.max()) >= _ID_MAX:
            raise ValueError(f"ids must fit in int64 (< {_ID_MAX}), got {int(arr.max())}")
        arr = arr.astype(np.int64)
        if m > 1 and np.unique(arr).size != m:
            raise ValueError("ids within a block must be distinct; every row needs its own id")
        if self._ranges.tracked and _IdRanges.overlaps(self._ranges.iv, _IdRanges.from_ids(arr)):
            raise ValueError("some ids were already fed to this sketch; every row needs a distinct id")
        return arr

    def _prepare(self, X, ids):
        B, big = as_block(X, self.dim, with_max=True)
        return B, self._check_ids(ids, B.shape[0]), big

    # -- candidate storage ------------------------------------------------------------------------
    # Candidates are a list of parts (keys, ids) plus an open tail chunk that small appends fill:
    # appending costs one copy of the admitted rows and never re-allocates what is stored, and a
    # stream of small blocks still makes parts of ~2^18 entries.  An eviction filters each part on
    # its own (no joined copy of all candidates, so memory peaks at the candidates themselves);
    # parts are joined only when there are many of them or a result needs one array.
    def _storage_dtype(self, B):
        cur = self._dtype if self._dtype is not None else (self._parts[0][0].dtype if self._parts else None)
        if cur is None or (cur == np.float32 and B.dtype == np.float64):
            return B.dtype
        return cur

    def _append(self, B, ids, *, copy=True):
        """Add candidate rows; ``copy=False`` when B and ids are already private copies."""
        k = B.shape[0]
        if k == 0:
            return
        dt = self._storage_dtype(B)
        if self._dtype is None or dt != self._dtype:  # (np.dtype("float64") == None is True!)
            self._seal()
            self._dtype = dt
        cap = candidate_chunk_rows(self.dim, self.eps)
        a = 0
        while a < k:
            if self._tail is None:
                if k - a >= cap:  # a long run of rows is a part of its own
                    rest_k, rest_i = B[a:], ids[a:]
                    self._parts.append(
                        (np.array(rest_k) if copy or a else rest_k, np.array(rest_i) if copy or a else rest_i)
                    )
                    break
                start = min(cap, max(64, k - a))  # grows up to cap: a few candidates hold a small chunk
                self._tail = [np.empty((start, self.dim), dtype=dt), np.empty(start, dtype=np.int64), 0]
            buf, ib, used = self._tail
            if used == buf.shape[0]:  # full but below cap: grow geometrically
                size = min(cap, 2 * used)
                self._tail = [
                    _grow(buf, used, size, cap=cap, dtype=dt, tail=(self.dim,)),
                    _grow(ib, used, size, cap=cap, dtype=np.int64, tail=()),
                    used,
                ]
                buf, ib, used = self._tail
            take = min(k - a, buf.shape[0] - used)
            buf[used : used + take] = B[a : a + take]
            ib[used : used + take] = ids[a : a + take]
            self._tail[2] = used + take
            a += take
            if used + take == cap:
                self._parts.append((buf, ib))
                self._tail = None
        self._count += k

    def _add_part(self, keys, ids):
        """Append candidate rows already stored elsewhere (a MultiHeadLeverage chunk) as one part; counts unchanged."""
        self._seal()
        dt = self._storage_dtype(keys)
        if self._dtype is None or dt != self._dtype:
            self._dtype = dt
        self._parts.append((keys, ids))

    def _seal(self):
        """Close the open tail chunk into a part (right-sized when mostly empty)."""
        if self._tail is not None:
            buf, ib, used = self._tail
            self._tail = None
            if used:
                self._parts.append((_right_sized(buf, used), _right_sized(ib, used)))

    def _joined(self):
        """(keys, ids) of all candidates as two arrays (the parts are replaced by the joined one)."""
        self._seal()
        dt = self._dtype if self._dtype is not None else np.float64
        if not self._parts:
            return np.zeros((0, self.dim), dtype=dt), np.zeros(0, dtype=np.int64)
        if len(self._parts) > 1 or self._parts[0][0].dtype != dt:
            keys = np.concatenate([k for k, _ in self._parts], dtype=dt)
            ids = np.concatenate([i for _, i in self._parts]).astype(np.int64, copy=False)
            self._parts = [(keys, ids)]
        return self._parts[0]

    def _all_ids(self) -> np.ndarray:
        self._seal()
        if len(self._parts) == 1:
            return self._parts[0][1]
        return np.concatenate([i for _, i in self._parts]) if self._parts else np.zeros(0, dtype=np.int64)

    def _evict(self):
        """Absorb pending rows, then keep the candidates whose score is still >= eps (exact).

        Candidates decided by the two-sided bounds are not scored; the others
        are scored together (:meth:`streamlev._factor.Factor.classify_parts`).
        Each part keeps its own surviving rows, so no joined copy of all
        candidates is made.
        """
        self._flush()
        self._seal()
        if self._count:
            from ._kernels import compact_rows  # noqa: PLC0415

            masks = self._factor.classify_parts([k for k, _ in self._parts], self.eps)
            parts, kept = [], 0
            for (keys, ids), keep in zip(self._parts, masks):
                k = int(np.count_nonzero(keep))
                if k == keys.shape[0]:
                    parts.append((keys, ids))
                elif k and 4 * k >= keys.shape[0] and keys.flags.writeable and keys.flags.c_contiguous:
                    # A quarter or more stays: move those rows to the front of the part's own memory (no new
                    # allocation; the part never holds more than 4x its rows, and never more than before).
                    # ids may be shared by the heads of a MultiHeadLeverage chunk, so they are filtered.
                    compact_rows(keys, keep)
                    parts.append((keys[:k], ids[keep]))
                elif k:
                    parts.append((keys[keep], ids[keep]))
                kept += k
            self._parts, self._count = parts, kept
            if len(parts) > _MAX_PARTS:
                self._joined()
        self._clean = self._count

    def _evict_due(self) -> bool:
        # Re-score when the candidates doubled since the last eviction — unless they are still no
        # more than rank/eps, the size the universal set itself can reach (nothing to gain yet).
        return self._count > max(2 * self._clean, _MIN_RESCORE) and self._count * self.eps > self._factor.rank

    def _maybe_evict(self):
        if self._evict_due():
            if self._npend and self._count * self.eps <= min(self.dim, self._factor.n + self._npend):
                # The test used the rank before the buffered rows, which may lift it past count·eps (at the
                # first eviction it is 0): absorb them — the eviction would — and ask again.  Saves evictions
                # that keep every candidate (at d = 2048 one cost an SVD with vectors, 3.9 s).
                self._flush()
                if not self._evict_due():
                    return
            self._evict()

    # -- deferred factor updates --------------------------------------------------------------------
    def _push(self, B, big=None):
        """Add rows to the factor: blocks of at least ``pending_rows(dim)`` rows at once, smaller ones buffered.

        ``big`` is the largest |entry| of B when the caller knows it (from validation).
        """
        m = B.shape[0]
        if m >= self._pcap:
            self._flush()
            self._factor.update(B, big)
            return
        if self._pend is not None and (self._npend + m > self._pcap or self._pend.dtype != B.dtype):
            self._flush()
        self._pend = _grow(self._pend, self._npend, self._npend + m, cap=self._pcap, dtype=B.dtype, tail=(self.dim,))
        if self._npend == 0:
            self._pend_big = 0.0
        self._pend_big = None if big is None or self._pend_big is None else max(self._pend_big, big)
        self._pend[self._npend : self._npend + m] = B
        self._npend += m

    def _flush(self):
        """Absorb the buffered rows into the factor (a no-op when there are none)."""
        if self._npend:
            n = self._npend
            self._npend = 0
            self._factor.update(self._pend[:n], self._pend_big)

    # -- the stream -----------------------------------------------------------------------------
    def update(self, X, ids=None):
        """Feed a block of rows.

        Parameters
        ----------
        X : array_like, shape (m, dim) or (dim,)
            Keys.  Validated before anything changes: a refused block leaves the
            sketch exactly as it was.
        ids : array_like of int, shape (m,), optional
            Row ids; by default consecutive integers continuing from ``start``.

        Returns
        -------
        self
        """
        B, ids, big = self._prepare(X, ids)
        self._ingest(B, ids, big=big)
        return self

    def _ingest(self, B, ids, online_u=None, big=None):
        """Admit, record and absorb one validated block.

        ``online_u`` (exact sequential online scores, from :meth:`update_scores`)
        admits by the exact prefix scores and absorbs at once; otherwise rows
        are admitted by the rigorous upper bound of the factor (all of them
        while there is none yet) and absorbed through :meth:`_push`.
        """
        m = B.shape[0]
        if m == 0:
            return
        if online_u is None and m >= self._pcap:
            # A big block: absorb it now, computing the screening norms in the same sweep as its Gram
            # product (the bound is taken before the update, so it bounds the rows' prefix scores).
            self._flush()
            b = self._factor.bound()
            t = self._factor.update(B, big, screen=b)
            self._admit(B, ids, None if b is None else admit(t * b.up, self.eps))
            self._maybe_evict()
            return
        if online_u is not None:
            self._admit(B, ids, admit(online_u, self.eps))
            self._factor.update(B, big)
        else:
            ub = self._factor.upper(B)
            self._admit(B, ids, None if ub is None else admit(ub, self.eps))
            self._push(B, big)
        self._maybe_evict()

    def _admit(self, B, ids, keep):
        """Record the block's ids and keep its admitted rows (``keep`` None: all) as candidates."""
        self._record_ids(ids)
        if keep is None or keep.all():
            self._append(B, ids)
        elif keep.any():
            self._append(B[keep], ids[keep], copy=False)

    def _record_ids(self, ids, *, consecutive=False):
        """Add a block's ids to the id ranges (``consecutive``: they are known to be ids[0], ids[0] + 1, ...)."""
        if consecutive:
            new = np.array([[ids[0], ids[-1] + 1]], dtype=np.int64)
        else:
            new = _IdRanges.from_ids(ids)
        iv = self._ranges.iv
        if new.shape[0] == 1 and iv.shape[0] and new[0, 0] >= iv[-1, 1]:  # the usual case: ids run on
            if new[0, 0] == iv[-1, 1]:
                iv = iv.copy()
                iv[-1, 1] = new[0, 1]
            else:
                iv = np.concatenate([iv, new])
            self._ranges.iv = iv
        else:
            self._ranges.iv = _IdRanges.union(iv, new)
        if self._ranges.iv.shape[0] > _IdRanges.MAX:
            self._ranges = _IdRanges()
            self._ranges.tracked = False
        self._next_id = max(self._next_id, int(ids[-1] if consecutive else ids.max()) + 1)

    def _record_run(self, start: int, stop: int) -> None:
        """:meth:`_record_ids` of the consecutive ids start..stop-1, without an id array when they run on."""
        iv = self._ranges.iv
        if iv.shape[0] and start == iv[-1, 1]:
            iv = iv.copy()
            iv[-1, 1] = stop
            self._ranges.iv = iv
            self._next_id = max(self._next_id, stop)
        else:
            self._record_ids(np.arange(start, stop, dtype=np.int64), consecutive=True)

    def update_scores(self, X, ids=None) -> np.ndarray:
        """Feed a block and return the online ridge leverage scores of its rows.

        The score of row i is τ_i^on = u_i / (1 + u_i) with
        u_i = k_iᵀ(λI + Σ_{j<i} k_j k_jᵀ)⁻¹k_i over every row fed before it —
        exactly what feeding the rows one at a time would give.  τ_i^on is an
        upper bound on row i's final ridge score, and Σ ln(1 + u_i) over all
        rows equals :meth:`logdet`.  Costs an extra QR of a (d + s) x s matrix
        per s = 64 rows.  Requires ridge > 0.  The values are also stored in
        ``last_online_scores_``, and the u_i themselves in ``last_online_u_``
        (u/(1+u) rounds to 1 when u is huge; use u for the log-det checksum).

        Returns
        -------
        numpy.ndarray of float64, shape (m,)
        """
        if self.ridge <= 0:
            raise ValueError(
                "online ridge leverage scores need ridge > 0 "
                "(with λ = 0 the first rows' scores are undefined); create the sketch with ridge=λ"
            )
        B, ids, big = self._prepare(X, ids)
        self._flush()
        m = B.shape[0]
        u = np.empty(m)
        for a in range(0, m, _ONLINE_SUB):
            b = min(m, a + _ONLINE_SUB)
            Rl = self._factor.scoring_factor()  # factor of λI + rows so far
            # Pivots of I + Y Yᵀ, Y = B_sub R⁻¹, from a QR of [Yᵀ; I] (no Gram matrix formed).
            sub = B[a:b]
            s = b - a
            Yt = whiten(sub, self._factor._scoring_inv(Rl))  # (s, d) = sub R⁻¹
            A = np.zeros((self.dim + s, s), order="F")
            A[: self.dim] = Yt.T
            A[self.dim :] = np.eye(s)
            piv = np.diag(qr_r(A)) ** 2
            u[a:b] = np.maximum(piv - 1.0, 0.0)
            self._ingest(sub, ids[a:b], online_u=u[a:b], big=big)
        u = np.maximum(u, 0.0)
        scores = u / (1.0 + u)
        self.last_online_scores_ = scores
        self.last_online_u_ = u
        return scores

    # -- results ----------------------------------------------------------------------------------
    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids ``{i : τ_i >= eps}`` over every row seen so far (exact)."""
        self._evict()
        return np.sort(self._all_ids())

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, leverage scores) of the current universal set, sorted by id."""
        self._evict()
        keys, ids = self._joined()
        order = np.argsort(ids)
        tau = np.clip(self._factor.scores(keys), 0.0, 1.0)
        return ids[order], tau[order]

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, keys) of the current universal set, sorted by id."""
        self._evict()
        keys, ids = self._joined()
        order = np.argsort(ids)
        return ids[order], keys[order]

    # -- merge ------------------------------------------------------------------------------------
    def _check_compatible(self, other):
        if not isinstance(other, OnlineLeverage):
            raise TypeError(f"can only merge another OnlineLeverage, got {type(other).__name__}")
        for name in ("dim", "eps", "ridge"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                raise ValueError(
                    f"cannot merge sketches with different {name}: {a!r} vs {b!r}; create both with the same {name}"
                )
        if other is self:
            raise ValueError("cannot merge a sketch with itself (its rows would count twice)")
        if self._ranges.tracked and other._ranges.tracked and _IdRanges.overlaps(self._ranges.iv, other._ranges.iv):
            raise ValueError(
                "cannot merge sketches whose row ids overlap; give each shard its own "
                "id range (start=...) or explicit ids"
            )
        mine = self._all_ids()
        theirs = other._all_ids()
        if np.intersect1d(mine, theirs).size:
            raise ValueError("cannot merge sketches whose candidate ids overlap; rows must be disjoint")

    def merge(self, other):
        """Absorb another sketch of a disjoint set of rows (same dim, eps and ridge).

        Exact: U(all rows) ⊆ U(shard 1) ∪ U(shard 2) because a score with respect
        to a subset of the rows is at least the score with respect to all rows.
        The factors merge by a QR of ``[R₁; R₂]``; the union of candidates is
        re-scored.  ``other`` is not modified.

        Returns
        -------
        self
        """
        self._check_compatible(other)
        self._flush()
        other._flush()  # a no-op for other's rows and answers: the buffer joins its factor
        self._factor.merge(other._factor)
        other._seal()
        for keys, ids in other._parts:
            self._append(keys, ids)
        if self._ranges.tracked and other._ranges.tracked:
            self._ranges.iv = _IdRanges.union(self._ranges.iv, other._ranges.iv)
        else:
            self._ranges = _IdRanges()
            self._ranges.tracked = False
        self._next_id = max(self._next_id, other._next_id)
        self._evict()
        return self

    # -- serialisation ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise the sketch (format documented in :mod:`streamlev.serialize`).

        Buffered rows are absorbed into the factor first, so the bytes hold
        every row fed (the format has no buffer).
        """
        self._flush()
        keys, ids = self._joined()
        dt = "float32" if self._dtype == np.float32 else "float64"
        meta = {
            "dim": self.dim,
            "eps": self.eps,
            "ridge": self.ridge,
            "start": self.start,
            "next_id": self._next_id,
            "n_seen": self._factor.n,
            "clean": self._clean,
            "key_dtype": dt,
            "has_dtype": self._dtype is not None,
            "ranges_tracked": self._ranges.tracked,
        }
        arrays = {
            "R": self._factor.R,
            "keys": np.ascontiguousarray(keys),
            "ids": ids,
            "ranges": self._ranges.iv,
        }
        return serialize.pack(self._FAMILY, meta, arrays)

    @classmethod
    def from_bytes(cls, data):
        """Restore a sketch written by :meth:`to_bytes`; ``ValueError`` on any corruption."""
        meta, arrays = serialize.unpack(data, cls._FAMILY)
        try:
            return cls._from_state(meta, arrays)
        except (TypeError, KeyError, OverflowError) as exc:
            raise ValueError(f"not a valid streamlev sketch: inconsistent state ({exc})") from None

    @classmethod
    def _from_state(cls, meta, arrays):
        def bad(msg):
            return ValueError(f"not a valid streamlev sketch: {msg}")

        expected = {
            "dim",
            "eps",
            "ridge",
            "start",
            "next_id",
            "n_seen",
            "clean",
            "key_dtype",
            "has_dtype",
            "ranges_tracked",
        }
        if set(meta) != expected or set(arrays) != {"R", "keys", "ids", "ranges"}:
            raise bad("unexpected fields")
        for k in ("dim", "start", "next_id", "n_seen", "clean"):
            if not isinstance(meta[k], int) or isinstance(meta[k], bool):
                raise bad(f"field {k} is not an integer")
            if not -_ID_MAX <= meta[k] <= _ID_MAX:
                raise bad(f"field {k} does not fit in int64")
        d = meta["dim"]
        R, keys, ids, ranges = arrays["R"], arrays["keys"], arrays["ids"], arrays["ranges"]
        # Check shapes against the arrays actually present before allocating anything of size d².
        if not (1 <= d <= 1 << 20) or R.shape != (d, d):
            raise bad(f"dim {d} does not match the stored factor of shape {R.shape}")
        if R.dtype != np.float64 or not np.isfinite(R).all():
            raise bad("factor has the wrong dtype or non-finite values")
        try:
            sk = cls(d, meta["eps"], ridge=meta["ridge"], start=meta["start"])
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
        if np.any(np.tril(R, -1) != 0):
            raise bad("factor is not upper triangular")
        if keys.ndim != 2 or keys.shape[1] != d or ids.shape != (keys.shape[0],) or ids.dtype != np.int64:
            raise bad("candidate arrays have inconsistent shapes")
        want = np.float32 if meta["key_dtype"] == "float32" else np.float64
        if meta["key_dtype"] not in ("float32", "float64") or keys.dtype != want:
            raise bad("candidate key dtype does not match the header")
        if not np.isfinite(keys).all():
            raise bad("candidate keys contain non-finite values")
        if not meta["has_dtype"] and meta["key_dtype"] != "float64":
            # Writers before the fix of has_dtype stored float64 keys with has_dtype=false: still valid.
            raise bad("float32 candidate keys but the header says no key dtype was fixed")
        if np.unique(ids).size != ids.size:
            raise bad("candidate ids repeat")
        if meta["n_seen"] < 0 or keys.shape[0] > meta["n_seen"] or not 0 <= meta["clean"] <= keys.shape[0]:
            raise bad("counts are inconsistent")
        if ranges.ndim != 2 or ranges.shape[1] != 2 or ranges.dtype != np.int64:
            raise bad("id ranges have the wrong shape")
        if not isinstance(meta["ranges_tracked"], bool) or not isinstance(meta["has_dtype"], bool):
            raise bad("flags are not booleans")
        sk._factor.set_state(R, meta["n_seen"])
        sk._dtype = want if meta["has_dtype"] else None
        sk._parts = [(keys, ids)] if keys.shape[0] else []
        sk._count = keys.shape[0]
        sk._clean = meta["clean"]
        sk._next_id = meta["next_id"]
        sk._ranges = _IdRanges(ranges)
        sk._ranges.tracked = meta["ranges_tracked"]
        return sk

    # -- pickling goes through the byte format (what Dask and multiprocessing use) ----------------
    def __reduce__(self):
        return (_restore, (self.to_bytes(),))

    def __eq__(self, other):
        return isinstance(other, OnlineLeverage) and self.to_bytes() == other.to_bytes()

    __hash__ = None


def _restore(data):
    return OnlineLeverage.from_bytes(data)


#: Blocks of at least this many rows per head take MultiHeadLeverage._accumulate; smaller ones are copied to the
#: shared row buffer (a kernel call has a fixed cost per head — a BLAS call and d x d sweeps — that a copy of a
#: few rows has not; at 12 heads, d = 64, blocks of 64 rows took about as long either way here).
_ACC_MIN_ROWS = 64
#: ... and only once every head's factor holds at least this many rows per dimension: before, the kernel path's
#: running sums come due after a block or two (a head's update takes at most n·32/d rows, FAST_TRACE_MAX), so it
#: pays a stacked d x d update and a fresh state per block, where the shared buffer takes several blocks per
#: batched update.  Measured (12 heads, fresh Gaussian (12, 256, d) blocks, eps = 0.05, two rounds): d = 256, the
#: first 30 blocks 3.5-3.8 s on the kernel path against 2.2 s on the buffer; d = 128, the first 20 blocks 0.49-0.65 s
#: against 0.28-0.29 s; past that the kernel path is faster (d = 256: 0.03-0.3 s per 10 blocks against 0.14-0.3 s).
_ACC_MIN_ROWS_PER_DIM = 32
#: MultiHeadLeverage updates its factors early, so that its screening bounds stay fresh, once this many rows
#: (over all heads) were admitted since the last update and the rows waiting are at least 1/8 of the factor's:
#: an admitted row costs a copy now and a score at the next eviction, an update of 12 factors with fresh bounds
#: a few ms — about what a few thousand admitted rows cost.
_ADMITTED_FLUSH = 4096
_ADMITTED_FLUSH_FRACTION = 8
#: Blocks of at least this many entries (H·m·d) run the multi-head kernel on numba's threads; smaller ones
#: serially (a 12-head block of one row each costs less than a thread hand-off).
_PARALLEL_MIN_ENTRIES = 1 << 14


class _LazyKernels:
    """The compiled kernels and thread helpers _GramSums calls, imported at first use (numba loads then)."""

    def __getattr__(self, name):
        from . import _kernels, _threads  # noqa: PLC0415

        for mod in (_kernels, _threads):
            if hasattr(mod, name):
                value = getattr(mod, name)
                setattr(self, name, value)
                return value
        raise AttributeError(name)


_k = _LazyKernels()


_NO_IDS = np.zeros(0, dtype=np.int64)


class _GramSums:
    """Per-head running sums of the Gram matrices of rows not yet in the factors (MultiHeadLeverage).

    Each sum is hi + lo + C (upper triangles): C adds up to 16 blocks in plain
    float64, then joins hi + lo by compensated summation
    (:func:`streamlev._kernels.heads_screen_gram`), so however many blocks it
    holds it is within a few units in the last place of the exact sum of the
    blocks' Gram matrices.  ``rows`` counts the rows behind each sum, ``tr`` its
    whitened trace against the factor it will be added to.
    """

    def __init__(self, heads: int, dim: int):
        self.hi = np.zeros((heads, dim, dim))
        self.lo = np.zeros((heads, dim, dim))
        self.C = np.zeros((heads, dim, dim))  # recent blocks, plain sums (joined to hi + lo every 16 blocks)
        self.nrec = np.zeros(heads, dtype=np.int64)
        self.T = np.zeros((heads, dim, dim))  # scratch: a block's Gram matrices when taken apart
        self.rows = np.zeros(heads, dtype=np.int64)
        self.tr = np.zeros(heads)
        self.took = np.zeros(heads, dtype=bool)
        self.kept = np.zeros(heads, dtype=np.int64)  # rows of the last block each head kept
        self._no_tails = {}
        self.admitted = 0  # rows admitted (over all heads) since the sums were last emptied
        self.keep = np.zeros((heads, 0), dtype=bool)

    @property
    def nbytes(self) -> int:
        return int(self.hi.nbytes + self.lo.nbytes + self.C.nbytes + self.T.nbytes + self.keep.nbytes)

    def add(self, X, thr, state, tail, ids, id0):  # noqa: PLR0917
        """Screen and add a block (H, m, d); see :func:`streamlev._kernels.heads_screen_gram` for the result.

        ``tail``: (keys, ids, used) of the candidate tail kept rows are copied
        to; ``ids`` the block's ids or None for id0, id0 + 1, ...
        """
        dinv, up, W, limit, budget = state[:5]
        m = X.shape[1]
        if self.keep.shape[1] < m:
            self.keep = np.zeros((X.shape[0], max(m, 2 * self.keep.shape[1])), dtype=bool)
        tk, tid, used = tail
        args = (
            X,
            dinv,
            up,
            thr,
            W,
            budget,
            self.tr,
            self.hi,
            self.lo,
            self.C,
            self.nrec,
            self.T,
            self.keep[:, :m],
            self.took,
            self.rows,
            limit,
            self.kept,
            tk,
            tid,
            used,
            _NO_IDS if ids is None else ids,
            id0,
        )
        threads = _k.parallel_threads() if X.size >= _PARALLEL_MIN_ENTRIES else 1
        if threads > 1:
            with _k.parallel_region(threads):
                return _k.heads_screen_gram(*args)
        return _k.heads_screen_gram_serial(*args)

    def no_tail(self, dtype):
        """A candidate tail with no room (the kernel then leaves the kept rows to the caller), one per dtype."""
        tail = self._no_tails.get(dtype)
        if tail is None:
            H, d = self.hi.shape[:2]
            tail = self._no_tails[dtype] = (
                np.zeros((H, 0, d), dtype=dtype),
                np.zeros((H, 0), dtype=np.int64),
                np.zeros(H, dtype=np.int64),
            )
        return tail

    def grams(self, heads) -> np.ndarray:
        """The full symmetric sums of ``heads``, stacked."""
        U = np.triu(self.hi[heads] + (self.lo[heads] + self.C[heads]))
        return U + np.triu(U, 1).transpose(0, 2, 1)

    def clear(self, heads) -> None:
        self.admitted = 0
        self.hi[heads] = 0.0
        self.lo[heads] = 0.0
        self.C[heads] = 0.0
        self.nrec[heads] = 0
        self.rows[heads] = 0
        self.tr[heads] = 0.0


class MultiHeadLeverage:
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

    def __init__(self, heads, dim, eps, *, ridge=0.0, start=0):
        self.heads = check_positive_int(heads, "heads")
        self._heads = [OnlineLeverage(dim, eps, ridge=ridge, start=start) for _ in range(self.heads)]
        self._init_shared()

    def _init_shared(self):
        first = self._heads[0]
        self.dim, self.eps, self.ridge, self.start = first.dim, first.eps, first.ridge, first.start
        self._pend = None  # (H, pending_rows, dim) rows of small blocks not yet in the factors
        self._npend = 0
        self._pend_big = 0.0  # largest |entry| of the buffered rows (from validation)
        self._mtail = None  # [(H, rows, dim) keys, ids, rows used]: candidates every head keeps (_append_all)
        self._ktail = None  # [(H, rows, dim) keys, (H, rows) ids, (H,) used]: rows the kernel copies (_accumulate)
        self._pcap = pending_rows(self.dim, HEAD_PENDING_ENTRIES)
        for sk in self._heads:  # rows fed to a head directly (head(h)) are buffered as the shared ones are
            sk._pcap = self._pcap
        self._bounds = None  # stacked per-head screening bounds, refreshed after every factor change
        self._sums = None  # _GramSums: Gram matrices of rows added to no factor yet (see _accumulate)
        self._kstate = None  # what _accumulate needs of the factors' current state (None: stale)
        self._thr = admit_threshold(self.eps)
        self._fresh = False  # the next kernel state takes bounds at the factors' current state

    @property
    def n_seen(self) -> int:
        """Rows fed per head."""
        return self._heads[0].n_seen + self._npend + (0 if self._sums is None else int(self._sums.rows[0]))

    @property
    def n_candidates(self) -> np.ndarray:
        """Candidate count of each head."""
        return np.array([h.n_candidates for h in self._heads])

    @property
    def nbytes(self) -> int:
        """Bytes held by all heads (and the shared buffer of small blocks)."""
        pend = 0 if self._pend is None else self._pend.nbytes
        if self._sums is not None:
            pend += self._sums.nbytes
        if self._mtail is not None:
            pend += self._mtail[0].nbytes + self._mtail[1].nbytes
        if self._ktail is not None:
            pend += self._ktail[0].nbytes + self._ktail[1].nbytes
        return int(sum(h.nbytes for h in self._heads) + pend)

    def head(self, h: int) -> OnlineLeverage:
        """The sketch of head ``h``, holding every row fed so far (it shares state with this object)."""
        self._flush_all()
        return self._heads[h]

    def __repr__(self) -> str:
        return (
            f"MultiHeadLeverage(heads={self.heads}, dim={self.dim}, eps={self.eps:g}, "
            f"ridge={self.ridge:g}, n_seen={self.n_seen})"
        )

    def update(self, X, ids=None):
        """Feed a block of shape (H, m, dim) (or (H, dim) for one row per head).

        Validated as a whole before anything changes; a refused block leaves
        every head as it was.

        Returns
        -------
        self
        """
        from ._validate import as_keys  # noqa: PLC0415

        if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[0] == self.heads:
            X = X[:, None, :]
        if self._accumulate(X, ids):
            return self
        lead = self._heads[0]
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
            ids = lead._check_ids(ids, m)
            if m == 0:
                return self
            B = np.ascontiguousarray(B)
            keep = self._screen(B)
        lead._record_ids(ids, consecutive=consecutive)  # the other heads' id ranges follow in _sync
        fed = self._keep_rows(B, ids, keep)
        if staged is not None:  # the rows are already in the shared buffer
            self._count_pending(m, big)
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
                sk = self._heads[h]
                if full[h]:
                    sk._append(B[h], ids)
                else:
                    kh = keep[h]
                    sk._append(B[h, kh], ids[kh], copy=False)
        return fed

    def _evict_due_heads(self, fed):
        # Only heads that gained candidates can have come due (a flush only raises the rank).
        due = [int(h) for h in fed if self._heads[h]._evict_due()]
        if due:  # evictions score against every row fed
            self._flush_all()
            self._evict_heads(due)

    def _evict_heads(self, heads):
        """Evictions of several heads: their bounds as one stacked SVD, the heads split over the library's threads.

        An eviction is numba kernels (screening, compaction) and BLAS
        products that release the GIL, so heads run in parallel; each head's
        own work is that of :meth:`OnlineLeverage._evict`.
        """
        from ._factor import BOUND_MIN_ROWS_PER_DIM, bounds_many  # noqa: PLC0415
        from ._threads import parts_for, split_run  # noqa: PLC0415

        # the bounds Factor.classify_parts will use (fewer candidates than 8·d are scored without one)
        bounds_many(
            [self._heads[h]._factor for h in heads if self._heads[h]._count >= BOUND_MIN_ROWS_PER_DIM * self.dim],
            fresh=True,
        )

        def part(a, b):
            for h in heads[a:b]:
                self._heads[h]._evict()

        rows = sum(self._heads[h]._count for h in heads)
        split_run(part, len(heads), parts_for(len(heads), 1) if rows >= 1 << 16 else 1)

    # -- the usual block: screened, its Gram matrices added to running sums, no copy ----------------------
    def _kernel_state(self):
        """What :meth:`_accumulate` needs of the factors' current state, or None when it does not apply.

        It applies when every head's factor is in the tier-1 regime of
        :meth:`streamlev._factor.Factor.update` (nonsingular, column-normalised
        condition number <= GRAM_COND_MAX, squares safe) — which also means every
        head has a screening bound —, every factor holds at least
        ``_ACC_MIN_ROWS_PER_DIM·dim`` rows, and no head holds rows of its own
        buffer.  Recomputed after every change of a factor.
        """
        if self._kstate is None:
            from ._factor import FAST_TRACE_MAX, bounds_many, fast_ok_many, rinv_many  # noqa: PLC0415

            facs = [sk._factor for sk in self._heads]
            fast_ok_many(facs)
            if not all(f.gram_tier(0.0) and f.n >= _ACC_MIN_ROWS_PER_DIM * self.dim for f in facs) or any(
                sk._npend for sk in self._heads
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
            self._kstate = (dinv, up, W, limit, FAST_TRACE_MAX, np.array([f.n for f in facs]))
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
        sums with compensated summation (:class:`_GramSums`), and the factors
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
            and X.shape[1] >= _ACC_MIN_ROWS
        ):
            return False
        state = self._kstate if self._kstate is not None else self._kernel_state()
        if not state:
            return False
        lead = self._heads[0]
        m = X.shape[1]
        if ids is not None:
            ids = lead._check_ids(ids, m)  # refuses bad ids before anything changes
        elif lead._next_id + m > _ID_MAX:
            return False  # the general path says why
        sums = self._sums if self._sums is not None else _GramSums(self.heads, self.dim)
        tail = self._ktail
        if tail is not None and (tail[0].dtype != X.dtype or tail[0].shape[1] - int(tail[2].max()) < m):
            self._seal_ktail()
            tail = None
        start = lead._next_id
        done, kept, refused, due = sums.add(X, self._thr, state, tail or sums.no_tail(X.dtype), ids, start)
        if not done:
            return False  # a NaN/inf or an unsafe magnitude: nothing was added; the general path takes it
        self._sums = sums
        if ids is None:
            lead._record_run(start, start + m)
        else:
            lead._record_ids(ids)
        fed = ()
        if kept:
            fed = np.flatnonzero(sums.kept)
            if done == 2:  # the kernel copied them to the tail
                for h in fed:
                    self._heads[h]._count += int(sums.kept[h])
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
                    self._heads[h]._factor.update(X[h])  # new directions: Householder, rows in hand
                self._changed()
        if kept:
            sums.admitted += kept
        if due:
            self._flush_sums()  # all heads at once: one stacked update (the heads fill up at similar rates)
        elif (
            sums.admitted >= _ADMITTED_FLUSH
            and np.all(sums.rows * _ADMITTED_FLUSH_FRACTION >= state[5])
            and np.all(state[5] * self.eps >= self.dim)
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
        from ._kernels import gram_sum_one  # noqa: PLC0415

        sums = self._sums
        if not gram_sum_one(sums.T[h], state[2][h], state[4], sums.hi[h], sums.lo[h], sums.tr[h : h + 1]):
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
        from ._factor import whitened_update_many  # noqa: PLC0415

        facs = [self._heads[h]._factor for h in todo]
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
        for sk in self._heads:
            sk._count += m

    def _seal_ktail(self):
        """Hand the kernel's candidate tail to the heads: each gets its kept rows as a part."""
        tail = self._ktail
        self._ktail = None
        if tail is None:
            return
        tk, tid, used = tail
        for h, sk in enumerate(self._heads):
            k = int(used[h])
            if not k:
                continue
            sk._add_part(_right_sized(tk[h], k), _right_sized(tid[h], k))

    def _seal_all(self):
        """Hand the stacked chunk (and the kernel's tail) to the heads: each gets its rows as parts."""
        self._seal_ktail()
        if self._mtail is None:
            return
        buf, ib, used = self._mtail
        self._mtail = None
        if not used:
            return
        ids = _right_sized(ib, used)
        keys = _right_sized(buf, used, axis=1)
        for h, sk in enumerate(self._heads):
            sk._add_part(keys[h], ids)

    # -- screening and the shared buffer ----------------------------------------------------------
    def _stacked_bounds(self):
        """The heads' screening bounds stacked: dinv (H, d), up (H, 1), and which heads have none.

        A head without a bound (rank-deficient or ill-conditioned so far)
        admits every row; its dinv and up are zero.
        """
        if self._bounds is None:
            from ._factor import bounds_many  # noqa: PLC0415

            bounds = bounds_many([sk._factor for sk in self._heads])
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
        P, n0 = self._pend, self._npend
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
        if m == 0 or m >= self._pcap or n0 + m > P.shape[1]:
            return None
        from ._kernels import scan_screen_rows  # noqa: PLC0415
        from ._validate import MAX_MAGNITUDE  # noqa: PLC0415

        ids = self._heads[0]._check_ids(ids, m)
        P[:, n0 : n0 + m] = X
        norms = np.empty((self.heads, m))
        bad, big = scan_screen_rows(P, n0, n0 + m, self._stacked_bounds()[0], norms)
        if bad >= 0 or not big <= MAX_MAGNITUDE:
            return None
        return P[:, n0 : n0 + m], ids, self._admission(norms), float(big)

    def _screen(self, B):
        """The admission mask (H, m) of a validated block's rows."""
        from ._kernels import scaled_row_sqnorms_batched  # noqa: PLC0415

        return self._admission(scaled_row_sqnorms_batched(B, self._stacked_bounds()[0]))

    def _push(self, B, big):
        m = B.shape[1]
        if m >= self._pcap:
            self._flush_all()
            self._each_head(lambda h, sk: sk._push(B[h], big))
            self._changed()
            return
        if self._pend is not None and (self._npend + m > self._pcap or self._pend.dtype != B.dtype):
            self._flush_all()
        self._pend = _grow(
            self._pend,
            self._npend,
            self._npend + m,
            cap=self._pcap,
            dtype=B.dtype,
            tail=(self.dim,),
            lead=(self.heads,),
        )
        self._pend[:, self._npend : self._npend + m] = B
        self._count_pending(m, big)

    def _count_pending(self, m, big):
        """Count m rows just written after the buffered ones (``big``: their largest |entry|)."""
        self._pend_big = big if self._npend == 0 else max(self._pend_big, big)
        self._npend += m

    def _sync(self):
        """Give every head the id bookkeeping of head 0 (which alone records ids during updates)."""
        lead = self._heads[0]
        for sk in self._heads[1:]:
            sk._ranges.iv = lead._ranges.iv
            sk._ranges.tracked = lead._ranges.tracked
            sk._next_id = lead._next_id

    def _flush_all(self):
        """Absorb the shared buffer into every head's factor: batched across heads where possible.

        Also hands any stacked candidate chunk to the heads, so that after it
        every head is a complete :class:`OnlineLeverage` of its stream.
        """
        self._sync()
        self._seal_all()
        self._flush_sums()
        n = self._npend
        if n:
            self._npend = 0
            pend = self._pend
            for sk in self._heads:
                sk._flush()  # rows fed to a head directly through head(h) come first
            big = self._pend_big
            todo = self._batched_update(pend, n, big)
            if todo:
                self._each_head(lambda h, sk: sk._factor.update(pend[h, :n], big) if h in todo else None)
            self._changed()
        else:
            for sk in self._heads:
                if sk._npend:  # rows fed to a head directly through head(h)
                    self._each_head(lambda h, sk: sk._flush())
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
        from ._factor import FAST_MIN_ROWS_PER_DIM, fast_ok_many, gram, whitened_update_many  # noqa: PLC0415
        from ._threads import parts_for, split_run  # noqa: PLC0415

        facs = [sk._factor for sk in self._heads]
        if n < FAST_MIN_ROWS_PER_DIM * self.dim:  # too few rows for the d³ work to pay (wide heads): Householder
            return set(range(self.heads))
        fast_ok_many(facs)  # the per-head fast-path tests, their column norms stacked
        ok = [h for h, f in enumerate(facs) if f.gram_tier(big) and n <= f.fast_rows()]
        rest = set(range(self.heads)) - set(ok)
        if len(ok) < 2:
            return rest | set(ok)

        def grams(a, b):
            return [gram(pend[ok[i], :n]) for i in range(a, b)]

        C = np.stack([c for part in split_run(grams, len(ok), parts_for(len(ok), 1)) for c in part])
        refused = whitened_update_many([facs[h] for h in ok], C, n)
        return rest | {ok[i] for i in refused}

    def _each_head(self, fn):
        """``[fn(h, head_sketch) for every head]``, in order, on the calling thread.

        Per-head updates, evictions and results are mostly short numpy and
        LAPACK calls that hold the GIL; run on two threads they measured slower
        than one (0.18 s vs 0.09 s for the final sets of 12 heads here), so only
        the Gram products of :meth:`_batched_update` are split over threads.
        """
        return [fn(h, sk) for h, sk in enumerate(self._heads)]

    # -- results ----------------------------------------------------------------------------------
    def universal_set(self, head=None):
        """Sorted int64 ids of each head's universal set (a list), or of one head."""
        self._flush_all()
        if head is not None:
            return self._heads[head].universal_set()
        return self._each_head(lambda h, sk: sk.universal_set())

    def merge(self, other):
        """Merge another multi-head sketch of disjoint rows (head by head).

        Returns
        -------
        self
        """
        if not isinstance(other, MultiHeadLeverage):
            raise TypeError(f"can only merge another MultiHeadLeverage, got {type(other).__name__}")
        if other.heads != self.heads:
            raise ValueError(f"cannot merge sketches with different numbers of heads: {self.heads} vs {other.heads}")
        self._sync()
        other._sync()
        self._seal_all()
        other._seal_all()  # a no-op for other's rows and answers
        for a, b in zip(self._heads, other._heads):
            a._check_compatible(b)
        self._flush_all()
        other._flush_all()  # a no-op for other's rows and answers
        for a, b in zip(self._heads, other._heads):
            a.merge(b)
        self._changed()
        return self

    def to_bytes(self) -> bytes:
        """Serialise all heads (the format of :mod:`streamlev.serialize`)."""
        self._flush_all()
        arrays = {f"head{h}": np.frombuffer(sk.to_bytes(), dtype=np.uint8) for h, sk in enumerate(self._heads)}
        return serialize.pack(self._FAMILY, {"heads": self.heads}, arrays)

    @classmethod
    def from_bytes(cls, data):
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
        subs = [OnlineLeverage.from_bytes(arrays[f"head{h}"].tobytes()) for h in range(heads)]
        first = subs[0]
        for s in subs[1:]:
            if (s.dim, s.eps, s.ridge, s.n_seen) != (first.dim, first.eps, first.ridge, first.n_seen):
                raise ValueError("not a valid streamlev sketch: heads disagree on dim/eps/ridge/rows")
        obj = cls.__new__(cls)
        obj.heads = heads
        obj._heads = subs
        obj._init_shared()
        return obj

    def __reduce__(self):
        return (MultiHeadLeverage.from_bytes, (self.to_bytes(),))
