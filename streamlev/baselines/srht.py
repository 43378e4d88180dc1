"""Fast approximate leverage scores by SRHT and JL (Drineas, Magdon-Ismail, Mahoney, Woodruff, JMLR 2012).

The algorithm: Π₁K, a subsampled randomised Hadamard transform of the keys (r₁ rows), gives a
triangular R with QR(Π₁K) = QR; the scores are the squared row norms of ``K R⁻¹ Π₂``, with Π₂
a d x r₂ Gaussian Johnson–Lindenstrauss matrix that makes scoring O(d·r₂) per row.

Streaming form.  Row i of K meets column i of the Hadamard matrix: with a random sign D_i and r₁
sampled Hadamard rows j_1..j_r₁, Π₁K = r₁^{-1/2}·Σ_i h_i D_i k_iᵀ where (h_i)_t = (−1)^{popcount(j_t & i)}.
The j_t are drawn uniformly from [0, 2⁶²), so for every n <= 2⁶² they are uniform samples (with
replacement) of the rows of the Hadamard matrix of the next power of two above n: the length of
the stream need not be known.  The sign (−1)^popcount(j & i) factors into the
sign of the low 8 bits of i and j times the sign of the rest, so each aligned group of 256 row
ids costs one 256 x 256 Hadamard product and a gather of r₁ rows: O(256·d) work per row plus
O(r₁·d) per group of 256 rows.  The sketch is linear, so two sketches of
disjoint rows with the same seed merge by addition.

Guarantee (the paper's main theorem).  For ε in (0, 1/2], with r₁ = O(ε⁻²·d·ln n·ln(ε⁻²·d·ln n))
and r₂ = O(ε⁻²·ln n), every estimate satisfies |τ̃_i − τ_i| <= ε·τ_i with probability >= 0.8.
Its two steps, each checked by the tests on its own:

* Π₁K is a (1 ± δ) subspace embedding, so τ_i/(1 + δ)² <= ‖k_i R⁻¹‖² <= τ_i/(1 − δ)²;
* the JL step multiplies each of the n squared norms by a factor in [1 − ε_JL, 1 + ε_JL], all at
  once with probability >= 1 − 1/n, when r₂ >= 4·ln n/(ε_JL²/2 − ε_JL³/3) (Dasgupta and Gupta 2003).

``jl_eps`` sets ε_JL and r₂ (chosen at the second pass, when n is known); when that r₂ is not
below the rank the JL step would save nothing and R⁻¹ is applied exactly.
"""

from __future__ import annotations

import math

import numpy as np

from .._threads import blas_threads
from .._validate import check_positive_int
from ._base import TwoPassBaseline, hash64, pinv_map

__all__ = ["SRHTLeverage", "jl_dim"]

#: Bits of the row id handled by one small Hadamard transform (groups of 2^8 = 256 rows).
_LOW_BITS = 8
_LOW = 1 << _LOW_BITS
_H_SMALL = []


def _hadamard() -> np.ndarray:
    """The 256 x 256 Sylvester Hadamard matrix, entries (−1)^popcount(j & i) (built once)."""
    if not _H_SMALL:
        i = np.arange(_LOW)
        _H_SMALL.append(1.0 - 2.0 * (np.bitwise_count(i[:, None] & i[None, :]) & 1))
    return _H_SMALL[0]


def jl_dim(n: int, jl_eps: float) -> int:
    """r₂ = ⌈4·ln n / (ε²/2 − ε³/3)⌉: a JL map into r₂ dimensions keeps n norms within 1 ± ε w.p. >= 1 − 1/n."""
    return int(math.ceil(4.0 * math.log(max(n, 2)) / (jl_eps**2 / 2.0 - jl_eps**3 / 3.0)))


