"""Selected-key attention: universal-set masks, attention over kept keys, metrics, a KV-cache policy.

(This module is ``streamlev._attention`` because ``streamlev.attention`` is the public function; every
public name here is exported at the top level: ``streamlev.select_keys``, ``streamlev.attention``, ...)

Guarantees (docs/design.md, "Leverage scores and the universal set"):

* f(x) = |x|^p ("power" attention, A = row-normalise(|QKᵀ|^p)): the ε-universal set holds every
  entry A_ij >= eps for *every* query matrix Q; for p = 2 it is {j : τ_j >= eps} (leverage
  scores, at most rank/eps keys), for p != 2 see :func:`streamlev.lewis.universal_set_p`.
* Causal attention: query i attends to keys 1..i, so its universal set is the universal set of
  the prefix K[:i+1]; sensitivities only decrease as the prefix grows, so these sets are computed
  in one pass in which an evicted key never re-enters.
* Softmax: no set smaller than n can be guaranteed (docs/design.md, "Softmax"); ``top_k`` keeps the keys of
  largest leverage score / Lewis weight, the LevAttention heuristic.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike

from . import serialize
from ._factor import Factor, at_least
from ._rowbasis import row_basis
from ._sketch import CallableInt, Sketch, deprecated
from ._validate import as_block, as_keys, check_dim, check_eps, check_p, check_positive_int, check_ridge
from .exact import leverage_scores
from .lewis import (
    _certify_one,
    _dual_upper,
    _lower_general,
    _one_blas_thread,
    _subset_keep,
    lewis_weights,
)
from .sets import universal_set

__all__ = [
    "select_keys",
    "attention",
    "attention_weights",
    "heavy_entry_recall",
    "attention_mass_kept",
    "relative_output_error",
    "LeverageKVCache",
]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _as_stack(X, name: str) -> np.ndarray:
    """Validate an array of shape (..., n, d) (at least 2-D) through streamlev's one checker."""
    arr = X if isinstance(X, np.ndarray) else None
    if arr is None and not isinstance(X, (str, bytes)):
        try:
            arr = np.asarray(X)
        except Exception:  # ragged input: let as_keys produce its message
            arr = None
    ndim = arr.ndim if arr is not None and arr.dtype != object and arr.ndim >= 2 else 2
    return as_keys(X, name=name, ndim=ndim)


def _check_choice(eps, top_k):
    if (eps is None) == (top_k is None):
        raise ValueError(
            "pass exactly one of eps (the ε-universal set) and top_k (the k keys of "
            f"largest score); got eps={eps!r}, top_k={top_k!r}"
        )


# ----------------------------------------------------------------------------------------------
# select_keys
# ----------------------------------------------------------------------------------------------


