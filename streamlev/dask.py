"""Universal sets of keys held in Dask arrays, computed on a Dask cluster.

Needs the optional extra ``streamlev[dask]`` (``dask[distributed]``).  The core
package never imports this module; importing it imports dask.

How it works (docs/design.md, "Merges are exact").  Every row chunk of the key array
becomes an :class:`~streamlev.OnlineLeverage` sketch whose row ids start at the
chunk's offset, so ids are global row numbers.  When a chunk comes from a
simple chain of tasks (:func:`from_npy`, ``dask.array.from_npy_stack``,
``map_blocks``), Dask's graph optimisation fuses it with the
sketch task, so keys are read, sketched and dropped on the same worker.  (A
chunk computed from several arrays, e.g. ``x * y``, is not fused: Dask then
runs the sketch where most of its input is, but may move inputs.)  Sketches
then merge in a tree (``split_every`` at a time).  A sketch is a d x d
triangular factor plus its candidate keys — at most rank/eps of them, never
more than the chunk's rows — so only sketches cross the network, and their
size does not depend on n.  Sketches travel through Dask's
own serialisation: pickling an ``OnlineLeverage`` goes through its versioned,
checksummed byte format (``__reduce__`` -> ``to_bytes``).

Exactness: for every key, its score with respect to all rows is at most its
score with respect to any subset, so the union of the chunks' universal sets
contains the universal set of all rows; the merged factor is the factor of all
rows (QR of stacked factors), and re-scoring the merged candidates against it
gives exactly ``{i : τ_i >= eps}`` — the same set as
:func:`streamlev.universal_set` on the concatenated rows, whatever the
chunking, the tree shape, the number of workers, or retries after a worker
failure (every task is a pure function of its inputs).

The same call runs on the local threaded scheduler, on a
``distributed.LocalCluster``, or on a multi-machine cluster: it uses the
active Dask scheduler (e.g. after ``Client("tcp://scheduler:8786")``).
"""

from __future__ import annotations

import os

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.sizeof import sizeof as _dask_sizeof
from numpy.typing import ArrayLike

from ._validate import (
    as_keys,
    check_eps,
    check_p,
    check_positive_int,
    check_ridge,
    first_nonfinite_row,
)
from .exact import DEFAULT_BLOCK
from .online import OnlineLeverage
from .streams import open_npy

__all__ = ["universal_set", "universal_sets", "sketch", "power_candidates", "from_npy", "DEFAULT_SPLIT_EVERY"]

#: Sketches merged per task in the reduction tree.
DEFAULT_SPLIT_EVERY = 8


@_dask_sizeof.register(OnlineLeverage)
def _sizeof_sketch(sk) -> int:
    # Without this Dask would count a sketch as ~50 bytes (sys.getsizeof) in its
    # memory and transfer accounting; 512 covers the byte format's header.
    return int(sk.nbytes) + 512


# -- input checks ------------------------------------------------------------------------------
def _as_dask(x, ndim: int, name: str = "x"):
    """Check x (a dask array, or anything numpy can read) and return a dask array, d in one chunk."""
    if isinstance(x, (str, bytes)):
        raise TypeError(
            f"{name} must be a dask array of keys, got a {type(x).__name__}; open the file "
            f"first, e.g. streamlev.dask.from_npy(path) or dask.array.from_npy_stack(path)"
        )
    if not isinstance(x, da.Array):
        # numpy arrays (and array-likes): one chunk along each axis except the rows.
        x = as_keys(x, name=name, ndim=ndim, check_finite=False)
        x = da.from_array(x, chunks=(1,) * (ndim - 2) + (DEFAULT_BLOCK * 16, -1))
    if x.ndim != ndim:
        shape = "(n, d)" if ndim == 2 else "(H, n, d)"
        hint = "; for H independent streams use streamlev.dask.universal_sets" if ndim == 2 and x.ndim == 3 else ""
        raise ValueError(
            f"{name} must be a {ndim}-D dask array of shape {shape}, got {x.ndim}-D with shape {x.shape}{hint}"
        )
    if any(np.isnan(c) for axis in x.chunks for c in axis):
        raise ValueError(
            f"{name} has unknown chunk sizes (shape {x.shape}), so rows cannot be given "
            f"global ids; call {name}.compute_chunk_sizes() first"
        )
    # Checks the dtype (real numbers only) and d >= 1 with the library's messages.
    as_keys(np.zeros((0, x.shape[-1]), dtype=x.dtype), name=name)
    if x.numblocks[-1] > 1:
        x = x.rechunk({ndim - 1: -1})
    return x


