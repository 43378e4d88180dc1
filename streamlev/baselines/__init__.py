"""Baselines: classical leverage sketches behind one contract, to compare with streamlev's exact ones.

Every class here follows the contract of :mod:`streamlev.baselines._base` (``update(X) -> self``,
``universal_set()``, ``scores()`` where the method has scores, ``n_seen``, ``nbytes``, ``merge``
where the method is mergeable; two-pass methods add ``second_pass(X)``) and takes a ``seed`` when
it is randomised.  :func:`streamlev.compare` runs them side by side; :data:`METHODS` lists them
under the names it accepts.

============== ====================================== ====== ========= =========================
name           class                                  passes mergeable natural size
============== ====================================== ====== ========= =========================
exact          :class:`ExactInMemory`                 1 (*)  no        (all keys)
online         :class:`OnlineExact`                   1      yes       (exact)
two-pass       :class:`TwoPassExact`                  2      yes       (exact)
approx         :class:`FrequentDirections`            1      yes       ell
power          :class:`OnlinePower` (p != 2)          1      no        (exact superset)
sampling       :class:`OnlineRowSampling`             1      no        oversample
countsketch    :class:`CountSketchLeverage`           2      yes       sketch_rows
srht           :class:`SRHTLeverage`                  2      yes       sketch_rows
kvpress        :class:`KVPressLeverage`               1 (*)  no        sketch_dim
uniform        :class:`UniformSampling`               1      yes       sample_rows
============== ====================================== ====== ========= =========================

(*) holds every key in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .countsketch import CountSketchLeverage
from .existing import ExactInMemory, FrequentDirections, OnlineExact, OnlinePower, TwoPassExact
from .kvpress import KVPressLeverage
from .sampling import OnlineRowSampling
from .srht import SRHTLeverage
from .uniform import UniformSampling

__all__ = [
    "METHODS",
    "Method",
    "CountSketchLeverage",
    "ExactInMemory",
    "FrequentDirections",
    "KVPressLeverage",
    "OnlineExact",
    "OnlinePower",
    "OnlineRowSampling",
    "SRHTLeverage",
    "TwoPassExact",
    "UniformSampling",
]


@dataclass(frozen=True)
class Method:
    """A method as :func:`streamlev.compare` runs it.

    Attributes
    ----------
    name : str
        The name ``compare`` accepts.
    cls : type
        The sketch class.
    param : str or None
        Keyword of the natural size parameter (None: the method has no size).
    default_sizes : callable
        ``dim -> list`` of the sizes compared by default.
    randomised : bool
        Whether the method takes a seed (deterministic methods run once).
    p2 : bool
        Whether the method computes p = 2 leverage (False: ℓ_p, for p != 2).
    exact : bool
        Whether the method's set is exact (the comparison expects recall = precision = 1).
    """

    name: str
    cls: type
    param: str | None
    default_sizes: Callable[[int], list]
    randomised: bool
    p2: bool = True
    exact: bool = False

    @property
    def passes(self) -> int:
        """Passes over the stream."""
        return int(self.cls.passes)

    def size_for_bytes(self, dim: int, nbytes: int) -> int:
        """The natural size whose state fills ``nbytes`` (ValueError when the method has no such rule)."""
        rule = getattr(self.cls, "size_for_bytes", None)
        if rule is None:
            raise ValueError(
                f"method {self.name!r} takes no memory budget in bytes; give its natural size "
                f"({self.param or 'none'}) instead, e.g. {self.name}:{self.default_sizes(dim)[0]!r}"
                if self.param
                else f"method {self.name!r} has no size parameter; write it without ':SIZE'"
            )
        return rule(dim, nbytes)


def _times_d(*factors):
    return lambda d: sorted({max(1, int(f * d)) for f in factors})


def _ells(d):
    return sorted({max(1, d // 8), max(1, d // 4), max(1, d // 2)})


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("exact", ExactInMemory, None, lambda d: [None], False, p2=True, exact=True),
        Method("online", OnlineExact, None, lambda d: [None], False, exact=True),
        Method("two-pass", TwoPassExact, None, lambda d: [None], False, exact=True),
        Method("approx", FrequentDirections, "ell", _ells, False),
        Method("power", OnlinePower, None, lambda d: [None], False, p2=False),
        Method("sampling", OnlineRowSampling, "oversample", lambda d: [4.0, 16.0, 64.0], True),
        Method("countsketch", CountSketchLeverage, "sketch_rows", _times_d(4, 16, 64), True),
        Method("srht", SRHTLeverage, "sketch_rows", _times_d(4, 16, 64), True),
        Method("kvpress", KVPressLeverage, "sketch_dim", lambda d: [48], True),
        Method("uniform", UniformSampling, "sample_rows", _times_d(4, 16, 64), True),
    )
}
