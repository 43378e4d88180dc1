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
