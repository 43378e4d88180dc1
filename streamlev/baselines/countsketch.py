"""CountSketch + QR leverage scores (Clarkson and Woodruff, STOC 2013): a linear, mergeable sketch.

Pass 1 keeps ``SK``, an ``m x d`` CountSketch of the keys: row i of K is added, with a random
sign, to one random row of the sketch (both chosen by a hash of the row id, so the sketch is a
linear function of the rows and two sketches of disjoint rows with the same seed add up to the
sketch of all rows).  Pass 2 scores every row against the sketch, ``τ̃_i = k_iᵀ((SK)ᵀSK + λI)⁺k_i``,
computed from a QR/SVD of the column-normalised sketch.

Guarantee.  When S is a (1 ± δ) subspace embedding of the column space of K (of ``[K; √λI]`` for
λ > 0), i.e. (1 − δ)‖Kx‖ <= ‖SKx‖ <= (1 + δ)‖Kx‖ for all x, every score satisfies

    τ_i / (1 + δ)² <= τ̃_i <= τ_i / (1 − δ)².

A CountSketch with ``m >= (r² + r) / (f·δ²)`` rows (r = rank K <= d) is such an embedding with
probability at least 1 − f (Nelson and Nguyen, FOCS 2013; Meng and Mahoney, STOC 2013), so

    {i : τ_i >= (1 + δ)²·eps} ⊆ universal_set() ⊆ {i : τ_i >= (1 − δ)²·eps}

with probability at least 1 − f over the seed.  :func:`rows_for` gives that m.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_positive_int
from ._base import TwoPassBaseline, hash64, pinv_map

__all__ = ["CountSketchLeverage", "rows_for"]


def rows_for(rank: int, delta: float, fail: float) -> int:
    """Sketch rows m = ⌈(r² + r)/(f·δ²)⌉ for a (1 ± δ) embedding of rank r with probability >= 1 − f."""
    return int(math.ceil((rank * rank + rank) / (fail * delta * delta)))


class CountSketchLeverage(TwoPassBaseline):
    """Approximate leverage scores from a CountSketch of the keys and a QR of the sketch (two passes).

    Parameters
    ----------
    dim : int
        Key dimension d.
    eps : float in (0, 1]
        Threshold: :meth:`universal_set` returns the rows whose estimated score reaches it.
    sketch_rows : int
        m, rows of the sketch (its natural size; state ``8·m·d`` bytes).  ``rows_for(d, δ, f)``
        gives the m of the (1 ± δ) guarantee with probability >= 1 − f (module docstring).
    ridge : float, default 0.0
        λ >= 0 (ridge leverage when > 0; the ridge part is added exactly, not sketched).
    seed : int, default 0
        Names the hash functions; sketches merge only with the same seed.
    start : int, default 0
        Id of the first row.

    Notes
    -----
    Passes: two (``update`` then ``second_pass`` over the same rows).  Memory: the ``m x d``
    sketch, then a ``d x d`` scoring map and the selected ids.  Work: O(d) per row in pass 1
    (a sparse product), O(m·d²) once, O(d²) per row in pass 2.  Mergeable (linear).

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines.countsketch import CountSketchLeverage, rows_for
    >>> K = np.random.default_rng(0).standard_normal((5000, 4))
    >>> K[7] *= 100
    >>> sk = CountSketchLeverage(4, 0.5, sketch_rows=rows_for(4, 0.5, 0.1), seed=1).update(K)
    >>> sk.second_pass(K).universal_set()
    array([7])
    """

    def __init__(
        self,
        dim: int,
        eps: float,
        *,
        sketch_rows: int,
        ridge: float = 0.0,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        self.sketch_rows = check_positive_int(sketch_rows, "sketch_rows")
        self._S = np.zeros((self.sketch_rows, self.dim))

    @staticmethod
    def size_for_bytes(dim: int, nbytes: int) -> int:
        """The ``sketch_rows`` whose sketch fills ``nbytes``."""
        return max(1, int(nbytes) // (8 * int(dim)))

    @property
    def nbytes(self) -> int:
        """Bytes of the sketch, the scoring map and the selected ids."""
        return int(self._S.nbytes + self._found_nbytes())

    def _sketch(self, B: np.ndarray, ids: np.ndarray) -> None:
        h = hash64(ids, self.seed)
        bucket = (h % np.uint64(self.sketch_rows)).astype(np.int64)
        sign = np.where((h >> np.uint64(63)) == 0, 1.0, -1.0)
        from scipy import sparse  # noqa: PLC0415 - only this method needs it

        m = B.shape[0]
        S = sparse.csr_matrix((sign, (bucket, np.arange(m))), shape=(self.sketch_rows, m))
        self._S += S @ np.asarray(B, dtype=np.float64)

    def _scoring_map(self) -> np.ndarray:
        return pinv_map(self._S, self.ridge)

    def sketch(self) -> np.ndarray:
        """A copy of the ``m x d`` sketch SK."""
        return self._S.copy()

    _merge_names = ("dim", "eps", "ridge", "seed", "sketch_rows")

    def _merge_sketch(self, other: CountSketchLeverage) -> None:
        self._S += other._S
