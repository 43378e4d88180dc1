"""The public :func:`universal_set`: leverage scores for p = 2, ℓ_p Lewis weights otherwise.

The dispatch on p lives here, above both layers: :mod:`streamlev.exact`
computes leverage scores (p = 2) and knows nothing of p != 2;
:mod:`streamlev.lewis` handles power attention with p != 2.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import exact, lewis
from ._validate import check_eps, check_p

__all__ = ["universal_set"]


def universal_set(K: ArrayLike, eps: float, *, p: float = 2.0, ridge: float = 0.0) -> np.ndarray:
    """The ε-universal set of LevAttention: keys that some query can attend to with weight >= eps.

    Parameters
    ----------
    K : array_like, shape (n, d)
        Keys.
    eps : float in (0, 1]
        Attention threshold.
    p : float, default 2.0
        Exponent of the attention f(x) = |x|^p, in [0.1, 64] (other values are
        refused with that range: ``streamlev._validate.P_MIN``, ``P_MAX``).  ``p = 2`` uses leverage
        scores (:func:`streamlev.exact.universal_set`); other values use ℓ_p
        Lewis weights (:func:`streamlev.universal_set_p`).
    ridge : float, default 0.0
        λ >= 0 for ridge leverage scores (``p = 2`` only).

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices ``{i : τ_i >= eps}``.  A computed score within a relative
        ``THRESHOLD_RTOL`` (1e-10) below eps counts as reaching it, so rounding
        never drops a key whose exact score equals eps.  For p = 2 and every query matrix
        Q, each entry A_ij >= eps of A = row-normalise((QKᵀ)∘²) has j in the
        set, and the set has at most rank(K)/eps members.  For p != 2 see
        :func:`streamlev.universal_set_p` (a set holding every key of
        sensitivity >= eps).

    Examples
    --------
    >>> import numpy as np, streamlev
    >>> K = np.eye(3)[[0, 0, 0, 0, 1, 2]]  # key 0 four times, keys 1 and 2 once
    >>> streamlev.universal_set(K, 0.5)
    array([4, 5])
    >>> streamlev.universal_set(K, 0.5, p=3.0)
    array([4, 5])
    """
    eps = check_eps(eps)
    if check_p(p) != 2.0:
        return lewis.universal_set_p(K, eps, p=p, ridge=ridge)
    return exact.universal_set(K, eps, ridge=ridge)