def _check_common(eps, ridge, p, split_every, block_size):
    eps = check_eps(eps)
    ridge = check_ridge(ridge)
    p = check_p(p)
    if p != 2.0:
        raise NotImplementedError(
            f"streamlev.dask computes exact universal sets for p = 2 (leverage scores) only, got p={p!r}.  "
            f"For p != 2 no d x d summary of the rows determines the ℓ_p sensitivities (they depend on "
            f"every row through a non-quadratic objective), so chunks cannot be merged exactly.  Use "
            f"streamlev.dask.power_candidates(x, eps, p=p) for a certified superset of the set, or "
            f"streamlev.universal_set(x.compute(), eps, p=p) in memory"
        )
    split_every = (
        DEFAULT_SPLIT_EVERY if split_every is None else check_positive_int(split_every, "split_every", minimum=2)
    )
    block_size = DEFAULT_BLOCK if block_size is None else check_positive_int(block_size, "block_size")
    return eps, ridge, p, split_every, block_size


def _check_compute(compute):
    if not isinstance(compute, (bool, np.bool_)):
        raise TypeError(f"compute must be True or False, got {type(compute).__name__}")
    return bool(compute)


# -- tasks (pure functions of their inputs: Dask may run them twice after a failure) ------------
def _sketch_rows(block, start, *, dim, eps, ridge, block_size, label="x"):
    """Sketch of one chunk's rows, ids ``start, start + 1, ...``; no candidate beyond the chunk's set."""
    bad = first_nonfinite_row(block)
    if bad >= 0:
        raise ValueError(
            f"{label} contains NaN or infinity in row {start + bad}; "
            f"remove or impute non-finite values before computing leverage"
        )
    sk = OnlineLeverage(dim, eps, ridge=ridge, start=start)
    for a in range(0, block.shape[0], block_size):
        sk.update(block[a : a + block_size])
    sk.universal_set()  # evicts every candidate below eps w.r.t. the chunk: the smallest sketch
    return sk


def _chunk_task(block, *, dim, eps, ridge, block_size, label, block_info=None):
    # Returns the sketch itself, not an array: the map_blocks "array" built on this
    # task is private and only ever read block by block through to_delayed.
    start = int(block_info[0]["array-location"][0][0])
    return _sketch_rows(np.asarray(block), start, dim=dim, eps=eps, ridge=ridge, block_size=block_size, label=label)


def _chunk_task_many(block, *, dim, eps, ridge, block_size, block_info=None):
    (h0, _h1), (start, _stop), _cols = block_info[0]["array-location"]
    block = np.asarray(block)
    return [
        _sketch_rows(
            block[h], int(start), dim=dim, eps=eps, ridge=ridge, block_size=block_size, label=f"stream {h0 + h} of x"
        )
        for h in range(block.shape[0])
    ]


def _merge_sketches(parts):
    # Merge into a fresh sketch: the inputs may be held in worker memory and must not change.
    first = parts[0]
    acc = OnlineLeverage(first.dim, first.eps, ridge=first.ridge)
    for part in parts:
        acc.merge(part)
    return acc


def _merge_task(*parts):
    """Union of sketches of disjoint rows (or, for lists, stream by stream)."""
    if isinstance(parts[0], list):
        return [_merge_sketches(group) for group in zip(*parts, strict=True)]
    return _merge_sketches(parts)


def _ids_task(part):
    if isinstance(part, list):
        return [sk.universal_set() for sk in part]
    return part.universal_set()


