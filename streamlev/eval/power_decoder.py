"""The case the universal-set guarantee covers: a small decoder trained here with power attention.

Run ``python -m streamlev.eval.power_decoder`` (``--quick`` for small sizes; ``--help`` for the
sizes).  Needs the ``hf`` extra (torch, transformers).

The model is a transformers ``LlamaForCausalLM`` (so :func:`streamlev.hf.compress` and the masked
replay of :mod:`streamlev.eval.decoder` run on it unchanged) whose attention is *power attention*:
query t gives key j the weight (q_t·k_j)² / Σ_i (q_t·k_i)² over the keys it sees, instead of a
softmax.  The attention function is registered with transformers' ``AttentionInterface`` under
the name :data:`ATTENTION` and computes the weights with
:func:`streamlev.eval.decoder.attention_weights` (``kernel="power"``).

Rotary embeddings are kept as in Llama: queries and keys are rotated by their positions before
the product, so the keys *as attended* are the post-RoPE keys, and the guarantee is about them:
the ``"universal"`` policy scores the post-RoPE keys (``rope="post"``, the default).  For any query
q and keys k_1..k_t, Cauchy-Schwarz in the metric of the Gram G_t = Σ_i k_i k_iᵀ gives
(q·k_j)² <= (k_jᵀ G_t⁺ k_j) · qᵀ G_t q = τ_j(t) · Σ_i (q·k_i)², i.e. the power attention of any query
on key j is at most its prefix leverage τ_j(t), and prefix leverage only decreases as t grows
(docs/design.md, universal sets).  A key evicted with prefix leverage < eps therefore never gets
attention >= eps from a later query.  Leverage of the pre-RoPE keys gives no such bound, because
each position rotates its key differently.

Tokenizer: bytes (UTF-8), a vocabulary of 256 and no special tokens (:class:`ByteTokenizer`), so
the model stays small and every text is encodable.  Texts: the same as the softmax study
(:func:`streamlev.eval.decoder.load_passages`): CPython's ``pydoc_data.topics`` and Debian's
``/usr/share/common-licenses``.  The documents whose first bytes are the evaluation passages are
held out of training entirely; training reads random windows of every other document.

Training is seeded, runs on one torch thread for a fixed number of steps (chosen to stay within
20 minutes of one core of the reference machine, with a hard stop at ``--max-minutes``) and caches
the weights under ``$XDG_CACHE_HOME/streamlev`` (``~/.cache/streamlev``), keyed by the model and
training settings, so the evaluation reruns without retraining (``--retrain`` forces it).

Evaluation, as in the softmax study: teacher-forced perplexity on the positions past the budget B
with each position seeing exactly what its policy had kept by then
(:func:`streamlev.eval.decoder.masked_forward` with ``kernel="power"``), the attention loss, and
for ``"universal"`` an audit of every eviction (:func:`audit_universal`): the largest power
attention any later query gives an evicted key must be below eps whenever the universal set fit
in the budget, or :class:`GuaranteeError` is raised.  The policies are those of the softmax study
(:data:`streamlev.eval.decoder.POLICY_RUNS`; its ``"h2o"`` and ``"tova"`` score by softmax
attention), :func:`tova_power` (TOVA scored by the power attention this model uses), and
``"universal"`` at eps = 0.05 (as in the softmax study) and 0.2.

Results go to ``benchmarks/results/power_decoder.json`` (``power_decoder_quick.json`` with
``--quick``) in the record format of ``benchmarks/_common.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

from . import decoder
from ._study import PerplexityTally, study_record

__all__ = [
    "ATTENTION",
    "ByteTokenizer",
    "GuaranteeError",
    "audit_universal",
    "build_model",
    "main",
    "model_config",
    "perplexity_runs",
    "power_attention",
    "ridge_runs",
    "tables",
    "training_documents",
    "tova_power",
    "train",
]

ATTENTION = "streamlev_power"
EPS = 0.05
SINKS = decoder.SINKS
WINDOW = decoder.WINDOW

# the model: 4 layers, 4 query heads sharing 2 KV heads of dimension 32, about 0.8M parameters
SHAPE = {
    "vocab_size": 256,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 2048,
}
TRAIN = {"steps": 300, "batch": 8, "context": 512, "lr": 2e-3, "warmup": 30, "weight_decay": 0.1, "seed": 0}


class GuaranteeError(AssertionError):
    """An evicted key got power attention >= eps although its universal set fit in the budget."""


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocabulary 256, no special tokens).

    >>> tok = ByteTokenizer()
    >>> tok("héllo").input_ids
    [104, 195, 169, 108, 108, 111]
    >>> tok.decode(tok("héllo").input_ids)
    'héllo'
    """

    vocab_size = 256

    def __call__(self, text: str, return_tensors: str | None = None):
        """The bytes of ``text``: ``.input_ids`` is a list, or a (1, n) int64 tensor with ``return_tensors="pt"``."""
        ids = list(text.encode("utf-8"))
        if return_tensors == "pt":
            import torch

            ids = torch.tensor([ids], dtype=torch.long)
        elif return_tensors is not None:
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        return _Encoded(ids)

    def decode(self, ids) -> str:
        """Text of a sequence of byte tokens (invalid UTF-8 is replaced)."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        return bytes(ids).decode("utf-8", errors="replace")


class _Encoded:
    def __init__(self, ids):
        self.input_ids = ids


# ------------------------------------------------------------------------------------------------
# the attention
# ------------------------------------------------------------------------------------------------


def _visible(attention_mask, T: int, S: int, device):
    """Which of the S keys each of the T queries sees: the mask transformers passes, or causal."""
    import torch

    if attention_mask is None:
        # queries are the last T of the S positions (a cache holds the first S - T)
        return torch.ones(T, S, dtype=torch.bool, device=device).tril(S - T)
    m = attention_mask[..., :S]
    if m.dtype == torch.bool:
        return m.unsqueeze(2)  # (B, 1, 1, T, S)
    return (m == 0).unsqueeze(2)  # additive float mask: 0 where visible


def power_attention(module, query, key, value, attention_mask, *, scaling=None, dropout=0.0, **kwargs):
    """Power attention (x², row-normalised) in the calling convention of transformers' AttentionInterface.

    ``query`` (B, Hq, T, d), ``key`` and ``value`` (B, Hk, S, d) with ``Hq`` a multiple of ``Hk``
    (grouped-query attention); ``attention_mask`` as transformers builds it (None: causal, the T
    queries being the last T of the S positions).  Returns ``(output (B, T, Hq, d), None)``.
    """
    import torch

    B, Hq, T, d = query.shape
    Hk, S = key.shape[1], key.shape[2]
    g = Hq // Hk
    scale = scaling if scaling is not None else 1.0 / math.sqrt(d)
    logits = torch.einsum("bhgtd,bhsd->bhgts", query.view(B, Hk, g, T, d), key) * scale
    probs = decoder.attention_weights(logits, _visible(attention_mask, T, S, query.device), "power")
    if dropout and module.training:
        probs = torch.nn.functional.dropout(probs, p=dropout)
    out = torch.einsum("bhgts,bhsd->bhgtd", probs, value).reshape(B, Hq, T, value.shape[-1])
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, power_attention)


def model_config(**shape):
    """The LlamaConfig of the power-attention decoder (:data:`SHAPE`, overridden by ``shape``)."""
    from transformers import LlamaConfig

    _register()
    return LlamaConfig(
        **{**SHAPE, **shape},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation=ATTENTION,
    )


def build_model(seed: int = 0, **shape):
    """A freshly initialised power-attention ``LlamaForCausalLM`` (seeded)."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = model_config(**shape)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


