"""One-pass exact universal set: :class:`OnlineLeverage`.

Why one pass is exact (docs/design.md, the section on one pass).  For a
fixed row j, its (ridge) leverage score with respect to a prefix of the
stream never increases as more rows arrive.  So

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

How the work is kept small (``benchmarks/run.py``):

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

The single-stream state lives in :class:`Stream` (factor, candidates,
buffer); :class:`OnlineLeverage` adds the ids (:class:`~streamlev.online.ids.IdLedger`)
and the public surface.  :class:`~streamlev.online.MultiHeadLeverage` holds
one :class:`Stream` per head and one shared ledger.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike

from .. import serialize
from .._factor import Factor, admit
from .._linalg import qr_r, whiten
from .._sketch import Sketch
from .._tuning import MIN_RESCORE, ONLINE_SUB
from .._validate import as_block, check_dim, check_eps, check_factor_memory, check_ridge
from .buffer import CandidateStore, PendingRows, pending_rows
from .ids import ID_MAX, IdLedger

__all__ = ["OnlineLeverage", "Stream"]


class Stream:
    """One key stream's exact state: the factor, the candidates and the buffer of rows not yet in the factor.

    Knows nothing of ids beyond storing them beside the candidate keys.
    """

    def __init__(self, dim: int, eps: float, ridge: float, pcap: int | None = None):
        self.dim, self.eps, self.ridge = dim, eps, ridge
        self.factor = Factor(dim, ridge)
        self.store = CandidateStore(dim, eps)
        self.pending = PendingRows(dim, pending_rows(dim) if pcap is None else pcap)

    @property
    def n_seen(self) -> int:
        """Rows fed (in the factor or buffered)."""
        return self.factor.n + self.pending.n

    @property
    def nbytes(self) -> int:
        """Bytes of the factor, the candidates and the buffer."""
        return int(self.factor.nbytes() + self.store.nbytes + self.pending.nbytes)

    # -- deferred factor updates --------------------------------------------------------------------
    def push(self, B, big=None):
        """Add rows to the factor: blocks of at least ``pending.cap`` rows at once, smaller ones buffered.

        ``big`` is the largest |entry| of B when the caller knows it (from validation).
        """
        if B.shape[0] >= self.pending.cap:
            self.flush()
            self.factor.update(B, big)
            return
        if not self.pending.fits(B.shape[0], B.dtype):
            self.flush()
        self.pending.add(B, big)

    def flush(self):
        """Absorb the buffered rows into the factor (a no-op when there are none)."""
        if self.pending.n:
            rows, big = self.pending.take()
            self.factor.update(rows, big)

    # -- evictions ------------------------------------------------------------------------------------
    def evict(self):
        """Absorb pending rows, then keep the candidates whose score is still >= eps (exact).

        Candidates decided by the two-sided bounds are not scored; the others
        are scored together (:meth:`streamlev._factor.Factor.classify_parts`).
        Each part keeps its own surviving rows, so no joined copy of all
        candidates is made.  While the rows fed are certified linearly
        independent (:meth:`streamlev._factor.Factor.rows_independent`, the
        early states of a wide stream) every candidate's score is exactly 1
        >= eps: all are kept, with no SVD.
        """
        self.flush()
        store = self.store
        store.seal()
        if store.count and not self.factor.rows_independent():
            store.keep(self.factor.classify_parts([k for k, _ in store.parts], self.eps))
        store.clean = store.count

    def evict_due(self) -> bool:
        """Whether the candidates doubled since the last eviction and exceed what the universal set can hold."""
        # Unless they are still no more than rank/eps, the size the universal set itself can reach
        # (nothing to gain yet).
        count = self.store.count
        # (``not rank_at_least``: the same test as count·eps > rank, without the SVD when a certified bound decides.)
        return count > max(2 * self.store.clean, MIN_RESCORE) and not self.factor.rank_at_least(count * self.eps)

    def maybe_evict(self):
        """Evict when :meth:`evict_due`, absorbing the buffered rows first when they may lift the rank enough."""
        if self.evict_due():
            if self.pending.n and self.store.count * self.eps <= min(self.dim, self.factor.n + self.pending.n):
                # The test used the rank before the buffered rows, which may lift it past count·eps (at the
                # first eviction it is 0): absorb them — the eviction would — and ask again.  Saves evictions
                # that keep every candidate.
                self.flush()
                if not self.evict_due():
                    return
            self.evict()

    # -- the stream -----------------------------------------------------------------------------------
    def ingest(self, B, ids, online_u=None, big=None):
        """Admit and absorb one validated block whose ids are recorded.

        ``online_u`` (exact sequential online scores) admits by the exact
        prefix scores and absorbs at once; otherwise rows are admitted by the
        rigorous upper bound of the factor (all of them while there is none
        yet) and absorbed through :meth:`push`.
        """
        m = B.shape[0]
        if m == 0:
            return
        if online_u is None and m >= self.pending.cap:
            # A big block: absorb it now, computing the screening norms in the same sweep as its Gram
            # product (the bound is taken before the update, so it bounds the rows' prefix scores).
            self.flush()
            b = self.factor.bound()
            t = self.factor.update(B, big, screen=b)
            self.admit(B, ids, None if b is None else b.admit(t, self.eps))
            self.maybe_evict()
            return
        if online_u is not None:
            self.admit(B, ids, admit(online_u, self.eps))
            self.factor.update(B, big)
        else:
            self.admit(B, ids, self.factor.admitted(B, self.eps))
            self.push(B, big)
        self.maybe_evict()

    def admit(self, B, ids, keep):
        """Keep the block's admitted rows (``keep`` None: all) as candidates."""
        if keep is None or keep.all():
            self.store.append(B, ids)
        elif keep.any():
            self.store.append(B[keep], ids[keep], copy=False)

    def online_u(self, B) -> np.ndarray:
        """The u = kᵀ(λI + rows so far)⁻¹k of each row of a sub-block, from a QR of [Yᵀ; I] (no Gram matrix formed)."""
        self.flush()
        s = B.shape[0]
        Yt = whiten(B, self.factor.scoring_inverse())  # (s, d) = B R⁻¹, R the factor of λI + rows so far
        A = np.zeros((self.dim + s, s), order="F")
        A[: self.dim] = Yt.T
        A[self.dim :] = np.eye(s)
        piv = np.diag(qr_r(A)) ** 2
        return np.maximum(piv - 1.0, 0.0)

    # -- results --------------------------------------------------------------------------------------
    def universal_set(self) -> np.ndarray:
        """Sorted ids of the exact universal set of the rows fed."""
        self.evict()
        return np.sort(self.store.all_ids())

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the universal set, sorted by id."""
        self.evict()
        keys, ids = self.store.joined()
        order = np.argsort(ids)
        # Rows certified independent score exactly 1 (Factor.rows_independent); otherwise they are computed.
        tau = np.ones(ids.size) if self.factor.rows_independent() else np.clip(self.factor.scores(keys), 0.0, 1.0)
        return ids[order], tau[order]

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, keys) of the universal set, sorted by id."""
        self.evict()
        keys, ids = self.store.joined()
        order = np.argsort(ids)
        return ids[order], keys[order]

    # -- merge ----------------------------------------------------------------------------------------
    def check_mergeable(self, other: Stream) -> None:
        """Refuse a merge with a stream of other parameters or shared candidate ids (nothing changes)."""
        for name in ("dim", "eps", "ridge"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                raise ValueError(
                    f"cannot merge sketches with different {name}: {a!r} vs {b!r}; create both with the same {name}"
                )
        if np.intersect1d(self.store.all_ids(), other.store.all_ids()).size:
            raise ValueError("cannot merge sketches whose candidate ids overlap; rows must be disjoint")

    def absorb(self, other: Stream) -> None:
        """Add another stream's rows (checked by :meth:`check_mergeable`); ``other``'s answers do not change."""
        self.flush()
        other.flush()  # a no-op for other's rows and answers: the buffer joins its factor
        self.factor.merge(other.factor)
        other.store.seal()
        for keys, ids in other.store.parts:
            self.store.append(keys, ids)
        self.evict()


class OnlineLeverage(Sketch):
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
    _MERGE_PARAMS = ("dim", "eps", "ridge")
    _REPR = ("dim", "eps", "ridge", "n_seen", "n_candidates")

    def __init__(self, dim: int, eps: float, *, ridge: float = 0.0, start: int = 0):
        self.dim = check_dim(dim)
        check_factor_memory(self.dim, "OnlineLeverage")
        self.eps = check_eps(eps)
        self.ridge = check_ridge(ridge)
        if isinstance(start, (bool, np.bool_)) or not isinstance(start, numbers.Integral):
            raise TypeError(f"start must be an integer id, got {type(start).__name__}")
        self.start = int(start)
        if not -ID_MAX <= self.start < ID_MAX:
            raise ValueError(f"start must fit in int64, got {start}")
        self._stream = Stream(self.dim, self.eps, self.ridge)
        self._ids = IdLedger(self.start)
        self.last_online_scores_ = None
        self.last_online_u_ = None

    # -- properties -----------------------------------------------------------------------------
    @property
    def n_seen(self) -> int:
        """Number of rows fed so far (merged sketches included)."""
        return self._stream.n_seen

    @property
    def n_candidates(self) -> int:
        """Number of candidate keys stored."""
        return self._stream.store.count

    @property
    def nbytes(self) -> int:
        """Bytes of sketch state: factor, candidate keys and ids, id ranges, buffered rows."""
        return int(self._stream.nbytes + self._ids.nbytes)

    @property
    def rank(self) -> int:
        """Numerical rank of the rows seen (d when ridge > 0)."""
        self._stream.flush()
        return self._stream.factor.rank

    def logdet(self) -> float:
        """Ln det(I + KᵀK/λ) of the rows seen (ridge > 0), from the factor.

        Equals Σ_i ln(1 + u_i) over the sequential online scores u_i of every
        row (docs/design.md, the log-determinant checksum).
        """
        if self.ridge <= 0:
            raise ValueError("logdet needs ridge > 0; create the sketch with ridge=λ")
        self._stream.flush()
        return self._stream.factor.logdet_ridge()

    # -- the stream -----------------------------------------------------------------------------
    def update(self, X: ArrayLike, ids: ArrayLike | None = None) -> OnlineLeverage:
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
        B, big = as_block(X, self.dim, with_max=True)
        ids = self._ids.check(ids, B.shape[0])
        if B.shape[0]:
            self._ids.record(ids)
            self._stream.ingest(B, ids, big=big)
        return self

    def update_scores(self, X: ArrayLike, ids: ArrayLike | None = None) -> np.ndarray:
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
        B, big = as_block(X, self.dim, with_max=True)
        ids = self._ids.check(ids, B.shape[0])
        self._stream.flush()
        m = B.shape[0]
        u = np.empty(m)
        if m:
            self._ids.record(ids)
        for a in range(0, m, ONLINE_SUB):
            b = min(m, a + ONLINE_SUB)
            u[a:b] = self._stream.online_u(B[a:b])
            self._stream.ingest(B[a:b], ids[a:b], online_u=u[a:b], big=big)
        u = np.maximum(u, 0.0)
        scores = u / (1.0 + u)
        self.last_online_scores_ = scores
        self.last_online_u_ = u
        return scores

    # -- results ----------------------------------------------------------------------------------
    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids ``{i : τ_i >= eps}`` over every row seen so far (exact)."""
        return self._stream.universal_set()

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, leverage scores) of the current universal set, sorted by id."""
        return self._stream.scores()

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, keys) of the current universal set, sorted by id."""
        return self._stream.keys()

    # -- merge ------------------------------------------------------------------------------------
    def _check_compatible(self, other) -> None:
        self._check_merge(other)
        if other._stream is self._stream:
            raise ValueError("cannot merge a sketch with itself (its rows would count twice)")
        check_merge_ids(self._ids, other._ids)
        self._stream.check_mergeable(other._stream)

    def merge(self, other: OnlineLeverage) -> OnlineLeverage:
        """Absorb another sketch of a disjoint set of rows (same dim, eps and ridge).

        Exact: U(all rows) ⊆ U(shard 1) ∪ U(shard 2) because a score with respect
        to a subset of the rows is at least the score with respect to all rows.
        The factors merge by a QR of ``[R₁; R₂]``; the union of candidates is
        re-scored.  ``other``'s answers and bytes do not change.

        Returns
        -------
        self
        """
        self._check_compatible(other)
        self._stream.absorb(other._stream)
        self._ids.absorb(other._ids)
        return self

    # -- serialisation ----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise the sketch (format documented in :mod:`streamlev.serialize`).

        The bytes are canonical: they hold the factor of every row fed and
        exactly the universal set's candidates, sorted by id — so they do not
        depend on whether results were asked for before.  Like a result, it
        absorbs buffered rows and evicts in place (the format has no buffer),
        so that a sketch restored from the bytes continues exactly as this
        one.  What the bytes depend on: the parameters, the rows and their ids,
        and how the rows reached the factor (block sizes, merges, and results
        or bytes asked for mid-stream, which absorb buffered rows) — which
        changes the factor only by rounding.
        """
        return pack_stream(self._stream, self._ids, self.start)

    @classmethod
    def from_bytes(cls, data: bytes) -> OnlineLeverage:
        """Restore a sketch written by :meth:`to_bytes`; ``ValueError`` on any corruption."""
        return attached(*stream_from_bytes(data))


