"""The leverage score of NVIDIA kvpress's ``LeverageScorePress``, computed the way its users run it.

The press (kvpress, after Chari and Van Durme 2025, "Compactor") scores the keys of one head, held
in memory, as follows: centre the keys over the sequence, project them with a Gaussian matrix
Φ (d x k, entries N(0, 1/k), k = 48 by default), cast to float32, form G = XᵀX, factor G + jI by
Cholesky with a jitter j that starts at 1e-2 and grows tenfold on failure (five tries), and score
row i as x_iᵀ(G + jI)⁻¹x_i, clamped at 0.  The press then ranks the keys by the z-score of these
values; z-scoring is monotone, so this module thresholds the raw scores at eps instead.

What the score is.  For k >= rank of the centred keys K_c, Φ preserves their row space (almost
surely), so without jitter the score equals the leverage of the centred keys,
x_iᵀ(K_cᵀK_c)⁺x_i.  The jitter is absolute (1e-2 whatever the scale of the keys) and only lowers
every score: for k >= d the scores are at most the centred leverage, and they equal it up to
float32 rounding when j is small against the smallest nonzero eigenvalue of G.  For k < rank the
projection merges directions and the scores have no relative-error guarantee.  Centring also
changes the quantity: the centred leverage of a key is not its leverage among the uncentred
keys, which is what bounds attention (docs/design.md, section "Leverage scores and the universal set").
"""

from __future__ import annotations

import math
from typing import NoReturn

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg as sla

from .._validate import check_positive_int
from ._base import Baseline

__all__ = ["KVPressLeverage"]


class KVPressLeverage(Baseline):
    """kvpress's centred, Gaussian-projected, jittered-Cholesky leverage score (keys in memory).

    Parameters
    ----------
    dim : int
        Key dimension d.
    eps : float in (0, 1]
        Threshold on the scores.
    sketch_dim : int, default 48
        k, columns of the Gaussian projection (the press's default).
    jitter : float, default 1e-2
        First jitter added to the diagonal of G before the Cholesky factorisation.
    max_tries : int, default 5
        Cholesky attempts, the jitter growing tenfold after each failure.
    seed : int, default 0
        Names the Gaussian projection.
    ridge : float, default 0.0
        Ignored (the press has none); accepted so that every baseline takes the same arguments.
    start : int, default 0
        Id of the first row.

    Notes
    -----
    Passes: one, holding every key (float32, as the press computes): it needs the mean of all
    keys before it can score any.  Memory: ``4·n·d`` bytes plus the projection.  Not mergeable.

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines import KVPressLeverage
    >>> K = np.random.default_rng(0).standard_normal((2000, 8))
    >>> K[5] *= 50
    >>> KVPressLeverage(8, 0.5, seed=0).update(K).universal_set()
    array([5])
    """

    in_memory = True

    def __init__(
        self,
        dim: int,
        eps: float,
        *,
        sketch_dim: int = 48,
        jitter: float = 1e-2,
        max_tries: int = 5,
        seed: int = 0,
        ridge: float = 0.0,
        start: int = 0,
    ) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        self.sketch_dim = check_positive_int(sketch_dim, "sketch_dim")
        self.jitter = float(jitter)
        if not self.jitter >= 0.0 or not math.isfinite(self.jitter):
            raise ValueError(f"jitter must be a finite number >= 0, got {jitter!r}")
        self.max_tries = check_positive_int(max_tries, "max_tries")
        rng = np.random.default_rng([self.seed, 0x4B56])
        self._phi = (rng.standard_normal((self.dim, self.sketch_dim)) / math.sqrt(self.sketch_dim)).astype(np.float32)
        self._blocks = []
        self.jitter_used_ = None

    @property
    def nbytes(self) -> int:
        """Bytes of the keys held (float32) and of the projection."""
        return int(sum(b.nbytes for b in self._blocks) + self._phi.nbytes)

    def update(self, X: ArrayLike) -> KVPressLeverage:
        """Hold a block (m, d) or one row (d,) as float32; returns self."""
        B = self._block(X)
        self._blocks.append(np.array(B, dtype=np.float32))
        self._take_ids(B.shape[0])
        return self

    def _cholesky(self, G: np.ndarray) -> np.ndarray:
        eye = np.eye(G.shape[0], dtype=G.dtype)
        cur = last = self.jitter
        for _ in range(self.max_tries):
            try:
                L = np.linalg.cholesky(G + np.float32(cur) * eye)
                self.jitter_used_ = cur
                return L
            except np.linalg.LinAlgError:
                last, cur = cur, max(1e-8, 1e-2 if cur == 0.0 else 10.0 * cur)
        raise np.linalg.LinAlgError(
            f"float32 Cholesky failed after {self.max_tries} tries (last jitter {last:g}, largest diagonal entry "
            f"of G {float(np.max(np.diag(G))):.3g}); the press raises here too"
        )

    def all_scores(self) -> np.ndarray:
        """The press's score of every key held (float64 copy of the float32 result)."""
        if not self._blocks:
            return np.zeros(0)
        K = np.concatenate(self._blocks)
        X = (K - K.mean(axis=0, dtype=np.float32)) @ self._phi
        G = X.T @ X
        L = self._cholesky(np.float32(0.5) * (G + G.T))
        Y = sla.cho_solve((L, True), X.T, check_finite=False)
        return np.maximum(np.einsum("ij,ji->i", X, Y), 0.0).astype(np.float64)

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the keys whose score reaches eps."""
        tau = self.all_scores()
        keep = np.flatnonzero(tau >= self.eps)
        return (self.start + keep).astype(np.int64), tau[keep]

    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids of the keys whose score reaches eps."""
        return self.scores()[0]

    def merge(self, other: Baseline) -> NoReturn:
        """Not mergeable: raises NotImplementedError (the score centres by the mean of all keys)."""
        raise NotImplementedError(
            "KVPressLeverage cannot merge: its score centres the keys by the mean of all of them and "
            "factors their projected Gram matrix as a whole; concatenate the keys and feed one sketch"
        )