def _concat_lists(*lists):
    return [a for lst in lists for a in lst]


def _tree(parts, split_every, token):
    """Reduce a list of delayed sketches (or lists of sketches) to one, ``split_every`` at a time."""
    merge = dask.delayed(_merge_task, pure=True)
    level = 0
    while len(parts) > 1:
        parts = [
            merge(*parts[i : i + split_every], dask_key_name=f"streamlev-merge-{token}-{level}-{j}")
            for j, i in enumerate(range(0, len(parts), split_every))
        ]
        level += 1
    return parts[0]


def _empty_sketch(dim, eps, ridge):
    return OnlineLeverage(dim, eps, ridge=ridge)


def _reduced(x, eps, ridge, split_every, block_size, *, label="x"):
    """Delayed merged sketch of all rows of a 2-D dask array."""
    n, d = x.shape
    if n == 0 or x.numblocks[0] == 0:
        return dask.delayed(_empty_sketch, pure=True)(d, eps, ridge)
    sk = x.map_blocks(
        _chunk_task,
        dim=d,
        eps=eps,
        ridge=ridge,
        block_size=block_size,
        label=label,
        drop_axis=1,
        chunks=((1,) * x.numblocks[0],),
        dtype=object,
        meta=np.empty((0,), dtype=object),
        token="streamlev-sketch",
    )
    parts = list(sk.to_delayed(optimize_graph=True).ravel())
    return _tree(parts, split_every, dask.base.tokenize(sk.name, split_every))


def _finish(result, compute):
    return result.compute() if compute else result


# -- public API --------------------------------------------------------------------------------
def universal_set(
    x: da.Array | ArrayLike,
    eps: float,
    *,
    ridge: float = 0.0,
    p: float = 2.0,
    split_every: int | None = None,
    block_size: int | None = None,
    compute: bool = True,
) -> np.ndarray | Delayed:
    """Exact ε-universal set of the rows of a Dask array, computed chunk by chunk.

    Parameters
    ----------
    x : dask.array.Array, shape (n, d)
        Keys, chunked by rows (column chunks are merged into one first).  A
        numpy array is accepted too and wrapped with ``dask.array.from_array``.
        Chunk sizes must be known (``x.compute_chunk_sizes()`` otherwise).
    eps : float in (0, 1]
        Attention threshold.
    ridge : float, default 0.0
        λ >= 0 (ridge leverage scores when > 0).
    p : float, default 2.0
        Only ``p = 2`` is supported; other values raise ``NotImplementedError``
        (see Notes).
    split_every : int >= 2, optional
        Sketches merged per task in the reduction tree (default 8).
    block_size : int, optional
        Rows fed to a chunk's sketch at a time (default
        :data:`streamlev.exact.DEFAULT_BLOCK`); bounds the temporary memory of
        a task to a few blocks on top of its chunk.
    compute : bool, default True
        If False, return a ``dask.delayed.Delayed`` whose value is the result
        (for ``dask.compute`` together with other work, or ``client.compute``
        to get a future).

    Returns
    -------
    numpy.ndarray of int64
        Sorted global row numbers ``{i : τ_i >= eps}`` — identical to
        ``streamlev.universal_set(x.compute(), eps, ridge=ridge)`` for every
        chunking, ``split_every``, scheduler and worker count.

    Notes
    -----
    Each chunk becomes an :class:`~streamlev.OnlineLeverage` with ids from its
    row offset, in a task fused with the one producing the chunk; sketches
    merge in a tree.  Network traffic per sketch is the d x d factor plus at
    most ``min(chunk rows, rank/eps)`` candidate keys with their ids,
    independent of n; keys never leave the worker that reads them when the
    chunk's task fuses with the sketch task (see the module notes; a rechunk
    or an operation on several arrays can make Dask move chunks).  Read
    ``.npy`` files with :func:`from_npy`, not ``from_array(np.load(path,
    mmap_mode="r"))``, which pickles the whole file into the graph.  Uses the
    active scheduler: a ``distributed.Client`` if one exists, else Dask's
    default.

    For p != 2, ℓ_p sensitivities and Lewis weights depend on all rows
    through a non-quadratic objective; there is no exact mergeable d x d
    summary, so this function refuses instead of answering approximately.
    """
    compute = _check_compute(compute)
    eps, ridge, _p, split_every, block_size = _check_common(eps, ridge, p, split_every, block_size)
    x = _as_dask(x, 2)
    root = _reduced(x, eps, ridge, split_every, block_size)
    return _finish(dask.delayed(_ids_task, pure=True)(root), compute)


