"""The command line, driven as a user would: ``python -m streamlev ...`` in a subprocess."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from streamlev import cli

from . import naive

REPO = Path(__file__).resolve().parents[1]
EPS = 0.05


def run(args, *, cwd, stdin=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "streamlev", *map(str, args)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=120,
        env=env,
        check=False,
    )


def heavy_keys(n=400, d=6, seed=0):
    """Gaussian keys plus rows that alone carry a rare direction (leverage close to 1)."""
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, d))
    K[:, -1] *= 1e-3
    K[[3, n // 3, n - 1], -1] = [4.0, -6.0, 5.0]
    K[:, 0] *= 1e3  # an outlier channel
    return K


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    K = heavy_keys()
    np.save(tmp / "k.npy", K)
    np.save(tmp / "k32.npy", K.astype(np.float32))
    np.savez(tmp / "k.npz", K=K, V=K[:5])
    np.savetxt(tmp / "k.csv", K, delimiter=",", fmt="%.17g")
    np.savetxt(tmp / "k.txt", K, fmt="%.17g")
    return tmp, K


def select_json(args, *, cwd, stdin=None):
    r = run(["select", *args, "--json"], cwd=cwd, stdin=stdin)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert out.count("\n") == 1  # ONE JSON object
    return json.loads(out)


def check_result(res, K, eps, method, *, ridge=0.0):
    n, d = K.shape
    tau = naive.leverage(K) if ridge == 0 else naive.ridge_leverage(K, ridge)
    U = np.array(res["indices"], dtype=np.int64)
    naive.assert_set_matches(U, tau, eps)
    assert np.all(np.diff(U) > 0)
    assert res["size"] == U.size
    assert (res["n"], res["d"], res["eps"], res["method"], res["ridge"]) == (n, d, eps, method, ridge)
    assert res["bound"] >= U.size
    assert res["bound_kind"].split()[0] in {"rank/eps", "d/eps"}
    if res["bound_kind"] == "rank/eps":
        assert res["rank"] == naive.rank(K) and res["bound"] == int(res["rank"] / eps)
    else:
        assert res["bound"] == int(d / eps)
    assert res["memory_bytes"] > 0 and "tracemalloc" in res["memory_measure"]
    assert res["seconds"] > 0
    assert res["startup_seconds"] >= 0 and "startup_seconds" in res["seconds_measure"]  # start-up reported apart


# --- results against the oracle ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["exact", "two-pass", "online"])
def test_npy_every_method_matches_oracle(data, method):
    tmp, K = data
    res = select_json(["k.npy", "--eps", EPS, "--method", method, "--block-size", 64], cwd=tmp)
    check_result(res, K, EPS, method)
    assert {3, 133, 399} <= set(res["indices"])


def test_default_method_for_files_is_two_pass(data):
    tmp, K = data
    res = select_json(["k32.npy", "--eps", EPS], cwd=tmp)
    check_result(res, K.astype(np.float32), EPS, "two-pass")


@pytest.mark.parametrize(
    "name,extra",
    [
        ("k.csv", []),
        ("k.txt", ["--method", "online"]),
        ("k.npz", ["--key", "K"]),
        ("k.npz", ["--key", "K", "--method", "exact"]),
    ],
)
def test_text_and_npz(data, name, extra):
    tmp, K = data
    res = select_json([name, "--eps", EPS, "--block-size", 100, *extra], cwd=tmp)
    check_result(res, K, EPS, extra[extra.index("--method") + 1] if "--method" in extra else "two-pass")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stdin_binary_rows(data, dtype):
    tmp, K = data
    Kt = K.astype(dtype)
    raw = Kt.astype(Kt.dtype.newbyteorder("<")).tobytes()
    head = ["-", "--dim", 6, "--dtype", dtype, "--eps", EPS]
    res = select_json([*head, "--block-size", 50], cwd=tmp, stdin=raw)
    check_result(res, Kt, EPS, "online")  # online is the default for stdin
    res = select_json([*head, "--method", "exact"], cwd=tmp, stdin=raw)
    check_result(res, Kt, EPS, "exact")


def test_ridge(data):
    tmp, K = data
    lam = 50.0
    for method in ("two-pass", "online"):
        res = select_json(["k.npy", "--eps", 0.02, "--ridge", lam, "--method", method], cwd=tmp)
        check_result(res, K, 0.02, method, ridge=lam)


def test_human_summary_and_output_files(data):
    tmp, K = data
    truth = np.flatnonzero(naive.leverage(K) >= EPS)
    r = run(["select", "k.npy", "--eps", EPS, "--output", "u.npy"], cwd=tmp)
    assert r.returncode == 0, r.stderr
    text = r.stdout.decode()
    assert f"universal set: {truth.size} keys" in text and "d/eps" in text and "wrote" in text
    assert r.stderr == b""  # no progress bar when stderr is not a terminal
    np.testing.assert_array_equal(np.load(tmp / "u.npy"), truth)
    assert run(["select", "k.npy", "--eps", EPS, "--output", "u.json", "--quiet"], cwd=tmp).returncode == 0
    assert json.loads((tmp / "u.json").read_text()) == truth.tolist()
    assert run(["select", "k.npy", "--eps", EPS, "--output", "u.txt", "--json"], cwd=tmp).returncode == 0
    assert [int(s) for s in (tmp / "u.txt").read_text().split()] == truth.tolist()


def test_exact_with_p_other_than_2_goes_to_lewis(data, monkeypatch, capsys):
    """--p P calls streamlev.lewis.universal_set_p(K, eps, p=P, ...); checked in-process with a stand-in."""
    tmp, K = data
    seen = {}

    def fake_universal_set_p(K_, eps, *, p, ridge=0.0, max_seconds=None, progress=None):
        seen.update(shape=K_.shape, eps=eps, p=p, ridge=ridge, max_seconds=max_seconds)
        return np.array([1, 2], dtype=np.int64)

    from streamlev import lewis

    monkeypatch.setattr(lewis, "universal_set_p", fake_universal_set_p)
    rc = cli.main(["select", str(tmp / "k.npy"), "--eps", "0.1", "--p", "1.5", "--method", "exact", "--json"])
    assert rc == 0
    assert seen == {"shape": K.shape, "eps": 0.1, "p": 1.5, "ridge": 0.0, "max_seconds": 60.0}
    out = json.loads(capsys.readouterr().out)
    assert out["indices"] == [1, 2] and out["p"] == 1.5


def test_empty_npy(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 4)))
    res = select_json(["e.npy", "--eps", 0.1], cwd=tmp_path)
    assert res["indices"] == [] and res["n"] == 0 and res["d"] == 4


def test_demo_runs_on_bundled_real_keys(tmp_path):
    r = run(["demo", "--eps", 0.1], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "all-MiniLM-L6-v2" in out and "guarantee on the model's own queries" in out
    assert " NO" not in out  # every head's streamed set equals the in-memory exact set
    assert "< eps = 0.1" in out


# --- bad input: exit status 2, one line on stderr, no traceback -----------------------------------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    K = heavy_keys(100, 4)
    np.save(tmp / "ok.npy", K)
    (tmp / "prose.txt").write_text("These are not the keys you are looking for.\n")
    (tmp / "fake.npy").write_text("1,2,3\n")
    (tmp / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(tmp / "tiny.npy", K * 1e-310)
    Kn = K.copy()
    Kn[57, 1] = np.nan
    np.save(tmp / "nan.npy", Kn)
    np.savetxt(tmp / "nan.csv", Kn, delimiter=",")
    np.save(tmp / "vec.npy", np.arange(10.0))
    np.save(tmp / "cube.npy", np.zeros((2, 3, 4)))
    data = (tmp / "ok.npy").read_bytes()
    (tmp / "trunc.npy").write_bytes(data[:-100])
    (tmp / "ragged.csv").write_text("1,2,3\n4,5,6\n7,8\n")
    (tmp / "empty.csv").write_text("# no data\n\n")
    np.savez(tmp / "two.npz", A=K, B=K)
    return tmp


BAD = [
    # (arguments, stdin bytes, words the message must contain)
    (["missing.npy", "--eps", "0.1"], None, ["no such file", "missing.npy"]),
    (["prose.txt", "--eps", "0.1"], None, ["line 1", "not a number"]),
    (["fake.npy", "--eps", "0.1"], None, ["not a .npy file"]),
    (["garbage.npy", "--eps", "0.1"], None, ["garbage.npy", "format version"]),
    (["tiny.npy", "--eps", "0.1", "--method", "online"], None, ["magnitude", "ldexp"]),
    (["trunc.npy", "--eps", "0.1"], None, ["truncated"]),
    (["nan.npy", "--eps", "0.1"], None, ["NaN", "row 57"]),
    (["nan.npy", "--eps", "0.1", "--method", "exact"], None, ["NaN", "row 57"]),
    (["nan.npy", "--eps", "0.1", "--method", "online", "--block-size", "10"], None, ["NaN", "row 57"]),
    (["nan.csv", "--eps", "0.1", "--block-size", "10"], None, ["NaN", "row 57", "line 58"]),
    (["vec.npy", "--eps", "0.1"], None, ["shape (10,)", "2-D"]),
    (["cube.npy", "--eps", "0.1"], None, ["shape (2, 3, 4)", "2-D"]),
    (["ragged.csv", "--eps", "0.1"], None, ["line 3", "ragged"]),
    (["empty.csv", "--eps", "0.1"], None, ["holds no keys"]),
    (["empty.csv", "--eps", "0.1", "--method", "exact"], None, ["holds no keys"]),
    (["two.npz", "--eps", "0.1"], None, ["several arrays", "--key"]),
    (["two.npz", "--eps", "0.1", "--key", "C"], None, ["no array named 'C'"]),
    (["ok.npy", "--eps", "0.1", "--key", "K"], None, ["--key", ".npz"]),
    (["ok.npy", "--eps", "0.1", "--dim", "7"], None, ["--dim 7", "d = 4"]),
    (["ok.npy", "--eps", "0"], None, ["eps must lie in (0, 1]"]),
    (["ok.npy", "--eps", "1.5"], None, ["eps must lie in (0, 1]"]),
    (["ok.npy", "--eps", "nan"], None, ["eps must lie in (0, 1]"]),
    (["ok.npy", "--eps", "-0.1"], None, ["eps must lie in (0, 1]"]),
    (["ok.npy", "--eps", "abc"], None, ["--eps", "invalid float"]),
    (["ok.npy"], None, ["required", "--eps"]),
    (["ok.npy", "--eps", "0.1", "--method", "fast"], None, ["--method", "invalid choice"]),
    (["ok.npy", "--eps", "0.1", "--frobnicate"], None, ["unrecognized arguments", "--frobnicate"]),
    (["ok.npy", "--eps", "0.1", "--block-size", "0"], None, ["--block-size", ">= 1"]),
    (["ok.npy", "--eps", "0.1", "--ridge", "-1"], None, ["ridge", ">= 0"]),
    (["ok.npy", "--eps", "0.1", "--p", "3"], None, ["--p 3", "--method exact"]),
    (["ok.npy", "--eps", "0.1", "--p", "0"], None, ["p must be"]),
    (["ok.npy", "--eps", "0.1", "--p", "100", "--method", "exact"], None, ["p must lie in [0.1, 64]"]),
    (["-", "--eps", "0.1"], b"", ["--dim", "--dtype"]),
    (["-", "--eps", "0.1", "--dim", "4", "--dtype", "int8"], b"", ["--dtype", "invalid choice"]),
    (["-", "--eps", "0.1", "--dim", "4", "--dtype", "float32"], b"\x00" * 30, ["ended inside a row"]),
    (["-", "--eps", "0.1", "--dim", "4", "--dtype", "float32", "--method", "two-pass"], b"", ["stdin", "once"]),
    (
        ["-", "--eps", "0.1", "--dim", "2", "--dtype", "float64"],
        np.array([[1.0, 2.0], [3.0, np.inf]]).tobytes(),
        ["NaN or infinity", "row 1"],
    ),
]


BAD_IDS = [" ".join(a) for a, _, _ in BAD]


@pytest.fixture(scope="module")
def bad_runs(bad):
    """Run every bad-input case up front, three processes at a time (interpreter start-up dominates)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            i: pool.submit(run, ["select", *args], cwd=bad, stdin=stdin if stdin is not None else b"")
            for i, (args, stdin, _) in zip(BAD_IDS, BAD, strict=True)
        }
        return {i: f.result() for i, f in futures.items()}


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_exits_2_with_one_line(bad_runs, case):
    words = BAD[BAD_IDS.index(case)][2]
    r = bad_runs[case]
    err = r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err, r.stdout)
    assert r.stdout == b""
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line
    assert "error:" in err and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)


