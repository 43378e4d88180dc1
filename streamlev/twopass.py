"""Two passes over a re-readable source: :func:`two_pass_universal_set`.

Pass 1 builds the triangular factor of all rows (blocked Householder QR and
whitened updates, :meth:`streamlev._factor.Factor.update`); pass 2 decides every
row against the final factor: rigorous two-sided bounds settle almost all rows
in one O(d) pass, and only the rows they leave undecided are multiplied by the
inverse factor (:meth:`streamlev._factor.Factor.classify`).  The result is
exactly the universal set of all rows — no candidates are kept between passes,
so memory is the d x d factor plus one block whatever n is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from ._factor import Factor
from ._validate import check_eps, check_positive_int, check_ridge

__all__ = ["two_pass_universal_set", "two_pass", "TwoPassResult"]


def _open_source(source, block_size):
    """Return a zero-argument callable yielding fresh iterables of blocks, and d if known."""
    from .streams import iter_blocks, rereadable  # noqa: PLC0415

    if not rereadable(source):
        raise TypeError(
            "two_pass_universal_set reads its source twice: pass an array, a path to a .npy file "
            "or a zero-argument callable returning a fresh iterable of blocks (a generator can be read "
            "only once; use streamlev.OnlineLeverage for one pass)"
        )
    return lambda: iter_blocks(source, block_size)


class TwoPassResult(NamedTuple):
    """What :func:`two_pass` found: the universal set, the number of rows and the rank of the keys."""

    indices: np.ndarray
    n: int
    rank: int


def two_pass_universal_set(
    source: str | os.PathLike | ArrayLike | Callable[[], Iterable[ArrayLike]],
    eps: float,
    *,
    ridge: float = 0.0,
    block_size: int | None = None,
) -> np.ndarray:
    """Exact ε-universal set of a re-readable stream of keys, in two passes.

    Parameters
    ----------
    source : array_like, str or os.PathLike, or callable
        An (n, d) array; a path to a ``.npy`` file (memory-mapped, never
        loaded whole); or a zero-argument callable returning a fresh iterable
        of (m, d) blocks (called once per pass).
    eps : float in (0, 1]
        Attention threshold.
    ridge : float, default 0.0
        λ >= 0 (ridge leverage scores when > 0).
    block_size : int, optional
        Rows per block for arrays and files (default
        :data:`streamlev.exact.DEFAULT_BLOCK`).

    Returns
    -------
    numpy.ndarray of int64
        Sorted row indices ``{i : τ_i >= eps}`` (row numbers in stream order),
        identical to :func:`streamlev.universal_set` on the concatenated rows.

    Notes
    -----
    Memory: one block plus a d x d factor.  Both passes must yield the same
    rows in the same order; if the second pass yields a different number of
    rows a ``ValueError`` is raised.
    """
    return two_pass(source, eps, ridge=ridge, block_size=block_size).indices


def two_pass(
    source: str | os.PathLike | ArrayLike | Callable[[], Iterable[ArrayLike]],
    eps: float,
    *,
    ridge: float = 0.0,
    block_size: int | None = None,
) -> TwoPassResult:
    """:func:`two_pass_universal_set`, also reporting the number of rows and the rank of the keys.

    The rank is that of the final factor (the :func:`numpy.linalg.matrix_rank`
    rule applied to the column-normalised factor; ``d`` when ``ridge > 0``).
    """
    eps = check_eps(eps)
    ridge = check_ridge(ridge)
    if block_size is not None:
        block_size = check_positive_int(block_size, "block_size")
    passes = _open_source(source, block_size)
    fac = None
    d = None
    # iter_blocks validates every block (finite, 2-D, real, one dimension throughout).
    for B in passes():
        if fac is None:
            d = B.shape[1]
            fac = Factor(d, ridge)
        fac.update(B)
    if fac is None:
        return TwoPassResult(np.zeros(0, dtype=np.int64), 0, 0)
    n1 = fac.n
    found = []
    offset = 0
    for B in passes():
        if B.shape[1] != d:
            raise ValueError(f"the source changed dimension between passes: {d} then {B.shape[1]}")
        keep = fac.classify(B, eps)  # screened by rigorous bounds; only undecided rows are scored
        if keep.any():
            found.append(np.flatnonzero(keep) + offset)
        offset += B.shape[0]
    if offset != n1:
        raise ValueError(
            f"the source yielded {n1} rows in pass 1 but {offset} in pass 2; "
            f"a two-pass source must yield the same rows each time"
        )
    found = np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)
    return TwoPassResult(found, n1, fac.rank)
