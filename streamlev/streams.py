"""Block readers: one way to turn any key source into a stream of ``(m, d)`` blocks.

:func:`iter_blocks` is the single reader used by the command line and by the
two-pass algorithm.  Whatever the source, it yields 2-D arrays of at most
``block_size`` rows, validated by :mod:`streamlev._validate`, and it never
holds more than one block (plus a fixed buffer) of a file in memory.

Sources
-------
numpy array (or anything with ``__array__``)
    Views of consecutive row ranges, no copies (integer/bool keys are
    converted block by block).
path to ``.npy``
    Memory-mapped from the header (``mode='r'``); blocks are views of the map,
    so resident heap memory is one block whatever the file size.
path to ``.npz``
    Member ``key`` (or the only member).  Members of a zip archive cannot be
    memory-mapped, so the member's ``.npy`` header is parsed and its data are
    read block by block from the (possibly compressed) member file object.
path to ``.csv`` / ``.tsv`` / ``.txt``
    Read line by line, ``block_size`` lines at a time; comma separated when
    the first data line has a comma, otherwise whitespace separated; blank
    lines and ``#`` comments are skipped.  Ragged or non-numeric lines are
    refused with their line number.
``'-'`` or a binary file object
    Raw little-endian rows of ``dim`` values of ``dtype`` (float32 or
    float64), read block by block (``'-'`` is ``sys.stdin.buffer``).
iterable of blocks (generator, list, ...)
    Each item is a block ``(m, d)`` or a single row ``(d,)``.  With
    ``block_size=None`` blocks pass through as given; otherwise they are
    re-chunked to exactly ``block_size`` rows (the last block may be shorter).
zero-argument callable
    Called once per :func:`iter_blocks` call; must return a fresh source
    (usually an iterable of blocks).  This is how a generator becomes
    re-readable for multi-pass algorithms.

Errors name the problem and the fix: a missing file raises
:class:`FileNotFoundError`; a file that is not what its name says, a truncated
file, a wrong shape, a ragged or non-numeric text line and NaN/inf raise
:class:`ValueError`; non-numeric dtypes raise :class:`TypeError`.  Row numbers
in NaN errors are *global* row indices of the stream (0-based), not positions
inside a block.
"""

from __future__ import annotations

import itertools
import os
import sys
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from ._validate import as_block, as_keys, check_positive_int, first_nonfinite_row, unmasked
from .exact import DEFAULT_BLOCK

__all__ = [
    "iter_blocks",
    "block_source",
    "rereadable",
    "source_shape",
    "load_keys",
    "open_npy",
    "DEFAULT_BLOCK",
]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
_RAW_DTYPES = {np.dtype(np.float32): np.dtype("<f4"), np.dtype(np.float64): np.dtype("<f8")}
_NAN_FIX = "remove or impute non-finite values before computing leverage"


# ------------------------------------------------------------------------------------------------
# source classification
# ------------------------------------------------------------------------------------------------


def _is_path(source) -> bool:
    return isinstance(source, (str, os.PathLike))


def _is_stdin(source) -> bool:
    return isinstance(source, str) and source == "-"


def _is_arraylike(source) -> bool:
    return isinstance(source, np.ndarray) or (
        not isinstance(source, (list, tuple))
        and (hasattr(source, "__array__") or hasattr(source, "__array_interface__"))
    )


def _is_binary_stream(source) -> bool:
    return hasattr(source, "read") and not _is_path(source) and not _is_arraylike(source)