@_one_blas_thread
def select_keys(
    K: ArrayLike,
    *,
    eps: float | None = None,
    top_k: int | None = None,
    p: float = 2.0,
    ridge: float = 0.0,
    causal: bool = False,
) -> np.ndarray:
    """Boolean mask of the keys to keep, for keys of shape (..., n, d) (e.g. heads x keys x dim).

    Parameters
    ----------
    K : array_like, shape (..., n, d)
        Keys; leading axes (batch, heads) are independent streams.
    eps : float in (0, 1], optional
        Keep the ε-universal set: every key that some query can give attention >= eps under
        f(x) = |x|^p (exact for p = 2 via leverage scores; ℓ_p sensitivities otherwise).
    top_k : int >= 1, optional
        Keep the top_k keys of largest leverage score (p = 2, with ``ridge``) or Lewis weight
        (p != 2); ties (scores equal to within 1e-12 of the largest) go to the lower index;
        all keys when top_k >= n.  A heuristic (softmax).
    p : float, default 2.0
        Exponent of f(x) = |x|^p.
    ridge : float, default 0.0
        Ridge λ for p = 2 scores; must be 0 for p != 2.
    causal : bool, default False
        Return a (..., n, n) mask whose row i selects among the prefix K[..., :i+1, :]: with
        ``eps``, row i is exactly the universal set of that prefix; with ``top_k`` (p = 2 only),
        the top_k keys by their prefix leverage score.

    Returns
    -------
    numpy.ndarray of bool
        Shape (..., n), or (..., n, n) when ``causal``.

    Notes
    -----
    Causal ``eps`` masks are computed in one streaming pass per stream: a triangular factor of the
    prefix (p = 2, :class:`streamlev._factor.Factor`) or the prefix rows (p >= 1) and a candidate
    set; a key whose prefix score drops below eps is evicted and never re-enters (its score can
    only decrease).  For p = 2 a step costs O(d³ + |C|·d²) with |C| <= rank/eps candidates.  For
    p != 2 each step certifies every candidate's exact ℓ_p sensitivity over the prefix, so it is
    much slower; p < 1 is refused there (no convex formulation).  Causal ``top_k`` rescores
    every prefix key at every step (O(n²·d²) per stream).
    """
    _check_choice(eps, top_k)
    K = _as_stack(K, "K")
    p = check_p(p)
    ridge = check_ridge(ridge)
    if p != 2.0 and ridge > 0:
        raise ValueError(f"ridge={ridge} is only defined for p = 2 (ridge leverage scores); for p={p} use ridge=0.0")
    if eps is not None:
        eps = check_eps(eps)
    else:
        top_k = check_positive_int(top_k, "top_k")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be True or False, got {type(causal).__name__}")
    if causal and p != 2.0 and eps is not None and p < 1.0:
        raise ValueError(
            f"causal=True with p={p} < 1 is not supported: the prefix sets need exact "
            f"l_p sensitivities, a convex problem only for p >= 1; use p >= 1, "
            f"causal=False, or streamlev.OnlinePowerSet"
        )
    if causal and top_k is not None and p != 2.0:
        raise ValueError(
            f"causal=True with top_k needs p = 2 (prefix leverage scores), got p={p}; "
            f"use eps=... for the exact causal universal sets"
        )
    lead = K.shape[:-2]
    n, d = K.shape[-2:]
    flat = K.reshape((math.prod(lead), n, d))
    out_shape = (*lead, n, n) if causal else (*lead, n)
    out = np.zeros((flat.shape[0], *out_shape[len(lead) :]), dtype=bool)
    for h in range(flat.shape[0]):
        Kh = flat[h]
        if causal:
            if eps is not None:
                out[h] = _causal_universal(Kh, eps, p, ridge)
            else:
                out[h] = _causal_top_k(Kh, top_k, ridge)
        elif eps is not None:
            idx = universal_set(Kh, eps, p=p, ridge=ridge)
            out[h, idx] = True
        else:
            out[h] = _top_k_mask(_scores(Kh, p, ridge), top_k)
    return out.reshape(out_shape)


def _scores(K: np.ndarray, p: float, ridge: float) -> np.ndarray:
    if p == 2.0:
        return leverage_scores(K, ridge=ridge)
    return lewis_weights(K, p)


def _top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    n = scores.shape[0]
    mask = np.zeros(n, dtype=bool)
    if k >= n:
        mask[:] = True
        return mask
    # Scores equal up to rounding (1e-12 of the largest) are ties; a stable sort gives them to the
    # lower index, so duplicated keys select deterministically.
    top = float(np.max(scores)) if n else 0.0
    keyed = np.round(scores / top * 1e12) if top > 0 else scores
    order = np.argsort(-keyed, kind="stable")
    mask[order[:k]] = True
    return mask


