"""streamlev._linalg against the oracles: QR of stacked triangles, triangular inverses, column norms.

The references are numpy's own Householder QR and LU, scipy's triangular solve and tests/naive.py.
"""

import numpy as np
import pytest

from . import naive


@pytest.mark.parametrize("m", [1, 5, 70, 400])
def test_triangular_pentagonal_qr_against_the_oracle(monkeypatch, m):
    """tp_qr_r (LAPACK dtpqrt on [R; B]) gives a triangular factor whose scores are the oracle's, chunked or not."""
    from streamlev import _linalg

    rng = np.random.default_rng(43 + m)
    d = 24
    scales = np.logspace(-6, 6, d)
    A0 = rng.standard_normal((40, d)) * scales
    B = (rng.standard_normal((m, d)) * scales).astype(np.float32 if m == 70 else np.float64)
    R0 = np.linalg.qr(A0, mode="r")  # numpy's own Householder QR, not the library's
    keep = R0.copy()
    K = np.vstack([A0, B.astype(np.float64)])
    for entries in (_linalg.TP_ENTRIES, 7 * d):  # one dtpqrt call, then chunks of 7 rows
        monkeypatch.setattr(_linalg, "TP_ENTRIES", entries)
        R = _linalg.tp_qr_r(R0, B)
        assert R.shape == (d, d) and R.flags.c_contiguous
        np.testing.assert_array_equal(np.tril(R, -1), 0.0)
        np.testing.assert_array_equal(R0, keep)  # the input factor is not modified
        tau = np.sum(np.linalg.solve(R.T, K.T) ** 2, axis=0)
        np.testing.assert_allclose(tau, naive.leverage(K), rtol=1e-8, atol=1e-14)
    # a merge: B triangular itself (trap = d), and a ridge-style diagonal
    R2 = np.linalg.qr(B.astype(np.float64), mode="r") if m >= d else None
    if R2 is not None:
        Rm = _linalg.merge_r(R0, R2)
        np.testing.assert_allclose(np.sum(np.linalg.solve(Rm.T, K.T) ** 2, axis=0), naive.leverage(K), rtol=1e-8)
    lam = 0.3
    Rl = _linalg.tp_qr_r(R0, np.sqrt(lam) * np.eye(d), trap=d)
    np.testing.assert_allclose(
        np.sum(np.linalg.solve(Rl.T, A0.T) ** 2, axis=0), naive.ridge_leverage(A0, lam), rtol=1e-8
    )


# -- small kernels against plain numpy / LAPACK ---------------------------------------------------------
def test_batched_triangular_inverse_and_column_norms():
    import scipy.linalg as sla

    from streamlev._kernels import tri_inv_upper_batched
    from streamlev._linalg import colnorms

    rng = np.random.default_rng(21)
    d = 16
    U = np.stack(
        [
            np.triu(rng.standard_normal((d, d))) + 4 * np.eye(d),
            np.linalg.qr(np.vander(np.linspace(0, 1, 200), d))[1],  # cond ~1e8
            (np.triu(rng.standard_normal((d, d))) + np.eye(d)) * np.logspace(-150, 150, d),
        ]
    )
    inv = tri_inv_upper_batched(np.ascontiguousarray(U))
    for k in range(U.shape[0]):
        ref = sla.solve_triangular(U[k], np.eye(d))
        assert np.all(np.tril(inv[k], -1) == 0)
        # componentwise-accurate triangular inversion: |X - X*| <= c·d·u·|X||U||X| (Higham, ch. 8)
        tol = 64 * d * np.finfo(float).eps * (np.abs(ref) @ np.abs(U[k]) @ np.abs(ref))
        assert np.all(np.abs(inv[k] - ref) <= tol + 1e-300)

    R = rng.standard_normal((4, 7, 5))
    R[1] *= 1e-305  # squares underflow
    R[2] *= 1e250  # squares overflow
    R[3, :, 2] = 0.0  # a zero column
    R[3, 0, 3] = 5e-324  # a denormal alone in its column
    ref = np.array(
        [
            [float(np.sqrt(np.sum((c / np.abs(c).max()) ** 2)) * np.abs(c).max()) if np.any(c) else 0.0 for c in M.T]
            for M in R
        ]
    )
    got = colnorms(R)
    np.testing.assert_allclose(got, ref, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(colnorms(R[0]), got[0])


@pytest.mark.parametrize("shape", [(7, 5), (300, 260), (1000, 300), (256, 256)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fortran_copy_and_upper_triangle_move_values_only(shape, dtype):
    """The copies around LAPACK (tiled kernel from TILED_COPY_MIN_DIM columns, numpy below) equal numpy's, for
    float32 (widened), read-only and strided inputs."""
    from streamlev._linalg import fortran_copy, triu_c

    A = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype)
    want = np.array(A, dtype=np.float64, order="F")
    for src in (A, A[::1], np.asfortranarray(A)):
        got = fortran_copy(src)
        assert got.flags.f_contiguous and got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
    ro = A.copy()
    ro.setflags(write=False)
    np.testing.assert_array_equal(fortran_copy(ro), want)
    np.testing.assert_array_equal(fortran_copy(np.repeat(A, 2, axis=0)[::2]), want)  # strided rows
    S = np.asfortranarray(np.random.default_rng(1).standard_normal((shape[1], shape[1])))
    got = triu_c(S)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, np.triu(S))
