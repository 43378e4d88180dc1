"""Hypothesis strategies for key matrices, including the adversarial kinds real keys have."""

import numpy as np
from hypothesis import strategies as st

KINDS = (
    "gaussian",
    "rank_deficient",
    "duplicates",
    "zero_rows",
    "outlier_rows",
    "outlier_channels",
    "vandermonde",
    "heavy_first",
    "heavy_last",
)


@st.composite
def key_matrices(draw, *, min_n=1, max_n=80, min_d=1, max_d=8, kinds=KINDS, float32=True):
    """Draw an (n, d) key matrix of one of several structured kinds (seeded numpy generation)."""
    kind = draw(st.sampled_from(kinds))
    d = draw(st.integers(min_d, max_d))
    n = draw(st.integers(max(min_n, 1), max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d))
    if kind == "rank_deficient" and d > 1:
        r = draw(st.integers(1, d - 1))
        K = rng.standard_normal((n, r)) @ rng.standard_normal((r, d))
    elif kind == "duplicates":
        idx = rng.integers(0, max(1, n // 2), size=n)
        K = K[idx]
    elif kind == "zero_rows":
        K[rng.random(n) < 0.4] = 0.0
    elif kind == "outlier_rows":
        K[rng.random(n) < 0.1] *= 10.0 ** draw(st.integers(2, 6))
    elif kind == "outlier_channels":
        K *= 10.0 ** rng.uniform(-6, 6, size=d)
    elif kind == "vandermonde":
        t = np.sort(rng.uniform(0, 1, size=n))
        K = np.vander(t, d)
    elif kind == "heavy_first":
        K[: min(n, d)] *= 1e3
    elif kind == "heavy_last":
        K[-min(n, d) :] *= 1e3
    if float32 and draw(st.booleans()) and kind not in ("vandermonde",):
        K = K.astype(np.float32)
    return K


eps_values = st.sampled_from([1.0, 0.5, 0.2, 0.1, 0.05, 0.01, 1e-3])


#: Scales at the edges of the float64 range: subnormal, near the underflow, large.
HOSTILE_SCALES = (2.0**-1070, 1e-310, 1e-300, 1e-200, 1e-150, 1e150, 1e200)


@st.composite
def hostile_keys(draw, *, max_n=60, max_d=6):
    """(K, how): a structured key matrix with its whole, one column, or one row scaled to the edge of
    the float range, or every column by its own scale.  Whole and column scales leave plain leverage
    scores unchanged; a row scale changes them (compare with the oracle on K itself)."""
    K = draw(key_matrices(min_n=1, max_n=max_n, min_d=1, max_d=max_d, float32=False))
    n, d = K.shape
    how = draw(st.sampled_from(["whole", "column", "row", "columns"]))
    s = draw(st.sampled_from(HOSTILE_SCALES))
    if how == "whole":
        K = K * s
    elif how == "column":
        K[:, draw(st.integers(0, d - 1))] *= s
    elif how == "row":
        K[draw(st.integers(0, n - 1))] *= s
    else:
        K = K * np.array(draw(st.lists(st.sampled_from((1.0,) + HOSTILE_SCALES), min_size=d, max_size=d)))
    return K, f"{how} x {s:g}"


def short_wide_keys(kind, n, d, seed, *, combo_row, duplicates=(), near=1e-9):
    """n < d keys of one kind: "gauss", "scaled" (columns 1e-150..1e150), "float32", "dependent" (row
    ``combo_row`` = 2·row 5 − row 9, and each ``(dst, src)`` of ``duplicates`` a copy) or "near" (the last
    row within ``near`` of the first: independent, too close to certify)."""
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d))
    if kind == "scaled":
        K *= np.logspace(-150, 150, d)
    elif kind == "float32":
        K = K.astype(np.float32)
    elif kind == "dependent":
        K[combo_row] = 2.0 * K[5] - K[9]
        for dst, src in duplicates:
            K[dst] = K[src]
    elif kind == "near":
        K[-1] = K[0] + near * rng.standard_normal(d)
    return K