def sketch(
    x: da.Array | ArrayLike,
    eps: float,
    *,
    ridge: float = 0.0,
    split_every: int | None = None,
    block_size: int | None = None,
    compute: bool = True,
) -> OnlineLeverage | Delayed:
    """Compute the merged :class:`~streamlev.OnlineLeverage` sketch of all rows of a Dask array.

    Same parameters as :func:`universal_set` (p = 2 only).  The sketch holds
    the factor of all rows and the candidates of the universal set, with
    global row ids; it can keep streaming (``update(X, ids=...)`` with ids from
    ``n`` on), be merged with other sketches, or be saved with ``to_bytes``.

    Returns
    -------
    streamlev.OnlineLeverage
        ``.universal_set()`` equals :func:`universal_set` of ``x``;
        ``.n_seen == n``.  A ``Delayed`` if ``compute=False``.
    """
    compute = _check_compute(compute)
    eps, ridge, _p, split_every, block_size = _check_common(eps, ridge, 2.0, split_every, block_size)
    x = _as_dask(x, 2)
    root = _reduced(x, eps, ridge, split_every, block_size)
    return _finish(root, compute)


def universal_sets(
    x: da.Array | ArrayLike,
    eps: float,
    *,
    ridge: float = 0.0,
    p: float = 2.0,
    split_every: int | None = None,
    block_size: int | None = None,
    compute: bool = True,
) -> list[np.ndarray] | Delayed:
    """Exact ε-universal sets of many independent key streams (one per layer, head or sequence).

    Parameters
    ----------
    x : dask.array.Array of shape (H, n, d), or a sequence of (n_h, d) arrays
        A 3-D array holds H streams of n rows each, chunked along H and n
        (the last axis is merged into one chunk).  A list or tuple holds
        streams of different lengths (dask or numpy arrays, same d not
        required).
    eps, ridge, p, split_every, block_size, compute
        As in :func:`universal_set`, shared by every stream.

    Returns
    -------
    list of numpy.ndarray of int64
        ``out[h]`` is the sorted set of row numbers (0 .. n_h - 1, within
        stream h) with ``τ_i >= eps``, identical to
        ``streamlev.universal_set(stream_h, eps, ridge=ridge)``.  A
        ``Delayed`` of that list if ``compute=False``.

    Notes
    -----
    For a 3-D array one task sketches every stream of a chunk (a loop over its
    heads, each fed in blocks), and the tree merges chunks along n stream by
    stream, so task count does not grow with H beyond the chunking.  Only
    sketches — one d x d factor plus candidates per stream — cross the network.
    """
    compute = _check_compute(compute)
    eps, ridge, _p, split_every, block_size = _check_common(eps, ridge, p, split_every, block_size)
    if isinstance(x, (list, tuple)):
        if not x:
            out = dask.delayed(list, pure=True)(())
            return _finish(out, compute)
        roots = []
        for h, stream in enumerate(x):
            xh = _as_dask(stream, 2, name=f"x[{h}]")
            root = _reduced(xh, eps, ridge, split_every, block_size, label=f"x[{h}]")
            roots.append(dask.delayed(_ids_task, pure=True)(root))
        return _finish(dask.delayed(list, pure=True)(roots), compute)
    x = _as_dask(x, 3)
    H, n, d = x.shape
    if H == 0:
        return _finish(dask.delayed(list, pure=True)(()), compute)
    if n == 0 or x.numblocks[1] == 0:
        return _finish(dask.delayed(_empty_lists, pure=True)(H), compute)
    sk = x.map_blocks(
        _chunk_task_many,
        dim=d,
        eps=eps,
        ridge=ridge,
        block_size=block_size,
        drop_axis=2,
        chunks=(x.chunks[0], (1,) * x.numblocks[1]),
        dtype=object,
        meta=np.empty((0, 0), dtype=object),
        token="streamlev-sketches",
    )
    grid = sk.to_delayed(optimize_graph=True)  # (H blocks, n blocks)
    token = dask.base.tokenize(sk.name, split_every)
    roots = [
        dask.delayed(_ids_task, pure=True)(_tree(list(grid[i]), split_every, f"{token}-{i}"))
        for i in range(grid.shape[0])
    ]
    return _finish(dask.delayed(_concat_lists, pure=True)(*roots), compute)