def test_unknown_command_exits_2(tmp_path):
    r = run(["frobnicate"], cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1


# --- bench -------------------------------------------------------------------------------------------------


def test_bench_runs_the_packaged_benchmark_never_a_file_from_the_cwd(tmp_path, monkeypatch, capsys):
    import streamlev.bench

    trap = tmp_path / "benchmarks" / "run.py"  # what the command must not execute
    trap.parent.mkdir()
    trap.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\ndef main(argv):\n    return 0\n")
    calls = []
    monkeypatch.setattr(streamlev.bench, "run", lambda **kw: calls.append(kw) or ([], []))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["bench", "--quick", "--rows", "5000", "--no-svd"]) == 0
    assert not (tmp_path / "ran").exists()
    assert len(calls) == 1
    assert calls[0]["quick"] and calls[0]["rows"] == 5000 and calls[0]["with_svd"] is False


def test_bench_says_where_the_benchmarks_are_when_the_module_is_missing(monkeypatch, capsys):
    import streamlev

    monkeypatch.delattr(streamlev, "bench", raising=False)
    monkeypatch.setitem(sys.modules, "streamlev.bench", None)  # import fails as in a copy without it
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks/" in err and err.count("\n") == 1


# --- progress bar and imports -----------------------------------------------------------------------------


