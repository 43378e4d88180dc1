"""Exact one-pass sketches: :class:`OnlineLeverage` (one stream) and :class:`MultiHeadLeverage` (H streams).

Modules: :mod:`~streamlev.online.ids` (row ids), :mod:`~streamlev.online.buffer`
(buffered rows and candidate storage), :mod:`~streamlev.online.single` (one
stream), :mod:`~streamlev.online.gramsums` (running Gram sums of the
multi-head kernel path), :mod:`~streamlev.online.heads` (H streams).
"""

from .._tuning import HEAD_PENDING_ENTRIES, PENDING_ENTRIES
from .buffer import candidate_chunk_rows, pending_rows
from .heads import MultiHeadLeverage
from .single import OnlineLeverage

__all__ = [
    "HEAD_PENDING_ENTRIES",
    "PENDING_ENTRIES",
    "MultiHeadLeverage",
    "OnlineLeverage",
    "candidate_chunk_rows",
    "pending_rows",
]
