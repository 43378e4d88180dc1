"""What every baseline sketch shares: the contract, validated blocks, row ids, seeds and the scoring map.

The contract (the same as :class:`streamlev.OnlineLeverage`'s):

* ``update(X) -> self`` absorbs a block ``(m, d)`` or one row ``(d,)``; rows get the ids
  ``start, start + 1, ...`` in stream order.  A refused block (wrong shape, NaN, ...) raises
  before anything changes.
* ``universal_set()`` returns the sorted int64 ids the method selects for ``eps``.
* ``scores()`` returns ``(ids, scores)`` of that set where the method has scores.
* ``n_seen`` and ``nbytes`` are int properties (rows fed; bytes of state held between updates).
* ``merge(other) -> self`` where the method is mergeable; otherwise :class:`TypeError` (another
  kind of sketch) or :class:`NotImplementedError` (the method cannot merge, with the reason).
* ``passes`` (class attribute) is 1 or 2.  Two-pass methods read the stream again through
  ``second_pass(X) -> self``, with the same rows in the same order; ``universal_set()`` raises
  :class:`RuntimeError` until the second pass has covered every row.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike

from .._threads import blas_threads
from .._validate import as_block, check_dim, check_eps, check_ridge

__all__ = ["Baseline", "TwoPassBaseline", "check_seed", "hash64", "pinv_map", "row_sqnorms"]

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def check_seed(seed) -> int:
    """A seed is a non-negative integer (it names the random choices, so runs can be repeated)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be a non-negative integer, got {type(seed).__name__}")
    if int(seed) < 0 or int(seed) >= 2**63:
        raise ValueError(f"seed must lie in [0, 2**63), got {seed}")
    return int(seed)


