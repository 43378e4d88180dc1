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
the candidates — at most rank/eps right after each eviction, and re-scoring
(an eviction) runs whenever their number doubles — and one block.  Nothing is
O(n).
"""

from __future__ import annotations

import numbers

import numpy as np

from . import serialize
from ._factor import Factor, at_least, qr_r, whiten
from ._validate import as_block, check_dim, check_eps, check_positive_int, check_ridge

__all__ = ["MultiHeadLeverage", "OnlineLeverage"]

#: Do not re-score candidates before there are this many (amortises tiny blocks).
_MIN_RESCORE = 256
#: Blocks with fewer rows than this run their linear algebra on one BLAS thread.
_SMALL_BLOCK = 2048
#: Row ids are int64.
_ID_MAX = 2**63 - 1
#: Multi-head: re-derive the stacked inverse factors from R every this many fast blocks.
_MH_REFRESH = 64
#: Rows per sub-block when computing sequential online scores (an s x s QR each).
_ONLINE_SUB = 64


class _IdRanges:
    """Half-open id intervals seen so far, coalesced; ``None`` once too fragmented to track."""

    MAX = 4096

    def __init__(self, arr=None):
        self.iv = np.zeros((0, 2), dtype=np.int64) if arr is None else np.asarray(arr, dtype=np.int64)
        self.tracked = True

    @staticmethod
    def from_ids(ids: np.ndarray) -> np.ndarray:
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
    Householder QR of ``[R; block]`` (TSQR), so scores are QR-grade accurate
    and invariant to column scaling.

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
        self._keys = np.zeros((0, self.dim))
        self._ids = np.zeros(0, dtype=np.int64)
        self._count = 0
        self._clean = 0  # candidate count right after the last eviction
        self._ranges = _IdRanges()
        self.last_online_scores_ = None
        self.last_online_u_ = None

    # -- properties -----------------------------------------------------------------------------
    @property
    def n_seen(self) -> int:
        """Number of rows fed so far (merged sketches included)."""
        return self._factor.n

    @property
    def n_candidates(self) -> int:
        """Number of candidate keys stored."""
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes of sketch state: factor, candidate keys and ids, id ranges."""
        return int(self._factor.R.nbytes + self._keys.nbytes + self._ids.nbytes + self._ranges.iv.nbytes)

    @property
    def rank(self) -> int:
        """Numerical rank of the rows seen (d when ridge > 0)."""
        return self._factor.rank

    def logdet(self) -> float:
        """Ln det(I + KᵀK/λ) of the rows seen (ridge > 0), from the factor.

        Equals Σ_i ln(1 + u_i) over the sequential online scores u_i of every
        row — the checksum DESIGN.md §1.7 gives.
        """
        if self.ridge <= 0:
            raise ValueError("logdet needs ridge > 0; create the sketch with ridge=λ")
        return self._factor.logdet_ridge()

    def __repr__(self) -> str:
        return (f"OnlineLeverage(dim={self.dim}, eps={self.eps:g}, ridge={self.ridge:g}, "
                f"n_seen={self.n_seen}, n_candidates={self.n_candidates})")

    # -- input checks (no mutation) --------------------------------------------------------------
    def _check_ids(self, ids, m: int) -> np.ndarray:
        if ids is None:
            if self._next_id + m > _ID_MAX:
                raise ValueError(f"consecutive ids would pass the int64 limit ({self._next_id} + {m} rows); "
                                 f"give explicit ids or a smaller start")
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
        B = as_block(X, self.dim)
        return B, self._check_ids(ids, B.shape[0])

    # -- candidate storage ------------------------------------------------------------------------
    def _storage_dtype(self, B):
        cur = self._dtype if self._dtype is not None else (self._keys.dtype if self._count else None)
        if cur is None or (cur == np.float32 and B.dtype == np.float64):
            return B.dtype
        return cur

    def _append(self, B, ids):
        k = B.shape[0]
        if k == 0:
            return
        dt = self._storage_dtype(B)
        if self._dtype is None or dt != self._dtype:  # (np.dtype("float64") == None is True!)
            self._keys = self._keys.astype(dt)
            self._dtype = dt
        need = self._count + k
        if need > self._keys.shape[0]:
            cap = max(need, 2 * self._keys.shape[0], 16)
            keys = np.empty((cap, self.dim), dtype=self._dtype)
            keys[: self._count] = self._keys[: self._count]
            ids_ = np.empty(cap, dtype=np.int64)
            ids_[: self._count] = self._ids[: self._count]
            self._keys, self._ids = keys, ids_
        self._keys[self._count:need] = B
        self._ids[self._count:need] = ids
        self._count = need

    def _evict(self):
        """Re-score candidates against the current factor; keep those still >= eps."""
        c = self._count
        if c:
            keep = at_least(self._factor.scores(self._keys[:c]), self.eps)
            kept = int(keep.sum())
            if kept < c:
                self._keys[:kept] = self._keys[:c][keep]
                self._ids[:kept] = self._ids[:c][keep]
                self._count = kept
        self._clean = self._count
        # Give memory back once the buffer is mostly empty.
        if self._keys.shape[0] > max(64, 4 * self._count):
            cap = max(16, 2 * self._count)
            self._keys = self._keys[:cap].copy()
            self._ids = self._ids[:cap].copy()

    def _maybe_evict(self):
        if self._count > max(2 * self._clean, _MIN_RESCORE):
            self._evict()

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
        B, ids = self._prepare(X, ids)
        self._ingest(B, ids)
        return self

    def _ingest(self, B, ids):
        m = B.shape[0]
        if m == 0:
            return
        if m < _SMALL_BLOCK:
            # Small blocks: BLAS calls on (m x d)·(d x d) products run faster and far more
            # predictably on one thread (DESIGN.md §2); big blocks keep the default.
            from ._factor import blas_threads  # noqa: PLC0415

            with blas_threads(1):
                keep = self._factor.absorb_screen(B, self.eps)
        else:
            keep = self._factor.absorb_screen(B, self.eps)
        self._record_ids(ids)
        if keep.any():
            self._append(B[keep], ids[keep])
        self._maybe_evict()

    def _record_ids(self, ids):
        self._ranges.iv = _IdRanges.union(self._ranges.iv, _IdRanges.from_ids(ids))
        if self._ranges.iv.shape[0] > _IdRanges.MAX:
            self._ranges = _IdRanges()
            self._ranges.tracked = False
        self._next_id = max(self._next_id, int(ids.max()) + 1)

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
            raise ValueError("online ridge leverage scores need ridge > 0 "
                             "(with λ = 0 the first rows' scores are undefined); create the sketch with ridge=λ")
        B, ids = self._prepare(X, ids)
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
            A[self.dim:] = np.eye(s)
            piv = np.diag(qr_r(A)) ** 2
            u[a:b] = piv - 1.0
            self._ingest(sub, ids[a:b])
        u = np.maximum(u, 0.0)
        scores = u / (1.0 + u)
        self.last_online_scores_ = scores
        self.last_online_u_ = u
        return scores

    # -- results ----------------------------------------------------------------------------------
    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids ``{i : τ_i >= eps}`` over every row seen so far (exact)."""
        self._evict()
        return np.sort(self._ids[: self._count])

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, leverage scores) of the current universal set, sorted by id."""
        self._evict()
        c = self._count
        order = np.argsort(self._ids[:c])
        tau = np.clip(self._factor.scores(self._keys[:c]), 0.0, 1.0)
        return self._ids[:c][order].copy(), tau[order]

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, keys) of the current universal set, sorted by id."""
        self._evict()
        c = self._count
        order = np.argsort(self._ids[:c])
        return self._ids[:c][order].copy(), self._keys[:c][order].copy()

    # -- merge ------------------------------------------------------------------------------------
    def _check_compatible(self, other):
        if not isinstance(other, OnlineLeverage):
            raise TypeError(f"can only merge another OnlineLeverage, got {type(other).__name__}")
        for name in ("dim", "eps", "ridge"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                raise ValueError(f"cannot merge sketches with different {name}: {a!r} vs {b!r}; "
                                 f"create both with the same {name}")
        if other is self:
            raise ValueError("cannot merge a sketch with itself (its rows would count twice)")
        if (self._ranges.tracked and other._ranges.tracked
                and _IdRanges.overlaps(self._ranges.iv, other._ranges.iv)):
            raise ValueError("cannot merge sketches whose row ids overlap; give each shard its own "
                             "id range (start=...) or explicit ids")
        mine = self._ids[: self._count]
        theirs = other._ids[: other._count]
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
        self._factor.merge(other._factor)
        oc = other._count
        if oc:
            self._append(other._keys[:oc], other._ids[:oc])
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
        """Serialise the sketch (format documented in :mod:`streamlev.serialize`)."""
        c = self._count
        dt = "float32" if self._dtype == np.float32 else "float64"
        meta = {
            "dim": self.dim, "eps": self.eps, "ridge": self.ridge, "start": self.start,
            "next_id": self._next_id, "n_seen": self._factor.n, "clean": self._clean,
            "key_dtype": dt, "has_dtype": self._dtype is not None,
            "ranges_tracked": self._ranges.tracked,
        }
        arrays = {
            "R": self._factor.R,
            "keys": np.ascontiguousarray(self._keys[:c]),
            "ids": self._ids[:c],
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

        expected = {"dim", "eps", "ridge", "start", "next_id", "n_seen", "clean", "key_dtype",
                    "has_dtype", "ranges_tracked"}
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
        sk._keys = keys if keys.shape[0] else np.zeros((0, d), dtype=want)
        sk._ids = ids
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


class MultiHeadLeverage:
    """H independent key streams (e.g. the heads of one attention layer) in one sketch.

    Each head is an exact one-pass sketch with the guarantee of
    :class:`OnlineLeverage`; blocks of shape ``(H, m, dim)`` are processed with
    batched linear algebra across heads (one batched GEMM, symmetric product,
    Cholesky and triangular inverse per block), not a Python loop per row.

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
    Memory per head: a d x d factor and at most about rank/eps candidates after
    each eviction, plus the block being processed.
    """

    _FAMILY = "MultiHeadLeverage"

    def __init__(self, heads, dim, eps, *, ridge=0.0, start=0):
        self.heads = check_positive_int(heads, "heads")
        self._heads = [OnlineLeverage(dim, eps, ridge=ridge, start=start) for _ in range(self.heads)]
        self.dim, self.eps, self.ridge, self.start = dim, self._heads[0].eps, self._heads[0].ridge, start
        self._stack = None  # stacked inverse factors while every head is in the fast regime
        self._stack_blocks = 0

    @property
    def n_seen(self) -> int:
        """Rows fed per head."""
        return self._heads[0].n_seen

    @property
    def n_candidates(self) -> np.ndarray:
        """Candidate count of each head."""
        return np.array([h.n_candidates for h in self._heads])

    @property
    def nbytes(self) -> int:
        """Bytes held by all heads."""
        return int(sum(h.nbytes for h in self._heads))

    def head(self, h: int) -> OnlineLeverage:
        """The sketch of head ``h`` (shares state with this object)."""
        return self._heads[h]

    def __repr__(self) -> str:
        return (f"MultiHeadLeverage(heads={self.heads}, dim={self.dim}, eps={self.eps:g}, "
                f"ridge={self.ridge:g}, n_seen={self.n_seen})")

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
        B = as_keys(X, name="X", ndim=3, dim=self.dim)
        if B.shape[0] != self.heads:
            raise ValueError(f"X must have shape (heads={self.heads}, m, {self.dim}), got {B.shape}; "
                             f"the first axis indexes the heads")
        m = B.shape[1]
        ids = self._heads[0]._check_ids(ids, m)
        if m == 0:
            return self
        if self._stack is None or self._stack_blocks >= _MH_REFRESH:
            self._stack = None
            if all(h._factor.fast_ok() for h in self._heads):
                from ._kernels import tri_inv_upper_batched  # noqa: PLC0415

                self._stack = tri_inv_upper_batched(np.stack([h._factor.R for h in self._heads]))
                self._stack_blocks = 0
        if self._stack is not None:
            from ._factor import blas_threads  # noqa: PLC0415

            # (m x d)·(d x d) products per head are small: one BLAS thread (DESIGN.md §2).
            with blas_threads(1):
                self._fast_block(B, ids)
        else:
            for h, sk in enumerate(self._heads):
                sk._ingest(B[h], ids)
        return self

    def _fast_block(self, B, ids):
        """Whitened update of every head at once (DESIGN.md §1.8), batched across heads."""
        from ._factor import FAST_TRACE_MAX, blas_threads  # noqa: PLC0415
        from ._kernels import tri_inv_upper_batched  # noqa: PLC0415

        m = B.shape[1]
        Rinv = self._stack
        Y = np.matmul(B.astype(np.float64, copy=False), Rinv)
        u = np.einsum("hij,hij->hi", Y, Y)
        ok = bool(np.all(u.sum(axis=1) <= FAST_TRACE_MAX))
        if ok:
            G = np.matmul(Y.transpose(0, 2, 1), Y)
            G[:, np.arange(self.dim), np.arange(self.dim)] += 1.0
            try:
                with blas_threads(1):
                    L = np.linalg.cholesky(G)  # I + YᵀY = L Lᵀ
            except np.linalg.LinAlgError:
                ok = False
        if not ok:  # a block brings new directions to some head: exact QR path for all heads
            self._stack = None
            for h, sk in enumerate(self._heads):
                sk._ingest(B[h], ids)
            return
        U = np.ascontiguousarray(L.transpose(0, 2, 1))  # upper, I + YᵀY = UᵀU
        Uinv = tri_inv_upper_batched(U)
        Rnew = np.matmul(U, np.stack([h._factor.R for h in self._heads]))
        self._stack = np.matmul(Rinv, Uinv)  # (UR)⁻¹ = R⁻¹U⁻¹
        self._stack_blocks += 1
        lead = self._heads[0]
        lead._record_ids(ids)
        # Screen every head at once: a row's new score is at most u/(1+u); survivors get their
        # exact new score ‖y U⁻¹‖² (ridge: against the ridge factor, per head).
        screen = at_least(u / (1.0 + u), self.eps)
        keep = np.zeros_like(screen)
        if self.ridge == 0 and screen.any():
            if screen.mean() > 0.25:  # most rows survive: one batched product for all heads
                Z = np.matmul(Y, Uinv)
                keep = screen & at_least(np.einsum("hij,hij->hi", Z, Z), self.eps)
            else:
                for h in np.flatnonzero(screen.any(axis=1)):
                    idx = np.flatnonzero(screen[h])
                    Z = Y[h, idx] @ Uinv[h]
                    keep[h, idx] = at_least(np.einsum("ij,ij->i", Z, Z), self.eps)
        for h, sk in enumerate(self._heads):
            fac = sk._factor
            fac.R = Rnew[h]
            fac.n += m
            fac._changed()
            fac._rinv = self._stack[h]
            if h:
                sk._ranges.iv = lead._ranges.iv
                sk._ranges.tracked = lead._ranges.tracked
                sk._next_id = lead._next_id
            if self.ridge > 0 and screen[h].any():
                idx = np.flatnonzero(screen[h])
                keep[h, idx] = at_least(fac.scores(B[h, idx]), self.eps)
            kh = keep[h]
            if kh.any():
                sk._append(B[h, kh], ids[kh])
            sk._maybe_evict()

    def universal_set(self, head=None):
        """Sorted int64 ids of each head's universal set (a list), or of one head."""
        if head is not None:
            return self._heads[head].universal_set()
        return [h.universal_set() for h in self._heads]

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
        for a, b in zip(self._heads, other._heads):
            a._check_compatible(b)
        for a, b in zip(self._heads, other._heads):
            a.merge(b)
        self._stack = None
        return self

    def to_bytes(self) -> bytes:
        """Serialise all heads (the format of :mod:`streamlev.serialize`)."""
        arrays = {f"head{h}": np.frombuffer(sk.to_bytes(), dtype=np.uint8) for h, sk in enumerate(self._heads)}
        return serialize.pack(self._FAMILY, {"heads": self.heads}, arrays)

    @classmethod
    def from_bytes(cls, data):
        """Restore from :meth:`to_bytes`; ``ValueError`` on any corruption."""
        meta, arrays = serialize.unpack(data, cls._FAMILY)
        heads = meta.get("heads")
        if (set(meta) != {"heads"} or not isinstance(heads, int) or isinstance(heads, bool) or heads < 1
                or heads != len(arrays) or set(arrays) != {f"head{h}" for h in range(heads)}):
            raise ValueError("not a valid streamlev sketch: inconsistent multi-head header")
        subs = [OnlineLeverage.from_bytes(arrays[f"head{h}"].tobytes()) for h in range(heads)]
        first = subs[0]
        for s in subs[1:]:
            if (s.dim, s.eps, s.ridge, s.n_seen) != (first.dim, first.eps, first.ridge, first.n_seen):
                raise ValueError("not a valid streamlev sketch: heads disagree on dim/eps/ridge/rows")
        obj = cls.__new__(cls)
        obj.heads = heads
        obj._heads = subs
        obj.dim, obj.eps, obj.ridge, obj.start = first.dim, first.eps, first.ridge, first.start
        obj._stack = None
        obj._stack_blocks = 0
        return obj

    def __reduce__(self):
        return (MultiHeadLeverage.from_bytes, (self.to_bytes(),))