def _causal_universal(K: np.ndarray, eps: float, p: float, ridge: float) -> np.ndarray:
    n, d = K.shape
    M = np.zeros((n, n), dtype=bool)
    if p == 2.0:
        fac = Factor(d, ridge)
        cand = np.zeros(0, dtype=np.int64)
        for i in range(n):
            fac.absorb(np.asarray(K[i : i + 1], dtype=np.float64))
            cand = np.append(cand, i)
            s = fac.scores(K[cand])
            cand = cand[at_least(s, eps)]
            M[i, cand] = True
        return M
    # p != 2 (p >= 1): exact sensitivities over the prefix, certified; evict on upper < eps.
    cand = np.zeros(0, dtype=np.int64)
    for i in range(n):
        cand = np.append(cand, i)
        U, active = row_basis(K[: i + 1])
        if U.shape[0] == 0 or U.shape[1] == 0:
            cand = cand[:0]
            continue
        pos = np.cumsum(active) - 1
        cand = cand[active[cand]]
        rows = pos[cand]
        # free feasible duals y = U u_j (UᵀU = I) first, Newton certificates for the rest
        Y = U @ U[rows].T
        keep = np.ones(cand.size, dtype=bool)
        for t, rj in enumerate(rows):
            ub = _dual_upper(U, Y[:, t], U[rj], p)
            if not at_least(np.array([ub]), eps)[0]:
                keep[t] = False
                continue
            if _lower_general(Y[:, t], int(rj), p) >= eps:  # the query q = u_j proves it heavy
                continue
            _lo, hi, _q = _certify_one(U, int(rj), p, eps=eps, max_newton=200, q_init=U[rj])
            keep[t] = bool(at_least(np.array([hi]), eps)[0])
        cand = cand[keep]
        M[i, cand] = True
    return M


def _causal_top_k(K: np.ndarray, k: int, ridge: float) -> np.ndarray:
    n, d = K.shape
    M = np.zeros((n, n), dtype=bool)
    fac = Factor(d, ridge)
    for i in range(n):
        fac.absorb(np.asarray(K[i : i + 1], dtype=np.float64))
        s = np.clip(fac.scores(K[: i + 1]), 0.0, 1.0)
        M[i, : i + 1] = _top_k_mask(s, k)
    return M


# ----------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------

_KINDS = ("softmax", "power")


def _prepare(Q, K, *, mask, kind, p, scale):
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'softmax' or 'power', got {kind!r}")
    Q = _as_stack(Q, "Q")
    K = _as_stack(K, "K")
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"Q and K must have the same last dimension d, got Q {Q.shape} and K {K.shape}")
    p = check_p(p)
    if scale is None:
        scale = 1.0 / math.sqrt(Q.shape[-1]) if kind == "softmax" else 1.0
    elif isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real) or not math.isfinite(float(scale)):
        raise ValueError(f"scale must be a finite real number or None, got {scale!r}")
    try:
        logits = float(scale) * np.matmul(
            np.asarray(Q, dtype=np.float64), np.swapaxes(np.asarray(K, dtype=np.float64), -1, -2)
        )
    except ValueError as exc:
        raise ValueError(f"leading (batch/head) axes of Q {Q.shape} and K {K.shape} do not broadcast ({exc})") from None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"mask must be a boolean array (True = keep), got dtype {mask.dtype}")
        if mask.ndim == 0:
            raise ValueError("mask must have shape (..., n) or (..., n_q, n), got a scalar")
        if mask.ndim < K.ndim:  # (..., n): one decision per key, shared by all queries
            mask = mask[..., None, :]
        try:
            mask = np.broadcast_to(mask, np.broadcast_shapes(mask.shape, logits.shape))
        except ValueError:
            raise ValueError(
                f"mask of shape {np.asarray(mask).shape} does not fit attention of shape "
                f"{logits.shape}: use (..., n) per key or (..., n_q, n) per query"
            ) from None
        if mask.shape != logits.shape:
            logits = np.broadcast_to(logits, mask.shape)
    return logits, mask, p


def _weights_from_logits(logits, mask, kind, p):
    if kind == "softmax":
        L = logits if mask is None else np.where(mask, logits, -np.inf)
        m = np.max(L, axis=-1, keepdims=True, initial=-np.inf)
        m = np.where(np.isfinite(m), m, 0.0)
        E = np.exp(L - m)
    else:
        X = np.abs(logits)
        if mask is not None:
            X = np.where(mask, X, 0.0)
        xmax = np.max(X, axis=-1, keepdims=True, initial=0.0)
        safe = np.where(xmax > 0, xmax, 1.0)
        E = (X / safe) ** p
    tot = np.sum(E, axis=-1, keepdims=True)
    return np.divide(E, tot, out=np.zeros_like(E), where=tot > 0)


