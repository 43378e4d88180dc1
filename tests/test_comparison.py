"""streamlev.compare: the harness runs every method on the same blocks and measures it against the exact set."""

import json

import numpy as np
import pytest

import streamlev
from streamlev.comparison import Comparison

from . import naive


def keys(n=2000, d=6, seed=0):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d))
    K[[3, n // 3, n - 1]] *= [[25.0], [40.0], [60.0]]
    return K


def test_exact_one_pass_and_two_pass_rows_show_recall_and_precision_1(tmp_path):
    K = keys()
    path = tmp_path / "k.npy"
    np.save(path, K)
    res = streamlev.compare(str(path), 0.02, ["exact", "online", "two-pass"], seeds=2)
    assert np.array_equal(res.exact_set, naive.universal_set(K, 0.02))  # the oracle's set
    assert res.exact_set.size >= 3
    for s in res.summary():
        assert (s["recall"], s["precision"], s["runs"]) == (1.0, 1.0, 1)  # deterministic: one run
        assert s["ratio_quantiles"] == pytest.approx([1.0] * 5, rel=1e-8)
    for r in res.runs:
        assert r["set"] == [int(i) for i in res.exact_set]


def test_recall_and_precision_are_counted_against_the_exact_set():
    K = keys()
    res = streamlev.compare(K, 0.02, ["uniform:100", "countsketch:300"], seeds=[4, 5])
    exact = set(naive.universal_set(K, 0.02))
    assert len(res.runs) == 4 and [r["seed"] for r in res.runs] == [4, 5, 4, 5]
    for r in res.runs:
        found = set(r["set"])
        hit = len(found & exact)
        assert r["recall"] == pytest.approx(hit / len(exact))
        if found:
            assert r["precision"] == pytest.approx(hit / len(found))
        else:
            assert r["precision"] is None  # nothing selected: no precision
        assert r["state_bytes"] > 0 and r["rows_per_s"] > 0


def test_the_same_blocks_reach_every_method(monkeypatch):
    K = keys(n=900)
    seen = []

    def source():
        seen.append(0)
        return iter(np.array_split(K, 4))

    res = streamlev.compare(source, 0.05, ["online", "countsketch:64"], seeds=2, block_size=None)
    assert len(seen) == 2 + 1 + 2 * 2  # reference (2 passes), online (1), countsketch 2 seeds x 2 passes
    assert res.n == 900 and res.d == 6


def test_budget_in_bytes_is_converted_to_the_natural_size():
    res = streamlev.compare(keys(n=600), 0.05, ["countsketch:4KiB"], seeds=1)
    (run,) = res.runs
    assert run["size"] == 4096 // (8 * 6)
    assert "budget" in run["label"]


def test_json_round_trip_and_markdown():
    res = streamlev.compare(keys(n=600), 0.05, ["online", "uniform:64", "kvpress"], seeds=2)
    text = res.to_json()
    back = Comparison.from_json(text)
    assert back == res
    assert json.loads(back.to_json()) == json.loads(text)
    md = res.to_markdown()
    for label in ("online", "uniform sample_rows=64", "kvpress sketch_dim=48"):
        assert f"| {label} |" in md


def test_plot_draws_recall_and_precision_against_memory():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    res = streamlev.compare(keys(n=600), 0.05, ["online", "countsketch:64", "countsketch:256"], seeds=2)
    fig = res.plot()
    assert [ax.get_ylabel() for ax in fig.axes] == ["recall", "precision"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_p_other_than_2_compares_against_the_lp_set():
    K = keys(n=300, d=3)
    res = streamlev.compare(K, 0.1, seeds=1, p=3.0)
    assert [s["method"] for s in res.summary()] == ["exact", "power"]
    assert np.array_equal(res.exact_set, streamlev.universal_set(K, 0.1, p=3.0))
    assert res.summary()[1]["recall"] == 1.0  # OnlinePowerSet keeps a superset


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"methods": ["nope"]}, ValueError, "unknown method"),
        ({"methods": ["online:5"]}, ValueError, "no size"),
        ({"methods": ["sampling:1KiB"]}, ValueError, "natural size"),
        ({"methods": ["countsketch:5 parsecs"]}, ValueError, "unit"),
        ({"methods": ["power"]}, ValueError, "p != 2"),
        ({"seeds": []}, ValueError, "seeds"),
        ({"seeds": True}, TypeError, "seeds"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        streamlev.compare(keys(n=100), 0.1, **kwargs)


def test_a_one_shot_source_is_refused():
    with pytest.raises(TypeError, match="read only once"):
        streamlev.compare(iter([keys(n=100)]), 0.1)


def test_a_method_that_fails_on_the_keys_is_reported_not_raised():
    """kvpress's float32 Cholesky with an absolute jitter fails when a few channels are huge."""
    rng = np.random.default_rng(1)
    K = rng.standard_normal((3000, 8))
    K[:, :2] *= [1e3, 3e2]
    res = streamlev.compare(K, 0.05, ["kvpress", "online"], seeds=1)
    failed, ok = res.summary()
    assert failed["errors"] == 1 and "Cholesky" in failed["error"] and failed["recall"] is None
    assert ok["recall"] == 1.0
    assert "failed in 1 of 1 runs" in res.to_markdown()
    assert Comparison.from_json(res.to_json()) == res
