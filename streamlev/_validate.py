"""The one place that checks and converts user input.

Every public entry point of streamlev calls these helpers, so a given mistake
gets the same message everywhere.  Messages say what was expected, what was
received, and how to fix it.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

from ._tuning import SMALL_ENTRIES

__all__ = [
    "PrecisionWarning",
    "as_keys",
    "as_block",
    "unmasked",
    "check_eps",
    "check_ridge",
    "check_p",
    "P_MIN",
    "P_MAX",
    "check_dim",
    "check_factor_memory",
    "check_positive_int",
    "first_nonfinite_row",
]


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__}"


#: Largest key magnitude accepted.  Householder reflections form x_1 - α with |α| = ‖column‖,
#: which overflows near the float64 limit (1.8e308); 1e250 leaves room for ‖column‖ over any n.
MAX_MAGNITUDE = 1e250


def first_nonfinite_row(X: np.ndarray) -> int:
    """Index of the first row of a 2-D array holding NaN or +-inf, or -1."""
    return scan_keys(X)[0]


#: Arrays of at most this many entries are scanned with numpy (no compiled kernel to load for a short job).
_SMALL_SCAN = SMALL_ENTRIES


def scan_keys(X: np.ndarray) -> tuple[int, float, float]:
    """(first row with NaN/±inf or -1, largest |x|, tiny-column hint) of a 2-D array, one pass, no temporaries.

    The hint is the smallest non-zero column maximum over some range of rows
    (+inf if none): it is >= :data:`MIN_MAGNITUDE` whenever no column of X is
    that small, so only a hint below it needs the exact check of
    :func:`tiny_columns`.  float32/float64 arrays go through one vectorised
    numba pass (:func:`streamlev._kernels.scan_block`), split over the
    library's threads for large arrays; other layouts are scanned in C-ordered
    row chunks.
    """
    if X.size == 0:
        return -1, 0.0, np.inf
    if X.size <= _SMALL_SCAN and X.dtype.kind == "f":  # small: numpy, so that no compiled kernel is loaded
        bad = ~np.isfinite(X)
        if bad.any():
            return int(np.flatnonzero(bad.any(axis=1))[0]), 0.0, np.inf
        cmax = np.max(np.abs(X), axis=0)
        return -1, float(np.max(cmax)), float(np.min(cmax[cmax > 0], initial=np.inf))
    if X.dtype in (np.float32, np.float64):
        from ._kernels import scan_block
        from ._threads import parts_for, split_bounds, split_run

        if X.flags.c_contiguous and X.size < (1 << 18):
            bad, big, small = scan_block(X)
            return int(bad), float(big), float(small)
        if X.flags.c_contiguous:

            def part(a, b):
                return scan_block(X[a:b])

            parts = split_run(part, X.shape[0], parts_for(X.shape[0], max(1, (1 << 18) // max(1, X.shape[1]))))
            top = max(float(big) for _, big, _ in parts)
            small = min(float(sm) for _, _, sm in parts)
            for (bad, _, _), (a, _b) in zip(parts, split_bounds(X.shape[0], len(parts))):
                if bad >= 0:
                    return a + int(bad), top, small
            return -1, top, small
        # Other layouts: scan C-ordered copies of row chunks (bounded temporary memory).
        step = max(1, (1 << 20) // max(1, X.shape[1]))
        top, small = 0.0, np.inf
        for a in range(0, X.shape[0], step):
            bad, big, sm = scan_block(np.ascontiguousarray(X[a : a + step]))
            top, small = max(top, float(big)), min(small, float(sm))
            if bad >= 0:
                return a + int(bad), top, small
        return -1, top, small
    bad = ~np.isfinite(X)
    if bad.any():
        return int(np.flatnonzero(bad.any(axis=tuple(range(1, X.ndim))))[0]), 0.0, np.inf
    cmax = np.max(np.abs(X), axis=0)
    return -1, float(np.max(cmax)), float(np.min(cmax[cmax > 0], initial=np.inf))


#: Smallest column magnitude factorised as given.  A column whose largest |x| is below it (its
#: norm near the subnormal range) makes the column-normalised factor divide by a norm whose
#: reciprocal overflows; in memory such columns are rescaled by exact powers of two (leverage
#: scores do not depend on column scales), in a stream the block is refused.
MIN_MAGNITUDE = 2.0**-1000


def tiny_columns(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, largest |x|) of the non-zero columns of a 2-D array whose largest |x| is below MIN_MAGNITUDE."""
    step = max(1, (1 << 20) // max(1, X.shape[1]))
    cmax = np.zeros(X.shape[1])
    for a in range(0, X.shape[0], step):
        np.maximum(cmax, np.max(np.abs(X[a : a + step]), axis=0), out=cmax)
    cols = np.flatnonzero((cmax > 0) & (cmax < MIN_MAGNITUDE))
    return cols, cmax[cols]


def rescale_tiny_columns(X: np.ndarray) -> np.ndarray:
    """X with every column whose largest |x| is below MIN_MAGNITUDE multiplied by a power of two.

    The factor brings the column's largest |x| into [0.5, 1); multiplying by a
    power of two is exact, so the result is the keys of the same problem up to
    column scaling, to which leverage scores and ℓ_p Lewis weights and
    sensitivities (ridge = 0) are invariant.  X itself is returned when no
    column is that small.
    """
    cols, cmax = tiny_columns(X)
    if cols.size == 0:
        return X
    out = np.array(X, dtype=np.float64, order="C")
    out[:, cols] = np.ldexp(out[:, cols], -np.frexp(cmax)[1])
    return out


class PrecisionWarning(UserWarning):
    """Keys given in extended precision (float128 / longdouble) were rounded to float64."""


def unmasked(K, name: str):
    """The data of a masked array with nothing masked; a masked array with masked entries is refused.

    numpy's conversions drop the mask silently, so masked entries would be read as whatever
    values lie under them.
    """
    if not isinstance(K, np.ma.MaskedArray):
        return K
    masked = int(np.count_nonzero(np.ma.getmaskarray(K)))
    if masked:
        raise ValueError(
            f"{name} is a masked array with {masked} masked entries, which streamlev would read as the "
            f"values under the mask; pass {name}.filled(value) to impute them or "
            f"np.ma.compress_rows({name}) to drop the rows that hold them"
        )
    return np.ma.getdata(K)


def _from_extended(arr: np.ndarray, name: str) -> np.ndarray:
    """Extended precision (float128 / longdouble) rounded to float64: warns when values change."""
    with np.errstate(over="ignore"):
        out = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not np.array_equal(np.isfinite(out), finite):
        raise ValueError(
            f"{name} has dtype {arr.dtype} with values beyond the float64 range (streamlev computes in "
            f"float64); rescale the keys (leverage scores do not change when K is multiplied by a constant)"
        )
    if np.any(out[finite] != arr[finite]):
        import warnings  # noqa: PLC0415

        warnings.warn(
            f"{name} has dtype {arr.dtype}: streamlev computes in float64, so its values were rounded to "
            f"float64; pass {name}.astype(np.float64) to do this knowingly",
            PrecisionWarning,
            stacklevel=4,
        )
    return out


def _convert_dtype(arr: np.ndarray, name: str) -> np.ndarray:
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype in (np.float32, np.float64):
            return arr
        if arr.dtype.itemsize > 8:
            return _from_extended(arr, name)
        return arr.astype(np.float64)  # float16: exact in float64
    if kind in "iub":
        return arr.astype(np.float64)
    if kind == "c":
        raise TypeError(
            f"{name} must be real, got complex dtype {arr.dtype}; "
            f"pass {name}.real (or stack real and imaginary parts as extra columns)"
        )
    raise TypeError(
        f"{name} must hold real numbers, got dtype {arr.dtype}; "
        f"convert it first, e.g. np.asarray({name}, dtype=np.float64)"
    )


def as_keys(
    K,
    *,
    name: str = "K",
    ndim: int = 2,
    dim: int | None = None,
    check_finite: bool = True,
    with_max: bool = False,
    tiny: str = "refuse",
):
    """Check and convert a key matrix (or a stack of them).

    Parameters
    ----------
    K : array_like
        Keys, ``ndim`` dimensions, rows along axis ``-2`` and features along ``-1``.
    name : str
        Name used in error messages.
    ndim : int
        Required number of dimensions (2 for ``(n, d)``; 3 for ``(H, n, d)``).
    dim : int, optional
        Required size of the last axis.
    check_finite : bool
        Refuse NaN and +-inf (naming the first bad row).

    with_max : bool
        Also return the largest |entry| found by the finiteness scan (so that
        callers need no second pass over the block).
    tiny : {"refuse", "rescale"}
        What to do with a non-zero column whose largest |entry| is below
        :data:`MIN_MAGNITUDE` (checked with ``check_finite``): refuse it with
        advice, or (2-D keys of a computation invariant to column scaling, i.e.
        plain leverage scores and ℓ_p weights in memory) return a copy with such
        columns multiplied by exact powers of two (:func:`rescale_tiny_columns`).

    Returns
    -------
    numpy.ndarray, or (numpy.ndarray, float) with ``with_max``
        float32 input stays float32; float64 stays float64; integers, bools
        and other float widths become float64.  The array may be a view of
        the input (never written to) and may be non-contiguous.
    """
    if isinstance(K, (str, bytes)):
        raise TypeError(
            f"{name} must be a numeric array, got a {type(K).__name__}; load the data first (e.g. np.load(path))"
        )
    K = unmasked(K, name)
    try:
        arr = np.asarray(K)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(
            f"{name} could not be converted to an array ({exc}); pass a rectangular numeric array"
        ) from None
    if arr.dtype == object:
        raise TypeError(
            f"{name} has dtype object (ragged rows or mixed types?); "
            f"pass a rectangular numeric array, e.g. np.asarray({name}, dtype=np.float64)"
        )
    if arr.ndim != ndim:
        shape_hint = "(n, d)" if ndim == 2 else "(H, n, d)" if ndim == 3 else f"{ndim}-D"
        extra = ""
        if ndim == 2 and arr.ndim == 1:
            extra = f"; for a single key use {name}.reshape(1, -1), for n scalars {name}.reshape(-1, 1)"
        raise ValueError(
            f"{name} must be a {ndim}-D array of shape {shape_hint}, got {arr.ndim}-D with shape {arr.shape}{extra}"
        )
    arr = _convert_dtype(arr, name)
    d = arr.shape[-1]
    if dim is None and d == 0:
        raise ValueError(f"{name} has d = 0 columns (shape {arr.shape}); keys need at least one feature")
    if dim is not None and d != dim:
        raise ValueError(
            f"number of features of {name} has changed: expected {dim}, got {d} "
            f"(shape {arr.shape}); every block of a stream must have the same dimension"
        )
    top = 0.0
    if check_finite:
        flat = arr.reshape((int(np.prod(arr.shape[:-2])),) + arr.shape[-2:]) if arr.ndim > 2 else arr[None]
        # Stream by stream: a column too small to factorise in one stream of a stack may be large in another.
        scans = ((h,) + scan_keys(flat[h]) for h in range(flat.shape[0] if arr.size else 0))
        for h, bad, big, small in scans:
            top = max(top, big)
            where = f"stream {tuple(int(i) for i in np.unravel_index(h, arr.shape[:-2]))}, " if arr.ndim > 2 else ""
            if bad >= 0:
                raise ValueError(
                    f"{name} contains NaN or infinity in {where}row {bad}; "
                    f"remove or impute non-finite values before computing leverage"
                )
            if big > MAX_MAGNITUDE:
                raise ValueError(
                    f"{name} has an entry of magnitude {big:.3g} > {MAX_MAGNITUDE:g} in {where}"
                    f"rows up to {flat.shape[1] - 1}, too close to the float64 limit to factorise; "
                    f"rescale the keys (leverage scores do not change when K is multiplied by a "
                    f"constant)"
                )
            if small < MIN_MAGNITUDE:
                cols, cmax = tiny_columns(flat[h])
                if cols.size and tiny == "rescale" and arr.ndim == 2:
                    arr = rescale_tiny_columns(arr)
                    top = scan_keys(arr)[1]
                elif cols.size:
                    j, e = int(cols[0]), int(-np.frexp(cmax[0])[1])
                    raise ValueError(
                        f"{name} has {cols.size} non-zero column(s) whose largest magnitude is below "
                        f"{MIN_MAGNITUDE:.3g} (column {j} in {where}rows up to {flat.shape[1] - 1}: {cmax[0]:.3g}), "
                        f"too close to the float64 underflow to factorise here; multiply such columns by a "
                        f"power of two in every block, e.g. np.ldexp({name}[..., {j}], {e}) (plain leverage "
                        f"scores do not change when a column is scaled; streamlev.universal_set and "
                        f"leverage_scores on keys in memory do this themselves)"
                    )
    elif with_max and arr.size:
        top = float(np.max(np.abs(arr)))
    return (arr, top) if with_max else arr


def as_block(X, dim: int, *, name: str = "X", with_max: bool = False):
    """A block of a stream: ``(m, dim)`` or a single row ``(dim,)`` -> 2-D array (and its max |entry|)."""
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{name} must be a numeric array, got a {type(X).__name__}")
    X = unmasked(X, name)
    if isinstance(X, np.ndarray):
        arr = X
    else:
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:  # ragged lists and the like
            raise ValueError(
                f"{name} could not be converted to an array ({exc}); pass a rectangular numeric array"
            ) from None
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    return as_keys(arr, name=name, dim=dim, with_max=with_max)


def check_eps(eps) -> float:
    """Check that eps is a real number in (0, 1]."""
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number in (0, 1], got {type(eps).__name__}")
    e = float(eps)
    if not (0.0 < e <= 1.0) or math.isnan(e):
        raise ValueError(
            f"eps must lie in (0, 1], got {eps!r}; it is the attention threshold, "
            f"e.g. eps=0.01 keeps every key that can receive 1% of some query's attention"
        )
    return e


def check_ridge(ridge) -> float:
    """Check that ridge is a finite real number >= 0."""
    if isinstance(ridge, (bool, np.bool_)) or not isinstance(ridge, numbers.Real):
        raise TypeError(f"ridge must be a real number >= 0, got {type(ridge).__name__}")
    r = float(ridge)
    if not (r >= 0.0) or not math.isfinite(r):
        raise ValueError(
            f"ridge must be a finite number >= 0, got {ridge!r}; "
            f"use ridge=0.0 for plain (pseudo-inverse) leverage scores"
        )
    return r


#: Supported exponents of f(x) = |x|^p.  Above P_MAX the dual certificates of the ℓ_p
#: sensitivities need magnitudes beyond the float64 range (at p = 100 they kept keys whose
#: sensitivity is below 1e-6, tests/test_lewis.py); below P_MIN the Lewis fixed-point iteration,
#: whose rate is 1 - p/2, does not converge in its iteration budget.
P_MIN, P_MAX = 0.1, 64.0


def check_p(p) -> float:
    """Check that p is a real number in [P_MIN, P_MAX] = [0.1, 64]."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a real number in [{P_MIN:g}, {P_MAX:g}], got {type(p).__name__}")
    v = float(p)
    if not (v > 0.0) or not math.isfinite(v):
        raise ValueError(f"p must be a finite number > 0 (f(x) = |x|^p), got {p!r}")
    if not (P_MIN <= v <= P_MAX):
        raise ValueError(
            f"p must lie in [{P_MIN:g}, {P_MAX:g}] (f(x) = |x|^p), got {p:.6g}; outside that range the "
            f"ℓ_p weights and certificates leave the float64 range"
        )
    return v


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """Check an integer parameter such as a dimension or a block size."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v}")
    return v


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def check_factor_memory(dim: int, who: str, *, copies: int = 1) -> None:
    """Refuse a d x d factor (``copies`` of them) larger than this machine's memory, with the alternative.

    The exact sketches keep a d x d float64 triangular factor per stream (and
    d x d scratch while updating); past the machine's memory the allocation would fail
    deep inside numpy, or succeed lazily and fail later.
    """
    need = 8.0 * dim * dim * copies
    have = _physical_memory()
    if have is not None and need > have:
        per = f"{copies} x " if copies > 1 else ""
        raise ValueError(
            f"{who} with dim = {dim} keeps {per}a d x d float64 factor: {_bytes(need)}, more than this machine's "
            f"{_bytes(have)} of memory; use streamlev.ApproxLeverage(dim, eps, ell=..., ridge=...), whose memory "
            f"is about 2·ell x d (ApproxLeverage.suggest picks ell and ridge), or reduce the key dimension"
        )


def check_dim(dim) -> int:
    """Check a key dimension d >= 1."""
    return check_positive_int(dim, "dim")
