"""The demo's numbers, recomputed independently from the bundled real keys."""

import numpy as np

from streamlev.datasets import load_minilm_keys
from streamlev.demo import run_demo

from . import naive


def test_demo_numbers_match_oracle():
    lines = []
    res = run_demo(0.1, block=50, out=lines.append)
    sample = load_minilm_keys()
    L, H, n, d = sample.K.shape
    assert res["bound"] == d / 0.1
    for layer in range(L):
        layer_max = 0.0
        for h in range(H):
            K = sample.K[layer, h].astype(np.float64)
            tau = naive.leverage(K)
            U = naive.universal_set(K, 0.1)
            assert abs(res["sizes"][layer, h] - U.size) <= np.sum(np.abs(tau - 0.1) < 1e-8)
            A = naive.power_attention(sample.Q[layer, h], K, 2.0)
            excluded = np.setdiff1d(np.arange(n), U)
            assert A[:, excluded].max() < 0.1
            layer_max = max(layer_max, A[:, excluded].max())
        assert np.isclose(res["max_excluded"][layer], layer_max, rtol=1e-6)
    assert (res["max_excluded"] < 0.1).all()
    assert res["sizes"].max() <= d / 0.1
    assert any("guarantee" in line for line in lines)
