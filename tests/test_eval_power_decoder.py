"""streamlev.eval.power_decoder: power attention, its training, and the universal-set guarantee on it.

The guarantee is checked against tests/naive_kv.py (the universal policy one head at a time, numpy
float64) and a numpy power attention: on layer 0 (whose keys do not depend on what was evicted) every
key the policy evicted gets, from every later query, power attention at most its exact prefix
leverage at eviction and below eps.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import streamlev.hf as H  # noqa: E402
from streamlev._kvselect import KVSelector  # noqa: E402
from streamlev.eval import decoder  # noqa: E402
from streamlev.eval import power_decoder as P  # noqa: E402
from tests.naive_kv import NaiveHead, naive_layer_step  # noqa: E402

TINY = {
    "vocab_size": 61,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 6,
    "max_position_embeddings": 256,
}


def tiny_power(seed=0):
    return P.build_model(seed=seed, **TINY).eval()


def _ids(T, seed=7, rows=2):
    # distinct tokens: a repeated token has the same pre-RoPE key in layer 0 and equal-score ties would be
    # decided by float32 rounding, which differs between a batched and a one-token forward
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(61, generator=gen)[:T] for _ in range(rows)])


def _naive_power(q, k, visible):
    """Power attention weights, one query row at a time: (q·k)² over the visible keys, normalised."""
    x = (q @ k.T) ** 2
    w = np.where(visible, x, 0.0)
    return w / w.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# the attention function
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_power_attention_equals_naive_numpy(mask_kind):
    gen = torch.Generator().manual_seed(1)
    B, Hk, g, T, S, d = 2, 2, 3, 4, 7, 5  # the 4 queries are the last of 7 positions (3 are cached)
    q = torch.randn(B, Hk * g, T, d, generator=gen, dtype=torch.float64)
    k = torch.randn(B, Hk, S, d, generator=gen, dtype=torch.float64)
    v = torch.randn(B, Hk, S, d, generator=gen, dtype=torch.float64)
    causal = np.tril(np.ones((T, S), dtype=bool), S - T)
    visible = np.broadcast_to(causal, (B, T, S)).copy()
    mask = None
    if mask_kind != "none":
        visible[1, :, 0] = False  # a padded first token in row 1
        m = torch.from_numpy(visible[:, None])
        mask = m if mask_kind == "bool" else torch.zeros(m.shape, dtype=torch.float64).masked_fill(~m, -1e30)

    class Module:
        training = False

    out, _ = P.power_attention(Module(), q, k, v, mask, scaling=0.37)
    assert out.shape == (B, T, Hk * g, d)
    qn, kn, vn = q.numpy(), k.numpy(), v.numpy()
    for b in range(B):
        for h in range(Hk * g):
            w = _naive_power(qn[b, h], kn[b, h // g], visible[b])
            np.testing.assert_allclose(out[b, :, h].numpy(), w @ vn[b, h // g], rtol=1e-12, atol=1e-14)


def test_model_attends_with_power_attention():
    model = tiny_power()
    assert model.config._attn_implementation == P.ATTENTION
    ids = _ids(12, rows=1)
    seen = {}
    attn = model.model.layers[0].self_attn
    hook = attn.register_forward_hook(lambda m, a, kw, out: seen.__setitem__("out", out[0]), with_kwargs=True)
    try:
        model(ids)
    finally:
        hook.remove()
    # the same model with transformers' eager softmax attention gives another output: the power function ran
    ref = seen["out"].detach().clone()
    model.set_attn_implementation("eager")
    try:
        hook = attn.register_forward_hook(lambda m, a, kw, out: seen.__setitem__("out", out[0]), with_kwargs=True)
        model(ids)
        hook.remove()
    finally:
        model.set_attn_implementation(P.ATTENTION)
    assert not torch.allclose(ref, seen["out"], atol=1e-4)


def test_byte_tokenizer_round_trips_utf8():
    tok = P.ByteTokenizer()
    text = "naïve — ∑ x²"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids.shape == (1, len(text.encode()))
    assert tok.decode(ids[0]) == text
    with pytest.raises(ValueError, match="return_tensors"):
        tok(text, return_tensors="np")


def test_tova_power_scores_are_the_last_querys_power_weights():
    gen = torch.Generator().manual_seed(2)
    B, H, g, n, m, d = 2, 2, 3, 6, 2, 4
    keys = torch.randn(B, H, n, d, generator=gen, dtype=torch.float64)
    queries = torch.randn(B, H * g, m, d, generator=gen, dtype=torch.float64)
    got = P.tova_power(keys, queries, None).numpy()
    for b in range(B):
        for h in range(H):
            rows = [
                _naive_power(queries[b, h * g + i, -1].numpy()[None], keys[b, h].numpy(), True)[0] for i in range(g)
            ]
            np.testing.assert_allclose(got[b, h], np.mean(rows, axis=0), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = P.build_model(seed=0, **{**TINY, "vocab_size": 256, "num_hidden_layers": 1})
    stream = torch.tensor(list(b"the cat sat on the mat. " * 40), dtype=torch.long)
    cfg = {"steps": 40, "batch": 4, "context": 24, "lr": 1e-2, "warmup": 5, "weight_decay": 0.0, "seed": 0}
    stats = P.train(model, stream, cfg, log=lambda _: None)
    assert stats["steps_done"] == 40
    assert stats["final_loss"] < 0.6 * stats["first_loss"]
    assert not model.training


def test_training_documents_hold_out_the_evaluation_documents_and_their_versions():
    held = ["/usr/share/common-licenses/GPL-3", "pydoc_data.topics['types']"]
    names = [n for n, _ in P.training_documents(held)]
    assert "pydoc_data.topics['types']" not in names
    assert not any(n.startswith("/usr/share/common-licenses/GPL-") for n in names)
    assert "pydoc_data.topics['compound']" in names


# ------------------------------------------------------------------------------------------------
# the guarantee
# ------------------------------------------------------------------------------------------------


def _layer0_post_rope(model, ids):
    caught, hooks = decoder.capture_projections(model)
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    B, T = ids.shape
    d = model.config.head_dim
    cos, sin = caught["pe"][0]
    import transformers.models.llama.modeling_llama as ml

    q = caught["q"][0].view(B, T, -1, d).transpose(1, 2)
    k = caught["k"][0].view(B, T, -1, d).transpose(1, 2)
    q, k = ml.apply_rotary_pos_emb(q, k, cos, sin)
    return q.double().numpy(), k.double().numpy()


def test_universal_evictions_get_attention_below_eps_and_below_their_leverage():
    model = tiny_power(seed=3)
    T, budget, sinks, window, eps = 48, 26, 2, 3, 0.3  # the universal sets (<= 6/0.3 + 5 tokens) always fit
    ids = _ids(T)
    logits, run, audit = P.audit_universal(model, ids, budget, eps=eps, sinks=sinks, window=window)
    assert audit["evicted_covered"] > 0 and audit["evicted_capped"] == 0
    assert audit["max_w_covered"] < eps
    # independent check on layer 0: naive policy, numpy power attention, exact (pseudo-inverse) leverage
    q, k = _layer0_post_rope(model, ids)
    B, Hk, _, d = k.shape
    g = q.shape[1] // Hk
    # one kept count per layer: the largest universal set over every row and head (as the selector)
    heads = [NaiveHead("universal", budget, sinks, window, eps=eps) for _ in range(B * Hk)]
    flat = k.reshape(B * Hk, T, d)
    evicted_at = np.full((B * Hk, T), T)
    tau_at = np.zeros((B * Hk, T))
    for t in range(T):
        before = [list(h.kept) for h in heads]
        after = naive_layer_step(heads, flat[:, t : t + 1], [None] * (B * Hk), None, 1.0)
        for i in range(B * Hk):
            G = flat[i, : t + 1].T @ flat[i, : t + 1]
            for j in set(before[i]) - set(after[i]):
                evicted_at[i, j] = t
                tau_at[i, j] = flat[i, j] @ np.linalg.pinv(G) @ flat[i, j]
    evicted_at, tau_at = evicted_at.reshape(B, Hk, T), tau_at.reshape(B, Hk, T)
    got = run.selectors[0].positions.numpy()
    for b in range(B):
        for h in range(Hk):
            assert list(got[b, h]) == heads[b * Hk + h].kept
    worst = 0.0
    for b in range(B):
        for hq in range(Hk * g):
            h = hq // g
            w = _naive_power(q[b, hq], k[b, h], np.tril(np.ones((T, T), dtype=bool)))
            for t in range(T):
                for j in np.flatnonzero(evicted_at[b, h] < t):
                    assert w[t, j] <= tau_at[b, h, j] + 1e-12
                    worst = max(worst, w[t, j])
    assert 0.0 < worst < eps
    assert math.isclose(worst, audit["layers"][0]["max_w_covered"], rel_tol=1e-9)
    assert math.isclose(worst, run.max_evicted[0], rel_tol=1e-4)


def test_the_assertion_fires_when_a_policy_evicts_heavy_keys(monkeypatch):
    model = tiny_power(seed=3)
    T, budget, sinks, window, eps = 48, 26, 2, 3, 0.3
    ids = _ids(T)
    original = KVSelector._leverage
    # a broken "universal" that ranks by 1 - leverage: it keeps the light keys and evicts the heavy ones
    monkeypatch.setattr(KVSelector, "_leverage", lambda self, new: 1.0 - original(self, new))
    with pytest.raises(P.GuaranteeError, match="got power attention"):
        P.audit_universal(model, ids, budget, eps=eps, sinks=sinks, window=window)


def test_audit_reports_the_steps_where_the_universal_set_did_not_fit():
    model = tiny_power(seed=3)
    T, budget, sinks, window, eps = 48, 8, 2, 3, 0.05  # sets of up to 6/0.05 tokens cannot fit in 8
    _, run, audit = P.audit_universal(model, _ids(T), budget, eps=eps, sinks=sinks, window=window)
    assert audit["evicted_capped"] > 0
    assert 0.0 < audit["did_not_fit_fraction"] <= 1.0
    assert audit["max_universal_set"] > budget
    assert math.isclose(max(audit["max_w_covered"], audit["max_w_capped"]), max(run.max_evicted.values()), rel_tol=1e-3)


# ------------------------------------------------------------------------------------------------
# the replay is decoding
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts",
    [{"policy": "universal", "eps": 0.3}, {"policy": "h2o"}, {"policy": "leverage"}, {"policy": P.tova_power}],
    ids=["universal", "h2o", "leverage", "tova_power"],
)
def test_masked_replay_equals_compressed_decoding_for_the_power_model(opts):
    model = tiny_power(seed=1)
    T, budget, sinks, window = 26, 9, 2, 3
    ids = _ids(T)
    first = 1 if opts["policy"] == "universal" else budget  # the replay's first step (see decoder)
    with torch.no_grad(), H.compress(model, budget=budget, sinks=sinks, window=window, **opts):
        out = model(ids[:, :first])
        steps = [out.logits]
        for t in range(first, T):
            out = model(ids[:, t : t + 1], cache=out.cache)
            steps.append(out.logits)
    sequential = torch.cat(steps, dim=1)
    with decoder.masked_attention(model):
        replay, run = decoder.masked_forward(model, ids, opts, budget, sinks=sinks, window=window, kernel="power")
    assert torch.allclose(replay, sequential, atol=1e-5)
    with torch.no_grad():
        full = model(ids).logits
    assert not torch.allclose(full[:, budget + 1 :], sequential[:, budget + 1 :], atol=1e-3)  # it did evict
    assert model.config._attn_implementation == P.ATTENTION


def test_ridge_runs_report_the_exact_leverage_of_the_evicted_keys_and_tables_render():
    model = tiny_power(seed=3)
    passages = [{"ids": row} for row in _ids(40)]
    rows = P.ridge_runs(model, passages, budget=24, eps=0.3, ridges=[1e-6, 1e-12], batch=2, log=lambda _: None)
    assert [r["ridge"] for r in rows] == [1e-6, 1e-12]
    for r in rows:
        assert r["max_w_covered"] < 0.3
        assert r["max_w_covered"] <= r["max_exact_leverage_covered"] + 1e-9  # w <= exact leverage at eviction
        assert math.isfinite(r["ppl"]) and r["ppl"] > 1
    text = P.tables({"results": [{"task": "perplexity", **_row(b)} for b in (8, 16)] + rows})
    assert "| 1e-12 |" in text and "| full | 2.000 | 2.000 |" in text


def _row(budget):
    return {"policy": "full", "budget": budget, "ppl": 2.0, "attention_loss": 0.0, "max_evicted_attention": 0.0}


def test_perplexity_runs_rows_match_the_model_and_the_audit():
    model = tiny_power(seed=3)
    ids = _ids(44, rows=2)
    passages = [{"ids": row} for row in ids]
    B = 24  # above the study's 4 sinks + 16 recent tokens
    rows = P.perplexity_runs(model, passages, [B], batch=2, eps=[0.3], log=lambda msg: None)
    by = {r["policy"]: r for r in rows}
    with torch.no_grad():
        logits = model(ids).logits.double()
    nll = -torch.log_softmax(logits[:, B:-1], dim=-1).gather(-1, ids[:, B + 1 :, None]).sum()
    assert by["full"]["ppl"] == pytest.approx(math.exp(float(nll) / ids[:, B + 1 :].numel()), rel=1e-6)
    assert by["full"]["bits_per_byte"] == pytest.approx(math.log2(by["full"]["ppl"]))
    assert by["universal"]["audit"]["eps"] == 0.3
    assert by["universal"]["max_evicted_attention"] >= by["universal"]["audit"]["max_w_covered"] * (
        1 - 1e-5
    )  # float32 run
    assert by["streaming_llm"]["attention_loss"] > 0.0
