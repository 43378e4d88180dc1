"""Compress the KV cache of a Hugging Face transformers causal LM while it runs.

Needs the ``hf`` extra (torch and the tested transformers version)::

    import streamlev.hf

    with streamlev.hf.compress(model, policy="universal", eps=0.05, budget=256, sinks=4, window=32):
        out = model.generate(**inputs, max_new_tokens=64)

Inside the context every forward of ``model`` that uses a :class:`transformers.DynamicCache` (the
one ``generate`` creates, one passed in, or one created for a plain ``model(...)`` call) runs on a
cache whose layers are :class:`BudgetLayer`: attention at a forward sees the kept tokens and all
the tokens of that forward (the prompt attends causally to itself in full), and right after each
layer's attention the layer's cache is cut back to at most ``budget`` tokens per KV head by the
policy (see :class:`streamlev.hf.KVSelector` for the rules and the numerics).  Grouped-query
attention is handled per KV head: the query heads of a group share the kept tokens of their KV
head.  Every head keeps the same number of tokens (the cache stays dense), and different heads keep
different tokens.  Positions stay absolute: a cache that holds ``L`` of ``t`` tokens seen reports
``t`` as its sequence length, so the rotary positions of new tokens are right.

Leaving the context removes every hook; caches created inside keep their :class:`BudgetLayer`
layers (they are compressed caches) but stop compressing.

Supported: decoder-only models whose attention modules follow the Llama layout (``q_proj``,
``k_proj``, ``layer_idx``, rotary embeddings applied by the modeling module's
``apply_rotary_pos_emb``): Llama, Qwen2, Mistral and SmolLM2 among them, with full attention in
every layer.  Not supported: padded batches (every row must be the same length), beam search
(``crop``/reordering of a compressed cache) and sliding-window layers.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from ._kvselect import POLICIES, KVSelector

__all__ = ["POLICIES", "BudgetLayer", "KVSelector", "compress"]


class BudgetLayer(DynamicLayer):
    """A dynamic cache layer cut back by a :class:`KVSelector` after each attention.

    :attr:`keys` and :attr:`values` hold the kept tokens, ``(B, H, L, d)``; :attr:`positions`
    their absolute positions ``(B, H, L)``; :meth:`get_seq_length` is the number of tokens seen.
    """

    is_croppable = False

    def __init__(self, selector: KVSelector):
        super().__init__()
        self.selector = selector
        self.seen = 0
        self._pending = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens (compression happens after the attention, in :meth:`compress`)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys = torch.cat([self.keys, key_states], dim=-2)
        self.values = torch.cat([self.values, value_states], dim=-2)
        self.seen += key_states.shape[-2]
        self._pending += key_states.shape[-2]
        return self.keys, self.values

    def kept(self) -> int:
        """Number of tokens held per KV head."""
        return 0 if not self.is_initialized or self.keys.numel() == 0 else int(self.keys.shape[-2])

    def get_seq_length(self) -> int:
        """Tokens seen (the position of the next token), not tokens held."""
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Held tokens map to positions ``seen - kept .. seen - 1`` of the mask: visible to every new query."""
        kept = self.kept()
        return kept + query_length, self.seen - kept

    @property
    def positions(self) -> torch.Tensor | None:
        """Absolute positions of the kept tokens, (B, H, L)."""
        return self.selector.positions

    def compress(
        self,
        queries: torch.Tensor | None = None,
        pre_keys: torch.Tensor | None = None,
        scaling: float | None = None,
    ) -> None:
        """Cut the layer back to the selector's choice (called after the layer's attention)."""
        if self._pending == 0:
            return
        idx = self.selector.step(self.keys, self._pending, queries=queries, pre_keys=pre_keys, scaling=scaling)
        self._pending = 0
        if idx.shape[-1] == self.keys.shape[-2] and bool((idx == torch.arange(idx.shape[-1], device=idx.device)).all()):
            return
        gi = idx.unsqueeze(-1).expand(*idx.shape, self.keys.shape[-1])
        self.keys = self.keys.gather(-2, gi)
        gv = idx.unsqueeze(-1).expand(*idx.shape, self.values.shape[-1])
        self.values = self.values.gather(-2, gv)

    def reset(self) -> None:
        """Forget every token."""
        super().reset()
        self.seen = 0
        self._pending = 0
        self.selector.reset()

    def crop(self, tokens_to_remove: int) -> None:
        """Refused: evicted tokens cannot be restored."""
        raise ValueError("a compressed cache cannot be cropped (evicted tokens are gone); run without compress()")

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Refused: the selector's per-row state would have to be repeated too."""
        raise ValueError("compress() supports one sequence per batch row: no num_return_sequences or beam search")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Refused (see :meth:`batch_repeat_interleave`)."""
        raise ValueError("compress() supports one sequence per batch row: no num_return_sequences or beam search")


def _attention_modules(model) -> list:
    mods = [m for m in model.modules() if all(hasattr(m, a) for a in ("q_proj", "k_proj", "layer_idx", "head_dim"))]
    if not mods:
        raise TypeError(
            f"{type(model).__name__} has no Llama-style attention modules (q_proj, k_proj, layer_idx); "
            "compress() supports Llama- and Qwen2-family decoders"
        )
    for m in mods:
        if not hasattr(sys.modules[type(m).__module__], "apply_rotary_pos_emb"):
            raise TypeError(
                f"{type(m).__name__} does not use apply_rotary_pos_emb; compress() cannot rebuild its queries"
            )
    return mods


def _check_config(config) -> None:
    types = getattr(config, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        raise TypeError(
            f"compress() needs full attention in every layer, the model has layer types {sorted(set(types))}"
        )
    if getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None):
        raise TypeError("compress() does not support sliding-window attention")


@contextlib.contextmanager
def compress(
    model: torch.nn.Module,
    policy: str | Callable = "universal",
    *,
    eps: float = 0.05,
    budget: int = 256,
    sinks: int = 4,
    window: int = 32,
    rope: str = "post",
    centred: bool = False,
    ridge: float = 1e-6,
    sketch_dim: int = 48,
    seed: int = 0,
) -> Iterator[None]:
    """Keep at most ``budget`` tokens per KV head in every layer's cache after every forward.

    Parameters
    ----------
    model : transformers causal LM
        A Llama- or Qwen2-family ``*ForCausalLM`` (or its base model).
    policy : str or callable
        ``"universal"`` (the prefix ε-universal set of the keys: tokens with prefix leverage
        ``>= eps``, capped at ``budget`` by score), ``"leverage"`` (the ``budget`` tokens of largest
        prefix leverage), ``"streaming_llm"`` (sinks + most recent), ``"h2o"`` (largest attention
        accumulated over all queries so far), ``"tova"`` (largest attention from the last query),
        ``"key_norm"`` (smallest key norm), ``"random"``, ``"kvpress_leverage"`` (kvpress's
        LeverageScorePress score: centred pre-RoPE keys, Gaussian sketch to ``sketch_dim``,
        jittered float32 Cholesky, recomputed over the held tokens at every forward), or a
        callable (see :class:`KVSelector`).
    eps, budget, sinks, window, rope, centred, ridge, sketch_dim, seed
        See :class:`KVSelector`.  ``sinks`` and ``window`` protect tokens under every policy.

    Guarantee
    ---------
    After every forward each layer's cache holds ``min(budget, tokens seen)`` tokens per KV head
    (fewer for ``"universal"`` when the universal sets are smaller).  With ``budget`` at least the
    number of tokens seen, nothing is evicted (``"universal"`` excepted) and the logits are those
    of the uncompressed model.  For ``"universal"``, while a head's universal set fits in
    ``budget``, an evicted token had prefix leverage ``< eps``, and for *power* attention (x²,
    row-normalised) no later query can give it attention ``>= eps`` (docs/design.md, universal
    sets); when the set outgrows ``budget``, its lowest-scoring members are evicted as well and the
    bound does not cover them.  For softmax attention no such bound holds and every policy is a
    heuristic.
    """

    def new_selector() -> KVSelector:
        return KVSelector(
            policy,
            budget=budget,
            sinks=sinks,
            window=window,
            eps=eps,
            rope=rope,
            centred=centred,
            ridge=ridge,
            sketch_dim=sketch_dim,
            seed=seed,
        )

    new_selector()  # checks every argument before the model is touched
    attns = _attention_modules(model)
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    _check_config(config)
    n_layers = max(m.layer_idx for m in attns) + 1

    captured: dict[int, dict] = {}
    handles = []

    def model_pre(module, args, kwargs):
        key = "cache" if "cache" in kwargs else "past_key_values"
        cache = kwargs.get(key)
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = getattr(config, "use_cache", True)
        if cache is None and use_cache:
            cache = DynamicCache(config=model.config)
            kwargs["cache"] = cache
            kwargs.pop("past_key_values", None)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.ndim == 2 and not bool(mask.all()):
            raise ValueError("compress() does not support padded batches: pass sequences of one length (no padding)")
        if isinstance(cache, DynamicCache):
            while len(cache.layers) < n_layers:
                cache.layers.append(DynamicLayer())
            for i in range(n_layers):
                layer = cache.layers[i]
                if isinstance(layer, BudgetLayer):
                    continue
                if type(layer) is not DynamicLayer:
                    raise TypeError(
                        f"layer {i} of the cache is a {type(layer).__name__}; compress() needs full attention"
                    )
                if layer.is_initialized and layer.get_seq_length() > 0:
                    raise ValueError(
                        "the cache already holds tokens that were not compressed; "
                        "enter compress() before the first forward of this cache"
                    )
                cache.layers[i] = BudgetLayer(new_selector())
        elif cache is not None:
            raise TypeError(f"compress() works on a DynamicCache, got {type(cache).__name__}")
        return args, kwargs

    handles.append(model.register_forward_pre_hook(model_pre, with_kwargs=True))

    for attn in attns:
        idx = attn.layer_idx
        rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb

        def attn_pre(module, args, kwargs, idx=idx):
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            captured[idx] = {"cache": cache, "pe": kwargs.get("position_embeddings")}
            layer = cache.layers[idx] if isinstance(cache, DynamicCache) and idx < len(cache.layers) else None
            mask = kwargs.get("attention_mask")
            hs = kwargs.get("hidden_states", args[0] if args else None)
            if isinstance(layer, BudgetLayer) and isinstance(mask, torch.Tensor) and hs is not None:
                q = hs.shape[-2]
                width = layer.kept() + q
                if mask.shape[-1] != width:  # another layer holds a different number of tokens
                    kwargs["attention_mask"] = _held_then_causal(mask, q, width)
            return args, kwargs

        def q_hook(module, inputs, output, idx=idx):
            captured.setdefault(idx, {})["q"] = output

        def k_hook(module, inputs, output, idx=idx):
            captured.setdefault(idx, {})["k"] = output

        def attn_post(module, args, kwargs, output, *, idx=idx, rotary=rotary):
            info = captured.pop(idx, {})
            cache = info.get("cache")
            if not isinstance(cache, DynamicCache) or idx >= len(cache.layers):
                return output
            layer = cache.layers[idx]
            if not isinstance(layer, BudgetLayer):
                return output
            sel = layer.selector
            d = module.head_dim
            queries = pre = None
            if sel.needs_queries or sel.needs_pre_keys:
                qo, ko = info["q"], info["k"]
                B, m = qo.shape[0], qo.shape[1]
                pre = ko.view(B, m, -1, d).transpose(1, 2)
                if sel.needs_queries:
                    cos, sin = info["pe"]
                    queries, _ = rotary(qo.view(B, m, -1, d).transpose(1, 2), pre, cos, sin)
            layer.compress(queries=queries, pre_keys=pre, scaling=getattr(module, "scaling", None))
            return output

        handles.append(attn.register_forward_pre_hook(attn_pre, with_kwargs=True))
        handles.append(attn.q_proj.register_forward_hook(q_hook))
        handles.append(attn.k_proj.register_forward_hook(k_hook))
        handles.append(attn.register_forward_hook(attn_post, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        captured.clear()


def _held_then_causal(mask: torch.Tensor, q: int, width: int) -> torch.Tensor:
    """A mask of the given width: held tokens visible to every query, causal among the q new ones."""
    dev = mask.device
    held = width - q
    cols = torch.arange(width, device=dev)
    rows = torch.arange(q, device=dev)
    ok = cols[None, :] < held + rows[:, None] + 1  # (q, width)
    ok = ok.expand(mask.shape[0], 1, q, width)
    if mask.dtype == torch.bool:
        return ok
    return torch.zeros(ok.shape, dtype=mask.dtype, device=dev).masked_fill(~ok, torch.finfo(mask.dtype).min)
