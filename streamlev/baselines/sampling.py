"""Online ridge-leverage row sampling (Cohen, Musco and Pachocki, "Online Row Sampling", APPROX 2016).

Rows arrive one by one and each is kept or dropped at once, for good.  Row i gets the online
score l̃_i = min((1 + ε)·k_iᵀ(ÃᵀÃ + λI)⁺k_i, 1) against the weighted sample Ã kept so far (1 for a
row outside the sample's span when λ = 0), is kept with probability p_i = min(c·l̃_i, 1) and, when
kept, enters Ã as k_i/√p_i.

Guarantee (the paper's theorem for its algorithm Online-Sample).  With c = 8·ln d/ε² and λ > 0,
with probability at least 1 − 1/d

    (1 − ε)(KᵀK + λI) ⪯ ÃᵀÃ + λI ⪯ (1 + ε)(KᵀK + λI),

using O(d·ln d·ln(ε‖K‖₂²/λ)/ε²) rows.  The sketch scores its kept rows against the final sample,
τ̃_i = k_iᵀ(ÃᵀÃ + λI)⁻¹k_i, so on that event τ_i/(1 + ε) <= τ̃_i <= τ_i/(1 − ε).  A row with τ_i >= eps
has an online score >= eps (scores only fall as rows are added), so it is kept for sure when
c·eps >= 1; with a smaller c it is kept with probability >= c·eps.

Rows are decided in chunks of :data:`CHUNK` rows against the sample before the chunk: that
overestimates the online scores (fewer rows in the sample), which only raises the sampling
probabilities, so the guarantee stands and the sample can only grow.
"""

from __future__ import annotations

import math
from typing import NoReturn

import numpy as np
from numpy.typing import ArrayLike

from .._threads import blas_threads
from ._base import Baseline, pinv_map, row_sqnorms

__all__ = ["OnlineRowSampling", "oversample_for"]

#: Rows decided against one state of the sample.
CHUNK = 32


def oversample_for(dim: int, rel_error: float) -> float:
    """C = 8·ln d / ε², the oversampling of the paper's guarantee (at least 1)."""
    return max(1.0, 8.0 * math.log(max(int(dim), 2)) / float(rel_error) ** 2)


