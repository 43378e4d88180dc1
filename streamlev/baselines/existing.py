"""streamlev's own methods behind the baseline contract, so that the comparison treats every method alike.

``ExactInMemory`` (:func:`streamlev.universal_set` on the concatenated keys), ``OnlineExact``
(:class:`streamlev.OnlineLeverage`), ``TwoPassExact`` (the algorithm of
:func:`streamlev.two_pass_universal_set`, fed block by block), ``FrequentDirections``
(:class:`streamlev.ApproxLeverage`) and ``OnlinePower`` (:class:`streamlev.OnlinePowerSet`).
The guarantees are those of the wrapped functions and classes.
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
from numpy.typing import ArrayLike

from .._factor import Factor, at_least
from ._base import Baseline, TwoPassBaseline

__all__ = ["ExactInMemory", "FrequentDirections", "OnlineExact", "OnlinePower", "TwoPassExact"]


class ExactInMemory(Baseline):
    """Holds every key and returns :func:`streamlev.universal_set` of them (any p), exact.

    Parameters
    ----------
    dim, eps, ridge, start
        As for :class:`streamlev.OnlineLeverage`.
    p : float, default 2.0
        Exponent of the attention (p != 2: ℓ_p sensitivities, :func:`streamlev.universal_set_p`).
    seed : int, default 0
        Unused (the method is deterministic).

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines import ExactInMemory
    >>> ExactInMemory(2, 0.9).update(np.eye(2)).universal_set()
    array([0, 1])
    """

    in_memory = True

    def __init__(
        self,
        dim: int,
        eps: float,
        *,
        ridge: float = 0.0,
        p: float = 2.0,
        seed: int = 0,
        start: int = 0,
    ) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        from .._validate import check_p

        self.p = check_p(p)
        self._blocks = []

    @property
    def nbytes(self) -> int:
        """Bytes of the keys held."""
        return int(sum(b.nbytes for b in self._blocks))

    def update(self, X: ArrayLike) -> ExactInMemory:
        """Hold a block (m, d) or one row (d,); returns self."""
        B = self._block(X)
        self._blocks.append(np.array(B))
        self._take_ids(B.shape[0])
        return self

    def _keys(self) -> np.ndarray:
        return np.concatenate(self._blocks) if self._blocks else np.zeros((0, self.dim))

    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids of the exact ε-universal set of every key held."""
        import streamlev

        return self.start + streamlev.universal_set(self._keys(), self.eps, p=self.p, ridge=self.ridge)

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, exact leverage scores) of the universal set (p = 2 only)."""
        if self.p != 2.0:
            raise NotImplementedError("scores() gives leverage scores (p = 2); for p != 2 use universal_set()")
        import streamlev

        tau = streamlev.leverage_scores(self._keys(), ridge=self.ridge)
        keep = np.flatnonzero(at_least(tau, self.eps))
        return (self.start + keep).astype(np.int64), tau[keep]

    def merge(self, other: Baseline) -> NoReturn:
        """Not supported: an in-memory method has one array; concatenate the keys instead."""
        raise NotImplementedError("ExactInMemory holds one array of keys; concatenate them and feed one instance")


class _Wrapped(Baseline):
    """A streamlev sketch (``self.sketch``, set by the subclass) behind the baseline contract.

    Rows, bytes, blocks, the set and merges go straight to the wrapped sketch, which checks them.
    """

    sketch: Any

    @property
    def n_seen(self) -> int:
        """Rows fed so far."""
        return int(self.sketch.n_seen)

    @property
    def nbytes(self) -> int:
        """Bytes held by the wrapped sketch (see its ``nbytes``)."""
        return int(self.sketch.nbytes)

    def update(self, X: ArrayLike) -> _Wrapped:
        """Feed a block to the wrapped sketch; returns self."""
        self.sketch.update(X)
        return self

    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids the wrapped sketch selects (see the class docstring)."""
        return self.sketch.universal_set()

    def merge(self, other: _Wrapped) -> _Wrapped:
        """Merge the wrapped sketches (see the wrapped class's ``merge``)."""
        if not isinstance(other, type(self)):
            raise TypeError(f"can only merge another {type(self).__name__}, got {type(other).__name__}")
        self.sketch.merge(other.sketch)
        return self


