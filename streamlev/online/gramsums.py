"""Per-head running sums of the Gram matrices of rows not yet in the factors (the multi-head kernel path)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import _threads as threads_mod
from .._lazy import kernels
from .._tuning import PARALLEL_MIN_ENTRIES

_NO_IDS = np.zeros(0, dtype=np.int64)


class KernelState(NamedTuple):
    """What the multi-head kernel path needs of the factors' current state (one entry per head).

    ``dinv``/``up``: the screening bounds (H, d) and (H,); ``W``: weights of the upper triangle of BᵀB giving
    the whitened trace ⟨(RᵀR)⁻¹, BᵀB⟩ (H, d, d); ``limit``: most rows a head's running sum takes (H,);
    ``budget``: the trace budget (FAST_TRACE_MAX); ``rows``: rows in each factor (H,).
    """

    dinv: np.ndarray
    up: np.ndarray
    W: np.ndarray
    limit: np.ndarray
    budget: float
    rows: np.ndarray


class GramSums:
    """Per-head running sums of the Gram matrices of rows not yet in the factors (multi-head kernel path).

    Each sum is hi + lo + C (upper triangles): C adds up to 16 blocks in plain
    float64, then joins hi + lo by compensated summation
    (:func:`streamlev._kernels.heads_screen_gram`), so however many blocks it
    holds it is within a few units in the last place of the exact sum of the
    blocks' Gram matrices.  ``rows`` counts the rows behind each sum, ``tr`` its
    whitened trace against the factor it will be added to.
    """

    def __init__(self, heads: int, dim: int):
        self.hi = np.zeros((heads, dim, dim))
        self.lo = np.zeros((heads, dim, dim))
        self.C = np.zeros((heads, dim, dim))  # recent blocks, plain sums (joined to hi + lo every 16 blocks)
        self.nrec = np.zeros(heads, dtype=np.int64)
        self.T = np.zeros((heads, dim, dim))  # scratch: a block's Gram matrices when taken apart
        self.rows = np.zeros(heads, dtype=np.int64)
        self.tr = np.zeros(heads)
        self.took = np.zeros(heads, dtype=bool)
        self.kept = np.zeros(heads, dtype=np.int64)  # rows of the last block each head kept
        self._no_tails = {}
        self.admitted = 0  # rows admitted (over all heads) since the sums were last emptied
        self.keep = np.zeros((heads, 0), dtype=bool)

    @property
    def nbytes(self) -> int:
        """Bytes of the sums and scratch arrays."""
        return int(self.hi.nbytes + self.lo.nbytes + self.C.nbytes + self.T.nbytes + self.keep.nbytes)

    def add(self, X, thr, state, tail, ids, id0):  # noqa: PLR0917
        """Screen and add a block (H, m, d); see :func:`streamlev._kernels.heads_screen_gram` for the result.

        ``tail``: (keys, ids, used) of the candidate tail kept rows are copied
        to; ``ids`` the block's ids or None for id0, id0 + 1, ...
        """
        dinv, up, W, limit, budget = state.dinv, state.up, state.W, state.limit, state.budget
        m = X.shape[1]
        if self.keep.shape[1] < m:
            self.keep = np.zeros((X.shape[0], max(m, 2 * self.keep.shape[1])), dtype=bool)
        tk, tid, used = tail
        args = (
            X,
            dinv,
            up,
            thr,
            W,
            budget,
            self.tr,
            self.hi,
            self.lo,
            self.C,
            self.nrec,
            self.T,
            self.keep[:, :m],
            self.took,
            self.rows,
            limit,
            self.kept,
            tk,
            tid,
            used,
            _NO_IDS if ids is None else ids,
            id0,
        )
        if X.size >= PARALLEL_MIN_ENTRIES:  # on numba's threads, unless they measure slower (a busy machine)
            return threads_mod.run_parallel(kernels.heads_screen_gram, kernels.heads_screen_gram_serial, args, X.size)
        return kernels.heads_screen_gram_serial(*args)

    def no_tail(self, dtype):
        """A candidate tail with no room (the kernel then leaves the kept rows to the caller), one per dtype."""
        tail = self._no_tails.get(dtype)
        if tail is None:
            H, d = self.hi.shape[:2]
            tail = self._no_tails[dtype] = (
                np.zeros((H, 0, d), dtype=dtype),
                np.zeros((H, 0), dtype=np.int64),
                np.zeros(H, dtype=np.int64),
            )
        return tail

    def grams(self, heads) -> np.ndarray:
        """The full symmetric sums of ``heads``, stacked."""
        U = np.triu(self.hi[heads] + (self.lo[heads] + self.C[heads]))
        return U + np.triu(U, 1).transpose(0, 2, 1)

    def clear(self, heads) -> None:
        """Empty the sums of ``heads``."""
        self.admitted = 0
        self.hi[heads] = 0.0
        self.lo[heads] = 0.0
        self.C[heads] = 0.0
        self.nrec[heads] = 0
        self.rows[heads] = 0
        self.tr[heads] = 0.0