def attached(stream: Stream, ids: IdLedger, start: int) -> OnlineLeverage:
    """An :class:`OnlineLeverage` over existing state (shared, not copied): a head of a multi-head sketch."""
    sk = OnlineLeverage.__new__(OnlineLeverage)
    sk.dim, sk.eps, sk.ridge, sk.start = stream.dim, stream.eps, stream.ridge, start
    sk._stream, sk._ids = stream, ids
    sk.last_online_scores_ = None
    sk.last_online_u_ = None
    return sk


def check_merge_ids(mine: IdLedger, theirs: IdLedger) -> None:
    """Refuse a merge of sketches whose row ids overlap."""
    if mine.overlaps(theirs):
        raise ValueError(
            "cannot merge sketches whose row ids overlap; give each shard its own id range (start=...) or explicit ids"
        )


_FIELDS = {"dim", "eps", "ridge", "start", "next_id", "n_seen", "clean", "key_dtype", "has_dtype", "ranges_tracked"}


def pack_stream(stream: Stream, ids: IdLedger, start: int) -> bytes:
    """The canonical bytes of one stream and its ids (the OnlineLeverage format of :mod:`streamlev.serialize`).

    Canonical: the factor of every row fed and exactly the universal set's
    candidates, sorted by id.  The stream is brought to that state in place
    (buffered rows absorbed, candidates evicted), so that a sketch restored
    from the bytes and the original continue identically.
    """
    stream.evict()
    keys, cand_ids = stream.store.joined()
    order = np.argsort(cand_ids, kind="stable")
    dtype = stream.store.dtype
    meta = {
        "dim": stream.dim,
        "eps": stream.eps,
        "ridge": stream.ridge,
        "start": start,
        "next_id": ids.next_id,
        "n_seen": stream.factor.n,
        "clean": int(cand_ids.size),
        "key_dtype": "float32" if dtype == np.float32 else "float64",
        "has_dtype": dtype is not None,
        "ranges_tracked": ids.tracked,
    }
    arrays = {"R": stream.factor.R, "keys": np.ascontiguousarray(keys[order]), "ids": cand_ids[order], "ranges": ids.iv}
    return serialize.pack(OnlineLeverage._FAMILY, meta, arrays)