class OnlineExact(_Wrapped):
    """:class:`streamlev.OnlineLeverage` (one pass, exact, mergeable) behind the baseline contract.

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines import OnlineExact
    >>> OnlineExact(2, 0.9).update(np.eye(2)).universal_set()
    array([0, 1])
    """

    def __init__(self, dim: int, eps: float, *, ridge: float = 0.0, seed: int = 0, start: int = 0) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        import streamlev

        self.sketch = streamlev.OnlineLeverage(self.dim, self.eps, ridge=self.ridge, start=self.start)

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, exact leverage scores) of the universal set."""
        return self.sketch.scores()


class TwoPassExact(TwoPassBaseline):
    """The two-pass exact method: pass 1 factors every row, pass 2 scores them against the final factor.

    The same steps as :func:`streamlev.two_pass_universal_set` (a QR factor of all rows, then
    every row scored against it), fed block by block; the set is exact.

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines import TwoPassExact
    >>> TwoPassExact(2, 0.9).update(np.eye(2)).second_pass(np.eye(2)).universal_set()
    array([0, 1])
    """

    def __init__(self, dim: int, eps: float, *, ridge: float = 0.0, seed: int = 0, start: int = 0) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        self._factor = Factor(self.dim, self.ridge)

    @property
    def nbytes(self) -> int:
        """Bytes of the d x d factor and the selected ids and scores."""
        return int(self._factor.nbytes() + self._found_nbytes())

    def _sketch(self, B: np.ndarray, ids: np.ndarray) -> None:
        self._factor.update(B)

    def _select(self, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of the rows of B whose exact score reaches eps, their scores) against the final factor."""
        keep = self._factor.classify(B, self.eps)
        if not keep.any():
            return keep, np.zeros(0)
        return keep, np.clip(self._factor.scores(B[keep]), 0.0, 1.0)

    _merge_names = ("dim", "eps", "ridge")  # deterministic: the seed plays no part

    def _merge_sketch(self, other: TwoPassExact) -> None:
        self._factor.merge(other._factor)


class FrequentDirections(_Wrapped):
    """:class:`streamlev.ApproxLeverage` (Frequent Directions, ``ell`` directions; one pass, mergeable).

    Its guarantee is about ridge leverage: {τ^λ >= eps} ⊆ U ⊆ {τ^λ >= eps/c}, c = 1 + Δ/λ, so it
    needs ``ridge > 0``.  The :class:`streamlev.ApproxGuaranteeWarning` (c above ``max_c``) is
    silenced: the comparison reports c instead (:attr:`c`).

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines import FrequentDirections
    >>> FrequentDirections(2, 0.4, ell=2, ridge=1e-6).update(np.eye(2)).universal_set()
    array([0, 1])
    """

    def __init__(self, dim: int, eps: float, *, ell: int, ridge: float, seed: int = 0, start: int = 0) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        import streamlev

        self.ell = int(ell)
        self.sketch = streamlev.ApproxLeverage(self.dim, self.eps, ell=self.ell, ridge=self.ridge, start=self.start)

    @staticmethod
    def size_for_bytes(dim: int, nbytes: int) -> int:
        """The ``ell`` whose 2·ell x d sketch fills ``nbytes`` (at most dim)."""
        return max(1, min(int(dim), int(nbytes) // (16 * int(dim))))

    @property
    def c(self) -> float:
        """The approximation factor c = 1 + Δ/λ of the wrapped sketch."""
        return float(self.sketch.c)

    def _quiet(self, fn):
        import warnings

        from ..approx import ApproxGuaranteeWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ApproxGuaranteeWarning)
            return fn()

    def universal_set(self) -> np.ndarray:
        """The approximate set (see the class docstring)."""
        return self._quiet(self.sketch.universal_set)

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores against the sketch) of the set."""
        return self._quiet(self.sketch.scores)


class OnlinePower(_Wrapped):
    """:class:`streamlev.OnlinePowerSet` (one pass, p != 2): a superset of the exact ℓ_p universal set.

    Examples
    --------
    >>> import numpy as np
    >>> from streamlev.baselines import OnlinePower
    >>> OnlinePower(2, 0.9, p=3.0).update(np.eye(2)).universal_set()
    array([0, 1])
    """

    def __init__(self, dim: int, eps: float, *, p: float, ridge: float = 0.0, seed: int = 0, start: int = 0) -> None:
        super().__init__(dim, eps, ridge=ridge, seed=seed, start=start)
        if self.ridge:
            raise ValueError("OnlinePowerSet has no ridge; use ridge=0")
        if start:
            raise ValueError("OnlinePowerSet numbers rows from 0; use start=0")
        import streamlev

        self.p = float(p)
        self.sketch = streamlev.OnlinePowerSet(self.dim, self.eps, p=self.p)

    def universal_set(self) -> np.ndarray:
        """Sorted int64 ids of the held keys (a superset of the exact ℓ_p universal set)."""
        return self.sketch.universal_set()

    def merge(self, other: Baseline) -> NoReturn:
        """Not mergeable: raises NotImplementedError."""
        raise NotImplementedError("OnlinePowerSet has no merge; feed every block to one sketch")
