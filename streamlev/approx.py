"""Approximate ridge-leverage universal sets for large d: a mergeable Frequent-Directions sketch.

When d is in the thousands, the exact sketch's d x d factor (d² memory, d² work
per row) is too much.  :class:`ApproxLeverage` keeps instead a Frequent
Directions (FD) sketch of at most ``2·ell`` directions (Liberty, KDD 2013;
Ghashami, Liberty, Phillips, Woodruff, SIAM J. Comput. 2016), scores rows with
ridge leverage against it, and keeps the same one-pass candidate logic as the
exact sketch.

The guarantee, in one place
---------------------------
Let A be all rows seen (across updates and merges), λ = ``ridge`` and
τ_i = a_iᵀ(AᵀA + λI)⁻¹a_i the exact ridge leverage scores.  The FD state is
``B = diag(s)·Vt`` (``r <= 2·ell`` orthonormal directions).  Every shrink step
subtracts δ from the squared singular values (clipping at zero) and adds δ to the
running total Δ (:attr:`ApproxLeverage.shrinkage`), which gives the FD sandwich

    BᵀB ⪯ AᵀA ⪯ BᵀB + Δ·I.                                             (1)

Merging stacks two sketches and shrinks: the summed errors keep (1) with
Δ = Δ₁ + Δ₂ + δ_merge.  Every shrink keeps q >= ``ell`` directions (q = ell in
updates, 2·ell in merges) with δ = the (q+1)-th squared singular value, so it
removes at least (q+1)·δ >= (ell+1)·δ of squared Frobenius mass, while
‖A‖_F² − ‖B‖_F² <= k·Δ + ‖A − A_k‖_F² (A_k the best rank-k approximation of A).
Hence for every 0 <= k <= ell

    Δ <= ‖A − A_k‖_F² / (ell + 1 − k).                                  (2)

Scores are computed against the sketch, τ̃_i = a_iᵀ(BᵀB + λI)⁻¹a_i.  By (1),
BᵀB + λI ⪯ AᵀA + λI ⪯ (1 + Δ/λ)(BᵀB + λI), so

    τ_i <= τ̃_i <= c·τ_i,   c = 1 + Δ/λ.                                 (3)

Candidates: the sketch of any subset of the rows (a prefix of the stream, one
shard of a merge) satisfies (1) with a smaller Gram matrix, so its scores are
upper bounds of the final τ_i as well.  A row is admitted when its upper bound
(against the sketch that already contains its block) reaches eps, and a
candidate is evicted when a later upper bound falls below eps: neither step can
lose a row with τ_i >= eps.  :meth:`ApproxLeverage.universal_set` re-scores the
candidates against the final sketch and returns those with τ̃_i >= eps.  By (3):

    {i : τ_i >= eps}  ⊆  universal_set()  ⊆  {i : τ_i >= eps / c}.

The first inclusion holds for every λ > 0 and ``ell``; c is known after the fact
(:attr:`ApproxLeverage.c`) and bounded a priori by (2):
``c <= 1 + min_k ‖A − A_k‖_F² / ((ell + 1 − k)·λ)``.  Choosing
``λ >= 2·‖A − A_k‖_F² / (ell + 1 − k)`` for some k <= ell guarantees c <= 1.5.

Floating point: all inclusions hold up to the membership slack of
:func:`streamlev._factor.at_least` (1e-10 relative) plus rounding of the
orthogonal factorisations, O(machine-eps·‖A‖₂²/λ) relative per shrink.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg as sla

from ._factor import at_least
from ._sketch import Sketch
from ._validate import as_block, as_keys, check_eps, check_positive_int, check_ridge, scan_keys
from .serialize import pack, unpack

__all__ = ["ApproxLeverage", "ApproxGuaranteeWarning", "ApproxSuggestion"]

_FAMILY = "ApproxLeverage"
_STATE_VERSION = 1
#: Rows scored at a time (bounds the scoring temporaries to a few _SCORE_CHUNK x d arrays).
_SCORE_CHUNK = 256


class ApproxGuaranteeWarning(UserWarning):
    """The accumulated FD shrinkage makes c = 1 + Δ/λ larger than the sketch's ``max_c``."""


