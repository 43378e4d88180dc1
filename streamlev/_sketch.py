"""The contract every stateful streamlev sketch keeps, and the base class that holds what is common.

Every sketch (:class:`~streamlev.OnlineLeverage`,
:class:`~streamlev.MultiHeadLeverage`, :class:`~streamlev.ApproxLeverage`,
:class:`~streamlev.OnlinePowerSet`, :class:`~streamlev.LeverageKVCache`)
offers:

``update(X, ids=None) -> self``
    Feed a block of rows.  Validated before anything changes: a refused
    block (``ValueError``/``TypeError`` naming the problem) leaves the sketch
    byte-identical.
``universal_set()``
    Sorted int64 ids of the keys kept (the exact set, or a documented
    superset).  :class:`~streamlev.MultiHeadLeverage` returns one such array
    per head (a list); ``universal_set(h)`` gives head h's.
``n_seen``, ``nbytes``
    Rows fed so far and bytes of state held, as int properties.
``merge(other) -> self``
    Absorb a sketch of disjoint rows where the mathematics allows it; a
    ``TypeError`` for another kind of object, ``ValueError`` for other
    parameters or overlapping ids, ``NotImplementedError`` naming the reason
    where no merge exists.
``to_bytes()`` / ``from_bytes(data)``
    The versioned byte format of :mod:`streamlev.serialize`; ``from_bytes``
    raises ``ValueError`` on any corruption.  Pickling goes through the bytes.
``==``
    Same content (equal canonical bytes), with no side effect on either sketch.
``repr``
    The parameters and the counts.

Examples
--------
>>> import numpy as np, pickle, streamlev
>>> K = np.random.default_rng(0).standard_normal((200, 4))
>>> a = streamlev.OnlineLeverage(4, 0.05).update(K[:120])
>>> b = streamlev.OnlineLeverage(4, 0.05, start=120).update(K[120:])
>>> a.merge(b).n_seen
200
>>> pickle.loads(pickle.dumps(a)) == a
True
>>> bool(np.array_equal(a.universal_set(), streamlev.universal_set(K, 0.05)))
True
"""

from __future__ import annotations

import copy
import warnings

__all__ = ["CallableInt", "Sketch", "deprecated"]


def deprecated(old: str, new: str) -> None:
    """Warn that ``old`` is a deprecated spelling of ``new`` (kept for one release)."""
    warnings.warn(f"{old} is deprecated and will be removed in the next release; use {new}", DeprecationWarning, 3)


class CallableInt(int):
    """An int property value that may still be called like the former method (``nbytes()``), with a warning."""

    _OLD = "nbytes()"
    _NEW = "the nbytes property"

    def __call__(self) -> int:
        deprecated(self._OLD, self._NEW)
        return int(self)


class Sketch:
    """Base of the stateful sketches: merge checks, pickling through the bytes, equality and repr.

    Subclasses set ``_MERGE_PARAMS`` (the attributes two mergeable sketches
    must share) and ``_REPR`` (the attributes shown by repr), and implement
    ``update``, ``universal_set``, ``n_seen``, ``nbytes``, ``to_bytes`` and
    ``from_bytes``.  ``_canonical_bytes`` gives the bytes without changing the
    sketch (by default :meth:`to_bytes`; override it where serialising
    changes state).
    """

    _MERGE_PARAMS: tuple[str, ...] = ()
    _REPR: tuple[str, ...] = ("n_seen",)

    # -- merge checks ------------------------------------------------------------------------------
    def _check_merge(self, other) -> None:
        """Refuse another kind of object, the sketch itself, or other parameters (nothing changes)."""
        name = type(self).__name__
        if not isinstance(other, type(self)):
            raise TypeError(f"can only merge another {name}, got {type(other).__name__}")
        for param in self._MERGE_PARAMS:
            a, b = getattr(self, param), getattr(other, param)
            if a != b:
                raise ValueError(
                    f"cannot merge sketches with different {param}: {a!r} vs {b!r}; create both with the same {param}"
                )
        if other is self:
            raise ValueError("cannot merge a sketch with itself (its rows would count twice)")

    # -- bytes, pickling, equality -----------------------------------------------------------------
    def to_bytes(self) -> bytes:  # pragma: no cover - every subclass implements it
        raise NotImplementedError

    @classmethod
    def from_bytes(cls, data: bytes):  # pragma: no cover - every subclass implements it
        raise NotImplementedError

    def _canonical_bytes(self) -> bytes:
        """The bytes of a copy (serialising may bring the state to its canonical form in place)."""
        return self._copy().to_bytes()

    def _copy(self):
        """An independent deep copy of the state (not through pickling, which serialises)."""
        obj = type(self).__new__(type(self))
        obj.__dict__.update(copy.deepcopy(self.__dict__))
        return obj

    def __reduce__(self):
        return (type(self).from_bytes, (self.to_bytes(),))

    def __eq__(self, other) -> bool:
        """Same content: equal canonical bytes; neither sketch changes."""
        return type(other) is type(self) and self._canonical_bytes() == other._canonical_bytes()

    __hash__ = None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={_short(getattr(self, k))}" for k in self._REPR)
        return f"{type(self).__name__}({fields})"


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, float) else repr(v)
