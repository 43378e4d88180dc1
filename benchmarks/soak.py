"""Soak test (not CI): a very long stream through one OnlineLeverage, checked against independent arithmetic.

Usage::

    python benchmarks/soak.py                 # 10^8 rows of d = 32 (several minutes)
    python benchmarks/soak.py --quick         # 10^6 rows
    python benchmarks/soak.py --rows 10000000 # 10^7 rows
    python benchmarks/soak.py --rows 1000000 --set-check-max 0   # set check at the end only

The stream
----------
Block b (``--block`` rows) is drawn from ``numpy.random.default_rng([seed, b])``,
so any prefix can be regenerated exactly and blocks do not depend on each other.
Keys are Gaussian with column scales 10^-3 .. 10^3 (raw condition ~10^6), a few
outlier rows (x10^4), one "rare" channel that is non-zero in only one row per
``--rare-every`` rows (so those rows keep leverage ~ rare_every / n, i.e. stay in
the universal set as n grows), and one channel active only in the first block
(heavy keys arriving first).

What is checked, at geometrically spaced checkpoints (and at the end)
----------------------------------------------------------------------
1. Factor drift against a fresh, independent QR.  Alongside the sketch, the
   same blocks go into an independent tree TSQR built from ``numpy.linalg.qr``
   (pairwise reduction of per-block R factors: a different algorithm and a
   different rounding order from the sketch's sequential ``[R; B]`` updates).
   Drift = max |C(R_sketch) - C(R_fresh)| where C(R) = D⁻¹RᵀRD⁻¹ with
   D = sqrt(diag RᵀR) (the scale-free Gram, so column scales do not hide or
   inflate errors).  Also reported: the same quantity against a Gram matrix
   summed blockwise in float64 (a third, cruder reference).
2. Universal set against an exact second pass.  At each checkpoint with
   ``--set-check-max`` rows (default 10^6) and at the final one,
   the prefix is regenerated and every row is scored against R_fresh with
   scipy's triangular solve; the set {τ >= eps} must equal
   ``sketch.universal_set()`` except for keys whose fresh score is within 1e-8
   relative of eps (counted and reported as ties).
3. Memory: resident set size (``/proc/self/statm``) and ru_maxrss are sampled
   every ~2 % of the stream; the sketch's ``nbytes`` and ``n_candidates`` too.
   RSS must stay flat: the script reports the RSS growth between 10 % of the
   stream and the end.

Nothing here is timed against a target; throughput is printed for orientation.  The JSON record
(``benchmarks/results/soak.json``) holds one row per checkpoint and the RSS samples.  ``--dim`` is
fixed at 32 and ``--repeats`` is not used (one pass).
"""

from __future__ import annotations

import os
import resource
import sys
import time

import _common
import numpy as np
from scipy.linalg import solve_triangular

from streamlev import OnlineLeverage, serialize

D = 32
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_block(seed: int, b: int, size: int, rare_every: int) -> np.ndarray:
    """Block b of the stream (rows b*size .. b*size + size - 1), regenerable on its own."""
    rng = np.random.default_rng([seed, b])
    X = rng.standard_normal((size, D))
    X *= np.logspace(-3, 3, D)
    # outlier rows
    out = rng.random(size) < 1e-4
    X[out] *= 1e4
    # rare channel D-1: one row per rare_every rows (global row index multiple of rare_every)
    X[:, D - 1] = 0.0
    g0 = b * size
    first = (-g0) % rare_every
    X[first::rare_every, D - 1] = rng.standard_normal(len(range(first, size, rare_every)))
    # channel D-2 active in the first block only (heavy keys first)
    if b > 0:
        X[:, D - 2] = 0.0
    return X


class TreeQR:
    """Independent TSQR: per-block numpy QR, then pairwise reduction (binary-counter tree)."""

    def __init__(self):
        self.levels: list[np.ndarray | None] = []

    def add(self, X: np.ndarray) -> None:
        R = np.linalg.qr(X, mode="r")
        lvl = 0
        while True:
            if lvl == len(self.levels):
                self.levels.append(None)
            if self.levels[lvl] is None:
                self.levels[lvl] = R
                return
            R = np.linalg.qr(np.vstack([self.levels[lvl], R]), mode="r")
            self.levels[lvl] = None
            lvl += 1

    def R(self) -> np.ndarray:
        parts = [r for r in self.levels if r is not None]
        R = parts[0] if len(parts) == 1 else np.linalg.qr(np.vstack(parts), mode="r")
        return R


def scaled_gram(RtR: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(RtR))
    return RtR / np.outer(d, d)


def gram_of(R: np.ndarray) -> np.ndarray:
    # R has entries up to ~1e3 * sqrt(n) ~ 1e7: RᵀR ~ 1e14, far from overflow.
    return R.T @ R


def exact_set(seed, n_blocks, size, rare_every, R_fresh, eps):
    """Second pass: scores of every row of the regenerated prefix against R_fresh."""
    found, ties = [], 0
    for b in range(n_blocks):
        X = make_block(seed, b, size, rare_every)
        Y = solve_triangular(R_fresh, X.T, trans="T", lower=False, check_finite=False)
        t = np.einsum("ij,ij->j", Y, Y)
        found.append(np.flatnonzero(t >= eps) + b * size)
        ties += int(np.count_nonzero(np.abs(t - eps) <= 1e-8 * eps))
    return np.concatenate(found), ties


