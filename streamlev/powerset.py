"""OnlinePowerSet: one pass over key blocks for |x|^p attention, with memory independent of n.

The guarantee rests on the monotonicity of ℓ_p sensitivities (docs/design.md, "Prefix monotonicity"):
a key's sensitivity with respect to a subset of the rows bounds its sensitivity with respect to all of
them, so keeping the universal set of (kept rows ∪ new block) never loses a key of the final set.
The universal sets of the row subsets come from :mod:`streamlev.lewis`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

from . import serialize
from ._sketch import CallableInt, Sketch, deprecated
from ._validate import as_block, check_dim, check_eps, check_p
from .lewis import _one_blas_thread, _subset_keep
from .online.ids import ID_MAX, IdLedger

__all__ = ["OnlinePowerSet"]


class OnlinePowerSet(Sketch):
    """One pass over key blocks for power attention with memory independent of n.

    Keeps a set S of rows (keys with their global indices).  Each :meth:`update` forms
    S ∪ block, computes the universal set *of those rows alone* (:func:`streamlev.lewis.universal_set_p` on
    them) and keeps only its members; :meth:`merge` does the same with S₁ ∪ S₂.

    Guarantee: after any number of blocks and merges, :meth:`universal_set` contains every key j of the exact
    universal set {j : α_j(all rows seen) >= eps}.  Reason: a key is dropped only when its
    sensitivity with respect to the held rows S_t is certified < eps; S_t is a subset of the
    rows seen so far, and the sensitivity with respect to a subset upper-bounds the sensitivity
    with respect to any superset (adding rows only enlarges ‖Kq‖_p), so the key's sensitivity is
    < eps with respect to all rows ever.  Dropped keys never need to re-enter.

    Memory: the held rows satisfy |S| <= c_p·rank/eps·(1 + O(tol)) after each update (c_p = 1
    for p <= 2, rank^{p/2-1} for p > 2), so the state is O((c_p·d/eps + block)·d) floats,
    independent of the stream length.  The final set is a superset of the exact set; a second
    pass with :func:`sensitivity_bounds` over all rows can shrink it further.

    Parameters
    ----------
    dim : int
        Key dimension d.
    eps : float in (0, 1]
        Attention threshold.
    p : float in (0, inf)
        Exponent of f(x) = |x|^p.
    refine : bool, default True
        Refine by exact sensitivities (p >= 1) at every update (smaller state, more time).
    """

    _FAMILY = "OnlinePowerSet"
    _MERGE_PARAMS = ("dim", "eps", "p", "refine")
    _REPR = ("dim", "eps", "p", "n_seen", "n_candidates")

    def __init__(self, dim: int, eps: float, *, p: float, refine: bool = True):
        self.dim = check_dim(dim)
        self.eps = check_eps(eps)
        self.p = check_p(p)
        self.refine = bool(refine)
        self._n = 0
        self._ids = IdLedger(0)
        self.keys_ = np.zeros((0, self.dim))
        self.index_ = np.zeros(0, dtype=np.int64)
        self.max_held_ = 0

    @property
    def n_seen(self) -> int:
        """Rows fed so far (merged sketches included)."""
        return self._n

    @property
    def n_seen_(self) -> int:
        """Deprecated spelling of :attr:`n_seen`."""
        deprecated("OnlinePowerSet.n_seen_", "n_seen")
        return self._n

    @property
    def n_candidates(self) -> int:
        """Keys held (a superset of the universal set)."""
        return int(self.index_.size)

    @property
    def nbytes(self) -> int:
        """Bytes of state held between updates (keys, ids, id ranges)."""
        return CallableInt(self.keys_.nbytes + self.index_.nbytes + self._ids.nbytes)

    def _keep(self, rows: np.ndarray, idx: np.ndarray) -> None:
        self.max_held_ = max(self.max_held_, rows.shape[0])
        keep = _subset_keep(rows, self.eps, self.p, refine=self.refine)
        self.keys_ = np.ascontiguousarray(rows[keep])
        self.index_ = idx[keep]

    @_one_blas_thread
    def update(self, X: ArrayLike, ids: ArrayLike | None = None) -> OnlinePowerSet:
        """Absorb a block (m, d) or a single key (d,); returns self.

        ``ids``: one distinct int id per row, never fed before; by default
        consecutive from 0 (after explicit ids, from one past the largest).
        A refused block leaves the sketch as it was.
        """
        B = np.asarray(as_block(X, self.dim), dtype=np.float64)
        m = B.shape[0]
        idx = self._ids.check(ids, m)
        if m == 0:
            return self
        self._ids.record(idx)
        self._n += m
        self._keep(np.vstack([self.keys_, B]), np.concatenate([self.index_, idx]))
        return self

    def fit(self, blocks: Iterable[ArrayLike]) -> OnlinePowerSet:
        """Deprecated: call :meth:`update` for each block."""
        deprecated("OnlinePowerSet.fit(blocks)", "update(block) for each block")
        for B in blocks:
            self.update(B)
        return self

    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids of the held keys (a superset of the exact universal set)."""
        return np.sort(self.index_)

    def result(self) -> np.ndarray:
        """Deprecated spelling of :meth:`universal_set`."""
        deprecated("OnlinePowerSet.result()", "universal_set()")
        return self.universal_set()

    @_one_blas_thread
    def merge(self, other: OnlinePowerSet) -> OnlinePowerSet:
        """Absorb a sketch of disjoint rows (same dim, eps, p and refine); ``other`` does not change.

        The held rows of both are pooled and reduced to the universal set of
        those rows alone, as in :meth:`update`: the held rows are a subset of
        all rows seen, so the guarantee of the class holds for the union.
        """
        self._check_merge(other)
        if self._ids.overlaps(other._ids) or np.intersect1d(self.index_, other.index_).size:
            raise ValueError(
                "cannot merge sketches whose row ids overlap; give each shard its own ids (update(X, ids=...))"
            )
        self._ids.absorb(other._ids)
        self._n += other._n
        self._keep(np.vstack([self.keys_, other.keys_]), np.concatenate([self.index_, other.index_]))
        return self

    def to_bytes(self) -> bytes:
        """Serialise (:mod:`streamlev.serialize`; canonical: held keys sorted by id)."""
        order = np.argsort(self.index_, kind="stable")
        meta = {
            "dim": self.dim,
            "eps": self.eps,
            "p": self.p,
            "refine": self.refine,
            "n_seen": self._n,
            "max_held": self.max_held_,
            "next_id": self._ids.next_id,
            "ranges_tracked": self._ids.tracked,
        }
        arrays = {"keys": self.keys_[order], "ids": self.index_[order], "ranges": self._ids.iv}
        return serialize.pack(self._FAMILY, meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> OnlinePowerSet:
        """Restore a sketch written by :meth:`to_bytes`; ``ValueError`` on any corruption."""
        meta, arrays = serialize.unpack(data, cls._FAMILY)

        def bad(msg):
            return ValueError(f"not a valid streamlev sketch: {msg}")

        fields = {"dim", "eps", "p", "refine", "n_seen", "max_held", "next_id", "ranges_tracked"}
        if set(meta) != fields or set(arrays) != {"keys", "ids", "ranges"}:
            raise bad("unexpected fields")
        for k in ("dim", "n_seen", "max_held", "next_id"):
            if not isinstance(meta[k], int) or isinstance(meta[k], bool) or not 0 <= meta[k] <= ID_MAX:
                raise bad(f"field {k} is not an int64 count")
        if not isinstance(meta["refine"], bool) or not isinstance(meta["ranges_tracked"], bool):
            raise bad("flags are not booleans")
        try:
            sk = cls(meta["dim"], meta["eps"], p=meta["p"], refine=meta["refine"])
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
        keys, ids, ranges = arrays["keys"], arrays["ids"], arrays["ranges"]
        if keys.dtype != np.float64 or keys.ndim != 2 or keys.shape[1] != sk.dim or not np.isfinite(keys).all():
            raise bad("held keys have the wrong dtype, shape or non-finite values")
        if ids.dtype != np.int64 or ids.shape != (keys.shape[0],) or np.unique(ids).size != ids.size:
            raise bad("held ids have the wrong shape or repeat")
        if ranges.dtype != np.int64 or ranges.ndim != 2 or ranges.shape[1] != 2:
            raise bad("id ranges have the wrong shape")
        if keys.shape[0] > meta["n_seen"] or meta["max_held"] < keys.shape[0]:
            raise bad("counts are inconsistent")
        sk._n, sk.max_held_ = meta["n_seen"], meta["max_held"]
        sk._ids = IdLedger(0, ranges, meta["ranges_tracked"], meta["next_id"])
        sk.keys_, sk.index_ = np.ascontiguousarray(keys), ids.copy()
        return sk

    def _canonical_bytes(self) -> bytes:
        return self.to_bytes()  # serialising changes nothing
