"""Row storage of the online sketches: the buffer of rows not yet in a factor, and the candidate store.

* :class:`PendingRows` holds rows of small blocks until they are absorbed
  into the factor in one update (one stream, or all heads along a leading
  head axis);
* :class:`CandidateStore` holds one stream's candidate keys and ids as a
  list of parts plus an open tail chunk that small appends fill: appending
  costs one copy of the admitted rows and never re-allocates what is stored,
  and a stream of small blocks still makes parts of ~2^18 entries.  An
  eviction filters each part on its own (no joined copy of all candidates,
  so memory peaks at the candidates themselves); parts are joined only when
  there are many of them or a result needs one array.
"""

from __future__ import annotations

import numpy as np

from .._lazy import kernels
from .._tuning import MAX_PARTS, PENDING_ENTRIES


def pending_rows(dim: int, entries: int = PENDING_ENTRIES) -> int:
    """Rows of small blocks held back before one factor update: 64·d, at most ``entries`` entries, at least 256.

    A whitened factor update costs about 6·d³ flops (triangular inverse,
    R⁻ᵀCR⁻¹, Cholesky, U·R) on top of the ~m·d² of its m rows' Gram matrix,
    so blocks of fewer rows than this are collected into one update of this
    many; larger blocks are absorbed at once.  (Updates of fewer than 4·d
    rows go by Householder instead, ~2·m·d²: Factor.update.)  With the
    default 2^21 entries (16 MB of float64 keys, 8 MB of float32) an update
    takes 64·d rows up to d = 181 and at least 8·d rows up to d = 512, so the
    d³ work stays a small share of the Gram work.

    Examples
    --------
    >>> pending_rows(64), pending_rows(512), pending_rows(1)
    (4096, 4096, 256)
    """
    return int(max(256, min(64 * dim, entries // max(1, dim))))


def candidate_chunk_rows(dim: int, eps: float) -> int:
    """Rows per candidate chunk: ~2^18 entries, but no more than the d/eps keys a universal set can hold."""
    return int(min(max(1024, (1 << 18) // dim), max(256, dim / eps)))


def grow(buf, used, need, *, cap, dtype, tail, lead=()):
    """A row buffer (lead..., rows, tail...) holding at least ``need`` rows, at most ``cap``, growing geometrically.

    Small streams keep small buffers (the first rows allocate what they need);
    the first ``used`` rows are kept.
    """
    axis = len(lead)
    have = 0 if buf is None or buf.dtype != dtype else buf.shape[axis]
    if need <= have:
        return buf
    new = np.empty(lead + (min(cap, max(need, 2 * have, 64)),) + tail, dtype=dtype)
    if used:
        new[(slice(None),) * axis + (slice(0, used),)] = buf[(slice(None),) * axis + (slice(0, used),)]
    return new


def right_sized(buf, used, axis=0):
    """The first ``used`` rows of a chunk along ``axis``: a view when at least half full, else a compact copy."""
    rows = buf[(slice(None),) * axis + (slice(0, used),)]
    return rows if 2 * used >= buf.shape[axis] else rows.copy()


class PendingRows:
    """Rows not yet in the factor(s): ``buf[..., :n, :]`` with ``big`` their largest |entry| (None: unknown).

    ``heads`` adds a leading head axis (the shared buffer of a multi-head
    sketch); ``cap`` is the most rows it holds.
    """

    def __init__(self, dim: int, cap: int, heads: int | None = None):
        self.dim = dim
        self.cap = cap
        self.lead = () if heads is None else (heads,)
        self.buf = None
        self.n = 0
        self.big = None

    @property
    def nbytes(self) -> int:
        """Bytes of the buffer."""
        return 0 if self.buf is None else int(self.buf.nbytes)

    def fits(self, m: int, dtype) -> bool:
        """Whether m more rows of ``dtype`` can join the buffered ones without absorbing these first."""
        return self.buf is None or (self.n + m <= self.cap and self.buf.dtype == dtype)

    def add(self, B: np.ndarray, big: float | None) -> None:
        """Copy rows after the buffered ones (the caller made room: :meth:`fits`)."""
        m = B.shape[len(self.lead)]
        self.buf = grow(self.buf, self.n, self.n + m, cap=self.cap, dtype=B.dtype, tail=(self.dim,), lead=self.lead)
        self.buf[(slice(None),) * len(self.lead) + (slice(self.n, self.n + m),)] = B
        self.count(m, big)

    def count(self, m: int, big: float | None) -> None:
        """Count m rows already written after the buffered ones (``big``: their largest |entry|)."""
        if self.n == 0:
            self.big = big
        else:
            self.big = None if big is None or self.big is None else max(self.big, big)
        self.n += m

    def take(self) -> tuple[np.ndarray, float | None]:
        """(the buffered rows, their largest |entry|), emptying the buffer (the rows stay valid until the next add)."""
        n, self.n = self.n, 0
        return self.buf[(slice(None),) * len(self.lead) + (slice(0, n),)], self.big


class CandidateStore:
    """One stream's candidate keys and ids: ``parts`` (keys, ids) plus an open ``tail`` [keys, ids, rows used].

    ``count`` is the number of candidates, ``clean`` the count right after
    the last eviction; ``dtype`` the storage dtype, fixed by the first rows
    (float32 rows are stored as float64 once float64 rows arrive).
    """

    def __init__(self, dim: int, eps: float):
        self.dim = dim
        self.cap = candidate_chunk_rows(dim, eps)
        self.dtype = None
        self.parts = []
        self.tail = None
        self.count = 0
        self.clean = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the stored candidates (keys and ids)."""
        cand = sum(k.nbytes + i.nbytes for k, i in self.parts)
        if self.tail is not None:
            cand += self.tail[0].nbytes + self.tail[1].nbytes
        return int(cand)

    def storage_dtype(self, B):
        """The dtype candidates are stored in once rows of B's dtype join them."""
        cur = self.dtype if self.dtype is not None else (self.parts[0][0].dtype if self.parts else None)
        if cur is None or (cur == np.float32 and B.dtype == np.float64):
            return B.dtype
        return cur

    def append(self, B, ids, *, copy=True):
        """Add candidate rows; ``copy=False`` when B and ids are already private copies."""
        k = B.shape[0]
        if k == 0:
            return
        dt = self.storage_dtype(B)
        if self.dtype is None or dt != self.dtype:  # (np.dtype("float64") == None is True!)
            self.seal()
            self.dtype = dt
        cap = self.cap
        a = 0
        while a < k:
            if self.tail is None:
                if k - a >= cap:  # a long run of rows is a part of its own
                    rest_k, rest_i = B[a:], ids[a:]
                    self.parts.append(
                        (np.array(rest_k) if copy or a else rest_k, np.array(rest_i) if copy or a else rest_i)
                    )
                    break
                start = min(cap, max(64, k - a))  # grows up to cap: a few candidates hold a small chunk
                self.tail = [np.empty((start, self.dim), dtype=dt), np.empty(start, dtype=np.int64), 0]
            buf, ib, used = self.tail
            if used == buf.shape[0]:  # full but below cap: grow geometrically
                size = min(cap, 2 * used)
                self.tail = [
                    grow(buf, used, size, cap=cap, dtype=dt, tail=(self.dim,)),
                    grow(ib, used, size, cap=cap, dtype=np.int64, tail=()),
                    used,
                ]
                buf, ib, used = self.tail
            take = min(k - a, buf.shape[0] - used)
            buf[used : used + take] = B[a : a + take]
            ib[used : used + take] = ids[a : a + take]
            self.tail[2] = used + take
            a += take
            if used + take == cap:
                self.parts.append((buf, ib))
                self.tail = None
        self.count += k

    def add_part(self, keys, ids):
        """Append candidate rows stored elsewhere (a multi-head chunk) as one part; ``count`` is the caller's."""
        self.seal()
        dt = self.storage_dtype(keys)
        if self.dtype is None or dt != self.dtype:
            self.dtype = dt
        self.parts.append((keys, ids))

    def seal(self):
        """Close the open tail chunk into a part (right-sized when mostly empty)."""
        if self.tail is not None:
            buf, ib, used = self.tail
            self.tail = None
            if used:
                self.parts.append((right_sized(buf, used), right_sized(ib, used)))

    def joined(self):
        """(keys, ids) of all candidates as two arrays (the parts are replaced by the joined one)."""
        self.seal()
        dt = self.dtype if self.dtype is not None else np.float64
        if not self.parts:
            return np.zeros((0, self.dim), dtype=dt), np.zeros(0, dtype=np.int64)
        if len(self.parts) > 1 or self.parts[0][0].dtype != dt:
            keys = np.concatenate([k for k, _ in self.parts], dtype=dt)
            ids = np.concatenate([i for _, i in self.parts]).astype(np.int64, copy=False)
            self.parts = [(keys, ids)]
        return self.parts[0]

    def all_ids(self) -> np.ndarray:
        """The candidates' ids, in storage order."""
        self.seal()
        if len(self.parts) == 1:
            return self.parts[0][1]
        return np.concatenate([i for _, i in self.parts]) if self.parts else np.zeros(0, dtype=np.int64)

    def keep(self, masks) -> None:
        """Keep the rows of each part that its mask selects (an eviction); ``clean`` becomes the count."""
        parts, kept = [], 0
        for (keys, ids), keep in zip(self.parts, masks):
            k = int(np.count_nonzero(keep))
            if k == keys.shape[0]:
                parts.append((keys, ids))
            elif k and 4 * k >= keys.shape[0] and keys.flags.writeable and keys.flags.c_contiguous:
                # A quarter or more stays: move those rows to the front of the part's own memory (no new
                # allocation; the part never holds more than 4x its rows, and never more than before).
                # ids may be shared by the heads of a multi-head chunk, so they are filtered.
                kernels.compact_rows(keys, keep)
                parts.append((keys[:k], ids[keep]))
            elif k:
                parts.append((keys[keep], ids[keep]))
            kept += k
        self.parts, self.count = parts, kept
        if len(parts) > MAX_PARTS:
            self.joined()
