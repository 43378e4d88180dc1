"""The triangular factor every streamlev algorithm is built on.

A :class:`Factor` holds an upper-triangular ``R`` (d x d, float64) with

    RᵀR = Σ_rows k kᵀ      (the ridge λ·I is added when scoring: QR of [R; √λ·I]),

kept by Householder QR of ``[R; B]`` for each new block ``B`` (TSQR).  Scores of
rows ``b`` are ``‖b R⁻¹‖²`` (a triangular solve) or, when ``λ = 0`` and ``R`` is
numerically rank-deficient, ``‖b D⁻¹ V_r S_r⁻¹‖²`` from the SVD of the
column-normalised ``R D⁻¹`` — the pseudo-inverse scores with the rank tolerance
of :func:`numpy.linalg.matrix_rank`, judged after column scaling.

Why not the Gram matrix: ``KᵀK`` squares the condition number (DESIGN.md §2
measured 4e-3 relative error at cond 1.3e8).  Householder QR is backward stable
column by column, so its scores are invariant to column scaling in floating
point as well as in exact arithmetic.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas, lapack

__all__ = ["Factor", "blas_threads", "qr_r", "merge_r", "THRESHOLD_RTOL", "at_least"]

_EPS64 = np.finfo(np.float64).eps

#: Membership slack.  A key whose computed score is within this relative distance
#: below eps is kept: rounding (~1e-15 relative on well-conditioned keys) must
#: never drop a key whose exact score equals eps (e.g. τ = 1 with eps = 1).  Sets
#: can only grow by it, so every guarantee of the form "all keys with τ >= eps are
#: kept" survives floating point.
THRESHOLD_RTOL = 1e-10


def at_least(scores: np.ndarray, eps: float) -> np.ndarray:
    """Boolean mask ``scores >= eps·(1 - THRESHOLD_RTOL)`` — the one membership rule."""
    return scores >= eps * (1.0 - THRESHOLD_RTOL)


_CONTROLLER = None


def blas_threads(n: int):
    """Context manager limiting BLAS/LAPACK to ``n`` threads (threadpoolctl, ~2 µs).

    DESIGN.md §2: small factorisations (QR/SVD of matrices a few hundred rows
    or columns wide) ran 10-300x slower with OpenBLAS's 2 threads than with 1
    on a 2-core machine; measured again here, a (320 x 64) dgeqrf took 3.7 ms
    single-threaded and 890 ms with 2 threads under load.
    """
    global _CONTROLLER  # noqa: PLW0603 - one lazily created controller per process
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=n, user_api="blas")


def qr_r(A: np.ndarray) -> np.ndarray:
    """R factor (min(m, d) x d, upper triangular, C-contiguous) of a Householder QR of A.

    ``A`` is overwritten when it is a Fortran-ordered float64 array.  Runs
    LAPACK single-threaded (see :func:`blas_threads`).
    """
    A = np.asarray(A, dtype=np.float64, order="F")
    m, d = A.shape
    with blas_threads(1):
        qr, _tau, _work, info = lapack.dgeqrf(A, overwrite_a=1)
    if info != 0:  # pragma: no cover - LAPACK argument error
        raise RuntimeError(f"LAPACK dgeqrf failed with info={info}")
    k = min(m, d)
    R = np.triu(qr[:k, :])
    if k < d:
        R = np.vstack([R, np.zeros((d - k, d))])
    return np.ascontiguousarray(R)


def merge_r(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Factor of the union of two row sets: R of the QR of ``[R1; R2]``."""
    d = R1.shape[1]
    A = np.empty((2 * d, d), dtype=np.float64, order="F")
    A[:d] = R1
    A[d:] = R2
    return qr_r(A)


#: Fast (whitened) updates are used while trace(YᵀY) = Σ u_i stays below this.
#: Cholesky of I + YᵀY then has condition number <= 1 + FAST_TRACE_MAX, so it
#: loses at most ~log10(FAST_TRACE_MAX) digits *of the block's own contribution*.
FAST_TRACE_MAX = 64.0
#: The whitened Gram update (tier 1 of Factor.absorb_screen) needs the column-normalised
#: factor's estimated condition number below this: rounding in BᵀB is amplified by cond².
GRAM_COND_MAX = 1e3
#: Magnitudes whose squares stay comfortably normal floating-point numbers.
_SQ_SAFE_LO, _SQ_SAFE_HI = 1e-100, 1e100
#: Fast updates and triangular scoring need the column-normalised factor's
#: estimated condition number below this (a LAPACK dtrcon estimate, O(d²)).
FAST_COND_MAX = 1e10