def _file_kind(path: str) -> str:
    """'npy', 'npz' or 'text', by suffix, checked against the file's first bytes."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}; check the path")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory; pass a .npy, .npz, .csv or .txt file")
    with open(path, "rb") as f:
        head = f.read(8)
    lower = path.lower()
    if lower.endswith(".npy"):
        if not head.startswith(_NPY_MAGIC):
            raise ValueError(
                f"{path!r} is not a .npy file (it does not start with the NumPy magic "
                f"string); write keys with np.save(path, K)"
            )
        return "npy"
    if lower.endswith(".npz"):
        if not head.startswith(_ZIP_MAGIC):
            raise ValueError(f"{path!r} is not a .npz file (not a zip archive); write keys with np.savez(path, K=K)")
        return "npz"
    if lower.endswith(_TEXT_SUFFIXES):
        return "text"
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if head.startswith(_ZIP_MAGIC):
        return "npz"
    raise ValueError(
        f"cannot tell the format of {path!r}: expected a .npy, .npz, .csv, .tsv or .txt file "
        f"(rename it with the right extension)"
    )


def rereadable(source) -> bool:
    """Whether ``source`` can be read more than once (needed by multi-pass algorithms).

    Arrays, paths (other than ``'-'``), sequences such as lists, and zero-argument
    callables can; generators, iterators, file objects and standard input cannot.
    """
    if _is_stdin(source):
        return False
    if _is_path(source) or _is_arraylike(source):
        return True
    if _is_binary_stream(source):
        return False
    if isinstance(source, Sequence):
        return True
    if callable(source):
        return True
    return False


# ------------------------------------------------------------------------------------------------
# validation with global row numbers
# ------------------------------------------------------------------------------------------------


def _check(item, dim, offset: int, name: str, where=None) -> np.ndarray:
    """Validate one block through _validate; NaN rows are reported as global row indices."""
    try:
        if dim is None:
            arr = item if isinstance(item, np.ndarray) else np.asarray(item)
            if arr.ndim == 1:
                arr = arr.reshape(1, -1)
            return as_keys(arr, name=name)
        return as_block(item, dim, name=name)
    except ValueError:
        try:
            arr = np.asarray(item)
            if arr.ndim == 1:
                arr = arr.reshape(1, -1)
            bad = first_nonfinite_row(arr) if arr.dtype.kind in "fc" and arr.ndim == 2 else -1
        except Exception:  # the original message is the better one
            bad = -1
        if bad < 0:
            raise
        row = offset + bad
        extra = f" ({where(bad)})" if where is not None else ""
        raise ValueError(f"{name} contains NaN or infinity in row {row}{extra}; {_NAN_FIX}") from None


def _cast(B: np.ndarray, dtype) -> np.ndarray:
    if dtype is None or B.dtype == dtype:
        return B
    return B.astype(dtype)


def _norm_dtype(dtype):
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in _RAW_DTYPES:
        raise ValueError(
            f"dtype must be float32 or float64, got {dt}; convert the keys first (e.g. K.astype(np.float32))"
        )
    return dt


# ------------------------------------------------------------------------------------------------
# arrays and .npy
# ------------------------------------------------------------------------------------------------


def _check_2d(arr_shape, what: str):
    if len(arr_shape) != 2:
        extra = ""
        if len(arr_shape) == 1:
            extra = "; for n scalars save K.reshape(-1, 1), for a single key K.reshape(1, -1)"
        raise ValueError(f"{what} holds an array of shape {tuple(arr_shape)}; expected 2-D keys of shape (n, d){extra}")


def _iter_array(K: np.ndarray, block_size: int, dim, dtype, name: str):
    if K.ndim != 2:
        as_keys(K, name=name)  # raises the standard message (before any conversion or copy)
    as_keys(K[:0], name=name, dim=dim)  # dtype, d = 0 and dim checks, on zero rows: no copy
    dim = K.shape[1]

    def gen():
        for a in range(0, K.shape[0], block_size):
            B = _check(K[a : a + block_size], dim, a, name)
            yield _cast(B, dtype)

    return gen()


def _read_npy_header(f, what: str):
    """(shape, fortran_order, dtype) from an open .npy stream positioned at its start."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        raise ValueError(f"{what} is not a .npy file (bad magic string); write keys with np.save(path, K)") from None
    # numpy's public readers know format versions 1.0 and 2.0; np.save writes 3.0 only for structured
    # dtypes with non-ASCII field names, which are not keys anyway.
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(
            f"{what} has .npy format version {version[0]}.{version[1]}, which streamlev does not read "
            f"(1.0 and 2.0 only; the file may be corrupt); re-create it with np.save(path, K)"
        )
    try:
        shape, fortran, dt = readers[version](f)
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ValueError(f"{what} has a corrupt .npy header ({exc}); re-create it with np.save(path, K)") from None
    if dt.hasobject:
        raise TypeError(
            f"{what} holds Python objects (dtype {dt}); save a numeric array instead, "
            f"e.g. np.save(path, np.asarray(K, dtype=np.float32))"
        )
    return tuple(int(s) for s in shape), bool(fortran), dt


