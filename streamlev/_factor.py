"""The triangular factor every streamlev algorithm is built on.

A :class:`Factor` holds an upper-triangular ``R`` (d x d, float64) with

    RᵀR = Σ_rows k kᵀ      (the ridge λ·I is added when scoring: QR of [R; √λ·I]),

kept by Householder QR of ``[R; B]`` (TSQR) or, once the factor is well
conditioned, by whitened block updates (:meth:`Factor.update`).  Scores of
rows ``b`` are ``‖b R⁻¹‖²`` (one GEMM with the triangular inverse per chunk of
rows, split over threads) or, when ``λ = 0`` and ``R`` is
numerically rank-deficient, ``‖b D⁻¹ V_r S_r⁻¹‖²`` from the SVD of the
column-normalised ``R D⁻¹`` — the pseudo-inverse scores with the rank tolerance
of :func:`numpy.linalg.matrix_rank`, judged after column scaling.

Why not the Gram matrix: ``KᵀK`` squares the condition number (docs/design.md,
the section on numerics: errors of order 1e-3 at condition numbers near 1e8).  Householder QR is backward stable
column by column, so its scores are invariant to column scaling in floating
point as well as in exact arithmetic.

Screening (:class:`Bound`): two-sided bounds on ``‖b R⁻¹‖²`` from the column
norms of R and the extreme singular values of the column-normalised factor cost
one O(d) pass per row; rows they decide are never multiplied by R⁻¹.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.linalg import lapack

from ._lazy import kernels
from ._linalg import c_float, colnorms, fortran_copy, gram, max_abs, merge_r, tp_qr_r, tri_inv, whitened_sqnorms
from ._rank import rank_lower_bound
from ._threads import blas_threads, parts_for, split_run
from ._tuning import (
    BOUND_MIN_ROWS_PER_DIM,
    BOUND_REFRESH,
    BOUND_SPLIT_MIN_DIM,
    FAST_MIN_ROWS_PER_DIM,
    RAMP_MIN,
    TRI_INV_LAPACK_MIN_DIM,
)

__all__ = [
    "Factor",
    "THRESHOLD_RTOL",
    "accept_many",
    "admit",
    "at_least",
    "bounds_many",
    "fast_ok_many",
    "rinv_many",
    "whitened_update_many",
]

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


def admit(u: np.ndarray, eps: float) -> np.ndarray:
    """Mask of rows whose prefix score u/(1+u) can reach eps, for (bounds on) u = ‖b R_before⁻¹‖².

    A new row's score against the rows before it plus itself is u/(1+u); the
    test is written as u >= e/(1-e), e = eps·(1 - THRESHOLD_RTOL) < 1, so that
    u = inf (a row far outside the span seen so far) is admitted, not NaN.
    """
    return u >= admit_threshold(eps)


def admit_threshold(eps: float) -> float:
    """The threshold of :func:`admit`: e/(1-e) with e = eps·(1 - THRESHOLD_RTOL)."""
    e = eps * (1.0 - THRESHOLD_RTOL)
    return e / (1.0 - e)


#: Fast (whitened) updates are used while trace(YᵀY) = Σ u_i stays below this.
#: Cholesky of I + YᵀY then has condition number <= 1 + FAST_TRACE_MAX, so it
#: loses at most ~log10(FAST_TRACE_MAX) digits *of the block's own contribution*.
FAST_TRACE_MAX = 64.0
#: The whitened Gram update (tier 1 of Factor.update) needs the column-normalised
#: factor's estimated condition number below this: rounding in BᵀB is amplified by cond².
GRAM_COND_MAX = 1e3
#: Magnitudes whose squares stay comfortably normal floating-point numbers.
_SQ_SAFE_LO, _SQ_SAFE_HI = 1e-100, 1e100
#: Fast updates and triangular scoring need the column-normalised factor's
#: estimated condition number below this (a LAPACK dtrcon estimate, O(d²)).
FAST_COND_MAX = 1e10


#: Screening bounds are kept only while the column-normalised scoring factor has
#: condition number below this (beyond it they screen out almost nothing, and
#: their rounding margin grows with it).
BOUND_COND_MAX = 1e6


def _bound_reusable(b, n: int, dim: int, fresh: bool) -> bool:
    """Whether bound ``b`` serves a factor of n rows (``fresh``: both sides needed, so only the current state)."""
    if b is None:
        return False
    if b.n == n:
        return True
    return not fresh and (n < BOUND_REFRESH * b.n or n < b.n + BOUND_MIN_ROWS_PER_DIM * dim)


class Scorer(NamedTuple):
    """How a factor scores rows: ``kind`` "tri" (triangular solve with ``R``), "dense" (the map ``W``) or "zero".

    ``rank`` is the numerical rank, ``S`` the singular values of the column-normalised factor (None when not
    computed).  ``R`` is None for "dense" and "zero", ``W`` None until the dense map is built.
    """

    kind: str
    R: np.ndarray | None
    W: np.ndarray | None
    rank: int
    S: np.ndarray | None


class FastTest(NamedTuple):
    """The cached fast-path test of a factor with ``n`` rows: ``ok``, the condition estimate, squares safe."""

    n: int
    ok: bool
    cond: float
    squares_safe: bool


def _bound_sides(s0, smin, dim: int):
    """(up, lo) of a :class:`Bound` from the largest and smallest singular values of the normalised factor.

    Non-decreasing in s0 and non-increasing in smin (every floating-point
    step is monotone), so the sides at bracketing arguments bracket the
    computed ones (:meth:`Factor._bracketed_bound`).
    """
    cond = s0 / smin
    margin = 1e-12 + 64.0 * dim * _EPS64 * cond
    return (1.0 + margin) / smin**2, (1.0 - margin) / s0**2


class Bound:
    """Two-sided screening bounds on the scores ``‖b S⁻¹‖²`` against a triangular factor S.

    With D the column norms of S and σ_max, σ_min the extreme singular values
    of ``S D⁻¹``, for every row b::

        ‖b D⁻¹‖² / σ_max²  <=  ‖b S⁻¹‖²  <=  ‖b D⁻¹‖² / σ_min².

    The upper bound stays valid for every later state of the factor: adding
    rows (or merging) only increases SᵀS, hence σ_min(S D⁻¹) for the fixed D,
    and only decreases the scores.  The lower bound holds only for the state it
    was computed at (``n``).  Both carry a relative margin for rounding in the
    SVD (absolute error ~d·u·σ_max) and in the row norms.

    A bound may be *bracketed* (:meth:`Factor._bracketed_bound`): its sides
    ``up`` and ``lo`` are then computed (by the SVD of ``source``, the factor
    at state ``n``) only when they are first read, and :meth:`admit` decides
    every row it can from an interval known to contain the computed ``up``.
    Either way every value read and every decision is that of the SVD.
    """

    __slots__ = ("dinv", "_up", "_lo", "n", "_up_range", "_source")

    def __init__(self, dinv, up, lo, n, *, up_range=None, source=None):
        self.dinv, self._up, self._lo, self.n = dinv, up, lo, n
        self._up_range, self._source = up_range, source

    @property
    def up(self) -> float:
        """(1 + margin)/σ_min² (computed by the SVD of the factor at state ``n`` on first use when bracketed)."""
        if self._up is None:
            self._compute()
        return self._up

    @property
    def lo(self) -> float:
        """(1 - margin)/σ_max² (computed like :attr:`up`)."""
        if self._lo is None:
            self._compute()
        return self._lo

    def held_nbytes(self, *current) -> int:
        """Bytes of the factor a bracketed bound keeps until its sides are computed, unless it is one of ``current``."""
        src = self._source
        return 0 if src is None or any(src is c for c in current) else int(src.nbytes)

    def _compute(self) -> None:
        exact = Factor._svd_bounds([self._source], [self.n])[0]
        # The bracket certified that the SVD gives a bound; should rounding beyond the allowance of
        # _bracketed_bound ever contradict it, the trivial sides keep every decision valid (all admitted).
        self._up, self._lo = (np.inf, 0.0) if exact is None else (exact._up, exact._lo)
        self._up_range = self._source = None

    def admit(self, t: np.ndarray, eps: float) -> np.ndarray:
        """:func:`admit` of the bounds ``t·up`` for screening norms t: the rows whose prefix score can reach eps.

        A bracketed bound decides from its interval [up_lo, up_hi] (``t·up_lo``
        and ``t·up_hi`` bracket ``t·up`` in floating point too) and computes
        ``up`` only when some row lies in between.
        """
        thr = admit_threshold(eps)
        if self._up is None:
            up_lo, up_hi = self._up_range
            sure = t * up_lo >= thr
            if np.array_equal(sure, t * up_hi >= thr):
                return sure
        return t * self.up >= thr

    def sqnorms(self, B: np.ndarray) -> np.ndarray:
        """‖b D⁻¹‖² for every row of B (one vectorised pass, split over threads for big blocks)."""
        B = c_float(B)
        m, d = B.shape
        min_rows = max(1, (1 << 18) // max(1, d))
        if m < 2 * min_rows:
            return kernels.scaled_row_sqnorms(B, self.dinv)
        res = split_run(lambda a, b: kernels.scaled_row_sqnorms(B[a:b], self.dinv), m, parts_for(m, min_rows))
        return res[0] if len(res) == 1 else np.concatenate(res)


class Factor:
    """A d x d upper-triangular factor of Σ k kᵀ (λI added when scoring), updated block by block.

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
        self._rank_lb = None  # certified lower bound on the rank at this state (streamlev._rank)
        self._bound = None  # latest Bound (its upper side stays valid as rows are added)

    def _changed(self) -> None:
        """Drop every cache derived from R (call after each change of R or n)."""
        self._scorer = None
        self._rinv = None
        self._fast = None
        self._sinv = None
        self._rank_lb = None

    # -- updates -----------------------------------------------------------------------------
    def absorb(self, B: np.ndarray) -> None:
        """Add the rows of B (m x d) by Householder QR: R <- R of QR([R; B]) (:func:`tp_qr_r`)."""
        m = B.shape[0]
        if m == 0:
            return
        self.R = tp_qr_r(self.R, B)
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
        if self._fast is None or self._fast.n != self.n:
            self._set_fast(colnorms(self.R) if np.all(np.diag(self.R) != 0) else None)
        return self._fast.ok

    def _set_fast(self, colnorm: np.ndarray | None) -> None:
        """Cache the fast-path test for the current state (colnorm: the column norms; None if singular)."""
        if colnorm is None:
            self._fast = FastTest(self.n, False, np.inf, False)
            return
        with blas_threads(1):
            rcond, info = lapack.dtrcon(fortran_copy(self.R / colnorm), norm="1", uplo="U")
        cond = np.inf if rcond <= 0 or info != 0 else 1.0 / rcond
        # dtrcon's 1-norm estimate is within a factor d of the 2-norm condition number.
        ok = bool(cond < FAST_COND_MAX and cond * self.dim * max(self.n, self.dim) * _EPS64 < 1e-3)
        squares_safe = bool(np.all((colnorm > _SQ_SAFE_LO) & (colnorm < _SQ_SAFE_HI)))
        self._fast = FastTest(self.n, ok, cond, squares_safe)

    def fast_rows(self) -> int:
        """Most rows one fast update takes: n·min(1/2, FAST_TRACE_MAX/(2d)), at least RAMP_MIN.

        For rows like the ones before, trace(G) ≈ d·m/n, so a chunk of this
        size stays near FAST_TRACE_MAX/2 and passes the tier-3 test.
        """
        return max(RAMP_MIN, int(self.n * self._ramp_rate()))

    def _ramp_rate(self) -> float:
        """Rows one fast update may take per row already in the factor: min(1/2, FAST_TRACE_MAX/(2d))."""
        return min(0.5, 0.5 * FAST_TRACE_MAX / self.dim)

    def rows_to_fast(self) -> int:
        """Rows to add before :meth:`fast_rows` reaches FAST_MIN_ROWS_PER_DIM·d (0 once it has)."""
        return max(0, int(np.ceil(FAST_MIN_ROWS_PER_DIM * self.dim / self._ramp_rate())) - self.n)

    def gram_tier(self, big: float) -> bool:
        """Whether tier 1 (the whitened Gram update) applies to rows whose largest |entry| is ``big``."""
        if not self.fast_ok():  # (also caches the test for the current state)
            return False
        return bool(self._fast.cond <= GRAM_COND_MAX and self._fast.squares_safe and big < _SQ_SAFE_HI)

    def accept(self, U: np.ndarray, m: int) -> None:
        """Apply an accepted whitened update of m rows: R ← UR with I + G = UᵀU."""
        self._accepted(np.ascontiguousarray(np.triu(U @ self.R)), m)

    def _accepted(self, R: np.ndarray, m: int) -> None:
        """Install the factor after an accepted update of m rows."""
        self.R = R
        self.n += m
        self._changed()

    def update(self, B: np.ndarray, big: float | None = None, screen: Bound | None = None):
        """Add the rows of B (m x d, float32 or float64) to the factor (``big``: max |entry| if known).

        With ``screen`` (a :class:`Bound` taken before the update) the
        screening norms ``screen.sqnorms(B)`` are returned as well, computed
        in the same sweep as the Gram product where tier 1 applies.

        Three tiers, chosen per chunk (docs/design.md, the section on factor updates):

        1. *Whitened Gram update* (column-normalised factor with estimated
           condition number <= GRAM_COND_MAX, squares safe): C = BᵀB (float64,
           split over threads), G = R⁻ᵀCR⁻¹, I + G = UᵀU, R ← UR.  Rounding in
           C is amplified by at most cond² <= 1e6 and only on the block's own
           contribution (G has size ~m/n), so the factor keeps ~1e-10 relative
           accuracy even at that condition number, and ~1e-15 on
           well-conditioned keys.
        2. *Whitened update with explicit Y = B R⁻¹* (condition number up to
           FAST_COND_MAX): G = YᵀY, the same Cholesky.
        3. *Householder QR of [R; B]* otherwise: rank-deficient or
           ill-conditioned factor, or a chunk bringing new directions
           (trace(G) > FAST_TRACE_MAX, i.e. Cholesky of I + G could lose more
           than ~2 digits of the chunk's contribution).

        Tiers 1-2 take chunks of at least FAST_MIN_ROWS_PER_DIM·d rows: below
        that their d³ work costs more than Householder's ~2·m·d² (tier 3 is a
        triangular-pentagonal QR, :func:`tp_qr_r`).  A young factor (few rows
        compared with the block) takes one Householder probe of
        max(4d, 2·RAMP_MIN) rows, then Householder chunks until
        :meth:`fast_rows` reaches FAST_MIN_ROWS_PER_DIM·d (at d <= 64 right
        after the probe, at d = 1024 after 131,072 rows), then fast updates of
        at most :meth:`fast_rows` rows each; a factor that stays singular or
        ill-conditioned after the probe takes the rest of the block by
        Householder in one call.
        """
        m = B.shape[0]
        norms = [] if screen is not None else None
        if m == 0:
            return None if norms is None else np.zeros(0)
        with blas_threads(1):  # our shapes gain nothing from threaded BLAS; parts run in threads instead
            a = 0
            probed = False
            while a < m:
                left = m - a
                t = None
                if self.fast_ok():
                    step = min(left, self.fast_rows())
                    if step < FAST_MIN_ROWS_PER_DIM * self.dim:
                        # too few rows for a whitened update's d³ work to pay: Householder, ~2·step·d² flops
                        step = min(left, max(step, self.rows_to_fast()))
                        chunk = B[a : a + step]
                        self.absorb(chunk)
                    else:
                        chunk = B[a : a + step]
                        done, t = self._fast_update(chunk, big, screen)
                        if not done:
                            self.absorb(chunk)
                else:
                    step = left if probed else min(left, max(4 * self.dim, 2 * RAMP_MIN))
                    chunk = B[a : a + step]
                    self.absorb(chunk)
                    probed = True
                if norms is not None:
                    norms.append(screen.sqnorms(chunk) if t is None else t)
                a += step
        if norms is None:
            return None
        return norms[0] if len(norms) == 1 else np.concatenate(norms)

    def _fast_update(self, B: np.ndarray, big: float | None = None, screen: Bound | None = None):
        """Tiers 1-2 of :meth:`update` for one chunk: (accepted, screening norms or None).

        When refused the factor is untouched (the norms, if computed, are still valid).
        """
        d = self.dim
        Rinv = self.rinv()
        t = None
        # A row far outside the span seen so far can overflow Y = B R⁻¹ or its squares: the trace test
        # below then fails (inf or NaN) and the chunk goes to Householder QR, which handles it.
        with np.errstate(over="ignore", invalid="ignore"):
            if self.gram_tier(max_abs(B) if big is None else big):
                if screen is None:
                    C = gram(B)
                else:
                    C, t = gram(B, dinv=screen.dinv)
                G = Rinv.T @ C @ Rinv
            else:
                G = gram(B, Rinv)
            G = 0.5 * (G + G.T)
            if not float(np.trace(G)) <= FAST_TRACE_MAX:
                return False, t
        G[np.diag_indices(d)] += 1.0
        U, info = lapack.dpotrf(G, lower=0, clean=1)  # I + G = UᵀU
        if info != 0:
            return False, t
        self.accept(U, B.shape[0])
        return True, t

    def absorb_gram(self, C: np.ndarray, m: int) -> None:
        """Add m rows known only by their Gram matrix C = Σ b bᵀ (symmetric, positive semi-definite).

        R ← R of a QR of ``[R; S]`` with SᵀS = C.  When R is nonsingular, S = Λ^½VᵀR
        from the eigendecomposition G = VΛVᵀ of the whitened G = R⁻ᵀCR⁻¹ — the
        matrix the Cholesky update factors, so scaling columns changes nothing;
        otherwise from the eigendecomposition of C itself.  Negative rounding
        eigenvalues are clipped.  The fallback when a whitened update of
        accumulated Gram matrices is refused (its rows are gone).
        """
        C = 0.5 * (C + C.T)
        white = bool(np.all(np.diag(self.R) != 0))
        with np.errstate(over="ignore", invalid="ignore"):
            G = self.rinv().T @ C @ self.rinv() if white else C
            white = white and bool(np.all(np.isfinite(G)))
        with blas_threads(1):
            w, V = np.linalg.eigh(0.5 * (G + G.T) if white else C)
        S = np.sqrt(np.clip(w, 0.0, None))[:, None] * V.T
        if white:
            S = S @ self.R
        self.R = tp_qr_r(self.R, S)
        self.n += int(m)
        self._changed()

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
        Rl = self._get_scorer().R
        return float(2.0 * np.sum(np.log(np.abs(np.diag(Rl)))) - self.dim * np.log(self.ridge))

    # -- screening ---------------------------------------------------------------------------
    def bound(self, *, fresh: bool = False) -> Bound | None:
        """The screening :class:`Bound` (None when the scoring factor is singular or too ill-conditioned).

        ``fresh=True`` returns a bound computed at the current state (usable on
        both sides) or None; otherwise the latest bound is returned as long as
        the rows grew by less than BOUND_REFRESH or by fewer than
        BOUND_MIN_ROWS_PER_DIM·d rows since it was computed (its upper side is
        valid for any later state).
        """
        b = self._bound
        if _bound_reusable(b, self.n, self.dim, fresh):
            return b
        nb = self._compute_bound(fresh)
        if nb is not None:
            self._bound = nb
            return nb
        return None if fresh else self._bound

    def _compute_bound(self, fresh: bool) -> Bound | None:
        """A bound at the current state: bracketed (sides computed on first use) unless ``fresh`` needs them now."""
        if not fresh:
            b = self._bracketed_bound()
            if b is not None:
                return b
        return Factor._compute_bounds([self])[0]

    def admitted(self, B: np.ndarray, eps: float) -> np.ndarray | None:
        """Rows of B whose prefix score can reach eps by the rigorous upper bound, or None (no bound yet: all).

        The bound is ``‖b D⁻¹‖²·up`` (:class:`Bound`), tested by :func:`admit`;
        a bracketed bound decides without its SVD where it can (:meth:`Bound.admit`).
        """
        b = self.bound()
        return None if b is None else b.admit(b.sqnorms(B), eps)

    def classify_parts(self, blocks, eps: float) -> list:
        """:meth:`classify` of several row blocks at once: one bound, one matrix product for all undecided rows.

        Only the undecided rows are gathered (copied), so classifying many
        small parts costs no joined copy of all of them.  Fewer than
        BOUND_MIN_ROWS_PER_DIM·d rows in all are scored without a bound (its
        SVD would cost more than their scores).
        """
        rows = sum(B.shape[0] for B in blocks)
        b = self.bound(fresh=True) if rows >= BOUND_MIN_ROWS_PER_DIM * self.dim else None
        if b is None:
            return [at_least(self.scores(B), eps) if B.shape[0] else np.zeros(0, dtype=bool) for B in blocks]
        e = eps * (1.0 - THRESHOLD_RTOL)  # the rule of at_least
        outs, todo = [], []
        for k, B in enumerate(blocks):
            codes = np.empty(B.shape[0], dtype=np.uint8)
            n_und = kernels.classify_rows(c_float(B), b.dinv, float(b.up), float(b.lo), e, codes)
            outs.append(codes == 1)
            if n_und:
                todo.append((k, np.flatnonzero(codes == 2)))
        if todo:
            rows = [blocks[k][und] for k, und in todo]
            hit = at_least(self.scores(rows[0] if len(rows) == 1 else np.concatenate(rows)), eps)
            a = 0
            for k, und in todo:
                outs[k][und] = hit[a : a + und.size]
                a += und.size
        return outs

    def classify(self, B: np.ndarray, eps: float) -> np.ndarray:
        """Exact membership ``at_least(scores(B), eps)`` for rows already absorbed, screened first.

        Rows whose upper bound is below eps are out and rows whose lower bound
        reaches it are in without a matrix product; only the rest are scored.
        """
        return self.classify_parts([B], eps)[0] if B.shape[0] else np.zeros(0, dtype=bool)

    # -- scoring -----------------------------------------------------------------------------
    def _get_scorer(self) -> Scorer:
        if self._scorer is not None:
            return self._scorer
        R = self.R
        d = self.dim
        if self.ridge > 0:
            self._scorer = Scorer("tri", tp_qr_r(R, np.sqrt(self.ridge) * np.eye(d), trap=d), None, d, None)
            return self._scorer
        if self.fast_ok():
            self._scorer = Scorer("tri", R, None, d, None)
            return self._scorer
        nz, scale, Rs = self._normalised()
        if not nz.any():
            self._scorer = Scorer("zero", None, None, 0, np.zeros(0))
            return self._scorer
        with blas_threads(1):
            S = np.linalg.svd(Rs, compute_uv=False)
        tol = S[0] * max(self.n, d) * _EPS64
        rank = int(np.count_nonzero(S > tol))
        if rank == d:
            self._scorer = Scorer("tri", R, None, rank, S)
        else:  # the pseudo-inverse map W comes from a second SVD, when something is scored (_dense_map)
            self._scorer = Scorer("dense", None, None, rank, S)
        return self._scorer

    def _normalised(self, scaled: bool = True):
        """(non-zero columns mask, column scales with 1 for zero columns, R D⁻¹ on the non-zero columns).

        ``scaled=False`` skips R D⁻¹ (None in its place).
        """
        colnorm = colnorms(self.R)
        nz = colnorm > 0
        scale = np.where(nz, colnorm, 1.0)
        return nz, scale, (self.R[:, nz] / scale[nz]) if scaled else None

    def _dense_map(self) -> np.ndarray:
        """W with scores ‖b W‖² = b (RᵀR)⁺ bᵀ for a rank-deficient factor (λ = 0), computed once per state.

        W = D⁻¹ V_r S_r⁻¹ from the SVD of the column-normalised factor R D⁻¹ (zero
        columns dropped), r the rank of :meth:`_get_scorer`.  Kept apart from the
        rank, which costs only the singular values: while a wide stream has fewer
        rows than dimensions each new state needs its rank (eviction tests) far
        more often than scores, and the vectors cost about as much again
        (0.4 s against 0.2 s at d = 1024).
        """
        kind, _R, W, rank, S = self._get_scorer()
        if W is not None:
            return W
        nz, scale, Rs = self._normalised()
        with blas_threads(1):
            _U, S2, Vt = np.linalg.svd(Rs, full_matrices=False)
        W = np.zeros((self.dim, rank))
        W[nz] = (Vt[:rank].T / S2[:rank]) / scale[nz][:, None]
        self._scorer = Scorer(kind, None, W, rank, S)
        return W

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
        if s.kind != "tri":
            raise ValueError("the factor is rank-deficient; no triangular scoring factor")
        return s.R

    def scoring_inverse(self) -> np.ndarray:
        """Inverse of :meth:`scoring_factor` (cached)."""
        return self._scoring_inv(self.scoring_factor())

    @property
    def rank(self) -> int:
        """Numerical rank: d when λ > 0, else the SVD rule of :meth:`_get_scorer` (computed once per state)."""
        return self._get_scorer().rank

    def rank_at_least(self, k: float) -> bool:
        """Exactly ``self.rank >= k``, without the SVD where a certified lower bound on the rank decides.

        The bound (:func:`streamlev._rank.rank_lower_bound`, one triangular
        inverse) never exceeds the rank of the SVD rule, so a bound >= k
        proves the answer; otherwise (and for k above the bound) the rank
        itself is computed.  A wide stream asks this at each of its
        rank-deficient states (:meth:`streamlev.online.single.Stream.evict_due`),
        where the bound is nearly always the number of rows and the question
        is whether the rank reaches a fraction of it.
        """
        if k <= 0:
            return True
        if k > self.dim:
            return False  # the rule counts at most d singular values
        if self._scorer is not None or self.ridge > 0 or self.fast_ok():
            return self.rank >= k
        return self._rank_lower_bound() >= k or self.rank >= k

    def _rank_lower_bound(self) -> int:
        """The certified lower bound on the rank (:func:`streamlev._rank.rank_lower_bound`), once per state."""
        if self._rank_lb is None:
            nz, scale, _ = self._normalised(scaled=False)
            self._rank_lb = rank_lower_bound(self.R, scale, self.n, int(np.count_nonzero(nz)))
        return self._rank_lb

    def rows_independent(self) -> bool:
        """Whether the n rows summarised are certified linearly independent (λ = 0, 1 <= n <= d), without an SVD.

        True when the certified lower bound on the rank
        (:func:`streamlev._rank.rank_lower_bound`) reaches n: the rank rule
        then keeps n directions, as many as there are rows, so each summarised
        row has pseudo-inverse leverage score exactly 1 among them (the scores
        sum to the rank and none exceeds 1).  Callers scoring summarised rows
        return 1 without the two d x d SVDs of the pseudo-inverse map.  False
        means only that the bound cannot tell (for instance for exactly
        dependent rows): the scores are then computed.
        """
        if self.ridge > 0 or not 0 < self.n <= self.dim:
            return False
        return self._rank_lower_bound() >= self.n

    def scores(self, B: np.ndarray) -> np.ndarray:
        """Leverage scores of the rows of B with respect to the factor.

        For rows that were absorbed into the factor these are their exact
        (ridge) leverage scores among all absorbed rows (not clipped: the
        excess over [0, 1] is rounding at the 1e-15 level).
        """
        kind, R, _W, _rank, _S = self._get_scorer()
        m = B.shape[0]
        if m == 0:
            return np.zeros(0)
        if kind == "zero":
            return np.zeros(m)
        return whitened_sqnorms(B, self._scoring_inv(R) if kind == "tri" else self._dense_map())

    def nbytes(self) -> int:
        """Bytes of the factor, and of an earlier factor a bracketed bound still holds."""
        b = self._bound
        s = self._scorer
        return int(self.R.nbytes + (0 if b is None else b.held_nbytes(self.R, None if s is None else s.R)))

    # -- several factors of one dimension at once (the heads of a MultiHeadLeverage) ---------------------------
    @staticmethod
    def _compute_bounds(facs) -> list:
        """:class:`Bound` of each factor at its current state (None where it has none), the SVDs stacked."""
        out = [None] * len(facs)
        # Fewer rows than dimensions (λ = 0): singular, no triangular scorer — known without the scorer's SVD.
        tri = [i for i, f in enumerate(facs) if (f.ridge > 0 or f.n >= f.dim) and f._get_scorer().kind == "tri"]
        if tri:
            found = Factor._svd_bounds([facs[i]._get_scorer().R for i in tri], [facs[i].n for i in tri])
            for i, b in zip(tri, found):
                out[i] = b
        return out

    @staticmethod
    def _svd_bounds(Ss, ns) -> list:
        """:class:`Bound` (or None) of each triangular scoring factor in ``Ss`` (one dimension) with ``ns`` rows.

        From the singular values of the column-normalised factors, computed as one stacked SVD.
        """
        out = [None] * len(Ss)
        S = np.stack(Ss)
        dim = S.shape[-1]
        cn = colnorms(S)
        ok = np.all(cn > 0, axis=1)
        if not ok.any():
            return out
        X = S[ok] / cn[ok][:, None, :]
        k = X.shape[0]
        # Many wide factors (MultiHeadLeverage's heads): their SVDs split over the threads, which gives the same
        # bytes (each matrix's SVD runs alone on one thread either way); below BOUND_SPLIT_MIN_DIM the thread
        # hand-off costs more than it saves.
        parts = parts_for(k, 1) if dim >= BOUND_SPLIT_MIN_DIM else 1
        with blas_threads(1):
            res = split_run(lambda a, b: np.linalg.svd(X[a:b], compute_uv=False), k, parts)
        sv = res[0] if len(res) == 1 else np.concatenate(res)
        for i, c, s in zip(np.flatnonzero(ok), cn[ok], sv):
            if not (s[-1] > 0 and np.isfinite(s[0])):
                continue
            cond = s[0] / s[-1]
            if cond > BOUND_COND_MAX:
                continue
            up, lo = _bound_sides(s[0], s[-1], dim)
            out[i] = Bound(1.0 / c, up, lo, ns[i])
        return out

    def _bracketed_bound(self) -> Bound | None:
        """A :class:`Bound` whose sides wait for first use, or None when the bracket cannot prove that one exists.

        Instead of the SVD of the column-normalised scoring factor ``X = S D⁻¹``,
        its smallest and largest singular values are bracketed from the
        triangular inverse (cached for scoring and whitened updates anyway):
        with ``M = D·S⁻¹`` (computed X⁻¹), ``1/‖X⁻¹‖_F <= σ_min <= min(min_i |X_ii|,
        1/(largest row or column norm of X⁻¹))`` and ``1 <= σ_max <= ‖X‖_F``
        (unit columns), widened by the inverse's rounding and by the SVD's own
        (allowance 4·d²·u·‖X‖_F, as for the rank certificate, ``streamlev._rank``).
        The bound exists — the SVD would give cond <= BOUND_COND_MAX — when
        the bracket proves it; :func:`_bound_sides` at the bracket's ends then
        brackets ``up``.
        """
        if not (self.ridge > 0 or self.n >= self.dim):
            return None
        kind, S, _W, _rank, _S = self._get_scorer()
        if kind != "tri":
            return None
        d = self.dim
        cn = colnorms(S)
        diag = np.abs(np.diag(S))
        if not (np.all(cn > 0) and np.all(diag > 0)):
            return None
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            M = self._scoring_inv(S) * cn[:, None]
            rows = np.sqrt(np.einsum("ij,ij->i", M, M))
            cols = np.sqrt(np.einsum("ij,ij->j", M, M))
            F = float(np.sqrt(np.sum(rows * rows)))
            xf = 1.01 * np.sqrt(d)  # ‖X‖_F: unit columns, up to rounding
            delta = 2.0 * d * d * _EPS64 * F * xf  # relative error allowance of the computed inverse (in norm)
            if not (np.isfinite(F) and delta <= 0.01):
                return None
            err = 4.0 * d * d * _EPS64 * xf  # the SVD's rounding allowance (absolute)
            sl_lo = (1.0 / (F * (1.0 + delta)) - err) * (1.0 - 1e-9)
            big_inv = max(float(rows.max()), float(cols.max()), F / np.sqrt(d)) - delta * F
            sl_hi = min(float(np.min(diag / cn)) * (1.0 + 1e-12), 1.0 / big_inv if big_inv > 0 else np.inf) + err
            sl_hi *= 1.0 + 1e-9
            s0_lo = (1.0 - 1e-9 - err) * (1.0 - 1e-9)
            s0_hi = (xf + err) * (1.0 + 1e-9)
            if not (sl_lo > 0 and s0_lo > 0 and np.float64(s0_hi) / np.float64(sl_lo) <= BOUND_COND_MAX):
                return None
            up_lo = _bound_sides(np.float64(s0_lo), np.float64(sl_hi), d)[0]
            up_hi = _bound_sides(np.float64(s0_hi), np.float64(sl_lo), d)[0]
        return Bound(1.0 / cn, None, None, self.n, up_range=(up_lo, up_hi), source=S)

    @staticmethod
    def bounds_many(facs, *, fresh: bool = False) -> list:
        """:meth:`Factor.bound` of several factors of one dimension, the bounds to recompute as one stacked SVD.

        From BOUND_SPLIT_MIN_DIM on, the SVDs are split over the threads (the same bytes).
        """
        out, todo = [], []
        for i, f in enumerate(facs):
            b = f._bound
            if _bound_reusable(b, f.n, f.dim, fresh):
                out.append(b)
            else:
                out.append(None)
                todo.append(i)
        if todo:
            for i, nb in zip(todo, Factor._compute_bounds([facs[i] for i in todo])):
                if nb is not None:
                    facs[i]._bound = nb
                out[i] = nb if nb is not None or fresh else facs[i]._bound
        return out

    @staticmethod
    def fast_ok_many(facs) -> list[bool]:
        """:meth:`Factor.fast_ok` of several factors of one dimension, the column norms as one stacked computation."""
        stale = [f for f in facs if f._fast is None or f._fast.n != f.n]
        if stale:
            Rs = np.stack([f.R for f in stale])
            nonsingular = np.all(np.diagonal(Rs, axis1=1, axis2=2) != 0, axis=1)
            cn = colnorms(Rs)
            with blas_threads(1):  # one limit for all the condition estimates (nested contexts are free)
                for f, ok, c in zip(stale, nonsingular, cn):
                    f._set_fast(c if ok else None)
        return [f._fast.ok for f in facs]

    @staticmethod
    def accept_many(facs, U: np.ndarray, m) -> None:
        """:meth:`Factor.accept` of several factors at once: ``R_k ← triu(U_k R_k)`` as one stacked product.

        ``m``: the rows each update adds (one number for all, or one per factor).
        """
        Rn = np.triu(np.matmul(U, np.stack([f.R for f in facs])))
        ms = np.broadcast_to(np.asarray(m, dtype=np.int64), (len(facs),))
        for f, R, k in zip(facs, Rn, ms):
            f._accepted(R, int(k))

    @staticmethod
    def whitened_update_many(facs, C: np.ndarray, m) -> list:
        """Tier 1 of :meth:`Factor.update` for several factors from their rows' Gram matrices C (stacked, symmetric).

        Per factor the arithmetic of the single update — G = R⁻ᵀCR⁻¹, I + G = UᵀU,
        R ← UR — with the d x d steps as stacked operations.  Returns the indices
        (into ``facs``) whose update was refused (trace(G) > FAST_TRACE_MAX, an
        overflow, or a failed Cholesky factorisation); those factors are untouched.
        ``m``: the rows behind each C (one number, or one per factor).
        """
        if not facs:
            return []
        d = facs[0].dim
        ms = np.broadcast_to(np.asarray(m, dtype=np.int64), (len(facs),))
        Rinv = Factor.rinv_many(facs)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow fails the trace test (as per head)
            G = np.matmul(np.matmul(Rinv.transpose(0, 2, 1), C), Rinv)
            G = 0.5 * (G + G.transpose(0, 2, 1))
            tr = np.trace(G, axis1=1, axis2=2)
        good = np.flatnonzero(tr <= FAST_TRACE_MAX)
        refused = [int(i) for i in np.flatnonzero(~(tr <= FAST_TRACE_MAX))]
        if good.size == 0:
            return refused
        G = G[good]
        G[:, np.arange(d), np.arange(d)] += 1.0
        try:
            with blas_threads(1):
                L = np.linalg.cholesky(G)  # I + G = L Lᵀ, U = Lᵀ
        except np.linalg.LinAlgError:
            return sorted(refused + [int(i) for i in good])
        Factor.accept_many([facs[i] for i in good], L.transpose(0, 2, 1), ms[good])
        return refused

    @staticmethod
    def rinv_many(facs) -> np.ndarray:
        """Stacked inverses of several nonsingular factors (cached ones reused, the rest as :func:`tri_inv` gives)."""
        todo = [f for f in facs if f._rinv is None]
        if todo:
            if todo[0].dim >= TRI_INV_LAPACK_MIN_DIM:
                inv = [tri_inv(f.R) for f in todo]
            else:
                inv = kernels.tri_inv_upper_batched(np.ascontiguousarray(np.stack([f.R for f in todo])))
            for f, ri in zip(todo, inv):
                f._rinv = ri
        return np.stack([f._rinv for f in facs])


bounds_many = Factor.bounds_many
fast_ok_many = Factor.fast_ok_many
accept_many = Factor.accept_many
whitened_update_many = Factor.whitened_update_many
rinv_many = Factor.rinv_many