class SRHTLeverage(TwoPassBaseline):
    """Approximate leverage scores from a subsampled randomised Hadamard transform and a JL map (two passes).

    Parameters
    ----------
    dim : int
        Key dimension d.
    eps : float in (0, 1]
        Threshold on the estimated scores.
    sketch_rows : int
        r₁, sampled Hadamard rows (state ``8·r₁·d`` bytes); the module docstring has the
        guarantee's r₁.
    jl_eps : float in (0, 1) or None, default 0.5
        ε of the JL step; r₂ = :func:`jl_dim` (n, jl_eps).  None: no JL step (exact R⁻¹).
    ridge : float, default 0.0
        λ >= 0 (the ridge part is added exactly to the sketch before the QR).
    seed : int, default 0
        Names the random signs, Hadamard rows and JL matrix.
    start : int, default 0
        Id of the first row.

    Notes
    -----
    Passes: two (``update`` then ``second_pass``; for keys held in memory, call both on the
    array).  Memory: the ``r₁ x d`` sketch and the sampled row indices, then a ``d x r₂`` map and
    the selected ids.  Work: O((256 + r₁/256)·d) per row in pass 1, O(d·min(r₂, d)) per row in pass 2.

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines import SRHTLeverage
    >>> K = np.random.default_rng(0).standard_normal((4000, 4))
    >>> K[9] *= 100
    >>> sk = SRHTLeverage(4, 0.5, sketch_rows=400, seed=3).update(K)
    >>> sk.second_pass(K).universal_set()
    array([9])
    """

    def __init__(
        self,
        dim: int,
        eps: float,
        *,
        sketch_rows: int,
        jl_eps: float = 0.5,
        ridge: float = 0.0,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        self.sketch_rows = check_positive_int(sketch_rows, "sketch_rows")
        if jl_eps is not None:
            jl_eps = float(jl_eps)
            if not 0.0 < jl_eps < 1.0:
                raise ValueError(f"jl_eps must lie in (0, 1) or be None (no JL step), got {jl_eps!r}")
        self.jl_eps = jl_eps
        rng = np.random.default_rng([self.seed, 0x5248])
        self._rows = rng.integers(0, 2**62, size=self.sketch_rows, dtype=np.int64)
        self._S = np.zeros((self.sketch_rows, self.dim))
        self.jl_dim_ = None  # r₂ used by the second pass (None: exact R⁻¹)

    @staticmethod
    def size_for_bytes(dim: int, nbytes: int) -> int:
        """The ``sketch_rows`` whose sketch (and row indices) fill ``nbytes``."""
        return max(1, int(nbytes) // (8 * int(dim) + 8))

    @property
    def nbytes(self) -> int:
        """Bytes of the sketch, its Hadamard row indices, the scoring map and the selected ids."""
        return int(self._S.nbytes + self._rows.nbytes + self._found_nbytes())

    def _sketch(self, B: np.ndarray, ids: np.ndarray) -> None:
        # (−1)^popcount(j & i) factors over the low _LOW_BITS bits and the rest of i and j, so for the
        # rows of one aligned group of 2^_LOW_BITS ids (same high part) the sampled Hadamard rows are
        # ±(rows of the small Hadamard matrix): one small transform per group, then a gather.
        B = np.asarray(B, dtype=np.float64)
        sign = np.where((hash64(ids, self.seed, 1) >> np.uint64(63)) == 0, 1.0, -1.0) / math.sqrt(self.sketch_rows)
        hi = ids >> _LOW_BITS
        lo = ids & (_LOW - 1)
        cuts = np.flatnonzero(np.diff(hi)) + 1
        j_lo = self._rows & (_LOW - 1)
        j_hi = self._rows >> _LOW_BITS
        Z = np.zeros((_LOW, self.dim))
        with blas_threads(1):
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, ids.size]):
                Z[:] = 0.0
                Z[lo[a:b]] = B[a:b] * sign[a:b, None]
                T = _hadamard() @ Z
                parity = np.bitwise_count(j_hi & hi[a]) & 1
                self._S += (1.0 - 2.0 * parity)[:, None] * T[j_lo]

    def _scoring_map(self) -> np.ndarray:
        P = pinv_map(self._S, self.ridge)
        if self.jl_eps is None:
            return P
        r2 = jl_dim(self._n, self.jl_eps)
        if r2 >= P.shape[1]:
            return P
        self.jl_dim_ = r2
        G = np.random.default_rng([self.seed, 0x4A4C]).standard_normal((P.shape[1], r2)) / math.sqrt(r2)
        return P @ G

    def sketch(self) -> np.ndarray:
        """A copy of the ``r₁ x d`` sketch Π₁K."""
        return self._S.copy()

    _merge_names = ("dim", "eps", "ridge", "seed", "sketch_rows", "jl_eps")

    def _merge_sketch(self, other: SRHTLeverage) -> None:
        self._S += other._S