def _open_npy(path: str) -> np.ndarray:
    """Memory-map a .npy file read-only, after checking its header and its length."""
    with open(path, "rb") as f:
        shape, fortran, dt = _read_npy_header(f, repr(path))
        offset = f.tell()
    _check_2d(shape, repr(path))
    need = offset + int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    have = os.path.getsize(path)
    if have < need:
        raise ValueError(
            f"{path!r} is truncated: its header promises shape {shape} of {dt} "
            f"({need - offset:,} data bytes) but only {max(have - offset, 0):,} are present; "
            f"re-create the file (np.save) or check that the copy completed"
        )
    if shape[0] * shape[1] == 0:
        return np.empty(shape, dtype=dt)
    return np.memmap(path, dtype=dt, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def open_npy(path) -> np.ndarray:
    """A 2-D ``.npy`` file as a read-only memory map, with the reader's checks and messages.

    The one ``.npy`` opener of the package (the command line, :func:`iter_blocks`
    and :func:`streamlev.dask.from_npy`): a missing file, a file that is not
    ``.npy``, an unknown format version, a truncated file or a wrong shape get
    the same message wherever they are met.
    """
    path = os.fspath(path)
    kind = _file_kind(path)
    if kind != "npy":
        raise ValueError(f"{path!r} is not a .npy file (it is read as {kind}); write keys with np.save(path, K)")
    return _open_npy(path)


# ------------------------------------------------------------------------------------------------
# .npz
# ------------------------------------------------------------------------------------------------


def _npz_member(zf: zipfile.ZipFile, path: str, key):
    names = [n for n in zf.namelist() if n.endswith(".npy")]
    keys = [n[:-4] for n in names]
    if key is None:
        if len(names) == 1:
            return names[0]
        if not names:
            raise ValueError(f"{path!r} holds no arrays; write keys with np.savez(path, K=K)")
        raise ValueError(
            f"{path!r} holds several arrays ({', '.join(keys)}); choose one with key=NAME "
            f"(--key NAME on the command line)"
        )
    member = key if key.endswith(".npy") else key + ".npy"
    if member not in names:
        raise ValueError(f"{path!r} has no array named {key!r}; it holds: {', '.join(keys) or 'nothing'}")
    return member


def _npz_header(path: str, key):
    with _open_zip(path) as zf:
        member = _npz_member(zf, path, key)
        with zf.open(member) as f:
            return _read_npy_header(f, f"{path!r}[{member[:-4]!r}]")


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path!r} is not a valid .npz (zip) archive; write keys with np.savez(path, K=K)") from None


def _iter_npz(path: str, key, block_size: int, dim, dtype):
    shape, fortran, dt = _npz_header(path, key)  # eager: wrong key, bad header, wrong ndim
    what = f"{path!r}[{key!r}]" if key is not None else repr(path)
    _check_2d(shape, what)
    if fortran and shape[0] > 1 and shape[1] > 1:
        raise ValueError(
            f"{what} is stored in Fortran (column-major) order, which cannot be "
            f"streamed by rows; re-save it with np.savez(path, K=np.ascontiguousarray(K))"
        )
    as_keys(np.empty((0, shape[1]), dtype=dt), name=what, dim=dim)
    return _gen_npz(path, key, block_size, dim, dtype)


def _gen_npz(path: str, key, block_size: int, dim, dtype):
    with _open_zip(path) as zf:
        member = _npz_member(zf, path, key)
        what = f"{path!r}[{member[:-4]!r}]"
        with zf.open(member) as f:
            shape, _fortran, dt = _read_npy_header(f, what)
            n, d = shape
            row_bytes = d * dt.itemsize
            for a in range(0, n, block_size):
                m = min(block_size, n - a)
                try:
                    data = f.read(m * row_bytes)
                except (zipfile.BadZipFile, EOFError, OSError) as exc:
                    raise ValueError(f"{what} is corrupt ({exc}); re-create the archive") from None
                if len(data) < m * row_bytes:
                    raise ValueError(
                        f"{what} is truncated: expected {n:,} rows of {d} x {dt}, the data "
                        f"end inside row {a + len(data) // row_bytes:,}; re-create the archive"
                    )
                B = np.frombuffer(data, dtype=dt).reshape(m, d)
                yield _cast(_check(B, dim if dim is not None else d, a, what), dtype)


# ------------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------------


def _split_fields(line: str, delim):
    body = line.split("#", 1)[0].strip()
    if not body:
        return None
    return [s.strip() for s in body.split(delim)] if delim else body.split()