def hash64(ids: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """SplitMix64 finaliser of (seed, salt, id): uint64 values that look independent and uniform.

    A function of the row id (not of the arrival order), so that two sketches built with the same
    seed on disjoint rows make the same random choices as one sketch of all rows: this is what
    makes the linear sketches mergeable.
    """
    with np.errstate(over="ignore"):
        key = np.uint64((seed * 0x2545F4914F6CDD1D + salt * 0x632BE59BD9B4E019) % 2**64)
        z = ids.astype(np.int64).view(np.uint64) + key * _M1 + _M1
        z = (z ^ (z >> np.uint64(30))) * _M2
        z = (z ^ (z >> np.uint64(27))) * _M3
        return z ^ (z >> np.uint64(31))


def pinv_map(M: np.ndarray, ridge: float) -> np.ndarray:
    """A (d, r) matrix P with ``‖x P‖² = xᵀ(MᵀM + λI)⁺x`` for every row x.

    Computed from an SVD of the column-normalised ``[M; √λ·I]`` (never from MᵀM), so it is
    invariant to column scaling when λ = 0 and QR-grade accurate.  Singular values at or below
    ``σ_max·max(m, d)·machine-eps`` count as zero (the :func:`numpy.linalg.matrix_rank` rule).
    """
    M = np.asarray(M, dtype=np.float64)
    d = M.shape[1]
    if ridge > 0.0:
        M = np.vstack([M, np.sqrt(ridge) * np.eye(d)])
    with blas_threads(1):  # small LAPACK calls run far slower on busy threads than on one
        if M.shape[0] > d:
            M = np.linalg.qr(M, mode="r")  # same singular values, d x d
        c = np.linalg.norm(M, axis=0)
        c[c == 0.0] = 1.0
        _u, s, vt = np.linalg.svd(M / c, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return np.zeros((d, 0))
    r = int(np.count_nonzero(s > s[0] * max(M.shape) * np.finfo(np.float64).eps))
    return (vt[:r].T / s[:r]) / c[:, None]


def row_sqnorms(X: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Squared norms of the rows of ``X @ P`` (float64)."""
    if P.shape[1] == 0 or X.shape[0] == 0:
        return np.zeros(X.shape[0])
    Y = np.asarray(X, dtype=np.float64) @ P
    return np.einsum("ij,ij->i", Y, Y)


class Baseline:
    """Shared state of a baseline sketch: dimension, threshold, ridge, seed and row ids."""

    #: Passes over the stream the method needs (1 or 2).
    passes = 1
    #: Whether the method holds every key (an in-memory method fed block by block).
    in_memory = False

    def __init__(self, dim: int, eps: float, *, ridge: float = 0.0, seed: int = 0, start: int = 0) -> None:
        self.dim = check_dim(dim)
        self.eps = check_eps(eps)
        self.ridge = check_ridge(ridge)
        self.seed = check_seed(seed)
        if isinstance(start, (bool, np.bool_)) or not isinstance(start, numbers.Integral):
            raise TypeError(f"start must be an integer id, got {type(start).__name__}")
        self.start = int(start)
        self._n = 0
        self._ranges = [(self.start, self.start)]  # id ranges [a, b) this sketch has seen

    @property
    def n_seen(self) -> int:
        """Rows fed so far (merged sketches included)."""
        return int(self._n)

    def _block(self, X) -> np.ndarray:
        return as_block(X, self.dim)

    def _take_ids(self, m: int) -> np.ndarray:
        a, b = self._ranges[-1]
        ids = np.arange(b, b + m, dtype=np.int64)
        self._ranges[-1] = (a, b + m)
        self._n += m
        return ids

    def _check_merge(self, other, names=("dim", "eps", "ridge", "seed")) -> None:
        if not isinstance(other, type(self)):
            raise TypeError(f"can only merge another {type(self).__name__}, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge a sketch with itself (its rows would count twice)")
        for name in names:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                raise ValueError(f"cannot merge sketches with different {name}: {a!r} vs {b!r}; use the same {name}")
        for a1, b1 in self._ranges:
            for a2, b2 in other._ranges:
                if max(a1, a2) < min(b1, b2):
                    raise ValueError(
                        "cannot merge sketches whose row ids overlap; give each shard its own id range (start=...)"
                    )

    def _absorb_ranges(self, other) -> None:
        self._ranges = sorted(r for r in self._ranges + other._ranges if r[1] > r[0]) or [(self.start, self.start)]
        self._n += other._n

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, eps={self.eps:g}, n_seen={self.n_seen}, nbytes={self.nbytes})"


class TwoPassBaseline(Baseline):
    """A baseline that sketches in pass 1 (``update``) and scores every row in pass 2 (``second_pass``)."""

    passes = 2

    def __init__(self, dim: int, eps: float, *, ridge: float = 0.0, seed: int = 0, start: int = 0) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        self._scanned = 0
        self._found_ids = []
        self._found_scores = []
        self._map = None

    #: Parameters two sketches must share to merge (the subclass adds its own).
    _merge_names: tuple[str, ...] = ("dim", "eps", "ridge", "seed")

    def _scoring_map(self) -> np.ndarray:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _merge_sketch(self, other: TwoPassBaseline) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def merge(self, other: TwoPassBaseline) -> TwoPassBaseline:
        """Add the pass-1 sketch of a disjoint set of rows (same kind and parameters); before the second pass only."""
        self._check_merge(other, self._merge_names)
        if self._scanned or other._scanned:
            raise ValueError("merge sketches before the second pass")
        self._merge_sketch(other)
        self._absorb_ranges(other)
        return self

    def update(self, X: ArrayLike) -> TwoPassBaseline:
        if self._scanned:
            raise RuntimeError("the second pass has started; a two-pass sketch takes no more rows in pass 1")
        B = self._block(X)
        if B.shape[0]:
            self._sketch(B, self._take_ids(B.shape[0]))
        return self

    def second_pass(self, X: ArrayLike) -> TwoPassBaseline:
        """Score a block of the second pass (same rows, same order as pass 1) and keep those >= eps."""
        B = self._block(X)
        m = B.shape[0]
        if self._scanned + m > self._n:
            raise ValueError(
                f"the second pass yielded more rows ({self._scanned + m}) than the first ({self._n}); "
                "both passes must read the same rows"
            )
        keep, scores = self._select(B)
        ids = self._ids_of_scan(self._scanned, m)
        self._scanned += m
        if keep.any():
            self._found_ids.append(ids[keep])
            self._found_scores.append(scores)
        return self

    def _select(self, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of the rows of B scoring >= eps, their scores) against the scoring map of pass 1."""
        if self._map is None:
            self._map = self._scoring_map()
        tau = row_sqnorms(B, self._map)
        keep = tau >= self.eps
        return keep, tau[keep]

    def _ids_of_scan(self, pos: int, m: int) -> np.ndarray:
        """Ids of rows pos..pos+m of the second pass (the pass-1 id ranges in order)."""
        out = np.empty(m, dtype=np.int64)
        k, off = 0, 0
        for a, b in self._ranges:
            size = b - a
            lo, hi = max(pos, off), min(pos + m, off + size)
            if hi > lo:
                out[k : k + hi - lo] = np.arange(a + lo - off, a + hi - off)
                k += hi - lo
            off += size
        return out

    def _finished(self) -> None:
        if self._scanned != self._n:
            raise RuntimeError(
                f"{type(self).__name__} scores rows in a second pass: call second_pass(X) on every block again "
                f"({self._scanned} of {self._n} rows scored so far)"
            )

    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids whose estimated score reaches eps (after the second pass)."""
        return self.scores()[0]

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, estimated scores) of the selected rows, sorted by id (after the second pass)."""
        self._finished()
        if not self._found_ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        ids = np.concatenate(self._found_ids)
        tau = np.concatenate(self._found_scores)
        order = np.argsort(ids, kind="stable")
        return ids[order], tau[order]

    def _found_nbytes(self) -> int:
        mp = 0 if self._map is None else self._map.nbytes
        return mp + sum(a.nbytes for a in self._found_ids) + sum(a.nbytes for a in self._found_scores)
