"""Max relative error of streamlev.leverage_scores against the scale-invariant oracle, with Gram + Cholesky beside it.

    python benchmarks/accuracy.py            # 20,000 rows, d = 12
    python benchmarks/accuracy.py --quick    # 5,000 rows

Oracle: float64 SVD of the column-normalised keys with NumPy's matrix_rank tolerance (the same rule as the
test suite's independent oracle).  The Gram + Cholesky route is printed beside it on the same keys, for
comparison: it squares the condition number.  The JSON record goes to ``benchmarks/results/accuracy.json``;
its targets are the tested accuracy bounds (1e-8 on well-conditioned keys, 1e-6 at condition number 1e8,
for column scales 1e-6..1e6 and for magnitudes 1e±150).
"""

import _common
import numpy as np

import streamlev


def oracle(K):
    """τ from the SVD of the column-normalised keys (matrix_rank tolerance)."""
    K = np.asarray(K, dtype=np.float64)
    Kn = K / np.linalg.norm(K, axis=0)
    U, S, _ = np.linalg.svd(Kn, full_matrices=False)
    r = int(np.sum(S > S[0] * max(K.shape) * np.finfo(np.float64).eps))
    return np.sum(U[:, :r] ** 2, axis=1)


def gram(K):
    L = np.linalg.cholesky(K.T @ K)
    return np.sum(np.linalg.solve(L, K.T) ** 2, axis=0)


def rel(a, b):
    """Max relative error over scores above 1e-12 (rows scaled by 1e-150 have scores ~1e-300)."""
    m = b > 1e-12
    return float(np.max(np.abs(a[m] / b[m] - 1)))


def main(argv=None):
    ap = _common.parser(__doc__.split("\n")[0], dim=12, rows=20_000, repeats=1)
    args = ap.parse_args(argv)
    n, d = (5_000 if args.quick else args.rows[0]), args.dim[0]
    rng = np.random.default_rng(0)
    K = rng.standard_normal((n, d))
    cases = {
        f"Gaussian {n}x{d} (cond ~1)": (K, 1e-8),
        f"Vandermonde {n}x{d}": (np.vander(np.linspace(0, 1, n), d), 1e-6),
        "Gaussian, column scales 1e-6..1e6": (K * np.logspace(-6, 6, d), 1e-6),
        "Gaussian, rows x1e150 / x1e-150": (K * np.where(np.arange(n) % 2, 1e150, 1e-150)[:, None], 1e-6),
    }
    print(f"{'keys':<38}{'cond':>10}{'streamlev':>12}{'Gram+Cholesky':>15}")
    results, targets = [], []
    for name, (X, bound) in cases.items():
        truth = oracle(X)
        with np.errstate(all="ignore"):
            try:
                g = rel(gram(X), truth)
            except np.linalg.LinAlgError:
                g = None
        cond = float(np.linalg.cond(X / np.linalg.norm(X, axis=0)))
        err = rel(streamlev.leverage_scores(X), truth)
        print(f"{name:<38}{cond:>10.1e}{err:>12.1e}{'fails' if g is None else f'{g:.1e}':>15}")
        results.append(dict(keys=name, cond_column_normalised=cond, streamlev_max_rel_err=err, gram_max_rel_err=g))
        targets.append(
            dict(name=f"relative score error, {name}", measured=err, target=f"<= {bound:g}", met=err <= bound, unit="")
        )
    _common.write_record("accuracy", args, results, targets)


if __name__ == "__main__":
    main()