def _diagnose_text(lines, first_lineno: int, delim, d, path: str, *, d_line):
    """Find and report the first bad line of a chunk that np.loadtxt refused."""
    for i, line in enumerate(lines):
        fields = _split_fields(line, delim)
        if fields is None:
            continue
        lineno = first_lineno + i
        if d is None:
            d, d_line = len(fields), lineno
        for s in fields:
            try:
                float(s)
            except ValueError:
                shown = s if len(s) <= 30 else s[:27] + "..."
                raise ValueError(
                    f"{path!r}, line {lineno}: {shown!r} is not a number; text input must hold numbers "
                    f"only, one key per line (delete a header line or start it with '#')"
                ) from None
        if len(fields) != d:
            ref = f"line {d_line} has {d}" if d_line is not None else f"dim={d} was requested"
            raise ValueError(
                f"{path!r}, line {lineno}: {len(fields)} values, but {ref}; "
                f"every line must hold the same number of values (ragged rows)"
            )
    return d, d_line


def _data_lineno(lines, first_lineno: int, row: int) -> int:
    seen = -1
    for i, line in enumerate(lines):
        if _split_fields(line, ",") is not None:
            seen += 1
            if seen == row:
                return first_lineno + i
    return -1  # pragma: no cover - row always exists


def _text_delim(path: str):
    """',' when the first data line has a comma, None (whitespace) otherwise; (delim, d) or None."""
    with open(path, encoding="utf-8") as f:
        try:
            for line in f:
                body = line.split("#", 1)[0].strip()
                if body:
                    delim = "," if "," in body else None
                    return delim, len(_split_fields(body, delim))
        except UnicodeDecodeError:
            raise ValueError(
                f"{path!r} is not a text file (not UTF-8); pass .npy/.npz binary arrays with the matching extension"
            ) from None
    return None


def _iter_text(path: str, block_size: int, dim, dtype):
    head = _text_delim(path)  # eager: not UTF-8
    if head is None:
        return iter(())  # no data lines: an empty stream
    return _gen_text(path, head[0], block_size, dim, dtype)


def _gen_text(path: str, delim, block_size: int, dim, dtype):
    d, d_line = dim, None
    offset = 0
    lineno = 1
    with open(path, encoding="utf-8") as f:
        while True:
            try:
                lines = list(itertools.islice(f, block_size))
            except UnicodeDecodeError:
                raise ValueError(
                    f"{path!r} is not a text file (not UTF-8) near line {lineno}; "
                    f"pass .npy/.npz binary arrays with the matching extension"
                ) from None
            if not lines:
                return
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data" for comment-only chunks
                try:
                    B = np.loadtxt(lines, delimiter=delim, ndmin=2, dtype=np.float64, comments="#")
                except ValueError:
                    B = None
            if B is None or (B.size and d is not None and B.shape[1] != d):
                d, d_line = _diagnose_text(lines, lineno, delim, d, path, d_line=d_line)
                if B is None:  # pragma: no cover - loadtxt refused a chunk we could not fault
                    raise ValueError(f"{path!r}: could not parse lines {lineno}-{lineno + len(lines) - 1}")
            if B.shape[0]:
                if d is None:
                    d = B.shape[1]
                    d_line = lineno + next(i for i, s in enumerate(lines) if _split_fields(s, delim) is not None)

                def where(r, _l=lines, _f=lineno):
                    return f"line {_data_lineno(_l, _f, r)}"

                B = _check(B, d, offset, repr(path), where)
                offset += B.shape[0]
                yield _cast(B, dtype)
            lineno += len(lines)


# ------------------------------------------------------------------------------------------------
# raw binary rows (stdin)
# ------------------------------------------------------------------------------------------------


def _read_up_to(f, nbytes: int) -> bytearray:
    buf = bytearray(nbytes)
    view = memoryview(buf)
    pos = 0
    readinto = getattr(f, "readinto", None)
    while pos < nbytes:
        if readinto is not None:
            k = readinto(view[pos:])
        else:
            chunk = f.read(nbytes - pos)
            if isinstance(chunk, str):
                raise TypeError(
                    "raw key rows must come from a binary stream; open the file with "
                    "mode 'rb' (or use sys.stdin.buffer)"
                )
            k = len(chunk)
            view[pos : pos + k] = chunk
        if not k:
            break
        pos += k
    view.release()
    del buf[pos:]
    return buf


def _iter_binary(f, block_size: int, dim, dtype, name: str):
    if dim is None or dtype is None:
        raise ValueError(
            f"reading raw rows from {name} needs the row length and the value type: pass "
            f"dim=D and dtype='float32' or 'float64' (--dim D --dtype T on the command line)"
        )
    return _gen_binary(f, block_size, check_positive_int(dim, "dim"), _RAW_DTYPES[_norm_dtype(dtype)], name)


