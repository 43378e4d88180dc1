"""``streamlev compare``: the same inputs and exit-2 errors as ``select``; a table, JSON or a plot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamlev import cli
from streamlev.baselines import METHODS

from . import naive
from .test_cli import run


def test_the_help_lists_every_method_and_building_the_parser_loads_no_baseline():
    assert cli.COMPARE_METHODS == tuple(METHODS)
    code = "import sys, streamlev.cli as c; c.build_parser(); print('streamlev.baselines' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert r.stdout.strip() == "False"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    rng = np.random.default_rng(0)
    K = rng.standard_normal((800, 5))
    K[[3, 300, 799]] *= 30.0
    np.save(d / "k.npy", K)
    np.savez(d / "k.npz", K=K, other=np.zeros(3))
    np.savetxt(d / "k.csv", K, delimiter=",")
    return d, K


def test_table_lists_every_method_asked(data):
    d, _K = data
    r = run(["compare", "k.npy", "--eps", "0.05", "--methods", "online", "countsketch:64", "--seeds", "2"], cwd=d)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "| online |" in out and "| countsketch sketch_rows=64 |" in out


@pytest.mark.parametrize("src", ["k.npy", "k.csv"])
def test_json_holds_the_exact_set_and_every_run(data, src):
    d, K = data
    r = run(["compare", src, "--eps", "0.05", "--methods", "two-pass", "uniform:50", "--seeds", "2", "--json"], cwd=d)
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["exact_set"] == [int(i) for i in naive.universal_set(K, 0.05)]
    assert [x["method"] for x in obj["runs"]] == ["two-pass", "uniform", "uniform"]
    assert obj["runs"][0]["recall"] == obj["runs"][0]["precision"] == 1.0


def test_npz_key_and_plot_file(data, tmp_path):
    d, _K = data
    out = tmp_path / "frontier.png"
    r = run(["compare", "k.npz", "--key", "K", "--eps", "0.05", "--methods", "online", "--plot", out], cwd=d)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["compare", "missing.npy", "--eps", "0.05"], "no such file"),
        (["compare", "k.npy", "--eps", "2"], "eps"),
        (["compare", "k.npy", "--eps", "0.05", "--methods", "nope"], "unknown method"),
        (["compare", "k.npy", "--eps", "0.05", "--seeds", "0"], "--seeds"),
        (["compare", "k.npz", "--eps", "0.05"], "several arrays"),
        (["compare", "k.npy", "--eps", "0.05", "--key", "K"], ".npz files only"),
        (["compare", "-", "--eps", "0.05", "--dim", "5", "--dtype", "float64"], "stdin"),
        (["compare", "k.npy"], "--eps"),
    ],
)
def test_bad_input_exits_2_with_one_line(data, args, msg):
    d, _K = data
    r = run(args, cwd=d, stdin=b"")
    assert r.returncode == 2
    err = r.stderr.decode()
    assert msg in err and "Traceback" not in err and err.count("\n") == 1