# -- threads -------------------------------------------------------------------------------------------
# SVDs of (2·ell) x d matrices run many times slower on several busy BLAS threads than on one
# (benchmarks/approx_bench.py measures both; figures on the performance page), so every SVD runs on one thread.
def _one_blas_thread():
    from ._threads import blas_threads  # the library's one thread controller

    return blas_threads(1)


#: Largest key magnitude the sketch accepts: squared singular values must stay finite.
_MAX_FD_MAGNITUDE = 1e153


def _svd_rows(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and right singular vectors (rows) of C, dropping exact zeros.

    Returns ``s`` (descending, all > 0) and ``Vt`` with orthonormal rows, so that
    ``CᵀC = Vtᵀ diag(s²) Vt`` up to rounding.
    """
    # LAPACK's SVD never returns on non-finite input; overflowing squares end up here.
    if not np.isfinite(C).all():
        raise ValueError(
            "the sketch overflowed: the keys' squared norms exceed the float64 range; "
            "rescale the keys (and the ridge by the square of the factor)"
        )
    # Scale by a power of two first (exact), so that the SVD works on entries of order 1.
    top = float(np.max(np.abs(C))) if C.size else 0.0
    if top == 0.0:
        return np.zeros(0), np.zeros((0, C.shape[1]))
    scale = 2.0 ** -np.frexp(top)[1]
    C = C * scale
    with _one_blas_thread():
        try:
            _u, s, vt = sla.svd(C, full_matrices=False, overwrite_a=True, check_finite=False, lapack_driver="gesdd")
        except np.linalg.LinAlgError:  # pragma: no cover - gesdd convergence failure is rare
            _u, s, vt = sla.svd(C, full_matrices=False, check_finite=False, lapack_driver="gesvd")
    s = s / scale
    keep = int(np.count_nonzero(s > 0.0))
    return np.ascontiguousarray(s[:keep]), np.ascontiguousarray(vt[:keep])


class ApproxSuggestion(NamedTuple):
    """Parameters chosen by :meth:`ApproxLeverage.suggest`."""

    ell: int
    ridge: float
    #: Estimated bound on the shrinkage Δ (c = 1 + Δ/ridge).
    tail: float


def _check_max_c(max_c):
    if max_c is None:
        return None
    if isinstance(max_c, (bool, np.bool_)) or not isinstance(max_c, numbers.Real):
        raise TypeError(f"max_c must be a real number >= 1 or None, got {type(max_c).__name__}")
    v = float(max_c)
    if not (v >= 1.0) or not math.isfinite(v):
        raise ValueError(f"max_c must be a finite number >= 1 (or None to never warn), got {max_c!r}")
    return v


def _as_ids(ids, m: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.shape[0] != m:
        raise ValueError(f"ids must be a 1-D array with one id per row of X ({m}), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if m == 0 and arr.dtype.kind == "f":
            return np.zeros(0, dtype=np.int64)
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}; pass e.g. np.arange(first, first + m)")
    if arr.dtype.kind == "u" and m and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64")
    arr = arr.astype(np.int64)
    if m > 1 and np.unique(arr).size != m:
        raise ValueError("ids within a block must be distinct; every row needs its own id")
    return arr


class ApproxLeverage(Sketch):
    """One-pass, mergeable approximate universal set of ridge leverage for large d.

    Keeps a Frequent Directions sketch of at most ``2·ell`` directions instead of
    the exact d x d factor, and returns a set ``U`` with

        {i : τ_i >= eps}  ⊆  U  ⊆  {i : τ_i >= eps / c},    c = 1 + Δ/λ,

    where τ_i = k_iᵀ(KᵀK + λI)⁻¹k_i are the exact ridge leverage scores of all
    rows seen (updates and merges), λ = ``ridge`` and Δ = :attr:`shrinkage` is the
    accumulated FD shrinkage.  Δ obeys Δ <= ‖K − K_k‖_F² / (ell + 1 − k) for
    every 0 <= k <= ell, so ``ridge >= 2·‖K − K_k‖_F² / (ell + 1 − k)`` gives
    c <= 1.5.  The module docstring has the proof.

    Parameters
    ----------
    dim : int
        Key dimension d.
    eps : float
        Threshold in (0, 1].
    ell : int
        Number of directions kept after each shrink, 1 <= ell <= dim; the sketch
        holds at most ``min(2·ell, dim)`` directions.
    ridge : float
        λ > 0 (required: with λ = 0 no finite c exists).
    start : int, default 0
        Id of the first row when ``update`` is called without ``ids``.
    max_c : float or None, default 2.0
        :meth:`universal_set` issues an :class:`ApproxGuaranteeWarning` when
        :attr:`c` exceeds it (λ too small for the data and ``ell``).  None: never.

    Notes
    -----
    Memory: O(ell·d + |candidates|·d) floats plus one block: the sketch
    (``2·ell`` x d), and candidate keys (float64) with their ids.  After each
    eviction the candidates number at most ``(r + d·(c − 1)) / eps`` (r <= 2·ell
    the sketch rank), because the upper bounds of all rows seen sum to
    tr((BᵀB + λI)⁻¹KᵀK) <= r + d·Δ/λ; in the worst case that is about d/eps.
    Candidates are re-scored when their number doubles.

    Work: blocks are absorbed in chunks of about ``ell`` rows, each one SVD of a
    (<= 2·ell) x d matrix (one BLAS thread), i.e. O(ell·d) amortised per row, plus
    O(ell·d) per row for scoring.  Use blocks of at least ``ell`` rows: every
    ``update`` ends with one SVD.

    Examples
    --------
    Rank-8 keys plus noise of known size: ‖K − K_8‖_F² <= ‖noise‖_F² ≈ n·d·0.1²,
    so ``ridge = 2·(that)/(ell + 1 − 8)`` keeps c <= 1.5 (with 10% margin here).

    >>> import numpy as np
    >>> from streamlev.approx import ApproxLeverage
    >>> rng = np.random.default_rng(0)
    >>> n, d, ell = 2000, 256, 16
    >>> K = rng.standard_normal((n, 8)) @ rng.standard_normal((8, d)) + 0.1 * rng.standard_normal((n, d))
    >>> K[[10, 1500]] += 40 * rng.standard_normal((2, d))       # two heavy rows in fresh directions
    >>> ridge = 2 * 1.1 * (n * d * 0.1**2 + 2 * 40**2 * d) / (ell + 1 - 8)
    >>> sk = ApproxLeverage(d, 0.2, ell=ell, ridge=ridge)
    >>> for block in np.array_split(K, 8):
    ...     _ = sk.update(block)
    >>> sk.universal_set()
    array([  10, 1500])
    >>> bool(sk.c <= 1.5), sk.nbytes < d * d * 8
    (True, True)
    """

    def __init__(self, dim: int, eps: float, *, ell: int, ridge: float, start: int = 0, max_c: float | None = 2.0):
        self.dim = check_positive_int(dim, "dim")
        self.eps = check_eps(eps)
        self.ell = check_positive_int(ell, "ell")
        if self.ell > self.dim:
            raise ValueError(
                f"ell must be at most dim = {self.dim}, got {self.ell}; "
                f"for ell >= dim the exact streamlev.OnlineLeverage uses less memory"
            )
        self.ridge = check_ridge(ridge)
        if self.ridge <= 0.0:
            raise ValueError(
                "ApproxLeverage needs ridge > 0: the approximation factor is c = 1 + Δ/ridge; "
                "choose ridge >= 2·‖K − K_k‖_F²/(ell + 1 − k) for c <= 1.5"
            )
        if isinstance(start, (bool, np.bool_)) or not isinstance(start, numbers.Integral):
            raise TypeError(f"start must be an integer, got {type(start).__name__}")
        self.start = int(start)
        self.max_c = _check_max_c(max_c)
        self._c_warned = False  # the update-time warning is given once per sketch object (not serialised)
        self._cap = 2 * self.ell
        self._s = np.zeros(0)
        self._vt = np.zeros((0, self.dim))
        self._delta = 0.0
        self._n = 0
        self._next_id = self.start
        self._kdtype = np.dtype(np.float32)  # candidate storage: float32 until a float64 block arrives
        self._ckeys = np.zeros((0, self.dim), dtype=self._kdtype)
        self._cids = np.zeros(0, dtype=np.int64)
        self._nc = 0
        self._limit = self._base_limit()

    def _base_limit(self) -> int:
        return max(64, 2 * self._cap)

    # -- public state ---------------------------------------------------------------------------------
    @property
    def n_seen(self) -> int:
        """Number of rows summarised (updates and merges)."""
        return self._n

    @property
    def n_candidates(self) -> int:
        """Number of candidate keys currently held."""
        return self._nc

    @property
    def shrinkage(self) -> float:
        """Accumulated FD shrinkage Δ: BᵀB ⪯ KᵀK ⪯ BᵀB + Δ·I."""
        return self._delta

    @property
    def c(self) -> float:
        """Approximation factor 1 + Δ/λ of :meth:`universal_set` (1.0 means exact)."""
        return 1.0 + self._delta / self.ridge

    @property
    def rank(self) -> int:
        """Number of directions in the sketch (<= min(2·ell, dim))."""
        return int(self._s.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the sketch and the candidate store (allocated capacity)."""
        return int(self._s.nbytes + self._vt.nbytes + self._ckeys.nbytes + self._cids.nbytes)

    def sketch(self) -> np.ndarray:
        """Return the FD sketch B (r x d, a copy) with BᵀB ⪯ KᵀK ⪯ BᵀB + :attr:`shrinkage`·I."""
        return self._s[:, None] * self._vt

    # -- the FD sketch ----------------------------------------------------------------------------------
    def _shrink(self, s, vt, keep):
        """Shrink to ``keep`` (>= ell) directions: subtract δ = s[keep]² from s², return new s, vt, δ."""
        if s.shape[0] <= keep:
            return s, vt, 0.0
        sk = s[keep]
        delta = float(sk) ** 2
        # (s - sk)(s + sk) avoids cancellation in s² - sk².
        s2 = (s[:keep] - sk) * (s[:keep] + sk)
        pos = int(np.count_nonzero(s2 > 0.0))
        return np.sqrt(s2[:pos]), np.ascontiguousarray(vt[:pos]), delta

    def _absorb(self, s, vt, X):
        """Absorb the rows of X into (s, vt); return new (s, vt, added shrinkage)."""
        m = X.shape[0]
        d = self.dim
        added = 0.0
        pos = 0
        while pos < m:
            if s.shape[0] + (m - pos) > self._cap and s.shape[0] > self.ell:
                s, vt, delta = self._shrink(s, vt, self.ell)
                added += delta
            r = s.shape[0]
            take = min(self._cap - r, m - pos)
            C = np.empty((r + take, d), dtype=np.float64, order="F")
            np.multiply(s[:, None], vt, out=C[:r])
            C[r:] = X[pos : pos + take]
            s, vt = _svd_rows(C)
            pos += take
        return s, vt, added

    def _upper_scores(self, A) -> np.ndarray:
        """τ̃ = aᵀ(BᵀB + λI)⁻¹a for the rows of A, via the residual off span(Vt) (no cancellation).

        Works through A in chunks of ``_SCORE_CHUNK`` rows so that the temporaries stay
        small next to the block itself.
        """
        m = A.shape[0]
        out = np.empty(m)
        lam = self.ridge
        r = self._s.shape[0]
        w = 1.0 / (self._s * self._s + lam)
        for a in range(0, m, _SCORE_CHUNK):
            Ac = np.asarray(A[a : a + _SCORE_CHUNK], dtype=np.float64)
            if r == 0:
                out[a : a + Ac.shape[0]] = np.einsum("ij,ij->i", Ac, Ac) / lam
                continue
            Y = Ac @ self._vt.T
            R = Ac - Y @ self._vt
            out[a : a + Ac.shape[0]] = np.einsum("ij,ij->i", R, R) / lam + (Y * Y) @ w
        return out

    # -- candidates -----------------------------------------------------------------------------------
    def _append_candidates(self, keys, ids):
        k = keys.shape[0]
        if k == 0:
            return
        if keys.dtype == np.float64 and self._kdtype != np.float64:
            self._kdtype = np.dtype(np.float64)
            self._ckeys = self._ckeys.astype(np.float64)
        need = self._nc + k
        if need > self._ckeys.shape[0]:
            cap = max(need, 2 * self._ckeys.shape[0], 16)
            nk = np.empty((cap, self.dim), dtype=self._kdtype)
            ni = np.empty(cap, dtype=np.int64)
            nk[: self._nc] = self._ckeys[: self._nc]
            ni[: self._nc] = self._cids[: self._nc]
            self._ckeys, self._cids = nk, ni
        self._ckeys[self._nc : need] = keys
        self._cids[self._nc : need] = ids
        self._nc = need

    def _evict(self) -> np.ndarray:
        """Re-score every candidate against the current sketch and drop those below eps."""
        nc = self._nc
        if nc:
            keep = at_least(self._upper_scores(self._ckeys[:nc]), self.eps)
            kk = int(np.count_nonzero(keep))
            if kk < nc:
                self._ckeys[:kk] = self._ckeys[:nc][keep]
                self._cids[:kk] = self._cids[:nc][keep]
                self._nc = kk
            # Release memory when far below capacity.
            if self._ckeys.shape[0] > max(64, 4 * self._nc):
                cap = max(16, 2 * self._nc)
                self._ckeys = self._ckeys[:cap].copy()
                self._cids = self._cids[:cap].copy()
        self._limit = max(self._base_limit(), 2 * self._nc)
        return self._cids[: self._nc]

    # -- public API -----------------------------------------------------------------------------------
    def update(self, X: ArrayLike, ids: ArrayLike | None = None) -> ApproxLeverage:
        """Add a block of rows.

        Parameters
        ----------
        X : array_like, shape (m, dim) or (dim,)
            Keys; float32 is read as float32 and accumulated in float64.
        ids : array_like of int, shape (m,), optional
            Ids of the rows.  Default: consecutive, continuing from ``start``
            (after explicit ids, from one past the largest id given so far).

        Returns
        -------
        ApproxLeverage
            ``self``.  A refused block (NaN/inf, wrong shape or dtype) raises
            before any state changes.
        """
        X = as_block(X, self.dim)
        big = scan_keys(X)[1]
        if big > _MAX_FD_MAGNITUDE:
            raise ValueError(
                f"X has an entry of magnitude {big:.3g} > {_MAX_FD_MAGNITUDE:g}: Frequent Directions "
                f"squares singular values, which would overflow; rescale the keys (and the ridge by "
                f"the square of the factor)"
            )
        m = X.shape[0]
        if ids is None:
            id_arr = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
        else:
            id_arr = _as_ids(ids, m)
        if m == 0:
            return self
        s, vt, added = self._absorb(self._s, self._vt, X)
        # Commit (nothing above touched self).
        self._s, self._vt = s, vt
        self._delta += added
        self._n += m
        self._next_id = max(self._next_id, int(id_arr.max()) + 1) if ids is not None else self._next_id + m
        t = self._upper_scores(X)
        adm = at_least(t, self.eps)
        if adm.any():
            self._append_candidates(X[adm], id_arr[adm])
        if self._nc > self._limit:
            self._evict()
        self._warn_c(stacklevel=3, growing=True)
        return self

    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids U with {τ_i >= eps} ⊆ U ⊆ {τ_i >= eps/c}, over all rows seen.

        Candidates are re-scored against the current sketch (those below eps are
        evicted).  Warns with :class:`ApproxGuaranteeWarning` when
        :attr:`c` > ``max_c``.
        """
        ids = self._evict()
        self._warn_c(stacklevel=3)
        return np.sort(ids)

    def _warn_c(self, *, stacklevel: int, growing: bool = False) -> None:
        """ApproxGuaranteeWarning when c > max_c (at updates and merges: once, when it first happens)."""
        if self.max_c is None or not self.c > self.max_c:
            return
        if growing:
            if self._c_warned:
                return
            self._c_warned = True
        need = self._delta / (self.max_c - 1.0) if self.max_c > 1.0 else math.inf
        grows = (
            " Candidates are admitted against upper bounds up to c times the score, so the sketch now "
            "keeps many more keys (up to about (2·ell + dim·(c − 1))/eps)."
            if growing
            else ""
        )
        warnings.warn(
            f"ApproxLeverage: accumulated shrinkage Δ = {self._delta:.4g} gives c = 1 + Δ/ridge = "
            f"{self.c:.4g} > max_c = {self.max_c:g}; the set still contains every key with ridge "
            f"score >= eps but may also hold keys with scores down to eps/c.{grows} For c <= max_c on "
            f"this stream use ridge >= {need:.4g}, or a larger ell (ApproxLeverage.suggest picks both "
            f"from a sample of the keys).",
            ApproxGuaranteeWarning,
            stacklevel=stacklevel,
        )

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, upper-bound scores τ̃) of the current set, sorted by id; τ_i <= τ̃_i <= c·τ_i."""
        self._evict()
        nc = self._nc
        order = np.argsort(self._cids[:nc])
        return self._cids[:nc][order].copy(), self._upper_scores(self._ckeys[:nc])[order]

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, keys) of the current set, sorted by id."""
        self._evict()
        nc = self._nc
        order = np.argsort(self._cids[:nc])
        return self._cids[:nc][order].copy(), self._ckeys[:nc][order].copy()

    def merge(self, other: ApproxLeverage) -> ApproxLeverage:
        """Absorb a sketch of a disjoint set of rows (same dim, eps, ell and ridge).

        FD merge: stack both sketches, shrink to at most ``2·ell`` directions;
        Δ becomes Δ₁ + Δ₂ + δ_merge and the guarantee of the class holds for the
        union.  Candidates of both are pooled and re-scored.  ``other`` is not
        modified.  The set may differ between partitions and merge orders, but
        every outcome satisfies the guarantee with the merged sketch's own c.
        """
        if not isinstance(other, ApproxLeverage):
            raise TypeError(f"can only merge another ApproxLeverage, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge a sketch with itself (the rows would be counted twice)")
        for name in ("dim", "eps", "ell", "ridge"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                raise ValueError(f"cannot merge sketches with different {name}: {a!r} != {b!r}")
        if self._nc and other._nc:
            common = np.intersect1d(self._cids[: self._nc], other._cids[: other._nc])
            if common.size:
                raise ValueError(
                    f"cannot merge: both sketches hold rows with ids {common[:5].tolist()}; "
                    f"merge requires disjoint rows (give each shard its own start or ids)"
                )
        if other._s.shape[0] == 0:
            s, vt, added = self._s, self._vt, 0.0
        elif self._s.shape[0] == 0:
            s, vt, added = other._s.copy(), other._vt.copy(), 0.0
        else:
            C = np.empty((self._s.shape[0] + other._s.shape[0], self.dim), order="F")
            r = self._s.shape[0]
            np.multiply(self._s[:, None], self._vt, out=C[:r])
            np.multiply(other._s[:, None], other._vt, out=C[r:])
            s, vt = _svd_rows(C)
            s, vt, added = self._shrink(s, vt, self._cap)
        self._s, self._vt = s, vt
        self._delta += other._delta + added
        self._n += other._n
        self._next_id = max(self._next_id, other._next_id)
        self._append_candidates(other._ckeys[: other._nc], other._cids[: other._nc])
        self._evict()
        self._warn_c(stacklevel=3, growing=True)
        return self

    @staticmethod
    def suggest(
        sample: ArrayLike,
        *,
        c: float = 1.5,
        ell: int | None = None,
        n_rows: int | None = None,
        margin: float | None = None,
    ) -> ApproxSuggestion:
        """Choose ``ell`` and ``ridge`` for a target approximation factor c from a sample of the keys.

        Parameters
        ----------
        sample : array_like, shape (m, d)
            Keys: all of them, or a uniform random sample of the stream.
        c : float, default 1.5
            Target factor c = 1 + Δ/ridge (> 1).
        ell : int, optional
            Directions kept per shrink (default ``min(d, 64)``); memory is about
            ``2·ell`` x d floats plus the candidates.
        n_rows : int, optional
            Rows of the whole stream when ``sample`` is a sample of it (default:
            the sample is the stream).
        margin : float, optional
            Safety factor on the tail energy estimated from a sample (default 1
            when the sample is the stream, 2 otherwise).

        Returns
        -------
        ApproxSuggestion
            ``(ell, ridge, tail)``: ``ridge = margin·(n_rows/m)·min_k ‖S − S_k‖_F² /
            ((ell + 1 − k)(c − 1))`` over 0 <= k <= ell, with S the sample and
            ``tail`` the estimated ``min_k ‖A − A_k‖_F² / (ell + 1 − k)``.

        Notes
        -----
        Guarantee: by bound (2) of the module docstring, Δ <= ‖A − A_k‖_F² / (ell + 1 − k)
        for every k <= ell, in any block order and through merges.  So when the
        stream is exactly the rows of ``sample`` (``n_rows`` not given), an
        ``ApproxLeverage(d, eps, ell=ell, ridge=ridge)`` over it ends with
        :attr:`c` <= c.  For a sample of a longer stream the same holds whenever the
        stream's tail energy ‖A − A_k‖_F² (k the minimiser) is at most
        ``margin·(n_rows/m)`` times the sample's; a uniform sample estimates it
        without bias and ``margin`` absorbs the sampling error.  A ridge that is
        too small is reported at update time by :class:`ApproxGuaranteeWarning`.

        Examples
        --------
        >>> import numpy as np
        >>> from streamlev.approx import ApproxLeverage
        >>> rng = np.random.default_rng(0)
        >>> K = rng.standard_normal((3000, 6)) @ rng.standard_normal((6, 128)) + 0.05 * rng.standard_normal((3000, 128))
        >>> ell, ridge, _ = ApproxLeverage.suggest(K, c=1.5, ell=16)
        >>> sk = ApproxLeverage(128, 0.1, ell=ell, ridge=ridge)
        >>> for block in np.array_split(K, 6):
        ...     _ = sk.update(block)
        >>> bool(sk.c <= 1.5)
        True
        """
        S = np.asarray(as_keys(sample, name="sample"), dtype=np.float64)
        m, d = S.shape
        if m == 0:
            raise ValueError("sample holds no keys; pass some rows of the stream")
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, numbers.Real) or not (1.0 < float(c) < math.inf):
            raise ValueError(f"c must be a finite number > 1 (the target 1 + Δ/ridge), got {c!r}")
        ell = min(d, 64) if ell is None else check_positive_int(ell, "ell")
        if ell > d:
            raise ValueError(f"ell must be at most the key dimension d = {d}, got {ell}")
        n_rows = m if n_rows is None else check_positive_int(n_rows, "n_rows")
        if margin is None:
            margin = 1.0 if n_rows == m else 2.0
        if isinstance(margin, (bool, np.bool_)) or not isinstance(margin, numbers.Real) or not margin >= 1.0:
            raise ValueError(f"margin must be a number >= 1, got {margin!r}")
        sv = sla.svd(S, compute_uv=False, check_finite=False)
        sq = np.zeros(max(d, ell) + 1)
        sq[: sv.size] = sv**2
        tails = np.cumsum(sq[::-1])[::-1]  # tails[k] = Σ_{i >= k} σ_i² = ‖S − S_k‖_F²
        k = np.arange(ell + 1)
        tail = float(margin) * (n_rows / m) * float(np.min(tails[k] / (ell + 1 - k)))
        floor = 1e-12 * float(tails[0]) * (n_rows / m) or np.finfo(np.float64).tiny  # ridge must be > 0
        return ApproxSuggestion(int(ell), max(tail / (float(c) - 1.0), floor), tail)

    # -- serialisation ----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialise (exact round trip) with :func:`streamlev.serialize.pack`.

        Canonical: candidates are re-scored first (evicted in place, as a
        result would) and written sorted by id, so the bytes do not depend on
        whether results were asked for before.
        """
        self._evict()
        order = np.argsort(self._cids[: self._nc], kind="stable")
        meta = {
            "state_version": _STATE_VERSION,
            "dim": self.dim,
            "eps": self.eps,
            "ell": self.ell,
            "ridge": self.ridge,
            "start": self.start,
            "max_c": -1.0 if self.max_c is None else self.max_c,
            "delta": self._delta,
            "n_seen": self._n,
            "next_id": self._next_id,
            "limit": self._limit,
            "key_dtype": self._kdtype.name,
        }
        arrays = {
            "s": self._s,
            "vt": self._vt,
            "cand_keys": self._ckeys[: self._nc][order],
            "cand_ids": self._cids[: self._nc][order],
        }
        return pack(_FAMILY, meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> ApproxLeverage:
        """Restore a sketch written by :meth:`to_bytes`; anything malformed raises ValueError."""
        meta, arrays = unpack(data, _FAMILY)

        def bad(msg):
            return ValueError(f"not a valid ApproxLeverage state: {msg}")

        spec = {
            "state_version": int,
            "dim": int,
            "eps": float,
            "ell": int,
            "ridge": float,
            "start": int,
            "max_c": float,
            "delta": float,
            "n_seen": int,
            "next_id": int,
            "limit": int,
            "key_dtype": str,
        }
        if set(meta) != set(spec) or set(arrays) != {"s", "vt", "cand_keys", "cand_ids"}:
            raise bad("unexpected fields")
        for k, typ in spec.items():
            v = meta[k]
            if typ is float:
                ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            elif typ is int:
                ok = isinstance(v, int) and not isinstance(v, bool)
            else:
                ok = isinstance(v, typ)
            if not ok:
                raise bad(f"field {k!r} has the wrong type")
        if meta["state_version"] != _STATE_VERSION:
            raise bad(f"state version {meta['state_version']} is not supported")
        try:
            sk = cls(
                meta["dim"],
                meta["eps"],
                ell=meta["ell"],
                ridge=meta["ridge"],
                start=meta["start"],
                max_c=None if meta["max_c"] == -1.0 else meta["max_c"],
            )
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
        d = sk.dim
        s, vt, ck, ci = arrays["s"], arrays["vt"], arrays["cand_keys"], arrays["cand_ids"]
        r = s.shape[0] if s.ndim == 1 else -1
        if meta["key_dtype"] not in ("float32", "float64"):
            raise bad(f"unknown key dtype {meta['key_dtype']!r}")
        if (
            s.dtype != np.float64
            or vt.dtype != np.float64
            or ck.dtype != np.dtype(meta["key_dtype"])
            or ci.dtype != np.int64
        ):
            raise bad("wrong array dtypes")
        if r < 0 or r > min(sk._cap, d) or vt.shape != (r, d):
            raise bad(f"sketch shapes {s.shape}, {vt.shape} do not fit dim={d}, ell={sk.ell}")
        if ci.ndim != 1 or ck.shape != (ci.shape[0], d):
            raise bad(f"candidate shapes {ck.shape}, {ci.shape} do not fit dim={d}")
        if not (np.isfinite(s).all() and np.isfinite(vt).all() and np.isfinite(ck).all()):
            raise bad("non-finite values")
        if r and (np.any(s <= 0) or np.any(np.diff(s) > 0)):
            raise bad("singular values must be positive and descending")
        if r and float(s[0]) > 1e154:
            raise bad("singular values too large: their squares would overflow")
        delta = float(meta["delta"])
        if not (math.isfinite(delta) and delta >= 0):
            raise bad("shrinkage must be finite and >= 0")
        if meta["n_seen"] < 0 or ci.shape[0] > meta["n_seen"] or meta["limit"] < 0:
            raise bad("inconsistent counts")
        sk._s, sk._vt = np.ascontiguousarray(s), np.ascontiguousarray(vt)
        sk._delta = delta
        sk._n = meta["n_seen"]
        sk._next_id = meta["next_id"]
        if np.unique(ci).size != ci.size:
            raise bad("candidate ids repeat")
        sk._kdtype = ck.dtype
        sk._ckeys, sk._cids, sk._nc = np.ascontiguousarray(ck), np.ascontiguousarray(ci), ci.shape[0]
        sk._limit = meta["limit"]
        return sk

    def __repr__(self) -> str:
        return (
            f"ApproxLeverage(dim={self.dim}, eps={self.eps}, ell={self.ell}, ridge={self.ridge}, "
            f"n_seen={self._n}, n_candidates={self._nc}, c={self.c:.4g})"
        )