def _gen_binary(f, block_size: int, dim: int, raw, name: str):
    row_bytes = dim * raw.itemsize
    want = block_size * row_bytes
    offset = 0
    while True:
        data = _read_up_to(f, want)
        got = len(data)
        if got % row_bytes:
            total = offset * row_bytes + got
            raise ValueError(
                f"{name} ended inside a row: {total:,} bytes is not a multiple "
                f"of the row size {row_bytes} (dim={dim} x {raw.itemsize}-byte {raw.name}); "
                f"check --dim and --dtype"
            )
        if got:
            B = np.frombuffer(data, dtype=raw).reshape(-1, dim)
            B = _check(B, dim, offset, name)
            offset += B.shape[0]
            yield B
        if got < want:
            return


# ------------------------------------------------------------------------------------------------
# iterables
# ------------------------------------------------------------------------------------------------


def _iter_iterable(it: Iterable, block_size, dim, dtype, name: str):
    offset = 0
    buf: list[np.ndarray] = []
    have = 0
    for item in it:
        B = _check(item, dim, offset, name)
        if dim is None:
            dim = B.shape[1]
        offset += B.shape[0]
        B = _cast(B, dtype)
        if block_size is None:
            if B.shape[0]:
                yield B
            continue
        while B.shape[0]:
            take = min(block_size - have, B.shape[0])
            buf.append(B[:take])
            have += take
            B = B[take:]
            if have == block_size:
                yield buf[0] if len(buf) == 1 else np.concatenate(buf)
                buf, have = [], 0
    if have:
        yield buf[0] if len(buf) == 1 else np.concatenate(buf)


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------


def iter_blocks(source, block_size=None, *, key=None, dim=None, dtype=None) -> Iterator[np.ndarray]:  # noqa: PLR0911
    """Stream the keys of ``source`` as validated ``(m, d)`` blocks, with bounded memory.

    Parameters
    ----------
    source : array, path, ``'-'``, binary file object, iterable of blocks or callable
        See the module docstring for every kind.  Paths are dispatched on their
        extension (``.npy``, ``.npz``, ``.csv``/``.tsv``/``.txt``), checked against
        the file's first bytes.
    block_size : int, optional
        Rows per block.  Default :data:`streamlev.exact.DEFAULT_BLOCK` for arrays,
        files and raw streams; for iterables ``None`` keeps the blocks as given.
        Text files are read ``block_size`` lines at a time (comment and blank lines
        count), so their blocks may be shorter.
    key : str, optional
        Member of a ``.npz`` archive (needed when it holds several arrays).
    dim : int, optional
        Key dimension.  Required for raw binary input; elsewhere, when given, every
        block must have it.
    dtype : {'float32', 'float64'}, optional
        Required for raw binary input (little-endian values).  Elsewhere, when given,
        blocks are converted to it.

    Yields
    ------
    numpy.ndarray, shape (m, d), m >= 1
        float32 or float64 (integer/bool keys become float64), as returned by
        :func:`streamlev._validate.as_block`; consecutive blocks cover the rows in
        order.  Blocks of arrays and ``.npy`` files are read-only views; consumers
        must copy what they keep.

    Raises
    ------
    FileNotFoundError
        Missing file.
    ValueError
        Not the format its name says, truncated file, wrong number of dimensions,
        ragged or non-numeric text line (with its line number), NaN/inf (with its
        global 0-based row index), inconsistent ``dim``.
    TypeError
        Non-numeric dtype, text stream where bytes were expected.

    Notes
    -----
    Memory is one block plus a fixed buffer for every source kind: ``.npy`` files
    are memory-mapped (never loaded), ``.npz`` members and text files are read
    incrementally, raw streams ``block_size`` rows at a time.  Errors are raised
    when the bad block is reached: a consumer may have processed earlier blocks.
    """
    dtype = _norm_dtype(dtype)
    if dim is not None:
        dim = check_positive_int(dim, "dim")
    if block_size is not None:
        block_size = check_positive_int(block_size, "block_size")
    fixed = DEFAULT_BLOCK if block_size is None else block_size
    if _is_stdin(source):
        return _iter_binary(sys.stdin.buffer, fixed, dim, dtype, "stdin")
    if _is_path(source):
        path = os.fspath(source)
        kind = _file_kind(path)
        if kind == "npy":
            return _iter_array(np.asarray(_open_npy(path)), fixed, dim, dtype, repr(path))
        if kind == "npz":
            return _iter_npz(path, key, fixed, dim, dtype)
        return _iter_text(path, fixed, dim, dtype)
    if _is_arraylike(source):
        return _iter_array(np.asarray(unmasked(source, "K")), fixed, dim, dtype, "K")
    if _is_binary_stream(source):
        return _iter_binary(source, fixed, dim, dtype, "the binary stream")
    if callable(source):
        fresh = source()
        if callable(fresh) and not isinstance(fresh, Iterable):
            raise TypeError(
                "a callable source must return the keys (an iterable of blocks, an array or a "
                "path), not another callable"
            )
        return iter_blocks(fresh, block_size, key=key, dim=dim, dtype=dtype)
    if isinstance(source, Iterable):
        return _iter_iterable(source, block_size, dim, dtype, "block")
    raise TypeError(
        f"cannot read keys from a {type(source).__name__}; pass an (n, d) array, a path to a "
        f".npy/.npz/.csv/.txt file, '-' for raw rows on stdin, an iterable of blocks, or a "
        f"zero-argument callable returning one"
    )