def attention_weights(
    Q: ArrayLike,
    K: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    kind: str = "softmax",
    p: float = 2.0,
    scale: float | None = None,
) -> np.ndarray:
    """Return the attention matrix A (..., n_q, n) over the kept keys (see :func:`attention`)."""
    logits, mask, p = _prepare(Q, K, mask=mask, kind=kind, p=p, scale=scale)
    return _weights_from_logits(logits, mask, kind, p)


def attention(
    Q: ArrayLike,
    K: ArrayLike,
    V: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    kind: str = "softmax",
    p: float = 2.0,
    scale: float | None = None,
) -> np.ndarray:
    """Attention over the keys a mask keeps.

    Parameters
    ----------
    Q : array_like, shape (..., n_q, d)
        Queries.
    K : array_like, shape (..., n, d)
        Keys.
    V : array_like, shape (..., n, d_v)
        Values.
    mask : array_like of bool, optional
        True = keep.  Shape (..., n) (one decision per key, e.g. from :func:`select_keys`) or
        (..., n_q, n) (per query, e.g. a causal mask); a mask with fewer dimensions than K is
        read as per key.  Leading axes broadcast with those of Q and K.
    kind : {"softmax", "power"}
        ``"softmax"``: A = softmax(scale·QKᵀ) over kept keys, computed with the row maximum
        subtracted (log-sum-exp stable).  ``"power"``: A = row-normalise(|scale·QKᵀ|^p) over kept
        keys, computed as (|x|/max|x|)^p so that no power overflows.
    p : float, default 2.0
        Exponent for ``kind="power"``.
    scale : float, optional
        Logit scale; default 1/√d for softmax and 1 for power (where it cancels).

    Returns
    -------
    numpy.ndarray of float64, shape (..., n_q, d_v)
        A·V.  A query row that keeps no key, or (power) whose kept logits are all zero, has no
        defined distribution: its attention row and output are zeros (never NaN).
    """
    logits, mask, p = _prepare(Q, K, mask=mask, kind=kind, p=p, scale=scale)
    V = _as_stack(V, "V")
    K_n = np.asarray(K).shape[-2]
    if V.shape[-2] != K_n:
        raise ValueError(f"V must have one row per key: K has n={K_n} keys, V has shape {V.shape}")
    A = _weights_from_logits(logits, mask, kind, p)
    return np.matmul(A, np.asarray(V, dtype=np.float64))


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def _expand_mask(mask, A):
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise TypeError(f"mask must be a boolean array (True = keep), got dtype {mask.dtype}")
    if mask.ndim < A.ndim:
        mask = mask[..., None, :]
    try:
        return np.broadcast_to(mask, A.shape)
    except ValueError:
        raise ValueError(f"mask of shape {mask.shape} does not fit attention of shape {A.shape}") from None


def _as_attention_matrix(A):
    A = np.asarray(A, dtype=np.float64)
    if A.ndim < 2:
        raise ValueError(f"A must be an attention matrix of shape (..., n_q, n), got shape {A.shape}")
    return A


def heavy_entry_recall(A: ArrayLike, mask: ArrayLike, eps: float) -> float:
    """Share of the heavy entries A_ij >= eps of full attention whose key the mask keeps.

    Parameters
    ----------
    A : array_like, shape (..., n_q, n)
        Full (unmasked) attention weights, e.g. ``attention_weights(Q, K, kind="power", p=p)``.
    mask : array_like of bool, shape (..., n) or (..., n_q, n)
        Kept keys.
    eps : float in (0, 1]
        Heaviness threshold.

    Returns
    -------
    float
        #{(i, j) : A_ij >= eps and j kept} / #{(i, j) : A_ij >= eps}; 1.0 when there is no heavy
        entry.  For power attention and an ε-universal mask this is 1.0 for every Q.
    """
    A = _as_attention_matrix(A)
    eps = check_eps(eps)
    M = _expand_mask(mask, A)
    heavy = A >= eps
    total = int(np.count_nonzero(heavy))
    if total == 0:
        return 1.0
    return int(np.count_nonzero(heavy & M)) / total


