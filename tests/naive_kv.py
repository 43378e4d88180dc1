"""Dumb reference KV-cache eviction policies: one head at a time, numpy float64, full history kept.

Each reference sees every key and query so far and recomputes its scores from scratch (no
factor updates, no batching), then applies the selection rule in plain Python: protected tokens
(first ``sinks`` positions, last ``window`` positions) first, then the largest scores, ties to
the older token.
"""

from __future__ import annotations

import math

import numpy as np


def ridge_leverage(F_all, F_held, lam):
    """f_jᵀ (F_allᵀ F_all + λI)⁻¹ f_j for the rows of F_held."""
    G = F_all.T @ F_all + lam * np.eye(F_all.shape[1])
    return np.array([f @ np.linalg.solve(G, f) for f in F_held])


def softmax_rows(logits):
    out = np.zeros_like(logits)
    for i, row in enumerate(logits):
        ok = np.isfinite(row)
        e = np.exp(row[ok] - row[ok].max())
        out[i, ok] = e / e.sum()
    return out


def choose(cands, scores, protected, L):
    """Indices (into cands, increasing) of the kept tokens."""
    order = sorted(range(len(cands)), key=lambda i: (not protected[i], -scores[i], cands[i]))
    return sorted(order[:L])


class NaiveHead:
    """One KV head (with its group of query heads) under one policy."""

    def __init__(self, policy, budget, sinks, window, eps=0.05, ridge=1e-6, rope="post", centred=False):
        self.policy, self.budget, self.sinks, self.window = policy, budget, sinks, window
        self.eps, self.ridge, self.rope, self.centred = eps, ridge, rope, centred
        self.keys = []  # post-RoPE keys of all tokens seen
        self.pre = []
        self.kept = []  # positions
        self.acc = {}
        self.lam = None

    def features(self, positions):
        src = self.pre if self.rope == "pre" else self.keys
        F = np.array([src[p] for p in positions], dtype=np.float64)
        if self.centred:
            F = np.hstack([F, np.ones((len(positions), 1))])
        return F

    def scores(self, cands, new_keys, queries, scaling):
        """Scores of the candidates (universal needs the core set too)."""
        pol = self.policy
        seen = len(self.keys)
        if pol in ("leverage", "universal"):
            F_all = self.features(range(seen))
            return ridge_leverage(F_all, self.features(cands), self.lam)
        if pol == "streaming_llm":
            return np.array(cands, dtype=float)
        if pol == "key_norm":
            return np.array([-np.linalg.norm(np.asarray(self.keys[p], dtype=np.float64)) for p in cands])
        # attention of this step's queries over the candidates, causal among the new tokens
        m = len(new_keys)
        K = np.array([self.keys[p] for p in cands], dtype=np.float64)
        probs = []
        for qh in queries:  # the group's query heads, each (m, d)
            logits = np.asarray(qh, dtype=np.float64) @ K.T * scaling
            for i in range(m):
                for j, p in enumerate(cands):
                    if p > seen - m + i:
                        logits[i, j] = -math.inf
            probs.append(softmax_rows(logits))
        probs = np.array(probs)  # (g, m, n)
        if pol == "tova":
            return probs[:, -1, :].mean(axis=0)
        got = probs.sum(axis=(0, 1))
        for j, p in enumerate(cands):
            self.acc[p] = self.acc.get(p, 0.0) + got[j]
        return np.array([self.acc[p] for p in cands])

    def prepare(self, new_keys, queries=None, new_pre=None, scaling=None):
        """Admit the new tokens; return (candidates, scores, protected, size of the universal core)."""
        start = len(self.keys)
        self.keys.extend(list(new_keys))
        if new_pre is not None:
            self.pre.extend(list(new_pre))
        if self.lam is None:
            F0 = self.features(range(start, len(self.keys)))
            self.lam = self.ridge * float(np.mean(np.sum(F0**2, axis=1)))
        seen = len(self.keys)
        cands = self.kept + list(range(start, seen))
        s = self.scores(cands, new_keys, queries, scaling)
        protected = [p < self.sinks or p >= seen - self.window for p in cands]
        bound = s * self.certificate() if self.policy == "universal" else s
        core = sum(protected[i] or not bound[i] < self.eps for i in range(len(cands)))
        return cands, s, protected, core

    def certificate(self):
        """(1 + λ/μ)(1 + r): μ = 1/‖P‖_F − λ <= σ_min(G), P = (G + λI)⁻¹, r = 8·D·u·(trace G + Dλ)·‖P‖_F (rounding);
        inf when μ <= 0 or r >= 1/2."""
        F = self.features(range(len(self.keys)))
        P = np.linalg.inv(F.T @ F + self.lam * np.eye(F.shape[1]))
        fro = np.linalg.norm(P, "fro")
        mu = 1.0 / fro - self.lam
        D = F.shape[1]
        rel = 8.0 * D * np.finfo(np.float64).eps * (np.sum(F**2) + D * self.lam) * fro
        return (1.0 + self.lam / mu) * (1.0 + rel) if mu > 0 and rel < 0.5 else math.inf

    def commit(self, cands, s, protected, L):
        self.kept = [cands[i] for i in choose(cands, s, protected, L)]
        return self.kept


def naive_layer_step(heads, new_keys, queries, new_pre, scaling):
    """One step of every head of a layer (universal shares one kept count L across the heads)."""
    prepared = [
        h.prepare(new_keys[i], queries[i], None if new_pre is None else new_pre[i], scaling)
        for i, h in enumerate(heads)
    ]
    if heads[0].policy == "universal":
        L = min(heads[0].budget, max(p[3] for p in prepared))
    else:
        L = min(heads[0].budget, len(prepared[0][0]))
    return [h.commit(c, s, pr, L) for h, (c, s, pr, _) in zip(heads, prepared)]


def kvpress_scores(pre, phi, jitter=1e-2):
    """kvpress's sketched leverage: centred pre-RoPE keys times phi, then diag(X (XᵀX + jitter·I)⁻¹ Xᵀ)."""
    P = np.asarray(pre, dtype=np.float64)
    X = (P - P.mean(axis=0)) @ np.asarray(phi, dtype=np.float64)
    G = X.T @ X + jitter * np.eye(X.shape[1])
    return np.array([max(x @ np.linalg.solve(G, x), 0.0) for x in X])