class OnlineRowSampling(Baseline):
    """One pass; keeps a weighted sample of rows chosen by their online ridge leverage; scores from it.

    Parameters
    ----------
    dim : int
        Key dimension d.
    eps : float in (0, 1]
        Threshold: :meth:`universal_set` returns the kept rows whose score against the final
        sample reaches it.
    oversample : float
        c >= 1 in p_i = min(c·l̃_i, 1), the natural size parameter (the sample holds about
        c·Σ l̃_i rows).  ``oversample_for(d, ε)`` = 8·ln d/ε² gives the paper's guarantee.
    rel_error : float in (0, 1), default 0.5
        ε in the online scores' factor (1 + ε).
    ridge : float, default 0.0
        λ >= 0.  The paper's bound on the sample size needs λ > 0; λ = 0 works (rows outside the
        sample's span get online score 1).
    seed : int, default 0
        Names the coin flips.
    start : int, default 0
        Id of the first row.

    Notes
    -----
    Passes: one.  Memory: the kept rows (float64, with ids and probabilities); their number is
    random, about c·d·ln(n/d) for λ = 0.  Work: O(d²) per row plus an SVD of a d x d factor per
    chunk that added rows.  Not mergeable: each decision depends on the rows kept before it.

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines import OnlineRowSampling
    >>> K = np.random.default_rng(0).standard_normal((4000, 4))
    >>> K[9] *= 100
    >>> sk = OnlineRowSampling(4, 0.5, oversample=20, seed=2).update(K)
    >>> sk.universal_set()
    array([9])
    """

    def __init__(
        self,
        dim: int,
        eps: float,
        *,
        oversample: float,
        rel_error: float = 0.5,
        ridge: float = 0.0,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        c = float(oversample)
        if not c >= 1.0 or not math.isfinite(c):
            raise ValueError(f"oversample must be a finite number >= 1, got {oversample!r}")
        self.oversample = c
        e = float(rel_error)
        if not 0.0 < e < 1.0:
            raise ValueError(f"rel_error must lie in (0, 1), got {rel_error!r}")
        self.rel_error = e
        self._rng = np.random.default_rng([self.seed, 0x434D50])
        self._buf = np.zeros((0, self.dim))  # kept rows (first _kept rows used; grows by doubling)
        self._idbuf = np.zeros(0, dtype=np.int64)
        self._pbuf = np.zeros(0)
        self._kept = 0
        self._R = np.zeros((0, self.dim))  # triangular factor of the weighted sample
        self._P = np.zeros((self.dim, 0))  # pinv map of the sample (+ λI)
        self._span = np.zeros((0, self.dim))  # orthonormal basis of the sample's row space (λ = 0)
        self._refresh()

    @property
    def nbytes(self) -> int:
        """Bytes of the kept rows, their ids and probabilities, and the factor of the sample."""
        held = self._buf.nbytes + self._idbuf.nbytes + self._pbuf.nbytes  # allocated, up to 2x the kept rows
        return int(held + self._R.nbytes + self._P.nbytes + self._span.nbytes)

    @property
    def n_kept(self) -> int:
        """Rows in the sample."""
        return int(self._kept)

    @property
    def _keys(self) -> np.ndarray:
        return self._buf[: self._kept]

    @property
    def _ids(self) -> np.ndarray:
        return self._idbuf[: self._kept]

    @property
    def _prob(self) -> np.ndarray:
        return self._pbuf[: self._kept]

    def _append(self, rows, ids, p) -> None:
        need = self._kept + rows.shape[0]
        if need > self._buf.shape[0]:
            cap = max(need, 2 * self._buf.shape[0], 64)
            for name in ("_buf", "_idbuf", "_pbuf"):
                old = getattr(self, name)
                new = np.zeros((cap,) + old.shape[1:], dtype=old.dtype)
                new[: self._kept] = old[: self._kept]
                setattr(self, name, new)
        a = self._kept
        self._buf[a:need], self._idbuf[a:need], self._pbuf[a:need] = rows, ids, p
        self._kept = need

    def _online_scores(self, B: np.ndarray) -> np.ndarray:
        u = row_sqnorms(B, self._P)
        if self.ridge == 0.0 and self._span.shape[0] < self.dim:
            # λ = 0: a row with a component outside the sample's span has online score 1.
            res = B - (B @ self._span.T) @ self._span
            outside = np.einsum("ij,ij->i", res, res) > 1e-12 * np.maximum(np.einsum("ij,ij->i", B, B), 1e-300)
            u[outside] = np.inf
        return np.minimum((1.0 + self.rel_error) * u, 1.0)

    def _refresh(self) -> None:
        self._P = pinv_map(self._R, self.ridge)
        if self.ridge == 0.0 and self._span.shape[0] < self.dim:
            Rn = self._R / np.maximum(np.linalg.norm(self._R, axis=0), 1e-300)
            _u, s, vt = np.linalg.svd(Rn, full_matrices=False)
            r = int(np.count_nonzero(s > s[0] * max(Rn.shape) * np.finfo(float).eps)) if s.size else 0
            self._span = vt[:r]

    def update(self, X: ArrayLike) -> OnlineRowSampling:
        """Decide every row of a block (m, d) or a single row (d,); returns self."""
        B = np.asarray(self._block(X), dtype=np.float64)
        ids = self._take_ids(B.shape[0])
        with blas_threads(1):
            self._decide(B, ids)
        return self

    def _decide(self, B: np.ndarray, ids: np.ndarray) -> None:
        for a in range(0, B.shape[0], CHUNK):
            C = B[a : a + CHUNK]
            p = np.minimum(self.oversample * self._online_scores(C), 1.0)
            keep = self._rng.random(C.shape[0]) < p
            if not keep.any():
                continue
            rows, pk = C[keep], p[keep]
            self._append(rows, ids[a : a + CHUNK][keep], pk)
            self._R = np.linalg.qr(np.vstack([self._R, rows / np.sqrt(pk)[:, None]]), mode="r")
            self._refresh()

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, weighted rows k_i/√p_i) of the sample Ã."""
        return self._ids.copy(), self._keys / np.sqrt(self._prob)[:, None]

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores against the final sample) of the kept rows whose score reaches eps."""
        tau = row_sqnorms(self._keys, self._P)
        keep = tau >= self.eps
        order = np.argsort(self._ids[keep], kind="stable")
        return self._ids[keep][order], tau[keep][order]

    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids of the kept rows whose score against the final sample reaches eps."""
        return self.scores()[0]

    def merge(self, other: Baseline) -> NoReturn:
        """Not mergeable: raises NotImplementedError (each decision depends on the rows kept before it)."""
        raise NotImplementedError(
            "OnlineRowSampling cannot merge: every keep/drop decision depends on the sample kept before it; "
            "feed all rows to one sketch, or use CountSketchLeverage or SRHTLeverage (linear, mergeable)"
        )
