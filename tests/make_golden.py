"""Generate the golden serialized sketches of format version 1 (run once; the files are committed).

Usage::

    python -m tests.make_golden            # writes tests/golden/, refuses to overwrite
    python -m tests.make_golden --force    # overwrite (only when deliberately re-baselining)

What it writes
--------------
``tests/golden/online_v1_<case>.bin``
    ``OnlineLeverage.to_bytes()`` after feeding the *prefix* rows of the case.
``tests/golden/rows_v1.npz``
    For every case: ``<case>_prefix`` / ``<case>_prefix_ids`` (the rows the file
    summarises) and ``<case>_rest`` / ``<case>_rest_ids`` (the rows a test feeds
    after loading it).
``tests/golden/manifest_v1.json``
    Per case: constructor arguments, whether the rest is fed with explicit ids,
    the expected universal sets of the prefix and of prefix + rest, and the
    SHA-256 of the ``.bin`` file.

The expected sets come from the independent oracle (:mod:`tests.naive`: SVD of
the column-normalised matrix, or of the ridge-augmented one), never from
streamlev.  Each case's seed is the first one for which no oracle score lies
within a relative 1e-6 of eps, so the expected sets are free of rounding ties
and tests may compare them exactly.

``tests/test_fuzz.py`` loads these files on every run and never regenerates
them: a later streamlev must keep reading format version 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from streamlev import OnlineLeverage

from . import naive

GOLDEN = Path(__file__).resolve().parent / "golden"
MARGIN = 1e-6


def _oracle_scores(K, ridge):
    K = np.asarray(K, dtype=np.float64)
    return naive.leverage(K) if ridge == 0 else naive.ridge_leverage(K, ridge)


def _no_ties(K, eps, ridge):
    if K.shape[0] == 0:
        return True
    t = _oracle_scores(K, ridge)
    return bool(np.all(np.abs(t - eps) > MARGIN * eps))


def _case_rows(name, rng):
    """(dim, eps, ridge, start, prefix, prefix_ids, rest, rest_ids, rest_default_ids, build)."""
    if name == "plain":  # float64, column scales over 6 decades, default ids
        d, eps, ridge, start = 6, 0.02, 0.0, 0
        K = rng.standard_normal((400, d)) * 10.0 ** rng.uniform(-3, 3, size=d)
        pre, rest = K[:250], K[250:]
        return d, eps, ridge, start, pre, np.arange(250), rest, np.arange(250, 400), True
    if name == "ridge_f32":  # float32 keys, ridge > 0, default ids from start=1000
        d, eps, ridge, start = 5, 0.05, 2.0, 1000
        K = rng.standard_normal((300, d)).astype(np.float32)
        K[rng.random(300) < 0.05] *= 20
        return d, eps, ridge, start, K[:180], 1000 + np.arange(180), K[180:], 1000 + np.arange(180, 300), True
    if name == "rankdef":  # the prefix has rank 2 of 4; the rest makes it full rank
        d, eps, ridge, start = 4, 0.03, 0.0, 0
        pre = rng.standard_normal((100, 2)) @ rng.standard_normal((2, d))
        rest = rng.standard_normal((30, d))
        return d, eps, ridge, start, pre, np.arange(100), rest, np.arange(100, 130), True
    if name == "ids":  # explicit scattered ids, built by merging two shards
        d, eps, ridge, start = 3, 0.3, 0.0, 0
        K = rng.standard_normal((90, d))
        K[::17] *= 50
        ids = 5000 + 3 * np.arange(90)
        rest = rng.standard_normal((40, d))
        rest[3] *= 200
        return d, eps, ridge, start, K, ids, rest, 5001 + 3 * np.arange(40), False
    if name == "empty":  # nothing fed yet
        d, eps, ridge, start = 7, 0.15, 0.1, 0
        rest = rng.standard_normal((60, d))
        return d, eps, ridge, start, np.zeros((0, d)), np.zeros(0, dtype=np.int64), rest, np.arange(60), True
    if name == "untracked":  # > 4096 id intervals: overlap tracking switched off
        d, eps, ridge, start = 2, 0.0008, 0.0, 0
        K = rng.standard_normal((5000, d))
        K[7] *= 1e3
        rest = rng.standard_normal((30, d))
        return d, eps, ridge, start, K, 2 * np.arange(5000), rest, 2 * np.arange(30) + 1, False
    raise KeyError(name)


CASES = ("plain", "ridge_f32", "rankdef", "ids", "empty", "untracked")


def _build(name, d, eps, ridge, start, pre, pre_ids):
    sk = OnlineLeverage(d, eps, ridge=ridge, start=start)
    if name == "ids":
        half = pre.shape[0] // 2
        a = OnlineLeverage(d, eps, ridge=ridge).update(pre[:half], ids=pre_ids[:half])
        b = OnlineLeverage(d, eps, ridge=ridge).update(pre[half:], ids=pre_ids[half:])
        return a.merge(b)
    if name == "untracked":
        for a in range(0, pre.shape[0], 700):
            sk.update(pre[a : a + 700], ids=pre_ids[a : a + 700])
        return sk
    for a in range(0, pre.shape[0], 37):
        sk.update(pre[a : a + 37])
    return sk


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="overwrite existing golden files")
    args = ap.parse_args(argv)
    GOLDEN.mkdir(exist_ok=True)
    manifest_path = GOLDEN / "manifest_v1.json"
    if manifest_path.exists() and not args.force:
        raise SystemExit(f"{manifest_path} exists; golden files are generated once (use --force to re-baseline)")
    rows = {}
    manifest = {"format_version": 1, "cases": {}}
    for ci, name in enumerate(CASES):
        for seed in range(1000 * ci, 1000 * ci + 1000):
            rng = np.random.default_rng(seed)
            d, eps, ridge, start, pre, pre_ids, rest, rest_ids, default_ids = _case_rows(name, rng)
            full = np.concatenate([pre, rest]) if pre.shape[0] else rest
            if _no_ties(pre, eps, ridge) and _no_ties(full, eps, ridge):
                break
        else:  # pragma: no cover
            raise RuntimeError(f"no tie-free seed for case {name}")
        sk = _build(name, d, eps, ridge, start, pre, pre_ids)
        data = sk.to_bytes()
        fname = f"online_v1_{name}.bin"
        (GOLDEN / fname).write_bytes(data)
        all_ids = np.concatenate([pre_ids, rest_ids]).astype(np.int64)
        exp_pre = (
            pre_ids[np.flatnonzero(_oracle_scores(pre, ridge) >= eps)] if pre.shape[0] else np.zeros(0, dtype=np.int64)
        )
        exp_full = all_ids[np.flatnonzero(_oracle_scores(full, ridge) >= eps)]
        rows[f"{name}_prefix"] = pre
        rows[f"{name}_prefix_ids"] = pre_ids.astype(np.int64)
        rows[f"{name}_rest"] = rest
        rows[f"{name}_rest_ids"] = rest_ids.astype(np.int64)
        manifest["cases"][name] = {
            "file": fname,
            "seed": seed,
            "dim": d,
            "eps": eps,
            "ridge": ridge,
            "start": start,
            "key_dtype": str(pre.dtype),
            "rest_default_ids": default_ids,
            "n_prefix": int(pre.shape[0]),
            "n_rest": int(rest.shape[0]),
            "expected_prefix": sorted(int(i) for i in exp_pre),
            "expected_full": sorted(int(i) for i in exp_full),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        print(f"{fname}: {len(data)} bytes, |U(prefix)| = {len(exp_pre)}, |U(full)| = {len(exp_full)}")
    np.savez(GOLDEN / "rows_v1.npz", **rows)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