def colnorms(R: np.ndarray) -> np.ndarray:
    """Euclidean norms of the columns, without overflow or underflow for any finite entries."""
    big = np.max(np.abs(R), axis=0)
    safe = np.where(big > 0, big, 1.0)
    return big * np.sqrt(np.einsum("ij,ij->j", R / safe, R / safe))


def tri_inv(R: np.ndarray) -> np.ndarray:
    """Inverse of a nonsingular upper-triangular matrix (LAPACK dtrtri), C order."""
    with blas_threads(1):
        Ri, info = lapack.dtrtri(R, lower=0)
    if info != 0:  # pragma: no cover - callers check nonsingularity first
        raise np.linalg.LinAlgError(f"singular triangular factor (dtrtri info={info})")
    return np.ascontiguousarray(np.triu(Ri))


def whiten(B: np.ndarray, Rinv: np.ndarray) -> np.ndarray:
    """Y = B R⁻¹ as one GEMM with the explicit triangular inverse (float64, C order).

    On this machine a 4096 x 64 GEMM ran 2x faster than the triangular solve
    (dtrsm), and the triangular inverse is componentwise accurate, so the
    scores keep QR-grade accuracy (tested on Vandermonde keys of condition 1e8).
    """
    if B.dtype != np.float64:
        B = B.astype(np.float64)
    return B @ Rinv


def row_sqnorms(Y: np.ndarray) -> np.ndarray:
    """Squared Euclidean norms of the rows of a C-ordered m x d array."""
    return np.einsum("ij,ij->i", Y, Y)