# ------------------------------------------------------------------------------------------------
# texts and training
# ------------------------------------------------------------------------------------------------


def _all_documents() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    docs = [(f"pydoc_data.topics[{k!r}]", topics[k]) for k in sorted(topics)]
    lic = decoder.LICENSE_DIR
    for p in sorted(lic.iterdir()) if lic.is_dir() else []:
        if p.is_file() and not p.is_symlink():
            docs.append((str(p), p.read_text(errors="replace")))
    return docs


def _family(name: str) -> str:
    """A license's name without its version (``GPL-3`` -> ``GPL``); a pydoc topic is its own family."""
    return name.rsplit("-", 1)[0] if name.startswith(str(decoder.LICENSE_DIR)) else name


def training_documents(held_out: list[str]) -> list[tuple[str, str]]:
    """Every pydoc topic and license text (symbolic links skipped) except the ``held_out`` sources.

    Other versions of a held-out license (GPL-2 when GPL-3 is held out, GFDL-1.2 for GFDL-1.3) are
    left out too: they repeat whole paragraphs of it.
    """
    held = {_family(h) for h in held_out}
    return [(name, text) for name, text in _all_documents() if _family(name) not in held]


def _lr(step: int, cfg: dict) -> float:
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    frac = (step - cfg["warmup"]) / max(1, cfg["steps"] - cfg["warmup"])
    return cfg["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def train(model, stream, cfg: dict, *, max_seconds: float = math.inf, log=print) -> dict:
    """Train ``model`` on random windows of the byte ``stream`` (1-D int64 tensor); returns statistics.

    AdamW with linear warm-up then cosine decay to a tenth of ``cfg["lr"]``, gradient clipping at 1,
    ``cfg["steps"]`` steps of ``cfg["batch"]`` windows of ``cfg["context"] + 1`` bytes, windows drawn
    with a generator seeded by ``cfg["seed"]``.  Stops early (and says so) after ``max_seconds``.
    """
    import torch

    n = stream.numel() - cfg["context"] - 1
    if n < 1:
        raise ValueError(f"the training text ({stream.numel()} tokens) is shorter than one window")
    gen = torch.Generator().manual_seed(cfg["seed"])
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": other, "weight_decay": 0.0}],
        lr=cfg["lr"],
        betas=(0.9, 0.95),
    )
    model.train()
    t0 = time.perf_counter()
    losses = []
    step = 0
    for step in range(cfg["steps"]):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        start = torch.randint(0, n, (cfg["batch"],), generator=gen)
        win = torch.stack([stream[s : s + cfg["context"] + 1] for s in start.tolist()])
        logits = model(win[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), win[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        elapsed = time.perf_counter() - t0
        if step % 20 == 0 or step == cfg["steps"] - 1:
            recent = losses[-20:]
            log(
                f"train step {step + 1:4d}/{cfg['steps']}  loss {sum(recent) / len(recent):.4f} nats/byte"
                f"  {elapsed:6.0f}s  lr {_lr(step, cfg):.2e}"
            )
        if elapsed > max_seconds:
            log(f"train: stopped after {step + 1} steps at the time limit ({max_seconds:.0f}s)")
            break
    model.eval()
    return {
        "steps_done": step + 1,
        "seconds": time.perf_counter() - t0,
        "first_loss": losses[0],
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "losses_every_20": losses[::20],
    }


# ------------------------------------------------------------------------------------------------
# the trained model, cached
# ------------------------------------------------------------------------------------------------

HELD_OUT_PASSAGES = 8  # the evaluation passages: the first bytes of these documents, never trained on


def held_out_sources(tokens: int) -> list[str]:
    """The documents of the evaluation passages (:func:`streamlev.eval.decoder.load_passages`)."""
    return [p["source"] for p in decoder.load_passages(ByteTokenizer(), HELD_OUT_PASSAGES, tokens)]


def cache_dir() -> Path:
    """Where trained weights are kept: ``$XDG_CACHE_HOME/streamlev`` or ``~/.cache/streamlev``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamlev"


def _key(cfg: dict, held: list[str]) -> str:
    text = json.dumps({"shape": SHAPE, "train": cfg, "held_out": held}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trained_model(cfg: dict, *, weights: Path | None = None, retrain: bool = False, max_seconds: float, log):
    """The trained power decoder: loaded from ``weights`` (default: the cache) or trained and saved there.

    Returns ``(model, info)``; ``info`` holds the training statistics, the held-out sources and the
    SHA-256 of the weights file.
    """
    import torch

    held = held_out_sources(cfg["context"])
    path = weights or cache_dir() / f"power_decoder-{_key(cfg, held)}.pt"
    model = build_model(seed=cfg["seed"])
    if path.exists() and not retrain:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state"])
        info = json.loads(blob["info"])
        log(f"loaded the trained weights from {path}")
    else:
        docs = training_documents(held)
        stream = torch.tensor(list("\n\n".join(text for _, text in docs).encode("utf-8")), dtype=torch.long)
        log(f"training on {len(docs)} documents, {stream.numel()} bytes; held out: {held}")
        stats = train(model, stream, cfg, max_seconds=max_seconds, log=log)
        info = {"train": cfg, "held_out": held, "documents": len(docs), "bytes": stream.numel(), **stats}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": model.state_dict(), "info": json.dumps(info)}, path)
        log(f"saved the trained weights to {path}")
    model.eval()
    info["weights"] = str(path)
    info["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return model, info


# ------------------------------------------------------------------------------------------------
# evaluation: perplexity and the audit of the universal policy
# ------------------------------------------------------------------------------------------------


def audit_universal(
    model,
    ids,
    budget: int,
    *,
    eps: float = EPS,
    sinks: int = SINKS,
    window: int = WINDOW,
    ridge: float = 1e-6,
) -> tuple:
    """Masked forward of the ``"universal"`` policy with every eviction checked against the guarantee.

    Runs :func:`streamlev.eval.decoder.masked_forward` (``kernel="power"``) inside
    :func:`streamlev.eval.decoder.masked_attention`, records every layer's post-RoPE queries and keys
    of that run, replays the policy's steps on them (:class:`streamlev.hf.KVSelector`, the same
    one-token steps, checked to end on the replay's kept tokens) to learn when each token was
    evicted, and recomputes independently, in float64 from the Gram of the prefix, each evicted
    token's prefix leverage at its eviction: ridge leverage τ_λ (the policy's score, λ = ``ridge`` ×
    the squared norm of the first key), the policy's certified bound on exact leverage
    b = τ_λ(1 + λ/μ)(1 + r) with μ = 1/‖(G + λI)⁻¹‖_F − λ and r its rounding allowance
    (infinite while μ <= 0), and exact leverage
    τ = kᵀG⁺k.  An eviction is *covered* when b < eps (the token left the universal set) or the
    head's universal set fit in the budget, and *capped* otherwise (the set did not fit and the cap
    evicted one of its members).  Then, for every query t and key j evicted
    before t, the power attention of the full prefix w(t, j) = (q_t·k_j)² / Σ_{i<=t} (q_t·k_i)².

    Raises
    ------
    GuaranteeError
        If a covered eviction gets ``w >= eps`` from a later query, or ``w`` exceeds the exact
        leverage bound τ (plus 1e-9) of its eviction.

    Returns
    -------
    (logits, run, audit)
        ``audit`` holds, per layer and overall: the largest ``w`` on covered and on capped
        evictions, the largest exact leverage τ of a covered eviction (below eps means the bound
        w <= τ alone proves the assertion; ridge leverage can sit below eps while τ does not),
        the number of evictions of each kind, the fraction of (step, row, head) at which the
        universal set did not fit, and the mean and largest size of the universal set of all the
        keys seen (evicted ones included: what an uncapped policy would hold).
    """
    from ..hf import KVSelector

    opts = {"policy": "universal", "eps": eps, "ridge": ridge}
    caught, hooks = decoder.capture_projections(model)
    try:
        with decoder.masked_attention(model):
            logits, run = decoder.masked_forward(model, ids, opts, budget, sinks=sinks, window=window, kernel="power")
    finally:
        for h in hooks:
            h.remove()
    attn0 = model.model.layers[0].self_attn
    rotary = sys.modules[type(attn0).__module__].apply_rotary_pos_emb
    d = attn0.head_dim
    B, T = ids.shape
    layers = []
    for li in sorted(caught["q"]):
        cos, sin = caught["pe"][li]
        pre_q = caught["q"][li].view(B, T, -1, d).transpose(1, 2)
        pre_k = caught["k"][li].view(B, T, -1, d).transpose(1, 2)
        q, k = rotary(pre_q, pre_k, cos, sin)
        layers.append(
            _audit_layer(
                li, q, k, run, budget, eps=eps, sinks=sinks, window=window, ridge=ridge, selector_cls=KVSelector
            )
        )
    audit = {"eps": eps, "ridge": ridge, "layers": layers, **_combine_audits(layers)}
    return logits, run, audit


def _audit_layer(li, q, k, run, budget, *, eps, sinks, window, ridge, selector_cls) -> dict:
    import torch

    B, Hk, T, d = k.shape
    g = q.shape[1] // Hk
    # 1. the policy's steps, one token at a time from the first (as the masked replay runs "universal")
    sel = selector_cls("universal", budget=budget, sinks=sinks, window=window, eps=eps, ridge=ridge)
    K = k.detach().to(torch.float64)
    evict_step = torch.full((B, Hk, T), T, dtype=torch.long)  # T: never evicted
    tau_r = torch.zeros(B, Hk, T, dtype=torch.float64)
    tau_x = torch.zeros(B, Hk, T, dtype=torch.float64)
    cov = torch.zeros(B, Hk, T, dtype=torch.bool)  # evicted below eps, or while the universal set fit
    G = torch.zeros(B, Hk, d, d, dtype=torch.float64)
    lam = ridge * K[:, :, 0].pow(2).sum(-1)  # (B, Hk): the policy's ridge (first forward: one token)
    eye = torch.eye(d, dtype=torch.float64)
    did_not_fit = 0
    max_set = 0
    set_sum = 0.0
    kept_sum = 0
    for t in range(T):
        prev = sel.positions
        cand = torch.full((B, Hk, 1), t, dtype=torch.long)
        if prev is not None:
            cand = torch.cat([prev, cand], dim=-1)
        keys = k.gather(-2, cand.unsqueeze(-1).expand(*cand.shape, d))
        idx = sel.step(keys, 1)
        kept_sum += idx.shape[-1]
        kept = torch.zeros(cand.shape, dtype=torch.bool).scatter_(-1, idx, True)
        # 2. independent float64 prefix leverage of the candidates at step t
        G += K[:, :, t, :, None] * K[:, :, t, None, :]
        C = K.gather(-2, cand.unsqueeze(-1).expand(*cand.shape, d))
        Pr = torch.linalg.inv(G + lam[..., None, None] * eye)
        r = ((C @ Pr) * C).sum(-1)
        w, V = torch.linalg.eigh(G)
        inv = torch.where(w > 1e-12 * w[..., -1:].clamp_min(1e-300), 1.0 / w, torch.zeros_like(w))
        proj = C @ V
        x = (proj.pow(2) * inv[..., None, :]).sum(-1)
        # the policy's certified bound on exact leverage: tau_ridge * (1 + lam/mu), mu = 1/||Pr||_F - lam
        fro = torch.linalg.matrix_norm(Pr, ord="fro")
        mu = 1.0 / fro - lam
        rel = 8.0 * d * torch.finfo(torch.float64).eps * (K[:, :, : t + 1].pow(2).sum((-1, -2)) + d * lam) * fro
        factor = torch.where((mu > 0) & (rel < 0.5), (1.0 + lam / mu.clamp_min(1e-300)) * (1.0 + rel), math.inf)
        factor = factor[..., None]
        bnd = torch.nan_to_num(r * factor, nan=math.inf)
        protected = (cand < sinks) | (cand >= t + 1 - window)
        core = protected | (bnd >= eps)
        # the universal set of every key seen so far (evicted ones included): what no cap would hold
        whole = torch.nan_to_num(((K[:, :, : t + 1] @ Pr) * K[:, :, : t + 1]).sum(-1) * factor, nan=math.inf) >= eps
        whole[..., :sinks] = True
        whole[..., max(0, t + 1 - window) :] = True
        size = whole.sum(-1)
        max_set = max(max_set, int(size.max()))
        set_sum += float(size.double().sum())
        gone = ~kept
        fits = core.sum(-1, keepdim=True) <= budget  # (B, Hk, 1): this head's universal set fits
        did_not_fit += int((~fits).sum())
        cov.scatter_(-1, cand, torch.where(gone, (bnd < eps) | fits, cov.gather(-1, cand)))
        evict_step.scatter_(-1, cand, torch.where(gone, torch.full_like(cand, t), evict_step.gather(-1, cand)))
        tau_r.scatter_(-1, cand, torch.where(gone, bnd, tau_r.gather(-1, cand)))
        tau_x.scatter_(-1, cand, torch.where(gone, x, tau_x.gather(-1, cand)))
    if not torch.equal(sel.positions, run.selectors[li].positions):
        raise RuntimeError(f"layer {li}: the audit's replay of the policy ended on other tokens than the run's")
    # 3. power attention of the full prefix from every query head, in float64
    Q = q.detach().to(torch.float64).reshape(B, Hk, g, T, d)
    num = torch.einsum("bhgtd,bhsd->bhgts", Q, K).pow(2)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    num = num.masked_fill(~causal, 0.0)
    wfull = num / num.sum(-1, keepdim=True).clamp_min(1e-300)
    tq = torch.arange(T)[:, None]
    evicted = evict_step[:, :, None, None, :] < tq  # (B, Hk, 1, T, S): key j evicted before query t
    covered = evicted & cov[:, :, None, None, :]
    capped = evicted & ~cov[:, :, None, None, :]
    w_cov = wfull.masked_fill(~covered, 0.0)
    max_cov = float(w_cov.max())
    max_cap = float(wfull.masked_fill(~capped, 0.0).max())
    measured = run.max_evicted[li]
    if not math.isclose(max(max_cov, max_cap), measured, rel_tol=1e-3, abs_tol=1e-6):
        raise RuntimeError(
            f"layer {li}: the audit's largest evicted attention {max(max_cov, max_cap):.6g} "
            f"is not the run's {measured:.6g}"
        )
    gone_ever = evict_step < T
    cov_any = gone_ever & cov
    max_tau_x = float(tau_x.masked_fill(~cov_any, 0.0).max())
    # w(t, j) <= tau_j(t) <= tau_j(eviction) holds for every key (Cauchy-Schwarz, prefix monotonicity)
    over = float((wfull.masked_fill(~evicted, 0.0) - tau_x[:, :, None, None, :]).max())
    if over > 1e-9:
        raise GuaranteeError(f"layer {li}: an evicted key got attention above its exact prefix leverage (+{over:.3g})")
    if max_cov >= eps:
        raise GuaranteeError(
            f"layer {li}: a key evicted while its universal set fit in the budget got power attention "
            f"{max_cov:.6g} >= eps = {eps}"
        )
    return {
        "layer": li,
        "max_w_covered": max_cov,
        "max_w_capped": max_cap,
        "max_exact_leverage_covered": max_tau_x,
        "evicted_covered": int(cov_any.sum()),
        "evicted_capped": int((gone_ever & ~cov).sum()),
        "evicted_above_eps_while_fit": int((gone_ever & cov & (tau_r >= eps)).sum()),
        "did_not_fit_fraction": did_not_fit / (T * B * Hk),
        "max_universal_set": max_set,
        "mean_universal_set": set_sum / (T * B * Hk),
        "mean_kept": kept_sum / T,
    }


def tova_power(keys, queries, positions):
    """TOVA scored by the power attention the model uses: the last query's weights, mean over its group.

    A policy callable for :class:`streamlev.hf.KVSelector` (the ``"tova"`` and ``"h2o"`` policies
    score by softmax attention, which is not what this model computes).
    """
    import torch

    B, H, n, d = keys.shape
    q = queries[:, :, -1].reshape(B, H, -1, d).to(keys.dtype)  # (B, H, g, d)
    num = torch.einsum("bhgd,bhnd->bhgn", q, keys).square()
    w = num / num.sum(-1, keepdim=True).clamp_min(1e-30)
    return w.mean(2).double()


def perplexity_runs(model, passages, budgets, *, batch: int, eps, log) -> list[dict]:
    """Perplexity past B, attention loss and largest evicted attention for every policy and budget.

    The policies of :data:`streamlev.eval.decoder.POLICY_RUNS`, :func:`tova_power`, and
    ``"universal"`` at each threshold of ``eps`` (a number or a list; the first is the row
    ``"universal"``, the others ``"universal eps=<value>"``), each audited by :func:`audit_universal`.
    """
    import torch

    ids = torch.stack([p["ids"] for p in passages])
    eps_list = [eps] if isinstance(eps, (int, float)) else list(eps)
    runs = {**decoder.POLICY_RUNS, "tova_power": {"policy": tova_power}}
    del runs["universal"]
    for i, e in enumerate(eps_list):
        runs["universal" if i == 0 else f"universal eps={e:g}"] = {"policy": "universal", "eps": e}
    rows = []
    for budget in budgets:
        for name, opts in runs.items():
            t0 = time.perf_counter()
            tally, audits = PerplexityTally(budget), []
            for s in range(0, ids.shape[0], batch):
                chunk = ids[s : s + batch]
                if opts is not None and opts["policy"] == "universal":
                    logits, run, audit = audit_universal(model, chunk, budget, eps=opts["eps"])
                    audits.append(audit)
                else:
                    with decoder.masked_attention(model):
                        logits, run = decoder.masked_forward(model, chunk, opts, budget, kernel="power")
                tally.add(chunk, logits, run)
            row = tally.row(name, seconds=time.perf_counter() - t0)
            row["bits_per_byte"] = math.log2(row["ppl"])
            if audits:
                row["eps"] = opts["eps"]
                row["audit"] = _merge_audits(audits)
            rows.append(row)
            extra = ""
            if audits:
                a = row["audit"]
                extra = (
                    f"  max w covered {a['max_w_covered']:.4f} capped {a['max_w_capped']:.4f}"
                    f"  did not fit {a['did_not_fit_fraction']:.1%}  set <= {a['max_universal_set']}"
                )
            log(f"ppl  B={budget:4d} {name:22s} {row['ppl']:8.4f}  loss {row['attention_loss']:.4f}{extra}")
    return rows


def ridge_runs(model, passages, *, budget: int, eps: float, ridges, batch: int, log) -> list[dict]:
    """The universal policy at several ridges: how far its evicted keys' exact leverage sits from eps.

    The policy scores ridge leverage (below the exact leverage); the bound w <= τ proves the
    assertion only when the exact leverage τ of every key evicted while its set fit is below eps.
    """
    import torch

    ids = torch.stack([p["ids"] for p in passages])
    rows = []
    for ridge in ridges:
        nll_sum, count, audits = 0.0, 0, []
        for s in range(0, ids.shape[0], batch):
            chunk = ids[s : s + batch]
            logits, _, audit = audit_universal(model, chunk, budget, eps=eps, ridge=ridge)
            audits.append(audit)
            lp = torch.log_softmax(logits[:, budget:-1].double(), dim=-1)
            tgt = chunk[:, budget + 1 :]
            nll_sum += float(-lp.gather(-1, tgt.unsqueeze(-1)).sum())
            count += tgt.numel()
        a = _merge_audits(audits)
        rows.append(
            {
                "task": "ridge",
                "policy": "universal",
                "eps": eps,
                "budget": budget,
                "ridge": ridge,
                "ppl": math.exp(nll_sum / count),
                **{k: a[k] for k in ("max_w_covered", "max_exact_leverage_covered", "did_not_fit_fraction")},
            }
        )
        log(
            f"ridge {ridge:g}: eps {eps} B={budget}  max w {a['max_w_covered']:.4f}"
            f"  max exact leverage of an evicted key {a['max_exact_leverage_covered']:.6f}"
        )
    return rows


_AUDIT_MAX = ("max_w_covered", "max_w_capped", "max_exact_leverage_covered", "max_universal_set")
_AUDIT_SUM = ("evicted_covered", "evicted_capped", "evicted_above_eps_while_fit")
_AUDIT_MEAN = ("did_not_fit_fraction", "mean_universal_set", "mean_kept")


def _combine_audits(parts: list[dict]) -> dict:
    """The audit statistics of several parts (layers of a run, or chunks of passages): largest, total, mean."""
    return {
        **{k: max(a[k] for a in parts) for k in _AUDIT_MAX},
        **{k: sum(a[k] for a in parts) for k in _AUDIT_SUM},
        **{k: sum(a[k] for a in parts) / len(parts) for k in _AUDIT_MEAN},
    }


def _merge_audits(audits: list[dict]) -> dict:
    """One audit for the chunks of passages of a run."""
    return {
        "eps": audits[0]["eps"],
        "ridge": audits[0]["ridge"],
        **_combine_audits(audits),
        "layers": [a["layers"] for a in audits],
    }


def _record(args, results, started) -> dict:
    return study_record(
        "power_decoder",
        args,
        results,
        started,
        sinks=SINKS,
        window=WINDOW,
        model={**SHAPE, "attention": "power (x², row-normalised), RoPE as in Llama", "tokenizer": "bytes"},
        texts="CPython pydoc_data.topics and /usr/share/common-licenses (evaluation documents held out)",
    )


def tables(record: dict) -> str:
    """Markdown tables of a results record: perplexity, attention loss, and the universal policy's audit."""
    res = record["results"]
    ppl = [r for r in res if r["task"] == "perplexity"]
    if not ppl:
        return ""
    budgets = sorted({r["budget"] for r in ppl})
    names = list(dict.fromkeys(r["policy"] for r in ppl))
    cell = {(r["policy"], r["budget"]): r for r in ppl}
    head = "| policy | " + " | ".join(f"B = {b}" for b in budgets) + " |"
    sep = "|---|" + "---|" * len(budgets)
    out = ["Perplexity per byte on the positions past B (exact per-step masks):", "", head, sep]
    for n in names:
        out.append(f"| {n} | " + " | ".join(f"{cell[n, b]['ppl']:.3f}" for b in budgets) + " |")
    out += ["", "Attention loss (power attention mass of the full prefix on evicted tokens, mean per query):", ""]
    out += [head, sep]
    for n in names:
        if n != "full":
            out.append(f"| {n} | " + " | ".join(f"{cell[n, b]['attention_loss']:.4f}" for b in budgets) + " |")
    out += ["", "Largest attention any query gives an evicted token:", "", head, sep]
    for n in names:
        if n != "full":
            out.append(f"| {n} | " + " | ".join(f"{cell[n, b]['max_evicted_attention']:.4f}" for b in budgets) + " |")
    for n in names:
        uni = [cell[n, b] for b in budgets if "audit" in cell[n, b]]
        if not uni:
            continue
        out += ["", f"The audit of {n} (eps = {uni[0]['eps']}):", ""]
        out += [f"| {n} | " + " | ".join(f"B = {r['budget']}" for r in uni) + " |", "|---|" + "---|" * len(uni)]
        rows = [
            ("largest attention on a key evicted while its set fit", "max_w_covered", "{:.4f}"),
            ("largest exact prefix leverage of such a key", "max_exact_leverage_covered", "{:.6f}"),
            ("largest attention on a key evicted by the cap", "max_w_capped", "{:.4f}"),
            ("(step, row, head) where the set did not fit", "did_not_fit_fraction", "{:.1%}"),
            ("evictions while the set fit", "evicted_covered", "{}"),
            ("evictions by the cap", "evicted_capped", "{}"),
            ("tokens kept per head, mean over steps", "mean_kept", "{:.1f}"),
            ("universal set of all keys seen, mean size (tokens)", "mean_universal_set", "{:.1f}"),
            ("universal set of all keys seen, largest size", "max_universal_set", "{}"),
        ]
        for label, key, fmt in rows:
            out.append(f"| {label} | " + " | ".join(fmt.format(r["audit"][key]) for r in uni) + " |")
    rr = [r for r in res if r["task"] == "ridge"]
    if rr:
        out += ["", f"The universal policy at eps = {rr[0]['eps']}, B = {rr[0]['budget']}, by ridge:", ""]
        out += ["| ridge | perplexity | largest attention on an evicted key | largest exact leverage of one |"]
        out += ["|---|---|---|---|"]
        out += [
            f"| {r['ridge']:g} | {r['ppl']:.3f} | {r['max_w_covered']:.4f} | {r['max_exact_leverage_covered']:.6f} |"
            for r in rr
        ]
    out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (2 passages, budgets 32 and 64, 40 steps)")
    ap.add_argument("--passages", type=int, default=HELD_OUT_PASSAGES)
    ap.add_argument("--budgets", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--eps", type=float, nargs="+", default=[EPS, 0.2], help="thresholds of the universal policy")
    ap.add_argument(
        "--ridges",
        type=float,
        nargs="*",
        default=[1e-6, 1e-9, 1e-12],
        help="ridges of the universal policy at the largest eps and budget (none: skip)",
    )
    ap.add_argument("--steps", type=int, default=TRAIN["steps"], help="training steps")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="hard stop of the training")
    ap.add_argument("--weights", type=Path, default=None, help="weights file (default: in the cache)")
    ap.add_argument("--retrain", action="store_true", help="train even if cached weights exist")
    ap.add_argument("--train-only", action="store_true", help="train (or load) and stop")
    ap.add_argument("--batch", type=int, default=8, help="passages per masked forward")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--table", type=Path, default=None, metavar="JSON", help="print the tables of a results file")
    args = ap.parse_args(argv)
    if args.table is not None:
        print(tables(json.loads(args.table.read_text())))
        return 0
    if args.quick:
        args.passages, args.budgets, args.steps, args.ridges = 2, [32, 64], 40, [1e-6]
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    cfg = {**TRAIN, "steps": args.steps}
    model, info = trained_model(
        cfg, weights=args.weights, retrain=args.retrain, max_seconds=60 * args.max_minutes, log=log
    )
    root = Path(__file__).resolve().parents[2]
    path = args.json or root / "benchmarks" / "results" / (
        "power_decoder_quick.json" if args.quick else "power_decoder.json"
    )
    results: list[dict] = [{"task": "training", **info}]
    if args.train_only:
        return 0
    tokens = cfg["context"]
    if args.passages > HELD_OUT_PASSAGES:
        raise SystemExit(f"--passages must be <= {HELD_OUT_PASSAGES}: only those documents were held out of training")
    passages = decoder.load_passages(ByteTokenizer(), args.passages, tokens)
    if any(p["source"] not in info["held_out"] for p in passages):
        raise SystemExit("an evaluation passage comes from a training document; retrain with --retrain")
    results.append({"task": "passages", "sources": [p["source"] for p in passages], "tokens": tokens})

    def save():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_record(args, results, started), indent=1) + "\n")

    for budget in args.budgets:
        results += perplexity_runs(model, passages, [budget], batch=args.batch, eps=args.eps, log=log)
        save()
    if args.ridges:
        results += ridge_runs(
            model,
            passages,
            budget=max(args.budgets),
            eps=max(args.eps),
            ridges=args.ridges,
            batch=args.batch,
            log=log,
        )
        save()
    print(tables(_record(args, results, started)))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