def main(argv=None):
    ap = _common.parser(__doc__.splitlines()[0], dim=D, rows=10**8, repeats=1)
    ap.add_argument("--block", type=int, default=65536)
    ap.add_argument("--eps", type=float, default=0.005)
    ap.add_argument("--rare-every", type=int, default=10**6)
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument(
        "--set-check-max",
        type=int,
        default=10**6,
        help="run the exact second-pass set check at checkpoints up to this many rows (and always at the end)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.rows = [10**6]
    if args.dim != [D]:
        ap.error(f"the soak stream has d = {D} (its channels are laid out for it)")

    size = args.block
    n_blocks = -(-args.rows[0] // size)
    n = n_blocks * size
    checkpoints = sorted(
        {min(n_blocks, int(round(10 ** (k / 2) / size)) or 1) for k in range(8, 40) if 10 ** (k / 2) <= n} | {n_blocks}
    )
    samples = sorted(set(np.linspace(1, n_blocks, 51).astype(int).tolist()))
    print(
        f"soak: {n:,} rows of d = {D} in {n_blocks:,} blocks of {size:,}; eps = {args.eps}, "
        f"rare channel every {args.rare_every:,} rows, seed {args.seed}"
    )
    print(f"numpy {np.__version__}, pid {os.getpid()}")

    sk = OnlineLeverage(D, args.eps)
    tree = TreeQR()
    gram = np.zeros((D, D))
    rss_log = []
    t0 = time.perf_counter()
    t_sketch = 0.0
    rss0 = rss_bytes()
    hdr = (
        f"{'rows':>13} {'|U|':>5} {'cands':>6} {'drift vs QR':>11} {'drift vs Gram':>13} "
        f"{'set check':>22} {'RSS MiB':>8} {'maxRSS MiB':>10} {'rows/s (sketch)':>15}"
    )
    print(hdr)
    ok = True
    results = []
    for b in range(n_blocks):
        X = make_block(args.seed, b, size, args.rare_every)
        ts = time.perf_counter()
        sk.update(X)
        t_sketch += time.perf_counter() - ts
        tree.add(X)
        gram += X.T @ X
        if (b + 1) in samples:
            rss_log.append(((b + 1) * size, rss_bytes(), maxrss_bytes(), sk.n_candidates, sk.nbytes))
        if (b + 1) in checkpoints:
            rows = (b + 1) * size
            U = sk.universal_set()
            Rs = serialize.unpack(sk.to_bytes(), "OnlineLeverage")[1]["R"]  # the factor, from the byte format
            Rf = tree.R()
            Cs = scaled_gram(gram_of(Rs))
            drift_qr = float(np.abs(Cs - scaled_gram(gram_of(Rf))).max())
            drift_gram = float(np.abs(Cs - scaled_gram(gram)).max())
            check = "-"
            if rows <= args.set_check_max or b + 1 == n_blocks:
                E, ties = exact_set(args.seed, b + 1, size, args.rare_every, Rf, args.eps)
                miss = np.setdiff1d(E, U).size
                extra = np.setdiff1d(U, E).size
                good = (miss + extra) <= ties
                ok &= good
                check = f"{'OK' if good else 'FAIL'} miss {miss} extra {extra} ties {ties}"
            rate = rows / t_sketch if t_sketch else float("nan")
            print(
                f"{rows:>13,} {U.size:>5} {sk.n_candidates:>6} {drift_qr:>11.2e} {drift_gram:>13.2e} "
                f"{check:>22} {rss_bytes() / 2**20:>8.1f} {maxrss_bytes() / 2**20:>10.1f} {rate:>15,.0f}"
            )
            sys.stdout.flush()
            results.append(
                dict(
                    table="checkpoints",
                    rows=rows,
                    size=U.size,
                    candidates=sk.n_candidates,
                    drift_vs_qr=drift_qr,
                    drift_vs_gram=drift_gram,
                    set_check=check,
                    rss_bytes=rss_bytes(),
                    max_rss_bytes=maxrss_bytes(),
                    rows_per_s=rate,
                )
            )
    elapsed = time.perf_counter() - t0
    print(
        f"total wall time {elapsed:.1f} s (sketch updates {t_sketch:.1f} s, "
        f"{n / t_sketch:,.0f} rows/s; the rest is generation, the independent QR and the set checks)"
    )
    print("RSS over time (rows, RSS MiB, maxRSS MiB, candidates, sketch nbytes):")
    for rows, r, m, c, nb in rss_log[:: max(1, len(rss_log) // 10)] + [rss_log[-1]]:
        print(f"  {rows:>13,} {r / 2**20:8.1f} {m / 2**20:8.1f} {c:6d} {nb:9,d}")
    tenth = next(r for rows, r, *_ in rss_log if rows >= n // 10)
    rss_end = rss_log[-1][1]
    print(
        f"RSS at start {rss0 / 2**20:.1f} MiB, at 10% {tenth / 2**20:.1f} MiB, at end {rss_end / 2**20:.1f} MiB "
        f"(growth after 10%: {(rss_end - tenth) / 2**20:+.1f} MiB); "
        f"max sketch nbytes {max(x[4] for x in rss_log):,}"
    )
    print("RESULT:", "all set checks passed" if ok else "SET CHECK FAILED")
    results += [
        dict(table="RSS over time", rows=rows, rss_bytes=r, max_rss_bytes=m, candidates=c, sketch_bytes=nb)
        for rows, r, m, c, nb in rss_log
    ]
    targets = [
        dict(name="every set check equals an exact second pass", measured=ok, target="true", met=ok, unit=""),
        dict(
            name="RSS growth after the first 10% of the stream",
            measured=(rss_end - tenth) / 2**20,
            target="flat",
            met=None,
            unit="MiB",
        ),
    ]
    _common.write_record("soak", args, results, targets)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
