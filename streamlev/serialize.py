r"""The versioned, self-describing byte format of every streamlev sketch.

Layout (all integers little-endian)::

    offset  size  field
    0       8     magic  b"\x93SLEVSK\n"
    8       2     format version (uint16), currently 1
    10      2     length F of the family id (uint16)
    12      4     length H of the header (uint32)
    16      8     length P of the payload (uint64)
    24      4     CRC-32 of everything from offset 28 to the end (uint32)
    28      F     family id, ASCII (e.g. b"OnlineLeverage")
    28+F    H     header: UTF-8 JSON {"meta": {...}, "arrays": [[name, dtype, shape], ...]}
    ...     P     payload: the arrays' bytes, C order, in header order, no padding

Decoding checks, in this order and before any allocation proportional to the
claims in the data: magic, version, that F + H + P equals the bytes present,
the checksum, the family, then that the header is valid JSON of the expected
shape with dtypes from a fixed whitelist and shapes whose byte sizes add up
exactly to P.  Every failure raises ``ValueError``; nothing is allocated beyond
a copy of the input.
"""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np

__all__ = ["MAGIC", "FORMAT_VERSION", "pack", "unpack"]

MAGIC = b"\x93SLEVSK\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHHIQI")  # magic, version, F, H, P, crc
_DTYPES = {"<f8": np.dtype("<f8"), "<f4": np.dtype("<f4"), "<i8": np.dtype("<i8"), "|u1": np.dtype("|u1")}
_MAX_NDIM = 4
_META_TYPES = (bool, int, float, str, type(None))


def _canon_dtype(arr: np.ndarray) -> str:
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    s = dt.str
    if s not in _DTYPES:
        raise TypeError(f"cannot serialise arrays of dtype {arr.dtype}")
    return s


def pack(family: str, meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise a sketch state.

    Parameters
    ----------
    family : str
        ASCII name of the sketch class; checked by :func:`unpack`.
    meta : dict
        Scalars (bool, int, float, str, None) describing the state.
    arrays : dict of str -> numpy.ndarray
        float64, float32, int64 or uint8 arrays of at most 4 dimensions.

    Returns
    -------
    bytes
    """
    for k, v in meta.items():
        if not isinstance(v, _META_TYPES):
            raise TypeError(f"meta field {k!r} has unsupported type {type(v).__name__}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"meta field {k!r} is not finite")
    descr = []
    chunks = []
    for name, value in arrays.items():
        arr = np.asarray(value)
        dt = _canon_dtype(arr)
        if arr.ndim > _MAX_NDIM:
            raise ValueError(f"array {name!r} has {arr.ndim} > {_MAX_NDIM} dimensions")
        descr.append([name, dt, list(arr.shape)])
        chunks.append(np.ascontiguousarray(arr, dtype=_DTYPES[dt]).tobytes())
    fam = family.encode("ascii")
    header = json.dumps({"meta": meta, "arrays": descr}, sort_keys=True, allow_nan=False).encode("utf-8")
    payload = b"".join(chunks)
    body = fam + header + payload
    crc = zlib.crc32(body) & 0xFFFFFFFF
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(fam), len(header), len(payload), crc) + body


def _bad(msg: str):
    return ValueError(f"not a valid streamlev sketch: {msg}")


def unpack(data, family: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse bytes written by :func:`pack`; raise ``ValueError`` on anything wrong.

    Parameters
    ----------
    data : bytes-like
        The serialised sketch.
    family : str
        The expected family id.

    Returns
    -------
    meta : dict
    arrays : dict of str -> numpy.ndarray
        Fresh, writable, native-endian arrays.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"not a valid streamlev sketch: expected bytes, got {type(data).__name__}")
    buf = bytes(data)
    if len(buf) < _PREFIX.size:
        raise _bad(f"{len(buf)} bytes is shorter than the {_PREFIX.size}-byte prefix (truncated?)")
    magic, version, flen, hlen, plen, crc = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise _bad("wrong magic number (foreign or corrupted bytes)")
    if version != FORMAT_VERSION:
        raise _bad(
            f"format version {version} is not supported by this streamlev "
            f"(it reads version {FORMAT_VERSION}); upgrade streamlev"
        )
    expected = _PREFIX.size + flen + hlen + plen
    if expected != len(buf):
        raise _bad(f"length fields announce {expected} bytes but {len(buf)} are present (truncated or padded)")
    body = memoryview(buf)[_PREFIX.size :]
    if zlib.crc32(body) & 0xFFFFFFFF != crc:
        raise _bad("checksum mismatch (corrupted bytes)")
    try:
        fam = bytes(body[:flen]).decode("ascii")
    except UnicodeDecodeError:
        raise _bad("family id is not ASCII") from None
    if fam != family:
        raise _bad(f"this is a {fam!r} sketch, not a {family!r}; load it with {fam}.from_bytes")
    try:
        header = json.loads(bytes(body[flen : flen + hlen]).decode("utf-8"))
    except (ValueError, RecursionError):
        raise _bad("header is not valid JSON") from None
    if not isinstance(header, dict) or set(header) != {"meta", "arrays"}:
        raise _bad("header has the wrong structure")
    meta, descr = header["meta"], header["arrays"]
    if not isinstance(meta, dict) or not isinstance(descr, list):
        raise _bad("header has the wrong structure")
    for k, v in meta.items():
        if not isinstance(v, _META_TYPES):
            raise _bad(f"meta field {k!r} has an unsupported type")
    arrays = {}
    offset = 0
    payload = body[flen + hlen :]
    for item in descr:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], str)
            and isinstance(item[1], str)
            and isinstance(item[2], list)
        ):
            raise _bad("array descriptor has the wrong structure")
        name, dt, shape = item
        if dt not in _DTYPES:
            raise _bad(f"array {name!r} has unsupported dtype {dt!r}")
        if len(shape) > _MAX_NDIM or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise _bad(f"array {name!r} has an invalid shape {shape!r}")
        dtype = _DTYPES[dt]
        nbytes = dtype.itemsize
        for s in shape:
            nbytes *= s
            if nbytes > plen:
                raise _bad(f"array {name!r} claims more bytes than the payload holds")
        if offset + nbytes > plen:
            raise _bad(f"array {name!r} claims more bytes than the payload holds")
        if name in arrays:
            raise _bad(f"array {name!r} appears twice")
        arr = np.frombuffer(payload[offset : offset + nbytes], dtype=dtype).reshape(shape)
        arrays[name] = arr.astype(dtype.newbyteorder("="), copy=True)
        offset += nbytes
    if offset != plen:
        raise _bad(f"{plen - offset} payload bytes are not described by the header")
    return meta, arrays