def attention_mass_kept(A: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Attention mass each query keeps: Σ_{j kept} A_ij, shape (..., n_q).

    ``A`` is the full attention (rows summing to 1, or 0 for undefined rows).
    """
    A = _as_attention_matrix(A)
    M = _expand_mask(mask, A)
    return np.sum(np.where(M, A, 0.0), axis=-1)


def relative_output_error(output: ArrayLike, reference: ArrayLike) -> float:
    """Relative error ‖output - reference‖_F / ‖reference‖_F.

    0.0 when both are zero, inf when only the reference is zero.
    """
    out = np.asarray(output, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"output and reference must have the same shape, got {out.shape} and {ref.shape}")
    den = float(np.linalg.norm(ref.ravel()))
    num = float(np.linalg.norm((out - ref).ravel()))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


# ----------------------------------------------------------------------------------------------
# KV cache
# ----------------------------------------------------------------------------------------------


class LeverageKVCache(Sketch):
    """KV-cache eviction for decoding that keeps the prefix universal set (plus sinks and a window).

    Keys (and optionally values) arrive in order.  After each token (:meth:`update`) the cache
    holds: the first ``sinks`` tokens, the last ``window`` tokens, and every other token whose
    attention can still reach ``eps``:

    * p = 2: the tokens with prefix (ridge) leverage score >= eps, computed exactly from a d x d
      triangular factor of *all* keys seen (so the held universal part is exactly the universal set
      of the prefix, at most rank/eps tokens; state <= d/eps + sinks + window keys plus d² floats).
    * p != 2: the tokens whose ℓ_p sensitivity with respect to the held tokens is not certified
      below eps (at most c_p·rank/eps of them besides sinks and window).

    Guarantee (power attention f(x) = |x|^p, lossless): a token evicted at step t can never get
    attention >= eps from any later query attending over all tokens seen so far — its sensitivity
    with respect to the tokens at step t (or a subset of them, for p != 2) is < eps, and
    sensitivities only decrease as tokens are added.  Evicted tokens never re-enter.

    Parameters
    ----------
    dim : int
        Key dimension d.
    eps : float in (0, 1]
        Attention threshold.
    p : float, default 2.0
        Exponent of f(x) = |x|^p.
    sinks : int, default 0
        Number of leading tokens always kept (attention sinks).
    window : int, default 0
        Number of most recent tokens always kept.
    ridge : float, default 0.0
        Ridge λ for p = 2; must be 0 for p != 2.
    """

    _FAMILY = "LeverageKVCache"
    _REPR = ("dim", "eps", "p", "sinks", "window", "n_seen", "n_candidates")

    def __init__(self, dim: int, eps: float, *, p: float = 2.0, sinks: int = 0, window: int = 0, ridge: float = 0.0):
        self.dim = check_dim(dim)
        self.eps = check_eps(eps)
        self.p = check_p(p)
        self.sinks = check_positive_int(sinks, "sinks", minimum=0)
        self.window = check_positive_int(window, "window", minimum=0)
        self.ridge = check_ridge(ridge)
        if self.p != 2.0 and self.ridge > 0:
            raise ValueError(f"ridge={self.ridge} is only defined for p = 2; for p={self.p} use ridge=0.0")
        self._factor = Factor(self.dim, self.ridge) if self.p == 2.0 else None
        self._n = 0
        self.keys_ = np.zeros((0, self.dim))
        self.positions_ = np.zeros(0, dtype=np.int64)
        self.values_ = None
        self.max_size_ = 0

    def __len__(self) -> int:
        return int(self.positions_.size)

    @property
    def n_seen(self) -> int:
        """Tokens fed so far."""
        return self._n

    @property
    def n_seen_(self) -> int:
        """Deprecated spelling of :attr:`n_seen`."""
        deprecated("LeverageKVCache.n_seen_", "n_seen")
        return self._n

    @property
    def n_candidates(self) -> int:
        """Tokens held (universal set, sinks and window)."""
        return int(self.positions_.size)

    @property
    def nbytes(self) -> int:
        """Bytes of state: held keys, positions, values and (p = 2) the d x d factor."""
        b = self.keys_.nbytes + self.positions_.nbytes
        if self.values_ is not None:
            b += self.values_.nbytes
        if self._factor is not None:
            b += self._factor.nbytes()
        return CallableInt(b)

    def _protected(self, pos: np.ndarray) -> np.ndarray:
        t = self._n
        return (pos < self.sinks) | (pos >= t - self.window)

    def _check_values(self, values, m: int):
        """Values of m tokens as float64 (m, dv), or None; refused if inconsistent with the tokens before."""
        if values is None:
            if self.values_ is not None:
                raise ValueError("this cache stores values: pass value= (values= in update) with every key")
            return None
        val = np.asarray(values, dtype=np.float64)
        val = val.reshape(m, -1) if val.ndim <= 1 else val
        if val.ndim != 2 or val.shape[0] != m:
            raise ValueError(f"values must have one row per key ({m}), got shape {np.shape(values)}")
        if self.values_ is None:
            if self._n > 0:
                raise ValueError(
                    "values must be given for every token or for none; the first tokens were appended without a value"
                )
        elif val.shape[1] != self.values_.shape[1]:
            raise ValueError(f"value dimension changed from {self.values_.shape[1]} to {val.shape[1]}")
        return val

    @_one_blas_thread
    def update(self, X: ArrayLike, ids: ArrayLike | None = None, *, values: ArrayLike | None = None) -> LeverageKVCache:
        """Add tokens (keys of shape (m, d) or (d,), optional values (m, dv)) in order, evicting after each.

        Tokens are numbered by position (sinks and window count positions),
        so ``ids`` must be None or the next positions.  A refused block
        leaves the cache as it was.
        """
        K = np.asarray(as_block(X, self.dim, name="key"), dtype=np.float64)
        m = K.shape[0]
        if ids is not None:
            want = np.arange(self._n, self._n + m)
            got = np.asarray(ids)
            if got.shape != (m,) or got.dtype.kind not in "iu" or not np.array_equal(got, want):
                raise ValueError(
                    "LeverageKVCache numbers tokens by position (sinks and window count positions): "
                    f"ids must be None or the next positions {self._n}..{self._n + m - 1}"
                )
        val = self._check_values(values, m)
        if self.values_ is None and val is not None:
            self.values_ = np.zeros((0, val.shape[1]))
        for i in range(m):
            self._add(K[i : i + 1], None if val is None else val[i : i + 1])
        return self

    def append(self, key: ArrayLike, value: ArrayLike | None = None) -> LeverageKVCache:
        """Deprecated: ``update(key, values=value)`` adds one token (or several) the same way."""
        deprecated("LeverageKVCache.append(key, value)", "update(key, values=value)")
        k = np.asarray(as_block(key, self.dim, name="key"), dtype=np.float64)
        if k.shape[0] != 1:
            raise ValueError(
                f"append takes one key of shape ({self.dim},), got {k.shape[0]} rows; call append once per token"
            )
        return self.update(k, values=value)

    def _add(self, k: np.ndarray, val: np.ndarray | None) -> None:
        pos = self._n
        self._n += 1
        keys = np.vstack([self.keys_, k])
        positions = np.append(self.positions_, pos)
        values = None if val is None else np.vstack([self.values_, val])
        if self._factor is not None:
            self._factor.absorb(k)
            universal = at_least(self._factor.scores(keys), self.eps)
        else:
            universal = _subset_keep(keys, self.eps, self.p, refine=True)
        keep = universal | self._protected(positions)
        self.keys_ = keys[keep]
        self.positions_ = positions[keep]
        if values is not None:
            self.values_ = values[keep]
        self.max_size_ = max(self.max_size_, int(keep.sum()))

    def universal_set(self) -> np.ndarray:
        """Sorted int64 positions of the tokens held (the prefix universal set, sinks and window)."""
        return self.positions_.copy()

    def merge(self, other: LeverageKVCache) -> LeverageKVCache:
        """Not defined: a KV cache follows one sequence of token positions (sinks and window are positions)."""
        raise NotImplementedError(
            "LeverageKVCache cannot merge: it follows one sequence of token positions (sinks and window are "
            "positions); to combine shards of keys use OnlineLeverage (p = 2) or OnlinePowerSet (p != 2)"
        )

    def to_bytes(self) -> bytes:
        """Serialise (:mod:`streamlev.serialize`)."""
        meta = {
            "dim": self.dim,
            "eps": self.eps,
            "p": self.p,
            "sinks": self.sinks,
            "window": self.window,
            "ridge": self.ridge,
            "n_seen": self._n,
            "max_size": self.max_size_,
            "factor_rows": 0 if self._factor is None else self._factor.n,
            "has_values": self.values_ is not None,
        }
        arrays = {"keys": self.keys_, "positions": self.positions_}
        if self._factor is not None:
            arrays["R"] = self._factor.R
        if self.values_ is not None:
            arrays["values"] = self.values_
        return serialize.pack(self._FAMILY, meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> LeverageKVCache:
        """Restore a cache written by :meth:`to_bytes`; ``ValueError`` on any corruption."""
        meta, arrays = serialize.unpack(data, cls._FAMILY)

        def bad(msg):
            return ValueError(f"not a valid streamlev sketch: {msg}")

        fields = {"dim", "eps", "p", "sinks", "window", "ridge", "n_seen", "max_size", "factor_rows", "has_values"}
        if set(meta) != fields:
            raise bad("unexpected fields")
        for k in ("n_seen", "max_size", "factor_rows"):
            if not isinstance(meta[k], int) or isinstance(meta[k], bool) or not 0 <= meta[k] < 2**63:
                raise bad(f"field {k} is not an int64 count")
        if not isinstance(meta["has_values"], bool):
            raise bad("flags are not booleans")
        try:
            c = cls(
                meta["dim"], meta["eps"], p=meta["p"], sinks=meta["sinks"], window=meta["window"], ridge=meta["ridge"]
            )
        except (TypeError, ValueError) as exc:
            raise bad(str(exc)) from None
        want = {"keys", "positions"} | ({"R"} if c._factor is not None else set())
        want |= {"values"} if meta["has_values"] else set()
        if set(arrays) != want:
            raise bad("unexpected arrays")
        keys, pos = arrays["keys"], arrays["positions"]
        m = keys.shape[0] if keys.ndim == 2 else -1
        if keys.dtype != np.float64 or m < 0 or keys.shape[1] != c.dim or not np.isfinite(keys).all():
            raise bad("held keys have the wrong dtype, shape or non-finite values")
        if pos.dtype != np.int64 or pos.shape != (m,) or np.any(np.diff(pos) <= 0):
            raise bad("positions have the wrong shape or are not increasing")
        if m and (pos[0] < 0 or pos[-1] >= meta["n_seen"]) or meta["max_size"] < m:
            raise bad("counts are inconsistent")
        if c._factor is not None:
            R = arrays["R"]
            if R.shape != (c.dim, c.dim) or R.dtype != np.float64 or not np.isfinite(R).all():
                raise bad("factor has the wrong shape, dtype or non-finite values")
            if np.any(np.tril(R, -1) != 0) or meta["factor_rows"] != meta["n_seen"]:
                raise bad("factor is not upper triangular or counts other rows")
            c._factor.set_state(R, meta["factor_rows"])
        if meta["has_values"]:
            val = arrays["values"]
            if val.dtype != np.float64 or val.ndim != 2 or val.shape[0] != m or not np.isfinite(val).all():
                raise bad("values have the wrong dtype or shape")
            c.values_ = val.copy()
        c._n, c.max_size_ = meta["n_seen"], meta["max_size"]
        c.keys_, c.positions_ = keys.copy(), pos.copy()
        return c

    def _canonical_bytes(self) -> bytes:
        return self.to_bytes()  # serialising changes nothing
