"""Row ids of a stream: the half-open id intervals seen so far and the next default id.

Every row fed to a sketch has an int64 id (consecutive from ``start`` by
default, or given).  An :class:`IdLedger` refuses ids already fed (the
rows would count twice), gives the next default ids and tells whether two
sketches' rows may be merged.  The heads of a
:class:`~streamlev.online.MultiHeadLeverage` share one ledger, so rows fed
to a single head (``head(h)``) and rows fed to every head never share an id.
"""

from __future__ import annotations

import numpy as np

#: Row ids are int64.
ID_MAX = 2**63 - 1
#: Interval lists longer than this are dropped (the ledger then stops refusing repeated ids).
MAX_INTERVALS = 4096


def intervals_of(ids: np.ndarray) -> np.ndarray:
    """Sorted, disjoint half-open intervals (k, 2) covering exactly the given distinct ids."""
    m = ids.size
    if m and int(ids[-1]) - int(ids[0]) == m - 1 and (m < 3 or bool(np.all(np.diff(ids) == 1))):
        return np.array([[ids[0], int(ids[-1]) + 1]], dtype=np.int64)  # consecutive: no sort
    s = np.sort(ids)
    if s.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    brk = np.flatnonzero(np.diff(s) != 1) + 1
    lo = s[np.concatenate([[0], brk])]
    hi = s[np.concatenate([brk - 1, [s.size - 1]])] + 1
    return np.stack([lo, hi], axis=1)


def intervals_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two sorted disjoint interval lists share an id."""
    if a.size == 0 or b.size == 0:
        return False
    idx = np.searchsorted(a[:, 0], b[:, 1], side="left")  # a intervals starting before b's end
    prev = np.maximum(idx - 1, 0)
    hit = (idx > 0) & (a[prev, 1] > b[:, 0])
    return bool(hit.any())


def intervals_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The union of two interval lists, sorted and coalesced."""
    iv = np.concatenate([a, b]) if a.size else b
    if iv.shape[0] <= 1:
        return iv.copy()
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    lo, hi = iv[:, 0], np.maximum.accumulate(iv[:, 1])
    start = np.concatenate([[True], lo[1:] > hi[:-1]])
    grp = np.cumsum(start) - 1
    out = np.empty((int(grp[-1]) + 1, 2), dtype=np.int64)
    out[:, 0] = lo[start]
    last = np.concatenate([np.flatnonzero(start)[1:] - 1, [lo.size - 1]])
    out[:, 1] = hi[last]  # hi is a running maximum, so a group's end is at its last member
    return out


class IdLedger:
    """The ids fed so far (``iv``: coalesced intervals; ``tracked`` False once too fragmented) and the next id."""

    def __init__(self, start: int, iv: np.ndarray | None = None, tracked: bool = True, next_id: int | None = None):
        self.iv = np.zeros((0, 2), dtype=np.int64) if iv is None else np.asarray(iv, dtype=np.int64)
        self.tracked = tracked
        self.next_id = start if next_id is None else next_id

    @property
    def nbytes(self) -> int:
        """Bytes of the interval list."""
        return int(self.iv.nbytes)

    def same(self, other: IdLedger) -> bool:
        """Whether two ledgers hold the same ids and next id."""
        return self.tracked == other.tracked and self.next_id == other.next_id and np.array_equal(self.iv, other.iv)

    def check(self, ids, m: int) -> np.ndarray:
        """The int64 ids of a block of m rows (default: the next m), refused if invalid or already fed; no change."""
        if ids is None:
            if self.next_id + m > ID_MAX:
                raise ValueError(
                    f"consecutive ids would pass the int64 limit ({self.next_id} + {m} rows); "
                    f"give explicit ids or a smaller start"
                )
            return np.arange(self.next_id, self.next_id + m, dtype=np.int64)
        arr = np.asarray(ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.size == 0 and m == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.ndim != 1 or arr.shape[0] != m:
            raise ValueError(f"ids must be a 1-D array with one id per row ({m}), got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        if arr.dtype == np.uint64 and m and int(arr.max()) >= ID_MAX:
            raise ValueError(f"ids must fit in int64 (< {ID_MAX}), got {int(arr.max())}")
        arr = arr.astype(np.int64)
        if m > 1 and np.unique(arr).size != m:
            raise ValueError("ids within a block must be distinct; every row needs its own id")
        if self.tracked and intervals_overlap(self.iv, intervals_of(arr)):
            raise ValueError("some ids were already fed to this sketch; every row needs a distinct id")
        return arr

    def record(self, ids: np.ndarray, *, consecutive: bool = False) -> None:
        """Add a block's ids (``consecutive``: they are known to be ids[0], ids[0] + 1, ...)."""
        if ids.size == 0:
            return
        new = np.array([[ids[0], ids[-1] + 1]], dtype=np.int64) if consecutive else intervals_of(ids)
        iv = self.iv
        if new.shape[0] == 1 and iv.shape[0] and new[0, 0] >= iv[-1, 1]:  # the usual case: ids run on
            if new[0, 0] == iv[-1, 1]:
                iv = iv.copy()
                iv[-1, 1] = new[0, 1]
            else:
                iv = np.concatenate([iv, new])
            self.iv = iv
        else:
            self.iv = intervals_union(iv, new)
        self._check_size()
        self.next_id = max(self.next_id, int(ids[-1] if consecutive else ids.max()) + 1)

    def record_run(self, start: int, stop: int) -> None:
        """:meth:`record` of the consecutive ids start..stop-1, without an id array when they run on."""
        iv = self.iv
        if iv.shape[0] and start == iv[-1, 1]:
            iv = iv.copy()
            iv[-1, 1] = stop
            self.iv = iv
            self.next_id = max(self.next_id, stop)
        else:
            self.record(np.arange(start, stop, dtype=np.int64), consecutive=True)

    def overlaps(self, other: IdLedger) -> bool:
        """Whether both ledgers track their ids and share one."""
        return self.tracked and other.tracked and intervals_overlap(self.iv, other.iv)

    def absorb(self, other: IdLedger) -> None:
        """Add the ids of another ledger (a merge)."""
        if self.tracked and other.tracked:
            self.iv = intervals_union(self.iv, other.iv)
        else:
            self._untrack()
        self.next_id = max(self.next_id, other.next_id)

    def _check_size(self) -> None:
        if self.iv.shape[0] > MAX_INTERVALS:
            self._untrack()

    def _untrack(self) -> None:
        self.iv = np.zeros((0, 2), dtype=np.int64)
        self.tracked = False