def block_source(source, block_size=None, *, key=None, dim=None, dtype=None):
    """Make a zero-argument callable that returns a fresh :func:`iter_blocks` stream of ``source``.

    This is the form :func:`streamlev.two_pass_universal_set` accepts for any
    re-readable source (e.g. a CSV file or an ``.npz`` member).

    Raises
    ------
    ValueError
        If ``source`` cannot be read twice (a generator, an iterator, a file
        object or standard input): wrap the code that produces it in a function
        instead.
    """
    if not rereadable(source):
        what = "stdin" if _is_stdin(source) else type(source).__name__
        raise ValueError(
            f"this source ({what}) can be read "
            f"only once; pass an array, a file path, or a zero-argument function that returns "
            f"a fresh iterable of blocks"
        )
    # Check the source now (missing file, bad format) rather than on the first pass.
    if _is_path(source):
        _file_kind(os.fspath(source))

    def fresh():
        return iter_blocks(source, block_size, key=key, dim=dim, dtype=dtype)

    return fresh


def source_shape(source, *, key=None, dim=None):
    """``(n, d)`` of a source when they can be known without reading it; ``None`` for unknowns.

    Arrays and ``.npy``/``.npz`` give both (from the header, nothing is loaded);
    text files give ``d`` (from the first data line); raw streams, iterables and
    callables give ``(None, dim)``.
    """
    if _is_stdin(source):
        return None, dim
    if _is_path(source):
        path = os.fspath(source)
        kind = _file_kind(path)
        if kind == "npy":
            with open(path, "rb") as f:
                shape, _, _ = _read_npy_header(f, repr(path))
            _check_2d(shape, repr(path))
            return shape
        if kind == "npz":
            shape, _, _ = _npz_header(path, key)
            _check_2d(shape, repr(path))
            return shape
        head = _text_delim(path)
        return None, (head[1] if head is not None else dim)
    if _is_arraylike(source):
        arr = np.asarray(unmasked(source, "K"))
        if arr.ndim != 2:
            as_keys(arr, name="K")
        return tuple(int(s) for s in arr.shape)
    return None, dim


def load_keys(source, *, key=None, dim=None, dtype=None) -> np.ndarray:
    """All keys of ``source`` as one array (for the in-memory exact method).

    Arrays are returned as they are and ``.npy`` files as a read-only memory map
    (nothing is copied); every other source is streamed with :func:`iter_blocks`
    and concatenated, so memory is the size of the keys.  Validation (NaN, shape)
    is left to the consumer for arrays and ``.npy`` maps.
    """
    if _is_path(source) and not _is_stdin(source) and _file_kind(os.fspath(source)) == "npy":
        K = np.asarray(_open_npy(os.fspath(source)))
        return _cast(K, _norm_dtype(dtype))
    if _is_arraylike(source):
        return _cast(np.asarray(unmasked(source, "K")), _norm_dtype(dtype))
    blocks = list(iter_blocks(source, key=key, dim=dim, dtype=dtype))
    if not blocks:
        n, d = source_shape(source, key=key, dim=dim)
        if d is None:
            raise ValueError("the source holds no keys and its dimension is unknown; pass dim=D")
        return np.empty((0, d), dtype=_norm_dtype(dtype) or np.float64)
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
