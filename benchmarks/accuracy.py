"""Max relative error of streamlev.leverage_scores against the scale-invariant oracle (issue 2's targets).

    python benchmarks/accuracy.py

Oracle: float64 SVD of the column-normalised keys (tests/naive.py). The Gram + Cholesky route is printed
beside it on the same keys, for comparison.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import streamlev  # noqa: E402
from tests import naive  # noqa: E402


def gram(K):
    L = np.linalg.cholesky(K.T @ K)
    return np.sum(np.linalg.solve(L, K.T) ** 2, axis=0)


def rel(a, b):
    """Max relative error over scores above 1e-12 (rows scaled by 1e-150 have scores ~1e-300)."""
    m = b > 1e-12
    return float(np.max(np.abs(a[m] / b[m] - 1)))


def main():
    rng = np.random.default_rng(0)
    K = rng.standard_normal((20000, 12))
    cases = {
        "Gaussian 20000x12 (cond ~1)": (K, naive.leverage(K)),
        "Vandermonde 20000x12 (cond 1.3e8)": (np.vander(np.linspace(0, 1, 20000), 12), None),
        "Gaussian, column scales 1e-6..1e6": (K * np.logspace(-6, 6, 12), naive.leverage(K)),
        "Gaussian, rows x1e150 / x1e-150": (K * np.where(np.arange(20000) % 2, 1e150, 1e-150)[:, None], None),
    }
    print(f"{'keys':<38}{'streamlev':>12}{'Gram+Cholesky':>15}")
    for name, (X, given) in cases.items():
        truth = naive.leverage(X) if given is None else given
        with np.errstate(all="ignore"):
            try:
                g = f"{rel(gram(X), truth):.1e}"
            except np.linalg.LinAlgError:
                g = "fails"
        print(f"{name:<38}{rel(streamlev.leverage_scores(X), truth):>12.1e}{g:>15}")


if __name__ == "__main__":
    main()
