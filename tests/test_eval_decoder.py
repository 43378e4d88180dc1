"""streamlev.eval.decoder: the study's per-step masks equal decoding one token at a time with streamlev.hf."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import streamlev.hf as H  # noqa: E402
from streamlev.eval import decoder  # noqa: E402
from tests.test_hf import tiny_llama, tiny_qwen2  # noqa: E402


@pytest.mark.parametrize(
    "make,opts",
    [
        (tiny_llama, {"policy": "streaming_llm"}),
        (tiny_llama, {"policy": "h2o"}),
        (tiny_qwen2, {"policy": "tova"}),
        (tiny_qwen2, {"policy": "leverage", "rope": "pre", "centred": True}),
        (tiny_llama, {"policy": "universal", "eps": 0.15}),
    ],
    ids=["llama-streaming_llm", "llama-h2o", "qwen2-tova", "qwen2-leverage", "llama-universal"],
)
def test_masked_replay_equals_compressed_decoding(make, opts):
    model = make()
    T, budget, sinks, window = 26, 9, 2, 3
    # distinct tokens: a repeated token has the same pre-RoPE key in layer 0, and the tie between the two
    # copies would be decided by float32 rounding, which differs between a batched and a one-token forward
    gen = torch.Generator().manual_seed(7)
    ids = torch.stack([torch.randperm(61, generator=gen)[:T] for _ in range(2)])
    # the replay takes the first `budget` tokens in one step unless the policy is "universal"
    first = 1 if opts["policy"] == "universal" else budget
    with torch.no_grad(), H.compress(model, budget=budget, sinks=sinks, window=window, **opts):
        out = model(ids[:, :first])
        steps = [out.logits]
        for t in range(first, T):
            out = model(ids[:, t : t + 1], cache=out.cache)
            steps.append(out.logits)
    sequential = torch.cat(steps, dim=1)
    with decoder.masked_attention(model):
        replay, run = decoder.masked_forward(model, ids, opts, budget, sinks=sinks, window=window)
    assert torch.allclose(replay, sequential, atol=1e-5)
    assert len(run.loss) == model.config.num_hidden_layers
    full = model(ids).logits
    assert not torch.allclose(full[:, budget + 1 :], sequential[:, budget + 1 :], atol=1e-3)  # it did evict
    assert model.config._attn_implementation != "streamlev_masked"


def test_passkey_prompts_share_one_length():
    class Tok:
        def __call__(self, text, return_tensors=None):
            class Out:
                input_ids = [ord(c) for c in text]

            return Out()

    prompts = decoder.passkey_prompts(Tok(), 6, 400, seed=1)
    assert len({p["ids"].shape[1] for p in prompts}) == 1
    for p in prompts:
        text = "".join(map(chr, p["ids"][0].tolist()))
        assert text.count(p["key"]) == 2


def test_power_weights_are_squared_logits_over_the_visible_ones():
    import numpy as np

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, 7, generator=gen, dtype=torch.float64)
    visible = torch.rand(2, 3, 5, 7, generator=gen) < 0.6
    visible[..., 0] = True
    got = decoder.attention_weights(logits, visible, "power").numpy()
    x, v = logits.numpy(), visible.numpy()
    for idx in np.ndindex(*x.shape[:-1]):
        num = np.where(v[idx], x[idx] ** 2, 0.0)
        np.testing.assert_allclose(got[idx], num / num.sum(), rtol=1e-13)
    soft = decoder.attention_weights(logits, visible, "softmax").numpy()
    for idx in np.ndindex(*x.shape[:-1]):
        e = np.where(v[idx], np.exp(x[idx] - x[idx][v[idx]].max()), 0.0)
        np.testing.assert_allclose(soft[idx], e / e.sum(), rtol=1e-13)
    with pytest.raises(ValueError, match="kernel must be one of"):
        decoder.attention_weights(logits, visible, "relu")


def _spearman(a, b):
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_leverage_attention_correlation_matches_eager_attention_and_svd_leverage():
    import numpy as np

    model = tiny_llama(seed=2)
    with torch.no_grad():  # peaked attention, so "total" and "mean" rank the keys differently
        for layer in model.model.layers:
            layer.self_attn.k_proj.weight.mul_(6.0)
            layer.self_attn.q_proj.weight.mul_(6.0)
    T, sinks = 30, 2
    gen = torch.Generator().manual_seed(11)
    passages = [{"ids": torch.randperm(61, generator=gen)[:T]} for _ in range(2)]
    rows = decoder.leverage_attention_correlation(model, passages, batch=2, sinks=sinks)
    got = {(r["layer"], r["head"], r["rope"], r["attention"]): r["spearman"] for r in rows}

    # independent reference: eager attention weights, the cache's post-RoPE keys, k_proj's pre-RoPE keys
    ids = torch.stack([p["ids"] for p in passages])
    pre = {}
    hooks = [
        layer.self_attn.k_proj.register_forward_hook(lambda m, a, o, i=i: pre.__setitem__(i, o))
        for i, layer in enumerate(model.model.layers)
    ]
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(ids, use_cache=True, output_attentions=True)
    for h in hooks:
        h.remove()
    cfg = model.config
    Hk, g, d = cfg.num_key_value_heads, cfg.num_attention_heads // cfg.num_key_value_heads, cfg.head_dim
    for li in range(cfg.num_hidden_layers):
        att = out.attentions[li].double().numpy()  # (B, Hq, T, T)
        post = out.past_key_values.layers[li].keys.double().numpy()
        pre_k = pre[li].view(2, T, Hk, d).transpose(1, 2).double().numpy()
        for h in range(Hk):
            want = {}
            for b in range(2):
                a = att[b, h * g : (h + 1) * g].sum(axis=0)  # (T queries, T keys)
                total = a.sum(axis=0)
                mean = total / (g * (T - np.arange(T)))
                for rope, K in (("post", post[b, h]), ("pre", pre_k[b, h])):
                    U = np.linalg.svd(K, full_matrices=False)[0]
                    tau = (U**2).sum(axis=1)
                    for kind, x in (("total", total), ("mean", mean)):
                        want.setdefault((rope, kind), []).append(_spearman(tau[sinks:], x[sinks:]))
            for (rope, kind), v in want.items():
                assert got[li, h, rope, kind] == pytest.approx(np.mean(v), abs=1e-9), (li, h, rope, kind)
    assert len(got) == cfg.num_hidden_layers * Hk * 4
    assert any(abs(got[k[:3] + ("mean",)] - got[k[:3] + ("total",)]) > 0.05 for k in got)


def test_tables_mark_runs_missing_from_a_record():
    row = {"task": "perplexity", "attention_loss": 0.25, "max_evicted_attention": 0.5}
    rec = {
        "results": [
            {**row, "policy": "full", "budget": 64, "ppl": 10.0},
            {**row, "policy": "full", "budget": 128, "ppl": 9.0},
            {**row, "policy": "tova", "budget": 128, "ppl": 11.5},
        ]
    }
    text = decoder.tables(rec)
    assert "| tova | – | 11.50 |" in text
    assert "| tova | – | 0.2500 |" in text
