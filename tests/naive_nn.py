"""Dense numpy oracles for streamlev.nn, written without torch or any streamlev.nn code.

Everything here is float64 numpy and deliberately literal: per example and
head, score the keys, sort, keep the top k, and run softmax attention over
the kept columns with explicit loops.
"""

import numpy as np

from . import naive


def key_scores(K, rule):
    """Per-key selection scores of one head's keys (n, d) for the deterministic score rules."""
    if rule == "leverage":
        return naive.leverage(K)
    if rule == "norm":
        return np.sqrt(np.sum(np.asarray(K, float) ** 2, axis=1))
    raise ValueError(rule)


def kept_indices(K, k, rule):
    """Indices of the k kept keys (as a set-like sorted array)."""
    n = K.shape[0]
    if rule == "first":
        return np.arange(k)
    s = key_scores(K, rule)
    order = sorted(range(n), key=lambda j: -s[j])
    return np.sort(np.array(order[:k]))


def softmax_rows(L):
    L = L - L.max(axis=1, keepdims=True)
    E = np.exp(L)
    return E / E.sum(axis=1, keepdims=True)


def self_attention(x, Wqkv, bqkv, Wproj, bproj, heads, k=None, rule="leverage"):
    """Multi-head self-attention over the kept keys (all keys when k is None).

    x: (B, n, D); Wqkv: (3D, D) and bqkv: (3D,) laid out as [q; k; v] with
    heads contiguous inside each; Wproj: (D, D).  Returns (out, kept) where
    kept[b][h] is the sorted array of kept key indices.
    """
    x = np.asarray(x, float)
    B, n, D = x.shape
    dh = D // heads
    out = np.zeros((B, n, D))
    kept = []
    for b in range(B):
        qkv = x[b] @ Wqkv.T + bqkv  # (n, 3D)
        Q, K, V = qkv[:, :D], qkv[:, D : 2 * D], qkv[:, 2 * D :]
        per_head = []
        concat = np.zeros((n, D))
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            Qh, Kh, Vh = Q[:, sl], K[:, sl], V[:, sl]
            S = np.arange(n) if k is None or k >= n else kept_indices(Kh, k, rule)
            per_head.append(S)
            A = softmax_rows(Qh @ Kh[S].T / np.sqrt(dh))
            concat[:, sl] = A @ Vh[S]
        kept.append(per_head)
        out[b] = concat @ Wproj.T + bproj
    return out, kept
