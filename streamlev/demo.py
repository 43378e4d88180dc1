"""``streamlev demo``: the main job on the bundled default input.

The default input is the real attention data shipped with the package
(:func:`streamlev.datasets.load_minilm_keys`): the keys and queries that
all-MiniLM-L6-v2 computes in each of its 6 layers x 12 heads for one
512-token passage of real English text.  For every layer the 12 heads are
streamed through one :class:`streamlev.MultiHeadLeverage` in blocks of tokens;
the demo prints, per layer and head, the size of the ε-universal set against
the bound d/ε, the sketch's memory, a check against the in-memory exact set, and
the guarantee on the model's own queries: with f(x) = x² attention, no key
left out of the set receives attention >= ε from any query.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["run_demo"]


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB"):
        if b < 1024:
            return f"{b:.0f} {unit}"
        b /= 1024
    return f"{b:.1f} GB"


def run_demo(eps: float = 0.1, block: int = 64, out=print) -> dict:
    """Run the demo and print its report; return the numbers it printed.

    Parameters
    ----------
    eps : float
        Attention threshold in (0, 1].
    block : int
        Tokens per streamed block.
    out : callable
        Where lines go (``print`` by default).

    Returns
    -------
    dict
        ``sizes`` (layers x heads universal-set sizes), ``bound`` (d/eps),
        ``max_excluded`` (largest x²-attention any real query puts on an
        excluded key, per layer), ``seconds``.
    """
    from ._factor import at_least
    from ._validate import check_eps, check_positive_int
    from .datasets import load_minilm_keys
    from .exact import leverage_scores
    from .online import MultiHeadLeverage

    eps = check_eps(eps)
    block = check_positive_int(block, "block")
    sample = load_minilm_keys()
    L, H, n, d = sample.K.shape
    src = sample.provenance.get("source", {}).get("path", "bundled text")
    out(f"streamlev demo: real attention keys of {sample.provenance.get('model', 'MiniLM')}")
    out(f"  {n} tokens of {src}, {L} layers x {H} heads, head dim {d} (bundled sample, float16)")
    out(
        f"  eps = {eps:g}: every key that any query can give >= eps of its x^2-attention is kept;"
        f" bound |U| <= d/eps = {d / eps:.0f}"
    )
    out(f"  streamed in blocks of {block} tokens through MultiHeadLeverage({H} heads)\n")
    out(
        f"{'layer':>5}  {'|U| per head (h0..h' + str(H - 1) + ')':<{4 * H + 2}}{'mean':>6}{'max':>5}"
        f"{'bound':>7}{'sketch mem':>12}{'exact':>7}{'max A on excluded':>19}"
    )
    sizes = np.zeros((L, H), dtype=int)
    max_excl = np.zeros(L)
    t0 = time.perf_counter()
    peak_mem = 0
    for layer in range(L):
        K = sample.K[layer].astype(np.float32)
        mh = MultiHeadLeverage(H, d, eps)
        mem = 0
        for a in range(0, n, block):
            mh.update(K[:, a : a + block])
            mem = max(mem, mh.nbytes)
        U = mh.universal_set()
        peak_mem = max(peak_mem, mem)
        exact_ok = True
        worst = 0.0
        for h in range(H):
            sizes[layer, h] = U[h].size
            tau = leverage_scores(K[h])
            exact_ok &= np.array_equal(U[h], np.flatnonzero(at_least(tau, eps)))
            Q = sample.Q[layer, h].astype(np.float64)
            S = (Q @ K[h].astype(np.float64).T) ** 2
            A = S / S.sum(axis=1, keepdims=True)
            excluded = np.setdiff1d(np.arange(n), U[h])
            if excluded.size:
                worst = max(worst, float(A[:, excluded].max()))
        max_excl[layer] = worst
        row = " ".join(f"{s:>3}" for s in sizes[layer])
        out(
            f"{layer:>5}  {row:<{4 * H + 2}}{sizes[layer].mean():>6.1f}{sizes[layer].max():>5}{d / eps:>7.0f}"
            f"{_fmt_bytes(mem):>12}{'yes' if exact_ok else 'NO':>7}{worst:>19.4f}"
        )
    dt = time.perf_counter() - t0
    out(
        f"\nall {L * H} heads: mean |U| = {sizes.mean():.1f} of {n} tokens "
        f"({100 * sizes.mean() / n:.1f}%), max {sizes.max()} (bound {d / eps:.0f}); "
        f"peak sketch memory per layer {_fmt_bytes(peak_mem)} vs {_fmt_bytes(H * n * d * 4)} of keys"
    )
    out(
        "  (on a 512-token passage the sketch is about as large as the keys; it stops growing once the stream "
        "is longer than ~d/eps rows, while the keys keep growing — see benchmarks/run.py for 10^7 rows)"
    )
    ok = bool((max_excl < eps).all())
    out(
        f"guarantee on the model's own queries: largest x^2-attention on an excluded key = "
        f"{max_excl.max():.4f} {'<' if ok else '>='} eps = {eps:g}"
    )
    out(f"time: {dt:.2f} s")
    return {"sizes": sizes, "bound": d / eps, "max_excluded": max_excl, "seconds": dt}