def unpack_stream(meta: dict, arrays: dict) -> tuple[Stream, IdLedger, int]:
    """(stream, ids, start) from the fields of :func:`pack_stream`; ``ValueError`` on any inconsistency."""

    def bad(msg):
        return ValueError(f"not a valid streamlev sketch: {msg}")

    if set(meta) != _FIELDS or set(arrays) != {"R", "keys", "ids", "ranges"}:
        raise bad("unexpected fields")
    for k in ("dim", "start", "next_id", "n_seen", "clean"):
        if not isinstance(meta[k], int) or isinstance(meta[k], bool):
            raise bad(f"field {k} is not an integer")
        if not -ID_MAX <= meta[k] <= ID_MAX:
            raise bad(f"field {k} does not fit in int64")
    d = meta["dim"]
    R, keys, ids, ranges = arrays["R"], arrays["keys"], arrays["ids"], arrays["ranges"]
    # Check shapes against the arrays actually present before allocating anything of size d².
    if not (1 <= d <= 1 << 20) or R.shape != (d, d):
        raise bad(f"dim {d} does not match the stored factor of shape {R.shape}")
    if R.dtype != np.float64 or not np.isfinite(R).all():
        raise bad("factor has the wrong dtype or non-finite values")
    try:
        sk = OnlineLeverage(d, meta["eps"], ridge=meta["ridge"], start=meta["start"])
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
    stream = sk._stream
    stream.factor.set_state(R, meta["n_seen"])
    stream.store.dtype = want if meta["has_dtype"] else None
    stream.store.parts = [(keys, ids)] if keys.shape[0] else []
    stream.store.count = keys.shape[0]
    stream.store.clean = meta["clean"]
    ledger = IdLedger(sk.start, ranges, meta["ranges_tracked"], meta["next_id"])
    return stream, ledger, sk.start


def stream_from_bytes(data: bytes) -> tuple[Stream, IdLedger, int]:
    """(stream, ids, start) of bytes written by :func:`pack_stream`; ``ValueError`` on any corruption."""
    meta, arrays = serialize.unpack(data, OnlineLeverage._FAMILY)
    try:
        return unpack_stream(meta, arrays)
    except (TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"not a valid streamlev sketch: inconsistent state ({exc})") from None
