"""streamlev.nn (PyTorch LevAttention) against numpy oracles, and the training script end to end.

Budget: about a minute on 2 shared cores.  torch is part of the test extra, so nothing here is skipped.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import streamlev as sl
from streamlev import nn as lnn

from . import naive, naive_nn
from .strategies import key_matrices

torch.set_num_threads(1)


def close(a, b, rtol=1e-6, atol=1e-9):
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    return bool(np.all(np.abs(a - b) <= atol + rtol * np.abs(b)))


# --- leverage scores ---------------------------------------------------------------------------------


@settings(max_examples=40)
@given(key_matrices(max_n=70, max_d=16))
def test_leverage_scores_match_numpy(K):
    t = lnn.leverage_scores(torch.from_numpy(np.asarray(K, dtype=np.float64)))
    assert t.dtype == torch.float64 and t.shape == (K.shape[0],)
    assert close(t.numpy(), sl.leverage_scores(K))
    assert close(t.numpy(), naive.leverage(K))


def test_leverage_scores_badly_scaled_and_outliers():
    rng = np.random.default_rng(1)
    n, d = 65, 16
    cases = {
        "column scales 1e-6..1e6": rng.standard_normal((n, d)) * np.logspace(-6, 6, d),
        "one outlier channel x1e4": rng.standard_normal((n, d)) * np.r_[1e4, np.ones(d - 1)],
        "outlier rows x1e5": rng.standard_normal((n, d)) * np.where(rng.random(n) < 0.1, 1e5, 1.0)[:, None],
        "rank 5": rng.standard_normal((n, 5)) @ rng.standard_normal((5, d)),
        "rank 5 with scaled columns": (rng.standard_normal((n, 5)) @ rng.standard_normal((5, d)))
        * np.logspace(-4, 4, d),
        "zero column and duplicate rows": np.c_[np.zeros(n), rng.standard_normal((n, d - 1))][rng.integers(0, 20, n)],
        "n < d": rng.standard_normal((10, d)),
        "all zero": np.zeros((n, d)),
        "vandermonde, cond 2e6 after column scaling": np.vander(np.linspace(0, 1, n), 10),
    }
    for name, K in cases.items():
        t = lnn.leverage_scores(torch.from_numpy(K)).numpy()
        assert close(t, sl.leverage_scores(K)), name
        assert close(t, naive.leverage(K)), name
        assert abs(t.sum() - naive.rank(K)) < 1e-8, name


def test_leverage_scores_batched_and_float32():
    rng = np.random.default_rng(2)
    K = rng.standard_normal((3, 2, 40, 8)) * np.logspace(-3, 3, 8)
    t = lnn.leverage_scores(torch.from_numpy(K.astype(np.float32)))  # float32 keys, float64 arithmetic
    assert t.shape == (3, 2, 40) and t.dtype == torch.float64
    t32 = lnn.leverage_scores(torch.from_numpy(K.astype(np.float32)), dtype=None)
    assert t32.dtype == torch.float32
    for i in range(3):
        for h in range(2):
            ref = sl.leverage_scores(K[i, h].astype(np.float32))
            assert close(t[i, h].numpy(), ref)
            assert close(t32[i, h].numpy(), ref, rtol=1e-3, atol=1e-5)


def test_leverage_scores_no_grad():
    K = torch.randn(20, 4, requires_grad=True)
    t = lnn.leverage_scores(K)
    assert not t.requires_grad


# --- selection rules ---------------------------------------------------------------------------------


def test_select_keys_deterministic_rules_match_oracle():
    rng = np.random.default_rng(3)
    K = rng.standard_normal((2, 3, 30, 6)) * np.logspace(-2, 2, 6)
    Kt = torch.from_numpy(K)
    for rule in ("leverage", "norm", "first"):
        idx = lnn.select_keys(Kt, 7, rule).numpy()
        assert idx.shape == (2, 3, 7)
        for b in range(2):
            for h in range(3):
                assert np.array_equal(np.sort(idx[b, h]), naive_nn.kept_indices(K[b, h], 7, rule)), rule


def test_select_keys_random_distinct_and_input_errors():
    K = torch.randn(4, 30, 6)
    idx = lnn.select_keys(K, 10, "random")
    assert all(len(set(row.tolist())) == 10 for row in idx)
    assert int(idx.min()) >= 0 and int(idx.max()) < 30
    with pytest.raises(ValueError, match="rule must be one of"):
        lnn.select_keys(K, 3, "topk")
    with pytest.raises(ValueError, match="k must be <="):
        lnn.select_keys(K, 31)
    with pytest.raises(TypeError, match="torch.Tensor"):
        lnn.select_keys(np.ones((5, 2)), 1)
    with pytest.raises(TypeError, match="floating-point"):
        lnn.leverage_scores(torch.ones(5, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        lnn.LevAttention(10, 3)


def test_kmeans_one_key_per_well_separated_cluster():
    rng = np.random.default_rng(4)
    k, d = 6, 5
    centres = rng.standard_normal((k, d)) * 100.0
    sizes = [3, 12, 5, 20, 8, 4]  # no 2-member cluster: its mean is equidistant from both
    labels = np.repeat(np.arange(k), sizes)
    K = centres[labels] + rng.standard_normal((labels.size, d))
    perm = rng.permutation(labels.size)
    K, labels = K[perm], labels[perm]
    gen = torch.Generator().manual_seed(0)
    batch = torch.from_numpy(np.stack([K, K[::-1].copy()]))
    idx = lnn.kmeans_select(batch, k, generator=gen).numpy()
    for b, Kb, lab in ((0, K, labels), (1, K[::-1], labels[::-1])):
        got = idx[b]
        assert sorted(lab[got].tolist()) == list(range(k))  # one key from every cluster
        for j in got:  # ... and it is the member nearest its cluster's mean (brute force)
            members = np.flatnonzero(lab == lab[j])
            mean = Kb[members].mean(axis=0)
            nearest = members[np.argmin(np.linalg.norm(Kb[members] - mean, axis=1))]
            assert j == nearest


def test_kmeans_distinct_even_with_duplicates():
    K = torch.zeros(2, 12, 3)
    K[:, 6:] = 1.0  # only two distinct points, ask for 5 keys
    idx = lnn.select_keys(K, 5, "kmeans")
    assert all(len(set(row.tolist())) == 5 for row in idx)
    idx = lnn.kmeans_select(torch.randn(15, 4), 15)
    assert sorted(idx.tolist()) == list(range(15))


# --- the attention layer -----------------------------------------------------------------------------


def _numpy_params(layer):
    g = lambda t: t.detach().numpy()  # noqa: E731
    return g(layer.qkv.weight), g(layer.qkv.bias), g(layer.proj.weight), g(layer.proj.bias)


@pytest.mark.parametrize("rule", ["leverage", "norm", "first"])
def test_levattention_output_matches_dense_numpy(rule):
    torch.manual_seed(0)
    layer = lnn.LevAttention(16, num_heads=2, k_keep=5, rule=rule).double()
    x = torch.randn(3, 21, 16, dtype=torch.float64)
    x[:, :, 3] *= 50.0  # an outlier channel in the input
    out = layer(x)
    ref, kept = naive_nn.self_attention(x.numpy(), *_numpy_params(layer), heads=2, k=5, rule=rule)
    assert np.allclose(out.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    got = np.sort(layer.last_indices.numpy(), axis=-1)
    assert np.array_equal(got, np.array(kept))


def test_levattention_full_mode_and_switch():
    torch.manual_seed(1)
    layer = lnn.LevAttention(8, num_heads=2, k_keep=3, full=True).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    ref_full, _ = naive_nn.self_attention(x.numpy(), *_numpy_params(layer), heads=2, k=None)
    assert np.allclose(layer(x).detach().numpy(), ref_full, rtol=1e-10, atol=1e-12)
    assert layer.last_indices is None
    lnn.set_attention(layer, full=False)
    ref_sel, _ = naive_nn.self_attention(x.numpy(), *_numpy_params(layer), heads=2, k=3)
    assert np.allclose(layer(x).detach().numpy(), ref_sel, rtol=1e-10, atol=1e-12)
    lnn.set_attention(layer, k_keep=9)  # k >= n: full attention again
    assert np.allclose(layer(x).detach().numpy(), ref_full, rtol=1e-10, atol=1e-12)


def test_gradients_flow_through_kept_entries_only():
    torch.manual_seed(2)
    q = torch.randn(2, 3, 12, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 12, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 12, 5, dtype=torch.float64, requires_grad=True)
    idx = lnn.select_keys(k, 4, "leverage")
    out = lnn.attend_kept(q, k, v, idx)
    (out * torch.randn_like(out)).sum().backward()
    kept = torch.zeros(2, 3, 12, dtype=torch.bool)
    kept.scatter_(-1, idx, True)
    for g in (q.grad, k.grad, v.grad):
        assert torch.isfinite(g).all()
    assert (v.grad[~kept] == 0).all() and (k.grad[~kept] == 0).all()
    assert (v.grad[kept].abs().sum(-1) > 0).all() and (k.grad[kept].abs().sum(-1) > 0).all()
    assert (q.grad.abs().sum(-1) > 0).all()
    # the gradient through the kept entries is the true derivative (selection held fixed)
    fixed = idx[:1, :1].clone()
    assert torch.autograd.gradcheck(
        lambda a, b, c: lnn.attend_kept(a, b, c, fixed),
        (q[:1, :1].detach().requires_grad_(), k[:1, :1].detach().requires_grad_(), v[:1, :1].detach().requires_grad_()),
    )


def test_tiny_vit_all_parameters_get_finite_gradients():
    torch.manual_seed(3)
    for rule in lnn.RULES:
        model = lnn.TinyViT(dim=16, depth=2, heads=2, k_keep=6, rule=rule, full=False, embed_kernel=3)
        x = torch.randn(4, 1, 8, 8)
        loss = torch.nn.functional.cross_entropy(model(x), torch.arange(4))
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (rule, name)
        assert all(b.attn.last_indices.shape == (4, 2, 6) for b in model.blocks)


# --- training script ---------------------------------------------------------------------------------


def test_train_quick_end_to_end(tmp_path, capsys):
    from streamlev.eval import train

    out = tmp_path / "res.json"
    assert train.main(["--quick", "--steps", "4", "--eval-every", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 8 (12%) | full softmax (a) |" in text and "leverage, warm (c)" in text
    res = json.loads(out.read_text())
    assert res["complete"] and res["config"]["steps"] == 4 and res["config"]["n_tokens"] == 65
    table = res["summary"]["k=8"]
    expected = {"full softmax (a)", "leverage, inference only (d)", "leverage, scratch (b)", "leverage, warm (c)"}
    expected |= {f"{r}, scratch" for r in train.OTHER_RULES}
    expected |= {f"{r}, inference only" for r in train.OTHER_RULES}
    assert set(table) == expected
    for r in res["runs"]:
        assert 0.0 <= r["acc"] <= 1.0
        if r["curve"] is not None:
            assert r["curve"]["step"] == [2, 4] and r["curve"]["test_acc"][-1] == r["acc"]
            assert all(np.isfinite(r["curve"]["train_loss"]))


def test_training_learns():
    from streamlev.eval import train

    torch.manual_seed(0)
    data = train.load_digits_split()
    assert len(data[0]) + len(data[2]) == 1797
    cfg = {**train.DEFAULTS, "eval_every": 60}
    res = train.train_model(data, mode="scratch", rule="leverage", k=8, seed=0, steps=60, cfg=cfg)
    assert res["acc"] > 0.3, res["curve"]  # chance is 0.1


def test_core_import_does_not_import_torch():
    code = "import sys, streamlev; assert 'torch' not in sys.modules and 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