class Factor:
    """A d x d upper-triangular factor of λI + Σ k kᵀ, updated block by block.

    Parameters
    ----------
    dim : int
        Key dimension d.
    ridge : float
        λ >= 0.  ``R`` summarises the data rows only; with λ > 0 scoring uses
        the factor of ``[R; √λ·I]``, computed once per state.
    """

    def __init__(self, dim: int, ridge: float = 0.0):
        self.dim = int(dim)
        self.ridge = float(ridge)
        self.n = 0
        # Factor of the data rows only (the ridge part is added when scoring, so that
        # two factors merge without counting λ twice).
        self.R = np.zeros((self.dim, self.dim))
        self._scorer = None
        self._rinv = None
        self._fast = None
        self._sinv = None
        self._bound = None

    def _changed(self) -> None:
        """Drop every cache derived from R (call after each change of R or n)."""
        self._scorer = None
        self._rinv = None
        self._fast = None
        self._sinv = None

    # -- updates -----------------------------------------------------------------------------
    def absorb(self, B: np.ndarray) -> None:
        """Add the rows of B (m x d) to the factor: R <- R of QR([R; B])."""
        m = B.shape[0]
        if m == 0:
            return
        d = self.dim
        A = np.empty((d + m, d), dtype=np.float64, order="F")
        A[:d] = self.R
        A[d:] = B
        self.R = qr_r(A)
        self.n += m
        self._changed()

    def rinv(self) -> np.ndarray:
        """Cached inverse of the (nonsingular) data factor."""
        if self._rinv is None:
            self._rinv = tri_inv(self.R)
        return self._rinv

    def fast_ok(self) -> bool:
        """Whether the data factor is nonsingular and well-conditioned after column scaling.

        Also requires, for λ = 0, that the rank tolerance σ_max·max(n, d)·eps
        cannot make it rank-deficient, so that triangular scoring equals the
        pseudo-inverse rule.
        """
        if self._fast is not None and self._fast[0] == self.n:
            return self._fast[1]
        R = self.R
        diag = np.abs(np.diag(R))
        ok = bool(np.all(diag > 0))
        if ok:
            colnorm = colnorms(R)
            rcond, info = lapack.dtrcon(R / colnorm, norm="1", uplo="U")
            cond = np.inf if rcond <= 0 or info != 0 else 1.0 / rcond
            # dtrcon's 1-norm estimate is within a factor d of the 2-norm condition number.
            ok = cond < FAST_COND_MAX and cond * self.dim * max(self.n, self.dim) * _EPS64 < 1e-3
            squares_safe = bool(np.all((colnorm > _SQ_SAFE_LO) & (colnorm < _SQ_SAFE_HI)))
            self._fast = (self.n, ok, cond, squares_safe)
        else:
            self._fast = (self.n, ok, np.inf, False)
        return ok

    def _screen_bound(self):
        """(D0⁻¹, s0): u_i <= ‖b_i D0⁻¹‖²·s0 for every future row, refreshed as n doubles.

        With D0 the column norms of R at the time of computation and
        s0 = 1/σ_min(R D0⁻¹)², the bound ‖b D0⁻¹‖²/σ_min² >= ‖b R⁻¹‖² stays valid
        forever after: adding rows only increases RᵀR, hence σ_min(R D0⁻¹).
        """
        if self._bound is None or self.n >= 2 * self._bound[2]:
            R = self.R
            colnorm = colnorms(R)
            with blas_threads(1):
                S = np.linalg.svd(R / colnorm, compute_uv=False)
            # 1e-12 relative margin against rounding in the SVD and in the row norms below.
            self._bound = (1.0 / colnorm, (1.0 + 1e-12) / S[-1] ** 2, self.n)
        return self._bound[0], self._bound[1]

    def absorb_screen(self, B: np.ndarray, eps: float | None) -> np.ndarray | None:
        """Absorb a block and return the mask of its rows whose new score is >= eps (None: no mask).

        The membership is exact (the at_least rule against the updated factor).
        Three tiers, chosen per block:

        1. *Whitened Gram update* (column-normalised factor with estimated
           condition number <= GRAM_COND_MAX): C = BᵀB (one symmetric rank-m
           update), G = R⁻ᵀCR⁻¹, I + G = UᵀU, R ← UR.  Rounding in C is
           amplified by at most cond² <= 1e6 and only on the block's own
           contribution (G has size ~m/n), so the factor keeps ~1e-10 relative
           accuracy.  Rows are screened by the rigorous bound of
           :meth:`_screen_bound`; only the survivors are whitened exactly.
        2. *Whitened update with explicit Y = B R⁻¹* (condition number up to
           FAST_COND_MAX): I + YᵀY = UᵀU, R ← UR (DESIGN.md §1.8).
        3. *Householder QR of [R; B]* otherwise: rank-deficient or
           ill-conditioned factor, or a block bringing new directions
           (trace(YᵀY) > FAST_TRACE_MAX).

        In tiers 1-2 a row's score against the updated rows is at most u/(1+u),
        u = ‖b R_old⁻¹‖² (its score against the rows before the block plus
        itself), so only rows passing that screen are scored exactly, as
        ‖y U⁻¹‖².
        """
        m = B.shape[0]
        if m == 0:
            return np.zeros(0, dtype=bool)
        if self.fast_ok():
            d = self.dim
            Rinv = self.rinv()
            # Tier 1 squares entries (BᵀB): only where squares can neither overflow nor underflow.
            gram = (self._fast[2] <= GRAM_COND_MAX and self._fast[3]
                    and max(float(B.max()), -float(B.min())) < _SQ_SAFE_HI)  # no |B| temporary
            if gram:
                B64 = B if B.dtype == np.float64 else B.astype(np.float64)
                C = blas.dsyrk(1.0, B64.T, trans=0, lower=0)  # upper triangle of BᵀB
                C = np.triu(C) + np.triu(C, 1).T
                G = Rinv.T @ C @ Rinv
                G = 0.5 * (G + G.T)
                if eps is not None:
                    dinv, s0 = self._screen_bound()
                    from ._kernels import scaled_row_sqnorms  # noqa: PLC0415

                    Bc = B if B.flags.c_contiguous else np.ascontiguousarray(B)
                    ub = scaled_row_sqnorms(Bc, dinv) * s0
                    idx = np.flatnonzero(at_least(ub / (1.0 + ub), eps))
                    Y = whiten(B[idx], Rinv) if idx.size else np.zeros((0, d))
                    u = row_sqnorms(Y)
            else:
                Y = whiten(B, Rinv)
                u = row_sqnorms(Y)
                G = Y.T @ Y  # numpy dispatches Aᵀ·A to a symmetric rank-k update
            if float(np.trace(G)) <= FAST_TRACE_MAX:
                G[np.diag_indices(d)] += 1.0
                with blas_threads(1):
                    U, info = lapack.dpotrf(G, lower=0, clean=1)  # I + YᵀY = UᵀU
                if info == 0:
                    self.R = np.ascontiguousarray(np.triu(U @ self.R))
                    self.n += m
                    self._changed()
                    if eps is None:
                        return None
                    if not gram:
                        idx = np.flatnonzero(at_least(u / (1.0 + u), eps))
                        Y, u = Y[idx], u[idx]
                    else:
                        keep_u = at_least(u / (1.0 + u), eps)
                        idx, Y = idx[keep_u], Y[keep_u]
                    out = np.zeros(m, dtype=bool)
                    if idx.size:
                        if self.ridge > 0:
                            out[idx] = at_least(self.scores(B[idx]), eps)
                        else:
                            # y (UᵀU)⁻¹ yᵀ = ‖y U⁻¹‖²
                            out[idx] = at_least(row_sqnorms(Y @ tri_inv(U)), eps)
                    return out
        self.absorb(B)
        return None if eps is None else at_least(self.scores(B), eps)

    def merge(self, other: Factor) -> None:
        """Absorb the rows summarised by another factor of the same dimension."""
        self.R = merge_r(self.R, other.R)
        self.n += other.n
        self._changed()

    def set_state(self, R: np.ndarray, n: int) -> None:
        """Replace the factor (used by deserialisation)."""
        self.R = np.ascontiguousarray(R, dtype=np.float64)
        self.n = int(n)
        self._bound = None
        self._changed()

    def logdet_ridge(self) -> float:
        """Ln det(I + RᵀR/λ), from the ridge factor (λ > 0 only)."""
        Rl = self._get_scorer()[1]
        return float(2.0 * np.sum(np.log(np.abs(np.diag(Rl)))) - self.dim * np.log(self.ridge))

    # -- scoring -----------------------------------------------------------------------------
    def _get_scorer(self):
        if self._scorer is not None:
            return self._scorer
        R = self.R
        d = self.dim
        if self.ridge > 0:
            A = np.empty((2 * d, d), dtype=np.float64, order="F")
            A[:d] = R
            A[d:] = np.sqrt(self.ridge) * np.eye(d)
            self._scorer = ("tri", qr_r(A), None, d, None)
            return self._scorer
        if self.fast_ok():
            self._scorer = ("tri", R, None, d, None)
            return self._scorer
        colnorm = colnorms(R)
        nz = colnorm > 0
        if not nz.any():
            self._scorer = ("zero", None, None, 0, np.zeros(0))
            return self._scorer
        scale = np.where(nz, colnorm, 1.0)
        Rs = R[:, nz] / scale[nz]
        with blas_threads(1):
            S = np.linalg.svd(Rs, compute_uv=False)
        tol = S[0] * max(self.n, d) * _EPS64
        rank = int(np.count_nonzero(S > tol))
        if rank == d:
            self._scorer = ("tri", R, None, rank, S)
        else:
            with blas_threads(1):
                _U, S2, Vt = np.linalg.svd(Rs, full_matrices=False)
            W = np.zeros((d, rank))
            W[nz] = (Vt[:rank].T / S2[:rank]) / scale[nz][:, None]
            self._scorer = ("dense", None, W, rank, S)
        return self._scorer

    def _scoring_inv(self, R):
        """Inverse of the scoring factor R: the cached data-factor inverse when λ = 0."""
        if R is self.R:
            return self.rinv()
        if self._sinv is None or self._sinv[0] is not R:
            self._sinv = (R, tri_inv(R))
        return self._sinv[1]

    def scoring_factor(self) -> np.ndarray:
        """The triangular factor scores are computed with (that of ``[R; √λI]`` when λ > 0)."""
        s = self._get_scorer()
        if s[0] != "tri":
            raise ValueError("the factor is rank-deficient; no triangular scoring factor")
        return s[1]

    @property
    def rank(self) -> int:
        return self._get_scorer()[3]

    def scores(self, B: np.ndarray) -> np.ndarray:
        """Leverage scores of the rows of B with respect to the factor.

        For rows that were absorbed into the factor these are their exact
        (ridge) leverage scores among all absorbed rows.  Values are clipped to
        [0, 1] only against rounding (|excess| is at the 1e-15 level).
        """
        kind, R, W, _rank, _S = self._get_scorer()
        m = B.shape[0]
        if m == 0:
            return np.zeros(0)
        if kind == "zero":
            return np.zeros(m)
        if kind == "tri":
            t = row_sqnorms(whiten(B, self._scoring_inv(R)))
        else:
            Y = np.asarray(B, dtype=np.float64) @ W
            t = np.einsum("ij,ij->i", Y, Y)
        return t

    def nbytes(self) -> int:
        return int(self.R.nbytes)