def _empty_lists(H):
    return [np.zeros(0, dtype=np.int64) for _ in range(H)]


# -- p != 2: a certified superset -----------------------------------------------------------------
def _power_chunk_task(block, *, eps, p, refine, block_info=None):
    from .lewis import universal_set_p  # noqa: PLC0415 - the ℓ_p solvers are only needed here

    start = int(block_info[0]["array-location"][0][0])
    rows = np.asarray(block, dtype=np.float64)
    bad = first_nonfinite_row(rows)
    if bad >= 0:
        raise ValueError(f"x contains NaN or infinity in row {start + bad}; remove or impute non-finite values first")
    keep = universal_set_p(rows, eps, p=p, refine=refine)
    return start + keep, np.ascontiguousarray(rows[keep])


def _power_merge_task(*parts, eps, p, refine):
    from .lewis import universal_set_p  # noqa: PLC0415

    ids = np.concatenate([part[0] for part in parts])
    rows = np.concatenate([part[1] for part in parts])
    keep = universal_set_p(rows, eps, p=p, refine=refine) if rows.shape[0] else np.zeros(0, np.int64)
    return ids[keep], rows[keep]


def _power_ids_task(part):
    return np.sort(part[0]).astype(np.int64)


def power_candidates(
    x: da.Array | ArrayLike,
    eps: float,
    *,
    p: float,
    refine: bool = True,
    split_every: int | None = None,
    compute: bool = True,
) -> np.ndarray | Delayed:
    """Certified superset of the ε-universal set of power attention f(x) = |x|^p (p != 2).

    Parameters
    ----------
    x : dask.array.Array, shape (n, d)
        Keys chunked by rows (as in :func:`universal_set`).
    eps : float in (0, 1]
        Attention threshold.
    p : float > 0
        Exponent.  ``p = 2`` returns the exact set of :func:`universal_set`.
    refine : bool, default True
        Passed to :func:`streamlev.lewis.universal_set_p` at every step (for
        p >= 1 candidates are refined by certified exact sensitivities: a
        smaller set, more time).
    split_every : int >= 2, optional
        Candidate sets merged per task (default 8).
    compute : bool, default True
        If False, return a ``Delayed``.

    Returns
    -------
    numpy.ndarray of int64
        Sorted global row numbers S with ``{j : α_j >= eps} ⊆ S`` (α_j the ℓ_p
        sensitivity with respect to all rows), so every entry A_ij >= eps of
        row-normalise(|QKᵀ|^p) has j in S for every Q.  S is the universal
        set of its own rows: ``|S| <= c_p·rank/eps·(1 + O(tol))`` with c_p = 1
        for p <= 2 and rank^{p/2-1} for p > 2.  S is generally *larger* than
        the exact set.

    Notes
    -----
    Each chunk keeps the universal set of its own rows
    (:func:`streamlev.lewis.universal_set_p`), and each merge keeps the
    universal set of the union of its inputs' kept rows.  A key is dropped
    only when its sensitivity with respect to a subset of the rows is
    certified below eps; sensitivities only decrease as rows are added, so it
    is below eps with respect to all rows.  The reverse step is what makes the
    exact set out of reach here: a kept key's sensitivity with respect to all
    rows depends on the dropped rows too, and no bounded summary of them
    determines it for p != 2.  Only kept rows (with their ids) cross the
    network: at most about c_p·d/eps of them per task.  For the exact set,
    rescore S against all rows with
    ``streamlev.lewis.sensitivity_bounds(K, p, indices=S)`` where K fits in
    memory.
    """
    compute = _check_compute(compute)
    eps = check_eps(eps)
    p = check_p(p)
    if p == 2.0:
        return universal_set(x, eps, split_every=split_every, compute=compute)
    if not isinstance(refine, (bool, np.bool_)):
        raise TypeError(f"refine must be True or False, got {type(refine).__name__}")
    split_every = (
        DEFAULT_SPLIT_EVERY if split_every is None else check_positive_int(split_every, "split_every", minimum=2)
    )
    x = _as_dask(x, 2)
    n, d = x.shape
    if n == 0 or x.numblocks[0] == 0:
        return _finish(dask.delayed(np.zeros, pure=True)(0, dtype=np.int64), compute)
    kw = {"eps": eps, "p": p, "refine": bool(refine)}
    parts = x.map_blocks(
        _power_chunk_task,
        **kw,
        drop_axis=1,
        chunks=((1,) * x.numblocks[0],),
        dtype=object,
        meta=np.empty((0,), dtype=object),
        token="streamlev-lp",
    )
    parts = list(parts.to_delayed(optimize_graph=True).ravel())
    merge = dask.delayed(_power_merge_task, pure=True)
    level = 0
    token = dask.base.tokenize(parts[0].key, len(parts), split_every)
    while len(parts) > 1:
        parts = [
            merge(*parts[i : i + split_every], **kw, dask_key_name=f"streamlev-lp-merge-{token}-{level}-{j}")
            for j, i in enumerate(range(0, len(parts), split_every))
        ]
        level += 1
    return _finish(dask.delayed(_power_ids_task, pure=True)(parts[0]), compute)


