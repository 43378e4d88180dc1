"""The ``streamlev`` command line.

``streamlev demo`` runs the main job on the bundled default input.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main"]


class UsageError(Exception):
    """Bad command-line input: reported in one line with exit status 2."""


def _builtin_keys(n: int = 100_000, d: int = 32, seed: int = 0) -> np.ndarray:
    """A deterministic synthetic key stream with the structure of real keys.

    Gaussian keys with a few outlier channels (x1000) and a handful of rare
    directions carried by only a few rows: those rows are the heavy keys.
    """
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d)).astype(np.float32)
    K[:, :2] *= 1000.0  # outlier channels, as in real attention keys
    rare = rng.choice(n, size=8, replace=False)
    K[:, -4:] *= 1e-3
    K[rare, -4:] = rng.standard_normal((8, 4)).astype(np.float32) * 50
    return K


def _cmd_demo(args) -> int:
    from .exact import leverage_scores
    from ._factor import at_least

    K = _builtin_keys()
    n, d = K.shape
    eps = args.eps
    t0 = time.perf_counter()
    tau = leverage_scores(K)
    U = np.flatnonzero(at_least(tau, eps))
    dt = time.perf_counter() - t0
    print(f"streamlev demo: built-in synthetic keys, n={n:,}, d={d}, float32, eps={eps:g}")
    print(f"universal set: {U.size} keys (bound rank/eps = {int(d / eps):,}); sum of scores = {tau.sum():.6f} (= rank)")
    print(f"heaviest keys: {', '.join(f'{i} (tau={tau[i]:.3f})' for i in U[np.argsort(-tau[U])][:8])}")
    print(f"time: {dt:.3f} s ({n / dt:,.0f} rows/s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``streamlev`` command."""
    p = argparse.ArgumentParser(prog="streamlev", description="Heavy keys of attention in a stream.")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job on the bundled default input")
    demo.add_argument("--eps", type=float, default=0.01, help="attention threshold in (0, 1] (default 0.01)")
    demo.set_defaults(func=_cmd_demo)
    return p


def main(argv=None) -> int:
    """Entry point of the ``streamlev`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, TypeError, OSError) as exc:
        print(f"streamlev: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
