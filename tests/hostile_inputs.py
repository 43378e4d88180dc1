"""The hostile-input catalogue the input tests share: keys and blocks that must be refused or must work,
sketch factories and the oracle checks (not a test module)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from hypothesis import strategies as st

from streamlev import OnlineLeverage
from streamlev.approx import ApproxLeverage
from streamlev.cli import main as cli_main

from . import naive

NAN_MSG = r"NaN or infinity in row {row}.*remove or impute"


def base_keys(n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d))
    K[5] *= 30.0
    K[17, -1] = 40.0
    return K


def oracle(K, ridge=0.0):
    K = np.asarray(K, dtype=np.float64)
    if K.shape[0] == 0:
        return np.zeros(0)
    return naive.leverage(K) if ridge == 0 else naive.ridge_leverage(K, ridge)


def put(K, row, value):
    K = np.array(K, dtype=np.float64)
    K[row, 1] = value
    return K


K0 = base_keys()


D0 = K0.shape[1]


#: (id, make the bad keys, exception, message pattern) - keys handed to a function expecting (n, d)
BAD_KEYS = [
    ("nan", lambda: put(K0, 3, np.nan), ValueError, NAN_MSG.format(row=3)),
    ("+inf", lambda: put(K0, 5, np.inf), ValueError, NAN_MSG.format(row=5)),
    ("-inf", lambda: put(K0, 0, -np.inf), ValueError, NAN_MSG.format(row=0)),
    ("nan-float32", lambda: put(K0, 39, np.nan).astype(np.float32), ValueError, NAN_MSG.format(row=39)),
    ("1-D", lambda: K0[0], ValueError, r"2-D array.*reshape\(1, -1\)"),
    ("3-D", lambda: K0[None], ValueError, r"2-D array of shape \(n, d\), got 3-D"),
    ("0-D", lambda: np.float64(1.0), ValueError, r"2-D array.*got 0-D"),
    ("no-columns", lambda: np.zeros((40, 0)), ValueError, r"d = 0 columns.*at least one feature"),
    ("complex", lambda: K0.astype(np.complex128), TypeError, r"must be real.*\.real"),
    ("complex-zero-imag", lambda: K0 + 0j, TypeError, r"must be real.*\.real"),
    ("object", lambda: K0.astype(object), TypeError, r"dtype object.*np\.asarray"),
    ("unicode", lambda: K0.astype(str), TypeError, r"must hold real numbers.*np\.asarray"),
    ("bytes-dtype", lambda: K0.astype("S8"), TypeError, r"must hold real numbers.*np\.asarray"),
    ("datetime", lambda: np.zeros((40, 4), dtype="datetime64[s]"), TypeError, r"must hold real numbers"),
    ("timedelta", lambda: np.zeros((40, 4), dtype="timedelta64[s]"), TypeError, r"must hold real numbers"),
    ("structured", lambda: np.zeros((40, 4), dtype=[("a", "f8")]), TypeError, r"must hold real numbers"),
    ("python-str", lambda: "keys.npy", TypeError, r"numeric array.*np\.load"),
    ("python-bytes", lambda: b"\x00" * 32, TypeError, r"numeric array"),
    ("None", lambda: None, TypeError, r"dtype object"),
    ("ragged-list", lambda: [[1.0, 2.0], [3.0]], ValueError, r"rectangular numeric array"),
    ("mixed-list", lambda: [[1.0, "a"], [3.0, 4.0]], TypeError, r"must hold real numbers"),
]


#: (id, make the keys) - unusual but valid keys: the result must equal the oracle's
WIDE = base_keys(80, 8, seed=3)


RO = K0.copy()


GOOD_KEYS = [
    ("noncontiguous-rows", lambda: base_keys(80, 4, seed=1)[::2]),
    ("noncontiguous-cols", lambda: WIDE[:, ::2]),
    ("negative-strides", lambda: K0[::-1, ::-1]),
    ("fortran-order", lambda: np.asfortranarray(K0)),
    ("transposed-view", lambda: np.ascontiguousarray(K0.T).T),
    ("read-only", lambda: RO),
    ("read-only-noncontiguous", lambda: RO[::3]),
    ("float32", lambda: K0.astype(np.float32)),
    ("float16", lambda: K0.astype(np.float16)),
    ("longdouble", lambda: K0.astype(np.longdouble)),
    ("int64", lambda: np.round(K0 * 10).astype(np.int64)),
    ("uint8", lambda: (np.abs(K0) * 7).astype(np.uint8)),
    ("bool", lambda: K0 > 0.3),
    ("big-endian", lambda: K0.astype(">f8")),
    ("list-of-lists", K0.tolist),
    ("empty", lambda: np.zeros((0, 4))),
    ("one-row", lambda: K0[:1]),
    ("all-zero", lambda: np.zeros((12, 4))),
    ("fewer-rows-than-columns", lambda: WIDE[:3]),
]


def _snapshot(*arrays):
    return [np.array(a, copy=True) if isinstance(a, np.ndarray) else None for a in arrays]


def make_sketch(kind, d=D0, eps=0.1, ridge=0.0, start=0):
    if kind == "online":
        return OnlineLeverage(d, eps, ridge=ridge, start=start)
    return ApproxLeverage(d, eps, ell=d, ridge=max(ridge, 1.0), start=start)  # ell = d: exact (c = 1)


def check_sketch_against_oracle(sk, K, ids=None):
    K = np.asarray(K, dtype=np.float64)
    ids = np.arange(K.shape[0]) if ids is None else np.asarray(ids)
    if isinstance(sk, OnlineLeverage):
        tau = oracle(K, sk.ridge)
        U = sk.universal_set()
        must = ids[tau >= sk.eps * (1 + 1e-8)]
        may = ids[tau >= sk.eps * (1 - 1e-8)]
    else:
        tau = oracle(K, sk.ridge)
        U = sk.universal_set()
        must = ids[tau >= sk.eps * (1 + 1e-8)]
        may = ids[tau >= sk.eps / sk.c * (1 - 1e-8)]
    assert np.setdiff1d(must, U).size == 0, f"missing {np.setdiff1d(must, U)}"
    assert np.setdiff1d(U, may).size == 0, f"extra {np.setdiff1d(U, may)}"
    assert sk.n_seen == K.shape[0]


def _write_npy_cases(tmp):
    """name -> (path, expectation): expectation is an array (works) or (exception, pattern)."""
    K = base_keys(100, 4, seed=5)
    out = {}

    def save(name, arr, **kw):
        p = tmp / name
        np.save(p, arr, **kw)
        return p

    out["c-order"] = (save("c.npy", K), K)
    out["fortran-order"] = (save("f.npy", np.asfortranarray(K)), K)
    out["float32"] = (save("f32.npy", K.astype(np.float32)), K.astype(np.float32))
    out["int16"] = (save("i16.npy", (K * 100).astype(np.int16)), (K * 100).astype(np.int16))
    out["empty"] = (save("empty.npy", np.zeros((0, 4))), np.zeros((0, 4)))
    out["str-path"] = (str(out["c-order"][0]), K)
    raw = out["c-order"][0].read_bytes()
    trunc = tmp / "trunc.npy"
    trunc.write_bytes(raw[:-100])
    out["truncated-data"] = (trunc, (ValueError, r"truncated.*re-create the file"))
    trunc_h = tmp / "trunch.npy"
    trunc_h.write_bytes(raw[:40])
    out["truncated-header"] = (trunc_h, (ValueError, r"corrupt \.npy header|truncated|not a \.npy"))
    text = tmp / "text.npy"
    text.write_text("1.0,2.0,3.0,4.0\n5,6,7,8\n")
    out["text-named-npy"] = (text, (ValueError, r"not a \.npy file.*np\.save"))
    empty_file = tmp / "zero.npy"
    empty_file.write_bytes(b"")
    out["zero-byte-file"] = (empty_file, (ValueError, r"not a \.npy file"))
    d = tmp / "dir.npy"
    d.mkdir()
    out["directory"] = (d, (IsADirectoryError, r"is a directory.*pass a \.npy"))
    out["missing"] = (tmp / "missing.npy", (FileNotFoundError, r"no such file.*check the path"))
    out["object-pickle"] = (
        save("obj.npy", K.astype(object), allow_pickle=True),
        (TypeError, r"Python objects.*save a numeric array"),
    )
    out["complex"] = (save("cplx.npy", K + 1j), (TypeError, r"must be real"))
    out["unicode"] = (save("u.npy", K.astype(str)), (TypeError, r"must hold real numbers"))
    out["1-D"] = (save("one.npy", K[:, 0]), (ValueError, r"shape \(100,\).*reshape"))
    out["3-D"] = (save("three.npy", K[None]), (ValueError, r"shape \(1, 100, 4\).*2-D"))
    Kn = K.copy()
    Kn[70, 2] = np.nan
    out["nan-row-70"] = (save("nan.npy", Kn), (ValueError, r"NaN or infinity in row 70.*remove or impute"))
    bad_hdr = bytearray(raw)
    bad_hdr[12:20] = b"@@@@@@@@"
    p = tmp / "badhdr.npy"
    p.write_bytes(bytes(bad_hdr))
    out["corrupt-header"] = (p, (ValueError, r"corrupt \.npy header"))
    return out


def _blocks_of(K, sizes):
    a = 0
    for s in sizes:
        yield K[a : a + s]
        a += s


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # argparse errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _vandermonde(rng, n, d):
    t = np.sort(rng.uniform(0.0, 1.0, size=n))
    return np.vander(t, d)


def _cond_scaled(K):
    Kn = naive.column_normalise(K)
    S = np.linalg.svd(Kn, compute_uv=False)
    return S[0] / S[-1] if S[-1] > 0 else np.inf


@st.composite
def adversarial(draw):
    """(name, K, ridge, rtol): keys of one adversarial kind, and the tie band for the comparison."""
    kind = draw(
        st.sampled_from(
            [
                "vandermonde",
                "column-scales",
                "rows-1e150",
                "rows-1e-150",
                "mixed-1e150",
                "rank-grows",
                "duplicates",
                "zero-blocks",
                "heavy-first",
                "heavy-last",
                "rare-direction-late",
            ]
        )
    )
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    d = draw(st.integers(2, 7))
    n = draw(st.integers(d, 90))
    K = rng.standard_normal((n, d))
    rtol = 1e-8
    if kind == "vandermonde":
        d = draw(st.integers(9, 15))
        n = draw(st.integers(3 * d, 120))
        K = _vandermonde(rng, n, d)
        # tie band: scores are QR-accurate to a few times cond * unit roundoff (measured 2.8e-8 at
        # cond 1.05e8, 3e-5 at cond 1.7e10; about 4e-8 at cond 1.3e8)
        rtol = max(1e-8, 1e-14 * _cond_scaled(K))
    elif kind == "column-scales":
        K *= 10.0 ** rng.uniform(-8, 8, size=d)
    elif kind == "rows-1e150":
        K *= 1e150
    elif kind == "rows-1e-150":
        K *= 1e-150
    elif kind == "mixed-1e150":  # individual rows scaled by 1e+150 or 1e-150
        s = rng.choice([1e150, 1e-150, 1.0], size=n)
        K *= s[:, None]
    elif kind == "rank-grows":  # rank 1, then 2, ... then full: each block adds one direction
        r = np.minimum(np.arange(n) * d // n + 1, d)
        K = np.where(np.arange(d)[None, :] < r[:, None], K, 0.0) @ rng.standard_normal((d, d))
    elif kind == "duplicates":
        K = K[rng.integers(0, max(1, n // 3), size=n)]
    elif kind == "zero-blocks":
        K[rng.random(n) < 0.5] = 0.0
        K[: n // 3] = 0.0  # a leading all-zero stretch
    elif kind == "heavy-first":
        K[:d] *= 1e4
    elif kind == "heavy-last":
        K[-d:] *= 1e4
    elif kind == "rare-direction-late":
        K[:, -1] = 0.0
        K[-1, -1] = 1e-3  # the only row with a last coordinate arrives last
    ridge = draw(st.sampled_from([0.0, 0.0, 0.3])) if kind not in ("rows-1e150", "rows-1e-150", "mixed-1e150") else 0.0
    if kind == "vandermonde" or kind == "column-scales":
        ridge = 0.0  # ridge is not scale-invariant: column scales would make it trivial
    return kind, K, ridge, rtol


def _oracle_scaled(K, ridge):
    """Oracle scores; for ridge = 0 each column is first scaled by an exact power of two.

    τ is invariant under column scaling, and scaling by 2^-e is exact, so this only keeps
    the oracle's own sums of squares (column norms) inside the float64 range for keys of
    magnitude up to 1e±308.
    """
    K = np.asarray(K, dtype=np.float64)
    if ridge == 0 and K.size:
        colmax = np.abs(K).max(axis=0)
        e = np.where(colmax > 0, np.frexp(np.where(colmax > 0, colmax, 1.0))[1], 0)
        K = np.ldexp(K, -e[None, :])
    return oracle(K, ridge)


def _random_sizes(rng, n):
    sizes, left = [], n
    while left:
        s = int(min(left, rng.integers(0, 25)))
        sizes.append(s)
        left -= s
    return sizes


# .npy files that every reader (the CLI, two_pass_universal_set) must refuse in one line.
BAD_NPY = [
    "truncated-data",
    "truncated-header",
    "text-named-npy",
    "zero-byte-file",
    "directory",
    "missing",
    "object-pickle",
    "complex",
    "unicode",
    "1-D",
    "3-D",
    "nan-row-70",
    "corrupt-header",
]
