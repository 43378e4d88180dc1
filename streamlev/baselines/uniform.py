"""Uniform row sampling, the naive baseline: a bottom-k sample of the rows, scored against itself.

Each row gets a priority, a hash of its id uniform on [0, 2⁶⁴); the sketch keeps the k rows of
smallest priority, a uniform sample of k of the n rows without replacement (and mergeable: the
bottom k of a union is the bottom k of the two bottom-k's).  Scores are taken against the
rescaled sample, τ̃_i = k_iᵀ((n/k)·SᵀS + λI)⁺k_i, for the sampled rows only.

Guarantee.  Every row is in the sample with probability k/n.  Spectral accuracy depends on the
coherence μ = (n/d)·max_i τ_i (1 <= μ <= n/d): by the matrix Chernoff bound (Tropp 2011, which
also holds for sampling without replacement), k >= 3·μ·d·ln(2d/f)/δ² gives
(1 − δ)KᵀK ⪯ (n/k)SᵀS ⪯ (1 + δ)KᵀK, hence τ_i/(1 + δ) <= τ̃_i <= τ_i/(1 − δ), with probability
>= 1 − f.  Keys with a few heavy rows have μ close to n/d: there uniform sampling misses most of
the universal set, which is why it is the baseline.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from .._validate import check_positive_int
from ._base import Baseline, hash64, pinv_map, row_sqnorms

__all__ = ["UniformSampling", "rows_for_coherence"]


def rows_for_coherence(dim: int, coherence: float, delta: float, fail: float) -> int:
    """K = ⌈3·μ·d·ln(2d/f)/δ²⌉ for a (1 ± δ) spectral approximation with probability >= 1 − f."""
    return int(math.ceil(3.0 * coherence * dim * math.log(2.0 * dim / fail) / delta**2))


class UniformSampling(Baseline):
    """One pass; keeps k rows chosen uniformly at random; scores them against the rescaled sample.

    Parameters
    ----------
    dim : int
        Key dimension d.
    eps : float in (0, 1]
        Threshold on the estimated scores of the sampled rows.
    sample_rows : int
        k, rows kept (the natural size; state about ``(8·d + 16)·k`` bytes).
    ridge : float, default 0.0
        λ >= 0.
    seed : int, default 0
        Names the priorities; sketches merge only with the same seed.
    start : int, default 0
        Id of the first row.

    Notes
    -----
    Passes: one.  Memory: at most 2·k rows between compactions.  Mergeable.

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines import UniformSampling
    >>> sk = UniformSampling(4, 0.05, sample_rows=100, seed=0).update(np.ones((1000, 4)))
    >>> sk.n_seen, len(sk.sample()[0])
    (1000, 100)
    """

    def __init__(
        self,
        dim: int,
        eps: float,
        *,
        sample_rows: int,
        ridge: float = 0.0,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        self.sample_rows = check_positive_int(sample_rows, "sample_rows")
        self._keys = np.zeros((0, self.dim))
        self._ids = np.zeros(0, dtype=np.int64)
        self._pri = np.zeros(0, dtype=np.uint64)

    @staticmethod
    def size_for_bytes(dim: int, nbytes: int) -> int:
        """The ``sample_rows`` whose sample fills ``nbytes``."""
        return max(1, int(nbytes) // (8 * int(dim) + 16))

    @property
    def nbytes(self) -> int:
        """Bytes of the sampled rows, their ids and priorities."""
        return int(self._keys.nbytes + self._ids.nbytes + self._pri.nbytes)

    def _compact(self, limit: int) -> None:
        if self._ids.size > limit:
            keep = np.argsort(self._pri, kind="stable")[: self.sample_rows]
            self._keys, self._ids, self._pri = self._keys[keep], self._ids[keep], self._pri[keep]

    def update(self, X: ArrayLike) -> UniformSampling:
        """Absorb a block (m, d) or one row (d,); returns self."""
        B = np.asarray(self._block(X), dtype=np.float64)
        ids = self._take_ids(B.shape[0])
        pri = hash64(ids, self.seed, 2)
        if self._ids.size >= self.sample_rows:  # only rows below the current k-th priority can enter
            cut = np.sort(self._pri)[self.sample_rows - 1]
            low = pri < cut
            B, ids, pri = B[low], ids[low], pri[low]
        self._keys = np.vstack([self._keys, B])
        self._ids = np.concatenate([self._ids, ids])
        self._pri = np.concatenate([self._pri, pri])
        self._compact(2 * self.sample_rows)
        return self

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, rows) of the uniform sample, sorted by id."""
        self._compact(self.sample_rows)
        order = np.argsort(self._ids, kind="stable")
        return self._ids[order], self._keys[order]

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores against the rescaled sample) of the sampled rows whose score reaches eps."""
        ids, keys = self.sample()
        if ids.size == 0:
            return ids, np.zeros(0)
        P = pinv_map(keys * math.sqrt(self._n / ids.size), self.ridge)
        tau = row_sqnorms(keys, P)
        keep = tau >= self.eps
        return ids[keep], tau[keep]

    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids of the sampled rows whose estimated score reaches eps."""
        return self.scores()[0]

    def merge(self, other: UniformSampling) -> UniformSampling:
        """Absorb the sample of a disjoint set of rows (same dim, eps, ridge, seed and sample_rows)."""
        self._check_merge(other, ("dim", "eps", "ridge", "seed", "sample_rows"))
        self._keys = np.vstack([self._keys, other._keys])
        self._ids = np.concatenate([self._ids, other._ids])
        self._pri = np.concatenate([self._pri, other._pri])
        self._absorb_ranges(other)
        self._compact(self.sample_rows)
        return self