def test_progress_counts_rows_and_uses_tqdm_only_when_enabled():
    blocks = [np.zeros((3, 2)), np.zeros((5, 2))]
    p = cli._Progress(None, "x", enabled=False)
    assert [B.shape[0] for B in p.wrap(iter(blocks))] == [3, 5] and p.rows == 8 and p.bar is None
    pytest.importorskip("tqdm")
    p = cli._Progress(8, "x", enabled=True)
    list(p.wrap(iter(blocks)))
    assert p.bar is not None and p.bar.n == 8
    p.close()


def test_import_does_not_pull_optional_dependencies():
    code = (
        "import sys, streamlev, streamlev.streams, streamlev.cli; "
        "bad = [m for m in ('tqdm', 'matplotlib', 'torch', 'nbformat') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60, check=False)
    assert r.returncode == 0, r.stderr.decode()


def test_exact_p_refuses_over_the_time_limit_and_runs_with_inf(tmp_path):
    """--max-seconds: an estimate above it is refused up front (exit 2, the estimate named); 'inf' opts in."""
    K = np.random.default_rng(3).standard_normal((1500, 6))
    np.save(tmp_path / "k.npy", K)
    args = ["select", "k.npy", "--eps", "0.005", "--p", "3", "--method", "exact"]
    r = run([*args, "--max-seconds", "1e-9"], cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "estimated" in err and "--max-seconds inf" in err and "Traceback" not in err
    r = run([*args, "--max-seconds", "inf", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert "estimated" in r.stderr.decode()  # the stated estimate, on stderr
    from streamlev import lewis

    want = lewis.universal_set_p(K, 0.005, p=3.0, max_seconds=None)
    assert json.loads(r.stdout)["indices"] == want.tolist()
    r = run([*args, "--max-seconds", "0"], cwd=tmp_path)
    assert r.returncode == 2 and "--max-seconds" in r.stderr.decode()


def test_max_seconds_default_is_the_librarys():
    from streamlev import lewis

    assert cli._DEFAULT_MAX_SECONDS == lewis.DEFAULT_MAX_SECONDS


def run_in_process(argv, capsys):
    """(exit status, stdout, stderr) of ``streamlev ARGV`` run in this process (no interpreter start-up)."""
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("target", ["a_dir", "no_such_dir/u.npy"])
def test_unwritable_output_is_refused_before_any_work(data, target, monkeypatch, capsys):
    tmp, _ = data
    (tmp / "a_dir").mkdir(exist_ok=True)

    def no_work(*args, **kwargs):
        raise AssertionError("the selection ran although --output cannot be written")

    monkeypatch.setattr(cli, "_select", no_work)
    rc, out, err = run_in_process(["select", tmp / "k.npy", "--eps", EPS, "--output", tmp / target], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "--output" in err and str(tmp / target) in err, err


@pytest.mark.parametrize(
    ("args", "method"),
    [
        (["--eps", "1e-300"], "two-pass"),
        (["--eps", "1e-300", "--method", "online"], "online"),
        (["--eps", "0.1", "--p", "64", "--method", "exact"], "exact"),
    ],
)
def test_size_bounds_print_with_a_few_significant_digits(data, args, method, capsys):
    tmp, K = data
    rc, out, err = run_in_process(["select", tmp / "k.npy", *args], capsys)
    assert rc == 0, err
    line = next(s for s in out.splitlines() if s.startswith("universal set:"))
    assert len(line) < 120, line
    rc, out, _ = run_in_process(["select", tmp / "k.npy", *args, "--json"], capsys)
    res = json.loads(out)
    assert len(json.dumps(res["bound"])) < 25
    assert res["bound"] >= res["size"] and res["method"] == method


@pytest.mark.parametrize("method", ["two-pass", "online"])
def test_json_reports_the_rank_for_streaming_methods(tmp_path, method, capsys):
    K = heavy_keys(23_000, 6)  # more entries than exact.SMALL_ENTRIES: really streamed
    K[:, 2] = K[:, 1] - 3.0 * K[:, 4]  # rank 5
    np.save(tmp_path / "k.npy", K)
    rc, out, err = run_in_process(["select", tmp_path / "k.npy", "--eps", EPS, "--method", method, "--json"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert res["rank"] == naive.rank(K) == 5
    check_result(res, K, EPS, method)


def test_missing_file_advice_names_stdin_only_on_the_command_line(tmp_path, capsys):
    rc, _, err = run_in_process(["select", tmp_path / "missing.npy", "--eps", EPS], capsys)
    assert rc == 2 and "no such file" in err and "'-'" in err


def test_subnormal_keys_in_memory_give_the_unscaled_answer(tmp_path, capsys):
    """--method exact rescales tiny columns exactly; the streaming methods refuse them (see BAD)."""
    K = heavy_keys(200, 5)
    np.save(tmp_path / "tiny.npy", K * 1e-310)
    rc, out, err = run_in_process(
        ["select", tmp_path / "tiny.npy", "--eps", EPS, "--method", "exact", "--json"], capsys
    )
    assert rc == 0, err
    naive.assert_set_matches(np.array(json.loads(out)["indices"], dtype=np.int64), naive.leverage(K), EPS)