# -- reading keys from .npy files on the workers --------------------------------------------------
def _read_npy_rows(*, path, block_info=None):
    (a, b), _cols = block_info[None]["array-location"]
    return np.array(np.load(path, mmap_mode="r")[a:b])


def from_npy(path: str | os.PathLike, *, chunk_rows: int | None = None) -> da.Array:
    """Open an (n, d) ``.npy`` file as a Dask array whose chunks each worker memory-maps itself.

    Parameters
    ----------
    path : str or os.PathLike
        A 2-D ``.npy`` file.  On a multi-machine cluster every worker must see
        it at the same path (a shared or replicated filesystem).
    chunk_rows : int, optional
        Rows per chunk (default: about 64 MiB per chunk, at least
        :data:`streamlev.exact.DEFAULT_BLOCK` rows).

    Returns
    -------
    dask.array.Array, shape (n, d)
        Only the file header is read here.  Each chunk is read by a task that
        takes nothing but the path and the row range, so the task fuses with the
        sketch task of :func:`universal_set`: keys are read, sketched and
        dropped on one worker and never cross the network.  (By contrast,
        ``dask.array.from_array(np.load(path, mmap_mode="r"))`` pickles the
        whole memory map into the task graph.)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming a .npy file, got {type(path).__name__}")
    path = os.path.abspath(os.fspath(path))
    mm = open_npy(path)  # the reader of the command line: same checks, same messages
    as_keys(np.zeros((0, mm.shape[1]), dtype=mm.dtype), name="the keys in " + repr(path))
    n, d = mm.shape
    if chunk_rows is None:
        chunk_rows = max(DEFAULT_BLOCK, (64 << 20) // max(1, d * mm.dtype.itemsize))
    chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
    chunks = da.core.normalize_chunks((chunk_rows, d), (n, d))
    stat = os.stat(path)
    name = "streamlev-npy-" + dask.base.tokenize(path, stat.st_mtime_ns, stat.st_size, chunks)
    return da.map_blocks(
        _read_npy_rows, path=path, chunks=chunks, dtype=mm.dtype, meta=np.empty((0, 0), dtype=mm.dtype), name=name
    )
