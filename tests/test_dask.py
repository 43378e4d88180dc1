"""streamlev.dask on a real distributed.LocalCluster (2 worker processes) and on the sync scheduler.

Budget: about 90 s including cluster start and stop.  Every result is compared
with the in-memory exact path and with the SVD oracle of tests/naive.py.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from dask.delayed import Delayed
from distributed import Client, LocalCluster
from distributed.protocol import deserialize, serialize
from hypothesis import given
from hypothesis import strategies as st

import streamlev as sl
import streamlev.dask as sd
from streamlev import OnlineLeverage

from . import naive, naive_lp
from .strategies import eps_values, key_matrices

ROOT = Path(__file__).resolve().parents[1]
OUTLIERS_PER_CHUNK = 3


# -- helpers run on the workers (pickled by reference: tests.test_dask must import there) -------
def _gen_keys(*, d, seed, block_info=None):
    """A chunk of Gaussian keys with OUTLIERS_PER_CHUNK rows scaled by 1e3, made on the worker."""
    info = block_info[None]
    rows = info["chunk-shape"][0]
    rng = np.random.default_rng([seed, info["chunk-location"][0]])
    K = rng.standard_normal((rows, d))
    K[rng.choice(rows, size=min(rows, OUTLIERS_PER_CHUNK), replace=False)] *= 1e3
    return K


def generated_keys(n, d, chunks, seed=0):
    """(n, d) keys produced chunk by chunk on the workers (one fusable task per chunk)."""
    return da.map_blocks(_gen_keys, d=d, seed=seed, chunks=(chunks, (d,)), dtype=np.float64, meta=np.empty((0, 0)))


def _die_once(block, *, marker, target, block_info=None):
    """Kill the worker process the first time chunk `target` is computed."""
    if block_info[0]["chunk-location"][0] == target and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write("killed\n")
        os._exit(1)
    return block


def uneven_chunks(n, rng, pieces):
    cuts = np.sort(rng.choice(np.arange(1, n), size=pieces - 1, replace=False))
    return tuple(int(c) for c in np.diff(np.concatenate([[0], cuts, [n]])))


def outlier_keys(rng, n, d, dtype=np.float64):
    K = rng.standard_normal((n, d))
    K[rng.choice(n, size=12, replace=False)] *= rng.uniform(20, 200, size=(12, 1))
    K[:, 0] *= 1e4  # an outlier channel: results must not depend on column scaling
    return K.astype(dtype)


def oracle(K, eps, ridge=0.0):
    K64 = np.asarray(K, np.float64)
    return naive.leverage(K64) if ridge == 0 else naive.ridge_leverage(K64, ridge)


def check_exact(U, K, eps, ridge=0.0):
    assert U.dtype == np.int64
    np.testing.assert_array_equal(U, sl.universal_set(K, eps, ridge=ridge))
    naive.assert_set_matches(U, oracle(K, eps, ridge), eps)


# -- the cluster --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env) as cluster,
        Client(cluster) as c,
    ):
        c.wait_for_workers(2)
        yield c


def test_import_streamlev_does_not_import_dask():
    code = "import streamlev, sys; assert 'dask' not in sys.modules, sorted(m for m in sys.modules if 'dask' in m)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize(("ridge", "dtype"), [(0.0, np.float64), (0.0, np.float32), (5.0, np.float64)])
def test_uneven_chunks_on_cluster_equal_oracle(client, ridge, dtype):
    rng = np.random.default_rng(1)
    n, d, eps = 3000, 6, 0.02
    K = outlier_keys(rng, n, d, dtype)
    x = da.from_array(K, chunks=(uneven_chunks(n, rng, 7), (2, 4)))  # columns split: rechunked
    assert client.ncores() and len(client.ncores()) == 2
    check_exact(sd.universal_set(x, eps, ridge=ridge, split_every=3), K, eps, ridge)


def test_compute_false_gives_delayed_for_a_future(client):
    rng = np.random.default_rng(2)
    K = outlier_keys(rng, 2000, 5)
    x = da.from_array(K, chunks=(uneven_chunks(2000, rng, 5), 5))
    lazy = sd.universal_set(x, 0.05, compute=False)
    assert isinstance(lazy, Delayed)
    check_exact(client.compute(lazy).result(), K, 0.05)


def test_many_streams_on_cluster(client):
    rng = np.random.default_rng(3)
    H, n, d, eps = 5, 1200, 4, 0.03
    X = np.stack([outlier_keys(rng, n, d) for _ in range(H)])
    X[2] = X[2] @ rng.standard_normal((d, d))  # another stream, same leverage: a different basis
    x = da.from_array(X, chunks=((2, 2, 1), uneven_chunks(n, rng, 4), (d,)))
    out = sd.universal_sets(x, eps, split_every=2)
    assert len(out) == H
    for h in range(H):
        check_exact(out[h], X[h], eps)
    # streams of different lengths: a list
    parts = [X[0][:500], da.from_array(X[1], chunks=300), X[3][:7]]
    out = sd.universal_sets(parts, eps)
    for U, K in zip(out, [X[0][:500], X[1], X[3][:7]], strict=True):
        check_exact(U, K, eps)


def test_from_npy_on_cluster(client, tmp_path):
    rng = np.random.default_rng(4)
    K = outlier_keys(rng, 5000, 8, np.float32)
    path = tmp_path / "keys.npy"
    np.save(path, K)
    x = sd.from_npy(path, chunk_rows=777)
    assert x.chunks[0][:2] == (777, 777) and x.dtype == np.float32
    _clear_logs(client)
    check_exact(sd.universal_set(x, 0.01), K, 0.01)
    for e in _transfer_logs(client):  # the workers read the file themselves; no chunk of keys moves
        assert all(_is_sketch_key(key) for key in e["keys"]), e["keys"]
    sk = sd.sketch(x, 0.01)
    assert isinstance(sk, OnlineLeverage) and sk.n_seen == 5000
    np.testing.assert_array_equal(sk.universal_set(), sl.universal_set(K, 0.01))


def test_sketches_travel_through_dask_serialisation(client):
    rng = np.random.default_rng(5)
    K = outlier_keys(rng, 800, 6)
    sk = OnlineLeverage(6, 0.02, start=100).update(K)
    header, frames = serialize(sk)
    assert header["serializer"] == "pickle"
    wire = b"".join(bytes(f) for f in frames)
    assert sk.to_bytes() in wire  # pickle carries the versioned byte format (__reduce__ -> to_bytes)
    assert deserialize(header, frames) == sk
    # Round trip through a worker: scattered, read there, returned.
    [fut] = client.scatter([sk])
    assert client.submit(OnlineLeverage.to_bytes, fut).result() == sk.to_bytes()
    back = client.submit(OnlineLeverage.universal_set, fut).result()
    np.testing.assert_array_equal(back, sl.universal_set(K, 0.02) + 100)
    # The merged sketch computed on the workers comes back whole.
    x = da.from_array(K, chunks=(300, 6))
    merged = sd.sketch(x, 0.02)
    assert merged.n_seen == 800 and merged.dim == 6
    np.testing.assert_array_equal(merged.universal_set(), sl.universal_set(K, 0.02))
    assert pickle.loads(pickle.dumps(merged)) == merged


def _is_sketch_key(key):
    """Keys of sketch tasks (fused with their chunk's reader or not), merges and the final ids."""
    name = key[0] if isinstance(key, tuple) else key
    return "streamlev-sketch" in name or name.startswith(("streamlev-merge", "_ids_task"))


def _transfer_logs(client):
    logs = client.run(lambda dask_worker: list(dask_worker.transfer_outgoing_log))
    return [entry for entries in logs.values() for entry in entries]


def _clear_logs(client):
    client.run(lambda dask_worker: dask_worker.transfer_outgoing_log.clear())


def test_bytes_sent_between_workers_do_not_grow_with_n(client):
    d, eps, chunks = 16, 0.05, 8
    per_sketch, total, moved = {}, {}, 0
    # Each sketch: a d x d float64 factor + at most d/eps candidates (keys and ids) + a header.
    bound = 8 * d * d + (d / eps) * (8 * d + 8) + 4096
    for n in (10_000, 100_000):
        x = generated_keys(n, d, (n // chunks,) * chunks, seed=7)
        _clear_logs(client)
        U = sd.universal_set(x, eps)
        entries = _transfer_logs(client)
        K = x.compute(scheduler="sync")
        check_exact(U, K, eps)
        sizes = []
        for e in entries:
            keys = list(e["keys"])
            # only sketches, merged sketches and the final ids ever move; never a chunk of keys
            assert all(_is_sketch_key(key) for key in keys), keys
            assert e["compressed"] <= len(keys) * bound  # actual bytes on the wire
            if not any(str(key).startswith("_ids_task") for key in keys):
                sizes.append(e["compressed"] / len(keys))
        moved += len(sizes)
        per_sketch[n] = max(sizes, default=0.0)
        total[n] = sum(e["compressed"] for e in entries)
    assert moved > 0, "no sketch moved between the two workers"
    # Which sketches cross between the workers depends on the scheduler, so the totals are compared with
    # one sketch's bound of slack: ten times the rows move no more than the smaller run plus one sketch,
    # and under 1% of the keys' bytes.
    assert total[100_000] <= 1.5 * total[10_000] + bound, total
    assert total[100_000] < 0.01 * 100_000 * d * 8, total
    # Ten times the rows, same chunk count: a sketch on the wire is no bigger.
    assert per_sketch[100_000] <= 1.25 * max(per_sketch[10_000], 2 * d * d * 8) + 1024, per_sketch


def test_exact_after_a_worker_is_killed_mid_computation(client, tmp_path):
    marker = tmp_path / "killed"
    n, d, eps = 40_000, 8, 0.01
    x = generated_keys(n, d, (5000,) * 8, seed=11)
    before = set(client.scheduler_info()["workers"])
    poisoned = x.map_blocks(_die_once, marker=str(marker), target=6, dtype=x.dtype)
    U = sd.universal_set(poisoned, eps, split_every=2)
    assert marker.exists(), "the worker was not killed"
    client.wait_for_workers(2)
    after = set(client.scheduler_info()["workers"])
    assert before - after, "a worker should have been replaced by its nanny"
    check_exact(U, x.compute(scheduler="sync"), eps)


# -- synchronous scheduler: exactness over random chunkings ---------------------------------------
@given(
    key_matrices(max_n=90, max_d=6),
    eps_values,
    st.integers(0, 2**31),
    st.integers(2, 5),
    st.sampled_from([0.0, 0.0, 1.5]),
)
def test_random_chunkings_are_exact_sync(K, eps, seed, split_every, ridge):
    rng = np.random.default_rng(seed)
    n = K.shape[0]
    pieces = int(rng.integers(1, min(n, 9) + 1))
    chunks = uneven_chunks(n, rng, pieces) if pieces > 1 else (n,)
    x = da.from_array(K, chunks=(chunks, K.shape[1]))
    with dask.config.set(scheduler="sync"):
        block_size = int(rng.integers(1, 40))
        U = sd.universal_set(x, eps, ridge=ridge, split_every=split_every, block_size=block_size)
        many = sd.universal_sets(da.stack([x, x[::-1]]), eps, ridge=ridge, split_every=split_every)
    check_exact(U, K, eps, ridge)
    np.testing.assert_array_equal(many[0], U)
    check_exact(many[1], K[::-1], eps, ridge)


# -- p != 2: a certified superset ---------------------------------------------------------------
@pytest.mark.parametrize("p", [1.5, 3.0])
def test_power_candidates_hold_every_heavy_key(p):
    rng = np.random.default_rng(8)
    n, d, eps = 60, 3, 0.1
    K = rng.standard_normal((n, d))
    K[rng.choice(n, size=4, replace=False)] *= 8.0
    x = da.from_array(K, chunks=(uneven_chunks(n, rng, 4), d))
    with dask.config.set(scheduler="sync"):
        S = sd.power_candidates(x, eps, p=p, split_every=2)
    assert S.dtype == np.int64 and np.all(np.diff(S) > 0)
    alpha = naive_lp.sensitivities(K, p)  # independent: scipy BFGS per key
    heavy = np.flatnonzero(alpha >= eps * (1 + 1e-6))
    assert heavy.size > 0
    assert np.isin(heavy, S).all(), (heavy, S)
    assert np.isin(sl.universal_set(K, eps, p=p), S).all()
    c_p = 1.0 if p <= 2 else d ** (p / 2 - 1)
    assert S.size <= c_p * d / eps * (1 + 1e-6)


def test_power_candidates_on_cluster(client):
    rng = np.random.default_rng(9)
    K = outlier_keys(rng, 600, 3)
    x = da.from_array(K, chunks=(uneven_chunks(600, rng, 3), 3))
    S = sd.power_candidates(x, 0.05, p=3.0)
    assert np.isin(sl.universal_set(K, 0.05, p=3.0), S).all()
    assert S.size <= 3**0.5 * 3 / 0.05
    np.testing.assert_array_equal(sd.power_candidates(x, 0.05, p=2.0), sl.universal_set(K, 0.05))


# -- refused input -------------------------------------------------------------------------------
def test_bad_input_is_refused_with_a_fix():
    x = da.zeros((10, 3), chunks=5)
    with pytest.raises(ValueError, match="universal_sets"):
        sd.universal_set(da.zeros((2, 10, 3)), 0.1)
    with pytest.raises(ValueError, match=r"\(H, n, d\)"):
        sd.universal_sets(x, 0.1)
    with pytest.raises(TypeError, match="complex"):
        sd.universal_set(x.astype(np.complex128), 0.1)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        sd.universal_set(x[x[:, 0] > 0], 0.1)
    with pytest.raises(ValueError, match="eps"):
        sd.universal_set(x, 0.0)
    with pytest.raises(ValueError, match="ridge"):
        sd.universal_set(x, 0.1, ridge=-1.0)
    with pytest.raises(ValueError, match="split_every"):
        sd.universal_set(x, 0.1, split_every=1)
    with pytest.raises(TypeError, match="compute"):
        sd.universal_set(x, 0.1, compute="no")
    with pytest.raises(TypeError, match="dask array"):
        sd.universal_set("keys.npy", 0.1)
    with pytest.raises(FileNotFoundError, match="no such file"):
        sd.from_npy("/nonexistent/keys.npy")
    with pytest.raises(TypeError, match="path"):
        sd.from_npy(3)
    with pytest.raises(NotImplementedError, match="power_candidates"):
        sd.universal_set(x, 0.1, p=1.0)
    with pytest.raises(TypeError, match="refine"):
        sd.power_candidates(x, 0.1, p=3.0, refine="yes")
    K = np.ones((10, 3))
    K[7, 1] = np.nan
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ValueError, match="row 7"):
            sd.universal_set(da.from_array(K, chunks=4), 0.1)
        with pytest.raises(ValueError, match=r"stream 1 of x .* row 7"):
            sd.universal_sets(da.from_array(np.stack([np.ones((10, 3)), K]), chunks=(1, 4, 3)), 0.1)
        with pytest.raises(ValueError, match=r"x\[1\] .* row 7"):
            sd.universal_sets([np.ones((4, 3)), da.from_array(K, chunks=5)], 0.1)


def test_numpy_input_and_empty_arrays():
    rng = np.random.default_rng(6)
    K = outlier_keys(rng, 300, 4)
    with dask.config.set(scheduler="sync"):
        check_exact(sd.universal_set(K, 0.05), K, 0.05)
        assert sd.universal_set(da.zeros((0, 3), chunks=1), 0.1).size == 0
        assert sd.universal_sets(da.zeros((2, 0, 3), chunks=1), 0.1)[1].size == 0
        assert sd.universal_sets([], 0.1) == []
        sk = sd.sketch(K, 0.05)
    assert sk.n_seen == 300


@pytest.mark.parametrize("content", [b"1,2,3\n", b"\x93NUMPY garbage", None, "truncated", "vector"])
def test_from_npy_gives_the_message_of_the_file_reader(tmp_path, content):
    """from_npy and the command line share one .npy reader, hence one message per problem."""
    from streamlev.streams import iter_blocks

    path = tmp_path / "bad.npy"
    if content == "truncated":
        np.save(path, np.ones((50, 4)))
        path.write_bytes(path.read_bytes()[:-40])
    elif content == "vector":
        np.save(path, np.ones(7))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises((ValueError, OSError)) as expected:
        next(iter_blocks(path))
    with pytest.raises(type(expected.value)) as got:
        sd.from_npy(path)
    assert str(got.value) == str(expected.value)
